//! `cargo cross image` end to end: real MBR/GPT + FAT32 images made with util-linux's `sfdisk`
//! and dosfstools' `mkfs.vfat --offset` (no root, no loop devices), the real `cross` binary,
//! and the result read back with an independent FAT implementation (mtools) and checked with
//! `fsck.vfat`. The first-boot script itself runs in a private mount + UTS namespace.
//!
//! Needs: `apt-get install fdisk dosfstools mtools` (the tests fail loudly without them), and
//! for the worker the cross toolchain of `cargo cross build` (built once, release, cached).

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::Instant;

const SECRET: &str = "K10deadbeefcafe::node-a.SUPERSECRETvalue0123456789";
const CMDLINE: &str = "console=serial0,115200 console=tty1 root=PARTUUID=4e639091-02 rootfstype=ext4 fsck.repair=yes rootwait quiet splash\n";
const BOOKWORM_CONFIG: &str = "# Additional overlays and parameters are documented\n# /boot/firmware/overlays/README\narm_64bit=1\n";
const BULLSEYE_CONFIG: &str =
    "# For more options and information see\n# http://rpf.io/configtxt\narm_64bit=1\n";
/// The FAT partition starts at 4 MiB, like Raspberry Pi OS's.
const FAT_START: u64 = 8192;
const FAT_SECTORS: u64 = 131072; // 64 MiB: FAT32 with 512-byte clusters
const SECTOR: u64 = 512;

fn need(tool: &str, pkg: &str) {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
        .unwrap_or(false)
        || Path::new("/usr/sbin").join(tool).is_file()
        || Path::new("/sbin").join(tool).is_file();
    assert!(
        found,
        "{tool} not found: these tests need it (apt-get install {pkg}; scripts/dev test installs it)"
    );
}

fn tools() {
    need("sfdisk", "fdisk");
    need("mkfs.vfat", "dosfstools");
    need("fsck.vfat", "dosfstools");
    for t in ["mcopy", "mtype", "mdir", "mmd"] {
        need(t, "mtools");
    }
}

fn sh(cmd: &mut Command) -> Output {
    let shown = format!("{cmd:?}");
    let out = cmd
        .env(
            "PATH",
            format!(
                "/usr/sbin:/sbin:{}",
                std::env::var("PATH").unwrap_or_default()
            ),
        )
        .env("MTOOLS_SKIP_CHECK", "1")
        .output()
        .unwrap_or_else(|e| panic!("{shown}: {e}"));
    assert!(
        out.status.success(),
        "{shown} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// `img@@offset` for mtools.
fn mimg(img: &Path, start_sector: u64) -> String {
    format!("{}@@{}", img.display(), start_sector * SECTOR)
}

#[derive(Clone, Copy, PartialEq)]
enum Table {
    Mbr,
    Gpt,
}

/// A disk image: a FAT32 boot partition at 4 MiB holding `files` (if `fat`), and a Linux
/// partition after it filled with a pattern (to check it is left alone).
fn make_image(dir: &Path, name: &str, table: Table, fat: bool, files: &[(&str, &str)]) -> PathBuf {
    let img = dir.join(name);
    let root_start = FAT_START + FAT_SECTORS;
    let root_sectors = 16384u64;
    let total = root_start + root_sectors + 2048; // room for GPT's backup header
    let f = fs::File::create(&img).unwrap();
    f.set_len(total * SECTOR).unwrap();
    drop(f);
    let script = match table {
        Table::Mbr => format!(
            "label: dos\nstart={FAT_START}, size={FAT_SECTORS}, type=c\nstart={root_start}, size={root_sectors}, type=83\n"
        ),
        Table::Gpt => format!(
            "label: gpt\nstart={FAT_START}, size={FAT_SECTORS}, type=U\nstart={root_start}, size={root_sectors}, type=L\n"
        ),
    };
    let mut child = Command::new("sfdisk")
        .env("PATH", "/usr/sbin:/sbin:/usr/bin:/bin")
        .args(["--quiet", "--no-reread", "--no-tell-kernel"])
        .arg(&img)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("sfdisk (apt-get install fdisk)");
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "sfdisk: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The root partition: a recognisable pattern.
    let mut bytes = fs::read(&img).unwrap();
    for (i, b) in bytes
        [(root_start * SECTOR) as usize..((root_start + root_sectors) * SECTOR) as usize]
        .iter_mut()
        .enumerate()
    {
        *b = (i % 251) as u8;
    }
    fs::write(&img, &bytes).unwrap();
    if fat {
        sh(Command::new("mkfs.vfat")
            .args(["-F", "32", "-s", "1", "-n", "BOOTFS"])
            .arg(format!("--offset={FAT_START}"))
            .arg(&img)
            .arg((FAT_SECTORS * SECTOR / 1024).to_string()));
        for (path, content) in files {
            let src = dir.join(format!("{name}.src"));
            fs::write(&src, content).unwrap();
            sh(Command::new("mcopy")
                .arg("-i")
                .arg(mimg(&img, FAT_START))
                .arg(&src)
                .arg(format!("::{path}")));
        }
    }
    img
}

fn rpi_files(config: &str) -> Vec<(&'static str, String)> {
    vec![
        ("cmdline.txt", CMDLINE.to_string()),
        ("config.txt", config.to_string()),
    ]
}

fn make_rpi(dir: &Path, name: &str, table: Table, config: &str) -> PathBuf {
    let files = rpi_files(config);
    let refs: Vec<(&str, &str)> = files.iter().map(|(a, b)| (*a, b.as_str())).collect();
    make_image(dir, name, table, true, &refs)
}

fn mtype(img: &Path, path: &str) -> String {
    let out = sh(Command::new("mtype")
        .arg("-i")
        .arg(mimg(img, FAT_START))
        .arg(format!("::{path}")));
    String::from_utf8(out.stdout).unwrap()
}

fn mget(img: &Path, path: &str, to: &Path) -> Vec<u8> {
    sh(Command::new("mcopy")
        .arg("-n")
        .arg("-i")
        .arg(mimg(img, FAT_START))
        .arg(format!("::{path}"))
        .arg(to));
    fs::read(to).unwrap()
}

/// The real aarch64 worker, release, built once (cargo's cache makes later runs cheap; the QEMU
/// suite builds the same target and profile).
fn worker() -> &'static Path {
    static W: OnceLock<PathBuf> = OnceLock::new();
    W.get_or_init(|| {
        let b = bramble_boards::find_in(bramble_boards::builtin(), "pi4b").unwrap();
        let t = Instant::now();
        let built = bramble_cross::build::build(b, true, &[bramble_cross::build::Bin::Worker])
            .expect("cross-build the pi4b worker (see cross/README.md for the toolchain)");
        eprintln!(
            "pi4b bramble-worker (release, stripped): {} B, built in {:.1} s",
            built[0].stripped_size,
            t.elapsed().as_secs_f64()
        );
        built[0].stripped.clone()
    })
}

fn token_file(dir: &Path) -> PathBuf {
    let p = dir.join("join.token");
    fs::write(&p, format!("{SECRET}\n")).unwrap();
    fs::set_permissions(&p, fs::Permissions::from_mode(0o600)).unwrap();
    p
}

/// Runs `cross image` with the standard flags plus `extra`; returns the output and checks the
/// token never appears in what it prints.
fn cross_image(
    dir: &Path,
    base: &Path,
    out: &Path,
    worker: Option<&Path>,
    extra: &[&str],
) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_cross"));
    cmd.args(["image", "--board", "pi4b", "--base"])
        .arg(base)
        .args(["--server", "192.0.2.10:7070", "--token-file"])
        .arg(token_file(dir))
        .args(["--hostname", "pi-attic-1", "-o"])
        .arg(out)
        .args(extra);
    if let Some(w) = worker {
        cmd.arg("--worker").arg(w);
    }
    let o = cmd.output().unwrap();
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(!all.contains("SUPERSECRET"), "the token was printed: {all}");
    o
}

fn ok(o: &Output) -> String {
    let s = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        o.status.success(),
        "cross image failed: {s}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    s
}

fn err(o: &Output) -> String {
    assert!(!o.status.success(), "cross image should have failed");
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn fsck(img: &Path, dir: &Path) {
    let part = dir.join("part.fat");
    let bytes = fs::read(img).unwrap();
    let s = (FAT_START * SECTOR) as usize;
    fs::write(&part, &bytes[s..s + (FAT_SECTORS * SECTOR) as usize]).unwrap();
    sh(Command::new("fsck.vfat").arg("-n").arg(&part));
}

#[test]
fn writes_worker_config_token_and_first_boot_mbr() {
    tools();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let base = make_rpi(dir, "raspios.img", Table::Mbr, BOOKWORM_CONFIG);
    let base_bytes = fs::read(&base).unwrap();
    let w = worker();
    let out = dir.join("node.img");
    let t = Instant::now();
    let report = ok(&cross_image(
        dir,
        &base,
        &out,
        Some(w),
        &["--label", "zone=attic,ssd=yes"],
    ));
    eprintln!("cross image: {:.2} s\n{report}", t.elapsed().as_secs_f64());
    assert!(report.contains("MBR #1 (FAT32"), "{report}");

    // The output holds the token: owner-only.
    assert_eq!(
        fs::metadata(&out).unwrap().permissions().mode() & 0o777,
        0o600
    );
    // The base is untouched; outside the boot partition, the output equals the base.
    assert_eq!(
        fs::read(&base).unwrap(),
        base_bytes,
        "the base image changed"
    );
    let out_bytes = fs::read(&out).unwrap();
    assert_eq!(out_bytes.len(), base_bytes.len());
    let (s, e) = (
        (FAT_START * SECTOR) as usize,
        ((FAT_START + FAT_SECTORS) * SECTOR) as usize,
    );
    assert!(
        out_bytes[..s] == base_bytes[..s],
        "bytes before the boot partition changed"
    );
    assert!(
        out_bytes[e..] == base_bytes[e..],
        "bytes after the boot partition changed"
    );
    fsck(&out, dir);

    // An independent reader sees our files with the right content.
    let listing = String::from_utf8(
        sh(Command::new("mdir")
            .args(["-b", "-i"])
            .arg(mimg(&out, FAT_START))
            .arg("::"))
        .stdout,
    )
    .unwrap();
    for f in bramble_cross::image::firstboot::FILES {
        assert!(
            listing.contains(&format!("::/{f}\n")),
            "{f} missing: {listing}"
        );
    }
    assert_eq!(
        mget(&out, "bramble-worker", &dir.join("w")),
        fs::read(w).unwrap()
    );
    assert_eq!(mtype(&out, "bramble-join.token"), format!("{SECRET}\n"));
    let env = mtype(&out, "bramble-worker.env");
    for want in [
        "BRAMBLE_MASTER=192.0.2.10:7070\n",
        "BRAMBLE_NAME=pi-attic-1\n",
        "BRAMBLE_BOARD=pi4b\n",
        "BRAMBLE_LABELS=zone=attic,ssd=yes\n",
    ] {
        assert!(env.contains(want), "{want} not in {env}");
    }
    let unit = mtype(&out, "bramble-worker.service");
    assert!(
        unit.contains("Delegate=yes") && unit.contains("Restart=always"),
        "{unit}"
    );
    assert!(mtype(&out, "bramble-firstrun.sh").starts_with("#!/bin/sh\n"));
    assert_eq!(mtype(&out, "config.txt"), BOOKWORM_CONFIG);

    // cmdline.txt: still one line, the original kept, each flag exactly once.
    let cmdline = mtype(&out, "cmdline.txt");
    assert_eq!(cmdline.lines().count(), 1, "{cmdline}");
    assert!(cmdline.ends_with('\n'));
    assert!(cmdline.starts_with(CMDLINE.trim_end()), "{cmdline}");
    for flag in [
        "cgroup_enable=memory",
        "cgroup_memory=1",
        "systemd.run=/boot/firmware/bramble-firstrun.sh",
        "systemd.run_success_action=reboot",
        "systemd.unit=kernel-command-line.target",
    ] {
        assert_eq!(
            cmdline.split_whitespace().filter(|t| *t == flag).count(),
            1,
            "{flag} in {cmdline}"
        );
    }

    // Again, from the output: nothing is duplicated, the files are replaced.
    let again = dir.join("node2.img");
    ok(&cross_image(
        dir,
        &out,
        &again,
        Some(w),
        &["--label", "zone=attic,ssd=yes"],
    ));
    assert_eq!(mtype(&again, "cmdline.txt"), cmdline);
    assert_eq!(mtype(&again, "bramble-worker.env"), env);
    assert_eq!(mtype(&again, "bramble-join.token"), format!("{SECRET}\n"));
    fsck(&again, dir);

    // The output exists: refused without --force (and left alone), replaced with it.
    let before = fs::read(&again).unwrap();
    let e = err(&cross_image(dir, &base, &again, Some(w), &[]));
    assert!(
        e.contains("node2.img: already exists") && e.contains("--force"),
        "{e}"
    );
    assert_eq!(fs::read(&again).unwrap(), before);
    ok(&cross_image(dir, &base, &again, Some(w), &["--force"]));
    assert!(mtype(&again, "bramble-worker.env").contains("BRAMBLE_LABELS=\n"));
    // --force never writes over the base itself.
    let e = err(&cross_image(dir, &base, &base, Some(w), &["--force"]));
    assert!(e.contains("is the base image itself"), "{e}");
    assert_eq!(fs::read(&base).unwrap(), base_bytes);
}

#[test]
fn gpt_image_and_older_boot_mount() {
    tools();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let base = make_rpi(dir, "gpt.img", Table::Gpt, BULLSEYE_CONFIG);
    let out = dir.join("node.img");
    // The default path: no --worker, so the tool runs the release cross build itself (cached
    // by cargo once `worker()` has built it).
    let w = worker();
    let t = Instant::now();
    let report = ok(&cross_image(dir, &base, &out, None, &[]));
    eprintln!(
        "cross image with its own (cached) worker build: {:.1} s",
        t.elapsed().as_secs_f64()
    );
    assert!(report.contains("GPT #1 (FAT32"), "{report}");
    assert_eq!(
        mget(&out, "bramble-worker", &dir.join("w")),
        fs::read(w).unwrap()
    );
    let cmdline = mtype(&out, "cmdline.txt");
    // bullseye's config.txt: the boot partition is /boot.
    assert!(
        cmdline.contains(" systemd.run=/boot/bramble-firstrun.sh "),
        "{cmdline}"
    );
    fsck(&out, dir);
    // The override wins, and rewrites our own argument instead of adding a second one.
    let again = dir.join("node2.img");
    ok(&cross_image(
        dir,
        &out,
        &again,
        Some(worker()),
        &["--boot-mount", "/boot/firmware"],
    ));
    let c2 = mtype(&again, "cmdline.txt");
    assert_eq!(c2.matches("systemd.run=").count(), 1, "{c2}");
    assert!(
        c2.contains("systemd.run=/boot/firmware/bramble-firstrun.sh"),
        "{c2}"
    );
}

#[test]
fn images_it_does_not_understand_are_refused_clearly() {
    tools();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let out = dir.join("node.img");
    // These fail before any worker is built or read, so no --worker is needed.
    let check = |base: &Path, want: &[&str]| {
        let e = err(&cross_image(dir, base, &out, None, &[]));
        assert!(
            e.contains(&base.display().to_string()),
            "the error should name {}: {e}",
            base.display()
        );
        for w in want {
            assert!(e.contains(w), "{w:?} not in: {e}");
        }
        assert!(e.contains("fix:"), "no fix in: {e}");
        assert!(!out.exists(), "an output was left behind");
    };

    let garbage = dir.join("garbage.img");
    fs::write(&garbage, vec![0x5Au8; 1 << 20]).unwrap();
    check(&garbage, &["no partition table"]);

    let tiny = dir.join("tiny.img");
    fs::write(&tiny, b"hello").unwrap();
    check(&tiny, &["too small"]);

    let no_fat = make_image(dir, "nofat.img", Table::Mbr, false, &[]);
    // Type 0x0c but never formatted: no FAT inside.
    check(&no_fat, &["no partition holds a FAT filesystem"]);

    let linux_only = dir.join("linux.img");
    fs::copy(&no_fat, &linux_only).unwrap();
    sh(Command::new("sfdisk")
        .args(["--quiet", "--part-type"])
        .arg(&linux_only)
        .args(["1", "83"]));
    check(&linux_only, &["MBR partition table has no FAT partition"]);

    let no_cmdline = make_image(
        dir,
        "nocmdline.img",
        Table::Mbr,
        true,
        &[("config.txt", BOOKWORM_CONFIG)],
    );
    check(&no_cmdline, &["has no cmdline.txt", "Raspberry Pi OS"]);

    let truncated = make_rpi(dir, "truncated.img", Table::Mbr, BOOKWORM_CONFIG);
    let f = fs::OpenOptions::new().write(true).open(&truncated).unwrap();
    f.set_len((FAT_START + FAT_SECTORS / 2) * SECTOR).unwrap();
    check(&truncated, &["truncated"]);

    let gpt_truncated = make_rpi(dir, "gpt-truncated.img", Table::Gpt, BOOKWORM_CONFIG);
    let f = fs::OpenOptions::new()
        .write(true)
        .open(&gpt_truncated)
        .unwrap();
    f.set_len((FAT_START + FAT_SECTORS / 2) * SECTOR).unwrap();
    check(&gpt_truncated, &["truncated"]);

    let gpt_linux = make_image(dir, "gpt-linux.img", Table::Gpt, false, &[]);
    sh(Command::new("sfdisk")
        .args(["--quiet", "--part-type"])
        .arg(&gpt_linux)
        .args(["1", "L"]));
    check(&gpt_linux, &["GPT partition table has no FAT partition"]);

    let bare = dir.join("bare-fat.img");
    fs::File::create(&bare)
        .unwrap()
        .set_len(FAT_SECTORS * SECTOR)
        .unwrap();
    sh(Command::new("mkfs.vfat").args(["-F", "32"]).arg(&bare));
    check(&bare, &["bare FAT filesystem"]);

    let missing = dir.join("missing.img");
    let e = err(&cross_image(dir, &missing, &out, None, &[]));
    assert!(e.contains("missing.img: cannot open"), "{e}");

    // Bad flags are rejected before anything is read.
    let good = make_rpi(dir, "good.img", Table::Mbr, BOOKWORM_CONFIG);
    let e = err(&cross_image(
        dir,
        &good,
        &out,
        None,
        &["--boot-mount", "/mnt"],
    ));
    assert!(e.contains("--boot-mount /mnt"), "{e}");
    let e = err(&cross_image(
        dir,
        &good,
        &out,
        Some(Path::new("/bin/sh")),
        &[],
    ));
    assert!(
        e.contains("built for x86_64, but board pi4b is aarch64"),
        "{e}"
    );
    let empty = dir.join("empty.token");
    fs::write(&empty, "\n").unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_cross"))
        .args(["image", "--board", "pi4b", "--base"])
        .arg(&good)
        .args(["--server", "192.0.2.10:7070", "--hostname", "n", "-o"])
        .arg(&out)
        .arg("--token-file")
        .arg(&empty)
        .output()
        .unwrap();
    let e = err(&o);
    assert!(e.contains("empty.token: empty"), "{e}");
    let o = Command::new(env!("CARGO_BIN_EXE_cross"))
        .args(["image", "--board", "qemu-virt-aarch64", "--base"])
        .arg(&good)
        .args(["--server", "192.0.2.10:7070", "--hostname", "n", "-o"])
        .arg(&out)
        .arg("--token-file")
        .arg(&empty)
        .output()
        .unwrap();
    assert!(err(&o).contains("a QEMU board boots no SD card"));
}

/// The first-boot script, run for real as root in private mount and UTS namespaces (tmpfs over
/// /etc, /usr/local and /var/lib, so the host is not touched) against the boot files the tool
/// wrote, read back with mtools.
#[test]
fn first_boot_script_installs_the_service() {
    tools();
    need("unshare", "util-linux");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let base = make_rpi(dir, "raspios.img", Table::Mbr, BOOKWORM_CONFIG);
    let out = dir.join("node.img");
    ok(&cross_image(dir, &base, &out, Some(worker()), &[]));
    let boot = dir.join("boot");
    fs::create_dir(&boot).unwrap();
    let mut cp = Command::new("mcopy");
    cp.args(["-n", "-i"])
        .arg(mimg(&out, FAT_START))
        .args(["::cmdline.txt", "::config.txt"]);
    for f in bramble_cross::image::firstboot::FILES {
        cp.arg(format!("::{f}"));
    }
    sh(cp.arg(&boot));
    // A systemctl that fails, so the script's fallback enables the unit and the host's systemd
    // is never asked anything.
    let bin = dir.join("bin");
    fs::create_dir(&bin).unwrap();
    fs::write(bin.join("systemctl"), "#!/bin/sh\nexit 1\n").unwrap();
    fs::set_permissions(bin.join("systemctl"), fs::Permissions::from_mode(0o755)).unwrap();
    let result = dir.join("result");
    fs::create_dir(&result).unwrap();
    let script = format!(
        r#"set -e
mount -t tmpfs none /etc; mount -t tmpfs none /usr/local; mount -t tmpfs none /var/lib
printf '127.0.0.1\tlocalhost\n127.0.1.1\traspberrypi\n' >/etc/hosts
echo raspberrypi >/etc/hostname
PATH={bin}:$PATH sh {boot}/bramble-firstrun.sh
cd {result}
stat -c '%a' /etc/bramble/join.token >token.mode
stat -c '%a' /etc/bramble >etc.mode
cat /etc/bramble/join.token >token
cat /etc/hostname >hostname
hostname >uts
cat /etc/hosts >hosts
cat /etc/systemd/system/bramble-worker.service >unit
readlink /etc/systemd/system/multi-user.target.wants/bramble-worker.service >wants
cmp /usr/local/bin/bramble-worker {worker} && echo same >worker
stat -c '%a' /usr/local/bin/bramble-worker >worker.mode
test -d /var/lib/bramble && echo yes >state
"#,
        bin = bin.display(),
        boot = boot.display(),
        result = result.display(),
        worker = worker().display()
    );
    sh(Command::new("unshare")
        .args(["--mount", "--uts", "--propagation", "private", "sh", "-c"])
        .arg(&script));
    let r = |n: &str| fs::read_to_string(result.join(n)).unwrap();
    assert_eq!(r("token.mode").trim(), "600");
    assert_eq!(r("etc.mode").trim(), "700");
    assert_eq!(r("token").trim(), SECRET);
    assert_eq!(r("hostname").trim(), "pi-attic-1");
    assert_eq!(r("uts").trim(), "pi-attic-1");
    assert!(
        r("hosts").contains("127.0.1.1\tpi-attic-1\n"),
        "{}",
        r("hosts")
    );
    assert!(r("unit").contains("Delegate=yes"));
    assert_eq!(
        r("wants").trim(),
        "/etc/systemd/system/bramble-worker.service"
    );
    assert_eq!(r("worker").trim(), "same");
    assert_eq!(r("worker.mode").trim(), "755");
    assert_eq!(r("state").trim(), "yes");
    // It removed itself: its cmdline.txt arguments and its files (with the token).
    let cmdline = fs::read_to_string(boot.join("cmdline.txt")).unwrap();
    assert_eq!(
        cmdline,
        format!(
            "{} cgroup_enable=memory cgroup_memory=1\n",
            CMDLINE.trim_end()
        )
    );
    let mut left: Vec<String> = fs::read_dir(&boot)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(left, ["cmdline.txt", "config.txt"]);
}

/// A failing first boot still drops its cmdline.txt arguments (the board then boots normally)
/// and leaves the reason on the boot partition.
#[test]
fn failed_first_boot_leaves_a_log_and_boots_normally() {
    tools();
    need("unshare", "util-linux");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let boot = dir.join("boot");
    fs::create_dir_all(&boot).unwrap();
    fs::write(boot.join("bramble-join.token"), SECRET).unwrap();
    fs::write(
        boot.join("bramble-firstrun.sh"),
        bramble_cross::image::firstboot::render_firstrun(),
    )
    .unwrap();
    let node =
        bramble_cross::image::firstboot::NodeConfig::new("192.0.2.1:7070", "n1", "pi4b", &[])
            .unwrap();
    fs::write(
        boot.join("bramble-worker.env"),
        bramble_cross::image::firstboot::render_env(&node),
    )
    .unwrap();
    // No worker binary: `install` fails.
    let line = format!(
        "{} cgroup_enable=memory systemd.run=/boot/firmware/bramble-firstrun.sh systemd.run_success_action=reboot systemd.run_failure_action=reboot systemd.unit=kernel-command-line.target\n",
        CMDLINE.trim_end()
    );
    fs::write(boot.join("cmdline.txt"), &line).unwrap();
    let script = format!(
        "mount -t tmpfs none /etc; mount -t tmpfs none /usr/local; mount -t tmpfs none /var/lib; sh {}/bramble-firstrun.sh; echo $? >{}/rc",
        boot.display(),
        dir.display()
    );
    sh(Command::new("unshare")
        .args(["--mount", "--uts", "--propagation", "private", "sh", "-c"])
        .arg(&script));
    assert_ne!(fs::read_to_string(dir.join("rc")).unwrap().trim(), "0");
    assert_eq!(
        fs::read_to_string(boot.join("cmdline.txt")).unwrap(),
        format!("{} cgroup_enable=memory\n", CMDLINE.trim_end())
    );
    let log = fs::read_to_string(boot.join("bramble-firstrun.log")).unwrap();
    assert!(log.contains("FAILED"), "{log}");
    // Not installed, so the token stays for a second attempt.
    assert!(boot.join("bramble-join.token").exists());
}

/// systemd's own checker accepts the unit (with `ExecStart=` pointed at a binary this host has,
/// since the worker is installed only at first boot).
#[test]
fn unit_passes_systemd_analyze_verify() {
    need("systemd-analyze", "systemd");
    let tmp = tempfile::tempdir().unwrap();
    let unit = bramble_cross::image::firstboot::render_unit().replace(
        "ExecStart=/usr/local/bin/bramble-worker",
        "ExecStart=/bin/true",
    );
    assert!(unit.contains("ExecStart=/bin/true --master"));
    let path = tmp.path().join("bramble-worker.service");
    fs::write(&path, unit).unwrap();
    let out = sh(Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&path));
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.trim().is_empty(), "systemd-analyze verify: {said}");
}
