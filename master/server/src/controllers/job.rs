//! The job controller: runs pods to completion.
//!
//! - `status.start_ms` is set on the first pass.
//! - Pods are created from the template (its restart policy kept) while fewer than
//!   `min(parallelism, completions - succeeded)` are active; surplus active pods are deleted.
//! - More than `backoff_limit` failed pods → phase Failed ("backoff limit exceeded");
//!   `active_deadline_ms` past `start_ms` → Failed ("deadline exceeded"); `completions` succeeded
//!   pods → Complete with `completion_ms`. A finished job's active pods are deleted; finished pods
//!   are kept (for logs) until the job is deleted and [`super::gc`] removes them.
//! - `status` is written only when it changes.

use bramble_wire::objects::{Job, JobPhase, Kind, Object, Pod, PodPhase};

use super::{Action, Ctx, Snapshot, delete_of, event, is_terminal};

/// Actions that move one job towards completion.
pub fn reconcile(snap: &Snapshot, j: &Job) -> Vec<Action> {
    let mut ctx = Ctx::new(snap);
    reconcile_in(&mut ctx, j)
}

/// [`reconcile`] with shared indexes.
pub(crate) fn reconcile_in(ctx: &mut Ctx<'_>, j: &Job) -> Vec<Action> {
    let mut out = Vec::new();
    if j.meta.uid.is_empty() {
        return out;
    }
    let now = ctx.snap.now_ms;
    let pods = ctx.pods_of(&j.meta.namespace, &j.meta.uid);
    let succeeded = pods
        .iter()
        .filter(|p| p.status.phase == PodPhase::Succeeded)
        .count() as u32;
    let failed = pods
        .iter()
        .filter(|p| p.status.phase == PodPhase::Failed)
        .count() as u32;
    let mut active: Vec<&Pod> = pods.into_iter().filter(|p| !is_terminal(p)).collect();

    let mut status = j.status.clone();
    if status.start_ms == 0 {
        status.start_ms = now;
    }
    status.succeeded = succeeded;
    status.failed = failed;
    status.active = active.len() as u32;
    let completions = j.spec.completions.max(1);

    if status.phase == JobPhase::Running {
        if succeeded >= completions {
            status.phase = JobPhase::Complete;
            status.completion_ms = Some(now);
            status.message = String::new();
            out.push(event(
                Kind::Job,
                &j.meta,
                "Completed",
                format!("job completed: {succeeded}/{completions} succeeded"),
            ));
        } else if failed > j.spec.backoff_limit {
            status.phase = JobPhase::Failed;
            status.message = format!(
                "backoff limit exceeded: {failed} failed pod(s), limit {}",
                j.spec.backoff_limit
            );
            out.push(event(
                Kind::Job,
                &j.meta,
                "BackoffLimitExceeded",
                status.message.clone(),
            ));
        } else if j
            .spec
            .active_deadline_ms
            .is_some_and(|d| status.start_ms.saturating_add(d) <= now)
        {
            status.phase = JobPhase::Failed;
            status.message = "deadline exceeded".into();
            out.push(event(
                Kind::Job,
                &j.meta,
                "DeadlineExceeded",
                status.message.clone(),
            ));
        }
    }

    let want = if status.phase == JobPhase::Running {
        j.spec.parallelism.min(completions - succeeded) as usize
    } else {
        0
    };
    if active.len() > want {
        // Keep the oldest running ones; delete pending and newest first.
        active.sort_by(|a, b| {
            let ka = (
                a.status.phase == PodPhase::Running,
                std::cmp::Reverse(a.meta.created_ms),
            );
            let kb = (
                b.status.phase == PodPhase::Running,
                std::cmp::Reverse(b.meta.created_ms),
            );
            ka.cmp(&kb).then_with(|| b.meta.name.cmp(&a.meta.name))
        });
        let surplus = active.len() - want;
        for p in active.drain(..surplus) {
            out.push(delete_of(Kind::Pod, &p.meta));
        }
    } else if active.len() < want && !ctx.terminating(&j.meta.namespace) {
        let mut created = Vec::new();
        for _ in active.len()..want {
            let pod = ctx.new_pod(Kind::Job, &j.meta, &j.spec.template);
            created.push(pod.meta.name.clone());
            out.push(Action::Create(Object::Pod(pod)));
        }
        out.push(event(
            Kind::Job,
            &j.meta,
            "SuccessfulCreate",
            format!(
                "created {} pod(s): {}",
                created.len(),
                super::replicaset::summary(&created)
            ),
        ));
    }

    if status != j.status {
        let mut next = j.clone();
        next.status = status;
        out.push(Action::Update(Object::Job(next)));
    }
    out
}
