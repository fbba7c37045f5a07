//! OCI platforms (`os`/`architecture`/`variant` of an index entry or a config) → Bramble's
//! [`Arch`].
//!
//! linux/arm64 (variant none or v8) = aarch64, linux/arm/v7 = armv7, linux/arm/v6 = armv6,
//! linux/amd64 = x86_64, linux/riscv64 = riscv64. Everything else (windows, s390x, ppc64le, the
//! `unknown/unknown` attestation manifests of buildx) is skipped.

use bramble_wire::Arch;

/// The architecture of `os`/`architecture`/`variant`, or `None` for a platform Bramble does not
/// run.
pub fn arch_of(os: &str, architecture: &str, variant: Option<&str>) -> Option<Arch> {
    if os != "linux" {
        return None;
    }
    let variant = variant.filter(|v| !v.is_empty());
    match (architecture, variant) {
        ("arm64" | "aarch64", None | Some("v8" | "v8.0")) => Some(Arch::Aarch64),
        ("arm", Some("v7")) => Some(Arch::Armv7),
        ("arm", Some("v6")) => Some(Arch::Armv6),
        ("amd64" | "x86_64", None) => Some(Arch::X86_64),
        ("riscv64", None) => Some(Arch::Riscv64),
        _ => None,
    }
}

/// The OCI name of `arch` (`linux/arm64`, `linux/arm/v7`, …), as in the scheduler's reasons.
pub fn platform_name(arch: Arch) -> &'static str {
    match arch {
        Arch::Aarch64 => "linux/arm64",
        Arch::Armv7 => "linux/arm/v7",
        Arch::Armv6 => "linux/arm/v6",
        Arch::X86_64 => "linux/amd64",
        Arch::Riscv64 => "linux/riscv64",
        Arch::Mcu => "none",
    }
}

/// `os/architecture[/variant]` for messages.
pub fn describe(os: &str, architecture: &str, variant: Option<&str>) -> String {
    match variant.filter(|v| !v.is_empty()) {
        Some(v) => format!("{os}/{architecture}/{v}"),
        None => format!("{os}/{architecture}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn platforms() {
        assert_eq!(arch_of("linux", "arm64", None), Some(Arch::Aarch64));
        assert_eq!(arch_of("linux", "arm64", Some("v8")), Some(Arch::Aarch64));
        assert_eq!(arch_of("linux", "arm64", Some("")), Some(Arch::Aarch64));
        assert_eq!(arch_of("linux", "arm", Some("v7")), Some(Arch::Armv7));
        assert_eq!(arch_of("linux", "arm", Some("v6")), Some(Arch::Armv6));
        assert_eq!(arch_of("linux", "arm", Some("v5")), None);
        assert_eq!(arch_of("linux", "arm", None), None);
        assert_eq!(arch_of("linux", "amd64", None), Some(Arch::X86_64));
        assert_eq!(arch_of("linux", "amd64", Some("v3")), None);
        assert_eq!(arch_of("linux", "riscv64", None), Some(Arch::Riscv64));
        assert_eq!(arch_of("linux", "s390x", None), None);
        assert_eq!(arch_of("windows", "amd64", None), None);
        assert_eq!(arch_of("unknown", "unknown", None), None);
        for a in [
            Arch::Aarch64,
            Arch::Armv7,
            Arch::Armv6,
            Arch::X86_64,
            Arch::Riscv64,
        ] {
            let p = platform_name(a);
            let mut it = p.split('/');
            let (os, ar, v) = (it.next().unwrap(), it.next().unwrap(), it.next());
            assert_eq!(arch_of(os, ar, v), Some(a));
        }
        assert_eq!(describe("linux", "arm", Some("v7")), "linux/arm/v7");
        assert_eq!(describe("linux", "amd64", None), "linux/amd64");
    }
}
