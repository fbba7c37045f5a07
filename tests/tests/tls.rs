//! TLS everywhere: the forged-certificate attack against the worker's embedded-tls verifier and
//! the CLI's rustls verifier, wrong and missing pins (refused, with messages on both sides), and
//! plaintext clients dropped by the master without hurting it.

use std::io::{Read, Write};
use std::sync::Arc;
use std::time::Duration;

use bramble_client::tls::pin_of;
use bramble_client::{Client, ClientError};
use bramble_tests::{MasterProc, Proc, wait_for};
use bramble_worker::agent::tls::{ConnectError, Refusal};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, PKCS_ECDSA_P256_SHA256,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

fn write(dir: &std::path::Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.display().to_string()
}

/// A server certificate chain and the key the rogue server signs with (not necessarily the
/// certificate's: that is the point of one attack).
#[derive(Debug)]
struct Presents {
    chain: Vec<CertificateDer<'static>>,
    key: KeyPair,
}

#[derive(Debug)]
struct Fixed(Arc<CertifiedKey>);

impl ResolvesServerCert for Fixed {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }
}

/// A rogue TLS 1.3 server (rustls, P-256) on loopback presenting `p`; serves a few handshakes
/// in the background. Returns its address.
fn rogue_server(p: Presents) -> String {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(p.key.serialize_der()));
    let signer = provider.key_provider.load_private_key(key).unwrap();
    // No consistency check between the chain and the key: the rogue may sign with any key.
    let ck = Arc::new(CertifiedKey::new(p.chain, signer));
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(Fixed(ck)));
    cfg.send_tls13_tickets = 0;
    let acceptor = futures_rustls::TlsAcceptor::from(Arc::new(cfg));
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        smol::block_on(async move {
            let listener = async_net::TcpListener::try_from(listener).unwrap();
            for _ in 0..8 {
                let Ok((s, _)) = listener.accept().await else {
                    return;
                };
                let acceptor = acceptor.clone();
                smol::spawn(async move {
                    if let Ok(mut tls) = acceptor.accept(s).await {
                        // A successful handshake: talk nonsense.
                        let _ = futures_lite::AsyncWriteExt::write_all(&mut tls, b"gotcha").await;
                    }
                })
                .detach();
            }
        })
    });
    addr
}

fn p256() -> KeyPair {
    KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap()
}

fn leaf_params() -> CertificateParams {
    let mut p = CertificateParams::new(vec!["bramble-master".to_string(), "localhost".to_string()])
        .unwrap();
    p.distinguished_name
        .push(DnType::CommonName, "bramble-master");
    p
}

/// A "master" certificate minted with a node's own key: self-signed, chain of one.
fn minted_by_node_key() -> Presents {
    let node_key = p256();
    let cert = leaf_params().self_signed(&node_key).unwrap();
    Presents {
        chain: vec![cert.der().clone()],
        key: node_key,
    }
}

/// A leaf signed by another CA (a node's key made into a CA), sent with that CA: chain of two.
fn chain_of_two_from_another_ca() -> Presents {
    let ca_key = p256();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name.push(DnType::CommonName, "rogue CA");
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca, &ca_key);
    let leaf_key = p256();
    let leaf = leaf_params().signed_by(&leaf_key, &issuer).unwrap();
    Presents {
        chain: vec![leaf.der().clone(), ca_cert.der().clone()],
        key: leaf_key,
    }
}

/// The real master's certificate (public) with a key that is not its key.
fn real_cert_wrong_key(m: &MasterProc) -> Presents {
    let cert = CertificateDer::from_pem_file(m.data_dir.join("server.crt")).unwrap();
    Presents {
        chain: vec![cert],
        key: p256(),
    }
}

fn master_pin(m: &MasterProc) -> String {
    let der = CertificateDer::from_pem_file(m.data_dir.join("server.crt")).unwrap();
    pin_of(der.as_ref())
}

fn worker_dial(addr: &str, pin: &str) -> Result<(), ConnectError> {
    let pin = bramble_worker::agent::tls::parse_pin(pin).unwrap();
    smol::block_on(bramble_worker::agent::tls::connect(addr, pin)).map(|_| ())
}

fn cli_dial(addr: &str, token: &str) -> Result<(), ClientError> {
    smol::block_on(Client::connect(addr, token)).map(|_| ())
}

#[test]
fn forged_certificates_are_refused_by_the_worker_and_the_cli() {
    let tmp = tempfile::tempdir().unwrap();
    let m = MasterProc::start(&tmp.path().join("data"), &[]);
    let pin = master_pin(&m);
    let admin = std::fs::read_to_string(m.data_dir.join("admin.token")).unwrap();
    assert!(admin.starts_with(&format!("K10{pin}::")), "{admin}");

    // Sanity: both clients take the real master.
    worker_dial(&m.addr, &pin).expect("the worker's verifier accepts the real master");
    cli_dial(&m.addr, admin.trim()).expect("the CLI accepts the real master");

    // 1. A certificate minted by a node's own key (self-signed, chain of one).
    let forged = minted_by_node_key();
    let forged_pin = pin_of(forged.chain[0].as_ref());
    let addr = rogue_server(forged);
    match worker_dial(&addr, &pin) {
        Err(ConnectError::Refused {
            refusal: Refusal::Mismatch { expected, got },
            ..
        }) => {
            assert_eq!(expected, pin);
            assert_eq!(got, forged_pin);
        }
        other => panic!("the worker must refuse a node-minted certificate: {other:?}"),
    }
    match cli_dial(&addr, admin.trim()) {
        Err(e @ ClientError::Untrusted { .. }) => {
            let s = e.to_string();
            assert!(
                s.contains(&pin) && s.contains(&forged_pin) && s.contains("admin.token"),
                "{s}"
            );
            assert_eq!(e.exit_code(), 5);
        }
        other => panic!("the CLI must refuse a node-minted certificate: {other:?}"),
    }

    // 2. Another CA's leaf with its CA: a chain of two.
    let addr = rogue_server(chain_of_two_from_another_ca());
    match worker_dial(&addr, &pin) {
        Err(ConnectError::Refused {
            refusal: Refusal::Chain(2),
            ..
        }) => {}
        other => panic!("the worker must refuse a chain of two: {other:?}"),
    }
    match cli_dial(&addr, admin.trim()) {
        Err(e @ ClientError::Untrusted { .. }) => {
            assert!(e.to_string().contains("chain of 2"), "{e}");
        }
        other => panic!("the CLI must refuse a chain of two: {other:?}"),
    }

    // 3. The real (public) certificate, but the rogue does not hold its key: the pin matches,
    //    the handshake signature does not.
    let addr = rogue_server(real_cert_wrong_key(&m));
    match worker_dial(&addr, &pin) {
        Err(ConnectError::Refused {
            refusal: Refusal::BadSignature,
            ..
        }) => {}
        other => panic!("the worker must refuse a stolen certificate without its key: {other:?}"),
    }
    match cli_dial(&addr, admin.trim()) {
        Err(ClientError::Connect { detail, .. }) => {
            assert!(detail.contains("TLS handshake failed"), "{detail}");
        }
        other => panic!("the CLI must refuse a stolen certificate without its key: {other:?}"),
    }
}

#[test]
fn wrong_and_missing_pins_are_refused_with_messages_on_both_sides() {
    let tmp = tempfile::tempdir().unwrap();
    let m = MasterProc::start(&tmp.path().join("data"), &[]);
    let pin = master_pin(&m);
    let join = std::fs::read_to_string(m.data_dir.join("join.token")).unwrap();
    let cred = join.trim().split_once("::").unwrap().1.to_string();
    let wrong = "0".repeat(64);

    // A worker whose token pins another certificate: refused, keeps retrying, says what to fix.
    let bad = write(
        tmp.path(),
        "wrong-pin.token",
        &format!("K10{wrong}::{cred}\n"),
    );
    let state = tmp.path().join("w1");
    let log = state.with_extension("worker.log");
    let child = std::process::Command::new(bramble_tests::bin("bramble-worker"))
        .args(["--master", &m.addr, "--name", "w1", "--token-file", &bad])
        .arg("--state-dir")
        .arg(&state)
        .arg("--run-dir")
        .arg(state.with_extension("run"))
        .args([
            "--cgroup-parent",
            &format!("bramble-test-{}-w1", std::process::id()),
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let _w = Proc {
        child,
        what: "worker w1".into(),
        cgroup_parent: Some(format!("bramble-test-{}-w1", std::process::id())),
        bridge: None,
    };
    wait_for(
        Duration::from_secs(30),
        "two refusals in the worker log",
        || {
            let s = std::fs::read_to_string(&log).unwrap_or_default();
            (s.matches("does not match the join token's pin").count() >= 2).then_some(())
        },
    );
    let s = std::fs::read_to_string(&log).unwrap();
    assert!(
        s.contains(&format!("expected sha256 {wrong}, got {pin}")) && s.contains("--token-file"),
        "{s}"
    );
    assert!(s.contains("reconnecting in"), "{s}");
    wait_for(
        Duration::from_secs(10),
        "the master logs the refusal",
        || {
            m.log()
                .contains("the client hung up after the master's certificate")
                .then_some(())
        },
    );
    let nodes = m.ok(&["get", "nodes"]);
    assert!(!nodes.contains("w1"), "{nodes}");

    // The CLI with a wrong pin.
    let bad_admin = write(
        tmp.path(),
        "wrong-admin.token",
        &format!("K10{wrong}::x.y\n"),
    );
    let o = m.cli(&["get", "nodes", "--token-file", &bad_admin]);
    assert_eq!(o.status.code(), Some(5));
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(
        e.contains(&format!("expected sha256 {wrong}, got {pin}")) && e.contains("admin.token"),
        "{e}"
    );

    // No pin at all: the worker refuses to start, the CLI to connect; both name the fix.
    let bare = write(tmp.path(), "bare.token", &format!("{cred}\n"));
    let o = std::process::Command::new(bramble_tests::bin("bramble-worker"))
        .args(["--master", &m.addr, "--token-file", &bare, "--name", "w2"])
        .args(["--state-dir"])
        .arg(tmp.path().join("w2"))
        .output()
        .unwrap();
    assert!(!o.status.success());
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(
        e.contains("no certificate pin") && e.contains("join.token"),
        "{e}"
    );
    let o = m.cli(&["get", "nodes", "--token-file", &bare]);
    assert_eq!(o.status.code(), Some(5));
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(
        e.contains("no certificate pin") && e.contains("admin.token"),
        "{e}"
    );
}

#[test]
fn plaintext_and_garbage_clients_are_dropped() {
    let tmp = tempfile::tempdir().unwrap();
    let m = MasterProc::start(&tmp.path().join("data"), &[]);
    // A pre-TLS client: a plaintext Hello frame.
    let hello = bramble_wire::Handshake::Hello(bramble_wire::Hello {
        protocol_version: bramble_wire::PROTOCOL_VERSION,
        role: bramble_wire::Role::Client,
        identity: bramble_client::heapless_str("admin"),
        credentials: bramble_client::heapless_str("x.y"),
        agent_version: bramble_client::heapless_str("old"),
    });
    let frame = bramble_wire::frame::encode_vec(&hello, 1024).unwrap();
    let mut junk = vec![0x16u8, 0x03, 0x01, 0xff, 0xff];
    junk.extend(std::iter::repeat_n(0xAAu8, 4096));
    for bytes in [frame, b"GET / HTTP/1.0\r\n\r\n".to_vec(), junk] {
        let mut s = std::net::TcpStream::connect(&m.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
        let _ = s.write_all(&bytes);
        let mut got = Vec::new();
        // The master answers with at most a TLS alert and closes.
        let r = s.read_to_end(&mut got);
        // Closed: cleanly, or reset because the master did not read all the junk.
        assert!(
            r.is_ok()
                || r.as_ref()
                    .is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionReset),
            "the master must close the connection: {r:?}"
        );
        assert!(got.len() < 64, "no protocol answer in plaintext: {got:?}");
        assert!(
            got.is_empty() || got[0] == 0x15,
            "only a TLS alert: {got:?}"
        );
    }
    // A client that connects and says nothing is dropped by the handshake timeout, and the
    // master keeps serving meanwhile.
    let mut idle = std::net::TcpStream::connect(&m.addr).unwrap();
    assert!(m.ok(&["get", "namespaces"]).contains("default"));
    idle.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut buf = [0u8; 16];
    assert_eq!(idle.read(&mut buf).unwrap(), 0, "silent clients are closed");
    assert!(m.log().contains("TLS handshake failed"), "{}", m.log());
}
