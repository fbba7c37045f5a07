//! Store tests on real SQLite files in temp dirs.

use std::path::Path;

use bramble_wire::msg::{ErrorCode, WatchEvent};
use bramble_wire::objects::{Kind, Meta, Node, Object, Pod};

use super::*;

fn pod(ns: &str, name: &str) -> Object {
    Object::Pod(Pod {
        meta: Meta {
            name: name.into(),
            namespace: ns.into(),
            uid: format!("uid-{name}"),
            ..Meta::default()
        },
        ..Pod::default()
    })
}

fn node(name: &str) -> Object {
    Object::Node(Node {
        meta: Meta {
            name: name.into(),
            ..Meta::default()
        },
        ..Node::default()
    })
}

fn with_label(mut obj: Object, k: &str, v: &str) -> Object {
    obj.meta_mut().labels.insert(k.into(), v.into());
    obj
}

fn small(history: u64, compact_every: u64, watch_queue: usize) -> StoreConfig {
    StoreConfig {
        history,
        compact_every,
        watch_queue,
        ..StoreConfig::default()
    }
}

async fn open(dir: &Path) -> Store {
    Store::open(dir).await.expect("open store")
}

#[test]
fn create_get_update_delete() {
    let dir = tempfile::tempdir().unwrap();
    smol::block_on(async {
        let s = open(dir.path()).await;
        assert_eq!(s.current_revision(), 0);
        let r1 = s.create(pod("default", "web")).await.unwrap();
        assert_eq!(r1, 1);
        let got = s.get(Kind::Pod, "default", "web").await.unwrap();
        assert_eq!(got.meta().revision, 1);
        assert_eq!(got.meta().uid, "uid-web");

        let e = s.create(pod("default", "web")).await.unwrap_err();
        assert!(matches!(e, StoreError::AlreadyExists { .. }), "{e}");
        assert_eq!(e.code(), ErrorCode::Conflict);
        assert!(e.to_string().contains("\"default/web\""), "{e}");

        let e = s
            .update(with_label(pod("default", "web"), "a", "b"), Some(7))
            .await
            .unwrap_err();
        assert!(
            matches!(
                e,
                StoreError::Conflict {
                    expected: 7,
                    actual: 1,
                    ..
                }
            ),
            "{e}"
        );
        let r2 = s
            .update(with_label(pod("default", "web"), "a", "b"), Some(1))
            .await
            .unwrap();
        assert_eq!(r2, 2);
        let r3 = s
            .update(with_label(pod("default", "web"), "a", "c"), None)
            .await
            .unwrap();
        assert_eq!(r3, 3);
        let got = s.get(Kind::Pod, "default", "web").await.unwrap();
        assert_eq!(got.meta().revision, 3);
        assert_eq!(got.meta().labels["a"], "c");

        let e = s.update(pod("default", "nope"), None).await.unwrap_err();
        assert!(matches!(e, StoreError::NotFound { .. }), "{e}");
        assert_eq!(e.code(), ErrorCode::NotFound);

        let e = s
            .delete(Kind::Pod, "default", "web", Some(2))
            .await
            .unwrap_err();
        assert!(
            matches!(
                e,
                StoreError::Conflict {
                    expected: 2,
                    actual: 3,
                    ..
                }
            ),
            "{e}"
        );
        assert_eq!(
            s.delete(Kind::Pod, "default", "web", Some(3))
                .await
                .unwrap(),
            4
        );
        let e = s.get(Kind::Pod, "default", "web").await.unwrap_err();
        assert!(matches!(e, StoreError::NotFound { .. }), "{e}");
        let e = s
            .delete(Kind::Pod, "default", "web", None)
            .await
            .unwrap_err();
        assert!(matches!(e, StoreError::NotFound { .. }), "{e}");
        // Re-creating a deleted object works and gets a new revision.
        assert_eq!(s.create(pod("default", "web")).await.unwrap(), 5);
        assert_eq!(s.current_revision(), 5);
        s.close().await;
    });
}

#[test]
fn invalid_keys_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    smol::block_on(async {
        let s = open(dir.path()).await;
        for obj in [
            pod("", "web"),
            pod("default", ""),
            with_ns(node("n1"), "default"),
        ] {
            let e = s.create(obj).await.unwrap_err();
            assert!(matches!(e, StoreError::Invalid { .. }), "{e}");
            assert_eq!(e.code(), ErrorCode::Invalid);
        }
        assert_eq!(s.current_revision(), 0);
        // Cluster-scoped kinds ignore the namespace on reads and deletes.
        s.create(node("n1")).await.unwrap();
        assert!(s.get(Kind::Node, "whatever", "n1").await.is_ok());
        assert!(s.delete(Kind::Node, "whatever", "n1", None).await.is_ok());
        s.close().await;
    });

    fn with_ns(mut obj: Object, ns: &str) -> Object {
        obj.meta_mut().namespace = ns.into();
        obj
    }
}

#[test]
fn list_filters_and_sorts() {
    let dir = tempfile::tempdir().unwrap();
    smol::block_on(async {
        let s = open(dir.path()).await;
        for (ns, name) in [("b", "x"), ("a", "z"), ("a", "y")] {
            s.create(pod(ns, name)).await.unwrap();
        }
        s.create(node("n1")).await.unwrap();
        let (rev, pods) = s.list(Kind::Pod, None).await.unwrap();
        assert_eq!(rev, 4);
        let names: Vec<_> = pods
            .iter()
            .map(|p| format!("{}/{}", p.meta().namespace, p.meta().name))
            .collect();
        assert_eq!(names, ["a/y", "a/z", "b/x"]);
        let (_, in_a) = s.list(Kind::Pod, Some("a")).await.unwrap();
        assert_eq!(in_a.len(), 2);
        let (_, nodes) = s.list(Kind::Node, None).await.unwrap();
        // The store gave the node its identity: a uid and a creation time.
        let got = nodes[0].meta();
        assert_eq!(got.uid.len(), 16, "{got:?}");
        assert!(got.uid.chars().all(|c| c.is_ascii_hexdigit()));
        assert!(got.created_ms > 0);
        assert_eq!(
            nodes,
            [{
                let mut n = node("n1");
                let m = n.meta_mut();
                m.revision = 4;
                m.uid = got.uid.clone();
                m.created_ms = got.created_ms;
                n
            }]
        );
        s.close().await;
    });
}

#[test]
fn reopen_keeps_everything_and_revision_continues() {
    let dir = tempfile::tempdir().unwrap();
    smol::block_on(async {
        let s = open(dir.path()).await;
        for i in 0..10 {
            s.create(pod("default", &format!("p{i}"))).await.unwrap();
        }
        s.update(with_label(pod("default", "p3"), "v", "2"), Some(4))
            .await
            .unwrap();
        s.delete(Kind::Pod, "default", "p9", None).await.unwrap();
        let (rev, before) = s.list(Kind::Pod, None).await.unwrap();
        assert_eq!(rev, 12);
        s.close().await;

        let s = open(dir.path()).await;
        assert_eq!(s.current_revision(), 12);
        let (rev2, after) = s.list(Kind::Pod, None).await.unwrap();
        assert_eq!((rev2, &after), (rev, &before));
        assert_eq!(s.create(pod("default", "p10")).await.unwrap(), 13);
        // The history survived too.
        let mut w = s.watch(None, None, 10).await.unwrap();
        assert_eq!(w.next().await.unwrap().revision, 11);
        let ev = w.next().await.unwrap();
        assert_eq!(ev.revision, 12);
        assert!(matches!(ev.event, WatchEvent::Deleted(ref o) if o.meta().name == "p9"));
        assert_eq!(w.next().await.unwrap().revision, 13);
        s.close().await;
    });
    // Dropping without close also leaves a consistent store.
    smol::block_on(async {
        let s = open(dir.path()).await;
        s.create(pod("default", "p11")).await.unwrap();
        drop(s);
        let s = open(dir.path()).await;
        assert_eq!(s.current_revision(), 14);
        s.close().await;
    });
}

#[test]
fn concurrent_updates_with_the_same_expected_revision_one_wins() {
    let dir = tempfile::tempdir().unwrap();
    smol::block_on(async {
        let s = open(dir.path()).await;
        let mut rev = s.create(pod("default", "contended")).await.unwrap();
        for round in 0..20 {
            let tasks: Vec<_> = (0..8)
                .map(|i| {
                    let s = s.clone();
                    let obj =
                        with_label(pod("default", "contended"), "by", &format!("{round}-{i}"));
                    smol::spawn(async move { s.update(obj, Some(rev)).await })
                })
                .collect();
            let mut wins = Vec::new();
            for t in tasks {
                match t.await {
                    Ok(r) => wins.push(r),
                    Err(StoreError::Conflict {
                        expected, actual, ..
                    }) => {
                        assert_eq!(expected, rev);
                        assert!(actual > rev);
                    }
                    Err(e) => panic!("unexpected error: {e}"),
                }
            }
            assert_eq!(wins.len(), 1, "round {round}: {wins:?}");
            rev = wins[0];
            assert_eq!(
                s.get(Kind::Pod, "default", "contended")
                    .await
                    .unwrap()
                    .meta()
                    .revision,
                rev
            );
        }
        s.close().await;
    });
}

#[test]
fn concurrent_creates_get_distinct_revisions() {
    let dir = tempfile::tempdir().unwrap();
    smol::block_on(async {
        let s = open(dir.path()).await;
        let tasks: Vec<_> = (0..200)
            .map(|i| {
                let s = s.clone();
                smol::spawn(async move { s.create(pod("default", &format!("p{i}"))).await })
            })
            .collect();
        let mut revs = Vec::new();
        for t in tasks {
            revs.push(t.await.unwrap());
        }
        revs.sort_unstable();
        assert_eq!(revs, (1..=200).collect::<Vec<u64>>());
        // Same name, concurrently: exactly one create wins.
        let tasks: Vec<_> = (0..5)
            .map(|_| {
                let s = s.clone();
                smol::spawn(async move { s.create(pod("default", "dup")).await })
            })
            .collect();
        let mut ok = 0;
        for t in tasks {
            match t.await {
                Ok(_) => ok += 1,
                Err(StoreError::AlreadyExists { .. }) => {}
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!(ok, 1);
        s.close().await;
    });
}

#[test]
fn watch_catches_up_then_follows_live() {
    let dir = tempfile::tempdir().unwrap();
    smol::block_on(async {
        let s = open(dir.path()).await;
        s.create(pod("a", "p1")).await.unwrap(); // 1
        s.create(node("n1")).await.unwrap(); // 2
        s.create(pod("b", "p2")).await.unwrap(); // 3
        s.update(with_label(pod("a", "p1"), "x", "y"), Some(1))
            .await
            .unwrap(); // 4

        let mut all = s.watch(None, None, 1).await.unwrap();
        let mut pods_a = s.watch(Some(Kind::Pod), Some("a".into()), 0).await.unwrap();
        for want in [2, 3, 4] {
            assert_eq!(all.next().await.unwrap().revision, want);
        }
        let ev = pods_a.next().await.unwrap();
        assert_eq!(ev.revision, 1);
        let ev = pods_a.next().await.unwrap();
        assert_eq!(ev.revision, 4);
        assert!(
            matches!(ev.event, WatchEvent::Put(ref o) if o.meta().labels["x"] == "y" && o.meta().revision == 4)
        );

        // Live.
        let s2 = s.clone();
        let writer = smol::spawn(async move {
            s2.create(pod("b", "p3")).await.unwrap(); // 5
            s2.delete(Kind::Pod, "a", "p1", None).await.unwrap(); // 6
        });
        assert_eq!(all.next().await.unwrap().revision, 5);
        let ev = all.next().await.unwrap();
        assert_eq!(ev.revision, 6);
        let ev2 = pods_a.next().await.unwrap();
        assert_eq!(ev, ev2);
        match ev.event {
            WatchEvent::Deleted(o) => {
                assert_eq!(o.meta().name, "p1");
                assert_eq!(o.meta().revision, 6);
                assert_eq!(o.meta().labels["x"], "y", "a delete carries the last state");
            }
            other => panic!("{other:?}"),
        }
        writer.await;

        // A watch from the current revision sees only what comes next; one from the future
        // skips until then.
        let mut now = s.watch(None, None, s.current_revision()).await.unwrap();
        let mut future = s.watch(None, None, 7).await.unwrap();
        s.create(pod("c", "p4")).await.unwrap(); // 7
        s.create(pod("c", "p5")).await.unwrap(); // 8
        assert_eq!(now.next().await.unwrap().revision, 7);
        assert_eq!(future.next().await.unwrap().revision, 8);

        // Closing ends watchers.
        s.close().await;
        assert_eq!(now.next().await.unwrap().revision, 8);
        assert!(matches!(now.next().await, Err(StoreError::Closed)));
    });
}

#[test]
fn watch_catch_up_spans_pages() {
    let dir = tempfile::tempdir().unwrap();
    smol::block_on(async {
        let s = open(dir.path()).await;
        for i in 0..600 {
            s.create(pod(
                if i % 2 == 0 { "even" } else { "odd" },
                &format!("p{i}"),
            ))
            .await
            .unwrap();
        }
        let mut w = s
            .watch(Some(Kind::Pod), Some("odd".into()), 0)
            .await
            .unwrap();
        for i in 0..300u64 {
            assert_eq!(w.next().await.unwrap().revision, 2 * i + 2);
        }
        s.create(pod("odd", "last")).await.unwrap();
        assert_eq!(w.next().await.unwrap().revision, 601);
        s.close().await;
    });
}

#[test]
fn compaction_bounds_history_and_old_watches_fail() {
    let dir = tempfile::tempdir().unwrap();
    smol::block_on(async {
        let s = Store::open_with(dir.path(), small(5, 5, 64)).await.unwrap();
        s.create(pod("default", "keep")).await.unwrap(); // 1, never updated
        for i in 0..30 {
            s.create(pod("default", &format!("p{i}"))).await.unwrap();
            if i % 3 == 0 {
                s.delete(Kind::Pod, "default", &format!("p{i}"), None)
                    .await
                    .unwrap();
            }
        }
        let compacted = s.compacted_revision();
        let rev = s.current_revision();
        assert!(
            compacted > 0 && compacted + 5 <= rev && rev - compacted < 5 + 5,
            "{compacted} {rev}"
        );

        let e = s.watch(None, None, 0).await.unwrap_err();
        assert!(
            matches!(e, StoreError::Compacted { requested: 0, oldest } if oldest == compacted),
            "{e}"
        );
        assert_eq!(e.code(), ErrorCode::Compacted);
        let e = s.watch(None, None, compacted - 1).await.unwrap_err();
        assert!(matches!(e, StoreError::Compacted { .. }), "{e}");

        // From the compaction point on, the history is complete.
        let mut w = s.watch(None, None, compacted).await.unwrap();
        for want in compacted + 1..=rev {
            assert_eq!(w.next().await.unwrap().revision, want);
        }
        // Current state is never compacted.
        let (_, items) = s.list(Kind::Pod, None).await.unwrap();
        assert_eq!(items.len(), 1 + 30 - 10);
        assert_eq!(
            s.get(Kind::Pod, "default", "keep")
                .await
                .unwrap()
                .meta()
                .revision,
            1
        );
        s.close().await;

        // The compaction point is durable.
        let s = Store::open_with(dir.path(), small(5, 5, 64)).await.unwrap();
        assert_eq!(s.compacted_revision(), compacted);
        assert!(matches!(
            s.watch(None, None, 0).await,
            Err(StoreError::Compacted { .. })
        ));
        let rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM log")
            .fetch_one(&s.shared.pool)
            .await
            .unwrap();
        assert!(
            rows as u64 <= 1 + 30 + (rev - compacted),
            "{rows} log rows kept"
        );
        s.close().await;
    });
}

#[test]
fn compaction_overtaking_a_catch_up_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    smol::block_on(async {
        let s = Store::open_with(dir.path(), small(300, 1, 4096))
            .await
            .unwrap();
        for i in 0..300 {
            s.create(pod("default", &format!("p{i}"))).await.unwrap();
        }
        let mut w = s.watch(None, None, 0).await.unwrap();
        assert_eq!(w.next().await.unwrap().revision, 1); // first page read
        for i in 0..300 {
            s.update(pod("default", &format!("p{i}")), None)
                .await
                .unwrap();
        }
        let mut result = Ok(());
        for _ in 0..600 {
            if let Err(e) = w.next().await {
                result = Err(e);
                break;
            }
        }
        assert!(
            matches!(result, Err(StoreError::Compacted { .. })),
            "{result:?}"
        );
        s.close().await;
    });
}

#[test]
fn lagging_watcher_is_dropped() {
    let dir = tempfile::tempdir().unwrap();
    smol::block_on(async {
        let s = Store::open_with(dir.path(), small(1000, 100, 3))
            .await
            .unwrap();
        let mut slow = s.watch(None, None, 0).await.unwrap();
        let mut other_kind = s.watch(Some(Kind::Node), None, 0).await.unwrap();
        for i in 0..10 {
            s.create(pod("default", &format!("p{i}"))).await.unwrap();
        }
        let e = slow.next().await.unwrap_err();
        assert!(matches!(e, StoreError::Lagged), "{e}");
        assert_eq!(e.code(), ErrorCode::Compacted);
        assert!(matches!(slow.next().await, Err(StoreError::Lagged)));
        // Filtered-out events do not fill a queue.
        s.create(node("n1")).await.unwrap();
        assert_eq!(other_kind.next().await.unwrap().revision, 11);
        // A fresh watch from a list works.
        let (rev, _) = s.list(Kind::Pod, None).await.unwrap();
        let mut again = s.watch(None, None, rev).await.unwrap();
        s.create(pod("default", "after")).await.unwrap();
        assert_eq!(again.next().await.unwrap().revision, 12);
        s.close().await;
    });
}

fn corrupt_check(dir: &Path, e: StoreError) {
    let db = dir.join(DB_FILE);
    match &e {
        StoreError::Corrupt { path, moved_to, .. } => {
            assert_eq!(path, &db);
            assert!(!db.exists(), "the bad file must not stay in place");
            assert!(moved_to.exists(), "{}", moved_to.display());
            assert!(
                moved_to
                    .file_name()
                    .unwrap()
                    .to_str()
                    .unwrap()
                    .starts_with("bramble.db.corrupt-")
            );
            let msg = e.to_string();
            assert!(msg.contains(&db.display().to_string()), "{msg}");
            assert!(msg.contains(&moved_to.display().to_string()), "{msg}");
            assert!(msg.contains("restore a backup"), "{msg}");
            assert_eq!(e.code(), ErrorCode::Unavailable);
        }
        other => panic!("expected Corrupt, got {other}"),
    }
}

#[test]
fn garbage_file_is_moved_aside() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join(DB_FILE);
    std::fs::write(&db, vec![0x5a; 64 * 1024]).unwrap();
    std::fs::write(dir.path().join("bramble.db-wal"), b"junk").unwrap();
    smol::block_on(async {
        let e = Store::open(dir.path()).await.unwrap_err();
        corrupt_check(dir.path(), e);
        assert!(!dir.path().join("bramble.db-wal").exists());
        // Starting again (a supervisor's restart) refuses to serve an empty store...
        for _ in 0..2 {
            let e = Store::open(dir.path()).await.unwrap_err();
            assert!(matches!(e, StoreError::CorruptKept { .. }), "{e}");
            let msg = e.to_string();
            assert!(msg.contains("REFUSING TO START"), "{msg}");
            assert!(msg.contains("bramble.db.corrupt-"), "{msg}");
            assert!(msg.contains("--accept-empty-store"), "{msg}");
            assert!(!db.exists(), "a refused start creates nothing");
        }
        // ... until told to: then an empty store next to the kept file.
        let accept = StoreConfig {
            accept_empty_store: true,
            ..StoreConfig::default()
        };
        let s = Store::open_with(dir.path(), accept).await.unwrap();
        assert_eq!(s.current_revision(), 0);
        s.create(pod("default", "p")).await.unwrap();
        s.close().await;
        // The new database is newer than the damaged file: later starts need no flag.
        let s = open(dir.path()).await;
        assert_eq!(s.current_revision(), 1);
        s.close().await;
    });
}

#[test]
fn a_restored_backup_starts_without_the_flag() {
    let dir = tempfile::tempdir().unwrap();
    let backup = tempfile::tempdir().unwrap();
    smol::block_on(async {
        let s = open(backup.path()).await;
        s.create(pod("default", "kept")).await.unwrap();
        s.close().await;
    });
    std::fs::write(dir.path().join(DB_FILE), vec![0x5a; 64 * 1024]).unwrap();
    smol::block_on(async {
        let e = Store::open(dir.path()).await.unwrap_err();
        assert!(matches!(e, StoreError::Corrupt { .. }), "{e}");
        std::fs::copy(backup.path().join(DB_FILE), dir.path().join(DB_FILE)).unwrap();
        let s = open(dir.path()).await;
        assert_eq!(s.current_revision(), 1);
        s.close().await;
    });
}

#[test]
fn data_dir_and_database_files_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join("data");
    std::fs::create_dir(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    smol::block_on(async {
        let s = open(&dir).await;
        s.create(pod("default", "p")).await.unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir), 0o700);
        for f in ["bramble.db", "bramble.db-wal", "bramble.db-shm"] {
            assert_eq!(mode(&dir.join(f)), 0o600, "{f}");
        }
        s.close().await;
    });
}

#[test]
fn damaged_pages_are_detected_by_quick_check() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join(DB_FILE);
    smol::block_on(async {
        let s = open(dir.path()).await;
        for i in 0..300 {
            let big = with_label(pod("default", &format!("p{i}")), "blob", &"x".repeat(500));
            s.create(big).await.unwrap();
        }
        s.close().await;
    });
    assert!(
        !dir.path().join("bramble.db-wal").exists(),
        "close checkpoints the wal"
    );
    let mut bytes = std::fs::read(&db).unwrap();
    assert!(bytes.len() > 16 * 4096);
    // Keep the header page; scribble over every other page's b-tree header.
    for page in (1..bytes.len() / 4096).step_by(2) {
        let off = page * 4096;
        bytes[off..off + 64].fill(0xa5);
    }
    std::fs::write(&db, bytes).unwrap();
    smol::block_on(async {
        let e = Store::open(dir.path()).await.unwrap_err();
        corrupt_check(dir.path(), e);
    });
}

#[test]
fn idle_store_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    smol::block_on(async {
        let s = open(dir.path()).await;
        s.create(pod("default", "p")).await.unwrap();
        let _ = s.list(Kind::Pod, None).await.unwrap();
        let _w = s.watch(None, None, 0).await.unwrap();
        let snapshot = || db_files(dir.path());
        let before = snapshot();
        smol::Timer::after(std::time::Duration::from_millis(1500)).await;
        assert_eq!(before, snapshot());
        s.close().await;
    });
}

/// Size and modification time of the database's files: equal before and after means no write.
type FileStamp = Option<(u64, std::time::SystemTime)>;
fn db_files(dir: &std::path::Path) -> [FileStamp; 3] {
    ["bramble.db", "bramble.db-wal", "bramble.db-shm"].map(|f| {
        std::fs::metadata(dir.join(f))
            .ok()
            .map(|m| (m.len(), m.modified().unwrap()))
    })
}

fn secret(name: &str, value: &[u8]) -> Object {
    Object::Secret(bramble_wire::objects::Secret {
        meta: Meta {
            name: name.into(),
            namespace: "default".into(),
            ..Meta::default()
        },
        data: [("password".to_string(), value.to_vec())].into(),
    })
}

async fn raw_values(s: &Store) -> Vec<String> {
    sqlx::query_scalar("SELECT value FROM log WHERE kind = 'secret' ORDER BY revision")
        .fetch_all(&s.shared.pool)
        .await
        .unwrap()
}

#[test]
fn secrets_are_sealed_at_rest() {
    let dir = tempfile::tempdir().unwrap();
    smol::block_on(async {
        let s = open(dir.path()).await;
        s.create(secret("db", b"hunter2-plain")).await.unwrap();
        s.create(pod("default", "web")).await.unwrap();
        // On disk: sealed, the value nowhere (JSON writes bytes as numbers: look for both forms).
        let raw = raw_values(&s).await;
        assert_eq!(raw.len(), 1);
        assert!(raw[0].starts_with(seal::PREFIX), "{}", raw[0]);
        let as_numbers = "104,117,110,116,101,114,50";
        assert!(!raw[0].contains("hunter2") && !raw[0].contains(as_numbers));
        let pod_json: String = sqlx::query_scalar("SELECT value FROM log WHERE kind = 'pod'")
            .fetch_one(&s.shared.pool)
            .await
            .unwrap();
        assert!(pod_json.starts_with('{'), "other kinds stay JSON");
        // Through the store: the clear value, by get, list and watch; update and delete work.
        let Object::Secret(got) = s.get(Kind::Secret, "default", "db").await.unwrap() else {
            panic!()
        };
        assert_eq!(got.data["password"], b"hunter2-plain");
        assert_eq!(s.list(Kind::Secret, None).await.unwrap().1.len(), 1);
        s.update(secret("db", b"second"), None).await.unwrap();
        let mut w = s.watch(Some(Kind::Secret), None, 0).await.unwrap();
        let first = w.next().await.unwrap();
        let WatchEvent::Put(Object::Secret(first)) = first.event else {
            panic!("{first:?}")
        };
        assert_eq!(first.data["password"], b"hunter2-plain");
        s.delete(Kind::Secret, "default", "db", None).await.unwrap();
        s.close().await;

        // A master that wrote secrets in the clear: they are sealed when the store opens.
        let s = open(dir.path()).await;
        s.create(secret("old", b"clear")).await.unwrap();
        let rev = s.current_revision() as i64;
        let clear = serde_json::to_string(&secret("old", b"clear")).unwrap();
        sqlx::query("UPDATE log SET value = ?1 WHERE revision = ?2")
            .bind(&clear)
            .bind(rev)
            .execute(&s.shared.pool)
            .await
            .unwrap();
        s.close().await;
        let s = open(dir.path()).await;
        assert!(
            raw_values(&s)
                .await
                .iter()
                .all(|v| v.starts_with(seal::PREFIX))
        );
        let Object::Secret(old) = s.get(Kind::Secret, "default", "old").await.unwrap() else {
            panic!()
        };
        assert_eq!(old.data["password"], b"clear");
        s.close().await;

        // Without its key the database refuses to open, naming the file.
        std::fs::remove_file(dir.path().join(seal::KEY_FILE)).unwrap();
        let e = Store::open(dir.path()).await.unwrap_err().to_string();
        assert!(e.contains("secrets.key") && e.contains("restore"), "{e}");
    });
}

fn ev(
    name: &str,
    uid: &str,
    reason: &str,
    message: &str,
    last_ms: u64,
) -> bramble_wire::objects::Event {
    bramble_wire::objects::Event {
        meta: Meta {
            namespace: "default".into(),
            ..Meta::default()
        },
        object_kind: Some(Kind::Pod),
        object_name: name.into(),
        reason: reason.into(),
        message: message.into(),
        count: 1,
        last_ms,
        object_uid: uid.into(),
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

#[test]
fn events_fold_per_uid_survive_a_reopen_and_move_no_revision() {
    let dir = tempfile::tempdir().unwrap();
    smol::block_on(async {
        let s = open(dir.path()).await;
        let rev = s.create(pod("default", "web")).await.unwrap();
        let t = now();
        s.record_event(ev("web", "u1", "Scheduled", "assigned to node n1", t))
            .await
            .unwrap();
        s.record_event(ev("web", "u1", "Scheduled", "assigned to node n1", t + 1))
            .await
            .unwrap();
        // Another pod of the same name (re-created): its own event, never added to the first.
        s.record_event(ev("web", "u2", "Scheduled", "assigned to node n1", t + 2))
            .await
            .unwrap();
        assert_eq!(s.current_revision(), rev, "events do not move the revision");
        let got = s.events(Some("default")).await.unwrap();
        let counts: Vec<(&str, u32)> = got
            .iter()
            .map(|e| (e.object_uid.as_str(), e.count))
            .collect();
        assert_eq!(counts, [("u1", 2), ("u2", 1)]);
        assert_ne!(got[0].meta.name, got[1].meta.name);
        assert!(s.events(Some("other")).await.unwrap().is_empty());
        assert_eq!(
            s.names_with_events(Kind::Pod).await.unwrap(),
            [("default".to_string(), "web".to_string())]
        );
        s.close().await;
        // A restart keeps them.
        let s = open(dir.path()).await;
        let again = s.events(None).await.unwrap();
        assert_eq!(again, got);
        s.close().await;
    });
}

#[test]
fn events_are_bounded_by_count_and_age_when_written() {
    let dir = tempfile::tempdir().unwrap();
    smol::block_on(async {
        let cfg = StoreConfig {
            max_events: 10,
            event_ttl: std::time::Duration::from_secs(60),
            ..StoreConfig::default()
        };
        let s = Store::open_with(dir.path(), cfg).await.unwrap();
        let t = now();
        // Older than the age bound: gone with the next write of an event.
        s.record_event(ev("old", "u0", "Started", "x", t - 120_000))
            .await
            .unwrap();
        for i in 0..25u64 {
            s.record_event(ev(
                &format!("p{i}"),
                &format!("u{i}"),
                "Started",
                "pod is running",
                t + i,
            ))
            .await
            .unwrap();
        }
        let got = s.events(None).await.unwrap();
        let names: Vec<&str> = got.iter().map(|e| e.object_name.as_str()).collect();
        let want: Vec<String> = (15..25).map(|i| format!("p{i}")).collect();
        assert_eq!(names, want, "the 10 most recently seen stay");
        s.close().await;
    });
}

#[test]
fn an_idle_store_with_events_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    smol::block_on(async {
        let cfg = StoreConfig {
            event_ttl: std::time::Duration::from_secs(1),
            ..StoreConfig::default()
        };
        let s = Store::open_with(dir.path(), cfg).await.unwrap();
        s.record_event(ev("web", "u1", "Started", "pod is running", now()))
            .await
            .unwrap();
        let snapshot = || db_files(dir.path());
        let before = snapshot();
        // The event passes its age meanwhile, but nothing removes it before the next write.
        smol::Timer::after(std::time::Duration::from_millis(1500)).await;
        assert_eq!(before, snapshot());
        assert_eq!(s.events(None).await.unwrap().len(), 1);
        s.close().await;
    });
}
