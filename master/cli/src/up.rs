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
        for _ in 0..150 {
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
    // SIGINT and SIGTERM sent to `bramble up` alone (not its process group: `kill PID`, a
    // service manager) stop the worker too, and remove its cgroup parent.
    let mut signals = async_signal::Signals::new([
        async_signal::Signal::Int,
        async_signal::Signal::Term,
        async_signal::Signal::Hup,
    ])
    .context("cannot handle SIGINT/SIGTERM")?;
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
    let cgroup_parent = format!("bramble-up-{}", listen.rsplit(':').next().unwrap_or("0"));
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
        .arg(&cgroup_parent)
        .args(["--service-proxy", &a.service_proxy])
        .spawn()
        .with_context(|| format!("cannot start {}", worker.display()))?;
    let worker_proc = KillOnDrop(child);
    println!("worker:  {} (pid {})", worker.display(), worker_proc.0.id());
    let token_file = master_dir.join("admin.token");
    let token = bramble_client::read_token_file(&token_file)?;
    if !a.no_demo {
        smol::block_on(crate::demo::run(&listen, &token, DEMO))?;
    }
    println!();
    // The binary's own path: after `./scripts/dev up` it is not on PATH.
    let me = std::env::current_exe()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "bramble".into());
    println!(
        "try:     export BRAMBLE_SERVER={listen} BRAMBLE_TOKEN_FILE={}",
        token_file.display()
    );
    println!("         {me} get nodes; {me} get pods; {me} logs hello");
    if !a.exit_after_demo {
        println!("serving until Ctrl-C");
        let sig = smol::block_on(next_signal(&mut signals));
        println!("stopping ({sig}): the worker, then the master");
    }
    drop(worker_proc);
    remove_cgroup_parent(&cgroup_parent);
    Ok(())
}

async fn next_signal(s: &mut async_signal::Signals) -> String {
    use smol::stream::StreamExt;
    match s.next().await {
        Some(Ok(sig)) => format!("{sig:?}"),
        _ => "signal".into(),
    }
}

/// Stops what the worker left running under its cgroup parent (pods outlive a worker by design,
/// but `bramble up` is one cluster that stops as a whole: SIGTERM, then SIGKILL after 5 s), and
/// removes the parent from every cgroup hierarchy, deepest directories first.
fn remove_cgroup_parent(name: &str) {
    let procs = || -> Vec<String> {
        let mut out: Vec<String> = cgroup_dirs(name)
            .iter()
            .filter_map(|d| std::fs::read_to_string(d.join("cgroup.procs")).ok())
            .flat_map(|s| s.lines().map(String::from).collect::<Vec<_>>())
            .collect();
        out.sort();
        out.dedup();
        out
    };
    for (signal, wait) in [("-TERM", 50), ("-KILL", 50)] {
        let left = procs();
        if left.is_empty() {
            break;
        }
        let _ = Command::new("kill").arg(signal).args(&left).status();
        for _ in 0..wait {
            if procs().is_empty() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    for d in cgroup_dirs(name).iter().rev() {
        let _ = std::fs::remove_dir(d);
    }
}

/// The directories of cgroup `name` in every hierarchy, parents before children.
fn cgroup_dirs(name: &str) -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    for line in mounts.lines() {
        let Some((pre, post)) = line.split_once(" - ") else {
            continue;
        };
        let Some(mount_point) = pre.split(' ').nth(4).filter(|_| post.starts_with("cgroup")) else {
            continue;
        };
        let root = std::path::Path::new(mount_point).join(name);
        if !root.is_dir() {
            continue;
        }
        let mut i = dirs.len();
        dirs.push(root);
        while i < dirs.len() {
            if let Ok(rd) = std::fs::read_dir(&dirs[i]) {
                let children: Vec<PathBuf> = rd
                    .flatten()
                    .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                    .map(|e| e.path())
                    .collect();
                dirs.extend(children);
            }
            i += 1;
        }
    }
    dirs
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
