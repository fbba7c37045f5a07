//! What the node reports about itself, read from /proc and /etc.

use std::fs;

use bramble_wire::{Arch, CgroupVersion, Controllers, Label, NodeInfo};

fn bounded<const N: usize>(s: &str) -> heapless::String<N> {
    let mut out = heapless::String::new();
    for c in s.chars() {
        if out.push(c).is_err() {
            break;
        }
    }
    out
}

/// 32-bit ARM: rustc exposes no ARM version to `cfg!`, so ask the kernel. An ARMv6 core (Pi Zero,
/// Pi 1) says `CPU architecture: 6`; v7 and v8 cores running 32-bit code run armv7 binaries.
fn arm32() -> Arch {
    let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let v6 = cpuinfo
        .lines()
        .filter_map(|l| l.strip_prefix("CPU architecture"))
        .any(|v| v.trim_start_matches([' ', '\t', ':']).starts_with('6'));
    if v6 { Arch::Armv6 } else { Arch::Armv7 }
}

/// The architecture this binary runs on.
pub fn arch() -> Arch {
    match std::env::consts::ARCH {
        "aarch64" => Arch::Aarch64,
        "arm" => arm32(),
        "riscv64" => Arch::Riscv64,
        _ => Arch::X86_64,
    }
}

fn os_name() -> String {
    fs::read_to_string("/etc/os-release")
        .ok()
        .and_then(|t| {
            t.lines().find_map(|l| {
                l.strip_prefix("PRETTY_NAME=")
                    .map(|v| v.trim_matches('"').to_string())
            })
        })
        .unwrap_or_else(|| "Linux".into())
}

fn mem_total() -> u64 {
    fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| {
            t.lines().find_map(|l| {
                l.strip_prefix("MemTotal:")
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            })
        })
        .map(|kb| kb * 1024)
        .unwrap_or(0)
}

/// The board model from the device tree (`Raspberry Pi 4 Model B Rev 1.4`), mapped to a profile
/// name when known.
pub fn board() -> String {
    let model = fs::read_to_string("/proc/device-tree/model").unwrap_or_default();
    let model = model.trim_end_matches('\0');
    let known = [
        ("Raspberry Pi 5", "pi5"),
        ("Raspberry Pi 4", "pi4b"),
        ("Raspberry Pi 3", "pi3b"),
        ("Raspberry Pi Zero 2", "pi-zero-2w"),
    ];
    for (prefix, name) in known {
        if model.starts_with(prefix) {
            return name.into();
        }
    }
    if model.contains("QEMU") || model.contains("linux,dummy-virt") {
        return format!("qemu-virt-{}", arch().as_str());
    }
    String::new()
}

/// Collects the node's facts.
pub fn collect(
    name: &str,
    labels: &[(String, String)],
    board_override: Option<&str>,
    cgroup: CgroupVersion,
    controllers: Controllers,
) -> NodeInfo {
    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let pids = fs::read_to_string("/proc/sys/kernel/pid_max")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(32768);
    let mut ls = heapless::Vec::new();
    for (k, v) in labels.iter().take(16) {
        let _ = ls.push(Label {
            key: bounded(k),
            value: bounded(v),
        });
    }
    NodeInfo {
        name: bounded(name),
        arch: arch(),
        os: bounded(&os_name()),
        kernel: bounded(kernel.trim()),
        board: bounded(
            board_override
                .map(str::to_string)
                .unwrap_or_else(board)
                .as_str(),
        ),
        cpus: std::thread::available_parallelism()
            .map(|n| n.get() as u16)
            .unwrap_or(1),
        memory_bytes: mem_total(),
        pids,
        cgroup,
        controllers,
        agent_version: bounded(env!("CARGO_PKG_VERSION")),
        labels: ls,
    }
}
