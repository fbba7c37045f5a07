//! The node proxy (kube-proxy's userspace mode): for every service a TCP listener (or a UDP
//! socket, [`udp`]) on the node at the service's port, forwarding each accepted connection (each
//! UDP client's datagrams) to the service's ready endpoints round-robin. A backend that refuses or does not answer the connect within
//! [`CONNECT_TIMEOUT`] is skipped for the next one, so a dead pod costs a retry, not a failed
//! request. Endpoint sets are swapped in place: established connections are never dropped by an
//! update. A port that cannot be bound (in use) is logged once with the fix and retried.
//!
//! smol and async-net only; each connection copies through two reused fixed-size buffers.

pub mod copy;
pub mod env;
pub mod udp;

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use async_net::{TcpListener, TcpStream, UdpSocket};
use bramble_wire::msg::{Conflict, ConflictKind};
use bramble_wire::objects::{Endpoints, Pod, Protocol};
use futures_lite::FutureExt;
use smol::lock::Semaphore;

use copy::BufPool;

use crate::persist;

/// How long a backend gets to accept a connection before the next one is tried.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// How often a port that could not be bound is tried again.
pub const BIND_RETRY: Duration = Duration::from_secs(2);
/// Most connections proxied at once on a node (each holds two [`copy::BUF_SIZE`] buffers:
/// 32 MiB at most); further clients wait in the listen backlog until one ends.
pub const MAX_CONNECTIONS: usize = 512;
/// A backend that failed to connect is tried last for this long (the master's endpoints
/// update usually removes it sooner), so a dead node does not cost every connection a timeout.
pub const PENALTY: Duration = Duration::from_secs(5);

/// One service's backends, shared by its listener and updated in place.
#[derive(Debug, Default)]
pub struct Backends {
    addrs: RwLock<Arc<Vec<SocketAddr>>>,
    next: AtomicUsize,
    /// Backends that recently failed to connect, and when.
    failed: Mutex<HashMap<SocketAddr, Instant>>,
}

impl Backends {
    /// Replaces the set (connections already made are not touched).
    pub fn set(&self, addrs: Vec<SocketAddr>) {
        if let Ok(mut a) = self.addrs.write() {
            *a = Arc::new(addrs);
        }
    }

    /// The current set.
    pub fn get(&self) -> Arc<Vec<SocketAddr>> {
        self.addrs
            .read()
            .map(|a| a.clone())
            .unwrap_or_else(|_| Arc::new(Vec::new()))
    }

    /// Backends in the order to try for the next connection: round-robin from the cursor, those
    /// that failed within [`PENALTY`] moved to the end.
    pub fn order(&self) -> Vec<SocketAddr> {
        let all = self.get();
        if all.is_empty() {
            return Vec::new();
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed) % all.len();
        let mut order: Vec<SocketAddr> =
            all[start..].iter().chain(&all[..start]).copied().collect();
        if let Ok(mut failed) = self.failed.lock()
            && !failed.is_empty()
        {
            failed.retain(|a, t| t.elapsed() < PENALTY && all.contains(a));
            // Stable: the healthy keep their round-robin order, then the failed.
            order.sort_by_key(|a| failed.contains_key(a));
        }
        order
    }

    /// Records the outcome of a connect.
    pub(crate) fn report(&self, addr: SocketAddr, ok: bool) {
        if let Ok(mut failed) = self.failed.lock() {
            if ok {
                failed.remove(&addr);
            } else {
                failed.insert(addr, Instant::now());
            }
        }
    }
}

/// Connects to the first backend (in round-robin order) that accepts within the timeout.
async fn dial(backends: &Backends, what: &str) -> Option<(TcpStream, SocketAddr)> {
    for addr in backends.order() {
        let res = TcpStream::connect(addr)
            .or(async {
                smol::Timer::after(CONNECT_TIMEOUT).await;
                Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "connect timed out",
                ))
            })
            .await;
        backends.report(addr, res.is_ok());
        match res {
            Ok(s) => return Some((s, addr)),
            Err(e) => tracing::debug!(service = %what, backend = %addr, "backend skipped: {e}"),
        }
    }
    None
}

/// Serves one service on `listener` until the task is dropped; at most `limit`'s permits of
/// connections at once (shared by every service of the node).
pub async fn serve(
    listener: TcpListener,
    what: String,
    backends: Arc<Backends>,
    pool: Arc<BufPool>,
    limit: Arc<Semaphore>,
) {
    let mut warned: Option<Instant> = None;
    loop {
        let permit = match limit.try_acquire_arc() {
            Some(p) => p,
            None => {
                if warned.is_none_or(|t| t.elapsed() > Duration::from_secs(60)) {
                    tracing::warn!(service = %what, "the node's limit of proxied connections is reached: new ones wait until some end");
                    warned = Some(Instant::now());
                }
                limit.acquire_arc().await
            }
        };
        let (client, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                // EMFILE and the like: back off instead of spinning.
                tracing::warn!(service = %what, "accept: {e}");
                smol::Timer::after(Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = client.set_nodelay(true);
        let (backends, pool, what) = (backends.clone(), pool.clone(), what.clone());
        smol::spawn(async move {
            let Some((backend, addr)) = dial(&backends, &what).await else {
                let n = backends.get().len();
                tracing::warn!(service = %what, %peer, "no ready endpoint accepted the connection ({n} tried); closing it");
                return;
            };
            let _ = backend.set_nodelay(true);
            if let Err(e) = copy::join(client, backend, &pool).await {
                tracing::debug!(service = %what, %peer, backend = %addr, "connection ended: {e}");
            }
            drop(permit);
        })
        .detach();
    }
}

/// Binds `addr` with `bind` (TCP or UDP), retrying every [`BIND_RETRY`] and logging when it fails
/// and when it recovers.
async fn bind_retrying<T, F>(
    addr: SocketAddr,
    what: &str,
    protocol: Protocol,
    conflicts: &Conflicts,
    bind: F,
) -> T
where
    F: AsyncFn(SocketAddr) -> std::io::Result<T>,
{
    let proto = protocol.as_str();
    let key = (addr.port(), protocol);
    let mut failing = false;
    loop {
        match bind(addr).await {
            Ok(l) => {
                if failing {
                    tracing::info!(service = %what, %addr, "listening now ({proto})");
                }
                conflicts
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&key);
                return l;
            }
            Err(e) => {
                if !failing {
                    let message = format!(
                        "cannot listen on {proto} {addr} for service {what}: {e}; another process (or service) holds {proto} port {}: free it or change the service's port; retrying every {} s",
                        addr.port(),
                        BIND_RETRY.as_secs()
                    );
                    tracing::error!(service = %what, %addr, "{message}");
                    conflicts
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(key, service_conflict(what, addr.port(), message));
                    failing = true;
                }
                smol::Timer::after(BIND_RETRY).await;
            }
        }
    }
}

/// The service ports this node cannot serve, by port and protocol.
type Conflicts = Arc<Mutex<BTreeMap<(u16, Protocol), Conflict>>>;

/// A [`ConflictKind::ServicePort`] conflict about the service `what` (`namespace/name`).
fn service_conflict(what: &str, port: u16, message: String) -> Conflict {
    let (namespace, name) = what.split_once('/').unwrap_or(("", what));
    Conflict {
        kind: ConflictKind::ServicePort,
        namespace: namespace.into(),
        name: name.into(),
        uid: String::new(),
        port,
        message,
    }
}

struct Listener {
    /// `namespace/name` of the service holding the port.
    service: String,
    backends: Arc<Backends>,
    _task: smol::Task<()>,
}

/// Every service's listener on this node.
pub struct Proxy {
    bind: IpAddr,
    /// Where the last endpoints set is kept, so that the proxy serves after an agent restart
    /// while the master is away.
    state: Option<std::path::PathBuf>,
    /// By port and protocol.
    listeners: HashMap<(u16, Protocol), Listener>,
    pool: Arc<BufPool>,
    limit: Arc<Semaphore>,
    /// The last set received (for the pods' environment).
    endpoints: Vec<Endpoints>,
    /// The node's address on the pod bridge, where isolated pods reach the proxy.
    pod_gateway: Option<std::net::Ipv4Addr>,
    /// The kernel serves the services' virtual IPs: the pods' variables name those.
    vips: bool,
    /// How long a UDP session lives without datagrams.
    udp_idle: Duration,
    /// Service ports that cannot be served: bound elsewhere, or wanted by two services.
    conflicts: Conflicts,
    /// The second services of ports two services want.
    duplicates: BTreeMap<(u16, Protocol), Conflict>,
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Proxy({}, {} ports)", self.bind, self.listeners.len())
    }
}

impl Proxy {
    /// A proxy listening on `bind` (`0.0.0.0` for every address of the node).
    pub fn new(bind: IpAddr) -> Proxy {
        Proxy {
            bind,
            state: None,
            listeners: HashMap::new(),
            pool: Arc::default(),
            limit: Arc::new(Semaphore::new(MAX_CONNECTIONS)),
            endpoints: Vec::new(),
            pod_gateway: None,
            vips: false,
            udp_idle: udp::UDP_IDLE,
            conflicts: Arc::default(),
            duplicates: BTreeMap::new(),
        }
    }

    /// The service ports this node cannot serve now: another process holds the port, or
    /// another service has it (the agent reports them to the master as events).
    pub fn conflicts(&self) -> Vec<Conflict> {
        let held = self.conflicts.lock().unwrap_or_else(|e| e.into_inner());
        held.values()
            .chain(self.duplicates.values())
            .cloned()
            .collect()
    }

    /// How long UDP sessions live without datagrams (default [`udp::UDP_IDLE`]); applies to
    /// listeners created afterwards.
    pub fn set_udp_idle(&mut self, idle: Duration) {
        self.udp_idle = idle;
    }

    /// The node's address on the pod bridge (the gateway of its pod subnet), if it has one.
    pub fn set_pod_gateway(&mut self, gateway: Option<std::net::Ipv4Addr>) {
        self.pod_gateway = gateway;
    }

    /// Whether the kernel serves the services' virtual IPs (then pods started from now on get
    /// them in their `BRAMBLE_SERVICE_<NAME>_HOST`).
    pub fn set_vips(&mut self, on: bool) {
        self.vips = on;
    }

    /// The last endpoints set.
    pub fn endpoints(&self) -> &[Endpoints] {
        &self.endpoints
    }

    /// Where isolated pods reach the proxy: the bridge's address when the proxy listens on
    /// every address, else the address it listens on (routed through the bridge).
    pub fn isolated_host(&self) -> Option<String> {
        if self.bind.is_unspecified() {
            self.pod_gateway.map(|g| g.to_string())
        } else {
            Some(self.bind.to_string())
        }
    }

    /// A proxy that keeps the last endpoints in `file` and starts from it (it must run inside a
    /// smol executor context): after an agent restart with the master away, services still
    /// work. The file (versioned, written durably: [`crate::persist`]) is written only when the
    /// set changes; one of an older format is rewritten in the current one.
    pub fn with_state(bind: IpAddr, file: std::path::PathBuf) -> Proxy {
        let mut p = Proxy::new(bind);
        let mut migrate = false;
        match persist::read_postcard::<Vec<Endpoints>>(persist::ENDPOINTS, &file) {
            Ok(Some((version, eps))) => {
                tracing::info!(
                    services = eps.len(),
                    "proxy: serving the endpoints saved in {}",
                    file.display()
                );
                migrate = version < persist::ENDPOINTS_V;
                p.update(eps);
            }
            Ok(None) => {}
            Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
                tracing::warn!("proxy: ignoring unreadable {}: {e}", file.display())
            }
            Err(e) => tracing::warn!("proxy: cannot read {}: {e}", file.display()),
        }
        p.state = Some(file);
        if migrate {
            p.save();
        }
        p
    }

    fn save(&self) {
        let Some(file) = &self.state else { return };
        let res = persist::encode_postcard(persist::ENDPOINTS, &self.endpoints)
            .and_then(|b| persist::write_file(file, &b, 0o644));
        if let Err(e) = res {
            tracing::warn!(
                "proxy: cannot save the endpoints in {}: {e}",
                file.display()
            );
        }
    }

    /// Where pods reach the proxy: loopback when it listens on every address.
    pub fn host(&self) -> String {
        if self.bind.is_unspecified() {
            Ipv4Addr::LOCALHOST.to_string()
        } else {
            self.bind.to_string()
        }
    }

    /// Limits the connections proxied at once (default [`MAX_CONNECTIONS`]); applies to
    /// listeners created afterwards.
    pub fn set_max_connections(&mut self, n: usize) {
        self.limit = Arc::new(Semaphore::new(n.max(1)));
    }

    /// Ports with a listener (bound or retrying), either protocol.
    pub fn ports(&self) -> Vec<u16> {
        let mut p: Vec<u16> = self.listeners.keys().map(|(p, _)| *p).collect();
        p.sort();
        p.dedup();
        p
    }

    /// Replaces the set of services: new ports get listeners, removed ones are closed, the rest
    /// get their backends swapped in place. Must run inside a smol executor context.
    pub fn update(&mut self, eps: Vec<Endpoints>) {
        let mut wanted: HashMap<(u16, Protocol), (String, Vec<SocketAddr>)> = HashMap::new();
        let mut duplicates = BTreeMap::new();
        for e in &eps {
            let what = format!("{}/{}", e.meta.namespace, e.meta.name);
            if e.port == 0 {
                continue;
            }
            let key = (e.port, e.protocol);
            if let Some((other, _)) = wanted.get(&key) {
                let message = format!(
                    "service {what} wants {} port {} that service {other} already has: only {other} is served; give one of them another port",
                    e.protocol.as_str(),
                    e.port
                );
                tracing::error!(service = %what, port = e.port, "{message}");
                duplicates.insert(key, service_conflict(&what, e.port, message));
                continue;
            }
            let mut addrs = Vec::with_capacity(e.ready.len());
            for a in &e.ready {
                match a.ip.parse::<IpAddr>() {
                    Ok(ip) => addrs.push(SocketAddr::new(ip, a.port)),
                    Err(_) => {
                        tracing::warn!(service = %what, pod = %a.pod, "endpoint address {:?} is not an IP address; skipped", a.ip)
                    }
                }
            }
            wanted.insert(key, (what, addrs));
        }
        self.duplicates = duplicates;
        let conflicts = self.conflicts.clone();
        self.listeners.retain(|key, l| {
            let keep = wanted.get(key).is_some_and(|(w, _)| *w == l.service);
            if !keep {
                tracing::info!(service = %l.service, port = key.0, "service removed: closing its listener");
                conflicts.lock().unwrap_or_else(|e| e.into_inner()).remove(key);
            }
            keep
        });
        for (key, (what, addrs)) in wanted {
            let (port, protocol) = key;
            if let Some(l) = self.listeners.get(&key) {
                if *l.backends.get() != addrs {
                    tracing::debug!(service = %what, backends = addrs.len(), "endpoints updated");
                    l.backends.set(addrs);
                }
                continue;
            }
            let backends = Arc::new(Backends::default());
            backends.set(addrs);
            let addr = SocketAddr::new(self.bind, port);
            let (b, pool, w) = (backends.clone(), self.pool.clone(), what.clone());
            let limit = self.limit.clone();
            let idle = self.udp_idle;
            let conflicts = self.conflicts.clone();
            let task = match protocol {
                Protocol::Tcp => smol::spawn(async move {
                    let l = bind_retrying(addr, &w, protocol, &conflicts, async |a| {
                        TcpListener::bind(a).await
                    })
                    .await;
                    tracing::info!(service = %w, %addr, "proxy listening");
                    serve(l, w, b, pool, limit).await;
                }),
                Protocol::Udp => smol::spawn(async move {
                    let s = bind_retrying(addr, &w, protocol, &conflicts, async |a| {
                        UdpSocket::bind(a).await
                    })
                    .await;
                    tracing::info!(service = %w, %addr, "proxy listening (UDP)");
                    udp::serve(s, w, b, idle).await;
                }),
            };
            self.listeners.insert(
                key,
                Listener {
                    service: what,
                    backends,
                    _task: task,
                },
            );
        }
        if self.endpoints != eps {
            self.endpoints = eps;
            self.save();
        }
    }

    /// `BRAMBLE_SERVICE_<NAME>_HOST/_PORT` of the services known now, for `pod`.
    pub fn service_env(&self, pod: &Pod) -> Vec<(String, String)> {
        env::pod_service_env(
            pod,
            &self.endpoints,
            &self.host(),
            self.isolated_host().as_deref(),
            self.vips,
        )
    }
}

#[cfg(test)]
mod tests;
