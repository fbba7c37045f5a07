//! The cluster's objects (feature `alloc`): what `bramble apply` sends, what the store keeps and
//! what workers are assigned. Validation of user input happens in the master; these are plain data.
//!
//! # Who owns which field (apply semantics)
//! `bramble apply` sends whole objects; the master merges each with the stored one, field by owner:
//! - **The user** owns `meta.name`, `meta.namespace`, `meta.labels` and the spec. Applying the
//!   same object again is `Unchanged` and writes nothing.
//! - **The store** owns `meta.uid`, `meta.created_ms` and `meta.revision`: given on the write
//!   path when the object is created, kept on every later apply. A non-zero `meta.revision` in an
//!   applied object is a precondition (the apply fails with `Conflict` if the object moved on).
//! - **The system** owns every `status` (nodes report pods' and their own; controllers write
//!   deployments', daemon sets' and jobs'), `meta.owners` of objects controllers create,
//!   [`PodSpec::node_name`] once the scheduler bound the pod (an apply without it keeps the
//!   binding), [`NodeSpec::pod_cidr`] (the master's to give) and a namespace's phase.
//! - **Immutable after creation**: the spec of a pod and of a job. Applying a different one is
//!   refused with the `bramble delete` to run first; deployments, daemon sets, services, config
//!   maps, secrets and nodes take a new spec in place.

use alloc::boxed::Box;
use alloc::collections::BTreeMap;
use alloc::string::String;
use alloc::vec::Vec;
use serde::{Deserialize, Serialize};

pub use crate::core_msg::{Arch, CgroupVersion, Controllers, ExitReason, NodeInfo, PodPhase};
pub use crate::security::{CapChanges, CapSet, IdRef, PodSecurity, SeccompProfile};

/// Labels: sorted key → value.
pub type Labels = BTreeMap<String, String>;

/// Kinds of object.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// Cluster-scoped namespace.
    Namespace,
    /// Cluster-scoped node.
    Node,
    /// Namespaced pod.
    Pod,
    /// Namespaced deployment (rolling updates over replica sets).
    Deployment,
    /// Namespaced replica set (owned by a deployment).
    ReplicaSet,
    /// Namespaced daemon set (one pod per matching node).
    DaemonSet,
    /// Namespaced job (run to completion).
    Job,
    /// Namespaced event (kept in the master's memory, not in the store).
    Event,
    /// Namespaced service: a stable port on every node for the pods its selector picks.
    Service,
    /// Namespaced endpoints of a service (computed by the master from ready pods; not stored).
    Endpoints,
    /// Namespaced configuration data, mounted as files or exposed as environment variables.
    ConfigMap,
    /// Namespaced secret data: like a config map, but never printed unless asked for, kept on
    /// nodes in memory (tmpfs) only.
    Secret,
    /// Cluster-scoped artifact: a content-addressed tarball per architecture (a pod's rootfs).
    Artifact,
    /// Cluster-scoped OCI/Docker image the master pulled or imported: its layers and config per
    /// architecture (a pod's `image`).
    Image,
    /// Cluster-scoped registry settings: a host's scheme, credentials, CA and mirror.
    Registry,
}

impl Kind {
    /// Every kind, in tag order.
    pub const ALL: [Kind; 15] = [
        Kind::Namespace,
        Kind::Node,
        Kind::Pod,
        Kind::Deployment,
        Kind::ReplicaSet,
        Kind::DaemonSet,
        Kind::Job,
        Kind::Event,
        Kind::Service,
        Kind::Endpoints,
        Kind::ConfigMap,
        Kind::Secret,
        Kind::Artifact,
        Kind::Image,
        Kind::Registry,
    ];

    /// Singular lowercase name, as in manifests (`[[pod]]`) and the CLI.
    pub const fn as_str(self) -> &'static str {
        match self {
            Kind::Namespace => "namespace",
            Kind::Node => "node",
            Kind::Pod => "pod",
            Kind::Deployment => "deployment",
            Kind::ReplicaSet => "replicaset",
            Kind::DaemonSet => "daemonset",
            Kind::Job => "job",
            Kind::Event => "event",
            Kind::Service => "service",
            Kind::Endpoints => "endpoints",
            Kind::ConfigMap => "configmap",
            Kind::Secret => "secret",
            Kind::Artifact => "artifact",
            Kind::Image => "image",
            Kind::Registry => "registry",
        }
    }

    /// Whether objects of this kind live in a namespace.
    pub const fn namespaced(self) -> bool {
        !matches!(
            self,
            Kind::Namespace | Kind::Node | Kind::Artifact | Kind::Image | Kind::Registry
        )
    }

    /// Parses singular, plural and short names (`pod`, `pods`, `po`, `no`, `ns`).
    pub fn parse(s: &str) -> Option<Kind> {
        Some(match s {
            "namespace" | "namespaces" | "ns" => Kind::Namespace,
            "node" | "nodes" | "no" => Kind::Node,
            "pod" | "pods" | "po" => Kind::Pod,
            "deployment" | "deployments" | "deploy" => Kind::Deployment,
            "replicaset" | "replicasets" | "rs" => Kind::ReplicaSet,
            "daemonset" | "daemonsets" | "ds" => Kind::DaemonSet,
            "job" | "jobs" => Kind::Job,
            "event" | "events" | "ev" => Kind::Event,
            "service" | "services" | "svc" => Kind::Service,
            "endpoints" | "endpoint" | "ep" => Kind::Endpoints,
            "configmap" | "configmaps" | "cm" => Kind::ConfigMap,
            "secret" | "secrets" => Kind::Secret,
            "artifact" | "artifacts" | "art" => Kind::Artifact,
            "image" | "images" | "img" => Kind::Image,
            "registry" | "registries" | "reg" => Kind::Registry,
            _ => return None,
        })
    }
}

/// Reference from an object to the object that owns it (for garbage collection).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Hash)]
pub struct OwnerRef {
    /// Kind of the owner.
    pub kind: Kind,
    /// Name of the owner (same namespace).
    pub name: String,
    /// UID of the owner.
    pub uid: String,
}

/// Metadata common to every object.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
pub struct Meta {
    /// DNS-1123 label.
    pub name: String,
    /// Namespace; empty for cluster-scoped kinds.
    pub namespace: String,
    /// Labels.
    pub labels: Labels,
    /// Unique id assigned by the master at creation.
    pub uid: String,
    /// Store revision of the object's last write (0 before it is stored). On apply, a non-zero
    /// value is an expected revision: the write fails with a conflict if the object changed.
    pub revision: u64,
    /// Creation time, milliseconds since the Unix epoch, set by the master.
    pub created_ms: u64,
    /// Owners of this object.
    pub owners: Vec<OwnerRef>,
    /// Annotations: free-form key → value notes for people and tools (`bramble annotate`);
    /// selectors never read them.
    #[serde(default)]
    pub annotations: Labels,
}

/// CPU, memory and process limits or capacities. `None` means "not set".
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Resources {
    /// CPU in millicores (1000 = one core).
    pub cpu_millis: Option<u32>,
    /// Memory in bytes.
    pub memory_bytes: Option<u64>,
    /// Maximum number of processes/threads.
    pub pids: Option<u32>,
}

/// A port a process listens on.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Port {
    /// Port inside the pod.
    pub container_port: u16,
    /// Port claimed on the node (host network), if any: the scheduler keeps these unique per node.
    pub host_port: Option<u16>,
}

/// One process of a pod (Kubernetes' container).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
pub struct ProcessSpec {
    /// Name, unique within the pod.
    pub name: String,
    /// Program and arguments.
    pub command: Vec<String>,
    /// Environment, in order.
    pub env: Vec<(String, String)>,
    /// Working directory (inside the rootfs).
    pub workdir: Option<String>,
    /// User to run as (a number, or a name from the pod root's `/etc/passwd`); `None` = root.
    pub user: Option<IdRef>,
    /// Group to run as; `None` = the user's primary group (root's without a user).
    pub group: Option<IdRef>,
    /// Further groups.
    #[serde(default)]
    pub supplementary_groups: Vec<IdRef>,
    /// Refuse to start the process if it would run as uid 0.
    #[serde(default)]
    pub run_as_non_root: bool,
    /// Capabilities added to and dropped from the container default set.
    #[serde(default)]
    pub capabilities: CapChanges,
    /// The seccomp filter.
    #[serde(default)]
    pub seccomp: SeccompProfile,
    /// Limits for this process.
    pub resources: Resources,
    /// Ports.
    pub ports: Vec<Port>,
    /// Restart the process when this probe fails `failure_threshold` times in a row.
    #[serde(default)]
    pub liveness: Option<Probe>,
    /// Keep the pod out of service endpoints (and rollouts from counting it available) until this
    /// probe passes; out again after `failure_threshold` failures.
    #[serde(default)]
    pub readiness: Option<Probe>,
    /// Environment variables from every key of config maps and secrets (after `env`).
    #[serde(default)]
    pub env_from: Vec<EnvFrom>,
    /// Arguments (Kubernetes' `args`): with a pod `image`, they replace the image's `Cmd`;
    /// `command` replaces its `Entrypoint` (and then the `Cmd` is dropped unless `args` is set).
    /// Without an image they are appended to `command`.
    #[serde(default)]
    pub args: Vec<String>,
}

/// What a probe does.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub enum ProbeAction {
    /// Run a command inside the pod's namespaces; exit status 0 passes.
    Exec(Vec<String>),
    /// Connect to this port of the pod (on its network); a connection passes.
    Tcp {
        /// Port.
        port: u16,
    },
    /// `GET path` on this port of the pod; a 2xx or 3xx status passes.
    Http {
        /// Port.
        port: u16,
        /// Path, starting with `/`.
        path: String,
    },
}

/// A liveness or readiness probe.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    /// The check.
    pub action: ProbeAction,
    /// Wait this long after the process starts before the first check.
    pub initial_delay_ms: u32,
    /// Time between checks.
    pub period_ms: u32,
    /// A check taking longer fails.
    pub timeout_ms: u32,
    /// Consecutive failures before the probe counts as failed.
    pub failure_threshold: u32,
    /// Consecutive successes before a failed probe counts as passing again.
    pub success_threshold: u32,
}

impl Default for Probe {
    /// Kubernetes' defaults: no delay, every 10 s, 1 s timeout, 3 failures, 1 success.
    fn default() -> Self {
        Probe {
            action: ProbeAction::Tcp { port: 0 },
            initial_delay_ms: 0,
            period_ms: 10_000,
            timeout_ms: 1_000,
            failure_threshold: 3,
            success_threshold: 1,
        }
    }
}

/// A source of environment variables.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub enum EnvFrom {
    /// Every key of a config map (same namespace), as `prefix + key`.
    ConfigMap {
        /// Config map name.
        name: String,
        /// Prepended to every key.
        prefix: String,
    },
    /// Every key of a secret (same namespace), as `prefix + key`.
    Secret {
        /// Secret name.
        name: String,
        /// Prepended to every key.
        prefix: String,
    },
}

/// When the processes of a pod are restarted.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RestartPolicy {
    /// Always restart (services).
    #[default]
    Always,
    /// Restart on non-zero exit (jobs that retry).
    OnFailure,
    /// Never restart.
    Never,
}

/// Which network namespace a pod runs in.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NetworkMode {
    /// The node's network.
    #[default]
    Host,
    /// A private network namespace with only loopback.
    None,
    /// A private network namespace with its own address from the node's pod subnet, on the
    /// node's pod bridge; reachable from every node of the cluster.
    Isolated,
}

/// Effect of a taint.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TaintEffect {
    /// New pods without a matching toleration are not scheduled there.
    NoSchedule,
    /// Like `NoSchedule`, and pods already there without a toleration are evicted.
    NoExecute,
}

/// A node taint.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Hash)]
pub struct Taint {
    /// Key.
    pub key: String,
    /// Value (may be empty).
    pub value: String,
    /// Effect.
    pub effect: TaintEffect,
}

/// A pod's toleration of taints.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Hash)]
pub struct Toleration {
    /// Key to match; empty matches every key.
    pub key: String,
    /// Value to match; `None` matches any value (Kubernetes' `Exists`).
    pub value: Option<String>,
    /// Effect to match; `None` matches both.
    pub effect: Option<TaintEffect>,
}

impl Toleration {
    /// Whether this toleration tolerates `t`.
    pub fn tolerates(&self, t: &Taint) -> bool {
        (self.key.is_empty() || self.key == t.key)
            && self.value.as_ref().is_none_or(|v| *v == t.value)
            && self.effect.is_none_or(|e| e == t.effect)
    }
}

/// A volume mounted into a pod.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub enum VolumeSource {
    /// A directory of the node, bind-mounted.
    HostPath {
        /// Path on the node.
        path: String,
        /// Mount read-only.
        read_only: bool,
    },
    /// A scratch directory that lives as long as the pod.
    EmptyDir,
    /// Every key of a config map (same namespace) as a read-only file; updates reach the files.
    ConfigMap {
        /// Config map name.
        name: String,
    },
    /// Every key of a secret (same namespace) as a read-only file on a tmpfs; updates reach the
    /// files.
    Secret {
        /// Secret name.
        name: String,
    },
}

/// A named volume and where it is mounted.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Volume {
    /// Name.
    pub name: String,
    /// Mount point inside the pod.
    pub mount_path: String,
    /// Source.
    pub source: VolumeSource,
}

/// Desired state of a pod.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
pub struct PodSpec {
    /// Processes, at least one.
    pub processes: Vec<ProcessSpec>,
    /// Restart policy.
    pub restart_policy: RestartPolicy,
    /// Node labels the pod requires.
    pub node_selector: Labels,
    /// Tolerations.
    pub tolerations: Vec<Toleration>,
    /// Required architecture, if any.
    pub arch: Option<Arch>,
    /// Root filesystem: `artifact:NAME` (the node's architecture's variant of an uploaded
    /// artifact) or a directory on the node; `None` = the host's.
    pub rootfs: Option<String>,
    /// Network mode.
    pub network: NetworkMode,
    /// Volumes.
    pub volumes: Vec<Volume>,
    /// Grace period between SIGTERM and SIGKILL, in milliseconds.
    pub termination_grace_ms: u32,
    /// The node the pod is bound to (set by the scheduler, or by the user to pin it).
    pub node_name: Option<String>,
    /// All capabilities, no seccomp filter, the host's `/dev`, writable `/sys`, no device filter.
    #[serde(default)]
    pub privileged: bool,
    /// The host's PID namespace.
    #[serde(default)]
    pub host_pid: bool,
    /// The host's IPC namespace.
    #[serde(default)]
    pub host_ipc: bool,
    /// An OCI/Docker image reference (`docker.io/library/alpine:3.20`, `registry.lan:5000/app@sha256:…`):
    /// the pod's root is an overlay of the node's architecture's layers, and its processes take the
    /// image's Entrypoint/Cmd/Env/WorkingDir/User as defaults. Excludes `rootfs`.
    #[serde(default)]
    pub image: Option<String>,
    /// The writable layer of an image pod (what its processes write outside volumes): where it
    /// lives and its cap.
    #[serde(default)]
    pub ephemeral_storage: EphemeralStorage,
}

/// Where an image pod's writable layer lives.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StorageMedium {
    /// A directory on the node's state disk, removed with the pod.
    #[default]
    Disk,
    /// A tmpfs of the pod's own (counted in the pod's memory), gone with the pod: no flash
    /// writes.
    Tmpfs,
}

/// An image pod's writable layer (`ephemeral_storage = "tmpfs"`, `ephemeral_storage_limit =
/// "256Mi"` in a manifest).
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct EphemeralStorage {
    /// Where it lives.
    pub medium: StorageMedium,
    /// Its cap in bytes: a tmpfs's size (default [`EphemeralStorage::TMPFS_DEFAULT`]). A layer
    /// on disk has no cap but the disk's (the master refuses a limit there).
    pub limit_bytes: Option<u64>,
}

impl EphemeralStorage {
    /// A tmpfs layer's size when no limit is given: 64 MiB.
    pub const TMPFS_DEFAULT: u64 = 64 << 20;

    /// The tmpfs size for this layer, if it is one.
    pub fn tmpfs_size(&self) -> Option<u64> {
        (self.medium == StorageMedium::Tmpfs)
            .then(|| self.limit_bytes.unwrap_or(Self::TMPFS_DEFAULT))
    }
}

impl PodSpec {
    /// The opt-outs of the default containment this pod asks for, by their manifest names
    /// (`privileged`, `host_pid`, `host_ipc`, `host_network`), for `describe` and `-o wide`.
    pub fn opt_outs(&self) -> Vec<&'static str> {
        let mut out = Vec::new();
        if self.privileged {
            out.push("privileged");
        }
        if self.host_pid {
            out.push("host_pid");
        }
        if self.host_ipc {
            out.push("host_ipc");
        }
        if self.network == NetworkMode::Host {
            out.push("host_network");
        }
        out
    }

    /// Sum of the processes' requests, per resource (`None` entries count as zero).
    pub fn total_resources(&self) -> Resources {
        let mut cpu = 0u32;
        let mut mem = 0u64;
        let mut pids = 0u32;
        for p in &self.processes {
            cpu = cpu.saturating_add(p.resources.cpu_millis.unwrap_or(0));
            mem = mem.saturating_add(p.resources.memory_bytes.unwrap_or(0));
            pids = pids.saturating_add(p.resources.pids.unwrap_or(0));
        }
        Resources {
            cpu_millis: Some(cpu),
            memory_bytes: Some(mem),
            pids: Some(pids),
        }
    }
}

/// State of one process.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
pub enum ProcessState {
    /// Not started yet, or waiting for a restart backoff.
    #[default]
    Waiting,
    /// Running.
    Running {
        /// Host PID.
        pid: u32,
        /// Start time, milliseconds since the Unix epoch.
        started_ms: u64,
    },
    /// Exited and not restarting (yet).
    Terminated {
        /// Why.
        reason: ExitReason,
        /// When, milliseconds since the Unix epoch.
        finished_ms: u64,
    },
}

/// Observed status of one process.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
pub struct ProcessStatus {
    /// Process name.
    pub name: String,
    /// Current state.
    pub state: ProcessState,
    /// Restarts so far.
    pub restarts: u32,
    /// The last exit, if any.
    pub last_exit: Option<ExitReason>,
    /// Running and passing its readiness probe (or running, without one).
    #[serde(default)]
    pub ready: bool,
}

/// Observed state of a pod, reported by its node.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct PodStatus {
    /// Phase.
    pub phase: PodPhase,
    /// Per process.
    pub processes: Vec<ProcessStatus>,
    /// Human-readable detail (why Pending, why Failed).
    pub message: String,
    /// Last status change, milliseconds since the Unix epoch.
    pub updated_ms: u64,
    /// The pod's own address (`network = "isolated"` pods); empty for the others.
    pub ip: String,
}

impl PodStatus {
    /// Equal in meaning: every field but `updated_ms`, the time of the last change. The one
    /// definition of "the status changed" that the worker (report a delta) and the master (write
    /// it) share.
    pub fn same_meaning(&self, other: &PodStatus) -> bool {
        self.phase == other.phase
            && self.processes == other.processes
            && self.message == other.message
            && self.ip == other.ip
    }

    /// Whether the pod can take traffic: Running with every process ready.
    pub fn is_ready(&self) -> bool {
        self.phase == PodPhase::Running
            && !self.processes.is_empty()
            && self.processes.iter().all(|p| p.ready)
    }
}

impl Default for PodStatus {
    fn default() -> Self {
        PodStatus {
            phase: PodPhase::Pending,
            processes: Vec::new(),
            message: String::new(),
            updated_ms: 0,
            ip: String::new(),
        }
    }
}

/// A pod.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
pub struct Pod {
    /// Metadata.
    pub meta: Meta,
    /// Desired state.
    pub spec: PodSpec,
    /// Observed state.
    pub status: PodStatus,
}

/// A node condition type.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ConditionKind {
    /// Heartbeats arrive.
    Ready,
    /// The memory cgroup controller is usable (false on a stock Raspberry Pi OS).
    MemoryCgroup,
    /// The state dir's disk is nearly full.
    DiskPressure,
    /// The node serves services, egress NAT and the cluster DNS in the kernel (nf_tables);
    /// false: its agent serves services from userspace only (no virtual IPs, NAT or DNS).
    KernelNetwork,
}

/// A node condition.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Condition {
    /// Which condition.
    pub kind: ConditionKind,
    /// Whether it holds.
    pub status: bool,
    /// Why, with the fix when there is one.
    pub message: String,
    /// When the status last changed, milliseconds since the Unix epoch.
    pub since_ms: u64,
}

/// Desired state of a node (set by admins).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
pub struct NodeSpec {
    /// Taints.
    pub taints: Vec<Taint>,
    /// Cordoned: nothing new is scheduled here.
    pub unschedulable: bool,
    /// The node's pod subnet (`10.42.3.0/24`), assigned by the master at registration; the
    /// addresses of its `network = "isolated"` pods. Empty: none assigned.
    pub pod_cidr: String,
}

/// Observed state of a node.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
pub struct NodeStatus {
    /// What the node reported at registration; `None` before it ever connected.
    pub info: Option<Box<NodeInfo>>,
    /// What the node offers to pods.
    pub allocatable: Resources,
    /// Conditions.
    pub conditions: Vec<Condition>,
    /// Addresses the node connected from.
    pub addresses: Vec<String>,
    /// Last heartbeat, milliseconds since the Unix epoch (kept in memory by the master).
    pub last_heartbeat_ms: u64,
}

impl NodeStatus {
    /// The status of a condition, if reported.
    pub fn condition(&self, kind: ConditionKind) -> Option<&Condition> {
        self.conditions.iter().find(|c| c.kind == kind)
    }

    /// Whether the node is Ready.
    pub fn is_ready(&self) -> bool {
        self.condition(ConditionKind::Ready)
            .is_some_and(|c| c.status)
    }
}

/// A node.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
pub struct Node {
    /// Metadata.
    pub meta: Meta,
    /// Desired state.
    pub spec: NodeSpec,
    /// Observed state.
    pub status: NodeStatus,
}

/// Phase of a namespace.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NamespacePhase {
    /// In use.
    #[default]
    Active,
    /// Being deleted with everything in it.
    Terminating,
}

/// A namespace.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
pub struct Namespace {
    /// Metadata.
    pub meta: Meta,
    /// Phase.
    pub phase: NamespacePhase,
    /// How strictly the namespace limits its pods' security opt-outs.
    #[serde(default)]
    pub pod_security: PodSecurity,
}

/// A pod template: what controllers stamp out.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
pub struct PodTemplate {
    /// Labels of the pods (must match the owner's selector).
    pub labels: Labels,
    /// Spec of the pods.
    pub spec: PodSpec,
    /// `bramble rollout restart` time (ms since the epoch): a new value is a new template, so
    /// the controller replaces every pod (Kubernetes' `restartedAt` annotation). `None` in an
    /// apply (a manifest does not say) keeps the stored value; `Some(0)` is "never restarted"
    /// (what `rollout undo` sends for a template from before any restart). `None` and `Some(0)`
    /// hash alike.
    #[serde(default)]
    pub restarted_at_ms: Option<u64>,
}

/// Desired state of a deployment.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
pub struct DeploymentSpec {
    /// Pods wanted.
    pub replicas: u32,
    /// Labels that select the deployment's pods (defaults to the template's labels).
    pub selector: Labels,
    /// The pods.
    pub template: PodTemplate,
    /// Pods above `replicas` allowed during a rollout.
    pub max_surge: u32,
    /// Pods below `replicas` allowed unavailable during a rollout.
    pub max_unavailable: u32,
    /// A pod counts as available after running this long.
    pub min_ready_ms: u32,
    /// Old replica sets kept for `rollout undo`.
    pub revision_history: u32,
    /// A rollout that makes no progress for this long is stalled (Kubernetes'
    /// `progressDeadlineSeconds`): `status.stalled`, and `rollout status` fails. 0: the default,
    /// [`DEFAULT_PROGRESS_DEADLINE_MS`].
    #[serde(default)]
    pub progress_deadline_ms: u32,
}

/// The progress deadline of a deployment that sets none (10 minutes, as Kubernetes').
pub const DEFAULT_PROGRESS_DEADLINE_MS: u32 = 600_000;

/// Observed state of a deployment.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
pub struct DeploymentStatus {
    /// Pods of all its replica sets.
    pub replicas: u32,
    /// Pods of the current template.
    pub updated: u32,
    /// Available pods.
    pub available: u32,
    /// Rollout revision of the current template.
    pub revision: u64,
    /// Progress or the reason it is stuck.
    pub message: String,
    /// Generation of the spec: bumped by the master on every apply that changes the spec
    /// (Kubernetes' `metadata.generation`; kept here, in the system-owned status).
    #[serde(default)]
    pub generation: u64,
    /// The generation the controller last acted on: the status describes the current spec
    /// only when it equals `generation`.
    #[serde(default)]
    pub observed_generation: u64,
    /// Available pods of the current template.
    #[serde(default)]
    pub updated_available: u32,
    /// When the rollout last made progress (a new generation, pods created, updated, available
    /// or removed), ms since the epoch.
    #[serde(default)]
    pub last_progress_ms: u64,
    /// No progress within `spec.progress_deadline_ms` while not complete.
    #[serde(default)]
    pub stalled: bool,
}

/// A deployment.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
pub struct Deployment {
    /// Metadata.
    pub meta: Meta,
    /// Desired state.
    pub spec: DeploymentSpec,
    /// Observed state.
    pub status: DeploymentStatus,
}

/// Desired state of a replica set.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
pub struct ReplicaSetSpec {
    /// Pods wanted.
    pub replicas: u32,
    /// Selector (the deployment's plus the template hash).
    pub selector: Labels,
    /// The pods.
    pub template: PodTemplate,
    /// Rollout revision (1, 2, ...).
    pub revision: u64,
    /// A pod counts as available after running this long.
    pub min_ready_ms: u32,
}

/// Observed state of a replica set.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
pub struct ReplicaSetStatus {
    /// Pods.
    pub replicas: u32,
    /// Available pods.
    pub available: u32,
    /// Backoff of replacing pods that fail fast.
    #[serde(default)]
    pub backoff: ReplaceBackoff,
}

/// The restart backoff of processes (the worker) and of replacing failed pods (replica sets and
/// daemon sets): the first delay, doubling with each consecutive failure...
pub const RESTART_BACKOFF_INITIAL_MS: u64 = 500;
/// ... up to this cap ...
pub const RESTART_BACKOFF_MAX_MS: u64 = 10_000;
/// ... and a run at least this long starts the doubling over.
pub const RESTART_BACKOFF_RESET_MS: u64 = 600_000;

/// The delay after `failures` consecutive failures (0 for none): [`RESTART_BACKOFF_INITIAL_MS`]
/// doubling, capped at [`RESTART_BACKOFF_MAX_MS`].
pub fn restart_backoff_ms(failures: u32) -> u64 {
    if failures == 0 {
        return 0;
    }
    RESTART_BACKOFF_INITIAL_MS
        .saturating_mul(1 << (failures - 1).min(30))
        .min(RESTART_BACKOFF_MAX_MS)
}

/// A controller's backoff of creating replacements for pods that fail fast (Kubernetes'
/// `CrashLoopBackOff`, per owner): kept in the owner's status, so the reconciler stays pure.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
pub struct ReplaceBackoff {
    /// Consecutive pods that failed within [`RESTART_BACKOFF_RESET_MS`] of their creation.
    pub failures: u32,
    /// No replacement is created before this time (ms since the epoch); 0: none pending.
    pub until_ms: u64,
    /// Why the last of them failed (its status message).
    pub reason: String,
}

/// A replica set.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
pub struct ReplicaSet {
    /// Metadata.
    pub meta: Meta,
    /// Desired state.
    pub spec: ReplicaSetSpec,
    /// Observed state.
    pub status: ReplicaSetStatus,
}

/// Desired state of a daemon set.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
pub struct DaemonSetSpec {
    /// Labels that select its pods (defaults to the template's labels).
    pub selector: Labels,
    /// The pods (node selector, tolerations and arch pick the nodes).
    pub template: PodTemplate,
    /// Nodes whose pod may be down at once during a rolling update.
    pub max_unavailable: u32,
}

/// Observed state of a daemon set.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
pub struct DaemonSetStatus {
    /// Nodes that should run a pod.
    pub desired: u32,
    /// Nodes that run one.
    pub current: u32,
    /// Nodes whose pod runs the current template.
    pub updated: u32,
    /// Nodes whose pod is available.
    pub available: u32,
    /// Backoff of replacing pods that fail fast.
    #[serde(default)]
    pub backoff: ReplaceBackoff,
}

/// A daemon set.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
pub struct DaemonSet {
    /// Metadata.
    pub meta: Meta,
    /// Desired state.
    pub spec: DaemonSetSpec,
    /// Observed state.
    pub status: DaemonSetStatus,
}

/// Desired state of a job.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
pub struct JobSpec {
    /// Successful pods needed.
    pub completions: u32,
    /// Pods running at once.
    pub parallelism: u32,
    /// Failed pods tolerated before the job fails.
    pub backoff_limit: u32,
    /// Wall-clock limit from the job's start, in milliseconds.
    pub active_deadline_ms: Option<u64>,
    /// The pods (restart policy `Never` or `OnFailure`).
    pub template: PodTemplate,
}

/// Where a job stands.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum JobPhase {
    /// Pods are running or will be.
    #[default]
    Running,
    /// `completions` pods succeeded.
    Complete,
    /// Backoff limit or deadline exceeded.
    Failed,
}

/// Observed state of a job.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
pub struct JobStatus {
    /// Phase.
    pub phase: JobPhase,
    /// Pods running or pending.
    pub active: u32,
    /// Pods that succeeded.
    pub succeeded: u32,
    /// Pods that failed.
    pub failed: u32,
    /// When the job started, ms since the epoch.
    pub start_ms: u64,
    /// When it finished, ms since the epoch.
    pub completion_ms: Option<u64>,
    /// Why it failed, if it did.
    pub message: String,
}

/// A job.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
pub struct Job {
    /// Metadata.
    pub meta: Meta,
    /// Desired state.
    pub spec: JobSpec,
    /// Observed state.
    pub status: JobStatus,
}

/// Something that happened to an object (scheduled, started, OOMKilled, rescheduled, scaled...).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
pub struct Event {
    /// Metadata (name generated; namespace of the object).
    pub meta: Meta,
    /// Kind of the object it is about.
    pub object_kind: Option<Kind>,
    /// Name of the object it is about.
    pub object_name: String,
    /// Short CamelCase reason, e.g. `Scheduled`.
    pub reason: String,
    /// What happened.
    pub message: String,
    /// How many times it happened (repeats are folded).
    pub count: u32,
    /// Last time, ms since the epoch.
    pub last_ms: u64,
    /// UID of the object it is about (empty when unknown): events of a re-created object of the
    /// same name are its own.
    #[serde(default)]
    pub object_uid: String,
}

/// Desired state of a service.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
pub struct ServiceSpec {
    /// Labels that pick the service's pods (same namespace).
    pub selector: Labels,
    /// Where every node's proxy listens.
    pub port: u16,
    /// The pods' port.
    pub target_port: u16,
    /// TCP (the default) or UDP.
    pub protocol: Protocol,
    /// The service's virtual IP (Kubernetes' `clusterIP`): `None` in a manifest asks the master
    /// for one from its service range; `"None"` makes the service headless (no virtual IP: its
    /// DNS name answers with the ready pods' addresses); an address inside the range asks for
    /// that one. The master stores the allocated address and keeps it for the service's life.
    pub cluster_ip: Option<String>,
}

/// A service's transport protocol.
#[derive(
    Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default,
)]
pub enum Protocol {
    /// TCP: each connection goes to one backend.
    #[default]
    Tcp,
    /// UDP: each client address's datagrams go to one backend while they keep coming.
    Udp,
}

impl Protocol {
    /// `TCP` / `UDP`.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "TCP",
            Protocol::Udp => "UDP",
        }
    }
}

/// A service: one port on every node, forwarded round-robin to the ready pods it selects.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
pub struct Service {
    /// Metadata.
    pub meta: Meta,
    /// Desired state.
    pub spec: ServiceSpec,
}

/// One backend of a service.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EndpointAddress {
    /// Address to connect to: the pod's node for host-network pods, the pod's own address for
    /// isolated ones.
    pub ip: String,
    /// Port to connect to.
    pub port: u16,
    /// The pod.
    pub pod: String,
    /// The pod's node.
    pub node: String,
}

/// The backends of a service, computed by the master from its selector and the pods' readiness.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
pub struct Endpoints {
    /// Metadata (the service's name and namespace).
    pub meta: Meta,
    /// The service's port (where proxies listen).
    pub port: u16,
    /// Ready backends, sorted.
    pub ready: Vec<EndpointAddress>,
    /// Selected pods that are not ready (for `get endpoints`; proxies ignore them).
    pub not_ready: Vec<EndpointAddress>,
    /// The service's protocol.
    pub protocol: Protocol,
    /// The service's virtual IP (`None`: headless, or none allocated).
    pub cluster_ip: Option<String>,
}

/// Configuration data.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
pub struct ConfigMap {
    /// Metadata.
    pub meta: Meta,
    /// Key (a file name) → text.
    pub data: BTreeMap<String, String>,
}

/// Secret data. `get` and `describe` show only key names and sizes unless asked to reveal it.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
pub struct Secret {
    /// Metadata.
    pub meta: Meta,
    /// Key (a file name) → bytes.
    pub data: BTreeMap<String, Vec<u8>>,
}

/// One architecture's tarball of an artifact.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct ArtifactVariant {
    /// Architecture its binaries are built for.
    pub arch: Arch,
    /// sha256 of the tarball, lowercase hex (64 characters).
    pub sha256: String,
    /// Size of the tarball in bytes.
    pub size: u64,
    /// Upload time, milliseconds since the Unix epoch.
    pub uploaded_ms: u64,
}

/// An artifact: a root filesystem (or any tree of files) per architecture, uploaded to the
/// master and pulled by workers — the edge's registry.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
pub struct Artifact {
    /// Metadata (cluster-scoped).
    pub meta: Meta,
    /// One tarball per architecture, sorted by architecture.
    pub variants: Vec<ArtifactVariant>,
}

impl Artifact {
    /// The variant for `arch`, if uploaded.
    pub fn variant(&self, arch: Arch) -> Option<&ArtifactVariant> {
        self.variants.iter().find(|v| v.arch == arch)
    }
}

/// How an image layer blob is compressed.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LayerCompression {
    /// A plain tar (`application/vnd.oci.image.layer.v1.tar`, `docker save`'s layers).
    #[default]
    None,
    /// gzip (`…tar+gzip`, Docker's `…rootfs.diff.tar.gzip`).
    Gzip,
    /// zstd (`…tar+zstd`).
    Zstd,
}

/// One layer of an image variant, bottom first.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct ImageLayer {
    /// sha256 of the blob as stored and transferred (compressed), lowercase hex.
    pub sha256: String,
    /// Size of the blob in bytes.
    pub size: u64,
    /// Compression of the blob.
    pub compression: LayerCompression,
}

/// The parts of an image's config a pod uses (OCI `config`).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
pub struct ImageConfig {
    /// `Entrypoint`.
    pub entrypoint: Vec<String>,
    /// `Cmd`.
    pub cmd: Vec<String>,
    /// `Env`, in order, split at the first `=`.
    pub env: Vec<(String, String)>,
    /// `WorkingDir`, if set.
    pub workdir: Option<String>,
    /// `User` (`name`, `uid`, `uid:gid`, `name:group`), if set.
    pub user: Option<String>,
    /// `ExposedPorts` keys (`80/tcp`), informational.
    pub exposed_ports: Vec<String>,
}

/// One architecture's manifest of an image.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct ImageVariant {
    /// Architecture (`linux/arm64` = aarch64, `linux/arm/v7` = armv7, `linux/arm/v6` = armv6,
    /// `linux/amd64` = x86_64, `linux/riscv64` = riscv64).
    pub arch: Arch,
    /// The manifest's digest (`sha256:…`).
    pub manifest_digest: String,
    /// sha256 of the config blob, lowercase hex.
    pub config_sha256: String,
    /// The config's defaults.
    pub config: ImageConfig,
    /// Layers, bottom first.
    pub layers: Vec<ImageLayer>,
}

impl ImageVariant {
    /// Bytes of all layer blobs.
    pub fn size(&self) -> u64 {
        self.layers.iter().map(|l| l.size).sum()
    }
}

/// An image the master holds (pulled from a registry or imported): every variant's blobs are in
/// its blob store. Its name is derived from `reference`.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
pub struct Image {
    /// Metadata (cluster-scoped).
    pub meta: Meta,
    /// The normalized reference (`docker.io/library/alpine:3.20`, `host:5000/app@sha256:…`).
    pub reference: String,
    /// Digest of what the reference resolved to (an index, or a single manifest), `sha256:…`.
    pub digest: String,
    /// One entry per architecture, sorted by architecture.
    pub variants: Vec<ImageVariant>,
    /// When it was pulled or imported, milliseconds since the Unix epoch.
    pub pulled_ms: u64,
}

impl Image {
    /// The variant a node of `arch` runs: its own, or for armv7 an armv6 one.
    pub fn variant(&self, arch: Arch) -> Option<&ImageVariant> {
        self.variants.iter().find(|v| v.arch == arch).or_else(|| {
            (arch == Arch::Armv7)
                .then(|| self.variants.iter().find(|v| v.arch == Arch::Armv6))
                .flatten()
        })
    }
}

/// How the master reaches one registry host.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
pub struct RegistrySpec {
    /// Host and optional port, as in image references (`registry.lan:5000`, `docker.io`).
    pub host: String,
    /// Plain HTTP (a LAN registry without TLS).
    pub insecure: bool,
    /// A secret (`NAMESPACE/NAME`, or `NAME` in `default`) with keys `username` and `password`
    /// for basic auth (and for the token service of bearer auth).
    pub credentials: Option<String>,
    /// Pull through this host instead (`mirror.lan:5000`); the reference keeps its own host.
    pub mirror: Option<String>,
    /// PEM certificates trusted for this host besides the system's roots.
    pub ca: Option<String>,
}

/// Registry settings (`[[registry]]`), cluster-scoped; its name is free, its `host` is the key.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
pub struct Registry {
    /// Metadata (cluster-scoped).
    pub meta: Meta,
    /// Settings.
    pub spec: RegistrySpec,
}

/// Any object. New kinds are added at the end.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub enum Object {
    /// A namespace.
    Namespace(Namespace),
    /// A node.
    Node(Node),
    /// A pod.
    Pod(Pod),
    /// A deployment.
    Deployment(Deployment),
    /// A replica set.
    ReplicaSet(ReplicaSet),
    /// A daemon set.
    DaemonSet(DaemonSet),
    /// A job.
    Job(Job),
    /// An event.
    Event(Event),
    /// A service.
    Service(Service),
    /// A service's endpoints.
    Endpoints(Endpoints),
    /// A config map.
    ConfigMap(ConfigMap),
    /// A secret.
    Secret(Secret),
    /// An artifact.
    Artifact(Artifact),
    /// An image.
    Image(Image),
    /// A registry's settings.
    Registry(Registry),
}

macro_rules! each_object {
    ($o:expr, $x:ident => $body:expr) => {
        match $o {
            Object::Namespace($x) => $body,
            Object::Node($x) => $body,
            Object::Pod($x) => $body,
            Object::Deployment($x) => $body,
            Object::ReplicaSet($x) => $body,
            Object::DaemonSet($x) => $body,
            Object::Job($x) => $body,
            Object::Event($x) => $body,
            Object::Service($x) => $body,
            Object::Endpoints($x) => $body,
            Object::ConfigMap($x) => $body,
            Object::Secret($x) => $body,
            Object::Artifact($x) => $body,
            Object::Image($x) => $body,
            Object::Registry($x) => $body,
        }
    };
}

impl Object {
    /// The object's kind.
    pub fn kind(&self) -> Kind {
        match self {
            Object::Namespace(_) => Kind::Namespace,
            Object::Node(_) => Kind::Node,
            Object::Pod(_) => Kind::Pod,
            Object::Deployment(_) => Kind::Deployment,
            Object::ReplicaSet(_) => Kind::ReplicaSet,
            Object::DaemonSet(_) => Kind::DaemonSet,
            Object::Job(_) => Kind::Job,
            Object::Event(_) => Kind::Event,
            Object::Service(_) => Kind::Service,
            Object::Endpoints(_) => Kind::Endpoints,
            Object::ConfigMap(_) => Kind::ConfigMap,
            Object::Secret(_) => Kind::Secret,
            Object::Artifact(_) => Kind::Artifact,
            Object::Image(_) => Kind::Image,
            Object::Registry(_) => Kind::Registry,
        }
    }

    /// The object's metadata.
    pub fn meta(&self) -> &Meta {
        each_object!(self, o => &o.meta)
    }

    /// The object's metadata, mutably.
    pub fn meta_mut(&mut self) -> &mut Meta {
        each_object!(self, o => &mut o.meta)
    }

    /// The pod spec the object runs: a pod's own, or the template of a controller's pods.
    pub fn pod_spec(&self) -> Option<&PodSpec> {
        match self {
            Object::Pod(p) => Some(&p.spec),
            Object::Deployment(d) => Some(&d.spec.template.spec),
            Object::ReplicaSet(r) => Some(&r.spec.template.spec),
            Object::DaemonSet(d) => Some(&d.spec.template.spec),
            Object::Job(j) => Some(&j.spec.template.spec),
            _ => None,
        }
    }
}

/// Where a pod's root filesystem comes from: the one parser of [`PodSpec::rootfs`].
///
/// On the wire the field stays a string (`None`, `"artifact:NAME"` or an absolute directory), so its
/// encoding did not change with it; everything that needs its meaning goes through
/// [`RootfsRef::parse`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RootfsRef<'a> {
    /// No root of its own: the pod gets a new root of the node's system directories (read-only
    /// `/usr`, `/bin`, `/lib*`, selected `/etc` files), not the node's `/`.
    Host,
    /// The variant of the named artifact for the node's architecture (`artifact:NAME`).
    Artifact(&'a str),
    /// A directory on the node, bound read-only (an absolute path).
    Dir(&'a str),
}

/// The prefix of an artifact reference in `rootfs`.
pub const ARTIFACT_PREFIX: &str = "artifact:";

impl<'a> RootfsRef<'a> {
    /// The meaning of a pod's `rootfs`; `Err` names what is wrong with it.
    pub fn parse(rootfs: Option<&'a str>) -> Result<RootfsRef<'a>, RootfsError> {
        match rootfs {
            None => Ok(RootfsRef::Host),
            Some(r) => match r.strip_prefix(ARTIFACT_PREFIX) {
                Some("") => Err(RootfsError::EmptyName),
                Some(name) => Ok(RootfsRef::Artifact(name)),
                None if r.starts_with('/') => Ok(RootfsRef::Dir(r)),
                None => Err(RootfsError::UnknownScheme),
            },
        }
    }

    /// The artifact's name, if the root is one.
    pub fn artifact(self) -> Option<&'a str> {
        match self {
            RootfsRef::Artifact(n) => Some(n),
            RootfsRef::Host | RootfsRef::Dir(_) => None,
        }
    }
}

/// Why a `rootfs` value has no meaning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RootfsError {
    /// `artifact:` without a name.
    EmptyName,
    /// Neither `artifact:NAME` nor an absolute path.
    UnknownScheme,
}

impl core::fmt::Display for RootfsError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            RootfsError::EmptyName => f.write_str("artifact: needs a name"),
            RootfsError::UnknownScheme => {
                f.write_str("rootfs must be artifact:NAME or an absolute directory on the node")
            }
        }
    }
}

impl PodSpec {
    /// The pod's root, parsed; a value that does not parse counts as no artifact (validation
    /// refuses such pods at the edge, so none reaches a loop).
    pub fn rootfs_ref(&self) -> RootfsRef<'_> {
        RootfsRef::parse(self.rootfs.as_deref()).unwrap_or(RootfsRef::Host)
    }

    /// The artifact the pod's root comes from, if any.
    pub fn artifact(&self) -> Option<&str> {
        self.rootfs_ref().artifact()
    }
}

#[cfg(test)]
mod rootfs_tests {
    use super::{Arch, Image, ImageConfig, ImageVariant, RootfsError, RootfsRef};

    #[test]
    fn an_armv7_node_runs_an_armv6_variant_only_when_there_is_no_armv7_one() {
        let v = |arch| ImageVariant {
            arch,
            manifest_digest: alloc::string::String::new(),
            config_sha256: alloc::string::String::new(),
            config: ImageConfig::default(),
            layers: alloc::vec::Vec::new(),
        };
        let mut img = Image {
            variants: alloc::vec![v(Arch::Armv6), v(Arch::Aarch64)],
            ..Image::default()
        };
        assert_eq!(img.variant(Arch::Armv7).map(|x| x.arch), Some(Arch::Armv6));
        assert_eq!(img.variant(Arch::Armv6).map(|x| x.arch), Some(Arch::Armv6));
        assert_eq!(img.variant(Arch::X86_64), None);
        img.variants.push(v(Arch::Armv7));
        assert_eq!(img.variant(Arch::Armv7).map(|x| x.arch), Some(Arch::Armv7));
    }

    #[test]
    fn rootfs_values_have_one_meaning() {
        for (input, want) in [
            (None, Ok(RootfsRef::Host)),
            (Some("artifact:busybox"), Ok(RootfsRef::Artifact("busybox"))),
            (Some("/srv/root"), Ok(RootfsRef::Dir("/srv/root"))),
            (Some("artifact:"), Err(RootfsError::EmptyName)),
            (Some("busybox"), Err(RootfsError::UnknownScheme)),
            (Some(""), Err(RootfsError::UnknownScheme)),
        ] {
            assert_eq!(RootfsRef::parse(input), want, "{input:?}");
        }
    }
}
