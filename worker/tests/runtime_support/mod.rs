//! Helpers of the runtime tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use bramble_testkit::{build, wait_for_last};
use bramble_wire::objects::{CgroupVersion, Controllers};
use bramble_wire::objects::{Pod, PodPhase, PodStatus, ProcessSpec, RestartPolicy};
use bramble_worker::runtime::cgroup::CgroupBase;
use bramble_worker::runtime::{Backoff, LinuxRuntime, PodHandle, RuntimeConfig, log};

pub struct Env {
    pub rt: LinuxRuntime,
    pub state: tempfile::TempDir,
    pub logs: tempfile::TempDir,
    pub parent: String,
}

impl Env {
    pub fn new(test: &str) -> Env {
        assert!(
            bramble_worker::sys::process::is_root(),
            "runtime tests must run as root (namespaces, cgroups, mounts)"
        );
        let state = tempfile::tempdir().unwrap();
        let logs = tempfile::tempdir().unwrap();
        let parent = format!("bramble-test-{}-{test}", std::process::id());
        let rt = LinuxRuntime::new(config(state.path(), &parent)).unwrap();
        let pf = rt.preflight();
        assert_ne!(
            pf.version,
            CgroupVersion::None,
            "no cgroups on this host: {:?}",
            pf.problems
        );
        for c in [Controllers::CPU, Controllers::MEMORY, Controllers::PIDS] {
            assert!(
                pf.controllers.has(c),
                "controller {c} missing: {:?}",
                pf.problems
            );
        }
        Env {
            rt,
            state,
            logs,
            parent,
        }
    }

    pub fn log(&self, pod: &str, process: &str) -> String {
        // Logs are kept per pod UID: `default_<pod>_<uid prefix>`.
        let prefix = format!("default_{pod}_");
        let dir = std::fs::read_dir(self.logs.path())
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .find(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with(&prefix))
            })
            .unwrap_or_else(|| self.logs.path().join(&prefix));
        // The previous run's log (a restart moves it aside) and then the current run's, so a
        // test sees what every run it caused printed (one previous run is kept).
        let prev = log::file_name(process, true);
        let mut out = std::fs::read(dir.join(format!("{prev}.1"))).unwrap_or_default();
        out.extend(std::fs::read(dir.join(&prev)).unwrap_or_default());
        out.extend(log::read_tail(&dir, process, 1 << 20).unwrap_or_default());
        String::from_utf8_lossy(&out).into_owned()
    }

    pub fn start(&self, pod: &Pod) -> PodHandle {
        self.rt.start_pod(pod, self.logs.path()).unwrap()
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        let cg = self.rt.cgroups();
        let _ = cg.kill_all(&self.parent);
        let _ = cg.remove(&self.parent);
        let _ = &self.state;
    }
}

pub fn config(state: &Path, parent: &str) -> RuntimeConfig {
    RuntimeConfig {
        state_dir: state.to_owned(),
        init_exe: PathBuf::from(env!("CARGO_BIN_EXE_bramble-worker")),
        cgroup_base: CgroupBase::Own,
        cgroup_parent: parent.to_owned(),
        backoff: Backoff {
            initial: Duration::from_millis(20),
            max: Duration::from_millis(100),
            reset_after: Duration::from_secs(600),
        },
        log_cap_bytes: 64 * 1024,
        tmp_size_bytes: 8 << 20,
        pod_roots_dir: None,
    }
}

/// A process running `/bin/sh -c script`.
pub fn process(name: &str, script: &str) -> ProcessSpec {
    build::sh(name, script)
}

/// Pod `name` of `processes`, with a UID as the master would give it.
pub fn pod(name: &str, processes: Vec<ProcessSpec>, policy: RestartPolicy) -> Pod {
    build::pod(name)
        .uid("0123456789abcdef")
        .restart(policy)
        .spec(|s| s.processes = processes)
        .build()
}

/// Gives `pod` the host directory `dir` at the same path (pods without a root of their own see
/// host paths only through `host_path` volumes).
pub fn host_dir(pod: &mut Pod, dir: &Path) {
    let path = dir.display().to_string();
    pod.spec.volumes.push(bramble_wire::objects::Volume {
        name: format!("host{}", pod.spec.volumes.len()),
        mount_path: path.clone(),
        source: bramble_wire::objects::VolumeSource::HostPath {
            path,
            read_only: false,
        },
    });
}

/// Waits until `pred(status)` holds, failing (with the last status) after `secs` seconds.
pub fn wait_for(
    h: &PodHandle,
    secs: u64,
    what: &str,
    pred: impl Fn(&PodStatus) -> bool,
) -> PodStatus {
    wait_for_last(Duration::from_secs(secs), what, || {
        let st = h.status();
        if pred(&st) { Ok(st) } else { Err(st) }
    })
}

pub fn finished(st: &PodStatus) -> bool {
    matches!(st.phase, PodPhase::Succeeded | PodPhase::Failed)
}
