//! The real `bramble` binary against a real master on loopback (no worker needed).

use std::time::{Duration, Instant};

use bramble_client::ClientError;
use bramble_tests::{MasterProc, json, wait_for};
use bramble_wire::frame::encode_vec;
use bramble_wire::io::FrameReader;
use bramble_wire::msg::{ErrorCode, Request, RequestBody, Response, ResponseBody};
use bramble_wire::objects::{Kind, Meta, Object, Pod, PodSpec, ProcessSpec};
use bramble_wire::{Handshake, Hello, Role};

const POD: &str = r#"
[[pod]]
name = "hello"
labels = { app = "hello" }
restart_policy = "Never"
[[pod.process]]
name = "main"
command = ["/bin/sh", "-c", "echo hello; sleep 2"]
memory = "32Mi"
cpu = "250m"
"#;

fn write(dir: &std::path::Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.display().to_string()
}

#[test]
fn apply_get_describe_delete() {
    let tmp = tempfile::tempdir().unwrap();
    let m = MasterProc::start(&tmp.path().join("data"), &[]);
    let f = write(tmp.path(), "pod.toml", POD);
    assert_eq!(m.ok(&["apply", "-f", &f]).trim(), "pod/hello created");
    assert_eq!(m.ok(&["apply", "-f", &f]).trim(), "pod/hello unchanged");
    let table = m.ok(&["get", "pods"]);
    assert!(table.starts_with("NAME"), "{table}");
    assert!(
        table.contains("hello") && table.contains("Pending") && table.contains("<none>"),
        "{table}"
    );
    // No nodes: the scheduler says why.
    let v = json(&m.ok(&["get", "pod", "hello", "-o", "json"]));
    assert_eq!(v["metadata"]["name"], "hello");
    let msg = v["status"]["message"].as_str().unwrap_or("").to_string();
    assert!(msg.is_empty() || msg.contains("0/0 nodes"), "{msg}");
    let d = m.ok(&["describe", "pod", "hello"]);
    assert!(d.contains("memory=32Mi") && d.contains("cpu=250m"), "{d}");
    // Selectors.
    assert!(m.ok(&["get", "pods", "-l", "app=hello"]).contains("hello"));
    let o = m.cli(&["get", "pods", "-l", "app=other"]);
    assert!(o.status.success());
    assert!(!String::from_utf8_lossy(&o.stdout).contains("hello"));
    // Namespaces.
    assert!(m.ok(&["get", "namespaces"]).contains("default"));
    assert_eq!(
        m.ok(&["delete", "pod", "hello"]).trim(),
        "pod/hello deleted"
    );
    let o = m.cli(&["get", "pod", "hello"]);
    assert_eq!(o.status.code(), Some(3), "not found exits 3");
    assert!(String::from_utf8_lossy(&o.stderr).contains("pod \"hello\" not found"));
}

#[test]
fn errors_name_the_problem_and_exit_codes_differ() {
    let tmp = tempfile::tempdir().unwrap();
    let m = MasterProc::start(&tmp.path().join("data"), &[]);
    // Unknown field: file, line and field.
    let f = write(
        tmp.path(),
        "bad.toml",
        "[[pod]]\nname = \"x\"\n[[pod.process]]\nname = \"m\"\ncommand = [\"/bin/true\"]\nmemroy = \"1Mi\"\n",
    );
    let o = m.cli(&["apply", "-f", &f]);
    assert_eq!(o.status.code(), Some(6), "invalid exits 6");
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(
        e.contains("bad.toml") && e.contains("line 6") && e.contains("memroy"),
        "{e}"
    );
    // A pod in a namespace that does not exist.
    let f = write(
        tmp.path(),
        "ns.toml",
        "[[pod]]\nname = \"x\"\nnamespace = \"nope\"\n[[pod.process]]\nname = \"m\"\ncommand = [\"/bin/true\"]\n",
    );
    let o = m.cli(&["apply", "-f", &f]);
    assert_eq!(o.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&o.stderr).contains("namespace \"nope\" does not exist"));
    // Changing a pod's spec is a conflict with the fix in the message.
    let f = write(tmp.path(), "p.toml", POD);
    m.ok(&["apply", "-f", &f]);
    let f2 = write(tmp.path(), "p2.toml", &POD.replace("32Mi", "64Mi"));
    let o = m.cli(&["apply", "-f", &f2]);
    assert_eq!(o.status.code(), Some(4), "conflict exits 4");
    assert!(String::from_utf8_lossy(&o.stderr).contains("bramble delete pod hello"));
    // Wrong token and no master.
    let o = std::process::Command::new(bramble_tests::bin("bramble"))
        .args(["get", "pods", "--server", "127.0.0.1:1"])
        .env("BRAMBLE_TOKEN_FILE", m.data_dir.join("admin.token"))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(5), "connection failure exits 5");
    // The right pin (the master's certificate), the wrong credential.
    let good = std::fs::read_to_string(m.data_dir.join("admin.token")).unwrap();
    let pin = good.split("::").next().unwrap();
    let bad = write(
        tmp.path(),
        "bad.token",
        &format!("{pin}::0123456789abcdef0123"),
    );
    let o = std::process::Command::new(bramble_tests::bin("bramble"))
        .args(["get", "pods", "--server", &m.addr, "--token-file", &bad])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(5));
    assert!(String::from_utf8_lossy(&o.stderr).contains("wrong admin token"));
    // Usage errors are clap's exit code 2.
    assert_eq!(m.cli(&["get"]).status.code(), Some(2));
    // A request over the master's frame limit is refused by the CLI with the fix, not reported
    // as an unreachable master; nothing is written.
    let big = "x".repeat(40 * 1024);
    let f = write(
        tmp.path(),
        "big.toml",
        &format!(
            "[[configmap]]\nname = \"a\"\ndata = {{ k = \"{big}\" }}\n[[configmap]]\nname = \"b\"\ndata = {{ k = \"{big}\" }}\n"
        ),
    );
    let o = m.cli(&["apply", "-f", &f]);
    assert_eq!(
        o.status.code(),
        Some(6),
        "too large a request is invalid input"
    );
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(
        e.contains("over the master's") && e.contains("several files"),
        "{e}"
    );
    assert_eq!(m.cli(&["get", "configmap", "a"]).status.code(), Some(3));
}

#[test]
fn restart_keeps_everything() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let mut m = MasterProc::start(&data, &[]);
    let f = write(
        tmp.path(),
        "ns.toml",
        "[[namespace]]\nname = \"lab\"\n\n[[pod]]\nname = \"a\"\nnamespace = \"lab\"\n[[pod.process]]\nname = \"m\"\ncommand = [\"/bin/true\"]\n",
    );
    m.ok(&["apply", "-f", &f]);
    let before = m.ok(&["get", "pod", "a", "-n", "lab", "-o", "json"]);
    let addr = m.addr.clone();
    m.proc.terminate(Duration::from_secs(5));
    let m = MasterProc::start_on(&data, &addr, &[]);
    let after = m.ok(&["get", "pod", "a", "-n", "lab", "-o", "json"]);
    // Identity survives (the revision may move: the scheduler records why the pod waits).
    for field in ["uid", "created_ms", "name", "namespace"] {
        assert_eq!(
            json(&before)["metadata"][field],
            json(&after)["metadata"][field],
            "{field}"
        );
    }
    assert_eq!(json(&before)["spec"], json(&after)["spec"]);
    // Deleting the namespace takes everything in it along (a deployment too).
    let d = write(
        tmp.path(),
        "d.toml",
        "[[deployment]]\nname = \"d\"\nnamespace = \"lab\"\nreplicas = 1\n[deployment.template]\nlabels = { app = \"d\" }\n[[deployment.template.process]]\nname = \"m\"\ncommand = [\"/bin/true\"]\n",
    );
    m.ok(&["apply", "-f", &d]);
    m.ok(&["delete", "namespace", "lab"]);
    assert_eq!(
        m.cli(&["get", "pod", "a", "-n", "lab"]).status.code(),
        Some(3)
    );
    assert_eq!(
        m.cli(&["get", "deployment", "d", "-n", "lab"])
            .status
            .code(),
        Some(3)
    );
    // Garbage collection of what a controller was still making is asynchronous.
    wait_for(
        Duration::from_secs(10),
        "no pod left in the deleted namespace",
        || (!m.ok(&["get", "pods", "-A"]).contains(" lab ")).then_some(()),
    );
}

fn pod(name: &str) -> Object {
    Object::Pod(Pod {
        meta: Meta {
            name: name.into(),
            namespace: "default".into(),
            ..Default::default()
        },
        spec: PodSpec {
            processes: vec![ProcessSpec {
                name: "m".into(),
                command: vec!["/bin/true".into()],
                ..Default::default()
            }],
            ..Default::default()
        },
        ..Default::default()
    })
}

/// `kill -9` of the master during a stream of acknowledged writes loses none of them.
#[test]
fn kill9_during_writes_loses_no_acknowledged_write() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let mut acked: Vec<String> = Vec::new();
    let mut addr: Option<String> = None;
    for round in 0..12u32 {
        let mut m = match &addr {
            None => MasterProc::start(&data, &[]),
            Some(a) => MasterProc::start_on(&data, a, &[]),
        };
        addr = Some(m.addr.clone());
        // Every write acknowledged so far is there after the previous kill.
        let mut c = m.client();
        let listed = match smol::block_on(c.call(RequestBody::List {
            kind: Kind::Pod,
            namespace: None,
            selector: String::new(),
        }))
        .unwrap()
        {
            ResponseBody::List { items, .. } => items
                .iter()
                .map(|o| o.meta().name.clone())
                .collect::<std::collections::BTreeSet<_>>(),
            _ => panic!(),
        };
        for a in &acked {
            assert!(
                listed.contains(a),
                "round {round}: acknowledged pod {a} lost after kill -9"
            );
        }
        // Stream writes from a thread; kill -9 the master while they flow.
        let (tx, rx) = std::sync::mpsc::channel::<String>();
        let writer = std::thread::spawn(move || {
            for i in 0..10_000u32 {
                let name = format!("p{round}-{i}");
                match smol::block_on(c.call(RequestBody::Apply(vec![pod(&name)]))) {
                    Ok(_) => {
                        if tx.send(name).is_err() {
                            return;
                        }
                    }
                    Err(ClientError::Api(e)) if e.code == ErrorCode::Conflict => {}
                    Err(_) => return,
                }
            }
        });
        std::thread::sleep(Duration::from_millis(80 + u64::from(round * 37 % 200)));
        m.proc.kill9();
        writer.join().unwrap();
        acked.extend(rx.try_iter());
    }
    assert!(
        acked.len() > 20,
        "too few writes were acknowledged to prove anything: {}",
        acked.len()
    );
}

// Hostile input. Every connection is TLS, so the attacks go in after a valid TLS handshake
// (the CLI's own pinned dialer), before or after a valid Hello, and each must reach the framing
// and limits code: the master names the error in its log (debug level), closes that connection
// promptly (well inside the 10 s handshake deadline and the 10 min idle timeout, the two other
// reasons it could close one) and keeps serving everyone else.

/// The client side of a TLS connection to the master.
type Tls = bramble_client::tls::ClientStream;

/// How long the master may take to close a connection it got hostile bytes on.
const CLOSE_WITHIN: Duration = Duration::from_secs(8);

/// A master that logs why it closes connections (`connection closed: ...` before the Hello,
/// `client connection: ...` after it).
fn logging_master(dir: &std::path::Path, extra: &[&str]) -> MasterProc {
    MasterProc::start_with_env(
        &dir.join("data"),
        extra,
        &[
            ("RUST_LOG", "info,bramble_server::api=debug"),
            ("NO_COLOR", "1"),
        ],
    )
}

/// A TLS connection with a valid handshake (the master's certificate pinned by the admin token,
/// through the CLI's dialer) and the admin credential for the Hello; no frame sent yet.
async fn dial(m: &MasterProc) -> (Tls, String) {
    let token = std::fs::read_to_string(m.data_dir.join("admin.token")).unwrap();
    let tcp = async_net::TcpStream::connect(&m.addr).await.unwrap();
    bramble_client::tls::dial_pinned(tcp, token.trim(), "admin.token")
        .await
        .expect("a TLS handshake with the master")
}

/// The local port of a connection (the master logs its peer by it).
fn local_port(tls: &Tls) -> u16 {
    tls.get_ref().0.local_addr().unwrap().port()
}

/// Writes raw bytes on the TLS connection.
async fn write_raw(tls: &mut Tls, bytes: &[u8]) {
    use futures_lite::AsyncWriteExt;
    tls.write_all(bytes).await.unwrap();
    tls.flush().await.unwrap();
}

/// Reads one handshake frame the master sends.
async fn handshake_answer(tls: &mut Tls) -> Handshake {
    let mut r = FrameReader::new(&mut *tls, 4096);
    within(
        Duration::from_secs(10),
        "a handshake answer",
        r.recv::<Handshake>(),
    )
    .await
    .expect("a readable handshake frame")
    .expect("a handshake frame, not a close")
}

/// A connection after a valid Hello, welcomed.
async fn welcomed(m: &MasterProc) -> Tls {
    let (mut tls, credential) = dial(m).await;
    let hello = Handshake::Hello(Hello {
        protocol_version: bramble_wire::PROTOCOL_VERSION,
        role: Role::Client,
        identity: "admin".try_into().unwrap(),
        credentials: credential.as_str().try_into().unwrap(),
        agent_version: "test".try_into().unwrap(),
    });
    write_raw(&mut tls, &encode_vec(&hello, usize::MAX).unwrap()).await;
    match handshake_answer(&mut tls).await {
        Handshake::Welcome(_) => tls,
        other => panic!("the master did not welcome a valid Hello: {other:?}"),
    }
}

/// Runs `fut`, panicking with `what` if it takes longer than `d`.
async fn within<T>(d: Duration, what: &str, fut: impl std::future::Future<Output = T>) -> T {
    use futures_lite::FutureExt;
    async { Some(fut.await) }
        .or(async {
            smol::Timer::after(d).await;
            None
        })
        .await
        .unwrap_or_else(|| panic!("timed out after {d:?} waiting for {what}"))
}

/// Reads until the master closes the connection (end of stream or reset) and returns what it
/// sent first; fails if it is still open after [`CLOSE_WITHIN`].
async fn closed_by_master(tls: &mut Tls, what: &str) -> Vec<u8> {
    use futures_lite::AsyncReadExt;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let t = Instant::now();
    loop {
        let left = CLOSE_WITHIN.saturating_sub(t.elapsed());
        let r = within(
            left,
            &format!("the master to close the connection after {what}"),
            tls.read(&mut buf),
        )
        .await;
        match r {
            Ok(0) | Err(_) => return got,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
}

/// How many lines of the master's log contain all of `parts`.
fn log_lines(m: &MasterProc, parts: &[&str]) -> usize {
    m.log()
        .lines()
        .filter(|l| parts.iter().all(|p| l.contains(p)))
        .count()
}

/// Waits until the master logged one more line with all of `parts` than `before`.
fn logged(m: &MasterProc, before: usize, parts: &[&str]) {
    let t = Instant::now();
    while log_lines(m, parts) <= before {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "the master never logged {parts:?}; log:\n{}",
            m.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// When the attack goes in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Right after the TLS handshake, in place of the Hello (no credential needed).
    BeforeHello,
    /// After a valid Hello was welcomed.
    AfterHello,
}

/// Sends `bytes` in `phase` (then closes our side if `then_close`), and asserts that the master
/// closes the connection without answering and logs `reason` for it.
fn attack(m: &MasterProc, phase: Phase, bytes: &[u8], then_close: bool, reason: &str) {
    smol::block_on(async {
        let mut tls = match phase {
            Phase::BeforeHello => dial(m).await.0,
            Phase::AfterHello => welcomed(m).await,
        };
        let port = format!("127.0.0.1:{}", local_port(&tls));
        // Before the Hello the master's line names the peer; after it, the client connection.
        let parts: Vec<&str> = match phase {
            Phase::BeforeHello => vec!["connection closed: protocol error", reason, &port],
            Phase::AfterHello => vec!["client connection: protocol error", reason],
        };
        let before = log_lines(m, &parts);
        write_raw(&mut tls, bytes).await;
        if then_close {
            use futures_lite::AsyncWriteExt;
            tls.close().await.unwrap();
        }
        let what = format!("{bytes:02x?} {phase:?}");
        let answered = closed_by_master(&mut tls, &what).await;
        assert!(
            answered.is_empty(),
            "the master answered {what} with {} bytes",
            answered.len()
        );
        logged(m, before, &parts);
    });
}

/// Asserts that the master still serves: on a connection opened before the attacks, on a new
/// one, and through the CLI.
fn still_serving(m: &MasterProc, old: &mut bramble_client::Client) {
    still_answers(old);
    still_answers(&mut m.client());
    assert!(m.ok(&["get", "namespaces"]).contains("default"));
}

#[test]
fn framing_attacks_close_their_connection_with_the_reason() {
    let tmp = tempfile::tempdir().unwrap();
    let m = logging_master(tmp.path(), &[]);
    let mut bystander = m.client();
    for phase in [Phase::BeforeHello, Phase::AfterHello] {
        // A length prefix longer than a u32 can be (small, so no bound is crossed on the way).
        attack(
            &m,
            phase,
            &[0x80, 0x80, 0x80, 0x80, 0x80, 0x01],
            false,
            "overlong or non-minimal varint",
        );
        // A non-minimal prefix (a zero last byte).
        attack(
            &m,
            phase,
            &[0x85, 0x00],
            false,
            "overlong or non-minimal varint",
        );
        // A 1 GiB frame: refused at its header, not after waiting for (or buffering) its body.
        attack(
            &m,
            phase,
            &[0x80, 0x80, 0x80, 0x80, 0x04],
            false,
            "frame of 1073741824 bytes exceeds the maximum of 65536 bytes",
        );
        // All ones: over the bound by its third byte, refused there.
        attack(
            &m,
            phase,
            &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
            false,
            "frame of 2097151 bytes exceeds the maximum of 65536 bytes",
        );
        // A frame cut short by the peer going away.
        attack(
            &m,
            phase,
            &[0x05, 0x01, 0x02],
            true,
            "truncated frame: the message ended early",
        );
    }
    // Garbage after a valid Hello: a whole frame whose body is no request (an unknown case).
    attack(
        &m,
        Phase::AfterHello,
        &[0x03, 0x01, 0x7f, 0x00],
        false,
        "unknown message or enum tag",
    );
    // Garbage in place of the Hello is a refused handshake: a Reject, then the close.
    smol::block_on(async {
        let (mut tls, _) = dial(&m).await;
        write_raw(&mut tls, &[0x03, 0x07, 0x07, 0x07]).await;
        match handshake_answer(&mut tls).await {
            Handshake::Reject(r) => assert!(!r.message.is_empty(), "{r:?}"),
            other => panic!("garbage Hello answered with {other:?}"),
        }
        closed_by_master(&mut tls, "a garbage Hello").await;
    });
    still_serving(&m, &mut bystander);
}

/// Client → master: a request frame of exactly the bound is read and answered; one byte over is
/// refused at its header, before any of its body is sent (so not buffered either).
#[test]
fn request_frames_over_the_bound_are_refused_at_the_header() {
    let tmp = tempfile::tempdir().unwrap();
    let m = logging_master(tmp.path(), &[]);
    let mut bystander = m.client();
    let max = bramble_wire::DEFAULT_MAX_FRAME;
    // A request whose body is exactly `max` bytes (a selector of the right length).
    let req = (max - 64..max)
        .map(|n| Request {
            id: 7,
            body: RequestBody::List {
                kind: Kind::ConfigMap,
                namespace: None,
                selector: "x".repeat(n),
            },
        })
        .find(|r| encode_vec(r, usize::MAX).unwrap().len() == max + 3)
        .expect("a request of exactly the bound");
    let frame = encode_vec(&req, usize::MAX).unwrap();
    smol::block_on(async {
        let mut tls = welcomed(&m).await;
        write_raw(&mut tls, &frame).await;
        let mut r = FrameReader::new(&mut tls, bramble_client::CLIENT_RESPONSE_MAX);
        let answer = within(Duration::from_secs(10), "the answer", r.recv::<Response>())
            .await
            .expect("a response frame")
            .expect("an answer, not a close");
        assert_eq!(answer.id, 7, "{answer:?}");
    });
    // One byte over: only the 3-byte header goes out.
    let mut header = [0u8; bramble_wire::frame::MAX_VARINT_LEN];
    let n = bramble_wire::frame::encode_varint(max as u32 + 1, &mut header);
    let reason = format!(
        "frame of {} bytes exceeds the maximum of {max} bytes",
        max + 1
    );
    attack(&m, Phase::AfterHello, &header[..n], false, &reason);
    attack(&m, Phase::BeforeHello, &header[..n], false, &reason);
    still_serving(&m, &mut bystander);
}

/// Master → client: an answer over the client's frame bound is never sent as one frame; the
/// master answers with an error naming the fix and the connection goes on.
#[test]
fn answers_over_the_client_bound_become_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    let m = MasterProc::start(&tmp.path().join("data"), &[]);
    let mut c = m.client();
    let max = bramble_client::CLIENT_RESPONSE_MAX;
    // Config maps of 48 KB each (a config map holds at most 48 KiB, a request 64 KiB) until a
    // list of them all is over the bound.
    let value = "v".repeat(48_000);
    let count = max / 48_000 + 4;
    for i in 0..count {
        let cm = Object::ConfigMap(bramble_wire::objects::ConfigMap {
            meta: Meta {
                name: format!("big-{i}"),
                namespace: "default".into(),
                ..Default::default()
            },
            data: [("k".to_string(), value.clone())].into(),
        });
        smol::block_on(c.call(RequestBody::Apply(vec![cm]))).unwrap();
    }
    let list = RequestBody::List {
        kind: Kind::ConfigMap,
        namespace: None,
        selector: String::new(),
    };
    match smol::block_on(c.call(list)) {
        Err(ClientError::Api(e)) => {
            assert_eq!(e.code, ErrorCode::Invalid, "{e:?}");
            assert!(
                e.message
                    .contains(&format!("larger than {} MiB", max >> 20)),
                "{e:?}"
            );
        }
        other => panic!("a list over {max} bytes: expected an error, got {other:?}"),
    }
    // Narrowed, it fits; the same connection serves it.
    match smol::block_on(c.call(RequestBody::List {
        kind: Kind::ConfigMap,
        namespace: None,
        selector: "nothing=here".into(),
    })) {
        Ok(ResponseBody::List { items, .. }) => assert!(items.is_empty()),
        other => panic!("{other:?}"),
    }
}

/// Master → client, the other side: the CLI's client refuses an answer frame over its bound at
/// the header, instead of buffering it or waiting for its body. The server is a stand-in
/// speaking the master's TLS (its own certificate code) and then announcing too large a frame.
#[test]
fn the_client_refuses_an_oversized_answer_at_the_header() {
    use bramble_server::api::tls;
    let tmp = tempfile::tempdir().unwrap();
    let identity = tls::load_or_create(tmp.path()).unwrap();
    let acceptor = futures_rustls::TlsAcceptor::from(tls::server_config(&identity).unwrap());
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let max = bramble_client::CLIENT_RESPONSE_MAX;
    let server = std::thread::spawn(move || {
        smol::block_on(async move {
            let listener = async_net::TcpListener::try_from(listener).unwrap();
            let (s, _) = listener.accept().await.unwrap();
            let mut conn = acceptor.accept(s).await.unwrap();
            let mut r = FrameReader::new(&mut conn, 4096);
            assert!(matches!(
                r.recv::<Handshake>().await.unwrap(),
                Some(Handshake::Hello(_))
            ));
            drop(r);
            let welcome = Handshake::Welcome(bramble_wire::Welcome {
                protocol_version: bramble_wire::PROTOCOL_VERSION,
                identity: "admin".try_into().unwrap(),
                heartbeat_interval_ms: 5000,
                master_version: "test".try_into().unwrap(),
            });
            let mut out = encode_vec(&welcome, usize::MAX).unwrap();
            let mut header = [0u8; bramble_wire::frame::MAX_VARINT_LEN];
            let n = bramble_wire::frame::encode_varint(max as u32 + 1, &mut header);
            // The answer: a header one byte over the bound and a little of its body; then the
            // connection stays open, so only the header can end the client's wait.
            out.extend_from_slice(&header[..n]);
            out.extend_from_slice(&[0u8; 100]);
            futures_lite::AsyncWriteExt::write_all(&mut conn, &out)
                .await
                .unwrap();
            futures_lite::AsyncWriteExt::flush(&mut conn).await.unwrap();
            smol::Timer::after(Duration::from_secs(20)).await;
        })
    });
    let token = tls::pinned_token(&identity.pin, "admin.0123456789abcdef0123");
    let err = smol::block_on(async {
        let mut c = bramble_client::Client::connect(&addr, &token)
            .await
            .expect("the stand-in welcomes");
        within(
            CLOSE_WITHIN,
            "the client to refuse the oversized frame",
            c.call(RequestBody::List {
                kind: Kind::Pod,
                namespace: None,
                selector: String::new(),
            }),
        )
        .await
        .expect_err("an oversized answer frame")
    });
    let want = format!(
        "frame of {} bytes exceeds the maximum of {max} bytes",
        max + 1
    );
    assert!(err.to_string().contains(&want), "{err}");
    drop(server);
}

/// `--max-connections` bounds the sessions of node credentials used as clients
/// (`tests/tests/limits.rs`); admins' sessions take no slot and always get in: past the limit the
/// held ones keep working and new ones are welcomed (docs/security.md, "Limits on clients").
#[test]
fn admins_get_in_past_max_connections() {
    const LIMIT: usize = 3;
    let tmp = tempfile::tempdir().unwrap();
    let m = logging_master(tmp.path(), &["--max-connections", &LIMIT.to_string()]);
    let mut held: Vec<_> = (0..LIMIT * 2).map(|_| m.client()).collect();
    for c in &mut held {
        still_answers(c);
    }
    m.ok(&["get", "namespaces"]);
}

fn still_answers(c: &mut bramble_client::Client) {
    match smol::block_on(c.call(RequestBody::List {
        kind: Kind::Namespace,
        namespace: None,
        selector: String::new(),
    })) {
        Ok(ResponseBody::List { items, .. }) => assert!(!items.is_empty()),
        other => panic!("a connection stopped working: {other:?}"),
    }
}
