//! A real OCI registry for the tests: Debian's `docker-registry` (the CNCF distribution
//! registry, `apt-get install docker-registry`) on `127.0.0.1:<free port>` with its own config
//! and storage in a temp dir, killed by PID when dropped. Three modes ([`Mode`]): plain HTTP,
//! HTTPS with a test CA (its PEM is [`Registry::ca_pem`], what `[[registry]] ca = ...` takes),
//! htpasswd basic auth (bcrypt, over HTTPS), and bearer tokens (HTTPS; Docker's token flow: the
//! registry answers 401 with `WWW-Authenticate: Bearer realm=...`, the kit's token server on
//! plain HTTP loopback checks the basic credentials and issues an ES256 JWT the registry
//! verifies against its `rootcertbundle`). Images are pushed with `skopeo copy --all`.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::oci::Layout;
use crate::{Proc, free_port};

/// `/usr/bin/docker-registry`.
pub const REGISTRY_BIN: &str = "/usr/bin/docker-registry";

/// How the registry serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// Plain HTTP, anonymous.
    Http,
    /// HTTPS with a certificate of a test CA, anonymous.
    Https,
    /// HTTPS and htpasswd basic auth for `user`/`password`.
    Htpasswd {
        /// User name.
        user: String,
        /// Password.
        password: String,
    },
    /// HTTPS and bearer tokens from the kit's token server, which takes `user`/`password`.
    Token {
        /// User name.
        user: String,
        /// Password.
        password: String,
    },
}

impl Mode {
    fn creds(&self) -> Option<(&str, &str)> {
        match self {
            Mode::Htpasswd { user, password } | Mode::Token { user, password } => {
                Some((user, password))
            }
            _ => None,
        }
    }
}

/// A running registry.
#[derive(Debug)]
pub struct Registry {
    proc: Option<Proc>,
    /// `127.0.0.1:PORT` (the host of image references: `127.0.0.1:PORT/demo/app:1`).
    pub addr: String,
    /// How it serves.
    pub mode: Mode,
    /// The test CA's certificate (PEM), for HTTPS modes.
    pub ca_pem: Option<String>,
    /// Its config, storage, certificates and log.
    pub dir: tempfile::TempDir,
    /// The token server, in [`Mode::Token`].
    pub token: Option<TokenServer>,
}

fn tls_files(dir: &Path) -> String {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
        KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, SanType,
    };
    let ca_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.distinguished_name
        .push(DnType::CommonName, "bramble test registry CA");
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca, &ca_key);
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
    let mut sp = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    sp.subject_alt_names
        .push(SanType::IpAddress("127.0.0.1".parse().unwrap()));
    sp.distinguished_name.push(DnType::CommonName, "127.0.0.1");
    sp.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    sp.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let cert = sp.signed_by(&key, &issuer).unwrap();
    std::fs::write(dir.join("server.crt"), cert.pem()).unwrap();
    std::fs::write(dir.join("server.key"), key.serialize_pem()).unwrap();
    // skopeo's --*-cert-dir takes every *.crt as a CA.
    std::fs::create_dir_all(dir.join("certs")).unwrap();
    std::fs::write(dir.join("certs/ca.crt"), ca_cert.pem()).unwrap();
    ca_cert.pem()
}

fn htpasswd_line(user: &str, password: &str) -> String {
    let o = Command::new("htpasswd")
        .args(["-Bbn", user, password])
        .output()
        .unwrap_or_else(|e| panic!("run htpasswd (apt-get install apache2-utils): {e}"));
    assert!(o.status.success(), "htpasswd -Bbn failed");
    String::from_utf8(o.stdout).unwrap().trim().to_string() + "\n"
}

impl Registry {
    /// Starts a registry serving as `mode` and waits until `/v2/` answers; panics with its log
    /// if it does not.
    pub fn start(mode: Mode) -> Registry {
        assert!(
            Path::new(REGISTRY_BIN).exists(),
            "{REGISTRY_BIN} is missing: apt-get install docker-registry (./scripts/dev test does)"
        );
        let mut dir = tempfile::Builder::new()
            .prefix("bramble-registry-")
            .tempdir()
            .unwrap();
        let ca_pem = (mode != Mode::Http).then(|| tls_files(dir.path()));
        let mut last = String::new();
        for _ in 0..4 {
            let addr = format!("127.0.0.1:{}", free_port());
            let mut r = Registry {
                proc: None,
                addr,
                mode: mode.clone(),
                ca_pem: ca_pem.clone(),
                dir,
                token: None,
            };
            match r.spawn() {
                Ok(()) => return r,
                Err(log) if log.contains("address already in use") => {
                    last = log;
                    dir = r.take_dir();
                }
                Err(log) => panic!("docker-registry on {} did not start: {log}", r.addr),
            }
        }
        panic!("docker-registry: four free ports were taken first; last log: {last}")
    }

    fn take_dir(self) -> tempfile::TempDir {
        let mut s = self;
        if let Some(mut p) = s.proc.take() {
            p.kill9();
        }
        // Move the dir out (Registry has no Drop of its own beyond its fields').
        s.dir
    }

    /// The user and password it takes, if any.
    pub fn credentials(&self) -> Option<(&str, &str)> {
        self.mode.creds()
    }

    fn config(&self) -> String {
        let d = self.dir.path().display();
        let mut c = format!(
            "version: 0.1\nlog:\n  level: info\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {d}/data\n  delete:\n    enabled: true\nhttp:\n  addr: {}\n  secret: bramble-test-secret\n",
            self.addr
        );
        if self.mode != Mode::Http {
            c += &format!("  tls:\n    certificate: {d}/server.crt\n    key: {d}/server.key\n");
        }
        if let Mode::Htpasswd { .. } = self.mode {
            c += &format!("auth:\n  htpasswd:\n    realm: bramble-test\n    path: {d}/htpasswd\n");
        }
        if let Some(t) = &self.token {
            c += &format!(
                "auth:\n  token:\n    realm: http://{}/token\n    service: {TOKEN_SERVICE}\n    issuer: {TOKEN_ISSUER}\n    rootcertbundle: {d}/token.crt\n",
                t.addr
            );
        }
        c
    }

    fn spawn(&mut self) -> Result<(), String> {
        let d = self.dir.path().to_path_buf();
        if let Mode::Htpasswd { user, password } = &self.mode {
            std::fs::write(d.join("htpasswd"), htpasswd_line(user, password)).unwrap();
        }
        if let Mode::Token { user, password } = &self.mode
            && self.token.is_none()
        {
            let t = TokenServer::start(user, password);
            std::fs::write(d.join("token.crt"), &t.cert_pem).unwrap();
            self.token = Some(t);
        }
        std::fs::create_dir_all(d.join("data")).unwrap();
        std::fs::write(d.join("config.yml"), self.config()).unwrap();
        let log = std::fs::File::create(d.join("registry.log")).unwrap();
        let child = Command::new(REGISTRY_BIN)
            .arg("serve")
            .arg(d.join("config.yml"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {REGISTRY_BIN}: {e}"));
        self.proc = Some(Proc {
            child,
            what: format!("docker-registry on {}", self.addr),
            cgroup_parent: None,
            bridge: None,
        });
        let t = Instant::now();
        loop {
            if let Some(p) = &mut self.proc
                && !p.alive()
            {
                return Err(self.log());
            }
            if self.answers() {
                return Ok(());
            }
            if t.elapsed() > Duration::from_secs(20) {
                return Err(format!("no answer on /v2/ after 20 s; log: {}", self.log()));
            }
            std::thread::sleep(Duration::from_millis(30));
        }
    }

    /// Whether `/v2/` answers (200, or 401 with auth).
    fn answers(&self) -> bool {
        match self.mode {
            Mode::Http => http(&self.addr, "GET", "/v2/", &[], b"")
                .is_ok_and(|(s, _, _)| s == 200 || s == 401),
            // TLS: the port accepts once the registry serves (it listens last).
            _ => TcpStream::connect(&self.addr).is_ok(),
        }
    }

    /// The registry's log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    /// `host:port`, the registry part of references.
    pub fn host(&self) -> &str {
        &self.addr
    }

    /// `ADDR/REPO_TAG` (`127.0.0.1:5000/demo/app:1`).
    pub fn reference(&self, repo_tag: &str) -> String {
        format!("{}/{repo_tag}", self.addr)
    }

    /// The skopeo flags to reach it (`prefix` = `dest` or `src`; `--creds` for inspect).
    fn skopeo_flags(&self, prefix: &str) -> Vec<String> {
        let mut f = Vec::new();
        let p = |s: &str| {
            if prefix.is_empty() {
                format!("--{s}")
            } else {
                format!("--{prefix}-{s}")
            }
        };
        match &self.mode {
            Mode::Http => f.push(format!("{}=false", p("tls-verify"))),
            Mode::Https => {
                f.push(p("cert-dir"));
                f.push(self.dir.path().join("certs").display().to_string());
            }
            Mode::Htpasswd { user, password } | Mode::Token { user, password } => {
                f.push(p("cert-dir"));
                f.push(self.dir.path().join("certs").display().to_string());
                f.push(p("creds"));
                f.push(format!("{user}:{password}"));
            }
        }
        f
    }

    /// Pushes every variant of `layout` as `repo_tag` (`demo/app:1`) with `skopeo copy --all`;
    /// returns the reference (`127.0.0.1:PORT/demo/app:1`).
    pub fn push(&self, layout: &Layout, repo_tag: &str) -> String {
        let r = self.reference(repo_tag);
        let mut c = Command::new("skopeo");
        c.args(["--insecure-policy", "copy", "--all", "--preserve-digests"])
            .args(self.skopeo_flags("dest"))
            .arg(layout.skopeo_ref())
            .arg(format!("docker://{r}"));
        let o = c.output().expect("run skopeo (apt-get install skopeo)");
        assert!(
            o.status.success(),
            "skopeo copy {} to {r} failed: {}{}\nregistry log: {}",
            layout.skopeo_ref(),
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr),
            crate::tail(&self.log(), 3000)
        );
        r
    }

    /// `skopeo inspect --raw docker://REF` of `repo_tag`: the manifest or index as served.
    pub fn inspect_raw(&self, repo_tag: &str) -> serde_json::Value {
        let r = self.reference(repo_tag);
        let o = Command::new("skopeo")
            .args(["inspect", "--raw"])
            .args(self.skopeo_flags(""))
            .arg(format!("docker://{r}"))
            .output()
            .expect("run skopeo");
        assert!(
            o.status.success(),
            "skopeo inspect --raw {r}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        serde_json::from_slice(&o.stdout).unwrap()
    }

    /// Where the registry stores blob `digest` (`sha256:…` or bare hex): overwrite it to serve
    /// a blob whose bytes do not match its digest.
    pub fn blob_path(&self, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
        self.dir
            .path()
            .join("data/docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }

    /// Flips every byte of the stored blob `digest` (same size, other content).
    pub fn corrupt_blob(&self, digest: &str) {
        let p = self.blob_path(digest);
        let mut b = std::fs::read(&p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()));
        for x in &mut b {
            *x = !*x;
        }
        std::fs::write(&p, b).unwrap();
    }

    /// Uploads `bytes` as a blob of `repo` and returns its digest (plain HTTP mode only: raw
    /// pushes of what skopeo would not push).
    pub fn put_blob(&self, repo: &str, bytes: &[u8]) -> String {
        assert_eq!(
            self.mode,
            Mode::Http,
            "raw pushes are for the HTTP registry"
        );
        let digest = format!("sha256:{}", crate::oci::sha256_hex(bytes));
        let (s, h, b) = http(
            &self.addr,
            "POST",
            &format!("/v2/{repo}/blobs/uploads/"),
            &[],
            b"",
        )
        .expect("start an upload");
        assert_eq!(s, 202, "start upload: {s} {}", String::from_utf8_lossy(&b));
        let loc = header(&h, "location").expect("upload location");
        let loc = loc.split_once(&self.addr).map_or(loc.as_str(), |x| x.1);
        let sep = if loc.contains('?') { '&' } else { '?' };
        let (s, _, b) = http(
            &self.addr,
            "PUT",
            &format!("{loc}{sep}digest={digest}"),
            &[("Content-Type", "application/octet-stream")],
            bytes,
        )
        .expect("upload");
        assert_eq!(s, 201, "upload: {s} {}", String::from_utf8_lossy(&b));
        digest
    }

    /// Puts `manifest` (of `media_type`) as `repo:reference` (plain HTTP mode only).
    pub fn put_manifest(&self, repo: &str, reference: &str, media_type: &str, manifest: &[u8]) {
        assert_eq!(
            self.mode,
            Mode::Http,
            "raw pushes are for the HTTP registry"
        );
        let (s, _, b) = http(
            &self.addr,
            "PUT",
            &format!("/v2/{repo}/manifests/{reference}"),
            &[("Content-Type", media_type)],
            manifest,
        )
        .expect("put manifest");
        assert_eq!(s, 201, "put manifest: {s} {}", String::from_utf8_lossy(&b));
    }

    /// Stops it (SIGKILL): the registry is down from now on, its port refuses.
    pub fn stop(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.kill9();
        }
    }
}

/// The token service name the registry expects in tokens (`aud`).
pub const TOKEN_SERVICE: &str = "bramble-test-registry";
/// The token issuer (`iss`).
pub const TOKEN_ISSUER: &str = "bramble-test-token-issuer";

/// A bearer-token server for [`Mode::Token`] (Docker's token flow) on plain HTTP loopback:
/// `GET /token?service=..&scope=repository:NAME:ACTIONS` with basic auth for the one user
/// answers `{"token": JWT, "access_token": JWT, "expires_in": 300}`, the JWT signed ES256 with a
/// self-signed key (`x5c` header) the registry trusts. Wrong credentials: 401. Stopped on drop.
#[derive(Debug)]
pub struct TokenServer {
    /// `127.0.0.1:PORT`.
    pub addr: String,
    /// The signing certificate (the registry's `rootcertbundle`).
    pub cert_pem: String,
    /// Tokens issued so far.
    pub issued: std::sync::Arc<std::sync::atomic::AtomicU32>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl TokenServer {
    /// Starts it for `user`/`password`.
    pub fn start(user: &str, password: &str) -> TokenServer {
        use rcgen::{CertificateParams, DnType, KeyPair, PKCS_ECDSA_P256_SHA256};
        use std::sync::Arc;
        use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name
            .push(DnType::CommonName, "bramble test token signer");
        let cert = p.self_signed(&key).unwrap();
        let x5c = base64(cert.der(), false);
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap().to_string();
        let want = format!(
            "Basic {}",
            base64(format!("{user}:{password}").as_bytes(), false)
        );
        let stop = Arc::new(AtomicBool::new(false));
        let issued = Arc::new(AtomicU32::new(0));
        let (stop2, issued2, user) = (stop.clone(), issued.clone(), user.to_string());
        let thread = std::thread::spawn(move || {
            for s in l.incoming() {
                if stop2.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(mut s) = s else { continue };
                let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
                let mut buf = Vec::new();
                let mut b = [0u8; 4096];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut b) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => buf.extend_from_slice(&b[..n]),
                    }
                }
                let req = String::from_utf8_lossy(&buf).into_owned();
                let path = req.split_whitespace().nth(1).unwrap_or("").to_string();
                let auth = req
                    .lines()
                    .find_map(|l| {
                        l.split_once(':')
                            .filter(|(k, _)| k.eq_ignore_ascii_case("authorization"))
                            .map(|(_, v)| v.trim().to_string())
                    })
                    .unwrap_or_default();
                let (status, body) = if auth != want {
                    (
                        "401 Unauthorized",
                        r#"{"details":"bad credentials"}"#.to_string(),
                    )
                } else {
                    let query = path.split_once('?').map_or("", |x| x.1);
                    let scopes: Vec<String> = query
                        .split('&')
                        .filter_map(|kv| kv.strip_prefix("scope="))
                        .map(url_decode)
                        .collect();
                    let token = jwt(&key, &x5c, &user, &scopes);
                    issued2.fetch_add(1, Ordering::SeqCst);
                    (
                        "200 OK",
                        serde_json::json!({"token": token, "access_token": token, "expires_in": 300})
                            .to_string(),
                    )
                };
                let _ = s.write_all(
                    format!(
                        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    )
                    .as_bytes(),
                );
            }
        });
        TokenServer {
            addr,
            cert_pem: cert.pem(),
            issued,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for TokenServer {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        let _ = TcpStream::connect(&self.addr);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn url_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => {
                let h = std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("");
                out.push(u8::from_str_radix(h, 16).unwrap_or(b'?'));
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Base64 (standard, padded) or base64url (unpadded).
pub fn base64(data: &[u8], url: bool) -> String {
    let abc: &[u8; 64] = if url {
        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    } else {
        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    };
    let mut out = String::new();
    for c in data.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..=c.len() {
            out.push(abc[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
        if !url {
            for _ in c.len()..3 {
                out.push('=');
            }
        }
    }
    out
}

/// An ES256 JWT granting `scopes` (`repository:NAME:ACTIONS`) to `user`.
fn jwt(key: &rcgen::KeyPair, x5c: &str, user: &str, scopes: &[String]) -> String {
    use rcgen::SigningKey;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let access: Vec<serde_json::Value> = scopes
        .iter()
        .flat_map(|s| s.split(' '))
        .filter_map(|s| {
            let (kind, rest) = s.split_once(':')?;
            let (name, actions) = rest.rsplit_once(':')?;
            Some(serde_json::json!({"type": kind, "name": name, "actions": actions.split(',').collect::<Vec<_>>()}))
        })
        .collect();
    let header = serde_json::json!({"typ": "JWT", "alg": "ES256", "x5c": [x5c]});
    let claims = serde_json::json!({
        "iss": TOKEN_ISSUER, "sub": user, "aud": TOKEN_SERVICE,
        "exp": now + 300, "nbf": now - 10, "iat": now,
        "jti": format!("{:016x}", fastrand::u64(..)),
        "access": access,
    });
    let signing_input = format!(
        "{}.{}",
        base64(header.to_string().as_bytes(), true),
        base64(claims.to_string().as_bytes(), true)
    );
    let der = key.sign(signing_input.as_bytes()).unwrap();
    format!("{signing_input}.{}", base64(&der_to_raw(&der), true))
}

/// An ASN.1 ECDSA signature (SEQUENCE of two INTEGERs) as JWS's 64 raw bytes.
fn der_to_raw(der: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    let mut i = 2; // SEQUENCE, length (< 128 for P-256)
    for _ in 0..2 {
        assert_eq!(der[i], 2, "INTEGER");
        let len = der[i + 1] as usize;
        let mut v = &der[i + 2..i + 2 + len];
        while v.len() > 32 && v[0] == 0 {
            v = &v[1..];
        }
        out.extend(std::iter::repeat_n(0u8, 32 - v.len()));
        out.extend_from_slice(v);
        i += 2 + len;
    }
    out
}

/// The value of header `name` (lowercase) in `headers`.
pub fn header(headers: &[(String, String)], name: &str) -> Option<String> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.clone())
}

/// An HTTP answer: status, headers, body.
pub type Response = (u16, Vec<(String, String)>, Vec<u8>);

/// One plain HTTP/1.1 request (`Connection: close`): status, headers, body.
pub fn http(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<Response> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req += &format!("{k}: {v}\r\n");
    }
    req += "\r\n";
    s.write_all(req.as_bytes())?;
    s.write_all(body)?;
    let mut resp = Vec::new();
    s.read_to_end(&mut resp)?;
    let end = resp
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| std::io::Error::other("no end of headers"))?;
    let head = String::from_utf8_lossy(&resp[..end]).into_owned();
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other("no status"))?;
    let hs = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    Ok((status, hs, resp[end + 4..].to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oci::{MT_INDEX, Platform, demo_layout, docker_archive, oci_archive};

    /// The whole kit: the demo layout (three arches, three layers), a registry in each mode,
    /// pushed with skopeo and read back; the archives `bramble image import` reads.
    #[test]
    fn layouts_push_to_registries_in_every_mode() {
        let tmp = tempfile::tempdir().unwrap();
        let layout = demo_layout(&tmp.path().join("oci"), "1", &Platform::ALL);
        let raw = crate::oci::inspect_layout(&layout);
        assert_eq!(raw["mediaType"], MT_INDEX);
        assert_eq!(raw["manifests"].as_array().unwrap().len(), 3);
        for mode in [
            Mode::Http,
            Mode::Https,
            Mode::Htpasswd {
                user: "puller".into(),
                password: "s3cret".into(),
            },
            Mode::Token {
                user: "puller".into(),
                password: "s3cret".into(),
            },
        ] {
            let reg = Registry::start(mode.clone());
            let r = reg.push(&layout, "demo/app:1");
            assert!(r.ends_with("/demo/app:1"));
            let idx = reg.inspect_raw("demo/app:1");
            assert_eq!(idx["mediaType"], MT_INDEX, "{mode:?}: {idx}");
            let plats: Vec<String> = idx["manifests"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| {
                    let p = &m["platform"];
                    let mut s = format!(
                        "{}/{}",
                        p["os"].as_str().unwrap(),
                        p["architecture"].as_str().unwrap()
                    );
                    if let Some(v) = p["variant"].as_str() {
                        s += &format!("/{v}");
                    }
                    s
                })
                .collect();
            assert_eq!(
                plats,
                ["linux/amd64", "linux/arm64", "linux/arm/v7"],
                "{mode:?}"
            );
            // The digests are the layout's (pushed as they are).
            let m0 = idx["manifests"][0]["digest"].as_str().unwrap();
            assert_eq!(m0, layout.manifest(Platform::Amd64));
            assert!(reg.blob_path(&layout.layers[0].1[2]).is_file());
            if let Some(t) = &reg.token {
                assert!(
                    t.issued.load(std::sync::atomic::Ordering::SeqCst) > 0,
                    "no token issued"
                );
            }
            if mode.creds().is_some() {
                // Anonymous: refused.
                let o = Command::new("skopeo")
                    .args(["inspect", "--raw", "--cert-dir"])
                    .arg(reg.dir.path().join("certs"))
                    .arg(format!("docker://{r}"))
                    .output()
                    .unwrap();
                assert!(
                    !o.status.success(),
                    "anonymous inspect of an htpasswd registry"
                );
            }
        }
        let da = tmp.path().join("app.docker.tar");
        docker_archive(&layout, Platform::Amd64, &da, "demo/app:1");
        let list = Command::new("tar").arg("-tf").arg(&da).output().unwrap();
        let list = String::from_utf8_lossy(&list.stdout);
        assert!(list.lines().any(|l| l == "manifest.json"), "{list}");
        let oa = tmp.path().join("app.oci.tar");
        oci_archive(&layout, &oa);
        let list = Command::new("tar").arg("-tf").arg(&oa).output().unwrap();
        let list = String::from_utf8_lossy(&list.stdout);
        assert!(
            list.lines()
                .any(|l| l.trim_start_matches("./") == "index.json"),
            "{list}"
        );
    }

    #[test]
    fn base64_encodes_as_rfc4648() {
        assert_eq!(base64(b"foobar", false), "Zm9vYmFy");
        assert_eq!(base64(b"fooba", false), "Zm9vYmE=");
        assert_eq!(base64(b"foob", false), "Zm9vYg==");
        assert_eq!(base64(b"fo\xff\xfe", true), "Zm___g");
        assert_eq!(
            url_decode("repository%3Ademo%2Fapp%3Apull"),
            "repository:demo/app:pull"
        );
    }

    /// Raw pushes: a manifest skopeo would not copy (a Helm chart), and a stopped registry.
    #[test]
    fn raw_pushes_and_a_stopped_registry() {
        let tmp = tempfile::tempdir().unwrap();
        let helm = crate::oci::helm_layout(&tmp.path().join("helm"), "1");
        let mut reg = Registry::start(Mode::Http);
        let m = std::fs::read(helm.blob(&helm.root_digest)).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&m).unwrap();
        for d in std::iter::once(&v["config"]).chain(v["layers"].as_array().unwrap()) {
            let digest = d["digest"].as_str().unwrap();
            let got = reg.put_blob("demo/chart", &std::fs::read(helm.blob(digest)).unwrap());
            assert_eq!(got, digest);
        }
        reg.put_manifest("demo/chart", "1", crate::oci::MT_MANIFEST, &m);
        let raw = reg.inspect_raw("demo/chart:1");
        assert_eq!(
            raw["config"]["mediaType"],
            "application/vnd.cncf.helm.config.v1+json"
        );
        let addr = reg.addr.clone();
        reg.stop();
        assert!(TcpStream::connect(&addr).is_err());
    }
}
