//! Frozen copies of the types persisted as version 2 of `assignment.bin` and a pod's `config`
//! (the wire types of protocols 4 and 5, before images added a pod's `image`, a process's `args`
//! and the assignment's images in protocol 6). Never edit these; a later change freezes its own
//! copies next to them.

use bramble_wire::msg::Assignment;
use bramble_wire::objects::{
    Arch, CapChanges, EnvFrom, IdRef, NetworkMode, Pod, PodSpec, PodStatus, Port, Probe,
    ProcessSpec, Resources, RestartPolicy, SeccompProfile, Toleration, Volume,
};
use serde::{Deserialize, Serialize};

use super::v3::{ArtifactV3, ConfigMapV3, MetaV3};

use crate::runtime::init::{InitConfig, InitProcess, PodCgroup};

/// `ProcessSpec` of protocols 4 and 5: no `args`.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub(super) struct ProcessSpecV2 {
    name: String,
    command: Vec<String>,
    env: Vec<(String, String)>,
    workdir: Option<String>,
    user: Option<IdRef>,
    group: Option<IdRef>,
    supplementary_groups: Vec<IdRef>,
    run_as_non_root: bool,
    capabilities: CapChanges,
    seccomp: SeccompProfile,
    resources: Resources,
    ports: Vec<Port>,
    liveness: Option<Probe>,
    readiness: Option<Probe>,
    env_from: Vec<EnvFrom>,
}

impl From<ProcessSpecV2> for ProcessSpec {
    fn from(p: ProcessSpecV2) -> Self {
        ProcessSpec {
            name: p.name,
            command: p.command,
            env: p.env,
            workdir: p.workdir,
            user: p.user,
            group: p.group,
            supplementary_groups: p.supplementary_groups,
            run_as_non_root: p.run_as_non_root,
            capabilities: p.capabilities,
            seccomp: p.seccomp,
            resources: p.resources,
            ports: p.ports,
            liveness: p.liveness,
            readiness: p.readiness,
            env_from: p.env_from,
            args: Vec::new(),
        }
    }
}

impl From<&ProcessSpec> for ProcessSpecV2 {
    fn from(p: &ProcessSpec) -> Self {
        let p = p.clone();
        ProcessSpecV2 {
            name: p.name,
            command: p.command,
            env: p.env,
            workdir: p.workdir,
            user: p.user,
            group: p.group,
            supplementary_groups: p.supplementary_groups,
            run_as_non_root: p.run_as_non_root,
            capabilities: p.capabilities,
            seccomp: p.seccomp,
            resources: p.resources,
            ports: p.ports,
            liveness: p.liveness,
            readiness: p.readiness,
            env_from: p.env_from,
        }
    }
}

/// `PodSpec` of protocols 4 and 5: no `image`.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub(super) struct PodSpecV2 {
    processes: Vec<ProcessSpecV2>,
    restart_policy: RestartPolicy,
    node_selector: bramble_wire::objects::Labels,
    tolerations: Vec<Toleration>,
    arch: Option<Arch>,
    rootfs: Option<String>,
    network: NetworkMode,
    volumes: Vec<Volume>,
    termination_grace_ms: u32,
    node_name: Option<String>,
    privileged: bool,
    host_pid: bool,
    host_ipc: bool,
}

impl From<PodSpecV2> for PodSpec {
    fn from(s: PodSpecV2) -> Self {
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
            privileged: s.privileged,
            host_pid: s.host_pid,
            host_ipc: s.host_ipc,
            image: None,
            ephemeral_storage: Default::default(),
        }
    }
}

/// `Pod` of protocols 4 and 5.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub(super) struct PodV2 {
    meta: MetaV3,
    spec: PodSpecV2,
    status: PodStatus,
}

/// `Assignment` of protocols 4 and 5: no images.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub(super) struct AssignmentV2 {
    revision: u64,
    pods: Vec<PodV2>,
    config_maps: Vec<ConfigMapV3>,
    artifacts: Vec<ArtifactV3>,
}

impl From<AssignmentV2> for Assignment {
    fn from(a: AssignmentV2) -> Self {
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

/// `InitProcess` of version 2.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub(super) struct InitProcessV2 {
    spec: ProcessSpecV2,
    cgroup_procs: Vec<String>,
    oom_file: Option<String>,
}

/// `InitConfig` of version 2.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub(super) struct InitConfigV2 {
    hostname: String,
    processes: Vec<InitProcessV2>,
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
    privileged: bool,
    host_ipc: bool,
    cgroup: Option<PodCgroup>,
}

impl From<InitConfigV2> for InitConfig {
    fn from(c: InitConfigV2) -> Self {
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
            privileged: c.privileged,
            host_ipc: c.host_ipc,
            cgroup: c.cgroup,
            overlay: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bramble_wire::objects::Meta;

    /// A version 2 file's payload decodes through the frozen types into today's values.
    #[test]
    fn version_2_payloads_decode_into_todays_types() {
        let p = ProcessSpecV2 {
            name: "main".into(),
            command: vec!["/bin/sh".into()],
            env: vec![("A".into(), "1".into())],
            workdir: Some("/w".into()),
            user: Some(IdRef::Name("nobody".into())),
            group: None,
            supplementary_groups: vec![IdRef::Id(5)],
            run_as_non_root: true,
            capabilities: CapChanges::default(),
            seccomp: SeccompProfile::default(),
            resources: Resources::default(),
            ports: vec![],
            liveness: None,
            readiness: None,
            env_from: vec![],
        };
        let a = AssignmentV2 {
            revision: 7,
            pods: vec![PodV2 {
                meta: (&Meta {
                    name: "p".into(),
                    ..Default::default()
                })
                    .into(),
                spec: PodSpecV2 {
                    processes: vec![p.clone()],
                    restart_policy: RestartPolicy::Always,
                    node_selector: Default::default(),
                    tolerations: vec![],
                    arch: None,
                    rootfs: Some("artifact:x".into()),
                    network: NetworkMode::Host,
                    volumes: vec![],
                    termination_grace_ms: 5,
                    node_name: Some("n".into()),
                    privileged: false,
                    host_pid: true,
                    host_ipc: false,
                },
                status: PodStatus::default(),
            }],
            config_maps: vec![],
            artifacts: vec![],
        };
        let bytes = postcard::to_allocvec(&a).unwrap();
        let back: Assignment = postcard::from_bytes::<AssignmentV2>(&bytes).unwrap().into();
        assert_eq!(back.revision, 7);
        assert!(back.pods[0].spec.host_pid);
        assert_eq!(back.pods[0].spec.image, None);
        let proc0 = &back.pods[0].spec.processes[0];
        assert_eq!(proc0.user, Some(IdRef::Name("nobody".into())));
        assert_eq!(ProcessSpecV2::from(proc0), p);
    }
}
