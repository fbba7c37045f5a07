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

use crate::core_msg::{Heartbeat, NodeInfo};
use crate::objects::{Kind, Object, Pod, PodStatus};

/// A pod as assigned to a node: enough to run it.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Assignment {
    /// The store revision this assignment set reflects.
    pub revision: u64,
    /// Every pod the node should run, complete (the set replaces the previous one).
    pub pods: Vec<Pod>,
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
    pub data: Vec<u8>,
}

/// Worker → master.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub enum NodeUp {
    /// First message after Welcome, and again when the node's facts change.
    Register(Box<NodeInfo>),
    /// Liveness.
    Heartbeat(Heartbeat),
    /// Pod statuses. `full = true` after (re)connecting: pods absent from a full report are not
    /// running on the node.
    Status {
        /// Whether this is the node's complete state.
        full: bool,
        /// The assignment revision the node has applied.
        applied_revision: u64,
        /// Reports.
        pods: Vec<PodReport>,
    },
    /// Log data for a [`NodeDown::Logs`] request.
    Log(LogChunk),
    /// The end of a log stream, with an error message if it failed.
    LogEnd {
        /// The request.
        request: u32,
        /// Why it ended early, if it did.
        error: Option<String>,
    },
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
    },
    /// Stop streaming a log.
    CancelLogs {
        /// The request.
        request: u32,
    },
    /// Send a full status report (the master lost track).
    Resync,
    /// Keepalive: the master sends it when it had nothing else to say for a few heartbeat
    /// intervals, so a worker can tell a quiet master from a dead connection.
    Ping,
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
    },
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
    Log(Vec<u8>),
    /// The end of a stream.
    End,
    /// The call failed.
    Error(ApiError),
}
