//! The loops that move desired state: the scheduler loop binds pending pods to nodes; the
//! assignment loop pushes each connected node its complete pod set when it changes; the config
//! loop re-pushes assignments when a config map or a secret changes.

use std::collections::BTreeSet;
use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;

use bramble_wire::msg::{Assignment, NodeDown};
use bramble_wire::objects::{Kind, Object, Pod, PodPhase};
use futures_lite::FutureExt;

use super::{Master, now_ms};
use crate::cache::{Change, Delta};
use crate::sched;
use crate::store::StoreError;

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

/// Sends `node` its pod set if it is connected and the set changed since the last push. Reads
/// only the cache: the node's pods (pods-by-node index) and the config maps, secrets and
/// artifacts they name, so it costs the node's pods, not the cluster's.
pub(crate) async fn push_assignment(m: &Master, node: &str) {
    if !m.cache.synced() {
        return; // an empty cache is no assignment: the first list resyncs the loop
    }
    let revision = m.cache.revision();
    let pods = m.cache.pods_on(node);
    let (config_maps, secrets) = super::config_push::resolve(m, &pods);
    let artifacts = super::artifact::used_by(m, &pods);
    let images = super::image::used_by(m, &pods);
    let hash = super::config_push::hash(spec_hash(&pods), &config_maps, &secrets)
        ^ super::artifact::hash(&artifacts)
        ^ super::image::hash(&images).rotate_left(1);
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
            images,
        }))
        .await;
}

/// Whether a pod's change can change what its node is assigned: the assignment's hash covers
/// names, UIDs and specs; a status change (the common case: a node's own report) does not.
pub(crate) fn assignment_changed(old: Option<&Pod>, new: Option<&Pod>) -> bool {
    match (old, new) {
        (Some(a), Some(b)) => {
            a.meta.uid != b.meta.uid || a.spec.node_name != b.spec.node_name || a.spec != b.spec
        }
        _ => true,
    }
}

/// The nodes whose assignments `changes` may change; and whether a pod now waits for a node.
pub(crate) fn affected_nodes(changes: &[Change]) -> (BTreeSet<String>, bool) {
    let mut dirty = BTreeSet::new();
    let mut pending = false;
    for c in changes.iter().filter(|c| c.kind == Kind::Pod) {
        let (old, new) = c.pods();
        if let Some(p) = new
            && p.spec.node_name.is_none()
            && p.status.phase == PodPhase::Pending
        {
            pending = true;
        }
        if !assignment_changed(old, new) {
            continue;
        }
        for p in [old, new].into_iter().flatten() {
            if let Some(n) = &p.spec.node_name {
                dirty.insert(n.clone());
            }
        }
    }
    (dirty, pending)
}

/// Follows pod changes in the cache and pushes the affected nodes their new sets.
pub(crate) async fn assignment_loop(m: Arc<Master>) {
    let mut changes = m.cache.subscribe();
    loop {
        match changes.next().await {
            Delta::Resync => {
                // (Re)start: everything may have changed.
                if m.cache.has_pending_pods() {
                    m.poke_scheduler();
                }
                let nodes: Vec<String> = m.nodes.lock().await.keys().cloned().collect();
                for n in nodes {
                    push_assignment(&m, &n).await;
                }
            }
            Delta::Changes(c) => {
                let (dirty, pending) = affected_nodes(&c);
                if pending {
                    m.poke_scheduler();
                }
                for n in dirty {
                    push_assignment(&m, &n).await;
                }
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

/// One scheduling pass; returns how many pods are still pending. Reads the cache once it holds
/// every committed write (its own bindings of the previous pass included).
pub(crate) async fn schedule_once(m: &Master, seed: u64) -> Result<usize, StoreError> {
    m.cache.catch_up(&m.store).await;
    if !m.cache.synced() {
        return Ok(1); // not loaded yet: try again shortly
    }
    if !m.cache.has_pending_pods() {
        return Ok(0);
    }
    let snap = m.cache.snapshot();
    let pending: Vec<&Pod> = snap
        .pods
        .iter()
        .filter(|p| p.spec.node_name.is_none() && p.status.phase == PodPhase::Pending)
        .collect();
    if pending.is_empty() {
        return Ok(0);
    }
    let mut snapshot = sched::Snapshot::from_objects(&snap.nodes, &snap.pods);
    snapshot.add_artifacts(&snap.artifacts);
    snapshot.add_images(&snap.images);
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
        // A pod waiting for its image shows the puller's word ("pulling image REF", the error).
        let waiting = match &f.image {
            Some(sched::ImageNote::Missing(r)) => m.images.waiting_message(r),
            _ => None,
        };
        outcomes[f.pod] = Err(waiting.unwrap_or_else(|| f.message()));
    }
    let mut left = 0;
    let mut writes = Vec::new();
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
                        &p.meta.uid,
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
                        &p.meta.uid,
                        "FailedScheduling",
                        &reason,
                    )
                    .await;
                p.status.message = reason;
            }
        }
        writes.push(m.store.update(Object::Pod(p), Some(rev)));
    }
    // Side by side: the pass's bindings share the writer's group commits (and reach the nodes
    // as one assignment change), instead of one transaction after another.
    for r in super::join_all(writes).await {
        match r {
            Ok(_) | Err(StoreError::Conflict { .. }) | Err(StoreError::NotFound { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(left)
}

/// Follows config map and secret changes and re-pushes every connected node's assignment; the
/// push is skipped for nodes whose set (hash) did not change, i.e. nodes that do not use it.
pub(crate) async fn config_loop(m: Arc<Master>) {
    let mut changes = m.cache.subscribe();
    loop {
        let config_changed = match changes.next().await {
            Delta::Resync => true,
            Delta::Changes(c) => c.iter().any(|c| {
                let o = c.new.as_deref().or(c.old.as_deref());
                if let Some(o @ (Object::ConfigMap(_) | Object::Secret(_) | Object::Image(_))) = o {
                    // Name and kind only: never the data.
                    tracing::debug!(kind = o.kind().as_str(), namespace = %o.meta().namespace, name = %o.meta().name, "config changed");
                    true
                } else {
                    false
                }
            }),
        };
        if config_changed {
            push_all(&m).await;
        }
    }
}

async fn push_all(m: &Master) {
    let nodes: Vec<String> = m.nodes.lock().await.keys().cloned().collect();
    for n in nodes {
        push_assignment(m, &n).await;
    }
}
