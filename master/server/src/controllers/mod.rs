//! The controller manager's reconcilers: pure functions from a snapshot of the cluster to the
//! actions that move it towards its desired state (Kubernetes' controllers, Nomad's reconciler).
//!
//! Each controller looks at one kind of owner and the objects it owns, compares desired with
//! observed state and returns [`Action`]s; the caller applies them through the store with
//! optimistic concurrency ([`Action::Update`] and [`Action::Delete`] carry the revision the object
//! was read at) and reconciles again on the next change. Controllers are level-triggered: an action
//! that fails (conflict, not found) is simply recomputed on the next pass.
//!
//! - [`replicaset`]: keeps `replicas` non-terminal pods per replica set.
//! - [`backoff`]: replica sets, daemon sets and jobs back off replacing pods that fail fast.
//! - [`deployment`]: one replica set per template, rolling updates between them.
//! - [`daemonset`]: one pod per eligible node, created already bound to it.
//! - [`job`]: pods until `completions` succeeded, at most `parallelism` at once.
//! - [`node`]: the `node.bramble.io/not-ready` taint, and eviction after a timeout.
//! - [`gc`]: deletes pods and replica sets whose owners are gone.
//! - [`podnet`]: each node's pod subnet, and the routes between nodes.
//!
//! # Cost
//! [`reconcile`] indexes the snapshot once (pods and replica sets by owner uid, pod names) and
//! shares the index between controllers: about 7 ms for 1,000 nodes and 10,000 pods (see
//! `benches/controllers.rs`). The per-controller entry points (`replicaset::reconcile`...) build
//! that index on every call, so loops should call [`reconcile`] rather than each of them per owner.
//!
//! # Ownership
//! An object belongs to an owner when its `meta.owners` holds the owner's uid; selectors are for
//! display. Objects created by a controller carry exactly one owner reference.
//!
//! # Invariants
//! No I/O, no clock (`now_ms` is in the [`Snapshot`]), no global state or RNG: the same snapshot
//! gives the same actions. Applying the actions of [`reconcile`] and reconciling again reaches a
//! fixed point where no action is returned — in particular no [`Action::Update`] that changes
//! nothing, so an idle cluster costs no writes.

use std::collections::{HashMap, HashSet};

use bramble_wire::objects::{
    DaemonSet, Deployment, Job, Kind, Namespace, NamespacePhase, Node, Object, OwnerRef, Pod,
    PodPhase, PodTemplate, ProcessState, ReplicaSet,
};

pub mod backoff;
pub mod daemonset;
pub mod deployment;
pub mod endpoints;
pub mod gc;
pub mod job;
pub mod node;
pub mod podnet;
pub mod replicaset;
pub mod service_ip;

#[cfg(test)]
mod tests;

/// Label added to the templates of replica sets and daemon set pods: the template's hash.
pub const LABEL_TEMPLATE_HASH: &str = "bramble.io/template-hash";

/// Taint the node controller puts on nodes whose Ready condition is false.
pub const TAINT_NOT_READY: &str = "node.bramble.io/not-ready";

/// Everything the controllers read, at one instant.
#[derive(Debug, Clone, Copy)]
pub struct Snapshot<'a> {
    /// The current time, milliseconds since the Unix epoch.
    pub now_ms: u64,
    /// Nodes.
    pub nodes: &'a [Node],
    /// Pods, every namespace.
    pub pods: &'a [Pod],
    /// Deployments.
    pub deployments: &'a [Deployment],
    /// Replica sets.
    pub replicasets: &'a [ReplicaSet],
    /// Daemon sets.
    pub daemonsets: &'a [DaemonSet],
    /// Jobs.
    pub jobs: &'a [Job],
    /// Namespaces (nothing new is created in a `Terminating` one).
    pub namespaces: &'a [Namespace],
    /// Randomness for generated names (a fresh value per pass; tests pin it).
    pub seed: u64,
    /// (namespace, name) of pods that no longer exist but whose history (events, logs) does:
    /// generated names avoid them as they avoid live pods' names.
    pub used_names: &'a HashSet<(String, String)>,
}

/// Time limits of the node lifecycle: the one owner of their defaults (the master's flags and
/// its `Config` take theirs from [`Timings::DEFAULT`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timings {
    /// How often workers heartbeat (sent to them in `Welcome`).
    pub heartbeat_interval_ms: u64,
    /// A node silent for this long is NotReady.
    pub node_grace_ms: u64,
    /// A node NotReady for this long has its pods evicted.
    pub eviction_timeout_ms: u64,
}

impl Timings {
    /// Tuned for boards on Wi-Fi: 5 s heartbeats, NotReady after 40 s, eviction 60 s later.
    pub const DEFAULT: Timings = Timings {
        heartbeat_interval_ms: 5_000,
        node_grace_ms: 40_000,
        eviction_timeout_ms: 60_000,
    };
}

impl Default for Timings {
    fn default() -> Self {
        Timings::DEFAULT
    }
}

/// What a controller wants done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Create an object. `meta.name`, `namespace`, `labels` and `owners` are set; `uid`,
    /// `revision` and `created_ms` are left for the store to assign.
    Create(Object),
    /// Replace an object; `meta.revision` is the revision it was read at (the write fails on
    /// conflict and the next pass retries).
    Update(Object),
    /// Delete an object if it is still at `revision`.
    Delete {
        /// Kind.
        kind: Kind,
        /// Namespace (empty for cluster-scoped kinds).
        namespace: String,
        /// Name.
        name: String,
        /// Revision it was read at.
        revision: u64,
    },
    /// Record an event about an object.
    Event {
        /// Kind of the object.
        kind: Kind,
        /// Namespace of the object.
        namespace: String,
        /// Name of the object.
        name: String,
        /// UID of the object (events are kept per UID).
        uid: String,
        /// Short CamelCase reason (`ScalingReplicaSet`, `Evicted`...).
        reason: String,
        /// What happened.
        message: String,
    },
}

/// Runs every controller over the snapshot: node lifecycle, garbage collection, deployments,
/// replica sets, daemon sets and jobs, in that order.
///
/// A replica set that a deployment resizes in this pass is reconciled at its new size, and the
/// two changes are written as one [`Action::Update`]; a deletion requested twice (an evicted pod
/// that is also surplus) is returned once.
pub fn reconcile(snap: &Snapshot, timings: &Timings) -> Vec<Action> {
    let mut ctx = Ctx::new(snap);
    let mut out = node::reconcile(snap, timings);
    let collected = gc::reconcile_in(&ctx);
    // Replica sets being collected are not reconciled (no pods created for them).
    let mut rs_deleted: HashSet<(&str, &str)> = HashSet::new();
    for a in &collected {
        if let Action::Delete {
            kind: Kind::ReplicaSet,
            namespace,
            name,
            ..
        } = a
            && let Some(orig) = snap
                .replicasets
                .iter()
                .find(|r| r.meta.namespace == *namespace && r.meta.name == *name)
        {
            rs_deleted.insert((&orig.meta.namespace, &orig.meta.name));
        }
    }
    out.extend(collected);

    // Deployments first; their replica set writes are folded into the replica set pass.
    let mut rs_changed: HashMap<(&str, &str), ReplicaSet> = HashMap::new();
    for d in snap.deployments {
        for a in deployment::reconcile_in(&mut ctx, d) {
            match a {
                Action::Update(Object::ReplicaSet(rs)) => {
                    if let Some(orig) = snap.replicasets.iter().find(|r| {
                        r.meta.namespace == rs.meta.namespace && r.meta.name == rs.meta.name
                    }) {
                        rs_changed.insert((&orig.meta.namespace, &orig.meta.name), rs);
                    } else {
                        out.push(Action::Update(Object::ReplicaSet(rs)));
                    }
                }
                Action::Delete {
                    kind: Kind::ReplicaSet,
                    ref namespace,
                    ref name,
                    ..
                } => {
                    if let Some(orig) = snap
                        .replicasets
                        .iter()
                        .find(|r| r.meta.namespace == *namespace && r.meta.name == *name)
                    {
                        rs_deleted.insert((&orig.meta.namespace, &orig.meta.name));
                    }
                    out.push(a);
                }
                a => out.push(a),
            }
        }
    }
    for rs in snap.replicasets {
        let key = (rs.meta.namespace.as_str(), rs.meta.name.as_str());
        if rs_deleted.contains(&key) {
            continue;
        }
        match rs_changed.remove(&key) {
            Some(changed) => out.extend(replicaset::reconcile_in(&mut ctx, &changed, true)),
            None => out.extend(replicaset::reconcile_in(&mut ctx, rs, false)),
        }
    }
    for ds in snap.daemonsets {
        out.extend(daemonset::reconcile_in(&mut ctx, ds));
    }
    for j in snap.jobs {
        out.extend(job::reconcile_in(&mut ctx, j));
    }
    dedup_deletes(out)
}

/// Drops repeated deletions of the same object, keeping the first.
fn dedup_deletes(actions: Vec<Action>) -> Vec<Action> {
    let mut seen: HashSet<(Kind, String, String)> = HashSet::new();
    actions
        .into_iter()
        .filter(|a| match a {
            Action::Delete {
                kind,
                namespace,
                name,
                ..
            } => seen.insert((*kind, namespace.clone(), name.clone())),
            _ => true,
        })
        .collect()
}

/// Whether a pod counts as available: ready ([`PodStatus::is_ready`]: Running, every process
/// running and passing its readiness probe, if any) for at least `min_ready_ms` by `now_ms`.
///
/// [`PodStatus::is_ready`]: bramble_wire::objects::PodStatus::is_ready
pub fn pod_available(pod: &Pod, min_ready_ms: u32, now_ms: u64) -> bool {
    ready_since(pod).is_some_and(|t| t.saturating_add(u64::from(min_ready_ms)) <= now_ms)
}

/// Since when a ready pod has been ready: the latest process start, or the pod's last status
/// change if later (the node reports readiness turning true as a status change, and the master
/// keeps `updated_ms` of the last change in meaning). `None` if it is not ready.
fn ready_since(pod: &Pod) -> Option<u64> {
    if !pod.status.is_ready() {
        return None;
    }
    let mut at = pod.status.updated_ms;
    for p in &pod.status.processes {
        match p.state {
            ProcessState::Running { started_ms, .. } => at = at.max(started_ms),
            _ => return None,
        }
    }
    Some(at)
}

/// Whether a pod has been available long enough to reset its owner's replacement backoff.
pub(crate) fn stable(pod: &Pod, now_ms: u64) -> bool {
    ready_since(pod).is_some_and(|t| {
        t.saturating_add(bramble_wire::objects::RESTART_BACKOFF_RESET_MS) <= now_ms
    })
}

/// Whether a pod has finished for good (Succeeded or Failed).
pub fn is_terminal(pod: &Pod) -> bool {
    matches!(pod.status.phase, PodPhase::Succeeded | PodPhase::Failed)
}

/// When a pod becomes available, if it is ready (a pod that is not becomes ready through a
/// status change, which wakes the controllers anyway).
fn available_at(pod: &Pod, min_ready_ms: u32) -> Option<u64> {
    ready_since(pod).map(|t| t.saturating_add(u64::from(min_ready_ms)))
}

/// The earliest time after `snap.now_ms` at which reconciling could return actions although no
/// object changed: a pod reaching its `min_ready_ms`, a NotReady node reaching the eviction
/// timeout, a job reaching its deadline. `None` when nothing is time-dependent. Callers sleep
/// until then (or until a watch event) instead of polling.
pub fn next_deadline(snap: &Snapshot, timings: &Timings) -> Option<u64> {
    let now = snap.now_ms;
    let mut best: Option<u64> = None;
    let mut consider = |t: u64| {
        if t > now {
            best = Some(best.map_or(t, |b| b.min(t)));
        }
    };
    let mut min_ready: HashMap<&str, u32> = HashMap::new();
    for rs in snap.replicasets {
        min_ready.insert(&rs.meta.uid, rs.spec.min_ready_ms);
    }
    for p in snap.pods {
        let m = p
            .meta
            .owners
            .iter()
            .find_map(|o| min_ready.get(o.uid.as_str()).copied())
            .unwrap_or(0);
        if let Some(t) = available_at(p, m) {
            consider(t);
        }
    }
    for n in snap.nodes {
        if let Some(c) = n
            .status
            .condition(bramble_wire::objects::ConditionKind::Ready)
            .filter(|c| !c.status)
        {
            consider(c.since_ms.saturating_add(timings.eviction_timeout_ms));
        }
    }
    // Replacement backoffs ending; a stable pod resetting a count changes nothing to do.
    for rs in snap.replicasets {
        consider(rs.status.backoff.until_ms);
    }
    for ds in snap.daemonsets {
        consider(ds.status.backoff.until_ms);
    }
    for j in snap.jobs {
        if j.status.phase == bramble_wire::objects::JobPhase::Running
            && let Some(t) = job::next_start_ms(snap, j)
        {
            consider(t);
        }
    }
    for d in snap.deployments {
        if let Some(t) = deployment::stall_at(d) {
            // Just past it: the pass at `t` sees the deadline reached.
            consider(t + 1);
        }
    }
    for j in snap.jobs {
        if let (Some(d), bramble_wire::objects::JobPhase::Running) =
            (j.spec.active_deadline_ms, j.status.phase)
            && j.status.start_ms != 0
        {
            consider(j.status.start_ms.saturating_add(d));
        }
    }
    best
}

/// FNV-1a, 64 bits.
fn fnv1a(bytes: &[u8], mut h: u64) -> u64 {
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

/// A stable 8-hex-digit hash of a pod template: FNV-1a over its postcard encoding, folded to 32
/// bits. Used in replica set names (`<deployment>-<hash>`) and the [`LABEL_TEMPLATE_HASH`] label.
pub fn template_hash(t: &PodTemplate) -> String {
    // Labels and spec as PodTemplate encoded before `restarted_at_ms` existed (the same bytes:
    // a struct is its fields in order), so existing replica sets keep their names; a restart
    // stamp is folded in only when set.
    let mut bytes = postcard::to_allocvec(&(&t.labels, &t.spec)).unwrap_or_default();
    if let Some(at) = t.restarted_at_ms.filter(|&at| at != 0) {
        bytes.extend_from_slice(&at.to_le_bytes());
    }
    let h = fnv1a(&bytes, FNV_OFFSET);
    format!("{:08x}", (h ^ (h >> 32)) as u32)
}

/// Characters of generated name suffixes (Kubernetes' set: no vowels, no look-alikes).
const SUFFIX_CHARS: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

/// `<prefix>-<5 chars>` (27^5 ≈ 14.3 million suffixes) from the pass's random seed, the owner
/// uid and a counter.
fn suffixed(prefix: &str, seed: u64, owner_uid: &str, counter: u64) -> String {
    let mut h = fnv1a(&seed.to_le_bytes(), FNV_OFFSET);
    h = fnv1a(owner_uid.as_bytes(), h);
    h = fnv1a(&counter.to_le_bytes(), h);
    // Finalise (splitmix64) so consecutive counters spread.
    h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^= h >> 31;
    let mut s = String::with_capacity(prefix.len() + 6);
    s.push_str(prefix);
    s.push('-');
    for _ in 0..5 {
        s.push(SUFFIX_CHARS[(h % SUFFIX_CHARS.len() as u64) as usize] as char);
        h /= SUFFIX_CHARS.len() as u64;
    }
    s
}

/// An owner reference to an object.
fn owner_ref(kind: Kind, meta: &bramble_wire::objects::Meta) -> OwnerRef {
    OwnerRef {
        kind,
        name: meta.name.clone(),
        uid: meta.uid.clone(),
    }
}

/// A delete action for an object read at its revision.
fn delete_of(kind: Kind, meta: &bramble_wire::objects::Meta) -> Action {
    Action::Delete {
        kind,
        namespace: meta.namespace.clone(),
        name: meta.name.clone(),
        revision: meta.revision,
    }
}

/// An event about an object.
fn event(kind: Kind, meta: &bramble_wire::objects::Meta, reason: &str, message: String) -> Action {
    Action::Event {
        kind,
        namespace: meta.namespace.clone(),
        name: meta.name.clone(),
        uid: meta.uid.clone(),
        reason: reason.into(),
        message,
    }
}

/// Indexes over a snapshot shared by the controllers of one pass, and the pod names taken so far
/// (the snapshot's and those generated in this pass).
pub(crate) struct Ctx<'a> {
    snap: &'a Snapshot<'a>,
    /// Pod indices by owner uid.
    pods_by_owner: HashMap<&'a str, Vec<usize>>,
    /// Replica set indices by owner uid.
    rs_by_owner: HashMap<&'a str, Vec<usize>>,
    /// Pod names in the snapshot, per namespace.
    pod_names: HashSet<(&'a str, &'a str)>,
    /// Pod names generated in this pass.
    generated: HashSet<(String, String)>,
    /// Namespaces being deleted.
    terminating: HashSet<&'a str>,
}

impl std::fmt::Debug for Ctx<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ctx")
            .field("owners", &self.pods_by_owner.len())
            .finish_non_exhaustive()
    }
}

impl<'a> Ctx<'a> {
    pub(crate) fn new(snap: &'a Snapshot<'a>) -> Ctx<'a> {
        let mut pods_by_owner: HashMap<&str, Vec<usize>> = HashMap::new();
        let mut pod_names = HashSet::with_capacity(snap.pods.len());
        for (i, p) in snap.pods.iter().enumerate() {
            pod_names.insert((p.meta.namespace.as_str(), p.meta.name.as_str()));
            for o in &p.meta.owners {
                pods_by_owner.entry(&o.uid).or_default().push(i);
            }
        }
        let mut rs_by_owner: HashMap<&str, Vec<usize>> = HashMap::new();
        for (i, rs) in snap.replicasets.iter().enumerate() {
            for o in &rs.meta.owners {
                rs_by_owner.entry(&o.uid).or_default().push(i);
            }
        }
        let terminating = snap
            .namespaces
            .iter()
            .filter(|n| n.phase == NamespacePhase::Terminating)
            .map(|n| n.meta.name.as_str())
            .collect();
        Ctx {
            snap,
            pods_by_owner,
            rs_by_owner,
            pod_names,
            generated: HashSet::new(),
            terminating,
        }
    }

    /// Pods in `namespace` owned by the object with `uid`, in snapshot order.
    pub(crate) fn pods_of(&self, namespace: &str, uid: &str) -> Vec<&'a Pod> {
        if uid.is_empty() {
            return Vec::new();
        }
        let pods = self.snap.pods;
        self.pods_by_owner
            .get(uid)
            .map(|v| {
                v.iter()
                    .map(|&i| &pods[i])
                    .filter(|p| p.meta.namespace == namespace)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Replica sets in `namespace` owned by the object with `uid`, in snapshot order.
    pub(crate) fn replicasets_of(&self, namespace: &str, uid: &str) -> Vec<&'a ReplicaSet> {
        if uid.is_empty() {
            return Vec::new();
        }
        let all = self.snap.replicasets;
        self.rs_by_owner
            .get(uid)
            .map(|v| {
                v.iter()
                    .map(|&i| &all[i])
                    .filter(|r| r.meta.namespace == namespace)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Whether nothing new may be created in `namespace`.
    pub(crate) fn terminating(&self, namespace: &str) -> bool {
        self.terminating.contains(namespace)
    }

    /// A pod name `<owner>-<5 random chars>` free in `namespace`: no live pod has it, none
    /// generated in this pass, and no deleted pod whose events still exist
    /// ([`Snapshot::used_names`]), so a name is never given twice while its history exists.
    pub(crate) fn pod_name(&mut self, namespace: &str, owner: &str, owner_uid: &str) -> String {
        let mut counter = 0u64;
        loop {
            let name = suffixed(owner, self.snap.seed, owner_uid, counter);
            counter += 1;
            if self.pod_names.contains(&(namespace, name.as_str())) {
                continue;
            }
            if self
                .snap
                .used_names
                .contains(&(namespace.to_string(), name.clone()))
            {
                continue;
            }
            let key = (namespace.to_string(), name);
            if self.generated.contains(&key) {
                continue;
            }
            let name = key.1.clone();
            self.generated.insert(key);
            return name;
        }
    }

    /// A new pod from a template, owned by `owner` (of kind `kind`).
    pub(crate) fn new_pod(
        &mut self,
        kind: Kind,
        owner: &bramble_wire::objects::Meta,
        template: &PodTemplate,
    ) -> Pod {
        let name = self.pod_name(&owner.namespace, &owner.name, &owner.uid);
        Pod {
            meta: bramble_wire::objects::Meta {
                name,
                namespace: owner.namespace.clone(),
                labels: template.labels.clone(),
                owners: vec![owner_ref(kind, owner)],
                ..Default::default()
            },
            spec: template.spec.clone(),
            status: Default::default(),
        }
    }
}
