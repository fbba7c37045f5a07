//! Every file the worker keeps, and how it writes and versions them (firecracker's `persist`).
//!
//! # Where
//! [`StateDir`] (`--state-dir`, persistent, e.g. on the SD card) and [`RunDir`] (`--run-dir`,
//! meant for tmpfs) own every path; [`PodDir`] is one pod's directory under the run dir. No other
//! module joins a file name onto these roots.
//!
//! ```text
//! <state-dir>/assignment.bin   the last assignment set (offline autonomy)       [assignment]
//!             node.credential  this node's credential, 0600                       [credential]
//!             network          the last pod subnets                                [network]
//!             endpoints        the last service endpoints (the proxy)              [endpoints]
//!             cluster-network  the pod and service ranges, the DNS domain          [cluster-network]
//!             artifacts/       unpacked artifact trees (content-addressed)
//!             logs/<ns>_<pod>_<uid prefix>/<process>.log (+ .log.1, .log.previous)
//! <run-dir>/pods/<key>/config  what the pod init runs (agent → init)              [pod-config]
//!                      status  the pod's status (init → agent)                     [pod-status]
//!                      init    init PID, start ticks, start time                   [pod-init]
//!                      ip      an isolated pod's address                           [pod-ip]
//!                      events  fifo: a byte per status change
//!                      hosts, resolv.conf, init.log, volumes/
//!           configmaps/<key>/, secrets/<key>/ (a tmpfs): config map and secret volumes,
//!                      and the pods' `env_from` file
//! ```
//!
//! # Writing
//! One helper, [`write_file`] (and [`write_file_at`] for the pod init, which writes relative to
//! a directory descriptor after `pivot_root`): a temporary file in the same directory, fsync,
//! rename over the target, fsync of the directory. A reader sees the old or the new file, never
//! a torn one, and after a power cut the file is one of them. Callers write only when the bytes
//! change, so an idle node writes nothing. (On the run dir's tmpfs the fsyncs cost nothing.)
//!
//! # Versioning rule
//! Every file marked `[kind]` above starts with a one-line header, `bramble <kind> v<N>\n`,
//! followed by its payload (postcard, or text for `credential`, `pod-init` and `pod-ip`).
//! - A file without the header is **version 0**: the format of the builds before versioning,
//!   whose payload is exactly today's version 1 payload. Readers ([`decode`]) accept every
//!   version from 0 to the current one; writers always write the current one ([`encode`]).
//! - The agent migrates its own files: reading an older version, it rewrites the file in the
//!   current one. Files another process writes are read in any version without rewriting them:
//!   a pod's `status` comes from its init, and inits started by an older build keep running
//!   (and writing their format) across an agent upgrade.
//! - Any change to a persisted type — including a wire type inside it, such as a protocol
//!   version bump that changes `Pod` — bumps that kind's version (the `*_V` constants) and keeps
//!   a decoder for every earlier version: a frozen copy of the old type and a conversion. The
//!   committed fixtures of every earlier version (`tests/fixtures/state-v*`, read by
//!   `tests/state_upgrade.rs`) fail the build's tests when a change forgets this.
//! - A file that a running init of another build reads (the `env_from` file) keeps its format:
//!   a change there is a new file name.

use std::fs;
use std::io::{self, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::sys::process as sysproc;

mod v1;
mod v2;
mod v3;

/// Version of `assignment.bin` (postcard `bramble_wire::msg::Assignment`): 4 since protocol 7
/// (object metadata's annotations, a pod's `ephemeral_storage`); 3 holds protocol 6's types
/// ([`v3`]), 2 protocols 4 and 5's
/// ([`v2`]), 0 and 1 protocol 3's ([`v1`]).
pub const ASSIGNMENT_V: u32 = 4;
/// Version of `node.credential` (text: `id.secret\n`).
pub const CREDENTIAL_V: u32 = 1;
/// Version of `network` (postcard `Vec<PodSubnet>`).
pub const NETWORK_V: u32 = 1;
/// Version of `cluster-network` (postcard `ClusterNetwork`).
pub const CLUSTER_NETWORK_V: u32 = 1;
/// Version of `endpoints` (postcard `Vec<Endpoints>`): 3 since object metadata has
/// annotations; 2 holds protocols 5 and 6's endpoints ([`v3`]: the service's virtual IP), 0 and
/// 1 protocol 4's ([`v1`]).
pub const ENDPOINTS_V: u32 = 3;
/// Version of a pod's `config` (postcard [`crate::runtime::init::InitConfig`]): 4 since
/// protocol 7 (the writable layer's tmpfs); 3 holds protocol 6's ([`v3`]), 2 protocols 4 and 5's
/// process spec ([`v2`]), 0 and 1 protocol 3's ([`v1`]).
pub const POD_CONFIG_V: u32 = 4;
/// Version of a pod's `status` (postcard `PodStatus`).
pub const POD_STATUS_V: u32 = 1;
/// Version of a pod's `init` (text: `<pid> <start ticks> <start ms>\n`).
pub const POD_INIT_V: u32 = 1;
/// Version of a pod's `ip` (text: the address and a newline).
pub const POD_IP_V: u32 = 1;

/// A versioned file kind: its name in the header and its current version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Kind {
    /// Name in the header (`bramble <name> v<N>`).
    pub name: &'static str,
    /// The version this build writes.
    pub current: u32,
}

/// `assignment.bin`.
pub const ASSIGNMENT: Kind = Kind {
    name: "assignment",
    current: ASSIGNMENT_V,
};
/// `node.credential`.
pub const CREDENTIAL: Kind = Kind {
    name: "credential",
    current: CREDENTIAL_V,
};
/// `network`.
pub const NETWORK: Kind = Kind {
    name: "network",
    current: NETWORK_V,
};
/// `endpoints`.
pub const ENDPOINTS: Kind = Kind {
    name: "endpoints",
    current: ENDPOINTS_V,
};
/// `cluster-network`.
pub const CLUSTER_NETWORK: Kind = Kind {
    name: "cluster-network",
    current: CLUSTER_NETWORK_V,
};
/// A pod's `config`.
pub const POD_CONFIG: Kind = Kind {
    name: "pod-config",
    current: POD_CONFIG_V,
};
/// A pod's `status`.
pub const POD_STATUS: Kind = Kind {
    name: "pod-status",
    current: POD_STATUS_V,
};
/// A pod's `init`.
pub const POD_INIT: Kind = Kind {
    name: "pod-init",
    current: POD_INIT_V,
};
/// A pod's `ip`.
pub const POD_IP: Kind = Kind {
    name: "pod-ip",
    current: POD_IP_V,
};

/// Errors reading a versioned file.
#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    /// Written by a newer build (a downgrade): not read, never overwritten by guesswork.
    #[error("{kind} file version {version} is newer than this build's {current}")]
    Newer {
        /// The kind.
        kind: &'static str,
        /// Its version.
        version: u32,
        /// What this build writes.
        current: u32,
    },
    /// The payload does not decode.
    #[error("{kind} file version {version}: {why}")]
    Payload {
        /// The kind.
        kind: &'static str,
        /// Its version.
        version: u32,
        /// Why.
        why: String,
    },
}

/// `payload` with the header of the current version of `kind`.
pub fn encode(kind: Kind, payload: &[u8]) -> Vec<u8> {
    let mut out = format!("bramble {} v{}\n", kind.name, kind.current).into_bytes();
    out.extend_from_slice(payload);
    out
}

/// Splits a file of `kind` into its version and payload; a file without the header is
/// version 0 (the whole file is the payload).
pub fn decode(kind: Kind, bytes: &[u8]) -> Result<(u32, &[u8]), FormatError> {
    let prefix = format!("bramble {} v", kind.name);
    let header = bytes.strip_prefix(prefix.as_bytes()).and_then(|rest| {
        let nl = rest.iter().take(11).position(|&b| b == b'\n')?;
        let v = std::str::from_utf8(&rest[..nl]).ok()?.parse::<u32>().ok()?;
        Some((v, &rest[nl + 1..]))
    });
    let (version, payload) = header.unwrap_or((0, bytes));
    if version > kind.current {
        return Err(FormatError::Newer {
            kind: kind.name,
            version,
            current: kind.current,
        });
    }
    Ok((version, payload))
}

/// A type kept in a versioned postcard file, and how to read the earlier versions of its file.
pub trait Persisted: serde::de::DeserializeOwned {
    /// Decodes the payload of `version`, older than the kind's current one. The default: the
    /// payload did not change (version 0 is version 1 without the header).
    fn decode_old(version: u32, payload: &[u8]) -> postcard::Result<Self> {
        let _ = version;
        postcard::from_bytes(payload)
    }
}

impl Persisted for bramble_wire::msg::Assignment {
    fn decode_old(version: u32, payload: &[u8]) -> postcard::Result<Self> {
        if version == 3 {
            return postcard::from_bytes::<v3::AssignmentV3>(payload).map(Into::into);
        }
        if version == 2 {
            return postcard::from_bytes::<v2::AssignmentV2>(payload).map(Into::into);
        }
        postcard::from_bytes::<v1::AssignmentV1>(payload).map(Into::into)
    }
}

impl Persisted for crate::runtime::init::InitConfig {
    fn decode_old(version: u32, payload: &[u8]) -> postcard::Result<Self> {
        if version == 3 {
            return postcard::from_bytes::<v3::InitConfigV3>(payload).map(Into::into);
        }
        if version == 2 {
            return postcard::from_bytes::<v2::InitConfigV2>(payload).map(Into::into);
        }
        postcard::from_bytes::<v1::InitConfigV1>(payload).map(Into::into)
    }
}

impl Persisted for bramble_wire::objects::PodStatus {}
impl Persisted for Vec<bramble_wire::msg::PodSubnet> {}
impl Persisted for bramble_wire::msg::ClusterNetwork {}
impl Persisted for Vec<bramble_wire::objects::Endpoints> {
    fn decode_old(version: u32, payload: &[u8]) -> postcard::Result<Self> {
        if version == 2 {
            return postcard::from_bytes::<Vec<v3::EndpointsV2>>(payload)
                .map(|v| v.into_iter().map(Into::into).collect());
        }
        postcard::from_bytes::<Vec<v1::EndpointsV1>>(payload)
            .map(|v| v.into_iter().map(Into::into).collect())
    }
}

/// A file of `kind` written by this build, as the previous build (version 1) wrote the same
/// values: for upgrade tests. `None` if `bytes` is not a current file of `kind`.
pub fn previous_format(kind: Kind, bytes: &[u8]) -> Option<Vec<u8>> {
    let (version, payload) = decode(kind, bytes).ok()?;
    if version != kind.current {
        return None;
    }
    let v1 = |p: Vec<u8>| [format!("bramble {} v1\n", kind.name).into_bytes(), p].concat();
    if kind == ASSIGNMENT && kind.current >= 2 {
        let a: bramble_wire::msg::Assignment = postcard::from_bytes(payload).ok()?;
        return postcard::to_allocvec(&v1::AssignmentV1::from(&a))
            .ok()
            .map(v1);
    }
    if kind == POD_CONFIG && kind.current >= 2 {
        let c: crate::runtime::init::InitConfig = postcard::from_bytes(payload).ok()?;
        return postcard::to_allocvec(&v1::InitConfigV1::from(&c))
            .ok()
            .map(v1);
    }
    if kind == ENDPOINTS && kind.current >= 2 {
        let e: Vec<bramble_wire::objects::Endpoints> = postcard::from_bytes(payload).ok()?;
        let old: Vec<v1::EndpointsV1> = e.iter().map(Into::into).collect();
        return postcard::to_allocvec(&old).ok().map(v1);
    }
    (kind.current == 1).then(|| bytes.to_vec())
}

/// Decodes a postcard file of `kind`, of any version up to the current one.
pub fn decode_postcard<T: Persisted>(kind: Kind, bytes: &[u8]) -> Result<(u32, T), FormatError> {
    let (version, payload) = decode(kind, bytes)?;
    let value = if version == kind.current {
        postcard::from_bytes(payload)
    } else {
        T::decode_old(version, payload)
    };
    value
        .map(|v| (version, v))
        .map_err(|e| FormatError::Payload {
            kind: kind.name,
            version,
            why: e.to_string(),
        })
}

/// Decodes a text file of `kind` (versions 0 and 1: the same text).
pub fn decode_text(kind: Kind, bytes: &[u8]) -> Result<(u32, &str), FormatError> {
    let (version, payload) = decode(kind, bytes)?;
    std::str::from_utf8(payload)
        .map(|s| (version, s))
        .map_err(|e| FormatError::Payload {
            kind: kind.name,
            version,
            why: e.to_string(),
        })
}

/// Encodes `value` as a postcard file of the current version of `kind`.
pub fn encode_postcard<T: serde::Serialize>(kind: Kind, value: &T) -> io::Result<Vec<u8>> {
    let payload = postcard::to_allocvec(value).map_err(io::Error::other)?;
    Ok(encode(kind, &payload))
}

/// Reads a postcard file of `kind`: `Ok(None)` if it does not exist; an unreadable file is an
/// error of kind `InvalidData`.
pub fn read_postcard<T: Persisted>(kind: Kind, path: &Path) -> io::Result<Option<(u32, T)>> {
    match fs::read(path) {
        Ok(b) => decode_postcard(kind, &b)
            .map(Some)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Reads a text file of `kind` (trimmed); `None` if missing or unreadable.
pub fn read_text(kind: Kind, path: &Path) -> Option<String> {
    let b = fs::read(path).ok()?;
    decode_text(kind, &b)
        .ok()
        .map(|(_, s)| s.trim().to_string())
}

fn tmp_name(name: &str) -> String {
    format!(".{name}.tmp")
}

/// Writes `bytes` to `path` atomically and durably: a temporary file (created with `mode`) in
/// the same directory, fsync, rename, fsync of the directory. Creates the directory.
pub fn write_file(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    write_file_sync(path, bytes, mode, true)
}

/// [`write_file`] without the fsyncs: atomic (readers see the old or the new file), not
/// durable. For the run dir (pods' `config`, `init`, `ip`, `status`): it describes processes,
/// which a crash of the host ends anyway, and an fsync there costs milliseconds per pod start
/// when the run dir is not a tmpfs.
pub fn write_file_volatile(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    write_file_sync(path, bytes, mode, false)
}

fn write_file_sync(path: &Path, bytes: &[u8], mode: u32, sync: bool) -> io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| io::Error::other(format!("not a file path: {}", path.display())))?;
    fs::create_dir_all(dir)?;
    let tmp = dir.join(tmp_name(name));
    let _ = fs::remove_file(&tmp);
    {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
        // The umask may have taken bits away; never more than `mode`.
        f.set_permissions(fs::Permissions::from_mode(mode))?;
        f.write_all(bytes)?;
        if sync {
            f.sync_all()?;
        }
    }
    fs::rename(&tmp, path)?;
    if sync {
        fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// [`write_file_volatile`] relative to the directory `dir` (the pod init's status, after
/// `pivot_root`): atomic, not durable.
pub fn write_file_at(dir: BorrowedFd<'_>, name: &str, bytes: &[u8]) -> crate::sys::Result<()> {
    let tmp = tmp_name(name);
    let fd = sysproc::create_at(dir, &tmp)?;
    sysproc::write_all(fd.as_fd(), bytes)?;
    drop(fd);
    sysproc::rename_at(dir, &tmp, name)
}

/// The agent's state dir (`--state-dir`, persistent).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateDir {
    root: PathBuf,
}

impl StateDir {
    /// The state dir at `root`.
    pub fn new(root: impl Into<PathBuf>) -> StateDir {
        StateDir { root: root.into() }
    }

    /// The directory itself.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The persisted assignment set.
    pub fn assignment(&self) -> PathBuf {
        self.root.join("assignment.bin")
    }

    /// Where an unreadable assignment is moved aside.
    pub fn assignment_corrupt(&self) -> PathBuf {
        self.root.join("assignment.corrupt")
    }

    /// This node's credential.
    pub fn credential(&self) -> PathBuf {
        self.root.join("node.credential")
    }

    /// The last pod subnets from the master.
    pub fn network(&self) -> PathBuf {
        self.root.join("network")
    }

    /// The last service endpoints from the master.
    pub fn endpoints(&self) -> PathBuf {
        self.root.join("endpoints")
    }

    /// The cluster's address plan and DNS domain from the master.
    pub fn cluster_network(&self) -> PathBuf {
        self.root.join("cluster-network")
    }

    /// The artifact cache.
    pub fn artifacts(&self) -> PathBuf {
        self.root.join("artifacts")
    }

    /// Unpacked image layers, `<layers>/<sha256>/` (overlayfs format).
    pub fn layers(&self) -> PathBuf {
        self.root.join("layers")
    }

    /// Flattened image trees (nodes without overlayfs), `<images>/<manifest sha256>/`.
    pub fn images(&self) -> PathBuf {
        self.root.join("images")
    }

    /// Image pods' writable layers, `<pod-roots>/<pod key>/{upper,work}`.
    pub fn pod_roots(&self) -> PathBuf {
        self.root.join("pod-roots")
    }

    /// The log root: `<logs>/<ns>_<pod>/<process>.log`.
    pub fn logs(&self) -> PathBuf {
        self.root.join("logs")
    }
}

/// The runtime dir (`--run-dir`, tmpfs): pods' run dirs and config volumes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunDir {
    root: PathBuf,
}

impl RunDir {
    /// The run dir at `root`.
    pub fn new(root: impl Into<PathBuf>) -> RunDir {
        RunDir { root: root.into() }
    }

    /// The directory itself.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Parent of the pods' run dirs (the runtime's `state_dir`).
    pub fn pods(&self) -> PathBuf {
        self.root.join("pods")
    }

    /// Root of config map volumes.
    pub fn config_maps(&self) -> PathBuf {
        self.root.join("configmaps")
    }

    /// Root of secret volumes (a tmpfs).
    pub fn secrets(&self) -> PathBuf {
        self.root.join("secrets")
    }
}

/// One pod's run dir, `<run-dir>/pods/<key>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodDir {
    path: PathBuf,
}

impl PodDir {
    /// File name of the init's configuration (read by the init by name).
    pub const CONFIG: &'static str = "config";
    /// File name of the status (written by the init by name).
    pub const STATUS: &'static str = "status";
    /// File name of the events fifo.
    pub const EVENTS: &'static str = "events";
    /// File name of the hosts file bind-mounted into a pod with a rootfs.
    pub const HOSTS: &'static str = "hosts";

    /// The run dir of the pod named `key` under the pods dir `pods`.
    pub fn new(pods: &Path, key: &str) -> PodDir {
        PodDir {
            path: pods.join(key),
        }
    }

    /// A pod run dir at `path` (the init gets it as its argument).
    pub fn at(path: impl Into<PathBuf>) -> PodDir {
        PodDir { path: path.into() }
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// What the init runs.
    pub fn config(&self) -> PathBuf {
        self.path.join(Self::CONFIG)
    }

    /// The pod's status.
    pub fn status(&self) -> PathBuf {
        self.path.join(Self::STATUS)
    }

    /// The events fifo.
    pub fn events(&self) -> PathBuf {
        self.path.join(Self::EVENTS)
    }

    /// Init PID, start ticks and start time.
    pub fn init(&self) -> PathBuf {
        self.path.join("init")
    }

    /// An isolated pod's address.
    pub fn ip(&self) -> PathBuf {
        self.path.join("ip")
    }

    /// The hosts file for a pod with a rootfs.
    pub fn hosts(&self) -> PathBuf {
        self.path.join(Self::HOSTS)
    }

    /// An isolated pod's `/etc/resolv.conf` (the cluster DNS), written by the agent before the
    /// init starts; absent: the pod sees the node's.
    pub fn resolv_conf(&self) -> PathBuf {
        self.path.join("resolv.conf")
    }

    /// The init's own stdout/stderr.
    pub fn init_log(&self) -> PathBuf {
        self.path.join("init.log")
    }

    /// The pod's `emptyDir` volumes.
    pub fn volumes(&self) -> PathBuf {
        self.path.join("volumes")
    }

    /// Writes the init's `init` file (PID, start ticks, start time).
    pub fn write_init(&self, pid: i32, ticks: u64, started_ms: u64) -> io::Result<()> {
        let text = format!("{pid} {ticks} {started_ms}\n");
        write_file_volatile(&self.init(), &encode(POD_INIT, text.as_bytes()), 0o644)
    }

    /// Reads the `init` file (any version): PID, start ticks, start time.
    pub fn read_init(&self) -> Option<(i32, u64, u64)> {
        parse_init(&read_text(POD_INIT, &self.init())?)
    }

    /// Writes the pod's address.
    pub fn write_ip(&self, ip: std::net::Ipv4Addr) -> io::Result<()> {
        write_file_volatile(
            &self.ip(),
            &encode(POD_IP, format!("{ip}\n").as_bytes()),
            0o644,
        )
    }

    /// The pod's address, if it has one (any version).
    pub fn read_ip(&self) -> Option<String> {
        read_text(POD_IP, &self.ip()).filter(|s| !s.is_empty())
    }
}

fn parse_init(s: &str) -> Option<(i32, u64, u64)> {
    let mut f = s.split_whitespace().map(|x| x.parse::<u64>().ok());
    match (f.next(), f.next(), f.next()) {
        (Some(Some(p)), Some(Some(t)), Some(Some(s))) => Some((i32::try_from(p).ok()?, t, s)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trip_and_version_zero() {
        let bytes = encode(ASSIGNMENT, b"\x2a\x00");
        assert_eq!(&bytes[..], b"bramble assignment v4\n\x2a\x00");
        assert_eq!(decode(ASSIGNMENT, &bytes).unwrap(), (4, &b"\x2a\x00"[..]));
        // No header: version 0, the whole file.
        assert_eq!(
            decode(ASSIGNMENT, b"\x2a\x00").unwrap(),
            (0, &b"\x2a\x00"[..])
        );
        // Another kind's header is not this kind's.
        let other = encode(NETWORK, b"x");
        assert_eq!(decode(ASSIGNMENT, &other).unwrap().0, 0);
        // Newer: refused.
        let newer = b"bramble assignment v9\nzz";
        assert!(matches!(
            decode(ASSIGNMENT, newer),
            Err(FormatError::Newer { version: 9, .. })
        ));
    }

    #[test]
    fn durable_write_replaces_and_keeps_mode() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sub/file");
        write_file(&p, b"one", 0o600).unwrap();
        write_file(&p, b"two", 0o600).unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        assert_eq!(
            fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let names: Vec<_> = fs::read_dir(dir.path().join("sub"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["file"], "no temporary file left behind");
    }

    #[test]
    fn init_and_ip_files_in_both_versions() {
        let dir = tempfile::tempdir().unwrap();
        let pod = PodDir::new(dir.path(), "default_a_1");
        pod.write_init(12, 34, 56).unwrap();
        assert!(
            fs::read(pod.init())
                .unwrap()
                .starts_with(b"bramble pod-init v1\n")
        );
        assert_eq!(pod.read_init(), Some((12, 34, 56)));
        fs::write(pod.init(), "7 8 9\n").unwrap();
        assert_eq!(pod.read_init(), Some((7, 8, 9)));
        pod.write_ip("10.42.0.3".parse().unwrap()).unwrap();
        assert_eq!(pod.read_ip().as_deref(), Some("10.42.0.3"));
        fs::write(pod.ip(), "10.42.0.4\n").unwrap();
        assert_eq!(pod.read_ip().as_deref(), Some("10.42.0.4"));
    }
}
