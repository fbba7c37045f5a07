//! The pod runtime: cgroups, namespaces, pod init, restarts; all syscalls go through `crate::sys`.
//!
//! # Design
//! One **pod init** per pod ([`init`]) is PID 1 of the pod's PID namespace (a `host_pid` pod has
//! none: its init is a child subreaper in the host's). It runs all the pod's
//! processes, reaps zombies, forwards SIGTERM/SIGINT, writes their logs into size-capped ring
//! files ([`log`]) and applies the restart policy with exponential backoff itself. It reports
//! through the pod's *state directory* (`<state_dir>/<key>/`, meant to live on tmpfs such as
//! `/run/bramble/pods`, paths in [`crate::persist::PodDir`]): `status` (postcard [`PodStatus`],
//! replaced atomically), `events` (a fifo that gets a byte per change), `init` (init PID, start
//! ticks, start time), `config` (what the init runs); the files are versioned
//! ([`crate::persist`]), and a status of any earlier version is read, since inits started by an
//! older build keep running across an agent upgrade. Everything survives a worker restart: [`LinuxRuntime::adopt_existing`] finds the
//! pods again from their cgroups and state directories without restarting them.
//!
//! Cgroups ([`cgroup`]): `<parent>/<key>` with the pod's limits (the sum of its processes' limits
//! when every process sets one), the leaf `_init` for the init and the processes without limits of
//! their own, and `p-<name>` leaves for processes with their own limits (multi-process pods).
//!
//! # Threading and async
//! The API is **blocking, with short calls**: [`LinuxRuntime::start_pod`] takes a few
//! milliseconds, [`PodHandle::status`] reads one small file. Only [`PodHandle::stop`] blocks for
//! up to the grace period: an async caller runs it in `smol::unblock`. To learn about changes
//! without polling, await [`PodHandle::changed`] (smol-compatible: it waits on the `events` fifo
//! and the init's pidfd), or register [`PodHandle::events_fd`] and [`PodHandle::exit_fd`] with
//! the event loop.
//!
//! # Example
//! ```no_run
//! use bramble_worker::runtime::{LinuxRuntime, RuntimeConfig};
//! # fn pod() -> bramble_wire::objects::Pod { Default::default() }
//! let rt = LinuxRuntime::new(RuntimeConfig::default())?;
//! for problem in &rt.preflight().problems {
//!     eprintln!("preflight: {problem}");
//! }
//! let mut handles = rt.adopt_existing()?; // pods that survived an agent restart
//! let mut h = rt.start_pod(&pod(), "/var/log/bramble".as_ref())?;
//! let status = h.status();
//! let final_status = h.stop(std::time::Duration::from_secs(10))?;
//! # Ok::<(), bramble_worker::runtime::RuntimeError>(())
//! ```

pub mod cgroup;
pub mod devices;
pub mod exec;
pub mod image_config;
pub mod init;
pub mod log;
pub mod probe;
pub mod restart;
pub mod seccomp;
pub mod security;
pub mod volumes;

use std::fmt;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bramble_wire::objects::{
    ExitReason, NetworkMode, Pod, PodPhase, PodStatus, ProcessSpec, ProcessState, ProcessStatus,
    Resources, VolumeSource,
};

use crate::persist::{self, PodDir};
use crate::sys::SysError;
use crate::sys::process as sysproc;
use crate::sys::spawn::{self, Exec, Namespaces};
use cgroup::{AnyCgroupManager, CgroupBase, CgroupError, CgroupManager, Preflight};
use init::{INIT_ARG, InitConfig, InitProcess};

pub use exec::run_if_requested as run_exec_if_requested;
pub use init::run_if_requested as run_init_if_requested;

/// `PATH` for processes that do not set one.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Errors of the runtime: lowercase, with the path or the pod.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// A syscall failed.
    #[error(transparent)]
    Sys(#[from] SysError),
    /// A cgroup operation failed.
    #[error(transparent)]
    Cgroup(#[from] CgroupError),
    /// A file of the state or log directory.
    #[error("{op} {path:?}: {err}")]
    Io {
        /// What was done.
        op: &'static str,
        /// Where.
        path: PathBuf,
        /// The error.
        err: std::io::Error,
    },
    /// The pod is invalid for this runtime.
    #[error("invalid pod {pod}: {reason}")]
    InvalidPod {
        /// The pod.
        pod: String,
        /// Why.
        reason: String,
    },
    /// The pod is already running here.
    #[error("pod {0} is already running")]
    AlreadyRunning(String),
    /// Encoding the init configuration failed.
    #[error("encoding the init config of {pod}: {err}")]
    Encode {
        /// The pod.
        pod: String,
        /// The error.
        err: postcard::Error,
    },
    /// An isolated pod, but the node has no pod subnet yet.
    #[error(
        "pod {0} uses network = \"isolated\" but this node has no pod subnet yet: the master \
         assigns one when the node registers (if the master's log says its pod range is full, \
         restart it with a larger --cluster-cidr)"
    )]
    NoPodNetwork(String),
    /// Every address of the node's pod subnet is taken.
    #[error(
        "pod {pod}: every address of this node's pod subnet {cidr} is in use: restart the \
         master with a larger --node-cidr-size prefix range, or run fewer isolated pods here"
    )]
    PodSubnetFull {
        /// The pod.
        pod: String,
        /// The node's subnet.
        cidr: String,
    },
    /// The pod init did not exit after SIGKILL.
    #[error("pod {0}: init did not exit after its cgroup was killed")]
    StuckInit(String),
}

fn io<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> RuntimeError + 'a {
    move |err| RuntimeError::Io {
        op,
        path: path.to_owned(),
        err,
    }
}

/// Result of the runtime.
pub type Result<T> = std::result::Result<T, RuntimeError>;

/// Restart backoff: `initial`, doubling, capped at `max`; a run of `reset_after` resets it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// First delay.
    pub initial: Duration,
    /// Cap.
    pub max: Duration,
    /// A run at least this long resets the delay to `initial`.
    pub reset_after: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        // The one definition, shared with the controllers' replacement backoff.
        use bramble_wire::objects::{
            RESTART_BACKOFF_INITIAL_MS, RESTART_BACKOFF_MAX_MS, RESTART_BACKOFF_RESET_MS,
        };
        Backoff {
            initial: Duration::from_millis(RESTART_BACKOFF_INITIAL_MS),
            max: Duration::from_millis(RESTART_BACKOFF_MAX_MS),
            reset_after: Duration::from_millis(RESTART_BACKOFF_RESET_MS),
        }
    }
}

/// Configuration of the runtime.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// Per-pod state directories (tmpfs: `/run/bramble/pods`).
    pub state_dir: PathBuf,
    /// The binary that runs as pod init (`/proc/self/exe`: the worker itself).
    pub init_exe: PathBuf,
    /// Where the pods' cgroup parent sits.
    pub cgroup_base: CgroupBase,
    /// Name of the parent of all pod cgroups.
    pub cgroup_parent: String,
    /// Restart backoff.
    pub backoff: Backoff,
    /// Cap of each process log file (two files per process: `.log` and `.log.1`).
    pub log_cap_bytes: u64,
    /// Size of the `/tmp` tmpfs in pods with a rootfs.
    pub tmp_size_bytes: u64,
    /// Where image pods' writable layers live (`<dir>/<key>/upper` and `work`, on the state
    /// disk), removed with the pod; `None`: in the pod's state directory (`<key>/rw`).
    pub pod_roots_dir: Option<PathBuf>,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            state_dir: "/run/bramble/pods".into(),
            init_exe: "/proc/self/exe".into(),
            cgroup_base: CgroupBase::Root,
            cgroup_parent: "bramble".into(),
            backoff: Backoff::default(),
            log_cap_bytes: 1 << 20,
            tmp_size_bytes: 64 << 20,
            pod_roots_dir: None,
        }
    }
}

/// A pod as this node runs it: the wire pod exactly as assigned (never modified) and what the
/// node resolved for it. The runtime reads processes, limits and volumes from `pod`, but the root
/// filesystem from `rootfs` and each process's environment from [`PodToRun::env_of`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodToRun {
    /// The pod as assigned.
    pub pod: Pod,
    /// The root filesystem directory (the spec's own directory, or the tree of its unpacked
    /// artifact); `None`: the host's.
    pub rootfs: Option<String>,
    /// Variables every process gets after its own (service discovery), unless it sets them.
    pub extra_env: Vec<(String, String)>,
    /// The `/etc/resolv.conf` of a pod with its own network (the cluster DNS); `None`: the
    /// node's.
    pub resolv_conf: Option<String>,
    /// The pod's image, if it has one.
    pub image: Option<PodImage>,
}

/// What a pod with an `image` runs from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodImage {
    /// The reference as the pod wrote it (for messages).
    pub reference: String,
    /// The image config's defaults ([`image_config::resolve_process`]).
    pub config: bramble_wire::objects::ImageConfig,
    /// With overlayfs: the directory holding the unpacked layers and their names in it, top
    /// first (the overlay's lowers); the pod gets a writable upper of its own. `None`:
    /// [`PodToRun::rootfs`] is the image's flattened tree, shared read-only.
    pub overlay: Option<(PathBuf, Vec<String>)>,
}

impl PodToRun {
    /// `pod` as it is: its own `rootfs` directory, no extra variables.
    pub fn new(pod: Pod) -> PodToRun {
        PodToRun {
            rootfs: pod.spec.rootfs.clone(),
            pod,
            extra_env: Vec::new(),
            resolv_conf: None,
            image: None,
        }
    }

    /// Process `p` as it runs: `args` folded into `command`, the image's defaults applied.
    pub fn resolve_process(
        &self,
        p: &bramble_wire::objects::ProcessSpec,
    ) -> std::result::Result<bramble_wire::objects::ProcessSpec, String> {
        image_config::resolve_process(
            p,
            self.image
                .as_ref()
                .map(|i| (i.reference.as_str(), &i.config)),
        )
    }

    /// The environment of process `p`: its own, then the extra variables it does not set.
    pub fn env_of(&self, p: &bramble_wire::objects::ProcessSpec) -> Vec<(String, String)> {
        let mut env = p.env.clone();
        for (k, v) in &self.extra_env {
            if !p.env.iter().any(|(x, _)| x == k) {
                env.push((k.clone(), v.clone()));
            }
        }
        env
    }
}

/// Whether process `p` of `pod` has a cgroup leaf of its own (`<pod>/p-<name>`): it sets
/// limits and the pod has other processes. The others share the `_init` leaf.
pub fn own_cgroup(pod: &Pod, p: &bramble_wire::objects::ProcessSpec) -> bool {
    p.resources != Resources::default() && pod.spec.processes.len() > 1
}

/// A pod's key on this node: `<namespace>_<name>_<uid prefix>`, the name of its cgroup, state
/// directory and log directory. Names are DNS labels, so `_` separates unambiguously.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PodKey {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// The first 8 characters of the pod's uid.
    pub uid_prefix: String,
}

/// The device allow-list of a pod's cgroup: containerd's default set, or none (host devices)
/// for a `privileged` pod. Per-pod device grants are added here.
pub fn device_rules(privileged: bool) -> Option<devices::DeviceRules> {
    (!privileged).then(devices::DeviceRules::containerd_default)
}

/// The last non-empty line of `text`, at most 300 characters (a status message, not a log).
fn last_line(text: &str) -> Option<String> {
    let line = text.lines().rev().map(str::trim).find(|l| !l.is_empty())?;
    Some(line.chars().take(300).collect())
}

fn valid_part(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && s != "."
        && s != ".."
}

impl PodKey {
    /// The key of `pod`, if its names are usable as path components.
    pub fn of(pod: &Pod) -> Result<PodKey> {
        let ns = if pod.meta.namespace.is_empty() {
            "default"
        } else {
            &pod.meta.namespace
        };
        let uid: String = pod
            .meta
            .uid
            .chars()
            .filter(|c| c.is_ascii_alphanumeric())
            .take(8)
            .collect();
        let uid = if uid.is_empty() {
            "0".to_owned()
        } else {
            uid.to_ascii_lowercase()
        };
        let key = PodKey {
            namespace: ns.into(),
            name: pod.meta.name.clone(),
            uid_prefix: uid,
        };
        if !valid_part(&key.namespace) || !valid_part(&key.name) {
            return Err(RuntimeError::InvalidPod {
                pod: format!("{}/{}", key.namespace, key.name),
                reason: "namespace and name must be DNS labels".into(),
            });
        }
        Ok(key)
    }

    /// Parses `<namespace>_<name>_<uid prefix>`.
    pub fn parse(s: &str) -> Option<PodKey> {
        let mut it = s.split('_');
        let (ns, name, uid) = (it.next()?, it.next()?, it.next()?);
        (it.next().is_none() && valid_part(ns) && valid_part(name) && !uid.is_empty()).then(|| {
            PodKey {
                namespace: ns.into(),
                name: name.into(),
                uid_prefix: uid.into(),
            }
        })
    }

    /// `<namespace>_<name>_<uid prefix>`: the pod's log directory under the log root (per UID:
    /// a re-created pod of the same name starts its own logs).
    pub fn log_dir_name(&self) -> String {
        self.to_string()
    }

    /// `<namespace>_<name>`: where agents before per-UID logs put a pod's logs (read for pods
    /// they started, which keep writing there).
    pub fn legacy_log_dir_name(&self) -> String {
        format!("{}_{}", self.namespace, self.name)
    }
}

impl fmt::Display for PodKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}_{}_{}", self.namespace, self.name, self.uid_prefix)
    }
}

/// The node's pod subnet and bridge, for `network = "isolated"` pods.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodNetwork {
    /// The bridge the pods' veth pairs join (`bramble0`).
    pub bridge: String,
    /// The subnet's network address.
    pub network: std::net::Ipv4Addr,
    /// Its prefix length.
    pub prefix: u8,
}

impl PodNetwork {
    /// `cidr` like `10.42.3.0/24` (at most /30); `None` if it is not one.
    pub fn parse(bridge: &str, cidr: &str) -> Option<PodNetwork> {
        let c = bramble_wire::net::Ipv4Cidr::parse(cidr).ok()?;
        if !(1..=30).contains(&c.prefix()) {
            return None;
        }
        Some(PodNetwork {
            bridge: bridge.to_string(),
            network: c.network(),
            prefix: c.prefix(),
        })
    }

    fn mask(prefix: u8) -> u32 {
        u32::MAX << (32 - prefix)
    }

    /// The subnet as `a.b.c.d/n`.
    pub fn cidr(&self) -> String {
        format!("{}/{}", self.network, self.prefix)
    }

    /// The bridge's address: the subnet's first.
    pub fn gateway(&self) -> std::net::Ipv4Addr {
        (u32::from(self.network) + 1).into()
    }

    /// Whether `ip` is in the subnet.
    pub fn contains(&self, ip: std::net::Ipv4Addr) -> bool {
        u32::from(ip) & Self::mask(self.prefix) == u32::from(self.network)
    }

    /// The pods' addresses: after the gateway, before the broadcast address.
    pub fn pod_addresses(&self) -> impl Iterator<Item = std::net::Ipv4Addr> {
        let first = u32::from(self.network) + 2;
        let broadcast = u32::from(self.network) | !Self::mask(self.prefix);
        (first..broadcast).map(std::net::Ipv4Addr::from)
    }
}

#[derive(Debug, Default)]
struct NetState {
    net: Option<PodNetwork>,
    /// The bridge is set up for `net` (done at the first isolated pod).
    bridge_ready: bool,
}

/// The Linux runtime: namespaces + cgroups + the pod init.
#[derive(Debug)]
pub struct LinuxRuntime {
    cfg: RuntimeConfig,
    cgroups: Arc<AnyCgroupManager>,
    preflight: Preflight,
    net: std::sync::Mutex<NetState>,
    /// Held while an isolated pod picks its address (starts run on several threads).
    ip_lock: std::sync::Mutex<()>,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Limits of the pod cgroup: per resource, the sum if every process sets it, else none.
fn pod_limits(pod: &Pod) -> Resources {
    let ps = &pod.spec.processes;
    let all = |f: fn(&Resources) -> bool| !ps.is_empty() && ps.iter().all(|p| f(&p.resources));
    let total = pod.spec.total_resources();
    Resources {
        cpu_millis: total.cpu_millis.filter(|_| all(|r| r.cpu_millis.is_some())),
        memory_bytes: total
            .memory_bytes
            .filter(|_| all(|r| r.memory_bytes.is_some())),
        pids: total.pids.filter(|_| all(|r| r.pids.is_some())),
    }
}

/// Removes what a failed start created.
#[derive(Debug)]
struct StartGuard {
    cgroups: Arc<AnyCgroupManager>,
    rel: String,
    state: PathBuf,
    writable: PathBuf,
    armed: bool,
}

impl Drop for StartGuard {
    fn drop(&mut self) {
        if self.armed {
            let cg = self.cgroups.as_dyn();
            let _ = cg.kill_all(&self.rel);
            let _ = cg.remove(&self.rel);
            let _ = std::fs::remove_dir_all(&self.state);
            let _ = std::fs::remove_dir_all(&self.writable);
        }
    }
}

/// A pod between the clone of its init and its release: phase one of a start (see
/// [`LinuxRuntime::start_pods`]). Dropping it kills the paused init and removes what was made.
#[derive(Debug)]
struct Prepared {
    key: PodKey,
    rel: String,
    init_rel: String,
    state: PathBuf,
    pod_dir: PodDir,
    names: Vec<String>,
    isolated: Option<(PodNetwork, std::net::Ipv4Addr)>,
    // Before `guard`: the paused init is killed before its cgroups are removed.
    paused: spawn::Paused,
    guard: StartGuard,
}

/// How many threads [`LinuxRuntime::start_pods`] prepares and releases pods on.
pub const START_THREADS: usize = 4;

/// `f` over `items` on up to `threads` scoped threads; results in the order of `items`.
fn par_map<T: Send, R: Send>(items: Vec<T>, threads: usize, f: impl Fn(T) -> R + Sync) -> Vec<R> {
    let n = items.len();
    if n <= 1 || threads <= 1 {
        return items.into_iter().map(f).collect();
    }
    let queue = std::sync::Mutex::new(items.into_iter().enumerate());
    let out = std::sync::Mutex::new((0..n).map(|_| None).collect::<Vec<Option<R>>>());
    std::thread::scope(|s| {
        for _ in 0..threads.min(n) {
            s.spawn(|| {
                loop {
                    let next = queue.lock().unwrap_or_else(|e| e.into_inner()).next();
                    let Some((i, item)) = next else { break };
                    let r = f(item);
                    out.lock().unwrap_or_else(|e| e.into_inner())[i] = Some(r);
                }
            });
        }
    });
    out.into_inner()
        .unwrap_or_else(|e| e.into_inner())
        .into_iter()
        .map(|r| r.expect("every item mapped"))
        .collect()
}

impl LinuxRuntime {
    /// Detects cgroups (preflight) and prepares the state directory.
    pub fn new(cfg: RuntimeConfig) -> Result<LinuxRuntime> {
        let (cgroups, preflight) = cgroup::detect(cfg.cgroup_base);
        Self::with_cgroups(cfg, cgroups, preflight)
    }

    /// A runtime over the given cgroup manager (tests and benches: a cgroup v2 tree on a v1
    /// host).
    pub fn with_cgroups(
        cfg: RuntimeConfig,
        cgroups: AnyCgroupManager,
        preflight: Preflight,
    ) -> Result<LinuxRuntime> {
        std::fs::create_dir_all(&cfg.state_dir).map_err(io("mkdir", &cfg.state_dir))?;
        Ok(LinuxRuntime {
            cfg,
            cgroups: Arc::new(cgroups),
            preflight,
            net: Default::default(),
            ip_lock: Default::default(),
        })
    }

    /// Sets the node's pod subnet (from the master). Pods already running keep their address.
    pub fn set_pod_network(&self, net: Option<PodNetwork>) {
        let mut s = self.net.lock().unwrap_or_else(|e| e.into_inner());
        if s.net != net {
            s.net = net;
            s.bridge_ready = false;
        }
    }

    /// The node's pod subnet, if the master gave one.
    pub fn pod_network(&self) -> Option<PodNetwork> {
        self.net
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .net
            .clone()
    }

    /// The bridge for the current subnet, set up at the first isolated pod.
    fn ready_bridge(&self, pod: &PodKey) -> Result<PodNetwork> {
        let mut s = self.net.lock().unwrap_or_else(|e| e.into_inner());
        let net = s
            .net
            .clone()
            .ok_or_else(|| RuntimeError::NoPodNetwork(pod.to_string()))?;
        if !s.bridge_ready {
            crate::sys::podnet::ensure_bridge(&net.bridge, net.gateway(), net.prefix)?;
            s.bridge_ready = true;
        }
        Ok(net)
    }

    /// The lowest address of `net` that no pod of this node holds (pods' `ip` files).
    fn free_address(&self, net: &PodNetwork, pod: &PodKey) -> Result<std::net::Ipv4Addr> {
        let used: std::collections::HashSet<std::net::Ipv4Addr> =
            std::fs::read_dir(&self.cfg.state_dir)
                .map_err(io("read dir", &self.cfg.state_dir))?
                .flatten()
                .filter_map(|e| PodDir::at(e.path()).read_ip())
                .filter_map(|s| s.parse().ok())
                .collect();
        net.pod_addresses()
            .find(|a| !used.contains(a))
            .ok_or_else(|| RuntimeError::PodSubnetFull {
                pod: pod.to_string(),
                cidr: net.cidr(),
            })
    }

    /// What preflight found: version, controllers, problems with their fixes.
    pub fn preflight(&self) -> &Preflight {
        &self.preflight
    }

    /// The cgroup manager.
    pub fn cgroups(&self) -> &dyn CgroupManager {
        self.cgroups.as_dyn()
    }

    /// The configuration.
    pub fn config(&self) -> &RuntimeConfig {
        &self.cfg
    }

    /// The pod's cgroup as its init needs it for its cgroup namespace; `None` without cgroups.
    fn pod_cgroup(&self, rel: &str, init_rel: &str) -> Option<init::PodCgroup> {
        let s = |p: PathBuf| p.to_string_lossy().into_owned();
        let v1_hierarchies = match &*self.cgroups {
            AnyCgroupManager::None(_) => return None,
            AnyCgroupManager::V1(m) => m
                .hierarchies()
                .iter()
                .map(|h| h.controllers.join(","))
                .collect(),
            AnyCgroupManager::V2(_) => Vec::new(),
        };
        let cg = self.cgroups.as_dyn();
        Some(init::PodCgroup {
            pod_procs: cg.procs_files(rel).into_iter().map(s).collect(),
            leaf_procs: cg.procs_files(init_rel).into_iter().map(s).collect(),
            v1_hierarchies,
        })
    }

    fn rel(&self, key: &PodKey) -> String {
        format!("{}/{}", self.cfg.cgroup_parent, key)
    }

    /// Starts `pod`: cgroups (with the device allow-list), state directory, the pod init in new namespaces (inside its cgroup
    /// before it execs), which starts the processes. Logs go to `<log_dir>/<ns>_<name>/`.
    pub fn start_pod(&self, pod: &Pod, log_dir: &Path) -> Result<PodHandle> {
        self.start_pod_with(&PodToRun::new(pod.clone()), log_dir, None)
    }

    /// [`LinuxRuntime::start_pod`] with the pod's config map and secret volumes and `env_from`
    /// file, prepared by [`volumes::ConfigVolumes::write_pod`].
    pub fn start_pod_with(
        &self,
        run: &PodToRun,
        log_dir: &Path,
        config: Option<&volumes::PodConfigDirs>,
    ) -> Result<PodHandle> {
        let mut p = self.prepare(run, log_dir, config)?;
        self.join(&mut p)?;
        self.finish(p)
    }

    /// Starts several pods at once, in three phases: prepare each (cgroups, state directory,
    /// the init cloned and paused) on up to [`START_THREADS`] threads; move every paused init
    /// into its cgroup back to back; release each. On cgroup v1 the moves share one RCU grace
    /// period of the kernel's `cgroup_threadgroup_rwsem` instead of paying one per pod; on v2 the
    /// inits are born in their cgroups (`clone3`) and the middle phase does nothing. Results are
    /// in the order of `pods`; a failed pod leaves nothing behind.
    pub fn start_pods(
        &self,
        pods: &[(&PodToRun, Option<&volumes::PodConfigDirs>)],
        log_dir: &Path,
    ) -> Vec<Result<PodHandle>> {
        let prepared = par_map(pods.to_vec(), START_THREADS, |(run, config)| {
            self.prepare(run, log_dir, config)
        });
        let joined: Vec<Result<Prepared>> = prepared
            .into_iter()
            .map(|p| {
                let mut p = p?;
                self.join(&mut p)?;
                Ok(p)
            })
            .collect();
        par_map(joined, START_THREADS, |p| p.and_then(|p| self.finish(p)))
    }

    /// Where pod `key`'s writable root layer lives.
    fn writable_dir(&self, key: &PodKey) -> PathBuf {
        match &self.cfg.pod_roots_dir {
            Some(d) => d.join(key.to_string()),
            None => self.cfg.state_dir.join(key.to_string()).join("rw"),
        }
    }

    /// Phase one of a start: everything up to the paused init (born in its cgroup on v2).
    fn prepare(
        &self,
        run: &PodToRun,
        log_dir: &Path,
        config: Option<&volumes::PodConfigDirs>,
    ) -> Result<Prepared> {
        let pod = &run.pod;
        let key = PodKey::of(pod)?;
        let invalid = |reason: &str| RuntimeError::InvalidPod {
            pod: key.to_string(),
            reason: reason.into(),
        };
        if pod.spec.processes.is_empty() {
            return Err(invalid("no processes"));
        }
        for p in &pod.spec.processes {
            if !valid_part(&p.name)
                || pod
                    .spec
                    .processes
                    .iter()
                    .filter(|q| q.name == p.name)
                    .count()
                    > 1
            {
                return Err(invalid("process names must be unique DNS labels"));
            }
        }
        let pod_dir = PodDir::new(&self.cfg.state_dir, &key.to_string());
        let state = pod_dir.path().to_path_buf();
        if state.exists() {
            return Err(RuntimeError::AlreadyRunning(key.to_string()));
        }
        let rel = self.rel(&key);
        let cg = self.cgroups.as_dyn();
        let writable = self.writable_dir(&key);
        let guard = StartGuard {
            cgroups: Arc::clone(&self.cgroups),
            rel: rel.clone(),
            state: state.clone(),
            writable: writable.clone(),
            armed: true,
        };
        std::fs::create_dir_all(&state).map_err(io("mkdir", &state))?;
        let pod_log = log_dir.join(key.log_dir_name());
        std::fs::create_dir_all(&pod_log).map_err(io("mkdir", &pod_log))?;

        cg.create(&rel, &pod_limits(pod))?;
        if let Some(rules) = device_rules(pod.spec.privileged) {
            cg.restrict_devices(&rel, &rules)?;
        }
        let init_rel = format!("{rel}/_init");
        cg.create(&init_rel, &Resources::default())?;
        let mut processes = Vec::new();
        for p in &pod.spec.processes {
            let own = own_cgroup(pod, p);
            let leaf = if own {
                format!("{rel}/p-{}", p.name)
            } else {
                init_rel.clone()
            };
            if own {
                cg.create(&leaf, &p.resources)?;
            }
            let s = |p: PathBuf| p.to_string_lossy().into_owned();
            let spec = run.resolve_process(p).map_err(|e| invalid(&e))?;
            processes.push(InitProcess {
                spec: ProcessSpec {
                    env: run.env_of(&spec),
                    ..spec
                },
                // Processes sharing the init's leaf inherit it through fork: joining it again
                // would cost a cgroup migration (an RCU grace period on v1) per start.
                cgroup_procs: if own {
                    cg.procs_files(&leaf).into_iter().map(s).collect()
                } else {
                    Vec::new()
                },
                oom_file: cg.oom_file(&leaf).map(s),
            });
        }
        let empty_dirs = pod_dir.volumes();
        for v in &pod.spec.volumes {
            if !valid_part(&v.name) {
                return Err(invalid("volume names must be DNS labels"));
            }
            if v.source == VolumeSource::EmptyDir {
                let d = empty_dirs.join(&v.name);
                std::fs::create_dir_all(&d).map_err(io("mkdir", &d))?;
            }
        }
        // An isolated pod's address, held by its `ip` file (freed with the state directory).
        let isolated = if pod.spec.network == NetworkMode::Isolated {
            let net = self.ready_bridge(&key)?;
            let _picking = self.ip_lock.lock().unwrap_or_else(|e| e.into_inner());
            let ip = self.free_address(&net, &key)?;
            pod_dir.write_ip(ip).map_err(io("write", &pod_dir.ip()))?;
            Some((net, ip))
        } else {
            None
        };
        // An image root: overlayfs of the layers with a writable upper of the pod's own.
        let (rootfs, overlay) = match run.image.as_ref().and_then(|i| i.overlay.as_ref()) {
            Some((base, lowers)) => {
                let upper = writable.join("upper");
                let work = writable.join("work");
                let _ = std::fs::remove_dir_all(&writable);
                // On a tmpfs the init mounts on `writable` (in the pod's mount namespace), it
                // makes them itself.
                let tmpfs_size = pod.spec.ephemeral_storage.tmpfs_size();
                let dirs = if tmpfs_size.is_some() {
                    vec![&writable]
                } else {
                    vec![&upper, &work]
                };
                for d in dirs {
                    std::fs::create_dir_all(d).map_err(io("mkdir", d))?;
                }
                let root = init::new_root_dir(&pod_dir);
                std::fs::create_dir_all(&root).map_err(io("mkdir", &root))?;
                let s = |p: &Path| p.to_string_lossy().into_owned();
                (
                    Some(s(&root)),
                    Some(init::OverlayRoot {
                        lower_base: s(base),
                        lowers: lowers.clone(),
                        upper: s(&upper),
                        work: s(&work),
                        tmpfs_size,
                    }),
                )
            }
            None => (run.rootfs.clone(), None),
        };
        let b = &self.cfg.backoff;
        let icfg = InitConfig {
            hostname: pod.meta.name.clone(),
            processes,
            restart_policy: pod.spec.restart_policy,
            rootfs,
            overlay,
            private_network: pod.spec.network != NetworkMode::Host,
            volumes: pod.spec.volumes.clone(),
            empty_dir_base: empty_dirs.to_string_lossy().into_owned(),
            backoff_initial_ms: b.initial.as_millis() as u64,
            backoff_max_ms: b.max.as_millis() as u64,
            backoff_reset_ms: b.reset_after.as_millis() as u64,
            log_dir: pod_log.to_string_lossy().into_owned(),
            log_cap: self.cfg.log_cap_bytes,
            tmp_size: self.cfg.tmp_size_bytes,
            termination_grace_ms: u64::from(pod.spec.termination_grace_ms),
            config_volume_base: config.map_or_else(String::new, |c| {
                c.config_base.to_string_lossy().into_owned()
            }),
            secret_volume_base: config.map_or_else(String::new, |c| {
                c.secret_base.to_string_lossy().into_owned()
            }),
            env_file: config
                .and_then(|c| c.env_file.as_ref())
                .map(|f| f.to_string_lossy().into_owned()),
            privileged: pod.spec.privileged,
            host_ipc: pod.spec.host_ipc,
            cgroup: self.pod_cgroup(&rel, &init_rel),
        };
        let payload = postcard::to_stdvec(&icfg).map_err(|err| RuntimeError::Encode {
            pod: key.to_string(),
            err,
        })?;
        let config_path = pod_dir.config();
        persist::write_file_volatile(
            &config_path,
            &persist::encode(persist::POD_CONFIG, &payload),
            0o644,
        )
        .map_err(io("write", &config_path))?;
        sysproc::mkfifo(&pod_dir.events())?;
        if let Some(resolv) = run
            .resolv_conf
            .as_deref()
            .filter(|_| pod.spec.network != NetworkMode::Host)
        {
            let path = pod_dir.resolv_conf();
            persist::write_file_volatile(&path, resolv.as_bytes(), 0o644)
                .map_err(io("write", &path))?;
        }

        let init_log_path = pod_dir.init_log();
        let init_log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&init_log_path)
            .map_err(io("open", &init_log_path))?;
        let devnull = sysproc::open_read(Path::new("/dev/null"))?;
        let state_s = state.to_string_lossy().into_owned();
        let exe = self.cfg.init_exe.to_string_lossy().into_owned();
        let exec = Exec::new(&self.cfg.init_exe, &[exe.as_str(), INIT_ARG, &state_s], &[])?;
        let ns = Namespaces {
            net: pod.spec.network != NetworkMode::Host,
            host_pid: pod.spec.host_pid,
            host_ipc: pod.spec.host_ipc,
        };
        // cgroup v2: the init is born in its leaf (no migration afterwards).
        let into = match cg.clone_into_dir(&init_rel) {
            Some(dir) => Some(sysproc::open_dir(&dir)?),
            None => None,
        };
        let paused = spawn::clone_paused_into(
            &exec,
            ns,
            [devnull.as_fd(), init_log.as_fd(), init_log.as_fd()],
            into.as_ref().map(|d| d.as_fd()),
        )?;
        Ok(Prepared {
            key,
            rel,
            init_rel,
            state,
            pod_dir,
            names: pod.spec.processes.iter().map(|p| p.name.clone()).collect(),
            isolated,
            paused,
            guard,
        })
    }

    /// Phase two: the paused init joins its cgroup (unless it was born there).
    fn join(&self, p: &mut Prepared) -> Result<()> {
        if !p.paused.in_cgroup() {
            self.cgroups.as_dyn().add_pid(&p.init_rel, p.paused.pid())?;
        }
        Ok(())
    }

    /// Phase three: the pod network, the state files, then the init runs.
    fn finish(&self, p: Prepared) -> Result<PodHandle> {
        let Prepared {
            key,
            rel,
            state,
            pod_dir,
            names,
            isolated,
            paused,
            mut guard,
            ..
        } = p;
        let pid = paused.pid();
        if let Some((net, ip)) = &isolated {
            // Before the init runs: its processes start with their network in place.
            crate::sys::podnet::attach(
                pid,
                &net.bridge,
                &format!("bp{pid}"),
                *ip,
                net.prefix,
                net.gateway(),
            )?;
        }
        let pidfd = sysproc::pidfd_open(pid)?;
        let started_ms = now_ms();
        let ticks = sysproc::start_ticks(pid).unwrap_or(0);
        pod_dir
            .write_init(pid, ticks, started_ms)
            .map_err(io("write", &pod_dir.init()))?;
        let events = sysproc::open_fifo_read(&pod_dir.events())?;
        paused.release()?;
        guard.armed = false;
        Ok(PodHandle {
            key,
            rel,
            state,
            writable: guard.writable.clone(),
            init_pid: pid,
            started_ms,
            child: true,
            pidfd: Some(pidfd),
            events: Some(events),
            cgroups: Arc::clone(&self.cgroups),
            names,
            ip: isolated.map(|(_, ip)| ip.to_string()).unwrap_or_default(),
            cache: Default::default(),
        })
    }

    /// Finds the pods that are still here after an agent restart: every state directory (its
    /// init still running, or finished with a final status) becomes a handle; cgroups under the
    /// parent without a state directory are orphans: killed and removed.
    pub fn adopt_existing(&self) -> Result<Vec<PodHandle>> {
        let mut out = Vec::new();
        let rd =
            std::fs::read_dir(&self.cfg.state_dir).map_err(io("read dir", &self.cfg.state_dir))?;
        for e in rd.flatten() {
            let Some(key) = e.file_name().to_str().and_then(PodKey::parse) else {
                continue;
            };
            let pod_dir = PodDir::at(e.path());
            let state = e.path();
            let (pid, ticks, started_ms) = pod_dir.read_init().unwrap_or((0, 0, 0));
            let alive = pid > 0 && sysproc::start_ticks(pid) == Some(ticks);
            let pidfd = if alive {
                sysproc::pidfd_open(pid).ok()
            } else {
                None
            };
            let events = sysproc::open_fifo_read(&pod_dir.events()).ok();
            let names =
                persist::read_postcard::<InitConfig>(persist::POD_CONFIG, &pod_dir.config())
                    .ok()
                    .flatten()
                    .map(|(_, c)| c.processes.into_iter().map(|p| p.spec.name).collect())
                    .unwrap_or_default();
            let ip = pod_dir.read_ip().unwrap_or_default();
            out.push(PodHandle {
                ip,
                names,
                writable: self.writable_dir(&key),
                rel: self.rel(&key),
                key,
                state,
                init_pid: if alive { pid } else { 0 },
                started_ms,
                child: false,
                pidfd,
                events,
                cgroups: Arc::clone(&self.cgroups),
                cache: Default::default(),
            });
        }
        // Writable roots of pods that are gone (the run dir is a tmpfs: after a reboot).
        if let Some(Ok(rd)) = self.cfg.pod_roots_dir.as_ref().map(std::fs::read_dir) {
            for e in rd.flatten() {
                let name = e.file_name();
                if !out.iter().any(|h| name == h.key.to_string().as_str()) {
                    tracing::info!(dir = %e.path().display(), "removing the writable root of a pod that is gone");
                    let _ = std::fs::remove_dir_all(e.path());
                }
            }
        }
        let cg = self.cgroups.as_dyn();
        for child in cg.children(&self.cfg.cgroup_parent) {
            if !out.iter().any(|h| h.key.to_string() == child) {
                let rel = format!("{}/{}", self.cfg.cgroup_parent, child);
                tracing::warn!(cgroup = %rel, "removing orphaned pod cgroup");
                cg.kill_all(&rel)?;
                cg.remove(&rel)?;
            }
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }
}

/// A running (or finished, not yet cleaned up) pod.
#[derive(Debug)]
pub struct PodHandle {
    key: PodKey,
    rel: String,
    state: PathBuf,
    /// The writable layer of an image root (`<pod_roots_dir>/<key>`), if any.
    writable: PathBuf,
    init_pid: i32,
    started_ms: u64,
    child: bool,
    pidfd: Option<OwnedFd>,
    events: Option<OwnedFd>,
    cgroups: Arc<AnyCgroupManager>,
    names: Vec<String>,
    /// The pod's own address (isolated pods), else empty.
    ip: String,
    /// The last status read and the host PIDs of its processes, so that asking again without a
    /// change reads nothing (no status file, no cgroup scan).
    cache: std::sync::Mutex<StatusCache>,
}

/// What [`PodHandle::status`] read last.
#[derive(Debug, Default)]
struct StatusCache {
    /// The last status (with host PIDs) and whether the init had exited then.
    last: Option<(PodStatus, bool)>,
    /// The `events` fifo had a byte since `last` was read.
    dirty: bool,
    /// The pod-namespace PIDs `pid_map` was built for, and their host PIDs.
    pids_for: Vec<u32>,
    pid_map: Vec<(i32, i32)>,
}

impl PodHandle {
    /// The pod's key.
    pub fn key(&self) -> &PodKey {
        &self.key
    }

    /// Host PID of the pod init (0 if it is gone).
    pub fn init_pid(&self) -> i32 {
        self.init_pid
    }

    /// The pod's state directory (its init's `config`, status and events).
    pub fn state_dir(&self) -> &Path {
        &self.state
    }

    /// When the pod init started, ms since the Unix epoch.
    pub fn started_ms(&self) -> u64 {
        self.started_ms
    }

    /// The pod's cgroup, relative to the cgroup base.
    pub fn cgroup(&self) -> &str {
        &self.rel
    }

    /// CPU time used by the pod so far, ns (0 without cgroups).
    pub fn cpu_usage_ns(&self) -> u64 {
        self.cgroups.as_dyn().cpu_usage_ns(&self.rel).unwrap_or(0)
    }

    /// Whether the pod init has exited.
    pub fn exited(&self) -> bool {
        match &self.pidfd {
            Some(fd) => {
                sysproc::poll_readable(&[fd.as_fd()], Some(Duration::ZERO)).map_or(true, |r| r[0])
            }
            None => true,
        }
    }

    /// Readable when the status changed (drain it with [`PodHandle::wait`] or `status`).
    pub fn events_fd(&self) -> Option<BorrowedFd<'_>> {
        self.events.as_ref().map(|f| f.as_fd())
    }

    /// Readable once the pod init exited (a pidfd).
    pub fn exit_fd(&self) -> Option<BorrowedFd<'_>> {
        self.pidfd.as_ref().map(|f| f.as_fd())
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, StatusCache> {
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Reads what the `events` fifo holds; a byte means the status file changed.
    fn drain_events(&self) {
        if let Some(fd) = &self.events {
            let mut buf = [0u8; 256];
            let mut any = false;
            while let Ok(sysproc::ReadOutcome::Data(_)) =
                sysproc::read_nonblocking(fd.as_fd(), &mut buf)
            {
                any = true;
            }
            if any {
                self.cache().dirty = true;
            }
        }
    }

    /// Blocks until the status may have changed, the init exited, or `timeout` passed.
    pub fn wait(&self, timeout: Option<Duration>) -> Result<()> {
        let fds: Vec<BorrowedFd<'_>> = self
            .events
            .iter()
            .chain(self.pidfd.iter())
            .map(|f| f.as_fd())
            .collect();
        if fds.is_empty() {
            std::thread::sleep(timeout.unwrap_or(Duration::from_millis(100)));
            return Ok(());
        }
        sysproc::poll_readable(&fds, timeout)?;
        self.drain_events();
        Ok(())
    }

    /// Waits (async, any executor with `async-io`, e.g. smol) until the status may have changed.
    pub async fn changed(&self) -> Result<()> {
        let dup = |fd: &OwnedFd| sysproc::dup(fd.as_fd());
        let ev = self.events.as_ref().map(dup).transpose()?;
        let px = self.pidfd.as_ref().map(dup).transpose()?;
        let wrap = |fd: Option<OwnedFd>| -> Result<Option<smol::Async<OwnedFd>>> {
            fd.map(smol::Async::new)
                .transpose()
                .map_err(|err| RuntimeError::Io {
                    op: "register",
                    path: "fd".into(),
                    err,
                })
        };
        let (ev, px) = (wrap(ev)?, wrap(px)?);
        let a = async {
            match &ev {
                Some(a) => a.readable().await,
                None => std::future::pending().await,
            }
        };
        let b = async {
            match &px {
                Some(a) => a.readable().await,
                None => std::future::pending().await,
            }
        };
        let _ = futures_lite::future::or(a, b).await;
        self.drain_events();
        Ok(())
    }

    /// The pod's status, from the init's status file. Running processes carry host PIDs. If the
    /// init died unexpectedly, the processes it reported running are reported killed.
    pub fn status(&self) -> PodStatus {
        self.drain_events();
        let exited = self.exited();
        {
            let mut c = self.cache();
            // Unchanged since the last read (the init writes the file before the fifo byte).
            if let Some((st, was_exited)) = &c.last
                && !c.dirty
                && *was_exited == exited
                && self.events.is_some()
            {
                return st.clone();
            }
            c.dirty = false;
        }
        let st = self.read_status(exited);
        self.cache().last = Some((st.clone(), exited));
        st
    }

    fn read_status(&self, exited: bool) -> PodStatus {
        // Any version: the init may be of an older build than this agent.
        let mut st: PodStatus = std::fs::read(self.state.join(PodDir::STATUS))
            .ok()
            .and_then(|b| persist::decode_postcard(persist::POD_STATUS, &b).ok())
            .map(|(_, st)| st)
            .unwrap_or_else(|| PodStatus {
                processes: self
                    .names
                    .iter()
                    .map(|n| ProcessStatus {
                        name: n.clone(),
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            });
        if exited && matches!(st.phase, PodPhase::Running | PodPhase::Pending) {
            // Processes that ran are reported killed; ones that never started (the init failed
            // while setting the pod up) stay Waiting, so the master tells a failed setup
            // (`FailedCreate`) from a crash.
            for p in &mut st.processes {
                if matches!(p.state, ProcessState::Running { .. }) {
                    let reason = ExitReason::Signaled(sysproc::Signal::KILL.number());
                    p.last_exit = Some(reason);
                    p.state = ProcessState::Terminated {
                        reason,
                        finished_ms: now_ms(),
                    };
                }
            }
            st.phase = PodPhase::Failed;
            // Why, if the init said so (its stderr is `init.log` in the pod's run dir).
            let why = std::fs::read(PodDir::at(&self.state).init_log())
                .ok()
                .and_then(|b| last_line(&String::from_utf8_lossy(&b)));
            // The init's own error is the reason (`bramble pod init: ` is its log prefix).
            st.message = match why {
                Some(w) => w
                    .strip_prefix("bramble pod init: ")
                    .map(str::to_string)
                    .unwrap_or(w),
                None => "pod init exited".into(),
            };
        }
        if !exited {
            self.translate_pids(&mut st);
        }
        st.ip = self.ip.clone();
        st
    }

    /// Maps the pod-namespace PIDs the init reports to host PIDs.
    /// The cgroup is scanned only when the set of running processes changed.
    fn translate_pids(&self, st: &mut PodStatus) {
        let running: Vec<u32> = st
            .processes
            .iter()
            .filter_map(|p| match p.state {
                ProcessState::Running { pid, .. } => Some(pid),
                _ => None,
            })
            .collect();
        let mut c = self.cache();
        if c.pids_for != running {
            let host = self.cgroups.as_dyn().pids(&self.rel).unwrap_or_default();
            c.pid_map = host
                .into_iter()
                .filter_map(|h| sysproc::ns_pids(h).and_then(|v| v.last().map(|&inner| (inner, h))))
                .collect();
            c.pids_for = running;
        }
        let map = &c.pid_map;
        for p in &mut st.processes {
            if let ProcessState::Running { pid, .. } = &mut p.state
                && let Some((_, h)) = map.iter().find(|(inner, _)| *inner == *pid as i32)
            {
                *pid = *h as u32;
            }
        }
    }

    fn wait_exit(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self.exited() {
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            if let Some(fd) = &self.pidfd {
                let _ = sysproc::poll_readable(&[fd.as_fd()], Some(left));
            }
        }
    }

    /// Stops the pod (SIGTERM to the init, which forwards it; after `grace`, SIGKILL to every
    /// task of the cgroup), then removes its cgroups and state directory (logs stay). Also the
    /// way to clean up a pod that ended by itself. Blocks up to `grace` plus a little.
    pub fn stop(&mut self, grace: Duration) -> Result<PodStatus> {
        if !self.exited() && self.init_pid > 0 {
            sysproc::kill(self.init_pid, sysproc::Signal::TERM)?;
            self.wait_exit(grace);
        }
        let cg = self.cgroups.as_dyn();
        if !self.exited() && self.init_pid > 0 {
            // Killing the init kills its whole PID namespace; the cgroup kill gets the rest.
            sysproc::kill(self.init_pid, sysproc::Signal::KILL)?;
        }
        cg.kill_all(&self.rel)?;
        if !self.wait_exit(Duration::from_secs(5)) {
            return Err(RuntimeError::StuckInit(self.key.to_string()));
        }
        if self.child && self.init_pid > 0 {
            let _ = sysproc::try_wait(self.init_pid);
        }
        let status = self.status();
        cg.remove(&self.rel)?;
        match std::fs::remove_dir_all(&self.writable) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(RuntimeError::Io {
                    op: "remove",
                    path: self.writable.clone(),
                    err: e,
                });
            }
        }
        match std::fs::remove_dir_all(&self.state) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(RuntimeError::Io {
                    op: "remove",
                    path: self.state.clone(),
                    err: e,
                });
            }
        }
        self.pidfd = None;
        self.events = None;
        self.init_pid = 0;
        Ok(status)
    }

    /// Stops tracking the pod without stopping it (as when the agent exits): a later
    /// [`LinuxRuntime::adopt_existing`] finds it again.
    pub fn detach(self) {}
}

#[cfg(test)]
mod start_tests {
    use super::par_map;

    #[test]
    fn par_map_keeps_order_and_maps_every_item() {
        let out = par_map((0..100).collect(), 4, |i: u32| i * 2);
        assert_eq!(out, (0..100).map(|i| i * 2).collect::<Vec<_>>());
        assert_eq!(par_map(vec![7], 4, |i: u32| i + 1), vec![8]);
        assert!(par_map(Vec::<u32>::new(), 4, |i| i).is_empty());
    }
}
