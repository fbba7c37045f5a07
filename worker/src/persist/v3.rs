//! Frozen copies of the types persisted as version 3 of `assignment.bin` and a pod's `config`,
//! and version 2 of `endpoints` (the wire types of protocol 6, before protocol 7 added object
//! metadata's `annotations`, a pod's `ephemeral_storage` and the init's tmpfs for the writable
//! layer). Versions 1 and 2 hold the same metadata, so their frozen types use [`MetaV3`] too. Never edit these; a
//! later change freezes its own copies next to them.

use bramble_wire::msg::Assignment;
use bramble_wire::objects::{
    Arch, Artifact, ArtifactVariant, ConfigMap, EndpointAddress, Endpoints, Image, ImageVariant,
    Labels, Meta, NetworkMode, OwnerRef, Pod, PodSpec, PodStatus, ProcessSpec, Protocol,
    RestartPolicy, Toleration, Volume,
};
use serde::{Deserialize, Serialize};

use crate::runtime::init::{InitConfig, InitProcess, OverlayRoot, PodCgroup};

/// `Meta` before annotations.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub(super) struct MetaV3 {
    name: String,
    namespace: String,
    labels: Labels,
    uid: String,
    revision: u64,
    created_ms: u64,
    owners: Vec<OwnerRef>,
}

impl From<MetaV3> for Meta {
    fn from(m: MetaV3) -> Self {
        Meta {
            name: m.name,
            namespace: m.namespace,
            labels: m.labels,
            uid: m.uid,
            revision: m.revision,
            created_ms: m.created_ms,
            owners: m.owners,
            annotations: Labels::new(),
        }
    }
}

impl From<&Meta> for MetaV3 {
    fn from(m: &Meta) -> Self {
        MetaV3 {
            name: m.name.clone(),
            namespace: m.namespace.clone(),
            labels: m.labels.clone(),
            uid: m.uid.clone(),
            revision: m.revision,
            created_ms: m.created_ms,
            owners: m.owners.clone(),
        }
    }
}

/// `ConfigMap` before annotations.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub(super) struct ConfigMapV3 {
    meta: MetaV3,
    data: std::collections::BTreeMap<String, String>,
}

impl From<ConfigMapV3> for ConfigMap {
    fn from(c: ConfigMapV3) -> Self {
        ConfigMap {
            meta: c.meta.into(),
            data: c.data,
        }
    }
}

impl From<&ConfigMap> for ConfigMapV3 {
    fn from(c: &ConfigMap) -> Self {
        ConfigMapV3 {
            meta: (&c.meta).into(),
            data: c.data.clone(),
        }
    }
}

/// `Artifact` before annotations.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub(super) struct ArtifactV3 {
    meta: MetaV3,
    variants: Vec<ArtifactVariant>,
}

impl From<ArtifactV3> for Artifact {
    fn from(a: ArtifactV3) -> Self {
        Artifact {
            meta: a.meta.into(),
            variants: a.variants,
        }
    }
}

impl From<&Artifact> for ArtifactV3 {
    fn from(a: &Artifact) -> Self {
        ArtifactV3 {
            meta: (&a.meta).into(),
            variants: a.variants.clone(),
        }
    }
}

/// `Image` before annotations.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub(super) struct ImageV3 {
    meta: MetaV3,
    reference: String,
    digest: String,
    variants: Vec<ImageVariant>,
    pulled_ms: u64,
}

impl From<ImageV3> for Image {
    fn from(i: ImageV3) -> Self {
        Image {
            meta: i.meta.into(),
            reference: i.reference,
            digest: i.digest,
            variants: i.variants,
            pulled_ms: i.pulled_ms,
        }
    }
}

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
    meta: MetaV3,
    spec: PodSpecV3,
    status: PodStatus,
}

/// `Assignment` of protocol 6.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub(super) struct AssignmentV3 {
    revision: u64,
    pods: Vec<PodV3>,
    config_maps: Vec<ConfigMapV3>,
    artifacts: Vec<ArtifactV3>,
    images: Vec<ImageV3>,
}

impl From<AssignmentV3> for Assignment {
    fn from(a: AssignmentV3) -> Self {
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
            images: a.images.into_iter().map(Into::into).collect(),
        }
    }
}

/// `Endpoints` of protocols 5 and 6 (version 2 of `endpoints`).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub(super) struct EndpointsV2 {
    meta: MetaV3,
    port: u16,
    ready: Vec<EndpointAddress>,
    not_ready: Vec<EndpointAddress>,
    protocol: Protocol,
    cluster_ip: Option<String>,
}

impl From<EndpointsV2> for Endpoints {
    fn from(e: EndpointsV2) -> Self {
        Endpoints {
            meta: e.meta.into(),
            port: e.port,
            ready: e.ready,
            not_ready: e.not_ready,
            protocol: e.protocol,
            cluster_ip: e.cluster_ip,
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

    fn spec_v3() -> PodSpecV3 {
        PodSpecV3 {
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
        }
    }

    /// A version 3 payload (written before annotations) decodes into today's values.
    #[test]
    fn version_3_payloads_decode_into_todays_types() {
        let mut meta = Meta {
            name: "web".into(),
            namespace: "default".into(),
            uid: "u1".into(),
            revision: 9,
            ..Default::default()
        };
        meta.labels.insert("app".into(), "web".into());
        let old = AssignmentV3 {
            revision: 9,
            pods: vec![PodV3 {
                meta: (&meta).into(),
                spec: spec_v3(),
                status: PodStatus::default(),
            }],
            config_maps: vec![ConfigMapV3 {
                meta: (&meta).into(),
                data: [("k".to_string(), "v".to_string())].into_iter().collect(),
            }],
            artifacts: vec![],
            images: vec![],
        };
        let bytes = postcard::to_allocvec(&old).unwrap();
        let back: Assignment = postcard::from_bytes::<AssignmentV3>(&bytes).unwrap().into();
        assert_eq!(back.pods[0].meta, meta);
        let spec = &back.pods[0].spec;
        assert_eq!(spec.image.as_deref(), Some("docker.io/library/alpine:3.20"));
        assert_eq!(spec.processes[0].args, ["-f"]);
        assert_eq!(spec.node_name.as_deref(), Some("n1"));
        assert_eq!(spec.ephemeral_storage, Default::default());
        assert_eq!(back.config_maps[0].meta, meta);
        assert!(postcard::from_bytes::<Assignment>(&bytes).is_err());
    }
}
