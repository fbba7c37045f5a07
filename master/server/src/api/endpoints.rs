//! The endpoints loop: follows pods, services and nodes in the store, recomputes every service's
//! endpoints with the pure [`crate::controllers::endpoints::compute`] and pushes the complete set
//! to every connected worker when it changes (and to each worker when it connects). Endpoints are
//! never stored: `get endpoints` is answered from the set computed here.
//!
//! The same loop pushes every node's pod subnet and address ([`NodeDown::Network`]), computed by
//! [`crate::controllers::podnet::subnets`] from the same node cache.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use bramble_wire::msg::{NodeDown, PodSubnet, WatchEvent};
use bramble_wire::objects::{Endpoints, Kind, Node, Object, Pod, Service};
use futures_lite::FutureExt;

use super::Master;
use crate::controllers::endpoints::compute;
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

/// Sends a newly connected worker the pod subnets and the current endpoints (before its
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
    let _ = tx.send(NodeDown::Network(subnets)).await;
    let all = m.endpoints.all().await;
    let _ = tx.send(NodeDown::Endpoints(all.as_ref().clone())).await;
}

type Key = (String, String);

#[derive(Default)]
struct Cache {
    services: BTreeMap<Key, Service>,
    pods: BTreeMap<Key, Pod>,
    nodes: BTreeMap<String, Node>,
}

impl Cache {
    /// Applies a watch event; returns whether it can change endpoints.
    fn apply(&mut self, ev: WatchEvent) -> bool {
        let (obj, deleted) = match ev {
            WatchEvent::Put(o) => (o, false),
            WatchEvent::Deleted(o) => (o, true),
        };
        let key = (obj.meta().namespace.clone(), obj.meta().name.clone());
        match obj {
            Object::Service(s) => put(&mut self.services, key, s, deleted),
            Object::Pod(p) => put(&mut self.pods, key, p, deleted),
            Object::Node(n) => put(&mut self.nodes, key.1, n, deleted),
            _ => return false,
        }
        true
    }

    fn compute(&self) -> Vec<Endpoints> {
        compute(
            self.services.values(),
            self.pods.values(),
            self.nodes.values(),
        )
    }
}

fn put<K: Ord, V>(map: &mut BTreeMap<K, V>, k: K, v: V, deleted: bool) {
    if deleted {
        map.remove(&k);
    } else {
        map.insert(k, v);
    }
}

async fn load(m: &Master) -> Result<(u64, Cache), crate::store::StoreError> {
    let from = m.store.current_revision();
    let mut c = Cache::default();
    for kind in [Kind::Service, Kind::Pod, Kind::Node] {
        let (_, objs) = m.store.list(kind, None).await?;
        for o in objs {
            c.apply(WatchEvent::Put(o));
        }
    }
    Ok((from, c))
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
    loop {
        // Watch from the revision the list was read at: nothing falls between the two.
        let (from, mut cache) = match load(&m).await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!("endpoints: {e}");
                smol::Timer::after(Duration::from_secs(1)).await;
                continue;
            }
        };
        let mut w = match m.store.watch(None, None, from).await {
            Ok(w) => w,
            Err(e) => {
                tracing::warn!("endpoints watch: {e}");
                smol::Timer::after(Duration::from_secs(1)).await;
                continue;
            }
        };
        let mut dirty = true;
        let mut retry: HashSet<String> = HashSet::new();
        loop {
            if dirty {
                dirty = false;
                let mut msgs = Vec::new();
                let subnets = podnet::subnets(cache.nodes.values());
                if *m.endpoints.subnets.read().await.as_ref() != subnets {
                    tracing::debug!(nodes = subnets.len(), "pod subnets changed");
                    *m.endpoints.subnets.write().await = Arc::new(subnets.clone());
                    msgs.push(NodeDown::Network(subnets));
                }
                let next = cache.compute();
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
            let first = async { Some(w.next().await) }
                .or(async {
                    smol::Timer::after(wait).await;
                    None
                })
                .await;
            let Some(first) = first else { continue };
            let mut ev = first;
            let mut restart = false;
            loop {
                match ev {
                    Ok(e) => dirty |= cache.apply(e.event),
                    Err(e) => {
                        // Lagged or compacted: re-list and watch again.
                        tracing::debug!("endpoints watch restarts: {e}");
                        restart = true;
                        break;
                    }
                }
                match async { Some(w.next().await) }
                    .or(async {
                        smol::Timer::after(COALESCE).await;
                        None
                    })
                    .await
                {
                    Some(next) => ev = next,
                    None => break,
                }
            }
            if restart {
                break;
            }
        }
    }
}
