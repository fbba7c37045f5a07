//! Ranking: scores for feasible nodes, higher is better (Nomad's `rank.go`, Kubernetes' score
//! plugins). Each scorer returns `0..=MAX_SCORE`; [`score`] weighs and adds them.

use super::feasible::PodReq;
use super::snapshot::{NodeStatic, NodeUsage, UNLIMITED};

/// The best score of a single scorer.
pub const MAX_SCORE: u32 = 100;

/// Percentage of `limit` still free after `used + req` is taken. Unlimited counts as all free.
#[inline]
fn free_percent(used: u64, req: u64, limit: u64) -> u32 {
    if limit == UNLIMITED {
        return MAX_SCORE;
    }
    if limit == 0 {
        return 0;
    }
    let free = limit.saturating_sub(used.saturating_add(req));
    if free <= u64::MAX / 100 {
        (free * 100 / limit) as u32
    } else {
        ((u128::from(free) * 100) / u128::from(limit)) as u32
    }
}

/// Least-allocated: the mean free fraction of CPU and memory once the pod is placed, in percent.
/// Prefers emptier nodes, which spreads load and leaves room for big pods on small boards.
#[inline]
pub(crate) fn least_allocated(p: &PodReq<'_>, n: &NodeStatic, u: &NodeUsage) -> u32 {
    let cpu = free_percent(u.used.cpu_millis, p.requests.cpu_millis, n.limits.cpu);
    let mem = free_percent(u.used.memory_bytes, p.requests.memory_bytes, n.limits.mem);
    (cpu + mem) / 2
}

/// Spread: `MAX_SCORE / (1 + k)` where `k` is the number of pods of the same owner already on
/// the node (100 for none, 50 for one, 33 for two...). Pods without an owner score 0 everywhere.
#[inline]
pub(crate) fn spread(p: &PodReq<'_>, u: &NodeUsage) -> u32 {
    match p.owner {
        Some(o) => MAX_SCORE / (1 + u.owner_count(o)),
        None => 0,
    }
}

/// Weights of the scorers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Weights {
    /// Weight of [least-allocated](least_allocated).
    pub least_allocated: u32,
    /// Weight of [spread](spread).
    pub spread: u32,
}

impl Default for Weights {
    /// Spread counts twice (as Kubernetes' default weights for topology spreading), so a node
    /// without a replica beats one with a replica whatever their load.
    fn default() -> Self {
        Weights {
            least_allocated: 1,
            spread: 2,
        }
    }
}

/// The weighted sum of the scorers.
#[inline]
pub(crate) fn score(w: &Weights, p: &PodReq<'_>, n: &NodeStatic, u: &NodeUsage) -> u64 {
    u64::from(w.least_allocated) * u64::from(least_allocated(p, n, u))
        + u64::from(w.spread) * u64::from(spread(p, u))
}
