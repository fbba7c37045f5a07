//! The node's own credential (`id.secret`), issued by the master when the node joined with a join
//! token. Kept in the state dir (mode 0600, written atomically) and sent in every later Hello
//! instead of the join token, which the master accepts only once per node name.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// File name of the credential in the state dir.
pub const FILE: &str = "node.credential";

/// Where the credential lives.
pub fn path(state_dir: &Path) -> PathBuf {
    state_dir.join(FILE)
}

/// The saved credential, if any (an unreadable or empty file counts as none, and is reported).
pub fn load(state_dir: &Path) -> Option<String> {
    let p = path(state_dir);
    match fs::read_to_string(&p) {
        Ok(s) if !s.trim().is_empty() => Some(s.trim().to_string()),
        Ok(_) => None,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => {
            tracing::error!("cannot read the node credential {}: {e}", p.display());
            None
        }
    }
}

/// What to send in the Hello: the saved credential, else the join token's credential part
/// (without a `K10<pin>::` prefix).
pub fn for_hello(state_dir: &Path, join_token: &str) -> String {
    load(state_dir).unwrap_or_else(|| match bramble_wire::token::split_token(join_token) {
        Ok(p) => p.credential.to_string(),
        Err(_) => join_token.trim().to_string(),
    })
}

/// Saves the credential atomically: a 0600 temporary file, fsync, rename, fsync of the dir.
pub fn save(state_dir: &Path, credential: &str) -> std::io::Result<()> {
    fs::create_dir_all(state_dir)?;
    let p = path(state_dir);
    let tmp = p.with_extension("tmp");
    let _ = fs::remove_file(&tmp);
    {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        f.set_permissions(fs::Permissions::from_mode(0o600))?;
        writeln!(f, "{}", credential.trim())?;
        f.sync_all()?;
    }
    fs::rename(&tmp, &p)?;
    fs::File::open(state_dir)?.sync_all()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saved_credential_replaces_the_join_token_and_is_private() {
        let dir = tempfile::tempdir().unwrap();
        let pin = "ab".repeat(32);
        let join = format!("K10{pin}::join-1.s3cret");
        assert_eq!(for_hello(dir.path(), &join), "join-1.s3cret");
        save(dir.path(), "node-2.other\n").unwrap();
        assert_eq!(for_hello(dir.path(), &join), "node-2.other");
        let mode = fs::metadata(path(dir.path())).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        save(dir.path(), "node-3.again").unwrap();
        assert_eq!(load(dir.path()).as_deref(), Some("node-3.again"));
    }
}
