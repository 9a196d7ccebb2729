//! A 64-bit ELF file's header, section table and symbol table, parsed once with errors in
//! the crate's terms, and the lookups every reader needs (names, section contents, modinfo,
//! the banner); shared by the binder's target reader (`target.rs`), the checker's
//! (`check/kallsyms.rs`) and the module checks (`check.rs`). What each reader makes of the
//! symbols is its own business: see `check/kallsyms.rs` for why there are two.

use object::elf;
use object::read::elf::{FileHeader, SectionHeader, SectionTable, SymbolTable};
use object::Endianness;

use crate::Error;

pub(crate) type Hdr = elf::FileHeader64<Endianness>;

pub(crate) struct Elf<'a> {
    pub(crate) data: &'a [u8],
    pub(crate) endian: Endianness,
    pub(crate) e_type: u16,
    pub(crate) e_machine: u16,
    pub(crate) sections: SectionTable<'a, Hdr>,
    pub(crate) symtab: SymbolTable<'a, Hdr>,
}

impl<'a> Elf<'a> {
    /// `bad` turns a description of what is wrong into the caller's error (naming the file).
    pub(crate) fn parse(data: &'a [u8], bad: &dyn Fn(String) -> Error) -> Result<Self, Error> {
        let header = Hdr::parse(data).map_err(|e| bad(format!("not a 64-bit ELF file: {e}")))?;
        let endian = header.endian().map_err(|e| bad(e.to_string()))?;
        let sections = header
            .sections(endian, data)
            .map_err(|e| bad(format!("section headers: {e}")))?;
        let symtab = sections
            .symbols(endian, data, elf::SHT_SYMTAB)
            .map_err(|e| bad(format!("symbol table: {e}")))?;
        Ok(Elf {
            data,
            endian,
            e_type: header.e_type(endian),
            e_machine: header.e_machine(endian),
            sections,
            symtab,
        })
    }
}

impl<'a> Elf<'a> {
    /// A symbol's name (lossy UTF-8; empty when unreadable).
    pub(crate) fn sym_name(&self, sym: &elf::Sym64<Endianness>) -> String {
        String::from_utf8_lossy(self.symtab.symbol_name(self.endian, sym).unwrap_or(b""))
            .into_owned()
    }

    /// A section's name (lossy UTF-8; empty when unreadable).
    pub(crate) fn sec_name(&self, s: &elf::SectionHeader64<Endianness>) -> String {
        String::from_utf8_lossy(self.sections.section_name(self.endian, s).unwrap_or(b""))
            .into_owned()
    }

    pub(crate) fn section(&self, idx: usize) -> Option<&'a elf::SectionHeader64<Endianness>> {
        self.sections.section(object::SectionIndex(idx)).ok()
    }

    /// Contents of the named section; `None` if absent or unreadable.
    pub(crate) fn section_data(&self, name: &str) -> Option<&'a [u8]> {
        let (_, s) = self
            .sections
            .section_by_name(self.endian, name.as_bytes())?;
        s.data(self.endian, self.data).ok()
    }

    /// The NUL-separated `key=value` entries of `.modinfo`, as bytes (none without one).
    pub(crate) fn modinfo_entries(&self) -> impl Iterator<Item = &'a [u8]> {
        self.section_data(".modinfo")
            .unwrap_or(&[])
            .split(|&c| c == 0)
    }

    /// `len` bytes at virtual address (linked image) or section offset (ET_REL) `addr` of
    /// section `shndx`.
    pub(crate) fn bytes_at(&self, shndx: usize, addr: u64, len: u64) -> Option<&'a [u8]> {
        let s = self.sections.section(object::SectionIndex(shndx)).ok()?;
        if s.sh_type(self.endian) == elf::SHT_NOBITS {
            return None;
        }
        let data = s.data(self.endian, self.data).ok()?;
        let base = if self.e_type == elf::ET_REL {
            0
        } else {
            s.sh_addr(self.endian)
        };
        let off = usize::try_from(addr.checked_sub(base)?).ok()?;
        let end = off.checked_add(usize::try_from(len).ok()?)?;
        data.get(off..end)
    }

    /// The text of `linux_banner` up to its NUL (symbol in section `shndx` at `addr`, `size`
    /// bytes, 0 when unknown).
    pub(crate) fn banner_text(&self, shndx: usize, addr: u64, size: u64) -> Option<String> {
        let len = if size == 0 { 256 } else { size.min(4096) };
        let bytes = self.bytes_at(shndx, addr, len).or_else(|| {
            // A zero-sized symbol near the end of its section: read what is there.
            (1..len).rev().find_map(|l| self.bytes_at(shndx, addr, l))
        })?;
        let end = bytes.iter().position(|&c| c == 0).unwrap_or(bytes.len());
        std::str::from_utf8(&bytes[..end]).ok().map(str::to_string)
    }

    /// The kernel release in `linux_banner` (see [`Elf::banner_text`]).
    pub(crate) fn banner_release(&self, shndx: usize, addr: u64, size: u64) -> Option<String> {
        release_from_banner(self.banner_text(shndx, addr, size)?.as_bytes())
    }
}

/// `Linux version <release> ...` → release.
pub(crate) fn release_from_banner(bytes: &[u8]) -> Option<String> {
    let end = bytes.iter().position(|&c| c == 0).unwrap_or(bytes.len());
    let text = std::str::from_utf8(&bytes[..end]).ok()?;
    let rest = text.strip_prefix("Linux version ")?;
    rest.split_whitespace().next().map(str::to_string)
}
