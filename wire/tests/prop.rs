//! Property tests: round trips of generated messages, and a decoder that never panics and never
//! buffers more than its bound, whatever the bytes and however they are chunked.

mod common;

use std::cell::Cell;
use std::rc::Rc;

use bramble_wire::frame::{self, Decoder};
use bramble_wire::msg::{NodeDown, NodeUp, Request, RequestBody, Response};
use bramble_wire::objects::{Kind, Object, Pod, ProcessSpec, Resources, RestartPolicy};
use bramble_wire::{Arch, CgroupVersion, Controllers, Handshake, Heartbeat, Label, NodeInfo};
use proptest::prelude::*;
use serde::Serialize;
use serde::de::DeserializeOwned;

fn round_trip<T>(value: &T) -> Result<(), TestCaseError>
where
    T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug,
{
    let framed = frame::encode_vec(value, usize::MAX).expect("encodes");
    let mut dec = Decoder::new(Vec::new(), framed.len());
    let (used, body) = dec.feed(&framed).expect("own frame");
    prop_assert_eq!(used, framed.len());
    let back: T = frame::decode(body.expect("complete")).expect("own body decodes");
    prop_assert_eq!(&back, value);
    Ok(())
}

/// A heapless string of at most `N` bytes (any Unicode, cut at a char boundary).
fn hstring<const N: usize>() -> impl Strategy<Value = heapless::String<N>> {
    any::<String>().prop_map(|s| {
        let mut out = heapless::String::new();
        for c in s.chars() {
            if out.push(c).is_err() {
                break;
            }
        }
        out
    })
}

fn arch() -> impl Strategy<Value = Arch> {
    prop_oneof![
        Just(Arch::Aarch64),
        Just(Arch::Armv7),
        Just(Arch::Armv6),
        Just(Arch::X86_64),
        Just(Arch::Riscv64),
        Just(Arch::Mcu),
    ]
}

fn node_info() -> impl Strategy<Value = NodeInfo> {
    let label = (hstring::<63>(), hstring::<63>()).prop_map(|(key, value)| Label { key, value });
    (
        (
            hstring::<63>(),
            arch(),
            hstring::<48>(),
            hstring::<48>(),
            hstring::<32>(),
        ),
        (
            any::<u16>(),
            any::<u64>(),
            any::<u32>(),
            0u8..3,
            any::<u8>(),
            hstring::<32>(),
        ),
        proptest::collection::vec(label, 0..=16),
    )
        .prop_map(
            |(
                (name, arch, os, kernel, board),
                (cpus, memory_bytes, pids, cg, ctl, agent),
                labels,
            )| {
                NodeInfo {
                    name,
                    arch,
                    os,
                    kernel,
                    board,
                    cpus,
                    memory_bytes,
                    pids,
                    cgroup: [CgroupVersion::None, CgroupVersion::V1, CgroupVersion::V2]
                        [cg as usize],
                    controllers: Controllers(ctl),
                    agent_version: agent,
                    labels: labels.into_iter().collect(),
                }
            },
        )
}

fn heartbeat() -> impl Strategy<Value = Heartbeat> {
    (any::<u32>(), any::<u16>(), any::<u32>()).prop_map(|(seq, pods_running, uptime_s)| Heartbeat {
        seq,
        pods_running,
        uptime_s,
    })
}

fn small_string() -> impl Strategy<Value = String> {
    ".{0,24}"
}

fn pod() -> impl Strategy<Value = Object> {
    let process = (
        small_string(),
        proptest::collection::vec(small_string(), 0..4),
        proptest::collection::vec((small_string(), small_string()), 0..3),
        proptest::option::of(small_string()),
        proptest::option::of(any::<u32>()),
        (
            proptest::option::of(any::<u32>()),
            proptest::option::of(any::<u64>()),
            proptest::option::of(any::<u32>()),
        ),
    )
        .prop_map(
            |(name, command, env, workdir, user, (cpu, mem, pids))| ProcessSpec {
                name,
                command,
                env,
                workdir,
                user,
                group: user,
                resources: Resources {
                    cpu_millis: cpu,
                    memory_bytes: mem,
                    pids,
                },
                ports: Vec::new(),
                liveness: user.map(|u| bramble_wire::objects::Probe {
                    action: bramble_wire::objects::ProbeAction::Tcp { port: u as u16 },
                    ..Default::default()
                }),
                readiness: None,
                env_from: Vec::new(),
            },
        );
    (
        small_string(),
        proptest::collection::btree_map(small_string(), small_string(), 0..4),
        proptest::collection::vec(process, 1..4),
        0u8..3,
        proptest::option::of(arch()),
        any::<u32>(),
        proptest::option::of(small_string()),
        any::<u64>(),
    )
        .prop_map(
            |(name, labels, processes, restart, arch, grace, node, revision)| {
                let mut p: Pod = common::hello_pod(&name);
                p.meta.labels = labels;
                p.meta.revision = revision;
                p.spec.processes = processes;
                p.spec.restart_policy = [
                    RestartPolicy::Always,
                    RestartPolicy::OnFailure,
                    RestartPolicy::Never,
                ][restart as usize];
                p.spec.arch = arch;
                p.spec.termination_grace_ms = grace;
                p.spec.node_name = node;
                Object::Pod(p)
            },
        )
}

fn kind() -> impl Strategy<Value = Kind> {
    prop_oneof![Just(Kind::Namespace), Just(Kind::Node), Just(Kind::Pod)]
}

fn request() -> impl Strategy<Value = Request> {
    let body = prop_oneof![
        proptest::collection::vec(pod(), 0..3).prop_map(RequestBody::Apply),
        (kind(), small_string(), small_string()).prop_map(|(kind, namespace, name)| {
            RequestBody::Get {
                kind,
                namespace,
                name,
            }
        }),
        (kind(), proptest::option::of(small_string()), small_string()).prop_map(
            |(kind, namespace, selector)| RequestBody::List {
                kind,
                namespace,
                selector
            }
        ),
        (kind(), proptest::option::of(small_string()), any::<u64>()).prop_map(
            |(kind, namespace, from_revision)| RequestBody::Watch {
                kind,
                namespace,
                from_revision
            }
        ),
        (
            kind(),
            small_string(),
            small_string(),
            proptest::option::of(any::<u64>())
        )
            .prop_map(
                |(kind, namespace, name, expected_revision)| RequestBody::Delete {
                    kind,
                    namespace,
                    name,
                    expected_revision
                }
            ),
        (
            small_string(),
            small_string(),
            proptest::option::of(small_string()),
            any::<bool>(),
            proptest::option::of(any::<u64>())
        )
            .prop_map(
                |(namespace, pod, process, follow, tail_bytes)| RequestBody::Logs {
                    namespace,
                    pod,
                    process,
                    follow,
                    tail_bytes
                }
            ),
    ];
    (any::<u32>(), body).prop_map(|(id, body)| Request { id, body })
}

/// Mostly-valid streams: real frames with some bytes flipped, plus plain noise.
fn stream() -> impl Strategy<Value = Vec<u8>> {
    let frames = proptest::collection::vec(
        prop_oneof![
            heartbeat().prop_map(|h| frame::encode_vec(&h, usize::MAX).unwrap()),
            request().prop_map(|r| frame::encode_vec(&r, usize::MAX).unwrap()),
            proptest::collection::vec(any::<u8>(), 0..40),
        ],
        0..6,
    )
    .prop_map(|v| v.concat());
    (
        frames,
        proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4),
    )
        .prop_map(|(mut s, flips)| {
            if !s.is_empty() {
                for (at, b) in flips {
                    let i = at.index(s.len());
                    s[i] = b;
                }
            }
            s
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn heartbeat_round_trips(h in heartbeat()) {
        round_trip(&h)?;
    }

    #[test]
    fn node_info_round_trips(n in node_info()) {
        round_trip(&n)?;
        round_trip(&NodeUp::Register(Box::new(n.clone())))?;
        round_trip(&bramble_wire::DeviceUp::Register(n))?;
    }

    #[test]
    fn pod_round_trips(p in pod()) {
        round_trip(&p)?;
        if let Object::Pod(pod) = p {
            let assign = NodeDown::Assign(bramble_wire::msg::Assignment { revision: 1, pods: vec![pod], ..Default::default() });
            round_trip(&assign)?;
        }
    }

    #[test]
    fn request_round_trips(r in request()) {
        round_trip(&r)?;
    }

    #[test]
    fn decoder_never_panics_nor_exceeds_max(
        bytes in prop_oneof![stream(), proptest::collection::vec(any::<u8>(), 0..512)],
        sizes in proptest::collection::vec(1usize..64, 1..8),
        max in prop_oneof![Just(0usize), 1usize..300, Just(frame::MAX_VARINT_LEN), Just(bramble_wire::DEFAULT_MAX_FRAME)],
    ) {
        let held = Rc::new(Cell::new(0));
        let reserved = Rc::new(Cell::new(0));
        let buf = common::TrackingBuf { bytes: Vec::new(), peak_len: held.clone(), peak_reserve: reserved.clone() };
        let mut dec = Decoder::new(buf, max);
        let chunked = common::feed_chunked(&mut dec, &bytes, &sizes);
        prop_assert!(held.get() <= max, "held {} > max {}", held.get(), max);
        prop_assert!(reserved.get() <= max, "reserved {} > max {}", reserved.get(), max);
        for b in &chunked.0 {
            prop_assert!(b.len() <= max);
        }
        // Chunking does not change the outcome, and a heapless buffer agrees.
        let whole = common::feed_chunked(&mut Decoder::new(Vec::new(), max), &bytes, &[usize::MAX]);
        prop_assert_eq!(&chunked, &whole);
        let small = common::feed_chunked(&mut Decoder::new(heapless::Vec::<u8, 512>::new(), max.min(512)), &bytes, &sizes);
        if max <= 512 {
            prop_assert_eq!(&small, &whole);
        }
        for b in &whole.0 {
            let _ = frame::decode::<Handshake>(b);
            let _ = frame::decode::<Request>(b);
        }
    }

    #[test]
    fn decode_never_panics(bytes in prop_oneof![stream(), proptest::collection::vec(any::<u8>(), 0..512)]) {
        let _ = frame::decode::<Handshake>(&bytes);
        let _ = Handshake::check_hello_version(&bytes);
        let _ = frame::decode::<NodeUp>(&bytes);
        let _ = frame::decode::<NodeDown>(&bytes);
        let _ = frame::decode::<Request>(&bytes);
        let _ = frame::decode::<Response>(&bytes);
        let _ = frame::decode::<bramble_wire::DeviceUp>(&bytes);
        let mut copy = bytes.clone();
        let _ = frame::decode_cobs::<Handshake>(&mut copy);
        // Skipping a 1..=5 byte varint prefix reaches the body of framed streams.
        for skip in 1..=frame::MAX_VARINT_LEN.min(bytes.len()) {
            let _ = frame::decode::<Request>(&bytes[skip..]);
            let _ = frame::decode::<NodeUp>(&bytes[skip..]);
        }
    }
}
