//! The agent: dials the master, registers, heartbeats, receives its pod set, drives the runtime
//! and reports status deltas. One event loop owns the state; the connection and log streams are
//! tasks that talk to it through channels.
//!
//! Offline autonomy: the assignment set is persisted (only when it changes) and the pods are
//! started from it at boot, so a node with no master keeps running — and restarting — its pods.

pub mod artifacts;
pub mod credential;
pub mod driver;
pub mod exec;
pub mod fake;
pub mod hostports;
pub mod images;
pub mod info;
pub mod metrics;
pub mod netpath;
pub mod state;
pub mod tls;
pub mod usage;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bramble_wire::io::{FrameReader, send};
use bramble_wire::msg::{Assignment, LogChunk, NodeDown, NodeUp, PodReport, PodSubnet};
use bramble_wire::{Heartbeat, Hello, NodeInfo, Role};
use futures_lite::{AsyncReadExt, AsyncSeekExt, FutureExt};

use crate::persist::{self, StateDir};
use crate::runtime::PodToRun;

/// What the agent needs from the pod runtime.
pub trait Driver {
    /// Makes the running pods match `desired` (by UID): starts new ones, stops removed ones.
    fn sync(&mut self, desired: &[PodToRun]);
    /// Advances restarts and returns the status of every pod the driver knows.
    fn poll(&mut self) -> Vec<PodReport>;
    /// The log file of a process (`None` = the pod's first process) of the pod with that name
    /// and UID (empty: any UID); `previous`: of its previous run.
    fn log_file(
        &self,
        namespace: &str,
        pod: &str,
        uid: &str,
        process: Option<&str>,
        previous: bool,
    ) -> Option<PathBuf>;
    /// Where to run `bramble exec` in a pod: its running init and state directory, or why not
    /// (a message naming the pod and what to do).
    fn exec_target(
        &self,
        namespace: &str,
        pod: &str,
        _process: Option<&str>,
    ) -> Result<exec::ExecTarget, String> {
        Err(format!(
            "pod {namespace}/{pod}: this node's runtime cannot exec into pods"
        ))
    }
    /// Resolves when a pod's status may have changed (never, if nothing runs).
    fn changed(&self) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + '_>>;
    /// The config maps of the assignment and the secrets from the master (`None`: not received
    /// since the agent started). Called before [`Driver::sync`]; updates mounted volumes.
    fn configure(
        &mut self,
        _config_maps: &[bramble_wire::objects::ConfigMap],
        _secrets: Option<&[bramble_wire::objects::Secret]>,
    ) {
    }
    /// The node's own pod subnet (`None`: not assigned) and the routes to the other nodes'
    /// (subnet, via). Called before [`Driver::sync`] when the master sends them.
    fn network(&mut self, _own: Option<&str>, _routes: &[(String, String)]) {}
    /// Cumulative CPU and memory counters of the running pods (`bramble top`; read only while
    /// the master wants usage reports).
    fn usage(&self) -> Vec<usage::PodSample> {
        Vec::new()
    }
}

/// Agent settings (the worker's flags).
#[derive(Debug, Clone)]
pub struct Config {
    /// Master address.
    pub master: String,
    /// Join token.
    pub token: String,
    /// Node name.
    pub name: String,
    /// State dir (assignment, credential, logs...).
    pub state: StateDir,
    /// Node info reported at registration.
    pub info: NodeInfo,
    /// How often the driver is polled.
    pub poll_interval: Duration,
    /// Where the service proxy listens (`0.0.0.0`: every address of the node).
    pub proxy_address: std::net::IpAddr,
    /// The kernel network path (nftables, cluster DNS).
    pub net: netpath::NetConfig,
    /// How images are kept: overlay roots or flattened trees, GC thresholds.
    pub images: NodeImages,
    /// Serve Prometheus metrics here (`--metrics-listen`; `None`: off).
    pub metrics_listen: Option<std::net::SocketAddr>,
}

/// How the node keeps images (`--image-gc-high/low`, overlayfs found at startup).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeImages {
    /// Pod roots are overlays of the layers (else flattened trees).
    pub overlay: bool,
    /// Collect unused layers when the state disk is this full (percent).
    pub gc_high: u8,
    /// ... down to this (percent).
    pub gc_low: u8,
}

impl Default for NodeImages {
    fn default() -> NodeImages {
        NodeImages {
            overlay: true,
            gc_high: 85,
            gc_low: 80,
        }
    }
}

/// Splits the master's subnet list into this node's own subnet and the routes to the others.
/// A route is only worth installing via a real neighbour: not via a loopback or unspecified
/// address (nodes on one host), nor via this node's own address.
fn split_network(name: &str, subnets: &[PodSubnet]) -> (Option<String>, Vec<(String, String)>) {
    let own = subnets.iter().find(|s| s.node == name);
    let own_via = own.map(|s| s.via.as_str());
    let routes = subnets
        .iter()
        .filter(|s| s.node != name && Some(s.via.as_str()) != own_via)
        .filter(|s| {
            s.via
                .parse::<std::net::Ipv4Addr>()
                .is_ok_and(|a| !a.is_loopback() && !a.is_unspecified())
        })
        .map(|s| (s.cidr.clone(), s.via.clone()))
        .collect();
    (own.map(|s| s.cidr.clone()), routes)
}

/// Applies a subnet list: to the driver and the proxy, and to the state dir when it changed.
fn apply_network(
    cfg: &Config,
    driver: &mut impl Driver,
    proxy: &mut crate::proxy::Proxy,
    net: &mut netpath::NetPath,
    subnets: &[PodSubnet],
    save: bool,
) {
    let (own, routes) = split_network(&cfg.name, subnets);
    driver.network(own.as_deref(), &routes);
    let own = own
        .as_deref()
        .and_then(|c| crate::runtime::PodNetwork::parse(&cfg.net.bridge, c));
    proxy.set_pod_gateway(own.as_ref().map(|n| n.gateway()));
    net.set_subnet(own);
    proxy.set_vips(net.serving());
    if save {
        save_network(&cfg.state, subnets);
    }
}

/// Keeps the pod subnets in the state dir (for a restart while the master is away), when they
/// changed.
fn save_network(state: &StateDir, subnets: &[PodSubnet]) {
    let path = state.network();
    let Ok(bytes) = persist::encode_postcard(persist::NETWORK, &subnets) else {
        return;
    };
    if std::fs::read(&path).ok().as_deref() != Some(bytes.as_slice())
        && let Err(e) = persist::write_file(&path, &bytes, 0o644)
    {
        tracing::warn!("cannot keep the pod subnets in {}: {e}", path.display());
    }
}

/// The pod subnets kept in the state dir (any version; an older one is rewritten).
fn load_network(state: &StateDir) -> Option<Vec<PodSubnet>> {
    match persist::read_postcard::<Vec<PodSubnet>>(persist::NETWORK, &state.network()) {
        Ok(Some((version, subnets))) => {
            if version < persist::NETWORK_V {
                save_network(state, &subnets);
            }
            Some(subnets)
        }
        Ok(None) => None,
        Err(e) => {
            tracing::warn!("ignoring unreadable {}: {e}", state.network().display());
            None
        }
    }
}

enum Ev {
    Connected {
        up: async_channel::Sender<NodeUp>,
        heartbeat: Duration,
    },
    Down(NodeDown),
    Disconnected,
    Unpacked(artifacts::Unpacked),
    /// A metrics scrape: the exposition text goes back on the channel.
    Metrics(async_channel::Sender<String>),
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Hands the driver the pods it can run now, resolved (the wire pods stay as assigned): with
/// their services' environment, and with an artifact rootfs only once the artifact is unpacked
/// (the cache pulls what is missing).
fn sync_pods(
    driver: &mut impl Driver,
    arts: &mut artifacts::ArtifactCache,
    (proxy, net): (&crate::proxy::Proxy, &netpath::NetPath),
    desired: &Assignment,
    up: Option<&async_channel::Sender<NodeUp>>,
) {
    arts.sync(driver, desired, up, |mut run| {
        run.extra_env = proxy.service_env(&run.pod);
        run.resolv_conf = net.resolv_conf(&run.pod);
        run
    });
}

/// Runs the agent forever.
pub async fn run(cfg: Config, driver: impl Driver) -> anyhow::Result<()> {
    let (ev_tx, ev_rx) = async_channel::bounded::<Ev>(64);
    if let Some(addr) = cfg.metrics_listen {
        let listener = smol::net::TcpListener::bind(addr).await.map_err(|e| {
            anyhow::anyhow!(
                "cannot serve metrics on {addr}: {e}; give --metrics-listen a free address (e.g. 127.0.0.1:9101) or leave it out"
            )
        })?;
        tracing::info!(%addr, "serving Prometheus metrics at http://{addr}/metrics");
        let (ask_tx, ask_rx) = async_channel::bounded(4);
        smol::spawn(metrics::serve(listener, ask_tx)).detach();
        let ev = ev_tx.clone();
        smol::spawn(async move {
            while let Ok(reply) = ask_rx.recv().await {
                if ev.send(Ev::Metrics(reply)).await.is_err() {
                    break;
                }
            }
        })
        .detach();
    }
    let conn = cfg.clone();
    event_loop(cfg, driver, ev_rx, move || {
        smol::spawn(connection_loop(conn, ev_tx)).detach();
    })
    .await
}

/// The agent's event loop: starts the pods of the saved assignment, then calls `connect` (which
/// starts the connection task feeding `ev_rx`) and handles events forever.
async fn event_loop(
    cfg: Config,
    mut driver: impl Driver,
    ev_rx: async_channel::Receiver<Ev>,
    connect: impl FnOnce(),
) -> anyhow::Result<()> {
    let mut state = state::StateFile::new(&cfg.state);
    let mut desired = state.load()?.unwrap_or_default();
    if !desired.pods.is_empty() {
        tracing::info!(
            pods = desired.pods.len(),
            revision = desired.revision,
            "starting pods from local state"
        );
    }
    // Secrets live in memory only: none until the master sends them.
    let mut secrets: Option<Vec<bramble_wire::objects::Secret>> = None;
    let mut proxy = crate::proxy::Proxy::with_state(cfg.proxy_address, cfg.state.endpoints());
    let mut net = netpath::NetPath::new(cfg.net.clone(), &cfg.state);
    net.set_endpoints(proxy.endpoints());
    let mut arts = artifacts::ArtifactCache::new(&cfg.state.artifacts(), cfg.info.arch)
        .with_images(artifacts::ImageSettings {
            layers: cfg.state.layers(),
            images: cfg.state.images(),
            overlay: cfg.images.overlay,
            gc_high: cfg.images.gc_high,
            gc_low: cfg.images.gc_low,
        });
    let unpacked = arts.done();
    driver.configure(&desired.config_maps, None);
    if let Some(subnets) = load_network(&cfg.state) {
        apply_network(&cfg, &mut driver, &mut proxy, &mut net, &subnets, false);
    }
    // Host ports: isolated pods' reservations (the pods found running hold their own).
    let mut host_ports = hostports::HostPorts::default();
    host_ports.update(&desired.pods, &Default::default());
    sync_pods(&mut driver, &mut arts, (&proxy, &net), &desired, None);
    connect();
    // The conflicts the master was told of (on this connection).
    let mut told_conflicts: Vec<bramble_wire::msg::Conflict> = Vec::new();

    let started = Instant::now();
    let mut up: Option<async_channel::Sender<NodeUp>> = None;
    // Hands the driver what it can run now (after any change of the assignment, config, secrets,
    // network or artifacts).
    macro_rules! resync {
        () => {
            sync_pods(
                &mut driver,
                &mut arts,
                (&proxy, &net),
                &desired,
                up.as_ref(),
            )
        };
    }
    let mut hb_every = Duration::from_secs(5);
    let mut next_hb = Instant::now();
    let mut seq = 0u32;
    let mut reported: HashMap<String, PodReport> = HashMap::new();
    let mut streams: HashMap<u32, Arc<AtomicBool>> = HashMap::new();
    // `bramble top`: samples only while the master asks.
    let mut sampler = usage::Sampler::default();
    let mut execs = exec::Sessions::default();
    // An event read while coalescing assignments, handled next.
    let mut pending: Option<Ev> = None;
    loop {
        // Wake on a message, a pod status change, or the tick (heartbeats, restarts' bookkeeping).
        let queued = pending.take();
        let ev = async { next_event(queued, &ev_rx).await }
            .or(async { unpacked.recv().await.ok().map(Ev::Unpacked) })
            .or(async {
                driver.changed().await;
                // Rate-limit status wakeups: a burst of process events is one report.
                smol::Timer::after(Duration::from_millis(5)).await;
                None
            })
            .or(async {
                let until_hb = next_hb.saturating_duration_since(Instant::now());
                let mut tick = if up.is_some() {
                    cfg.poll_interval.min(until_hb)
                } else {
                    cfg.poll_interval
                };
                if let (Some(due), true) = (sampler.due(), up.is_some()) {
                    tick = tick.min(due.saturating_duration_since(Instant::now()));
                }
                smol::Timer::after(tick).await;
                None
            })
            .await;
        match ev {
            Some(Ev::Connected { up: tx, heartbeat }) => {
                hb_every = heartbeat;
                next_hb = Instant::now() + hb_every;
                // After a reconnect: the full state once, then deltas.
                let mut pods = driver.poll();
                pods.extend(arts.waiting(&desired));
                arts.pump(&tx);
                reported = pods.iter().map(|r| (r.uid.clone(), r.clone())).collect();
                let _ = tx.send(NodeUp::Status(pods)).await;
                let _ = tx.send(net.report()).await;
                // A new session: the master knows none of them (sent below when there are any).
                told_conflicts.clear();
                up = Some(tx);
            }
            Some(Ev::Disconnected) => {
                up = None;
                // Reports go to this session only; a master that still wants them asks again
                // when the agent reconnects.
                sampler = usage::Sampler::default();
                arts.disconnected();
                for (_, c) in streams.drain() {
                    c.store(true, Ordering::Relaxed);
                }
                execs.clear();
            }
            Some(Ev::Down(NodeDown::Assign(mut a))) => {
                // A burst of assignments (the master binding a large apply) is one change:
                // saved once, started as one batch.
                loop {
                    match ev_rx.try_recv() {
                        Ok(Ev::Down(NodeDown::Assign(newer))) => a = newer,
                        Ok(other) => {
                            pending = Some(other);
                            break;
                        }
                        Err(_) => break,
                    }
                }
                if let Err(e) = state.save(&a) {
                    tracing::error!(
                        "cannot persist the assignment in {}: {e}",
                        cfg.state.root().display()
                    );
                }
                // New pods' host ports are checked before they start.
                let old: std::collections::HashSet<&str> =
                    desired.pods.iter().map(|p| p.meta.uid.as_str()).collect();
                let new_uids = a
                    .pods
                    .iter()
                    .map(|p| p.meta.uid.as_str())
                    .filter(|u| !old.contains(u))
                    .collect();
                host_ports.update(&a.pods, &new_uids);
                desired = a;
                driver.configure(&desired.config_maps, secrets.as_deref());
                resync!();
            }
            Some(Ev::Down(NodeDown::Secrets(s))) => {
                secrets = Some(s);
                driver.configure(&desired.config_maps, secrets.as_deref());
                resync!();
            }
            Some(Ev::Down(NodeDown::Endpoints(eps))) => {
                net.set_endpoints(&eps);
                proxy.set_vips(net.serving());
                proxy.update(eps);
            }
            Some(Ev::Down(NodeDown::Network(subnets))) => {
                apply_network(&cfg, &mut driver, &mut proxy, &mut net, &subnets, true);
                // Isolated pods that waited for the subnet can start now.
                resync!();
            }
            Some(Ev::Down(NodeDown::ClusterNetwork(c))) => {
                net.set_cluster(c);
                proxy.set_vips(net.serving());
                // Isolated pods that waited for the cluster DNS can start now.
                resync!();
            }
            Some(Ev::Down(NodeDown::Credential { .. } | NodeDown::Replaced { .. })) => {}
            Some(Ev::Down(NodeDown::Ping)) => {}
            Some(Ev::Metrics(reply)) => {
                let sample = usage::Sample {
                    at: Instant::now(),
                    node: usage::node_counters(),
                    pods: driver.usage(),
                };
                let extra = metrics::read_extra(cfg.info.memory_bytes);
                let _ = reply.try_send(metrics::render(&sample, &extra));
            }
            Some(Ev::Down(NodeDown::UsageWanted { seconds })) => {
                sampler.want(Instant::now(), seconds.min(3600));
            }
            Some(Ev::Down(NodeDown::ArtifactChunk {
                request,
                data,
                error,
            })) => {
                arts.on_chunk(request, data, error, up.as_ref());
                // The chunks queued behind it are written now: one pass of the loop (status
                // poll, waiting pods' messages) for the lot, not one per chunk.
                loop {
                    match ev_rx.try_recv() {
                        Ok(Ev::Down(NodeDown::ArtifactChunk {
                            request,
                            data,
                            error,
                        })) => {
                            arts.on_chunk(request, data, error, up.as_ref());
                        }
                        Ok(other) => {
                            pending = Some(other);
                            break;
                        }
                        Err(_) => break,
                    }
                }
            }
            Some(Ev::Unpacked(u)) => {
                arts.finish(u);
                resync!();
            }
            Some(Ev::Down(NodeDown::Logs {
                request,
                namespace,
                pod,
                process,
                follow,
                tail_bytes,
                uid,
                previous,
            })) => {
                if let Some(tx) = &up {
                    let cancel = Arc::new(AtomicBool::new(false));
                    streams.insert(request, cancel.clone());
                    let file =
                        driver.log_file(&namespace, &pod, &uid, process.as_deref(), previous);
                    smol::spawn(stream_log(
                        request,
                        file,
                        // The previous run's log does not grow.
                        follow && !previous,
                        tail_bytes,
                        tx.clone(),
                        cancel,
                    ))
                    .detach();
                }
            }
            Some(Ev::Down(NodeDown::Exec { request, spec })) => {
                if let Some(tx) = &up {
                    let target =
                        driver.exec_target(&spec.namespace, &spec.pod, spec.process.as_deref());
                    execs.start(request, spec, target, tx);
                }
            }
            Some(Ev::Down(NodeDown::PortForward { request, spec })) => {
                if let Some(tx) = &up {
                    let target = driver.exec_target(&spec.namespace, &spec.pod, None);
                    execs.port_forward(request, spec, target, tx);
                }
            }
            Some(Ev::Down(NodeDown::ExecInput { request, input })) => {
                execs.input(request, input);
            }
            Some(Ev::Down(NodeDown::CancelLogs { request })) => {
                if let Some(c) = streams.remove(&request) {
                    c.store(true, Ordering::Relaxed);
                }
            }
            None => {}
        }
        if arts.tick(&desired) {
            resync!();
        }
        // Status deltas.
        let mut now_pods = driver.poll();
        now_pods.extend(arts.waiting(&desired));
        // Host ports of isolated pods (most pods have none: no lookup for them, this runs at
        // every wakeup).
        let with_host_ports = desired.pods.iter().filter(|p| {
            p.spec
                .processes
                .iter()
                .any(|pr| pr.ports.iter().any(|q| q.host_port.is_some()))
        });
        net.set_pods(with_host_ports.map(|p| {
            let ip = now_pods
                .iter()
                .find(|r| r.uid == p.meta.uid)
                .map(|r| r.status.ip.as_str())
                .filter(|ip| !ip.is_empty());
            (p, ip)
        }));
        if let Some(tx) = &up {
            let mut delta = Vec::new();
            for r in &now_pods {
                let changed = match reported.get(&r.uid) {
                    Some(old) => !old.status.same_meaning(&r.status),
                    None => true,
                };
                if changed {
                    delta.push(r.clone());
                }
            }
            if !delta.is_empty() {
                for r in &delta {
                    reported.insert(r.uid.clone(), r.clone());
                }
                let _ = tx.send(NodeUp::Status(delta)).await;
            }
            // Service and host ports this node cannot give (events on the master).
            if host_ports.retry_due() {
                host_ports.update(&desired.pods, &Default::default());
            }
            let mut conflicts = proxy.conflicts();
            conflicts.extend(host_ports.conflicts());
            conflicts.sort();
            if conflicts != told_conflicts {
                let _ = tx.send(NodeUp::Conflicts(conflicts.clone())).await;
                told_conflicts = conflicts;
            }
            if Instant::now() >= next_hb {
                next_hb = Instant::now() + hb_every;
                seq = seq.wrapping_add(1);
                let running = now_pods
                    .iter()
                    .filter(|r| r.status.phase == bramble_wire::PodPhase::Running)
                    .count();
                let hb = Heartbeat {
                    seq,
                    pods_running: running.min(u16::MAX as usize) as u16,
                    uptime_s: started.elapsed().as_secs() as u32,
                };
                let _ = tx.send(NodeUp::Heartbeat(hb)).await;
            }
            let report = sampler.tick(Instant::now(), || usage::Sample {
                at: Instant::now(),
                node: usage::node_counters(),
                pods: driver.usage(),
            });
            if let Some(u) = report {
                let _ = tx.send(NodeUp::Usage(u)).await;
            }
        }
        streams.retain(|_, c| !c.load(Ordering::Relaxed));
    }
}

/// The event put aside while coalescing assignments, else the next from the channel.
async fn next_event(queued: Option<Ev>, rx: &async_channel::Receiver<Ev>) -> Option<Ev> {
    match queued {
        Some(e) => Some(e),
        None => rx.recv().await.ok(),
    }
}

/// Dials the master forever with jittered exponential backoff.
async fn connection_loop(cfg: Config, ev: async_channel::Sender<Ev>) {
    let mut backoff = Duration::from_millis(250);
    let mut rng = (now_ms() ^ u64::from(std::process::id()) << 32) | 1;
    loop {
        let registered = AtomicBool::new(false);
        let mut replaced = None;
        match session(&cfg, &ev, &registered, &mut replaced).await {
            Ok(()) => tracing::warn!("master closed the connection"),
            Err(e) => tracing::warn!("master connection: {e:#}"),
        }
        if ev.send(Ev::Disconnected).await.is_err() {
            return;
        }
        if let Some(why) = replaced {
            // Another agent holds this node's session: dialing again would take it back and
            // forth. Pods keep running; a restart of this agent dials again.
            tracing::error!(
                "the master replaced this session: {why}; stopped dialing the master (pods keep running; restart the agent to reconnect)"
            );
            std::future::pending::<()>().await;
        }
        if registered.load(Ordering::Relaxed) {
            // The master took us: a later drop starts the backoff over.
            backoff = Duration::from_millis(250);
        }
        // xorshift for jitter in [0.5, 1.5) × backoff.
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let jitter = 0.5 + (rng % 1000) as f64 / 1000.0;
        let wait = backoff.mul_f64(jitter);
        tracing::info!("reconnecting in {} ms", wait.as_millis());
        smol::Timer::after(wait).await;
        backoff = (backoff * 2).min(Duration::from_secs(30));
    }
}

async fn session(
    cfg: &Config,
    ev: &async_channel::Sender<Ev>,
    registered: &AtomicBool,
    replaced: &mut Option<String>,
) -> anyhow::Result<()> {
    let max = bramble_wire::DEFAULT_MAX_FRAME * 16;
    let (pin, credential) = tls::pin_and_credential(&cfg.token)?;
    let conn = tls::connect(&cfg.master, pin).await?;
    tracing::info!(master = %cfg.master, "tls handshake took {} ms", conn.handshake.as_millis());
    let stream = conn.stream;
    // Artifact and layer chunks (256 KiB) arrive back to back: one read per chunk.
    let mut reader = FrameReader::with_read_buf(stream.clone(), max, 256 * 1024 + 64);
    let mut writer = stream;
    let hello = Hello {
        protocol_version: bramble_wire::PROTOCOL_VERSION,
        role: Role::Worker,
        identity: cfg.info.name.clone(),
        credentials: info_str(&credential::for_hello(&cfg.state, credential)),
        agent_version: info_str(env!("CARGO_PKG_VERSION")),
    };
    let welcome = bramble_wire::io::client_handshake(&mut reader, &mut writer, hello, max).await?;
    tracing::info!(master = %cfg.master, "connected");
    send(
        &mut writer,
        &NodeUp::Register(Box::new(cfg.info.clone())),
        max,
    )
    .await?;
    let (up_tx, up_rx) = async_channel::bounded::<NodeUp>(256);
    let heartbeat = Duration::from_millis(u64::from(welcome.heartbeat_interval_ms.max(100)));
    ev.send(Ev::Connected {
        up: up_tx,
        heartbeat,
    })
    .await?;
    registered.store(true, Ordering::Relaxed);
    let writer_task = smol::spawn(async move {
        while let Ok(m) = up_rx.recv().await {
            if send(&mut writer, &m, max).await.is_err() {
                break;
            }
        }
    });
    let idle = heartbeat * 6 + Duration::from_secs(10);
    let result = loop {
        let msg = reader
            .recv::<NodeDown>()
            .or(async {
                smol::Timer::after(idle).await;
                Err(bramble_wire::io::IoError::Io(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "master silent",
                )))
            })
            .await;
        match msg {
            Ok(Some(NodeDown::Credential { secret })) => {
                match credential::save(&cfg.state, &secret) {
                    Ok(()) => {
                        tracing::info!(path = %credential::path(&cfg.state).display(), "joined: saved this node's credential; it replaces the join token from now on")
                    }
                    Err(e) => tracing::error!(
                        "cannot save this node's credential in {}: {e}; the master will refuse a second join of this name until it is revoked",
                        cfg.state.root().display()
                    ),
                }
            }
            Ok(Some(NodeDown::Replaced { message })) => {
                *replaced = Some(message);
                break Ok(());
            }
            Ok(Some(m)) => {
                if ev.send(Ev::Down(m)).await.is_err() {
                    break Ok(());
                }
            }
            Ok(None) => break Ok(()),
            Err(e) => break Err(e.into()),
        }
    };
    writer_task.cancel().await;
    result
}

fn info_str<const N: usize>(s: &str) -> heapless::String<N> {
    let mut out = heapless::String::new();
    for c in s.chars() {
        if out.push(c).is_err() {
            break;
        }
    }
    out
}

/// Streams a log file as chunks; follows it while `follow` until cancelled.
async fn stream_log(
    request: u32,
    file: Option<PathBuf>,
    follow: bool,
    tail: Option<u64>,
    up: async_channel::Sender<NodeUp>,
    cancel: Arc<AtomicBool>,
) {
    let end = |error: Option<String>| NodeUp::LogEnd { request, error };
    let Some(path) = file else {
        let _ = up
            .send(end(Some("no such pod or process on this node".into())))
            .await;
        return;
    };
    let mut f = match async_fs_open(&path).await {
        Some(f) => f,
        None if follow => loop {
            // The process may not have written yet.
            if cancel.load(Ordering::Relaxed) {
                return;
            }
            smol::Timer::after(Duration::from_millis(200)).await;
            if let Some(f) = async_fs_open(&path).await {
                break f;
            }
        },
        None => {
            let _ = up.send(end(None)).await;
            return;
        }
    };
    let mut pos = 0;
    if let Some(t) = tail {
        let len = f.metadata().await.map(|m| m.len()).unwrap_or(0);
        pos = f
            .seek(std::io::SeekFrom::Start(len.saturating_sub(t)))
            .await
            .unwrap_or(0);
    }
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        if cancel.load(Ordering::Relaxed) {
            return;
        }
        match f.read(&mut buf).await {
            Ok(0) => {
                if !follow {
                    let _ = up.send(end(None)).await;
                    return;
                }
                smol::Timer::after(Duration::from_millis(200)).await;
                // Rotated (the ring moved on): reopen from the start of the new file.
                let len = async_fs::metadata(&path)
                    .await
                    .map(|m| m.len())
                    .unwrap_or(0);
                if len < pos
                    && let Some(nf) = async_fs_open(&path).await
                {
                    f = nf;
                    pos = 0;
                }
            }
            Ok(n) => {
                pos += n as u64;
                if up
                    .send(NodeUp::Log(LogChunk {
                        request,
                        data: buf[..n].to_vec(),
                    }))
                    .await
                    .is_err()
                {
                    return;
                }
            }
            Err(e) => {
                let _ = up
                    .send(end(Some(format!("reading {}: {e}", path.display()))))
                    .await;
                return;
            }
        }
    }
}

use smol::fs as async_fs;

async fn async_fs_open(p: &std::path::Path) -> Option<async_fs::File> {
    async_fs::File::open(p).await.ok()
}

#[cfg(test)]
mod network_tests {
    use super::*;

    fn subnet(node: &str, cidr: &str, via: &str) -> PodSubnet {
        PodSubnet {
            node: node.into(),
            cidr: cidr.into(),
            via: via.into(),
        }
    }

    #[test]
    fn own_subnet_and_routes_only_via_real_neighbours() {
        let all = [
            subnet("a", "10.42.0.0/24", "192.0.2.11"),
            subnet("b", "10.42.1.0/24", "192.0.2.12"),
            subnet("c", "10.42.2.0/24", "127.0.0.1"),
            subnet("d", "10.42.3.0/24", "192.0.2.11"),
            subnet("e", "10.42.4.0/24", "::1"),
        ];
        let (own, routes) = split_network("a", &all);
        assert_eq!(own.as_deref(), Some("10.42.0.0/24"));
        // Not via loopback, not via this node's own address, IPv4 only.
        assert_eq!(
            routes,
            [("10.42.1.0/24".to_string(), "192.0.2.12".to_string())]
        );
        let (own, routes) = split_network("zz", &all[..2]);
        assert_eq!(own, None);
        assert_eq!(routes.len(), 2);
    }
}

#[cfg(test)]
mod loop_tests;
