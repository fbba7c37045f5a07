//! Durable write throughput of the store, next to the disk's raw fsync rate.
//!
//! ```text
//! cargo bench -p bramble-server --bench store        # BRAMBLE_BENCH_WRITES=2000 by default
//! ```
//!
//! Runs in a temp dir under Cargo's target dir (a real disk, not tmpfs). Prints numbers only.
//! Without `--bench` (as under `cargo test --benches`) it runs a tiny smoke-sized pass.

use std::fs::OpenOptions;
use std::io::{Seek, SeekFrom, Write};
use std::path::Path;
use std::time::Instant;

use bramble_server::store::Store;
use bramble_wire::objects::{Meta, Object, Pod};

fn pod(name: String) -> Object {
    let mut meta = Meta {
        name,
        namespace: "bench".into(),
        ..Meta::default()
    };
    meta.labels.insert("app".into(), "bench".into());
    Object::Pod(Pod {
        meta,
        ..Pod::default()
    })
}

/// 4 KiB written in place into a preallocated file, then `fdatasync`, `n` times. Returns per second.
fn fsync_rate(dir: &Path, n: u64) -> std::io::Result<f64> {
    let path = dir.join("fsync.bin");
    let mut f = OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(&path)?;
    let block = [0x5au8; 4096];
    for _ in 0..n {
        f.write_all(&block)?;
    }
    f.sync_all()?;
    f.seek(SeekFrom::Start(0))?;
    let t = Instant::now();
    for _ in 0..n {
        f.write_all(&block)?;
        f.sync_data()?;
    }
    let rate = n as f64 / t.elapsed().as_secs_f64();
    drop(f);
    std::fs::remove_file(path)?;
    Ok(rate)
}

/// `total` creates spread over `writers` concurrent tasks on a fresh store. Returns per second.
fn store_rate(dir: &Path, writers: u64, total: u64) -> f64 {
    let sub = dir.join(format!("store-{writers}"));
    let _ = std::fs::remove_dir_all(&sub);
    let rate = smol::block_on(async {
        let store = Store::open(&sub).await.expect("open store");
        let t = Instant::now();
        let tasks: Vec<_> = (0..writers)
            .map(|w| {
                let store = store.clone();
                let mine = total / writers + u64::from(w < total % writers);
                smol::spawn(async move {
                    for i in 0..mine {
                        store
                            .create(pod(format!("w{w}-{i}")))
                            .await
                            .expect("create");
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await;
        }
        let rate = total as f64 / t.elapsed().as_secs_f64();
        assert_eq!(store.current_revision(), total);
        store.close().await;
        rate
    });
    let _ = std::fs::remove_dir_all(&sub);
    rate
}

fn main() {
    let benching = std::env::args().any(|a| a == "--bench");
    let n: u64 = match std::env::var("BRAMBLE_BENCH_WRITES") {
        Ok(v) => v.parse().expect("BRAMBLE_BENCH_WRITES is a number"),
        Err(_) if benching => 2_000,
        Err(_) => 50,
    };
    let base = Path::new(env!("CARGO_TARGET_TMPDIR"));
    std::fs::create_dir_all(base).expect("target tmp dir");
    let dir = tempfile::tempdir_in(base).expect("tempdir");
    println!(
        "store bench in {} ({n} writes per run)",
        dir.path().display()
    );

    // The disk is shared: measure the baseline before and after, and compare with their mean.
    let before = fsync_rate(dir.path(), n).expect("fsync baseline");
    println!(
        "{:<36} {:>10.0} /s",
        "raw 4 KiB write + fdatasync (before)", before
    );
    let rates: Vec<(u64, f64)> = [1, 4, 16]
        .into_iter()
        .map(|w| (w, store_rate(dir.path(), w, n)))
        .collect();
    let after = fsync_rate(dir.path(), n).expect("fsync baseline");
    println!(
        "{:<36} {:>10.0} /s",
        "raw 4 KiB write + fdatasync (after)", after
    );
    let fsync = (before + after) / 2.0;
    for (writers, rate) in rates {
        println!(
            "{:<36} {:>10.0} /s   {:>6.2}x fsync rate",
            format!("store create, {writers} writer(s)"),
            rate,
            rate / fsync
        );
    }
}
