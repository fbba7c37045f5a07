//! The restart policy and backoff of one process, as a pure state machine: time is an input,
//! so a table of events tests it without processes or clocks. The pod init feeds it what
//! happened (started, exited, stop) and asks when to start next.
//!
//! Rules: a process starts at once; when it ends, the restart policy decides (`Always`, or
//! `OnFailure` when it failed — a liveness kill counts as a failure — or `Never`); a restart
//! waits `initial`, doubling with each consecutive restart up to `max`; a run of at least
//! `reset_after` starts the doubling over. Once stopping, nothing starts again.

use std::time::{Duration, Instant};

use bramble_wire::objects::RestartPolicy;

use super::Backoff;

/// Where a process is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// To be started at this time (at once, or after a backoff).
    StartAt(Instant),
    /// Running since this time.
    Running(Instant),
    /// Ended and not restarting (policy, or the pod is stopping).
    Done,
}

/// One process's restart state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Restarts {
    policy: RestartPolicy,
    backoff: Backoff,
    phase: Phase,
    /// Consecutive restarts since the last long-enough run (the backoff's exponent).
    failures: u32,
    /// Restarts so far (reported in the status).
    restarts: u32,
    stopping: bool,
}

impl Restarts {
    /// A process to be started at `now`.
    pub fn new(policy: RestartPolicy, backoff: Backoff, now: Instant) -> Restarts {
        Restarts {
            policy,
            backoff,
            phase: Phase::StartAt(now),
            failures: 0,
            restarts: 0,
            stopping: false,
        }
    }

    /// The phase.
    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// Restarts so far.
    pub fn restarts(&self) -> u32 {
        self.restarts
    }

    /// When the next start is due, if one is pending.
    pub fn next_start(&self) -> Option<Instant> {
        match self.phase {
            Phase::StartAt(t) if !self.stopping => Some(t),
            _ => None,
        }
    }

    /// Whether a start is due at `now`.
    pub fn due(&self, now: Instant) -> bool {
        self.next_start().is_some_and(|t| t <= now)
    }

    /// The process was started (or its start was attempted) at `now`.
    pub fn started(&mut self, now: Instant) {
        self.phase = Phase::Running(now);
    }

    /// The process ended at `now` (`failed`: not a clean exit, or killed by its liveness probe).
    /// Returns when it restarts, if it does.
    pub fn exited(&mut self, now: Instant, failed: bool) -> Option<Instant> {
        let ran = match self.phase {
            Phase::Running(since) => now.saturating_duration_since(since),
            _ => Duration::ZERO,
        };
        let restart = !self.stopping
            && match self.policy {
                RestartPolicy::Always => true,
                RestartPolicy::OnFailure => failed,
                RestartPolicy::Never => false,
            };
        if !restart {
            self.phase = Phase::Done;
            return None;
        }
        if ran >= self.backoff.reset_after {
            self.failures = 0;
        }
        let delay = self
            .backoff
            .initial
            .saturating_mul(1u32 << self.failures.min(30))
            .min(self.backoff.max);
        self.failures = self.failures.saturating_add(1);
        self.restarts += 1;
        let at = now + delay;
        self.phase = Phase::StartAt(at);
        Some(at)
    }

    /// The pod is stopping: nothing starts again. Returns whether a pending start was cancelled.
    pub fn stop(&mut self) -> bool {
        self.stopping = true;
        if matches!(self.phase, Phase::StartAt(_)) {
            self.phase = Phase::Done;
            return true;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Clone, Copy)]
    enum Ev {
        Start,
        Exit { failed: bool },
        Stop,
    }

    fn backoff() -> Backoff {
        Backoff {
            initial: Duration::from_millis(500),
            max: Duration::from_secs(4),
            reset_after: Duration::from_secs(60),
        }
    }

    /// Runs `events` (at ms after a base instant) and checks, after each, the next start (ms
    /// after the base, `None`: none pending) and the restart count.
    fn run(policy: RestartPolicy, table: &[(u64, Ev, Option<u64>, u32)]) {
        let base = Instant::now();
        let at = |ms: u64| base + Duration::from_millis(ms);
        let mut r = Restarts::new(policy, backoff(), base);
        assert_eq!(r.next_start(), Some(base), "a new process starts at once");
        for (i, &(ms, ev, next, restarts)) in table.iter().enumerate() {
            match ev {
                Ev::Start => {
                    assert!(r.due(at(ms)), "row {i}: start not due at {ms} ms");
                    r.started(at(ms));
                }
                Ev::Exit { failed } => {
                    let returned = r.exited(at(ms), failed);
                    assert_eq!(returned, next.map(at), "row {i}: exited returned");
                }
                Ev::Stop => {
                    r.stop();
                }
            }
            assert_eq!(r.next_start(), next.map(at), "row {i} ({ev:?} at {ms} ms)");
            assert_eq!(r.restarts(), restarts, "row {i}: restarts");
        }
    }

    #[test]
    fn always_backs_off_doubling_to_the_cap_and_resets_after_a_long_run() {
        use Ev::*;
        run(
            RestartPolicy::Always,
            &[
                (0, Start, None, 0),
                (100, Exit { failed: true }, Some(600), 1),
                (600, Start, None, 1),
                (700, Exit { failed: false }, Some(1_700), 2),
                (1_700, Start, None, 2),
                (1_800, Exit { failed: true }, Some(3_800), 3),
                (3_800, Start, None, 3),
                (3_900, Exit { failed: true }, Some(7_900), 4),
                (7_900, Start, None, 4),
                // Capped at max (4 s), not 8 s.
                (8_000, Exit { failed: true }, Some(12_000), 5),
                (12_000, Start, None, 5),
                // Ran 60 s: the backoff starts over.
                (72_000, Exit { failed: true }, Some(72_500), 6),
                (72_500, Start, None, 6),
                (72_600, Exit { failed: true }, Some(73_600), 7),
            ],
        );
    }

    #[test]
    fn on_failure_restarts_failures_only() {
        use Ev::*;
        run(
            RestartPolicy::OnFailure,
            &[
                (0, Start, None, 0),
                (10, Exit { failed: true }, Some(510), 1),
                (510, Start, None, 1),
                (520, Exit { failed: false }, None, 1),
            ],
        );
    }

    #[test]
    fn never_restarts_nothing() {
        use Ev::*;
        run(
            RestartPolicy::Never,
            &[(0, Start, None, 0), (10, Exit { failed: true }, None, 0)],
        );
    }

    #[test]
    fn stopping_cancels_a_pending_restart_and_prevents_new_ones() {
        use Ev::*;
        run(
            RestartPolicy::Always,
            &[
                (0, Start, None, 0),
                (10, Exit { failed: true }, Some(510), 1),
                (100, Stop, None, 1),
            ],
        );
        run(
            RestartPolicy::Always,
            &[
                (0, Start, None, 0),
                (100, Stop, None, 0),
                (200, Exit { failed: false }, None, 0),
            ],
        );
    }

    #[test]
    fn a_failed_start_counts_as_a_run_of_zero() {
        let base = Instant::now();
        let mut r = Restarts::new(RestartPolicy::Always, backoff(), base);
        r.started(base);
        assert_eq!(
            r.exited(base, true),
            Some(base + Duration::from_millis(500))
        );
        assert!(!r.due(base));
        assert!(r.due(base + Duration::from_millis(500)));
        assert!(r.stop(), "a pending start is cancelled");
        assert_eq!(r.phase(), Phase::Done);
    }
}
