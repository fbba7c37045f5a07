//! cgroups v1 and v2, written directly as cgroupfs files.
//!
//! We do not use the `cgroups-rs` crate: it pulls zbus and nix 0.25 into a binary meant to be
//! ≤ 3 MB, and it has the quirks listed in docs/design.md §11 (raw `cpu.shares` written to `cpu.weight`,
//! `kill()` v2-only, swallowed controller-enabling errors, no cleanup on drop, dirs under
//! `name=systemd` on v1). cgroupfs is just files: `mkdir`, write a value, `rmdir`.
//!
//! Layout: every cgroup is named by a path relative to a *base* (`bramble/<pod-key>`, with leaves
//! `bramble/<pod-key>/_init` for the pod init and the processes without their own limits, and
//! `bramble/<pod-key>/p-<name>` for a process with its own limits). Processes live only in leaves,
//! which v2's "no internal processes" rule requires; v1 uses the same layout.
//!
//! The managers take their roots as paths, so the v2 manager is tested against a temp dir.

use std::collections::BTreeSet;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bramble_wire::objects::{CgroupVersion, Controllers, Resources};

use super::devices::DeviceRules;
use crate::sys::process as sysproc;

/// Errors of cgroup handling: lowercase, with the path.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    /// A cgroupfs file or directory could not be read, written, created or removed.
    #[error("{op} {path:?}: {err}")]
    Io {
        /// What was done.
        op: &'static str,
        /// Where.
        path: PathBuf,
        /// The error.
        err: std::io::Error,
    },
    /// Tasks survived repeated SIGKILLs.
    #[error("cgroup {path:?} still has tasks after {tries} kill rounds")]
    NotEmpty {
        /// The cgroup.
        path: PathBuf,
        /// Kill rounds tried.
        tries: u32,
    },
    /// The cgroup v2 device filter could not be loaded or attached.
    #[error("device filter of cgroup {path:?}: {err}")]
    DeviceFilter {
        /// The cgroup.
        path: PathBuf,
        /// The error.
        err: crate::sys::SysError,
    },
    /// A signal could not be sent.
    #[error("killing tasks of {path:?}: {err}")]
    Kill {
        /// The cgroup.
        path: PathBuf,
        /// The error.
        err: crate::sys::SysError,
    },
}

/// Result of cgroup handling.
pub type Result<T> = std::result::Result<T, CgroupError>;

fn io<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> CgroupError + 'a {
    move |err| CgroupError::Io {
        op,
        path: path.to_owned(),
        err,
    }
}

fn write(path: &Path, value: &str) -> Result<()> {
    std::fs::write(path, value).map_err(io("write", path))
}

fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(io("read", path))
}

fn mkdir_p(path: &Path) -> Result<()> {
    std::fs::create_dir_all(path).map_err(io("mkdir", path))
}

/// CFS period used for CPU quotas.
pub const CPU_PERIOD_US: u64 = 100_000;

/// CPU quota in µs per [`CPU_PERIOD_US`] for `millis` millicores (at least 1 ms).
pub fn cpu_quota_us(millis: u32) -> u64 {
    (u64::from(millis) * CPU_PERIOD_US / 1000).max(1000)
}

/// cgroup v1 `cpu.shares` for `millis` millicores (Kubernetes' conversion, minimum 2).
pub fn cpu_shares(millis: u32) -> u64 {
    (u64::from(millis) * 1024 / 1000).max(2)
}

/// cgroup v2 `cpu.weight` for v1 `shares` (the OCI/crun conversion: [2, 262144] → [1, 10000]).
pub fn shares_to_weight(shares: u64) -> u64 {
    let shares = shares.clamp(2, 262_144);
    1 + ((shares - 2) * 9999) / 262_142
}

/// Parses the `oom_kill` counter from v1 `memory.oom_control` or v2 `memory.events`.
pub fn parse_oom_kills(content: &str) -> u64 {
    content
        .lines()
        .find_map(|l| l.strip_prefix("oom_kill "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// The memory working set of a cgroup as cAdvisor and the kubelet compute it (what `kubectl
/// top` shows and the OOM killer weighs): `usage` (v1 `memory.usage_in_bytes`, v2
/// `memory.current`) minus the inactive file pages of its `memory.stat` (`total_inactive_file`
/// on v1, which counts the whole subtree; `inactive_file` on v2), never below 0.
pub fn working_set(usage: u64, memory_stat: &str, v1: bool) -> u64 {
    let key = if v1 {
        "total_inactive_file "
    } else {
        "inactive_file "
    };
    let inactive = memory_stat
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or(0);
    usage.saturating_sub(inactive)
}

/// What a cgroup manager can do. Paths are relative to the manager's base.
pub trait CgroupManager: fmt::Debug + Send + Sync {
    /// The hierarchy version.
    fn version(&self) -> CgroupVersion;
    /// Controllers that can be enforced.
    fn controllers(&self) -> Controllers;
    /// Creates the cgroup `rel` (and its parents) and applies `res` to it.
    fn create(&self, rel: &str, res: &Resources) -> Result<()>;
    /// Restricts the devices of `rel` and everything below it to `rules` (deny all else).
    /// Called right after `create(rel)`, before `rel` has children: v1 children copy their
    /// parent's list when created, and v1 refuses `devices.deny = a` once there are children.
    fn restrict_devices(&self, rel: &str, rules: &DeviceRules) -> Result<()>;
    /// Whether the cgroup exists.
    fn exists(&self, rel: &str) -> bool;
    /// The `cgroup.procs` files to write a PID into to join `rel` (one per v1 hierarchy).
    fn procs_files(&self, rel: &str) -> Vec<PathBuf>;
    /// The file holding the `oom_kill` counter of `rel`, if the memory controller is there.
    fn oom_file(&self, rel: &str) -> Option<PathBuf>;
    /// The directory a child can be born in with `clone3(CLONE_INTO_CGROUP)` (cgroup v2 only).
    fn clone_into_dir(&self, _rel: &str) -> Option<PathBuf> {
        None
    }
    /// Moves `pid` into `rel`.
    fn add_pid(&self, rel: &str, pid: i32) -> Result<()> {
        for f in self.procs_files(rel) {
            write(&f, &pid.to_string())?;
        }
        Ok(())
    }
    /// Every PID in `rel` and below (host PIDs).
    fn pids(&self, rel: &str) -> Result<Vec<i32>>;
    /// Names of the child cgroups of `rel` (empty if `rel` does not exist).
    fn children(&self, rel: &str) -> Vec<String>;
    /// CPU time used by `rel` and below, in ns.
    fn cpu_usage_ns(&self, rel: &str) -> Result<u64>;
    /// Memory working set of `rel` and below ([`working_set`]), `None` without the memory
    /// controller.
    fn memory_working_set(&self, _rel: &str) -> Result<Option<u64>> {
        Ok(None)
    }
    /// Kills every task in `rel` and below until none is left.
    fn kill_all(&self, rel: &str) -> Result<()>;
    /// Removes `rel` and its children (they must be empty of tasks). Missing is fine.
    fn remove(&self, rel: &str) -> Result<()>;
}

/// Reads a `cgroup.procs` file: PIDs, one per line.
fn read_pids(path: &Path, out: &mut BTreeSet<i32>) -> Result<()> {
    match std::fs::read_to_string(path) {
        Ok(s) => {
            out.extend(s.lines().filter_map(|l| l.trim().parse::<i32>().ok()));
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(CgroupError::Io {
            op: "read",
            path: path.to_owned(),
            err: e,
        }),
    }
}

/// Every directory at and below `dir`, deepest first.
fn subtree_dirs(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                out.extend(subtree_dirs(&e.path()));
            }
        }
    }
    if dir.is_dir() {
        out.push(dir.to_owned());
    }
    out
}

/// `rmdir`, retrying while the kernel still reports the cgroup busy (tasks being torn down).
fn rmdir_retry(dir: &Path) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        match std::fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::ResourceBusy && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => {
                return Err(CgroupError::Io {
                    op: "rmdir",
                    path: dir.to_owned(),
                    err: e,
                });
            }
        }
    }
}

/// SIGKILLs `pids()` in rounds until it is empty.
fn kill_loop(path: &Path, mut pids: impl FnMut() -> Result<Vec<i32>>) -> Result<()> {
    const ROUNDS: u32 = 400;
    for round in 0..ROUNDS {
        let list = pids()?;
        if list.is_empty() {
            return Ok(());
        }
        for pid in list {
            sysproc::kill(pid, sysproc::Signal::KILL).map_err(|err| CgroupError::Kill {
                path: path.to_owned(),
                err,
            })?;
        }
        std::thread::sleep(Duration::from_millis(if round < 10 { 1 } else { 5 }));
    }
    Err(CgroupError::NotEmpty {
        path: path.to_owned(),
        tries: ROUNDS,
    })
}

/// One v1 hierarchy we use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct V1Hierarchy {
    /// Controllers mounted there (`cpu`, `cpuacct`, ...).
    pub controllers: Vec<String>,
    /// Directory of the base: mount point + base path.
    pub base: PathBuf,
}

/// cgroup v1: one directory tree per hierarchy (memory, cpu, cpuacct, pids, devices).
#[derive(Debug, Clone)]
pub struct V1 {
    hierarchies: Vec<V1Hierarchy>,
}

impl V1 {
    /// A manager over the given hierarchies.
    pub fn new(hierarchies: Vec<V1Hierarchy>) -> Self {
        V1 { hierarchies }
    }

    /// The hierarchies, in the order of [`CgroupManager::procs_files`].
    pub fn hierarchies(&self) -> &[V1Hierarchy] {
        &self.hierarchies
    }

    fn dir_of(&self, controller: &str) -> Option<&Path> {
        self.hierarchies
            .iter()
            .find(|h| h.controllers.iter().any(|c| c == controller))
            .map(|h| h.base.as_path())
    }
}

impl CgroupManager for V1 {
    fn version(&self) -> CgroupVersion {
        CgroupVersion::V1
    }

    fn controllers(&self) -> Controllers {
        let mut c = 0;
        for (name, bit) in [
            ("cpu", Controllers::CPU),
            ("memory", Controllers::MEMORY),
            ("pids", Controllers::PIDS),
        ] {
            if self.dir_of(name).is_some() {
                c |= bit;
            }
        }
        Controllers(c)
    }

    fn create(&self, rel: &str, res: &Resources) -> Result<()> {
        for h in &self.hierarchies {
            mkdir_p(&h.base.join(rel))?;
        }
        if let (Some(mem), Some(dir)) = (res.memory_bytes, self.dir_of("memory")) {
            let d = dir.join(rel);
            write(&d.join("memory.limit_in_bytes"), &mem.to_string())?;
            // memory+swap = memory: the pod cannot use swap beyond its limit.
            let memsw = d.join("memory.memsw.limit_in_bytes");
            if memsw.exists() {
                write(&memsw, &mem.to_string())?;
            }
        }
        if let (Some(cpu), Some(dir)) = (res.cpu_millis, self.dir_of("cpu")) {
            let d = dir.join(rel);
            write(&d.join("cpu.cfs_period_us"), &CPU_PERIOD_US.to_string())?;
            write(&d.join("cpu.cfs_quota_us"), &cpu_quota_us(cpu).to_string())?;
            write(&d.join("cpu.shares"), &cpu_shares(cpu).to_string())?;
        }
        if let (Some(pids), Some(dir)) = (res.pids, self.dir_of("pids")) {
            write(&dir.join(rel).join("pids.max"), &pids.to_string())?;
        }
        Ok(())
    }

    fn restrict_devices(&self, rel: &str, rules: &DeviceRules) -> Result<()> {
        let Some(dir) = self.dir_of("devices") else {
            return Ok(());
        };
        let d = dir.join(rel);
        write(&d.join("devices.deny"), "a")?;
        // One rule per write: the kernel parses a single rule per write(2).
        let allow = d.join("devices.allow");
        for line in rules.v1_allow_lines() {
            write(&allow, &line)?;
        }
        Ok(())
    }

    fn exists(&self, rel: &str) -> bool {
        self.hierarchies
            .first()
            .is_some_and(|h| h.base.join(rel).is_dir())
    }

    fn procs_files(&self, rel: &str) -> Vec<PathBuf> {
        self.hierarchies
            .iter()
            .map(|h| h.base.join(rel).join("cgroup.procs"))
            .collect()
    }

    fn oom_file(&self, rel: &str) -> Option<PathBuf> {
        self.dir_of("memory")
            .map(|d| d.join(rel).join("memory.oom_control"))
    }

    fn pids(&self, rel: &str) -> Result<Vec<i32>> {
        // One hierarchy is enough: every task of the pod is below `rel` in each of them (a
        // process between two joins is still in its parent's leaf, which is below `rel` too).
        let mut out = BTreeSet::new();
        if let Some(h) = self.hierarchies.first() {
            for d in subtree_dirs(&h.base.join(rel)) {
                read_pids(&d.join("cgroup.procs"), &mut out)?;
            }
        }
        Ok(out.into_iter().collect())
    }

    fn children(&self, rel: &str) -> Vec<String> {
        self.hierarchies
            .first()
            .map_or_else(Vec::new, |h| child_dirs(&h.base.join(rel)))
    }

    fn cpu_usage_ns(&self, rel: &str) -> Result<u64> {
        let Some(dir) = self.dir_of("cpuacct") else {
            return Ok(0);
        };
        let p = dir.join(rel).join("cpuacct.usage");
        Ok(read(&p)?.trim().parse().unwrap_or(0))
    }

    fn memory_working_set(&self, rel: &str) -> Result<Option<u64>> {
        let Some(dir) = self.dir_of("memory") else {
            return Ok(None);
        };
        let d = dir.join(rel);
        let usage = read(&d.join("memory.usage_in_bytes"))?
            .trim()
            .parse()
            .unwrap_or(0);
        Ok(Some(working_set(
            usage,
            &read(&d.join("memory.stat"))?,
            true,
        )))
    }

    fn kill_all(&self, rel: &str) -> Result<()> {
        let path = self
            .hierarchies
            .first()
            .map(|h| h.base.join(rel))
            .unwrap_or_default();
        kill_loop(&path, || self.pids(rel))
    }

    fn remove(&self, rel: &str) -> Result<()> {
        for h in &self.hierarchies {
            for d in subtree_dirs(&h.base.join(rel)) {
                rmdir_retry(&d)?;
            }
        }
        Ok(())
    }
}

fn child_dirs(dir: &Path) -> Vec<String> {
    let mut out: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                .filter_map(|e| e.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

/// cgroup v2: one unified tree. `root` is the directory of the base (mount point + base path).
#[derive(Debug, Clone)]
pub struct V2 {
    root: PathBuf,
    controllers: Controllers,
}

impl V2 {
    /// A manager rooted at `root`; the available controllers are read from its
    /// `cgroup.controllers`.
    pub fn new(root: PathBuf) -> Self {
        let text = std::fs::read_to_string(root.join("cgroup.controllers")).unwrap_or_default();
        let controllers = parse_v2_controllers(&text);
        V2 { root, controllers }
    }

    fn enable_list(&self) -> String {
        let mut s = String::new();
        for (bit, name) in [
            (Controllers::CPU, "cpu"),
            (Controllers::MEMORY, "memory"),
            (Controllers::PIDS, "pids"),
        ] {
            if self.controllers.has(bit) {
                if !s.is_empty() {
                    s.push(' ');
                }
                s.push('+');
                s.push_str(name);
            }
        }
        s
    }
}

/// Parses v2 `cgroup.controllers` into the bits we use.
pub fn parse_v2_controllers(text: &str) -> Controllers {
    let mut c = 0;
    for w in text.split_whitespace() {
        c |= match w {
            "cpu" => Controllers::CPU,
            "memory" => Controllers::MEMORY,
            "pids" => Controllers::PIDS,
            "cpuset" => Controllers::CPUSET,
            "io" => Controllers::IO,
            _ => 0,
        };
    }
    Controllers(c)
}

impl CgroupManager for V2 {
    fn version(&self) -> CgroupVersion {
        CgroupVersion::V2
    }

    fn controllers(&self) -> Controllers {
        self.controllers
    }

    fn create(&self, rel: &str, res: &Resources) -> Result<()> {
        // Enable the controllers for the children of every ancestor (root included), then
        // create the cgroup: v2 only offers a controller's files if the parent enabled it.
        let enable = self.enable_list();
        let mut dir = self.root.clone();
        let parts: Vec<&str> = rel.split('/').filter(|p| !p.is_empty()).collect();
        for (i, part) in parts.iter().enumerate() {
            if !enable.is_empty() {
                let sc = dir.join("cgroup.subtree_control");
                let current = std::fs::read_to_string(&sc).unwrap_or_default();
                let missing = enable
                    .split(' ')
                    .any(|c| !current.split_whitespace().any(|x| x == &c[1..]));
                if missing {
                    write(&sc, &enable)?;
                }
            }
            dir.push(part);
            // Pods start side by side: another start may create a shared parent first.
            match std::fs::create_dir(&dir) {
                Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => {
                    return Err(io("mkdir", &dir)(e));
                }
                _ => {}
            }
            let _ = i;
        }
        if let Some(mem) = res
            .memory_bytes
            .filter(|_| self.controllers.has(Controllers::MEMORY))
        {
            write(&dir.join("memory.max"), &mem.to_string())?;
            let swap = dir.join("memory.swap.max");
            if swap.exists() {
                write(&swap, "0")?;
            }
        }
        if let Some(cpu) = res
            .cpu_millis
            .filter(|_| self.controllers.has(Controllers::CPU))
        {
            write(
                &dir.join("cpu.max"),
                &format!("{} {}", cpu_quota_us(cpu), CPU_PERIOD_US),
            )?;
            write(
                &dir.join("cpu.weight"),
                &shares_to_weight(cpu_shares(cpu)).to_string(),
            )?;
        }
        if let Some(pids) = res.pids.filter(|_| self.controllers.has(Controllers::PIDS)) {
            write(&dir.join("pids.max"), &pids.to_string())?;
        }
        Ok(())
    }

    fn restrict_devices(&self, rel: &str, rules: &DeviceRules) -> Result<()> {
        let dir = self.root.join(rel);
        let insns: Vec<u64> = rules.ebpf_program().iter().map(|i| i.to_u64()).collect();
        crate::sys::bpf::attach_device_filter(&dir, &insns)
            .map_err(|err| CgroupError::DeviceFilter { path: dir, err })
    }

    fn exists(&self, rel: &str) -> bool {
        self.root.join(rel).is_dir()
    }

    fn procs_files(&self, rel: &str) -> Vec<PathBuf> {
        vec![self.root.join(rel).join("cgroup.procs")]
    }

    fn clone_into_dir(&self, rel: &str) -> Option<PathBuf> {
        Some(self.root.join(rel))
    }

    fn oom_file(&self, rel: &str) -> Option<PathBuf> {
        self.controllers
            .has(Controllers::MEMORY)
            .then(|| self.root.join(rel).join("memory.events"))
    }

    fn pids(&self, rel: &str) -> Result<Vec<i32>> {
        let mut out = BTreeSet::new();
        for d in subtree_dirs(&self.root.join(rel)) {
            read_pids(&d.join("cgroup.procs"), &mut out)?;
        }
        Ok(out.into_iter().collect())
    }

    fn children(&self, rel: &str) -> Vec<String> {
        child_dirs(&self.root.join(rel))
    }

    fn cpu_usage_ns(&self, rel: &str) -> Result<u64> {
        let text = read(&self.root.join(rel).join("cpu.stat"))?;
        Ok(text
            .lines()
            .find_map(|l| l.strip_prefix("usage_usec "))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(0)
            * 1000)
    }

    fn memory_working_set(&self, rel: &str) -> Result<Option<u64>> {
        if !self.controllers.has(Controllers::MEMORY) {
            return Ok(None);
        }
        let d = self.root.join(rel);
        let usage = read(&d.join("memory.current"))?.trim().parse().unwrap_or(0);
        Ok(Some(working_set(
            usage,
            &read(&d.join("memory.stat"))?,
            false,
        )))
    }

    fn kill_all(&self, rel: &str) -> Result<()> {
        let dir = self.root.join(rel);
        let kill_file = dir.join("cgroup.kill");
        if kill_file.exists() {
            write(&kill_file, "1")?;
        }
        kill_loop(&dir, || self.pids(rel))
    }

    fn remove(&self, rel: &str) -> Result<()> {
        for d in subtree_dirs(&self.root.join(rel)) {
            rmdir_retry(&d)?;
        }
        Ok(())
    }
}

/// No usable cgroups: pods run without limits (and adoption relies on state files only).
#[derive(Debug, Clone, Default)]
pub struct Noop;

impl CgroupManager for Noop {
    fn version(&self) -> CgroupVersion {
        CgroupVersion::None
    }
    fn controllers(&self) -> Controllers {
        Controllers(0)
    }
    fn create(&self, _: &str, _: &Resources) -> Result<()> {
        Ok(())
    }
    fn restrict_devices(&self, _: &str, _: &DeviceRules) -> Result<()> {
        Ok(())
    }
    fn exists(&self, _: &str) -> bool {
        false
    }
    fn procs_files(&self, _: &str) -> Vec<PathBuf> {
        Vec::new()
    }
    fn oom_file(&self, _: &str) -> Option<PathBuf> {
        None
    }
    fn pids(&self, _: &str) -> Result<Vec<i32>> {
        Ok(Vec::new())
    }
    fn children(&self, _: &str) -> Vec<String> {
        Vec::new()
    }
    fn cpu_usage_ns(&self, _: &str) -> Result<u64> {
        Ok(0)
    }
    fn kill_all(&self, _: &str) -> Result<()> {
        Ok(())
    }
    fn remove(&self, _: &str) -> Result<()> {
        Ok(())
    }
}

/// Where the base of the pods' cgroups sits in each hierarchy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CgroupBase {
    /// At the hierarchy's root (like Kubernetes' `/kubepods`).
    #[default]
    Root,
    /// Under the worker's own cgroup (read from `/proc/self/cgroup`): for v1 hosts where the
    /// agent itself is confined, and for tests.
    Own,
}

/// What preflight found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Preflight {
    /// Detected version.
    pub version: CgroupVersion,
    /// Controllers the runtime can enforce.
    pub controllers: Controllers,
    /// Problems, each with its fix (empty when all is well).
    pub problems: Vec<String>,
}

/// The message for a missing memory controller (Raspberry Pi OS default).
pub const MEMORY_MISSING: &str = "memory cgroup controller is not enabled: add \
`cgroup_enable=memory cgroup_memory=1` to the kernel command line (/boot/firmware/cmdline.txt, \
or /boot/cmdline.txt on older images) and reboot; pods run without memory limits until then";

/// The message for a v1 host without the `devices` hierarchy.
pub const DEVICES_MISSING: &str = "the devices cgroup v1 controller is not mounted: pods can \
open every device node; mount it (`mount -t cgroup -o devices devices /sys/fs/cgroup/devices`) \
or boot with cgroup v2 (`systemd.unified_cgroup_hierarchy=1`)";

/// A mount of a cgroup filesystem from `/proc/self/mountinfo`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupMount {
    /// Mount point.
    pub mount_point: PathBuf,
    /// `true` for cgroup2.
    pub v2: bool,
    /// v1 controllers from the super options (`cpu`, `cpuacct`, ...; `name=` hierarchies dropped).
    pub controllers: Vec<String>,
}

/// Parses the cgroup mounts out of `/proc/self/mountinfo` text.
pub fn parse_mountinfo(text: &str) -> Vec<CgroupMount> {
    let mut out = Vec::new();
    for line in text.lines() {
        let Some((pre, post)) = line.split_once(" - ") else {
            continue;
        };
        let mount_point = pre.split(' ').nth(4).unwrap_or("");
        let mut post = post.split(' ');
        let fstype = post.next().unwrap_or("");
        let _source = post.next();
        let opts = post.next().unwrap_or("");
        match fstype {
            "cgroup2" => out.push(CgroupMount {
                mount_point: mount_point.into(),
                v2: true,
                controllers: Vec::new(),
            }),
            "cgroup" => {
                let known = [
                    "cpu", "cpuacct", "memory", "pids", "cpuset", "freezer", "blkio", "devices",
                ];
                let controllers: Vec<String> = opts
                    .split(',')
                    .filter(|o| known.contains(o))
                    .map(str::to_owned)
                    .collect();
                if !controllers.is_empty() {
                    out.push(CgroupMount {
                        mount_point: mount_point.into(),
                        v2: false,
                        controllers,
                    });
                }
            }
            _ => {}
        }
    }
    out
}

/// Parses `/proc/cgroups` into the set of enabled controller names.
pub fn parse_proc_cgroups(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() >= 4 && f[3] == "1").then(|| f[0].to_owned())
        })
        .collect()
}

/// Parses `/proc/self/cgroup` into (controllers, path) pairs; v2 has an empty controller list.
pub fn parse_self_cgroup(text: &str) -> Vec<(Vec<String>, String)> {
    text.lines()
        .filter_map(|l| {
            let mut f = l.splitn(3, ':');
            let _id = f.next()?;
            let ctrls = f.next()?;
            let path = f.next()?;
            let ctrls = ctrls
                .split(',')
                .filter(|c| !c.is_empty())
                .map(str::to_owned)
                .collect();
            Some((ctrls, path.to_owned()))
        })
        .collect()
}

/// The detected manager, by version.
#[derive(Debug)]
pub enum AnyCgroupManager {
    /// No cgroups.
    None(Noop),
    /// v1.
    V1(V1),
    /// v2.
    V2(V2),
}

impl AnyCgroupManager {
    /// The manager as a trait object.
    pub fn as_dyn(&self) -> &dyn CgroupManager {
        match self {
            AnyCgroupManager::None(m) => m,
            AnyCgroupManager::V1(m) => m,
            AnyCgroupManager::V2(m) => m,
        }
    }
}

/// Detects the cgroup version and controllers of this host (statfs on `/sys/fs/cgroup`, then
/// `/proc/self/mountinfo` and `/proc/cgroups`) and builds a manager whose base is `base`.
pub fn detect(base: CgroupBase) -> (AnyCgroupManager, Preflight) {
    let root = Path::new("/sys/fs/cgroup");
    let magic = sysproc::statfs_magic(root).unwrap_or(0);
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mounts = parse_mountinfo(&mountinfo);
    let enabled = parse_proc_cgroups(&std::fs::read_to_string("/proc/cgroups").unwrap_or_default());
    let own = parse_self_cgroup(&std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default());
    let own_path = |ctrls: &[String], v2: bool| -> String {
        if base == CgroupBase::Root {
            return String::new();
        }
        own.iter()
            .find(|(c, _)| {
                if v2 {
                    c.is_empty()
                } else {
                    ctrls.iter().any(|x| c.contains(x))
                }
            })
            .map(|(_, p)| p.trim_start_matches('/').to_owned())
            .unwrap_or_default()
    };
    let mut problems = Vec::new();
    let manager = if magic == sysproc::CGROUP2_MAGIC {
        let m = mounts
            .iter()
            .find(|m| m.v2)
            .map_or(root.to_owned(), |m| m.mount_point.clone());
        AnyCgroupManager::V2(V2::new(m.join(own_path(&[], true))))
    } else if mounts.iter().any(|m| !m.v2) {
        let mut hier = Vec::new();
        // `devices`: every pod process joins the pod's device allow-list.
        for want in ["memory", "cpu", "cpuacct", "pids", "devices"] {
            if hier
                .iter()
                .any(|h: &V1Hierarchy| h.controllers.iter().any(|c| c == want))
            {
                continue;
            }
            if let Some(m) = mounts
                .iter()
                .find(|m| !m.v2 && m.controllers.iter().any(|c| c == want))
            {
                let base = m.mount_point.join(own_path(&m.controllers, false));
                hier.push(V1Hierarchy {
                    controllers: m.controllers.clone(),
                    base,
                });
            }
        }
        if hier.is_empty() {
            problems.push("no usable cgroup v1 hierarchy (memory, cpu, pids) is mounted".into());
            AnyCgroupManager::None(Noop)
        } else {
            if !hier
                .iter()
                .any(|h| h.controllers.iter().any(|c| c == "devices"))
            {
                problems.push(DEVICES_MISSING.into());
            }
            AnyCgroupManager::V1(V1::new(hier))
        }
    } else {
        problems.push("no cgroup filesystem at /sys/fs/cgroup: pods run without limits".into());
        AnyCgroupManager::None(Noop)
    };
    let mut controllers = manager.as_dyn().controllers();
    if !enabled.is_empty() && !enabled.contains("memory") {
        controllers.0 &= !Controllers::MEMORY;
    }
    if manager.as_dyn().version() != CgroupVersion::None && !controllers.has(Controllers::MEMORY) {
        problems.push(MEMORY_MISSING.into());
    }
    let preflight = Preflight {
        version: manager.as_dyn().version(),
        controllers,
        problems,
    };
    (manager, preflight)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_v2(controllers: &str) -> (tempfile::TempDir, V2) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("cgroup.controllers"), controllers).unwrap();
        let m = V2::new(dir.path().to_owned());
        (dir, m)
    }

    #[test]
    fn v2_create_writes_limits_and_enables_controllers() {
        let (dir, m) = fake_v2("cpuset cpu io memory hugetlb pids rdma misc\n");
        assert_eq!(
            m.controllers().0,
            Controllers::CPU
                | Controllers::MEMORY
                | Controllers::PIDS
                | Controllers::CPUSET
                | Controllers::IO
        );
        let res = Resources {
            cpu_millis: Some(250),
            memory_bytes: Some(32 << 20),
            pids: Some(20),
        };
        m.create("bramble/default_web_0123abcd", &res).unwrap();
        let r = dir.path();
        let rd = |p: &str| std::fs::read_to_string(r.join(p)).unwrap();
        assert_eq!(rd("cgroup.subtree_control"), "+cpu +memory +pids");
        assert_eq!(rd("bramble/cgroup.subtree_control"), "+cpu +memory +pids");
        let pod = "bramble/default_web_0123abcd";
        assert_eq!(rd(&format!("{pod}/memory.max")), "33554432");
        assert_eq!(rd(&format!("{pod}/cpu.max")), "25000 100000");
        assert_eq!(rd(&format!("{pod}/cpu.weight")), "10");
        assert_eq!(rd(&format!("{pod}/pids.max")), "20");
        assert!(!r.join(format!("{pod}/cgroup.subtree_control")).exists());
        // A leaf below the pod: the pod now enables controllers for its children.
        m.create(&format!("{pod}/_init"), &Resources::default())
            .unwrap();
        assert_eq!(
            rd(&format!("{pod}/cgroup.subtree_control")),
            "+cpu +memory +pids"
        );
        assert!(!r.join(format!("{pod}/_init/memory.max")).exists());
        assert_eq!(m.procs_files(pod), vec![r.join(pod).join("cgroup.procs")]);
        assert_eq!(m.oom_file(pod), Some(r.join(pod).join("memory.events")));
        assert_eq!(
            m.children("bramble"),
            vec!["default_web_0123abcd".to_owned()]
        );
    }

    #[test]
    fn v2_skips_missing_controllers() {
        let (dir, m) = fake_v2("cpu pids\n");
        let res = Resources {
            cpu_millis: Some(1000),
            memory_bytes: Some(1 << 20),
            pids: None,
        };
        m.create("bramble/p", &res).unwrap();
        let r = dir.path();
        assert_eq!(
            std::fs::read_to_string(r.join("cgroup.subtree_control")).unwrap(),
            "+cpu +pids"
        );
        assert!(!r.join("bramble/p/memory.max").exists());
        assert_eq!(
            std::fs::read_to_string(r.join("bramble/p/cpu.max")).unwrap(),
            "100000 100000"
        );
        assert_eq!(m.oom_file("bramble/p"), None);
    }

    #[test]
    fn v2_does_not_rewrite_enabled_subtree_control() {
        let (dir, m) = fake_v2("cpu memory pids\n");
        std::fs::write(
            dir.path().join("cgroup.subtree_control"),
            "cpu memory pids io\n",
        )
        .unwrap();
        m.create("bramble", &Resources::default()).unwrap();
        let sc = std::fs::read_to_string(dir.path().join("cgroup.subtree_control")).unwrap();
        assert_eq!(sc, "cpu memory pids io\n");
    }

    #[test]
    fn v2_reads_pids_usage_and_oom() {
        let (dir, m) = fake_v2("cpu memory pids\n");
        m.create("b/p/_init", &Resources::default()).unwrap();
        let r = dir.path();
        std::fs::write(r.join("b/p/cgroup.procs"), "").unwrap();
        std::fs::write(r.join("b/p/_init/cgroup.procs"), "12\n34\n").unwrap();
        assert_eq!(m.pids("b/p").unwrap(), vec![12, 34]);
        std::fs::write(r.join("b/p/cpu.stat"), "usage_usec 1500\nuser_usec 1000\n").unwrap();
        assert_eq!(m.cpu_usage_ns("b/p").unwrap(), 1_500_000);
        std::fs::write(r.join("b/p/memory.current"), "10485760\n").unwrap();
        std::fs::write(
            r.join("b/p/memory.stat"),
            "anon 8388608\nfile 2097152\nactive_file 1048576\ninactive_file 1048576\n",
        )
        .unwrap();
        assert_eq!(m.memory_working_set("b/p").unwrap(), Some(9_437_184));
        let ev = "low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\noom_group_kill 0\n";
        assert_eq!(parse_oom_kills(ev), 1);
    }

    #[test]
    fn working_set_subtracts_inactive_file() {
        // v1 counts the subtree's `total_` fields; the local `inactive_file` is not the one.
        let v1 = "cache 300\ninactive_file 50\ntotal_cache 400\ntotal_inactive_file 100\n";
        assert_eq!(working_set(1000, v1, true), 900);
        let v2 = "anon 700\nfile 300\ninactive_file 250\nactive_file 50\n";
        assert_eq!(working_set(1000, v2, false), 750);
        // Never negative (cAdvisor clamps at 0), and a stat without the field subtracts nothing.
        assert_eq!(working_set(10, v2, false), 0);
        assert_eq!(working_set(1000, "", true), 1000);
    }

    #[test]
    fn v1_reads_memory_working_set() {
        let dir = tempfile::tempdir().unwrap();
        let mem = dir.path().join("memory");
        std::fs::create_dir_all(mem.join("b/p")).unwrap();
        std::fs::write(mem.join("b/p/memory.usage_in_bytes"), "4096000\n").unwrap();
        std::fs::write(mem.join("b/p/memory.stat"), "total_inactive_file 96000\n").unwrap();
        let m = V1::new(vec![V1Hierarchy {
            controllers: vec!["memory".into()],
            base: mem,
        }]);
        assert_eq!(m.memory_working_set("b/p").unwrap(), Some(4_000_000));
        assert_eq!(Noop.memory_working_set("b/p").unwrap(), None);
    }

    #[test]
    fn conversions() {
        assert_eq!(cpu_quota_us(250), 25_000);
        assert_eq!(cpu_quota_us(1), 1000);
        assert_eq!(cpu_shares(1000), 1024);
        assert_eq!(cpu_shares(0), 2);
        assert_eq!(shares_to_weight(2), 1);
        assert_eq!(shares_to_weight(262_144), 10_000);
        assert_eq!(shares_to_weight(1024), 39);
        assert_eq!(
            parse_oom_kills("oom_kill_disable 0\nunder_oom 0\noom_kill 4\n"),
            4
        );
        assert_eq!(parse_oom_kills(""), 0);
    }

    #[test]
    fn mountinfo_and_proc_cgroups() {
        let mi = "\
35 25 0:30 / /sys/fs/cgroup rw - tmpfs tmpfs ro,mode=755
36 35 0:31 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw
37 35 0:32 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct
38 35 0:33 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory
39 35 0:34 / /sys/fs/cgroup/systemd rw - cgroup cgroup rw,xattr,name=systemd
";
        let m = parse_mountinfo(mi);
        assert_eq!(m.len(), 3);
        assert!(m[0].v2);
        assert_eq!(m[1].controllers, vec!["cpu", "cpuacct"]);
        assert_eq!(
            m[1].mount_point,
            PathBuf::from("/sys/fs/cgroup/cpu,cpuacct")
        );
        let pc = "#subsys_name\thierarchy\tnum_cgroups\tenabled\ncpu\t1\t1\t1\nmemory\t0\t1\t0\n";
        let e = parse_proc_cgroups(pc);
        assert!(e.contains("cpu") && !e.contains("memory"));
        let sc = parse_self_cgroup("4:memory:/a/b\n1:cpu,cpuacct:/\n0::/x.slice\n");
        assert_eq!(sc[0], (vec!["memory".to_owned()], "/a/b".to_owned()));
        assert_eq!(sc[2], (vec![], "/x.slice".to_owned()));
    }
}
