//! UDP services: one socket on the service port; each client address is a session with its own
//! socket connected to one backend (round-robin when the session starts), kept while datagrams
//! flow in either direction. Replies go back to the client from the service port. A session ends
//! after [`UDP_IDLE`] of silence, when its backend leaves the endpoints, or when the backend
//! refuses (an ICMP port unreachable surfaces as `ECONNREFUSED`): the client's next datagram
//! starts a new one on another backend. kube-proxy's userspace UDP mode, with the same defaults.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_net::UdpSocket;
use futures_lite::FutureExt;

use super::Backends;

/// A session without a datagram either way for this long ends.
pub const UDP_IDLE: Duration = Duration::from_secs(30);
/// Most sessions per UDP service at once (each holds a socket and a 64 KiB reply buffer: 16 MiB
/// at most); datagrams from further clients are dropped until sessions end.
pub const MAX_UDP_SESSIONS: usize = 256;
/// The largest UDP payload.
const DATAGRAM: usize = 65_536;

struct Session {
    sock: UdpSocket,
    backend: SocketAddr,
    /// Last datagram either way, ms since the service started.
    last: Arc<AtomicU64>,
    /// The reply task ended (idle, refused): start over on the next datagram.
    dead: Arc<AtomicBool>,
    _replies: smol::Task<()>,
}

/// Serves one UDP service on `sock` until the task is dropped.
pub async fn serve(sock: UdpSocket, what: String, backends: Arc<Backends>, idle: Duration) {
    let started = Instant::now();
    let now_ms = move || started.elapsed().as_millis() as u64;
    let mut sessions: HashMap<SocketAddr, Session> = HashMap::new();
    let mut buf = vec![0u8; DATAGRAM];
    let mut warned: Option<Instant> = None;
    loop {
        let (n, client) = match sock.recv_from(&mut buf).await {
            Ok(x) => x,
            Err(e) => {
                tracing::debug!(service = %what, "recv: {e}");
                smol::Timer::after(Duration::from_millis(10)).await;
                continue;
            }
        };
        let current = backends.get();
        if sessions
            .get(&client)
            .is_some_and(|s| s.dead.load(Ordering::Relaxed) || !current.contains(&s.backend))
        {
            sessions.remove(&client);
        }
        if !sessions.contains_key(&client) {
            if sessions.len() >= MAX_UDP_SESSIONS {
                let now = now_ms();
                sessions.retain(|_, s| {
                    !s.dead.load(Ordering::Relaxed)
                        && now.saturating_sub(s.last.load(Ordering::Relaxed))
                            < idle.as_millis() as u64
                });
            }
            if sessions.len() >= MAX_UDP_SESSIONS {
                if warned.is_none_or(|t| t.elapsed() > Duration::from_secs(60)) {
                    tracing::warn!(service = %what, "{MAX_UDP_SESSIONS} UDP clients at once: datagrams from new clients are dropped until sessions end");
                    warned = Some(Instant::now());
                }
                continue;
            }
            match open(&sock, client, &backends, idle, started).await {
                Some(s) => {
                    sessions.insert(client, s);
                }
                None => {
                    tracing::debug!(service = %what, %client, "no ready endpoint for a UDP datagram; dropped");
                    continue;
                }
            }
        }
        let Some(s) = sessions.get(&client) else {
            continue;
        };
        s.last.store(now_ms(), Ordering::Relaxed);
        if let Err(e) = s.sock.send(&buf[..n]).await {
            tracing::debug!(service = %what, backend = %s.backend, "send: {e}");
            backends.report(s.backend, false);
            sessions.remove(&client);
        }
    }
}

/// A session for `client` on the first backend (round-robin order) a socket connects to.
async fn open(
    listener: &UdpSocket,
    client: SocketAddr,
    backends: &Arc<Backends>,
    idle: Duration,
    started: Instant,
) -> Option<Session> {
    for backend in backends.order() {
        let any: IpAddr = if backend.is_ipv4() {
            Ipv4Addr::UNSPECIFIED.into()
        } else {
            Ipv6Addr::UNSPECIFIED.into()
        };
        let Ok(sock) = UdpSocket::bind((any, 0)).await else {
            continue;
        };
        if sock.connect(backend).await.is_err() {
            backends.report(backend, false);
            continue;
        }
        let last = Arc::new(AtomicU64::new(started.elapsed().as_millis() as u64));
        let dead = Arc::new(AtomicBool::new(false));
        let replies = smol::spawn(replies(
            sock.clone(),
            listener.clone(),
            client,
            backend,
            ReplyState {
                last: last.clone(),
                dead: dead.clone(),
                idle,
                started,
                backends: backends.clone(),
            },
        ));
        return Some(Session {
            sock,
            backend,
            last,
            dead,
            _replies: replies,
        });
    }
    None
}

struct ReplyState {
    last: Arc<AtomicU64>,
    dead: Arc<AtomicBool>,
    idle: Duration,
    started: Instant,
    backends: Arc<Backends>,
}

/// Copies the backend's datagrams back to the client until the session is idle or refused.
async fn replies(
    backend_sock: UdpSocket,
    listener: UdpSocket,
    client: SocketAddr,
    backend: SocketAddr,
    st: ReplyState,
) {
    let mut buf = vec![0u8; DATAGRAM];
    let idle_ms = st.idle.as_millis() as u64;
    loop {
        let got = async { Some(backend_sock.recv(&mut buf).await) }
            .or(async {
                smol::Timer::after(st.idle / 4).await;
                None
            })
            .await;
        let now = st.started.elapsed().as_millis() as u64;
        match got {
            Some(Ok(n)) => {
                st.last.store(now, Ordering::Relaxed);
                let _ = listener.send_to(&buf[..n], client).await;
            }
            Some(Err(e)) => {
                tracing::debug!(%backend, %client, "UDP session ends: {e}");
                if e.kind() == std::io::ErrorKind::ConnectionRefused {
                    st.backends.report(backend, false);
                }
                break;
            }
            None => {
                if now.saturating_sub(st.last.load(Ordering::Relaxed)) >= idle_ms {
                    break;
                }
            }
        }
    }
    st.dead.store(true, Ordering::Relaxed);
}
