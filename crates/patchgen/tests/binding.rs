//! How the references of code that lives in a module are bound: the module's own symbols
//! (including globals another object of the module defines, exported or not) are klp
//! relocations against the module, so the module may be loaded before or after the patch.
//! And in a livepatch of several units, how references to the globals the patch adds bind
//! inside the module (`bind_unit`, `shared_globals`, `unshadow`).

use object::{SectionKind, SymbolKind, SymbolScope};

use testsupport::objwrite;

use elfdiff::plan::External;
use elfdiff::Plan;
use patchgen::target::{
    bind_externals_module, bind_unit, shared_globals, unshadow, Binding, OwnDef, OwnSymbols, Place,
    Symvers, TargetSymtab,
};

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

fn klp(o: &str, n: &str) -> Binding {
    Binding::Klp {
        objname: o.into(),
        name: n.into(),
        sympos: 0,
    }
}

fn own(name: &str, unit: &str) -> Binding {
    Binding::Own {
        name: name.into(),
        unit: unit.into(),
    }
}

fn def(unit: &str, object: Option<&str>) -> OwnDef {
    OwnDef {
        unit: unit.into(),
        object: object.map(String::from),
        exported: false,
        static_data: false,
    }
}

/// A unit's plan with these undefined globals (and one static of its own, `show`).
fn user_plan(undefined: &[&str]) -> Plan {
    let mut externals = vec![ext("show", true, false)];
    externals.extend(undefined.iter().map(|n| ext(n, false, true)));
    Plan {
        externals,
        file_name: Some("user.c".into()),
        orig_locals: vec!["show".into()],
        ..Plan::default()
    }
}

struct Target {
    vmlinux: TargetSymtab,
    module: TargetSymtab,
    symvers: Symvers,
}

fn target() -> Target {
    let vm = symtab(
        "user.c",
        &[("show", false), ("kernel_internal", true), ("printk", true)],
    );
    let ko = symtab("user.c", &[("show", false), ("mod_global", true)]);
    Target {
        vmlinux: TargetSymtab::parse("vmlinux", &vm).unwrap(),
        module: TargetSymtab::parse_module("m.ko", &ko).unwrap(),
        symvers: Symvers::parse(
            "Module.symvers",
            "0x0\tprintk\tvmlinux\tEXPORT_SYMBOL\t\n0x0\tother_export\tfs/other\tEXPORT_SYMBOL\t\n",
        )
        .unwrap(),
    }
}

/// Code of vmlinux: a new global of another vmlinux unit is the livepatch's own; the target's
/// symbols (a static, an unexported global, an export) bind as they always did; a new global
/// only a module's unit defines, which the target lacks, is refused; two definitions in
/// vmlinux units are refused.
#[test]
fn vmlinux_code_binds_the_patchs_new_globals_inside_the_module() {
    let t = target();
    let mut o = OwnSymbols::default();
    o.add("new_fn", def("a.o", None));
    o.add("new_in_mod", def("m1.o", Some("m")));
    o.add("dup", def("a.o", None));
    o.add("dup", def("b.o", None));
    // A name the target has too, new only in a module unit: the target's (vmlinux code
    // cannot mean the module's).
    o.add("kernel_internal", def("m1.o", Some("m")));
    let plan = user_plan(&["new_fn", "kernel_internal", "printk"]);
    let got = bind_unit(&plan, Place::Vmlinux, &o, &t.vmlinux, &t.symvers).unwrap();
    assert!(got.refusals.is_empty(), "{:?}", got.refusals);
    assert_eq!(
        got.bindings,
        vec![
            klp("vmlinux", "show"),
            own("new_fn", "a.o"),
            klp("vmlinux", "kernel_internal"),
            Binding::Plain {
                name: "printk".into()
            },
        ]
    );
    let got = bind_unit(
        &user_plan(&["new_in_mod", "dup"]),
        Place::Vmlinux,
        &o,
        &t.vmlinux,
        &t.symvers,
    )
    .unwrap();
    let keys: Vec<&str> = got.refusals.iter().map(|r| r.key.as_str()).collect();
    assert_eq!(
        keys,
        ["refuse.new-global.new_in_mod", "refuse.new-global.dup"]
    );
    assert!(
        got.refusals[0]
            .reason
            .contains("new_in_mod is new in m1.o, code of module m"),
        "{:?}",
        got.refusals[0]
    );
    assert!(
        got.refusals[1]
            .reason
            .contains("dup is a new global of both a.o and b.o, code of vmlinux"),
        "{:?}",
        got.refusals[1]
    );
    // Without any new global, bind_unit is the plain binding.
    let plain = user_plan(&["kernel_internal"]);
    let got = bind_unit(
        &plain,
        Place::Vmlinux,
        &OwnSymbols::default(),
        &t.vmlinux,
        &t.symvers,
    )
    .unwrap();
    assert_eq!(
        got.bindings,
        patchgen::target::bind_externals(&plain, "vmlinux", &t.vmlinux, &t.symvers).unwrap()
    );
    // A name neither the patch nor the target defines is still the binding error.
    let e = bind_unit(
        &user_plan(&["nowhere"]),
        Place::Vmlinux,
        &o,
        &t.vmlinux,
        &t.symvers,
    )
    .unwrap_err();
    assert!(
        matches!(&e, patchgen::Error::MissingSymbol { symbol, .. } if symbol == "nowhere"),
        "{e}"
    );
}

/// Code of a module: a new global of a unit of the same module first, then the running
/// module's own globals, then a new global of a vmlinux unit (an export the patch adds);
/// another module's new global is refused.
#[test]
fn module_code_binds_its_modules_new_globals_then_the_module_then_vmlinuxs() {
    let t = target();
    let place = Place::Module {
        name: "m",
        table: &t.module,
    };
    let mut o = OwnSymbols::default();
    o.add("same_mod", def("m2.o", Some("m")));
    o.add("same_mod", def("a.o", None));
    o.add("from_vmlinux", def("a.o", None));
    // The running module has it: its own link resolves it there, not to vmlinux's new one.
    o.add("mod_global", def("a.o", None));
    o.add("other_mod", def("o1.o", Some("other")));
    o.add(
        "made_global",
        OwnDef {
            static_data: true,
            ..def("m3.o", Some("m"))
        },
    );
    let plan = user_plan(&["same_mod", "from_vmlinux", "mod_global", "printk"]);
    let got = bind_unit(&plan, place, &o, &t.vmlinux, &t.symvers).unwrap();
    assert!(got.refusals.is_empty(), "{:?}", got.refusals);
    assert_eq!(
        got.bindings,
        vec![
            klp("m", "show"),
            own("same_mod", "m2.o"),
            own("from_vmlinux", "a.o"),
            klp("m", "mod_global"),
            Binding::Plain {
                name: "printk".into()
            },
        ]
    );
    let got = bind_unit(
        &user_plan(&["other_mod"]),
        place,
        &o,
        &t.vmlinux,
        &t.symvers,
    )
    .unwrap();
    assert_eq!(got.refusals.len(), 1);
    assert_eq!(got.refusals[0].key, "refuse.new-global.other_mod");
    assert!(
        got.refusals[0]
            .reason
            .contains("other_mod is new in o1.o, code of module other"),
        "{:?}",
        got.refusals[0]
    );
}

/// Across units: each used new global has one defining unit, whose object makes it global;
/// two used definitions of one name are refused; an ordinary binding to an export of vmlinux
/// that a shared new global's name would capture in the link becomes a klp relocation, one to
/// a module's export is refused.
#[test]
fn shared_new_globals_have_one_definition_and_capture_nothing() {
    let t = target();
    let mut o = OwnSymbols::default();
    o.add("f", def("a.o", None));
    o.add("g", def("a.o", None));
    o.add("g", def("m1.o", Some("m")));
    let b1 = vec![own("f", "a.o"), own("g", "a.o")];
    let b2 = vec![own("g", "m1.o")];
    let (shared, refusals) = shared_globals(&[&b1, &b2], &o);
    assert_eq!(
        shared.into_iter().collect::<Vec<_>>(),
        vec![("f".to_string(), "a.o".to_string())]
    );
    assert_eq!(refusals.len(), 1);
    assert_eq!(refusals[0].key, "refuse.new-global.g");
    assert!(
        refusals[0]
            .reason
            .contains("g is a new global of a.o (vmlinux) and m1.o (m)"),
        "{:?}",
        refusals[0]
    );

    let mut shared = std::collections::BTreeMap::new();
    shared.insert("printk".to_string(), "a.o".to_string());
    shared.insert("other_export".to_string(), "a.o".to_string());
    let plan = user_plan(&["printk", "other_export"]);
    let mut bindings = vec![
        klp("vmlinux", "show"),
        Binding::Plain {
            name: "printk".into(),
        },
        Binding::Plain {
            name: "other_export".into(),
        },
    ];
    let refusals = unshadow(&plan, &mut bindings, &shared, &t.vmlinux, &t.symvers).unwrap();
    assert_eq!(bindings[1], klp("vmlinux", "printk"));
    assert_eq!(refusals.len(), 1);
    assert_eq!(refusals[0].key, "refuse.new-global.other_export");
    assert!(refusals[0].reason.contains("fs/other"), "{:?}", refusals[0]);
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
