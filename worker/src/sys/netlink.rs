//! A minimal rtnetlink client (`NETLINK_ROUTE`): just the requests the pod network needs
//! (create a bridge or a veth pair, set a link up or onto a bridge, add an address, add, replace,
//! delete and list routes). Messages are built and parsed by hand from the kernel's UAPI layouts
//! (`linux/netlink.h`, `linux/rtnetlink.h`, `linux/if_link.h`); no `unsafe`, only nix's socket
//! calls. A socket talks to the network namespace of the thread that opened it.

use std::net::Ipv4Addr;
use std::os::fd::OwnedFd;

use nix::sys::socket::{
    AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol, SockType, bind, recv, send,
    socket,
};

use super::{Result, SysError};

// linux/netlink.h
pub(super) const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
pub(super) const NLM_F_REQUEST: u16 = 0x1;
pub(super) const NLM_F_ACK: u16 = 0x4;
const NLM_F_DUMP: u16 = 0x300;
/// With `NLM_F_CREATE`: replace an existing object.
pub const NLM_F_REPLACE: u16 = 0x100;
/// With `NLM_F_CREATE`: fail if it exists.
pub const NLM_F_EXCL: u16 = 0x200;
/// Create the object.
pub const NLM_F_CREATE: u16 = 0x400;
pub(super) const NLMSG_HDRLEN: usize = 16;

// linux/rtnetlink.h
const RTM_NEWLINK: u16 = 16;
const RTM_DELLINK: u16 = 17;
const RTM_NEWADDR: u16 = 20;
const RTM_NEWROUTE: u16 = 24;
const RTM_DELROUTE: u16 = 25;
const RTM_GETROUTE: u16 = 26;
const RT_TABLE_MAIN: u8 = 254;
const RT_SCOPE_UNIVERSE: u8 = 0;
const RT_SCOPE_LINK: u8 = 253;
const RT_SCOPE_NOWHERE: u8 = 255;
const RTN_UNICAST: u8 = 1;
const RTA_DST: u16 = 1;
const RTA_OIF: u16 = 4;
const RTA_GATEWAY: u16 = 5;
const RTA_TABLE: u16 = 15;

// linux/if_link.h, linux/if_addr.h, linux/veth.h
const IFLA_ADDRESS: u16 = 1;
const IFLA_IFNAME: u16 = 3;
const IFLA_MASTER: u16 = 10;
const IFLA_LINKINFO: u16 = 18;
const IFLA_NET_NS_PID: u16 = 19;
const IFLA_INFO_KIND: u16 = 1;
const IFLA_INFO_DATA: u16 = 2;
const VETH_INFO_PEER: u16 = 1;
const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;
const IFF_UP: u32 = 1;
const AF_INET: u8 = 2;

/// A message under construction: payload header, then attributes (4-byte aligned).
#[derive(Default)]
pub(super) struct Msg {
    pub(super) buf: Vec<u8>,
}

impl Msg {
    pub(super) fn pad(&mut self) {
        while !self.buf.len().is_multiple_of(4) {
            self.buf.push(0);
        }
    }

    pub(super) fn bytes(&mut self, b: &[u8]) -> &mut Self {
        self.buf.extend_from_slice(b);
        self
    }

    pub(super) fn attr(&mut self, ty: u16, data: &[u8]) -> &mut Self {
        self.pad();
        let len = (4 + data.len()) as u16;
        self.buf.extend_from_slice(&len.to_ne_bytes());
        self.buf.extend_from_slice(&ty.to_ne_bytes());
        self.buf.extend_from_slice(data);
        self.pad();
        self
    }

    pub(super) fn attr_str(&mut self, ty: u16, s: &str) -> &mut Self {
        let mut d = s.as_bytes().to_vec();
        d.push(0);
        self.attr(ty, &d)
    }

    pub(super) fn attr_u32(&mut self, ty: u16, v: u32) -> &mut Self {
        self.attr(ty, &v.to_ne_bytes())
    }

    /// Starts a nested attribute; [`Msg::end`] fills in its length.
    pub(super) fn begin(&mut self, ty: u16) -> usize {
        self.pad();
        let at = self.buf.len();
        self.buf.extend_from_slice(&[0, 0]);
        self.buf.extend_from_slice(&ty.to_ne_bytes());
        at
    }

    pub(super) fn end(&mut self, at: usize) {
        let len = (self.buf.len() - at) as u16;
        self.buf[at..at + 2].copy_from_slice(&len.to_ne_bytes());
        self.pad();
    }
}

/// `struct ifinfomsg`: family, type, index, flags, change.
fn ifinfomsg(index: u32, flags: u32, change: u32) -> [u8; 16] {
    let mut b = [0u8; 16];
    b[4..8].copy_from_slice(&index.to_ne_bytes());
    b[8..12].copy_from_slice(&flags.to_ne_bytes());
    b[12..16].copy_from_slice(&change.to_ne_bytes());
    b
}

/// `struct rtmsg` for an IPv4 unicast route in the main table.
fn rtmsg(dst_len: u8, protocol: u8) -> [u8; 12] {
    [
        AF_INET,
        dst_len,
        0,
        0,
        RT_TABLE_MAIN,
        protocol,
        RT_SCOPE_UNIVERSE,
        RTN_UNICAST,
        0,
        0,
        0,
        0,
    ]
}

/// An IPv4 route as listed by [`Rtnl::routes`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// Destination network.
    pub dst: Ipv4Addr,
    /// Its prefix length.
    pub dst_len: u8,
    /// Gateway, if any.
    pub gateway: Option<Ipv4Addr>,
    /// Routing protocol number (who installed it).
    pub protocol: u8,
}

/// An rtnetlink socket in the calling thread's network namespace.
#[derive(Debug)]
pub struct Rtnl {
    fd: OwnedFd,
    seq: u32,
}

pub(super) fn nl_err(what: impl Into<String>, err: nix::Error) -> SysError {
    SysError::Netlink {
        what: what.into(),
        err,
    }
}

impl Rtnl {
    /// Opens a socket in the calling thread's network namespace.
    pub fn open() -> Result<Rtnl> {
        let fd = socket(
            AddressFamily::Netlink,
            SockType::Raw,
            SockFlag::SOCK_CLOEXEC,
            SockProtocol::NetlinkRoute,
        )
        .map_err(|e| nl_err("socket(AF_NETLINK)", e))?;
        bind(
            std::os::fd::AsRawFd::as_raw_fd(&fd),
            &NetlinkAddr::new(0, 0),
        )
        .map_err(|e| nl_err("bind(AF_NETLINK)", e))?;
        Ok(Rtnl { fd, seq: 0 })
    }

    fn send(&mut self, ty: u16, flags: u16, payload: &[u8]) -> Result<u32> {
        self.seq = self.seq.wrapping_add(1);
        let len = (NLMSG_HDRLEN + payload.len()) as u32;
        let mut m = Vec::with_capacity(len as usize);
        m.extend_from_slice(&len.to_ne_bytes());
        m.extend_from_slice(&ty.to_ne_bytes());
        m.extend_from_slice(&(flags | NLM_F_REQUEST).to_ne_bytes());
        m.extend_from_slice(&self.seq.to_ne_bytes());
        m.extend_from_slice(&0u32.to_ne_bytes());
        m.extend_from_slice(payload);
        let raw = std::os::fd::AsRawFd::as_raw_fd(&self.fd);
        send(raw, &m, MsgFlags::empty()).map_err(|e| nl_err("send(AF_NETLINK)", e))?;
        Ok(self.seq)
    }

    /// Receives the answers to request `seq`, calling `each(type, payload)` for every message
    /// until the ack (or the end of a dump). A negative ack is the error.
    fn answers(&mut self, seq: u32, what: &str, mut each: impl FnMut(u16, &[u8])) -> Result<()> {
        let raw = std::os::fd::AsRawFd::as_raw_fd(&self.fd);
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = recv(raw, &mut buf, MsgFlags::empty())
                .map_err(|e| nl_err("recv(AF_NETLINK)", e))?;
            let mut at = 0;
            while at + NLMSG_HDRLEN <= n {
                let h = &buf[at..];
                let len = u32::from_ne_bytes([h[0], h[1], h[2], h[3]]) as usize;
                let ty = u16::from_ne_bytes([h[4], h[5]]);
                let mseq = u32::from_ne_bytes([h[8], h[9], h[10], h[11]]);
                if len < NLMSG_HDRLEN || at + len > n {
                    return Err(nl_err(what, nix::Error::EBADMSG));
                }
                let payload = &buf[at + NLMSG_HDRLEN..at + len];
                at += (len + 3) & !3;
                if mseq != seq {
                    continue; // an answer to an earlier request: not ours
                }
                match ty {
                    NLMSG_DONE => return Ok(()),
                    NLMSG_ERROR => {
                        let code = payload
                            .get(..4)
                            .map(|b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
                            .ok_or_else(|| nl_err(what, nix::Error::EBADMSG))?;
                        return if code == 0 {
                            Ok(())
                        } else {
                            Err(nl_err(what, nix::Error::from_raw(-code)))
                        };
                    }
                    _ => each(ty, payload),
                }
            }
        }
    }

    fn request(&mut self, ty: u16, flags: u16, payload: &[u8], what: &str) -> Result<()> {
        let seq = self.send(ty, flags | NLM_F_ACK, payload)?;
        self.answers(seq, what, |_, _| {})
    }

    /// Creates a bridge with the hardware address `mac`. A bridge given its address keeps it;
    /// otherwise the kernel gives it the lowest of its ports' addresses, which changes as ports
    /// come and go and leaves the pods' ARP entries for the gateway pointing nowhere.
    pub fn add_bridge(&mut self, name: &str, mac: [u8; 6]) -> Result<()> {
        let mut m = Msg::default();
        m.bytes(&ifinfomsg(0, 0, 0))
            .attr_str(IFLA_IFNAME, name)
            .attr(IFLA_ADDRESS, &mac);
        let info = m.begin(IFLA_LINKINFO);
        m.attr_str(IFLA_INFO_KIND, "bridge");
        m.end(info);
        self.request(
            RTM_NEWLINK,
            NLM_F_CREATE | NLM_F_EXCL,
            &m.buf,
            &format!("create bridge {name}"),
        )
    }

    /// Creates a veth pair: `name` here, `peer` in the network namespace of process `pid`.
    pub fn add_veth(&mut self, name: &str, peer: &str, pid: i32) -> Result<()> {
        let mut m = Msg::default();
        m.bytes(&ifinfomsg(0, 0, 0)).attr_str(IFLA_IFNAME, name);
        let info = m.begin(IFLA_LINKINFO);
        m.attr_str(IFLA_INFO_KIND, "veth");
        let data = m.begin(IFLA_INFO_DATA);
        let p = m.begin(VETH_INFO_PEER);
        m.bytes(&ifinfomsg(0, 0, 0))
            .attr_str(IFLA_IFNAME, peer)
            .attr_u32(IFLA_NET_NS_PID, pid as u32);
        m.end(p);
        m.end(data);
        m.end(info);
        self.request(
            RTM_NEWLINK,
            NLM_F_CREATE | NLM_F_EXCL,
            &m.buf,
            &format!("create veth pair {name} / {peer} in the network namespace of {pid}"),
        )
    }

    /// Deletes a link.
    pub fn del_link(&mut self, index: u32) -> Result<()> {
        self.request(
            RTM_DELLINK,
            0,
            &ifinfomsg(index, 0, 0),
            &format!("delete link {index}"),
        )
    }

    /// Sets a link up, and onto bridge `master` if given.
    pub fn link_up(&mut self, index: u32, master: Option<u32>, what: &str) -> Result<()> {
        let mut m = Msg::default();
        m.bytes(&ifinfomsg(index, IFF_UP, IFF_UP));
        if let Some(b) = master {
            m.attr_u32(IFLA_MASTER, b);
        }
        self.request(RTM_NEWLINK, 0, &m.buf, &format!("set {what} up"))
    }

    /// Adds (or replaces) `addr/prefix` on a link.
    pub fn replace_addr(&mut self, index: u32, addr: Ipv4Addr, prefix: u8) -> Result<()> {
        let mut m = Msg::default();
        let mut hdr = [0u8; 8];
        hdr[0] = AF_INET;
        hdr[1] = prefix;
        hdr[4..8].copy_from_slice(&index.to_ne_bytes());
        m.bytes(&hdr)
            .attr(IFA_LOCAL, &addr.octets())
            .attr(IFA_ADDRESS, &addr.octets());
        self.request(
            RTM_NEWADDR,
            NLM_F_CREATE | NLM_F_REPLACE,
            &m.buf,
            &format!("add address {addr}/{prefix} to link {index}"),
        )
    }

    /// Adds a route (`flags`: [`NLM_F_EXCL`] to add, [`NLM_F_REPLACE`] to add or replace).
    pub fn add_route(
        &mut self,
        dst: Ipv4Addr,
        dst_len: u8,
        gateway: Ipv4Addr,
        oif: Option<u32>,
        protocol: u8,
        flags: u16,
    ) -> Result<()> {
        let mut m = Msg::default();
        m.bytes(&rtmsg(dst_len, protocol));
        if dst_len > 0 {
            m.attr(RTA_DST, &dst.octets());
        }
        m.attr(RTA_GATEWAY, &gateway.octets());
        if let Some(i) = oif {
            m.attr_u32(RTA_OIF, i);
        }
        self.request(
            RTM_NEWROUTE,
            NLM_F_CREATE | flags,
            &m.buf,
            &format!("add route {dst}/{dst_len} via {gateway}"),
        )
    }

    /// Adds or replaces a route out of link `oif` with no gateway (scope link), like
    /// `ip route replace DST/LEN dev IF proto P`.
    pub fn replace_dev_route(
        &mut self,
        dst: Ipv4Addr,
        dst_len: u8,
        oif: u32,
        protocol: u8,
    ) -> Result<()> {
        let mut head = rtmsg(dst_len, protocol);
        head[6] = RT_SCOPE_LINK;
        let mut m = Msg::default();
        m.bytes(&head);
        m.attr(RTA_DST, &dst.octets());
        m.attr_u32(RTA_OIF, oif);
        self.request(
            RTM_NEWROUTE,
            NLM_F_CREATE | NLM_F_REPLACE,
            &m.buf,
            &format!("add route {dst}/{dst_len} dev {oif}"),
        )
    }

    /// Deletes a route.
    pub fn del_route(&mut self, dst: Ipv4Addr, dst_len: u8, protocol: u8) -> Result<()> {
        // Scope "nowhere" matches a route of any scope (as `ip route del` asks); universe would
        // miss the link-scope route to the service range.
        let mut head = rtmsg(dst_len, protocol);
        head[6] = RT_SCOPE_NOWHERE;
        let mut m = Msg::default();
        m.bytes(&head).attr(RTA_DST, &dst.octets());
        self.request(
            RTM_DELROUTE,
            0,
            &m.buf,
            &format!("delete route {dst}/{dst_len}"),
        )
    }

    /// The IPv4 routes of the main table.
    pub fn routes(&mut self) -> Result<Vec<Route>> {
        let seq = self.send(RTM_GETROUTE, NLM_F_DUMP, &rtmsg(0, 0))?;
        let mut out = Vec::new();
        self.answers(seq, "list routes", |ty, p| {
            if ty == RTM_NEWROUTE
                && let Some(r) = parse_route(p)
            {
                out.push(r);
            }
        })?;
        Ok(out)
    }
}

/// Parses an `RTM_NEWROUTE` payload; `None` for other families and tables.
fn parse_route(p: &[u8]) -> Option<Route> {
    if p.len() < 12 || p[0] != AF_INET {
        return None;
    }
    let mut table = u32::from(p[4]);
    let mut r = Route {
        dst: Ipv4Addr::UNSPECIFIED,
        dst_len: p[1],
        gateway: None,
        protocol: p[5],
    };
    let mut at = 12;
    while at + 4 <= p.len() {
        let len = u16::from_ne_bytes([p[at], p[at + 1]]) as usize;
        let ty = u16::from_ne_bytes([p[at + 2], p[at + 3]]);
        if len < 4 || at + len > p.len() {
            break;
        }
        let v = &p[at + 4..at + len];
        let ip = |v: &[u8]| <[u8; 4]>::try_from(v).ok().map(Ipv4Addr::from);
        match ty {
            RTA_DST => r.dst = ip(v)?,
            RTA_GATEWAY => r.gateway = ip(v),
            RTA_TABLE if v.len() == 4 => table = u32::from_ne_bytes([v[0], v[1], v[2], v[3]]),
            _ => {}
        }
        at += (len + 3) & !3;
    }
    (table == u32::from(RT_TABLE_MAIN)).then_some(r)
}

/// The index of link `name` in the calling thread's network namespace.
pub fn index(name: &str) -> Result<u32> {
    nix::net::if_::if_nametoindex(name).map_err(|e| nl_err(format!("find link {name}"), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_attributes_are_aligned_and_sized() {
        let mut m = Msg::default();
        m.bytes(&ifinfomsg(0, 0, 0)).attr_str(IFLA_IFNAME, "bp1");
        let info = m.begin(IFLA_LINKINFO);
        m.attr_str(IFLA_INFO_KIND, "veth");
        m.end(info);
        // ifinfomsg (16) + "bp1\0" attr (8) + linkinfo (4 + "veth\0" attr 12 = 16).
        assert_eq!(m.buf.len(), 16 + 8 + 16);
        assert_eq!(u16::from_ne_bytes([m.buf[24], m.buf[25]]), 16);
        assert_eq!(u16::from_ne_bytes([m.buf[28], m.buf[29]]), 9); // 4 + "veth\0"
    }

    #[test]
    fn routes_parse_and_foreign_tables_are_skipped() {
        let mut m = Msg::default();
        m.bytes(&rtmsg(24, 98))
            .attr(RTA_DST, &[10, 42, 1, 0])
            .attr(RTA_GATEWAY, &[192, 0, 2, 12]);
        let r = parse_route(&m.buf).unwrap();
        assert_eq!(
            r,
            Route {
                dst: Ipv4Addr::new(10, 42, 1, 0),
                dst_len: 24,
                gateway: Some(Ipv4Addr::new(192, 0, 2, 12)),
                protocol: 98,
            }
        );
        let mut local = m.buf.clone();
        local[4] = 255; // the local table
        assert_eq!(parse_route(&local), None);
        assert_eq!(parse_route(&[0; 4]), None);
    }
}
