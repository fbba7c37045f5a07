//! The garbage collector: pods and replica sets whose owners are all gone are deleted.
//!
//! An owner is alive when some object of the snapshot (of any kind) has its uid. Objects without
//! owner references are never collected.

use std::collections::HashSet;

use bramble_wire::objects::{Kind, Meta};

use super::{Action, Ctx, Snapshot, delete_of};

/// Deletions of the pods and replica sets whose every owner is gone.
pub fn reconcile(snap: &Snapshot) -> Vec<Action> {
    let ctx = Ctx::new(snap);
    reconcile_in(&ctx)
}

/// [`reconcile`] with shared indexes.
pub(crate) fn reconcile_in(ctx: &Ctx<'_>) -> Vec<Action> {
    let snap = ctx.snap;
    let mut live: HashSet<&str> = HashSet::new();
    let metas = snap
        .nodes
        .iter()
        .map(|o| &o.meta)
        .chain(snap.pods.iter().map(|o| &o.meta))
        .chain(snap.deployments.iter().map(|o| &o.meta))
        .chain(snap.replicasets.iter().map(|o| &o.meta))
        .chain(snap.daemonsets.iter().map(|o| &o.meta))
        .chain(snap.jobs.iter().map(|o| &o.meta))
        .chain(snap.namespaces.iter().map(|o| &o.meta));
    for m in metas {
        if !m.uid.is_empty() {
            live.insert(&m.uid);
        }
    }
    let orphan =
        |m: &Meta| !m.owners.is_empty() && m.owners.iter().all(|o| !live.contains(o.uid.as_str()));
    let mut out = Vec::new();
    for rs in snap.replicasets {
        if orphan(&rs.meta) {
            out.push(delete_of(Kind::ReplicaSet, &rs.meta));
        }
    }
    for p in snap.pods {
        if orphan(&p.meta) {
            out.push(delete_of(Kind::Pod, &p.meta));
        }
    }
    out
}
