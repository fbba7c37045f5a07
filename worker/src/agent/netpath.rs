//! The node's kernel network path, driven from the agent's event loop:
//! - the `inet <table>` nftables table ([`crate::net::rules`], programmed by
//!   [`crate::sys::nft`]): egress NAT of the pod range, the services' virtual IPs and node
//!   ports, isolated pods' host ports. It is replaced as a whole, atomically, whenever its plan
//!   changes, and it stays in the kernel when the agent dies: established connections and new
//!   ones keep reaching the endpoints they were given while the agent restarts; the agent
//!   reconciles it (same plan: one copy of every rule) when it comes back.
//! - the route to the service range over the pod bridge (so the node itself reaches virtual
//!   IPs) and the bridge itself, as soon as the node's subnet is known;
//! - the cluster DNS on the bridge's gateway address, port 53, for isolated pods
//!   ([`crate::dns`]), fed from the endpoints.
//!
//! Nothing here runs in `userspace` mode (`--service-proxy userspace`), or before the master sent
//! the cluster's ranges; the userspace proxy keeps serving every service port (loopback
//! connections to a node port always go to it).

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bramble_wire::msg::ClusterNetwork;
use bramble_wire::net::Ipv4Cidr;
use bramble_wire::objects::{Endpoints, NetworkMode, Pod, Protocol};

use crate::net::rules::{self, HostPort, NetPlan, Proto, ServiceRule};
use crate::persist::{self, StateDir};
use crate::runtime::PodNetwork;

/// How the node serves services.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ServiceProxy {
    /// nftables rules in the kernel (and the userspace listener for loopback connections).
    #[default]
    Kernel,
    /// The agent's userspace proxy only (no nftables, no cluster DNS, no NAT).
    Userspace,
}

/// The kernel path's settings.
#[derive(Debug, Clone)]
pub struct NetConfig {
    /// Kernel or userspace.
    pub mode: ServiceProxy,
    /// The nftables table (family `inet`) the agent owns.
    pub table: String,
    /// The pod bridge.
    pub bridge: String,
    /// Port of the cluster DNS on the gateway (53; tests may pick another).
    pub dns_port: u16,
    /// The node's resolvers, forwarded to for names outside the cluster domain.
    pub upstream_resolv_conf: std::path::PathBuf,
}

impl Default for NetConfig {
    fn default() -> Self {
        NetConfig {
            mode: ServiceProxy::Kernel,
            table: "bramble".into(),
            bridge: "bramble0".into(),
            dns_port: 53,
            upstream_resolv_conf: "/etc/resolv.conf".into(),
        }
    }
}

/// The kernel path's state.
pub struct NetPath {
    cfg: NetConfig,
    state: StateDir,
    cluster: Option<ClusterNetwork>,
    /// The node's own pod subnet.
    subnet: Option<PodNetwork>,
    /// The bridge and service route are in place for this subnet and service range.
    bridged: Option<(PodNetwork, String)>,
    endpoints: Vec<Endpoints>,
    host_ports: Vec<HostPort>,
    /// The plan last programmed.
    applied: Option<NetPlan>,
    /// The last failure was logged (logged again only when it changes).
    failed: Option<String>,
    dns: Option<Arc<crate::dns::Dns>>,
    dns_at: Option<Ipv4Addr>,
    /// Cleared when the DNS server stops (it could not bind): pods then keep the node's.
    dns_up: Arc<AtomicBool>,
    /// Whether the kernel path is in use, and why (reported to the master after each connect).
    report: (bool, String),
}

impl std::fmt::Debug for NetPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NetPath")
            .field("mode", &self.cfg.mode)
            .field("cluster", &self.cluster)
            .finish_non_exhaustive()
    }
}

fn cidr(s: &str) -> Option<(Ipv4Addr, u8)> {
    Ipv4Cidr::parse(s).ok().map(|c| (c.network(), c.prefix()))
}

impl NetPath {
    /// The kernel path of a node (its last cluster ranges from the state dir). In kernel mode,
    /// checks that nf_tables with NAT works here; if it does not, says why and serves services
    /// from userspace only.
    pub fn new(mut cfg: NetConfig, state: &StateDir) -> NetPath {
        let mut report = match cfg.mode {
            ServiceProxy::Kernel => (
                true,
                format!(
                    "services, egress NAT and the cluster DNS in the kernel (nftables table \
                     inet {})",
                    cfg.table
                ),
            ),
            ServiceProxy::Userspace => (
                false,
                "--service-proxy userspace: services are served by the agent's userspace proxy \
                 only (no virtual IPs, NAT or cluster DNS)"
                    .to_string(),
            ),
        };
        if cfg.mode == ServiceProxy::Kernel
            && let Err(e) = crate::sys::nft::available()
        {
            tracing::warn!(
                "preflight: {e}; so services are served by the userspace proxy only, and \
                 isolated pods get no NAT and no cluster DNS (--service-proxy userspace \
                 silences this)"
            );
            report = (
                false,
                format!(
                    "{e}; services are served by the agent's userspace proxy only (no virtual \
                     IPs, NAT or cluster DNS)"
                ),
            );
            cfg.mode = ServiceProxy::Userspace;
        }
        let cluster = match persist::read_postcard::<ClusterNetwork>(
            persist::CLUSTER_NETWORK,
            &state.cluster_network(),
        ) {
            Ok(found) => found.map(|(_, c)| c),
            Err(e) => {
                tracing::warn!(
                    "ignoring unreadable {}: {e}",
                    state.cluster_network().display()
                );
                None
            }
        };
        NetPath {
            cfg,
            state: state.clone(),
            cluster,
            subnet: None,
            bridged: None,
            endpoints: Vec::new(),
            host_ports: Vec::new(),
            applied: None,
            failed: None,
            dns: None,
            dns_at: None,
            dns_up: Arc::new(AtomicBool::new(false)),
            report,
        }
    }

    /// What the node tells the master about its network path after connecting.
    pub fn report(&self) -> bramble_wire::msg::NodeUp {
        bramble_wire::msg::NodeUp::NetworkPath {
            kernel: self.report.0,
            message: self.report.1.clone(),
        }
    }

    /// Whether the kernel serves services (the table is programmed).
    pub fn serving(&self) -> bool {
        self.cfg.mode == ServiceProxy::Kernel && self.applied.is_some()
    }

    /// The master's cluster ranges and domain (kept in the state dir when they change).
    pub fn set_cluster(&mut self, c: ClusterNetwork) {
        if self.cluster.as_ref() != Some(&c) {
            if let Ok(bytes) = persist::encode_postcard(persist::CLUSTER_NETWORK, &c)
                && let Err(e) = persist::write_file(&self.state.cluster_network(), &bytes, 0o644)
            {
                tracing::warn!("cannot keep the cluster network: {e}");
            }
            self.cluster = Some(c);
        }
        self.reconcile();
    }

    /// The node's own pod subnet.
    pub fn set_subnet(&mut self, subnet: Option<PodNetwork>) {
        self.subnet = subnet;
        self.reconcile();
    }

    /// The services' endpoints (the whole set).
    pub fn set_endpoints(&mut self, eps: &[Endpoints]) {
        self.endpoints = eps.to_vec();
        self.reconcile();
    }

    /// The isolated pods' host ports on this node, from the pods and their addresses.
    pub fn set_pods<'a>(&mut self, pods: impl Iterator<Item = (&'a Pod, Option<&'a str>)>) {
        let mut hp = Vec::new();
        for (pod, ip) in pods {
            let Some(ip) = ip.and_then(|i| i.parse::<Ipv4Addr>().ok()) else {
                continue;
            };
            if pod.spec.network != NetworkMode::Isolated {
                continue;
            }
            for p in pod.spec.processes.iter().flat_map(|p| &p.ports) {
                // A port has no protocol: its host port forwards both.
                if let Some(host_port) = p.host_port {
                    for protocol in [Proto::Tcp, Proto::Udp] {
                        hp.push(HostPort {
                            protocol,
                            host_port,
                            pod_ip: ip,
                            container_port: p.container_port,
                        });
                    }
                }
            }
        }
        hp.sort_by_key(|h| (h.host_port, h.protocol == Proto::Udp, h.pod_ip));
        if hp != self.host_ports {
            self.host_ports = hp;
            self.reconcile();
        }
    }

    /// The `/etc/resolv.conf` for `pod`: the cluster DNS for an isolated pod when it is served.
    pub fn resolv_conf(&self, pod: &Pod) -> Option<String> {
        let (at, cluster) = (self.dns_at?, self.cluster.as_ref()?);
        if !self.dns_up.load(Ordering::Relaxed) {
            return None;
        }
        (pod.spec.network == NetworkMode::Isolated)
            .then(|| crate::dns::resolv_conf(at, &pod.meta.namespace, &cluster.domain))
    }

    /// The plan for the current inputs; `None` until the ranges are known.
    fn plan(&self) -> Option<NetPlan> {
        let cluster = self.cluster.as_ref()?;
        Some(NetPlan {
            bridge: self.cfg.bridge.clone(),
            cluster_cidr: cidr(&cluster.cluster_cidr)?,
            pod_subnet: self.subnet.as_ref().map(|n| (n.network, n.prefix)),
            service_cidr: cidr(&cluster.service_cidr)?,
            services: services(&self.endpoints),
            host_ports: self.host_ports.clone(),
        })
    }

    fn fail(&mut self, what: String) {
        if self.failed.as_ref() != Some(&what) {
            tracing::warn!("{what}");
            self.failed = Some(what);
        }
    }

    /// Brings the kernel in line with the inputs (cheap when nothing changed).
    fn reconcile(&mut self) {
        if self.cfg.mode != ServiceProxy::Kernel {
            return;
        }
        let Some(plan) = self.plan() else {
            return;
        };
        // The bridge, the route to the service range, and the DNS on the gateway.
        if let (Some(net), Some(c)) = (self.subnet.clone(), self.cluster.clone()) {
            let want = (net.clone(), c.service_cidr.clone());
            if self.bridged.as_ref() != Some(&want) {
                let r =
                    crate::sys::podnet::ensure_bridge(&self.cfg.bridge, net.gateway(), net.prefix)
                        .and_then(|()| {
                            crate::sys::podnet::ensure_service_route(
                                &self.cfg.bridge,
                                plan.service_cidr.0,
                                plan.service_cidr.1,
                            )
                        });
                match r {
                    Ok(()) => self.bridged = Some(want),
                    Err(e) => self.fail(format!(
                        "cannot set up bridge {} and the route to the service range {}: {e}",
                        self.cfg.bridge, c.service_cidr
                    )),
                }
            }
            if self.bridged.is_some() && self.dns_at != Some(net.gateway()) {
                self.start_dns(net.gateway());
            }
        }
        if let Some(dns) = &self.dns
            && let Some(c) = &self.cluster
        {
            dns.update(zone(&c.domain, &self.endpoints));
        }
        if self.applied.as_ref() == Some(&plan) {
            return;
        }
        let mut table = rules::plan(&plan);
        table.name = self.cfg.table.clone();
        match crate::sys::nft::replace_table(&table) {
            Ok(()) => {
                tracing::debug!(
                    services = plan.services.len(),
                    host_ports = plan.host_ports.len(),
                    table = %self.cfg.table,
                    "nftables table programmed"
                );
                self.applied = Some(plan);
                self.failed = None;
            }
            Err(e) => self.fail(format!(
                "cannot program nftables table inet {}: {e}; services are served by the \
                 userspace proxy only",
                self.cfg.table
            )),
        }
    }

    fn start_dns(&mut self, at: Ipv4Addr) {
        let Some(c) = &self.cluster else { return };
        let dns = Arc::new(crate::dns::Dns::new(
            crate::dns::Upstreams::from_resolv_conf(&self.cfg.upstream_resolv_conf, 53),
        ));
        dns.update(zone(&c.domain, &self.endpoints));
        let addr = SocketAddr::from((at, self.cfg.dns_port));
        tracing::info!(%addr, domain = %c.domain, "cluster DNS");
        let server = dns.clone();
        let up = Arc::new(AtomicBool::new(true));
        self.dns_up = up.clone();
        smol::spawn(async move {
            if let Err(e) = server.serve(addr).await {
                up.store(false, Ordering::Relaxed);
                tracing::warn!(
                    "cluster DNS on {addr} stopped: {e}; isolated pods started from now on use \
                     the node's resolv.conf"
                );
            }
        })
        .detach();
        self.dns = Some(dns);
        self.dns_at = Some(at);
    }
}

fn proto(p: Protocol) -> Proto {
    match p {
        Protocol::Tcp => Proto::Tcp,
        Protocol::Udp => Proto::Udp,
    }
}

/// The services as rules: every service's port on every node (node port), and its virtual IP.
/// A service with an endpoint on a loopback address (nodes sharing one host) is left to the
/// userspace proxy: the kernel does not route to loopback from other interfaces.
pub fn services(eps: &[Endpoints]) -> Vec<ServiceRule> {
    let mut out: Vec<ServiceRule> = eps
        .iter()
        .filter(|e| e.port != 0)
        .filter_map(|e| {
            let endpoints: Vec<(Ipv4Addr, u16)> = e
                .ready
                .iter()
                .filter_map(|a| Some((a.ip.parse::<Ipv4Addr>().ok()?, a.port)))
                .collect();
            if endpoints
                .iter()
                .any(|(ip, _)| ip.is_loopback() || ip.is_unspecified())
            {
                return None;
            }
            Some(ServiceRule {
                namespace: e.meta.namespace.clone(),
                name: e.meta.name.clone(),
                protocol: proto(e.protocol),
                cluster_ip: e.cluster_ip.as_deref().and_then(|v| v.parse().ok()),
                port: e.port,
                node_port: true,
                endpoints,
            })
        })
        .collect();
    out.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    out
}

/// The DNS zone of the endpoints.
pub fn zone(domain: &str, eps: &[Endpoints]) -> crate::dns::ZoneInput {
    crate::dns::ZoneInput {
        domain: domain.to_string(),
        services: eps
            .iter()
            .map(|e| crate::dns::ServiceRecord {
                namespace: e.meta.namespace.clone(),
                name: e.meta.name.clone(),
                cluster_ip: e.cluster_ip.as_deref().and_then(|v| v.parse().ok()),
                pods: e
                    .ready
                    .iter()
                    .filter_map(|a| Some((a.pod.clone(), a.ip.parse().ok()?)))
                    .collect(),
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bramble_wire::objects::{EndpointAddress, Meta};

    fn eps(name: &str, vip: Option<&str>, ready: &[(&str, &str)]) -> Endpoints {
        Endpoints {
            meta: Meta {
                name: name.into(),
                namespace: "default".into(),
                ..Default::default()
            },
            port: 8080,
            ready: ready
                .iter()
                .map(|(pod, ip)| EndpointAddress {
                    ip: ip.to_string(),
                    port: 80,
                    pod: pod.to_string(),
                    node: "n1".into(),
                })
                .collect(),
            not_ready: Vec::new(),
            protocol: Protocol::Tcp,
            cluster_ip: vip.map(str::to_string),
        }
    }

    #[test]
    fn services_become_rules_except_on_loopback() {
        let all = [
            eps(
                "web",
                Some("10.43.0.5"),
                &[("a", "10.42.0.2"), ("b", "10.42.1.2")],
            ),
            eps("local", Some("10.43.0.6"), &[("c", "127.0.0.1")]),
            eps("headless", None, &[("d", "10.42.0.3")]),
        ];
        let r = services(&all);
        assert_eq!(
            r.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(),
            ["headless", "web"]
        );
        assert_eq!(r[1].cluster_ip, Some(Ipv4Addr::new(10, 43, 0, 5)));
        assert_eq!(
            r[1].endpoints,
            [
                (Ipv4Addr::new(10, 42, 0, 2), 80),
                (Ipv4Addr::new(10, 42, 1, 2), 80)
            ]
        );
        assert_eq!(r[0].cluster_ip, None);
        let z = zone("bramble.local", &all);
        assert_eq!(z.services.len(), 3);
        assert_eq!(
            z.services[0].pods,
            [
                ("a".to_string(), Ipv4Addr::new(10, 42, 0, 2)),
                ("b".to_string(), Ipv4Addr::new(10, 42, 1, 2))
            ]
        );
    }
}
