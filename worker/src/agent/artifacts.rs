//! Artifacts on the node: pods with `rootfs = "artifact:NAME"` wait (Pending, "pulling artifact
//! NAME (34%)") until this node's architecture's variant is pulled, verified and unpacked.
//!
//! - Pull: `NodeUp::ArtifactGet` for 256 KiB at a time, [`IN_FLIGHT`] requests ahead, appended to
//!   `<state>/artifacts/<sha>.partial`; after a reconnect or an agent restart the pull resumes
//!   from the partial file's length.
//! - Verify and unpack (a thread, off the event loop): sha256 of the whole file, then
//!   [`bramble_artifact::unpack`] into `<sha>.tmp/`, renamed to `<sha>/` once complete; the
//!   tarball is then deleted. One tree serves every pod that uses it (read-only in each pod).
//! - GC: a tree (or partial file) no assigned pod refers to for [`GC_GRACE`] is removed.
//! - Failures (the master lost the blob, a hash mismatch, an unsafe tarball) land in the pods'
//!   message and are retried after [`RETRY_AFTER`], doubling at each failure up to
//!   [`RETRY_MAX`].
//! - Image layers ([`super::images`]) go through the same pulls, into `<state>/layers`.

use std::collections::{HashMap, HashSet, VecDeque};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use bramble_wire::Arch;
use bramble_wire::msg::{Assignment, NodeUp, PodReport};
use bramble_wire::objects::{LayerCompression, Pod, PodPhase, PodStatus};

use super::Driver;
use super::images;
use crate::runtime::{PodImage, PodToRun};

/// Chunk requests kept in flight per pull: a 4 MiB window of 256 KiB chunks.
pub const IN_FLIGHT: usize = 16;
/// How long an unused tree is kept (a pod may come back, e.g. a rollout undone).
pub const GC_GRACE: Duration = Duration::from_secs(600);
/// How long a failed pull waits before it is tried again.
pub const RETRY_AFTER: Duration = Duration::from_secs(30);
/// The longest wait between retries of a failing pull.
pub const RETRY_MAX: Duration = Duration::from_secs(600);

/// The attempt count a refused tarball jumps to: its wait is [`RETRY_MAX`] at once.
const REFUSED_ATTEMPTS: u32 = 6;

/// The wait before retry number `attempts` (1 = after the first failure).
pub fn retry_delay(attempts: u32) -> Duration {
    RETRY_AFTER
        .saturating_mul(1 << attempts.saturating_sub(1).min(8))
        .min(RETRY_MAX)
}

/// How the node keeps images.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageSettings {
    /// Unpacked layers (`<state>/layers`).
    pub layers: PathBuf,
    /// Flattened trees (`<state>/images`), without overlayfs.
    pub images: PathBuf,
    /// Pod roots are overlays of the layers; else flattened trees.
    pub overlay: bool,
    /// Collect unused layers when the state disk is this full (percent).
    pub gc_high: u8,
    /// ... down to this (percent).
    pub gc_low: u8,
}

/// The outcome of a verify-and-unpack thread.
#[derive(Debug)]
pub struct Unpacked {
    sha256: String,
    result: Result<(), String>,
    /// The tarball itself was refused (an unsafe entry, over a limit): the same bytes can never
    /// unpack, so the retry waits the longest delay at once.
    refused: bool,
}

#[derive(Debug)]
struct Pull {
    name: String,
    /// `<dir>/<sha>.partial`: the artifacts' or the layers' directory.
    dir: PathBuf,
    /// An image layer (and its compression), not an artifact.
    layer: Option<LayerCompression>,
    size: u64,
    held: u64,
    file: fs::File,
    /// (request, offset, len), in the order sent (and answered).
    inflight: VecDeque<(u32, u64, u32)>,
    unpacking: bool,
}

/// The node's artifact cache and pulls in progress.
#[derive(Debug)]
pub struct ArtifactCache {
    dir: PathBuf,
    arch: Arch,
    pulls: HashMap<String, Pull>,
    /// Failed pulls (by sha) and flattens (by manifest sha): message, when, how many times.
    failed: HashMap<String, (String, Instant, u32)>,
    unused_since: HashMap<String, Instant>,
    images: Option<ImageSettings>,
    /// Failures so far of pulls being retried (the next delay doubles).
    attempts: HashMap<String, u32>,
    /// Manifests (sha256 hex) being flattened.
    flattening: HashSet<String>,
    /// The layers and trees the assigned pods use (never collected).
    in_use: HashSet<String>,
    /// When each layer or tree was last used by an assigned pod (GC order).
    last_used: HashMap<String, SystemTime>,
    next_request: u32,
    last_gc: Option<Instant>,
    done_tx: async_channel::Sender<Unpacked>,
    done_rx: async_channel::Receiver<Unpacked>,
}

/// Where a pod's image stands.
enum ImageState {
    /// Every layer is here: the pod as it runs.
    Ready(Box<PodToRun>),
    /// These layers (sha256, size, compression) must be pulled.
    Missing(Vec<(String, u64, LayerCompression)>),
    /// Layers here, the flattened tree not yet.
    Flatten(Box<bramble_wire::objects::ImageVariant>),
    /// Pending with this message (pulling, unpacking, a failure waiting for its retry...).
    Waiting(String),
    /// Can never run as specified.
    Failed(String),
}

/// What a pod's rootfs needs from the cache.
enum Need<'a> {
    /// No artifact rootfs.
    None,
    /// The variant for this node.
    Variant {
        name: &'a str,
        sha256: &'a str,
        size: u64,
    },
    /// Cannot be run here, and why.
    Impossible(String),
}

fn need<'a>(pod: &'a Pod, a: &'a Assignment, arch: Arch) -> Need<'a> {
    let Some(name) = pod.spec.artifact() else {
        return Need::None;
    };
    let Some(art) = a.artifacts.iter().find(|x| x.meta.name == name) else {
        return Need::Impossible(format!(
            "artifact {name} is not in this node's assignment (deleted?): push it again with bramble artifact push"
        ));
    };
    match art.variant(arch) {
        Some(v) if bramble_artifact::is_sha256_hex(&v.sha256) => Need::Variant {
            name,
            sha256: &v.sha256,
            size: v.size,
        },
        _ => Need::Impossible(format!(
            "artifact {name} has no {} variant: push one with bramble artifact push FILE --arch {}",
            arch.as_str(),
            arch.as_str()
        )),
    }
}

impl ArtifactCache {
    /// A cache in `dir` (the state dir's `artifacts`) for a node of `arch`.
    pub fn new(dir: &Path, arch: Arch) -> ArtifactCache {
        let (done_tx, done_rx) = async_channel::unbounded();
        ArtifactCache {
            dir: dir.to_path_buf(),
            arch,
            pulls: HashMap::new(),
            failed: HashMap::new(),
            unused_since: HashMap::new(),
            images: None,
            flattening: HashSet::new(),
            attempts: HashMap::new(),
            in_use: HashSet::new(),
            last_used: HashMap::new(),
            next_request: 1,
            last_gc: None,
            done_tx,
            done_rx,
        }
    }

    /// Also serves pods with an `image`.
    pub fn with_images(mut self, settings: ImageSettings) -> ArtifactCache {
        self.images = Some(settings);
        self
    }

    /// Where the results of unpack threads arrive; hand them to [`ArtifactCache::finish`].
    pub fn done(&self) -> async_channel::Receiver<Unpacked> {
        self.done_rx.clone()
    }

    fn tree(&self, sha256: &str) -> PathBuf {
        self.dir.join(sha256)
    }

    /// Gives the driver the pods it can run now (artifact rootfs resolved to the unpacked tree,
    /// then `resolve`d further), starts the pulls the others wait for, and sends chunk requests if connected.
    pub fn sync(
        &mut self,
        driver: &mut impl Driver,
        desired: &Assignment,
        up: Option<&async_channel::Sender<NodeUp>>,
        resolve: impl Fn(PodToRun) -> PodToRun,
    ) {
        let mut runnable = Vec::with_capacity(desired.pods.len());
        if self.images.is_some() {
            self.in_use = images::used_by(desired, self.arch);
        }
        for p in &desired.pods {
            if p.spec.image.is_some() {
                match self.image_state(p, desired) {
                    ImageState::Ready(run) => runnable.push(resolve(*run)),
                    ImageState::Missing(layers) => {
                        let reference = p.spec.image.clone().unwrap_or_default();
                        for (sha, size, c) in layers {
                            self.start_layer(&reference, &sha, size, c);
                        }
                    }
                    ImageState::Flatten(v) => self.flatten(p, &v),
                    ImageState::Waiting(_) | ImageState::Failed(_) => {}
                }
                continue;
            }
            match need(p, desired, self.arch) {
                Need::None => runnable.push(resolve(PodToRun::new(p.clone()))),
                Need::Impossible(_) => {}
                Need::Variant { name, sha256, size } => {
                    let tree = self.tree(sha256);
                    if tree.is_dir() {
                        let mut run = PodToRun::new(p.clone());
                        run.rootfs = Some(tree.to_string_lossy().into_owned());
                        runnable.push(resolve(run));
                    } else {
                        self.start(name, sha256, size);
                    }
                }
            }
        }
        driver.sync(&runnable);
        if let Some(up) = up {
            self.pump(up);
        }
    }

    /// Status reports for the pods that wait for (or cannot get) their artifact.
    pub fn waiting(&self, desired: &Assignment) -> Vec<PodReport> {
        let mut out = Vec::new();
        for p in &desired.pods {
            if p.spec.image.is_some() {
                let (phase, message) = match self.image_state(p, desired) {
                    ImageState::Ready(_) => continue,
                    ImageState::Failed(m) => (PodPhase::Failed, m),
                    ImageState::Waiting(m) => (PodPhase::Pending, m),
                    ImageState::Missing(_) | ImageState::Flatten(_) => (
                        PodPhase::Pending,
                        format!(
                            "waiting for image {}",
                            p.spec.image.as_deref().unwrap_or_default()
                        ),
                    ),
                };
                out.push(PodReport {
                    namespace: p.meta.namespace.clone(),
                    name: p.meta.name.clone(),
                    uid: p.meta.uid.clone(),
                    status: PodStatus {
                        phase,
                        message,
                        ..Default::default()
                    },
                });
                continue;
            }
            let message = match need(p, desired, self.arch) {
                Need::None => continue,
                Need::Impossible(m) => m,
                Need::Variant { name, sha256, .. } => {
                    if self.tree(sha256).is_dir() {
                        continue;
                    }
                    if let Some((m, _, _)) = self.failed.get(sha256) {
                        m.clone()
                    } else if let Some(pull) = self.pulls.get(sha256) {
                        if pull.unpacking {
                            format!("unpacking artifact {name}")
                        } else {
                            // In steps of 10%: each change is a status write on the master.
                            let pct = (pull.held * 10).checked_div(pull.size).unwrap_or(10) * 10;
                            format!("pulling artifact {name} ({pct}%)")
                        }
                    } else {
                        format!("waiting for artifact {name}")
                    }
                }
            };
            out.push(PodReport {
                namespace: p.meta.namespace.clone(),
                name: p.meta.name.clone(),
                uid: p.meta.uid.clone(),
                status: PodStatus {
                    phase: PodPhase::Pending,
                    message,
                    ..Default::default()
                },
            });
        }
        out
    }

    /// Begins (or resumes from the partial file) pulling a variant.
    fn start(&mut self, name: &str, sha256: &str, size: u64) {
        let dir = self.dir.clone();
        self.start_blob(dir, None, name, sha256, size);
    }

    /// Whether a failed pull or flatten (`key`) still waits for its retry; once the wait is
    /// over the failure is forgotten (its count kept for the next delay).
    fn backing_off(&mut self, key: &str) -> bool {
        match self.failed.get(key) {
            Some((_, at, n)) if at.elapsed() < retry_delay(*n) => true,
            Some((_, _, n)) => {
                self.attempts.insert(key.to_string(), *n);
                self.failed.remove(key);
                false
            }
            None => false,
        }
    }

    /// The message of a failure that still waits for its retry.
    fn still_failing(&self, key: &str) -> Option<String> {
        self.failed
            .get(key)
            .filter(|(_, at, n)| at.elapsed() < retry_delay(*n))
            .map(|(m, _, _)| m.clone())
    }

    /// Begins (or resumes) pulling an image layer, if the state disk has room for it (after
    /// collecting unused layers).
    fn start_layer(&mut self, reference: &str, sha256: &str, size: u64, c: LayerCompression) {
        let Some(settings) = self.images.clone() else {
            return;
        };
        if self.pulls.contains_key(sha256) || self.backing_off(sha256) {
            return;
        }
        let _ = fs::create_dir_all(&settings.layers);
        let held =
            fs::metadata(settings.layers.join(format!("{sha256}.partial"))).map_or(0, |m| m.len());
        // The blob, and (with overlay) its expanded tree of at least as much.
        let need = size.saturating_sub(held) + if settings.overlay { size } else { 0 };
        let free = || crate::sys::layers::disk_usage(&settings.layers).map(|u| u.free);
        if free().is_ok_and(|f| f < need) {
            self.collect_images(true);
            if let Ok(f) = free()
                && f < need
            {
                let msg = images::storage_full_message(
                    reference,
                    &format!("layer {} ({size} bytes, {f} free)", &sha256[..12]),
                    &settings.layers,
                );
                self.fail(sha256, msg);
                return;
            }
        }
        self.start_blob(settings.layers, Some(c), reference, sha256, size);
    }

    fn start_blob(
        &mut self,
        dir: PathBuf,
        layer: Option<LayerCompression>,
        name: &str,
        sha256: &str,
        size: u64,
    ) {
        if self.pulls.contains_key(sha256) || self.backing_off(sha256) {
            return;
        }
        let partial = dir.join(format!("{sha256}.partial"));
        let opened = fs::create_dir_all(&dir).and_then(|()| {
            let f = fs::OpenOptions::new()
                .append(true)
                .create(true)
                .open(&partial)?;
            let mut len = f.metadata()?.len();
            if len > size {
                f.set_len(0)?;
                len = 0;
            }
            Ok((f, len))
        });
        let (file, held) = match opened {
            Ok(x) => x,
            Err(e) => {
                let what = if layer.is_some() { "image" } else { "artifact" };
                self.fail(
                    sha256,
                    format!("{what} {name}: cannot write {}: {e}", partial.display()),
                );
                return;
            }
        };
        if held > 0 {
            tracing::info!(artifact = %name, held, size, "resuming artifact pull");
        } else {
            tracing::info!(artifact = %name, size, %sha256, "pulling artifact");
        }
        let mut pull = Pull {
            name: name.to_string(),
            dir,
            layer,
            size,
            held,
            file,
            inflight: VecDeque::new(),
            unpacking: false,
        };
        if held == size {
            self.unpack(sha256, &mut pull);
        }
        self.pulls.insert(sha256.to_string(), pull);
    }

    fn fail(&mut self, sha256: &str, message: String) {
        tracing::warn!("{message}");
        self.pulls.remove(sha256);
        let attempts = self.attempts.remove(sha256).unwrap_or(0) + 1;
        self.failed.insert(
            sha256.to_string(),
            (
                format!(
                    "{message} (retrying in {} s)",
                    retry_delay(attempts).as_secs()
                ),
                Instant::now(),
                attempts,
            ),
        );
    }

    /// Sends chunk requests so that each pull has [`IN_FLIGHT`] outstanding.
    pub fn pump(&mut self, up: &async_channel::Sender<NodeUp>) {
        for (sha, pull) in &mut self.pulls {
            if pull.unpacking {
                continue;
            }
            let mut next = pull.held + pull.inflight.iter().map(|r| u64::from(r.2)).sum::<u64>();
            while pull.inflight.len() < IN_FLIGHT && next < pull.size {
                let len = (pull.size - next).min(bramble_artifact::PULL_CHUNK as u64) as u32;
                let request = self.next_request;
                let msg = NodeUp::ArtifactGet {
                    request,
                    sha256: sha.clone(),
                    offset: next,
                    len,
                };
                if up.try_send(msg).is_err() {
                    break; // the connection is busy or gone: the next pump goes on
                }
                self.next_request = self.next_request.wrapping_add(1).max(1);
                pull.inflight.push_back((request, next, len));
                next += u64::from(len);
            }
        }
    }

    /// The connection dropped: requests in flight are lost; they are sent again on reconnect.
    pub fn disconnected(&mut self) {
        for p in self.pulls.values_mut() {
            p.inflight.clear();
        }
    }

    /// A chunk arrived. Returns whether the waiting pods' messages changed.
    pub fn on_chunk(
        &mut self,
        request: u32,
        data: Vec<u8>,
        error: Option<String>,
        up: Option<&async_channel::Sender<NodeUp>>,
    ) -> bool {
        let Some(sha) = self
            .pulls
            .iter()
            .find(|(_, p)| p.inflight.iter().any(|r| r.0 == request))
            .map(|(s, _)| s.clone())
        else {
            return false; // stale (an old connection's request)
        };
        let Some(mut pull) = self.pulls.remove(&sha) else {
            return false;
        };
        let what = if pull.layer.is_some() {
            "image"
        } else {
            "artifact"
        };
        if let Some(e) = error {
            let msg = format!("pulling {what} {}: {e}", pull.name);
            self.fail(&sha, msg);
            return true;
        }
        let before = (pull.held * 100).checked_div(pull.size).unwrap_or(0);
        let front = pull.inflight.front().copied();
        match front {
            Some((r, offset, len)) if r == request && offset == pull.held => {
                pull.inflight.pop_front();
                if data.len() as u64 > u64::from(len) {
                    let msg = format!("pulling {what} {}: the master sent too much", pull.name);
                    self.fail(&sha, msg);
                    return true;
                }
                if let Err(e) = pull.file.write_all(&data) {
                    let msg = if images::storage_full(&e) {
                        images::storage_full_message(&pull.name, "a layer", &pull.dir)
                    } else {
                        format!("{what} {}: writing the partial file: {e}", pull.name)
                    };
                    self.fail(&sha, msg);
                    return true;
                }
                pull.held += data.len() as u64;
                if (data.len() as u32) < len && pull.held < pull.size {
                    // Short read: ask again from where we are.
                    pull.inflight.clear();
                }
            }
            _ => {
                // Out of step (should not happen on one ordered connection): start over from
                // what is held.
                pull.inflight.clear();
            }
        }
        let complete = pull.held >= pull.size;
        if complete {
            self.unpack(&sha, &mut pull);
        }
        let after = (pull.held * 100).checked_div(pull.size).unwrap_or(0);
        self.pulls.insert(sha, pull);
        if !complete && let Some(up) = up {
            self.pump(up);
        }
        complete || after != before
    }

    /// Verifies and unpacks a complete partial file on a thread.
    fn unpack(&self, sha256: &str, pull: &mut Pull) {
        pull.unpacking = true;
        let _ = pull.file.sync_all();
        let dir = pull.dir.clone();
        let sha = sha256.to_string();
        let name = pull.name.clone();
        let tx = self.done_tx.clone();
        let layer = pull.layer;
        let overlay = self.images.as_ref().is_some_and(|i| i.overlay);
        std::thread::spawn(move || {
            let (result, refused) = match layer {
                Some(c) => (
                    images::verify_and_unpack_layer(&dir, &sha, &name, c, overlay),
                    false,
                ),
                None => match verify_and_unpack(&dir, &sha, &name) {
                    Ok(()) => (Ok(()), false),
                    Err((e, refused)) => (Err(e), refused),
                },
            };
            let _ = tx.send_blocking(Unpacked {
                sha256: sha,
                result,
                refused,
            });
        });
    }

    /// Takes an unpack thread's outcome; call [`ArtifactCache::sync`] next to start its pods.
    pub fn finish(&mut self, u: Unpacked) {
        if let Some(hex) = u.sha256.strip_prefix("flat:") {
            let hex = hex.to_string();
            self.flattening.remove(&hex);
            match u.result {
                Ok(()) => {
                    self.attempts.remove(&hex);
                    tracing::info!(manifest = %hex, "image flattened");
                }
                Err(e) => self.fail(&hex, e),
            }
            return;
        }
        let Some(pull) = self.pulls.remove(&u.sha256) else {
            return;
        };
        if pull.layer.is_some() {
            match u.result {
                Ok(()) => {
                    self.attempts.remove(&u.sha256);
                    tracing::info!(image = %pull.name, layer = %u.sha256, "layer unpacked");
                }
                Err(e) => self.fail(&u.sha256, e),
            }
            return;
        }
        match u.result {
            Ok(()) => {
                tracing::info!(artifact = %pull.name, sha256 = %u.sha256, "artifact unpacked");
            }
            Err(e) if u.refused => {
                // Content-addressed: these bytes fail the same way every time. Wait the longest
                // delay at once (a new push has another sha256 and is pulled at once).
                self.attempts.insert(u.sha256.clone(), REFUSED_ATTEMPTS - 1);
                self.fail(
                    &u.sha256,
                    format!("{e}; this tarball cannot be unpacked: push a fixed one"),
                );
            }
            Err(e) => self.fail(&u.sha256, e),
        }
    }

    /// Retries failed pulls whose wait is over and removes unused trees; call on every tick.
    /// Returns whether a retry is due (call [`ArtifactCache::sync`]).
    pub fn tick(&mut self, desired: &Assignment) -> bool {
        // Failures of what no assigned pod wants any more are forgotten (else their retry
        // would be due forever, a resync at every tick).
        if !self.failed.is_empty() {
            let mut wanted = images::used_by(desired, self.arch);
            wanted.extend(
                desired
                    .pods
                    .iter()
                    .filter_map(|p| match need(p, desired, self.arch) {
                        Need::Variant { sha256, .. } => Some(sha256.to_string()),
                        _ => None,
                    }),
            );
            self.failed.retain(|k, _| wanted.contains(k));
            self.attempts.retain(|k, _| wanted.contains(k));
        }
        let retry = self
            .failed
            .values()
            .any(|(_, at, n)| at.elapsed() >= retry_delay(*n));
        if self
            .last_gc
            .is_none_or(|t| t.elapsed() >= Duration::from_secs(30))
        {
            self.last_gc = Some(Instant::now());
            self.gc(desired, Instant::now(), GC_GRACE);
            if self.images.is_some() {
                self.in_use = images::used_by(desired, self.arch);
                self.collect_images(false);
            }
        }
        retry
    }

    /// Where pod `p`'s image stands on this node.
    fn image_state(&self, p: &Pod, desired: &Assignment) -> ImageState {
        let reference = p.spec.image.as_deref().unwrap_or_default();
        let Some(settings) = &self.images else {
            return ImageState::Waiting(format!(
                "image {reference}: this node does not run images"
            ));
        };
        let (img, v) = match images::image_of(p, desired, self.arch) {
            None => return ImageState::Waiting(String::new()),
            Some(Err(m)) => return ImageState::Waiting(m),
            Some(Ok(x)) => x,
        };
        let mut run = PodToRun::new(p.clone());
        run.image = Some(PodImage {
            reference: reference.to_string(),
            config: v.config.clone(),
            overlay: None,
        });
        // A process that cannot be resolved (no command, no Entrypoint or Cmd) never will.
        for proc in &p.spec.processes {
            if let Err(e) = run.resolve_process(proc) {
                return ImageState::Failed(e);
            }
        }
        let done = |sha: &str| {
            if settings.overlay {
                settings.layers.join(sha).is_dir()
            } else {
                settings.layers.join(format!("{sha}.blob")).is_file()
            }
        };
        let missing: Vec<_> = v.layers.iter().filter(|l| !done(&l.sha256)).collect();
        if !missing.is_empty() {
            if let Some(m) = missing.iter().find_map(|l| self.still_failing(&l.sha256)) {
                return ImageState::Waiting(m);
            }
            let pulling: Vec<_> = missing
                .iter()
                .filter_map(|l| self.pulls.get(&l.sha256))
                .collect();
            if pulling.len() == missing.len() {
                if pulling.iter().any(|x| x.unpacking) {
                    return ImageState::Waiting(format!("unpacking image {reference}"));
                }
                let size: u64 = v.size();
                let held: u64 = v
                    .layers
                    .iter()
                    .map(|l| {
                        self.pulls
                            .get(&l.sha256)
                            .map_or(if done(&l.sha256) { l.size } else { 0 }, |x| x.held)
                    })
                    .sum();
                // In steps of 10%: each change is a status write on the master.
                let pct = (held * 10).checked_div(size).unwrap_or(10) * 10;
                return ImageState::Waiting(format!("pulling image {reference} ({pct}%)"));
            }
            return ImageState::Missing(
                missing
                    .iter()
                    .map(|l| (l.sha256.clone(), l.size, l.compression))
                    .collect(),
            );
        }
        let _ = img;
        if settings.overlay {
            if let Some(i) = run.image.as_mut() {
                i.overlay = Some((settings.layers.clone(), images::lowers(v)));
            }
            return ImageState::Ready(Box::new(run));
        }
        let hex = images::manifest_hex(v);
        let tree = settings.images.join(hex);
        if tree.is_dir() {
            run.rootfs = Some(tree.to_string_lossy().into_owned());
            return ImageState::Ready(Box::new(run));
        }
        if let Some(m) = self.still_failing(hex) {
            return ImageState::Waiting(m);
        }
        if self.flattening.contains(hex) {
            return ImageState::Waiting(format!("unpacking image {reference}"));
        }
        ImageState::Flatten(Box::new(v.clone()))
    }

    /// Starts flattening `v`'s layers into its tree (nodes without overlayfs).
    fn flatten(&mut self, p: &Pod, v: &bramble_wire::objects::ImageVariant) {
        let Some(settings) = self.images.clone() else {
            return;
        };
        let hex = images::manifest_hex(v).to_string();
        if self.flattening.contains(&hex) || self.backing_off(&hex) {
            return;
        }
        self.flattening.insert(hex.clone());
        let reference = p.spec.image.clone().unwrap_or_default();
        let v = v.clone();
        let tx = self.done_tx.clone();
        std::thread::spawn(move || {
            let result = images::flatten_image(&settings.layers, &settings.images, &reference, &v);
            let _ = tx.send_blocking(Unpacked {
                sha256: format!("flat:{hex}"),
                result,
                refused: false,
            });
        });
    }

    /// Image GC: when the state disk is over `--image-gc-high` (or `force`: a layer does not
    /// fit), removes layers and trees no assigned pod uses, least recently used first, until
    /// it is under `--image-gc-low`. Leftover `.unpacking`/`.tmp` directories of no running
    /// job go at once.
    fn collect_images(&mut self, force: bool) {
        let Some(settings) = self.images.clone() else {
            return;
        };
        let used = &self.in_use.clone();
        let now = SystemTime::now();
        for u in used {
            self.last_used.insert(u.clone(), now);
        }
        let mut busy: HashSet<String> = self.pulls.keys().cloned().collect();
        busy.extend(self.flattening.iter().cloned());
        for dir in [&settings.layers, &settings.images] {
            for (name, _) in images::list(dir) {
                let job = name
                    .strip_suffix(".unpacking")
                    .or_else(|| name.strip_suffix(".tmp"));
                if let Some(key) = job
                    && !busy.contains(key)
                {
                    let _ = images::remove_entry(dir, &name);
                }
            }
        }
        let usage = || crate::sys::layers::disk_usage(&settings.layers).ok();
        let Some(u) = usage() else { return };
        if !force && !images::gc_due(u.used_percent(), settings.gc_high) {
            return;
        }
        let mut entries: Vec<(PathBuf, String, SystemTime)> = Vec::new();
        for dir in [&settings.layers, &settings.images] {
            for (name, t) in images::list(dir) {
                entries.push((dir.clone(), name, t));
            }
        }
        let flat: Vec<(String, SystemTime)> =
            entries.iter().map(|(_, n, t)| (n.clone(), *t)).collect();
        let order = images::gc_candidates(&flat, used, &busy, &self.last_used);
        for name in order {
            if usage().is_some_and(|u| u.used_percent() < u64::from(settings.gc_low)) && !force {
                break;
            }
            let Some((dir, _, _)) = entries.iter().find(|(_, n, _)| *n == name) else {
                continue;
            };
            tracing::info!(entry = %dir.join(&name).display(), "image GC: removing an unused layer or tree");
            if let Err(e) = images::remove_entry(dir, &name) {
                tracing::warn!("image GC: removing {}: {e}", dir.join(&name).display());
            }
            if force && usage().is_some_and(|u| u.used_percent() < u64::from(settings.gc_low)) {
                break;
            }
        }
    }

    /// Removes trees and partial files that no assigned pod referred to for `grace`.
    pub fn gc(&mut self, desired: &Assignment, now: Instant, grace: Duration) {
        let referenced: HashSet<String> = desired
            .pods
            .iter()
            .filter_map(|p| match need(p, desired, self.arch) {
                Need::Variant { sha256, .. } => Some(sha256.to_string()),
                _ => None,
            })
            .collect();
        let Ok(rd) = fs::read_dir(&self.dir) else {
            return;
        };
        let entries: Vec<String> = rd
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        for name in gc_plan(
            &entries,
            &referenced,
            &mut self.unused_since,
            &self.pulls.keys().cloned().collect(),
            now,
            grace,
        ) {
            let p = self.dir.join(&name);
            tracing::info!(path = %p.display(), "removing unused artifact");
            let r = if p.is_dir() {
                fs::remove_dir_all(&p)
            } else {
                fs::remove_file(&p)
            };
            if let Err(e) = r {
                tracing::warn!("removing {}: {e}", p.display());
            }
        }
    }
}

/// The cache entries to remove now: trees (`<sha>`), partial files and temp dirs whose sha no
/// pod refers to and no pull uses, once they have been unused for `grace`. `unused_since`
/// remembers when each was first seen unused (and forgets the ones in use again).
pub fn gc_plan(
    entries: &[String],
    referenced: &HashSet<String>,
    unused_since: &mut HashMap<String, Instant>,
    pulling: &HashSet<String>,
    now: Instant,
    grace: Duration,
) -> Vec<String> {
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    for e in entries {
        let sha = e
            .strip_suffix(".partial")
            .or_else(|| e.strip_suffix(".tmp"))
            .unwrap_or(e);
        if !bramble_artifact::is_sha256_hex(sha) {
            continue;
        }
        if referenced.contains(sha) || pulling.contains(sha) {
            unused_since.remove(e);
            continue;
        }
        seen.insert(e.clone());
        let since = *unused_since.entry(e.clone()).or_insert(now);
        if now.saturating_duration_since(since) >= grace {
            out.push(e.clone());
        }
    }
    unused_since.retain(|k, _| seen.contains(k) && !out.contains(k));
    out
}

/// The thread's work: hash, unpack to `<sha>.tmp`, make the mount points the runtime needs,
/// rename to `<sha>`, drop the tarball.
fn verify_and_unpack(dir: &Path, sha256: &str, name: &str) -> Result<(), (String, bool)> {
    verify_and_unpack_inner(dir, sha256, name).map_err(|e| match e {
        Failure::Refused(e) => (e, true),
        Failure::Other(e) => (e, false),
    })
}

/// Why a verify-and-unpack failed.
enum Failure {
    /// The tarball was refused by the checker.
    Refused(String),
    /// Anything else (I/O, a damaged download).
    Other(String),
}

impl From<String> for Failure {
    fn from(e: String) -> Failure {
        Failure::Other(e)
    }
}

fn verify_and_unpack_inner(dir: &Path, sha256: &str, name: &str) -> Result<(), Failure> {
    let partial = dir.join(format!("{sha256}.partial"));
    let got = bramble_artifact::sha256_file(&partial)
        .map_err(|e| format!("artifact {name}: reading {}: {e}", partial.display()))?;
    if got != sha256 {
        let _ = fs::remove_file(&partial);
        return Err(format!(
            "artifact {name}: the pulled file's sha256 is {got}, not {sha256}; discarded"
        )
        .into());
    }
    let tmp = dir.join(format!("{sha256}.tmp"));
    if tmp.exists() {
        fs::remove_dir_all(&tmp).map_err(|e| format!("removing {}: {e}", tmp.display()))?;
    }
    fs::create_dir(&tmp).map_err(|e| format!("mkdir {}: {e}", tmp.display()))?;
    let f = fs::File::open(&partial).map_err(|e| format!("open {}: {e}", partial.display()))?;
    let unpacked = bramble_artifact::unpack(
        std::io::BufReader::new(f),
        &tmp,
        &bramble_artifact::Limits::default(),
    );
    if let Err(e) = unpacked {
        let _ = fs::remove_dir_all(&tmp);
        let _ = fs::remove_file(&partial);
        let refused = matches!(e, bramble_artifact::TarError::Entry { .. });
        let e = format!("artifact {name}: {e}");
        return Err(if refused {
            Failure::Refused(e)
        } else {
            Failure::Other(e)
        });
    }
    if let Err(e) = add_mount_points(&tmp, &format!("artifact {name}")) {
        let _ = fs::remove_dir_all(&tmp);
        return Err(Failure::Other(e));
    }
    let tree = dir.join(sha256);
    fs::rename(&tmp, &tree).map_err(|e| format!("rename to {}: {e}", tree.display()))?;
    if let Ok(d) = fs::File::open(dir) {
        let _ = d.sync_all();
    }
    let _ = fs::remove_file(&partial);
    Ok(())
}

/// Makes the mount points the runtime needs in a shared read-only root: real `/proc`, `/dev`
/// and `/tmp` directories, `/etc/hosts` and `/etc/resolv.conf` files. `what` names the root in
/// errors.
pub fn add_mount_points(tmp: &Path, what: &str) -> Result<(), String> {
    // The runtime mounts /proc, a /dev tmpfs and a /tmp tmpfs: they must be real directories.
    for d in bramble_artifact::MOUNT_DIRS {
        let p = tmp.join(d);
        match fs::symlink_metadata(&p) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                return Err(format!(
                    "{what}: /{d} is not a directory; a rootfs needs real /proc, /dev and /tmp directories"
                ));
            }
            Err(_) => {
                fs::create_dir(&p).map_err(|e| format!("mkdir {}: {e}", p.display()))?;
            }
        }
    }
    // The pod init bind-mounts the pod's hosts file (services by name) over /etc/hosts, and an
    // isolated pod's cluster DNS over /etc/resolv.conf: give them files to mount onto when the
    // artifact has none.
    for (file, contents) in [
        ("hosts", &b"127.0.0.1\tlocalhost\n"[..]),
        (
            "resolv.conf",
            &b"# the pod's resolvers are bound over this file\n"[..],
        ),
    ] {
        let path = tmp.join("etc").join(file);
        if fs::symlink_metadata(&path).is_err() {
            fs::create_dir_all(tmp.join("etc"))
                .and_then(|()| fs::write(&path, contents))
                .map_err(|e| format!("{what}: cannot create /etc/{file}: {e}"))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hexes(c: char) -> String {
        std::iter::repeat_n(c, 64).collect()
    }

    #[test]
    fn gc_waits_for_the_grace_and_spares_what_is_used() {
        let (a, b, c) = (hexes('a'), hexes('b'), hexes('c'));
        let entries = vec![
            a.clone(),
            format!("{b}.partial"),
            c.clone(),
            "not-ours".to_string(),
        ];
        let referenced: HashSet<String> = [a.clone()].into();
        let pulling: HashSet<String> = HashSet::new();
        let mut since = HashMap::new();
        let t0 = Instant::now();
        let g = Duration::from_secs(60);
        assert!(gc_plan(&entries, &referenced, &mut since, &pulling, t0, g).is_empty());
        let t1 = t0 + Duration::from_secs(30);
        assert!(gc_plan(&entries, &referenced, &mut since, &pulling, t1, g).is_empty());
        // c comes back into use before the grace ends: its clock restarts.
        let used_c: HashSet<String> = [a.clone(), c.clone()].into();
        assert!(gc_plan(&entries, &used_c, &mut since, &pulling, t1, g).is_empty());
        let t2 = t0 + Duration::from_secs(61);
        let mut gone = gc_plan(&entries, &referenced, &mut since, &pulling, t2, g);
        gone.sort();
        assert_eq!(gone, vec![format!("{b}.partial")]);
        let t3 = t2 + Duration::from_secs(60);
        assert_eq!(
            gc_plan(&entries, &referenced, &mut since, &pulling, t3, g),
            vec![c.clone()]
        );
        // A pull in progress is never collected.
        let pulling: HashSet<String> = [b.clone()].into();
        let mut since = HashMap::new();
        let later = t0 + Duration::from_secs(1000);
        gc_plan(&entries, &referenced, &mut since, &pulling, t0, g);
        assert!(
            !gc_plan(&entries, &referenced, &mut since, &pulling, later, g)
                .contains(&format!("{b}.partial"))
        );
    }

    #[test]
    fn verify_and_unpack_makes_a_tree_with_mount_points() {
        let dir = tempfile::tempdir().unwrap();
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(2);
        h.set_mode(0o755);
        h.set_cksum();
        b.append_data(&mut h, "bin/hi", &b"hi"[..]).unwrap();
        let tarball = b.into_inner().unwrap();
        let sha = bramble_artifact::sha256_hex(&tarball);
        fs::write(dir.path().join(format!("{sha}.partial")), &tarball).unwrap();
        verify_and_unpack(dir.path(), &sha, "t").unwrap();
        let tree = dir.path().join(&sha);
        assert_eq!(fs::read(tree.join("bin/hi")).unwrap(), b"hi");
        for d in ["proc", "dev", "tmp"] {
            assert!(tree.join(d).is_dir());
        }
        assert!(tree.join("etc/hosts").is_file());
        assert!(tree.join("etc/resolv.conf").is_file());
        assert!(!dir.path().join(format!("{sha}.partial")).exists());

        // A corrupted download is discarded with a message naming the artifact.
        fs::write(dir.path().join(format!("{}.partial", hexes('d'))), b"junk").unwrap();
        let (e, _) = verify_and_unpack(dir.path(), &hexes('d'), "busybox").unwrap_err();
        assert!(
            e.contains("artifact busybox: the pulled file's sha256"),
            "{e}"
        );
    }

    /// An image pod waits while its layer is pulled by sha256 and unpacked, then runs.
    #[test]
    fn an_image_pod_waits_for_its_layers_then_runs() {
        use bramble_wire::objects::{Image, ImageConfig, ImageLayer, ImageVariant, ProcessSpec};
        let state = tempfile::tempdir().unwrap();
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(2);
        h.set_mode(0o755);
        h.set_cksum();
        b.append_data(&mut h, "bin/x", &b"hi"[..]).unwrap();
        let blob = b.into_inner().unwrap();
        let sha = bramble_artifact::sha256_hex(&blob);
        let variant = |arch, cmd: Vec<String>| ImageVariant {
            arch,
            manifest_digest: format!("sha256:{}", hexes('9')),
            config_sha256: hexes('8'),
            config: ImageConfig {
                cmd,
                ..Default::default()
            },
            layers: vec![ImageLayer {
                sha256: sha.clone(),
                size: blob.len() as u64,
                compression: LayerCompression::None,
            }],
        };
        let image = |cmd: Vec<String>| Image {
            reference: "registry.test/app:1".into(),
            digest: format!("sha256:{}", hexes('7')),
            variants: vec![variant(Arch::X86_64, cmd)],
            ..Default::default()
        };
        let mut pod = Pod::default();
        pod.meta.name = "web".into();
        pod.meta.namespace = "default".into();
        pod.meta.uid = "u1".into();
        pod.spec.image = Some("registry.test/app:1".into());
        pod.spec.processes = vec![ProcessSpec {
            name: "main".into(),
            ..Default::default()
        }];
        let mut a = Assignment {
            pods: vec![pod.clone()],
            images: vec![image(vec![])],
            ..Default::default()
        };
        let settings = ImageSettings {
            layers: state.path().join("layers"),
            images: state.path().join("images"),
            overlay: true,
            gc_high: 85,
            gc_low: 80,
        };
        let mut cache = ArtifactCache::new(&state.path().join("artifacts"), Arch::X86_64)
            .with_images(settings.clone());
        let mut driver = super::super::fake::FakeDriver::new();
        // Neither Entrypoint nor Cmd, no command: the pod fails with the fix.
        cache.sync(&mut driver, &a, None, |r| r);
        let w = cache.waiting(&a);
        assert_eq!(w[0].status.phase, PodPhase::Failed, "{w:?}");
        assert!(w[0].status.message.contains("`command`"), "{w:?}");
        // An image with a Cmd: pulled, then run.
        a.images = vec![image(vec!["/bin/x".into()])];
        let (up, rx) = async_channel::unbounded();
        cache.sync(&mut driver, &a, Some(&up), |r| r);
        assert!(driver.state().started.is_empty());
        let w = cache.waiting(&a);
        assert_eq!(
            w[0].status.message,
            "pulling image registry.test/app:1 (0%)"
        );
        let Ok(NodeUp::ArtifactGet {
            request,
            sha256,
            offset,
            len,
        }) = rx.try_recv()
        else {
            panic!("no ArtifactGet");
        };
        assert_eq!((sha256.as_str(), offset), (sha.as_str(), 0));
        assert!(len as usize >= blob.len());
        assert!(cache.on_chunk(request, blob.clone(), None, Some(&up)));
        // Unpacking (unless the thread is already done: the layer's tree is there).
        let w = cache.waiting(&a);
        assert!(
            w.is_empty() || w[0].status.message == "unpacking image registry.test/app:1",
            "{w:?}"
        );
        let done = smol::block_on(cache.done().recv()).unwrap();
        assert!(done.result.is_ok(), "{:?}", done.result);
        cache.finish(done);
        cache.sync(&mut driver, &a, Some(&up), |r| r);
        assert_eq!(driver.state().started, vec!["default/web".to_string()]);
        assert!(cache.waiting(&a).is_empty());
        assert_eq!(
            fs::read(settings.layers.join(&sha).join("bin/x")).unwrap(),
            b"hi"
        );
        // A node of another arch says which variant is missing.
        let other = ArtifactCache::new(&state.path().join("a2"), Arch::Armv7).with_images(settings);
        let w = other.waiting(&a);
        assert!(
            w[0].status
                .message
                .contains("no linux/arm/v7 variant of image registry.test/app:1"),
            "{w:?}"
        );
    }

    #[test]
    fn retries_back_off() {
        assert_eq!(retry_delay(1), RETRY_AFTER);
        assert_eq!(retry_delay(2), RETRY_AFTER * 2);
        assert_eq!(retry_delay(30), RETRY_MAX);
        assert_eq!(retry_delay(REFUSED_ATTEMPTS), RETRY_MAX);
    }

    /// A tarball the checker refuses is reported as refused (its retry waits the longest delay);
    /// a damaged download is not.
    #[test]
    fn refused_tarballs_are_told_apart_from_damaged_downloads() {
        let dir = tempfile::tempdir().unwrap();
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_size(0);
        h.set_mode(0o777);
        b.append_link(&mut h, "l", "/tmp").unwrap();
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_size(1);
        h.set_mode(0o644);
        b.append_data(&mut h, "l/f", &b"x"[..]).unwrap();
        let bytes = b.into_inner().unwrap();
        let sha = bramble_artifact::sha256_hex(&bytes);
        fs::write(dir.path().join(format!("{sha}.partial")), &bytes).unwrap();
        let (e, refused) = verify_and_unpack(dir.path(), &sha, "bad").unwrap_err();
        assert!(refused, "{e}");
        assert!(
            e.contains("artifact bad") && e.contains("not a directory"),
            "{e}"
        );
        let other = hexes('d');
        fs::write(dir.path().join(format!("{other}.partial")), &bytes).unwrap();
        let (e, refused) = verify_and_unpack(dir.path(), &other, "bad").unwrap_err();
        assert!(!refused && e.contains("sha256"), "{e}");
    }

    /// A forced collection (a layer does not fit) removes unused layers, never used ones.
    #[test]
    fn image_gc_spares_layers_in_use() {
        let state = tempfile::tempdir().unwrap();
        let layers = state.path().join("layers");
        let (used, unused, stale) = (hexes('a'), hexes('b'), hexes('c'));
        for d in [&used, &unused] {
            fs::create_dir_all(layers.join(d).join("bin")).unwrap();
        }
        fs::create_dir_all(layers.join(format!("{stale}.unpacking"))).unwrap();
        let mut cache = ArtifactCache::new(&state.path().join("artifacts"), Arch::X86_64)
            .with_images(ImageSettings {
                layers: layers.clone(),
                images: state.path().join("images"),
                overlay: true,
                gc_high: 85,
                gc_low: 80,
            });
        cache.in_use = [used.clone()].into();
        cache.collect_images(true);
        assert!(layers.join(&used).is_dir());
        assert!(!layers.join(&unused).exists());
        assert!(!layers.join(format!("{stale}.unpacking")).exists());
    }
}
