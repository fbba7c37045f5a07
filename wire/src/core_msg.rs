//! Core messages: usable without an allocator (heapless, bounded fields).

use heapless::{String, Vec};
use serde::{Deserialize, Serialize};

/// A DNS-1123 label or similar short name (at most 63 bytes).
pub type Name = String<63>;
/// A credential (join token, admin token, node secret): at most 128 bytes.
pub type Token = String<128>;
/// A short human-readable text: at most 200 bytes.
pub type ShortText = String<200>;

/// Who is on the other end of a connection.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Role {
    /// A `bramble-worker` agent (a Linux board).
    Worker,
    /// The `bramble` CLI or another API client.
    Client,
    /// A bare-metal device that reports but runs no pods.
    Device,
}

/// First message of every connection, from the dialing side. Its layout is frozen forever
/// (see the crate's evolution rules).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Hello {
    /// The protocol version the peer speaks. Always the first field.
    pub protocol_version: u16,
    /// What the peer is.
    pub role: Role,
    /// Node name for workers and devices, user name for clients.
    pub identity: Name,
    /// Join token, node secret or admin token.
    pub credentials: Token,
    /// The peer's software version, for `bramble get nodes -o wide`.
    pub agent_version: String<32>,
}

/// The master accepts a connection.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Welcome {
    /// The version both sides will speak from now on.
    pub protocol_version: u16,
    /// The identity the master knows the peer by.
    pub identity: Name,
    /// How often the peer should send a [`Heartbeat`], in milliseconds.
    pub heartbeat_interval_ms: u32,
    /// The master's software version.
    pub master_version: String<32>,
}

/// Why the master refused a connection.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum RejectReason {
    /// The peer's protocol version is outside `min..=max`.
    UnsupportedVersion {
        /// Oldest version the master accepts.
        min: u16,
        /// Newest version the master accepts.
        max: u16,
    },
    /// Wrong token or secret.
    BadCredentials,
    /// The identity is not a valid name, or is held by another live connection.
    BadIdentity,
    /// Too many connections; try again later.
    Busy,
    /// The peer sent something that is not a valid handshake.
    Malformed,
}

/// The master refuses a connection and closes it.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Reject {
    /// Machine-readable reason.
    pub reason: RejectReason,
    /// Human-readable explanation naming the fix.
    pub message: ShortText,
}

/// The handshake exchange: the first frame in each direction.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Handshake {
    /// Dialer → master.
    Hello(Hello),
    /// Master → dialer: accepted.
    Welcome(Welcome),
    /// Master → dialer: refused; the connection closes.
    Reject(Reject),
}

impl Handshake {
    /// Reads the protocol version of a `Handshake::Hello` frame body without decoding the rest,
    /// so that a Hello from a newer peer (whose remaining fields may differ) is answered with
    /// [`crate::WireError::UnsupportedVersion`] rather than a decoding error.
    pub fn check_hello_version(body: &[u8]) -> Result<u16, crate::WireError> {
        // Tag 0 (Hello) followed by the version as a u16 varint.
        let (&tag, rest) = body.split_first().ok_or(crate::WireError::Truncated)?;
        if tag != 0 {
            return Err(crate::WireError::UnknownTag);
        }
        let (version, _) = postcard::take_from_bytes::<u16>(rest)?;
        if !(crate::MIN_PROTOCOL_VERSION..=crate::PROTOCOL_VERSION).contains(&version) {
            return Err(crate::WireError::UnsupportedVersion {
                got: version,
                min: crate::MIN_PROTOCOL_VERSION,
                max: crate::PROTOCOL_VERSION,
            });
        }
        Ok(version)
    }
}

/// CPU architecture of a node or an artifact.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Arch {
    /// 64-bit ARM (Pi 3/4/5, Zero 2 W).
    Aarch64,
    /// 32-bit ARMv7 hard-float.
    Armv7,
    /// 32-bit ARMv6 (Pi Zero, Pi 1).
    Armv6,
    /// x86-64 (laptops, CI).
    X86_64,
    /// 64-bit RISC-V.
    Riscv64,
    /// A microcontroller (no pods).
    Mcu,
}

impl Arch {
    /// The name used in manifests and tables.
    pub const fn as_str(self) -> &'static str {
        match self {
            Arch::Aarch64 => "aarch64",
            Arch::Armv7 => "armv7",
            Arch::Armv6 => "armv6",
            Arch::X86_64 => "x86_64",
            Arch::Riscv64 => "riscv64",
            Arch::Mcu => "mcu",
        }
    }

    /// Parses the names of [`Arch::as_str`] plus common aliases (`arm64`, `amd64`, `armhf`).
    pub fn parse(s: &str) -> Option<Arch> {
        Some(match s {
            "aarch64" | "arm64" => Arch::Aarch64,
            "armv7" | "armv7l" | "armhf" | "arm" => Arch::Armv7,
            "armv6" | "armv6l" => Arch::Armv6,
            "x86_64" | "amd64" => Arch::X86_64,
            "riscv64" => Arch::Riscv64,
            "mcu" => Arch::Mcu,
            _ => return None,
        })
    }
}

/// Which cgroup hierarchy a node runs.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum CgroupVersion {
    /// No usable cgroup filesystem: pods run without limits.
    None,
    /// cgroup v1 (per-controller hierarchies).
    V1,
    /// cgroup v2 (unified hierarchy).
    V2,
}

/// Bit set of the cgroup controllers a node can enforce.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Controllers(pub u8);

impl Controllers {
    /// CPU quota and weight.
    pub const CPU: u8 = 1;
    /// Memory limit and OOM accounting.
    pub const MEMORY: u8 = 2;
    /// Process count limit.
    pub const PIDS: u8 = 4;
    /// CPU pinning.
    pub const CPUSET: u8 = 8;
    /// Block I/O.
    pub const IO: u8 = 16;

    /// Whether every bit of `c` is present.
    pub const fn has(self, c: u8) -> bool {
        self.0 & c == c
    }

    /// Names of the controllers present, in a fixed order.
    pub fn names(self) -> impl Iterator<Item = &'static str> {
        [
            (Self::CPU, "cpu"),
            (Self::MEMORY, "memory"),
            (Self::PIDS, "pids"),
            (Self::CPUSET, "cpuset"),
            (Self::IO, "io"),
        ]
        .into_iter()
        .filter(move |(bit, _)| self.0 & bit != 0)
        .map(|(_, n)| n)
    }
}

/// A `key=value` label (each at most 63 bytes).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Label {
    /// Key.
    pub key: Name,
    /// Value.
    pub value: Name,
}

/// What a node tells the master about itself when it registers (and again only when it changes).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct NodeInfo {
    /// Node name (DNS-1123 label).
    pub name: Name,
    /// CPU architecture.
    pub arch: Arch,
    /// Operating system, e.g. `Debian GNU/Linux 12`.
    pub os: String<48>,
    /// Kernel release, e.g. `6.1.0-50-arm64`.
    pub kernel: String<48>,
    /// Board profile name if known (`pi4b`), else empty.
    pub board: String<32>,
    /// Online CPUs.
    pub cpus: u16,
    /// Physical memory in bytes.
    pub memory_bytes: u64,
    /// Maximum processes the node offers to pods.
    pub pids: u32,
    /// cgroup hierarchy in use.
    pub cgroup: CgroupVersion,
    /// Controllers usable for pods.
    pub controllers: Controllers,
    /// Agent software version.
    pub agent_version: String<32>,
    /// Node labels given on the agent's command line.
    pub labels: Vec<Label, 16>,
}

/// The periodic liveness signal: a few bytes, sent every `heartbeat_interval_ms`.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Heartbeat {
    /// Increments with every heartbeat of one connection.
    pub seq: u32,
    /// Pods currently running on the node.
    pub pods_running: u16,
    /// Seconds since the agent started.
    pub uptime_s: u32,
}

/// Lifecycle phase of a pod.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum PodPhase {
    /// Accepted, not yet running (waiting for a node, or starting).
    Pending,
    /// At least one process runs.
    Running,
    /// All processes exited successfully and will not restart.
    Succeeded,
    /// A process failed and will not restart.
    Failed,
    /// The node that runs it is not reporting.
    Unknown,
}

impl PodPhase {
    /// The name shown in tables.
    pub const fn as_str(self) -> &'static str {
        match self {
            PodPhase::Pending => "Pending",
            PodPhase::Running => "Running",
            PodPhase::Succeeded => "Succeeded",
            PodPhase::Failed => "Failed",
            PodPhase::Unknown => "Unknown",
        }
    }
}

/// Why a process last stopped.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum ExitReason {
    /// Exited with status 0.
    Completed,
    /// Exited with a non-zero status.
    Error(i32),
    /// Killed by a signal (not an OOM kill).
    Signaled(i32),
    /// Killed by the kernel's OOM killer inside its memory limit.
    OOMKilled,
    /// Could not be started (bad command, missing rootfs...).
    StartFailed,
}

/// Messages a bare-metal device sends after the handshake (no allocator needed).
#[allow(clippy::large_enum_variant)] // no allocator to box with; one message at a time
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum DeviceUp {
    /// Registers or updates the device as a node.
    Register(NodeInfo),
    /// Liveness.
    Heartbeat(Heartbeat),
}
