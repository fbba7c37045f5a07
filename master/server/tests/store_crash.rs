//! Durability under `kill -9`: a real process (`examples/store_writer.rs`) writes with several
//! concurrent writers and prints each acknowledged write; we SIGKILL it at a random moment,
//! reopen the store and check that every acknowledged write is there. Repeated on the same data
//! directory, so recovery from a crashed WAL is exercised again and again.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
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
    assert!(total >= ROUNDS as usize);
    eprintln!("{ROUNDS} SIGKILLs, {total} acknowledged writes, all present");
}
