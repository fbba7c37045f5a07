//! [`StoreError`]: everything a store call can fail with, and its wire [`ErrorCode`].

use std::path::PathBuf;

use bramble_wire::msg::ErrorCode;
use bramble_wire::objects::Kind;

/// An error from the store. Messages are lowercase, name the object and say what to do.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The object does not exist.
    #[error("{} {} not found: list the {} to see what exists", kind.as_str(), object_name(namespace, name), kind.as_str())]
    NotFound {
        /// Kind.
        kind: Kind,
        /// Namespace (empty for cluster-scoped kinds).
        namespace: String,
        /// Name.
        name: String,
    },

    /// A create found an object of the same kind, namespace and name.
    #[error("{} {} already exists: update it, or delete it first", kind.as_str(), object_name(namespace, name))]
    AlreadyExists {
        /// Kind.
        kind: Kind,
        /// Namespace (empty for cluster-scoped kinds).
        namespace: String,
        /// Name.
        name: String,
    },

    /// Optimistic concurrency: the object is not at the revision the write expected.
    #[error(
        "{} {} changed: expected revision {expected}, it is at revision {actual}; read it again and retry",
        kind.as_str(), object_name(namespace, name)
    )]
    Conflict {
        /// Kind.
        kind: Kind,
        /// Namespace (empty for cluster-scoped kinds).
        namespace: String,
        /// Name.
        name: String,
        /// The revision the write expected.
        expected: u64,
        /// The object's current revision.
        actual: u64,
    },

    /// The object's key is not valid for the store (empty name, a namespace on a cluster-scoped
    /// kind, no namespace on a namespaced kind).
    #[error("invalid {} {}: {reason}", kind.as_str(), object_name(namespace, name))]
    Invalid {
        /// Kind.
        kind: Kind,
        /// Namespace as given.
        namespace: String,
        /// Name as given.
        name: String,
        /// What is wrong and how to fix it.
        reason: &'static str,
    },

    /// A watch asked for history that compaction already removed.
    #[error(
        "revision {requested} has been compacted (the oldest revision a watch can start after is {oldest}): list again and watch from the list's revision"
    )]
    Compacted {
        /// The revision the watch asked to start after.
        requested: u64,
        /// The oldest revision a watch may start after.
        oldest: u64,
    },

    /// The watcher fell behind (its queue filled up) and was dropped.
    #[error("watch fell behind and was dropped: list again and watch from the list's revision")]
    Lagged,

    /// The store was closed.
    #[error("the store is closed: reopen it")]
    Closed,

    /// The database file failed its integrity check at boot and was moved aside.
    #[error(
        "store database {} is corrupt ({detail}); it was moved aside to {} (with its -wal and -shm files, if any) and nothing was replaced: restore a backup to {}, or start again with --accept-empty-store to create an empty store and re-apply your manifests",
        path.display(), moved_to.display(), path.display()
    )]
    Corrupt {
        /// Where the database was.
        path: PathBuf,
        /// Where it is now.
        moved_to: PathBuf,
        /// What SQLite reported.
        detail: String,
    },

    /// A damaged database was moved aside and nothing replaced it: starting would serve an
    /// empty store ([`super::StoreConfig::accept_empty_store`] allows it).
    #[error(
        "REFUSING TO START WITH AN EMPTY STORE: {} is newer than the database {}: a damaged store was moved aside there and nothing replaced it, so starting now would serve an empty cluster: restore a backup to {} (or copy the damaged file back to recover what SQLite can with `sqlite3 FILE .recover`), or start with --accept-empty-store to begin empty and re-apply your manifests",
        corrupt.display(), path.display(), path.display()
    )]
    CorruptKept {
        /// The database.
        path: PathBuf,
        /// The newest moved-aside damaged database.
        corrupt: PathBuf,
    },

    /// A write could not commit because the data directory's filesystem is full.
    #[error(
        "the master's store is full: {} could not grow ({detail}); nothing was written: free space on the data directory's filesystem: writes resume by themselves once there is room (reads still work)",
        path.display()
    )]
    Full {
        /// The database.
        path: PathBuf,
        /// What SQLite reported.
        detail: String,
    },

    /// A filesystem operation on the data directory failed.
    #[error("store file {}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },

    /// A stored value is not a valid object for this build.
    #[error(
        "stored value at revision {revision} does not decode (from a newer build, or damaged): {source}"
    )]
    Decode {
        /// Revision of the value.
        revision: u64,
        /// The JSON error.
        #[source]
        source: serde_json::Error,
    },

    /// The key sealing secrets at rest cannot be used.
    #[error("secrets key {path:?}: {reason}")]
    SecretsKey {
        /// The key file.
        path: std::path::PathBuf,
        /// What is wrong, with the fix.
        reason: String,
    },

    /// A sealed secret value does not open.
    #[error("the secret stored at revision {revision} cannot be opened with {key:?}: {reason}")]
    Sealed {
        /// Revision of the value.
        revision: u64,
        /// The key file.
        key: std::path::PathBuf,
        /// Why.
        reason: String,
    },

    /// Applying the embedded schema migrations failed.
    #[error("store schema migration failed (is the database from a newer build?): {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),

    /// Another write in the same group commit hit a database error, so this write was not made.
    #[error("the write was not made: its batch failed to commit ({0}); retry it")]
    BatchFailed(String),

    /// SQLite failed (I/O error, disk full, ...).
    #[error("store database error: {0}")]
    Db(sqlx::Error),
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        match e {
            sqlx::Error::PoolClosed => StoreError::Closed,
            e => StoreError::Db(e),
        }
    }
}

impl StoreError {
    /// The wire error class for this error, as sent to clients.
    ///
    /// `Lagged` maps to [`ErrorCode::Compacted`]: both mean "re-list, then watch again".
    pub fn code(&self) -> ErrorCode {
        match self {
            StoreError::NotFound { .. } => ErrorCode::NotFound,
            StoreError::AlreadyExists { .. } | StoreError::Conflict { .. } => ErrorCode::Conflict,
            StoreError::Invalid { .. } => ErrorCode::Invalid,
            StoreError::Compacted { .. } | StoreError::Lagged => ErrorCode::Compacted,
            StoreError::Closed
            | StoreError::Corrupt { .. }
            | StoreError::CorruptKept { .. }
            | StoreError::Full { .. }
            | StoreError::Io { .. }
            | StoreError::BatchFailed(_)
            | StoreError::Db(_) => ErrorCode::Unavailable,
            StoreError::Decode { .. }
            | StoreError::Migrate(_)
            | StoreError::SecretsKey { .. }
            | StoreError::Sealed { .. } => ErrorCode::Internal,
        }
    }

    /// Whether the error is a database failure (as opposed to a verdict on the request).
    pub(crate) fn is_db(&self) -> bool {
        matches!(self, StoreError::Db(_) | StoreError::Closed)
    }
}

/// `ns/name`, or `name` for cluster-scoped objects.
fn object_name(namespace: &str, name: &str) -> String {
    if namespace.is_empty() {
        format!("\"{name}\"")
    } else {
        format!("\"{namespace}/{name}\"")
    }
}
