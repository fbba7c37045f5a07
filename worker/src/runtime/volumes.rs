//! Config map and secret volumes on the node, and the environment variables of `env_from`.
//!
//! Every config map or secret volume of a pod is a directory on the node, written with the
//! Kubernetes **atomic-writer** layout ([`atomic_write`]):
//! ```text
//! <dir>/..2026_11_29_17_20_01.123456789_7/   the files of one version (read-only)
//! <dir>/..data -> ..2026_11_29_17_20_01.123456789_7
//! <dir>/index.html -> ..data/index.html      one symlink per key
//! ```
//! An update writes a new version directory and swaps `..data` with a `rename`, so a reader
//! sees the old set of files or the new one, never a mix. The pod init bind-mounts `<dir>`
//! read-only at the volume's `mount_path`: the bind mount shows the directory itself, so the
//! swap is visible inside the pod at once.
//!
//! Where: config maps under `<run-dir>/configmaps/<pod key>/<volume>`; secrets only under
//! `<run-dir>/secrets/<pod key>/<volume>`, on a tmpfs (mode 0700) that the worker mounts there the
//! first time a pod needs a secret — never on the node's disk. The environment variables of a
//! pod's `env_from` are resolved here into `<pod dir>/.env` (on the tmpfs when a secret is
//! involved), which the pod init reads when it starts.

use std::collections::{BTreeMap, HashSet};
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use bramble_wire::objects::{ConfigMap, EnvFrom, Pod, Secret, VolumeSource};

use super::PodKey;
use crate::sys::{mount, process as sysproc};

/// The link to the current version.
const DATA: &str = "..data";
/// The link being swapped in.
const DATA_TMP: &str = "..data_tmp";
/// Name of the resolved-environment file in a pod's directory (not a DNS label: no clash with a
/// volume).
pub const ENV_FILE: &str = ".env";
/// Size of the secrets tmpfs.
const SECRETS_TMPFS_BYTES: u64 = 16 << 20;
const TMPFS_MAGIC: i64 = 0x0102_1994;

/// Per-process environment from `env_from`: `(process name, [(key, value)])`.
pub type EnvSets = Vec<(String, Vec<(String, String)>)>;

static VERSION: AtomicU64 = AtomicU64::new(0);

fn version_name() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    format!(
        "..{}.{:09}_{}",
        now.as_secs(),
        now.subsec_nanos(),
        VERSION.fetch_add(1, Ordering::Relaxed)
    )
}

/// How the files of a volume are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileMode {
    /// Permission bits of the files.
    pub mode: u32,
    /// Owner (uid, gid) of the files, if not root.
    pub owner: Option<(u32, u32)>,
}

/// The files currently published in an atomic-writer directory, if any.
pub fn read_current(dir: &Path) -> Option<BTreeMap<String, Vec<u8>>> {
    let target = std::fs::read_link(dir.join(DATA)).ok()?;
    let ver = dir.join(target);
    let mut out = BTreeMap::new();
    for e in std::fs::read_dir(&ver).ok()?.flatten() {
        let name = e.file_name().to_str()?.to_string();
        out.insert(name, std::fs::read(e.path()).ok()?);
    }
    Some(out)
}

fn check_key(k: &str) -> io::Result<()> {
    if k.is_empty() || k.starts_with("..") || k.contains('/') || k.contains('\0') || k == "." {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("key {k:?} cannot be a file name"),
        ));
    }
    Ok(())
}

/// Publishes `files` in `dir` with the atomic-writer layout; returns whether anything changed.
/// Keys that disappeared lose their link; the previous version directory is removed.
pub fn atomic_write(
    dir: &Path,
    files: &BTreeMap<String, Vec<u8>>,
    mode: FileMode,
) -> io::Result<bool> {
    for k in files.keys() {
        check_key(k)?;
    }
    std::fs::create_dir_all(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))?;
    let links_ok = files
        .keys()
        .all(|k| std::fs::read_link(dir.join(k)).is_ok());
    if links_ok && read_current(dir).as_ref() == Some(files) {
        return Ok(false);
    }
    let ver = version_name();
    let ver_dir = dir.join(&ver);
    std::fs::create_dir(&ver_dir)?;
    for (k, v) in files {
        let p = ver_dir.join(k);
        std::fs::write(&p, v)?;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode.mode))?;
        if let Some((uid, gid)) = mode.owner {
            std::os::unix::fs::chown(&p, Some(uid), Some(gid))?;
        }
    }
    std::fs::set_permissions(&ver_dir, std::fs::Permissions::from_mode(0o555))?;
    let tmp = dir.join(DATA_TMP);
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(&ver, &tmp)?;
    std::fs::rename(&tmp, dir.join(DATA))?;
    for k in files.keys() {
        let link = dir.join(k);
        if std::fs::read_link(&link).is_err() {
            let _ = std::fs::remove_file(&link);
            std::os::unix::fs::symlink(Path::new(DATA).join(k), &link)?;
        }
    }
    for e in std::fs::read_dir(dir)?.flatten() {
        let name = e.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.starts_with("..") {
            if name != DATA && name != ver && name != DATA_TMP {
                let _ = std::fs::remove_dir_all(e.path());
            }
        } else if !files.contains_key(name) {
            let _ = std::fs::remove_file(e.path());
        }
    }
    Ok(true)
}

/// What a pod refers to that the node does not have, as a message naming it and the fix;
/// `None` when everything is there. `secrets = None`: the master has not sent them yet.
pub fn missing(pod: &Pod, config_maps: &[ConfigMap], secrets: Option<&[Secret]>) -> Option<String> {
    let ns = &pod.meta.namespace;
    let mut out = Vec::new();
    let mut need_cm = |name: &String| {
        if !config_maps
            .iter()
            .any(|c| &c.meta.namespace == ns && &c.meta.name == name)
        {
            let m = format!(
                "config map {name:?} not found in namespace {ns:?}: create it with `bramble create configmap {name} -n {ns} --from-file PATH` (or a [[configmap]] in a manifest)"
            );
            if !out.contains(&m) {
                out.push(m);
            }
        }
    };
    let mut cm_names = Vec::new();
    let mut secret_names = Vec::new();
    for v in &pod.spec.volumes {
        match &v.source {
            VolumeSource::ConfigMap { name } => cm_names.push(name),
            VolumeSource::Secret { name } => secret_names.push(name),
            _ => {}
        }
    }
    for p in &pod.spec.processes {
        for e in &p.env_from {
            match e {
                EnvFrom::ConfigMap { name, .. } => cm_names.push(name),
                EnvFrom::Secret { name, .. } => secret_names.push(name),
            }
        }
    }
    for n in cm_names {
        need_cm(n);
    }
    for name in secret_names {
        let m = match secrets {
            None => format!("waiting for secret {name:?} from the master"),
            Some(s)
                if !s
                    .iter()
                    .any(|x| &x.meta.namespace == ns && &x.meta.name == name) =>
            {
                format!(
                    "secret {name:?} not found in namespace {ns:?}: create it with `bramble create secret {name} -n {ns} --from-literal KEY=VALUE` (or a [[secret]] in a manifest)"
                )
            }
            Some(_) => continue,
        };
        if !out.contains(&m) {
            out.push(m);
        }
    }
    (!out.is_empty()).then(|| out.join("; "))
}

/// Whether a pod uses config maps or secrets at all.
pub fn uses_config(pod: &Pod) -> bool {
    pod.spec.volumes.iter().any(|v| {
        matches!(
            v.source,
            VolumeSource::ConfigMap { .. } | VolumeSource::Secret { .. }
        )
    }) || pod.spec.processes.iter().any(|p| !p.env_from.is_empty())
}

/// Whether a pod uses secrets (volumes or `env_from`).
pub fn uses_secrets(pod: &Pod) -> bool {
    pod.spec
        .volumes
        .iter()
        .any(|v| matches!(v.source, VolumeSource::Secret { .. }))
        || pod
            .spec
            .processes
            .iter()
            .flat_map(|p| &p.env_from)
            .any(|e| matches!(e, EnvFrom::Secret { .. }))
}

/// The environment of each process from its `env_from`, in order (a later source wins a key).
/// Values that are not text without NUL bytes are skipped.
pub fn resolve_env(pod: &Pod, config_maps: &[ConfigMap], secrets: &[Secret]) -> EnvSets {
    let ns = &pod.meta.namespace;
    let mut out = Vec::new();
    for p in &pod.spec.processes {
        if p.env_from.is_empty() {
            continue;
        }
        let mut env: BTreeMap<String, String> = BTreeMap::new();
        for e in &p.env_from {
            match e {
                EnvFrom::ConfigMap { name, prefix } => {
                    if let Some(c) = config_maps
                        .iter()
                        .find(|c| &c.meta.namespace == ns && &c.meta.name == name)
                    {
                        for (k, v) in &c.data {
                            if !v.contains('\0') {
                                env.insert(format!("{prefix}{k}"), v.clone());
                            }
                        }
                    }
                }
                EnvFrom::Secret { name, prefix } => {
                    if let Some(s) = secrets
                        .iter()
                        .find(|s| &s.meta.namespace == ns && &s.meta.name == name)
                    {
                        for (k, v) in &s.data {
                            if let Ok(text) = std::str::from_utf8(v)
                                && !text.contains('\0')
                            {
                                env.insert(format!("{prefix}{k}"), text.to_string());
                            }
                        }
                    }
                }
            }
        }
        out.push((p.name.clone(), env.into_iter().collect()));
    }
    out
}

/// Merges `env_from` variables under a process's own `env` (which wins, as in Kubernetes).
pub fn merge_env(own: &mut Vec<(String, String)>, from: &[(String, String)]) {
    for (k, v) in from {
        if !own.iter().any(|(o, _)| o == k) {
            own.push((k.clone(), v.clone()));
        }
    }
}

/// Where a pod's config map and secret volumes and its `env_from` file are.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodConfigDirs {
    /// `<config root>/<key>`: one directory per config map volume.
    pub config_base: PathBuf,
    /// `<secret root>/<key>`: one directory per secret volume (tmpfs).
    pub secret_base: PathBuf,
    /// The resolved `env_from` file, if the pod has any.
    pub env_file: Option<PathBuf>,
}

/// The node's config map and secret volumes.
#[derive(Debug)]
pub struct ConfigVolumes {
    config_root: PathBuf,
    secret_root: PathBuf,
}

impl ConfigVolumes {
    /// Volumes under the run dir's `configmaps/` and `secrets/`.
    pub fn new(run: &crate::persist::RunDir) -> ConfigVolumes {
        ConfigVolumes {
            config_root: run.config_maps(),
            secret_root: run.secrets(),
        }
    }

    /// The secrets' directory (a tmpfs once a pod needed a secret).
    pub fn secret_root(&self) -> &Path {
        &self.secret_root
    }

    /// The directories of the pod `key`.
    pub fn dirs(&self, key: &PodKey, pod: &Pod) -> PodConfigDirs {
        let k = key.to_string();
        let has_env = pod.spec.processes.iter().any(|p| !p.env_from.is_empty());
        let env_base = if uses_secrets(pod) {
            &self.secret_root
        } else {
            &self.config_root
        };
        PodConfigDirs {
            config_base: self.config_root.join(&k),
            secret_base: self.secret_root.join(&k),
            env_file: has_env.then(|| env_base.join(&k).join(ENV_FILE)),
        }
    }

    /// Mounts the secrets tmpfs (mode 0700) unless it is already mounted.
    fn ensure_secret_fs(&self) -> io::Result<()> {
        std::fs::create_dir_all(&self.secret_root)?;
        let on_tmpfs = sysproc::statfs_magic(&self.secret_root).ok() == Some(TMPFS_MAGIC);
        if !(on_tmpfs && is_mount_point(&self.secret_root)) {
            mount::mount_tmpfs(&self.secret_root, SECRETS_TMPFS_BYTES, 0o700)
                .map_err(|e| io::Error::other(e.to_string()))?;
            tracing::info!(path = %self.secret_root.display(), "mounted the secrets tmpfs");
        }
        std::fs::set_permissions(&self.secret_root, std::fs::Permissions::from_mode(0o700))
    }

    /// Writes (or updates in place) the pod's config map and secret volumes and its `env_from`
    /// file from the objects the node has. Objects that are missing leave their volume as it
    /// was. Returns the directories; never logs data.
    pub fn write_pod(
        &self,
        key: &PodKey,
        pod: &Pod,
        config_maps: &[ConfigMap],
        secrets: &[Secret],
    ) -> io::Result<PodConfigDirs> {
        let dirs = self.dirs(key, pod);
        if uses_secrets(pod) {
            self.ensure_secret_fs()?;
        }
        let ns = &pod.meta.namespace;
        let owner = pod_owner(pod);
        for v in &pod.spec.volumes {
            match &v.source {
                VolumeSource::ConfigMap { name } => {
                    let Some(c) = config_maps
                        .iter()
                        .find(|c| &c.meta.namespace == ns && &c.meta.name == name)
                    else {
                        continue;
                    };
                    let files = c
                        .data
                        .iter()
                        .map(|(k, v)| (k.clone(), v.as_bytes().to_vec()))
                        .collect();
                    let mode = FileMode {
                        mode: 0o444,
                        owner: None,
                    };
                    if atomic_write(&dirs.config_base.join(&v.name), &files, mode)? {
                        tracing::info!(pod = %key, volume = %v.name, configmap = %name, "config map volume updated");
                    }
                }
                VolumeSource::Secret { name } => {
                    let Some(s) = secrets
                        .iter()
                        .find(|s| &s.meta.namespace == ns && &s.meta.name == name)
                    else {
                        continue;
                    };
                    let mode = FileMode { mode: 0o400, owner };
                    if atomic_write(&dirs.secret_base.join(&v.name), &s.data, mode)? {
                        tracing::info!(pod = %key, volume = %v.name, secret = %name, "secret volume updated");
                    }
                }
                _ => {}
            }
        }
        // A missing object keeps the variables the pod has (a restart must not lose them).
        if let Some(f) = &dirs.env_file
            && missing(pod, config_maps, Some(secrets)).is_none()
        {
            let env = resolve_env(pod, config_maps, secrets);
            let bytes = postcard::to_stdvec(&env).map_err(io::Error::other)?;
            // Unversioned on purpose: inits of an older build read it (see `crate::persist`).
            if std::fs::read(f).ok().as_deref() != Some(&bytes[..]) {
                crate::persist::write_file(f, &bytes, 0o600)?;
            }
        }
        Ok(dirs)
    }

    /// Removes everything of the pod `key`.
    pub fn remove_pod(&self, key: &str) {
        for root in [&self.config_root, &self.secret_root] {
            let d = root.join(key);
            if d.exists()
                && let Err(e) = std::fs::remove_dir_all(&d)
            {
                tracing::warn!(path = %d.display(), "cannot remove config volume: {e}");
            }
        }
    }

    /// Removes the directories of pods not in `keep` (left by pods that went while the agent
    /// was down).
    pub fn gc(&self, keep: &HashSet<String>) {
        for root in [&self.config_root, &self.secret_root] {
            let Ok(rd) = std::fs::read_dir(root) else {
                continue;
            };
            for e in rd.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if !keep.contains(&name) {
                    let _ = std::fs::remove_dir_all(e.path());
                }
            }
        }
    }
}

/// The owner of a pod's secret files: the user (and group) its processes run as when they all
/// run as the same non-root user, else root.
/// (Numeric ids only: a user given by name is resolved inside the pod's root when it starts.)
fn pod_owner(pod: &Pod) -> Option<(u32, u32)> {
    let ids = |p: &bramble_wire::objects::ProcessSpec| -> Option<(u32, u32)> {
        let uid = p.user.as_ref()?.id()?;
        let gid = match &p.group {
            Some(g) => g.id()?,
            None => uid,
        };
        Some((uid, gid))
    };
    let first = pod.spec.processes.first()?;
    let (uid, gid) = ids(first).filter(|(u, _)| *u != 0)?;
    pod.spec
        .processes
        .iter()
        .all(|p| ids(p) == Some((uid, gid)))
        .then_some((uid, gid))
}

fn is_mount_point(p: &Path) -> bool {
    let Ok(canon) = std::fs::canonicalize(p) else {
        return false;
    };
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    mounts
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .any(|mp| Path::new(&unescape_mountinfo(mp)) == canon)
}

/// Undoes mountinfo's octal escapes (`\040` for a space).
fn unescape_mountinfo(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 4 <= b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The pod init's handle on its `env_from` file: its directory, opened before `pivot_root`,
/// read again through `/proc/self/fd` at every process start.
static ENV_SOURCE: std::sync::OnceLock<(std::os::fd::OwnedFd, String)> = std::sync::OnceLock::new();

/// Pod init: reads the `env_from` file and keeps its directory open for [`reload_env`].
pub fn open_env_file(path: &Path) -> Result<EnvSets, Box<dyn std::error::Error>> {
    let env = read_env_file(path)
        .map_err(|e| format!("reading the env_from file {}: {e}", path.display()))?;
    if let (Some(dir), Some(name)) = (path.parent(), path.file_name()) {
        let fd = sysproc::open_dir(dir)?;
        let _ = ENV_SOURCE.set((fd, name.to_string_lossy().into_owned()));
    }
    Ok(env)
}

/// Pod init: the current `env_from` variables of `process`, if the pod has an `env_from` file
/// (the worker rewrites it when a config map or secret changes).
pub fn reload_env(process: &str) -> Option<Vec<(String, String)>> {
    use std::os::fd::AsRawFd;
    let (fd, name) = ENV_SOURCE.get()?;
    let path = format!("/proc/self/fd/{}/{name}", fd.as_raw_fd());
    let sets = read_env_file(Path::new(&path)).ok()?;
    Some(
        sets.into_iter()
            .find(|(n, _)| n == process)
            .map(|(_, e)| e)
            .unwrap_or_default(),
    )
}

/// Reads an `env_from` file written by [`ConfigVolumes::write_pod`].
pub fn read_env_file(path: &Path) -> io::Result<EnvSets> {
    let bytes = std::fs::read(path)?;
    postcard::from_bytes(&bytes).map_err(io::Error::other)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bramble_wire::objects::{Meta, ProcessSpec, Volume};

    fn files(kv: &[(&str, &str)]) -> BTreeMap<String, Vec<u8>> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
            .collect()
    }

    const RO: FileMode = FileMode {
        mode: 0o444,
        owner: None,
    };

    fn versions(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("..") && n != DATA)
            .collect();
        v.sort();
        v
    }

    #[test]
    fn atomic_writer_publishes_updates_and_removes_keys() {
        let t = tempfile::tempdir().unwrap();
        let d = t.path().join("vol");
        assert!(atomic_write(&d, &files(&[("a", "1"), ("b.conf", "2")]), RO).unwrap());
        assert_eq!(std::fs::read_to_string(d.join("a")).unwrap(), "1");
        assert_eq!(std::fs::read_to_string(d.join("b.conf")).unwrap(), "2");
        assert_eq!(
            std::fs::read_link(d.join("a")).unwrap(),
            Path::new("..data/a")
        );
        let first = std::fs::read_link(d.join(DATA)).unwrap();
        let mode = std::fs::metadata(d.join("a")).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o444);
        // Unchanged content: nothing is written.
        assert!(!atomic_write(&d, &files(&[("a", "1"), ("b.conf", "2")]), RO).unwrap());
        assert_eq!(std::fs::read_link(d.join(DATA)).unwrap(), first);
        // An open file keeps its old content; the path shows the new one; `b.conf` goes, `c` comes.
        let old = std::fs::File::open(d.join("a")).unwrap();
        assert!(atomic_write(&d, &files(&[("a", "one"), ("c", "3")]), RO).unwrap());
        assert_eq!(std::fs::read_to_string(d.join("a")).unwrap(), "one");
        assert_eq!(std::fs::read_to_string(d.join("c")).unwrap(), "3");
        assert!(std::fs::symlink_metadata(d.join("b.conf")).is_err());
        assert_eq!(
            std::io::read_to_string(old).unwrap(),
            "1",
            "a reader keeps the version it opened"
        );
        assert_ne!(std::fs::read_link(d.join(DATA)).unwrap(), first);
        assert_eq!(versions(&d).len(), 1, "old versions are removed");
        assert_eq!(
            read_current(&d).unwrap(),
            files(&[("a", "one"), ("c", "3")])
        );
        // Keys that cannot be file names are refused.
        assert!(atomic_write(&d, &files(&[("..data", "x")]), RO).is_err());
        assert!(atomic_write(&d, &files(&[("a/b", "x")]), RO).is_err());
        // Empty: every link goes.
        assert!(atomic_write(&d, &BTreeMap::new(), RO).unwrap());
        let left: Vec<_> = std::fs::read_dir(&d)
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .filter(|n| !n.to_string_lossy().starts_with(".."))
            .collect();
        assert!(left.is_empty(), "{left:?}");
    }

    fn pod() -> Pod {
        let mut p = Pod {
            meta: Meta {
                name: "web".into(),
                namespace: "default".into(),
                uid: "abc".into(),
                ..Default::default()
            },
            ..Default::default()
        };
        p.spec.volumes.push(Volume {
            name: "conf".into(),
            mount_path: "/etc/web".into(),
            source: VolumeSource::ConfigMap { name: "web".into() },
        });
        p.spec.processes.push(ProcessSpec {
            name: "main".into(),
            command: vec!["/bin/true".into()],
            env_from: vec![
                EnvFrom::ConfigMap {
                    name: "web".into(),
                    prefix: "WEB_".into(),
                },
                EnvFrom::Secret {
                    name: "db".into(),
                    prefix: String::new(),
                },
            ],
            ..Default::default()
        });
        p
    }

    fn cm(name: &str, kv: &[(&str, &str)]) -> ConfigMap {
        ConfigMap {
            meta: Meta {
                name: name.into(),
                namespace: "default".into(),
                ..Default::default()
            },
            data: kv
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    fn secret(name: &str, kv: &[(&str, &[u8])]) -> Secret {
        Secret {
            meta: Meta {
                name: name.into(),
                namespace: "default".into(),
                ..Default::default()
            },
            data: kv
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_vec()))
                .collect(),
        }
    }

    #[test]
    fn missing_names_the_object_and_the_fix() {
        let p = pod();
        let m = missing(&p, &[], Some(&[])).unwrap();
        assert!(
            m.contains("config map \"web\" not found in namespace \"default\""),
            "{m}"
        );
        assert!(m.contains("bramble create configmap web -n default"), "{m}");
        assert!(m.contains("secret \"db\" not found"), "{m}");
        assert_eq!(m.matches("config map").count(), 1, "named once: {m}");
        let m = missing(&p, &[cm("web", &[])], None).unwrap();
        assert!(m.contains("waiting for secret \"db\""), "{m}");
        assert_eq!(
            missing(&p, &[cm("web", &[])], Some(&[secret("db", &[])])),
            None
        );
    }

    #[test]
    fn env_from_resolves_in_order_and_own_env_wins() {
        let p = pod();
        let env = resolve_env(
            &p,
            &[cm("web", &[("mode", "fast"), ("port", "80")])],
            &[secret("db", &[("PASSWORD", b"pw"), ("BIN", &[0xff, 0])])],
        );
        assert_eq!(
            env,
            vec![(
                "main".to_string(),
                vec![
                    ("PASSWORD".to_string(), "pw".to_string()),
                    ("WEB_mode".to_string(), "fast".to_string()),
                    ("WEB_port".to_string(), "80".to_string()),
                ]
            )]
        );
        let mut own = vec![("WEB_port".to_string(), "8080".to_string())];
        merge_env(&mut own, &env[0].1);
        assert_eq!(own.len(), 3);
        assert_eq!(own[0], ("WEB_port".into(), "8080".into()));
    }

    #[test]
    fn mountinfo_escapes() {
        assert_eq!(unescape_mountinfo("/a\\040b"), "/a b");
        assert_eq!(unescape_mountinfo("/plain"), "/plain");
    }
}
