//! Controller throughput on a 1,000-node, 10,000-pod cluster (100 deployments × 100 replicas)
//! after one node fails past the eviction timeout.
//!
//! `cargo bench -p bramble-server --bench controllers` (a plain binary: `harness = false`). Prints:
//! 1. an idle pass over the converged cluster (no action expected);
//! 2. the pass that evicts the failed node's pods (deletes);
//! 3. after applying them, the pass that creates the replacements (replica sets), and the
//!    scheduler placing those replacements (snapshot build + `sched::schedule`).

use std::hint::black_box;
use std::time::{Duration, Instant};

use bramble_server::controllers::{self, Action, LABEL_TEMPLATE_HASH, Snapshot, Timings};
use bramble_server::sched;
use bramble_wire::objects::{
    Arch, Condition, ConditionKind, Deployment, DeploymentSpec, Kind, Labels, Meta, Node, NodeInfo,
    Object, OwnerRef, Pod, PodPhase, PodStatus, PodTemplate, ProcessSpec, ProcessState,
    ProcessStatus, ReplicaSet, ReplicaSetSpec, ReplicaSetStatus, Resources,
};

const NODES: usize = 1_000;
const DEPLOYMENTS: usize = 100;
const REPLICAS: u32 = 100;
const RUNS: u32 = 5;
const NOW: u64 = 10_000_000;

fn node(i: usize) -> Node {
    let name = format!("node-{i:04}");
    let mut n = Node {
        meta: Meta {
            name: name.clone(),
            uid: format!("node-uid-{i}"),
            revision: 1,
            ..Default::default()
        },
        ..Default::default()
    };
    n.status.info = Some(Box::new(NodeInfo {
        name: bramble_wire::Name::try_from(name.as_str()).unwrap(),
        arch: Arch::Aarch64,
        os: Default::default(),
        kernel: Default::default(),
        board: Default::default(),
        cpus: 4,
        memory_bytes: 8 << 30,
        pids: 4096,
        cgroup: bramble_wire::CgroupVersion::V2,
        controllers: bramble_wire::Controllers(7),
        agent_version: Default::default(),
        labels: Default::default(),
    }));
    n.status.allocatable = Resources {
        cpu_millis: Some(4000),
        memory_bytes: Some(8 << 30),
        pids: Some(4096),
    };
    n.status.conditions.push(Condition {
        kind: ConditionKind::Ready,
        status: true,
        message: String::new(),
        since_ms: 0,
    });
    n
}

/// A converged cluster: deployments, their replica sets and running pods spread over the nodes.
fn cluster() -> (Vec<Node>, Vec<Deployment>, Vec<ReplicaSet>, Vec<Pod>) {
    let nodes: Vec<Node> = (0..NODES).map(node).collect();
    let mut deployments = Vec::new();
    let mut replicasets = Vec::new();
    let mut pods = Vec::new();
    let mut slot = 0usize;
    for d in 0..DEPLOYMENTS {
        let name = format!("app{d:03}");
        let mut tlabels = Labels::new();
        tlabels.insert("app".into(), name.clone());
        let template = PodTemplate {
            labels: tlabels.clone(),
            spec: bramble_wire::objects::PodSpec {
                processes: vec![ProcessSpec {
                    name: "main".into(),
                    command: vec!["/bin/serve".into(), format!("--app={name}")],
                    resources: Resources {
                        cpu_millis: Some(100),
                        memory_bytes: Some(64 << 20),
                        pids: None,
                    },
                    ..Default::default()
                }],
                ..Default::default()
            },
            restarted_at_ms: None,
        };
        let dep = Deployment {
            meta: Meta {
                name: name.clone(),
                namespace: "default".into(),
                uid: format!("dep-uid-{d}"),
                revision: 1,
                created_ms: 1,
                ..Default::default()
            },
            spec: DeploymentSpec {
                replicas: REPLICAS,
                selector: Labels::new(),
                template: template.clone(),
                max_surge: 10,
                max_unavailable: 0,
                min_ready_ms: 0,
                revision_history: 3,
                progress_deadline_ms: 0,
            },
            status: Default::default(),
        };
        let hash = controllers::template_hash(&template);
        let mut rs_template = template.clone();
        rs_template
            .labels
            .insert(LABEL_TEMPLATE_HASH.into(), hash.clone());
        let mut selector = tlabels.clone();
        selector.insert(LABEL_TEMPLATE_HASH.into(), hash.clone());
        let rs = ReplicaSet {
            meta: Meta {
                name: format!("{name}-{hash}"),
                namespace: "default".into(),
                labels: rs_template.labels.clone(),
                uid: format!("rs-uid-{d}"),
                revision: 2,
                created_ms: 2,
                owners: vec![OwnerRef {
                    kind: Kind::Deployment,
                    name: name.clone(),
                    uid: dep.meta.uid.clone(),
                }],
                ..Default::default()
            },
            spec: ReplicaSetSpec {
                replicas: REPLICAS,
                selector,
                template: rs_template.clone(),
                revision: 1,
                min_ready_ms: 0,
            },
            status: ReplicaSetStatus {
                replicas: REPLICAS,
                available: REPLICAS,
                ..Default::default()
            },
        };
        for r in 0..REPLICAS {
            let mut spec = rs_template.spec.clone();
            spec.node_name = Some(nodes[slot % NODES].meta.name.clone());
            slot += 1;
            pods.push(Pod {
                meta: Meta {
                    name: format!("{}-{r:05}", rs.meta.name),
                    namespace: "default".into(),
                    labels: rs_template.labels.clone(),
                    uid: format!("pod-uid-{d}-{r}"),
                    revision: 3,
                    created_ms: 3,
                    owners: vec![OwnerRef {
                        kind: Kind::ReplicaSet,
                        name: rs.meta.name.clone(),
                        uid: rs.meta.uid.clone(),
                    }],
                    ..Default::default()
                },
                spec,
                status: PodStatus {
                    phase: PodPhase::Running,
                    processes: vec![ProcessStatus {
                        name: "main".into(),
                        state: ProcessState::Running {
                            pid: 100,
                            started_ms: 5,
                        },
                        restarts: 0,
                        last_exit: None,
                        ready: true,
                    }],
                    message: String::new(),
                    updated_ms: 5,
                    ip: String::new(),
                },
            });
        }
        let mut dep = dep;
        dep.status = bramble_wire::objects::DeploymentStatus {
            replicas: REPLICAS,
            updated: REPLICAS,
            available: REPLICAS,
            revision: 1,
            message: "complete".into(),
            ..Default::default()
        };
        deployments.push(dep);
        replicasets.push(rs);
    }
    (nodes, deployments, replicasets, pods)
}

/// No deleted pods' names to avoid.
static NO_NAMES: std::sync::LazyLock<std::collections::HashSet<(String, String)>> =
    std::sync::LazyLock::new(Default::default);

fn snapshot<'a>(
    nodes: &'a [Node],
    pods: &'a [Pod],
    deployments: &'a [Deployment],
    replicasets: &'a [ReplicaSet],
) -> Snapshot<'a> {
    Snapshot {
        now_ms: NOW,
        nodes,
        pods,
        deployments,
        replicasets,
        daemonsets: &[],
        jobs: &[],
        namespaces: &[],
        seed: 1,
        used_names: &NO_NAMES,
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Runs `f` RUNS times; returns the last result and the mean and best time.
fn time<T>(mut f: impl FnMut() -> T) -> (T, f64, f64) {
    let mut total = Duration::ZERO;
    let mut best = Duration::MAX;
    let mut out = None;
    for _ in 0..RUNS {
        let t = Instant::now();
        let r = black_box(f());
        let e = t.elapsed();
        total += e;
        best = best.min(e);
        out = Some(r);
    }
    (out.unwrap(), ms(total) / f64::from(RUNS), ms(best))
}

fn main() {
    let timings = Timings::default();
    let (mut nodes, deployments, replicasets, mut pods) = cluster();
    println!(
        "controllers: {} nodes, {} pods ({} deployments x {} replicas), {} runs each",
        nodes.len(),
        pods.len(),
        DEPLOYMENTS,
        REPLICAS,
        RUNS
    );

    let (idle, mean, best) = time(|| {
        controllers::reconcile(
            &snapshot(&nodes, &pods, &deployments, &replicasets),
            &timings,
        )
    });
    println!(
        "  idle pass (converged):           {mean:8.2} ms mean, {best:8.2} ms best  ({} actions)",
        idle.len()
    );
    assert!(
        idle.is_empty(),
        "converged cluster produced actions: {:?}",
        &idle[..idle.len().min(3)]
    );

    // node-0000 stops reporting, past the eviction timeout; already tainted.
    let failed = nodes[0].meta.name.clone();
    nodes[0].status.conditions[0].status = false;
    nodes[0].status.conditions[0].since_ms = NOW - timings.eviction_timeout_ms;
    nodes[0].spec.taints.push(bramble_wire::objects::Taint {
        key: controllers::TAINT_NOT_READY.into(),
        value: String::new(),
        effect: bramble_wire::objects::TaintEffect::NoSchedule,
    });
    let (evict, mean, best) = time(|| {
        controllers::reconcile(
            &snapshot(&nodes, &pods, &deployments, &replicasets),
            &timings,
        )
    });
    let evicted: Vec<&str> = evict
        .iter()
        .filter_map(|a| match a {
            Action::Delete {
                kind: Kind::Pod,
                name,
                ..
            } => Some(name.as_str()),
            _ => None,
        })
        .collect();
    println!(
        "  eviction pass:                   {mean:8.2} ms mean, {best:8.2} ms best  ({} pod deletes, {} actions)",
        evicted.len(),
        evict.len()
    );
    let (node_only, mean, best) = time(|| {
        controllers::node::reconcile(
            &snapshot(&nodes, &pods, &deployments, &replicasets),
            &timings,
        )
    });
    println!(
        "    node lifecycle alone:          {mean:8.2} ms mean, {best:8.2} ms best  ({} actions)",
        node_only.len()
    );

    // Apply the evictions.
    let gone: std::collections::HashSet<String> = evicted.iter().map(|s| s.to_string()).collect();
    pods.retain(|p| !gone.contains(&p.meta.name));

    let (replace, mean, best) = time(|| {
        controllers::reconcile(
            &snapshot(&nodes, &pods, &deployments, &replicasets),
            &timings,
        )
    });
    let new_pods: Vec<Pod> = replace
        .iter()
        .filter_map(|a| match a {
            Action::Create(Object::Pod(p)) => Some(p.clone()),
            _ => None,
        })
        .collect();
    println!(
        "  replacement pass (full):         {mean:8.2} ms mean, {best:8.2} ms best  ({} pod creates, {} actions)",
        new_pods.len(),
        replace.len()
    );
    let (_, mean, best) = time(|| {
        let snap = snapshot(&nodes, &pods, &deployments, &replicasets);
        replicasets
            .iter()
            .map(|rs| controllers::replicaset::reconcile(&snap, rs).len())
            .sum::<usize>()
    });
    println!(
        "    per-RS entry points (x{}):     {mean:8.2} ms mean, {best:8.2} ms best",
        replicasets.len()
    );

    // Schedule the replacements.
    let mut all = pods.clone();
    all.extend(new_pods.iter().cloned());
    let ((sched_snap, plan), mean, best) = time(|| {
        let s = sched::Snapshot::from_objects(&nodes, &pods);
        let want: Vec<sched::PendingPod> =
            new_pods.iter().map(sched::PendingPod::from_pod).collect();
        let plan = sched::schedule(&s, &want, NOW, 42);
        (s, plan)
    });
    let on_failed = plan
        .bindings
        .iter()
        .filter(|b| sched_snap.node(b.node).name == failed)
        .count();
    println!(
        "  scheduling the replacements:     {mean:8.2} ms mean, {best:8.2} ms best  ({} bound, {} on the failed node)",
        plan.bindings.len(),
        on_failed
    );
    assert_eq!(on_failed, 0);
    let _ = all;
}
