//! Service endpoints: a pure function from (services, pods, nodes) to the backends of every
//! service. The master recomputes it on every change (`api/endpoints.rs`) and pushes the result
//! to every worker's proxy; nothing here is stored.
//!
//! A pod selected by a service (same namespace, every selector label present) is listed when it
//! is bound to a node and not finished:
//! - in `ready` when its status is ready (Running, every process ready), its node is Ready, and
//!   it has an address: host-network pods are reached at `node address:target_port`, isolated
//!   pods (`network = "isolated"`) at `pod address:target_port` (their node routes its subnet);
//! - in `not_ready` otherwise. Pods with `network = "none"` have only loopback: no proxy can
//!   reach them, so they are always `not_ready`.

use std::collections::HashMap;

use bramble_wire::objects::{
    EndpointAddress, Endpoints, Meta, NetworkMode, Node, Pod, PodPhase, Service,
};

/// The endpoints of every service, sorted by (namespace, name); addresses sorted within each.
/// Takes references so the master's loop can pass its in-memory maps without copying them.
pub fn compute<'a>(
    services: impl IntoIterator<Item = &'a Service>,
    pods: impl IntoIterator<Item = &'a Pod>,
    nodes: impl IntoIterator<Item = &'a Node>,
) -> Vec<Endpoints> {
    let nodes: HashMap<&str, &Node> = nodes
        .into_iter()
        .map(|n| (n.meta.name.as_str(), n))
        .collect();
    let mut by_ns: HashMap<&str, Vec<&Pod>> = HashMap::new();
    for p in pods {
        by_ns.entry(p.meta.namespace.as_str()).or_default().push(p);
    }
    let mut out: Vec<Endpoints> = services
        .into_iter()
        .map(|s| {
            let mut ready = Vec::new();
            let mut not_ready = Vec::new();
            let candidates = by_ns.get(s.meta.namespace.as_str());
            for p in candidates.into_iter().flatten().copied() {
                if !selects(s, p) {
                    continue;
                }
                let Some(node_name) = p.spec.node_name.as_deref() else {
                    continue; // not scheduled yet: no address at all
                };
                if matches!(p.status.phase, PodPhase::Succeeded | PodPhase::Failed) {
                    continue; // finished: gone for good
                }
                let node = nodes.get(node_name);
                let ip = match p.spec.network {
                    NetworkMode::Host => node
                        .and_then(|n| n.status.addresses.first())
                        .cloned()
                        .unwrap_or_default(),
                    // Only an address its node may give (the master drops others at the
                    // report; checked again here for statuses stored before that).
                    NetworkMode::Isolated => node
                        .filter(|n| {
                            super::podnet::check_pod_ip(
                                &n.spec.pod_cidr,
                                NetworkMode::Isolated,
                                &p.status.ip,
                            )
                            .is_ok()
                        })
                        .map(|_| p.status.ip.clone())
                        .unwrap_or_default(),
                    NetworkMode::None => String::new(),
                };
                let addr = EndpointAddress {
                    ip,
                    port: s.spec.target_port,
                    pod: p.meta.name.clone(),
                    node: node_name.to_string(),
                };
                let reachable = p.spec.network != NetworkMode::None
                    && !addr.ip.is_empty()
                    && node.is_some_and(|n| n.status.is_ready());
                if reachable && p.status.is_ready() {
                    ready.push(addr);
                } else {
                    not_ready.push(addr);
                }
            }
            ready.sort();
            not_ready.sort();
            Endpoints {
                meta: Meta {
                    name: s.meta.name.clone(),
                    namespace: s.meta.namespace.clone(),
                    labels: s.meta.labels.clone(),
                    uid: s.meta.uid.clone(),
                    created_ms: s.meta.created_ms,
                    ..Default::default()
                },
                port: s.spec.port,
                ready,
                not_ready,
                protocol: s.spec.protocol,
                cluster_ip: s.spec.cluster_ip.clone().filter(|ip| ip != "None"),
            }
        })
        .collect();
    out.sort_by(|a, b| (&a.meta.namespace, &a.meta.name).cmp(&(&b.meta.namespace, &b.meta.name)));
    out
}

/// Whether the service's selector picks the pod (every selector label present and equal).
pub fn selects(s: &Service, p: &Pod) -> bool {
    !s.spec.selector.is_empty()
        && s.spec
            .selector
            .iter()
            .all(|(k, v)| p.meta.labels.get(k) == Some(v))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bramble_wire::objects::{
        Condition, ConditionKind, NodeStatus, PodSpec, PodStatus, ProcessState, ProcessStatus,
        ServiceSpec,
    };

    fn labels(kv: &[(&str, &str)]) -> bramble_wire::objects::Labels {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn svc(ns: &str, name: &str, app: &str) -> Service {
        Service {
            meta: Meta {
                name: name.into(),
                namespace: ns.into(),
                ..Default::default()
            },
            spec: ServiceSpec {
                selector: labels(&[("app", app)]),
                port: 8080,
                target_port: 80,
                ..Default::default()
            },
        }
    }

    fn node(name: &str, addr: Option<&str>, ready: bool) -> Node {
        Node {
            meta: Meta {
                name: name.into(),
                ..Default::default()
            },
            spec: bramble_wire::objects::NodeSpec {
                pod_cidr: "10.42.0.0/24".into(),
                ..Default::default()
            },
            status: NodeStatus {
                addresses: addr.map(|a| vec![a.to_string()]).unwrap_or_default(),
                conditions: vec![Condition {
                    kind: ConditionKind::Ready,
                    status: ready,
                    message: String::new(),
                    since_ms: 0,
                }],
                ..Default::default()
            },
        }
    }

    fn pod(ns: &str, name: &str, app: &str, node: Option<&str>, ready: bool) -> Pod {
        Pod {
            meta: Meta {
                name: name.into(),
                namespace: ns.into(),
                labels: labels(&[("app", app), ("tier", "x")]),
                ..Default::default()
            },
            spec: PodSpec {
                node_name: node.map(str::to_string),
                ..Default::default()
            },
            status: PodStatus {
                phase: PodPhase::Running,
                processes: vec![ProcessStatus {
                    name: "main".into(),
                    state: ProcessState::Running {
                        pid: 1,
                        started_ms: 0,
                    },
                    restarts: 0,
                    last_exit: None,
                    ready,
                }],
                ..Default::default()
            },
        }
    }

    fn names(a: &[EndpointAddress]) -> Vec<&str> {
        a.iter().map(|a| a.pod.as_str()).collect()
    }

    #[test]
    fn ready_host_pods_are_reached_at_their_node() {
        let services = [svc("default", "web", "web")];
        let nodes = [
            node("n1", Some("192.0.2.11"), true),
            node("n2", Some("192.0.2.12"), true),
        ];
        let pods = [
            pod("default", "web-b", "web", Some("n2"), true),
            pod("default", "web-a", "web", Some("n1"), true),
            pod("default", "db", "db", Some("n1"), true),
            pod("other", "web-other-ns", "web", Some("n1"), true),
            pod("default", "web-pending", "web", None, false),
        ];
        let eps = compute(&services, &pods, &nodes);
        assert_eq!(eps.len(), 1);
        let e = &eps[0];
        assert_eq!((e.meta.name.as_str(), e.port), ("web", 8080));
        assert_eq!(
            e.ready,
            vec![
                EndpointAddress {
                    ip: "192.0.2.11".into(),
                    port: 80,
                    pod: "web-a".into(),
                    node: "n1".into()
                },
                EndpointAddress {
                    ip: "192.0.2.12".into(),
                    port: 80,
                    pod: "web-b".into(),
                    node: "n2".into()
                },
            ]
        );
        assert!(e.not_ready.is_empty());
    }

    #[test]
    fn unready_unreachable_and_finished_pods() {
        let services = [svc("default", "web", "web")];
        let nodes = [
            node("n1", Some("192.0.2.11"), true),
            node("down", Some("192.0.2.12"), false),
            node("noaddr", None, true),
        ];
        // Isolated: ready at its own address once it has one.
        let mut isolated = pod("default", "isolated", "web", Some("n1"), true);
        isolated.spec.network = NetworkMode::Isolated;
        let mut with_ip = pod("default", "isolated-ip", "web", Some("n1"), true);
        with_ip.spec.network = NetworkMode::Isolated;
        with_ip.status.ip = "10.42.0.5".into();
        // An address outside its node's pod subnet (a hostile or broken node): never used.
        let mut loopback = pod("default", "loopback", "web", Some("n1"), true);
        loopback.spec.network = NetworkMode::Isolated;
        loopback.status.ip = "127.0.0.1".into();
        let mut none = pod("default", "none", "web", Some("n1"), true);
        none.spec.network = NetworkMode::None;
        let mut failed = pod("default", "failed", "web", Some("n1"), false);
        failed.status.phase = PodPhase::Failed;
        let mut starting = pod("default", "starting", "web", Some("n1"), false);
        starting.status.phase = PodPhase::Pending;
        starting.status.processes.clear();
        let pods = [
            pod("default", "unready", "web", Some("n1"), false),
            pod("default", "on-down-node", "web", Some("down"), true),
            pod("default", "on-noaddr-node", "web", Some("noaddr"), true),
            pod("default", "on-unknown-node", "web", Some("gone"), true),
            isolated,
            with_ip,
            loopback,
            none,
            failed,
            starting,
            pod("default", "ok", "web", Some("n1"), true),
        ];
        let e = &compute(&services, &pods, &nodes)[0];
        assert_eq!(names(&e.ready), ["isolated-ip", "ok"]);
        assert!(e.not_ready.iter().all(|a| a.ip != "127.0.0.1"));
        assert_eq!(e.ready[0].ip, "10.42.0.5");
        assert_eq!(e.ready[1].ip, "192.0.2.11");
        let mut nr = names(&e.not_ready);
        nr.sort();
        assert_eq!(
            nr,
            [
                "isolated",
                "loopback",
                "none",
                "on-down-node",
                "on-noaddr-node",
                "on-unknown-node",
                "starting",
                "unready"
            ]
        );
    }

    #[test]
    fn services_sorted_and_empty_ones_listed() {
        let services = [
            svc("b", "z", "web"),
            svc("a", "y", "none"),
            svc("a", "x", "web"),
        ];
        let nodes = [node("n1", Some("127.0.0.1"), true)];
        let pods = [pod("a", "p", "web", Some("n1"), true)];
        let eps = compute(&services, &pods, &nodes);
        let keys: Vec<_> = eps
            .iter()
            .map(|e| (e.meta.namespace.as_str(), e.meta.name.as_str()))
            .collect();
        assert_eq!(keys, [("a", "x"), ("a", "y"), ("b", "z")]);
        assert_eq!(names(&eps[0].ready), ["p"]);
        assert!(eps[1].ready.is_empty() && eps[1].not_ready.is_empty());
        assert!(eps[2].ready.is_empty());
    }

    #[test]
    fn selector_needs_every_label() {
        let mut s = svc("default", "web", "web");
        s.spec.selector.insert("tier".into(), "x".into());
        let p = pod("default", "p", "web", Some("n1"), true);
        assert!(selects(&s, &p));
        s.spec.selector.insert("tier".into(), "y".into());
        assert!(!selects(&s, &p));
        s.spec.selector.clear();
        assert!(!selects(&s, &p), "an empty selector picks nothing");
    }
}
