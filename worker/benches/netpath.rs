//! The kernel service path (the nftables table of `net::rules`, installed by `sys::nft`) against
//! a direct connection to the same pod, and against the userspace proxy, in one run: namespaces
//! of this benchmark's own (a node with a pod bridge, one pod behind it, a LAN client), a TCP
//! server in the pod, and from the LAN client: direct to the pod's address (the node routes),
//! the service's virtual IP (DNAT in the node's prerouting), the node port (node address:port)
//! and the userspace proxy (`bramble_worker::proxy::Proxy` on the node's address); from the node
//! itself: direct, the virtual IP (output hook) and the proxy on loopback. For each: a request on
//! a new connection (connect, 1-byte request and answer, close), a 64-byte round trip on an open
//! connection (p50/p99, added µs against direct from the same place), throughput up and down
//! (MiB/s, ratio to direct). The paths of one place are measured interleaved, with the table
//! installed. Direct is also measured without any table, before and after (the table's NAT
//! chains turn conntrack on in the node's namespace, for direct traffic too): the "no table"
//! row is the mean of both. Then one `replace_table` with 100 services × 3 endpoints (p50 of
//! 20), in a namespace of its own.
//!
//! `cargo bench -p bramble-worker --bench netpath` (release; root: fails otherwise). Bounded:
//! fixed counts, socket timeouts, and a watchdog that removes the namespaces and exits after
//! `WATCHDOG`. The proxy runs on smol's global executor (one thread, like on a board), started
//! from a thread inside the node's namespace (its thread inherits that namespace); the pod's
//! server on a thread of its own; clients are blocking std sockets on threads that joined the
//! client's or the node's namespace.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, SocketAddrV4, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

use bramble_wire::objects::{EndpointAddress, Endpoints, Meta};
use bramble_worker::net::rules::{NetPlan, Proto, ServiceRule, plan};
use bramble_worker::proxy::Proxy;
use bramble_worker::sys::{nft, podnet};
use futures_lite::{AsyncReadExt, AsyncWriteExt};

/// Bytes per transfer, unless a probe shows it would take longer than `BULK_SECS`.
const BULK: u64 = 256 << 20;
const BULK_MIN: u64 = 16 << 20;
const BULK_SECS: f64 = 3.0;
const ROUNDS: usize = 9;
const CONNECT_REQS: usize = 2000;
const PINGS: usize = 5000;
const WARMUP: usize = 200;
const MSG: usize = 64;
/// Every client socket read or write gives up (the benchmark fails) after this.
const IO_TIMEOUT: Duration = Duration::from_secs(20);
/// The whole run gives up after this: the namespaces are removed and the process exits.
const WATCHDOG: Duration = Duration::from_secs(900);

const NODE_LAN: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
const CLIENT_LAN: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);
const GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 42, 1, 1);
const POD: Ipv4Addr = Ipv4Addr::new(10, 42, 1, 2);
const POD_PORT: u16 = 8080;
const VIP: Ipv4Addr = Ipv4Addr::new(10, 43, 0, 10);
const VIP_PORT: u16 = 80;
const NODE_PORT: u16 = 30080;
const PROXY_PORT: u16 = 31080;

fn run(args: &[&str]) -> String {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("{args:?}: {e} (is iproute2 installed? see scripts/dev)"));
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Named network namespaces, deleted on drop (also when the benchmark panics).
struct Netns {
    names: Vec<String>,
}

impl Netns {
    fn new(tag: &str, roles: &[&str]) -> Netns {
        let names: Vec<String> = roles
            .iter()
            .map(|r| format!("bnpath{}{tag}{r}", std::process::id()))
            .collect();
        let mut ns = Netns { names: Vec::new() };
        for n in names {
            run(&["ip", "netns", "add", &n]);
            ns.names.push(n.clone());
            run(&["ip", "-n", &n, "link", "set", "lo", "up"]);
        }
        ns
    }

    fn name(&self, i: usize) -> String {
        self.names[i].clone()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        for n in &self.names {
            let _ = Command::new("ip").args(["netns", "del", n]).status();
        }
    }
}

fn join_ns(ns: &str) {
    let path = format!("/run/netns/{ns}");
    bramble_worker::sys::podnet::join_netns(std::path::Path::new(&path))
        .unwrap_or_else(|e| panic!("join {path}: {e}"));
}

/// Runs `f` on a thread inside network namespace `ns` and waits for it.
fn in_ns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let ns = ns.to_string();
    std::thread::spawn(move || {
        join_ns(&ns);
        f()
    })
    .join()
    // On to the main thread: unwinding there removes the namespaces.
    .unwrap_or_else(|e| std::panic::resume_unwind(e))
}

/// Server protocol, by the first byte: `R` = answer one byte, then wait for the close;
/// `U` = read to the end, answer the count (8 bytes); `D` + 8-byte length = send that many
/// bytes and close; `P` = echo `MSG`-byte messages.
async fn handle(mut s: async_net::TcpStream) -> std::io::Result<()> {
    let mut buf = vec![0u8; 64 * 1024];
    let mut mode = [0u8; 1];
    s.read_exact(&mut mode).await?;
    match mode[0] {
        b'R' => {
            s.write_all(b"r").await?;
            while s.read(&mut buf).await? > 0 {}
        }
        b'U' => {
            let mut n = 0u64;
            loop {
                let k = s.read(&mut buf).await?;
                if k == 0 {
                    break;
                }
                n += k as u64;
            }
            s.write_all(&n.to_le_bytes()).await?;
        }
        b'D' => {
            let mut len = [0u8; 8];
            s.read_exact(&mut len).await?;
            let mut left = u64::from_le_bytes(len);
            while left > 0 {
                let k = left.min(buf.len() as u64) as usize;
                s.write_all(&buf[..k]).await?;
                left -= k as u64;
            }
        }
        _ => {
            let mut m = [0u8; MSG];
            while s.read_exact(&mut m).await.is_ok() {
                s.write_all(&m).await?;
            }
        }
    }
    Ok(())
}

/// The pod's server: a thread in `ns` running a local executor (lives until the process ends;
/// its namespace's removal closes nothing it needs afterwards).
fn start_server(ns: &str) {
    let ns = ns.to_string();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        join_ns(&ns);
        let l = std::net::TcpListener::bind((Ipv4Addr::UNSPECIFIED, POD_PORT)).unwrap();
        tx.send(()).unwrap();
        let ex = smol::LocalExecutor::new();
        let l = async_net::TcpListener::try_from(l).unwrap();
        smol::block_on(ex.run(async {
            loop {
                let Ok((s, _)) = l.accept().await else {
                    continue;
                };
                let _ = s.set_nodelay(true);
                ex.spawn(async move {
                    let _ = handle(s).await;
                })
                .detach();
            }
        }))
    });
    rx.recv_timeout(Duration::from_secs(10))
        .expect("the pod's server listening");
}

fn connect(to: SocketAddr) -> TcpStream {
    let s = TcpStream::connect_timeout(&to, Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("connect to {to}: {e}"));
    s.set_nodelay(true).unwrap();
    s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    s.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    s
}

/// Seconds to send `bulk` bytes to the server (until it confirmed the count).
fn upload(to: SocketAddr, bulk: u64) -> f64 {
    let buf = vec![7u8; 64 * 1024];
    let t = Instant::now();
    let mut s = connect(to);
    s.write_all(b"U").unwrap();
    let mut left = bulk;
    while left > 0 {
        let k = left.min(buf.len() as u64) as usize;
        s.write_all(&buf[..k]).unwrap();
        left -= k as u64;
    }
    s.shutdown(Shutdown::Write).unwrap();
    let mut n = [0u8; 8];
    s.read_exact(&mut n).unwrap();
    assert_eq!(u64::from_le_bytes(n), bulk, "upload to {to}");
    t.elapsed().as_secs_f64()
}

/// Seconds to receive `bulk` bytes from the server.
fn download(to: SocketAddr, bulk: u64) -> f64 {
    let mut buf = vec![0u8; 64 * 1024];
    let t = Instant::now();
    let mut s = connect(to);
    s.write_all(b"D").unwrap();
    s.write_all(&bulk.to_le_bytes()).unwrap();
    let mut got = 0u64;
    loop {
        let k = s.read(&mut buf).unwrap();
        if k == 0 {
            break;
        }
        got += k as u64;
    }
    assert_eq!(got, bulk, "download from {to}");
    t.elapsed().as_secs_f64()
}

/// Per-request times: connect, a 1-byte request and answer, close.
fn connect_requests(to: SocketAddr, n: usize) -> Vec<Duration> {
    let mut b = [0u8; 1];
    (0..n)
        .map(|_| {
            let t = Instant::now();
            let mut s = connect(to);
            s.write_all(b"R").unwrap();
            s.read_exact(&mut b).unwrap();
            drop(s);
            t.elapsed()
        })
        .collect()
}

/// Round-trip times of `MSG` bytes on one established connection.
fn pings(to: SocketAddr, n: usize) -> Vec<Duration> {
    let mut s = connect(to);
    s.write_all(b"P").unwrap();
    let mut m = [2u8; MSG];
    (0..n)
        .map(|_| {
            let t = Instant::now();
            s.write_all(&m).unwrap();
            s.read_exact(&mut m).unwrap();
            t.elapsed()
        })
        .collect()
}

fn pct(v: &mut [Duration], p: f64) -> Duration {
    v.sort();
    v[((v.len() as f64 * p) as usize).min(v.len() - 1)]
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

/// One way to the pod's server.
struct Path {
    name: &'static str,
    to: SocketAddr,
}

fn path(name: &'static str, to: SocketAddr) -> Path {
    Path { name, to }
}

fn sa(ip: Ipv4Addr, port: u16) -> SocketAddr {
    SocketAddr::V4(SocketAddrV4::new(ip, port))
}

/// The results of one path (`[0]` of a group is direct).
#[derive(Default, Clone)]
struct Row {
    conn: (f64, f64),
    ping: (f64, f64),
    up: f64,
    down: f64,
}

/// Measures `paths` from a thread in `ns`: throughput rounds, then latencies; each measurement
/// interleaves the paths so that the load of the machine spreads over all.
fn measure(ns: &str, group: &'static str, paths: Vec<Path>, bulk: u64) -> Vec<Row> {
    in_ns(ns, move || {
        let mut rows = vec![Row::default(); paths.len()];
        let mib = (bulk >> 20) as f64;
        for (what, f) in [
            ("upload", upload as fn(SocketAddr, u64) -> f64),
            ("download", download),
        ] {
            let mut secs = vec![Vec::new(); paths.len()];
            // Each round starts at another path: none always runs right after the same one.
            for round in 0..ROUNDS {
                for k in 0..paths.len() {
                    let i = (round + k) % paths.len();
                    secs[i].push(f(paths[i].to, bulk));
                }
            }
            let rates: Vec<f64> = secs.into_iter().map(|s| mib / median(s)).collect();
            let mut line = format!("  {group:<10} {what:<8}");
            for (i, p) in paths.iter().enumerate() {
                line += &format!("  {} {:.0} MiB/s", p.name, rates[i]);
                if i > 0 {
                    line += &format!(" ({:.2}x)", rates[i] / rates[0]);
                }
                if what == "upload" {
                    rows[i].up = rates[i];
                } else {
                    rows[i].down = rates[i];
                }
            }
            println!("{line}");
        }
        for (what, f, n) in [
            (
                "request on a new connection",
                connect_requests as fn(SocketAddr, usize) -> Vec<Duration>,
                CONNECT_REQS,
            ),
            ("round trip on an open connection", pings, PINGS),
        ] {
            for p in &paths {
                let _ = f(p.to, WARMUP);
            }
            let mut samples = vec![Vec::new(); paths.len()];
            for _ in 0..2 {
                for (i, p) in paths.iter().enumerate() {
                    samples[i].extend(f(p.to, n / 2));
                }
            }
            let stats: Vec<(f64, f64)> = samples
                .iter_mut()
                .map(|s| (us(pct(s, 0.5)), us(pct(s, 0.99))))
                .collect();
            let mut line = format!("  {group:<10} {what} ({n} each):");
            for (i, p) in paths.iter().enumerate() {
                let (p50, p99) = stats[i];
                line += &format!(" {} p50 {p50:.0} p99 {p99:.0} µs", p.name);
                if i > 0 {
                    line += &format!(" (+{:.0}/+{:.0})", p50 - stats[0].0, p99 - stats[0].1);
                }
                line += ";";
                if n == CONNECT_REQS {
                    rows[i].conn = (p50, p99);
                } else {
                    rows[i].ping = (p50, p99);
                }
            }
            println!("{line}");
        }
        rows
    })
}

/// Direct to the pod from the LAN client and from the node: `[lan, node]`.
fn measure_bare(c: &str, r: &str, bulk: u64) -> Vec<Row> {
    let direct = || vec![path("direct", sa(POD, POD_PORT))];
    vec![
        measure(c, "LAN client", direct(), bulk).remove(0),
        measure(r, "node", direct(), bulk).remove(0),
    ]
}

fn bench_plan(services: Vec<ServiceRule>) -> NetPlan {
    NetPlan {
        bridge: "bramble0".into(),
        cluster_cidr: (Ipv4Addr::new(10, 42, 0, 0), 16),
        pod_subnet: Some((Ipv4Addr::new(10, 42, 1, 0), 24)),
        service_cidr: (Ipv4Addr::new(10, 43, 0, 0), 16),
        services,
        host_ports: Vec::new(),
    }
}

/// Until a connection to `to` from `ns` gets its 1-byte answer (listeners come up in the
/// background), at most 10 s.
fn wait_for(ns: &str, to: SocketAddr) {
    in_ns(ns, move || {
        let give_up = Instant::now() + Duration::from_secs(10);
        loop {
            let r = TcpStream::connect_timeout(&to, Duration::from_secs(1)).and_then(|mut s| {
                s.set_read_timeout(Some(Duration::from_secs(1)))?;
                s.write_all(b"R")?;
                s.read_exact(&mut [0u8; 1])
            });
            match r {
                Ok(()) => return,
                Err(e) if Instant::now() > give_up => panic!("{to} never answered: {e}"),
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    })
}

/// `replace_table` with 100 services × 3 endpoints, in a namespace of its own: (rules, times).
fn time_replace(ns: &str) -> (usize, Vec<Duration>) {
    let p = bench_plan(
        (0..100u32)
            .map(|k| ServiceRule {
                namespace: "default".into(),
                name: format!("svc{k}"),
                protocol: Proto::Tcp,
                cluster_ip: Some(Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 43, 1, 0)) + k)),
                port: 80,
                node_port: k % 10 == 0,
                endpoints: (0..3)
                    .map(|e| {
                        (
                            Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 42, 2, 0)) + 3 * k + e),
                            8080,
                        )
                    })
                    .collect(),
            })
            .collect(),
    );
    let t = plan(&p);
    let rules = t.chains.iter().map(|c| c.rules.len()).sum();
    let times = in_ns(ns, move || {
        (0..20)
            .map(|_| {
                let start = Instant::now();
                nft::replace_table(&t).expect("replace the 100-service table");
                start.elapsed()
            })
            .collect()
    });
    (rules, times)
}

fn main() {
    assert!(
        bramble_worker::sys::process::is_root(),
        "the netpath benchmark needs root (network namespaces, nftables): run it as root"
    );
    let load_before = loadavg();
    let ns = Netns::new("", &["r", "c", "p", "t"]);
    let (r, c, p, t) = (ns.name(0), ns.name(1), ns.name(2), ns.name(3));
    {
        let names = ns.names.clone();
        std::thread::spawn(move || {
            std::thread::sleep(WATCHDOG);
            eprintln!("netpath bench: still running after {WATCHDOG:?}: giving up");
            for n in &names {
                let _ = Command::new("ip").args(["netns", "del", n]).status();
            }
            std::process::exit(1);
        });
    }
    run(&[
        "sh",
        "-ec",
        &format!(
            "ip -n {r} link add rc type veth peer name eth0 netns {c}
             ip -n {r} addr add {NODE_LAN}/24 dev rc; ip -n {r} link set rc up
             ip -n {c} addr add {CLIENT_LAN}/24 dev eth0; ip -n {c} link set eth0 up
             ip -n {c} route add 10.42.0.0/16 via {NODE_LAN}
             ip -n {c} route add 10.43.0.0/16 via {NODE_LAN}
             ip -n {r} link add bramble0 type bridge
             ip -n {r} addr add {GATEWAY}/24 dev bramble0; ip -n {r} link set bramble0 up
             ip -n {r} link add rp type veth peer name eth0 netns {p}
             ip -n {r} link set rp master bramble0 up
             ip -n {p} addr add {POD}/24 dev eth0; ip -n {p} link set eth0 up
             ip -n {p} route add default via {GATEWAY}
             ip netns exec {r} sysctl -qw net.ipv4.ip_forward=1
             for n in {r} {c}; do
               ip netns exec $n sysctl -qw net.ipv4.ip_local_port_range='1024 65000'
             done
             ip netns exec {r} sh -c 'if [ -e /proc/sys/net/bridge/bridge-nf-call-iptables ]; then
               sysctl -qw net.bridge.bridge-nf-call-iptables=0; fi'"
        ),
    ]);
    start_server(&p);
    wait_for(&c, sa(POD, POD_PORT));
    wait_for(&r, sa(POD, POD_PORT));

    // The transfer size: 256 MiB unless a direct 16 MiB upload says it would take too long.
    let probe = in_ns(&c, || upload(sa(POD, POD_PORT), BULK_MIN));
    let mut bulk = BULK;
    while bulk > BULK_MIN && probe * (bulk / BULK_MIN) as f64 > BULK_SECS {
        bulk /= 2;
    }
    println!(
        "netpath bench: node {r}, pod {POD}:{POD_PORT} on bramble0, LAN client {CLIENT_LAN}; \
         VIP {VIP}:{VIP_PORT}, node port {NODE_LAN}:{NODE_PORT}, userspace proxy :{PROXY_PORT}; \
         {} MiB per transfer (16 MiB probe {:.0} MiB/s), {ROUNDS} rounds (median); load {load_before}",
        bulk >> 20,
        16.0 / probe,
    );

    // Direct before any table: the node's namespace has no conntrack yet (a NAT chain turns it
    // on for all of the namespace's traffic, direct included).
    println!("without the nftables table (no conntrack in the node), direct only:");
    let bare_before = measure_bare(&c, &r, bulk);

    // The node's table: one service with a virtual IP and a node port, its pod the endpoint;
    // the service route as the agent adds it.
    let table = plan(&bench_plan(vec![
        ServiceRule {
            namespace: "default".into(),
            name: "bench".into(),
            protocol: Proto::Tcp,
            cluster_ip: Some(VIP),
            port: VIP_PORT,
            node_port: false,
            endpoints: vec![(POD, POD_PORT)],
        },
        ServiceRule {
            namespace: "default".into(),
            name: "bench-np".into(),
            protocol: Proto::Tcp,
            cluster_ip: None,
            port: NODE_PORT,
            node_port: true,
            endpoints: vec![(POD, POD_PORT)],
        },
    ]));
    in_ns(&r, move || {
        nft::available().expect("nf_tables with NAT");
        nft::replace_table(&table).expect("install the bench table");
        podnet::ensure_service_route("bramble0", Ipv4Addr::new(10, 43, 0, 0), 16)
            .expect("the service route");
    });

    // The userspace proxy on every address of the node, its global executor thread started from
    // the node's namespace (kept alive: dropping it closes the listener).
    let _proxy = in_ns(&r, || {
        let mut proxy = Proxy::new(Ipv4Addr::UNSPECIFIED.into());
        let eps = Endpoints {
            meta: Meta {
                name: "bench-proxy".into(),
                namespace: "default".into(),
                ..Default::default()
            },
            port: PROXY_PORT,
            ready: vec![EndpointAddress {
                ip: POD.to_string(),
                port: POD_PORT,
                pod: "server".into(),
                node: "local".into(),
            }],
            ..Default::default()
        };
        smol::block_on(async { proxy.update(vec![eps]) });
        proxy
    });

    let lan = vec![
        path("direct", sa(POD, POD_PORT)),
        path("VIP", sa(VIP, VIP_PORT)),
        path("node port", sa(NODE_LAN, NODE_PORT)),
        path("proxy", sa(NODE_LAN, PROXY_PORT)),
    ];
    let node = vec![
        path("direct", sa(POD, POD_PORT)),
        path("VIP", sa(VIP, VIP_PORT)),
        path("proxy", sa(Ipv4Addr::LOCALHOST, PROXY_PORT)),
    ];
    for p in &lan {
        wait_for(&c, p.to);
    }
    for p in &node {
        wait_for(&r, p.to);
    }
    println!(
        "with the table, interleaved (ratios and added µs against direct from the same place):"
    );
    let lan_rows = measure(&c, "LAN client", lan, bulk);
    let node_rows = measure(&r, "node", node, bulk);
    // Direct without the table again (deleting it turns conntrack off): the no-table rows are
    // the mean of before and after, which brackets the interleaved measurement.
    in_ns(&r, || nft::delete_table("bramble")).expect("delete the bench table");
    println!("without the table again, direct only:");
    let bare_after = measure_bare(&c, &r, bulk);
    let bare: Vec<Row> = bare_before
        .iter()
        .zip(&bare_after)
        .map(|(a, b)| Row {
            conn: ((a.conn.0 + b.conn.0) / 2.0, (a.conn.1 + b.conn.1) / 2.0),
            ping: ((a.ping.0 + b.ping.0) / 2.0, (a.ping.1 + b.ping.1) / 2.0),
            up: (a.up + b.up) / 2.0,
            down: (a.down + b.down) / 2.0,
        })
        .collect();
    let (rules, mut times) = time_replace(&t);
    let load_after = loadavg();

    println!();
    println!(
        "{:<30} {:>17} {:>12} {:>17} {:>12} {:>15} {:>15}",
        "path",
        "new conn p50/p99",
        "added p50",
        "round trip p50/99",
        "added p50",
        "upload",
        "download"
    );
    let names_lan = ["direct", "service VIP", "node port", "userspace proxy"];
    let names_node = ["direct", "service VIP (output)", "userspace proxy"];
    for (k, (from, names, rows)) in [
        ("LAN", &names_lan[..], &lan_rows),
        ("node", &names_node[..], &node_rows),
    ]
    .into_iter()
    .enumerate()
    {
        let d = &rows[0];
        let bare_row = ("direct, no table (mean)", &bare[k]);
        for (name, row) in std::iter::once(bare_row).chain(names.iter().copied().zip(rows.iter())) {
            let added = |a: f64, b: f64| {
                if std::ptr::eq(row, d) {
                    "-".to_string()
                } else {
                    format!("{:+.0} µs", a - b)
                }
            };
            let ratio = |a: f64, b: f64| {
                if std::ptr::eq(row, d) {
                    format!("{a:.0} MiB/s")
                } else {
                    format!("{a:.0} ({:.2}x)", a / b)
                }
            };
            println!(
                "{:<30} {:>17} {:>12} {:>17} {:>12} {:>15} {:>15}",
                format!("{from}: {name}"),
                format!("{:.0}/{:.0} µs", row.conn.0, row.conn.1),
                added(row.conn.0, d.conn.0),
                format!("{:.0}/{:.0} µs", row.ping.0, row.ping.1),
                added(row.ping.0, d.ping.0),
                ratio(row.up, d.up),
                ratio(row.down, d.down),
            );
        }
    }
    let mut sorted = times.clone();
    let p50 = pct(&mut sorted, 0.5);
    times.sort();
    println!(
        "replace_table, 100 services x 3 endpoints ({rules} rules): p50 {:.1} ms of 20 (min {:.1}, max {:.1})",
        p50.as_secs_f64() * 1e3,
        times[0].as_secs_f64() * 1e3,
        times[times.len() - 1].as_secs_f64() * 1e3,
    );
    println!("load average: {load_before} before, {load_after} after (2 cores, shared)");
}
