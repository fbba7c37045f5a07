//! The node lifecycle controller.
//!
//! - A node whose Ready condition is not true gets the [`TAINT_NOT_READY`] `NoSchedule` taint
//!   (once); the taint is removed when it is Ready again.
//! - A node whose Ready condition has been false for at least `eviction_timeout_ms` (from the
//!   condition's `since_ms`) has its non-terminal pods deleted, one `Evicted` event each; their
//!   owners replace them elsewhere. Pods of daemon sets are not evicted (as in Kubernetes, where
//!   they tolerate the node's unreachable taints): they belong to that node and no other.
//! - Nothing else: when the node returns, the master pushes it its smaller assignment, so evicted
//!   pods stop there and the survivors are untouched.

use std::collections::HashMap;

use bramble_wire::objects::{ConditionKind, Kind, Node, Object, Taint, TaintEffect};

use super::{Action, Snapshot, TAINT_NOT_READY, delete_of, event, is_terminal};

/// Taint and eviction actions for every node of the snapshot.
pub fn reconcile(snap: &Snapshot, t: &super::Timings) -> Vec<Action> {
    let mut out = Vec::new();
    let mut evicting: HashMap<&str, u64> = HashMap::new();
    for node in snap.nodes {
        let ready = node.status.is_ready();
        let tainted = node.spec.taints.iter().any(is_not_ready_taint);
        if ready == tainted {
            let mut next: Node = node.clone();
            if ready {
                next.spec.taints.retain(|x| !is_not_ready_taint(x));
            } else {
                next.spec.taints.push(Taint {
                    key: TAINT_NOT_READY.into(),
                    value: String::new(),
                    effect: TaintEffect::NoSchedule,
                });
            }
            out.push(Action::Update(Object::Node(next)));
        }
        if let Some(c) = node.status.condition(ConditionKind::Ready)
            && !c.status
            && snap.now_ms.saturating_sub(c.since_ms) >= t.eviction_timeout_ms
        {
            evicting.insert(&node.meta.name, snap.now_ms.saturating_sub(c.since_ms));
        }
    }
    if evicting.is_empty() {
        return out;
    }
    for p in snap.pods {
        let Some(down_ms) = p.spec.node_name.as_deref().and_then(|n| evicting.get(n)) else {
            continue;
        };
        if is_terminal(p) || p.meta.owners.iter().any(|o| o.kind == Kind::DaemonSet) {
            continue;
        }
        out.push(delete_of(Kind::Pod, &p.meta));
        out.push(event(
            Kind::Pod,
            &p.meta,
            "Evicted",
            format!(
                "node {} not ready for {}s",
                p.spec.node_name.as_deref().unwrap_or_default(),
                down_ms / 1000
            ),
        ));
    }
    out
}

/// Whether `t` is the controller's not-ready taint.
fn is_not_ready_taint(t: &Taint) -> bool {
    t.key == TAINT_NOT_READY && t.effect == TaintEffect::NoSchedule
}
