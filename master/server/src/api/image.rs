//! Images on the master: pulls through the master, imports of uploaded blobs, removal, and the
//! background puller for pods whose image is not stored yet.
//!
//! - Blobs live in the artifact store (`DATA_DIR/artifacts/<sha256>`, [`bramble_image::BlobStore`]),
//!   shared and deduplicated with artifacts; an [`Image`] object (`meta.name` =
//!   [`ImageRef::object_name`], `reference` = the normalized reference) records which blobs make
//!   it. [`blobs_of`] is what an image keeps from the blob GC (`artifact::remove_unused_blobs`).
//! - `ImagePull` (client): [`pull_stream`] runs `bramble_image::registry::pull` on a blocking
//!   thread with the `[[registry]]` settings of the reference's host ([`settings_for`]) and
//!   streams `ImageProgress` frames, then the stored image. One pull per reference at a time.
//! - `BlobBegin` / `BlobChunk`: `artifact.rs`'s resumable upload without an artifact record; a
//!   finished blob is *pinned* (kept from the GC for an hour) until `ImageImport` ([`import`])
//!   resolves the uploaded index or manifest (`bramble_image::formats::resolve_stored`) and
//!   records the image. While a pull runs the GC removes nothing (its blobs are not recorded yet).
//! - `ImageRemove` and `bramble delete image NAME` ([`check_unused`]): refused while pods use the
//!   image (naming them); the unused blobs go afterwards.
//! - Background pulls ([`pull_loop`]): follows the cache (pods with an `image`, images,
//!   registries, secrets); every reference some live pod names that is not stored is pulled, one
//!   pull per reference at a time, with a per-reference backoff after a failure (10 s doubling to
//!   5 min, reset on success). The scheduler (`dispatch::schedule_once`) writes the waiting pods'
//!   message from [`Images::waiting_message`] ("pulling image REF", "image REF: error"), only
//!   when it changes; each failure is an event on every waiting pod.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use bramble_image::registry::{Progress, PullLimits, RegistrySettings};
use bramble_image::store::BlobStore;
use bramble_wire::image_ref::ImageRef;
use bramble_wire::msg::{ApiError, ErrorCode, Response, ResponseBody};
use bramble_wire::objects::{Image, Kind, Meta, Object, Pod, PodPhase, Registry, Secret};
use futures_lite::FutureExt;

use super::{Master, now_ms};
use crate::cache::Delta;
use crate::store::StoreError;

/// First wait after a failed pull of a reference.
pub(crate) const BACKOFF_FIRST: Duration = Duration::from_secs(10);
/// Longest wait between pulls of a reference.
pub(crate) const BACKOFF_MAX: Duration = Duration::from_secs(300);
/// How long an uploaded blob is kept without an image using it.
const PIN_FOR: Duration = Duration::from_secs(3600);

fn invalid(msg: impl Into<String>) -> ApiError {
    ApiError {
        code: ErrorCode::Invalid,
        message: msg.into(),
    }
}

/// The sha256 (hex) part of a `sha256:…` digest.
/// Every blob an image uses (what the GC keeps): the digest it resolved to, each variant's
/// manifest and config, and every layer.
pub(crate) fn blobs_of(i: &Image) -> Vec<String> {
    let mut out = bramble_image::formats::blobs_of(i);
    out.retain(|h| bramble_artifact::is_sha256_hex(h));
    out.sort_unstable();
    out
}

/// The normalized reference a pod's `image` names (as written when it does not parse, which
/// validation refuses).
pub(crate) fn pod_image(p: &Pod) -> Option<String> {
    let raw = p.spec.image.as_deref()?;
    Some(bramble_wire::image_ref::normalize(raw).unwrap_or_else(|| raw.to_string()))
}

// ---- pins and pulls in progress (per blob directory, so several masters in one test process
// keep apart) ----

static PINS: LazyLock<std::sync::Mutex<HashMap<PathBuf, HashMap<String, Instant>>>> =
    LazyLock::new(Default::default);
static PULLS: LazyLock<std::sync::Mutex<HashMap<PathBuf, usize>>> = LazyLock::new(Default::default);

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Keeps blob `sha256` in `dir` from the GC for [`PIN_FOR`] (an uploaded blob no image uses yet).
pub(crate) fn pin(dir: &Path, sha256: &str) {
    lock(&PINS)
        .entry(dir.to_path_buf())
        .or_default()
        .insert(sha256.to_string(), Instant::now() + PIN_FOR);
}

/// The pinned blobs of `dir` (expired pins dropped).
pub(crate) fn pinned(dir: &Path) -> Vec<String> {
    let mut pins = lock(&PINS);
    let Some(p) = pins.get_mut(dir) else {
        return Vec::new();
    };
    let now = Instant::now();
    p.retain(|_, until| *until > now);
    p.keys().cloned().collect()
}

fn unpin(dir: &Path, blobs: &[String]) {
    if let Some(p) = lock(&PINS).get_mut(dir) {
        for b in blobs {
            p.remove(b);
        }
    }
}

/// Whether a pull into `dir` is running (the GC then removes nothing).
pub(crate) fn pulls_active(dir: &Path) -> bool {
    lock(&PULLS).get(dir).is_some_and(|n| *n > 0)
}

struct PullGuard(PathBuf);

impl PullGuard {
    fn new(dir: PathBuf) -> PullGuard {
        *lock(&PULLS).entry(dir.clone()).or_default() += 1;
        PullGuard(dir)
    }
}

impl Drop for PullGuard {
    fn drop(&mut self) {
        if let Some(n) = lock(&PULLS).get_mut(&self.0) {
            *n = n.saturating_sub(1);
        }
    }
}

// ---- the master's image state ----

/// The background puller's state of one reference.
#[derive(Debug, Default, Clone)]
pub(crate) struct RefState {
    /// A pull is running.
    pub in_flight: bool,
    /// Failed pulls since the last success.
    pub failures: u32,
    /// Not before this.
    pub next_try: Option<Instant>,
    /// The last failure's message.
    pub last_error: Option<String>,
}

/// What the master keeps about images in memory.
#[derive(Debug)]
pub(crate) struct Images {
    refs: std::sync::Mutex<HashMap<String, RefState>>,
    locks: async_lock::Mutex<HashMap<String, Arc<async_lock::Mutex<()>>>>,
    wake: async_channel::Sender<()>,
    wake_rx: async_channel::Receiver<()>,
    /// Pulls started (both client and background), for tests and logs.
    pub attempts: std::sync::atomic::AtomicU64,
}

impl Default for Images {
    fn default() -> Self {
        let (wake, wake_rx) = async_channel::bounded(1);
        Images {
            refs: Default::default(),
            locks: Default::default(),
            wake,
            wake_rx,
            attempts: Default::default(),
        }
    }
}

impl Images {
    /// What a pod waiting for `reference` (normalized) shows, once the puller knows it.
    pub(crate) fn waiting_message(&self, reference: &str) -> Option<String> {
        let refs = lock(&self.refs);
        let s = refs.get(reference)?;
        Some(match &s.last_error {
            Some(e) => format!("image {reference}: {e}"),
            None => format!("pulling image {reference}"),
        })
    }

    async fn lock_for(&self, reference: &str) -> Arc<async_lock::Mutex<()>> {
        let mut l = self.locks.lock().await;
        // Drop the locks nobody holds (bounded by the references pulled at once).
        l.retain(|_, v| Arc::strong_count(v) > 1);
        l.entry(reference.to_string()).or_default().clone()
    }

    fn poke(&self) {
        let _ = self.wake.try_send(());
    }
}

/// The wait after `failures` failed pulls: 10 s doubling to 5 min.
pub(crate) fn backoff(failures: u32) -> Duration {
    let shift = failures.saturating_sub(1).min(16);
    BACKOFF_FIRST.saturating_mul(1 << shift).min(BACKOFF_MAX)
}

/// Parses a `credentials` reference: `NAME` (namespace `default`) or `NAMESPACE/NAME`.
pub(crate) fn secret_ref(s: &str) -> (String, String) {
    match s.split_once('/') {
        Some((ns, n)) => (ns.to_string(), n.to_string()),
        None => (super::client::DEFAULT_NAMESPACE.to_string(), s.to_string()),
    }
}

/// The settings a pull from `host` uses: the `[[registry]]` whose `spec.host` is `host` (the
/// first by name), with its credentials secret's `username` and `password`. No registry object:
/// anonymous HTTPS. `secret` looks a secret up by namespace and name.
pub(crate) fn settings_for(
    registries: &[Registry],
    secret: impl Fn(&str, &str) -> Option<Secret>,
    host: &str,
) -> Result<RegistrySettings, String> {
    let Some(r) = registries.iter().find(|r| r.spec.host == host) else {
        return Ok(RegistrySettings::default());
    };
    let mut s = RegistrySettings {
        insecure: r.spec.insecure,
        mirror: r.spec.mirror.clone(),
        ca_pem: r.spec.ca.clone(),
        ..Default::default()
    };
    if let Some(c) = &r.spec.credentials {
        let (ns, name) = secret_ref(c);
        let Some(sec) = secret(&ns, &name) else {
            return Err(format!(
                "registry {} ({host}) names credentials secret {ns}/{name}, which does not exist: create it with keys username and password (bramble create secret {name} -n {ns} --from-literal username=... --from-literal password=...) or remove credentials from the registry",
                r.meta.name
            ));
        };
        let get = |k: &str| -> Result<String, String> {
            let v = sec.data.get(k).ok_or_else(|| {
                format!(
                    "registry {} ({host}): secret {ns}/{name} has no key {k:?}: it needs keys username and password",
                    r.meta.name
                )
            })?;
            String::from_utf8(v.clone()).map_err(|_| {
                format!(
                    "registry {} ({host}): secret {ns}/{name}'s {k} is not UTF-8 text",
                    r.meta.name
                )
            })
        };
        s.username = Some(get("username")?);
        s.password = Some(get("password")?);
    }
    Ok(s)
}

fn parse(reference: &str) -> Result<ImageRef, ApiError> {
    ImageRef::parse(reference).map_err(|e| invalid(format!("image {reference:?}: {e}")))
}

/// Stores `img` as the image object of its reference (created, or updated keeping its identity)
/// and answers it as stored.
async fn record(m: &Master, mut img: Image, r: &ImageRef) -> Result<Image, ApiError> {
    let name = r.object_name();
    img.reference = r.normalized();
    img.pulled_ms = now_ms();
    for _ in 0..8 {
        let res = match super::get_opt(&m.store, Kind::Image, "", &name).await? {
            Some(Object::Image(cur)) => {
                if cur.reference != img.reference {
                    return Err(ApiError {
                        code: ErrorCode::Conflict,
                        message: format!(
                            "image {}: its object name {name} is taken by image {}; remove that one first",
                            img.reference, cur.reference
                        ),
                    });
                }
                img.meta = cur.meta.clone();
                m.store
                    .update(Object::Image(img.clone()), Some(cur.meta.revision))
                    .await
            }
            _ => {
                img.meta = Meta {
                    name: name.clone(),
                    ..Default::default()
                };
                m.store.create(Object::Image(img.clone())).await
            }
        };
        match res {
            Ok(_) => {
                // Pods waiting for this image may now fit somewhere.
                m.poke_scheduler();
                return match super::get_opt(&m.store, Kind::Image, "", &name).await? {
                    Some(Object::Image(i)) => Ok(i),
                    _ => Ok(img),
                };
            }
            Err(StoreError::Conflict { .. }) | Err(StoreError::AlreadyExists { .. }) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(ApiError {
        code: ErrorCode::Conflict,
        message: format!(
            "image {}: changed concurrently too often; try again",
            img.reference
        ),
    })
}

/// Pulls `r` (one pull per reference at a time) and records the image. Progress goes to
/// `progress` if given (dropped when the receiver lags).
async fn pull_and_store(
    m: &Master,
    r: &ImageRef,
    progress: Option<async_channel::Sender<Progress>>,
) -> Result<Image, ApiError> {
    let normalized = r.normalized();
    let l = m.images.lock_for(&normalized).await;
    let _one = l.lock().await;
    m.images
        .attempts
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    // Read your writes: `bramble apply -f registry.toml && bramble image pull REF` must see the
    // `[[registry]]` just applied (the cache follows the store's watch a moment behind; the
    // bench's pull right after the apply went to HTTPS for an `insecure` registry).
    m.cache.catch_up(&m.store).await;
    let registries = m.cache.list::<Registry>();
    let settings = settings_for(
        &registries,
        |ns, n| m.cache.get_typed::<Secret>(ns, n),
        &r.registry,
    )
    .map_err(|e| ApiError {
        code: ErrorCode::Invalid,
        message: e,
    })?;
    let dir = super::artifact::dir(m);
    let store = BlobStore::new(dir.clone());
    let limits = PullLimits {
        max_blob_bytes: m.cfg.max_artifact_bytes,
    };
    let guard = PullGuard::new(dir);
    let r2 = r.clone();
    tracing::info!(image = %normalized, "pulling image");
    let pulled = smol::unblock(move || {
        bramble_image::registry::pull(&r2, &settings, &store, &limits, &mut |p| {
            if let Some(tx) = &progress {
                let _ = tx.try_send(p);
            }
        })
    })
    .await;
    let res = match pulled {
        Ok(img) => record(m, img, r).await,
        Err(e) => Err(ApiError {
            code: ErrorCode::Unavailable,
            message: e.to_string(),
        }),
    };
    drop(guard);
    match &res {
        Ok(i) => {
            tracing::info!(image = %normalized, digest = %i.digest, variants = i.variants.len(), "image pulled");
            super::artifact::remove_unused_blobs(m).await;
        }
        Err(e) => tracing::warn!(image = %normalized, "pull failed: {}", e.message),
    }
    res
}

/// A task that is detached, not cancelled, when dropped.
struct DetachOnDrop<T>(Option<smol::Task<T>>);

impl<T> Drop for DetachOnDrop<T> {
    fn drop(&mut self) {
        if let Some(t) = self.0.take() {
            t.detach();
        }
    }
}

impl<T> std::fmt::Debug for DetachOnDrop<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DetachOnDrop")
    }
}

/// `ImagePull`: streams `ImageProgress` frames, then the stored image (or the error).
pub(crate) async fn pull_stream(
    m: Arc<Master>,
    id: u32,
    reference: String,
    tx: super::client::Outbox,
) {
    let r = match parse(&reference) {
        Ok(r) => r,
        Err(e) => {
            let _ = tx
                .send(Response {
                    id,
                    body: ResponseBody::Error(e),
                })
                .await;
            return;
        }
    };
    let (ptx, prx) = async_channel::bounded::<Progress>(64);
    let m2 = m.clone();
    // Its own task, detached if this stream is dropped: a client that goes away does not cancel
    // a pull half-way (the image is still recorded).
    let mut task = DetachOnDrop(Some(smol::spawn(async move {
        pull_and_store(&m2, &r, Some(ptx)).await
    })));
    let mut client_gone = false;
    while let Ok(p) = prx.recv().await {
        if client_gone {
            continue;
        }
        let body = ResponseBody::ImageProgress {
            message: p.message,
            done: p.done,
            total: p.total,
        };
        client_gone = tx.send(Response { id, body }).await.is_err();
    }
    let Some(t) = task.0.as_mut() else {
        return;
    };
    let res = t.await;
    task.0 = None;
    let body = match res {
        Ok(i) => {
            m.images.poke();
            ResponseBody::Object(Object::Image(i))
        }
        Err(e) => ResponseBody::Error(e),
    };
    let _ = tx.send(Response { id, body }).await;
}

/// `ImageImport`: records the image whose index or manifest blob `sha256` (and everything it
/// names) was uploaded with `BlobBegin` / `BlobChunk`.
pub(crate) async fn import(
    m: &Master,
    reference: String,
    sha256: String,
) -> Result<ResponseBody, ApiError> {
    let r = parse(&reference)?;
    let normalized = r.normalized();
    if !bramble_artifact::is_sha256_hex(&sha256) {
        return Err(invalid(format!(
            "image {normalized}: {sha256:?} is not a sha256 (64 lowercase hex characters)"
        )));
    }
    let l = m.images.lock_for(&normalized).await;
    let _one = l.lock().await;
    let dir = super::artifact::dir(m);
    let store = BlobStore::new(dir.clone());
    let (r2, sha) = (r.clone(), sha256.clone());
    let resolved =
        smol::unblock(move || bramble_image::formats::resolve_stored(&r2, &sha, &store)).await;
    let img = resolved.map_err(|e| {
        invalid(format!(
            "image {normalized}: {e}; upload the image again (bramble image import resumes)"
        ))
    })?;
    let stored = {
        let _g = super::artifact::BLOBS.lock().await;
        record(m, img, &r).await?
    };
    unpin(&dir, &blobs_of(&stored));
    // A re-import that moved the reference leaves the old content unused.
    super::artifact::remove_unused_blobs(m).await;
    m.images.poke();
    tracing::info!(image = %normalized, digest = %stored.digest, variants = stored.variants.len(), "image imported");
    Ok(ResponseBody::Object(Object::Image(stored)))
}

/// Refuses to remove `image` while pods use it (naming them).
async fn refuse_if_used(m: &Master, image: &Image) -> Result<(), ApiError> {
    let (_, pods) = m.store.list(Kind::Pod, None).await?;
    let users: Vec<String> = pods
        .iter()
        .filter_map(|o| match o {
            Object::Pod(p) if pod_image(p).as_deref() == Some(image.reference.as_str()) => {
                Some(format!("{}/{}", p.meta.namespace, p.meta.name))
            }
            _ => None,
        })
        .collect();
    if users.is_empty() {
        return Ok(());
    }
    let shown: Vec<&str> = users.iter().take(5).map(String::as_str).collect();
    Err(invalid(format!(
        "image {} is used by {} pod(s) ({}{}): delete them first",
        image.reference,
        users.len(),
        shown.join(", "),
        if users.len() > 5 { ", ..." } else { "" }
    )))
}

/// For `bramble delete image NAME`: refused while pods use the image of that object name.
pub(crate) async fn check_unused(m: &Master, name: &str) -> Result<(), ApiError> {
    match super::get_opt(&m.store, Kind::Image, "", name).await? {
        Some(Object::Image(i)) => refuse_if_used(m, &i).await,
        _ => Ok(()),
    }
}

/// `ImageRemove`: deletes the image of `reference` unless pods use it, then its unused blobs.
pub(crate) async fn remove(m: &Master, reference: String) -> Result<ResponseBody, ApiError> {
    let r = parse(&reference)?;
    let normalized = r.normalized();
    let name = r.object_name();
    let l = m.images.lock_for(&normalized).await;
    let _one = l.lock().await;
    let Some(Object::Image(img)) = super::get_opt(&m.store, Kind::Image, "", &name).await? else {
        return Err(ApiError {
            code: ErrorCode::NotFound,
            message: format!("image {normalized} not found; list them with `bramble get images`"),
        });
    };
    refuse_if_used(m, &img).await?;
    let revision = match m
        .store
        .delete(Kind::Image, "", &name, Some(img.meta.revision))
        .await
    {
        Ok(r) => r,
        Err(StoreError::NotFound { .. }) => {
            return Err(ApiError {
                code: ErrorCode::NotFound,
                message: format!("image {normalized} not found"),
            });
        }
        Err(e) => return Err(e.into()),
    };
    super::artifact::remove_unused_blobs(m).await;
    tracing::info!(image = %normalized, "image removed");
    Ok(ResponseBody::Deleted { revision })
}

/// The images `pods` use (for their node's assignment), sorted by reference: one cache lookup
/// per reference.
pub(crate) fn used_by(m: &Master, pods: &[Pod]) -> Vec<Image> {
    let mut refs: Vec<String> = pods
        .iter()
        .filter_map(|p| p.spec.image.as_deref())
        .filter_map(|s| ImageRef::parse(s).ok())
        .map(|r| r.normalized())
        .collect();
    refs.sort_unstable();
    refs.dedup();
    refs.into_iter()
        .filter_map(|n| {
            let r = ImageRef::parse(&n).ok()?;
            m.cache
                .get_typed::<Image>("", &r.object_name())
                .filter(|i| i.reference == n)
        })
        .collect()
}

/// A hash of the images, so a node is pushed its set again when one changes.
pub(crate) fn hash(images: &[Image]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for i in images {
        i.meta.name.hash(&mut h);
        i.meta.uid.hash(&mut h);
        i.meta.revision.hash(&mut h);
        i.digest.hash(&mut h);
    }
    h.finish()
}

/// The references live pods name that no stored image has (normalized, with the parsed form).
pub(crate) fn missing(pods: &[Pod], images: &[Image]) -> BTreeMap<String, ImageRef> {
    let stored: HashSet<&str> = images.iter().map(|i| i.reference.as_str()).collect();
    let mut out = BTreeMap::new();
    for p in pods {
        if matches!(p.status.phase, PodPhase::Succeeded | PodPhase::Failed) {
            continue;
        }
        let Some(Ok(r)) = p.spec.image.as_deref().map(ImageRef::parse) else {
            continue;
        };
        let n = r.normalized();
        if !stored.contains(n.as_str()) {
            out.insert(n, r);
        }
    }
    out
}

/// Whether a change is of a registry, or of a secret some registry names as its credentials.
fn settings_changed(m: &Master, c: &crate::cache::Change) -> bool {
    match c.kind {
        Kind::Registry => true,
        Kind::Secret => {
            let Some(o) = c.new.as_deref().or(c.old.as_deref()) else {
                return false;
            };
            let key = (o.meta().namespace.clone(), o.meta().name.clone());
            m.cache
                .list::<Registry>()
                .iter()
                .filter_map(|r| r.spec.credentials.as_deref())
                .any(|cred| secret_ref(cred) == key)
        }
        _ => false,
    }
}

/// Whether a cache change concerns the puller.
fn relevant(c: &crate::cache::Change) -> bool {
    match c.kind {
        Kind::Image | Kind::Registry => true,
        Kind::Pod => {
            // A pod with an image created, deleted, or changing phase (finished pods want none);
            // its message changing (the scheduler's) is not a reason to look.
            let (old, new) = c.pods();
            let has = |p: Option<&Pod>| p.is_some_and(|p| p.spec.image.is_some());
            if !has(old) && !has(new) {
                return false;
            }
            match (old, new) {
                (Some(o), Some(n)) => {
                    o.spec.image != n.spec.image || o.status.phase != n.status.phase
                }
                _ => true,
            }
        }
        _ => false,
    }
}

/// Pulls the images of pods whose image is not stored, with backoff per reference.
pub(crate) async fn pull_loop(m: Arc<Master>) {
    let mut changes = m.cache.subscribe();
    let wake = m.images.wake_rx.clone();
    let mut next: Option<Instant> = None;
    loop {
        let deadline = next.unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
        let run = async {
            match changes.next().await {
                Delta::Resync => true,
                Delta::Changes(c) => {
                    let reset = c.iter().any(|c| settings_changed(&m, c));
                    if reset {
                        // A registry or its credentials changed: failing references pull now.
                        for s in lock(&m.images.refs).values_mut() {
                            s.next_try = None;
                        }
                    }
                    reset || c.iter().any(relevant)
                }
            }
        }
        .or(async {
            let _ = wake.recv().await;
            true
        })
        .or(async {
            smol::Timer::at(deadline).await;
            true
        })
        .await;
        if !run || !m.cache.synced() {
            continue;
        }
        next = pass(&m);
    }
}

/// One pass of the puller: starts the pulls that are due; answers when the next one is.
fn pass(m: &Arc<Master>) -> Option<Instant> {
    let pods = m.cache.list::<Pod>();
    let images = m.cache.list::<Image>();
    let wanted = missing(&pods, &images);
    let now = Instant::now();
    let mut refs = lock(&m.images.refs);
    refs.retain(|r, s| s.in_flight || wanted.contains_key(r));
    let mut next: Option<Instant> = None;
    for (n, r) in wanted {
        let s = refs.entry(n.clone()).or_default();
        if s.in_flight {
            continue;
        }
        if let Some(t) = s.next_try
            && t > now
        {
            next = Some(next.map_or(t, |x| x.min(t)));
            continue;
        }
        s.in_flight = true;
        let m = m.clone();
        smol::spawn(async move { pull_one(m, n, r).await }).detach();
    }
    next
}

async fn pull_one(m: Arc<Master>, normalized: String, r: ImageRef) {
    m.poke_scheduler(); // "pulling image REF"
    let res = pull_and_store(&m, &r, None).await;
    let failed = {
        let mut refs = lock(&m.images.refs);
        match res {
            Ok(_) => {
                refs.remove(&normalized);
                None
            }
            Err(e) => {
                let s = refs.entry(normalized.clone()).or_default();
                s.in_flight = false;
                s.failures += 1;
                let wait = backoff(s.failures);
                s.next_try = Some(Instant::now() + wait);
                s.last_error = Some(e.message.clone());
                Some((e.message, wait))
            }
        }
    };
    if let Some((e, wait)) = failed {
        // An event on every pod waiting for it.
        let pods = m.cache.list::<Pod>();
        for p in pods.iter().filter(|p| {
            !matches!(p.status.phase, PodPhase::Succeeded | PodPhase::Failed)
                && pod_image(p).as_deref() == Some(normalized.as_str())
        }) {
            m.events
                .record(
                    Kind::Pod,
                    &p.meta.namespace,
                    &p.meta.name,
                    &p.meta.uid,
                    "FailedPull",
                    &format!("image {normalized}: {e} (retrying in {} s)", wait.as_secs()),
                )
                .await;
        }
    }
    m.poke_scheduler();
    m.images.poke();
}

#[cfg(test)]
mod tests {
    use super::*;
    use bramble_wire::Arch;
    use bramble_wire::objects::{ImageLayer, ImageVariant, LayerCompression, RegistrySpec};

    fn sha(c: char) -> String {
        std::iter::repeat_n(c, 64).collect()
    }

    pub(crate) fn image(reference: &str) -> Image {
        let layer = |c| ImageLayer {
            sha256: sha(c),
            size: 10,
            compression: LayerCompression::Gzip,
        };
        Image {
            reference: reference.into(),
            digest: format!("sha256:{}", sha('1')),
            variants: vec![
                ImageVariant {
                    arch: Arch::Aarch64,
                    manifest_digest: format!("sha256:{}", sha('2')),
                    config_sha256: sha('3'),
                    config: Default::default(),
                    layers: vec![layer('a'), layer('b')],
                },
                ImageVariant {
                    arch: Arch::X86_64,
                    manifest_digest: format!("sha256:{}", sha('4')),
                    config_sha256: sha('5'),
                    config: Default::default(),
                    layers: vec![layer('a'), layer('c')],
                },
            ],
            ..Default::default()
        }
    }

    #[test]
    fn an_image_keeps_its_index_manifests_configs_and_layers() {
        let b = blobs_of(&image("docker.io/library/x:1"));
        let mut want: Vec<String> = "12345abc".chars().map(sha).collect();
        want.sort();
        assert_eq!(b, want);
        // A malformed digest keeps nothing (and does not panic).
        let mut i = image("x");
        i.digest = "md5:zz".into();
        assert!(!blobs_of(&i).contains(&sha('1')));
    }

    #[test]
    fn backoff_doubles_to_five_minutes() {
        let s: Vec<u64> = (1..=8).map(|f| backoff(f).as_secs()).collect();
        assert_eq!(s, [10, 20, 40, 80, 160, 300, 300, 300]);
        assert_eq!(backoff(u32::MAX).as_secs(), 300);
    }

    #[test]
    fn registry_settings() {
        let reg = |host: &str, cred: Option<&str>| Registry {
            meta: Meta {
                name: "lan".into(),
                ..Default::default()
            },
            spec: RegistrySpec {
                host: host.into(),
                insecure: true,
                credentials: cred.map(str::to_string),
                mirror: Some("mirror.lan".into()),
                ca: None,
            },
        };
        let secret = |ns: &str, n: &str| -> Option<Secret> {
            (ns == "infra" && n == "cred").then(|| Secret {
                meta: Meta::default(),
                data: [
                    ("username".to_string(), b"u".to_vec()),
                    ("password".to_string(), b"p".to_vec()),
                ]
                .into(),
            })
        };
        // No registry object: defaults.
        let s = settings_for(&[], secret, "docker.io").unwrap();
        assert!(!s.insecure && s.username.is_none());
        // Matched by host.
        let regs = [reg("registry.lan:5000", Some("infra/cred"))];
        let s = settings_for(&regs, secret, "registry.lan:5000").unwrap();
        assert!(s.insecure);
        assert_eq!(s.username.as_deref(), Some("u"));
        assert_eq!(s.password.as_deref(), Some("p"));
        assert_eq!(s.mirror.as_deref(), Some("mirror.lan"));
        assert!(
            !settings_for(&regs, secret, "registry.lan")
                .unwrap()
                .insecure
        );
        // A missing secret says which and how to fix it.
        let regs = [reg("registry.lan:5000", Some("cred"))];
        let e = settings_for(&regs, secret, "registry.lan:5000").unwrap_err();
        assert!(
            e.contains("default/cred") && e.contains("username and password"),
            "{e}"
        );
    }

    #[test]
    fn missing_references() {
        let pod = |name: &str, image: Option<&str>, phase: PodPhase| {
            let mut p = Pod::default();
            p.meta.name = name.into();
            p.spec.image = image.map(str::to_string);
            p.status.phase = phase;
            p
        };
        let pods = [
            pod("a", Some("alpine:3.20"), PodPhase::Pending),
            pod(
                "b",
                Some("docker.io/library/alpine:3.20"),
                PodPhase::Pending,
            ),
            pod("c", Some("registry.lan:5000/app"), PodPhase::Running),
            pod("d", Some("registry.lan:5000/old"), PodPhase::Succeeded),
            pod("e", None, PodPhase::Pending),
        ];
        let m = missing(&pods, &[image("registry.lan:5000/app:latest")]);
        let keys: Vec<&str> = m.keys().map(String::as_str).collect();
        assert_eq!(keys, ["docker.io/library/alpine:3.20"]);
    }
}
