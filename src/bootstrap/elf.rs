//! The little of an ELF file bootstrap needs before a binary goes to a node: which machine it is
//! built for (`e_ident` class and data, `e_machine`) and whether it has a dynamic loader
//! (`PT_INTERP`). Read here, on the controller, because a binary built for another architecture
//! cannot run here to say so.
//!
//! Must not: run the binary, read past the bytes it is given (every offset is checked, bad
//! input is an [`ElfError`], never a panic), or guess a machine it does not know.

use std::fmt;

/// The architectures homelab installs on, as the node's `uname -m` and the binary's
/// `e_machine` name them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    /// `EM_X86_64` (62), 64-bit little-endian; `uname -m`: `x86_64` (or `amd64`).
    X86_64,
    /// `EM_AARCH64` (183), 64-bit little-endian; `uname -m`: `aarch64` (or `arm64`).
    Aarch64,
    /// `EM_ARM` (40), 32-bit little-endian; `uname -m`: `armv7l`.
    Arm,
}

pub const EM_ARM: u16 = 40;
pub const EM_X86_64: u16 = 62;
pub const EM_AARCH64: u16 = 183;
const PT_INTERP: u32 = 3;

impl Arch {
    /// The architecture a node's `uname -m` names, if homelab knows it.
    pub fn from_uname(machine: &str) -> Option<Arch> {
        match machine {
            "x86_64" | "amd64" => Some(Arch::X86_64),
            "aarch64" | "arm64" => Some(Arch::Aarch64),
            "armv7l" => Some(Arch::Arm),
            _ => None,
        }
    }

    /// The Rust target a homelab for this architecture is built for (static, musl).
    pub fn rust_target(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64-unknown-linux-musl",
            Arch::Aarch64 => "aarch64-unknown-linux-musl",
            Arch::Arm => "armv7-unknown-linux-musleabihf",
        }
    }
}

impl fmt::Display for Arch {
    /// As `uname -m` spells it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Arch::X86_64 => "x86_64",
            Arch::Aarch64 => "aarch64",
            Arch::Arm => "armv7l",
        })
    }
}

/// What bootstrap knows of a binary from its headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Elf {
    pub arch: Arch,
    /// The dynamic loader (`PT_INTERP`), when there is one. `None`: a static binary, which
    /// needs no library at all (the kernel loads nothing else for it).
    pub interpreter: Option<String>,
}

/// Why a file is not a binary bootstrap can install.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ElfError {
    #[error("not an ELF file (it does not start with \\x7fELF)")]
    NotElf,
    #[error("truncated: the file ends inside its {what}")]
    Truncated { what: &'static str },
    #[error("unknown ELF {field} {value} in its header")]
    Header { field: &'static str, value: u32 },
    #[error("an ELF file of type {e_type}, not an executable (ET_EXEC 2 or ET_DYN 3)")]
    NotExecutable { e_type: u16 },
    #[error("built for ELF machine {machine} ({bits}-bit {endian}-endian), which homelab does not install on (x86_64: 62, aarch64: 183, armv7l: 40, little-endian)")]
    Machine { machine: u16, bits: u8, endian: &'static str },
}

/// Reads `bytes` as an ELF executable: its architecture and dynamic loader.
pub fn parse(bytes: &[u8]) -> Result<Elf, ElfError> {
    if bytes.len() < 4 || bytes[..4] != *b"\x7fELF" {
        return Err(ElfError::NotElf);
    }
    let ident = bytes.get(..16).ok_or(ElfError::Truncated { what: "identification" })?;
    let bits: u8 = match ident[4] {
        1 => 32,
        2 => 64,
        c => return Err(ElfError::Header { field: "class (e_ident[EI_CLASS])", value: c.into() }),
    };
    let little = match ident[5] {
        1 => true,
        2 => false,
        d => return Err(ElfError::Header { field: "data (e_ident[EI_DATA])", value: d.into() }),
    };
    let r = Reader { bytes, little };
    let header = "header";
    let e_type = r.u16(16, header)?;
    let machine = r.u16(18, header)?;
    if e_type != 2 && e_type != 3 {
        return Err(ElfError::NotExecutable { e_type });
    }
    let arch = match (machine, bits, little) {
        (EM_X86_64, 64, true) => Arch::X86_64,
        (EM_AARCH64, 64, true) => Arch::Aarch64,
        (EM_ARM, 32, true) => Arch::Arm,
        _ => {
            let endian = if little { "little" } else { "big" };
            return Err(ElfError::Machine { machine, bits, endian });
        }
    };
    // e_phoff, e_phentsize, e_phnum; then per program header p_type, p_offset, p_filesz.
    let (phoff, phentsize, phnum) = if bits == 64 {
        (r.u64(32, header)?, r.u16(54, header)?, r.u16(56, header)?)
    } else {
        (r.u32(28, header)?.into(), r.u16(42, header)?, r.u16(44, header)?)
    };
    let mut interpreter = None;
    let table = "program headers";
    for i in 0..u64::from(phnum) {
        let at = i
            .checked_mul(phentsize.into())
            .and_then(|o| o.checked_add(phoff))
            .ok_or(ElfError::Truncated { what: table })?;
        if r.u32(at, table)? != PT_INTERP {
            continue;
        }
        let (offset, size) = if bits == 64 {
            (r.u64(at + 8, table)?, r.u64(at + 32, table)?)
        } else {
            (r.u32(at + 4, table)?.into(), r.u32(at + 16, table)?.into())
        };
        let what = "interpreter path (PT_INTERP)";
        let path = r.slice(offset, size, what)?;
        let path = path.split(|b| *b == 0).next().unwrap_or_default();
        interpreter = Some(String::from_utf8_lossy(path).into_owned());
    }
    Ok(Elf { arch, interpreter })
}

/// Bounds-checked reads in the file's byte order.
struct Reader<'a> {
    bytes: &'a [u8],
    little: bool,
}

impl Reader<'_> {
    fn slice(&self, at: u64, len: u64, what: &'static str) -> Result<&[u8], ElfError> {
        let start = usize::try_from(at).ok();
        let end = at.checked_add(len).and_then(|e| usize::try_from(e).ok());
        match (start, end) {
            (Some(s), Some(e)) => self.bytes.get(s..e).ok_or(ElfError::Truncated { what }),
            _ => Err(ElfError::Truncated { what }),
        }
    }

    fn array<const N: usize>(&self, at: u64, what: &'static str) -> Result<[u8; N], ElfError> {
        let mut out = [0; N];
        out.copy_from_slice(self.slice(at, N as u64, what)?);
        if !self.little {
            out.reverse();
        }
        Ok(out)
    }

    fn u16(&self, at: u64, what: &'static str) -> Result<u16, ElfError> {
        self.array(at, what).map(u16::from_le_bytes)
    }

    fn u32(&self, at: u64, what: &'static str) -> Result<u32, ElfError> {
        self.array(at, what).map(u32::from_le_bytes)
    }

    fn u64(&self, at: u64, what: &'static str) -> Result<u64, ElfError> {
        self.array(at, what).map(u64::from_le_bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal 64-bit little-endian executable header for `machine`, with one program
    /// header: `PT_INTERP` naming `interpreter` when given, else `PT_LOAD` (a static binary).
    fn header64(machine: u16, interpreter: Option<&str>) -> Vec<u8> {
        let mut b = vec![0u8; 64 + 56];
        b[..4].copy_from_slice(b"\x7fELF");
        b[4] = 2; // ELFCLASS64
        b[5] = 1; // ELFDATA2LSB
        b[6] = 1; // EV_CURRENT
        b[16..18].copy_from_slice(&3u16.to_le_bytes()); // ET_DYN
        b[18..20].copy_from_slice(&machine.to_le_bytes());
        b[20..24].copy_from_slice(&1u32.to_le_bytes());
        b[32..40].copy_from_slice(&64u64.to_le_bytes()); // e_phoff
        b[52..54].copy_from_slice(&64u16.to_le_bytes()); // e_ehsize
        b[54..56].copy_from_slice(&56u16.to_le_bytes()); // e_phentsize
        b[56..58].copy_from_slice(&1u16.to_le_bytes()); // e_phnum
        let ph = 64;
        match interpreter {
            None => b[ph..ph + 4].copy_from_slice(&1u32.to_le_bytes()), // PT_LOAD
            Some(path) => {
                b[ph..ph + 4].copy_from_slice(&PT_INTERP.to_le_bytes());
                let offset = b.len() as u64;
                let size = path.len() as u64 + 1;
                b[ph + 8..ph + 16].copy_from_slice(&offset.to_le_bytes());
                b[ph + 32..ph + 40].copy_from_slice(&size.to_le_bytes());
                b.extend_from_slice(path.as_bytes());
                b.push(0);
            }
        }
        b
    }

    #[test]
    fn this_test_binary_is_x86_64_with_a_loader() {
        let me = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        let elf = parse(&me).unwrap();
        assert_eq!(elf.arch.to_string(), std::env::consts::ARCH);
        #[cfg(all(target_arch = "x86_64", target_env = "gnu"))]
        assert_eq!(elf.arch, Arch::X86_64);
        if cfg!(target_env = "gnu") {
            let loader = elf.interpreter.unwrap();
            assert!(loader.starts_with('/') && loader.contains("ld-linux"), "{loader}");
        }
    }

    #[test]
    fn a_crafted_aarch64_header_is_read_with_its_loader_or_as_static() {
        let loader = "/lib/ld-linux-aarch64.so.1";
        let elf = parse(&header64(EM_AARCH64, Some(loader))).unwrap();
        assert_eq!(elf, Elf { arch: Arch::Aarch64, interpreter: Some(loader.to_owned()) });
        assert_eq!(elf.arch.to_string(), "aarch64");
        let elf = parse(&header64(EM_AARCH64, None)).unwrap();
        assert_eq!(elf, Elf { arch: Arch::Aarch64, interpreter: None });
    }

    #[test]
    fn a_32_bit_arm_header_is_armv7l() {
        let mut b = vec![0u8; 52];
        b[..4].copy_from_slice(b"\x7fELF");
        b[4] = 1; // ELFCLASS32
        b[5] = 1;
        b[16..18].copy_from_slice(&2u16.to_le_bytes()); // ET_EXEC
        b[18..20].copy_from_slice(&EM_ARM.to_le_bytes());
        assert_eq!(parse(&b).unwrap(), Elf { arch: Arch::Arm, interpreter: None });
    }

    #[test]
    fn truncated_files_are_refused_wherever_they_end() {
        let full = header64(EM_AARCH64, Some("/lib/ld-linux-aarch64.so.1"));
        for len in 4..full.len() {
            match parse(&full[..len]) {
                Err(ElfError::Truncated { .. }) => {}
                other => panic!("{len} bytes: {other:?}"),
            }
        }
        let err = parse(&full[..10]).unwrap_err();
        assert_eq!(err.to_string(), "truncated: the file ends inside its identification");
        let err = parse(&full[..70]).unwrap_err();
        assert_eq!(err.to_string(), "truncated: the file ends inside its program headers");
        // An interpreter or table past the end, or offsets that overflow: refused, no panic.
        let mut b = header64(EM_X86_64, Some("/x"));
        b[64 + 8..64 + 16].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(matches!(parse(&b), Err(ElfError::Truncated { .. })));
        let mut b = header64(EM_X86_64, None);
        b[32..40].copy_from_slice(&(u64::MAX - 8).to_le_bytes());
        assert!(matches!(parse(&b), Err(ElfError::Truncated { .. })));
    }

    #[test]
    fn other_files_and_machines_are_refused() {
        assert_eq!(parse(b"#!/bin/sh\necho hi\n"), Err(ElfError::NotElf));
        assert_eq!(parse(b""), Err(ElfError::NotElf));
        assert_eq!(parse(b"\x7fEL"), Err(ElfError::NotElf));
        let riscv = parse(&header64(243, None)).unwrap_err();
        assert_eq!(
            riscv.to_string(),
            "built for ELF machine 243 (64-bit little-endian), which homelab does not install on (x86_64: 62, aarch64: 183, armv7l: 40, little-endian)"
        );
        let mut big = header64(EM_AARCH64, None);
        big[5] = 2; // ELFDATA2MSB: aarch64_be
        big[16..18].copy_from_slice(&3u16.to_be_bytes());
        big[18..20].copy_from_slice(&EM_AARCH64.to_be_bytes());
        assert!(matches!(parse(&big), Err(ElfError::Machine { machine: EM_AARCH64, .. })));
        let mut object = header64(EM_X86_64, None);
        object[16..18].copy_from_slice(&1u16.to_le_bytes()); // ET_REL
        assert_eq!(parse(&object), Err(ElfError::NotExecutable { e_type: 1 }));
        let mut class = header64(EM_X86_64, None);
        class[4] = 7;
        assert!(matches!(parse(&class), Err(ElfError::Header { value: 7, .. })));
    }

    #[test]
    fn node_architectures_by_their_uname() {
        assert_eq!(Arch::from_uname("x86_64"), Some(Arch::X86_64));
        assert_eq!(Arch::from_uname("amd64"), Some(Arch::X86_64));
        assert_eq!(Arch::from_uname("aarch64"), Some(Arch::Aarch64));
        assert_eq!(Arch::from_uname("arm64"), Some(Arch::Aarch64));
        assert_eq!(Arch::from_uname("armv7l"), Some(Arch::Arm));
        assert_eq!(Arch::from_uname("riscv64"), None);
    }
}
