//! Table tests per controller and property tests over an in-memory "apply actions" simulator.

use std::collections::{BTreeMap, HashMap, HashSet};

use bramble_wire::objects::{
    Arch, Condition, ConditionKind, DaemonSet, DaemonSetSpec, Deployment, DeploymentSpec,
    ExitReason, Job, JobPhase, JobSpec, Kind, Labels, Meta, Namespace, Node, NodeInfo, Object,
    OwnerRef, Pod, PodPhase, PodTemplate, ProcessSpec, ProcessState, ProcessStatus, ReplicaSet,
    RestartPolicy, Taint, TaintEffect, Toleration,
};
use proptest::prelude::*;

use super::*;

const T0: u64 = 1_000_000;
const STEP: u64 = 1_000;

// ---------------------------------------------------------------------------------------------
// Builders

fn labels(kv: &[(&str, &str)]) -> Labels {
    kv.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn template(cmd: &str) -> PodTemplate {
    PodTemplate {
        labels: labels(&[("app", "web")]),
        spec: bramble_wire::objects::PodSpec {
            processes: vec![ProcessSpec {
                name: "main".into(),
                command: vec![cmd.into()],
                ..Default::default()
            }],
            ..Default::default()
        },
        restarted_at_ms: None,
    }
}

fn meta(name: &str, uid: &str) -> Meta {
    Meta {
        name: name.into(),
        namespace: "default".into(),
        uid: uid.into(),
        revision: 1,
        created_ms: T0,
        ..Default::default()
    }
}

fn node(name: &str, ready: bool) -> Node {
    let info = NodeInfo {
        name: bramble_wire::Name::try_from(name).unwrap(),
        arch: Arch::Aarch64,
        os: Default::default(),
        kernel: Default::default(),
        board: Default::default(),
        cpus: 4,
        memory_bytes: 4 << 30,
        pids: 1000,
        cgroup: bramble_wire::CgroupVersion::V2,
        controllers: bramble_wire::Controllers(7),
        agent_version: Default::default(),
        labels: Default::default(),
    };
    let mut n = Node {
        meta: Meta {
            name: name.into(),
            uid: format!("uid-node-{name}"),
            revision: 1,
            ..Default::default()
        },
        ..Default::default()
    };
    n.status.info = Some(Box::new(info));
    n.status.conditions.push(Condition {
        kind: ConditionKind::Ready,
        status: ready,
        message: String::new(),
        since_ms: 0,
    });
    if !ready {
        n.spec.taints.push(not_ready_taint());
    }
    n
}

fn not_ready_taint() -> Taint {
    Taint {
        key: TAINT_NOT_READY.into(),
        value: String::new(),
        effect: TaintEffect::NoSchedule,
    }
}

fn running(started_ms: u64) -> bramble_wire::objects::PodStatus {
    bramble_wire::objects::PodStatus {
        phase: PodPhase::Running,
        processes: vec![ProcessStatus {
            name: "main".into(),
            state: ProcessState::Running { pid: 1, started_ms },
            restarts: 0,
            last_exit: None,
            ready: true,
        }],
        message: String::new(),
        updated_ms: started_ms,
        ip: String::new(),
    }
}

fn phase(p: PodPhase) -> bramble_wire::objects::PodStatus {
    bramble_wire::objects::PodStatus {
        phase: p,
        ..Default::default()
    }
}

fn pod(name: &str, owner: (Kind, &str, &str), node: Option<&str>) -> Pod {
    let mut p = Pod {
        meta: meta(name, &format!("uid-{name}")),
        spec: template("v1").spec,
        status: running(0),
    };
    p.meta.labels = labels(&[("app", "web")]);
    p.meta.owners = vec![OwnerRef {
        kind: owner.0,
        name: owner.1.into(),
        uid: owner.2.into(),
    }];
    p.spec.node_name = node.map(String::from);
    p
}

fn replicaset(name: &str, replicas: u32) -> ReplicaSet {
    let mut rs = ReplicaSet {
        meta: meta(name, &format!("uid-{name}")),
        ..Default::default()
    };
    rs.spec.replicas = replicas;
    rs.spec.template = template("v1");
    rs.spec.revision = 1;
    rs
}

fn deployment(name: &str, replicas: u32, cmd: &str) -> Deployment {
    Deployment {
        meta: meta(name, &format!("uid-{name}")),
        spec: DeploymentSpec {
            replicas,
            selector: Labels::new(),
            template: template(cmd),
            max_surge: 1,
            max_unavailable: 0,
            min_ready_ms: 0,
            revision_history: 2,
            progress_deadline_ms: 0,
        },
        status: Default::default(),
    }
}

fn job(name: &str, completions: u32, parallelism: u32, backoff: u32) -> Job {
    let mut t = template("work");
    t.spec.restart_policy = RestartPolicy::Never;
    Job {
        meta: meta(name, &format!("uid-{name}")),
        spec: JobSpec {
            completions,
            parallelism,
            backoff_limit: backoff,
            active_deadline_ms: None,
            template: t,
        },
        status: Default::default(),
    }
}

fn daemonset(name: &str) -> DaemonSet {
    DaemonSet {
        meta: meta(name, &format!("uid-{name}")),
        spec: DaemonSetSpec {
            selector: Labels::new(),
            template: template("agent"),
            max_unavailable: 1,
        },
        status: Default::default(),
    }
}

// ---------------------------------------------------------------------------------------------
// The simulator

/// An in-memory cluster: applies actions like the store would (uids, revisions, conflicts) and
/// plays the scheduler and the workers (binds round-robin, starts pods).
#[derive(Debug, Clone, Default)]
struct World {
    now: u64,
    rev: u64,
    uid: u64,
    rr: usize,
    nodes: Vec<Node>,
    pods: Vec<Pod>,
    deployments: Vec<Deployment>,
    replicasets: Vec<ReplicaSet>,
    daemonsets: Vec<DaemonSet>,
    jobs: Vec<Job>,
    namespaces: Vec<Namespace>,
    /// Job pods finish after running one step: Failed when this returns true.
    fail: Option<fn(&str) -> bool>,
    events: usize,
    conflicts: usize,
    /// Pods running this command start unready (a readiness probe not passing yet).
    unready_cmd: Option<&'static str>,
    /// Names of deleted pods whose history still exists.
    used_names: HashSet<(String, String)>,
}

trait Stored {
    fn meta(&self) -> &Meta;
    fn meta_mut(&mut self) -> &mut Meta;
}
macro_rules! stored {
    ($($t:ty),*) => {$(
        impl Stored for $t {
            fn meta(&self) -> &Meta { &self.meta }
            fn meta_mut(&mut self) -> &mut Meta { &mut self.meta }
        }
    )*};
}
stored!(Node, Pod, Deployment, ReplicaSet, DaemonSet, Job, Namespace);

impl World {
    fn new() -> World {
        World {
            now: T0,
            rev: 100,
            ..Default::default()
        }
    }

    fn snap(&self) -> Snapshot<'_> {
        Snapshot {
            now_ms: self.now,
            nodes: &self.nodes,
            pods: &self.pods,
            deployments: &self.deployments,
            replicasets: &self.replicasets,
            daemonsets: &self.daemonsets,
            jobs: &self.jobs,
            namespaces: &self.namespaces,
            seed: 7,
            used_names: &self.used_names,
        }
    }

    fn reconcile(&self) -> Vec<Action> {
        reconcile(&self.snap(), &Timings::default())
    }

    fn create<T: Stored>(list: &mut Vec<T>, mut o: T, rev: u64, uid: u64, now: u64) -> bool {
        let m = o.meta();
        if list
            .iter()
            .any(|x| x.meta().name == m.name && x.meta().namespace == m.namespace)
        {
            return false;
        }
        let m = o.meta_mut();
        assert!(
            m.uid.is_empty() && m.revision == 0,
            "create with uid/revision"
        );
        m.uid = format!("uid-{uid}");
        m.revision = rev;
        m.created_ms = now;
        list.push(o);
        true
    }

    fn update<T: Stored>(list: &mut [T], mut o: T, rev: u64) -> bool {
        let m = o.meta();
        let Some(slot) = list
            .iter_mut()
            .find(|x| x.meta().name == m.name && x.meta().namespace == m.namespace)
        else {
            return false;
        };
        if slot.meta().revision != m.revision || slot.meta().uid != m.uid {
            return false;
        }
        o.meta_mut().revision = rev;
        *slot = o;
        true
    }

    fn delete<T: Stored>(list: &mut Vec<T>, ns: &str, name: &str, revision: u64) -> bool {
        let before = list.len();
        list.retain(|x| {
            !(x.meta().name == name && x.meta().namespace == ns && x.meta().revision == revision)
        });
        before != list.len()
    }

    fn apply(&mut self, actions: &[Action]) {
        for a in actions {
            self.rev += 1;
            self.uid += 1;
            let (rev, uid, now) = (self.rev, self.uid, self.now);
            let ok = match a.clone() {
                Action::Create(o) => match o {
                    Object::Pod(p) => Self::create(&mut self.pods, p, rev, uid, now),
                    Object::ReplicaSet(r) => Self::create(&mut self.replicasets, r, rev, uid, now),
                    o => panic!("unexpected create {o:?}"),
                },
                Action::Update(o) => match o {
                    Object::Node(x) => Self::update(&mut self.nodes, x, rev),
                    Object::Pod(x) => Self::update(&mut self.pods, x, rev),
                    Object::Deployment(x) => Self::update(&mut self.deployments, x, rev),
                    Object::ReplicaSet(x) => Self::update(&mut self.replicasets, x, rev),
                    Object::DaemonSet(x) => Self::update(&mut self.daemonsets, x, rev),
                    Object::Job(x) => Self::update(&mut self.jobs, x, rev),
                    o => panic!("unexpected update {o:?}"),
                },
                Action::Delete {
                    kind,
                    namespace,
                    name,
                    revision,
                } => match kind {
                    Kind::Pod => Self::delete(&mut self.pods, &namespace, &name, revision),
                    Kind::ReplicaSet => {
                        Self::delete(&mut self.replicasets, &namespace, &name, revision)
                    }
                    k => panic!("unexpected delete of {k:?}"),
                },
                Action::Event { .. } => {
                    self.events += 1;
                    true
                }
            };
            if !ok {
                self.conflicts += 1;
            }
        }
    }

    /// The scheduler and the workers: bind unbound pods round-robin to Ready nodes; start bound
    /// Pending pods (available after `min_ready_ms` ≤ one step); finish running job pods.
    fn advance(&mut self) {
        let ready: Vec<String> = self
            .nodes
            .iter()
            .filter(|n| n.status.is_ready() && !n.spec.unschedulable)
            .map(|n| n.meta.name.clone())
            .collect();
        let job_uids: Vec<String> = self.jobs.iter().map(|j| j.meta.uid.clone()).collect();
        for p in &mut self.pods {
            let is_job = p.meta.owners.iter().any(|o| job_uids.contains(&o.uid));
            if p.spec.node_name.is_none() && p.status.phase == PodPhase::Pending {
                if ready.is_empty() {
                    continue;
                }
                p.spec.node_name = Some(ready[self.rr % ready.len()].clone());
                self.rr += 1;
                self.rev += 1;
                p.meta.revision = self.rev;
                continue;
            }
            let on_ready = p.spec.node_name.as_ref().is_some_and(|n| ready.contains(n));
            if !on_ready {
                continue;
            }
            if p.status.phase == PodPhase::Pending {
                p.status = running(self.now);
                if let Some(cmd) = self.unready_cmd
                    && p.spec.processes[0].command[0] == cmd
                {
                    p.status.processes[0].ready = false;
                }
                self.rev += 1;
                p.meta.revision = self.rev;
            } else if p.status.phase == PodPhase::Running && is_job {
                let failed = self.fail.is_some_and(|f| f(&p.meta.name));
                p.status.phase = if failed {
                    PodPhase::Failed
                } else {
                    PodPhase::Succeeded
                };
                p.status.processes[0].state = ProcessState::Terminated {
                    reason: if failed {
                        ExitReason::Error(1)
                    } else {
                        ExitReason::Completed
                    },
                    finished_ms: self.now,
                };
                self.rev += 1;
                p.meta.revision = self.rev;
            }
        }
    }

    /// One pass: time moves, reconcile, apply, the cluster reacts. Returns the actions.
    fn step(&mut self) -> Vec<Action> {
        self.now += STEP;
        let actions = self.reconcile();
        assert_eq!(actions, self.reconcile(), "reconcile is not deterministic");
        self.apply(&actions);
        self.advance();
        actions
    }

    /// Steps until a pass returns no action (and the cluster does not move); panics after `k`.
    fn converge(&mut self, k: usize) -> usize {
        for i in 0..k {
            let before = (self.pods.clone(), self.rev);
            if self.step().is_empty() && before.1 == self.rev && before.0 == self.pods {
                return i;
            }
        }
        panic!("no fixed point after {k} steps: {:#?}", self.reconcile());
    }

    fn active_pods_of(&self, owner_uid: &str) -> Vec<&Pod> {
        self.pods
            .iter()
            .filter(|p| !is_terminal(p) && p.meta.owners.iter().any(|o| o.uid == owner_uid))
            .collect()
    }

    fn deployment_pods(&self, d: &str) -> Vec<&Pod> {
        let uid = &self
            .deployments
            .iter()
            .find(|x| x.meta.name == d)
            .unwrap()
            .meta
            .uid;
        self.replicasets
            .iter()
            .filter(|r| r.meta.owners.iter().any(|o| &o.uid == uid))
            .flat_map(|r| self.active_pods_of(&r.meta.uid))
            .collect()
    }
}

fn creates(actions: &[Action]) -> Vec<&Object> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Create(o) => Some(o),
            _ => None,
        })
        .collect()
}

fn deletes(actions: &[Action]) -> Vec<(Kind, &str)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Delete { kind, name, .. } => Some((*kind, name.as_str())),
            _ => None,
        })
        .collect()
}

fn updates(actions: &[Action]) -> Vec<&Object> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Update(o) => Some(o),
            _ => None,
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Helpers

#[test]
fn availability() {
    let mut p = pod("a", (Kind::ReplicaSet, "rs", "u"), Some("n1"));
    p.status = running(1000);
    assert!(pod_available(&p, 0, 1000));
    assert!(!pod_available(&p, 500, 1499));
    assert!(pod_available(&p, 500, 1500));
    p.status.processes[0].state = ProcessState::Waiting;
    assert!(!pod_available(&p, 0, 5000));
    p.status = phase(PodPhase::Pending);
    assert!(!pod_available(&p, 0, 5000));
    // Running but not passing its readiness probe: not available, however long it runs.
    p.status = running(1000);
    p.status.processes[0].ready = false;
    assert!(!pod_available(&p, 0, 100_000));
    assert_eq!(available_at(&p, 0), None);
    // Ready since its last status change (after the start): min_ready counts from there.
    p.status.processes[0].ready = true;
    p.status.updated_ms = 3000;
    assert!(!pod_available(&p, 500, 3499));
    assert!(pod_available(&p, 500, 3500));
    assert_eq!(available_at(&p, 500), Some(3500));
}

#[test]
fn deployment_rollout_waits_for_readiness() {
    let mut w = dep_world(2);
    w.converge(10);
    w.unready_cmd = Some("v2");
    w.deployments[0].spec.template = template("v2");
    // However long it runs, an unready new pod never counts: the old pods all stay.
    for _ in 0..20 {
        w.step();
        let pods = w.deployment_pods("web");
        let old_available = pods
            .iter()
            .filter(|p| p.spec.processes[0].command[0] == "v1" && pod_available(p, 0, w.now))
            .count();
        assert_eq!(
            old_available, 2,
            "an old pod went before a new one was ready"
        );
        assert!(
            pods.iter()
                .filter(|p| p.spec.processes[0].command[0] == "v2")
                .count()
                <= 1,
            "max_surge 1"
        );
    }
    let d = &w.deployments[0];
    assert_eq!(d.status.available, 2, "{:?}", d.status);
    assert_ne!(d.status.message, "complete");
    // The readiness probe passes: the rollout goes through.
    w.unready_cmd = None;
    let now = w.now;
    for p in &mut w.pods {
        if p.status.phase == PodPhase::Running && !p.status.processes[0].ready {
            p.status.processes[0].ready = true;
            p.status.updated_ms = now;
            w.rev += 1;
            p.meta.revision = w.rev;
        }
    }
    w.converge(30);
    let pods = w.deployment_pods("web");
    assert_eq!(pods.len(), 2);
    assert!(pods.iter().all(|p| p.spec.processes[0].command[0] == "v2"));
    assert_eq!(w.deployments[0].status.message, "complete");
}

#[test]
fn deployment_rollout_stalls_past_its_progress_deadline_and_recovers() {
    let mut w = dep_world(2);
    w.deployments[0].spec.progress_deadline_ms = 5_000;
    w.converge(10);
    let s = &w.deployments[0].status;
    assert!(!s.stalled && s.observed_generation == s.generation, "{s:?}");
    assert_eq!(s.updated_available, 2);
    // A new generation whose pods never get ready.
    w.unready_cmd = Some("v2");
    w.deployments[0].spec.template = template("v2");
    w.deployments[0].status.generation += 1;
    w.step();
    let s = w.deployments[0].status.clone();
    assert_eq!(s.observed_generation, s.generation, "observed at once");
    assert!(!s.stalled);
    // The wake-up for the deadline is planned; past it, the rollout is stalled.
    let at = deployment::stall_at(&w.deployments[0]).expect("a deadline");
    assert_eq!(at, s.last_progress_ms + 5_000);
    assert!(next_deadline(&w.snap(), &Timings::DEFAULT).is_some_and(|t| t <= at + 1));
    for _ in 0..7 {
        w.step();
    }
    let s = &w.deployments[0].status;
    assert!(s.stalled, "{s:?}");
    assert!(
        s.message.starts_with("stalled: no progress for 5s"),
        "{s:?}"
    );
    assert_eq!(deployment::stall_at(&w.deployments[0]), None);
    // It gets ready: progress again, then complete.
    w.unready_cmd = None;
    let now = w.now;
    for p in &mut w.pods {
        if p.status.phase == PodPhase::Running && !p.status.processes[0].ready {
            p.status.processes[0].ready = true;
            p.status.updated_ms = now;
            w.rev += 1;
            p.meta.revision = w.rev;
        }
    }
    w.converge(30);
    let s = &w.deployments[0].status;
    assert!(!s.stalled && s.message == "complete", "{s:?}");
    assert_eq!((s.updated, s.updated_available, s.replicas), (2, 2, 2));
}

#[test]
fn daemonset_and_replicaset_count_only_ready_pods() {
    let mut w = rs_world(2, 0);
    w.unready_cmd = Some("v1");
    w.converge(10);
    assert_eq!(w.replicasets[0].status.replicas, 2);
    assert_eq!(w.replicasets[0].status.available, 0);

    // A daemon set's rolling update (max_unavailable 1) stalls on an unready new pod.
    let mut w = World::new();
    w.nodes = (0..3).map(|i| node(&format!("n{i}"), true)).collect();
    w.daemonsets.push(daemonset("agent"));
    w.converge(10);
    w.unready_cmd = Some("agent-v2");
    w.daemonsets[0].spec.template = template("agent-v2");
    for _ in 0..15 {
        w.step();
    }
    let hash = template_hash(&template("agent-v2"));
    let uid = w.daemonsets[0].meta.uid.clone();
    let updated = w
        .active_pods_of(&uid)
        .iter()
        .filter(|p| p.meta.labels.get(LABEL_TEMPLATE_HASH) == Some(&hash))
        .count();
    assert_eq!(updated, 1, "the update went past an unready pod");
}

#[test]
fn template_hash_is_stable_and_sensitive() {
    let a = template_hash(&template("v1"));
    assert_eq!(a.len(), 8);
    assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
    assert_eq!(a, template_hash(&template("v1")));
    assert_ne!(a, template_hash(&template("v2")));
    // Unchanged by the restart stamp's arrival: the hash of the encoding of PodTemplate as it
    // was (labels, spec), so no replica set is renamed (and no pod replaced) by an upgrade.
    let t = template("v1");
    let now = postcard::to_allocvec(&t).unwrap();
    // Today's encoding is the old one and a last byte 0 for `restarted_at_ms` (`None`).
    let (old, last) = now.split_at(now.len() - 1);
    assert_eq!(last, [0]);
    let h = fnv1a(old, FNV_OFFSET);
    assert_eq!(a, format!("{:08x}", (h ^ (h >> 32)) as u32));
    // A restart is a new template.
    let mut r = template("v1");
    r.restarted_at_ms = Some(1_700_000_000_000);
    assert_ne!(template_hash(&r), a);
    r.restarted_at_ms = Some(0);
    assert_eq!(template_hash(&r), a, "Some(0) is never restarted");
}

#[test]
fn pod_names_are_random_and_free_of_live_and_past_names() {
    let pods = vec![pod("web-abcde", (Kind::ReplicaSet, "web", "u1"), None)];
    let none = HashSet::new();
    let snap = Snapshot {
        now_ms: 0,
        nodes: &[],
        pods: &pods,
        deployments: &[],
        replicasets: &[],
        daemonsets: &[],
        jobs: &[],
        namespaces: &[],
        seed: 1,
        used_names: &none,
    };
    let mut ctx = Ctx::new(&snap);
    let a = ctx.pod_name("default", "web", "u1");
    let b = ctx.pod_name("default", "web", "u1");
    assert_ne!(a, b);
    assert!(a.starts_with("web-") && a.len() == 9, "{a}");
    assert!(a[4..].bytes().all(|c| SUFFIX_CHARS.contains(&c)));
    // Same seed, same names (tests pin the seed); another pass has another seed.
    assert_eq!(Ctx::new(&snap).pod_name("default", "web", "u1"), a);
    let other = Snapshot { seed: 2, ..snap };
    assert_ne!(Ctx::new(&other).pod_name("default", "web", "u1"), a);
    // A name a live pod has is skipped.
    let first = suffixed("web", 1, "u1", 0);
    assert_eq!(first, a);
    let taken = vec![pod(&first, (Kind::ReplicaSet, "web", "u1"), None)];
    let snap2 = Snapshot {
        pods: &taken,
        ..snap
    };
    assert_ne!(Ctx::new(&snap2).pod_name("default", "web", "u1"), first);
    // So is the name of a deleted pod whose events still exist: delete and re-create never
    // brings a name back.
    let used: HashSet<(String, String)> = [("default".to_string(), first.clone())].into();
    let snap3 = Snapshot {
        used_names: &used,
        ..snap
    };
    let n = Ctx::new(&snap3).pod_name("default", "web", "u1");
    assert_ne!(n, first);
    // Only in its namespace.
    assert_eq!(Ctx::new(&snap3).pod_name("other", "web", "u1"), first);
    // Many passes over the same owner: no repeats.
    let mut seen = HashSet::new();
    for seed in 0..300 {
        let s = Snapshot { seed, ..snap };
        assert!(seen.insert(Ctx::new(&s).pod_name("default", "web", "u1")));
    }
}

// ---------------------------------------------------------------------------------------------
// ReplicaSet

fn rs_world(replicas: u32, pods: usize) -> World {
    let mut w = World::new();
    w.nodes = vec![node("n1", true), node("n2", true)];
    w.replicasets.push(replicaset("web", replicas));
    for i in 0..pods {
        let mut p = pod(
            &format!("web-{i}"),
            (Kind::ReplicaSet, "web", "uid-web"),
            Some("n1"),
        );
        p.meta.created_ms = T0 + i as u64;
        w.pods.push(p);
    }
    w.replicasets[0].status.replicas = pods as u32;
    w.replicasets[0].status.available = pods as u32;
    w
}

#[test]
fn replicaset_creates_missing_pods() {
    let w = rs_world(3, 1);
    let a = replicaset::reconcile(&w.snap(), &w.replicasets[0]);
    let c = creates(&a);
    assert_eq!(c.len(), 2);
    for o in c {
        let Object::Pod(p) = o else { panic!() };
        assert!(p.meta.name.starts_with("web-"));
        assert_eq!(p.meta.namespace, "default");
        assert_eq!(p.meta.labels, labels(&[("app", "web")]));
        assert_eq!(p.meta.owners.len(), 1);
        assert_eq!(p.meta.owners[0].uid, "uid-web");
        assert_eq!(p.meta.owners[0].kind, Kind::ReplicaSet);
        assert!(p.meta.uid.is_empty() && p.meta.revision == 0 && p.meta.created_ms == 0);
        assert_eq!(p.spec.node_name, None);
    }
    assert!(updates(&a).is_empty(), "status unchanged: {a:?}");
}

#[test]
fn replicaset_idle_is_silent() {
    let w = rs_world(3, 3);
    assert_eq!(replicaset::reconcile(&w.snap(), &w.replicasets[0]), vec![]);
    assert_eq!(w.reconcile(), vec![]);
}

#[test]
fn replicaset_deletes_surplus_unscheduled_then_pending_then_newest() {
    let mut w = rs_world(2, 5);
    w.pods[1].spec.node_name = None;
    w.pods[1].status = phase(PodPhase::Pending);
    w.pods[3].status = phase(PodPhase::Pending);
    w.replicasets[0].status.available = 3;
    let a = replicaset::reconcile(&w.snap(), &w.replicasets[0]);
    assert_eq!(
        deletes(&a),
        vec![
            (Kind::Pod, "web-1"),
            (Kind::Pod, "web-3"),
            (Kind::Pod, "web-4")
        ]
    );
    assert!(creates(&a).is_empty());
}

#[test]
fn replicaset_replaces_terminal_pods() {
    let mut w = rs_world(2, 2);
    // A pod that ran for longer than the backoff's reset time: replaced at once.
    w.now = T0 + bramble_wire::objects::RESTART_BACKOFF_RESET_MS + 10;
    w.pods[0].status = phase(PodPhase::Failed);
    w.pods[0].status.updated_ms = w.now - 1;
    let a = replicaset::reconcile(&w.snap(), &w.replicasets[0]);
    assert_eq!(deletes(&a), vec![(Kind::Pod, "web-0")]);
    assert_eq!(creates(&a).len(), 1);
    // Status: one active, one available.
    let u = updates(&a);
    let Object::ReplicaSet(rs) = u[0] else {
        panic!()
    };
    assert_eq!((rs.status.replicas, rs.status.available), (1, 1));
    assert_eq!(rs.meta.revision, 1);
}

#[test]
fn replicaset_backs_off_replacing_pods_that_fail_fast() {
    let mut w = rs_world(1, 1);
    w.pods[0].status = phase(PodPhase::Failed);
    w.pods[0].status.message = "mount /data: no such directory".into();
    w.pods[0].status.updated_ms = T0 + 100;
    w.now = T0 + 200;
    // First sight: the failed pod stays, nothing is created, the wait is in the status.
    let a = replicaset::reconcile(&w.snap(), &w.replicasets[0]);
    assert!(deletes(&a).is_empty() && creates(&a).is_empty(), "{a:?}");
    let Object::ReplicaSet(rs) = updates(&a)[0].clone() else {
        panic!()
    };
    assert_eq!(rs.status.backoff.failures, 1);
    assert_eq!(rs.status.backoff.until_ms, w.now + 500);
    assert!(
        a.iter()
            .any(|x| matches!(x, Action::Event { reason, message, .. }
        if reason == "BackOff" && message.contains("mount /data")))
    );
    w.replicasets[0] = rs;
    // A fixed point while waiting, and the loop is told when to come back.
    let a = replicaset::reconcile(&w.snap(), &w.replicasets[0]);
    assert!(a.is_empty(), "{a:?}");
    let timings = crate::controllers::Timings::default();
    assert_eq!(
        crate::controllers::next_deadline(&w.snap(), &timings),
        Some(T0 + 700)
    );
    // At the deadline: deleted and replaced in one pass, the count kept.
    w.now = T0 + 700;
    let a = replicaset::reconcile(&w.snap(), &w.replicasets[0]);
    assert_eq!(deletes(&a), vec![(Kind::Pod, "web-0")]);
    assert_eq!(creates(&a).len(), 1);
    let Object::ReplicaSet(rs) = updates(&a)[0].clone() else {
        panic!()
    };
    assert_eq!(
        (rs.status.backoff.failures, rs.status.backoff.until_ms),
        (1, 0)
    );
}

#[test]
fn job_backs_off_after_a_failed_pod() {
    let mut w = World::new();
    w.nodes = vec![node("n1", true)];
    let mut j = bramble_wire::objects::Job {
        meta: meta("batch", "uid-batch"),
        ..Default::default()
    };
    j.spec.completions = 1;
    j.spec.parallelism = 1;
    j.spec.backoff_limit = 6;
    j.spec.template = template("v1");
    j.status.start_ms = T0;
    w.jobs.push(j);
    let mut p = pod("batch-0", (Kind::Job, "batch", "uid-batch"), Some("n1"));
    p.status = phase(PodPhase::Failed);
    p.status.updated_ms = T0 + 100;
    w.pods.push(p);
    w.now = T0 + 200;
    let a = job::reconcile(&w.snap(), &w.jobs[0]);
    assert!(creates(&a).is_empty(), "{a:?}");
    let timings = crate::controllers::Timings::default();
    assert_eq!(
        crate::controllers::next_deadline(&w.snap(), &timings),
        Some(T0 + 600)
    );
    w.now = T0 + 600;
    let a = job::reconcile(&w.snap(), &w.jobs[0]);
    assert_eq!(creates(&a).len(), 1);
}

#[test]
fn replicaset_counts_pods_on_notready_nodes() {
    let mut w = rs_world(2, 2);
    w.nodes[0] = node("n1", false);
    w.pods[0].status = phase(PodPhase::Unknown);
    let a = replicaset::reconcile(&w.snap(), &w.replicasets[0]);
    assert!(creates(&a).is_empty() && deletes(&a).is_empty(), "{a:?}");
}

#[test]
fn replicaset_converges() {
    let mut w = rs_world(5, 0);
    w.converge(10);
    assert_eq!(w.active_pods_of("uid-web").len(), 5);
    assert_eq!(w.replicasets[0].status.replicas, 5);
    assert_eq!(w.replicasets[0].status.available, 5);
    w.replicasets[0].spec.replicas = 2;
    w.converge(10);
    assert_eq!(w.active_pods_of("uid-web").len(), 2);
}

// ---------------------------------------------------------------------------------------------
// Deployment

fn dep_world(replicas: u32) -> World {
    let mut w = World::new();
    w.nodes = (0..3).map(|i| node(&format!("n{i}"), true)).collect();
    w.deployments.push(deployment("web", replicas, "v1"));
    w
}

#[test]
fn deployment_creates_its_replicaset() {
    let w = dep_world(3);
    let a = deployment::reconcile(&w.snap(), &w.deployments[0]);
    let c = creates(&a);
    assert_eq!(c.len(), 1);
    let Object::ReplicaSet(rs) = c[0] else {
        panic!()
    };
    let hash = template_hash(&template("v1"));
    assert_eq!(rs.meta.name, format!("web-{hash}"));
    assert_eq!(rs.spec.replicas, 3);
    assert_eq!(rs.spec.revision, 1);
    assert_eq!(
        rs.spec.template.labels.get(LABEL_TEMPLATE_HASH),
        Some(&hash)
    );
    assert_eq!(
        rs.spec.selector,
        labels(&[("app", "web"), (LABEL_TEMPLATE_HASH, &hash)])
    );
    assert_eq!(rs.meta.owners[0].uid, "uid-web");
    assert!(
        a.iter()
            .any(|x| matches!(x, Action::Event { reason, .. } if reason == "ScalingReplicaSet"))
    );
    let Object::Deployment(d) = updates(&a)[0] else {
        panic!()
    };
    assert_eq!(d.status.revision, 1);
    assert_eq!(d.status.message, "rolling out: 0/3 updated");
}

#[test]
fn deployment_converges_and_goes_quiet() {
    let mut w = dep_world(4);
    w.converge(10);
    let d = &w.deployments[0];
    assert_eq!(d.status.replicas, 4);
    assert_eq!(d.status.updated, 4);
    assert_eq!(d.status.available, 4);
    assert_eq!(d.status.message, "complete");
    assert_eq!(w.replicasets.len(), 1);
    assert!(w.reconcile().is_empty());
}

#[test]
fn deployment_rolling_update_first_step() {
    let mut w = dep_world(4);
    w.converge(10);
    w.deployments[0].spec.template = template("v2");
    w.now += STEP;
    let a = w.reconcile();
    // max_surge 1, max_unavailable 0: one new pod, no old pod deleted.
    let rs_created: Vec<_> = creates(&a)
        .into_iter()
        .filter_map(|o| match o {
            Object::ReplicaSet(r) => Some(r),
            _ => None,
        })
        .collect();
    assert_eq!(rs_created.len(), 1);
    assert_eq!(rs_created[0].spec.replicas, 1);
    assert_eq!(rs_created[0].spec.revision, 2);
    assert!(deletes(&a).is_empty(), "{a:?}");
}

#[test]
fn deployment_scaling_resizes_current_replicaset() {
    let mut w = dep_world(2);
    w.converge(10);
    w.deployments[0].spec.replicas = 5;
    w.now += STEP;
    let a = w.reconcile();
    // One Update of the RS (spec + status folded), 3 pods created in the same pass.
    let rs_updates: Vec<_> = updates(&a)
        .into_iter()
        .filter(|o| o.kind() == Kind::ReplicaSet)
        .collect();
    assert_eq!(rs_updates.len(), 1);
    let Object::ReplicaSet(rs) = rs_updates[0] else {
        panic!()
    };
    assert_eq!(rs.spec.replicas, 5);
    assert_eq!(creates(&a).len(), 3);
    w.converge(10);
    assert_eq!(w.deployment_pods("web").len(), 5);
    assert_eq!(w.replicasets.len(), 1);
}

#[test]
fn deployment_undo_reuses_old_replicaset_and_bumps_revision() {
    let mut w = dep_world(2);
    w.converge(10);
    w.deployments[0].spec.template = template("v2");
    w.converge(20);
    assert_eq!(w.replicasets.len(), 2);
    w.deployments[0].spec.template = template("v1");
    w.converge(20);
    assert_eq!(w.replicasets.len(), 2);
    let v1 = format!("web-{}", template_hash(&template("v1")));
    let rs = w.replicasets.iter().find(|r| r.meta.name == v1).unwrap();
    assert_eq!(rs.spec.revision, 3);
    assert_eq!(rs.spec.replicas, 2);
    assert_eq!(w.deployments[0].status.revision, 3);
}

#[test]
fn deployment_keeps_revision_history() {
    let mut w = dep_world(1);
    w.deployments[0].spec.revision_history = 1;
    w.converge(10);
    for v in ["v2", "v3", "v4"] {
        w.deployments[0].spec.template = template(v);
        w.converge(20);
    }
    // Current + one old.
    assert_eq!(w.replicasets.len(), 2);
    let revs: Vec<u64> = w.replicasets.iter().map(|r| r.spec.revision).collect();
    assert!(revs.contains(&4) && revs.contains(&3), "{revs:?}");
    // Pods of deleted replica sets are collected.
    assert_eq!(w.pods.len(), 1);
}

// ---------------------------------------------------------------------------------------------
// DaemonSet

#[test]
fn daemonset_places_one_bound_pod_per_eligible_node() {
    let mut w = World::new();
    w.nodes = vec![
        node("a", true),
        node("b", false),
        node("c", true),
        node("d", true),
    ];
    w.nodes[2].spec.unschedulable = true;
    w.nodes[3].spec.taints.push(Taint {
        key: "dedicated".into(),
        value: "x".into(),
        effect: TaintEffect::NoSchedule,
    });
    w.daemonsets.push(daemonset("agent"));
    let a = daemonset::reconcile(&w.snap(), &w.daemonsets[0]);
    let nodes: Vec<_> = creates(&a)
        .into_iter()
        .map(|o| match o {
            Object::Pod(p) => p.spec.node_name.clone().unwrap(),
            _ => panic!(),
        })
        .collect();
    assert_eq!(nodes, vec!["a".to_string()]);
    // Tolerating the taint adds node d.
    w.daemonsets[0]
        .spec
        .template
        .spec
        .tolerations
        .push(Toleration {
            key: "dedicated".into(),
            value: None,
            effect: None,
        });
    let a = daemonset::reconcile(&w.snap(), &w.daemonsets[0]);
    assert_eq!(creates(&a).len(), 2);
}

#[test]
fn daemonset_backs_off_replacing_a_pod_that_fails_fast() {
    let mut w = World::new();
    w.nodes = vec![node("a", true)];
    w.daemonsets.push(daemonset("agent"));
    let mut p = pod(
        "agent-0",
        (Kind::DaemonSet, "agent", "uid-agent"),
        Some("a"),
    );
    p.meta.created_ms = T0;
    p.status = phase(PodPhase::Failed);
    p.status.updated_ms = T0 + 10;
    w.pods.push(p);
    w.now = T0 + 20;
    let a = daemonset::reconcile(&w.snap(), &w.daemonsets[0]);
    assert!(deletes(&a).is_empty() && creates(&a).is_empty(), "{a:?}");
    let Object::DaemonSet(ds) = updates(&a)[0].clone() else {
        panic!()
    };
    assert_eq!(ds.status.backoff.until_ms, T0 + 520);
    w.daemonsets[0] = ds;
    assert!(daemonset::reconcile(&w.snap(), &w.daemonsets[0]).is_empty());
    w.now = T0 + 520;
    let a = daemonset::reconcile(&w.snap(), &w.daemonsets[0]);
    assert_eq!(deletes(&a), vec![(Kind::Pod, "agent-0")]);
    assert_eq!(creates(&a).len(), 1);
}

#[test]
fn daemonset_selector_and_arch() {
    let mut w = World::new();
    w.nodes = vec![node("a", true), node("b", true)];
    w.nodes[1].meta.labels.insert("role".into(), "edge".into());
    w.daemonsets.push(daemonset("agent"));
    w.daemonsets[0]
        .spec
        .template
        .spec
        .node_selector
        .insert("role".into(), "edge".into());
    w.converge(10);
    let pods = w.active_pods_of(&w.daemonsets[0].meta.uid.clone()).len();
    assert_eq!(pods, 1);
    assert_eq!(w.pods[0].spec.node_name.as_deref(), Some("b"));
    assert_eq!(w.daemonsets[0].status.desired, 1);
    // Label removed → pod deleted.
    w.nodes[1].meta.labels.clear();
    w.converge(10);
    assert!(w.pods.is_empty());
    // Arch selects nothing.
    w.daemonsets[0].spec.template.spec.node_selector.clear();
    w.daemonsets[0].spec.template.spec.arch = Some(Arch::Armv7);
    w.converge(10);
    assert!(w.pods.is_empty());
    w.daemonsets[0].spec.template.spec.arch = Some(Arch::Aarch64);
    w.converge(10);
    assert_eq!(w.pods.len(), 2);
    // Hostname label.
    w.daemonsets[0]
        .spec
        .template
        .spec
        .node_selector
        .insert(crate::sched::LABEL_HOSTNAME.into(), "a".into());
    w.converge(10);
    assert_eq!(w.pods.len(), 1);
    assert_eq!(w.pods[0].spec.node_name.as_deref(), Some("a"));
}

#[test]
fn daemonset_keeps_pods_on_notready_nodes_and_drops_deleted_nodes() {
    let mut w = World::new();
    w.nodes = vec![node("a", true), node("b", true)];
    w.daemonsets.push(daemonset("agent"));
    w.converge(10);
    assert_eq!(w.pods.len(), 2);
    w.nodes[0] = node("a", false);
    w.now += 10 * 60_000;
    w.converge(10);
    assert_eq!(w.pods.len(), 2, "no churn on a NotReady node");
    w.nodes.remove(0);
    w.converge(10);
    assert_eq!(w.pods.len(), 1);
    assert_eq!(w.daemonsets[0].status.desired, 1);
}

#[test]
fn daemonset_rolling_update() {
    let mut w = World::new();
    w.nodes = (0..5).map(|i| node(&format!("n{i}"), true)).collect();
    w.daemonsets.push(daemonset("agent"));
    w.converge(10);
    w.daemonsets[0].spec.template = template("agent-v2");
    let uid = w.daemonsets[0].meta.uid.clone();
    let mut steps = 0;
    loop {
        let a = w.step();
        // max_unavailable 1: at most one node without an available pod.
        let avail = w
            .active_pods_of(&uid)
            .iter()
            .filter(|p| pod_available(p, 0, w.now))
            .count();
        assert!(avail >= 4, "step {steps}: {avail} available");
        steps += 1;
        if a.is_empty() {
            break;
        }
        assert!(steps < 30);
    }
    let hash = template_hash(&template("agent-v2"));
    assert!(
        w.active_pods_of(&uid)
            .iter()
            .all(|p| p.meta.labels.get(LABEL_TEMPLATE_HASH) == Some(&hash))
    );
    assert_eq!(w.daemonsets[0].status.updated, 5);
}

// ---------------------------------------------------------------------------------------------
// Job

#[test]
fn job_starts_with_parallelism() {
    let w = {
        let mut w = World::new();
        w.nodes = vec![node("a", true)];
        w.jobs.push(job("batch", 5, 2, 1));
        w
    };
    let a = job::reconcile(&w.snap(), &w.jobs[0]);
    assert_eq!(creates(&a).len(), 2);
    let Object::Job(j) = updates(&a)[0] else {
        panic!()
    };
    assert_eq!(j.status.start_ms, w.now);
    let Object::Pod(p) = creates(&a)[0] else {
        panic!()
    };
    assert_eq!(p.spec.restart_policy, RestartPolicy::Never);
}

#[test]
fn job_completes_and_keeps_pods() {
    let mut w = World::new();
    w.nodes = vec![node("a", true)];
    w.jobs.push(job("batch", 3, 2, 0));
    w.converge(20);
    let j = &w.jobs[0];
    assert_eq!(j.status.phase, JobPhase::Complete);
    assert_eq!(j.status.succeeded, 3);
    assert!(j.status.completion_ms.is_some());
    assert_eq!(w.pods.len(), 3, "finished pods are kept");
}

#[test]
fn job_fails_after_backoff_limit_and_deletes_active() {
    let mut w = World::new();
    w.nodes = vec![node("a", true)];
    let mut j = job("batch", 4, 2, 1);
    j.status.start_ms = T0;
    w.jobs.push(j);
    for i in 0..2 {
        let mut p = pod(
            &format!("f{i}"),
            (Kind::Job, "batch", "uid-batch"),
            Some("a"),
        );
        p.status = phase(PodPhase::Failed);
        w.pods.push(p);
    }
    w.pods
        .push(pod("r", (Kind::Job, "batch", "uid-batch"), Some("a")));
    let a = job::reconcile(&w.snap(), &w.jobs[0]);
    assert_eq!(deletes(&a), vec![(Kind::Pod, "r")]);
    assert!(creates(&a).is_empty());
    let Object::Job(j) = updates(&a)[0] else {
        panic!()
    };
    assert_eq!(j.status.phase, JobPhase::Failed);
    assert!(
        j.status.message.contains("backoff limit"),
        "{}",
        j.status.message
    );
    w.converge(10);
    assert_eq!(w.pods.len(), 2);
}

#[test]
fn job_deadline() {
    let mut w = World::new();
    w.nodes = vec![node("a", true)];
    let mut j = job("batch", 1, 1, 0);
    j.spec.active_deadline_ms = Some(5_000);
    j.status.start_ms = T0 - 5_000;
    w.jobs.push(j);
    w.pods
        .push(pod("r", (Kind::Job, "batch", "uid-batch"), Some("a")));
    let a = job::reconcile(&w.snap(), &w.jobs[0]);
    assert_eq!(deletes(&a), vec![(Kind::Pod, "r")]);
    let Object::Job(j) = updates(&a)[0] else {
        panic!()
    };
    assert_eq!(j.status.phase, JobPhase::Failed);
    assert_eq!(j.status.message, "deadline exceeded");
    assert_eq!(
        next_deadline(
            &Snapshot {
                jobs: &[job("x", 1, 1, 0)],
                ..w.snap()
            },
            &Timings::default()
        ),
        None
    );
}

// ---------------------------------------------------------------------------------------------
// Node lifecycle

#[test]
fn node_taint_added_once_and_removed() {
    let mut n = node("a", true);
    n.status.conditions[0].status = false;
    let nodes = vec![n];
    let w = World::new();
    let snap = Snapshot {
        nodes: &nodes,
        ..w.snap()
    };
    let a = node::reconcile(&snap, &Timings::default());
    let Object::Node(n) = updates(&a)[0] else {
        panic!()
    };
    assert_eq!(n.spec.taints, vec![not_ready_taint()]);
    // Tainted already: nothing.
    let nodes = vec![n.clone()];
    assert!(
        node::reconcile(
            &Snapshot {
                nodes: &nodes,
                ..snap
            },
            &Timings::default()
        )
        .is_empty()
    );
    // Ready again: taint removed.
    let mut back = n.clone();
    back.status.conditions[0].status = true;
    let nodes = vec![back];
    let a = node::reconcile(
        &Snapshot {
            nodes: &nodes,
            ..snap
        },
        &Timings::default(),
    );
    let Object::Node(n) = updates(&a)[0] else {
        panic!()
    };
    assert!(n.spec.taints.is_empty());
}

#[test]
fn node_eviction_after_timeout_only() {
    let mut w = World::new();
    w.nodes = vec![node("a", false), node("b", true)];
    w.nodes[0].status.conditions[0].since_ms = T0;
    w.pods = vec![
        pod("p1", (Kind::ReplicaSet, "rs", "u"), Some("a")),
        pod("p2", (Kind::ReplicaSet, "rs", "u"), Some("b")),
        pod("ds", (Kind::DaemonSet, "ds", "u2"), Some("a")),
    ];
    let mut done = pod("done", (Kind::Job, "j", "u3"), Some("a"));
    done.status = phase(PodPhase::Succeeded);
    w.pods.push(done);
    let t = Timings {
        eviction_timeout_ms: 60_000,
        ..Timings::DEFAULT
    };
    w.now = T0 + 59_999;
    assert!(node::reconcile(&w.snap(), &t).is_empty());
    assert_eq!(next_deadline(&w.snap(), &t), Some(T0 + 60_000));
    w.now = T0 + 60_000;
    let a = node::reconcile(&w.snap(), &t);
    assert_eq!(deletes(&a), vec![(Kind::Pod, "p1")]);
    assert!(a.iter().any(
        |x| matches!(x, Action::Event { reason, name, .. } if reason == "Evicted" && name == "p1")
    ));
}

#[test]
fn evicted_pods_are_replaced_elsewhere() {
    let mut w = World::new();
    w.nodes = (0..3).map(|i| node(&format!("n{i}"), true)).collect();
    w.replicasets.push(replicaset("web", 6));
    w.converge(10);
    let dead = w.nodes[0].meta.name.clone();
    assert!(
        w.pods
            .iter()
            .any(|p| p.spec.node_name.as_ref() == Some(&dead))
    );
    w.nodes[0].status.conditions[0].status = false;
    w.nodes[0].status.conditions[0].since_ms = w.now;
    w.now += 60_000;
    w.converge(10);
    assert_eq!(w.pods.len(), 6);
    assert!(
        w.pods
            .iter()
            .all(|p| p.spec.node_name.as_ref() != Some(&dead))
    );
    assert!(w.nodes[0].spec.taints.contains(&not_ready_taint()));
}

// ---------------------------------------------------------------------------------------------
// gc

#[test]
fn gc_deletes_orphans_only() {
    let mut w = World::new();
    w.replicasets.push(replicaset("web", 1));
    let mut orphan_rs = replicaset("old", 0);
    orphan_rs.meta.owners = vec![OwnerRef {
        kind: Kind::Deployment,
        name: "gone".into(),
        uid: "uid-gone".into(),
    }];
    w.replicasets.push(orphan_rs);
    w.pods = vec![
        pod("kept", (Kind::ReplicaSet, "web", "uid-web"), None),
        pod("orphan", (Kind::ReplicaSet, "x", "uid-x"), None),
    ];
    let mut bare = pod("bare", (Kind::ReplicaSet, "x", "uid-x"), None);
    bare.meta.owners.clear();
    w.pods.push(bare);
    let a = gc::reconcile(&w.snap());
    assert_eq!(
        deletes(&a),
        vec![(Kind::ReplicaSet, "old"), (Kind::Pod, "orphan")]
    );
}

#[test]
fn terminating_namespace_gets_nothing_new() {
    let mut w = rs_world(3, 0);
    w.namespaces.push(Namespace {
        meta: Meta {
            name: "default".into(),
            uid: "ns".into(),
            ..Default::default()
        },
        phase: bramble_wire::objects::NamespacePhase::Terminating,
        ..Default::default()
    });
    assert!(creates(&w.reconcile()).is_empty());
}

// ---------------------------------------------------------------------------------------------
// Properties

fn check_rollout(
    nodes: usize,
    replicas: u32,
    surge: u32,
    unavailable: u32,
    min_ready_ms: u32,
    history: u32,
    rollouts: usize,
) {
    let mut w = World::new();
    w.nodes = (0..nodes).map(|i| node(&format!("n{i}"), true)).collect();
    let mut d = deployment("web", replicas, "v0");
    d.spec.max_surge = surge;
    d.spec.max_unavailable = unavailable;
    d.spec.min_ready_ms = min_ready_ms;
    d.spec.revision_history = history;
    w.deployments.push(d);
    w.converge(40);
    let eff_unavailable = if surge == 0 && unavailable == 0 {
        1
    } else {
        unavailable
    };
    for r in 1..=rollouts {
        let cmd = format!("v{r}");
        w.deployments[0].spec.template = template(&cmd);
        let mut fixed = false;
        for _ in 0..60 {
            let before = w.rev;
            let a = w.step();
            let pods = w.deployment_pods("web");
            let available = pods
                .iter()
                .filter(|p| pod_available(p, min_ready_ms, w.now))
                .count() as u32;
            assert!(
                pods.len() as u32 <= replicas + surge,
                "{} pods > {replicas} + {surge}",
                pods.len()
            );
            assert!(
                available >= replicas.saturating_sub(eff_unavailable),
                "{available} available < {replicas} - {eff_unavailable}"
            );
            if a.is_empty() && w.rev == before {
                fixed = true;
                break;
            }
        }
        assert!(fixed, "rollout {r} did not converge: {:#?}", w.reconcile());
        // At the fixed point: every pod runs the new template; history bounded; quiet.
        let hash = template_hash(&template(&cmd));
        let pods = w.deployment_pods("web");
        assert_eq!(pods.len() as u32, replicas);
        assert!(
            pods.iter()
                .all(|p| p.meta.labels.get(LABEL_TEMPLATE_HASH) == Some(&hash))
        );
        assert!(w.replicasets.len() as u32 <= 1 + history);
        let st = &w.deployments[0].status;
        assert_eq!(
            (st.replicas, st.updated, st.available),
            (replicas, replicas, replicas)
        );
        assert_eq!(st.revision, r as u64 + 1);
        assert!(w.reconcile().is_empty());
    }
    assert_eq!(w.conflicts, 0, "two writes to one object in a pass");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn rolling_updates_respect_surge_and_availability(
        nodes in 1usize..5,
        replicas in 0u32..8,
        surge in 0u32..3,
        unavailable in 0u32..3,
        min_ready in prop::sample::select(vec![0u32, 1000]),
        history in 0u32..3,
        rollouts in 1usize..3,
    ) {
        check_rollout(nodes, replicas, surge, unavailable, min_ready, history, rollouts);
    }

    #[test]
    fn daemonsets_never_double_up(
        ready in prop::collection::vec(any::<bool>(), 1..6),
        edge in prop::collection::vec(any::<bool>(), 6),
        flips in prop::collection::vec((0usize..6, 0u8..4), 0..8),
        selector in any::<bool>(),
    ) {
        let mut w = World::new();
        w.nodes = ready.iter().enumerate().map(|(i, r)| {
            let mut n = node(&format!("n{i}"), *r);
            if edge[i] { n.meta.labels.insert("role".into(), "edge".into()); }
            n
        }).collect();
        let mut ds = daemonset("agent");
        if selector {
            ds.spec.template.spec.node_selector.insert("role".into(), "edge".into());
        }
        w.daemonsets.push(ds);
        let check = |w: &World| {
            let mut per_node: HashMap<&str, usize> = HashMap::new();
            for p in &w.pods {
                if !is_terminal(p) {
                    *per_node.entry(p.spec.node_name.as_deref().unwrap_or("")).or_default() += 1;
                }
            }
            assert!(per_node.values().all(|&c| c <= 1), "{per_node:?}");
            assert!(!per_node.contains_key(""));
        };
        w.converge(20);
        check(&w);
        for (i, what) in flips {
            let Some(n) = w.nodes.get_mut(i) else { continue };
            match what {
                0 => { let r = !n.status.is_ready(); n.status.conditions[0].status = r; }
                1 => { if n.meta.labels.remove("role").is_none() { n.meta.labels.insert("role".into(), "edge".into()); } }
                2 => { w.nodes.remove(i); }
                _ => { w.daemonsets[0].spec.template.spec.processes[0].command = vec![format!("v{}", w.now)]; }
            }
            for _ in 0..3 { w.step(); check(&w); }
        }
        w.converge(30);
        check(&w);
        // At the fixed point every placeable node has a pod, every pod is on a matching node.
        let ds = w.daemonsets[0].clone();
        for n in &w.nodes {
            let has = w.pods.iter().any(|p| p.spec.node_name.as_ref() == Some(&n.meta.name));
            let matching = !selector || n.meta.labels.get("role").is_some_and(|v| v == "edge");
            if n.status.is_ready() && matching { prop_assert!(has, "node {} lacks a pod", n.meta.name); }
            if !matching { prop_assert!(!has); }
        }
        let hash = template_hash(&ds.spec.template);
        for p in &w.pods {
            if w.nodes.iter().any(|n| n.status.is_ready() && Some(&n.meta.name) == p.spec.node_name.as_ref()) {
                prop_assert_eq!(p.meta.labels.get(LABEL_TEMPLATE_HASH), Some(&hash));
            }
        }
    }

    #[test]
    fn jobs_respect_parallelism_and_finish(
        completions in 1u32..7,
        parallelism in 1u32..4,
        backoff in 0u32..3,
        fail_mod in 0u8..4,
        nodes in 1usize..3,
    ) {
        fn fails0(_: &str) -> bool { false }
        fn fails1(n: &str) -> bool { n.bytes().map(u32::from).sum::<u32>() % 2 == 0 }
        fn fails2(n: &str) -> bool { n.bytes().map(u32::from).sum::<u32>() % 4 == 0 }
        fn fails3(_: &str) -> bool { true }
        let mut w = World::new();
        w.nodes = (0..nodes).map(|i| node(&format!("n{i}"), true)).collect();
        w.fail = Some([fails0, fails1, fails2, fails3][fail_mod as usize]);
        w.jobs.push(job("batch", completions, parallelism, backoff));
        let uid = w.jobs[0].meta.uid.clone();
        let mut done = false;
        for _ in 0..80 {
            let before = w.rev;
            let a = w.step();
            prop_assert!(w.active_pods_of(&uid).len() as u32 <= parallelism);
            let st = &w.jobs[0].status;
            prop_assert!(st.succeeded <= completions);
            if a.is_empty() && before == w.rev { done = true; break; }
        }
        prop_assert!(done, "no fixed point");
        let st = w.jobs[0].status.clone();
        prop_assert!(st.phase != JobPhase::Running, "{st:?}");
        prop_assert_eq!(w.active_pods_of(&uid).len(), 0);
        if st.phase == JobPhase::Complete {
            prop_assert_eq!(st.succeeded, completions);
            prop_assert!(st.failed <= backoff);
        } else {
            prop_assert!(st.failed > backoff);
        }
        prop_assert!(w.reconcile().is_empty());
        prop_assert_eq!(w.conflicts, 0);
    }

    #[test]
    fn node_failure_reschedules_replicas(
        nodes in 2usize..5,
        replicas in 1u32..10,
        dead in 0usize..5,
    ) {
        let mut w = World::new();
        w.nodes = (0..nodes).map(|i| node(&format!("n{i}"), true)).collect();
        w.deployments.push(deployment("web", replicas, "v1"));
        w.converge(20);
        let dead = dead % nodes;
        let name = w.nodes[dead].meta.name.clone();
        w.nodes[dead].status.conditions[0].status = false;
        w.nodes[dead].status.conditions[0].since_ms = w.now;
        let survivors: Vec<String> = w.pods.iter()
            .filter(|p| p.spec.node_name.as_ref() != Some(&name))
            .map(|p| p.meta.name.clone()).collect();
        // Before the timeout, nothing moves but the taint.
        w.step();
        prop_assert_eq!(w.deployment_pods("web").len() as u32, replicas);
        w.now += 60_000;
        w.converge(20);
        let pods = w.deployment_pods("web");
        prop_assert_eq!(pods.len() as u32, replicas);
        prop_assert!(pods.iter().all(|p| p.spec.node_name.as_ref() != Some(&name)));
        for s in survivors {
            prop_assert!(w.pods.iter().any(|p| p.meta.name == s), "survivor {} churned", s);
        }
        // The node comes back: the taint goes, nothing else.
        w.nodes[dead].status.conditions[0].status = true;
        w.converge(5);
        prop_assert!(w.nodes[dead].spec.taints.is_empty());
        prop_assert_eq!(w.deployment_pods("web").len() as u32, replicas);
        prop_assert_eq!(w.conflicts, 0);
    }
}

/// Many owners in one pass: names stay unique across controllers.
#[test]
fn generated_names_unique_across_owners() {
    let mut w = World::new();
    w.nodes = vec![node("a", true)];
    for i in 0..20 {
        let mut rs = replicaset(&format!("web{i}"), 10);
        rs.meta.uid = format!("u{i}");
        w.replicasets.push(rs);
    }
    let a = w.reconcile();
    let mut names: BTreeMap<String, usize> = BTreeMap::new();
    for o in creates(&a) {
        *names.entry(o.meta().name.clone()).or_default() += 1;
    }
    assert_eq!(names.len(), 200);
}

#[test]
fn deleting_a_deployment_collects_everything() {
    let mut w = dep_world(3);
    w.converge(10);
    w.deployments[0].spec.template = template("v2");
    w.converge(20);
    assert_eq!(w.replicasets.len(), 2);
    w.deployments.clear();
    let a = w.step();
    // The replica sets go first; nothing is created for them.
    assert!(creates(&a).is_empty(), "{a:?}");
    assert_eq!(deletes(&a).len(), 2);
    w.converge(5);
    assert!(w.replicasets.is_empty() && w.pods.is_empty());
    assert_eq!(w.conflicts, 0);
}
