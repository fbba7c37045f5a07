//! Channel messages after the handshake (feature `alloc`).
//!
//! - Worker ↔ master: [`NodeUp`] / [`NodeDown`]. The worker dials out and keeps the connection;
//!   the master pushes assignments.
//! - Client ↔ master: [`Request`] / [`Response`], correlated by `id`; a request may be answered
//!   by several responses (watch, `logs -f`) ending with [`ResponseBody::End`] or an error.

use alloc::boxed::Box;
use alloc::string::String;
use alloc::vec::Vec;
use serde::{Deserialize, Serialize};

use crate::core_msg::Arch;
use crate::core_msg::{Heartbeat, NodeInfo};
use crate::objects::{Artifact, ConfigMap, Endpoints, Image, Kind, Object, Pod, PodStatus, Secret};

/// A pod as assigned to a node: enough to run it.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
pub struct Assignment {
    /// The store revision this assignment set reflects.
    pub revision: u64,
    /// Every pod the node should run, complete (the set replaces the previous one).
    pub pods: Vec<Pod>,
    /// The config maps those pods use (volumes, `env_from`).
    pub config_maps: Vec<ConfigMap>,
    /// The artifacts those pods use as rootfs.
    pub artifacts: Vec<Artifact>,
    /// The images those pods use (their layers are fetched like artifacts, by sha256).
    pub images: Vec<Image>,
}

/// Status of one pod as the node sees it.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct PodReport {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// UID of the pod this status belongs to (a re-created pod of the same name differs).
    pub uid: String,
    /// Status.
    pub status: PodStatus,
}

/// A piece of a process's log.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct LogChunk {
    /// The request this answers.
    pub request: u32,
    /// Bytes, at most a few KiB.
    #[serde(with = "crate::bytes")]
    pub data: Vec<u8>,
}

/// Worker → master.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub enum NodeUp {
    /// First message after Welcome, and again when the node's facts change.
    Register(Box<NodeInfo>),
    /// Liveness.
    Heartbeat(Heartbeat),
    /// Pod statuses that changed in meaning (all of them once after each (re)connect).
    Status(Vec<PodReport>),
    /// Log data for a [`NodeDown::Logs`] request.
    Log(LogChunk),
    /// The end of a log stream, with an error message if it failed.
    LogEnd {
        /// The request.
        request: u32,
        /// Why it ended early, if it did.
        error: Option<String>,
    },
    /// Read part of an artifact tarball; answered by [`NodeDown::ArtifactChunk`].
    ArtifactGet {
        /// Correlates the answer.
        request: u32,
        /// The tarball's sha256 (lowercase hex).
        sha256: String,
        /// Byte offset.
        offset: u64,
        /// Bytes wanted (the master may send fewer; at most 256 KiB since protocol 7).
        len: u32,
    },
    /// How the node serves services (sent after each connect): in the kernel, or from the
    /// agent's userspace proxy only, and why; the master shows it as the node's
    /// `KernelNetwork` condition.
    NetworkPath {
        /// nf_tables rules, NAT and the cluster DNS are in use.
        kernel: bool,
        /// Why, with the fix when there is one.
        message: String,
    },
    /// Resource usage of the node and its pods (`bramble top`), sent only while the master
    /// asked for it with [`NodeDown::UsageWanted`]. Kept in the master's memory only.
    Usage(NodeUsage),
    /// Every conflict the node has now (the set replaces the previous one; sent after each
    /// connect and when it changes): a service port or a pod's host port it cannot bind. The
    /// master records an event about the object and the node for each new one. (A volume that
    /// cannot be mounted fails its pod: the pod's reason and its `FailedCreate` event say why.)
    Conflicts(Vec<Conflict>),
    /// Output, credit and the end of an exec session ([`NodeDown::Exec`]).
    Exec {
        /// The request.
        request: u32,
        /// What happened.
        output: ExecOutput,
    },
}

/// CPU and memory of a node, pod or process over the last sampling window.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Usage {
    /// CPU used over the window, in millicores (1000 = one core busy).
    pub cpu_millis: u32,
    /// Memory working set in bytes (cAdvisor's: usage minus inactive file pages).
    pub memory_bytes: u64,
}

/// One process's usage, for [`PodUsage`].
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
pub struct ProcessUsage {
    /// Process name.
    pub name: String,
    /// Its usage: its own cgroup's when it has one (own limits), else its process tree's CPU
    /// time and resident memory.
    pub usage: Usage,
}

/// One pod's usage, for [`NodeUsage`].
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
pub struct PodUsage {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// The pod's whole cgroup (init and every process).
    pub usage: Usage,
    /// Per process.
    pub processes: Vec<ProcessUsage>,
}

/// A node's usage report, for [`NodeUp::Usage`] and [`ResponseBody::Top`].
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
pub struct NodeUsage {
    /// The window the CPU rates cover, in ms.
    pub window_ms: u32,
    /// The whole node (`/proc/stat`, `/proc/meminfo`).
    pub node: Usage,
    /// The pods running on it.
    pub pods: Vec<PodUsage>,
}

/// What a [`Conflict`] is about.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ConflictKind {
    /// A service's port cannot be bound on the node (another process holds it).
    ServicePort,
    /// A pod's host port is already in use on the node.
    HostPort,
}

/// Something the node was asked to do and cannot, because of something else on the node.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Conflict {
    /// What kind of conflict (the event's reason).
    pub kind: ConflictKind,
    /// Namespace of the service or pod.
    pub namespace: String,
    /// Name of the service or pod.
    pub name: String,
    /// UID of the pod (empty for a service).
    pub uid: String,
    /// The port.
    pub port: u16,
    /// What went wrong and the fix.
    pub message: String,
}

/// Master → worker.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub enum NodeDown {
    /// The complete set of pods the node should run.
    Assign(Assignment),
    /// Stream a process's log.
    Logs {
        /// Correlates [`NodeUp::Log`] chunks.
        request: u32,
        /// Pod namespace.
        namespace: String,
        /// Pod name.
        pod: String,
        /// Process name; `None` = the first process.
        process: Option<String>,
        /// Keep streaming as the log grows.
        follow: bool,
        /// Start this many bytes before the end (`None` = from the start of what is kept).
        tail_bytes: Option<u64>,
        /// UID of the pod (logs are kept per pod UID; empty: the pod of that name).
        uid: String,
        /// The log of the previous run of a restarted process.
        previous: bool,
    },
    /// Stop streaming a log.
    CancelLogs {
        /// The request.
        request: u32,
    },
    /// Keepalive: the master sends it when it had nothing else to say for a few heartbeat
    /// intervals, so a worker can tell a quiet master from a dead connection.
    Ping,
    /// The endpoints of every service in the cluster (the set replaces the previous one); each
    /// node's proxy serves them all.
    Endpoints(Vec<Endpoints>),
    /// The secrets the node's pods use (the set replaces the previous one). Workers keep them in
    /// memory and on tmpfs only, never on the node's disk.
    Secrets(Vec<Secret>),
    /// Part of an artifact tarball, for [`NodeUp::ArtifactGet`].
    ArtifactChunk {
        /// The request.
        request: u32,
        /// Bytes from the requested offset (empty at the end of the file).
        #[serde(with = "crate::bytes")]
        data: Vec<u8>,
        /// Why the read failed, if it did.
        error: Option<String>,
    },
    /// The node's own credential, issued after it joined with a join token: it uses this (not
    /// the join token) from now on.
    Credential {
        /// Node secret.
        secret: String,
    },
    /// Every node's pod subnet and the address it is reached at (the set replaces the previous
    /// one): a worker takes its own subnet for its isolated pods and routes the others'.
    Network(Vec<PodSubnet>),
    /// The cluster's address plan and DNS domain (sent when a worker connects, before its
    /// assignment): for the node's NAT, service rules and DNS.
    ClusterNetwork(ClusterNetwork),
    /// Another agent connected with this node's credential and took over the node's session:
    /// this connection ends. The agent stops dialing (two agents with one credential would
    /// take the session from each other) and keeps its pods running until restarted.
    Replaced {
        /// Why, with the fix.
        message: String,
    },
    /// Someone ran `bramble top`: report [`NodeUp::Usage`] soon (within about a second) and
    /// then periodically for the next `seconds`; nothing is sampled or sent otherwise.
    UsageWanted {
        /// How long to keep reporting.
        seconds: u32,
    },
    /// Run a process inside a pod (`bramble exec`); answered by [`NodeUp::Exec`] events.
    Exec {
        /// Correlates the events.
        request: u32,
        /// What to run.
        spec: ExecSpec,
    },
    /// Input to an exec session (stdin, window size, output credit, kill).
    ExecInput {
        /// The request.
        request: u32,
        /// The input.
        input: ExecInput,
    },
    /// Open a TCP connection to `port` inside a pod's network namespace (`bramble
    /// port-forward`): a stream like an exec's ([`NodeDown::ExecInput`] carries the bytes to the
    /// pod as `Stdin`, [`NodeUp::Exec`] the bytes back as `Stdout`; `Exit` when it closes).
    PortForward {
        /// Correlates the events.
        request: u32,
        /// Where to connect.
        spec: PortForwardSpec,
    },
}

/// One tunnelled TCP connection to a pod's port (`bramble port-forward`).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
pub struct PortForwardSpec {
    /// Pod namespace.
    pub namespace: String,
    /// Pod name.
    pub pod: String,
    /// The port on the pod's loopback (its network namespace).
    pub port: u16,
}

/// What `bramble exec` runs: a new process in a running pod's namespaces, cgroup, root and
/// security context.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
pub struct ExecSpec {
    /// Pod namespace.
    pub namespace: String,
    /// Pod name.
    pub pod: String,
    /// The process whose user, capabilities, seccomp and cgroup the exec takes; `None` = the
    /// pod's first process.
    pub process: Option<String>,
    /// Command and arguments (resolved with the process's `PATH` inside the pod's root).
    pub command: Vec<String>,
    /// Pass stdin (`-i`); without it the process reads `/dev/null`.
    pub stdin: bool,
    /// A pseudo-terminal (`-t`): stdout and stderr are one stream.
    pub tty: bool,
    /// Terminal rows (with `tty`).
    pub rows: u16,
    /// Terminal columns (with `tty`).
    pub cols: u16,
}

/// Client → master → worker events of an exec session ([`RequestBody::ExecInput`],
/// [`NodeDown::ExecInput`]).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub enum ExecInput {
    /// Bytes for the process's stdin (at most [`crate::stream::CHUNK`]; a sender keeps at most
    /// [`crate::stream::WINDOW`] bytes unacknowledged by [`ExecOutput::StdinAck`]).
    Stdin(#[serde(with = "crate::bytes")] Vec<u8>),
    /// Close the process's stdin (EOF).
    StdinEof,
    /// The terminal's new size.
    Resize {
        /// Rows.
        rows: u16,
        /// Columns.
        cols: u16,
    },
    /// The client consumed this many output bytes: the worker may send that many more.
    Ack(u32),
    /// Kill the process (the client went away).
    Kill,
}

/// Worker → master → client events of an exec session ([`NodeUp::Exec`],
/// [`ResponseBody::Exec`]).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub enum ExecOutput {
    /// The process runs: input may flow.
    Started,
    /// Standard output (with a TTY: the terminal's output).
    Stdout(#[serde(with = "crate::bytes")] Vec<u8>),
    /// Standard error (never with a TTY).
    Stderr(#[serde(with = "crate::bytes")] Vec<u8>),
    /// This many stdin bytes were written to the process: the sender may send that many more.
    StdinAck(u32),
    /// The process ended: `code` is its exit status, or 128 + the signal that killed it.
    Exit {
        /// Exit code (shell convention for signals).
        code: i32,
        /// The signal that killed it, if one did.
        signal: Option<u8>,
    },
    /// The exec failed before or instead of running the process.
    Error(ApiError),
}

/// The cluster-wide network settings, for [`NodeDown::ClusterNetwork`].
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
pub struct ClusterNetwork {
    /// Every node's pod subnet lies inside it (`10.42.0.0/16`): traffic from it to anywhere
    /// else is masqueraded.
    pub cluster_cidr: String,
    /// The services' virtual IPs come from it (`10.43.0.0/16`).
    pub service_cidr: String,
    /// The cluster's DNS domain (`bramble.local`): `NAME.NAMESPACE.svc.DOMAIN`.
    pub domain: String,
}

/// One node's pod subnet, for [`NodeDown::Network`].
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct PodSubnet {
    /// Node name.
    pub node: String,
    /// Its pod subnet (`10.42.3.0/24`).
    pub cidr: String,
    /// The node's address: where other nodes route the subnet.
    pub via: String,
}

/// A client request.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// Correlation id, chosen by the client.
    pub id: u32,
    /// What to do.
    pub body: RequestBody,
}

/// A client call.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub enum RequestBody {
    /// Create or update objects (all of them, or none on a validation error).
    Apply(Vec<Object>),
    /// Read one object.
    Get {
        /// Kind.
        kind: Kind,
        /// Namespace (ignored for cluster-scoped kinds).
        namespace: String,
        /// Name.
        name: String,
    },
    /// List objects.
    List {
        /// Kind.
        kind: Kind,
        /// Namespace; `None` = all namespaces.
        namespace: Option<String>,
        /// Label selector, e.g. `app=web,tier!=db`; empty selects everything.
        selector: String,
    },
    /// Stream changes after `from_revision` (0 = from now).
    Watch {
        /// Kind.
        kind: Kind,
        /// Namespace; `None` = all namespaces.
        namespace: Option<String>,
        /// Revision to start after.
        from_revision: u64,
    },
    /// Delete an object.
    Delete {
        /// Kind.
        kind: Kind,
        /// Namespace.
        namespace: String,
        /// Name.
        name: String,
        /// Fail with a conflict unless the object is at this revision.
        expected_revision: Option<u64>,
    },
    /// Stream a process's log from the pod's node.
    Logs {
        /// Namespace.
        namespace: String,
        /// Pod.
        pod: String,
        /// Process; `None` = the first.
        process: Option<String>,
        /// Keep streaming.
        follow: bool,
        /// Start this many bytes before the end.
        tail_bytes: Option<u64>,
        /// The log of the previous run of a restarted process (`logs --previous`).
        previous: bool,
    },
    /// Start (or resume) uploading an artifact variant. Answered by
    /// [`ResponseBody::ArtifactProgress`] with the bytes the master already holds.
    ArtifactBegin {
        /// Artifact name.
        name: String,
        /// Architecture of this variant.
        arch: Arch,
        /// sha256 of the whole tarball (lowercase hex).
        sha256: String,
        /// Size of the whole tarball.
        size: u64,
    },
    /// Bytes of an upload begun with [`RequestBody::ArtifactBegin`]. The chunk that completes the
    /// file makes the master verify the hash and record the variant.
    ArtifactChunk {
        /// sha256 given at the beginning.
        sha256: String,
        /// Offset of `data` (must equal the bytes held so far).
        offset: u64,
        /// Bytes (at most 32 KiB).
        #[serde(with = "crate::bytes")]
        data: Vec<u8>,
    },
    /// Create a join token (admin only).
    TokenCreate {
        /// Lifetime in seconds; `None` = until revoked.
        ttl_s: Option<u64>,
        /// Free text.
        description: String,
        /// How many nodes may join with it; `None` = any number until it expires.
        #[serde(default)]
        uses: Option<u32>,
        /// The one node name it may join (and re-admit after a revocation); `None` = any name.
        #[serde(default)]
        node: Option<String>,
    },
    /// List join tokens and node credentials (admin only; secrets are not included).
    TokenList,
    /// Revoke a join token or a node credential by id; a node whose credential is revoked is
    /// cut off at its next frame.
    TokenRevoke {
        /// Token id.
        id: String,
    },
    /// Pull an image through the master (`bramble image pull REF`): answered by
    /// [`ResponseBody::ImageProgress`] frames, then the stored [`Object::Image`] (or an error).
    ImagePull {
        /// The reference as the user wrote it (`alpine:3.20`, `host:5000/app@sha256:…`).
        reference: String,
    },
    /// Start (or resume) uploading a content-addressed blob (an image archive's manifest, config
    /// or layer). Answered by [`ResponseBody::ArtifactProgress`] with the bytes held.
    BlobBegin {
        /// sha256 of the blob (lowercase hex).
        sha256: String,
        /// Size of the blob.
        size: u64,
    },
    /// Bytes of a blob upload begun with [`RequestBody::BlobBegin`]; the chunk that completes it
    /// makes the master verify its sha256.
    BlobChunk {
        /// sha256 given at the beginning.
        sha256: String,
        /// Offset of `data` (must equal the bytes held so far).
        offset: u64,
        /// Bytes (at most 32 KiB).
        #[serde(with = "crate::bytes")]
        data: Vec<u8>,
    },
    /// Record an image whose blobs were uploaded (`bramble image import`): the master reads the
    /// index or manifest blob `sha256` and everything it names from its blob store, checks it as a
    /// pull would, and answers the stored [`Object::Image`].
    ImageImport {
        /// The reference to store it under (normalized by the master).
        reference: String,
        /// sha256 of the uploaded OCI index or manifest blob.
        sha256: String,
    },
    /// Remove an image by reference (`bramble image rm REF`); refused while pods use it. Answered
    /// by [`ResponseBody::Deleted`].
    ImageRemove {
        /// The reference (normalized by the master).
        reference: String,
    },
    /// Change an object's labels and annotations, or a node's `unschedulable` (`bramble label`,
    /// `annotate`, `cordon`, `uncordon`): applied by the master to the stored object with the
    /// revision it read, retried on a conflict, so concurrent writers lose nothing. Answered by
    /// [`ResponseBody::Applied`].
    Patch {
        /// Kind.
        kind: Kind,
        /// Namespace (ignored for cluster-scoped kinds).
        namespace: String,
        /// Name.
        name: String,
        /// The change.
        patch: MetaPatch,
    },
    /// Replace the bootstrap join token (`DATA_DIR/join.token`): the old one is revoked, the new
    /// one written to the file and answered once by [`ResponseBody::TokenCreated`].
    TokenRotateJoin,
    /// The nodes' and pods' resource usage (`bramble top`), answered by [`ResponseBody::Top`].
    /// Asks the nodes to report for a few minutes; the first call waits up to a few seconds for
    /// their first reports.
    Top,
    /// Run a process inside a pod (admins only): answered by [`ResponseBody::Exec`] events,
    /// `Started` first, `Exit` or `Error` last, then [`ResponseBody::End`].
    Exec(ExecSpec),
    /// Input to the exec session started by request `exec` on this connection.
    ExecInput {
        /// The id of the [`RequestBody::Exec`] request.
        exec: u32,
        /// The input.
        input: ExecInput,
    },
    /// Tunnel one TCP connection to a pod's port (admins only): a stream like
    /// [`RequestBody::Exec`]'s (bytes to the pod as [`ExecInput::Stdin`] in
    /// [`RequestBody::ExecInput`], bytes back as [`ExecOutput::Stdout`], `Exit` when closed).
    PortForward(PortForwardSpec),
}

/// A change of an object's labels and annotations (`bramble label|annotate`), or of a node's
/// `unschedulable` (`bramble cordon|uncordon`).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
pub struct MetaPatch {
    /// Labels to set (`Some(value)`) or remove (`None`), in order.
    pub labels: Vec<(String, Option<String>)>,
    /// Annotations to set or remove, in order.
    pub annotations: Vec<(String, Option<String>)>,
    /// Whether a key that has a different value may be changed (kubectl's `--overwrite`).
    pub overwrite: bool,
    /// Nodes only: cordon (`Some(true)`) or uncordon (`Some(false)`).
    pub unschedulable: Option<bool>,
}

/// What a token lets its holder do.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenKind {
    /// Register new nodes (once per node name).
    Join,
    /// One node's own credential.
    Node,
    /// Everything.
    Admin,
}

/// A token as listed (never with its secret).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct TokenInfo {
    /// Public id.
    pub id: String,
    /// Kind.
    pub kind: TokenKind,
    /// The node, for node credentials.
    pub node: Option<String>,
    /// Free text.
    pub description: String,
    /// Creation time, ms since the epoch.
    pub created_ms: u64,
    /// Expiry, ms since the epoch.
    pub expires_ms: Option<u64>,
    /// Revoked.
    pub revoked: bool,
    /// Joins left for a join token created with `--uses`; `None` = unlimited.
    #[serde(default)]
    pub uses_left: Option<u32>,
}

/// Outcome of applying one object.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApplyOutcome {
    /// It did not exist.
    Created,
    /// It existed and changed.
    Updated,
    /// It existed and is identical.
    Unchanged,
}

/// Result of applying one object.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    /// Kind.
    pub kind: Kind,
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// Revision after the write.
    pub revision: u64,
    /// What happened.
    pub outcome: ApplyOutcome,
}

/// A change seen by a watch.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub enum WatchEvent {
    /// Created or updated.
    Put(Object),
    /// Deleted (the last state).
    Deleted(Object),
}

/// Error classes, mapped to CLI exit codes.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// The request is invalid; the message says which field and how to fix it.
    Invalid,
    /// No such object.
    NotFound,
    /// The object changed since the expected revision, or already exists differently.
    Conflict,
    /// Not allowed for these credentials.
    Forbidden,
    /// The watch's start revision was compacted away: re-list.
    Compacted,
    /// The master or a node could not do it right now.
    Unavailable,
    /// A bug: the message says where.
    Internal,
}

/// An error answer.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// Class.
    pub code: ErrorCode,
    /// Message naming the object and the fix.
    pub message: String,
}

/// A response to a [`Request`].
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// The request's id.
    pub id: u32,
    /// The answer.
    pub body: ResponseBody,
}

/// Answers.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub enum ResponseBody {
    /// Results of an apply, in the request's order.
    Applied(Vec<Applied>),
    /// One object.
    Object(Object),
    /// A list and the store revision it was read at.
    List {
        /// Revision.
        revision: u64,
        /// Items, sorted by namespace and name.
        items: Vec<Object>,
    },
    /// A watch event and its revision.
    Event {
        /// Revision of the change.
        revision: u64,
        /// The change.
        event: WatchEvent,
    },
    /// Deleted at this revision.
    Deleted {
        /// Revision of the delete.
        revision: u64,
    },
    /// Log bytes.
    Log(#[serde(with = "crate::bytes")] Vec<u8>),
    /// The end of a stream.
    End,
    /// The call failed.
    Error(ApiError),
    /// How many bytes of an artifact upload the master holds; equal to the size once the upload
    /// is complete and verified.
    ArtifactProgress {
        /// Bytes held.
        offset: u64,
    },
    /// A new token and, once only, its secret form.
    TokenCreated {
        /// The token's listing.
        info: TokenInfo,
        /// What to give `bramble-worker --token-file`.
        token: String,
    },
    /// Tokens.
    Tokens(Vec<TokenInfo>),
    /// Progress of an image pull.
    ImageProgress {
        /// What the master is doing (`fetching manifest`, `layer 2/3 of linux/arm64`).
        message: String,
        /// Bytes fetched so far.
        done: u64,
        /// Bytes to fetch in all (0 until known).
        total: u64,
    },
    /// Resource usage per node (`bramble top`), for [`RequestBody::Top`]: every known node,
    /// sorted by name.
    Top(Vec<NodeTop>),
    /// An exec session's event.
    Exec(ExecOutput),
}

/// One node's row of [`ResponseBody::Top`].
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
pub struct NodeTop {
    /// Node name.
    pub node: String,
    /// Allocatable CPU (millicores) and memory (bytes) of the node, for percentages.
    pub allocatable: Usage,
    /// How old the report is, in ms.
    pub age_ms: u64,
    /// The last report, `None` when the node has sent none (not connected, or not yet).
    pub usage: Option<NodeUsage>,
}
