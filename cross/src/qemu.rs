//! Boot a QEMU ARM guest running the cross-built `bramble-worker`, for tests.
//!
//! ```no_run
//! # fn main() -> anyhow::Result<()> {
//! use bramble_cross::qemu::{Guest, StateDisk};
//! use std::time::Duration;
//! let board = bramble_boards::find("qemu-virt-aarch64")?;
//! let disk = StateDisk::create(std::path::Path::new("/tmp/node-a.img"), 64)?;
//! let mut guest = Guest::boot(board, "target/aarch64-unknown-linux-musl/release/bramble-worker".as_ref(), 7443, "join-token", Some(&disk))?;
//! guest.wait_for("BRAMBLE-GUEST-READY", Duration::from_secs(120))?;
//! guest.kill()?; // power cut
//! # Ok(()) }
//! ```
//!
//! The guest: Debian's arm64/armhf kernel ([`crate::debian`]), an initramfs with Debian's
//! busybox-static, the worker, the token, and an `/init` that mounts proc/sys/devtmpfs/cgroup2,
//! enables `+cpu +memory +pids`, loads the virtio/ext4 modules, brings up eth0 as 192.0.2.15/24,
//! mounts the state disk (`/dev/vda`, ext4) at /var/lib/bramble-worker, prints
//! [`READY_MARKER`] and execs the worker with `--master 192.0.2.100:PORT`.
//!
//! Networking: QEMU user networking with `restrict=on` — the guest can reach nothing but
//! 192.0.2.100:PORT, which QEMU forwards (one `cross relay` process per connection, see
//! [`crate::relay`]) to 127.0.0.1:PORT on the host.

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use bramble_boards::{Board, Kind};

use crate::debian;
use crate::initramfs::Cpio;
use crate::util::{run_ok, which};

/// Printed by the guest's /init just before it execs the worker.
pub const READY_MARKER: &str = "BRAMBLE-GUEST-READY";
/// Printed by /init before it powers the guest off after a fatal setup error.
pub const FAIL_MARKER: &str = "BRAMBLE-GUEST-FAIL";
/// Prefix of the /init diagnostics lines (`BRAMBLE-CHECK key=value`).
pub const CHECK_PREFIX: &str = "BRAMBLE-CHECK ";
/// The guest's address.
pub const GUEST_IP: &str = "192.0.2.15";
/// The address the guest dials for the master (forwarded to the host's 127.0.0.1).
pub const MASTER_IP: &str = "192.0.2.100";
/// Where the state disk is mounted in the guest.
pub const STATE_DIR: &str = "/var/lib/bramble-worker";

/// How /init starts the worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkerMode {
    /// `exec` it as PID 1 (the default; when it exits the kernel panics and QEMU exits).
    Exec,
    /// Run it as a child of the /init shell, print `BRAMBLE-WORKER-EXITED status=N`, power off.
    Child,
    /// Do not start it: after the marker the guest idles (until killed) — for harness tests.
    None,
}

/// Everything that defines one guest. Build with [`GuestSpec::new`], adjust fields, [`GuestSpec::boot`].
#[derive(Debug, Clone)]
pub struct GuestSpec {
    /// A QEMU board (`kind = "qemu"`).
    pub board: Board,
    /// The cross-built worker for the board's target.
    pub worker: PathBuf,
    /// The master's port on the host's 127.0.0.1 (the guest dials 192.0.2.100:PORT).
    pub master_port: u16,
    /// Join token, written to /token in the initramfs (mode 0600).
    pub token: String,
    /// ext4 image mounted at /var/lib/bramble-worker (see [`StateDisk`]); `None`: a tmpfs.
    pub state_disk: Option<PathBuf>,
    /// `--name` of the worker (default: the board's name).
    pub node_name: String,
    /// Extra worker arguments, after the standard ones.
    pub worker_args: Vec<String>,
    /// Environment for the worker (e.g. `RUST_LOG`).
    pub env: Vec<(String, String)>,
    /// Debug step: before the worker, `echo hi from NAME | nc 192.0.2.100 PORT`, then a second
    /// connection `again from NAME` (proves the forward carries more than one connection).
    pub probe_master: bool,
    /// How the worker is started.
    pub worker_mode: WorkerMode,
    /// Shell lines /init runs after the setup, before the ready marker (e.g. to seed the
    /// state dir or start a helper); a failing line fails the boot.
    pub pre_worker: Vec<String>,
    /// Extra files for the initramfs: (absolute guest path, contents, mode). Parents are created.
    pub files: Vec<(String, Vec<u8>, u32)>,
    /// Guest RAM in MiB (default: the board's `ram_mib`), e.g. smaller for OOM scenarios.
    pub memory_mib: u32,
    /// `-smp` (default: the board's).
    pub smp: u32,
    /// The `cross` executable used as QEMU's per-connection relay (default: found next to the
    /// running executable, or `$BRAMBLE_RELAY`).
    pub relay: Option<PathBuf>,
    /// Directory for the initramfs and logs (default: `target/bramble-qemu/<name>-<pid>-<n>`).
    pub work_dir: Option<PathBuf>,
    /// Host → guest TCP forwards: (port on the host's 127.0.0.1, port on the guest's address),
    /// e.g. to reach a master running inside the guest. The network stays restricted.
    pub host_forwards: Vec<(u16, u16)>,
}

impl GuestSpec {
    /// A spec with the defaults.
    pub fn new(
        board: &Board,
        worker: &Path,
        master_port: u16,
        token: &str,
        state_disk: Option<&Path>,
    ) -> Self {
        let (memory_mib, smp) = (board.ram_mib, board.qemu.as_ref().map_or(1, |q| q.smp));
        GuestSpec {
            board: board.clone(),
            worker: worker.to_path_buf(),
            master_port,
            token: token.to_string(),
            state_disk: state_disk.map(Path::to_path_buf),
            node_name: board.name.clone(),
            worker_args: Vec::new(),
            env: vec![("RUST_LOG".into(), "info".into())],
            probe_master: false,
            worker_mode: WorkerMode::Exec,
            pre_worker: Vec::new(),
            files: Vec::new(),
            memory_mib,
            smp,
            relay: None,
            work_dir: None,
            host_forwards: Vec::new(),
        }
    }

    /// Boot it.
    pub fn boot(&self) -> Result<Guest> {
        Guest::boot_spec(self)
    }

    /// The /init script for this spec.
    pub fn init_script(&self) -> String {
        let mut s = String::from(INIT_HEAD);
        let port = self.master_port;
        let name = &self.node_name;
        if self.state_disk.is_some() {
            s.push_str(INIT_DISK);
        } else {
            s.push_str("mount -t tmpfs -o mode=0700 state /var/lib/bramble-worker || fail \"tmpfs state dir\"\ncheck state=tmpfs\n");
        }
        if self.probe_master {
            let _ = writeln!(
                s,
                "if echo \"hi from {name}\" | timeout 15 nc {MASTER_IP} {port} && echo \"again from {name}\" | timeout 15 nc {MASTER_IP} {port}; then check probe=ok; else check probe=failed; fi"
            );
        }
        for line in &self.pre_worker {
            let _ = writeln!(
                s,
                "{{ {line}\n}} || fail {}",
                sh_quote(&format!("pre-worker step: {line}"))
            );
        }
        for (k, v) in &self.env {
            let _ = writeln!(s, "export {k}={}", sh_quote(v));
        }
        let mut cmd = format!(
            "/bin/bramble-worker --master {MASTER_IP}:{port} --token-file /token --name {} --state-dir {STATE_DIR}",
            sh_quote(name)
        );
        for a in &self.worker_args {
            cmd.push(' ');
            cmd.push_str(&sh_quote(a));
        }
        let _ = writeln!(
            s,
            "check \"uptime=$(cut -d' ' -f1 /proc/uptime)\"\necho {READY_MARKER}"
        );
        match self.worker_mode {
            WorkerMode::Exec => {
                let _ = writeln!(s, "exec {cmd}");
            }
            WorkerMode::Child => {
                let _ = writeln!(
                    s,
                    "{cmd}\necho \"BRAMBLE-WORKER-EXITED status=$?\"\nsync\npoweroff -f"
                );
            }
            WorkerMode::None => s.push_str("while true; do sleep 3600; done\n"),
        }
        s
    }
}

fn sh_quote(s: &str) -> String {
    if !s.is_empty()
        && s.bytes()
            .all(|c| c.is_ascii_alphanumeric() || b"-_.,:/=+@".contains(&c))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

const INIT_HEAD: &str = r#"#!/bin/busybox sh
# Generated by bramble-cross (cross/src/qemu.rs). Fatal errors power the guest off.
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
fail() { echo "BRAMBLE-GUEST-FAIL: $*"; sync; poweroff -f; sleep 10; }
check() { echo "BRAMBLE-CHECK $*"; }
if [ ! -e /.bramble-stage2 ]; then
  # The initramfs is rootfs, which pivot_root(2) cannot leave (EINVAL): the worker's rootfs
  # pods need a real root, so copy everything to a tmpfs and switch_root into it.
  /bin/busybox --install -s
  mkdir -p /newroot
  mount -t tmpfs -o mode=0755 root /newroot || fail "mount the tmpfs root"
  for e in /*; do
    case "$e" in /newroot|/proc|/sys|/dev) ;; *) cp -a "$e" /newroot/ || fail "copy $e to the tmpfs root" ;; esac
  done
  mkdir -p /newroot/proc /newroot/sys /newroot/dev
  cp -a /dev/console /dev/null /newroot/dev/
  touch /newroot/.bramble-stage2
  exec switch_root /newroot /init
fi
mount -t proc proc /proc || fail "mount proc"
mount -t sysfs sysfs /sys || fail "mount sysfs"
mount -t devtmpfs devtmpfs /dev || fail "mount devtmpfs"
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /run
mount -t tmpfs tmpfs /tmp
check "kernel=$(uname -r) machine=$(uname -m)"
mount -t cgroup2 cgroup2 /sys/fs/cgroup || fail "mount cgroup2"
check "cgroup.controllers=$(cat /sys/fs/cgroup/cgroup.controllers)"
echo "+cpu +memory +pids" > /sys/fs/cgroup/cgroup.subtree_control || fail "enable +cpu +memory +pids"
check "cgroup.subtree_control=$(cat /sys/fs/cgroup/cgroup.subtree_control)"
for m in $(cat /lib/modules/load-order); do
  insmod /lib/modules/$m.ko || fail "insmod $m"
done
check "modules=$(cat /lib/modules/load-order | tr '\n' ' ')"
if unshare -p -f -m true; then check "unshare=ok"; else check "unshare=failed"; fi
if unshare -m sh -c 'mkdir -p /tmp/pr && mount -t tmpfs pr /tmp/pr && mkdir /tmp/pr/old && cd /tmp/pr && pivot_root . old'; then
  check "pivot_root=ok"
else
  check "pivot_root=failed"
fi
hostname "$(cat /etc/hostname)"
ip link set lo up
i=0
while [ ! -e /sys/class/net/eth0 ]; do
  i=$((i+1)); [ $i -gt 200 ] && fail "no eth0 after 20 s"; sleep 0.1
done
ip addr add 192.0.2.15/24 dev eth0 || fail "address eth0"
ip link set eth0 up || fail "eth0 up"
i=0
while [ "$(cat /sys/class/net/eth0/operstate)" != up ]; do
  i=$((i+1)); [ $i -gt 100 ] && fail "eth0 not up after 10 s"; sleep 0.1
done
check "eth0=$(cat /sys/class/net/eth0/operstate) addr=192.0.2.15/24"
mkdir -p /var/lib/bramble-worker
"#;

const INIT_DISK: &str = r#"i=0
while [ ! -b /dev/vda ]; do
  i=$((i+1)); [ $i -gt 100 ] && fail "no /dev/vda (state disk) after 10 s"; sleep 0.1
done
mount -t ext4 -o noatime /dev/vda /var/lib/bramble-worker || fail "mount /dev/vda (ext4) at /var/lib/bramble-worker"
check "state=$(grep ' /var/lib/bramble-worker ' /proc/mounts)"
"#;

/// A running QEMU guest. Dropping it kills QEMU (by PID).
#[derive(Debug)]
pub struct Guest {
    child: Option<Child>,
    pid: u32,
    dir: PathBuf,
    console: PathBuf,
    qemu_log: PathBuf,
    started: Instant,
    name: String,
    exit: Option<ExitStatus>,
}

static SEQ: AtomicU32 = AtomicU32::new(0);

impl Guest {
    /// Boot `board` with `worker_binary`, dialling the master on host port `master_port`.
    pub fn boot(
        board: &Board,
        worker_binary: &Path,
        master_port: u16,
        token: &str,
        state_disk: Option<&Path>,
    ) -> Result<Guest> {
        GuestSpec::new(board, worker_binary, master_port, token, state_disk).boot()
    }

    /// Boot from a full spec.
    pub fn boot_spec(spec: &GuestSpec) -> Result<Guest> {
        let board = &spec.board;
        if board.kind != Kind::Qemu {
            bail!(
                "board `{}` is hardware; boot its stand-in `{}` instead",
                board.name,
                board.emulated_by.as_deref().unwrap_or("qemu-virt-aarch64")
            );
        }
        let q = board.qemu()?;
        let system = which(&q.system).with_context(|| {
            format!("{} not found: apt-get install qemu-system-arm (it provides qemu-system-arm and qemu-system-aarch64)", q.system)
        })?;
        let worker = fs::read(&spec.worker).with_context(|| {
            format!(
                "read worker binary {} (build it: cargo cross build --board {})",
                spec.worker.display(),
                board.name
            )
        })?;
        let elf =
            crate::util::elf_info(&worker).with_context(|| format!("{}", spec.worker.display()))?;
        let want = match board.arch {
            bramble_boards::Arch::Aarch64 => "aarch64",
            bramble_boards::Arch::Armv7 => "arm",
        };
        if elf.arch_name() != want || elf.dynamic {
            bail!(
                "{} is a {} {} binary; board `{}` needs a static {want} one (cargo cross build --board {})",
                spec.worker.display(),
                elf.linkage(),
                elf.arch_name(),
                board.name,
                board.name
            );
        }
        if let Some(d) = &spec.state_disk
            && !d.is_file()
        {
            bail!(
                "state disk {} does not exist: create it with StateDisk::create",
                d.display()
            );
        }
        let relay = find_relay(spec.relay.as_deref())?;
        let kernel = debian::kernel(q)?;
        let busybox = debian::busybox(&q.debian_arch)?;

        let n = SEQ.fetch_add(1, Ordering::Relaxed);
        let dir = match &spec.work_dir {
            Some(d) => d.clone(),
            None => crate::util::target_dir().join("bramble-qemu").join(format!(
                "{}-{}-{n}",
                spec.node_name,
                std::process::id()
            )),
        };
        fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
        let initrd = dir.join("initrd.gz");
        build_initramfs(spec, &kernel, &busybox, &worker, &initrd)?;
        let console = dir.join("console.log");
        let qemu_log = dir.join("qemu.log");
        fs::write(&console, "")?;

        let mut append = format!("console={} panic=-1 rdinit=/init", q.console);
        for a in &board.kernel_cmdline {
            append.push(' ');
            append.push_str(a);
        }
        let port = spec.master_port;
        let netdev = format!(
            "user,id=n0,restrict=on,net=192.0.2.0/24,host=192.0.2.2,guestfwd=tcp:{MASTER_IP}:{port}-cmd:{} relay 127.0.0.1:{port}",
            relay.display()
        );
        let mut netdev = netdev;
        for (host, guest) in &spec.host_forwards {
            let _ = write!(netdev, ",hostfwd=tcp:127.0.0.1:{host}-:{guest}");
        }
        let mut cmd = Command::new(system);
        cmd.args(["-M", &q.machine, "-cpu", &q.cpu])
            .args([
                "-smp",
                &spec.smp.to_string(),
                "-m",
                &spec.memory_mib.to_string(),
            ])
            .args(["-nographic", "-no-reboot", "-monitor", "none"])
            .arg("-serial")
            .arg(format!("file:{}", console.display()))
            .arg("-kernel")
            .arg(&kernel.vmlinuz)
            .arg("-initrd")
            .arg(&initrd)
            .args(["-append", &append])
            .args(["-netdev", &netdev, "-device", "virtio-net-device,netdev=n0"])
            .args(["-device", "virtio-rng-device"]);
        if let Some(d) = &spec.state_disk {
            cmd.arg("-drive")
                .arg(format!("file={},if=none,id=d0,format=raw", d.display()))
                .args(["-device", "virtio-blk-device,drive=d0"]);
        }
        let log = fs::File::create(&qemu_log)?;
        fs::write(dir.join("qemu.cmdline"), crate::util::show(&cmd))?;
        cmd.stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        let started = Instant::now();
        let child = cmd
            .spawn()
            .with_context(|| format!("spawn {}", crate::util::show(&cmd)))?;
        Ok(Guest {
            pid: child.id(),
            child: Some(child),
            dir,
            console,
            qemu_log,
            started,
            name: spec.node_name.clone(),
            exit: None,
        })
    }

    /// QEMU's PID.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The node name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Directory with console.log, qemu.log, qemu.cmdline and the initramfs.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The console log file.
    pub fn console_path(&self) -> &Path {
        &self.console
    }

    /// Everything the guest printed on its console so far.
    pub fn console_log(&self) -> String {
        fs::read(&self.console)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// The current length of the console log: pass to [`Guest::wait_for_since`] to wait only
    /// for output printed after this point.
    pub fn mark(&self) -> usize {
        fs::metadata(&self.console).map_or(0, |m| m.len() as usize)
    }

    /// Time since QEMU was started.
    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    /// Wait until the console shows `pattern`; returns the time since QEMU started.
    /// Fails (with the console log) on timeout or if QEMU exits first.
    pub fn wait_for(&mut self, pattern: &str, timeout: Duration) -> Result<Duration> {
        self.wait_for_since(0, pattern, timeout)
    }

    /// [`Guest::wait_for`], looking only at console output after `mark` ([`Guest::mark`]).
    pub fn wait_for_since(
        &mut self,
        mark: usize,
        pattern: &str,
        timeout: Duration,
    ) -> Result<Duration> {
        let deadline = Instant::now() + timeout;
        // Scan the file incrementally (a chatty worker's log can grow large), keeping an
        // overlap so a pattern split across two reads is still found.
        let overlap = pattern.len().max(FAIL_MARKER.len());
        let mut from = mark;
        loop {
            let exited = self.try_exit()?;
            let chunk = self.read_from(from);
            if find(&chunk, pattern.as_bytes()).is_some() {
                return Ok(self.started.elapsed());
            }
            if let Some(p) = find(&chunk, FAIL_MARKER.as_bytes()) {
                let rest = String::from_utf8_lossy(&chunk[p..]);
                let line = rest.lines().next().unwrap_or_default().to_string();
                return Err(self.failure(&format!(
                    "waiting for `{pattern}`: the guest's /init failed: {line}"
                )));
            }
            if let Some(status) = exited {
                // The file was read after QEMU exited: it holds all its output.
                return Err(
                    self.failure(&format!("waiting for `{pattern}`: QEMU exited ({status})"))
                );
            }
            if Instant::now() > deadline {
                return Err(self.failure(&format!("`{pattern}` did not appear within {timeout:?}")));
            }
            from = (from + chunk.len()).saturating_sub(overlap).max(mark);
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn read_from(&self, offset: usize) -> Vec<u8> {
        use std::io::{Read, Seek, SeekFrom};
        let mut buf = Vec::new();
        if let Ok(mut f) = fs::File::open(&self.console)
            && f.seek(SeekFrom::Start(offset as u64)).is_ok()
        {
            let _ = f.read_to_end(&mut buf);
        }
        buf
    }

    /// Wait for QEMU to exit by itself (e.g. the guest powered off), up to `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> Result<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.try_exit()? {
                return Ok(s);
            }
            if Instant::now() > deadline {
                return Err(self.failure(&format!("QEMU did not exit within {timeout:?}")));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Is QEMU still running?
    pub fn is_running(&mut self) -> bool {
        matches!(self.try_exit(), Ok(None))
    }

    fn try_exit(&mut self) -> Result<Option<ExitStatus>> {
        if let Some(s) = self.exit {
            return Ok(Some(s));
        }
        if let Some(c) = self.child.as_mut()
            && let Some(s) = c.try_wait()?
        {
            self.exit = Some(s);
            return Ok(Some(s));
        }
        Ok(None)
    }

    /// Power cut: SIGKILL QEMU (by PID) and reap it. The state disk is left as a power cut
    /// leaves a real SD card (whatever the guest had not flushed is lost).
    pub fn kill(&mut self) -> Result<()> {
        if let Some(mut c) = self.child.take()
            && self.exit.is_none()
        {
            let _ = c.kill();
            self.exit = Some(c.wait()?);
        }
        Ok(())
    }

    /// Freeze the whole machine (SIGSTOP to QEMU): the network goes silent without closing
    /// connections, like a board that hangs or drops off Wi-Fi. Undo with [`Guest::resume`].
    pub fn pause(&mut self) -> Result<()> {
        self.signal("-STOP")
    }

    /// Undo [`Guest::pause`].
    pub fn resume(&mut self) -> Result<()> {
        self.signal("-CONT")
    }

    fn signal(&mut self, sig: &str) -> Result<()> {
        if self.try_exit()?.is_some() {
            bail!("guest {} is not running", self.name);
        }
        run_ok(
            Command::new("kill").args([sig, &self.pid.to_string()]),
            Duration::from_secs(10),
        )?;
        Ok(())
    }

    /// An error carrying the console log (last 200 lines) and where the logs are.
    pub fn failure(&self, what: &str) -> anyhow::Error {
        let log = self.console_log();
        let lines: Vec<&str> = log.lines().collect();
        let tail = lines[lines.len().saturating_sub(200)..].join("\n");
        let qemu = fs::read_to_string(&self.qemu_log).unwrap_or_default();
        let msg = format!(
            "guest {} (pid {}): {what}\n--- console ({}, last 200 lines) ---\n{tail}\n--- qemu ({}) ---\n{}\n--- end ---",
            self.name,
            self.pid,
            self.console.display(),
            self.qemu_log.display(),
            qemu.trim_end()
        );
        eprintln!("{msg}");
        anyhow::anyhow!(msg)
    }

    /// Lines `BRAMBLE-CHECK key=value...` printed by /init, as (key, rest of line).
    pub fn checks(&self) -> Vec<(String, String)> {
        self.console_log()
            .lines()
            .filter_map(|l| {
                l.trim_end_matches('\r')
                    .split_once(CHECK_PREFIX)
                    .map(|(_, r)| r.to_string())
            })
            .filter_map(|r| {
                r.split_once('=')
                    .map(|(k, v)| (k.to_string(), v.to_string()))
            })
            .collect()
    }

    /// The value of one `BRAMBLE-CHECK key=value`.
    pub fn check(&self, key: &str) -> Option<String> {
        self.checks()
            .into_iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v)
    }
}

impl Drop for Guest {
    fn drop(&mut self) {
        let _ = self.kill();
        let _ = fs::remove_file(self.dir.join("initrd.gz"));
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() {
        return Some(0);
    }
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn build_initramfs(
    spec: &GuestSpec,
    kernel: &debian::Kernel,
    busybox: &Path,
    worker: &[u8],
    out: &Path,
) -> Result<()> {
    let mut c = Cpio::new();
    for d in [
        "bin",
        "sbin",
        "usr",
        "usr/bin",
        "usr/sbin",
        "dev",
        "proc",
        "sys",
        "run",
        "tmp",
        "etc",
        "root",
        "lib",
        "lib/modules",
        "var",
        "var/lib",
    ] {
        c.dir(d)?;
    }
    c.char_dev("dev/console", 0o600, 5, 1)?;
    c.char_dev("dev/null", 0o666, 1, 3)?;
    c.file(
        "bin/busybox",
        0o755,
        &fs::read(busybox).with_context(|| format!("read {}", busybox.display()))?,
    )?;
    c.symlink("bin/sh", "busybox")?;
    c.file("init", 0o755, spec.init_script().as_bytes())?;
    c.file("bin/bramble-worker", 0o755, worker)?;
    c.file("token", 0o600, spec.token.as_bytes())?;
    c.file(
        "etc/passwd",
        0o644,
        b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
    )?;
    c.file("etc/group", 0o644, b"root:x:0:\nnogroup:x:65534:\n")?;
    c.file(
        "etc/hostname",
        0o644,
        format!("{}\n", spec.node_name).as_bytes(),
    )?;
    c.file(
        "etc/hosts",
        0o644,
        format!(
            "127.0.0.1 localhost\n{MASTER_IP} master\n{GUEST_IP} {}\n",
            spec.node_name
        )
        .as_bytes(),
    )?;
    // No nameserver: the restricted network reaches no DNS server (and the suite never uses a
    // real resolver). The file must exist: the worker mounts an isolated pod's cluster-DNS
    // resolv.conf over the node's, and forwards outside names to the nameservers listed here.
    c.file(
        "etc/resolv.conf",
        0o644,
        b"# bramble QEMU guest: no upstream DNS server is reachable (restricted user network)\n",
    )?;
    let mut order = String::new();
    for m in &kernel.modules {
        let name = m
            .file_stem()
            .and_then(|s| s.to_str())
            .context("module name")?;
        c.file(
            &format!("lib/modules/{name}.ko"),
            0o644,
            &fs::read(m).with_context(|| format!("read {}", m.display()))?,
        )?;
        order.push_str(name);
        order.push('\n');
    }
    c.file("lib/modules/load-order", 0o644, order.as_bytes())?;
    for (path, data, mode) in &spec.files {
        let path = path.trim_start_matches('/');
        if let Some((parent, _)) = path.rsplit_once('/') {
            c.dirs(parent)?;
        }
        c.file(path, *mode, data)?;
    }
    c.write_gz(out)
}

/// The relay program: explicit, `$BRAMBLE_RELAY`, a `cross` executable next to (or one
/// directory above) the running executable (covers `cargo run` and `cargo test`), else built
/// now with `cargo build -p bramble-cross --bin cross`.
pub fn find_relay(explicit: Option<&Path>) -> Result<PathBuf> {
    let found = explicit
        .map(Path::to_path_buf)
        .or_else(|| std::env::var_os("BRAMBLE_RELAY").map(PathBuf::from))
        .or_else(|| {
            let exe = std::env::current_exe().ok()?;
            if exe.file_name().is_some_and(|f| f == "cross") {
                return Some(exe);
            }
            let dir = exe.parent()?;
            [dir.join("cross"), dir.parent()?.join("cross")]
                .into_iter()
                .find(|p| p.is_file())
        });
    let candidate = match found {
        Some(c) => c,
        None => {
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            run_ok(
                Command::new(cargo)
                    .current_dir(crate::util::workspace_root())
                    .args(["build", "-q", "-p", "bramble-cross", "--bin", "cross"]),
                Duration::from_secs(900),
            )
            .context("building the `cross` relay (or set BRAMBLE_RELAY=/path/to/cross)")?;
            crate::util::target_dir().join("debug/cross")
        }
    };
    let s = candidate.display().to_string();
    if s.contains(',') || s.chars().any(char::is_whitespace) || s.contains('\'') || s.contains('"')
    {
        bail!(
            "relay path `{s}` contains a comma, quote or whitespace, which QEMU's -netdev cannot carry: move the target dir"
        );
    }
    if !candidate.is_file() {
        bail!("relay {s} does not exist");
    }
    Ok(candidate)
}

/// Host-side helpers for the worker's state disk (an ext4 image; needs e2fsprogs on the host).
#[derive(Debug)]
pub struct StateDisk;

impl StateDisk {
    /// Create (or recreate) an empty ext4 image of `size_mib` at `path`. Returns `path`.
    pub fn create(path: &Path, size_mib: u64) -> Result<PathBuf> {
        Self::create_from(path, size_mib, None)
    }

    /// [`StateDisk::create`], populated with the contents of the host directory `seed`
    /// (`mkfs.ext4 -d`: modes and owners kept), e.g. a master's data dir made on the host.
    pub fn create_from(path: &Path, size_mib: u64, seed: Option<&Path>) -> Result<PathBuf> {
        let mkfs = which("mkfs.ext4").or_else(|| {
            ["/sbin/mkfs.ext4", "/usr/sbin/mkfs.ext4"]
                .into_iter()
                .map(PathBuf::from)
                .find(|p| p.is_file())
        });
        let mkfs = mkfs.context("mkfs.ext4 not found: apt-get install e2fsprogs")?;
        if let Some(p) = path.parent() {
            fs::create_dir_all(p)?;
        }
        let f = fs::File::create(path).with_context(|| format!("create {}", path.display()))?;
        f.set_len(size_mib * 1024 * 1024)?;
        drop(f);
        run_ok(
            Command::new(mkfs)
                .args([
                    "-q",
                    "-F",
                    "-L",
                    "bramble-state",
                    "-E",
                    "lazy_itable_init=0,lazy_journal_init=0",
                ])
                .args(
                    seed.map(|d| [std::ffi::OsStr::new("-d"), d.as_os_str()])
                        .into_iter()
                        .flatten(),
                )
                .arg(path),
            Duration::from_secs(60),
        )?;
        Ok(path.to_path_buf())
    }

    /// The filesystem's consistency after a power cut, judged as the next boot would: on a copy
    /// of the image (the original stays as the power cut left it), `e2fsck -fp` replays the
    /// journal, then runs a full check in preen mode, which fixes only what is safe unattended.
    /// Exit 0 (clean) or 1 (the replay or preen fixed something, as after any power cut) is
    /// consistent; 4 and above means damage a boot could not repair. (A read-only `-fn` skips
    /// the journal replay and so reports metadata that is still only in the journal.) Returns
    /// e2fsck's report.
    pub fn fsck(path: &Path) -> Result<String> {
        let copy = path.with_extension("fsck-copy.img");
        let report = Self::repaired_copy(path, &copy);
        let _ = fs::remove_file(&copy);
        report
    }

    /// [`StateDisk::fsck`] on a copy made at `copy`, which is kept: the disk as the next boot
    /// would mount it (the journal replayed), for reading files with [`StateDisk::read_file`].
    pub fn repaired_copy(path: &Path, copy: &Path) -> Result<String> {
        let e2fsck = which("e2fsck").or_else(|| {
            ["/sbin/e2fsck", "/usr/sbin/e2fsck"]
                .into_iter()
                .map(PathBuf::from)
                .find(|p| p.is_file())
        });
        let e2fsck = e2fsck.context("e2fsck not found: apt-get install e2fsprogs")?;
        fs::copy(path, copy).with_context(|| format!("copy {} for the check", path.display()))?;
        let out = crate::util::run(
            Command::new(e2fsck).arg("-fp").arg(copy),
            Duration::from_secs(120),
        )?;
        match out.status.code() {
            Some(0 | 1) => Ok(format!("{}{}", out.stdout, out.stderr)),
            _ => bail!(
                "`e2fsck -fp` on a copy of {} failed ({}): the journal replay and preen could not make it consistent:\n{}{}",
                path.display(),
                out.status,
                out.stderr.trim_end(),
                out.stdout.trim_end()
            ),
        }
    }

    /// Read a file from the image without mounting it (`debugfs -R 'cat PATH'`); `path` is
    /// relative to the disk's root (= the worker's state dir).
    pub fn read_file(disk: &Path, path: &str) -> Result<Vec<u8>> {
        let debugfs = which("debugfs").or_else(|| {
            ["/sbin/debugfs", "/usr/sbin/debugfs"]
                .into_iter()
                .map(PathBuf::from)
                .find(|p| p.is_file())
        });
        let debugfs = debugfs.context("debugfs not found: apt-get install e2fsprogs")?;
        let out = Command::new(debugfs)
            .args(["-R", &format!("cat /{}", path.trim_start_matches('/'))])
            .arg(disk)
            .stderr(Stdio::piped())
            .output()?;
        let err = String::from_utf8_lossy(&out.stderr);
        if !out.status.success() || err.contains("File not found") {
            bail!("{}: cannot read {path}: {}", disk.display(), err.trim());
        }
        Ok(out.stdout)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_script_has_the_steps_and_the_worker_command() {
        let board = bramble_boards::find("qemu-virt-armv7").unwrap();
        let mut spec = GuestSpec::new(
            board,
            Path::new("/x/bramble-worker"),
            7443,
            "t0k",
            Some(Path::new("/d.img")),
        );
        spec.probe_master = true;
        spec.worker_args = vec!["--log".into(), "a b".into()];
        let s = spec.init_script();
        for want in [
            "mount -t cgroup2 cgroup2 /sys/fs/cgroup",
            "echo \"+cpu +memory +pids\" > /sys/fs/cgroup/cgroup.subtree_control",
            "unshare -p -f -m true",
            "ip addr add 192.0.2.15/24 dev eth0",
            "mount -t ext4 -o noatime /dev/vda /var/lib/bramble-worker",
            "nc 192.0.2.100 7443",
            READY_MARKER,
            "exec /bin/bramble-worker --master 192.0.2.100:7443 --token-file /token --name qemu-virt-armv7 --state-dir /var/lib/bramble-worker --log 'a b'",
        ] {
            assert!(s.contains(want), "missing `{want}` in\n{s}");
        }
        spec.state_disk = None;
        spec.worker_mode = WorkerMode::Child;
        let s = spec.init_script();
        assert!(!s.contains("/dev/vda") && s.contains("BRAMBLE-WORKER-EXITED"));
    }

    #[test]
    fn hardware_boards_cannot_boot() {
        let board = bramble_boards::find("pi4b").unwrap();
        let e = Guest::boot(board, Path::new("/nonexistent"), 1, "t", None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("boot its stand-in `qemu-virt-aarch64`"), "{e}");
    }

    #[test]
    fn a_missing_emulator_fails_with_the_package_to_install() {
        let mut board = bramble_boards::find("qemu-virt-aarch64").unwrap().clone();
        if let Some(q) = board.qemu.as_mut() {
            q.system = "qemu-system-bramble-missing".into();
        }
        let e = Guest::boot(&board, Path::new("/nonexistent"), 1, "t", None)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("qemu-system-bramble-missing not found: apt-get install qemu-system-arm"),
            "{e}"
        );
    }

    #[test]
    fn a_wrong_worker_binary_is_refused() {
        let board = bramble_boards::find("qemu-virt-armv7").unwrap();
        let me = std::env::current_exe().unwrap();
        let e = Guest::boot(board, &me, 1, "t", None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("needs a static arm one"), "{e}");
    }

    #[test]
    fn finds_patterns_in_bytes() {
        assert_eq!(find(b"abc BRAMBLE-GUEST-READY", b"READY"), Some(18));
        assert_eq!(find(b"ab", b"abc"), None);
    }

    #[test]
    fn quoting() {
        assert_eq!(sh_quote("abc-1"), "abc-1");
        assert_eq!(sh_quote("a'b"), "'a'\\''b'");
        assert_eq!(sh_quote(""), "''");
    }
}
