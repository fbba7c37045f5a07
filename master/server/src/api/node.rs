//! Worker connections: registration, heartbeats (memory only), status reports, log chunks;
//! and the node-lifecycle loop that marks silent nodes NotReady.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bramble_wire::NodeInfo;
use bramble_wire::msg::{NodeDown, NodeUp, PodReport, ResponseBody};
use bramble_wire::objects::{
    Condition, ConditionKind, Controllers, Kind, Meta, Node, NodeStatus, Object, Resources,
};

use futures_lite::FutureExt;

use super::report::Verdict;
use super::{Master, NodeLive, now_ms, with_timeout};
use crate::store::StoreError;

/// Bytes of queued frames the writer gathers for one write.
const BATCH: usize = 256 * 1024;

pub(crate) async fn serve(
    m: Arc<Master>,
    name: String,
    token: String,
    peer: Option<SocketAddr>,
    mut reader: super::tls::ConnReader,
    writer: super::tls::ConnWriter,
) -> anyhow::Result<()> {
    let hb = m.cfg.heartbeat_interval;
    let idle = hb * 3 + Duration::from_secs(5);
    // The first message must be the registration.
    let mut info = match with_timeout(Duration::from_secs(10), reader.recv::<NodeUp>()).await? {
        Some(NodeUp::Register(info)) => info,
        _ => anyhow::bail!("node {name}: expected Register after Welcome"),
    };
    if info.name.as_str() != name {
        // A node registers only its own name (the one its credential is bound to).
        tracing::warn!(node = %name, registered_as = %info.name.as_str(), "node tried to register another name: closing");
        anyhow::bail!("node {name}: registered as {:?}", info.name.as_str());
    }
    let mut token_gen = m.tokens.generation();
    // Assignments and status reports are served from the cache: never from an empty one.
    if !m.cache.wait_for(0, Duration::from_secs(30)).await {
        anyhow::bail!("node {name}: the master's cache is not loaded yet");
    }
    let addr = peer.map(|p| p.ip().to_string());
    let pod_cidr = register(&m, &name, &info, addr.clone()).await?;
    let own_subnet = match (pod_cidr.is_empty(), addr) {
        (false, Some(via)) => Some(bramble_wire::msg::PodSubnet {
            node: name.clone(),
            cidr: pod_cidr,
            via,
        }),
        _ => None,
    };

    let session_id = m.next_id();
    let (tx, rx) = async_channel::bounded::<NodeDown>(64);
    let replaced = {
        let mut nodes = m.nodes.lock().await;
        let live = nodes.entry(name.clone()).or_insert_with(NodeLive::default);
        let old = live.session.replace((session_id, tx.clone()));
        live.last_seen_ms = now_ms();
        live.pushed_hash = None; // a new connection always gets a full assignment
        old
    };
    if let Some((_, old)) = replaced {
        // One session per node: the newest wins (a reconnect after a dead link must not wait
        // for the old session's timeout); the old one is told why, and its writer then closes
        // that connection (the `Replaced` frame is its last).
        tracing::warn!(node = %name, peer = ?peer, "a second session with node {name}'s credential: it replaces the first, which is told and closed");
        let msg = NodeDown::Replaced {
            message: format!(
                "another agent connected as node {name} with this node's credential{}: this session is closed; if two machines share one state dir (a cloned SD card), give each its own state dir and join, or revoke the credential (`bramble token list`, `bramble token revoke ID`)",
                peer.map(|p| format!(" from {}", p.ip()))
                    .unwrap_or_default()
            ),
        };
        if old.try_send(msg).is_err() {
            old.close();
        }
    }
    tracing::info!(node = %name, "node connected");
    // Down: up to what workers read (assignments carry config maps, secrets travel whole).
    let max = super::config_push::NODE_DOWN_MAX_FRAME;
    let node = name.clone();
    let writer_task = smol::spawn(async move {
        use futures_lite::AsyncWriteExt;
        let mut w = writer;
        let mut batch: Vec<u8> = Vec::new();
        // A quiet master still pings every 3 heartbeat intervals (the worker's idle timeout is 6).
        let keepalive = hb * 3;
        loop {
            let msg = async { rx.recv().await.ok() }
                .or(async {
                    smol::Timer::after(keepalive).await;
                    Some(NodeDown::Ping)
                })
                .await;
            let Some(msg) = msg else { break };
            // What is queued already (artifact chunks answering a window of requests) goes
            // out in one write and one flush: fewer TLS flushes, TCP segments and wakeups at
            // the worker.
            batch.clear();
            let mut next = Some(msg);
            let mut broken = false;
            let mut last = false;
            while let Some(msg) = next.take() {
                last |= matches!(msg, NodeDown::Replaced { .. });
                match bramble_wire::frame::encode_vec(&msg, max) {
                    Ok(frame) => batch.extend_from_slice(&frame),
                    Err(bramble_wire::WireError::EncodeTooLarge) => {
                        super::config_push::too_large(&node, &msg)
                    }
                    Err(_) => broken = true,
                }
                if batch.len() < BATCH && !broken && !last {
                    next = rx.try_recv().ok();
                }
            }
            if broken {
                break;
            }
            if !batch.is_empty() && (w.write_all(&batch).await.is_err() || w.flush().await.is_err())
            {
                break;
            }
            if last {
                // Leave the peer time to read `Replaced` before the close (a TLS close right
                // behind the frame may reach an agent before it decoded the frame); the agent
                // hangs up itself once it has read it.
                smol::Timer::after(Duration::from_secs(1)).await;
                let _ = w.close().await;
                break;
            }
            // An idle connection keeps no large buffer (a master has many of them).
            if rx.is_empty() && batch.capacity() > 64 * 1024 {
                batch = Vec::new();
            }
        }
    });
    super::endpoints::push_to(&m, &tx, own_subnet).await;
    super::dispatch::push_assignment(&m, &name).await;
    if let Some(wanted) = super::top::still_wanted(&m) {
        // Someone ran `bramble top` recently: this node reports too.
        let _ = tx.send(wanted).await;
    }
    m.poke_scheduler();

    // Artifact tarballs this node was found to use (checked once per hash, not per chunk).
    let mut may_get: std::collections::HashSet<String> = std::collections::HashSet::new();
    // Whether this session was logged sending log chunks of streams it was not asked for.
    let mut warned_foreign_logs = false;
    // The conflicts this session reported last (a conflict records its event once).
    let mut conflicts: Vec<bramble_wire::msg::Conflict> = Vec::new();
    let result: anyhow::Result<()> = async {
        loop {
            let msg = match with_timeout(idle, reader.recv::<NodeUp>()).await? {
                Some(msg) => msg,
                None => return Ok(()),
            };
            // A revoked credential cuts the node off at its next frame.
            if let Err(why) = m.tokens.still_valid(&token, &mut token_gen, now_ms()) {
                tracing::warn!(node = %name, "{why}: disconnecting the node");
                return Ok(());
            }
            let came_back = match m.nodes.lock().await.get_mut(&name) {
                // Replaced by a newer session of this node: this one says nothing more.
                Some(l) if l.session.as_ref().map(|s| s.0) != Some(session_id) => {
                    tracing::info!(node = %name, "replaced session: closing it");
                    return Ok(());
                }
                Some(l) => {
                    l.last_seen_ms = now_ms();
                    std::mem::take(&mut l.marked_not_ready)
                }
                // The node was deleted (`bramble delete node`): nothing more from this session.
                None => return Ok(()),
            };
            if came_back {
                // Heartbeats resumed after the node was marked NotReady: Ready again.
                tracing::info!(node = %name, "node Ready again");
                register(&m, &name, &info, None).await?;
                m.poke_scheduler();
            }
            match msg {
                NodeUp::Heartbeat(_) => {}
                NodeUp::Usage(u) => super::top::received(&m, &name, u).await,
                NodeUp::NetworkPath { kernel, message } => {
                    set_network_condition(&m, &name, kernel, &message).await?;
                }
                NodeUp::Conflicts(now) => {
                    conflicts = report_conflicts(&m, &name, &conflicts, now).await;
                }
                NodeUp::ArtifactGet {
                    request,
                    sha256,
                    offset,
                    len,
                } => {
                    if !may_get.contains(&sha256) && artifact_allowed(&m, &name, &sha256).await {
                        may_get.insert(sha256.clone());
                    }
                    let answer = if may_get.contains(&sha256) {
                        super::artifact::get(&m, request, sha256, offset, len).await
                    } else {
                        tracing::warn!(node = %name, %sha256, "refused an artifact none of the node's pods uses");
                        NodeDown::ArtifactChunk {
                            request,
                            data: Vec::new(),
                            error: Some(format!(
                                "forbidden: no pod on node {name} uses artifact sha256:{sha256}"
                            )),
                        }
                    };
                    let _ = tx.send(answer).await;
                }
                NodeUp::Register(new_info) if new_info.name.as_str() != name => {
                    tracing::warn!(node = %name, registered_as = %new_info.name.as_str(), "ignored a registration for another node's name");
                }
                NodeUp::Register(new_info) => {
                    register(&m, &name, &new_info, None).await?;
                    info = new_info;
                }
                NodeUp::Status(mut pods) if pods.len() == 1 => {
                    if let Some(r) = pods.pop() {
                        report_status(&m, &name, r).await?;
                    }
                }
                NodeUp::Status(pods) => {
                    // Side by side: their writes can share one transaction.
                    let tasks: Vec<_> = pods
                        .into_iter()
                        .map(|r| {
                            let (m, name) = (m.clone(), name.clone());
                            smol::spawn(async move { report_status(&m, &name, r).await })
                        })
                        .collect();
                    for t in tasks {
                        t.await?;
                    }
                }
                NodeUp::Log(chunk) => {
                    let route = {
                        let routes = m.log_routes.lock().await;
                        routes.get(&chunk.request).map(|r| (r.from(&name, session_id), r.tx.clone()))
                    };
                    match route {
                        // A slow client must not stall the node: drop chunks it cannot take.
                        Some((true, r)) if r.len() < super::LogRoute::MAX_QUEUED => {
                            let _ = r.try_send(ResponseBody::Log(chunk.data));
                        }
                        Some((false, _)) if !warned_foreign_logs => {
                            warned_foreign_logs = true;
                            tracing::warn!(node = %name, request = chunk.request, "node sent log lines for a request it was not asked: dropped (logged once per session)");
                        }
                        _ => {}
                    }
                }
                NodeUp::Exec { request, output } => {
                    super::exec::from_node(&m, &name, request, output).await;
                }
                NodeUp::LogEnd { request, error } => {
                    let route = {
                        let mut routes = m.log_routes.lock().await;
                        match routes.get(&request) {
                            Some(r) if r.from(&name, session_id) => routes.remove(&request).map(|r| r.tx),
                            _ => None,
                        }
                    };
                    if let Some(r) = route {
                        let body = match error {
                            None => ResponseBody::End,
                            Some(e) => ResponseBody::Error(bramble_wire::msg::ApiError {
                                code: bramble_wire::msg::ErrorCode::Unavailable,
                                message: e,
                            }),
                        };
                        let _ = r.send(body).await;
                    }
                }
            }
        }
    }
    .await;
    let replaced = {
        let mut nodes = m.nodes.lock().await;
        match nodes.get_mut(&name) {
            Some(l) if l.session.as_ref().is_some_and(|(id, _)| *id == session_id) => {
                l.session = None;
                false
            }
            _ => true,
        }
    };
    if !replaced {
        super::exec::node_gone(&m, &name).await;
    }
    drop(tx);
    let mut writer_task = writer_task;
    if replaced {
        // Let the writer send what it was told last (`Replaced`, an empty assignment after
        // `bramble delete node`) before the connection goes.
        async {
            (&mut writer_task).await;
        }
        .or(async {
            smol::Timer::after(Duration::from_secs(2)).await;
        })
        .await;
    }
    writer_task.cancel().await;
    tracing::info!(node = %name, "node disconnected");
    result
}

/// Allocatable resources from what a node reports: all CPUs, memory minus a small reserve for
/// the system, the pids limit.
pub fn allocatable(info: &NodeInfo) -> Resources {
    let reserve = (info.memory_bytes / 16).clamp(32 << 20, 256 << 20);
    Resources {
        cpu_millis: Some(u32::from(info.cpus) * 1000),
        memory_bytes: Some(info.memory_bytes.saturating_sub(reserve)),
        pids: Some(info.pids),
    }
}

/// Writes node `name`'s `KernelNetwork` condition (kept across registrations; the agent sends
/// it after each connect).
/// Records an event about the object and the node for each conflict `node` reports that it
/// did not report before ([`super::report::judge_conflicts`]); returns the set to remember.
async fn report_conflicts(
    m: &Master,
    node: &str,
    before: &[bramble_wire::msg::Conflict],
    now: Vec<bramble_wire::msg::Conflict>,
) -> Vec<bramble_wire::msg::Conflict> {
    use bramble_wire::msg::ConflictKind;
    m.cache.catch_up(&m.store).await;
    let uid_of = |c: &bramble_wire::msg::Conflict| match c.kind {
        ConflictKind::ServicePort => m
            .cache
            .get_typed::<bramble_wire::objects::Service>(&c.namespace, &c.name)
            .map(|s| s.meta.uid),
        ConflictKind::HostPort => m
            .cache
            .pod(&c.namespace, &c.name)
            .filter(|p| p.spec.node_name.as_deref() == Some(node) && p.meta.uid == c.uid)
            .map(|p| p.meta.uid),
    };
    let (events, kept, dropped) = super::report::judge_conflicts(node, before, now, uid_of);
    for d in dropped {
        tracing::warn!(%node, "ignored part of a conflict report: {d}");
    }
    let node_uid = m
        .cache
        .get_typed::<Node>("", node)
        .map(|n| n.meta.uid)
        .unwrap_or_default();
    for e in events {
        tracing::warn!(%node, object = %format!("{}/{}/{}", e.kind.as_str(), e.namespace, e.name), reason = e.reason, "{}", e.message);
        m.events
            .record(e.kind, &e.namespace, &e.name, &e.uid, e.reason, &e.message)
            .await;
        let about = format!(
            "{} {}/{}: {}",
            e.kind.as_str(),
            e.namespace,
            e.name,
            e.message
        );
        m.events
            .record(Kind::Node, "", node, &node_uid, e.reason, &about)
            .await;
    }
    kept
}

pub(crate) async fn set_network_condition(
    m: &Master,
    name: &str,
    kernel: bool,
    message: &str,
) -> anyhow::Result<()> {
    let message: String = message.chars().take(512).collect();
    for _ in 0..5 {
        let Some(Object::Node(n)) = super::get_opt(&m.store, Kind::Node, "", name).await? else {
            return Ok(());
        };
        let mut updated = n.clone();
        let conds = &mut updated.status.conditions;
        match conds
            .iter_mut()
            .find(|c| c.kind == ConditionKind::KernelNetwork)
        {
            Some(c) if c.status == kernel && c.message == message => return Ok(()),
            Some(c) => {
                if c.status != kernel {
                    c.since_ms = now_ms();
                }
                c.status = kernel;
                c.message = message.clone();
            }
            None => conds.push(Condition {
                kind: ConditionKind::KernelNetwork,
                status: kernel,
                message: message.clone(),
                since_ms: now_ms(),
            }),
        }
        if !kernel {
            tracing::warn!(node = %name, "node serves services from userspace only: {message}");
        }
        match m
            .store
            .update(Object::Node(updated), Some(n.meta.revision))
            .await
        {
            Ok(_) => return Ok(()),
            Err(StoreError::Conflict { .. }) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    anyhow::bail!("node {name}: could not write its network condition")
}

fn conditions(info: &NodeInfo, ready: bool, prev: &NodeStatus, now: u64) -> Vec<Condition> {
    let mem = info.controllers.has(Controllers::MEMORY);
    let mk = |kind, status, message: &str| {
        let since_ms = match prev.condition(kind) {
            Some(c) if c.status == status => c.since_ms,
            _ => now,
        };
        Condition {
            kind,
            status,
            message: message.to_string(),
            since_ms,
        }
    };
    vec![
        mk(
            ConditionKind::Ready,
            ready,
            if ready {
                "agent is heartbeating"
            } else {
                "no heartbeat within the grace period"
            },
        ),
        mk(
            ConditionKind::MemoryCgroup,
            mem,
            if mem {
                "memory cgroup controller available"
            } else {
                "memory cgroup controller missing: pods run without memory limits; add `cgroup_enable=memory` to the kernel command line (cmdline.txt on a Raspberry Pi) and reboot"
            },
        ),
    ]
    .into_iter()
    // What the agent said about its network after connecting stays.
    .chain(prev.condition(ConditionKind::KernelNetwork).cloned())
    .collect()
}

/// Creates or updates the node object; returns its pod subnet.
pub(crate) async fn register(
    m: &Master,
    name: &str,
    info: &NodeInfo,
    addr: Option<String>,
) -> anyhow::Result<String> {
    let now = now_ms();
    let (claimed, refused) = super::claims::claimed_labels(name, info);
    for why in &refused {
        tracing::warn!(node = %name, "ignored a label the node reported: {why}");
    }
    let _subnets = m.subnet_lock.lock().await;
    for _ in 0..5 {
        let existing = super::get_opt(&m.store, Kind::Node, "", name).await?;
        let (mut node, expected) = match existing {
            Some(Object::Node(n)) => {
                let rev = n.meta.revision;
                (n, Some(rev))
            }
            _ => (
                Node {
                    meta: Meta {
                        name: name.to_string(),
                        ..Default::default()
                    },
                    ..Default::default()
                },
                None,
            ),
        };
        let before = node.clone();
        let mut status = node.status.clone();
        status.conditions = conditions(info, true, &node.status, now);
        status.info = Some(Box::new(info.clone()));
        status.allocatable = allocatable(info);
        if let Some(a) = &addr {
            status.addresses = vec![a.clone()];
        }
        // The node's own tier of labels (its reports under node.bramble.io/ and the derived
        // facts); the admin's labels, taints and the rest of the spec are not the node's to set.
        node.meta.labels = super::claims::registered_labels(
            &node.meta.labels,
            before.status.info.as_deref(),
            &claimed,
        );
        node.status = status;
        if node.spec.pod_cidr.is_empty() {
            node.spec.pod_cidr = pick_subnet(m, name).await?;
        }
        let pod_cidr = node.spec.pod_cidr.clone();
        if node == before && expected.is_some() {
            return Ok(pod_cidr);
        }
        let res = match expected {
            Some(rev) => m.store.update(Object::Node(node), Some(rev)).await,
            None => m.store.create(Object::Node(node)).await,
        };
        match res {
            Ok(_) => return Ok(pod_cidr),
            Err(StoreError::Conflict { .. }) | Err(StoreError::AlreadyExists { .. }) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    anyhow::bail!("node {name}: could not register after repeated conflicting writes")
}

/// A free pod subnet for `name` (empty, with a warning, when the cluster range is full: its
/// isolated pods then wait). The caller holds `subnet_lock`; the cache is read once it holds
/// every committed write, the previous registration's included.
async fn pick_subnet(m: &Master, name: &str) -> anyhow::Result<String> {
    m.cache.catch_up(&m.store).await;
    let nodes = m.cache.list::<Node>();
    match m
        .cfg
        .cluster_cidr
        .allocate(nodes.iter().map(|n| n.spec.pod_cidr.as_str()))
    {
        Some(cidr) => {
            tracing::info!(node = %name, %cidr, "pod subnet assigned");
            Ok(cidr)
        }
        None => {
            tracing::warn!(
                node = %name,
                "the pod range is full ({} node subnets): this node's isolated pods cannot start; \
                 delete nodes that are gone (`bramble delete node NAME`) or restart the master \
                 with a larger --cluster-cidr",
                m.cfg.cluster_cidr.capacity()
            );
            Ok(String::new())
        }
    }
}

/// Writes a pod's reported status when it changed meaning (timestamps alone do not count).
/// Reads the pod from the cache (no store read); a write that finds the cache behind (conflict)
/// waits for the cache to reach the pod's revision and tries again. What may be written is
/// decided by [`super::report::judge`] (pure, fuzzed).
pub(crate) async fn report_status(m: &Master, node: &str, r: PodReport) -> anyhow::Result<()> {
    for _ in 0..5 {
        let Some(mut pod) = m.cache.pod(&r.namespace, &r.name) else {
            return Ok(()); // deleted meanwhile; the next assignment stops it
        };
        // The node's pod subnet matters only for an address (and costs a cache visit).
        let cidr = if r.status.ip.is_empty() {
            String::new()
        } else {
            m.cache
                .get_typed::<Node>("", node)
                .map(|n| n.spec.pod_cidr)
                .unwrap_or_default()
        };
        let (verdict, dropped) = super::report::judge(&pod, node, &cidr, &r.uid, r.status.clone());
        for why in dropped {
            tracing::warn!(%node, pod = %format!("{}/{}", r.namespace, r.name), "dropped from the status the node reported: {why}");
        }
        let status = match verdict {
            Verdict::BoundElsewhere => {
                tracing::warn!(%node, pod = %format!("{}/{}", r.namespace, r.name), bound_to = ?pod.spec.node_name, "ignored a status report for a pod bound elsewhere");
                return Ok(());
            }
            // A stale report about an earlier pod of the same name, or nothing new.
            Verdict::Stale | Verdict::Unchanged => return Ok(()),
            Verdict::Write(status) => status,
        };
        let rev = pod.meta.revision;
        let before = std::mem::replace(&mut pod.status, status.clone());
        match m
            .store
            .update_status(Object::Pod(pod.clone()), Some(rev))
            .await
        {
            Ok(_) => {
                let (ns, name, uid) = (&pod.meta.namespace, &pod.meta.name, &pod.meta.uid);
                for (reason, msg) in super::report::status_events(&before, &status) {
                    m.events
                        .record(Kind::Pod, ns, name, uid, reason, &msg)
                        .await;
                }
                return Ok(());
            }
            Err(StoreError::Conflict { actual, .. }) => {
                m.cache.wait_for(actual, Duration::from_secs(2)).await;
                continue;
            }
            Err(StoreError::NotFound { .. }) => return Ok(()),
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Marks nodes NotReady when they miss heartbeats for `node_grace`, and Ready again when they
/// return (the latter happens at registration). Writes only on transitions.
pub(crate) async fn lifecycle_loop(m: Arc<Master>) {
    let grace = m.cfg.node_grace.as_millis() as u64;
    let tick = Duration::from_millis((grace / 4).clamp(100, 1000));
    loop {
        smol::Timer::after(tick).await;
        let now = now_ms();
        // The cache's shared node list (rebuilt only when a node changes) and one look at the
        // live map: no store read, no per-node lock.
        let nodes = m.cache.list::<Node>();
        let silent: Vec<(Node, u64)> = {
            let live = m.nodes.lock().await;
            nodes
                .iter()
                .filter(|n| n.status.is_ready())
                .filter_map(|n| {
                    let last = live
                        .get(&n.meta.name)
                        .map(|l| l.last_seen_ms)
                        .unwrap_or(m.started_ms);
                    (now.saturating_sub(last) >= grace).then(|| (n.clone(), last))
                })
                .collect()
        };
        drop(nodes);
        for (n, last) in silent {
            let mut updated = n.clone();
            if let Some(c) = updated
                .status
                .conditions
                .iter_mut()
                .find(|c| c.kind == ConditionKind::Ready)
            {
                c.status = false;
                c.message = format!(
                    "no heartbeat for {} s (grace {} s)",
                    now.saturating_sub(last) / 1000,
                    grace / 1000
                );
                c.since_ms = now;
            }
            let rev = n.meta.revision;
            match m.store.update(Object::Node(updated), Some(rev)).await {
                Ok(written) => {
                    if let Some(l) = m.nodes.lock().await.get_mut(&n.meta.name) {
                        l.marked_not_ready = true;
                    }
                    tracing::warn!(node = %n.meta.name, "node NotReady: missed heartbeats");
                    m.events
                        .record(
                            Kind::Node,
                            "",
                            &n.meta.name,
                            &n.meta.uid,
                            "NodeNotReady",
                            "missed heartbeats for the grace period",
                        )
                        .await;
                    m.poke_scheduler();
                    // The next tick must see this write, not the node still Ready.
                    m.cache.wait_for(written, Duration::from_secs(2)).await;
                }
                Err(e) => tracing::debug!("node lifecycle: {e}"),
            }
        }
    }
}

/// Whether `node` may read the artifact tarball `sha256`: one of its pods uses it
/// ([`super::authz::node_may_get_artifact`]).
pub(crate) async fn artifact_allowed(m: &Master, node: &str, sha256: &str) -> bool {
    let pods = m.cache.pods_on(node);
    let artifacts = super::artifact::used_by(m, &pods);
    if super::authz::node_may_get_artifact(node, sha256, &pods, &artifacts) {
        return true;
    }
    let images = super::image::used_by(m, &pods);
    super::authz::node_may_get_image_layer(node, sha256, &pods, &images)
}
