//! The checker's own reader of a target object (vmlinux or a module): its symbols as kallsyms
//! lists them, its `__mcount_loc` table, and the release it belongs to.
//!
//! This is deliberately a second reader of the target's symbol table, independent of the
//! binder's (`crate::target::TargetSymtab`). The binder goes from a symbol of the original
//! object (a name and its source file) to a position; this reader goes the other way, from a
//! position to the symbol `klp_find_object_symbol` would find, with its own model of which
//! symbols kallsyms counts (no local labels; in a module nothing outside the sections kept
//! after load). The check passes only when both derivations agree, so a binding bug — a wrong
//! filter, a wrong order, a wrong file group — shows up as a finding instead of a module that
//! patches the wrong function. Only what is not being cross-checked is shared with the binder:
//! the ELF parsing (`crate::elf`), the banner and vermagic readers and the export identity
//! (`crate::target::KernelIdentity`).

use std::collections::HashMap;

use object::elf;
use object::read::elf::{Rela as _, SectionHeader, Sym};
use object::Endianness;

use crate::elf::Elf;
use crate::manifest::Origin;
use crate::target::{module_vermagic, KernelIdentity};
use crate::Error;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Vmlinux,
    Module,
}

/// One symbol kallsyms lists.
#[derive(Debug, Clone)]
pub(super) struct KSym {
    /// Address for kallsyms order (vmlinux); `st_value` (+ `sh_addr` when relocatable).
    addr: u64,
    /// Where the code is, for `__mcount_loc` lookups: (0, address) in a linked image,
    /// (section index, offset) in a relocatable object.
    loc: (u64, u64),
    size: u64,
    pub(super) func: bool,
    local: bool,
    /// Index into `files` of the STT_FILE group a local belongs to.
    file: Option<usize>,
    index: usize,
}

/// A target object — vmlinux or a module — as the livepatch core will see it: symbols in
/// kallsyms order, its `__mcount_loc` table, and the kernel release it belongs to.
///
/// Not the binder's `TargetSymtab`, on purpose: see the module documentation. The two read
/// the same symbol table with separately written filters and orders so that the check of a
/// finished module is a second derivation of every klp symbol's position, not a replay of
/// the first.
#[derive(Debug)]
pub struct TargetObject {
    pub label: String,
    syms: Vec<KSym>,
    by_name: HashMap<String, Vec<usize>>,
    files: Vec<String>,
    /// Sorted call-site addresses per location key; `None` when there is no table.
    mcount: Option<HashMap<u64, Vec<u64>>>,
    /// The release: from `linux_banner` (vmlinux), from modinfo `vermagic` (a module).
    pub release: Option<String>,
    /// vmlinux: its exports and their CRCs, to check Module.symvers against.
    pub identity: Option<KernelIdentity>,
}

/// What a klp symbol name or a replaced function's `old_sympos` finds in a target object.
pub(super) enum Resolve<'t> {
    Found(&'t KSym),
    Missing,
    /// sympos 0 with this many same-named symbols.
    Ambiguous(usize),
    /// sympos beyond this many same-named symbols.
    PastEnd(usize),
}

/// What one pass over a target's symbol table finds.
#[derive(Default)]
struct Scan {
    syms: Vec<KSym>,
    /// `names[i]` is the name of `syms[i]`.
    names: Vec<String>,
    files: Vec<String>,
    /// `linux_banner`: (section index, address, size).
    banner: Option<(usize, u64, u64)>,
    /// `__start_mcount_loc` and `__stop_mcount_loc` of a linked image.
    mcount_bounds: (Option<u64>, Option<u64>),
}

impl TargetObject {
    /// The kernel image: kallsyms order is address order among symbols of one name.
    pub fn vmlinux(label: &str, data: &[u8]) -> Result<Self, Error> {
        Self::parse(label, data, Kind::Vmlinux)
    }

    /// A module (`.ko`): kallsyms order is its symbol table order.
    pub fn module(label: &str, data: &[u8]) -> Result<Self, Error> {
        Self::parse(label, data, Kind::Module)
    }

    fn parse(label: &str, data: &[u8], kind: Kind) -> Result<Self, Error> {
        let bad = |what: String| Error::Target {
            target: label.to_string(),
            what,
        };
        let e = Elf::parse(data, &bad)?;
        if e.symtab.is_empty() {
            return Err(bad("has no symbol table (stripped?)".into()));
        }
        let Scan {
            syms,
            names,
            files,
            banner,
            mcount_bounds,
        } = scan(&e, kind);
        let mut by_name: HashMap<String, Vec<usize>> = HashMap::new();
        for (i, n) in names.into_iter().enumerate() {
            by_name.entry(n).or_default().push(i);
        }
        if kind == Kind::Vmlinux {
            for v in by_name.values_mut() {
                v.sort_by_key(|&i| (syms[i].addr, syms[i].index));
            }
        }
        let (release, identity) = match kind {
            Kind::Vmlinux => (
                banner.and_then(|(shndx, addr, size)| e.banner_release(shndx, addr, size)),
                Some(KernelIdentity::parse(label, data)?),
            ),
            Kind::Module => (module_vermagic(label, data)?, None),
        };
        let mcount = load_mcount(&e, mcount_bounds, &bad)?;
        Ok(TargetObject {
            label: label.to_string(),
            syms,
            by_name,
            files,
            mcount,
            release,
            identity,
        })
    }

    /// The symbol a klp symbol or `old_sympos` names, as `klp_find_object_symbol` finds it.
    pub(super) fn resolve(&self, name: &str, sympos: u64) -> Resolve<'_> {
        let Some(list) = self.by_name.get(name) else {
            return Resolve::Missing;
        };
        if sympos == 0 {
            return match list.as_slice() {
                [only] => Resolve::Found(&self.syms[*only]),
                _ => Resolve::Ambiguous(list.len()),
            };
        }
        match usize::try_from(sympos - 1).ok().and_then(|i| list.get(i)) {
            Some(&i) => Resolve::Found(&self.syms[i]),
            None => Resolve::PastEnd(list.len()),
        }
    }

    /// The position (`old_sympos`) of the symbol named `name` at address `addr`: 0 when the
    /// name is unique, else its place among the same-named symbols; `None` when no symbol of
    /// that name is there (for kpatch's modules of kernels without `old_sympos`).
    pub(super) fn position_at(&self, name: &str, addr: u64) -> Option<u64> {
        let list = self.by_name.get(name)?;
        let i = list.iter().position(|&i| self.syms[i].addr == addr)?;
        Some(if list.len() == 1 { 0 } else { i as u64 + 1 })
    }

    fn file_of(&self, s: &KSym) -> Option<&str> {
        s.file.map(|f| self.files[f].as_str())
    }

    pub(super) fn origin_matches(&self, s: &KSym, o: &Origin) -> bool {
        match o {
            Origin::Global => !s.local,
            Origin::Local(f) => s.local && self.file_of(s) == Some(f.as_str()),
            Origin::Unknown => true,
        }
    }

    pub(super) fn describe(&self, s: &KSym) -> String {
        match (s.local, self.file_of(s)) {
            (false, _) => "a global symbol".to_string(),
            (true, Some(f)) => format!("a static symbol of {f}"),
            (true, None) => "a static symbol of no known file".to_string(),
        }
    }

    /// Whether an `__mcount_loc` entry lies in the function (ftrace_location()); `None` when
    /// the target has no such table.
    pub(super) fn ftrace_able(&self, s: &KSym) -> Option<bool> {
        let table = self.mcount.as_ref()?;
        let Some(sites) = table.get(&s.loc.0) else {
            return Some(false);
        };
        let start = s.loc.1;
        let end = start.saturating_add(s.size.max(1));
        let i = sites.partition_point(|&a| a < start);
        Some(sites.get(i).is_some_and(|&a| a < end))
    }

    /// Number of symbols counted for sympos (kallsyms' view).
    pub fn symbol_count(&self) -> usize {
        self.syms.len()
    }

    /// Number of ftrace call sites, if the target has an `__mcount_loc` table.
    pub fn mcount_count(&self) -> Option<usize> {
        self.mcount.as_ref().map(|m| m.values().map(Vec::len).sum())
    }
}

/// Every symbol kallsyms lists, in symbol table order, with the STT_FILE groups and the
/// symbols the rest of the reader needs (`linux_banner`, the `__mcount_loc` bounds).
fn scan(e: &Elf<'_>, kind: Kind) -> Scan {
    let relocatable = e.e_type == elf::ET_REL;
    let mut out = Scan::default();
    for (index, sym) in e.symtab.iter().enumerate() {
        let name = e.sym_name(sym);
        let shndx = usize::from(sym.st_shndx(e.endian));
        if sym.st_type() == elf::STT_FILE {
            out.files.push(name);
            continue;
        }
        let defined = shndx != usize::from(elf::SHN_UNDEF) && shndx < e.sections.len();
        if !defined || name.is_empty() || sym.st_type() == elf::STT_SECTION {
            continue;
        }
        let value = sym.st_value(e.endian);
        match name.as_str() {
            "__start_mcount_loc" if !relocatable => out.mcount_bounds.0 = Some(value),
            "__stop_mcount_loc" if !relocatable => out.mcount_bounds.1 = Some(value),
            "linux_banner" if kind == Kind::Vmlinux => {
                out.banner = Some((shndx, value, sym.st_size(e.endian)))
            }
            _ => {}
        }
        let Some(sec) = listed_section(e, kind, &name, shndx) else {
            continue;
        };
        let (addr, loc) = if relocatable {
            (
                sec.sh_addr(e.endian).wrapping_add(value),
                (shndx as u64, value),
            )
        } else {
            (value, (0, value))
        };
        let local = sym.st_bind() == elf::STB_LOCAL;
        out.syms.push(KSym {
            addr,
            loc,
            size: sym.st_size(e.endian),
            func: sym.st_type() == elf::STT_FUNC,
            local,
            file: (local && !out.files.is_empty()).then(|| out.files.len() - 1),
            index,
        });
        out.names.push(name);
    }
    out
}

/// The section of a defined symbol that kallsyms lists; `None` for what it leaves out: local
/// labels, and for modules what is not kept after load.
fn listed_section<'a>(
    e: &Elf<'a>,
    kind: Kind,
    name: &str,
    shndx: usize,
) -> Option<&'a elf::SectionHeader64<Endianness>> {
    if name.starts_with(".L") || name.starts_with('$') {
        return None;
    }
    let sec = e.section(shndx)?;
    if kind == Kind::Module
        && (sec.sh_flags(e.endian) & u64::from(elf::SHF_ALLOC) == 0
            || e.sec_name(sec).starts_with(".init"))
    {
        return None;
    }
    Some(sec)
}

/// The call sites recorded in `__mcount_loc`: in a linked image the table between
/// `__start_mcount_loc` and `__stop_mcount_loc` (or a section of that name) holds absolute
/// addresses; in a relocatable object its relocations say where each call site is.
fn load_mcount(
    e: &Elf<'_>,
    bounds: (Option<u64>, Option<u64>),
    bad: &dyn Fn(String) -> Error,
) -> Result<Option<HashMap<u64, Vec<u64>>>, Error> {
    let mcount_sec = e
        .sections
        .section_by_name(e.endian, b"__mcount_loc")
        .map(|(i, _)| i.0);
    let mut table = if e.e_type == elf::ET_REL {
        let Some(m) = mcount_sec else {
            return Ok(None);
        };
        mcount_relocations(e, m, bad)?
    } else if let (Some(start), Some(stop)) = bounds {
        addresses(e, linked_mcount_table(e, start, stop, bad)?)
    } else if let Some(bytes) =
        mcount_sec.and_then(|m| e.section(m).and_then(|s| s.data(e.endian, e.data).ok()))
    {
        addresses(e, bytes)
    } else {
        return Ok(None);
    };
    for v in table.values_mut() {
        v.sort_unstable();
    }
    Ok(Some(table))
}

/// A table of absolute addresses, all under location key 0 (a linked image).
fn addresses(e: &Elf<'_>, bytes: &[u8]) -> HashMap<u64, Vec<u64>> {
    let sites = bytes
        .chunks_exact(8)
        .map(|c| {
            let mut a = [0u8; 8];
            a.copy_from_slice(c);
            object::Endian::read_u64_bytes(e.endian, a)
        })
        .collect();
    HashMap::from([(0, sites)])
}

/// The bytes of the table between `__start_mcount_loc` and `__stop_mcount_loc`.
fn linked_mcount_table<'a>(
    e: &Elf<'a>,
    start: u64,
    stop: u64,
    bad: &dyn Fn(String) -> Error,
) -> Result<&'a [u8], Error> {
    if stop < start || !(stop - start).is_multiple_of(8) {
        return Err(bad(format!(
            "__start_mcount_loc {start:#x} and __stop_mcount_loc {stop:#x} do not bound a table of addresses"
        )));
    }
    let sec = e.sections.iter().enumerate().find(|(_, s)| {
        let a = s.sh_addr(e.endian);
        s.sh_type(e.endian) != elf::SHT_NOBITS
            && s.sh_flags(e.endian) & u64::from(elf::SHF_ALLOC) != 0
            && a <= start
            && stop <= a.saturating_add(s.sh_size(e.endian))
    });
    sec.and_then(|(i, _)| e.bytes_at(i, start, stop - start))
        .ok_or_else(|| {
            bad(format!(
                "the __mcount_loc table at {start:#x}..{stop:#x} is not in any section"
            ))
        })
}

/// The call sites of a relocatable object's `__mcount_loc` (section `m`), by the section
/// they are in: each entry's relocation names the symbol and addend of one call site.
fn mcount_relocations(
    e: &Elf<'_>,
    m: usize,
    bad: &dyn Fn(String) -> Error,
) -> Result<HashMap<u64, Vec<u64>>, Error> {
    let mut table: HashMap<u64, Vec<u64>> = HashMap::new();
    for s in e.sections.iter() {
        if s.sh_type(e.endian) != elf::SHT_RELA || s.sh_info(e.endian) as usize != m {
            continue;
        }
        let Ok(Some((relas, _))) = s.rela(e.endian, e.data) else {
            return Err(bad("cannot read the relocations of __mcount_loc".into()));
        };
        for r in relas {
            let Ok(sym) = e
                .symtab
                .symbol(object::SymbolIndex(r.r_sym(e.endian, false) as usize))
            else {
                continue;
            };
            let shndx = sym.st_shndx(e.endian);
            if shndx == elf::SHN_UNDEF || usize::from(shndx) >= e.sections.len() {
                continue;
            }
            let at = sym
                .st_value(e.endian)
                .wrapping_add(r.r_addend(e.endian) as u64);
            table.entry(u64::from(shndx)).or_default().push(at);
        }
    }
    Ok(table)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::testtarget::{fake_vmlinux, target_module, RELEASE};

    #[test]
    fn kallsyms_order_is_address_order() {
        let vm = TargetObject::vmlinux("vmlinux", &fake_vmlinux(Some(RELEASE), true)).unwrap();
        // b.c's helper is second in the symbol table but first by address.
        let Resolve::Found(s) = vm.resolve("helper", 1) else {
            panic!()
        };
        assert_eq!(vm.file_of(s), Some("b.c"));
        let Resolve::Found(s) = vm.resolve("helper", 2) else {
            panic!()
        };
        assert_eq!(vm.file_of(s), Some("a.c"));
        assert!(matches!(vm.resolve("helper", 0), Resolve::Ambiguous(2)));
        assert!(matches!(vm.resolve("helper", 3), Resolve::PastEnd(2)));
        assert!(matches!(vm.resolve("traced", 1), Resolve::Found(_)));
        assert!(matches!(vm.resolve("nothing", 0), Resolve::Missing));
    }

    #[test]
    fn module_kallsyms_order_and_ftrace() {
        let m = TargetObject::module("m.ko", &target_module()).unwrap();
        assert_eq!(m.mcount_count(), Some(3));
        // Symbol table order: position 1 is the one at 0x40.
        let Resolve::Found(s) = m.resolve("helper", 1) else {
            panic!()
        };
        assert_eq!(s.loc.1, 0x40);
        let Resolve::Found(s) = m.resolve("m_notrace", 0) else {
            panic!()
        };
        assert_eq!(m.ftrace_able(s), Some(false));
        let Resolve::Found(s) = m.resolve("m_func", 0) else {
            panic!()
        };
        assert_eq!(m.ftrace_able(s), Some(true));
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for bytes in [&b""[..], b"\x7fELF", &[0u8; 64]] {
            assert!(TargetObject::vmlinux("x", bytes).is_err());
            assert!(TargetObject::module("x", bytes).is_err());
        }
    }
}
