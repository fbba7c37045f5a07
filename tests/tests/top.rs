//! `bramble top` through the real binaries: a master and two workers on loopback (cgroup v1 on
//! this host; the QEMU guests run v2), one of them dialing through a counting relay. A pod
//! burning a core shows ≥ 300m (two shared cores: a generous bound), a pod that allocates and
//! touches 64 MiB shows a working set in [48, 96] MiB; per process, across namespaces, sorted,
//! as JSON; `top nodes` shows every node. The relay measures the node's traffic at idle (no
//! `top` asked: nothing is sampled or sent) and while reports flow after a `top`.

use std::time::{Duration, Instant};

use bramble_tests::relay::Relay;
use bramble_tests::{
    MasterProc, free_port, json, require_root, wait_for, worker, worker_log, write_file,
};

const PODS: &str = r#"
[[pod]]
name = "burn"
node = "n2"
[[pod.process]]
name = "spin"
command = ["/bin/sh", "-c", "while :; do :; done"]

[[pod]]
name = "mem"
node = "n2"
[[pod.process]]
name = "hog"
command = ["/usr/bin/python3", "-c", "import time\nb = b'x' * (64 << 20)\ntime.sleep(100000)"]
memory = "256Mi"
"#;

const QUIET: &str = r#"
[[namespace]]
name = "other"

[[pod]]
name = "quiet"
namespace = "other"
node = "n1"
[[pod.process]]
name = "main"
command = ["/bin/sleep", "100000"]
"#;

/// Bytes per minute through `relay` over `window`.
fn traffic(relay: &Relay, window: Duration) -> f64 {
    let (u0, d0) = relay.bytes();
    let t0 = Instant::now();
    std::thread::sleep(window);
    let (u1, d1) = relay.bytes();
    (u1 - u0 + d1 - d0) as f64 * 60.0 / t0.elapsed().as_secs_f64()
}

fn mib(s: &str) -> u64 {
    s.strip_suffix("Mi")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("not NMi: {s}"))
}

fn millis(s: &str) -> u32 {
    s.strip_suffix('m')
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("not Nm: {s}"))
}

/// `top pods` rows as (name, cpu millis, memory MiB) from the table.
fn rows(text: &str) -> Vec<(String, u32, u64)> {
    text.lines()
        .skip(1)
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f[0].to_string(), millis(f[1]), mib(f[2]))
        })
        .collect()
}

#[test]
fn top_pods_and_nodes_match_what_runs_and_cost_nothing_at_idle() {
    require_root();
    let tmp = tempfile::tempdir().unwrap();
    let m = MasterProc::start(&tmp.path().join("master"), &[]);
    let relay = Relay::start(&m.addr);
    let _w1 = worker(&m, "n1", &tmp.path().join("n1"))
        .via(&relay.addr)
        .start();
    let metrics = format!("127.0.0.1:{}", free_port());
    let _w2 = worker(&m, "n2", &tmp.path().join("n2"))
        .args(&["--metrics-listen", &metrics])
        .start();
    wait_for(Duration::from_secs(30), "n1 and n2 Ready", || {
        (m.node_ready("n1") && m.node_ready("n2")).then_some(())
    });
    m.ok(&["apply", "-f", &write_file(tmp.path(), "pods.toml", PODS)]);
    m.ok(&["apply", "-f", &write_file(tmp.path(), "quiet.toml", QUIET)]);
    wait_for(Duration::from_secs(60), "the pods Running", || {
        ["burn", "mem"]
            .iter()
            .all(|n| m.pod_status(n).is_some_and(|(phase, _)| phase == "Running"))
            .then_some(())
    });
    // The mem pod's allocation is done once python has run a moment.
    std::thread::sleep(Duration::from_secs(3));

    // Idle: nobody asked for usage, so the agents sample and send nothing for it.
    let idle = traffic(&relay, Duration::from_secs(30));

    let t0 = Instant::now();
    let first = m.ok(&["top", "pods"]);
    let first_took = t0.elapsed();
    assert!(
        first_took < Duration::from_secs(8),
        "the first top took {first_took:?}"
    );
    // Every node reports within about a second of being asked: both pods are in the first
    // answer (a retry covers a report that raced the pods' first sample).
    let table = wait_for(Duration::from_secs(40), "burn and mem in top pods", || {
        let t = m.ok(&["top", "pods"]);
        let r = rows(&t);
        (r.iter().any(|(n, ..)| n == "burn") && r.iter().any(|(n, ..)| n == "mem")).then_some(t)
    });
    assert!(
        first.contains("burn") || first.contains("mem"),
        "the first top printed no pod:\n{first}"
    );
    assert!(table.starts_with("NAME"), "{table}");
    assert!(!table.contains("quiet"), "another namespace's pod: {table}");
    let r = rows(&table);
    let burn = r.iter().find(|(n, ..)| n == "burn").unwrap();
    let mem = r.iter().find(|(n, ..)| n == "mem").unwrap();
    assert!(burn.1 >= 300, "burn at {}m:\n{table}", burn.1);
    assert!(burn.1 <= 2200, "burn at {}m (2 cores):\n{table}", burn.1);
    assert!(
        (48..=96).contains(&mem.2),
        "mem's working set {} MiB:\n{table}",
        mem.2
    );
    assert!(mem.1 < 300, "mem sleeps but shows {}m:\n{table}", mem.1);

    // Sorted by CPU, then memory; one pod by name; per process; across namespaces.
    let by_cpu = rows(&m.ok(&["top", "pods", "--sort-by", "cpu"]));
    assert_eq!(by_cpu[0].0, "burn", "{by_cpu:?}");
    let by_mem = rows(&m.ok(&["top", "pods", "--sort-by", "memory"]));
    assert_eq!(by_mem[0].0, "mem", "{by_mem:?}");
    let one = m.ok(&["top", "pods", "mem", "--no-headers"]);
    assert_eq!(one.lines().count(), 1, "{one}");
    assert!(one.starts_with("mem "), "{one}");
    let procs = m.ok(&["top", "pods", "--containers"]);
    let hog = procs
        .lines()
        .find(|l| l.starts_with("mem ") && l.contains(" hog "))
        .unwrap_or_else(|| panic!("no mem/hog row:\n{procs}"));
    let f: Vec<&str> = hog.split_whitespace().collect();
    assert!(
        (48..=96).contains(&mib(f[3])),
        "the hog process's RSS: {hog}"
    );
    let spin = procs
        .lines()
        .find(|l| l.starts_with("burn ") && l.contains(" spin "))
        .unwrap_or_else(|| panic!("no burn/spin row:\n{procs}"));
    let f: Vec<&str> = spin.split_whitespace().collect();
    assert!(millis(f[2]) >= 300, "the spin process: {spin}");
    let all = m.ok(&["top", "pods", "-A"]);
    assert!(all.starts_with("NAMESPACE"), "{all}");
    assert!(
        all.lines()
            .any(|l| l.starts_with("other") && l.contains("quiet")),
        "{all}"
    );
    // JSON: a List of PodMetrics.
    let doc = json(&m.ok(&["top", "pods", "-n", "other", "-o", "json"]));
    assert_eq!(doc["kind"], "List");
    assert_eq!(doc["items"][0]["kind"], "PodMetrics");
    assert_eq!(doc["items"][0]["metadata"]["name"], "quiet");
    assert_eq!(doc["items"][0]["containers"][0]["name"], "main");
    assert!(
        doc["items"][0]["usage"]["memory"]
            .as_str()
            .is_some_and(|s| s.ends_with("Ki"))
    );
    // A pod that does not exist: a clear error, exit non-zero.
    let o = m.cli(&["top", "pods", "nope"]);
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("no metrics for pod nope"),
        "{o:?}"
    );

    // Nodes: every node, with numbers (no `<unknown>`).
    let nodes = m.ok(&["top", "nodes"]);
    for n in ["n1", "n2"] {
        let line = nodes
            .lines()
            .find(|l| l.starts_with(&format!("{n} ")))
            .unwrap_or_else(|| panic!("node {n} missing:\n{nodes}"));
        assert!(!line.contains("<unknown>"), "{nodes}");
        let f: Vec<&str> = line.split_whitespace().collect();
        // The busy-looping pod runs on one of the two nodes, which share this host's CPUs.
        assert!(millis(f[1]) >= 300, "node {n}'s CPU: {line}");
        assert!(mib(f[3]) > 64, "node {n}'s memory: {line}");
        assert!(f[2].ends_with('%') && f[4].ends_with('%'), "{line}");
    }
    let doc = json(&m.ok(&["top", "nodes", "-o", "json", "--sort-by", "memory"]));
    assert_eq!(doc["items"].as_array().map(Vec::len), Some(2), "{doc}");
    assert_eq!(doc["items"][0]["kind"], "NodeMetrics");

    // While reports flow (for a few minutes after a `top`): one every 15 s per node.
    let reporting = traffic(&relay, Duration::from_secs(30));
    eprintln!(
        "top: first `top pods` {first_took:?}; node n1's traffic: idle {idle:.0} B/min, \
         reporting {reporting:.0} B/min (+{:.0} B/min with 1 pod)",
        reporting - idle
    );
    assert!(idle <= 1024.0, "idle traffic {idle:.0} B/min");
    assert!(
        reporting - idle <= 1024.0,
        "reports cost {:.0} B/min",
        reporting - idle
    );
    // n2's Prometheus endpoint, scraped with curl: cAdvisor's names for its pods.
    check_metrics(&metrics);

    let log = worker_log(&tmp.path().join("n1"));
    assert!(!log.contains("panicked"), "{log}");
    for p in ["burn", "mem"] {
        m.ok(&["delete", "pod", p]);
    }
    m.ok(&["delete", "pod", "quiet", "-n", "other"]);
}

/// The value of the series `name{labels…}` (labels given as `k="v"` substrings) in `text`.
fn series(text: &str, name: &str, labels: &[&str]) -> Option<f64> {
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
        .find(|l| labels.iter().all(|x| l.contains(x)))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

fn curl(url: &str) -> String {
    let o = std::process::Command::new("curl")
        .args(["-sS", "--max-time", "10", url])
        .output()
        .expect("run curl (apt-get install curl)");
    assert!(o.status.success(), "curl {url}: {o:?}");
    String::from_utf8(o.stdout).unwrap()
}

/// Scrapes `bramble-worker --metrics-listen` of n2 (which runs `burn` and `mem`) and checks the
/// format and their numbers.
fn check_metrics(addr: &str) {
    let text = curl(&format!("http://{addr}/metrics"));
    for family in [
        "container_cpu_usage_seconds_total counter",
        "container_memory_working_set_bytes gauge",
        "bramble_node_cpu_seconds_total counter",
        "bramble_node_memory_working_set_bytes gauge",
        "node_load1 gauge",
        "bramble_state_disk_written_bytes_total counter",
    ] {
        assert!(
            text.contains(&format!("# TYPE {family}\n")),
            "no {family}:\n{text}"
        );
    }
    assert!(series(&text, "bramble_node_memory_working_set_bytes", &[]).unwrap() > 0.0);
    let ws = series(
        &text,
        "container_memory_working_set_bytes",
        &["pod=\"mem\"", "container=\"\""],
    )
    .unwrap_or_else(|| panic!("no mem series:\n{text}"));
    let mib = ws / f64::from(1 << 20);
    assert!((48.0..=96.0).contains(&mib), "mem: {mib} MiB\n{text}");
    // A counter: it rises at about one second per second.
    let cpu = |t: &str| {
        series(
            t,
            "container_cpu_usage_seconds_total",
            &["pod=\"burn\"", "container=\"spin\""],
        )
        .unwrap_or_else(|| panic!("no burn/spin series:\n{t}"))
    };
    let a = cpu(&text);
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_secs(2));
    let b = cpu(&curl(&format!("http://{addr}/metrics")));
    let rate = (b - a) / t0.elapsed().as_secs_f64();
    assert!(rate >= 0.3, "burn's CPU rose at {rate} s/s");
    assert!(
        !text.contains("pod=\"quiet\""),
        "n1's pod in n2's metrics:\n{text}"
    );
    let o = std::process::Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}"])
        .arg(format!("http://{addr}/"))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&o.stdout), "404");
}
