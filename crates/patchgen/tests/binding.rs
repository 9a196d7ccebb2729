//! How the references of code that lives in a module are bound: the module's own symbols
//! (including globals another object of the module defines, exported or not) are klp
//! relocations against the module, so the module may be loaded before or after the patch.

use object::{SectionKind, SymbolKind, SymbolScope};

use testsupport::objwrite;

use elfdiff::plan::External;
use elfdiff::Plan;
use patchgen::target::{bind_externals_module, Binding, Symvers, TargetSymtab};

/// A symbol table with `file` as STT_FILE, then the given (name, global) functions.
fn symtab(file: &str, funcs: &[(&str, bool)]) -> Vec<u8> {
    let mut o = objwrite::object();
    let text = o.add_section(Vec::new(), b".text".to_vec(), SectionKind::Text);
    o.append_section_data(text, &[0xc3; 64], 16);
    o.add_file_symbol(file.as_bytes().to_vec());
    for (i, (name, global)) in funcs.iter().enumerate() {
        let scope = if *global {
            SymbolScope::Dynamic
        } else {
            SymbolScope::Compilation
        };
        let value = i as u64 * 4;
        objwrite::symbol(&mut o, name, SymbolKind::Text, scope, text, value, 4);
    }
    o.write().unwrap()
}

fn ext(name: &str, local: bool, undefined: bool) -> External {
    External {
        name: name.into(),
        local,
        undefined,
    }
}

#[test]
fn module_code_binds_its_own_module_first() {
    let ko = symtab(
        "status.c",
        &[
            ("show", false),
            ("shared_helper", true),
            ("exported_helper", true),
        ],
    );
    let vm = symtab("core.c", &[("kernel_internal", true), ("printk", true)]);
    let module = TargetSymtab::parse_module("m.ko", &ko).unwrap();
    let vmlinux = TargetSymtab::parse("vmlinux", &vm).unwrap();
    let symvers = Symvers::parse(
        "Module.symvers",
        "0x0\tprintk\tvmlinux\tEXPORT_SYMBOL\t\n0x0\texported_helper\tfs/m\tEXPORT_SYMBOL_GPL\t\n",
    )
    .unwrap();
    let plan = Plan {
        externals: vec![
            ext("show", true, false),
            ext("shared_helper", false, true),
            ext("exported_helper", false, true),
            ext("printk", false, true),
            ext("kernel_internal", false, true),
        ],
        file_name: Some("status.c".into()),
        orig_locals: vec!["show".into()],
        ..Plan::default()
    };
    let got = bind_externals_module(&plan, "m", &module, &vmlinux, &symvers).unwrap();
    let klp = |o: &str, n: &str| Binding::Klp {
        objname: o.into(),
        name: n.into(),
        sympos: 0,
    };
    assert_eq!(
        got,
        vec![
            klp("m", "show"),
            // Defined by another object of the same module: not in Module.symvers.
            klp("m", "shared_helper"),
            // Exported by the module itself: still klp, or the patch would need it loaded.
            klp("m", "exported_helper"),
            Binding::Plain {
                name: "printk".into()
            },
            klp("vmlinux", "kernel_internal"),
        ]
    );
}

#[test]
fn symvers_gives_each_exports_namespace() {
    let s = Symvers::parse(
        "Module.symvers",
        "0x0\tcpu_cache_has_invalidate_memregion\tvmlinux\tEXPORT_SYMBOL_GPL\tDEVMEM\n0x0\tprintk\tvmlinux\tEXPORT_SYMBOL\t\n0x0\told_format\tvmlinux\tEXPORT_SYMBOL\n",
    )
    .unwrap();
    assert_eq!(
        s.namespace("cpu_cache_has_invalidate_memregion"),
        Some("DEVMEM")
    );
    assert_eq!(s.namespace("printk"), None);
    assert_eq!(s.namespace("old_format"), None);
    assert_eq!(s.exporter("old_format"), Some("vmlinux"));
}

/// `klpgen_get_state()` of `<klpgen/klpgen.h>` reads the hook's `__klpgen_patch`: the reference
/// is an ordinary one that the module's link resolves, from vmlinux code and module code alike,
/// though neither the target nor Module.symvers has the symbol.
#[test]
fn the_hooks_own_symbol_binds_inside_the_module() {
    let vm = symtab("core.c", &[("printk", true)]);
    let ko = symtab("status.c", &[("show", false)]);
    let vmlinux = TargetSymtab::parse("vmlinux", &vm).unwrap();
    let module = TargetSymtab::parse_module("m.ko", &ko).unwrap();
    let symvers = Symvers::parse("Module.symvers", "").unwrap();
    let plan = Plan {
        externals: vec![ext(patchgen::kmod::HOOK_PATCH_SYMBOL, false, true)],
        file_name: Some("status.c".into()),
        ..Plan::default()
    };
    let plain = vec![Binding::Plain {
        name: "__klpgen_patch".into(),
    }];
    let got = patchgen::target::bind_externals(&plan, "vmlinux", &vmlinux, &symvers).unwrap();
    assert_eq!(got, plain);
    let got = bind_externals_module(&plan, "m", &module, &vmlinux, &symvers).unwrap();
    assert_eq!(got, plain);
    // Any other name the target lacks is still an error.
    let other = Plan {
        externals: vec![ext("__klpgen_other", false, true)],
        ..Plan::default()
    };
    assert!(patchgen::target::bind_externals(&other, "vmlinux", &vmlinux, &symvers).is_err());
}
