//! Watch: catch up from the log, then follow the in-process broadcast (kine's `After` + broadcaster).
//!
//! The writer publishes each committed batch to the [`Hub`] while holding its lock; a new watcher
//! registers under the same lock and learns the last published revision `R`. Everything up to `R`
//! is in the database (published only after commit), so the watcher reads `(from, R]` from the log
//! and everything after `R` arrives on its queue: no gap, no duplicate.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use bramble_wire::msg::WatchEvent;
use bramble_wire::objects::{Kind, Object};
use sqlx::Row;
use sqlx::sqlite::SqlitePool;

use super::StoreError;

/// One change: the revision of the write and what it did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Revision of the write.
    pub revision: u64,
    /// The object as written (`Put`) or its last state (`Deleted`, with `meta.revision` set to the
    /// delete's revision).
    pub event: WatchEvent,
}

impl Event {
    fn object(&self) -> &Object {
        match &self.event {
            WatchEvent::Put(o) | WatchEvent::Deleted(o) => o,
        }
    }
}

/// Which objects a watcher wants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Filter {
    pub(crate) kind: Option<Kind>,
    pub(crate) namespace: Option<String>,
}

impl Filter {
    fn matches(&self, obj: &Object) -> bool {
        self.kind.is_none_or(|k| k == obj.kind())
            && self
                .namespace
                .as_deref()
                .is_none_or(|ns| ns == obj.meta().namespace)
    }
}

/// A registered watcher, as the writer sees it.
#[derive(Debug)]
struct Subscriber {
    filter: Filter,
    /// Unbounded on purpose: its memory grows with what is queued and is given back as the
    /// watcher reads (a bounded channel allocates every slot up front: 1,024 events of ~430
    /// bytes each, ~440 KB per idle watch). `limit` bounds it instead.
    queue: async_channel::Sender<Event>,
    /// Most events queued before the watcher counts as lagged.
    limit: usize,
    lagged: Arc<AtomicBool>,
}

/// The broadcast point between the writer and the watchers.
#[derive(Debug)]
pub(crate) struct Hub {
    state: Mutex<HubState>,
}

#[derive(Debug)]
pub(crate) struct HubState {
    /// Last committed and published revision.
    pub(crate) revision: u64,
    /// Log rows at or below this revision may have been compacted away.
    pub(crate) compacted: u64,
    subscribers: Vec<Subscriber>,
    closed: bool,
}

impl Hub {
    pub(crate) fn new(revision: u64, compacted: u64) -> Hub {
        Hub {
            state: Mutex::new(HubState {
                revision,
                compacted,
                subscribers: Vec::new(),
                closed: false,
            }),
        }
    }

    /// The state; a panic elsewhere while holding the lock does not make it unusable (every
    /// update is a plain assignment or a push).
    pub(crate) fn lock(&self) -> MutexGuard<'_, HubState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Publishes a committed batch. Watchers whose queue is full are dropped and marked lagged.
    pub(crate) fn publish(&self, revision: u64, compacted: u64, events: &[Event]) {
        let mut st = self.lock();
        st.revision = revision;
        st.compacted = compacted;
        st.subscribers.retain(|sub| {
            for ev in events.iter().filter(|ev| sub.filter.matches(ev.object())) {
                if sub.queue.len() >= sub.limit {
                    sub.lagged.store(true, Ordering::Release);
                    tracing::debug!(revision = ev.revision, "store watcher lagged; dropping it");
                    return false;
                }
                match sub.queue.try_send(ev.clone()) {
                    Ok(()) => {}
                    Err(async_channel::TrySendError::Full(_)) => {
                        sub.lagged.store(true, Ordering::Release);
                        tracing::debug!(
                            revision = ev.revision,
                            "store watcher lagged; dropping it"
                        );
                        return false;
                    }
                    Err(async_channel::TrySendError::Closed(_)) => return false,
                }
            }
            true
        });
    }

    /// Drops every watcher: they see [`StoreError::Closed`].
    pub(crate) fn close(&self) {
        let mut st = self.lock();
        st.closed = true;
        st.subscribers.clear();
    }
}

/// Rows read per catch-up query.
const CATCH_UP_PAGE: i64 = 256;

/// A stream of changes, from [`Store::watch`](super::Store::watch).
///
/// Call [`Watcher::next`] in a loop. Errors are final: after [`StoreError::Lagged`] or
/// [`StoreError::Compacted`] the caller re-lists and starts a new watch from the list's revision.
#[derive(Debug)]
pub struct Watcher {
    pool: SqlitePool,
    sealer: super::seal::Sealer,
    filter: Filter,
    /// Last revision delivered or skipped.
    cursor: u64,
    /// Catch-up reads the log up to here; later events come from `live`.
    catch_up_to: u64,
    backlog: VecDeque<Event>,
    live: async_channel::Receiver<Event>,
    lagged: Arc<AtomicBool>,
    done: bool,
    reads: Arc<super::reads::Counter>,
}

impl Watcher {
    /// Registers a watcher; the catch-up itself happens lazily in [`Watcher::next`].
    pub(crate) fn register(
        hub: &Hub,
        pool: SqlitePool,
        sealer: super::seal::Sealer,
        filter: Filter,
        from_revision: u64,
        queue: usize,
        reads: Arc<super::reads::Counter>,
    ) -> Result<Watcher, StoreError> {
        let (tx, rx) = async_channel::unbounded();
        let lagged = Arc::new(AtomicBool::new(false));
        let mut st = hub.lock();
        if st.closed {
            return Err(StoreError::Closed);
        }
        if from_revision < st.compacted {
            return Err(StoreError::Compacted {
                requested: from_revision,
                oldest: st.compacted,
            });
        }
        st.subscribers.push(Subscriber {
            filter: filter.clone(),
            queue: tx,
            limit: queue.max(1),
            lagged: lagged.clone(),
        });
        let catch_up_to = st.revision;
        drop(st);
        Ok(Watcher {
            pool,
            sealer,
            filter,
            cursor: from_revision,
            catch_up_to,
            backlog: VecDeque::new(),
            live: rx,
            lagged,
            done: false,
            reads,
        })
    }

    /// The next change, in revision order. Waits for one if there is none yet.
    ///
    /// Fails with [`StoreError::Lagged`] when the watcher fell behind, [`StoreError::Compacted`]
    /// when compaction overtook a slow catch-up, and [`StoreError::Closed`] when the store closed.
    pub async fn next(&mut self) -> Result<Event, StoreError> {
        loop {
            if self.lagged.load(Ordering::Acquire) {
                self.done = true;
                return Err(StoreError::Lagged);
            }
            if self.done {
                return Err(StoreError::Closed);
            }
            if let Some(ev) = self.backlog.pop_front() {
                return Ok(ev);
            }
            if self.cursor < self.catch_up_to {
                if let Err(e) = self.read_page().await {
                    self.done = true;
                    return Err(e);
                }
                continue;
            }
            match self.live.recv().await {
                Ok(ev) if ev.revision <= self.cursor => continue,
                Ok(ev) => {
                    self.cursor = ev.revision;
                    return Ok(ev);
                }
                Err(_) => {
                    if self.lagged.load(Ordering::Acquire) {
                        continue;
                    }
                    self.done = true;
                    return Err(StoreError::Closed);
                }
            }
        }
    }

    /// Reads the next page of `(cursor, catch_up_to]` into the backlog, in one read transaction so
    /// the compaction point and the rows agree.
    async fn read_page(&mut self) -> Result<(), StoreError> {
        self.reads.query(2);
        let mut tx = self.pool.begin().await?;
        let compacted: i64 = sqlx::query_scalar("SELECT value FROM meta WHERE key = 'compacted'")
            .fetch_one(&mut *tx)
            .await?;
        let compacted = compacted as u64;
        if self.cursor < compacted {
            return Err(StoreError::Compacted {
                requested: self.cursor,
                oldest: compacted,
            });
        }
        let rows = sqlx::query(
            "SELECT revision, deleted, value FROM log
             WHERE revision > ?1 AND revision <= ?2
               AND (?3 IS NULL OR kind = ?3) AND (?4 IS NULL OR namespace = ?4)
             ORDER BY revision LIMIT ?5",
        )
        .bind(self.cursor as i64)
        .bind(self.catch_up_to as i64)
        .bind(self.filter.kind.map(Kind::as_str))
        .bind(self.filter.namespace.as_deref())
        .bind(CATCH_UP_PAGE)
        .fetch_all(&mut *tx)
        .await?;
        tx.rollback().await?;
        self.reads.rows(rows.len() as u64);
        let full = rows.len() as i64 == CATCH_UP_PAGE;
        for row in rows {
            let revision = row.try_get::<i64, _>(0)? as u64;
            let deleted: bool = row.try_get(1)?;
            let value: &str = row.try_get(2)?;
            let json = self.sealer.open(value, revision)?;
            let obj: Object = serde_json::from_str(&json)
                .map_err(|source| StoreError::Decode { revision, source })?;
            let event = if deleted {
                WatchEvent::Deleted(obj)
            } else {
                WatchEvent::Put(obj)
            };
            self.backlog.push_back(Event { revision, event });
            self.cursor = revision;
        }
        if !full {
            self.cursor = self.catch_up_to;
        }
        Ok(())
    }
}
