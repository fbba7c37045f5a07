//! The agent loop with the fake driver: no root, no master, no network (the loop's events are
//! fed by hand, its messages read from the channel the connection task would send).

use std::time::Duration;

use bramble_wire::msg::{Assignment, NodeDown, NodeUp, PodReport, PodSubnet};
use bramble_wire::objects::{Meta, Pod, PodPhase, PodSpec, PodStatus, ProcessSpec};
use bramble_wire::{CgroupVersion, Controllers};
use futures_lite::future;

use super::fake::FakeDriver;
use super::*;

fn pod(name: &str, uid: &str) -> Pod {
    Pod {
        meta: Meta {
            name: name.into(),
            namespace: "default".into(),
            uid: uid.into(),
            ..Default::default()
        },
        spec: PodSpec {
            processes: vec![ProcessSpec {
                name: "main".into(),
                command: vec!["/bin/true".into()],
                ..Default::default()
            }],
            ..Default::default()
        },
        status: PodStatus::default(),
    }
}

fn assign(revision: u64, pods: Vec<Pod>) -> Ev {
    Ev::Down(NodeDown::Assign(Assignment {
        revision,
        pods,
        ..Default::default()
    }))
}

fn config(state: &std::path::Path) -> Config {
    Config {
        master: "127.0.0.1:1".into(),
        token: String::new(),
        name: "n1".into(),
        state: StateDir::new(state),
        info: info::collect("n1", &[], None, CgroupVersion::None, Controllers::default()),
        poll_interval: Duration::from_millis(10),
        proxy_address: std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
        net: super::netpath::NetConfig {
            mode: super::netpath::ServiceProxy::Userspace,
            ..Default::default()
        },
        images: Default::default(),
        metrics_listen: None,
    }
}

/// A running loop: its events in, its messages out.
struct Harness {
    ev: async_channel::Sender<Ev>,
    up: async_channel::Receiver<NodeUp>,
    up_tx: async_channel::Sender<NodeUp>,
}

impl Harness {
    async fn connect(&self) {
        self.ev
            .send(Ev::Connected {
                up: self.up_tx.clone(),
                // No heartbeats during a test unless it asks for them.
                heartbeat: Duration::from_secs(3600),
            })
            .await
            .unwrap();
    }

    /// The next status message (skipping heartbeats): its reports, by name.
    async fn status(&self) -> Vec<PodReport> {
        loop {
            let m = future::or(async { self.up.recv().await.ok() }, async {
                smol::Timer::after(Duration::from_secs(5)).await;
                None
            })
            .await
            .expect("a status message within 5 s");
            if let NodeUp::Status(mut pods) = m {
                pods.sort_by(|a, b| a.name.cmp(&b.name));
                return pods;
            }
        }
    }

    /// No message for a while.
    async fn quiet(&self) {
        let m = future::or(async { self.up.recv().await.ok() }, async {
            smol::Timer::after(Duration::from_millis(150)).await;
            None
        })
        .await;
        assert!(
            !matches!(m, Some(NodeUp::Status { .. })),
            "unexpected {m:?}"
        );
    }
}

/// Runs the agent loop over `driver` in `state` while `script` runs.
fn with_agent<F: std::future::Future<Output = ()>>(
    state: &std::path::Path,
    driver: &FakeDriver,
    script: impl FnOnce(Harness) -> F,
) {
    let (ev, ev_rx) = async_channel::bounded(64);
    let (up_tx, up) = async_channel::bounded(256);
    let h = Harness { ev, up, up_tx };
    let agent = event_loop(config(state), driver.clone(), ev_rx, || {});
    smol::block_on(async {
        future::or(
            async {
                agent.await.unwrap();
                panic!("the agent loop returned");
            },
            script(h),
        )
        .await
    });
}

fn names(r: &[PodReport]) -> Vec<&str> {
    r.iter().map(|r| r.name.as_str()).collect()
}

#[test]
fn assignment_starts_and_stops_pods_and_reports_deltas() {
    let dir = tempfile::tempdir().unwrap();
    let d = FakeDriver::new();
    with_agent(dir.path(), &d.clone(), |h| async move {
        h.connect().await;
        let pods = h.status().await;
        assert_eq!(
            pods.len(),
            0,
            "the first report after connecting: every pod, none yet"
        );

        h.ev.send(assign(5, vec![pod("a", "ua"), pod("b", "ub")]))
            .await
            .unwrap();
        let pods = h.status().await;
        assert_eq!(names(&pods), ["a", "b"]);
        assert!(pods.iter().all(|r| r.status.phase == PodPhase::Running));
        h.quiet().await;

        // Only what changed is reported.
        let mut st = pods[0].status.clone();
        st.processes[0].restarts = 1;
        d.set_status("ua", st);
        let pods = h.status().await;
        assert_eq!(names(&pods), ["a"]);

        // A new set: b goes, c comes.
        h.ev.send(assign(6, vec![pod("a", "ua"), pod("c", "uc")]))
            .await
            .unwrap();
        let pods = h.status().await;
        assert_eq!(names(&pods), ["c"]);
        let s = d.state();
        assert_eq!(s.started, ["default/a", "default/b", "default/c"]);
        assert_eq!(s.stopped, ["default/b"]);
    });
    // The assignment was persisted, in the current format.
    let mut f = state::StateFile::new(&StateDir::new(dir.path()));
    assert_eq!(f.load().unwrap().unwrap().revision, 6);
}

#[test]
fn reconnect_reports_every_pod_again_without_restarting_any() {
    let dir = tempfile::tempdir().unwrap();
    let d = FakeDriver::new();
    with_agent(dir.path(), &d.clone(), |h| async move {
        h.connect().await;
        h.status().await;
        h.ev.send(assign(1, vec![pod("a", "ua")])).await.unwrap();
        h.status().await;
        h.ev.send(Ev::Disconnected).await.unwrap();
        h.connect().await;
        // After the reconnect every pod is reported again, unchanged or not.
        let pods = h.status().await;
        assert_eq!(names(&pods), ["a"]);
        h.quiet().await;
        assert_eq!(d.state().started, ["default/a"], "no restart on reconnect");
    });
}

#[test]
fn offline_restart_runs_and_adopts_the_saved_assignment_before_any_master() {
    let dir = tempfile::tempdir().unwrap();
    let state = StateDir::new(dir.path());
    state::StateFile::new(&state)
        .save(&Assignment {
            revision: 9,
            pods: vec![pod("a", "ua"), pod("b", "ub")],
            ..Default::default()
        })
        .unwrap();
    let d = FakeDriver::new();
    // The previous agent left `a` running, and `gone` that is no longer assigned.
    let mut running = PodStatus {
        phase: PodPhase::Running,
        ..Default::default()
    };
    running.processes.push(Default::default());
    d.leave_running(&pod("a", "ua"), running.clone());
    d.leave_running(&pod("gone", "ug"), running);
    with_agent(dir.path(), &d.clone(), |h| async move {
        // No master yet: the pods run from the saved state.
        for _ in 0..100 {
            if d.state().syncs > 0 {
                break;
            }
            smol::Timer::after(Duration::from_millis(10)).await;
        }
        {
            let s = d.state();
            assert_eq!(s.adopted, ["default/a"]);
            assert_eq!(s.started, ["default/b"]);
            assert_eq!(s.stopped, ["default/gone"]);
        }
        h.connect().await;
        let pods = h.status().await;
        assert_eq!(names(&pods), ["a", "b"]);
    });
}

#[test]
fn network_and_secrets_reach_the_driver_and_subnets_are_kept() {
    let dir = tempfile::tempdir().unwrap();
    let d = FakeDriver::new();
    with_agent(dir.path(), &d.clone(), |h| async move {
        h.connect().await;
        h.status().await;
        let subnets = vec![
            PodSubnet {
                node: "n1".into(),
                cidr: "10.42.0.0/24".into(),
                via: "192.0.2.11".into(),
            },
            PodSubnet {
                node: "n2".into(),
                cidr: "10.42.1.0/24".into(),
                via: "192.0.2.12".into(),
            },
        ];
        h.ev.send(Ev::Down(NodeDown::Network(subnets)))
            .await
            .unwrap();
        h.ev.send(Ev::Down(NodeDown::Secrets(Vec::new())))
            .await
            .unwrap();
        for _ in 0..100 {
            if d.state().configured.as_ref().is_some_and(|c| c.1) {
                break;
            }
            smol::Timer::after(Duration::from_millis(10)).await;
        }
        let s = d.state();
        assert_eq!(
            s.network,
            Some((
                Some("10.42.0.0/24".into()),
                vec![("10.42.1.0/24".into(), "192.0.2.12".into())]
            ))
        );
        assert_eq!(s.configured, Some((Vec::new(), true)));
    });
    assert!(
        std::fs::read(StateDir::new(dir.path()).network())
            .unwrap()
            .starts_with(b"bramble network v1\n")
    );
}

#[test]
fn a_burst_of_assignments_is_saved_and_synced_once() {
    let dir = tempfile::tempdir().unwrap();
    let d = FakeDriver::new();
    with_agent(dir.path(), &d.clone(), |h| async move {
        h.connect().await;
        h.status().await;
        h.ev.send(Ev::Disconnected).await.unwrap();
        let before = d.state().syncs;
        // Queued before the loop runs again: the master binding a large apply pod by pod.
        h.ev.send(assign(1, vec![pod("a", "ua")])).await.unwrap();
        h.ev.send(assign(2, vec![pod("a", "ua"), pod("b", "ub")]))
            .await
            .unwrap();
        h.ev.send(Ev::Down(NodeDown::Ping)).await.unwrap();
        h.ev.send(assign(
            3,
            vec![pod("a", "ua"), pod("b", "ub"), pod("c", "uc")],
        ))
        .await
        .unwrap();
        h.connect().await;
        let pods = h.status().await;
        assert_eq!(names(&pods), ["a", "b", "c"]);
        let s = d.state();
        assert_eq!(s.started, ["default/a", "default/b", "default/c"]);
        // The first two coalesce; the ping between is handled, then the third.
        assert_eq!(
            s.syncs,
            before + 2,
            "one sync per burst, not one per message"
        );
    });
    let mut f = state::StateFile::new(&StateDir::new(dir.path()));
    assert_eq!(f.load().unwrap().unwrap().revision, 3);
}

#[test]
fn usage_is_reported_only_after_the_master_asks() {
    let dir = tempfile::tempdir().unwrap();
    let d = FakeDriver::new();
    with_agent(dir.path(), &d.clone(), |h| async move {
        h.connect().await;
        let _ = h.status().await;
        // Not asked: no usage report for a while.
        let t0 = std::time::Instant::now();
        while t0.elapsed() < Duration::from_millis(1500) {
            let m = future::or(async { h.up.recv().await.ok() }, async {
                smol::Timer::after(Duration::from_millis(100)).await;
                None
            })
            .await;
            assert!(!matches!(m, Some(NodeUp::Usage(_))), "unasked {m:?}");
        }
        h.ev.send(Ev::Down(NodeDown::UsageWanted { seconds: 60 }))
            .await
            .unwrap();
        let t0 = std::time::Instant::now();
        let report = loop {
            let m = future::or(async { h.up.recv().await.ok() }, async {
                smol::Timer::after(Duration::from_secs(5)).await;
                None
            })
            .await
            .expect("a usage report within 5 s of the ask");
            if let NodeUp::Usage(u) = m {
                break u;
            }
        };
        assert!(t0.elapsed() < Duration::from_secs(3), "{:?}", t0.elapsed());
        assert!((900..=3000).contains(&report.window_ms), "{report:?}");
        // A metrics scrape is answered from the loop.
        let (tx, rx) = async_channel::bounded(1);
        h.ev.send(Ev::Metrics(tx)).await.unwrap();
        let text = rx.recv().await.unwrap();
        assert!(text.contains("# TYPE container_cpu_usage_seconds_total counter"));
    });
}
