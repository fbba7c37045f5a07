//! The deployment controller: one replica set per template, rolling updates between them.
//!
//! - The current template's replica set is `<deployment>-<hash>` ([`super::template_hash`] of the
//!   deployment's template); its template carries the label [`LABEL_TEMPLATE_HASH`]` = <hash>` and
//!   its selector is the deployment's (default: the template's labels) plus that label.
//! - Its `spec.revision` is one more than the highest of the deployment's replica sets. A template
//!   that matches an old replica set reuses it and bumps its revision (`rollout undo`).
//! - Rolling update (Kubernetes' algorithm, counting *available* pods, see
//!   [`super::pod_available`]): the new replica set grows while all pods stay within
//!   `replicas + max_surge`; old ones shrink while at least `replicas - max_unavailable` pods are
//!   available — their unavailable pods go first. Scaling with an unchanged template resizes the
//!   current replica set.
//! - At most `revision_history` old replica sets are kept at 0 replicas; older ones are deleted.
//! - `status` (replicas, updated, available, revision, message) is written only when it changes.
//!   `observed_generation` records the spec generation acted on (the API bumps `generation` on
//!   every spec change), so a status is known to describe the current spec; a rollout that makes
//!   no progress for `progress_deadline_ms` is `stalled` (Kubernetes' ProgressDeadlineExceeded).

use bramble_wire::objects::{
    Deployment, Kind, Meta, Object, ReplicaSet, ReplicaSetSpec, ReplicaSetStatus,
};

use super::{
    Action, Ctx, LABEL_TEMPLATE_HASH, Snapshot, event, is_terminal, owner_ref, pod_available,
    template_hash,
};

/// The deployment's progress deadline (its own, or the default).
pub fn progress_deadline_ms(d: &Deployment) -> u32 {
    match d.spec.progress_deadline_ms {
        0 => bramble_wire::objects::DEFAULT_PROGRESS_DEADLINE_MS,
        ms => ms,
    }
}

/// Whether a rollout is done: every wanted pod runs the current template and is available, and
/// no old pod is left.
pub fn rollout_complete(wanted: u32, pods: u32, updated: u32, updated_available: u32) -> bool {
    updated == wanted && pods == wanted && updated_available >= wanted
}

/// When the rollout of `d` will be stalled if nothing moves (for the controllers' wake-up).
pub fn stall_at(d: &Deployment) -> Option<u64> {
    let s = &d.status;
    let done = rollout_complete(d.spec.replicas, s.replicas, s.updated, s.updated_available)
        && s.observed_generation == s.generation;
    (!done && !s.stalled && s.last_progress_ms != 0)
        .then(|| s.last_progress_ms + u64::from(progress_deadline_ms(d)))
}

/// Actions that move one deployment's replica sets towards its template and size.
pub fn reconcile(snap: &Snapshot, d: &Deployment) -> Vec<Action> {
    let mut ctx = Ctx::new(snap);
    reconcile_in(&mut ctx, d)
}

/// One replica set of the deployment and what this pass plans for it.
struct Plan<'a> {
    /// The replica set as read; `None` for the one to create.
    orig: Option<&'a ReplicaSet>,
    /// Planned `spec.replicas`.
    replicas: u32,
    /// Planned `spec.revision`.
    revision: u64,
    /// Non-terminal pods.
    active: u32,
    /// Available pods.
    available: u32,
}

impl Plan<'_> {
    /// Pods this replica set has or will have: its spec, or more while surplus pods remain.
    fn size(&self) -> u32 {
        self.orig
            .map_or(0, |r| r.spec.replicas)
            .max(self.active)
            .max(self.replicas)
    }
}

/// [`reconcile`] with shared indexes.
pub(crate) fn reconcile_in(ctx: &mut Ctx<'_>, d: &Deployment) -> Vec<Action> {
    let mut out = Vec::new();
    if d.meta.uid.is_empty() {
        return out;
    }
    let now = ctx.snap.now_ms;
    let ns = d.meta.namespace.as_str();
    let hash = template_hash(&d.spec.template);
    let min_ready = d.spec.min_ready_ms;

    let owned = ctx.replicasets_of(ns, &d.meta.uid);
    let max_rev = owned.iter().map(|r| r.spec.revision).max().unwrap_or(0);
    let mut plans: Vec<Plan> = owned
        .iter()
        .map(|rs| {
            let pods = ctx.pods_of(ns, &rs.meta.uid);
            let active: Vec<_> = pods.into_iter().filter(|p| !is_terminal(p)).collect();
            Plan {
                orig: Some(rs),
                replicas: rs.spec.replicas,
                revision: rs.spec.revision,
                active: active.len() as u32,
                available: active
                    .iter()
                    .filter(|p| pod_available(p, min_ready, now))
                    .count() as u32,
            }
        })
        .collect();

    // The current template's replica set: by hash label, the conventional name first.
    let new_name = format!("{}-{}", d.meta.name, hash);
    let is_new = |rs: &ReplicaSet| rs.spec.template.labels.get(LABEL_TEMPLATE_HASH) == Some(&hash);
    let new_idx = plans
        .iter()
        .position(|p| p.orig.is_some_and(|r| is_new(r) && r.meta.name == new_name))
        .or_else(|| plans.iter().position(|p| p.orig.is_some_and(is_new)));
    let new_idx = match new_idx {
        Some(i) => {
            let unique_max = plans[i].revision == max_rev
                && plans.iter().filter(|p| p.revision == max_rev).count() == 1;
            if !unique_max {
                plans[i].revision = max_rev + 1;
            }
            i
        }
        None => {
            plans.push(Plan {
                orig: None,
                replicas: 0,
                revision: max_rev + 1,
                active: 0,
                available: 0,
            });
            plans.len() - 1
        }
    };

    let replicas = d.spec.replicas;
    let max_surge = d.spec.max_surge;
    let max_unavailable = if d.spec.max_surge == 0 && d.spec.max_unavailable == 0 {
        1
    } else {
        d.spec.max_unavailable
    };

    // Grow (or trim) the new replica set.
    if plans[new_idx].replicas > replicas {
        plans[new_idx].replicas = replicas;
    } else if plans[new_idx].replicas < replicas {
        let total: u32 = plans.iter().map(Plan::size).sum();
        let room = (replicas + max_surge).saturating_sub(total);
        let grow = room.min(replicas - plans[new_idx].replicas);
        plans[new_idx].replicas += grow;
    }

    // Shrink old replica sets, oldest first, keeping `replicas - max_unavailable` available.
    let mut order: Vec<usize> = (0..plans.len()).filter(|&i| i != new_idx).collect();
    order.sort_by_key(|&i| {
        let r = plans[i]
            .orig
            .map(|r| (r.meta.created_ms, r.meta.name.as_str()));
        (plans[i].revision, r)
    });
    let old_total: u32 = order.iter().map(|&i| plans[i].replicas).sum();
    if old_total > 0 {
        let min_available = replicas.saturating_sub(max_unavailable);
        let all_total: u32 = plans.iter().map(|p| p.replicas).sum();
        let new_unavailable = plans[new_idx]
            .replicas
            .saturating_sub(plans[new_idx].available);
        let mut budget = all_total
            .saturating_sub(min_available)
            .saturating_sub(new_unavailable);
        // Unhealthy old pods first: removing them costs no availability.
        for &i in &order {
            if budget == 0 {
                break;
            }
            let unhealthy = plans[i].replicas.saturating_sub(plans[i].available);
            let n = unhealthy.min(budget);
            plans[i].replicas -= n;
            budget -= n;
        }
        // Then available ones, down to the floor.
        let available: u32 = plans.iter().map(|p| p.available).sum();
        let mut down = available.saturating_sub(min_available);
        for &i in &order {
            if down == 0 {
                break;
            }
            let n = plans[i].replicas.min(down);
            plans[i].replicas -= n;
            down -= n;
        }
    }

    // Writes for the replica sets.
    let mut tmpl = d.spec.template.clone();
    tmpl.labels.insert(LABEL_TEMPLATE_HASH.into(), hash.clone());
    for (i, p) in plans.iter().enumerate() {
        match p.orig {
            None => {
                let mut selector = if d.spec.selector.is_empty() {
                    d.spec.template.labels.clone()
                } else {
                    d.spec.selector.clone()
                };
                selector.insert(LABEL_TEMPLATE_HASH.into(), hash.clone());
                let rs = ReplicaSet {
                    meta: Meta {
                        name: new_name.clone(),
                        namespace: ns.into(),
                        labels: tmpl.labels.clone(),
                        owners: vec![owner_ref(Kind::Deployment, &d.meta)],
                        ..Default::default()
                    },
                    spec: ReplicaSetSpec {
                        replicas: p.replicas,
                        selector,
                        template: tmpl.clone(),
                        revision: p.revision,
                        min_ready_ms: min_ready,
                    },
                    status: ReplicaSetStatus::default(),
                };
                out.push(Action::Create(Object::ReplicaSet(rs)));
                out.push(event(
                    Kind::Deployment,
                    &d.meta,
                    "ScalingReplicaSet",
                    format!(
                        "created replica set {new_name} (revision {}) with {} replicas",
                        p.revision, p.replicas
                    ),
                ));
            }
            Some(rs) => {
                let min_ready_changed = i == new_idx && rs.spec.min_ready_ms != min_ready;
                if p.replicas == rs.spec.replicas
                    && p.revision == rs.spec.revision
                    && !min_ready_changed
                {
                    continue;
                }
                let mut next = rs.clone();
                next.spec.replicas = p.replicas;
                next.spec.revision = p.revision;
                if i == new_idx {
                    next.spec.min_ready_ms = min_ready;
                }
                if p.replicas != rs.spec.replicas {
                    let dir = if p.replicas > rs.spec.replicas {
                        "up"
                    } else {
                        "down"
                    };
                    out.push(event(
                        Kind::Deployment,
                        &d.meta,
                        "ScalingReplicaSet",
                        format!(
                            "scaled {dir} replica set {} from {} to {}",
                            rs.meta.name, rs.spec.replicas, p.replicas
                        ),
                    ));
                }
                out.push(Action::Update(Object::ReplicaSet(next)));
            }
        }
    }

    // History: keep the newest `revision_history` idle old replica sets.
    let mut idle: Vec<&ReplicaSet> = order
        .iter()
        .filter_map(|&i| {
            let p = &plans[i];
            p.orig
                .filter(|r| p.replicas == 0 && r.spec.replicas == 0 && p.active == 0)
        })
        .collect();
    idle.sort_by(|a, b| {
        b.spec
            .revision
            .cmp(&a.spec.revision)
            .then_with(|| b.meta.created_ms.cmp(&a.meta.created_ms))
            .then_with(|| a.meta.name.cmp(&b.meta.name))
    });
    for rs in idle.iter().skip(d.spec.revision_history as usize) {
        out.push(super::delete_of(Kind::ReplicaSet, &rs.meta));
    }

    // Status, from what is observed now.
    let observed_replicas: u32 = plans.iter().map(|p| p.active).sum();
    let updated = plans[new_idx].active;
    let available: u32 = plans.iter().map(|p| p.available).sum();
    let updated_available = plans[new_idx].available;
    let revision = plans[new_idx].revision;
    let old_pods = observed_replicas - updated;
    let prev = &d.status;
    // Progress (Kubernetes' Progressing condition): a new generation, or pods created, updated,
    // made available or removed.
    let progressed = prev.last_progress_ms == 0
        || prev.observed_generation != prev.generation
        || prev.revision != revision
        || prev.updated != updated
        || prev.updated_available != updated_available
        || prev.replicas != observed_replicas;
    let last_progress_ms = if progressed {
        now
    } else {
        prev.last_progress_ms
    };
    let deadline = u64::from(progress_deadline_ms(d));
    let complete = rollout_complete(replicas, observed_replicas, updated, updated_available);
    let stalled = !complete && now.saturating_sub(last_progress_ms) >= deadline;
    let message = if stalled {
        format!(
            "stalled: no progress for {}s ({updated_available}/{replicas} new pods available): see `bramble get pods -l` and `bramble describe pod`",
            deadline / 1000
        )
    } else if old_pods > 0 || updated != replicas {
        format!("rolling out: {updated}/{replicas} updated")
    } else if available < replicas {
        format!("waiting: {available}/{replicas} available")
    } else {
        "complete".to_string()
    };
    let status = bramble_wire::objects::DeploymentStatus {
        replicas: observed_replicas,
        updated,
        available,
        revision,
        message,
        generation: prev.generation,
        observed_generation: prev.generation,
        updated_available,
        last_progress_ms,
        stalled,
    };
    if status != d.status {
        let mut next = d.clone();
        next.status = status;
        out.push(Action::Update(Object::Deployment(next)));
    }
    out
}
