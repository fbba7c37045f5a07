//! `crun run` as the peer runtime of the start benchmarks (Debian package `crun`): an OCI bundle
//! whose root is an empty directory with the host's `/usr` bound read-only (merged-`/usr`
//! links for `/bin`, `/lib`...), fresh `/proc` and `/dev`, PID, IPC, UTS and mount namespaces
//! (the host's network, as a Bramble pod by default) and the same limits as the Bramble pods of
//! the benches (64 MiB, half a CPU, 16 PIDs).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// An OCI bundle for `crun run`.
#[derive(Debug)]
pub struct Bundle {
    dir: PathBuf,
}

fn json_str(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

impl Bundle {
    /// A bundle in `dir` (created) running `args`; `shared` (if any) is bound read-write at
    /// `/shared` in the container.
    pub fn new(dir: &Path, args: &[&str], shared: Option<&Path>) -> Bundle {
        let root = dir.join("rootfs");
        for d in ["usr", "proc", "dev", "tmp", "shared"] {
            std::fs::create_dir_all(root.join(d)).expect("bundle rootfs");
        }
        for (link, to) in [
            ("bin", "usr/bin"),
            ("sbin", "usr/sbin"),
            ("lib", "usr/lib"),
            ("lib64", "usr/lib64"),
        ] {
            let _ = std::os::unix::fs::symlink(to, root.join(link));
        }
        let args = args
            .iter()
            .map(|a| json_str(a))
            .collect::<Vec<_>>()
            .join(",");
        let shared = shared.map_or_else(String::new, |s| {
            format!(
                r#",{{"destination":"/shared","type":"bind","source":{},"options":["rbind"]}}"#,
                json_str(&s.to_string_lossy())
            )
        });
        let config = format!(
            r#"{{"ociVersion":"1.0.0",
"process":{{"terminal":false,"user":{{"uid":0,"gid":0}},"args":[{args}],
 "env":["PATH=/usr/sbin:/usr/bin:/sbin:/bin"],"cwd":"/","noNewPrivileges":true}},
"root":{{"path":"rootfs","readonly":true}},
"hostname":"bench",
"mounts":[{{"destination":"/proc","type":"proc","source":"proc"}},
 {{"destination":"/dev","type":"tmpfs","source":"tmpfs","options":["nosuid","mode=755","size=65536k"]}},
 {{"destination":"/usr","type":"bind","source":"/usr","options":["rbind","ro"]}}{shared}],
"linux":{{"resources":{{"memory":{{"limit":67108864}},"cpu":{{"quota":50000,"period":100000}},
 "pids":{{"limit":16}}}},
 "namespaces":[{{"type":"pid"}},{{"type":"ipc"}},{{"type":"uts"}},{{"type":"mount"}}]}}}}
"#
        );
        std::fs::write(dir.join("config.json"), config).expect("config.json");
        Bundle {
            dir: dir.to_owned(),
        }
    }

    /// Starts `crun run --bundle DIR ID` (it removes the container when it exits).
    pub fn spawn(&self, id: &str) -> Child {
        Command::new("crun")
            .args(["run", "--bundle"])
            .arg(&self.dir)
            .arg(id)
            .stdin(Stdio::null())
            .spawn()
            .expect("crun (Debian package crun; scripts/dev test installs it)")
    }

    /// Runs container `id` to its end; panics unless it succeeded.
    pub fn run(&self, id: &str) {
        let st = self.spawn(id).wait().expect("wait crun");
        assert!(st.success(), "crun run {id}: {st}");
    }
}

/// crun refuses a hybrid host (cgroup v1 with a cgroup2 mount that has controllers, like this
/// host's hugetlb-only `/sys/fs/cgroup/unified`). Re-executes the running bench in a private
/// mount namespace (`unshare --mount --propagation private`) and unmounts that cgroup2 there:
/// the host's mounts are not touched. A no-op on pure v1 or pure v2 hosts.
pub fn hide_hybrid_cgroup2() {
    let mi = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut v1 = false;
    let mut v2 = None;
    for line in mi.lines() {
        let Some((pre, post)) = line.split_once(" - ") else {
            continue;
        };
        let point = pre.split(' ').nth(4).unwrap_or("").to_owned();
        match post.split(' ').next() {
            Some("cgroup") => v1 = true,
            Some("cgroup2") => v2 = Some(point),
            _ => {}
        }
    }
    let (true, Some(point)) = (v1, v2) else {
        return;
    };
    if std::env::var_os("BRAMBLE_BENCH_PRIVATE_MOUNTS").is_none() {
        use std::os::unix::process::CommandExt;
        let err = Command::new("unshare")
            .args(["--mount", "--propagation", "private", "--"])
            .arg(std::env::current_exe().expect("current exe"))
            .args(std::env::args_os().skip(1))
            .env("BRAMBLE_BENCH_PRIVATE_MOUNTS", "1")
            .exec();
        panic!("re-executing under unshare --mount: {err}");
    }
    let st = Command::new("umount").arg(&point).status().expect("umount");
    assert!(
        st.success(),
        "umount {point} in the bench's own mount namespace"
    );
}
