//! The cluster DNS against a UDP echo on loopback, in the same run: p50/p99 of a query round
//! trip for a service name (answered from the zone), a cached outside name (forwarded once to
//! a fake upstream, then from the cache) and a 64-byte echo (the floor: two loopback hops and
//! smol's wake-ups, no DNS work).
//!
//! `cargo bench -p bramble-worker --bench dns` (release). Server and echo run on smol's global
//! executor; the client is a blocking std socket on the main thread. Loopback only.

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bramble_worker::dns::{Dns, ServiceRecord, Upstreams, ZoneInput};
use simple_dns::rdata::{A, RData};
use simple_dns::{CLASS, Name, Packet, PacketFlag, QCLASS, QTYPE, Question, ResourceRecord, TYPE};

const ROUNDS: usize = 20_000;

fn free_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn query(name: &str, id: u16) -> Vec<u8> {
    let mut p = Packet::new_query(id);
    p.set_flags(PacketFlag::RECURSION_DESIRED);
    p.questions.push(Question::new(
        Name::new_unchecked(name),
        QTYPE::TYPE(TYPE::A),
        QCLASS::CLASS(CLASS::IN),
        false,
    ));
    p.build_bytes_vec().unwrap()
}

/// p50 and p99 of `ROUNDS` round trips of `msg` to `to`.
fn measure(to: SocketAddr, msg: &[u8]) -> (Duration, Duration) {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.connect(to).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let mut buf = [0u8; 1500];
    for _ in 0..500 {
        s.send(msg).unwrap();
        s.recv(&mut buf).unwrap();
    }
    let mut t: Vec<Duration> = (0..ROUNDS)
        .map(|_| {
            let start = Instant::now();
            s.send(msg).unwrap();
            s.recv(&mut buf).unwrap();
            start.elapsed()
        })
        .collect();
    t.sort();
    (t[t.len() / 2], t[t.len() * 99 / 100])
}

fn main() {
    // The echo (baseline), on the same executor as the server.
    let echo_addr: SocketAddr = (Ipv4Addr::LOCALHOST, free_port()).into();
    let echo = smol::block_on(async_net::UdpSocket::bind(echo_addr)).unwrap();
    smol::spawn(async move {
        let mut buf = [0u8; 1500];
        while let Ok((n, peer)) = echo.recv_from(&mut buf).await {
            let _ = echo.send_to(&buf[..n], peer).await;
        }
    })
    .detach();

    // A fake upstream for the outside name (thread, blocking).
    let up = UdpSocket::bind("127.0.0.1:0").unwrap();
    let up_port = up.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut buf = [0u8; 1500];
        while let Ok((n, peer)) = up.recv_from(&mut buf) {
            let Ok(q) = Packet::parse(&buf[..n]) else {
                continue;
            };
            let mut r = Packet::new_reply(q.id());
            r.questions = q.questions.clone();
            r.answers.push(ResourceRecord::new(
                q.questions[0].qname.clone(),
                CLASS::IN,
                3600,
                RData::A(A::from(Ipv4Addr::new(192, 0, 2, 1))),
            ));
            let _ = up.send_to(&r.build_bytes_vec_compressed().unwrap(), peer);
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let resolv = dir.path().join("resolv.conf");
    std::fs::write(&resolv, "nameserver 127.0.0.1\n").unwrap();
    let dns = Arc::new(Dns::new(Upstreams::from_resolv_conf(&resolv, up_port)));
    dns.update(ZoneInput {
        domain: "bramble.local".into(),
        services: (0..200)
            .map(|i| ServiceRecord {
                namespace: "default".into(),
                name: format!("svc{i}"),
                cluster_ip: Some(Ipv4Addr::new(10, 43, 0, i as u8)),
                pods: vec![(format!("svc{i}-a"), Ipv4Addr::new(10, 42, 0, i as u8))],
            })
            .collect(),
    });
    let addr: SocketAddr = (Ipv4Addr::LOCALHOST, free_port()).into();
    smol::spawn(dns.serve(addr)).detach();
    std::thread::sleep(Duration::from_millis(200));

    let echo = measure(echo_addr, &[7u8; 64]);
    let svc = measure(addr, &query("svc42.default.svc.bramble.local", 1));
    let cached = measure(addr, &query("www.example.test", 2));
    let echo2 = measure(echo_addr, &[7u8; 64]);
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    println!("UDP round trips on loopback, {ROUNDS} each, p50 / p99 (µs):");
    for (what, (p50, p99)) in [
        ("echo (baseline, before)", echo),
        ("service name (zone)", svc),
        ("outside name (cache)", cached),
        ("echo (baseline, after)", echo2),
    ] {
        println!(
            "  {what:26} {:7.1} / {:7.1}   +{:5.1} µs over the echo p50",
            us(p50),
            us(p99),
            us(p50) - us(echo.0.min(echo2.0))
        );
    }
}
