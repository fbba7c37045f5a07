//! The proxy on loopback with real sockets.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use async_net::{TcpListener, TcpStream};
use bramble_testkit::free_port;
use bramble_wire::objects::{EndpointAddress, Endpoints, Meta};
use futures_lite::{AsyncReadExt, AsyncWriteExt};

use super::Proxy;

const LO: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

fn eps(name: &str, port: u16, backends: &[u16]) -> Endpoints {
    Endpoints {
        meta: Meta {
            name: name.into(),
            namespace: "default".into(),
            ..Default::default()
        },
        port,
        ready: backends
            .iter()
            .map(|p| EndpointAddress {
                ip: "127.0.0.1".into(),
                port: *p,
                pod: format!("pod-{p}"),
                node: "n".into(),
            })
            .collect(),
        not_ready: Vec::new(),
        ..Default::default()
    }
}

/// A backend that answers every connection with `id` after reading the request to its end
/// (so it also checks that half-close reaches it), then the number of bytes it read.
async fn backend(id: &'static str) -> u16 {
    let l = TcpListener::bind((LO, 0)).await.unwrap();
    let port = l.local_addr().unwrap().port();
    smol::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                return;
            };
            smol::spawn(async move {
                let mut req = Vec::new();
                let _ = s.read_to_end(&mut req).await;
                let _ = s.write_all(format!("{id} {}", req.len()).as_bytes()).await;
            })
            .detach();
        }
    })
    .detach();
    port
}

/// A TCP echo backend.
async fn echo_backend() -> u16 {
    let l = TcpListener::bind((LO, 0)).await.unwrap();
    let port = l.local_addr().unwrap().port();
    smol::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            smol::spawn(async move {
                let _ = futures_lite::io::copy(s.clone(), &mut s.clone()).await;
            })
            .detach();
        }
    })
    .detach();
    port
}

/// One request through the proxy: send `body`, half-close, read the whole answer.
async fn request(port: u16, body: &[u8]) -> std::io::Result<String> {
    let mut s = TcpStream::connect((LO, port)).await?;
    s.write_all(body).await?;
    s.shutdown(std::net::Shutdown::Write)?;
    let mut out = String::new();
    s.read_to_string(&mut out).await?;
    Ok(out)
}

/// Retries `request` until the proxy's listener is up (it binds in the background).
async fn request_eventually(port: u16, body: &[u8]) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match request(port, body).await {
            Ok(s) if !s.is_empty() => return s,
            r if Instant::now() > deadline => panic!("proxy on port {port} never answered: {r:?}"),
            _ => {
                smol::Timer::after(Duration::from_millis(20)).await;
            }
        }
    }
}

#[test]
fn round_robin_skips_dead_backends_and_passes_half_close() {
    smol::block_on(async {
        let a = backend("a").await;
        let b = backend("b").await;
        let dead = free_port();
        let port = free_port();
        let mut p = Proxy::new(LO);
        p.update(vec![eps("web", port, &[a, dead, b])]);
        assert_eq!(p.ports(), [port]);
        request_eventually(port, b"x").await;
        let mut seen = std::collections::HashMap::new();
        for _ in 0..30 {
            let got = request(port, b"hello").await.unwrap();
            let (id, n) = got.split_once(' ').unwrap();
            assert_eq!(
                n, "5",
                "the backend read the whole request up to the half-close"
            );
            *seen.entry(id.to_string()).or_insert(0) += 1;
        }
        // The dead backend is skipped (then tried last); a and b share its turns; none fails.
        assert_eq!(seen.len(), 2, "{seen:?}");
        assert_eq!(seen.values().sum::<i32>(), 30);
        assert!(seen["a"] >= 10 && seen["b"] >= 10, "{seen:?}");
    });
}

#[test]
fn failed_backends_are_tried_last() {
    let b = super::Backends::default();
    let addr = |p: u16| SocketAddr::new(LO, p);
    b.set(vec![addr(1), addr(2), addr(3)]);
    assert_eq!(b.order(), [addr(1), addr(2), addr(3)]);
    assert_eq!(b.order(), [addr(2), addr(3), addr(1)]);
    b.report(addr(3), false);
    assert_eq!(b.order(), [addr(1), addr(2), addr(3)]);
    assert_eq!(
        b.order(),
        [addr(1), addr(2), addr(3)],
        "cursor at 0: 1, 2, then the failed 3"
    );
    assert_eq!(b.order(), [addr(2), addr(1), addr(3)]);
    b.report(addr(3), true);
    assert_eq!(b.order(), [addr(3), addr(1), addr(2)]);
}

#[test]
fn large_transfer_is_copied_intact() {
    smol::block_on(async {
        // An echo backend.
        let l = TcpListener::bind((LO, 0)).await.unwrap();
        let echo = l.local_addr().unwrap().port();
        smol::spawn(async move {
            while let Ok((s, _)) = l.accept().await {
                smol::spawn(async move {
                    let _ = futures_lite::io::copy(s.clone(), &mut s.clone()).await;
                    let _ = s.shutdown(std::net::Shutdown::Write);
                })
                .detach();
            }
        })
        .detach();
        let port = free_port();
        let mut p = Proxy::new(LO);
        p.update(vec![eps("echo", port, &[echo])]);
        let data: Vec<u8> = (0..(8u32 << 20)).map(|i| (i * 7 % 251) as u8).collect();
        let s = loop {
            match TcpStream::connect((LO, port)).await {
                Ok(s) => break s,
                Err(_) => {
                    smol::Timer::after(Duration::from_millis(20)).await;
                }
            }
        };
        let mut w = s.clone();
        let d2 = data.clone();
        let writer = smol::spawn(async move {
            w.write_all(&d2).await.unwrap();
            w.shutdown(std::net::Shutdown::Write).unwrap();
        });
        let mut back = Vec::new();
        s.clone().read_to_end(&mut back).await.unwrap();
        writer.await;
        assert_eq!(back.len(), data.len());
        assert!(back == data, "bytes changed in transit");
        assert!(p.pool.idle() >= 2, "buffers go back to the pool");
    });
}

#[test]
fn updates_keep_connections_and_removal_closes_the_listener() {
    smol::block_on(async {
        let echo = echo_backend().await;
        let other = backend("other").await;
        let port = free_port();
        let mut p = Proxy::new(LO);
        p.update(vec![eps("svc", port, &[echo])]);
        let mut s = loop {
            match TcpStream::connect((LO, port)).await {
                Ok(s) => break s,
                Err(_) => {
                    smol::Timer::after(Duration::from_millis(20)).await;
                }
            }
        };
        let mut buf = [0u8; 4];
        s.write_all(b"ping").await.unwrap();
        s.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"ping");
        // New endpoints: new connections go to the new backend, the old one keeps working.
        p.update(vec![eps("svc", port, &[other])]);
        assert_eq!(request(port, b"").await.unwrap(), "other 0");
        s.write_all(b"pong").await.unwrap();
        s.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"pong");
        // Service gone: the port closes; the established connection still works.
        p.update(Vec::new());
        assert!(p.ports().is_empty());
        let deadline = Instant::now() + Duration::from_secs(5);
        while TcpStream::connect((LO, port)).await.is_ok() {
            assert!(
                Instant::now() < deadline,
                "listener of a removed service still open"
            );
            smol::Timer::after(Duration::from_millis(20)).await;
        }
        s.write_all(b"last").await.unwrap();
        s.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"last");
    });
}

#[test]
fn busy_port_is_retried_until_free() {
    smol::block_on(async {
        let a = backend("a").await;
        let squatter = std::net::TcpListener::bind((LO, 0)).unwrap();
        let port = squatter.local_addr().unwrap().port();
        let mut p = Proxy::new(LO);
        p.update(vec![eps("web", port, &[a])]);
        smol::Timer::after(Duration::from_millis(300)).await;
        drop(squatter);
        // The proxy binds on its next retry.
        assert_eq!(request_eventually(port, b"abc").await, "a 3");
    });
}

#[test]
fn no_endpoints_closes_the_connection() {
    smol::block_on(async {
        let port = free_port();
        let mut p = Proxy::new(LO);
        p.update(vec![eps("empty", port, &[])]);
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut s = loop {
            match TcpStream::connect((LO, port)).await {
                Ok(s) => break s,
                Err(e) => {
                    assert!(Instant::now() < deadline, "never listened: {e}");
                    smol::Timer::after(Duration::from_millis(20)).await;
                }
            }
        };
        // Nothing to forward to: closed (end of stream or reset), never left hanging.
        let mut buf = [0u8; 16];
        let r = futures_lite::FutureExt::or(async { Some(s.read(&mut buf).await) }, async {
            smol::Timer::after(Duration::from_secs(5)).await;
            None
        })
        .await;
        match r {
            Some(Ok(0)) | Some(Err(_)) => {}
            other => panic!("connection not closed: {other:?}"),
        }
        assert_eq!(p.host(), "127.0.0.1");
    });
}

#[test]
fn saved_endpoints_serve_after_a_restart() {
    smol::block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("endpoints");
        let a = backend("a").await;
        let port = free_port();
        let mut p = Proxy::with_state(LO, file.clone());
        assert!(p.ports().is_empty());
        p.update(vec![eps("web", port, &[a])]);
        assert_eq!(request_eventually(port, b"1").await, "a 1");
        let written = std::fs::metadata(&file).unwrap().modified().unwrap();
        p.update(vec![eps("web", port, &[a])]);
        assert_eq!(
            std::fs::metadata(&file).unwrap().modified().unwrap(),
            written,
            "an unchanged set is not written again"
        );
        drop(p);
        // The old listener closes; a new proxy starts from the file.
        let p2 = Proxy::with_state(LO, file.clone());
        assert_eq!(p2.ports(), [port]);
        assert_eq!(request_eventually(port, b"22").await, "a 2");
        // A corrupt file is ignored.
        std::fs::write(&file, b"\xff\xff\xff").unwrap();
        drop(p2);
        assert!(Proxy::with_state(LO, file).ports().is_empty());
    });
}

#[test]
fn connections_beyond_the_limit_wait_for_a_free_slot() {
    smol::block_on(async {
        let echo = echo_backend().await;
        let port = free_port();
        let mut p = Proxy::new(LO);
        p.set_max_connections(1);
        p.update(vec![eps("echo", port, &[echo])]);
        let mut first = loop {
            match TcpStream::connect((LO, port)).await {
                Ok(s) => break s,
                Err(_) => {
                    smol::Timer::after(Duration::from_millis(20)).await;
                }
            }
        };
        let mut buf = [0u8; 2];
        first.write_all(b"1!").await.unwrap();
        first.read_exact(&mut buf).await.unwrap();
        // The second waits in the backlog: no answer while the first is open...
        let mut second = TcpStream::connect((LO, port)).await.unwrap();
        second.write_all(b"2!").await.unwrap();
        let early =
            futures_lite::FutureExt::or(async { Some(second.read(&mut buf).await) }, async {
                smol::Timer::after(Duration::from_millis(300)).await;
                None
            })
            .await;
        assert!(early.is_none(), "served beyond the limit: {early:?}");
        // ...and is served once the first ends.
        drop(first);
        second.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"2!");
    });
}

/// What a UDP backend received: the source address and the datagram, in order.
type Received = std::sync::Arc<std::sync::Mutex<Vec<(SocketAddr, Vec<u8>)>>>;

/// A UDP backend that answers every datagram with `id` and the datagram, and records each.
async fn udp_backend(id: &'static str) -> (u16, smol::Task<()>, Received) {
    let s = async_net::UdpSocket::bind((LO, 0)).await.unwrap();
    let port = s.local_addr().unwrap().port();
    let received = Received::default();
    let log = received.clone();
    let task = smol::spawn(async move {
        let mut buf = vec![0u8; 65_536];
        while let Ok((n, from)) = s.recv_from(&mut buf).await {
            log.lock().unwrap().push((from, buf[..n].to_vec()));
            let mut out = format!("{id} ").into_bytes();
            out.extend_from_slice(&buf[..n]);
            let _ = s.send_to(&out, from).await;
        }
    });
    (port, task, received)
}

/// The source address `received` saw `msg` from (the proxy's socket of that session).
fn source_of(received: &Received, msg: &[u8]) -> SocketAddr {
    received
        .lock()
        .unwrap()
        .iter()
        .find(|(_, d)| d == msg)
        .map(|(from, _)| *from)
        .unwrap_or_else(|| panic!("the backend never got {:?}", String::from_utf8_lossy(msg)))
}

/// A port free for both UDP and TCP on loopback.
fn free_udp_port() -> u16 {
    loop {
        let u = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = u.local_addr().unwrap().port();
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// Sends `msg` from `client` to the proxy's UDP `port` until its answer comes (the proxy binds in
/// the background), at most 10 s. Late answers to an earlier resend (they echo another message)
/// are skipped, so every message must differ from the one before.
async fn udp_ask(client: &async_net::UdpSocket, port: u16, msg: &[u8]) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut buf = vec![0u8; 65_536];
    loop {
        client.send_to(msg, (LO, port)).await.unwrap();
        let resend = Instant::now() + Duration::from_secs(1);
        loop {
            let got = futures_lite::FutureExt::or(
                async { Some(client.recv_from(&mut buf).await) },
                async {
                    smol::Timer::at(resend).await;
                    None
                },
            )
            .await;
            let Some(Ok((n, from))) = got else { break };
            assert_eq!(from.port(), port, "replies come from the service port");
            if buf[..n].ends_with(msg) {
                return String::from_utf8_lossy(&buf[..n]).into_owned();
            }
        }
        assert!(
            Instant::now() < deadline,
            "no UDP answer through port {port}"
        );
    }
}

#[test]
fn udp_sessions_stick_spread_and_follow_endpoint_changes() {
    smol::block_on(async {
        let (a, _ta, got_a) = udp_backend("a").await;
        let (b, _tb, got_b) = udp_backend("b").await;
        let port = free_udp_port();
        let mut p = Proxy::new(LO);
        // Longer than any stall of this test on a loaded machine (a session ending early would
        // move its client), short enough to wait out below.
        p.set_udp_idle(Duration::from_secs(1));
        let mut e = eps("dns", port, &[a, b]);
        e.protocol = bramble_wire::objects::Protocol::Udp;
        p.update(vec![e.clone()]);
        assert_eq!(p.ports(), [port]);
        // Each client is a session on one backend; clients spread round-robin.
        let mut by_client = Vec::new();
        for _ in 0..4 {
            let c = async_net::UdpSocket::bind((LO, 0)).await.unwrap();
            let first = udp_ask(&c, port, b"first").await;
            let (id, rest) = first.split_once(' ').unwrap();
            assert_eq!(rest, "first");
            for i in 0..3 {
                let again = udp_ask(&c, port, format!("q{i}").as_bytes()).await;
                assert!(again.starts_with(id), "a session sticks to its backend");
            }
            by_client.push((c, id.to_string()));
        }
        let ids: std::collections::BTreeSet<&str> =
            by_client.iter().map(|(_, id)| id.as_str()).collect();
        assert_eq!(ids.len(), 2, "4 clients over 2 backends: {ids:?}");
        // A 60 KiB datagram goes through whole, as one datagram both ways (`udp_ask` waits for
        // the whole echo).
        let big = vec![b'x'; 60_000];
        udp_ask(&by_client[0].0, port, &big).await;
        let (c0, id0) = &by_client[0];
        let got0 = if id0 == "a" { &got_a } else { &got_b };
        source_of(got0, &big);
        // The backend of client 0 leaves the endpoints: its next datagram goes to the other.
        let (other, got_other) = if id0 == "a" { (b, &got_b) } else { (a, &got_a) };
        e.ready.retain(|x| x.port == other);
        p.update(vec![e.clone()]);
        let moved = udp_ask(c0, port, b"after").await;
        assert!(!moved.starts_with(id0.as_str()), "{moved}");
        let session = source_of(got_other, b"after");
        // An idle session ends: after the idle time (and its check, every quarter of it) the
        // client's next datagram opens a new session (another socket towards the backend), and
        // the idle session's socket is closed.
        smol::Timer::after(Duration::from_secs(3)).await;
        udp_ask(c0, port, b"later").await;
        let next = source_of(got_other, b"later");
        assert_ne!(
            next, session,
            "the idle session still carried the client's datagrams"
        );
        let deadline = Instant::now() + Duration::from_secs(5);
        while std::net::UdpSocket::bind((Ipv4Addr::UNSPECIFIED, session.port())).is_err() {
            assert!(
                Instant::now() < deadline,
                "the ended session's socket {session} is still open"
            );
            smol::Timer::after(Duration::from_millis(20)).await;
        }
        // A TCP service on the same port number is a different listener.
        let t = backend("t").await;
        p.update(vec![e, eps("web", port, &[t])]);
        assert_eq!(p.ports(), [port]);
        assert!(request_eventually(port, b"x").await.starts_with("t "));
        // Removing the UDP service closes its socket: the port can be bound again.
        p.update(vec![]);
        let deadline = Instant::now() + Duration::from_secs(5);
        while std::net::UdpSocket::bind((LO, port)).is_err() {
            assert!(Instant::now() < deadline, "UDP port {port} still held");
            smol::Timer::after(Duration::from_millis(20)).await;
        }
    });
}
