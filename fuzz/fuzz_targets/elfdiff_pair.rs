//! Fuzz target: two relocatable objects (a 4-byte little-endian length, then the original, then
//! the patched object) through the whole differ — parse, diff, report, plan — and, when a plan
//! comes out, binding against the original's symbol table and the livepatch object writer.
#![no_main]

use std::collections::HashMap;

use elfdiff::model::{Orig, Patched};
use elfdiff::{Diff, Object, PlanOptions};
use libfuzzer_sys::fuzz_target;
use patchgen::target::{Binding, TargetSymtab};

/// Entry sizes of the special sections on the test kernel (x86-64), so that per-entry cutting
/// is exercised too.
const ENTRY_SIZES: &[(&str, u64)] = &[
    ("__bug_table", 12),
    ("__ex_table", 12),
    ("__jump_table", 16),
    (".altinstructions", 14),
    (".static_call_sites", 8),
    (".printk_index", 24),
];

fn split(data: &[u8]) -> (&[u8], &[u8]) {
    let Some((len, rest)) = data.split_first_chunk::<4>() else {
        return (data, &[]);
    };
    let n = (u32::from_le_bytes(*len) as usize).min(rest.len());
    rest.split_at(n)
}

fn bind(plan: &elfdiff::Plan, symtab: Option<&TargetSymtab>) -> Vec<Binding> {
    plan.externals
        .iter()
        .map(|e| {
            let located = symtab.filter(|_| e.local).and_then(|t| {
                t.locate(e, plan.file_name.as_deref(), &plan.orig_locals)
                    .ok()
            });
            match located {
                Some(sympos) => Binding::Klp {
                    objname: "vmlinux".into(),
                    name: e.name.clone(),
                    sympos,
                },
                None => Binding::Plain {
                    name: e.name.clone(),
                },
            }
        })
        .collect()
}

fn plan_and_write(diff: &Diff<'_, '_>, orig_bytes: &[u8], opts: &PlanOptions) {
    let Ok(plan) = diff.plan(opts) else {
        return;
    };
    let symtab = TargetSymtab::parse("orig.o", orig_bytes).ok();
    let bindings = bind(&plan, symtab.as_ref());
    if let Ok(bytes) = patchgen::writer::write_patch_object(&plan, &bindings, 0) {
        // What klpgen writes must parse back.
        let back = Object::<Orig>::parse("livepatch.o", &bytes);
        assert!(back.is_ok(), "written object does not parse: {back:?}");
    }
}

fuzz_target!(|data: &[u8]| {
    let (a, b) = split(data);
    // Each object in its own buffer, aligned as a file read by klpgen is (the ELF parser
    // rejects misaligned headers).
    let (a, b) = (a.to_vec(), b.to_vec());
    let (a, b) = (a.as_slice(), b.as_slice());
    let Ok(orig) = Object::<Orig>::parse("orig.o", a) else {
        return;
    };
    let Ok(patched) = Object::<Patched>::parse("patched.o", b) else {
        return;
    };
    let diff = Diff::new(&orig, &patched);
    let _ = diff.report();
    plan_and_write(&diff, a, &PlanOptions::default());
    let opts = PlanOptions {
        entry_sizes: ENTRY_SIZES
            .iter()
            .map(|&(s, n)| (s.to_string(), n))
            .collect::<HashMap<_, _>>(),
        // Half the runs with member offsets from "DWARF" (arbitrary ones: any value must be
        // safe), half with the known layouts.
        member_offsets: if data.len() % 4 < 2 {
            elfdiff::plan::LAYOUT_MEMBERS
                .iter()
                .zip(data.iter().rev())
                .map(|((st, m), &b)| (format!("{st}.{m}"), u64::from(b % 24)))
                .collect()
        } else {
            HashMap::new()
        },
        objtool_regenerates: data.len().is_multiple_of(2),
        // A section klpgen does not know, given an entry size, is special too.
        given_entry_sizes: [("__vendor_sites".to_string(), 8)].into(),
    };
    plan_and_write(&diff, a, &opts);
    // The differ with the same sizes: entries compared with their functions.
    let diff = Diff::with_layouts(&orig, &patched, &opts);
    let _ = diff.report();
    plan_and_write(&diff, a, &opts);
});
