//! Size-capped ring log files: `<process>.log`, rotated to `<process>.log.1` when it would grow
//! past the cap, so a chatty workload uses at most twice the cap on the SD card.
//!
//! The writer is the pod init (it holds the directory open across `pivot_root`), so logging
//! continues while the worker restarts.

use std::fs::File;
use std::io::Write;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

use crate::sys::SysError;
use crate::sys::process as sysproc;

/// One process's log.
#[derive(Debug)]
pub struct RingLog {
    dir: OwnedFd,
    name: String,
    file: File,
    size: u64,
    cap: u64,
}

impl RingLog {
    /// Opens (appending) `<name>.log` in the directory `dir`.
    pub fn open(dir: &OwnedFd, name: &str, cap: u64) -> Result<RingLog, SysError> {
        let dir = sysproc::dup(dir.as_fd())?;
        let name = format!("{name}.log");
        let file = File::from(sysproc::open_append_at(dir.as_fd(), &name)?);
        let size = file.metadata().map(|m| m.len()).unwrap_or(0);
        Ok(RingLog {
            dir,
            name,
            file,
            size,
            cap: cap.max(1024),
        })
    }

    /// Appends `data`, rotating first if it would pass the cap.
    pub fn write(&mut self, data: &[u8]) -> Result<(), SysError> {
        if self.size > 0 && self.size + data.len() as u64 > self.cap {
            sysproc::rename_at(self.dir.as_fd(), &self.name, &format!("{}.1", self.name))?;
            self.file = File::from(sysproc::create_at(self.dir.as_fd(), &self.name)?);
            self.size = 0;
        }
        let data = &data[..data.len().min(self.cap as usize)];
        self.file.write_all(data).map_err(|err| SysError::Io {
            op: "write",
            path: self.name.clone().into(),
            err,
        })?;
        self.size += data.len() as u64;
        Ok(())
    }
}

/// Reads the last `max` bytes of a process's log (the rotated file first, then the current one).
pub fn read_tail(pod_log_dir: &Path, process: &str, max: usize) -> std::io::Result<Vec<u8>> {
    let mut out = std::fs::read(pod_log_dir.join(format!("{process}.log.1"))).unwrap_or_default();
    match std::fs::read(pod_log_dir.join(format!("{process}.log"))) {
        Ok(cur) => out.extend_from_slice(&cur),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !out.is_empty() => {}
        Err(e) => return Err(e),
    }
    if out.len() > max {
        out.drain(..out.len() - max);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotates_at_cap() {
        let d = tempfile::tempdir().unwrap();
        let dirfd = sysproc::open_dir(d.path()).unwrap();
        let mut log = RingLog::open(&dirfd, "web", 1024).unwrap();
        for _ in 0..5 {
            log.write(&[b'a'; 300]).unwrap();
        }
        let cur = std::fs::metadata(d.path().join("web.log")).unwrap().len();
        let old = std::fs::metadata(d.path().join("web.log.1")).unwrap().len();
        assert_eq!((old, cur), (900, 600));
        // Reopening continues from the current size.
        let mut log = RingLog::open(&dirfd, "web", 1024).unwrap();
        log.write(&[b'b'; 300]).unwrap();
        assert_eq!(
            std::fs::metadata(d.path().join("web.log")).unwrap().len(),
            900
        );
        let tail = read_tail(d.path(), "web", 100).unwrap();
        assert_eq!(tail, vec![b'b'; 100]);
        assert_eq!(read_tail(d.path(), "web", 10_000).unwrap().len(), 1800);
    }
}
