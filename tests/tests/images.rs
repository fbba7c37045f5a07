//! OCI and Docker images, the whole path with the real binaries on this x86_64 host (root): a
//! real registry (Debian's `docker-registry`, started by the test on loopback, see
//! `bramble_testkit::registry`) holding the kit's multi-arch demo image (linux/amd64,
//! linux/arm64, linux/arm/v7; three layers: one deletes `/etc/doomed`, one makes `/data`
//! opaque; see `bramble_testkit::oci`), pulled through the master, run by a worker:
//! - a pod with `image =` runs the amd64 variant with the image's Entrypoint/Cmd/Env/
//!   WorkingDir/User, the whiteouts applied; `args` and `command` override Cmd and Entrypoint;
//!   `bramble get images` lists the three arches; `bramble image rm` is refused while a pod
//!   uses the image, then removes it;
//! - HTTPS with a test CA (`[[registry]] ca`), htpasswd basic auth and bearer tokens (Docker's
//!   token flow) with `credentials = SECRET` (keys `username`, `password`);
//! - `bramble image import` of a `docker save` tarball and of an OCI archive, a pod from each;
//! - bad images, each with its message: a missing reference (404), a registry that is down, an
//!   index with no amd64 variant, a digest mismatch, an unsupported media type, a gzip bomb
//!   (stopped by the worker's expanded-size limit, without a retry storm);
//! - a node whose image disk is full says so in the pod's status and evicts nothing;
//! - zstd layers run, or are refused naming zstd.
//!
//! CLI and manifests assumed (issue 15): `bramble image pull REF`, `bramble image import FILE
//! [--reference REF]`, `bramble image rm REF`, `bramble get images [-o json]`, `[[registry]]`
//! (`name`, `host`, `insecure`, `ca`, `credentials`), `[[pod]] image = "REF"`,
//! `[[pod.process]] command`/`args`.
//!
//! Root only; fails (never skips) without root, docker-registry, skopeo or htpasswd.

use std::path::Path;
use std::time::{Duration, Instant};

use bramble_testkit::oci::{self, Platform};
use bramble_testkit::registry::{Mode, Registry};
use bramble_tests::{
    MasterProc, Proc, Unmount, mount_tmpfs, require_root, start_worker, tail, wait_for_with,
};
use bramble_wire::objects::{Image, Object};

/// A master and one x86_64 worker `n1`, with a scratch dir for manifests and images.
struct Cluster {
    m: MasterProc,
    w: Proc,
    /// The state dir's own small disk, unmounted after the worker is killed.
    _disk: Option<Unmount>,
    state: std::path::PathBuf,
    tmp: tempfile::TempDir,
}

impl Cluster {
    fn start() -> Cluster {
        Cluster::start_with_disk(None)
    }

    /// With the worker's state dir on a tmpfs of `disk_mib` MiB (a small image disk).
    fn start_with_disk(disk_mib: Option<u32>) -> Cluster {
        require_root();
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().join("master");
        let m = MasterProc::start(&data, &["--heartbeat-interval", "500ms"]);
        let state = tmp.path().join("n1");
        let disk = disk_mib.map(|mib| mount_tmpfs(&state, mib));
        let w = start_worker(&m, "n1", &state, &[]);
        let c = Cluster {
            m,
            w,
            _disk: disk,
            state,
            tmp,
        };
        wait_for_with(
            Duration::from_secs(30),
            "node n1 Ready",
            || c.m.node_ready("n1").then_some(()),
            || c.diag(),
        );
        c
    }

    fn worker_log(&self) -> String {
        std::fs::read_to_string(self.state.with_extension("worker.log")).unwrap_or_default()
    }

    fn diag(&self) -> String {
        self.m
            .diag(&[&["get", "pods"], &["get", "images"], &["get", "events"]])
            + &format!("\nworker log (tail):\n{}", tail(&self.worker_log(), 4000))
    }

    /// `bramble apply -f` of `toml`.
    fn apply(&self, toml: &str) {
        let f = self.tmp.path().join("apply.toml");
        std::fs::write(&f, toml).unwrap();
        self.m.ok(&["apply", "-f", f.to_str().unwrap()]);
    }

    /// Waits until pod `name`'s log holds every line of `want` (whole lines); returns the log.
    fn wait_log(&self, name: &str, want: &[String]) -> String {
        let mut last = String::new();
        wait_for_with(
            Duration::from_secs(90),
            &format!("pod {name}'s log to hold {want:?}"),
            || {
                if let Some((phase, msg)) = self.m.pod_status(name) {
                    assert_ne!(phase, "Failed", "pod {name} failed: {msg}\n{last}");
                }
                let o = self.m.cli(&["logs", name]);
                last = String::from_utf8_lossy(&o.stdout).into_owned();
                let lines: Vec<&str> = last.lines().map(str::trim_end).collect();
                want.iter()
                    .all(|w| lines.contains(&w.as_str()))
                    .then(|| last.clone())
            },
            || self.diag(),
        )
    }

    /// Waits until pod `name`'s status message satisfies `ok`; returns (phase, message).
    fn wait_message(&self, name: &str, what: &str, ok: impl Fn(&str) -> bool) -> (String, String) {
        wait_for_with(
            Duration::from_secs(60),
            &format!("pod {name}'s message: {what}"),
            || self.m.pod_status(name).filter(|(_, msg)| ok(msg)),
            || self.diag(),
        )
    }

    /// Every image the master holds.
    fn images(&self) -> Vec<Image> {
        self.m
            .get("images", &[])
            .into_iter()
            .filter_map(|o| match o {
                Object::Image(i) => Some(i),
                _ => None,
            })
            .collect()
    }

    /// `bramble image pull REF`, expected to fail: its stderr.
    fn pull_fails(&self, reference: &str) -> String {
        let o = self.m.cli(&["image", "pull", reference]);
        let err = String::from_utf8_lossy(&o.stderr).into_owned();
        assert!(
            !o.status.success(),
            "pull of {reference} succeeded: {}{err}",
            String::from_utf8_lossy(&o.stdout)
        );
        err
    }
}

/// A pod running `image` (restart Never), with an optional process `command`/`args`.
fn image_pod(name: &str, image: &str, command: Option<&[&str]>, args: Option<&[&str]>) -> String {
    let list = |v: &[&str]| {
        let q: Vec<String> = v.iter().map(|s| format!("{s:?}")).collect();
        format!("[{}]", q.join(", "))
    };
    let mut s = format!(
        "[[pod]]\nname = \"{name}\"\nrestart_policy = \"Never\"\nimage = \"{image}\"\n[[pod.process]]\nname = \"main\"\nmemory = \"32Mi\"\n"
    );
    if let Some(c) = command {
        s += &format!("command = {}\n", list(c));
    }
    if let Some(a) = args {
        s += &format!("args = {}\n", list(a));
    }
    s
}

/// `[[registry]]` for `reg` named `name`, plain HTTP or trusting its CA, with `credentials`.
fn registry_toml(name: &str, reg: &Registry, credentials: Option<&str>) -> String {
    let mut s = format!(
        "[[registry]]\nname = \"{name}\"\nhost = \"{}\"\n",
        reg.host()
    );
    match &reg.ca_pem {
        None => s += "insecure = true\n",
        Some(pem) => s += &format!("ca = \"\"\"\n{pem}\"\"\"\n"),
    }
    if let Some(c) = credentials {
        s += &format!("credentials = \"{c}\"\n");
    }
    s
}

fn amd64_lines() -> Vec<String> {
    let mut v = oci::demo_expected_lines(Platform::Amd64);
    v.push("arch=x86_64".into());
    v
}

#[test]
fn a_multi_arch_image_runs_from_a_registry_with_its_config_and_overrides() {
    let c = Cluster::start();
    let reg = Registry::start(Mode::Http);
    let layout = oci::demo_layout(&c.tmp.path().join("demo"), "1", &Platform::ALL);
    let reference = reg.push(&layout, "demo/app:1");
    c.apply(&registry_toml("local", &reg, None));

    // The pod's image is pulled through the master in the background; the pod then runs the
    // amd64 variant as the image's config says.
    c.apply(&image_pod("demo", &reference, None, None));
    let log = c.wait_log("demo", &amd64_lines());
    for gone in ["old1", "old2", "mid", "doomed=present"] {
        assert!(!log.contains(gone), "{gone} must be hidden: {log}");
    }

    // `bramble get images`: one image, three arches, the index's digest.
    let images = c.images();
    assert_eq!(images.len(), 1, "{images:?}");
    let img = &images[0];
    assert_eq!(img.reference, reference);
    assert_eq!(img.digest, layout.root_digest);
    let mut arches: Vec<&str> = img.variants.iter().map(|v| v.arch.as_str()).collect();
    arches.sort();
    assert_eq!(arches, ["aarch64", "armv7", "x86_64"]);
    for v in &img.variants {
        assert_eq!(v.layers.len(), 3, "{v:?}");
        assert_eq!(v.config.workdir.as_deref(), Some("/app"));
        assert_eq!(v.config.user.as_deref(), Some("1000"));
        assert_eq!(v.config.entrypoint, ["/bin/sh", "-c"]);
    }
    let table = c.m.ok(&["get", "images"]);
    assert!(
        table.contains(&reference) && table.contains("aarch64,armv7,x86_64"),
        "{table}"
    );

    // `args` replaces Cmd (the Entrypoint stays); `command` replaces the Entrypoint and drops
    // Cmd. Env, WorkingDir and User still come from the image.
    c.apply(&image_pod(
        "args",
        &reference,
        None,
        Some(&["echo args-override; echo uid=$(id -u) pwd=$(pwd) GREETING=$GREETING; sleep 3600"]),
    ));
    c.wait_log(
        "args",
        &[
            "args-override".into(),
            "uid=1000 pwd=/app GREETING=hi".into(),
        ],
    );
    c.apply(&image_pod(
        "cmd",
        &reference,
        Some(&["/bin/echo", "command-override"]),
        None,
    ));
    let log = c.wait_log("cmd", &["command-override".into()]);
    assert!(!log.contains("entry"), "Cmd must be dropped: {log}");
    c.apply(&image_pod(
        "both",
        &reference,
        Some(&["/bin/busybox"]),
        Some(&["echo", "both-override"]),
    ));
    c.wait_log("both", &["both-override".into()]);

    // An explicit pull of a stored image is a no-op that names it.
    let out = c.m.ok(&["image", "pull", &reference]);
    assert!(
        out.contains(&reference) || out.contains(&layout.root_digest[..19]),
        "{out}"
    );

    // Removal is refused while pods use it, naming them; then it goes, with its blobs.
    let o = c.m.cli(&["image", "rm", &reference]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "image rm with pods using it succeeded");
    assert!(err.contains("default/demo"), "{err}");
    for p in ["demo", "args", "cmd", "both"] {
        c.m.ok(&["delete", "pod", p]);
    }
    wait_for_with(
        Duration::from_secs(30),
        "image rm once the pods are gone",
        || {
            c.m.cli(&["image", "rm", &reference])
                .status
                .success()
                .then_some(())
        },
        || c.diag(),
    );
    assert!(c.images().is_empty());
    let layer = layout.layers[0].1[2]
        .trim_start_matches("sha256:")
        .to_string();
    wait_for_with(
        Duration::from_secs(10),
        "the layer blob gone from the master",
        || (!c.m.data_dir.join("artifacts").join(&layer).exists()).then_some(()),
        || c.diag(),
    );

    // `bramble image pull` fetches it again, with progress and the digest.
    let out = c.m.ok(&["image", "pull", &reference]);
    assert!(out.contains(&reference), "{out}");
    assert_eq!(c.images().len(), 1);
}

#[test]
fn https_registries_with_a_ca_htpasswd_credentials_and_bearer_tokens() {
    let c = Cluster::start();
    let layout = oci::demo_layout(&c.tmp.path().join("demo"), "1", &Platform::ALL);

    // HTTPS with the test CA: refused without it (unknown issuer), pulled with it.
    let tls = Registry::start(Mode::Https);
    let reference = tls.push(&layout, "demo/app:1");
    let err = c.pull_fails(&reference);
    assert!(
        err.to_lowercase().contains("certificate") || err.contains("UnknownIssuer"),
        "{err}"
    );
    c.apply(&registry_toml("tls", &tls, None));
    c.m.ok(&["image", "pull", &reference]);
    c.apply(&image_pod("tls", &reference, None, None));
    c.wait_log("tls", &amd64_lines());

    // htpasswd: anonymous pulls get 401, named in the message with the fix; with the secret
    // they succeed.
    let auth = Registry::start(Mode::Htpasswd {
        user: "puller".into(),
        password: "pa55-w0rd".into(),
    });
    let reference = auth.push(&layout, "private/app:1");
    c.apply(&registry_toml("auth", &auth, None));
    let err = c.pull_fails(&reference);
    assert!(
        err.contains("401") || err.to_lowercase().contains("unauthorized"),
        "{err}"
    );
    assert!(err.contains("credentials"), "the fix is named: {err}");
    c.apply(
        "[[secret]]\nname = \"regcreds\"\ndata = { username = \"puller\", password = \"pa55-w0rd\" }\n",
    );
    c.apply(&registry_toml("auth", &auth, Some("regcreds")));
    c.apply(&image_pod("private", &reference, None, None));
    c.wait_log("private", &amd64_lines());

    // Bearer tokens (Docker's token flow, as Docker Hub and most registries): the registry
    // answers 401 with a Bearer challenge naming the kit's token server; the master gets a
    // token there with the same secret's credentials and pulls with it.
    let bearer = Registry::start(Mode::Token {
        user: "puller".into(),
        password: "pa55-w0rd".into(),
    });
    let reference = bearer.push(&layout, "tokened/app:1");
    let before = bearer
        .token
        .as_ref()
        .unwrap()
        .issued
        .load(std::sync::atomic::Ordering::SeqCst);
    c.apply(&registry_toml("bearer", &bearer, Some("regcreds")));
    c.m.ok(&["image", "pull", &reference]);
    let after = bearer
        .token
        .as_ref()
        .unwrap()
        .issued
        .load(std::sync::atomic::Ordering::SeqCst);
    assert!(after > before, "the master pulled without a token");
    c.apply(&image_pod("tokened", &reference, None, None));
    c.wait_log("tokened", &amd64_lines());
    // A `[[registry]]` naming a malformed CA is refused at apply.
    let f = c.tmp.path().join("bad.toml");
    std::fs::write(
        &f,
        "[[registry]]\nname = \"bad\"\nhost = \"127.0.0.1:1\"\nca = \"not a certificate\"\n",
    )
    .unwrap();
    let o = c.m.cli(&["apply", "-f", f.to_str().unwrap()]);
    assert!(!o.status.success(), "a registry with a bad CA was accepted");
}

#[test]
fn docker_save_tarballs_and_oci_archives_import_and_run() {
    let c = Cluster::start();
    let layout = oci::demo_layout(&c.tmp.path().join("demo"), "1", &Platform::ALL);

    // `docker save` format (one arch), named by its RepoTags.
    let da = c.tmp.path().join("app.docker.tar");
    oci::docker_archive(&layout, Platform::Amd64, &da, "imported/docker:1");
    let out = c.m.ok(&["image", "import", da.to_str().unwrap()]);
    assert!(out.contains("imported/docker:1"), "{out}");
    c.apply(&image_pod("docker", "imported/docker:1", None, None));
    c.wait_log("docker", &amd64_lines());

    // An OCI archive (every arch), under the reference given.
    let oa = c.tmp.path().join("app.oci.tar");
    oci::oci_archive(&layout, &oa);
    let reference = "registry.invalid:5000/imported/oci:1";
    c.m.ok(&[
        "image",
        "import",
        oa.to_str().unwrap(),
        "--reference",
        reference,
    ]);
    c.apply(&image_pod("ocipod", reference, None, None));
    c.wait_log("ocipod", &amd64_lines());

    let images = c.images();
    let oci_img = images
        .iter()
        .find(|i| i.reference == reference)
        .unwrap_or_else(|| panic!("{reference} not listed: {images:?}"));
    assert_eq!(oci_img.digest, layout.root_digest);
    assert_eq!(oci_img.variants.len(), 3);
    let docker_img = images
        .iter()
        .find(|i| i.reference.ends_with("imported/docker:1"))
        .unwrap_or_else(|| panic!("imported/docker:1 not listed: {images:?}"));
    assert_eq!(docker_img.variants.len(), 1);
    assert_eq!(docker_img.variants[0].arch.as_str(), "x86_64");
    // Layers are shared: the same amd64 layer blobs, stored once on the master.
    let shared = layout.layers[0].1[0].trim_start_matches("sha256:");
    assert!(c.m.data_dir.join("artifacts").join(shared).is_file());

    // A file that is neither format is refused, naming what was expected.
    let junk = c.tmp.path().join("junk.tar");
    std::fs::write(&junk, vec![0u8; 4096]).unwrap();
    let o = c.m.cli(&["image", "import", junk.to_str().unwrap()]);
    assert!(!o.status.success(), "junk imported");
}

#[test]
fn bad_images_are_refused_each_with_its_message() {
    let c = Cluster::start();
    let mut reg = Registry::start(Mode::Http);
    c.apply(&registry_toml("local", &reg, None));
    let host = reg.host().to_string();

    // A reference the registry does not have: 404, named.
    let missing = format!("{host}/demo/nope:1");
    let err = c.pull_fails(&missing);
    assert!(err.contains("demo/nope"), "{err}");
    assert!(
        err.contains("404") || err.to_lowercase().contains("not found"),
        "{err}"
    );
    c.apply(&image_pod("missing", &missing, None, None));
    let (phase, msg) = c.wait_message("missing", "not found", |m| {
        m.contains("demo/nope") && (m.contains("404") || m.to_lowercase().contains("not found"))
    });
    assert_eq!(phase, "Pending", "{msg}");

    // An index with no linux/amd64 variant: pulled, but the pod is not scheduled.
    let arm = oci::demo_layout(
        &c.tmp.path().join("arm"),
        "1",
        &[Platform::Arm64, Platform::ArmV7],
    );
    let armref = reg.push(&arm, "demo/armonly:1");
    c.apply(&image_pod("armonly", &armref, None, None));
    let (phase, msg) = c.wait_message("armonly", "no linux/amd64 variant", |m| {
        m.contains("no linux/amd64 variant of image") && m.contains("demo/armonly")
    });
    assert_eq!(phase, "Pending", "{msg}");

    // A layer whose bytes do not match its digest (corrupted in the registry after the push):
    // refused, nothing stored under that digest.
    let good = oci::demo_layout(&c.tmp.path().join("good"), "1", &[Platform::Amd64]);
    let corrupt = reg.push(&good, "demo/corrupt:1");
    let layer = good.layers[0].1[0].clone();
    reg.corrupt_blob(&layer);
    let err = c.pull_fails(&corrupt);
    assert!(err.to_lowercase().contains("digest"), "{err}");
    assert!(
        err.contains(layer.trim_start_matches("sha256:").get(..12).unwrap()),
        "the blob is named: {err}"
    );
    let hex = layer.trim_start_matches("sha256:");
    assert!(!c.m.data_dir.join("artifacts").join(hex).exists());
    assert!(
        !c.m.data_dir
            .join("artifacts")
            .join(format!("{hex}.partial"))
            .exists(),
        "half-written blob left"
    );

    // A manifest of an unsupported media type (a Helm chart): refused, the type named.
    let helm = oci::helm_layout(&c.tmp.path().join("helm"), "1");
    let m = std::fs::read(helm.blob(&helm.root_digest)).unwrap();
    let v: serde_json::Value = serde_json::from_slice(&m).unwrap();
    for d in std::iter::once(&v["config"]).chain(v["layers"].as_array().unwrap()) {
        let digest = d["digest"].as_str().unwrap();
        reg.put_blob("demo/chart", &std::fs::read(helm.blob(digest)).unwrap());
    }
    reg.put_manifest("demo/chart", "1", oci::MT_MANIFEST, &m);
    let err = c.pull_fails(&format!("{host}/demo/chart:1"));
    assert!(
        err.contains("application/vnd.cncf.helm.config.v1+json")
            || err.contains("application/vnd.cncf.helm.chart.content.v1.tar+gzip"),
        "{err}"
    );

    // A malformed reference: refused at apply or pull, naming the expected form.
    let o = c.m.cli(&["image", "pull", "Not A Reference"]);
    assert!(!o.status.success());

    // The registry down: the pull says it cannot connect; the pod says so and is retried with
    // backoff, not in a storm.
    let down = format!("{host}/demo/app:1");
    reg.stop();
    let err = c.pull_fails(&down);
    assert!(err.contains(&host), "{err}");
    c.apply(&image_pod("down", &down, None, None));
    let (phase, msg) = c.wait_message("down", "the registry is down", |m| {
        m.contains("demo/app") && m.contains(&host)
    });
    assert_eq!(phase, "Pending", "{msg}");
    // Backoff: 10 s doubling; in 15 s the master tries at most three times. Counted in its
    // log's mentions of the reference (each attempt logs once at least; allow noise).
    let before = c.m.log().matches("demo/app:1").count();
    std::thread::sleep(Duration::from_secs(15));
    let after = c.m.log().matches("demo/app:1").count();
    assert!(
        after - before <= 10,
        "{} log lines about the down registry in 15 s: a retry storm\n{}",
        after - before,
        tail(&c.m.log(), 3000)
    );
}

/// `wchar` (bytes passed to write calls) of process `pid`.
fn wchar(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/io"))
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("wchar:")
                    .map(|v| v.trim().parse().unwrap_or(0))
            })
        })
        .unwrap_or(0)
}

fn du(p: &Path) -> u64 {
    let o = std::process::Command::new("du")
        .args(["-sb"])
        .arg(p)
        .output()
        .unwrap();
    String::from_utf8_lossy(&o.stdout)
        .split_whitespace()
        .next()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

#[test]
fn a_gzip_bomb_layer_is_stopped_by_the_workers_expanded_size_limit() {
    let c = Cluster::start();
    let reg = Registry::start(Mode::Http);
    c.apply(&registry_toml("local", &reg, None));
    // 8 GiB of zeros in ~8 MiB: far over any node's expanded-size limit, small enough to pass
    // the master's blob size limit.
    const EXPANDED: u64 = 8 << 30;
    let bomb = oci::bomb_layout(&c.tmp.path().join("bomb"), "1", EXPANDED);
    let reference = reg.push(&bomb, "demo/bomb:1");
    let bomb_sha = bomb.layers[0].1[3]
        .trim_start_matches("sha256:")
        .to_string();
    // The master stores it (it never inflates layers).
    c.m.ok(&["image", "pull", &reference]);

    let pid = c.w.pid();
    let w0 = wchar(pid);
    let t = Instant::now();
    c.apply(&image_pod("bomb", &reference, None, None));
    let (_, msg) = c.wait_message("bomb", "the expanded-size limit", |m| {
        let l = m.to_lowercase();
        (l.contains("expand") || l.contains("uncompressed") || l.contains("limit"))
            && l.contains("layer")
    });
    assert!(
        msg.contains(&bomb_sha[..12]) || msg.contains("demo/bomb"),
        "the layer or image is named: {msg}"
    );
    let first = t.elapsed();
    let written = wchar(pid) - w0;
    // Nothing half-written: no layer directory (or a partial one) is left for the bomb.
    let layers = c.state.join("layers");
    let left: Vec<String> = std::fs::read_dir(&layers)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.contains(&bomb_sha))
                .collect()
        })
        .unwrap_or_default();
    assert!(left.is_empty(), "bomb layer left on the node: {left:?}");
    // No retry storm: within 30 s more the worker writes little more than it did the first
    // time (at most two more attempts: a backoff of 10 s doubling; the layer's bytes cannot
    // change, so never retrying is better still), and its state disk stays small.
    std::thread::sleep(Duration::from_secs(30));
    let more = wchar(pid) - w0 - written;
    assert!(
        more <= 2 * written + (64 << 20),
        "the worker wrote {written} bytes in the first {first:?} and {more} more in 30 s: a retry storm?\n{}",
        c.diag()
    );
    let state = du(&c.state);
    assert!(
        state < 2 << 30,
        "the worker's state dir holds {state} bytes after a bomb"
    );
}

#[test]
fn a_full_image_disk_is_reported_and_evicts_nothing() {
    // 48 MiB for the node's state: the small demo image fits, a 64 MiB layer cannot.
    let c = Cluster::start_with_disk(Some(48));
    let reg = Registry::start(Mode::Http);
    c.apply(&registry_toml("local", &reg, None));
    let small = oci::demo_layout(&c.tmp.path().join("small"), "1", &[Platform::Amd64]);
    let small_ref = reg.push(&small, "demo/small:1");
    let big = oci::bench_layout(&c.tmp.path().join("big"), "1", 64 << 20);
    let big_ref = reg.push(&big, "demo/big:1");

    c.apply(&image_pod("small", &small_ref, None, None));
    c.wait_log("small", &amd64_lines());
    let started = |c: &Cluster| {
        c.m.pod("small")
            .and_then(|p| match p.status.processes.first().map(|s| &s.state) {
                Some(bramble_wire::objects::ProcessState::Running { started_ms, .. }) => {
                    Some(*started_ms)
                }
                _ => None,
            })
    };
    let first = started(&c).expect("small is running");

    c.apply(&image_pod("big", &big_ref, None, None));
    let (phase, msg) = c.wait_message("big", "the image disk is full", |m| {
        let l = m.to_lowercase();
        l.contains("space") || l.contains("disk") || l.contains("full")
    });
    assert_ne!(phase, "Running", "{msg}");
    // The running pod is untouched (same process), the node still Ready.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        started(&c),
        Some(first),
        "the small pod was restarted or evicted"
    );
    assert!(c.m.node_ready("n1"), "{}", c.diag());
    // Nothing half-written of the big layer stays on the node.
    let payload = big.layers[0].1[3].trim_start_matches("sha256:").to_string();
    let mut left = Vec::new();
    for sub in ["layers", "artifacts"] {
        if let Ok(rd) = std::fs::read_dir(c.state.join(sub)) {
            left.extend(
                rd.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n.contains(&payload)),
            );
        }
    }
    assert!(left.is_empty(), "half-written layer left: {left:?}");
}

#[test]
fn a_zstd_image_runs_or_is_refused_naming_zstd() {
    let c = Cluster::start();
    let reg = Registry::start(Mode::Http);
    c.apply(&registry_toml("local", &reg, None));
    let layout = oci::write_layout(
        &c.tmp.path().join("zstd"),
        "1",
        &[oci::demo_variant_zstd(Platform::Amd64)],
        true,
    );
    let reference = reg.push(&layout, "demo/zstd:1");
    c.apply(&image_pod("zstd", &reference, None, None));
    // Supported (a pure-Rust decoder on the node), or refused with a message naming zstd and
    // the fix; never a pod that fails at exec.
    let t = Instant::now();
    loop {
        if let Some((phase, msg)) = c.m.pod_status("zstd") {
            if msg.to_lowercase().contains("zstd") && phase != "Running" {
                break;
            }
            let log = String::from_utf8_lossy(&c.m.cli(&["logs", "zstd"]).stdout).into_owned();
            let lines: Vec<&str> = log.lines().collect();
            if amd64_lines().iter().all(|w| lines.contains(&w.as_str())) {
                break;
            }
            assert_ne!(phase, "Failed", "zstd pod failed: {msg}\n{log}");
        }
        assert!(
            t.elapsed() < Duration::from_secs(90),
            "the zstd image neither ran nor was refused naming zstd{}",
            c.diag()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_tmpfs_writable_layer_is_capped_and_writes_nothing_to_the_state_disk() {
    let c = Cluster::start();
    let reg = Registry::start(Mode::Http);
    c.apply(&registry_toml("local", &reg, None));
    let layout = oci::demo_layout(&c.tmp.path().join("demo"), "1", &[Platform::Amd64]);
    let reference = reg.push(&layout, "demo/app:1");
    // As root in the pod (the image's user is 1000): 4 MiB into a 2 MiB layer fails with
    // ENOSPC; once it is removed a small file fits; the root is an overlay.
    let script = "dd if=/dev/zero of=/big bs=1024 count=4096 2>&1 | grep -o 'No space left' | head -1; \
                  rm /big; echo small > /small && echo small-ok; \
                  grep -c '^overlay / ' /proc/mounts | sed 's/^/overlay-root=/'; sleep 3600";
    let mut pod = image_pod("eph", &reference, Some(&["/bin/sh", "-c", script]), None);
    pod = pod.replacen(
        "[[pod.process]]",
        "ephemeral_storage = \"tmpfs\"\nephemeral_storage_limit = \"2Mi\"\n[[pod.process]]",
        1,
    );
    pod += "user = 0\n";
    c.apply(&pod);
    c.wait_log(
        "eph",
        &[
            "No space left".into(),
            "small-ok".into(),
            "overlay-root=1".into(),
        ],
    );
    // The writable layer lives in the pod's own mount namespace: on the node's disk its
    // directory stays empty.
    let roots = c.state.join("pod-roots");
    let on_disk: Vec<_> = walk(&roots);
    assert!(
        on_disk.iter().all(|p| p.is_dir()),
        "files of the tmpfs layer on the state disk: {on_disk:?}"
    );
    // A limit on a disk layer, or without an image, is refused at apply with the fix.
    let f = c.tmp.path().join("bad.toml");
    std::fs::write(
        &f,
        pod.replace("ephemeral_storage = \"tmpfs\"\n", "")
            .replace("name = \"eph\"", "name = \"eph2\""),
    )
    .unwrap();
    let o = c.m.cli(&["apply", "-f", f.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("tmpfs"), "{err}");
}

/// Every path under `dir` (not following links).
fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            out.extend(walk(&p));
        }
        out.push(p);
    }
    out
}
