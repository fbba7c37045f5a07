//! 100 pods in one manifest: from `bramble apply` to every pod Succeeded, through a real master
//! and worker on loopback, against `crun run` of the same trivial workload 100 times in a row on
//! the same host in the same run (`bramble_testkit::crun`: read-only host `/usr`). The workload
//! is `/bin/true` with `restart_policy = "Never"`. The pods set only `pids = 16`: CPU or memory
//! requests would make the scheduler fit a few pods at a time on this 2-core node (the others
//! wait for the next scheduling pass), which is the master's business, not the start path's.
//!
//! ```text
//! sudo cargo bench -p bramble-tests --bench pods          # release binaries (build them first)
//! sudo cargo test -p bramble-tests --bench pods           # debug binaries
//! ```
//! `BENCH_PODS` (default 100) pods, `BENCH_ROUNDS` (default 3) rounds of each; `BENCH_KEEP=1`
//! keeps the master's data dir and the worker's log. Root
//! (namespaces, cgroups). The pods are deleted between rounds; everything is killed by PID.
#![forbid(unsafe_code)]

use std::time::{Duration, Instant};

use bramble_tests::{MasterProc, require_root, start_worker, wait_for};
use bramble_wire::msg::{RequestBody, ResponseBody};
use bramble_wire::objects::{Kind, Object, PodPhase};

fn env_u32(name: &str, default: u32) -> u32 {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// How many pods named `b-*` the master reports Succeeded (and how many there are).
fn succeeded(c: &mut bramble_client::Client) -> (usize, usize) {
    let (done, total, _) = progress(c);
    (done, total)
}

/// [`succeeded`], and the pods that are not, with their status.
fn progress(c: &mut bramble_client::Client) -> (usize, usize, String) {
    let body = RequestBody::List {
        kind: Kind::Pod,
        namespace: None,
        selector: String::new(),
    };
    match smol::block_on(c.call(body)) {
        Ok(ResponseBody::List { items, .. }) => {
            let pods: Vec<_> = items
                .iter()
                .filter_map(|o| match o {
                    Object::Pod(p) if p.meta.name.starts_with("b-") => Some(p),
                    _ => None,
                })
                .collect();
            let done = pods
                .iter()
                .filter(|p| p.status.phase == PodPhase::Succeeded)
                .count();
            let others = pods
                .iter()
                .filter(|p| p.status.phase != PodPhase::Succeeded)
                .take(5)
                .map(|p| format!("{} {:?}", p.meta.name, p.status))
                .collect::<Vec<_>>()
                .join("; ");
            (done, pods.len(), others)
        }
        _ => (0, 0, String::new()),
    }
}

fn main() {
    require_root();
    bramble_testkit::crun::hide_hybrid_cgroup2();
    let n = env_u32("BENCH_PODS", 100).clamp(1, 1000);
    let rounds = env_u32("BENCH_ROUNDS", 3).max(1);
    batch_100(n, rounds);
}

/// The bench: crun ×n in sequence, then apply → all Succeeded, `rounds` times each.
fn batch_100(n: u32, rounds: u32) {
    let tmp = tempfile::tempdir().unwrap();
    if std::env::var_os("BENCH_KEEP").is_some() {
        println!(
            "keeping the master's and worker's files in {}",
            tmp.path().display()
        );
    }
    let tmp = scopeguard(tmp);
    let bundle =
        bramble_testkit::crun::Bundle::new(&tmp.path().join("bundle"), &["/bin/true"], None);
    let m = MasterProc::start(&tmp.path().join("master"), &["--heartbeat-interval", "1s"]);
    wait_for(Duration::from_secs(20), "join token", || {
        m.data_dir.join("join.token").exists().then_some(())
    });
    let _w = start_worker(&m, "bench-pods", &tmp.path().join("bench-pods"), &[]);
    let mut c = m.client();
    wait_for(Duration::from_secs(30), "node Ready", || {
        (m.get("node", &["bench-pods"]).len() == 1).then_some(())
    });
    let manifest = tmp.path().join("pods.toml");
    let mut text = String::new();
    for i in 0..n {
        text.push_str(&format!(
            "[[pod]]\nname = \"b-{i}\"\nrestart_policy = \"Never\"\nnetwork = \"host\"\n\
             [[pod.process]]\nname = \"main\"\ncommand = [\"/bin/true\"]\n\
             pids = 16\n"
        ));
    }
    std::fs::write(&manifest, text).unwrap();
    let (mut crun_s, mut bramble_s) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        let t = Instant::now();
        for i in 0..n {
            bundle.run(&format!("bramble-pods-{}-{round}-{i}", std::process::id()));
        }
        crun_s.push(t.elapsed().as_secs_f64());

        let t = Instant::now();
        m.ok(&["apply", "-f", manifest.to_str().unwrap()]);
        loop {
            let (done, total, others) = progress(&mut c);
            if done == n as usize {
                break;
            }
            assert!(
                t.elapsed() < Duration::from_secs(60),
                "round {round}: {done} of {total} pods Succeeded after 60 s; the others: {others}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        bramble_s.push(t.elapsed().as_secs_f64());
        for i in 0..n {
            let body = RequestBody::Delete {
                kind: Kind::Pod,
                namespace: "default".into(),
                name: format!("b-{i}"),
                expected_revision: None,
            };
            smol::block_on(c.call(body)).expect("delete");
        }
        wait_for(Duration::from_secs(60), "pods deleted", || {
            (succeeded(&mut c).1 == 0).then_some(())
        });
        println!(
            "round {round}: crun run x{n} in sequence {:.3} s, bramble apply -> {n} Succeeded {:.3} s ({:.2}x crun)",
            crun_s[round as usize],
            bramble_s[round as usize],
            bramble_s[round as usize] / crun_s[round as usize]
        );
    }
    let med = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (cr, br) = (med(&mut crun_s), med(&mut bramble_s));
    println!(
        "{n} pods, one manifest: bramble apply -> all Succeeded median {br:.3} s; crun run x{n} \
         in sequence median {cr:.3} s; ratio {:.2}x (target <= 0.6x)",
        br / cr
    );
}

/// The bench's temporary directory, kept when `BENCH_KEEP` is set.
struct Kept(Option<tempfile::TempDir>);

impl Kept {
    fn path(&self) -> &std::path::Path {
        self.0.as_ref().expect("dir").path()
    }
}

impl Drop for Kept {
    fn drop(&mut self) {
        if std::env::var_os("BENCH_KEEP").is_some()
            && let Some(t) = self.0.take()
        {
            let _ = t.keep();
        }
    }
}

fn scopeguard(t: tempfile::TempDir) -> Kept {
    Kept(Some(t))
}
