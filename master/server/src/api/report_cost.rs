//! A status report costs work proportional to the pods it touches, not to the cluster: no store
//! read, and the same number of cached objects visited in a cluster of 10 nodes as of 1,000.

use bramble_wire::msg::{NodeDown, PodReport};
use bramble_wire::objects::{
    Meta, Node, Object, Pod, PodPhase, PodSpec, PodStatus, ProcessSpec, ProcessState, ProcessStatus,
};

use super::{Config, Master, NodeLive};
use crate::cache::Delta;

fn pod(i: usize) -> Object {
    Object::Pod(Pod {
        meta: Meta {
            name: format!("p-{i}"),
            namespace: "default".into(),
            ..Default::default()
        },
        spec: PodSpec {
            node_name: Some(format!("n-{i}")),
            processes: vec![ProcessSpec {
                name: "main".into(),
                command: vec!["/bin/sleep".into(), "60".into()],
                ..Default::default()
            }],
            ..Default::default()
        },
        ..Default::default()
    })
}

fn node(i: usize) -> Object {
    Object::Node(Node {
        meta: Meta {
            name: format!("n-{i}"),
            ..Default::default()
        },
        ..Default::default()
    })
}

fn running(p: &Pod, restarts: u32) -> PodReport {
    PodReport {
        namespace: p.meta.namespace.clone(),
        name: p.meta.name.clone(),
        uid: p.meta.uid.clone(),
        status: PodStatus {
            phase: PodPhase::Running,
            processes: vec![ProcessStatus {
                name: "main".into(),
                state: ProcessState::Running {
                    pid: 42,
                    started_ms: 1,
                },
                restarts,
                last_exit: None,
                ready: true,
            }],
            ..Default::default()
        },
    }
}

/// Store queries and cached objects visited by one status report of node n-0 (its write, the
/// cache update, the assignment loop's handling of the change, and a push check of n-0), in a
/// cluster of `nodes` nodes with one pod each.
fn report_cost(nodes: usize) -> (u64, u64) {
    let dir = tempfile::tempdir().unwrap();
    let cfg = Config::new(dir.path().to_path_buf(), "127.0.0.1:0".into());
    smol::block_on(async {
        let m = Master::open(cfg).await.unwrap();
        let feeder = smol::spawn(m.cache.clone().run(m.store.clone()));
        let writes: Vec<_> = (0..nodes)
            .flat_map(|i| [node(i), pod(i)])
            .map(|o| {
                let s = m.store.clone();
                smol::spawn(async move { s.create(o).await })
            })
            .collect();
        for w in writes {
            w.await.unwrap();
        }
        assert!(m.cache.catch_up(&m.store).await);
        let (tx, rx) = async_channel::bounded(64);
        m.nodes.lock().await.insert(
            "n-0".into(),
            NodeLive {
                session: Some((1, tx)),
                ..Default::default()
            },
        );
        super::dispatch::push_assignment(&m, "n-0").await;
        assert!(matches!(rx.try_recv(), Ok(NodeDown::Secrets(_))));
        let Ok(NodeDown::Assign(a)) = rx.try_recv() else {
            panic!("no assignment pushed");
        };
        assert_eq!(a.pods.len(), 1);
        let p = a.pods[0].clone();
        assert!(!p.meta.uid.is_empty(), "the store gave the pod its uid");
        assert!(p.meta.created_ms > 0, "and its creation time");
        // Running first (a phase change: the controllers look at that one).
        super::node::report_status(&m, "n-0", running(&p, 0))
            .await
            .unwrap();
        assert!(m.cache.catch_up(&m.store).await);
        let mut changes = m.cache.subscribe();
        assert!(matches!(changes.next().await, Delta::Resync));

        // Then the churn: the process restarted, twice.
        let mut cost = Vec::new();
        for restarts in [1, 2] {
            let (reads0, visits0) = (m.store.reads(), m.cache.visits());
            super::node::report_status(&m, "n-0", running(&p, restarts))
                .await
                .unwrap();
            assert!(m.cache.catch_up(&m.store).await);
            let Delta::Changes(c) = changes.next().await else {
                panic!("expected the report's change");
            };
            assert_eq!(c.len(), 1);
            let (dirty, pending) = super::dispatch::affected_nodes(&c);
            assert!(dirty.is_empty(), "a status change re-pushes no node");
            assert!(!pending);
            assert!(!super::control::controllers_care(&c[0]));
            // Even a push check of the node costs only its own pods.
            super::dispatch::push_assignment(&m, "n-0").await;
            assert!(rx.try_recv().is_err(), "the pushed set did not change");
            let reads = m.store.reads();
            cost.push((reads.queries - reads0.queries, m.cache.visits() - visits0));
        }
        assert_eq!(cost[0], cost[1]);
        let got = m.cache.pod("default", "p-0").unwrap();
        assert_eq!(got.status.phase, PodPhase::Running);
        assert_eq!(got.status.processes[0].restarts, 2);
        feeder.cancel().await;
        cost[0]
    })
}

#[test]
fn a_status_report_reads_nothing_from_the_store_and_costs_the_same_in_any_cluster() {
    let small = report_cost(10);
    let large = report_cost(1000);
    assert_eq!(small.0, 0, "store queries per status report");
    assert_eq!(small, large, "(store queries, cached objects visited)");
    // The pod itself (report) and the node's one pod (push check).
    assert_eq!(small.1, 2);
}
