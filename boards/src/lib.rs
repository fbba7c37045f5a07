//! Board profiles: what Bramble knows about each kind of board it runs on.
//!
//! One TOML file per board lives in `boards/profiles/`. The same files are embedded into the
//! binaries with `include_str!` ([`builtin`]), so nothing is read from disk at runtime;
//! [`load_all`] reads a directory instead (for profiles edited or added by users).
//!
//! Every profile is validated ([`Board::validate`]) and the set as a whole is checked
//! ([`validate_set`]): errors name the file or board and say how to fix it.
#![forbid(unsafe_code)]

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use serde::Deserialize;

/// The marker lines that delimit the generated board matrix in the README.
pub const README_START: &str = "<!-- boards:start -->";
/// See [`README_START`].
pub const README_END: &str = "<!-- boards:end -->";

/// CPU architecture of a board, as Bramble schedules on it (a pod's artifact must match).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Arch {
    /// 64-bit ARM (ARMv8-A and later in AArch64 state).
    Aarch64,
    /// 32-bit ARMv7-A with hard float.
    Armv7,
}

impl Arch {
    /// The name used in profiles, node labels and artifact metadata.
    pub fn as_str(self) -> &'static str {
        match self {
            Arch::Aarch64 => "aarch64",
            Arch::Armv7 => "armv7",
        }
    }

    /// Prefixes a Rust target triple for this architecture may start with.
    pub fn target_prefixes(self) -> &'static [&'static str] {
        match self {
            Arch::Aarch64 => &["aarch64-"],
            Arch::Armv7 => &["armv7-", "thumbv7neon-"],
        }
    }

    /// Debian's name for this architecture (kernel and busybox packages).
    pub fn debian_arch(self) -> &'static str {
        match self {
            Arch::Aarch64 => "arm64",
            Arch::Armv7 => "armhf",
        }
    }

    /// The QEMU system emulator for this architecture.
    pub fn qemu_system(self) -> &'static str {
        match self {
            Arch::Aarch64 => "qemu-system-aarch64",
            Arch::Armv7 => "qemu-system-arm",
        }
    }
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Real hardware, or a QEMU machine used for emulation tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// A physical board.
    Hardware,
    /// A QEMU machine; the profile then has a `[qemu]` table.
    Qemu,
}

/// One board profile (one TOML file).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Board {
    /// Profile name: lowercase letters, digits and `-`; equal to the file's stem.
    pub name: String,
    /// `hardware` or `qemu`.
    pub kind: Kind,
    /// One line for humans.
    pub description: String,
    /// CPU architecture.
    pub arch: Arch,
    /// Rust target triple the binaries are built for.
    pub target: String,
    /// CPU model, cores and clock.
    pub cpu: String,
    /// RAM in MiB (the smallest variant for boards sold with several); for QEMU boards, `-m`.
    pub ram_mib: u32,
    /// What to know about cgroups on this board.
    pub cgroup_notes: String,
    /// Kernel command-line additions the board needs (e.g. to enable the memory cgroup).
    #[serde(default)]
    pub kernel_cmdline: Vec<String>,
    /// For hardware boards: the QEMU board that stands in for it in emulation tests.
    #[serde(default)]
    pub emulated_by: Option<String>,
    /// For QEMU boards: how to emulate it.
    #[serde(default)]
    pub qemu: Option<Qemu>,
}

/// How to run a QEMU board.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Qemu {
    /// The emulator binary, e.g. `qemu-system-aarch64`.
    pub system: String,
    /// `-M` value.
    pub machine: String,
    /// `-cpu` value.
    pub cpu: String,
    /// `-smp` value.
    pub smp: u32,
    /// Debian architecture of the kernel and busybox packages (`arm64`, `armhf`).
    pub debian_arch: String,
    /// Debian kernel package name up to the ABI number, e.g. `linux-image-6.1.0-`.
    pub kernel_package_prefix: String,
    /// Debian kernel flavour after the ABI number, e.g. `cloud-arm64` (the package is
    /// `<prefix><abi>-<flavour>`, or `...-unsigned`; the newest ABI the archive lists wins).
    pub kernel_flavour: String,
    /// Serial console device in the guest, e.g. `ttyAMA0`.
    pub console: String,
}

/// Errors from loading or validating profiles. Each names the file or board and the fix.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file or directory could not be read.
    #[error("{path}: {source}")]
    Io {
        /// What could not be read.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The TOML did not parse or has unknown/missing fields.
    #[error(
        "{source_name}: {message}\n  fix: see boards/profiles/pi4b.toml for a complete profile"
    )]
    Parse {
        /// The file.
        source_name: String,
        /// The parser's message (with line and column).
        message: String,
    },
    /// The profile parsed but is not valid.
    #[error("{source_name}: board `{board}`: {problem}\n  fix: {fix}")]
    Invalid {
        /// The file.
        source_name: String,
        /// The board's name as written.
        board: String,
        /// What is wrong.
        problem: String,
        /// How to fix it.
        fix: String,
    },
    /// Two files declare the same board.
    #[error("board `{name}` is declared twice: {first} and {second}\n  fix: rename or remove one")]
    Duplicate {
        /// The board name.
        name: String,
        /// The first file.
        first: String,
        /// The second file.
        second: String,
    },
    /// A directory without any profile.
    #[error("{0}: no board profiles (*.toml)\n  fix: point at boards/profiles/")]
    Empty(PathBuf),
    /// Lookup of an unknown board.
    #[error("unknown board `{name}`; known boards: {known}")]
    Unknown {
        /// What was asked for.
        name: String,
        /// The known names, comma-separated.
        known: String,
    },
    /// The README has no (or broken) markers.
    #[error("README: {0}")]
    Readme(String),
}

/// The built-in profiles, embedded at compile time: (file name, contents).
pub const BUILTIN_SOURCES: &[(&str, &str)] = &[
    (
        "pi-zero-2w.toml",
        include_str!("../profiles/pi-zero-2w.toml"),
    ),
    ("pi3b.toml", include_str!("../profiles/pi3b.toml")),
    ("pi4b.toml", include_str!("../profiles/pi4b.toml")),
    ("pi5.toml", include_str!("../profiles/pi5.toml")),
    (
        "generic-armv7.toml",
        include_str!("../profiles/generic-armv7.toml"),
    ),
    (
        "qemu-virt-aarch64.toml",
        include_str!("../profiles/qemu-virt-aarch64.toml"),
    ),
    (
        "qemu-virt-armv7.toml",
        include_str!("../profiles/qemu-virt-armv7.toml"),
    ),
];

/// The built-in board profiles (embedded; validated by this crate's tests).
pub fn builtin() -> &'static [Board] {
    static BOARDS: OnceLock<Vec<Board>> = OnceLock::new();
    BOARDS.get_or_init(|| {
        load_sources(
            BUILTIN_SOURCES
                .iter()
                .map(|(n, t)| (n.to_string(), t.to_string())),
        )
        .unwrap_or_else(|e| panic!("built-in board profiles are invalid: {e}"))
    })
}

/// Find a built-in board by name.
pub fn find(name: &str) -> Result<&'static Board, Error> {
    find_in(builtin(), name)
}

/// Find a board by name in a set.
pub fn find_in<'a>(boards: &'a [Board], name: &str) -> Result<&'a Board, Error> {
    boards
        .iter()
        .find(|b| b.name == name)
        .ok_or_else(|| Error::Unknown {
            name: name.to_string(),
            known: boards
                .iter()
                .map(|b| b.name.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        })
}

/// Load and validate every `*.toml` in `dir` (sorted by file name).
pub fn load_all(dir: &Path) -> Result<Vec<Board>, Error> {
    let io = |source| Error::Io {
        path: dir.to_path_buf(),
        source,
    };
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let path = entry.map_err(io)?.path();
        if path.extension().is_some_and(|e| e == "toml") {
            files.push(path);
        }
    }
    if files.is_empty() {
        return Err(Error::Empty(dir.to_path_buf()));
    }
    files.sort();
    let mut sources = Vec::new();
    for path in files {
        let text = std::fs::read_to_string(&path).map_err(|source| Error::Io {
            path: path.clone(),
            source,
        })?;
        sources.push((path.display().to_string(), text));
    }
    load_sources(sources)
}

fn load_sources(sources: impl IntoIterator<Item = (String, String)>) -> Result<Vec<Board>, Error> {
    let mut boards = Vec::new();
    let mut names: Vec<(String, String)> = Vec::new();
    for (source_name, text) in sources {
        let board = parse(&source_name, &text)?;
        if let Some((_, first)) = names.iter().find(|(n, _)| *n == board.name) {
            return Err(Error::Duplicate {
                name: board.name,
                first: first.clone(),
                second: source_name,
            });
        }
        names.push((board.name.clone(), source_name));
        boards.push(board);
    }
    validate_set(&boards)?;
    Ok(boards)
}

/// Parse and validate one profile. `source_name` is the file (its stem must be the board name).
pub fn parse(source_name: &str, text: &str) -> Result<Board, Error> {
    let board: Board = toml::from_str(text).map_err(|e| Error::Parse {
        source_name: source_name.to_string(),
        message: e.to_string().trim_end().to_string(),
    })?;
    board.validate(source_name)?;
    Ok(board)
}

impl Board {
    /// Check one profile on its own. `source_name` is the file it came from.
    pub fn validate(&self, source_name: &str) -> Result<(), Error> {
        let bad = |problem: String, fix: String| Error::Invalid {
            source_name: source_name.to_string(),
            board: self.name.clone(),
            problem,
            fix,
        };
        if !is_label(&self.name) {
            return Err(bad(
                "`name` must be 1-63 lowercase letters, digits or `-`, not starting or ending with `-`".into(),
                "rename the board, e.g. `pi4b`".into(),
            ));
        }
        let stem = Path::new(source_name)
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or("");
        if stem != self.name {
            return Err(bad(
                format!("`name` must equal the file name without `.toml` (`{stem}`)"),
                format!(
                    "rename the file to `{}.toml` or set `name = \"{stem}\"`",
                    self.name
                ),
            ));
        }
        for (field, value) in [
            ("description", &self.description),
            ("cpu", &self.cpu),
            ("cgroup_notes", &self.cgroup_notes),
        ] {
            if value.trim().is_empty() {
                return Err(bad(
                    format!("`{field}` is empty"),
                    format!("write the board's {field}"),
                ));
            }
        }
        if !self
            .arch
            .target_prefixes()
            .iter()
            .any(|p| self.target.starts_with(p))
            || !self.target.contains("-linux-")
        {
            let expected = match self.arch {
                Arch::Aarch64 => "aarch64-unknown-linux-musl",
                Arch::Armv7 => "armv7-unknown-linux-gnueabihf",
            };
            return Err(bad(
                format!(
                    "target `{}` does not match arch `{}`",
                    self.target, self.arch
                ),
                format!("use `target = \"{expected}\"` or change `arch`"),
            ));
        }
        if self.ram_mib == 0 {
            return Err(bad(
                "`ram_mib` is 0".into(),
                "set the board's RAM in MiB, e.g. `ram_mib = 1024`".into(),
            ));
        }
        if let Some(arg) = self
            .kernel_cmdline
            .iter()
            .find(|a| a.is_empty() || a.chars().any(char::is_whitespace))
        {
            return Err(bad(
                format!("kernel_cmdline entry `{arg}` is empty or contains whitespace"),
                "write one argument per array element, e.g. [\"cgroup_enable=memory\", \"cgroup_memory=1\"]".into(),
            ));
        }
        match (self.kind, &self.qemu) {
            (Kind::Qemu, None) => {
                return Err(bad(
                    "`kind = \"qemu\"` but there is no [qemu] table".into(),
                    "add [qemu] with system, machine, cpu, smp, debian_arch, kernel_package_prefix, kernel_flavour, console (see qemu-virt-aarch64.toml)".into(),
                ));
            }
            (Kind::Hardware, Some(_)) => {
                return Err(bad(
                    "a hardware board has a [qemu] table".into(),
                    "remove [qemu], or set `kind = \"qemu\"`; for emulation of hardware use `emulated_by`".into(),
                ));
            }
            (Kind::Qemu, Some(q)) => q
                .validate(self.arch)
                .map_err(|(problem, fix)| bad(problem, fix))?,
            (Kind::Hardware, None) => {}
        }
        if self.kind == Kind::Qemu && self.emulated_by.is_some() {
            return Err(bad(
                "a QEMU board has `emulated_by`".into(),
                "remove `emulated_by`".into(),
            ));
        }
        Ok(())
    }

    /// The QEMU table, or an error naming the board if it is not a QEMU board.
    pub fn qemu(&self) -> Result<&Qemu, Error> {
        self.qemu.as_ref().ok_or_else(|| Error::Invalid {
            source_name: format!("{}.toml", self.name),
            board: self.name.clone(),
            problem: "not a QEMU board".into(),
            fix: "use a board with `kind = \"qemu\"`, e.g. qemu-virt-aarch64 or qemu-virt-armv7"
                .into(),
        })
    }
}

impl Qemu {
    fn validate(&self, arch: Arch) -> Result<(), (String, String)> {
        for (field, value) in [
            ("system", &self.system),
            ("machine", &self.machine),
            ("cpu", &self.cpu),
            ("debian_arch", &self.debian_arch),
            ("kernel_package_prefix", &self.kernel_package_prefix),
            ("kernel_flavour", &self.kernel_flavour),
            ("console", &self.console),
        ] {
            if value.trim().is_empty() || value.chars().any(|c| c.is_whitespace() || c == ',') {
                return Err((
                    format!("[qemu] `{field}` is empty or contains whitespace or `,`"),
                    format!("set [qemu] {field} (see qemu-virt-aarch64.toml)"),
                ));
            }
        }
        if self.system != arch.qemu_system() {
            return Err((
                format!(
                    "[qemu] system `{}` does not emulate arch `{arch}`",
                    self.system
                ),
                format!("use `system = \"{}\"`", arch.qemu_system()),
            ));
        }
        if self.debian_arch != arch.debian_arch() {
            return Err((
                format!(
                    "[qemu] debian_arch `{}` does not match arch `{arch}`",
                    self.debian_arch
                ),
                format!("use `debian_arch = \"{}\"`", arch.debian_arch()),
            ));
        }
        if !(1..=8).contains(&self.smp) {
            return Err((
                format!("[qemu] smp = {} is outside 1..=8", self.smp),
                "use `smp = 1` or `smp = 2`".into(),
            ));
        }
        if !self.kernel_package_prefix.starts_with("linux-image-")
            || !self.kernel_package_prefix.ends_with('-')
        {
            return Err((
                format!(
                    "[qemu] kernel_package_prefix `{}` is not like `linux-image-6.1.0-`",
                    self.kernel_package_prefix
                ),
                "use the Debian package name up to the ABI number, e.g. `linux-image-6.1.0-`"
                    .into(),
            ));
        }
        Ok(())
    }
}

/// Checks across boards: `emulated_by` must name a QEMU board of the same arch.
pub fn validate_set(boards: &[Board]) -> Result<(), Error> {
    for b in boards {
        let Some(emu) = &b.emulated_by else { continue };
        let fix_names: Vec<&str> = boards
            .iter()
            .filter(|q| q.kind == Kind::Qemu && q.arch == b.arch)
            .map(|q| q.name.as_str())
            .collect();
        let ok = boards
            .iter()
            .any(|q| &q.name == emu && q.kind == Kind::Qemu && q.arch == b.arch);
        if !ok {
            return Err(Error::Invalid {
                source_name: format!("{}.toml", b.name),
                board: b.name.clone(),
                problem: format!(
                    "`emulated_by = \"{emu}\"` is not a QEMU board with arch `{}`",
                    b.arch
                ),
                fix: format!("use one of: {}", fix_names.join(", ")),
            });
        }
    }
    Ok(())
}

fn is_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// The board support matrix as a Markdown table (the README's `## Board support` section).
pub fn render_matrix(boards: &[Board]) -> String {
    let mut out = String::from(
        "| board | arch | Rust target | CPU | RAM (MiB) | kernel cmdline additions | tested in QEMU as |\n\
         |---|---|---|---|---|---|---|\n",
    );
    for b in boards {
        let cmdline = if b.kernel_cmdline.is_empty() {
            "none".to_string()
        } else {
            format!("`{}`", b.kernel_cmdline.join(" "))
        };
        let emulation = match (&b.qemu, &b.emulated_by) {
            (Some(q), _) => format!(
                "`{} -M {} -cpu {}`, Debian `{}*-{}`",
                q.system, q.machine, q.cpu, q.kernel_package_prefix, q.kernel_flavour
            ),
            (None, Some(e)) => format!("`{e}`"),
            (None, None) => "-".to_string(),
        };
        out.push_str(&format!(
            "| `{}` | {} | `{}` | {} | {} | {} | {} |\n",
            b.name,
            b.arch,
            b.target,
            cell(&b.cpu),
            b.ram_mib,
            cmdline,
            emulation
        ));
    }
    out
}

fn cell(s: &str) -> String {
    s.replace('|', "\\|")
}

/// The text between the README markers (exclusive), trimmed.
pub fn readme_section(readme: &str) -> Result<&str, Error> {
    let (start, end) = marker_range(readme)?;
    Ok(readme[start..end].trim())
}

/// `readme` with the text between the markers replaced by `table`.
pub fn replace_readme_section(readme: &str, table: &str) -> Result<String, Error> {
    let (start, end) = marker_range(readme)?;
    Ok(format!(
        "{}\n{}\n{}",
        &readme[..start],
        table.trim(),
        &readme[end..]
    ))
}

fn marker_range(readme: &str) -> Result<(usize, usize), Error> {
    let start = readme.find(README_START).ok_or_else(|| {
        Error::Readme(format!(
            "no `{README_START}` marker; add it under `## Board support`"
        ))
    })?;
    let start = start + README_START.len();
    let end = readme[start..]
        .find(README_END)
        .ok_or_else(|| Error::Readme(format!("no `{README_END}` marker after `{README_START}`")))?;
    Ok((start, start + end))
}

#[cfg(test)]
mod tests;
