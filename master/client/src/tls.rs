//! The dialing side of TLS (the CLI, tests, the node simulator): tokens pin the sha256 of the
//! master's certificate (`K10<pin>::<id>.<secret>`, see [`bramble_wire::token`]) and the dialer
//! accepts exactly one certificate with that hash, whose key must sign the handshake (TLS 1.3
//! only). The master's side (its CA, certificate and accept path) is in `bramble-server`.

use std::fmt::Write as _;
use std::sync::Arc;

use async_net::TcpStream;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};
use sha2::{Digest, Sha256};

/// The server name dialers put in their ClientHello (certificates are pinned, not matched by
/// name; the certificate carries this name and `localhost` for tools that do check names).
pub const SERVER_NAME: &str = "bramble-master";

/// sha256 of `der`, lowercase hex.
pub fn pin_of(der: &[u8]) -> String {
    let d = Sha256::digest(der);
    let mut s = String::with_capacity(64);
    for b in d {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// Why the pinning verifier refused a server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PinRefusal {
    /// The server sent a chain longer than one certificate.
    Chain(usize),
    /// The certificate's hash is not the pin.
    Mismatch {
        /// The pin from the token.
        expected: String,
        /// The hash of what the server presented.
        got: String,
    },
}

/// Accepts exactly one certificate whose sha256 is the pin; the handshake signature is still
/// verified with that certificate's key (rustls's TLS 1.3 signature check).
#[derive(Debug)]
pub struct PinVerifier {
    pin: String,
    provider: Arc<rustls::crypto::CryptoProvider>,
    refusal: std::sync::Mutex<Option<PinRefusal>>,
}

impl PinVerifier {
    /// A verifier for `pin` (64 hex characters).
    pub fn new(pin: &str) -> PinVerifier {
        PinVerifier {
            pin: pin.to_ascii_lowercase(),
            provider: Arc::new(rustls::crypto::ring::default_provider()),
            refusal: std::sync::Mutex::new(None),
        }
    }

    /// Why the last handshake was refused, if it was refused by the pin check.
    pub fn refusal(&self) -> Option<PinRefusal> {
        self.refusal.lock().ok().and_then(|r| r.clone())
    }

    fn refuse(&self, r: PinRefusal) -> rustls::Error {
        if let Ok(mut g) = self.refusal.lock() {
            *g = Some(r);
        }
        rustls::Error::InvalidCertificate(rustls::CertificateError::ApplicationVerificationFailure)
    }
}

impl ServerCertVerifier for PinVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if !intermediates.is_empty() {
            return Err(self.refuse(PinRefusal::Chain(intermediates.len() + 1)));
        }
        let got = pin_of(end_entity.as_ref());
        if got != self.pin {
            return Err(self.refuse(PinRefusal::Mismatch {
                expected: self.pin.clone(),
                got,
            }));
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::PeerIncompatible(
            rustls::PeerIncompatible::Tls13RequiredForQuic,
        ))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// A client configuration that pins `verifier`'s certificate (TLS 1.3 only).
pub fn client_config(verifier: Arc<PinVerifier>) -> Arc<ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("the ring provider supports TLS 1.3")
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    Arc::new(cfg)
}

/// A client-side TLS connection.
pub type ClientStream = futures_rustls::client::TlsStream<TcpStream>;

/// Why a pinned dial failed.
#[derive(Debug, thiserror::Error)]
pub enum DialError {
    /// The token has no pin.
    #[error(
        "the token has no certificate pin (it should start with K10<sha256>::): use the master's DATA_DIR/{0} (the master writes the pin into it)"
    )]
    NoPin(&'static str),
    /// The token is malformed.
    #[error("bad token: {0}")]
    BadToken(&'static str),
    /// The server presented another certificate.
    #[error(
        "the server's certificate does not match the token's pin (expected sha256 {expected}, got {got}): this is another master, or its certificate was regenerated; use the current DATA_DIR/{file} of the master you mean"
    )]
    Mismatch {
        /// The pin.
        expected: String,
        /// What the server presented.
        got: String,
        /// Which token file to fix.
        file: &'static str,
    },
    /// The server sent a chain of several certificates (the master sends one).
    #[error(
        "the server presented a chain of {0} certificates; the master presents exactly one: this is not the master you pinned"
    )]
    Chain(usize),
    /// Anything else.
    #[error("{0}")]
    Io(std::io::Error),
}

/// Performs a pinned TLS handshake on `tcp` for a token (`K10<pin>::cred`); returns the stream
/// and the credential to send in Hello. `file` names the token file in messages
/// (`admin.token` or `join.token`).
pub async fn dial_pinned(
    tcp: TcpStream,
    token: &str,
    file: &'static str,
) -> Result<(ClientStream, String), DialError> {
    let parts = bramble_wire::token::split_token(token).map_err(DialError::BadToken)?;
    let pin = parts.pin.ok_or(DialError::NoPin(file))?;
    let verifier = Arc::new(PinVerifier::new(pin));
    let connector = futures_rustls::TlsConnector::from(client_config(verifier.clone()));
    let name = ServerName::try_from(SERVER_NAME).expect("a valid DNS name");
    match connector.connect(name, tcp).await {
        Ok(s) => Ok((s, parts.credential.to_string())),
        Err(e) => Err(match verifier.refusal() {
            Some(PinRefusal::Mismatch { expected, got }) => DialError::Mismatch {
                expected,
                got,
                file,
            },
            Some(PinRefusal::Chain(n)) => DialError::Chain(n),
            None => DialError::Io(e),
        }),
    }
}
