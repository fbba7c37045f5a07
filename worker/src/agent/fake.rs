//! A [`Driver`] without a runtime, beside the real one ([`super::driver::LinuxDriver`]): pods
//! "run" as records, so the agent loop (assignment in → starts, stops and reports out;
//! reconnects; resync; offline restarts) is tested without root, namespaces or cgroups.
//!
//! It keeps the real driver's contract: pods are known by UID; a pod the master reports
//! finished is not run again; pods left by a "previous agent" ([`FakeDriver::leave_running`]) are
//! adopted at the first sync when still assigned (same PID, no start) and stopped otherwise.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};

use bramble_wire::msg::PodReport;
use bramble_wire::objects::{
    ConfigMap, Pod, PodPhase, PodStatus, ProcessState, ProcessStatus, Secret,
};

use super::Driver;
use crate::runtime::PodToRun;

/// A `network` call: own subnet and routes (subnet, via).
pub type NetworkCall = (Option<String>, Vec<(String, String)>);

/// What the fake did and runs; shared between the agent and the test.
#[derive(Debug, Default)]
pub struct FakeState {
    /// Pods running (or finished, kept for their status), by UID.
    pub pods: BTreeMap<String, (Pod, PodStatus)>,
    /// Pods left running by a previous agent, by UID, not adopted yet.
    pub leftover: BTreeMap<String, (Pod, PodStatus)>,
    /// Every start, `namespace/name`, in order.
    pub started: Vec<String>,
    /// Every stop, `namespace/name`, in order.
    pub stopped: Vec<String>,
    /// Every adoption, `namespace/name`, in order.
    pub adopted: Vec<String>,
    /// How many times the agent synced.
    pub syncs: usize,
    /// The last `configure`: config map names and whether secrets were known.
    pub configured: Option<(Vec<String>, bool)>,
    /// The last `network`: own subnet and routes.
    pub network: Option<NetworkCall>,
    next_pid: u32,
}

/// The fake driver (cheap to clone: clones share the state).
#[derive(Debug, Clone, Default)]
pub struct FakeDriver {
    state: Arc<Mutex<FakeState>>,
}

fn name(p: &Pod) -> String {
    format!("{}/{}", p.meta.namespace, p.meta.name)
}

impl FakeDriver {
    /// A fake with nothing running.
    pub fn new() -> FakeDriver {
        FakeDriver::default()
    }

    /// What it did and runs.
    pub fn state(&self) -> MutexGuard<'_, FakeState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A pod a previous agent left running with this status (to be adopted).
    pub fn leave_running(&self, pod: &Pod, status: PodStatus) {
        self.state()
            .leftover
            .insert(pod.meta.uid.clone(), (pod.clone(), status));
    }

    /// Changes a running pod's status (a process exited, restarted, got ready...).
    pub fn set_status(&self, uid: &str, status: PodStatus) {
        if let Some((_, st)) = self.state().pods.get_mut(uid) {
            *st = status;
        }
    }

    fn running_status(s: &mut FakeState, pod: &Pod) -> PodStatus {
        let processes = pod
            .spec
            .processes
            .iter()
            .map(|p| {
                s.next_pid += 1;
                ProcessStatus {
                    name: p.name.clone(),
                    state: ProcessState::Running {
                        pid: 1000 + s.next_pid,
                        started_ms: 1,
                    },
                    ready: true,
                    ..Default::default()
                }
            })
            .collect();
        PodStatus {
            phase: PodPhase::Running,
            processes,
            message: String::new(),
            updated_ms: 1,
            ip: String::new(),
        }
    }
}

impl Driver for FakeDriver {
    fn sync(&mut self, desired: &[PodToRun]) {
        let mut s = self.state();
        s.syncs += 1;
        let gone: Vec<String> = s
            .pods
            .keys()
            .filter(|u| !desired.iter().any(|r| &r.pod.meta.uid == *u))
            .cloned()
            .collect();
        for uid in gone {
            if let Some((p, _)) = s.pods.remove(&uid) {
                s.stopped.push(name(&p));
            }
        }
        for r in desired {
            let p = &r.pod;
            if s.pods.contains_key(&p.meta.uid) {
                continue;
            }
            if let Some((_, st)) = s.leftover.remove(&p.meta.uid) {
                s.adopted.push(name(p));
                s.pods.insert(p.meta.uid.clone(), (p.clone(), st));
                continue;
            }
            if matches!(p.status.phase, PodPhase::Succeeded | PodPhase::Failed) {
                s.pods
                    .insert(p.meta.uid.clone(), (p.clone(), p.status.clone()));
                continue;
            }
            let st = Self::running_status(&mut s, p);
            s.started.push(name(p));
            s.pods.insert(p.meta.uid.clone(), (p.clone(), st));
        }
        // Left by the previous agent and not assigned any more.
        let left = std::mem::take(&mut s.leftover);
        for (_, (p, _)) in left {
            s.stopped.push(name(&p));
        }
    }

    fn poll(&mut self) -> Vec<PodReport> {
        self.state()
            .pods
            .values()
            .map(|(p, st)| PodReport {
                namespace: p.meta.namespace.clone(),
                name: p.meta.name.clone(),
                uid: p.meta.uid.clone(),
                status: st.clone(),
            })
            .collect()
    }

    fn log_file(
        &self,
        _namespace: &str,
        _pod: &str,
        _uid: &str,
        _process: Option<&str>,
        _previous: bool,
    ) -> Option<PathBuf> {
        None
    }

    fn changed(&self) -> Pin<Box<dyn Future<Output = ()> + '_>> {
        // The agent's tick polls the fake.
        Box::pin(std::future::pending())
    }

    fn configure(&mut self, config_maps: &[ConfigMap], secrets: Option<&[Secret]>) {
        let names = config_maps.iter().map(|c| c.meta.name.clone()).collect();
        self.state().configured = Some((names, secrets.is_some()));
    }

    fn network(&mut self, own: Option<&str>, routes: &[(String, String)]) {
        self.state().network = Some((own.map(str::to_string), routes.to_vec()));
    }
}
