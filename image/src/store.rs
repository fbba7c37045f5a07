//! The master's content-addressed blob store: `DATA_DIR/artifacts/<sha256 hex>`, the same
//! directory and naming as artifact tarballs, so image layers, manifests and configs are
//! deduplicated with each other and with artifacts.
//!
//! [`BlobStore::put`] streams into a private temporary file
//! (`.<sha256>.<pid>-<n>.partial`, unique per writer so two pulls of one layer at once never
//! share a file, and never matched by the artifact GC which only removes 64-hex names), hashing
//! on the way; a digest mismatch, a size over the limit or a read error removes it. On success:
//! fsync, rename to `<sha256>`, fsync the directory. Nothing half-written is ever visible under a
//! blob's name.

use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use bramble_artifact::{Sha256, is_sha256_hex};

/// Why a blob could not be stored or read.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The name is not 64 lowercase hex characters.
    #[error("{0:?} is not a sha256 (64 lowercase hex characters)")]
    BadDigest(String),
    /// More bytes than allowed.
    #[error("blob sha256:{sha256} is over the {max}-byte limit")]
    TooLarge {
        /// The blob.
        sha256: String,
        /// The limit.
        max: u64,
    },
    /// The content does not hash to the announced digest.
    #[error(
        "blob sha256:{sha256}: digest mismatch: the content hashes to sha256:{actual} (corrupted at the source or tampered with in transit)"
    )]
    DigestMismatch {
        /// The announced digest.
        sha256: String,
        /// What the bytes hash to.
        actual: String,
    },
    /// Not the announced size.
    #[error("blob sha256:{sha256}: {actual} bytes, the manifest says {expected}")]
    SizeMismatch {
        /// The blob.
        sha256: String,
        /// Announced.
        expected: u64,
        /// Received.
        actual: u64,
    },
    /// The blob is not in the store.
    #[error("blob sha256:{0} is not in the store")]
    Missing(String),
    /// Reading the source failed (network error while streaming).
    #[error("blob sha256:{sha256}: reading failed after {done} bytes: {source}")]
    Read {
        /// The blob.
        sha256: String,
        /// Bytes read before the error.
        done: u64,
        /// The error.
        source: io::Error,
    },
    /// A local file system error.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The error.
        source: io::Error,
    },
}

impl StoreError {
    /// Whether the failure came from the source (network), so retrying may help.
    pub fn is_read(&self) -> bool {
        matches!(self, StoreError::Read { .. })
    }
}

/// A directory of blobs named by their sha256.
#[derive(Debug, Clone)]
pub struct BlobStore {
    dir: PathBuf,
}

static SEQ: AtomicU64 = AtomicU64::new(0);

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Removes the temporary file unless disarmed.
struct Partial<'a> {
    path: &'a Path,
    armed: bool,
}

impl Drop for Partial<'_> {
    fn drop(&mut self) {
        if self.armed {
            let _ = fs::remove_file(self.path);
        }
    }
}

impl BlobStore {
    /// A store over `dir` (created on the first `put`).
    pub fn new(dir: impl Into<PathBuf>) -> BlobStore {
        BlobStore { dir: dir.into() }
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `DIR/<sha256>`.
    pub fn path(&self, sha256: &str) -> PathBuf {
        self.dir.join(sha256)
    }

    /// Whether the blob is stored.
    pub fn has(&self, sha256: &str) -> bool {
        is_sha256_hex(sha256) && self.path(sha256).is_file()
    }

    /// The stored blob's size, if present.
    pub fn size(&self, sha256: &str) -> Option<u64> {
        if !is_sha256_hex(sha256) {
            return None;
        }
        fs::metadata(self.path(sha256))
            .ok()
            .filter(|m| m.is_file())
            .map(|m| m.len())
    }

    /// Streams `r` into the store as `sha256`, hashing on the way; refuses more than `max` bytes,
    /// a size other than `expected_size` or a digest mismatch (the temporary file is removed).
    /// On success: fsync, rename to `<sha256>`, fsync the directory. Returns the size.
    /// `progress` gets the bytes written so far after each chunk.
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
        if let Some(e) = expected_size
            && e > max
        {
            return Err(StoreError::TooLarge {
                sha256: sha256.to_string(),
                max,
            });
        }
        fs::create_dir_all(&self.dir).map_err(io_err(&self.dir))?;
        let tmp = self.dir.join(format!(
            ".{sha256}.{}-{}.partial",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        let mut guard = Partial {
            path: &tmp,
            armed: true,
        };
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .map_err(io_err(&tmp))?;
        let mut hash = Sha256::new();
        let mut done: u64 = 0;
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let n = match r.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(source) => {
                    return Err(StoreError::Read {
                        sha256: sha256.to_string(),
                        done,
                        source,
                    });
                }
            };
            done += n as u64;
            if done > max {
                return Err(StoreError::TooLarge {
                    sha256: sha256.to_string(),
                    max,
                });
            }
            if let Some(e) = expected_size
                && done > e
            {
                return Err(StoreError::SizeMismatch {
                    sha256: sha256.to_string(),
                    expected: e,
                    actual: done,
                });
            }
            hash.update(&buf[..n]);
            f.write_all(&buf[..n]).map_err(io_err(&tmp))?;
            progress(done);
        }
        if let Some(e) = expected_size
            && done != e
        {
            return Err(StoreError::SizeMismatch {
                sha256: sha256.to_string(),
                expected: e,
                actual: done,
            });
        }
        let actual = hash.finish_hex();
        if actual != sha256 {
            return Err(StoreError::DigestMismatch {
                sha256: sha256.to_string(),
                actual,
            });
        }
        f.sync_all().map_err(io_err(&tmp))?;
        drop(f);
        let dest = self.path(sha256);
        fs::rename(&tmp, &dest).map_err(io_err(&dest))?;
        guard.armed = false;
        fs::File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(io_err(&self.dir))?;
        Ok(done)
    }

    /// Stores `bytes` (a manifest or config already in memory) as `sha256`.
    pub fn put_bytes(&self, sha256: &str, bytes: &[u8]) -> Result<u64, StoreError> {
        let mut r = bytes;
        self.put(
            sha256,
            Some(bytes.len() as u64),
            bytes.len() as u64,
            &mut r,
            &mut |_| {},
        )
    }

    /// Reads a small blob (a manifest or config) whole, refusing one over `max` bytes.
    pub fn read_small(&self, sha256: &str, max: u64) -> Result<Vec<u8>, StoreError> {
        if !is_sha256_hex(sha256) {
            return Err(StoreError::BadDigest(sha256.to_string()));
        }
        let p = self.path(sha256);
        let f = match fs::File::open(&p) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(StoreError::Missing(sha256.to_string()));
            }
            Err(e) => return Err(io_err(&p)(e)),
        };
        let mut out = Vec::new();
        f.take(max + 1).read_to_end(&mut out).map_err(io_err(&p))?;
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
    use bramble_artifact::sha256_hex;

    fn listing(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn put_and_read() {
        let d = tempfile::tempdir().unwrap();
        let s = BlobStore::new(d.path().join("artifacts"));
        let data = b"hello blob".repeat(100_000);
        let sha = sha256_hex(&data);
        assert!(!s.has(&sha));
        let mut seen = 0;
        let n = s
            .put(
                &sha,
                Some(data.len() as u64),
                1 << 30,
                &mut &data[..],
                &mut |d| seen = d,
            )
            .unwrap();
        assert_eq!(n, data.len() as u64);
        assert_eq!(seen, n);
        assert!(s.has(&sha));
        assert_eq!(s.size(&sha), Some(n));
        assert_eq!(fs::read(s.path(&sha)).unwrap(), data);
        assert_eq!(listing(s.dir()), vec![sha.clone()]);
        assert_eq!(s.read_small(&sha, n).unwrap(), data);
        assert!(matches!(
            s.read_small(&sha, n - 1),
            Err(StoreError::TooLarge { .. })
        ));
        assert!(matches!(
            s.read_small(&"0".repeat(64), 10),
            Err(StoreError::Missing(_))
        ));
    }

    #[test]
    fn refusals_leave_nothing() {
        let d = tempfile::tempdir().unwrap();
        let s = BlobStore::new(d.path());
        let data = vec![7u8; 10_000];
        let sha = sha256_hex(&data);
        let wrong = sha256_hex(b"other");
        let e = s
            .put(&wrong, None, 1 << 20, &mut &data[..], &mut |_| {})
            .unwrap_err();
        assert!(matches!(e, StoreError::DigestMismatch { .. }), "{e}");
        assert!(e.to_string().contains(&sha), "{e}");
        let e = s
            .put(&sha, None, 9_999, &mut &data[..], &mut |_| {})
            .unwrap_err();
        assert!(matches!(e, StoreError::TooLarge { max: 9_999, .. }), "{e}");
        let e = s
            .put(&sha, Some(5), 1 << 20, &mut &data[..], &mut |_| {})
            .unwrap_err();
        assert!(matches!(e, StoreError::SizeMismatch { .. }), "{e}");
        let e = s
            .put(&sha, Some(20_000), 1 << 20, &mut &data[..], &mut |_| {})
            .unwrap_err();
        assert!(matches!(e, StoreError::SizeMismatch { .. }), "{e}");
        // Announced over the limit: refused before reading.
        let e = s
            .put(&sha, Some(1 << 21), 1 << 20, &mut &data[..], &mut |_| {})
            .unwrap_err();
        assert!(matches!(e, StoreError::TooLarge { .. }), "{e}");
        // A failing reader.
        struct Failing(u32);
        impl Read for Failing {
            fn read(&mut self, b: &mut [u8]) -> io::Result<usize> {
                if self.0 == 0 {
                    return Err(io::Error::new(io::ErrorKind::ConnectionReset, "reset"));
                }
                self.0 -= 1;
                b[0] = 1;
                Ok(1)
            }
        }
        let e = s
            .put(&sha, None, 1 << 20, &mut Failing(3), &mut |_| {})
            .unwrap_err();
        assert!(e.is_read(), "{e}");
        assert!(e.to_string().contains("after 3 bytes"), "{e}");
        assert!(matches!(
            s.put("nothex", None, 1, &mut &data[..], &mut |_| {}),
            Err(StoreError::BadDigest(_))
        ));
        assert!(listing(d.path()).is_empty(), "{:?}", listing(d.path()));
        // And a good put of the same blob still works.
        s.put_bytes(&sha, &data).unwrap();
        assert_eq!(listing(d.path()), vec![sha]);
    }
}
