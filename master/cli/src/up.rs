//! `bramble up`: a master in a thread, a local worker as a child process, the demo applied.

use std::path::PathBuf;
use std::process::{Child, Command};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use bramble_server::api::{Config, Master};

use crate::UpArgs;

/// The worker binary next to this executable (how `bramble up` finds it).
pub fn worker_binary() -> anyhow::Result<PathBuf> {
    let me = std::env::current_exe()?;
    let dir = me.parent().context("executable has no directory")?;
    let p = dir.join("bramble-worker");
    anyhow::ensure!(
        p.exists(),
        "bramble-worker not found next to {}: build it with `cargo build -p bramble-worker`",
        me.display()
    );
    Ok(p)
}

/// The demo manifest applied by `bramble up`.
pub const DEMO: &str = include_str!("../demo.toml");

struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        // SIGTERM first so the worker stops its pods cleanly.
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.0.id().to_string())
            .status();
        for _ in 0..50 {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs a master and a local worker, applies the demo, shows it, and serves until Ctrl-C.
pub fn run_up(a: UpArgs, _server: &str) -> anyhow::Result<()> {
    bramble_server::server::init_tracing();
    let data = a.data_dir.clone();
    std::fs::create_dir_all(&data).with_context(|| format!("cannot create {}", data.display()))?;
    let cfg = Config::new(data.join("master"), a.listen.clone());
    let listen = a.listen.clone();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<anyhow::Result<()>>();
    std::thread::spawn(move || {
        smol::block_on(async move {
            let listener = match async_net::TcpListener::bind(&cfg.listen).await {
                Ok(l) => l,
                Err(e) => {
                    let _ =
                        ready_tx.send(Err(anyhow::anyhow!("cannot listen on {}: {e}", cfg.listen)));
                    return;
                }
            };
            let m: Arc<Master> = match Master::open(cfg).await {
                Ok(m) => m,
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                    return;
                }
            };
            let _ = ready_tx.send(Ok(()));
            if let Err(e) = m.serve(listener).await {
                tracing::error!("master stopped: {e:#}");
            }
        })
    });
    ready_rx.recv().context("master thread died")??;
    let master_dir = data.join("master");
    println!(
        "master:  listening on {listen}, data in {}",
        master_dir.display()
    );
    let worker = worker_binary()?;
    let child = Command::new(&worker)
        .arg("--master")
        .arg(&listen)
        .arg("--token-file")
        .arg(master_dir.join("join.token"))
        .arg("--state-dir")
        .arg(data.join("worker"))
        .arg("--name")
        .arg(local_node_name())
        .arg("--run-dir")
        .arg(data.join("run"))
        .arg("--cgroup-parent")
        .arg(format!(
            "bramble-up-{}",
            listen.rsplit(':').next().unwrap_or("0")
        ))
        .args(["--service-proxy", &a.service_proxy])
        .spawn()
        .with_context(|| format!("cannot start {}", worker.display()))?;
    let _worker = KillOnDrop(child);
    println!("worker:  {} (pid {})", worker.display(), _worker.0.id());
    let token_file = master_dir.join("admin.token");
    let token = bramble_client::read_token_file(&token_file)?;
    if !a.no_demo {
        smol::block_on(crate::demo::run(&listen, &token, DEMO))?;
    }
    println!();
    println!(
        "try:     export BRAMBLE_SERVER={listen} BRAMBLE_TOKEN_FILE={}",
        token_file.display()
    );
    println!("         bramble get nodes; bramble get pods; bramble logs hello");
    if a.exit_after_demo {
        return Ok(());
    }
    println!("serving until Ctrl-C");
    wait_for_signal();
    Ok(())
}

fn local_node_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let name: String = host
        .trim()
        .to_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    let name = name.trim_matches('-').chars().take(63).collect::<String>();
    if name.is_empty() {
        "local".into()
    } else {
        name
    }
}

fn wait_for_signal() {
    // Ctrl-C (SIGINT) reaches the whole foreground process group: the worker stops with us.
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}
