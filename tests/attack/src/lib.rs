//! The judge of `bramble-attack`'s output, shared by the containment tests on this host
//! (`tests/tests/containment.rs`) and in the QEMU guests (`cross/src/cluster/containment.rs`):
//! which answer to each attack means "contained" in a default pod, and what a privileged pod
//! must be able to do. Pure: no I/O.
#![forbid(unsafe_code)]

use std::collections::BTreeMap;

/// The 14 capabilities of a default container (Docker/containerd): CHOWN, DAC_OVERRIDE,
/// FOWNER, FSETID, KILL, SETGID, SETUID, SETPCAP, NET_BIND_SERVICE, NET_RAW, SYS_CHROOT, MKNOD,
/// AUDIT_WRITE, SETFCAP.
pub const DEFAULT_CAPS: &str = "00000000a80425fb";

/// Per attack of `bramble-attack`, the answers that mean "contained" in a default pod, and why.
pub const DEFAULT_POD: &[(&str, &[&str], &str)] = &[
    (
        "memory_limit",
        &["EROFS", "EACCES", "EPERM", "ENOENT"],
        "the pod's cgroup is mounted read-only",
    ),
    (
        "cgroup_procs",
        &["EROFS", "EACCES", "EPERM", "ENOENT"],
        "a cgroup namespace and a read-only cgroup mount",
    ),
    (
        "open_by_handle",
        &["EPERM"],
        "no CAP_DAC_READ_SEARCH, and seccomp refuses open_by_handle_at",
    ),
    ("mount", &["EPERM"], "no CAP_SYS_ADMIN, and seccomp"),
    (
        "core_pattern",
        &["EROFS", "EACCES", "EPERM"],
        "/proc/sys is read-only",
    ),
    (
        "sysrq_trigger",
        &["EROFS", "EACCES", "EPERM", "ENOENT"],
        "/proc/sysrq-trigger is read-only",
    ),
    (
        "kcore_read",
        &["empty", "ENOENT", "EACCES", "EPERM"],
        "/proc/kcore is masked",
    ),
    (
        "sys_write",
        &["EROFS", "EACCES", "EPERM", "ENOENT"],
        "/sys is read-only",
    ),
    (
        "state_dir",
        &["ENOENT", "EACCES"],
        "the pod has its own root: host paths only through host_path volumes",
    ),
    (
        "node_credential",
        &["ENOENT", "EACCES"],
        "the pod has its own root: the worker's state dir is not in it",
    ),
    (
        "mknod_block",
        &["EPERM", "EACCES"],
        "the device allow-list refuses block devices (CAP_MKNOD is a default: mknod itself may work)",
    ),
    (
        "netlink_newlink",
        &["EPERM"],
        "no CAP_NET_ADMIN, even on the host's network",
    ),
    (
        "module_load",
        &["EPERM"],
        "no CAP_SYS_MODULE, and seccomp refuses finit_module",
    ),
];

/// What a privileged pod must be able to do (harmless successes), and why.
pub const PRIVILEGED_POD: &[(&str, &str)] = &[
    ("mount", "CAP_SYS_ADMIN and no seccomp filter"),
    ("sys_write", "a writable /sys"),
    ("mknod_block", "the host's /dev and no device filter"),
];

/// One line of `bramble-attack`'s output: result and detail per attack or status field.
pub fn parse(out: &str) -> BTreeMap<String, (String, String)> {
    out.lines()
        .filter_map(|l| {
            let mut f = l.splitn(3, '\t');
            let name = f.next()?.trim();
            let result = f.next()?.trim();
            Some((
                name.to_string(),
                (result.to_string(), f.next().unwrap_or("").to_string()),
            ))
        })
        .collect()
}

/// Every way a default pod's output (parsed) falls short of containment, one line each.
pub fn default_pod_violations(got: &BTreeMap<String, (String, String)>) -> Vec<String> {
    let mut v = Vec::new();
    for (name, allowed, why) in DEFAULT_POD {
        match got.get(*name) {
            Some((r, _)) if allowed.contains(&r.as_str()) => {}
            Some((r, detail)) => v.push(format!(
                "{name}: NOT BLOCKED ({r}; want {}: {why}) — {detail}",
                allowed.join("/")
            )),
            None => v.push(format!("{name}: no result line (did the attack crash?)")),
        }
    }
    let status = |k: &str| got.get(&format!("status.{k}")).map(|(r, _)| r.as_str());
    for (k, want, why) in [
        ("CapBnd", DEFAULT_CAPS, "the 14 default capabilities"),
        (
            "CapEff",
            DEFAULT_CAPS,
            "root in the pod holds the 14, no more",
        ),
        ("Seccomp", "2", "the runtime-default seccomp filter"),
    ] {
        if status(k) != Some(want) {
            v.push(format!(
                "{k}: {} (want {want}: {why})",
                status(k).unwrap_or("missing")
            ));
        }
    }
    v
}

/// Every way a privileged pod's output (parsed) falls short of a privileged container:
/// `full_caps` is the bounding set of the worker that started it (its whole set).
pub fn privileged_pod_violations(
    got: &BTreeMap<String, (String, String)>,
    full_caps: &str,
) -> Vec<String> {
    let mut v = Vec::new();
    for (name, why) in PRIVILEGED_POD {
        match got.get(*name) {
            Some((r, _)) if r == "ok" => {}
            Some((r, detail)) => {
                v.push(format!("{name}: refused ({r}; want ok: {why}) — {detail}"))
            }
            None => v.push(format!("{name}: no result line")),
        }
    }
    let status = |k: &str| got.get(&format!("status.{k}")).map(|(r, _)| r.as_str());
    for (k, want) in [
        ("CapBnd", full_caps),
        ("CapEff", full_caps),
        ("Seccomp", "0"),
    ] {
        if status(k) != Some(want) {
            v.push(format!(
                "{k}: {} (want {want})",
                status(k).unwrap_or("missing")
            ));
        }
    }
    v
}

/// The whole capability set of a kernel whose last capability is `cap_last_cap` (the
/// `kernel.cap_last_cap` line), as `/proc/self/status` prints it: `000001ffffffffff` for 40.
pub fn full_caps(cap_last_cap: u32) -> String {
    let mask = if cap_last_cap >= 63 {
        u64::MAX
    } else {
        (1u64 << (cap_last_cap + 1)) - 1
    };
    format!("{mask:016x}")
}

/// The whole capability set of the kernel the attack ran on, from its `kernel.cap_last_cap`.
pub fn full_caps_of(got: &BTreeMap<String, (String, String)>) -> Option<String> {
    let (n, _) = got.get("kernel.cap_last_cap")?;
    n.parse().ok().map(full_caps)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Today's kind of output fails with every attack named; the target's passes.
    #[test]
    fn the_judge_names_every_attack_that_got_through() {
        let mut contained = String::new();
        for (name, allowed, _) in DEFAULT_POD {
            contained += &format!("{name}\t{}\tx\n", allowed[0]);
        }
        contained += &format!(
            "status.CapBnd\t{DEFAULT_CAPS}\t-\nstatus.CapEff\t{DEFAULT_CAPS}\t-\nstatus.Seccomp\t2\t-\ndone\tok\t-\n"
        );
        assert_eq!(
            default_pod_violations(&parse(&contained)),
            Vec::<String>::new()
        );
        let open = contained
            .replace("mount\tEPERM", "mount\tok")
            .replace("module_load\tEPERM", "module_load\tENOSYS")
            .replace("status.Seccomp\t2", "status.Seccomp\t0");
        let v = default_pod_violations(&parse(&open));
        assert_eq!(v.len(), 3, "{v:?}");
        assert!(v[0].starts_with("mount: NOT BLOCKED (ok;"), "{v:?}");
        assert!(
            v[1].starts_with("module_load: NOT BLOCKED (ENOSYS;"),
            "{v:?}"
        );
        assert!(v[2].starts_with("Seccomp: 0"), "{v:?}");
        // The same contained output is not a privileged pod.
        let v = privileged_pod_violations(&parse(&contained), "000001ffffffffff");
        assert_eq!(v.len(), 6, "{v:?}");
    }

    #[test]
    fn full_sets_follow_the_last_capability() {
        assert_eq!(full_caps(40), "000001ffffffffff");
        assert_eq!(full_caps(37), "0000003fffffffff");
        let got = parse("kernel.cap_last_cap\t40\t/proc/sys/kernel/cap_last_cap\n");
        assert_eq!(full_caps_of(&got).as_deref(), Some("000001ffffffffff"));
    }
}
