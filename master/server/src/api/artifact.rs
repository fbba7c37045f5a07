//! Artifact storage on the master: content-addressed tarballs under `DATA_DIR/artifacts/<sha256>`.
//!
//! - Upload (client): `ArtifactBegin` answers the bytes already held (`<sha256>.partial`'s
//!   length), so a re-run resumes; each `ArtifactChunk` must start where the held bytes end. The
//!   chunk that completes the file ends the upload: sha256 compared with the announced one, the
//!   tarball checked with the worker's safe-tar rules (a `../` entry is refused at push, naming
//!   the entry), fsync, rename to `<sha256>`, fsync the directory, and the variant recorded in
//!   the `Artifact` object. Any failure discards the partial file.
//! - Download (workers): `ArtifactGet` reads at most [`bramble_artifact::CHUNK`] bytes.
//! - Bare blobs (`BlobBegin` / `BlobChunk`, an image import): the same resumable upload, sha256
//!   verified, no tar check and no artifact recorded; the blob is pinned until the
//!   `ImageImport` that follows records the image that uses it (`api/image.rs`).
//! - Delete: `bramble delete artifact NAME` removes the object; [`remove_unused_blobs`] then
//!   removes the blobs no artifact and no image refers to.

use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock};

use bramble_artifact::{CHUNK, Limits, Sha256, is_sha256_hex};
use bramble_wire::Arch;
use bramble_wire::msg::{ApiError, ErrorCode, NodeDown, ResponseBody};
use bramble_wire::objects::{Artifact, ArtifactVariant, Kind, Meta, Object};

use super::{Master, now_ms};
use crate::store::StoreError;

/// Default largest artifact tarball (`bramble master --max-artifact-size`).
pub const DEFAULT_MAX_ARTIFACT_BYTES: u64 = 1 << 30;

/// What an upload is for.
#[derive(Debug, Clone)]
enum Purpose {
    /// An artifact's variant (`ArtifactBegin`): tar-checked and recorded when complete.
    Artifact { name: String, arch: Arch },
    /// A bare content-addressed blob (`BlobBegin`: an image import's manifest, config or layer):
    /// only its sha256 is verified; the `ImageImport` that follows records what uses it.
    Blob { sha256: String },
}

impl Purpose {
    /// For messages: `artifact NAME` or `blob SHA256`.
    fn what(&self) -> String {
        match self {
            Purpose::Artifact { name, .. } => format!("artifact {name}"),
            Purpose::Blob { sha256 } => format!("blob {sha256}"),
        }
    }
}

/// An upload in progress: the open partial file and the hash of what it holds.
struct Upload {
    purpose: Purpose,
    size: u64,
    held: u64,
    file: std::fs::File,
    hash: Sha256,
}

/// Uploads in progress, by partial file path (unique per data dir and sha256).
type Uploads = HashMap<PathBuf, Arc<async_lock::Mutex<Option<Upload>>>>;
static UPLOADS: LazyLock<async_lock::Mutex<Uploads>> =
    LazyLock::new(|| async_lock::Mutex::new(HashMap::new()));
/// Held from a blob's rename until its variant (or pin) is recorded, and while unused blobs are
/// removed, so a blob is never removed between the two.
pub(crate) static BLOBS: async_lock::Mutex<()> = async_lock::Mutex::new(());

fn invalid(msg: impl Into<String>) -> ApiError {
    ApiError {
        code: ErrorCode::Invalid,
        message: msg.into(),
    }
}

fn internal(msg: impl Into<String>) -> ApiError {
    ApiError {
        code: ErrorCode::Internal,
        message: msg.into(),
    }
}

/// `DATA_DIR/artifacts`.
pub(crate) fn dir(m: &Master) -> PathBuf {
    m.cfg.data_dir.join("artifacts")
}

async fn slot(partial: &Path) -> Arc<async_lock::Mutex<Option<Upload>>> {
    UPLOADS
        .lock()
        .await
        .entry(partial.to_path_buf())
        .or_default()
        .clone()
}

async fn forget(partial: &Path) {
    UPLOADS.lock().await.remove(partial);
}

/// `ArtifactBegin`: checks the announcement and answers the bytes held.
pub(crate) async fn begin(
    m: &Master,
    name: String,
    arch: Arch,
    sha256: String,
    size: u64,
) -> Result<ResponseBody, ApiError> {
    crate::validate::check_name("artifact name", &name).map_err(|e| invalid(e.to_string()))?;
    if arch == Arch::Mcu {
        return Err(invalid(format!(
            "artifact {name}: microcontrollers run no pods; use aarch64, armv7, armv6, x86_64 or riscv64"
        )));
    }
    begin_upload(m, Purpose::Artifact { name, arch }, sha256, size).await
}

/// `BlobBegin`: the same resumable upload as an artifact's, for a bare blob (image import).
pub(crate) async fn blob_begin(
    m: &Master,
    sha256: String,
    size: u64,
) -> Result<ResponseBody, ApiError> {
    let purpose = Purpose::Blob {
        sha256: sha256.clone(),
    };
    begin_upload(m, purpose, sha256, size).await
}

async fn begin_upload(
    m: &Master,
    purpose: Purpose,
    sha256: String,
    size: u64,
) -> Result<ResponseBody, ApiError> {
    let what = purpose.what();
    if !is_sha256_hex(&sha256) {
        let what = match &purpose {
            Purpose::Artifact { name, .. } => format!("artifact {name}"),
            Purpose::Blob { .. } => "blob".to_string(),
        };
        return Err(invalid(format!(
            "{what}: {sha256:?} is not a sha256 (64 lowercase hex characters)"
        )));
    }
    let max = m.cfg.max_artifact_bytes;
    if size > max {
        return Err(invalid(format!(
            "{what}: {size} bytes is over the master's {max}-byte limit (bramble master --max-artifact-size)"
        )));
    }
    let dir = dir(m);
    std::fs::create_dir_all(&dir)
        .map_err(|e| internal(format!("cannot create {}: {e}", dir.display())))?;
    let done = dir.join(&sha256);
    if std::fs::metadata(&done).is_ok_and(|md| md.len() == size) {
        // Already held (another name, architecture or image, or a finished re-run).
        let g = BLOBS.lock().await;
        let r = match &purpose {
            Purpose::Artifact { name, arch } => record(m, name, *arch, &sha256, size).await,
            Purpose::Blob { .. } => {
                super::image::pin(&dir, &sha256);
                Ok(())
            }
        };
        drop(g);
        r?;
        if matches!(purpose, Purpose::Artifact { .. }) {
            remove_unused_blobs(m).await;
        }
        return Ok(ResponseBody::ArtifactProgress { offset: size });
    }
    let partial = dir.join(format!("{sha256}.partial"));
    let slot = slot(&partial).await;
    let mut up = slot.lock().await;
    if let Some(u) = up.as_mut()
        && u.size == size
    {
        u.purpose = purpose;
        return Ok(ResponseBody::ArtifactProgress { offset: u.held });
    }
    // Open (or reopen after a restart) the partial file and hash what it holds.
    let p = partial.clone();
    let opened = smol::unblock(move || -> std::io::Result<(std::fs::File, u64, Sha256)> {
        let mut f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&p)?;
        let mut len = f.metadata()?.len();
        if len > size {
            f.set_len(0)?;
            len = 0;
        }
        let mut hash = Sha256::new();
        let mut buf = vec![0u8; 64 * 1024];
        let mut left = len;
        f.seek(SeekFrom::Start(0))?;
        while left > 0 {
            let n = f.read(&mut buf[..left.min(64 * 1024) as usize])?;
            if n == 0 {
                break;
            }
            hash.update(&buf[..n]);
            left -= n as u64;
        }
        f.seek(SeekFrom::Start(len))?;
        Ok((f, len, hash))
    })
    .await;
    let (file, held, hash) =
        opened.map_err(|e| internal(format!("cannot open {}: {e}", partial.display())))?;
    *up = Some(Upload {
        purpose,
        size,
        held,
        file,
        hash,
    });
    Ok(ResponseBody::ArtifactProgress { offset: held })
}

/// `ArtifactChunk` and `BlobChunk`: appends at `offset`; the last chunk verifies (and for an
/// artifact checks the tarball and records the variant).
pub(crate) async fn chunk(
    m: &Master,
    sha256: String,
    offset: u64,
    data: Vec<u8>,
) -> Result<ResponseBody, ApiError> {
    if !is_sha256_hex(&sha256) {
        return Err(invalid(format!("{sha256:?} is not a sha256")));
    }
    if data.len() > CHUNK {
        return Err(invalid(format!(
            "a chunk holds at most {CHUNK} bytes, got {}",
            data.len()
        )));
    }
    let dir = dir(m);
    let partial = dir.join(format!("{sha256}.partial"));
    let slot = slot(&partial).await;
    let mut guard = slot.lock().await;
    let Some(up) = guard.as_mut() else {
        drop(guard);
        forget(&partial).await;
        if std::fs::metadata(dir.join(&sha256)).is_ok() {
            return Err(invalid(format!(
                "upload {sha256} is already complete: run the push or import again to record it"
            )));
        }
        return Err(invalid(format!(
            "no upload of {sha256} in progress: send ArtifactBegin or BlobBegin first (bramble artifact push and bramble image import resume)"
        )));
    };
    if offset != up.held {
        return Err(invalid(format!(
            "{}: chunk at offset {offset}, but the master holds {} bytes: resume from there",
            up.purpose.what(),
            up.held
        )));
    }
    if offset + data.len() as u64 > up.size {
        return Err(invalid(format!(
            "{}: the chunk at {offset} goes past the announced size {}",
            up.purpose.what(),
            up.size
        )));
    }
    if let Err(e) = up.file.write_all(&data) {
        return Err(internal(format!("writing {}: {e}", partial.display())));
    }
    up.hash.update(&data);
    up.held += data.len() as u64;
    if up.held < up.size {
        return Ok(ResponseBody::ArtifactProgress { offset: up.held });
    }
    // Complete: verify, check, make durable, record. Whatever happens, this upload is over.
    let up = guard.take().expect("checked above");
    drop(guard);
    forget(&partial).await;
    let Upload {
        purpose,
        size,
        file,
        hash,
        ..
    } = up;
    let what = purpose.what();
    let got = hash.finish_hex();
    if got != sha256 {
        let _ = std::fs::remove_file(&partial);
        return Err(invalid(format!(
            "{what}: the uploaded file's sha256 is {got}, not {sha256} as announced; it was discarded: push the file again"
        )));
    }
    // The workers' limits, exactly: what passes here unpacks on every node.
    let limits = Limits::default();
    let tar_check = matches!(purpose, Purpose::Artifact { .. });
    let p = partial.clone();
    let final_path = dir.join(&sha256);
    let fp = final_path.clone();
    let d = dir.clone();
    let blobs = BLOBS.lock().await;
    let checked = smol::unblock(move || -> Result<(), String> {
        file.sync_all().map_err(|e| format!("fsync: {e}"))?;
        drop(file);
        if tar_check {
            let f = std::fs::File::open(&p).map_err(|e| format!("open: {e}"))?;
            if let Err(e) = bramble_artifact::check(std::io::BufReader::new(f), &limits) {
                let _ = std::fs::remove_file(&p);
                return Err(format!("refused: {e}"));
            }
        }
        std::fs::rename(&p, &fp).map_err(|e| format!("rename: {e}"))?;
        std::fs::File::open(&d)
            .and_then(|f| f.sync_all())
            .map_err(|e| format!("fsync dir: {e}"))?;
        Ok(())
    })
    .await;
    if let Err(e) = checked {
        let _ = std::fs::remove_file(&partial);
        return Err(invalid(format!("{what}: {e}")));
    }
    match purpose {
        Purpose::Artifact { name, arch } => {
            let r = record(m, &name, arch, &sha256, size).await;
            drop(blobs);
            r?;
            remove_unused_blobs(m).await;
            tracing::info!(artifact = %name, arch = arch.as_str(), %sha256, size, "artifact variant stored");
        }
        Purpose::Blob { .. } => {
            // Kept until the import that uses it records its image (or the pin expires).
            super::image::pin(&dir, &sha256);
            drop(blobs);
            tracing::debug!(%sha256, size, "blob stored");
        }
    }
    Ok(ResponseBody::ArtifactProgress { offset: size })
}

/// Records `sha256` as `name`'s variant for `arch` (replacing an older one). Call with
/// [`BLOBS`] held.
async fn record(
    m: &Master,
    name: &str,
    arch: Arch,
    sha256: &str,
    size: u64,
) -> Result<(), ApiError> {
    for _ in 0..8 {
        let current = super::get_opt(&m.store, Kind::Artifact, "", name).await?;
        let (mut a, rev) = match current {
            Some(Object::Artifact(a)) => {
                let rev = a.meta.revision;
                (a, Some(rev))
            }
            _ => (
                Artifact {
                    meta: Meta {
                        name: name.to_string(),
                        ..Default::default()
                    },
                    variants: Vec::new(),
                },
                None,
            ),
        };
        if a.variant(arch).is_some_and(|v| v.sha256 == sha256) {
            return Ok(());
        }
        a.variants.retain(|v| v.arch != arch);
        a.variants.push(ArtifactVariant {
            arch,
            sha256: sha256.to_string(),
            size,
            uploaded_ms: now_ms(),
        });
        a.variants.sort_by_key(|v| v.arch);
        let res = match rev {
            Some(r) => m.store.update(Object::Artifact(a), Some(r)).await,
            None => m.store.create(Object::Artifact(a)).await,
        };
        match res {
            Ok(_) => {
                // Pods waiting for this artifact may now fit somewhere.
                m.poke_scheduler();
                return Ok(());
            }
            Err(StoreError::Conflict { .. }) | Err(StoreError::AlreadyExists { .. }) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(ApiError {
        code: ErrorCode::Conflict,
        message: format!("artifact {name}: changed concurrently too often; push again"),
    })
}

/// Removes the blobs that neither an artifact nor an image uses (an image keeps its index or
/// manifest, every variant's manifest and config, and its layers: [`super::image::blobs_of`]).
/// Blobs pinned by a recent blob upload (an import not recorded yet) stay; while a pull runs into
/// the store nothing is removed (its blobs are not recorded yet either).
pub(crate) async fn remove_unused_blobs(m: &Master) {
    let _g = BLOBS.lock().await;
    let dir = dir(m);
    if super::image::pulls_active(&dir) {
        return;
    }
    let Ok((_, artifacts)) = m.store.list(Kind::Artifact, None).await else {
        return;
    };
    let Ok((_, images)) = m.store.list(Kind::Image, None).await else {
        return;
    };
    let mut used: std::collections::HashSet<String> = artifacts
        .iter()
        .filter_map(|o| match o {
            Object::Artifact(a) => Some(a.variants.iter().map(|v| v.sha256.clone())),
            _ => None,
        })
        .flatten()
        .collect();
    for o in &images {
        if let Object::Image(i) = o {
            used.extend(super::image::blobs_of(i));
        }
    }
    used.extend(super::image::pinned(&dir));
    let Ok(rd) = std::fs::read_dir(&dir) else {
        return;
    };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if is_sha256_hex(&name) && !used.contains(&name) {
            tracing::info!(blob = %name, "removing unused blob");
            forget_open(&name);
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// Serves a worker's `ArtifactGet`.
pub(crate) async fn get(
    m: &Master,
    request: u32,
    sha256: String,
    offset: u64,
    len: u32,
) -> NodeDown {
    let reply = |data: Vec<u8>, error: Option<String>| NodeDown::ArtifactChunk {
        request,
        data,
        error,
    };
    if !is_sha256_hex(&sha256) {
        return reply(Vec::new(), Some(format!("{sha256:?} is not a sha256")));
    }
    let path = dir(m).join(&sha256);
    let want = (len as usize).min(bramble_artifact::PULL_CHUNK);
    let key = sha256.clone();
    let read = smol::unblock(move || -> std::io::Result<Vec<u8>> {
        use std::os::unix::fs::FileExt;
        let f = open_blob(&key, &path)?;
        let mut buf = vec![0u8; want];
        let mut n = 0;
        while n < want {
            let k = f.read_at(&mut buf[n..], offset + n as u64)?;
            if k == 0 {
                break;
            }
            n += k;
        }
        buf.truncate(n);
        Ok(buf)
    })
    .await;
    match read {
        Ok(data) => reply(data, None),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => reply(
            Vec::new(),
            Some(format!(
                "the master holds no artifact blob {sha256}: it was deleted or replaced; push it again"
            )),
        ),
        Err(e) => reply(Vec::new(), Some(format!("reading blob {sha256}: {e}"))),
    }
}

/// Blobs being read by nodes, kept open: a pull reads one blob in many chunks (and several nodes
/// often pull the same one at once), so each chunk is one `pread` instead of open, seek, read and
/// close. A few at most; [`forget_open`] drops a removed blob's handle.
static OPEN: std::sync::Mutex<Vec<(String, Arc<std::fs::File>)>> =
    std::sync::Mutex::new(Vec::new());
const OPEN_MAX: usize = 8;

fn open_blob(sha256: &str, path: &Path) -> std::io::Result<Arc<std::fs::File>> {
    let mut open = OPEN.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(i) = open.iter().position(|(s, _)| s == sha256) {
        // Most recently used last.
        let e = open.remove(i);
        let f = e.1.clone();
        open.push(e);
        return Ok(f);
    }
    let f = Arc::new(std::fs::File::open(path)?);
    if open.len() >= OPEN_MAX {
        open.remove(0);
    }
    open.push((sha256.to_string(), f.clone()));
    Ok(f)
}

/// Drops the open handle of a blob that was removed.
fn forget_open(sha256: &str) {
    OPEN.lock()
        .unwrap_or_else(|e| e.into_inner())
        .retain(|(s, _)| s != sha256);
}

/// The artifacts `pods` use as rootfs (for their node's assignment), sorted by name: one cache
/// lookup per artifact named.
pub(crate) fn used_by(m: &Master, pods: &[bramble_wire::objects::Pod]) -> Vec<Artifact> {
    let mut names: Vec<&str> = pods.iter().filter_map(|p| p.spec.artifact()).collect();
    names.sort_unstable();
    names.dedup();
    names
        .into_iter()
        .filter_map(|n| m.cache.get_typed::<Artifact>("", n))
        .collect()
}

/// A hash of the artifacts' variants, so a node is pushed its set again when one changes.
pub(crate) fn hash(artifacts: &[Artifact]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for a in artifacts {
        a.meta.name.hash(&mut h);
        for v in &a.variants {
            v.sha256.hash(&mut h);
        }
    }
    h.finish()
}

/// Refuses to delete an artifact that pods still use as rootfs (their nodes would stop them).
pub(crate) async fn check_unused(m: &Master, name: &str) -> Result<(), ApiError> {
    let (_, pods) = m.store.list(Kind::Pod, None).await?;
    let users: Vec<String> = pods
        .iter()
        .filter_map(|o| match o {
            Object::Pod(p) if p.spec.artifact() == Some(name) => {
                Some(format!("{}/{}", p.meta.namespace, p.meta.name))
            }
            _ => None,
        })
        .collect();
    if users.is_empty() {
        return Ok(());
    }
    let shown: Vec<&str> = users.iter().take(5).map(String::as_str).collect();
    Err(ApiError {
        code: ErrorCode::Conflict,
        message: format!(
            "artifact {name} is the rootfs of {} pod(s) ({}{}): delete them first",
            users.len(),
            shown.join(", "),
            if users.len() > 5 { ", ..." } else { "" }
        ),
    })
}
