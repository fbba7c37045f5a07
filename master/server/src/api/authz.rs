//! Authorization: what each principal may do. Admins may do everything. A node's credential used
//! as a client may read its own Node object, the pods bound to it, the config maps and secrets
//! those pods reference, and services and their endpoints — nothing else, and it writes nothing.
//! A node session (the worker role) reports status only for its own pods and registers only its
//! own name (enforced in `node.rs` with the helpers here).
//!
//! The decisions are pure functions of the principal, the request and the objects; the one
//! lookup they need (the node's pods) is done by the caller.

use std::collections::BTreeSet;

use bramble_wire::msg::{ApiError, ErrorCode, RequestBody};
use bramble_wire::objects::{EnvFrom, Kind, Object, Pod, VolumeSource};

use super::auth::Principal;

fn forbidden(message: String) -> ApiError {
    ApiError {
        code: ErrorCode::Forbidden,
        message,
    }
}

/// What a request does, for messages.
fn verb(body: &RequestBody) -> String {
    match body {
        RequestBody::Apply(_) => "apply objects".into(),
        RequestBody::Get { kind, .. } => format!("get {}s", kind.as_str()),
        RequestBody::List { kind, .. } => format!("list {}s", kind.as_str()),
        RequestBody::Watch { kind, .. } => format!("watch {}s", kind.as_str()),
        RequestBody::Delete { .. } => "delete objects".into(),
        RequestBody::Logs { .. } => "read logs".into(),
        RequestBody::ArtifactBegin { .. } | RequestBody::ArtifactChunk { .. } => {
            "upload artifacts".into()
        }
        RequestBody::TokenCreate { .. } => "create tokens".into(),
        RequestBody::TokenList => "list tokens".into(),
        RequestBody::TokenRevoke { .. } => "revoke tokens".into(),
        RequestBody::ImagePull { .. } => "pull images".into(),
        RequestBody::BlobBegin { .. }
        | RequestBody::BlobChunk { .. }
        | RequestBody::ImageImport { .. } => "import images".into(),
        RequestBody::ImageRemove { .. } => "remove images".into(),
        RequestBody::Patch { kind, .. } => format!("label {}s", kind.as_str()),
        RequestBody::TokenRotateJoin => "rotate the join token".into(),
        RequestBody::Top => "read resource usage".into(),
        RequestBody::Exec(_) | RequestBody::ExecInput { .. } => "exec into pods".into(),
        RequestBody::PortForward(_) => "forward ports of pods".into(),
    }
}

/// Kinds a node credential may read (each object is then checked with [`visible`]).
fn node_readable(kind: Kind) -> bool {
    matches!(
        kind,
        Kind::Node | Kind::Pod | Kind::ConfigMap | Kind::Secret | Kind::Service | Kind::Endpoints
    )
}

/// Kinds a node credential may watch: those whose visibility needs no other object.
fn node_watchable(kind: Kind) -> bool {
    matches!(
        kind,
        Kind::Node | Kind::Pod | Kind::Service | Kind::Endpoints
    )
}

/// The first check of every client request, before it runs.
pub fn check_request(p: &Principal, body: &RequestBody) -> Result<(), ApiError> {
    let node = match p {
        Principal::Admin { .. } => return Ok(()),
        Principal::Node { node, .. } => node,
        Principal::Joining { token } => {
            return Err(forbidden(format!(
                "join token {token} only registers a worker; use an admin token"
            )));
        }
    };
    let ok = match body {
        RequestBody::Get { kind, .. } | RequestBody::List { kind, .. } => node_readable(*kind),
        RequestBody::Watch { kind, .. } => node_watchable(*kind),
        _ => false,
    };
    if ok {
        Ok(())
    } else {
        Err(forbidden(format!(
            "node {node}'s credential ({}) may not {}: a node reads only its own node, its pods, their config maps and secrets, and services; use an admin token (DATA_DIR/admin.token)",
            p.token_id(),
            verb(body)
        )))
    }
}

/// The config maps and secrets `(namespace, name)` a node's pods reference.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct NodeRefs {
    /// Config maps.
    pub config_maps: BTreeSet<(String, String)>,
    /// Secrets.
    pub secrets: BTreeSet<(String, String)>,
}

impl NodeRefs {
    /// What the pods bound to `node` among `pods` reference.
    pub fn of<'a>(node: &str, pods: impl IntoIterator<Item = &'a Pod>) -> NodeRefs {
        let mut r = NodeRefs::default();
        for p in pods
            .into_iter()
            .filter(|p| p.spec.node_name.as_deref() == Some(node))
        {
            let ns = &p.meta.namespace;
            for v in &p.spec.volumes {
                match &v.source {
                    VolumeSource::ConfigMap { name } => {
                        r.config_maps.insert((ns.clone(), name.clone()));
                    }
                    VolumeSource::Secret { name } => {
                        r.secrets.insert((ns.clone(), name.clone()));
                    }
                    _ => {}
                }
            }
            for proc_ in &p.spec.processes {
                for e in &proc_.env_from {
                    match e {
                        EnvFrom::ConfigMap { name, .. } => {
                            r.config_maps.insert((ns.clone(), name.clone()));
                        }
                        EnvFrom::Secret { name, .. } => {
                            r.secrets.insert((ns.clone(), name.clone()));
                        }
                    }
                }
            }
        }
        r
    }
}

/// Whether `p` may see `o`. `refs` is needed for config maps and secrets only (`None` = none
/// visible).
pub fn visible(p: &Principal, o: &Object, refs: Option<&NodeRefs>) -> bool {
    let node = match p {
        Principal::Admin { .. } => return true,
        Principal::Node { node, .. } => node,
        Principal::Joining { .. } => return false,
    };
    let key = |o: &Object| (o.meta().namespace.clone(), o.meta().name.clone());
    match o {
        Object::Node(n) => &n.meta.name == node,
        Object::Pod(pod) => pod.spec.node_name.as_deref() == Some(node.as_str()),
        Object::ConfigMap(_) => refs.is_some_and(|r| r.config_maps.contains(&key(o))),
        Object::Secret(_) => refs.is_some_and(|r| r.secrets.contains(&key(o))),
        Object::Service(_) | Object::Endpoints(_) => true,
        _ => false,
    }
}

/// The error for a `Get` of an object the principal may not see.
pub fn not_yours(p: &Principal, o: &Object) -> ApiError {
    let m = o.meta();
    not_yours_named(p, o.kind(), &m.namespace, &m.name)
}

fn not_yours_named(p: &Principal, kind: Kind, namespace: &str, name: &str) -> ApiError {
    let what = if namespace.is_empty() {
        format!("{} {name}", kind.as_str())
    } else {
        format!("{} {namespace}/{name}", kind.as_str())
    };
    let node = match p {
        Principal::Node { node, .. } => node.as_str(),
        _ => "?",
    };
    forbidden(format!(
        "node {node}'s credential ({}) may not read {what}: it is not assigned to node {node}",
        p.token_id()
    ))
}

/// Whether a node may fetch the artifact tarball with this hash: one of its pods must use the
/// artifact (`rootfs = "artifact:NAME"`) whose variants include it. The artifact transfer
/// (`NodeUp::ArtifactGet`) calls this before serving any byte.
pub fn node_may_get_artifact<'a>(
    node: &str,
    sha256: &str,
    pods: impl IntoIterator<Item = &'a Pod>,
    artifacts: &[bramble_wire::objects::Artifact],
) -> bool {
    let used: BTreeSet<&str> = pods
        .into_iter()
        .filter(|p| p.spec.node_name.as_deref() == Some(node))
        .filter_map(|p| p.spec.artifact())
        .collect();
    artifacts
        .iter()
        .filter(|a| used.contains(a.meta.name.as_str()))
        .any(|a| a.variants.iter().any(|v| v.sha256 == sha256))
}

/// Whether a node may fetch the image layer blob with this hash: one of its pods must use
/// (`image = "REF"`, matched by normalized reference) an image with a layer of that hash in some
/// variant. Manifests, configs and every other blob stay refused: the worker gets the config in
/// the `Image` object of its assignment.
pub fn node_may_get_image_layer<'a>(
    node: &str,
    sha256: &str,
    pods: impl IntoIterator<Item = &'a Pod>,
    images: &[bramble_wire::objects::Image],
) -> bool {
    let used: BTreeSet<String> = pods
        .into_iter()
        .filter(|p| p.spec.node_name.as_deref() == Some(node))
        .filter_map(|p| p.spec.image.as_deref())
        .filter_map(bramble_wire::image_ref::normalize)
        .collect();
    images
        .iter()
        .filter(|i| used.contains(&i.reference))
        .flat_map(|i| i.variants.iter())
        .any(|v| v.layers.iter().any(|l| l.sha256 == sha256))
}

/// A node's `Get` of an object that does not exist: `NotFound` only where the node could see the
/// object if it existed (its own node object, config maps and secrets its pods reference,
/// services and endpoints); `Forbidden`, exactly as for an existing object, everywhere else, so
/// that a node credential cannot probe which names exist.
pub(crate) async fn missing(
    m: &super::Master,
    p: &Principal,
    kind: Kind,
    namespace: &str,
    name: &str,
    not_found: ApiError,
) -> ApiError {
    let Principal::Node { node, .. } = p else {
        return not_found;
    };
    let key = (namespace.to_string(), name.to_string());
    let may_see = match kind {
        Kind::Node => name == node,
        Kind::Service | Kind::Endpoints => true,
        Kind::ConfigMap | Kind::Secret => match m.store.list(Kind::Pod, None).await {
            Ok((_, pods)) => {
                let refs = NodeRefs::of(
                    node,
                    pods.iter().filter_map(|o| match o {
                        Object::Pod(p) => Some(p),
                        _ => None,
                    }),
                );
                if kind == Kind::ConfigMap {
                    refs.config_maps.contains(&key)
                } else {
                    refs.secrets.contains(&key)
                }
            }
            Err(_) => false,
        },
        _ => false,
    };
    if may_see {
        not_found
    } else {
        not_yours_named(p, kind, namespace, name)
    }
}

/// Filters an answer for a non-admin principal: a `Get` of an object it may not see becomes
/// `Forbidden`; a `List` keeps only what it may see.
pub(crate) async fn filter(
    m: &super::Master,
    p: &Principal,
    out: &mut bramble_wire::msg::ResponseBody,
) -> Result<(), ApiError> {
    use bramble_wire::msg::ResponseBody;
    let needs_refs = |o: &Object| matches!(o.kind(), Kind::ConfigMap | Kind::Secret);
    let wants = match &*out {
        ResponseBody::Object(o) => needs_refs(o),
        ResponseBody::List { items, .. } => items.iter().any(needs_refs),
        _ => return Ok(()),
    };
    let refs = match (p, wants) {
        (Principal::Node { node, .. }, true) => {
            let (_, pods) = m.store.list(Kind::Pod, None).await?;
            let pods = pods.iter().filter_map(|o| match o {
                Object::Pod(p) => Some(p),
                _ => None,
            });
            Some(NodeRefs::of(node, pods))
        }
        _ => None,
    };
    match out {
        ResponseBody::Object(o) if !visible(p, o, refs.as_ref()) => Err(not_yours(p, o)),
        ResponseBody::List { items, .. } => {
            items.retain(|o| visible(p, o, refs.as_ref()));
            Ok(())
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bramble_wire::objects::{ConfigMap, Meta, Node, ProcessSpec, Secret, Volume};

    fn meta(ns: &str, name: &str) -> Meta {
        Meta {
            namespace: ns.into(),
            name: name.into(),
            ..Default::default()
        }
    }

    fn pod(name: &str, node: &str, cm: &str, secret: &str) -> Pod {
        let mut p = Pod {
            meta: meta("default", name),
            ..Default::default()
        };
        p.spec.node_name = Some(node.into());
        p.spec.volumes.push(Volume {
            name: "c".into(),
            mount_path: "/c".into(),
            source: VolumeSource::ConfigMap { name: cm.into() },
        });
        p.spec.processes.push(ProcessSpec {
            env_from: vec![EnvFrom::Secret {
                name: secret.into(),
                prefix: String::new(),
            }],
            ..Default::default()
        });
        p
    }

    #[test]
    fn node_sees_only_its_own() {
        let me = Principal::Node {
            token: "node-1".into(),
            node: "pi1".into(),
        };
        let admin = Principal::Admin {
            token: "admin-1".into(),
        };
        let pods = [
            pod("a", "pi1", "cm-a", "s-a"),
            pod("b", "pi2", "cm-b", "s-b"),
        ];
        let refs = NodeRefs::of("pi1", &pods);
        let o = |p: &Pod| Object::Pod(p.clone());
        assert!(visible(&me, &o(&pods[0]), Some(&refs)));
        assert!(!visible(&me, &o(&pods[1]), Some(&refs)));
        assert!(visible(&admin, &o(&pods[1]), None));
        let cm = |n: &str| {
            Object::ConfigMap(ConfigMap {
                meta: meta("default", n),
                ..Default::default()
            })
        };
        let sec = |n: &str| {
            Object::Secret(Secret {
                meta: meta("default", n),
                ..Default::default()
            })
        };
        assert!(visible(&me, &cm("cm-a"), Some(&refs)));
        assert!(!visible(&me, &cm("cm-b"), Some(&refs)));
        assert!(visible(&me, &sec("s-a"), Some(&refs)));
        assert!(!visible(&me, &sec("s-b"), Some(&refs)));
        assert!(!visible(&me, &sec("s-a"), None));
        let node = |n: &str| {
            Object::Node(Node {
                meta: meta("", n),
                ..Default::default()
            })
        };
        assert!(visible(&me, &node("pi1"), None));
        assert!(!visible(&me, &node("pi2"), None));
        // Requests.
        assert!(check_request(&me, &RequestBody::Apply(vec![])).is_err());
        assert!(check_request(&me, &RequestBody::TokenList).is_err());
        // A node labels nothing, not even itself, and rotates no token.
        let patch = RequestBody::Patch {
            kind: Kind::Node,
            namespace: String::new(),
            name: "pi1".into(),
            patch: Default::default(),
        };
        let e = check_request(&me, &patch).unwrap_err();
        assert!(e.message.contains("label nodes"), "{}", e.message);
        assert!(check_request(&me, &RequestBody::TokenRotateJoin).is_err());
        assert!(
            check_request(
                &me,
                &RequestBody::List {
                    kind: Kind::Pod,
                    namespace: None,
                    selector: String::new()
                }
            )
            .is_ok()
        );
        assert!(
            check_request(
                &me,
                &RequestBody::Watch {
                    kind: Kind::Secret,
                    namespace: None,
                    from_revision: 0
                }
            )
            .is_err()
        );
        assert!(check_request(&admin, &RequestBody::TokenList).is_ok());
    }

    #[test]
    fn artifacts_only_for_own_pods() {
        use bramble_wire::objects::{Artifact, ArtifactVariant};
        let mut a = pod("a", "pi1", "x", "y");
        a.spec.rootfs = Some("artifact:web".into());
        let mut b = pod("b", "pi2", "x", "y");
        b.spec.rootfs = Some("artifact:db".into());
        let art = |name: &str, sha: &str| Artifact {
            meta: meta("", name),
            variants: vec![ArtifactVariant {
                arch: bramble_wire::Arch::Aarch64,
                sha256: sha.into(),
                size: 1,
                uploaded_ms: 0,
            }],
        };
        let arts = [art("web", "aa"), art("db", "bb")];
        assert!(node_may_get_artifact("pi1", "aa", [&a, &b], &arts));
        assert!(!node_may_get_artifact("pi1", "bb", [&a, &b], &arts));
    }

    #[test]
    fn image_layers_only_for_own_pods() {
        use bramble_wire::objects::{Image, ImageLayer, ImageVariant, LayerCompression};
        let mut a = pod("a", "pi1", "x", "y");
        a.spec.image = Some("registry.lan:5000/web".into());
        let mut b = pod("b", "pi2", "x", "y");
        b.spec.image = Some("registry.lan:5000/db:2".into());
        let img = |reference: &str, layer: &str| Image {
            meta: meta("", "i"),
            reference: reference.into(),
            digest: "sha256:11".into(),
            variants: vec![ImageVariant {
                arch: bramble_wire::Arch::Aarch64,
                manifest_digest: "sha256:22".into(),
                config_sha256: "33".into(),
                config: Default::default(),
                layers: vec![ImageLayer {
                    sha256: layer.into(),
                    size: 1,
                    compression: LayerCompression::Gzip,
                }],
            }],
            pulled_ms: 0,
        };
        let imgs = [
            img("registry.lan:5000/web:latest", "aa"),
            img("registry.lan:5000/db:2", "bb"),
        ];
        // Matched by normalized reference (the pod wrote no tag).
        assert!(node_may_get_image_layer("pi1", "aa", [&a, &b], &imgs));
        assert!(!node_may_get_image_layer("pi1", "bb", [&a, &b], &imgs));
        // Its config and manifest are not layers.
        assert!(!node_may_get_image_layer("pi1", "33", [&a, &b], &imgs));
        assert!(!node_may_get_image_layer("pi1", "22", [&a, &b], &imgs));
        assert!(node_may_get_image_layer("pi2", "bb", [&a, &b], &imgs));
    }
}
