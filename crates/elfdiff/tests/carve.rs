//! Sections copied piece by piece (`.altinstr_aux`, `__dyndbg`, ...) on malformed input: a
//! reference outside the section, into no descriptor, overlapping descriptors, or a relocation
//! field cut in two by a reference must be a typed error (`Error::Carve`), never a panic or a
//! silently wrong copy. The objects are built with the `object` writer.

use object::{elf, SectionKind, SymbolKind, SymbolScope};

use elfdiff::carve::CarveError;
use elfdiff::{Diff, Error, Object, Orig, Patched, Plan, PlanOptions};

use testsupport::objwrite::{self, reloc, symbol, undefined};

/// What `f`'s one reference into the carved section is.
#[derive(Clone, Copy)]
enum Ref {
    /// `jmp .altinstr_aux + addend` (R_X86_64_PC32 in code: the target is addend + 4).
    Jump(i64),
    /// `mov $(__dyndbg + addend), %edi` (R_X86_64_32S).
    Data(i64),
}

struct Spec {
    reference: Ref,
    /// The carved section's name, size, and symbols (name, value, size).
    section: (&'static str, usize, Vec<(&'static str, u64, u64)>),
    /// A PC32 relocation inside the carved section at this offset (to `g`).
    inner_reloc: Option<u64>,
    /// A reference from `.data.x` (allocated) into the carved section at this addend.
    data_ref: Option<i64>,
}

fn build(spec: &Spec, ret: u8) -> Vec<u8> {
    let mut o = objwrite::object();
    o.add_file_symbol(b"t.c".to_vec());
    let text = o.add_section(Vec::new(), b".text.f".to_vec(), SectionKind::Text);
    let (opcode, r_type, addend) = match spec.reference {
        Ref::Jump(a) => (0xe9, elf::R_X86_64_PC32, a),
        Ref::Data(a) => (0xbf, elf::R_X86_64_32S, a),
    };
    // endbr64; call __fentry__; jmp/mov <field>; mov $ret, %eax; ret
    let code = [
        0xf3, 0x0f, 0x1e, 0xfa, 0xe8, 0, 0, 0, 0, opcode, 0, 0, 0, 0, 0xb8, ret, 0, 0, 0, 0xc3,
    ];
    o.append_section_data(text, &code, 16);
    let len = code.len() as u64;
    symbol(
        &mut o,
        "f",
        SymbolKind::Text,
        SymbolScope::Linkage,
        text,
        0,
        len,
    );
    let fentry = undefined(&mut o, "__fentry__");
    let g = undefined(&mut o, "g");
    let (name, size, syms) = &spec.section;
    let kind = if name.starts_with(".altinstr") {
        SectionKind::Text
    } else {
        SectionKind::Data
    };
    let carved = o.add_section(Vec::new(), name.as_bytes().to_vec(), kind);
    o.append_section_data(carved, &vec![0x90; *size], 8);
    for &(n, value, size) in syms {
        let scope = SymbolScope::Compilation;
        symbol(&mut o, n, SymbolKind::Data, scope, carved, value, size);
    }
    let carved_sym = o.section_symbol(carved);
    reloc(&mut o, text, 5, fentry, -4, elf::R_X86_64_PLT32);
    reloc(&mut o, text, 10, carved_sym, addend, r_type);
    if let Some(at) = spec.inner_reloc {
        reloc(&mut o, carved, at, g, -4, elf::R_X86_64_PC32);
    }
    if let Some(a) = spec.data_ref {
        let data = o.add_section(Vec::new(), b".data.x".to_vec(), SectionKind::Data);
        o.append_section_data(data, &[0; 8], 8);
        reloc(&mut o, data, 0, carved_sym, a, elf::R_X86_64_64);
    }
    o.write().unwrap()
}

fn plan(spec: &Spec) -> Result<Plan, Error> {
    let (ob, pb) = (build(spec, 1), build(spec, 2));
    let orig: Object<'_, Orig> = Object::parse("orig.o", &ob).unwrap();
    let patched: Object<'_, Patched> = Object::parse("patched.o", &pb).unwrap();
    let diff = Diff::new(&orig, &patched);
    assert_eq!(diff.report().changed, ["f"]);
    diff.plan(&PlanOptions::default())
}

fn carve_error(r: Result<Plan, Error>) -> CarveError {
    match r {
        Err(Error::Carve { source, .. }) => source,
        Err(e) => panic!("expected a carve error, got {e}"),
        Ok(_) => panic!("expected a carve error, got a plan"),
    }
}

fn aux(reference: Ref) -> Spec {
    Spec {
        reference,
        section: (".altinstr_aux", 16, Vec::new()),
        inner_reloc: None,
        data_ref: None,
    }
}

fn section_size(p: &Plan, name: &str) -> Option<u64> {
    p.sections.iter().find(|s| s.name == name).map(|s| s.size)
}

#[test]
fn jump_into_the_section_carries_its_piece() {
    // jmp to offset 8 (addend 4): the piece [8, 16).
    let mut spec = aux(Ref::Jump(4));
    spec.data_ref = Some(4);
    let p = plan(&spec).unwrap();
    assert_eq!(section_size(&p, ".altinstr_aux"), Some(8));
    let jmp = p
        .sections
        .iter()
        .flat_map(|s| &s.relocs)
        .find(|r| r.offset == 10 && r.r_type == elf::R_X86_64_PC32)
        .unwrap();
    // Now at offset 0: the addend is 0 - 4.
    assert_eq!(jmp.addend, -4);
}

#[test]
fn reference_outside_the_section_is_an_error() {
    assert!(matches!(
        carve_error(plan(&aux(Ref::Jump(0x100)))),
        CarveError::Outside { offset: 0x104, .. }
    ));
    assert!(matches!(
        carve_error(plan(&aux(Ref::Jump(-8)))),
        CarveError::Outside { offset: -4, .. }
    ));
}

#[test]
fn reference_to_the_very_end_carries_nothing() {
    let p = plan(&aux(Ref::Jump(12))).unwrap();
    assert_eq!(section_size(&p, ".altinstr_aux"), Some(0));
}

#[test]
fn relocation_field_cut_by_a_reference_is_an_error() {
    // A field at [2, 6) and something (allocated) referring to offset 4.
    let mut spec = aux(Ref::Jump(-4));
    spec.inner_reloc = Some(2);
    spec.data_ref = Some(4);
    assert!(matches!(
        carve_error(plan(&spec)),
        CarveError::Straddle { offset: 2, .. }
    ));
}

fn dyndbg(addend: i64, syms: Vec<(&'static str, u64, u64)>) -> Spec {
    Spec {
        reference: Ref::Data(addend),
        section: ("__dyndbg", 0x30, syms),
        inner_reloc: None,
        data_ref: None,
    }
}

#[test]
fn descriptor_reference_carries_that_descriptor() {
    let p = plan(&dyndbg(0x24, vec![("d0", 0, 0x10), ("d1", 0x20, 0x10)])).unwrap();
    assert_eq!(section_size(&p, "__dyndbg"), Some(0x10));
    let d1 = p.symbols.iter().find(|s| s.name == "d1").unwrap();
    assert_eq!(d1.value, 0);
    assert!(!p.symbols.iter().any(|s| s.name == "d0"));
}

#[test]
fn reference_between_descriptors_is_an_error() {
    assert!(matches!(
        carve_error(plan(&dyndbg(
            0x18,
            vec![("d0", 0, 0x10), ("d1", 0x20, 0x10)]
        ))),
        CarveError::Uncovered { offset: 0x18 }
    ));
}

#[test]
fn overlapping_descriptors_are_an_error() {
    assert!(matches!(
        carve_error(plan(&dyndbg(
            0x4,
            vec![("d0", 0, 0x18), ("d1", 0x10, 0x10)]
        ))),
        CarveError::Overlap { .. }
    ));
}
