//! The master's side of issue 14's pod network, through the real binaries: service virtual IPs
//! in the CLI (`get services`, `describe`, `-o toml` round trip, refusals), the master's network
//! flags, and many fake registrations against a small pod range.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use bramble_tests::*;
use bramble_wire::objects::Object;

const SERVICES: &str = r#"
[[service]]
name = "web"
selector = { app = "web" }
port = 8080
target_port = 80

[[service]]
name = "peers"
selector = { app = "db" }
port = 5432
target_port = 5432
cluster_ip = "None"

[[service]]
name = "pinned"
selector = { app = "web" }
port = 9090
target_port = 90
cluster_ip = "10.43.7.7"
"#;

fn apply(m: &MasterProc, dir: &Path, name: &str, text: &str) -> std::process::Output {
    let f = dir.join(name);
    std::fs::write(&f, text).unwrap();
    m.cli(&["apply", "-f", f.to_str().unwrap()])
}

fn text(o: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn cluster_ips_through_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let m = MasterProc::start(&dir.path().join("m"), &[]);
    let o = apply(&m, dir.path(), "s.toml", SERVICES);
    assert!(o.status.success(), "{}", text(&o));

    let table = m.ok(&["get", "services"]);
    let rows: Vec<Vec<&str>> = table
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(rows[0][..3], ["NAME", "CLUSTER-IP", "PORT"], "{table}");
    let ip_of = |name: &str| {
        rows.iter()
            .find(|r| r[0] == name)
            .unwrap_or_else(|| panic!("{name} in {table}"))[1]
    };
    assert_eq!(ip_of("web"), "10.43.0.2", "{table}");
    assert_eq!(ip_of("peers"), "None", "{table}");
    assert_eq!(ip_of("pinned"), "10.43.7.7", "{table}");

    let d = m.ok(&["describe", "service", "web"]);
    assert!(d.contains("Cluster IP:  10.43.0.2"), "{d}");

    // The endpoints carry it (None for headless).
    let t = Instant::now();
    loop {
        let web = m.endpoints("web");
        let peers = m.endpoints("peers");
        if let (Some(w), Some(p)) = (web, peers) {
            assert_eq!(w.cluster_ip.as_deref(), Some("10.43.0.2"));
            assert_eq!(p.cluster_ip, None);
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(10), "no endpoints");
        std::thread::sleep(Duration::from_millis(50));
    }

    // `-o toml` writes it out; re-applying the rendering changes nothing.
    let rendered = m.ok(&["get", "services", "-o", "toml"]);
    assert!(
        rendered.contains("cluster_ip = \"10.43.0.2\"")
            && rendered.contains("cluster_ip = \"None\""),
        "{rendered}"
    );
    let o = apply(&m, dir.path(), "again.toml", &rendered);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).lines().all(|l| l.contains("unchanged")),
        "{}",
        text(&o)
    );
    // Re-applying the original (no cluster_ip for web) keeps the address.
    let o = apply(&m, dir.path(), "s.toml", SERVICES);
    assert!(o.status.success(), "{}", text(&o));
    let Some(Object::Service(web)) = m.one("services", "web") else {
        panic!("no web")
    };
    assert_eq!(web.spec.cluster_ip.as_deref(), Some("10.43.0.2"));

    // A change is refused with the fix; so are taken and out-of-range addresses.
    let changed = SERVICES.replace("cluster_ip = \"None\"", "cluster_ip = \"10.43.0.9\"");
    let o = apply(&m, dir.path(), "changed.toml", &changed);
    assert!(!o.status.success());
    assert!(
        text(&o).contains("cluster_ip is immutable")
            && text(&o).contains("delete and re-create service default/peers"),
        "{}",
        text(&o)
    );
    let taken = "[[service]]\nname = \"other\"\nselector = { a = \"b\" }\nport = 1\n\
                 target_port = 2\ncluster_ip = \"10.43.7.7\"\n";
    let o = apply(&m, dir.path(), "taken.toml", taken);
    assert!(!o.status.success());
    assert!(
        text(&o).contains("default/other") && text(&o).contains("taken"),
        "{}",
        text(&o)
    );
    let outside = taken.replace("10.43.7.7", "10.99.0.1");
    let o = apply(&m, dir.path(), "outside.toml", &outside);
    assert!(!o.status.success());
    assert!(
        text(&o).contains("outside the service range 10.43.0.0/16"),
        "{}",
        text(&o)
    );
    // A bad value is refused at the edge, before the master.
    let bad = taken.replace("10.43.7.7", "auto");
    let o = apply(&m, dir.path(), "bad.toml", &bad);
    assert!(!o.status.success());
    assert!(
        text(&o).contains("service \"other\": cluster_ip") && text(&o).contains("\"None\""),
        "{}",
        text(&o)
    );
    // Deleting a service frees its address for the next one.
    m.ok(&["delete", "service", "web"]);
    let o = apply(
        &m,
        dir.path(),
        "next.toml",
        &taken.replace("cluster_ip = \"10.43.7.7\"\n", ""),
    );
    assert!(o.status.success(), "{}", text(&o));
    let Some(Object::Service(other)) = m.one("services", "other") else {
        panic!("no other")
    };
    assert_eq!(other.spec.cluster_ip.as_deref(), Some("10.43.0.2"));
}

#[test]
fn the_master_refuses_contradicting_network_flags() {
    let dir = tempfile::tempdir().unwrap();
    for (flags, want) in [
        (
            &["--service-cidr", "10.42.16.0/20"][..],
            "--service-cidr 10.42.16.0/20 overlaps --cluster-cidr 10.42.0.0/16",
        ),
        (
            &["--service-cidr", "10.43.0.1/16"][..],
            "did you mean 10.43.0.0/16",
        ),
        (&["--cluster-domain", "bad_domain"][..], "not a DNS domain"),
    ] {
        let o = std::process::Command::new(bin("bramble"))
            .args(["master", "--data-dir"])
            .arg(dir.path().join("m"))
            .args(["--listen", "127.0.0.1:0"])
            .args(flags)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{flags:?}");
        assert!(err.contains(want), "{flags:?}: {err}");
    }
    // Disjoint custom ranges and a custom domain are fine.
    let m = MasterProc::start(
        &dir.path().join("ok"),
        &[
            "--cluster-cidr",
            "10.42.0.0/16",
            "--service-cidr",
            "10.96.0.0/12",
            "--cluster-domain",
            "cluster.example.org",
        ],
    );
    let o = apply(
        &m,
        dir.path(),
        "s.toml",
        SERVICES
            .split("[[service]]\nname = \"peers\"")
            .next()
            .unwrap(),
    );
    assert!(o.status.success(), "{}", text(&o));
    let Some(Object::Service(web)) = m.one("services", "web") else {
        panic!("no web")
    };
    assert_eq!(web.spec.cluster_ip.as_deref(), Some("10.96.0.2"));
}

/// 256 simulated nodes join with the join token against a range of 16 node subnets: every one
/// registers (the master does not refuse a node for want of a subnet), 16 get a subnet each,
/// none twice, and the master says the range is full, with the fix.
#[test]
fn fake_registrations_get_distinct_subnets_until_the_range_is_full() {
    let dir = tempfile::tempdir().unwrap();
    let m = MasterProc::start(
        &dir.path().join("m"),
        &["--cluster-cidr", "10.42.0.0/24", "--node-cidr-size", "28"],
    );
    let mut child: Child = with_nofile(Path::new(env!("CARGO_BIN_EXE_bramble-nodesim")))
        .args(["--master", &m.addr, "--token-file"])
        .arg(m.data_dir.join("join.token"))
        .args(["--nodes", "256", "--heartbeat", "2s", "--prefix", "fake"])
        .args(["--duration", "5m", "--until-stdin-closes"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn bramble-nodesim");
    let stdin = child.stdin.take();
    let out = child.stdout.take().unwrap();
    let sim = Proc {
        child,
        what: "nodesim".into(),
        cgroup_parent: None,
        bridge: None,
    };
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for l in BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(l).is_err() {
                return;
            }
        }
    });
    let t = Instant::now();
    let mut seen = Vec::new();
    loop {
        let l = rx
            .recv_timeout(Duration::from_secs(120).saturating_sub(t.elapsed()))
            .unwrap_or_else(|_| panic!("nodesim never ready: {seen:?}"));
        let ready = l.starts_with("nodesim: ready 256/256");
        seen.push(l);
        if ready {
            break;
        }
    }
    let nodes = m.nodes();
    assert_eq!(nodes.len(), 256);
    let cidrs: Vec<&str> = nodes
        .iter()
        .map(|n| n.spec.pod_cidr.as_str())
        .filter(|c| !c.is_empty())
        .collect();
    assert_eq!(cidrs.len(), 16, "{cidrs:?}");
    let distinct: std::collections::BTreeSet<&str> = cidrs.iter().copied().collect();
    assert_eq!(distinct.len(), 16, "{cidrs:?}");
    assert!(
        m.log().contains("the pod range is full") && m.log().contains("--cluster-cidr"),
        "the master says why"
    );
    drop(stdin);
    drop(sim);
}
