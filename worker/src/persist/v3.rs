//! Frozen copies of the types persisted as version 3 of `assignment.bin` and a pod's `config`
//! (protocol 6, before protocol 7 added a pod's `ephemeral_storage` and the init's tmpfs for the
//! writable layer). Never edit these; a later
//! change freezes its own copies next to them.

use bramble_wire::msg::Assignment;
use bramble_wire::objects::{
    Arch, Artifact, ConfigMap, Image, Meta, NetworkMode, Pod, PodSpec, PodStatus, ProcessSpec,
    RestartPolicy, Toleration, Volume,
};
use serde::{Deserialize, Serialize};

use crate::runtime::init::{InitConfig, InitProcess, OverlayRoot, PodCgroup};

/// `PodSpec` of protocol 6: no `ephemeral_storage`.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub(super) struct PodSpecV3 {
    processes: Vec<ProcessSpec>,
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
    image: Option<String>,
}

impl From<PodSpecV3> for PodSpec {
    fn from(s: PodSpecV3) -> Self {
        PodSpec {
            processes: s.processes,
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
            image: s.image,
            ephemeral_storage: Default::default(),
        }
    }
}

/// `Pod` of protocol 6.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub(super) struct PodV3 {
    meta: Meta,
    spec: PodSpecV3,
    status: PodStatus,
}

/// `Assignment` of protocol 6.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub(super) struct AssignmentV3 {
    revision: u64,
    pods: Vec<PodV3>,
    config_maps: Vec<ConfigMap>,
    artifacts: Vec<Artifact>,
    images: Vec<Image>,
}

impl From<AssignmentV3> for Assignment {
    fn from(a: AssignmentV3) -> Self {
        Assignment {
            revision: a.revision,
            pods: a
                .pods
                .into_iter()
                .map(|p| Pod {
                    meta: p.meta,
                    spec: p.spec.into(),
                    status: p.status,
                })
                .collect(),
            config_maps: a.config_maps,
            artifacts: a.artifacts,
            images: a.images,
        }
    }
}

/// `OverlayRoot` of version 3: no `tmpfs_size`.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub(super) struct OverlayRootV3 {
    lower_base: String,
    lowers: Vec<String>,
    upper: String,
    work: String,
}

/// `InitConfig` of version 3 (a pod's `config`, protocol 6).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub(super) struct InitConfigV3 {
    hostname: String,
    processes: Vec<InitProcess>,
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
    overlay: Option<OverlayRootV3>,
}

impl From<InitConfigV3> for InitConfig {
    fn from(c: InitConfigV3) -> Self {
        InitConfig {
            hostname: c.hostname,
            processes: c.processes,
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
            overlay: c.overlay.map(|o| OverlayRoot {
                lower_base: o.lower_base,
                lowers: o.lowers,
                upper: o.upper,
                work: o.work,
                tmpfs_size: None,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A version 3 file's payload decodes through the frozen types into today's values.
    #[test]
    fn version_3_payloads_decode_into_todays_types() {
        let spec = PodSpecV3 {
            processes: vec![ProcessSpec {
                name: "main".into(),
                args: vec!["-f".into()],
                ..Default::default()
            }],
            restart_policy: RestartPolicy::Always,
            node_selector: Default::default(),
            tolerations: Vec::new(),
            arch: None,
            rootfs: None,
            network: NetworkMode::Isolated,
            volumes: Vec::new(),
            termination_grace_ms: 5000,
            node_name: Some("n1".into()),
            privileged: false,
            host_pid: false,
            host_ipc: false,
            image: Some("docker.io/library/alpine:3.20".into()),
        };
        let old = AssignmentV3 {
            revision: 7,
            pods: vec![PodV3 {
                meta: Meta {
                    name: "web".into(),
                    ..Default::default()
                },
                spec,
                status: PodStatus::default(),
            }],
            config_maps: Vec::new(),
            artifacts: Vec::new(),
            images: Vec::new(),
        };
        let bytes = postcard::to_allocvec(&old).unwrap();
        let a: Assignment = postcard::from_bytes::<AssignmentV3>(&bytes).unwrap().into();
        assert_eq!(a.revision, 7);
        let p = &a.pods[0];
        assert_eq!(
            p.spec.image.as_deref(),
            Some("docker.io/library/alpine:3.20")
        );
        assert_eq!(p.spec.processes[0].args, ["-f"]);
        assert_eq!(p.spec.ephemeral_storage, Default::default());
        // Today's types do not read it (the version bump is needed).
        assert!(
            postcard::from_bytes::<Assignment>(&bytes).is_err() || {
                let again: Assignment = postcard::from_bytes(&bytes).unwrap();
                again != a
            }
        );
    }
}
