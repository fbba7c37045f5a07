//! PLACEHOLDER: OCI platform names ↔ Bramble architectures (contract: "Platforms").

use bramble_wire::Arch;

/// The architecture of an OCI platform, if Bramble runs it.
pub fn arch_of(os: &str, architecture: &str, variant: Option<&str>) -> Option<Arch> {
    if os != "linux" {
        return None;
    }
    match (architecture, variant) {
        ("arm64", None | Some("v8")) => Some(Arch::Aarch64),
        ("arm", Some("v7")) => Some(Arch::Armv7),
        ("arm", Some("v6")) => Some(Arch::Armv6),
        ("amd64", _) => Some(Arch::X86_64),
        ("riscv64", _) => Some(Arch::Riscv64),
        _ => None,
    }
}

/// The OCI platform name of an architecture (`linux/arm/v7`).
pub fn platform_name(arch: Arch) -> &'static str {
    match arch {
        Arch::Aarch64 => "linux/arm64",
        Arch::Armv7 => "linux/arm/v7",
        Arch::Armv6 => "linux/arm/v6",
        Arch::X86_64 => "linux/amd64",
        Arch::Riscv64 => "linux/riscv64",
        _ => "none",
    }
}
