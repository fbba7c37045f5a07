//! Per-board cross builds of `bramble-worker` and `bramble`.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use bramble_boards::Board;

use crate::util::{ElfInfo, elf_info, run, which};

/// A binary Bramble ships to boards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bin {
    /// `bramble-worker` (package bramble-worker): the agent on every board. Budget: 3 MB.
    Worker,
    /// `bramble` (package bramble-cli): master + CLI.
    Master,
    /// `bramble-attack` (package bramble-attack, `tests/attack`): the containment tests'
    /// adversary, run inside pods on the guests. Never shipped (not in [`Bin::ALL`]).
    Attack,
}

impl Bin {
    /// Both, worker first.
    pub const ALL: [Bin; 2] = [Bin::Worker, Bin::Master];

    /// Cargo package.
    pub fn package(self) -> &'static str {
        match self {
            Bin::Worker => "bramble-worker",
            Bin::Master => "bramble-cli",
            Bin::Attack => "bramble-attack",
        }
    }

    /// Binary name.
    pub fn bin_name(self) -> &'static str {
        match self {
            Bin::Worker => "bramble-worker",
            Bin::Master => "bramble",
            Bin::Attack => "bramble-attack",
        }
    }

    /// Size budget for stripped release builds, if any (docs/design.md §12: worker ≤ 3 MB static).
    pub fn budget(self) -> Option<u64> {
        match self {
            Bin::Worker => Some(3_000_000),
            Bin::Master | Bin::Attack => None,
        }
    }
}

/// One built binary.
#[derive(Debug, Clone)]
pub struct Built {
    /// Which.
    pub bin: Bin,
    /// Cargo's output.
    pub path: PathBuf,
    /// A stripped copy in `target/bramble-cross/<board>/<profile>/`.
    pub stripped: PathBuf,
    /// Size of `path`.
    pub size: u64,
    /// Size of `stripped`.
    pub stripped_size: u64,
    /// ELF facts of the binary.
    pub elf: ElfInfo,
}

/// GNU cross tools (linker, strip) for a Rust target, and the Debian package providing them.
pub fn toolchain(target: &str) -> Result<(&'static str, &'static str, &'static str)> {
    Ok(match target {
        "aarch64-unknown-linux-musl" | "aarch64-unknown-linux-gnu" => (
            "aarch64-linux-gnu-gcc",
            "aarch64-linux-gnu-strip",
            "gcc-aarch64-linux-gnu",
        ),
        "armv7-unknown-linux-gnueabihf" => (
            "arm-linux-gnueabihf-gcc",
            "arm-linux-gnueabihf-strip",
            "gcc-arm-linux-gnueabihf",
        ),
        t => bail!(
            "no cross toolchain set up for target {t}: add it to .cargo/config.toml and cross/src/build.rs"
        ),
    })
}

/// Check the Rust target and the cross gcc are installed, with the fix if not.
pub fn preflight(target: &str) -> Result<()> {
    let (gcc, _, pkg) = toolchain(target)?;
    if which(gcc).is_none() {
        bail!(
            "{gcc} not found (linker for {target}): apt-get install {pkg} {}",
            libc_dev(target)
        );
    }
    let sysroot = run(
        Command::new(rustc()).args(["--print", "sysroot"]),
        Duration::from_secs(60),
    )?;
    let lib = Path::new(sysroot.stdout.trim())
        .join("lib/rustlib")
        .join(target);
    if !lib.exists() {
        bail!(
            "the Rust standard library for {target} is not installed: rustup target add {target}"
        );
    }
    Ok(())
}

fn libc_dev(target: &str) -> &'static str {
    if target.starts_with("armv7") {
        "libc6-dev-armhf-cross"
    } else {
        "libc6-dev-arm64-cross"
    }
}

fn rustc() -> String {
    std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into())
}

fn cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".into())
}

/// Build `bins` for `board` (release or debug). Cargo's own output goes to stderr.
pub fn build(board: &Board, release: bool, bins: &[Bin]) -> Result<Vec<Built>> {
    preflight(&board.target)?;
    let mut cmd = Command::new(cargo());
    cmd.current_dir(crate::util::workspace_root()).args([
        "build",
        "--message-format=json",
        "--target",
        &board.target,
    ]);
    if release {
        cmd.arg("--release");
    }
    for b in bins {
        cmd.args(["-p", b.package(), "--bin", b.bin_name()]);
    }
    let shown = crate::util::show(&cmd);
    eprintln!("cross: {shown}");
    let out = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("run {shown}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    // Render the compiler's messages (cargo's JSON carries them) and keep the errors, so that a
    // failing build says why in its error, not only on the console.
    let errors = compiler_errors(&stdout);
    if !out.status.success() {
        let shown_errors = errors
            .iter()
            .take(3)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n");
        bail!(
            "`{shown}` failed ({}){}\n  hints: rustup target add {}; apt-get install {} {}",
            out.status,
            if errors.is_empty() {
                "; see the errors above.".to_string()
            } else {
                format!(":\n{shown_errors}")
            },
            board.target,
            toolchain(&board.target)?.2,
            libc_dev(&board.target)
        );
    }
    let profile = if release { "release" } else { "debug" };
    let out_dir = crate::util::target_dir()
        .join("bramble-cross")
        .join(&board.name)
        .join(profile);
    fs::create_dir_all(&out_dir)?;
    let mut built = Vec::new();
    for b in bins {
        let path = executable(&stdout, b.bin_name())
            .with_context(|| format!("cargo did not report an executable for {}", b.bin_name()))?;
        let bytes = fs::read(&path).with_context(|| format!("read {}", path.display()))?;
        let elf = elf_info(&bytes).with_context(|| path.display().to_string())?;
        if elf.dynamic {
            bail!(
                "{} is dynamically linked; boards need static binaries.\n  fix: unset RUSTFLAGS (it overrides the `+crt-static` rustflags in .cargo/config.toml)",
                path.display()
            );
        }
        let stripped = out_dir.join(b.bin_name());
        strip(&board.target, &path, &stripped)?;
        built.push(Built {
            bin: *b,
            size: bytes.len() as u64,
            stripped_size: fs::metadata(&stripped)?.len(),
            stripped,
            path,
            elf,
        });
    }
    Ok(built)
}

/// Prints every compiler message in cargo's JSON output (as rustc renders it) to stderr and
/// returns the rendered errors.
fn compiler_errors(json_lines: &str) -> Vec<String> {
    let mut errors = Vec::new();
    for v in json_lines
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["reason"] == "compiler-message")
    {
        let Some(rendered) = v["message"]["rendered"].as_str() else {
            continue;
        };
        eprint!("{rendered}");
        if v["message"]["level"] == "error" {
            errors.push(rendered.trim_end().to_string());
        }
    }
    errors
}

fn executable(json_lines: &str, bin_name: &str) -> Option<PathBuf> {
    json_lines
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["reason"] == "compiler-artifact" && v["target"]["name"] == bin_name)
        .filter_map(|v| v["executable"].as_str().map(PathBuf::from))
        .next_back()
}

fn strip(target: &str, from: &Path, to: &Path) -> Result<()> {
    let (_, strip, pkg) = toolchain(target)?;
    let out = run(
        Command::new(strip).arg("-o").arg(to).arg(from),
        Duration::from_secs(120),
    )
    .with_context(|| format!("{strip} (apt-get install {pkg})"))?;
    if !out.status.success() {
        bail!(
            "{strip} -o {} {} failed: {}",
            to.display(),
            from.display(),
            out.stderr.trim()
        );
    }
    Ok(())
}

/// A report line per built binary.
pub fn report(board: &Board, built: &[Built]) -> String {
    let mut s = String::new();
    for b in built {
        let budget = match b.bin.budget() {
            Some(max) if b.stripped_size > max => format!("  OVER BUDGET (≤ {max} B)"),
            Some(max) => format!("  (budget ≤ {:.1} MB: ok)", max as f64 / 1e6),
            None => String::new(),
        };
        s.push_str(&format!(
            "{:<14} {:<18} {} {}-bit {} {}: stripped {}{budget}\n    {}\n",
            board.name,
            b.bin.bin_name(),
            b.elf.linkage(),
            b.elf.bits,
            b.elf.arch_name(),
            board.target,
            crate::util::human(b.stripped_size),
            b.stripped.display()
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_executable_in_cargo_json() {
        let json = r#"{"reason":"compiler-artifact","target":{"name":"bramble-wire"},"executable":null}
{"reason":"compiler-artifact","target":{"name":"bramble-worker"},"executable":"/t/aarch64-unknown-linux-musl/release/bramble-worker"}
{"reason":"build-finished","success":true}"#;
        assert_eq!(
            executable(json, "bramble-worker").unwrap(),
            PathBuf::from("/t/aarch64-unknown-linux-musl/release/bramble-worker")
        );
        assert!(executable(json, "bramble").is_none());
    }

    #[test]
    fn every_builtin_target_has_a_toolchain() {
        for b in bramble_boards::builtin() {
            toolchain(&b.target).unwrap();
        }
        assert!(toolchain("riscv64gc-unknown-linux-gnu").is_err());
    }

    #[test]
    fn cargo_config_sets_a_linker_for_every_board_target() {
        let path = crate::util::workspace_root().join(".cargo/config.toml");
        let config = std::fs::read_to_string(&path).unwrap();
        for b in bramble_boards::builtin() {
            let (gcc, _, _) = toolchain(&b.target).unwrap();
            let section = format!("[target.{}]", b.target);
            let at = config.find(&section).unwrap_or_else(|| {
                panic!(
                    "{}: add {section} with linker = \"{gcc}\" (board {})",
                    path.display(),
                    b.name
                )
            });
            let body = &config[at..];
            let body = &body[..body[1..].find("\n[").map_or(body.len(), |e| e + 1)];
            assert!(
                body.contains(&format!("linker = \"{gcc}\"")),
                "{section} needs linker = \"{gcc}\""
            );
            assert!(
                body.contains("+crt-static"),
                "{section}: binaries must be static"
            );
        }
    }
}
