//! The node's pod network, with iproute2's `ip` (and util-linux's `nsenter`), present on
//! Raspberry Pi OS and Debian (busybox has both applets too):
//! - a bridge (`bramble0`) holding the node subnet's gateway address, and IPv4 forwarding;
//! - per isolated pod, a veth pair: the host end on the bridge, the other end as `eth0` in the
//!   pod's network namespace with the pod's address and a default route via the gateway;
//! - a route to every other node's pod subnet via that node's address (flannel's host-gw: nodes
//!   share a link), marked with protocol [`ROUTE_PROTO`] so that stale ones can be found.
//!
//! Nothing is NATed (no iptables): pods reach the cluster, its nodes and each other.

use std::io::Write;
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};

use super::{Result, SysError};

/// The routing protocol number marking the worker's routes (`ip route show proto 98`).
pub const ROUTE_PROTO: &str = "98";

fn run(args: &[&str], stdin: Option<&str>) -> Result<String> {
    let what = || args.join(" ");
    let mut child = Command::new(args[0])
        .args(&args[1..])
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| SysError::Command {
            cmd: what(),
            err: if e.kind() == std::io::ErrorKind::NotFound {
                format!(
                    "{} is not installed: isolated pods need iproute2 and util-linux \
                     (apt install iproute2 util-linux)",
                    args[0]
                )
            } else {
                e.to_string()
            },
        })?;
    if let Some(input) = stdin
        && let Some(mut w) = child.stdin.take()
    {
        let _ = w.write_all(input.as_bytes());
    }
    let out = child.wait_with_output().map_err(|e| SysError::Command {
        cmd: what(),
        err: e.to_string(),
    })?;
    if !out.status.success() {
        return Err(SysError::Command {
            cmd: what(),
            err: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Creates `bridge` if it is missing, gives it `gateway/prefix`, brings it up, and turns on IPv4
/// forwarding. Idempotent.
pub fn ensure_bridge(bridge: &str, gateway: Ipv4Addr, prefix: u8) -> Result<()> {
    // (`ip link show`, not /sys/class/net: sysfs shows the network namespace it was mounted in.)
    if run(&["ip", "link", "show", "dev", bridge], None).is_err() {
        run(&["ip", "link", "add", bridge, "type", "bridge"], None)?;
    }
    let addr = format!("{gateway}/{prefix}");
    run(&["ip", "addr", "replace", &addr, "dev", bridge], None)?;
    run(&["ip", "link", "set", bridge, "up"], None)?;
    let fwd = "/proc/sys/net/ipv4/ip_forward";
    if std::fs::read_to_string(fwd)
        .map(|s| s.trim() != "1")
        .unwrap_or(true)
    {
        std::fs::write(fwd, "1").map_err(|err| SysError::Io {
            op: "write",
            path: fwd.into(),
            err,
        })?;
    }
    Ok(())
}

/// Connects the network namespace of `pid` to `bridge`: a veth pair `host_if` (on the bridge)
/// and `eth0` (in the pod, `ip/prefix`, default route via `gateway`).
pub fn attach(
    pid: i32,
    bridge: &str,
    host_if: &str,
    ip: Ipv4Addr,
    prefix: u8,
    gateway: Ipv4Addr,
) -> Result<()> {
    let ns = pid.to_string();
    run(
        &[
            "ip", "link", "add", host_if, "type", "veth", "peer", "name", "eth0", "netns", &ns,
        ],
        None,
    )?;
    let set = run(
        &["ip", "link", "set", host_if, "master", bridge, "up"],
        None,
    );
    if let Err(e) = set {
        let _ = run(&["ip", "link", "del", host_if], None);
        return Err(e);
    }
    let script = format!(
        "link set lo up\naddr add {ip}/{prefix} dev eth0\nlink set eth0 up\n\
         route add default via {gateway}\n"
    );
    let netns = format!("--net=/proc/{pid}/ns/net");
    run(&["nsenter", &netns, "ip", "-batch", "-"], Some(&script)).inspect_err(|_| {
        let _ = run(&["ip", "link", "del", host_if], None);
    })?;
    Ok(())
}

/// Makes the worker's routes (marked [`ROUTE_PROTO`]) exactly `want`: (subnet, via) pairs.
/// Returns how many routes were added or removed.
pub fn sync_routes(want: &[(String, String)]) -> Result<usize> {
    let have = run(&["ip", "-4", "route", "show", "proto", ROUTE_PROTO], None)?;
    let have: Vec<(String, String)> = have
        .lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            let dst = w.next()?.to_string();
            let via = match (w.next(), w.next()) {
                (Some("via"), Some(v)) => v.to_string(),
                _ => String::new(),
            };
            Some((dst, via))
        })
        .collect();
    let mut changes = 0;
    for (dst, via) in &have {
        if !want.iter().any(|(d, v)| d == dst && v == via) {
            run(&["ip", "route", "del", dst, "proto", ROUTE_PROTO], None)?;
            changes += 1;
        }
    }
    for (dst, via) in want {
        if !have.iter().any(|(d, v)| d == dst && v == via) {
            run(
                &[
                    "ip",
                    "route",
                    "replace",
                    dst,
                    "via",
                    via,
                    "proto",
                    ROUTE_PROTO,
                ],
                None,
            )?;
            changes += 1;
        }
    }
    Ok(changes)
}
