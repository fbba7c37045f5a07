//! Config maps and secrets to nodes: which ones a node's pods use (they travel in the node's
//! assignment; secrets separately, as `NodeDown::Secrets`, so the worker never persists them).
//! The loop that re-pushes assignments when one changes is `dispatch::config_loop`.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};

use bramble_wire::objects::{ConfigMap, Pod, Secret};

use super::Master;
use crate::config_data::Refs;

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

/// The config maps and secrets that `pods` use (those that exist), sorted by namespace and
/// name: one cache lookup per reference.
pub(crate) fn resolve(m: &Master, pods: &[Pod]) -> (Vec<ConfigMap>, Vec<Secret>) {
    let refs = Refs::of(pods);
    let cms = refs
        .config_maps
        .iter()
        .filter_map(|(ns, name)| m.cache.get_typed::<ConfigMap>(ns, name))
        .collect();
    let secrets = refs
        .secrets
        .iter()
        .filter_map(|(ns, name)| m.cache.get_typed::<Secret>(ns, name))
        .collect();
    (cms, secrets)
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
