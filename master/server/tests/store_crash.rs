//! Durability under `kill -9`: a real process (`examples/store_writer.rs`) writes with several
//! concurrent writers and prints each acknowledged write; we SIGKILL it at a random moment,
//! reopen the store and check that every acknowledged write is there. Repeated on the same data
//! directory, so recovery from a crashed WAL is exercised again and again.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use bramble_server::store::Store;
use bramble_wire::objects::Kind;

const ROUNDS: u32 = 20;

/// The example binary in `<target>/<profile>/examples/`. `cargo test` builds examples, but
/// `cargo test --test store_crash` does not, and a binary left from an older build would test old
/// code: so ask cargo to bring it up to date (a no-op when it is).
fn writer_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>/deps/<test>");
    let bin = profile_dir
        .join("examples")
        .join(format!("store_writer{}", std::env::consts::EXE_SUFFIX));
    let mut cmd = Command::new(env!("CARGO"));
    cmd.args([
        "build",
        "-q",
        "-p",
        "bramble-server",
        "--example",
        "store_writer",
    ]);
    match profile_dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") | None => {}
        Some("release") => {
            cmd.arg("--release");
        }
        Some(other) => {
            cmd.args(["--profile", other]);
        }
    }
    if let Some(target_dir) = profile_dir.parent() {
        cmd.arg("--target-dir").arg(target_dir);
    }
    let status = cmd
        .status()
        .expect("run cargo to build the store_writer example");
    assert!(status.success(), "building the store_writer example failed");
    assert!(
        bin.exists(),
        "{} not found: build it with `cargo build -p bramble-server --example store_writer`",
        bin.display()
    );
    bin
}

/// A small xorshift, seeded from the clock: random kill points without a dependency.
struct Rng(u64);

impl Rng {
    fn new() -> Rng {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap();
        Rng(t.as_nanos() as u64 | 1)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

#[test]
fn acknowledged_writes_survive_sigkill() {
    let bin = writer_binary();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut rng = Rng::new();
    // name -> highest acknowledged revision, over all rounds.
    let mut acked: BTreeMap<String, u64> = BTreeMap::new();
    let mut last_max = 0u64;
    let mut total = 0usize;

    for round in 0..ROUNDS {
        let mut child = Command::new(&bin)
            .arg(dir.path())
            .arg(format!("r{round}"))
            .arg("4")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn store_writer");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel::<String>();
        let reader = std::thread::spawn(move || {
            let mut r = BufReader::new(stdout);
            let mut line = String::new();
            // Only complete lines count: a torn last line was never fully acknowledged.
            while r.read_line(&mut line).map(|n| n > 0).unwrap_or(false) {
                if line.ends_with('\n') && tx.send(line.trim_end().to_owned()).is_err() {
                    break;
                }
                line.clear();
            }
        });

        // Kill at a random point after the first acknowledgement (a hang guard, not a timing
        // assertion: the first ack normally comes within milliseconds).
        let first = rx.recv_timeout(Duration::from_secs(60));
        if first.is_ok() {
            std::thread::sleep(Duration::from_millis(rng.below(50)));
        }
        let pid = child.id();
        child.kill().expect("SIGKILL the writer");
        let status = child.wait().expect("wait for the writer");
        let first =
            first.unwrap_or_else(|_| panic!("writer {pid} acknowledged nothing ({status})"));
        // The kill landed while writes flowed: a writer that had stopped (a store error after
        // its first write, say) would leave nothing unacknowledged to lose.
        assert_eq!(
            status.signal(),
            Some(9),
            "round {round}: the writer was not writing when killed ({status})"
        );
        reader.join().expect("reader thread");

        let mut round_acks = vec![first];
        round_acks.extend(rx.try_iter());
        let mut round_max = 0;
        for line in &round_acks {
            let (name, rev) = line.split_once(' ').expect("`name revision`");
            let rev: u64 = rev.parse().expect("revision");
            assert!(
                rev > last_max,
                "round {round}: revision {rev} reused (previous max {last_max})"
            );
            round_max = round_max.max(rev);
            let e = acked.entry(name.to_owned()).or_default();
            *e = (*e).max(rev);
        }
        total += round_acks.len();
        last_max = round_max;

        smol::block_on(async {
            let store = Store::open(dir.path()).await.expect("reopen after SIGKILL");
            assert!(store.current_revision() >= last_max);
            let (_, pods) = store.list(Kind::Pod, Some("crash")).await.expect("list");
            let stored: BTreeMap<&str, u64> = pods
                .iter()
                .map(|p| (p.meta().name.as_str(), p.meta().revision))
                .collect();
            for (name, &rev) in &acked {
                let have = stored.get(name.as_str()).copied();
                // The `-0` objects are updated: a later write may have committed unacknowledged.
                let ok = if name.ends_with("-0") {
                    have >= Some(rev)
                } else {
                    have == Some(rev)
                };
                assert!(
                    ok,
                    "round {round}: acknowledged {name} at revision {rev}, store has {have:?}"
                );
            }
            store.close().await;
        });
    }
    eprintln!("{ROUNDS} SIGKILLs, {total} acknowledged writes, all present");
}

/// `kill -9` above cannot show a missing fsync: the page cache outlives the process. So watch
/// the mechanism: with one writer (one write per commit), every acknowledgement must follow a
/// completed fsync/fdatasync of the WAL since the acknowledgement before it.
#[test]
fn every_acknowledged_write_follows_a_wal_sync() {
    let bin = writer_binary();
    let dir = tempfile::tempdir().expect("tempdir");
    let trace = dir.path().join("strace.out");
    let data = dir.path().join("data");
    const WRITES: usize = 60;
    let out = Command::new("strace")
        .args(["-f", "-y", "-qq", "-e", "trace=write,fsync,fdatasync", "-o"])
        .arg(&trace)
        .arg(&bin)
        .arg(&data)
        .args(["s", "1", &WRITES.to_string()])
        .stderr(Stdio::inherit())
        .output()
        .expect("run strace (apt-get install strace)");
    assert!(out.status.success(), "store_writer under strace: {out:?}");
    let acks = String::from_utf8_lossy(&out.stdout).lines().count();
    assert_eq!(acks, WRITES, "acknowledged writes");
    let trace = std::fs::read_to_string(&trace).expect("the strace output");
    let (checked, unsynced) = acks_without_sync(&trace);
    assert_eq!(
        checked, WRITES,
        "acknowledgements seen in the trace:\n{trace}"
    );
    assert!(
        unsynced.is_empty(),
        "{} of {WRITES} acknowledgements were written with no WAL sync since the one before, e.g. {:?}",
        unsynced.len(),
        unsynced.first()
    );
}

/// Walks an `strace -f -y` trace: returns how many acknowledgements (writes to stdout) it saw,
/// and those with no completed sync of the WAL (`…-wal>`) since the previous one.
fn acks_without_sync(trace: &str) -> (usize, Vec<String>) {
    // A call split by another thread's ("<unfinished ...>" / "<... resumed>"): its start, by PID.
    let mut pending: std::collections::HashMap<String, String> = Default::default();
    let mut synced = false;
    let mut acks = 0;
    let mut unsynced = Vec::new();
    for line in trace.lines() {
        let (pid, rest) = match line.strip_prefix("[pid ") {
            Some(r) => r.split_once("] ").unwrap_or(("", r)),
            None => line.split_once(' ').unwrap_or(("", line)),
        };
        let rest = rest.trim_start();
        let call = if let Some(start) = rest.strip_suffix("<unfinished ...>") {
            pending.insert(pid.to_string(), start.to_string());
            continue;
        } else if rest.starts_with("<... ") {
            let end = rest.split_once("resumed>").map_or("", |(_, e)| e);
            format!("{}{end}", pending.remove(pid).unwrap_or_default())
        } else {
            rest.to_string()
        };
        let ok = call.contains(") = ") && !call.contains(") = -1");
        if (call.starts_with("fdatasync(") || call.starts_with("fsync("))
            && call.contains("-wal>")
            && call.trim_end().ends_with("= 0")
        {
            synced = true;
        } else if call.starts_with("write(1<") && ok {
            acks += 1;
            if !synced {
                unsynced.push(call.clone());
            }
            synced = false;
        }
    }
    (acks, unsynced)
}
