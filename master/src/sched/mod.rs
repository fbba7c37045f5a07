//! The scheduler: a pure function from a snapshot and pending pods to bindings.
//!
//! Nomad's pipeline, Kubernetes' vocabulary:
//! 1. **Snapshot** ([`Snapshot`]): nodes with labels interned to integers and taints to ids, and
//!    what is bound to each (summed requests, host ports, pods per owner). Built once per round,
//!    from the store's objects ([`Snapshot::from_objects`]) or by hand ([`Snapshot::add_node`]).
//! 2. **Feasibility** ([`feasible`]): small checkers in a fixed order — node Ready, not cordoned,
//!    architecture, node selector, taints, CPU / memory / pids, host ports.
//! 3. **Rank** ([`rank`]): least-allocated plus spread of an owner's replicas, weighted
//!    ([`Weights`]); ties broken by a seeded PRNG.
//! 4. **Plan** ([`Plan`]): bindings, and for every pod left unbound a Kubernetes-style summary
//!    ("0/5 nodes available: 3 insufficient memory, 2 not ready"). The caller commits it.
//!
//! Pods are placed one after another in the order given (callers sort by priority or age); each
//! placement updates a working copy of the node usage, so later pods of the same call see it and a
//! batch never over-commits a node.
//!
//! # Sampling
//! Like kube-scheduler's `percentageOfNodesToScore` (and Nomad's limit iterator), a pod does not
//! score every node: nodes are visited in an order shuffled once per call, each pod starting where
//! the previous one stopped, and the scan stops after [`Sample`] feasible candidates. The best of
//! those wins. When fewer nodes are feasible the scan covers every node, so a pod is reported
//! unschedulable only when **no** node fits, and its summary then counts every node. Sampling trades
//! a little placement quality (the best node of a sample, not of the cluster) for speed on big
//! clusters; [`Sample::All`] turns it off.
//!
//! # Invariants
//! No I/O, no clock (`now_ms` is an input, stamped into the plan), no global state: the same
//! snapshot, pods, time, seed and config give the same plan.
//!
//! # Example
//! ```
//! use bramble_master::sched::{schedule, PendingPod, SchedNode, Snapshot, Amounts};
//! use bramble_wire::objects::{Arch, Resources};
//!
//! let mut snap = Snapshot::new();
//! snap.add_node(SchedNode {
//!     name: "pi-1".into(),
//!     arch: Some(Arch::Aarch64),
//!     ready: true,
//!     allocatable: Resources { cpu_millis: Some(4000), memory_bytes: Some(4 << 30), pids: None },
//!     ..Default::default()
//! });
//! let pod = PendingPod {
//!     namespace: "default".into(),
//!     name: "web".into(),
//!     requests: Amounts { cpu_millis: 500, memory_bytes: 64 << 20, pids: 0 },
//!     arch: Some(Arch::Aarch64),
//!     ..Default::default()
//! };
//! let plan = schedule(&snap, &[pod], 0, 7);
//! assert_eq!(plan.bindings.len(), 1);
//! assert_eq!(snap.node(plan.bindings[0].node).name, "pi-1");
//! ```

use std::collections::HashMap;
use std::fmt;

pub mod feasible;
pub mod rank;
mod rng;
pub mod snapshot;

#[cfg(test)]
mod tests;

pub use feasible::Reason;
pub use rank::Weights;
pub use snapshot::{
    Allocatable, Amounts, LABEL_ARCH, LABEL_HOSTNAME, NodeView, OwnerKey, PendingPod, SchedNode,
    Snapshot,
};

use feasible::PodReq;
use rng::SplitMix64;

/// How many feasible nodes a pod's scan collects before it picks the best.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Sample {
    /// Score every feasible node.
    All,
    /// kube-scheduler's adaptive default: every node below 100 nodes; otherwise
    /// `max(100, n * max(5, 50 - n / 125) / 100)` — 420 of 1,000 nodes, 500 of 5,000.
    #[default]
    Adaptive,
    /// At most this many (at least 1).
    Fixed(usize),
}

impl Sample {
    /// The number of feasible candidates to collect among `nodes` nodes.
    pub fn candidates(self, nodes: usize) -> usize {
        match self {
            Sample::All => nodes,
            Sample::Fixed(k) => k.max(1),
            Sample::Adaptive => {
                const MIN: usize = 100;
                if nodes < MIN {
                    return nodes;
                }
                let pct = 50usize.saturating_sub(nodes / 125).max(5);
                (nodes * pct / 100).max(MIN)
            }
        }
    }
}

/// Tunables of [`schedule_with`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Config {
    /// Feasible candidates per pod.
    pub sample: Sample,
    /// Scorer weights.
    pub weights: Weights,
}

/// A placement: `pending[pod]` goes to the snapshot's node `node`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Binding {
    /// Index into the pending pods.
    pub pod: usize,
    /// Index of the node in the snapshot ([`Snapshot::node`]).
    pub node: usize,
    /// The winning score (for `describe` and tests).
    pub score: u64,
}

/// Per-reason node counts of an unschedulable pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ReasonCounts(pub [u32; Reason::COUNT]);

impl ReasonCounts {
    /// Nodes rejected for `r`.
    pub fn get(&self, r: Reason) -> u32 {
        self.0[r as usize]
    }

    /// Nodes rejected for any reason.
    pub fn total(&self) -> u32 {
        self.0.iter().sum()
    }
}

/// A pod no node could take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Failure {
    /// Index into the pending pods.
    pub pod: usize,
    /// Nodes in the snapshot.
    pub nodes: u32,
    /// For each reason, the nodes whose first failing checker it was (they add up to `nodes`).
    pub reasons: ReasonCounts,
}

impl Failure {
    /// The summary, e.g. `0/5 nodes available: 3 insufficient memory, 2 not ready`: reasons by
    /// descending count, then in checker order.
    pub fn message(&self) -> String {
        self.to_string()
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "0/{} nodes available", self.nodes)?;
        if self.nodes == 0 {
            return f.write_str(": no nodes in the cluster");
        }
        let mut rs: Vec<Reason> = Reason::ALL
            .into_iter()
            .filter(|r| self.reasons.get(*r) > 0)
            .collect();
        rs.sort_by_key(|r| (std::cmp::Reverse(self.reasons.get(*r)), *r));
        for (i, r) in rs.iter().enumerate() {
            let sep = if i == 0 { ": " } else { ", " };
            write!(f, "{sep}{} {}", self.reasons.get(*r), r.as_str())?;
        }
        Ok(())
    }
}

/// The result of a round: what to bind, what could not be placed and why.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Plan {
    /// The `now_ms` the plan was computed for (for status timestamps; the scheduler reads no clock).
    pub now_ms: u64,
    /// Bindings, in pending order.
    pub bindings: Vec<Binding>,
    /// Unschedulable pods, in pending order. Every pending pod is in exactly one of the two lists.
    pub failures: Vec<Failure>,
}

/// [`schedule_with`] and the default [`Config`].
pub fn schedule(snapshot: &Snapshot, pending: &[PendingPod], now_ms: u64, seed: u64) -> Plan {
    schedule_with(snapshot, pending, now_ms, seed, &Config::default())
}

/// Places `pending` in order onto `snapshot`'s nodes: for each pod, filter (see [`feasible`]),
/// score (see [`rank`]) up to `config.sample` feasible nodes, bind to the best one (ties broken by
/// a PRNG seeded with `seed`), and account the placement before the next pod.
pub fn schedule_with(
    snapshot: &Snapshot,
    pending: &[PendingPod],
    now_ms: u64,
    seed: u64,
    config: &Config,
) -> Plan {
    let n = snapshot.nodes.len();
    let mut plan = Plan {
        now_ms,
        bindings: Vec::with_capacity(pending.len()),
        failures: Vec::new(),
    };
    let mut usage = snapshot.usage.clone();
    let mut rng = SplitMix64::new(seed);
    let mut order: Vec<u32> = (0..n as u32).collect();
    rng.shuffle(&mut order);
    let want = config.sample.candidates(n);
    let mut cursor = 0usize;

    // Owners of pending pods that nothing bound yet: fresh ids after the snapshot's.
    let mut new_owners: HashMap<&OwnerKey, u32> = HashMap::new();
    // Scratch, reused for every pod.
    let mut selector: Vec<(u32, u32)> = Vec::new();
    let mut tolerated_buf: Vec<bool> = vec![false; snapshot.taints.len()];

    for (pi, pod) in pending.iter().enumerate() {
        // Compile the pod against the snapshot.
        selector.clear();
        let mut selector_impossible = false;
        for (k, v) in &pod.node_selector {
            match (snapshot.strings.get(k), snapshot.strings.get(v)) {
                (Some(k), Some(v)) => selector.push((k, v)),
                _ => selector_impossible = true,
            }
        }
        selector.sort_unstable();
        let tolerated: &[bool] = if pod.tolerations.is_empty() {
            &[]
        } else {
            for (slot, taint) in tolerated_buf.iter_mut().zip(&snapshot.taints) {
                *slot = pod.tolerations.iter().any(|t| t.tolerates(taint));
            }
            &tolerated_buf
        };
        let owner = pod.owner.as_ref().map(|o| match snapshot.owners.get(o) {
            Some(&id) => id,
            None => {
                let next = (snapshot.owners.len() + new_owners.len()) as u32;
                *new_owners.entry(o).or_insert(next)
            }
        });
        let req = PodReq {
            requests: pod.requests,
            host_ports: &pod.host_ports,
            arch: pod.arch,
            selector: &selector,
            selector_impossible,
            tolerated,
            owner,
        };

        // Filter and score, from the cursor on, until enough candidates or every node is seen.
        let mut reasons = [0u32; Reason::COUNT];
        let mut best: Option<(usize, u64)> = None;
        let mut ties = 0u64;
        let mut found = 0usize;
        let mut visited = 0usize;
        let mut at = cursor;
        while visited < n && found < want {
            let idx = order[at] as usize;
            at += 1;
            if at == n {
                at = 0;
            }
            visited += 1;
            let (node, use_) = (&snapshot.nodes[idx], &usage[idx]);
            match feasible::feasible(&req, node, use_) {
                Err(r) => reasons[r as usize] += 1,
                Ok(()) => {
                    found += 1;
                    let s = rank::score(&config.weights, &req, node, use_);
                    match best {
                        Some((_, b)) if s < b => {}
                        Some((_, b)) if s == b => {
                            // Reservoir sampling: each of the tied nodes wins with equal chance.
                            ties += 1;
                            if rng.below(ties) == 0 {
                                best = Some((idx, s));
                            }
                        }
                        _ => {
                            best = Some((idx, s));
                            ties = 1;
                        }
                    }
                }
            }
        }
        cursor = at;

        match best {
            Some((idx, s)) => {
                usage[idx].add(&pod.requests, &pod.host_ports, owner);
                plan.bindings.push(Binding {
                    pod: pi,
                    node: idx,
                    score: s,
                });
            }
            None => plan.failures.push(Failure {
                pod: pi,
                nodes: n as u32,
                reasons: ReasonCounts(reasons),
            }),
        }
    }
    plan
}
