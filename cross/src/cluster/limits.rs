//! Scenario: cgroup v2 CPU and pids limits enforced by the guest's kernel (not just written).
//!
//! Three pods on the aarch64 node, each printing its own cgroup (`/proc/self/cgroup`) first:
//!
//! - `cg-cpu-250m`: `cpu = "250m"`, two busy loops (up to two of the guest's two cores);
//! - `cg-cpu-free`: no limit, one busy loop (the control: what the same loop gets unlimited);
//! - `cg-fork-bomb`: `pids = 24`, waits for a go file, then a doubling fork bomb bounded at
//!   128 leaves (so a broken limit shows as ~130 tasks instead of taking the guest down).
//!
//! A fourth, unlimited pod (`cg-watch`) reads those pods' cgroup files in the guest (through a
//! read-only `host_path` volume of `/sys/fs/cgroup`: its own is its cgroup namespace): it starts
//! the bomb and samples `pids.current` until it is stable, then reads the limited pod's
//! `cpu.stat` and `/proc/uptime` [`CPU_WINDOW_S`] apart, then starts the unlimited loop (it
//! waits for a go file, so the two do not compete: `cpu.weight` 10 against 100 would hold the
//! limited pod down even without its quota) and measures it the same way. The host judges the
//! numbers ([`judge_pids`], [`judge_cpu`]): the limited pod used 10-40 % of a core and was
//! throttled, the unlimited one clearly more; the bomb never had more tasks than `pids.max`
//! (= 24) and the kernel refused forks (`pids.events` max). The judges fail for a pod without
//! the limit (see the tests).

use std::time::Duration;

use anyhow::{Context, Result, bail};

use super::{Cluster, pod_manifest, pod_phase};

/// The limited pod's CPU limit, millicores.
pub const CPU_MILLIS: u32 = 250;
/// The band (share of one core) the limited pod must stay in over the window: wide enough for
/// emulation (timer ticks are coarse under TCG), narrow enough that an unlimited loop (~100 %)
/// or a lost quota fails it.
pub const CPU_BAND: (f64, f64) = (0.10, 0.40);
/// The unlimited control must use at least this share of a core (and twice the limited one).
pub const FREE_MIN: f64 = 0.60;
/// The measuring window per CPU pod, seconds (guest time).
pub const CPU_WINDOW_S: u32 = 8;
/// The fork bomb's `pids` limit.
pub const PIDS_MAX: u64 = 24;
/// The bomb's depth: 2^depth leaves if nothing stops it.
pub const BOMB_DEPTH: u32 = 7;

const GO_FILE: &str = "/go/bramble-cg-fork-bomb.go";
const GO_FREE: &str = "/go/bramble-cg-cpu-free.go";
/// The guest directory the pods share for the go files (pods have private `/tmp`s): a
/// `host_path` volume at `/go` in the bomb, the free loop and the watcher.
const GO_DIR: &str = "/run";
/// Where the watcher sees the guest's cgroup tree (a read-only `host_path` volume): its own
/// `/sys/fs/cgroup` is its pod's cgroup namespace, which shows no other pod.
const HOST_CG: &str = "/host-cgroup";

/// The volume lines of a pod sharing the go directory.
fn go_volume() -> String {
    format!("[[pod.volume]]\nname = \"go\"\nmount_path = \"/go\"\nhost_path = \"{GO_DIR}\"\n")
}

/// The busy loop pods and the bomb, as one manifest.
pub fn manifest(node: &str) -> String {
    let mut m = pod_manifest(
        "cg-cpu-250m",
        "Never",
        Some(node),
        None,
        None,
        "cat /proc/self/cgroup; while :; do :; done & while :; do :; done",
    );
    m.push_str(&format!("cpu = \"{CPU_MILLIS}m\"\n\n"));
    m.push_str(&pod_manifest(
        "cg-cpu-free",
        "Never",
        Some(node),
        None,
        None,
        &format!(
            "cat /proc/self/cgroup; while [ ! -e {GO_FREE} ]; do sleep 0.2; done; while :; do :; done"
        ),
    ));
    m.push_str(&go_volume());
    m.push('\n');
    m.push_str(&pod_manifest(
        "cg-fork-bomb",
        "Never",
        Some(node),
        None,
        None,
        &format!(
            "cat /proc/self/cgroup; while [ ! -e {GO_FILE} ]; do sleep 0.2; done; \
             b() {{ if [ \"$1\" -gt 0 ]; then b $(($1-1)) & b $(($1-1)); else exec sleep 600; fi; }}; \
             b {BOMB_DEPTH} & exec sleep 600"
        ),
    ));
    m.push_str(&format!("pids = {PIDS_MAX}\n"));
    m.push_str(&go_volume());
    m
}

/// The directory of the process's own cgroup in the guest from its `/proc/self/cgroup` output
/// (the v2 line `0::/PATH`), if the path is plain (it goes into a shell script).
pub fn proc_cgroup_dir(proc_self_cgroup: &str) -> Option<String> {
    let path = proc_self_cgroup
        .lines()
        .find_map(|l| l.trim().strip_prefix("0::"))?;
    let plain = path.starts_with('/')
        && path
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/_.-".contains(&b));
    plain.then(|| format!("/sys/fs/cgroup{path}"))
}

/// The pod cgroup's directory in the guest from a pod's `/proc/self/cgroup` output as the node
/// sees it: the v2 line `0::/bramble/default_NAME_UID/_init` gives
/// `/sys/fs/cgroup/bramble/default_NAME_UID` (the cgroup that carries the pod's limits; its
/// processes sit in leaves below it). A pod sees its own lines relative to its cgroup
/// namespace (`0::/_init`): see [`pod_cgroup_of`].
pub fn pod_cgroup_dir(proc_self_cgroup: &str, pod: &str) -> Option<String> {
    let path = proc_cgroup_dir(proc_self_cgroup)?;
    let path = path.strip_prefix("/sys/fs/cgroup")?;
    let tag = format!("_{pod}_");
    let mut out = String::from("/sys/fs/cgroup");
    for part in path.split('/').filter(|p| !p.is_empty()) {
        out.push('/');
        out.push_str(part);
        if part.contains(&tag) {
            return Some(out);
        }
    }
    None
}

/// The watcher's script: start the bomb, sample its `pids.current` until stable, then one CPU
/// window per CPU pod. `bomb` is the bomb's pod cgroup (with `pids.max`), `bomb_leaf` the one
/// its processes fork in: kernels up to 6.12 count a refused fork in the forking cgroup's
/// `pids.events`, later ones in the limited cgroup's, so both are read. Prints `BOMB-BEFORE`,
/// `BOMB`, `CPU0`/`CPU1` and `CPUMAX` lines, then `WATCH-DONE`.
pub fn watch_script(bomb: &str, bomb_leaf: &str, limited: &str, free: &str) -> String {
    format!(
        r#"B={bomb}; BL={bomb_leaf}; L={limited}; F={free}
for d in $B $BL $L $F; do [ -d $d ] || {{ echo "WATCH-ERROR no cgroup $d"; exit 1; }}; done
ev() {{ echo "events=$(tr '\n' ' ' < $B/pids.events) leaf_events=$(tr '\n' ' ' < $BL/pids.events)"; }}
echo "BOMB-BEFORE current=$(cat $B/pids.current) max=$(cat $B/pids.max) $(ev)"
peak=0; n=0; last=x; same=0; c=0
touch {GO_FILE}
while [ $n -lt 200 ]; do
  read c < $B/pids.current
  [ "$c" -gt "$peak" ] && peak=$c
  if [ "$c" = "$last" ]; then same=$((same+1)); else same=0; fi
  last=$c; n=$((n+1))
  [ $same -ge 15 ] && [ "$c" -gt 3 ] && break
  sleep 0.1
done
echo "BOMB samples=$n peak=$peak current=$c max=$(cat $B/pids.max) $(ev)"
cpu() {{ echo "CPU$1 $2 uptime $(cut -d' ' -f1 /proc/uptime) $(tr '\n' ' ' < $3/cpu.stat)"; }}
cpu 0 limited $L; sleep {CPU_WINDOW_S}; cpu 1 limited $L
touch {GO_FREE}; sleep 1
cpu 0 free $F; sleep {CPU_WINDOW_S}; cpu 1 free $F
echo "CPUMAX limited=$(cat $L/cpu.max) free=$(cat $F/cpu.max)"
echo WATCH-DONE
"#
    )
}

/// `key value key value ...` after `prefix` on the line starting with `prefix`.
fn fields<'a>(logs: &'a str, prefix: &str) -> Option<Vec<(&'a str, &'a str)>> {
    let rest = logs.lines().find_map(|l| l.trim().strip_prefix(prefix))?;
    let words: Vec<&str> = rest.split_whitespace().collect();
    Some(
        words
            .chunks(2)
            .filter_map(|c| Some((c[0], *c.get(1)?)))
            .collect(),
    )
}

/// `k=v` words (values may hold spaces up to the next `k=`) after `prefix`.
fn kv(logs: &str, prefix: &str) -> Option<Vec<(String, String)>> {
    let rest = logs.lines().find_map(|l| l.trim().strip_prefix(prefix))?;
    let mut out: Vec<(String, String)> = Vec::new();
    for w in rest.split_whitespace() {
        match w.split_once('=') {
            Some((k, v)) => out.push((k.to_string(), v.to_string())),
            None => {
                if let Some(last) = out.last_mut() {
                    last.1.push(' ');
                    last.1.push_str(w);
                }
            }
        }
    }
    Some(out)
}

fn get<'a>(kv: &'a [(String, String)], k: &str) -> Option<&'a str> {
    kv.iter().find(|(x, _)| x == k).map(|(_, v)| v.as_str())
}

/// The `max N` counter of a flattened `pids.events`.
fn events_max(events: &str) -> Option<u64> {
    let w: Vec<&str> = events.split_whitespace().collect();
    w.windows(2)
        .find(|p| p[0] == "max")
        .and_then(|p| p[1].parse().ok())
}

/// The fork bomb against `pids.max`: the limit file holds [`PIDS_MAX`], no sample of
/// `pids.current` exceeded it, and the kernel refused forks (`pids.events` max went up).
pub fn judge_pids(watch: &str) -> Result<String> {
    let before = kv(watch, "BOMB-BEFORE ").context("no BOMB-BEFORE line")?;
    let after = kv(watch, "BOMB ").context("no BOMB line")?;
    let num = |kv: &[(String, String)], k: &str| -> Result<u64> {
        get(kv, k)
            .and_then(|v| v.trim().parse().ok())
            .with_context(|| format!("no number {k} in {kv:?}"))
    };
    let max = get(&after, "max").unwrap_or("").trim().to_string();
    let peak = num(&after, "peak")?;
    let current = num(&after, "current")?;
    let samples = num(&after, "samples")?;
    let events = |kv: &[(String, String)], when: &str| -> Result<u64> {
        let pod = events_max(get(kv, "events").unwrap_or(""));
        let leaf = events_max(get(kv, "leaf_events").unwrap_or(""));
        Ok(pod.with_context(|| format!("pids.events {when}"))?
            + leaf.with_context(|| format!("the leaf's pids.events {when}"))?)
    };
    let ev0 = events(&before, "before")?;
    let ev1 = events(&after, "after")?;
    if max != PIDS_MAX.to_string() {
        bail!("the bomb's pids.max is {max:?}, not {PIDS_MAX} (the limit was not applied)");
    }
    if peak > PIDS_MAX || current > PIDS_MAX {
        bail!("the bomb's pids.current reached {peak} (last {current}) with pids.max {PIDS_MAX}");
    }
    if ev1 <= ev0 {
        bail!(
            "pids.events max stayed {ev0} -> {ev1}: the kernel never refused a fork, so the bomb \
             ({} leaves) did not run into pids.max (peak {peak})",
            1u32 << BOMB_DEPTH
        );
    }
    Ok(format!(
        "fork bomb held at pids.max {PIDS_MAX} (peak {peak}, last {current}, {samples} samples), {} forks refused",
        ev1 - ev0
    ))
}

/// One CPU pod over the window: share of one core and throttled periods.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CpuUse {
    /// usage_usec over the window / the window (1.0 = one core).
    pub share: f64,
    /// nr_throttled over the window.
    pub throttled: u64,
    /// The window, seconds of guest uptime.
    pub window_s: f64,
}

/// A CPU pod's use between its `CPU0` and `CPU1` lines.
pub fn cpu_use(watch: &str, label: &str) -> Result<CpuUse> {
    let at = |i: u32| -> Result<(f64, u64, u64)> {
        let f = fields(watch, &format!("CPU{i} {label} "))
            .with_context(|| format!("no CPU{i} {label} line"))?;
        let g = |k: &str| f.iter().find(|(x, _)| *x == k).map(|(_, v)| *v);
        let up: f64 = g("uptime").and_then(|v| v.parse().ok()).context("uptime")?;
        let usage: u64 = g("usage_usec")
            .and_then(|v| v.parse().ok())
            .context("usage_usec")?;
        let thr: u64 = g("nr_throttled").and_then(|v| v.parse().ok()).unwrap_or(0);
        Ok((up, usage, thr))
    };
    let (t0, u0, n0) = at(0)?;
    let (t1, u1, n1) = at(1)?;
    let window_s = t1 - t0;
    if window_s <= 1.0 {
        bail!("{label}: a window of {window_s} s");
    }
    Ok(CpuUse {
        share: u1.saturating_sub(u0) as f64 / (window_s * 1e6),
        throttled: n1.saturating_sub(n0),
        window_s,
    })
}

/// The 250m pod held near a quarter core and was throttled; the unlimited loop got clearly more.
pub fn judge_cpu(watch: &str) -> Result<String> {
    let lim = cpu_use(watch, "limited")?;
    let free = cpu_use(watch, "free")?;
    let cpumax = watch
        .lines()
        .find_map(|l| l.trim().strip_prefix("CPUMAX "))
        .unwrap_or("?")
        .to_string();
    let pct = |x: f64| x * 100.0;
    let (lo, hi) = CPU_BAND;
    if !(lo..=hi).contains(&lim.share) {
        bail!(
            "the {CPU_MILLIS}m pod used {:.1} % of a core over {:.1} s (allowed {:.0}-{:.0} %); cpu.max: {cpumax}",
            pct(lim.share),
            lim.window_s,
            pct(lo),
            pct(hi)
        );
    }
    if lim.throttled == 0 {
        bail!(
            "the {CPU_MILLIS}m pod was never throttled (nr_throttled unchanged) while using {:.1} %; cpu.max: {cpumax}",
            pct(lim.share)
        );
    }
    if free.share < FREE_MIN || free.share < 2.0 * lim.share {
        bail!(
            "the unlimited busy pod used only {:.1} % of a core (limited one {:.1} %): the comparison shows no limit",
            pct(free.share),
            pct(lim.share)
        );
    }
    Ok(format!(
        "{CPU_MILLIS}m pod {:.1} % of a core over {:.1} s ({} periods throttled), unlimited pod {:.1} %; cpu.max {cpumax}",
        pct(lim.share),
        lim.window_s,
        lim.throttled,
        pct(free.share)
    ))
}

/// The scenario (see the module docs).
pub fn cgroup_limits_on_aarch64(c: &mut Cluster) -> Result<String> {
    const PODS: [&str; 4] = ["cg-cpu-250m", "cg-cpu-free", "cg-fork-bomb", "cg-watch"];
    let result = run(c);
    // The busy loops would slow every later scenario: remove whichever exist, pass or fail.
    let cleanup = c.master.list("pods").and_then(|all| {
        let there: Vec<&str> = PODS
            .into_iter()
            .filter(|n| all.iter().any(|p| p["meta"]["name"] == *n))
            .collect();
        c.delete_pods(&there)
    });
    let summary = result?;
    cleanup?;
    Ok(summary)
}

/// The pod's cgroup in the guest as the watcher sees it (under [`HOST_CG`]) from its uid (the
/// worker names it `bramble/<namespace>_<name>_<first 8 of the uid>`), and the leaf its process
/// sits in from the namespace-relative `0::/LEAF` line it printed.
pub fn pod_cgroup_of(pod: &str, uid: &str, proc_self_cgroup: &str) -> Option<(String, String)> {
    let prefix = uid.get(..8)?;
    let dir = format!("{HOST_CG}/bramble/default_{pod}_{prefix}");
    let leaf = proc_cgroup_dir(proc_self_cgroup)?;
    let rel = leaf.strip_prefix("/sys/fs/cgroup")?;
    Some((dir.clone(), format!("{dir}{rel}")))
}

fn run(c: &mut Cluster) -> Result<String> {
    let node = c.node(0)?.name().to_string();
    c.master.apply("cg-limits", &manifest(&node))?;
    let mut dirs = Vec::new();
    let mut bomb_leaf = String::new();
    for pod in ["cg-fork-bomb", "cg-cpu-250m", "cg-cpu-free"] {
        c.wait_running(pod, Duration::from_secs(90))?;
        let dir = c.wait(
            Duration::from_secs(30),
            &format!("the cgroup line in `bramble logs {pod}`"),
            |c, last| {
                let (_, out, err) = c.master.cli(&["logs", pod])?;
                let uid = c
                    .master
                    .pod(pod)?
                    .and_then(|p| p["meta"]["uid"].as_str().map(String::from))
                    .unwrap_or_default();
                *last = format!("uid {uid:?}: {out}{err}");
                Ok(pod_cgroup_of(pod, &uid, &out))
            },
        )?;
        if pod == "cg-fork-bomb" {
            bomb_leaf = dir.1;
        }
        dirs.push(dir.0);
    }
    let mut watch = pod_manifest(
        "cg-watch",
        "Never",
        Some(&node),
        None,
        None,
        &watch_script(&dirs[0], &bomb_leaf, &dirs[1], &dirs[2]),
    );
    watch.push_str(&go_volume());
    watch.push_str(&format!(
        "[[pod.volume]]\nname = \"cgroups\"\nmount_path = \"{HOST_CG}\"\nhost_path = \"/sys/fs/cgroup\"\nread_only = true\n\n"
    ));
    c.master.apply("cg-watch", &watch)?;
    let logs = c.wait(
        Duration::from_secs(150),
        "`WATCH-DONE` in `bramble logs cg-watch`",
        |c, last| {
            let p = c.master.pod("cg-watch")?;
            let (_, out, err) = c.master.cli(&["logs", "cg-watch"])?;
            if out.contains("WATCH-ERROR") || p.as_ref().is_some_and(|p| pod_phase(p) == "Failed") {
                bail!("cg-watch failed: {out}{err} {p:?}");
            }
            *last = format!("logs {out:?} {err:?}");
            Ok(out.contains("WATCH-DONE").then_some(out))
        },
    )?;
    eprintln!("cluster: cg-watch:\n{}", logs.trim_end());
    let (_, bomb_logs, _) = c.master.cli(&["logs", "cg-fork-bomb"])?;
    let refused = bomb_logs.matches("can't fork").count();
    // Both judges, so one broken limit does not hide the other.
    match (judge_cpu(&logs), judge_pids(&logs)) {
        (Ok(cpu), Ok(pids)) => Ok(format!(
            "{cpu}; {pids} (`can't fork` {refused}x in the bomb's log)"
        )),
        (cpu, pids) => {
            let errs: Vec<String> = [("cpu", cpu), ("pids", pids)]
                .into_iter()
                .filter_map(|(k, r)| r.err().map(|e| format!("{k}: {e:#}")))
                .collect();
            Err(c.failure(&format!(
                "{}\ncg-watch:\n{logs}\ncg-fork-bomb logs (last 5 lines):\n{}",
                errs.join("\n"),
                tail(&bomb_logs, 5)
            )))
        }
    }
}

fn tail(s: &str, n: usize) -> String {
    let l: Vec<&str> = s.lines().collect();
    l[l.len().saturating_sub(n)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pod_cgroup_is_found_from_proc_self_cgroup() {
        assert_eq!(
            pod_cgroup_dir(
                "0::/bramble/default_cg-cpu-250m_0123abcd/_init\n",
                "cg-cpu-250m"
            )
            .as_deref(),
            Some("/sys/fs/cgroup/bramble/default_cg-cpu-250m_0123abcd")
        );
        assert_eq!(pod_cgroup_dir("0::/bramble/_init\n", "x"), None);
        assert_eq!(
            pod_cgroup_of("cg-fork-bomb", "0123abcd-ffff", "0::/_init\n"),
            Some((
                "/host-cgroup/bramble/default_cg-fork-bomb_0123abcd".into(),
                "/host-cgroup/bramble/default_cg-fork-bomb_0123abcd/_init".into()
            ))
        );
        assert_eq!(pod_cgroup_of("x", "0123", "0::/_init\n"), None);
        assert_eq!(pod_cgroup_dir("", "x"), None);
        assert_eq!(pod_cgroup_dir("0::/b/d_x_1;reboot/_init", "x"), None);
        assert_eq!(
            proc_cgroup_dir("0::/bramble/default_x_1/_init\n").as_deref(),
            Some("/sys/fs/cgroup/bramble/default_x_1/_init")
        );
    }

    fn watch(limited_usage: (u64, u64), limited_thr: (u64, u64), max: &str) -> String {
        format!(
            "BOMB-BEFORE current=2 max={max} events=max 0  leaf_events=max 0 \n\
             BOMB samples=40 peak=24 current=23 max={max} events=max 0  leaf_events=max 97 \n\
             CPU0 limited uptime 100.00 usage_usec {} user_usec 1 system_usec 1 nr_periods 50 nr_throttled {} throttled_usec 9\n\
             CPU0 free uptime 100.01 usage_usec 5000000 user_usec 1 system_usec 1 nr_periods 0 nr_throttled 0 throttled_usec 0\n\
             CPU1 limited uptime 110.00 usage_usec {} user_usec 1 system_usec 1 nr_periods 150 nr_throttled {} throttled_usec 9\n\
             CPU1 free uptime 110.01 usage_usec 14800000 user_usec 1 system_usec 1 nr_periods 0 nr_throttled 0 throttled_usec 0\n\
             CPUMAX limited=25000 100000 free=max 100000\nWATCH-DONE\n",
            limited_usage.0, limited_thr.0, limited_usage.1, limited_thr.1
        )
    }

    #[test]
    fn a_limited_pod_passes_and_an_unlimited_one_fails() {
        let ok = watch((1_000_000, 3_500_000), (10, 90), "24");
        let s = judge_cpu(&ok).unwrap();
        assert!(s.contains("25.0 %") && s.contains("98.0 %"), "{s}");
        assert!(judge_pids(&ok).unwrap().contains("97 forks refused"));
        // The same pod without its quota: a core (or two) over the window, never throttled.
        let e = judge_cpu(&watch((1_000_000, 11_000_000), (0, 0), "24")).unwrap_err();
        assert!(e.to_string().contains("100.0 % of a core"), "{e}");
        // Within the band but never throttled: the quota is not what held it.
        let e = judge_cpu(&watch((1_000_000, 3_500_000), (5, 5), "24")).unwrap_err();
        assert!(e.to_string().contains("never throttled"), "{e}");
    }

    #[test]
    fn a_bomb_without_pids_max_fails() {
        let no_limit = "BOMB-BEFORE current=2 max=max events=max 0 leaf_events=max 0\n\
                        BOMB samples=30 peak=130 current=130 max=max events=max 0 leaf_events=max 0\n";
        let e = judge_pids(no_limit).unwrap_err().to_string();
        assert!(e.contains("not 24"), "{e}");
        let over = "BOMB-BEFORE current=2 max=24 events=max 0 leaf_events=max 0\n\
                    BOMB samples=30 peak=25 current=24 max=24 events=max 3 leaf_events=max 0\n";
        assert!(
            judge_pids(over)
                .unwrap_err()
                .to_string()
                .contains("reached 25")
        );
        let never = "BOMB-BEFORE current=2 max=24 events=max 0 leaf_events=max 0\n\
                     BOMB samples=30 peak=20 current=20 max=24 events=max 0 leaf_events=max 0\n";
        assert!(
            judge_pids(never)
                .unwrap_err()
                .to_string()
                .contains("never refused")
        );
    }

    #[test]
    fn the_manifest_sets_the_limits_on_the_processes() {
        let m = manifest("n1");
        assert!(
            m.contains("cpu = \"250m\"") && m.contains("pids = 24"),
            "{m}"
        );
        let s = watch_script("/a", "/a/_init", "/b", "/c");
        assert!(
            s.contains("B=/a; BL=/a/_init; L=/b; F=/c") && s.contains(GO_FILE),
            "{s}"
        );
    }
}
