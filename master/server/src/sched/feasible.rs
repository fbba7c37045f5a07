//! Feasibility: small checkers, each answering "can this pod go on this node?" for one concern,
//! composed in a fixed order (Nomad's `feasible.go`). The first failing checker names the
//! [`Reason`] counted for the node in an unschedulable pod's summary.
//!
//! Checkers split into *static* ones (the node's readiness, architecture, labels and taints, which
//! a batch never changes) and *dynamic* ones (resources and host ports, which every placement
//! changes).

use bramble_wire::objects::Arch;

use super::snapshot::{Amounts, Limits, NodeStatic};

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
    /// The pod's rootfs artifact has no variant for the node's architecture.
    NoArtifactVariant,
    /// The pod's image has no variant for the node's architecture (an armv7 node runs an armv6
    /// variant).
    NoImageVariant,
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
    pub const COUNT: usize = 11;

    /// Every reason, in checker order.
    pub const ALL: [Reason; Reason::COUNT] = [
        Reason::NotReady,
        Reason::Unschedulable,
        Reason::ArchMismatch,
        Reason::NoArtifactVariant,
        Reason::NoImageVariant,
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
            Reason::NoArtifactVariant => "no artifact variant for their architecture",
            Reason::NoImageVariant => "no image variant for their architecture",
            Reason::SelectorMismatch => "didn't match node selector",
            Reason::UntoleratedTaint => "untolerated taint",
            Reason::InsufficientCpu => "insufficient cpu",
            Reason::InsufficientMemory => "insufficient memory",
            Reason::InsufficientPids => "insufficient pids",
            Reason::HostPortConflict => "host port in use",
        }
    }
}

/// The static constraints of a pending pod compiled against a snapshot: labels interned,
/// tolerations resolved per taint. Borrows scratch buffers, so building one allocates nothing.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PodReq<'a> {
    pub(crate) arch: Option<Arch>,
    /// Architectures the pod's rootfs artifact has variants for; `None` = no artifact.
    pub(crate) artifact_archs: Option<&'a [Arch]>,
    /// Architectures whose nodes can run the pod's image (armv7 included when there is an armv6
    /// variant); `None` = no image.
    pub(crate) image_archs: Option<&'a [Arch]>,
    /// (key id, value id) sorted by key id.
    pub(crate) selector: &'a [(u32, u32)],
    /// A selector key or value that no node has: matches nothing.
    pub(crate) selector_impossible: bool,
    /// Indexed by taint id; missing entries are not tolerated.
    pub(crate) tolerated: &'a [bool],
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

/// The pod's artifact, if any, has a variant for the node's architecture.
#[inline]
pub(crate) fn check_artifact(p: &PodReq<'_>, n: &NodeStatic) -> Result<(), Reason> {
    match (p.artifact_archs, n.arch) {
        (None, _) => Ok(()),
        (Some(archs), Some(a)) if archs.contains(&a) => Ok(()),
        _ => Err(Reason::NoArtifactVariant),
    }
}

/// The pod's image, if any, has a variant the node's architecture runs.
#[inline]
pub(crate) fn check_image(p: &PodReq<'_>, n: &NodeStatic) -> Result<(), Reason> {
    match (p.image_archs, n.arch) {
        (None, _) => Ok(()),
        (Some(archs), Some(a)) if archs.contains(&a) => Ok(()),
        _ => Err(Reason::NoImageVariant),
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
pub(crate) fn check_resources(
    req: &Amounts,
    limits: &Limits,
    used: &Amounts,
) -> Result<(), Reason> {
    if !fits(req.cpu_millis, used.cpu_millis, limits.cpu) {
        return Err(Reason::InsufficientCpu);
    }
    if !fits(req.memory_bytes, used.memory_bytes, limits.mem) {
        return Err(Reason::InsufficientMemory);
    }
    if !fits(req.pids, used.pids, limits.pids) {
        return Err(Reason::InsufficientPids);
    }
    Ok(())
}

/// None of the pod's host ports (`wanted`) is in use on the node (`in_use`, sorted).
#[inline]
pub(crate) fn check_ports(wanted: &[u16], in_use: &[u16]) -> Result<(), Reason> {
    if in_use.is_empty() {
        return Ok(());
    }
    for port in wanted {
        if in_use.binary_search(port).is_ok() {
            return Err(Reason::HostPortConflict);
        }
    }
    Ok(())
}

/// The checkers that do not depend on what the batch placed so far, in [`Reason`] order. The
/// scheduler runs them once per pod *class* (pods with equal constraints) and node.
#[inline]
pub(crate) fn static_fit(p: &PodReq<'_>, n: &NodeStatic) -> Result<(), Reason> {
    check_ready(n)?;
    check_schedulable(n)?;
    check_arch(p, n)?;
    check_artifact(p, n)?;
    check_image(p, n)?;
    check_selector(p, n)?;
    check_taints(p, n)
}

/// The checkers that do, in [`Reason`] order; they run for every pod on the nodes its class
/// passed.
#[inline]
pub(crate) fn dynamic_fit(
    req: &Amounts,
    host_ports: &[u16],
    limits: &Limits,
    used: &Amounts,
    in_use: &[u16],
) -> Result<(), Reason> {
    check_resources(req, limits, used)?;
    check_ports(host_ports, in_use)
}
