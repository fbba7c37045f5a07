//! Scenario: one multi-arch OCI image on both emulated boards (issue 15). The test kit's demo
//! image (`bramble_testkit::oci::demo_layout`: linux/amd64, linux/arm64 and linux/arm/v7
//! variants over Debian's busybox-static of each arch, three layers: one deletes
//! `/etc/doomed`, one makes `/data` opaque) is pushed with skopeo to a `docker-registry`
//! started on the host's loopback (`bramble_testkit::registry`). Only the master (on the host)
//! talks to the registry: `[[registry]] insecure = true` names it, the master pulls the image
//! through it, and the guests fetch the layers of their own variant from the master over their
//! usual connection (QEMU's guestfwd relay); the guests never reach the registry.
//!
//! A pod pinned to each board runs the image with no command of its own: its log shows the
//! board's `uname -m` (aarch64, armv7l), the variant's `/etc/variant` and the ELF machine of
//! its `/bin/busybox` (183 = AArch64, 40 = ARM), the whiteouts applied (`/etc/doomed` gone,
//! `/data` holding only `new`), and the image's User (1000), WorkingDir (/app) and Env
//! (GREETING=hi) in effect.

use std::time::Duration;

use anyhow::{Result, anyhow, bail};
use bramble_testkit::oci::{self, Platform};
use bramble_testkit::registry::{Mode, Registry};

use super::{Cluster, pod_node, pod_phase};

/// Runs `f`, turning a panic of the test kit (which fails loudly by panicking) into an error.
fn kit<T>(what: &str, f: impl FnOnce() -> T) -> Result<T> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).map_err(|e| {
        let msg = e
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default();
        anyhow!("{what}: {msg}")
    })
}

/// The pod manifest: the image, pinned to `node`, no command (the image's Entrypoint/Cmd).
pub fn image_pod(name: &str, node: &str, image: &str) -> String {
    format!(
        "[[pod]]\nname = \"{name}\"\nrestart_policy = \"Never\"\nnode = \"{node}\"\nimage = \"{image}\"\n[[pod.process]]\nname = \"main\"\nmemory = \"32Mi\"\n"
    )
}

/// The scenario (both boards up). Returns a summary.
pub fn image_on_both_boards(c: &mut Cluster) -> Result<String> {
    // The suite's own cache of Debian's busybox-static (the kit reads it from there).
    crate::debian::busybox("arm64")?;
    crate::debian::busybox("armhf")?;
    let layout_dir = c.dir.join("image-layout");
    let _ = std::fs::remove_dir_all(&layout_dir);
    let layout = kit("build the demo image", || {
        oci::demo_layout(&layout_dir, "1", &Platform::ALL)
    })?;
    let reg = kit("start docker-registry", || Registry::start(Mode::Http))?;
    let reference = kit("push the demo image", || reg.push(&layout, "demo/app:1"))?;
    c.master.apply(
        "image-registry",
        &format!(
            "[[registry]]\nname = \"local\"\nhost = \"{}\"\ninsecure = true\n",
            reg.host()
        ),
    )?;
    let pods = [
        (0, Platform::Arm64, "img-a64"),
        (1, Platform::ArmV7, "img-v7"),
    ];
    let mut manifest = String::new();
    let mut nodes = Vec::new();
    for (i, _, pod) in pods {
        let node = c.node(i)?.name().to_string();
        manifest += &image_pod(pod, &node, &reference);
        nodes.push(node);
    }
    c.master.apply("image-pods", &manifest)?;
    let mut summary = Vec::new();
    for ((_, platform, pod), node) in pods.into_iter().zip(&nodes) {
        let mut want = oci::demo_expected_lines(platform);
        want.push(format!("arch={}", platform.uname()));
        let log = c.wait(
            Duration::from_secs(300),
            &format!("pod {pod}'s log to hold {want:?}"),
            |c, last| {
                let p = c.master.pod(pod)?;
                if let Some(p) = &p
                    && pod_phase(p) == "Failed"
                {
                    bail!("{pod} failed: {}", p["status"]);
                }
                let (_, out, err) = c.master.cli(&["logs", pod])?;
                *last = format!(
                    "logs {out:?} {err:?}; status {}",
                    p.as_ref()
                        .map_or("no pod".into(), |p| p["status"].to_string())
                );
                let lines: Vec<&str> = out.lines().map(str::trim_end).collect();
                Ok(want
                    .iter()
                    .all(|w| lines.contains(&w.as_str()))
                    .then_some(out))
            },
        )?;
        for gone in ["old1", "mid", "doomed=present"] {
            if log.contains(gone) {
                return Err(c.failure(&format!("{pod}: {gone} must be hidden: {log}")));
            }
        }
        let p = c
            .master
            .pod(pod)?
            .ok_or_else(|| anyhow!("pod {pod} vanished"))?;
        if pod_node(&p) != node {
            return Err(c.failure(&format!("{pod} ran on {:?}, not {node}", pod_node(&p))));
        }
        summary.push(format!("{pod} on {node}: {}", platform.oci()));
    }
    // The image lists every arch; the master pulled it once.
    let images = c.master.list("images")?;
    let arches: Vec<String> = images
        .first()
        .and_then(|i| i["variants"].as_array())
        .map(|vs| {
            vs.iter()
                .filter_map(|v| v["arch"].as_str().map(str::to_lowercase))
                .collect()
        })
        .unwrap_or_default();
    if arches.len() != 3 {
        return Err(c.failure(&format!("images listed: {images:?}")));
    }
    c.delete_pods(&["img-a64", "img-v7"])?;
    c.master.ok(&["image", "rm", &reference])?;
    drop(reg);
    Ok(summary.join("; "))
}
