//! The SQLite store (sqlx, WAL): one global revision, objects, a change log for watch.
//!
//! Bramble's etcd, after kine: every write appends a row to `log`, whose primary key is the
//! global revision; `current` maps (kind, namespace, name) to the latest live revision. Watch
//! reads the log after a revision, then follows an in-process broadcast; slow watchers are
//! dropped and re-list. Compaction keeps the last [`StoreConfig::history`] revisions.
//!
//! - **Durability**: WAL with `synchronous=FULL`; a write's revision is returned only after its
//!   transaction committed. Concurrent writes are batched into one transaction by a single writer
//!   thread (group commit), each validated against the state as of its place in the batch.
//! - **Values** are `serde_json` of [`Object`]: JSON survives additive struct evolution (new
//!   optional fields) better than postcard, and `sqlite3 bramble.db 'select value from log'` shows
//!   what is stored.
//! - **Secrets at rest** are sealed (AES-256-GCM, key in `DATA_DIR/secrets.key`): see [`seal`].
//! - **Zero bytes written at idle**: no timers. Compaction runs inside write batches; read
//!   connections never expire (no pool reaper).
//! - **Boot**: `PRAGMA quick_check`; a damaged file is moved aside to `bramble.db.corrupt-<ts>`
//!   and [`StoreError::Corrupt`] says where, never silently replaced. The next start refuses
//!   ([`StoreError::CorruptKept`]) while a `bramble.db.corrupt-*` file is newer than the
//!   database (a supervisor restarting the master would otherwise serve an empty store), unless
//!   [`StoreConfig::accept_empty_store`].
//! - **Disk full**: a batch that cannot commit fails with [`StoreError::Full`]; the writer then
//!   opens a fresh write connection (a failed `COMMIT` can leave the old one inside a
//!   transaction), so writes resume by themselves once there is room. Reads are unaffected.
//! - **Permissions**: the data directory is made 0700, the database and its -wal/-shm 0600.
//!
//! ```no_run
//! # smol::block_on(async {
//! use bramble_server::store::Store;
//! let store = Store::open("/var/lib/bramble".as_ref()).await?;
//! let (revision, pods) = store.list(bramble_wire::objects::Kind::Pod, None).await?;
//! let mut watch = store.watch(Some(bramble_wire::objects::Kind::Pod), None, revision).await?;
//! while let Ok(ev) = watch.next().await {
//!     println!("{} {:?}", ev.revision, ev.event);
//! }
//! # Ok::<(), bramble_server::store::StoreError>(())
//! # });
//! ```

#![warn(missing_docs)]

mod error;
pub mod events;
mod reads;
pub mod seal;
mod tokens;
mod watch;
mod writer;

#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bramble_wire::objects::{Kind, Object};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteSynchronous,
};
use sqlx::{ConnectOptions, Connection, Row};

pub use error::StoreError;
pub use reads::Reads;
pub use tokens::TokenRow;
pub use watch::{Event, Watcher};
use watch::{Filter, Hub};
use writer::{Op, Pending, Writer};

/// The database file's name inside the data directory.
pub const DB_FILE: &str = "bramble.db";

/// The schema, embedded in the binary.
static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Tuning knobs; [`StoreConfig::default`] suits a Raspberry Pi master.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreConfig {
    /// Revisions of history kept for watches (at least 1). Older log rows are removed unless they
    /// hold an object's current state.
    pub history: u64,
    /// Compact once `history + compact_every` revisions accumulated (at least 1), so compaction
    /// runs inside every `compact_every`-th write batch and never at idle.
    pub compact_every: u64,
    /// Capacity of each watcher's queue; a watcher whose queue is full is dropped
    /// ([`StoreError::Lagged`]).
    pub watch_queue: usize,
    /// Most writes in one group commit.
    pub max_batch: usize,
    /// Under a stream of status reports ([`Store::update_status`]; the previous batch committed
    /// less than 5 × this ago), a batch of nothing but status reports waits up to this long for
    /// more writes before it commits (PostgreSQL's `commit_delay`): one transaction and one fsync
    /// then carry several. Any other write, or a report after a quiet spell, commits at once.
    /// Zero turns it off.
    pub linger: std::time::Duration,
    /// Read connections.
    pub readers: u32,
    /// Open (or create) the database even if a `bramble.db.corrupt-*` file is newer than it,
    /// i.e. accept starting with an empty store after a damaged one was moved aside
    /// (`bramble master --accept-empty-store`).
    pub accept_empty_store: bool,
    /// Most events kept (the most recently seen stay; `bramble master --max-events`).
    pub max_events: usize,
    /// Events not seen again for this long are removed (`bramble master --event-ttl`).
    pub event_ttl: std::time::Duration,
}

/// Default of [`StoreConfig::max_events`].
pub const DEFAULT_MAX_EVENTS: usize = 5_000;
/// Default of [`StoreConfig::event_ttl`] (Kubernetes' `--event-ttl`).
pub const DEFAULT_EVENT_TTL: std::time::Duration = std::time::Duration::from_secs(3600);

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            history: 10_000,
            compact_every: 1_000,
            watch_queue: 1_024,
            max_batch: 512,
            linger: std::time::Duration::from_millis(20),
            readers: 4,
            accept_empty_store: false,
            max_events: DEFAULT_MAX_EVENTS,
            event_ttl: DEFAULT_EVENT_TTL,
        }
    }
}

/// The store: a cheap handle (clone it), shared by the API server and the controllers.
#[derive(Debug, Clone)]
pub struct Store {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    path: PathBuf,
    pool: SqlitePool,
    writes: async_channel::Sender<Pending>,
    writer_done: async_channel::Receiver<()>,
    hub: Arc<Hub>,
    config: StoreConfig,
    sealer: seal::Sealer,
    reads: Arc<reads::Counter>,
}

impl Store {
    /// Opens (or creates) `data_dir/bramble.db` with the default configuration.
    pub async fn open(data_dir: &Path) -> Result<Store, StoreError> {
        Store::open_with(data_dir, StoreConfig::default()).await
    }

    /// Opens (or creates) `data_dir/bramble.db`: checks its integrity, applies the embedded
    /// migrations and starts the writer thread.
    pub async fn open_with(data_dir: &Path, config: StoreConfig) -> Result<Store, StoreError> {
        std::fs::create_dir_all(data_dir).map_err(|source| StoreError::Io {
            path: data_dir.to_owned(),
            source,
        })?;
        set_mode(data_dir, 0o700)?;
        let path = data_dir.join(DB_FILE);
        if !config.accept_empty_store
            && let Some(corrupt) = newer_corrupt_file(data_dir, &path)?
        {
            tracing::error!(path = %path.display(), corrupt = %corrupt.display(), "refusing to start: a damaged store was moved aside and nothing replaced it");
            return Err(StoreError::CorruptKept { path, corrupt });
        }
        let options = SqliteConnectOptions::new()
            .filename(&path)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(false)
            .disable_statement_logging();

        let mut conn = match options.clone().create_if_missing(true).connect().await {
            Ok(conn) => conn,
            Err(e) if is_corruption(&e) => {
                return Err(move_aside(&path, e.to_string()));
            }
            Err(e) => return Err(e.into()),
        };
        if let Err(detail) = quick_check(&mut conn).await? {
            let _ = conn.close().await;
            return Err(move_aside(&path, detail));
        }
        MIGRATOR.run(&mut conn).await?;
        for suffix in ["", "-wal", "-shm"] {
            let f = PathBuf::from(format!("{}{suffix}", path.display()));
            if f.exists() {
                set_mode(&f, 0o600)?;
            }
        }
        let sealer = open_sealer(&mut conn, data_dir).await?;

        let revision: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(revision), 0) FROM log")
            .fetch_one(&mut conn)
            .await?;
        let compacted: i64 = sqlx::query_scalar("SELECT value FROM meta WHERE key = 'compacted'")
            .fetch_one(&mut conn)
            .await?;
        let (revision, compacted) = (revision as u64, compacted as u64);

        let pool = SqlitePoolOptions::new()
            .max_connections(config.readers.max(1))
            .min_connections(0)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(options.clone())
            .await?;

        let hub = Arc::new(Hub::new(revision, compacted));
        let reads = Arc::new(reads::Counter::default());
        let (writes, requests) = async_channel::unbounded();
        let (done_tx, writer_done) = async_channel::bounded::<()>(1);
        let writer = Writer {
            conn,
            options: options.clone(),
            path: path.clone(),
            broken: false,
            requests,
            hub: hub.clone(),
            config: config.clone(),
            revision,
            compacted,
            sealer: sealer.clone(),
            reads: reads.clone(),
        };
        std::thread::Builder::new()
            .name("bramble-store-writer".into())
            .spawn(move || {
                // Watchers end with `Closed` even if the writer panics.
                let _close = CloseHubOnDrop(writer.hub.clone());
                smol::block_on(writer.run());
                drop(done_tx);
            })
            .map_err(|source| StoreError::Io {
                path: path.clone(),
                source,
            })?;
        tracing::info!(path = %path.display(), revision, compacted, "store opened");
        Ok(Store {
            shared: Arc::new(Shared {
                path,
                pool,
                writes,
                writer_done,
                hub,
                config,
                sealer,
                reads,
            }),
        })
    }

    /// How many read queries this handle's store issued so far, and the rows they returned
    /// (reads of `get`, `list` and watch catch-ups; not the writer's own lookups).
    pub fn reads(&self) -> Reads {
        self.shared.reads.get()
    }

    /// Path of the database file.
    pub fn path(&self) -> &Path {
        &self.shared.path
    }

    /// The last committed revision (0 for an empty store).
    pub fn current_revision(&self) -> u64 {
        self.shared.hub.lock().revision
    }

    /// The oldest revision a watch may start after (the compaction point).
    pub fn compacted_revision(&self) -> u64 {
        self.shared.hub.lock().compacted
    }

    /// Creates an object; fails with [`StoreError::AlreadyExists`] if it exists. Returns the
    /// write's revision, which is also the stored object's `meta.revision`, once durable.
    ///
    /// The store is the one place that gives objects their identity: an empty `meta.uid` gets
    /// a random one (16 hex digits) and a zero `meta.created_ms` the current time. Callers that
    /// must not let a client choose them clear both first.
    pub async fn create(&self, mut obj: Object) -> Result<u64, StoreError> {
        let meta = obj.meta_mut();
        if meta.uid.is_empty() {
            meta.uid = new_uid()?;
        }
        if meta.created_ms == 0 {
            meta.created_ms = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0);
        }
        self.write(Op::Create(obj)).await
    }

    /// Replaces an existing object; with `expected_revision: Some(rev)` it fails with
    /// [`StoreError::Conflict`] unless the object is at `rev`. Returns the write's revision
    /// once durable. `obj.meta().revision` is ignored (the store sets it).
    pub async fn update(
        &self,
        obj: Object,
        expected_revision: Option<u64>,
    ) -> Result<u64, StoreError> {
        self.write(Op::Update {
            obj,
            expected: expected_revision,
        })
        .await
    }

    /// [`Store::update`] for a report that may wait a moment to share its transaction (a pod's
    /// status from its node): under a stream of such reports the writer lingers up to
    /// [`StoreConfig::linger`] to commit several at once. Any other write ends the wait.
    pub async fn update_status(
        &self,
        obj: Object,
        expected_revision: Option<u64>,
    ) -> Result<u64, StoreError> {
        self.send(
            Op::Update {
                obj,
                expected: expected_revision,
            },
            true,
        )
        .await
    }

    /// Deletes an object, optionally only if it is at `expected_revision`. Returns the delete's
    /// revision once durable. The namespace is ignored for cluster-scoped kinds.
    pub async fn delete(
        &self,
        kind: Kind,
        namespace: &str,
        name: &str,
        expected_revision: Option<u64>,
    ) -> Result<u64, StoreError> {
        let namespace = if kind.namespaced() { namespace } else { "" };
        self.write(Op::Delete {
            kind,
            namespace: namespace.into(),
            name: name.into(),
            expected: expected_revision,
        })
        .await
    }

    async fn write(&self, op: Op) -> Result<u64, StoreError> {
        self.send(op, false).await
    }

    async fn send(&self, op: Op, linger: bool) -> Result<u64, StoreError> {
        let (reply, answer) = async_channel::bounded(1);
        self.shared
            .writes
            .send(Pending { op, reply, linger })
            .await
            .map_err(|_| StoreError::Closed)?;
        answer.recv().await.map_err(|_| StoreError::Closed)?
    }

    /// Reads one object. The namespace is ignored for cluster-scoped kinds.
    pub async fn get(&self, kind: Kind, namespace: &str, name: &str) -> Result<Object, StoreError> {
        let namespace = if kind.namespaced() { namespace } else { "" };
        self.shared.reads.query(1);
        let row = sqlx::query(
            "SELECT l.revision, l.value FROM current c JOIN log l ON l.revision = c.revision
             WHERE c.kind = ?1 AND c.namespace = ?2 AND c.name = ?3",
        )
        .bind(kind.as_str())
        .bind(namespace)
        .bind(name)
        .fetch_optional(&self.shared.pool)
        .await?;
        self.shared.reads.rows(u64::from(row.is_some()));
        let row = row.ok_or_else(|| StoreError::NotFound {
            kind,
            namespace: namespace.into(),
            name: name.into(),
        })?;
        decode(&self.shared.sealer, &row)
    }

    /// Lists the objects of a kind (in one namespace, or all with `None`), sorted by namespace
    /// and name, with the revision they were read at: watch from it to follow changes.
    pub async fn list(
        &self,
        kind: Kind,
        namespace: Option<&str>,
    ) -> Result<(u64, Vec<Object>), StoreError> {
        self.shared.reads.query(2);
        let mut tx = self.shared.pool.begin().await?;
        let revision: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(revision), 0) FROM log")
            .fetch_one(&mut *tx)
            .await?;
        let rows = sqlx::query(
            "SELECT l.revision, l.value FROM current c JOIN log l ON l.revision = c.revision
             WHERE c.kind = ?1 AND (?2 IS NULL OR c.namespace = ?2)
             ORDER BY c.namespace, c.name",
        )
        .bind(kind.as_str())
        .bind(namespace)
        .fetch_all(&mut *tx)
        .await?;
        tx.rollback().await?;
        self.shared.reads.rows(rows.len() as u64);
        let items = rows
            .iter()
            .map(|r| decode(&self.shared.sealer, r))
            .collect::<Result<Vec<_>, _>>()?;
        Ok((revision as u64, items))
    }

    /// Watches changes after `from_revision` (exclusive; `0` = from the beginning of the kept
    /// history): first the log's history, then live events as writes commit. `None` filters
    /// match everything. Fails with [`StoreError::Compacted`] if `from_revision` is older than
    /// the compaction point. (The wire's "0 = from now" is the API layer's job: pass
    /// [`Store::current_revision`].)
    pub async fn watch(
        &self,
        kind: Option<Kind>,
        namespace: Option<String>,
        from_revision: u64,
    ) -> Result<Watcher, StoreError> {
        Watcher::register(
            &self.shared.hub,
            self.shared.pool.clone(),
            self.shared.sealer.clone(),
            Filter { kind, namespace },
            from_revision,
            self.shared.config.watch_queue,
            self.shared.reads.clone(),
        )
    }

    /// Closes the store: waits for queued writes to commit, stops the writer thread, closes the
    /// connections (SQLite checkpoints the WAL into the database file). Other handles' calls
    /// fail with [`StoreError::Closed`] afterwards; watchers end with it.
    pub async fn close(self) {
        self.shared.writes.close();
        let _ = self.shared.writer_done.recv().await;
        self.shared.pool.close().await;
    }
}

/// A new object UID: 8 bytes from the system's CSPRNG, as 16 hex digits.
fn new_uid() -> Result<String, StoreError> {
    use ring::rand::SecureRandom;
    let mut b = [0u8; 8];
    ring::rand::SystemRandom::new()
        .fill(&mut b)
        .map_err(|_| StoreError::BatchFailed("the system's random generator failed".into()))?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

/// Closes the hub when the writer thread ends, however it ends.
struct CloseHubOnDrop(Arc<Hub>);

impl Drop for CloseHubOnDrop {
    fn drop(&mut self) {
        self.0.close();
    }
}

/// Decodes a `(revision, value)` row.
fn decode(sealer: &seal::Sealer, row: &sqlx::sqlite::SqliteRow) -> Result<Object, StoreError> {
    let revision = row.try_get::<i64, _>(0)? as u64;
    let value: &str = row.try_get(1)?;
    let json = sealer.open(value, revision)?;
    serde_json::from_str(&json).map_err(|source| StoreError::Decode { revision, source })
}

/// Loads (or creates) the secrets key, then seals in place the secrets an older master wrote
/// in the clear (history included), in one transaction.
async fn open_sealer(
    conn: &mut SqliteConnection,
    data_dir: &Path,
) -> Result<seal::Sealer, StoreError> {
    let pattern = format!("{}%", seal::PREFIX);
    let has_sealed: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM log WHERE kind = 'secret' AND value LIKE ?1)",
    )
    .bind(&pattern)
    .fetch_one(&mut *conn)
    .await?;
    let sealer = seal::Sealer::load_or_create(data_dir, has_sealed)?;
    let mut tx = conn.begin().await?;
    let rows =
        sqlx::query("SELECT revision, value FROM log WHERE kind = 'secret' AND value NOT LIKE ?1")
            .bind(&pattern)
            .fetch_all(&mut *tx)
            .await?;
    for row in &rows {
        let revision = row.try_get::<i64, _>(0)?;
        let value: String = row.try_get(1)?;
        let sealed = sealer.seal(Kind::Secret, value, revision as u64)?;
        sqlx::query("UPDATE log SET value = ?1 WHERE revision = ?2")
            .bind(sealed)
            .bind(revision)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    if !rows.is_empty() {
        tracing::info!(
            values = rows.len(),
            "sealed the secrets stored in the clear by an older master"
        );
    }
    Ok(sealer)
}

/// `chmod mode path` (the data directory 0700, database files 0600).
fn set_mode(path: &Path, mode: u32) -> Result<(), StoreError> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(|source| {
        StoreError::Io {
            path: path.to_owned(),
            source,
        }
    })
}

/// When a file last changed (its inode: a rename or a restore counts), for ordering files.
fn changed_at(m: &std::fs::Metadata) -> (i64, i64) {
    use std::os::unix::fs::MetadataExt;
    (m.ctime(), m.ctime_nsec()).max((m.mtime(), m.mtime_nsec()))
}

/// The newest `bramble.db.corrupt-*` file in `data_dir` if it is newer than the database at
/// `db` (or the database is missing): a damaged store was moved aside and nothing replaced it.
fn newer_corrupt_file(data_dir: &Path, db: &Path) -> Result<Option<PathBuf>, StoreError> {
    let io = |source| StoreError::Io {
        path: data_dir.to_owned(),
        source,
    };
    let prefix = format!("{DB_FILE}.corrupt-");
    let mut newest: Option<((i64, i64), PathBuf)> = None;
    for entry in std::fs::read_dir(data_dir).map_err(io)? {
        let entry = entry.map_err(io)?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        // The database itself, not its moved-aside -wal/-shm companions.
        if !name.starts_with(&prefix) || name.ends_with("-wal") || name.ends_with("-shm") {
            continue;
        }
        let Ok(m) = entry.metadata() else { continue };
        let at = changed_at(&m);
        if newest.as_ref().is_none_or(|(t, _)| at > *t) {
            newest = Some((at, entry.path()));
        }
    }
    let Some((corrupt_at, corrupt)) = newest else {
        return Ok(None);
    };
    match std::fs::metadata(db) {
        Ok(m) if changed_at(&m) > corrupt_at => Ok(None),
        Ok(_) => Ok(Some(corrupt)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Some(corrupt)),
        Err(source) => Err(StoreError::Io {
            path: db.to_owned(),
            source,
        }),
    }
}

/// SQLITE_FULL (13), in any extended form: the disk (or the database's size limit) is full.
pub(crate) fn is_full(e: &sqlx::Error) -> bool {
    e.as_database_error()
        .and_then(|d| d.code())
        .and_then(|c| c.parse::<i64>().ok())
        .is_some_and(|c| c & 0xff == 13)
}

/// SQLITE_CORRUPT (11) or SQLITE_NOTADB (26), in any extended form.
fn is_corruption(e: &sqlx::Error) -> bool {
    e.as_database_error()
        .and_then(|d| d.code())
        .and_then(|c| c.parse::<i64>().ok())
        .is_some_and(|c| matches!(c & 0xff, 11 | 26))
}

/// `PRAGMA quick_check`: `Ok(Err(detail))` if the database is damaged.
async fn quick_check(conn: &mut SqliteConnection) -> Result<Result<(), String>, StoreError> {
    let rows = match sqlx::query("PRAGMA quick_check")
        .fetch_all(&mut *conn)
        .await
    {
        Ok(rows) => rows,
        Err(e) if is_corruption(&e) => return Ok(Err(e.to_string())),
        Err(e) => return Err(e.into()),
    };
    let lines: Vec<String> = rows
        .iter()
        .filter_map(|r| r.try_get::<String, _>(0).ok())
        .collect();
    if lines.len() == 1 && lines[0] == "ok" {
        Ok(Ok(()))
    } else {
        let mut detail = lines.iter().take(3).cloned().collect::<Vec<_>>().join("; ");
        if lines.len() > 3 {
            detail.push_str(&format!("; and {} more problems", lines.len() - 3));
        }
        if detail.is_empty() {
            detail = "quick_check returned nothing".into();
        }
        Ok(Err(format!("quick_check: {detail}")))
    }
}

/// Moves a damaged database and its -wal/-shm aside and builds the error that says so.
fn move_aside(path: &Path, detail: String) -> StoreError {
    let ts = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let mut moved_to = PathBuf::from(format!("{}.corrupt-{ts}", path.display()));
    let mut n = 1;
    while moved_to.exists() {
        moved_to = PathBuf::from(format!("{}.corrupt-{ts}.{n}", path.display()));
        n += 1;
    }
    if let Err(source) = std::fs::rename(path, &moved_to) {
        return StoreError::Io {
            path: path.to_owned(),
            source,
        };
    }
    for suffix in ["-wal", "-shm"] {
        let from = PathBuf::from(format!("{}{suffix}", path.display()));
        if from.exists() {
            let to = PathBuf::from(format!("{}{suffix}", moved_to.display()));
            if let Err(source) = std::fs::rename(&from, &to) {
                return StoreError::Io { path: from, source };
            }
        }
    }
    tracing::error!(path = %path.display(), moved_to = %moved_to.display(), %detail, "store database is corrupt");
    StoreError::Corrupt {
        path: path.to_owned(),
        moved_to,
        detail,
    }
}
