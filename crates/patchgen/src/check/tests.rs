//! Tests of the module checks: hand-made livepatch modules (linked as kbuild leaves them,
//! then finalised by `klp.rs`, then corrupted one way at a time) checked against the fake
//! target of `check/testtarget.rs`; each corruption must give exactly its finding key.

use super::testtarget::{fake_vmlinux, target_module, target_module_for, RELEASE};
use super::*;
use crate::klpsym::KLP_RELA_PREFIX;
use crate::manifest::Manifest;
use object::build::elf::Builder;
use object::write::{self, Object, Relocation, SymbolSection};
use object::{
    Architecture, BinaryFormat, Endianness, RelocationFlags, SectionKind, SymbolFlags, SymbolKind,
    SymbolScope,
};

struct ModSpec {
    modinfo: Vec<String>,
    /// Symbols the module's code references (klp or ordinary).
    refs: Vec<String>,
    manifest: Option<Manifest>,
    finalize: bool,
    /// NUL-terminated strings in `.rodata` under these global symbols (the guard's).
    strings: Vec<(String, String)>,
}

fn good_manifest() -> Manifest {
    let rec = |name: &str, pos, origin| Record {
        objname: VMLINUX.into(),
        name: name.into(),
        sympos: pos,
        origin,
    };
    Manifest {
        funcs: vec![
            rec("traced", 0, Origin::Global),
            rec("helper", 1, Origin::Local("b.c".into())),
        ],
        syms: vec![
            rec("helper", 2, Origin::Local("a.c".into())),
            rec("a_only", 0, Origin::Local("a.c".into())),
        ],
    }
}

fn good_spec() -> ModSpec {
    ModSpec {
        modinfo: vec![
            "livepatch=Y".into(),
            "license=GPL".into(),
            format!("vermagic={RELEASE} SMP mod_unload "),
        ],
        refs: vec![
            ".klp.sym.vmlinux.helper,2".into(),
            ".klp.sym.vmlinux.a_only,0".into(),
            "printk".into(),
        ],
        manifest: Some(good_manifest()),
        finalize: true,
        strings: Vec::new(),
    }
}

/// A linked livepatch module as kbuild leaves it, then (optionally) finalised.
fn module(spec: &ModSpec) -> Vec<u8> {
    module_pre(spec, |_| {})
}

/// Like [`module`], with an edit of the linked module before it is finalised (object's
/// builder reads linked modules; it cannot read finalised ones, whose SHF_ALLOC
/// `.klp.rela` sections it takes for dynamic relocations).
fn module_pre(spec: &ModSpec, pre: impl FnOnce(&mut Builder<'_>)) -> Vec<u8> {
    let mut obj = Object::new(BinaryFormat::Elf, Architecture::X86_64, Endianness::Little);
    let text = obj.add_section(Vec::new(), b".text".to_vec(), SectionKind::Text);
    obj.append_section_data(text, &[0x90; 64], 16);
    let mi = obj.add_section(Vec::new(), b".modinfo".to_vec(), SectionKind::ReadOnlyData);
    let info: Vec<u8> = spec
        .modinfo
        .iter()
        .flat_map(|e| e.bytes().chain([0]))
        .collect();
    obj.append_section_data(mi, &info, 1);
    if !spec.strings.is_empty() {
        let ro = obj.add_section(Vec::new(), b".rodata".to_vec(), SectionKind::ReadOnlyData);
        for (name, text) in &spec.strings {
            let bytes: Vec<u8> = text.bytes().chain([0]).collect();
            let at = obj.append_section_data(ro, &bytes, 1);
            obj.add_symbol(write::Symbol {
                name: name.as_bytes().to_vec(),
                value: at,
                size: bytes.len() as u64,
                kind: SymbolKind::Data,
                scope: SymbolScope::Linkage,
                weak: false,
                section: SymbolSection::Section(ro),
                flags: SymbolFlags::None,
            });
        }
    }
    obj.add_symbol(write::Symbol {
        name: b"__klpgen_func_0".to_vec(),
        value: 0,
        size: 16,
        kind: SymbolKind::Text,
        scope: SymbolScope::Linkage,
        weak: false,
        section: SymbolSection::Section(text),
        flags: SymbolFlags::None,
    });
    for (i, r) in spec.refs.iter().enumerate() {
        let sym = obj.add_symbol(write::Symbol {
            name: r.as_bytes().to_vec(),
            value: 0,
            size: 0,
            kind: SymbolKind::Unknown,
            scope: SymbolScope::Linkage,
            weak: false,
            section: SymbolSection::Undefined,
            flags: SymbolFlags::None,
        });
        obj.add_relocation(
            text,
            Relocation {
                offset: 4 * i as u64,
                symbol: sym,
                addend: -4,
                flags: RelocationFlags::Elf {
                    r_type: elf::R_X86_64_PC32,
                },
            },
        )
        .unwrap();
    }
    let ko = edit(&obj.write().unwrap(), pre);
    if spec.finalize {
        crate::klp::finalize_module_with("test.ko", &ko, spec.manifest.as_ref())
            .unwrap()
            .0
    } else {
        ko
    }
}

fn symvers(names: &[&str]) -> Symvers {
    let text: String = names
        .iter()
        .map(|n| format!("0x00000000\t{n}\tvmlinux\tEXPORT_SYMBOL\t\n"))
        .collect();
    Symvers::parse("Module.symvers", &text).unwrap()
}

fn run_with(
    ko: &[u8],
    vm: &TargetObject,
    modules: Option<&HashMap<String, TargetObject>>,
) -> Vec<String> {
    let sv = symvers(&["printk"]);
    let r = check_module(
        "test.ko",
        ko,
        &Inputs {
            vmlinux: vm,
            symvers: Some(&sv),
            modules,
        },
    )
    .unwrap();
    assert_eq!(r.ok(), r.findings.is_empty());
    r.findings.iter().map(|f| f.key.clone()).collect()
}

fn run(ko: &[u8]) -> Vec<String> {
    let vm = TargetObject::vmlinux("vmlinux", &fake_vmlinux(Some(RELEASE), true)).unwrap();
    run_with(ko, &vm, None)
}

fn assert_keys(got: &[String], want: &[&str]) {
    let got: BTreeSet<&str> = got.iter().map(String::as_str).collect();
    let want: BTreeSet<&str> = want.iter().copied().collect();
    assert_eq!(got, want);
}

/// Read, change and rewrite a module with object's builder.
fn edit(ko: &[u8], f: impl FnOnce(&mut Builder<'_>)) -> Vec<u8> {
    let mut b = Builder::read(ko).unwrap();
    f(&mut b);
    let mut out = Vec::new();
    b.write(&mut out).unwrap();
    out
}

/// Rename a symbol of a finalised module in place (same length, one occurrence).
fn rename_symbol(ko: &[u8], from: &str, to: &str) -> Vec<u8> {
    assert_eq!(from.len(), to.len());
    let pat: Vec<u8> = from.bytes().chain([0]).collect();
    let hits: Vec<usize> = (0..ko.len() - pat.len())
        .filter(|&i| ko[i..].starts_with(&pat) && (i == 0 || ko[i - 1] == 0))
        .collect();
    assert_eq!(hits.len(), 1, "{from}");
    let mut out = ko.to_vec();
    out[hits[0]..hits[0] + to.len()].copy_from_slice(to.as_bytes());
    out
}

/// Patch one field of a section header in place: (offset in Elf64_Shdr, size, value).
fn patch_shdr(ko: &[u8], name_prefix: &str, field: usize, size: usize, value: u64) -> Vec<u8> {
    let mut out = ko.to_vec();
    let rd = |o: usize, n: usize| {
        let mut v = 0u64;
        for i in (0..n).rev() {
            v = (v << 8) | u64::from(ko[o + i]);
        }
        v
    };
    let shoff = rd(0x28, 8) as usize;
    let shnum = rd(0x3c, 2) as usize;
    let shstrndx = rd(0x3e, 2) as usize;
    let stroff = rd(shoff + shstrndx * 64 + 24, 8) as usize;
    let mut hit = 0;
    for i in 0..shnum {
        let h = shoff + i * 64;
        let n = stroff + rd(h, 4) as usize;
        let end = n + ko[n..].iter().position(|&c| c == 0).unwrap();
        if ko[n..end].starts_with(name_prefix.as_bytes()) {
            out[h + field..h + field + size].copy_from_slice(&value.to_le_bytes()[..size]);
            hit += 1;
        }
    }
    assert!(hit > 0, "no section {name_prefix}*");
    out
}

#[test]
fn good_module_passes() {
    let ko = module(&good_spec());
    assert_keys(&run(&ko), &[]);
    let vm = TargetObject::vmlinux("vmlinux", &fake_vmlinux(Some(RELEASE), true)).unwrap();
    assert_eq!(vm.release.as_deref(), Some(RELEASE));
    assert_eq!(vm.mcount_count(), Some(4));
    let r = check_module(
        "test.ko",
        &ko,
        &Inputs {
            vmlinux: &vm,
            symvers: Some(&symvers(&["printk"])),
            modules: None,
        },
    )
    .unwrap();
    assert_eq!(
        (r.klp_symbols, r.klp_relocations, r.functions, r.undefined),
        (2, 2, 2, 1)
    );
    assert!(check_structure("test.ko", &ko).unwrap().is_empty());
    assert!(referenced_objects("test.ko", &ko).unwrap().is_empty());
}

#[test]
fn modinfo_findings() {
    let mut spec = good_spec();
    spec.modinfo.retain(|e| !e.starts_with("livepatch="));
    assert_keys(&run(&module(&spec)), &["check.modinfo.livepatch"]);

    let mut spec = good_spec();
    spec.modinfo[1] = "license=Proprietary".into();
    assert_keys(&run(&module(&spec)), &["check.modinfo.license"]);

    let mut spec = good_spec();
    spec.modinfo[2] = "vermagic=6.12.1 SMP mod_unload ".into();
    assert_keys(&run(&module(&spec)), &["check.modinfo.vermagic"]);

    let mut spec = good_spec();
    spec.modinfo.truncate(2);
    assert_keys(&run(&module(&spec)), &["check.modinfo.vermagic"]);

    // No .modinfo at all.
    let ko = module_pre(&good_spec(), |b| {
        for s in b.sections.iter_mut() {
            if s.name.as_slice() == b".modinfo" {
                s.delete = true;
            }
        }
    });
    assert_keys(
        &run(&ko),
        &[
            "check.modinfo.livepatch",
            "check.modinfo.license",
            "check.modinfo.vermagic",
        ],
    );

    // A target whose release cannot be read.
    let vm = TargetObject::vmlinux("vmlinux", &fake_vmlinux(None, true)).unwrap();
    assert_keys(
        &run_with(&module(&good_spec()), &vm, None),
        &["check.target.release"],
    );
}

#[test]
fn klp_symbol_positions() {
    let ko = module(&good_spec());
    // Position 1 is b.c's helper; the build took a.c's.
    let bad = rename_symbol(
        &ko,
        ".klp.sym.vmlinux.helper,2",
        ".klp.sym.vmlinux.helper,1",
    );
    assert_keys(&run(&bad), &["check.klp-sym.wrong-file"]);
    let bad = rename_symbol(
        &ko,
        ".klp.sym.vmlinux.helper,2",
        ".klp.sym.vmlinux.helper,0",
    );
    assert_keys(&run(&bad), &["check.klp-sym.position"]);
    let bad = rename_symbol(
        &ko,
        ".klp.sym.vmlinux.helper,2",
        ".klp.sym.vmlinux.helper,3",
    );
    assert_keys(&run(&bad), &["check.klp-sym.position"]);
    let bad = rename_symbol(
        &ko,
        ".klp.sym.vmlinux.a_only,0",
        ".klp.sym.vmlinux.b_only,0",
    );
    assert_keys(&run(&bad), &["check.klp-sym.missing"]);
    // A unique name at position 1 is what the kernel accepts too; a global where the
    // build bound a static is not.
    let bad = rename_symbol(
        &ko,
        ".klp.sym.vmlinux.a_only,0",
        ".klp.sym.vmlinux.a_only,1",
    );
    assert_keys(&run(&bad), &[]);
    let bad = rename_symbol(
        &ko,
        ".klp.sym.vmlinux.a_only,0",
        ".klp.sym.vmlinux.traced,0",
    );
    assert_keys(&run(&bad), &["check.klp-sym.unrecorded"]);

    // Every klp symbol must be recorded...
    let mut spec = good_spec();
    spec.manifest.as_mut().unwrap().syms.clear();
    let ko = module(&spec);
    assert_keys(&run(&ko), &["check.klp-sym.unrecorded"; 2]);
    // ...but without a .klpgen.syms section only positions can be checked: helper,1 is
    // a valid position, though of the wrong helper.
    let ko = module(&good_spec());
    let ko = rename_symbol(&ko, SYMS_SECTION, ".klpgen.xxxx");
    assert_keys(&run(&ko), &[]);
    let bad = rename_symbol(
        &ko,
        ".klp.sym.vmlinux.helper,2",
        ".klp.sym.vmlinux.helper,1",
    );
    assert_keys(&run(&bad), &[]);
    let bad = rename_symbol(
        &ko,
        ".klp.sym.vmlinux.helper,2",
        ".klp.sym.vmlinux.helper,4",
    );
    assert_keys(&run(&bad), &["check.klp-sym.position"]);
}

#[test]
fn klp_symbol_names_and_markings() {
    let ko = module(&good_spec());
    let long = format!(".klp.sym.{}.helper,2", "m".repeat(56));
    for bad_name in [
        long.as_str(),
        ".klp.sym.vmlinux.helper",
        ".klp.sym.vmlinux.helper,x",
        ".klp.sym.vmlinux.,1",
        ".klp.sym.vmlinux.a,b,1",
    ] {
        let mut spec = good_spec();
        spec.refs[0] = bad_name.into();
        let keys = run(&module(&spec));
        assert!(
            keys.contains(&"check.klp-sym.name".to_string()),
            "{bad_name}: {keys:?}"
        );
    }
    // Not finalised: no SHN_LIVEPATCH, relocations still ordinary.
    let mut spec = good_spec();
    spec.finalize = false;
    let keys = run(&module(&spec));
    assert!(
        keys.contains(&"check.klp-sym.shndx".to_string()),
        "{keys:?}"
    );
    assert!(
        keys.contains(&"check.klp-rela.ordinary".to_string()),
        "{keys:?}"
    );
    assert!(
        keys.contains(&"check.funcs.unknown".to_string()),
        "{keys:?}"
    );
    // A klp symbol of another object in the vmlinux section.
    let bad = rename_symbol(
        &ko,
        ".klp.sym.vmlinux.helper,2",
        ".klp.sym.othrmod.helper,2",
    );
    let keys = run(&bad);
    assert!(
        keys.contains(&"check.klp-rela.object".to_string()),
        "{keys:?}"
    );
    assert!(
        keys.contains(&"check.klp-sym.module-unverified".to_string()),
        "{keys:?}"
    );
    assert_eq!(
        referenced_objects("x", &bad)
            .unwrap()
            .into_iter()
            .collect::<Vec<_>>(),
        vec!["othrmod".to_string()]
    );
}

#[test]
fn klp_rela_sections() {
    let ko = module(&good_spec());
    // sh_flags at 8, sh_type at 4, sh_info at 44.
    let bad = patch_shdr(
        &ko,
        ".klp.rela.",
        8,
        8,
        u64::from(elf::SHF_ALLOC | elf::SHF_INFO_LINK),
    );
    assert_keys(&run(&bad), &["check.klp-rela.flags"]);
    let bad = patch_shdr(&ko, ".klp.rela.", 8, 8, SHF_RELA_LIVEPATCH);
    assert_keys(&run(&bad), &["check.klp-rela.flags"]);
    let bad = patch_shdr(&ko, ".klp.rela.", 4, 4, u64::from(elf::SHT_REL));
    assert_keys(&run(&bad), &["check.klp-rela.type"]);
    let bad = patch_shdr(&ko, ".klp.rela.", 44, 4, 999);
    assert_keys(&run(&bad), &["check.klp-rela.target"]);
    // The first entry of the klp relocation section with its r_info set to `info`.
    let with_first_info = |info: u64| {
        let m = Module::parse("x", &ko).unwrap();
        let e = &m.elf;
        let sec = e
            .sections
            .iter()
            .find(|s| e.sec_name(s).starts_with(KLP_RELA_PREFIX))
            .unwrap();
        let at = sec.sh_offset(e.endian) as usize + 8;
        let mut out = ko.clone();
        out[at..at + 8].copy_from_slice(&info.to_le_bytes());
        out
    };
    // A relocation against an ordinary symbol in the klp section: point the first
    // entry's r_info at printk.
    let printk = {
        let m = Module::parse("x", &ko).unwrap();
        let e = &m.elf;
        e.symtab
            .iter()
            .position(|s| e.sym_name(s) == "printk")
            .unwrap() as u64
    };
    let bad = with_first_info((printk << 32) | u64::from(elf::R_X86_64_PC32));
    let keys = run(&bad);
    assert!(
        keys.contains(&"check.klp-rela.symbol".to_string()),
        "{keys:?}"
    );
    // A relocation naming a symbol past the end of the symbol table.
    let bad = with_first_info((0x00ff_ffffu64 << 32) | u64::from(elf::R_X86_64_PC32));
    assert_keys(&run(&bad), &["check.klp-rela.symbol"]);
    // Relocations that cannot be read (sh_size, at 32, past the end of the file).
    let bad = patch_shdr(&ko, ".klp.rela.", 32, 8, 0xffff_fff0);
    assert_keys(&run(&bad), &["check.klp-rela.type"]);
    // A section name without an object: `.klp.rela.vmlinux..text` as
    // `.klp.rela..vmlinux.text` (the klp symbols then belong to another object, too).
    let name = e_klp_rela_name(&ko);
    let obj_and_sec = name.strip_prefix(KLP_RELA_PREFIX).unwrap();
    let (obj, sec) = obj_and_sec.split_once('.').unwrap();
    let renamed = format!("{KLP_RELA_PREFIX}.{obj}{sec}");
    let keys = run(&rename_symbol(&ko, &name, &renamed));
    assert_keys(&keys, &["check.klp-rela.name", "check.klp-rela.object"]);
    // An object name longer than the kernel's 55 characters.
    let mut spec = good_spec();
    let long = "m".repeat(56);
    spec.refs = vec![format!(".klp.sym.{long}.helper,2"), "printk".into()];
    let keys = run(&module(&spec));
    assert!(
        keys.contains(&"check.klp-rela.name".to_string()),
        "{keys:?}"
    );
}

/// The name of the module's (one) `.klp.rela` section.
fn e_klp_rela_name(ko: &[u8]) -> String {
    let m = Module::parse("x", ko).unwrap();
    let e = &m.elf;
    let names: Vec<String> = e
        .sections
        .iter()
        .map(|s| e.sec_name(s))
        .filter(|n| n.starts_with(KLP_RELA_PREFIX))
        .collect();
    assert_eq!(names.len(), 1, "{names:?}");
    names[0].clone()
}

#[test]
fn replaced_functions() {
    let funcs = |f: Vec<Record>| {
        let mut spec = good_spec();
        spec.manifest.as_mut().unwrap().funcs = f;
        run(&module(&spec))
    };
    let rec = |name: &str, pos, origin| Record {
        objname: VMLINUX.into(),
        name: name.into(),
        sympos: pos,
        origin,
    };
    assert_keys(
        &funcs(vec![rec("untraced", 0, Origin::Global)]),
        &["check.func.no-ftrace"],
    );
    assert_keys(
        &funcs(vec![rec("gone", 0, Origin::Global)]),
        &["check.func.missing"],
    );
    assert_keys(
        &funcs(vec![rec("helper", 0, Origin::Unknown)]),
        &["check.func.position"],
    );
    assert_keys(
        &funcs(vec![rec("helper", 2, Origin::Local("b.c".into()))]),
        &["check.func.wrong-file"],
    );
    assert_keys(
        &funcs(vec![rec("some_var", 0, Origin::Global)]),
        &["check.func.not-function", "check.func.no-ftrace"],
    );
    assert_keys(&funcs(vec![]), &["check.funcs.unknown"]);
    assert_keys(
        &funcs(vec![
            rec("traced", 0, Origin::Global),
            rec("helper", 2, Origin::Local("a.c".into())),
        ]),
        &[],
    );
    // No manifest at all: a module klpgen did not build.
    let mut spec = good_spec();
    spec.manifest = None;
    assert_keys(&run(&module(&spec)), &["check.funcs.unknown"]);
    // A malformed record.
    assert_keys(
        &funcs(vec![rec("traced x", 0, Origin::Global)]),
        &["check.funcs.malformed"],
    );
    // ...or a malformed klp symbol record: the symbols' origins cannot be verified.
    let mut spec = good_spec();
    spec.manifest.as_mut().unwrap().syms[0].name = "helper x".into();
    assert_keys(&run(&module(&spec)), &["check.syms.malformed"]);
    // A target without __mcount_loc.
    let vm = TargetObject::vmlinux("vmlinux", &fake_vmlinux(Some(RELEASE), false)).unwrap();
    assert_eq!(vm.mcount_count(), None);
    assert_keys(
        &run_with(&module(&good_spec()), &vm, None),
        &["check.target.no-mcount"],
    );
}

#[test]
fn undefined_symbols_need_exports() {
    let mut spec = good_spec();
    spec.refs.push("secret_helper".into());
    assert_keys(&run(&module(&spec)), &["check.undefined.secret_helper"]);
    // Without Module.symvers the check is skipped.
    let vm = TargetObject::vmlinux("vmlinux", &fake_vmlinux(Some(RELEASE), true)).unwrap();
    let r = check_module(
        "test.ko",
        &module(&spec),
        &Inputs {
            vmlinux: &vm,
            symvers: None,
            modules: None,
        },
    )
    .unwrap();
    assert!(r.ok(), "{:?}", r.findings);
}

#[test]
fn symvers_of_another_build() {
    let vm = TargetObject::vmlinux("vmlinux", &fake_vmlinux(Some(RELEASE), true)).unwrap();
    let ko = module(&good_spec());
    let run_sv = |sv: &Symvers| {
        let r = check_module(
            "test.ko",
            &ko,
            &Inputs {
                vmlinux: &vm,
                symvers: Some(sv),
                modules: None,
            },
        )
        .unwrap();
        r.findings
    };
    assert!(run_sv(&symvers(&["printk"])).is_empty());
    // Another build's file: it lists an export this vmlinux does not have.
    let f = run_sv(&symvers(&["printk", "other_build_fn"]));
    assert_eq!(f.len(), 1, "{f:?}");
    assert_eq!(f[0].key, "check.target.symvers-mismatch");
    assert!(
        f[0].detail
            .contains("Module.symvers is not the Module.symvers of vmlinux")
            && f[0].detail.contains("other_build_fn"),
        "{}",
        f[0].detail
    );
    // And one without the export the vmlinux has: printk is also undefined in the module.
    let keys: Vec<String> = run_sv(&symvers(&["kmalloc"]))
        .into_iter()
        .map(|f| f.key)
        .collect();
    assert_keys(
        &keys,
        &["check.target.symvers-mismatch", "check.undefined.printk"],
    );
}

#[test]
fn module_targets() {
    // How the module is read: `kallsyms::tests::module_kallsyms_order_and_ftrace`.
    let m = TargetObject::module("m.ko", &target_module()).unwrap();
    let rec = |name: &str, pos| Record {
        objname: "my-mod".into(),
        name: name.into(),
        sympos: pos,
        origin: Origin::Local("m.c".into()),
    };
    let mut spec = good_spec();
    {
        let man = spec.manifest.as_mut().unwrap();
        man.funcs.push(rec("m_func", 0));
        man.syms.push(rec("helper", 2));
    }
    spec.refs.push(".klp.sym.my_mod.helper,2".into());
    // The records say my-mod, the symbol my_mod: the same module.
    spec.manifest
        .as_mut()
        .unwrap()
        .syms
        .last_mut()
        .unwrap()
        .objname = "my_mod".into();
    let ko = module(&spec);
    let vm = TargetObject::vmlinux("vmlinux", &fake_vmlinux(Some(RELEASE), true)).unwrap();
    assert_keys(
        &run_with(&ko, &vm, None),
        &[
            "check.klp-sym.module-unverified",
            "check.func.module-unverified",
        ],
    );
    let none = HashMap::new();
    assert_keys(
        &run_with(&ko, &vm, Some(&none)),
        &["check.klp-sym.module-missing", "check.func.module-missing"],
    );
    let mods: HashMap<String, TargetObject> = [(module_key("my-mod"), m)].into_iter().collect();
    assert_keys(&run_with(&ko, &vm, Some(&mods)), &[]);
    // The same module built for another kernel.
    let other = TargetObject::module("m.ko", &target_module_for("6.12.9-other")).unwrap();
    assert_eq!(other.release.as_deref(), Some("6.12.9-other"));
    let others: HashMap<String, TargetObject> =
        [(module_key("my-mod"), other)].into_iter().collect();
    let r = check_module(
        "test.ko",
        &ko,
        &Inputs {
            vmlinux: &vm,
            symvers: None,
            modules: Some(&others),
        },
    )
    .unwrap();
    let f: Vec<&Finding> = r
        .findings
        .iter()
        .filter(|f| f.key == "check.target.module-mismatch")
        .collect();
    assert_eq!(f.len(), 1, "{:?}", r.findings);
    assert!(
        f[0].detail.contains("6.12.9-other") && f[0].detail.contains(RELEASE),
        "{}",
        f[0].detail
    );
    let bad = rename_symbol(&ko, ".klp.sym.my_mod.helper,2", ".klp.sym.my_mod.helper,3");
    assert_keys(
        &run_with(&bad, &vm, Some(&mods)),
        &["check.klp-sym.position"],
    );
    let mut spec2 = spec;
    spec2
        .manifest
        .as_mut()
        .unwrap()
        .funcs
        .push(rec("m_notrace", 0));
    assert_keys(
        &run_with(&module(&spec2), &vm, Some(&mods)),
        &["check.func.no-ftrace"],
    );
    assert_eq!(
        referenced_objects("x", &ko)
            .unwrap()
            .into_iter()
            .collect::<Vec<_>>(),
        vec!["my-mod".to_string(), "my_mod".to_string()]
    );
}

#[test]
fn garbage_is_an_error_not_a_panic() {
    let vm = TargetObject::vmlinux("vmlinux", &fake_vmlinux(Some(RELEASE), true)).unwrap();
    for bytes in [&b""[..], b"\x7fELF", &[0u8; 64]] {
        assert!(TargetObject::vmlinux("x", bytes).is_err());
        let inputs = Inputs {
            vmlinux: &vm,
            symvers: None,
            modules: None,
        };
        assert!(check_module("x", bytes, &inputs).is_err());
    }
    let ko = module(&good_spec());
    for cut in [16, 64, ko.len() / 2, ko.len() - 1] {
        let inputs = Inputs {
            vmlinux: &vm,
            symvers: None,
            modules: None,
        };
        let _ = check_module("x", &ko[..cut], &inputs);
    }
}

/// A module as kpatch-build makes it: no `.klpgen.*` records; its replaced functions in a
/// `.kpatch.funcs` table of `entry`-byte `kpatch_patch_func`s (56, or 48 without `sympos`),
/// each (name, objname, sympos or old_addr), names and object names in `.kpatch.strings`
/// through relocations against its section symbol; `skip` leaves out the relocation at that
/// offset of the table. Finalised as kpatch's create-klp-module would (klp markings only).
fn kpatch_module(funcs: &[(&str, &str, u64)], entry: u64, skip: Option<u64>) -> Vec<u8> {
    let mut obj = Object::new(BinaryFormat::Elf, Architecture::X86_64, Endianness::Little);
    let text = obj.add_section(Vec::new(), b".text".to_vec(), SectionKind::Text);
    obj.append_section_data(text, &[0x90; 64], 16);
    let mi = obj.add_section(Vec::new(), b".modinfo".to_vec(), SectionKind::ReadOnlyData);
    let info = format!("livepatch=Y\0license=GPL\0vermagic={RELEASE} SMP mod_unload \0");
    obj.append_section_data(mi, info.as_bytes(), 1);
    let strings = obj.add_section(Vec::new(), b".kpatch.strings".to_vec(), SectionKind::Data);
    let table = obj.add_section(Vec::new(), b".kpatch.funcs".to_vec(), SectionKind::Data);
    let mut strtab: Vec<u8> = b"padding\0".to_vec();
    let mut intern = |s: &str| {
        let at = strtab.len() as u64;
        strtab.extend(s.bytes().chain([0]));
        at
    };
    let mut data = Vec::new();
    let mut relocs = Vec::new();
    let strings_sym = obj.section_symbol(strings);
    for (i, &(name, objname, pos)) in funcs.iter().enumerate() {
        let base = i as u64 * entry;
        let new = obj.add_symbol(write::Symbol {
            name: format!("livepatch_{name}_{i}").into_bytes(),
            value: 16 * i as u64,
            size: 16,
            kind: SymbolKind::Text,
            scope: SymbolScope::Compilation,
            weak: false,
            section: SymbolSection::Section(text),
            flags: SymbolFlags::None,
        });
        let mut e = vec![0u8; entry as usize];
        e[8..16].copy_from_slice(&16u64.to_le_bytes());
        let (name_at, obj_at) = if entry == 56 {
            e[32..40].copy_from_slice(&pos.to_le_bytes());
            (40, 48)
        } else {
            e[16..24].copy_from_slice(&pos.to_le_bytes());
            (32, 40)
        };
        data.extend(e);
        relocs.push((base, new, 0));
        relocs.push((base + name_at, strings_sym, intern(name) as i64));
        relocs.push((base + obj_at, strings_sym, intern(objname) as i64));
    }
    obj.append_section_data(strings, &strtab, 1);
    obj.append_section_data(table, &data, 8);
    for (offset, symbol, addend) in relocs {
        if Some(offset) == skip {
            continue;
        }
        obj.add_relocation(
            table,
            Relocation {
                offset,
                symbol,
                addend,
                flags: RelocationFlags::Elf {
                    r_type: elf::R_X86_64_64,
                },
            },
        )
        .unwrap();
    }
    // A klp relocation in the code, as create-klp-module leaves it.
    let klp = obj.add_symbol(write::Symbol {
        name: b".klp.sym.vmlinux.a_only,0".to_vec(),
        value: 0,
        size: 0,
        kind: SymbolKind::Unknown,
        scope: SymbolScope::Linkage,
        weak: false,
        section: SymbolSection::Undefined,
        flags: SymbolFlags::None,
    });
    obj.add_relocation(
        text,
        Relocation {
            offset: 4,
            symbol: klp,
            addend: -4,
            flags: RelocationFlags::Elf {
                r_type: elf::R_X86_64_PC32,
            },
        },
    )
    .unwrap();
    crate::klp::finalize_module("kpatch.ko", &obj.write().unwrap())
        .unwrap()
        .0
}

#[test]
fn modules_kpatch_build_made() {
    let vm = TargetObject::vmlinux("vmlinux", &fake_vmlinux(Some(RELEASE), true)).unwrap();
    let check = |ko: &[u8]| {
        check_module(
            "kpatch.ko",
            ko,
            &Inputs {
                vmlinux: &vm,
                symvers: Some(&symvers(&["printk"])),
                modules: None,
            },
        )
        .unwrap()
    };
    let keys =
        |ko: &[u8]| -> Vec<String> { check(ko).findings.into_iter().map(|f| f.key).collect() };
    // Both helpers are statics of their files; kpatch records no file, so either position is
    // one the kernel accepts.
    let good = kpatch_module(
        &[("traced", "vmlinux", 0), ("helper", "vmlinux", 2)],
        56,
        None,
    );
    let r = check(&good);
    assert!(r.ok(), "{:?}", r.findings);
    assert_eq!(
        (r.functions, r.functions_from, r.klp_symbols),
        (2, Some(".kpatch.funcs"), 1)
    );
    // Each replaced function is checked as klpgen's own records are.
    let one = |name: &str, pos: u64| keys(&kpatch_module(&[(name, "vmlinux", pos)], 56, None));
    assert_keys(&one("helper", 0), &["check.func.position"]);
    assert_keys(&one("helper", 3), &["check.func.position"]);
    assert_keys(&one("gone", 0), &["check.func.missing"]);
    assert_keys(&one("untraced", 0), &["check.func.no-ftrace"]);
    assert_keys(
        &one("some_var", 0),
        &["check.func.not-function", "check.func.no-ftrace"],
    );
    // A module's functions need the module.
    assert_keys(
        &keys(&kpatch_module(&[("m_func", "my_mod", 0)], 56, None)),
        &["check.func.module-unverified"],
    );
    assert_eq!(
        referenced_objects("x", &kpatch_module(&[("m_func", "my_mod", 0)], 56, None))
            .unwrap()
            .into_iter()
            .collect::<Vec<_>>(),
        vec!["my_mod".to_string()]
    );
    // The older 48-byte layout gives vmlinux functions by address (a.c's helper at 0x100 of
    // .text: position 2).
    const TEXT: u64 = 0xffff_ffff_8100_0000;
    let old = |name: &str, addr: u64| keys(&kpatch_module(&[(name, "vmlinux", addr)], 48, None));
    assert_keys(&old("helper", TEXT + 0x100), &[]);
    assert_keys(&old("traced", TEXT + 0x200), &[]);
    assert_keys(&old("helper", TEXT + 0x108), &["check.func.position"]);
    assert_keys(&old("helper", 0), &["check.func.position"]);
    // 336 bytes are six 56-byte entries or seven 48-byte ones: the relocations tell.
    let six: Vec<(&str, &str, u64)> = vec![("traced", "vmlinux", 0); 6];
    let r = check(&kpatch_module(&six, 56, None));
    assert!(r.ok() && r.functions == 6, "{:?}", r.findings);
    let seven: Vec<(&str, &str, u64)> = vec![("traced", "vmlinux", TEXT + 0x200); 7];
    let r = check(&kpatch_module(&seven, 48, None));
    assert!(r.ok() && r.functions == 7, "{:?}", r.findings);
    // A table of neither layout, or a name that is no string.
    for skip in [0, 40, 48] {
        assert_keys(
            &keys(&kpatch_module(&[("traced", "vmlinux", 0)], 56, Some(skip))),
            &["check.funcs.malformed"],
        );
    }
    let bad = kpatch_module(&[("tr\x01ced", "vmlinux", 0)], 56, None);
    assert_keys(&keys(&bad), &["check.funcs.malformed"]);
    // Without the table the functions cannot be verified, as for any foreign module.
    // (The section name is the tail of its relocation section's, which renames both.)
    let gone = rename_symbol(&good, ".rela.kpatch.funcs", ".rela.kpatch.xxxxx");
    assert_keys(&keys(&gone), &["check.funcs.unknown"]);
}

#[test]
fn a_guard_for_another_kernel_is_named() {
    let guarded = |release: &str, version: &str| ModSpec {
        strings: vec![
            (crate::kmod::GUARD_RELEASE.into(), release.into()),
            (crate::kmod::GUARD_VERSION.into(), version.into()),
        ],
        ..good_spec()
    };
    // The fake vmlinux's banner: `Linux version RELEASE (test@host) #1 SMP`.
    let vm = TargetObject::vmlinux("vmlinux", &fake_vmlinux(Some(RELEASE), true)).unwrap();
    let sv = symvers(&["printk"]);
    let check = |spec: &ModSpec| {
        check_module(
            "test.ko",
            &module(spec),
            &Inputs {
                vmlinux: &vm,
                symvers: Some(&sv),
                modules: None,
            },
        )
        .unwrap()
    };
    let ok = check(&guarded(RELEASE, "#1 SMP"));
    assert!(ok.ok(), "{:?}", ok.findings);
    assert_eq!(
        ok.guard,
        Some(GuardTarget {
            release: RELEASE.into(),
            version: "#1 SMP".into()
        })
    );
    for (r, v) in [(RELEASE, "#2 SMP"), ("6.12.9-other", "#1 SMP")] {
        let bad = check(&guarded(r, v));
        let keys: Vec<&str> = bad.findings.iter().map(|f| f.key.as_str()).collect();
        assert_eq!(keys, ["check.target.guard"], "{r} {v}");
        assert!(bad.findings[0]
            .detail
            .contains(&format!("only on kernel {r} \"{v}\"")));
    }
    // A module without a guard (not klpgen's) is not judged by it.
    assert_eq!(check(&good_spec()).guard, None);
}
