//! Static busybox binaries per architecture, for the images the tests build: the host's
//! `/bin/busybox` (Debian's busybox-static) for amd64, Debian's busybox-static for arm64 and
//! armhf fetched with `apt-get download` into a private apt state (the host's apt configuration
//! is not touched) and cached.
//!
//! Cache: the QEMU suite's (`bramble_cross::debian::busybox`: `CACHE/debian/<arch>/busybox/`)
//! when it is complete, else the kit's own `CACHE/kit/<arch>/busybox`, where CACHE is
//! `$BRAMBLE_CACHE_DIR`, else `$XDG_CACHE_HOME/bramble`, else `~/.cache/bramble`. Once cached,
//! nothing touches the network.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The cache root (the same rule as the QEMU suite's).
pub fn cache_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("BRAMBLE_CACHE_DIR") {
        return PathBuf::from(d);
    }
    if let Some(d) = std::env::var_os("XDG_CACHE_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(d).join("bramble");
    }
    let home = std::env::var_os("HOME").filter(|d| !d.is_empty());
    PathBuf::from(home.unwrap_or_else(|| "/root".into())).join(".cache/bramble")
}

/// ELF machine numbers of the arches the tests use.
pub const EM_X86_64: u16 = 62;
/// AArch64.
pub const EM_AARCH64: u16 = 183;
/// 32-bit ARM.
pub const EM_ARM: u16 = 40;

/// `(e_machine, statically linked)` of an ELF file, `None` if it is not one.
pub fn elf_info(bytes: &[u8]) -> Option<(u16, bool)> {
    if bytes.get(..4)? != b"\x7fELF" {
        return None;
    }
    let class64 = *bytes.get(4)? == 2;
    let le = *bytes.get(5)? == 1;
    let u16_at = |o: usize| -> Option<u16> {
        let b = bytes.get(o..o + 2)?;
        Some(if le {
            u16::from_le_bytes([b[0], b[1]])
        } else {
            u16::from_be_bytes([b[0], b[1]])
        })
    };
    let u32_at = |o: usize| -> Option<u32> {
        let b: [u8; 4] = bytes.get(o..o + 4)?.try_into().ok()?;
        Some(if le {
            u32::from_le_bytes(b)
        } else {
            u32::from_be_bytes(b)
        })
    };
    let u64_at = |o: usize| -> Option<u64> {
        let b: [u8; 8] = bytes.get(o..o + 8)?.try_into().ok()?;
        Some(if le {
            u64::from_le_bytes(b)
        } else {
            u64::from_be_bytes(b)
        })
    };
    let machine = u16_at(18)?;
    let (phoff, phentsize, phnum) = if class64 {
        (u64_at(32)? as usize, u16_at(54)? as usize, u16_at(56)?)
    } else {
        (u32_at(28)? as usize, u16_at(42)? as usize, u16_at(44)?)
    };
    // Static: no PT_INTERP (3) program header.
    let mut interp = false;
    for i in 0..usize::from(phnum) {
        if u32_at(phoff + i * phentsize)? == 3 {
            interp = true;
        }
    }
    Some((machine, !interp))
}

/// Panics unless `path` is a static ELF for `machine`.
pub fn check_static(path: &Path, machine: u16) {
    let bytes = fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    match elf_info(&bytes) {
        Some((m, true)) if m == machine => {}
        other => panic!(
            "{} is not a static ELF for machine {machine} ({other:?}): the images need Debian's \
             busybox-static (apt-get install busybox-static)",
            path.display()
        ),
    }
}

/// A static busybox for Debian architecture `debian_arch` (`amd64`, `arm64`, `armhf`), checked
/// to be a static ELF of that arch.
pub fn busybox(debian_arch: &str) -> PathBuf {
    let (path, machine) = match debian_arch {
        "amd64" => (PathBuf::from("/bin/busybox"), EM_X86_64),
        "arm64" => (fetch(debian_arch), EM_AARCH64),
        "armhf" => (fetch(debian_arch), EM_ARM),
        other => panic!("no busybox for Debian arch {other} (amd64, arm64 or armhf)"),
    };
    assert!(
        path.exists(),
        "{} is missing: install Debian's busybox-static (./scripts/dev test does)",
        path.display()
    );
    check_static(&path, machine);
    path
}

/// The tiny static program of the images ([`hello`]).
pub const HELLO_C: &str = "#include <stdio.h>\nint main(void) { printf(\"static-hello bits=%u\\n\", (unsigned)(sizeof(void *) * 8)); return 0; }\n";

/// A tiny static C program for Debian architecture `debian_arch` (prints
/// `static-hello bits=64` or `bits=32`), built with the host's gcc or its Debian cross gcc
/// (`gcc-aarch64-linux-gnu`, `gcc-arm-linux-gnueabihf`) and cached by source.
pub fn hello(debian_arch: &str) -> PathBuf {
    let (cc, machine) = match debian_arch {
        "amd64" => ("gcc", EM_X86_64),
        "arm64" => ("aarch64-linux-gnu-gcc", EM_AARCH64),
        "armhf" => ("arm-linux-gnueabihf-gcc", EM_ARM),
        other => panic!("no C compiler for Debian arch {other}"),
    };
    let key = crate::oci::sha256_hex(HELLO_C.as_bytes());
    let dir = cache_dir().join("kit").join(debian_arch);
    let out = dir.join(format!("hello-{}", &key[..12]));
    if !out.is_file() {
        fs::create_dir_all(&dir).unwrap();
        // Unique per call: tests of one process build images at the same time.
        let uniq = format!("{}-{:016x}", std::process::id(), fastrand::u64(..));
        let src = dir.join(format!("hello-{uniq}.c"));
        fs::write(&src, HELLO_C).unwrap();
        let tmp = dir.join(format!("hello.tmp-{uniq}"));
        let o = Command::new(cc)
            .args(["-static", "-Os", "-s", "-o"])
            .arg(&tmp)
            .arg(&src)
            .output()
            .unwrap_or_else(|e| panic!("run {cc} (apt-get install {cc}): {e}"));
        let _ = fs::remove_file(&src);
        assert!(
            o.status.success(),
            "{cc} -static failed: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        fs::rename(&tmp, &out).unwrap();
    }
    check_static(&out, machine);
    out
}

fn fetch(arch: &str) -> PathBuf {
    // One fetch at a time in this process (tests build images in parallel); the apt state is
    // per arch.
    static FETCH: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one = FETCH.lock().unwrap_or_else(|e| e.into_inner());
    let cross = cache_dir().join("debian").join(arch).join("busybox");
    if cross.join("complete").exists() && cross.join("busybox").is_file() {
        return cross.join("busybox");
    }
    let root = cache_dir().join("kit").join(arch);
    let done = root.join("busybox");
    if done.is_file() {
        return done;
    }
    let apt = root.join("apt");
    for d in [
        "lists/partial",
        "cache/archives/partial",
        "sources.list.d",
        "preferences.d",
    ] {
        fs::create_dir_all(apt.join(d)).unwrap();
    }
    if !apt.join("status").exists() {
        fs::write(apt.join("status"), "").unwrap();
    }
    let keyring = "/usr/share/keyrings/debian-archive-keyring.gpg";
    assert!(
        Path::new(keyring).exists(),
        "{keyring} is missing: apt-get install debian-archive-keyring"
    );
    let mirror = std::env::var("BRAMBLE_DEBIAN_MIRROR")
        .unwrap_or_else(|_| "http://deb.debian.org/debian".into());
    fs::write(
        apt.join("sources.list"),
        format!("deb [arch={arch} signed-by={keyring}] {mirror} bookworm main\n"),
    )
    .unwrap();
    let d = |p: &str| apt.join(p).display().to_string();
    let opts = vec![
        format!("-oAPT::Architecture={arch}"),
        format!("-oAPT::Architectures={arch}"),
        format!("-oDir::State::Lists={}", d("lists")),
        format!("-oDir::State::status={}", d("status")),
        format!("-oDir::Cache={}", d("cache")),
        format!("-oDir::Etc::SourceList={}", d("sources.list")),
        format!("-oDir::Etc::SourceParts={}", d("sources.list.d")),
        format!("-oDir::Etc::PreferencesParts={}", d("preferences.d")),
        format!("-oDir::Etc::Preferences={}", d("preferences")),
        "-oAcquire::Languages=none".into(),
        "-oAPT::Sandbox::User=root".into(),
    ];
    let run = |args: &[&str], dir: &Path| {
        let o = Command::new("apt-get")
            .args(&opts)
            .args(args)
            .current_dir(dir)
            .env("LC_ALL", "C")
            .output()
            .expect("run apt-get");
        assert!(
            o.status.success(),
            "apt-get {args:?} ({arch}) failed: {}{}\n  fix: check access to deb.debian.org (or set BRAMBLE_DEBIAN_MIRROR)",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
    };
    run(&["-q", "update"], &root);
    let debs = root.join("debs");
    let _ = fs::remove_dir_all(&debs);
    fs::create_dir_all(&debs).unwrap();
    run(&["-q", "download", "busybox-static"], &debs);
    let deb = fs::read_dir(&debs)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "deb"))
        .expect("apt-get download left no .deb");
    let x = root.join("x");
    let _ = fs::remove_dir_all(&x);
    let st = Command::new("dpkg-deb")
        .arg("-x")
        .arg(&deb)
        .arg(&x)
        .status()
        .expect("run dpkg-deb");
    assert!(st.success(), "dpkg-deb -x {} failed", deb.display());
    let tmp = root.join("busybox.tmp");
    fs::copy(x.join("bin/busybox"), &tmp).unwrap();
    fs::rename(&tmp, &done).unwrap();
    let _ = fs::remove_dir_all(&x);
    done
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hosts_busybox_is_static_x86_64() {
        let p = busybox("amd64");
        let (m, st) = elf_info(&fs::read(p).unwrap()).unwrap();
        assert_eq!((m, st), (EM_X86_64, true));
    }

    #[test]
    fn static_hellos_for_every_arch() {
        for a in ["amd64", "arm64", "armhf"] {
            hello(a);
        }
        let o = Command::new(hello("amd64")).output().unwrap();
        assert_eq!(String::from_utf8_lossy(&o.stdout), "static-hello bits=64\n");
    }

    #[test]
    fn a_dynamic_binary_is_seen_as_such() {
        let (m, st) = elf_info(&fs::read("/bin/ls").unwrap()).unwrap();
        assert_eq!((m, st), (EM_X86_64, false));
    }
}
