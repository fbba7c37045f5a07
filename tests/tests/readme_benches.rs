//! Every row of the README's benchmarks table names what produces it, and that exists: a
//! `cargo bench -p PACKAGE --bench NAME` command (or `same`, the row above's) followed by the
//! function of that bench that measures the row, or a script of the repository.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// Package name → folder, for every workspace member.
fn packages(root: &Path) -> BTreeMap<String, PathBuf> {
    let ws = std::fs::read_to_string(root.join("Cargo.toml")).unwrap();
    // `members = [ ... ]`, on one line or several.
    let members = ws
        .split_once("\nmembers = [")
        .and_then(|(_, rest)| rest.split_once(']'))
        .map(|(list, _)| list)
        .expect("members");
    members
        .split('"')
        .skip(1)
        .step_by(2)
        .map(|m| {
            let manifest = std::fs::read_to_string(root.join(m).join("Cargo.toml")).unwrap();
            let name = manifest
                .lines()
                .find_map(|l| l.strip_prefix("name = \""))
                .and_then(|n| n.split('"').next())
                .expect("package name")
                .to_string();
            (name, root.join(m))
        })
        .collect()
}

/// The backticked spans of a table cell.
fn code_spans(cell: &str) -> Vec<&str> {
    cell.split('`').skip(1).step_by(2).collect()
}

/// The rows of the table under `## Benchmarks`: (what, command cell).
fn bench_rows(readme: &str) -> Vec<(String, String)> {
    let section = readme
        .split("\n## Benchmarks")
        .nth(1)
        .expect("a Benchmarks section");
    let section = section.split("\n## ").next().unwrap_or(section);
    section
        .lines()
        .filter(|l| l.starts_with('|'))
        .skip(2) // header and separator
        .map(|l| {
            let cells: Vec<&str> = l.split('|').map(str::trim).collect();
            (cells[1].to_string(), cells[2].to_string())
        })
        .collect()
}

/// What is wrong with a row's producer, if anything. `prev` is the row above's command.
fn check_row(
    root: &Path,
    pkgs: &BTreeMap<String, PathBuf>,
    cell: &str,
    prev: &mut Option<String>,
) -> Result<(), String> {
    let spans = code_spans(cell);
    let (command, rest) = if cell.starts_with("same") {
        let c = prev.clone().ok_or("`same` in the first row")?;
        (c, &spans[..])
    } else {
        let c = spans.first().ok_or("no command in backticks")?.to_string();
        (c, &spans[1..])
    };
    *prev = Some(command.clone());
    let words: Vec<&str> = command.split_whitespace().collect();
    if let ["cargo", "bench", "-p", pkg, "--bench", bench] = words[..] {
        let dir = pkgs
            .get(pkg)
            .ok_or_else(|| format!("no package {pkg} in the workspace"))?;
        let manifest = std::fs::read_to_string(dir.join("Cargo.toml")).unwrap();
        if !manifest.contains(&format!("name = \"{bench}\"")) {
            return Err(format!("{pkg} declares no bench {bench}"));
        }
        let file = dir.join("benches").join(format!("{bench}.rs"));
        let src = std::fs::read_to_string(&file).map_err(|e| format!("{}: {e}", file.display()))?;
        let f = rest
            .first()
            .ok_or_else(|| format!("`{command}` names no function of the bench"))?;
        let defined = src.lines().any(|l| {
            let l = l.trim_start();
            l.starts_with(&format!("fn {f}(")) || l.starts_with(&format!("async fn {f}("))
        });
        if !defined {
            return Err(format!("{} has no fn {f}", file.display()));
        }
        return Ok(());
    }
    // A script of the repository (with arguments); every script the cell names.
    let scripts: Vec<&str> = std::iter::once(command.as_str())
        .chain(rest.iter().copied())
        .filter_map(|c| c.split_whitespace().next())
        .collect();
    if scripts.iter().all(|s| s.ends_with(".sh")) {
        for s in scripts {
            if !root.join(s).is_file() {
                return Err(format!("no script {s}"));
            }
        }
        return Ok(());
    }
    Err(format!("`{command}` is neither a cargo bench nor a script"))
}

#[test]
fn every_benchmark_row_names_a_bench_that_exists() {
    let root = root();
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let pkgs = packages(&root);
    let rows = bench_rows(&readme);
    assert!(rows.len() >= 10, "the table was not found: {rows:?}");
    let mut prev = None;
    let bad: Vec<String> = rows
        .iter()
        .filter_map(|(what, cell)| {
            check_row(&root, &pkgs, cell, &mut prev)
                .err()
                .map(|e| format!("{what}: {e}"))
        })
        .collect();
    assert!(
        bad.is_empty(),
        "README benchmark rows without an existing producer:\n{}",
        bad.join("\n")
    );
}

/// The checker itself: a removed function, bench or script and a row without one are caught.
#[test]
fn the_check_catches_missing_producers() {
    let root = root();
    let pkgs = packages(&root);
    let mut prev = None;
    let ok = "`cargo bench -p bramble-tests --bench cluster`, `master_idle_disk`";
    assert_eq!(check_row(&root, &pkgs, ok, &mut prev), Ok(()));
    assert!(check_row(&root, &pkgs, "same, `no_such_fn`", &mut prev).is_err());
    assert!(check_row(&root, &pkgs, "same", &mut prev).is_err());
    let gone = "`cargo bench -p bramble-tests --bench gone`, `main`";
    assert!(check_row(&root, &pkgs, gone, &mut prev).is_err());
    assert!(check_row(&root, &pkgs, "QEMU suite (worker logs)", &mut None).is_err());
    assert!(check_row(&root, &pkgs, "`no/such.sh 3`", &mut None).is_err());
    assert!(check_row(&root, &pkgs, "`master/fuzz/smoke.sh 120`", &mut None).is_ok());
}
