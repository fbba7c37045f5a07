//! Tokens: the admin token (CLI) and the join token (workers), generated at first start.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Reads `path`, or creates it with a fresh random token (mode 0600) if it does not exist, written
/// as `K10<pin>::<token>`; returns the token without the pin.
pub fn load_or_create(path: &Path, pin: &str) -> anyhow::Result<String> {
    match fs::read_to_string(path) {
        Ok(s) => {
            let t = credential_of(&s, path)?;
            anyhow::ensure!(
                (16..=128).contains(&t.len()) && t.bytes().all(|b| b.is_ascii_graphic()),
                "{}: a token must be 16-128 printable ASCII characters; delete the file to have a new one generated",
                path.display()
            );
            Ok(t)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let t = random_hex(24)?;
            if let Some(dir) = path.parent() {
                fs::create_dir_all(dir)?;
            }
            let mut f = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)?;
            writeln!(f, "{}", super::tls::pinned_token(pin, &t))?;
            f.sync_all()?;
            fs::set_permissions(path, fs::Permissions::from_mode(0o600))?;
            Ok(t)
        }
        Err(e) => Err(anyhow::anyhow!(
            "cannot read token file {}: {e}",
            path.display()
        )),
    }
}

/// Reads a token file given on the command line.
pub fn read_token(path: &Path) -> anyhow::Result<String> {
    let t = fs::read_to_string(path).map_err(|e| {
        anyhow::anyhow!("cannot read token file {}: {e}; pass --token-file with the master's DATA_DIR/admin.token", path.display())
    })?;
    credential_of(&t, path)
}

/// The credential of a token file's text (without its `K10<pin>::` prefix).
fn credential_of(text: &str, path: &Path) -> anyhow::Result<String> {
    bramble_wire::token::split_token(text)
        .map(|p| p.credential.to_string())
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

/// `n` random bytes as hex, from the kernel's CSPRNG.
pub fn random_hex(n: usize) -> anyhow::Result<String> {
    let mut buf = vec![0u8; n];
    fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut buf))
        .map_err(|e| anyhow::anyhow!("cannot read /dev/urandom: {e}"))?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

/// Compares tokens in time independent of where they differ.
pub fn token_eq(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Default token paths under the data dir.
pub fn default_paths(data_dir: &Path) -> (PathBuf, PathBuf) {
    (data_dir.join("admin.token"), data_dir.join("join.token"))
}
