//! `bramble-attack`: the adversary of the containment tests (`tests/tests/containment.rs`, the
//! QEMU scenario `cross/src/cluster/containment.rs`). Run as root inside a pod, it tries the
//! classic ways out of a container and prints one line per attack on stdout, and nothing else:
//!
//! ```text
//! NAME<TAB>RESULT<TAB>DETAIL
//! ```
//!
//! `RESULT` is `ok` when the attack got through (the kernel let it do what it tried), else the
//! errno name of the refusal (`EPERM`, `EACCES`, `EROFS`, `ENOENT`, …), or `empty` for a file
//! that opened but read nothing (a path masked with `/dev/null`). `DETAIL` says what was tried.
//! The `status.*` lines carry `/proc/self/status` fields (`status.CapBnd<TAB>00000000a80425fb`),
//! `kernel.cap_last_cap` the kernel's last capability number, and `done<TAB>ok` ends the run.
//! The judge of this output (what "contained" means per attack) is the crate's library.
//!
//! Every attack is harmless when it succeeds: values are written back unchanged (the memory
//! limit, `core_pattern`), the process moves itself back into its own cgroup, a mounted tmpfs
//! is unmounted at once, a device node is unlinked after one 512-byte read, `sysrq-trigger` and
//! `/sys` files are opened and closed without a write, the netlink probe asks for a link that
//! does not exist (no link is ever created), `finit_module` gets `/dev/null`, and the worker's
//! credential is read (one byte) but never printed.
//!
//! Usage: `bramble-attack [--state-dir DIR] [--block MAJOR:MINOR]` — the worker's state dir
//! (whose `node.credential` it tries to read) and a block device to `mknod` and read (default:
//! the first disk in `/proc/partitions`, else 7:0, `loop0`).
//!
//! This crate is the one exception to "only `worker/src/sys` holds `unsafe` or calls `libc`":
//! it is the attacker, not part of Bramble, and has to make the raw calls itself (in `sys.rs`).
#![allow(unsafe_code)]

mod sys;

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

/// What one attack got.
#[derive(Debug)]
struct Outcome {
    result: String,
    detail: String,
}

impl Outcome {
    fn ok(detail: impl Into<String>) -> Outcome {
        Outcome {
            result: "ok".into(),
            detail: detail.into(),
        }
    }

    fn refused(e: &io::Error, detail: impl Into<String>) -> Outcome {
        Outcome {
            result: err_name(e),
            detail: detail.into(),
        }
    }
}

/// The errno name of a system call's error (`EPERM`), or its text.
fn err_name(e: &io::Error) -> String {
    let Some(n) = e.raw_os_error() else {
        return e.to_string().replace(['\t', '\n'], " ");
    };
    let name = match n {
        libc::EPERM => "EPERM",
        libc::ENOENT => "ENOENT",
        libc::ESRCH => "ESRCH",
        libc::EINTR => "EINTR",
        libc::EIO => "EIO",
        libc::ENXIO => "ENXIO",
        libc::E2BIG => "E2BIG",
        libc::ENOEXEC => "ENOEXEC",
        libc::EBADF => "EBADF",
        libc::EAGAIN => "EAGAIN",
        libc::ENOMEM => "ENOMEM",
        libc::EACCES => "EACCES",
        libc::EFAULT => "EFAULT",
        libc::EBUSY => "EBUSY",
        libc::EEXIST => "EEXIST",
        libc::EXDEV => "EXDEV",
        libc::ENODEV => "ENODEV",
        libc::ENOTDIR => "ENOTDIR",
        libc::EISDIR => "EISDIR",
        libc::EINVAL => "EINVAL",
        libc::ENFILE => "ENFILE",
        libc::EMFILE => "EMFILE",
        libc::ENOTTY => "ENOTTY",
        libc::EFBIG => "EFBIG",
        libc::ENOSPC => "ENOSPC",
        libc::EROFS => "EROFS",
        libc::EPIPE => "EPIPE",
        libc::ERANGE => "ERANGE",
        libc::ENOSYS => "ENOSYS",
        libc::ENOTSUP => "EOPNOTSUPP",
        libc::ESTALE => "ESTALE",
        libc::EAFNOSUPPORT => "EAFNOSUPPORT",
        libc::EPROTONOSUPPORT => "EPROTONOSUPPORT",
        libc::EKEYREJECTED => "EKEYREJECTED",
        libc::EBADMSG => "EBADMSG",
        _ => return format!("E{n}"),
    };
    name.into()
}

/// The outcome of several tries of one attack: `ok` if any got through, else the first try's
/// refusal (the most telling one: tries are ordered that way); the detail lists every try.
fn first_through(tries: Vec<(String, io::Result<String>)>) -> Outcome {
    let detail = tries
        .iter()
        .map(|(what, r)| match r {
            Ok(how) if how.is_empty() => format!("{what}: ok"),
            Ok(how) => format!("{what}: ok ({how})"),
            Err(e) => format!("{what}: {}", err_name(e)),
        })
        .collect::<Vec<_>>()
        .join("; ");
    if tries.iter().any(|(_, r)| r.is_ok()) {
        return Outcome::ok(detail);
    }
    match tries.first() {
        Some((_, Err(e))) => Outcome::refused(e, detail),
        _ => Outcome {
            result: "ENOENT".into(),
            detail: "nothing to try".into(),
        },
    }
}

/// Reads `path` and writes the same bytes back (the harmless proof of write access).
fn write_back(path: &Path) -> io::Result<String> {
    let value = fs::read(path)?;
    let mut f = OpenOptions::new().write(true).open(path)?;
    f.write_all(&value)?;
    Ok(format!(
        "wrote back {:?}",
        String::from_utf8_lossy(&value).trim()
    ))
}

/// A cgroup hierarchy as this process sees it.
#[derive(Debug, Clone)]
struct CgMount {
    /// The cgroup path of the mount's root (`/` unless a subtree is mounted).
    root: String,
    mountpoint: PathBuf,
    v2: bool,
    /// A v1 mount's super options (`rw,memory`, `rw,name=systemd`).
    options: String,
}

fn cgroup_mounts() -> Vec<CgMount> {
    let text = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut out: Vec<CgMount> = Vec::new();
    for line in text.lines() {
        let Some((pre, post)) = line.split_once(" - ") else {
            continue;
        };
        let pre: Vec<&str> = pre.split(' ').collect();
        let post: Vec<&str> = post.split(' ').collect();
        let (Some(root), Some(mp), Some(fstype)) = (pre.get(3), pre.get(4), post.first()) else {
            continue;
        };
        if *fstype != "cgroup" && *fstype != "cgroup2" {
            continue;
        }
        let m = CgMount {
            root: root.to_string(),
            mountpoint: PathBuf::from(mp),
            v2: *fstype == "cgroup2",
            options: post.get(2).unwrap_or(&"").to_string(),
        };
        // A later mount on the same point hides the earlier one.
        out.retain(|o| o.mountpoint != m.mountpoint);
        out.push(m);
    }
    out
}

/// This process's cgroups: (controllers, path) per `/proc/self/cgroup` line (`""` for v2).
fn self_cgroups() -> Vec<(String, String)> {
    fs::read_to_string("/proc/self/cgroup")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let mut it = l.splitn(3, ':');
            let _id = it.next()?;
            Some((it.next()?.to_string(), it.next()?.to_string()))
        })
        .collect()
}

impl CgMount {
    /// Whether this hierarchy is the one of a `/proc/self/cgroup` line's controllers.
    fn holds(&self, controllers: &str) -> bool {
        if self.v2 {
            return controllers.is_empty();
        }
        !controllers.is_empty()
            && controllers
                .split(',')
                .all(|c| self.options.split(',').any(|o| o == c))
    }

    /// The directory of cgroup `path` under this mount, if it is visible there.
    fn dir_of(&self, path: &str) -> Option<PathBuf> {
        let rel = if self.root == "/" {
            path
        } else {
            path.strip_prefix(self.root.as_str())?
        };
        Some(self.mountpoint.join(rel.trim_start_matches('/')))
    }
}

/// This process's own cgroup directory in each visible hierarchy: (mount, own dir).
fn own_cgroup_dirs() -> Vec<(CgMount, PathBuf)> {
    let mounts = cgroup_mounts();
    let mut out = Vec::new();
    for (controllers, path) in self_cgroups() {
        for m in mounts.iter().filter(|m| m.holds(&controllers)) {
            if let Some(d) = m.dir_of(&path) {
                out.push((m.clone(), d));
            }
        }
    }
    out
}

/// Whether a memory limit file's value is a limit (not `max` / the v1 "unlimited" number).
fn is_limited(value: &str) -> bool {
    let v = value.trim();
    v != "max" && v.parse::<u64>().is_ok_and(|n| n < 1 << 62)
}

/// Write the pod's own memory limit (the same value back).
fn memory_limit() -> Outcome {
    let mut files: Vec<PathBuf> = Vec::new();
    for (m, own) in own_cgroup_dirs() {
        let name = if m.v2 {
            "memory.max"
        } else if m.options.split(',').any(|o| o == "memory") {
            "memory.limit_in_bytes"
        } else {
            continue;
        };
        // The nearest limited one from the own cgroup up to the mount's root: the pod's limit
        // (a v2 pod's processes sit in a leaf below the cgroup carrying it).
        let mut chain = Vec::new();
        let mut d = own.as_path();
        loop {
            chain.push(d.join(name));
            if d == m.mountpoint {
                break;
            }
            match d.parent() {
                Some(p) if p.starts_with(&m.mountpoint) => d = p,
                _ => break,
            }
        }
        let pick = chain
            .iter()
            .find(|f| fs::read_to_string(f).is_ok_and(|v| is_limited(&v)))
            .or_else(|| chain.iter().find(|f| f.exists()));
        if let Some(f) = pick {
            files.push(f.clone());
        }
    }
    for f in [
        "/sys/fs/cgroup/memory.max",
        "/sys/fs/cgroup/memory/memory.limit_in_bytes",
    ] {
        let f = PathBuf::from(f);
        if !files.contains(&f) {
            files.push(f);
        }
    }
    first_through(
        files
            .into_iter()
            .map(|f| (f.display().to_string(), write_back(&f)))
            .collect(),
    )
}

/// Move this process into another cgroup (each hierarchy's root), then back.
fn cgroup_procs() -> Outcome {
    let pid = std::process::id().to_string();
    let own = own_cgroup_dirs();
    let mut tries = Vec::new();
    let mut targets: Vec<(PathBuf, Option<PathBuf>)> = cgroup_mounts()
        .into_iter()
        .map(|m| {
            let back = own
                .iter()
                .find(|(o, _)| o.mountpoint == m.mountpoint)
                .map(|(_, d)| d.join("cgroup.procs"));
            (m.mountpoint.join("cgroup.procs"), back)
        })
        .collect();
    // Another cgroup first: a hierarchy whose root is this process's own cgroup (a cgroup
    // namespace's view) only proves write access to the file system, not a way out.
    targets.sort_by_key(|(t, back)| back.as_ref() == Some(t));
    if targets.is_empty() {
        targets.push(("/sys/fs/cgroup/cgroup.procs".into(), None));
    }
    for (target, back) in targets {
        let r = OpenOptions::new()
            .write(true)
            .open(&target)
            .and_then(|mut f| f.write_all(pid.as_bytes()));
        let r = r.map(|()| match &back {
            Some(b) => match OpenOptions::new()
                .write(true)
                .open(b)
                .and_then(|mut f| f.write_all(pid.as_bytes()))
            {
                Ok(()) => format!("moved back to {}", b.display()),
                Err(e) => format!("could not move back to {}: {}", b.display(), err_name(&e)),
            },
            None => "own cgroup not visible: stayed".into(),
        });
        let through = r.is_ok();
        tries.push((target.display().to_string(), r));
        if through {
            break;
        }
    }
    first_through(tries)
}

/// The "shocker": `open_by_handle_at` on the root file system, with the real handle of `/` and
/// with a guessed handle of inode 2.
fn open_by_handle() -> Outcome {
    let mount = match File::open("/") {
        Ok(f) => f,
        Err(e) => return Outcome::refused(&e, "open /"),
    };
    let mut tries = Vec::new();
    tries.push((
        "guessed handle of inode 2".to_string(),
        sys::open_by_handle(&mount, &sys::FileHandle::guess(2)).map(|_| String::new()),
    ));
    match sys::name_to_handle(Path::new("/")) {
        Ok(h) => tries.push((
            "name_to_handle_at(/) then open_by_handle_at".into(),
            sys::open_by_handle(&mount, &h).map(|_| String::new()),
        )),
        Err(e) => tries.push(("name_to_handle_at(/)".into(), Err(e))),
    }
    first_through(tries)
}

/// Mount a tmpfs (on a fresh directory under `/tmp`, else on `/tmp`), then unmount it.
fn mount() -> Outcome {
    let dir = PathBuf::from(format!("/tmp/bramble-attack-mnt-{}", std::process::id()));
    let made = fs::create_dir(&dir).is_ok();
    let at = if made {
        dir.clone()
    } else {
        PathBuf::from("/tmp")
    };
    let r = sys::mount_tmpfs(&at).map(|()| match sys::umount(&at) {
        Ok(()) => "unmounted".to_string(),
        Err(e) => format!("could not unmount: {}", err_name(&e)),
    });
    if made {
        let _ = fs::remove_dir(&dir);
    }
    first_through(vec![(format!("tmpfs on {}", at.display()), r)])
}

/// Open `/proc/sys/kernel/core_pattern` for writing (and write its own value back).
fn core_pattern() -> Outcome {
    let p = Path::new("/proc/sys/kernel/core_pattern");
    first_through(vec![(p.display().to_string(), write_back(p))])
}

/// List the worker's state dir.
fn state_dir(dir: Option<&Path>) -> Outcome {
    let Some(dir) = dir else {
        return Outcome {
            result: "not-run".into(),
            detail: "no --state-dir given".into(),
        };
    };
    let r = fs::read_dir(dir).map(|rd| format!("{} entries", rd.count()));
    first_through(vec![(format!("read_dir {}", dir.display()), r)])
}

/// Read (one byte of) the worker's node credential. Never printed.
fn node_credential(dir: Option<&Path>) -> Outcome {
    let Some(dir) = dir else {
        return Outcome {
            result: "not-run".into(),
            detail: "no --state-dir given".into(),
        };
    };
    let p = dir.join("node.credential");
    let r = File::open(&p).and_then(|mut f| {
        let mut b = [0u8; 1];
        f.read(&mut b).map(|n| format!("read {n} byte"))
    });
    first_through(vec![(p.display().to_string(), r)])
}

/// The first disk of `/proc/partitions` (not a loop, ram or zram device), as `major:minor`.
fn first_disk() -> Option<(u32, u32)> {
    let text = fs::read_to_string("/proc/partitions").ok()?;
    text.lines().skip(1).find_map(|l| {
        let w: Vec<&str> = l.split_whitespace().collect();
        let name = *w.get(3)?;
        if ["loop", "ram", "zram"].iter().any(|p| name.starts_with(p)) {
            return None;
        }
        Some((w[0].parse().ok()?, w[1].parse().ok()?))
    })
}

/// `mknod` a block device (in `/dev`, else `/tmp`) and read its first 512 bytes.
fn mknod_block(dev: (u32, u32)) -> Outcome {
    let (major, minor) = dev;
    let name = format!("bramble-attack-blk-{}", std::process::id());
    let mut tries = Vec::new();
    for dir in ["/dev", "/tmp"] {
        let node = Path::new(dir).join(&name);
        let what = format!("mknod {} {major}:{minor}", node.display());
        if let Err(e) = sys::mknod_block(&node, major, minor) {
            // Refused here: maybe allowed in the other directory.
            tries.push((what, Err(e)));
            continue;
        }
        let r = File::open(&node).and_then(|mut f| {
            let mut b = [0u8; 512];
            f.read(&mut b).map(|n| format!("read {n} bytes"))
        });
        let _ = fs::remove_file(&node);
        tries.push((format!("{what} (made), open and read"), r));
        break;
    }
    first_through(tries)
}

/// `ip link`-style change in this network namespace: an `RTM_NEWLINK` that only asks for a
/// link that does not exist (see [`sys::rtm_newlink_probe`]).
fn netlink_newlink() -> Outcome {
    match sys::rtm_newlink_probe() {
        Ok(0) => Outcome::ok("RTM_NEWLINK accepted"),
        Ok(e) if e == libc::EPERM || e == libc::EACCES => Outcome::refused(
            &io::Error::from_raw_os_error(e),
            "RTM_NEWLINK refused before the kernel looked at it (no CAP_NET_ADMIN)",
        ),
        Ok(e) => Outcome::ok(format!(
            "RTM_NEWLINK passed the CAP_NET_ADMIN check: the kernel answered {} for the missing link",
            err_name(&io::Error::from_raw_os_error(e))
        )),
        Err(e) => Outcome::refused(&e, "socket(AF_NETLINK, NETLINK_ROUTE)"),
    }
}

/// `finit_module` of `/dev/null`: `EPERM` is the refusal; anything else got past it.
fn module_load() -> Outcome {
    let f = match File::open("/dev/null") {
        Ok(f) => f,
        Err(e) => return Outcome::refused(&e, "open /dev/null"),
    };
    match sys::finit_module(&f) {
        Ok(()) => Outcome::ok("finit_module(/dev/null) loaded something"),
        Err(e) => Outcome::refused(&e, "finit_module(/dev/null)"),
    }
}

/// Open `/proc/sysrq-trigger` for writing (closed without a write).
fn sysrq_trigger() -> Outcome {
    let r = OpenOptions::new()
        .write(true)
        .open("/proc/sysrq-trigger")
        .map(|_| "opened for writing, nothing written".to_string());
    first_through(vec![("/proc/sysrq-trigger".into(), r)])
}

/// Read the kernel's memory through `/proc/kcore` (its ELF header): `empty` when masked.
fn kcore_read() -> Outcome {
    let r = File::open("/proc/kcore").and_then(|mut f| {
        let mut b = [0u8; 64];
        f.read(&mut b)
    });
    match r {
        Ok(0) => Outcome {
            result: "empty".into(),
            detail: "/proc/kcore reads nothing (masked)".into(),
        },
        Ok(n) => Outcome::ok(format!("/proc/kcore: read {n} bytes")),
        Err(e) => Outcome::refused(&e, "/proc/kcore"),
    }
}

/// Open a kernel setting under `/sys` for writing (closed without a write).
fn sys_write() -> Outcome {
    let candidates = [
        "/sys/kernel/uevent_helper",
        "/sys/kernel/mm/transparent_hugepage/enabled",
        "/sys/class/net/lo/tx_queue_len",
        "/sys/kernel/profiling",
    ];
    let Some(p) = candidates.iter().find(|p| Path::new(p).exists()) else {
        return Outcome {
            result: "ENOENT".into(),
            detail: format!("none of {candidates:?}"),
        };
    };
    let r = OpenOptions::new()
        .write(true)
        .open(p)
        .map(|_| "opened for writing, nothing written".to_string());
    first_through(vec![(p.to_string(), r)])
}

#[derive(Debug, Default)]
struct Args {
    state_dir: Option<PathBuf>,
    block: Option<(u32, u32)>,
}

fn parse_dev(s: &str) -> Option<(u32, u32)> {
    let (a, b) = s.split_once(':')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

fn args() -> Result<Args, String> {
    let mut a = Args::default();
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--state-dir" => a.state_dir = Some(value()?.into()),
            "--block" => {
                let v = value()?;
                a.block = Some(parse_dev(&v).ok_or(format!("--block {v}: write MAJOR:MINOR"))?);
            }
            _ => {
                return Err(format!(
                    "unknown argument {flag}: usage: bramble-attack [--state-dir DIR] [--block MAJOR:MINOR]"
                ));
            }
        }
    }
    Ok(a)
}

/// One attack: its name and what it does.
type Attack<'a> = (&'static str, Box<dyn Fn() -> Outcome + 'a>);

fn main() {
    let a = match args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("bramble-attack: {e}");
            std::process::exit(2);
        }
    };
    let block = a.block.or_else(first_disk).unwrap_or((7, 0));
    let state = a.state_dir.as_deref();
    let attacks: Vec<Attack<'_>> = vec![
        ("memory_limit", Box::new(memory_limit)),
        ("cgroup_procs", Box::new(cgroup_procs)),
        ("open_by_handle", Box::new(open_by_handle)),
        ("mount", Box::new(mount)),
        ("core_pattern", Box::new(core_pattern)),
        ("sysrq_trigger", Box::new(sysrq_trigger)),
        ("kcore_read", Box::new(kcore_read)),
        ("sys_write", Box::new(sys_write)),
        ("state_dir", Box::new(move || state_dir(state))),
        ("node_credential", Box::new(move || node_credential(state))),
        ("mknod_block", Box::new(move || mknod_block(block))),
        ("netlink_newlink", Box::new(netlink_newlink)),
        ("module_load", Box::new(module_load)),
    ];
    let mut out = io::stdout().lock();
    for (name, attack) in attacks {
        let o = attack();
        let detail = o.detail.replace(['\t', '\n'], " ");
        let _ = writeln!(out, "{name}\t{}\t{detail}", o.result);
        let _ = out.flush();
    }
    let status = fs::read_to_string("/proc/self/status").unwrap_or_default();
    for key in ["CapBnd", "CapEff", "CapPrm", "Seccomp", "NoNewPrivs"] {
        let v = status
            .lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
            .map_or("missing", str::trim);
        let _ = writeln!(out, "status.{key}\t{v}\t/proc/self/status");
    }
    // The kernel's last capability: a privileged pod's whole set is every bit up to it.
    let last = fs::read_to_string("/proc/sys/kernel/cap_last_cap");
    let last = last.as_deref().map_or("missing", str::trim);
    let _ = writeln!(
        out,
        "kernel.cap_last_cap\t{last}\t/proc/sys/kernel/cap_last_cap"
    );
    let _ = writeln!(out, "done\tok\tbramble-attack finished");
}
