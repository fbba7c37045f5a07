//! Identities, tokens and authorization through the real protocol: an in-process master serving
//! real TCP on loopback, raw worker sessions speaking the wire protocol, and the CLI's client.

use std::os::unix::fs::PermissionsExt;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use async_net::{TcpListener, TcpStream};
use bramble_client::{Client, ClientError};
use bramble_server::api::{Config, Master};
use bramble_wire::io::{FrameReader, send};
use bramble_wire::msg::{
    ErrorCode, NodeDown, NodeUp, PodReport, RequestBody, ResponseBody, TokenKind,
};
use bramble_wire::objects::{
    ConfigMap, EnvFrom, Kind, Meta, Object, Pod, PodPhase, PodStatus, Secret, Volume, VolumeSource,
};
use bramble_wire::{
    Arch, CgroupVersion, Controllers, Handshake, Hello, NodeInfo, RejectReason, Role,
};

const MAX: usize = 1 << 20;

/// Everything the masters of this test binary log, to check that no secret ever appears.
fn log_buffer() -> Arc<Mutex<Vec<u8>>> {
    static BUF: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    BUF.get_or_init(|| {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let b = buf.clone();
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new("debug,sqlx=warn"))
            .with_ansi(false)
            .with_writer(move || Tee(b.clone()))
            .try_init();
        buf
    })
    .clone()
}

struct Tee(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Tee {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

struct TestMaster {
    addr: String,
    dir: tempfile::TempDir,
    admin: String,
    join: String,
}

fn start(tune: impl FnOnce(&mut Config), prepare: impl FnOnce(&std::path::Path)) -> TestMaster {
    log_buffer();
    // The master outlives the test (its tasks run on smol's global executor); once the data dir
    // is gone its store calls fail, which only the captured log sees.
    let dir = tempfile::tempdir().unwrap();
    prepare(dir.path());
    let listener = smol::block_on(TcpListener::bind("127.0.0.1:0")).unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let mut cfg = Config::new(dir.path().to_path_buf(), addr.clone());
    tune(&mut cfg);
    let m = smol::block_on(Master::open(cfg)).unwrap();
    std::thread::spawn(move || smol::block_on(m.serve(listener)));
    let read = |f: &str| {
        std::fs::read_to_string(dir.path().join(f))
            .unwrap()
            .trim()
            .to_string()
    };
    // Token files pin the master's certificate: keep the pin aside, test with the credentials.
    let split = |t: String| {
        let p = bramble_wire::token::split_token(&t).unwrap();
        (p.pin.map(str::to_string), p.credential.to_string())
    };
    let ((pin, admin), (_, join)) = (split(read("admin.token")), split(read("join.token")));
    pins()
        .lock()
        .unwrap()
        .insert(addr.clone(), pin.expect("token files pin the certificate"));
    TestMaster {
        addr,
        dir,
        admin,
        join,
    }
}

fn info(name: &str) -> NodeInfo {
    NodeInfo {
        name: name.try_into().unwrap(),
        arch: Arch::X86_64,
        os: "test".try_into().unwrap(),
        kernel: "test".try_into().unwrap(),
        board: heapless::String::new(),
        cpus: 2,
        memory_bytes: 1 << 30,
        pids: 1000,
        cgroup: CgroupVersion::V1,
        controllers: Controllers(7),
        agent_version: "test".try_into().unwrap(),
        labels: heapless::Vec::new(),
    }
}

/// The certificate pin of each test master, by address.
fn pins() -> &'static Mutex<std::collections::HashMap<String, String>> {
    static PINS: OnceLock<Mutex<std::collections::HashMap<String, String>>> = OnceLock::new();
    PINS.get_or_init(Default::default)
}

/// `cred` as a token that pins the certificate of the master at `addr` (what a token file holds).
fn pinned(addr: &str, cred: &str) -> String {
    let pin = pins()
        .lock()
        .unwrap()
        .get(addr)
        .cloned()
        .expect("a test master");
    format!("K10{pin}::{cred}")
}

type Tls = bramble_client::tls::ClientStream;

/// A raw worker connection after its handshake (over TLS, like every connection).
struct Session {
    reader: FrameReader<futures_lite::io::ReadHalf<Tls>>,
    writer: futures_lite::io::WriteHalf<Tls>,
}

async fn hello(addr: &str, role: Role, identity: &str, cred: &str) -> (Session, Handshake) {
    // A token printed by `token create` carries the pin: the Hello gets its credential part.
    let cred = bramble_wire::token::split_token(cred).unwrap().credential;
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (tls, _) = bramble_client::tls::dial_pinned(tcp, &pinned(addr, cred), "test")
        .await
        .unwrap();
    let (r, mut writer) = futures_lite::io::split(tls);
    let mut reader = FrameReader::new(r, MAX);
    let h = Handshake::Hello(Hello {
        protocol_version: bramble_wire::PROTOCOL_VERSION,
        role,
        identity: identity.try_into().unwrap(),
        credentials: cred.try_into().unwrap(),
        agent_version: "test".try_into().unwrap(),
    });
    send(&mut writer, &h, MAX).await.unwrap();
    let answer = reader.recv::<Handshake>().await.unwrap().unwrap();
    (Session { reader, writer }, answer)
}

fn rejected(h: &Handshake) -> (RejectReason, String) {
    match h {
        Handshake::Reject(r) => (r.reason, r.message.to_string()),
        other => panic!("expected a Reject, got {other:?}"),
    }
}

/// Joins `name` with `cred` (a join token): returns the session (registered) and the credential
/// the master issued.
async fn join(addr: &str, name: &str, cred: &str) -> (Session, String) {
    let (mut s, h) = hello(addr, Role::Worker, name, cred).await;
    assert!(matches!(h, Handshake::Welcome(_)), "join refused: {h:?}");
    let secret = match s.reader.recv::<NodeDown>().await.unwrap() {
        Some(NodeDown::Credential { secret }) => secret,
        other => panic!("expected the node's credential first, got {other:?}"),
    };
    send(&mut s.writer, &NodeUp::Register(Box::new(info(name))), MAX)
        .await
        .unwrap();
    (s, secret)
}

/// Connects with a node credential and registers.
async fn reconnect(addr: &str, name: &str, cred: &str) -> Session {
    let (mut s, h) = hello(addr, Role::Worker, name, cred).await;
    assert!(matches!(h, Handshake::Welcome(_)), "refused: {h:?}");
    send(&mut s.writer, &NodeUp::Register(Box::new(info(name))), MAX)
        .await
        .unwrap();
    s
}

fn heartbeat() -> NodeUp {
    NodeUp::Heartbeat(bramble_wire::Heartbeat {
        seq: 1,
        pods_running: 0,
        uptime_s: 1,
    })
}

/// Reads until the master closes the connection (or 10 s pass: then panics).
async fn closed_by_master(s: &mut Session) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        assert!(Instant::now() < deadline, "the master kept the connection");
        let r = smol::future::or(async { Some(s.reader.recv::<NodeDown>().await) }, async {
            smol::Timer::after(Duration::from_millis(200)).await;
            None
        })
        .await;
        match r {
            Some(Ok(Some(_))) => continue, // assignments, pings
            Some(Ok(None)) | Some(Err(_)) => return,
            None => {
                // Keep talking: the master checks revocation at each frame.
                if send(&mut s.writer, &heartbeat(), MAX).await.is_err() {
                    return;
                }
            }
        }
    }
}

async fn admin(m: &TestMaster) -> Client {
    Client::connect(&m.addr, &pinned(&m.addr, &m.admin))
        .await
        .unwrap()
}

fn forbidden(r: Result<ResponseBody, ClientError>, what: &str) -> String {
    match r {
        Err(ClientError::Api(e)) if e.code == ErrorCode::Forbidden => e.message,
        other => panic!("{what}: expected Forbidden, got {other:?}"),
    }
}

#[test]
fn join_once_per_name_then_only_with_the_node_credential() {
    let m = start(|_| {}, |_| {});
    smol::block_on(async {
        let (_s, cred) = join(&m.addr, "pi1", &m.join).await;
        assert!(cred.starts_with("node-") && cred.contains('.'));
        // A second join of the same name is refused, naming the credential and the fix.
        let (_, h) = hello(&m.addr, Role::Worker, "pi1", &m.join).await;
        let (reason, msg) = rejected(&h);
        assert_eq!(reason, RejectReason::BadIdentity);
        assert!(msg.contains("pi1 already joined"), "{msg}");
        assert!(msg.contains("bramble delete node pi1"), "{msg}");
        // The credential works for its own name only.
        let _s2 = reconnect(&m.addr, "pi1", &cred).await;
        let (_, h) = hello(&m.addr, Role::Worker, "pi2", &cred).await;
        let (reason, msg) = rejected(&h);
        assert_eq!(reason, RejectReason::BadIdentity);
        assert!(msg.contains("belongs to node \"pi1\""), "{msg}");
        // A join token is not a CLI credential, an admin token does not register nodes.
        let (_, h) = hello(&m.addr, Role::Client, "admin", &m.join).await;
        assert!(rejected(&h).1.contains("is a join token"));
        let (_, h) = hello(&m.addr, Role::Worker, "pi3", &m.admin).await;
        assert!(rejected(&h).1.contains("is an admin token"));
        // The list shows kinds and nodes, never secrets.
        let mut c = admin(&m).await;
        let ResponseBody::Tokens(list) = c.call(RequestBody::TokenList).await.unwrap() else {
            panic!()
        };
        let node = list.iter().find(|t| t.kind == TokenKind::Node).unwrap();
        assert_eq!(node.node.as_deref(), Some("pi1"));
        assert!(list.iter().any(|t| t.kind == TokenKind::Admin));
        assert!(list.iter().any(|t| t.kind == TokenKind::Join));
        let shown = format!("{list:?}");
        let secret_of = |c: &str| c.split_once('.').unwrap().1.to_string();
        for s in [secret_of(&cred), secret_of(&m.admin), secret_of(&m.join)] {
            assert!(!shown.contains(&s));
        }
    });
    // Token files are private.
    for f in ["admin.token", "join.token"] {
        let mode = std::fs::metadata(m.dir.path().join(f))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{f}");
    }
}

#[test]
fn revoking_a_node_credential_cuts_it_off_and_blocks_the_name_until_deleted() {
    let m = start(|_| {}, |_| {});
    smol::block_on(async {
        let (mut s, cred) = join(&m.addr, "pi1", &m.join).await;
        send(&mut s.writer, &heartbeat(), MAX).await.unwrap();
        let mut c = admin(&m).await;
        let id = cred.split_once('.').unwrap().0.to_string();
        let r = c
            .call(RequestBody::TokenRevoke { id: id.clone() })
            .await
            .unwrap();
        assert!(matches!(r, ResponseBody::Tokens(t) if t[0].revoked));
        closed_by_master(&mut s).await;
        let (_, h) = hello(&m.addr, Role::Worker, "pi1", &cred).await;
        let (reason, msg) = rejected(&h);
        assert_eq!(reason, RejectReason::BadCredentials);
        assert!(msg.contains(&format!("token {id} was revoked")), "{msg}");
        // The name may not join again with the join token...
        let (_, h) = hello(&m.addr, Role::Worker, "pi1", &m.join).await;
        let (reason, msg) = rejected(&h);
        assert_eq!(reason, RejectReason::BadIdentity);
        assert!(
            msg.contains(&format!("{id} was revoked")) && msg.contains("bramble delete node pi1"),
            "{msg}"
        );
        // ...until an admin deletes the node; then it gets a new credential.
        c.call(RequestBody::Delete {
            kind: bramble_wire::objects::Kind::Node,
            namespace: String::new(),
            name: "pi1".into(),
            expected_revision: None,
        })
        .await
        .unwrap();
        let (_s, cred2) = join(&m.addr, "pi1", &m.join).await;
        assert_ne!(cred, cred2);
        // Unknown ids are NotFound.
        match c.call(RequestBody::TokenRevoke { id: "nope".into() }).await {
            Err(ClientError::Api(e)) => assert_eq!(e.code, ErrorCode::NotFound),
            other => panic!("{other:?}"),
        }
    });
}

#[test]
fn created_tokens_join_expire_and_revoke() {
    let m = start(|_| {}, |_| {});
    smol::block_on(async {
        let mut c = admin(&m).await;
        let create = |ttl_s| RequestBody::TokenCreate {
            ttl_s,
            description: "rack 2".into(),
            uses: None,
            node: None,
        };
        let ResponseBody::TokenCreated { info, token } = c.call(create(None)).await.unwrap() else {
            panic!()
        };
        assert_eq!(info.kind, TokenKind::Join);
        assert_eq!(info.description, "rack 2");
        assert!(
            token.ends_with(&format!("{}.", info.id)) || token.contains(&format!("{}.", info.id))
        );
        let (_s, _) = join(&m.addr, "pi5", &token).await;
        c.call(RequestBody::TokenRevoke {
            id: info.id.clone(),
        })
        .await
        .unwrap();
        let (_, h) = hello(&m.addr, Role::Worker, "pi6", &token).await;
        assert!(rejected(&h).1.contains("was revoked"));
        // A one-second token expires.
        let ResponseBody::TokenCreated { token, .. } = c.call(create(Some(1))).await.unwrap()
        else {
            panic!()
        };
        smol::Timer::after(Duration::from_millis(1100)).await;
        let (_, h) = hello(&m.addr, Role::Worker, "pi7", &token).await;
        let (reason, msg) = rejected(&h);
        assert_eq!(reason, RejectReason::BadCredentials);
        assert!(msg.contains("expired"), "{msg}");
        // Bad input is refused at the edge.
        match c.call(create(Some(0))).await {
            Err(ClientError::Api(e)) => assert_eq!(e.code, ErrorCode::Invalid),
            other => panic!("{other:?}"),
        }
    });
}

fn pod(name: &str, node: &str, cm: &str, secret: &str) -> Object {
    let mut objs = bramble_client::manifest::parse(
        &format!(
            "[[pod]]\nname = \"{name}\"\nnode = \"{node}\"\n[[pod.process]]\nname = \"main\"\ncommand = [\"/bin/true\"]\n"
        ),
        "test",
        "default",
    )
    .unwrap();
    let Object::Pod(mut p) = objs.remove(0) else {
        panic!()
    };
    p.spec.volumes.push(Volume {
        name: "conf".into(),
        mount_path: "/conf".into(),
        source: VolumeSource::ConfigMap { name: cm.into() },
    });
    p.spec.processes[0].env_from.push(EnvFrom::Secret {
        name: secret.into(),
        prefix: String::new(),
    });
    Object::Pod(p)
}

fn meta(name: &str) -> Meta {
    Meta {
        name: name.into(),
        namespace: "default".into(),
        ..Default::default()
    }
}

fn config_map(name: &str) -> Object {
    Object::ConfigMap(ConfigMap {
        meta: meta(name),
        data: [("k".to_string(), "v".to_string())].into(),
    })
}

fn secret(name: &str) -> Object {
    Object::Secret(Secret {
        meta: meta(name),
        data: [("k".to_string(), b"v".to_vec())].into(),
    })
}

fn get(kind: Kind, name: &str) -> RequestBody {
    RequestBody::Get {
        kind,
        namespace: "default".into(),
        name: name.into(),
    }
}

fn list(kind: Kind) -> RequestBody {
    RequestBody::List {
        kind,
        namespace: None,
        selector: String::new(),
    }
}

fn names(r: ResponseBody) -> Vec<String> {
    match r {
        ResponseBody::List { items, .. } => items.iter().map(|o| o.meta().name.clone()).collect(),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_node_credential_reads_only_what_is_assigned_to_it() {
    let m = start(|_| {}, |_| {});
    smol::block_on(async {
        let (_s1, cred1) = join(&m.addr, "pi1", &m.join).await;
        let (_s2, _cred2) = join(&m.addr, "pi2", &m.join).await;
        let mut a = admin(&m).await;
        a.call(RequestBody::Apply(vec![
            config_map("cm-a"),
            config_map("cm-b"),
            secret("s-a"),
            secret("s-b"),
            pod("a", "pi1", "cm-a", "s-a"),
            pod("b", "pi2", "cm-b", "s-b"),
        ]))
        .await
        .unwrap();
        let mut n = Client::connect(&m.addr, &pinned(&m.addr, &cred1))
            .await
            .unwrap();
        // Allowed: its node, its pods, their config and secrets, services' endpoints.
        assert!(matches!(
            n.call(get(Kind::Node, "pi1")).await,
            Ok(ResponseBody::Object(_))
        ));
        assert!(matches!(
            n.call(get(Kind::Pod, "a")).await,
            Ok(ResponseBody::Object(_))
        ));
        assert!(matches!(
            n.call(get(Kind::ConfigMap, "cm-a")).await,
            Ok(ResponseBody::Object(_))
        ));
        assert!(matches!(
            n.call(get(Kind::Secret, "s-a")).await,
            Ok(ResponseBody::Object(_))
        ));
        assert!(n.call(list(Kind::Endpoints)).await.is_ok());
        assert_eq!(names(n.call(list(Kind::Pod)).await.unwrap()), ["a"]);
        assert_eq!(names(n.call(list(Kind::Node)).await.unwrap()), ["pi1"]);
        assert_eq!(names(n.call(list(Kind::Secret)).await.unwrap()), ["s-a"]);
        assert_eq!(
            names(n.call(list(Kind::ConfigMap)).await.unwrap()),
            ["cm-a"]
        );
        // Denied: other nodes' objects.
        let msg = forbidden(n.call(get(Kind::Pod, "b")).await, "other node's pod");
        assert!(
            msg.contains("pod default/b") && msg.contains("not assigned to node pi1"),
            "{msg}"
        );
        forbidden(
            n.call(get(Kind::Secret, "s-b")).await,
            "other node's secret",
        );
        forbidden(
            n.call(get(Kind::ConfigMap, "cm-b")).await,
            "other node's config map",
        );
        forbidden(n.call(get(Kind::Node, "pi2")).await, "other node");
        // A name that does not exist answers exactly like one that is not the node's: a node
        // credential cannot probe which names exist.
        let existing = forbidden(n.call(get(Kind::Secret, "s-b")).await, "existing");
        let missing = forbidden(n.call(get(Kind::Secret, "s-zz")).await, "missing secret");
        assert_eq!(
            existing.replace("s-b", "X"),
            missing.replace("s-zz", "X"),
            "same answer for an existing and a missing name"
        );
        forbidden(n.call(get(Kind::Pod, "zz")).await, "missing pod");
        forbidden(n.call(get(Kind::Node, "pi9")).await, "missing node");
        // What the node could see answers NotFound: a service that does not exist.
        assert!(matches!(
            n.call(get(Kind::Service, "zz")).await,
            Err(ClientError::Api(e)) if e.code == ErrorCode::NotFound
        ));
        // Denied: writes, tokens, logs, events, namespaces, secret watches.
        let msg = forbidden(
            n.call(RequestBody::Apply(vec![secret("evil")])).await,
            "apply",
        );
        assert!(
            msg.contains("may not apply objects") && msg.contains("admin token"),
            "{msg}"
        );
        forbidden(
            n.call(RequestBody::Delete {
                kind: Kind::Pod,
                namespace: "default".into(),
                name: "a".into(),
                expected_revision: None,
            })
            .await,
            "delete",
        );
        forbidden(
            n.call(RequestBody::TokenCreate {
                ttl_s: None,
                description: String::new(),
                uses: None,
                node: None,
            })
            .await,
            "token create",
        );
        forbidden(n.call(RequestBody::TokenList).await, "token list");
        forbidden(
            n.call(RequestBody::TokenRevoke { id: "x".into() }).await,
            "token revoke",
        );
        forbidden(n.call(list(Kind::Event)).await, "events");
        forbidden(n.call(list(Kind::Namespace)).await, "namespaces");
        forbidden(
            n.call(RequestBody::Logs {
                namespace: "default".into(),
                pod: "b".into(),
                process: None,
                follow: false,
                tail_bytes: None,
                previous: false,
            })
            .await,
            "logs",
        );
        forbidden(
            n.call(RequestBody::Watch {
                kind: Kind::Secret,
                namespace: None,
                from_revision: 0,
            })
            .await,
            "watch secrets",
        );
        // Nothing was written.
        assert!(matches!(
            a.call(get(Kind::Secret, "evil")).await,
            Err(ClientError::Api(e)) if e.code == ErrorCode::NotFound
        ));
    });
}

#[test]
fn a_node_session_reports_status_only_for_its_own_pods() {
    let m = start(|_| {}, |_| {});
    smol::block_on(async {
        let (mut s1, _) = join(&m.addr, "pi1", &m.join).await;
        let (_s2, _) = join(&m.addr, "pi2", &m.join).await;
        let mut a = admin(&m).await;
        a.call(RequestBody::Apply(vec![
            pod("a", "pi1", "cm", "s"),
            pod("b", "pi2", "cm", "s"),
        ]))
        .await
        .unwrap();
        let uid = |r: ResponseBody| match r {
            ResponseBody::Object(Object::Pod(p)) => p,
            other => panic!("{other:?}"),
        };
        let pa = uid(a.call(get(Kind::Pod, "a")).await.unwrap());
        let pb = uid(a.call(get(Kind::Pod, "b")).await.unwrap());
        let report = |p: &Pod| PodReport {
            namespace: "default".into(),
            name: p.meta.name.clone(),
            uid: p.meta.uid.clone(),
            status: PodStatus {
                phase: PodPhase::Failed,
                message: "forged by pi1".into(),
                ..Default::default()
            },
        };
        // pi1 lies about pi2's pod first, then reports its own.
        send(
            &mut s1.writer,
            &NodeUp::Status(vec![report(&pb), report(&pa)]),
            MAX,
        )
        .await
        .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let p = uid(a.call(get(Kind::Pod, "a")).await.unwrap());
            if p.status.phase == PodPhase::Failed {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "pi1's own report was not written"
            );
            smol::Timer::after(Duration::from_millis(20)).await;
        }
        // Reports are handled in order: pi2's pod was left alone.
        let p = uid(a.call(get(Kind::Pod, "b")).await.unwrap());
        assert_ne!(p.status.phase, PodPhase::Failed);
        assert_ne!(p.status.message, "forged by pi1");
        // Registering another node's name closes the session and writes nothing.
        let before = a.call(get(Kind::Node, "pi2")).await.unwrap();
        let (mut s3, h) = hello(&m.addr, Role::Worker, "pi3", &m.join).await;
        assert!(matches!(h, Handshake::Welcome(_)));
        send(
            &mut s3.writer,
            &NodeUp::Register(Box::new(info("pi2"))),
            MAX,
        )
        .await
        .unwrap();
        closed_by_master(&mut s3).await;
        assert_eq!(a.call(get(Kind::Node, "pi2")).await.unwrap(), before);
    });
}

#[test]
fn failed_authentications_are_rate_limited_per_address_never_the_right_token() {
    let m = start(
        |c| {
            c.auth_fail_burst = 3;
            c.auth_fail_per_s = 0.2;
        },
        |_| {},
    );
    smol::block_on(async {
        for _ in 0..3 {
            let (_, h) = hello(&m.addr, Role::Client, "admin", "admin-x.wrong").await;
            assert_eq!(rejected(&h).0, RejectReason::BadCredentials);
        }
        // Past the budget, the address's wrong tokens are answered Busy...
        let (_, h) = hello(&m.addr, Role::Client, "admin", "admin-x.wrong").await;
        let (reason, msg) = rejected(&h);
        assert_eq!(reason, RejectReason::Busy);
        assert!(
            msg.contains("too many failed authentications from 127.0.0.1"),
            "{msg}"
        );
        // ...but the right one still gets in from the same address: one bad client does not
        // lock out the others behind it.
        let (_, h) = hello(&m.addr, Role::Client, "admin", &m.admin).await;
        assert!(matches!(h, Handshake::Welcome(_)), "{h:?}");
        // A refused-but-valid token (a join token used as a client) does not count.
        let m2 = start(|c| c.auth_fail_burst = 1, |_| {});
        for _ in 0..3 {
            let (_, h) = hello(&m2.addr, Role::Client, "admin", &m2.join).await;
            assert_eq!(rejected(&h).0, RejectReason::BadCredentials);
        }
        assert!(
            Client::connect(&m2.addr, &pinned(&m2.addr, &m2.admin))
                .await
                .is_ok()
        );
    });
}

#[test]
fn token_files_from_older_masters_keep_working() {
    let legacy_admin = "0123456789abcdef0123456789abcdef0123456789abcdef";
    let legacy_join = "fedcba9876543210fedcba9876543210fedcba9876543210";
    let m = start(
        |_| {},
        |dir| {
            std::fs::write(dir.join("admin.token"), format!("{legacy_admin}\n")).unwrap();
            std::fs::write(dir.join("join.token"), format!("{legacy_join}\n")).unwrap();
        },
    );
    assert_eq!(m.admin, legacy_admin);
    smol::block_on(async {
        let mut c = admin(&m).await;
        let (_s, cred) = join(&m.addr, "old-pi", legacy_join).await;
        assert!(cred.starts_with("node-"));
        let ResponseBody::Tokens(list) = c.call(RequestBody::TokenList).await.unwrap() else {
            panic!()
        };
        assert!(list.iter().filter(|t| t.id.starts_with("legacy-")).count() == 2);
    });
}

#[test]
fn secrets_never_reach_the_log() {
    let m = start(|_| {}, |_| {});
    let mut secrets = vec![m.admin.clone(), m.join.clone()];
    smol::block_on(async {
        let (_s, cred) = join(&m.addr, "pi1", &m.join).await;
        let mut c = admin(&m).await;
        let ResponseBody::TokenCreated { token, info } = c
            .call(RequestBody::TokenCreate {
                ttl_s: Some(60),
                description: String::new(),
                uses: None,
                node: None,
            })
            .await
            .unwrap()
        else {
            panic!()
        };
        c.call(RequestBody::TokenRevoke { id: info.id })
            .await
            .unwrap();
        let _ = hello(&m.addr, Role::Worker, "pi9", &token).await;
        let _ = hello(&m.addr, Role::Client, "admin", &format!("{}x", m.admin)).await;
        secrets.push(cred);
        secrets.push(token);
    });
    std::thread::sleep(Duration::from_millis(200));
    let log = String::from_utf8_lossy(&log_buffer().lock().unwrap()).into_owned();
    assert!(log.contains("node joined"), "the log was not captured");
    for s in secrets {
        let secret = s.split_once('.').unwrap().1;
        assert!(!log.contains(secret), "a secret reached the log");
    }
}
