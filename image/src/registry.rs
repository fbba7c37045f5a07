//! The registry client: the OCI distribution API (`/v2/<repo>/manifests/<ref>`,
//! `/v2/<repo>/blobs/<digest>`) over HTTP or HTTPS, blocking (the master calls [`pull`] in
//! `smol::unblock`), with `ureq` on rustls + ring.
//!
//! - Auth: anonymous first; a 401 with `WWW-Authenticate: Bearer realm=…,service=…,scope=…`
//!   fetches a token from the realm (with the basic credentials if given; Docker Hub answers
//!   `token` or `access_token`) and retries; a `Basic` challenge retries with basic auth.
//! - Retries: 429 (honouring `Retry-After` up to [`MAX_RETRY_AFTER`]), 5xx and connection errors
//!   are retried with backoff, at most [`ATTEMPTS`] attempts; 401/403/404 are not, and each has
//!   its own message.
//! - Every manifest, config and layer is verified against its digest while it streams into the
//!   [`BlobStore`]; a mismatch or an over-limit blob leaves nothing behind.

use std::io::Read;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use bramble_artifact::sha256_hex;
use bramble_wire::image_ref::ImageRef;
use bramble_wire::objects::{Image, ImageLayer};
use ureq::http::Response;
use ureq::tls::{Certificate, RootCerts, TlsConfig, TlsProvider};

use crate::formats::{self, ACCEPT, Blobs, FormatError, MAX_MANIFEST_BYTES, SmallKind};
use crate::store::{BlobStore, StoreError};

/// Attempts per request when the registry answers 429/5xx or the connection fails.
pub const ATTEMPTS: u32 = 4;
/// Longest `Retry-After` honoured.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(20);

/// How to reach a registry (from the `[[registry]]` object whose host is the reference's).
#[derive(Debug, Clone, Default)]
pub struct RegistrySettings {
    /// Plain HTTP.
    pub insecure: bool,
    /// Basic-auth user (and for the token service of bearer auth).
    pub username: Option<String>,
    /// Its password.
    pub password: Option<String>,
    /// Fetch from this host (`mirror.lan:5000`) instead of the reference's.
    pub mirror: Option<String>,
    /// PEM certificates trusted besides Mozilla's roots.
    pub ca_pem: Option<String>,
}

/// Limits of a pull.
#[derive(Debug, Clone)]
pub struct PullLimits {
    /// Largest layer blob (`bramble master --max-artifact-size`).
    pub max_blob_bytes: u64,
}

/// A progress report.
#[derive(Debug, Clone)]
pub struct Progress {
    /// What is happening (`pulling layer 2/5 (sha256:ab12…, linux/arm64)`).
    pub message: String,
    /// Layer bytes held so far.
    pub done: u64,
    /// Layer bytes of the image (0 until the manifests are read).
    pub total: u64,
}

/// Why a pull failed. `Display` names the image, the registry or blob, and the fix.
#[derive(Debug, thiserror::Error)]
pub enum PullError {
    /// 404 on the manifest.
    #[error("image {reference}: not found in registry {host} (404): check the name and tag")]
    NotFound {
        /// The reference.
        reference: String,
        /// The registry contacted.
        host: String,
    },
    /// 404 on a blob the manifest names.
    #[error(
        "image {reference}: registry {host} has no blob sha256:{sha256} ({what}, 404): the image was pushed incompletely; push it again"
    )]
    BlobNotFound {
        /// The reference.
        reference: String,
        /// The registry.
        host: String,
        /// What it is.
        what: String,
        /// Its digest.
        sha256: String,
    },
    /// 401.
    #[error("image {reference}: {}", if *with_credentials {
        format!("registry {host} refused the credentials (401): check the username and password keys of the [[registry]] credentials secret for host \"{host}\"")
    } else {
        format!("registry {host} requires authentication (401): create a secret with keys username and password and a [[registry]] with host = \"{host}\" and credentials = \"NAMESPACE/NAME\"")
    })]
    Unauthorized {
        /// The reference.
        reference: String,
        /// The registry (or its token service).
        host: String,
        /// Whether credentials were sent.
        with_credentials: bool,
    },
    /// 403.
    #[error(
        "image {reference}: registry {host} denied access (403): the account has no pull permission on this repository"
    )]
    Forbidden {
        /// The reference.
        reference: String,
        /// The registry.
        host: String,
    },
    /// 429 after the retries.
    #[error(
        "image {reference}: registry {host} is rate-limiting pulls (429) after {ATTEMPTS} attempts: retry later, or pull through a mirror ([[registry]] mirror) or with credentials"
    )]
    RateLimited {
        /// The reference.
        reference: String,
        /// The registry.
        host: String,
    },
    /// 5xx after the retries.
    #[error(
        "image {reference}: registry {host} failed with HTTP {status} after {ATTEMPTS} attempts: retry later"
    )]
    Server {
        /// The reference.
        reference: String,
        /// The registry.
        host: String,
        /// The status.
        status: u16,
    },
    /// Connection failure after the retries.
    #[error("image {reference}: cannot reach registry {host}: {reason}")]
    Network {
        /// The reference.
        reference: String,
        /// The registry.
        host: String,
        /// Why.
        reason: String,
    },
    /// TLS failure (untrusted certificate, plain HTTP server).
    #[error(
        "image {reference}: TLS with registry {host} failed: {reason}: add its CA to the [[registry]]'s ca, or set insecure = true if it serves plain HTTP"
    )]
    Tls {
        /// The reference.
        reference: String,
        /// The registry.
        host: String,
        /// Why.
        reason: String,
    },
    /// Any other unexpected answer.
    #[error("image {reference}: registry {host}: {reason}")]
    Protocol {
        /// The reference.
        reference: String,
        /// The registry.
        host: String,
        /// What.
        reason: String,
    },
    /// The image's documents are unsupported or malformed.
    #[error("image {reference}: {source}")]
    Format {
        /// The reference.
        reference: String,
        /// Why.
        source: FormatError,
    },
    /// A blob failed verification or the limit, or the store failed.
    #[error("image {reference}: {}", match source {
        StoreError::TooLarge { .. } => format!("{source} (bramble master --max-artifact-size)"),
        _ => source.to_string(),
    })]
    Blob {
        /// The reference.
        reference: String,
        /// Why.
        source: StoreError,
    },
}

impl PullError {
    /// Whether retrying later may help: 429, 5xx, network errors.
    pub fn retryable(&self) -> bool {
        match self {
            PullError::RateLimited { .. }
            | PullError::Server { .. }
            | PullError::Network { .. } => true,
            PullError::Blob { source, .. } => source.is_read(),
            _ => false,
        }
    }
}

/// `host` for the API: Docker Hub's API lives on `registry-1.docker.io`.
fn api_host(host: &str) -> &str {
    if host == "docker.io" {
        "registry-1.docker.io"
    } else {
        host
    }
}

fn tls_config(ca_pem: Option<&str>) -> Result<TlsConfig, String> {
    let mut certs: Vec<Certificate<'static>> = webpki_root_certs::TLS_SERVER_ROOT_CERTS
        .iter()
        .map(|c| Certificate::from_der(c.as_ref()).to_owned())
        .collect();
    if let Some(pem) = ca_pem {
        let mut n = 0;
        for item in ureq::tls::parse_pem(pem.as_bytes()) {
            match item {
                Ok(ureq::tls::PemItem::Certificate(c)) => {
                    certs.push(c);
                    n += 1;
                }
                Ok(_) => {}
                Err(e) => return Err(format!("the [[registry]]'s ca is not valid PEM: {e}")),
            }
        }
        if n == 0 {
            return Err("the [[registry]]'s ca holds no PEM certificate".into());
        }
    }
    Ok(TlsConfig::builder()
        .provider(TlsProvider::Rustls)
        .root_certs(RootCerts::new_with_certs(&certs))
        .unversioned_rustls_crypto_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .build())
}

/// Parsed `WWW-Authenticate`.
#[derive(Debug, PartialEq, Eq)]
enum Challenge {
    Basic,
    Bearer {
        realm: String,
        service: Option<String>,
        scope: Option<String>,
    },
}

fn parse_challenge(h: &str) -> Option<Challenge> {
    let h = h.trim();
    let (scheme, rest) = h.split_once(' ').unwrap_or((h, ""));
    if scheme.eq_ignore_ascii_case("basic") {
        return Some(Challenge::Basic);
    }
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    // key="value" pairs separated by commas; values may contain commas inside quotes.
    let mut params: Vec<(String, String)> = Vec::new();
    let b = rest.as_bytes();
    let mut i = 0;
    while i < b.len() {
        while i < b.len() && (b[i] == b',' || b[i] == b' ') {
            i += 1;
        }
        let ks = i;
        while i < b.len() && b[i] != b'=' {
            i += 1;
        }
        let key = rest[ks..i].trim().to_ascii_lowercase();
        i += 1;
        let val = if i < b.len() && b[i] == b'"' {
            i += 1;
            let vs = i;
            while i < b.len() && b[i] != b'"' {
                i += 1;
            }
            let v = rest[vs..i.min(b.len())].to_string();
            i += 1;
            v
        } else {
            let vs = i.min(b.len());
            while i < b.len() && b[i] != b',' {
                i += 1;
            }
            rest[vs..i.min(b.len())].trim().to_string()
        };
        if !key.is_empty() {
            params.push((key, val));
        }
    }
    let get = |k: &str| params.iter().find(|(p, _)| p == k).map(|(_, v)| v.clone());
    Some(Challenge::Bearer {
        realm: get("realm")?,
        service: get("service"),
        scope: get("scope"),
    })
}

fn enc(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// One pull's connection state.
struct Client<'a> {
    agent: ureq::Agent,
    reference: &'a ImageRef,
    settings: &'a RegistrySettings,
    /// `scheme://host`.
    base: String,
    /// The host contacted (for messages).
    host: String,
    /// `Authorization` value once authenticated.
    auth: Option<String>,
}

enum Attempt {
    Done(Response<ureq::Body>),
    Retry(Option<Duration>, PullError),
    Fail(PullError),
}

impl<'a> Client<'a> {
    fn new(
        reference: &'a ImageRef,
        settings: &'a RegistrySettings,
    ) -> Result<Client<'a>, PullError> {
        let host = settings
            .mirror
            .clone()
            .filter(|m| !m.is_empty())
            .unwrap_or_else(|| api_host(&reference.registry).to_string());
        let tls = tls_config(settings.ca_pem.as_deref()).map_err(|reason| PullError::Tls {
            reference: reference.normalized(),
            host: host.clone(),
            reason,
        })?;
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .tls_config(tls)
            .user_agent(concat!("bramble/", env!("CARGO_PKG_VERSION")))
            .max_redirects(5)
            .timeout_connect(Some(Duration::from_secs(15)))
            .timeout_recv_response(Some(Duration::from_secs(60)))
            .timeout_per_read(Some(Duration::from_secs(60)))
            .build()
            .into();
        let scheme = if settings.insecure { "http" } else { "https" };
        Ok(Client {
            agent,
            reference,
            settings,
            base: format!("{scheme}://{host}"),
            host,
            auth: None,
        })
    }

    fn refname(&self) -> String {
        self.reference.normalized()
    }

    fn basic(&self) -> Option<String> {
        let u = self.settings.username.as_deref()?;
        let p = self.settings.password.as_deref().unwrap_or("");
        Some(format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"))
        ))
    }

    fn net_error(&self, e: ureq::Error) -> Attempt {
        let reason = e.to_string();
        let lower = reason.to_ascii_lowercase();
        let tls = matches!(
            e,
            ureq::Error::Tls(_) | ureq::Error::Rustls(_) | ureq::Error::Pem(_)
        ) || lower.contains("certificate")
            || lower.contains("tls")
            || lower.contains("handshake");
        if tls {
            return Attempt::Fail(PullError::Tls {
                reference: self.refname(),
                host: self.host.clone(),
                reason,
            });
        }
        if matches!(e, ureq::Error::Protocol(_)) {
            return Attempt::Fail(PullError::Protocol {
                reference: self.refname(),
                host: self.host.clone(),
                reason: format!(
                    "{reason} (if it serves HTTPS, remove insecure = true from its [[registry]])"
                ),
            });
        }
        Attempt::Retry(
            None,
            PullError::Network {
                reference: self.refname(),
                host: self.host.clone(),
                reason,
            },
        )
    }

    /// One GET with the current auth; no retries.
    fn get_once(
        &self,
        url: &str,
        accept: Option<&str>,
        auth: Option<&str>,
    ) -> Result<Response<ureq::Body>, ureq::Error> {
        let mut req = self.agent.get(url);
        if let Some(a) = accept {
            req = req.header("Accept", a);
        }
        if let Some(a) = auth {
            req = req.header("Authorization", a);
        }
        req.call()
    }

    /// GET with auth negotiation and retries. Answers a 2xx response, or the error of 401, 403,
    /// 404 (`what` names the object for 404s: `None` = the manifest of the reference).
    fn get(
        &mut self,
        path: &str,
        accept: Option<&str>,
        what: Option<(&str, &str)>,
    ) -> Result<Response<ureq::Body>, PullError> {
        let url = format!("{}{path}", self.base);
        let mut authed_now = false;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let outcome = match self.get_once(&url, accept, self.auth.as_deref()) {
                Err(e) => self.net_error(e),
                Ok(r) => {
                    let status = r.status().as_u16();
                    match status {
                        200..=299 => Attempt::Done(r),
                        401 if !authed_now => {
                            let challenge = r
                                .headers()
                                .get("www-authenticate")
                                .and_then(|v| v.to_str().ok())
                                .and_then(parse_challenge);
                            // Release the connection before the token request.
                            drop(r);
                            authed_now = true;
                            match self.authenticate(challenge)? {
                                true => {
                                    attempt -= 1;
                                    continue;
                                }
                                false => Attempt::Fail(self.unauthorized()),
                            }
                        }
                        401 => Attempt::Fail(self.unauthorized()),
                        403 => Attempt::Fail(PullError::Forbidden {
                            reference: self.refname(),
                            host: self.host.clone(),
                        }),
                        404 => Attempt::Fail(match what {
                            None => PullError::NotFound {
                                reference: self.refname(),
                                host: self.host.clone(),
                            },
                            Some((what, sha)) => PullError::BlobNotFound {
                                reference: self.refname(),
                                host: self.host.clone(),
                                what: what.to_string(),
                                sha256: sha.to_string(),
                            },
                        }),
                        429 => {
                            let after = r
                                .headers()
                                .get("retry-after")
                                .and_then(|v| v.to_str().ok())
                                .and_then(|v| v.trim().parse::<u64>().ok())
                                .map(|s| Duration::from_secs(s).min(MAX_RETRY_AFTER));
                            Attempt::Retry(
                                after,
                                PullError::RateLimited {
                                    reference: self.refname(),
                                    host: self.host.clone(),
                                },
                            )
                        }
                        500..=599 => Attempt::Retry(
                            None,
                            PullError::Server {
                                reference: self.refname(),
                                host: self.host.clone(),
                                status,
                            },
                        ),
                        _ => Attempt::Fail(PullError::Protocol {
                            reference: self.refname(),
                            host: self.host.clone(),
                            reason: format!("unexpected HTTP {status} for {path}"),
                        }),
                    }
                }
            };
            match outcome {
                Attempt::Done(r) => return Ok(r),
                Attempt::Fail(e) => return Err(e),
                Attempt::Retry(after, e) => {
                    if attempt >= ATTEMPTS {
                        return Err(e);
                    }
                    std::thread::sleep(after.unwrap_or_else(|| backoff(attempt)));
                }
            }
        }
    }

    fn unauthorized(&self) -> PullError {
        PullError::Unauthorized {
            reference: self.refname(),
            host: self.host.clone(),
            with_credentials: self.settings.username.is_some(),
        }
    }

    /// Answers a challenge: sets `auth`; `Ok(false)` when there is nothing to try.
    fn authenticate(&mut self, challenge: Option<Challenge>) -> Result<bool, PullError> {
        match challenge {
            Some(Challenge::Basic) => {
                self.auth = self.basic();
                Ok(self.auth.is_some())
            }
            Some(Challenge::Bearer {
                realm,
                service,
                scope,
            }) => {
                let scope = scope
                    .unwrap_or_else(|| format!("repository:{}:pull", self.reference.repository));
                let mut url = realm.clone();
                url.push(if realm.contains('?') { '&' } else { '?' });
                if let Some(s) = &service {
                    url.push_str(&format!("service={}&", enc(s)));
                }
                url.push_str(&format!("scope={}", enc(&scope)));
                let basic = self.basic();
                let mut attempt = 0;
                let mut resp = loop {
                    attempt += 1;
                    let e = match self.get_once(&url, Some("application/json"), basic.as_deref()) {
                        Ok(r) if r.status().is_server_error() || r.status().as_u16() == 429 => {
                            PullError::Server {
                                reference: self.refname(),
                                host: realm.clone(),
                                status: r.status().as_u16(),
                            }
                        }
                        Ok(r) => break r,
                        Err(e) => match self.net_error(e) {
                            Attempt::Retry(_, e) | Attempt::Fail(e) => e,
                            Attempt::Done(r) => break r,
                        },
                    };
                    if attempt >= ATTEMPTS || !e.retryable() {
                        return Err(e);
                    }
                    std::thread::sleep(backoff(attempt));
                };
                let status = resp.status().as_u16();
                if status == 401 || status == 403 {
                    return Err(PullError::Unauthorized {
                        reference: self.refname(),
                        host: self.host.clone(),
                        with_credentials: basic.is_some(),
                    });
                }
                if !(200..300).contains(&status) {
                    return Err(PullError::Protocol {
                        reference: self.refname(),
                        host: realm,
                        reason: format!("the token service answered HTTP {status}"),
                    });
                }
                #[derive(serde::Deserialize)]
                struct Token {
                    #[serde(default)]
                    token: Option<String>,
                    #[serde(default)]
                    access_token: Option<String>,
                }
                let mut body = Vec::new();
                resp.body_mut()
                    .as_reader()
                    .take(1 << 20)
                    .read_to_end(&mut body)
                    .map_err(|e| PullError::Network {
                        reference: self.refname(),
                        host: realm.clone(),
                        reason: e.to_string(),
                    })?;
                let t: Token = serde_json::from_slice(&body).map_err(|e| PullError::Protocol {
                    reference: self.refname(),
                    host: realm.clone(),
                    reason: format!("the token service's answer is not a token: {e}"),
                })?;
                let Some(tok) = t.token.or(t.access_token).filter(|t| !t.is_empty()) else {
                    return Err(PullError::Protocol {
                        reference: self.refname(),
                        host: realm,
                        reason: "the token service's answer has no token".into(),
                    });
                };
                self.auth = Some(format!("Bearer {tok}"));
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// Reads a manifest or config whole (≤ 4 MiB) and checks its digest (when known).
    fn small(
        &mut self,
        path: &str,
        accept: Option<&str>,
        what: Option<(&str, &str)>,
        expect_sha: Option<&str>,
    ) -> Result<(Vec<u8>, Option<String>, String), PullError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut r = self.get(path, accept, what)?;
            let ct = r
                .headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            let mut body = Vec::new();
            match r
                .body_mut()
                .as_reader()
                .take(MAX_MANIFEST_BYTES + 1)
                .read_to_end(&mut body)
            {
                Ok(_) => {}
                Err(e) => {
                    if attempt >= ATTEMPTS {
                        return Err(PullError::Network {
                            reference: self.refname(),
                            host: self.host.clone(),
                            reason: e.to_string(),
                        });
                    }
                    std::thread::sleep(backoff(attempt));
                    continue;
                }
            }
            let name = match what {
                Some((w, _)) => w.to_string(),
                None => format!("the manifest of {}", self.refname()),
            };
            if body.len() as u64 > MAX_MANIFEST_BYTES {
                return Err(PullError::Format {
                    reference: self.refname(),
                    source: FormatError::TooLarge {
                        what: name,
                        size: body.len() as u64,
                    },
                });
            }
            let actual = sha256_hex(&body);
            if let Some(want) = expect_sha
                && want != actual
            {
                return Err(PullError::Blob {
                    reference: self.refname(),
                    source: StoreError::DigestMismatch {
                        sha256: want.to_string(),
                        actual,
                    },
                });
            }
            return Ok((body, ct, actual));
        }
    }
}

fn backoff(attempt: u32) -> Duration {
    Duration::from_millis(250u64 << attempt.min(4))
}

/// The registry side of the walk in [`formats::resolve`].
struct Remote<'a, 'b> {
    client: Client<'a>,
    store: &'b BlobStore,
    limits: &'b PullLimits,
    progress: &'b mut dyn FnMut(Progress),
}

impl Blobs for Remote<'_, '_> {
    type Error = PullError;

    fn small(
        &mut self,
        what: &str,
        kind: SmallKind,
        sha256: &str,
        size: u64,
    ) -> Result<(Vec<u8>, Option<String>), PullError> {
        let reference = self.client.refname();
        if size > MAX_MANIFEST_BYTES {
            return Err(PullError::Format {
                reference,
                source: FormatError::TooLarge {
                    what: what.to_string(),
                    size,
                },
            });
        }
        if self.store.size(sha256) == Some(size) {
            let b = self
                .store
                .read_small(sha256, MAX_MANIFEST_BYTES)
                .map_err(|source| PullError::Blob { reference, source })?;
            return Ok((b, None));
        }
        let repo = &self.client.reference.repository;
        let (path, accept) = match kind {
            SmallKind::Manifest => (
                format!("/v2/{repo}/manifests/sha256:{sha256}"),
                Some(ACCEPT),
            ),
            SmallKind::Config => (format!("/v2/{repo}/blobs/sha256:{sha256}"), None),
        };
        let (body, ct, _) = self
            .client
            .small(&path, accept, Some((what, sha256)), Some(sha256))?;
        if body.len() as u64 != size {
            return Err(PullError::Blob {
                reference: self.client.refname(),
                source: StoreError::SizeMismatch {
                    sha256: sha256.to_string(),
                    expected: size,
                    actual: body.len() as u64,
                },
            });
        }
        self.store
            .put_bytes(sha256, &body)
            .map_err(|source| PullError::Blob {
                reference: self.client.refname(),
                source,
            })?;
        Ok((body, ct))
    }

    fn layers(&mut self, layers: &[(String, ImageLayer)]) -> Result<(), PullError> {
        let reference = self.client.refname();
        let total: u64 = layers.iter().map(|(_, l)| l.size).sum();
        let mut done: u64 = 0;
        let n = layers.len();
        for (i, (what, l)) in layers.iter().enumerate() {
            if l.size > self.limits.max_blob_bytes {
                return Err(PullError::Blob {
                    reference,
                    source: StoreError::TooLarge {
                        sha256: l.sha256.clone(),
                        max: self.limits.max_blob_bytes,
                    },
                });
            }
            let short = &l.sha256[..12];
            if self.store.size(&l.sha256) == Some(l.size) {
                done += l.size;
                (self.progress)(Progress {
                    message: format!("layer {}/{n} (sha256:{short}, {what}) already held", i + 1),
                    done,
                    total,
                });
                continue;
            }
            let path = format!(
                "/v2/{}/blobs/sha256:{}",
                self.client.reference.repository, l.sha256
            );
            let message = format!("pulling layer {}/{n} (sha256:{short}, {what})", i + 1);
            let mut attempt = 0;
            loop {
                attempt += 1;
                let resp =
                    self.client
                        .get(&path, None, Some((what.as_str(), l.sha256.as_str())))?;
                let mut reader = resp.into_body().into_reader();
                let progress = &mut *self.progress;
                let r = self.store.put(
                    &l.sha256,
                    Some(l.size),
                    self.limits.max_blob_bytes,
                    &mut reader,
                    &mut |d| {
                        progress(Progress {
                            message: message.clone(),
                            done: done + d,
                            total,
                        })
                    },
                );
                match r {
                    Ok(_) => break,
                    Err(e) if e.is_read() && attempt < ATTEMPTS => {
                        std::thread::sleep(backoff(attempt));
                    }
                    Err(source) => {
                        return Err(PullError::Blob {
                            reference: reference.clone(),
                            source,
                        });
                    }
                }
            }
            done += l.size;
        }
        Ok(())
    }
}

/// Pulls `reference`: the index (if any), every supported linux variant's manifest, config and
/// layers not yet in `store`; manifests and configs are stored as blobs too; every digest is
/// verified. Returns the wire [`Image`] (meta default, `reference` normalized, `digest` what the
/// reference resolved to, `pulled_ms` 0). Blocking.
pub fn pull(
    reference: &ImageRef,
    settings: &RegistrySettings,
    store: &BlobStore,
    limits: &PullLimits,
    progress: &mut dyn FnMut(Progress),
) -> Result<Image, PullError> {
    let mut client = Client::new(reference, settings)?;
    let refname = reference.normalized();
    progress(Progress {
        message: format!("resolving {refname} at {}", client.host),
        done: 0,
        total: 0,
    });
    let path = format!(
        "/v2/{}/manifests/{}",
        reference.repository,
        reference.api_reference()
    );
    let want = reference
        .digest
        .as_deref()
        .and_then(|d| d.strip_prefix("sha256:"))
        .map(str::to_string);
    let (root, ct, root_sha) = client.small(&path, Some(ACCEPT), None, want.as_deref())?;
    store
        .put_bytes(&root_sha, &root)
        .map_err(|source| PullError::Blob {
            reference: refname.clone(),
            source,
        })?;
    let mut remote = Remote {
        client,
        store,
        limits,
        progress,
    };
    formats::resolve(reference, &root_sha, &root, ct.as_deref(), &mut remote).map_err(|e| match e {
        PullError::Format { reference, source } if reference.is_empty() => PullError::Format {
            reference: refname,
            source,
        },
        e => e,
    })
}

impl From<FormatError> for PullError {
    fn from(source: FormatError) -> PullError {
        // The reference is filled in by `pull`.
        PullError::Format {
            reference: String::new(),
            source,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges() {
        assert_eq!(
            parse_challenge("Basic realm=\"Registry Realm\""),
            Some(Challenge::Basic)
        );
        assert_eq!(
            parse_challenge(
                "Bearer realm=\"https://auth.docker.io/token\",service=\"registry.docker.io\",scope=\"repository:library/alpine:pull\""
            ),
            Some(Challenge::Bearer {
                realm: "https://auth.docker.io/token".into(),
                service: Some("registry.docker.io".into()),
                scope: Some("repository:library/alpine:pull".into()),
            })
        );
        assert_eq!(
            parse_challenge("bearer realm=http://127.0.0.1:1/t, scope=\"repository:a:pull,push\""),
            Some(Challenge::Bearer {
                realm: "http://127.0.0.1:1/t".into(),
                service: None,
                scope: Some("repository:a:pull,push".into()),
            })
        );
        assert_eq!(parse_challenge("Bearer service=x"), None);
        assert_eq!(parse_challenge("Negotiate"), None);
        assert_eq!(enc("repository:a/b:pull"), "repository%3Aa%2Fb%3Apull");
    }

    #[test]
    fn tls_config_parses_ca() {
        assert!(tls_config(None).is_ok());
        assert!(tls_config(Some("not pem")).is_err());
        let ck = rcgen::generate_simple_self_signed(vec!["x".into()]).unwrap();
        assert!(tls_config(Some(&ck.cert.pem())).is_ok());
    }

    #[test]
    fn messages() {
        let e = PullError::NotFound {
            reference: "h:5000/app:1".into(),
            host: "h:5000".into(),
        };
        assert_eq!(
            e.to_string(),
            "image h:5000/app:1: not found in registry h:5000 (404): check the name and tag"
        );
        assert!(!e.retryable());
        let e = PullError::Server {
            reference: "r".into(),
            host: "h".into(),
            status: 503,
        };
        assert!(e.retryable());
        assert_eq!(api_host("docker.io"), "registry-1.docker.io");
        assert_eq!(api_host("h:5000"), "h:5000");
    }
}
