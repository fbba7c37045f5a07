//! Secrets at rest (k3s's `--secrets-encryption`, on by default): the stored value of every
//! Secret object (its JSON, in the log and its history) is sealed with AES-256-GCM under a key
//! kept in `DATA_DIR/secrets.key` (32 random bytes, hex, mode 0600), so a copy of `bramble.db`
//! alone (a backup, a disk image) does not reveal them. Values look like
//! `sealed:v1:<hex of nonce ‖ ciphertext ‖ tag>`; other kinds stay readable JSON.
//!
//! At open, secrets written unsealed (by an older master) are sealed in place. A database that
//! holds sealed values but whose key file is missing refuses to open, naming the file to restore:
//! making a new key would lose every secret.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bramble_wire::objects::Kind;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};

use super::StoreError;

/// The key file's name inside the data directory.
pub const KEY_FILE: &str = "secrets.key";
/// The prefix of a sealed value.
pub const PREFIX: &str = "sealed:v1:";
const AAD: &[u8] = b"bramble secret v1";

/// Seals and opens Secret values (cheap to clone).
#[derive(Clone)]
pub struct Sealer {
    key: Arc<LessSafeKey>,
    rng: SystemRandom,
    path: PathBuf,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Sealer({})", self.path.display())
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_owned(),
        source,
    }
}

impl Sealer {
    /// Loads `data_dir/secrets.key`, or creates it when `has_sealed` is false (no sealed value
    /// exists that a new key could not open).
    pub fn load_or_create(data_dir: &Path, has_sealed: bool) -> Result<Sealer, StoreError> {
        let path = data_dir.join(KEY_FILE);
        let bytes = match fs::read_to_string(&path) {
            Ok(text) => unhex(text.trim())
                .filter(|b| b.len() == 32)
                .ok_or_else(|| StoreError::SecretsKey {
                    path: path.clone(),
                    reason: "it is not 64 hex digits (a 256-bit key)".into(),
                })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if has_sealed {
                    return Err(StoreError::SecretsKey {
                        path,
                        reason: "it is missing, and the database holds secrets sealed with it; \
                                 restore the file from the backup of this data directory (a new \
                                 key would make every secret unreadable)"
                            .into(),
                    });
                }
                let mut key = [0u8; 32];
                SystemRandom::new()
                    .fill(&mut key)
                    .map_err(|_| StoreError::SecretsKey {
                        path: path.clone(),
                        reason: "the system's random generator failed".into(),
                    })?;
                let mut f = fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&path)
                    .map_err(io(&path))?;
                f.write_all(format!("{}\n", hex(&key)).as_bytes())
                    .and_then(|()| f.sync_all())
                    .map_err(io(&path))?;
                key.to_vec()
            }
            Err(e) => return Err(io(&path)(e)),
        };
        // The file holds the key: keep it private even if it was created by hand.
        let _ = fs::set_permissions(&path, fs::Permissions::from_mode(0o600));
        let key = UnboundKey::new(&AES_256_GCM, &bytes).map_err(|_| StoreError::SecretsKey {
            path: path.clone(),
            reason: "not a usable AES-256 key".into(),
        })?;
        Ok(Sealer {
            key: Arc::new(LessSafeKey::new(key)),
            rng: SystemRandom::new(),
            path,
        })
    }

    /// The stored form of an object's JSON: sealed for secrets, as it is for other kinds.
    pub fn seal(&self, kind: Kind, json: String, revision: u64) -> Result<String, StoreError> {
        if kind != Kind::Secret {
            return Ok(json);
        }
        let mut nonce = [0u8; NONCE_LEN];
        self.rng
            .fill(&mut nonce)
            .map_err(|_| self.failed(revision, "the system's random generator failed"))?;
        let mut buf = json.into_bytes();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(AAD),
                &mut buf,
            )
            .map_err(|_| self.failed(revision, "sealing failed"))?;
        Ok(format!("{PREFIX}{}{}", hex(&nonce), hex(&buf)))
    }

    /// The JSON of a stored value (sealed or not).
    pub fn open<'a>(
        &self,
        value: &'a str,
        revision: u64,
    ) -> Result<std::borrow::Cow<'a, str>, StoreError> {
        let Some(sealed) = value.strip_prefix(PREFIX) else {
            return Ok(std::borrow::Cow::Borrowed(value));
        };
        let bytes = unhex(sealed)
            .filter(|b| b.len() > NONCE_LEN)
            .ok_or_else(|| self.failed(revision, "the sealed value is damaged"))?;
        let (nonce, rest) = bytes.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce)
            .map_err(|_| self.failed(revision, "the sealed value is damaged"))?;
        let mut rest = rest.to_vec();
        let plain = self
            .key
            .open_in_place(nonce, Aad::from(AAD), &mut rest)
            .map_err(|_| {
                self.failed(
                    revision,
                    "it does not open with this key (was secrets.key replaced? restore the one \
                     the database was written with)",
                )
            })?;
        String::from_utf8(plain.to_vec())
            .map(std::borrow::Cow::Owned)
            .map_err(|_| self.failed(revision, "the opened value is not text"))
    }

    fn failed(&self, revision: u64, reason: &str) -> StoreError {
        StoreError::Sealed {
            revision,
            key: self.path.clone(),
            reason: reason.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seals_secrets_only_and_opens_them() {
        let dir = tempfile::tempdir().unwrap();
        let s = Sealer::load_or_create(dir.path(), false).unwrap();
        let mode = fs::metadata(dir.path().join(KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let json = r#"{"Secret":{"data":{"k":[104,105]}}}"#.to_string();
        let sealed = s.seal(Kind::Secret, json.clone(), 1).unwrap();
        assert!(
            sealed.starts_with(PREFIX) && !sealed.contains("data"),
            "{sealed}"
        );
        assert_ne!(
            sealed,
            s.seal(Kind::Secret, json.clone(), 1).unwrap(),
            "fresh nonces"
        );
        assert_eq!(s.open(&sealed, 1).unwrap(), json);
        assert_eq!(s.seal(Kind::Pod, json.clone(), 1).unwrap(), json);
        assert_eq!(
            s.open(&json, 1).unwrap(),
            json,
            "unsealed values pass through"
        );
        // The same key file opens it again; a damaged value or another key does not.
        let again = Sealer::load_or_create(dir.path(), true).unwrap();
        assert_eq!(again.open(&sealed, 1).unwrap(), json);
        let mut bad = sealed.clone();
        let last = bad.pop().unwrap();
        bad.push(if last == '0' { '1' } else { '0' });
        assert!(again.open(&bad, 1).is_err());
        let other = tempfile::tempdir().unwrap();
        let e = Sealer::load_or_create(other.path(), false)
            .unwrap()
            .open(&sealed, 7)
            .unwrap_err()
            .to_string();
        assert!(e.contains("revision 7") && e.contains("restore"), "{e}");
    }

    #[test]
    fn a_missing_key_with_sealed_values_refuses() {
        let dir = tempfile::tempdir().unwrap();
        let e = Sealer::load_or_create(dir.path(), true)
            .unwrap_err()
            .to_string();
        assert!(e.contains("secrets.key") && e.contains("restore"), "{e}");
        fs::write(dir.path().join(KEY_FILE), "zz\n").unwrap();
        let e = Sealer::load_or_create(dir.path(), false)
            .unwrap_err()
            .to_string();
        assert!(e.contains("64 hex digits"), "{e}");
    }
}
