//! Golden tests: the exact bytes of every message, pinned.
//!
//! postcard is not self-describing, so any change to these bytes is a protocol break (see the
//! crate's evolution rules): a failing test here means "bump `PROTOCOL_VERSION`", not "update the
//! literal". When adding a *new* message or enum case, run the test with an empty literal and
//! paste the `actual` hex it prints, after checking it by hand.

mod common;

use std::fmt::Debug;

use bramble_wire::frame::{self, Decoder, MAX_VARINT_LEN};
use bramble_wire::msg::{
    ApiError, Applied, ApplyOutcome, Assignment, ErrorCode, LogChunk, NodeDown, NodeUp, PodReport,
    PodSubnet, Request, RequestBody, Response, ResponseBody, WatchEvent,
};
use bramble_wire::objects::{
    Condition, ConditionKind, Kind, Meta, Namespace, NamespacePhase, Node, NodeSpec, NodeStatus,
    Object, OwnerRef, PodStatus, ProcessState, ProcessStatus, Resources, Taint, TaintEffect,
};
use bramble_wire::{
    DeviceUp, ExitReason, Handshake, Hello, PodPhase, Reject, RejectReason, Role, Welcome,
};
use common::{VERSION, assignment, heartbeat, hello_pod, hs, labels, node_info};
use serde::Serialize;
use serde::de::DeserializeOwned;

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Asserts that `value`'s frame body is exactly `expect` (hex; whitespace ignored), that the
/// frame is the body behind its minimal varint length, that the no-alloc encoder agrees, and that
/// the body decodes back to `value`.
#[track_caller]
fn check<T>(value: T, expect: &str)
where
    T: Serialize + DeserializeOwned + PartialEq + Debug,
{
    let framed = frame::encode_vec(&value, usize::MAX).expect("encodes");
    let mut dec = Decoder::new(Vec::new(), usize::MAX);
    let (used, body) = dec.feed(&framed).expect("own frame decodes");
    assert_eq!(used, framed.len(), "one frame, nothing after it");
    let body = body.expect("frame complete").to_vec();

    let actual = hex(&body);
    let expect: String = expect.split_whitespace().collect();
    if actual != expect
        && std::env::var_os("GOLDEN_BLESS").is_some()
        && !std::thread::current()
            .name()
            .unwrap_or("")
            .contains("check_catches")
    {
        // Maintainers only: records the new bytes for review, then fails all the same, so a
        // blessed run is never green (the test command refuses GOLDEN_BLESS too). A test stops
        // at its first changed message: re-run until nothing more is recorded.
        let at = std::panic::Location::caller();
        let line = format!(
            "{} {} {}\n",
            at.line(),
            if expect.is_empty() { "-" } else { &expect },
            actual
        );
        use std::io::Write as _;
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(std::env::var_os("GOLDEN_BLESS").expect("set"))
            .and_then(|mut f| f.write_all(line.as_bytes()))
            .expect("write the bless file");
        panic!(
            "GOLDEN_BLESS: the encoding of {value:?} changed; recorded line {} in {:?}. This \
             run fails on purpose: review the bytes, paste them here (a changed encoding needs a \
             new protocol version), then run without GOLDEN_BLESS",
            at.line(),
            std::env::var_os("GOLDEN_BLESS").unwrap_or_default()
        );
    }
    if actual != expect {
        let wrapped: Vec<&str> = actual
            .as_bytes()
            .chunks(64)
            .map(|c| std::str::from_utf8(c).expect("hex is ascii"))
            .collect();
        panic!(
            "the encoding of {value:?} changed\nexpected: {expect}\nactual:   {actual}\n\
             wrapped:\n{}\n(changing pinned bytes needs a new protocol version)",
            wrapped.join("\n")
        );
    }

    let mut prefix = [0u8; MAX_VARINT_LEN];
    let n = frame::encode_varint(body.len() as u32, &mut prefix);
    assert_eq!(&framed[..n], &prefix[..n], "length prefix");

    let mut buf = vec![0u8; framed.len() + MAX_VARINT_LEN];
    assert_eq!(
        frame::encode(&value, &mut buf).expect("fits"),
        &framed[..],
        "no-alloc encoder"
    );

    let back: T = frame::decode(&body).expect("decodes");
    assert_eq!(back, value, "decode(encode(x)) == x");
}

#[test]
#[should_panic(expected = "changed")]
fn check_catches_a_changed_encoding() {
    check(common::heartbeat(), "0702effdb6f50d901d");
}

/// A run with `GOLDEN_BLESS` set records bytes instead of checking them, so it is never green,
/// even when nothing changed.
#[test]
fn golden_bless_is_not_set() {
    assert!(
        std::env::var_os("GOLDEN_BLESS").is_none(),
        "GOLDEN_BLESS is set: this run records new golden bytes instead of checking them; \
         review what it wrote, then `unset GOLDEN_BLESS` and run again"
    );
}

// ---------------------------------------------------------------------------------------------
// Core messages (no alloc).

fn hello(role: Role) -> Handshake {
    Handshake::Hello(Hello {
        protocol_version: VERSION,
        role,
        identity: hs("pi4b-kitchen"),
        credentials: hs("bjt-0123456789abcdef"),
        agent_version: hs("0.1.0"),
    })
}

#[test]
fn handshake_hello() {
    check(
        hello(Role::Worker),
        "0007000c706934622d6b69746368656e14626a742d3031323334353637383961
         626364656605302e312e30",
    );
    check(
        hello(Role::Client),
        "0007010c706934622d6b69746368656e14626a742d3031323334353637383961
         626364656605302e312e30",
    );
    check(
        hello(Role::Device),
        "0007020c706934622d6b69746368656e14626a742d3031323334353637383961
         626364656605302e312e30",
    );
}

#[test]
fn handshake_welcome() {
    check(
        Handshake::Welcome(Welcome {
            protocol_version: VERSION,
            identity: hs("pi4b-kitchen"),
            heartbeat_interval_ms: 5000,
            master_version: hs("0.1.0"),
        }),
        "01070c706934622d6b69746368656e882705302e312e30",
    );
}

fn reject(reason: RejectReason, message: &str) -> Handshake {
    Handshake::Reject(Reject {
        reason,
        message: hs(message),
    })
}

#[test]
fn handshake_reject_each_reason() {
    check(
        reject(
            RejectReason::UnsupportedVersion { min: 1, max: 1 },
            "protocol 2 unsupported; upgrade the master",
        ),
        "020001012a70726f746f636f6c203220756e737570706f727465643b20757067
         7261646520746865206d6173746572",
    );
    check(
        reject(RejectReason::BadCredentials, "bad join token"),
        "02010e626164206a6f696e20746f6b656e",
    );
    check(
        reject(RejectReason::BadIdentity, "name taken"),
        "02020a6e616d652074616b656e",
    );
    check(reject(RejectReason::Busy, "busy"), "02030462757379");
    check(reject(RejectReason::Malformed, ""), "020400");
}

#[test]
fn node_info_registration() {
    check(
        node_info(),
        "0c706934622d6b69746368656e001e44656269616e20474e552f4c696e757820
         31322028626f6f6b776f726d290e362e312e302d35302d61726d363404706934
         620480808080108020020705302e312e300204726f6f6d076b69746368656e04
         6469736b027364",
    );
}

#[test]
fn heartbeat_bytes() {
    check(heartbeat(), "0702901c");
    // The extremes: a heartbeat stays within a few dozen bytes.
    check(
        bramble_wire::Heartbeat {
            seq: u32::MAX,
            pods_running: u16::MAX,
            uptime_s: u32::MAX,
        },
        "ffffffff0fffff03ffffffff0f",
    );
}

/// Phases and exit reasons, as pod statuses carry them.
#[test]
fn pod_phase_and_exit_each_case() {
    check((PodPhase::Pending, None::<ExitReason>), "0000");
    check((PodPhase::Running, Some(ExitReason::Completed)), "010100");
    check(
        (PodPhase::Succeeded, Some(ExitReason::Error(1))),
        "02010102",
    );
    check((PodPhase::Failed, Some(ExitReason::Error(-1))), "03010101");
    check(
        (PodPhase::Unknown, Some(ExitReason::Signaled(9))),
        "04010212",
    );
    check((PodPhase::Failed, Some(ExitReason::OOMKilled)), "030103");
    check((PodPhase::Failed, Some(ExitReason::StartFailed)), "030104");
}

#[test]
fn device_up_each_case() {
    check(
        DeviceUp::Register(node_info()),
        "000c706934622d6b69746368656e001e44656269616e20474e552f4c696e7578
         2031322028626f6f6b776f726d290e362e312e302d35302d61726d3634047069
         34620480808080108020020705302e312e300204726f6f6d076b69746368656e
         046469736b027364",
    );
    check(DeviceUp::Heartbeat(heartbeat()), "010702901c");
}

// ---------------------------------------------------------------------------------------------
// Objects (alloc).

fn namespace() -> Object {
    Object::Namespace(Namespace {
        meta: Meta {
            name: "default".into(),
            uid: "ns-1".into(),
            revision: 1,
            created_ms: 1_700_000_000_000,
            ..Meta::default()
        },
        phase: NamespacePhase::Active,
        pod_security: bramble_wire::security::PodSecurity::Baseline,
    })
}

fn node() -> Object {
    Object::Node(Node {
        meta: Meta {
            name: "pi4b-kitchen".into(),
            labels: labels(&[("disk", "sd"), ("room", "kitchen")]),
            uid: "node-1".into(),
            revision: 7,
            created_ms: 1_700_000_000_000,
            ..Meta::default()
        },
        spec: NodeSpec {
            taints: vec![Taint {
                key: "dedicated".into(),
                value: "sensors".into(),
                effect: TaintEffect::NoSchedule,
            }],
            unschedulable: false,
            pod_cidr: "10.42.1.0/24".into(),
        },
        status: NodeStatus {
            info: Some(Box::new(node_info())),
            allocatable: Resources {
                cpu_millis: Some(4000),
                memory_bytes: Some(3 * 1024 * 1024 * 1024),
                pids: Some(4096),
            },
            conditions: vec![
                Condition {
                    kind: ConditionKind::Ready,
                    status: true,
                    message: String::new(),
                    since_ms: 1_700_000_001_000,
                },
                Condition {
                    kind: ConditionKind::MemoryCgroup,
                    status: true,
                    message: String::new(),
                    since_ms: 1_700_000_001_000,
                },
            ],
            addresses: vec!["192.168.1.20".into()],
            last_heartbeat_ms: 1_700_000_005_000,
        },
    })
}

fn pod() -> Object {
    Object::Pod(hello_pod("hello"))
}

#[test]
fn object_namespace() {
    check(
        namespace(),
        "000764656661756c740000046e732d310180d095ffbc3100000001",
    );
}

#[test]
fn object_node() {
    check(
        node(),
        "010c706934622d6b69746368656e0002046469736b02736404726f6f6d076b69
         746368656e066e6f64652d310780d095ffbc3100000109646564696361746564
         0773656e736f727300000c31302e34322e312e302f3234010c706934622d6b69
         746368656e001e44656269616e20474e552f4c696e75782031322028626f6f6b
         776f726d290e362e312e302d35302d61726d3634047069346204808080801080
         20020705302e312e300204726f6f6d076b69746368656e046469736b02736401
         a01f01808080800c01802002000100e8d795ffbc31010100e8d795ffbc31010c
         3139322e3136382e312e323088f795ffbc31",
    );
}

#[test]
fn object_pod() {
    check(
        pod(),
        "020568656c6c6f0764656661756c7401036170700568656c6c6f243062356337
         6135322d366630652d346431662d396135312d3266316333653064386131312a
         80d095ffbc31000001046d61696e03072f62696e2f7368022d63136563686f20
         68656c6c6f3b20736c656570203200000000000000000001fa01018080801000
         000000000000000000000000904e010c706934622d6b69746368656e00000000
         00000000000000",
    );
}

/// A pod that sets every optional field, so each nested type's encoding is pinned too.
#[test]
fn object_pod_every_field() {
    use bramble_wire::objects::{
        EnvFrom, NetworkMode, Port, Probe, ProbeAction, ProcessSpec, RestartPolicy, Toleration,
        Volume, VolumeSource,
    };
    let mut p = hello_pod("full");
    p.meta.owners = vec![OwnerRef {
        kind: Kind::Node,
        name: "pi4b-kitchen".into(),
        uid: "node-1".into(),
    }];
    p.spec.processes.push(ProcessSpec {
        name: "web".into(),
        command: vec!["/usr/bin/httpd".into()],
        env: vec![("PORT".into(), "8080".into())],
        workdir: Some("/srv".into()),
        user: Some(bramble_wire::security::IdRef::Id(1000)),
        group: Some(bramble_wire::security::IdRef::Name("www-data".into())),
        supplementary_groups: vec![bramble_wire::security::IdRef::Id(20)],
        run_as_non_root: true,
        capabilities: bramble_wire::security::CapChanges {
            add: bramble_wire::security::CapSet::parse("NET_ADMIN").unwrap(),
            drop: bramble_wire::security::CapSet::ALL,
        },
        seccomp: bramble_wire::security::SeccompProfile::Unconfined,
        resources: Resources {
            cpu_millis: None,
            memory_bytes: None,
            pids: Some(64),
        },
        ports: vec![Port {
            container_port: 8080,
            host_port: Some(80),
        }],
        liveness: Some(Probe {
            action: ProbeAction::Http {
                port: 8080,
                path: "/healthz".into(),
            },
            initial_delay_ms: 2000,
            ..Probe::default()
        }),
        readiness: Some(Probe {
            action: ProbeAction::Exec(vec!["/bin/true".into()]),
            period_ms: 1000,
            ..Probe::default()
        }),
        env_from: vec![
            EnvFrom::ConfigMap {
                name: "web-config".into(),
                prefix: String::new(),
            },
            EnvFrom::Secret {
                name: "web-secret".into(),
                prefix: "S_".into(),
            },
        ],
        args: vec!["--verbose".into()],
    });
    p.spec.restart_policy = RestartPolicy::OnFailure;
    p.spec.node_selector = labels(&[("room", "kitchen")]);
    p.spec.tolerations = vec![
        Toleration {
            key: "dedicated".into(),
            value: Some("sensors".into()),
            effect: Some(TaintEffect::NoExecute),
        },
        Toleration {
            key: String::new(),
            value: None,
            effect: None,
        },
    ];
    p.spec.arch = Some(bramble_wire::Arch::Armv7);
    p.spec.rootfs = Some("/var/lib/bramble/rootfs/alpine".into());
    p.spec.network = NetworkMode::Isolated;
    p.spec.privileged = true;
    p.spec.host_pid = true;
    p.spec.host_ipc = true;
    p.spec.image = Some("registry.lan:5000/home/app:1.4".into());
    p.spec.volumes = vec![
        Volume {
            name: "data".into(),
            mount_path: "/data".into(),
            source: VolumeSource::HostPath {
                path: "/mnt/usb".into(),
                read_only: true,
            },
        },
        Volume {
            name: "tmp".into(),
            mount_path: "/tmp".into(),
            source: VolumeSource::EmptyDir,
        },
        Volume {
            name: "conf".into(),
            mount_path: "/etc/web".into(),
            source: VolumeSource::ConfigMap {
                name: "web-config".into(),
            },
        },
        Volume {
            name: "keys".into(),
            mount_path: "/run/keys".into(),
            source: VolumeSource::Secret {
                name: "web-secret".into(),
            },
        },
    ];
    p.status = PodStatus {
        phase: PodPhase::Running,
        processes: vec![
            ProcessStatus {
                name: "main".into(),
                state: ProcessState::Running {
                    pid: 4242,
                    started_ms: 1_700_000_002_000,
                },
                restarts: 1,
                last_exit: Some(ExitReason::OOMKilled),
                ready: true,
            },
            ProcessStatus {
                name: "web".into(),
                state: ProcessState::Terminated {
                    reason: ExitReason::Error(2),
                    finished_ms: 1_700_000_003_000,
                },
                restarts: 0,
                last_exit: None,
                ready: false,
            },
            ProcessStatus {
                name: "idle".into(),
                ..ProcessStatus::default()
            },
        ],
        message: "restarting web".into(),
        updated_ms: 1_700_000_003_000,
        ip: "10.42.1.7".into(),
    };
    check(
        Object::Pod(p),
        "020466756c6c0764656661756c7401036170700568656c6c6f24306235633761
         35322d366630652d346431662d396135312d3266316333653064386131312a80
         d095ffbc3101010c706934622d6b69746368656e066e6f64652d310002046d61
         696e03072f62696e2f7368022d63136563686f2068656c6c6f3b20736c656570
         203200000000000000000001fa01018080801000000000000003776562010e2f
         7573722f62696e2f68747470640104504f5254043830383001042f7372760100
         e8070101087777772d64617461010014018020ffffffffff3f01000001400190
         3f01500102903f082f6865616c74687ad00f904ee8070301010001092f62696e
         2f7472756500e807e807030102000a7765622d636f6e66696700010a7765622d
         73656372657402535f01092d2d766572626f7365010104726f6f6d076b697463
         68656e0209646564696361746564010773656e736f727301010000000101011e
         2f7661722f6c69622f6272616d626c652f726f6f7466732f616c70696e650204
         0464617461052f6461746100082f6d6e742f7573620103746d70042f746d7001
         04636f6e66082f6574632f776562020a7765622d636f6e666967046b65797309
         2f72756e2f6b657973030a7765622d736563726574904e010c706934622d6b69
         746368656e010101011e72656769737472792e6c616e3a353030302f686f6d65
         2f6170703a312e3400000103046d61696e019221d0df95ffbc31010103010377
         6562020104b8e795ffbc310000000469646c65000000000e7265737461727469
         6e6720776562b8e795ffbc310931302e34322e312e37",
    );
}

// ---------------------------------------------------------------------------------------------
// Worker ↔ master.

fn report() -> PodReport {
    let pod = hello_pod("hello");
    PodReport {
        namespace: pod.meta.namespace,
        name: pod.meta.name,
        uid: pod.meta.uid,
        status: PodStatus {
            phase: PodPhase::Running,
            processes: vec![ProcessStatus {
                name: "main".into(),
                state: ProcessState::Running {
                    pid: 4242,
                    started_ms: 1_700_000_002_000,
                },
                restarts: 0,
                last_exit: None,
                ready: true,
            }],
            message: String::new(),
            updated_ms: 1_700_000_002_000,
            ip: String::new(),
        },
    }
}

#[test]
fn node_up_each_case() {
    check(
        NodeUp::Register(Box::new(node_info())),
        "000c706934622d6b69746368656e001e44656269616e20474e552f4c696e7578
         2031322028626f6f6b776f726d290e362e312e302d35302d61726d3634047069
         34620480808080108020020705302e312e300204726f6f6d076b69746368656e
         046469736b027364",
    );
    check(NodeUp::Heartbeat(heartbeat()), "010702901c");
    check(
        NodeUp::Status(vec![report()]),
        "02010764656661756c740568656c6c6f2430623563376135322d366630
         652d346431662d396135312d3266316333653064386131310101046d61696e01
         9221d0df95ffbc3100000100d0df95ffbc3100",
    );
    check(NodeUp::Status(Vec::new()), "0200");
    check(
        NodeUp::Log(LogChunk {
            request: 9,
            data: b"hello\n".to_vec(),
        }),
        "03090668656c6c6f0a",
    );
    check(
        NodeUp::LogEnd {
            request: 9,
            error: None,
        },
        "040900",
    );
    check(
        NodeUp::LogEnd {
            request: 9,
            error: Some("no such process".into()),
        },
        "0409010f6e6f20737563682070726f63657373",
    );
}

#[test]
fn node_down_each_case() {
    check(
        NodeDown::Assign(assignment(1)),
        "00d209010768656c6c6f2d300764656661756c7401036170700568656c6c6f24
         30623563376135322d366630652d346431662d396135312d3266316333653064
         386131312a80d095ffbc31000001046d61696e03072f62696e2f7368022d6313
         6563686f2068656c6c6f3b20736c656570203200000000000000000001fa0101
         8080801000000000000000000000000000904e010c706934622d6b6974636865
         6e0000000000000000000000000000",
    );
    check(
        NodeDown::Assign(Assignment {
            revision: 0,
            ..Default::default()
        }),
        "000000000000",
    );
    check(
        NodeDown::Logs {
            request: 9,
            namespace: "default".into(),
            pod: "hello".into(),
            process: Some("main".into()),
            follow: true,
            tail_bytes: Some(4096),
            uid: "u1".into(),
            previous: false,
        },
        "01090764656661756c740568656c6c6f01046d61696e0101802002753100",
    );
    check(
        NodeDown::Logs {
            request: 10,
            namespace: "default".into(),
            pod: "hello".into(),
            process: None,
            follow: false,
            tail_bytes: None,
            uid: String::new(),
            previous: true,
        },
        "010a0764656661756c740568656c6c6f0000000001",
    );
    check(NodeDown::CancelLogs { request: 9 }, "0209");
}

// ---------------------------------------------------------------------------------------------
// Client ↔ master.

fn request(body: RequestBody) -> Request {
    Request { id: 300, body }
}

#[test]
fn request_each_body() {
    check(
        request(RequestBody::Apply(vec![namespace(), pod()])),
        "ac020002000764656661756c740000046e732d310180d095ffbc310000000102
         0568656c6c6f0764656661756c7401036170700568656c6c6f24306235633761
         35322d366630652d346431662d396135312d3266316333653064386131312a80
         d095ffbc31000001046d61696e03072f62696e2f7368022d63136563686f2068
         656c6c6f3b20736c656570203200000000000000000001fa0101808080100000
         0000000000000000000000904e010c706934622d6b69746368656e0000000000
         000000000000",
    );
    check(
        request(RequestBody::Get {
            kind: Kind::Pod,
            namespace: "default".into(),
            name: "hello".into(),
        }),
        "ac0201020764656661756c740568656c6c6f",
    );
    check(
        request(RequestBody::List {
            kind: Kind::Node,
            namespace: None,
            selector: "room=kitchen".into(),
        }),
        "ac020201000c726f6f6d3d6b69746368656e",
    );
    check(
        request(RequestBody::List {
            kind: Kind::Pod,
            namespace: Some("default".into()),
            selector: String::new(),
        }),
        "ac020202010764656661756c7400",
    );
    check(
        request(RequestBody::Watch {
            kind: Kind::Pod,
            namespace: Some("default".into()),
            from_revision: 1234,
        }),
        "ac020302010764656661756c74d209",
    );
    check(
        request(RequestBody::Delete {
            kind: Kind::Namespace,
            namespace: String::new(),
            name: "default".into(),
            expected_revision: Some(1),
        }),
        "ac020400000764656661756c740101",
    );
    check(
        request(RequestBody::Logs {
            namespace: "default".into(),
            pod: "hello".into(),
            process: None,
            follow: true,
            tail_bytes: Some(1024),
            previous: true,
        }),
        "ac02050764656661756c740568656c6c6f000101800801",
    );
}

fn response(body: ResponseBody) -> Response {
    Response { id: 300, body }
}

#[test]
fn response_each_body() {
    check(
        response(ResponseBody::Applied(vec![
            Applied {
                kind: Kind::Namespace,
                namespace: String::new(),
                name: "default".into(),
                revision: 1,
                outcome: ApplyOutcome::Unchanged,
            },
            Applied {
                kind: Kind::Pod,
                namespace: "default".into(),
                name: "hello".into(),
                revision: 43,
                outcome: ApplyOutcome::Created,
            },
            Applied {
                kind: Kind::Pod,
                namespace: "default".into(),
                name: "web".into(),
                revision: 44,
                outcome: ApplyOutcome::Updated,
            },
        ])),
        "ac02000300000764656661756c740102020764656661756c740568656c6c6f2b
         00020764656661756c74037765622c01",
    );
    check(
        response(ResponseBody::Object(namespace())),
        "ac0201000764656661756c740000046e732d310180d095ffbc3100000001",
    );
    check(
        response(ResponseBody::List {
            revision: 44,
            items: vec![namespace()],
        }),
        "ac02022c01000764656661756c740000046e732d310180d095ffbc3100000001",
    );
    check(
        response(ResponseBody::Event {
            revision: 45,
            event: WatchEvent::Put(namespace()),
        }),
        "ac02032d00000764656661756c740000046e732d310180d095ffbc3100000001",
    );
    check(
        response(ResponseBody::Event {
            revision: 46,
            event: WatchEvent::Deleted(namespace()),
        }),
        "ac02032e01000764656661756c740000046e732d310180d095ffbc3100000001",
    );
    check(response(ResponseBody::Deleted { revision: 47 }), "ac02042f");
    check(
        response(ResponseBody::Log(b"hello\n".to_vec())),
        "ac02050668656c6c6f0a",
    );
    check(response(ResponseBody::End), "ac0206");
}

#[test]
fn response_error_each_code() {
    for (code, expect) in [
        (ErrorCode::Invalid, "ac020700026e6f"),
        (ErrorCode::NotFound, "ac020701026e6f"),
        (ErrorCode::Conflict, "ac020702026e6f"),
        (ErrorCode::Forbidden, "ac020703026e6f"),
        (ErrorCode::Compacted, "ac020704026e6f"),
        (ErrorCode::Unavailable, "ac020705026e6f"),
        (ErrorCode::Internal, "ac020706026e6f"),
    ] {
        check(
            response(ResponseBody::Error(ApiError {
                code,
                message: "no".into(),
            })),
            expect,
        );
    }
}

/// The frame sizes `cargo run -p bramble-wire --example sizes` prints (prefix + body).
#[test]
fn typical_frame_sizes() {
    let len = |bytes: Vec<u8>| bytes.len();
    assert_eq!(
        len(frame::encode_vec(&NodeUp::Heartbeat(heartbeat()), usize::MAX).unwrap()),
        6
    );
    let register = NodeUp::Register(Box::new(node_info()));
    assert_eq!(len(frame::encode_vec(&register, usize::MAX).unwrap()), 105);
    assert_eq!(len(frame::encode_vec(&pod(), usize::MAX).unwrap()), 169);
    let assign = NodeDown::Assign(assignment(10));
    assert_eq!(len(frame::encode_vec(&assign, usize::MAX).unwrap()), 1689);
}

#[test]
fn controller_objects_and_ping() {
    use bramble_wire::objects::{
        DaemonSet, DaemonSetSpec, Deployment, DeploymentSpec, Event, Job, JobSpec, Kind, Meta,
        Object, PodTemplate, ProcessSpec, ReplicaSet, ReplicaSetSpec,
    };
    check(NodeDown::Ping, "03");
    let meta = |name: &str| Meta {
        name: name.into(),
        namespace: "default".into(),
        uid: "u1".into(),
        revision: 7,
        ..Default::default()
    };
    let template = PodTemplate {
        labels: [("app".to_string(), "web".to_string())].into(),
        spec: bramble_wire::objects::PodSpec {
            processes: vec![ProcessSpec {
                name: "main".into(),
                command: vec!["/srv/web".into()],
                ..Default::default()
            }],
            ..Default::default()
        },
        restarted_at_ms: None,
    };
    check(
        Object::Deployment(Deployment {
            meta: meta("web"),
            spec: DeploymentSpec {
                replicas: 4,
                selector: template.labels.clone(),
                template: template.clone(),
                max_surge: 1,
                max_unavailable: 0,
                min_ready_ms: 0,
                revision_history: 10,
                progress_deadline_ms: 0,
            },
            status: Default::default(),
        }),
        "03037765620764656661756c7400027531070000000401036170700377656201
         036170700377656201046d61696e01082f7372762f7765620000000000000000
         000000000000000000000000000000000000000000000000000100000a000000
         0000000000000000",
    );
    check(
        Object::ReplicaSet(ReplicaSet {
            meta: meta("web-1a2b3c4d"),
            spec: ReplicaSetSpec {
                replicas: 4,
                selector: template.labels.clone(),
                template: template.clone(),
                revision: 1,
                min_ready_ms: 0,
            },
            status: Default::default(),
        }),
        "040c7765622d31613262336334640764656661756c7400027531070000000401
         036170700377656201036170700377656201046d61696e01082f7372762f7765
         6200000000000000000000000000000000000000000000000000000000000000
         000001000000000000",
    );
    check(
        Object::DaemonSet(DaemonSet {
            meta: meta("agent"),
            spec: DaemonSetSpec {
                selector: template.labels.clone(),
                template: template.clone(),
                max_unavailable: 1,
            },
            status: Default::default(),
        }),
        "05056167656e740764656661756c740002753107000000010361707003776562
         01036170700377656201046d61696e01082f7372762f77656200000000000000
         0000000000000000000000000000000000000000000000000000010000000000
         0000",
    );
    check(
        Object::Job(Job {
            meta: meta("backup"),
            spec: JobSpec {
                completions: 2,
                parallelism: 1,
                backoff_limit: 3,
                active_deadline_ms: None,
                template: template.clone(),
            },
            status: Default::default(),
        }),
        "06066261636b75700764656661756c7400027531070000000201030001036170
         700377656201046d61696e01082f7372762f7765620000000000000000000000
         0000000000000000000000000000000000000000000000000000000000",
    );
    check(
        Object::Event(Event {
            meta: meta("web.1"),
            object_kind: Some(Kind::Pod),
            object_name: "web-x".into(),
            reason: "Scheduled".into(),
            message: "assigned to node n1".into(),
            count: 1,
            last_ms: 1_700_000_000_000,
            object_uid: "u9".into(),
        }),
        "07057765622e310764656661756c7400027531070000000102057765622d7809
         5363686564756c65641361737369676e656420746f206e6f6465206e310180d0
         95ffbc31027539",
    );
}

#[test]
fn services_config_artifacts_and_tokens() {
    use bramble_wire::msg::{TokenInfo, TokenKind};
    use bramble_wire::objects::{
        Artifact, ArtifactVariant, ConfigMap, EndpointAddress, Endpoints, Protocol, Secret,
        Service, ServiceSpec,
    };
    let meta = |name: &str, ns: &str| Meta {
        name: name.into(),
        namespace: ns.into(),
        uid: "u1".into(),
        revision: 7,
        ..Default::default()
    };
    let svc = Service {
        meta: meta("web", "default"),
        spec: ServiceSpec {
            selector: labels(&[("app", "web")]),
            port: 8080,
            target_port: 80,
            protocol: Protocol::Tcp,
            cluster_ip: Some("10.43.0.10".into()),
        },
    };
    check(
        Object::Service(svc),
        "08037765620764656661756c740002753107000000010361707003776562903f
         5000010a31302e34332e302e3130",
    );
    let ep = |pod: &str, node: &str| EndpointAddress {
        ip: "192.0.2.11".into(),
        port: 80,
        pod: pod.into(),
        node: node.into(),
    };
    let eps = Endpoints {
        meta: meta("web", "default"),
        port: 8080,
        ready: vec![ep("web-a", "n1")],
        not_ready: vec![ep("web-b", "n2")],
        protocol: Protocol::Udp,
        cluster_ip: Some("10.43.0.10".into()),
    };
    check(
        Object::Endpoints(eps.clone()),
        "09037765620764656661756c740002753107000000903f010a3139322e302e32
         2e313150057765622d61026e31010a3139322e302e322e313150057765622d62
         026e3201010a31302e34332e302e3130",
    );
    let cm = ConfigMap {
        meta: meta("web-config", "default"),
        data: [("index.html".to_string(), "hi\n".to_string())].into(),
    };
    check(
        Object::ConfigMap(cm.clone()),
        "0a0a7765622d636f6e6669670764656661756c740002753107000000010a696e
         6465782e68746d6c0368690a",
    );
    let secret = Secret {
        meta: meta("web-secret", "default"),
        data: [("key".to_string(), vec![0u8, 1, 2])].into(),
    };
    check(
        Object::Secret(secret.clone()),
        "0b0a7765622d7365637265740764656661756c74000275310700000001036b65
         7903000102",
    );
    let art = Artifact {
        meta: meta("busybox", ""),
        variants: vec![ArtifactVariant {
            arch: bramble_wire::Arch::Aarch64,
            sha256: "ab".repeat(32),
            size: 1_000_000,
            uploaded_ms: 1_700_000_000_000,
        }],
    };
    check(
        Object::Artifact(art.clone()),
        "0c0762757379626f780000027531070000000100406162616261626162616261
         6261626162616261626162616261626162616261626162616261626162616261
         626162616261626162616261626162616261626162c0843d80d095ffbc31",
    );
    check(
        NodeDown::Assign(Assignment {
            revision: 5,
            pods: Vec::new(),
            config_maps: vec![cm],
            artifacts: vec![art],
            images: Vec::new(),
        }),
        "000500010a7765622d636f6e6669670764656661756c74000275310700000001
         0a696e6465782e68746d6c0368690a010762757379626f780000027531070000
         0001004061626162616261626162616261626162616261626162616261626162
         6162616261626162616261626162616261626162616261626162616261626162
         61626162c0843d80d095ffbc3100",
    );
    check(
        NodeDown::Endpoints(vec![eps]),
        "0401037765620764656661756c740002753107000000903f010a3139322e302e
         322e313150057765622d61026e31010a3139322e302e322e313150057765622d
         62026e3201010a31302e34332e302e3130",
    );
    check(
        NodeDown::Secrets(vec![secret]),
        "05010a7765622d7365637265740764656661756c74000275310700000001036b
         657903000102",
    );
    check(
        NodeDown::ArtifactChunk {
            request: 3,
            data: b"tar".to_vec(),
            error: None,
        },
        "06030374617200",
    );
    check(
        NodeDown::Credential {
            secret: "s3cr3t".into(),
        },
        "0706733363723374",
    );
    check(
        NodeDown::Network(vec![PodSubnet {
            node: "pi-1".into(),
            cidr: "10.42.1.0/24".into(),
            via: "192.0.2.11".into(),
        }]),
        "08010470692d310c31302e34322e312e302f32340a3139322e302e322e3131",
    );
    check(
        NodeDown::ClusterNetwork(bramble_wire::msg::ClusterNetwork {
            cluster_cidr: "10.42.0.0/16".into(),
            service_cidr: "10.43.0.0/16".into(),
            domain: "bramble.local".into(),
        }),
        "090c31302e34322e302e302f31360c31302e34332e302e302f31360d6272616d626c652e6c6f63616c",
    );
    check(
        NodeDown::Replaced {
            message: "another agent".into(),
        },
        "0a0d616e6f74686572206167656e74",
    );
    check(
        NodeUp::ArtifactGet {
            request: 3,
            sha256: "ab".repeat(32),
            offset: 65536,
            len: 32768,
        },
        "0503406162616261626162616261626162616261626162616261626162616261
         6261626162616261626162616261626162616261626162616261626162616261
         626162808004808002",
    );
    check(
        NodeUp::NetworkPath {
            kernel: false,
            message: "no nf_tables".into(),
        },
        "06000c6e6f206e665f7461626c6573",
    );
    check(
        NodeUp::Conflicts(vec![bramble_wire::msg::Conflict {
            kind: bramble_wire::msg::ConflictKind::ServicePort,
            namespace: "default".into(),
            name: "web".into(),
            uid: String::new(),
            port: 8080,
            message: "in use".into(),
        }]),
        "0801000764656661756c740377656200903f06696e20757365",
    );
    check(
        request(RequestBody::ArtifactBegin {
            name: "busybox".into(),
            arch: bramble_wire::Arch::Armv7,
            sha256: "cd".repeat(32),
            size: 4096,
        }),
        "ac02060762757379626f78014063646364636463646364636463646364636463
         6463646364636463646364636463646364636463646364636463646364636463
         646364636463646364636463648020",
    );
    check(
        request(RequestBody::ArtifactChunk {
            sha256: "cd".repeat(32),
            offset: 0,
            data: vec![1, 2, 3],
        }),
        "ac02074063646364636463646364636463646364636463646364636463646364
         6364636463646364636463646364636463646364636463646364636463646364
         636463640003010203",
    );
    check(
        request(RequestBody::TokenCreate {
            ttl_s: Some(3600),
            description: "kitchen pis".into(),
            uses: Some(3),
            node: None,
        }),
        "ac020801901c0b6b69746368656e20706973010300",
    );
    check(request(RequestBody::TokenList), "ac0209");
    check(
        request(RequestBody::TokenRevoke { id: "t1".into() }),
        "ac020a027431",
    );
    let info = TokenInfo {
        id: "t1".into(),
        kind: TokenKind::Join,
        node: None,
        description: "kitchen pis".into(),
        created_ms: 1_700_000_000_000,
        expires_ms: Some(1_700_003_600_000),
        revoked: false,
        uses_left: Some(3),
    };
    check(
        response(ResponseBody::ArtifactProgress { offset: 4096 }),
        "ac02088020",
    );
    check(
        response(ResponseBody::TokenCreated {
            info: info.clone(),
            token: "K10abc::join:secret".into(),
        }),
        "ac020902743100000b6b69746368656e2070697380d095ffbc310180adf180bd
         31000103134b31306162633a3a6a6f696e3a736563726574",
    );
    check(
        response(ResponseBody::Tokens(vec![
            info,
            TokenInfo {
                id: "n1".into(),
                kind: TokenKind::Node,
                node: Some("pi4b-kitchen".into()),
                description: String::new(),
                created_ms: 1,
                expires_ms: None,
                revoked: true,
                uses_left: None,
            },
        ])),
        "ac020a0202743100000b6b69746368656e2070697380d095ffbc310180adf180
         bd31000103026e3101010c706934622d6b69746368656e0001000100",
    );
}

#[test]
fn images_registries_and_their_calls() {
    use bramble_wire::objects::{
        Image, ImageConfig, ImageLayer, ImageVariant, LayerCompression, Registry, RegistrySpec,
    };
    let sha = |c: &str| c.repeat(64);
    let image = Image {
        meta: Meta {
            name: "registry-lan-5000-home-app-1-4-0123456789".into(),
            uid: "u9".into(),
            revision: 12,
            created_ms: 1_700_000_000_000,
            ..Meta::default()
        },
        reference: "registry.lan:5000/home/app:1.4".into(),
        digest: format!("sha256:{}", sha("a")),
        variants: vec![ImageVariant {
            arch: bramble_wire::Arch::Armv7,
            manifest_digest: format!("sha256:{}", sha("b")),
            config_sha256: sha("c"),
            config: ImageConfig {
                entrypoint: vec!["/bin/sh".into(), "-c".into()],
                cmd: vec!["exec app".into()],
                env: vec![("PATH".into(), "/bin".into())],
                workdir: Some("/app".into()),
                user: Some("1000:1000".into()),
                exposed_ports: vec!["8080/tcp".into()],
            },
            layers: vec![
                ImageLayer {
                    sha256: sha("d"),
                    size: 1_000_000,
                    compression: LayerCompression::Gzip,
                },
                ImageLayer {
                    sha256: sha("e"),
                    size: 512,
                    compression: LayerCompression::Zstd,
                },
            ],
        }],
        pulled_ms: 1_700_000_000_001,
    };
    check(
        Object::Image(image.clone()),
        "0d2972656769737472792d6c616e2d353030302d686f6d652d6170702d312d34
         2d3031323334353637383900000275390c80d095ffbc3100001e726567697374
         72792e6c616e3a353030302f686f6d652f6170703a312e34477368613235363a
         6161616161616161616161616161616161616161616161616161616161616161
         6161616161616161616161616161616161616161616161616161616161616161
         0101477368613235363a62626262626262626262626262626262626262626262
         6262626262626262626262626262626262626262626262626262626262626262
         6262626262626262626240636363636363636363636363636363636363636363
         6363636363636363636363636363636363636363636363636363636363636363
         636363636363636363636302072f62696e2f7368022d63010865786563206170
         70010450415448042f62696e01042f6170700109313030303a31303030010838
         3038302f74637002406464646464646464646464646464646464646464646464
         6464646464646464646464646464646464646464646464646464646464646464
         646464646464646464c0843d0140656565656565656565656565656565656565
         6565656565656565656565656565656565656565656565656565656565656565
         656565656565656565656565656580040281d095ffbc31",
    );
    check(
        Object::Registry(Registry {
            meta: Meta {
                name: "lan".into(),
                ..Meta::default()
            },
            spec: RegistrySpec {
                host: "registry.lan:5000".into(),
                insecure: true,
                credentials: Some("default/regcreds".into()),
                mirror: None,
                ca: None,
            },
        }),
        "0e036c616e000000000000001172656769737472792e6c616e3a353030300101
         1064656661756c742f72656763726564730000",
    );
    check(
        NodeDown::Assign(Assignment {
            revision: 6,
            pods: Vec::new(),
            config_maps: Vec::new(),
            artifacts: Vec::new(),
            images: vec![image],
        }),
        "0006000000012972656769737472792d6c616e2d353030302d686f6d652d6170
         702d312d342d3031323334353637383900000275390c80d095ffbc3100001e72
         656769737472792e6c616e3a353030302f686f6d652f6170703a312e34477368
         613235363a616161616161616161616161616161616161616161616161616161
         6161616161616161616161616161616161616161616161616161616161616161
         61616161610101477368613235363a6262626262626262626262626262626262
         6262626262626262626262626262626262626262626262626262626262626262
         6262626262626262626262626262624063636363636363636363636363636363
         6363636363636363636363636363636363636363636363636363636363636363
         6363636363636363636363636363636302072f62696e2f7368022d6301086578
         656320617070010450415448042f62696e01042f6170700109313030303a3130
         30300108383038302f7463700240646464646464646464646464646464646464
         6464646464646464646464646464646464646464646464646464646464646464
         6464646464646464646464646464c0843d014065656565656565656565656565
         6565656565656565656565656565656565656565656565656565656565656565
         6565656565656565656565656565656565656580040281d095ffbc31",
    );
    check(
        request(RequestBody::ImagePull {
            reference: "alpine:3.20".into(),
        }),
        "ac020b0b616c70696e653a332e3230",
    );
    check(
        request(RequestBody::BlobBegin {
            sha256: sha("f"),
            size: 4096,
        }),
        "ac020c4066666666666666666666666666666666666666666666666666666666
         6666666666666666666666666666666666666666666666666666666666666666
         666666668020",
    );
    check(
        request(RequestBody::BlobChunk {
            sha256: sha("f"),
            offset: 0,
            data: vec![1, 2, 3],
        }),
        "ac020d4066666666666666666666666666666666666666666666666666666666
         6666666666666666666666666666666666666666666666666666666666666666
         666666660003010203",
    );
    check(
        request(RequestBody::ImageImport {
            reference: "demo/app:1".into(),
            sha256: sha("f"),
        }),
        "ac020e0a64656d6f2f6170703a31406666666666666666666666666666666666
         6666666666666666666666666666666666666666666666666666666666666666
         666666666666666666666666666666",
    );
    check(
        request(RequestBody::ImageRemove {
            reference: "demo/app:1".into(),
        }),
        "ac020f0a64656d6f2f6170703a31",
    );
    check(
        request(RequestBody::Patch {
            kind: Kind::Node,
            namespace: String::new(),
            name: "pi1".into(),
            patch: bramble_wire::msg::MetaPatch {
                labels: vec![("zone".into(), Some("a".into())), ("old".into(), None)],
                annotations: vec![("note".into(), Some("hi".into()))],
                overwrite: true,
                unschedulable: Some(true),
            },
        }),
        "ac021001000370693102047a6f6e65010161036f6c640001046e6f7465010268
         69010101",
    );
    check(request(RequestBody::TokenRotateJoin), "ac0211");
    check(
        response(ResponseBody::ImageProgress {
            message: "layer 1/2 of linux/arm/v7".into(),
            done: 100,
            total: 1000,
        }),
        "ac020b196c6179657220312f32206f66206c696e75782f61726d2f763764e807",
    );
    // `bramble top`: the master asks, the node reports, the client reads.
    check(NodeDown::UsageWanted { seconds: 120 }, "0b78");
    let usage = |cpu_millis, memory_bytes| bramble_wire::msg::Usage {
        cpu_millis,
        memory_bytes,
    };
    let report = bramble_wire::msg::NodeUsage {
        window_ms: 15_000,
        node: usage(1200, 512 << 20),
        pods: vec![bramble_wire::msg::PodUsage {
            namespace: "default".into(),
            name: "web".into(),
            usage: usage(250, 64 << 20),
            processes: vec![bramble_wire::msg::ProcessUsage {
                name: "main".into(),
                usage: usage(250, 60 << 20),
            }],
        }],
    };
    check(
        NodeUp::Usage(report.clone()),
        "079875b0098080808002010764656661756c7403776562fa018080802001046d
         61696efa018080801e",
    );
    check(request(RequestBody::Top), "ac0212");
    check(
        response(ResponseBody::Top(vec![bramble_wire::msg::NodeTop {
            node: "pi1".into(),
            allocatable: usage(4000, 1 << 30),
            age_ms: 2000,
            usage: Some(report),
        }])),
        "ac020c0103706931a01f8080808004d00f019875b00980808080020107646566
         61756c7403776562fa018080802001046d61696efa018080801e",
    );
}
