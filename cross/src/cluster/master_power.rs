//! A master board losing power: the master, cross-built for aarch64, runs inside a
//! `qemu-virt-aarch64` guest with its data dir on the guest's virtio state disk. The host
//! applies config maps through the real CLI (two streams side by side, over a host → guest
//! forward) and QEMU is SIGKILLed in the middle of them, at a different moment each round. The
//! next round boots the guest again on the same disk: the master opens its store (its boot runs
//! SQLite's quick check and moves a damaged file aside), and every write the CLI saw acknowledged
//! in any earlier round must be there. After each cut `e2fsck` replays the journal on a copy of
//! the disk and must find it consistent; after the last, the host's master opens the database
//! read from that copy (the same check at its boot) and lists every acknowledged write.
//!
//! A process kill of the master loses nothing (the store's own tests); this adds what a power
//! cut adds: whatever the guest kernel had not yet written to its disk is gone.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use super::{BOOT_TIMEOUT, MASTER_FLAGS, Master, free_port, host_bramble, now_ms};
use crate::build::{self, Bin};
use crate::qemu::{Guest, GuestSpec, READY_MARKER, StateDisk, WorkerMode};
use crate::util::run;

/// The guest board.
pub const BOARD: &str = "qemu-virt-aarch64";
/// The master's port inside the guest.
const GUEST_PORT: u16 = 7070;
/// The state disk's mount point in the guest (see [`crate::qemu`]); the master's data dir is
/// `master/` on it.
const GUEST_DATA: &str = "/var/lib/bramble-worker/master";
/// Apply streams run side by side (so commits meet in the store's group commit).
const STREAMS: usize = 2;

/// Options of [`master_power_cuts`].
#[derive(Debug, Clone)]
pub struct PowerCutOptions {
    /// Rounds of boot → apply stream → SIGKILL of QEMU.
    pub rounds: u32,
    /// The `cross` relay executable (see [`crate::qemu::find_relay`]).
    pub relay: Option<PathBuf>,
}

/// The rounds' outcome.
#[derive(Debug, Default)]
pub struct PowerCutReport {
    /// Rounds run.
    pub rounds: u32,
    /// Applies the CLI saw acknowledged (exit 0), over all rounds.
    pub acknowledged: usize,
    /// Applies that failed (the cut came in the middle of them): these may or may not be there.
    pub interrupted: usize,
    /// Acknowledged writes missing after a reboot (must be 0).
    pub lost: Vec<String>,
    /// QEMU start → the master answering the CLI, per boot.
    pub boot_to_api: Vec<Duration>,
}

impl std::fmt::Display for PowerCutReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut boots: Vec<f64> = self.boot_to_api.iter().map(Duration::as_secs_f64).collect();
        boots.sort_by(f64::total_cmp);
        let median = boots.get(boots.len() / 2).copied().unwrap_or_default();
        write!(
            f,
            "{} power cuts of an aarch64 master during applies: {} acknowledged writes, {} lost, {} interrupted; boot → API median {median:.1} s",
            self.rounds,
            self.acknowledged,
            self.lost.len(),
            self.interrupted
        )
    }
}

/// Run `opts.rounds` power cuts (see the module's docs). Errors name the round and carry the
/// guest's console tail.
pub fn master_power_cuts(opts: &PowerCutOptions) -> Result<PowerCutReport> {
    if opts.rounds == 0 {
        bail!("master_power_cuts: rounds must be at least 1");
    }
    let board = bramble_boards::find(BOARD)?;
    let dir = crate::util::target_dir()
        .join("bramble-qemu")
        .join(format!("master-power-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir)?;
    let bramble = host_bramble(false)?;
    // One cargo invocation per binary: together, cargo would unify their dependencies'
    // features and rebuild both, where alone each is what the rest of the suite builds.
    let path_of = |b: Bin| {
        build::build(board, true, &[b])?
            .into_iter()
            .find(|x| x.bin == b)
            .map(|x| x.path)
            .with_context(|| format!("{} was not built for {BOARD}", b.bin_name()))
    };
    let (worker, guest_master) = (path_of(Bin::Worker)?, path_of(Bin::Master)?);

    // The data dir is made by a short run of the host's master (same store format, same
    // tokens): the host keeps the admin token, the disk gets a copy.
    let seed = dir.join("seed");
    let host_data = seed.join("master");
    let mut first = Master::start(&bramble, &host_data, free_port()?)?;
    first.kill();
    let disk = StateDisk::create_from(&dir.join("master-state.img"), 256, Some(&seed))?;

    let port = free_port()?;
    let mut spec = GuestSpec::new(board, &worker, free_port()?, "unused", Some(&disk));
    spec.relay = opts.relay.clone();
    spec.node_name = "master-board".into();
    spec.worker_mode = WorkerMode::None;
    spec.host_forwards = vec![(port, GUEST_PORT)];
    spec.files.push((
        "/bin/bramble".into(),
        fs::read(&guest_master).with_context(|| format!("read {}", guest_master.display()))?,
        0o755,
    ));
    let flags = MASTER_FLAGS.join(" ");
    spec.pre_worker.push(format!(
        "RUST_LOG=info /bin/bramble master --data-dir {GUEST_DATA} --listen 0.0.0.0:{GUEST_PORT} {flags} > /dev/console 2>&1 &"
    ));

    let mut report = PowerCutReport::default();
    let mut acked: Vec<String> = Vec::new();
    for round in 0..=opts.rounds {
        let last = round == opts.rounds;
        let mut guest = spec.boot()?;
        let master = Master::attach(&bramble, port, &host_data, guest.console_path());
        let t = api_up(&mut guest, &master)
            .with_context(|| format!("round {round}: the master in the guest did not answer"))?;
        report.boot_to_api.push(t);
        if round > 0 {
            let have = configmaps(&master)
                .with_context(|| format!("round {round}: list config maps after the power cut"))?;
            let lost: Vec<String> = acked
                .iter()
                .filter(|n| !have.contains(n))
                .cloned()
                .collect();
            if !lost.is_empty() {
                report.lost.extend(lost.iter().cloned());
                return Err(guest.failure(&format!(
                    "round {round}: {} of {} acknowledged writes lost in the power cut: {}",
                    lost.len(),
                    acked.len(),
                    lost.join(", ")
                )));
            }
            eprintln!(
                "master power cut: round {round}: all {} acknowledged writes present ({} config maps)",
                acked.len(),
                have.len()
            );
        }
        if last {
            guest.kill()?;
            break;
        }
        let (ok, interrupted) = applies_until_cut(&master, &mut guest, &dir, round)?;
        eprintln!(
            "master power cut: round {}: cut after {} acknowledged applies ({} interrupted)",
            round + 1,
            ok.len(),
            interrupted
        );
        if ok.is_empty() {
            return Err(guest.failure(&format!(
                "round {}: no apply succeeded before the cut",
                round + 1
            )));
        }
        report.acknowledged += ok.len();
        report.interrupted += interrupted;
        acked.extend(ok);
        report.rounds += 1;
        StateDisk::fsck(&disk)
            .with_context(|| format!("round {}: the state disk after the cut", round + 1))?;
    }
    check_on_host(&disk, &dir, &bramble, &host_data, &acked)?;
    let _ = fs::remove_dir_all(&dir);
    Ok(report)
}

impl Master {
    /// A master this process did not start (e.g. in a guest), reached at `127.0.0.1:port` with
    /// the tokens in `data_dir`; `log` is where its output goes (a guest's console).
    pub fn attach(bramble: &Path, port: u16, data_dir: &Path, log: &Path) -> Master {
        Master {
            child: None,
            bramble: bramble.to_path_buf(),
            addr: format!("127.0.0.1:{port}"),
            port,
            data_dir: data_dir.to_path_buf(),
            log: log.to_path_buf(),
        }
    }
}

/// Wait (≤ the boot timeout + 60 s) until the guest is up and `bramble get configmaps` answers.
fn api_up(guest: &mut Guest, master: &Master) -> Result<Duration> {
    guest.wait_for(READY_MARKER, BOOT_TIMEOUT)?;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match master.cli(&["get", "configmaps", "-o", "name"]) {
            Ok((true, _, _)) => return Ok(guest.uptime()),
            Ok((false, out, err)) if Instant::now() > deadline => {
                return Err(guest.failure(&format!(
                    "`bramble get configmaps` keeps failing: {}{}",
                    err.trim(),
                    out.trim()
                )));
            }
            Err(e) if Instant::now() > deadline => return Err(guest.failure(&format!("{e:#}"))),
            _ => {}
        }
        if !guest.is_running() {
            return Err(guest.failure("QEMU exited before the master answered"));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The config maps' names (`bramble get configmaps -o name`, `configmap/NAME` each).
fn configmaps(master: &Master) -> Result<Vec<String>> {
    let out = master.ok(&["get", "configmaps", "-o", "name"])?;
    Ok(out
        .lines()
        .filter_map(|l| l.trim().rsplit('/').next())
        .filter(|n| !n.is_empty())
        .map(str::to_string)
        .collect())
}

/// [`STREAMS`] apply loops (one config map per `bramble apply`); QEMU is SIGKILLed 2-6 s after
/// the first acknowledgement. Returns the acknowledged names and the count of failed applies.
fn applies_until_cut(
    master: &Master,
    guest: &mut Guest,
    dir: &Path,
    round: u32,
) -> Result<(Vec<String>, usize)> {
    let acked = Arc::new(Mutex::new(Vec::new()));
    let failed = Arc::new(Mutex::new(0usize));
    let stop = Arc::new(AtomicBool::new(false));
    let mut threads = Vec::new();
    for s in 0..STREAMS {
        let (acked, failed, stop) = (acked.clone(), failed.clone(), stop.clone());
        let bramble = master.bramble.clone();
        let (addr, token) = (master.addr.clone(), master.data_dir.join("admin.token"));
        let file = dir.join(format!("apply-{s}.toml"));
        threads.push(std::thread::spawn(move || {
            for i in 0u32.. {
                if stop.load(Ordering::Relaxed) || i > 10_000 {
                    break;
                }
                let name = format!("cut-{round}-{s}-{i}");
                let body = format!(
                    "[[configmap]]\nname = \"{name}\"\ndata = {{ round = \"{round}\", payload = \"{}\" }}\n",
                    "x".repeat(64 + (i as usize % 7) * 100)
                );
                if fs::write(&file, body).is_err() {
                    break;
                }
                let out = run(
                    Command::new(&bramble)
                        .args(["apply", "-f"])
                        .arg(&file)
                        .env("BRAMBLE_SERVER", &addr)
                        .env("BRAMBLE_TOKEN_FILE", &token),
                    Duration::from_secs(30),
                );
                match out {
                    Ok(o) if o.status.success() => acked.lock().unwrap().push(name),
                    _ => {
                        *failed.lock().unwrap() += 1;
                        // After the cut every apply fails: stop this stream.
                        if stop.load(Ordering::Relaxed) {
                            break;
                        }
                        std::thread::sleep(Duration::from_millis(100));
                    }
                }
            }
        }));
    }
    let start = Instant::now();
    while acked.lock().unwrap().is_empty() {
        if start.elapsed() > Duration::from_secs(60) {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    // A different moment each round, not aligned with anything in the master.
    std::thread::sleep(Duration::from_millis(2_000 + now_ms() % 4_000));
    guest.kill()?;
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        let _ = t.join();
    }
    let ok = std::mem::take(&mut *acked.lock().unwrap());
    let failed = *failed.lock().unwrap();
    Ok((ok, failed))
}

/// After the last cut, on the host: a journal-replayed copy of the disk, the database and its
/// WAL read from it into a copy of the master's data dir, and the host's master started on that
/// copy. Its boot checks the file (the store's integrity check) and moves a damaged one aside:
/// it must come up with no `bramble.db.corrupt-*` beside the database and list all `acked`.
fn check_on_host(
    disk: &Path,
    dir: &Path,
    bramble: &Path,
    host_data: &Path,
    acked: &[String],
) -> Result<()> {
    let copy = dir.join("checked.img");
    StateDisk::repaired_copy(disk, &copy)?;
    let data = dir.join("checked");
    fs::create_dir_all(&data)?;
    for f in fs::read_dir(host_data)? {
        let f = f?;
        let name = f.file_name().to_string_lossy().to_string();
        if f.file_type()?.is_file() && !name.starts_with("bramble.db") {
            fs::copy(f.path(), data.join(&name))?;
        }
    }
    fs::write(
        data.join("bramble.db"),
        StateDisk::read_file(&copy, "master/bramble.db")?,
    )?;
    // The WAL holds the last commits until a checkpoint: it is part of the database.
    if let Ok(wal) = StateDisk::read_file(&copy, "master/bramble.db-wal") {
        fs::write(data.join("bramble.db-wal"), wal)?;
    }
    let _ = fs::remove_file(&copy);
    let master = Master::start(bramble, &data, free_port()?)
        .context("the host's master on the database of the last power cut")?;
    let moved: Vec<String> = fs::read_dir(&data)?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().to_string())
        .filter(|n| n.contains(".corrupt-"))
        .collect();
    if !moved.is_empty() {
        bail!(
            "the master's database after the last power cut failed its integrity check (moved aside: {moved:?}); log:\n{}",
            master.log_tail(20)
        );
    }
    let have = configmaps(&master)?;
    let lost: Vec<&String> = acked.iter().filter(|n| !have.contains(n)).collect();
    if !lost.is_empty() {
        bail!("read on the host, the database lacks acknowledged writes: {lost:?}");
    }
    Ok(())
}
