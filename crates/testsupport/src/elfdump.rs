//! A readelf-like text dump of a relocatable ELF object, for snapshot tests of the
//! livepatch object klpgen writes (x86-64; other machines through [`dump_with`], which also
//! shows the machine and `e_flags` first): every section (type, flags, size, entry size, alignment,
//! link and info by name), every symbol (type, binding, visibility, section by name, value,
//! size), every relocation (offset, type name, symbol name, addend), the strings of string
//! sections and of `.modinfo`. Nothing in it depends on the machine or on file offsets.

use std::fmt::Write as _;

use object::elf;
use object::read::elf::{FileHeader, Rela as _, SectionHeader as _, Sym as _};
use object::Endianness;

type Hdr = elf::FileHeader64<Endianness>;

fn section_type(t: u32) -> String {
    let name = match t {
        elf::SHT_NULL => "NULL",
        elf::SHT_PROGBITS => "PROGBITS",
        elf::SHT_SYMTAB => "SYMTAB",
        elf::SHT_STRTAB => "STRTAB",
        elf::SHT_RELA => "RELA",
        elf::SHT_NOBITS => "NOBITS",
        elf::SHT_NOTE => "NOTE",
        elf::SHT_REL => "REL",
        elf::SHT_GROUP => "GROUP",
        elf::SHT_INIT_ARRAY => "INIT_ARRAY",
        elf::SHT_FINI_ARRAY => "FINI_ARRAY",
        elf::SHT_SYMTAB_SHNDX => "SYMTAB_SHNDX",
        _ => return format!("{t:#x}"),
    };
    name.to_string()
}

/// Flags as readelf letters, plus `L(ivepatch)` for SHF_RELA_LIVEPATCH; unknown bits in hex.
fn section_flags(f: u64) -> String {
    const LETTERS: &[(u32, char)] = &[
        (elf::SHF_WRITE, 'W'),
        (elf::SHF_ALLOC, 'A'),
        (elf::SHF_EXECINSTR, 'X'),
        (elf::SHF_MERGE, 'M'),
        (elf::SHF_STRINGS, 'S'),
        (elf::SHF_INFO_LINK, 'I'),
        (elf::SHF_LINK_ORDER, 'O'),
        (elf::SHF_GROUP, 'G'),
        (elf::SHF_TLS, 'T'),
        (elf::SHF_EXCLUDE, 'E'),
        (0x0010_0000, 'K'), // SHF_RELA_LIVEPATCH
    ];
    let mut out = String::new();
    let mut rest = f;
    for (bit, c) in LETTERS {
        if f & u64::from(*bit) != 0 {
            out.push(*c);
            rest &= !u64::from(*bit);
        }
    }
    if rest != 0 {
        let _ = write!(out, "+{rest:#x}");
    }
    if out.is_empty() {
        out.push('-');
    }
    out
}

fn symbol_type(t: u8) -> String {
    match t {
        elf::STT_NOTYPE => "NOTYPE".into(),
        elf::STT_OBJECT => "OBJECT".into(),
        elf::STT_FUNC => "FUNC".into(),
        elf::STT_SECTION => "SECTION".into(),
        elf::STT_FILE => "FILE".into(),
        elf::STT_COMMON => "COMMON".into(),
        elf::STT_TLS => "TLS".into(),
        _ => format!("type{t}"),
    }
}

fn symbol_bind(b: u8) -> String {
    match b {
        elf::STB_LOCAL => "LOCAL".into(),
        elf::STB_GLOBAL => "GLOBAL".into(),
        elf::STB_WEAK => "WEAK".into(),
        _ => format!("bind{b}"),
    }
}

fn symbol_visibility(v: u8) -> String {
    match v {
        elf::STV_DEFAULT => "DEFAULT".into(),
        elf::STV_INTERNAL => "INTERNAL".into(),
        elf::STV_HIDDEN => "HIDDEN".into(),
        elf::STV_PROTECTED => "PROTECTED".into(),
        _ => format!("vis{v}"),
    }
}

fn reloc_type(t: u32) -> String {
    let name = match t {
        elf::R_X86_64_NONE => "R_X86_64_NONE",
        elf::R_X86_64_64 => "R_X86_64_64",
        elf::R_X86_64_PC32 => "R_X86_64_PC32",
        elf::R_X86_64_GOT32 => "R_X86_64_GOT32",
        elf::R_X86_64_PLT32 => "R_X86_64_PLT32",
        elf::R_X86_64_GOTPCREL => "R_X86_64_GOTPCREL",
        elf::R_X86_64_32 => "R_X86_64_32",
        elf::R_X86_64_32S => "R_X86_64_32S",
        elf::R_X86_64_16 => "R_X86_64_16",
        elf::R_X86_64_PC16 => "R_X86_64_PC16",
        elf::R_X86_64_8 => "R_X86_64_8",
        elf::R_X86_64_PC8 => "R_X86_64_PC8",
        elf::R_X86_64_PC64 => "R_X86_64_PC64",
        elf::R_X86_64_GOTPCRELX => "R_X86_64_GOTPCRELX",
        elf::R_X86_64_REX_GOTPCRELX => "R_X86_64_REX_GOTPCRELX",
        _ => return format!("R_X86_64_{t}"),
    };
    name.to_string()
}

/// The NUL-separated strings of a section, escaped.
fn strings(data: &[u8]) -> Vec<String> {
    data.split(|&b| b == 0)
        .filter(|s| !s.is_empty())
        .map(|s| s.escape_ascii().to_string())
        .collect()
}

fn signed_hex(v: i64) -> String {
    if v < 0 {
        format!("-{:#x}", v.unsigned_abs())
    } else {
        format!("+{v:#x}")
    }
}

/// The dump of an x86-64 object, or what is wrong with it.
pub fn dump(data: &[u8]) -> Result<String, String> {
    dump_with(data, &|_, _| None)
}

/// The dump of a relocatable object of any machine; `reloc_name(e_machine, r_type)` names
/// the relocation types of machines other than x86-64 (`R_<n>` where it gives none).
pub fn dump_with(
    data: &[u8],
    reloc_name: &dyn Fn(u16, u32) -> Option<&'static str>,
) -> Result<String, String> {
    fn e(what: &'static str) -> impl Fn(object::read::Error) -> String {
        move |err| format!("{what}: {err}")
    }
    let header = Hdr::parse(data).map_err(e("ELF header"))?;
    let endian = header.endian().map_err(e("ELF header"))?;
    if header.e_type(endian) != elf::ET_REL {
        return Err("not a relocatable object".into());
    }
    let machine = header.e_machine(endian);
    let x86 = machine == elf::EM_X86_64;
    let reloc_type = |t: u32| -> String {
        if x86 {
            reloc_type(t)
        } else {
            reloc_name(machine, t).map_or_else(|| format!("R_{t}"), str::to_string)
        }
    };
    let sections = header.sections(endian, data).map_err(e("sections"))?;
    let symtab = sections
        .symbols(endian, data, elf::SHT_SYMTAB)
        .map_err(e("symbol table"))?;
    let sec_name = |i: usize| -> String {
        match sections.section(object::SectionIndex(i)) {
            Ok(s) => String::from_utf8_lossy(sections.section_name(endian, s).unwrap_or(b"?"))
                .into_owned(),
            Err(_) => format!("#{i}"),
        }
    };
    let shndx_name = |shndx: u16| -> String {
        match shndx {
            elf::SHN_UNDEF => "UND".into(),
            elf::SHN_ABS => "ABS".into(),
            elf::SHN_COMMON => "COMMON".into(),
            0xff20 => "LIVEPATCH".into(), // SHN_LIVEPATCH
            n if n >= elf::SHN_LORESERVE => format!("{n:#x}"),
            n => sec_name(usize::from(n)),
        }
    };
    let sym_name = |i: usize| -> String {
        let Ok(s) = symtab.symbol(object::SymbolIndex(i)) else {
            return format!("#sym{i}");
        };
        if s.st_type() == elf::STT_SECTION {
            return format!("[section {}]", shndx_name(s.st_shndx(endian)));
        }
        String::from_utf8_lossy(symtab.symbol_name(endian, s).unwrap_or(b"?")).into_owned()
    };

    let mut out = String::new();
    if !x86 {
        let _ = writeln!(
            out,
            "machine {machine}, {:?}-endian, e_flags {:#x}",
            endian,
            header.e_flags(endian)
        );
    }
    out.push_str("sections:\n");
    for (i, s) in sections.iter().enumerate().skip(1) {
        let t = s.sh_type(endian);
        let link = match s.sh_link(endian) {
            0 => "-".to_string(),
            l => sec_name(l as usize),
        };
        let info = match s.sh_info(endian) {
            0 => "-".to_string(),
            n if s.sh_flags(endian) & u64::from(elf::SHF_INFO_LINK) != 0 => sec_name(n as usize),
            n => n.to_string(),
        };
        let _ = writeln!(
            out,
            "  {} {} flags={} size={:#x} entsize={:#x} align={} link={link} info={info}",
            sec_name(i),
            section_type(t),
            section_flags(s.sh_flags(endian)),
            s.sh_size(endian),
            s.sh_entsize(endian),
            s.sh_addralign(endian),
        );
    }

    out.push_str("symbols:\n");
    for (i, s) in symtab.iter().enumerate().skip(1) {
        let name = if s.st_type() == elf::STT_SECTION {
            String::new()
        } else {
            sym_name(i)
        };
        // st_other beyond the visibility: ppc64's local entry point offset.
        let other = s.st_other() & !3;
        let other = if other != 0 && !x86 {
            format!(" other={other:#x}")
        } else {
            String::new()
        };
        let _ = writeln!(
            out,
            "  {:<8} {:<6} {:<7} {} value={:#x} size={}{other} {name}",
            symbol_type(s.st_type()),
            symbol_bind(s.st_bind()),
            symbol_visibility(s.st_visibility()),
            shndx_name(s.st_shndx(endian)),
            s.st_value(endian),
            s.st_size(endian),
        );
    }

    out.push_str("relocations:\n");
    for s in sections.iter() {
        let Some((relas, _)) = s.rela(endian, data).map_err(e("relocations"))? else {
            continue;
        };
        let _ = writeln!(
            out,
            "  {} -> {}:",
            String::from_utf8_lossy(sections.section_name(endian, s).unwrap_or(b"?")),
            sec_name(s.sh_info(endian) as usize)
        );
        for r in relas {
            let _ = writeln!(
                out,
                "    {:#06x} {} {} {}",
                r.r_offset(endian),
                reloc_type(r.r_type(endian, false)),
                sym_name(r.r_sym(endian, false) as usize),
                signed_hex(r.r_addend(endian)),
            );
        }
    }

    let mut strs = String::new();
    for (i, s) in sections.iter().enumerate() {
        let name = sec_name(i);
        // klpgen's writer drops SHF_STRINGS from the copies (no merging across copies), so
        // string literal sections are known by name too.
        let is_strings = s.sh_flags(endian) & u64::from(elf::SHF_STRINGS) != 0
            || (name.starts_with(".rodata") && name.contains(".str"));
        if (!is_strings && name != ".modinfo") || s.sh_type(endian) == elf::SHT_NOBITS {
            continue;
        }
        let bytes = s.data(endian, data).map_err(e("section data"))?;
        let _ = writeln!(strs, "  {name}:");
        for t in strings(bytes) {
            let _ = writeln!(strs, "    \"{t}\"");
        }
    }
    if !strs.is_empty() {
        out.push_str("strings:\n");
        out.push_str(&strs);
    }
    Ok(out)
}
