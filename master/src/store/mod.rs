//! The SQLite store (sqlx, WAL): one global revision, objects, a change log for watch.
