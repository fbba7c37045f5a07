//! The `events` table: what `bramble get events` and `describe` show, kept across restarts.
//!
//! Events are written by the writer thread like any other write ([`super::Store::record_event`]),
//! so they share group commits with the writes that caused them; a repeat of an event about the
//! same object (same UID, reason and message) folds into its count. Bounds — at most
//! [`super::StoreConfig::max_events`] rows, none older than [`super::StoreConfig::event_ttl`] —
//! are enforced in the batch that writes an event: an idle store writes nothing. Events do not
//! move the revision and are not part of watches.

use bramble_wire::objects::{Event, Kind, Meta};
use sqlx::Row;
use sqlx::sqlite::SqliteConnection;

use super::{Store, StoreError};

/// The longest message kept (a longer one is cut at a character boundary).
pub const MAX_MESSAGE: usize = 1024;

/// Records `ev` inside the writer's transaction: folds it into an existing row about the same
/// object, reason and message, or inserts it.
pub(crate) async fn write(conn: &mut SqliteConnection, ev: &Event) -> Result<(), StoreError> {
    let kind = ev.object_kind.map(Kind::as_str).unwrap_or("");
    let message = cut(&ev.message, MAX_MESSAGE);
    let updated = sqlx::query(
        "UPDATE events SET count = count + ?1, last_ms = MAX(last_ms, ?2)
          WHERE object_uid = ?3 AND kind = ?4 AND namespace = ?5 AND object_name = ?6
            AND reason = ?7 AND message = ?8",
    )
    .bind(i64::from(ev.count.max(1)))
    .bind(ev.last_ms as i64)
    .bind(&ev.object_uid)
    .bind(kind)
    .bind(&ev.meta.namespace)
    .bind(&ev.object_name)
    .bind(&ev.reason)
    .bind(message)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    if updated == 0 {
        sqlx::query(
            "INSERT INTO events (namespace, kind, object_name, object_uid, reason, message,
                                 count, first_ms, last_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?8)",
        )
        .bind(&ev.meta.namespace)
        .bind(kind)
        .bind(&ev.object_name)
        .bind(&ev.object_uid)
        .bind(&ev.reason)
        .bind(message)
        .bind(i64::from(ev.count.max(1)))
        .bind(ev.last_ms as i64)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// Enforces the bounds (in the batch that wrote events): removes events last seen before
/// `oldest_ms`, then all but the `max` most recently seen. Returns how many went.
pub(crate) async fn trim(
    conn: &mut SqliteConnection,
    max: usize,
    oldest_ms: u64,
) -> Result<u64, StoreError> {
    let aged = sqlx::query("DELETE FROM events WHERE last_ms < ?1")
        .bind(oldest_ms as i64)
        .execute(&mut *conn)
        .await?
        .rows_affected();
    let over = sqlx::query(
        "DELETE FROM events WHERE id IN
           (SELECT id FROM events ORDER BY last_ms DESC, id DESC LIMIT -1 OFFSET ?1)",
    )
    .bind(max.max(1) as i64)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    Ok(aged + over)
}

fn cut(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

fn row(r: &sqlx::sqlite::SqliteRow) -> Result<Event, StoreError> {
    let id: i64 = r.try_get("id")?;
    let name: String = r.try_get("object_name")?;
    let kind: String = r.try_get("kind")?;
    Ok(Event {
        meta: Meta {
            // Unique for the database's life (AUTOINCREMENT never reuses an id).
            name: format!("{name}.{id:x}"),
            namespace: r.try_get("namespace")?,
            created_ms: r.try_get::<i64, _>("first_ms")? as u64,
            ..Default::default()
        },
        object_kind: Kind::parse(&kind),
        object_name: name,
        reason: r.try_get("reason")?,
        message: r.try_get("message")?,
        count: r.try_get::<i64, _>("count")?.clamp(0, i64::from(u32::MAX)) as u32,
        last_ms: r.try_get::<i64, _>("last_ms")? as u64,
        object_uid: r.try_get("object_uid")?,
    })
}

impl Store {
    /// Records an event (durable when this returns; folded into an earlier identical one about
    /// the same object). `ev.meta.name` is ignored: the store names events.
    pub async fn record_event(&self, ev: Event) -> Result<(), StoreError> {
        self.send(super::writer::Op::Event(Box::new(ev)), true)
            .await
            .map(|_| ())
    }

    /// Queues an event for the writer without waiting for its commit: it shares the batch of
    /// whatever writes are queued with it (a scheduler pass binding many pods records as many
    /// events without as many commits). Fails only when the store is closed.
    pub fn queue_event(&self, ev: Event) -> Result<(), StoreError> {
        let (reply, _) = async_channel::bounded(1);
        self.shared
            .writes
            .try_send(super::writer::Pending {
                op: super::writer::Op::Event(Box::new(ev)),
                reply,
                linger: true,
            })
            .map_err(|_| StoreError::Closed)
    }

    /// Events of a namespace (`None`: all; cluster-scoped objects' events, with an empty
    /// namespace, are in every namespace's list), least recently seen first.
    pub async fn events(&self, namespace: Option<&str>) -> Result<Vec<Event>, StoreError> {
        self.shared.reads.query(1);
        let rows = sqlx::query(
            "SELECT * FROM events WHERE ?1 IS NULL OR namespace = ?1 OR namespace = ''
              ORDER BY last_ms, id",
        )
        .bind(namespace)
        .fetch_all(&self.shared.pool)
        .await?;
        self.shared.reads.rows(rows.len() as u64);
        rows.iter().map(row).collect()
    }

    /// The names of objects of `kind` that have events, per namespace: names a generator must
    /// not give again while their history exists.
    pub async fn names_with_events(&self, kind: Kind) -> Result<Vec<(String, String)>, StoreError> {
        self.shared.reads.query(1);
        let rows =
            sqlx::query("SELECT DISTINCT namespace, object_name FROM events WHERE kind = ?1")
                .bind(kind.as_str())
                .fetch_all(&self.shared.pool)
                .await?;
        self.shared.reads.rows(rows.len() as u64);
        rows.iter()
            .map(|r| Ok((r.try_get("namespace")?, r.try_get("object_name")?)))
            .collect()
    }
}
