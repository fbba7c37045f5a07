//! A minimal `cpio -H newc` writer (no root needed: device nodes are just headers), gzipped
//! with the host's `gzip`.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};

const S_IFDIR: u32 = 0o040000;
const S_IFREG: u32 = 0o100000;
const S_IFLNK: u32 = 0o120000;
const S_IFCHR: u32 = 0o020000;

/// An initramfs being assembled in memory. Parent directories must be added before children.
#[derive(Debug, Default)]
pub struct Cpio {
    buf: Vec<u8>,
    ino: u32,
    names: Vec<String>,
}

impl Cpio {
    /// An empty archive.
    pub fn new() -> Self {
        Self::default()
    }

    fn entry(&mut self, name: &str, mode: u32, rdev: (u32, u32), data: &[u8]) -> Result<()> {
        let name = name.trim_start_matches('/');
        if name.is_empty() || name.split('/').any(|c| c.is_empty() || c == "..") {
            bail!("bad initramfs path `{name}`");
        }
        if self.names.iter().any(|n| n == name) {
            bail!("initramfs path `{name}` added twice");
        }
        if let Some((parent, _)) = name.rsplit_once('/')
            && !self.names.iter().any(|n| n == parent)
        {
            bail!("initramfs path `{name}`: add directory `{parent}` first");
        }
        self.names.push(name.to_string());
        self.ino += 1;
        self.raw(name, self.ino, mode, rdev, data);
        Ok(())
    }

    fn raw(&mut self, name: &str, ino: u32, mode: u32, rdev: (u32, u32), data: &[u8]) {
        let nlink = if mode & S_IFDIR != 0 { 2 } else { 1 };
        let fields = [
            ino,
            mode,
            0,
            0,
            nlink,
            0,
            data.len() as u32,
            0,
            0,
            rdev.0,
            rdev.1,
            name.len() as u32 + 1,
            0,
        ];
        self.buf.extend_from_slice(b"070701");
        for f in fields {
            self.buf.extend_from_slice(format!("{f:08x}").as_bytes());
        }
        self.buf.extend_from_slice(name.as_bytes());
        self.buf.push(0);
        self.pad();
        self.buf.extend_from_slice(data);
        self.pad();
    }

    fn pad(&mut self) {
        while !self.buf.len().is_multiple_of(4) {
            self.buf.push(0);
        }
    }

    /// A directory (mode 0755).
    pub fn dir(&mut self, name: &str) -> Result<()> {
        self.entry(name, S_IFDIR | 0o755, (0, 0), &[])
    }

    /// A directory and all its missing parents.
    pub fn dirs(&mut self, name: &str) -> Result<()> {
        let mut path = String::new();
        for comp in name.trim_matches('/').split('/') {
            if !path.is_empty() {
                path.push('/');
            }
            path.push_str(comp);
            if !self.names.contains(&path) {
                self.dir(&path)?;
            }
        }
        Ok(())
    }

    /// A regular file with permission bits `perm` (e.g. 0o755).
    pub fn file(&mut self, name: &str, perm: u32, data: &[u8]) -> Result<()> {
        self.entry(name, S_IFREG | (perm & 0o7777), (0, 0), data)
    }

    /// A symbolic link.
    pub fn symlink(&mut self, name: &str, target: &str) -> Result<()> {
        self.entry(name, S_IFLNK | 0o777, (0, 0), target.as_bytes())
    }

    /// A character device node.
    pub fn char_dev(&mut self, name: &str, perm: u32, major: u32, minor: u32) -> Result<()> {
        self.entry(name, S_IFCHR | (perm & 0o7777), (major, minor), &[])
    }

    /// The uncompressed archive, with its trailer.
    pub fn finish(mut self) -> Vec<u8> {
        self.raw("TRAILER!!!", 0, 0, (0, 0), &[]);
        self.buf
    }

    /// Write the archive gzipped (via the host's `gzip -n`) to `path`.
    pub fn write_gz(self, path: &Path) -> Result<()> {
        let data = self.finish();
        let out =
            std::fs::File::create(path).with_context(|| format!("create {}", path.display()))?;
        let mut child = Command::new("gzip")
            .args(["-n", "-1", "-c"])
            .stdin(Stdio::piped())
            .stdout(out)
            .spawn()
            .context("cannot run gzip (apt-get install gzip)")?;
        let mut stdin = child.stdin.take().context("gzip stdin")?;
        let writer = std::thread::spawn(move || stdin.write_all(&data));
        let status = child.wait()?;
        writer
            .join()
            .map_err(|_| anyhow::anyhow!("gzip writer panicked"))??;
        if !status.success() {
            bail!("gzip failed: {status}");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newc_layout() {
        let mut c = Cpio::new();
        c.dir("dev").unwrap();
        c.char_dev("dev/console", 0o600, 5, 1).unwrap();
        c.file("/init", 0o755, b"#!/bin/sh\n").unwrap();
        assert!(
            c.file("etc/x", 0o644, b"")
                .unwrap_err()
                .to_string()
                .contains("add directory `etc` first")
        );
        assert!(c.file("init", 0o644, b"").is_err());
        c.dirs("var/lib/bramble-worker").unwrap();
        let bytes = c.finish();
        assert_eq!(bytes.len() % 4, 0);
        assert!(bytes.starts_with(b"070701"));
        let text = String::from_utf8_lossy(&bytes);
        assert!(text.contains("dev/console\0"));
        assert!(text.contains("var/lib/bramble-worker\0"));
        assert!(text.contains("TRAILER!!!\0"));
        // Mode of dev/console: S_IFCHR | 0600 = 0o20600 = 0x2180, rdev 5:1.
        let fields: String = [0x2180u32, 0, 0, 1, 0, 0, 0, 0, 5, 1]
            .iter()
            .map(|f| format!("{f:08x}"))
            .collect();
        assert!(text.contains(&fields));
    }
}
