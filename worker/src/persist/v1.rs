//! Frozen copies of the types persisted as version 1 (and 0) of `assignment.bin` and a pod's
//! `config` (the wire types of protocol 3, before the security context of protocol 4) and of
//! `endpoints` (protocol 4's, before the service's virtual IP of protocol 5). Never edit these;
//! a later change freezes its own copies next to them.

use bramble_wire::msg::Assignment;
use bramble_wire::objects::{
    Arch, EnvFrom, NetworkMode, Pod, PodSpec, PodStatus, Port, Probe, ProcessSpec, Resources,
    RestartPolicy, Toleration, Volume,
};
use serde::{Deserialize, Serialize};

use super::v3::{ArtifactV3, ConfigMapV3, MetaV3};

use crate::runtime::init::{InitConfig, InitProcess};

/// `ProcessSpec` of protocol 3: numeric user and group only.
#[derive(Serialize, Deserialize, Debug)]
pub(super) struct ProcessSpecV1 {
    name: String,
    command: Vec<String>,
    env: Vec<(String, String)>,
    workdir: Option<String>,
    user: Option<u32>,
    group: Option<u32>,
    resources: Resources,
    ports: Vec<Port>,
    liveness: Option<Probe>,
    readiness: Option<Probe>,
    env_from: Vec<EnvFrom>,
}

impl From<ProcessSpecV1> for ProcessSpec {
    fn from(p: ProcessSpecV1) -> Self {
        ProcessSpec {
            name: p.name,
            command: p.command,
            env: p.env,
            workdir: p.workdir,
            user: p.user.map(bramble_wire::objects::IdRef::Id),
            group: p.group.map(bramble_wire::objects::IdRef::Id),
            resources: p.resources,
            ports: p.ports,
            liveness: p.liveness,
            readiness: p.readiness,
            env_from: p.env_from,
            ..Default::default()
        }
    }
}

/// `PodSpec` of protocol 3: no pod-level security opt-outs.
#[derive(Serialize, Deserialize, Debug)]
pub(super) struct PodSpecV1 {
    processes: Vec<ProcessSpecV1>,
    restart_policy: RestartPolicy,
    node_selector: bramble_wire::objects::Labels,
    tolerations: Vec<Toleration>,
    arch: Option<Arch>,
    rootfs: Option<String>,
    network: NetworkMode,
    volumes: Vec<Volume>,
    termination_grace_ms: u32,
    node_name: Option<String>,
}

impl From<PodSpecV1> for PodSpec {
    fn from(s: PodSpecV1) -> Self {
        PodSpec {
            processes: s.processes.into_iter().map(Into::into).collect(),
            restart_policy: s.restart_policy,
            node_selector: s.node_selector,
            tolerations: s.tolerations,
            arch: s.arch,
            rootfs: s.rootfs,
            network: s.network,
            volumes: s.volumes,
            termination_grace_ms: s.termination_grace_ms,
            node_name: s.node_name,
            ..Default::default()
        }
    }
}

/// `Pod` of protocol 3.
#[derive(Serialize, Deserialize, Debug)]
pub(super) struct PodV1 {
    meta: MetaV3,
    spec: PodSpecV1,
    status: PodStatus,
}

/// `Assignment` of protocol 3.
#[derive(Serialize, Deserialize, Debug)]
pub(super) struct AssignmentV1 {
    revision: u64,
    pods: Vec<PodV1>,
    config_maps: Vec<ConfigMapV3>,
    artifacts: Vec<ArtifactV3>,
}

impl From<AssignmentV1> for Assignment {
    fn from(a: AssignmentV1) -> Self {
        Assignment {
            revision: a.revision,
            pods: a
                .pods
                .into_iter()
                .map(|p| Pod {
                    meta: p.meta.into(),
                    spec: p.spec.into(),
                    status: p.status,
                })
                .collect(),
            config_maps: a.config_maps.into_iter().map(Into::into).collect(),
            artifacts: a.artifacts.into_iter().map(Into::into).collect(),
            images: Vec::new(),
        }
    }
}

/// `InitProcess` of version 1.
#[derive(Serialize, Deserialize, Debug)]
pub(super) struct InitProcessV1 {
    spec: ProcessSpecV1,
    cgroup_procs: Vec<String>,
    oom_file: Option<String>,
}

/// `InitConfig` of version 1.
#[derive(Serialize, Deserialize, Debug)]
pub(super) struct InitConfigV1 {
    hostname: String,
    processes: Vec<InitProcessV1>,
    restart_policy: RestartPolicy,
    rootfs: Option<String>,
    private_network: bool,
    volumes: Vec<Volume>,
    empty_dir_base: String,
    backoff_initial_ms: u64,
    backoff_max_ms: u64,
    backoff_reset_ms: u64,
    log_dir: String,
    log_cap: u64,
    tmp_size: u64,
    termination_grace_ms: u64,
    config_volume_base: String,
    secret_volume_base: String,
    env_file: Option<String>,
}

impl From<InitConfigV1> for InitConfig {
    fn from(c: InitConfigV1) -> Self {
        InitConfig {
            hostname: c.hostname,
            processes: c
                .processes
                .into_iter()
                .map(|p| InitProcess {
                    spec: p.spec.into(),
                    cgroup_procs: p.cgroup_procs,
                    oom_file: p.oom_file,
                })
                .collect(),
            restart_policy: c.restart_policy,
            rootfs: c.rootfs,
            private_network: c.private_network,
            volumes: c.volumes,
            empty_dir_base: c.empty_dir_base,
            backoff_initial_ms: c.backoff_initial_ms,
            backoff_max_ms: c.backoff_max_ms,
            backoff_reset_ms: c.backoff_reset_ms,
            log_dir: c.log_dir,
            log_cap: c.log_cap,
            tmp_size: c.tmp_size,
            termination_grace_ms: c.termination_grace_ms,
            config_volume_base: c.config_volume_base,
            secret_volume_base: c.secret_volume_base,
            env_file: c.env_file,
            privileged: false,
            host_ipc: false,
            cgroup: None,
            overlay: None,
        }
    }
}

// The other way, for tests of an upgrade: today's values as the previous build wrote them (the
// fields protocol 3 did not have are dropped; a named user or group has no protocol 3 form).

impl From<&ProcessSpec> for ProcessSpecV1 {
    fn from(p: &ProcessSpec) -> Self {
        ProcessSpecV1 {
            name: p.name.clone(),
            command: p.command.clone(),
            env: p.env.clone(),
            workdir: p.workdir.clone(),
            user: p.user.as_ref().and_then(|u| u.id()),
            group: p.group.as_ref().and_then(|g| g.id()),
            resources: p.resources,
            ports: p.ports.clone(),
            liveness: p.liveness.clone(),
            readiness: p.readiness.clone(),
            env_from: p.env_from.clone(),
        }
    }
}

impl From<&Assignment> for AssignmentV1 {
    fn from(a: &Assignment) -> Self {
        AssignmentV1 {
            revision: a.revision,
            pods: a
                .pods
                .iter()
                .map(|p| PodV1 {
                    meta: (&p.meta).into(),
                    spec: PodSpecV1 {
                        processes: p.spec.processes.iter().map(Into::into).collect(),
                        restart_policy: p.spec.restart_policy,
                        node_selector: p.spec.node_selector.clone(),
                        tolerations: p.spec.tolerations.clone(),
                        arch: p.spec.arch,
                        rootfs: p.spec.rootfs.clone(),
                        network: p.spec.network,
                        volumes: p.spec.volumes.clone(),
                        termination_grace_ms: p.spec.termination_grace_ms,
                        node_name: p.spec.node_name.clone(),
                    },
                    status: p.status.clone(),
                })
                .collect(),
            config_maps: a.config_maps.iter().map(Into::into).collect(),
            artifacts: a.artifacts.iter().map(Into::into).collect(),
        }
    }
}

impl From<&InitConfig> for InitConfigV1 {
    fn from(c: &InitConfig) -> Self {
        InitConfigV1 {
            hostname: c.hostname.clone(),
            processes: c
                .processes
                .iter()
                .map(|p| InitProcessV1 {
                    spec: (&p.spec).into(),
                    cgroup_procs: p.cgroup_procs.clone(),
                    oom_file: p.oom_file.clone(),
                })
                .collect(),
            restart_policy: c.restart_policy,
            rootfs: c.rootfs.clone(),
            private_network: c.private_network,
            volumes: c.volumes.clone(),
            empty_dir_base: c.empty_dir_base.clone(),
            backoff_initial_ms: c.backoff_initial_ms,
            backoff_max_ms: c.backoff_max_ms,
            backoff_reset_ms: c.backoff_reset_ms,
            log_dir: c.log_dir.clone(),
            log_cap: c.log_cap,
            tmp_size: c.tmp_size,
            termination_grace_ms: c.termination_grace_ms,
            config_volume_base: c.config_volume_base.clone(),
            secret_volume_base: c.secret_volume_base.clone(),
            env_file: c.env_file.clone(),
        }
    }
}

/// `Endpoints` of protocols 3 and 4: no virtual IP.
#[derive(Serialize, Deserialize, Debug)]
pub(super) struct EndpointsV1 {
    meta: MetaV3,
    port: u16,
    ready: Vec<bramble_wire::objects::EndpointAddress>,
    not_ready: Vec<bramble_wire::objects::EndpointAddress>,
    protocol: bramble_wire::objects::Protocol,
}

impl From<EndpointsV1> for bramble_wire::objects::Endpoints {
    fn from(e: EndpointsV1) -> Self {
        bramble_wire::objects::Endpoints {
            meta: e.meta.into(),
            port: e.port,
            ready: e.ready,
            not_ready: e.not_ready,
            protocol: e.protocol,
            cluster_ip: None,
        }
    }
}

impl From<&bramble_wire::objects::Endpoints> for EndpointsV1 {
    fn from(e: &bramble_wire::objects::Endpoints) -> Self {
        EndpointsV1 {
            meta: (&e.meta).into(),
            port: e.port,
            ready: e.ready.clone(),
            not_ready: e.not_ready.clone(),
            protocol: e.protocol,
        }
    }
}
