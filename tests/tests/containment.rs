//! The acceptance tests of pod containment, with the real binaries: a `bramble master`, a
//! `bramble-worker` and pods running `bramble-attack` (`tests/attack`) as root. The attack
//! binary reaches each pod through a read-only `host_path` volume (a directory outside `/tmp`
//! holding only it), which works whether the pod sees the host's root or a root of its own.
//!
//! - A default pod: every attack is refused (`EPERM`, `EACCES`, `EROFS`, `ENOENT`, each as the
//!   attack allows, see [`DEFAULT_POD`]), its bounding set is the 14 container defaults
//!   (`CapBnd: 00000000a80425fb`) and it runs under a seccomp filter (`Seccomp: 2`). The
//!   failure message names every attack that got through, with what it did.
//! - A `privileged = true` pod can do what a privileged container can (harmless successes
//!   only): mount a tmpfs, open a `/sys` setting for writing, `mknod` and read a block device;
//!   it has the worker's whole bounding set and no seccomp filter.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use bramble_attack::{default_pod_violations, parse, privileged_pod_violations};
use bramble_tests::{MasterProc, require_root, start_worker, wait_for, wait_for_with};

/// `bramble-attack` built now from the current sources, static for this host
/// (`cargo build -p bramble-attack --target HOST` with `+crt-static`, in its own target dir so
/// the flag does not invalidate the workspace's build; a no-op when up to date): a single file
/// that runs in whatever root the pod has.
fn attack_binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    // target/<profile>/deps/containment-xxxx -> target/
    let target = exe.ancestors().nth(3).unwrap().join("attack-static");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let vv = Command::new(rustc)
        .arg("-vV")
        .output()
        .expect("run rustc -vV");
    let vv = String::from_utf8_lossy(&vv.stdout);
    let host = vv
        .lines()
        .find_map(|l| l.strip_prefix("host: "))
        .expect("no host line in rustc -vV")
        .trim()
        .to_string();
    let out = Command::new(cargo)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["build", "-q", "-p", "bramble-attack", "--target", &host])
        .arg("--target-dir")
        .arg(&target)
        .env("RUSTFLAGS", "-C target-feature=+crt-static")
        .output()
        .expect("run cargo build -p bramble-attack");
    assert!(
        out.status.success(),
        "cargo build -p bramble-attack (static, {host}) failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let p = target.join(&host).join("debug/bramble-attack");
    assert!(p.is_file(), "{} missing after cargo build", p.display());
    p
}

/// A directory outside `/tmp` (a pod's `/tmp` is its own) holding only a copy of the attack
/// binary, to be bound read-only into pods at the same path.
fn attack_volume() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::Builder::new()
        .prefix("containment-")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .unwrap();
    let bin = dir.path().join("bramble-attack");
    std::fs::copy(attack_binary(), &bin).unwrap();
    let path = dir.path().to_path_buf();
    (dir, path)
}

/// A block device this host lets root read, as `major:minor`: the root file system's disk, or
/// else `loop0` (7:0). A sandboxed host may refuse its own disk even to root; the attack must
/// be one that would work without Bramble's defences.
fn readable_block_device() -> String {
    use std::os::unix::fs::MetadataExt;
    let dev = std::fs::metadata("/").unwrap().dev();
    let major = ((dev >> 8) & 0xfff) | ((dev >> 32) & !0xfff);
    let minor = (dev & 0xff) | ((dev >> 12) & !0xff);
    let mut candidates = Vec::new();
    if major != 0 {
        candidates.push((major, minor));
    }
    candidates.push((7, 0));
    for (ma, mi) in &candidates {
        let uevent = std::fs::read_to_string(format!("/sys/dev/block/{ma}:{mi}/uevent"));
        let name = uevent.ok().and_then(|u| {
            u.lines()
                .find_map(|l| l.strip_prefix("DEVNAME=").map(String::from))
        });
        if let Some(name) = name
            && std::fs::File::open(Path::new("/dev").join(name)).is_ok()
        {
            return format!("{ma}:{mi}");
        }
    }
    panic!(
        "no block device this host lets root read among {candidates:?}: the mknod attack needs \
         one (load the loop module: modprobe loop)"
    )
}

/// The worker's bounding set as this test sees it (the worker is its child): what a
/// privileged pod must get.
fn own_status(key: &str) -> String {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| {
            l.strip_prefix(key)?
                .strip_prefix(':')
                .map(|v| v.trim().to_string())
        })
        .unwrap_or_else(|| panic!("no {key} in /proc/self/status"))
}

/// Runs `bramble-attack` in pod `name` (more pod fields in `pod_fields`) on a fresh worker
/// `node`, and returns its output once it is done.
fn run_attack(node: &str, name: &str, pod_fields: &str) -> String {
    require_root();
    let (_vol, dir) = attack_volume();
    let block = readable_block_device();
    let tmp = tempfile::tempdir().unwrap();
    let m = MasterProc::start(
        &tmp.path().join("master"),
        &["--heartbeat-interval", "500ms"],
    );
    let state = tmp.path().join(node);
    let _w = start_worker(&m, node, &state, &[]);
    wait_for(Duration::from_secs(20), "node Ready", || {
        m.node_ready(node).then_some(())
    });
    let d = dir.display();
    let manifest = format!(
        r#"
[[pod]]
name = "{name}"
restart_policy = "Never"
{pod_fields}
[[pod.process]]
name = "attack"
command = ["{d}/bramble-attack", "--state-dir", "{state}", "--block", "{block}"]
memory = "64Mi"
[[pod.volume]]
name = "attack"
mount_path = "{d}"
host_path = "{d}"
read_only = true
"#,
        state = state.display()
    );
    let f = tmp.path().join("pod.toml");
    std::fs::write(&f, manifest).unwrap();
    m.ok(&["apply", "-f", f.to_str().unwrap()]);
    wait_for_with(
        Duration::from_secs(60),
        &format!("pod {name} to finish its attacks"),
        || {
            let done = m
                .pod_status(name)
                .is_some_and(|(phase, _)| phase == "Succeeded" || phase == "Failed");
            let logs = m.cli(&["logs", name]);
            let out = String::from_utf8_lossy(&logs.stdout).into_owned();
            (done && out.contains("done\tok")).then_some(out)
        },
        || {
            m.diag(&[
                &["describe", "pod", name],
                &["logs", name],
                &["get", "pods", "-o", "wide"],
            ])
        },
    )
}

#[test]
fn a_default_pod_is_contained() {
    let out = run_attack("contain-default", "attack-default", "");
    // Printed for the record (`--nocapture`): every attack and its answer.
    eprintln!("default pod:\n{out}");
    let got = parse(&out);
    let v = default_pod_violations(&got);
    assert!(
        v.is_empty(),
        "a default pod (root inside) is not contained: {} attack(s)/check(s) got through:\n  {}\n\
         \nbramble-attack's whole output:\n{out}",
        v.len(),
        v.join("\n  ")
    );
}

#[test]
fn a_privileged_pod_can_do_what_a_privileged_container_can() {
    let out = run_attack("contain-priv", "attack-privileged", "privileged = true");
    eprintln!("privileged pod:\n{out}");
    let v = privileged_pod_violations(&parse(&out), &own_status("CapBnd"));
    assert!(
        v.is_empty(),
        "a privileged pod lacks what a privileged container has:\n  {}\n\nbramble-attack's whole output:\n{out}",
        v.join("\n  ")
    );
}
