//! Fixed test values shared by the golden tests, the property tests and the `sizes` example.
//! No randomness and no clock: every value here is the same on every run.
#![allow(dead_code)] // each test crate uses a different subset

use std::cell::Cell;
use std::rc::Rc;

use bramble_wire::msg::Assignment;
use bramble_wire::objects::{
    Labels, Meta, NetworkMode, Pod, PodSpec, PodStatus, ProcessSpec, Resources, RestartPolicy,
};
use bramble_wire::{
    Arch, CgroupVersion, Controllers, Heartbeat, Label, NodeInfo, PROTOCOL_VERSION, PodPhase,
};

/// A heapless string from a literal that fits.
pub fn hs<const N: usize>(s: &str) -> heapless::String<N> {
    heapless::String::try_from(s).expect("fixture string fits its bound")
}

/// A `String` → `String` label map.
pub fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| ((*k).into(), (*v).into()))
        .collect()
}

/// A typical heartbeat.
pub fn heartbeat() -> Heartbeat {
    Heartbeat {
        seq: 7,
        pods_running: 2,
        uptime_s: 3600,
    }
}

/// A realistic Raspberry Pi 4B registration.
pub fn node_info() -> NodeInfo {
    let mut labels = heapless::Vec::new();
    for (k, v) in [("room", "kitchen"), ("disk", "sd")] {
        labels
            .push(Label {
                key: hs(k),
                value: hs(v),
            })
            .expect("two labels fit");
    }
    NodeInfo {
        name: hs("pi4b-kitchen"),
        arch: Arch::Aarch64,
        os: hs("Debian GNU/Linux 12 (bookworm)"),
        kernel: hs("6.1.0-50-arm64"),
        board: hs("pi4b"),
        cpus: 4,
        memory_bytes: 4 * 1024 * 1024 * 1024,
        pids: 4096,
        cgroup: CgroupVersion::V2,
        controllers: Controllers(Controllers::CPU | Controllers::MEMORY | Controllers::PIDS),
        agent_version: hs("0.1.0"),
        labels,
    }
}

/// The protocol version used in fixtures (the current one).
pub const VERSION: u16 = PROTOCOL_VERSION;

/// A typical pod as the master stores and assigns it: one shell process, 32 MiB, 250m CPU.
pub fn hello_pod(name: &str) -> Pod {
    Pod {
        meta: Meta {
            name: name.into(),
            namespace: "default".into(),
            labels: labels(&[("app", "hello")]),
            uid: "0b5c7a52-6f0e-4d1f-9a51-2f1c3e0d8a11".into(),
            revision: 42,
            created_ms: 1_700_000_000_000,
            owners: Vec::new(),
            annotations: Default::default(),
        },
        spec: PodSpec {
            processes: vec![ProcessSpec {
                name: "main".into(),
                command: vec!["/bin/sh".into(), "-c".into(), "echo hello; sleep 2".into()],
                resources: Resources {
                    cpu_millis: Some(250),
                    memory_bytes: Some(32 * 1024 * 1024),
                    pids: None,
                },
                ..ProcessSpec::default()
            }],
            restart_policy: RestartPolicy::Always,
            network: NetworkMode::Host,
            termination_grace_ms: 10_000,
            node_name: Some("pi4b-kitchen".into()),
            ..PodSpec::default()
        },
        status: PodStatus {
            phase: PodPhase::Pending,
            processes: Vec::new(),
            message: String::new(),
            updated_ms: 0,
            ip: String::new(),
        },
    }
}

/// A full assignment of `n` typical pods (`hello-0`, `hello-1`, ...).
pub fn assignment(n: usize) -> Assignment {
    Assignment {
        revision: 1234,
        pods: (0..n).map(|i| hello_pod(&format!("hello-{i}"))).collect(),
        ..Default::default()
    }
}

/// A frame buffer that records how much it was ever asked to reserve and to hold.
#[derive(Debug, Default)]
pub struct TrackingBuf {
    /// What it holds.
    pub bytes: Vec<u8>,
    /// Most bytes ever held.
    pub peak_len: Rc<Cell<usize>>,
    /// Most bytes ever asked to reserve.
    pub peak_reserve: Rc<Cell<usize>>,
}

impl bramble_wire::frame::FrameBuf for TrackingBuf {
    fn clear(&mut self) {
        self.bytes.clear();
    }
    fn extend(&mut self, bytes: &[u8]) -> Result<(), bramble_wire::WireError> {
        self.bytes.extend_from_slice(bytes);
        self.peak_len.set(self.peak_len.get().max(self.bytes.len()));
        Ok(())
    }
    fn bytes(&self) -> &[u8] {
        &self.bytes
    }
    fn capacity_limit(&self) -> usize {
        usize::MAX
    }
    fn reserve_exact(&mut self, len: usize) {
        // Record only: a test must not actually allocate what a hostile header announces.
        self.peak_reserve.set(self.peak_reserve.get().max(len));
    }
}

/// Feeds `stream` in chunks of the given sizes (cycled), collecting bodies until an error.
pub fn feed_chunked<B: bramble_wire::frame::FrameBuf>(
    dec: &mut bramble_wire::frame::Decoder<B>,
    stream: &[u8],
    sizes: &[usize],
) -> (Vec<Vec<u8>>, Option<bramble_wire::WireError>) {
    let mut bodies = Vec::new();
    let mut pos = 0;
    for &size in sizes.iter().cycle() {
        if pos >= stream.len() {
            break;
        }
        let end = (pos + size).min(stream.len());
        let mut chunk = &stream[pos..end];
        pos = end;
        while !chunk.is_empty() {
            match dec.feed(chunk) {
                Ok((used, body)) => {
                    chunk = &chunk[used..];
                    match body {
                        Some(b) => bodies.push(b.to_vec()),
                        None => assert!(chunk.is_empty()),
                    }
                }
                Err(e) => return (bodies, Some(e)),
            }
        }
    }
    (bodies, None)
}
