//! Scheduler throughput: pods placed per second for 10,000 pending pods on 1,000 and 5,000 nodes.
//!
//! `cargo bench -p bramble-server --bench sched` (a plain binary: `harness = false`). The cluster
//! is a deterministic mix of boards (Pi 3/4/5, x86 boxes; a few NotReady, cordoned or tainted) and
//! the pods a mix of sizes and constraints (selectors, arch, host ports, tolerations, replicas of
//! one owner). Each configuration runs a few times with different seeds; the mean is printed.

use std::collections::HashMap;
use std::hint::black_box;
use std::time::{Duration, Instant};

use bramble_server::sched::{
    Amounts, Config, OwnerKey, PendingPod, Plan, Sample, SchedNode, Snapshot, schedule_with,
};
use bramble_wire::objects::{Arch, Kind, Labels, Resources, Taint, TaintEffect, Toleration};

const MI: u64 = 1 << 20;
const GI: u64 = 1 << 30;
const RUNS: u64 = 5;
const PODS: usize = 10_000;

/// SplitMix64, for generating the workload.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// True with probability `pct` percent.
    fn pct(&mut self, pct: u64) -> bool {
        self.next() % 100 < pct
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn nodes(n: usize, rng: &mut Rng) -> Snapshot {
    let mut snap = Snapshot::new();
    for i in 0..n {
        let (arch, cpu, mem) = match rng.below(10) {
            0..=5 => (
                Arch::Aarch64,
                4000,
                if rng.pct(50) { 4 * GI } else { 8 * GI },
            ), // Pi 4
            6 | 7 => (Arch::Armv7, 4000, GI),   // Pi 3
            8 => (Arch::Aarch64, 4000, 8 * GI), // Pi 5
            _ => (Arch::X86_64, 8000, 16 * GI), // NUC
        };
        let mut labels = Labels::new();
        labels.insert("zone".into(), format!("z{}", rng.below(4)));
        labels.insert("disk".into(), if rng.pct(30) { "ssd" } else { "sd" }.into());
        let mut taints = Vec::new();
        if rng.pct(5) {
            taints.push(Taint {
                key: "dedicated".into(),
                value: "gpu".into(),
                effect: TaintEffect::NoSchedule,
            });
        }
        snap.add_node(SchedNode {
            name: format!("node-{i:05}"),
            arch: Some(arch),
            ready: !rng.pct(2),
            unschedulable: rng.pct(1),
            labels,
            taints,
            allocatable: Resources {
                cpu_millis: Some(cpu),
                memory_bytes: Some(mem - 256 * MI),
                pids: Some(4096),
            },
        });
    }
    snap
}

fn pods(rng: &mut Rng) -> Vec<PendingPod> {
    let mut out = Vec::with_capacity(PODS);
    let mut owner = 0;
    while out.len() < PODS {
        // One "deployment": 1..=20 replicas of the same shape.
        owner += 1;
        let replicas = 1 + rng.below(20);
        let requests = match rng.below(10) {
            0..=3 => Amounts {
                cpu_millis: 50,
                memory_bytes: 32 * MI,
                pids: 16,
            },
            4..=6 => Amounts {
                cpu_millis: 250,
                memory_bytes: 128 * MI,
                pids: 32,
            },
            7 | 8 => Amounts {
                cpu_millis: 500,
                memory_bytes: 512 * MI,
                pids: 64,
            },
            _ => Amounts {
                cpu_millis: 1000,
                memory_bytes: GI,
                pids: 128,
            },
        };
        let mut node_selector = Labels::new();
        if rng.pct(10) {
            node_selector.insert("zone".into(), format!("z{}", rng.below(4)));
        }
        if rng.pct(10) {
            node_selector.insert("disk".into(), "ssd".into());
        }
        let arch = match rng.below(10) {
            0..=2 => Some(Arch::Aarch64),
            3 => Some(Arch::Armv7),
            _ => None,
        };
        let host_ports = if rng.pct(3) {
            vec![8000 + rng.below(4) as u16]
        } else {
            Vec::new()
        };
        let tolerations = if rng.pct(3) {
            vec![Toleration {
                key: "dedicated".into(),
                value: None,
                effect: None,
            }]
        } else {
            Vec::new()
        };
        for r in 0..replicas {
            if out.len() == PODS {
                break;
            }
            out.push(PendingPod {
                namespace: "default".into(),
                name: format!("app{owner}-{r}"),
                requests,
                host_ports: host_ports.clone(),
                node_selector: node_selector.clone(),
                tolerations: tolerations.clone(),
                arch,
                owner: Some(OwnerKey {
                    namespace: "default".into(),
                    kind: Kind::Pod,
                    name: format!("app{owner}"),
                }),
                artifact: None,
                image: None,
            });
        }
    }
    out
}

fn run(label: &str, snap: &Snapshot, pending: &[PendingPod], config: &Config) {
    let mut total = Duration::ZERO;
    let mut last: Option<Plan> = None;
    for seed in 0..RUNS {
        let start = Instant::now();
        let plan = schedule_with(black_box(snap), black_box(pending), 0, seed, config);
        total += start.elapsed();
        last = Some(black_box(plan));
    }
    let plan = last.expect("at least one run");
    let mean = total / RUNS as u32;
    let per_s = pending.len() as f64 / mean.as_secs_f64();
    let mean_score = plan.bindings.iter().map(|b| b.score as f64).sum::<f64>()
        / plan.bindings.len().max(1) as f64;
    // Spread quality: replicas of one owner sharing a node beyond the first.
    let mut per_owner_node: HashMap<(&OwnerKey, usize), u32> = HashMap::new();
    for b in &plan.bindings {
        if let Some(o) = &pending[b.pod].owner {
            *per_owner_node.entry((o, b.node)).or_default() += 1;
        }
    }
    let doubled: u32 = per_owner_node.values().map(|c| c - 1).sum();
    println!(
        "{label:<28} {per_s:>9.0} pods/s {:>8.2} ms/run  bound {:>5}  unschedulable {:>4}  mean score {:>5.1}  co-located replicas {doubled}",
        mean.as_secs_f64() * 1e3,
        plan.bindings.len(),
        plan.failures.len(),
        mean_score,
    );
}

fn main() {
    println!("scheduler: {PODS} pending pods, mean of {RUNS} runs (seeds 0..{RUNS})");
    for n in [1_000, 5_000] {
        let mut rng = Rng(0x5eed ^ n as u64);
        let start = Instant::now();
        let snap = nodes(n, &mut rng);
        let build = start.elapsed();
        let pending = pods(&mut rng);
        println!(
            "-- {n} nodes (snapshot built in {:.2} ms)",
            build.as_secs_f64() * 1e3
        );
        let adaptive = Config::default();
        let k = Sample::Adaptive.candidates(n);
        run(
            &format!("{n} nodes, adaptive (k={k})"),
            &snap,
            &pending,
            &adaptive,
        );
        for (name, sample) in [
            ("fixed k=50", Sample::Fixed(50)),
            ("all nodes", Sample::All),
        ] {
            let config = Config {
                sample,
                ..Config::default()
            };
            run(&format!("{n} nodes, {name}"), &snap, &pending, &config);
        }
    }
}
