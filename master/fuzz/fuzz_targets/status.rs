//! Fuzzes the master's handling of what a node sends after registering: the `NodeUp` decoding of
//! a frame body, and for a `Status` report the pure judgement of each `PodReport` against the
//! stored pod (`bramble_server::api::report`) and the events a change records.
//!
//! Input layout: `[selector] [NodeUp body...]`. The selector picks the stored pod each report is
//! judged against: bound to the reporting node or another, the same UID or an earlier pod's,
//! isolated network or host, the node's pod subnet (a /24, none, or garbage), the stored status
//! empty or the reported one. Besides "no panic":
//! - a pod bound elsewhere is never written, nor a report with another UID;
//! - a written address is always inside the node's pod subnet, on an isolated pod, and never
//!   the subnet's network, gateway or broadcast address; a dropped address is never written;
//! - `Unchanged` exactly when the stored status has the same meaning as what would be written;
//! - a process reported twice keeps its first entry;
//! - judging is idempotent: once written, the same report again is `Unchanged` with no events;
//! - events are only recorded for a change, with a known reason and a bounded message;
//! - a `Conflicts` report: bounded, each conflict an event once, the same set again nothing.
#![no_main]

use bramble_server::api::report::{
    MAX_CONFLICT_MESSAGE, MAX_CONFLICTS, Verdict, judge, judge_conflicts, status_events,
};
use bramble_server::controllers::podnet::check_pod_ip;
use bramble_wire::frame;
use bramble_wire::msg::{Conflict, NodeUp};
use bramble_wire::objects::{NetworkMode, Pod, PodStatus};
use libfuzzer_sys::fuzz_target;

const NODE: &str = "pi1";
const CIDRS: [&str; 4] = ["10.42.1.0/24", "", "10.42.7.0/31", "not a cidr"];
const REASONS: [&str; 6] = [
    "Started",
    "Completed",
    "FailedCreate",
    "Failed",
    "OOMKilled",
    "Restarted",
];

fuzz_target!(|data: &[u8]| {
    let Some((&sel, body)) = data.split_first() else {
        return;
    };
    let Ok(msg) = frame::decode::<NodeUp>(body) else {
        return;
    };
    let reports = match msg {
        NodeUp::Status(reports) => reports,
        NodeUp::Conflicts(now) => {
            // The conflict judge: only objects the node may speak of, bounded, once each.
            let uid_of = |c: &Conflict| (sel & 1 == 0 || c.name.len() % 2 == 0).then(|| c.uid.clone());
            let (events, kept, _) = judge_conflicts(NODE, &[], now.clone(), uid_of);
            assert!(kept.len() <= MAX_CONFLICTS && events.len() == kept.len());
            for e in &events {
                assert!(e.message.len() <= MAX_CONFLICT_MESSAGE + NODE.len() + 8, "{}", e.message);
                assert!(["PortConflict", "HostPortConflict"].contains(&e.reason));
            }
            // The same set again records nothing.
            let (again, kept2, _) = judge_conflicts(NODE, &kept, now, uid_of);
            assert!(again.is_empty());
            assert_eq!(kept, kept2);
            return;
        }
        _ => return,
    };
    let cidr = CIDRS[usize::from(sel >> 4) % CIDRS.len()];
    for r in reports {
        let mut pod = Pod::default();
        pod.meta.namespace = r.namespace.clone();
        pod.meta.name = r.name.clone();
        pod.meta.uid = if sel & 1 == 0 {
            r.uid.clone()
        } else {
            format!("{}-old", r.uid)
        };
        pod.spec.node_name = match sel & 6 {
            0 | 2 => Some(NODE.into()),
            4 => Some("pi2".into()),
            _ => None,
        };
        pod.spec.network = if sel & 8 == 0 {
            NetworkMode::Isolated
        } else {
            NetworkMode::Host
        };
        if sel & 0x40 != 0 {
            pod.status = r.status.clone();
        }

        let (verdict, dropped) = judge(&pod, NODE, cidr, &r.uid, r.status.clone());
        if pod.spec.node_name.as_deref() != Some(NODE) {
            assert_eq!(verdict, Verdict::BoundElsewhere);
            continue;
        }
        if pod.meta.uid != r.uid {
            assert_eq!(verdict, Verdict::Stale);
            continue;
        }
        let bad_ip =
            !r.status.ip.is_empty() && check_pod_ip(cidr, pod.spec.network, &r.status.ip).is_err();
        let mut want = r.status.clone();
        if bad_ip {
            want.ip.clear();
        }
        let mut names = std::collections::HashSet::new();
        want.processes.retain(|p| names.insert(p.name.clone()));
        assert_eq!(
            dropped.len(),
            usize::from(bad_ip) + usize::from(want.processes.len() != r.status.processes.len()),
            "{dropped:?}"
        );
        match &verdict {
            Verdict::Unchanged => assert!(pod.status.same_meaning(&want)),
            Verdict::Write(s) => {
                assert_eq!(s, &want);
                assert!(!pod.status.same_meaning(s));
                if !s.ip.is_empty() {
                    assert_eq!(pod.spec.network, NetworkMode::Isolated);
                    check_pod_ip(cidr, pod.spec.network, &s.ip)
                        .expect("wrote an address outside the node's subnet");
                    let last: u8 = s.ip.rsplit('.').next().unwrap().parse().unwrap();
                    assert!(
                        cidr != "10.42.1.0/24" || (2..255).contains(&last),
                        "{}",
                        s.ip
                    );
                }
            }
            v => panic!("{v:?} for the pod's own node and UID"),
        }
        let Verdict::Write(written) = verdict else {
            continue;
        };
        let events = status_events(&pod.status, &written);
        for (reason, msg) in &events {
            assert!(REASONS.contains(reason), "{reason}");
            assert!(
                msg.len()
                    <= written.message.len()
                        + 200
                        + written
                            .processes
                            .iter()
                            .map(|p| p.name.len())
                            .max()
                            .unwrap_or(0),
                "{msg}"
            );
        }
        // Idempotent: the same report about the stored result changes nothing more.
        let before = std::mem::replace(&mut pod.status, written.clone());
        let (again, _) = judge(&pod, NODE, cidr, &r.uid, r.status.clone());
        assert_eq!(
            again,
            Verdict::Unchanged,
            "written {written:?} over {before:?}"
        );
        assert!(status_events(&written, &written).is_empty());
        let _: PodStatus = before;
    }
});
