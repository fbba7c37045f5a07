//! The bounded answer cache of forwarded queries, keyed by (lower-case name, type, class).
//! Pure: the caller passes the time.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::message::Key;

/// Entries kept at most.
pub const CAPACITY: usize = 1024;

#[derive(Debug)]
struct Entry {
    bytes: Vec<u8>,
    stored: Instant,
    ttl: u32,
}

#[derive(Debug)]
pub struct Cache {
    entries: HashMap<Key, Entry>,
    capacity: usize,
}

impl Default for Cache {
    fn default() -> Self {
        Cache::new(CAPACITY)
    }
}

impl Cache {
    pub fn new(capacity: usize) -> Cache {
        Cache {
            entries: HashMap::new(),
            capacity: capacity.max(1),
        }
    }

    /// The stored answer for `key` and its age in whole seconds, if still alive at `now`.
    pub fn get(&mut self, key: &Key, now: Instant) -> Option<(Vec<u8>, u32)> {
        let e = self.entries.get(key)?;
        let age = now.saturating_duration_since(e.stored);
        if age >= Duration::from_secs(e.ttl.into()) {
            self.entries.remove(key);
            return None;
        }
        Some((e.bytes.clone(), age.as_secs() as u32))
    }

    /// Stores an answer for `ttl` seconds; when full, drops the expired entries, then the one
    /// closest to expiry.
    pub fn put(&mut self, key: Key, bytes: Vec<u8>, ttl: u32, now: Instant) {
        if ttl == 0 {
            return;
        }
        if !self.entries.contains_key(&key) && self.entries.len() >= self.capacity {
            self.entries.retain(|_, e| {
                now.saturating_duration_since(e.stored) < Duration::from_secs(e.ttl.into())
            });
            if self.entries.len() >= self.capacity {
                let victim = self
                    .entries
                    .iter()
                    .min_by_key(|(_, e)| e.stored + Duration::from_secs(e.ttl.into()))
                    .map(|(k, _)| k.clone());
                if let Some(k) = victim {
                    self.entries.remove(&k);
                }
            }
        }
        self.entries.insert(
            key,
            Entry {
                bytes,
                stored: now,
                ttl,
            },
        );
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: &str) -> Key {
        (n.into(), 1, 1)
    }

    #[test]
    fn entries_live_for_their_ttl_and_report_their_age() {
        let t0 = Instant::now();
        let mut c = Cache::new(4);
        c.put(key("a"), vec![1], 10, t0);
        assert_eq!(
            c.get(&key("a"), t0 + Duration::from_secs(3)),
            Some((vec![1], 3))
        );
        assert_eq!(c.get(&key("a"), t0 + Duration::from_secs(10)), None);
        assert!(c.is_empty());
        c.put(key("z"), vec![1], 0, t0);
        assert!(c.is_empty());
    }

    #[test]
    fn bounded_dropping_expired_then_soonest_to_expire() {
        let t0 = Instant::now();
        let mut c = Cache::new(3);
        c.put(key("short"), vec![1], 1, t0);
        c.put(key("long"), vec![2], 100, t0);
        c.put(key("mid"), vec![3], 50, t0);
        c.put(key("new"), vec![4], 100, t0 + Duration::from_secs(2)); // "short" expired
        assert_eq!(c.len(), 3);
        assert!(c.get(&key("mid"), t0).is_some());
        c.put(key("newer"), vec![5], 100, t0 + Duration::from_secs(2)); // evicts "mid"
        assert_eq!(c.len(), 3);
        assert!(c.get(&key("mid"), t0 + Duration::from_secs(2)).is_none());
        assert!(c.get(&key("long"), t0 + Duration::from_secs(2)).is_some());
        // Replacing a key does not evict another.
        c.put(key("long"), vec![6], 100, t0 + Duration::from_secs(2));
        assert_eq!(c.len(), 3);
    }
}
