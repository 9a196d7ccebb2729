//! Hand-made `.klpgen.*` records that `<klpgen/klpgen.h>` never writes, and `.kpatch.*` records
//! that kpatch's `kpatch-macros.h` never writes: each must be refused with a
//! `refuse.annotation.*` key (naming the section), never panic, never be taken as a callback or
//! an ignore. Well-formed kpatch records are read as klpgen's. The objects are built with the
//! `object` writer.

use object::{elf, SectionKind, SymbolKind, SymbolScope};

use elfdiff::{Diff, Object, Orig, Patched};

use testsupport::objwrite::{self, function_f, reloc, symbol, undefined};

/// What the one annotation section of the test object holds.
enum Record {
    /// A pointer-sized slot per entry; each relocation: (offset, target, addend).
    Callbacks {
        kind: &'static str,
        size: usize,
        relocs: Vec<SlotReloc>,
    },
    /// `size` bytes in any section, with relocations (kpatch's pointer records).
    Raw {
        section: &'static str,
        size: usize,
        relocs: Vec<SlotReloc>,
    },
    /// Raw bytes in a name-list section, optionally with a relocation.
    Names {
        section: &'static str,
        bytes: Vec<u8>,
        reloc: bool,
    },
}

/// A relocation in a callback section: (offset, target, addend).
type SlotReloc = (u64, Target, i64);

#[derive(Clone, Copy)]
enum Target {
    Func,
    TextSection,
    Undefined,
    Data,
    /// `.rodata.str1.1`, which holds ".text.f\0" at 0 and "\x01\0" at 8.
    Strings,
}

/// An object with function `f` (returning `ret`) in `.text.f`, a variable `v`, and `record`.
fn build(ret: u8, record: Option<&Record>) -> Vec<u8> {
    let mut o = objwrite::object();
    o.add_file_symbol(b"t.c".to_vec());
    let (text, f) = function_f(&mut o, ret, 0, true);
    let data = o.add_section(Vec::new(), b".data.v".to_vec(), SectionKind::Data);
    o.append_section_data(data, &[0; 8], 8);
    let v = symbol(
        &mut o,
        "v",
        SymbolKind::Data,
        SymbolScope::Linkage,
        data,
        0,
        8,
    );
    let ext = undefined(&mut o, "elsewhere");
    let strings = o.add_section(
        Vec::new(),
        b".rodata.str1.1".to_vec(),
        SectionKind::ReadOnlyString,
    );
    o.append_section_data(strings, b".text.f\0\x01\0", 1);
    let slots =
        |o: &mut object::write::Object<'_>, name: String, size: usize, relocs: &[SlotReloc]| {
            let s = o.add_section(Vec::new(), name.into_bytes(), SectionKind::ReadOnlyData);
            o.append_section_data(s, &vec![0; size], 8);
            for &(offset, target, addend) in relocs {
                let symbol = match target {
                    Target::Func => f,
                    Target::TextSection => o.section_symbol(text),
                    Target::Undefined => ext,
                    Target::Data => v,
                    Target::Strings => o.section_symbol(strings),
                };
                reloc(o, s, offset, symbol, addend, elf::R_X86_64_64);
            }
        };
    match record {
        None => {}
        Some(Record::Callbacks { kind, size, relocs }) => {
            slots(&mut o, format!(".klpgen.callbacks.{kind}"), *size, relocs);
        }
        Some(Record::Raw {
            section,
            size,
            relocs,
        }) => slots(&mut o, section.to_string(), *size, relocs),
        Some(Record::Names {
            section,
            bytes,
            reloc: with_reloc,
        }) => {
            let s = o.add_section(
                Vec::new(),
                section.as_bytes().to_vec(),
                SectionKind::ReadOnlyData,
            );
            o.append_section_data(s, bytes, 1);
            if *with_reloc {
                reloc(&mut o, s, 0, f, 0, elf::R_X86_64_64);
            }
        }
    }
    o.write().unwrap()
}

/// (refusal keys, callbacks found, ignored) for a changed `f` plus `record`.
fn outcome(record: &Record) -> (Vec<String>, usize, usize) {
    let ob = build(1, None);
    let pb = build(2, Some(record));
    let orig = Object::<Orig>::parse("orig", &ob).unwrap();
    let patched = Object::<Patched>::parse("patched", &pb).unwrap();
    let r = Diff::new(&orig, &patched).report();
    (
        r.refused.iter().map(|x| x.key.clone()).collect(),
        r.callbacks.len(),
        r.ignored.len(),
    )
}

fn refused_as_annotation(record: Record) {
    let (keys, callbacks, ignored) = outcome(&record);
    assert!(
        !keys.is_empty() && keys.iter().all(|k| k.starts_with("refuse.annotation.")),
        "{keys:?}"
    );
    assert_eq!(callbacks, 0);
    assert_eq!(ignored, 0);
}

#[test]
fn a_well_formed_callback_is_found() {
    for (target, addend) in [(Target::Func, 0), (Target::TextSection, 0)] {
        let (keys, callbacks, _) = outcome(&Record::Callbacks {
            kind: "post_patch",
            size: 8,
            relocs: vec![(0, target, addend)],
        });
        assert!(keys.is_empty(), "{keys:?}");
        assert_eq!(callbacks, 1);
    }
}

#[test]
fn malformed_callback_records_are_refused() {
    let bad: Vec<(usize, Vec<SlotReloc>)> = vec![
        (8, vec![]),                             // no pointer
        (12, vec![(0, Target::Func, 0)]),        // not an array of pointers
        (8, vec![(0, Target::Undefined, 0)]),    // defined in another unit
        (8, vec![(0, Target::Data, 0)]),         // not a function
        (8, vec![(0, Target::Func, 4)]),         // into the middle of a function
        (8, vec![(0, Target::TextSection, 5)]),  // likewise, section-relative
        (8, vec![(0, Target::TextSection, -8)]), // before the section
        (8, vec![(0, Target::TextSection, i64::MAX)]),
    ];
    for (size, relocs) in bad {
        refused_as_annotation(Record::Callbacks {
            kind: "pre_patch",
            size,
            relocs,
        });
    }
    // A good first slot and an empty second one: the record as a whole is refused.
    let (keys, _, _) = outcome(&Record::Callbacks {
        kind: "pre_patch",
        size: 16,
        relocs: vec![(0, Target::Func, 0)],
    });
    assert_eq!(keys, ["refuse.annotation..klpgen.callbacks.pre_patch"]);
}

#[test]
fn unknown_and_malformed_name_lists_are_refused() {
    refused_as_annotation(Record::Callbacks {
        kind: "mid_patch",
        size: 8,
        relocs: vec![(0, Target::Func, 0)],
    });
    refused_as_annotation(Record::Names {
        section: ".klpgen.ignore.functions",
        bytes: b"f\0\0\0\0\0\0\0".to_vec(),
        reloc: true,
    });
    refused_as_annotation(Record::Names {
        section: ".klpgen.ignore.sections",
        bytes: b"\xff\xfe\0".to_vec(),
        reloc: false,
    });
    refused_as_annotation(Record::Names {
        section: ".klpgen.ignore.functions",
        bytes: b"no_such_function\0".to_vec(),
        reloc: false,
    });
    refused_as_annotation(Record::Names {
        section: ".klpgen.something",
        bytes: b"f\0".to_vec(),
        reloc: false,
    });
}

#[test]
fn padding_between_names_is_skipped() {
    let (keys, _, ignored) = outcome(&Record::Names {
        section: ".klpgen.ignore.functions",
        bytes: b"\0\0f\0\0\0f\0".to_vec(),
        reloc: false,
    });
    assert!(keys.is_empty(), "{keys:?}");
    assert_eq!(ignored, 1, "f is ignored once");
}

#[test]
fn well_formed_kpatch_records_are_read() {
    // KPATCH_IGNORE_FUNCTION(f), by symbol and by section symbol plus offset.
    for target in [Target::Func, Target::TextSection] {
        let (keys, _, ignored) = outcome(&Record::Raw {
            section: ".kpatch.ignore.functions",
            size: 8,
            relocs: vec![(0, target, 0)],
        });
        assert!(keys.is_empty(), "{keys:?}");
        assert_eq!(ignored, 1);
    }
    // KPATCH_IGNORE_SECTION(".text.f").
    let (keys, _, ignored) = outcome(&Record::Raw {
        section: ".kpatch.ignore.sections",
        size: 8,
        relocs: vec![(0, Target::Strings, 0)],
    });
    assert!(keys.is_empty(), "{keys:?}");
    assert_eq!(ignored, 1);
    // A callback record: the function, then a NULL objname.
    let (keys, callbacks, _) = outcome(&Record::Raw {
        section: ".kpatch.callbacks.post_unpatch",
        size: 16,
        relocs: vec![(0, Target::Func, 0)],
    });
    assert!(keys.is_empty(), "{keys:?}");
    assert_eq!(callbacks, 1);
    // KPATCH_FORCE_UNSAFE of a function of this unit or of another: accepted, no effect.
    for target in [Target::Func, Target::Undefined] {
        let (keys, callbacks, ignored) = outcome(&Record::Raw {
            section: ".kpatch.force",
            size: 8,
            relocs: vec![(0, target, 0)],
        });
        assert!(keys.is_empty(), "{keys:?}");
        assert_eq!((callbacks, ignored), (0, 0));
    }
}

#[test]
fn malformed_kpatch_records_are_refused() {
    let bad: Vec<(&str, usize, Vec<SlotReloc>)> = vec![
        // Not arrays of their records.
        (".kpatch.ignore.functions", 12, vec![(0, Target::Func, 0)]),
        (".kpatch.ignore.sections", 4, vec![]),
        (".kpatch.force", 9, vec![(0, Target::Func, 0)]),
        (".kpatch.callbacks.pre_patch", 8, vec![(0, Target::Func, 0)]),
        // Ignoring a function this unit does not define, or no function at all.
        (
            ".kpatch.ignore.functions",
            8,
            vec![(0, Target::Undefined, 0)],
        ),
        (".kpatch.ignore.functions", 8, vec![(0, Target::Data, 0)]),
        (
            ".kpatch.ignore.functions",
            8,
            vec![(0, Target::TextSection, 3)],
        ),
        (".kpatch.ignore.functions", 8, vec![]),
        (".kpatch.force", 8, vec![(0, Target::Data, 0)]),
        // A section name that is no string: not NUL-terminated, unprintable, a function.
        (".kpatch.ignore.sections", 8, vec![(0, Target::Strings, 10)]),
        (".kpatch.ignore.sections", 8, vec![(0, Target::Strings, 8)]),
        (".kpatch.ignore.sections", 8, vec![(0, Target::Func, 0)]),
        (
            ".kpatch.ignore.sections",
            8,
            vec![(0, Target::Undefined, 0)],
        ),
        (".kpatch.ignore.sections", 8, vec![(0, Target::Strings, -1)]),
        (".kpatch.ignore.sections", 8, vec![]),
        // Callbacks: no function, an objname already filled in, an unknown kind.
        (".kpatch.callbacks.pre_patch", 16, vec![]),
        (
            ".kpatch.callbacks.pre_patch",
            16,
            vec![(0, Target::Data, 0)],
        ),
        (
            ".kpatch.callbacks.post_patch",
            16,
            vec![(0, Target::Func, 0), (8, Target::Strings, 0)],
        ),
        (
            ".kpatch.callbacks.mid_patch",
            16,
            vec![(0, Target::Func, 0)],
        ),
        // Sections klpgen does not read: kpatch.ko hooks, create-diff-object's output.
        (".kpatch.hooks.load", 16, vec![(0, Target::Func, 0)]),
        (".kpatch.funcs", 56, vec![(0, Target::Func, 0)]),
    ];
    for (section, size, relocs) in bad {
        let record = Record::Raw {
            section,
            size,
            relocs,
        };
        let (keys, callbacks, ignored) = outcome(&record);
        assert!(
            !keys.is_empty() && keys.iter().all(|k| k.starts_with("refuse.annotation.")),
            "{section}: {keys:?}"
        );
        assert_eq!((callbacks, ignored), (0, 0), "{section}");
    }
}

#[test]
fn malformed_state_records_are_refused() {
    let state = |bytes: Vec<u8>, reloc| Record::Names {
        section: ".klpgen.states",
        bytes,
        reloc,
    };
    let record = |id: u64, version: u64| {
        let mut b = id.to_le_bytes().to_vec();
        b.extend(version.to_le_bytes());
        b
    };
    for bad in [
        state(record(0, 1), false),
        state(record(5, 1 << 32), false),
        state(record(5, 1)[..12].to_vec(), false),
        state(record(5, 1), true),
        state([record(5, 1), record(5, 2)].concat(), false),
    ] {
        refused_as_annotation(bad);
    }
    let (keys, _, _) = outcome(&state([record(5, 1), record(5, 1)].concat(), false));
    assert!(keys.is_empty(), "{keys:?}");
}
