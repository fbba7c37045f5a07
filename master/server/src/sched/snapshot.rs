//! The scheduler's view of the cluster: nodes with precomputed (interned) labels and taints, and
//! what is already bound to each of them.

use std::collections::HashMap;

use bramble_wire::objects::{
    Arch, Kind, Labels, NetworkMode, Node, Pod, PodPhase, Resources, Taint, Toleration,
};

/// Label every node carries with its architecture (`aarch64`, `armv7`, ...), set by the snapshot.
pub const LABEL_ARCH: &str = "bramble.io/arch";
/// Label every node carries with its own name, set by the snapshot.
pub const LABEL_HOSTNAME: &str = "bramble.io/hostname";

/// Plain amounts of the three resources the scheduler accounts for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct Amounts {
    /// CPU in millicores.
    pub cpu_millis: u64,
    /// Memory in bytes.
    pub memory_bytes: u64,
    /// Processes.
    pub pids: u64,
}

impl Amounts {
    /// Converts requests (`None` counts as zero).
    pub fn from_requests(r: &Resources) -> Amounts {
        Amounts {
            cpu_millis: u64::from(r.cpu_millis.unwrap_or(0)),
            memory_bytes: r.memory_bytes.unwrap_or(0),
            pids: u64::from(r.pids.unwrap_or(0)),
        }
    }

    pub(crate) fn add(&mut self, o: &Amounts) {
        self.cpu_millis = self.cpu_millis.saturating_add(o.cpu_millis);
        self.memory_bytes = self.memory_bytes.saturating_add(o.memory_bytes);
        self.pids = self.pids.saturating_add(o.pids);
    }
}

/// What a node offers to pods, per resource. `None` means the node does not advertise (and so does
/// not limit) that resource: it is treated as unlimited. `Some(0)` means none is available.
pub type Allocatable = Resources;

/// Identity of a pod's owner (its first owner reference), used to spread replicas across nodes.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OwnerKey {
    /// Namespace of the pod (owners live in the same namespace).
    pub namespace: String,
    /// Kind of the owner.
    pub kind: Kind,
    /// Name of the owner.
    pub name: String,
}

/// A pod as the scheduler sees it: what it asks for and what constrains its placement.
///
/// The same type describes pods already bound to a node ([`Snapshot::add_bound`]), where only
/// `requests`, `host_ports` and `owner` matter.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PendingPod {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// Summed requests of the pod's processes.
    pub requests: Amounts,
    /// Host ports the pod claims on its node (sorted, without duplicates).
    pub host_ports: Vec<u16>,
    /// Node labels the pod requires (all of them, with equal values).
    pub node_selector: Labels,
    /// Taints the pod tolerates.
    pub tolerations: Vec<Toleration>,
    /// Required architecture, if any.
    pub arch: Option<Arch>,
    /// Owner, for spreading replicas; `None` for bare pods.
    pub owner: Option<OwnerKey>,
    /// The artifact the pod's rootfs comes from (`rootfs = "artifact:NAME"`): only nodes whose
    /// architecture has a variant of it fit.
    pub artifact: Option<String>,
    /// The image the pod runs (`image = "REF"`), normalized: only nodes whose architecture has a
    /// variant of it fit, and the pod waits while the image is not stored.
    pub image: Option<String>,
}

impl PendingPod {
    /// Extracts what the scheduler needs from a pod: requests (`PodSpec::total_resources`), host
    /// ports, node selector, tolerations, architecture and owner (the first owner reference).
    /// `spec.node_name` is not looked at: callers pass pods that still need a node.
    pub fn from_pod(pod: &Pod) -> PendingPod {
        // A host-network pod listens on the node itself: each port it declares is a host port
        // (its `container_port` and any `host_port`). Other pods claim only their `host_port`s
        // (an isolated pod's node forwards them to the pod).
        let host_network = pod.spec.network == NetworkMode::Host;
        let mut host_ports: Vec<u16> = pod
            .spec
            .processes
            .iter()
            .flat_map(|p| p.ports.iter())
            .flat_map(|port| {
                let own = host_network.then_some(port.container_port);
                own.into_iter().chain(port.host_port)
            })
            .collect();
        host_ports.sort_unstable();
        host_ports.dedup();
        PendingPod {
            namespace: pod.meta.namespace.clone(),
            name: pod.meta.name.clone(),
            requests: Amounts::from_requests(&pod.spec.total_resources()),
            host_ports,
            node_selector: pod.spec.node_selector.clone(),
            tolerations: pod.spec.tolerations.clone(),
            arch: pod.spec.arch,
            owner: pod.meta.owners.first().map(|o| OwnerKey {
                namespace: pod.meta.namespace.clone(),
                kind: o.kind,
                name: o.name.clone(),
            }),
            artifact: pod.spec.artifact().map(str::to_string),
            image: pod
                .spec
                .image
                .as_deref()
                .map(|i| bramble_wire::image_ref::normalize(i).unwrap_or_else(|| i.to_string())),
        }
    }

    /// The pods that need a node: no `spec.node_name` and phase `Pending`, in the given order.
    pub fn all_pending(pods: &[Pod]) -> Vec<PendingPod> {
        pods.iter()
            .filter(|p| p.spec.node_name.is_none() && p.status.phase == PodPhase::Pending)
            .map(PendingPod::from_pod)
            .collect()
    }
}

/// A node as given to [`Snapshot::add_node`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SchedNode {
    /// Name (unique).
    pub name: String,
    /// Architecture; `None` if unknown (the node never registered): no pod with a required
    /// architecture goes there.
    pub arch: Option<Arch>,
    /// The Ready condition holds.
    pub ready: bool,
    /// Cordoned.
    pub unschedulable: bool,
    /// Labels (the built-in [`LABEL_ARCH`] and [`LABEL_HOSTNAME`] are added, overriding).
    pub labels: Labels,
    /// Taints. Both effects (`NoSchedule`, `NoExecute`) keep untolerating pods away.
    pub taints: Vec<Taint>,
    /// What the node offers to pods; see [`Allocatable`] for `None`.
    pub allocatable: Allocatable,
}

impl SchedNode {
    /// Reads a node object: arch from `status.info`, ready from the Ready condition, labels from
    /// `meta.labels` only. What the agent reported (`status.info.labels`) is never read here: the
    /// master files it under `node.bramble.io/` at registration (`api::claims`), so a node cannot
    /// claim a label an admin's selector trusts.
    pub fn from_node(node: &Node) -> SchedNode {
        let labels = node.meta.labels.clone();
        SchedNode {
            name: node.meta.name.clone(),
            arch: node.status.info.as_ref().map(|i| i.arch),
            ready: node.status.is_ready(),
            unschedulable: node.spec.unschedulable,
            labels,
            taints: node.spec.taints.clone(),
            allocatable: node.status.allocatable,
        }
    }
}

/// Read-only view of one node of a [`Snapshot`].
#[derive(Debug, Clone, Copy)]
pub struct NodeView<'a> {
    /// Name.
    pub name: &'a str,
    /// Architecture.
    pub arch: Option<Arch>,
    /// Ready.
    pub ready: bool,
    /// Cordoned.
    pub unschedulable: bool,
    /// Allocatable (`None` = unlimited).
    pub allocatable: Allocatable,
    /// Summed requests of the pods bound to it.
    pub used: Amounts,
    /// Host ports in use (sorted).
    pub host_ports: &'a [u16],
    /// Number of pods bound to it.
    pub pods: u32,
}

/// Maps strings (label keys and values) to small integers so the hot loop compares integers.
#[derive(Debug, Clone, Default)]
pub(crate) struct Interner {
    map: HashMap<String, u32>,
}

impl Interner {
    pub(crate) fn intern(&mut self, s: &str) -> u32 {
        if let Some(&id) = self.map.get(s) {
            return id;
        }
        let id = self.map.len() as u32;
        self.map.insert(s.to_owned(), id);
        id
    }

    pub(crate) fn get(&self, s: &str) -> Option<u32> {
        self.map.get(s).copied()
    }
}

/// `u64::MAX` stands for "unlimited" in [`Limits`].
pub(crate) const UNLIMITED: u64 = u64::MAX;

/// Allocatable with `None` mapped to [`UNLIMITED`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Limits {
    pub(crate) cpu: u64,
    pub(crate) mem: u64,
    pub(crate) pids: u64,
}

impl Limits {
    fn from_allocatable(a: &Allocatable) -> Limits {
        Limits {
            cpu: a.cpu_millis.map_or(UNLIMITED, u64::from),
            mem: a.memory_bytes.unwrap_or(UNLIMITED),
            pids: a.pids.map_or(UNLIMITED, u64::from),
        }
    }
}

/// What does not change while a batch is scheduled.
#[derive(Debug, Clone)]
pub(crate) struct NodeStatic {
    pub(crate) name: String,
    pub(crate) arch: Option<Arch>,
    pub(crate) ready: bool,
    pub(crate) unschedulable: bool,
    /// (key id, value id), sorted by key id.
    pub(crate) labels: Vec<(u32, u32)>,
    /// Ids into [`Snapshot::taints`], sorted, deduplicated.
    pub(crate) taints: Vec<u32>,
    pub(crate) limits: Limits,
    pub(crate) allocatable: Allocatable,
}

/// What a batch changes: the working copy the scheduler updates after each placement.
#[derive(Debug, Clone, Default)]
pub(crate) struct NodeUsage {
    pub(crate) used: Amounts,
    /// Sorted.
    pub(crate) host_ports: Vec<u16>,
    /// (owner id, pods of that owner here).
    pub(crate) owners: Vec<(u32, u32)>,
    pub(crate) pods: u32,
}

impl NodeUsage {
    pub(crate) fn owner_count(&self, owner: u32) -> u32 {
        self.owners
            .iter()
            .find(|(o, _)| *o == owner)
            .map_or(0, |(_, c)| *c)
    }

    pub(crate) fn add(&mut self, requests: &Amounts, host_ports: &[u16], owner: Option<u32>) {
        self.used.add(requests);
        for &p in host_ports {
            if let Err(i) = self.host_ports.binary_search(&p) {
                self.host_ports.insert(i, p);
            }
        }
        if let Some(o) = owner {
            match self.owners.iter_mut().find(|(id, _)| *id == o) {
                Some((_, c)) => *c += 1,
                None => self.owners.push((o, 1)),
            }
        }
        self.pods += 1;
    }
}

/// The cluster as the scheduler sees it: nodes (static data precomputed for fast filtering) and
/// what is bound to each. Built once per scheduling round; [`super::schedule`] never mutates it.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub(crate) nodes: Vec<NodeStatic>,
    pub(crate) usage: Vec<NodeUsage>,
    pub(crate) strings: Interner,
    /// Distinct taints of the cluster, indexed by id.
    pub(crate) taints: Vec<Taint>,
    taint_ids: HashMap<Taint, u32>,
    pub(crate) owners: HashMap<OwnerKey, u32>,
    by_name: HashMap<String, usize>,
    /// Artifact name → architectures it has a variant for (sorted).
    pub(crate) artifacts: HashMap<String, Vec<Arch>>,
    /// Image reference (normalized) → architectures whose nodes run it (sorted; armv7 included
    /// when only an armv6 variant exists) and the architectures it has variants for.
    pub(crate) images: HashMap<String, ImageArchs>,
}

/// What the scheduler knows of an image.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct ImageArchs {
    /// Node architectures that run it.
    pub(crate) runs_on: Vec<Arch>,
    /// Its variants' architectures.
    pub(crate) variants: Vec<Arch>,
}

impl Snapshot {
    /// An empty cluster.
    pub fn new() -> Snapshot {
        Snapshot::default()
    }

    /// Builds a snapshot from node and pod objects: every node, and for each pod bound to a known
    /// node (`spec.node_name` set) that has not finished (phase neither `Succeeded` nor `Failed`),
    /// its requests, host ports and owner are accounted to that node. Pods bound to unknown nodes
    /// are ignored.
    pub fn from_objects(nodes: &[Node], pods: &[Pod]) -> Snapshot {
        let mut s = Snapshot::new();
        for n in nodes {
            s.add_node(SchedNode::from_node(n));
        }
        for p in pods {
            if matches!(p.status.phase, PodPhase::Succeeded | PodPhase::Failed) {
                continue;
            }
            let Some(idx) = p.spec.node_name.as_deref().and_then(|n| s.node_index(n)) else {
                continue;
            };
            s.add_bound(idx, &PendingPod::from_pod(p));
        }
        s
    }

    /// Records an artifact and the architectures it has variants for.
    pub fn add_artifact(&mut self, name: &str, archs: &[Arch]) {
        let mut a = archs.to_vec();
        a.sort_unstable();
        a.dedup();
        self.artifacts.insert(name.to_string(), a);
    }

    /// Records every artifact object's variants.
    pub fn add_artifacts(&mut self, artifacts: &[bramble_wire::objects::Artifact]) {
        for a in artifacts {
            let archs: Vec<Arch> = a.variants.iter().map(|v| v.arch).collect();
            self.add_artifact(&a.meta.name, &archs);
        }
    }

    /// Records an image (by normalized reference) and the architectures it has variants for.
    pub fn add_image(&mut self, reference: &str, variants: &[Arch]) {
        let mut v = variants.to_vec();
        v.sort_unstable();
        v.dedup();
        let mut runs_on = v.clone();
        if v.contains(&Arch::Armv6) && !v.contains(&Arch::Armv7) {
            runs_on.push(Arch::Armv7);
            runs_on.sort_unstable();
        }
        self.images.insert(
            reference.to_string(),
            ImageArchs {
                runs_on,
                variants: v,
            },
        );
    }

    /// Records every image object's variants.
    pub fn add_images(&mut self, images: &[bramble_wire::objects::Image]) {
        for i in images {
            let archs: Vec<Arch> = i.variants.iter().map(|v| v.arch).collect();
            self.add_image(&i.reference, &archs);
        }
    }

    /// Adds a node and returns its index. A node with the name of an existing one replaces
    /// nothing: names are expected to be unique, and [`Snapshot::node_index`] finds the first.
    pub fn add_node(&mut self, node: SchedNode) -> usize {
        let mut labels = node.labels;
        if let Some(a) = node.arch {
            labels.insert(LABEL_ARCH.into(), a.as_str().into());
        }
        labels.insert(LABEL_HOSTNAME.into(), node.name.clone());
        let mut ids: Vec<(u32, u32)> = labels
            .iter()
            .map(|(k, v)| (self.strings.intern(k), self.strings.intern(v)))
            .collect();
        ids.sort_unstable();
        let mut taints: Vec<u32> = node
            .taints
            .iter()
            .map(|t| {
                let next = self.taints.len() as u32;
                *self.taint_ids.entry(t.clone()).or_insert_with(|| {
                    self.taints.push(t.clone());
                    next
                })
            })
            .collect();
        taints.sort_unstable();
        taints.dedup();
        let idx = self.nodes.len();
        self.by_name.entry(node.name.clone()).or_insert(idx);
        self.nodes.push(NodeStatic {
            name: node.name,
            arch: node.arch,
            ready: node.ready,
            unschedulable: node.unschedulable,
            labels: ids,
            taints,
            limits: Limits::from_allocatable(&node.allocatable),
            allocatable: node.allocatable,
        });
        self.usage.push(NodeUsage::default());
        idx
    }

    /// Accounts a pod already bound to node `node` (its requests, host ports and owner).
    ///
    /// # Panics
    /// If `node` is out of range.
    pub fn add_bound(&mut self, node: usize, pod: &PendingPod) {
        let owner = pod.owner.as_ref().map(|o| {
            let next = self.owners.len() as u32;
            *self.owners.entry(o.clone()).or_insert(next)
        });
        self.usage[node].add(&pod.requests, &pod.host_ports, owner);
    }

    /// Commits a plan computed from this snapshot for `pending`: every binding is accounted as
    /// with [`Snapshot::add_bound`]. Afterwards the snapshot equals the scheduler's working copy at
    /// the end of the batch.
    pub fn apply(&mut self, plan: &super::Plan, pending: &[PendingPod]) {
        for b in &plan.bindings {
            self.add_bound(b.node, &pending[b.pod]);
        }
    }

    /// Number of nodes.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether there are no nodes.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// The index of the node named `name`.
    pub fn node_index(&self, name: &str) -> Option<usize> {
        self.by_name.get(name).copied()
    }

    /// A view of node `i`.
    ///
    /// # Panics
    /// If `i` is out of range.
    pub fn node(&self, i: usize) -> NodeView<'_> {
        let (n, u) = (&self.nodes[i], &self.usage[i]);
        NodeView {
            name: &n.name,
            arch: n.arch,
            ready: n.ready,
            unschedulable: n.unschedulable,
            allocatable: n.allocatable,
            used: u.used,
            host_ports: &u.host_ports,
            pods: u.pods,
        }
    }

    /// Pods of `owner` bound to node `i` (0 for unknown owners).
    pub fn owner_count(&self, i: usize, owner: &OwnerKey) -> u32 {
        self.owners
            .get(owner)
            .map_or(0, |&o| self.usage[i].owner_count(o))
    }
}
