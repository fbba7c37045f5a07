//! The single writer: drains pending writes into one transaction per batch (group commit).
//!
//! Each write in a batch is validated against the state inside the batch's transaction, which
//! includes the batch's earlier writes, so optimistic concurrency is exact: of two updates that
//! expect the same revision, the first one applied wins and the second sees the new revision.
//! Waiters get their result only after the commit returned, i.e. after the WAL was fsynced
//! (`synchronous=FULL`).

use std::sync::Arc;

use bramble_wire::msg::WatchEvent;
use bramble_wire::objects::{Kind, Object};
use sqlx::sqlite::SqliteConnection;
use sqlx::{Connection, Row, SqliteExecutor};

use super::watch::{Event, Hub};
use super::{StoreConfig, StoreError};

/// A write request.
#[derive(Debug)]
pub(crate) enum Op {
    Create(Object),
    Update {
        obj: Object,
        expected: Option<u64>,
    },
    Delete {
        kind: Kind,
        namespace: String,
        name: String,
        expected: Option<u64>,
    },
    /// Record an event (the `events` table; no revision, no watch event).
    Event(Box<bramble_wire::objects::Event>),
}

/// A write request and where its answer goes.
#[derive(Debug)]
pub(crate) struct Pending {
    pub(crate) op: Op,
    pub(crate) reply: async_channel::Sender<Result<u64, StoreError>>,
    /// May wait for company ([`super::Store::update_status`]).
    pub(crate) linger: bool,
}

/// The writer's state.
#[derive(Debug)]
pub(crate) struct Writer {
    pub(crate) conn: SqliteConnection,
    /// How to open a fresh write connection after a failed batch.
    pub(crate) options: sqlx::sqlite::SqliteConnectOptions,
    /// The database (named in errors).
    pub(crate) path: std::path::PathBuf,
    /// The last batch failed: `conn` may be stuck inside a transaction (a `COMMIT` that failed
    /// with SQLITE_FULL leaves it open, and sqlx's transaction depth with it), so the next batch
    /// opens a fresh connection first.
    pub(crate) broken: bool,
    pub(crate) requests: async_channel::Receiver<Pending>,
    pub(crate) hub: Arc<Hub>,
    pub(crate) config: StoreConfig,
    /// Last committed revision.
    pub(crate) revision: u64,
    /// Compaction point.
    pub(crate) compacted: u64,
    /// Seals secrets before they are written.
    pub(crate) sealer: super::seal::Sealer,
    /// The read counters, logged after each committed batch (target `bramble_store_reads`).
    pub(crate) reads: Arc<super::reads::Counter>,
}

impl Writer {
    /// Runs until every sender is gone (or the channel is closed) and the queue is drained.
    pub(crate) async fn run(mut self) {
        use futures_lite::FutureExt;
        let max_batch = self.config.max_batch.max(1);
        let linger = self.config.linger;
        // When the previous batch committed: a write soon after it is part of a stream.
        let mut last_commit: Option<std::time::Instant> = None;
        while let Ok(first) = self.requests.recv().await {
            let mut batch = vec![first];
            while batch.len() < max_batch {
                match self.requests.try_recv() {
                    Ok(p) => batch.push(p),
                    Err(_) => break,
                }
            }
            let streaming = last_commit.is_some_and(|t| t.elapsed() < linger * 5);
            if streaming && !linger.is_zero() && batch.iter().all(|p| p.linger) {
                let deadline = std::time::Instant::now() + linger;
                while batch.len() < max_batch && batch.last().is_some_and(|p| p.linger) {
                    let next = async { self.requests.recv().await.ok() }
                        .or(async {
                            smol::Timer::at(deadline).await;
                            None
                        })
                        .await;
                    match next {
                        Some(p) => batch.push(p),
                        None => break,
                    }
                }
            }
            self.commit_batch(batch).await;
            last_commit = Some(std::time::Instant::now());
        }
        self.hub.close();
        if let Err(e) = self.conn.close().await {
            tracing::warn!(error = %e, "closing the store's write connection failed");
        }
    }

    async fn commit_batch(&mut self, batch: Vec<Pending>) {
        let n = batch.len();
        match self.try_batch(&batch).await {
            Ok((results, events, compacted)) => {
                if let Some(last) = events.last() {
                    self.revision = last.revision;
                }
                let r = self.reads.get();
                tracing::debug!(target: "bramble_store_reads", revision = self.revision, queries = r.queries, rows = r.rows, "store reads so far");
                self.compacted = compacted;
                // Publish before answering, so a writer that then watches from its own revision
                // finds the event either in the log or on its queue.
                self.hub.publish(self.revision, self.compacted, &events);
                for (p, r) in batch.into_iter().zip(results) {
                    let _ = p.reply.try_send(r);
                }
            }
            Err(e) => {
                self.broken = true;
                let e = match e {
                    StoreError::Db(db) if super::is_full(&db) => StoreError::Full {
                        path: self.path.clone(),
                        detail: db.to_string(),
                    },
                    e => e,
                };
                tracing::error!(error = %e, writes = n, "store batch failed to commit");
                let msg = e.to_string();
                let mut first = Some(e);
                for p in batch {
                    let err = first
                        .take()
                        .unwrap_or_else(|| StoreError::BatchFailed(msg.clone()));
                    let _ = p.reply.try_send(Err(err));
                }
                // The transaction rolled back; nothing moved.
            }
        }
    }

    /// Replaces the write connection after a failed batch; the old one is closed, which rolls
    /// back whatever it still held. Checks that the failed batch really left nothing behind.
    async fn reconnect(&mut self) -> Result<(), StoreError> {
        use sqlx::ConnectOptions;
        let mut conn = self.options.connect().await?;
        let revision: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(revision), 0) FROM log")
            .fetch_one(&mut conn)
            .await?;
        let old = std::mem::replace(&mut self.conn, conn);
        drop(old);
        self.broken = false;
        if revision as u64 != self.revision {
            // A COMMIT reported as failed that landed after all: follow the database.
            tracing::error!(
                expected = self.revision,
                found = revision,
                "the store's last revision moved under a failed commit; watchers should re-list"
            );
            self.revision = revision as u64;
        }
        tracing::info!(path = %self.path.display(), revision = self.revision, "store write connection reopened after a failed batch");
        Ok(())
    }

    /// Applies a batch in one transaction. The outer error means nothing was committed; inner
    /// errors are per-write verdicts (nothing written for those).
    #[allow(clippy::type_complexity)]
    async fn try_batch(
        &mut self,
        batch: &[Pending],
    ) -> Result<(Vec<Result<u64, StoreError>>, Vec<Event>, u64), StoreError> {
        if self.broken {
            self.reconnect().await?;
        }
        let mut tx = self.conn.begin_with("BEGIN IMMEDIATE").await?;
        let mut revision = self.revision;
        let mut results = Vec::with_capacity(batch.len());
        let mut events = Vec::new();
        let mut recorded = false;
        for p in batch {
            if let Op::Event(ev) = &p.op {
                super::events::write(&mut tx, ev).await?;
                recorded = true;
                results.push(Ok(revision));
                continue;
            }
            match apply(&mut tx, &self.sealer, &p.op, revision + 1).await {
                Ok(event) => {
                    revision = event.revision;
                    results.push(Ok(revision));
                    events.push(event);
                }
                Err(e) if e.is_db() => return Err(e),
                Err(e) => results.push(Err(e)),
            }
        }
        let mut compacted = self.compacted;
        let (history, every) = (self.config.history.max(1), self.config.compact_every.max(1));
        if !events.is_empty() && revision.saturating_sub(compacted) >= history + every {
            compacted = revision - history;
            let removed = sqlx::query(
                "DELETE FROM log WHERE revision <= ?1
                   AND NOT EXISTS (SELECT 1 FROM current c WHERE c.revision = log.revision)",
            )
            .bind(compacted as i64)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            sqlx::query("UPDATE meta SET value = ?1 WHERE key = 'compacted'")
                .bind(compacted as i64)
                .execute(&mut *tx)
                .await?;
            tracing::debug!(compacted, removed, "store log compacted");
        }
        if recorded {
            // Bounded where events are written: an idle store writes nothing.
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0);
            let oldest = now.saturating_sub(self.config.event_ttl.as_millis() as u64);
            let removed = super::events::trim(&mut tx, self.config.max_events, oldest).await?;
            if removed > 0 {
                tracing::debug!(removed, "old events removed");
            }
        }
        if events.is_empty() && !recorded {
            // Only failed verdicts: nothing to make durable.
            tx.rollback().await?;
        } else {
            tx.commit().await?;
        }
        Ok((results, events, compacted))
    }
}

/// Checks the key of a write: names are required, and namespaces go with namespaced kinds only.
pub(crate) fn check_key(kind: Kind, namespace: &str, name: &str) -> Result<(), StoreError> {
    let reason = if name.is_empty() {
        "the name is empty"
    } else if kind.namespaced() && namespace.is_empty() {
        "the namespace is empty: set one (e.g. \"default\")"
    } else if !kind.namespaced() && !namespace.is_empty() {
        "this kind is cluster-scoped: remove the namespace"
    } else {
        return Ok(());
    };
    Err(StoreError::Invalid {
        kind,
        namespace: namespace.into(),
        name: name.into(),
        reason,
    })
}

/// The current revision of an object and, if asked, its value.
async fn current(
    ex: impl SqliteExecutor<'_>,
    kind: Kind,
    namespace: &str,
    name: &str,
) -> Result<Option<(u64, String)>, StoreError> {
    let row = sqlx::query(
        "SELECT c.revision, l.value FROM current c JOIN log l ON l.revision = c.revision
         WHERE c.kind = ?1 AND c.namespace = ?2 AND c.name = ?3",
    )
    .bind(kind.as_str())
    .bind(namespace)
    .bind(name)
    .fetch_optional(ex)
    .await?;
    match row {
        None => Ok(None),
        Some(row) => Ok(Some((row.try_get::<i64, _>(0)? as u64, row.try_get(1)?))),
    }
}

/// Applies one write at `revision` inside the batch's transaction.
async fn apply(
    conn: &mut SqliteConnection,
    sealer: &super::seal::Sealer,
    op: &Op,
    revision: u64,
) -> Result<Event, StoreError> {
    let (kind, namespace, name, expected) = match op {
        Op::Create(obj) | Op::Update { obj, .. } => {
            let m = obj.meta();
            let expected = if let Op::Update { expected, .. } = op {
                *expected
            } else {
                None
            };
            (obj.kind(), m.namespace.as_str(), m.name.as_str(), expected)
        }
        Op::Delete {
            kind,
            namespace,
            name,
            expected,
        } => (*kind, namespace.as_str(), name.as_str(), *expected),
        // Written by `events::write`, never here.
        Op::Event(_) => return Err(StoreError::BatchFailed("an event reached apply".into())),
    };
    check_key(kind, namespace, name)?;
    let existing = current(&mut *conn, kind, namespace, name).await?;
    let not_found = || StoreError::NotFound {
        kind,
        namespace: namespace.into(),
        name: name.into(),
    };
    let prev = match (op, &existing) {
        (Op::Create(_), None) => 0,
        (Op::Create(_), Some(_)) => {
            return Err(StoreError::AlreadyExists {
                kind,
                namespace: namespace.into(),
                name: name.into(),
            });
        }
        (_, None) => return Err(not_found()),
        (_, Some((actual, _))) => {
            if let Some(expected) = expected
                && expected != *actual
            {
                return Err(StoreError::Conflict {
                    kind,
                    namespace: namespace.into(),
                    name: name.into(),
                    expected,
                    actual: *actual,
                });
            }
            *actual
        }
    };
    let (deleted, event) = match op {
        Op::Create(obj) | Op::Update { obj, .. } => {
            let mut obj = obj.clone();
            obj.meta_mut().revision = revision;
            (false, WatchEvent::Put(obj))
        }
        Op::Delete { .. } => {
            let value = existing.map(|(_, v)| v).unwrap_or_default();
            let json = sealer.open(&value, prev)?;
            let mut obj: Object =
                serde_json::from_str(&json).map_err(|source| StoreError::Decode {
                    revision: prev,
                    source,
                })?;
            obj.meta_mut().revision = revision;
            (true, WatchEvent::Deleted(obj))
        }
        Op::Event(_) => return Err(StoreError::BatchFailed("an event reached apply".into())),
    };
    let (WatchEvent::Put(obj) | WatchEvent::Deleted(obj)) = &event;
    let value =
        serde_json::to_string(obj).map_err(|source| StoreError::Decode { revision, source })?;
    let value = sealer.seal(kind, value, revision)?;
    sqlx::query(
        "INSERT INTO log (revision, kind, namespace, name, deleted, prev_revision, value)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )
    .bind(revision as i64)
    .bind(kind.as_str())
    .bind(namespace)
    .bind(name)
    .bind(deleted)
    .bind(prev as i64)
    .bind(value)
    .execute(&mut *conn)
    .await?;
    if deleted {
        sqlx::query("DELETE FROM current WHERE kind = ?1 AND namespace = ?2 AND name = ?3")
            .bind(kind.as_str())
            .bind(namespace)
            .bind(name)
            .execute(&mut *conn)
            .await?;
    } else {
        sqlx::query(
            "INSERT INTO current (kind, namespace, name, revision) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (kind, namespace, name) DO UPDATE SET revision = excluded.revision",
        )
        .bind(kind.as_str())
        .bind(namespace)
        .bind(name)
        .bind(revision as i64)
        .execute(&mut *conn)
        .await?;
    }
    Ok(Event { revision, event })
}
