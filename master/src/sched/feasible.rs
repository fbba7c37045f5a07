//! Feasibility: small checkers, each answering "can this pod go on this node?" for one concern,
//! composed in a fixed order (Nomad's `feasible.go`). The first failing checker names the
//! [`Reason`] counted for the node in an unschedulable pod's summary.
//!
//! Checkers split into *static* ones (the node's readiness, architecture, labels and taints, which
//! a batch never changes) and *dynamic* ones (resources and host ports, which every placement
//! changes).

use bramble_wire::objects::Arch;

use super::snapshot::{Amounts, NodeStatic, NodeUsage};

/// Why a node cannot take a pod. The order is the order in which the checkers run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reason {
    /// The node's Ready condition does not hold.
    NotReady,
    /// The node is cordoned.
    Unschedulable,
    /// The node's architecture differs from the pod's, is unknown while the pod requires one, or
    /// runs no pods at all ([`Arch::Mcu`]).
    ArchMismatch,
    /// A label of the pod's node selector is missing or differs.
    SelectorMismatch,
    /// The node has a taint that the pod does not tolerate.
    UntoleratedTaint,
    /// Not enough CPU left.
    InsufficientCpu,
    /// Not enough memory left.
    InsufficientMemory,
    /// Not enough pids left.
    InsufficientPids,
    /// A host port the pod claims is taken.
    HostPortConflict,
}

impl Reason {
    /// Number of reasons.
    pub const COUNT: usize = 9;

    /// Every reason, in checker order.
    pub const ALL: [Reason; Reason::COUNT] = [
        Reason::NotReady,
        Reason::Unschedulable,
        Reason::ArchMismatch,
        Reason::SelectorMismatch,
        Reason::UntoleratedTaint,
        Reason::InsufficientCpu,
        Reason::InsufficientMemory,
        Reason::InsufficientPids,
        Reason::HostPortConflict,
    ];

    /// The phrase used in summaries ("3 insufficient memory").
    pub const fn as_str(self) -> &'static str {
        match self {
            Reason::NotReady => "not ready",
            Reason::Unschedulable => "unschedulable",
            Reason::ArchMismatch => "wrong architecture",
            Reason::SelectorMismatch => "didn't match node selector",
            Reason::UntoleratedTaint => "untolerated taint",
            Reason::InsufficientCpu => "insufficient cpu",
            Reason::InsufficientMemory => "insufficient memory",
            Reason::InsufficientPids => "insufficient pids",
            Reason::HostPortConflict => "host port in use",
        }
    }
}

/// A pending pod compiled against a snapshot: labels interned, tolerations resolved per taint.
/// Borrowed scratch buffers, so building one allocates nothing.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PodReq<'a> {
    pub(crate) requests: Amounts,
    /// Sorted.
    pub(crate) host_ports: &'a [u16],
    pub(crate) arch: Option<Arch>,
    /// (key id, value id) sorted by key id.
    pub(crate) selector: &'a [(u32, u32)],
    /// A selector key or value that no node has: matches nothing.
    pub(crate) selector_impossible: bool,
    /// Indexed by taint id; missing entries are not tolerated.
    pub(crate) tolerated: &'a [bool],
    pub(crate) owner: Option<u32>,
}

/// The node reports Ready.
#[inline]
pub(crate) fn check_ready(n: &NodeStatic) -> Result<(), Reason> {
    if n.ready {
        Ok(())
    } else {
        Err(Reason::NotReady)
    }
}

/// The node is not cordoned.
#[inline]
pub(crate) fn check_schedulable(n: &NodeStatic) -> Result<(), Reason> {
    if n.unschedulable {
        Err(Reason::Unschedulable)
    } else {
        Ok(())
    }
}

/// The node runs pods and has the pod's architecture, if the pod requires one.
#[inline]
pub(crate) fn check_arch(p: &PodReq<'_>, n: &NodeStatic) -> Result<(), Reason> {
    if n.arch == Some(Arch::Mcu) {
        return Err(Reason::ArchMismatch);
    }
    match p.arch {
        Some(a) if n.arch != Some(a) => Err(Reason::ArchMismatch),
        _ => Ok(()),
    }
}

/// Every selector label is on the node with the same value (both lists sorted by key).
#[inline]
pub(crate) fn check_selector(p: &PodReq<'_>, n: &NodeStatic) -> Result<(), Reason> {
    if p.selector_impossible {
        return Err(Reason::SelectorMismatch);
    }
    let mut labels = n.labels.iter();
    'outer: for &(k, v) in p.selector {
        for &(nk, nv) in labels.by_ref() {
            if nk == k {
                if nv == v {
                    continue 'outer;
                }
                return Err(Reason::SelectorMismatch);
            }
            if nk > k {
                break;
            }
        }
        return Err(Reason::SelectorMismatch);
    }
    Ok(())
}

/// Every taint of the node is tolerated.
#[inline]
pub(crate) fn check_taints(p: &PodReq<'_>, n: &NodeStatic) -> Result<(), Reason> {
    for &t in &n.taints {
        if !p.tolerated.get(t as usize).copied().unwrap_or(false) {
            return Err(Reason::UntoleratedTaint);
        }
    }
    Ok(())
}

/// `req` more of a resource fits under `limit` with `used` taken. A zero request always fits
/// (as in Kubernetes), even on a node that is already over its limit.
#[inline]
fn fits(req: u64, used: u64, limit: u64) -> bool {
    req == 0 || used.saturating_add(req) <= limit
}

/// CPU, memory and pids fit in what is left of the node's allocatable.
#[inline]
pub(crate) fn check_resources(p: &PodReq<'_>, n: &NodeStatic, u: &NodeUsage) -> Result<(), Reason> {
    if !fits(p.requests.cpu_millis, u.used.cpu_millis, n.limits.cpu) {
        return Err(Reason::InsufficientCpu);
    }
    if !fits(p.requests.memory_bytes, u.used.memory_bytes, n.limits.mem) {
        return Err(Reason::InsufficientMemory);
    }
    if !fits(p.requests.pids, u.used.pids, n.limits.pids) {
        return Err(Reason::InsufficientPids);
    }
    Ok(())
}

/// None of the pod's host ports is in use on the node.
#[inline]
pub(crate) fn check_ports(p: &PodReq<'_>, u: &NodeUsage) -> Result<(), Reason> {
    if u.host_ports.is_empty() {
        return Ok(());
    }
    for port in p.host_ports {
        if u.host_ports.binary_search(port).is_ok() {
            return Err(Reason::HostPortConflict);
        }
    }
    Ok(())
}

/// The checkers that do not depend on what the batch placed so far.
#[inline]
pub(crate) fn static_fit(p: &PodReq<'_>, n: &NodeStatic) -> Result<(), Reason> {
    check_ready(n)?;
    check_schedulable(n)?;
    check_arch(p, n)?;
    check_selector(p, n)?;
    check_taints(p, n)
}

/// The checkers that do.
#[inline]
pub(crate) fn dynamic_fit(p: &PodReq<'_>, n: &NodeStatic, u: &NodeUsage) -> Result<(), Reason> {
    check_resources(p, n, u)?;
    check_ports(p, u)
}

/// Every checker, in [`Reason`] order.
#[inline]
pub(crate) fn feasible(p: &PodReq<'_>, n: &NodeStatic, u: &NodeUsage) -> Result<(), Reason> {
    static_fit(p, n)?;
    dynamic_fit(p, n, u)
}
