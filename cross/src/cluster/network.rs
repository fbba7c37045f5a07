//! Scenario: the worker's kernel network path on the emulated aarch64 board (issue 14): the
//! guest's kernel has the nf_tables modules ([`crate::debian::MODULES`]), so the agent programs
//! its `inet bramble` table and serves the cluster DNS on its bridge's gateway address instead of
//! falling back to userspace.
//!
//! - From the worker's side: its log (the guest console) has the `cluster DNS` line (the DNS
//!   only starts in kernel mode) and no `nf_tables with NAT is not usable` preflight warning, no
//!   `cannot program nftables table` and no stopped DNS; the same on the armv7 guest's console
//!   when it ran earlier in the suite (it is shut down before the aarch64-only scenarios).
//! - A service `netcheck` (selecting no pod) is created first; its virtual IP comes from
//!   `bramble get services -o json`.
//! - An isolated pod (`netcheck-iso`) then: prints its `/etc/resolv.conf` (the gateway as
//!   nameserver, the `default.svc.bramble.local` search path); reaches "the internet" — the only
//!   outside address of the guest's restricted user network, the master relay at
//!   `192.0.2.100:<master port>` (QEMU `guestfwd`) — with busybox `nc` (the guest has no route
//!   back to the pod range: only the masquerade makes the answer find the pod); and resolves the
//!   service's short name and FQDN `netcheck.default.svc.bramble.local` with busybox `nslookup`
//!   through its own resolv.conf (server and search path from it), both answering the virtual IP.
//! - A host-network pod reads the guest's `/proc/net/nf_conntrack`: the pod's connection to
//!   `192.0.2.100` is there with its reply addressed to the node (`dst=192.0.2.15`), i.e.
//!   masqueraded by the kernel.
//!
//! Not checked here: an outside name. The restricted network reaches no DNS server (and the
//! suite never uses a real resolver): the guest's `/etc/resolv.conf` has no nameserver, so the
//! cluster DNS answers outside names SERVFAIL. Forwarding is covered by
//! `cargo test -p bramble-tests --test network` (a DNS server of the test's own).

use std::time::Duration;

use anyhow::{Context, Result, bail};

use super::{Cluster, pod_manifest, pod_phase, strip_ansi};
use crate::qemu::{GUEST_IP, MASTER_IP};

/// The service the pod resolves.
pub const SERVICE: &str = "netcheck";
/// The cluster domain (the master's default; the suite does not set `--cluster-domain`).
pub const DOMAIN: &str = "bramble.local";

/// The isolated pod's script: resolv.conf, NAT to the relay, the two names (each retried, the
/// endpoints reach the worker's DNS asynchronously).
pub fn iso_script(master_port: u16) -> String {
    let fqdn = format!("{SERVICE}.default.svc.{DOMAIN}");
    format!(
        "echo '--- resolv.conf'; cat /etc/resolv.conf; echo '---'\n\
         ok=; for i in 1 2 3 4 5; do\n\
         if nc -w 5 {MASTER_IP} {master_port} </dev/null; then ok=1; break; fi; sleep 1\n\
         done\n\
         if [ -n \"$ok\" ]; then echo 'nat=connected'; else echo 'nat=failed'; fi\n\
         for n in {SERVICE} {fqdn}; do\n\
         a=; for i in $(seq 1 20); do\n\
         a=$(nslookup $n 2>/dev/null | awk '/^Name:/{{f=1}} f&&/^Address:/{{print $2; exit}}')\n\
         [ -n \"$a\" ] && break; sleep 1\n\
         done\n\
         echo \"dns $n=$a\"\n\
         done\n\
         echo netcheck-done\n"
    )
}

/// The value printed after `key=` on a line of `logs`.
fn value<'a>(logs: &'a str, key: &str) -> Option<&'a str> {
    logs.lines()
        .find_map(|l| l.trim().strip_prefix(key)?.strip_prefix('='))
        .map(str::trim)
}

/// What the isolated pod's logs show wrong, given the gateway and the virtual IP (empty: all
/// good).
pub fn judge_iso(logs: &str, gateway: &str, vip: &str) -> Vec<String> {
    let mut bad = Vec::new();
    let resolv = logs
        .split("--- resolv.conf")
        .nth(1)
        .and_then(|s| s.split("\n---").next())
        .unwrap_or("");
    if !resolv
        .lines()
        .any(|l| l.split_whitespace().eq(["nameserver", gateway]))
    {
        bad.push(format!(
            "resolv.conf does not name the gateway {gateway}: {resolv:?}"
        ));
    }
    if !resolv.lines().any(|l| {
        l.split_whitespace().next() == Some("search")
            && l.split_whitespace()
                .any(|d| d == format!("default.svc.{DOMAIN}"))
    }) {
        bad.push(format!(
            "resolv.conf has no search default.svc.{DOMAIN}: {resolv:?}"
        ));
    }
    if value(logs, "nat") != Some("connected") {
        bad.push(format!(
            "no TCP connection to {MASTER_IP} (nat={:?})",
            value(logs, "nat")
        ));
    }
    for n in [
        SERVICE.to_string(),
        format!("{SERVICE}.default.svc.{DOMAIN}"),
    ] {
        let got = value(logs, &format!("dns {n}"));
        if got != Some(vip) {
            bad.push(format!("{n} resolved to {got:?}, not the virtual IP {vip}"));
        }
    }
    bad
}

/// The conntrack lines of a connection from `pod_ip` to the relay whose reply goes to the node's
/// address (masqueraded).
pub fn masqueraded<'a>(conntrack: &'a str, pod_ip: &str, port: u16) -> Vec<&'a str> {
    let orig = format!("src={pod_ip} dst={MASTER_IP} ");
    let dport = format!("dport={port} ");
    let reply = format!("src={MASTER_IP} dst={GUEST_IP} ");
    conntrack
        .lines()
        .filter(|l| l.contains(&orig) && l.contains(&dport) && l.contains(&reply))
        .collect()
}

/// What the worker's log (the guest console) shows wrong about its kernel path; with
/// `require_dns`, also a log without the `cluster DNS` line (a guest retired early may have
/// been stopped before its worker got that far).
pub fn judge_worker_log(console: &str, require_dns: bool) -> Vec<String> {
    let log = strip_ansi(console);
    let mut bad = Vec::new();
    for l in log.lines() {
        if l.contains("not usable here")
            || l.contains("cannot program nftables table")
            || (l.contains("cluster DNS on") && l.contains("stopped"))
        {
            bad.push(format!("worker log: {}", l.trim()));
        }
    }
    if require_dns && !log.lines().any(|l| l.contains("cluster DNS")) {
        bad.push("worker log has no `cluster DNS` line (kernel path not active)".into());
    }
    bad
}

/// Run a pod to completion (≤ `timeout`) and return its logs once it Succeeded with `done` in
/// them.
fn run_pod(
    c: &mut Cluster,
    name: &str,
    manifest: &str,
    done: &str,
    timeout: Duration,
) -> Result<String> {
    c.master.apply(name, manifest)?;
    c.wait(
        timeout,
        &format!("`{done}` in `bramble logs {name}`"),
        |c, last| {
            let p = c.master.pod(name)?;
            if let Some(p) = &p
                && pod_phase(p) == "Failed"
            {
                let (_, out, _) = c.master.cli(&["logs", name])?;
                bail!("{name} failed: {} logs: {out}", p["status"]);
            }
            let (_, out, err) = c.master.cli(&["logs", name])?;
            *last = format!("logs {out:?} {err:?}; pod {p:?}");
            let finished = p.as_ref().is_some_and(|p| pod_phase(p) == "Succeeded");
            Ok((finished && out.contains(done)).then_some(out))
        },
    )
}

/// The scenario (see the module doc).
pub fn kernel_network_on_aarch64(c: &mut Cluster) -> Result<String> {
    let node = c.node(0)?.name().to_string();
    let console = c.node(0)?.guest()?.console_log();
    let bad = judge_worker_log(&console, true);
    if !bad.is_empty() {
        return Err(c.failure(&format!(
            "{node}: the kernel network path is not active: {}",
            bad.join("; ")
        )));
    }
    // The armv7 guest (retired after the both-boards scenarios) booted the same modules: its
    // worker must have had the kernel path too.
    let mut armv7 = "armv7 guest not booted in this run".to_string();
    if let Some((name, log, _)) = c.consoles.iter().find(|(n, _, _)| n.contains("armv7")) {
        let bad = judge_worker_log(log, false);
        if !bad.is_empty() {
            return Err(c.failure(&format!(
                "{name}: the kernel network path was not active: {}",
                bad.join("; ")
            )));
        }
        armv7 = if judge_worker_log(log, true).is_empty() {
            format!("{name}'s worker had it too")
        } else {
            format!("{name}'s worker showed no fallback (retired before its DNS line)")
        };
    }
    let n = c.master.node(&node)?.context("the aarch64 node vanished")?;
    let cidr = n["spec"]["pod_cidr"].as_str().unwrap_or("").to_string();
    let base: std::net::Ipv4Addr = cidr
        .split('/')
        .next()
        .and_then(|a| a.parse().ok())
        .ok_or_else(|| c.failure(&format!("node {node} has no pod subnet: {:?}", n["spec"])))?;
    let gateway = std::net::Ipv4Addr::from(u32::from(base) + 1).to_string();

    c.master.apply(
        SERVICE,
        &format!(
            "[[service]]\nname = \"{SERVICE}\"\nselector = {{ app = \"{SERVICE}-nobody\" }}\n\
             port = 8090\ntarget_port = 80\n"
        ),
    )?;
    let vip = c.wait(
        Duration::from_secs(10),
        "service netcheck's virtual IP",
        |c, last| {
            let s = c
                .master
                .list("services")?
                .into_iter()
                .find(|s| s["meta"]["name"] == SERVICE);
            *last = format!("{s:?}");
            Ok(s.and_then(|s| s["spec"]["cluster_ip"].as_str().map(String::from)))
        },
    )?;

    let port = c.master.port;
    let mut iso = pod_manifest(
        "netcheck-iso",
        "Never",
        Some(&node),
        None,
        Some("32Mi"),
        &iso_script(port),
    );
    iso = iso.replacen(
        "[[pod.process]]",
        "network = \"isolated\"\n[[pod.process]]",
        1,
    );
    let logs = run_pod(
        c,
        "netcheck-iso",
        &iso,
        "netcheck-done",
        Duration::from_secs(120),
    )?;
    let p = c
        .master
        .pod("netcheck-iso")?
        .context("pod netcheck-iso vanished")?;
    let pod_ip = p["status"]["ip"].as_str().unwrap_or("").to_string();
    let bad = judge_iso(&logs, &gateway, &vip);
    if !bad.is_empty() {
        return Err(c.failure(&format!(
            "netcheck-iso ({pod_ip}): {}; logs:\n{logs}",
            bad.join("; ")
        )));
    }

    // The kernel did the masquerade: the connection's reply goes to the node's address.
    let ct = run_pod(
        c,
        "netcheck-ct",
        // The node's conntrack table: a host-network pod (pods have their own by default).
        &pod_manifest(
            "netcheck-ct",
            "Never",
            Some(&node),
            None,
            Some("32Mi"),
            &format!("grep 'dst={MASTER_IP} ' /proc/net/nf_conntrack; echo conntrack-done"),
        )
        .replacen("[[pod.process]]", "network = \"host\"\n[[pod.process]]", 1),
        "conntrack-done",
        Duration::from_secs(60),
    )?;
    let seen = masqueraded(&ct, &pod_ip, port);
    if seen.is_empty() {
        return Err(c.failure(&format!(
            "no masqueraded connection {pod_ip} -> {MASTER_IP}:{port} (reply to {GUEST_IP}) in \
             the guest's /proc/net/nf_conntrack:\n{ct}"
        )));
    }
    c.delete_pods(&["netcheck-iso", "netcheck-ct"])?;
    c.master.ok(&["delete", "service", SERVICE])?;
    Ok(format!(
        "kernel path active (cluster DNS on {gateway}:53; {armv7}); pod {pod_ip} reached \
         {MASTER_IP}:{port} masqueraded to {GUEST_IP} (conntrack); {SERVICE} and \
         {SERVICE}.default.svc.{DOMAIN} -> {vip} through the pod's resolv.conf"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "--- resolv.conf\nnameserver 10.42.0.1\nsearch default.svc.bramble.local \
        svc.bramble.local bramble.local\noptions ndots:5\n---\nnat=connected\n\
        dns netcheck=10.43.0.2\ndns netcheck.default.svc.bramble.local=10.43.0.2\nnetcheck-done\n";

    #[test]
    fn a_good_run_passes_and_each_fault_is_named() {
        assert!(judge_iso(GOOD, "10.42.0.1", "10.43.0.2").is_empty());
        let e = judge_iso(
            &GOOD.replace("nat=connected", "nat=failed"),
            "10.42.0.1",
            "10.43.0.2",
        );
        assert!(e.len() == 1 && e[0].contains("no TCP connection"), "{e:?}");
        let e = judge_iso(
            &GOOD.replace("dns netcheck=10.43.0.2", "dns netcheck="),
            "10.42.0.1",
            "10.43.0.2",
        );
        assert!(
            e.len() == 1 && e[0].starts_with("netcheck resolved"),
            "{e:?}"
        );
        let e = judge_iso(GOOD, "10.42.1.1", "10.43.0.2");
        assert!(e[0].contains("does not name the gateway"), "{e:?}");
        let e = judge_iso(
            &GOOD.replace("search default.svc.bramble.local ", "search "),
            "10.42.0.1",
            "10.43.0.2",
        );
        assert!(e[0].contains("no search"), "{e:?}");
    }

    #[test]
    fn only_a_masqueraded_entry_counts() {
        let ct = "ipv4     2 tcp      6 117 TIME_WAIT src=10.42.0.2 dst=192.0.2.100 sport=40000 \
            dport=7443 src=192.0.2.100 dst=192.0.2.15 sport=7443 dport=40000 [ASSURED] mark=0 \
            zone=0 use=2\n\
            ipv4     2 tcp      6 117 TIME_WAIT src=10.42.0.3 dst=192.0.2.100 sport=40001 \
            dport=7443 src=192.0.2.100 dst=10.42.0.3 sport=7443 dport=40001 [ASSURED] mark=0\n";
        assert_eq!(masqueraded(ct, "10.42.0.2", 7443).len(), 1);
        assert!(masqueraded(ct, "10.42.0.3", 7443).is_empty());
        assert!(masqueraded(ct, "10.42.0.2", 7444).is_empty());
    }

    #[test]
    fn the_worker_log_must_show_the_kernel_path() {
        let ok = "INFO bramble_worker::agent::netpath: cluster DNS addr=10.42.0.1:53\n";
        assert!(judge_worker_log(ok, true).is_empty());
        let fallback = "WARN preflight: nf_tables with NAT is not usable here (x)\n";
        assert_eq!(judge_worker_log(fallback, true).len(), 2);
        // A guest stopped before its DNS line: only the fallback warning counts.
        assert!(judge_worker_log("INFO pod subnet\n", false).is_empty());
        assert_eq!(judge_worker_log(fallback, false).len(), 1);
    }
}
