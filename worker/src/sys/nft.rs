//! A minimal nf_tables client (`NETLINK_NETFILTER`, subsystem `NFNL_SUBSYS_NFTABLES`): installs
//! a [`Table`] planned by [`crate::net::rules`] as one atomic batch, deletes a table, and checks
//! that nf_tables with NAT works. Messages are built by hand from the kernel's UAPI layouts
//! (`linux/netfilter/nfnetlink.h`, `linux/netfilter/nf_tables.h`) like [`super::netlink`]; only
//! features of Linux 6.1 (no `DESTROY` messages). A socket talks to the network namespace of the
//! thread that opened it.
//!
//! A batch is `NFNL_MSG_BATCH_BEGIN`, the messages, `NFNL_MSG_BATCH_END` in one `send`: the
//! kernel applies all of it or none of it. It processes the batch inside `send` and queues every
//! answer before `send` returns: an error for each failed message (whatever its flags), and an
//! ack for the last message (which alone asks for one, keeping the answers small). The answers
//! are then drained without blocking; any error names the message it answers.
//!
//! Numbers in nf_tables attributes are big-endian; register contents (what `cmp` compares) are
//! in the layout of the expression that loaded them: packet bytes as on the wire, `fib` and `ct`
//! results as host-order `u32`.

use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, OwnedFd};

use nix::sys::socket::{
    AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol, SockType, bind, recv, send,
    setsockopt, socket, sockopt,
};

use super::netlink::{Msg, NLM_F_ACK, NLM_F_REQUEST, NLMSG_ERROR, NLMSG_HDRLEN, nl_err};
use super::{Result, SysError};
use crate::net::rules::{Chain, Expr, Table};

// linux/netlink.h
const NLM_F_CREATE: u16 = 0x400;
const NLM_F_APPEND: u16 = 0x800;
const NLA_F_NESTED: u16 = 0x8000;

// linux/netfilter/nfnetlink.h, linux/netfilter.h
const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
const NFNL_MSG_BATCH_END: u16 = 0x11;
const NFPROTO_INET: u8 = 1;
const NFPROTO_IPV4: u32 = 2;
const NF_ACCEPT: u32 = 1;

// linux/netfilter/nf_tables.h: messages
const NFT_MSG_NEWTABLE: u16 = 0;
const NFT_MSG_DELTABLE: u16 = 2;
const NFT_MSG_NEWCHAIN: u16 = 3;
const NFT_MSG_NEWRULE: u16 = 6;
// attributes
const NFTA_LIST_ELEM: u16 = 1;
const NFTA_HOOK_HOOKNUM: u16 = 1;
const NFTA_HOOK_PRIORITY: u16 = 2;
const NFTA_TABLE_NAME: u16 = 1;
const NFTA_CHAIN_TABLE: u16 = 1;
const NFTA_CHAIN_NAME: u16 = 3;
const NFTA_CHAIN_HOOK: u16 = 4;
const NFTA_CHAIN_POLICY: u16 = 5;
const NFTA_CHAIN_TYPE: u16 = 7;
const NFTA_RULE_TABLE: u16 = 1;
const NFTA_RULE_CHAIN: u16 = 2;
const NFTA_RULE_EXPRESSIONS: u16 = 4;
const NFTA_EXPR_NAME: u16 = 1;
const NFTA_EXPR_DATA: u16 = 2;
const NFTA_DATA_VALUE: u16 = 1;
const NFTA_DATA_VERDICT: u16 = 2;
const NFTA_VERDICT_CODE: u16 = 1;
const NFTA_VERDICT_CHAIN: u16 = 2;
const NFTA_IMMEDIATE_DREG: u16 = 1;
const NFTA_IMMEDIATE_DATA: u16 = 2;
const NFTA_CMP_SREG: u16 = 1;
const NFTA_CMP_OP: u16 = 2;
const NFTA_CMP_DATA: u16 = 3;
const NFTA_BITWISE_SREG: u16 = 1;
const NFTA_BITWISE_DREG: u16 = 2;
const NFTA_BITWISE_LEN: u16 = 3;
const NFTA_BITWISE_MASK: u16 = 4;
const NFTA_BITWISE_XOR: u16 = 5;
const NFTA_PAYLOAD_DREG: u16 = 1;
const NFTA_PAYLOAD_BASE: u16 = 2;
const NFTA_PAYLOAD_OFFSET: u16 = 3;
const NFTA_PAYLOAD_LEN: u16 = 4;
const NFTA_META_DREG: u16 = 1;
const NFTA_META_KEY: u16 = 2;
const NFTA_CT_DREG: u16 = 1;
const NFTA_CT_KEY: u16 = 2;
const NFTA_NAT_TYPE: u16 = 1;
const NFTA_NAT_FAMILY: u16 = 2;
const NFTA_NAT_REG_ADDR_MIN: u16 = 3;
const NFTA_NAT_REG_PROTO_MIN: u16 = 5;
const NFTA_NG_DREG: u16 = 1;
const NFTA_NG_MODULUS: u16 = 2;
const NFTA_NG_TYPE: u16 = 3;
const NFTA_FIB_DREG: u16 = 1;
const NFTA_FIB_RESULT: u16 = 2;
const NFTA_FIB_FLAGS: u16 = 3;
// values
const NFT_REG_VERDICT: u32 = 0;
const NFT_REG_1: u32 = 1;
const NFT_REG_2: u32 = 2;
const NFT_JUMP: i32 = -3;
const NFT_CMP_EQ: u32 = 0;
const NFT_CMP_NEQ: u32 = 1;
const NFT_PAYLOAD_NETWORK_HEADER: u32 = 1;
const NFT_PAYLOAD_TRANSPORT_HEADER: u32 = 2;
const NFT_META_OIFNAME: u32 = 7;
const NFT_META_NFPROTO: u32 = 15;
const NFT_META_L4PROTO: u32 = 16;
const NFT_CT_STATUS: u32 = 2;
const IPS_DST_NAT: u32 = 0x20;
const NFT_NAT_DNAT: u32 = 1;
const NFT_NG_RANDOM: u32 = 1;
const NFT_FIB_RESULT_ADDRTYPE: u32 = 3;
const NFTA_FIB_F_DADDR: u32 = 1 << 1;
const RTN_LOCAL: u32 = 2;
const IFNAMSIZ: usize = 16;

/// What one message of a batch does, to name it in an error.
enum Step {
    NewTable(String),
    DelTable(String),
    Chain(usize),
    Rule(usize, usize),
}

/// A batch under construction.
struct Batch {
    buf: Vec<u8>,
    steps: Vec<Step>,
    /// Where the last message starts.
    last_at: usize,
}

/// The sequence number of the batch's `BEGIN`; message `i` has `FIRST_SEQ + 1 + i`.
const FIRST_SEQ: u32 = 1;

impl Batch {
    fn new() -> Batch {
        let mut b = Batch {
            buf: Vec::with_capacity(4096),
            steps: Vec::new(),
            last_at: 0,
        };
        b.header(NFNL_MSG_BATCH_BEGIN, 0, FIRST_SEQ, 0, &[]);
        b
    }

    /// Appends one message: `nlmsghdr`, `nfgenmsg`, attributes.
    fn header(&mut self, ty: u16, flags: u16, seq: u32, family: u8, attrs: &[u8]) {
        let len = (NLMSG_HDRLEN + 4 + attrs.len()) as u32;
        self.buf.extend_from_slice(&len.to_ne_bytes());
        self.buf.extend_from_slice(&ty.to_ne_bytes());
        self.buf
            .extend_from_slice(&(flags | NLM_F_REQUEST).to_ne_bytes());
        self.buf.extend_from_slice(&seq.to_ne_bytes());
        self.buf.extend_from_slice(&0u32.to_ne_bytes());
        // nfgenmsg: family, version (NFNETLINK_V0), resource id (big-endian); the batch
        // messages name the subsystem they are for.
        let res = if family == 0 { NFNL_SUBSYS_NFTABLES } else { 0 };
        self.buf.extend_from_slice(&[family, 0]);
        self.buf.extend_from_slice(&res.to_be_bytes());
        self.buf.extend_from_slice(attrs);
    }

    fn push(&mut self, cmd: u16, flags: u16, attrs: &Msg, step: Step) {
        let seq = FIRST_SEQ + 1 + self.steps.len() as u32;
        self.steps.push(step);
        self.last_at = self.buf.len();
        self.header(
            (NFNL_SUBSYS_NFTABLES << 8) | cmd,
            flags,
            seq,
            NFPROTO_INET,
            &attrs.buf,
        );
    }

    fn new_table(&mut self, name: &str) {
        let mut m = Msg::default();
        m.attr_str(NFTA_TABLE_NAME, name);
        self.push(
            NFT_MSG_NEWTABLE,
            NLM_F_CREATE,
            &m,
            Step::NewTable(name.into()),
        );
    }

    fn del_table(&mut self, name: &str) {
        let mut m = Msg::default();
        m.attr_str(NFTA_TABLE_NAME, name);
        self.push(NFT_MSG_DELTABLE, 0, &m, Step::DelTable(name.into()));
    }

    /// The table's chains, then their rules (a jump's target exists before the jump).
    fn table(&mut self, t: &Table) {
        for (i, c) in t.chains.iter().enumerate() {
            self.push(
                NFT_MSG_NEWCHAIN,
                NLM_F_CREATE,
                &chain_attrs(&t.name, c),
                Step::Chain(i),
            );
        }
        for (i, c) in t.chains.iter().enumerate() {
            for (k, r) in c.rules.iter().enumerate() {
                let mut m = Msg::default();
                m.attr_str(NFTA_RULE_TABLE, &t.name)
                    .attr_str(NFTA_RULE_CHAIN, &c.name);
                let list = m.begin(NFTA_RULE_EXPRESSIONS | NLA_F_NESTED);
                for e in &r.0 {
                    expr(&mut m, e);
                }
                m.end(list);
                self.push(
                    NFT_MSG_NEWRULE,
                    NLM_F_CREATE | NLM_F_APPEND,
                    &m,
                    Step::Rule(i, k),
                );
            }
        }
    }

    /// Closes the batch, the last message asking for an ack. Returns the bytes, that message's
    /// sequence number and what each message does.
    fn finish(mut self) -> (Vec<u8>, u32, Vec<Step>) {
        let last = FIRST_SEQ + self.steps.len() as u32;
        let f = self.last_at + 6..self.last_at + 8;
        let flags = u16::from_ne_bytes([self.buf[f.start], self.buf[f.start + 1]]) | NLM_F_ACK;
        self.buf[f].copy_from_slice(&flags.to_ne_bytes());
        self.header(NFNL_MSG_BATCH_END, 0, last + 1, 0, &[]);
        (self.buf, last, self.steps)
    }
}

fn chain_attrs(table: &str, c: &Chain) -> Msg {
    let mut m = Msg::default();
    m.attr_str(NFTA_CHAIN_TABLE, table)
        .attr_str(NFTA_CHAIN_NAME, &c.name);
    if let Some(b) = c.base {
        let hook = m.begin(NFTA_CHAIN_HOOK | NLA_F_NESTED);
        be32(&mut m, NFTA_HOOK_HOOKNUM, b.hook.number());
        be32(&mut m, NFTA_HOOK_PRIORITY, b.priority as u32);
        m.end(hook);
        be32(&mut m, NFTA_CHAIN_POLICY, NF_ACCEPT);
        m.attr_str(NFTA_CHAIN_TYPE, "nat");
    }
    m
}

fn be32(m: &mut Msg, ty: u16, v: u32) {
    m.attr(ty, &v.to_be_bytes());
}

/// A nested `nft_data_attributes` value.
fn data(m: &mut Msg, ty: u16, value: &[u8]) {
    let d = m.begin(ty | NLA_F_NESTED);
    m.attr(NFTA_DATA_VALUE, value);
    m.end(d);
}

/// One kernel expression: a list element with its name and its data.
fn kexpr(m: &mut Msg, name: &str, body: impl FnOnce(&mut Msg)) {
    let el = m.begin(NFTA_LIST_ELEM | NLA_F_NESTED);
    m.attr_str(NFTA_EXPR_NAME, name);
    let d = m.begin(NFTA_EXPR_DATA | NLA_F_NESTED);
    body(m);
    m.end(d);
    m.end(el);
}

fn meta(m: &mut Msg, key: u32) {
    kexpr(m, "meta", |m| {
        be32(m, NFTA_META_DREG, NFT_REG_1);
        be32(m, NFTA_META_KEY, key);
    });
}

fn cmp(m: &mut Msg, op: u32, value: &[u8]) {
    kexpr(m, "cmp", |m| {
        be32(m, NFTA_CMP_SREG, NFT_REG_1);
        be32(m, NFTA_CMP_OP, op);
        data(m, NFTA_CMP_DATA, value);
    });
}

fn payload(m: &mut Msg, base: u32, offset: u32, len: u32) {
    kexpr(m, "payload", |m| {
        be32(m, NFTA_PAYLOAD_DREG, NFT_REG_1);
        be32(m, NFTA_PAYLOAD_BASE, base);
        be32(m, NFTA_PAYLOAD_OFFSET, offset);
        be32(m, NFTA_PAYLOAD_LEN, len);
    });
}

/// `reg1 = reg1 & mask`.
fn and(m: &mut Msg, mask: &[u8]) {
    kexpr(m, "bitwise", |m| {
        be32(m, NFTA_BITWISE_SREG, NFT_REG_1);
        be32(m, NFTA_BITWISE_DREG, NFT_REG_1);
        be32(m, NFTA_BITWISE_LEN, mask.len() as u32);
        data(m, NFTA_BITWISE_MASK, mask);
        data(m, NFTA_BITWISE_XOR, &vec![0; mask.len()]);
    });
}

fn immediate(m: &mut Msg, reg: u32, value: &[u8]) {
    kexpr(m, "immediate", |m| {
        be32(m, NFTA_IMMEDIATE_DREG, reg);
        data(m, NFTA_IMMEDIATE_DATA, value);
    });
}

/// `ip saddr|daddr [!=] net/len` at `offset` in the IPv4 header.
fn addr(m: &mut Msg, offset: u32, (net, len): (Ipv4Addr, u8), not: bool) {
    payload(m, NFT_PAYLOAD_NETWORK_HEADER, offset, 4);
    let mask = u32::MAX
        .checked_shl(32 - u32::from(len.min(32)))
        .unwrap_or(0);
    if len < 32 {
        and(m, &mask.to_be_bytes());
    }
    let net = u32::from(net) & mask;
    cmp(
        m,
        if not { NFT_CMP_NEQ } else { NFT_CMP_EQ },
        &net.to_be_bytes(),
    );
}

/// Encodes one planned expression as the kernel expressions doing it.
fn expr(m: &mut Msg, e: &Expr) {
    match e {
        Expr::Ipv4 => {
            meta(m, NFT_META_NFPROTO);
            cmp(m, NFT_CMP_EQ, &[NFPROTO_IPV4 as u8]);
        }
        Expr::L4proto(p) => {
            meta(m, NFT_META_L4PROTO);
            cmp(m, NFT_CMP_EQ, &[p.number()]);
        }
        Expr::Saddr { net, not } => addr(m, 12, *net, *not),
        Expr::Daddr { net, not } => addr(m, 16, *net, *not),
        Expr::Dport(p) => {
            payload(m, NFT_PAYLOAD_TRANSPORT_HEADER, 2, 2);
            cmp(m, NFT_CMP_EQ, &p.to_be_bytes());
        }
        Expr::FibDaddrLocal => {
            kexpr(m, "fib", |m| {
                be32(m, NFTA_FIB_DREG, NFT_REG_1);
                be32(m, NFTA_FIB_RESULT, NFT_FIB_RESULT_ADDRTYPE);
                be32(m, NFTA_FIB_FLAGS, NFTA_FIB_F_DADDR);
            });
            cmp(m, NFT_CMP_EQ, &RTN_LOCAL.to_ne_bytes());
        }
        Expr::CtDnat => {
            kexpr(m, "ct", |m| {
                be32(m, NFTA_CT_DREG, NFT_REG_1);
                be32(m, NFTA_CT_KEY, NFT_CT_STATUS);
            });
            and(m, &IPS_DST_NAT.to_ne_bytes());
            cmp(m, NFT_CMP_NEQ, &[0; 4]);
        }
        Expr::Oifname(name) => {
            meta(m, NFT_META_OIFNAME);
            let mut v = [0u8; IFNAMSIZ];
            let n = name.len().min(IFNAMSIZ - 1);
            v[..n].copy_from_slice(&name.as_bytes()[..n]);
            cmp(m, NFT_CMP_EQ, &v);
        }
        Expr::OneIn(n) => {
            kexpr(m, "numgen", |m| {
                be32(m, NFTA_NG_DREG, NFT_REG_1);
                be32(m, NFTA_NG_MODULUS, *n);
                be32(m, NFTA_NG_TYPE, NFT_NG_RANDOM);
            });
            cmp(m, NFT_CMP_EQ, &[0; 4]);
        }
        Expr::Jump(chain) => kexpr(m, "immediate", |m| {
            be32(m, NFTA_IMMEDIATE_DREG, NFT_REG_VERDICT);
            let d = m.begin(NFTA_IMMEDIATE_DATA | NLA_F_NESTED);
            let v = m.begin(NFTA_DATA_VERDICT | NLA_F_NESTED);
            be32(m, NFTA_VERDICT_CODE, NFT_JUMP as u32);
            m.attr_str(NFTA_VERDICT_CHAIN, chain);
            m.end(v);
            m.end(d);
        }),
        Expr::Dnat(ip, port) => {
            immediate(m, NFT_REG_1, &ip.octets());
            immediate(m, NFT_REG_2, &port.to_be_bytes());
            kexpr(m, "nat", |m| {
                be32(m, NFTA_NAT_TYPE, NFT_NAT_DNAT);
                be32(m, NFTA_NAT_FAMILY, NFPROTO_IPV4);
                be32(m, NFTA_NAT_REG_ADDR_MIN, NFT_REG_1);
                be32(m, NFTA_NAT_REG_PROTO_MIN, NFT_REG_2);
            });
        }
        Expr::Masquerade => kexpr(m, "masq", |_| {}),
    }
}

fn describe(t: Option<&Table>, s: &Step) -> String {
    match (s, t) {
        (Step::NewTable(n), _) => format!("create table inet {n}"),
        (Step::DelTable(n), _) => format!("delete table inet {n}"),
        (Step::Chain(i), Some(t)) => {
            let c = &t.chains[*i];
            match c.base {
                Some(b) => format!(
                    "create chain {} (type nat, hook {:?}, priority {})",
                    c.name, b.hook, b.priority
                ),
                None => format!("create chain {}", c.name),
            }
        }
        (Step::Rule(i, k), Some(t)) => {
            let c = &t.chains[*i];
            format!("add rule to chain {}: {}", c.name, c.rules[*k])
        }
        _ => "a message".into(),
    }
}

/// Sends a batch and reads its answers: the first failed message's error, or an error if the
/// last message's ack is missing.
fn run(b: Batch, t: Option<&Table>, what: &str) -> Result<()> {
    let (buf, last, steps) = b.finish();
    let fd: OwnedFd = socket(
        AddressFamily::Netlink,
        SockType::Raw,
        SockFlag::SOCK_CLOEXEC,
        SockProtocol::NetlinkNetFilter,
    )
    .map_err(|e| nl_err(format!("{what}: socket(NETLINK_NETFILTER)"), e))?;
    bind(fd.as_raw_fd(), &NetlinkAddr::new(0, 0))
        .map_err(|e| nl_err(format!("{what}: bind(NETLINK_NETFILTER)"), e))?;
    // The whole batch must fit in one send; its answers (each error echoes its message) in the
    // receive buffer. Both are limits, not allocations; the kernel doubles them.
    let _ = setsockopt(&fd, sockopt::SndBufForce, &(buf.len() + 4096));
    let _ = setsockopt(
        &fd,
        sockopt::RcvBufForce,
        &(buf.len() + 1024 * steps.len() + 65536),
    );
    let n = send(fd.as_raw_fd(), &buf, MsgFlags::empty())
        .map_err(|e| nl_err(format!("{what}: send the batch ({} bytes)", buf.len()), e))?;
    if n != buf.len() {
        return Err(nl_err(format!("{what}: short send"), nix::Error::EMSGSIZE));
    }

    let mut errors: Vec<(u32, i32)> = Vec::new();
    let mut acked = false;
    let mut rbuf = vec![0u8; 64 * 1024];
    loop {
        let n = match recv(fd.as_raw_fd(), &mut rbuf, MsgFlags::MSG_DONTWAIT) {
            Ok(n) => n,
            Err(nix::Error::EAGAIN) => break,
            Err(e) => return Err(nl_err(format!("{what}: read the answers"), e)),
        };
        let mut at = 0;
        while at + NLMSG_HDRLEN <= n {
            let h = &rbuf[at..];
            let len = u32::from_ne_bytes([h[0], h[1], h[2], h[3]]) as usize;
            let ty = u16::from_ne_bytes([h[4], h[5]]);
            let seq = u32::from_ne_bytes([h[8], h[9], h[10], h[11]]);
            if len < NLMSG_HDRLEN || at + len > n {
                return Err(nl_err(what, nix::Error::EBADMSG));
            }
            let p = &rbuf[at + NLMSG_HDRLEN..at + len];
            at += (len + 3) & !3;
            if ty != NLMSG_ERROR || p.len() < 4 {
                continue;
            }
            let code = i32::from_ne_bytes([p[0], p[1], p[2], p[3]]);
            if code != 0 {
                errors.push((seq, -code));
            } else if seq == last {
                acked = true;
            }
        }
    }
    errors.sort_unstable();
    if let Some(&(seq, errno)) = errors.first() {
        let msg = match seq.checked_sub(FIRST_SEQ + 1) {
            Some(i) if (i as usize) < steps.len() => describe(t, &steps[i as usize]),
            _ => "the batch".into(),
        };
        let more = if errors.len() > 1 {
            format!(" (and {} more failed messages)", errors.len() - 1)
        } else {
            String::new()
        };
        return Err(SysError::Netlink {
            what: format!("{what}: {msg}{more}; nothing was changed"),
            err: nix::Error::from_raw(errno),
        });
    }
    if !acked {
        return Err(nl_err(
            format!("{what}: the kernel did not acknowledge the batch"),
            nix::Error::EPROTO,
        ));
    }
    Ok(())
}

/// Replaces table `inet <t.name>` with `t`, atomically: the table is created if missing (so it
/// can be deleted), deleted with everything in it, and created again with `t`'s chains and
/// rules, in one batch. Running it twice with the same `t` leaves one copy of every rule.
pub fn replace_table(t: &Table) -> Result<()> {
    let mut b = Batch::new();
    b.new_table(&t.name);
    b.del_table(&t.name);
    b.new_table(&t.name);
    b.table(t);
    run(
        b,
        Some(t),
        &format!("replace nftables table inet {}", t.name),
    )
}

/// Deletes table `inet <name>` if it exists (created first in the same batch, so a missing
/// table is no error).
pub fn delete_table(name: &str) -> Result<()> {
    let mut b = Batch::new();
    b.new_table(name);
    b.del_table(name);
    run(b, None, &format!("delete nftables table inet {name}"))
}

/// Checks that nf_tables with everything [`replace_table`] uses works here: creates a scratch
/// table with the NAT chains and one rule of each kind, and deletes it, in one batch (the
/// kernel checks and loads every expression; nothing stays behind).
pub fn available() -> Result<()> {
    use crate::net::rules::{HostPort, NetPlan, Proto, ServiceRule, plan};
    let ip = Ipv4Addr::new;
    let mut t = plan(&NetPlan {
        bridge: "bramble0".into(),
        cluster_cidr: (ip(10, 42, 0, 0), 16),
        pod_subnet: Some((ip(10, 42, 1, 0), 24)),
        service_cidr: (ip(10, 43, 0, 0), 16),
        services: vec![ServiceRule {
            namespace: "probe".into(),
            name: "probe".into(),
            protocol: Proto::Tcp,
            cluster_ip: Some(ip(10, 43, 0, 1)),
            port: 80,
            node_port: true,
            endpoints: vec![(ip(10, 42, 1, 2), 80), (ip(10, 42, 1, 3), 80)],
        }],
        host_ports: vec![HostPort {
            protocol: Proto::Udp,
            host_port: 53,
            pod_ip: ip(10, 42, 1, 4),
            container_port: 53,
        }],
    });
    t.name = format!("bramble-probe-{}", std::process::id());
    let mut b = Batch::new();
    b.new_table(&t.name);
    b.table(&t);
    b.del_table(&t.name);
    run(b, Some(&t), "check nf_tables").map_err(|e| match e {
        SysError::Netlink { what, err } => SysError::Netlink {
            what: format!(
                "nf_tables with NAT is not usable here ({what}); the kernel needs nf_tables with \
                 the inet family and nat, masq, fib, numgen and ct expressions (CONFIG_NF_TABLES, \
                 CONFIG_NF_TABLES_INET, CONFIG_NFT_NAT, CONFIG_NFT_MASQ, CONFIG_NFT_FIB_INET, \
                 CONFIG_NFT_NUMGEN, CONFIG_NFT_CT) and the agent CAP_NET_ADMIN"
            ),
            err,
        },
        e => e,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attrs(mut p: &[u8]) -> Vec<(u16, Vec<u8>)> {
        let mut out = Vec::new();
        while p.len() >= 4 {
            let len = u16::from_ne_bytes([p[0], p[1]]) as usize;
            let ty = u16::from_ne_bytes([p[2], p[3]]);
            out.push((ty, p[4..len].to_vec()));
            p = &p[((len + 3) & !3).min(p.len())..];
        }
        out
    }

    #[test]
    fn a_batch_is_framed_by_begin_and_end_and_acks_only_its_last_message() {
        let mut b = Batch::new();
        b.new_table("t");
        b.del_table("t");
        let (buf, last, steps) = b.finish();
        assert_eq!(steps.len(), 2);
        assert_eq!(last, 3);
        let mut msgs = Vec::new();
        let mut at = 0;
        while at < buf.len() {
            let len = u32::from_ne_bytes(buf[at..at + 4].try_into().unwrap()) as usize;
            let ty = u16::from_ne_bytes([buf[at + 4], buf[at + 5]]);
            let flags = u16::from_ne_bytes([buf[at + 6], buf[at + 7]]);
            let seq = u32::from_ne_bytes(buf[at + 8..at + 12].try_into().unwrap());
            let nfgen = buf[at + 16..at + 20].to_vec();
            msgs.push((ty, flags, seq, nfgen));
            at += len;
        }
        assert_eq!(at, buf.len());
        assert_eq!(
            msgs,
            [
                (0x10, 1, 1, vec![0, 0, 0, 10]),
                (0xa00, 1 | 0x400, 2, vec![1, 0, 0, 0]),
                (0xa02, 1 | 4, 3, vec![1, 0, 0, 0]),
                (0x11, 1, 4, vec![0, 0, 0, 10]),
            ]
        );
    }

    #[test]
    fn a_dnat_is_two_immediates_and_a_nat() {
        let mut m = Msg::default();
        expr(&mut m, &Expr::Dnat(Ipv4Addr::new(10, 42, 1, 2), 8080));
        let elems = attrs(&m.buf);
        assert_eq!(elems.len(), 3);
        assert!(
            elems
                .iter()
                .all(|(ty, _)| *ty == NFTA_LIST_ELEM | NLA_F_NESTED)
        );
        let names: Vec<String> = elems
            .iter()
            .map(|(_, e)| {
                let a = attrs(e);
                String::from_utf8(a[0].1.clone()).unwrap()
            })
            .collect();
        assert_eq!(names, ["immediate\0", "immediate\0", "nat\0"]);
        // The port's immediate: register 2, the port big-endian.
        let port = attrs(&elems[1].1);
        let data = attrs(&port[1].1);
        assert_eq!(data[0].1, 2u32.to_be_bytes());
        let value = attrs(&data[1].1);
        assert_eq!(value, [(NFTA_DATA_VALUE, 8080u16.to_be_bytes().to_vec())]);
    }

    #[test]
    fn a_prefix_is_masked_before_the_compare() {
        let mut m = Msg::default();
        expr(
            &mut m,
            &Expr::Saddr {
                net: (Ipv4Addr::new(10, 42, 7, 9), 16),
                not: true,
            },
        );
        let elems = attrs(&m.buf);
        assert_eq!(elems.len(), 3); // payload, bitwise, cmp
        let cmp = attrs(&attrs(&elems[2].1)[1].1);
        assert_eq!(cmp[1].1, NFT_CMP_NEQ.to_be_bytes());
        assert_eq!(attrs(&cmp[2].1)[0].1, [10, 42, 0, 0]);
        let bitwise = attrs(&attrs(&elems[1].1)[1].1);
        assert_eq!(attrs(&bitwise[3].1)[0].1, [255, 255, 0, 0]);
    }
}
