//! Ranking: scores for feasible nodes, higher is better (Nomad's `rank.go`, Kubernetes' score
//! plugins). Each scorer returns `0..=MAX_SCORE`; a weighted sum ([`Weights`]) ranks the nodes.

use super::snapshot::{Amounts, Limits, UNLIMITED};

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
pub(crate) fn least_allocated(req: &Amounts, limits: &Limits, used: &Amounts) -> u32 {
    let cpu = free_percent(used.cpu_millis, req.cpu_millis, limits.cpu);
    let mem = free_percent(used.memory_bytes, req.memory_bytes, limits.mem);
    (cpu + mem) / 2
}

/// Spread: `MAX_SCORE / (1 + k)` where `k` is the number of pods of the same owner already on
/// the node (100 for none, 50 for one, 33 for two...). Pods without an owner score 0 everywhere.
#[inline]
pub(crate) fn spread(same_owner: Option<u32>) -> u32 {
    match same_owner {
        Some(k) => MAX_SCORE / (1 + k),
        None => 0,
    }
}

/// Weights of the scorers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Weights {
    /// Weight of least-allocated (mean free percentage of CPU and memory after placement).
    pub least_allocated: u32,
    /// Weight of spread (`100 / (1 + replicas of the pod's owner on the node)`).
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

/// The weighted sum of the scorers. `same_owner` is the number of pods of the pod's owner on the
/// node, `None` for a pod without owner.
#[inline]
pub(crate) fn score(
    w: &Weights,
    req: &Amounts,
    limits: &Limits,
    used: &Amounts,
    same_owner: Option<u32>,
) -> u64 {
    u64::from(w.least_allocated) * u64::from(least_allocated(req, limits, used))
        + u64::from(w.spread) * u64::from(spread(same_owner))
}
