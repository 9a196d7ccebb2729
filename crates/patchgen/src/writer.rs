//! Write the livepatch object (`klpgen_patch.o`): the planned sections with their relocations,
//! local copies of the new functions plus a global alias per replaced function
//! (`__klpgen_func_N`) and per callback (`__klpgen_callback_<kind>`) for the hook, and
//! undefined `.klp.sym.<obj>.<name>,<pos>` symbols for references that become klp relocations
//! once the module is linked (see `klp.rs`). Copies are local symbols, except the new globals
//! other units of the livepatch refer to ([`write_patch_object_with`]): those are global, so
//! linking the units' objects into one (`ld -r`) resolves the other units' references to them.

use object::write::{Object, Relocation, SectionId, Symbol, SymbolId, SymbolSection};
use object::{
    elf, BinaryFormat, RelocationFlags, SectionFlags, SectionKind, SymbolFlags, SymbolKind,
    SymbolScope,
};

use elfdiff::model::SymKind;
use elfdiff::plan::PlanTarget;
use elfdiff::Plan;

use crate::target::Binding;
use crate::Error;

/// The global symbol the hook uses for the new body of replaced function `i`.
pub fn new_func_alias(i: usize) -> String {
    format!("__klpgen_func_{i}")
}

/// The global symbol the hook uses for the callback of one kind (at most one per module
/// object, so the kind names it).
pub fn callback_alias(kind: elfdiff::CallbackKind) -> String {
    format!("__klpgen_callback_{}", kind.member())
}

fn kind_of(sh_type: u32, flags: u64) -> SectionKind {
    let f = |x: u32| flags & u64::from(x) != 0;
    if sh_type == elf::SHT_NOBITS {
        SectionKind::UninitializedData
    } else if f(elf::SHF_EXECINSTR) {
        SectionKind::Text
    } else if f(elf::SHF_STRINGS) {
        SectionKind::ReadOnlyString
    } else if f(elf::SHF_WRITE) {
        SectionKind::Data
    } else if f(elf::SHF_ALLOC) {
        SectionKind::ReadOnlyData
    } else {
        SectionKind::Other
    }
}

/// The ELF symbol flags of a defined symbol whose `st_other` is not the default (a ppc64
/// function's local entry point); the writer's own otherwise.
fn elf_flags(kind: SymbolKind, global: bool, other: u8) -> SymbolFlags<SectionId, SymbolId> {
    if other == 0 {
        return SymbolFlags::None;
    }
    let st_type = match kind {
        SymbolKind::Text => elf::STT_FUNC,
        SymbolKind::Data => elf::STT_OBJECT,
        _ => elf::STT_NOTYPE,
    };
    let st_bind = if global {
        elf::STB_GLOBAL
    } else {
        elf::STB_LOCAL
    };
    SymbolFlags::Elf {
        st_info: (st_bind << 4) | st_type,
        st_other: other,
    }
}

/// Serialise a plan whose externals are bound by `bindings` (same order as `plan.externals`).
/// `alias_base` numbers the aliases so several objects can go into one module.
pub fn write_patch_object(
    plan: &Plan,
    bindings: &[Binding],
    alias_base: usize,
) -> Result<Vec<u8>, Error> {
    write_patch_object_with(plan, bindings, alias_base, &[])
}

/// [`write_patch_object`], with the copies `globals` (indices into `plan.symbols`: new globals
/// of the patch that other units of the livepatch refer to) written as global symbols.
pub fn write_patch_object_with(
    plan: &Plan,
    bindings: &[Binding],
    alias_base: usize,
    globals: &[usize],
) -> Result<Vec<u8>, Error> {
    if bindings.len() != plan.externals.len() {
        return Err(Error::Internal(format!(
            "{} bindings for {} externals",
            bindings.len(),
            plan.externals.len()
        )));
    }
    // The ELF writer lays out file offsets by alignment: bound the padding it may add.
    let padding = plan
        .sections
        .iter()
        .fold(0u64, |sum, s| sum.saturating_add(s.align));
    if padding > crate::MAX_ALIGNMENT_PADDING {
        return Err(Error::Write(format!(
            "section alignments add up to {padding} bytes, more than a livepatch object can need ({})",
            crate::MAX_ALIGNMENT_PADDING
        )));
    }
    let mut obj = Object::new(
        BinaryFormat::Elf,
        plan.machine.architecture(),
        plan.machine.endianness(),
    );
    if plan.e_flags != 0 {
        obj.flags = object::FileFlags::Elf {
            os_abi: elf::ELFOSABI_NONE,
            abi_version: 0,
            e_flags: plan.e_flags,
        };
    }
    let mut secs: Vec<SectionId> = Vec::with_capacity(plan.sections.len());
    for s in &plan.sections {
        let id = obj.add_section(
            Vec::new(),
            s.name.as_bytes().to_vec(),
            kind_of(s.sh_type, s.sh_flags),
        );
        // Keep the original flags, but not merge/strings (we copy whole sections and the
        // linker must not deduplicate across them) or group membership.
        let keep =
            !u64::from(elf::SHF_MERGE | elf::SHF_STRINGS | elf::SHF_GROUP | elf::SHF_LINK_ORDER);
        obj.section_mut(id).flags = SectionFlags::Elf {
            sh_flags: s.sh_flags & keep,
        };
        let align = s.align.max(1);
        if !align.is_power_of_two() {
            return Err(Error::Write(format!(
                "section {}: alignment {align} is not a power of two",
                s.name
            )));
        }
        if s.sh_type == elf::SHT_NOBITS {
            obj.append_section_bss(id, s.size, align);
        } else {
            obj.set_section_data(id, s.data.clone(), align);
        }
        secs.push(id);
    }
    let gnu_stack = obj.add_section(Vec::new(), b".note.GNU-stack".to_vec(), SectionKind::Other);
    obj.section_mut(gnu_stack).flags = SectionFlags::Elf { sh_flags: 0 };

    let mut syms: Vec<SymbolId> = Vec::with_capacity(plan.symbols.len());
    let sec_of = |i: usize| {
        secs.get(i)
            .copied()
            .ok_or_else(|| Error::Internal(format!("plan names section {i} of {}", secs.len())))
    };
    for &g in globals {
        let name = plan
            .symbols
            .get(g)
            .map(|s| s.name.as_str())
            .ok_or_else(|| {
                Error::Internal(format!("global {g} of {} symbols", plan.symbols.len()))
            })?;
        // The hook finds the new bodies and callbacks by these names.
        if name.starts_with("__klpgen_") {
            return Err(Error::Write(format!(
                "the patch's new global {name} takes a name klpgen reserves for the hook's symbols (__klpgen_*); rename it"
            )));
        }
    }
    for (i, s) in plan.symbols.iter().enumerate() {
        let kind = match s.kind {
            SymKind::Func => SymbolKind::Text,
            SymKind::Object => SymbolKind::Data,
            _ => SymbolKind::Unknown,
        };
        let flags = elf_flags(kind, globals.contains(&i), s.other);
        syms.push(obj.add_symbol(Symbol {
            name: s.name.as_bytes().to_vec(),
            value: s.value,
            size: s.size,
            kind,
            scope: if globals.contains(&i) {
                SymbolScope::Dynamic
            } else {
                SymbolScope::Compilation
            },
            weak: false,
            section: SymbolSection::Section(sec_of(s.section)?),
            flags,
        }));
    }
    for (i, f) in plan.funcs.iter().enumerate() {
        let s = plan.symbols.get(f.new_sym).ok_or_else(|| {
            Error::Internal(format!(
                "plan names symbol {} for {}",
                f.new_sym, f.old_name
            ))
        })?;
        obj.add_symbol(Symbol {
            name: new_func_alias(alias_base + i).into_bytes(),
            value: s.value,
            size: s.size,
            kind: SymbolKind::Text,
            scope: SymbolScope::Dynamic,
            weak: false,
            section: SymbolSection::Section(sec_of(s.section)?),
            flags: elf_flags(SymbolKind::Text, true, s.other),
        });
    }
    for c in &plan.callbacks {
        let s = plan.symbols.get(c.sym).ok_or_else(|| {
            Error::Internal(format!(
                "plan names symbol {} for the {} callback",
                c.sym,
                c.kind.member()
            ))
        })?;
        obj.add_symbol(Symbol {
            name: callback_alias(c.kind).into_bytes(),
            value: s.value,
            size: s.size,
            kind: SymbolKind::Text,
            scope: SymbolScope::Dynamic,
            weak: false,
            section: SymbolSection::Section(sec_of(s.section)?),
            flags: elf_flags(SymbolKind::Text, true, s.other),
        });
    }
    let mut ext_ids = Vec::with_capacity(bindings.len());
    for b in bindings {
        ext_ids.push(obj.add_symbol(Symbol {
            name: b.symbol_name().into_bytes(),
            value: 0,
            size: 0,
            kind: SymbolKind::Unknown,
            scope: SymbolScope::Dynamic,
            weak: false,
            section: SymbolSection::Undefined,
            flags: SymbolFlags::None,
        }));
    }

    for (si, s) in plan.sections.iter().enumerate() {
        for r in &s.relocs {
            let symbol = match r.target {
                PlanTarget::Symbol(i) => syms.get(i).copied(),
                PlanTarget::Section(i) => secs.get(i).map(|&id| obj.section_symbol(id)),
                PlanTarget::External(i) => ext_ids.get(i).copied(),
            }
            .ok_or_else(|| {
                Error::Internal(format!("relocation in {} names {:?}", s.name, r.target))
            })?;
            obj.add_relocation(
                secs[si],
                Relocation {
                    offset: r.offset,
                    symbol,
                    addend: r.addend,
                    flags: RelocationFlags::Elf { r_type: r.r_type },
                },
            )
            .map_err(|e| Error::Write(format!("relocation in {}: {e}", s.name)))?;
        }
    }
    obj.write().map_err(|e| Error::Write(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use elfdiff::plan::{PlanFunc, PlanSection, PlanSymbol};
    use object::{Object as _, ObjectSymbol as _};

    fn plan(names: &[&str]) -> Plan {
        Plan {
            sections: vec![PlanSection {
                name: ".text.f".into(),
                sh_type: elf::SHT_PROGBITS,
                sh_flags: u64::from(elf::SHF_ALLOC | elf::SHF_EXECINSTR),
                align: 16,
                entsize: 0,
                data: vec![0xc3; 2],
                size: 2,
                relocs: Vec::new(),
            }],
            symbols: names
                .iter()
                .enumerate()
                .map(|(i, n)| PlanSymbol {
                    name: n.to_string(),
                    section: 0,
                    value: i as u64,
                    size: 1,
                    kind: SymKind::Func,
                    other: 0,
                })
                .collect(),
            funcs: vec![PlanFunc {
                old_name: "f".into(),
                old_local: false,
                new_sym: 0,
            }],
            ..Plan::default()
        }
    }

    /// Copies are local but the shared new globals, which are global beside the hook's alias.
    #[test]
    fn shared_new_globals_are_global_symbols() {
        let bytes = write_patch_object_with(&plan(&["f", "new_fn"]), &[], 0, &[1]).unwrap();
        let f = object::File::parse(&*bytes).unwrap();
        let scope = |name: &str| {
            f.symbols()
                .find(|s| s.name() == Ok(name))
                .map(|s| s.is_global())
        };
        assert_eq!(scope("f"), Some(false));
        assert_eq!(scope("new_fn"), Some(true));
        assert_eq!(scope("__klpgen_func_0"), Some(true));
        let plain = write_patch_object(&plan(&["f", "new_fn"]), &[], 0).unwrap();
        let f = object::File::parse(&*plain).unwrap();
        assert!(f
            .symbols()
            .filter(|s| s.name() == Ok("new_fn"))
            .all(|s| !s.is_global()));
        // A new global may not take the hook's names.
        match write_patch_object_with(&plan(&["f", "__klpgen_func_0"]), &[], 0, &[1]) {
            Err(Error::Write(m)) => assert!(m.contains("reserves"), "{m}"),
            other => panic!("expected a write error, got {other:?}"),
        }
    }
}
