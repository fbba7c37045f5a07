//! The assignment set on disk: written atomically (write, fsync, rename, fsync dir) and only when
//! it changes, so an idle node writes nothing to its SD card.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use bramble_wire::msg::Assignment;

/// File name of the persisted assignment.
pub const FILE: &str = "assignment.bin";

/// Persisted desired state.
#[derive(Debug)]
pub struct StateFile {
    path: PathBuf,
    last: Option<Vec<u8>>,
}

impl StateFile {
    /// The state file in `dir`.
    pub fn new(dir: &Path) -> StateFile {
        StateFile {
            path: dir.join(FILE),
            last: None,
        }
    }

    /// Loads the last assignment, if any. A corrupt file is renamed aside and reported.
    pub fn load(&mut self) -> std::io::Result<Option<Assignment>> {
        let bytes = match fs::read(&self.path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        match postcard::from_bytes::<Assignment>(&bytes) {
            Ok(a) => {
                self.last = Some(bytes);
                Ok(Some(a))
            }
            Err(e) => {
                let aside = self.path.with_extension("corrupt");
                let _ = fs::rename(&self.path, &aside);
                tracing::error!(
                    "state file {} is unreadable ({e}); moved to {} and starting with no pods until the master sends them",
                    self.path.display(),
                    aside.display()
                );
                Ok(None)
            }
        }
    }

    /// Saves `a` if it differs from what is on disk. Returns whether it wrote.
    pub fn save(&mut self, a: &Assignment) -> std::io::Result<bool> {
        let bytes = postcard::to_allocvec(a).map_err(|e| std::io::Error::other(e.to_string()))?;
        if self.last.as_ref() == Some(&bytes) {
            return Ok(false);
        }
        let dir = self.path.parent().unwrap_or(Path::new("."));
        fs::create_dir_all(dir)?;
        let tmp = self.path.with_extension("tmp");
        {
            let mut f = fs::File::create(&tmp)?;
            f.write_all(&bytes)?;
            f.sync_all()?;
        }
        fs::rename(&tmp, &self.path)?;
        fs::File::open(dir)?.sync_all()?;
        self.last = Some(bytes);
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn save_only_on_change_and_reload() {
        let dir = std::env::temp_dir().join(format!("bramble-state-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
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
        fs::write(dir.join(FILE), b"\xff\xff\xff").unwrap();
        let mut s3 = StateFile::new(&dir);
        assert_eq!(s3.load().unwrap(), None);
        assert!(dir.join("assignment.corrupt").exists());
        let _ = fs::remove_dir_all(&dir);
    }
}
