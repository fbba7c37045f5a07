//! The replica set controller: keeps `spec.replicas` non-terminal pods.
//!
//! - Owned pods are those whose owners hold the replica set's uid (the selector is for display).
//! - Terminal pods (Succeeded, Failed) are deleted and replaced: a replica set runs services.
//!   Pods that fail fast are replaced after a backoff ([`super::backoff`], kept in
//!   `status.backoff`): meanwhile the failed pod stays with its reason and a `BackOff` event says
//!   how long.
//! - Missing pods are created from the template; surplus pods are deleted, preferring pods not
//!   bound to a node, then Pending ones, then ones whose phase is Unknown, then unavailable ones,
//!   then the newest.
//! - Pods on a NotReady node still count until the node controller evicts them (no churn).
//! - `status.replicas` / `status.available` are written only when they change.

use std::cmp::Reverse;

use bramble_wire::objects::{Kind, Object, Pod, PodPhase, ReplicaSet};

use super::{Action, Ctx, Snapshot, backoff, delete_of, event, is_terminal, pod_available};

/// Actions that bring one replica set's pods to `spec.replicas` and its status up to date.
pub fn reconcile(snap: &Snapshot, rs: &ReplicaSet) -> Vec<Action> {
    let mut ctx = Ctx::new(snap);
    reconcile_in(&mut ctx, rs, false)
}

/// Deletion preference of surplus pods: smaller first.
fn delete_rank(p: &Pod, min_ready_ms: u32, now_ms: u64) -> (u8, u8, u8, Reverse<u64>) {
    let unbound = u8::from(p.spec.node_name.is_some());
    let phase = match p.status.phase {
        PodPhase::Pending => 0,
        PodPhase::Unknown => 1,
        _ => 2,
    };
    let available = u8::from(pod_available(p, min_ready_ms, now_ms));
    (unbound, phase, available, Reverse(p.meta.created_ms))
}

/// [`reconcile`] with shared indexes. `rs` may carry a spec changed in this pass (`dirty`): then
/// one Update with the new spec and status is returned even if the status did not change.
pub(crate) fn reconcile_in(ctx: &mut Ctx<'_>, rs: &ReplicaSet, dirty: bool) -> Vec<Action> {
    let now = ctx.snap.now_ms;
    let min_ready = rs.spec.min_ready_ms;
    let mut out = Vec::new();
    let owned = ctx.pods_of(&rs.meta.namespace, &rs.meta.uid);
    let (terminal, mut active): (Vec<&Pod>, Vec<&Pod>) =
        owned.into_iter().partition(|p| is_terminal(p));

    let observed_replicas = active.len() as u32;
    let observed_available = active
        .iter()
        .filter(|p| pod_available(p, min_ready, now))
        .count() as u32;

    let stable = active.iter().any(|p| super::stable(p, now));
    let gate = backoff::gate(&rs.status.backoff, &terminal, stable, now);
    let mut deleted = Vec::new();
    if gate.replace {
        for p in &terminal {
            out.push(delete_of(Kind::Pod, &p.meta));
        }
    }
    if let Some(delay) = gate.started_ms {
        out.push(event(
            Kind::ReplicaSet,
            &rs.meta,
            "BackOff",
            backoff::message("failed pods", gate.next.failures, delay, &gate.next.reason),
        ));
    }
    let want = rs.spec.replicas as usize;
    let mut created = Vec::new();
    if active.len() > want {
        active.sort_by(|a, b| {
            delete_rank(a, min_ready, now)
                .cmp(&delete_rank(b, min_ready, now))
                .then_with(|| b.meta.name.cmp(&a.meta.name))
        });
        for p in &active[..active.len() - want] {
            out.push(delete_of(Kind::Pod, &p.meta));
            deleted.push(p.meta.name.clone());
        }
    } else if active.len() < want
        && gate.replace
        && !ctx.terminating(&rs.meta.namespace)
        && !rs.meta.uid.is_empty()
    {
        for _ in active.len()..want {
            let pod = ctx.new_pod(Kind::ReplicaSet, &rs.meta, &rs.spec.template);
            created.push(pod.meta.name.clone());
            out.push(Action::Create(Object::Pod(pod)));
        }
    }
    if !created.is_empty() {
        out.push(event(
            Kind::ReplicaSet,
            &rs.meta,
            "SuccessfulCreate",
            format!("created {} pod(s): {}", created.len(), summary(&created)),
        ));
    }
    if !deleted.is_empty() {
        out.push(event(
            Kind::ReplicaSet,
            &rs.meta,
            "SuccessfulDelete",
            format!("deleted {} pod(s): {}", deleted.len(), summary(&deleted)),
        ));
    }

    if dirty
        || rs.status.replicas != observed_replicas
        || rs.status.available != observed_available
        || rs.status.backoff != gate.next
    {
        let mut next = rs.clone();
        next.status.replicas = observed_replicas;
        next.status.available = observed_available;
        next.status.backoff = gate.next;
        out.push(Action::Update(Object::ReplicaSet(next)));
    }
    out
}

/// The first few names of a list, for event messages.
pub(crate) fn summary(names: &[String]) -> String {
    const SHOWN: usize = 5;
    let mut s = names[..names.len().min(SHOWN)].join(", ");
    if names.len() > SHOWN {
        s.push_str(&format!(" and {} more", names.len() - SHOWN));
    }
    s
}
