//! `bramble edit KIND NAME`: the object's YAML in `$EDITOR`, applied back with the revision
//! read as the precondition (a change made meanwhile is a conflict, and the edit is kept).

use std::io::Write;
use std::path::{Path, PathBuf};

use bramble_client::doc;
use bramble_wire::msg::{ErrorCode, RequestBody, ResponseBody};
use bramble_wire::objects::Kind;

use super::{Client, ClientError, usage};

const HEADER: &str = "# Edit, save and quit to apply; an unchanged file cancels.\n\
# metadata.revision is the revision read: if the object changes meanwhile, the apply is refused.\n";

/// Runs `bramble edit`.
pub async fn run(
    c: &mut Client,
    kind: &Kind,
    name: &str,
    namespace: &str,
    out: &mut impl Write,
) -> Result<(), ClientError> {
    let kind = *kind;
    let ResponseBody::Object(o) = c
        .call(RequestBody::Get {
            kind,
            namespace: namespace.into(),
            name: name.into(),
        })
        .await?
    else {
        return Err(usage(format!("{} {name:?} not found", kind.as_str())));
    };
    if !bramble_client::validate::client_may_apply(kind) {
        return Err(usage(format!(
            "{} objects are the master's to write: they cannot be edited",
            kind.as_str()
        )));
    }
    let what = format!("{}/{name}", kind.as_str());
    let original = format!("{HEADER}{}", doc::to_yaml(&doc::to_doc(&o, true)));
    let path = temp_file(kind, name, &original)
        .map_err(|e| usage(format!("cannot write the file to edit: {e}")))?;
    run_editor(&path).map_err(usage)?;
    let edited = std::fs::read_to_string(&path)
        .map_err(|e| usage(format!("cannot read back {}: {e}", path.display())))?;
    let has_content = edited
        .lines()
        .any(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'));
    if edited == original || !has_content {
        let _ = std::fs::remove_file(&path);
        let _ = writeln!(out, "Edit cancelled, no changes made.");
        return Ok(());
    }
    let kept = |e: String| {
        usage(format!(
            "{what}: {e}\nyour edit is kept in {}: fix it and `bramble apply -f {}`, or run `bramble edit {} {name}` again",
            path.display(),
            path.display(),
            kind.as_str()
        ))
    };
    let objs = doc::parse(&edited, &path.display().to_string(), namespace).map_err(kept)?;
    let [new] = objs.as_slice() else {
        return Err(kept("the file must hold the one object edited".into()));
    };
    if new.kind() != kind
        || new.meta().name != name
        || (kind.namespaced() && new.meta().namespace != o.meta().namespace)
    {
        return Err(kept(format!(
            "kind, name and namespace cannot change in an edit (now {}/{} in {:?})",
            new.kind().as_str(),
            new.meta().name,
            new.meta().namespace
        )));
    }
    let mut objs = objs;
    // The precondition is the revision read, unless the user changed it in the file.
    let as_read = objs[0].meta().revision == o.meta().revision;
    let mut tries = 0;
    loop {
        match super::apply_objects(c, objs.clone(), out).await {
            Ok(()) => {
                let _ = std::fs::remove_file(&path);
                return Ok(());
            }
            Err(ClientError::Api(e)) if e.code == ErrorCode::Conflict => {
                // Only the system wrote meanwhile (a status): the edit still applies to what
                // the user read; take the new revision. Anything else is the user's conflict.
                let now = match c
                    .call(RequestBody::Get {
                        kind,
                        namespace: namespace.into(),
                        name: name.into(),
                    })
                    .await
                {
                    Ok(ResponseBody::Object(now)) => Some(now),
                    _ => None,
                };
                match now {
                    Some(now)
                        if tries < 5 && as_read && doc::user_part(&now) == doc::user_part(&o) =>
                    {
                        tries += 1;
                        objs[0].meta_mut().revision = now.meta().revision;
                    }
                    _ => {
                        return Err(kept(format!(
                            "changed since you read it at revision {} ({}); nothing was applied",
                            o.meta().revision,
                            e.message
                        )));
                    }
                }
            }
            Err(ClientError::Api(e)) => return Err(kept(e.message)),
            Err(e) => return Err(e),
        }
    }
}

/// A new file, readable by its owner only (a secret's values are in it).
fn temp_file(kind: Kind, name: &str, text: &str) -> std::io::Result<PathBuf> {
    use std::os::unix::fs::OpenOptionsExt;
    let dir = std::env::temp_dir();
    for i in 0..100u32 {
        let p = dir.join(format!(
            "bramble-edit-{}-{name}-{}-{i}.yaml",
            kind.as_str(),
            std::process::id()
        ));
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&p)
        {
            Ok(mut f) => {
                f.write_all(text.as_bytes())?;
                return Ok(p);
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(std::io::Error::other("no free temporary file name"))
}

/// `$VISUAL`, else `$EDITOR`, else `vi`, through the shell (so `EDITOR="code -w"` works).
fn run_editor(path: &Path) -> Result<(), String> {
    let editor = ["VISUAL", "EDITOR"]
        .iter()
        .find_map(|v| std::env::var(v).ok().filter(|s| !s.trim().is_empty()))
        .unwrap_or_else(|| "vi".into());
    let status = std::process::Command::new("/bin/sh")
        .arg("-c")
        .arg(format!("{editor} \"$1\""))
        .arg("sh")
        .arg(path)
        .status()
        .map_err(|e| format!("cannot run the editor {editor:?}: {e}"))?;
    if !status.success() {
        return Err(format!(
            "the editor {editor:?} failed ({status}); nothing was applied (the file is {})",
            path.display()
        ));
    }
    Ok(())
}
