//! The master's side of the pod network, through its real code paths on a real store: service
//! virtual IPs given at apply (concurrently, immutably), the backfill of old services, the pod
//! subnets given at registration, and the address guard on status reports.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use bramble_wire::msg::{ApiError, ErrorCode, PodReport};
use bramble_wire::objects::{
    Arch, Kind, Meta, NetworkMode, Node, NodeInfo, Object, Pod, PodPhase, PodSpec, PodStatus,
    ProcessSpec, ProcessState, ProcessStatus, Service, ServiceSpec,
};

use super::{Config, Master};

fn open(dir: &std::path::Path, tweak: impl FnOnce(&mut Config)) -> Arc<Master> {
    let mut cfg = Config::new(dir.to_path_buf(), "127.0.0.1:0".into());
    tweak(&mut cfg);
    smol::block_on(Master::open(cfg)).unwrap()
}

fn svc(name: &str, ip: Option<&str>) -> Object {
    Object::Service(Service {
        meta: Meta {
            name: name.into(),
            namespace: "default".into(),
            ..Default::default()
        },
        spec: ServiceSpec {
            selector: [("app".to_string(), "x".to_string())].into(),
            port: 80,
            target_port: 8080,
            cluster_ip: ip.map(String::from),
            ..Default::default()
        },
    })
}

async fn apply(m: &Master, objs: Vec<Object>) -> Result<(), ApiError> {
    super::client::apply(m, objs).await.map(|_| ())
}

async fn cluster_ips(m: &Master) -> BTreeMap<String, Option<String>> {
    let (_, objs) = m.store.list(Kind::Service, None).await.unwrap();
    objs.into_iter()
        .filter_map(|o| match o {
            Object::Service(s) => Some((s.meta.name, s.spec.cluster_ip)),
            _ => None,
        })
        .collect()
}

#[test]
fn concurrent_applies_never_give_one_address_twice() {
    let dir = tempfile::tempdir().unwrap();
    let m = open(dir.path(), |_| {});
    smol::block_on(async {
        // 8 applies at once, of 6 services each (each apply writes its services side by side).
        let tasks: Vec<_> = (0..8)
            .map(|a| {
                let m = m.clone();
                smol::spawn(async move {
                    let objs = (0..6).map(|i| svc(&format!("s-{a}-{i}"), None)).collect();
                    apply(&m, objs).await
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        let ips = cluster_ips(&m).await;
        assert_eq!(ips.len(), 48);
        let distinct: HashSet<&String> = ips.values().map(|v| v.as_ref().unwrap()).collect();
        assert_eq!(distinct.len(), 48, "{ips:?}");
        // The lowest 48 of the range, from 10.43.0.2 (network and first address reserved).
        let want: HashSet<String> = (2..50).map(|i| format!("10.43.0.{i}")).collect();
        assert_eq!(distinct.into_iter().cloned().collect::<HashSet<_>>(), want);
    });
}

#[test]
fn addresses_are_kept_immutable_and_checked() {
    let dir = tempfile::tempdir().unwrap();
    let m = open(dir.path(), |c| {
        c.service_cidr =
            crate::controllers::service_ip::ServiceCidr::parse("10.43.0.0/29").unwrap();
    });
    smol::block_on(async {
        apply(&m, vec![svc("a", None), svc("h", Some("None"))])
            .await
            .unwrap();
        let ips = cluster_ips(&m).await;
        assert_eq!(ips["a"].as_deref(), Some("10.43.0.2"));
        assert_eq!(ips["h"].as_deref(), Some("None"));
        // Re-applied without cluster_ip (or with the same): kept.
        apply(&m, vec![svc("a", None), svc("h", None)])
            .await
            .unwrap();
        apply(&m, vec![svc("a", Some("10.43.0.2"))]).await.unwrap();
        assert_eq!(cluster_ips(&m).await, ips);
        // Changed: refused, naming the service and the fix.
        for (name, other) in [("a", "10.43.0.3"), ("a", "None"), ("h", "10.43.0.3")] {
            let e = apply(&m, vec![svc(name, Some(other))]).await.unwrap_err();
            assert_eq!(e.code, ErrorCode::Conflict, "{e:?}");
            assert!(
                e.message.contains("cluster_ip is immutable")
                    && e.message
                        .contains(&format!("delete and re-create service default/{name}")),
                "{e:?}"
            );
        }
        // Taken, outside the range, reserved: refused with the fix.
        let e = apply(&m, vec![svc("b", Some("10.43.0.2"))])
            .await
            .unwrap_err();
        assert!(
            e.message.contains("default/b") && e.message.contains("taken"),
            "{e:?}"
        );
        let e = apply(&m, vec![svc("b", Some("10.44.0.2"))])
            .await
            .unwrap_err();
        assert!(
            e.message.contains("outside the service range 10.43.0.0/29"),
            "{e:?}"
        );
        let e = apply(&m, vec![svc("b", Some("10.43.0.1"))])
            .await
            .unwrap_err();
        assert!(e.message.contains("reserved"), "{e:?}");
        // An apply is all or nothing: a refused service leaves its siblings unwritten.
        let e = apply(&m, vec![svc("c", None), svc("b", Some("10.43.0.2"))])
            .await
            .unwrap_err();
        assert!(e.message.contains("taken"), "{e:?}");
        assert!(!cluster_ips(&m).await.contains_key("c"));
        // Requested and free: given. Then fill the /29 (5 addresses): the 6th is refused.
        apply(&m, vec![svc("b", Some("10.43.0.6"))]).await.unwrap();
        apply(&m, vec![svc("c", None), svc("d", None), svc("e", None)])
            .await
            .unwrap();
        let ips = cluster_ips(&m).await;
        assert_eq!(ips["c"].as_deref(), Some("10.43.0.3"));
        assert_eq!(ips["e"].as_deref(), Some("10.43.0.5"));
        let e = apply(&m, vec![svc("f", None)]).await.unwrap_err();
        assert!(
            e.message.contains("default/f")
                && e.message.contains("is full")
                && e.message.contains("--service-cidr"),
            "{e:?}"
        );
        // Headless services take no address: they still fit.
        apply(&m, vec![svc("g", Some("None"))]).await.unwrap();
    });
}

#[test]
fn services_stored_before_service_ips_get_one_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let m = open(dir.path(), |_| {});
    smol::block_on(async {
        apply(&m, vec![svc("new", None)]).await.unwrap();
        // Written as an older master did: no address.
        for name in ["old-b", "old-a"] {
            m.store.create(svc(name, None)).await.unwrap();
        }
        super::client::backfill_service_ips(&m).await.unwrap();
        let ips = cluster_ips(&m).await;
        assert_eq!(ips["new"].as_deref(), Some("10.43.0.2"));
        assert_eq!(ips["old-a"].as_deref(), Some("10.43.0.3"));
        assert_eq!(ips["old-b"].as_deref(), Some("10.43.0.4"));
        // Once: a second pass changes nothing.
        super::client::backfill_service_ips(&m).await.unwrap();
        assert_eq!(cluster_ips(&m).await, ips);
    });
}

#[test]
fn a_service_range_overlapping_the_pod_range_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = Config::new(dir.path().to_path_buf(), "127.0.0.1:0".into());
    cfg.service_cidr =
        crate::controllers::service_ip::ServiceCidr::parse("10.42.128.0/20").unwrap();
    let e = cfg.check().unwrap_err();
    assert!(
        e.contains("--service-cidr 10.42.128.0/20 overlaps --cluster-cidr 10.42.0.0/16")
            && e.contains("disjoint"),
        "{e}"
    );
    assert!(smol::block_on(Master::open(cfg)).is_err());
}

fn info(name: &str) -> NodeInfo {
    NodeInfo {
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
    }
}

#[test]
fn node_subnets_are_never_given_twice_and_a_full_range_is_refused_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    // 16 node subnets: a /28 each out of a /24.
    let m = open(dir.path(), |c| {
        c.cluster_cidr =
            crate::controllers::podnet::ClusterCidr::parse("10.42.0.0/24", 28).unwrap();
    });
    smol::block_on(async {
        let feeder = smol::spawn(m.cache.clone().run(m.store.clone()));
        // One node registering 256 times (reconnects, re-registrations): one subnet.
        for _ in 0..256 {
            let cidr = super::node::register(&m, "pi-0", &info("pi-0"), Some("192.0.2.10".into()))
                .await
                .unwrap();
            assert_eq!(cidr, "10.42.0.0/28");
        }
        // 256 registrations under other names (a join token's holder making up names), 8 at a
        // time: the first 15 get the rest of the range, every other one none (its isolated pods
        // wait; the master says why), never one given twice.
        let mut given = vec!["10.42.0.0/28".to_string()];
        for batch in 0..32 {
            let tasks: Vec<_> = (0..8)
                .map(|i| {
                    let m = m.clone();
                    let name = format!("fake-{}", batch * 8 + i);
                    smol::spawn(async move {
                        super::node::register(&m, &name, &info(&name), None)
                            .await
                            .unwrap()
                    })
                })
                .collect();
            for t in tasks {
                let cidr = t.await;
                if !cidr.is_empty() {
                    given.push(cidr);
                }
            }
        }
        assert_eq!(given.len(), 16, "{given:?}");
        let distinct: HashSet<&String> = given.iter().collect();
        assert_eq!(distinct.len(), 16, "{given:?}");
        assert!(m.cache.catch_up(&m.store).await);
        let nodes = m.cache.list::<Node>();
        assert_eq!(nodes.len(), 257);
        let stored: Vec<&str> = nodes
            .iter()
            .map(|n| n.spec.pod_cidr.as_str())
            .filter(|c| !c.is_empty())
            .collect();
        assert_eq!(stored.len(), 16);
        assert_eq!(stored.iter().collect::<HashSet<_>>().len(), 16);
        // A client cannot hand out a subnet: a node it creates gets none until it registers.
        let mut forged = Node {
            meta: Meta {
                name: "forged".into(),
                ..Default::default()
            },
            ..Default::default()
        };
        forged.spec.pod_cidr = "10.42.0.0/28".into();
        apply(&m, vec![Object::Node(forged)]).await.unwrap();
        let Some(Object::Node(stored)) = super::get_opt(&m.store, Kind::Node, "", "forged")
            .await
            .unwrap()
        else {
            panic!("no forged node")
        };
        assert_eq!(stored.spec.pod_cidr, "");
        // A deleted node frees its subnet for the next registration.
        let victim = nodes
            .iter()
            .find(|n| n.spec.pod_cidr == "10.42.0.16/28")
            .unwrap()
            .meta
            .name
            .clone();
        m.store.delete(Kind::Node, "", &victim, None).await.unwrap();
        let cidr = super::node::register(&m, "pi-1", &info("pi-1"), None)
            .await
            .unwrap();
        assert_eq!(cidr, "10.42.0.16/28");
        feeder.cancel().await;
    });
}

fn node_obj(name: &str, cidr: &str, addr: &str) -> Object {
    let mut n = Node {
        meta: Meta {
            name: name.into(),
            ..Default::default()
        },
        ..Default::default()
    };
    n.spec.pod_cidr = cidr.into();
    n.status.addresses = vec![addr.into()];
    n.status.conditions = vec![bramble_wire::objects::Condition {
        kind: bramble_wire::objects::ConditionKind::Ready,
        status: true,
        message: String::new(),
        since_ms: 1,
    }];
    Object::Node(n)
}

fn pod_obj(name: &str, node: &str, network: NetworkMode) -> Object {
    Object::Pod(Pod {
        meta: Meta {
            name: name.into(),
            namespace: "default".into(),
            labels: [("app".to_string(), "x".to_string())].into(),
            ..Default::default()
        },
        spec: PodSpec {
            node_name: Some(node.into()),
            network,
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

fn running(p: &Pod, ip: &str) -> PodReport {
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
                restarts: 0,
                last_exit: None,
                ready: true,
            }],
            ip: ip.into(),
            ..Default::default()
        },
    }
}

#[test]
fn a_hostile_node_cannot_point_a_service_at_loopback() {
    let dir = tempfile::tempdir().unwrap();
    let m = open(dir.path(), |_| {});
    smol::block_on(async {
        let feeder = smol::spawn(m.cache.clone().run(m.store.clone()));
        for o in [
            node_obj("good", "10.42.0.0/24", "192.0.2.10"),
            node_obj("evil", "10.42.1.0/24", "192.0.2.11"),
            pod_obj("iso-good", "good", NetworkMode::Isolated),
            pod_obj("iso-evil", "evil", NetworkMode::Isolated),
            pod_obj("host-evil", "evil", NetworkMode::Host),
        ] {
            m.store.create(o).await.unwrap();
        }
        apply(&m, vec![svc("web", None)]).await.unwrap();
        assert!(m.cache.catch_up(&m.store).await);
        let pod = |name: &str| m.cache.pod("default", name).unwrap();
        super::node::report_status(&m, "good", running(&pod("iso-good"), "10.42.0.5"))
            .await
            .unwrap();
        // Loopback, another node's pod address, its own gateway: dropped, the rest kept.
        for (name, ip) in [
            ("iso-evil", "127.0.0.1"),
            ("iso-evil", "10.42.0.5"),
            ("iso-evil", "10.42.1.1"),
            ("host-evil", "127.0.0.1"),
        ] {
            super::node::report_status(&m, "evil", running(&pod(name), ip))
                .await
                .unwrap();
            assert!(m.cache.catch_up(&m.store).await);
            let p = pod(name);
            assert_eq!(p.status.phase, PodPhase::Running, "{name} {ip}");
            assert_eq!(p.status.ip, "", "{name} {ip}");
        }
        // Even a status stored before the guard never reaches the endpoints.
        let mut stored = pod("iso-evil");
        stored.status.ip = "127.0.0.1".into();
        m.store
            .update_status(Object::Pod(stored.clone()), Some(stored.meta.revision))
            .await
            .unwrap();
        assert!(m.cache.catch_up(&m.store).await);
        assert_eq!(pod("iso-evil").status.ip, "127.0.0.1");
        let snap = m.cache.snapshot();
        let eps = crate::controllers::endpoints::compute(
            snap.services.iter(),
            snap.pods.iter(),
            snap.nodes.iter(),
        );
        assert_eq!(eps.len(), 1);
        let e = &eps[0];
        assert_eq!(e.cluster_ip.as_deref(), Some("10.43.0.2"));
        let ready: Vec<(&str, &str)> = e
            .ready
            .iter()
            .map(|a| (a.pod.as_str(), a.ip.as_str()))
            .collect();
        // The host pod is reached at its node's address, the good isolated pod at its own.
        assert_eq!(
            ready,
            [("iso-good", "10.42.0.5"), ("host-evil", "192.0.2.11")]
        );
        for a in e.ready.iter().chain(&e.not_ready) {
            assert_ne!(a.ip, "127.0.0.1", "{e:?}");
        }
        feeder.cancel().await;
    });
}

#[test]
fn a_connecting_worker_gets_the_cluster_network_first() {
    let dir = tempfile::tempdir().unwrap();
    let m = open(dir.path(), |c| {
        c.cluster_domain = "cluster.example.org".into();
    });
    smol::block_on(async {
        let (tx, rx) = async_channel::bounded(8);
        super::endpoints::push_to(&m, &tx, None).await;
        let Ok(bramble_wire::msg::NodeDown::ClusterNetwork(c)) = rx.try_recv() else {
            panic!("ClusterNetwork first");
        };
        assert_eq!(
            c,
            bramble_wire::msg::ClusterNetwork {
                cluster_cidr: "10.42.0.0/16".into(),
                service_cidr: "10.43.0.0/16".into(),
                domain: "cluster.example.org".into(),
            }
        );
        assert!(matches!(
            rx.try_recv(),
            Ok(bramble_wire::msg::NodeDown::Network(_))
        ));
        assert!(matches!(
            rx.try_recv(),
            Ok(bramble_wire::msg::NodeDown::Endpoints(_))
        ));
    });
}

async fn kernel_network(m: &Master) -> Option<(bool, String)> {
    let Some(Object::Node(n)) = super::get_opt(&m.store, Kind::Node, "", "pi-0")
        .await
        .unwrap()
    else {
        panic!("node pi-0 is gone");
    };
    n.status
        .condition(bramble_wire::objects::ConditionKind::KernelNetwork)
        .map(|c| (c.status, c.message.clone()))
}

#[test]
fn a_node_without_the_kernel_path_shows_it_as_a_condition_kept_across_registrations() {
    let dir = tempfile::tempdir().unwrap();
    let m = open(dir.path(), |_| {});
    smol::block_on(async {
        let feeder = smol::spawn(m.cache.clone().run(m.store.clone()));
        super::node::register(&m, "pi-0", &info("pi-0"), None)
            .await
            .unwrap();
        assert_eq!(kernel_network(&m).await, None, "nothing said yet");
        super::node::set_network_condition(&m, "pi-0", false, "nf_tables missing: modprobe")
            .await
            .unwrap();
        let want = Some((false, "nf_tables missing: modprobe".to_string()));
        assert_eq!(kernel_network(&m).await, want);
        // A re-registration (reconnect, Ready again) keeps what the agent said.
        super::node::register(&m, "pi-0", &info("pi-0"), None)
            .await
            .unwrap();
        assert_eq!(kernel_network(&m).await, want);
        super::node::set_network_condition(&m, "pi-0", true, "nftables")
            .await
            .unwrap();
        assert_eq!(
            kernel_network(&m).await,
            Some((true, "nftables".to_string()))
        );
        feeder.cancel().await;
    });
}
