//! The default seccomp filter of a pod's processes, as a classic-BPF program (pure: no syscall;
//! [`crate::sys::seccomp`] installs it in the fork child, right before `execve`).
//!
//! It is the deny-list equivalent of containerd's `RuntimeDefault` (Docker's default profile) for
//! a process without extra capabilities: that profile is an allow-list whose default action is
//! `EPERM`, and the syscalls it leaves out are exactly the ones a non-privileged container must
//! not make (mount and friends, module loading, kexec, keyrings, clock setting, namespaces,
//! io_uring, ...). Every syscall the kernel knows and the profile does not name is either in
//! [`DENIED`] below or is one the profile allows only with a capability the default set does not
//! hold (the same list); everything else is allowed. The trade-off: a syscall newer than this
//! list is allowed here where the allow-list would refuse it until reviewed; in exchange the
//! filter is a short, readable table per architecture instead of ~350 numbers.
//!
//! The program:
//! 1. loads `seccomp_data.arch`; another architecture (e.g. a 32-bit ABI on a 64-bit kernel) →
//!    `SECCOMP_RET_KILL_PROCESS`;
//! 2. on x86_64 refuses the x32 ABI (syscall number with bit 30 set) with `EPERM`;
//! 3. `EPERM` for every name of [`DENIED`] the architecture has;
//! 4. `clone` with any namespace flag in its flags (argument 0 on x86_64, aarch64 and armv7) →
//!    `EPERM`; `clone3` → `ENOSYS` (as Docker: the flags sit in memory the filter cannot read,
//!    and libc falls back to `clone`, whose flags it can);
//! 5. `personality` only with the values Docker allows (0, `PER_LINUX32`, `UNAME26`,
//!    `PER_LINUX32|UNAME26`, 0xffffffff to query), else `EPERM`;
//! 6. everything else: `SECCOMP_RET_ALLOW` (ptrace included, as Docker on kernels ≥ 4.8).

mod tables;

/// The syscalls refused with `EPERM`: the ones Docker's default profile does not allow to a
/// container without extra capabilities. Names an architecture lacks are skipped.
pub const DENIED: &[&str] = &[
    // Mounts and the file-handle escape (CVE "shocker").
    "open_by_handle_at",
    "name_to_handle_at",
    "mount",
    "umount",
    "umount2",
    "pivot_root",
    "move_mount",
    "open_tree",
    "fsopen",
    "fsconfig",
    "fsmount",
    "fspick",
    "mount_setattr",
    // The kernel itself: eBPF, kexec, modules.
    "bpf",
    "kexec_load",
    "kexec_file_load",
    "init_module",
    "finit_module",
    "delete_module",
    "create_module",
    "get_kernel_syms",
    "query_module",
    // Keyrings are not namespaced.
    "keyctl",
    "add_key",
    "request_key",
    // The host: reboot, swap, accounting, tracing, quotas, I/O ports, old interfaces.
    "reboot",
    "swapon",
    "swapoff",
    "acct",
    "perf_event_open",
    "userfaultfd",
    "lookup_dcookie",
    "quotactl",
    "quotactl_fd",
    "iopl",
    "ioperm",
    "nfsservctl",
    "uselib",
    "vm86",
    "vm86old",
    // The clock is not namespaced.
    "clock_settime",
    "clock_settime64",
    "settimeofday",
    "stime",
    "clock_adjtime",
    "clock_adjtime64",
    "syslog",
    // New namespaces and joining others.
    "unshare",
    "setns",
    // io_uring bypasses the filter for the operations it submits.
    "io_uring_setup",
    "io_uring_enter",
    "io_uring_register",
    // Other processes' memory and fds (CAP_SYS_PTRACE in Docker's profile).
    "kcmp",
    "process_vm_readv",
    "process_vm_writev",
    "pidfd_getfd",
    // NUMA placement (CAP_SYS_NICE).
    "move_pages",
    "mbind",
    "set_mempolicy",
    "get_mempolicy",
    "migrate_pages",
    // fanotify (CAP_SYS_ADMIN).
    "fanotify_init",
];

/// `clone` flags that create namespaces (NEWNS, NEWCGROUP, NEWUTS, NEWIPC, NEWUSER, NEWPID,
/// NEWNET). `CLONE_NEWTIME` (0x80) overlaps the exit-signal byte in `clone` and is `clone3`-only.
pub const CLONE_NS_FLAGS: u32 =
    0x0002_0000 | 0x0200_0000 | 0x0400_0000 | 0x0800_0000 | 0x1000_0000 | 0x2000_0000 | 0x4000_0000;

/// `personality` values allowed (Docker's): `PER_LINUX`, `PER_LINUX32`, `UNAME26`,
/// `PER_LINUX32|UNAME26` and the query 0xffffffff. The kernel takes an `unsigned int`, so only the
/// low 32 bits of the argument count.
pub const PERSONALITY_ALLOWED: &[u32] = &[0, 0x8, 0x2_0000, 0x2_0008, 0xffff_ffff];

/// `SECCOMP_RET_KILL_PROCESS`.
pub const RET_KILL_PROCESS: u32 = 0x8000_0000;
/// `SECCOMP_RET_ERRNO` (the errno goes in the low 16 bits).
pub const RET_ERRNO: u32 = 0x0005_0000;
/// `SECCOMP_RET_ALLOW`.
pub const RET_ALLOW: u32 = 0x7fff_0000;
/// `EPERM`.
pub const EPERM: u32 = 1;
/// `ENOSYS`.
pub const ENOSYS: u32 = 38;

/// The x32 ABI bit of x86_64 syscall numbers.
pub const X32_SYSCALL_BIT: u32 = 0x4000_0000;

/// An architecture the worker runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    /// x86_64 (development hosts and CI).
    X86_64,
    /// 64-bit ARM (Raspberry Pi 3/4/5 with a 64-bit OS).
    Aarch64,
    /// 32-bit ARM, EABI (Raspberry Pi OS 32-bit).
    Armv7,
}

impl Arch {
    /// Every architecture.
    pub const ALL: [Arch; 3] = [Arch::X86_64, Arch::Aarch64, Arch::Armv7];

    /// The architecture this binary was built for, if it is one of ours.
    pub fn current() -> Option<Arch> {
        if cfg!(target_arch = "x86_64") {
            Some(Arch::X86_64)
        } else if cfg!(target_arch = "aarch64") {
            Some(Arch::Aarch64)
        } else if cfg!(target_arch = "arm") {
            Some(Arch::Armv7)
        } else {
            None
        }
    }

    /// `AUDIT_ARCH_*`, as the kernel reports it in `seccomp_data.arch`.
    pub fn audit_arch(self) -> u32 {
        match self {
            Arch::X86_64 => 0xc000_003e,  // EM_X86_64 | 64BIT | LE
            Arch::Aarch64 => 0xc000_00b7, // EM_AARCH64 | 64BIT | LE
            Arch::Armv7 => 0x4000_0028,   // EM_ARM | LE
        }
    }

    /// The syscall-number table of the architecture (only the names the filter uses).
    pub fn table(self) -> &'static [(&'static str, u32)] {
        match self {
            Arch::X86_64 => tables::X86_64,
            Arch::Aarch64 => tables::AARCH64,
            Arch::Armv7 => tables::ARMV7,
        }
    }

    /// The number of `name` on this architecture, if it has it.
    pub fn nr(self, name: &str) -> Option<u32> {
        self.table()
            .iter()
            .find(|(n, _)| *n == name)
            .map(|&(_, nr)| nr)
    }
}

/// One classic-BPF instruction (`struct sock_filter`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Insn {
    /// Opcode.
    pub code: u16,
    /// Jump offset if true.
    pub jt: u8,
    /// Jump offset if false.
    pub jf: u8,
    /// Constant.
    pub k: u32,
}

impl Insn {
    /// `(code, jt, jf, k)`, for [`crate::sys::seccomp::SeccompProgram::new`].
    pub fn raw(self) -> (u16, u8, u8, u32) {
        (self.code, self.jt, self.jf, self.k)
    }
}

/// Classic-BPF opcodes used here.
pub mod op {
    /// `BPF_LD | BPF_W | BPF_ABS`: A = 32-bit word at offset k of `seccomp_data`.
    pub const LD_W_ABS: u16 = 0x20;
    /// `BPF_JMP | BPF_JEQ | BPF_K`.
    pub const JEQ_K: u16 = 0x15;
    /// `BPF_JMP | BPF_JSET | BPF_K`.
    pub const JSET_K: u16 = 0x45;
    /// `BPF_RET | BPF_K`.
    pub const RET_K: u16 = 0x06;
}

/// Offsets in `struct seccomp_data`.
pub mod data {
    /// `nr`.
    pub const NR: u32 = 0;
    /// `arch`.
    pub const ARCH: u32 = 4;
    /// Low 32 bits of `args[0]` (all our architectures are little-endian).
    pub const ARG0_LO: u32 = 16;
}

/// Where a jump goes, resolved when the program is assembled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    Next,
    ArchOk,
    Allow,
    Eperm,
    Enosys,
    Clone,
    Personality,
}

#[derive(Debug, Clone, Copy)]
enum Item {
    Ld(u32),
    Jmp(u16, u32, Target, Target),
    Ret(u32),
    Label(Target),
}

/// Builds the default program for `arch`.
///
/// Panics only if the program outgrew classic BPF's 8-bit jump offsets, which the unit tests
/// rule out for every architecture.
pub fn default_program(arch: Arch) -> Vec<Insn> {
    use Target::*;
    let mut items = vec![
        Item::Ld(data::ARCH),
        Item::Jmp(op::JEQ_K, arch.audit_arch(), ArchOk, Next),
        Item::Ret(RET_KILL_PROCESS),
        Item::Label(ArchOk),
        Item::Ld(data::NR),
    ];
    if arch == Arch::X86_64 {
        items.push(Item::Jmp(op::JSET_K, X32_SYSCALL_BIT, Eperm, Next));
    }
    for name in DENIED {
        if let Some(nr) = arch.nr(name) {
            items.push(Item::Jmp(op::JEQ_K, nr, Eperm, Next));
        }
    }
    let special = [
        ("clone", Clone),
        ("clone3", Enosys),
        ("personality", Personality),
    ];
    for (name, target) in special {
        if let Some(nr) = arch.nr(name) {
            items.push(Item::Jmp(op::JEQ_K, nr, target, Next));
        }
    }
    // Classic BPF only jumps forward: the argument checks come first, the shared returns last.
    items.push(Item::Ret(RET_ALLOW));
    items.push(Item::Label(Clone));
    items.push(Item::Ld(data::ARG0_LO));
    items.push(Item::Jmp(op::JSET_K, CLONE_NS_FLAGS, Eperm, Allow));
    items.push(Item::Label(Personality));
    items.push(Item::Ld(data::ARG0_LO));
    for &v in PERSONALITY_ALLOWED {
        items.push(Item::Jmp(op::JEQ_K, v, Allow, Next));
    }
    items.push(Item::Label(Eperm));
    items.push(Item::Ret(RET_ERRNO | EPERM));
    items.push(Item::Label(Enosys));
    items.push(Item::Ret(RET_ERRNO | ENOSYS));
    items.push(Item::Label(Allow));
    items.push(Item::Ret(RET_ALLOW));
    assemble(&items)
}

fn assemble(items: &[Item]) -> Vec<Insn> {
    // Instruction index of each label.
    let mut labels = Vec::new();
    let mut pc = 0usize;
    for it in items {
        match it {
            Item::Label(t) => labels.push((*t, pc)),
            _ => pc += 1,
        }
    }
    let at = |t: Target, pc: usize| -> u8 {
        if t == Target::Next {
            return 0;
        }
        let dest = labels
            .iter()
            .find(|(l, _)| *l == t)
            .map(|&(_, p)| p)
            .expect("every jump target is a label of the program");
        let off = dest
            .checked_sub(pc + 1)
            .expect("classic BPF jumps only forward");
        u8::try_from(off).expect("seccomp jump offset fits in 8 bits")
    };
    let mut out = Vec::with_capacity(pc);
    for it in items {
        let pc = out.len();
        match *it {
            Item::Label(_) => {}
            Item::Ld(k) => out.push(Insn {
                code: op::LD_W_ABS,
                jt: 0,
                jf: 0,
                k,
            }),
            Item::Ret(k) => out.push(Insn {
                code: op::RET_K,
                jt: 0,
                jf: 0,
                k,
            }),
            Item::Jmp(code, k, t, f) => out.push(Insn {
                code,
                jt: at(t, pc),
                jf: at(f, pc),
                k,
            }),
        }
    }
    out
}

/// A classic-BPF interpreter for the subset [`default_program`] emits, for tests (here and in the
/// device-filter tests): runs `prog` over `seccomp_data` made of `(arch, nr, args)` and returns the
/// `SECCOMP_RET_*` value.
#[cfg(test)]
pub fn run(prog: &[Insn], arch: u32, nr: u32, args: [u64; 6]) -> u32 {
    let word = |off: u32| -> u32 {
        match off {
            0 => nr,
            4 => arch,
            o if (16..64).contains(&o) && o % 4 == 0 => {
                let a = args[((o - 16) / 8) as usize];
                if (o - 16) % 8 == 0 {
                    a as u32
                } else {
                    (a >> 32) as u32
                }
            }
            o => panic!("load from offset {o}"),
        }
    };
    let mut acc = 0u32;
    let mut pc = 0usize;
    loop {
        let i = prog[pc];
        pc += 1;
        match i.code {
            op::LD_W_ABS => acc = word(i.k),
            op::JEQ_K | op::JSET_K => {
                let hit = if i.code == op::JEQ_K {
                    acc == i.k
                } else {
                    acc & i.k != 0
                };
                pc += usize::from(if hit { i.jt } else { i.jf });
            }
            op::RET_K => return i.k,
            c => panic!("opcode {c:#x}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn header(arch: Arch) -> &'static str {
        match arch {
            Arch::X86_64 => "/usr/include/x86_64-linux-gnu/asm/unistd_64.h",
            Arch::Aarch64 => "/usr/aarch64-linux-gnu/include/asm-generic/unistd.h",
            Arch::Armv7 => "/usr/arm-linux-gnueabihf/include/asm/unistd-eabi.h",
        }
    }

    /// `#define __NR_<name> <n>` and `#define __NR_<name> (__NR_SYSCALL_BASE + <n>)` lines.
    fn parse_header(text: &str) -> BTreeMap<String, u32> {
        let mut out = BTreeMap::new();
        for line in text.lines() {
            let Some(rest) = line.strip_prefix("#define __NR_") else {
                continue;
            };
            let mut parts = rest.splitn(2, char::is_whitespace);
            let (Some(name), Some(value)) = (parts.next(), parts.next()) else {
                continue;
            };
            let value = value.trim();
            let value = value
                .strip_prefix("(__NR_SYSCALL_BASE +")
                .and_then(|v| v.strip_suffix(')'))
                .unwrap_or(value)
                .trim();
            if let Ok(n) = value.parse() {
                out.entry(name.to_owned()).or_insert(n);
            }
        }
        out
    }

    /// Names the header defines but the architecture does not have at runtime.
    fn not_on(arch: Arch) -> &'static [&'static str] {
        match arch {
            // Defined in the generic header only for `__BITS_PER_LONG == 32`.
            Arch::Aarch64 => &["clock_settime64", "clock_adjtime64"],
            _ => &[],
        }
    }

    #[test]
    fn tables_match_kernel_headers() {
        for arch in Arch::ALL {
            let path = header(arch);
            let text = std::fs::read_to_string(path).unwrap_or_else(|e| {
                panic!(
                    "{path}: {e} (install linux-libc-dev, linux-libc-dev-arm64-cross and \
                     linux-libc-dev-armhf-cross)"
                )
            });
            let kernel = parse_header(&text);
            assert!(kernel.len() > 250, "{path}: parsed only {}", kernel.len());
            for &(name, nr) in arch.table() {
                assert_eq!(kernel.get(name), Some(&nr), "{arch:?} {name}");
                assert!(!not_on(arch).contains(&name), "{arch:?} {name}");
            }
            // A name missing from a table is missing from the architecture.
            for name in DENIED.iter().chain(&["clone", "clone3", "personality"]) {
                if arch.nr(name).is_none() {
                    assert!(
                        !kernel.contains_key(*name) || not_on(arch).contains(name),
                        "{arch:?} has {name} ({:?}) but the table lacks it",
                        kernel.get(*name)
                    );
                }
            }
            // No table entry outside what the filter uses.
            for &(name, _) in arch.table() {
                assert!(
                    DENIED.contains(&name) || ["clone", "clone3", "personality"].contains(&name),
                    "{name}"
                );
            }
        }
    }

    fn eperm() -> u32 {
        RET_ERRNO | EPERM
    }

    #[test]
    fn program_shape_per_arch() {
        for arch in Arch::ALL {
            let p = default_program(arch);
            assert!(p.len() < 200, "{arch:?}: {} instructions", p.len());
            // Arch check first: load arch, compare, kill on mismatch.
            assert_eq!(p[0].code, op::LD_W_ABS);
            assert_eq!(p[0].k, data::ARCH);
            assert_eq!(
                (p[1].code, p[1].k, p[1].jt, p[1].jf),
                (op::JEQ_K, arch.audit_arch(), 1, 0)
            );
            assert_eq!((p[2].code, p[2].k), (op::RET_K, RET_KILL_PROCESS));
            assert_eq!((p[3].code, p[3].k), (op::LD_W_ABS, data::NR));
            // Every denied syscall the arch has: one JEQ whose true branch returns EPERM.
            for name in DENIED {
                let Some(nr) = arch.nr(name) else { continue };
                let (pc, i) = p
                    .iter()
                    .enumerate()
                    .find(|(_, i)| i.code == op::JEQ_K && i.k == nr)
                    .unwrap_or_else(|| panic!("{arch:?}: no check of {name}"));
                let dest = p[pc + 1 + usize::from(i.jt)];
                assert_eq!((dest.code, dest.k), (op::RET_K, eperm()), "{arch:?} {name}");
            }
            // The clone check tests the namespace flags of argument 0.
            let jset = p
                .iter()
                .position(|i| i.code == op::JSET_K && i.k == CLONE_NS_FLAGS)
                .expect("clone flags check");
            assert_eq!(
                (p[jset - 1].code, p[jset - 1].k),
                (op::LD_W_ABS, data::ARG0_LO)
            );
            // Allowed by default: the instruction after the last syscall check returns ALLOW.
            assert!(p.iter().any(|i| i.code == op::RET_K && i.k == RET_ALLOW));
        }
    }

    #[test]
    fn interpreted_verdicts() {
        let ns = u64::from(CLONE_NS_FLAGS);
        for arch in Arch::ALL {
            let p = default_program(arch);
            let a = arch.audit_arch();
            let nr = |n: &str| arch.nr(n).unwrap();
            let run0 = |n: u32| run(&p, a, n, [0; 6]);
            // Wrong architecture: killed, whatever the syscall.
            for other in Arch::ALL.iter().filter(|&&o| o != arch) {
                assert_eq!(run(&p, other.audit_arch(), 0, [0; 6]), RET_KILL_PROCESS);
            }
            assert_eq!(run(&p, 0x4000_0003, 1, [0; 6]), RET_KILL_PROCESS); // i386
            for name in DENIED {
                if let Some(n) = arch.nr(name) {
                    assert_eq!(run0(n), eperm(), "{arch:?} {name}");
                }
            }
            // Ordinary syscalls (read, write, ...): numbers 0..=3 and 63/64 are never denied.
            for n in [0, 1, 2, 3, 63, 64, 200] {
                if !DENIED.iter().any(|d| arch.nr(d) == Some(n))
                    && ![nr("clone"), nr("clone3"), nr("personality")].contains(&n)
                {
                    assert_eq!(run0(n), RET_ALLOW, "{arch:?} nr {n}");
                }
            }
            // clone: plain thread/fork flags pass, each namespace flag is refused.
            let clone = nr("clone");
            let thread = 0x003d_0f00u64; // glibc's pthread_create flags
            assert_eq!(run(&p, a, clone, [thread, 0, 0, 0, 0, 0]), RET_ALLOW);
            assert_eq!(run(&p, a, clone, [17, 0, 0, 0, 0, 0]), RET_ALLOW); // fork: SIGCHLD
            for bit in 0..32 {
                let f = 1u64 << bit;
                if ns & f != 0 {
                    assert_eq!(run(&p, a, clone, [f | 17, 0, 0, 0, 0, 0]), eperm());
                }
            }
            assert_eq!(run0(nr("clone3")), RET_ERRNO | ENOSYS);
            let pers = nr("personality");
            for &v in PERSONALITY_ALLOWED {
                assert_eq!(run(&p, a, pers, [u64::from(v), 0, 0, 0, 0, 0]), RET_ALLOW);
            }
            assert_eq!(run(&p, a, pers, [0x0040_0000, 0, 0, 0, 0, 0]), eperm()); // READ_IMPLIES_EXEC
            if arch == Arch::X86_64 {
                assert_eq!(run0(X32_SYSCALL_BIT), eperm()); // x32 read
                assert_eq!(run0(X32_SYSCALL_BIT | 1), eperm());
                assert_eq!(run0(101), RET_ALLOW); // ptrace
            }
        }
    }
}
