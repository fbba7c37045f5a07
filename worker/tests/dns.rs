//! The cluster DNS over real sockets, on loopback only: the server on 127.0.0.1, fake upstream
//! resolvers (written with the same DNS crate) on 127.0.0.2 and 127.0.0.3, a resolv.conf in a
//! temporary directory naming them. No root needed.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bramble_worker::dns::{Dns, ServiceRecord, Upstreams, ZoneInput};
use simple_dns::rdata::{A, RData, SOA};
use simple_dns::{
    CLASS, Name, Packet, PacketFlag, QCLASS, QTYPE, Question, RCODE, ResourceRecord, TYPE,
};

const DOMAIN: &str = "bramble.local";

/// A fake upstream: answers `NAME` with `answer` (TTL 300) over UDP and TCP, `nx.test` with
/// NXDOMAIN, and `big.test` truncated over UDP but whole (40 addresses) over TCP. Counts the
/// questions it sees per (transport, lower-case name).
struct Upstream {
    seen: Arc<Mutex<HashMap<(String, String), usize>>>,
}

impl Upstream {
    fn start(ip: Ipv4Addr, port: u16, answer: Ipv4Addr) -> std::io::Result<Upstream> {
        let udp = UdpSocket::bind((ip, port))?;
        let tcp = TcpListener::bind((ip, port))?;
        let seen = Arc::new(Mutex::new(HashMap::new()));
        let s = seen.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok((n, peer)) = udp.recv_from(&mut buf) {
                if let Some(r) = Self::answer(&buf[..n], answer, false, &s) {
                    let _ = udp.send_to(&r, peer);
                }
            }
        });
        let s = seen.clone();
        std::thread::spawn(move || {
            for mut c in tcp.incoming().flatten() {
                let mut len = [0u8; 2];
                if c.read_exact(&mut len).is_err() {
                    continue;
                }
                let mut q = vec![0u8; usize::from(u16::from_be_bytes(len))];
                if c.read_exact(&mut q).is_err() {
                    continue;
                }
                if let Some(r) = Self::answer(&q, answer, true, &s) {
                    let mut f = (r.len() as u16).to_be_bytes().to_vec();
                    f.extend_from_slice(&r);
                    let _ = c.write_all(&f);
                }
            }
        });
        Ok(Upstream { seen })
    }

    fn answer(
        q: &[u8],
        ip: Ipv4Addr,
        tcp: bool,
        seen: &Mutex<HashMap<(String, String), usize>>,
    ) -> Option<Vec<u8>> {
        let q = Packet::parse(q).ok()?;
        let question = q.questions.first()?.clone();
        let name = question.qname.to_string().to_ascii_lowercase();
        *seen
            .lock()
            .unwrap()
            .entry((if tcp { "tcp" } else { "udp" }.into(), name.clone()))
            .or_default() += 1;
        let mut r = Packet::new_reply(q.id());
        r.set_flags(PacketFlag::RECURSION_AVAILABLE);
        r.questions.push(question.clone());
        let rr = |ip: Ipv4Addr| {
            ResourceRecord::new(
                question.qname.clone(),
                CLASS::IN,
                300,
                RData::A(A::from(ip)),
            )
        };
        match name.as_str() {
            "nx.test" => {
                *r.rcode_mut() = RCODE::NameError;
                r.name_servers.push(ResourceRecord::new(
                    Name::new_unchecked("test"),
                    CLASS::IN,
                    3600,
                    RData::SOA(SOA {
                        mname: Name::new_unchecked("ns.test"),
                        rname: Name::new_unchecked("h.test"),
                        serial: 1,
                        refresh: 1,
                        retry: 1,
                        expire: 1,
                        minimum: 60,
                    }),
                ));
            }
            "big.test" if !tcp => r.set_flags(PacketFlag::TRUNCATION),
            "big.test" => r
                .answers
                .extend((1..=40).map(|i| rr(Ipv4Addr::new(198, 51, 100, i)))),
            _ => r.answers.push(rr(ip)),
        }
        r.build_bytes_vec_compressed().ok()
    }

    fn seen(&self, transport: &str, name: &str) -> usize {
        self.seen
            .lock()
            .unwrap()
            .get(&(transport.into(), name.into()))
            .copied()
            .unwrap_or(0)
    }
}

/// A port free for UDP and TCP on 127.0.0.1, .2 and .3 (bound and released; retried).
fn free_port() -> u16 {
    for _ in 0..50 {
        let p = UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let ok = ["127.0.0.1", "127.0.0.2", "127.0.0.3"]
            .iter()
            .all(|ip| UdpSocket::bind((*ip, p)).is_ok() && TcpListener::bind((*ip, p)).is_ok());
        if ok {
            return p;
        }
    }
    panic!("no free loopback port");
}

fn query(name: &str, t: TYPE, id: u16) -> Vec<u8> {
    let mut p = Packet::new_query(id);
    p.set_flags(PacketFlag::RECURSION_DESIRED);
    p.questions.push(Question::new(
        Name::new_unchecked(name),
        QTYPE::TYPE(t),
        QCLASS::CLASS(CLASS::IN),
        false,
    ));
    p.build_bytes_vec().unwrap()
}

fn ask_udp(server: SocketAddr, q: &[u8]) -> Vec<u8> {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.send_to(q, server).unwrap();
    let mut buf = [0u8; 4096];
    let (n, _) = s.recv_from(&mut buf).expect("an answer over UDP");
    buf[..n].to_vec()
}

fn ask_tcp(c: &mut TcpStream, q: &[u8]) -> Vec<u8> {
    let mut f = (q.len() as u16).to_be_bytes().to_vec();
    f.extend_from_slice(q);
    c.write_all(&f).unwrap();
    let mut len = [0u8; 2];
    c.read_exact(&mut len).unwrap();
    let mut r = vec![0u8; usize::from(u16::from_be_bytes(len))];
    c.read_exact(&mut r).unwrap();
    r
}

/// (rcode, A addresses, TC) of a reply.
fn summary(r: &[u8]) -> (RCODE, Vec<Ipv4Addr>, bool) {
    let p = Packet::parse(r).unwrap();
    let ips = p
        .answers
        .iter()
        .filter_map(|rr| match rr.rdata {
            RData::A(ref a) => Some(Ipv4Addr::from(a.address)),
            _ => None,
        })
        .collect();
    (p.rcode(), ips, p.has_flags(PacketFlag::TRUNCATION))
}

fn ip(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

fn write_resolv(path: &Path, servers: &[&str]) {
    let text: String = servers
        .iter()
        .map(|s| format!("nameserver {s}\n"))
        .collect();
    let tmp = path.with_extension("new");
    std::fs::write(
        &tmp,
        format!("# test\nsearch example\n{text}options edns0\n"),
    )
    .unwrap();
    std::fs::rename(&tmp, path).unwrap(); // a new inode, as resolvconf and systemd do
}

fn zone() -> ZoneInput {
    ZoneInput {
        domain: DOMAIN.into(),
        services: vec![
            ServiceRecord {
                namespace: "default".into(),
                name: "web".into(),
                cluster_ip: Some(ip("10.43.0.10")),
                pods: vec![("web-1".into(), ip("10.42.0.5"))],
            },
            ServiceRecord {
                namespace: "db".into(),
                name: "pg".into(),
                cluster_ip: None,
                pods: vec![
                    ("pg-0".into(), ip("10.42.1.9")),
                    ("pg-1".into(), ip("10.42.0.3")),
                ],
            },
        ],
    }
}

/// The server on 127.0.0.1 with the test zone, forwarding to `resolv`'s nameservers on `port`.
fn start(resolv: &Path, port: u16) -> (Arc<Dns>, SocketAddr) {
    let dns = Arc::new(Dns::new(
        Upstreams::from_resolv_conf(resolv, port).with_timeout(Duration::from_millis(500)),
    ));
    dns.update(zone());
    let addr: SocketAddr = (Ipv4Addr::LOCALHOST, free_port()).into();
    smol::spawn(dns.clone().serve(addr)).detach();
    // Wait until it answers.
    for _ in 0..100 {
        if TcpStream::connect(addr).is_ok() {
            return (dns, addr);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("the DNS server did not start on {addr}");
}

#[test]
fn cluster_names_forwarding_cache_and_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let resolv = dir.path().join("resolv.conf");
    let port = free_port();
    let up2 = Upstream::start(ip("127.0.0.2"), port, ip("192.0.2.2")).unwrap();
    let up3 = Upstream::start(ip("127.0.0.3"), port, ip("192.0.2.3")).unwrap();
    write_resolv(&resolv, &["127.0.0.2"]);
    let (dns, server) = start(&resolv, port);

    // Cluster names.
    let web = summary(&ask_udp(
        server,
        &query("web.default.svc.bramble.local", TYPE::A, 1),
    ));
    assert_eq!(web, (RCODE::NoError, vec![ip("10.43.0.10")], false));
    let pg = summary(&ask_udp(
        server,
        &query("PG.db.svc.Bramble.Local.", TYPE::A, 2),
    ));
    assert_eq!(
        pg,
        (
            RCODE::NoError,
            vec![ip("10.42.0.3"), ip("10.42.1.9")],
            false
        )
    );
    let pod = summary(&ask_udp(
        server,
        &query("pg-0.pg.db.svc.bramble.local", TYPE::A, 3),
    ));
    assert_eq!(pod, (RCODE::NoError, vec![ip("10.42.1.9")], false));
    let nx = ask_udp(server, &query("web.db.svc.bramble.local", TYPE::A, 4));
    assert_eq!(summary(&nx).0, RCODE::NameError);
    assert!(matches!(
        Packet::parse(&nx).unwrap().name_servers[0].rdata,
        RData::SOA(_)
    ));
    let nodata = summary(&ask_udp(
        server,
        &query("web.default.svc.bramble.local", TYPE::AAAA, 5),
    ));
    assert_eq!(nodata, (RCODE::NoError, vec![], false));
    // The search path's other tries are answered here too, never forwarded.
    let miss = summary(&ask_udp(
        server,
        &query("example.com.default.svc.bramble.local", TYPE::A, 6),
    ));
    assert_eq!(miss.0, RCODE::NameError);
    assert_eq!(up2.seen("udp", "example.com.default.svc.bramble.local"), 0);

    // Forwarded, then from the cache: the upstream sees one query.
    for id in 10..13 {
        let r = ask_udp(server, &query("Cached.Test", TYPE::A, id));
        assert_eq!(Packet::parse(&r).unwrap().id(), id);
        assert_eq!(summary(&r), (RCODE::NoError, vec![ip("192.0.2.2")], false));
    }
    assert_eq!(up2.seen("udp", "cached.test"), 1);
    // Negative answers are cached too (SOA minimum).
    for id in 20..22 {
        assert_eq!(
            summary(&ask_udp(server, &query("nx.test", TYPE::A, id))).0,
            RCODE::NameError
        );
    }
    assert_eq!(up2.seen("udp", "nx.test"), 1);

    // Truncated upstream answer: asked again over TCP; the UDP client gets TC (40 addresses
    // do not fit 512 bytes) and then the whole answer over TCP, from the cache.
    let big = summary(&ask_udp(server, &query("big.test", TYPE::A, 30)));
    assert_eq!(big, (RCODE::NoError, vec![], true));
    assert_eq!(
        (up2.seen("udp", "big.test"), up2.seen("tcp", "big.test")),
        (1, 1)
    );
    let mut c = TcpStream::connect(server).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let big = summary(&ask_tcp(&mut c, &query("big.test", TYPE::A, 31)));
    assert_eq!((big.0, big.1.len(), big.2), (RCODE::NoError, 40, false));
    assert_eq!(up2.seen("tcp", "big.test"), 1);
    // Several queries on one TCP connection.
    let web = summary(&ask_tcp(
        &mut c,
        &query("web.default.svc.bramble.local", TYPE::A, 32),
    ));
    assert_eq!(web.1, vec![ip("10.43.0.10")]);
    let fwd = summary(&ask_tcp(&mut c, &query("tcp-only.test", TYPE::A, 33)));
    assert_eq!(fwd.1, vec![ip("192.0.2.2")]);

    // The node's resolv.conf changes: the new upstream is used; a dead first one is skipped.
    write_resolv(&resolv, &["127.0.0.4", "127.0.0.3"]);
    let moved = summary(&ask_udp(server, &query("moved.test", TYPE::A, 40)));
    assert_eq!(moved, (RCODE::NoError, vec![ip("192.0.2.3")], false));
    assert_eq!(
        (up2.seen("udp", "moved.test"), up3.seen("udp", "moved.test")),
        (0, 1)
    );

    // Garbage: short datagrams dropped, unparsable ones FORMERR; the server lives on.
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    s.send_to(b"\x01\x02\x03", server).unwrap();
    let mut buf = [0u8; 512];
    assert!(
        s.recv_from(&mut buf).is_err(),
        "a 3-byte datagram is not answered"
    );
    s.send_to(
        &[0xbe, 0xef, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0x3f, b'x'],
        server,
    )
    .unwrap();
    let (n, _) = s.recv_from(&mut buf).unwrap();
    let r = Packet::parse(&buf[..n]).unwrap();
    assert_eq!((r.id(), r.rcode()), (0xbeef, RCODE::FormatError));
    for i in 0..200u32 {
        let junk: Vec<u8> = (0..(i % 60))
            .map(|j| (i.wrapping_mul(31).wrapping_add(j * 7)) as u8)
            .collect();
        let _ = s.send_to(&junk, server);
    }
    // An oversize TCP frame closes that connection, not the server.
    let mut c2 = TcpStream::connect(server).unwrap();
    c2.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    c2.write_all(&[0xff, 0xff]).unwrap();
    c2.write_all(&[0u8; 4096]).unwrap_or(());
    assert_eq!(c2.read(&mut buf).unwrap_or(0), 0, "closed");
    // Still answering, on both transports.
    assert_eq!(
        summary(&ask_udp(
            server,
            &query("web.default.svc.bramble.local", TYPE::A, 50)
        ))
        .1,
        vec![ip("10.43.0.10")]
    );
    assert_eq!(
        summary(&ask_tcp(
            &mut c,
            &query("pg-1.pg.db.svc.bramble.local", TYPE::A, 51)
        ))
        .1,
        vec![ip("10.42.0.3")]
    );

    // A zone update is answered at once.
    let mut z = zone();
    z.services[0].cluster_ip = Some(ip("10.43.0.99"));
    dns.update(z);
    assert_eq!(
        summary(&ask_udp(
            server,
            &query("web.default.svc.bramble.local", TYPE::A, 60)
        ))
        .1,
        vec![ip("10.43.0.99")]
    );
}

#[test]
fn no_upstream_answers_servfail_and_cluster_names_are_never_forwarded() {
    let dir = tempfile::tempdir().unwrap();
    let resolv = dir.path().join("resolv.conf");
    let port = free_port();
    let up = Upstream::start(ip("127.0.0.2"), port, ip("192.0.2.2")).unwrap();
    write_resolv(&resolv, &["127.0.0.3"]); // nobody there
    let (_dns, server) = start(&resolv, port);
    let r = summary(&ask_udp(server, &query("example.test", TYPE::A, 1)));
    assert_eq!(r.0, RCODE::ServerFailure);
    write_resolv(&resolv, &["127.0.0.2"]);
    for n in [
        "nope.bramble.local",
        "x.y.z.svc.bramble.local",
        "bramble.local",
    ] {
        let _ = ask_udp(server, &query(n, TYPE::A, 2));
        assert_eq!(up.seen("udp", n), 0, "{n} was forwarded");
    }
}
