//! Resource usage for `bramble top`: counters sampled from cgroups and `/proc`, turned into
//! rates between two samples, and when to sample at all.
//!
//! Nothing is sampled, kept or sent unless the master asked ([`NodeDown::UsageWanted`], sent
//! when someone runs `bramble top`): then the agent samples at once, again a second later and
//! reports that first window, then reports every [`REPORT_EVERY`] until the asked-for time is
//! over. An idle cluster pays nothing (no reads, no bytes on the wire, nothing on disk).
//!
//! What is measured, as cAdvisor and the kubelet do:
//! - a pod: its cgroup's CPU time (v1 `cpuacct.usage`, v2 `cpu.stat` `usage_usec`) and memory
//!   working set ([`crate::runtime::cgroup::working_set`]);
//! - a process with limits of its own (its own `p-<name>` leaf): that cgroup's; a process in the
//!   pod's shared leaf: its own CPU time (with its waited-for children's) and resident memory
//!   from `/proc/<pid>`;
//! - the node: busy time of `/proc/stat` over all CPUs, memory `MemTotal − MemFree −
//!   Inactive(file)` of `/proc/meminfo` (cAdvisor's root working set).
//!
//! [`NodeDown::UsageWanted`]: bramble_wire::msg::NodeDown::UsageWanted

use std::time::{Duration, Instant};

use bramble_wire::msg::{NodeUsage, PodUsage, ProcessUsage, Usage};

/// How often reports go out while the master wants them.
pub const REPORT_EVERY: Duration = Duration::from_secs(15);
/// The first window after a request: short, so the first `bramble top` answers quickly.
pub const FIRST_WINDOW: Duration = Duration::from_secs(1);

/// Cumulative counters of a pod or process.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// CPU time so far, ns.
    pub cpu_ns: u64,
    /// Memory working set now, bytes.
    pub memory_bytes: u64,
}

/// One pod's counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodSample {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// UID (a re-created pod of the same name starts from zero).
    pub uid: String,
    /// The pod's cgroup.
    pub total: Counters,
    /// Per process, by name.
    pub processes: Vec<(String, Counters)>,
}

/// The node's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NodeCounters {
    /// Busy jiffies over all CPUs (`/proc/stat` total minus idle and iowait).
    pub busy: u64,
    /// All jiffies over all CPUs.
    pub total: u64,
    /// CPUs counted (`cpuN` lines).
    pub cpus: u32,
    /// Memory working set, bytes.
    pub memory_bytes: u64,
}

/// One sample of everything.
#[derive(Debug, Clone)]
pub struct Sample {
    /// When it was taken.
    pub at: Instant,
    /// The node.
    pub node: NodeCounters,
    /// The pods.
    pub pods: Vec<PodSample>,
}

/// Millicores used by `cpu_ns` of CPU time over `window`.
pub fn millicores(cpu_ns: u64, window: Duration) -> u32 {
    let w = window.as_nanos().max(1);
    (u128::from(cpu_ns) * 1000 / w).min(u128::from(u32::MAX)) as u32
}

/// The node's CPU line and CPU count from `/proc/stat`: (busy, total, cpus) in jiffies.
pub fn parse_proc_stat(text: &str) -> Option<(u64, u64, u32)> {
    let mut out = None;
    let mut cpus = 0u32;
    for line in text.lines() {
        let mut f = line.split_whitespace();
        match f.next() {
            Some("cpu") => {
                // user nice system idle iowait irq softirq steal (guest time is inside user).
                let v: Vec<u64> = f.take(8).filter_map(|x| x.parse().ok()).collect();
                if v.len() < 4 {
                    return None;
                }
                let total: u64 = v.iter().sum();
                let idle = v[3] + v.get(4).copied().unwrap_or(0);
                out = Some((total - idle, total));
            }
            Some(c) if c.starts_with("cpu") => cpus += 1,
            _ => {}
        }
    }
    out.map(|(b, t)| (b, t, cpus.max(1)))
}

/// The node's memory working set from `/proc/meminfo`: `MemTotal − MemFree − Inactive(file)`.
pub fn parse_meminfo(text: &str) -> Option<u64> {
    let kb = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
    };
    let total = kb("MemTotal:")?;
    let free = kb("MemFree:")?;
    let inactive = kb("Inactive(file):").unwrap_or(0);
    Some(total.saturating_sub(free).saturating_sub(inactive) * 1024)
}

/// A process's CPU time in clock ticks from `/proc/<pid>/stat`: utime + stime + cutime +
/// cstime (its threads and the children it waited for).
pub fn parse_pid_stat_ticks(text: &str) -> Option<u64> {
    // The command may hold spaces and parentheses: fields start after the last ')'.
    let rest = text.get(text.rfind(')')? + 2..)?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // state(3) is index 0 here: utime(14) .. cstime(17) are 11..=14.
    let v: Option<Vec<u64>> = f.get(11..15)?.iter().map(|x| x.parse().ok()).collect();
    Some(v?.iter().sum())
}

/// Resident memory of a process from `/proc/<pid>/status` (`VmRSS`), bytes.
pub fn parse_vm_rss(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
}

fn usage(prev: Counters, cur: Counters, window: Duration) -> Usage {
    Usage {
        cpu_millis: millicores(cur.cpu_ns.saturating_sub(prev.cpu_ns), window),
        memory_bytes: cur.memory_bytes,
    }
}

/// The rates between two samples. Pods only in `cur` (started since) wait for the next report;
/// a counter that went back (a restarted process) counts 0 for the window.
pub fn rates(prev: &Sample, cur: &Sample) -> NodeUsage {
    let window = cur.at.saturating_duration_since(prev.at);
    let (p, c) = (prev.node, cur.node);
    let dt = c.total.saturating_sub(p.total);
    let node_millis = if dt == 0 {
        0
    } else {
        (u128::from(c.busy.saturating_sub(p.busy)) * u128::from(c.cpus) * 1000 / u128::from(dt))
            as u32
    };
    let mut pods: Vec<PodUsage> = cur
        .pods
        .iter()
        .filter_map(|pod| {
            let before = prev.pods.iter().find(|q| q.uid == pod.uid)?;
            let processes = pod
                .processes
                .iter()
                .map(|(name, now)| {
                    let was = before
                        .processes
                        .iter()
                        .find(|(n, _)| n == name)
                        .map_or(*now, |(_, c)| *c);
                    ProcessUsage {
                        name: name.clone(),
                        usage: usage(was, *now, window),
                    }
                })
                .collect();
            Some(PodUsage {
                namespace: pod.namespace.clone(),
                name: pod.name.clone(),
                usage: usage(before.total, pod.total, window),
                processes,
            })
        })
        .collect();
    pods.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    NodeUsage {
        window_ms: window.as_millis().min(u128::from(u32::MAX)) as u32,
        node: Usage {
            cpu_millis: node_millis,
            memory_bytes: c.memory_bytes,
        },
        pods,
    }
}

/// When to sample and report: a pure state machine, time as an input.
#[derive(Debug, Default)]
pub struct Sampler {
    /// Report until then.
    wanted_until: Option<Instant>,
    /// The last sample taken.
    prev: Option<Sample>,
    /// The next sample is due then.
    next: Option<Instant>,
}

impl Sampler {
    /// The master wants reports for `seconds` from `now`.
    pub fn want(&mut self, now: Instant, seconds: u32) {
        self.wanted_until = Some(now + Duration::from_secs(u64::from(seconds)));
        if self.next.is_none() {
            self.next = Some(now);
        }
    }

    /// When [`Sampler::tick`] has something to do (`None`: nothing wanted).
    pub fn due(&self) -> Option<Instant> {
        self.next
    }

    /// Takes a sample if one is due and returns the report to send, if any.
    pub fn tick(&mut self, now: Instant, sample: impl FnOnce() -> Sample) -> Option<NodeUsage> {
        let next = self.next?;
        if now < next {
            return None;
        }
        if self.wanted_until.is_none_or(|u| now >= u) {
            *self = Sampler::default();
            return None;
        }
        let cur = sample();
        let report = self.prev.as_ref().map(|p| rates(p, &cur));
        self.prev = Some(cur);
        self.next = Some(
            now + if report.is_some() {
                REPORT_EVERY
            } else {
                FIRST_WINDOW
            },
        );
        report
    }
}

/// Reads the node's counters (`/proc/stat`, `/proc/meminfo`); zeros where unreadable.
pub fn node_counters() -> NodeCounters {
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    let (busy, total, cpus) = parse_proc_stat(&read("/proc/stat")).unwrap_or((0, 0, 1));
    NodeCounters {
        busy,
        total,
        cpus,
        memory_bytes: parse_meminfo(&read("/proc/meminfo")).unwrap_or(0),
    }
}

/// A process's counters from `/proc/<pid>` (host PID), `None` once it is gone.
pub fn process_counters(pid: u32) -> Option<Counters> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let ticks = parse_pid_stat_ticks(&stat)?;
    let hz = crate::sys::process::clock_ticks();
    Some(Counters {
        cpu_ns: ticks.saturating_mul(1_000_000_000 / hz.max(1)),
        memory_bytes: parse_vm_rss(&status).unwrap_or(0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn millicores_from_cpu_time() {
        assert_eq!(millicores(1_000_000_000, Duration::from_secs(1)), 1000);
        assert_eq!(millicores(250_000_000, Duration::from_secs(1)), 250);
        assert_eq!(millicores(3_000_000_000, Duration::from_secs(15)), 200);
        assert_eq!(millicores(5, Duration::ZERO), 5000);
    }

    #[test]
    fn proc_parsers() {
        let stat = "cpu  100 5 50 800 40 3 2 0 0 0\ncpu0 50 2 25 400 20 1 1 0 0 0\n\
                    cpu1 50 3 25 400 20 2 1 0 0 0\nintr 1 2 3\nctxt 99\n";
        assert_eq!(parse_proc_stat(stat), Some((160, 1000, 2)));
        assert_eq!(parse_proc_stat("intr 1\n"), None);
        let mi = "MemTotal:        1000000 kB\nMemFree:          200000 kB\n\
                  MemAvailable:     600000 kB\nInactive(file):   300000 kB\n";
        assert_eq!(parse_meminfo(mi), Some(500_000 * 1024));
        assert_eq!(parse_meminfo("MemFree: 1 kB\n"), None);
        // A command with spaces and a parenthesis.
        let pid = "42 (a) b) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 7 3 20 0 1 0 12345 0 0";
        assert_eq!(parse_pid_stat_ticks(pid), Some(310));
        assert_eq!(parse_pid_stat_ticks("42 (x) S 1"), None);
        assert_eq!(
            parse_vm_rss("Name:\tsh\nVmRSS:\t    1536 kB\nThreads:\t1\n"),
            Some(1536 * 1024)
        );
    }

    fn pod(uid: &str, cpu_ns: u64, mem: u64, procs: &[(&str, u64, u64)]) -> PodSample {
        let c = |cpu_ns, memory_bytes| Counters {
            cpu_ns,
            memory_bytes,
        };
        PodSample {
            namespace: "default".into(),
            name: format!("pod-{uid}"),
            uid: uid.into(),
            total: c(cpu_ns, mem),
            processes: procs
                .iter()
                .map(|(n, cpu, m)| ((*n).to_string(), c(*cpu, *m)))
                .collect(),
        }
    }

    #[test]
    fn rates_between_two_samples() {
        let t0 = Instant::now();
        let node = |busy, total, mem| NodeCounters {
            busy,
            total,
            cpus: 4,
            memory_bytes: mem,
        };
        let prev = Sample {
            at: t0,
            node: node(1000, 10_000, 1),
            pods: vec![
                pod("a", 1_000_000_000, 10, &[("main", 900_000_000, 5)]),
                pod("gone", 0, 0, &[]),
            ],
        };
        let cur = Sample {
            at: t0 + Duration::from_secs(2),
            node: node(1400, 10_800, 2 << 30),
            pods: vec![
                // 1.5 s of CPU in 2 s: 750m; the process restarted (counter went back): 0m.
                pod(
                    "a",
                    2_500_000_000,
                    64 << 20,
                    &[("main", 100_000_000, 60 << 20)],
                ),
                pod("new", 5, 5, &[]),
            ],
        };
        let r = rates(&prev, &cur);
        assert_eq!(r.window_ms, 2000);
        // 400 busy of 800 jiffies on 4 CPUs: 2000m.
        assert_eq!(
            r.node,
            Usage {
                cpu_millis: 2000,
                memory_bytes: 2 << 30
            }
        );
        assert_eq!(r.pods.len(), 1, "a pod without an earlier sample waits");
        assert_eq!(r.pods[0].name, "pod-a");
        assert_eq!(
            r.pods[0].usage,
            Usage {
                cpu_millis: 750,
                memory_bytes: 64 << 20
            }
        );
        assert_eq!(r.pods[0].processes[0].usage.cpu_millis, 0);
        assert_eq!(r.pods[0].processes[0].usage.memory_bytes, 60 << 20);
    }

    #[test]
    fn sampler_samples_only_while_wanted() {
        let t0 = Instant::now();
        let sample = |at| Sample {
            at,
            node: NodeCounters::default(),
            pods: Vec::new(),
        };
        let mut s = Sampler::default();
        // Nothing asked: never due, never samples.
        assert_eq!(s.due(), None);
        assert!(
            s.tick(t0, || panic!("sampled while nobody asked"))
                .is_none()
        );
        s.want(t0, 60);
        assert_eq!(s.due(), Some(t0));
        // First sample: no report yet, the second one a second later.
        assert!(s.tick(t0, || sample(t0)).is_none());
        assert_eq!(s.due(), Some(t0 + FIRST_WINDOW));
        assert!(
            s.tick(t0 + Duration::from_millis(500), || panic!("early"))
                .is_none()
        );
        let t1 = t0 + FIRST_WINDOW;
        let r = s.tick(t1, || sample(t1)).expect("first report");
        assert_eq!(r.window_ms, 1000);
        assert_eq!(s.due(), Some(t1 + REPORT_EVERY));
        // Asked again meanwhile: the period stays.
        s.want(t1, 60);
        assert_eq!(s.due(), Some(t1 + REPORT_EVERY));
        let t2 = t1 + REPORT_EVERY;
        assert_eq!(s.tick(t2, || sample(t2)).unwrap().window_ms, 15_000);
        // Past the wanted time: it stops and forgets.
        let late = t1 + Duration::from_secs(61);
        assert!(
            s.tick(late, || panic!("sampled after the window"))
                .is_none()
        );
        assert_eq!(s.due(), None);
    }
}
