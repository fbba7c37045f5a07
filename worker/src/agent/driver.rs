//! The agent's [`Driver`] over the Linux runtime: starts, adopts, stops and reports pods.

use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bramble_wire::msg::PodReport;
use bramble_wire::objects::{ConfigMap, NetworkMode, PodPhase, PodStatus, Secret};
use bramble_wire::{CgroupVersion, Controllers};

use super::Driver;
use crate::persist::{RunDir, StateDir};
use crate::runtime::volumes::{self, ConfigVolumes};
use crate::runtime::{LinuxRuntime, PodHandle, PodKey, PodNetwork, PodToRun, RuntimeConfig};

/// Where the driver keeps things.
#[derive(Debug, Clone)]
pub struct Paths {
    /// The state dir (persistent): the log root.
    pub state: StateDir,
    /// The run dir (tmpfs: `/run/...`): pods' run dirs (what re-adoption reads), config map
    /// and secret volumes.
    pub run: RunDir,
    /// Parent cgroup of the pods.
    pub cgroup_parent: String,
    /// The bridge isolated pods join (`bramble0`).
    pub pod_bridge: String,
}

/// Where a pod the driver knows is.
#[derive(Debug)]
enum Slot {
    /// Started or adopted: the runtime's handle.
    Running(Box<PodHandle>),
    /// Not started: it waits for a config map, a secret or the pod subnet (retried at every
    /// sync).
    Waiting,
    /// Over: ran to completion (cleaned up), failed to start, or finished before (the master
    /// says so). Its final status stays until the pod leaves the assignment.
    Done,
}

/// One assigned pod.
#[derive(Debug)]
struct PodSlot {
    /// The pod as resolved when it was started (its wire pod as assigned).
    run: PodToRun,
    slot: Slot,
    /// Final or last known status.
    last: PodStatus,
}

impl PodSlot {
    fn new(run: &PodToRun, slot: Slot, last: PodStatus) -> PodSlot {
        PodSlot {
            run: run.clone(),
            slot,
            last,
        }
    }

    fn handle(&self) -> Option<&PodHandle> {
        match &self.slot {
            Slot::Running(h) => Some(h),
            _ => None,
        }
    }
}

/// Runs pods with [`LinuxRuntime`].
pub struct LinuxDriver {
    rt: LinuxRuntime,
    logs: PathBuf,
    pods: HashMap<String, PodSlot>,
    adopted: Option<HashMap<String, PodHandle>>,
    vols: Arc<ConfigVolumes>,
    config_maps: Vec<ConfigMap>,
    /// `None` until the master sent them (they are never kept on disk).
    secrets: Option<Vec<Secret>>,
    pod_bridge: String,
    /// The routes to other nodes' pod subnets last installed (`None`: not yet synced).
    routes: Option<Vec<(String, String)>>,
    /// The thread that removes finished pods' cgroups and run dirs (started at the first).
    cleaner: Option<std::sync::mpsc::Sender<PodHandle>>,
}

impl std::fmt::Debug for LinuxDriver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "LinuxDriver({} pods)", self.pods.len())
    }
}

fn terminal(p: PodPhase) -> bool {
    matches!(p, PodPhase::Succeeded | PodPhase::Failed)
}

impl LinuxDriver {
    /// Detects cgroups and finds the pods left running by a previous agent.
    pub fn new(paths: &Paths) -> anyhow::Result<LinuxDriver> {
        let cfg = RuntimeConfig {
            state_dir: paths.run.pods(),
            cgroup_parent: paths.cgroup_parent.clone(),
            pod_roots_dir: Some(paths.state.pod_roots()),
            ..Default::default()
        };
        let rt = LinuxRuntime::new(cfg)?;
        let logs = paths.state.logs();
        std::fs::create_dir_all(&logs)?;
        let adopted = rt
            .adopt_existing()?
            .into_iter()
            .map(|h| (h.key().to_string(), h))
            .collect::<HashMap<_, _>>();
        if !adopted.is_empty() {
            tracing::info!(
                pods = adopted.len(),
                "found running pods from a previous agent"
            );
        }
        let vols = Arc::new(ConfigVolumes::new(&paths.run));
        vols.gc(&adopted.keys().cloned().collect());
        Ok(LinuxDriver {
            rt,
            logs,
            pods: HashMap::new(),
            adopted: Some(adopted),
            vols,
            config_maps: Vec::new(),
            secrets: None,
            pod_bridge: paths.pod_bridge.clone(),
            routes: None,
            cleaner: None,
        })
    }

    /// cgroup version and enforceable controllers.
    pub fn cgroup_info(&self) -> (CgroupVersion, Controllers) {
        let p = self.rt.preflight();
        (p.version, p.controllers)
    }

    /// Preflight problems, each with its fix.
    pub fn problems(&self) -> Vec<String> {
        self.rt.preflight().problems.clone()
    }

    fn stop_in_background(&self, mut h: PodHandle, grace: Duration) {
        let vols = Arc::clone(&self.vols);
        let logs = self.logs.join(h.key().log_dir_name());
        std::thread::spawn(move || {
            let key = h.key().to_string();
            if let Err(e) = h.stop(grace) {
                tracing::warn!(pod = %key, "stop: {e}");
            }
            vols.remove_pod(&key);
            remove_logs(&logs);
        });
    }

    /// Records a pod that did not start: Pending ones wait (retried at every sync), the others
    /// are over.
    fn not_started(&mut self, r: &PodToRun, st: PodStatus) {
        let p = &r.pod;
        let slot = if st.phase == PodPhase::Pending {
            tracing::info!(pod = %p.meta.name, namespace = %p.meta.namespace, "waiting: {}", st.message);
            Slot::Waiting
        } else {
            tracing::warn!(pod = %p.meta.name, namespace = %p.meta.namespace, "{}", st.message);
            Slot::Done
        };
        self.pods
            .insert(p.meta.uid.clone(), PodSlot::new(r, slot, st));
    }

    /// Whether `run` can start now, with its config map and secret volumes and `env_from`
    /// prepared: `Ok(dirs)`, or its status: Pending with what it waits for (a config map, a
    /// secret, the pod subnet) and how to fix it, or Failed.
    fn ready_to_start(&self, run: &PodToRun) -> Result<Option<volumes::PodConfigDirs>, PodStatus> {
        let p = &run.pod;
        if p.spec.network == NetworkMode::Isolated && self.rt.pod_network().is_none() {
            return Err(PodStatus {
                phase: PodPhase::Pending,
                message: "waiting for this node's pod subnet from the master \
                          (network = \"isolated\")"
                    .into(),
                ..Default::default()
            });
        }
        if !volumes::uses_config(p) {
            return Ok(None);
        }
        if let Some(message) = volumes::missing(p, &self.config_maps, self.secrets.as_deref()) {
            return Err(PodStatus {
                phase: PodPhase::Pending,
                message,
                ..Default::default()
            });
        }
        let key = PodKey::of(p).map_err(|e| failed(format!("start failed: {e}")))?;
        let secrets = self.secrets.as_deref().unwrap_or_default();
        self.vols
            .write_pod(&key, p, &self.config_maps, secrets)
            .map(Some)
            .map_err(|e| failed(format!("preparing config map and secret volumes: {e}")))
    }

    /// Ends a pod that ran to completion on the cleaner thread: its cgroups and run dir go
    /// there, not in the event loop between two starts.
    fn clean_up(&mut self, h: PodHandle) {
        let tx = self.cleaner.get_or_insert_with(|| {
            let (tx, rx) = std::sync::mpsc::channel::<PodHandle>();
            std::thread::spawn(move || {
                for mut h in rx {
                    if let Err(e) = h.stop(Duration::from_millis(100)) {
                        tracing::warn!(pod = %h.key(), "clean-up: {e}");
                    }
                }
            });
            tx
        });
        if let Err(std::sync::mpsc::SendError(mut h)) = tx.send(h) {
            let _ = h.stop(Duration::from_millis(100));
        }
    }
}

/// Removes the logs of a pod that is no longer assigned (they are kept per pod UID: nothing
/// else reads them once the master forgot the pod).
fn remove_logs(dir: &std::path::Path) {
    match std::fs::remove_dir_all(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => tracing::warn!(dir = %dir.display(), "removing a gone pod's logs: {e}"),
    }
}

fn failed(message: String) -> PodStatus {
    PodStatus {
        phase: PodPhase::Failed,
        message,
        ..Default::default()
    }
}

impl Driver for LinuxDriver {
    fn sync(&mut self, desired: &[PodToRun]) {
        let mut adopted = self.adopted.take().unwrap_or_default();
        let want: HashMap<&str, &PodToRun> = desired
            .iter()
            .map(|r| (r.pod.meta.uid.as_str(), r))
            .collect();
        // Pods waiting for a config map or secret try again.
        self.pods.retain(|_, e| !matches!(e.slot, Slot::Waiting));
        // Stop what is no longer wanted.
        let gone: Vec<String> = self
            .pods
            .keys()
            .filter(|u| !want.contains_key(u.as_str()))
            .cloned()
            .collect();
        for uid in gone {
            if let Some(e) = self.pods.remove(&uid) {
                let pod = &e.run.pod;
                match e.slot {
                    Slot::Running(h) => {
                        tracing::info!(pod = %pod.meta.name, namespace = %pod.meta.namespace, "stopping");
                        self.stop_in_background(
                            *h,
                            Duration::from_millis(u64::from(pod.spec.termination_grace_ms)),
                        );
                    }
                    Slot::Waiting | Slot::Done => {
                        if let Ok(k) = PodKey::of(pod) {
                            self.vols.remove_pod(&k.to_string());
                            remove_logs(&self.logs.join(k.log_dir_name()));
                        }
                    }
                }
            }
        }
        // Adopt what is new and was running, collect what is new to start.
        let mut to_start: Vec<(&PodToRun, Option<volumes::PodConfigDirs>)> = Vec::new();
        let mut starting: std::collections::HashSet<&str> = std::collections::HashSet::new();
        for r in desired {
            let p = &r.pod;
            if self.pods.contains_key(&p.meta.uid) {
                continue;
            }
            let key = match PodKey::of(p) {
                Ok(k) => k.to_string(),
                Err(e) => {
                    tracing::warn!(pod = %p.meta.name, "cannot run: {e}");
                    continue;
                }
            };
            if let Some(h) = adopted.remove(&key) {
                tracing::info!(pod = %p.meta.name, namespace = %p.meta.namespace, pid = h.init_pid(), "re-adopted running pod");
                let last = h.status();
                self.pods.insert(
                    p.meta.uid.clone(),
                    PodSlot::new(r, Slot::Running(Box::new(h)), last),
                );
                continue;
            }
            if terminal(p.status.phase) {
                // Already ran to completion (the master says so): do not run it again.
                self.pods.insert(
                    p.meta.uid.clone(),
                    PodSlot::new(r, Slot::Done, p.status.clone()),
                );
                continue;
            }
            if !starting.insert(p.meta.uid.as_str()) {
                continue;
            }
            match self.ready_to_start(r) {
                Ok(dirs) => to_start.push((r, dirs)),
                Err(st) => self.not_started(r, st),
            }
        }
        // Start them together: prepared in parallel, one cgroup grace period for the batch.
        if !to_start.is_empty() {
            let batch: Vec<(&PodToRun, Option<&volumes::PodConfigDirs>)> =
                to_start.iter().map(|(r, d)| (*r, d.as_ref())).collect();
            let results = self.rt.start_pods(&batch, &self.logs);
            for ((r, dirs), res) in to_start.iter().zip(results) {
                let p = &r.pod;
                match res {
                    Ok(h) => {
                        tracing::info!(pod = %p.meta.name, namespace = %p.meta.namespace, pid = h.init_pid(), "started");
                        let st = h.status();
                        self.pods.insert(
                            p.meta.uid.clone(),
                            PodSlot::new(r, Slot::Running(Box::new(h)), st),
                        );
                    }
                    Err(e) => {
                        if dirs.is_some()
                            && let Ok(k) = PodKey::of(p)
                        {
                            self.vols.remove_pod(&k.to_string());
                        }
                        self.not_started(r, failed(format!("start failed: {e}")));
                    }
                }
            }
        }
        // Adopted pods that are not assigned any more (deleted while we were away).
        for (key, h) in adopted {
            tracing::info!(pod = %key, "stopping a pod that is no longer assigned");
            self.stop_in_background(h, Duration::from_secs(10));
        }
    }

    fn configure(&mut self, config_maps: &[ConfigMap], secrets: Option<&[Secret]>) {
        self.config_maps = config_maps.to_vec();
        if let Some(s) = secrets {
            self.secrets = Some(s.to_vec());
        }
        // Running pods see updates in place (their env_from applies at their next start).
        let secrets = self.secrets.as_deref().unwrap_or_default();
        for e in self.pods.values() {
            // Before the master sent the secrets, pods using them keep what they have.
            let pod = &e.run.pod;
            if e.handle().is_none()
                || !volumes::uses_config(pod)
                || (self.secrets.is_none() && volumes::uses_secrets(pod))
            {
                continue;
            }
            let Ok(key) = PodKey::of(pod) else {
                continue;
            };
            if let Err(err) = self.vols.write_pod(&key, pod, &self.config_maps, secrets) {
                tracing::warn!(pod = %key, "updating config map and secret volumes: {err}");
            }
        }
    }

    fn network(&mut self, own: Option<&str>, routes: &[(String, String)]) {
        let net = own.and_then(|cidr| {
            let n = PodNetwork::parse(&self.pod_bridge, cidr);
            if n.is_none() {
                tracing::warn!(%cidr, "the master sent a pod subnet this worker cannot use");
            }
            n
        });
        if net != self.rt.pod_network() {
            tracing::info!(subnet = ?net.as_ref().map(PodNetwork::cidr), bridge = %self.pod_bridge, "pod subnet");
            self.rt.set_pod_network(net);
        }
        if self.routes.as_deref() == Some(routes) {
            return;
        }
        match crate::sys::podnet::sync_routes(routes) {
            Ok(changes) => {
                if changes > 0 {
                    tracing::info!(
                        routes = routes.len(),
                        changes,
                        "routes to other nodes' pod subnets"
                    );
                }
                self.routes = Some(routes.to_vec());
            }
            Err(e) => tracing::warn!(
                "cannot route the other nodes' pod subnets ({e}): isolated pods elsewhere are \
                 unreachable from this node; nodes must share a link (host-gw routing)"
            ),
        }
    }

    fn poll(&mut self) -> Vec<PodReport> {
        let mut out = Vec::with_capacity(self.pods.len());
        let mut finished = Vec::new();
        for e in self.pods.values_mut() {
            if let Slot::Running(h) = &e.slot {
                e.last = h.status();
                if h.exited() || terminal(e.last.phase) {
                    // Ran to completion: its final status and logs stay; its cgroup and run
                    // dir are removed on the cleaner thread.
                    if let Slot::Running(h) = std::mem::replace(&mut e.slot, Slot::Done) {
                        // Read again: the init may have exited after the read above, and this
                        // is the status the pod keeps.
                        e.last = h.status();
                        finished.push(*h);
                    }
                }
            }
            let pod = &e.run.pod;
            out.push(PodReport {
                namespace: pod.meta.namespace.clone(),
                name: pod.meta.name.clone(),
                uid: pod.meta.uid.clone(),
                status: e.last.clone(),
            });
        }
        for h in finished {
            self.clean_up(h);
        }
        out
    }

    fn changed(&self) -> Pin<Box<dyn Future<Output = ()> + '_>> {
        let mut futs: Vec<Pin<Box<dyn Future<Output = ()> + '_>>> = self
            .pods
            .values()
            .filter_map(PodSlot::handle)
            .map(|h| {
                Box::pin(async move {
                    if h.changed().await.is_err() {
                        // Cannot watch this pod: fall back to the tick.
                        std::future::pending::<()>().await;
                    }
                }) as Pin<Box<dyn Future<Output = ()> + '_>>
            })
            .collect();
        if futs.is_empty() {
            return Box::pin(std::future::pending());
        }
        Box::pin(std::future::poll_fn(move |cx| {
            for f in futs.iter_mut() {
                if f.as_mut().poll(cx).is_ready() {
                    return std::task::Poll::Ready(());
                }
            }
            std::task::Poll::Pending
        }))
    }

    fn usage(&self) -> Vec<super::usage::PodSample> {
        use super::usage::{Counters, PodSample, process_counters};
        use bramble_wire::objects::ProcessState;
        let cg = self.rt.cgroups();
        let of_cgroup = |rel: &str| Counters {
            cpu_ns: cg.cpu_usage_ns(rel).unwrap_or(0),
            memory_bytes: cg.memory_working_set(rel).ok().flatten().unwrap_or(0),
        };
        let mut out = Vec::new();
        for e in self.pods.values() {
            let Some(h) = e.handle() else { continue };
            let pod = &e.run.pod;
            // Cached: rereads the status file only after the init signalled a change.
            let status = h.status();
            let processes = pod
                .spec
                .processes
                .iter()
                .map(|p| {
                    let c = if crate::runtime::own_cgroup(pod, p) {
                        of_cgroup(&format!("{}/p-{}", h.cgroup(), p.name))
                    } else {
                        let pid = status.processes.iter().find_map(|s| match s.state {
                            ProcessState::Running { pid, .. } if s.name == p.name => Some(pid),
                            _ => None,
                        });
                        pid.and_then(process_counters).unwrap_or_default()
                    };
                    (p.name.clone(), c)
                })
                .collect();
            out.push(PodSample {
                namespace: pod.meta.namespace.clone(),
                name: pod.meta.name.clone(),
                uid: pod.meta.uid.clone(),
                total: of_cgroup(h.cgroup()),
                processes,
            });
        }
        out
    }

    fn exec_target(
        &self,
        namespace: &str,
        pod: &str,
        process: Option<&str>,
    ) -> Result<super::exec::ExecTarget, String> {
        let e = self
            .pods
            .values()
            .find(|e| e.run.pod.meta.namespace == namespace && e.run.pod.meta.name == pod)
            .ok_or_else(|| format!("pod {namespace}/{pod} is not on this node (any more)"))?;
        if let Some(name) = process
            && !e.run.pod.spec.processes.iter().any(|p| p.name == name)
        {
            let names: Vec<&str> = e
                .run
                .pod
                .spec
                .processes
                .iter()
                .map(|p| p.name.as_str())
                .collect();
            return Err(format!(
                "pod {namespace}/{pod} has no process {name:?}; it has {names:?} (pick one with -p)"
            ));
        }
        match e.handle() {
            Some(h) if h.init_pid() > 0 && !h.exited() => Ok(super::exec::ExecTarget {
                state_dir: h.state_dir().to_path_buf(),
                init_pid: h.init_pid(),
            }),
            _ => Err(format!(
                "pod {namespace}/{pod} is not running on this node ({:?}); see `bramble describe pod {pod} -n {namespace}`",
                e.last.phase
            )),
        }
    }

    fn log_file(
        &self,
        namespace: &str,
        pod: &str,
        uid: &str,
        process: Option<&str>,
        previous: bool,
    ) -> Option<PathBuf> {
        let p = &self
            .pods
            .values()
            .find(|e| {
                let m = &e.run.pod.meta;
                m.namespace == namespace && m.name == pod && (uid.is_empty() || m.uid == uid)
            })?
            .run
            .pod;
        let proc_name = match process {
            Some(name) => name.to_string(),
            None => p.spec.processes.first()?.name.clone(),
        };
        let key = PodKey::of(p).ok()?;
        let mut dir = self.logs.join(key.log_dir_name());
        if !dir.exists() {
            // A pod started by an agent from before logs were kept per UID writes to the
            // directory of its name.
            let legacy = self.logs.join(key.legacy_log_dir_name());
            if legacy.exists() {
                dir = legacy;
            }
        }
        Some(dir.join(crate::runtime::log::file_name(&proc_name, previous)))
    }
}

/// The default paths: logs under the state dir, runtime state in the run dir.
pub fn default_paths(state: &StateDir, run: &RunDir, cgroup_parent: &str) -> Paths {
    Paths {
        state: state.clone(),
        run: run.clone(),
        cgroup_parent: cgroup_parent.to_string(),
        pod_bridge: "bramble0".into(),
    }
}
