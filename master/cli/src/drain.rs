//! `bramble drain NODE [--timeout] [--force]`, as kubectl's: cordon the node, then evict (delete)
//! every pod on it but daemon-set pods, so their owners (replica sets of deployments, jobs)
//! create replacements elsewhere. A deployment is never taken below `replicas − max(max_unavailable, 1)`
//! available pods: [`plan`] evicts only as many of its available pods as that budget allows, and
//! the loop re-plans from a fresh snapshot until the replacements are available. Bare pods (no
//! owner, or an owner that is gone) come back nowhere: refused unless `--force`.
//!
//! The planner is pure (a snapshot in, the pods to evict now and what holds the rest back out);
//! [`run`] is the loop around it over the ordinary Get/List/Delete/Patch requests. Each evicted
//! pod stops on its node with its own `termination_grace` (SIGTERM, then SIGKILL).

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::time::{Duration, Instant};

use bramble_server::controllers::pod_available;
use bramble_wire::msg::{ErrorCode, MetaPatch, RequestBody, ResponseBody};
use bramble_wire::objects::{Deployment, Kind, Object, Pod, PodPhase, ReplicaSet};

use super::{Client, ClientError, usage};

/// What the planner reads: the cluster's pods, replica sets and deployments at one moment.
pub struct Snapshot<'a> {
    /// Every pod (all namespaces).
    pub pods: &'a [Pod],
    /// Every replica set.
    pub replicasets: &'a [ReplicaSet],
    /// Every deployment.
    pub deployments: &'a [Deployment],
    /// Now, ms since the epoch (for `min_ready_ms`).
    pub now_ms: u64,
}

/// A pod, as `namespace/name`.
pub type PodKey = String;

fn key(p: &Pod) -> PodKey {
    format!("{}/{}", p.meta.namespace, p.meta.name)
}

/// What to do on the node now.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// Pods to evict now; `true` for a bare pod (only with `force`), which will not come back.
    pub evict: Vec<(PodKey, bool)>,
    /// Pods held back, with why (a deployment's availability budget).
    pub waiting: Vec<(PodKey, String)>,
    /// Bare pods refused (without `force`), with why they would not come back.
    pub bare: Vec<(PodKey, String)>,
    /// Daemon-set pods, which stay.
    pub kept: Vec<PodKey>,
}

impl Plan {
    /// Only daemon-set pods are left.
    pub fn done(&self) -> bool {
        self.evict.is_empty() && self.waiting.is_empty() && self.bare.is_empty()
    }
}

/// How a pod on the node is handled.
enum Class<'a> {
    Daemon,
    /// Its owner replaces it; in a deployment's budget if it has one.
    Managed(Option<&'a Deployment>),
    /// Nothing brings it back (why).
    Bare(String),
}

fn classify<'a>(snap: &Snapshot<'a>, p: &Pod) -> Class<'a> {
    let Some(o) = p.meta.owners.first() else {
        return Class::Bare("no owner".into());
    };
    match o.kind {
        Kind::DaemonSet => Class::Daemon,
        Kind::ReplicaSet => {
            let Some(rs) = snap.replicasets.iter().find(|r| r.meta.uid == o.uid) else {
                return Class::Bare(format!("its replica set {} is gone", o.name));
            };
            let d = rs.meta.owners.iter().find_map(|ro| {
                (ro.kind == Kind::Deployment)
                    .then(|| snap.deployments.iter().find(|d| d.meta.uid == ro.uid))
                    .flatten()
            });
            Class::Managed(d)
        }
        _ => Class::Managed(None),
    }
}

/// How many of a deployment's pods a drain may take away at once: its `max_unavailable`, but at
/// least one. `max_unavailable = 0` (the manifest default) is a rollout's rule: a rollout adds
/// a new pod before it removes an old one, which a drain cannot do without changing the
/// deployment. Kubernetes keeps the two apart too (a rollout's `maxUnavailable`, a disruption
/// budget for evictions, and `kubectl drain` with no budget evicts every pod at once); one at a
/// time, each replacement available before the next goes, is the safe middle.
pub fn disruption_budget(d: &Deployment) -> u32 {
    d.spec.max_unavailable.max(1)
}

/// Which pods of `node` to evict now, given `snap`. For a deployment with `A` available pods
/// (over all its replica sets, counted as its controller counts them), at most
/// `A − (replicas − max_unavailable)` of its available pods on the node are evicted at once;
/// its unavailable and finished pods go at once. Daemon-set pods stay; bare pods are evicted
/// only with `force`.
pub fn plan(snap: &Snapshot<'_>, node: &str, force: bool) -> Plan {
    let mut out = Plan::default();
    let min_ready: BTreeMap<&str, u32> = snap
        .replicasets
        .iter()
        .map(|r| (r.meta.uid.as_str(), r.spec.min_ready_ms))
        .collect();
    let available = |p: &Pod| {
        let mr = p
            .meta
            .owners
            .first()
            .and_then(|o| min_ready.get(o.uid.as_str()))
            .copied()
            .unwrap_or(0);
        pod_available(p, mr, snap.now_ms)
    };
    // Available pods per deployment UID (anywhere in the cluster).
    let mut avail_of: BTreeMap<&str, u32> = BTreeMap::new();
    for p in snap.pods {
        if let Class::Managed(Some(d)) = classify(snap, p)
            && available(p)
        {
            *avail_of.entry(d.meta.uid.as_str()).or_default() += 1;
        }
    }
    let mut mine: Vec<&Pod> = snap
        .pods
        .iter()
        .filter(|p| p.spec.node_name.as_deref() == Some(node))
        .collect();
    mine.sort_by_key(|p| key(p));
    for p in mine {
        match classify(snap, p) {
            Class::Daemon => out.kept.push(key(p)),
            Class::Bare(_) if force => out.evict.push((key(p), true)),
            Class::Bare(why) => out.bare.push((key(p), why)),
            Class::Managed(None) => out.evict.push((key(p), false)),
            Class::Managed(Some(d)) => {
                let finished = matches!(p.status.phase, PodPhase::Succeeded | PodPhase::Failed);
                if finished || !available(p) {
                    out.evict.push((key(p), false));
                    continue;
                }
                let budget = disruption_budget(d);
                let floor = d.spec.replicas.saturating_sub(budget);
                let a = avail_of.entry(d.meta.uid.as_str()).or_default();
                if *a > floor {
                    *a -= 1;
                    out.evict.push((key(p), false));
                } else {
                    let why = format!(
                        "deployment {}/{}: {} of {} available, at least {floor} must stay \
                         (max_unavailable = {}, at least 1 for a drain): waiting for a \
                         replacement elsewhere",
                        d.meta.namespace, d.meta.name, *a, d.spec.replicas, d.spec.max_unavailable
                    );
                    out.waiting.push((key(p), why));
                }
            }
        }
    }
    out
}

fn failed(message: String) -> ClientError {
    ClientError::Api(bramble_wire::msg::ApiError {
        code: ErrorCode::Unavailable,
        message,
    })
}

async fn list<T>(
    c: &mut Client,
    kind: Kind,
    pick: impl Fn(Object) -> Option<T>,
) -> Result<Vec<T>, ClientError> {
    match c
        .call(RequestBody::List {
            kind,
            namespace: None,
            selector: String::new(),
        })
        .await?
    {
        ResponseBody::List { items, .. } => Ok(items.into_iter().filter_map(pick).collect()),
        _ => Err(usage("unexpected answer to a list".into())),
    }
}

/// Drains `node`: see the module docs. Progress goes to `out`.
pub async fn run(
    c: &mut Client,
    node: &str,
    force: bool,
    timeout: Duration,
    out: &mut impl Write,
) -> Result<(), ClientError> {
    let patch = MetaPatch {
        unschedulable: Some(true),
        ..Default::default()
    };
    super::label::run(c, "node", node, "", patch, "cordoned", out).await?;
    let t0 = Instant::now();
    // By UID: a replica set's replacement may take the evicted pod's name.
    let mut evicting: BTreeMap<String, PodKey> = BTreeMap::new();
    let mut said: BTreeSet<String> = BTreeSet::new();
    let mut first = true;
    loop {
        let pods = list(c, Kind::Pod, |o| match o {
            Object::Pod(p) => Some(p),
            _ => None,
        })
        .await?;
        let replicasets = list(c, Kind::ReplicaSet, |o| match o {
            Object::ReplicaSet(r) => Some(r),
            _ => None,
        })
        .await?;
        let deployments = list(c, Kind::Deployment, |o| match o {
            Object::Deployment(d) => Some(d),
            _ => None,
        })
        .await?;
        let snap = Snapshot {
            pods: &pods,
            replicasets: &replicasets,
            deployments: &deployments,
            now_ms: bramble_server::api::now_ms(),
        };
        // Pods deleted earlier that the list no longer holds are gone.
        let present: BTreeSet<&str> = pods.iter().map(|p| p.meta.uid.as_str()).collect();
        for (_, k) in evicting
            .iter()
            .filter(|(u, _)| !present.contains(u.as_str()))
        {
            let _ = writeln!(out, "pod {k} evicted");
        }
        evicting.retain(|u, _| present.contains(u.as_str()));
        let p = plan(&snap, node, force);
        if !p.bare.is_empty() {
            let names: Vec<String> = p
                .bare
                .iter()
                .map(|(k, why)| format!("{k} ({why})"))
                .collect();
            return Err(usage(format!(
                "cannot drain node {node}: pods that no deployment, replica set, job or daemon set \
                 would recreate: {}. Delete them yourself, or run `bramble drain {node} --force` \
                 to delete them (they will not come back). The node stays cordoned \
                 (`bramble uncordon {node}` to undo).",
                names.join(", ")
            )));
        }
        if first && !p.kept.is_empty() {
            let _ = writeln!(out, "ignoring daemon-set pods: {}", p.kept.join(", "));
        }
        first = false;
        if p.done() && evicting.is_empty() {
            let _ = writeln!(out, "node/{node} drained");
            return Ok(());
        }
        for (k, bare) in &p.evict {
            let Some(uid) = pods
                .iter()
                .find(|p| key(p) == *k && p.spec.node_name.as_deref() == Some(node))
                .map(|p| p.meta.uid.clone())
            else {
                continue;
            };
            if evicting.contains_key(&uid) {
                continue;
            }
            let _ = writeln!(out, "evicting pod {k}");
            if *bare {
                let _ = writeln!(
                    out,
                    "warning: deleting pod {k}, which no controller manages: it will not come back"
                );
            }
            let _ = out.flush();
            let (namespace, name) = k.split_once('/').unwrap_or(("", k));
            match c
                .call(RequestBody::Delete {
                    kind: Kind::Pod,
                    namespace: namespace.into(),
                    name: name.into(),
                    expected_revision: None,
                })
                .await
            {
                Ok(_) => {}
                Err(ClientError::Api(e)) if e.code == ErrorCode::NotFound => {}
                Err(e) => return Err(e),
            }
            evicting.insert(uid, k.clone());
        }
        for (_, why) in &p.waiting {
            if said.insert(why.clone()) {
                let _ = writeln!(out, "{why}");
            }
        }
        let _ = out.flush();
        if t0.elapsed() > timeout {
            let left: Vec<String> = p
                .waiting
                .iter()
                .map(|(k, why)| format!("{k} ({why})"))
                .chain(evicting.values().map(|k| format!("{k} (being deleted)")))
                .collect();
            return Err(failed(format!(
                "drain of node {node} timed out after {}; pods left: {}. The node stays cordoned; \
                 see `bramble get pods -A -o wide` and `bramble describe deployment NAME`",
                super::Dur(timeout),
                left.join("; ")
            )));
        }
        smol::Timer::after(Duration::from_millis(250)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bramble_wire::objects::{
        DeploymentSpec, Meta, OwnerRef, PodStatus, ProcessState, ProcessStatus, ReplicaSetSpec,
    };

    fn owner(kind: Kind, name: &str) -> OwnerRef {
        OwnerRef {
            kind,
            name: name.into(),
            uid: format!("uid-{name}"),
        }
    }

    fn meta(name: &str, owners: Vec<OwnerRef>) -> Meta {
        Meta {
            name: name.into(),
            namespace: "default".into(),
            uid: format!("uid-{name}"),
            owners,
            ..Default::default()
        }
    }

    fn pod(name: &str, node: &str, owner: Option<OwnerRef>, ready: bool) -> Pod {
        let mut p = Pod {
            meta: meta(name, owner.into_iter().collect()),
            ..Default::default()
        };
        p.spec.node_name = Some(node.into());
        if ready {
            p.status = PodStatus {
                phase: PodPhase::Running,
                processes: vec![ProcessStatus {
                    name: "main".into(),
                    state: ProcessState::Running {
                        pid: 1,
                        started_ms: 1,
                    },
                    ready: true,
                    ..Default::default()
                }],
                updated_ms: 1,
                ..Default::default()
            };
        }
        p
    }

    fn web(replicas: u32, max_unavailable: u32) -> (Deployment, ReplicaSet) {
        let d = Deployment {
            meta: meta("web", vec![]),
            spec: DeploymentSpec {
                replicas,
                max_unavailable,
                ..Default::default()
            },
            ..Default::default()
        };
        let rs = ReplicaSet {
            meta: meta("web-1", vec![owner(Kind::Deployment, "web")]),
            spec: ReplicaSetSpec {
                replicas,
                ..Default::default()
            },
            ..Default::default()
        };
        (d, rs)
    }

    fn run_plan(pods: &[Pod], rs: &[ReplicaSet], d: &[Deployment], force: bool) -> Plan {
        let snap = Snapshot {
            pods,
            replicasets: rs,
            deployments: d,
            now_ms: 10_000,
        };
        plan(&snap, "n1", force)
    }

    fn keys(v: &[(PodKey, bool)]) -> Vec<&str> {
        v.iter().map(|(k, _)| k.as_str()).collect()
    }

    #[test]
    fn evicts_one_at_a_time_within_the_budget_and_keeps_daemon_pods() {
        let (d, rs) = web(3, 1);
        let o = Some(owner(Kind::ReplicaSet, "web-1"));
        let pods = vec![
            pod("web-a", "n1", o.clone(), true),
            pod("web-b", "n1", o.clone(), true),
            pod("web-c", "n2", o.clone(), true),
            pod("agent-x", "n1", Some(owner(Kind::DaemonSet, "agent")), true),
        ];
        let p = run_plan(
            &pods,
            std::slice::from_ref(&rs),
            std::slice::from_ref(&d),
            false,
        );
        assert_eq!(keys(&p.evict), ["default/web-a"]);
        assert_eq!(p.waiting.len(), 1);
        assert!(p.waiting[0].1.contains("2 of 3 available, at least 2"));
        assert_eq!(p.kept, ["default/agent-x"]);
        assert!(!p.done());

        // web-a deleted, its replacement not available yet: web-b waits.
        let mut pods2 = pods.clone();
        pods2.remove(0);
        pods2.push(pod("web-d", "n2", o.clone(), false));
        let p = run_plan(
            &pods2,
            std::slice::from_ref(&rs),
            std::slice::from_ref(&d),
            false,
        );
        assert!(p.evict.is_empty());
        assert_eq!(p.waiting[0].0, "default/web-b");

        // The replacement is available: web-b goes.
        pods2.last_mut().unwrap().status = pods[0].status.clone();
        let p = run_plan(
            &pods2,
            std::slice::from_ref(&rs),
            std::slice::from_ref(&d),
            false,
        );
        assert_eq!(keys(&p.evict), ["default/web-b"]);

        // Only the daemon pod left: done.
        let p = run_plan(&pods[3..], &[rs], &[d], false);
        assert!(p.done());
        assert_eq!(p.kept.len(), 1);
    }

    #[test]
    fn a_larger_budget_evicts_several_and_unavailable_pods_go_at_once() {
        let (d, rs) = web(4, 2);
        let o = Some(owner(Kind::ReplicaSet, "web-1"));
        let pods = vec![
            pod("web-a", "n1", o.clone(), true),
            pod("web-b", "n1", o.clone(), true),
            pod("web-c", "n1", o.clone(), true),
            pod("web-d", "n2", o.clone(), true),
            pod("web-e", "n1", o.clone(), false),
        ];
        let p = run_plan(&pods, &[rs], &[d], false);
        assert_eq!(
            keys(&p.evict),
            ["default/web-a", "default/web-b", "default/web-e"]
        );
        assert_eq!(p.waiting.len(), 1);
    }

    #[test]
    fn min_ready_counts_as_the_controller_does() {
        let (d, mut rs) = web(2, 1);
        rs.spec.min_ready_ms = 60_000;
        let o = Some(owner(Kind::ReplicaSet, "web-1"));
        let pods = vec![
            pod("web-a", "n1", o.clone(), true),
            pod("web-b", "n2", o.clone(), true),
        ];
        // Ready since 1 ms, min_ready 60 s, now 10 s: neither is available, so web-a costs
        // nothing to evict.
        let p = run_plan(&pods, &[rs], &[d], false);
        assert_eq!(keys(&p.evict), ["default/web-a"]);
    }

    #[test]
    fn zero_max_unavailable_drains_one_pod_at_a_time() {
        let (d, rs) = web(2, 0);
        let pods = vec![
            pod("web-a", "n1", Some(owner(Kind::ReplicaSet, "web-1")), true),
            pod("web-b", "n1", Some(owner(Kind::ReplicaSet, "web-1")), true),
        ];
        let p = run_plan(&pods, &[rs], &[d], false);
        assert_eq!(keys(&p.evict), ["default/web-a"]);
        assert!(p.waiting[0].1.contains("max_unavailable = 0"), "{p:?}");
    }

    #[test]
    fn bare_and_orphaned_pods_need_force() {
        let pods = vec![
            pod("solo", "n1", None, true),
            pod("lost", "n1", Some(owner(Kind::ReplicaSet, "gone")), true),
            pod("task", "n1", Some(owner(Kind::Job, "batch")), true),
            pod("elsewhere", "n2", None, true),
        ];
        let p = run_plan(&pods, &[], &[], false);
        assert_eq!(keys(&p.evict), ["default/task"]);
        let bare: Vec<&str> = p.bare.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(bare, ["default/lost", "default/solo"]);
        assert!(p.bare[0].1.contains("replica set gone is gone"));
        let p = run_plan(&pods, &[], &[], true);
        assert!(p.bare.is_empty());
        assert_eq!(
            p.evict,
            [
                ("default/lost".to_string(), true),
                ("default/solo".to_string(), true),
                ("default/task".to_string(), false)
            ]
        );
    }

    #[test]
    fn finished_pods_of_a_deployment_go_without_budget() {
        let (d, rs) = web(1, 0);
        let mut p0 = pod("web-a", "n1", Some(owner(Kind::ReplicaSet, "web-1")), false);
        p0.status.phase = PodPhase::Failed;
        let p = run_plan(&[p0], &[rs], &[d], false);
        assert_eq!(keys(&p.evict), ["default/web-a"]);
    }
}
