//! Pod subnets: the master gives each node its own slice of the cluster's pod range at
//! registration (k3s's `--cluster-cidr 10.42.0.0/16`, a /24 per node), and tells every worker
//! every node's slice and address ([`subnets`]), so that each can route the others' pods
//! (flannel's host-gw, without a daemon). Pure: no I/O.

use std::collections::HashSet;
use std::net::Ipv4Addr;

use bramble_wire::msg::PodSubnet;
use bramble_wire::objects::{NetworkMode, Node};

/// The cluster's pod range and the size of each node's slice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClusterCidr {
    base: u32,
    prefix: u8,
    node_prefix: u8,
}

impl ClusterCidr {
    /// `cidr` is the cluster's range (`10.42.0.0/16`); each node gets a `/node_prefix`.
    pub fn parse(cidr: &str, node_prefix: u8) -> Result<ClusterCidr, String> {
        let (base, prefix) = parse_cidr(cidr)?;
        if node_prefix < prefix || node_prefix > 30 {
            return Err(format!(
                "--node-cidr-size /{node_prefix} must be between the cluster range's /{prefix} \
                 and /30 (each node needs a gateway, a broadcast and at least two pods)"
            ));
        }
        if node_prefix - prefix > 16 {
            return Err(format!(
                "--cluster-cidr {cidr} with --node-cidr-size /{node_prefix} makes more than 65536 \
                 node subnets: use a smaller cluster range or larger node subnets"
            ));
        }
        Ok(ClusterCidr {
            base,
            prefix,
            node_prefix,
        })
    }

    /// The range as (network address, prefix).
    pub fn range(&self) -> (u32, u8) {
        (self.base, self.prefix)
    }

    /// The range as text (`10.42.0.0/16`).
    pub fn as_string(&self) -> String {
        format!("{}/{}", Ipv4Addr::from(self.base), self.prefix)
    }

    /// The size of each node's subnet (its prefix length).
    pub fn node_prefix(&self) -> u8 {
        self.node_prefix
    }

    /// How many node subnets the range holds.
    pub fn capacity(&self) -> u32 {
        1 << (self.node_prefix - self.prefix)
    }

    /// The `i`th node subnet.
    fn nth(&self, i: u32) -> String {
        let addr = self.base + (i << (32 - self.node_prefix));
        format!("{}/{}", Ipv4Addr::from(addr), self.node_prefix)
    }

    /// The first node subnet not in `used`; `None` when the range is full.
    pub fn allocate<'a>(&self, used: impl IntoIterator<Item = &'a str>) -> Option<String> {
        let used: HashSet<&str> = used.into_iter().collect();
        (0..self.capacity())
            .map(|i| self.nth(i))
            .find(|c| !used.contains(c.as_str()))
    }
}

/// Parses `a.b.c.d/n` into (network address, prefix); host bits must be zero.
pub fn parse_cidr(s: &str) -> Result<(u32, u8), String> {
    use bramble_wire::net::{CidrError, Ipv4Cidr};
    match Ipv4Cidr::parse(s) {
        Ok(c) => Ok((u32::from(c.network()), c.prefix())),
        Err(CidrError::Syntax) => Err(format!("{s:?} is not an IPv4 range like 10.42.0.0/16")),
        Err(e) => Err(format!("{s}: {e}")),
    }
}

/// Whether a pod address reported by a node can be true: the pod runs with its own network
/// (`network = "isolated"`) and the address is one the node gives its pods, inside its pod
/// subnet after the gateway and before the broadcast address. Anything else (a host-network
/// pod with an address, `127.0.0.1`, another node's pod, the gateway) would let one node steer
/// every node's service traffic: the master drops it. `Err` says why, for the log.
pub fn check_pod_ip(pod_cidr: &str, network: NetworkMode, ip: &str) -> Result<(), String> {
    if network != NetworkMode::Isolated {
        return Err(format!(
            "only network = \"isolated\" pods have an address of their own, this one runs with \
             network = {network:?}"
        ));
    }
    let Ok(addr) = ip.parse::<Ipv4Addr>() else {
        return Err(format!("{ip:?} is not an IPv4 address"));
    };
    let Ok((base, prefix)) = parse_cidr(pod_cidr) else {
        return Err(format!(
            "the node has no pod subnet (pod_cidr {pod_cidr:?}), so no pod address is valid"
        ));
    };
    let size = 1u64 << (32 - prefix);
    let n = u64::from(u32::from(addr));
    let (first, broadcast) = (u64::from(base) + 2, u64::from(base) + size - 1);
    if n < first || n >= broadcast {
        return Err(format!(
            "{ip} is not a pod address of the node's pod subnet {pod_cidr}"
        ));
    }
    Ok(())
}

/// Every node's subnet and address, sorted by node: what each worker routes. Nodes without a
/// subnet or a known address are left out.
pub fn subnets<'a>(nodes: impl IntoIterator<Item = &'a Node>) -> Vec<PodSubnet> {
    let mut out: Vec<PodSubnet> = nodes
        .into_iter()
        .filter(|n| !n.spec.pod_cidr.is_empty())
        .filter_map(|n| {
            Some(PodSubnet {
                node: n.meta.name.clone(),
                cidr: n.spec.pod_cidr.clone(),
                via: n.status.addresses.first()?.clone(),
            })
        })
        .collect();
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use bramble_wire::objects::{Meta, NodeSpec, NodeStatus};

    #[test]
    fn allocates_in_order_and_skips_used() {
        let c = ClusterCidr::parse("10.42.0.0/16", 24).unwrap();
        assert_eq!(c.capacity(), 256);
        assert_eq!(c.allocate([]).as_deref(), Some("10.42.0.0/24"));
        assert_eq!(
            c.allocate(["10.42.0.0/24", "10.42.2.0/24"]).as_deref(),
            Some("10.42.1.0/24")
        );
        let small = ClusterCidr::parse("198.51.100.0/24", 26).unwrap();
        assert_eq!(
            small
                .allocate(["198.51.100.0/26", "198.51.100.64/26"])
                .as_deref(),
            Some("198.51.100.128/26")
        );
        let all: Vec<String> = (0..4).map(|i| small.nth(i)).collect();
        assert_eq!(small.allocate(all.iter().map(String::as_str)), None);
    }

    #[test]
    fn bad_ranges_say_why() {
        assert!(
            ClusterCidr::parse("10.42.0.1/16", 24)
                .unwrap_err()
                .contains("did you mean 10.42.0.0/16")
        );
        assert!(
            ClusterCidr::parse("10.42.0.0", 24)
                .unwrap_err()
                .contains("not an IPv4 range")
        );
        assert!(ClusterCidr::parse("10.42.0.0/24", 16).is_err());
        assert!(ClusterCidr::parse("10.42.0.0/24", 31).is_err());
        assert!(ClusterCidr::parse("10.0.0.0/8", 30).is_err());
    }

    #[test]
    fn pod_addresses_must_lie_in_the_node_subnet() {
        let iso = NetworkMode::Isolated;
        assert_eq!(check_pod_ip("10.42.3.0/24", iso, "10.42.3.2"), Ok(()));
        assert_eq!(check_pod_ip("10.42.3.0/24", iso, "10.42.3.254"), Ok(()));
        for bad in [
            "127.0.0.1",
            "10.42.3.0",
            "10.42.3.1",
            "10.42.3.255",
            "10.42.4.2",
            "192.0.2.1",
            "0.0.0.0",
            "bogus",
            "",
        ] {
            assert!(check_pod_ip("10.42.3.0/24", iso, bad).is_err(), "{bad}");
        }
        assert!(check_pod_ip("", iso, "10.42.3.2").is_err(), "no subnet");
        assert!(check_pod_ip("10.42.3.0/24", NetworkMode::Host, "10.42.3.2").is_err());
        assert!(check_pod_ip("10.42.3.0/24", NetworkMode::None, "10.42.3.2").is_err());
    }

    #[test]
    fn subnets_need_a_cidr_and_an_address() {
        let node = |name: &str, cidr: &str, addr: Option<&str>| Node {
            meta: Meta {
                name: name.into(),
                ..Default::default()
            },
            spec: NodeSpec {
                pod_cidr: cidr.into(),
                ..Default::default()
            },
            status: NodeStatus {
                addresses: addr.map(|a| vec![a.to_string()]).unwrap_or_default(),
                ..Default::default()
            },
        };
        let nodes = [
            node("b", "10.42.1.0/24", Some("192.0.2.12")),
            node("a", "10.42.0.0/24", Some("192.0.2.11")),
            node("c", "", Some("192.0.2.13")),
            node("d", "10.42.3.0/24", None),
        ];
        let s = subnets(&nodes);
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].node, "a");
        assert_eq!(s[1].via, "192.0.2.12");
    }
}
