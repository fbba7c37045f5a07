//! `bramble rollout status|history|undo deployment NAME`.

use std::io::Write;
use std::time::Instant;

use bramble_wire::msg::{RequestBody, ResponseBody};
use bramble_wire::objects::{Kind, Object, ReplicaSet};

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
                let want = d.spec.replicas;
                let s = &d.status;
                let done = s.updated >= want
                    && s.available >= want
                    && s.replicas == want
                    && s.revision > 0;
                let line = if done {
                    format!(
                        "deployment {name:?} successfully rolled out (revision {})",
                        s.revision
                    )
                } else if s.updated < want {
                    format!(
                        "waiting for rollout: {} of {want} new replicas updated, {} available...",
                        s.updated, s.available
                    )
                } else if s.replicas > want {
                    format!(
                        "waiting for rollout: {} old replicas pending termination...",
                        s.replicas - want
                    )
                } else {
                    format!(
                        "waiting for rollout: {} of {want} updated replicas available...",
                        s.available
                    )
                };
                if line != last {
                    let _ = writeln!(out, "{line}");
                    let _ = out.flush();
                    last = line;
                }
                if done {
                    return Ok(());
                }
                if t0.elapsed() > timeout {
                    return Err(usage(format!(
                        "deployment {name:?} did not finish rolling out within {timeout:?}: {}",
                        s.message
                    )));
                }
                smol::Timer::after(std::time::Duration::from_millis(200)).await;
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
