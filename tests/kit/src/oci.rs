//! OCI image layouts written by the tests (no Docker, no network): `oci-layout`, `index.json`
//! and `blobs/sha256/`, multi-arch (an image index with one manifest per platform) or a single
//! manifest, gzip or plain layers, and the bad images the master must refuse (a gzip bomb, an
//! unsupported media type).
//!
//! [`demo_layout`] is the image the image tests run: per platform three gzip layers over
//! Debian's static busybox (see [`demo_variant`] and [`DEMO_SCRIPT`]):
//! 1. `/bin/busybox` + applet symlinks, `/etc/passwd` (user `app`, uid 1000), `/etc/variant`
//!    (`linux/arm64`…), `/etc/doomed`, `/data/old1`, `/data/old2`, `/tmp`;
//! 2. deletes `/etc/doomed` (`etc/.wh.doomed`), adds `/data/mid`;
//! 3. makes `/data` opaque (`data/.wh..wh..opq`), adds `/data/new`, `/app/hello.txt` and
//!    `/app/hello` (a tiny static C program of that arch, `busybox::hello`).
//!
//! Config: Entrypoint `["/bin/sh", "-c"]`, Cmd [[`DEMO_SCRIPT`]], Env `GREETING=hi`,
//! `PATH=/bin`, WorkingDir `/app`, User `1000`.
//!
//! [`docker_archive`] and [`oci_archive`] turn a layout into the files `bramble image import`
//! reads, with skopeo.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// `application/vnd.oci.image.index.v1+json`.
pub const MT_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// `application/vnd.oci.image.manifest.v1+json`.
pub const MT_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// `application/vnd.oci.image.config.v1+json`.
pub const MT_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
/// `application/vnd.oci.image.layer.v1.tar+gzip`.
pub const MT_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
/// `application/vnd.oci.image.layer.v1.tar+zstd`.
pub const MT_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
/// `application/vnd.oci.image.layer.v1.tar`.
pub const MT_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";

/// The Cmd of the demo image (run by Entrypoint `/bin/sh -c`): one `key=value` line per thing
/// the tests check, then `ready`, then it sleeps (so the pod exists while the test looks).
pub const DEMO_SCRIPT: &str = "echo entry; echo arch=$(uname -m); echo variant=$(cat /etc/variant); \
echo elf=$(od -An -tu2 -j18 -N2 /bin/busybox | tr -d ' '); echo data=$(ls /data | tr '\\n' ,); \
cat /etc/doomed 2>/dev/null || echo doomed=gone; echo uid=$(id -u); echo pwd=$(pwd); \
echo GREETING=$GREETING; cat /app/hello.txt; /app/hello; echo ready; exec sleep 3600";

/// The lines the demo image's log holds on `platform` when its config took effect (its layers
/// applied with their whiteouts, its Env, WorkingDir and User): each must be a whole line.
pub fn demo_expected_lines(platform: Platform) -> Vec<String> {
    vec![
        "entry".into(),
        format!("variant={}", platform.oci()),
        format!("elf={}", platform.elf_machine()),
        "data=new,".into(),
        "doomed=gone".into(),
        "uid=1000".into(),
        "pwd=/app".into(),
        "GREETING=hi".into(),
        "hello from layer 3".into(),
        format!("static-hello bits={}", platform.bits()),
        "ready".into(),
    ]
}

/// Busybox applets linked in `/bin` of the demo image.
pub const APPLETS: &[&str] = &[
    "sh", "cat", "ls", "sleep", "id", "env", "pwd", "echo", "uname", "od", "tr", "grep", "true",
    "false", "touch", "head", "wc", "mkdir", "rm", "wget", "hostname",
];

/// A platform of the multi-arch images.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Platform {
    /// `linux/amd64` (Bramble: x86_64).
    Amd64,
    /// `linux/arm64` (aarch64).
    Arm64,
    /// `linux/arm/v7` (armv7).
    ArmV7,
}

impl Platform {
    /// The three platforms of the demo image.
    pub const ALL: [Platform; 3] = [Platform::Amd64, Platform::Arm64, Platform::ArmV7];

    /// `linux/amd64`, `linux/arm64`, `linux/arm/v7`.
    pub fn oci(self) -> &'static str {
        match self {
            Platform::Amd64 => "linux/amd64",
            Platform::Arm64 => "linux/arm64",
            Platform::ArmV7 => "linux/arm/v7",
        }
    }

    /// OCI `architecture`.
    pub fn architecture(self) -> &'static str {
        match self {
            Platform::Amd64 => "amd64",
            Platform::Arm64 => "arm64",
            Platform::ArmV7 => "arm",
        }
    }

    /// OCI `variant`, if any.
    pub fn variant(self) -> Option<&'static str> {
        match self {
            Platform::ArmV7 => Some("v7"),
            _ => None,
        }
    }

    /// Bramble's name of the arch (`bramble_wire::Arch::as_str`).
    pub fn bramble_arch(self) -> &'static str {
        match self {
            Platform::Amd64 => "x86_64",
            Platform::Arm64 => "aarch64",
            Platform::ArmV7 => "armv7",
        }
    }

    /// Debian's name of the arch.
    pub fn debian_arch(self) -> &'static str {
        match self {
            Platform::Amd64 => "amd64",
            Platform::Arm64 => "arm64",
            Platform::ArmV7 => "armhf",
        }
    }

    /// ELF `e_machine` of its binaries.
    pub fn elf_machine(self) -> u16 {
        match self {
            Platform::Amd64 => crate::busybox::EM_X86_64,
            Platform::Arm64 => crate::busybox::EM_AARCH64,
            Platform::ArmV7 => crate::busybox::EM_ARM,
        }
    }

    /// Pointer width.
    pub fn bits(self) -> u32 {
        match self {
            Platform::ArmV7 => 32,
            _ => 64,
        }
    }

    /// What `uname -m` says on a kernel of this arch.
    pub fn uname(self) -> &'static str {
        match self {
            Platform::Amd64 => "x86_64",
            Platform::Arm64 => "aarch64",
            Platform::ArmV7 => "armv7l",
        }
    }

    /// The `platform` object of an index entry.
    fn json(self) -> Value {
        match self.variant() {
            Some(v) => json!({"architecture": self.architecture(), "os": "linux", "variant": v}),
            None => json!({"architecture": self.architecture(), "os": "linux"}),
        }
    }
}

/// Lowercase hex sha256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    let d = Sha256::digest(bytes);
    d.iter().map(|b| format!("{b:02x}")).collect()
}

/// A tar stream being built (deterministic: mtime 0, owner root unless said otherwise).
pub struct Tar(tar::Builder<Vec<u8>>);

impl std::fmt::Debug for Tar {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Tar")
    }
}

impl Default for Tar {
    fn default() -> Self {
        Self::new()
    }
}

impl Tar {
    /// An empty tar.
    pub fn new() -> Tar {
        Tar(tar::Builder::new(Vec::new()))
    }

    fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_size(size);
        h.set_mtime(0);
        h.set_uid(0);
        h.set_gid(0);
        h
    }

    /// A directory `path` (relative, no leading `/`).
    pub fn dir(mut self, path: &str, mode: u32) -> Tar {
        let mut h = Self::header(tar::EntryType::Directory, mode, 0);
        self.0
            .append_data(&mut h, format!("{}/", path.trim_end_matches('/')), &[][..])
            .unwrap();
        self
    }

    /// A regular file.
    pub fn file(mut self, path: &str, data: &[u8], mode: u32) -> Tar {
        let mut h = Self::header(tar::EntryType::Regular, mode, data.len() as u64);
        self.0.append_data(&mut h, path, data).unwrap();
        self
    }

    /// A symlink `path` -> `target`.
    pub fn symlink(mut self, path: &str, target: &str) -> Tar {
        let mut h = Self::header(tar::EntryType::Symlink, 0o777, 0);
        self.0.append_link(&mut h, path, target).unwrap();
        self
    }

    /// The tar's bytes (with the end-of-archive blocks).
    pub fn finish(self) -> Vec<u8> {
        self.0.into_inner().unwrap()
    }
}

/// One layer blob.
#[derive(Clone)]
pub struct Layer {
    /// Its media type.
    pub media_type: String,
    /// The blob (compressed or not).
    pub blob: Vec<u8>,
    /// `sha256:` of the uncompressed tar (the config's `diff_ids`).
    pub diff_id: String,
}

impl std::fmt::Debug for Layer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Layer({}, {} bytes, {})",
            self.media_type,
            self.blob.len(),
            self.diff_id
        )
    }
}

impl Layer {
    /// A gzip layer of `tar`.
    pub fn gzip(tar: Vec<u8>) -> Layer {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(&tar).unwrap();
        Layer {
            media_type: MT_LAYER_GZIP.into(),
            blob: e.finish().unwrap(),
            diff_id: format!("sha256:{}", sha256_hex(&tar)),
        }
    }

    /// A zstd layer of `tar` (with the `zstd` command: apt-get install zstd).
    pub fn zstd(tar: Vec<u8>) -> Layer {
        use std::process::Stdio;
        let mut child = Command::new("zstd")
            .args(["-q", "-c", "-3"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("run zstd (apt-get install zstd): {e}"));
        let mut stdin = child.stdin.take().unwrap();
        let input = tar.clone();
        let feeder = std::thread::spawn(move || stdin.write_all(&input));
        let out = child.wait_with_output().unwrap();
        feeder.join().unwrap().unwrap();
        assert!(out.status.success(), "zstd failed");
        Layer {
            media_type: MT_LAYER_ZSTD.into(),
            blob: out.stdout,
            diff_id: format!("sha256:{}", sha256_hex(&tar)),
        }
    }

    /// A plain (uncompressed) tar layer.
    pub fn plain(tar: Vec<u8>) -> Layer {
        Layer {
            media_type: MT_LAYER_TAR.into(),
            diff_id: format!("sha256:{}", sha256_hex(&tar)),
            blob: tar,
        }
    }

    /// The same blob under another media type.
    pub fn with_media_type(mut self, media_type: &str) -> Layer {
        self.media_type = media_type.into();
        self
    }

    /// A gzip bomb: a small gzip layer holding one file `bomb` of `expanded` zero bytes (about
    /// 1/1000 of it compressed: 4 GiB in ~4 MiB), made in milliseconds: one deflate block of
    /// 1 MiB of zeros after a full flush is the same bytes every time, so it is repeated. Like a
    /// real bomb it lies: its gzip CRC is 0 and its `diff_id` is the digest of the tar header
    /// alone (nobody can check them without inflating it all).
    pub fn gzip_bomb(expanded: u64) -> Layer {
        use flate2::{Compress, Compression, FlushCompress};
        let mut h = Tar::header(tar::EntryType::Regular, 0o644, expanded);
        h.set_path("bomb").unwrap();
        h.set_cksum();
        let mut c = Compress::new(Compression::best(), false);
        let mut deflate = |input: &[u8], flush: FlushCompress| -> Vec<u8> {
            let mut out = Vec::with_capacity(input.len() / 2 + 1024);
            let mut pos = 0;
            loop {
                if out.capacity() - out.len() < 1024 {
                    out.reserve(64 << 10);
                }
                let before = c.total_in();
                c.compress_vec(&input[pos..], &mut out, flush).unwrap();
                pos += (c.total_in() - before) as usize;
                if pos == input.len() && out.capacity() > out.len() {
                    return out;
                }
            }
        };
        let mut blob = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];
        blob.extend(deflate(h.as_bytes(), FlushCompress::Full));
        const CHUNK: u64 = 1 << 20;
        let zeros = vec![0u8; CHUNK as usize];
        let block = deflate(&zeros, FlushCompress::Full);
        for _ in 0..expanded / CHUNK {
            blob.extend_from_slice(&block);
        }
        // The rest, the padding to 512 and the two end blocks.
        let rest = (expanded % CHUNK) as usize + (512 - (expanded % 512) as usize) % 512 + 1024;
        blob.extend(deflate(&vec![0u8; rest], FlushCompress::Finish));
        let total = 512 + expanded + rest as u64 - expanded % CHUNK;
        blob.extend_from_slice(&0u32.to_le_bytes());
        blob.extend_from_slice(&(total as u32).to_le_bytes());
        Layer {
            media_type: MT_LAYER_GZIP.into(),
            blob,
            diff_id: format!("sha256:{}", sha256_hex(h.as_bytes())),
        }
    }

    /// A gzip layer of one file `path` with `size` random (incompressible) bytes: the bench's
    /// image.
    pub fn random(path: &str, size: usize, seed: u64) -> Layer {
        let mut rng = fastrand::Rng::with_seed(seed);
        let mut data = vec![0u8; size];
        rng.fill(&mut data);
        let tar = Tar::new().file(path, &data, 0o644).finish();
        // Stored deflate blocks: what gzip makes of incompressible data anyway, without the
        // minutes a debug build would spend looking for matches.
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::none());
        e.write_all(&tar).unwrap();
        Layer {
            media_type: MT_LAYER_GZIP.into(),
            blob: e.finish().unwrap(),
            diff_id: format!("sha256:{}", sha256_hex(&tar)),
        }
    }
}

/// One platform's image: its layers (bottom first) and config.
#[derive(Debug, Clone)]
pub struct Variant {
    /// The platform.
    pub platform: Platform,
    /// Layers, bottom first.
    pub layers: Vec<Layer>,
    /// The OCI config's `config` object (`Entrypoint`, `Cmd`, `Env`, …).
    pub config: Value,
    /// The config blob's media type ([`MT_CONFIG`] for an image).
    pub config_media_type: String,
}

impl Variant {
    /// The config blob.
    fn config_blob(&self) -> Vec<u8> {
        let mut c = json!({
            "architecture": self.platform.architecture(),
            "os": "linux",
            "config": self.config,
            "rootfs": {"type": "layers", "diff_ids": self.layers.iter().map(|l| l.diff_id.clone()).collect::<Vec<_>>()},
            "history": self.layers.iter().map(|_| json!({"created_by": "bramble-testkit"})).collect::<Vec<_>>(),
        });
        if let Some(v) = self.platform.variant() {
            c["variant"] = json!(v);
        }
        serde_json::to_vec(&c).unwrap()
    }
}

/// The demo image's three layers and config for `platform` (see the module doc).
pub fn demo_variant(platform: Platform) -> Variant {
    let [l1, l2, l3] = demo_tars(platform);
    Variant {
        platform,
        layers: vec![Layer::gzip(l1), Layer::gzip(l2), Layer::gzip(l3)],
        config: demo_config(),
        config_media_type: MT_CONFIG.into(),
    }
}

/// The demo image for `platform` with its layers zstd-compressed
/// (`application/vnd.oci.image.layer.v1.tar+zstd`, as `docker buildx --compression zstd`).
pub fn demo_variant_zstd(platform: Platform) -> Variant {
    let [l1, l2, l3] = demo_tars(platform);
    Variant {
        platform,
        layers: vec![Layer::zstd(l1), Layer::zstd(l2), Layer::zstd(l3)],
        config: demo_config(),
        config_media_type: MT_CONFIG.into(),
    }
}

/// The demo image's config (`config` object).
pub fn demo_config() -> Value {
    json!({
        "Entrypoint": ["/bin/sh", "-c"],
        "Cmd": [DEMO_SCRIPT],
        "Env": ["GREETING=hi", "PATH=/bin"],
        "WorkingDir": "/app",
        "User": "1000",
        "ExposedPorts": {"8080/tcp": {}},
    })
}

/// The demo image's three layer tars (uncompressed) for `platform`.
pub fn demo_tars(platform: Platform) -> [Vec<u8>; 3] {
    let bb = std::fs::read(crate::busybox::busybox(platform.debian_arch())).unwrap();
    let hello = std::fs::read(crate::busybox::hello(platform.debian_arch())).unwrap();
    let mut l1 = Tar::new().dir("bin", 0o755).file("bin/busybox", &bb, 0o755);
    for a in APPLETS {
        l1 = l1.symlink(&format!("bin/{a}"), "busybox");
    }
    let l1 = l1
        .dir("etc", 0o755)
        .file(
            "etc/passwd",
            b"root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/app:/bin/sh\n",
            0o644,
        )
        .file("etc/group", b"root:x:0:\napp:x:1000:\n", 0o644)
        .file(
            "etc/variant",
            format!("{}\n", platform.oci()).as_bytes(),
            0o644,
        )
        .file("etc/doomed", b"doomed=present\n", 0o644)
        .dir("data", 0o755)
        .file("data/old1", b"old1\n", 0o644)
        .file("data/old2", b"old2\n", 0o644)
        .dir("tmp", 0o1777)
        .finish();
    let l2 = Tar::new()
        .dir("etc", 0o755)
        .file("etc/.wh.doomed", b"", 0o644)
        .dir("data", 0o755)
        .file("data/mid", b"mid\n", 0o644)
        .finish();
    let l3 = Tar::new()
        .dir("data", 0o755)
        .file("data/.wh..wh..opq", b"", 0o644)
        .file("data/new", b"new\n", 0o644)
        .dir("app", 0o755)
        .file("app/hello.txt", b"hello from layer 3\n", 0o644)
        .file("app/hello", &hello, 0o755)
        .finish();
    [l1, l2, l3]
}

/// An OCI layout written to disk.
#[derive(Debug, Clone)]
pub struct Layout {
    /// The layout directory.
    pub dir: PathBuf,
    /// The tag its `index.json` names (`org.opencontainers.image.ref.name`).
    pub tag: String,
    /// Digest (`sha256:…`) of what the tag points at: the image index, or the single manifest.
    pub root_digest: String,
    /// Each variant's manifest digest.
    pub manifests: Vec<(Platform, String)>,
    /// Each variant's layer digests (`sha256:…`), bottom first.
    pub layers: Vec<(Platform, Vec<String>)>,
}

impl Layout {
    /// `oci:DIR:TAG`, skopeo's name of it.
    pub fn skopeo_ref(&self) -> String {
        format!("oci:{}:{}", self.dir.display(), self.tag)
    }

    /// The path of blob `digest` (`sha256:…` or bare hex).
    pub fn blob(&self, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
        self.dir.join("blobs/sha256").join(hex)
    }

    /// The manifest digest of `platform`.
    pub fn manifest(&self, platform: Platform) -> &str {
        &self
            .manifests
            .iter()
            .find(|(p, _)| *p == platform)
            .unwrap_or_else(|| panic!("no {} manifest in {}", platform.oci(), self.dir.display()))
            .1
    }
}

fn put_blob(dir: &Path, bytes: &[u8]) -> String {
    let hex = sha256_hex(bytes);
    std::fs::write(dir.join("blobs/sha256").join(&hex), bytes).unwrap();
    format!("sha256:{hex}")
}

fn descriptor(media_type: &str, digest: &str, size: usize) -> Value {
    json!({"mediaType": media_type, "digest": digest, "size": size})
}

/// Writes an OCI layout of `variants` to `dir` (created) under `tag`: an image index when
/// `index` (or more than one variant), else the single manifest.
pub fn write_layout(dir: &Path, tag: &str, variants: &[Variant], index: bool) -> Layout {
    assert!(!variants.is_empty(), "an image has at least one variant");
    std::fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
    std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    let mut manifests = Vec::new();
    let mut layers = Vec::new();
    let mut entries = Vec::new();
    for v in variants {
        let mut descs = Vec::new();
        let mut digests = Vec::new();
        for l in &v.layers {
            let d = put_blob(dir, &l.blob);
            descs.push(descriptor(&l.media_type, &d, l.blob.len()));
            digests.push(d);
        }
        let config = v.config_blob();
        let config_digest = put_blob(dir, &config);
        let m = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": MT_MANIFEST,
            "config": descriptor(&v.config_media_type, &config_digest, config.len()),
            "layers": descs,
        }))
        .unwrap();
        let md = put_blob(dir, &m);
        let mut e = descriptor(MT_MANIFEST, &md, m.len());
        e["platform"] = v.platform.json();
        entries.push(e);
        manifests.push((v.platform, md));
        layers.push((v.platform, digests));
    }
    let (root_mt, root_digest, root_size) = if index || variants.len() > 1 {
        let idx = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": MT_INDEX,
            "manifests": entries,
        }))
        .unwrap();
        (MT_INDEX, put_blob(dir, &idx), idx.len())
    } else {
        let e = &entries[0];
        (
            MT_MANIFEST,
            e["digest"].as_str().unwrap().to_string(),
            e["size"].as_u64().unwrap() as usize,
        )
    };
    let mut top = descriptor(root_mt, &root_digest, root_size);
    top["annotations"] = json!({"org.opencontainers.image.ref.name": tag});
    std::fs::write(
        dir.join("index.json"),
        serde_json::to_vec(&json!({"schemaVersion": 2, "mediaType": MT_INDEX, "manifests": [top]}))
            .unwrap(),
    )
    .unwrap();
    Layout {
        dir: dir.to_path_buf(),
        tag: tag.into(),
        root_digest,
        manifests,
        layers,
    }
}

/// The demo image (see the module doc) for `platforms`, as an index, written to `dir`.
pub fn demo_layout(dir: &Path, tag: &str, platforms: &[Platform]) -> Layout {
    let variants: Vec<Variant> = platforms.iter().map(|p| demo_variant(*p)).collect();
    write_layout(dir, tag, &variants, true)
}

/// The demo image for amd64 with a fourth layer that is a gzip bomb of `expanded` bytes.
pub fn bomb_layout(dir: &Path, tag: &str, expanded: u64) -> Layout {
    let mut v = demo_variant(Platform::Amd64);
    v.layers.push(Layer::gzip_bomb(expanded));
    write_layout(dir, tag, &[v], true)
}

/// A Helm-chart-like artifact (config `application/vnd.cncf.helm.config.v1+json`, one layer
/// `application/vnd.cncf.helm.chart.content.v1.tar+gzip`): a manifest no runtime can run.
pub fn helm_layout(dir: &Path, tag: &str) -> Layout {
    let chart = Tar::new()
        .file("demo/Chart.yaml", b"apiVersion: v2\nname: demo\n", 0o644)
        .finish();
    let v = Variant {
        platform: Platform::Amd64,
        layers: vec![
            Layer::gzip(chart)
                .with_media_type("application/vnd.cncf.helm.chart.content.v1.tar+gzip"),
        ],
        config: json!({}),
        config_media_type: "application/vnd.cncf.helm.config.v1+json".into(),
    };
    write_layout(dir, tag, &[v], false)
}

/// The distribution bench's image (amd64, single manifest): the demo image's three layers plus
/// one gzip layer of `size` random (incompressible) bytes at `/payload/blob`; its Cmd prints
/// `ready` and sleeps. `bench_layout(dir, "1", 100 << 20)` is the issue's ~100 MB image.
pub fn bench_layout(dir: &Path, tag: &str, size: usize) -> Layout {
    let mut v = demo_variant(Platform::Amd64);
    v.layers.push(Layer::random("payload/blob", size, 42));
    v.config["Cmd"] = json!(["echo ready; exec sleep 3600"]);
    write_layout(dir, tag, &[v], false)
}

fn skopeo(args: &[&str]) {
    let o = Command::new("skopeo")
        .arg("--insecure-policy")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run skopeo (apt-get install skopeo): {e}"));
    assert!(
        o.status.success(),
        "skopeo {args:?} failed: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

/// `docker save` format of `layout`'s `platform` variant (one arch: docker archives are
/// single-arch) as `out`, tagged `name_tag` (`demo/app:1`).
pub fn docker_archive(layout: &Layout, platform: Platform, out: &Path, name_tag: &str) {
    let _ = std::fs::remove_file(out);
    let arch = platform.architecture();
    let mut args = vec!["--override-os", "linux", "--override-arch", arch];
    if let Some(v) = platform.variant() {
        args.extend(["--override-variant", v]);
    }
    let src = layout.skopeo_ref();
    let dst = format!("docker-archive:{}:{name_tag}", out.display());
    args.extend(["copy", &src, &dst]);
    skopeo(&args);
}

/// An OCI archive (a tar of an OCI layout, every variant) of `layout` as `out`.
pub fn oci_archive(layout: &Layout, out: &Path) {
    let _ = std::fs::remove_file(out);
    let dst = format!("oci-archive:{}:{}", out.display(), layout.tag);
    skopeo(&["copy", "--all", &layout.skopeo_ref(), &dst]);
}

/// `skopeo inspect --raw` of `oci:DIR:TAG` (checks the layout is one skopeo reads).
pub fn inspect_layout(layout: &Layout) -> Value {
    let o = Command::new("skopeo")
        .args(["inspect", "--raw", &layout.skopeo_ref()])
        .output()
        .expect("run skopeo");
    assert!(
        o.status.success(),
        "skopeo inspect {}: {}",
        layout.skopeo_ref(),
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_slice(&o.stdout).unwrap()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The bomb inflates to what it says (checked with gzip, which then complains about the
    /// CRC it lies about), in a few MiB.
    #[test]
    fn the_gzip_bomb_inflates_to_its_size() {
        let expanded = (64 << 20) + 1000;
        let l = Layer::gzip_bomb(expanded);
        assert!(l.blob.len() < 200 << 10, "{} bytes", l.blob.len());
        let tmp = tempfile::tempdir().unwrap();
        let f = tmp.path().join("bomb.gz");
        std::fs::write(&f, &l.blob).unwrap();
        let o = Command::new("sh")
            .arg("-c")
            .arg("gzip -dc \"$0\" 2>/dev/null | tar -tvf - 2>&1; gzip -dc \"$0\" 2>/dev/null | wc -c")
            .arg(&f)
            .output()
            .unwrap();
        let out = String::from_utf8_lossy(&o.stdout);
        assert!(
            out.contains(&expanded.to_string()) && out.contains("bomb"),
            "{out}"
        );
        let total: u64 = out.lines().last().unwrap().trim().parse().unwrap();
        assert_eq!(total, 512 + expanded.div_ceil(512) * 512 + 1024, "{out}");
    }

    /// The bench image: four layers, the last one `size` incompressible bytes; skopeo reads it.
    #[test]
    fn the_bench_image_has_its_payload() {
        let tmp = tempfile::tempdir().unwrap();
        let size = 1 << 20;
        let l = bench_layout(&tmp.path().join("b"), "1", size);
        let m = inspect_layout(&l);
        assert_eq!(m["mediaType"], MT_MANIFEST);
        let layers = m["layers"].as_array().unwrap();
        assert_eq!(layers.len(), 4);
        let payload = layers[3]["size"].as_u64().unwrap();
        assert!(
            payload > size as u64 && payload < size as u64 + 4096,
            "{payload}"
        );
    }

    /// umoci (an independent implementation of the image spec) unpacks the demo image to the
    /// tree the tests expect: the whiteout and the opaque directory applied.
    #[test]
    fn umoci_unpacks_the_demo_image_with_its_whiteouts() {
        let tmp = tempfile::tempdir().unwrap();
        let l = write_layout(
            &tmp.path().join("oci"),
            "1",
            &[demo_variant(Platform::Amd64)],
            false,
        );
        let bundle = tmp.path().join("bundle");
        let o = Command::new("umoci")
            .args(["unpack", "--image"])
            .arg(format!("{}:1", l.dir.display()))
            .arg(&bundle)
            .output()
            .expect("run umoci (apt-get install umoci)");
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let root = bundle.join("rootfs");
        assert!(!root.join("etc/doomed").exists());
        assert!(root.join("etc/passwd").is_file());
        let mut data: Vec<String> = std::fs::read_dir(root.join("data"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        data.sort();
        assert_eq!(data, ["new"]);
        assert!(root.join("app/hello.txt").is_file());
        assert!(root.join("bin/sh").is_symlink());
        // The OCI runtime config umoci derives from the image config.
        let cfg: Value =
            serde_json::from_slice(&std::fs::read(bundle.join("config.json")).unwrap()).unwrap();
        assert_eq!(cfg["process"]["cwd"], "/app");
        assert_eq!(cfg["process"]["user"]["uid"], 1000);
        assert_eq!(cfg["process"]["args"][0], "/bin/sh");
        // The demo script in that tree (chroot, uid 1000, the image's Env and WorkingDir)
        // prints the lines the tests expect (root only, as the tests run).
        let script = DEMO_SCRIPT.replace("exec sleep 3600", "true");
        let o = Command::new("chroot")
            .arg("--userspec=1000:1000")
            .arg(&root)
            .args([
                "/bin/env",
                "-i",
                "GREETING=hi",
                "PATH=/bin",
                "/bin/sh",
                "-c",
            ])
            .arg(format!("cd /app && {script}"))
            .output()
            .unwrap();
        let out = String::from_utf8_lossy(&o.stdout);
        let lines: Vec<&str> = out.lines().collect();
        let mut want = demo_expected_lines(Platform::Amd64);
        want.push("arch=x86_64".into());
        for w in &want {
            assert!(
                lines.contains(&w.as_str()),
                "{w} missing: {out}{}",
                String::from_utf8_lossy(&o.stderr)
            );
        }
    }

    /// zstd layers decompress to their tars (checked with the zstd command).
    #[test]
    fn zstd_layers_hold_their_tars() {
        let tmp = tempfile::tempdir().unwrap();
        let l = write_layout(
            &tmp.path().join("z"),
            "1",
            &[demo_variant_zstd(Platform::Amd64)],
            false,
        );
        let m = inspect_layout(&l);
        assert_eq!(m["layers"][2]["mediaType"], MT_LAYER_ZSTD);
        let blob = l.blob(m["layers"][2]["digest"].as_str().unwrap());
        let o = Command::new("sh")
            .arg("-c")
            .arg("zstd -dc \"$0\" | tar -tf -")
            .arg(&blob)
            .output()
            .unwrap();
        let out = String::from_utf8_lossy(&o.stdout);
        assert!(
            out.contains("data/.wh..wh..opq") && out.contains("app/hello.txt"),
            "{out}"
        );
    }
}
