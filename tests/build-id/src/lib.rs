//! The build id of `bramble` and `bramble-worker`: sha256 over the sources each binary is built
//! from (every file of its crates except tests, benches, examples, fuzz targets and Markdown)
//! and the workspace's `Cargo.lock`.
//!
//! Each binary's build script embeds its id ([`emit`]; `--build-id` prints it). The test kit's
//! build script computes the same ids from the same files ([`emit_expected`]), so the harness
//! refuses a binary built from other sources than the tests (a stale `target/debug/bramble`
//! that `cargo test -p bramble-tests` did not rebuild, or a binary from somewhere else).
#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// A binary of the workspace and the folders (relative to the workspace root) of the crates it
/// is built from: its own and its path dependencies'.
#[derive(Debug, Clone, Copy)]
pub struct Binary {
    /// The executable's name.
    pub name: &'static str,
    /// The package that builds it (`cargo build -p PACKAGE`).
    pub package: &'static str,
    /// Crate folders, relative to the workspace root.
    pub crates: &'static [&'static str],
}

/// `bramble`: the master and the CLI.
pub const BRAMBLE: Binary = Binary {
    name: "bramble",
    package: "bramble-cli",
    crates: &[
        "master/cli",
        "master/client",
        "master/server",
        "wire",
        "artifact",
        "image",
    ],
};

/// `bramble-worker`: the agent.
pub const BRAMBLE_WORKER: Binary = Binary {
    name: "bramble-worker",
    package: "bramble-worker",
    crates: &["worker", "worker/tls", "wire", "artifact"],
};

/// Every binary the test harness starts.
pub const BINARIES: [Binary; 2] = [BRAMBLE, BRAMBLE_WORKER];

/// Folders beside a `Cargo.toml` that never go into the binary.
const NOT_BUILT: [&str; 5] = ["target", "fuzz", "tests", "benches", "examples"];

/// The workspace root above `manifest_dir` (the folder whose `Cargo.toml` has `[workspace]`).
pub fn workspace_root(manifest_dir: &Path) -> PathBuf {
    manifest_dir
        .ancestors()
        .find(|d| {
            std::fs::read_to_string(d.join("Cargo.toml"))
                .is_ok_and(|s| s.lines().any(|l| l.trim() == "[workspace]"))
        })
        .unwrap_or_else(|| panic!("no workspace above {}", manifest_dir.display()))
        .to_path_buf()
}

/// What a binary is built from: the files, and the folders whose whole subtree counts (for
/// cargo's `rerun-if-changed`, which scans a folder recursively).
#[derive(Debug, Default)]
pub struct Inputs {
    /// Files, sorted, absolute.
    pub files: Vec<PathBuf>,
    /// Folders all of whose files are inputs.
    pub whole_dirs: Vec<PathBuf>,
}

/// The inputs of `bin` under workspace `root`.
pub fn inputs(root: &Path, bin: Binary) -> Inputs {
    let mut out = Inputs::default();
    for c in bin.crates {
        let dir = root.join(c);
        if walk(&dir, &mut out) {
            out.whole_dirs.push(dir);
        }
    }
    out.files.push(root.join("Cargo.lock"));
    out.files.sort();
    out.files.dedup();
    out.whole_dirs.sort();
    out.whole_dirs.dedup();
    out
}

/// Adds `dir`'s inputs; whether all of its subtree counts.
fn walk(dir: &Path, out: &mut Inputs) -> bool {
    let crate_root = dir.join("Cargo.toml").is_file();
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .flatten()
        .collect();
    entries.sort_by_key(|e| e.file_name());
    let mut whole = true;
    for e in entries {
        let name = e.file_name().to_string_lossy().into_owned();
        let path = e.path();
        let Ok(ty) = e.file_type() else {
            whole = false;
            continue;
        };
        if name.starts_with('.') || name.ends_with(".md") {
            whole = false;
        } else if ty.is_dir() {
            if crate_root && NOT_BUILT.contains(&name.as_str()) {
                whole = false;
            } else if walk(&path, out) {
                out.whole_dirs.push(path);
            } else {
                whole = false;
            }
        } else if ty.is_file() {
            out.files.push(path);
        } else {
            whole = false;
        }
    }
    // A folder whose subtree counts whole is listed instead of its subfolders.
    if whole {
        out.whole_dirs.retain(|d| !d.starts_with(dir) || d == dir);
    }
    whole
}

/// The build id of `bin` from the sources under workspace `root`: 16 hex digits.
pub fn id(root: &Path, bin: Binary) -> String {
    let mut h = Sha256::new();
    for f in inputs(root, bin).files {
        let rel = f.strip_prefix(root).unwrap_or(&f);
        let body = std::fs::read(&f).unwrap_or_else(|e| panic!("read {}: {e}", f.display()));
        h.update(rel.to_string_lossy().as_bytes());
        h.update([0]);
        h.update((body.len() as u64).to_le_bytes());
        h.update(&body);
    }
    h.finalize()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The environment variable the test kit's build script sets to `bin`'s expected id.
pub fn expected_env(bin: Binary) -> String {
    format!(
        "BRAMBLE_EXPECTED_BUILD_ID_{}",
        bin.name.to_uppercase().replace('-', "_")
    )
}

fn rerun_if_changed(root: &Path, bin: Binary) {
    let inputs = inputs(root, bin);
    for d in &inputs.whole_dirs {
        println!("cargo:rerun-if-changed={}", d.display());
    }
    for f in inputs
        .files
        .iter()
        .filter(|f| !inputs.whole_dirs.iter().any(|d| f.starts_with(d)))
    {
        println!("cargo:rerun-if-changed={}", f.display());
    }
}

fn manifest_dir() -> PathBuf {
    PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("run from a build script"))
}

/// For `bin`'s build script: sets `BRAMBLE_BUILD_ID` for the crate and reruns when an input
/// changes.
pub fn emit(bin: Binary) {
    let root = workspace_root(&manifest_dir());
    rerun_if_changed(&root, bin);
    println!("cargo:rustc-env=BRAMBLE_BUILD_ID={}", id(&root, bin));
}

/// For the test kit's build script: sets [`expected_env`] of every binary it starts.
pub fn emit_expected() {
    let root = workspace_root(&manifest_dir());
    for bin in BINARIES {
        rerun_if_changed(&root, bin);
        println!("cargo:rustc-env={}={}", expected_env(bin), id(&root, bin));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root() -> PathBuf {
        workspace_root(Path::new(env!("CARGO_MANIFEST_DIR")))
    }

    /// Each binary's crate list holds its crate's path dependencies (one level is enough:
    /// wire and artifact have none of their own): a missing one would leave its sources out of
    /// the id, and a stale binary would pass.
    #[test]
    fn crate_lists_cover_the_path_dependencies() {
        let root = root();
        let ws = std::fs::read_to_string(root.join("Cargo.toml")).unwrap();
        for bin in BINARIES {
            for c in bin.crates {
                let manifest = std::fs::read_to_string(root.join(c).join("Cargo.toml")).unwrap();
                let mut section = String::new();
                for line in manifest.lines().map(str::trim) {
                    if line.starts_with('[') {
                        section = line.to_string();
                        continue;
                    }
                    if !(section == "[dependencies]" || section == "[build-dependencies]") {
                        continue;
                    }
                    let Some((dep, rest)) = line.split_once(['=', '.']) else {
                        continue;
                    };
                    let dep = dep.trim();
                    let path = if rest.contains("workspace") {
                        ws.lines()
                            .find(|l| l.starts_with(&format!("{dep} ")))
                            .and_then(|l| l.split("path = \"").nth(1))
                            .map(|p| p.split('"').next().unwrap_or("").to_string())
                    } else {
                        rest.split("path = \"")
                            .nth(1)
                            .map(|p| p.split('"').next().unwrap_or("").to_string())
                            .map(|p| {
                                let abs = root.join(c).join(p);
                                let abs = abs.canonicalize().unwrap_or(abs);
                                abs.strip_prefix(root.canonicalize().unwrap())
                                    .unwrap()
                                    .to_string_lossy()
                                    .into_owned()
                            })
                    };
                    let Some(path) = path else { continue };
                    if dep == "bramble-build-id" {
                        continue;
                    }
                    assert!(
                        bin.crates.iter().any(|k| path.starts_with(k)),
                        "{}: {c} depends on {dep} at {path}, which its build id leaves out",
                        bin.name
                    );
                }
            }
        }
    }

    #[test]
    fn inputs_leave_out_tests_and_docs_and_take_the_sources() {
        let i = inputs(&root(), BRAMBLE_WORKER);
        let has = |p: &str| i.files.iter().any(|f| f.ends_with(p));
        assert!(has("worker/src/main.rs"));
        assert!(has("wire/src/lib.rs"));
        assert!(has("Cargo.lock"));
        assert!(
            !i.files
                .iter()
                .any(|f| f.to_string_lossy().contains("/tests/"))
        );
        assert!(
            !i.files
                .iter()
                .any(|f| f.extension().is_some_and(|e| e == "md"))
        );
        assert!(
            !i.files
                .iter()
                .any(|f| f.to_string_lossy().contains("/master/"))
        );
        assert!(i.whole_dirs.iter().any(|d| d.ends_with("worker/src")));
    }

    #[test]
    fn the_id_changes_with_a_source_file() {
        let tmp = std::env::temp_dir().join(format!("bramble-build-id-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&tmp);
        for c in ["worker", "worker/tls", "wire", "artifact"] {
            std::fs::create_dir_all(tmp.join(c).join("src")).unwrap();
            std::fs::write(tmp.join(c).join("Cargo.toml"), "[package]\n").unwrap();
            std::fs::write(tmp.join(c).join("src/lib.rs"), "").unwrap();
        }
        std::fs::create_dir_all(tmp.join("worker/tests")).unwrap();
        std::fs::write(tmp.join("Cargo.lock"), "").unwrap();
        let a = id(&tmp, BRAMBLE_WORKER);
        std::fs::write(tmp.join("worker/tests/t.rs"), "fn t() {}").unwrap();
        assert_eq!(
            id(&tmp, BRAMBLE_WORKER),
            a,
            "tests are not part of the binary"
        );
        std::fs::write(tmp.join("wire/src/lib.rs"), "// changed").unwrap();
        let b = id(&tmp, BRAMBLE_WORKER);
        assert_ne!(b, a);
        assert_eq!(b.len(), 16);
        let _ = std::fs::remove_dir_all(&tmp);
    }
}
