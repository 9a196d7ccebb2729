//! Fuzz target: structure layouts from DWARF (`elfdiff::dwarf::struct_layouts`), as klpgen
//! reads them from the target for the Rust hook (`klp_func`, `klp_object`, `klp_patch`) and
//! for the entry sizes of special sections (`bug_entry`, `jump_entry`, `alt_instr`, ...).
#![no_main]

use elfdiff::dwarf::struct_layouts;
use libfuzzer_sys::fuzz_target;

const KLP: &[&str] = &["klp_func", "klp_object", "klp_patch"];

fuzz_target!(|data: &[u8]| {
    let data = data.to_vec();
    let special: Vec<&str> = elfdiff::plan::special_section_structs()
        .map(|(_, s)| s)
        .collect();
    for (wanted, prefer) in [(KLP, "livepatch/core.c"), (&special[..], "")] {
        let Ok(layouts) = struct_layouts("vmlinux", &data, wanted, prefer) else {
            continue;
        };
        for (name, l) in &layouts {
            assert!(wanted.contains(&name.as_str()), "unasked-for layout {name}");
            assert_eq!(&l.name, name);
            for m in &l.members {
                let _ = l.member(&m.name);
            }
        }
    }
});
