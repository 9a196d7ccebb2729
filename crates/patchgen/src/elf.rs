//! A 64-bit ELF file's header, section table and symbol table, parsed once with errors in
//! the crate's terms; shared by the target reader (`target.rs`) and the module checks.

use object::elf;
use object::read::elf::{FileHeader, SectionTable, SymbolTable};
use object::Endianness;

use crate::Error;

pub(crate) type Hdr = elf::FileHeader64<Endianness>;

pub(crate) struct Elf<'a> {
    pub(crate) data: &'a [u8],
    pub(crate) endian: Endianness,
    pub(crate) e_type: u16,
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
            sections,
            symtab,
        })
    }
}
