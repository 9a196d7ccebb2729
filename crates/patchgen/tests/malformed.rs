//! Malformed inputs found by fuzzing (`cargo xtask fuzz`, targets `ko_finalize` and
//! `elfdiff_pair`): each must give an error, never a panic or a huge allocation.

use object::read::elf::{FileHeader, SectionHeader};
use object::{elf, Endianness, SectionKind};

use testsupport::objwrite;

use elfdiff::model::SymKind;
use elfdiff::plan::{PlanFunc, PlanSection, PlanSymbol};
use elfdiff::Plan;
use patchgen::klp::finalize_module;
use patchgen::writer::write_patch_object;
use patchgen::Error;

/// A linked-module stand-in: `.text` calling a `.klp.sym.*` reference.
fn module() -> Vec<u8> {
    let mut o = objwrite::object();
    let text = o.add_section(Vec::new(), b".text".to_vec(), SectionKind::Text);
    o.append_section_data(text, &[0xe8, 0, 0, 0, 0, 0xc3], 16);
    let klp = objwrite::undefined(&mut o, ".klp.sym.vmlinux.foo,0");
    objwrite::reloc(&mut o, text, 1, klp, -4, elf::R_X86_64_PC32);
    o.write().unwrap()
}

/// Overwrites `sh_addralign` of the named section.
fn set_alignment(data: &mut [u8], name: &str, align: u64) {
    let h = elf::FileHeader64::<Endianness>::parse(&*data).unwrap();
    let e = h.endian().unwrap();
    let table = h.sections(e, &*data).unwrap();
    let (idx, s) = table.section_by_name(e, name.as_bytes()).unwrap();
    assert_eq!(s.sh_addralign(e), 16);
    let at = h.e_shoff(e) as usize + idx.0 * usize::from(h.e_shentsize(e)) + 48;
    data[at..at + 8].copy_from_slice(&align.to_le_bytes());
}

fn module_error(e: Error) -> String {
    match e {
        Error::Module { what, .. } => what,
        other => panic!("expected a module error, got {other:?}"),
    }
}

#[test]
fn well_formed_module_is_finalized() {
    let (out, summary) = finalize_module("m.ko", &module()).unwrap();
    assert_eq!(summary.symbols, vec![".klp.sym.vmlinux.foo,0"]);
    assert_eq!(
        summary.sections,
        vec![(".klp.rela.vmlinux.text".to_string(), 1)]
    );
    assert!(patchgen::check::check_structure("m.ko", &out)
        .unwrap()
        .iter()
        .all(|f| !f.key.starts_with("check.klp")));
}

/// The ELF writer laid out file offsets by a corrupt alignment: a 1 TiB (with ASan: 4 GiB)
/// output buffer.
#[test]
fn huge_section_alignment_is_refused_before_writing() {
    let mut m = module();
    set_alignment(&mut m, ".text", 1 << 40);
    let e = module_error(finalize_module("m.ko", &m).unwrap_err());
    assert!(e.contains("alignments add up to"), "{e}");
}

#[test]
fn odd_section_alignment_is_refused() {
    let mut m = module();
    set_alignment(&mut m, ".text", 24);
    let e = module_error(finalize_module("m.ko", &m).unwrap_err());
    assert!(e.contains("alignment 24 is not a power of two"), "{e}");
}

fn plan(align: u64) -> Plan {
    Plan {
        sections: vec![PlanSection {
            name: ".text.f".into(),
            sh_type: elf::SHT_PROGBITS,
            sh_flags: u64::from(elf::SHF_ALLOC | elf::SHF_EXECINSTR),
            align,
            entsize: 0,
            data: vec![0xc3],
            size: 1,
            relocs: Vec::new(),
        }],
        symbols: vec![PlanSymbol {
            name: "f".into(),
            section: 0,
            value: 0,
            size: 1,
            kind: SymKind::Func,
            other: 0,
        }],
        funcs: vec![PlanFunc {
            old_name: "f".into(),
            old_local: false,
            new_sym: 0,
        }],
        ..Plan::default()
    }
}

/// `object`'s writer asserts that alignments are powers of two.
#[test]
fn writer_refuses_odd_alignment() {
    assert!(write_patch_object(&plan(16), &[], 0).is_ok());
    match write_patch_object(&plan(24), &[], 0) {
        Err(Error::Write(m)) => assert!(m.contains("not a power of two"), "{m}"),
        other => panic!("expected a write error, got {other:?}"),
    }
}

/// A 64 GiB alignment taken over from a corrupt object: the ELF writer reserved a buffer
/// that large and the allocation failure aborted the process.
#[test]
fn writer_refuses_huge_alignment() {
    match write_patch_object(&plan(1 << 36), &[], 0) {
        Err(Error::Write(m)) => assert!(m.contains("alignments add up to"), "{m}"),
        other => panic!("expected a write error, got {other:?}"),
    }
}

/// Indices in a plan that point nowhere are an error, not an index panic.
#[test]
fn writer_refuses_dangling_plan_indices() {
    let mut p = plan(16);
    p.funcs[0].new_sym = 7;
    assert!(matches!(
        write_patch_object(&p, &[], 0),
        Err(Error::Internal(_))
    ));
    let mut p = plan(16);
    p.symbols[0].section = 3;
    assert!(matches!(
        write_patch_object(&p, &[], 0),
        Err(Error::Internal(_))
    ));
}
