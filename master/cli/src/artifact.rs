//! `bramble artifact push|list`: uploads a tarball in 32 KiB chunks, a few in flight, resuming
//! from what the master already holds; a progress bar when stderr is a terminal.

use std::io::{IsTerminal, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use bramble_artifact::CHUNK;
use bramble_wire::Arch;
use bramble_wire::msg::{RequestBody, ResponseBody};
use bramble_wire::objects::Kind;

use super::{Client, ClientError, usage};

/// Chunks sent ahead of the master's answers.
const IN_FLIGHT: usize = 8;

/// `bramble artifact ...`.
#[derive(Debug, clap::Subcommand)]
pub enum ArtifactCmd {
    /// Upload a tarball (`.tar` or `.tar.gz`) as one architecture's variant of an artifact;
    /// re-running resumes an interrupted upload.
    Push {
        /// The tarball, e.g. made with `tar -C ROOTDIR -cf busybox.tar .`.
        file: PathBuf,
        /// Architecture its binaries are for: aarch64, armv7, armv6, x86_64, riscv64.
        #[arg(long)]
        arch: String,
        /// Artifact name (default: the file name up to its first dot).
        #[arg(long)]
        name: Option<String>,
    },
    /// List artifacts and their variants (= `bramble get artifacts`).
    List,
}

/// The default artifact name of a file: its name up to the first dot.
pub fn default_name(file: &Path) -> String {
    let n = file
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    n.split('.').next().unwrap_or_default().to_string()
}

/// Runs an artifact subcommand.
pub async fn run(
    c: &mut Client,
    cmd: ArtifactCmd,
    out: &mut impl Write,
) -> Result<(), ClientError> {
    match cmd {
        ArtifactCmd::List => {
            let body = RequestBody::List {
                kind: Kind::Artifact,
                namespace: None,
                selector: String::new(),
            };
            if let ResponseBody::List { items, .. } = c.call(body).await? {
                if items.is_empty() {
                    eprintln!(
                        "no artifact found: push one with bramble artifact push FILE --arch ARCH"
                    );
                } else {
                    let now = bramble_server::api::now_ms();
                    let _ = write!(
                        out,
                        "{}",
                        super::table::render(Kind::Artifact, &items, false, false, now)
                    );
                }
            }
            Ok(())
        }
        ArtifactCmd::Push { file, arch, name } => {
            let arch = match Arch::parse(&arch) {
                Some(a) if a != Arch::Mcu => a,
                _ => {
                    return Err(usage(format!(
                        "--arch {arch:?}: use aarch64, armv7, armv6, x86_64 or riscv64"
                    )));
                }
            };
            let name = name.unwrap_or_else(|| default_name(&file));
            bramble_client::validate::check_name("artifact name", &name).map_err(|e| {
                usage(format!(
                    "{e}; pick one with --name (derived from {})",
                    file.display()
                ))
            })?;
            refuse_image_archive(&file).await?;
            refuse_unpackable(&file).await?;
            let r = push(c, &file, &name, arch, out).await;
            r.map_err(|e| match e {
                ClientError::Api(mut a) => {
                    a.message = format!("{}: {}", file.display(), a.message);
                    ClientError::Api(a)
                }
                e => e,
            })
        }
    }
}

/// An image archive is not a root filesystem: pushed as an artifact, its pods would fail at
/// execve with ENOENT. Refused before anything is uploaded.
async fn refuse_image_archive(file: &Path) -> Result<(), ClientError> {
    let p = file.to_path_buf();
    let found = smol::unblock(move || bramble_image::archive::detect(&p))
        .await
        .map_err(|e| usage(format!("cannot read {}: {e}", file.display())))?;
    match found {
        Some(format) => Err(usage(format!(
            "{} is {} image archive, not a root filesystem tarball: import it with bramble image import {} (and run it with image = \"REF\" in the pod)",
            file.display(),
            match format {
                bramble_image::archive::Format::DockerSave => "a docker save",
                bramble_image::archive::Format::Oci => "an OCI",
            },
            file.display()
        ))),
        None => Ok(()),
    }
}

/// Runs the checker the master runs at push and every worker at unpack (the same limits and
/// tree rules), so a tarball no node could unpack is refused before anything is uploaded.
async fn refuse_unpackable(file: &Path) -> Result<(), ClientError> {
    let p = file.to_path_buf();
    let checked = smol::unblock(move || -> Result<(), String> {
        let f = std::fs::File::open(&p).map_err(|e| format!("cannot read {}: {e}", p.display()))?;
        bramble_artifact::check(
            std::io::BufReader::new(f),
            &bramble_artifact::Limits::default(),
        )
        .map(|_| ())
        .map_err(|e| {
            format!(
                "{}: refused before upload (workers could not unpack it): {e}",
                p.display()
            )
        })
    })
    .await;
    checked.map_err(usage)
}

/// Uploads `file`; returns once the master holds and has verified all of it.
pub async fn push(
    c: &mut Client,
    file: &Path,
    name: &str,
    arch: Arch,
    out: &mut impl Write,
) -> Result<(), ClientError> {
    let open = |e: std::io::Error| usage(format!("cannot read {}: {e}", file.display()));
    let mut f = std::fs::File::open(file).map_err(open)?;
    let size = f.metadata().map_err(open)?.len();
    if size == 0 {
        return Err(usage(format!(
            "{} is empty: nothing to push",
            file.display()
        )));
    }
    let sha256 = smol::unblock({
        let p = file.to_path_buf();
        move || bramble_artifact::sha256_file(&p)
    })
    .await
    .map_err(open)?;
    let begin = RequestBody::ArtifactBegin {
        name: name.to_string(),
        arch,
        sha256: sha256.clone(),
        size,
    };
    let ResponseBody::ArtifactProgress { offset: start } = c.call(begin).await? else {
        return Err(usage("unexpected answer to ArtifactBegin".into()));
    };
    if start > 0 && start < size {
        eprintln!("resuming {} at {start} of {size} bytes", file.display());
    }
    let bar = if std::io::stderr().is_terminal() {
        let b = indicatif::ProgressBar::new(size);
        if let Ok(style) = indicatif::ProgressStyle::with_template(
            "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        ) {
            b.set_style(style.progress_chars("=> "));
        }
        b.set_message(format!("{name} ({})", arch.as_str()));
        b.set_position(start);
        Some(b)
    } else {
        None
    };
    f.seek(SeekFrom::Start(start)).map_err(open)?;
    let sent = send_chunks(
        c,
        start,
        size,
        &mut f,
        |offset, data| RequestBody::ArtifactChunk {
            sha256: sha256.clone(),
            offset,
            data,
        },
        |acked| {
            if let Some(b) = &bar {
                b.set_position(acked);
            }
        },
    )
    .await;
    if let Err(e) = sent {
        if let Some(b) = &bar {
            b.abandon();
        }
        return Err(match e {
            ChunkError::Read(e) => open(e),
            ChunkError::Client(e) => e,
        });
    }
    if let Some(b) = &bar {
        b.finish_and_clear();
    }
    let _ = writeln!(
        out,
        "artifact/{name} {} sha256:{} {size} bytes{}",
        arch.as_str(),
        &sha256[..12],
        if start == size {
            " (already uploaded)".to_string()
        } else if start > 0 {
            format!(" (resumed at {start})")
        } else {
            String::new()
        }
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_default_to_the_stem() {
        assert_eq!(default_name(Path::new("/x/busybox.tar")), "busybox");
        assert_eq!(default_name(Path::new("busybox.tar.gz")), "busybox");
        assert_eq!(default_name(Path::new("web")), "web");
    }
}

/// Why [`send_chunks`] stopped.
#[derive(Debug)]
pub(crate) enum ChunkError {
    /// Reading the source failed.
    Read(std::io::Error),
    /// The master refused a chunk, or the connection failed.
    Client(ClientError),
}

/// Sends bytes `from..size` of `r` (positioned at `from`) in [`CHUNK`]-byte requests made by
/// `chunk(offset, data)`, [`IN_FLIGHT`] of them ahead, each answered by
/// `ArtifactProgress { offset }` (`acked` sees each answer's offset); returns once the master
/// acknowledged `size` bytes.
pub(crate) async fn send_chunks(
    c: &mut Client,
    from: u64,
    size: u64,
    r: &mut impl std::io::Read,
    chunk: impl Fn(u64, Vec<u8>) -> RequestBody,
    mut acked: impl FnMut(u64),
) -> Result<(), ChunkError> {
    let mut sent = from;
    let mut held = from;
    let mut pending: std::collections::VecDeque<u32> = std::collections::VecDeque::new();
    let mut buf = vec![0u8; CHUNK];
    while held < size {
        while sent < size && pending.len() < IN_FLIGHT {
            let want = (size - sent).min(CHUNK as u64) as usize;
            r.read_exact(&mut buf[..want]).map_err(ChunkError::Read)?;
            let id = c
                .start(chunk(sent, buf[..want].to_vec()))
                .await
                .map_err(ChunkError::Client)?;
            pending.push_back(id);
            sent += want as u64;
        }
        let Some(id) = pending.pop_front() else { break };
        let resp = loop {
            let resp = c.next().await.map_err(ChunkError::Client)?;
            if resp.id == id {
                break resp;
            }
        };
        match resp.body {
            ResponseBody::ArtifactProgress { offset } => {
                held = offset;
                acked(held);
            }
            ResponseBody::Error(e) => return Err(ChunkError::Client(ClientError::Api(e))),
            _ => {
                return Err(ChunkError::Client(usage(
                    "unexpected answer to an upload chunk".into(),
                )));
            }
        }
    }
    Ok(())
}
