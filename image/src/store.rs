//! PLACEHOLDER: content-addressed blobs under `DATA_DIR/artifacts/<sha256 hex>` (the artifact
//! store's directory and naming).

use std::io::{Read, Write};
use std::path::PathBuf;

use bramble_artifact::{Sha256, is_sha256_hex};

/// Why a blob could not be stored or read.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Not a sha256.
    #[error("{0:?} is not a sha256 (64 lowercase hex characters)")]
    BadDigest(String),
    /// Over the size limit.
    #[error("blob {sha256} is over the {max}-byte limit (bramble master --max-artifact-size)")]
    TooLarge {
        /// Blob.
        sha256: String,
        /// Limit.
        max: u64,
    },
    /// The content does not hash to the name.
    #[error("blob {want}: the content's sha256 is {got}; it was discarded")]
    Mismatch {
        /// Announced.
        want: String,
        /// Computed.
        got: String,
    },
    /// The size differs from the expected one.
    #[error("blob {sha256}: {got} bytes, expected {want}")]
    Size {
        /// Blob.
        sha256: String,
        /// Expected.
        want: u64,
        /// Got.
        got: u64,
    },
    /// Not in the store.
    #[error("blob {0} is not in the master's store")]
    Missing(String),
    /// I/O.
    #[error("blob {sha256}: {source}")]
    Io {
        /// Blob.
        sha256: String,
        /// Cause.
        source: std::io::Error,
    },
}

/// The blob directory.
#[derive(Debug, Clone)]
pub struct BlobStore {
    dir: PathBuf,
}

impl BlobStore {
    /// A store in `dir` (created on the first put).
    pub fn new(dir: impl Into<PathBuf>) -> BlobStore {
        BlobStore { dir: dir.into() }
    }

    /// Where blob `sha256` lives.
    pub fn path(&self, sha256: &str) -> PathBuf {
        self.dir.join(sha256)
    }

    /// Whether blob `sha256` is stored.
    pub fn has(&self, sha256: &str) -> bool {
        is_sha256_hex(sha256) && self.path(sha256).is_file()
    }

    /// Streams `r` into `<sha>.partial` hashing on the way; refuses over `max` bytes or a digest
    /// mismatch (partial removed); fsync, rename to `<sha>`, fsync the dir. Returns the size.
    pub fn put(
        &self,
        sha256: &str,
        expected_size: Option<u64>,
        max: u64,
        r: &mut dyn Read,
        progress: &mut dyn FnMut(u64),
    ) -> Result<u64, StoreError> {
        if !is_sha256_hex(sha256) {
            return Err(StoreError::BadDigest(sha256.to_string()));
        }
        let io = |source| StoreError::Io {
            sha256: sha256.to_string(),
            source,
        };
        std::fs::create_dir_all(&self.dir).map_err(io)?;
        let partial = self.dir.join(format!("{sha256}.partial"));
        let res = (|| {
            let mut f = std::fs::File::create(&partial).map_err(io)?;
            let mut hash = Sha256::new();
            let mut buf = vec![0u8; 64 * 1024];
            let mut n: u64 = 0;
            loop {
                let k = r.read(&mut buf).map_err(io)?;
                if k == 0 {
                    break;
                }
                n += k as u64;
                if n > max {
                    return Err(StoreError::TooLarge {
                        sha256: sha256.to_string(),
                        max,
                    });
                }
                hash.update(&buf[..k]);
                f.write_all(&buf[..k]).map_err(io)?;
                progress(n);
            }
            if let Some(want) = expected_size
                && want != n
            {
                return Err(StoreError::Size {
                    sha256: sha256.to_string(),
                    want,
                    got: n,
                });
            }
            let got = hash.finish_hex();
            if got != sha256 {
                return Err(StoreError::Mismatch {
                    want: sha256.to_string(),
                    got,
                });
            }
            f.sync_all().map_err(io)?;
            drop(f);
            std::fs::rename(&partial, self.path(sha256)).map_err(io)?;
            std::fs::File::open(&self.dir)
                .and_then(|d| d.sync_all())
                .map_err(io)?;
            Ok(n)
        })();
        if res.is_err() {
            let _ = std::fs::remove_file(&partial);
        }
        res
    }

    /// Reads a small blob (a manifest or config) whole, up to `max` bytes.
    pub fn read_small(&self, sha256: &str, max: u64) -> Result<Vec<u8>, StoreError> {
        if !is_sha256_hex(sha256) {
            return Err(StoreError::BadDigest(sha256.to_string()));
        }
        let f = match std::fs::File::open(self.path(sha256)) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(StoreError::Missing(sha256.to_string()));
            }
            Err(source) => {
                return Err(StoreError::Io {
                    sha256: sha256.to_string(),
                    source,
                });
            }
        };
        let mut out = Vec::new();
        f.take(max + 1)
            .read_to_end(&mut out)
            .map_err(|source| StoreError::Io {
                sha256: sha256.to_string(),
                source,
            })?;
        if out.len() as u64 > max {
            return Err(StoreError::TooLarge {
                sha256: sha256.to_string(),
                max,
            });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn put_verifies_and_renames() {
        let d = tempfile::tempdir().unwrap();
        let s = BlobStore::new(d.path());
        let data = b"hello";
        let sha = bramble_artifact::sha256_hex(data);
        let n = s
            .put(&sha, Some(5), 100, &mut &data[..], &mut |_| {})
            .unwrap();
        assert_eq!(n, 5);
        assert!(s.has(&sha));
        assert_eq!(s.read_small(&sha, 10).unwrap(), data);
        let wrong = "0".repeat(64);
        assert!(matches!(
            s.put(&wrong, None, 100, &mut &data[..], &mut |_| {}),
            Err(StoreError::Mismatch { .. })
        ));
        assert!(!s.has(&wrong));
        assert!(!d.path().join(format!("{wrong}.partial")).exists());
        assert!(matches!(
            s.put(&sha, None, 2, &mut &data[..], &mut |_| {}),
            Err(StoreError::TooLarge { .. })
        ));
    }
}
