//! Config maps and secrets to nodes: which ones a node's pods use (they travel in the node's
//! assignment; secrets separately, as `NodeDown::Secrets`, so the worker never persists them),
//! and the loop that re-pushes assignments when a config map or a secret changes.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;

use bramble_wire::msg::WatchEvent;
use bramble_wire::objects::{ConfigMap, Kind, Object, Pod, Secret};

use super::Master;
use crate::config_data::{Refs, select};
use crate::store::StoreError;

/// Largest master → worker frame: what the worker's reader accepts. An assignment with several
/// config maps (each up to 48 KiB) or a node's secrets exceed the 64 KiB client frame.
pub(crate) const NODE_DOWN_MAX_FRAME: usize = bramble_wire::DEFAULT_MAX_FRAME * 16;

/// A message to `node` did not fit in one frame: it is dropped (the connection stays up) and
/// the operator is told what to shrink. Names only what kind of message, never its data.
pub(crate) fn too_large(node: &str, msg: &bramble_wire::msg::NodeDown) {
    use bramble_wire::msg::NodeDown;
    let what = match msg {
        NodeDown::Assign(a) => format!(
            "the assignment ({} pods, {} config maps)",
            a.pods.len(),
            a.config_maps.len()
        ),
        NodeDown::Secrets(s) => format!("the secrets ({} of them)", s.len()),
        _ => "a message".to_string(),
    };
    tracing::error!(
        %node,
        "{what} is over the {NODE_DOWN_MAX_FRAME}-byte frame limit and was not sent: spread these pods over more nodes or use fewer or smaller config maps and secrets"
    );
}

/// The config maps and secrets that `pods` use (those that exist).
pub(crate) async fn resolve(
    m: &Master,
    pods: &[Pod],
) -> Result<(Vec<ConfigMap>, Vec<Secret>), StoreError> {
    let refs = Refs::of(pods);
    if refs.is_empty() {
        return Ok((Vec::new(), Vec::new()));
    }
    let mut all = Vec::new();
    if !refs.config_maps.is_empty() {
        all.extend(m.store.list(Kind::ConfigMap, None).await?.1);
    }
    if !refs.secrets.is_empty() {
        all.extend(m.store.list(Kind::Secret, None).await?.1);
    }
    Ok(select(&refs, all))
}

/// Folds the config maps and secrets into the assignment's hash (their revisions are enough:
/// every change bumps them; a re-created object has a new UID).
pub(crate) fn hash(pods_hash: u64, cms: &[ConfigMap], secrets: &[Secret]) -> u64 {
    let mut h = DefaultHasher::new();
    pods_hash.hash(&mut h);
    for m in cms
        .iter()
        .map(|c| &c.meta)
        .chain(secrets.iter().map(|s| &s.meta))
    {
        m.namespace.hash(&mut h);
        m.name.hash(&mut h);
        m.uid.hash(&mut h);
        m.revision.hash(&mut h);
    }
    secrets.len().hash(&mut h);
    h.finish()
}

/// Follows config map and secret changes and re-pushes every connected node's assignment; the
/// push is skipped for nodes whose set (hash) did not change, i.e. nodes that do not use it.
pub(crate) async fn config_loop(m: Arc<Master>) {
    loop {
        let from = m.store.current_revision();
        let mut w = match m.store.watch(None, None, from).await {
            Ok(w) => w,
            Err(e) => {
                tracing::warn!("config loop: {e}");
                smol::Timer::after(Duration::from_secs(1)).await;
                continue;
            }
        };
        push_all(&m).await;
        loop {
            let ev = match w.next().await {
                Ok(e) => e.event,
                Err(e) => {
                    tracing::debug!("config watch restarts: {e}");
                    break;
                }
            };
            let (WatchEvent::Put(o) | WatchEvent::Deleted(o)) = ev;
            if matches!(o, Object::ConfigMap(_) | Object::Secret(_)) {
                // Name and kind only: never the data.
                tracing::debug!(kind = o.kind().as_str(), namespace = %o.meta().namespace, name = %o.meta().name, "config changed");
                push_all(&m).await;
            }
        }
    }
}

async fn push_all(m: &Master) {
    let nodes: Vec<String> = m.nodes.lock().await.keys().cloned().collect();
    for n in nodes {
        super::dispatch::push_assignment(m, &n).await;
    }
}
