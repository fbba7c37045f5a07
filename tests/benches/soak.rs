//! Soak under a hostile mix, on loopback: a real master, 20 simulated nodes (`bramble-nodesim`,
//! node 0 spraying forged log chunks) and the real CLI, while hostile clients hold 1,030 idle
//! sockets, send garbage instead of TLS, flood watches past the per-credential cap and present
//! wrong tokens, and a steady stream of `bramble apply` runs. It reports acknowledged writes
//! lost (every config map an apply acknowledged must be there, with its value), the latency of
//! admin calls (`bramble get nodes`: p50, p99, max, failures) and the master's RSS (start, max,
//! end); it fails if a write is lost, an admin call fails or the RSS passes its bound.
//!
//! ```text
//! cargo build -p bramble-cli -p bramble-worker && cargo test -p bramble-tests --bench soak
//! cargo build --release -p bramble-cli -p bramble-worker && cargo bench -p bramble-tests --bench soak
//! ```
//! `BENCH_SOAK_S` seconds (default 120, at most 600); `BENCH_SOAK_RSS_MB` the RSS bound
//! (default 128). Everything it starts is killed by PID when it ends.
#![forbid(unsafe_code)]

use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bramble_client::Client;
use bramble_tests::{IdleFlood, MasterProc, nodesim, objects, rss_kb};
use bramble_wire::msg::RequestBody;
use bramble_wire::objects::{Kind, Object};
use futures_lite::FutureExt;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// Runs `f` every `every` on a thread until `stop`; returns the thread.
fn every(
    stop: &Arc<AtomicBool>,
    every: Duration,
    mut f: impl FnMut() + Send + 'static,
) -> std::thread::JoinHandle<()> {
    let stop = stop.clone();
    std::thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            let t = Instant::now();
            f();
            std::thread::sleep(every.saturating_sub(t.elapsed()));
        }
    })
}

/// A value of `sorted` at quantile `q`.
fn quantile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

fn soak() {
    let secs = env_u64("BENCH_SOAK_S", 120).clamp(10, 600);
    let rss_bound_mb = env_u64("BENCH_SOAK_RSS_MB", 128);
    let tmp = tempfile::tempdir().unwrap();
    let m = MasterProc::builder(&tmp.path().join("master"))
        .args(&["--heartbeat-interval", "1s"])
        .nofile()
        .start();
    let pid = m.proc.pid();
    let (_sim, _lines) = nodesim(
        Path::new(env!("CARGO_BIN_EXE_bramble-nodesim")),
        &m,
        "soak",
        20,
        &["--heartbeat", "1s", "--spray-logs", "500"],
        Duration::from_secs(120),
    );
    let rss_start = rss_kb(pid).unwrap_or(0);
    let admin = std::fs::read_to_string(m.data_dir.join("admin.token")).unwrap();
    let admin = admin.trim().to_string();
    let (pin, cred) = admin.split_once("::").unwrap();
    let wrong = format!(
        "{pin}::{}.{}",
        cred.split_once('.').unwrap().0,
        "0".repeat(48)
    );
    let stop = Arc::new(AtomicBool::new(false));
    let mut threads = Vec::new();

    // Hostile: 1,030 idle sockets, reopened as the master closes them.
    let flood = IdleFlood::start(&m.addr, 1_030, Duration::from_secs(secs + 30));
    // Hostile: garbage instead of a TLS ClientHello, 20 connections a second.
    let garbage = Arc::new(AtomicU64::new(0));
    {
        let (addr, n) = (m.addr.clone(), garbage.clone());
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        threads.push(every(&stop, Duration::from_millis(50), move || {
            if let Ok(mut s) = std::net::TcpStream::connect(&addr) {
                let junk: Vec<u8> = (0..4096)
                    .map(|_| {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        x as u8
                    })
                    .collect();
                let _ = s.write_all(&junk);
                n.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    // Hostile: wrong tokens, 10 a second.
    let wrong_refused = Arc::new(AtomicU64::new(0));
    {
        let (addr, n) = (m.addr.clone(), wrong_refused.clone());
        threads.push(every(&stop, Duration::from_millis(100), move || {
            if smol::block_on(Client::connect(&addr, &wrong)).is_err() {
                n.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    // Hostile: a watch flood with the admin credential, 300 watches on one connection (past the
    // 256 per credential), dropped and opened again every 5 s.
    let watch_refused = Arc::new(AtomicU64::new(0));
    {
        let (addr, token, n) = (m.addr.clone(), admin.clone(), watch_refused.clone());
        threads.push(every(&stop, Duration::from_secs(5), move || {
            smol::block_on(async {
                let Ok(mut c) = Client::connect(&addr, &token).await else {
                    return;
                };
                for _ in 0..300 {
                    let w = RequestBody::Watch {
                        kind: Kind::ConfigMap,
                        namespace: None,
                        from_revision: 0,
                    };
                    if c.start(w).await.is_err() {
                        return;
                    }
                }
                // Read what comes for up to 4.5 s (refusals, then events of the applies).
                let until = Instant::now() + Duration::from_millis(4500);
                while Instant::now() < until {
                    let r = c
                        .next()
                        .or(async {
                            smol::Timer::at(until).await;
                            Err(bramble_client::ClientError::Connect {
                                addr: String::new(),
                                detail: "done".into(),
                            })
                        })
                        .await;
                    match r {
                        Ok(r) if matches!(r.body, bramble_wire::msg::ResponseBody::Error(_)) => {
                            n.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(_) => {}
                        Err(_) => break,
                    }
                }
            })
        }));
    }
    // The steady apply stream: config maps with a value, through the real CLI.
    let acked = Arc::new(std::sync::Mutex::new(Vec::<(String, String)>::new()));
    let apply_failed = Arc::new(AtomicU64::new(0));
    {
        let (dir, acked, failed) = (
            tmp.path().to_path_buf(),
            acked.clone(),
            apply_failed.clone(),
        );
        let (addr, token_file) = (m.addr.clone(), m.data_dir.join("admin.token"));
        let mut i = 0u64;
        threads.push(every(&stop, Duration::from_millis(200), move || {
            i += 1;
            let (name, value) = (format!("soak-{i}"), format!("v{i}"));
            let f = dir.join("apply.toml");
            let text = format!("[[configmap]]\nname = \"{name}\"\ndata = {{ k = \"{value}\" }}\n");
            std::fs::write(&f, text).unwrap();
            let o = std::process::Command::new(bramble_tests::bin("bramble"))
                .args(["apply", "-f"])
                .arg(&f)
                .env("BRAMBLE_SERVER", &addr)
                .env("BRAMBLE_TOKEN_FILE", &token_file)
                .output()
                .unwrap();
            if o.status.success() {
                acked.lock().unwrap().push((name, value));
            } else {
                failed.fetch_add(1, Ordering::Relaxed);
                eprintln!(
                    "soak: apply {name} failed: {}",
                    String::from_utf8_lossy(&o.stderr)
                );
            }
        }));
    }
    // Admin calls, timed; and the master's RSS.
    let lat = Arc::new(std::sync::Mutex::new(Vec::<Duration>::new()));
    let admin_failed = Arc::new(AtomicU64::new(0));
    let rss_max = Arc::new(AtomicU64::new(rss_start));
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(secs) {
        let t = Instant::now();
        let o = m.cli(&["get", "nodes"]);
        let took = t.elapsed();
        if o.status.success() {
            lat.lock().unwrap().push(took);
        } else {
            admin_failed.fetch_add(1, Ordering::Relaxed);
            eprintln!(
                "soak: admin call failed after {took:?}: {}",
                String::from_utf8_lossy(&o.stderr)
            );
        }
        rss_max.fetch_max(rss_kb(pid).unwrap_or(0), Ordering::Relaxed);
        std::thread::sleep(Duration::from_millis(500).saturating_sub(took));
    }
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        let _ = t.join();
    }
    let idle_opened = flood.stop();
    let rss_end = rss_kb(pid).unwrap_or(0);

    // Every acknowledged write is there, with its value.
    let o = m.cli(&["get", "configmaps", "-o", "json"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let stored: std::collections::HashMap<String, String> =
        objects(&String::from_utf8_lossy(&o.stdout))
            .into_iter()
            .filter_map(|o| match o {
                Object::ConfigMap(c) => Some((c.meta.name.clone(), c.data.get("k").cloned()?)),
                _ => None,
            })
            .collect();
    let acked = acked.lock().unwrap();
    let lost: Vec<&(String, String)> = acked
        .iter()
        .filter(|(n, v)| stored.get(n) != Some(v))
        .collect();
    let mut lat = lat.lock().unwrap().clone();
    lat.sort();
    let rss_max = rss_max.load(Ordering::Relaxed);
    println!(
        "soak: {secs} s, 20 simulated nodes; hostile: {idle_opened} idle sockets opened (1,030 \
         held), {} garbage connections, {} wrong tokens refused, {} watches refused past the cap",
        garbage.load(Ordering::Relaxed),
        wrong_refused.load(Ordering::Relaxed),
        watch_refused.load(Ordering::Relaxed),
    );
    println!(
        "soak: applies acknowledged {}, failed {}, acknowledged writes lost {}",
        acked.len(),
        apply_failed.load(Ordering::Relaxed),
        lost.len()
    );
    println!(
        "soak: admin calls {} ok, {} failed; latency p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        lat.len(),
        admin_failed.load(Ordering::Relaxed),
        quantile(&lat, 0.5).as_secs_f64() * 1e3,
        quantile(&lat, 0.99).as_secs_f64() * 1e3,
        quantile(&lat, 1.0).as_secs_f64() * 1e3,
    );
    println!(
        "soak: master RSS start {:.1} MB, max {:.1} MB, end {:.1} MB (bound {rss_bound_mb} MB)",
        rss_start as f64 / 1024.0,
        rss_max as f64 / 1024.0,
        rss_end as f64 / 1024.0
    );
    assert!(lost.is_empty(), "acknowledged writes lost: {lost:?}");
    assert!(!acked.is_empty(), "no apply was acknowledged");
    assert_eq!(
        admin_failed.load(Ordering::Relaxed),
        0,
        "admin calls failed"
    );
    assert!(
        rss_max / 1024 <= rss_bound_mb,
        "master RSS {} MB over the bound {rss_bound_mb} MB",
        rss_max / 1024
    );
}

fn main() {
    // `cargo test --bench` passes test-harness flags; a listing asks for nothing.
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    soak();
}
