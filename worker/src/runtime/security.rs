//! A process's security context, resolved (pure): its user and groups from the pod root's
//! `/etc/passwd` and `/etc/group` (read by the init after `pivot_root`; no NSS), and the
//! capability sets it gets ([`cap_plan`]). `sys::spawn` turns the result into syscalls.
//!
//! The rules are Kubernetes' and Docker's:
//! - no `user`: root. A `user` name gives its uid and, without a `group`, its primary gid; a
//!   numeric `user` gets the primary gid of its `/etc/passwd` entry if it has one, else 0.
//! - the supplementary groups are exactly the primary group and `supplementary_groups`: the
//!   user's memberships in `/etc/group` are not added.
//! - `run_as_non_root` refuses uid 0.
//! - the capability set is the default 14 changed by `add`/`drop` (all for a privileged pod); it
//!   is the bounding set. Root gets it permitted, effective and inheritable; another user gets
//!   only the capabilities it explicitly added, as ambient capabilities (so a non-root program
//!   with `add = ["NET_BIND_SERVICE"]` binds port 80 without file capabilities).

use bramble_wire::objects::{CapChanges, CapSet, IdRef, ProcessSpec};

use crate::sys::caps::{CapPlan, Credentials};

/// One line of `/etc/passwd`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PasswdEntry {
    /// User name.
    pub name: String,
    /// User id.
    pub uid: u32,
    /// Primary group id.
    pub gid: u32,
}

/// One line of `/etc/group`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupEntry {
    /// Group name.
    pub name: String,
    /// Group id.
    pub gid: u32,
}

/// Parses `/etc/passwd` (`name:password:uid:gid:gecos:home:shell`). Comments, blank lines and
/// malformed lines (as NSS's files module does) are skipped.
pub fn parse_passwd(text: &str) -> Vec<PasswdEntry> {
    text.lines()
        .filter_map(|line| {
            let mut f = line.split(':');
            let name = f.next()?.trim();
            if name.is_empty() || name.starts_with('#') || name.starts_with(['+', '-']) {
                return None;
            }
            let _password = f.next()?;
            let uid = f.next()?.trim().parse().ok()?;
            let gid = f.next()?.trim().parse().ok()?;
            Some(PasswdEntry {
                name: name.to_string(),
                uid,
                gid,
            })
        })
        .collect()
}

/// Parses `/etc/group` (`name:password:gid:members`); the members are not needed.
pub fn parse_group(text: &str) -> Vec<GroupEntry> {
    text.lines()
        .filter_map(|line| {
            let mut f = line.split(':');
            let name = f.next()?.trim();
            if name.is_empty() || name.starts_with('#') || name.starts_with(['+', '-']) {
                return None;
            }
            let _password = f.next()?;
            let gid = f.next()?.trim().parse().ok()?;
            Some(GroupEntry {
                name: name.to_string(),
                gid,
            })
        })
        .collect()
}

/// The pod root's account files, as read (`None`: the root has no such file).
#[derive(Debug, Clone, Default)]
pub struct Accounts {
    /// `/etc/passwd`.
    pub passwd: Option<String>,
    /// `/etc/group`.
    pub group: Option<String>,
}

/// Whether resolving `spec`'s user and groups needs the account files.
pub fn needs_accounts(spec: &ProcessSpec) -> bool {
    spec.user.is_some()
        || matches!(spec.group, Some(IdRef::Name(_)))
        || spec
            .supplementary_groups
            .iter()
            .any(|g| matches!(g, IdRef::Name(_)))
}

/// The user, group and supplementary groups a process runs as. Errors name what did not resolve
/// and where it was looked for.
pub fn resolve_ids(spec: &ProcessSpec, acc: &Accounts) -> Result<(u32, u32, Vec<u32>), String> {
    let users = acc.passwd.as_deref().map(parse_passwd).unwrap_or_default();
    let groups = acc.group.as_deref().map(parse_group).unwrap_or_default();
    let (uid, primary) = match &spec.user {
        None => (0, 0),
        Some(IdRef::Id(uid)) => (
            *uid,
            users.iter().find(|u| u.uid == *uid).map_or(0, |u| u.gid),
        ),
        Some(IdRef::Name(name)) => {
            let u = users.iter().find(|u| &u.name == name).ok_or_else(|| {
                if acc.passwd.is_some() {
                    format!("user {name:?} not found in /etc/passwd of the pod's root")
                } else {
                    format!(
                        "user {name:?} not found: the pod's root has no /etc/passwd (give the user as a number)"
                    )
                }
            })?;
            (u.uid, u.gid)
        }
    };
    let group = |r: &IdRef| -> Result<u32, String> {
        match r {
            IdRef::Id(g) => Ok(*g),
            IdRef::Name(name) => groups
                .iter()
                .find(|g| &g.name == name)
                .map(|g| g.gid)
                .ok_or_else(|| {
                    if acc.group.is_some() {
                        format!("group {name:?} not found in /etc/group of the pod's root")
                    } else {
                        format!(
                            "group {name:?} not found: the pod's root has no /etc/group (give the group as a number)"
                        )
                    }
                }),
        }
    };
    let gid = match &spec.group {
        Some(g) => group(g)?,
        None => primary,
    };
    let mut all = vec![gid];
    for g in &spec.supplementary_groups {
        let g = group(g)?;
        if !all.contains(&g) {
            all.push(g);
        }
    }
    if spec.run_as_non_root && uid == 0 {
        let who = match &spec.user {
            None => "no user is set, so it would run as root".to_string(),
            Some(u) => format!("user {u} is root (uid 0)"),
        };
        return Err(format!(
            "run_as_non_root is set but {who}: set user to a non-root user (e.g. user = 65534)"
        ));
    }
    Ok((uid, gid, all))
}

/// The capability sets of a process running as `uid` with `changes`, in a pod that is
/// `privileged` or not, limited to `available` (what the init itself may give: its bounding set,
/// the capabilities this kernel knows).
pub fn cap_plan(changes: CapChanges, privileged: bool, uid: u32, available: u64) -> CapPlan {
    let set = if privileged {
        CapSet::ALL
    } else {
        changes.effective()
    }
    .0 & available;
    if uid == 0 {
        return CapPlan {
            bounding: set,
            permitted: set,
            effective: set,
            inheritable: set,
            ambient: 0,
        };
    }
    let added = changes.add.0 & set;
    CapPlan {
        bounding: set,
        permitted: added,
        effective: added,
        inheritable: added,
        ambient: added,
    }
}

/// The credentials of a process: ids resolved against `acc`, capabilities by [`cap_plan`].
pub fn credentials(
    spec: &ProcessSpec,
    privileged: bool,
    acc: &Accounts,
    available: u64,
) -> Result<Credentials, String> {
    let (uid, gid, groups) = resolve_ids(spec, acc)?;
    Ok(Credentials {
        uid,
        gid,
        groups,
        caps: cap_plan(spec.capabilities, privileged, uid, available),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "\
root:x:0:0:root:/root:/bin/sh
# a comment

daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin
nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin
broken:x:notanumber:1::/:/bin/false
short:x:5
app:x:1000:1001:App,,,:/home/app:/bin/sh
";
    const GROUP: &str = "\
root:x:0:
daemon:x:1:
staff:x:50:app
nogroup:x:65534:
appgrp:x:1001:
video:x:44:app,nobody
";

    fn acc() -> Accounts {
        Accounts {
            passwd: Some(PASSWD.into()),
            group: Some(GROUP.into()),
        }
    }

    fn spec(user: Option<IdRef>, group: Option<IdRef>, supp: Vec<IdRef>) -> ProcessSpec {
        ProcessSpec {
            name: "main".into(),
            user,
            group,
            supplementary_groups: supp,
            ..Default::default()
        }
    }

    fn name(s: &str) -> IdRef {
        IdRef::Name(s.into())
    }

    #[test]
    fn passwd_and_group_parse_skipping_bad_lines() {
        let users = parse_passwd(PASSWD);
        let names: Vec<_> = users.iter().map(|u| u.name.as_str()).collect();
        assert_eq!(names, ["root", "daemon", "nobody", "app"]);
        assert_eq!(
            users[3],
            PasswdEntry {
                name: "app".into(),
                uid: 1000,
                gid: 1001
            }
        );
        let groups = parse_group(GROUP);
        assert_eq!(groups.len(), 6);
        assert_eq!(groups[2].name, "staff");
        assert_eq!(groups[2].gid, 50);
        assert!(parse_passwd("").is_empty());
        assert!(parse_group("+::::\n-x\n").is_empty());
    }

    #[test]
    fn no_user_is_root() {
        assert_eq!(
            resolve_ids(&spec(None, None, vec![]), &Accounts::default()),
            Ok((0, 0, vec![0]))
        );
    }

    #[test]
    fn a_name_gives_uid_and_primary_group_without_the_users_other_groups() {
        // app is a member of staff and video in /etc/group: not added (Kubernetes).
        assert_eq!(
            resolve_ids(&spec(Some(name("app")), None, vec![]), &acc()),
            Ok((1000, 1001, vec![1001]))
        );
        assert_eq!(
            resolve_ids(&spec(Some(name("nobody")), None, vec![]), &acc()),
            Ok((65534, 65534, vec![65534]))
        );
    }

    #[test]
    fn numbers_take_the_passwd_primary_group_if_listed() {
        assert_eq!(
            resolve_ids(&spec(Some(IdRef::Id(1000)), None, vec![]), &acc()),
            Ok((1000, 1001, vec![1001]))
        );
        // Not listed (or no /etc/passwd): group 0, as Docker does.
        assert_eq!(
            resolve_ids(
                &spec(Some(IdRef::Id(4242)), None, vec![]),
                &Accounts::default()
            ),
            Ok((4242, 0, vec![0]))
        );
    }

    #[test]
    fn explicit_group_and_supplementary_groups_by_name_or_number() {
        let s = spec(
            Some(name("app")),
            Some(name("staff")),
            vec![name("video"), IdRef::Id(7), IdRef::Id(50)],
        );
        assert_eq!(resolve_ids(&s, &acc()), Ok((1000, 50, vec![50, 44, 7])));
    }

    #[test]
    fn unknown_names_say_where_they_were_looked_for() {
        let e = resolve_ids(&spec(Some(name("ghost")), None, vec![]), &acc()).unwrap_err();
        assert_eq!(
            e,
            "user \"ghost\" not found in /etc/passwd of the pod's root"
        );
        let e = resolve_ids(&spec(None, Some(name("wheel")), vec![]), &acc()).unwrap_err();
        assert_eq!(
            e,
            "group \"wheel\" not found in /etc/group of the pod's root"
        );
        let e = resolve_ids(&spec(None, None, vec![name("wheel")]), &acc()).unwrap_err();
        assert!(e.contains("\"wheel\""), "{e}");
        let e =
            resolve_ids(&spec(Some(name("app")), None, vec![]), &Accounts::default()).unwrap_err();
        assert!(e.contains("has no /etc/passwd"), "{e}");
    }

    #[test]
    fn run_as_non_root_refuses_uid_zero() {
        let mut s = spec(None, None, vec![]);
        s.run_as_non_root = true;
        let e = resolve_ids(&s, &acc()).unwrap_err();
        assert!(
            e.starts_with("run_as_non_root is set but no user is set"),
            "{e}"
        );
        s.user = Some(name("root"));
        let e = resolve_ids(&s, &acc()).unwrap_err();
        assert!(e.contains("user root is root (uid 0)"), "{e}");
        s.user = Some(name("nobody"));
        assert_eq!(resolve_ids(&s, &acc()).map(|r| r.0), Ok(65534));
    }

    #[test]
    fn needs_accounts_only_for_users_and_names() {
        assert!(!needs_accounts(&spec(
            None,
            Some(IdRef::Id(5)),
            vec![IdRef::Id(6)]
        )));
        assert!(needs_accounts(&spec(Some(IdRef::Id(5)), None, vec![])));
        assert!(needs_accounts(&spec(None, None, vec![name("video")])));
    }

    const KERNEL: u64 = (1 << 41) - 1;

    fn caps(add: &[&str], drop: &[&str]) -> CapChanges {
        let set = |names: &[&str]| {
            names
                .iter()
                .fold(CapSet::EMPTY, |s, n| s.union(CapSet::parse(n).unwrap()))
        };
        CapChanges {
            add: set(add),
            drop: set(drop),
        }
    }

    #[test]
    fn root_gets_the_default_set_everywhere_but_ambient() {
        let p = cap_plan(CapChanges::default(), false, 0, KERNEL);
        assert_eq!(p.bounding, 0xa804_25fb);
        assert_eq!(
            (p.permitted, p.effective, p.inheritable, p.ambient),
            (0xa804_25fb, 0xa804_25fb, 0xa804_25fb, 0)
        );
    }

    #[test]
    fn drop_all_is_empty_and_add_after_drop_keeps_the_added() {
        let p = cap_plan(caps(&[], &["ALL"]), false, 0, KERNEL);
        assert_eq!(p, CapPlan::default());
        let p = cap_plan(caps(&["NET_ADMIN"], &["ALL"]), false, 0, KERNEL);
        assert_eq!(p.bounding, 1 << 12);
        assert_eq!(p.effective, 1 << 12);
    }

    #[test]
    fn non_root_gets_only_explicitly_added_caps_as_ambient() {
        let p = cap_plan(CapChanges::default(), false, 1000, KERNEL);
        assert_eq!(p.bounding, 0xa804_25fb);
        assert_eq!((p.permitted, p.effective, p.ambient), (0, 0, 0));
        // NET_BIND_SERVICE is in the default set, but added explicitly it is raised.
        let p = cap_plan(caps(&["NET_BIND_SERVICE"], &[]), false, 1000, KERNEL);
        assert_eq!(p.bounding, 0xa804_25fb);
        assert_eq!(
            (p.permitted, p.effective, p.inheritable, p.ambient),
            (1 << 10, 1 << 10, 1 << 10, 1 << 10)
        );
        // Added then dropped by name: dropping wins only through the set (drop, then add).
        let p = cap_plan(caps(&["NET_RAW"], &["ALL"]), false, 1000, KERNEL);
        assert_eq!((p.bounding, p.ambient), (1 << 13, 1 << 13));
    }

    #[test]
    fn privileged_is_every_capability_the_kernel_has() {
        let p = cap_plan(caps(&[], &["ALL"]), true, 0, KERNEL);
        assert_eq!(p.bounding, KERNEL);
        assert_eq!(p.effective, KERNEL);
        // An older kernel (no PERFMON, BPF, CHECKPOINT_RESTORE): limited to what it knows.
        let old = (1 << 38) - 1;
        assert_eq!(cap_plan(CapChanges::default(), true, 0, old).bounding, old);
        // Non-root in a privileged pod: the bounding set is full, nothing raised unless added.
        let p = cap_plan(CapChanges::default(), true, 1000, KERNEL);
        assert_eq!((p.bounding, p.effective), (KERNEL, 0));
    }

    #[test]
    fn credentials_combine_ids_and_caps() {
        let mut s = spec(Some(name("app")), None, vec![]);
        s.capabilities = caps(&["NET_BIND_SERVICE"], &[]);
        let c = credentials(&s, false, &acc(), KERNEL).unwrap();
        assert_eq!((c.uid, c.gid, c.groups.clone()), (1000, 1001, vec![1001]));
        assert_eq!(c.caps.ambient, 1 << 10);
    }
}
