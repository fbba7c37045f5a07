//! The API server: the wire protocol over TCP. Clients (the CLI) and workers both dial in.
//!
//! Every connection is bounded: frame size, a handshake timeout, an idle read timeout and a
//! global connection limit. Heartbeats and live node state stay in memory; the store is written
//! only when something changes meaning (a node registers or changes, becomes NotReady, a pod's
//! status changes).

mod artifact;
pub use artifact::DEFAULT_MAX_ARTIFACT_BYTES;
pub mod auth;
pub mod authz;
pub mod claims;
mod client;
pub use client::CLIENT_RESPONSE_MAX;
pub use client::Selector;
mod config_push;
pub mod control;
mod dispatch;
mod endpoints;
mod exec;
mod image;
#[cfg(test)]
mod image_tests;
pub mod limits;
#[cfg(test)]
mod net_tests;
mod node;
pub mod report;
#[cfg(test)]
mod report_cost;
pub mod tls;
mod top;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_lock::{Mutex, Semaphore};
use async_net::{TcpListener, TcpStream};
use bramble_wire::io::{IoError, send};
use bramble_wire::msg::{NodeDown, ResponseBody};
use bramble_wire::{Handshake, Reject, RejectReason, Role, Welcome};
use futures_lite::FutureExt;

use crate::controllers::Timings;
use tracing::{info, warn};

use crate::store::Store;

/// Master configuration (flags of `bramble master`).
#[derive(Debug, Clone)]
pub struct Config {
    /// Where the database and tokens live.
    pub data_dir: PathBuf,
    /// Address to listen on.
    pub listen: String,
    /// Admin token file (default `DATA_DIR/admin.token`).
    pub admin_token_file: Option<PathBuf>,
    /// Join token file (default `DATA_DIR/join.token`).
    pub join_token_file: Option<PathBuf>,
    /// Most authenticated sessions of node credentials used as clients; admins' and workers'
    /// sessions are always let in (their room is reserved) and take no slot.
    pub max_connections: usize,
    /// Most unauthenticated connections (TLS handshake and Hello) from one source address; past
    /// it the address's idle ones are evicted, oldest first.
    pub max_pending_per_addr: usize,
    /// Most unauthenticated connections in all; past it the heaviest address's idle ones are
    /// evicted.
    pub max_pending: usize,
    /// Time a new connection has for its TLS handshake and its Hello.
    pub handshake_timeout: Duration,
    /// Most watches one credential may have open at once.
    pub max_watches_per_credential: usize,
    /// Largest frame accepted.
    pub max_frame: usize,
    /// Heartbeat interval asked of workers.
    pub heartbeat_interval: Duration,
    /// Missed-heartbeat time after which a node is NotReady.
    pub node_grace: Duration,
    /// Idle time after which a client connection is closed.
    pub client_idle_timeout: Duration,
    /// NotReady time after which a node's pods are replaced elsewhere.
    pub eviction_timeout: Duration,
    /// Failed authentications an address may make at once before it is refused (`Busy`).
    pub auth_fail_burst: u32,
    /// Failed authentications an address regains per second.
    pub auth_fail_per_s: f64,
    /// Largest artifact tarball accepted.
    pub max_artifact_bytes: u64,
    /// The pod range nodes get their subnets from.
    pub cluster_cidr: crate::controllers::podnet::ClusterCidr,
    /// The range services get their virtual IPs from.
    pub service_cidr: crate::controllers::service_ip::ServiceCidr,
    /// The cluster's DNS domain (`NAME.NAMESPACE.svc.DOMAIN`).
    pub cluster_domain: String,
    /// Start with an empty store even though a damaged one was moved aside
    /// ([`crate::store::StoreConfig::accept_empty_store`]).
    pub accept_empty_store: bool,
    /// Most events kept ([`crate::store::StoreConfig::max_events`]).
    pub max_events: usize,
    /// How long an event not seen again is kept ([`crate::store::StoreConfig::event_ttl`]).
    pub event_ttl: Duration,
}

/// The default pod range (k3s's): a /24 per node out of 10.42.0.0/16.
pub const DEFAULT_CLUSTER_CIDR: &str = "10.42.0.0/16";
/// The default size of a node's pod subnet.
pub const DEFAULT_NODE_CIDR_SIZE: u8 = 24;
/// The default service range (k3s's).
pub const DEFAULT_SERVICE_CIDR: &str = "10.43.0.0/16";
/// Default most unauthenticated connections from one address.
pub const DEFAULT_MAX_PENDING_PER_ADDR: usize = 64;
/// Default most unauthenticated connections in all.
pub const DEFAULT_MAX_PENDING: usize = 512;
/// Default most open watches per credential.
pub const DEFAULT_MAX_WATCHES_PER_CREDENTIAL: usize = 256;
/// The default cluster DNS domain.
pub const DEFAULT_CLUSTER_DOMAIN: &str = "bramble.local";

impl Config {
    /// The node lifecycle's limits, as the controllers take them.
    pub fn timings(&self) -> Timings {
        Timings {
            heartbeat_interval_ms: self.heartbeat_interval.as_millis() as u64,
            node_grace_ms: self.node_grace.as_millis() as u64,
            eviction_timeout_ms: self.eviction_timeout.as_millis() as u64,
        }
    }

    /// Defaults for a data dir and listen address.
    pub fn new(data_dir: PathBuf, listen: String) -> Config {
        Config {
            data_dir,
            listen,
            admin_token_file: None,
            join_token_file: None,
            max_connections: 1024,
            max_pending_per_addr: DEFAULT_MAX_PENDING_PER_ADDR,
            max_pending: DEFAULT_MAX_PENDING,
            handshake_timeout: Duration::from_secs(10),
            max_watches_per_credential: DEFAULT_MAX_WATCHES_PER_CREDENTIAL,
            max_frame: bramble_wire::DEFAULT_MAX_FRAME,
            heartbeat_interval: Duration::from_millis(Timings::DEFAULT.heartbeat_interval_ms),
            node_grace: Duration::from_millis(Timings::DEFAULT.node_grace_ms),
            client_idle_timeout: Duration::from_secs(600),
            eviction_timeout: Duration::from_millis(Timings::DEFAULT.eviction_timeout_ms),
            auth_fail_burst: 10,
            auth_fail_per_s: 2.0,
            max_artifact_bytes: DEFAULT_MAX_ARTIFACT_BYTES,
            cluster_cidr: crate::controllers::podnet::ClusterCidr::parse(
                DEFAULT_CLUSTER_CIDR,
                DEFAULT_NODE_CIDR_SIZE,
            )
            .expect("the default pod range parses"),
            service_cidr: crate::controllers::service_ip::ServiceCidr::parse(DEFAULT_SERVICE_CIDR)
                .expect("the default service range parses"),
            cluster_domain: DEFAULT_CLUSTER_DOMAIN.into(),
            accept_empty_store: false,
            max_events: crate::store::DEFAULT_MAX_EVENTS,
            event_ttl: crate::store::DEFAULT_EVENT_TTL,
        }
    }

    /// What every worker is told of the cluster's network when it connects.
    pub fn cluster_network(&self) -> bramble_wire::msg::ClusterNetwork {
        bramble_wire::msg::ClusterNetwork {
            cluster_cidr: self.cluster_cidr.as_string(),
            service_cidr: self.service_cidr.as_string(),
            domain: self.cluster_domain.clone(),
        }
    }

    /// Refuses settings that contradict each other: a service range overlapping the pod range.
    pub fn check(&self) -> Result<(), String> {
        let (base, prefix) = self.cluster_cidr.range();
        if self.service_cidr.overlaps(base, prefix) {
            return Err(format!(
                "--service-cidr {} overlaps --cluster-cidr {}: the services' virtual IPs and the \
                 pods' addresses must not share a range; pick disjoint ranges (the defaults are \
                 --cluster-cidr {DEFAULT_CLUSTER_CIDR} --service-cidr {DEFAULT_SERVICE_CIDR})",
                self.service_cidr.as_string(),
                self.cluster_cidr.as_string()
            ));
        }
        Ok(())
    }
}

/// What the master knows about a node that is not worth a disk write.
#[derive(Debug, Default)]
pub(crate) struct NodeLive {
    /// Channel to the node's connection, if connected.
    pub session: Option<(u64, async_channel::Sender<NodeDown>)>,
    /// Last heartbeat or message, ms since the epoch.
    pub last_seen_ms: u64,
    /// Hash of the spec-level assignment last pushed.
    pub pushed_hash: Option<u64>,
    /// Set when the lifecycle loop wrote NotReady; the next heartbeat writes Ready back.
    pub marked_not_ready: bool,
    /// The node's last usage report (`bramble top`) and when it came, ms since the epoch.
    pub usage: Option<(u64, bramble_wire::msg::NodeUsage)>,
}

/// Where a node's log chunks for one `bramble logs` request go: bound to the node session the
/// request was sent to, so that another node cannot write into the stream by guessing its id.
#[derive(Debug)]
pub(crate) struct LogRoute {
    pub node: String,
    pub session: u64,
    pub tx: async_channel::Sender<ResponseBody>,
}

impl LogRoute {
    /// Chunks queued for a slow client before the next ones are dropped.
    pub const MAX_QUEUED: usize = 64;

    /// Whether a chunk from `node`'s session `session` belongs to this stream.
    pub fn from(&self, node: &str, session: u64) -> bool {
        self.node == node && self.session == session
    }
}

/// Shared state of a running master.
pub struct Master {
    pub(crate) store: Store,
    pub(crate) cfg: Config,
    pub(crate) tokens: auth::Tokens,
    auth_limit: std::sync::Mutex<auth::FailLimiter>,
    tls: futures_rustls::TlsAcceptor,
    /// sha256 of the master's certificate: the pin in the tokens it hands out.
    pub(crate) pin: String,
    pub(crate) nodes: Mutex<HashMap<String, NodeLive>>,
    pub(crate) log_routes: Mutex<HashMap<u32, LogRoute>>,
    /// Open watches per credential.
    pub(crate) watches: Arc<limits::WatchSlots>,
    /// `bramble exec` sessions by the master's request id to the node.
    pub(crate) exec_routes: Mutex<HashMap<u32, exec::ExecRoute>>,
    pub(crate) next_id: std::sync::atomic::AtomicU64,
    pub(crate) wake_sched: async_channel::Sender<()>,
    wake_sched_rx: async_channel::Receiver<()>,
    pub(crate) started_ms: u64,
    pub(crate) events: control::Events,
    pub(crate) endpoints: endpoints::Current,
    /// Held while a registration picks a pod subnet, so that two nodes never get the same one.
    pub(crate) subnet_lock: Mutex<()>,
    /// Held while an apply gives services their virtual IPs and writes them, so that two
    /// applies never give one address twice.
    pub(crate) service_ip_lock: Mutex<()>,
    /// The store's objects in memory, fed by one watch: what every loop reads.
    pub(crate) cache: Arc<crate::cache::Cache>,
    /// Image pulls: one per reference at a time, the background puller's backoff.
    pub(crate) images: image::Images,
    /// Until when (ms since the epoch) the nodes were asked to report usage (`bramble top`).
    pub(crate) top_until_ms: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for Master {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Master")
            .field("cfg", &self.cfg)
            .field("started_ms", &self.started_ms)
            .finish_non_exhaustive()
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Master {
    /// Opens the store and the tokens.
    pub async fn open(cfg: Config) -> anyhow::Result<Arc<Master>> {
        cfg.check().map_err(|e| anyhow::anyhow!("{e}"))?;
        std::fs::create_dir_all(&cfg.data_dir).map_err(|e| {
            anyhow::anyhow!("cannot create data dir {}: {e}", cfg.data_dir.display())
        })?;
        let (admin_default, join_default) = auth::default_paths(&cfg.data_dir);
        let identity = tls::load_or_create(&cfg.data_dir)?;
        let tls = futures_rustls::TlsAcceptor::from(tls::server_config(&identity)?);
        // The join token first: tools wait for admin.token, then read join.token.
        let join_token = match &cfg.join_token_file {
            Some(p) => auth::read_token(p)?,
            None => auth::load_or_create(
                &join_default,
                bramble_wire::msg::TokenKind::Join,
                &identity.pin,
            )?,
        };
        let admin_token = match &cfg.admin_token_file {
            Some(p) => auth::read_token(p)?,
            None => auth::load_or_create(
                &admin_default,
                bramble_wire::msg::TokenKind::Admin,
                &identity.pin,
            )?,
        };
        tls::pin_tokens(&cfg, &admin_default, &join_default, &identity.pin)?;
        let store = Store::open_with(
            &cfg.data_dir,
            crate::store::StoreConfig {
                accept_empty_store: cfg.accept_empty_store,
                max_events: cfg.max_events,
                event_ttl: cfg.event_ttl,
                ..Default::default()
            },
        )
        .await?;
        let events = control::Events::new(store.clone(), cfg.max_events).await?;
        let tokens = auth::Tokens::load(&store, &admin_token, &join_token, now_ms()).await?;
        let auth_limit = auth::FailLimiter::new(cfg.auth_fail_burst, cfg.auth_fail_per_s, 4096);
        let (wake_sched, wake_sched_rx) = async_channel::bounded(1);
        let cfg_watches = cfg.max_watches_per_credential;
        let m = Arc::new(Master {
            store,
            cfg,
            tokens,
            auth_limit: std::sync::Mutex::new(auth_limit),
            tls,
            pin: identity.pin.clone(),
            nodes: Mutex::new(HashMap::new()),
            log_routes: Mutex::new(HashMap::new()),
            watches: limits::WatchSlots::new(cfg_watches),
            exec_routes: Mutex::new(HashMap::new()),
            next_id: std::sync::atomic::AtomicU64::new(1),
            wake_sched,
            wake_sched_rx,
            started_ms: now_ms(),
            events,
            endpoints: Default::default(),
            subnet_lock: Mutex::new(()),
            service_ip_lock: Mutex::new(()),
            cache: crate::cache::Cache::new(),
            images: Default::default(),
            top_until_ms: Default::default(),
        });
        client::ensure_default_namespace(&m).await?;
        client::backfill_service_ips(&m).await?;
        Ok(m)
    }

    /// A process-unique id.
    pub(crate) fn next_id(&self) -> u64 {
        self.next_id
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    }

    /// A watch slot for credential `token` ([`Config::max_watches_per_credential`]).
    pub(crate) fn watch_slot(
        &self,
        token: &str,
    ) -> Result<limits::WatchSlot, bramble_wire::msg::ApiError> {
        self.watches.take(token)
    }

    /// Asks the scheduler loop to run soon.
    pub(crate) fn poke_scheduler(&self) {
        let _ = self.wake_sched.try_send(());
    }

    /// Serves until the listener fails. Spawns the scheduler, dispatcher and node-lifecycle loops.
    pub async fn serve(self: Arc<Self>, listener: TcpListener) -> anyhow::Result<()> {
        smol::spawn(self.cache.clone().run(self.store.clone())).detach();
        smol::spawn(dispatch::scheduler_loop(
            self.clone(),
            self.wake_sched_rx.clone(),
        ))
        .detach();
        smol::spawn(dispatch::assignment_loop(self.clone())).detach();
        smol::spawn(dispatch::config_loop(self.clone())).detach();
        smol::spawn(node::lifecycle_loop(self.clone())).detach();
        smol::spawn(control::controller_loop(self.clone())).detach();
        smol::spawn(endpoints::endpoints_loop(self.clone())).detach();
        smol::spawn(image::pull_loop(self.clone())).detach();
        let sessions = Arc::new(Semaphore::new(self.cfg.max_connections));
        let pending = Arc::new(std::sync::Mutex::new(limits::Pending::new(
            self.cfg.max_pending_per_addr,
            self.cfg.max_pending,
        )));
        info!(addr = %listener.local_addr()?, "master listening");
        let mut evictions_logged_ms = 0u64;
        loop {
            let (stream, peer) = match listener.accept().await {
                Ok(x) => x,
                Err(e) => {
                    warn!("accept failed: {e}");
                    smol::Timer::after(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            // Every new connection is taken; a full address (or table) gives up an older idle
            // unauthenticated one instead, so workers and admins always get through.
            let read = Arc::new(std::sync::atomic::AtomicUsize::new(0));
            let (evict, evicted_rx) = async_channel::bounded::<()>(1);
            let (key, evicted) = pending.lock().unwrap_or_else(|e| e.into_inner()).admit(
                peer.ip(),
                now_ms(),
                read.clone(),
                (evict, stream.clone()),
                // Bytes waiting unread (a ClientHello its task has not read yet): not idle.
                |(_, s): &(async_channel::Sender<()>, TcpStream)| {
                    let mut b = [0u8; 1];
                    let peek = futures_lite::future::poll_once(s.peek(&mut b));
                    matches!(futures_lite::future::block_on(peek), Some(Ok(n)) if n > 0)
                },
            );
            if !evicted.is_empty() && now_ms().saturating_sub(evictions_logged_ms) > 10_000 {
                evictions_logged_ms = now_ms();
                warn!(%peer, evicted = evicted.len(), "too many unauthenticated connections (--max-pending-per-addr {}, --max-pending {}): closing idle ones (logged once per 10 s)", self.cfg.max_pending_per_addr, self.cfg.max_pending);
            }
            drop(evicted); // closes their eviction channels: those connections end
            let m = self.clone();
            let (pending, sessions) = (pending.clone(), sessions.clone());
            smol::spawn(async move {
                let admitted = m
                    .admit(stream, peer, read)
                    .or(async {
                        let _ = evicted_rx.recv().await;
                        None
                    })
                    .await;
                pending
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(key);
                let Some(a) = admitted else { return };
                if let Err(e) = m.session(a, sessions).await {
                    tracing::debug!(%peer, "connection closed: {e}");
                }
            })
            .detach();
        }
    }

    /// The unauthenticated part of a connection: TLS handshake, Hello, credential check, all
    /// within `--handshake-timeout`. `None` when the peer was refused or went away.
    async fn admit(
        self: &Arc<Self>,
        stream: TcpStream,
        peer: std::net::SocketAddr,
        read: Arc<std::sync::atomic::AtomicUsize>,
    ) -> Option<Admitted> {
        let limit = self.cfg.handshake_timeout;
        let deadline = Instant::now() + limit;
        let max = self.cfg.max_frame;
        let hs = tls::handshake_counted(&self.tls, stream, max, limit, Some(peer), read);
        let (mut reader, mut writer) = hs.await?;
        let left = deadline.saturating_duration_since(Instant::now());
        let body = match with_timeout(left, reader.next_frame()).await {
            Ok(Some(b)) => b,
            Ok(None) => return None,
            Err(e) => {
                tracing::debug!(%peer, "connection closed: {e}");
                return None;
            }
        };
        let hello = match auth::parse_hello(&body) {
            Ok(h) => h,
            Err(d) => {
                let _ = reject(&mut writer, d.reason, &d.message, max).await;
                return None;
            }
        };
        let principal = match self.authenticate(&hello, Some(peer)) {
            Ok(p) => p,
            Err(d) => {
                let _ = reject(&mut writer, d.reason, &d.message, max).await;
                return None;
            }
        };
        Some(Admitted {
            peer,
            hello,
            principal,
            reader,
            writer,
        })
    }

    /// An authenticated connection. Admins' and workers' sessions always get in (reserved room);
    /// a node credential used as a client needs one of `--max-connections` session slots.
    async fn session(self: Arc<Self>, a: Admitted, sessions: Arc<Semaphore>) -> anyhow::Result<()> {
        let Admitted {
            peer,
            hello,
            principal,
            reader,
            mut writer,
        } = a;
        let peer = Some(peer);
        let reserved = matches!(principal, auth::Principal::Admin { .. })
            || matches!(hello.role, Role::Worker | Role::Device);
        // Reserved sessions take no slot: they never crowd out each other or the others.
        let _permit = match (reserved, sessions.try_acquire_arc()) {
            (true, _) => None,
            (false, Some(p)) => Some(p),
            (false, None) => {
                let msg = format!(
                    "too many connections (--max-connections {}); retry later",
                    self.cfg.max_connections
                );
                reject(&mut writer, RejectReason::Busy, &msg, self.cfg.max_frame).await?;
                return Ok(());
            }
        };
        let identity = hello.identity.as_str().to_string();
        match hello.role {
            Role::Client => {
                self.welcome(&mut writer, &identity).await?;
                client::serve(self, principal, reader, writer).await
            }
            Role::Worker | Role::Device => {
                if crate::validate::check_name("node name", &identity).is_err() {
                    reject(&mut writer, RejectReason::BadIdentity, "node name must be a DNS-1123 label (lowercase letters, digits, '-'); pass --name", self.cfg.max_frame).await?;
                    return Ok(());
                }
                let token = match self.join(&principal, &identity).await {
                    Ok(t) => t,
                    Err(d) => {
                        reject(&mut writer, d.reason, &d.message, self.cfg.max_frame).await?;
                        return Ok(());
                    }
                };
                self.welcome(&mut writer, &identity).await?;
                if let Some(secret) = token.1 {
                    send(
                        &mut writer,
                        &NodeDown::Credential { secret },
                        self.cfg.max_frame,
                    )
                    .await?;
                }
                node::serve(self, identity, token.0, peer, reader, writer).await
            }
        }
    }

    async fn welcome(&self, w: &mut tls::ConnWriter, identity: &str) -> Result<(), IoError> {
        let welcome = Handshake::Welcome(Welcome {
            protocol_version: bramble_wire::PROTOCOL_VERSION,
            identity: heapless_str(identity),
            heartbeat_interval_ms: self.cfg.heartbeat_interval.as_millis() as u32,
            master_version: heapless_str(env!("CARGO_PKG_VERSION")),
        });
        send(w, &welcome, self.cfg.max_frame).await
    }
}

/// A connection that authenticated.
struct Admitted {
    peer: std::net::SocketAddr,
    hello: bramble_wire::Hello,
    principal: auth::Principal,
    reader: tls::ConnReader,
    writer: tls::ConnWriter,
}

/// `Store::get` with "not found" as `None`.
pub(crate) async fn get_opt(
    store: &Store,
    kind: bramble_wire::objects::Kind,
    namespace: &str,
    name: &str,
) -> Result<Option<bramble_wire::objects::Object>, crate::store::StoreError> {
    match store.get(kind, namespace, name).await {
        Ok(o) => Ok(Some(o)),
        Err(crate::store::StoreError::NotFound { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

pub use bramble_client::heapless_str;

async fn reject(
    w: &mut tls::ConnWriter,
    reason: RejectReason,
    msg: &str,
    max: usize,
) -> Result<(), IoError> {
    // Busy is expected under load: not worth a line per connection.
    if !matches!(reason, RejectReason::Busy) {
        tracing::warn!(?reason, "refused a connection: {msg}");
    }
    let r = Handshake::Reject(Reject {
        reason,
        message: heapless_str(msg),
    });
    send(w, &r, max).await
}

/// Runs `fut` with a timeout, mapping expiry to an I/O timeout error.
/// Runs `futs` side by side on this task and returns their outputs in order (the few call sites
/// that send many writes at once, so the store's writer can commit them together).
pub(crate) async fn join_all<F: std::future::Future>(futs: Vec<F>) -> Vec<F::Output> {
    let mut futs: Vec<_> = futs.into_iter().map(Box::pin).collect();
    let mut out: Vec<Option<F::Output>> = futs.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (f, o) in futs.iter_mut().zip(out.iter_mut()) {
            if o.is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => *o = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    out.into_iter().flatten().collect()
}

pub(crate) async fn with_timeout<T>(
    d: Duration,
    fut: impl std::future::Future<Output = Result<T, IoError>>,
) -> Result<T, IoError> {
    fut.or(async {
        smol::Timer::after(d).await;
        Err(IoError::Io(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "read timed out",
        )))
    })
    .await
}
