//! Fuzz target: the target's Module.symvers (text) and symbol table (ELF bytes) parsers, and
//! symbol lookups (sympos, file groups) with names taken from the input.
#![no_main]

use elfdiff::plan::External;
use libfuzzer_sys::fuzz_target;
use patchgen::target::{Symvers, TargetSymtab};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Ok(sv) = Symvers::parse("Module.symvers", &text) {
        for name in text.split(['\t', '\n']).take(8) {
            let _ = sv.exporter(name);
        }
        let _ = (sv.len(), sv.is_empty());
    }
    if let Ok(t) = TargetSymtab::parse("vmlinux", data) {
        let names: Vec<String> = data
            .split(|&c| c == 0)
            .filter(|n| !n.is_empty() && n.len() < 64)
            .take(8)
            .map(|n| String::from_utf8_lossy(n).into_owned())
            .collect();
        let file = names.iter().find(|n| n.ends_with(".c")).map(String::as_str);
        for (i, name) in names.iter().enumerate() {
            let _ = t.count(name);
            let ext = External {
                name: name.clone(),
                local: i % 2 == 0,
                undefined: false,
            };
            let _ = t.locate(&ext, file, &names);
        }
    }
});
