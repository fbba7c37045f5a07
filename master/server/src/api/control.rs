//! The controller loop (level-triggered, like kube-controller-manager): read a snapshot, run the
//! pure reconcilers of [`crate::controllers`], apply their actions with optimistic concurrency,
//! record events in memory. Runs again after its own writes and on store changes; a conflict just
//! means the next pass sees newer state.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use bramble_wire::objects::{
    DaemonSet, Deployment, Event, Job, Kind, Meta, Namespace, Node, Object, Pod, ReplicaSet,
};
use futures_lite::FutureExt;

use super::{Master, now_ms};
use crate::controllers::{self, Action, Snapshot};
use crate::store::StoreError;

/// Events kept in memory (bounded): what `bramble get events` and `describe` show.
#[derive(Debug)]
pub struct Events {
    buf: async_lock::Mutex<VecDeque<Event>>,
    cap: usize,
    seq: std::sync::atomic::AtomicU64,
}

impl Events {
    /// At most `cap` events; the oldest go first.
    pub fn new(cap: usize) -> Events {
        Events {
            buf: async_lock::Mutex::new(VecDeque::new()),
            cap,
            seq: Default::default(),
        }
    }

    /// Records an event, folding a repeat of the last identical one into a count.
    pub async fn record(
        &self,
        kind: Kind,
        namespace: &str,
        name: &str,
        reason: &str,
        message: &str,
    ) {
        let now = now_ms();
        let mut buf = self.buf.lock().await;
        if let Some(e) = buf.iter_mut().rev().take(32).find(|e| {
            e.object_kind == Some(kind)
                && e.meta.namespace == namespace
                && e.object_name == name
                && e.reason == reason
                && e.message == message
        }) {
            e.count += 1;
            e.last_ms = now;
            return;
        }
        let n = self.seq.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if buf.len() >= self.cap {
            buf.pop_front();
        }
        buf.push_back(Event {
            meta: Meta {
                name: format!("{name}.{n:x}"),
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
        });
    }

    /// Events of a namespace (or all), oldest first.
    pub async fn list(&self, namespace: Option<&str>) -> Vec<Object> {
        let buf = self.buf.lock().await;
        buf.iter()
            .filter(|e| {
                namespace.is_none_or(|ns| e.meta.namespace == ns || e.meta.namespace.is_empty())
            })
            .cloned()
            .map(Object::Event)
            .collect()
    }

    /// Events about one object.
    pub async fn about(&self, kind: Kind, namespace: &str, name: &str) -> Vec<Event> {
        let buf = self.buf.lock().await;
        buf.iter()
            .filter(|e| {
                e.object_kind == Some(kind)
                    && e.object_name == name
                    && e.meta.namespace == namespace
            })
            .cloned()
            .collect()
    }
}

fn take<T>(objs: Vec<Object>, f: impl Fn(Object) -> Option<T>) -> Vec<T> {
    objs.into_iter().filter_map(f).collect()
}

/// Reads everything the controllers look at.
struct Owned {
    nodes: Vec<Node>,
    pods: Vec<Pod>,
    deployments: Vec<Deployment>,
    replicasets: Vec<ReplicaSet>,
    daemonsets: Vec<DaemonSet>,
    jobs: Vec<Job>,
    namespaces: Vec<Namespace>,
}

async fn read(m: &Master) -> Result<Owned, StoreError> {
    let list = |k| m.store.list(k, None);
    Ok(Owned {
        nodes: take(list(Kind::Node).await?.1, |o| {
            if let Object::Node(x) = o {
                Some(x)
            } else {
                None
            }
        }),
        pods: take(list(Kind::Pod).await?.1, |o| {
            if let Object::Pod(x) = o {
                Some(x)
            } else {
                None
            }
        }),
        deployments: take(list(Kind::Deployment).await?.1, |o| {
            if let Object::Deployment(x) = o {
                Some(x)
            } else {
                None
            }
        }),
        replicasets: take(list(Kind::ReplicaSet).await?.1, |o| {
            if let Object::ReplicaSet(x) = o {
                Some(x)
            } else {
                None
            }
        }),
        daemonsets: take(list(Kind::DaemonSet).await?.1, |o| {
            if let Object::DaemonSet(x) = o {
                Some(x)
            } else {
                None
            }
        }),
        jobs: take(list(Kind::Job).await?.1, |o| {
            if let Object::Job(x) = o {
                Some(x)
            } else {
                None
            }
        }),
        namespaces: take(list(Kind::Namespace).await?.1, |o| {
            if let Object::Namespace(x) = o {
                Some(x)
            } else {
                None
            }
        }),
    })
}

/// One pass: returns how many actions were applied.
pub(crate) async fn reconcile_once(m: &Master) -> Result<(usize, Option<u64>), StoreError> {
    let o = read(m).await?;
    let snap = Snapshot {
        now_ms: now_ms(),
        nodes: &o.nodes,
        pods: &o.pods,
        deployments: &o.deployments,
        replicasets: &o.replicasets,
        daemonsets: &o.daemonsets,
        jobs: &o.jobs,
        namespaces: &o.namespaces,
    };
    let timings = m.cfg.timings();
    let actions = controllers::reconcile(&snap, &timings);
    let deadline = controllers::next_deadline(&snap, &timings);
    let mut applied = 0;
    for a in actions {
        let r = match a {
            Action::Create(mut obj) => {
                let meta = obj.meta_mut();
                meta.uid = super::auth::random_hex(8)
                    .map_err(|e| StoreError::BatchFailed(e.to_string()))?;
                meta.created_ms = now_ms();
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
                reason,
                message,
            } => {
                tracing::info!(object = %format!("{}/{name}", kind.as_str()), %namespace, %reason, "{message}");
                m.events
                    .record(kind, &namespace, &name, &reason, &message)
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

/// Runs the controllers on every store change (coalesced), after their own writes, and when a
/// time-based condition comes due (`min_ready`, eviction timeouts, job deadlines: the pure
/// `next_deadline`). Only reads at idle, every 30 s at most.
pub(crate) async fn controller_loop(m: Arc<Master>) {
    loop {
        let mut w = match m.store.watch(None, None, m.store.current_revision()).await {
            Ok(w) => w,
            Err(e) => {
                tracing::warn!("controllers: watch: {e}");
                smol::Timer::after(Duration::from_secs(1)).await;
                continue;
            }
        };
        let mut busy = true;
        let mut wake_at: Option<u64> = None;
        'watch: loop {
            if busy {
                smol::Timer::after(Duration::from_millis(50)).await;
            } else {
                let wait_ms = wake_at
                    .map(|t| t.saturating_sub(now_ms()))
                    .unwrap_or(30_000)
                    .clamp(10, 30_000);
                let changed = async { w.next().await.map(|_| ()) }
                    .or(async {
                        smol::Timer::after(Duration::from_millis(wait_ms)).await;
                        Ok(())
                    })
                    .await;
                if changed.is_err() {
                    break 'watch; // lagged: watch again from now (the pass below re-reads all)
                }
            }
            // Coalesce a burst of changes into one pass.
            while let Some(r) = futures_lite::future::poll_once(w.next()).await {
                if r.is_err() {
                    break 'watch;
                }
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
}
