//! What the throughput benches share (included with `#[path]`; benches are separate crates).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

/// Megabytes per second.
pub fn mb_s(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / 1e6 / d.as_secs_f64()
}

/// A TLS 1.3 copy of `bytes` over loopback, server → client (as master → worker): rustls on
/// both ends with ring's AES-128-GCM (the suite the worker speaks), the server's records capped
/// at `fragment` plaintext bytes (`None`: 16 KiB), written in 32 KiB writes.
pub fn tls_baseline(bytes: u64, fragment: Option<usize>) -> Duration {
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
    use std::sync::Arc;
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let cert: CertificateDer<'static> = ck.cert.der().clone();
    let key = PrivateKeyDer::Pkcs8(ck.signing_key.serialize_der().into());
    let mut provider = rustls::crypto::ring::default_provider();
    provider.cipher_suites = vec![rustls::crypto::ring::cipher_suite::TLS13_AES_128_GCM_SHA256];
    let provider = Arc::new(provider);
    let mut scfg = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.clone()], key)
        .unwrap();
    scfg.max_fragment_size = fragment;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert).unwrap();
    let ccfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let t = Instant::now();
    let tx = std::thread::spawn(move || {
        let (s, _) = l.accept().unwrap();
        let conn = rustls::ServerConnection::new(Arc::new(scfg)).unwrap();
        let mut tls = rustls::StreamOwned::new(conn, s);
        let chunk = vec![7u8; 32 << 10];
        let mut sent = 0u64;
        while sent < bytes {
            tls.write_all(&chunk).unwrap();
            sent += chunk.len() as u64;
        }
        tls.flush().unwrap();
        // Wait for the client to hang up, so that nothing is cut short.
        let mut b = [0u8; 1];
        let _ = tls.read(&mut b);
    });
    let s = TcpStream::connect(addr).unwrap();
    let conn =
        rustls::ClientConnection::new(Arc::new(ccfg), ServerName::try_from("localhost").unwrap())
            .unwrap();
    let mut tls = rustls::StreamOwned::new(conn, s);
    let mut buf = vec![0u8; 64 << 10];
    let mut got = 0u64;
    while got < bytes {
        let n = tls.read(&mut buf).unwrap();
        assert!(n > 0);
        got += n as u64;
    }
    let d = t.elapsed();
    drop(tls);
    tx.join().unwrap();
    d
}
