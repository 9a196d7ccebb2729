//! Malformed objects found by fuzzing (`cargo xtask fuzz`, target `elfdiff_pair`): each must
//! give an error or a sane result, never a panic. The objects are built here with the `object`
//! writer and then corrupted in exactly the field the fuzzer found.

use object::read::elf::{FileHeader, SectionHeader};
use object::{elf, Endianness, SectionKind};

use elfdiff::{Diff, Error, Object, Orig, Patched, PlanOptions};

use testsupport::objwrite::{self, function_f, reloc, undefined};

/// What `__mcount_loc` points at.
#[derive(Clone, Copy)]
enum McTarget {
    Func,
    Section,
}

/// A relocation in `__mcount_loc`: (offset, target, addend).
type McReloc = (u64, McTarget, i64);

struct Spec {
    ret: u8,
    /// Bytes of padding in front of `f` in its section.
    pad: usize,
    /// Whether `f` calls `__fentry__` (a relocation at +5).
    fentry: bool,
    /// Make that call's relocation section-relative, with this addend.
    call_section_addend: Option<i64>,
    /// The addend of that call's relocation against `__fentry__` (when not section-relative).
    fentry_addend: i64,
    /// `__mcount_loc`: (size, relocations).
    mcount: Option<(usize, Vec<McReloc>)>,
    /// Debug sections: (name, contents).
    debug: Vec<(&'static str, Vec<u8>)>,
}

impl Spec {
    fn new(ret: u8) -> Self {
        Spec {
            ret,
            pad: 0,
            fentry: true,
            call_section_addend: None,
            fentry_addend: -4,
            mcount: None,
            debug: Vec::new(),
        }
    }
}

/// A relocatable x86-64 object with one function `f` in `.text.f`.
fn build(spec: &Spec) -> Vec<u8> {
    let mut o = objwrite::object();
    o.add_file_symbol(b"t.c".to_vec());
    let (text, f) = function_f(&mut o, spec.ret, spec.pad, false);
    if spec.fentry {
        let fe = undefined(&mut o, "__fentry__");
        let (sym, addend) = match spec.call_section_addend {
            Some(a) => (o.section_symbol(text), a),
            None => (fe, spec.fentry_addend),
        };
        reloc(
            &mut o,
            text,
            spec.pad as u64 + 5,
            sym,
            addend,
            elf::R_X86_64_PLT32,
        );
    }
    if let Some((size, relocs)) = &spec.mcount {
        let mc = o.add_section(Vec::new(), b"__mcount_loc".to_vec(), SectionKind::Data);
        o.append_section_data(mc, &vec![0; *size], 8);
        for &(offset, target, addend) in relocs {
            let sym = match target {
                McTarget::Func => f,
                McTarget::Section => o.section_symbol(text),
            };
            reloc(&mut o, mc, offset, sym, addend, elf::R_X86_64_64);
        }
    }
    for (name, data) in &spec.debug {
        let d = o.add_section(Vec::new(), name.as_bytes().to_vec(), SectionKind::Debug);
        o.append_section_data(d, data, 1);
    }
    o.write().unwrap()
}

type Hdr = elf::FileHeader64<Endianness>;

/// File offset of the header of the named section.
fn shdr_offset(data: &[u8], name: &str) -> usize {
    let h = Hdr::parse(data).unwrap();
    let e = h.endian().unwrap();
    let table = h.sections(e, data).unwrap();
    let (idx, _) = table.section_by_name(e, name.as_bytes()).unwrap();
    h.e_shoff(e) as usize + idx.0 * usize::from(h.e_shentsize(e))
}

/// File offset of the named section's contents.
fn section_offset(data: &[u8], name: &str) -> usize {
    let h = Hdr::parse(data).unwrap();
    let e = h.endian().unwrap();
    let table = h.sections(e, data).unwrap();
    let (_, s) = table.section_by_name(e, name.as_bytes()).unwrap();
    s.sh_offset(e) as usize
}

/// File offset of the symbol table entry of the named symbol.
fn sym_offset(data: &[u8], name: &str) -> usize {
    let h = Hdr::parse(data).unwrap();
    let e = h.endian().unwrap();
    let table = h.sections(e, data).unwrap();
    let syms = table.symbols(e, data, elf::SHT_SYMTAB).unwrap();
    let idx = syms
        .iter()
        .position(|s| syms.symbol_name(e, s).unwrap() == name.as_bytes())
        .unwrap();
    section_offset(data, ".symtab") + idx * 24
}

fn put_u32(data: &mut [u8], at: usize, v: u32) {
    data[at..at + 4].copy_from_slice(&v.to_le_bytes());
}
fn put_u64(data: &mut [u8], at: usize, v: u64) {
    data[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

// Offsets of fields in Elf64_Shdr, Elf64_Sym and Elf64_Rela.
const SH_TYPE: usize = 4;
const SH_ADDRALIGN: usize = 48;
const ST_SIZE: usize = 16;
const R_OFFSET: usize = 0;

fn malformed(e: Error) -> String {
    match e {
        Error::Malformed { what, .. } => what,
        other => panic!("expected a malformed-object error, got {other:?}"),
    }
}

#[test]
fn well_formed_pair_diffs_and_plans() {
    let (ob, pb) = (build(&Spec::new(1)), build(&Spec::new(2)));
    let orig = Object::<Orig>::parse("orig.o", &ob).unwrap();
    let patched = Object::<Patched>::parse("patched.o", &pb).unwrap();
    let diff = Diff::new(&orig, &patched);
    assert_eq!(diff.report().changed, vec!["f"]);
    assert!(diff.report().refused.is_empty());
    assert_eq!(diff.plan(&PlanOptions::default()).unwrap().funcs.len(), 1);
}

/// A machine klpgen does not read is named (not only numbered), with the machines it reads.
#[test]
fn unread_machine_is_named() {
    let mut b = build(&Spec::new(1));
    // e_machine is the 16-bit field at offset 18 of the ELF header: RISC-V (243).
    b[18..20].copy_from_slice(&243u16.to_le_bytes());
    let e = Object::<Orig>::parse("o", &b).unwrap_err().to_string();
    assert!(
        e.starts_with(
            "o: RISC-V (e_machine 243) objects are not read by klpgen (it reads x86-64, "
        ),
        "{e}"
    );
    b[18..20].copy_from_slice(&0x7777u16.to_le_bytes());
    let e = Object::<Orig>::parse("o", &b).unwrap_err().to_string();
    assert!(
        e.starts_with("o: machine 30583 objects are not read"),
        "{e}"
    );
}

/// The writer asserted on it (`object` requires power-of-two alignment).
#[test]
fn section_alignment_must_be_a_power_of_two() {
    let mut b = build(&Spec::new(1));
    let at = shdr_offset(&b, ".text.f") + SH_ADDRALIGN;
    put_u64(&mut b, at, 24);
    let e = Object::<Orig>::parse("o", &b).unwrap_err();
    assert!(malformed(e).contains("alignment 24 is not a power of two"));
}

/// `value + size` overflowed when the function's extent was computed.
#[test]
fn symbol_outside_its_section_is_refused() {
    let mut b = build(&Spec::new(1));
    let at = sym_offset(&b, "f") + ST_SIZE;
    put_u64(&mut b, at, u64::MAX);
    let e = Object::<Patched>::parse("o", &b).unwrap_err();
    assert!(malformed(e).contains("symbol f"));
}

/// `offset + width` overflowed in the bounds check itself.
#[test]
fn relocation_offset_near_the_end_of_the_address_space() {
    let mut b = build(&Spec::new(1));
    let at = section_offset(&b, ".rela.text.f") + R_OFFSET;
    put_u64(&mut b, at, u64::MAX - 1);
    let e = Object::<Orig>::parse("o", &b).unwrap_err();
    assert!(malformed(e).contains("lies outside section .text.f"));
}

/// `addend + bias` (where a PC-relative reference points) overflowed, in the diff and (found by
/// `explain_pair`) in the label `klpgen explain` prints for the relocation.
#[test]
fn huge_pc_relative_addend_is_compared_not_added() {
    let spec = |addend| Spec {
        call_section_addend: Some(addend),
        ..Spec::new(1)
    };
    let named = |addend| Spec {
        fentry_addend: addend,
        ..Spec::new(1)
    };
    for extreme in [i64::MAX, i64::MIN] {
        for (ob, pb) in [
            (build(&spec(extreme)), build(&spec(-4))),
            (build(&named(extreme)), build(&named(-4))),
        ] {
            let orig = Object::<Orig>::parse("orig.o", &ob).unwrap();
            let patched = Object::<Patched>::parse("patched.o", &pb).unwrap();
            let diff = Diff::new(&orig, &patched);
            assert_eq!(diff.report().changed, vec!["f"]);
            let ex = elfdiff::explain::explain(&diff);
            assert_eq!(ex.functions.len(), 1);
        }
    }
}

/// `__mcount_loc` entry `symbol value + addend` overflowed while looking for an ftrace entry.
#[test]
fn mcount_entry_with_extreme_addend_is_not_an_ftrace_entry() {
    let spec = |ret| Spec {
        pad: 16,
        fentry: false,
        mcount: Some((8, vec![(0, McTarget::Func, i64::MAX)])),
        ..Spec::new(ret)
    };
    let (ob, pb) = (build(&spec(1)), build(&spec(2)));
    let orig = Object::<Orig>::parse("orig.o", &ob).unwrap();
    let patched = Object::<Patched>::parse("patched.o", &pb).unwrap();
    let keys: Vec<String> = Diff::new(&orig, &patched)
        .report()
        .refused
        .into_iter()
        .map(|r| r.key)
        .collect();
    assert_eq!(keys, vec!["refuse.no-ftrace.f"]);
}

/// A relocation crossing two `__mcount_loc` entries was cut in half: the livepatch object
/// held a relocation past the end of its section.
#[test]
fn special_section_relocation_straddling_entries() {
    let spec = |ret| Spec {
        mcount: Some((16, vec![(4, McTarget::Section, 0)])),
        ..Spec::new(ret)
    };
    let (ob, pb) = (build(&spec(1)), build(&spec(2)));
    let orig = Object::<Orig>::parse("orig.o", &ob).unwrap();
    let patched = Object::<Patched>::parse("patched.o", &pb).unwrap();
    let diff = Diff::new(&orig, &patched);
    let e = diff.plan(&PlanOptions::default()).unwrap_err();
    assert!(malformed(e).contains("straddles two 8-byte entries"));
}

/// A special section without contents (SHT_NOBITS) was sliced as if it had them.
#[test]
fn special_section_without_contents() {
    let spec = |ret| Spec {
        mcount: Some((8, vec![(0, McTarget::Section, 0)])),
        ..Spec::new(ret)
    };
    let (ob, mut pb) = (build(&spec(1)), build(&spec(2)));
    let at = shdr_offset(&pb, "__mcount_loc") + SH_TYPE;
    put_u32(&mut pb, at, elf::SHT_NOBITS);
    let orig = Object::<Orig>::parse("orig.o", &ob).unwrap();
    let patched = Object::<Patched>::parse("patched.o", &pb).unwrap();
    let diff = Diff::new(&orig, &patched);
    let e = diff.plan(&PlanOptions::default()).unwrap_err();
    assert!(malformed(e).contains("no contents"));
}

/// DWARF 4 with one compile unit holding one `DW_TAG_inlined_subroutine` whose
/// `DW_AT_low_pc` is `low` and whose `DW_AT_high_pc` is the size `size` (DW_FORM_data8);
/// `.debug_line` is empty (the unit has no line program).
fn dwarf_inlined(low: u64, size: u64) -> Vec<(&'static str, Vec<u8>)> {
    let abbrev = vec![
        1, 0x11, 1, 0, 0, // 1: compile unit, children, no attributes
        2, 0x1d, 0, // 2: inlined subroutine, no children
        0x11, 0x01, // DW_AT_low_pc, DW_FORM_addr
        0x12, 0x07, // DW_AT_high_pc, DW_FORM_data8
        0, 0, 0,
    ];
    let mut body = vec![4, 0, 0, 0, 0, 0, 8]; // version 4, abbrev offset 0, address size 8
    body.push(1);
    body.push(2);
    body.extend_from_slice(&low.to_le_bytes());
    body.extend_from_slice(&size.to_le_bytes());
    body.push(0);
    let mut info = (body.len() as u32).to_le_bytes().to_vec();
    info.extend_from_slice(&body);
    vec![
        (".debug_abbrev", abbrev),
        (".debug_info", info),
        (".debug_line", Vec::new()),
    ]
}

/// Found by `explain_pair`: gimli computed the end of `low_pc + high_pc` (as a size) unchecked
/// and overflowed; such a range is now dropped.
#[test]
fn inlined_range_past_the_end_of_the_address_space() {
    use elfdiff::explain::{explain, DwarfIndex};
    let spec = |ret, low, size| Spec {
        debug: dwarf_inlined(low, size),
        ..Spec::new(ret)
    };
    // A sane range is read...
    let b = build(&spec(1, 0x10, 0x20));
    let o = Object::<Orig>::parse("o", &b).unwrap();
    let idx = DwarfIndex::build(&o).unwrap().expect("has DWARF");
    let sec = o.find_section(".text.f").unwrap();
    let _ = idx.inlined_at(o.sec(sec).elf_index, 0x18);
    // ...an overflowing one is not, and explaining a change does not panic.
    let (ob, pb) = (
        build(&spec(1, u64::MAX - 0xf, 0x100)),
        build(&spec(2, u64::MAX - 0xf, 0x100)),
    );
    let orig = Object::<Orig>::parse("orig.o", &ob).unwrap();
    let patched = Object::<Patched>::parse("patched.o", &pb).unwrap();
    assert!(DwarfIndex::build(&orig).unwrap().is_some());
    let ex = explain(&Diff::new(&orig, &patched));
    assert_eq!(ex.functions.len(), 1);
    assert!(ex.functions[0].inlined_callees.is_empty());
}
