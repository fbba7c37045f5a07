//! Backoff of replacing pods that fail fast, per owner (Kubernetes' `CrashLoopBackOff` for the
//! pods of replica sets and daemon sets, its job backoff for jobs). Pure: the state is a
//! [`ReplaceBackoff`] in the owner's status and time comes from the snapshot.
//!
//! Rules (the delays are the process restart backoff's, [`restart_backoff_ms`]): a pod *failed
//! fast* when it is Failed within [`RESTART_BACKOFF_RESET_MS`] of its creation. The first pass
//! that sees such pods (and no wait pending) starts a wait of the delay for the consecutive
//! failures so far; the failed pods stay (their status says why) and nothing is created until the
//! wait is over; then they are deleted and replaced in one pass. A pod of the owner that has been
//! available for [`RESTART_BACKOFF_RESET_MS`] resets the count. So a crash-looping owner writes
//! to the store at most once per delay (a handful of writes per cycle), never in a tight loop.

use bramble_wire::objects::{
    Pod, PodPhase, RESTART_BACKOFF_RESET_MS, ReplaceBackoff, restart_backoff_ms,
};

/// Whether a pod failed within [`RESTART_BACKOFF_RESET_MS`] of its creation.
pub fn failed_fast(p: &Pod) -> bool {
    p.status.phase == PodPhase::Failed
        && p.status.updated_ms.saturating_sub(p.meta.created_ms) < RESTART_BACKOFF_RESET_MS
}

/// What an owner does with its terminal pods in this pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gate {
    /// The owner's backoff after this pass (write it if it changed).
    pub next: ReplaceBackoff,
    /// Delete terminal pods and create replacements now; else keep them and create nothing.
    pub replace: bool,
    /// A wait started in this pass: its delay (for the `BackOff` event).
    pub started_ms: Option<u64>,
}

/// The gate for an owner whose terminal pods are `terminal`; `stable`: one of its pods has been
/// available for [`RESTART_BACKOFF_RESET_MS`].
pub fn gate(b: &ReplaceBackoff, terminal: &[&Pod], stable: bool, now_ms: u64) -> Gate {
    let fast: Vec<&&Pod> = terminal.iter().filter(|p| failed_fast(p)).collect();
    let mut next = b.clone();
    if stable && fast.is_empty() && next.failures > 0 {
        next = ReplaceBackoff::default();
    }
    let mut started_ms = None;
    if !fast.is_empty() && next.until_ms == 0 {
        next.failures = next.failures.saturating_add(fast.len() as u32);
        let delay = restart_backoff_ms(next.failures);
        next.until_ms = now_ms.saturating_add(delay);
        if let Some(last) = fast.iter().max_by_key(|p| p.status.updated_ms) {
            next.reason = last.status.message.clone();
        }
        started_ms = Some(delay);
    }
    let replace = next.until_ms <= now_ms;
    if replace {
        // The wait (if any) is over and used up; the count stays for the next delay.
        next.until_ms = 0;
    }
    Gate {
        next,
        replace,
        started_ms,
    }
}

/// The `BackOff` event's message.
pub fn message(what: &str, failures: u32, delay_ms: u64, reason: &str) -> String {
    let why = if reason.is_empty() {
        String::new()
    } else {
        format!(": {reason}")
    };
    format!(
        "back-off {:.1} s before replacing {what} ({failures} failed fast in a row){why}",
        delay_ms as f64 / 1000.0
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use bramble_wire::objects::{PodStatus, RESTART_BACKOFF_MAX_MS};

    fn failed(created_ms: u64, at_ms: u64) -> Pod {
        let mut p = Pod::default();
        p.meta.created_ms = created_ms;
        p.status = PodStatus {
            phase: PodPhase::Failed,
            message: "mount /data: no such directory".into(),
            updated_ms: at_ms,
            ..Default::default()
        };
        p
    }

    #[test]
    fn a_crash_loop_waits_doubling_delays_up_to_the_cap() {
        let mut b = ReplaceBackoff::default();
        let mut now = 1_000_000;
        let mut waits = Vec::new();
        for _ in 0..8 {
            let p = failed(now, now + 50);
            now += 100;
            // First sight: a wait starts, the pod stays, nothing is created.
            let g = gate(&b, &[&p], false, now);
            assert!(!g.replace);
            let delay = g.started_ms.unwrap();
            waits.push(delay);
            assert_eq!(g.next.until_ms, now + delay);
            assert_eq!(g.next.reason, "mount /data: no such directory");
            b = g.next;
            // While waiting: no change, no replacement.
            let g = gate(&b, &[&p], false, now + delay - 1);
            assert_eq!(
                (g.next.clone(), g.replace, g.started_ms),
                (b.clone(), false, None)
            );
            // At the deadline: replaced, the count kept.
            now += delay;
            let g = gate(&b, &[&p], false, now);
            assert!(g.replace && g.started_ms.is_none());
            assert_eq!(g.next.until_ms, 0);
            b = g.next;
            // With the replacement running (not yet stable): nothing to do.
            let g = gate(&b, &[], false, now + 1);
            assert!(g.replace);
            assert_eq!(g.next, b);
        }
        assert_eq!(
            waits,
            [500, 1_000, 2_000, 4_000, 8_000, 10_000, 10_000, 10_000]
        );
        assert!(waits.iter().all(|&w| w <= RESTART_BACKOFF_MAX_MS));
        // A pod available long enough resets the count.
        let g = gate(&b, &[], true, now + 1);
        assert_eq!(g.next, ReplaceBackoff::default());
    }

    #[test]
    fn a_pod_that_ran_long_is_replaced_at_once() {
        let p = failed(0, RESTART_BACKOFF_RESET_MS + 1);
        let g = gate(
            &ReplaceBackoff::default(),
            &[&p],
            false,
            RESTART_BACKOFF_RESET_MS + 2,
        );
        assert!(g.replace && g.started_ms.is_none());
        assert_eq!(g.next, ReplaceBackoff::default());
    }

    #[test]
    fn succeeded_pods_are_not_failures() {
        let mut p = failed(0, 10);
        p.status.phase = PodPhase::Succeeded;
        let g = gate(&ReplaceBackoff::default(), &[&p], false, 20);
        assert!(g.replace);
    }
}
