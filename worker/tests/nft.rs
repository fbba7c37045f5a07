//! The nf_tables client for real (root): a router namespace with a client, two backend "pods"
//! on a bridge and an "internet" behind it, each in a network namespace of this test's own
//! (`ip netns`, removed by a guard): the table replaces itself without duplicates, a cluster IP
//! spreads TCP connections over two backends, UDP goes through a cluster IP, node ports and host
//! ports answer on the router's addresses (not on loopback), pods reach the internet
//! masqueraded and reach their own service back (hairpin), and deleting the table leaves
//! another table alone. The `nft` binary is only used to look.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::process::Command;
use std::time::{Duration, Instant};

use bramble_worker::net::rules::{HostPort, NetPlan, Proto, ServiceRule, plan};
use bramble_worker::sys::nft;

fn run(args: &[&str]) -> String {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("{args:?}: {e} (is the tool installed? see scripts/dev)"));
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Named network namespaces, deleted on drop.
struct Netns {
    names: Vec<String>,
}

impl Netns {
    fn new(tag: &str, roles: &[&str]) -> Netns {
        let names: Vec<String> = roles
            .iter()
            .map(|r| format!("bnft{}{tag}{r}", std::process::id()))
            .collect();
        let ns = Netns { names };
        for n in &ns.names {
            run(&["ip", "netns", "add", n]);
            run(&["ip", "-n", n, "link", "set", "lo", "up"]);
        }
        ns
    }

    fn name(&self, i: usize) -> &str {
        &self.names[i]
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        for n in &self.names {
            let _ = Command::new("ip").args(["netns", "del", n]).status();
        }
    }
}

/// Runs `f` on a thread inside network namespace `ns`.
fn in_ns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let path = format!("/run/netns/{ns}");
    std::thread::spawn(move || {
        bramble_worker::sys::podnet::join_netns(std::path::Path::new(&path))
            .unwrap_or_else(|e| panic!("join {path}: {e}"));
        f()
    })
    .join()
    .expect("thread in a namespace")
}

/// Starts, in `ns`, a TCP server on `port` answering every connection with `"<tag> <peer ip>"`.
fn tcp_server(ns: &str, port: u16, tag: &'static str) {
    let l = in_ns(ns, move || {
        TcpListener::bind(("0.0.0.0", port)).expect("bind the TCP server")
    });
    std::thread::spawn(move || {
        for c in l.incoming() {
            let Ok(mut c) = c else { continue };
            let peer = c
                .peer_addr()
                .map(|a| a.ip().to_string())
                .unwrap_or_default();
            let _ = c.write_all(format!("{tag} {peer}").as_bytes());
        }
    });
}

/// Starts, in `ns`, a UDP server on `port` answering every datagram with `"<tag> <peer ip>"`.
fn udp_server(ns: &str, port: u16, tag: &'static str) {
    let s = in_ns(ns, move || {
        UdpSocket::bind(("0.0.0.0", port)).expect("bind the UDP server")
    });
    std::thread::spawn(move || {
        let mut b = [0u8; 64];
        while let Ok((_, peer)) = s.recv_from(&mut b) {
            let _ = s.send_to(format!("{tag} {}", peer.ip()).as_bytes(), peer);
        }
    });
}

/// From `ns`, connects to `to` (retrying for a few seconds while links come up) and reads the
/// server's answer.
fn get(ns: &str, to: &str) -> Result<String, String> {
    let to: SocketAddr = to.parse().unwrap();
    in_ns(ns, move || {
        let give_up = Instant::now() + Duration::from_secs(5);
        loop {
            let r = TcpStream::connect_timeout(&to, Duration::from_secs(1)).and_then(|mut s| {
                s.set_read_timeout(Some(Duration::from_secs(2)))?;
                let mut out = String::new();
                s.read_to_string(&mut out)?;
                Ok(out)
            });
            match r {
                Ok(out) => return Ok(out),
                Err(e) if Instant::now() > give_up => return Err(format!("{to}: {e}")),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                    return Err(format!("{to}: {e}"));
                }
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    })
}

fn ip(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

fn the_plan() -> NetPlan {
    NetPlan {
        bridge: "bramble0".into(),
        cluster_cidr: (ip("10.42.0.0"), 16),
        pod_subnet: Some((ip("10.42.1.0"), 24)),
        service_cidr: (ip("10.43.0.0"), 16),
        services: vec![
            ServiceRule {
                namespace: "default".into(),
                name: "dns".into(),
                protocol: Proto::Udp,
                cluster_ip: Some(ip("10.43.0.53")),
                port: 53,
                node_port: false,
                endpoints: vec![(ip("10.42.1.2"), 5353)],
            },
            ServiceRule {
                namespace: "default".into(),
                name: "empty".into(),
                protocol: Proto::Tcp,
                cluster_ip: Some(ip("10.43.0.11")),
                port: 80,
                node_port: true,
                endpoints: vec![],
            },
            ServiceRule {
                namespace: "default".into(),
                name: "np".into(),
                protocol: Proto::Tcp,
                cluster_ip: None,
                port: 30080,
                node_port: true,
                endpoints: vec![(ip("10.42.1.3"), 8080)],
            },
            ServiceRule {
                namespace: "default".into(),
                name: "web".into(),
                protocol: Proto::Tcp,
                cluster_ip: Some(ip("10.43.0.10")),
                port: 80,
                node_port: false,
                endpoints: vec![(ip("10.42.1.2"), 8080), (ip("10.42.1.3"), 8080)],
            },
        ],
        host_ports: vec![HostPort {
            protocol: Proto::Tcp,
            host_port: 8443,
            pod_ip: ip("10.42.1.2"),
            container_port: 8080,
        }],
    }
}

/// The rule lines of `nft list table` output (not chain headers, hooks or braces).
fn rule_lines(listing: &str) -> Vec<String> {
    listing
        .lines()
        .map(str::trim)
        .filter(|l| {
            !l.is_empty()
                && !l.starts_with("table ")
                && !l.starts_with("chain ")
                && !l.starts_with("type ")
                && *l != "}"
        })
        .map(String::from)
        .collect()
}

#[test]
fn services_node_ports_host_ports_and_masquerade_over_nf_tables() {
    // r: router (the node), c: a LAN client, a and b: pods on the node's bridge, i: internet.
    let ns = Netns::new("s", &["r", "c", "a", "b", "i"]);
    let (r, c, a, b, i) = (ns.name(0), ns.name(1), ns.name(2), ns.name(3), ns.name(4));
    let sh = |cmd: &str| run(&["sh", "-ec", cmd]);
    sh(&format!(
        "ip -n {r} link add rc type veth peer name eth0 netns {c}
         ip -n {r} addr add 192.0.2.1/24 dev rc; ip -n {r} link set rc up
         ip -n {c} addr add 192.0.2.2/24 dev eth0; ip -n {c} link set eth0 up
         ip -n {c} route add default via 192.0.2.1
         ip -n {r} link add ri type veth peer name eth0 netns {i}
         ip -n {r} addr add 203.0.113.1/24 dev ri; ip -n {r} link set ri up
         ip -n {i} addr add 203.0.113.2/24 dev eth0; ip -n {i} link set eth0 up
         ip -n {r} route add default via 203.0.113.2
         ip -n {r} link add bramble0 type bridge
         ip -n {r} addr add 10.42.1.1/24 dev bramble0; ip -n {r} link set bramble0 up
         ip -n {r} link add ra type veth peer name eth0 netns {a}
         ip -n {r} link set ra master bramble0 up
         ip -n {a} addr add 10.42.1.2/24 dev eth0; ip -n {a} link set eth0 up
         ip -n {a} route add default via 10.42.1.1
         ip -n {r} link add rb type veth peer name eth0 netns {b}
         ip -n {r} link set rb master bramble0 up
         ip -n {b} addr add 10.42.1.3/24 dev eth0; ip -n {b} link set eth0 up
         ip -n {b} route add default via 10.42.1.1
         ip netns exec {r} sysctl -qw net.ipv4.ip_forward=1
         ip netns exec {r} sh -c 'if [ -e /proc/sys/net/bridge/bridge-nf-call-iptables ]; then
           sysctl -qw net.bridge.bridge-nf-call-iptables=0; fi'
         ip netns exec {r} nft add table inet other
         ip netns exec {r} nft add chain inet other keep"
    ));
    tcp_server(a, 8080, "a");
    tcp_server(b, 8080, "b");
    udp_server(a, 5353, "a");
    tcp_server(i, 9000, "i");

    let table = plan(&the_plan());
    let want = rule_lines(&table.to_string()).len();
    in_ns(r, nft::available).expect("nf_tables with NAT");
    for _ in 0..2 {
        let t = table.clone();
        in_ns(r, move || nft::replace_table(&t)).expect("replace the table");
    }
    let listing = run(&[
        "ip", "netns", "exec", r, "nft", "list", "table", "inet", "bramble",
    ]);
    let rules = rule_lines(&listing);
    assert_eq!(rules.len(), want, "one copy of every rule:\n{listing}");
    for (needle, n) in [
        ("jump services", 2),
        ("masquerade", 3),
        ("dnat ip to 10.42.1.3:8080", 2),
        ("numgen random mod 2", 1),
        ("fib daddr type local", 2),
    ] {
        let got = rules.iter().filter(|l| l.contains(needle)).count();
        assert_eq!(got, n, "{needle:?} in\n{listing}");
    }

    // A cluster IP from a LAN client, spread over both backends; the client is not a local pod,
    // so the backends see the node's bridge address.
    let mut seen = BTreeSet::new();
    for _ in 0..40 {
        seen.insert(get(c, "10.43.0.10:80").expect("the cluster IP from the client"));
        if seen.len() == 2 {
            break;
        }
    }
    assert_eq!(
        seen,
        BTreeSet::from(["a 10.42.1.1".to_string(), "b 10.42.1.1".to_string()])
    );

    // UDP through a cluster IP: the reply comes back from the cluster IP (a connected socket
    // takes nothing else).
    let reply = in_ns(c, || {
        let s = UdpSocket::bind("0.0.0.0:0").unwrap();
        s.connect("10.43.0.53:53").unwrap();
        s.set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        let mut b = [0u8; 64];
        for _ in 0..10 {
            s.send(b"q").unwrap();
            if let Ok(n) = s.recv(&mut b) {
                return Some(String::from_utf8_lossy(&b[..n]).into_owned());
            }
        }
        None
    });
    assert_eq!(reply.as_deref(), Some("a 10.42.1.1"));

    // A node port on every local address of the node, a host port; not on loopback (that stays
    // with the agent's userspace listener: nothing listens here, so it is refused).
    assert_eq!(get(c, "192.0.2.1:30080").unwrap(), "b 10.42.1.1");
    assert_eq!(get(c, "203.0.113.1:30080").unwrap(), "b 10.42.1.1");
    assert_eq!(get(c, "192.0.2.1:8443").unwrap(), "a 10.42.1.1");
    let lo = get(r, "127.0.0.1:30080").unwrap_err();
    assert!(lo.contains("refused"), "{lo}");
    // The node itself on a cluster IP (the output hook).
    let from_node = get(r, "10.43.0.10:80").unwrap();
    assert!(from_node.ends_with(" 10.42.1.1"), "{from_node}");
    // A service without endpoints has no rule: refused by the node (its userspace listener).
    let empty = get(c, "192.0.2.1:80").unwrap_err();
    assert!(empty.contains("refused"), "{empty}");

    // A pod reaches the internet with the node's address.
    assert_eq!(get(a, "203.0.113.2:9000").unwrap(), "i 203.0.113.1");
    // Hairpin: pods reach their own service, also when it picks themselves or their neighbour
    // on the bridge (without br_netfilter, turned off in the router above as on the boards:
    // the neighbour's reply crosses the bridge without the router's conntrack).
    let mut seen = BTreeSet::new();
    for _ in 0..40 {
        seen.insert(get(a, "10.43.0.10:80").expect("the cluster IP from a pod"));
        seen.insert(get(b, "10.43.0.10:80").expect("the cluster IP from a pod"));
        if seen.len() == 2 {
            break;
        }
    }
    assert_eq!(
        seen,
        BTreeSet::from(["a 10.42.1.1".to_string(), "b 10.42.1.1".to_string()])
    );

    // Deleting: the table goes, twice is fine, the other table stays.
    in_ns(r, || nft::delete_table("bramble")).unwrap();
    in_ns(r, || nft::delete_table("bramble")).unwrap();
    let tables = run(&["ip", "netns", "exec", r, "nft", "list", "tables"]);
    assert_eq!(tables.trim(), "table inet other");
    let other = run(&[
        "ip", "netns", "exec", r, "nft", "list", "table", "inet", "other",
    ]);
    assert!(other.contains("chain keep"), "{other}");
}

#[test]
fn a_failed_batch_names_the_message_and_changes_nothing() {
    let ns = Netns::new("f", &["r"]);
    let r = ns.name(0).to_string();
    let good = plan(&the_plan());
    let t = good.clone();
    in_ns(&r, move || nft::replace_table(&t)).unwrap();
    let before = run(&[
        "ip", "netns", "exec", &r, "nft", "list", "table", "inet", "bramble",
    ]);
    // A jump to a chain that does not exist fails in the kernel.
    let mut bad = good.clone();
    let services = bad
        .chains
        .iter_mut()
        .find(|c| c.name == "services")
        .unwrap();
    services.rules[0]
        .0
        .push(bramble_worker::net::rules::Expr::Jump("nowhere".into()));
    let err = in_ns(&r, move || nft::replace_table(&bad)).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("add rule to chain services") && msg.contains("nothing was changed"),
        "{msg}"
    );
    let after = run(&[
        "ip", "netns", "exec", &r, "nft", "list", "table", "inet", "bramble",
    ]);
    assert_eq!(before, after);
}

#[test]
fn replacing_a_table_of_a_hundred_services_is_timed() {
    let ns = Netns::new("t", &["r"]);
    let r = ns.name(0).to_string();
    let mut p = the_plan();
    p.services = (0..100u32)
        .map(|k| ServiceRule {
            namespace: "default".into(),
            name: format!("svc{k}"),
            protocol: Proto::Tcp,
            cluster_ip: Some(Ipv4Addr::from(u32::from(ip("10.43.1.0")) + k)),
            port: 80,
            node_port: k % 10 == 0,
            endpoints: (0..3)
                .map(|e| (Ipv4Addr::from(u32::from(ip("10.42.2.0")) + 3 * k + e), 8080))
                .collect(),
        })
        .collect();
    let t = plan(&p);
    let want = rule_lines(&t.to_string()).len();
    let times = in_ns(&r, move || {
        let mut times = Vec::new();
        for _ in 0..5 {
            let start = Instant::now();
            nft::replace_table(&t).unwrap();
            times.push(start.elapsed());
        }
        times
    });
    let listing = run(&[
        "ip", "netns", "exec", &r, "nft", "list", "table", "inet", "bramble",
    ]);
    assert_eq!(rule_lines(&listing).len(), want);
    eprintln!("replace_table, 100 services x 3 endpoints ({want} rules): {times:?}");
}
