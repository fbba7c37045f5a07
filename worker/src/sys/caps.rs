//! Capabilities and credentials of a pod's process: plain data prepared before `fork`
//! ([`Credentials`], [`CapPlan`]; computed by `runtime::security`, pure), and the
//! async-signal-safe calls the fork child makes with it (`spawn::process_child`): nothing here
//! allocates or takes a lock.
//!
//! Capability sets are bitmasks by capability number (`bramble_wire::objects::CapSet`'s bits).

/// The capability sets a process gets (bit `n` = capability number `n`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CapPlan {
    /// The bounding set: every other capability is dropped from it (`PR_CAPBSET_DROP`).
    pub bounding: u64,
    /// Permitted set after the user switch.
    pub permitted: u64,
    /// Effective set after the user switch.
    pub effective: u64,
    /// Inheritable set.
    pub inheritable: u64,
    /// Raised as ambient (each also permitted and inheritable), so that a non-root program keeps
    /// them across `execve`.
    pub ambient: u64,
}

/// Who a process runs as and with which capabilities.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Credentials {
    /// User id (real, effective and saved).
    pub uid: u32,
    /// Group id (real, effective and saved).
    pub gid: u32,
    /// The supplementary groups (`setgroups`), the primary group included.
    pub groups: Vec<u32>,
    /// Capabilities.
    pub caps: CapPlan,
}

/// `prctl(op, arg2, 0, 0, 0)` with every argument a full `unsigned long` (the kernel checks the
/// unused ones of some operations are zero). Async-signal safe.
fn prctl(op: libc::c_int, arg2: libc::c_ulong, arg3: libc::c_ulong) -> libc::c_int {
    // SAFETY: prctl with integer arguments only; none is a pointer for the operations used here.
    unsafe { libc::prctl(op, arg2, arg3, 0 as libc::c_ulong, 0 as libc::c_ulong) }
}

/// The highest capability number the kernel knows, probed once with `PR_CAPBSET_READ`.
fn last_cap() -> u32 {
    let mut last = 0;
    for cap in 0..64 {
        if prctl(libc::PR_CAPBSET_READ, cap as libc::c_ulong, 0) < 0 {
            break;
        }
        last = cap;
    }
    last
}

/// The calling process's bounding set, limited to the capabilities the kernel knows: what a pod
/// process can have at most (a capability the kernel does not know would fail `capset`).
pub fn available() -> u64 {
    let mut set = 0u64;
    for cap in 0..=last_cap() {
        if prctl(libc::PR_CAPBSET_READ, cap as libc::c_ulong, 0) == 1 {
            set |= 1 << cap;
        }
    }
    set
}

/// Drops every capability not in `keep` from the bounding set (needs CAP_SETPCAP). Async-signal
/// safe. Returns `false` with `errno` set on failure.
pub(super) fn drop_bounding(keep: u64) -> bool {
    for cap in 0..64u32 {
        if keep & (1 << cap) != 0 {
            continue;
        }
        let has = prctl(libc::PR_CAPBSET_READ, cap as libc::c_ulong, 0);
        if has < 0 {
            // EINVAL: past the kernel's last capability.
            break;
        }
        if has == 1 && prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0) < 0 {
            return false;
        }
    }
    true
}

/// `PR_SET_KEEPCAPS`: keep the permitted set across the switch away from uid 0 (cleared again by
/// `execve`). Async-signal safe.
pub(super) fn keep_caps(on: bool) -> bool {
    prctl(libc::PR_SET_KEEPCAPS, libc::c_ulong::from(on), 0) >= 0
}

/// `__user_cap_header_struct`.
#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

/// `__user_cap_data_struct`.
#[repr(C)]
#[derive(Clone, Copy)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;

/// `capset` (version 3: two 32-bit halves) of the calling thread's permitted, effective and
/// inheritable sets. Async-signal safe.
pub(super) fn set(plan: &CapPlan) -> bool {
    let mut header = CapHeader {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let half = |v: u64, i: usize| (v >> (32 * i)) as u32;
    let data = [0, 1].map(|i| CapData {
        effective: half(plan.effective, i),
        permitted: half(plan.permitted, i),
        inheritable: half(plan.inheritable, i),
    });
    // SAFETY: the header and the two data structs are valid for the call, laid out as the
    // kernel's `__user_cap_header_struct` and `__user_cap_data_struct[2]`.
    unsafe {
        libc::syscall(
            libc::SYS_capset,
            &raw mut header,
            data.as_ptr() as *const libc::c_void,
        ) == 0
    }
}

/// Raises every capability of `ambient` in the ambient set (each must be permitted and
/// inheritable already). Async-signal safe.
pub(super) fn raise_ambient(ambient: u64) -> bool {
    for cap in 0..64u32 {
        if ambient & (1 << cap) == 0 {
            continue;
        }
        let raise = libc::PR_CAP_AMBIENT_RAISE as libc::c_ulong;
        if prctl(libc::PR_CAP_AMBIENT, raise, cap as libc::c_ulong) < 0 {
            return false;
        }
    }
    true
}

/// Makes the calling process the reaper of its orphaned descendants (`PR_SET_CHILD_SUBREAPER`):
/// a pod init that is not PID 1 (a `host_pid` pod) still reaps its pod's orphans.
pub fn become_subreaper() -> super::Result<()> {
    if prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0) < 0 {
        return Err(super::SysError::call(
            "prctl(PR_SET_CHILD_SUBREAPER)",
            super::errno(),
        ));
    }
    Ok(())
}
