//! The scheduler: a pure function from a snapshot and pending pods to bindings.
//!
//! Nomad's pipeline, Kubernetes' vocabulary:
//! 1. **Snapshot** ([`Snapshot`]): nodes with labels interned to integers and taints to ids, and
//!    what is bound to each (summed requests, host ports, pods per owner). Built once per round,
//!    from the store's objects ([`Snapshot::from_objects`]) or by hand ([`Snapshot::add_node`]).
//! 2. **Feasibility** ([`feasible`]): small checkers in a fixed order — node Ready, not cordoned,
//!    architecture, node selector, taints, CPU / memory / pids, host ports. A resource whose
//!    allocatable is `None` is not advertised and so unlimited; `Some(0)` means none. A zero
//!    request always fits (as in Kubernetes), even on an already over-committed node.
//! 3. **Rank** ([`rank`]): least-allocated plus spread of an owner's replicas, weighted
//!    ([`Weights`]); ties broken by a seeded PRNG.
//! 4. **Plan** ([`Plan`]): bindings, and for every pod left unbound a Kubernetes-style summary
//!    ("0/5 nodes available: 3 insufficient memory, 2 not ready"). The caller commits it.
//!
//! Pods are placed one after another in the order given (callers sort by priority or age); each
//! placement updates a working copy of the node usage, so later pods of the same call see it and a
//! batch never over-commits a node.
//!
//! # Performance
//! - **Classes.** The static checkers (readiness, cordon, architecture, selector, taints) depend
//!   only on the node and the pod's constraints, which replicas share. Pods are grouped into
//!   classes by those constraints (interned); a class's passing nodes and its per-reason
//!   rejections are computed once per call, and each pod then runs only the dynamic checkers
//!   (resources, host ports) on its class's nodes. The cache holds 64 classes and starts over
//!   when full: a new class costs one pass of the static checkers, what a single pod would.
//! - **Layout.** The batch's working copy (usage, limits, ports) is laid out in visiting order, so
//!   scans read memory sequentially; an owner's pods per node live in one dense array, refilled
//!   only when the owner changes from one pod to the next. No string is touched in the scan.
//! - **Sampling.** Like kube-scheduler's `percentageOfNodesToScore` (and Nomad's limit iterator),
//!   a pod does not score every node: nodes are visited in an order shuffled once per call, each
//!   pod of a class starting where the previous one stopped, and the scan stops after [`Sample`]
//!   feasible candidates; the best of those wins. When fewer nodes are feasible the scan covers
//!   every node, so a pod is reported unschedulable only when **no** node fits, and its summary
//!   then counts every node. The default, [`Sample::Adaptive`], is kube-scheduler's formula (420
//!   of 1,000 nodes, 500 of 5,000); [`Sample::All`] turns sampling off.
//!
//! # Invariants
//! No I/O, no clock (`now_ms` is an input, stamped into the plan), no global state: the same
//! snapshot, pods, time, seed and config give the same plan.
//!
//! # Example
//! ```
//! use bramble_server::sched::{schedule, PendingPod, SchedNode, Snapshot, Amounts};
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

/// What a failure says about the pod's rootfs artifact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ArtifactNote {
    /// No artifact of that name: no node was looked at.
    Missing(String),
    /// The artifact and the architectures it has variants for (some nodes lacked one).
    Variants(String, Vec<bramble_wire::objects::Arch>),
}

/// What a failure says about the pod's image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageNote {
    /// The image (normalized reference) is not stored yet: no node was looked at.
    Missing(String),
    /// Some nodes' architectures have no variant: the reference, the architectures of those
    /// nodes, and those the image has.
    Variants {
        /// The normalized reference.
        reference: String,
        /// Architectures of nodes that lacked a variant (sorted).
        missing: Vec<bramble_wire::objects::Arch>,
        /// The image's variants (sorted).
        has: Vec<bramble_wire::objects::Arch>,
    },
}

/// The OCI platform name of an architecture (`linux/arm/v7`).
pub fn platform(arch: bramble_wire::objects::Arch) -> &'static str {
    bramble_image::platform::platform_name(arch)
}

/// A pod no node could take.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// Index into the pending pods.
    pub pod: usize,
    /// Nodes in the snapshot.
    pub nodes: u32,
    /// For each reason, the nodes whose first failing checker it was (they add up to `nodes`).
    pub reasons: ReasonCounts,
    /// Set when the pod's artifact is missing, or when some node lacked a variant of it.
    pub artifact: Option<ArtifactNote>,
    /// Set when the pod's image is not stored yet, or when some node lacked a variant of it.
    pub image: Option<ImageNote>,
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
        if let Some(ArtifactNote::Missing(name)) = &self.artifact {
            return write!(
                f,
                "artifact {name} not found: push it with bramble artifact push"
            );
        }
        if let Some(ImageNote::Missing(r)) = &self.image {
            return write!(f, "waiting for image {r} to be pulled");
        }
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
        if let Some(ArtifactNote::Variants(name, archs)) = &self.artifact {
            if archs.is_empty() {
                write!(f, " ({name} has no variants)")?;
            } else {
                let names: Vec<&str> = archs.iter().map(|a| a.as_str()).collect();
                write!(f, " ({name} has {})", names.join(", "))?;
            }
        }
        if let Some(ImageNote::Variants {
            reference,
            missing,
            has,
        }) = &self.image
        {
            let missing: Vec<&str> = missing.iter().map(|a| platform(*a)).collect();
            let has: Vec<&str> = has.iter().map(|a| platform(*a)).collect();
            write!(
                f,
                ": no {} variant of image {reference}",
                missing.join(" or ")
            )?;
            if has.is_empty() {
                write!(f, " (it has no variants)")?;
            } else {
                write!(f, " (it has {})", has.join(", "))?;
            }
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
    let mut rng = SplitMix64::new(seed);
    let mut w = Working::new(snapshot, &mut rng);
    let want = config.sample.candidates(n);
    let mut classes = Classes::default();

    // Owners of pending pods that nothing bound yet: fresh ids after the snapshot's.
    let mut new_owners: HashMap<&OwnerKey, u32> = HashMap::new();
    // Scratch, reused for every pod.
    let mut key = ClassKey::default();
    let mut tolerated: Vec<bool> = vec![false; snapshot.taints.len()];

    for (pi, pod) in pending.iter().enumerate() {
        // A missing artifact fails before any node is looked at.
        if let Some(a) = &pod.artifact
            && !snapshot.artifacts.contains_key(a)
        {
            plan.failures.push(Failure {
                pod: pi,
                nodes: n as u32,
                reasons: ReasonCounts::default(),
                artifact: Some(ArtifactNote::Missing(a.clone())),
                image: None,
            });
            continue;
        }
        // So does an image not stored yet.
        if let Some(i) = &pod.image
            && !snapshot.images.contains_key(i)
        {
            plan.failures.push(Failure {
                pod: pi,
                nodes: n as u32,
                reasons: ReasonCounts::default(),
                artifact: None,
                image: Some(ImageNote::Missing(i.clone())),
            });
            continue;
        }
        // Compile the pod's static constraints and find (or build) its class.
        key.fill(snapshot, pod, &mut tolerated);
        let class = classes.find_or_build(&key, snapshot, &w.order, &tolerated);
        let owner = pod.owner.as_ref().map(|o| match snapshot.owners.get(o) {
            Some(&id) => id,
            None => {
                let next = (snapshot.owners.len() + new_owners.len()) as u32;
                *new_owners.entry(o).or_insert(next)
            }
        });
        if let Some(o) = owner {
            w.focus_owner(o);
        }

        // Dynamic checks and scores over the class's nodes, from its cursor on, until enough
        // candidates or every node of the class is seen.
        let members = &class.members;
        let len = members.len();
        let mut reasons = class.static_reasons;
        let mut best: Option<(usize, u64)> = None;
        let mut ties = 0u64;
        let mut found = 0usize;
        let mut visited = 0usize;
        let mut at = class.cursor;
        while visited < len && found < want {
            let pos = members[at] as usize;
            at += 1;
            if at == len {
                at = 0;
            }
            visited += 1;
            let h = &w.hot[pos];
            match feasible::dynamic_fit(
                &pod.requests,
                &pod.host_ports,
                &h.limits,
                &h.used,
                &h.ports,
            ) {
                Err(r) => reasons[r as usize] += 1,
                Ok(()) => {
                    found += 1;
                    let same = owner.map(|_| w.owner_here[pos]);
                    let s = rank::score(&config.weights, &pod.requests, &h.limits, &h.used, same);
                    match best {
                        Some((_, b)) if s < b => {}
                        Some((_, b)) if s == b => {
                            // Reservoir sampling: each of the tied nodes wins with equal chance.
                            ties += 1;
                            if rng.below(ties) == 0 {
                                best = Some((pos, s));
                            }
                        }
                        _ => {
                            best = Some((pos, s));
                            ties = 1;
                        }
                    }
                }
            }
        }
        class.cursor = at;

        match best {
            Some((pos, s)) => {
                w.place(pos, pod, owner);
                plan.bindings.push(Binding {
                    pod: pi,
                    node: w.order[pos] as usize,
                    score: s,
                });
            }
            None => plan.failures.push(Failure {
                pod: pi,
                nodes: n as u32,
                reasons: ReasonCounts(reasons),
                artifact: match (&pod.artifact, &key.artifact_archs) {
                    (Some(name), Some(archs))
                        if reasons[Reason::NoArtifactVariant as usize] > 0 =>
                    {
                        Some(ArtifactNote::Variants(name.clone(), archs.clone()))
                    }
                    _ => None,
                },
                image: match &pod.image {
                    Some(r) if reasons[Reason::NoImageVariant as usize] > 0 => {
                        let info = snapshot.images.get(r).cloned().unwrap_or_default();
                        let mut missing: Vec<bramble_wire::objects::Arch> = snapshot
                            .nodes
                            .iter()
                            .filter_map(|n| n.arch)
                            .filter(|a| {
                                *a != bramble_wire::objects::Arch::Mcu && !info.runs_on.contains(a)
                            })
                            .collect();
                        missing.sort_unstable();
                        missing.dedup();
                        Some(ImageNote::Variants {
                            reference: r.clone(),
                            missing,
                            has: info.variants,
                        })
                    }
                    _ => None,
                },
            }),
        }
    }
    plan
}

/// What one placement changes on a node, laid out in visiting order so that scans read memory
/// sequentially.
#[derive(Debug, Clone)]
struct Hot {
    used: Amounts,
    limits: snapshot::Limits,
    /// Host ports in use, sorted.
    ports: Vec<u16>,
}

/// The batch's working copy of the cluster. Nodes are addressed by *position*: their index in
/// the order shuffled once per call.
#[derive(Debug)]
struct Working {
    /// Position → node index.
    order: Vec<u32>,
    /// By position.
    hot: Vec<Hot>,
    /// Per owner id: (position, pods) entries, summed (an entry is pushed per placement).
    owner_pos: Vec<Vec<(u32, u32)>>,
    /// The focused owner's pods per position (zero elsewhere).
    owner_here: Vec<u32>,
    focused: Option<u32>,
}

impl Working {
    fn new(snapshot: &Snapshot, rng: &mut SplitMix64) -> Working {
        let n = snapshot.nodes.len();
        let mut order: Vec<u32> = (0..n as u32).collect();
        rng.shuffle(&mut order);
        let mut owner_pos = vec![Vec::new(); snapshot.owners.len()];
        let hot = order
            .iter()
            .enumerate()
            .map(|(pos, &i)| {
                let u = &snapshot.usage[i as usize];
                for &(o, c) in &u.owners {
                    owner_pos[o as usize].push((pos as u32, c));
                }
                Hot {
                    used: u.used,
                    limits: snapshot.nodes[i as usize].limits,
                    ports: u.host_ports.clone(),
                }
            })
            .collect();
        Working {
            order,
            hot,
            owner_pos,
            owner_here: vec![0; n],
            focused: None,
        }
    }

    /// Makes `owner_here` count `owner`'s pods. Cheap when consecutive pods share an owner (the
    /// replicas of one controller), and proportional to the owners' pods otherwise.
    fn focus_owner(&mut self, owner: u32) {
        if self.focused == Some(owner) {
            return;
        }
        if let Some(old) = self.focused.and_then(|o| self.owner_pos.get(o as usize)) {
            for &(pos, _) in old {
                self.owner_here[pos as usize] = 0;
            }
        }
        if let Some(new) = self.owner_pos.get(owner as usize) {
            for &(pos, c) in new {
                self.owner_here[pos as usize] += c;
            }
        }
        self.focused = Some(owner);
    }

    /// Accounts `pod` on the node at `pos`. `owner` must be focused.
    fn place(&mut self, pos: usize, pod: &PendingPod, owner: Option<u32>) {
        let h = &mut self.hot[pos];
        h.used.add(&pod.requests);
        for &p in &pod.host_ports {
            if let Err(i) = h.ports.binary_search(&p) {
                h.ports.insert(i, p);
            }
        }
        if let Some(o) = owner {
            let o = o as usize;
            if self.owner_pos.len() <= o {
                self.owner_pos.resize_with(o + 1, Vec::new);
            }
            self.owner_pos[o].push((pos as u32, 1));
            self.owner_here[pos] += 1;
        }
    }
}

/// A pod's static constraints, interned: pods with equal keys pass the static checkers on the
/// same nodes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct ClassKey {
    arch: Option<bramble_wire::objects::Arch>,
    /// Architectures of the pod's artifact's variants; `None` = no artifact.
    artifact_archs: Option<Vec<bramble_wire::objects::Arch>>,
    /// Architectures that run the pod's image; `None` = no image.
    image_archs: Option<Vec<bramble_wire::objects::Arch>>,
    selector_impossible: bool,
    /// (key id, value id), sorted.
    selector: Vec<(u32, u32)>,
    /// Ids of the tolerated taints, sorted.
    tolerated: Vec<u32>,
}

impl ClassKey {
    /// Compiles `pod` into `self` and `tolerated` (by taint id), reusing their buffers.
    fn fill(&mut self, snapshot: &Snapshot, pod: &PendingPod, tolerated: &mut [bool]) {
        self.arch = pod.arch;
        self.artifact_archs = pod
            .artifact
            .as_ref()
            .map(|a| snapshot.artifacts.get(a).cloned().unwrap_or_default());
        self.image_archs = pod.image.as_ref().map(|i| {
            snapshot
                .images
                .get(i)
                .map(|x| x.runs_on.clone())
                .unwrap_or_default()
        });
        self.selector.clear();
        self.selector_impossible = false;
        for (k, v) in &pod.node_selector {
            match (snapshot.strings.get(k), snapshot.strings.get(v)) {
                (Some(k), Some(v)) => self.selector.push((k, v)),
                _ => self.selector_impossible = true,
            }
        }
        self.selector.sort_unstable();
        self.tolerated.clear();
        for (id, (slot, taint)) in tolerated.iter_mut().zip(&snapshot.taints).enumerate() {
            *slot = pod.tolerations.iter().any(|t| t.tolerates(taint));
            if *slot {
                self.tolerated.push(id as u32);
            }
        }
    }
}

/// The nodes (positions, ascending) that pass a class's static checkers, with the reasons of
/// those that do not, and where the next pod of the class starts its scan.
#[derive(Debug)]
struct Class {
    key: ClassKey,
    members: Vec<u32>,
    static_reasons: [u32; Reason::COUNT],
    cursor: usize,
}

/// A small cache of classes. Bounded: when full it starts over (a class costs one pass of the
/// static checkers over the nodes, the same as scanning them for one pod).
#[derive(Debug, Default)]
struct Classes {
    list: Vec<Class>,
    last: usize,
}

impl Classes {
    const MAX: usize = 64;

    fn find_or_build(
        &mut self,
        key: &ClassKey,
        snapshot: &Snapshot,
        order: &[u32],
        tolerated: &[bool],
    ) -> &mut Class {
        let hit = if self.list.get(self.last).is_some_and(|c| c.key == *key) {
            Some(self.last)
        } else {
            self.list.iter().position(|c| c.key == *key)
        };
        let idx = match hit {
            Some(i) => i,
            None => {
                if self.list.len() == Self::MAX {
                    self.list.clear();
                }
                let req = PodReq {
                    arch: key.arch,
                    artifact_archs: key.artifact_archs.as_deref(),
                    image_archs: key.image_archs.as_deref(),
                    selector: &key.selector,
                    selector_impossible: key.selector_impossible,
                    tolerated,
                };
                let mut members = Vec::new();
                let mut static_reasons = [0u32; Reason::COUNT];
                for (pos, &i) in order.iter().enumerate() {
                    match feasible::static_fit(&req, &snapshot.nodes[i as usize]) {
                        Ok(()) => members.push(pos as u32),
                        Err(r) => static_reasons[r as usize] += 1,
                    }
                }
                self.list.push(Class {
                    key: key.clone(),
                    members,
                    static_reasons,
                    cursor: 0,
                });
                self.list.len() - 1
            }
        };
        self.last = idx;
        &mut self.list[idx]
    }
}
