//! The job controller: runs pods to completion.
//!
//! - `status.start_ms` is set on the first pass.
//! - Pods are created from the template (its restart policy kept) while fewer than
//!   `min(parallelism, completions - succeeded)` are active; surplus active pods are deleted.
//! - More than `backoff_limit` failed pods → phase Failed ("backoff limit exceeded");
//!   `active_deadline_ms` past `start_ms` → Failed ("deadline exceeded"); `completions` succeeded
//!   pods → Complete with `completion_ms`. A finished job's active pods are deleted; finished pods
//!   are kept (for logs) until the job is deleted and [`super::gc`] removes them.
//! - After a failed pod, the next one is created only after the process restart backoff for
//!   the failures so far (Kubernetes' job backoff; [`next_start_ms`]): a failing job's retries
//!   never run in a tight loop.
//! - `status` is written only when it changes.

use bramble_wire::objects::{Job, JobPhase, Kind, Object, Pod, PodPhase};

use super::{Action, Ctx, Snapshot, delete_of, event, is_terminal};

/// Actions that move one job towards completion.
pub fn reconcile(snap: &Snapshot, j: &Job) -> Vec<Action> {
    let mut ctx = Ctx::new(snap);
    reconcile_in(&mut ctx, j)
}

/// When a failing job may create its next pod: its last failure plus the restart backoff for
/// its failures so far. `None` if no pod failed.
fn backoff_until<'a>(failed: impl Iterator<Item = &'a Pod>) -> Option<u64> {
    let (n, last) = failed.fold((0u32, 0u64), |(n, last), p| {
        (n + 1, last.max(p.status.updated_ms))
    });
    (n > 0).then(|| last.saturating_add(bramble_wire::objects::restart_backoff_ms(n)))
}

/// [`backoff_until`] of a job in a snapshot (for the loop's next deadline).
pub(crate) fn next_start_ms(snap: &Snapshot, j: &Job) -> Option<u64> {
    backoff_until(snap.pods.iter().filter(|p| {
        p.status.phase == PodPhase::Failed
            && p.meta.namespace == j.meta.namespace
            && p.meta.owners.iter().any(|o| o.uid == j.meta.uid)
    }))
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
    let backing_off = backoff_until(
        pods.iter()
            .copied()
            .filter(|p| p.status.phase == PodPhase::Failed),
    )
    .is_some_and(|t| t > now);
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
    } else if active.len() < want && !backing_off && !ctx.terminating(&j.meta.namespace) {
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
