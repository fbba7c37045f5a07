//! Counts the read queries issued to SQLite (and the rows they returned), so tests and the
//! cluster bench can tell what a status report or a loop costs in reads.

use std::sync::atomic::{AtomicU64, Ordering};

/// Read queries and rows so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Reads {
    /// SQL statements issued by reads (`get`: 1, `list`: 2, a watch catch-up page: 2).
    pub queries: u64,
    /// Rows those statements returned (objects decoded).
    pub rows: u64,
}

/// The shared counter.
#[derive(Debug, Default)]
pub(crate) struct Counter {
    queries: AtomicU64,
    rows: AtomicU64,
}

impl Counter {
    pub(crate) fn query(&self, n: u64) {
        self.queries.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn rows(&self, n: u64) {
        self.rows.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn get(&self) -> Reads {
        Reads {
            queries: self.queries.load(Ordering::Relaxed),
            rows: self.rows.load(Ordering::Relaxed),
        }
    }
}
