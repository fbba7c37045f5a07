//! The pod network's kernel path with the real binaries: a master and three workers as hosts
//! (one network namespace each, 192.0.2.0/24 on a bridge) and a fourth host standing for "the
//! internet" (192.0.2.100, outside the cluster's ranges): an HTTP server that answers with the
//! address it sees, and a DNS server of the test's own, the nodes' only upstream resolver
//! (`--upstream-resolv-conf`; never a real resolver). Isolated pods (a daemon set `web`, TCP and
//! UDP, behind services) and an isolated client pod; the test runs its checks inside the
//! client's network and mount namespaces (`nsenter`), as a process of the pod would:
//! - egress NAT: the client reaches the internet host, which sees the node's address;
//! - cluster DNS: a service created after the pod started, a pod's name, an outside name
//!   (forwarded), all through the pod's `/etc/resolv.conf` and its search path;
//! - service virtual IPs from a pod, TCP and UDP, spread over the three pods (two on other
//!   nodes); an isolated pod's `host_port` on its node's address;
//! - `kill -9` of one agent under a request loop through that node's service port (from the
//!   internet host) and through the virtual IP (from the pod): no request fails; the restarted
//!   agent reconciles the table (one copy of every rule);
//! - `bramble-worker --cleanup` leaves no table, bridge, veth or route of Bramble;
//! - a rolling update under a request loop through a virtual IP loses no request (servers that
//!   drain for 2 s after SIGTERM, as Kubernetes apps do).
//!
//! Root only; fails (never skips) without root, `ip`, `nsenter`, `nft` or `/usr/bin/python3`.

use std::collections::BTreeSet;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bramble_tests::netns::{self, in_netns, start_worker};
use bramble_wire::objects::ProcessState;

const PYTHON: &str = "/usr/bin/python3";
const INTERNET: &str = "192.0.2.100";
const WORKERS: [&str; 3] = ["w1", "w2", "w3"];
const DOMAIN: &str = "bramble.local";

bramble_tests::cluster_type!(Cluster);

/// The internet host: HTTP on :80 answering with the client's address, DNS on :53 (UDP)
/// answering `outside.test` with its own address and NXDOMAIN for anything else; each query is
/// printed.
const INTERNET_SERVERS: &str = r#"
import http.server, socket, struct, sys, threading
me = sys.argv[1]
def dns():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((me, 53))
    while True:
        q, a = s.recvfrom(512)
        try:
            i, labels = 12, []
            while q[i]:
                labels.append(q[i + 1:i + 1 + q[i]].decode())
                i += 1 + q[i]
            name, qtype = ".".join(labels).lower(), struct.unpack(">H", q[i + 1:i + 3])[0]
            question = q[12:i + 5]
        except Exception:
            continue
        print("query", name, qtype, flush=True)
        if name == "outside.test":
            answers = b""
            if qtype == 1:
                answers = b"\xc0\x0c\x00\x01\x00\x01\x00\x00\x00\x3c\x00\x04" + socket.inet_aton(me)
            head = q[:2] + b"\x81\x80" + struct.pack(">HHHH", 1, 1 if answers else 0, 0, 0)
        else:
            head = q[:2] + b"\x81\x83" + struct.pack(">HHHH", 1, 0, 0, 0)
            answers = b""
        s.sendto(head + question + answers, a)
threading.Thread(target=dns, daemon=True).start()
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        b = self.client_address[0].encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(b)))
        self.end_headers()
        self.wfile.write(b)
    def log_message(self, *a):
        pass
http.server.ThreadingHTTPServer((me, 80), H).serve_forever()
"#;

const MANIFEST: &str = r#"
[[service]]
name = "web"
selector = { app = "web" }
port = 8080
target_port = 80

[[service]]
name = "web-udp"
selector = { app = "web" }
port = 8081
target_port = 81
protocol = "UDP"

[[daemonset]]
name = "web"
[daemonset.template]
labels = { app = "web" }
network = "isolated"
restart_policy = "Always"
[[daemonset.template.process]]
name = "server"
command = ["/usr/bin/python3", "-c", """
import http.server, socket, threading
name = socket.gethostname()
def udp():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("0.0.0.0", 81))
    while True:
        d, a = s.recvfrom(512)
        s.sendto(name.encode(), a)
threading.Thread(target=udp, daemon=True).start()
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        b = name.encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(b)))
        self.end_headers()
        self.wfile.write(b)
    def log_message(self, *a):
        pass
http.server.ThreadingHTTPServer(("0.0.0.0", 80), H).serve_forever()
"""]
memory = "64Mi"
readiness = { tcp = 80 }
ports = [{ container_port = 80, host_port = 8888 }]

[[pod]]
name = "client"
network = "isolated"
node_selector = { "bramble.io/hostname" = "w1" }
[[pod.process]]
name = "main"
command = ["/bin/sleep", "3600"]
"#;

/// A client run inside the client pod: each argument `kind:target` is one check, one line out.
/// `get:URL` (HTTP body), `udp:HOST:PORT`, `dns:NAME` (the addresses, sorted), `loop:URL:N:MS`
/// (N GETs spaced MS apart, one line each: the body or `ERR ...`).
const POD_CLIENT: &str = r#"
import socket, sys, time, urllib.request
def get(url):
    return urllib.request.urlopen(url, timeout=3).read().decode().strip()
for arg in sys.argv[1:]:
    kind, _, rest = arg.partition(":")
    try:
        if kind == "get":
            print(get(rest), flush=True)
        elif kind == "udp":
            host, port = rest.rsplit(":", 1)
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.settimeout(3)
            s.sendto(b"ping", (host, int(port)))
            print(s.recv(512).decode(), flush=True)
        elif kind == "dns":
            print(" ".join(sorted({a[4][0] for a in socket.getaddrinfo(rest, 80, socket.AF_INET)})), flush=True)
        elif kind == "loop":
            url, n, ms = rest.rsplit(":", 2)
            for _ in range(int(n)):
                try:
                    print(get(url), flush=True)
                except Exception as e:
                    print("ERR", e, flush=True)
                time.sleep(int(ms) / 1000)
    except Exception as e:
        print("ERR", kind, rest, e, flush=True)
"#;

/// [`POD_CLIENT`] inside the network and mount namespaces of process `pid` (a pod's).
fn pod_client(pid: u32) -> Command {
    let mut c = Command::new("nsenter");
    c.args([
        "-t",
        &pid.to_string(),
        "-n",
        "-m",
        "--",
        PYTHON,
        "-c",
        POD_CLIENT,
    ]);
    c
}

impl Cluster {
    fn start() -> (Cluster, netns::Host, Child) {
        assert!(
            std::path::Path::new(PYTHON).exists(),
            "{PYTHON} is missing: the network test serves HTTP and DNS with python3"
        );
        let nft = Command::new("nft").arg("--version").output();
        assert!(
            nft.as_ref().is_ok_and(|o| o.status.success()),
            "`nft --version` failed ({nft:?}): the network test reads the rules with nftables' nft"
        );
        let mut c = Cluster(netns::Cluster::start_with(
            WORKERS.len(),
            &["--heartbeat-interval", "500ms", "--node-grace", "3s"],
            |tmp| {
                let resolv = tmp.join("upstream-resolv.conf");
                std::fs::write(&resolv, format!("nameserver {INTERNET}\n")).unwrap();
                vec![
                    "--upstream-resolv-conf".into(),
                    resolv.display().to_string(),
                ]
            },
        ));
        let internet = c.topo.add_host(INTERNET);
        let log = std::fs::File::create(c.tmp.path().join("internet.log")).unwrap();
        let servers = in_netns(&internet.ns, PYTHON)
            .args(["-u", "-c", INTERNET_SERVERS, INTERNET])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start the internet host's servers");
        (c, internet, servers)
    }

    /// The host PID of the client pod's process.
    fn client_pid(&self) -> Option<u32> {
        self.m.pods("").into_iter().find_map(|p| {
            (p.meta.name == "client")
                .then(|| match p.status.processes.first().map(|s| &s.state) {
                    Some(ProcessState::Running { pid, .. }) => Some(*pid),
                    _ => None,
                })
                .flatten()
        })
    }

    /// Runs [`POD_CLIENT`] with `checks` inside the client pod; its output lines.
    fn in_pod(&self, checks: &[String]) -> Vec<String> {
        let pid = self.client_pid().expect("the client pod runs");
        let out = pod_client(pid)
            .args(checks)
            .output()
            .expect("nsenter into the client pod");
        assert!(
            out.status.success(),
            "client in the pod: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// In the background: `n` GETs of `url` from the client pod, 50 ms apart; its output.
    fn pod_loop(&self, url: &str, n: usize) -> std::thread::JoinHandle<String> {
        let pid = self.client_pid().expect("the client pod runs");
        let check = format!("loop:{url}:{n}:50");
        std::thread::spawn(move || {
            let out = pod_client(pid)
                .arg(check)
                .output()
                .expect("run the pod's loop");
            String::from_utf8_lossy(&out.stdout).to_string()
        })
    }

    fn in_pod1(&self, check: String) -> String {
        self.in_pod(&[check]).pop().unwrap_or_default()
    }

    /// The ready pods of service `web`: (name, address).
    fn web_pods(&self) -> Vec<(String, String)> {
        self.m
            .endpoints("web")
            .map(|e| e.ready.into_iter().map(|a| (a.pod, a.ip)).collect())
            .unwrap_or_default()
    }

    fn cluster_ip(&self, service: &str) -> Option<String> {
        self.m.endpoints(service)?.cluster_ip
    }

    /// `nft list table inet bramble` in worker `i`'s namespace.
    fn table(&self, i: usize) -> String {
        let out = in_netns(&self.topo.workers[i].ns, "nft")
            .args(["list", "table", "inet", "bramble"])
            .output()
            .expect("run nft");
        String::from_utf8_lossy(&out.stdout).to_string()
    }
}

#[test]
fn isolated_pods_get_nat_dns_and_kernel_services_that_survive_the_agent() {
    let (mut c, internet, mut servers) = Cluster::start();
    let file = c.tmp.path().join("net.toml");
    std::fs::write(&file, MANIFEST).unwrap();
    c.m.ok(&["apply", "-f", file.to_str().unwrap()]);
    let pods = c.wait(
        Duration::from_secs(60),
        "3 ready web pods and the client",
        || {
            let pods = c.web_pods();
            (pods.len() == 3 && c.client_pid().is_some()).then_some(pods)
        },
    );
    let names: BTreeSet<String> = pods.iter().map(|(n, _)| n.clone()).collect();
    // Every node says it serves the network in the kernel (its KernelNetwork condition).
    for n in c.m.nodes() {
        let k = n
            .status
            .condition(bramble_wire::objects::ConditionKind::KernelNetwork)
            .map(|k| (k.status, k.message.clone()));
        assert!(
            k.as_ref().is_some_and(|(ok, _)| *ok),
            "node {}: KernelNetwork {k:?}",
            n.meta.name
        );
    }
    let vip = c.cluster_ip("web").expect("service web has a virtual IP");
    let udp_vip = c
        .cluster_ip("web-udp")
        .expect("service web-udp has a virtual IP");
    assert!(vip.starts_with("10.43."), "{vip}");
    let w1_addr = c.topo.workers[0].addr.clone();

    // Egress NAT: the internet host sees the node's address, not the pod's.
    let seen = c.wait(
        Duration::from_secs(20),
        "the client reaching the internet",
        || {
            let s = c.in_pod1(format!("get:http://{INTERNET}/"));
            (!s.starts_with("ERR")).then_some(s)
        },
    );
    assert_eq!(seen, w1_addr, "the internet host saw {seen}{}", c.diag());

    // Cluster DNS through the pod's resolv.conf: an outside name (forwarded to the internet
    // host's DNS), the service, a pod's name, and a service created after the pod started.
    assert_eq!(
        c.in_pod1("dns:outside.test".into()),
        INTERNET,
        "{}",
        c.diag()
    );
    assert_eq!(c.in_pod1("dns:web".into()), vip);
    assert_eq!(c.in_pod1("dns:web.default".into()), vip);
    assert_eq!(c.in_pod1(format!("dns:web.default.svc.{DOMAIN}")), vip);
    let (pod0, ip0) = &pods[0];
    assert_eq!(
        &c.in_pod1(format!("dns:{pod0}.web.default.svc.{DOMAIN}")),
        ip0
    );
    let late = c.tmp.path().join("late.toml");
    std::fs::write(
        &late,
        "[[service]]\nname = \"late\"\nselector = { app = \"web\" }\nport = 8082\ntarget_port = 80\n",
    )
    .unwrap();
    c.m.ok(&["apply", "-f", late.to_str().unwrap()]);
    let late_vip = c.wait(Duration::from_secs(10), "service late's virtual IP", || {
        c.cluster_ip("late")
    });
    c.wait(
        Duration::from_secs(10),
        "the pod resolving service late",
        || (c.in_pod1("dns:late".into()) == late_vip).then_some(()),
    );

    // Virtual IPs from the pod, TCP and UDP: every web pod answers (two on other nodes).
    let answers =
        |check: String| -> BTreeSet<String> { c.in_pod(&vec![check; 24]).into_iter().collect() };
    let tcp = answers(format!("get:http://{vip}:8080/"));
    assert_eq!(tcp, names, "TCP through {vip}:8080{}", c.diag());
    let udp = answers(format!("udp:{udp_vip}:8081"));
    assert_eq!(udp, names, "UDP through {udp_vip}:8081{}", c.diag());

    // An isolated pod's host port: the internet host reaches w2's pod at w2's address.
    let on_w2 =
        c.m.endpoints("web")
            .and_then(|e| e.ready.into_iter().find(|a| a.node == WORKERS[1]))
            .map(|a| a.pod)
            .expect("a web pod on w2");
    let w2_addr = c.topo.workers[1].addr.clone();
    let got = in_netns(&internet.ns, PYTHON)
        .args(["-c", POD_CLIENT, &format!("get:http://{w2_addr}:8888/")])
        .output()
        .expect("run the host-port client");
    assert_eq!(
        String::from_utf8_lossy(&got.stdout).trim(),
        on_w2,
        "host port 8888 on w2{}",
        c.diag()
    );

    // One copy of every rule; the table is the agent's own.
    let table = c.table(0);
    assert!(table.contains("masquerade"), "{table}");
    assert!(table.contains(&vip), "{table}");

    // kill -9 of w1's agent under two request loops: through w1's service port from the
    // internet host, and through the virtual IP from the pod (on w1).
    let loop_n = 60;
    let outside = std::thread::spawn({
        let ns = internet.ns.clone();
        let url = format!("http://{w1_addr}:8080/");
        move || {
            let out = in_netns(&ns, PYTHON)
                .args(["-c", POD_CLIENT, &format!("loop:{url}:{loop_n}:50")])
                .output()
                .expect("run the outside loop");
            String::from_utf8_lossy(&out.stdout).to_string()
        }
    });
    let inside = c.pod_loop(&format!("http://{vip}:8080/"), loop_n);
    std::thread::sleep(Duration::from_millis(600));
    c.workers[0].kill9();
    let killed = Instant::now();
    let (outside, inside) = (outside.join().unwrap(), inside.join().unwrap());
    println!("loops ran {:?} past the kill", killed.elapsed());
    for (what, out) in [
        ("outside via w1's port", &outside),
        ("pod via the VIP", &inside),
    ] {
        let lines: Vec<&str> = out.lines().collect();
        let failed: Vec<&&str> = lines.iter().filter(|l| !names.contains(**l)).collect();
        assert!(
            lines.len() == loop_n && failed.is_empty(),
            "{what}: {} of {loop_n} requests failed while w1's agent was dead: {failed:?}{}",
            failed.len() + loop_n - lines.len().min(loop_n),
            c.diag()
        );
    }
    let before = c.table(0);
    let w1 = start_worker(
        &c.topo,
        &c.topo.workers[0],
        &c.m,
        WORKERS[0],
        &c.tmp.path().join(WORKERS[0]),
        &[
            "--upstream-resolv-conf",
            c.tmp.path().join("upstream-resolv.conf").to_str().unwrap(),
        ],
    );
    c.workers.push(w1);
    c.wait(Duration::from_secs(20), "w1 Ready again", || {
        c.all_ready().then_some(())
    });
    std::thread::sleep(Duration::from_secs(2));
    let after = c.table(0);
    assert_eq!(
        after.matches("masquerade").count(),
        before.matches("masquerade").count(),
        "the restarted agent duplicated rules:\nbefore:\n{before}\nafter:\n{after}"
    );
    assert_eq!(c.in_pod1(format!("get:http://{INTERNET}/")), w1_addr);

    // --cleanup on w3 (its agent stopped first) leaves nothing of Bramble's.
    c.workers[2].kill9();
    let ns = c.topo.workers[2].ns.clone();
    let out = in_netns(&ns, bramble_tests::bin("bramble-worker"))
        .args(["--cleanup"])
        .output()
        .expect("run bramble-worker --cleanup");
    assert!(
        out.status.success(),
        "--cleanup: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let tables = in_netns(&ns, "nft")
        .args(["list", "tables"])
        .output()
        .unwrap();
    assert!(
        !String::from_utf8_lossy(&tables.stdout).contains("bramble"),
        "{}",
        String::from_utf8_lossy(&tables.stdout)
    );
    let links = in_netns(&ns, "ip").args(["-o", "link"]).output().unwrap();
    let links = String::from_utf8_lossy(&links.stdout);
    assert!(
        !links.contains("bramble0") && !links.contains(": bp"),
        "links left: {links}"
    );
    for proto in ["98", "99"] {
        let routes = in_netns(&ns, "ip")
            .args(["route", "show", "proto", proto])
            .output()
            .unwrap();
        assert!(
            routes.stdout.is_empty(),
            "routes of proto {proto} left: {}",
            String::from_utf8_lossy(&routes.stdout)
        );
    }
    let _ = servers.kill();
    let _ = servers.wait();
}

/// A server that says its version, and on SIGTERM keeps serving for 2 s before it exits (as
/// Kubernetes apps drain; the endpoints leave every node's table in the meantime).
const ROLLING: &str = r#"
[[service]]
name = "roll"
selector = { app = "roll" }
port = 8090
target_port = 80

[[deployment]]
name = "roll"
replicas = 3
[deployment.template]
labels = { app = "roll" }
network = "isolated"
[[deployment.template.process]]
name = "server"
env = { VERSION = "VERSION_VALUE" }
command = ["/usr/bin/python3", "-c", """
import http.server, os, signal, threading, time
v = os.environ["VERSION"].encode()
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", str(len(v)))
        self.end_headers()
        self.wfile.write(v)
    def log_message(self, *a):
        pass
def term(*a):
    threading.Thread(target=lambda: (time.sleep(2), os._exit(0))).start()
signal.signal(signal.SIGTERM, term)
http.server.ThreadingHTTPServer(("0.0.0.0", 80), H).serve_forever()
"""]
memory = "64Mi"
readiness = { tcp = 80, period = "200ms", timeout = "100ms" }

[[pod]]
name = "client"
network = "isolated"
[[pod.process]]
name = "main"
command = ["/bin/sleep", "3600"]
"#;

#[test]
fn a_rolling_update_through_a_virtual_ip_loses_no_request() {
    let (c, _internet, mut servers) = Cluster::start();
    let file = c.tmp.path().join("roll.toml");
    std::fs::write(&file, ROLLING.replace("VERSION_VALUE", "v1")).unwrap();
    c.m.ok(&["apply", "-f", file.to_str().unwrap()]);
    c.wait(
        Duration::from_secs(60),
        "3 ready v1 pods and the client",
        || {
            let ready = c.m.endpoints("roll").map_or(0, |e| e.ready.len());
            (ready == 3 && c.client_pid().is_some()).then_some(())
        },
    );
    let vip = c.cluster_ip("roll").expect("service roll has a virtual IP");
    assert_eq!(c.in_pod1(format!("get:http://{vip}:8090/")), "v1");

    // A request every 50 ms through the virtual IP from the client pod, across the rollout.
    let n = 300;
    let requests = c.pod_loop(&format!("http://{vip}:8090/"), n);
    std::thread::sleep(Duration::from_secs(1));
    std::fs::write(&file, ROLLING.replace("VERSION_VALUE", "v2")).unwrap();
    c.m.ok(&["apply", "-f", file.to_str().unwrap()]);
    let out = requests.join().unwrap();
    let lines: Vec<&str> = out.lines().collect();
    let failed: Vec<&&str> = lines
        .iter()
        .filter(|l| **l != "v1" && **l != "v2")
        .collect();
    let first_v2 = lines.iter().position(|l| *l == "v2");
    println!(
        "{} requests, {} failed, first v2 answer at request {first_v2:?}, last: {:?}",
        lines.len(),
        failed.len(),
        lines.last()
    );
    assert!(
        lines.len() == n && failed.is_empty(),
        "{} of {n} requests failed during the rollout: {failed:?}{}",
        failed.len() + n - lines.len().min(n),
        c.diag()
    );
    assert_eq!(
        lines.last().copied(),
        Some("v2"),
        "the rollout did not finish within the loop{}",
        c.diag()
    );
    let _ = servers.kill();
    let _ = servers.wait();
}
