//! Property tests: every message type round-trips byte for byte, and a decoder never panics and
//! never buffers more than its bound, whatever the bytes and however they are chunked.
//!
//! The generators cover every message of the protocol — the handshake, the device messages,
//! [`NodeUp`], [`NodeDown`], [`Request`], [`Response`] and every [`Object`] kind — with every
//! case of every enum and every field free. `every_variant_is_generated` checks that: each enum's
//! cases are listed once, in a `match` without a catch-all (so a new case does not compile until
//! it is listed), and sampling each generator must produce every listed case.

mod common;

use std::cell::Cell;
use std::collections::BTreeSet;
use std::fmt::Debug;
use std::rc::Rc;

use bramble_wire::frame::{self, Decoder};
use bramble_wire::msg::{
    ApiError, Applied, ApplyOutcome, Assignment, Conflict, ConflictKind, ErrorCode, LogChunk,
    NodeDown, NodeUp, PodReport, PodSubnet, Request, RequestBody, Response, ResponseBody,
    TokenInfo, TokenKind, WatchEvent,
};
use bramble_wire::objects::{
    Artifact, ArtifactVariant, Condition, ConditionKind, ConfigMap, DaemonSet, DaemonSetSpec,
    DaemonSetStatus, Deployment, DeploymentSpec, DeploymentStatus, EndpointAddress, Endpoints,
    EnvFrom, EphemeralStorage, Event, Image, ImageConfig, ImageLayer, ImageVariant, Job, JobPhase,
    JobSpec, JobStatus, Kind, LayerCompression, Meta, Namespace, NamespacePhase, NetworkMode, Node,
    NodeSpec, NodeStatus, Object, OwnerRef, Pod, PodSpec, PodStatus, PodTemplate, Port, Probe,
    ProbeAction, ProcessSpec, ProcessState, ProcessStatus, Protocol, Registry, RegistrySpec,
    ReplaceBackoff, ReplicaSet, ReplicaSetSpec, ReplicaSetStatus, Resources, RestartPolicy, Secret,
    Service, ServiceSpec, StorageMedium, Taint, TaintEffect, Toleration, Volume, VolumeSource,
};
use bramble_wire::security::{CapChanges, CapSet, IdRef, PodSecurity, SeccompProfile};
use bramble_wire::{
    Arch, CgroupVersion, Controllers, DeviceUp, ExitReason, Handshake, Heartbeat, Hello, Label,
    NodeInfo, PodPhase, Reject, RejectReason, Role, Welcome, WireError,
};
use proptest::collection::{btree_map, vec};
use proptest::option::of;
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::TestRunner;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Encode → decode → encode: the decoded value equals the original and its encoding is the same
/// bytes, through the length-prefixed frame (both encoders) and COBS. The body is
/// self-delimiting: cut short, it does not decode.
fn round_trip<T>(value: &T) -> Result<(), TestCaseError>
where
    T: Serialize + DeserializeOwned + PartialEq + Debug,
{
    let framed = frame::encode_vec(value, usize::MAX).expect("encodes");
    let mut dec = Decoder::new(Vec::new(), framed.len());
    let (used, body) = dec.feed(&framed).expect("own frame");
    prop_assert_eq!(used, framed.len());
    let body = body.expect("complete").to_vec();
    let back: T = frame::decode(&body).expect("own body decodes");
    prop_assert_eq!(&back, value);
    let again = frame::encode_vec(&back, usize::MAX).expect("re-encodes");
    prop_assert_eq!(&again, &framed, "re-encoding changed the bytes");

    let mut out = vec![0u8; framed.len() + frame::MAX_VARINT_LEN];
    let sliced = frame::encode(value, &mut out).expect("fits");
    prop_assert_eq!(&sliced[..], &framed[..], "the two encoders disagree");

    let mut cobs = vec![0u8; framed.len() * 2 + 16];
    let enc = frame::encode_cobs(value, &mut cobs).expect("fits");
    let n = enc.len();
    prop_assert_eq!(enc[n - 1], 0);
    prop_assert!(!enc[..n - 1].contains(&0), "a zero inside a COBS frame");
    let encoded = enc.to_vec();
    let back: T = frame::decode_cobs(&mut enc[..n - 1]).expect("own cobs decodes");
    prop_assert_eq!(&back, value);
    let mut cobs2 = vec![0u8; framed.len() * 2 + 16];
    let enc2 = frame::encode_cobs(&back, &mut cobs2).expect("fits");
    prop_assert_eq!(
        &enc2[..],
        &encoded[..],
        "COBS re-encoding changed the bytes"
    );

    if !body.is_empty() {
        prop_assert!(frame::decode::<T>(&body[..body.len() - 1]).is_err());
        prop_assert!(frame::decode::<T>(&body[..body.len() / 2]).is_err() || body.len() == 1);
    }
    Ok(())
}

// ---- Building blocks ----

/// Any Unicode, short.
fn s() -> BoxedStrategy<String> {
    ".{0,12}".boxed()
}

fn labels() -> BoxedStrategy<bramble_wire::objects::Labels> {
    btree_map(s(), s(), 0..3).boxed()
}

fn bytes() -> BoxedStrategy<Vec<u8>> {
    vec(any::<u8>(), 0..32).boxed()
}

/// A heapless string of at most `N` bytes (any Unicode, cut at a char boundary).
fn hstring<const N: usize>() -> BoxedStrategy<heapless::String<N>> {
    any::<String>()
        .prop_map(|s| {
            let mut out = heapless::String::new();
            for c in s.chars() {
                if out.push(c).is_err() {
                    break;
                }
            }
            out
        })
        .boxed()
}

/// One of `values`, each equally likely.
fn one_of<T: Clone + Debug + 'static>(values: &[T]) -> BoxedStrategy<T> {
    proptest::sample::select(values.to_vec()).boxed()
}

// ---- Core messages (no allocator) ----

fn arch() -> BoxedStrategy<Arch> {
    use Arch::*;
    one_of(&[Aarch64, Armv7, Armv6, X86_64, Riscv64, Mcu])
}

fn cgroup() -> BoxedStrategy<CgroupVersion> {
    one_of(&[CgroupVersion::None, CgroupVersion::V1, CgroupVersion::V2])
}

fn role() -> BoxedStrategy<Role> {
    one_of(&[Role::Worker, Role::Client, Role::Device])
}

fn pod_phase() -> BoxedStrategy<PodPhase> {
    use PodPhase::*;
    one_of(&[Pending, Running, Succeeded, Failed, Unknown])
}

fn exit_reason() -> BoxedStrategy<ExitReason> {
    prop_oneof![
        Just(ExitReason::Completed),
        any::<i32>().prop_map(ExitReason::Error),
        any::<i32>().prop_map(ExitReason::Signaled),
        Just(ExitReason::OOMKilled),
        Just(ExitReason::StartFailed),
    ]
    .boxed()
}

fn reject_reason() -> BoxedStrategy<RejectReason> {
    prop_oneof![
        (any::<u16>(), any::<u16>())
            .prop_map(|(min, max)| RejectReason::UnsupportedVersion { min, max }),
        Just(RejectReason::BadCredentials),
        Just(RejectReason::BadIdentity),
        Just(RejectReason::Busy),
        Just(RejectReason::Malformed),
    ]
    .boxed()
}

fn handshake() -> BoxedStrategy<Handshake> {
    prop_oneof![
        (
            any::<u16>(),
            role(),
            hstring::<63>(),
            hstring::<128>(),
            hstring::<32>()
        )
            .prop_map(|(protocol_version, role, identity, credentials, agent)| {
                Handshake::Hello(Hello {
                    protocol_version,
                    role,
                    identity,
                    credentials,
                    agent_version: agent,
                })
            }),
        (any::<u16>(), hstring::<63>(), any::<u32>(), hstring::<32>()).prop_map(
            |(protocol_version, identity, heartbeat_interval_ms, master_version)| {
                Handshake::Welcome(Welcome {
                    protocol_version,
                    identity,
                    heartbeat_interval_ms,
                    master_version,
                })
            }
        ),
        (reject_reason(), hstring::<200>())
            .prop_map(|(reason, message)| Handshake::Reject(Reject { reason, message })),
    ]
    .boxed()
}

fn node_info() -> BoxedStrategy<NodeInfo> {
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
            cgroup(),
            any::<u8>(),
            hstring::<32>(),
        ),
        vec(label, 0..=16),
    )
        .prop_map(
            |(
                (name, arch, os, kernel, board),
                (cpus, memory_bytes, pids, cgroup, ctl, agent),
                labels,
            )| NodeInfo {
                name,
                arch,
                os,
                kernel,
                board,
                cpus,
                memory_bytes,
                pids,
                cgroup,
                controllers: Controllers(ctl),
                agent_version: agent,
                labels: labels.into_iter().collect(),
            },
        )
        .boxed()
}

fn heartbeat() -> BoxedStrategy<Heartbeat> {
    (any::<u32>(), any::<u16>(), any::<u32>())
        .prop_map(|(seq, pods_running, uptime_s)| Heartbeat {
            seq,
            pods_running,
            uptime_s,
        })
        .boxed()
}

fn device_up() -> BoxedStrategy<DeviceUp> {
    prop_oneof![
        node_info().prop_map(DeviceUp::Register),
        heartbeat().prop_map(DeviceUp::Heartbeat),
    ]
    .boxed()
}

// ---- Objects ----

fn kind() -> BoxedStrategy<Kind> {
    one_of(&Kind::ALL)
}

fn meta() -> BoxedStrategy<Meta> {
    let owner = (kind(), s(), s()).prop_map(|(kind, name, uid)| OwnerRef { kind, name, uid });
    (
        s(),
        s(),
        labels(),
        s(),
        any::<u64>(),
        any::<u64>(),
        vec(owner, 0..2),
        labels(),
    )
        .prop_map(
            |(name, namespace, labels, uid, revision, created_ms, owners, annotations)| Meta {
                name,
                namespace,
                labels,
                uid,
                revision,
                created_ms,
                owners,
                annotations,
            },
        )
        .boxed()
}

fn resources() -> BoxedStrategy<Resources> {
    (of(any::<u32>()), of(any::<u64>()), of(any::<u32>()))
        .prop_map(|(cpu_millis, memory_bytes, pids)| Resources {
            cpu_millis,
            memory_bytes,
            pids,
        })
        .boxed()
}

fn probe_action() -> BoxedStrategy<ProbeAction> {
    prop_oneof![
        vec(s(), 0..3).prop_map(ProbeAction::Exec),
        any::<u16>().prop_map(|port| ProbeAction::Tcp { port }),
        (any::<u16>(), s()).prop_map(|(port, path)| ProbeAction::Http { port, path }),
    ]
    .boxed()
}

fn probe() -> BoxedStrategy<Probe> {
    (
        probe_action(),
        any::<u32>(),
        any::<u32>(),
        any::<u32>(),
        any::<u32>(),
        any::<u32>(),
    )
        .prop_map(
            |(action, initial_delay_ms, period_ms, timeout_ms, f, s)| Probe {
                action,
                initial_delay_ms,
                period_ms,
                timeout_ms,
                failure_threshold: f,
                success_threshold: s,
            },
        )
        .boxed()
}

fn env_from() -> BoxedStrategy<EnvFrom> {
    prop_oneof![
        (s(), s()).prop_map(|(name, prefix)| EnvFrom::ConfigMap { name, prefix }),
        (s(), s()).prop_map(|(name, prefix)| EnvFrom::Secret { name, prefix }),
    ]
    .boxed()
}

fn process_spec() -> BoxedStrategy<ProcessSpec> {
    let port = (any::<u16>(), of(any::<u16>())).prop_map(|(container_port, host_port)| Port {
        container_port,
        host_port,
    });
    (
        (
            s(),
            vec(s(), 0..3),
            vec((s(), s()), 0..3),
            of(s()),
            of(id_ref()),
            of(id_ref()),
        ),
        (
            resources(),
            vec(port, 0..3),
            of(probe()),
            of(probe()),
            vec(env_from(), 0..3),
        ),
        (
            vec(id_ref(), 0..3),
            any::<bool>(),
            (any::<u64>(), any::<u64>()),
            one_of(&[SeccompProfile::RuntimeDefault, SeccompProfile::Unconfined]),
            vec(s(), 0..3),
        ),
    )
        .prop_map(
            |(
                (name, command, env, workdir, user, group),
                (resources, ports, liveness, readiness, env_from),
                (supplementary_groups, run_as_non_root, (add, drop), seccomp, args),
            )| ProcessSpec {
                name,
                command,
                env,
                workdir,
                user,
                group,
                supplementary_groups,
                run_as_non_root,
                capabilities: CapChanges {
                    add: CapSet(add),
                    drop: CapSet(drop),
                },
                seccomp,
                resources,
                ports,
                liveness,
                readiness,
                env_from,
                args,
            },
        )
        .boxed()
}

fn id_ref() -> BoxedStrategy<IdRef> {
    prop_oneof![any::<u32>().prop_map(IdRef::Id), s().prop_map(IdRef::Name)].boxed()
}

fn restart_policy() -> BoxedStrategy<RestartPolicy> {
    use RestartPolicy::*;
    one_of(&[Always, OnFailure, Never])
}

fn network_mode() -> BoxedStrategy<NetworkMode> {
    one_of(&[NetworkMode::Host, NetworkMode::None, NetworkMode::Isolated])
}

fn taint_effect() -> BoxedStrategy<TaintEffect> {
    one_of(&[TaintEffect::NoSchedule, TaintEffect::NoExecute])
}

fn volume_source() -> BoxedStrategy<VolumeSource> {
    prop_oneof![
        (s(), any::<bool>())
            .prop_map(|(path, read_only)| VolumeSource::HostPath { path, read_only }),
        Just(VolumeSource::EmptyDir),
        s().prop_map(|name| VolumeSource::ConfigMap { name }),
        s().prop_map(|name| VolumeSource::Secret { name }),
    ]
    .boxed()
}

fn pod_spec() -> BoxedStrategy<PodSpec> {
    let toleration = (s(), of(s()), of(taint_effect()))
        .prop_map(|(key, value, effect)| Toleration { key, value, effect });
    let volume = (s(), s(), volume_source()).prop_map(|(name, mount_path, source)| Volume {
        name,
        mount_path,
        source,
    });
    (
        (
            vec(process_spec(), 0..3),
            restart_policy(),
            labels(),
            vec(toleration, 0..2),
            of(arch()),
        ),
        (
            of(s()),
            network_mode(),
            vec(volume, 0..3),
            any::<u32>(),
            of(s()),
        ),
        (
            any::<bool>(),
            any::<bool>(),
            any::<bool>(),
            of(s()),
            any::<bool>(),
            of(any::<u64>()),
        ),
    )
        .prop_map(
            |(
                (processes, restart_policy, node_selector, tolerations, arch),
                (rootfs, network, volumes, termination_grace_ms, node_name),
                (privileged, host_pid, host_ipc, image, tmpfs, limit_bytes),
            )| PodSpec {
                processes,
                restart_policy,
                node_selector,
                tolerations,
                arch,
                rootfs,
                network,
                volumes,
                termination_grace_ms,
                node_name,
                privileged,
                host_pid,
                host_ipc,
                image,
                ephemeral_storage: EphemeralStorage {
                    medium: if tmpfs {
                        StorageMedium::Tmpfs
                    } else {
                        StorageMedium::Disk
                    },
                    limit_bytes,
                },
            },
        )
        .boxed()
}

fn process_state() -> BoxedStrategy<ProcessState> {
    prop_oneof![
        Just(ProcessState::Waiting),
        (any::<u32>(), any::<u64>())
            .prop_map(|(pid, started_ms)| ProcessState::Running { pid, started_ms }),
        (exit_reason(), any::<u64>()).prop_map(|(reason, finished_ms)| {
            ProcessState::Terminated {
                reason,
                finished_ms,
            }
        }),
    ]
    .boxed()
}

fn pod_status() -> BoxedStrategy<PodStatus> {
    let process = (
        s(),
        process_state(),
        any::<u32>(),
        of(exit_reason()),
        any::<bool>(),
    )
        .prop_map(|(name, state, restarts, last_exit, ready)| ProcessStatus {
            name,
            state,
            restarts,
            last_exit,
            ready,
        });
    (pod_phase(), vec(process, 0..3), s(), any::<u64>(), s())
        .prop_map(|(phase, processes, message, updated_ms, ip)| PodStatus {
            phase,
            processes,
            message,
            updated_ms,
            ip,
        })
        .boxed()
}

fn pod() -> BoxedStrategy<Pod> {
    (meta(), pod_spec(), pod_status())
        .prop_map(|(meta, spec, status)| Pod { meta, spec, status })
        .boxed()
}

fn template() -> BoxedStrategy<PodTemplate> {
    (labels(), pod_spec())
        .prop_map(|(labels, spec)| PodTemplate {
            labels,
            spec,
            restarted_at_ms: None,
        })
        .boxed()
}

fn node() -> BoxedStrategy<Node> {
    let taint =
        (s(), s(), taint_effect()).prop_map(|(key, value, effect)| Taint { key, value, effect });
    let condition = (
        one_of(&[
            ConditionKind::Ready,
            ConditionKind::MemoryCgroup,
            ConditionKind::DiskPressure,
            ConditionKind::KernelNetwork,
        ]),
        any::<bool>(),
        s(),
        any::<u64>(),
    )
        .prop_map(|(kind, status, message, since_ms)| Condition {
            kind,
            status,
            message,
            since_ms,
        });
    let spec =
        (vec(taint, 0..3), any::<bool>(), s()).prop_map(|(taints, unschedulable, pod_cidr)| {
            NodeSpec {
                taints,
                unschedulable,
                pod_cidr,
            }
        });
    let status = (
        of(node_info().prop_map(Box::new)),
        resources(),
        vec(condition, 0..3),
        vec(s(), 0..3),
        any::<u64>(),
    )
        .prop_map(
            |(info, allocatable, conditions, addresses, last_heartbeat_ms)| NodeStatus {
                info,
                allocatable,
                conditions,
                addresses,
                last_heartbeat_ms,
            },
        );
    (meta(), spec, status)
        .prop_map(|(meta, spec, status)| Node { meta, spec, status })
        .boxed()
}

fn namespace() -> BoxedStrategy<Namespace> {
    (
        meta(),
        one_of(&[NamespacePhase::Active, NamespacePhase::Terminating]),
        one_of(&[PodSecurity::Privileged, PodSecurity::Baseline]),
    )
        .prop_map(|(meta, phase, pod_security)| Namespace {
            meta,
            phase,
            pod_security,
        })
        .boxed()
}

fn deployment() -> BoxedStrategy<Deployment> {
    let spec = (
        any::<u32>(),
        labels(),
        template(),
        any::<u32>(),
        any::<u32>(),
        any::<u32>(),
        any::<u32>(),
    )
        .prop_map(
            |(replicas, selector, template, max_surge, max_unavailable, min_ready_ms, rh)| {
                DeploymentSpec {
                    replicas,
                    selector,
                    template,
                    max_surge,
                    max_unavailable,
                    min_ready_ms,
                    revision_history: rh,
                    progress_deadline_ms: min_ready_ms / 2,
                }
            },
        );
    let status = (any::<u32>(), any::<u32>(), any::<u32>(), any::<u64>(), s()).prop_map(
        |(replicas, updated, available, revision, message)| DeploymentStatus {
            replicas,
            updated,
            available,
            revision,
            message,
            generation: revision / 2,
            observed_generation: revision / 3,
            updated_available: updated / 2,
            last_progress_ms: revision / 5,
            stalled: revision % 2 == 1,
        },
    );
    (meta(), spec, status)
        .prop_map(|(meta, spec, status)| Deployment { meta, spec, status })
        .boxed()
}

fn replica_set() -> BoxedStrategy<ReplicaSet> {
    let spec = (
        any::<u32>(),
        labels(),
        template(),
        any::<u64>(),
        any::<u32>(),
    )
        .prop_map(
            |(replicas, selector, template, revision, min_ready_ms)| ReplicaSetSpec {
                replicas,
                selector,
                template,
                revision,
                min_ready_ms,
            },
        );
    let status = (any::<u32>(), any::<u32>(), any::<u32>(), any::<u64>()).prop_map(
        |(replicas, available, failures, until_ms)| ReplicaSetStatus {
            replicas,
            available,
            backoff: ReplaceBackoff {
                failures,
                until_ms,
                reason: "mount /data: no such directory".into(),
            },
        },
    );
    (meta(), spec, status)
        .prop_map(|(meta, spec, status)| ReplicaSet { meta, spec, status })
        .boxed()
}

fn daemon_set() -> BoxedStrategy<DaemonSet> {
    let spec =
        (labels(), template(), any::<u32>()).prop_map(|(selector, template, max_unavailable)| {
            DaemonSetSpec {
                selector,
                template,
                max_unavailable,
            }
        });
    let status = (any::<u32>(), any::<u32>(), any::<u32>(), any::<u32>()).prop_map(
        |(desired, current, updated, available)| DaemonSetStatus {
            desired,
            current,
            updated,
            available,
            ..Default::default()
        },
    );
    (meta(), spec, status)
        .prop_map(|(meta, spec, status)| DaemonSet { meta, spec, status })
        .boxed()
}

fn job() -> BoxedStrategy<Job> {
    let spec = (
        any::<u32>(),
        any::<u32>(),
        any::<u32>(),
        of(any::<u64>()),
        template(),
    )
        .prop_map(
            |(completions, parallelism, backoff_limit, active_deadline_ms, template)| JobSpec {
                completions,
                parallelism,
                backoff_limit,
                active_deadline_ms,
                template,
            },
        );
    let status = (
        one_of(&[JobPhase::Running, JobPhase::Complete, JobPhase::Failed]),
        any::<u32>(),
        any::<u32>(),
        any::<u32>(),
        any::<u64>(),
        of(any::<u64>()),
        s(),
    )
        .prop_map(
            |(phase, active, succeeded, failed, start_ms, completion_ms, message)| JobStatus {
                phase,
                active,
                succeeded,
                failed,
                start_ms,
                completion_ms,
                message,
            },
        );
    (meta(), spec, status)
        .prop_map(|(meta, spec, status)| Job { meta, spec, status })
        .boxed()
}

fn event() -> BoxedStrategy<Event> {
    (
        meta(),
        of(kind()),
        s(),
        s(),
        s(),
        any::<u32>(),
        any::<u64>(),
        s(),
    )
        .prop_map(
            |(meta, object_kind, object_name, reason, message, count, last_ms, object_uid)| Event {
                meta,
                object_kind,
                object_name,
                reason,
                message,
                count,
                last_ms,
                object_uid,
            },
        )
        .boxed()
}

fn protocol() -> BoxedStrategy<Protocol> {
    one_of(&[Protocol::Tcp, Protocol::Udp])
}

fn service() -> BoxedStrategy<Service> {
    let spec = (labels(), any::<u16>(), any::<u16>(), protocol(), of(s())).prop_map(
        |(selector, port, target_port, protocol, cluster_ip)| ServiceSpec {
            selector,
            port,
            target_port,
            protocol,
            cluster_ip,
        },
    );
    (meta(), spec)
        .prop_map(|(meta, spec)| Service { meta, spec })
        .boxed()
}

fn endpoints() -> BoxedStrategy<Endpoints> {
    let address = || {
        (s(), any::<u16>(), s(), s()).prop_map(|(ip, port, pod, node)| EndpointAddress {
            ip,
            port,
            pod,
            node,
        })
    };
    (
        meta(),
        any::<u16>(),
        vec(address(), 0..3),
        vec(address(), 0..3),
        protocol(),
        of(s()),
    )
        .prop_map(
            |(meta, port, ready, not_ready, protocol, cluster_ip)| Endpoints {
                meta,
                port,
                ready,
                not_ready,
                protocol,
                cluster_ip,
            },
        )
        .boxed()
}

fn config_map() -> BoxedStrategy<ConfigMap> {
    (meta(), btree_map(s(), s(), 0..3))
        .prop_map(|(meta, data)| ConfigMap { meta, data })
        .boxed()
}

fn secret() -> BoxedStrategy<Secret> {
    (meta(), btree_map(s(), bytes(), 0..3))
        .prop_map(|(meta, data)| Secret { meta, data })
        .boxed()
}

fn artifact() -> BoxedStrategy<Artifact> {
    let variant =
        (arch(), s(), any::<u64>(), any::<u64>()).prop_map(|(arch, sha256, size, uploaded_ms)| {
            ArtifactVariant {
                arch,
                sha256,
                size,
                uploaded_ms,
            }
        });
    (meta(), vec(variant, 0..3))
        .prop_map(|(meta, variants)| Artifact { meta, variants })
        .boxed()
}

fn layer_compression() -> BoxedStrategy<LayerCompression> {
    one_of(&[
        LayerCompression::None,
        LayerCompression::Gzip,
        LayerCompression::Zstd,
    ])
}

fn image() -> BoxedStrategy<Image> {
    let layer = (s(), any::<u64>(), layer_compression()).prop_map(|(sha256, size, compression)| {
        ImageLayer {
            sha256,
            size,
            compression,
        }
    });
    let config = (
        vec(s(), 0..3),
        vec(s(), 0..3),
        vec((s(), s()), 0..3),
        of(s()),
        of(s()),
        vec(s(), 0..2),
    )
        .prop_map(
            |(entrypoint, cmd, env, workdir, user, exposed_ports)| ImageConfig {
                entrypoint,
                cmd,
                env,
                workdir,
                user,
                exposed_ports,
            },
        );
    let variant = (arch(), s(), s(), config, vec(layer, 0..3)).prop_map(
        |(arch, manifest_digest, config_sha256, config, layers)| ImageVariant {
            arch,
            manifest_digest,
            config_sha256,
            config,
            layers,
        },
    );
    (meta(), s(), s(), vec(variant, 0..3), any::<u64>())
        .prop_map(|(meta, reference, digest, variants, pulled_ms)| Image {
            meta,
            reference,
            digest,
            variants,
            pulled_ms,
        })
        .boxed()
}

fn registry() -> BoxedStrategy<Registry> {
    (meta(), s(), any::<bool>(), of(s()), of(s()), of(s()))
        .prop_map(|(meta, host, insecure, credentials, mirror, ca)| Registry {
            meta,
            spec: RegistrySpec {
                host,
                insecure,
                credentials,
                mirror,
                ca,
            },
        })
        .boxed()
}

fn object() -> BoxedStrategy<Object> {
    prop_oneof![
        namespace().prop_map(Object::Namespace),
        node().prop_map(Object::Node),
        pod().prop_map(Object::Pod),
        deployment().prop_map(Object::Deployment),
        replica_set().prop_map(Object::ReplicaSet),
        daemon_set().prop_map(Object::DaemonSet),
        job().prop_map(Object::Job),
        event().prop_map(Object::Event),
        service().prop_map(Object::Service),
        endpoints().prop_map(Object::Endpoints),
        config_map().prop_map(Object::ConfigMap),
        secret().prop_map(Object::Secret),
        artifact().prop_map(Object::Artifact),
        image().prop_map(Object::Image),
        registry().prop_map(Object::Registry),
    ]
    .boxed()
}

fn exec_spec() -> BoxedStrategy<bramble_wire::msg::ExecSpec> {
    (
        s(),
        s(),
        of(s()),
        vec(s(), 0..3),
        any::<bool>(),
        any::<bool>(),
        any::<u16>(),
        any::<u16>(),
    )
        .prop_map(
            |(namespace, pod, process, command, stdin, tty, rows, cols)| {
                bramble_wire::msg::ExecSpec {
                    namespace,
                    pod,
                    process,
                    command,
                    stdin,
                    tty,
                    rows,
                    cols,
                }
            },
        )
        .boxed()
}

fn port_forward_spec() -> BoxedStrategy<bramble_wire::msg::PortForwardSpec> {
    (s(), s(), any::<u16>())
        .prop_map(
            |(namespace, pod, port)| bramble_wire::msg::PortForwardSpec {
                namespace,
                pod,
                port,
            },
        )
        .boxed()
}

fn exec_input() -> BoxedStrategy<bramble_wire::msg::ExecInput> {
    use bramble_wire::msg::ExecInput;
    prop_oneof![
        bytes().prop_map(ExecInput::Stdin),
        Just(ExecInput::StdinEof),
        (any::<u16>(), any::<u16>()).prop_map(|(rows, cols)| ExecInput::Resize { rows, cols }),
        any::<u32>().prop_map(ExecInput::Ack),
        Just(ExecInput::Kill),
    ]
    .boxed()
}

fn exec_output() -> BoxedStrategy<bramble_wire::msg::ExecOutput> {
    use bramble_wire::msg::ExecOutput;
    prop_oneof![
        Just(ExecOutput::Started),
        bytes().prop_map(ExecOutput::Stdout),
        bytes().prop_map(ExecOutput::Stderr),
        any::<u32>().prop_map(ExecOutput::StdinAck),
        (any::<i32>(), of(any::<u8>()))
            .prop_map(|(code, signal)| ExecOutput::Exit { code, signal }),
        (error_code(), s())
            .prop_map(|(code, message)| ExecOutput::Error(ApiError { code, message })),
    ]
    .boxed()
}

// ---- Channel messages ----

fn node_up() -> BoxedStrategy<NodeUp> {
    let report =
        (s(), s(), s(), pod_status()).prop_map(|(namespace, name, uid, status)| PodReport {
            namespace,
            name,
            uid,
            status,
        });
    prop_oneof![
        node_info().prop_map(|n| NodeUp::Register(Box::new(n))),
        heartbeat().prop_map(NodeUp::Heartbeat),
        vec(report, 0..3).prop_map(NodeUp::Status),
        (any::<u32>(), bytes()).prop_map(|(request, data)| NodeUp::Log(LogChunk { request, data })),
        (any::<u32>(), of(s())).prop_map(|(request, error)| NodeUp::LogEnd { request, error }),
        (any::<u32>(), s(), any::<u64>(), any::<u32>()).prop_map(
            |(request, sha256, offset, len)| NodeUp::ArtifactGet {
                request,
                sha256,
                offset,
                len
            }
        ),
        (any::<bool>(), s()).prop_map(|(kernel, message)| NodeUp::NetworkPath { kernel, message }),
        node_usage().prop_map(NodeUp::Usage),
        vec(
            (
                prop_oneof![
                    Just(ConflictKind::ServicePort),
                    Just(ConflictKind::HostPort)
                ],
                s(),
                s(),
                s(),
                any::<u16>(),
                s()
            )
                .prop_map(|(kind, namespace, name, uid, port, message)| Conflict {
                    kind,
                    namespace,
                    name,
                    uid,
                    port,
                    message
                }),
            0..3
        )
        .prop_map(NodeUp::Conflicts),
        (any::<u32>(), exec_output())
            .prop_map(|(request, output)| NodeUp::Exec { request, output }),
    ]
    .boxed()
}

fn usage() -> BoxedStrategy<bramble_wire::msg::Usage> {
    (any::<u32>(), any::<u64>())
        .prop_map(|(cpu_millis, memory_bytes)| bramble_wire::msg::Usage {
            cpu_millis,
            memory_bytes,
        })
        .boxed()
}

fn node_usage() -> BoxedStrategy<bramble_wire::msg::NodeUsage> {
    let process =
        (s(), usage()).prop_map(|(name, usage)| bramble_wire::msg::ProcessUsage { name, usage });
    let pod =
        (s(), s(), usage(), vec(process, 0..3)).prop_map(|(namespace, name, usage, processes)| {
            bramble_wire::msg::PodUsage {
                namespace,
                name,
                usage,
                processes,
            }
        });
    (any::<u32>(), usage(), vec(pod, 0..3))
        .prop_map(|(window_ms, node, pods)| bramble_wire::msg::NodeUsage {
            window_ms,
            node,
            pods,
        })
        .boxed()
}

fn node_down() -> BoxedStrategy<NodeDown> {
    let assignment = (
        any::<u64>(),
        vec(pod(), 0..3),
        vec(config_map(), 0..2),
        vec(artifact(), 0..2),
        vec(image(), 0..2),
    )
        .prop_map(
            |(revision, pods, config_maps, artifacts, images)| Assignment {
                revision,
                pods,
                config_maps,
                artifacts,
                images,
            },
        );
    let subnet = (s(), s(), s()).prop_map(|(node, cidr, via)| PodSubnet { node, cidr, via });
    prop_oneof![
        assignment.prop_map(NodeDown::Assign),
        (
            any::<u32>(),
            s(),
            s(),
            of(s()),
            any::<bool>(),
            of(any::<u64>()),
            s(),
            any::<bool>(),
        )
            .prop_map(
                |(request, namespace, pod, process, follow, tail_bytes, uid, previous)| {
                    NodeDown::Logs {
                        request,
                        namespace,
                        pod,
                        process,
                        follow,
                        tail_bytes,
                        uid,
                        previous,
                    }
                }
            ),
        any::<u32>().prop_map(|request| NodeDown::CancelLogs { request }),
        Just(NodeDown::Ping),
        vec(endpoints(), 0..3).prop_map(NodeDown::Endpoints),
        vec(secret(), 0..3).prop_map(NodeDown::Secrets),
        (any::<u32>(), bytes(), of(s())).prop_map(|(request, data, error)| {
            NodeDown::ArtifactChunk {
                request,
                data,
                error,
            }
        }),
        s().prop_map(|secret| NodeDown::Credential { secret }),
        vec(subnet, 0..3).prop_map(NodeDown::Network),
        (s(), s(), s()).prop_map(|(cluster_cidr, service_cidr, domain)| {
            NodeDown::ClusterNetwork(bramble_wire::msg::ClusterNetwork {
                cluster_cidr,
                service_cidr,
                domain,
            })
        }),
        s().prop_map(|message| NodeDown::Replaced { message }),
        any::<u32>().prop_map(|seconds| NodeDown::UsageWanted { seconds }),
        (any::<u32>(), exec_spec()).prop_map(|(request, spec)| NodeDown::Exec { request, spec }),
        (any::<u32>(), exec_input())
            .prop_map(|(request, input)| NodeDown::ExecInput { request, input }),
        (any::<u32>(), port_forward_spec())
            .prop_map(|(request, spec)| NodeDown::PortForward { request, spec }),
    ]
    .boxed()
}

fn request() -> BoxedStrategy<Request> {
    let body = prop_oneof![
        vec(object(), 0..3).prop_map(RequestBody::Apply),
        (kind(), s(), s()).prop_map(|(kind, namespace, name)| RequestBody::Get {
            kind,
            namespace,
            name
        }),
        (kind(), of(s()), s()).prop_map(|(kind, namespace, selector)| RequestBody::List {
            kind,
            namespace,
            selector
        }),
        (kind(), of(s()), any::<u64>()).prop_map(|(kind, namespace, from_revision)| {
            RequestBody::Watch {
                kind,
                namespace,
                from_revision,
            }
        }),
        (kind(), s(), s(), of(any::<u64>())).prop_map(
            |(kind, namespace, name, expected_revision)| RequestBody::Delete {
                kind,
                namespace,
                name,
                expected_revision
            }
        ),
        (
            s(),
            s(),
            of(s()),
            any::<bool>(),
            of(any::<u64>()),
            any::<bool>()
        )
            .prop_map(|(namespace, pod, process, follow, tail_bytes, previous)| {
                RequestBody::Logs {
                    namespace,
                    pod,
                    process,
                    follow,
                    tail_bytes,
                    previous,
                }
            }),
        (s(), arch(), s(), any::<u64>()).prop_map(|(name, arch, sha256, size)| {
            RequestBody::ArtifactBegin {
                name,
                arch,
                sha256,
                size,
            }
        }),
        (s(), any::<u64>(), bytes()).prop_map(|(sha256, offset, data)| {
            RequestBody::ArtifactChunk {
                sha256,
                offset,
                data,
            }
        }),
        (of(any::<u64>()), s(), of(any::<u32>()), of(s())).prop_map(
            |(ttl_s, description, uses, node)| RequestBody::TokenCreate {
                ttl_s,
                description,
                uses,
                node
            }
        ),
        Just(RequestBody::TokenList),
        s().prop_map(|id| RequestBody::TokenRevoke { id }),
        s().prop_map(|reference| RequestBody::ImagePull { reference }),
        (s(), any::<u64>()).prop_map(|(sha256, size)| RequestBody::BlobBegin { sha256, size }),
        (s(), any::<u64>(), bytes()).prop_map(|(sha256, offset, data)| RequestBody::BlobChunk {
            sha256,
            offset,
            data
        }),
        (s(), s()).prop_map(|(reference, sha256)| RequestBody::ImageImport { reference, sha256 }),
        s().prop_map(|reference| RequestBody::ImageRemove { reference }),
        (
            kind(),
            s(),
            s(),
            vec((s(), of(s())), 0..3),
            vec((s(), of(s())), 0..3),
            any::<bool>(),
            of(any::<bool>())
        )
            .prop_map(
                |(kind, namespace, name, labels, annotations, overwrite, unschedulable)| {
                    RequestBody::Patch {
                        kind,
                        namespace,
                        name,
                        patch: bramble_wire::msg::MetaPatch {
                            labels,
                            annotations,
                            overwrite,
                            unschedulable,
                        },
                    }
                }
            ),
        Just(RequestBody::TokenRotateJoin),
        Just(RequestBody::Top),
        exec_spec().prop_map(RequestBody::Exec),
        (any::<u32>(), exec_input())
            .prop_map(|(exec, input)| RequestBody::ExecInput { exec, input }),
        port_forward_spec().prop_map(RequestBody::PortForward),
    ];
    (any::<u32>(), body)
        .prop_map(|(id, body)| Request { id, body })
        .boxed()
}

fn token_info() -> BoxedStrategy<TokenInfo> {
    (
        s(),
        one_of(&[TokenKind::Join, TokenKind::Node, TokenKind::Admin]),
        of(s()),
        s(),
        any::<u64>(),
        of(any::<u64>()),
        any::<bool>(),
        of(any::<u32>()),
    )
        .prop_map(
            |(id, kind, node, description, created_ms, expires_ms, revoked, uses_left)| TokenInfo {
                id,
                kind,
                node,
                description,
                created_ms,
                expires_ms,
                revoked,
                uses_left,
            },
        )
        .boxed()
}

fn error_code() -> BoxedStrategy<ErrorCode> {
    use ErrorCode::*;
    one_of(&[
        Invalid,
        NotFound,
        Conflict,
        Forbidden,
        Compacted,
        Unavailable,
        Internal,
    ])
}

fn watch_event() -> BoxedStrategy<WatchEvent> {
    prop_oneof![
        object().prop_map(WatchEvent::Put),
        object().prop_map(WatchEvent::Deleted),
    ]
    .boxed()
}

fn response() -> BoxedStrategy<Response> {
    let applied = (
        kind(),
        s(),
        s(),
        any::<u64>(),
        one_of(&[
            ApplyOutcome::Created,
            ApplyOutcome::Updated,
            ApplyOutcome::Unchanged,
        ]),
    )
        .prop_map(|(kind, namespace, name, revision, outcome)| Applied {
            kind,
            namespace,
            name,
            revision,
            outcome,
        });
    let body = prop_oneof![
        vec(applied, 0..3).prop_map(ResponseBody::Applied),
        object().prop_map(ResponseBody::Object),
        (any::<u64>(), vec(object(), 0..3))
            .prop_map(|(revision, items)| ResponseBody::List { revision, items }),
        (any::<u64>(), watch_event())
            .prop_map(|(revision, event)| ResponseBody::Event { revision, event }),
        any::<u64>().prop_map(|revision| ResponseBody::Deleted { revision }),
        bytes().prop_map(ResponseBody::Log),
        Just(ResponseBody::End),
        (error_code(), s())
            .prop_map(|(code, message)| ResponseBody::Error(ApiError { code, message })),
        any::<u64>().prop_map(|offset| ResponseBody::ArtifactProgress { offset }),
        (token_info(), s()).prop_map(|(info, token)| ResponseBody::TokenCreated { info, token }),
        vec(token_info(), 0..3).prop_map(ResponseBody::Tokens),
        (s(), any::<u64>(), any::<u64>()).prop_map(|(message, done, total)| {
            ResponseBody::ImageProgress {
                message,
                done,
                total,
            }
        }),
        vec(
            (s(), usage(), any::<u64>(), of(node_usage())).prop_map(
                |(node, allocatable, age_ms, usage)| bramble_wire::msg::NodeTop {
                    node,
                    allocatable,
                    age_ms,
                    usage,
                }
            ),
            0..3
        )
        .prop_map(ResponseBody::Top),
        exec_output().prop_map(ResponseBody::Exec),
    ];
    (any::<u32>(), body)
        .prop_map(|(id, body)| Response { id, body })
        .boxed()
}

// ---- Every case of every enum is generated ----

/// `fn $f(&$ty) -> &str`: the case's name, by a `match` without a catch-all over the listed
/// cases (a case missing from the list does not compile); `$all` lists them.
macro_rules! cases {
    ($f:ident, $all:ident, $ty:ident, [$($v:ident),+ $(,)?]) => {
        const $all: &[&str] = &[$(stringify!($v)),+];
        fn $f(x: &$ty) -> &'static str {
            match x {
                $($ty::$v { .. } => stringify!($v),)+
            }
        }
    };
}

cases!(
    handshake_case,
    HANDSHAKE,
    Handshake,
    [Hello, Welcome, Reject]
);
cases!(
    reject_case,
    REJECT,
    RejectReason,
    [
        UnsupportedVersion,
        BadCredentials,
        BadIdentity,
        Busy,
        Malformed
    ]
);
cases!(role_case, ROLE, Role, [Worker, Client, Device]);
cases!(device_case, DEVICE, DeviceUp, [Register, Heartbeat]);
cases!(
    arch_case,
    ARCH,
    Arch,
    [Aarch64, Armv7, Armv6, X86_64, Riscv64, Mcu]
);
cases!(cgroup_case, CGROUP, CgroupVersion, [None, V1, V2]);
cases!(
    phase_case,
    PHASE,
    PodPhase,
    [Pending, Running, Succeeded, Failed, Unknown]
);
cases!(
    exit_case,
    EXIT,
    ExitReason,
    [Completed, Error, Signaled, OOMKilled, StartFailed]
);
cases!(
    node_up_case,
    NODE_UP,
    NodeUp,
    [
        Register,
        Heartbeat,
        Status,
        Log,
        LogEnd,
        ArtifactGet,
        NetworkPath,
        Usage,
        Conflicts,
        Exec
    ]
);
cases!(
    node_down_case,
    NODE_DOWN,
    NodeDown,
    [
        Assign,
        Logs,
        CancelLogs,
        Ping,
        Endpoints,
        Secrets,
        ArtifactChunk,
        Credential,
        Network,
        ClusterNetwork,
        Replaced,
        UsageWanted,
        Exec,
        ExecInput,
        PortForward
    ]
);
cases!(
    request_case,
    REQUEST,
    RequestBody,
    [
        Apply,
        Get,
        List,
        Watch,
        Delete,
        Logs,
        ArtifactBegin,
        ArtifactChunk,
        TokenCreate,
        TokenList,
        TokenRevoke,
        ImagePull,
        BlobBegin,
        BlobChunk,
        ImageImport,
        ImageRemove,
        Patch,
        TokenRotateJoin,
        Top,
        Exec,
        ExecInput,
        PortForward
    ]
);
cases!(
    response_case,
    RESPONSE,
    ResponseBody,
    [
        Applied,
        Object,
        List,
        Event,
        Deleted,
        Log,
        End,
        Error,
        ArtifactProgress,
        TokenCreated,
        Tokens,
        ImageProgress,
        Top,
        Exec
    ]
);
cases!(token_kind_case, TOKEN_KIND, TokenKind, [Join, Node, Admin]);
cases!(
    outcome_case,
    OUTCOME,
    ApplyOutcome,
    [Created, Updated, Unchanged]
);
cases!(
    code_case,
    CODE,
    ErrorCode,
    [
        Invalid,
        NotFound,
        Conflict,
        Forbidden,
        Compacted,
        Unavailable,
        Internal
    ]
);
cases!(watch_case, WATCH, WatchEvent, [Put, Deleted]);
cases!(
    object_case,
    OBJECT,
    Object,
    [
        Namespace, Node, Pod, Deployment, ReplicaSet, DaemonSet, Job, Event, Service, Endpoints,
        ConfigMap, Secret, Artifact, Image, Registry
    ]
);
cases!(
    kind_case,
    KIND,
    Kind,
    [
        Namespace, Node, Pod, Deployment, ReplicaSet, DaemonSet, Job, Event, Service, Endpoints,
        ConfigMap, Secret, Artifact, Image, Registry
    ]
);
cases!(probe_case, PROBE, ProbeAction, [Exec, Tcp, Http]);
cases!(env_from_case, ENV_FROM, EnvFrom, [ConfigMap, Secret]);
cases!(
    restart_case,
    RESTART,
    RestartPolicy,
    [Always, OnFailure, Never]
);
cases!(network_case, NETWORK, NetworkMode, [Host, None, Isolated]);
cases!(effect_case, EFFECT, TaintEffect, [NoSchedule, NoExecute]);
cases!(
    volume_case,
    VOLUME,
    VolumeSource,
    [HostPath, EmptyDir, ConfigMap, Secret]
);
cases!(
    state_case,
    STATE,
    ProcessState,
    [Waiting, Running, Terminated]
);
cases!(
    condition_case,
    CONDITION,
    ConditionKind,
    [Ready, MemoryCgroup, DiskPressure, KernelNetwork]
);
cases!(
    ns_phase_case,
    NS_PHASE,
    NamespacePhase,
    [Active, Terminating]
);
cases!(
    job_phase_case,
    JOB_PHASE,
    JobPhase,
    [Running, Complete, Failed]
);
cases!(protocol_case, PROTOCOL, Protocol, [Tcp, Udp]);
cases!(
    compression_case,
    COMPRESSION,
    LayerCompression,
    [None, Gzip, Zstd]
);

/// Samples `strategy` until every case in `all` was seen (at most 2000 draws).
fn covers<T: Debug>(
    what: &str,
    strategy: BoxedStrategy<T>,
    case: fn(&T) -> &'static str,
    all: &[&str],
) {
    let mut runner = TestRunner::deterministic();
    let want: BTreeSet<&str> = all.iter().copied().collect();
    assert_eq!(want.len(), all.len(), "{what}: a case is listed twice");
    let mut seen = BTreeSet::new();
    for _ in 0..2000 {
        seen.insert(case(&strategy.new_tree(&mut runner).unwrap().current()));
        if seen == want {
            return;
        }
    }
    let missing: Vec<_> = want.difference(&seen).collect();
    panic!("{what}: the generator never makes {missing:?}");
}

#[test]
fn every_variant_is_generated() {
    covers("Handshake", handshake(), handshake_case, HANDSHAKE);
    covers("RejectReason", reject_reason(), reject_case, REJECT);
    covers("Role", role(), role_case, ROLE);
    covers("DeviceUp", device_up(), device_case, DEVICE);
    covers("Arch", arch(), arch_case, ARCH);
    covers("CgroupVersion", cgroup(), cgroup_case, CGROUP);
    covers("PodPhase", pod_phase(), phase_case, PHASE);
    covers("ExitReason", exit_reason(), exit_case, EXIT);
    covers("NodeUp", node_up(), node_up_case, NODE_UP);
    covers("NodeDown", node_down(), node_down_case, NODE_DOWN);
    covers(
        "RequestBody",
        request().prop_map(|r| r.body).boxed(),
        request_case,
        REQUEST,
    );
    covers(
        "ResponseBody",
        response().prop_map(|r| r.body).boxed(),
        response_case,
        RESPONSE,
    );
    covers(
        "TokenKind",
        token_info().prop_map(|t| t.kind).boxed(),
        token_kind_case,
        TOKEN_KIND,
    );
    covers(
        "ApplyOutcome",
        response()
            .prop_filter_map("applied", |r| match r.body {
                ResponseBody::Applied(a) => a.into_iter().next().map(|a| a.outcome),
                _ => None,
            })
            .boxed(),
        outcome_case,
        OUTCOME,
    );
    covers("ErrorCode", error_code(), code_case, CODE);
    covers("WatchEvent", watch_event(), watch_case, WATCH);
    covers("Object", object(), object_case, OBJECT);
    covers("Kind", kind(), kind_case, KIND);
    covers("ProbeAction", probe_action(), probe_case, PROBE);
    covers("EnvFrom", env_from(), env_from_case, ENV_FROM);
    covers("RestartPolicy", restart_policy(), restart_case, RESTART);
    covers("NetworkMode", network_mode(), network_case, NETWORK);
    covers("TaintEffect", taint_effect(), effect_case, EFFECT);
    covers("VolumeSource", volume_source(), volume_case, VOLUME);
    covers("ProcessState", process_state(), state_case, STATE);
    covers(
        "ConditionKind",
        node()
            .prop_filter_map("a condition", |n| {
                n.status.conditions.first().map(|c| c.kind)
            })
            .boxed(),
        condition_case,
        CONDITION,
    );
    covers(
        "NamespacePhase",
        namespace().prop_map(|n| n.phase).boxed(),
        ns_phase_case,
        NS_PHASE,
    );
    covers(
        "JobPhase",
        job().prop_map(|j| j.status.phase).boxed(),
        job_phase_case,
        JOB_PHASE,
    );
    covers("Protocol", protocol(), protocol_case, PROTOCOL);
    covers(
        "LayerCompression",
        layer_compression(),
        compression_case,
        COMPRESSION,
    );
}

// ---- The decoder ----

/// Mostly-valid streams: real frames of every message type with some bytes flipped, plus plain
/// noise.
fn stream() -> impl Strategy<Value = Vec<u8>> {
    let frames = vec(
        prop_oneof![
            handshake().prop_map(|m| frame::encode_vec(&m, usize::MAX).unwrap()),
            device_up().prop_map(|m| frame::encode_vec(&m, usize::MAX).unwrap()),
            node_up().prop_map(|m| frame::encode_vec(&m, usize::MAX).unwrap()),
            node_down().prop_map(|m| frame::encode_vec(&m, usize::MAX).unwrap()),
            request().prop_map(|m| frame::encode_vec(&m, usize::MAX).unwrap()),
            response().prop_map(|m| frame::encode_vec(&m, usize::MAX).unwrap()),
            vec(any::<u8>(), 0..40),
        ],
        0..6,
    )
    .prop_map(|v| v.concat());
    (
        frames,
        vec((any::<prop::sample::Index>(), any::<u8>()), 0..4),
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
    fn handshake_round_trips(m in handshake()) {
        round_trip(&m)?;
        // A Hello's version is readable without decoding the rest.
        let framed = frame::encode_vec(&m, usize::MAX).unwrap();
        let mut dec = Decoder::new(Vec::new(), usize::MAX);
        let (_, body) = dec.feed(&framed).unwrap();
        let got = Handshake::check_hello_version(body.unwrap());
        match &m {
            Handshake::Hello(h) => {
                let supported = (bramble_wire::MIN_PROTOCOL_VERSION..=bramble_wire::PROTOCOL_VERSION)
                    .contains(&h.protocol_version);
                prop_assert_eq!(got.ok(), supported.then_some(h.protocol_version));
            }
            _ => prop_assert_eq!(got, Err(WireError::UnknownTag)),
        }
    }

    #[test]
    fn device_up_round_trips(m in device_up()) {
        round_trip(&m)?;
    }

    #[test]
    fn node_up_round_trips(m in node_up()) {
        round_trip(&m)?;
    }

    #[test]
    fn node_down_round_trips(m in node_down()) {
        round_trip(&m)?;
    }

    #[test]
    fn request_round_trips(m in request()) {
        round_trip(&m)?;
    }

    #[test]
    fn response_round_trips(m in response()) {
        round_trip(&m)?;
    }

    #[test]
    fn object_round_trips(o in object(), k in kind()) {
        round_trip(&o)?;
        round_trip(&k)?;
        prop_assert_eq!(Kind::parse(k.as_str()), Some(k));
    }

    #[test]
    fn typical_pods_round_trip(name in s()) {
        round_trip(&common::hello_pod(&name))?;
        round_trip(&NodeDown::Assign(common::assignment(3)))?;
    }

    #[test]
    fn decoder_never_panics_nor_exceeds_max(
        bytes in prop_oneof![stream(), vec(any::<u8>(), 0..512)],
        sizes in vec(1usize..64, 1..8),
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
    fn decode_never_panics(bytes in prop_oneof![stream(), vec(any::<u8>(), 0..512)]) {
        let _ = frame::decode::<Handshake>(&bytes);
        let _ = Handshake::check_hello_version(&bytes);
        let _ = frame::decode::<NodeUp>(&bytes);
        let _ = frame::decode::<NodeDown>(&bytes);
        let _ = frame::decode::<Request>(&bytes);
        let _ = frame::decode::<Response>(&bytes);
        let _ = frame::decode::<DeviceUp>(&bytes);
        let mut copy = bytes.clone();
        let _ = frame::decode_cobs::<Handshake>(&mut copy);
        // Skipping a 1..=5 byte varint prefix reaches the body of framed streams.
        for skip in 1..=frame::MAX_VARINT_LEN.min(bytes.len()) {
            let body = &bytes[skip..];
            let _ = frame::decode::<Handshake>(body);
            let _ = frame::decode::<DeviceUp>(body);
            let _ = frame::decode::<NodeUp>(body);
            let _ = frame::decode::<NodeDown>(body);
            let _ = frame::decode::<Request>(body);
            let _ = frame::decode::<Response>(body);
        }
    }
}
