//! Small helpers: bounded subprocesses, paths, ELF inspection.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// Output of a finished command.
#[derive(Debug)]
pub struct Output {
    /// Exit status.
    pub status: ExitStatus,
    /// Captured stdout.
    pub stdout: String,
    /// Captured stderr.
    pub stderr: String,
}

/// Run `cmd` with stdout/stderr captured; kill it (by its PID) if it outlives `timeout`.
/// A non-zero exit is *not* an error here: callers decide (see [`run_ok`]).
pub fn run(cmd: &mut Command, timeout: Duration) -> Result<Output> {
    let shown = show(cmd);
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot run `{shown}` (is it installed?)"))?;
    let mut out = child.stdout.take().map(reader);
    let mut err = child.stderr.take().map(reader);
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("`{shown}` did not finish within {timeout:?}; killed it");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let stdout = out
        .take()
        .map(|h| h.join().unwrap_or_default())
        .unwrap_or_default();
    let stderr = err
        .take()
        .map(|h| h.join().unwrap_or_default())
        .unwrap_or_default();
    Ok(Output {
        status,
        stdout,
        stderr,
    })
}

/// [`run`], and fail with the command's stderr if it exits non-zero.
pub fn run_ok(cmd: &mut Command, timeout: Duration) -> Result<Output> {
    let shown = show(cmd);
    let out = run(cmd, timeout)?;
    if !out.status.success() {
        bail!(
            "`{shown}` failed ({}):\n{}{}",
            out.status,
            out.stderr.trim_end(),
            if out.stdout.trim().is_empty() {
                String::new()
            } else {
                format!("\n{}", out.stdout.trim_end())
            }
        );
    }
    Ok(out)
}

fn reader<R: Read + Send + 'static>(mut r: R) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = r.read_to_end(&mut buf);
        String::from_utf8_lossy(&buf).into_owned()
    })
}

/// A command as a shell would show it (for messages).
pub fn show(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// Is `program` on `PATH`?
pub fn which(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(program))
        .find(|p| p.is_file())
}

/// The workspace root (this crate's parent directory).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// Cargo's target directory (`CARGO_TARGET_DIR` or `<workspace>/target`).
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(d) => {
            let d = PathBuf::from(d);
            if d.is_absolute() {
                d
            } else {
                workspace_root().join(d)
            }
        }
        None => workspace_root().join("target"),
    }
}

/// What an ELF file says about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ElfInfo {
    /// 32 or 64.
    pub bits: u8,
    /// `e_machine` (0xB7 AArch64, 0x28 ARM, 0x3E x86-64).
    pub machine: u16,
    /// Has a `PT_INTERP` program header (needs a dynamic loader).
    pub dynamic: bool,
}

impl ElfInfo {
    /// The architecture in Bramble's words.
    pub fn arch_name(&self) -> &'static str {
        match self.machine {
            0xB7 => "aarch64",
            0x28 => "arm",
            0x3E => "x86_64",
            _ => "other",
        }
    }

    /// `static` or `dynamic`.
    pub fn linkage(&self) -> &'static str {
        if self.dynamic { "dynamic" } else { "static" }
    }
}

/// Parse the ELF header and program headers of a little-endian ELF file.
pub fn elf_info(bytes: &[u8]) -> Result<ElfInfo> {
    if bytes.len() < 52 || &bytes[..4] != b"\x7fELF" {
        bail!("not an ELF file");
    }
    if bytes[5] != 1 {
        bail!("big-endian ELF is not supported");
    }
    let u16_at = |o: usize| -> Result<u16> {
        Ok(u16::from_le_bytes(
            bytes.get(o..o + 2).context("truncated ELF")?.try_into()?,
        ))
    };
    let u32_at = |o: usize| -> Result<u32> {
        Ok(u32::from_le_bytes(
            bytes.get(o..o + 4).context("truncated ELF")?.try_into()?,
        ))
    };
    let u64_at = |o: usize| -> Result<u64> {
        Ok(u64::from_le_bytes(
            bytes.get(o..o + 8).context("truncated ELF")?.try_into()?,
        ))
    };
    let bits = match bytes[4] {
        1 => 32,
        2 => 64,
        c => bail!("bad ELF class {c}"),
    };
    let machine = u16_at(18)?;
    let (phoff, phentsize, phnum) = if bits == 64 {
        (
            u64_at(32)? as usize,
            u16_at(54)? as usize,
            u16_at(56)? as usize,
        )
    } else {
        (
            u32_at(28)? as usize,
            u16_at(42)? as usize,
            u16_at(44)? as usize,
        )
    };
    let mut dynamic = false;
    for i in 0..phnum {
        if u32_at(phoff + i * phentsize)? == 3 {
            dynamic = true;
        }
    }
    Ok(ElfInfo {
        bits,
        machine,
        dynamic,
    })
}

/// Human size: `1.23 MiB (1289012 B)`.
pub fn human(bytes: u64) -> String {
    format!("{:.2} MiB ({bytes} B)", bytes as f64 / (1024.0 * 1024.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn elf_of_this_test_binary() {
        let me = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        let info = elf_info(&me).unwrap();
        assert_eq!(info.bits, 64);
        assert!(elf_info(b"#!/bin/sh\n").is_err());
    }

    #[test]
    fn bounded_run() {
        let out = run_ok(
            Command::new("sh").args(["-c", "echo hi; echo err >&2"]),
            Duration::from_secs(10),
        )
        .unwrap();
        assert_eq!(out.stdout, "hi\n");
        assert_eq!(out.stderr, "err\n");
        let e = run_ok(
            Command::new("sh").args(["-c", "echo bad >&2; exit 3"]),
            Duration::from_secs(10),
        )
        .unwrap_err();
        assert!(e.to_string().contains("bad"), "{e}");
        let e = run(Command::new("sleep").arg("5"), Duration::from_millis(200)).unwrap_err();
        assert!(e.to_string().contains("did not finish"), "{e}");
    }
}
