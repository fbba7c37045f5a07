//! The pure part of a node's status report: whether a [`PodReport`] may change the stored pod,
//! what status is written, and which events that change records; and which of a node's
//! reported conflicts (ports, volumes) record events. No store, no cache, no I/O:
//! [`super::node`] does those around it (and `master/fuzz`'s `status` target fuzzes it).

use bramble_wire::msg::{Conflict, ConflictKind};
use bramble_wire::objects::{Pod, PodStatus, ProcessState};
use bramble_wire::{ExitReason, PodPhase};

/// What to do with one pod's reported status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The pod is bound to another node (or none): only its own node reports its status.
    BoundElsewhere,
    /// A report about an earlier pod of the same name (another UID).
    Stale,
    /// Same meaning as the stored status (timestamps alone do not count): no write.
    Unchanged,
    /// Write this status.
    Write(PodStatus),
}

/// Judges `reported` (from node `node`, whose pod subnet is `pod_cidr`) against the stored `pod`
/// whose report names `uid`. An address outside the node's pod subnet (or on a pod without an
/// address of its own) is dropped, never written: it would steer every node's service traffic.
/// Processes reported twice under one name keep their first entry (a second would make every
/// later report look like a restart of the first). The second value says what was dropped.
pub fn judge(
    pod: &Pod,
    node: &str,
    pod_cidr: &str,
    uid: &str,
    mut reported: PodStatus,
) -> (Verdict, Vec<String>) {
    if pod.spec.node_name.as_deref() != Some(node) {
        return (Verdict::BoundElsewhere, Vec::new());
    }
    if pod.meta.uid != uid {
        return (Verdict::Stale, Vec::new());
    }
    let mut dropped = Vec::new();
    if !reported.ip.is_empty()
        && let Err(why) =
            crate::controllers::podnet::check_pod_ip(pod_cidr, pod.spec.network, &reported.ip)
    {
        dropped.push(format!("address {}: {why}", reported.ip));
        reported.ip.clear();
    }
    let mut seen = std::collections::HashSet::new();
    let mut twice = Vec::new();
    reported.processes.retain(|p| {
        let first = seen.insert(p.name.clone());
        if !first {
            twice.push(p.name.clone());
        }
        first
    });
    if !twice.is_empty() {
        dropped.push(format!(
            "processes reported more than once (the first entry is kept): {}",
            twice.join(", ")
        ));
    }
    if pod.status.same_meaning(&reported) {
        return (Verdict::Unchanged, dropped);
    }
    (Verdict::Write(reported), dropped)
}

/// The events a status change from `old` to `new` records, as (reason, message): started,
/// completed, failed (FailedCreate when no process ever started), OOMKilled, restarted.
pub fn status_events(old: &PodStatus, new: &PodStatus) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    if new.phase != old.phase {
        let (reason, msg) = match new.phase {
            PodPhase::Running => ("Started", "pod is running".to_string()),
            PodPhase::Succeeded => ("Completed", "all processes exited successfully".to_string()),
            // No process ever started: the pod's setup failed (Kubernetes' FailedCreate).
            PodPhase::Failed
                if new
                    .processes
                    .iter()
                    .all(|p| p.restarts == 0 && matches!(p.state, ProcessState::Waiting)) =>
            {
                ("FailedCreate", new.message.clone())
            }
            PodPhase::Failed => ("Failed", new.message.clone()),
            _ => ("", String::new()),
        };
        if !reason.is_empty() {
            out.push((reason, msg));
        }
    }
    for p in &new.processes {
        let before = old.processes.iter().find(|o| o.name == p.name);
        if before.map(|o| o.restarts) != Some(p.restarts)
            || before.and_then(|o| o.last_exit) != p.last_exit
        {
            match p.last_exit {
                Some(ExitReason::OOMKilled) => out.push((
                    "OOMKilled",
                    format!(
                        "process {} was killed by the OOM killer at its memory limit",
                        p.name
                    ),
                )),
                Some(r) if p.restarts > 0 && before.map(|o| o.restarts) != Some(p.restarts) => out
                    .push((
                        "Restarted",
                        format!(
                            "process {} restarted ({} times; last exit {r:?})",
                            p.name, p.restarts
                        ),
                    )),
                _ => {}
            }
        }
    }
    out
}

/// Most conflicts of one report that are judged (the rest are dropped, and said so).
pub const MAX_CONFLICTS: usize = 64;
/// The longest conflict message recorded (cut at a character boundary).
pub const MAX_CONFLICT_MESSAGE: usize = 512;

/// An event a node's conflict report records: about the object (`kind`) and about the node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConflictEvent {
    /// Kind of the object it is about (service or pod).
    pub kind: bramble_wire::objects::Kind,
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
    /// Its UID.
    pub uid: String,
    /// `PortConflict` or `HostPortConflict`.
    pub reason: &'static str,
    /// What happened on which node, and the fix.
    pub message: String,
}

/// The event reason of a conflict kind.
pub fn conflict_reason(kind: ConflictKind) -> &'static str {
    match kind {
        ConflictKind::ServicePort => "PortConflict",
        ConflictKind::HostPort => "HostPortConflict",
    }
}

/// Judges node `node`'s conflict set `now` against the set it reported before: which conflicts
/// are new (each records one event about its object; a conflict still present records nothing
/// again), and what was dropped. `uid_of` gives the UID of the object a conflict names if the
/// node may speak of it — a service that exists, a pod bound to this node with the reported
/// UID — and `None` otherwise (dropped: a node cannot write events about other nodes' pods).
/// Returns the events, the set to remember (what was judged, deduplicated), and what was dropped.
pub fn judge_conflicts(
    node: &str,
    before: &[Conflict],
    mut now: Vec<Conflict>,
    uid_of: impl Fn(&Conflict) -> Option<String>,
) -> (Vec<ConflictEvent>, Vec<Conflict>, Vec<String>) {
    let mut dropped = Vec::new();
    if now.len() > MAX_CONFLICTS {
        dropped.push(format!(
            "{} conflicts past the first {MAX_CONFLICTS}",
            now.len() - MAX_CONFLICTS
        ));
        now.truncate(MAX_CONFLICTS);
    }
    for c in &mut now {
        if c.message.len() > MAX_CONFLICT_MESSAGE {
            let mut end = MAX_CONFLICT_MESSAGE;
            while !c.message.is_char_boundary(end) {
                end -= 1;
            }
            c.message.truncate(end);
        }
    }
    now.sort();
    now.dedup();
    let mut events = Vec::new();
    let mut kept = Vec::with_capacity(now.len());
    for c in now {
        let Some(uid) = uid_of(&c) else {
            dropped.push(format!(
                "{:?} conflict about {}/{}: no such object for this node",
                c.kind, c.namespace, c.name
            ));
            continue;
        };
        if !before.contains(&c) {
            let kind = match c.kind {
                ConflictKind::ServicePort => bramble_wire::objects::Kind::Service,
                ConflictKind::HostPort => bramble_wire::objects::Kind::Pod,
            };
            events.push(ConflictEvent {
                kind,
                namespace: c.namespace.clone(),
                name: c.name.clone(),
                uid,
                reason: conflict_reason(c.kind),
                message: format!("node {node}: {}", c.message),
            });
        }
        kept.push(c);
    }
    (events, kept, dropped)
}

#[cfg(test)]
mod tests {
    use bramble_wire::objects::{NetworkMode, ProcessStatus};

    use super::*;

    fn pod() -> Pod {
        let mut p = Pod::default();
        p.meta.uid = "u1".into();
        p.spec.node_name = Some("pi1".into());
        p.spec.network = NetworkMode::Isolated;
        p
    }

    fn running(ip: &str) -> PodStatus {
        PodStatus {
            phase: PodPhase::Running,
            ip: ip.into(),
            updated_ms: 5,
            ..PodStatus::default()
        }
    }

    #[test]
    fn only_the_pods_own_node_and_uid_write() {
        let p = pod();
        let cidr = "10.42.1.0/24";
        assert_eq!(
            judge(&p, "pi2", cidr, "u1", running("")).0,
            Verdict::BoundElsewhere
        );
        assert_eq!(judge(&p, "pi1", cidr, "u0", running("")).0, Verdict::Stale);
        assert_eq!(
            judge(&p, "pi1", cidr, "u1", running("10.42.1.7")),
            (Verdict::Write(running("10.42.1.7")), Vec::new())
        );
    }

    #[test]
    fn a_process_reported_twice_keeps_its_first_entry() {
        // Found by the `status` fuzz target: with two entries named `app`, the second was
        // compared with the first, so every report recorded a `Restarted`/`OOMKilled` event.
        let app = |restarts| ProcessStatus {
            name: "app".into(),
            restarts,
            last_exit: Some(ExitReason::OOMKilled),
            ..ProcessStatus::default()
        };
        let mut twice = running("");
        twice.processes = vec![app(0), app(3)];
        let (v, why) = judge(&pod(), "pi1", "", "u1", twice);
        let Verdict::Write(written) = v else {
            panic!("{v:?}")
        };
        assert_eq!(written.processes, [app(0)]);
        assert!(why[0].contains("more than once"), "{why:?}");
        assert!(status_events(&written, &written).is_empty());
    }

    #[test]
    fn addresses_outside_the_subnet_are_dropped_and_timestamps_alone_write_nothing() {
        let mut p = pod();
        let (v, why) = judge(&p, "pi1", "10.42.1.0/24", "u1", running("127.0.0.1"));
        assert_eq!(v, Verdict::Write(running("")));
        assert!(why[0].contains("127.0.0.1"), "{why:?}");
        p.status = running("10.42.1.7");
        let mut later = running("10.42.1.7");
        later.updated_ms = 99;
        assert_eq!(
            judge(&p, "pi1", "10.42.1.0/24", "u1", later).0,
            Verdict::Unchanged
        );
    }

    #[test]
    fn events_of_a_change() {
        let failed = PodStatus {
            phase: PodPhase::Failed,
            message: "mount /data: no such directory".into(),
            processes: vec![ProcessStatus {
                name: "app".into(),
                ..ProcessStatus::default()
            }],
            ..PodStatus::default()
        };
        assert_eq!(
            status_events(&PodStatus::default(), &failed),
            [("FailedCreate", "mount /data: no such directory".to_string())]
        );
        let mut oom = running("");
        oom.processes = vec![ProcessStatus {
            name: "app".into(),
            restarts: 2,
            last_exit: Some(ExitReason::OOMKilled),
            ..ProcessStatus::default()
        }];
        let ev = status_events(&running(""), &oom);
        assert_eq!(ev.len(), 1);
        assert_eq!(ev[0].0, "OOMKilled");
        assert!(status_events(&oom, &oom).is_empty());
    }

    fn conflict(kind: ConflictKind, name: &str, port: u16) -> Conflict {
        Conflict {
            kind,
            namespace: "default".into(),
            name: name.into(),
            uid: if kind == ConflictKind::ServicePort {
                String::new()
            } else {
                format!("{name}-uid")
            },
            port,
            message: format!("port {port} is in use"),
        }
    }

    #[test]
    fn a_conflict_records_one_event_while_it_lasts() {
        let uid_of = |c: &Conflict| match c.kind {
            ConflictKind::ServicePort => (c.name == "web").then(|| "svc-uid".to_string()),
            // Only pods bound to this node with the reported UID.
            _ => (c.name == "p1" && c.uid == "p1-uid").then(|| c.uid.clone()),
        };
        let web = conflict(ConflictKind::ServicePort, "web", 8080);
        let hp = conflict(ConflictKind::HostPort, "p1", 9090);
        let (ev, kept, dropped) = judge_conflicts(
            "pi1",
            &[],
            vec![web.clone(), hp.clone(), web.clone()],
            uid_of,
        );
        assert!(dropped.is_empty(), "{dropped:?}");
        assert_eq!(kept.len(), 2);
        assert_eq!(ev.len(), 2);
        let svc = ev
            .iter()
            .find(|e| e.kind == bramble_wire::objects::Kind::Service)
            .unwrap();
        assert_eq!((svc.reason, svc.uid.as_str()), ("PortConflict", "svc-uid"));
        assert_eq!(svc.message, "node pi1: port 8080 is in use");
        let pod = ev
            .iter()
            .find(|e| e.kind == bramble_wire::objects::Kind::Pod)
            .unwrap();
        assert_eq!((pod.reason, pod.name.as_str()), ("HostPortConflict", "p1"));
        // The same set again: nothing new.
        let (ev, kept2, _) = judge_conflicts("pi1", &kept, kept.clone(), uid_of);
        assert!(ev.is_empty());
        assert_eq!(kept2, kept);
        // Gone, then back: a new event.
        let (_, none, _) = judge_conflicts("pi1", &kept, vec![], uid_of);
        let (ev, _, _) = judge_conflicts("pi1", &none, vec![web], uid_of);
        assert_eq!(ev.len(), 1);
    }

    #[test]
    fn conflicts_about_other_objects_are_dropped_and_bounded() {
        let uid_of = |c: &Conflict| (c.name == "p1" && c.uid == "p1-uid").then(|| c.uid.clone());
        let mut other = conflict(ConflictKind::HostPort, "p1", 0);
        other.uid = "someone-else".into();
        let mut long = conflict(ConflictKind::HostPort, "p1", 1);
        long.message = "é".repeat(MAX_CONFLICT_MESSAGE);
        let mut many: Vec<Conflict> = (2..200)
            .map(|p| conflict(ConflictKind::HostPort, "p1", p))
            .collect();
        many.insert(0, long);
        many.insert(0, other);
        let (ev, kept, dropped) = judge_conflicts("pi1", &[], many, uid_of);
        assert_eq!(dropped.len(), 2, "{dropped:?}");
        assert!(dropped[0].contains("conflicts past the first"));
        assert_eq!(kept.len(), MAX_CONFLICTS - 1);
        assert_eq!(ev.len(), MAX_CONFLICTS - 1);
        assert!(
            ev.iter()
                .all(|e| e.message.len() <= MAX_CONFLICT_MESSAGE + 20)
        );
    }
}
