//! The daemon set controller: one pod per eligible node, created already bound to it.
//!
//! - A node *matches* when the template's node selector is a subset of its labels (the admin's,
//!   the node's own under `node.bramble.io/`, and the built-in `bramble.io/arch` /
//!   `bramble.io/hostname`), its
//!   architecture is the template's (if set) and every `NoExecute` taint is tolerated. A pod on a
//!   node that stops matching (or is deleted) is deleted.
//! - A *new* pod goes only to a matching node that is also Ready, not cordoned and whose
//!   `NoSchedule` taints are tolerated. Readiness does not matter for existing pods.
//! - Pods carry [`LABEL_TEMPLATE_HASH`]; when the template changes, outdated pods are replaced
//!   node by node: unavailable ones at once, available ones while fewer than `max_unavailable`
//!   (at least 1) nodes lack an available pod. The replacement is created in the same pass.
//! - `status` (desired, current, updated, available) is written only when it changes.

use std::collections::HashMap;

use bramble_wire::objects::{DaemonSet, Kind, Labels, Node, Object, Pod, TaintEffect};

use super::{
    Action, Ctx, LABEL_TEMPLATE_HASH, Snapshot, delete_of, event, is_terminal, pod_available,
    template_hash,
};
use crate::sched::{LABEL_ARCH, LABEL_HOSTNAME};

/// Actions that give every eligible node one up-to-date pod of the daemon set.
pub fn reconcile(snap: &Snapshot, ds: &DaemonSet) -> Vec<Action> {
    let mut ctx = Ctx::new(snap);
    reconcile_in(&mut ctx, ds)
}

/// Whether the node's labels hold every `key=value` of `selector`.
fn labels_match(node: &Node, selector: &Labels) -> bool {
    selector.iter().all(|(k, v)| {
        let got = if k == LABEL_HOSTNAME {
            Some(node.meta.name.as_str())
        } else if k == LABEL_ARCH {
            node.status.info.as_ref().map(|i| i.arch.as_str())
        } else {
            // Never the agent's raw report (`status.info.labels`): a node's own labels are in
            // `meta.labels` under `node.bramble.io/` (docs/security.md).
            node.meta.labels.get(k).map(String::as_str)
        };
        got == Some(v.as_str())
    })
}

/// Whether existing daemon pods may stay on `node`.
fn matches(ds: &DaemonSet, node: &Node) -> bool {
    let spec = &ds.spec.template.spec;
    labels_match(node, &spec.node_selector)
        && spec
            .arch
            .is_none_or(|a| node.status.info.as_ref().is_some_and(|i| i.arch == a))
        && tolerated(ds, node, TaintEffect::NoExecute)
}

/// Whether every taint of `effect` on the node is tolerated by the template.
fn tolerated(ds: &DaemonSet, node: &Node, effect: TaintEffect) -> bool {
    node.spec
        .taints
        .iter()
        .filter(|t| t.effect == effect)
        .all(|t| {
            ds.spec
                .template
                .spec
                .tolerations
                .iter()
                .any(|x| x.tolerates(t))
        })
}

/// Whether a new daemon pod may be placed on `node`.
fn placeable(ds: &DaemonSet, node: &Node) -> bool {
    matches(ds, node)
        && node.status.is_ready()
        && !node.spec.unschedulable
        && tolerated(ds, node, TaintEffect::NoSchedule)
}

/// [`reconcile`] with shared indexes.
pub(crate) fn reconcile_in(ctx: &mut Ctx<'_>, ds: &DaemonSet) -> Vec<Action> {
    let mut out = Vec::new();
    if ds.meta.uid.is_empty() {
        return out;
    }
    let now = ctx.snap.now_ms;
    let hash = template_hash(&ds.spec.template);
    let mut tmpl = ds.spec.template.clone();
    tmpl.labels.insert(LABEL_TEMPLATE_HASH.into(), hash.clone());
    let may_create = !ctx.terminating(&ds.meta.namespace);

    // Active pods per node; unbound pods are deleted, terminal ones too unless the daemon set
    // backs off replacing pods that failed fast (then they stay, with their reason).
    let mut by_node: HashMap<&str, Vec<&Pod>> = HashMap::new();
    let mut terminal: Vec<&Pod> = Vec::new();
    for p in ctx.pods_of(&ds.meta.namespace, &ds.meta.uid) {
        match p.spec.node_name.as_deref() {
            Some(_) if is_terminal(p) => terminal.push(p),
            Some(n) => by_node.entry(n).or_default().push(p),
            None => out.push(delete_of(Kind::Pod, &p.meta)),
        }
    }
    let stable = by_node.values().flatten().any(|p| super::stable(p, now));
    let gate = super::backoff::gate(&ds.status.backoff, &terminal, stable, now);
    if gate.replace {
        for p in &terminal {
            out.push(delete_of(Kind::Pod, &p.meta));
        }
    }
    if let Some(delay) = gate.started_ms {
        out.push(event(
            Kind::DaemonSet,
            &ds.meta,
            "BackOff",
            super::backoff::message("failed pods", gate.next.failures, delay, &gate.next.reason),
        ));
    }
    let may_create = may_create && gate.replace;
    let updated_pod = |p: &Pod| p.meta.labels.get(LABEL_TEMPLATE_HASH) == Some(&hash);
    let available_pod = |p: &Pod| pod_available(p, 0, now);

    struct Slot<'a> {
        node: &'a Node,
        pod: Option<&'a Pod>,
    }
    let mut slots: Vec<Slot> = Vec::new();
    let (mut desired, mut current, mut updated, mut available) = (0u32, 0u32, 0u32, 0u32);
    let mut created = Vec::new();
    for node in ctx.snap.nodes {
        let mut pods = by_node.remove(node.meta.name.as_str()).unwrap_or_default();
        if !matches(ds, node) {
            for p in pods {
                out.push(delete_of(Kind::Pod, &p.meta));
            }
            continue;
        }
        // Keep one: updated first, then available, then the oldest.
        pods.sort_by(|a, b| {
            (updated_pod(b), available_pod(b))
                .cmp(&(updated_pod(a), available_pod(a)))
                .then_with(|| a.meta.created_ms.cmp(&b.meta.created_ms))
                .then_with(|| a.meta.name.cmp(&b.meta.name))
        });
        for p in pods.iter().skip(1) {
            out.push(delete_of(Kind::Pod, &p.meta));
        }
        let pod = pods.first().copied();
        if pod.is_none() && !placeable(ds, node) {
            continue;
        }
        desired += 1;
        if let Some(p) = pod {
            current += 1;
            updated += u32::from(updated_pod(p));
            available += u32::from(available_pod(p));
        }
        slots.push(Slot { node, pod });
    }
    // Pods on nodes that no longer exist.
    let mut gone: Vec<&Pod> = by_node.into_values().flatten().collect();
    gone.sort_by(|a, b| a.meta.name.cmp(&b.meta.name));
    for p in gone {
        out.push(delete_of(Kind::Pod, &p.meta));
    }

    // Rolling update budget: nodes without an available pod count against max_unavailable.
    let unavailable = slots
        .iter()
        .filter(|s| !s.pod.is_some_and(available_pod))
        .count() as u32;
    let mut budget = ds.spec.max_unavailable.max(1).saturating_sub(unavailable);
    for s in &slots {
        let replace = match s.pod {
            None => true,
            // Outdated pods stay where no replacement could be placed.
            Some(_) if !placeable(ds, s.node) || !may_create => false,
            Some(p) if updated_pod(p) => false,
            Some(p) if !available_pod(p) => true,
            Some(_) if budget > 0 => {
                budget -= 1;
                true
            }
            Some(_) => false,
        };
        if !replace {
            continue;
        }
        if let Some(p) = s.pod {
            out.push(delete_of(Kind::Pod, &p.meta));
        }
        if may_create && placeable(ds, s.node) {
            let mut pod = ctx.new_pod(Kind::DaemonSet, &ds.meta, &tmpl);
            pod.spec.node_name = Some(s.node.meta.name.clone());
            created.push(pod.meta.name.clone());
            out.push(Action::Create(Object::Pod(pod)));
        }
    }
    if !created.is_empty() {
        out.push(event(
            Kind::DaemonSet,
            &ds.meta,
            "SuccessfulCreate",
            format!(
                "created {} pod(s): {}",
                created.len(),
                super::replicaset::summary(&created)
            ),
        ));
    }

    let status = bramble_wire::objects::DaemonSetStatus {
        desired,
        current,
        updated,
        available,
        backoff: gate.next,
    };
    if status != ds.status {
        let mut next = ds.clone();
        next.status = status;
        out.push(Action::Update(Object::DaemonSet(next)));
    }
    out
}
