//! Entry sizes of special sections (`elfdiff::entries::stride`) on hand-made objects: where
//! the size comes from (the target's DWARF, `sh_entsize`, `--entry-size`, the machine's
//! default, the one matching layout), the short last entry `.parainstructions` may have, and
//! the errors that stand for a silent wrong stride (an unknown layout, a section that is no
//! whole number of entries, sizes that contradict each other).

use std::collections::HashMap;

use object::{elf, SectionKind};

use elfdiff::entries::{stride, SizeSource, StrideError};
use elfdiff::{Object, Orig, PlanOptions};

use testsupport::objwrite::{self, reloc, undefined};

/// A field of the hand-made section: offset, relocation type, and whether it points at the
/// start of a named (undefined) symbol, as a handler field does, instead of into code.
type Field = (u64, u32, bool);

/// An object with `.text` (64 bytes) and special section `name` of `len` bytes holding the
/// relocations `fields`; `entsize` is its `sh_entsize`.
fn build(name: &str, len: usize, fields: &[Field], entsize: u64) -> Vec<u8> {
    let mut o = objwrite::object();
    let text = o.add_section(Vec::new(), b".text".to_vec(), SectionKind::Text);
    o.append_section_data(text, &[0x90; 64], 16);
    let sec = o.add_section(
        Vec::new(),
        name.as_bytes().to_vec(),
        SectionKind::ReadOnlyData,
    );
    o.append_section_data(sec, &vec![0; len], 4);
    o.section_mut(sec).flags = object::SectionFlags::Elf {
        sh_flags: u64::from(elf::SHF_ALLOC),
    };
    let text_sym = o.section_symbol(text);
    let handler = undefined(&mut o, "ex_handler_default");
    for (k, &(at, r_type, to_symbol)) in fields.iter().enumerate() {
        let (sym, addend) = if to_symbol {
            (handler, 0)
        } else {
            (text_sym, 1 + k as i64)
        };
        reloc(&mut o, sec, at, sym, addend, r_type);
    }
    let mut bytes = o.write().unwrap();
    if entsize > 0 {
        set_entsize(&mut bytes, name, entsize);
    }
    bytes
}

/// Set `sh_entsize` of section `name` in an ELF64 little-endian object.
fn set_entsize(elf_bytes: &mut [u8], name: &str, entsize: u64) {
    let u64_at = |b: &[u8], at: usize| u64::from_le_bytes(b[at..at + 8].try_into().unwrap());
    let u16_at = |b: &[u8], at: usize| u16::from_le_bytes([b[at], b[at + 1]]) as usize;
    let shoff = u64_at(elf_bytes, 0x28) as usize;
    let (shentsize, shnum, shstrndx) = (
        u16_at(elf_bytes, 0x3a),
        u16_at(elf_bytes, 0x3c),
        u16_at(elf_bytes, 0x3e),
    );
    let strtab = u64_at(elf_bytes, shoff + shstrndx * shentsize + 0x18) as usize;
    for i in 0..shnum {
        let hdr = shoff + i * shentsize;
        let at = strtab + u32::from_le_bytes(elf_bytes[hdr..hdr + 4].try_into().unwrap()) as usize;
        if elf_bytes[at..].starts_with(name.as_bytes()) && elf_bytes[at + name.len()] == 0 {
            elf_bytes[hdr + 0x38..hdr + 0x40].copy_from_slice(&entsize.to_le_bytes());
            return;
        }
    }
    panic!("no section {name}");
}

fn stride_of(
    bytes: &[u8],
    name: &str,
    opts: &PlanOptions,
) -> Result<elfdiff::entries::Stride, StrideError> {
    let obj: Object<'_, Orig> = Object::parse("t.o", bytes).unwrap();
    stride(&obj, obj.find_section(name).unwrap(), opts)
}

const PC32: u32 = elf::R_X86_64_PC32;
const ABS64: u32 = elf::R_X86_64_64;

/// `n` entries of `size` bytes, each with the fields `each` (offset in the entry, type,
/// to a symbol's start).
fn entries(n: u64, size: u64, each: &[Field]) -> Vec<Field> {
    (0..n)
        .flat_map(|k| each.iter().map(move |&(at, t, s)| (k * size + at, t, s)))
        .collect()
}

#[test]
fn ex_table_layouts_are_told_apart() {
    // 4.6 to 5.15: {insn, fixup, handler}; two entries also divide into 8-byte pairs, but the
    // handler field sits where an 8-byte entry's insn would.
    let f = entries(
        2,
        12,
        &[(0, PC32, false), (4, PC32, false), (8, PC32, true)],
    );
    let st = stride_of(
        &build("__ex_table", 24, &f, 0),
        "__ex_table",
        &Default::default(),
    );
    assert_eq!(st.unwrap().size, 12);
    // 3.5 to 4.5: {insn, fixup}; three entries (24 bytes) could be two of 12 only if every
    // third field pointed at a handler.
    let f = entries(3, 8, &[(0, PC32, false), (4, PC32, false)]);
    let st = stride_of(
        &build("__ex_table", 24, &f, 0),
        "__ex_table",
        &Default::default(),
    );
    assert_eq!(st.as_ref().unwrap().size, 8);
    assert!(matches!(st.unwrap().source, SizeSource::Layout(k) if k.contains("3.5")));
    // 3.4 and older: absolute pairs.
    let f = entries(2, 16, &[(0, ABS64, false), (8, ABS64, false)]);
    let st = stride_of(
        &build("__ex_table", 32, &f, 0),
        "__ex_table",
        &Default::default(),
    );
    assert_eq!(st.unwrap().size, 16);
    // No layout: one relocation every 10 bytes.
    let f = entries(2, 10, &[(0, PC32, false)]);
    let st = stride_of(
        &build("__ex_table", 20, &f, 0),
        "__ex_table",
        &Default::default(),
    );
    assert_eq!(st, Err(StrideError::Unknown { len: 20 }));
}

#[test]
fn parainstructions_may_end_in_a_short_entry() {
    // Two sites: 16 + 12 bytes, the last entry aligned before it and not padded after.
    let f = entries(2, 16, &[(0, ABS64, false)]);
    let bytes = build(".parainstructions", 28, &f, 0);
    let st = stride_of(&bytes, ".parainstructions", &Default::default()).unwrap();
    assert_eq!((st.size, st.source), (16, SizeSource::Fixed));
    assert_eq!(st.entries(28).collect::<Vec<_>>(), [(0, 16), (16, 28)]);
    assert_eq!(st.entry_at(20, 28), Some((16, 28)));
    // The same size from the target's DWARF keeps the rule.
    let dwarf = PlanOptions {
        entry_sizes: HashMap::from([(".parainstructions".to_string(), 16)]),
        ..Default::default()
    };
    assert_eq!(
        stride_of(&bytes, ".parainstructions", &dwarf).unwrap().size,
        16
    );
    // A last entry too short for its pointer is no entry.
    let bytes = build(".parainstructions", 20, &f[..1], 0);
    assert!(matches!(
        stride_of(&bytes, ".parainstructions", &Default::default()),
        Err(StrideError::NotWhole {
            len: 20,
            size: 16,
            ..
        })
    ));
}

#[test]
fn a_stride_that_does_not_fit_is_an_error() {
    // Only `.parainstructions` may end short: a 12-byte __ex_table cut by a DWARF size of 16.
    let f = entries(1, 12, &[(0, PC32, false), (4, PC32, false)]);
    let bytes = build("__ex_table", 12, &f, 0);
    let dwarf = PlanOptions {
        entry_sizes: HashMap::from([("__ex_table".to_string(), 16)]),
        ..Default::default()
    };
    let e = stride_of(&bytes, "__ex_table", &dwarf).unwrap_err();
    assert_eq!(
        e.to_string(),
        "it is 12 bytes, not a whole number of 16-byte entries (the entry size from the target's DWARF)"
    );
}

#[test]
fn sizes_come_from_the_target_then_the_command_line() {
    let f = entries(2, 8, &[(0, PC32, false)]);
    let given = |n| PlanOptions {
        given_entry_sizes: HashMap::from([("__vendor".to_string(), n)]),
        ..Default::default()
    };
    // A section klpgen does not know: only a given size (or sh_entsize) makes it special.
    let bytes = build("__vendor", 16, &f, 0);
    assert_eq!(
        stride_of(&bytes, "__vendor", &Default::default()),
        Err(StrideError::Unknown { len: 16 })
    );
    let st = stride_of(&bytes, "__vendor", &given(8)).unwrap();
    assert_eq!((st.size, st.source), (8, SizeSource::Given));
    // The object's own sh_entsize wins, and a given size that contradicts it is an error.
    let bytes = build("__vendor", 16, &f, 8);
    let st = stride_of(&bytes, "__vendor", &Default::default()).unwrap();
    assert_eq!((st.size, st.source), (8, SizeSource::SectionHeader));
    assert_eq!(stride_of(&bytes, "__vendor", &given(8)).unwrap().size, 8);
    assert_eq!(
        stride_of(&bytes, "__vendor", &given(4)),
        Err(StrideError::Conflict {
            known: 8,
            from: SizeSource::SectionHeader,
            given: 4
        })
    );
    // The target's DWARF wins over the machine's default; --entry-size must agree with it.
    let f = entries(1, 14, &[(0, PC32, false), (4, PC32, false)]);
    let bytes = build(".altinstructions", 14, &f, 0);
    let both = PlanOptions {
        entry_sizes: HashMap::from([(".altinstructions".to_string(), 14)]),
        given_entry_sizes: HashMap::from([(".altinstructions".to_string(), 12)]),
        ..Default::default()
    };
    assert!(matches!(
        stride_of(&bytes, ".altinstructions", &both),
        Err(StrideError::Conflict {
            known: 14,
            from: SizeSource::Target,
            given: 12
        })
    ));
}

#[test]
fn a_given_size_the_entries_contradict_is_an_error() {
    // Two 5.10 `__ex_table` entries (24 bytes) also divide into 8-byte ones; cut by
    // `--entry-size __ex_table=8` every entry would be carved wrongly.
    let f = entries(
        2,
        12,
        &[(0, PC32, false), (4, PC32, false), (8, PC32, true)],
    );
    let bytes = build("__ex_table", 24, &f, 0);
    let given = |n| PlanOptions {
        given_entry_sizes: HashMap::from([("__ex_table".to_string(), n)]),
        ..Default::default()
    };
    let e = stride_of(&bytes, "__ex_table", &given(8)).unwrap_err();
    assert!(matches!(
        e,
        StrideError::Conflict {
            known: 12,
            from: SizeSource::Layout(_),
            given: 8
        }
    ));
    assert!(
        e.to_string().contains("12 bytes (the layout of")
            && e.to_string().contains("not the 8 --entry-size gives"),
        "{e}"
    );
    // The size the entries match, given, is taken as given.
    let st = stride_of(&bytes, "__ex_table", &given(12)).unwrap();
    assert_eq!((st.size, st.source), (12, SizeSource::Given));
    // Entries no known layout fits: the given size is the only word on them.
    let f = entries(2, 10, &[(0, PC32, false)]);
    let bytes = build("__ex_table", 20, &f, 0);
    let st = stride_of(&bytes, "__ex_table", &given(10)).unwrap();
    assert_eq!((st.size, st.source), (10, SizeSource::Given));
}

/// Every special section of real objects (`ENTRIES_OBJS`: a file listing their paths, one a
/// line: a distribution's modules) gets an entry size without the target's DWARF:
/// `ENTRIES_OBJS=list cargo test -p elfdiff --test entries real -- --ignored --nocapture`.
#[test]
#[ignore]
fn real_objects_have_known_strides() {
    let list = std::env::var("ENTRIES_OBJS").expect("ENTRIES_OBJS");
    let paths = std::fs::read_to_string(list).expect("a list of paths");
    let mut seen: std::collections::BTreeMap<String, (usize, Vec<String>)> = Default::default();
    let mut failures = Vec::new();
    for path in paths.lines().filter(|p| !p.is_empty()) {
        let bytes = std::fs::read(path).expect("readable");
        let Ok(obj) = Object::<Orig>::parse(path, &bytes) else {
            continue;
        };
        for s in obj.arch.special_sections() {
            let Some(sec) = obj.find_section(s.name) else {
                continue;
            };
            let entry = seen.entry(s.name.to_string()).or_default();
            match stride(&obj, sec, &PlanOptions::default()) {
                Ok(st) => {
                    entry.0 += 1;
                    let how = format!("{} ({:?})", st.size, st.source);
                    if !entry.1.contains(&how) {
                        entry.1.push(how);
                    }
                }
                Err(e) => failures.push(format!("{path}: {}: {e}", s.name)),
            }
        }
    }
    for (name, (n, how)) in &seen {
        eprintln!("{name}: {n} objects: {how:?}");
    }
    assert!(failures.is_empty(), "{failures:#?}");
}
