//! ARCHITECTURE.md's invariants, checked over the source tree (every crate's `src/`, `tests/`,
//! `benches/`, `examples/`, fuzz targets and build scripts), so a change that breaks one fails
//! here with the file and line instead of waiting for a reviewer:
//! - only `worker/src/sys` holds `unsafe` or calls `libc`/`nix` (tests and benches use the
//!   worker's `sys` helpers); the one exception is `tests/attack/`, the containment tests'
//!   adversary, which is not part of Bramble and must make its raw calls itself;
//! - only the master's store knows SQL (`sqlx`, SQL statements);
//! - `wire` and the scheduler never do I/O nor read the clock (time is an argument).

use std::path::{Path, PathBuf};

/// Where SQL may live: the master's store and its migrations.
const STORE_DIRS: [&str; 2] = ["master/server/src/store/", "master/server/migrations/"];
/// The containment tests' attack program: the adversary, not Bramble; it holds its own raw calls.
const ATTACK_DIR: &str = "tests/attack/";
/// The pure scheduler.
const SCHED_DIR: &str = "master/server/src/sched/";

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Every `.rs` file of the workspace but build output and fixtures, relative to the root.
fn sources() -> Vec<(String, String)> {
    fn walk(dir: &Path, root: &Path, out: &mut Vec<(String, String)>) {
        let Ok(rd) = std::fs::read_dir(dir) else {
            return;
        };
        for e in rd.flatten() {
            let p = e.path();
            let name = e.file_name().to_string_lossy().into_owned();
            if p.is_dir() {
                if name == "target"
                    || name.starts_with('.')
                    || name == "corpus"
                    || name == "artifacts"
                {
                    continue;
                }
                walk(&p, root, out);
            } else if name.ends_with(".rs") {
                let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
                out.push((rel, std::fs::read_to_string(&p).unwrap()));
            }
        }
    }
    let root = root();
    let mut out = Vec::new();
    walk(&root, &root, &mut out);
    assert!(
        out.len() > 100,
        "found only {} source files under {}",
        out.len(),
        root.display()
    );
    out
}

/// The code of a line: without a `//` comment and without string literals' contents (good enough
/// for a lint: a `"` inside a char literal or a raw string is rare in this tree and only hides
/// code from the check, never invents a violation).
fn code_of(line: &str) -> String {
    let mut out = String::new();
    let mut in_str = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        if in_str {
            if c == '\\' {
                chars.next();
            } else if c == '"' {
                in_str = false;
                out.push('"');
            }
            continue;
        }
        if c == '/' && chars.peek() == Some(&'/') {
            break;
        }
        if c == '"' {
            in_str = true;
        }
        out.push(c);
    }
    out
}

fn ident(c: Option<char>) -> bool {
    c.is_some_and(|c| c.is_alphanumeric() || c == '_')
}

/// `word` as a whole identifier.
fn has_word(code: &str, word: &str) -> bool {
    code.match_indices(word).any(|(i, _)| {
        !ident(code[..i].chars().next_back()) && !ident(code[i + word.len()..].chars().next())
    })
}

/// A path starting with the crate `name` (`libc::…`, not `std::os::unix::…`).
fn has_crate_path(code: &str, name: &str) -> bool {
    let word = format!("{name}::");
    code.match_indices(&word)
        .any(|(i, _)| !ident(code[..i].chars().next_back()))
}

fn violations(allowed: impl Fn(&str) -> bool, bad: impl Fn(&str, &str) -> bool) -> Vec<String> {
    let mut out = Vec::new();
    for (path, text) in sources() {
        if allowed(&path) || path.starts_with("tests/tests/invariants.rs") {
            continue;
        }
        for (i, line) in text.lines().enumerate() {
            if bad(&code_of(line), line) {
                out.push(format!("{path}:{}: {}", i + 1, line.trim()));
            }
        }
    }
    out
}

#[test]
fn only_the_workers_sys_module_holds_unsafe_or_calls_libc_and_nix() {
    let v = violations(
        |p| p.starts_with("worker/src/sys/") || p.starts_with(ATTACK_DIR),
        |code, _| {
            has_word(code, "unsafe") || has_crate_path(code, "libc") || has_crate_path(code, "nix")
        },
    );
    assert!(
        v.is_empty(),
        "unsafe, libc or nix outside worker/src/sys (move the call into sys and call it from there; \
         tests and benches use the helpers in worker/src/sys):\n{}",
        v.join("\n")
    );
}

#[test]
fn only_the_store_knows_sql() {
    const SQL: [&str; 8] = [
        "SELECT ",
        "INSERT INTO",
        "UPDATE ",
        "DELETE FROM",
        "CREATE TABLE",
        "CREATE INDEX",
        "PRAGMA ",
        "BEGIN IMMEDIATE",
    ];
    let v = violations(
        |p| STORE_DIRS.iter().any(|d| p.starts_with(d)),
        |code, line| {
            has_crate_path(code, "sqlx")
                || (!line.trim_start().starts_with("//")
                    && SQL.iter().any(|k| line.contains(&format!("\"{k}"))))
        },
    );
    assert!(
        v.is_empty(),
        "SQL outside the master's store (add a store method instead):\n{}",
        v.join("\n")
    );
}

#[test]
fn wire_and_the_scheduler_do_no_io_and_read_no_clock() {
    const IO: [&str; 9] = [
        "std::fs",
        "std::net::Tcp",
        "std::net::Udp",
        "SystemTime::now",
        "Instant::now",
        "std::process",
        "async_net",
        "smol::",
        "std::env::var",
    ];
    let v = violations(
        |p| {
            !(p.starts_with("wire/src/") || p.starts_with(SCHED_DIR))
                // The async adapter over a caller's streams: the one I/O module of `wire`.
                || p == "wire/src/io.rs"
                || p.ends_with("/tests.rs")
        },
        |code, _| IO.iter().any(|k| code.contains(k)),
    );
    assert!(
        v.is_empty(),
        "I/O or clock reads in wire or the scheduler (take the value as an argument):\n{}",
        v.join("\n")
    );
}
