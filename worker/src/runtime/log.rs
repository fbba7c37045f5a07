//! Size-capped ring log files: `<process>.log`, rotated to `<process>.log.1` when it would grow
//! past the cap, so a chatty workload uses at most twice the cap on the SD card. When a process
//! restarts, its last run's log moves to `<process>.log.previous` (and `.log.previous.1`):
//! `bramble logs --previous` reads it, and the new run starts an empty `<process>.log` — one
//! previous run per process, as Kubernetes keeps one previous container's log.
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

    /// Starts the log of a new run of the process: the current files become the previous
    /// run's (replacing an older previous run's), and the current log starts empty.
    pub fn new_run(&mut self) -> Result<(), SysError> {
        let (cur, old) = (self.name.clone(), format!("{}.1", self.name));
        let prev = format!("{}.previous", self.name);
        let prev_old = format!("{prev}.1");
        let dir = self.dir.as_fd();
        sysproc::unlink_at(dir, &prev_old)?;
        match sysproc::rename_at(dir, &old, &prev_old) {
            Ok(()) => {}
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e),
        }
        sysproc::rename_at(dir, &cur, &prev)?;
        self.file = File::from(sysproc::create_at(dir, &cur)?);
        self.size = 0;
        Ok(())
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

/// The file name of a process's log: of its current run, or of its previous one.
pub fn file_name(process: &str, previous: bool) -> String {
    if previous {
        format!("{process}.log.previous")
    } else {
        format!("{process}.log")
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

    #[test]
    fn a_new_run_keeps_one_previous_log() {
        let d = tempfile::tempdir().unwrap();
        let dirfd = sysproc::open_dir(d.path()).unwrap();
        let mut log = RingLog::open(&dirfd, "web", 1024).unwrap();
        log.write(b"first run\n").unwrap();
        log.new_run().unwrap();
        log.write(b"second run\n").unwrap();
        let read = |n: &str| std::fs::read_to_string(d.path().join(n)).unwrap();
        assert_eq!(read(&file_name("web", false)), "second run\n");
        assert_eq!(read(&file_name("web", true)), "first run\n");
        // A run that rotated: both of its files move; the older previous run is gone.
        for _ in 0..5 {
            log.write(&[b'x'; 300]).unwrap();
        }
        log.new_run().unwrap();
        log.write(b"third run\n").unwrap();
        assert_eq!(read("web.log"), "third run\n");
        assert!(!d.path().join("web.log.1").exists());
        assert_eq!(read("web.log.previous").len(), 600);
        assert!(read("web.log.previous.1").starts_with("second run\n"));
        // A run that did not rotate leaves no stale older half behind.
        log.new_run().unwrap();
        assert_eq!(read("web.log.previous"), "third run\n");
        assert!(!d.path().join("web.log.previous.1").exists());
    }
}
