//! The node's pod network, over rtnetlink ([`super::netlink`]; no `ip` binary needed):
//! - a bridge (`bramble0`) holding the node subnet's gateway address, and IPv4 forwarding;
//! - per isolated pod, a veth pair: the host end on the bridge, the other end as `eth0` in the
//!   pod's network namespace with the pod's address and a default route via the gateway;
//! - a route to every other node's pod subnet via that node's address (flannel's host-gw: nodes
//!   share a link), marked with protocol [`ROUTE_PROTO`] so that stale ones can be found.
//!
//! Nothing is NATed (no netfilter): pods reach the cluster, its nodes and each other.

use std::net::Ipv4Addr;

use super::netlink::{self, NLM_F_EXCL, NLM_F_REPLACE, Rtnl};
use super::{Result, SysError};

/// The routing protocol number marking the worker's routes (`ip route show proto 98`).
pub const ROUTE_PROTO: u8 = 98;
/// The protocol number of the route to the service range over the bridge (`proto 99`), kept
/// apart from [`ROUTE_PROTO`]'s set that [`sync_routes`] owns.
pub const SERVICE_ROUTE_PROTO: u8 = 99;

/// Creates `bridge` if it is missing, gives it `gateway/prefix`, brings it up, and turns on IPv4
/// forwarding. Idempotent.
pub fn ensure_bridge(bridge: &str, gateway: Ipv4Addr, prefix: u8) -> Result<()> {
    let mut nl = Rtnl::open()?;
    let index = match netlink::index(bridge) {
        Ok(i) => i,
        Err(_) => {
            nl.add_bridge(bridge, bridge_mac(gateway))?;
            netlink::index(bridge)?
        }
    };
    nl.replace_addr(index, gateway, prefix)?;
    nl.link_up(index, None, bridge)?;
    // Per network namespace: /proc/sys/net follows the calling thread's.
    let fwd = "/proc/sys/net/ipv4/ip_forward";
    if std::fs::read_to_string(fwd)
        .map(|s| s.trim() != "1")
        .unwrap_or(true)
    {
        std::fs::write(fwd, "1").map_err(|err| SysError::Io {
            op: "write",
            path: fwd.into(),
            err,
        })?;
    }
    Ok(())
}

/// The bridge's hardware address: locally administered, unicast, and derived from the gateway
/// address, so that it is stable across agent restarts and distinct between nodes.
pub fn bridge_mac(gateway: Ipv4Addr) -> [u8; 6] {
    let [a, b, c, d] = gateway.octets();
    [0x02, 0x62, a, b, c, d]
}

/// Connects the network namespace of `pid` to `bridge`: a veth pair `host_if` (on the bridge)
/// and `eth0` (in the pod, `ip/prefix`, default route via `gateway`).
pub fn attach(
    pid: i32,
    bridge: &str,
    host_if: &str,
    ip: Ipv4Addr,
    prefix: u8,
    gateway: Ipv4Addr,
) -> Result<()> {
    let mut nl = Rtnl::open()?;
    let bridge_index = netlink::index(bridge)?;
    nl.add_veth(host_if, "eth0", pid)?;
    let host_index = netlink::index(host_if)?;
    let inside = nl
        .link_up(host_index, Some(bridge_index), host_if)
        .and_then(|()| in_netns_of(pid, || configure_pod_side(ip, prefix, gateway)));
    if let Err(e) = inside {
        let _ = nl.del_link(host_index);
        return Err(e);
    }
    Ok(())
}

/// Inside the pod: `lo` and `eth0` up, the address, the default route.
fn configure_pod_side(ip: Ipv4Addr, prefix: u8, gateway: Ipv4Addr) -> Result<()> {
    let mut nl = Rtnl::open()?;
    let lo = netlink::index("lo")?;
    let eth0 = netlink::index("eth0")?;
    nl.link_up(lo, None, "lo")?;
    nl.replace_addr(eth0, ip, prefix)?;
    nl.link_up(eth0, None, "eth0")?;
    nl.add_route(
        Ipv4Addr::UNSPECIFIED,
        0,
        gateway,
        Some(eth0),
        ROUTE_PROTO,
        NLM_F_EXCL,
    )
}

/// Runs `f` on a thread that joined the network namespace of process `pid` (namespaces are
/// per thread: the caller's stays as it was; the thread ends with `f`).
fn in_netns_of<T: Send>(pid: i32, f: impl FnOnce() -> Result<T> + Send) -> Result<T> {
    let path = format!("/proc/{pid}/ns/net");
    let ns = std::fs::File::open(&path).map_err(|err| SysError::Io {
        op: "open",
        path: path.clone().into(),
        err,
    })?;
    std::thread::scope(|s| {
        s.spawn(move || {
            nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET)
                .map_err(|e| SysError::path("setns", &path, e))?;
            f()
        })
        .join()
        .unwrap_or_else(|_| Err(SysError::call("pod network thread", nix::Error::EIO)))
    })
}

/// Makes the worker's routes (marked [`ROUTE_PROTO`]) exactly `want`: (subnet, via) pairs.
/// Returns how many routes were added or removed.
pub fn sync_routes(want: &[(String, String)]) -> Result<usize> {
    let parse = |cidr: &str, via: &str| -> Option<(Ipv4Addr, u8, Ipv4Addr)> {
        let c = bramble_wire::net::Ipv4Cidr::parse(cidr).ok()?;
        Some((c.network(), c.prefix(), via.parse().ok()?))
    };
    let want: Vec<(Ipv4Addr, u8, Ipv4Addr)> =
        want.iter().filter_map(|(c, v)| parse(c, v)).collect();
    let mut nl = Rtnl::open()?;
    let have: Vec<(Ipv4Addr, u8, Option<Ipv4Addr>)> = nl
        .routes()?
        .into_iter()
        .filter(|r| r.protocol == ROUTE_PROTO && r.dst_len > 0)
        .map(|r| (r.dst, r.dst_len, r.gateway))
        .collect();
    let mut changes = 0;
    for (dst, len, via) in &have {
        if !want
            .iter()
            .any(|w| (w.0, w.1, Some(w.2)) == (*dst, *len, *via))
        {
            nl.del_route(*dst, *len, ROUTE_PROTO)?;
            changes += 1;
        }
    }
    for (dst, len, via) in &want {
        if !have.contains(&(*dst, *len, Some(*via))) {
            nl.add_route(*dst, *len, *via, None, ROUTE_PROTO, NLM_F_REPLACE)?;
            changes += 1;
        }
    }
    Ok(changes)
}

/// Moves the calling thread into the network namespace at `path` (`/run/netns/NAME`,
/// `/proc/PID/ns/net`): for tests and benchmarks that work in namespaces of their own.
pub fn join_netns(path: &std::path::Path) -> Result<()> {
    let ns = std::fs::File::open(path).map_err(|err| SysError::Io {
        op: "open",
        path: path.into(),
        err,
    })?;
    nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET)
        .map_err(|e| SysError::path("setns", path, e))
}

/// Moves the calling thread into a new, empty network namespace (only loopback, down): for tests
/// and benchmarks that set up pod networks without touching the host's.
pub fn unshare_net() -> Result<()> {
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)
        .map_err(|e| SysError::call("unshare(CLONE_NEWNET)", e))
}

/// Routes the service range (`cidr`/`prefix`) out of `bridge`, so that the node itself reaches
/// the services' virtual IPs (the nftables output chain rewrites them; without a route the
/// connect fails before netfilter sees it). Idempotent; removes a stale service route first.
pub fn ensure_service_route(bridge: &str, cidr: Ipv4Addr, prefix: u8) -> Result<()> {
    let mut nl = Rtnl::open()?;
    let index = netlink::index(bridge)?;
    for r in nl.routes()? {
        if r.protocol == SERVICE_ROUTE_PROTO && (r.dst, r.dst_len) != (cidr, prefix) {
            nl.del_route(r.dst, r.dst_len, SERVICE_ROUTE_PROTO)?;
        }
    }
    nl.replace_dev_route(cidr, prefix, index, SERVICE_ROUTE_PROTO)
}

/// What [`cleanup`] removed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Removed {
    /// Routes of protocols 98 and 99.
    pub routes: usize,
    /// Pods' veth ends (`bp<PID>`) and the bridge.
    pub links: usize,
}

/// Removes the worker's network from the calling thread's network namespace: its routes
/// (protocols [`ROUTE_PROTO`] and [`SERVICE_ROUTE_PROTO`]), the host ends of pods' veth pairs
/// (`bp<digits>`) and `bridge`. Other links and routes are never touched.
pub fn cleanup(bridge: &str) -> Result<Removed> {
    let mut nl = Rtnl::open()?;
    let mut removed = Removed::default();
    for r in nl.routes()? {
        if (r.protocol == ROUTE_PROTO || r.protocol == SERVICE_ROUTE_PROTO) && r.dst_len > 0 {
            nl.del_route(r.dst, r.dst_len, r.protocol)?;
            removed.routes += 1;
        }
    }
    // The calling thread's namespace (not `/sys/class/net`, which shows the namespace sysfs
    // was mounted in).
    let names = nix::net::if_::if_nameindex().map_err(|e| SysError::call("if_nameindex", e))?;
    let mut links: Vec<String> = names
        .iter()
        .filter_map(|i| i.name().to_str().ok().map(str::to_string))
        .filter(|n| {
            n.strip_prefix("bp")
                .is_some_and(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()))
        })
        .collect();
    links.push(bridge.to_string());
    for name in links {
        if let Ok(i) = netlink::index(&name) {
            nl.del_link(i)?;
            removed.links += 1;
        }
    }
    Ok(removed)
}
