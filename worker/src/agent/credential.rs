//! The node's own credential (`id.secret`), issued by the master when the node joined with a join
//! token. Kept in the state dir (mode 0600, versioned, written durably: [`crate::persist`]) and
//! sent in every later Hello instead of the join token, which the master accepts only once per
//! node name.

use std::path::PathBuf;

use crate::persist::{self, StateDir};

/// Where the credential lives.
pub fn path(state: &StateDir) -> PathBuf {
    state.credential()
}

/// The saved credential, if any (an unreadable or empty file counts as none, and is reported).
/// A file of an older format is rewritten in the current one.
pub fn load(state: &StateDir) -> Option<String> {
    let p = path(state);
    let bytes = match std::fs::read(&p) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => {
            tracing::error!("cannot read the node credential {}: {e}", p.display());
            return None;
        }
    };
    let (version, text) = match persist::decode_text(persist::CREDENTIAL, &bytes) {
        Ok(v) => v,
        Err(e) => {
            tracing::error!("cannot read the node credential {}: {e}", p.display());
            return None;
        }
    };
    let cred = text.trim().to_string();
    if cred.is_empty() {
        return None;
    }
    if version < persist::CREDENTIAL_V
        && let Err(e) = save(state, &cred)
    {
        tracing::warn!("cannot rewrite {} in the current format: {e}", p.display());
    }
    Some(cred)
}

/// What to send in the Hello: the saved credential, else the join token's credential part
/// (without a `K10<pin>::` prefix).
pub fn for_hello(state: &StateDir, join_token: &str) -> String {
    load(state).unwrap_or_else(|| match bramble_wire::token::split_token(join_token) {
        Ok(p) => p.credential.to_string(),
        Err(_) => join_token.trim().to_string(),
    })
}

/// Saves the credential (mode 0600, durably).
pub fn save(state: &StateDir, credential: &str) -> std::io::Result<()> {
    let text = format!("{}\n", credential.trim());
    persist::write_file(
        &path(state),
        &persist::encode(persist::CREDENTIAL, text.as_bytes()),
        0o600,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn saved_credential_replaces_the_join_token_and_is_private() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::new(dir.path());
        let pin = "ab".repeat(32);
        let join = format!("K10{pin}::join-1.s3cret");
        assert_eq!(for_hello(&state, &join), "join-1.s3cret");
        save(&state, "node-2.other\n").unwrap();
        assert_eq!(for_hello(&state, &join), "node-2.other");
        let mode = std::fs::metadata(path(&state))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        save(&state, "node-3.again").unwrap();
        assert_eq!(load(&state).as_deref(), Some("node-3.again"));
    }

    #[test]
    fn an_unversioned_credential_is_read_and_migrated() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::new(dir.path());
        std::fs::write(path(&state), "node-1.old\n").unwrap();
        assert_eq!(load(&state).as_deref(), Some("node-1.old"));
        assert_eq!(
            std::fs::read(path(&state)).unwrap(),
            b"bramble credential v1\nnode-1.old\n"
        );
        let mode = std::fs::metadata(path(&state))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
