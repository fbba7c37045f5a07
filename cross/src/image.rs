//! `cargo cross image`: a ready-to-flash SD-card image for one node, made from a Raspberry Pi
//! OS image without root or loop mounts.
//!
//! 1. [`inspect`] the base image read-only: the partition table (MBR with `mbrman`, GPT with
//!    `gpt`), the first FAT partition that `fatfs` opens inside its bounds, its `cmdline.txt`,
//!    the room left. Every problem is reported before a byte is copied.
//! 2. Copy the base to a temporary file beside the output (sparse: all-zero blocks are skipped;
//!    a progress bar when stderr is a terminal).
//! 3. Edit the copy's FAT partition through a bounded [`Slice`] of the file: add the
//!    `bramble-*` files (worker, config, join token, unit, first-boot script, see [`firstboot`])
//!    and append the cgroup and first-boot arguments to `cmdline.txt`. Then fsync and rename onto the output,
//!    so a failed run never leaves a half-written image behind.

pub mod firstboot;

use std::fs::{self, File, OpenOptions};
use std::io::{self, IsTerminal, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use bramble_boards::{Arch, Board, Kind};

use firstboot::{BootMount, NodeConfig};

const SECTOR: u64 = 512;
/// A join token is one short line; anything bigger is not a token.
const MAX_TOKEN: usize = 4096;

/// What to build.
#[derive(Debug, Clone)]
pub struct ImageOptions {
    /// The Raspberry Pi OS (or compatible) image to start from; never modified.
    pub base: PathBuf,
    /// Where the node's image goes.
    pub output: PathBuf,
    /// Overwrite `output` if it exists.
    pub force: bool,
    /// The node's configuration.
    pub node: NodeConfig,
    /// The file holding the join token (read, never printed).
    pub token_file: PathBuf,
    /// The `bramble-worker` binary for the board.
    pub worker: PathBuf,
    /// Where the running system mounts the boot partition (default: detected).
    pub boot_mount: Option<BootMount>,
    /// Draw a progress bar while copying (only if stderr is a terminal).
    pub progress: bool,
}

/// Where the boot partition is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootPartition {
    /// `MBR` or `GPT`.
    pub table: &'static str,
    /// 1-based partition number.
    pub number: u32,
    /// Byte offset in the image.
    pub offset: u64,
    /// Length in bytes.
    pub len: u64,
    /// `FAT12`, `FAT16` or `FAT32`.
    pub fat: &'static str,
}

/// What [`inspect`] learned from the base image.
#[derive(Debug, Clone)]
pub struct Inspection {
    /// The boot partition.
    pub part: BootPartition,
    /// `cmdline.txt` as found.
    pub cmdline: String,
    /// Names in the partition's root directory.
    pub root_names: Vec<String>,
    /// `config.txt`, if any.
    pub config_txt: Option<String>,
    /// Free bytes on the partition.
    pub free: u64,
    /// The image's size.
    pub image_len: u64,
}

/// What [`write_image`] did.
#[derive(Debug, Clone)]
pub struct Report {
    /// The output.
    pub output: PathBuf,
    /// The boot partition that was edited.
    pub part: BootPartition,
    /// Where the first-boot script expects the boot partition.
    pub boot_mount: BootMount,
    /// The new `cmdline.txt` line.
    pub cmdline: String,
    /// Size of the worker binary written.
    pub worker_size: u64,
    /// Image size.
    pub image_len: u64,
    /// Bytes actually written by the copy (zero blocks are skipped).
    pub copied: u64,
    /// Time to copy.
    pub copy_time: Duration,
    /// Time to edit the FAT partition.
    pub edit_time: Duration,
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "wrote {} ({}): boot partition {} #{} ({}, {} at byte {})",
            self.output.display(),
            crate::util::human(self.image_len),
            self.part.table,
            self.part.number,
            self.part.fat,
            crate::util::human(self.part.len),
            self.part.offset
        )?;
        writeln!(
            f,
            "  added {} ({}), {}, {}, {}, {}",
            firstboot::WORKER,
            crate::util::human(self.worker_size),
            firstboot::ENV,
            firstboot::TOKEN,
            firstboot::UNIT,
            firstboot::FIRSTRUN
        )?;
        writeln!(
            f,
            "  first boot runs {}/{} (override with --boot-mount)",
            self.boot_mount.path(),
            firstboot::FIRSTRUN
        )?;
        writeln!(f, "  cmdline.txt: {}", self.cmdline.trim_end())?;
        write!(
            f,
            "  copy {:.2} s ({} written, zero blocks skipped), edit {:.3} s",
            self.copy_time.as_secs_f64(),
            crate::util::human(self.copied),
            self.edit_time.as_secs_f64()
        )
    }
}

/// The kernel arguments the image gets: the board profile's additions (always including the
/// memory cgroup), then the first-boot arguments.
pub fn cmdline_additions(board: &Board, mount: BootMount) -> Vec<String> {
    let mut v: Vec<String> = vec!["cgroup_enable=memory".into(), "cgroup_memory=1".into()];
    for a in &board.kernel_cmdline {
        if !v.contains(a) {
            v.push(a.clone());
        }
    }
    v.extend(firstboot::firstrun_args(mount));
    v
}

/// Check that `board` is one an SD card is made for.
pub fn check_board(board: &Board) -> Result<()> {
    if board.kind == Kind::Qemu {
        let hw: Vec<&str> = bramble_boards::builtin()
            .iter()
            .filter(|b| b.kind == Kind::Hardware)
            .map(|b| b.name.as_str())
            .collect();
        bail!(
            "--board {}: a QEMU board boots no SD card; use a hardware board: {}",
            board.name,
            hw.join(", ")
        );
    }
    Ok(())
}

/// Read and check the worker binary: an ELF for the board's architecture, statically linked.
pub fn read_worker(path: &Path, board: &Board) -> Result<Vec<u8>> {
    let bytes = fs::read(path).with_context(|| {
        format!(
            "--worker {}: cannot read it; build one with `cargo cross build --board {} --release --worker-only`",
            path.display(),
            board.name
        )
    })?;
    let elf = crate::util::elf_info(&bytes)
        .with_context(|| format!("--worker {}: not a Linux executable", path.display()))?;
    let want = match board.arch {
        Arch::Aarch64 => 0xB7,
        Arch::Armv7 => 0x28,
    };
    if elf.machine != want {
        bail!(
            "--worker {}: built for {}, but board {} is {}; build it with `cargo cross build --board {} --release --worker-only`",
            path.display(),
            elf.arch_name(),
            board.name,
            board.arch,
            board.name
        );
    }
    if elf.dynamic {
        bail!(
            "--worker {}: dynamically linked; boards need a static binary: build it with `cargo cross build --board {} --release --worker-only`",
            path.display(),
            board.name
        );
    }
    Ok(bytes)
}

/// Read the join token: one line of printable ASCII. Its content never appears in an error.
pub fn read_token(path: &Path) -> Result<String> {
    let fix = "the master writes its join token to DATA_DIR/join.token (or `bramble token create`)";
    let bytes = fs::read(path)
        .with_context(|| format!("--token-file {}: cannot read it; {fix}", path.display()))?;
    if bytes.len() > MAX_TOKEN {
        bail!(
            "--token-file {}: {} bytes is too big for a join token; {fix}",
            path.display(),
            bytes.len()
        );
    }
    let text = String::from_utf8(bytes).ok();
    let token = text.as_deref().map(str::trim).unwrap_or_default();
    if token.is_empty() {
        bail!(
            "--token-file {}: empty (or not text); {fix}",
            path.display()
        );
    }
    if !token.chars().all(|c| c.is_ascii_graphic()) {
        bail!(
            "--token-file {}: a join token is one line of printable characters; this file has more; {fix}",
            path.display()
        );
    }
    Ok(token.to_string())
}

/// Read-only look at `base`: find the boot partition and its `cmdline.txt`.
pub fn inspect(base: &Path) -> Result<Inspection> {
    let name = base.display().to_string();
    let file = File::open(base).with_context(|| format!("--base {name}: cannot open it"))?;
    let image_len = file.metadata()?.len();
    let (table, candidates) = partition_table(ReadOnly(file.try_clone()?), image_len, &name)?;
    let mut why = Vec::new();
    for Candidate {
        number,
        offset,
        len,
    } in candidates
    {
        let slice = Slice::new(ReadOnly(file.try_clone()?), offset, len);
        let fs = match fatfs::FileSystem::new(slice, fatfs::FsOptions::new()) {
            Ok(fs) => fs,
            Err(e) => {
                why.push(format!("partition {number}: {e}"));
                continue;
            }
        };
        let fat = fat_name(fs.fat_type());
        let part = BootPartition {
            table,
            number,
            offset,
            len,
            fat,
        };
        let root = fs.root_dir();
        let root_names: Vec<String> = root
            .iter()
            .filter_map(|e| e.ok())
            .map(|e| e.file_name())
            .collect();
        let read = |n: &str| -> Result<Option<String>> {
            match root.open_file(n) {
                Ok(mut f) => {
                    let mut s = Vec::new();
                    f.read_to_end(&mut s)
                        .with_context(|| format!("{name}: partition {number}: read {n}"))?;
                    Ok(Some(String::from_utf8_lossy(&s).into_owned()))
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(e).with_context(|| format!("{name}: partition {number}: open {n}")),
            }
        };
        let Some(cmdline) = read("cmdline.txt")? else {
            bail!(
                "{name}: the boot partition ({table} partition {number}, {fat}) has no cmdline.txt, so this is not a Raspberry Pi OS boot partition; fix: start from a Raspberry Pi OS image"
            );
        };
        let config_txt = read("config.txt")?;
        let stats = fs.stats()?;
        let free = u64::from(stats.free_clusters()) * u64::from(stats.cluster_size());
        return Ok(Inspection {
            part,
            cmdline,
            root_names,
            config_txt,
            free,
            image_len,
        });
    }
    bail!(
        "{name}: no partition holds a FAT filesystem that can be read ({}); fix: pass a Raspberry Pi OS image",
        why.join("; ")
    )
}

/// A FAT boot sector (a filesystem without a partition table) rather than an MBR.
fn is_fat_boot_sector(s: &[u8; 512]) -> bool {
    (s[0] == 0xEB || s[0] == 0xE9) && (&s[54..57] == b"FAT" || &s[82..87] == b"FAT32")
}

fn fat_name(t: fatfs::FatType) -> &'static str {
    match t {
        fatfs::FatType::Fat12 => "FAT12",
        fatfs::FatType::Fat16 => "FAT16",
        fatfs::FatType::Fat32 => "FAT32",
    }
}

/// A partition that may hold the boot filesystem.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Candidate {
    /// 1-based partition number.
    pub number: u32,
    /// Byte offset in the image.
    pub offset: u64,
    /// Length in bytes.
    pub len: u64,
}

/// The first LBA a GPT partition may use with 512-byte sectors: the protective MBR, the header
/// and the (at least 16 KiB) partition entry array come first.
pub const GPT_FIRST_USABLE_LBA: u64 = 34;

/// The partition table of a disk image of `image_len` bytes, read from `dev` (`name` names it in
/// errors): `MBR` or `GPT`, and the partitions that may hold the boot FAT filesystem, in table
/// order. Each of them is non-empty, starts after the partition table (sector 1 for MBR, LBA
/// [`GPT_FIRST_USABLE_LBA`] for GPT) and ends inside the image; anything else is an error naming
/// the fix. Reads `dev` only (the fuzz target `partitions` drives it with arbitrary bytes).
pub fn partition_table<D: Read + Seek>(
    mut dev: D,
    image_len: u64,
    name: &str,
) -> Result<(&'static str, Vec<Candidate>)> {
    if image_len < 2 * SECTOR {
        bail!(
            "{name}: {image_len} bytes is too small to be a disk image (truncated download?); fix: pass the unzipped .img of Raspberry Pi OS"
        );
    }
    let mut head = [0u8; 512];
    dev.seek(SeekFrom::Start(0))?;
    dev.read_exact(&mut head)?;
    if head[510..512] != [0x55, 0xAA] {
        bail!(
            "{name}: no partition table (no boot signature in sector 0); fix: pass a whole-disk image such as Raspberry Pi OS's .img (unzip/unxz it first)"
        );
    }
    if is_fat_boot_sector(&head) {
        bail!(
            "{name}: this is a bare FAT filesystem, not a disk image with a partition table; fix: pass the whole SD-card image (e.g. Raspberry Pi OS's .img)"
        );
    }
    let protective = (0..4).any(|i| head[446 + i * 16 + 4] == 0xEE);
    let (table, candidates, first_usable) = if protective {
        ("GPT", gpt_candidates(dev, name)?, GPT_FIRST_USABLE_LBA)
    } else {
        ("MBR", mbr_candidates(&mut dev, name)?, 1)
    };
    if candidates.is_empty() {
        bail!(
            "{name}: the {table} partition table has no FAT partition (the boot partition of a Raspberry Pi image is FAT32); fix: pass a Raspberry Pi OS image"
        );
    }
    let mut out = Vec::with_capacity(candidates.len());
    for (number, first_lba, sectors) in candidates {
        // Sector numbers come from the file: overflowing arithmetic is a truncated image too.
        let offset = first_lba.checked_mul(SECTOR);
        let len = sectors.checked_mul(SECTOR);
        let (Some(offset), Some(len), Some(end)) = (
            offset,
            len,
            offset.zip(len).and_then(|(o, l)| o.checked_add(l)),
        ) else {
            bail!(
                "{name}: partition {number} (sector {first_lba}, {sectors} sectors) ends past the end of any file: the image is truncated or damaged; fix: get the image again"
            );
        };
        if end > image_len {
            bail!(
                "{name}: partition {number} ends at byte {end} but the file has only {image_len} bytes: the image is truncated (interrupted download or unzip?); fix: get the image again"
            );
        }
        if first_lba < first_usable || len == 0 {
            bail!(
                "{name}: the {table} partition table is damaged: partition {number} (bytes {offset}..{end}) {}; fix: get the image again",
                if len == 0 {
                    "is empty"
                } else {
                    "overlaps the partition table"
                }
            );
        }
        out.push(Candidate {
            number,
            offset,
            len,
        });
    }
    Ok((table, out))
}

/// Primary MBR partitions whose type says FAT, in table order: (number, first sector, sectors).
/// Only the four primary entries are read (the boot partition of a Raspberry Pi OS image is the
/// first of them): mbrman's walk of an extended partition's chain panics on some damaged tables
/// (every partition at sector 0; chained sector numbers overflowing u32), found by fuzzing.
fn mbr_candidates<D: Read + Seek>(dev: &mut D, name: &str) -> Result<Vec<(u32, u64, u64)>> {
    let mbr = mbrman::MBRHeader::read_from(dev).map_err(|e| {
        anyhow::anyhow!("{name}: the MBR partition table cannot be read ({e}); fix: pass a Raspberry Pi OS image")
    })?;
    Ok(mbr
        .iter()
        .filter(|(_, p)| p.is_used() && matches!(p.sys, 0x01 | 0x04 | 0x06 | 0x0b | 0x0c | 0x0e))
        .map(|(i, p)| (i as u32, u64::from(p.starting_lba), u64::from(p.sectors)))
        .collect())
}

/// Most GPT partition entries read (the spec's minimum array holds 128; tools write 128).
const MAX_GPT_ENTRIES: u32 = 1024;

/// GPT partitions of the EFI system or basic data types, in table order: (number, first LBA,
/// sectors). The header (the primary one, else the backup one in the last sector, as `gpt` picks
/// it) is checked before its entries are read: `gpt` asserts 128-byte entries (a panic on any
/// other size, found by fuzzing) and reads as many as the header says.
fn gpt_candidates<D: Read + Seek>(mut dev: D, name: &str) -> Result<Vec<(u32, u64, u64)>> {
    use gpt::disk::LogicalBlockSize::Lb512;
    let bad = |e: &dyn std::fmt::Display| {
        anyhow::anyhow!(
            "{name}: the GPT partition table cannot be read ({e}); fix: pass a Raspberry Pi OS image"
        )
    };
    let len = dev.seek(SeekFrom::End(0))?;
    let primary = gpt::header::read_header_from_arbitrary_device(&mut dev, Lb512);
    let header = match primary {
        Ok(h) => h,
        Err(e) if len >= 3 * SECTOR => {
            // The backup header: the last sector, read as the primary of a window that starts
            // one sector before it.
            let backup = (len / SECTOR - 2) * SECTOR;
            let mut window = Slice::new(&mut dev, backup, 2 * SECTOR);
            gpt::header::read_header_from_arbitrary_device(&mut window, Lb512)
                .map_err(|_| bad(&e))?
        }
        Err(e) => return Err(bad(&e)),
    };
    if header.part_size != 128 || header.num_parts > MAX_GPT_ENTRIES {
        return Err(bad(&format!(
            "{} entries of {} bytes; GPT tables have up to {MAX_GPT_ENTRIES} entries of 128 bytes",
            header.num_parts, header.part_size
        )));
    }
    let partitions =
        gpt::partition::file_read_partitions(&mut dev, &header, Lb512).map_err(|e| bad(&e))?;
    let mut v = Vec::new();
    for (n, p) in &partitions {
        if !p.is_used() {
            continue;
        }
        let t = &p.part_type_guid;
        if *t == gpt::partition_types::EFI || *t == gpt::partition_types::BASIC {
            let sectors = p.last_lba.saturating_add(1).saturating_sub(p.first_lba);
            v.push((*n, p.first_lba, sectors));
        }
    }
    Ok(v)
}

/// Build the node's image. Reads everything and checks the base image before writing.
pub fn write_image(board: &Board, opts: &ImageOptions) -> Result<Report> {
    check_board(board)?;
    check_output(&opts.base, &opts.output, opts.force)?;
    let worker = read_worker(&opts.worker, board)?;
    let token = read_token(&opts.token_file)?;
    let ins = inspect(&opts.base)?;
    let out = &opts.output;
    let name = opts.base.display().to_string();
    let mount = opts
        .boot_mount
        .unwrap_or_else(|| BootMount::detect(ins.config_txt.as_deref(), &ins.root_names));
    let cmdline = firstboot::edit_cmdline(&name, &ins.cmdline, &cmdline_additions(board, mount))?;
    let files: Vec<(&str, Vec<u8>)> = vec![
        (firstboot::WORKER, worker),
        (
            firstboot::ENV,
            firstboot::render_env(&opts.node).into_bytes(),
        ),
        (firstboot::TOKEN, format!("{token}\n").into_bytes()),
        (firstboot::UNIT, firstboot::render_unit().into_bytes()),
        (
            firstboot::FIRSTRUN,
            firstboot::render_firstrun().into_bytes(),
        ),
    ];
    // Room: our files plus a cluster each for slack and the directory (a re-run overwrites).
    let need: u64 = files.iter().map(|(_, b)| b.len() as u64 + 64 * 1024).sum();
    if ins.free < need {
        bail!(
            "{name}: the boot partition has {} free but the worker and its files need {}; fix: use an image with a bigger boot partition or a smaller worker (--release)",
            crate::util::human(ins.free),
            crate::util::human(need)
        );
    }

    let dir = out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let file_name = out
        .file_name()
        .with_context(|| format!("-o {}: not a file name", out.display()))?;
    let tmp = dir.join(format!(".{}.partial", file_name.to_string_lossy()));
    let result = (|| -> Result<Report> {
        let t0 = Instant::now();
        let copied = copy_sparse(&opts.base, &tmp, opts.progress)?;
        let copy_time = t0.elapsed();
        let t1 = Instant::now();
        let f = OpenOptions::new().read(true).write(true).open(&tmp)?;
        edit_boot(&f, &ins.part, &files, &cmdline)
            .with_context(|| format!("editing the boot partition of {}", tmp.display()))?;
        f.sync_all()?;
        let edit_time = t1.elapsed();
        fs::rename(&tmp, out)
            .with_context(|| format!("rename {} -> {}", tmp.display(), out.display()))?;
        if let Ok(d) = File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(Report {
            output: out.clone(),
            part: ins.part.clone(),
            boot_mount: mount,
            cmdline: cmdline.clone(),
            worker_size: files[0].1.len() as u64,
            image_len: ins.image_len,
            copied,
            copy_time,
            edit_time,
        })
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// The output must not exist (unless `force`) and must not be the base.
pub fn check_output(base: &Path, out: &Path, force: bool) -> Result<()> {
    if out.exists() {
        if !force {
            bail!(
                "-o {}: already exists; fix: choose another name or pass --force to overwrite it",
                out.display()
            );
        }
        if same_file(base, out) {
            bail!(
                "-o {}: is the base image itself; the base is never modified: write to another file",
                out.display()
            );
        }
    }
    Ok(())
}

fn same_file(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (fs::metadata(a), fs::metadata(b)) {
        (Ok(x), Ok(y)) => x.dev() == y.dev() && x.ino() == y.ino(),
        _ => false,
    }
}

/// Copy `from` to a new `to`, leaving holes for all-zero 64 KiB blocks. Returns bytes written.
fn copy_sparse(from: &Path, to: &Path, progress: bool) -> Result<u64> {
    let mut src = File::open(from).with_context(|| format!("open {}", from.display()))?;
    let len = src.metadata()?.len();
    // The image holds the join token: only its owner may read it. (A stale file from a killed
    // run is removed first, so the mode applies.)
    let _ = fs::remove_file(to);
    let mut dst = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(to)
        .with_context(|| format!("create {}", to.display()))?;
    let bar = if progress && io::stderr().is_terminal() {
        let b = indicatif::ProgressBar::new(len);
        b.set_style(
            indicatif::ProgressStyle::with_template(
                "copying {bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        b
    } else {
        indicatif::ProgressBar::hidden()
    };
    const BLOCK: usize = 64 * 1024;
    // Slice equality is a memcmp: fast even in the debug build `cargo cross` runs.
    let zero = vec![0u8; BLOCK];
    let mut buf = vec![0u8; 16 * BLOCK];
    let mut written = 0u64;
    let mut pos = 0u64;
    loop {
        let n = read_full(&mut src, &mut buf)?;
        if n == 0 {
            break;
        }
        for chunk in buf[..n].chunks(BLOCK) {
            if chunk == &zero[..chunk.len()] {
                dst.seek(SeekFrom::Current(chunk.len() as i64))?;
            } else {
                dst.write_all(chunk)
                    .with_context(|| format!("write {} (disk full?)", to.display()))?;
                written += chunk.len() as u64;
            }
        }
        pos += n as u64;
        bar.set_position(pos);
    }
    dst.set_len(len)?;
    bar.finish_and_clear();
    if pos != len {
        bail!(
            "{}: changed while it was copied ({pos} of {len} bytes)",
            from.display()
        );
    }
    Ok(written)
}

fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Write `files` into the root directory and the new `cmdline.txt` on the FAT partition `part` of `f`.
fn edit_boot(
    f: &File,
    part: &BootPartition,
    files: &[(&str, Vec<u8>)],
    cmdline: &str,
) -> Result<()> {
    let slice = Slice::new(f.try_clone()?, part.offset, part.len);
    let fs = fatfs::FileSystem::new(slice, fatfs::FsOptions::new())?;
    {
        let root = fs.root_dir();
        for (name, bytes) in files {
            write_fat_file(&root, name, bytes).with_context(|| format!("write {name}"))?;
        }
        write_fat_file(&root, "cmdline.txt", cmdline.as_bytes()).context("write cmdline.txt")?;
    }
    fs.unmount()?;
    Ok(())
}

fn write_fat_file<T: fatfs::ReadWriteSeek>(
    dir: &fatfs::Dir<'_, T>,
    name: &str,
    bytes: &[u8],
) -> io::Result<()> {
    let mut file = dir.create_file(name)?;
    file.truncate()?;
    file.write_all(bytes)?;
    file.flush()
}

/// A window `[start, start + len)` of a file, seen as a whole device. Reads stop at its end and
/// writes past it fail, so the filesystem code can never touch another partition.
#[derive(Debug)]
pub struct Slice<F> {
    inner: F,
    start: u64,
    len: u64,
    pos: u64,
}

impl<F> Slice<F> {
    /// The window of `inner` at `start`, `len` bytes long.
    pub fn new(inner: F, start: u64, len: u64) -> Self {
        Slice {
            inner,
            start,
            len,
            pos: 0,
        }
    }
}

impl<F: Read + Seek> Read for Slice<F> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.len.saturating_sub(self.pos);
        let n = (buf.len() as u64).min(left) as usize;
        if n == 0 {
            return Ok(0);
        }
        self.inner.seek(SeekFrom::Start(self.start + self.pos))?;
        let k = self.inner.read(&mut buf[..n])?;
        self.pos += k as u64;
        Ok(k)
    }
}

impl<F: Write + Seek> Write for Slice<F> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let left = self.len.saturating_sub(self.pos);
        if !buf.is_empty() && left == 0 {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                "write past the end of the partition",
            ));
        }
        let n = (buf.len() as u64).min(left) as usize;
        self.inner.seek(SeekFrom::Start(self.start + self.pos))?;
        let k = self.inner.write(&buf[..n])?;
        self.pos += k as u64;
        Ok(k)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl<F> Seek for Slice<F> {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let new = match to {
            SeekFrom::Start(p) => Some(p),
            SeekFrom::End(d) => self.len.checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        match new {
            Some(p) => {
                self.pos = p;
                Ok(p)
            }
            None => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "seek before the start of the partition",
            )),
        }
    }
}

/// A file (or any device) opened read-only, typed as writable for crates that want
/// `Read + Write + Seek`: every write fails, so inspecting the base image cannot change it.
#[derive(Debug)]
pub struct ReadOnly<F>(pub F);

impl<F: Read> Read for ReadOnly<F> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read(buf)
    }
}

impl<F> Write for ReadOnly<F> {
    fn write(&mut self, _: &[u8]) -> io::Result<usize> {
        Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            "the base image is opened read-only",
        ))
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<F: Seek> Seek for ReadOnly<F> {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        self.0.seek(to)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slice_is_bounded() {
        let mut data = io::Cursor::new(vec![0u8; 100]);
        data.get_mut()[10..20].copy_from_slice(b"0123456789");
        let mut s = Slice::new(data, 10, 10);
        let mut buf = [0u8; 32];
        assert_eq!(s.read(&mut buf).unwrap(), 10);
        assert_eq!(&buf[..10], b"0123456789");
        assert_eq!(s.read(&mut buf).unwrap(), 0);
        s.seek(SeekFrom::Start(8)).unwrap();
        assert_eq!(s.write(b"abcdef").unwrap(), 2);
        assert!(s.write(b"x").is_err());
        assert!(s.seek(SeekFrom::Current(-100)).is_err());
        let inner = s.inner.into_inner();
        assert_eq!(&inner[10..20], b"01234567ab");
        assert_eq!(inner[20], 0, "nothing written past the window");
    }

    #[test]
    fn additions_include_the_board_profile() {
        let b = bramble_boards::find_in(bramble_boards::builtin(), "pi4b").unwrap();
        let a = cmdline_additions(b, BootMount::Firmware);
        assert_eq!(a[0], "cgroup_enable=memory");
        assert_eq!(a.iter().filter(|x| *x == "cgroup_memory=1").count(), 1);
        assert!(
            a.iter()
                .any(|x| x.starts_with("systemd.run=/boot/firmware/"))
        );
    }

    #[test]
    fn qemu_boards_get_no_card() {
        let b = bramble_boards::find_in(bramble_boards::builtin(), "qemu-virt-aarch64").unwrap();
        assert!(check_board(b).unwrap_err().to_string().contains("pi4b"));
    }
}
