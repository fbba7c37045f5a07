//! Services, node ports and host ports as nftables NAT rules (kube-proxy's nftables mode is the
//! model), planned as a table description ([`Table`]) that [`crate::sys::nft::replace_table`]
//! installs in one atomic batch. Pure: no syscalls, unit-tested without root.
//!
//! The table `inet bramble` holds:
//!
//! - `prerouting` (nat, hook prerouting, priority dstnat −100) and `output` (nat, hook output,
//!   −100): IPv4 packets jump to `services`. Every rule that reads the IPv4 header says
//!   `meta nfproto ipv4` itself although only IPv4 gets there: `nft list` needs that dependency
//!   in the rule to show `ip daddr` rather than raw header bits, and NAT chains only see the
//!   first packet of a connection, so the repetition costs little.
//! - `services`: a service's cluster IP and port jump to the service's chain; its node port
//!   (`fib daddr type local`, not `127.0.0.0/8`: loopback to the node's port stays with the
//!   agent's userspace listener, since DNAT of loopback traffic needs `route_localnet`) jumps
//!   there too; an isolated pod's host port (same local match) DNATs to the pod. A service
//!   without endpoints gets no rule: its traffic falls through to the userspace listener, which
//!   refuses it.
//! - one chain per service with endpoints: per-connection load balancing by the iptables
//!   "statistic" cascade without sets or maps: rule `i` of `N` is
//!   `numgen random mod (N-i) == 0 → dnat to endpoint i` (each endpoint is picked with
//!   probability 1/N), the last one unconditional. NAT chains only see a connection's first
//!   packet, so established connections keep their backend when the table is replaced.
//! - `postrouting` (nat, hook postrouting, priority srcnat 100), three masquerade rules:
//!   1. `ip saddr CLUSTER ip daddr != CLUSTER`: pods reach the LAN and the internet with the
//!      node's address (the LAN has no routes to the pod subnets).
//!   2. `ct status dnat oifname BRIDGE`: hairpin. A pod that reaches a service whose chosen
//!      endpoint is on the same bridge would otherwise get the reply straight from the endpoint
//!      over the bridge (layer 2, never through the node's conntrack without `br_netfilter`),
//!      from an address it did not talk to. Masquerading makes the endpoint answer the node.
//!      (Matching `iifname BRIDGE` here, as first drafted, never matches: a forwarded packet
//!      has no input interface at postrouting.)
//!   3. `ct status dnat ip saddr != POD_SUBNET` (the node's own pod subnet): every other DNATed
//!      connection not from a local pod — external clients and remote pods on a node port or
//!      host port, the node itself on a cluster IP. The endpoint may be on a third node, which
//!      would answer the client directly (asymmetric: the client never sees the reply un-NATed),
//!      so the reply must come back through this node. Excluding only `!= CLUSTER` (first draft)
//!      breaks a remote pod reaching a node port whose endpoint is elsewhere. What stays
//!      un-masqueraded: a local pod reaching a service whose endpoint is on another node; its
//!      reply is routed back through this node (the pod's subnet is routed here) and un-NATed,
//!      and the endpoint sees the client pod's own address. Without a known pod subnet, every
//!      DNATed connection is masqueraded (always correct, the source address is lost).

use std::fmt;
use std::net::Ipv4Addr;

/// The nftables table this node's rules live in (family `inet`).
pub const TABLE: &str = "bramble";

/// A transport protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Proto {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
}

impl Proto {
    /// The IP protocol number.
    pub fn number(self) -> u8 {
        match self {
            Proto::Tcp => 6,
            Proto::Udp => 17,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        }
    }
}

/// What the node serves: the input of [`plan`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetPlan {
    /// The pod bridge (`bramble0`).
    pub bridge: String,
    /// All pod subnets of the cluster (`10.42.0.0/16`).
    pub cluster_cidr: (Ipv4Addr, u8),
    /// This node's own pod subnet, once the master gave one (see the module doc, rule 3).
    pub pod_subnet: Option<(Ipv4Addr, u8)>,
    /// The service range (`10.43.0.0/16`); documents the plan, no rule needs it.
    pub service_cidr: (Ipv4Addr, u8),
    /// Services, sorted by the caller (chain names follow this order).
    pub services: Vec<ServiceRule>,
    /// Isolated pods' host ports.
    pub host_ports: Vec<HostPort>,
}

/// One port of a service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceRule {
    /// The service's namespace.
    pub namespace: String,
    /// The service's name.
    pub name: String,
    /// Its protocol.
    pub protocol: Proto,
    /// Its virtual IP, if it has one.
    pub cluster_ip: Option<Ipv4Addr>,
    /// The service port: on the cluster IP and, with `node_port`, on the node's addresses.
    pub port: u16,
    /// Whether the port is also open on every local address of the node.
    pub node_port: bool,
    /// Ready endpoints: address and target port.
    pub endpoints: Vec<(Ipv4Addr, u16)>,
}

/// An isolated pod's host port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPort {
    /// Its protocol.
    pub protocol: Proto,
    /// The port on the node's addresses.
    pub host_port: u16,
    /// The pod's address.
    pub pod_ip: Ipv4Addr,
    /// The port in the pod.
    pub container_port: u16,
}

/// A netfilter hook of a base chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hook {
    /// `prerouting`.
    Prerouting,
    /// `output`.
    Output,
    /// `postrouting`.
    Postrouting,
}

impl Hook {
    /// The hook number (`NF_INET_*`).
    pub fn number(self) -> u32 {
        match self {
            Hook::Prerouting => 0,
            Hook::Output => 3,
            Hook::Postrouting => 4,
        }
    }
}

/// A base chain's attachment: type `nat`, a hook and a priority.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BaseChain {
    /// The hook.
    pub hook: Hook,
    /// The priority (dstnat −100, srcnat 100).
    pub priority: i32,
}

/// A table of family `inet`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    /// Its name.
    pub name: String,
    /// Its chains, in creation order.
    pub chains: Vec<Chain>,
}

/// A chain: a base chain of type `nat` if `base` is set, else a regular chain (a jump target).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chain {
    /// Its name.
    pub name: String,
    /// Its hook, for a base chain.
    pub base: Option<BaseChain>,
    /// Its rules, in order.
    pub rules: Vec<Rule>,
}

/// A rule: matches, then at most one statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule(pub Vec<Expr>);

/// A rule's expressions, each one or a few kernel expressions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expr {
    /// `meta nfproto ipv4`.
    Ipv4,
    /// `meta l4proto tcp|udp`.
    L4proto(Proto),
    /// `ip saddr [!=] NET/LEN`.
    Saddr {
        /// The network.
        net: (Ipv4Addr, u8),
        /// Match the complement.
        not: bool,
    },
    /// `ip daddr [!=] NET/LEN`.
    Daddr {
        /// The network.
        net: (Ipv4Addr, u8),
        /// Match the complement.
        not: bool,
    },
    /// `th dport PORT`.
    Dport(u16),
    /// `fib daddr type local`: addressed to the node.
    FibDaddrLocal,
    /// `ct status dnat`.
    CtDnat,
    /// `oifname NAME`.
    Oifname(String),
    /// `numgen random mod N == 0`.
    OneIn(u32),
    /// `jump CHAIN`.
    Jump(String),
    /// `dnat ip to ADDR:PORT`.
    Dnat(Ipv4Addr, u16),
    /// `masquerade`.
    Masquerade,
}

fn net(f: &mut fmt::Formatter<'_>, (a, len): (Ipv4Addr, u8)) -> fmt::Result {
    if len == 32 {
        write!(f, "{a}")
    } else {
        write!(f, "{a}/{len}")
    }
}

impl fmt::Display for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let not = |n: bool| if n { "!= " } else { "" };
        match self {
            Expr::Ipv4 => write!(f, "meta nfproto ipv4"),
            Expr::L4proto(p) => write!(f, "meta l4proto {}", p.name()),
            Expr::Saddr { net: n, not: x } => {
                write!(f, "ip saddr {}", not(*x))?;
                net(f, *n)
            }
            Expr::Daddr { net: n, not: x } => {
                write!(f, "ip daddr {}", not(*x))?;
                net(f, *n)
            }
            Expr::Dport(p) => write!(f, "th dport {p}"),
            Expr::FibDaddrLocal => write!(f, "fib daddr type local"),
            Expr::CtDnat => write!(f, "ct status dnat"),
            Expr::Oifname(n) => write!(f, "oifname \"{n}\""),
            Expr::OneIn(n) => write!(f, "numgen random mod {n} == 0"),
            Expr::Jump(c) => write!(f, "jump {c}"),
            Expr::Dnat(a, p) => write!(f, "dnat ip to {a}:{p}"),
            Expr::Masquerade => write!(f, "masquerade"),
        }
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl fmt::Display for Table {
    /// In `nft list` style (not byte for byte what `nft` prints).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "table inet {} {{", self.name)?;
        for c in &self.chains {
            writeln!(f, "\tchain {} {{", c.name)?;
            if let Some(b) = c.base {
                let hook = match b.hook {
                    Hook::Prerouting => "prerouting",
                    Hook::Output => "output",
                    Hook::Postrouting => "postrouting",
                };
                writeln!(
                    f,
                    "\t\ttype nat hook {hook} priority {}; policy accept;",
                    b.priority
                )?;
            }
            for r in &c.rules {
                writeln!(f, "\t\t{r}")?;
            }
            writeln!(f, "\t}}")?;
        }
        writeln!(f, "}}")
    }
}

/// Priority of destination NAT (`dstnat`).
pub const DSTNAT: i32 = -100;
/// Priority of source NAT (`srcnat`).
pub const SRCNAT: i32 = 100;

/// The longest chain name we make (the kernel allows 256 bytes with the NUL).
const MAX_CHAIN_NAME: usize = 200;

/// The chain of the `i`th service: an index (unique) and the service's names (readable).
fn service_chain(i: usize, s: &ServiceRule) -> String {
    let mut n = format!(
        "svc{i}-{}-{}-{}{}",
        s.namespace,
        s.name,
        s.protocol.name(),
        s.port
    );
    if n.len() > MAX_CHAIN_NAME {
        let mut cut = MAX_CHAIN_NAME;
        while !n.is_char_boundary(cut) {
            cut -= 1;
        }
        n.truncate(cut);
    }
    n
}

/// Matches of "addressed to this node, not over loopback" (node ports and host ports).
fn local_port(p: Proto, port: u16) -> Vec<Expr> {
    vec![
        Expr::Ipv4,
        Expr::FibDaddrLocal,
        Expr::Daddr {
            net: (Ipv4Addr::new(127, 0, 0, 0), 8),
            not: true,
        },
        Expr::L4proto(p),
        Expr::Dport(port),
    ]
}

/// The table for `p`.
pub fn plan(p: &NetPlan) -> Table {
    let to_services = || vec![Rule(vec![Expr::Ipv4, Expr::Jump("services".into())])];
    let mut chains = vec![
        Chain {
            name: "prerouting".into(),
            base: Some(BaseChain {
                hook: Hook::Prerouting,
                priority: DSTNAT,
            }),
            rules: to_services(),
        },
        Chain {
            name: "output".into(),
            base: Some(BaseChain {
                hook: Hook::Output,
                priority: DSTNAT,
            }),
            rules: to_services(),
        },
    ];

    let mut services = Vec::new();
    let mut node_ports = Vec::new();
    let mut svc_chains = Vec::new();
    for (i, s) in p.services.iter().enumerate() {
        if s.endpoints.is_empty() || (s.cluster_ip.is_none() && !s.node_port) {
            continue;
        }
        let name = service_chain(i, s);
        if let Some(vip) = s.cluster_ip {
            services.push(Rule(vec![
                Expr::Ipv4,
                Expr::Daddr {
                    net: (vip, 32),
                    not: false,
                },
                Expr::L4proto(s.protocol),
                Expr::Dport(s.port),
                Expr::Jump(name.clone()),
            ]));
        }
        if s.node_port {
            let mut r = local_port(s.protocol, s.port);
            r.push(Expr::Jump(name.clone()));
            node_ports.push(Rule(r));
        }
        let n = s.endpoints.len();
        let rules = s
            .endpoints
            .iter()
            .enumerate()
            .map(|(k, &(ip, port))| {
                let mut r = Vec::new();
                if k + 1 < n {
                    r.push(Expr::OneIn((n - k) as u32));
                }
                r.push(Expr::Dnat(ip, port));
                Rule(r)
            })
            .collect();
        svc_chains.push(Chain {
            name,
            base: None,
            rules,
        });
    }
    services.extend(node_ports);
    services.extend(p.host_ports.iter().map(|h| {
        let mut r = local_port(h.protocol, h.host_port);
        r.push(Expr::Dnat(h.pod_ip, h.container_port));
        Rule(r)
    }));
    chains.push(Chain {
        name: "services".into(),
        base: None,
        rules: services,
    });
    chains.extend(svc_chains);

    let cluster = p.cluster_cidr;
    let mut post = vec![
        Rule(vec![
            Expr::Ipv4,
            Expr::Saddr {
                net: cluster,
                not: false,
            },
            Expr::Daddr {
                net: cluster,
                not: true,
            },
            Expr::Masquerade,
        ]),
        Rule(vec![
            Expr::Ipv4,
            Expr::CtDnat,
            Expr::Oifname(p.bridge.clone()),
            Expr::Masquerade,
        ]),
    ];
    post.push(Rule(match p.pod_subnet {
        Some(mine) => vec![
            Expr::Ipv4,
            Expr::CtDnat,
            Expr::Saddr {
                net: mine,
                not: true,
            },
            Expr::Masquerade,
        ],
        None => vec![Expr::Ipv4, Expr::CtDnat, Expr::Masquerade],
    }));
    chains.push(Chain {
        name: "postrouting".into(),
        base: Some(BaseChain {
            hook: Hook::Postrouting,
            priority: SRCNAT,
        }),
        rules: post,
    });

    Table {
        name: TABLE.into(),
        chains,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    fn base() -> NetPlan {
        NetPlan {
            bridge: "bramble0".into(),
            cluster_cidr: (ip("10.42.0.0"), 16),
            pod_subnet: Some((ip("10.42.1.0"), 24)),
            service_cidr: (ip("10.43.0.0"), 16),
            services: vec![],
            host_ports: vec![],
        }
    }

    fn svc(name: &str, eps: &[(&str, u16)]) -> ServiceRule {
        ServiceRule {
            namespace: "default".into(),
            name: name.into(),
            protocol: Proto::Tcp,
            cluster_ip: Some(ip("10.43.0.10")),
            port: 80,
            node_port: false,
            endpoints: eps.iter().map(|&(a, p)| (ip(a), p)).collect(),
        }
    }

    fn chain(t: &Table, name: &str) -> Vec<String> {
        t.chains
            .iter()
            .find(|c| c.name == name)
            .unwrap_or_else(|| panic!("no chain {name} in\n{t}"))
            .rules
            .iter()
            .map(|r| r.to_string())
            .collect()
    }

    #[test]
    fn empty_plan_has_the_hooks_and_masquerade_only() {
        let t = plan(&base());
        assert_eq!(t.name, "bramble");
        let names: Vec<&str> = t.chains.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["prerouting", "output", "services", "postrouting"]);
        assert_eq!(chain(&t, "prerouting"), ["meta nfproto ipv4 jump services"]);
        assert_eq!(chain(&t, "output"), ["meta nfproto ipv4 jump services"]);
        assert!(chain(&t, "services").is_empty());
        let pre = t.chains[0].base.unwrap();
        assert_eq!((pre.hook.number(), pre.priority), (0, -100));
        assert_eq!(t.chains[1].base.unwrap().hook.number(), 3);
        let post = t.chains[3].base.unwrap();
        assert_eq!((post.hook.number(), post.priority), (4, 100));
        assert!(t.chains[2].base.is_none());
    }

    #[test]
    fn masquerade_rules() {
        let t = plan(&base());
        assert_eq!(
            chain(&t, "postrouting"),
            [
                "meta nfproto ipv4 ip saddr 10.42.0.0/16 ip daddr != 10.42.0.0/16 masquerade",
                "meta nfproto ipv4 ct status dnat oifname \"bramble0\" masquerade",
                "meta nfproto ipv4 ct status dnat ip saddr != 10.42.1.0/24 masquerade",
            ]
        );
        // No pod subnet yet: every DNATed connection.
        let mut p = base();
        p.pod_subnet = None;
        assert_eq!(
            chain(&plan(&p), "postrouting")[2],
            "meta nfproto ipv4 ct status dnat masquerade"
        );
    }

    #[test]
    fn a_service_without_endpoints_gets_no_rule() {
        let mut p = base();
        p.services = vec![svc("web", &[])];
        let t = plan(&p);
        assert!(chain(&t, "services").is_empty());
        assert_eq!(t.chains.len(), 4);
    }

    #[test]
    fn one_endpoint_is_an_unconditional_dnat() {
        let mut p = base();
        p.services = vec![svc("web", &[("10.42.1.2", 8080)])];
        let t = plan(&p);
        assert_eq!(
            chain(&t, "services"),
            [
                "meta nfproto ipv4 ip daddr 10.43.0.10 meta l4proto tcp th dport 80 \
                 jump svc0-default-web-tcp80"
            ]
        );
        assert_eq!(
            chain(&t, "svc0-default-web-tcp80"),
            ["dnat ip to 10.42.1.2:8080"]
        );
    }

    #[test]
    fn three_endpoints_cascade_with_equal_odds() {
        let mut p = base();
        p.services = vec![svc(
            "web",
            &[
                ("10.42.1.2", 8080),
                ("10.42.2.2", 8080),
                ("10.42.3.2", 9090),
            ],
        )];
        let t = plan(&p);
        assert_eq!(
            chain(&t, "svc0-default-web-tcp80"),
            [
                "numgen random mod 3 == 0 dnat ip to 10.42.1.2:8080",
                "numgen random mod 2 == 0 dnat ip to 10.42.2.2:8080",
                "dnat ip to 10.42.3.2:9090",
            ]
        );
        // P(k) = prod_{j<k} (1 - 1/(N-j)) * 1/(N-k) = 1/N for every k.
        let n = 3;
        let mut left = 1.0f64;
        for k in 0..n {
            let here = if k + 1 < n { 1.0 / (n - k) as f64 } else { 1.0 };
            assert!((left * here - 1.0 / n as f64).abs() < 1e-12);
            left *= 1.0 - here;
        }
    }

    #[test]
    fn node_port_udp_and_host_ports() {
        let mut p = base();
        let mut dns = svc("dns", &[("10.42.1.5", 53)]);
        dns.protocol = Proto::Udp;
        dns.port = 53;
        dns.cluster_ip = Some(ip("10.43.0.53"));
        let mut np = svc("np", &[("10.42.1.6", 8080)]);
        np.cluster_ip = None;
        np.port = 30080;
        np.node_port = true;
        p.services = vec![dns, np];
        p.host_ports = vec![HostPort {
            protocol: Proto::Tcp,
            host_port: 8443,
            pod_ip: ip("10.42.1.7"),
            container_port: 443,
        }];
        let t = plan(&p);
        assert_eq!(
            chain(&t, "services"),
            [
                "meta nfproto ipv4 ip daddr 10.43.0.53 meta l4proto udp th dport 53 \
                 jump svc0-default-dns-udp53",
                "meta nfproto ipv4 fib daddr type local ip daddr != 127.0.0.0/8 \
                 meta l4proto tcp th dport 30080 jump svc1-default-np-tcp30080",
                "meta nfproto ipv4 fib daddr type local ip daddr != 127.0.0.0/8 \
                 meta l4proto tcp th dport 8443 dnat ip to 10.42.1.7:443",
            ]
        );
        assert_eq!(
            chain(&t, "svc1-default-np-tcp30080"),
            ["dnat ip to 10.42.1.6:8080"]
        );
        // The chains follow the services' order; postrouting stays last.
        let names: Vec<&str> = t.chains.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "prerouting",
                "output",
                "services",
                "svc0-default-dns-udp53",
                "svc1-default-np-tcp30080",
                "postrouting"
            ]
        );
    }

    #[test]
    fn a_service_on_both_its_cluster_ip_and_node_port_shares_one_chain() {
        let mut p = base();
        let mut s = svc("web", &[("10.42.1.2", 8080)]);
        s.node_port = true;
        p.services = vec![s];
        let t = plan(&p);
        let rules = chain(&t, "services");
        assert_eq!(rules.len(), 2);
        assert!(
            rules
                .iter()
                .all(|r| r.ends_with("jump svc0-default-web-tcp80"))
        );
        assert_eq!(t.chains.len(), 5);
    }

    #[test]
    fn long_names_are_cut_to_a_valid_chain_name() {
        let mut p = base();
        let mut s = svc(&"x".repeat(300), &[("10.42.1.2", 8080)]);
        s.namespace = "é".repeat(20);
        p.services = vec![s];
        let t = plan(&p);
        assert!(t.chains[3].name.len() <= MAX_CHAIN_NAME);
        assert!(t.chains[3].name.starts_with("svc0-é"));
    }
}
