//! The endpoints loop: follows pods, services and nodes in the master's cache, recomputes every service's
//! endpoints with the pure [`crate::controllers::endpoints::compute`] and pushes the complete set
//! to every connected worker when it changes (and to each worker when it connects). Endpoints are
//! never stored: `get endpoints` is answered from the set computed here.
//!
//! The same loop pushes every node's pod subnet and address ([`NodeDown::Network`]), computed by
//! [`crate::controllers::podnet::subnets`] from the same node cache.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use bramble_wire::msg::{NodeDown, PodSubnet};
use bramble_wire::objects::{Endpoints, Kind, Object, Service};
use futures_lite::FutureExt;

use super::Master;
use crate::cache::{Change, Delta};
use crate::controllers::endpoints::{compute, selects};
use crate::controllers::podnet;

/// Changes arriving within this window are folded into one recomputation.
const COALESCE: Duration = Duration::from_millis(20);

/// The last computed endpoints, shared with client requests and new worker sessions.
#[derive(Debug, Default)]
pub(crate) struct Current {
    set: async_lock::RwLock<Arc<Vec<Endpoints>>>,
    subnets: async_lock::RwLock<Arc<Vec<PodSubnet>>>,
}

impl Current {
    /// The whole set (cheap: shared).
    pub(crate) async fn all(&self) -> Arc<Vec<Endpoints>> {
        self.set.read().await.clone()
    }

    /// Endpoints of one namespace (or all), as objects for `List`.
    pub(crate) async fn list(&self, namespace: Option<&str>) -> Vec<Object> {
        self.all()
            .await
            .iter()
            .filter(|e| namespace.is_none_or(|ns| e.meta.namespace == ns))
            .cloned()
            .map(Object::Endpoints)
            .collect()
    }

    /// One service's endpoints, for `Get`.
    pub(crate) async fn get(&self, namespace: &str, name: &str) -> Option<Object> {
        self.all()
            .await
            .iter()
            .find(|e| e.meta.namespace == namespace && e.meta.name == name)
            .cloned()
            .map(Object::Endpoints)
    }
}

/// Sends a newly connected worker the cluster's address plan and DNS domain
/// ([`NodeDown::ClusterNetwork`], first), the pod subnets and the current endpoints (before its
/// assignment, so that its pods start with their network and the services' environment
/// variables). `own` is the node's own subnet entry, known before the loop sees the node.
pub(crate) async fn push_to(
    m: &Master,
    tx: &async_channel::Sender<NodeDown>,
    own: Option<PodSubnet>,
) {
    let mut subnets = m.endpoints.subnets.read().await.as_ref().clone();
    if let Some(own) = own {
        subnets.retain(|s| s.node != own.node);
        subnets.push(own);
        subnets.sort();
    }
    let _ = tx
        .send(NodeDown::ClusterNetwork(m.cfg.cluster_network()))
        .await;
    let _ = tx.send(NodeDown::Network(subnets)).await;
    let all = m.endpoints.all().await;
    let _ = tx.send(NodeDown::Endpoints(all.as_ref().clone())).await;
}

/// Whether a change may change endpoints or subnets: services and nodes always; a pod only
/// when a service of its namespace selects it (before or after).
fn endpoints_care(c: &Change, services: &[Service]) -> bool {
    match c.kind {
        Kind::Service | Kind::Node => true,
        Kind::Pod => {
            let (old, new) = c.pods();
            [old, new].into_iter().flatten().any(|p| {
                services
                    .iter()
                    .any(|s| s.meta.namespace == p.meta.namespace && selects(s, p))
            })
        }
        _ => false,
    }
}

fn cares(d: &Delta, m: &Master) -> bool {
    match d {
        Delta::Resync => true,
        Delta::Changes(c) => {
            let services = m.cache.list::<Service>();
            c.iter().any(|c| endpoints_care(c, &services))
        }
    }
}

/// Pushes `msgs` to every connected worker; returns the nodes whose channel was full (retried).
async fn broadcast(
    m: &Master,
    msgs: &[NodeDown],
    only: Option<&HashSet<String>>,
) -> HashSet<String> {
    let sessions: Vec<(String, async_channel::Sender<NodeDown>)> = m
        .nodes
        .lock()
        .await
        .iter()
        .filter(|(n, _)| only.is_none_or(|o| o.contains(*n)))
        .filter_map(|(n, l)| l.session.as_ref().map(|(_, tx)| (n.clone(), tx.clone())))
        .collect();
    let mut full = HashSet::new();
    for (node, tx) in sessions {
        for msg in msgs {
            match tx.try_send(msg.clone()) {
                Ok(()) => {}
                Err(async_channel::TrySendError::Full(_)) => {
                    full.insert(node);
                    break;
                }
                Err(async_channel::TrySendError::Closed(_)) => break,
            }
        }
    }
    full
}

/// Recomputes endpoints on every pod, service or node change and pushes them when they change.
pub(crate) async fn endpoints_loop(m: Arc<Master>) {
    let mut changes = m.cache.subscribe();
    let mut dirty = false;
    let mut retry: HashSet<String> = HashSet::new();
    loop {
        if dirty {
            dirty = false;
            let snap = m.cache.snapshot();
            let mut msgs = Vec::new();
            let subnets = podnet::subnets(snap.nodes.iter());
            if *m.endpoints.subnets.read().await.as_ref() != subnets {
                tracing::debug!(nodes = subnets.len(), "pod subnets changed");
                *m.endpoints.subnets.write().await = Arc::new(subnets.clone());
                msgs.push(NodeDown::Network(subnets));
            }
            let next = compute(snap.services.iter(), snap.pods.iter(), snap.nodes.iter());
            if *m.endpoints.all().await.as_ref() != next {
                let ready: usize = next.iter().map(|e| e.ready.len()).sum();
                tracing::debug!(services = next.len(), ready, "endpoints changed");
                *m.endpoints.set.write().await = Arc::new(next.clone());
                msgs.push(NodeDown::Endpoints(next));
            }
            if !msgs.is_empty() {
                retry.extend(broadcast(&m, &msgs, None).await);
            }
        }
        if !retry.is_empty() {
            // A full channel may have missed either message: send both again.
            let msgs = [
                NodeDown::Network(m.endpoints.subnets.read().await.as_ref().clone()),
                NodeDown::Endpoints(m.endpoints.all().await.as_ref().clone()),
            ];
            retry = broadcast(&m, &msgs, Some(&retry)).await;
        }
        // Wait for a change; then fold in whatever else arrives within the window.
        let wait = if retry.is_empty() {
            Duration::from_secs(3600)
        } else {
            Duration::from_millis(200)
        };
        let first = async { Some(changes.next().await) }
            .or(async {
                smol::Timer::after(wait).await;
                None
            })
            .await;
        let Some(first) = first else { continue };
        dirty |= cares(&first, &m);
        while let Some(d) = async { Some(changes.next().await) }
            .or(async {
                smol::Timer::after(COALESCE).await;
                None
            })
            .await
        {
            dirty |= cares(&d, &m);
        }
    }
}
