//! Config map update latency: from the client's apply to the new content in the mounted volume
//! file on the node, against the apply round trip alone (the baseline, same run).
//!
//! ```text
//! sudo cargo bench -p bramble-tests --bench config        # release binaries (build them first)
//! sudo cargo test -p bramble-tests --bench config         # debug binaries
//! ```
//! `BENCH_UPDATES` (default 50, at most 500) updates, one at a time; each waits at most 10 s.
//! Root (namespaces, cgroups). Everything it starts is killed by PID; the pod is deleted before
//! its worker stops and the worker's cgroup parent is removed.
#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bramble_tests::{MasterProc, build, require_root, start_worker, wait_for};
use bramble_wire::msg::RequestBody;
use bramble_wire::objects::Object;

fn config_map(v: &str) -> Object {
    Object::ConfigMap(build::config_map("bench", &[("v", v)]))
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn volume_file(run: &Path) -> Option<PathBuf> {
    let rd = std::fs::read_dir(run.join("configmaps")).ok()?;
    rd.flatten()
        .map(|e| e.path().join("v").join("v"))
        .find(|p| p.exists())
}

fn main() {
    require_root();
    let n = std::env::var("BENCH_UPDATES")
        .ok()
        .and_then(|s| s.parse::<usize>().ok())
        .unwrap_or(50)
        .clamp(1, 500);
    let tmp = tempfile::tempdir().unwrap();
    let m = MasterProc::start(&tmp.path().join("master"), &["--heartbeat-interval", "1s"]);
    wait_for(Duration::from_secs(20), "join token", || {
        m.data_dir.join("join.token").exists().then_some(())
    });
    let state = tmp.path().join("bench-cfg");
    let _w = start_worker(&m, "bench-cfg", &state, &[]);
    let mnt = tmp.path().join("mnt");
    let manifest = tmp.path().join("pod.toml");
    std::fs::write(
        &manifest,
        format!(
            "[[configmap]]\nname = \"bench\"\ndata = {{ v = \"0\" }}\n\
             [[pod]]\nname = \"bench\"\n[[pod.process]]\nname = \"main\"\n\
             command = [\"/bin/sh\", \"-c\", \"sleep 100000\"]\n\
             [[pod.volume]]\nname = \"v\"\nmount_path = \"{}\"\nconfigmap = \"bench\"\n",
            mnt.display()
        ),
    )
    .unwrap();
    m.ok(&["apply", "-f", manifest.to_str().unwrap()]);
    let run = state.with_extension("run");
    let file = wait_for(Duration::from_secs(30), "the pod's volume", || {
        volume_file(&run)
    });
    let mut c = m.client();
    let (mut apply_ms, mut visible_ms) = (Vec::new(), Vec::new());
    for i in 1..=n {
        let want = i.to_string();
        let t = Instant::now();
        smol::block_on(c.call(RequestBody::Apply(vec![config_map(&want)]))).expect("apply");
        apply_ms.push(t.elapsed().as_secs_f64() * 1e3);
        while std::fs::read_to_string(&file).ok().as_deref() != Some(want.as_str()) {
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "update {i} did not reach {} within 10 s",
                file.display()
            );
            std::thread::sleep(Duration::from_micros(200));
        }
        visible_ms.push(t.elapsed().as_secs_f64() * 1e3);
    }
    m.ok(&["delete", "pod", "bench"]);
    wait_for(Duration::from_secs(20), "pod gone", || {
        volume_file(&run).is_none().then_some(())
    });
    apply_ms.sort_by(f64::total_cmp);
    visible_ms.sort_by(f64::total_cmp);
    println!("config map update, {n} updates, loopback, one worker:");
    println!(
        "  apply round trip (baseline):      p50 {:6.1} ms  p90 {:6.1} ms  max {:6.1} ms",
        pct(&apply_ms, 0.5),
        pct(&apply_ms, 0.9),
        pct(&apply_ms, 1.0)
    );
    println!(
        "  apply -> file in the pod volume:  p50 {:6.1} ms  p90 {:6.1} ms  max {:6.1} ms  ({:.1}x the apply p50)",
        pct(&visible_ms, 0.5),
        pct(&visible_ms, 0.9),
        pct(&visible_ms, 1.0),
        pct(&visible_ms, 0.5) / pct(&apply_ms, 0.5).max(1e-3)
    );
}
