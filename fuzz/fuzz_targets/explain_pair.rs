//! Fuzz target: `klpgen explain` on two relocatable objects (a 4-byte little-endian length,
//! then the original, then the patched object): the diff, then the explanation of every
//! changed function — disassembly at the first difference (iced-x86), relocation targets, and
//! source lines and inlined callees from each object's DWARF (line tables and
//! `DW_TAG_inlined_subroutine` ranges with the `.o`'s debug relocations applied), and which
//! changed source lines each function's code comes from; the line tables alone and the rows
//! of each function, as the comparison's line-number check reads them.
#![no_main]

use elfdiff::explain::{explain, explain_with, ChangedLines, DwarfIndex};
use elfdiff::model::{Orig, Patched};
use elfdiff::{Diff, Object};
use libfuzzer_sys::fuzz_target;

fn split(data: &[u8]) -> (&[u8], &[u8]) {
    let Some((len, rest)) = data.split_first_chunk::<4>() else {
        return (data, &[]);
    };
    let n = (u32::from_le_bytes(*len) as usize).min(rest.len());
    rest.split_at(n)
}

/// Line and inlining queries at every function symbol of an object, as `explain` makes them.
fn query<S: elfdiff::model::Side>(obj: &Object<'_, S>) {
    let Ok(Some(index)) = DwarfIndex::build(obj) else {
        return;
    };
    // Every line of every file changed: `klpgen build`'s question of each function.
    let changed: Vec<ChangedLines> = index
        .files()
        .iter()
        .take(16)
        .map(|f| ChangedLines {
            file: f.clone(),
            lines: vec![(0, u64::MAX)],
        })
        .collect();
    for i in obj.symbol_indices().take(64) {
        let s = obj.sym(i);
        let Some(sec) = s.section else { continue };
        let elf_sec = obj.sec(sec).elf_index;
        for off in [s.value, s.value.wrapping_add(s.size / 2), u64::MAX] {
            let _ = index.location(elf_sec, off);
            let _ = index.inlined_at(elf_sec, off);
        }
        let _ = index.source_cause(s.name, elf_sec, s.value, s.size, &changed);
        // The comparison's question: the rows of a function (`lines.rs`).
        let _ = index.rows(elf_sec, s.value, s.value.wrapping_add(s.size));
    }
    // The line tables alone, as the comparison reads them.
    let _ = DwarfIndex::line_tables(obj);
}

fuzz_target!(|data: &[u8]| {
    let (a, b) = split(data);
    let (a, b) = (a.to_vec(), b.to_vec());
    let Ok(orig) = Object::<Orig>::parse("orig.o", &a) else {
        return;
    };
    query(&orig);
    let Ok(patched) = Object::<Patched>::parse("patched.o", &b) else {
        return;
    };
    let diff = Diff::new(&orig, &patched);
    let ex = explain(&diff);
    let _ = explain_with(
        &diff,
        &[ChangedLines {
            file: "t.c".into(),
            lines: vec![(1, 1000)],
        }],
    );
    // What the CLI prints of it.
    for f in &ex.functions {
        let _ = format!("{f:?}");
        if let Some(l) = f.orig.as_ref().and_then(|s| s.location.as_ref()) {
            let _ = l.to_string();
        }
    }
});
