//! Tests of the cache: indexes, snapshots, list/watch ordering, subscriptions.

use std::collections::HashMap;
use std::sync::Arc;

use bramble_wire::msg::WatchEvent;
use bramble_wire::objects::{Kind, Meta, Node, Object, OwnerRef, Pod, PodPhase};

use super::{Cache, Delta};
use crate::store::Event;

fn pod(name: &str, node: Option<&str>, owner: Option<&str>, rev: u64) -> Object {
    let mut p = Pod {
        meta: Meta {
            name: name.into(),
            namespace: "default".into(),
            uid: format!("uid-{name}"),
            revision: rev,
            ..Default::default()
        },
        ..Default::default()
    };
    p.spec.node_name = node.map(str::to_string);
    if let Some(o) = owner {
        p.meta.owners.push(OwnerRef {
            kind: Kind::ReplicaSet,
            name: "rs".into(),
            uid: o.into(),
        });
    }
    Object::Pod(p)
}

fn node(name: &str, rev: u64) -> Object {
    Object::Node(Node {
        meta: Meta {
            name: name.into(),
            revision: rev,
            ..Default::default()
        },
        ..Default::default()
    })
}

fn put(o: Object) -> Event {
    Event {
        revision: o.meta().revision,
        event: WatchEvent::Put(o),
    }
}

fn del(mut o: Object, rev: u64) -> Event {
    o.meta_mut().revision = rev;
    Event {
        revision: rev,
        event: WatchEvent::Deleted(o),
    }
}

fn names(pods: &[Pod]) -> Vec<&str> {
    pods.iter().map(|p| p.meta.name.as_str()).collect()
}

#[test]
fn indexes_follow_binding_owner_and_deletion() {
    let c = Cache::new();
    c.replace_all(1, vec![node("n1", 1)]);
    let none = HashMap::new();
    c.apply(
        &[
            put(pod("a", None, Some("rs-1"), 2)),
            put(pod("b", Some("n1"), Some("rs-1"), 3)),
            put(pod("c", Some("n2"), None, 4)),
        ],
        &none,
    );
    assert!(c.has_pending_pods());
    assert_eq!(names(&c.pods_on("n1")), ["b"]);
    assert_eq!(names(&c.pods_owned_by("rs-1")), ["a", "b"]);
    // a gets bound; c moves nowhere but is deleted.
    c.apply(
        &[
            put(pod("a", Some("n1"), Some("rs-1"), 5)),
            del(pod("c", Some("n2"), None, 4), 6),
        ],
        &none,
    );
    assert!(!c.has_pending_pods());
    assert_eq!(names(&c.pods_on("n1")), ["a", "b"]);
    assert!(c.pods_on("n2").is_empty());
    assert_eq!(c.revision(), 6);
    assert!(c.pod("default", "c").is_none());
}

#[test]
fn snapshots_are_shared_until_their_kind_changes() {
    let c = Cache::new();
    c.replace_all(2, vec![node("n1", 1), pod("a", Some("n1"), None, 2)]);
    let s1 = c.snapshot();
    let s2 = c.snapshot();
    assert!(Arc::ptr_eq(&s1.pods, &s2.pods));
    c.apply(&[put(pod("b", None, None, 3))], &HashMap::new());
    let s3 = c.snapshot();
    assert!(!Arc::ptr_eq(&s1.pods, &s3.pods), "pods changed: a new list");
    assert!(Arc::ptr_eq(&s1.nodes, &s3.nodes), "nodes did not");
    assert_eq!(names(&s1.pods), ["a"], "an old snapshot does not move");
    assert_eq!(names(&s3.pods), ["a", "b"]);
    assert_eq!(s3.revision, 3);
}

#[test]
fn events_older_than_the_list_do_not_undo_it() {
    let c = Cache::new();
    // Listed at 10: a at revision 8; b created at 5 and deleted at 9 (not listed).
    c.replace_all(10, vec![pod("a", None, None, 8)]);
    let listed: HashMap<Kind, u64> = [(Kind::Pod, 10)].into();
    let changes = c.apply(
        &[
            put(pod("b", None, None, 5)),
            put(pod("a", Some("n1"), None, 7)),
            del(pod("b", None, None, 5), 9),
            put(pod("a", Some("n2"), None, 11)),
        ],
        &listed,
    );
    assert_eq!(changes.len(), 1, "{changes:?}");
    assert!(c.pod("default", "b").is_none());
    assert_eq!(
        c.pod("default", "a").unwrap().spec.node_name.as_deref(),
        Some("n2")
    );
}

#[test]
fn subscriptions_coalesce_and_start_with_a_resync() {
    let c = Cache::new();
    let mut s = c.subscribe();
    assert!(matches!(s.try_next(), Some(Delta::Resync)));
    assert!(s.try_next().is_none());
    c.replace_all(1, vec![]);
    assert!(matches!(s.try_next(), Some(Delta::Resync)));
    c.apply(&[put(pod("a", None, None, 2))], &HashMap::new());
    c.apply(&[put(pod("a", Some("n1"), None, 3))], &HashMap::new());
    match s.try_next() {
        Some(Delta::Changes(v)) => {
            assert_eq!(v.len(), 2);
            let (old, new) = v[1].pods();
            assert_eq!(old.unwrap().spec.node_name, None);
            assert_eq!(new.unwrap().spec.node_name.as_deref(), Some("n1"));
        }
        other => panic!("{other:?}"),
    }
    drop(s);
    // A dropped subscriber is forgotten.
    c.apply(&[put(pod("b", None, None, 4))], &HashMap::new());
    assert!(super::lock(&c.subs).is_empty());
}

#[test]
fn wait_for_returns_once_the_revision_is_applied() {
    let c = Cache::new();
    smol::block_on(async {
        assert!(
            !c.wait_for(0, std::time::Duration::from_millis(10)).await,
            "not synced yet"
        );
        c.replace_all(3, vec![]);
        assert!(c.wait_for(3, std::time::Duration::from_millis(10)).await);
        let c2 = c.clone();
        let t =
            smol::spawn(async move { c2.wait_for(5, std::time::Duration::from_secs(10)).await });
        smol::Timer::after(std::time::Duration::from_millis(20)).await;
        c.apply(&[put(pod("a", None, None, 5))], &HashMap::new());
        assert!(t.await);
    });
    let p = c.pod("default", "a").unwrap();
    assert_eq!(p.status.phase, PodPhase::Pending);
}

#[test]
fn lists_at_different_revisions_are_whole_only_up_to_the_oldest() {
    // Pods listed at 7, deployments at 9: a pod written at 8 is still in the watch queue, so the
    // cache may not claim 9 (catch_up would return before that pod arrives).
    let listed = HashMap::from([(Kind::Pod, 7), (Kind::Deployment, 9), (Kind::Node, 8)]);
    assert_eq!(super::whole_revision(5, &listed), 7);
    assert_eq!(super::whole_revision(5, &HashMap::new()), 5);
    assert_eq!(
        super::whole_revision(8, &HashMap::from([(Kind::Pod, 3)])),
        8
    );
}
