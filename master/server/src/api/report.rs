//! The pure part of a node's status report: whether a [`PodReport`] may change the stored pod,
//! what status is written, and which events that change records. No store, no cache, no I/O:
//! [`super::node`] does those around it (and `master/fuzz`'s `status` target fuzzes it).

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
}
