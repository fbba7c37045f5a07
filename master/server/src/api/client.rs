//! Client connections: apply, get, list, watch, delete, logs.

use std::collections::BTreeMap;
use std::sync::Arc;

use bramble_wire::WireError;
use bramble_wire::io::{IoError, send};
use bramble_wire::msg::{
    ApiError, Applied, ApplyOutcome, ErrorCode, NodeDown, Request, RequestBody, Response,
    ResponseBody,
};
use bramble_wire::objects::{Kind, Meta, Namespace, Node, Object, Service};

use futures_lite::FutureExt;

use super::{Master, now_ms, with_timeout};
use crate::store::StoreError;
use crate::validate;

pub use bramble_client::CLIENT_RESPONSE_MAX;

/// The namespace every cluster has.
pub const DEFAULT_NAMESPACE: &str = "default";

fn err(code: ErrorCode, message: impl Into<String>) -> ApiError {
    ApiError {
        code,
        message: message.into(),
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        err(e.code(), e.to_string())
    }
}

pub(crate) async fn ensure_default_namespace(m: &Master) -> anyhow::Result<()> {
    if super::get_opt(&m.store, Kind::Namespace, "", DEFAULT_NAMESPACE)
        .await?
        .is_none()
    {
        let ns = Object::Namespace(Namespace {
            meta: Meta {
                name: DEFAULT_NAMESPACE.into(),
                ..Default::default()
            },
            ..Default::default()
        });
        m.store.create(ns).await?;
    }
    Ok(())
}

/// Gives every service stored without a virtual IP (from before service IPs) one, once, when
/// the master starts: the endpoints and the workers' rules then carry it.
pub(crate) async fn backfill_service_ips(m: &Master) -> anyhow::Result<()> {
    use crate::controllers::service_ip;
    let _ips = m.service_ip_lock.lock().await;
    let (_, objs) = m.store.list(Kind::Service, None).await?;
    let services: Vec<Service> = objs
        .into_iter()
        .filter_map(|o| match o {
            Object::Service(s) => Some(s),
            _ => None,
        })
        .collect();
    let range = &m.cfg.service_cidr;
    for s in &services {
        if let Some(ip) = s.spec.cluster_ip.as_deref().and_then(service_ip::parse_ip)
            && !range.contains(ip)
        {
            tracing::warn!(
                service = %format!("{}/{}", s.meta.namespace, s.meta.name),
                %ip,
                "service keeps its virtual IP from outside --service-cidr {} (it was given under \
                 another range; delete and re-create the service to move it)",
                range.as_string()
            );
        }
    }
    let missing = services
        .iter()
        .filter(|s| s.spec.cluster_ip.is_none())
        .count();
    let given = service_ip::backfill(range, &services);
    for (mut s, ip) in given.iter().cloned() {
        let rev = s.meta.revision;
        tracing::info!(service = %format!("{}/{}", s.meta.namespace, s.meta.name), %ip, "service virtual IP assigned (service created before service IPs)");
        s.spec.cluster_ip = Some(ip);
        m.store.update(Object::Service(s), Some(rev)).await?;
    }
    if given.len() < missing {
        tracing::warn!(
            "the service range {} is full: {} services stored without a virtual IP stay without \
             one; restart the master with a larger --service-cidr",
            range.as_string(),
            missing - given.len()
        );
    }
    Ok(())
}

/// Gives the services of an apply their virtual IPs ([`crate::controllers::service_ip::assign`]):
/// the caller holds `service_ip_lock` until they are written, so the addresses read here as
/// used are every committed one.
async fn assign_service_ips(m: &Master, objs: &mut [Object]) -> Result<(), ApiError> {
    use crate::controllers::service_ip::{self, Assigned};
    let (_, stored) = m.store.list(Kind::Service, None).await?;
    let stored: Vec<Service> = stored
        .into_iter()
        .filter_map(|o| match o {
            Object::Service(s) => Some(s),
            _ => None,
        })
        .collect();
    // Given earlier in this apply, by (namespace, name).
    let mut given: BTreeMap<(String, String), Service> = BTreeMap::new();
    for o in objs.iter_mut() {
        let Object::Service(s) = o else { continue };
        let key = (s.meta.namespace.clone(), s.meta.name.clone());
        let me = Some((key.0.as_str(), key.1.as_str()));
        let mut used = service_ip::used_by(&stored, me);
        used.extend(service_ip::used_by(given.values(), me));
        let before = given.get(&key).or_else(|| {
            stored
                .iter()
                .find(|x| x.meta.namespace == key.0 && x.meta.name == key.1)
        });
        match service_ip::assign(&m.cfg.service_cidr, s, before, &used) {
            Assigned::Ip(ip) => s.spec.cluster_ip = Some(ip),
            Assigned::Refused(why) => return Err(err(ErrorCode::Invalid, why)),
            Assigned::Immutable(why) => return Err(err(ErrorCode::Conflict, why)),
        }
        given.insert(key, s.clone());
    }
    Ok(())
}

pub(crate) async fn serve(
    m: Arc<Master>,
    principal: super::auth::Principal,
    mut reader: super::tls::ConnReader,
    writer: super::tls::ConnWriter,
) -> anyhow::Result<()> {
    // One writer task per connection; requests that stream (watch, logs) send through it.
    let (tx, rx) = Outbox::new(OUTBOX_FRAMES);
    // Answers (lists) may be large; requests stay bounded by the reader's `max_frame`.
    let max = CLIENT_RESPONSE_MAX;
    let writer_task = smol::spawn(async move {
        let mut w = writer;
        while let Ok((r, _room)) = rx.recv().await {
            let id = r.id;
            match send(&mut w, &r, max).await {
                Ok(()) => {}
                Err(IoError::Wire(WireError::EncodeTooLarge)) => {
                    // Too big for one frame: say so instead of going silent.
                    let e = Response {
                        id,
                        body: ResponseBody::Error(err(
                            ErrorCode::Invalid,
                            format!(
                                "the answer is larger than {} MiB: narrow it with -n NAMESPACE or -l SELECTOR",
                                max >> 20
                            ),
                        )),
                    };
                    if send(&mut w, &e, max).await.is_err() {
                        break;
                    }
                }
                Err(_) => break,
            }
        }
        let _ = w.shutdown(std::net::Shutdown::Both);
    });
    let mut streams = Vec::new();
    let execs = super::exec::ClientExecs::default();
    let principal = Arc::new(principal);
    let mut token_gen = m.tokens.generation();
    loop {
        let req: Request = match with_timeout(m.cfg.client_idle_timeout, reader.recv()).await {
            Ok(Some(r)) => r,
            Ok(None) => break,
            Err(e) => {
                tracing::debug!("client connection: {e}");
                break;
            }
        };
        let id = req.id;
        // A revoked token is cut off at its next request; every request is authorized first.
        if let Err(why) = m
            .tokens
            .still_valid(principal.token_id(), &mut token_gen, now_ms())
        {
            tracing::warn!("{why}: closing its client connection");
            let body = ResponseBody::Error(err(
                ErrorCode::Forbidden,
                format!("{why}: ask an admin for a new token"),
            ));
            let _ = tx.send(Response { id, body }).await;
            break;
        }
        if let Err(e) = super::authz::check_request(&principal, &req.body) {
            let body = ResponseBody::Error(e);
            if tx.send(Response { id, body }).await.is_err() {
                break;
            }
            continue;
        }
        match req.body {
            RequestBody::Watch {
                kind,
                namespace,
                from_revision,
            } => {
                let slot = match m.watch_slot(principal.token_id()) {
                    Ok(s) => s,
                    Err(e) => {
                        if tx
                            .send(Response {
                                id,
                                body: ResponseBody::Error(e),
                            })
                            .await
                            .is_err()
                        {
                            break;
                        }
                        continue;
                    }
                };
                streams.push(smol::spawn(watch(
                    m.clone(),
                    principal.clone(),
                    id,
                    kind,
                    namespace,
                    from_revision,
                    tx.clone(),
                    slot,
                )));
            }
            RequestBody::ImagePull { reference } => {
                // Progress frames, then the image: streamed like logs.
                streams.push(smol::spawn(super::image::pull_stream(
                    m.clone(),
                    id,
                    reference,
                    tx.clone(),
                )));
            }
            RequestBody::Logs {
                namespace,
                pod,
                process,
                follow,
                tail_bytes,
                previous,
            } => {
                streams.push(smol::spawn(logs(
                    m.clone(),
                    id,
                    namespace,
                    pod,
                    process,
                    (follow, previous),
                    tail_bytes,
                    tx.clone(),
                )));
            }
            RequestBody::Exec(spec) => {
                streams.push(smol::spawn(super::exec::run(
                    m.clone(),
                    id,
                    super::exec::Start::Exec(spec),
                    tx.clone(),
                    execs.clone(),
                )));
            }
            RequestBody::PortForward(spec) => {
                streams.push(smol::spawn(super::exec::run(
                    m.clone(),
                    id,
                    super::exec::Start::PortForward(spec),
                    tx.clone(),
                    execs.clone(),
                )));
            }
            RequestBody::ExecInput { exec, input } => {
                super::exec::input(&m, &execs, exec, input).await;
            }
            body => {
                let out = match handle(&m, &principal, body).await {
                    Ok(b) => b,
                    Err(e) => ResponseBody::Error(e),
                };
                if tx.send(Response { id, body: out }).await.is_err() {
                    break;
                }
            }
        }
    }
    drop(streams); // cancels watches and log streams
    drop(tx);
    writer_task.await;
    Ok(())
}

async fn handle(
    m: &Master,
    p: &super::auth::Principal,
    body: RequestBody,
) -> Result<ResponseBody, ApiError> {
    let get = match &body {
        RequestBody::Get {
            kind,
            namespace,
            name,
        } => Some((*kind, namespace.clone(), name.clone())),
        _ => None,
    };
    let mut out = match handle_unfiltered(m, body).await {
        Ok(out) => out,
        Err(e) if e.code == ErrorCode::NotFound => {
            return Err(match get {
                Some((kind, ns, name)) => super::authz::missing(m, p, kind, &ns, &name, e).await,
                None => e,
            });
        }
        Err(e) => return Err(e),
    };
    if !matches!(p, super::auth::Principal::Admin { .. }) {
        super::authz::filter(m, p, &mut out).await?;
    }
    fill_heartbeats(m, &mut out).await;
    Ok(out)
}

/// Nodes as read: with their last heartbeat, which the master keeps in memory only (a heartbeat
/// is never worth a disk write).
async fn fill_heartbeats(m: &Master, out: &mut ResponseBody) {
    let nodes: Vec<&mut Node> = match out {
        ResponseBody::Object(Object::Node(n)) => vec![n],
        ResponseBody::List { items, .. } => items
            .iter_mut()
            .filter_map(|o| match o {
                Object::Node(n) => Some(n),
                _ => None,
            })
            .collect(),
        _ => return,
    };
    if nodes.is_empty() {
        return;
    }
    let live = m.nodes.lock().await;
    for n in nodes {
        if let Some(l) = live.get(&n.meta.name) {
            n.status.last_heartbeat_ms = l.last_seen_ms;
        }
    }
}

pub(crate) async fn handle_unfiltered(
    m: &Master,
    body: RequestBody,
) -> Result<ResponseBody, ApiError> {
    match body {
        RequestBody::ArtifactBegin {
            name,
            arch,
            sha256,
            size,
        } => super::artifact::begin(m, name, arch, sha256, size).await,
        RequestBody::ArtifactChunk {
            sha256,
            offset,
            data,
        } => super::artifact::chunk(m, sha256, offset, data).await,
        RequestBody::TokenCreate { .. }
        | RequestBody::TokenList
        | RequestBody::TokenRevoke { .. }
        | RequestBody::TokenRotateJoin => m.token_call(body).await,
        RequestBody::Patch {
            kind,
            namespace,
            name,
            patch,
        } => patch_object(m, kind, &scope(kind, &namespace), &name, &patch)
            .await
            .map(|a| ResponseBody::Applied(vec![a])),
        RequestBody::BlobBegin { sha256, size } => {
            super::artifact::blob_begin(m, sha256, size).await
        }
        RequestBody::BlobChunk {
            sha256,
            offset,
            data,
        } => super::artifact::chunk(m, sha256, offset, data).await,
        RequestBody::ImageImport { reference, sha256 } => {
            super::image::import(m, reference, sha256).await
        }
        RequestBody::ImageRemove { reference } => super::image::remove(m, reference).await,
        RequestBody::Apply(objs) => apply(m, objs).await.map(ResponseBody::Applied),
        RequestBody::Get {
            kind: Kind::Endpoints,
            namespace,
            name,
        } => {
            let ns = scope(Kind::Endpoints, &namespace);
            match m.endpoints.get(&ns, &name).await {
                Some(o) => Ok(ResponseBody::Object(o)),
                None => Err(not_found(Kind::Endpoints, &ns, &name)),
            }
        }
        RequestBody::Get {
            kind,
            namespace,
            name,
        } => {
            let ns = scope(kind, &namespace);
            match super::get_opt(&m.store, kind, &ns, &name).await? {
                Some(o) => Ok(ResponseBody::Object(o)),
                None => Err(not_found(kind, &ns, &name)),
            }
        }
        RequestBody::List {
            kind: Kind::Event,
            namespace,
            ..
        } => Ok(ResponseBody::List {
            revision: m.store.current_revision(),
            items: m.events.list(namespace.as_deref()).await?,
        }),
        RequestBody::List {
            kind: Kind::Endpoints,
            namespace,
            selector,
        } => {
            // Computed, not stored (like events): answered from memory.
            let sel = Selector::parse(&selector).map_err(|e| err(ErrorCode::Invalid, e))?;
            let mut items = m.endpoints.list(namespace.as_deref()).await;
            items.retain(|o| sel.matches(&o.meta().labels));
            Ok(ResponseBody::List {
                revision: m.store.current_revision(),
                items,
            })
        }
        RequestBody::List {
            kind,
            namespace,
            selector,
        } => {
            let sel = Selector::parse(&selector).map_err(|e| err(ErrorCode::Invalid, e))?;
            let ns = if kind.namespaced() { namespace } else { None };
            let (revision, mut items) = m.store.list(kind, ns.as_deref()).await?;
            items.retain(|o| sel.matches(&o.meta().labels));
            Ok(ResponseBody::List { revision, items })
        }
        RequestBody::Delete {
            kind,
            namespace,
            name,
            expected_revision,
        } => {
            let ns = scope(kind, &namespace);
            if kind == Kind::Namespace && name == DEFAULT_NAMESPACE {
                return Err(err(
                    ErrorCode::Invalid,
                    "the default namespace cannot be deleted",
                ));
            }
            if kind == Kind::Namespace {
                // Everything in the namespace goes with it: owners first, so their controllers do
                // not replace what is being deleted.
                for k in [
                    Kind::Deployment,
                    Kind::DaemonSet,
                    Kind::Job,
                    Kind::ReplicaSet,
                    Kind::Pod,
                    Kind::ConfigMap,
                    Kind::Secret,
                    Kind::Service,
                ] {
                    let (_, objs) = m.store.list(k, Some(&name)).await?;
                    for o in objs {
                        let meta = o.meta();
                        match m.store.delete(k, &meta.namespace, &meta.name, None).await {
                            Ok(_) | Err(StoreError::NotFound { .. }) => {}
                            Err(e) => return Err(e.into()),
                        }
                    }
                }
            }
            if kind == Kind::Artifact {
                super::artifact::check_unused(m, &name).await?;
            }
            if kind == Kind::Image {
                super::image::check_unused(m, &name).await?;
            }
            let revision = match m.store.delete(kind, &ns, &name, expected_revision).await {
                Ok(r) => r,
                // A node that never registered (or was deleted) may still hold credentials
                // that block its name: deleting it frees the name.
                Err(StoreError::NotFound { .. })
                    if kind == Kind::Node
                        && m.tokens.list().iter().any(|t| {
                            t.kind == "node" && t.node.as_deref() == Some(name.as_str())
                        }) =>
                {
                    m.store.current_revision()
                }
                Err(StoreError::NotFound { .. }) => return Err(not_found(kind, &ns, &name)),
                Err(e) => return Err(e.into()),
            };
            if matches!(kind, Kind::Artifact | Kind::Image) {
                super::artifact::remove_unused_blobs(m).await;
            }
            if kind == Kind::Node {
                node_deleted(m, &name, revision).await?;
            }
            m.poke_scheduler();
            Ok(ResponseBody::Deleted { revision })
        }
        RequestBody::Top => Ok(ResponseBody::Top(super::top::top(m).await)),
        RequestBody::Watch { .. }
        | RequestBody::Logs { .. }
        | RequestBody::ImagePull { .. }
        | RequestBody::Exec(_)
        | RequestBody::ExecInput { .. }
        | RequestBody::PortForward(_) => {
            Err(err(ErrorCode::Internal, "streaming call routed wrongly"))
        }
    }
}

/// `bramble label|annotate|cordon|uncordon`: the patch applied to the stored object with the
/// revision read, again on a conflict (a controller or a node wrote meanwhile): no lost update.
async fn patch_object(
    m: &Master,
    kind: Kind,
    ns: &str,
    name: &str,
    patch: &bramble_wire::msg::MetaPatch,
) -> Result<Applied, ApiError> {
    if matches!(kind, Kind::Event | Kind::Endpoints) {
        return Err(err(
            ErrorCode::Invalid,
            format!(
                "{}s are made by the master and not stored: they cannot be labelled",
                kind.as_str()
            ),
        ));
    }
    for _ in 0..20 {
        let Some(mut o) = super::get_opt(&m.store, kind, ns, name).await? else {
            return Err(not_found(kind, ns, name));
        };
        let rev = o.meta().revision;
        let changed =
            super::claims::apply_patch(&mut o, patch).map_err(|e| err(ErrorCode::Invalid, e))?;
        let applied = |revision, outcome| Applied {
            kind,
            namespace: ns.to_string(),
            name: name.to_string(),
            revision,
            outcome,
        };
        if !changed {
            return Ok(applied(rev, ApplyOutcome::Unchanged));
        }
        match m.store.update(o, Some(rev)).await {
            Ok(r) => {
                if patch.unschedulable.is_some() || kind == Kind::Node {
                    m.poke_scheduler();
                }
                return Ok(applied(r, ApplyOutcome::Updated));
            }
            Err(StoreError::Conflict { .. }) => continue,
            Err(StoreError::NotFound { .. }) => return Err(not_found(kind, ns, name)),
            Err(e) => return Err(e.into()),
        }
    }
    Err(err(
        ErrorCode::Unavailable,
        format!(
            "{} {name:?} kept changing under 20 attempts to write it: retry",
            kind.as_str()
        ),
    ))
}

/// After `bramble delete node NAME`: the pods bound to it are deleted (their owners replace
/// them elsewhere), its agent, if connected, is pushed an empty assignment (it stops its pods)
/// and then cut off, and its credentials are deleted, so the name may join again (with a join
/// token) — also after a revocation.
async fn node_deleted(m: &Master, name: &str, revision: u64) -> Result<(), ApiError> {
    let (_, pods) = m.store.list(Kind::Pod, None).await?;
    for p in pods {
        let Object::Pod(p) = p else { continue };
        if p.spec.node_name.as_deref() == Some(name) {
            match m
                .store
                .delete(Kind::Pod, &p.meta.namespace, &p.meta.name, None)
                .await
            {
                Ok(_) | Err(StoreError::NotFound { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    let written = m.store.current_revision().max(revision);
    m.cache
        .wait_for(written, std::time::Duration::from_secs(5))
        .await;
    let session = m
        .nodes
        .lock()
        .await
        .remove(name)
        .and_then(|l| l.session.map(|(_, tx)| tx));
    if let Some(tx) = session {
        let assignment = NodeDown::Assign(bramble_wire::msg::Assignment {
            revision: written,
            ..Default::default()
        });
        let _ = tx.send(assignment).await;
        tracing::info!(node = %name, "node deleted: told its agent to stop its pods");
    }
    match m.tokens.forget_node(&m.store, name).await {
        Ok(ids) if !ids.is_empty() => {
            tracing::info!(node = %name, credentials = ?ids, "node deleted: its credentials are deleted; the name may join again")
        }
        Ok(_) => {}
        Err(e) => return Err(e.into()),
    }
    Ok(())
}

pub(super) fn scope(kind: Kind, ns: &str) -> String {
    if kind.namespaced() {
        if ns.is_empty() {
            DEFAULT_NAMESPACE.to_string()
        } else {
            ns.to_string()
        }
    } else {
        String::new()
    }
}

pub(super) fn not_found(kind: Kind, ns: &str, name: &str) -> ApiError {
    let hint = match kind {
        Kind::Node => "list them with `bramble get nodes`".to_string(),
        Kind::Namespace => "list them with `bramble get namespaces`".to_string(),
        Kind::Endpoints => format!(
            "endpoints exist for each service: list them with `bramble get endpoints -n {ns}`"
        ),
        _ => format!("list them with `bramble get {}s -n {ns}`", kind.as_str()),
    };
    if ns.is_empty() {
        err(
            ErrorCode::NotFound,
            format!("{} {name:?} not found; {hint}", kind.as_str()),
        )
    } else {
        err(
            ErrorCode::NotFound,
            format!(
                "{} {name:?} not found in namespace {ns:?}; {hint}",
                kind.as_str()
            ),
        )
    }
}

pub(crate) async fn apply(m: &Master, objs: Vec<Object>) -> Result<Vec<Applied>, ApiError> {
    // Validate everything first: all or nothing.
    let mut prepared = Vec::with_capacity(objs.len());
    for mut o in objs {
        if !validate::client_may_apply(o.kind()) {
            return Err(err(
                ErrorCode::Forbidden,
                format!("{} objects cannot be applied", o.kind().as_str()),
            ));
        }
        if o.kind().namespaced() && o.meta().namespace.is_empty() {
            o.meta_mut().namespace = DEFAULT_NAMESPACE.into();
        }
        if !o.kind().namespaced() {
            o.meta_mut().namespace.clear();
        }
        validate::check_object(&o).map_err(|e| err(ErrorCode::Invalid, e.to_string()))?;
        prepared.push(o);
    }
    // Namespaces named by pods must exist (or be in this apply).
    for o in &prepared {
        if o.kind().namespaced() {
            let ns = &o.meta().namespace;
            let in_apply = prepared
                .iter()
                .any(|x| x.kind() == Kind::Namespace && &x.meta().name == ns);
            if !in_apply
                && super::get_opt(&m.store, Kind::Namespace, "", ns)
                    .await?
                    .is_none()
            {
                return Err(err(
                    ErrorCode::NotFound,
                    format!(
                        "{} {:?}: namespace {ns:?} does not exist; add a [[namespace]] with name = {ns:?} to the manifest",
                        o.kind().as_str(),
                        o.meta().name
                    ),
                ));
            }
        }
    }
    // A namespace's pod security level, for what runs pods in it.
    for o in &prepared {
        let Some(spec) = o.pod_spec() else { continue };
        let ns = &o.meta().namespace;
        let in_apply = prepared.iter().find_map(|x| match x {
            Object::Namespace(n) if &n.meta.name == ns => Some(n.pod_security),
            _ => None,
        });
        let level = match in_apply {
            Some(l) => l,
            None => match super::get_opt(&m.store, Kind::Namespace, "", ns).await? {
                Some(Object::Namespace(n)) => n.pod_security,
                _ => Default::default(),
            },
        };
        let what = format!("{} {:?}", o.kind().as_str(), o.meta().name);
        validate::check_pod_security(&what, ns, level, spec)
            .map_err(|e| err(ErrorCode::Forbidden, e.to_string()))?;
    }
    // One [[registry]] per host: a pull uses the registry of its host, so a second one for the
    // same host would be ignored without a word.
    for o in &prepared {
        let Object::Registry(r) = o else { continue };
        let other_for_host = |x: &Object| match x {
            Object::Registry(y)
                if y.meta.name != r.meta.name && y.spec.host.eq_ignore_ascii_case(&r.spec.host) =>
            {
                Some(y.meta.name.clone())
            }
            _ => None,
        };
        let mut clash = prepared.iter().find_map(other_for_host);
        if clash.is_none() {
            let (_, stored) = m.store.list(Kind::Registry, None).await?;
            clash = stored.iter().find_map(other_for_host);
        }
        if let Some(other) = clash {
            return Err(err(
                ErrorCode::Conflict,
                format!(
                    "registry {:?}: host {:?} already has registry {other:?}: change that one, or delete it first (bramble delete registry {other})",
                    r.meta.name, r.spec.host
                ),
            ));
        }
    }
    // Services' virtual IPs, under a lock held until they are written (the end of this call).
    let _ips = if prepared.iter().any(|o| o.kind() == Kind::Service) {
        let guard = m.service_ip_lock.lock().await;
        assign_service_ips(m, &mut prepared).await?;
        Some(guard)
    } else {
        None
    };
    // Namespaces first so pods in them can follow.
    prepared.sort_by_key(|o| o.kind() != Kind::Namespace);
    // Namespaces first, then everything else side by side: one apply of many objects shares
    // the store writer's group commits instead of a transaction per object.
    let split = prepared
        .iter()
        .position(|o| o.kind() != Kind::Namespace)
        .unwrap_or(prepared.len());
    let mut seen = std::collections::HashSet::new();
    let distinct = prepared
        .iter()
        .all(|o| seen.insert((o.kind(), o.meta().namespace.clone(), o.meta().name.clone())));
    // (An object given twice is applied in order, the second over the first.)
    let rest = if distinct {
        prepared.split_off(split)
    } else {
        Vec::new()
    };
    let mut out = Vec::new();
    for o in prepared {
        out.push(apply_one(m, o).await?);
    }
    for r in super::join_all(rest.into_iter().map(|o| apply_one(m, o)).collect()).await {
        out.push(r?);
    }
    m.poke_scheduler();
    Ok(out)
}

async fn apply_one(m: &Master, original: Object) -> Result<Applied, ApiError> {
    let kind = original.kind();
    let (ns, name) = (
        original.meta().namespace.clone(),
        original.meta().name.clone(),
    );
    let expected = match original.meta().revision {
        0 => None,
        r => Some(r),
    };
    let applied = |revision, outcome| Applied {
        kind,
        namespace: ns.clone(),
        name: name.clone(),
        revision,
        outcome,
    };
    // A document without a revision is applied over whatever is stored: when a controller
    // writes the object (its status) between our read and our write, read and merge again
    // rather than hand the user a conflict that is not theirs.
    let mut raced = 0;
    loop {
        let mut o = original.clone();
        let existing = super::get_opt(&m.store, kind, &ns, &name).await?;
        let Some(cur) = existing else {
            // Identity is the store's to give (`Store::create`), never the client's.
            let meta = o.meta_mut();
            meta.uid.clear();
            meta.created_ms = 0;
            meta.revision = 0;
            if let Object::Deployment(d) = &mut o {
                // The status is the system's: a document's is not taken over.
                d.status = bramble_wire::objects::DeploymentStatus {
                    generation: 1,
                    ..Default::default()
                };
            }
            if let Object::Node(n) = &mut o {
                // The pod subnet is the master's to give (at registration, never twice), not the
                // client's: a raw API client could otherwise hand one node another's subnet.
                n.spec.pod_cidr.clear();
            }
            let rev = m.store.create(o).await?;
            return Ok(applied(rev, ApplyOutcome::Created));
        };
        // Merge: keep identity and status from the stored object; the user owns spec and labels.
        // Annotations merge (those set with `bramble annotate` stay unless the manifest sets them).
        let labels = o.meta().labels.clone();
        let mut annotations = cur.meta().annotations.clone();
        annotations.extend(o.meta().annotations.clone());
        let immutable = |what: &str| {
            err(
                ErrorCode::Conflict,
                format!(
                    "{what} {name:?} in namespace {ns:?} exists with a different spec, which cannot change: `bramble delete {what} {name} -n {ns}` and apply again"
                ),
            )
        };
        let mut merged = match (cur.clone(), o) {
            (Object::Pod(c), Object::Pod(mut n)) => {
                if n.spec.node_name.is_none() {
                    n.spec.node_name = c.spec.node_name.clone();
                }
                if n.spec != c.spec {
                    return Err(immutable("pod"));
                }
                n.status = c.status;
                Object::Pod(n)
            }
            (Object::Job(c), Object::Job(mut n)) => {
                if n.spec != c.spec {
                    return Err(immutable("job"));
                }
                n.status = c.status;
                Object::Job(n)
            }
            // Merges, never wipes: the node's own labels, the system's taints, the pod subnet (the
            // master's to give) and the status stay (`claims::merge_applied_node`).
            (Object::Node(c), Object::Node(n)) => {
                Object::Node(super::claims::merge_applied_node(&c, n))
            }
            (Object::Namespace(c), Object::Namespace(mut n)) => {
                n.phase = c.phase;
                Object::Namespace(n)
            }
            (Object::Deployment(c), Object::Deployment(mut n)) => {
                if n.spec.template.restarted_at_ms.is_none() {
                    // A manifest does not say when the pods were last restarted: keep it.
                    n.spec.template.restarted_at_ms = c.spec.template.restarted_at_ms;
                }
                let changed = n.spec != c.spec;
                n.status = c.status;
                if changed {
                    // A new generation: `rollout status` waits until the controller observed it.
                    n.status.generation = n.status.generation.max(n.status.observed_generation) + 1;
                }
                Object::Deployment(n)
            }
            (Object::DaemonSet(c), Object::DaemonSet(mut n)) => {
                if n.spec.template.restarted_at_ms.is_none() {
                    n.spec.template.restarted_at_ms = c.spec.template.restarted_at_ms;
                }
                n.status = c.status;
                Object::DaemonSet(n)
            }
            (Object::ConfigMap(_), n @ Object::ConfigMap(_)) => n,
            (Object::Secret(_), n @ Object::Secret(_)) => n,
            (Object::Service(_), Object::Service(n)) => Object::Service(n),
            (Object::Registry(_), n @ Object::Registry(_)) => n,
            _ => return Err(err(ErrorCode::Internal, "kind mismatch")),
        };
        if kind != Kind::Node {
            *merged.meta_mut() = Meta {
                labels,
                annotations,
                ..cur.meta().clone()
            };
        }
        // Merged annotations are checked again as a whole (their count and size).
        validate::check_annotations(
            &format!("{} {name:?}: annotations", kind.as_str()),
            &merged.meta().annotations,
        )
        .map_err(|e| err(ErrorCode::Invalid, e.to_string()))?;
        // An apply that changes nothing overwrites nothing: `Unchanged` even when its expected
        // revision is old (`get -o yaml | apply -f -` while controllers write the status).
        if merged == cur {
            return Ok(applied(cur.meta().revision, ApplyOutcome::Unchanged));
        }
        if let Some(e) = expected
            && e != cur.meta().revision
        {
            return Err(err(
                ErrorCode::Conflict,
                format!(
                    "{} {name:?} changed since revision {e} (now {}); get it again and re-apply",
                    kind.as_str(),
                    cur.meta().revision
                ),
            ));
        }
        match m.store.update(merged, Some(cur.meta().revision)).await {
            Ok(rev) => return Ok(applied(rev, ApplyOutcome::Updated)),
            Err(crate::store::StoreError::Conflict { .. }) if expected.is_none() && raced < 8 => {
                raced += 1;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn watch(
    m: Arc<Master>,
    principal: Arc<super::auth::Principal>,
    id: u32,
    kind: Kind,
    namespace: Option<String>,
    from: u64,
    tx: Outbox,
    _slot: super::limits::WatchSlot,
) {
    let ns = if kind.namespaced() { namespace } else { None };
    let from = if from == 0 {
        m.store.current_revision()
    } else {
        from
    };
    let mut w = match m.store.watch(Some(kind), ns, from).await {
        Ok(w) => w,
        Err(e) => {
            let _ = tx
                .send(Response {
                    id,
                    body: ResponseBody::Error(e.into()),
                })
                .await;
            return;
        }
    };
    loop {
        match w.next().await {
            Ok(crate::store::Event { revision, event }) => {
                let (bramble_wire::msg::WatchEvent::Put(o)
                | bramble_wire::msg::WatchEvent::Deleted(o)) = &event;
                if !super::authz::visible(&principal, o, None) {
                    continue;
                }
                if tx
                    .send(Response {
                        id,
                        body: ResponseBody::Event { revision, event },
                    })
                    .await
                    .is_err()
                {
                    return;
                }
            }
            Err(e) => {
                let _ = tx
                    .send(Response {
                        id,
                        body: ResponseBody::Error(e.into()),
                    })
                    .await;
                return;
            }
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn logs(
    m: Arc<Master>,
    id: u32,
    namespace: String,
    pod: String,
    process: Option<String>,
    (follow, previous): (bool, bool),
    tail_bytes: Option<u64>,
    tx: Outbox,
) {
    let result = async {
        let ns = scope(Kind::Pod, &namespace);
        let Some(Object::Pod(p)) = super::get_opt(&m.store, Kind::Pod, &ns, &pod).await? else {
            return Err(not_found(Kind::Pod, &ns, &pod));
        };
        let Some(node) = p.spec.node_name.clone() else {
            return Err(err(ErrorCode::Unavailable, format!("pod {pod:?} is not scheduled yet: no logs; see `bramble describe pod {pod}`")));
        };
        if let Some(proc_name) = &process
            && !p.spec.processes.iter().any(|x| &x.name == proc_name)
        {
            let names: Vec<_> = p.spec.processes.iter().map(|x| x.name.as_str()).collect();
            return Err(err(ErrorCode::NotFound, format!("pod {pod:?} has no process {proc_name:?}; it has {names:?}")));
        }
        let session = m.nodes.lock().await.get(&node).and_then(|n| n.session.clone());
        let Some((session, node_tx)) = session else {
            return Err(err(ErrorCode::Unavailable, format!("node {node:?} running pod {pod:?} is not connected; logs stay on the node until it is back")));
        };
        let request = (m.next_id() & 0xffff_ffff) as u32;
        // Unbounded, so an idle stream holds no buffer; the node's side drops chunks past
        // `LogRoute::MAX_QUEUED` (a slow client must not stall the node).
        let (rtx, rrx) = async_channel::unbounded();
        // Bound to the session asked: a chunk with this id from any other session is dropped.
        m.log_routes.lock().await.insert(request, super::LogRoute { node: node.clone(), session, tx: rtx });
        let _guard = RouteGuard { m: m.clone(), request, node_tx: node_tx.clone() };
        node_tx
            .send(NodeDown::Logs { request, namespace: ns, pod: pod.clone(), process, follow, tail_bytes, uid: p.meta.uid.clone(), previous })
            .await
            .map_err(|_| err(ErrorCode::Unavailable, format!("node {node:?} disconnected")))?;
        while let Ok(body) = rrx.recv().await {
            let end = matches!(body, ResponseBody::End | ResponseBody::Error(_));
            if tx.send(Response { id, body }).await.is_err() {
                return Ok(());
            }
            if end {
                return Ok(());
            }
        }
        Err(err(ErrorCode::Unavailable, format!("node {node:?} disconnected while streaming logs")))
    }
    .await;
    if let Err(e) = result {
        let _ = tx
            .send(Response {
                id,
                body: ResponseBody::Error(e),
            })
            .await;
    }
}

/// Frames a client connection may have queued for its writer (watch events, log chunks, answers);
/// a stream that gets ahead of the socket waits for room.
const OUTBOX_FRAMES: usize = 256;

/// The queue of a client connection's writer: at most `room` frames, but memory only for the
/// frames queued (a bounded channel would allocate every slot, ~560 bytes each, up front).
#[derive(Clone, Debug)]
pub(crate) struct Outbox {
    tx: async_channel::Sender<(Response, async_lock::SemaphoreGuardArc)>,
    room: Arc<async_lock::Semaphore>,
}

impl Outbox {
    /// An outbox of at most `frames` queued frames, and its writer's end.
    pub(crate) fn new(
        frames: usize,
    ) -> (
        Outbox,
        async_channel::Receiver<(Response, async_lock::SemaphoreGuardArc)>,
    ) {
        let (tx, rx) = async_channel::unbounded();
        let room = Arc::new(async_lock::Semaphore::new(frames.max(1)));
        (Outbox { tx, room }, rx)
    }

    /// Queues `r`, waiting for room; fails once the writer is gone.
    pub(crate) async fn send(&self, r: Response) -> Result<(), async_channel::SendError<Response>> {
        if self.tx.is_closed() {
            return Err(async_channel::SendError(r));
        }
        // Waiting for room must not outlive the writer.
        let permit = async { Some(self.room.acquire_arc().await) }
            .or(async {
                self.tx.closed().await;
                None
            })
            .await;
        let Some(permit) = permit else {
            return Err(async_channel::SendError(r));
        };
        self.tx
            .send((r, permit))
            .await
            .map_err(|e| async_channel::SendError(e.0.0))
    }
}

/// Removes a log route and tells the node to stop streaming when the client goes away.
struct RouteGuard {
    m: Arc<Master>,
    request: u32,
    node_tx: async_channel::Sender<NodeDown>,
}

impl Drop for RouteGuard {
    fn drop(&mut self) {
        let (m, request, node_tx) = (self.m.clone(), self.request, self.node_tx.clone());
        smol::spawn(async move {
            m.log_routes.lock().await.remove(&request);
            let _ = node_tx.try_send(NodeDown::CancelLogs { request });
        })
        .detach();
    }
}

impl std::fmt::Debug for RouteGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RouteGuard({})", self.request)
    }
}

/// A label selector: `k=v`, `k==v`, `k!=v`, `k` (exists), `!k` (absent), comma-separated.
#[derive(Debug, Default)]
pub struct Selector(Vec<(String, Op)>);

#[derive(Debug)]
enum Op {
    Eq(String),
    Ne(String),
    Exists,
    Absent,
}

impl Selector {
    /// Parses a selector; empty selects everything.
    pub fn parse(s: &str) -> Result<Selector, String> {
        let mut out = Vec::new();
        for term in s.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            let (k, op) = if let Some((k, v)) = term.split_once("!=") {
                (k, Op::Ne(v.trim().into()))
            } else if let Some((k, v)) = term.split_once("==") {
                (k, Op::Eq(v.trim().into()))
            } else if let Some((k, v)) = term.split_once('=') {
                (k, Op::Eq(v.trim().into()))
            } else if let Some(k) = term.strip_prefix('!') {
                (k, Op::Absent)
            } else {
                (term, Op::Exists)
            };
            let k = k.trim();
            let v = match &op {
                Op::Eq(v) | Op::Ne(v) => v.as_str(),
                _ => "",
            };
            validate::check_label("selector", k, v)
                .map_err(|e| format!("bad selector term {term:?}: {}", e.message))?;
            out.push((k.to_string(), op));
        }
        Ok(Selector(out))
    }

    /// Whether `labels` satisfy every term.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.0.iter().all(|(k, op)| match op {
            Op::Eq(v) => labels.get(k) == Some(v),
            Op::Ne(v) => labels.get(k) != Some(v),
            Op::Exists => labels.contains_key(k),
            Op::Absent => !labels.contains_key(k),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selectors() {
        let l: BTreeMap<String, String> = [
            ("app".to_string(), "web".to_string()),
            ("tier".into(), "fe".into()),
        ]
        .into();
        let check =
            |s: &str, want: bool| assert_eq!(Selector::parse(s).unwrap().matches(&l), want, "{s}");
        check("", true);
        check("app=web", true);
        check("app==web", true);
        check("app=db", false);
        check("app!=db", true);
        check("app=web,tier=fe", true);
        check("app=web,tier=be", false);
        check("tier", true);
        check("!tier", false);
        check("!zone", true);
        assert!(Selector::parse("a b=c").is_err());
    }
}
