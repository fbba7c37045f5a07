//! The assignment set on disk: versioned and written durably ([`crate::persist`]) and only when
//! it changes, so an idle node writes nothing to its SD card. A file of an older format (an
//! upgrade) is read and rewritten in the current one, so the node keeps its pods offline.

use std::fs;
use std::path::PathBuf;

use bramble_wire::msg::Assignment;

use crate::persist::{self, StateDir};

/// Persisted desired state.
#[derive(Debug)]
pub struct StateFile {
    path: PathBuf,
    corrupt: PathBuf,
    last: Option<Vec<u8>>,
}

impl StateFile {
    /// The assignment file of `dir`.
    pub fn new(dir: &StateDir) -> StateFile {
        StateFile {
            path: dir.assignment(),
            corrupt: dir.assignment_corrupt(),
            last: None,
        }
    }

    /// Loads the last assignment, if any, migrating an older format. A corrupt file is renamed
    /// aside and reported.
    pub fn load(&mut self) -> std::io::Result<Option<Assignment>> {
        let bytes = match fs::read(&self.path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        match persist::decode_postcard::<Assignment>(persist::ASSIGNMENT, &bytes) {
            Ok((version, a)) if version == persist::ASSIGNMENT_V => {
                self.last = Some(bytes);
                Ok(Some(a))
            }
            Ok((version, a)) => {
                tracing::info!(
                    from = version,
                    to = persist::ASSIGNMENT_V,
                    "migrating the saved assignment to the current format"
                );
                if let Err(e) = self.save(&a) {
                    tracing::warn!("cannot rewrite {}: {e}", self.path.display());
                }
                Ok(Some(a))
            }
            Err(e) => {
                let _ = fs::rename(&self.path, &self.corrupt);
                tracing::error!(
                    "state file {} is unreadable ({e}); moved to {} and starting with no pods until the master sends them",
                    self.path.display(),
                    self.corrupt.display()
                );
                Ok(None)
            }
        }
    }

    /// Saves `a` if it differs from what is on disk. Returns whether it wrote.
    pub fn save(&mut self, a: &Assignment) -> std::io::Result<bool> {
        let bytes = persist::encode_postcard(persist::ASSIGNMENT, a)?;
        if self.last.as_ref() == Some(&bytes) {
            return Ok(false);
        }
        persist::write_file(&self.path, &bytes, 0o644)?;
        self.last = Some(bytes);
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn save_only_on_change_and_reload() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = StateDir::new(tmp.path().join("state"));
        let mut s = StateFile::new(&dir);
        assert!(s.load().unwrap().is_none());
        let a = Assignment {
            revision: 3,
            ..Default::default()
        };
        assert!(s.save(&a).unwrap());
        assert!(
            !s.save(&a).unwrap(),
            "unchanged state must not be rewritten"
        );
        let mut s2 = StateFile::new(&dir);
        assert_eq!(s2.load().unwrap(), Some(a));
        fs::write(dir.assignment(), b"\xff\xff\xff").unwrap();
        let mut s3 = StateFile::new(&dir);
        assert_eq!(s3.load().unwrap(), None);
        assert!(dir.assignment_corrupt().exists());
    }

    #[test]
    fn an_unversioned_file_is_read_and_migrated() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = StateDir::new(tmp.path());
        let a = Assignment {
            revision: 9,
            ..Default::default()
        };
        fs::write(dir.assignment(), postcard::to_allocvec(&a).unwrap()).unwrap();
        let mut s = StateFile::new(&dir);
        assert_eq!(s.load().unwrap(), Some(a.clone()));
        let now = fs::read(dir.assignment()).unwrap();
        assert!(now.starts_with(b"bramble assignment v4\n"), "migrated");
        assert!(!s.save(&a).unwrap(), "nothing more to write");
    }
}
