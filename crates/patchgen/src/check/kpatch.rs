//! The replaced functions of a livepatch module kpatch-build made, read from the module's own
//! `.kpatch.funcs` table (kpatch's hook builds its `klp_func`s from it at init; the module has
//! no static `klp_func` array and no `.klpgen.funcs`), so `klpgen check` verifies such modules
//! as it verifies its own.
//!
//! The table (a format fact of those modules): an array of `struct kpatch_patch_func`, on 64-bit
//! machines 56 bytes — `new_addr` (0, a pointer to the replacement), `new_size` (8), `old_addr`
//! (16), `old_size` (24), `sympos` (32), `name` (40), `objname` (48) — or, in modules for
//! kernels before 4.5, 48 bytes without `sympos` (`name` at 32, `objname` at 40), where the hook
//! gave the livepatch core `old_addr` instead. The three pointers are filled by relocations
//! (`.rela.kpatch.funcs`); `name` and `objname` point at NUL-terminated strings, normally in
//! `.kpatch.strings` (the section symbol plus an offset, after `ld -r`). The numbers are
//! literals. Which layout a table has is told by where its relocations are, not by its size
//! alone (336 bytes are six of one and seven of the other).

use object::elf;
use object::read::elf::{Rela as _, SectionHeader, Sym};

use crate::elf::Elf;

/// kpatch's table of replaced functions.
pub(super) const FUNCS_SECTION: &str = ".kpatch.funcs";

/// Where the livepatch core is told to find a replaced function.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Position {
    /// `old_sympos` (the 56-byte layout).
    Sympos(u64),
    /// `old_addr` (the 48-byte layout): the function's address in vmlinux, 0 for a module's.
    OldAddr(u64),
}

/// One entry of the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Func {
    pub(super) objname: String,
    pub(super) name: String,
    pub(super) position: Position,
}

/// A layout: entry size and the offsets of `name`, `objname` and (if any) `sympos`.
struct Layout {
    size: u64,
    name: u64,
    objname: u64,
    sympos: Option<u64>,
}

const LAYOUTS: [Layout; 2] = [
    Layout {
        size: 56,
        name: 40,
        objname: 48,
        sympos: Some(32),
    },
    Layout {
        size: 48,
        name: 32,
        objname: 40,
        sympos: None,
    },
];

/// `new_addr`'s offset in both layouts, and `old_addr`'s.
const NEW_ADDR: u64 = 0;
const OLD_ADDR: u64 = 16;

/// The module's `.kpatch.funcs` entries; `None` without such a section, `Err` (what is wrong)
/// when it is not a table of either layout.
pub(super) fn read(e: &Elf<'_>) -> Option<Result<Vec<Func>, String>> {
    let (index, sec) = e
        .sections
        .iter()
        .enumerate()
        .find(|(_, s)| e.sec_name(s) == FUNCS_SECTION)?;
    Some(read_table(e, index, sec))
}

/// (offset, symbol index, addend) of every relocation of section `index`.
fn relocations(e: &Elf<'_>, index: usize) -> Result<Vec<(u64, usize, i64)>, String> {
    let mut out = Vec::new();
    for s in e.sections.iter() {
        if s.sh_type(e.endian) != elf::SHT_RELA || s.sh_info(e.endian) as usize != index {
            continue;
        }
        let Ok(Some((relas, _))) = s.rela(e.endian, e.data) else {
            return Err(format!("the relocations of {FUNCS_SECTION} cannot be read"));
        };
        // The machine's 64-bit absolute type fills each pointer; the offsets tell the layout.
        for r in relas {
            out.push((
                r.r_offset(e.endian),
                r.r_sym(e.endian, false) as usize,
                r.r_addend(e.endian),
            ));
        }
    }
    out.sort_unstable();
    Ok(out)
}

fn read_table(
    e: &Elf<'_>,
    index: usize,
    sec: &elf::SectionHeader64<object::Endianness>,
) -> Result<Vec<Func>, String> {
    if sec.sh_type(e.endian) == elf::SHT_NOBITS {
        return Err(format!("{FUNCS_SECTION} has no contents"));
    }
    let data = sec
        .data(e.endian, e.data)
        .map_err(|_| format!("{FUNCS_SECTION} cannot be read"))?;
    let relocs = relocations(e, index)?;
    let size = data.len() as u64;
    if size == 0 && relocs.is_empty() {
        // A patch of callbacks alone.
        return Ok(Vec::new());
    }
    let Some(layout) = LAYOUTS.iter().find(|l| fits(l, size, &relocs)) else {
        return Err(format!(
            "{FUNCS_SECTION} ({size} bytes, relocations at {}) is not a table of 56-byte or 48-byte kpatch_patch_func entries",
            relocs
                .iter()
                .take(6)
                .map(|r| format!("{:#x}", r.0))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    };
    let word = |at: u64| {
        let i = at as usize;
        // In the module's byte order (an s390x module is big-endian).
        object::Endian::read_u64_bytes(
            e.endian,
            data[i..i + 8].try_into().expect("inside the table"),
        )
    };
    let target = |at: u64| {
        relocs
            .iter()
            .find(|r| r.0 == at)
            .map(|&(_, sym, addend)| (sym, addend))
            .expect("fits() saw it")
    };
    let mut out = Vec::new();
    for i in 0..size / layout.size {
        let base = i * layout.size;
        let name = string_at(e, target(base + layout.name))
            .map_err(|w| format!("entry {i} of {FUNCS_SECTION}: its name {w}"))?;
        let objname = string_at(e, target(base + layout.objname))
            .map_err(|w| format!("entry {i} of {FUNCS_SECTION}: its object name {w}"))?;
        let position = match layout.sympos {
            Some(off) => Position::Sympos(word(base + off)),
            None => Position::OldAddr(word(base + OLD_ADDR)),
        };
        out.push(Func {
            objname,
            name,
            position,
        });
    }
    Ok(out)
}

/// Whether a table of `size` bytes with relocations at `relocs` has `layout`: whole entries,
/// each with exactly its three pointers relocated.
fn fits(layout: &Layout, size: u64, relocs: &[(u64, usize, i64)]) -> bool {
    if size == 0 || !size.is_multiple_of(layout.size) {
        return false;
    }
    let mut want: Vec<u64> = (0..size / layout.size)
        .flat_map(|i| {
            let b = i * layout.size;
            [b + NEW_ADDR, b + layout.name, b + layout.objname]
        })
        .collect();
    want.sort_unstable();
    let got: Vec<u64> = relocs.iter().map(|r| r.0).collect();
    got == want
}

/// The NUL-terminated, printable string a pointer (symbol index, addend) designates in the
/// module; `Err` says why it is none.
fn string_at(e: &Elf<'_>, (sym, addend): (usize, i64)) -> Result<String, String> {
    let s = e
        .symtab
        .symbol(object::SymbolIndex(sym))
        .map_err(|_| format!("names symbol {sym}, past the symbol table"))?;
    let shndx = usize::from(s.st_shndx(e.endian));
    if shndx == usize::from(elf::SHN_UNDEF) || shndx >= usize::from(elf::SHN_LORESERVE) {
        return Err(format!(
            "points at {}, which the module does not define",
            e.sym_name(s)
        ));
    }
    let at = s
        .st_value(e.endian)
        .checked_add_signed(addend)
        .ok_or_else(|| "points before its section".to_string())?;
    let sec = e
        .section(shndx)
        .ok_or_else(|| format!("points into section {shndx}, which does not exist"))?;
    let data = sec
        .data(e.endian, e.data)
        .map_err(|_| "points into a section that cannot be read".to_string())?;
    let rest = usize::try_from(at)
        .ok()
        .and_then(|i| data.get(i..))
        .ok_or_else(|| format!("points past the end of {}", e.sec_name(sec)))?;
    let end = rest
        .iter()
        .position(|&b| b == 0)
        .ok_or_else(|| format!("in {} has no terminating NUL", e.sec_name(sec)))?;
    match std::str::from_utf8(&rest[..end]) {
        Ok(t) if !t.is_empty() && t.bytes().all(|b| b.is_ascii_graphic()) => Ok(t.to_string()),
        _ => Err(format!(
            "in {} is not a printable name ({:?})",
            e.sec_name(sec),
            String::from_utf8_lossy(&rest[..end])
        )),
    }
}
