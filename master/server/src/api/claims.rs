//! What a node may claim about itself, and who writes which part of a node's and any object's
//! metadata (Kubernetes' NodeRestriction, in small). Pure: no I/O, unit-tested.
//!
//! A node's labels have two tiers:
//! - **The node's own**: what its agent reports (`bramble-worker --labels zone=b` becomes
//!   `node.bramble.io/zone=b`, under the reserved prefix [`NODE_LABEL_PREFIX`]) and the facts the
//!   master derives from its registration ([`LABEL_ARCH`], [`LABEL_BOARD`], [`LABEL_HOSTNAME`]).
//!   Each registration replaces this tier whole; admins cannot set it.
//! - **The admin's**: every other label (`bramble label node NAME zone=secure`, a `[[node]]`
//!   manifest). A registration never adds, changes or removes one, and never touches taints,
//!   `unschedulable` or anything else of the spec.
//!
//! [`merge_applied_node`] is what applying a `[[node]]` manifest does: it merges, never wipes.
//! [`apply_patch`] is `bramble label|annotate|cordon|uncordon` on any object.

use bramble_wire::msg::MetaPatch;
use bramble_wire::objects::{Labels, Meta, Node, NodeInfo, Object, Taint};

use crate::controllers::TAINT_NOT_READY;
use crate::sched::snapshot::{LABEL_ARCH, LABEL_HOSTNAME};
use crate::validate;

/// The prefix of the labels a node reports about itself.
pub const NODE_LABEL_PREFIX: &str = "node.bramble.io/";
/// The board profile the node reported (`pi4b`), when it reported one.
pub const LABEL_BOARD: &str = "bramble.io/board";
/// The prefix of the taints only the master sets (`node.bramble.io/not-ready`).
pub const SYSTEM_TAINT_PREFIX: &str = "node.bramble.io/";

/// Whether `key` belongs to the node's own tier (its reports and the derived facts).
pub fn node_owned(key: &str) -> bool {
    key.starts_with(NODE_LABEL_PREFIX) || [LABEL_ARCH, LABEL_BOARD, LABEL_HOSTNAME].contains(&key)
}

/// The key a label reported by a node is filed under: `zone` → `node.bramble.io/zone`; a key
/// already under the prefix stays. A key with another prefix (`example.com/zone`), or one too
/// long once prefixed, is refused with the reason.
pub fn node_label_key(key: &str) -> Result<String, String> {
    let full = if key.starts_with(NODE_LABEL_PREFIX) {
        key.to_string()
    } else if key.contains('/') {
        return Err(format!(
            "node label {key:?}: a node reports labels under {NODE_LABEL_PREFIX} only (write it without a prefix); an admin sets other labels with `bramble label node NAME {key}=VALUE`"
        ));
    } else {
        format!("{NODE_LABEL_PREFIX}{key}")
    };
    validate::check_label("node label", &full, "").map_err(|e| {
        format!(
            "{e} (the key becomes {full:?}: at most {} characters before the prefix)",
            validate::MAX_NAME - NODE_LABEL_PREFIX.len()
        )
    })?;
    Ok(full)
}

/// The node's own tier from a registration: the derived facts and its reported labels under
/// the prefix. Labels it may not claim are left out; their reasons come second.
pub fn claimed_labels(name: &str, info: &NodeInfo) -> (Labels, Vec<String>) {
    let mut out = Labels::new();
    let mut refused = Vec::new();
    for l in &info.labels {
        let (k, v) = (l.key.as_str(), l.value.as_str());
        match node_label_key(k) {
            Ok(full) => match validate::check_label("node label", &full, v) {
                Ok(()) => {
                    out.insert(full, v.to_string());
                }
                Err(e) => refused.push(e.to_string()),
            },
            Err(e) => refused.push(e),
        }
    }
    // The derived facts last: a reported `node.bramble.io/…` never stands in for them.
    out.insert(LABEL_ARCH.into(), info.arch.as_str().into());
    out.insert(LABEL_HOSTNAME.into(), name.into());
    let board = info.board.as_str();
    if !board.is_empty() && validate::check_label("board", LABEL_BOARD, board).is_ok() {
        out.insert(LABEL_BOARD.into(), board.into());
    }
    (out, refused)
}

/// A node's labels after a registration: the admin's tier of `stored` as it is, the node's own
/// tier replaced by `claimed` (so a label dropped from `--labels` goes away).
///
/// Upgrade from masters that stored a node's `--labels` as they came (`zone=secure`): a label
/// equal to one the node reported last time (`previous`), with no `node.bramble.io/` twin yet
/// (the node never registered under this rule), was the node's claim, not an admin's: it moves
/// to the node's tier. Once registered under this rule, an admin label equal to the node's report
/// stays.
pub fn registered_labels(stored: &Labels, previous: Option<&NodeInfo>, claimed: &Labels) -> Labels {
    let legacy_claim = |k: &str, v: &str| {
        previous.is_some_and(|i| {
            i.labels
                .iter()
                .any(|l| l.key.as_str() == k && l.value.as_str() == v)
        }) && !stored.contains_key(&format!("{NODE_LABEL_PREFIX}{k}"))
    };
    let mut out: Labels = stored
        .iter()
        .filter(|(k, v)| !node_owned(k) && !legacy_claim(k, v))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    out.extend(
        claimed
            .iter()
            .filter(|(k, _)| node_owned(k))
            .map(|(k, v)| (k.clone(), v.clone())),
    );
    out
}

/// Whether a taint is the master's own (kept whatever a manifest says).
pub fn system_taint(t: &Taint) -> bool {
    t.key.starts_with(SYSTEM_TAINT_PREFIX) || t.key == TAINT_NOT_READY
}

/// What applying a `[[node]]` manifest writes over the stored node: it merges, never wipes.
/// - labels: the manifest's admin labels are set, every other label stays (the node's own tier,
///   the derived facts, labels set with `bramble label`); the node's own tier cannot be set this
///   way (such keys in the manifest are ignored: `get -o toml | apply` round-trips);
/// - annotations: the manifest's are set, the others stay;
/// - taints: the manifest's list replaces the admin's taints; the master's own
///   (`node.bramble.io/…`) stay;
/// - `unschedulable`: as written;
/// - identity, the pod subnet and the status stay the stored ones.
pub fn merge_applied_node(stored: &Node, applied: Node) -> Node {
    let mut labels = stored.meta.labels.clone();
    for (k, v) in applied.meta.labels {
        if !node_owned(&k) {
            labels.insert(k, v);
        }
    }
    let mut annotations = stored.meta.annotations.clone();
    annotations.extend(applied.meta.annotations);
    let mut taints: Vec<Taint> = applied
        .spec
        .taints
        .into_iter()
        .filter(|t| !system_taint(t))
        .collect();
    taints.extend(
        stored
            .spec
            .taints
            .iter()
            .filter(|t| system_taint(t))
            .cloned(),
    );
    let mut out = stored.clone();
    out.meta = Meta {
        labels,
        annotations,
        ..stored.meta.clone()
    };
    out.spec.taints = taints;
    out.spec.unschedulable = applied.spec.unschedulable;
    out
}

/// Parses `k=v` (set) and `k-` (remove) arguments of `bramble label|annotate`.
pub fn parse_changes(args: &[String]) -> Result<Vec<(String, Option<String>)>, String> {
    let mut out = Vec::new();
    for a in args {
        if let Some((k, v)) = a.split_once('=') {
            if k.is_empty() {
                return Err(format!("{a:?}: the key is empty; write KEY=VALUE"));
            }
            out.push((k.to_string(), Some(v.to_string())));
        } else if let Some(k) = a.strip_suffix('-')
            && !k.is_empty()
        {
            out.push((k.to_string(), None));
        } else {
            return Err(format!("{a:?}: write KEY=VALUE to set, KEY- to remove"));
        }
    }
    if out.is_empty() {
        return Err("give at least one KEY=VALUE or KEY-".into());
    }
    Ok(out)
}

/// Applies a [`MetaPatch`] to `target`: labels and annotations set or removed, a node cordoned or
/// uncordoned. Returns whether anything changed. Refuses (with the fix) a changed value
/// without `overwrite` (kubectl's rule), a label of a node's own tier, `unschedulable` on
/// another kind, and labels or annotations that would not validate.
pub fn apply_patch(target: &mut Object, patch: &MetaPatch) -> Result<bool, String> {
    let kind = target.kind();
    let name = target.meta().name.clone();
    let what = format!("{} {name:?}", kind.as_str());
    // Changed on a copy: a refused patch leaves the object as it was.
    let mut next = target.clone();
    let obj = &mut next;
    for (tier, changes) in [("label", &patch.labels), ("annotation", &patch.annotations)] {
        for (k, v) in changes {
            if tier == "label" && kind == bramble_wire::objects::Kind::Node && node_owned(k) {
                return Err(format!(
                    "{what}: label {k:?} is what the node reports about itself (set with `bramble-worker --labels`, or derived from its registration); set an admin label without the {NODE_LABEL_PREFIX} prefix instead"
                ));
            }
            let meta = obj.meta_mut();
            let map = if tier == "label" {
                &mut meta.labels
            } else {
                &mut meta.annotations
            };
            match v {
                Some(v) => {
                    if let Some(old) = map.get(k)
                        && old != v
                        && !patch.overwrite
                    {
                        return Err(format!(
                            "{what} already has {tier} {k}={old}: add --overwrite to change it to {v:?}"
                        ));
                    }
                    if tier == "label" {
                        validate::check_label(&format!("{what}: labels"), k, v)
                            .map_err(|e| e.to_string())?;
                    }
                    map.insert(k.clone(), v.clone());
                }
                None => {
                    map.remove(k);
                }
            }
        }
    }
    let meta = obj.meta();
    if meta.labels.len() > validate::MAX_LABELS {
        return Err(format!(
            "{what}: at most {} labels; remove some with `KEY-`",
            validate::MAX_LABELS
        ));
    }
    validate::check_annotations(&format!("{what}: annotations"), &meta.annotations)
        .map_err(|e| e.to_string())?;
    if let Some(u) = patch.unschedulable {
        match obj {
            Object::Node(n) => n.spec.unschedulable = u,
            _ => {
                return Err(format!(
                    "{what}: only nodes can be cordoned: `bramble cordon NODE`"
                ));
            }
        }
    }
    let changed = next != *target;
    *target = next;
    Ok(changed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bramble_wire::objects::{Kind, NodeSpec, TaintEffect};
    use bramble_wire::{Arch, Label};

    fn info(labels: &[(&str, &str)]) -> NodeInfo {
        let mut i = base_info();
        for (k, v) in labels {
            let _ = i.labels.push(Label {
                key: (*k).try_into().unwrap(),
                value: (*v).try_into().unwrap(),
            });
        }
        i
    }

    fn base_info() -> NodeInfo {
        NodeInfo {
            name: "pi1".try_into().unwrap(),
            arch: Arch::Aarch64,
            os: Default::default(),
            kernel: Default::default(),
            board: "pi4b".try_into().unwrap(),
            cpus: 4,
            memory_bytes: 1 << 30,
            pids: 1000,
            cgroup: bramble_wire::CgroupVersion::V2,
            controllers: Default::default(),
            agent_version: Default::default(),
            labels: Default::default(),
        }
    }

    fn labels(kv: &[(&str, &str)]) -> Labels {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn a_node_claims_only_its_own_tier() {
        let (l, refused) = claimed_labels(
            "pi1",
            &info(&[
                ("zone", "secure"),
                ("node.bramble.io/disk", "ssd"),
                ("example.com/zone", "x"),
                ("bramble.io/arch", "x86_64"),
            ]),
        );
        assert_eq!(
            l,
            labels(&[
                ("bramble.io/arch", "aarch64"),
                ("bramble.io/board", "pi4b"),
                ("bramble.io/hostname", "pi1"),
                ("node.bramble.io/disk", "ssd"),
                ("node.bramble.io/zone", "secure"),
            ])
        );
        assert!(!l.contains_key("zone"));
        assert_eq!(refused.len(), 2, "{refused:?}");
        assert!(refused[0].contains("example.com/zone") && refused[0].contains("bramble label"));
        // A key too long once prefixed says so.
        let long = "k".repeat(60);
        assert!(
            node_label_key(&long)
                .unwrap_err()
                .contains("before the prefix")
        );
    }

    #[test]
    fn registration_replaces_the_nodes_tier_and_keeps_the_admins() {
        let stored = labels(&[
            ("zone", "secure"),
            ("node.bramble.io/old", "1"),
            ("bramble.io/arch", "aarch64"),
        ]);
        let (claimed, _) = claimed_labels("pi1", &info(&[("zone", "evil")]));
        let l = registered_labels(&stored, None, &claimed);
        assert_eq!(l.get("zone").map(String::as_str), Some("secure"));
        assert_eq!(
            l.get("node.bramble.io/zone").map(String::as_str),
            Some("evil")
        );
        assert!(!l.contains_key("node.bramble.io/old"));
        // Only the node's tier of `claimed` counts (a forged admin key is ignored).
        let l = registered_labels(&stored, None, &labels(&[("zone", "evil")]));
        assert_eq!(l.get("zone").map(String::as_str), Some("secure"));
    }

    #[test]
    fn labels_an_older_master_stored_raw_move_to_the_nodes_tier() {
        // An older master stored `--labels zone=secure` as `zone=secure`.
        let report = info(&[("zone", "secure")]);
        let stored = labels(&[
            ("zone", "secure"),
            ("team", "a"),
            ("bramble.io/arch", "aarch64"),
        ]);
        let (claimed, _) = claimed_labels("pi1", &report);
        let l = registered_labels(&stored, Some(&report), &claimed);
        assert_eq!(l.get("zone"), None);
        assert_eq!(
            l.get("node.bramble.io/zone").map(String::as_str),
            Some("secure")
        );
        assert_eq!(l.get("team").map(String::as_str), Some("a"));
        // Registered under this rule: an admin's equal label stays.
        let mut now = l.clone();
        now.insert("zone".into(), "secure".into());
        let again = registered_labels(&now, Some(&report), &claimed);
        assert_eq!(again.get("zone").map(String::as_str), Some("secure"));
    }

    fn node(l: &[(&str, &str)], taints: &[&str], unschedulable: bool) -> Node {
        Node {
            meta: Meta {
                name: "pi1".into(),
                labels: labels(l),
                uid: "u1".into(),
                revision: 7,
                ..Default::default()
            },
            spec: NodeSpec {
                taints: taints
                    .iter()
                    .map(|k| Taint {
                        key: (*k).into(),
                        value: String::new(),
                        effect: TaintEffect::NoSchedule,
                    })
                    .collect(),
                unschedulable,
                pod_cidr: "10.42.0.0/24".into(),
            },
            ..Default::default()
        }
    }

    #[test]
    fn applying_a_node_manifest_merges() {
        let stored = node(
            &[
                ("bramble.io/arch", "aarch64"),
                ("team", "a"),
                ("node.bramble.io/zone", "b"),
            ],
            &[TAINT_NOT_READY, "old"],
            false,
        );
        let mut applied = node(
            &[("rack", "2"), ("bramble.io/arch", "x86_64")],
            &["gpu"],
            true,
        );
        applied.spec.pod_cidr.clear();
        applied.meta.uid.clear();
        let m = merge_applied_node(&stored, applied);
        assert_eq!(
            m.meta.labels,
            labels(&[
                ("bramble.io/arch", "aarch64"),
                ("node.bramble.io/zone", "b"),
                ("rack", "2"),
                ("team", "a"),
            ])
        );
        let keys: Vec<&str> = m.spec.taints.iter().map(|t| t.key.as_str()).collect();
        assert_eq!(keys, ["gpu", TAINT_NOT_READY]);
        assert!(m.spec.unschedulable);
        assert_eq!(m.spec.pod_cidr, "10.42.0.0/24");
        assert_eq!((m.meta.uid.as_str(), m.meta.revision), ("u1", 7));
    }

    #[test]
    fn patches_follow_kubectls_overwrite_rule() {
        let mut o = Object::Node(node(
            &[("zone", "a"), ("bramble.io/arch", "aarch64")],
            &[],
            false,
        ));
        let p = |labels: &[&str], overwrite| MetaPatch {
            labels: parse_changes(&labels.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .unwrap(),
            overwrite,
            ..Default::default()
        };
        // Same value: no change, no --overwrite needed.
        assert_eq!(apply_patch(&mut o, &p(&["zone=a"], false)), Ok(false));
        let e = apply_patch(&mut o, &p(&["zone=b"], false)).unwrap_err();
        assert!(e.contains("--overwrite") && e.contains("zone=a"), "{e}");
        assert_eq!(
            apply_patch(&mut o, &p(&["zone=b", "new=1"], true)),
            Ok(true)
        );
        assert_eq!(o.meta().labels.get("zone").map(String::as_str), Some("b"));
        assert_eq!(apply_patch(&mut o, &p(&["new-", "gone-"], false)), Ok(true));
        assert!(!o.meta().labels.contains_key("new"));
        // The node's own tier is not the admin's to set.
        let e = apply_patch(&mut o, &p(&["node.bramble.io/zone=x"], true)).unwrap_err();
        assert!(e.contains("reports about itself"), "{e}");
        assert!(apply_patch(&mut o, &p(&["bramble.io/arch-"], true)).is_err());
        assert!(apply_patch(&mut o, &p(&["bad key=1"], true)).is_err());
        // Annotations: free text, bounded.
        let a = MetaPatch {
            annotations: vec![("note".into(), Some("rebooted 3 times\nby ops".into()))],
            ..Default::default()
        };
        assert_eq!(apply_patch(&mut o, &a), Ok(true));
        let big = MetaPatch {
            annotations: vec![("blob".into(), Some("x".repeat(5000)))],
            ..Default::default()
        };
        assert!(
            apply_patch(&mut o, &big)
                .unwrap_err()
                .contains("config map")
        );
        // Cordon: nodes only.
        let c = MetaPatch {
            unschedulable: Some(true),
            ..Default::default()
        };
        assert_eq!(apply_patch(&mut o, &c), Ok(true));
        assert_eq!(apply_patch(&mut o, &c), Ok(false));
        let mut pod = Object::Pod(Default::default());
        assert!(
            apply_patch(&mut pod, &c)
                .unwrap_err()
                .contains("only nodes")
        );
        assert_eq!(pod.kind(), Kind::Pod);
        let a: Vec<String> = ["zone=secure", "old-", "empty="].map(String::from).to_vec();
        assert_eq!(
            parse_changes(&a).unwrap(),
            vec![
                ("zone".into(), Some("secure".into())),
                ("old".into(), None),
                ("empty".into(), Some(String::new())),
            ]
        );
        assert!(parse_changes(&["k".into()]).is_err());
        assert!(parse_changes(&["=v".into()]).is_err());
        assert!(parse_changes(&["-".into()]).is_err());
        assert!(parse_changes(&[]).is_err());
    }
}
