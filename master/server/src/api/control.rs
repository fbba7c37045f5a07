//! The controller loop (level-triggered, like kube-controller-manager): read a snapshot, run the
//! pure reconcilers of [`crate::controllers`], apply their actions with optimistic concurrency,
//! record events (in the store). Runs again after its own writes and on store changes; a
//! conflict just means the next pass sees newer state.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use bramble_wire::objects::{Event, Kind, Meta, Object};
use futures_lite::FutureExt;

use super::{Master, now_ms};
use crate::cache::{Change, Delta};
use crate::controllers::{self, Action};
use crate::store::StoreError;

/// Events: what `bramble get events` and `describe` show, persisted in the store (bounded by
/// count and age there, see [`crate::store::events`]) and keyed by the UID of the object they are
/// about. Also remembers which pod names have events, so that generated names are not given
/// again while their history exists.
#[derive(Debug)]
pub struct Events {
    store: crate::store::Store,
    /// (namespace, name) of pods with events (a superset: reloaded from the store when it grows
    /// past twice the store's bound).
    pod_names: std::sync::Mutex<Arc<HashSet<(String, String)>>>,
    reload_at: usize,
}

impl Events {
    /// Events in `store`; loads the names of pods that have events.
    pub async fn new(store: crate::store::Store, max_events: usize) -> Result<Events, StoreError> {
        let names = store.names_with_events(Kind::Pod).await?;
        Ok(Events {
            store,
            pod_names: std::sync::Mutex::new(Arc::new(names.into_iter().collect())),
            reload_at: max_events.max(64).saturating_mul(2),
        })
    }

    /// Records an event about the object `kind` `namespace/name` with UID `uid`, folding a
    /// repeat into a count (queued for the store's writer, not waited for). A store failure is
    /// logged, never the caller's failure.
    pub async fn record(
        &self,
        kind: Kind,
        namespace: &str,
        name: &str,
        uid: &str,
        reason: &str,
        message: &str,
    ) {
        let now = now_ms();
        if kind == Kind::Pod {
            let key = (namespace.to_string(), name.to_string());
            let reload = {
                let mut names = self.pod_names.lock().unwrap_or_else(|e| e.into_inner());
                if !names.contains(&key) {
                    Arc::make_mut(&mut names).insert(key);
                }
                names.len() > self.reload_at
            };
            if reload && let Ok(fresh) = self.store.names_with_events(Kind::Pod).await {
                *self.pod_names.lock().unwrap_or_else(|e| e.into_inner()) =
                    Arc::new(fresh.into_iter().collect());
            }
        }
        let ev = Event {
            meta: Meta {
                namespace: namespace.to_string(),
                created_ms: now,
                ..Default::default()
            },
            object_kind: Some(kind),
            object_name: name.to_string(),
            reason: reason.to_string(),
            message: message.to_string(),
            count: 1,
            last_ms: now,
            object_uid: uid.to_string(),
        };
        // Not waited for: it commits with the writes around it.
        if let Err(e) = self.store.queue_event(ev) {
            tracing::warn!(object = %format!("{}/{name}", kind.as_str()), %namespace, %reason, "event not recorded: {e}");
        }
    }

    /// Events of a namespace (or all), least recently seen first.
    pub async fn list(&self, namespace: Option<&str>) -> Result<Vec<Object>, StoreError> {
        Ok(self
            .store
            .events(namespace)
            .await?
            .into_iter()
            .map(Object::Event)
            .collect())
    }

    /// The (namespace, name) of pods that have events (or had, recently).
    pub fn pod_names(&self) -> Arc<HashSet<(String, String)>> {
        self.pod_names
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// Whether a change may matter to the controllers. Only one kind of change does not: a status
/// change of a pod that has no owner, stays on its node and stays (non-)terminal. No controller
/// looks at such a pod's status (replica sets, jobs and daemon sets count their own pods; the
/// garbage collector and eviction look at owners, binding and terminal phase), so the pass it
/// would cause returns nothing; under a steady stream of status reports this keeps the loop idle.
pub(crate) fn controllers_care(c: &Change) -> bool {
    use bramble_wire::objects::{Object, PodPhase};
    if matches!(
        c.kind,
        Kind::ConfigMap | Kind::Secret | Kind::Service | Kind::Artifact
    ) {
        return false;
    }
    let (Some(Object::Pod(a)), Some(Object::Pod(b))) = (c.old.as_deref(), c.new.as_deref()) else {
        return true;
    };
    let terminal = |p: PodPhase| matches!(p, PodPhase::Succeeded | PodPhase::Failed);
    !(a.meta.owners.is_empty()
        && b.meta.owners.is_empty()
        && a.meta.uid == b.meta.uid
        && a.meta.name == b.meta.name
        && a.spec.node_name == b.spec.node_name
        && terminal(a.status.phase) == terminal(b.status.phase)
        && (a.status.phase == PodPhase::Pending) == (b.status.phase == PodPhase::Pending))
}

fn cares(d: &Delta) -> bool {
    match d {
        Delta::Resync => true,
        Delta::Changes(c) => c.iter().any(controllers_care),
    }
}

/// One pass over the cache's snapshot (once it holds every committed write, this loop's own
/// included): returns how many actions were applied, and the next time-based deadline.
pub(crate) async fn reconcile_once(m: &Master) -> Result<(usize, Option<u64>), StoreError> {
    m.cache.catch_up(&m.store).await;
    if !m.cache.synced() {
        // Never reconcile an empty view: it would recreate every owned pod.
        return Ok((0, Some(now_ms() + 500)));
    }
    let view = m.cache.snapshot();
    let used = m.events.pod_names();
    let snap = view.controllers(now_ms(), random_seed(), &used);
    let timings = m.cfg.timings();
    let actions = controllers::reconcile(&snap, &timings);
    let deadline = controllers::next_deadline(&snap, &timings);
    let mut applied = 0;
    for a in actions {
        let r = match a {
            Action::Create(mut obj) => {
                // The store gives the UID and creation time.
                let meta = obj.meta_mut();
                meta.uid.clear();
                meta.created_ms = 0;
                meta.revision = 0;
                m.store.create(obj).await.map(|_| ())
            }
            Action::Update(obj) => {
                let rev = obj.meta().revision;
                m.store.update(obj, Some(rev)).await.map(|_| ())
            }
            Action::Delete {
                kind,
                namespace,
                name,
                revision,
            } => m
                .store
                .delete(kind, &namespace, &name, Some(revision))
                .await
                .map(|_| ()),
            Action::Event {
                kind,
                namespace,
                name,
                uid,
                reason,
                message,
            } => {
                tracing::info!(object = %format!("{}/{name}", kind.as_str()), %namespace, %reason, "{message}");
                m.events
                    .record(kind, &namespace, &name, &uid, &reason, &message)
                    .await;
                continue;
            }
        };
        match r {
            Ok(()) => applied += 1,
            // Someone else wrote first: the next pass sees the newer state.
            Err(
                StoreError::Conflict { .. }
                | StoreError::NotFound { .. }
                | StoreError::AlreadyExists { .. },
            ) => applied += 1,
            Err(e) => return Err(e),
        }
    }
    Ok((applied, deadline))
}

/// A fresh random value per pass, for generated names (std's per-instance random hasher keys).
fn random_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(now_ms());
    h.finish()
}

/// Runs the controllers on every store change (coalesced), after their own writes, and when a
/// time-based condition comes due (`min_ready`, eviction timeouts, job deadlines: the pure
/// `next_deadline`). Only reads at idle, every 30 s at most.
pub(crate) async fn controller_loop(m: Arc<Master>) {
    let mut changes = m.cache.subscribe();
    let mut busy = true;
    let mut wake_at: Option<u64> = None;
    loop {
        if busy {
            smol::Timer::after(Duration::from_millis(50)).await;
            // Whatever changed meanwhile is read by the pass below.
            let _ = changes.try_next();
        } else {
            let wait_ms = wake_at
                .map(|t| t.saturating_sub(now_ms()))
                .unwrap_or(30_000)
                .clamp(10, 30_000);
            let until = std::time::Instant::now() + Duration::from_millis(wait_ms);
            loop {
                let d = async { Some(changes.next().await) }
                    .or(async {
                        smol::Timer::at(until).await;
                        None
                    })
                    .await;
                match d {
                    None => break,
                    Some(d) if cares(&d) => break,
                    Some(_) => {}
                }
            }
            // Coalesce a burst of changes into one pass.
            let _ = changes.try_next();
        }
        match reconcile_once(&m).await {
            Ok((n, deadline)) => {
                busy = n > 0;
                wake_at = deadline;
                if busy {
                    m.poke_scheduler();
                }
            }
            Err(e) => {
                tracing::warn!("controllers: {e}");
                busy = false;
                wake_at = Some(now_ms() + 1000);
            }
        }
    }
}
