//! `bramble image pull|import|rm|ls`: images through the master. `import` reads a `docker save`
//! or OCI archive (`bramble_image::archive`), uploads each blob the master lacks in 32 KiB chunks,
//! a few in flight, resuming partial blobs, then records the image; `pull` shows the master's
//! progress; `ls` (= `bramble get images`) adds the pods using each image.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;

use bramble_image::archive::{Blob, ImageArchive};
use bramble_wire::msg::{RequestBody, ResponseBody};
use bramble_wire::objects::{Image, Kind, Object};

use super::{Client, ClientError, usage};

/// `bramble image ...`.
#[derive(Debug, clap::Subcommand)]
pub enum ImageCmd {
    /// Pull an image from its registry through the master (nodes then fetch it from the master).
    Pull {
        /// The reference, e.g. `alpine:3.20`, `registry.lan:5000/app:1.4`, `app@sha256:...`.
        reference: String,
    },
    /// Import a `docker save` tarball or an OCI archive (plain or gzip, single- or multi-arch);
    /// re-running resumes an interrupted upload.
    Import {
        /// The archive, e.g. from `docker save app:1.4 -o app.tar` or
        /// `skopeo copy docker://... oci-archive:app.tar`.
        file: PathBuf,
        /// Reference to store it under (default: the one the archive names).
        #[arg(long)]
        reference: Option<String>,
    },
    /// Remove an image (refused while pods use it).
    #[command(alias = "remove")]
    Rm {
        /// The reference.
        reference: String,
    },
    /// List images (= `bramble get images`).
    #[command(alias = "list")]
    Ls {
        /// More columns (every pod using each image).
        #[arg(short, long)]
        wide: bool,
    },
}

/// Runs an image subcommand.
pub async fn run(c: &mut Client, cmd: ImageCmd, out: &mut impl Write) -> Result<(), ClientError> {
    match cmd {
        ImageCmd::Pull { reference } => pull(c, &reference, out).await,
        ImageCmd::Import { file, reference } => import(c, file, reference, out).await,
        ImageCmd::Rm { reference } => {
            check_reference(&reference)?;
            c.call(RequestBody::ImageRemove {
                reference: reference.clone(),
            })
            .await?;
            let _ = writeln!(out, "image {reference} deleted");
            Ok(())
        }
        ImageCmd::Ls { wide } => list(c, wide, out).await,
    }
}

/// `bramble image ls` / `bramble get images`: the images and the pods using them.
pub async fn list(c: &mut Client, wide: bool, out: &mut impl Write) -> Result<(), ClientError> {
    let images = match c
        .call(RequestBody::List {
            kind: Kind::Image,
            namespace: None,
            selector: String::new(),
        })
        .await?
    {
        ResponseBody::List { items, .. } => items,
        _ => vec![],
    };
    if images.is_empty() {
        eprintln!(
            "no image found: pull one with bramble image pull REF or import one with bramble image import FILE"
        );
        return Ok(());
    }
    write_table(c, &images, wide, out).await
}

/// Writes the images table, with the pods using each image (a list of every pod).
pub async fn write_table(
    c: &mut Client,
    images: &[Object],
    wide: bool,
    out: &mut impl Write,
) -> Result<(), ClientError> {
    let pods = match c
        .call(RequestBody::List {
            kind: Kind::Pod,
            namespace: None,
            selector: String::new(),
        })
        .await?
    {
        ResponseBody::List { items, .. } => items,
        _ => vec![],
    };
    let now = bramble_server::api::now_ms();
    let _ = write!(
        out,
        "{}",
        super::table::images(images, &used_by(images, &pods), wide, now)
    );
    Ok(())
}

/// For each image reference, the pods (`NAMESPACE/NAME`, sorted) whose `image` normalizes to it.
pub fn used_by(images: &[Object], pods: &[Object]) -> BTreeMap<String, Vec<String>> {
    let mut m: BTreeMap<String, Vec<String>> = images
        .iter()
        .filter_map(|o| match o {
            Object::Image(i) => Some((i.reference.clone(), Vec::new())),
            _ => None,
        })
        .collect();
    for p in pods {
        let Object::Pod(p) = p else { continue };
        let Some(r) = p
            .spec
            .image
            .as_deref()
            .and_then(bramble_wire::image_ref::normalize)
        else {
            continue;
        };
        if let Some(v) = m.get_mut(&r) {
            v.push(format!("{}/{}", p.meta.namespace, p.meta.name));
        }
    }
    for v in m.values_mut() {
        v.sort();
    }
    m
}

/// One line per image: `image/NAME REFERENCE DIGEST ARCHES SIZE`.
fn summary(i: &Image) -> String {
    let arches: Vec<&str> = i.variants.iter().map(|v| v.arch.as_str()).collect();
    let size: u64 = i.variants.iter().map(|v| v.size()).sum();
    format!(
        "image/{} {} {} {} {}",
        i.meta.name,
        i.reference,
        i.digest,
        if arches.is_empty() {
            "-".into()
        } else {
            arches.join(",")
        },
        bramble_client::validate::format_bytes(size)
    )
}

fn check_reference(r: &str) -> Result<(), ClientError> {
    match bramble_wire::image_ref::normalize(r) {
        Some(_) => Ok(()),
        None => Err(usage(format!(
            "{r:?} is not an image reference: write [REGISTRY[:PORT]/]REPOSITORY[:TAG][@sha256:DIGEST], e.g. alpine:3.20 or registry.lan:5000/app:1.4"
        ))),
    }
}

fn bar(total: u64, msg: String) -> Option<indicatif::ProgressBar> {
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let b = indicatif::ProgressBar::new(total);
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
    ) {
        b.set_style(style.progress_chars("=> "));
    }
    b.set_message(msg);
    Some(b)
}

async fn pull(c: &mut Client, reference: &str, out: &mut impl Write) -> Result<(), ClientError> {
    check_reference(reference)?;
    let id = c
        .start(RequestBody::ImagePull {
            reference: reference.to_string(),
        })
        .await?;
    let bar = bar(0, format!("pulling {reference}"));
    let mut last_message = String::new();
    loop {
        let r = c.next().await?;
        if r.id != id {
            continue;
        }
        match r.body {
            ResponseBody::ImageProgress {
                message,
                done,
                total,
            } => match &bar {
                Some(b) => {
                    if total > 0 {
                        b.set_length(total);
                    }
                    b.set_position(done);
                    b.set_message(message);
                }
                None => {
                    // Without a terminal: one line per step, not one per chunk.
                    if message != last_message {
                        eprintln!("{message}");
                        last_message = message;
                    }
                }
            },
            ResponseBody::Object(Object::Image(i)) => {
                if let Some(b) = &bar {
                    b.finish_and_clear();
                }
                let _ = writeln!(out, "{}", summary(&i));
                return Ok(());
            }
            ResponseBody::Error(e) => {
                if let Some(b) = &bar {
                    b.abandon();
                }
                return Err(ClientError::Api(e));
            }
            _ => {}
        }
    }
}

async fn import(
    c: &mut Client,
    file: PathBuf,
    reference: Option<String>,
    out: &mut impl Write,
) -> Result<(), ClientError> {
    let name = file.display().to_string();
    if std::io::stderr().is_terminal() {
        eprintln!("checking {name} ...");
    }
    let archive = smol::unblock({
        let file = file.clone();
        move || ImageArchive::open(&file)
    })
    .await
    .map_err(|e| usage(e.message))?;
    let reference = archive
        .reference(reference.as_deref(), &name)
        .map_err(|e| usage(e.message))?;
    check_reference(&reference)?;
    let total = archive.total_size();
    let bar = bar(total, format!("importing {reference}"));
    let (mut held, mut sent_bytes) = (0usize, 0u64);
    let mut base = 0u64;
    for blob in &archive.blobs {
        let r = upload(c, &archive, blob, base, bar.as_ref()).await;
        match r {
            Ok(start) => {
                if start == blob.size {
                    held += 1;
                } else {
                    sent_bytes += blob.size - start;
                }
            }
            Err(e) => {
                if let Some(b) = &bar {
                    b.abandon();
                }
                return Err(match e {
                    ClientError::Api(mut a) => {
                        a.message = format!("{name}: blob sha256:{}: {}", blob.sha256, a.message);
                        ClientError::Api(a)
                    }
                    e => e,
                });
            }
        }
        base += blob.size;
    }
    if let Some(b) = &bar {
        b.finish_and_clear();
    }
    let body = RequestBody::ImageImport {
        reference: reference.clone(),
        sha256: archive.root_sha256.clone(),
    };
    let image = match c.call(body).await? {
        ResponseBody::Object(Object::Image(i)) => i,
        _ => return Err(usage("unexpected answer to ImageImport".into())),
    };
    let _ = writeln!(
        out,
        "{} ({} archive, {} blobs: {} already on the master, {} sent)",
        summary(&image),
        archive.format.as_str(),
        archive.blobs.len(),
        held,
        bramble_client::validate::format_bytes(sent_bytes)
    );
    Ok(())
}

/// Uploads one blob from what the master holds of it; returns where it started.
async fn upload(
    c: &mut Client,
    archive: &ImageArchive,
    blob: &Blob,
    base: u64,
    bar: Option<&indicatif::ProgressBar>,
) -> Result<u64, ClientError> {
    let begin = RequestBody::BlobBegin {
        sha256: blob.sha256.clone(),
        size: blob.size,
    };
    let ResponseBody::ArtifactProgress { offset: start } = c.call(begin).await? else {
        return Err(usage("unexpected answer to BlobBegin".into()));
    };
    if let Some(b) = bar {
        b.set_position(base + start);
    }
    if start >= blob.size {
        return Ok(blob.size);
    }
    let mut r = archive.reader(blob, start);
    super::artifact::send_chunks(
        c,
        start,
        blob.size,
        &mut r,
        |offset, data| RequestBody::BlobChunk {
            sha256: blob.sha256.clone(),
            offset,
            data,
        },
        |acked| {
            if let Some(b) = bar {
                b.set_position(base + acked);
            }
        },
    )
    .await
    .map_err(|e| match e {
        super::artifact::ChunkError::Read(e) => usage(format!("cannot read the archive: {e}")),
        super::artifact::ChunkError::Client(e) => e,
    })?;
    Ok(start)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bramble_wire::objects::{Meta, Pod, PodSpec};

    #[test]
    fn used_by_matches_normalized_references() {
        let image = |r: &str| {
            Object::Image(Image {
                reference: r.into(),
                ..Default::default()
            })
        };
        let pod = |ns: &str, n: &str, img: Option<&str>| {
            Object::Pod(Pod {
                meta: Meta {
                    name: n.into(),
                    namespace: ns.into(),
                    ..Default::default()
                },
                spec: PodSpec {
                    image: img.map(Into::into),
                    ..Default::default()
                },
                status: Default::default(),
            })
        };
        let images = [
            image("docker.io/library/alpine:3.20"),
            image("registry.lan:5000/app:latest"),
        ];
        let pods = [
            pod("default", "b", Some("alpine:3.20")),
            pod("edge", "a", Some("docker.io/library/alpine:3.20")),
            pod("default", "c", Some("registry.lan:5000/app")),
            pod("default", "d", Some("alpine:3.19")),
            pod("default", "e", None),
        ];
        let m = used_by(&images, &pods);
        assert_eq!(m["docker.io/library/alpine:3.20"], ["default/b", "edge/a"]);
        assert_eq!(m["registry.lan:5000/app:latest"], ["default/c"]);
    }
}
