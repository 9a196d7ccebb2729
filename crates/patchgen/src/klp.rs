//! klp markings on the linked module: relocations against `.klp.sym.*` symbols move into
//! `.klp.rela.<objname>.<section>` sections (SHT_RELA, SHF_ALLOC | SHF_RELA_LIVEPATCH) and those
//! symbols get section index SHN_LIVEPATCH. Linkers drop these markings, so this runs on the
//! final `.ko` after kbuild has linked it. Also a structural check of the result.

use std::collections::BTreeMap;

use object::build::elf::{Builder, SectionData};
use object::build::Id as _;
use object::elf;
use object::read::elf::{FileHeader, SectionHeader};
use object::Endianness;

use crate::Error;

pub const SHN_LIVEPATCH: u16 = 0xff20;
pub const SHF_RELA_LIVEPATCH: u64 = 0x0010_0000;
pub const KLP_SYM_PREFIX: &str = ".klp.sym.";
pub const KLP_RELA_PREFIX: &str = ".klp.rela.";

/// What finalisation did.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct KlpSummary {
    /// (section name, number of relocations)
    pub sections: Vec<(String, usize)>,
    /// `.klp.sym.*` symbol names.
    pub symbols: Vec<String>,
}

/// `.klp.sym.<obj>.<name>,<pos>` → obj
fn klp_objname(sym: &str) -> Option<&str> {
    let rest = sym.strip_prefix(KLP_SYM_PREFIX)?;
    let dot = rest.find('.')?;
    Some(&rest[..dot])
}

/// Apply the klp markings to a linked livepatch module.
pub fn finalize_module(label: &str, ko: &[u8]) -> Result<(Vec<u8>, KlpSummary), Error> {
    let bad = |what: String| Error::Module {
        module: label.to_string(),
        what,
    };
    let mut b = Builder::read(ko).map_err(|e| bad(format!("cannot parse: {e}")))?;
    let mut summary = KlpSummary::default();

    let mut klp_syms = std::collections::HashMap::new();
    for sym in b.symbols.iter_mut() {
        let name = String::from_utf8_lossy(&sym.name).into_owned();
        if let Some(obj) = klp_objname(&name) {
            if sym.section.is_some() {
                return Err(bad(format!(
                    "{name} is defined in the module; it must be a reference"
                )));
            }
            klp_syms.insert(sym.id().index(), obj.to_string());
            sym.st_shndx = SHN_LIVEPATCH;
            summary.symbols.push(name);
        }
    }
    if klp_syms.is_empty() {
        return Ok((ko.to_vec(), summary));
    }
    let symtab = b
        .sections
        .iter()
        .find(|s| matches!(s.data, SectionData::Symbol))
        .map(|s| s.id())
        .ok_or_else(|| bad("no symbol table".into()))?;

    let rela_ids: Vec<_> = b
        .sections
        .iter()
        .filter(|s| matches!(s.data, SectionData::Relocation(_)))
        .map(|s| s.id())
        .collect();
    for id in rela_ids {
        let (target, relocs) = {
            let s = b.sections.get_mut(id);
            let Some(target) = s.sh_info_section else {
                continue;
            };
            let SectionData::Relocation(relocs) = &mut s.data else {
                unreachable!()
            };
            let all = std::mem::take(relocs);
            let (klp, rest): (Vec<_>, Vec<_>) = all
                .into_iter()
                .partition(|r| r.symbol.is_some_and(|y| klp_syms.contains_key(&y.index())));
            *relocs = rest;
            if relocs.is_empty() {
                s.delete = true;
            }
            (target, klp)
        };
        if relocs.is_empty() {
            continue;
        }
        let target_name = String::from_utf8_lossy(&b.sections.get(target).name).into_owned();
        let mut by_obj: BTreeMap<String, Vec<_>> = BTreeMap::new();
        for r in relocs {
            let obj = klp_syms[&r.symbol.expect("partitioned on symbol").index()].clone();
            by_obj.entry(obj).or_default().push(r);
        }
        for (obj, relocs) in by_obj {
            let name = format!(
                "{KLP_RELA_PREFIX}{obj}.{}",
                target_name.strip_prefix('.').unwrap_or(&target_name)
            );
            summary.sections.push((name.clone(), relocs.len()));
            let s = b.sections.add();
            s.name = name.into_bytes().into();
            s.sh_type = elf::SHT_RELA;
            s.sh_flags = u64::from(elf::SHF_ALLOC | elf::SHF_INFO_LINK) | SHF_RELA_LIVEPATCH;
            s.sh_addralign = 8;
            s.sh_entsize = 24;
            s.sh_link_section = Some(symtab);
            s.sh_info_section = Some(target);
            s.data = SectionData::Relocation(relocs);
        }
    }
    let mut out = Vec::new();
    b.write(&mut out)
        .map_err(|e| bad(format!("cannot write: {e}")))?;
    summary.sections.sort();
    summary.symbols.sort();
    Ok((out, summary))
}

/// One problem found in a finished livepatch module.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Finding {
    pub key: String,
    pub detail: String,
}

/// Structural checks of a finalised module: modinfo `livepatch=Y`, every `.klp.rela` section
/// well formed (flags, target, SHN_LIVEPATCH symbols only, parseable names), no undefined
/// `.klp.sym` symbol left.
pub fn check_module(label: &str, ko: &[u8]) -> Result<Vec<Finding>, Error> {
    let bad = |what: String| Error::Module {
        module: label.to_string(),
        what,
    };
    let header = elf::FileHeader64::<Endianness>::parse(ko).map_err(|e| bad(e.to_string()))?;
    let endian = header.endian().map_err(|e| bad(e.to_string()))?;
    let sections = header
        .sections(endian, ko)
        .map_err(|e| bad(e.to_string()))?;
    let symtab = sections
        .symbols(endian, ko, elf::SHT_SYMTAB)
        .map_err(|e| bad(e.to_string()))?;
    let mut findings = Vec::new();
    let mut f = |key: &str, detail: String| {
        findings.push(Finding {
            key: key.to_string(),
            detail,
        })
    };

    let modinfo = sections
        .section_by_name(endian, b".modinfo")
        .and_then(|(_, s)| s.data(endian, ko).ok())
        .unwrap_or(&[]);
    let entries: Vec<&[u8]> = modinfo.split(|&c| c == 0).collect();
    if !entries.contains(&&b"livepatch=Y"[..]) {
        f(
            "check.modinfo.livepatch",
            "modinfo has no livepatch=Y".into(),
        );
    }
    if !entries.iter().any(|e| e.starts_with(b"license=GPL")) {
        f("check.modinfo.license", "modinfo has no GPL license".into());
    }

    for sym in symtab.iter() {
        let name = String::from_utf8_lossy(symtab.symbol_name(endian, sym).unwrap_or(b""));
        if let Some(rest) = name.strip_prefix(KLP_SYM_PREFIX) {
            let shndx = object::read::elf::Sym::st_shndx(sym, endian);
            if shndx != SHN_LIVEPATCH {
                f(
                    "check.klp-sym.shndx",
                    format!("{name} has section index {shndx:#x}, not SHN_LIVEPATCH"),
                );
            }
            let ok = rest
                .split_once('.')
                .and_then(|(obj, r)| r.rsplit_once(',').map(|(n, p)| (obj, n, p)))
                .is_some_and(|(obj, n, p)| {
                    !obj.is_empty()
                        && obj.len() <= 55
                        && !n.is_empty()
                        && n.len() <= 511
                        && p.parse::<u64>().is_ok()
                });
            if !ok {
                f(
                    "check.klp-sym.name",
                    format!("{name} is not .klp.sym.<obj>.<name>,<pos>"),
                );
            }
        }
    }

    for (i, s) in sections.iter().enumerate() {
        let name = String::from_utf8_lossy(sections.section_name(endian, s).unwrap_or(b""));
        if !name.starts_with(KLP_RELA_PREFIX) {
            continue;
        }
        let flags = s.sh_flags(endian);
        if s.sh_type(endian) != elf::SHT_RELA {
            f("check.klp-rela.type", format!("{name} is not SHT_RELA"));
        }
        if flags & SHF_RELA_LIVEPATCH == 0 || flags & u64::from(elf::SHF_ALLOC) == 0 {
            f(
                "check.klp-rela.flags",
                format!("{name} lacks SHF_ALLOC or SHF_RELA_LIVEPATCH"),
            );
        }
        let target = s.sh_info(endian) as usize;
        if target == 0 || target >= sections.len() || target == i {
            f(
                "check.klp-rela.target",
                format!("{name} applies to no valid section"),
            );
        }
        let obj = &name[KLP_RELA_PREFIX.len()..];
        let obj = obj.split('.').next().unwrap_or("");
        if let Ok(Some((relas, _))) = s.rela(endian, ko) {
            for r in relas {
                let idx = r.r_sym(endian, false) as usize;
                let Ok(sym) = symtab.symbol(object::SymbolIndex(idx)) else {
                    f(
                        "check.klp-rela.symbol",
                        format!("{name}: relocation names symbol {idx}, past the table"),
                    );
                    continue;
                };
                let sname = String::from_utf8_lossy(symtab.symbol_name(endian, sym).unwrap_or(b""));
                if object::read::elf::Sym::st_shndx(sym, endian) != SHN_LIVEPATCH {
                    f(
                        "check.klp-rela.symbol",
                        format!("{name}: {sname} is not a livepatch symbol"),
                    );
                }
                if klp_objname(&sname) != Some(obj) {
                    f(
                        "check.klp-rela.object",
                        format!("{name}: {sname} belongs to another object"),
                    );
                }
            }
        }
    }
    Ok(findings)
}
