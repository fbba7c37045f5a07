//! `bramble rollout status|history|undo deployment NAME`, `rollout restart deployment|daemonset NAME`.

use std::io::Write;
use std::time::Instant;

use bramble_wire::msg::{RequestBody, ResponseBody};
use bramble_wire::objects::{Deployment, Kind, Object, ReplicaSet};

use super::{Client, ClientError, RolloutCmd, get_deployment, usage, want_deployment};

/// The label controllers add to a replica set's template (not part of the user's template).
pub const TEMPLATE_HASH: &str = "bramble.io/template-hash";

async fn replicasets(
    c: &mut Client,
    namespace: &str,
    uid: &str,
) -> Result<Vec<ReplicaSet>, ClientError> {
    let ResponseBody::List { items, .. } = c
        .call(RequestBody::List {
            kind: Kind::ReplicaSet,
            namespace: Some(namespace.into()),
            selector: String::new(),
        })
        .await?
    else {
        return Ok(vec![]);
    };
    let mut rss: Vec<ReplicaSet> = items
        .into_iter()
        .filter_map(|o| match o {
            Object::ReplicaSet(r) if r.meta.owners.iter().any(|o| o.uid == uid) => Some(r),
            _ => None,
        })
        .collect();
    rss.sort_by_key(|r| r.spec.revision);
    Ok(rss)
}

fn failed(message: String) -> ClientError {
    ClientError::Api(bramble_wire::msg::ApiError {
        code: bramble_wire::msg::ErrorCode::Unavailable,
        message,
    })
}

/// Where a rollout stands, as kubectl words it, and whether it is over: `Some(Ok)` rolled out,
/// `Some(Err)` stalled (past its progress deadline), `None` still going. Only a status that
/// observed the current spec generation counts.
pub fn status_line(name: &str, d: &Deployment) -> (String, Option<Result<(), String>>) {
    let want = d.spec.replicas;
    let s = &d.status;
    if s.observed_generation < s.generation {
        return (
            format!("Waiting for deployment {name:?} spec update to be observed..."),
            None,
        );
    }
    if s.stalled {
        return (
            format!("deployment {name:?}: {}", s.message),
            Some(Err(format!(
                "deployment {name:?} exceeded its progress deadline: {}",
                s.message
            ))),
        );
    }
    let line = if s.updated < want {
        format!(
            "Waiting for deployment {name:?} rollout to finish: {} of {want} new replicas have been updated...",
            s.updated
        )
    } else if s.replicas > s.updated {
        format!(
            "Waiting for deployment {name:?} rollout to finish: {} old replicas are pending termination...",
            s.replicas - s.updated
        )
    } else if s.updated_available < want {
        format!(
            "Waiting for deployment {name:?} rollout to finish: {} of {want} updated replicas are available...",
            s.updated_available
        )
    } else {
        return (
            format!(
                "deployment {name:?} successfully rolled out (revision {})",
                s.revision
            ),
            Some(Ok(())),
        );
    };
    (line, None)
}

/// Runs a rollout subcommand.
pub async fn run(c: &mut Client, cmd: RolloutCmd, out: &mut impl Write) -> Result<(), ClientError> {
    match cmd {
        RolloutCmd::Status {
            kind,
            name,
            namespace,
            timeout,
        } => {
            want_deployment(&kind)?;
            let t0 = Instant::now();
            let mut last = String::new();
            loop {
                let d = get_deployment(c, &namespace, &name).await?;
                let (line, done) = status_line(&name, &d);
                if line != last {
                    let _ = writeln!(out, "{line}");
                    let _ = out.flush();
                    last = line;
                }
                match done {
                    Some(Ok(())) => return Ok(()),
                    Some(Err(why)) => return Err(failed(why)),
                    None => {}
                }
                if t0.elapsed() > timeout {
                    return Err(failed(format!(
                        "deployment {name:?} did not finish rolling out within {}: {}; see `bramble describe deployment {name}` and `bramble get pods`",
                        super::Dur(timeout),
                        d.status.message
                    )));
                }
                smol::Timer::after(std::time::Duration::from_millis(200)).await;
            }
        }
        RolloutCmd::Restart {
            kind,
            name,
            namespace,
        } => {
            let kind = match Kind::parse(&kind) {
                Some(k @ (Kind::Deployment | Kind::DaemonSet)) => k,
                _ => {
                    return Err(usage(format!(
                        "{kind:?}: only deployments and daemon sets can be restarted: use `deployment NAME` or `daemonset NAME`"
                    )));
                }
            };
            let mut tries = 0;
            loop {
                let get = RequestBody::Get {
                    kind,
                    namespace: namespace.clone(),
                    name: name.clone(),
                };
                let mut o = match c.call(get).await? {
                    ResponseBody::Object(o) => o,
                    _ => return Err(usage(format!("{} {name:?} not found", kind.as_str()))),
                };
                let template = match &mut o {
                    Object::Deployment(d) => &mut d.spec.template,
                    Object::DaemonSet(d) => &mut d.spec.template,
                    _ => return Err(usage("unexpected answer".into())),
                };
                // A new stamp, later than any before (clocks may step back).
                template.restarted_at_ms = Some(
                    bramble_server::api::now_ms().max(template.restarted_at_ms.unwrap_or(0) + 1),
                );
                match c.call(RequestBody::Apply(vec![o])).await {
                    Ok(_) => {
                        let _ = writeln!(out, "{}/{name} restarted", kind.as_str());
                        return Ok(());
                    }
                    Err(ClientError::Api(e))
                        if e.code == bramble_wire::msg::ErrorCode::Conflict && tries < 10 =>
                    {
                        tries += 1
                    }
                    Err(e) => return Err(e),
                }
            }
        }
        RolloutCmd::History {
            kind,
            name,
            namespace,
        } => {
            want_deployment(&kind)?;
            let d = get_deployment(c, &namespace, &name).await?;
            let rss = replicasets(c, &namespace, &d.meta.uid).await?;
            let mut rows = vec![
                ["REVISION", "REPLICASET", "REPLICAS", "COMMAND"]
                    .map(String::from)
                    .to_vec(),
            ];
            for r in &rss {
                let cmd = r
                    .spec
                    .template
                    .spec
                    .processes
                    .first()
                    .map(|p| p.command.join(" "))
                    .unwrap_or_default();
                rows.push(vec![
                    r.spec.revision.to_string(),
                    r.meta.name.clone(),
                    r.spec.replicas.to_string(),
                    cmd,
                ]);
            }
            let _ = write!(out, "{}", super::table::columns(&rows));
            Ok(())
        }
        RolloutCmd::Undo {
            kind,
            name,
            to_revision,
            namespace,
        } => {
            want_deployment(&kind)?;
            let mut tries = 0;
            loop {
                let mut d = get_deployment(c, &namespace, &name).await?;
                let rss = replicasets(c, &namespace, &d.meta.uid).await?;
                let current = d.status.revision;
                let target = match to_revision {
                    Some(r) => rss.iter().find(|x| x.spec.revision == r),
                    None => rss.iter().rev().find(|x| x.spec.revision < current),
                };
                let Some(target) = target else {
                    let kept: Vec<u64> = rss.iter().map(|r| r.spec.revision).collect();
                    return Err(usage(format!(
                        "deployment {name:?}: no revision to go back to (current {current}, kept {kept:?}); see `bramble rollout history deployment {name}`"
                    )));
                };
                let mut t = target.spec.template.clone();
                t.labels.remove(TEMPLATE_HASH);
                // That revision's restart stamp, "never" included (not the current one).
                t.restarted_at_ms = Some(t.restarted_at_ms.unwrap_or(0));
                let rev = target.spec.revision;
                d.spec.template = t;
                // The controllers write the deployment's status too: retry on a revision conflict.
                match c
                    .call(RequestBody::Apply(vec![Object::Deployment(d)]))
                    .await
                {
                    Ok(_) => {
                        let _ = writeln!(out, "deployment/{name} rolled back to revision {rev}");
                        return Ok(());
                    }
                    Err(ClientError::Api(e))
                        if e.code == bramble_wire::msg::ErrorCode::Conflict && tries < 10 =>
                    {
                        tries += 1
                    }
                    Err(e) => return Err(e),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bramble_wire::objects::DeploymentStatus;

    fn dep(replicas: u32, status: DeploymentStatus) -> Deployment {
        let mut d = Deployment::default();
        d.spec.replicas = replicas;
        d.status = status;
        d
    }

    #[test]
    fn only_the_observed_generation_rolled_out_is_done() {
        let done = DeploymentStatus {
            replicas: 2,
            updated: 2,
            available: 2,
            updated_available: 2,
            revision: 1,
            generation: 1,
            observed_generation: 1,
            ..Default::default()
        };
        assert_eq!(status_line("web", &dep(2, done.clone())).1, Some(Ok(())));
        // Just applied: the old revision's counts describe the old spec.
        let applied = DeploymentStatus {
            generation: 2,
            ..done.clone()
        };
        let (line, end) = status_line("web", &dep(2, applied));
        assert!(end.is_none() && line.contains("spec update"), "{line}");
        let rolling = DeploymentStatus {
            updated: 1,
            replicas: 3,
            updated_available: 0,
            ..done.clone()
        };
        let (line, end) = status_line("web", &dep(2, rolling));
        assert!(
            end.is_none() && line.contains("1 of 2 new replicas"),
            "{line}"
        );
        let old_left = DeploymentStatus {
            replicas: 3,
            ..done.clone()
        };
        let (line, _) = status_line("web", &dep(2, old_left));
        assert!(line.contains("1 old replicas"), "{line}");
        let unavailable = DeploymentStatus {
            updated_available: 1,
            ..done.clone()
        };
        let (line, _) = status_line("web", &dep(2, unavailable));
        assert!(
            line.contains("1 of 2 updated replicas are available"),
            "{line}"
        );
        let stalled = DeploymentStatus {
            updated_available: 0,
            stalled: true,
            message: "stalled: no progress for 5s".into(),
            ..done
        };
        let (_, end) = status_line("web", &dep(2, stalled));
        assert!(matches!(end, Some(Err(e)) if e.contains("progress deadline")));
    }
}
