//! `bramble label|annotate KIND NAME k=v k2-` and `bramble cordon|uncordon NODE`: the master
//! applies each change to the stored object with the revision it read (`RequestBody::Patch`),
//! again on a conflict, so nothing written meanwhile is lost.

use std::io::Write;

use bramble_wire::msg::{ApplyOutcome, MetaPatch, RequestBody, ResponseBody};
use bramble_wire::objects::Kind;

use super::{Client, ClientError, parse_kind, usage};

/// Sends one patch and prints kubectl's line (`node/pi1 labeled`, `… unchanged`).
pub async fn run(
    c: &mut Client,
    kind: &str,
    name: &str,
    namespace: &str,
    patch: MetaPatch,
    done: &str,
    out: &mut impl Write,
) -> Result<(), ClientError> {
    let kind = parse_kind(kind)?;
    if patch.unschedulable.is_some() && kind != Kind::Node {
        return Err(usage(format!(
            "only nodes can be cordoned, not {}s",
            kind.as_str()
        )));
    }
    let res = c
        .call(RequestBody::Patch {
            kind,
            namespace: namespace.to_string(),
            name: name.to_string(),
            patch,
        })
        .await?;
    let ResponseBody::Applied(a) = res else {
        return Err(usage("unexpected answer to a label change".into()));
    };
    for a in a {
        let what = match a.outcome {
            ApplyOutcome::Unchanged => "unchanged",
            _ => done,
        };
        let _ = writeln!(out, "{}/{} {what}", a.kind.as_str(), a.name);
    }
    Ok(())
}
