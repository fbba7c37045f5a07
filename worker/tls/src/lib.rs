//! The worker's TLS client: embedded-tls (TLS 1.3, AES-128-GCM, P-256) with a pinning verifier.
//!
//! embedded-tls's own chain verifier does not check that a signer is a CA (a node's key could
//! mint a "master" certificate it accepts), so it is not used. [`PinVerifier`] accepts exactly
//! one certificate whose sha256 is the pin from the join token (`K10<pin>::…`), takes the P-256
//! key out of that (now trusted) certificate and verifies the server's CertificateVerify
//! signature with it. After the handshake [`connect`] also checks that a signature *was*
//! verified, so a server that skips CertificateVerify cannot pass with the public certificate.
//!
//! embedded-tls speaks embedded-io-async and its split reader/writer borrow the connection's
//! buffers, so one task owns the TLS connection and pumps plaintext to a Unix socket pair; the
//! agent's framing code runs unchanged on the other end.
//!
//! Bulk downloads (artifacts, image layers) go through here, so the pump keeps system calls per
//! byte low: TCP is read [`RX_BUF`] bytes at a time ([`Io`] buffers them: embedded-tls itself
//! asks for a 5-byte record header, then for the record), and the records already received
//! whole are decrypted and written to the socket pair in one write of up to [`STAGE`] bytes.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use async_net::TcpStream;
use async_net::unix::UnixStream;
use embedded_tls::{
    Aes128GcmSha256, CertificateEntryRef, CertificateRef, CertificateVerifyRef, CryptoProvider,
    SignatureScheme, TlsConfig, TlsConnection, TlsContext, TlsError, TlsVerifier,
};
use futures_lite::{AsyncReadExt, AsyncWriteExt, FutureExt};
use p256::ecdsa::signature::Verifier as _;
use sha2::{Digest, Sha256};

/// Plaintext bytes in one TLS record at most (TLS's own limit; the master caps its records at
/// 4 KiB today, its `MAX_FRAGMENT`, but a receive buffer of the full size costs 12 KiB and
/// accepts any server).
const MAX_RECORD: usize = 16 * 1024;
/// Receive buffer: one record plus header, content type, tag and slack (the 16640 bytes
/// embedded-tls asks for).
const READ_BUF: usize = MAX_RECORD + 256;
/// Send buffer: records of up to 16 KiB.
const WRITE_BUF: usize = MAX_RECORD + embedded_tls::TLS_RECORD_OVERHEAD;
/// Bytes read from TCP at once.
const RX_BUF: usize = 64 * 1024;
/// Most plaintext the pump gathers for one write to the socket pair.
const STAGE: usize = 64 * 1024;

/// The DER prefix of a P-256 SubjectPublicKeyInfo (id-ecPublicKey, prime256v1, BIT STRING of 66
/// bytes with no unused bits); the 65-byte uncompressed point follows.
const P256_SPKI_PREFIX: [u8; 26] = [
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a,
    0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
];

/// Why the verifier refused the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// More (or fewer) than one certificate.
    Chain(usize),
    /// Not an X.509 certificate.
    NotX509,
    /// The certificate is not the pinned one.
    Mismatch {
        /// The pin (hex).
        expected: String,
        /// sha256 of what the server sent (hex).
        got: String,
    },
    /// The pinned certificate holds no P-256 key.
    NoP256Key,
    /// CertificateVerify is missing, of another scheme, or does not verify.
    BadSignature,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::Chain(n) => write!(
                f,
                "the server presented {n} certificates; the master presents exactly one (its own): this is not the master the token pins"
            ),
            Refusal::NotX509 => write!(f, "the server presented no X.509 certificate"),
            Refusal::Mismatch { expected, got } => write!(
                f,
                "the server's certificate does not match the join token's pin (expected sha256 {expected}, got {got}): the token is from another master or the master's certificate was regenerated; copy the master's current DATA_DIR/join.token to this node's --token-file"
            ),
            Refusal::NoP256Key => write!(f, "the pinned certificate has no P-256 key"),
            Refusal::BadSignature => write!(
                f,
                "the server does not hold the pinned certificate's key (CertificateVerify missing or invalid)"
            ),
        }
    }
}

/// Accepts exactly one certificate with the pinned sha256 and checks the handshake signature
/// with its key. Pure: no I/O.
#[derive(Debug)]
pub struct PinVerifier {
    pin: [u8; 32],
    key: Option<p256::ecdsa::VerifyingKey>,
    transcript: Option<Sha256>,
    /// Set when CertificateVerify checked out.
    pub signature_verified: bool,
    /// Why the server was refused.
    pub refusal: Option<Refusal>,
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Parses 64 hex characters.
pub fn parse_pin(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

impl PinVerifier {
    /// A verifier for a pin.
    pub fn new(pin: [u8; 32]) -> PinVerifier {
        PinVerifier {
            pin,
            key: None,
            transcript: None,
            signature_verified: false,
            refusal: None,
        }
    }

    fn refuse(&mut self, r: Refusal) -> TlsError {
        let e = match r {
            Refusal::BadSignature => TlsError::InvalidSignature,
            _ => TlsError::InvalidCertificate,
        };
        self.refusal = Some(r);
        e
    }

    /// Checks the server's certificate list against the pin; remembers the key.
    pub fn check_chain(&mut self, certs: &[&[u8]]) -> Result<(), Refusal> {
        let [der] = certs else {
            return Err(Refusal::Chain(certs.len()));
        };
        let got: [u8; 32] = Sha256::digest(der).into();
        if got != self.pin {
            return Err(Refusal::Mismatch {
                expected: hex(&self.pin),
                got: hex(&got),
            });
        }
        // The certificate is the pinned one, so its bytes are trusted: take its (only) P-256
        // SubjectPublicKeyInfo.
        let pos = der
            .windows(P256_SPKI_PREFIX.len())
            .position(|w| w == P256_SPKI_PREFIX)
            .ok_or(Refusal::NoP256Key)?;
        let point = der
            .get(pos + P256_SPKI_PREFIX.len()..pos + P256_SPKI_PREFIX.len() + 65)
            .ok_or(Refusal::NoP256Key)?;
        let key =
            p256::ecdsa::VerifyingKey::from_sec1_bytes(point).map_err(|_| Refusal::NoP256Key)?;
        self.key = Some(key);
        Ok(())
    }

    /// Checks a TLS 1.3 server CertificateVerify (ECDSA P-256 SHA-256, DER signature) over
    /// `transcript_hash` (the handshake hash up to the Certificate message).
    pub fn check_signature(
        &self,
        transcript_hash: &[u8],
        scheme: SignatureScheme,
        signature: &[u8],
    ) -> Result<(), Refusal> {
        let key = self.key.as_ref().ok_or(Refusal::BadSignature)?;
        if scheme != SignatureScheme::EcdsaSecp256r1Sha256 {
            return Err(Refusal::BadSignature);
        }
        let mut msg = Vec::with_capacity(64 + 34 + transcript_hash.len());
        msg.extend_from_slice(&[0x20; 64]);
        msg.extend_from_slice(b"TLS 1.3, server CertificateVerify\x00");
        msg.extend_from_slice(transcript_hash);
        let sig = p256::ecdsa::Signature::from_der(signature).map_err(|_| Refusal::BadSignature)?;
        key.verify(&msg, &sig).map_err(|_| Refusal::BadSignature)
    }
}

impl TlsVerifier<Aes128GcmSha256> for PinVerifier {
    fn set_hostname_verification(&mut self, _hostname: &str) -> Result<(), TlsError> {
        // Pinned: names do not matter.
        Ok(())
    }

    fn verify_certificate(
        &mut self,
        transcript: &Sha256,
        cert: CertificateRef,
    ) -> Result<(), TlsError> {
        let mut ders: Vec<&[u8]> = Vec::with_capacity(cert.entries.len());
        for e in &cert.entries {
            match e {
                CertificateEntryRef::X509(d) => ders.push(d),
                CertificateEntryRef::RawPublicKey(_) => return Err(self.refuse(Refusal::NotX509)),
            }
        }
        match self.check_chain(&ders) {
            Ok(()) => {
                self.transcript = Some(transcript.clone());
                Ok(())
            }
            Err(r) => Err(self.refuse(r)),
        }
    }

    fn verify_signature(&mut self, verify: CertificateVerifyRef) -> Result<(), TlsError> {
        let Some(t) = self.transcript.take() else {
            return Err(self.refuse(Refusal::BadSignature));
        };
        let hash = t.finalize();
        match self.check_signature(&hash, verify.signature_scheme, verify.signature) {
            Ok(()) => {
                self.signature_verified = true;
                Ok(())
            }
            Err(r) => Err(self.refuse(r)),
        }
    }
}

/// Randomness from the kernel (getrandom).
struct Provider {
    rng: rand_core::OsRng,
    verifier: PinVerifier,
}

impl CryptoProvider for Provider {
    type CipherSuite = Aes128GcmSha256;
    type Signature = p256::ecdsa::DerSignature;

    fn rng(&mut self) -> impl embedded_tls::CryptoRngCore {
        &mut self.rng
    }

    fn verifier(&mut self) -> Result<&mut impl TlsVerifier<Aes128GcmSha256>, TlsError> {
        Ok(&mut self.verifier)
    }
}

/// Bytes read from TCP and not yet handed to embedded-tls.
#[derive(Debug)]
struct RxBuf {
    buf: Box<[u8]>,
    start: usize,
    end: usize,
}

impl RxBuf {
    fn new() -> Rc<RefCell<RxBuf>> {
        Rc::new(RefCell::new(RxBuf {
            buf: vec![0u8; RX_BUF].into_boxed_slice(),
            start: 0,
            end: 0,
        }))
    }

    fn held(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    /// Whether a whole TLS record (header and body) is already here: reading it cannot block.
    fn has_record(&self) -> bool {
        match self.held() {
            [_, _, _, hi, lo, body @ ..] => {
                body.len() >= usize::from(u16::from_be_bytes([*hi, *lo]))
            }
            _ => false,
        }
    }

    /// Copies out what is held, at most `out.len()` bytes.
    fn take_into(&mut self, out: &mut [u8]) -> usize {
        let n = out.len().min(self.end - self.start);
        out[..n].copy_from_slice(&self.buf[self.start..self.start + n]);
        self.start += n;
        n
    }
}

/// A TCP stream seen as embedded-io-async, with reads buffered in an [`RxBuf`] (shared by the
/// clones the split connection makes: only the reader reads).
#[derive(Clone)]
struct Io {
    tcp: TcpStream,
    rx: Rc<RefCell<RxBuf>>,
}

impl embedded_io::ErrorType for Io {
    type Error = std::io::Error;
}

impl embedded_io_async::Read for Io {
    async fn read(&mut self, out: &mut [u8]) -> Result<usize, std::io::Error> {
        if out.is_empty() {
            return Ok(0);
        }
        {
            let mut rx = self.rx.borrow_mut();
            if rx.start < rx.end {
                return Ok(rx.take_into(out));
            }
        }
        // Empty: refill with one read (the buffer is lent out meanwhile; a read cancelled
        // mid-way leaves an empty one, replaced here).
        let mut buf = std::mem::take(&mut self.rx.borrow_mut().buf);
        if buf.is_empty() {
            buf = vec![0u8; RX_BUF].into_boxed_slice();
        }
        let r = self.tcp.read(&mut buf).await;
        let mut rx = self.rx.borrow_mut();
        rx.buf = buf;
        rx.start = 0;
        rx.end = r?;
        Ok(rx.take_into(out))
    }
}

impl embedded_io_async::Write for Io {
    async fn write(&mut self, buf: &[u8]) -> Result<usize, std::io::Error> {
        self.tcp.write(buf).await
    }

    async fn flush(&mut self) -> Result<(), std::io::Error> {
        self.tcp.flush().await
    }
}

/// The pin and the credential of a join token; a token without a pin is refused.
pub fn pin_and_credential(token: &str) -> anyhow::Result<([u8; 32], &str)> {
    let parts = bramble_wire::token::split_token(token)
        .map_err(|e| anyhow::anyhow!("bad join token (--token-file): {e}"))?;
    let pin = parts.pin.and_then(parse_pin).ok_or_else(|| {
        anyhow::anyhow!(
            "the join token (--token-file) has no certificate pin (K10<sha256>::...): use the master's DATA_DIR/join.token, which carries the pin of the master's certificate"
        )
    })?;
    Ok((pin, parts.credential))
}

/// Why [`connect`] failed.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// TCP connect failed.
    #[error("cannot connect to {addr}: {err}")]
    Tcp {
        /// Address.
        addr: String,
        /// Error.
        err: std::io::Error,
    },
    /// The server is not the pinned master.
    #[error("refusing the server at {addr}: {refusal}")]
    Refused {
        /// Address.
        addr: String,
        /// Why.
        refusal: Refusal,
    },
    /// The handshake failed otherwise.
    #[error("TLS handshake with {addr} failed: {detail}")]
    Handshake {
        /// Address.
        addr: String,
        /// What happened.
        detail: String,
    },
}

/// A plaintext stream to the master, through a pinned TLS connection.
#[derive(Debug)]
pub struct Connected {
    /// Frames go here; clone it for a reader and a writer.
    pub stream: UnixStream,
    /// How long the TLS handshake took (TCP connected → handshake done).
    pub handshake: Duration,
}

/// Dials `addr`, performs the TLS handshake pinning `pin`, and returns a plaintext stream whose
/// bytes a background task carries through the TLS connection.
pub async fn connect(addr: &str, pin: [u8; 32]) -> Result<Connected, ConnectError> {
    let tcp = TcpStream::connect(addr)
        .or(async {
            smol::Timer::after(Duration::from_secs(10)).await;
            Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "connect timed out",
            ))
        })
        .await
        .map_err(|err| ConnectError::Tcp {
            addr: addr.to_string(),
            err,
        })?;
    let _ = tcp.set_nodelay(true);
    let (ours, theirs) = UnixStream::pair().map_err(|e| ConnectError::Handshake {
        addr: addr.to_string(),
        detail: format!("socketpair: {e}"),
    })?;
    let (done_tx, done_rx) = async_channel::bounded::<Result<(), ConnectError>>(1);
    let addr_owned = addr.to_string();
    let started = Instant::now();
    // embedded-tls's connection is not Send: it lives on its own small thread.
    let run = move || async move {
        let mut rbuf = vec![0u8; READ_BUF];
        let mut wbuf = vec![0u8; WRITE_BUF];
        let rx = RxBuf::new();
        let io = Io {
            tcp,
            rx: rx.clone(),
        };
        let mut conn: TlsConnection<'_, Io, Aes128GcmSha256> =
            TlsConnection::new(io, &mut rbuf, &mut wbuf);
        let config = TlsConfig::new().with_server_name("bramble-master");
        let mut provider = Provider {
            rng: rand_core::OsRng,
            verifier: PinVerifier::new(pin),
        };
        let opened = conn
            .open(TlsContext::new(&config, &mut provider))
            .or(async {
                smol::Timer::after(Duration::from_secs(10)).await;
                Err(TlsError::Io(embedded_io::ErrorKind::TimedOut))
            })
            .await;
        let result = match (opened, provider.verifier.refusal.take()) {
            (_, Some(refusal)) => Err(ConnectError::Refused {
                addr: addr_owned,
                refusal,
            }),
            (Err(e), None) => Err(ConnectError::Handshake {
                addr: addr_owned,
                detail: tls_error(e),
            }),
            (Ok(()), None) if !provider.verifier.signature_verified => Err(ConnectError::Refused {
                addr: addr_owned,
                refusal: Refusal::BadSignature,
            }),
            (Ok(()), None) => Ok(()),
        };
        let ok = result.is_ok();
        let _ = done_tx.send(result).await;
        if ok {
            pump(conn, &rx, theirs).await;
        }
    };
    std::thread::Builder::new()
        .name("tls".into())
        .stack_size(256 * 1024)
        .spawn(move || smol::block_on(run()))
        .map_err(|e| ConnectError::Handshake {
            addr: addr.to_string(),
            detail: format!("cannot start the TLS thread: {e}"),
        })?;
    match done_rx.recv().await {
        Ok(Ok(())) => Ok(Connected {
            stream: ours,
            handshake: started.elapsed(),
        }),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(ConnectError::Handshake {
            addr: addr.to_string(),
            detail: "the TLS task ended".into(),
        }),
    }
}

fn tls_error(e: TlsError) -> String {
    match e {
        TlsError::Io(k) => format!(
            "connection error ({k:?}): the master closed the connection or is not speaking TLS"
        ),
        TlsError::HandshakeAborted(level, desc) => {
            format!("the server aborted the handshake ({level:?} alert {desc:?})")
        }
        other => format!("{other:?}"),
    }
}

/// Carries bytes both ways until either side closes.
async fn pump(
    mut conn: TlsConnection<'_, Io, Aes128GcmSha256>,
    rx: &RefCell<RxBuf>,
    plain: UnixStream,
) {
    let (mut tls_r, mut tls_w) = conn.split();
    let mut plain_r = plain.clone();
    let mut plain_w = plain;
    let down = async {
        let mut stage: Vec<u8> = Vec::with_capacity(STAGE);
        'conn: loop {
            // One record (waiting for it if need be), then those already received whole, up
            // to STAGE bytes: one write for them all.
            loop {
                let Ok(mut record) = tls_r.read_buffered().await else {
                    break 'conn;
                };
                stage.extend_from_slice(record.pop_all());
                drop(record);
                if stage.len() + MAX_RECORD > STAGE || !rx.borrow().has_record() {
                    break;
                }
            }
            if plain_w.write_all(&stage).await.is_err() {
                break;
            }
            stage.clear();
        }
    };
    let up = async {
        let mut buf = vec![0u8; MAX_RECORD];
        loop {
            let n = match plain_r.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            if embedded_io_async::Write::write_all(&mut tls_w, &buf[..n])
                .await
                .is_err()
                || embedded_io_async::Write::flush(&mut tls_w).await.is_err()
            {
                break;
            }
        }
    };
    down.or(up).await;
    let _ = plain_r.shutdown(std::net::Shutdown::Both);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_records_are_told_from_partial_ones() {
        let rx = RxBuf::new();
        let fill = |bytes: &[u8]| {
            let mut r = rx.borrow_mut();
            r.buf[..bytes.len()].copy_from_slice(bytes);
            r.start = 0;
            r.end = bytes.len();
        };
        fill(&[]);
        assert!(!rx.borrow().has_record());
        fill(&[23, 3, 3, 0]);
        assert!(!rx.borrow().has_record());
        fill(&[23, 3, 3, 0, 3, 1, 2]);
        assert!(!rx.borrow().has_record());
        fill(&[23, 3, 3, 0, 3, 1, 2, 3]);
        assert!(rx.borrow().has_record());
        fill(&[23, 3, 3, 1, 0, 1, 2, 3]);
        assert!(!rx.borrow().has_record(), "256 bytes announced");
        let mut out = [0u8; 3];
        assert_eq!(rx.borrow_mut().take_into(&mut out), 3);
        assert_eq!(out, [23, 3, 3]);
        assert_eq!(rx.borrow().held(), &[1, 0, 1, 2, 3]);
    }

    #[test]
    fn pins_parse() {
        let p = parse_pin(&"0a".repeat(32)).unwrap();
        assert_eq!(p, [0x0a; 32]);
        assert!(parse_pin("zz").is_none());
        assert!(parse_pin(&"zz".repeat(32)).is_none());
    }

    #[test]
    fn chains_other_than_one_pinned_certificate_are_refused() {
        let mut v = PinVerifier::new([0u8; 32]);
        assert_eq!(v.check_chain(&[]), Err(Refusal::Chain(0)));
        assert_eq!(v.check_chain(&[b"a", b"b"]), Err(Refusal::Chain(2)));
        let Err(Refusal::Mismatch { expected, got }) = v.check_chain(&[b"cert"]) else {
            panic!("a wrong hash must be refused");
        };
        assert_eq!(expected, "0".repeat(64));
        assert_eq!(got, hex(&Sha256::digest(b"cert")));
        // The right hash but no key: refused too.
        let mut v = PinVerifier::new(Sha256::digest(b"cert").into());
        assert_eq!(v.check_chain(&[b"cert"]), Err(Refusal::NoP256Key));
        // No certificate checked: no signature can verify.
        assert_eq!(
            v.check_signature(&[0; 32], SignatureScheme::EcdsaSecp256r1Sha256, &[]),
            Err(Refusal::BadSignature)
        );
    }
}
