//! The loops that move desired state: the scheduler loop binds pending pods to nodes; the
//! assignment loop pushes each connected node its complete pod set when it changes.

use std::collections::hash_map::DefaultHasher;
use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;

use bramble_wire::msg::{Assignment, NodeDown};
use bramble_wire::objects::{Kind, Node, Object, Pod, PodPhase};
use futures_lite::FutureExt;

use super::{Master, now_ms};
use crate::sched;
use crate::store::StoreError;

/// Pods bound to `node`, and the store revision they were read at.
async fn pods_of(m: &Master, node: &str) -> Result<(u64, Vec<Pod>), StoreError> {
    let (rev, all) = m.store.list(Kind::Pod, None).await?;
    let pods = all
        .into_iter()
        .filter_map(|o| match o {
            Object::Pod(p) if p.spec.node_name.as_deref() == Some(node) => Some(p),
            _ => None,
        })
        .collect();
    Ok((rev, pods))
}

fn spec_hash(pods: &[Pod]) -> u64 {
    let mut h = DefaultHasher::new();
    for p in pods {
        p.meta.namespace.hash(&mut h);
        p.meta.name.hash(&mut h);
        p.meta.uid.hash(&mut h);
        postcard::to_allocvec(&p.spec)
            .unwrap_or_default()
            .hash(&mut h);
    }
    h.finish()
}

/// Sends `node` its pod set if it is connected and the set changed since the last push.
pub(crate) async fn push_assignment(m: &Master, node: &str) {
    let (revision, pods) = match pods_of(m, node).await {
        Ok(x) => x,
        Err(e) => {
            tracing::warn!(%node, "assignment: {e}");
            return;
        }
    };
    let (config_maps, secrets) = match super::config_push::resolve(m, &pods).await {
        Ok(x) => x,
        Err(e) => {
            tracing::warn!(%node, "assignment: {e}");
            return;
        }
    };
    let artifacts = super::artifact::used_by(m, &pods).await;
    let hash = super::config_push::hash(spec_hash(&pods), &config_maps, &secrets)
        ^ super::artifact::hash(&artifacts);
    let tx = {
        let mut nodes = m.nodes.lock().await;
        let Some(live) = nodes.get_mut(node) else {
            return;
        };
        let Some((_, tx)) = live.session.clone() else {
            return;
        };
        if live.pushed_hash == Some(hash) {
            return;
        }
        live.pushed_hash = Some(hash);
        tx
    };
    tracing::debug!(%node, pods = pods.len(), revision, "pushing assignment");
    // Secrets first: the worker needs them to start the pods of the assignment.
    let _ = tx.send(NodeDown::Secrets(secrets)).await;
    let _ = tx
        .send(NodeDown::Assign(Assignment {
            revision,
            pods,
            config_maps,
            artifacts,
        }))
        .await;
}

/// Follows pod changes and pushes the affected nodes their new sets.
pub(crate) async fn assignment_loop(m: Arc<Master>) {
    let mut placed: HashMap<(String, String), String> = HashMap::new();
    loop {
        let from = m.store.current_revision();
        let mut w = match m.store.watch(Some(Kind::Pod), None, from).await {
            Ok(w) => w,
            Err(e) => {
                tracing::warn!("assignment loop: {e}");
                smol::Timer::after(Duration::from_secs(1)).await;
                continue;
            }
        };
        // (Re)start: everything may have changed.
        let nodes: Vec<String> = m.nodes.lock().await.keys().cloned().collect();
        placed.clear();
        if let Ok((_, pods)) = m.store.list(Kind::Pod, None).await {
            for o in pods {
                if let Object::Pod(p) = o
                    && let Some(n) = p.spec.node_name
                {
                    placed.insert((p.meta.namespace, p.meta.name), n);
                }
            }
        }
        for n in nodes {
            push_assignment(&m, &n).await;
        }
        loop {
            let ev = match w.next().await {
                Ok(e) => e.event,
                Err(e) => {
                    tracing::debug!("assignment watch restarts: {e}");
                    break;
                }
            };
            let (obj, deleted) = match ev {
                bramble_wire::msg::WatchEvent::Put(o) => (o, false),
                bramble_wire::msg::WatchEvent::Deleted(o) => (o, true),
            };
            let Object::Pod(p) = obj else { continue };
            let key = (p.meta.namespace.clone(), p.meta.name.clone());
            let mut dirty = HashSet::new();
            if let Some(old) = placed.remove(&key) {
                dirty.insert(old);
            }
            if let Some(n) = &p.spec.node_name {
                dirty.insert(n.clone());
                if !deleted {
                    placed.insert(key, n.clone());
                }
            }
            if p.spec.node_name.is_none() && !deleted && p.status.phase == PodPhase::Pending {
                m.poke_scheduler();
            }
            for n in dirty {
                push_assignment(&m, &n).await;
            }
        }
    }
}

/// Binds pending pods whenever poked (pod created, node joined or changed) and every few seconds
/// while some pods stay unschedulable. Reads only; writes only bindings and changed messages.
pub(crate) async fn scheduler_loop(m: Arc<Master>, wake: async_channel::Receiver<()>) {
    let mut seed: u64 = now_ms();
    let mut backlog = false;
    loop {
        let wait = if backlog {
            Duration::from_secs(2)
        } else {
            Duration::from_secs(3600)
        };
        let _ = async {
            let _ = wake.recv().await;
        }
        .or(async {
            smol::Timer::after(wait).await;
        })
        .await;
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        match schedule_once(&m, seed).await {
            Ok(left) => backlog = left > 0,
            Err(e) => {
                tracing::warn!("scheduler: {e}");
                backlog = true;
            }
        }
    }
}

/// One scheduling pass; returns how many pods are still pending.
pub(crate) async fn schedule_once(m: &Master, seed: u64) -> Result<usize, StoreError> {
    let (_, pod_objs) = m.store.list(Kind::Pod, None).await?;
    let pods: Vec<Pod> = pod_objs
        .into_iter()
        .filter_map(|o| {
            if let Object::Pod(p) = o {
                Some(p)
            } else {
                None
            }
        })
        .collect();
    let pending: Vec<&Pod> = pods
        .iter()
        .filter(|p| p.spec.node_name.is_none() && p.status.phase == PodPhase::Pending)
        .collect();
    if pending.is_empty() {
        return Ok(0);
    }
    let (_, node_objs) = m.store.list(Kind::Node, None).await?;
    let nodes: Vec<Node> = node_objs
        .into_iter()
        .filter_map(|o| {
            if let Object::Node(n) = o {
                Some(n)
            } else {
                None
            }
        })
        .collect();
    let mut snapshot = sched::Snapshot::from_objects(&nodes, &pods);
    snapshot.add_artifacts(&super::artifact::all(m).await?);
    let want: Vec<sched::PendingPod> = pending
        .iter()
        .map(|p| sched::PendingPod::from_pod(p))
        .collect();
    let plan = sched::schedule(&snapshot, &want, now_ms(), seed);
    let mut outcomes: Vec<Result<String, String>> = vec![Err(String::new()); pending.len()];
    for b in &plan.bindings {
        outcomes[b.pod] = Ok(snapshot.node(b.node).name.to_string());
    }
    for f in &plan.failures {
        outcomes[f.pod] = Err(f.message());
    }
    let mut left = 0;
    for (pod, outcome) in pending.iter().zip(outcomes) {
        let mut p: Pod = (*pod).clone();
        let rev = p.meta.revision;
        match outcome {
            Ok(node) => {
                p.spec.node_name = Some(node.to_string());
                p.status.message = format!("scheduled to {node}");
                tracing::info!(pod = %p.meta.name, namespace = %p.meta.namespace, %node, "scheduled");
                m.events
                    .record(
                        Kind::Pod,
                        &p.meta.namespace,
                        &p.meta.name,
                        "Scheduled",
                        &format!("assigned to node {node}"),
                    )
                    .await;
            }
            Err(reason) => {
                left += 1;
                if p.status.message == reason {
                    continue;
                }
                m.events
                    .record(
                        Kind::Pod,
                        &p.meta.namespace,
                        &p.meta.name,
                        "FailedScheduling",
                        &reason,
                    )
                    .await;
                p.status.message = reason;
            }
        }
        match m.store.update(Object::Pod(p), Some(rev)).await {
            Ok(_) | Err(StoreError::Conflict { .. }) | Err(StoreError::NotFound { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(left)
}
