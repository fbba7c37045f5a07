//! The device allow-list of a pod (pure): which device nodes its processes may open (`r`, `w`)
//! or create (`m`). Everything not allowed is denied.
//!
//! The default set is containerd's: `mknod` of any node, and read/write of `null`, `zero`,
//! `full`, `random`, `urandom`, `tty`, `console`, `ptmx`, the ptys and `tun`. On cgroup v1 the
//! rules are written to the pod cgroup's `devices.deny` (`a`) and `devices.allow`; on cgroup v2
//! they become an eBPF `BPF_PROG_TYPE_CGROUP_DEVICE` program ([`DeviceRules::ebpf_program`],
//! loaded and attached by `sys::bpf`), as runc and crun do. A `privileged` pod gets no filter.

use std::fmt;
use std::str::FromStr;

/// The kind of device a rule matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceKind {
    /// Both (`a`).
    All,
    /// Character devices (`c`).
    Char,
    /// Block devices (`b`).
    Block,
}

/// Access bits: read, write, mknod.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Access(u8);

impl Access {
    /// `r`: open for reading.
    pub const READ: Access = Access(1);
    /// `w`: open for writing.
    pub const WRITE: Access = Access(2);
    /// `m`: mknod.
    pub const MKNOD: Access = Access(4);
    /// `rwm`.
    pub const ALL: Access = Access(7);

    /// Whether every bit of `other` is in `self`.
    pub fn contains(self, other: Access) -> bool {
        self.0 & other.0 == other.0
    }
}

impl std::ops::BitOr for Access {
    type Output = Access;
    fn bitor(self, o: Access) -> Access {
        Access(self.0 | o.0)
    }
}

/// One allow rule: `<kind> <major>:<minor> <access>`, `None` numbers are `*`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceRule {
    /// Device kind.
    pub kind: DeviceKind,
    /// Major number (`None`: any).
    pub major: Option<u32>,
    /// Minor number (`None`: any).
    pub minor: Option<u32>,
    /// Allowed access.
    pub access: Access,
}

impl DeviceRule {
    /// A character device rule.
    pub const fn char(major: Option<u32>, minor: Option<u32>, access: Access) -> DeviceRule {
        DeviceRule {
            kind: DeviceKind::Char,
            major,
            minor,
            access,
        }
    }

    /// A block device rule.
    pub const fn block(major: Option<u32>, minor: Option<u32>, access: Access) -> DeviceRule {
        DeviceRule {
            kind: DeviceKind::Block,
            major,
            minor,
            access,
        }
    }

    /// Whether the rule allows `access` to the device `kind` `major:minor` (`kind` is `Char` or
    /// `Block`).
    pub fn allows(&self, kind: DeviceKind, major: u32, minor: u32, access: Access) -> bool {
        (self.kind == DeviceKind::All || self.kind == kind)
            && self.major.is_none_or(|m| m == major)
            && self.minor.is_none_or(|m| m == minor)
            && self.access.contains(access)
    }
}

impl fmt::Display for DeviceRule {
    /// The cgroup v1 `devices.allow` syntax: `c 1:3 rwm`, `b *:* m`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind {
            DeviceKind::All => 'a',
            DeviceKind::Char => 'c',
            DeviceKind::Block => 'b',
        };
        let num = |n: Option<u32>| n.map_or_else(|| "*".to_owned(), |n| n.to_string());
        write!(f, "{kind} {}:{} ", num(self.major), num(self.minor))?;
        for (bit, c) in [
            (Access::READ, 'r'),
            (Access::WRITE, 'w'),
            (Access::MKNOD, 'm'),
        ] {
            if self.access.contains(bit) {
                write!(f, "{c}")?;
            }
        }
        Ok(())
    }
}

impl FromStr for DeviceRule {
    type Err = String;

    /// Parses `c 1:3 rwm` (the v1 syntax; `*` for any number).
    fn from_str(s: &str) -> Result<DeviceRule, String> {
        let bad = || format!("device rule {s:?}: expected `<a|b|c> <major|*>:<minor|*> <rwm>`");
        let mut parts = s.split_whitespace();
        let kind = match parts.next() {
            Some("a") => DeviceKind::All,
            Some("c") => DeviceKind::Char,
            Some("b") => DeviceKind::Block,
            _ => return Err(bad()),
        };
        let (major, minor) = parts
            .next()
            .and_then(|n| n.split_once(':'))
            .ok_or_else(bad)?;
        let num = |n: &str| -> Result<Option<u32>, String> {
            if n == "*" {
                Ok(None)
            } else {
                n.parse().map(Some).map_err(|_| bad())
            }
        };
        let (major, minor) = (num(major)?, num(minor)?);
        let mut access = Access(0);
        for c in parts.next().ok_or_else(bad)?.chars() {
            access = access
                | match c {
                    'r' => Access::READ,
                    'w' => Access::WRITE,
                    'm' => Access::MKNOD,
                    _ => return Err(bad()),
                };
        }
        if parts.next().is_some() || access.0 == 0 {
            return Err(bad());
        }
        Ok(DeviceRule {
            kind,
            major,
            minor,
            access,
        })
    }
}

/// An allow-list of device rules over "deny everything".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceRules {
    rules: Vec<DeviceRule>,
}

impl Default for DeviceRules {
    fn default() -> Self {
        DeviceRules::containerd_default()
    }
}

impl DeviceRules {
    /// Nothing allowed.
    pub fn deny_all() -> DeviceRules {
        DeviceRules { rules: Vec::new() }
    }

    /// containerd's default set.
    pub fn containerd_default() -> DeviceRules {
        let rwm = Access::ALL;
        let c = |maj, min| DeviceRule::char(Some(maj), Some(min), rwm);
        DeviceRules {
            rules: vec![
                DeviceRule::char(None, None, Access::MKNOD),
                DeviceRule::block(None, None, Access::MKNOD),
                c(1, 3),                                // null
                c(1, 5),                                // zero
                c(1, 7),                                // full
                c(1, 8),                                // random
                c(1, 9),                                // urandom
                c(5, 0),                                // tty
                c(5, 1),                                // console
                c(5, 2),                                // ptmx
                DeviceRule::char(Some(136), None, rwm), // pts
                c(10, 200),                             // tun
            ],
        }
    }

    /// Adds a rule (a per-pod grant).
    pub fn allow(&mut self, rule: DeviceRule) -> &mut Self {
        self.rules.push(rule);
        self
    }

    /// The rules.
    pub fn rules(&self) -> &[DeviceRule] {
        &self.rules
    }

    /// Whether some rule allows `access` to `kind` `major:minor`.
    pub fn allows(&self, kind: DeviceKind, major: u32, minor: u32, access: Access) -> bool {
        self.rules
            .iter()
            .any(|r| r.allows(kind, major, minor, access))
    }

    /// The lines to write, one `write` each, to a v1 `devices.allow` (after `a` to
    /// `devices.deny`).
    pub fn v1_allow_lines(&self) -> Vec<String> {
        self.rules.iter().map(DeviceRule::to_string).collect()
    }

    /// The cgroup v2 device program: for `struct bpf_cgroup_dev_ctx { u32 access_type; u32
    /// major; u32 minor; }` (`access_type` = access << 16 | type) it returns 1 (allow) if a rule
    /// matches, else 0 (deny). Each rule is a block that jumps to the next block on a mismatch.
    pub fn ebpf_program(&self) -> Vec<EbpfInsn> {
        use ebpf::*;
        let mut out = vec![
            ldx_w(R2, R1, 0),         // r2 = access_type
            alu32_k(AND, R2, 0xffff), // r2 = type
            ldx_w(R3, R1, 0),         // r3 = access_type
            alu32_k(RSH, R3, 16),     // r3 = access
            ldx_w(R4, R1, 4),         // r4 = major
            ldx_w(R5, R1, 8),         // r5 = minor
        ];
        for r in &self.rules {
            let mut block = Vec::new();
            // Jumps carry the number of instructions to skip to the end of the block; they are
            // patched below once the block's length is known.
            let mut jumps = Vec::new();
            let ty = match r.kind {
                DeviceKind::All => None,
                DeviceKind::Char => Some(DEVCG_DEV_CHAR),
                DeviceKind::Block => Some(DEVCG_DEV_BLOCK),
            };
            if let Some(ty) = ty {
                jumps.push(block.len());
                block.push(jne_k(R2, ty, 0));
            }
            let acc = devcg_access(r.access);
            if acc != DEVCG_ACC_ALL {
                // Every requested bit must be allowed: (access & allowed) == access.
                block.push(mov32_x(R1, R3));
                block.push(alu32_k(AND, R1, acc));
                jumps.push(block.len());
                block.push(jne_x(R1, R3, 0));
            }
            if let Some(m) = r.major {
                jumps.push(block.len());
                block.push(jne_k(R4, m, 0));
            }
            if let Some(m) = r.minor {
                jumps.push(block.len());
                block.push(jne_k(R5, m, 0));
            }
            block.push(mov32_k(R0, 1));
            block.push(exit());
            let len = block.len();
            for j in jumps {
                block[j].off = (len - j - 1) as i16;
            }
            out.extend(block);
        }
        out.push(mov32_k(R0, 0));
        out.push(exit());
        out
    }
}

/// One eBPF instruction (`struct bpf_insn`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EbpfInsn {
    /// Opcode.
    pub code: u8,
    /// Destination register.
    pub dst: u8,
    /// Source register.
    pub src: u8,
    /// Offset (jumps: instructions to skip).
    pub off: i16,
    /// Immediate.
    pub imm: i32,
}

impl EbpfInsn {
    /// The instruction as the kernel reads it (little-endian hosts: `dst` in the low nibble).
    pub fn to_u64(self) -> u64 {
        u64::from(self.code)
            | (u64::from(self.dst & 0xf) << 8)
            | (u64::from(self.src & 0xf) << 12)
            | (u64::from(self.off as u16) << 16)
            | (u64::from(self.imm as u32) << 32)
    }
}

/// eBPF encodings used by the device program.
pub mod ebpf {
    use super::{Access, EbpfInsn};

    /// Registers.
    pub const R0: u8 = 0;
    /// Context pointer on entry.
    pub const R1: u8 = 1;
    /// Scratch.
    pub const R2: u8 = 2;
    /// Scratch.
    pub const R3: u8 = 3;
    /// Scratch.
    pub const R4: u8 = 4;
    /// Scratch.
    pub const R5: u8 = 5;

    /// `BPF_LDX | BPF_MEM | BPF_W`.
    pub const LDX_W: u8 = 0x61;
    /// `BPF_ALU` class.
    pub const ALU: u8 = 0x04;
    /// `BPF_JMP` class.
    pub const JMP: u8 = 0x05;
    /// `BPF_AND`.
    pub const AND: u8 = 0x50;
    /// `BPF_RSH`.
    pub const RSH: u8 = 0x70;
    /// `BPF_MOV`.
    pub const MOV: u8 = 0xb0;
    /// `BPF_JNE`.
    pub const JNE: u8 = 0x50;
    /// `BPF_EXIT`.
    pub const EXIT: u8 = 0x90;
    /// `BPF_X` (source is a register).
    pub const X: u8 = 0x08;

    /// `BPF_DEVCG_DEV_BLOCK`.
    pub const DEVCG_DEV_BLOCK: u32 = 1;
    /// `BPF_DEVCG_DEV_CHAR`.
    pub const DEVCG_DEV_CHAR: u32 = 2;
    /// `BPF_DEVCG_ACC_MKNOD | READ | WRITE`.
    pub const DEVCG_ACC_ALL: u32 = 7;

    /// The `BPF_DEVCG_ACC_*` bits of `a` (mknod 1, read 2, write 4).
    pub fn devcg_access(a: Access) -> u32 {
        let mut v = 0;
        if a.contains(Access::MKNOD) {
            v |= 1;
        }
        if a.contains(Access::READ) {
            v |= 2;
        }
        if a.contains(Access::WRITE) {
            v |= 4;
        }
        v
    }

    fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> EbpfInsn {
        EbpfInsn {
            code,
            dst,
            src,
            off,
            imm,
        }
    }

    /// `dst = *(u32 *)(src + off)`.
    pub fn ldx_w(dst: u8, src: u8, off: i16) -> EbpfInsn {
        insn(LDX_W, dst, src, off, 0)
    }
    /// 32-bit ALU with an immediate (`op` is `AND`, `RSH`, `MOV`).
    pub fn alu32_k(op: u8, dst: u8, imm: u32) -> EbpfInsn {
        insn(ALU | op, dst, 0, 0, imm as i32)
    }
    /// `dst = imm` (32-bit, zero-extended).
    pub fn mov32_k(dst: u8, imm: u32) -> EbpfInsn {
        alu32_k(MOV, dst, imm)
    }
    /// `dst = src` (32-bit, zero-extended).
    pub fn mov32_x(dst: u8, src: u8) -> EbpfInsn {
        insn(ALU | MOV | X, dst, src, 0, 0)
    }
    /// `if dst != imm goto +off` (64-bit compare; the registers hold zero-extended 32-bit values
    /// and every immediate is below 2^31).
    pub fn jne_k(dst: u8, imm: u32, off: i16) -> EbpfInsn {
        insn(JMP | JNE, dst, 0, off, imm as i32)
    }
    /// `if dst != src goto +off`.
    pub fn jne_x(dst: u8, src: u8, off: i16) -> EbpfInsn {
        insn(JMP | JNE | X, dst, src, off, 0)
    }
    /// `exit` (returns r0).
    pub fn exit() -> EbpfInsn {
        insn(JMP | EXIT, 0, 0, 0, 0)
    }
}

/// A tiny interpreter for the instructions [`DeviceRules::ebpf_program`] emits, for tests.
#[cfg(test)]
pub fn run_ebpf(prog: &[EbpfInsn], access_type: u32, major: u32, minor: u32) -> u64 {
    use ebpf::*;
    let ctx = [access_type, major, minor];
    let mut r = [0u64; 11];
    let mut pc = 0usize;
    loop {
        let i = prog[pc];
        pc += 1;
        let (d, s) = (usize::from(i.dst), usize::from(i.src));
        match i.code {
            LDX_W => {
                assert_eq!(s, 1, "loads only from the context");
                r[d] = u64::from(ctx[(i.off / 4) as usize]);
            }
            c if c == ALU | AND => r[d] = u64::from(r[d] as u32 & i.imm as u32),
            c if c == ALU | RSH => r[d] = u64::from((r[d] as u32) >> i.imm),
            c if c == ALU | MOV => r[d] = u64::from(i.imm as u32),
            c if c == ALU | MOV | X => r[d] = u64::from(r[s] as u32),
            c if c == JMP | JNE => {
                if r[d] != i.imm as i64 as u64 {
                    pc += i.off as usize;
                }
            }
            c if c == JMP | JNE | X => {
                if r[d] != r[s] {
                    pc += i.off as usize;
                }
            }
            c if c == JMP | EXIT => return r[0],
            c => panic!("opcode {c:#x}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::ebpf::*;
    use super::*;

    #[test]
    fn default_set_and_v1_lines() {
        let d = DeviceRules::default();
        assert_eq!(
            d.v1_allow_lines(),
            [
                "c *:* m",
                "b *:* m",
                "c 1:3 rwm",
                "c 1:5 rwm",
                "c 1:7 rwm",
                "c 1:8 rwm",
                "c 1:9 rwm",
                "c 5:0 rwm",
                "c 5:1 rwm",
                "c 5:2 rwm",
                "c 136:* rwm",
                "c 10:200 rwm",
            ]
        );
        for l in d.v1_allow_lines() {
            assert_eq!(l.parse::<DeviceRule>().unwrap().to_string(), l);
        }
        let rw = Access::READ | Access::WRITE;
        assert!(d.allows(DeviceKind::Char, 1, 3, rw));
        assert!(d.allows(DeviceKind::Char, 136, 42, rw));
        assert!(d.allows(DeviceKind::Block, 7, 0, Access::MKNOD));
        assert!(!d.allows(DeviceKind::Block, 7, 0, Access::READ));
        assert!(!d.allows(DeviceKind::Char, 1, 1, Access::READ)); // /dev/mem
        assert!(!d.allows(DeviceKind::Char, 4, 0, Access::WRITE)); // tty0
        // A per-pod grant.
        let mut g = DeviceRules::default();
        g.allow("b 7:0 rw".parse().unwrap());
        assert!(g.allows(DeviceKind::Block, 7, 0, rw));
        assert!(!g.allows(DeviceKind::Block, 7, 0, Access::ALL));
        assert!(!g.allows(DeviceKind::Block, 7, 1, Access::READ));
        for bad in [
            "x 1:3 r",
            "c 1 r",
            "c 1:3",
            "c 1:3 rq",
            "c a:3 r",
            "c 1:3 r extra",
        ] {
            let e = bad.parse::<DeviceRule>().unwrap_err();
            assert!(e.contains(bad), "{e}");
        }
    }

    #[test]
    fn ebpf_program_matches_the_rules() {
        let mut rules = DeviceRules::default();
        rules.allow("a 250:* r".parse().unwrap());
        let p = rules.ebpf_program();
        assert!(p.len() < 128, "{} instructions", p.len());
        // Prologue reads the context; the program ends with "deny".
        assert_eq!(p[0], ldx_w(R2, R1, 0));
        assert_eq!(p[p.len() - 2..], [mov32_k(R0, 0), exit()]);
        let kinds = [
            (DeviceKind::Block, DEVCG_DEV_BLOCK),
            (DeviceKind::Char, DEVCG_DEV_CHAR),
        ];
        let accesses = [
            Access::READ,
            Access::WRITE,
            Access::MKNOD,
            Access::READ | Access::WRITE,
            Access::ALL,
        ];
        let devices = [
            (1, 3),
            (1, 1),
            (1, 9),
            (5, 2),
            (5, 3),
            (136, 0),
            (136, 9999),
            (10, 200),
            (10, 201),
            (7, 0),
            (8, 1),
            (250, 1),
        ];
        for (kind, ty) in kinds {
            for access in accesses {
                for (maj, min) in devices {
                    let at = (devcg_access(access) << 16) | ty;
                    let want = rules.allows(kind, maj, min, access);
                    assert_eq!(
                        run_ebpf(&p, at, maj, min),
                        u64::from(want),
                        "{kind:?} {maj}:{min} {access:?}"
                    );
                }
            }
        }
        // Nothing allowed: the prologue and "deny".
        assert_eq!(DeviceRules::deny_all().ebpf_program().len(), 8);
    }

    #[test]
    fn ebpf_encoding() {
        // `r2 = *(u32 *)(r1 + 4)`: 0x61, dst 2, src 1, off 4.
        assert_eq!(ldx_w(R2, R1, 4).to_u64(), 0x0000_0000_0004_1261);
        assert_eq!(exit().to_u64(), 0x95);
        assert_eq!(jne_k(R4, 136, 3).to_u64(), 0x0000_0088_0003_0455);
    }
}
