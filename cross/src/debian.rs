//! Debian ARM kernels and busybox for the QEMU guests, fetched with the host's `apt-get`
//! (an own apt state per Debian arch, so the host's apt configuration is not touched) and
//! cached.
//!
//! Cache: `$BRAMBLE_CACHE_DIR`, else `$XDG_CACHE_HOME/bramble`, else `~/.cache/bramble`, else
//! `<workspace>/target/bramble-cache`. Layout under it:
//!
//! ```text
//! debian/<arch>/apt/                 apt's lists, cache, sources.list, status
//! debian/<arch>/debs/*.deb           downloaded packages (kept: re-extraction needs no network)
//! debian/<arch>/kernel-<flavour>/    vmlinuz, modules/*.ko, modules.load, package, complete
//! debian/<arch>/busybox/             busybox, package, complete
//! ```
//!
//! Once `complete` exists nothing touches the network: the fetch is idempotent and works offline.
//! Set `BRAMBLE_REFRESH=1` to look for a newer kernel.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use bramble_boards::Qemu;

use crate::util::{run, run_ok};

/// Kernel modules the guest loads, in order (dependencies are added first automatically).
/// Modules the kernel has built in are skipped.
pub const MODULES: &[&str] = &[
    "virtio_ring",
    "virtio",
    "virtio_mmio",
    "failover",
    "net_failover",
    "virtio_net",
    "virtio_blk",
    "crc16",
    "crc32c_generic",
    "mbcache",
    "jbd2",
    "ext4",
    // Isolated pods: the worker's pod bridge and veth pairs.
    "bridge",
    "veth",
    // The worker's kernel network path (`inet bramble` table: egress masquerade, service
    // virtual IPs, node ports; see worker/src/net/rules.rs): nf_tables and the expressions its
    // rules use beyond the built-in ones (meta, cmp, payload, bitwise, immediate). Same names
    // in Debian's arm64 (cloud-arm64) and armhf (armmp-lpae) 6.1 kernels; nf_nat, nf_conntrack,
    // nf_defrag_ipv4/6, libcrc32c and nft_fib(_ipv4/_ipv6) come in as dependencies. Without
    // them the worker falls back to its userspace proxy (no NAT, no cluster DNS): the guest
    // has no modprobe for the kernel's on-demand loading.
    "nf_tables",
    "nft_chain_nat",
    "nft_nat",
    "nft_masq",
    "nft_ct",
    "nft_fib_inet",
    "nft_numgen",
];

/// Modules loaded if the kernel has them (the guest works without).
pub const OPTIONAL_MODULES: &[&str] = &["rng_core", "virtio_rng"];

/// Bumped when what is extracted changes, so old caches are re-extracted (from the kept .deb).
const LAYOUT: &str = "layout-3";

/// A kernel ready to boot.
#[derive(Debug, Clone)]
pub struct Kernel {
    /// The Debian package it came from (`name version`).
    pub package: String,
    /// The kernel image.
    pub vmlinuz: PathBuf,
    /// Module files, in load order.
    pub modules: Vec<PathBuf>,
}

/// The cache root.
pub fn cache_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("BRAMBLE_CACHE_DIR") {
        return PathBuf::from(d);
    }
    if let Some(d) = std::env::var_os("XDG_CACHE_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(d).join("bramble");
    }
    if let Some(h) = std::env::var_os("HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(h).join(".cache/bramble");
    }
    crate::util::target_dir().join("bramble-cache")
}

/// One Debian architecture's apt state.
#[derive(Debug)]
struct Apt {
    arch: String,
    root: PathBuf,
    updated: bool,
    update_log: String,
}

const APT_TIMEOUT: Duration = Duration::from_secs(600);

impl Apt {
    fn new(arch: &str) -> Result<Self> {
        if !matches!(arch, "arm64" | "armhf") {
            bail!("Debian arch `{arch}` is not supported (arm64 or armhf)");
        }
        let root = cache_dir().join("debian").join(arch);
        Ok(Apt {
            arch: arch.to_string(),
            root,
            updated: false,
            update_log: String::new(),
        })
    }

    fn apt_dir(&self) -> PathBuf {
        self.root.join("apt")
    }

    fn setup(&self) -> Result<()> {
        let keyring = Path::new("/usr/share/keyrings/debian-archive-keyring.gpg");
        if !keyring.exists() {
            bail!(
                "{} is missing: apt-get install debian-archive-keyring",
                keyring.display()
            );
        }
        if crate::util::which("apt-get").is_none() || crate::util::which("dpkg-deb").is_none() {
            bail!(
                "apt-get and dpkg-deb are needed to fetch Debian's ARM kernels (run on Debian 12)"
            );
        }
        let a = self.apt_dir();
        for d in [
            "lists/partial",
            "cache/archives/partial",
            "sources.list.d",
            "preferences.d",
        ] {
            fs::create_dir_all(a.join(d))
                .with_context(|| format!("create {}", a.join(d).display()))?;
        }
        fs::create_dir_all(self.root.join("debs"))?;
        if !a.join("status").exists() {
            fs::write(a.join("status"), "")?;
        }
        let mirror = std::env::var("BRAMBLE_DEBIAN_MIRROR")
            .unwrap_or_else(|_| "http://deb.debian.org/debian".into());
        let security = std::env::var("BRAMBLE_DEBIAN_SECURITY_MIRROR")
            .unwrap_or_else(|_| "http://deb.debian.org/debian-security".into());
        let opts = format!("[arch={} signed-by={}]", self.arch, keyring.display());
        let sources = format!(
            "deb {opts} {mirror} bookworm main\n\
             deb {opts} {mirror} bookworm-updates main\n\
             deb {opts} {security} bookworm-security main\n"
        );
        fs::write(a.join("sources.list"), sources)?;
        Ok(())
    }

    fn opts(&self) -> Vec<String> {
        let a = self.apt_dir();
        let d = |p: &str| a.join(p).display().to_string();
        let mut o = vec![
            format!("-oAPT::Architecture={}", self.arch),
            format!("-oAPT::Architectures={}", self.arch),
            format!("-oDir::State::Lists={}", d("lists")),
            format!("-oDir::State::status={}", d("status")),
            format!("-oDir::Cache={}", d("cache")),
            format!("-oDir::Etc::SourceList={}", d("sources.list")),
            format!("-oDir::Etc::SourceParts={}", d("sources.list.d")),
            format!("-oDir::Etc::PreferencesParts={}", d("preferences.d")),
            format!("-oDir::Etc::Preferences={}", d("preferences")),
            "-oAcquire::Languages=none".into(),
            "-oAPT::Get::List-Cleanup=false".into(),
        ];
        for t in [
            "DEP-11",
            "DEP-11-icons",
            "DEP-11-icons-small",
            "DEP-11-icons-hidpi",
            "Contents-deb",
        ] {
            o.push(format!(
                "-oAcquire::IndexTargets::deb::{t}::DefaultEnabled=false"
            ));
        }
        o
    }

    fn cmd(&self, program: &str) -> Command {
        let mut c = Command::new(program);
        c.args(self.opts()).env("LC_ALL", "C");
        c
    }

    /// `apt-get update` once per process; index failures are remembered for error messages.
    fn update(&mut self) -> Result<()> {
        if self.updated {
            return Ok(());
        }
        self.setup()?;
        let mut last = String::new();
        for attempt in 1..=2 {
            let out = run(self.cmd("apt-get").args(["-q", "update"]), APT_TIMEOUT)?;
            last = format!("{}{}", out.stdout, out.stderr);
            let has_lists = fs::read_dir(self.apt_dir().join("lists"))?
                .filter_map(|e| e.ok())
                .any(|e| e.file_name().to_string_lossy().contains("_Packages"));
            if out.status.success() && !last.contains("\nE: ") && !last.starts_with("E: ") {
                break;
            }
            if attempt == 2 && !has_lists {
                bail!(
                    "apt-get update for {} failed and no package lists are cached:\n{last}\n  fix: check network access to deb.debian.org (or set BRAMBLE_DEBIAN_MIRROR)",
                    self.arch
                );
            }
        }
        self.update_log = last;
        self.updated = true;
        Ok(())
    }

    /// The candidate version of `name`, if the archive has it.
    fn candidate(&self, name: &str) -> Result<Option<String>> {
        let out = run(
            self.cmd("apt-cache")
                .args(["show", "--no-all-versions", name]),
            APT_TIMEOUT,
        )?;
        if !out.status.success() {
            return Ok(None);
        }
        Ok(out
            .stdout
            .lines()
            .find_map(|l| l.strip_prefix("Version: "))
            .map(|v| v.trim().to_string()))
    }

    /// The newest kernel package for `prefix<abi>-<flavour>[-unsigned]`.
    fn newest_kernel(&mut self, prefix: &str, flavour: &str) -> Result<(String, String)> {
        self.update()?;
        let out = run_ok(
            self.cmd("apt-cache").args(["pkgnames", prefix]),
            APT_TIMEOUT,
        )?;
        let mut abis = BTreeSet::new();
        for name in out.stdout.lines() {
            let Some(rest) = name.strip_prefix(prefix) else {
                continue;
            };
            let rest = rest.strip_suffix("-unsigned").unwrap_or(rest);
            let Some(abi) = rest.strip_suffix(flavour).and_then(|r| r.strip_suffix('-')) else {
                continue;
            };
            if let Ok(n) = abi.parse::<u32>() {
                abis.insert(n);
            }
        }
        for abi in abis.iter().rev() {
            for name in [
                format!("{prefix}{abi}-{flavour}-unsigned"),
                format!("{prefix}{abi}-{flavour}"),
            ] {
                if let Some(v) = self.candidate(&name)? {
                    return Ok((name, v));
                }
            }
        }
        bail!(
            "no Debian {} package `{prefix}<abi>-{flavour}` found in the archive.\napt-get update said:\n{}\n  fix: check the board's kernel_package_prefix/kernel_flavour, or network access",
            self.arch,
            self.update_log.trim_end()
        )
    }

    /// Download `name` (version `version`) into debs/, unless already there.
    fn download(&mut self, name: &str, version: &str) -> Result<PathBuf> {
        let debs = self.root.join("debs");
        if let Some(p) = find_deb(&debs, name, Some(version))? {
            return Ok(p);
        }
        self.update()?;
        let out = run(
            self.cmd("apt-get")
                .args([
                    "-q",
                    "-oAPT::Sandbox::User=root",
                    "download",
                    &format!("{name}={version}"),
                ])
                .current_dir(&debs),
            APT_TIMEOUT,
        )?;
        if !out.status.success() {
            bail!(
                "apt-get download {name}={version} ({}) failed:\n{}{}\n  fix: check network access to deb.debian.org (or set BRAMBLE_DEBIAN_MIRROR)",
                self.arch,
                out.stderr.trim_end(),
                out.stdout.trim_end()
            );
        }
        find_deb(&debs, name, Some(version))?.with_context(|| {
            format!(
                "apt-get download {name} succeeded but no {name}_*.deb is in {}",
                debs.display()
            )
        })
    }

    fn lock(&self) -> Result<fs::File> {
        fs::create_dir_all(&self.root)
            .with_context(|| format!("create {}", self.root.display()))?;
        let f = fs::File::create(self.root.join(".lock"))?;
        f.lock().context("lock the Debian cache")?;
        Ok(f)
    }
}

/// Find `<name>_<version>_<arch>.deb` (apt escapes `:` in versions as `%3a`).
fn find_deb(dir: &Path, name: &str, version: Option<&str>) -> Result<Option<PathBuf>> {
    let want = version.map(|v| format!("{name}_{}_", v.replace(':', "%3a")));
    for e in fs::read_dir(dir)? {
        let p = e?.path();
        let f = p
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        let ok = match &want {
            Some(w) => f.starts_with(w.as_str()),
            None => f.starts_with(&format!("{name}_")),
        };
        if ok && f.ends_with(".deb") {
            return Ok(Some(p));
        }
    }
    Ok(None)
}

fn extract(deb: &Path, into: &Path) -> Result<()> {
    if into.exists() {
        fs::remove_dir_all(into)?;
    }
    fs::create_dir_all(into)?;
    run_ok(
        Command::new("dpkg-deb").arg("-x").arg(deb).arg(into),
        Duration::from_secs(300),
    )
    .with_context(|| format!("extract {}", deb.display()))?;
    Ok(())
}

fn is_complete(dir: &Path) -> bool {
    fs::read_to_string(dir.join("complete")).is_ok_and(|s| s.trim() == LAYOUT)
}

fn refresh() -> bool {
    std::env::var_os("BRAMBLE_REFRESH").is_some_and(|v| v == "1")
}

/// The kernel for a QEMU board: from the cache, or fetched and extracted.
pub fn kernel(q: &Qemu) -> Result<Kernel> {
    let mut apt = Apt::new(&q.debian_arch)?;
    let dir = apt.root.join(format!("kernel-{}", q.kernel_flavour));
    let _lock = apt.lock()?;
    if !is_complete(&dir) || refresh() {
        let (name, version) = match (fs::read_to_string(dir.join("package")), refresh()) {
            (Ok(p), false) => {
                let mut it = p.split_whitespace();
                (
                    it.next().unwrap_or_default().to_string(),
                    it.next().unwrap_or_default().to_string(),
                )
            }
            _ => apt.newest_kernel(&q.kernel_package_prefix, &q.kernel_flavour)?,
        };
        let deb = apt.download(&name, &version)?;
        let tmp = apt.root.join(format!("kernel-{}.tmp", q.kernel_flavour));
        extract(&deb, &tmp)?;
        let staged = apt.root.join(format!("kernel-{}.new", q.kernel_flavour));
        let result = stage_kernel(&tmp, &staged, &format!("{name} {version}"));
        let _ = fs::remove_dir_all(&tmp);
        result.with_context(|| format!("extracting {}", deb.display()))?;
        if dir.exists() {
            fs::remove_dir_all(&dir)?;
        }
        fs::rename(&staged, &dir)?;
    }
    load_kernel(&dir)
}

fn stage_kernel(root: &Path, out: &Path, package: &str) -> Result<()> {
    if out.exists() {
        fs::remove_dir_all(out)?;
    }
    fs::create_dir_all(out.join("modules"))?;
    let boot = root.join("boot");
    let vmlinuz = fs::read_dir(&boot)
        .with_context(|| format!("{package}: no /boot"))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| {
            p.file_name()
                .is_some_and(|f| f.to_string_lossy().starts_with("vmlinuz-"))
        })
        .with_context(|| format!("{package}: no /boot/vmlinuz-*"))?;
    fs::copy(&vmlinuz, out.join("vmlinuz"))?;
    let mods_root = fs::read_dir(root.join("lib/modules"))
        .with_context(|| format!("{package}: no /lib/modules"))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .next()
        .with_context(|| format!("{package}: empty /lib/modules"))?;
    let order = resolve_modules(&mods_root, MODULES, OPTIONAL_MODULES)
        .with_context(|| format!("kernel package {package}"))?;
    let mut load = String::new();
    for (name, path) in &order {
        fs::copy(path, out.join("modules").join(format!("{name}.ko")))?;
        load.push_str(name);
        load.push('\n');
    }
    fs::write(out.join("modules.load"), load)?;
    fs::write(out.join("package"), format!("{package}\n"))?;
    fs::write(out.join("complete"), format!("{LAYOUT}\n"))?;
    Ok(())
}

fn load_kernel(dir: &Path) -> Result<Kernel> {
    let package = fs::read_to_string(dir.join("package"))?.trim().to_string();
    let modules = fs::read_to_string(dir.join("modules.load"))?
        .lines()
        .filter(|l| !l.is_empty())
        .map(|m| dir.join("modules").join(format!("{m}.ko")))
        .collect();
    Ok(Kernel {
        package,
        vmlinuz: dir.join("vmlinuz"),
        modules,
    })
}

fn norm(name: &str) -> String {
    name.replace('-', "_")
}

/// Work out the load order of `wanted` (+ `optional` if present) and their dependencies from
/// the `depends=` field of each module's `.modinfo` (Debian's .deb has no modules.dep; depmod
/// runs at install). Built-in modules (modules.builtin) are skipped.
pub fn resolve_modules(
    mods_root: &Path,
    wanted: &[&str],
    optional: &[&str],
) -> Result<Vec<(String, PathBuf)>> {
    let builtin: BTreeSet<String> = fs::read_to_string(mods_root.join("modules.builtin"))
        .with_context(|| format!("{}/modules.builtin", mods_root.display()))?
        .lines()
        .filter_map(|l| l.rsplit('/').next())
        .map(|f| norm(f.trim_end_matches(".ko")))
        .collect();
    let mut index = BTreeMap::new();
    let mut compressed = Vec::new();
    let mut stack = vec![mods_root.join("kernel")];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).with_context(|| format!("read {}", d.display()))? {
            let p = e?.path();
            if p.is_dir() {
                stack.push(p);
                continue;
            }
            let f = p
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned();
            if let Some(stem) = f.strip_suffix(".ko") {
                index.insert(norm(stem), p);
            } else if f.contains(".ko.") {
                compressed.push(f);
            }
        }
    }
    let mut order: Vec<(String, PathBuf)> = Vec::new();
    let mut visiting = BTreeSet::new();
    fn visit(
        name: &str,
        index: &BTreeMap<String, PathBuf>,
        builtin: &BTreeSet<String>,
        order: &mut Vec<(String, PathBuf)>,
        visiting: &mut BTreeSet<String>,
    ) -> Result<bool> {
        let name = norm(name);
        if builtin.contains(&name) || order.iter().any(|(n, _)| *n == name) {
            return Ok(true);
        }
        let Some(path) = index.get(&name) else {
            return Ok(false);
        };
        if !visiting.insert(name.clone()) {
            bail!("module dependency cycle at {name}");
        }
        let bytes = fs::read(path)?;
        for dep in modinfo(&bytes, "depends")
            .iter()
            .flat_map(|d| d.split(','))
            .filter(|d| !d.is_empty())
        {
            if !visit(dep, index, builtin, order, visiting)? {
                bail!("module {name} depends on {dep}, which is neither built in nor shipped");
            }
        }
        order.push((name, path.clone()));
        Ok(true)
    }
    for w in wanted {
        if !visit(w, &index, &builtin, &mut order, &mut visiting)? {
            let hint = if compressed.is_empty() {
                String::new()
            } else {
                format!(
                    " (this kernel ships compressed modules, e.g. {}: not supported yet)",
                    compressed[0]
                )
            };
            bail!(
                "kernel module {w} is neither built in nor in {}{hint}",
                mods_root.display()
            );
        }
    }
    for o in optional {
        visit(o, &index, &builtin, &mut order, &mut visiting)?;
    }
    Ok(order)
}

/// Values of `key=` in a module's `.modinfo` strings.
fn modinfo(bytes: &[u8], key: &str) -> Vec<String> {
    let needle = format!("\0{key}=");
    let n = needle.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while let Some(pos) = bytes[i..].windows(n.len()).position(|w| w == n) {
        let start = i + pos + n.len();
        let end = bytes[start..]
            .iter()
            .position(|&b| b == 0)
            .map_or(bytes.len(), |e| start + e);
        out.push(String::from_utf8_lossy(&bytes[start..end]).into_owned());
        i = end;
    }
    out
}

/// The guest's busybox (from Debian's busybox-static for `debian_arch`).
pub fn busybox(debian_arch: &str) -> Result<PathBuf> {
    let mut apt = Apt::new(debian_arch)?;
    let dir = apt.root.join("busybox");
    let _lock = apt.lock()?;
    if !is_complete(&dir) || refresh() {
        apt.update()?;
        let version = apt.candidate("busybox-static")?.with_context(|| {
            format!(
                "busybox-static ({debian_arch}) is not in the archive:\n{}",
                apt.update_log
            )
        })?;
        let deb = apt.download("busybox-static", &version)?;
        let tmp = apt.root.join("busybox.tmp");
        extract(&deb, &tmp)?;
        let bin = tmp.join("bin/busybox");
        if !bin.is_file() {
            bail!("{} has no /bin/busybox", deb.display());
        }
        if dir.exists() {
            fs::remove_dir_all(&dir)?;
        }
        fs::create_dir_all(&dir)?;
        fs::copy(&bin, dir.join("busybox"))?;
        fs::write(dir.join("package"), format!("busybox-static {version}\n"))?;
        fs::write(dir.join("complete"), format!("{LAYOUT}\n"))?;
        fs::remove_dir_all(&tmp)?;
    }
    Ok(dir.join("busybox"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modinfo_strings() {
        let blob = b"\x7fELF....\0license=GPL\0depends=virtio,virtio_ring\0softdep=pre: crc32c\0vermagic=6.1\0";
        assert_eq!(modinfo(blob, "depends"), ["virtio,virtio_ring"]);
        assert_eq!(modinfo(blob, "softdep"), ["pre: crc32c"]);
        assert!(modinfo(blob, "alias").is_empty());
    }

    #[test]
    fn resolves_dependencies_first_and_skips_builtins() {
        let root = std::env::temp_dir().join(format!("bramble-mods-{}", std::process::id()));
        let k = root.join("kernel/drivers");
        fs::create_dir_all(&k).unwrap();
        fs::write(root.join("modules.builtin"), "kernel/fs/ext4/ext4.ko\n").unwrap();
        fs::write(k.join("virtio_ring.ko"), b"x\0depends=\0").unwrap();
        fs::write(k.join("virtio.ko"), b"x\0depends=virtio_ring\0").unwrap();
        fs::write(k.join("virtio_net.ko"), b"x\0depends=virtio,net_failover\0").unwrap();
        fs::write(k.join("net_failover.ko"), b"x\0depends=failover\0").unwrap();
        fs::write(k.join("failover.ko"), b"x\0depends=\0").unwrap();
        let order = resolve_modules(&root, &["virtio_net", "ext4"], &["virtio_rng"]).unwrap();
        let names: Vec<&str> = order.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "virtio_ring",
                "virtio",
                "failover",
                "net_failover",
                "virtio_net"
            ]
        );
        let e = resolve_modules(&root, &["virtio_blk"], &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("virtio_blk is neither built in nor"), "{e}");
        fs::remove_dir_all(&root).unwrap();
    }
}
