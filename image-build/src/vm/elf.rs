//! A reader of the few ELF facts the image builder needs, for any
//! architecture and without running anything: the machine, the program
//! interpreter (`PT_INTERP`), the libraries asked for (`DT_NEEDED`), and a
//! section's bytes (a module's `.modinfo`).
//!
//! Primer (ELF64, little-endian — every architecture vmctl builds for): the
//! 64-byte header gives `e_machine` at 0x12, the program headers at `e_phoff`
//! (0x20, `e_phnum` entries of `e_phentsize`), the section headers at
//! `e_shoff` (0x28, `e_shnum` of `e_shentsize`, names in section
//! `e_shstrndx`). `DT_NEEDED` entries of the `SHT_DYNAMIC` section are
//! offsets into the string table its `sh_link` names. Stripping keeps both.

/// Why a file is not an ELF file this reader understands.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ElfError {
    #[error("not a 64-bit little-endian ELF file")]
    NotElf64,
    #[error("truncated or malformed ELF {0}")]
    Malformed(&'static str),
}

const PT_INTERP: u32 = 3;
const SHT_DYNAMIC: u32 = 6;
const DT_NULL: u64 = 0;
const DT_NEEDED: u64 = 1;

/// A parsed view of an ELF64 little-endian file.
pub struct Elf<'a> {
    bytes: &'a [u8],
}

impl<'a> Elf<'a> {
    pub fn parse(bytes: &'a [u8]) -> Result<Self, ElfError> {
        // magic, ELFCLASS64, ELFDATA2LSB
        if bytes.get(..6) != Some(b"\x7fELF\x02\x01") || bytes.len() < 64 {
            return Err(ElfError::NotElf64);
        }
        Ok(Self { bytes })
    }

    fn u16_at(&self, at: usize) -> Option<u16> {
        let bytes = self.bytes.get(at..at.checked_add(2)?)?;
        Some(u16::from_le_bytes(bytes.try_into().ok()?))
    }

    fn u32_at(&self, at: usize) -> Option<u32> {
        let bytes = self.bytes.get(at..at.checked_add(4)?)?;
        Some(u32::from_le_bytes(bytes.try_into().ok()?))
    }

    fn u64_at(&self, at: usize) -> Option<u64> {
        let bytes = self.bytes.get(at..at.checked_add(8)?)?;
        Some(u64::from_le_bytes(bytes.try_into().ok()?))
    }

    fn range(&self, offset: u64, size: u64) -> Option<&'a [u8]> {
        let start = usize::try_from(offset).ok()?;
        let end = start.checked_add(usize::try_from(size).ok()?)?;
        self.bytes.get(start..end)
    }

    /// `e_machine` (62 x86-64, 183 aarch64).
    pub fn machine(&self) -> u16 {
        self.u16_at(0x12).unwrap_or(0)
    }

    /// The program interpreter (`/lib/ld-linux-aarch64.so.1`), if dynamic.
    pub fn interpreter(&self) -> Result<Option<String>, ElfError> {
        let bad = || ElfError::Malformed("program headers");
        let phoff = self.u64_at(0x20).ok_or_else(bad)? as usize;
        let entsize = self.u16_at(0x36).ok_or_else(bad)? as usize;
        let count = self.u16_at(0x38).ok_or_else(bad)? as usize;
        for i in 0..count {
            let header = i
                .checked_mul(entsize)
                .and_then(|off| off.checked_add(phoff))
                .ok_or_else(bad)?;
            if self.u32_at(header).ok_or_else(bad)? != PT_INTERP {
                continue;
            }
            let offset = self.u64_at(header.saturating_add(0x08)).ok_or_else(bad)?;
            let size = self.u64_at(header.saturating_add(0x20)).ok_or_else(bad)?;
            let text = self.range(offset, size).ok_or_else(bad)?;
            return Ok(Some(c_string(text).ok_or_else(bad)?.to_owned()));
        }
        Ok(None)
    }

    /// `(type, link, offset, size)` of section `i`.
    fn section_header(&self, i: usize) -> Option<(u32, u32, u64, u64)> {
        let shoff = self.u64_at(0x28)? as usize;
        let entsize = self.u16_at(0x3a)? as usize;
        let header = shoff.checked_add(i.checked_mul(entsize)?)?;
        Some((
            self.u32_at(header.checked_add(0x04)?)?,
            self.u32_at(header.checked_add(0x28)?)?,
            self.u64_at(header.checked_add(0x18)?)?,
            self.u64_at(header.checked_add(0x20)?)?,
        ))
    }

    fn section_count(&self) -> usize {
        self.u16_at(0x3c).unwrap_or(0) as usize
    }

    /// The bytes of the section called `name`.
    pub fn section(&self, name: &str) -> Option<&'a [u8]> {
        let names_index = self.u16_at(0x3e)? as usize;
        let (_, _, offset, size) = self.section_header(names_index)?;
        let names = self.range(offset, size)?;
        let shoff = self.u64_at(0x28)? as usize;
        let entsize = self.u16_at(0x3a)? as usize;
        (0..self.section_count()).find_map(|i| {
            let at = self.u32_at(shoff.checked_add(i.checked_mul(entsize)?)?)? as usize;
            if c_string(names.get(at..)?)? != name {
                return None;
            }
            let (_, _, offset, size) = self.section_header(i)?;
            self.range(offset, size)
        })
    }

    /// The `DT_NEEDED` names (`libc.so.6`), in order; none for a static file.
    pub fn needed(&self) -> Result<Vec<String>, ElfError> {
        let bad = || ElfError::Malformed("dynamic section");
        let mut needed = Vec::new();
        for i in 0..self.section_count() {
            let (kind, link, offset, size) = self.section_header(i).ok_or_else(bad)?;
            if kind != SHT_DYNAMIC {
                continue;
            }
            let dynamic = self.range(offset, size).ok_or_else(bad)?;
            let (_, _, str_offset, str_size) =
                self.section_header(link as usize).ok_or_else(bad)?;
            let strings = self.range(str_offset, str_size).ok_or_else(bad)?;
            for entry in dynamic.chunks_exact(16) {
                let tag = u64::from_le_bytes(entry[..8].try_into().map_err(|_| bad())?);
                let value = u64::from_le_bytes(entry[8..].try_into().map_err(|_| bad())?);
                match tag {
                    DT_NULL => break,
                    DT_NEEDED => {
                        let name = strings
                            .get(value as usize..)
                            .and_then(c_string)
                            .ok_or_else(bad)?;
                        needed.push(name.to_owned());
                    }
                    _ => {}
                }
            }
        }
        Ok(needed)
    }
}

/// The NUL-terminated UTF-8 string at the start of `bytes`.
fn c_string(bytes: &[u8]) -> Option<&str> {
    let end = bytes.iter().position(|&b| b == 0)?;
    std::str::from_utf8(&bytes[..end]).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_test_binary() {
        let exe = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        let elf = Elf::parse(&exe).unwrap();
        let expected = if cfg!(target_arch = "aarch64") {
            183
        } else {
            62
        };
        assert_eq!(elf.machine(), expected);
        let interp = elf.interpreter().unwrap().expect("a dynamic test binary");
        assert!(
            interp.starts_with('/') && interp.contains("ld-linux"),
            "{interp}"
        );
        let needed = elf.needed().unwrap();
        assert!(
            needed.iter().any(|n| n.starts_with("libc.so")),
            "{needed:?}"
        );
        assert!(elf.section(".text").is_some());
        assert!(elf.section(".nosuch").is_none());
    }

    #[test]
    fn refuses_what_is_not_elf64() {
        assert_eq!(Elf::parse(b"#!/bin/sh\n").err(), Some(ElfError::NotElf64));
        let mut truncated = b"\x7fELF\x02\x01".to_vec();
        truncated.resize(64, 0xff);
        let elf = Elf::parse(&truncated).unwrap();
        assert!(elf.interpreter().is_err());
        assert!(elf.section(".modinfo").is_none());
    }
}
