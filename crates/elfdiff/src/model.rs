//! A read-only model of one relocatable ELF object: sections, symbols and relocations,
//! borrowed from the file bytes, with indices typed by which side of the diff they belong to,
//! and the machine it is for (what its relocation types and code mean, [`crate::arch`]).

use std::fmt;
use std::marker::PhantomData;

use object::elf;
use object::read::elf::{FileHeader, Rela, SectionHeader, SectionTable, Sym, SymbolTable};
use object::Endianness;

use crate::arch::{self, Arch, RelocKind};
use crate::error::Error;

/// Marker for the original (unpatched) object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Orig {}
/// Marker for the patched object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Patched {}

/// Which side of a diff an object is; only a marker, used to type indices.
pub trait Side: fmt::Debug + Copy + Eq + std::hash::Hash + 'static {
    const NAME: &'static str;
}
impl Side for Orig {
    const NAME: &'static str = "original";
}
impl Side for Patched {
    const NAME: &'static str = "patched";
}

macro_rules! typed_index {
    ($name:ident) => {
        /// An index typed by the side of the diff it belongs to, so the two cannot be mixed up.
        pub struct $name<S: Side>(pub u32, PhantomData<S>);
        impl<S: Side> $name<S> {
            pub fn new(i: usize) -> Self {
                Self(i as u32, PhantomData)
            }
            pub fn get(self) -> usize {
                self.0 as usize
            }
        }
        impl<S: Side> Clone for $name<S> {
            fn clone(&self) -> Self {
                *self
            }
        }
        impl<S: Side> Copy for $name<S> {}
        impl<S: Side> PartialEq for $name<S> {
            fn eq(&self, o: &Self) -> bool {
                self.0 == o.0
            }
        }
        impl<S: Side> Eq for $name<S> {}
        impl<S: Side> std::hash::Hash for $name<S> {
            fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
                self.0.hash(h)
            }
        }
        impl<S: Side> PartialOrd for $name<S> {
            fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
                Some(self.cmp(o))
            }
        }
        impl<S: Side> Ord for $name<S> {
            fn cmp(&self, o: &Self) -> std::cmp::Ordering {
                self.0.cmp(&o.0)
            }
        }
        impl<S: Side> fmt::Debug for $name<S> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({}:{})", stringify!($name), S::NAME, self.0)
            }
        }
    };
}
typed_index!(SecIdx);
typed_index!(SymIdx);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SymKind {
    Func,
    Object,
    Section,
    File,
    NoType,
    Other,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bind {
    Local,
    Global,
    Weak,
}

/// One relocation, attached to the section it patches.
#[derive(Debug, Clone, Copy)]
pub struct Reloc<S: Side> {
    pub offset: u64,
    pub r_type: u32,
    pub sym: SymIdx<S>,
    pub addend: i64,
}

#[derive(Debug)]
pub struct Section<'d, S: Side> {
    /// Index in the ELF section header table.
    pub elf_index: usize,
    pub name: &'d str,
    pub sh_type: u32,
    pub sh_flags: u64,
    pub sh_addralign: u64,
    pub sh_entsize: u64,
    pub size: u64,
    /// Empty for SHT_NOBITS.
    pub data: &'d [u8],
    /// Relocations that apply to this section, sorted by offset. Empty for a `.debug_*`
    /// section: its relocations (nine in ten of a kernel object's) are read only when the
    /// DWARF is, by [`Object::debug_relocs`].
    pub relocs: Vec<Reloc<S>>,
    /// The raw relocations of a `.debug_*` section, left unread by parsing.
    deferred: &'d [elf::Rela64<Endianness>],
    /// The section symbol, if the object has one.
    pub section_sym: Option<SymIdx<S>>,
    /// Non-section symbols defined in this section, sorted by value.
    pub syms: Vec<SymIdx<S>>,
    /// For each of `syms`, the furthest end (`value + max(size, 1)`) of it and those before
    /// it: non-decreasing, so [`Object::symbol_at`] finds by binary search the first symbol
    /// that can cover an offset instead of scanning from the section's start. Empty where
    /// the section has few symbols (most: a function or an object), which a scan reads as
    /// fast as a search, and an allocation per section would cost more.
    sym_reach: Vec<u64>,
    /// Member of a section group (COMDAT).
    pub in_group: bool,
}

impl<S: Side> Section<'_, S> {
    pub fn is_alloc(&self) -> bool {
        self.sh_flags & u64::from(elf::SHF_ALLOC) != 0
    }
    pub fn is_exec(&self) -> bool {
        self.sh_flags & u64::from(elf::SHF_EXECINSTR) != 0
    }
    pub fn is_strings(&self) -> bool {
        self.sh_flags & u64::from(elf::SHF_STRINGS) != 0
    }
    /// In a string section, the start of the NUL-terminated string that byte `offset` (inside
    /// the data) belongs to.
    pub fn string_start(&self, offset: usize) -> usize {
        self.data[..offset]
            .iter()
            .rposition(|&b| b == 0)
            .map_or(0, |p| p + 1)
    }
    pub fn is_merge(&self) -> bool {
        self.sh_flags & u64::from(elf::SHF_MERGE) != 0
    }
    pub fn is_nobits(&self) -> bool {
        self.sh_type == elf::SHT_NOBITS
    }
    /// Relocations whose site lies in `[start, end)`.
    pub fn relocs_in(&self, start: u64, end: u64) -> &[Reloc<S>] {
        let lo = self.relocs.partition_point(|r| r.offset < start);
        let hi = self.relocs.partition_point(|r| r.offset < end);
        &self.relocs[lo..hi]
    }
}

#[derive(Debug)]
pub struct Symbol<'d, S: Side> {
    pub elf_index: usize,
    pub name: &'d str,
    pub kind: SymKind,
    pub bind: Bind,
    /// Defining section; None for undefined, absolute and common symbols.
    pub section: Option<SecIdx<S>>,
    pub undefined: bool,
    pub value: u64,
    pub size: u64,
    /// `st_other`: visibility, and on ppc64 the offset of the local entry point.
    pub other: u8,
}

impl<S: Side> Symbol<'_, S> {
    pub fn is_global(&self) -> bool {
        self.bind != Bind::Local
    }
}

/// One parsed relocatable object.
#[derive(Debug)]
pub struct Object<'d, S: Side> {
    /// Name used in messages (usually the file path).
    pub label: String,
    /// The machine (`e_machine`) and what klpgen knows of it.
    pub machine: u16,
    pub arch: &'static dyn Arch,
    /// The ELF header's `e_flags` (ppc64: the ABI version), which the livepatch object keeps.
    pub e_flags: u32,
    pub sections: Vec<Section<'d, S>>,
    pub symbols: Vec<Symbol<'d, S>>,
    /// The STT_FILE symbol's name, the source file's base name.
    pub file_name: Option<&'d str>,
    /// ELF section index -> our section index.
    elf_to_sec: Vec<Option<SecIdx<S>>>,
    endian: Endianness,
}

type Header = elf::FileHeader64<Endianness>;

/// Up to this many symbols in a section, [`Object::symbol_at`] scans them all.
const SCAN_SYMS: usize = 8;

/// Section headers that hold no section of the model (tables, relocations, groups).
const NOT_SECTIONS: &[u32] = &[
    elf::SHT_NULL,
    elf::SHT_SYMTAB,
    elf::SHT_STRTAB,
    elf::SHT_RELA,
    elf::SHT_REL,
    elf::SHT_GROUP,
    elf::SHT_SYMTAB_SHNDX,
];

fn malformed(label: &str, what: String) -> Error {
    Error::Malformed {
        object: label.to_string(),
        what,
    }
}

/// The relocations of one `SHT_RELA` section, appended to those of `tsec`, the section they
/// patch: each of a type `arch` knows, inside `tsec`, against one of `nsyms` symbols.
/// A section whose relocations parsing leaves to [`Object::debug_relocs`]: DWARF, which
/// nothing but the DWARF reader looks into.
fn is_deferred<S: Side>(s: &Section<'_, S>) -> bool {
    !s.is_alloc() && s.name.starts_with(".debug_")
}

fn read_relas<S: Side>(
    label: &str,
    arch: &dyn Arch,
    nsyms: usize,
    endian: Endianness,
    relas: &[elf::Rela64<Endianness>],
    tsec: &mut Section<'_, S>,
) -> Result<(), Error> {
    let bad = |what: String| malformed(label, what);
    tsec.relocs.reserve(relas.len());
    // The machine is asked once per run of relocations of one type.
    let mut last: Option<(u32, u64)> = None;
    for r in relas {
        let sym = r.r_sym(endian, false) as usize;
        if sym >= nsyms {
            return Err(bad(format!(
                "relocation in {} refers to symbol {sym}, past the symbol table",
                tsec.name
            )));
        }
        let r_type = r.r_type(endian, false);
        let offset = r.r_offset(endian);
        let width = match last {
            Some((t, w)) if t == r_type => w,
            _ => {
                let w = arch.reloc(r_type).map(|k| k.width).ok_or_else(|| {
                    bad(format!(
                        "unsupported {} relocation type {r_type} in {} at {offset:#x}",
                        arch.name(),
                        tsec.name
                    ))
                })?;
                last = Some((r_type, w));
                w
            }
        };
        if offset.checked_add(width).is_none_or(|end| end > tsec.size) {
            return Err(bad(format!(
                "relocation at {offset:#x} lies outside section {}",
                tsec.name
            )));
        }
        tsec.relocs.push(Reloc {
            offset,
            r_type,
            sym: SymIdx::new(sym),
            addend: r.r_addend(endian),
        });
    }
    Ok(())
}

impl<'d, S: Side> Object<'d, S> {
    pub fn parse(label: impl Into<String>, data: &'d [u8]) -> Result<Self, Error> {
        let label = label.into();
        let bad = |what: String| malformed(&label, what);
        let header = Header::parse(data).map_err(|e| bad(format!("not a 64-bit ELF file: {e}")))?;
        let endian = header
            .endian()
            .map_err(|e| bad(format!("bad ELF endianness: {e}")))?;
        if header.e_type(endian) != elf::ET_REL {
            return Err(bad("not a relocatable object (ET_REL)".into()));
        }
        let machine = header.e_machine(endian);
        let arch = arch::for_machine(machine).ok_or_else(|| Error::UnsupportedArch {
            object: label.clone(),
            machine,
        })?;
        let e_flags = header.e_flags(endian);
        arch.check_header(endian, e_flags)
            .map_err(|what| Error::UnsupportedVariant {
                object: label.clone(),
                what,
            })?;
        let table = header
            .sections(endian, data)
            .map_err(|e| bad(format!("section headers: {e}")))?;
        let symtab = table
            .symbols(endian, data, elf::SHT_SYMTAB)
            .map_err(|e| bad(format!("symbol table: {e}")))?;
        let mut obj = Object {
            label,
            machine,
            arch,
            e_flags,
            sections: Vec::new(),
            symbols: Vec::with_capacity(symtab.len()),
            file_name: None,
            elf_to_sec: vec![None; table.len()],
            endian,
        };
        obj.read_sections(endian, data, &table)?;
        obj.read_symbols(endian, &symtab)?;
        obj.index_symbols()?;
        obj.read_relocations(endian, data, &table)?;
        Ok(obj)
    }

    /// The sections of the model, with their contents and group membership.
    fn read_sections(
        &mut self,
        endian: Endianness,
        data: &'d [u8],
        table: &SectionTable<'d, Header>,
    ) -> Result<(), Error> {
        let bad = |what: String| malformed(&self.label, what);
        let mut grouped = vec![false; table.len()];
        for sh in table.iter() {
            if sh.sh_type(endian) == elf::SHT_GROUP {
                if let Ok(Some((_flags, members))) = sh.group(endian, data) {
                    for m in members {
                        let m = m.get(endian) as usize;
                        if m < grouped.len() {
                            grouped[m] = true;
                        }
                    }
                }
            }
        }
        let mut sections = Vec::new();
        for (i, sh) in table.iter().enumerate() {
            let sh_type = sh.sh_type(endian);
            if NOT_SECTIONS.contains(&sh_type) {
                continue;
            }
            let name = table
                .section_name(endian, sh)
                .ok()
                .and_then(|n| std::str::from_utf8(n).ok())
                .ok_or_else(|| bad(format!("section {i} has no valid name")))?;
            let align = sh.sh_addralign(endian);
            if align > 1 && !align.is_power_of_two() {
                return Err(bad(format!(
                    "section {name}: alignment {align} is not a power of two"
                )));
            }
            let bytes = if sh_type == elf::SHT_NOBITS {
                &[][..]
            } else {
                sh.data(endian, data)
                    .map_err(|e| bad(format!("section {name}: {e}")))?
            };
            self.elf_to_sec[i] = Some(SecIdx::new(sections.len()));
            sections.push(Section {
                elf_index: i,
                name,
                sh_type,
                sh_flags: sh.sh_flags(endian),
                sh_addralign: align,
                sh_entsize: sh.sh_entsize(endian),
                size: sh.sh_size(endian),
                data: bytes,
                relocs: Vec::new(),
                deferred: &[],
                section_sym: None,
                syms: Vec::new(),
                sym_reach: Vec::new(),
                in_group: grouped[i],
            });
        }
        self.sections = sections;
        Ok(())
    }

    /// The symbol table, and the source file's name.
    fn read_symbols(
        &mut self,
        endian: Endianness,
        symtab: &SymbolTable<'d, Header>,
    ) -> Result<(), Error> {
        for (i, sym) in symtab.iter().enumerate() {
            let name = symtab
                .symbol_name(endian, sym)
                .ok()
                .and_then(|n| std::str::from_utf8(n).ok())
                .ok_or_else(|| malformed(&self.label, format!("symbol {i} has no valid name")))?;
            let kind = match sym.st_type() {
                elf::STT_FUNC => SymKind::Func,
                elf::STT_OBJECT | elf::STT_TLS => SymKind::Object,
                elf::STT_SECTION => SymKind::Section,
                elf::STT_FILE => SymKind::File,
                elf::STT_NOTYPE => SymKind::NoType,
                _ => SymKind::Other,
            };
            let bind = match sym.st_bind() {
                elf::STB_LOCAL => Bind::Local,
                elf::STB_WEAK => Bind::Weak,
                _ => Bind::Global,
            };
            let shndx = sym.st_shndx(endian);
            let section = match symtab.symbol_section(endian, sym, object::SymbolIndex(i)) {
                Ok(Some(idx)) => self.elf_to_sec.get(idx.0).copied().flatten(),
                _ => None,
            };
            if kind == SymKind::File && self.file_name.is_none() && !name.is_empty() {
                self.file_name = Some(name);
            }
            self.symbols.push(Symbol {
                elf_index: i,
                name,
                kind,
                bind,
                section,
                undefined: shndx == elf::SHN_UNDEF && i != 0,
                value: sym.st_value(endian),
                size: sym.st_size(endian),
                other: sym.st_other(),
            });
        }
        Ok(())
    }

    /// Each section's symbols (sorted by value) and section symbol; every symbol must lie
    /// inside its section.
    fn index_symbols(&mut self) -> Result<(), Error> {
        for (i, s) in self.symbols.iter().enumerate() {
            if let Some(sec) = s.section {
                let section = &mut self.sections[sec.get()];
                // Every extent computation (`value + size`) downstream relies on this.
                if s.value
                    .checked_add(s.size)
                    .is_none_or(|end| end > section.size)
                {
                    return Err(malformed(
                        &self.label,
                        format!(
                            "symbol {} ({:#x}, {} bytes) lies outside section {}",
                            s.name, s.value, s.size, section.name
                        ),
                    ));
                }
                if s.kind == SymKind::Section {
                    section.section_sym.get_or_insert(SymIdx::new(i));
                } else if matches!(s.kind, SymKind::Func | SymKind::Object | SymKind::NoType)
                    && !s.name.is_empty()
                    && !(s.bind == Bind::Local && self.arch.is_mapping_symbol(s.name))
                {
                    section.syms.push(SymIdx::new(i));
                }
            }
        }
        let symbols = &self.symbols;
        for section in &mut self.sections {
            section
                .syms
                .sort_by_key(|s| (symbols[s.get()].value, symbols[s.get()].elf_index));
            if section.syms.len() <= SCAN_SYMS {
                continue;
            }
            let mut reach = 0u64;
            section.sym_reach = section
                .syms
                .iter()
                .map(|&i| {
                    let y = &symbols[i.get()];
                    reach = reach.max(y.value.saturating_add(y.size.max(1)));
                    reach
                })
                .collect();
        }
        Ok(())
    }

    /// The relocations of every section (sorted by offset), each of a type the machine knows
    /// and inside its section.
    fn read_relocations(
        &mut self,
        endian: Endianness,
        data: &'d [u8],
        table: &SectionTable<'d, Header>,
    ) -> Result<(), Error> {
        let bad = |what: String| malformed(&self.label, what);
        for (i, sh) in table.iter().enumerate() {
            if sh.sh_type(endian) != elf::SHT_RELA {
                if sh.sh_type(endian) == elf::SHT_REL {
                    return Err(bad(format!(
                        "section {i}: SHT_REL is not used on {}",
                        self.arch.name()
                    )));
                }
                continue;
            }
            let target = sh.sh_info(endian) as usize;
            let Some(Some(target)) = self.elf_to_sec.get(target).copied() else {
                continue;
            };
            let (relas, _) = sh
                .rela(endian, data)
                .map_err(|e| bad(format!("relocation section {i}: {e}")))?
                .ok_or_else(|| bad(format!("relocation section {i} unreadable")))?;
            let tsec: &mut Section<S> = &mut self.sections[target.get()];
            // Only the DWARF reader asks for a debug section's relocations; reading them
            // here would be most of parsing's work for nothing.
            if is_deferred(tsec) {
                tsec.deferred = relas;
                continue;
            }
            read_relas(
                &self.label,
                self.arch,
                self.symbols.len(),
                endian,
                relas,
                tsec,
            )?;
        }
        for section in &mut self.sections {
            section.relocs.sort_by_key(|r| r.offset);
        }
        Ok(())
    }

    /// The relocations of section `sec`, sorted by offset: for a `.debug_*` section read
    /// (and checked, as parsing checks every other section's) now, else its own.
    pub fn debug_relocs(&self, sec: SecIdx<S>) -> Result<std::borrow::Cow<'_, [Reloc<S>]>, Error> {
        let s = self.sec(sec);
        if s.deferred.is_empty() {
            return Ok(std::borrow::Cow::Borrowed(&s.relocs));
        }
        let mut tsec = Section {
            relocs: Vec::new(),
            deferred: &[],
            syms: Vec::new(),
            sym_reach: Vec::new(),
            ..*s
        };
        read_relas(
            &self.label,
            self.arch,
            self.symbols.len(),
            self.endian,
            s.deferred,
            &mut tsec,
        )?;
        tsec.relocs.sort_by_key(|r| r.offset);
        Ok(std::borrow::Cow::Owned(tsec.relocs))
    }

    /// What relocation type `r_type` does on this object's machine. Every relocation of a
    /// parsed object has a known type (parsing refuses others); an unknown one counts as a
    /// zero-width absolute field.
    pub fn reloc_kind(&self, r_type: u32) -> RelocKind {
        self.arch
            .reloc(r_type)
            .unwrap_or(RelocKind::bytes(0, false))
    }

    pub fn sec(&self, i: SecIdx<S>) -> &Section<'d, S> {
        &self.sections[i.get()]
    }
    pub fn sym(&self, i: SymIdx<S>) -> &Symbol<'d, S> {
        &self.symbols[i.get()]
    }
    pub fn sec_by_elf_index(&self, i: usize) -> Option<SecIdx<S>> {
        self.elf_to_sec.get(i).copied().flatten()
    }
    pub fn section_indices(&self) -> impl Iterator<Item = SecIdx<S>> {
        (0..self.sections.len()).map(SecIdx::new)
    }
    pub fn symbol_indices(&self) -> impl Iterator<Item = SymIdx<S>> {
        (0..self.symbols.len()).map(SymIdx::new)
    }
    pub fn find_section(&self, name: &str) -> Option<SecIdx<S>> {
        self.sections
            .iter()
            .position(|s| s.name == name)
            .map(SecIdx::new)
    }
    /// The named symbol of this section covering `offset`, if any (largest value ≤ offset,
    /// and offset inside its size, or exactly at a zero-size symbol).
    pub fn symbol_at(&self, sec: SecIdx<S>, offset: u64) -> Option<SymIdx<S>> {
        let s = self.sec(sec);
        let mut best = None;
        // A symbol covers `offset` only if its reach passes it (a zero-size one reaches one
        // byte: it covers exactly its value), so none before the first whose running reach
        // passes `offset` does; from there on, in order, as a scan from the start would.
        let first = s.sym_reach.partition_point(|&r| r <= offset);
        debug_assert!(s.sym_reach.is_empty() || s.sym_reach.len() == s.syms.len());
        for &i in &s.syms[first..] {
            let sym = self.sym(i);
            if sym.value > offset {
                break;
            }
            let covers = offset < sym.value.saturating_add(sym.size)
                || (sym.size == 0 && sym.value == offset);
            if covers {
                // Prefer functions and objects over NOTYPE labels, globals over locals.
                let better = match best {
                    None => true,
                    Some(b) => {
                        let b: &Symbol<S> = self.sym(b);
                        (b.kind == SymKind::NoType && sym.kind != SymKind::NoType)
                            || (b.bind == Bind::Local && sym.bind != Bind::Local)
                    }
                };
                if better {
                    best = Some(i);
                }
            }
        }
        best
    }
    /// The bytes of a defined symbol (empty for NOBITS or out-of-range symbols).
    pub fn sym_bytes(&self, i: SymIdx<S>) -> &'d [u8] {
        let sym = self.sym(i);
        let Some(sec) = sym.section else { return &[] };
        let data = self.sec(sec).data;
        let start = sym.value as usize;
        let end = start.saturating_add(sym.size as usize);
        data.get(start..end).unwrap_or(&[])
    }
}
