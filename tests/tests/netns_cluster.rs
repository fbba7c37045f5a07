//! A master and three workers as separate hosts: one network namespace each, cabled to a bridge
//! in a namespace of its own (192.0.2.0/24), the real binaries and the real CLI. Scenarios:
//! replicas spread over the nodes, a SIGKILLed worker going NotReady within the grace period,
//! and network partitions (a cable cut at the bridge) shorter and longer than the eviction
//! timeout: no churn after the short one, no duplicate processes after either.
//!
//! Root only; fails (never skips) without root, `ip` or `nsenter`.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use bramble_tests::netns::{
    self, MASTER_PORT, cgroup_parent, pid_alive, processes_under, tcp_connections_to,
};
use bramble_wire::objects::{ConditionKind, ProcessState};

const HEARTBEAT: Duration = Duration::from_millis(500);
const GRACE: Duration = Duration::from_secs(3);
// Well past what a short partition takes to heal: NotReady (grace + one lifecycle tick), then
// the worker's heartbeats resume at TCP's next retransmission (up to ~6.5 s after the cut) or
// on a fresh connection once the master dropped the silent one.
const EVICTION: Duration = Duration::from_secs(8);
const MASTER_FLAGS: &[&str] = &[
    "--heartbeat-interval",
    "500ms",
    "--node-grace",
    "3s",
    "--eviction-timeout",
    "8s",
];
const WORKERS: [&str; 3] = ["w1", "w2", "w3"];
const REPLICAS: usize = 6;

const DEPLOYMENT: &str = r#"
[[deployment]]
name = "web"
replicas = 6
[deployment.template]
labels = { app = "web" }
[[deployment.template.process]]
name = "main"
command = ["/bin/sleep", "1000"]
memory = "8Mi"
"#;

/// What `get pods -o json` says about one pod.
#[derive(Debug, Clone, PartialEq, Eq)]
struct PodInfo {
    name: String,
    phase: String,
    node: String,
    pid: Option<u32>,
    started_ms: u64,
    restarts: u64,
}

bramble_tests::cluster_type!(Cluster);

impl Cluster {
    fn start() -> Cluster {
        Cluster(netns::Cluster::start(WORKERS.len(), MASTER_FLAGS))
    }

    fn pods(&self) -> Vec<PodInfo> {
        let mut out: Vec<PodInfo> = self
            .m
            .pods("app=web")
            .into_iter()
            .map(|p| {
                let proc0 = p.status.processes.first();
                let (pid, started_ms) = match proc0.map(|s| &s.state) {
                    Some(ProcessState::Running { pid, started_ms }) => (Some(*pid), *started_ms),
                    _ => (None, 0),
                };
                PodInfo {
                    name: p.meta.name,
                    phase: p.status.phase.as_str().into(),
                    node: p.spec.node_name.unwrap_or_default(),
                    pid,
                    started_ms,
                    restarts: proc0.map_or(0, |s| s.restarts.into()),
                }
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    /// The pods when exactly `REPLICAS` exist, all Running with a PID, none on `avoid`.
    fn settled(&self, avoid: Option<&str>) -> Option<Vec<PodInfo>> {
        let ps = self.pods();
        (ps.len() == REPLICAS
            && ps
                .iter()
                .all(|p| p.phase == "Running" && p.pid.is_some() && Some(p.node.as_str()) != avoid))
        .then_some(ps)
    }

    /// Checks what really runs against what the cluster says: every pod has exactly one `sleep`
    /// process across all hosts, in its own node's cgroup, with the PID the status reports; no
    /// `sleep` runs for a pod the cluster does not know. `Err` says what differs.
    fn census(&self, pods: &[PodInfo], parents: &[String]) -> Result<(), String> {
        let procs = processes_under(parents, "sleep");
        let mut by_pod: BTreeMap<&str, Vec<_>> = BTreeMap::new();
        for p in &procs {
            by_pod.entry(p.pod.as_str()).or_default().push(p);
        }
        let known: BTreeSet<&str> = pods.iter().map(|p| p.name.as_str()).collect();
        let mut problems = Vec::new();
        for p in pods {
            let want = (p.pid, cgroup_parent(&self.topo, &p.node));
            match by_pod.get(p.name.as_str()).map(Vec::as_slice) {
                Some([one]) if (Some(one.pid), one.parent.clone()) == want => {}
                other => problems.push(format!(
                    "pod {} (node {}, pid {:?}): processes {other:?}",
                    p.name, p.node, p.pid
                )),
            }
        }
        for (name, ps) in &by_pod {
            if !known.contains(name) {
                problems.push(format!("pod {name} is not in the cluster but runs {ps:?}"));
            }
        }
        if procs.len() != pods.len() {
            problems.push(format!(
                "{} sleep processes for {} pods",
                procs.len(),
                pods.len()
            ));
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems.join("\n"))
        }
    }

    fn apply_deployment(&self) -> Vec<PodInfo> {
        let f = self.tmp.path().join("web.toml");
        std::fs::write(&f, DEPLOYMENT).unwrap();
        self.m.ok(&["apply", "-f", f.to_str().unwrap()]);
        let pods = self.wait(Duration::from_secs(30), "6 Running replicas", || {
            self.settled(None)
        });
        let mut spread: BTreeMap<&str, usize> = BTreeMap::new();
        for p in &pods {
            *spread.entry(p.node.as_str()).or_default() += 1;
        }
        let want: BTreeMap<&str, usize> = WORKERS.iter().map(|n| (*n, 2)).collect();
        assert_eq!(
            spread,
            want,
            "6 replicas of one owner spread 2 per node{}",
            self.diag()
        );
        // The reported processes exist on the hosts, one per pod.
        self.wait(Duration::from_secs(5), "processes match the pods", || {
            self.census(&pods, &self.parents()).ok()
        });
        pods
    }

    fn node_ready_since(&self, name: &str) -> Option<(bool, u64)> {
        let n = self.m.node(name)?;
        let c = n.status.condition(ConditionKind::Ready)?;
        Some((c.status, c.since_ms))
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

#[test]
fn replicas_spread_over_hosts_and_a_killed_worker_goes_not_ready_within_grace() {
    let t_test = Instant::now();
    let mut c = Cluster::start();
    let pods = c.apply_deployment();
    println!("spread: 6 Running replicas, 2 per node: {pods:?}");

    // SIGKILL worker w3 (its process, by PID); measure until the CLI shows NotReady.
    let kill_ms = now_ms();
    let t = Instant::now();
    c.workers[2].kill9();
    c.wait(GRACE + Duration::from_secs(5), "w3 NotReady", || {
        c.m.node("w3")
            .is_some_and(|n| !n.status.is_ready())
            .then_some(())
    });
    let seen = t.elapsed();
    let (ready, since) = c.node_ready_since("w3").expect("w3 has a Ready condition");
    assert!(!ready);
    // The master's own clock: grace, plus one lifecycle tick (grace / 4), plus a second for
    // the store write. What the CLI saw adds its polling on a loaded machine, so only the
    // wait above bounds that.
    let margin = GRACE / 4 + Duration::from_secs(1);
    let changed_after = Duration::from_millis(since.saturating_sub(kill_ms));
    println!(
        "kill -9 of worker w3 -> NotReady seen by `bramble get nodes` after {} ms \
         (the master's condition changed {} ms after the kill; grace {} ms, heartbeat {} ms)",
        seen.as_millis(),
        since.saturating_sub(kill_ms),
        GRACE.as_millis(),
        HEARTBEAT.as_millis()
    );
    assert!(
        changed_after <= GRACE + margin,
        "w3 went NotReady {} ms after the kill: more than grace {} ms + margin {} ms{}",
        changed_after.as_millis(),
        GRACE.as_millis(),
        margin.as_millis(),
        c.diag()
    );

    // After the eviction timeout its pods are replaced on w1 and w2, one process per pod there.
    let t = Instant::now();
    let after = c.wait(
        EVICTION + Duration::from_secs(15),
        "6 replicas on w1/w2",
        || c.settled(Some("w3")),
    );
    println!(
        "w3's pods replaced on w1/w2 {} ms after NotReady",
        t.elapsed().as_millis()
    );
    let live_parents = vec![cgroup_parent(&c.topo, "w1"), cgroup_parent(&c.topo, "w2")];
    c.wait(Duration::from_secs(5), "processes on w1/w2 match", || {
        c.census(&after, &live_parents).ok()
    });
    let kept: Vec<_> = pods.iter().filter(|p| p.node != "w3").collect();
    for p in &kept {
        let now = after.iter().find(|q| q.name == p.name);
        assert_eq!(
            now,
            Some(*p),
            "pod {} on a healthy node changed while w3 died{}",
            p.name,
            c.diag()
        );
    }
    println!("test time {} ms", t_test.elapsed().as_millis());
}

#[test]
fn partitions_heal_without_duplicates_or_churn() {
    let t_test = Instant::now();
    let c = Cluster::start();
    let before = c.apply_deployment();
    let w2 = c.topo.workers[1].clone();
    let all = c.parents();

    // 1. A partition shorter than the eviction timeout: w2 goes NotReady, comes back, and
    //    nothing is restarted or moved anywhere.
    let t = Instant::now();
    c.topo.cut(&w2);
    c.wait(
        GRACE + Duration::from_secs(3),
        "partitioned w2 NotReady",
        || {
            c.m.node("w2")
                .is_some_and(|n| !n.status.is_ready())
                .then_some(())
        },
    );
    c.topo.heal(&w2);
    let cut_for = t.elapsed();
    println!(
        "short partition of w2: {} ms (NotReady seen, then healed)",
        cut_for.as_millis()
    );
    assert!(
        cut_for < EVICTION,
        "the short partition lasted {} ms, not shorter than the eviction timeout",
        cut_for.as_millis()
    );
    let t = Instant::now();
    c.wait(Duration::from_secs(20), "w2 Ready after the heal", || {
        c.all_ready().then_some(())
    });
    println!(
        "w2 Ready again {} ms after the heal",
        t.elapsed().as_millis()
    );
    // Three heartbeats of every node later, as the master saw them: the same pods, processes,
    // start times.
    heartbeats_seen(&c, 3);
    let after_short = c.pods();
    assert_eq!(
        after_short,
        before,
        "pods changed across a partition shorter than the eviction timeout{}",
        c.diag()
    );
    assert!(before.iter().all(|p| p.restarts == 0), "{before:?}");
    if let Err(e) = c.census(&after_short, &all) {
        panic!("after the short partition:\n{e}{}", c.diag());
    }

    // 2. A partition longer than the eviction timeout: w2's pods are evicted and replaced on
    //    w1/w3 while w2, cut off, still runs them; after the heal w2 stops them.
    let evicted: Vec<PodInfo> = before.iter().filter(|p| p.node == "w2").cloned().collect();
    let t = Instant::now();
    c.topo.cut(&w2);
    let during = c.wait(
        GRACE + EVICTION + Duration::from_secs(12),
        "w2's pods replaced on w1/w3 during the partition",
        || c.settled(Some("w2")),
    );
    let still = evicted
        .iter()
        .filter(|p| p.pid.is_some_and(pid_alive))
        .count();
    println!(
        "long partition: w2's {} pods replaced elsewhere after {} ms; {still} of them still run \
         on the cut-off w2 (no self-fencing: expected until it hears from the master)",
        evicted.len(),
        t.elapsed().as_millis()
    );
    std::thread::sleep(Duration::from_millis(500));
    c.topo.heal(&w2);
    let cut_for = t.elapsed();
    assert!(cut_for > GRACE + EVICTION, "{cut_for:?}");
    let t = Instant::now();
    let healed = c.wait(
        Duration::from_secs(30),
        "w2 Ready, its evicted pods stopped, one process per pod",
        || {
            if !c.all_ready() || evicted.iter().any(|p| p.pid.is_some_and(pid_alive)) {
                return None;
            }
            let ps = c.settled(None)?;
            c.census(&ps, &all).ok().map(|_| ps)
        },
    );
    println!(
        "long partition of {} ms healed: converged {} ms after the heal",
        cut_for.as_millis(),
        t.elapsed().as_millis()
    );
    let names: BTreeSet<&str> = healed.iter().map(|p| p.name.as_str()).collect();
    let during_names: BTreeSet<&str> = during.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(
        names, during_names,
        "the replacement pods survived the heal"
    );
    // Pods on w1/w3 were never touched.
    for p in before.iter().filter(|p| p.node != "w2") {
        let now = healed.iter().find(|q| q.name == p.name);
        assert_eq!(
            now,
            Some(p),
            "pod {} on a healthy node changed across the partition{}",
            p.name,
            c.diag()
        );
    }
    // And it stays that way.
    heartbeats_seen(&c, 4);
    let later = c.pods();
    assert_eq!(later, healed, "pods changed after convergence{}", c.diag());
    if let Err(e) = c.census(&later, &all) {
        panic!("after the long partition:\n{e}{}", c.diag());
    }
    println!("test time {} ms", t_test.elapsed().as_millis());
}

/// Waits until the master has seen `n` more heartbeat intervals of every node (its own record of
/// each node's last heartbeat, on its own clock), instead of sleeping for them.
fn heartbeats_seen(c: &Cluster, n: u32) {
    let since = now_ms() + (HEARTBEAT * n).as_millis() as u64;
    c.wait(
        HEARTBEAT * n + Duration::from_secs(20),
        &format!("{n} heartbeats of every node seen by the master"),
        || {
            let nodes = c.m.nodes();
            (nodes.len() == c.names.len()
                && nodes.iter().all(|x| x.status.last_heartbeat_ms >= since))
            .then_some(())
        },
    );
}

#[test]
fn quiet_workers_keep_their_connections() {
    let c = Cluster::start();
    // Each worker's one session to the master, by its local port on the worker's host.
    let conns = || -> Vec<Vec<u16>> {
        c.workers
            .iter()
            .map(|w| tcp_connections_to(w.pid(), [192, 0, 2, 1], MASTER_PORT))
            .collect()
    };
    let first = c.wait(Duration::from_secs(5), "one connection per worker", || {
        let v = conns();
        v.iter().all(|p| p.len() == 1).then_some(v)
    });
    // Longer than the worker's silence timeout (6 heartbeats + 10 s = 13 s here): a quiet
    // cluster (no assignment changes, so the master has nothing to send) must stay connected.
    let quiet = HEARTBEAT * 6 + Duration::from_secs(10) + Duration::from_secs(3);
    let t = Instant::now();
    while t.elapsed() < quiet {
        let now = conns();
        assert!(
            now == first,
            "BUG (worker/master): a worker re-dialled the master in a quiet, healthy cluster after \
             {} ms: its connections (local ports, per worker w1..w3) went from {first:?} to {now:?}. \
             The worker ends a session after heartbeat x 6 + 10 s without a message from the master \
             (worker/src/agent/mod.rs, session(): `idle`, \"master silent\"), but the master sends a \
             worker nothing unless its assignment changes (master/server/src/api/dispatch.rs \
             push_assignment is the only regular NodeDown sender) and the worker's heartbeats are \
             never answered. So every quiet worker reconnects every 13 s here (40 s with the 5 s \
             default heartbeat); sessions that short never reset the reconnect backoff (reset only \
             after 30 s), so the delay doubles up to 30 s x jitter and the node eventually goes \
             NotReady, and its pods get evicted, in a healthy cluster.{}",
            t.elapsed().as_millis(),
            c.diag()
        );
        assert!(
            c.all_ready(),
            "a node went NotReady in a quiet cluster{}",
            c.diag()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    println!(
        "workers kept their connections for {} ms: {first:?}",
        t.elapsed().as_millis()
    );
}
