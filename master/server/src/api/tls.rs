//! TLS for every connection.
//!
//! The master owns a CA and a server certificate (ECDSA P-256), created by rcgen at first start
//! in the data dir and reused afterwards:
//!
//! | file | what |
//! |---|---|
//! | `ca.crt`, `ca.key` | the master's CA (kept for signing; never sent) |
//! | `server.crt`, `server.key` | what the master presents: a chain of exactly one certificate |
//!
//! Keys are PKCS#8 PEM, mode 0600. Dialers (workers, the CLI, tests) do not trust a CA: they pin
//! the sha256 of `server.crt`'s DER, which travels in the token files
//! (`K10<pin>::<id>.<secret>`, see [`bramble_wire::token`]) and accept exactly one certificate
//! with that hash, whose key must sign the handshake. embedded-tls (the worker) does not check
//! that a chain's signer is a CA, so a pin is the only sound check there; the CLI does the same
//! (its dialer is [`bramble_client::tls`]).
//!
//! The server speaks TLS 1.3 only. rustls's ring provider offers P-256 key exchange and
//! AES-128-GCM, which is what embedded-tls needs; records are capped at [`MAX_FRAGMENT`] bytes of
//! plaintext so a small client receive buffer is enough.

use std::fs;
use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_net::TcpStream;
use bramble_wire::io::FrameReader;
use futures_lite::io::{ReadHalf, WriteHalf};
use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

// The name in the certificate and the pin's hash are shared with the dialers.
pub use bramble_client::tls::{SERVER_NAME, pin_of};

/// Largest plaintext the master puts in one TLS record (embedded clients size their receive
/// buffer from it: this plus 256 bytes).
pub const MAX_FRAGMENT: usize = 4096;

/// A server-side TLS connection.
pub type ServerStream = futures_rustls::server::TlsStream<Counted>;

/// A TCP stream that counts the bytes read, to tell a silent probe (0 bytes) from a client that
/// hung up in the middle of the handshake.
#[derive(Debug)]
pub struct Counted {
    inner: TcpStream,
    read: Arc<std::sync::atomic::AtomicUsize>,
}

impl futures_lite::AsyncRead for Counted {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut [u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let r = std::pin::Pin::new(&mut self.inner).poll_read(cx, buf);
        if let std::task::Poll::Ready(Ok(n)) = &r {
            self.read
                .fetch_add(*n, std::sync::atomic::Ordering::Relaxed);
        }
        r
    }
}

/// `AsyncWrite` for a wrapper by delegating to its `inner` field.
macro_rules! delegate_async_write {
    ($t:ty) => {
        impl futures_lite::AsyncWrite for $t {
            fn poll_write(
                mut self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
                buf: &[u8],
            ) -> std::task::Poll<std::io::Result<usize>> {
                std::pin::Pin::new(&mut self.inner).poll_write(cx, buf)
            }

            fn poll_flush(
                mut self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
            ) -> std::task::Poll<std::io::Result<()>> {
                std::pin::Pin::new(&mut self.inner).poll_flush(cx)
            }

            fn poll_close(
                mut self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
            ) -> std::task::Poll<std::io::Result<()>> {
                std::pin::Pin::new(&mut self.inner).poll_close(cx)
            }
        }
    };
}

delegate_async_write!(Counted);
/// The read half of an accepted connection, framed.
pub type ConnReader = FrameReader<ReadHalf<ServerStream>>;

/// The write half of an accepted connection (plus the socket, to shut it down).
#[derive(Debug)]
pub struct ConnWriter {
    inner: WriteHalf<ServerStream>,
    tcp: TcpStream,
}

impl ConnWriter {
    /// Shuts the socket down (both directions: the reader of this connection stops too).
    pub fn shutdown(&self, how: std::net::Shutdown) -> std::io::Result<()> {
        self.tcp.shutdown(how)
    }
}

delegate_async_write!(ConnWriter);

/// The master's TLS identity (its Debug output leaves the key out).
#[derive(Clone)]
pub struct Identity {
    /// `server.crt` as DER.
    pub cert_der: Vec<u8>,
    /// `server.key` as PKCS#8 DER.
    key_der: Vec<u8>,
    /// sha256 of `cert_der`, lowercase hex: what tokens pin.
    pub pin: String,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("pin", &self.pin)
            .finish_non_exhaustive()
    }
}

/// The file names of the master's TLS material under its data dir.
#[derive(Debug, Clone)]
pub struct Paths {
    /// CA certificate.
    pub ca_cert: PathBuf,
    /// CA key.
    pub ca_key: PathBuf,
    /// Server certificate.
    pub cert: PathBuf,
    /// Server key.
    pub key: PathBuf,
}

impl Paths {
    /// The files under `data_dir`.
    pub fn new(data_dir: &Path) -> Paths {
        Paths {
            ca_cert: data_dir.join("ca.crt"),
            ca_key: data_dir.join("ca.key"),
            cert: data_dir.join("server.crt"),
            key: data_dir.join("server.key"),
        }
    }
}

fn damaged(path: &Path, what: &str, data_dir: &Path) -> anyhow::Error {
    anyhow::anyhow!(
        "{}: {what}; restore it from a backup, or delete ca.crt, ca.key, server.crt and server.key in {} to have new ones generated (the pin changes: hand every worker and admin the new join.token/admin.token)",
        path.display(),
        data_dir.display()
    )
}

/// Loads the master's certificate and key from `data_dir`, creating the CA and the server
/// certificate at first start.
pub fn load_or_create(data_dir: &Path) -> anyhow::Result<Identity> {
    let p = Paths::new(data_dir);
    let have_cert = p.cert.exists();
    let have_key = p.key.exists();
    if !have_cert && !have_key {
        return create(data_dir, &p);
    }
    if !have_cert {
        return Err(damaged(
            &p.cert,
            "missing while server.key exists",
            data_dir,
        ));
    }
    if !have_key {
        return Err(damaged(&p.key, "missing while server.crt exists", data_dir));
    }
    let cert = CertificateDer::from_pem_file(&p.cert)
        .map_err(|e| damaged(&p.cert, &format!("not a PEM certificate ({e})"), data_dir))?;
    let key = PrivateKeyDer::from_pem_file(&p.key)
        .map_err(|e| damaged(&p.key, &format!("not a PEM private key ({e})"), data_dir))?;
    let PrivateKeyDer::Pkcs8(key) = key else {
        return Err(damaged(&p.key, "not a PKCS#8 key", data_dir));
    };
    let id = Identity {
        pin: pin_of(cert.as_ref()),
        cert_der: cert.as_ref().to_vec(),
        key_der: key.secret_pkcs8_der().to_vec(),
    };
    // The key must be usable and belong to the certificate.
    server_config(&id).map_err(|e| {
        damaged(
            &p.key,
            &format!("does not work with server.crt ({e:#})"),
            data_dir,
        )
    })?;
    Ok(id)
}

fn create(data_dir: &Path, p: &Paths) -> anyhow::Result<Identity> {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
        KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256,
    };
    fs::create_dir_all(data_dir)
        .map_err(|e| anyhow::anyhow!("cannot create data dir {}: {e}", data_dir.display()))?;
    let ca_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.distinguished_name
        .push(DnType::CommonName, "bramble master CA");
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_cert = ca.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca, &ca_key);

    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
    let mut sp = CertificateParams::new(vec![SERVER_NAME.to_string(), "localhost".to_string()])?;
    sp.distinguished_name.push(DnType::CommonName, SERVER_NAME);
    sp.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    sp.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let cert = sp.signed_by(&key, &issuer)?;

    // Keys first, the server certificate last: a crash in between leaves no server.crt, and the
    // next start generates everything again.
    write_file(&p.ca_key, ca_key.serialize_pem().as_bytes(), 0o600)?;
    write_file(&p.ca_cert, ca_cert.pem().as_bytes(), 0o644)?;
    write_file(&p.key, key.serialize_pem().as_bytes(), 0o600)?;
    write_file(&p.cert, cert.pem().as_bytes(), 0o644)?;
    let id = Identity {
        pin: pin_of(cert.der()),
        cert_der: cert.der().to_vec(),
        key_der: key.serialize_der(),
    };
    tracing::info!(pin = %id.pin, "created the master's CA and server certificate in {}", data_dir.display());
    Ok(id)
}

/// Writes `data` to `path` atomically (temp file, fsync, rename) with `mode`.
fn write_file(path: &Path, data: &[u8], mode: u32) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    let _ = fs::remove_file(&tmp);
    let res = (|| -> std::io::Result<()> {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
        fs::set_permissions(&tmp, fs::Permissions::from_mode(mode))?;
        fs::rename(&tmp, path)
    })();
    res.map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))
}

/// The server configuration: TLS 1.3 only, one certificate, no session tickets.
pub fn server_config(id: &Identity) -> anyhow::Result<Arc<ServerConfig>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let key = PrivateKeyDer::Pkcs8(id.key_der.clone().into());
    let mut cfg = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_no_client_auth()
        .with_single_cert(vec![CertificateDer::from(id.cert_der.clone())], key)?;
    cfg.max_fragment_size = Some(MAX_FRAGMENT);
    // Nobody resumes: the worker keeps one long connection, the CLI is short-lived.
    cfg.send_tls13_tickets = 0;
    Ok(Arc::new(cfg))
}

/// Performs the server side of the TLS handshake on `stream` within `limit`. On failure, logs
/// why (when `peer` is given) and returns `None`: the connection is dropped.
pub async fn handshake(
    acceptor: &futures_rustls::TlsAcceptor,
    stream: TcpStream,
    max_frame: usize,
    limit: std::time::Duration,
    peer: Option<std::net::SocketAddr>,
) -> Option<(ConnReader, ConnWriter)> {
    let read = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    handshake_counted(acceptor, stream, max_frame, limit, peer, read).await
}

/// [`handshake`], counting the bytes received into `read` (the accept loop's measure of whether
/// an unauthenticated connection is idle).
pub async fn handshake_counted(
    acceptor: &futures_rustls::TlsAcceptor,
    stream: TcpStream,
    max_frame: usize,
    limit: std::time::Duration,
    peer: Option<std::net::SocketAddr>,
    read: Arc<std::sync::atomic::AtomicUsize>,
) -> Option<(ConnReader, ConnWriter)> {
    use futures_lite::FutureExt;
    let tcp = stream.clone();
    let counted = Counted {
        inner: stream,
        read: read.clone(),
    };
    let res = acceptor
        .accept(counted)
        .or(async {
            smol::Timer::after(limit).await;
            Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("no TLS handshake within {} s", limit.as_secs()),
            ))
        })
        .await;
    match res {
        Ok(tls) => {
            let (r, w) = futures_lite::io::split(tls);
            Some((FrameReader::new(r, max_frame), ConnWriter { inner: w, tcp }))
        }
        Err(e) => {
            if let Some(peer) = peer {
                log_refused(peer, &e, read.load(std::sync::atomic::Ordering::Relaxed));
            }
            None
        }
    }
}

/// The token file's contents for a credential: `K10<pin>::<credential>`.
pub fn pinned_token(pin: &str, credential: &str) -> String {
    format!("{}{pin}::{credential}", bramble_wire::token::PIN_PREFIX)
}

/// Makes sure the token file the master generated at `path` pins the current certificate,
/// rewriting it (mode 0600) if it holds a bare credential or an older pin.
pub fn pin_token_file(path: &Path, pin: &str) -> anyhow::Result<()> {
    let text = fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("cannot read token file {}: {e}", path.display()))?;
    let parts = bramble_wire::token::split_token(&text).map_err(|e| {
        anyhow::anyhow!(
            "{}: {e}; delete the file to have a new one generated",
            path.display()
        )
    })?;
    if parts.pin == Some(pin) {
        return Ok(());
    }
    let line = format!("{}\n", pinned_token(pin, parts.credential));
    write_file(path, line.as_bytes(), 0o600)
}

/// Pins the token files: rewrites the master's own (default-path) files, warns about given ones.
pub fn pin_tokens(
    cfg: &super::Config,
    admin_default: &Path,
    join_default: &Path,
    pin: &str,
) -> anyhow::Result<()> {
    for (given, default) in [
        (&cfg.admin_token_file, admin_default),
        (&cfg.join_token_file, join_default),
    ] {
        match given {
            Some(p) => check_given_token_file(p, pin),
            None => pin_token_file(default, pin)?,
        }
    }
    Ok(())
}

/// Logs a connection dropped during the TLS handshake, after `bytes` bytes from the peer.
fn log_refused(peer: std::net::SocketAddr, e: &std::io::Error, bytes: usize) {
    if bytes == 0 {
        // Port probes and health checks: nothing was said.
        tracing::debug!(%peer, "connection closed before any TLS byte: {e}");
    } else if e.kind() == std::io::ErrorKind::UnexpectedEof {
        tracing::warn!(
            %peer,
            "TLS handshake failed: the client hung up after the master's certificate: it most likely pins another certificate; give it this master's DATA_DIR/join.token or admin.token"
        );
    } else {
        tracing::warn!(
            %peer,
            "TLS handshake failed, connection dropped: {e} (a plaintext or non-TLS client cannot talk to the master)"
        );
    }
}

/// Warns when a token file given on the command line does not pin this master's certificate.
pub fn check_given_token_file(path: &Path, pin: &str) {
    let Ok(text) = fs::read_to_string(path) else {
        return;
    };
    let ok = matches!(bramble_wire::token::split_token(&text), Ok(p) if p.pin == Some(pin));
    if !ok {
        tracing::warn!(
            "{} does not pin this master's certificate: dialers refuse a token without it; write it as K10{pin}::<id>.<secret>",
            path.display()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creates_then_reuses_and_explains_damage() {
        let dir = tempfile::tempdir().unwrap();
        let a = load_or_create(dir.path()).unwrap();
        let b = load_or_create(dir.path()).unwrap();
        assert_eq!(a.pin, b.pin);
        assert_eq!(a.pin.len(), 64);
        for f in ["ca.key", "server.key"] {
            let mode = fs::metadata(dir.path().join(f))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{f}");
        }
        fs::write(dir.path().join("server.key"), "garbage").unwrap();
        let e = load_or_create(dir.path()).unwrap_err().to_string();
        assert!(e.contains("server.key") && e.contains("delete"), "{e}");
        fs::remove_file(dir.path().join("server.key")).unwrap();
        let e = load_or_create(dir.path()).unwrap_err().to_string();
        assert!(e.contains("server.key") && e.contains("missing"), "{e}");
    }

    #[test]
    fn token_files_get_the_pin() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("join.token");
        fs::write(&p, "j1.secret\n").unwrap();
        let pin = "ab".repeat(32);
        pin_token_file(&p, &pin).unwrap();
        let t = fs::read_to_string(&p).unwrap();
        assert_eq!(t, format!("K10{pin}::j1.secret\n"));
        let mode = fs::metadata(&p).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        // A new certificate: the pin is replaced, the credential kept.
        let pin2 = "cd".repeat(32);
        pin_token_file(&p, &pin2).unwrap();
        let t = fs::read_to_string(&p).unwrap();
        assert_eq!(t, format!("K10{pin2}::j1.secret\n"));
    }
}
