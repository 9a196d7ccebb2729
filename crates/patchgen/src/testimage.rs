//! Test support: hand-made linked x86-64 images (a fake `vmlinux`) for the target and check
//! tests — sections at fixed addresses, a symbol table, nothing else.

use object::build::elf::{Builder, SectionData, SectionId};
use object::elf;

/// An `ET_EXEC` x86-64 image under construction.
pub struct Image {
    b: Builder<'static>,
}

impl Image {
    pub fn new() -> Self {
        let mut b = Builder::new(object::Endianness::Little, true);
        b.header.e_type = elf::ET_EXEC;
        b.header.e_machine = elf::EM_X86_64;
        Image { b }
    }

    /// A `SHT_PROGBITS` section at `addr` holding `data`.
    pub fn section(&mut self, name: &str, flags: u32, addr: u64, data: Vec<u8>) -> SectionId {
        let s = self.b.sections.add();
        s.name = name.as_bytes().to_vec().into();
        s.sh_type = elf::SHT_PROGBITS;
        s.sh_flags = u64::from(flags);
        s.sh_addr = addr;
        s.sh_addralign = 8;
        s.data = SectionData::Data(data.into());
        s.id()
    }

    /// A symbol in `sec` (`None`: absolute) with binding and type `info`.
    pub fn symbol(
        &mut self,
        name: &str,
        sec: Option<SectionId>,
        info: (u8, u8),
        value: u64,
        size: u64,
    ) {
        let s = self.b.symbols.add();
        s.name = name.as_bytes().to_vec().into();
        s.section = sec;
        if sec.is_none() {
            s.st_shndx = elf::SHN_ABS;
        }
        s.set_st_info(info.0, info.1);
        s.st_value = value;
        s.st_size = size;
    }

    /// The image's bytes, with `.strtab`, `.symtab` and `.shstrtab` added.
    pub fn finish(mut self) -> Vec<u8> {
        let b = &mut self.b;
        let strtab = {
            let s = b.sections.add();
            s.name = b".strtab"[..].into();
            s.sh_type = elf::SHT_STRTAB;
            s.data = SectionData::String;
            s.id()
        };
        let symtab = b.sections.add();
        symtab.name = b".symtab"[..].into();
        symtab.sh_type = elf::SHT_SYMTAB;
        symtab.sh_entsize = 24;
        symtab.sh_addralign = 8;
        symtab.sh_link_section = Some(strtab);
        symtab.data = SectionData::Symbol;
        let shstrtab = b.sections.add();
        shstrtab.name = b".shstrtab"[..].into();
        shstrtab.sh_type = elf::SHT_STRTAB;
        shstrtab.data = SectionData::SectionString;
        let mut out = Vec::new();
        self.b.write(&mut out).expect("a test image is well formed");
        out
    }
}

/// Global object / local object / global no-type, for `Image::symbol`.
pub const GLOBAL_OBJECT: (u8, u8) = (elf::STB_GLOBAL, elf::STT_OBJECT);
pub const LOCAL_OBJECT: (u8, u8) = (elf::STB_LOCAL, elf::STT_OBJECT);
