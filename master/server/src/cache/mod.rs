//! The master's one watch-fed, typed in-memory cache of the store (Kubernetes' informers,
//! Nomad's state-store snapshots).
//!
//! One task ([`Cache::run`]) lists every stored kind once and then follows one store watch; every
//! loop of the master reads from here instead of re-reading SQLite:
//!
//! - **Objects by kind, namespace and name** (`BTreeMap`s of `Arc<Object>`, in the store's list
//!   order): [`Cache::get`], [`Cache::pod`].
//! - **Indexes**: pods by node ([`Cache::pods_on`]), pods by owner UID ([`Cache::pods_owned_by`])
//!   and the pods waiting for a node ([`Cache::has_pending_pods`]). Each is updated by the event
//!   that changes it, so a lookup costs the pods it returns, not the cluster.
//! - **Immutable snapshots** ([`Cache::snapshot`]): per kind an `Arc<Vec<T>>` of typed objects,
//!   materialized lazily after a change of that kind and shared by every loop until the next one.
//!   The pure cores (`sched`, `controllers`) read these slices unchanged.
//! - **Changes**: a [`Subscription`] per loop gets the batch of changes (old and new object) since
//!   it last looked, coalesced, or [`Delta::Resync`] after a re-list; loops decide from the old
//!   and new objects whether the change concerns them.
//! - **Read-your-writes**: a loop that wrote at revision `r` (or that must see everything written
//!   before it was poked) waits with [`Cache::wait_for`] until the cache has applied `r`.
//!
//! The cache is only a reader: writes go to the store, and come back through the watch.

#[cfg(test)]
mod tests;

use std::any::Any;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use bramble_wire::msg::WatchEvent;
use bramble_wire::objects::{
    Artifact, ConfigMap, DaemonSet, Deployment, Image, Job, Kind, Namespace, Node, Object, Pod,
    PodPhase, Registry, ReplicaSet, Secret, Service,
};
use futures_lite::FutureExt;

use crate::store::{Event, Store, StoreError};

/// `(namespace, name)`; the namespace is empty for cluster-scoped kinds.
pub type Key = (String, String);

/// Pending changes a subscriber may hold before it is told to resync instead.
const MAX_PENDING: usize = 50_000;

/// Events applied under one lock at most.
const MAX_BATCH: usize = 1024;

/// A stored kind the cache hands out as typed snapshots.
pub trait Cached: Clone + Send + Sync + 'static {
    /// Its kind.
    const KIND: Kind;
    /// The typed object inside `o`, if it is of this kind.
    fn of(o: &Object) -> Option<&Self>;
}

macro_rules! cached {
    ($($t:ident),*) => {$(
        impl Cached for $t {
            const KIND: Kind = Kind::$t;
            fn of(o: &Object) -> Option<&Self> {
                match o {
                    Object::$t(x) => Some(x),
                    _ => None,
                }
            }
        }
    )*};
}
cached!(
    Namespace, Node, Pod, Deployment, ReplicaSet, DaemonSet, Job, Service, ConfigMap, Secret,
    Artifact, Image, Registry
);

/// The kinds the store holds (events and endpoints live only in memory elsewhere).
fn stored(kind: Kind) -> bool {
    !matches!(kind, Kind::Event | Kind::Endpoints)
}

/// One object's change: its state before and after (`None`: absent).
#[derive(Debug, Clone)]
pub struct Change {
    /// Kind of the object.
    pub kind: Kind,
    /// Before (absent for a creation).
    pub old: Option<Arc<Object>>,
    /// After (absent for a deletion).
    pub new: Option<Arc<Object>>,
}

impl Change {
    /// The pod before and after, if this is a pod's change.
    pub fn pods(&self) -> (Option<&Pod>, Option<&Pod>) {
        (
            self.old.as_deref().and_then(Pod::of),
            self.new.as_deref().and_then(Pod::of),
        )
    }
}

/// What a subscriber gets: the changes since it last looked, or "look at everything".
#[derive(Debug)]
pub enum Delta {
    /// Everything may have changed (first call, re-list after a lagged watch, too many changes
    /// pending): do a full pass.
    Resync,
    /// These changes, in revision order.
    Changes(Vec<Change>),
}

#[derive(Debug)]
struct SubShared {
    pending: Mutex<Option<Delta>>,
    wake: async_channel::Sender<()>,
}

impl SubShared {
    fn push(&self, changes: &[Change], resync: bool) {
        let mut p = lock(&self.pending);
        let next = match p.take() {
            _ if resync => Delta::Resync,
            Some(Delta::Resync) => Delta::Resync,
            Some(Delta::Changes(mut v)) => {
                if v.len() + changes.len() > MAX_PENDING {
                    Delta::Resync
                } else {
                    v.extend_from_slice(changes);
                    Delta::Changes(v)
                }
            }
            None => Delta::Changes(changes.to_vec()),
        };
        *p = Some(next);
        drop(p);
        let _ = self.wake.try_send(());
    }
}

/// A loop's view of the changes ([`Cache::subscribe`]).
#[derive(Debug)]
pub struct Subscription {
    shared: Arc<SubShared>,
    wake: async_channel::Receiver<()>,
}

impl Subscription {
    /// The changes since the last call (waits for some); the first call returns
    /// [`Delta::Resync`].
    pub async fn next(&mut self) -> Delta {
        loop {
            if let Some(d) = self.try_next() {
                return d;
            }
            if self.wake.recv().await.is_err() {
                return Delta::Resync;
            }
        }
    }

    /// The changes since the last call, without waiting.
    pub fn try_next(&mut self) -> Option<Delta> {
        let d = lock(&self.shared.pending).take();
        match d {
            Some(Delta::Changes(v)) if v.is_empty() => None,
            d => d,
        }
    }
}

/// Every loop's typed view of the cluster at one revision; cheap to take and to clone.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// The store revision it reflects.
    pub revision: u64,
    /// Namespaces.
    pub namespaces: Arc<Vec<Namespace>>,
    /// Nodes.
    pub nodes: Arc<Vec<Node>>,
    /// Pods.
    pub pods: Arc<Vec<Pod>>,
    /// Deployments.
    pub deployments: Arc<Vec<Deployment>>,
    /// Replica sets.
    pub replicasets: Arc<Vec<ReplicaSet>>,
    /// Daemon sets.
    pub daemonsets: Arc<Vec<DaemonSet>>,
    /// Jobs.
    pub jobs: Arc<Vec<Job>>,
    /// Services.
    pub services: Arc<Vec<Service>>,
    /// Artifacts.
    pub artifacts: Arc<Vec<Artifact>>,
    /// Images.
    pub images: Arc<Vec<Image>>,
}

impl Snapshot {
    /// The controllers' view of this snapshot.
    pub fn controllers<'a>(
        &'a self,
        now_ms: u64,
        seed: u64,
        used_names: &'a std::collections::HashSet<(String, String)>,
    ) -> crate::controllers::Snapshot<'a> {
        crate::controllers::Snapshot {
            now_ms,
            nodes: &self.nodes,
            pods: &self.pods,
            deployments: &self.deployments,
            replicasets: &self.replicasets,
            daemonsets: &self.daemonsets,
            jobs: &self.jobs,
            namespaces: &self.namespaces,
            seed,
            used_names,
        }
    }
}

#[derive(Default)]
struct Inner {
    /// Last applied revision.
    revision: u64,
    tables: HashMap<Kind, BTreeMap<Key, Arc<Object>>>,
    /// Pods by `spec.node_name`.
    pods_by_node: HashMap<String, BTreeSet<Key>>,
    /// Pods by the UID of each owner.
    pods_by_owner: HashMap<String, BTreeSet<Key>>,
    /// Pods without a node, phase Pending.
    pending: BTreeSet<Key>,
    /// Materialized typed lists (`Arc<Vec<T>>`), dropped when their kind changes.
    lists: HashMap<Kind, Arc<dyn Any + Send + Sync>>,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inner")
            .field("revision", &self.revision)
            .finish_non_exhaustive()
    }
}

fn key_of(o: &Object) -> Key {
    let m = o.meta();
    (m.namespace.clone(), m.name.clone())
}

impl Inner {
    fn index_pod(&mut self, key: &Key, p: &Pod, add: bool) {
        fn edit(map: &mut HashMap<String, BTreeSet<Key>>, k: &str, key: &Key, add: bool) {
            if add {
                map.entry(k.to_string()).or_default().insert(key.clone());
            } else if let Some(s) = map.get_mut(k) {
                s.remove(key);
                if s.is_empty() {
                    map.remove(k);
                }
            }
        }
        if let Some(n) = &p.spec.node_name {
            edit(&mut self.pods_by_node, n, key, add);
        }
        for o in &p.meta.owners {
            edit(&mut self.pods_by_owner, &o.uid, key, add);
        }
        if p.spec.node_name.is_none() && p.status.phase == PodPhase::Pending {
            if add {
                self.pending.insert(key.clone());
            } else {
                self.pending.remove(key);
            }
        }
    }

    /// Puts (`Some`) or removes (`None`) an object; returns the change, if any.
    fn set(&mut self, kind: Kind, key: Key, new: Option<Arc<Object>>) -> Option<Change> {
        let table = self.tables.entry(kind).or_default();
        let old = match &new {
            Some(o) => table.insert(key.clone(), o.clone()),
            None => table.remove(&key),
        };
        if old.is_none() && new.is_none() {
            return None;
        }
        self.lists.remove(&kind);
        if kind == Kind::Pod {
            if let Some(Object::Pod(p)) = old.as_deref() {
                self.index_pod(&key, p, false);
            }
            if let Some(Object::Pod(p)) = new.as_deref() {
                self.index_pod(&key, p, true);
            }
        }
        Some(Change { kind, old, new })
    }

    /// Applies one watch event; `listed` holds each kind's list revision after a (re)list:
    /// events at or below it only replace older states of objects the list saw.
    fn apply(&mut self, ev: &Event, listed: &HashMap<Kind, u64>) -> Option<Change> {
        let (obj, deleted) = match &ev.event {
            WatchEvent::Put(o) => (o, false),
            WatchEvent::Deleted(o) => (o, true),
        };
        let kind = obj.kind();
        self.revision = self.revision.max(ev.revision);
        if !stored(kind) {
            return None;
        }
        let key = key_of(obj);
        let have = self
            .tables
            .get(&kind)
            .and_then(|t| t.get(&key))
            .map(|o| o.meta().revision);
        let old_event = listed.get(&kind).is_some_and(|&r| ev.revision <= r);
        match (deleted, have) {
            // The listed state (or a later event) is newer.
            (_, Some(h)) if h >= ev.revision => None,
            (true, Some(_)) => self.set(kind, key, None),
            (true, None) => None,
            (false, None) if old_event => None, // created and deleted before the list
            (false, _) => self.set(kind, key, Some(Arc::new(obj.clone()))),
        }
    }

    /// The typed list of a kind, materialized once per change of that kind.
    fn list<T: Cached>(&mut self) -> Arc<Vec<T>> {
        if let Some(l) = self.lists.get(&T::KIND)
            && let Ok(v) = l.clone().downcast::<Vec<T>>()
        {
            return v;
        }
        let v: Arc<Vec<T>> = Arc::new(
            self.tables
                .get(&T::KIND)
                .map(|t| t.values().filter_map(|o| T::of(o).cloned()).collect())
                .unwrap_or_default(),
        );
        self.lists.insert(T::KIND, v.clone());
        v
    }
}

/// The revision up to which a fresh set of lists is whole: the oldest list's (each is at least
/// the watch's start `from`).
fn whole_revision(from: u64, listed: &HashMap<Kind, u64>) -> u64 {
    listed.values().copied().min().unwrap_or(from).max(from)
}

/// The cache. Create with [`Cache::new`], feed with [`Cache::run`].
#[derive(Debug, Default)]
pub struct Cache {
    inner: Mutex<Inner>,
    /// Mirror of `inner.revision`, readable without the lock.
    revision: AtomicU64,
    /// Whether the first list was applied.
    synced: std::sync::atomic::AtomicBool,
    subs: Mutex<Vec<Weak<SubShared>>>,
    waiters: Mutex<Vec<(u64, async_channel::Sender<()>)>>,
    /// Objects handed out by the per-key and per-index lookups (for tests: what a status report
    /// costs).
    visits: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Cache {
    /// An empty cache (not synced: [`Cache::wait_for`] waits for the first list).
    pub fn new() -> Arc<Cache> {
        Arc::new(Cache::default())
    }

    /// The last revision applied.
    pub fn revision(&self) -> u64 {
        self.revision.load(Ordering::Acquire)
    }

    /// Objects handed out by lookups so far (not counting whole snapshots).
    pub fn visits(&self) -> u64 {
        self.visits.load(Ordering::Relaxed)
    }

    /// Whether the first list was applied.
    pub fn synced(&self) -> bool {
        self.synced.load(Ordering::Acquire)
    }

    /// Waits until the cache has applied `revision` (and its first list), at most `timeout`;
    /// returns whether it has.
    pub async fn wait_for(&self, revision: u64, timeout: Duration) -> bool {
        let rx = {
            let mut w = lock(&self.waiters);
            if self.synced() && self.revision() >= revision {
                return true;
            }
            let (tx, rx) = async_channel::bounded(1);
            w.push((revision, tx));
            rx
        };
        async { rx.recv().await.is_ok() }
            .or(async {
                smol::Timer::after(timeout).await;
                false
            })
            .await
            || (self.synced() && self.revision() >= revision)
    }

    /// Waits (up to 2 s) until the cache holds everything the store committed so far.
    pub async fn catch_up(&self, store: &Store) -> bool {
        let want = store.current_revision();
        let ok = self.wait_for(want, Duration::from_secs(2)).await;
        if !ok {
            tracing::warn!(
                want,
                have = self.revision(),
                "cache: still behind the store after 2 s"
            );
        }
        ok
    }

    /// A new subscriber; its first [`Subscription::next`] is [`Delta::Resync`].
    pub fn subscribe(&self) -> Subscription {
        let (tx, rx) = async_channel::bounded(1);
        let shared = Arc::new(SubShared {
            pending: Mutex::new(Some(Delta::Resync)),
            wake: tx,
        });
        let _ = shared.wake.try_send(());
        lock(&self.subs).push(Arc::downgrade(&shared));
        Subscription { shared, wake: rx }
    }

    /// One object.
    pub fn get(&self, kind: Kind, namespace: &str, name: &str) -> Option<Arc<Object>> {
        let ns = if kind.namespaced() { namespace } else { "" };
        let inner = lock(&self.inner);
        let o = inner
            .tables
            .get(&kind)?
            .get(&(ns.to_string(), name.to_string()))
            .cloned();
        if o.is_some() {
            self.visits.fetch_add(1, Ordering::Relaxed);
        }
        o
    }

    /// One typed object.
    pub fn get_typed<T: Cached>(&self, namespace: &str, name: &str) -> Option<T> {
        self.get(T::KIND, namespace, name)
            .and_then(|o| T::of(&o).cloned())
    }

    /// One pod.
    pub fn pod(&self, namespace: &str, name: &str) -> Option<Pod> {
        self.get_typed(namespace, name)
    }

    fn pods_in(&self, index: impl Fn(&Inner) -> Option<&BTreeSet<Key>>) -> Vec<Pod> {
        let inner = lock(&self.inner);
        let Some(keys) = index(&inner) else {
            return Vec::new();
        };
        let Some(table) = inner.tables.get(&Kind::Pod) else {
            return Vec::new();
        };
        let out: Vec<Pod> = keys
            .iter()
            .filter_map(|k| table.get(k).and_then(|o| Pod::of(o)).cloned())
            .collect();
        self.visits.fetch_add(out.len() as u64, Ordering::Relaxed);
        out
    }

    /// The pods bound to `node`, sorted by namespace and name.
    pub fn pods_on(&self, node: &str) -> Vec<Pod> {
        self.pods_in(|i| i.pods_by_node.get(node))
    }

    /// The pods one of whose owners has `uid`, sorted by namespace and name.
    pub fn pods_owned_by(&self, uid: &str) -> Vec<Pod> {
        self.pods_in(|i| i.pods_by_owner.get(uid))
    }

    /// Whether some pod waits for a node (no node, phase Pending).
    pub fn has_pending_pods(&self) -> bool {
        !lock(&self.inner).pending.is_empty()
    }

    /// The typed list of one kind, sorted by namespace and name (shared until it changes).
    pub fn list<T: Cached>(&self) -> Arc<Vec<T>> {
        lock(&self.inner).list::<T>()
    }

    /// Every loop's view at one revision.
    pub fn snapshot(&self) -> Snapshot {
        let mut i = lock(&self.inner);
        Snapshot {
            revision: i.revision,
            namespaces: i.list(),
            nodes: i.list(),
            pods: i.list(),
            deployments: i.list(),
            replicasets: i.list(),
            daemonsets: i.list(),
            jobs: i.list(),
            services: i.list(),
            artifacts: i.list(),
            images: i.list(),
        }
    }

    /// Replaces the whole content with `objects` (a fresh list at `revision`); every subscriber
    /// resyncs.
    pub fn replace_all(&self, revision: u64, objects: Vec<Object>) {
        {
            let mut inner = lock(&self.inner);
            let mut next = Inner {
                revision: revision.max(inner.revision),
                ..Inner::default()
            };
            for o in objects {
                let kind = o.kind();
                if stored(kind) {
                    next.set(kind, key_of(&o), Some(Arc::new(o)));
                }
            }
            *inner = next;
            self.revision.store(inner.revision, Ordering::Release);
            self.synced.store(true, Ordering::Release);
        }
        self.notify(&[], true);
    }

    /// Applies watch events (in revision order); returns the changes they made. `listed` as in
    /// [`Cache::run`]: each kind's revision of the last list (empty when none is older).
    pub fn apply(&self, events: &[Event], listed: &HashMap<Kind, u64>) -> Vec<Change> {
        let changes: Vec<Change> = {
            let mut inner = lock(&self.inner);
            let c = events
                .iter()
                .filter_map(|ev| inner.apply(ev, listed))
                .collect();
            self.revision.store(inner.revision, Ordering::Release);
            c
        };
        self.notify(&changes, false);
        changes
    }

    fn notify(&self, changes: &[Change], resync: bool) {
        if resync || !changes.is_empty() {
            let mut subs = lock(&self.subs);
            subs.retain(|s| match s.upgrade() {
                Some(s) => {
                    s.push(changes, resync);
                    true
                }
                None => false,
            });
        }
        if self.synced() {
            let rev = self.revision();
            lock(&self.waiters).retain(|(want, tx)| {
                if *want <= rev {
                    let _ = tx.try_send(());
                    false
                } else {
                    !tx.is_closed()
                }
            });
        }
    }

    /// Lists every stored kind and follows the store from there, forever (re-listing after a
    /// lagged or compacted watch). Ends when the store closes.
    pub async fn run(self: Arc<Self>, store: Store) {
        loop {
            match self.follow(&store).await {
                Err(StoreError::Closed) => return,
                Err(e) => {
                    tracing::debug!("cache: watch restarts: {e}");
                    smol::Timer::after(Duration::from_millis(100)).await;
                }
                Ok(()) => return,
            }
        }
    }

    async fn follow(&self, store: &Store) -> Result<(), StoreError> {
        // Watch from before the lists: nothing falls between them; older events are filtered by
        // each kind's list revision.
        let from = store.current_revision();
        let mut w = store.watch(None, None, from).await?;
        let mut listed = HashMap::new();
        let mut all = Vec::new();
        for kind in Kind::ALL.into_iter().filter(|k| stored(*k)) {
            let (rev, objs) = store.list(kind, None).await?;
            listed.insert(kind, rev);
            all.extend(objs);
        }
        // Each kind was listed at its own revision: the cache is whole only up to the oldest of
        // them (a pod written after the pods' list and before a later kind's list is still in
        // the watch queue). Claiming the newest would let `catch_up` return before it arrives.
        let whole = whole_revision(from, &listed);
        self.replace_all(whole, all);
        tracing::debug!(revision = whole, "cache: listed the store");
        loop {
            let first = w.next().await?;
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match futures_lite::future::poll_once(w.next()).await {
                    Some(Ok(ev)) => batch.push(ev),
                    Some(Err(e)) => {
                        self.apply(&batch, &listed);
                        return Err(e);
                    }
                    None => break,
                }
            }
            self.apply(&batch, &listed);
            if listed.values().all(|&r| r < self.revision()) {
                listed.clear();
            }
        }
    }
}
