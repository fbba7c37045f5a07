//! The DNS server of the node: UDP and TCP on one address (the pod bridge's gateway, port 53),
//! answering the cluster zone itself and forwarding the rest to the node's resolvers through a
//! cache.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use async_net::{TcpListener, TcpStream, UdpSocket};
use futures_lite::{AsyncReadExt, AsyncWriteExt, FutureExt};
use smol::lock::Semaphore;

use super::cache::Cache;
use super::message::{self, Key, Step};
use super::upstream::{self, Upstreams};
use super::zone::{Zone, ZoneInput};

/// Queries being forwarded at once over UDP; more are dropped (the client retries).
pub const MAX_FORWARDS: usize = 256;
/// TCP connections at once; more wait in the kernel's backlog.
pub const MAX_TCP_CONNECTIONS: usize = 64;
/// A TCP connection with no new query for this long is closed.
pub const TCP_IDLE: Duration = Duration::from_secs(10);
/// Largest query accepted over TCP; a larger frame closes the connection.
pub const MAX_TCP_QUERY: usize = 4096;

/// The node's DNS: the current zone, the upstreams and the cache.
#[derive(Debug)]
pub struct Dns {
    zone: RwLock<Arc<Zone>>,
    serial: Mutex<u32>,
    upstreams: Upstreams,
    cache: Mutex<Cache>,
    forwards: Arc<Semaphore>,
    tcp_connections: Arc<Semaphore>,
    /// Our own listening address: never forward to it (a node whose resolv.conf names it).
    listen: Mutex<Option<SocketAddr>>,
}

impl Dns {
    pub fn new(upstreams: Upstreams) -> Dns {
        Dns {
            zone: RwLock::new(Arc::new(Zone::default())),
            serial: Mutex::new(0),
            upstreams,
            cache: Mutex::new(Cache::default()),
            forwards: Arc::new(Semaphore::new(MAX_FORWARDS)),
            tcp_connections: Arc::new(Semaphore::new(MAX_TCP_CONNECTIONS)),
            listen: Mutex::new(None),
        }
    }

    /// Swaps in the zone built from `input` (queries in flight finish with the old one).
    pub fn update(&self, input: ZoneInput) {
        let serial = {
            let mut s = self.serial.lock().unwrap_or_else(|e| e.into_inner());
            *s = s.wrapping_add(1);
            *s
        };
        let zone = Arc::new(Zone::new(&input).with_serial(serial));
        *self.zone.write().unwrap_or_else(|e| e.into_inner()) = zone;
    }

    fn zone(&self) -> Arc<Zone> {
        self.zone.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Answers one query: `None` = say nothing. Zone answers and cache hits never wait.
    pub async fn resolve(&self, query: &[u8], tcp: bool) -> Option<Vec<u8>> {
        match self.local(query, tcp) {
            Ok(r) => r,
            Err((key, limit)) => Some(self.forward(query, key, limit).await),
        }
    }

    /// The part of [`Dns::resolve`] that does not wait: `Err` = to be forwarded.
    fn local(&self, query: &[u8], tcp: bool) -> Result<Option<Vec<u8>>, (Key, usize)> {
        match message::handle(&self.zone(), query, tcp) {
            Step::Reply(r) => Ok(Some(r)),
            Step::Drop => Ok(None),
            Step::Forward { key, limit } => {
                let hit = self
                    .cache
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .get(&key, Instant::now());
                match hit.and_then(|(bytes, age)| message::from_cache(&bytes, query, age, limit)) {
                    Some(r) => Ok(Some(r)),
                    None => Err((key, limit)),
                }
            }
        }
    }

    async fn forward(&self, query: &[u8], key: Key, limit: usize) -> Vec<u8> {
        // Upstream sees an id of ours (random, so an off-path spoofer must guess it and the
        // port); the client gets its own back.
        let mut ours = query.to_vec();
        if let Some(id) = ours.get_mut(..2) {
            let random = rand_core::RngCore::next_u32(&mut rand_core::OsRng) as u16;
            id.copy_from_slice(&random.to_be_bytes());
        }
        let mut r = self.forward_as(&ours, query, key, limit).await;
        if let (Some(to), Some(from)) = (r.get_mut(..2), query.get(..2)) {
            to.copy_from_slice(from);
        }
        r
    }

    /// Forwards `query` (our id) on behalf of `client_query`.
    async fn forward_as(
        &self,
        query: &[u8],
        client_query: &[u8],
        key: Key,
        limit: usize,
    ) -> Vec<u8> {
        let own = *self.listen.lock().unwrap_or_else(|e| e.into_inner());
        let mut last = None;
        for server in self.upstreams.current() {
            if Some(server) == own {
                continue;
            }
            match upstream::exchange(server, query, self.upstreams.timeout()).await {
                Ok(resp) => {
                    let Ok(p) = simple_dns::Packet::parse(&resp) else {
                        last = Some(resp);
                        continue;
                    };
                    if matches!(
                        p.rcode(),
                        simple_dns::RCODE::ServerFailure | simple_dns::RCODE::Refused
                    ) {
                        tracing::debug!(%server, name = %key.0, rcode = ?p.rcode(), "upstream failed; trying the next");
                        last = Some(resp);
                        continue;
                    }
                    if let Some(ttl) = message::cache_ttl(&p) {
                        self.cache.lock().unwrap_or_else(|e| e.into_inner()).put(
                            key,
                            resp.clone(),
                            ttl,
                            Instant::now(),
                        );
                    }
                    return message::relay(resp, limit)
                        .unwrap_or_else(|| message::servfail(client_query));
                }
                Err(e) => {
                    tracing::debug!(%server, name = %key.0, error = %e, "upstream did not answer; trying the next")
                }
            }
        }
        last.and_then(|r| message::relay(r, limit))
            .unwrap_or_else(|| message::servfail(client_query))
    }

    /// Serves UDP and TCP on `addr` until an error on a listener (returned).
    pub async fn serve(self: Arc<Self>, addr: SocketAddr) -> std::io::Result<()> {
        let udp = UdpSocket::bind(addr).await?;
        let tcp = TcpListener::bind(addr).await?;
        *self.listen.lock().unwrap_or_else(|e| e.into_inner()) = Some(addr);
        tracing::info!(%addr, "cluster DNS listening (UDP and TCP)");
        self.clone().serve_udp(udp).or(self.serve_tcp(tcp)).await
    }

    async fn serve_udp(self: Arc<Self>, sock: UdpSocket) -> std::io::Result<()> {
        let mut buf = vec![0u8; 4096];
        let mut warned: Option<Instant> = None;
        loop {
            let (n, peer) = match sock.recv_from(&mut buf).await {
                Ok(x) => x,
                Err(e) => {
                    tracing::debug!(error = %e, "DNS UDP receive");
                    smol::Timer::after(Duration::from_millis(10)).await;
                    continue;
                }
            };
            let query = &buf[..n];
            match self.local(query, false) {
                Ok(Some(r)) => {
                    let _ = sock.send_to(&r, peer).await;
                }
                Ok(None) => {
                    tracing::trace!(%peer, "DNS: dropped a datagram without a query header")
                }
                Err((key, limit)) => {
                    let Some(permit) = self.forwards.try_acquire_arc() else {
                        if warned.is_none_or(|t| t.elapsed() > Duration::from_secs(60)) {
                            tracing::warn!(
                                limit = MAX_FORWARDS,
                                "too many DNS queries being forwarded; dropping some"
                            );
                            warned = Some(Instant::now());
                        }
                        continue;
                    };
                    let me = self.clone();
                    let sock = sock.clone();
                    let query = query.to_vec();
                    smol::spawn(async move {
                        let _permit = permit;
                        let r = me.forward(&query, key, limit).await;
                        let _ = sock.send_to(&r, peer).await;
                    })
                    .detach();
                }
            }
        }
    }

    async fn serve_tcp(self: Arc<Self>, listener: TcpListener) -> std::io::Result<()> {
        loop {
            let permit = self.tcp_connections.acquire_arc().await;
            let (stream, peer) = match listener.accept().await {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "DNS TCP accept");
                    smol::Timer::after(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let me = self.clone();
            smol::spawn(async move {
                let _permit = permit;
                if let Err(e) = me.connection(stream).await {
                    tracing::debug!(%peer, error = %e, "DNS TCP connection closed");
                }
            })
            .detach();
        }
    }

    /// Several queries on one connection, answered in order; closed when idle, at a frame over
    /// [`MAX_TCP_QUERY`] or at a query we would not answer.
    async fn connection(&self, mut s: TcpStream) -> std::io::Result<()> {
        let idle = |d| async move {
            smol::Timer::after(d).await;
            Err::<(), _>(std::io::Error::from(std::io::ErrorKind::TimedOut))
        };
        loop {
            let mut len = [0u8; 2];
            let read_len = async { s.read_exact(&mut len).await };
            match read_len.or(idle(TCP_IDLE)).await {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
                Err(e) => return Err(e),
            }
            let n = usize::from(u16::from_be_bytes(len));
            if n > MAX_TCP_QUERY {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("query of {n} bytes"),
                ));
            }
            let mut query = vec![0u8; n];
            async { s.read_exact(&mut query).await }
                .or(idle(TCP_IDLE))
                .await?;
            let Some(reply) = self.resolve(&query, true).await else {
                return Ok(());
            };
            let Ok(rlen) = u16::try_from(reply.len()) else {
                return Ok(());
            };
            let mut frame = Vec::with_capacity(reply.len() + 2);
            frame.extend_from_slice(&rlen.to_be_bytes());
            frame.extend_from_slice(&reply);
            async { s.write_all(&frame).await }
                .or(idle(TCP_IDLE))
                .await?;
        }
    }
}
