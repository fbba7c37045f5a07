//! Per-client limits (Kubernetes' API priority and fairness, in small): what one source address
//! may hold before it authenticated, and what one credential may hold after.
//!
//! - **Unauthenticated connections** (the TLS handshake and the Hello) live in a [`Pending`]
//!   table with a cap per source address and a global cap. A new connection is always taken; when
//!   a cap is hit, a pending connection of that address (or of the address holding the most) is
//!   evicted instead: the oldest idle one (no byte received, none waiting unread); when none is
//!   idle, the oldest one still handshaking after [`BUSY_GRACE_MS`] (a slow or stalled peer);
//!   else the newcomer itself. A worker or an admin sends its TLS ClientHello at once and is
//!   through in milliseconds, so a flood of idle sockets from one address, even theirs, never
//!   keeps them out (and the CLI dials again if its connection was closed before it spoke).
//! - **Authenticated sessions** do not count against the pending caps (their room is reserved).
//! - **Watches** are counted per credential ([`WatchSlots`]).
//!
//! The tables are pure (no I/O, time passed in); the accept loop and the client sessions drive
//! them.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bramble_wire::msg::{ApiError, ErrorCode};

/// A connection that sent bytes is evicted (when no idle one is left) only once it has been
/// handshaking this long: a real client is through well before.
pub const BUSY_GRACE_MS: u64 = 1_000;

/// A connection that has not authenticated yet, as the [`Pending`] table holds it.
#[derive(Debug)]
struct Entry<H> {
    ip: IpAddr,
    /// When it was accepted (ms).
    since_ms: u64,
    /// Bytes received so far (shared with the connection's reader): 0 means idle.
    read: Arc<AtomicUsize>,
    /// Dropped to evict the connection (its task watches the other end).
    handle: H,
}

/// Unauthenticated connections, in arrival order, with per-address and global caps.
#[derive(Debug)]
pub struct Pending<H> {
    per_addr: usize,
    total: usize,
    next: u64,
    conns: BTreeMap<u64, Entry<H>>,
    by_addr: HashMap<IpAddr, usize>,
}

impl<H> Pending<H> {
    /// At most `per_addr` pending connections per address and `total` in all.
    pub fn new(per_addr: usize, total: usize) -> Pending<H> {
        Pending {
            per_addr: per_addr.max(1),
            total: total.max(1),
            next: 0,
            conns: BTreeMap::new(),
            by_addr: HashMap::new(),
        }
    }

    /// Pending connections now.
    pub fn len(&self) -> usize {
        self.conns.len()
    }

    /// Whether none is pending.
    pub fn is_empty(&self) -> bool {
        self.conns.is_empty()
    }

    /// Pending connections from `ip`.
    pub fn from_addr(&self, ip: IpAddr) -> usize {
        self.by_addr.get(&ip).copied().unwrap_or(0)
    }

    /// Takes a new connection from `ip` at `now_ms`; returns its key and the handles of the
    /// connections it evicted (drop them to close those connections; the newcomer's own handle
    /// may be among them). `waiting(h)` says whether bytes wait unread on a connection (its task
    /// has not read them yet): such a connection is not idle.
    pub fn admit(
        &mut self,
        ip: IpAddr,
        now_ms: u64,
        read: Arc<AtomicUsize>,
        handle: H,
        waiting: impl Fn(&H) -> bool,
    ) -> (u64, Vec<H>) {
        let key = self.next;
        self.next += 1;
        let entry = Entry {
            ip,
            since_ms: now_ms,
            read,
            handle,
        };
        self.conns.insert(key, entry);
        *self.by_addr.entry(ip).or_insert(0) += 1;
        let mut evicted = Vec::new();
        while self.from_addr(ip) > self.per_addr {
            match self.victim(Some(ip), key, now_ms, &waiting) {
                Some(h) => evicted.push(h),
                None => break,
            }
        }
        while self.conns.len() > self.total {
            // From the address holding the most (an attacker's, not a lone board's).
            let heaviest = self
                .by_addr
                .iter()
                .max_by_key(|(_, n)| **n)
                .map(|(ip, _)| *ip);
            match self.victim(heaviest, key, now_ms, &waiting) {
                Some(h) => evicted.push(h),
                None => break,
            }
        }
        (key, evicted)
    }

    /// The connection `key` authenticated or closed: it leaves the table.
    pub fn remove(&mut self, key: u64) -> Option<H> {
        let e = self.conns.remove(&key)?;
        self.forget_one(e.ip);
        Some(e.handle)
    }

    fn forget_one(&mut self, ip: IpAddr) {
        if let Some(n) = self.by_addr.get_mut(&ip) {
            *n -= 1;
            if *n == 0 {
                self.by_addr.remove(&ip);
            }
        }
    }

    /// Evicts one connection of `ip` (or of any address): the oldest idle one, else the oldest
    /// handshaking past [`BUSY_GRACE_MS`], else the newcomer `new`.
    fn victim(
        &mut self,
        ip: Option<IpAddr>,
        new: u64,
        now_ms: u64,
        waiting: &impl Fn(&H) -> bool,
    ) -> Option<H> {
        let mine = |e: &Entry<H>| ip.is_none_or(|ip| e.ip == ip);
        let idle = |e: &Entry<H>| e.read.load(Ordering::Relaxed) == 0 && !waiting(&e.handle);
        let stalled = |e: &Entry<H>| now_ms.saturating_sub(e.since_ms) >= BUSY_GRACE_MS;
        let key = self
            .conns
            .iter()
            .find(|(_, e)| mine(e) && idle(e))
            .or_else(|| self.conns.iter().find(|(_, e)| mine(e) && stalled(e)))
            .map(|(k, _)| *k)
            .unwrap_or(new);
        self.remove(key)
    }
}

/// Open watches per credential (token id), with a cap.
#[derive(Debug)]
pub struct WatchSlots {
    max: usize,
    open: Mutex<HashMap<String, usize>>,
}

/// One open watch; dropping it gives the slot back.
#[derive(Debug)]
pub struct WatchSlot {
    slots: Arc<WatchSlots>,
    token: String,
}

impl WatchSlots {
    /// At most `max` open watches per credential.
    pub fn new(max: usize) -> Arc<WatchSlots> {
        Arc::new(WatchSlots {
            max,
            open: Mutex::new(HashMap::new()),
        })
    }

    /// Takes a slot for credential `token`, or says which limit and flag refused it.
    pub fn take(self: &Arc<Self>, token: &str) -> Result<WatchSlot, ApiError> {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let n = open.entry(token.to_string()).or_insert(0);
        if *n >= self.max {
            return Err(ApiError {
                code: ErrorCode::Unavailable,
                message: format!(
                    "credential {token} already has {} watches open, the master's limit \
                     (--max-watches-per-credential {}): close some (each `bramble get -w` or \
                     controller holds one) or raise the limit",
                    *n, self.max
                ),
            });
        }
        *n += 1;
        Ok(WatchSlot {
            slots: self.clone(),
            token: token.to_string(),
        })
    }

    /// Open watches of credential `token`.
    pub fn open(&self, token: &str) -> usize {
        let open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        open.get(token).copied().unwrap_or(0)
    }
}

impl Drop for WatchSlot {
    fn drop(&mut self) {
        let mut open = self.slots.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = open.get_mut(&self.token) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                open.remove(&self.token);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([192, 0, 2, last])
    }

    fn nothing_waiting<H>(_: &H) -> bool {
        false
    }

    fn counter(n: usize) -> Arc<AtomicUsize> {
        Arc::new(AtomicUsize::new(n))
    }

    #[test]
    fn a_full_address_evicts_its_own_idle_connections_first() {
        let mut p = Pending::new(3, 100);
        // a2's and a5's ClientHellos wait unread.
        let waits = |h: &&str| *h == "a2" || *h == "a5";
        let busy = counter(0);
        let (_, e) = p.admit(ip(1), 0, busy.clone(), "a0", waits);
        assert!(e.is_empty());
        p.admit(ip(1), 0, counter(0), "a1", waits);
        p.admit(ip(1), 0, counter(0), "a2", waits);
        busy.store(10, Ordering::Relaxed); // a0 is handshaking
        let (_, e) = p.admit(ip(1), 0, counter(0), "a3", waits);
        assert_eq!(e, vec!["a1"], "the oldest idle one goes, not the busy ones");
        p.admit(ip(2), 0, counter(0), "b0", waits);
        assert_eq!(p.from_addr(ip(1)), 3);
        assert_eq!(p.from_addr(ip(2)), 1);
        // A newcomer that has not spoken yet is idle too, but the older idle one goes first.
        let (_, e) = p.admit(ip(1), 0, counter(0), "a4", waits);
        assert_eq!(e, vec!["a3"]);
        // Only busy ones left besides a4: a4 goes; then the oldest busy one.
        let (_, e) = p.admit(ip(1), 0, counter(0), "a5", waits);
        assert_eq!(e, vec!["a4"]);
        for v in p.conns.values() {
            v.read.store(1, Ordering::Relaxed);
        }
        let (_, e) = p.admit(ip(1), 0, counter(0), "a6", |_: &&str| true);
        assert_eq!(
            e,
            vec!["a6"],
            "busy ones inside the grace stay; the newcomer goes"
        );
        let (_, e) = p.admit(ip(1), BUSY_GRACE_MS, counter(0), "a7", |_: &&str| true);
        assert_eq!(e, vec!["a0"], "past the grace, the oldest busy one goes");
    }

    #[test]
    fn the_global_cap_evicts_from_the_heaviest_address() {
        let mut p = Pending::new(100, 5);
        for name in ["x0", "x1", "x2", "x3"] {
            p.admit(ip(9), 0, counter(0), name, nothing_waiting);
        }
        p.admit(ip(1), 0, counter(0), "lone", nothing_waiting);
        let (_, e) = p.admit(ip(2), 0, counter(0), "worker", nothing_waiting);
        assert_eq!(e, vec!["x0"]);
        assert_eq!(p.len(), 5);
        assert_eq!(p.from_addr(ip(1)), 1);
    }

    #[test]
    fn remove_frees_the_address() {
        let mut p = Pending::new(1, 10);
        let (k, _) = p.admit(ip(1), 0, counter(0), 1, nothing_waiting);
        assert_eq!(p.remove(k), Some(1));
        assert!(p.is_empty() && p.by_addr.is_empty());
        assert_eq!(p.remove(k), None);
        // 10,000 connections from one address: the table stays at its cap.
        let mut p = Pending::new(64, 256);
        for i in 0..10_000 {
            p.admit(ip(1), i, counter(0), i, nothing_waiting);
        }
        assert_eq!(p.len(), 64);
    }

    #[test]
    fn watch_slots_cap_per_credential_and_come_back() {
        let s = WatchSlots::new(2);
        let a = s.take("node-1").unwrap();
        let _b = s.take("node-1").unwrap();
        let e = s.take("node-1").unwrap_err();
        assert!(
            e.message.contains("--max-watches-per-credential 2"),
            "{e:?}"
        );
        assert!(
            s.take("admin-1").is_ok(),
            "another credential has its own slots"
        );
        drop(a);
        assert_eq!(s.open("node-1"), 1);
        assert!(s.take("node-1").is_ok());
    }
}
