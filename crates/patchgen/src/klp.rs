//! klp markings on the linked module: relocations against `.klp.sym.*` symbols move into
//! `.klp.rela.<objname>.<section>` sections (SHT_RELA, SHF_ALLOC | SHF_RELA_LIVEPATCH) and those
//! symbols get section index SHN_LIVEPATCH (the format: `klpsym.rs`). Linkers drop these
//! markings, so this runs on the final `.ko` after kbuild has linked it. Also records what the
//! module replaces and which target symbols it binds ([`Manifest`]) for `klpgen check` (see
//! `check.rs`).

use std::collections::{BTreeMap, HashMap};

use object::build::elf::{Builder, Relocation, SectionData, SectionId};
use object::build::Id as _;
use object::elf;

use crate::klpsym::{self, SHF_RELA_LIVEPATCH, SHN_LIVEPATCH};
use crate::manifest::{Manifest, FUNCS_SECTION, SYMS_SECTION};
use crate::{Error, MAX_ALIGNMENT_PADDING};

/// What finalisation did.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct KlpSummary {
    /// (section name, number of relocations)
    pub sections: Vec<(String, usize)>,
    /// `.klp.sym.*` symbol names.
    pub symbols: Vec<String>,
}

fn check_alignments(b: &Builder<'_>) -> Result<(), String> {
    let mut total: u64 = 0;
    for s in b.sections.iter() {
        let align = s.sh_addralign;
        if align > 1 && !align.is_power_of_two() {
            return Err(format!(
                "section {}: alignment {align} is not a power of two",
                String::from_utf8_lossy(&s.name)
            ));
        }
        total = total.saturating_add(align);
    }
    if total > MAX_ALIGNMENT_PADDING {
        return Err(format!(
            "section alignments add up to {total} bytes, more than a module can need ({MAX_ALIGNMENT_PADDING})"
        ));
    }
    Ok(())
}

/// Apply the klp markings to a linked livepatch module.
pub fn finalize_module(label: &str, ko: &[u8]) -> Result<(Vec<u8>, KlpSummary), Error> {
    finalize_module_with(label, ko, None)
}

/// Apply the klp markings and, with a manifest, write its records into the non-allocated
/// sections `.klpgen.funcs` and `.klpgen.syms` (the module loader ignores them).
pub fn finalize_module_with(
    label: &str,
    ko: &[u8],
    manifest: Option<&Manifest>,
) -> Result<(Vec<u8>, KlpSummary), Error> {
    let bad = |what: String| Error::Module {
        module: label.to_string(),
        what,
    };
    let mut b = Builder::read(ko).map_err(|e| bad(format!("cannot parse: {e}")))?;
    check_alignments(&b).map_err(bad)?;
    let mut summary = KlpSummary::default();
    let klp_syms = mark_klp_symbols(&mut b, &mut summary).map_err(bad)?;
    if klp_syms.is_empty() && manifest.is_none() {
        return Ok((ko.to_vec(), summary));
    }
    if let Some(m) = manifest {
        add_manifest_sections(&mut b, m).map_err(bad)?;
    }
    let symtab = b
        .sections
        .iter()
        .find(|s| matches!(s.data, SectionData::Symbol))
        .map(|s| s.id())
        .ok_or_else(|| bad("no symbol table".into()))?;
    move_klp_relocations(&mut b, &klp_syms, symtab, &mut summary);
    let mut out = Vec::new();
    b.write(&mut out)
        .map_err(|e| bad(format!("cannot write: {e}")))?;
    summary.sections.sort();
    summary.symbols.sort();
    Ok((out, summary))
}

/// Give every klp symbol section index SHN_LIVEPATCH; returns the object each belongs to, by
/// symbol index. A klp symbol the module defines is an error.
fn mark_klp_symbols(
    b: &mut Builder<'_>,
    summary: &mut KlpSummary,
) -> Result<HashMap<usize, String>, String> {
    let mut klp_syms = HashMap::new();
    for sym in b.symbols.iter_mut() {
        let name = String::from_utf8_lossy(&sym.name).into_owned();
        if let Some(obj) = klpsym::objname_of(&name) {
            if sym.section.is_some() {
                return Err(format!(
                    "{name} is defined in the module; it must be a reference"
                ));
            }
            klp_syms.insert(sym.id().index(), obj.to_string());
            sym.st_shndx = SHN_LIVEPATCH;
            summary.symbols.push(name);
        }
    }
    Ok(klp_syms)
}

/// The manifest's two sections, which the module must not have yet.
fn add_manifest_sections(b: &mut Builder<'_>, m: &Manifest) -> Result<(), String> {
    for (name, text) in [
        (FUNCS_SECTION, m.funcs_text()),
        (SYMS_SECTION, m.syms_text()),
    ] {
        if b.sections
            .iter()
            .any(|s| s.name.as_slice() == name.as_bytes())
        {
            return Err(format!("already has a {name} section"));
        }
        let s = b.sections.add();
        s.name = name.as_bytes().to_vec().into();
        s.sh_type = elf::SHT_PROGBITS;
        s.sh_flags = 0;
        s.sh_addralign = 1;
        s.data = SectionData::Data(text.into());
    }
    Ok(())
}

/// Move every relocation against a klp symbol out of its ordinary relocation section into
/// `.klp.rela.<obj>.<section>` (one per object and target section), deleting ordinary
/// sections left empty.
fn move_klp_relocations(
    b: &mut Builder<'_>,
    klp_syms: &HashMap<usize, String>,
    symtab: SectionId,
    summary: &mut KlpSummary,
) {
    let rela_ids: Vec<_> = b
        .sections
        .iter()
        .filter(|s| matches!(s.data, SectionData::Relocation(_)))
        .map(|s| s.id())
        .collect();
    for id in rela_ids {
        let Some((target, relocs)) = take_klp_relocations(b, id, klp_syms) else {
            continue;
        };
        let target_name = String::from_utf8_lossy(&b.sections.get(target).name).into_owned();
        let mut by_obj: BTreeMap<String, Vec<_>> = BTreeMap::new();
        for r in relocs {
            let obj = klp_syms[&r.symbol.expect("partitioned on symbol").index()].clone();
            by_obj.entry(obj).or_default().push(r);
        }
        for (obj, relocs) in by_obj {
            let name = klpsym::rela_section_name(&obj, &target_name);
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
}

/// Take the relocations against klp symbols out of relocation section `id` (marked deleted
/// when nothing else is left in it); with the section they apply to, `None` when there are
/// none.
fn take_klp_relocations(
    b: &mut Builder<'_>,
    id: SectionId,
    klp_syms: &HashMap<usize, String>,
) -> Option<(SectionId, Vec<Relocation>)> {
    let s = b.sections.get_mut(id);
    let target = s.sh_info_section?;
    let SectionData::Relocation(relocs) = &mut s.data else {
        unreachable!("only relocation sections are passed")
    };
    let all = std::mem::take(relocs);
    let (klp, rest): (Vec<_>, Vec<_>) = all
        .into_iter()
        .partition(|r| r.symbol.is_some_and(|y| klp_syms.contains_key(&y.index())));
    *relocs = rest;
    if relocs.is_empty() {
        s.delete = true;
    }
    (!klp.is_empty()).then_some((target, klp))
}
