//! A pod's security context as the user writes it (feature `alloc`): who a process runs as, its
//! capabilities, its seccomp profile, and the pod-level opt-outs (`privileged`, `host_pid`,
//! `host_ipc`). The worker turns these into syscalls; the master validates them and enforces a
//! namespace's [`PodSecurity`] level.
//!
//! Encoding: postcard (the wire, the worker's files) uses the plain derived shapes; JSON (the
//! master's store, `-o json`) writes a user as a number or a name and a capability set as a list
//! of names, so the store stays readable and a user id stored by an earlier build (`"user":
//! 1000`) still reads.

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;
use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::ser::{SerializeSeq, Serializer};
use serde::{Deserialize, Serialize};

/// A user or a group: a number, or a name looked up in the pod root's `/etc/passwd` or
/// `/etc/group` when the process starts.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum IdRef {
    /// A numeric id (below 2^32 − 1, which the kernel reserves as "no id").
    Id(u32),
    /// A name.
    Name(String),
}

impl IdRef {
    /// The number, if it is one.
    pub fn id(&self) -> Option<u32> {
        match self {
            IdRef::Id(n) => Some(*n),
            IdRef::Name(_) => None,
        }
    }
}

impl fmt::Display for IdRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IdRef::Id(n) => write!(f, "{n}"),
            IdRef::Name(s) => f.write_str(s),
        }
    }
}

/// The postcard shape of [`IdRef`].
#[derive(Serialize, Deserialize)]
enum IdRefBin {
    Id(u32),
    Name(String),
}

impl Serialize for IdRef {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            return match self {
                IdRef::Id(n) => s.serialize_u32(*n),
                IdRef::Name(n) => s.serialize_str(n),
            };
        }
        match self {
            IdRef::Id(n) => IdRefBin::Id(*n),
            IdRef::Name(n) => IdRefBin::Name(n.clone()),
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for IdRef {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        if !d.is_human_readable() {
            return Ok(match IdRefBin::deserialize(d)? {
                IdRefBin::Id(n) => IdRef::Id(n),
                IdRefBin::Name(n) => IdRef::Name(n),
            });
        }
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = IdRef;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a user or group id (a number below 4294967295) or a name")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<IdRef, E> {
                u32::try_from(v)
                    .ok()
                    .filter(|n| *n != u32::MAX)
                    .map(IdRef::Id)
                    .ok_or_else(|| {
                        E::custom(alloc::format!(
                            "id {v} is out of range: ids go from 0 to 4294967294"
                        ))
                    })
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<IdRef, E> {
                u64::try_from(v)
                    .map_err(|_| {
                        E::custom(alloc::format!(
                            "id {v} is negative: ids go from 0 to 4294967294"
                        ))
                    })
                    .and_then(|v| self.visit_u64(v))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<IdRef, E> {
                Ok(IdRef::Name(v.into()))
            }
        }
        d.deserialize_any(V)
    }
}

/// Linux capability names by number (`CAP_` dropped), as in `linux/capability.h`.
pub const CAP_NAMES: [&str; 41] = [
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "KILL",
    "SETGID",
    "SETUID",
    "SETPCAP",
    "LINUX_IMMUTABLE",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_ADMIN",
    "NET_RAW",
    "IPC_LOCK",
    "IPC_OWNER",
    "SYS_MODULE",
    "SYS_RAWIO",
    "SYS_CHROOT",
    "SYS_PTRACE",
    "SYS_PACCT",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_NICE",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "MKNOD",
    "LEASE",
    "AUDIT_WRITE",
    "AUDIT_CONTROL",
    "SETFCAP",
    "MAC_OVERRIDE",
    "MAC_ADMIN",
    "SYSLOG",
    "WAKE_ALARM",
    "BLOCK_SUSPEND",
    "AUDIT_READ",
    "PERFMON",
    "BPF",
    "CHECKPOINT_RESTORE",
];

/// A set of capabilities, bit `n` = capability number `n` ([`CAP_NAMES`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct CapSet(pub u64);

impl CapSet {
    /// No capability.
    pub const EMPTY: CapSet = CapSet(0);
    /// Every capability this table knows.
    pub const ALL: CapSet = CapSet((1 << CAP_NAMES.len()) - 1);
    /// The default set of a container (Docker's and containerd's 14): CHOWN, DAC_OVERRIDE,
    /// FSETID, FOWNER, MKNOD, NET_RAW, SETGID, SETUID, SETFCAP, SETPCAP, NET_BIND_SERVICE,
    /// SYS_CHROOT, KILL, AUDIT_WRITE. `CapBnd` of a default pod's process: `00000000a80425fb`.
    pub const DEFAULT: CapSet = CapSet(0xa804_25fb);

    /// The capability named `name` (`NET_ADMIN`, `cap_net_admin`, any case), or `ALL`.
    pub fn parse(name: &str) -> Option<CapSet> {
        let upper = name.to_ascii_uppercase();
        let bare = upper.strip_prefix("CAP_").unwrap_or(&upper);
        if bare == "ALL" {
            return Some(CapSet::ALL);
        }
        CAP_NAMES
            .iter()
            .position(|n| *n == bare)
            .map(|i| CapSet(1 << i))
    }

    /// Whether `self` has every capability of `other`.
    pub fn contains(self, other: CapSet) -> bool {
        self.0 & other.0 == other.0
    }

    /// Both sets' capabilities.
    pub fn union(self, other: CapSet) -> CapSet {
        CapSet(self.0 | other.0)
    }

    /// `self` without `other`'s capabilities.
    pub fn minus(self, other: CapSet) -> CapSet {
        CapSet(self.0 & !other.0)
    }

    /// Whether the set is empty.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The names of the capabilities in the set, in number order (`ALL` for the full set).
    pub fn names(self) -> impl Iterator<Item = &'static str> {
        let all = self == CapSet::ALL;
        let bits = self.0;
        let each = CAP_NAMES
            .iter()
            .enumerate()
            .filter(move |(i, _)| !all && bits & (1 << i) != 0)
            .map(|(_, n)| *n);
        all.then_some("ALL").into_iter().chain(each)
    }
}

impl Serialize for CapSet {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if !s.is_human_readable() {
            return s.serialize_u64(self.0);
        }
        let names: Vec<&str> = self.names().collect();
        let mut seq = s.serialize_seq(Some(names.len()))?;
        for n in names {
            seq.serialize_element(n)?;
        }
        seq.end()
    }
}

impl<'de> Deserialize<'de> for CapSet {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        if !d.is_human_readable() {
            return u64::deserialize(d).map(CapSet);
        }
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = CapSet;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a list of capability names")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<CapSet, A::Error> {
                let mut set = CapSet::EMPTY;
                while let Some(name) = seq.next_element::<String>()? {
                    let cap = CapSet::parse(&name).ok_or_else(|| {
                        de::Error::custom(alloc::format!(
                            "unknown capability {name:?}: use a name of capabilities(7) without CAP_ (e.g. NET_ADMIN), or ALL"
                        ))
                    })?;
                    set = set.union(cap);
                }
                Ok(set)
            }
        }
        d.deserialize_seq(V)
    }
}

/// Capabilities added to and dropped from the default set, per process.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Default)]
#[serde(deny_unknown_fields)]
pub struct CapChanges {
    /// Added to the default set.
    #[serde(default)]
    pub add: CapSet,
    /// Dropped (after adding; `ALL` drops every capability not added).
    #[serde(default)]
    pub drop: CapSet,
}

impl CapChanges {
    /// The bounding set these changes give: the default set minus `drop`, plus `add`. Dropping
    /// `ALL` and adding some keeps exactly those (Kubernetes' rule).
    pub fn effective(self) -> CapSet {
        CapSet::DEFAULT.minus(self.drop).union(self.add)
    }
}

/// Which seccomp filter a process gets.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SeccompProfile {
    /// The runtime's default filter (containerd's RuntimeDefault, as a deny list).
    #[default]
    RuntimeDefault,
    /// No filter.
    Unconfined,
}

/// How strictly a namespace limits its pods' security opt-outs (Kubernetes' Pod Security levels).
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PodSecurity {
    /// No limit (the default, as Kubernetes without Pod Security labels).
    #[default]
    Privileged,
    /// Refuses `privileged`, `host_pid`, `host_ipc`, the host's network, capabilities added
    /// beyond the default set and `seccomp = "unconfined"`.
    Baseline,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_set_is_the_fourteen() {
        let names: Vec<_> = CapSet::DEFAULT.names().collect();
        assert_eq!(names.len(), 14, "{names:?}");
        for n in [
            "CHOWN",
            "DAC_OVERRIDE",
            "FSETID",
            "FOWNER",
            "MKNOD",
            "NET_RAW",
            "SETGID",
            "SETUID",
            "SETFCAP",
            "SETPCAP",
            "NET_BIND_SERVICE",
            "SYS_CHROOT",
            "KILL",
            "AUDIT_WRITE",
        ] {
            assert!(CapSet::DEFAULT.contains(CapSet::parse(n).unwrap()), "{n}");
        }
    }

    #[test]
    fn changes_drop_then_add() {
        let net_admin = CapSet::parse("cap_net_admin").unwrap();
        let c = CapChanges {
            add: net_admin,
            drop: CapSet::ALL,
        };
        assert_eq!(c.effective(), net_admin);
        assert_eq!(CapChanges::default().effective(), CapSet::DEFAULT);
        assert_eq!(CapSet::ALL.names().collect::<Vec<_>>(), ["ALL"]);
        assert!(CapSet::parse("CAP_NOPE").is_none());
    }
}
