//! The service proxy against a direct connection to the same backend, on loopback, in the same
//! run: throughput (256 MiB up and down) and per-request latency (a new connection per request,
//! and a round trip on an established connection), p50/p99, with the added time and the ratio;
//! and for a UDP service, the round trip of a 64-byte datagram (one session) against direct.
//!
//! `cargo bench -p bramble-worker --bench proxy` (release). The proxy runs on smol's global
//! executor (one thread by default, like on a board); the backend on a thread of its own; the
//! client is blocking std sockets on the main thread. Bounded: fixed counts, loopback only.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Shutdown, TcpStream};
use std::time::{Duration, Instant};

use bramble_wire::objects::{EndpointAddress, Endpoints, Meta};
use bramble_worker::proxy::Proxy;
use futures_lite::{AsyncReadExt, AsyncWriteExt};

const LO: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
const BULK: u64 = 256 << 20;
const ROUNDS: usize = 3;
const CONNECT_REQS: usize = 2000;
const PINGS: usize = 5000;
const MSG: usize = 64;

/// Backend protocol, by the first byte: `U` = read to the end, answer the count (8 bytes);
/// `D` + 8-byte length = send that many bytes and close; `P` = echo `MSG`-byte messages.
async fn handle(mut s: async_net::TcpStream) -> std::io::Result<()> {
    let mut buf = vec![0u8; 64 * 1024];
    let mut mode = [0u8; 1];
    s.read_exact(&mut mode).await?;
    match mode[0] {
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

fn start_backend() -> u16 {
    let l = std::net::TcpListener::bind((LO, 0)).unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
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
    port
}

fn connect(port: u16) -> TcpStream {
    let s = TcpStream::connect((LO, port)).unwrap();
    s.set_nodelay(true).unwrap();
    s
}

/// Seconds to send `BULK` bytes to the backend (until it confirmed the count).
fn upload(port: u16) -> f64 {
    let buf = vec![7u8; 64 * 1024];
    let t = Instant::now();
    let mut s = connect(port);
    s.write_all(b"U").unwrap();
    let mut left = BULK;
    while left > 0 {
        let k = left.min(buf.len() as u64) as usize;
        s.write_all(&buf[..k]).unwrap();
        left -= k as u64;
    }
    s.shutdown(Shutdown::Write).unwrap();
    let mut n = [0u8; 8];
    s.read_exact(&mut n).unwrap();
    assert_eq!(u64::from_le_bytes(n), BULK);
    t.elapsed().as_secs_f64()
}

/// Seconds to receive `BULK` bytes from the backend.
fn download(port: u16) -> f64 {
    let mut buf = vec![0u8; 64 * 1024];
    let t = Instant::now();
    let mut s = connect(port);
    s.write_all(b"D").unwrap();
    s.write_all(&BULK.to_le_bytes()).unwrap();
    let mut got = 0u64;
    loop {
        let k = s.read(&mut buf).unwrap();
        if k == 0 {
            break;
        }
        got += k as u64;
    }
    assert_eq!(got, BULK);
    t.elapsed().as_secs_f64()
}

/// Per-request times: connect, one `MSG` round trip, close.
fn connect_requests(port: u16) -> Vec<Duration> {
    let mut m = [1u8; MSG];
    (0..CONNECT_REQS)
        .map(|_| {
            let t = Instant::now();
            let mut s = connect(port);
            s.write_all(b"P").unwrap();
            s.write_all(&m).unwrap();
            s.read_exact(&mut m).unwrap();
            drop(s);
            t.elapsed()
        })
        .collect()
}

/// Round-trip times of `MSG` bytes on one established connection.
fn pings(port: u16) -> Vec<Duration> {
    let mut s = connect(port);
    s.write_all(b"P").unwrap();
    let mut m = [2u8; MSG];
    (0..PINGS)
        .map(|_| {
            let t = Instant::now();
            s.write_all(&m).unwrap();
            s.read_exact(&mut m).unwrap();
            t.elapsed()
        })
        .collect()
}

/// A UDP echo backend on a thread of its own.
fn start_udp_backend() -> u16 {
    let s = std::net::UdpSocket::bind((LO, 0)).unwrap();
    let port = s.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut buf = [0u8; 2048];
        while let Ok((n, from)) = s.recv_from(&mut buf) {
            let _ = s.send_to(&buf[..n], from);
        }
    });
    port
}

/// Round-trip times of `MSG`-byte datagrams from one socket (one proxy session).
fn udp_pings(port: u16) -> Vec<Duration> {
    let s = std::net::UdpSocket::bind((LO, 0)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.connect((LO, port)).unwrap();
    let mut m = [3u8; MSG];
    (0..PINGS)
        .map(|_| {
            let t = Instant::now();
            s.send(&m).unwrap();
            s.recv(&mut m).expect("a UDP answer within 5 s");
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

fn main() {
    let backend = start_backend();
    let port = std::net::TcpListener::bind((LO, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut proxy = Proxy::new(LO);
    let bench_eps = Endpoints {
        meta: Meta {
            name: "bench".into(),
            namespace: "default".into(),
            ..Default::default()
        },
        port,
        ready: vec![EndpointAddress {
            ip: "127.0.0.1".into(),
            port: backend,
            pod: "backend".into(),
            node: "local".into(),
        }],
        not_ready: Vec::new(),
        ..Default::default()
    };
    let udp_backend = start_udp_backend();
    let udp_port = std::net::UdpSocket::bind((LO, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut udp_eps = bench_eps.clone();
    udp_eps.meta.name = "bench-udp".into();
    udp_eps.port = udp_port;
    udp_eps.protocol = bramble_wire::objects::Protocol::Udp;
    udp_eps.ready[0].port = udp_backend;
    smol::block_on(async { proxy.update(vec![bench_eps, udp_eps]) });
    let t = Instant::now();
    while TcpStream::connect((LO, port)).is_err() {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "proxy never listened"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    println!(
        "proxy bench: loopback, backend :{backend}, proxy :{port}, {} MiB per transfer, {ROUNDS} rounds (median)",
        BULK >> 20
    );
    let mib = (BULK >> 20) as f64;
    for (what, f) in [("upload", upload as fn(u16) -> f64), ("download", download)] {
        let mut direct = Vec::new();
        let mut proxied = Vec::new();
        for _ in 0..ROUNDS {
            direct.push(f(backend));
            proxied.push(f(port));
        }
        let (d, p) = (mib / median(direct), mib / median(proxied));
        println!(
            "  {what:<8} direct {d:>8.0} MiB/s   proxy {p:>8.0} MiB/s   proxy/direct {:.2}",
            p / d
        );
    }
    for (what, f) in [
        (
            "request on a new connection",
            connect_requests as fn(u16) -> Vec<Duration>,
        ),
        ("round trip on an open connection", pings),
    ] {
        bench_latency(what, f, backend, port);
    }
    // The UDP socket binds in the background: wait for an answer first.
    let probe = std::net::UdpSocket::bind((LO, 0)).unwrap();
    probe
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let t = Instant::now();
    loop {
        probe.send_to(b"x", (LO, udp_port)).unwrap();
        if probe.recv(&mut [0u8; 8]).is_ok() {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "UDP proxy never answered"
        );
    }
    bench_latency("UDP datagram round trip", udp_pings, udp_backend, udp_port);
}

/// Warms both paths up, then measures them interleaved in halves; prints p50/p99 and the cost.
fn bench_latency(what: &str, f: fn(u16) -> Vec<Duration>, backend: u16, port: u16) {
    // Warm up both paths, then measure them interleaved in halves.
    let _ = f(backend);
    let _ = f(port);
    let mut d = f(backend);
    let mut p = f(port);
    d.extend(f(backend));
    p.extend(f(port));
    let (d50, d99, p50, p99) = (
        pct(&mut d, 0.5),
        pct(&mut d, 0.99),
        pct(&mut p, 0.5),
        pct(&mut p, 0.99),
    );
    println!(
        "  {what} ({} each): direct p50 {:.0} µs p99 {:.0} µs; proxy p50 {:.0} µs p99 {:.0} µs; added p50 {:.0} µs p99 {:.0} µs; p50 ratio {:.2}",
        d.len(),
        us(d50),
        us(d99),
        us(p50),
        us(p99),
        us(p50) - us(d50),
        us(p99) - us(d99),
        us(p50) / us(d50)
    );
}
