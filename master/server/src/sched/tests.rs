//! Table-driven cases for every checker and scorer (one `check` helper), property tests against a
//! naive string-based oracle, and the object constructors.

use std::collections::BTreeSet;

use bramble_wire::objects::{
    Arch, Condition, ConditionKind, Kind, Labels, Meta, Node, NodeInfo, NodeSpec, NodeStatus,
    OwnerRef, Pod, PodPhase, PodSpec, PodStatus, Port, ProcessSpec, Resources, Taint, TaintEffect,
    Toleration,
};
use proptest::prelude::*;

use super::*;

const GI: u64 = 1 << 30;
const MI: u64 = 1 << 20;

// ---- builders -------------------------------------------------------------------------------

/// A Ready aarch64 node with 4 cores, 4 GiB and 1000 pids.
fn node(name: &str) -> SchedNode {
    SchedNode {
        name: name.into(),
        arch: Some(Arch::Aarch64),
        ready: true,
        unschedulable: false,
        labels: Labels::new(),
        taints: Vec::new(),
        allocatable: Resources {
            cpu_millis: Some(4000),
            memory_bytes: Some(4 * GI),
            pids: Some(1000),
        },
    }
}

trait NodeExt {
    fn arch(self, a: Option<Arch>) -> Self;
    fn not_ready(self) -> Self;
    fn cordoned(self) -> Self;
    fn label(self, k: &str, v: &str) -> Self;
    fn taint(self, k: &str, v: &str, e: TaintEffect) -> Self;
    fn alloc(self, cpu: Option<u32>, mem: Option<u64>, pids: Option<u32>) -> Self;
}

impl NodeExt for SchedNode {
    fn arch(mut self, a: Option<Arch>) -> Self {
        self.arch = a;
        self
    }
    fn not_ready(mut self) -> Self {
        self.ready = false;
        self
    }
    fn cordoned(mut self) -> Self {
        self.unschedulable = true;
        self
    }
    fn label(mut self, k: &str, v: &str) -> Self {
        self.labels.insert(k.into(), v.into());
        self
    }
    fn taint(mut self, k: &str, v: &str, effect: TaintEffect) -> Self {
        self.taints.push(Taint {
            key: k.into(),
            value: v.into(),
            effect,
        });
        self
    }
    fn alloc(mut self, cpu: Option<u32>, mem: Option<u64>, pids: Option<u32>) -> Self {
        self.allocatable = Resources {
            cpu_millis: cpu,
            memory_bytes: mem,
            pids,
        };
        self
    }
}

/// A pod asking for 100m CPU and 64 MiB.
fn pod(name: &str) -> PendingPod {
    PendingPod {
        namespace: "default".into(),
        name: name.into(),
        requests: Amounts {
            cpu_millis: 100,
            memory_bytes: 64 * MI,
            pids: 0,
        },
        ..Default::default()
    }
}

trait PodExt {
    fn req(self, cpu: u64, mem: u64, pids: u64) -> Self;
    fn port(self, p: u16) -> Self;
    fn sel(self, k: &str, v: &str) -> Self;
    fn tol(self, k: &str, v: Option<&str>, e: Option<TaintEffect>) -> Self;
    fn arch(self, a: Arch) -> Self;
    fn owner(self, name: &str) -> Self;
}

impl PodExt for PendingPod {
    fn req(mut self, cpu: u64, mem: u64, pids: u64) -> Self {
        self.requests = Amounts {
            cpu_millis: cpu,
            memory_bytes: mem,
            pids,
        };
        self
    }
    fn port(mut self, p: u16) -> Self {
        self.host_ports.push(p);
        self.host_ports.sort_unstable();
        self.host_ports.dedup();
        self
    }
    fn sel(mut self, k: &str, v: &str) -> Self {
        self.node_selector.insert(k.into(), v.into());
        self
    }
    fn tol(mut self, k: &str, v: Option<&str>, effect: Option<TaintEffect>) -> Self {
        self.tolerations.push(Toleration {
            key: k.into(),
            value: v.map(Into::into),
            effect,
        });
        self
    }
    fn arch(mut self, a: Arch) -> Self {
        self.arch = Some(a);
        self
    }
    fn owner(mut self, name: &str) -> Self {
        self.owner = Some(OwnerKey {
            namespace: self.namespace.clone(),
            kind: Kind::Pod,
            name: name.into(),
        });
        self
    }
}

fn snapshot(nodes: &[SchedNode], bound: &[(&str, PendingPod)]) -> Snapshot {
    let mut s = Snapshot::new();
    for n in nodes {
        s.add_node(n.clone());
    }
    for (name, p) in bound {
        let i = s.node_index(name).expect("bound to a known node");
        s.add_bound(i, p);
    }
    s
}

/// What happened to each pod, in order: the node's name and score (`"b@75"`), or the failure
/// summary.
fn outcome(nodes: &[SchedNode], bound: &[(&str, PendingPod)], pods: &[PendingPod]) -> Vec<String> {
    let snap = snapshot(nodes, bound);
    let config = Config {
        sample: Sample::All,
        ..Config::default()
    };
    let plan = schedule_with(&snap, pods, 0, 1, &config);
    let mut out = vec![String::new(); pods.len()];
    for b in &plan.bindings {
        out[b.pod] = format!("{}@{}", snap.node(b.node).name, b.score);
    }
    for f in &plan.failures {
        out[f.pod] = f.message();
    }
    out
}

/// The one helper: `expect[i]` is the node pod `i` lands on (`"b"`, or `"b@75"` to pin the score
/// too) or its failure summary.
#[track_caller]
fn check(nodes: &[SchedNode], bound: &[(&str, PendingPod)], pods: &[PendingPod], expect: &[&str]) {
    let got = outcome(nodes, bound, pods);
    let got: Vec<String> = got
        .iter()
        .zip(expect)
        .map(|(g, e)| {
            if !e.contains('@') && !e.starts_with("0/") {
                g.split('@').next().unwrap().to_string()
            } else {
                g.clone()
            }
        })
        .collect();
    assert_eq!(got, expect, "nodes {nodes:#?}");
}

// ---- feasibility ----------------------------------------------------------------------------

#[test]
fn ready() {
    check(
        &[node("a").not_ready(), node("b")],
        &[],
        &[pod("p")],
        &["b"],
    );
    check(
        &[node("a").not_ready()],
        &[],
        &[pod("p")],
        &["0/1 nodes available: 1 not ready"],
    );
}

#[test]
fn cordoned() {
    check(&[node("a").cordoned(), node("b")], &[], &[pod("p")], &["b"]);
    check(
        &[node("a").cordoned()],
        &[],
        &[pod("p")],
        &["0/1 nodes available: 1 unschedulable"],
    );
    // Not ready is checked first.
    check(
        &[node("a").cordoned().not_ready()],
        &[],
        &[pod("p")],
        &["0/1 nodes available: 1 not ready"],
    );
}

#[test]
fn arch() {
    let nodes = [node("a"), node("b").arch(Some(Arch::Armv7))];
    check(&nodes, &[], &[pod("p").arch(Arch::Armv7)], &["b"]);
    check(&nodes, &[], &[pod("p").arch(Arch::Aarch64)], &["a"]);
    check(
        &nodes,
        &[],
        &[pod("p").arch(Arch::X86_64)],
        &["0/2 nodes available: 2 wrong architecture"],
    );
    // Unknown node arch: only pods without a required arch.
    check(&[node("a").arch(None)], &[], &[pod("p")], &["a"]);
    check(
        &[node("a").arch(None)],
        &[],
        &[pod("p").arch(Arch::Aarch64)],
        &["0/1 nodes available: 1 wrong architecture"],
    );
    // Microcontrollers run no pods.
    check(
        &[node("m").arch(Some(Arch::Mcu))],
        &[],
        &[pod("p")],
        &["0/1 nodes available: 1 wrong architecture"],
    );
}

#[test]
fn selector() {
    let nodes = [
        node("a").label("disk", "ssd").label("zone", "x"),
        node("b").label("disk", "hdd"),
    ];
    check(&nodes, &[], &[pod("p").sel("disk", "ssd")], &["a"]);
    check(&nodes, &[], &[pod("p").sel("disk", "hdd")], &["b"]);
    check(
        &nodes,
        &[],
        &[pod("p").sel("disk", "ssd").sel("zone", "x")],
        &["a"],
    );
    let none = "0/2 nodes available: 2 didn't match node selector";
    check(
        &nodes,
        &[],
        &[pod("p").sel("disk", "ssd").sel("zone", "y")],
        &[none],
    );
    check(&nodes, &[], &[pod("p").sel("disk", "nvme")], &[none]); // value unknown to the cluster
    check(&nodes, &[], &[pod("p").sel("gpu", "yes")], &[none]); // key unknown to the cluster
    check(&nodes, &[], &[pod("p").sel("zone", "ssd")], &[none]); // known value, other key
    // Built-in labels.
    check(&nodes, &[], &[pod("p").sel(LABEL_HOSTNAME, "b")], &["b"]);
    let mixed = [node("a"), node("b").arch(Some(Arch::Armv7))];
    check(&mixed, &[], &[pod("p").sel(LABEL_ARCH, "armv7")], &["b"]);
    // The built-ins override user labels.
    check(
        &[node("a").label(LABEL_HOSTNAME, "z")],
        &[],
        &[pod("p").sel(LABEL_HOSTNAME, "a")],
        &["a"],
    );
}

#[test]
fn taints() {
    use TaintEffect::{NoExecute, NoSchedule};
    let tainted = [node("a").taint("dedicated", "gpu", NoSchedule)];
    let none = "0/1 nodes available: 1 untolerated taint";
    check(&tainted, &[], &[pod("p")], &[none]);
    check(
        &tainted,
        &[],
        &[pod("p").tol("dedicated", None, None)],
        &["a"],
    );
    check(
        &tainted,
        &[],
        &[pod("p").tol("dedicated", Some("gpu"), None)],
        &["a"],
    );
    check(
        &tainted,
        &[],
        &[pod("p").tol("dedicated", Some("gpu"), Some(NoSchedule))],
        &["a"],
    );
    check(
        &tainted,
        &[],
        &[pod("p").tol("dedicated", Some("cpu"), None)],
        &[none],
    );
    check(
        &tainted,
        &[],
        &[pod("p").tol("dedicated", None, Some(NoExecute))],
        &[none],
    );
    check(&tainted, &[], &[pod("p").tol("other", None, None)], &[none]);
    check(&tainted, &[], &[pod("p").tol("", None, None)], &["a"]); // empty key: everything
    // Every taint must be tolerated.
    let two = [node("a")
        .taint("x", "", NoSchedule)
        .taint("y", "", NoExecute)];
    check(&two, &[], &[pod("p").tol("x", None, None)], &[none]);
    check(
        &two,
        &[],
        &[pod("p").tol("x", None, None).tol("y", None, None)],
        &["a"],
    );
    // An untainted node is preferred to nothing; tolerations do not attract.
    check(&[tainted[0].clone(), node("b")], &[], &[pod("p")], &["b"]);
}

#[test]
fn resources() {
    let small = [node("a").alloc(Some(1000), Some(GI), Some(10))];
    check(&small, &[], &[pod("p").req(1000, GI, 10)], &["a"]); // exact fit
    check(
        &small,
        &[],
        &[pod("p").req(1001, 0, 0)],
        &["0/1 nodes available: 1 insufficient cpu"],
    );
    check(
        &small,
        &[],
        &[pod("p").req(0, GI + 1, 0)],
        &["0/1 nodes available: 1 insufficient memory"],
    );
    check(
        &small,
        &[],
        &[pod("p").req(0, 0, 11)],
        &["0/1 nodes available: 1 insufficient pids"],
    );
    // CPU is reported before memory.
    check(
        &small,
        &[],
        &[pod("p").req(2000, 2 * GI, 0)],
        &["0/1 nodes available: 1 insufficient cpu"],
    );
    // Bound pods count.
    check(
        &small,
        &[("a", pod("old").req(600, 0, 0))],
        &[pod("p").req(500, 0, 0)],
        &["0/1 nodes available: 1 insufficient cpu"],
    );
    check(
        &small,
        &[("a", pod("old").req(600, 0, 0))],
        &[pod("p").req(400, 0, 0)],
        &["a"],
    );
    // Not advertised = unlimited; zero = none (but zero requests always fit).
    let unlimited = [node("a").alloc(None, None, None)];
    check(
        &unlimited,
        &[],
        &[pod("p").req(u64::from(u32::MAX), u64::MAX / 2, 1 << 40)],
        &["a@100"],
    );
    let zero = [node("a").alloc(Some(0), Some(0), Some(0))];
    check(
        &zero,
        &[],
        &[pod("p").req(1, 0, 0)],
        &["0/1 nodes available: 1 insufficient cpu"],
    );
    check(&zero, &[], &[pod("p").req(0, 0, 0)], &["a@0"]);
    // Already over-committed (a pod pinned by hand): nothing with a request fits any more.
    check(
        &small,
        &[("a", pod("pinned").req(5000, 0, 0))],
        &[pod("p").req(1, 0, 0)],
        &["0/1 nodes available: 1 insufficient cpu"],
    );
}

#[test]
fn host_ports() {
    let nodes = [node("a"), node("b")];
    check(
        &nodes,
        &[("a", pod("old").port(80))],
        &[pod("p").port(80)],
        &["b"],
    );
    check(
        &nodes,
        &[("a", pod("old").port(80))],
        &[pod("p").port(443).port(8080)],
        &["b"],
    ); // less load
    check(
        &nodes,
        &[("a", pod("x").port(80)), ("b", pod("y").port(80))],
        &[pod("p").port(443).port(80)],
        &["0/2 nodes available: 2 host port in use"],
    );
    // Within one batch.
    check(
        &nodes,
        &[],
        &[pod("p").port(80), pod("q").port(80), pod("r").port(80)],
        &["a", "b", "0/2 nodes available: 2 host port in use"],
    );
}

#[test]
fn batch_never_overcommits() {
    let one = [node("a").alloc(Some(4000), None, None)];
    check(
        &one,
        &[],
        &[
            pod("p").req(3000, 0, 0),
            pod("q").req(3000, 0, 0),
            pod("r").req(1000, 0, 0),
        ],
        &["a", "0/1 nodes available: 1 insufficient cpu", "a"],
    );
}

#[test]
fn summary() {
    let nodes = [
        node("a").alloc(None, Some(GI), None),
        node("b").alloc(None, Some(GI), None),
        node("c").not_ready(),
        node("d").alloc(None, Some(GI), None),
        node("e").not_ready(),
    ];
    check(
        &nodes,
        &[],
        &[pod("p").req(0, 2 * GI, 0)],
        &["0/5 nodes available: 3 insufficient memory, 2 not ready"],
    );
    // Equal counts: checker order.
    check(
        &nodes[2..4],
        &[],
        &[pod("p").req(0, 2 * GI, 0)],
        &["0/2 nodes available: 1 not ready, 1 insufficient memory"],
    );
    check(
        &[],
        &[],
        &[pod("p")],
        &["0/0 nodes available: no nodes in the cluster"],
    );
}

// ---- scores ---------------------------------------------------------------------------------

#[test]
fn least_allocated() {
    let a = [node("a")]; // 4000m, 4 GiB
    check(&a, &[], &[pod("p").req(1000, GI, 0)], &["a@75"]);
    check(&a, &[], &[pod("p").req(0, 0, 0)], &["a@100"]);
    check(&a, &[], &[pod("p").req(4000, 0, 0)], &["a@50"]); // cpu 0 %, memory 100 %
    check(&a, &[], &[pod("p").req(2000, 3 * GI, 0)], &["a@37"]); // (50 + 25) / 2, rounded down
    check(
        &a,
        &[("a", pod("old").req(2000, 2 * GI, 0))],
        &[pod("p").req(1000, GI, 0)],
        &["a@25"],
    );
    // Unlimited CPU counts as free.
    check(
        &[node("a").alloc(None, Some(4 * GI), None)],
        &[],
        &[pod("p").req(1000, 2 * GI, 0)],
        &["a@75"],
    );
    // The emptier node wins.
    check(
        &[node("a"), node("b")],
        &[("a", pod("old").req(1000, 0, 0))],
        &[pod("p")],
        &["b"],
    );
    check(
        &[node("a"), node("b")],
        &[("b", pod("old").req(0, GI, 0))],
        &[pod("p")],
        &["a"],
    );
    // Bigger nodes are emptier for the same pod.
    let sizes = [node("small").alloc(Some(1000), Some(GI), None), node("big")];
    check(&sizes, &[], &[pod("p").req(500, 512 * MI, 0)], &["big@87"]);
}

#[test]
fn spread() {
    let nodes = [node("a"), node("b")];
    // Spread (weight 2, 100 for no replica) beats load: a is empty but already runs a replica.
    let bound = [
        ("a", pod("w-0").owner("web").req(0, 0, 0)),
        ("b", pod("other").req(3000, 3 * GI, 0)),
    ];
    check(
        &nodes,
        &bound,
        &[pod("w-1").owner("web").req(0, 0, 0)],
        &["b@225"],
    );
    // Without the owner, load decides.
    check(&nodes, &bound, &[pod("x").req(0, 0, 0)], &["a@100"]);
    // Another owner's replicas do not count.
    check(
        &nodes,
        &bound,
        &[pod("d-0").owner("db").req(0, 0, 0)],
        &["a@300"],
    );
    // Replicas in one batch spread over every node before doubling up.
    let four = [node("a"), node("b"), node("c"), node("d")];
    let pods: Vec<PendingPod> = (0..8)
        .map(|i| pod(&format!("w-{i}")).owner("web"))
        .collect();
    let snap = snapshot(&four, &[]);
    let plan = schedule(&snap, &pods, 0, 3);
    let mut per_node = [0u32; 4];
    for b in &plan.bindings {
        per_node[b.node] += 1;
    }
    assert_eq!(per_node, [2, 2, 2, 2]);
    let web = OwnerKey {
        namespace: "default".into(),
        kind: Kind::Pod,
        name: "web".into(),
    };
    let mut after = snap.clone();
    after.apply(&plan, &pods);
    assert!((0..4).all(|i| after.owner_count(i, &web) == 2));
}

#[test]
fn ties_are_broken_by_the_seed() {
    let nodes: Vec<SchedNode> = (0..8).map(|i| node(&format!("n{i}"))).collect();
    let snap = snapshot(&nodes, &[]);
    let p = [pod("p").req(0, 0, 0)];
    let picks: BTreeSet<usize> = (0..64)
        .map(|seed| schedule(&snap, &p, 0, seed).bindings[0].node)
        .collect();
    assert!(
        picks.len() > 4,
        "ties should go to different nodes for different seeds: {picks:?}"
    );
    for seed in 0..8 {
        assert_eq!(schedule(&snap, &p, 0, seed), schedule(&snap, &p, 0, seed));
    }
}

#[test]
fn sample_sizes() {
    assert_eq!(Sample::Adaptive.candidates(10), 10);
    assert_eq!(Sample::Adaptive.candidates(99), 99);
    assert_eq!(Sample::Adaptive.candidates(100), 100);
    assert_eq!(Sample::Adaptive.candidates(1000), 420);
    assert_eq!(Sample::Adaptive.candidates(5000), 500);
    assert_eq!(Sample::Adaptive.candidates(100_000), 5000);
    assert_eq!(Sample::All.candidates(7), 7);
    assert_eq!(Sample::Fixed(0).candidates(7), 1);
    assert_eq!(Sample::Fixed(3).candidates(7), 3);
}

#[test]
fn sampling_still_finds_the_only_feasible_node() {
    let mut nodes: Vec<SchedNode> = (0..300).map(|i| node(&format!("n{i}"))).collect();
    nodes[217] = nodes[217].clone().label("gpu", "yes");
    let config = Config {
        sample: Sample::Fixed(2),
        ..Config::default()
    };
    let snap = snapshot(&nodes, &[]);
    for seed in 0..10 {
        let plan = schedule_with(
            &snap,
            &[pod("p"), pod("g").sel("gpu", "yes")],
            0,
            seed,
            &config,
        );
        assert_eq!(plan.bindings.len(), 2);
        assert_eq!(plan.bindings[1].node, 217);
    }
}

#[test]
fn more_classes_than_the_cache_holds() {
    // 80 pod classes (one selector value each), twice over: the class cache starts over.
    let nodes: Vec<SchedNode> = (0..80)
        .map(|i| node(&format!("n{i}")).label("slot", &i.to_string()))
        .collect();
    let pods: Vec<PendingPod> = (0..160)
        .map(|i| {
            pod(&format!("p{i}"))
                .sel("slot", &(i % 80).to_string())
                .port(80 + (i / 80) as u16)
        })
        .collect();
    let expect: Vec<String> = (0..160).map(|i| format!("n{}", i % 80)).collect();
    let expect: Vec<&str> = expect.iter().map(String::as_str).collect();
    check(&nodes, &[], &pods, &expect);
}

#[test]
fn now_is_only_stamped() {
    let snap = snapshot(&[node("a")], &[]);
    let a = schedule(&snap, &[pod("p")], 1, 9);
    let b = schedule(&snap, &[pod("p")], 2, 9);
    assert_eq!((a.now_ms, b.now_ms), (1, 2));
    assert_eq!(a.bindings, b.bindings);
}

// ---- constructors from objects ----------------------------------------------------------------

fn node_obj(name: &str, arch: Arch, ready: bool) -> Node {
    let mut info = NodeInfo {
        name: bramble_wire::Name::try_from(name).unwrap(),
        arch,
        os: Default::default(),
        kernel: Default::default(),
        board: Default::default(),
        cpus: 4,
        memory_bytes: 4 * GI,
        pids: 1000,
        cgroup: bramble_wire::CgroupVersion::V2,
        controllers: bramble_wire::Controllers(7),
        agent_version: Default::default(),
        labels: Default::default(),
    };
    info.labels
        .push(bramble_wire::Label {
            key: "zone".try_into().unwrap(),
            value: "agent".try_into().unwrap(),
        })
        .unwrap();
    Node {
        meta: Meta {
            name: name.into(),
            ..Meta::default()
        },
        spec: NodeSpec::default(),
        status: NodeStatus {
            info: Some(Box::new(info)),
            allocatable: Resources {
                cpu_millis: Some(4000),
                memory_bytes: Some(4 * GI),
                pids: None,
            },
            conditions: vec![Condition {
                kind: ConditionKind::Ready,
                status: ready,
                message: String::new(),
                since_ms: 0,
            }],
            addresses: Vec::new(),
            last_heartbeat_ms: 0,
        },
    }
}

fn pod_obj(
    name: &str,
    node: Option<&str>,
    phase: PodPhase,
    cpu: u32,
    host_port: Option<u16>,
) -> Pod {
    let process = |n: &str| ProcessSpec {
        name: n.into(),
        resources: Resources {
            cpu_millis: Some(cpu),
            memory_bytes: Some(MI),
            pids: None,
        },
        ports: host_port
            .map(|h| Port {
                container_port: h,
                host_port: Some(h),
            })
            .into_iter()
            .collect(),
        ..ProcessSpec::default()
    };
    Pod {
        meta: Meta {
            name: name.into(),
            namespace: "default".into(),
            owners: vec![OwnerRef {
                kind: Kind::Pod,
                name: "owner".into(),
                uid: "u".into(),
            }],
            ..Meta::default()
        },
        spec: PodSpec {
            processes: vec![process("a"), process("b")],
            node_name: node.map(Into::into),
            ..PodSpec::default()
        },
        status: PodStatus {
            phase,
            ..PodStatus::default()
        },
    }
}

#[test]
fn host_network_pods_claim_their_container_ports() {
    use bramble_wire::objects::NetworkMode;
    let with = |network: NetworkMode, ports: &[(u16, Option<u16>)]| {
        let mut p = pod_obj("p", None, PodPhase::Pending, 10, None);
        p.spec.network = network;
        p.spec.processes[0].ports = ports
            .iter()
            .map(|&(container_port, host_port)| Port {
                container_port,
                host_port,
            })
            .collect();
        PendingPod::from_pod(&p).host_ports
    };
    // Host network: every declared port is a port of the node.
    assert_eq!(
        with(NetworkMode::Host, &[(8080, None), (53, Some(53))]),
        [53, 8080]
    );
    // Isolated: only the node ports it claims (the node forwards them to the pod).
    assert_eq!(
        with(NetworkMode::Isolated, &[(8080, None), (80, Some(30080))]),
        [30080]
    );
    assert_eq!(with(NetworkMode::Isolated, &[(8080, None)]), [] as [u16; 0]);

    // Two host-network pods declaring the same port never share a node; isolated pods with the
    // same container port do, and an isolated pod's host port conflicts with a host pod's port.
    let nodes = [node_obj("n1", Arch::Aarch64, true)];
    let mk = |name: &str, network: NetworkMode, port: Port| {
        let mut p = pod_obj(name, None, PodPhase::Pending, 10, None);
        p.spec.network = network;
        p.spec.processes[0].ports = vec![port];
        p.meta.owners.clear();
        p
    };
    let plain = |c| Port {
        container_port: c,
        host_port: None,
    };
    let cases: [(Vec<Pod>, usize); 4] = [
        (
            vec![
                mk("h1", NetworkMode::Host, plain(8080)),
                mk("h2", NetworkMode::Host, plain(8080)),
            ],
            1,
        ),
        (
            vec![
                mk("i1", NetworkMode::Isolated, plain(8080)),
                mk("i2", NetworkMode::Isolated, plain(8080)),
            ],
            2,
        ),
        (
            vec![
                mk("h1", NetworkMode::Host, plain(8080)),
                mk(
                    "i1",
                    NetworkMode::Isolated,
                    Port {
                        container_port: 80,
                        host_port: Some(8080),
                    },
                ),
            ],
            1,
        ),
        (
            vec![
                mk("h1", NetworkMode::Host, plain(8080)),
                mk("h2", NetworkMode::Host, plain(8081)),
            ],
            2,
        ),
    ];
    for (pods, placed) in cases {
        let snap = Snapshot::from_objects(&nodes, &pods);
        let pending = PendingPod::all_pending(&pods);
        let plan = schedule(&snap, &pending, 0, 1);
        assert_eq!(
            plan.bindings.len(),
            placed,
            "{:?}",
            pods.iter().map(|p| &p.meta.name).collect::<Vec<_>>()
        );
    }
}

#[test]
fn from_objects() {
    let mut n1 = node_obj("n1", Arch::Aarch64, true);
    n1.meta.labels.insert("disk".into(), "ssd".into());
    n1.spec.taints.push(Taint {
        key: "k".into(),
        value: String::new(),
        effect: TaintEffect::NoSchedule,
    });
    let nodes = [n1, node_obj("n2", Arch::Armv7, false)];
    let pods = [
        pod_obj("running", Some("n1"), PodPhase::Running, 100, Some(80)),
        pod_obj("starting", Some("n1"), PodPhase::Pending, 50, None),
        pod_obj("done", Some("n1"), PodPhase::Succeeded, 1000, Some(81)),
        pod_obj("failed", Some("n1"), PodPhase::Failed, 1000, None),
        pod_obj("lost", Some("nowhere"), PodPhase::Running, 1000, None),
        pod_obj("waiting", None, PodPhase::Pending, 1000, Some(82)),
    ];
    let snap = Snapshot::from_objects(&nodes, &pods);
    assert_eq!(snap.len(), 2);
    let n1 = snap.node(0);
    assert_eq!(
        (n1.name, n1.arch, n1.ready, n1.pods),
        ("n1", Some(Arch::Aarch64), true, 2)
    );
    assert_eq!(
        n1.used,
        Amounts {
            cpu_millis: 300,
            memory_bytes: 4 * MI,
            pids: 0
        }
    );
    assert_eq!(n1.host_ports, &[80]);
    let owner = OwnerKey {
        namespace: "default".into(),
        kind: Kind::Pod,
        name: "owner".into(),
    };
    assert_eq!(snap.owner_count(0, &owner), 2);
    let n2 = snap.node(1);
    assert_eq!(
        (n2.name, n2.arch, n2.ready, n2.pods),
        ("n2", Some(Arch::Armv7), false, 0)
    );

    let pending = PendingPod::all_pending(&pods);
    assert_eq!(pending.len(), 1);
    let p = &pending[0];
    assert_eq!(
        (p.namespace.as_str(), p.name.as_str()),
        ("default", "waiting")
    );
    assert_eq!(
        p.requests,
        Amounts {
            cpu_millis: 2000,
            memory_bytes: 2 * MI,
            pids: 0
        }
    );
    assert_eq!(p.host_ports, vec![82]); // both processes claim 82: once
    assert_eq!(p.owner, Some(owner));

    // Labels: meta's and the built-ins; taints kept. The agent's raw report is never read (a
    // node claims only `node.bramble.io/` labels, filed at registration).
    check_objects(
        &snap,
        &[p.clone().sel("disk", "ssd").tol("k", None, None)],
        "n1",
    );
    check_objects(
        &snap,
        &[p.clone()
            .sel("zone", "agent")
            .sel("disk", "ssd")
            .tol("k", None, None)],
        "0/2 nodes available: 1 not ready, 1 didn't match node selector",
    );
    check_objects(
        &snap,
        &[p.clone()
            .sel(LABEL_ARCH, "aarch64")
            .port(80)
            .tol("k", None, None)],
        "0/2 nodes available: 1 not ready, 1 host port in use",
    );
    check_objects(
        &snap,
        std::slice::from_ref(p),
        "0/2 nodes available: 1 not ready, 1 untolerated taint",
    );
}

#[track_caller]
fn check_objects(snap: &Snapshot, pods: &[PendingPod], expect: &str) {
    let plan = schedule(snap, pods, 0, 0);
    let got = match (plan.bindings.first(), plan.failures.first()) {
        (Some(b), _) => snap.node(b.node).name.to_string(),
        (_, Some(f)) => f.message(),
        _ => unreachable!(),
    };
    assert_eq!(got, expect);
}

// ---- properties -----------------------------------------------------------------------------

const KEYS: [(&str, [&str; 2]); 2] = [("zone", ["x", "y"]), ("disk", ["ssd", "hdd"])];
const ARCHES: [Option<Arch>; 5] = [
    None,
    Some(Arch::Aarch64),
    Some(Arch::Armv7),
    Some(Arch::X86_64),
    Some(Arch::Mcu),
];
const PORTS: [u16; 3] = [80, 443, 8080];

fn gen_taint() -> impl Strategy<Value = Taint> {
    prop_oneof![
        Just(Taint {
            key: "dedicated".into(),
            value: "gpu".into(),
            effect: TaintEffect::NoSchedule
        }),
        Just(Taint {
            key: "dedicated".into(),
            value: "db".into(),
            effect: TaintEffect::NoSchedule
        }),
        Just(Taint {
            key: "flaky".into(),
            value: String::new(),
            effect: TaintEffect::NoExecute
        }),
    ]
}

fn gen_toleration() -> impl Strategy<Value = Toleration> {
    (
        prop_oneof![Just(""), Just("dedicated"), Just("flaky")],
        prop::option::of(prop_oneof![Just("gpu"), Just("db"), Just("")]),
        prop::option::of(prop_oneof![
            Just(TaintEffect::NoSchedule),
            Just(TaintEffect::NoExecute)
        ]),
    )
        .prop_map(|(k, v, effect)| Toleration {
            key: k.into(),
            value: v.map(Into::into),
            effect,
        })
}

fn gen_labels() -> impl Strategy<Value = Labels> {
    prop::collection::vec((0..KEYS.len(), 0..2usize), 0..3).prop_map(|kv| {
        kv.into_iter()
            .map(|(k, v)| (KEYS[k].0.to_string(), KEYS[k].1[v].to_string()))
            .collect()
    })
}

fn gen_ports() -> impl Strategy<Value = Vec<u16>> {
    prop_oneof![
        3 => Just(Vec::new()),
        1 => prop::collection::btree_set(prop::sample::select(&PORTS[..]), 1..3)
            .prop_map(|s| s.into_iter().collect()),
    ]
}

fn gen_node(i: usize) -> impl Strategy<Value = SchedNode> {
    (
        prop::sample::select(&ARCHES[..]),
        prop::bool::weighted(0.85),
        prop::bool::weighted(0.1),
        gen_labels(),
        prop::collection::vec(gen_taint(), 0..2),
        prop::option::weighted(0.8, 0..4000u32),
        prop::option::weighted(0.8, 0..4000u64),
        prop::option::weighted(0.5, 0..20u32),
    )
        .prop_map(
            move |(arch, ready, unschedulable, labels, taints, cpu, mem, pids)| SchedNode {
                name: format!("n{i}"),
                arch,
                ready,
                unschedulable,
                labels,
                taints,
                allocatable: Resources {
                    cpu_millis: cpu,
                    memory_bytes: mem,
                    pids,
                },
            },
        )
}

fn gen_pod(i: usize) -> impl Strategy<Value = PendingPod> {
    (
        (0..1500u64, 0..1500u64, prop_oneof![Just(0u64), 0..6u64]),
        gen_ports(),
        prop::option::weighted(
            0.3,
            prop::sample::select(&ARCHES[..]).prop_filter_map("some", |a| a),
        ),
        prop::option::weighted(0.3, gen_labels()),
        prop::collection::vec(gen_toleration(), 0..2),
        prop::option::weighted(0.6, 0..3usize),
    )
        .prop_map(
            move |((cpu, mem, pids), host_ports, arch, selector, tolerations, owner)| {
                let mut p = pod(&format!("p{i}")).req(cpu, mem, pids);
                p.host_ports = host_ports;
                p.arch = arch;
                p.node_selector = selector.unwrap_or_default();
                p.tolerations = tolerations;
                if let Some(o) = owner {
                    p = p.owner(&format!("o{o}"));
                }
                p
            },
        )
}

/// Nodes, pods already bound (node index, pod), pending pods.
type World = (Vec<SchedNode>, Vec<(usize, PendingPod)>, Vec<PendingPod>);

fn gen_world() -> impl Strategy<Value = World> {
    (0..10usize, 0..40usize).prop_flat_map(|(n, p)| {
        let nodes: Vec<_> = (0..n).map(gen_node).collect();
        let bound = if n == 0 {
            Just(Vec::new()).boxed()
        } else {
            prop::collection::vec((0..n, gen_pod(1000)), 0..2 * n).boxed()
        };
        let pending: Vec<_> = (0..p).map(gen_pod).collect();
        (nodes, bound, pending)
    })
}

fn gen_config() -> impl Strategy<Value = Config> {
    prop_oneof![
        Just(Sample::All),
        Just(Sample::Adaptive),
        (1..4usize).prop_map(Sample::Fixed)
    ]
    .prop_map(|sample| Config {
        sample,
        ..Config::default()
    })
}

/// What the oracle tracks per node: used amounts and host ports.
#[derive(Clone, Default)]
struct Used {
    amounts: Amounts,
    ports: BTreeSet<u16>,
}

fn fits(req: u64, used: u64, alloc: Option<u64>) -> bool {
    req == 0 || alloc.is_none_or(|a| u128::from(used) + u128::from(req) <= u128::from(a))
}

/// The naive, string-based statement of feasibility.
fn oracle_feasible(n: &SchedNode, used: &Used, p: &PendingPod) -> bool {
    let mut labels = n.labels.clone();
    if let Some(a) = n.arch {
        labels.insert(LABEL_ARCH.into(), a.as_str().into());
    }
    labels.insert(LABEL_HOSTNAME.into(), n.name.clone());
    n.ready
        && !n.unschedulable
        && n.arch != Some(Arch::Mcu)
        && p.arch.is_none_or(|a| n.arch == Some(a))
        && p.node_selector
            .iter()
            .all(|(k, v)| labels.get(k) == Some(v))
        && n.taints
            .iter()
            .all(|t| p.tolerations.iter().any(|tol| tol.tolerates(t)))
        && fits(
            p.requests.cpu_millis,
            used.amounts.cpu_millis,
            n.allocatable.cpu_millis.map(u64::from),
        )
        && fits(
            p.requests.memory_bytes,
            used.amounts.memory_bytes,
            n.allocatable.memory_bytes,
        )
        && fits(
            p.requests.pids,
            used.amounts.pids,
            n.allocatable.pids.map(u64::from),
        )
        && p.host_ports.iter().all(|port| !used.ports.contains(port))
}

fn account(u: &mut Used, p: &PendingPod) {
    u.amounts.add(&p.requests);
    u.ports.extend(&p.host_ports);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    /// Replays the plan pod by pod: every binding satisfies every constraint given what was placed
    /// before it (never NotReady, cordoned, wrong-arch, off-selector, untolerated-taint, host-port
    /// conflicts or over-commit), every unbound pod fits nowhere and has a complete reason summary,
    /// and each pod is in exactly one list.
    #[test]
    fn plans_respect_every_constraint(world in gen_world(), seed in any::<u64>(), config in gen_config()) {
        let (nodes, bound, pending) = world;
        let mut snap = Snapshot::new();
        for n in &nodes {
            snap.add_node(n.clone());
        }
        let mut used = vec![Used::default(); nodes.len()];
        for (i, p) in &bound {
            snap.add_bound(*i, p);
            account(&mut used[*i], p);
        }
        let initial = used.clone();
        let plan = schedule_with(&snap, &pending, 0, seed, &config);

        let mut bindings = plan.bindings.iter().peekable();
        let mut failures = plan.failures.iter().peekable();
        for (i, p) in pending.iter().enumerate() {
            if let Some(b) = bindings.next_if(|b| b.pod == i) {
                prop_assert!(failures.peek().is_none_or(|f| f.pod != i), "pod {i} both bound and failed");
                prop_assert!(oracle_feasible(&nodes[b.node], &used[b.node], p),
                    "pod {i} bound to infeasible node {}", b.node);
                account(&mut used[b.node], p);
            } else {
                let f = failures.next();
                prop_assert!(f.is_some_and(|f| f.pod == i), "pod {i} neither bound nor failed");
                let f = f.unwrap();
                prop_assert!(nodes.iter().zip(&used).all(|(n, u)| !oracle_feasible(n, u, p)),
                    "pod {i} failed but a node fits");
                prop_assert_eq!(f.reasons.total() as usize, nodes.len());
                prop_assert_eq!(f.nodes as usize, nodes.len());
                let prefix = format!("0/{} nodes available", nodes.len());
                prop_assert!(f.message().starts_with(&prefix));
            }
        }
        prop_assert!(bindings.next().is_none() && failures.next().is_none(), "extra entries");

        // Never over-commits: on every node, each resource that received new requests is within
        // its allocatable (a node over-committed before the batch gets only zero requests).
        let mut after = snap.clone();
        after.apply(&plan, &pending);
        for (i, n) in nodes.iter().enumerate() {
            let (before, now) = (initial[i].amounts, after.node(i).used);
            prop_assert_eq!(now, used[i].amounts);
            let a = n.allocatable;
            for (b, u, lim) in [
                (before.cpu_millis, now.cpu_millis, a.cpu_millis.map(u64::from)),
                (before.memory_bytes, now.memory_bytes, a.memory_bytes),
                (before.pids, now.pids, a.pids.map(u64::from)),
            ] {
                prop_assert!(u == b || lim.is_none_or(|l| u <= l), "node {i} over-committed");
            }
        }
    }

    /// Same inputs and seed, same plan.
    #[test]
    fn deterministic_for_a_seed(world in gen_world(), seed in any::<u64>(), config in gen_config()) {
        let (nodes, bound, pending) = world;
        let build = || {
            let mut snap = Snapshot::new();
            for n in &nodes {
                snap.add_node(n.clone());
            }
            for (i, p) in &bound {
                snap.add_bound(*i, p);
            }
            snap
        };
        let (a, b) = (build(), build());
        prop_assert_eq!(
            schedule_with(&a, &pending, 5, seed, &config),
            schedule_with(&b, &pending, 5, seed, &config)
        );
    }
}

// ---- artifacts ------------------------------------------------------------------------------

fn artifact_pod(name: &str, artifact: &str) -> PendingPod {
    PendingPod {
        namespace: "default".into(),
        name: name.into(),
        artifact: Some(artifact.into()),
        ..Default::default()
    }
}

#[test]
fn artifact_pods_go_only_where_a_variant_exists() {
    let mut snap = Snapshot::new();
    snap.add_node(node("x86").arch(Some(Arch::X86_64)));
    snap.add_node(node("pi").arch(Some(Arch::Aarch64)));
    snap.add_node(node("old").arch(Some(Arch::Armv7)));
    snap.add_artifact("busybox", &[Arch::Aarch64]);
    for seed in 0..20 {
        let plan = schedule(&snap, &[artifact_pod("a", "busybox")], 0, seed);
        assert_eq!(plan.bindings.len(), 1);
        assert_eq!(snap.node(plan.bindings[0].node).name, "pi");
    }
}

#[test]
fn no_variant_for_any_node_keeps_the_pod_pending_with_the_reason() {
    let mut snap = Snapshot::new();
    for n in ["a", "b", "c"] {
        snap.add_node(node(n).arch(Some(Arch::X86_64)));
    }
    snap.add_artifact("busybox", &[Arch::Aarch64]);
    let plan = schedule(&snap, &[artifact_pod("p", "busybox")], 0, 1);
    assert!(plan.bindings.is_empty());
    assert_eq!(
        plan.failures[0].message(),
        "0/3 nodes available: 3 no artifact variant for their architecture (busybox has aarch64)"
    );
    // Other reasons still count first where they apply.
    let mut snap2 = Snapshot::new();
    snap2.add_node(node("a").arch(Some(Arch::X86_64)));
    snap2.add_node(node("b").not_ready());
    snap2.add_artifact("busybox", &[Arch::Aarch64, Arch::Armv7]);
    let plan = schedule(&snap2, &[artifact_pod("p", "busybox")], 0, 1);
    assert_eq!(
        plan.failures[0].message(),
        "0/2 nodes available: 1 not ready, 1 no artifact variant for their architecture (busybox has aarch64, armv7)"
    );
}

#[test]
fn a_missing_artifact_says_how_to_push_it() {
    let mut snap = Snapshot::new();
    snap.add_node(node("a"));
    let plan = schedule(&snap, &[artifact_pod("p", "busybox")], 0, 1);
    assert_eq!(
        plan.failures[0].message(),
        "artifact busybox not found: push it with bramble artifact push"
    );
    // An artifact without variants (all replaced away) fits nowhere, and says so.
    snap.add_artifact("busybox", &[]);
    let plan = schedule(&snap, &[artifact_pod("p", "busybox")], 0, 1);
    assert_eq!(
        plan.failures[0].message(),
        "0/1 nodes available: 1 no artifact variant for their architecture (busybox has no variants)"
    );
}

#[test]
fn pods_of_different_artifacts_do_not_share_a_class() {
    let mut snap = Snapshot::new();
    snap.add_node(node("x86").arch(Some(Arch::X86_64)));
    snap.add_node(node("pi").arch(Some(Arch::Aarch64)));
    snap.add_artifact("arm", &[Arch::Aarch64]);
    snap.add_artifact("intel", &[Arch::X86_64]);
    let pods = [
        artifact_pod("a", "arm"),
        artifact_pod("b", "intel"),
        artifact_pod("c", "arm"),
        PendingPod {
            name: "plain".into(),
            ..Default::default()
        },
    ];
    let plan = schedule(&snap, &pods, 0, 3);
    assert_eq!(plan.bindings.len(), 4);
    let on = |i: usize| snap.node(plan.bindings[i].node).name.to_string();
    assert_eq!(on(0), "pi");
    assert_eq!(on(1), "x86");
    assert_eq!(on(2), "pi");
}

#[test]
fn pending_pod_reads_the_artifact_from_rootfs() {
    let mut p = Pod::default();
    p.spec.rootfs = Some("artifact:busybox".into());
    assert_eq!(
        PendingPod::from_pod(&p).artifact.as_deref(),
        Some("busybox")
    );
    p.spec.rootfs = Some("/srv/rootfs".into());
    assert_eq!(PendingPod::from_pod(&p).artifact, None);
}

// ---- images ---------------------------------------------------------------------------------

fn image_pod(name: &str, image: &str) -> PendingPod {
    PendingPod {
        namespace: "default".into(),
        name: name.into(),
        image: Some(image.into()),
        ..Default::default()
    }
}

const REF: &str = "registry.lan:5000/app:1.4";

#[test]
fn image_pods_go_only_where_a_variant_runs() {
    let mut snap = Snapshot::new();
    snap.add_node(node("x86").arch(Some(Arch::X86_64)));
    snap.add_node(node("pi").arch(Some(Arch::Aarch64)));
    snap.add_node(node("old").arch(Some(Arch::Armv7)));
    snap.add_image(REF, &[Arch::Aarch64]);
    for seed in 0..20 {
        let plan = schedule(&snap, &[image_pod("a", REF)], 0, seed);
        assert_eq!(plan.bindings.len(), 1);
        assert_eq!(snap.node(plan.bindings[0].node).name, "pi");
    }
}

#[test]
fn an_armv7_node_runs_an_armv6_variant() {
    let mut snap = Snapshot::new();
    snap.add_node(node("old").arch(Some(Arch::Armv7)));
    snap.add_node(node("x86").arch(Some(Arch::X86_64)));
    snap.add_image(REF, &[Arch::Armv6]);
    let plan = schedule(&snap, &[image_pod("a", REF)], 0, 1);
    assert_eq!(snap.node(plan.bindings[0].node).name, "old");
    // But an armv6 node does not run an armv7 variant.
    let mut snap = Snapshot::new();
    snap.add_node(node("zero").arch(Some(Arch::Armv6)));
    snap.add_image(REF, &[Arch::Armv7]);
    let plan = schedule(&snap, &[image_pod("a", REF)], 0, 1);
    assert_eq!(
        plan.failures[0].message(),
        format!(
            "0/1 nodes available: 1 no image variant for their architecture: no linux/arm/v6 variant of image {REF} (it has linux/arm/v7)"
        )
    );
}

#[test]
fn no_image_variant_names_the_platform() {
    let mut snap = Snapshot::new();
    snap.add_node(node("a").arch(Some(Arch::Armv7)));
    snap.add_node(node("b").not_ready());
    snap.add_image(REF, &[Arch::Aarch64, Arch::X86_64]);
    let plan = schedule(&snap, &[image_pod("p", REF)], 0, 1);
    assert!(plan.bindings.is_empty());
    let msg = plan.failures[0].message();
    assert_eq!(
        msg,
        format!(
            "0/2 nodes available: 1 not ready, 1 no image variant for their architecture: no linux/arm/v7 variant of image {REF} (it has linux/arm64, linux/amd64)"
        )
    );
}

#[test]
fn a_pod_waits_while_its_image_is_not_stored() {
    let mut snap = Snapshot::new();
    snap.add_node(node("a").arch(Some(Arch::X86_64)));
    let plan = schedule(&snap, &[image_pod("p", REF)], 0, 1);
    assert!(plan.bindings.is_empty());
    assert_eq!(
        plan.failures[0].message(),
        format!("waiting for image {REF} to be pulled")
    );
    assert_eq!(
        plan.failures[0].image,
        Some(crate::sched::ImageNote::Missing(REF.into()))
    );
}

#[test]
fn pods_of_different_images_do_not_share_a_class() {
    let mut snap = Snapshot::new();
    snap.add_node(node("x86").arch(Some(Arch::X86_64)));
    snap.add_node(node("pi").arch(Some(Arch::Aarch64)));
    snap.add_image("h/arm:1", &[Arch::Aarch64]);
    snap.add_image("h/intel:1", &[Arch::X86_64]);
    let pods = [
        image_pod("a", "h/arm:1"),
        image_pod("b", "h/intel:1"),
        image_pod("c", "h/arm:1"),
    ];
    let plan = schedule(&snap, &pods, 0, 3);
    assert_eq!(plan.bindings.len(), 3);
    let on = |i: usize| snap.node(plan.bindings[i].node).name.to_string();
    assert_eq!(
        (on(0).as_str(), on(1).as_str(), on(2).as_str()),
        ("pi", "x86", "pi")
    );
}

#[test]
fn pending_pod_normalizes_the_image() {
    let mut p = Pod::default();
    p.spec.image = Some("alpine:3.20".into());
    assert_eq!(
        PendingPod::from_pod(&p).image.as_deref(),
        Some("docker.io/library/alpine:3.20")
    );
}
