//! Services through the node proxy, with the real binaries: a master and three workers as
//! separate hosts (one network namespace each, 192.0.2.0/24 on a bridge), so every worker's
//! proxy binds the same service port. A 3-replica deployment of `python3 -m http.server` (host
//! network, each replica serving a file holding its pod name) behind a Service:
//! - `get services` / `get endpoints` show it; endpoints list the three replicas at their nodes;
//! - requests through the proxy port on every node succeed and spread over the replicas;
//! - a pod started after the service finds it through `BRAMBLE_SERVICE_WEB_HOST/_PORT` (the
//!   service's virtual IP, served by the kernel);
//! - `kill -9` of one replica's server: requests made right away still all succeed (the proxy
//!   skips the refused backend), the pod leaves the endpoints, and then N requests through every
//!   node's proxy all succeed;
//! - a restarted agent gets the endpoints as it connects: its proxy serves again.
//!
//! And isolated pods (`network = "isolated"`, a daemon set: one per node) behind a service: each
//! node gets its own pod subnet out of 198.51.100.0/24, each pod an address in it, and every
//! node's proxy reaches the pods on the other nodes through the routes the workers install.
//!
//! Root only; fails (never skips) without root, `ip`, `nsenter` or `/usr/bin/python3`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant};

use bramble_tests::netns::{self, in_netns, start_worker};
use bramble_wire::objects::ProcessState;

const WORKERS: [&str; 3] = ["w1", "w2", "w3"];
const PYTHON: &str = "/usr/bin/python3";
/// Where every node's proxy listens.
const SERVICE_PORT: u16 = 8080;
/// Where the replicas listen (host network; a host port, so one replica per node).
const POD_PORT: u16 = 8081;
/// Requests per node per round.
const N: usize = 30;

bramble_tests::cluster_type!(Cluster);

/// A client run inside a host's namespace: `N` GETs of a URL, one line per answer (`ERR ...`
/// for a failed request). Every request has a 5 s timeout.
const CLIENT: &str = r#"
import sys, urllib.request
url, n = sys.argv[1], int(sys.argv[2])
for _ in range(n):
    try:
        print(urllib.request.urlopen(url, timeout=5).read().decode().strip(), flush=True)
    except Exception as e:
        print("ERR", e, flush=True)
"#;

impl Cluster {
    fn start() -> Cluster {
        Cluster::start_with(&[])
    }

    fn start_with(master_flags: &[&str]) -> Cluster {
        assert!(
            Path::new(PYTHON).exists(),
            "{PYTHON} is missing: the services test serves HTTP with python3 (apt-get install python3)"
        );
        let mut flags = vec!["--heartbeat-interval", "500ms", "--node-grace", "3s"];
        flags.extend(master_flags);
        Cluster(netns::Cluster::start(WORKERS.len(), &flags))
    }

    /// Ready endpoints of service `web`: pod name -> `ip:port`.
    fn ready_endpoints(&self) -> BTreeMap<String, String> {
        // Not found for a few ms after the service is created (computed, not stored).
        let Some(e) = self.m.endpoints("web") else {
            return BTreeMap::new();
        };
        e.ready
            .into_iter()
            .map(|a| (a.pod, format!("{}:{}", a.ip, a.port)))
            .collect()
    }

    /// Pod name -> (phase, node, pid of its process).
    fn pods(&self) -> BTreeMap<String, (String, String, Option<u64>)> {
        self.m
            .pods("app=web")
            .into_iter()
            .map(|p| {
                let pid = match p.status.processes.first().map(|s| &s.state) {
                    Some(ProcessState::Running { pid, .. }) => Some(u64::from(*pid)),
                    _ => None,
                };
                let phase = p.status.phase.as_str().to_string();
                (
                    p.meta.name,
                    (phase, p.spec.node_name.unwrap_or_default(), pid),
                )
            })
            .collect()
    }

    /// `n` requests through the proxy of worker `i`, from inside its namespace (as its pods do).
    fn requests(&self, i: usize, n: usize) -> Vec<String> {
        self.requests_to(i, SERVICE_PORT, n)
    }

    /// `n` requests to `port` on worker `i`'s loopback, from inside its namespace.
    fn requests_to(&self, i: usize, port: u16, n: usize) -> Vec<String> {
        let url = format!("http://127.0.0.1:{port}/id");
        let out = in_netns(&self.topo.workers[i].ns, PYTHON)
            .args(["-c", CLIENT, &url, &n.to_string()])
            .output()
            .expect("run the python client");
        assert!(
            out.status.success(),
            "client in {}: {}",
            self.topo.workers[i].ns,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// `n` requests through every node's proxy; panics (with the cluster's state) unless every
    /// one was answered by a replica `valid` accepts. Returns the answers per node.
    fn all_succeed(&self, n: usize, valid: impl Fn(&str) -> bool, when: &str) -> Vec<Vec<String>> {
        (0..WORKERS.len())
            .map(|i| {
                let got = self.requests(i, n);
                let bad: Vec<&String> = got.iter().filter(|g| !valid(g)).collect();
                if got.len() != n || !bad.is_empty() {
                    panic!(
                        "{when}: through {}'s proxy {} of {n} requests failed or reached an unexpected backend: {bad:?}{}",
                        WORKERS[i],
                        bad.len() + n - got.len().min(n),
                        self.diag()
                    );
                }
                got
            })
            .collect()
    }
}

fn manifest(www: &Path) -> String {
    format!(
        r#"
[[service]]
name = "web"
selector = {{ app = "web" }}
port = {SERVICE_PORT}
target_port = {POD_PORT}

[[deployment]]
name = "web"
replicas = 3
[deployment.template]
labels = {{ app = "web" }}
restart_policy = "Never"
network = "host"
[[deployment.template.process]]
name = "http"
command = ["/bin/sh", "-c", "d={www}/$HOSTNAME; mkdir -p $d && echo $HOSTNAME > $d/id && cd $d && exec {PYTHON} -m http.server {POD_PORT} --bind 0.0.0.0"]
memory = "64Mi"
ports = [{{ container_port = {POD_PORT}, host_port = {POD_PORT} }}]
[[deployment.template.volume]]
name = "www"
mount_path = "{www}"
host_path = "{www}"
"#,
        www = www.display()
    )
}

const DISCOVERY_CLIENT: &str = r#"
[[pod]]
name = "client"
restart_policy = "Never"
[[pod.process]]
name = "main"
command = ["/usr/bin/python3", "-c", '''
import os, urllib.request
host, port = os.environ["BRAMBLE_SERVICE_WEB_HOST"], os.environ["BRAMBLE_SERVICE_WEB_PORT"]
print("service at", host, port)
print("answer", urllib.request.urlopen("http://%s:%s/id" % (host, port), timeout=5).read().decode().strip())
''']
memory = "64Mi"
"#;

#[test]
fn service_answers_on_every_node_and_a_killed_replica_leaves_the_endpoints() {
    let mut c = Cluster::start();
    let www = c.tmp.path().join("www");
    std::fs::create_dir_all(&www).unwrap();
    let file = c.tmp.path().join("web.toml");
    std::fs::write(&file, manifest(&www)).unwrap();
    c.m.ok(&["apply", "-f", file.to_str().unwrap()]);

    let svc = c.m.ok(&["get", "services"]);
    assert!(
        svc.contains("web") && svc.contains(&SERVICE_PORT.to_string()),
        "get services:\n{svc}"
    );

    // Three ready endpoints, each at its own node's address and the pods' port.
    let eps = c.wait(Duration::from_secs(30), "3 ready endpoints", || {
        let e = c.ready_endpoints();
        (e.len() == 3).then_some(e)
    });
    let pods = c.pods();
    let mut ips = BTreeSet::new();
    for (pod, addr) in &eps {
        let (phase, node, _) = &pods[pod];
        assert_eq!(phase, "Running", "{pod}");
        let i = WORKERS.iter().position(|w| w == node).unwrap();
        assert_eq!(
            addr,
            &format!("{}:{POD_PORT}", c.topo.workers[i].addr),
            "{pod} on {node}"
        );
        ips.insert(addr.clone());
    }
    assert_eq!(ips.len(), 3, "one replica per node: {eps:?}");
    let wide = c.m.ok(&["get", "ep", "-o", "wide"]);
    for pod in eps.keys() {
        assert!(wide.contains(pod.as_str()), "get ep -o wide:\n{wide}");
    }

    // The replicas are up once they answer directly; then through every node's proxy.
    let names: BTreeSet<String> = eps.keys().cloned().collect();
    c.wait(Duration::from_secs(30), "every replica serving", || {
        (0..WORKERS.len())
            .all(|i| {
                let got = c.requests(i, 6);
                got.iter().all(|g| names.contains(g))
                    && got.iter().collect::<BTreeSet<_>>().len() == 3
            })
            .then_some(())
    });
    let t = Instant::now();
    let answers = c.all_succeed(N, |a| names.contains(a), "all replicas up");
    println!("{} requests through 3 proxies in {:?}", 3 * N, t.elapsed());
    for (i, got) in answers.iter().enumerate() {
        let mut spread: BTreeMap<&str, usize> = BTreeMap::new();
        for g in got {
            *spread.entry(g.as_str()).or_default() += 1;
        }
        println!("through {}: {spread:?}", WORKERS[i]);
        assert_eq!(
            spread.len(),
            3,
            "round-robin reaches every replica through {}: {spread:?}",
            WORKERS[i]
        );
        assert!(
            spread.values().all(|&k| k >= N / 3 - 1),
            "requests spread evenly through {}: {spread:?}",
            WORKERS[i]
        );
    }

    // Discovery: a pod started now sees the service in its environment and reaches it.
    let client = c.tmp.path().join("client.toml");
    std::fs::write(&client, DISCOVERY_CLIENT).unwrap();
    c.m.ok(&["apply", "-f", client.to_str().unwrap()]);
    let log = c.wait(Duration::from_secs(30), "the client pod's answer", || {
        let o = c.m.cli(&["logs", "client"]);
        let s = String::from_utf8_lossy(&o.stdout).to_string();
        s.contains("answer").then_some(s)
    });
    // The kernel serves the service's virtual IP on every node (the agents run in their own
    // namespaces, with the kernel path): that is the address the variables name.
    let vip =
        c.m.endpoints("web")
            .and_then(|e| e.cluster_ip)
            .expect("web has a virtual IP");
    assert!(
        log.contains(&format!("service at {vip} {SERVICE_PORT}")),
        "client log:\n{log}"
    );
    assert!(
        names.iter().any(|n| log.contains(&format!("answer {n}"))),
        "client log:\n{log}"
    );

    // Kill one replica's server (SIGKILL, its PID from the pod's status).
    let victim = eps.keys().next().unwrap().clone();
    let pid = pods[&victim].2.expect("victim pid");
    let killed = Instant::now();
    let st = std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .unwrap();
    assert!(st.success(), "kill -9 {pid}");
    // Right away (before the endpoints change reaches the proxies) nothing fails either: the
    // proxy skips the refused backend. The replica set's replacement (restart_policy = "Never")
    // may already answer too; the killed replica cannot. Meanwhile a second thread times how
    // long the killed replica takes to leave `get endpoints`.
    let replica = |a: &str| a.starts_with("web-") && a != victim;
    let left_after = std::thread::scope(|sc| {
        let watcher = sc.spawn(|| {
            let deadline = killed + Duration::from_secs(10);
            while Instant::now() < deadline {
                if !c.ready_endpoints().contains_key(&victim) {
                    return Some(killed.elapsed());
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            None
        });
        c.all_succeed(N, replica, "right after the kill");
        watcher.join().unwrap()
    });
    let Some(left_after) = left_after else {
        panic!(
            "the killed replica {victim} was still in the endpoints 10 s after the kill{}",
            c.diag()
        );
    };
    println!("killed replica {victim} left the endpoints {left_after:?} after the kill");
    // Then N requests through every node's proxy all succeed, none by the dead replica.
    let answers = c.all_succeed(N, replica, "after the killed replica left the endpoints");
    let known: BTreeSet<String> = c.pods().into_keys().collect();
    for a in answers.iter().flatten() {
        assert!(
            known.contains(a),
            "answer {a} is not a pod of the deployment"
        );
    }

    // A worker gets the endpoints as it connects: restart w3's agent (kill -9; its pods keep
    // running) without its saved endpoints, and its proxy serves again.
    c.workers[2].kill9();
    let saved = c.tmp.path().join(WORKERS[2]).join("endpoints");
    std::fs::remove_file(&saved)
        .unwrap_or_else(|e| panic!("the worker keeps its endpoints in {}: {e}", saved.display()));
    let w3 = start_worker(
        &c.topo,
        &c.topo.workers[2],
        &c.m,
        WORKERS[2],
        &c.tmp.path().join(WORKERS[2]),
        &[],
    );
    c.workers.push(w3);
    c.wait(
        Duration::from_secs(30),
        "w3's proxy serving again after its agent restarted",
        || c.requests(2, 3).iter().all(|a| replica(a)).then_some(()),
    );
    c.all_succeed(N, replica, "after w3's agent restarted");
}

/// The service lifecycle through the CLI on a loopback master (no workers needed): create,
/// update in place, endpoints follow, errors name the object and the fix, delete.
#[test]
fn service_lifecycle_through_the_cli() {
    let tmp = tempfile::tempdir().unwrap();
    let m = bramble_tests::MasterProc::start(&tmp.path().join("master"), &[]);
    let file = tmp.path().join("svc.toml");
    let svc = |port: u16| {
        format!(
            "[[service]]\nname = \"api\"\nselector = {{ app = \"api\" }}\nport = {port}\ntarget_port = 9000\n"
        )
    };
    std::fs::write(&file, svc(8080)).unwrap();
    let f = file.to_str().unwrap();
    m.ok(&["apply", "-f", f]);
    let ep = bramble_tests::wait_for(Duration::from_secs(10), "endpoints of api", || {
        m.endpoints("api")
    });
    assert_eq!(ep.port, 8080);
    assert_eq!(ep.ready.len(), 0);
    // Re-applying with another port updates it; the endpoints follow.
    std::fs::write(&file, svc(8081)).unwrap();
    m.ok(&["apply", "-f", f]);
    let got = m.ok(&["get", "svc"]);
    assert!(got.contains("8081") && got.contains("app=api"), "{got}");
    bramble_tests::wait_for(Duration::from_secs(10), "endpoints on 8081", || {
        m.endpoints("api").filter(|e| e.port == 8081)
    });
    // Endpoints cannot be applied; an unknown one is a clear not-found.
    let o = m.cli(&["get", "ep", "nope"]);
    assert_eq!(o.status.code(), Some(3));
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(
        e.contains("nope") && e.contains("bramble get endpoints"),
        "{e}"
    );
    std::fs::write(
        &file,
        "[[service]]\nname = \"bad\"\nport = 1\ntarget_port = 2\n",
    )
    .unwrap();
    let o = m.cli(&["apply", "-f", f]);
    assert!(!o.status.success());
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(e.contains("selector"), "{e}");
    // Deleted: its endpoints go too.
    m.ok(&["delete", "service", "api"]);
    bramble_tests::wait_for(Duration::from_secs(10), "endpoints of api gone", || {
        (m.cli(&["get", "ep", "api"]).status.code() == Some(3)).then_some(())
    });
}

const ISOLATED: &str = r#"
[[service]]
name = "iso"
selector = { app = "iso" }
port = 8090
target_port = 8082

[[service]]
name = "iso-udp"
selector = { app = "iso" }
port = 8091
target_port = 8083
protocol = "UDP"

[[daemonset]]
name = "iso"
[daemonset.template]
labels = { app = "iso" }
network = "isolated"
restart_policy = "Always"
[[daemonset.template.process]]
name = "http"
command = ["/bin/sh", "-c", "d=WWW/$HOSTNAME; mkdir -p $d && echo $HOSTNAME > $d/id && cd $d && exec /usr/bin/python3 -m http.server 8082 --bind 0.0.0.0"]
memory = "64Mi"
readiness = { tcp = 8082 }
[[daemonset.template.process]]
name = "udp"
command = ["/usr/bin/python3", "-c", """
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", 8083))
while True:
    d, a = s.recvfrom(65536)
    s.sendto(socket.gethostname().encode() + b" " + d, a)
"""]
memory = "32Mi"
[[daemonset.template.volume]]
name = "www"
mount_path = "WWW"
host_path = "WWW"
"#;

/// A UDP client run inside a host's namespace: `n` datagrams to a port on loopback, each from a
/// new socket (a new session), one line per answer (`ERR ...` when none came within 2 s).
const UDP_CLIENT: &str = r#"
import socket, sys
port, n = int(sys.argv[1]), int(sys.argv[2])
for i in range(n):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(2)
    try:
        s.sendto(b"ping%d" % i, ("127.0.0.1", port))
        print(s.recvfrom(65536)[0].decode(), flush=True)
    except Exception as e:
        print("ERR", e, flush=True)
    s.close()
"#;

#[test]
fn isolated_pods_get_node_subnets_and_are_reached_across_nodes() {
    let c = Cluster::start_with(&[
        "--cluster-cidr",
        "198.51.100.0/24",
        "--node-cidr-size",
        "26",
    ]);
    // Every node has its own /26 of the range.
    let nodes = c.m.nodes();
    let cidrs: BTreeSet<String> = nodes.iter().map(|n| n.spec.pod_cidr.clone()).collect();
    assert_eq!(cidrs.len(), 3, "{cidrs:?}");
    for cidr in &cidrs {
        assert!(
            cidr.starts_with("198.51.100.") && cidr.ends_with("/26"),
            "{cidrs:?}"
        );
    }
    assert!(c.m.ok(&["get", "nodes", "-o", "wide"]).contains("/26"));

    let www = c.tmp.path().join("www");
    std::fs::create_dir_all(&www).unwrap();
    let file = c.tmp.path().join("iso.toml");
    std::fs::write(&file, ISOLATED.replace("WWW", &www.display().to_string())).unwrap();
    c.m.ok(&["apply", "-f", file.to_str().unwrap()]);

    // Three ready endpoints, each at the pod's own address, inside its node's subnet.
    let eps = c.wait(
        Duration::from_secs(30),
        "3 ready isolated endpoints",
        || {
            let ready: Vec<(String, String, String)> = (c.m.endpoints("iso")?.ready)
                .into_iter()
                .map(|a| (a.pod, a.ip, a.node))
                .collect();
            (ready.len() == 3).then_some(ready)
        },
    );
    let node_cidr: BTreeMap<String, String> = nodes
        .into_iter()
        .map(|n| (n.meta.name, n.spec.pod_cidr))
        .collect();
    for (pod, ip, node) in &eps {
        let cidr = &node_cidr[node];
        let base: std::net::Ipv4Addr = cidr.split('/').next().unwrap().parse().unwrap();
        let ip: std::net::Ipv4Addr = ip.parse().unwrap();
        assert_eq!(
            u32::from(ip) & !63,
            u32::from(base),
            "{pod} on {node} has {ip}, outside the node's {cidr}"
        );
    }
    let wide = c.m.ok(&["get", "pods", "-l", "app=iso", "-o", "wide"]);
    for (_, ip, _) in &eps {
        assert!(wide.contains(ip.as_str()), "get pods -o wide:\n{wide}");
    }

    // Through every node's proxy, every pod answers: two of the three are on other nodes.
    let names: BTreeSet<String> = eps.iter().map(|(p, _, _)| p.clone()).collect();
    c.wait(
        Duration::from_secs(30),
        "every node's proxy reaching every isolated pod",
        || {
            (0..WORKERS.len())
                .all(|i| {
                    let got = c.requests_to(i, 8090, 6);
                    got.iter().all(|g| names.contains(g))
                        && got.iter().collect::<BTreeSet<_>>().len() == 3
                })
                .then_some(())
        },
    );
    // An isolated pod finds the service through its variables: the proxy on its node's bridge.
    let client = c.tmp.path().join("iso-client.toml");
    std::fs::write(
        &client,
        DISCOVERY_CLIENT.replace("WEB", "ISO").replace(
            "restart_policy = \"Never\"",
            "restart_policy = \"Never\"\nnetwork = \"isolated\"",
        ),
    )
    .unwrap();
    c.m.ok(&["apply", "-f", client.to_str().unwrap()]);
    let log = c.wait(
        Duration::from_secs(30),
        "the isolated client's answer",
        || {
            let o = c.m.cli(&["logs", "client"]);
            let s = String::from_utf8_lossy(&o.stdout).to_string();
            s.contains("answer").then_some(s)
        },
    );
    let vip =
        c.m.endpoints("iso")
            .and_then(|e| e.cluster_ip)
            .expect("iso has a virtual IP");
    assert!(
        log.contains(&format!("service at {vip} 8090")),
        "client log:\n{log}"
    );
    assert!(
        names.iter().any(|n| log.contains(&format!("answer {n}"))),
        "client log:\n{log}"
    );

    // The UDP service: every node's proxy spreads new clients over all three pods.
    c.wait(
        Duration::from_secs(30),
        "every node's UDP proxy reaching every isolated pod",
        || {
            (0..WORKERS.len())
                .all(|i| {
                    let out = in_netns(&c.topo.workers[i].ns, PYTHON)
                        .args(["-c", UDP_CLIENT, "8091", "9"])
                        .output()
                        .expect("run the UDP client");
                    let got: Vec<String> = String::from_utf8_lossy(&out.stdout)
                        .lines()
                        .map(str::to_string)
                        .collect();
                    let pods: BTreeSet<&str> = got
                        .iter()
                        .filter_map(|l| l.split_once(" ping").map(|(p, _)| p))
                        .collect();
                    got.len() == 9 && pods.len() == 3 && pods.iter().all(|p| names.contains(*p))
                })
                .then_some(())
        },
    );

    for (i, worker) in WORKERS.iter().enumerate() {
        let got = c.requests_to(i, 8090, N);
        let bad: Vec<&String> = got.iter().filter(|g| !names.contains(*g)).collect();
        assert!(
            got.len() == N && bad.is_empty(),
            "through {worker}'s proxy: {bad:?}{}",
            c.diag()
        );
    }
}
