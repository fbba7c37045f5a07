//! Scenario: pod containment on the emulated boards (real arm64 and armhf Debian kernels, pure
//! cgroup v2) — the same judge as the host's `tests/tests/containment.rs`
//! ([`bramble_attack::default_pod_violations`], [`bramble_attack::privileged_pod_violations`]).
//!
//! `bramble-attack` is cross-built per board ([`Bin::Attack`]: static, aarch64 musl and armv7
//! glibc) and pushed as one artifact with a variant per architecture: a root holding only the
//! binary and the mount points a pod's root needs. On each guest node a default pod and a
//! `privileged = true` pod run it from that artifact root, as root, with the worker's state dir
//! (`/var/lib/bramble-worker`, on the state disk) and the first disk of `/proc/partitions`
//! (`vda`) as targets. The default pod must be refused every attack and show the 14 default
//! capabilities and `Seccomp: 2`; the privileged one must mount a tmpfs, open a `/sys` setting
//! for writing, read the disk through a node it made, with the kernel's whole capability set
//! and no seccomp filter. Both boards run while both guests are up (after arch pinning).

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};

use super::{BOARDS, Cluster, pod_phase};
use crate::build::{self, Bin};
use crate::qemu::STATE_DIR;

/// The artifact's name.
pub const ARTIFACT: &str = "bramble-attack";

/// The pod names on board `i`: (default, privileged).
pub fn pod_names(i: usize) -> (String, String) {
    (format!("attack-default-{i}"), format!("attack-priv-{i}"))
}

/// One pod running the attack from the artifact root on `node`.
pub fn pod_manifest(name: &str, node: &str, privileged: bool) -> String {
    let q = |s: &str| serde_json::Value::String(s.to_string()).to_string();
    let mut m = format!(
        "[[pod]]\nname = {}\nrestart_policy = \"Never\"\nnode = {}\nrootfs = {}\n",
        q(name),
        q(node),
        q(&format!("artifact:{ARTIFACT}"))
    );
    if privileged {
        m.push_str("privileged = true\n");
    }
    let _ = write!(
        m,
        "[[pod.process]]\nname = \"attack\"\ncommand = [\"/bramble-attack\", \"--state-dir\", {}]\nmemory = \"32Mi\"\n",
        q(STATE_DIR)
    );
    m
}

/// The artifact's tree: the binary at `/bramble-attack` and the mount points (`proc`, `dev`,
/// `tmp`, `sys`, `etc`), tarred into `tarball`.
fn make_tarball(binary: &Path, root: &Path, tarball: &Path) -> Result<()> {
    let _ = fs::remove_dir_all(root);
    for d in ["proc", "dev", "tmp", "sys", "etc"] {
        fs::create_dir_all(root.join(d))?;
    }
    fs::copy(binary, root.join("bramble-attack"))
        .with_context(|| format!("copy {}", binary.display()))?;
    let st = std::process::Command::new("tar")
        .arg("-C")
        .arg(root)
        .arg("-cf")
        .arg(tarball)
        .arg(".")
        .status()
        .context("run tar")?;
    if !st.success() {
        bail!("tar -cf {} failed", tarball.display());
    }
    Ok(())
}

/// The attack's output in pod `name`, once it printed `done` (≤ 180 s: the first pod of a node
/// waits for the artifact's pull).
fn attack_output(c: &mut Cluster, name: &str) -> Result<String> {
    c.wait(
        Duration::from_secs(180),
        &format!("`done` in `bramble logs {name}`"),
        |c, last| {
            let p = c.master.pod(name)?;
            let (_, out, err) = c.master.cli(&["logs", name])?;
            *last = format!("logs {out:?} {err:?}; pod {p:?}");
            let done = p
                .as_ref()
                .is_some_and(|p| ["Succeeded", "Failed"].contains(&pod_phase(p)));
            Ok((done && out.contains("done\tok")).then_some(out))
        },
    )
}

/// The scenario (see the module docs).
pub fn containment_on_both_boards(c: &mut Cluster) -> Result<String> {
    let result = run(c);
    // Remove whatever exists, pass or fail.
    let mut names = Vec::new();
    for i in 0..BOARDS.len() {
        let (d, p) = pod_names(i);
        names.push(d);
        names.push(p);
    }
    let cleanup = c.master.list("pods").and_then(|all| {
        let there: Vec<&str> = names
            .iter()
            .map(String::as_str)
            .filter(|n| all.iter().any(|p| p["meta"]["name"] == *n))
            .collect();
        c.delete_pods(&there)
    });
    let _ = c.master.cli(&["delete", "artifact", ARTIFACT]);
    let summary = result?;
    cleanup?;
    Ok(summary)
}

fn run(c: &mut Cluster) -> Result<String> {
    // Build and push a variant per board.
    let mut nodes = Vec::new();
    for i in 0..BOARDS.len() {
        let (board, name) = {
            let n = c.node(i)?;
            (n.board.clone(), n.name().to_string())
        };
        let built = build::build(&board, true, &[Bin::Attack]).with_context(|| {
            format!(
                "cross-building bramble-attack for {} ({})",
                board.name, board.target
            )
        })?;
        let root: PathBuf = c.dir.join(format!("attack-root-{}", board.name));
        let tarball = c.dir.join(format!("attack-{}.tar", board.name));
        make_tarball(&built[0].stripped, &root, &tarball)?;
        c.master.ok(&[
            "artifact",
            "push",
            &tarball.to_string_lossy(),
            "--arch",
            board.arch.as_str(),
            "--name",
            ARTIFACT,
        ])?;
        nodes.push((i, name));
    }
    // The default pods first, in their own apply: a manifest the master refuses (a
    // `privileged` it does not know) must not keep them from being judged.
    let mut defaults = String::new();
    let mut privileged = String::new();
    for (i, node) in &nodes {
        let (d, p) = pod_names(*i);
        defaults.push_str(&pod_manifest(&d, node, false));
        defaults.push('\n');
        privileged.push_str(&pod_manifest(&p, node, true));
        privileged.push('\n');
    }
    c.master.apply("attack-default", &defaults)?;
    let priv_applied = c.master.apply("attack-privileged", &privileged);

    let mut failures = Vec::new();
    let mut summary = Vec::new();
    for (i, node) in &nodes {
        let (d, p) = pod_names(*i);
        let out = attack_output(c, &d)?;
        let got = bramble_attack::parse(&out);
        let v = bramble_attack::default_pod_violations(&got);
        if v.is_empty() {
            summary.push(format!("{node}: default pod contained"));
        } else {
            failures.push(format!(
                "{node}: a default pod is not contained ({} got through):\n  {}\n  output:\n{}",
                v.len(),
                v.join("\n  "),
                indent(&out)
            ));
        }
        match &priv_applied {
            Err(e) => failures.push(format!("{node}: the privileged pod was refused: {e:#}")),
            Ok(_) => {
                let out = attack_output(c, &p)?;
                let got = bramble_attack::parse(&out);
                let full = bramble_attack::full_caps_of(&got).unwrap_or_default();
                let v = bramble_attack::privileged_pod_violations(&got, &full);
                if v.is_empty() {
                    summary.push(format!("{node}: privileged pod has CapBnd {full}"));
                } else {
                    failures.push(format!(
                        "{node}: a privileged pod lacks what a privileged container has:\n  {}\n  output:\n{}",
                        v.join("\n  "),
                        indent(&out)
                    ));
                }
            }
        }
    }
    if !failures.is_empty() {
        return Err(c.failure(&failures.join("\n")));
    }
    Ok(summary.join("; "))
}

fn indent(s: &str) -> String {
    s.lines()
        .map(|l| format!("    {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pods_run_the_attack_from_the_artifact_root_on_their_node() {
        let m = pod_manifest("attack-priv-1", "qemu-virt-armv7", true);
        assert!(
            m.contains("node = \"qemu-virt-armv7\"")
                && m.contains("rootfs = \"artifact:bramble-attack\"")
                && m.contains("privileged = true")
                && m.contains(
                    r#"command = ["/bramble-attack", "--state-dir", "/var/lib/bramble-worker"]"#
                ),
            "{m}"
        );
        assert!(!pod_manifest("attack-default-0", "n", false).contains("privileged"));
        // The privileged field belongs to the pod, before its first process table.
        assert!(m.find("privileged").unwrap() < m.find("[[pod.process]]").unwrap());
    }
}
