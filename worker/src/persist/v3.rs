//! Frozen copies of the types persisted as version 3 of `assignment.bin` and version 2 of
//! `endpoints` (the wire types of protocol 6, before object metadata had `annotations`). Versions
//! 1 and 2 hold the same metadata, so their frozen types use [`MetaV3`] too. Never edit these; a
//! later change freezes its own copies next to them.

use bramble_wire::msg::Assignment;
use bramble_wire::objects::{
    Artifact, ArtifactVariant, ConfigMap, EndpointAddress, Endpoints, Image, ImageVariant, Labels,
    Meta, OwnerRef, Pod, PodSpec, PodStatus, Protocol,
};
use serde::{Deserialize, Serialize};

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

/// `Pod` of protocol 6.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub(super) struct PodV3 {
    meta: MetaV3,
    spec: PodSpec,
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
                    spec: p.spec,
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

#[cfg(test)]
mod tests {
    use super::*;

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
                spec: PodSpec::default(),
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
        assert_eq!(back.config_maps[0].meta, meta);
        assert!(postcard::from_bytes::<Assignment>(&bytes).is_err());
    }
}
