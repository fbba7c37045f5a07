//! Host ports on this node: which the assigned pods claim ([`claims`], pure), and whether the
//! node can give them ([`HostPorts`]). An isolated pod's `host_port` is held open by the agent
//! while the pod is assigned (as kubelet's host-port manager does), so nothing else on the node
//! takes it; a host-network pod binds its ports itself, so they are checked once, before it
//! starts. A port something else holds is a [`Conflict`] the agent reports to the master, which
//! shows it as an event on the pod and the node (`bramble describe`, `bramble get events`).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::time::{Duration, Instant};

use bramble_wire::msg::{Conflict, ConflictKind};
use bramble_wire::objects::{NetworkMode, Pod};

/// How often a held port that could not be bound is tried again.
pub const RETRY: Duration = Duration::from_secs(10);

/// One port a pod claims on the node.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Claim {
    /// The pod's UID.
    pub uid: String,
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
    /// The port on the node.
    pub port: u16,
    /// Held by the agent (isolated pod) rather than bound by the pod itself (host network).
    pub held: bool,
}

/// The node ports `pods` claim: an isolated pod its `host_port`s, a host-network pod every
/// declared port (its `container_port`, and a `host_port` if one is given), as the scheduler
/// counts them.
pub fn claims(pods: &[Pod]) -> Vec<Claim> {
    let mut out = Vec::new();
    for p in pods {
        let held = p.spec.network == NetworkMode::Isolated;
        let mut ports: Vec<u16> = p
            .spec
            .processes
            .iter()
            .flat_map(|pr| pr.ports.iter())
            .flat_map(|q| {
                let own = (!held).then_some(q.container_port);
                own.into_iter().chain(q.host_port)
            })
            .filter(|&port| port != 0)
            .collect();
        ports.sort_unstable();
        ports.dedup();
        out.extend(ports.into_iter().map(|port| Claim {
            uid: p.meta.uid.clone(),
            namespace: p.meta.namespace.clone(),
            name: p.meta.name.clone(),
            port,
            held,
        }));
    }
    out
}

/// The message of a host port conflict.
pub fn conflict_message(c: &Claim, err: &std::io::Error) -> String {
    format!(
        "host port {}/TCP of pod {}/{} is already in use on this node ({err}): stop what holds \
         it or give the pod another port",
        c.port, c.namespace, c.name
    )
}

/// The node's host ports: reservations held for isolated pods and the conflicts found.
#[derive(Debug, Default)]
pub struct HostPorts {
    held: HashMap<Claim, TcpListener>,
    conflicts: BTreeMap<Claim, String>,
    /// Host-network pods' claims already checked (once, before their pod started).
    checked: HashSet<Claim>,
    retry_at: Option<Instant>,
}

impl HostPorts {
    /// Brings the reservations and conflicts in line with `pods` (the assignment). `new_uids`
    /// are pods not started yet: only their host-network ports are checked (a running pod holds
    /// its own). Call it before the new pods start, and on the tick (retries).
    pub fn update(&mut self, pods: &[Pod], new_uids: &HashSet<&str>) {
        let wanted = claims(pods);
        let set: HashSet<&Claim> = wanted.iter().collect();
        self.held.retain(|c, _| set.contains(c));
        self.conflicts.retain(|c, _| set.contains(c));
        self.checked.retain(|c| set.contains(c));
        let now = Instant::now();
        let retry = self.retry_at.is_none_or(|t| t <= now);
        let mut failing = false;
        for c in wanted {
            if c.held {
                if self.held.contains_key(&c) || (self.conflicts.contains_key(&c) && !retry) {
                    failing |= self.conflicts.contains_key(&c);
                    continue;
                }
                match bind(c.port) {
                    Ok(l) => {
                        self.conflicts.remove(&c);
                        self.held.insert(c, l);
                    }
                    Err(e) => {
                        if !self.conflicts.contains_key(&c) {
                            tracing::error!(pod = %format!("{}/{}", c.namespace, c.name), port = c.port, "{}", conflict_message(&c, &e));
                        }
                        self.conflicts.insert(c.clone(), conflict_message(&c, &e));
                        failing = true;
                    }
                }
            } else if new_uids.contains(c.uid.as_str()) && !self.checked.contains(&c) {
                self.checked.insert(c.clone());
                // Bound and released at once: the pod binds it itself.
                if let Err(e) = bind(c.port) {
                    tracing::error!(pod = %format!("{}/{}", c.namespace, c.name), port = c.port, "{}", conflict_message(&c, &e));
                    self.conflicts.insert(c.clone(), conflict_message(&c, &e));
                }
            }
        }
        if retry {
            self.retry_at = failing.then(|| now + RETRY);
        }
    }

    /// Whether a port that could not be held is due to be tried again.
    pub fn retry_due(&self) -> bool {
        self.retry_at.is_some_and(|t| t <= Instant::now())
    }

    /// The conflicts now.
    pub fn conflicts(&self) -> Vec<Conflict> {
        self.conflicts
            .iter()
            .map(|(c, message)| Conflict {
                kind: ConflictKind::HostPort,
                namespace: c.namespace.clone(),
                name: c.name.clone(),
                uid: c.uid.clone(),
                port: c.port,
                message: message.clone(),
            })
            .collect()
    }
}

fn bind(port: u16) -> std::io::Result<TcpListener> {
    TcpListener::bind(SocketAddr::from((Ipv4Addr::UNSPECIFIED, port)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bramble_wire::objects::{Port, ProcessSpec};

    fn pod(name: &str, network: NetworkMode, ports: &[(u16, Option<u16>)]) -> Pod {
        let mut p = Pod::default();
        p.meta.name = name.into();
        p.meta.namespace = "default".into();
        p.meta.uid = format!("{name}-uid");
        p.spec.network = network;
        p.spec.processes = vec![ProcessSpec {
            name: "main".into(),
            ports: ports
                .iter()
                .map(|&(container_port, host_port)| Port {
                    container_port,
                    host_port,
                })
                .collect(),
            ..Default::default()
        }];
        p
    }

    #[test]
    fn claims_follow_the_schedulers_rules() {
        let pods = [
            pod(
                "iso",
                NetworkMode::Isolated,
                &[(80, Some(8080)), (81, None)],
            ),
            pod(
                "host",
                NetworkMode::Host,
                &[(9000, None), (9001, Some(9002))],
            ),
        ];
        let c = claims(&pods);
        let got: Vec<(&str, u16, bool)> = c
            .iter()
            .map(|c| (c.name.as_str(), c.port, c.held))
            .collect();
        assert_eq!(
            got,
            [
                ("iso", 8080, true),
                ("host", 9000, false),
                ("host", 9001, false),
                ("host", 9002, false)
            ]
        );
    }

    #[test]
    fn a_port_held_elsewhere_is_a_conflict_until_the_pod_goes() {
        // Something else on the node holds a port.
        let other = TcpListener::bind("0.0.0.0:0").unwrap();
        let taken = other.local_addr().unwrap().port();
        let free = TcpListener::bind("0.0.0.0:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let iso = pod("iso", NetworkMode::Isolated, &[(80, Some(taken))]);
        let ok = pod("ok", NetworkMode::Isolated, &[(80, Some(free))]);
        let host = pod("host", NetworkMode::Host, &[(taken, None)]);
        let mut hp = HostPorts::default();
        let pods = vec![iso.clone(), ok.clone(), host.clone()];
        let new: HashSet<&str> = pods.iter().map(|p| p.meta.uid.as_str()).collect();
        hp.update(&pods, &new);
        let c = hp.conflicts();
        let names: Vec<&str> = c.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["host", "iso"], "{c:?}");
        assert!(
            c[0].message
                .contains(&format!("host port {taken}/TCP of pod default/host"))
        );
        // The free port is held now: nothing else can take it.
        assert!(TcpListener::bind(("0.0.0.0", free)).is_err());
        // A running host-network pod is not checked again (it holds its own port).
        hp.update(&pods, &HashSet::new());
        assert_eq!(hp.conflicts().len(), 2);
        // Pods gone: their conflicts and reservations go.
        hp.update(&[], &HashSet::new());
        assert!(hp.conflicts().is_empty());
        assert!(TcpListener::bind(("0.0.0.0", free)).is_ok());
        drop(other);
    }
}
