//! Test tool for `tests/store_crash.rs`: writes to a store until killed, printing every
//! acknowledged write as `<name> <revision>` on its own line, flushed, after the store returned it
//! (that is, after the commit was durable).
//!
//! ```text
//! cargo run -p bramble-server --example store_writer -- DATA_DIR PREFIX [WRITERS] [MAX_WRITES]
//! ```
//!
//! Each of WRITERS concurrent tasks (default 4, so that group commit batches them) creates pods
//! `PREFIX-w<i>-<n>` in namespace `crash`, and every third write updates its own
//! `PREFIX-w<i>-0` with the expected revision. Stops after MAX_WRITES per task (default 100,000)
//! or when stdout is gone.

use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use anyhow::Context;
use bramble_server::store::Store;
use bramble_wire::objects::{Meta, Object, Pod};

fn pod(name: &str, generation: u64) -> Object {
    let mut meta = Meta {
        name: name.into(),
        namespace: "crash".into(),
        ..Meta::default()
    };
    meta.labels
        .insert("generation".into(), generation.to_string());
    Object::Pod(Pod {
        meta,
        ..Pod::default()
    })
}

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let dir = PathBuf::from(
        args.next()
            .context("usage: store_writer DATA_DIR PREFIX [WRITERS] [MAX_WRITES]")?,
    );
    let prefix = args.next().context("missing PREFIX")?;
    let writers: usize = args.next().map(|s| s.parse()).transpose()?.unwrap_or(4);
    let max: u64 = args
        .next()
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(100_000);

    smol::block_on(async {
        let store = Store::open(&dir).await?;
        let out = Arc::new(Mutex::new(std::io::stdout()));
        let tasks: Vec<_> = (0..writers)
            .map(|w| {
                let (store, out, prefix) = (store.clone(), out.clone(), prefix.clone());
                smol::spawn(async move {
                    let own = format!("{prefix}-w{w}-0");
                    let mut own_rev = store.create(pod(&own, 0)).await?;
                    ack(&out, &own, own_rev)?;
                    for n in 1..max {
                        let (name, rev) = if n % 3 == 0 {
                            own_rev = store.update(pod(&own, n), Some(own_rev)).await?;
                            (own.clone(), own_rev)
                        } else {
                            let name = format!("{prefix}-w{w}-{n}");
                            let rev = store.create(pod(&name, n)).await?;
                            (name, rev)
                        };
                        ack(&out, &name, rev)?;
                    }
                    anyhow::Ok(())
                })
            })
            .collect();
        for t in tasks {
            t.await?;
        }
        store.close().await;
        anyhow::Ok(())
    })
}

/// Prints one acknowledged write and flushes it to the pipe.
fn ack(out: &Mutex<std::io::Stdout>, name: &str, revision: u64) -> std::io::Result<()> {
    let out = out.lock().unwrap_or_else(|e| e.into_inner());
    let mut out = out.lock();
    writeln!(out, "{name} {revision}")?;
    out.flush()
}
