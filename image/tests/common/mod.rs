//! Test kit: OCI layouts built in the test, a real `docker-registry` on loopback, skopeo pushes,
//! and a tiny fake registry for the flows the real one cannot show (bearer tokens, corruption).
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bramble_artifact::sha256_hex;
use flate2::Compression;
use flate2::write::GzEncoder;
use serde_json::json;

pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

/// A tar (gzip) layer from `(path, content)` entries.
pub fn layer(entries: &[(&str, &[u8])]) -> (Vec<u8>, String) {
    let mut b = tar::Builder::new(Vec::new());
    for (path, data) in entries {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_mtime(1_700_000_000);
        h.set_entry_type(tar::EntryType::Regular);
        b.append_data(&mut h, path, &data[..]).unwrap();
    }
    let tar = b.into_inner().unwrap();
    let diff_id = sha256_hex(&tar);
    let mut gz = GzEncoder::new(Vec::new(), Compression::default());
    gz.write_all(&tar).unwrap();
    (gz.finish().unwrap(), diff_id)
}

/// One platform's image as built.
#[derive(Debug, Clone)]
pub struct Built {
    pub os: String,
    pub arch: String,
    pub variant: Option<String>,
    pub manifest_sha: String,
    pub manifest_size: u64,
    pub config_sha: String,
    pub layers: Vec<(String, u64)>,
}

/// An OCI layout directory being written.
pub struct Layout {
    pub dir: PathBuf,
}

impl Layout {
    pub fn new(dir: &Path) -> Layout {
        std::fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
        std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
        Layout {
            dir: dir.to_path_buf(),
        }
    }

    pub fn blob(&self, bytes: &[u8]) -> String {
        let sha = sha256_hex(bytes);
        std::fs::write(self.dir.join("blobs/sha256").join(&sha), bytes).unwrap();
        sha
    }

    /// A manifest + config for a platform over `layers` (gzip blob, diff id).
    pub fn image(
        &self,
        os: &str,
        arch: &str,
        variant: Option<&str>,
        layers: &[(Vec<u8>, String)],
    ) -> Built {
        let mut cfg = json!({
            "architecture": arch,
            "os": os,
            "config": {
                "Entrypoint": ["/bin/app"],
                "Cmd": ["--serve", arch],
                "Env": ["PATH=/usr/bin:/bin", "MODE=test=yes"],
                "WorkingDir": "/srv",
                "User": "1000:1000",
                "ExposedPorts": {"8080/tcp": {}, "53/udp": {}}
            },
            "rootfs": {"type": "layers", "diff_ids": layers.iter().map(|(_, d)| format!("sha256:{d}")).collect::<Vec<_>>()}
        });
        if let Some(v) = variant {
            cfg["variant"] = json!(v);
        }
        let cfg = serde_json::to_vec(&cfg).unwrap();
        let config_sha = self.blob(&cfg);
        let mut ls = Vec::new();
        let mut descs = Vec::new();
        for (gz, _) in layers {
            let sha = self.blob(gz);
            descs.push(json!({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": format!("sha256:{sha}"), "size": gz.len()}));
            ls.push((sha, gz.len() as u64));
        }
        let m = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": format!("sha256:{config_sha}"), "size": cfg.len()},
            "layers": descs,
        }))
        .unwrap();
        let manifest_sha = self.blob(&m);
        Built {
            os: os.into(),
            arch: arch.into(),
            variant: variant.map(str::to_string),
            manifest_sha,
            manifest_size: m.len() as u64,
            config_sha,
            layers: ls,
        }
    }

    /// An index over `images`; returns its sha.
    pub fn index(&self, images: &[Built]) -> (String, Vec<u8>) {
        let ms: Vec<_> = images
            .iter()
            .map(|b| {
                let mut p = json!({"os": b.os, "architecture": b.arch});
                if let Some(v) = &b.variant {
                    p["variant"] = json!(v);
                }
                json!({"mediaType": OCI_MANIFEST, "digest": format!("sha256:{}", b.manifest_sha), "size": b.manifest_size, "platform": p})
            })
            .collect();
        let ix = serde_json::to_vec(
            &json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": ms}),
        )
        .unwrap();
        (self.blob(&ix), ix)
    }

    /// `index.json` naming `sha` (an index or a manifest) as tag `latest`.
    pub fn top(&self, media_type: &str, sha: &str, size: u64) {
        let top = json!({"schemaVersion": 2, "manifests": [{"mediaType": media_type, "digest": format!("sha256:{sha}"), "size": size, "annotations": {"org.opencontainers.image.ref.name": "latest"}}]});
        std::fs::write(
            self.dir.join("index.json"),
            serde_json::to_vec(&top).unwrap(),
        )
        .unwrap();
    }
}

/// The multi-arch test image: linux/amd64, linux/arm64, linux/arm/v7 (+ a buildx-style
/// attestation manifest `unknown/unknown`, skipped by the pull), three layers each: a shared base,
/// a per-arch layer, and one that deletes a file and makes a directory opaque.
pub fn multi_arch(dir: &Path) -> (Layout, String, Vec<Built>) {
    let l = Layout::new(dir);
    let base = layer(&[
        ("etc/base.txt", b"base\n"),
        ("bin/gone", b"deleted by layer 3\n"),
        ("opt/dir/a", b"hidden by the opaque dir\n"),
    ]);
    let top = layer(&[
        ("bin/.wh.gone", b""),
        ("opt/dir/.wh..wh..opq", b""),
        ("opt/dir/b", b"upper\n"),
    ]);
    let mut built = Vec::new();
    for (arch, variant) in [("amd64", None), ("arm64", Some("v8")), ("arm", Some("v7"))] {
        let own = layer(&[("etc/arch", format!("{arch}{variant:?}\n").as_bytes())]);
        built.push(l.image("linux", arch, variant, &[base.clone(), own, top.clone()]));
    }
    let att = l.image(
        "unknown",
        "unknown",
        None,
        &[layer(&[("attestation.json", b"{}")])],
    );
    let mut all = built.clone();
    all.push(att);
    let (ix, bytes) = l.index(&all);
    l.top(OCI_INDEX, &ix, bytes.len() as u64);
    (l, ix, built)
}

/// A free loopback port.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A `docker-registry` (CNCF distribution) on 127.0.0.1, killed on drop.
pub struct Registry {
    child: Child,
    pub port: u16,
    pub dir: tempfile::TempDir,
    pub tls: bool,
    pub ca_pem: Option<String>,
    pub creds: Option<(String, String)>,
}

impl Registry {
    /// Starts one; `tls` makes a CA and a server certificate for 127.0.0.1; `creds` enables
    /// htpasswd (bcrypt) auth. Panics loudly if it cannot start.
    pub fn start(tls: bool, creds: Option<(&str, &str)>) -> Registry {
        let bin = "/usr/bin/docker-registry";
        assert!(
            Path::new(bin).exists(),
            "{bin} is missing: install Debian's docker-registry package (scripts/dev apt_install)"
        );
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let mut cfg = format!(
            "version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n  secret: bramble-test-secret\n",
            dir.path().join("data").display()
        );
        let mut ca_pem = None;
        if tls {
            use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
            let ca_key = KeyPair::generate().unwrap();
            let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
            ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            ca.distinguished_name
                .push(DnType::CommonName, "bramble test registry CA");
            let ca_cert = ca.self_signed(&ca_key).unwrap();
            let issuer = Issuer::new(ca, &ca_key);
            let key = KeyPair::generate().unwrap();
            let mut sp =
                CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
                    .unwrap();
            sp.distinguished_name.push(DnType::CommonName, "127.0.0.1");
            let cert = sp.signed_by(&key, &issuer).unwrap();
            std::fs::write(dir.path().join("server.crt"), cert.pem()).unwrap();
            std::fs::write(dir.path().join("server.key"), key.serialize_pem()).unwrap();
            cfg.push_str(&format!(
                "  tls:\n    certificate: {}\n    key: {}\n",
                dir.path().join("server.crt").display(),
                dir.path().join("server.key").display()
            ));
            ca_pem = Some(ca_cert.pem());
        }
        if let Some((u, p)) = creds {
            let out = Command::new("htpasswd")
                .args(["-Bbn", u, p])
                .output()
                .expect("htpasswd (apache2-utils) must be installed");
            assert!(out.status.success(), "htpasswd failed: {out:?}");
            std::fs::write(dir.path().join("htpasswd"), &out.stdout).unwrap();
            cfg.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: bramble-test\n    path: {}\n",
                dir.path().join("htpasswd").display()
            ));
        }
        let cfg_path = dir.path().join("config.yml");
        std::fs::write(&cfg_path, cfg).unwrap();
        let log = std::fs::File::create(dir.path().join("registry.log")).unwrap();
        let mut child = Command::new(bin)
            .arg("serve")
            .arg(&cfg_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("cannot start docker-registry");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(st) = child.try_wait().unwrap() {
                panic!(
                    "docker-registry exited ({st}) before listening: {}",
                    std::fs::read_to_string(dir.path().join("registry.log")).unwrap_or_default()
                );
            }
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "docker-registry did not listen on 127.0.0.1:{port} within 20 s: {}",
                std::fs::read_to_string(dir.path().join("registry.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Registry {
            child,
            port,
            dir,
            tls,
            ca_pem,
            creds: creds.map(|(u, p)| (u.to_string(), p.to_string())),
        }
    }

    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// `skopeo copy --all oci:DIR:latest docker://HOST/REPO:TAG` (extra args, e.g. `--format v2s2`).
    pub fn push(&self, layout: &Path, repo_tag: &str, extra: &[&str]) {
        let mut cmd = Command::new("skopeo");
        cmd.args([
            "--insecure-policy",
            "copy",
            "--all",
            "--dest-tls-verify=false",
        ]);
        if let Some((u, p)) = &self.creds {
            cmd.arg(format!("--dest-creds={u}:{p}"));
        }
        cmd.args(extra);
        cmd.arg(format!("oci:{}:latest", layout.display()));
        cmd.arg(format!("docker://{}/{repo_tag}", self.host()));
        let out = cmd.output().expect("skopeo must be installed");
        assert!(
            out.status.success(),
            "skopeo push failed: {}\n{}\nregistry log: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
        );
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Every file in `dir` is a blob named by the sha256 of its content; nothing else is there.
pub fn check_store(dir: &Path) -> Vec<String> {
    let mut names = Vec::new();
    let Ok(rd) = std::fs::read_dir(dir) else {
        return names;
    };
    for e in rd {
        let e = e.unwrap();
        let name = e.file_name().to_string_lossy().into_owned();
        assert!(
            bramble_artifact::is_sha256_hex(&name),
            "stray file {name} in the blob store"
        );
        let got = sha256_hex(&std::fs::read(e.path()).unwrap());
        assert_eq!(got, name, "blob {name} holds other content");
        names.push(name);
    }
    names.sort();
    names
}

// ---- a fake registry ------------------------------------------------------------------------

/// What the fake answers for a path.
#[derive(Clone)]
pub struct FakeResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// A tiny HTTP/1.1 server thread: `handler(method, path, headers)` answers each request;
/// every request is logged. Stops when dropped (the thread is parked on accept and ends with the
/// process; the listener is closed by a last connection).
pub struct Fake {
    pub port: u16,
    pub log: Arc<Mutex<RequestLog>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// Path and headers of each request.
pub type RequestLog = Vec<(String, HashMap<String, String>)>;

type Handler = dyn Fn(&str, &HashMap<String, String>) -> FakeResponse + Send + Sync;

impl Fake {
    pub fn start(handler: Arc<Handler>) -> Fake {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let log: Arc<Mutex<RequestLog>> = Arc::default();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (log2, stop2) = (log.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            for s in l.incoming() {
                if stop2.load(std::sync::atomic::Ordering::SeqCst) {
                    break;
                }
                let Ok(s) = s else { continue };
                let (h, lg) = (handler.clone(), log2.clone());
                // One thread per connection: a client may hold one open while opening another.
                std::thread::spawn(move || {
                    let _ = serve(s, &*h, &lg);
                });
            }
        });
        Fake {
            port,
            log,
            stop,
            thread: Some(thread),
        }
    }

    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn paths(&self) -> Vec<String> {
        self.log
            .lock()
            .unwrap()
            .iter()
            .map(|(p, _)| p.clone())
            .collect()
    }
}

impl Drop for Fake {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve(s: TcpStream, handler: &Handler, log: &Mutex<RequestLog>) -> std::io::Result<()> {
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut r = BufReader::new(s.try_clone()?);
    loop {
        let mut line = String::new();
        if r.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let mut parts = line.split_whitespace();
        let _method = parts.next().unwrap_or("").to_string();
        let path = parts.next().unwrap_or("").to_string();
        let mut headers = HashMap::new();
        loop {
            let mut h = String::new();
            r.read_line(&mut h)?;
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
            }
        }
        if let Some(n) = headers
            .get("content-length")
            .and_then(|n| n.parse::<u64>().ok())
        {
            std::io::copy(&mut (&mut r).take(n), &mut std::io::sink())?;
        }
        log.lock().unwrap().push((path.clone(), headers.clone()));
        let resp = handler(&path, &headers);
        let mut w = &s;
        let mut head = format!(
            "HTTP/1.1 {} X\r\nContent-Length: {}\r\n",
            resp.status,
            resp.body.len()
        );
        for (k, v) in &resp.headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str("\r\n");
        w.write_all(head.as_bytes())?;
        w.write_all(&resp.body)?;
        w.flush()?;
    }
}

pub fn ok(content_type: &str, body: Vec<u8>) -> FakeResponse {
    FakeResponse {
        status: 200,
        headers: vec![("Content-Type".into(), content_type.into())],
        body,
    }
}

pub fn status(code: u16) -> FakeResponse {
    FakeResponse {
        status: code,
        headers: vec![],
        body: b"{\"errors\":[]}".to_vec(),
    }
}
