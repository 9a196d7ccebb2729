//! `klpgen check` on real toolchain output: a fake "vmlinux" linked with `ld -r` from two C
//! files that each define `static int helper()` (tests/fixtures/dup_static), and a livepatch
//! for b.c's `b_entry` produced by the real pipeline (diff, plan, binding against that
//! vmlinux, object writer, klp finalisation). The klp symbol for b.c's helper must get the
//! position of b.c's helper in address order, `klpgen check` must accept it and reject the
//! other position.

use testsupport::gcc;

use std::path::{Path, PathBuf};
use std::process::Command;

use elfdiff::{Diff, Object, PlanOptions};
use object::build::elf::{Builder, SectionData};
use object::elf;
use patchgen::check::{self, Inputs, TargetObject};
use patchgen::kmod::HookFunc;
use patchgen::manifest::Manifest;
use patchgen::target::{bind_externals, Binding, Symvers, TargetSymtab};

const KLPGEN: &str = env!("CARGO_BIN_EXE_klpgen");
const RELEASE: &str = "6.12.0-klpgen-fixture";

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/dup_static")
        .join(name)
}

fn workdir() -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join("check-dup-static");
    std::fs::create_dir_all(&d).unwrap();
    d
}

use gcc::run;

fn gcc(src: &str, out: &Path, extra: &[&str]) {
    run(Command::new("gcc")
        .args(gcc::KERNEL_CFLAGS)
        .args(extra)
        .arg(fixture(src))
        .arg("-o")
        .arg(out));
}

/// Objects of a.c, b.c and banner.c, and the fake vmlinux linked from them: `reversed`
/// places b.c's code first while its symbols stay second in the symbol table.
fn fake_vmlinux(dir: &Path, reversed: bool) -> PathBuf {
    for f in ["a", "b", "banner"] {
        gcc(&format!("{f}.c"), &dir.join(format!("{f}.o")), &[]);
    }
    let out = dir.join(if reversed {
        "vmlinux-rev.o"
    } else {
        "vmlinux.o"
    });
    let mut ld = Command::new("ld");
    ld.arg("-r").arg("-o").arg(&out);
    if reversed {
        let script = dir.join("reversed.lds");
        std::fs::write(
            &script,
            "SECTIONS { .text : { *b.o(.text) *a.o(.text) } }\n",
        )
        .unwrap();
        ld.arg("-T").arg(script);
    }
    ld.args(["a.o", "b.o", "banner.o"].map(|f| dir.join(f)));
    run(&mut ld);
    out
}

/// A livepatch module for the b.c change, built against `vmlinux` by klpgen's pipeline.
/// `force_sympos` replaces the position the binding computed (a simulated binding bug).
fn livepatch(dir: &Path, vmlinux: &[u8], force_sympos: Option<u64>) -> (Vec<u8>, Vec<Binding>) {
    let (op, pp) = (dir.join("b-orig.o"), dir.join("b-patched.o"));
    gcc("b.c", &op, &["-ffunction-sections", "-fdata-sections"]);
    gcc(
        "b.c",
        &pp,
        &["-ffunction-sections", "-fdata-sections", "-DPATCHED"],
    );
    let (ob, pb) = (std::fs::read(&op).unwrap(), std::fs::read(&pp).unwrap());
    let orig = Object::parse("b.o (original)", &ob).unwrap();
    let patched = Object::parse("b.o (patched)", &pb).unwrap();
    let diff = Diff::new(&orig, &patched);
    assert_eq!(diff.report().changed, vec!["b_entry".to_string()]);
    let plan = diff.plan(&PlanOptions::default()).unwrap();
    let symtab = TargetSymtab::parse("vmlinux", vmlinux).unwrap();
    // What a kernel exports to modules, as far as this code needs.
    let symvers = Symvers::parse(
        "Module.symvers",
        "0x0\t__fentry__\tvmlinux\tEXPORT_SYMBOL\t\n0x0\t__x86_return_thunk\tvmlinux\tEXPORT_SYMBOL\t\n",
    )
    .unwrap();
    let mut bindings = bind_externals(&plan, "vmlinux", &symtab, &symvers).unwrap();
    if let Some(p) = force_sympos {
        for b in &mut bindings {
            if let Binding::Klp { name, sympos, .. } = b {
                if name == "helper" {
                    *sympos = p;
                }
            }
        }
    }
    let funcs: Vec<HookFunc> = plan
        .funcs
        .iter()
        .enumerate()
        .map(|(i, f)| HookFunc {
            old_name: f.old_name.clone(),
            sympos: symtab
                .locate(
                    &elfdiff::plan::External {
                        name: f.old_name.clone(),
                        local: f.old_local,
                        undefined: false,
                    },
                    plan.file_name.as_deref(),
                    &plan.orig_locals,
                )
                .unwrap(),
            new_symbol: patchgen::writer::new_func_alias(i),
        })
        .collect();
    let obj = patchgen::writer::write_patch_object(&plan, &bindings, 0).unwrap();
    let mut manifest = Manifest::default();
    manifest.add_unit("vmlinux", &plan, &bindings, &funcs);

    // kbuild would link the hook in and add .modinfo; the hook does not matter here.
    let mut b = Builder::read(&*obj).unwrap();
    let s = b.sections.add();
    s.name = b".modinfo"[..].into();
    s.sh_type = elf::SHT_PROGBITS;
    s.sh_flags = u64::from(elf::SHF_ALLOC);
    s.sh_addralign = 1;
    s.data = SectionData::Data(
        format!("livepatch=Y\0license=GPL\0vermagic={RELEASE} SMP mod_unload \0")
            .into_bytes()
            .into(),
    );
    let mut linked = Vec::new();
    b.write(&mut linked).unwrap();
    let (ko, _) =
        patchgen::klp::finalize_module_with("livepatch-dup.ko", &linked, Some(&manifest)).unwrap();
    (ko, bindings)
}

fn helper_binding(bindings: &[Binding]) -> String {
    let names: Vec<String> = bindings
        .iter()
        .filter(|b| matches!(b, Binding::Klp { name, .. } if name == "helper"))
        .map(Binding::symbol_name)
        .collect();
    assert_eq!(names.len(), 1, "{bindings:?}");
    names[0].clone()
}

/// `klpgen check KO --vmlinux VMLINUX`: (exit code, stdout + stderr).
fn klpgen_check(ko: &Path, vmlinux: &Path) -> (i32, String) {
    let out = Command::new(KLPGEN)
        .arg("check")
        .arg(ko)
        .arg("--vmlinux")
        .arg(vmlinux)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

/// Same-length replacement of a NUL-terminated string in the module.
fn replace_string(ko: &[u8], from: &str, to: &str) -> Vec<u8> {
    assert_eq!(from.len(), to.len());
    let pat: Vec<u8> = from.bytes().chain([0]).collect();
    let at = ko
        .windows(pat.len())
        .position(|w| w == pat.as_slice())
        .unwrap_or_else(|| panic!("{from} not in the module"));
    let mut out = ko.to_vec();
    out[at..at + from.len()].copy_from_slice(to.as_bytes());
    out
}

fn check_case(reversed: bool, right: u64, wrong: u64) {
    let dir = workdir().join(if reversed { "rev" } else { "fwd" });
    std::fs::create_dir_all(&dir).unwrap();
    let vm_path = fake_vmlinux(&dir, reversed);
    let vm = std::fs::read(&vm_path).unwrap();

    let (ko, bindings) = livepatch(&dir, &vm, None);
    assert_eq!(
        helper_binding(&bindings),
        format!(".klp.sym.vmlinux.helper,{right}")
    );
    let ko_path = dir.join("livepatch-dup.ko");
    std::fs::write(&ko_path, &ko).unwrap();

    // The library, with the report's numbers.
    let target = TargetObject::vmlinux("vmlinux", &vm).unwrap();
    assert_eq!(target.release.as_deref(), Some(RELEASE));
    let report = check::check_module(
        "livepatch-dup.ko",
        &ko,
        &Inputs {
            vmlinux: &target,
            symvers: None,
            modules: None,
        },
    )
    .unwrap();
    assert!(report.ok(), "{:?}", report.findings);
    assert_eq!(report.functions, 1);
    assert!(report.klp_symbols >= 1);

    // The CLI accepts it...
    let (code, text) = klpgen_check(&ko_path, &vm_path);
    assert_eq!(code, 0, "{text}");
    assert!(text.starts_with("OK "), "{text}");

    // ...and rejects the other position, whether the name was altered afterwards or the
    // binding itself was wrong.
    let altered = replace_string(
        &ko,
        &format!(".klp.sym.vmlinux.helper,{right}"),
        &format!(".klp.sym.vmlinux.helper,{wrong}"),
    );
    let bad_path = dir.join("livepatch-dup-altered.ko");
    std::fs::write(&bad_path, &altered).unwrap();
    let (code, text) = klpgen_check(&bad_path, &vm_path);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("[check.klp-sym.wrong-file]"), "{text}");

    let (misbound, _) = livepatch(&dir, &vm, Some(wrong));
    let bad_path = dir.join("livepatch-dup-misbound.ko");
    std::fs::write(&bad_path, &misbound).unwrap();
    let (code, text) = klpgen_check(&bad_path, &vm_path);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("[check.klp-sym.wrong-file]"), "{text}");

    // Position 0 is ambiguous with two helpers.
    let (ambiguous, _) = livepatch(&dir, &vm, Some(0));
    let bad_path = dir.join("livepatch-dup-zero.ko");
    std::fs::write(&bad_path, &ambiguous).unwrap();
    let (code, text) = klpgen_check(&bad_path, &vm_path);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("[check.klp-sym.position]"), "{text}");
}

#[test]
fn second_file_helper_is_position_two() {
    check_case(false, 2, 1);
}

#[test]
fn position_follows_addresses_not_the_symbol_table() {
    check_case(true, 1, 2);
}

#[test]
fn replaced_function_must_be_ftrace_able() {
    // The target's __mcount_loc (relocations in a relocatable vmlinux) covers b_entry; a
    // target built without -mrecord-mcount has no table, and the check says so.
    let dir = workdir().join("nomcount");
    std::fs::create_dir_all(&dir).unwrap();
    let vm_path = fake_vmlinux(&dir, false);
    let vm = std::fs::read(&vm_path).unwrap();
    let (ko, _) = livepatch(&dir, &vm, None);
    let target = TargetObject::vmlinux("vmlinux", &vm).unwrap();
    assert!(target.mcount_count().is_some_and(|n| n >= 4));

    let flags: Vec<&str> = gcc::KERNEL_CFLAGS
        .iter()
        .copied()
        .filter(|f| *f != "-mrecord-mcount")
        .collect();
    for f in ["a", "b", "banner"] {
        run(Command::new("gcc")
            .args(&flags)
            .arg(fixture(&format!("{f}.c")))
            .arg("-o")
            .arg(dir.join(format!("{f}.o"))));
    }
    let plain = dir.join("vmlinux-nomcount.o");
    run(Command::new("ld")
        .arg("-r")
        .arg("-o")
        .arg(&plain)
        .args(["a.o", "b.o", "banner.o"].map(|f| dir.join(f))));
    let ko_path = dir.join("livepatch-dup.ko");
    std::fs::write(&ko_path, &ko).unwrap();
    let (code, text) = klpgen_check(&ko_path, &plain);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("[check.target.no-mcount]"), "{text}");

    // b_entry present but notrace in the target: no __mcount_loc entry for it.
    std::fs::create_dir_all(dir.join("notrace")).unwrap();
    let notrace = dir.join("notrace/b.c");
    let src = std::fs::read_to_string(fixture("b.c")).unwrap().replace(
        "int b_entry(int x)",
        "__attribute__((no_instrument_function)) int b_entry(int x)",
    );
    std::fs::write(&notrace, src).unwrap();
    run(Command::new("gcc")
        .args(gcc::KERNEL_CFLAGS)
        .arg(&notrace)
        .arg("-o")
        .arg(dir.join("b.o")));
    for f in ["a", "banner"] {
        gcc(&format!("{f}.c"), &dir.join(format!("{f}.o")), &[]);
    }
    let nt = dir.join("vmlinux-notrace.o");
    run(Command::new("ld")
        .arg("-r")
        .arg("-o")
        .arg(&nt)
        .args(["a.o", "b.o", "banner.o"].map(|f| dir.join(f))));
    let (code, text) = klpgen_check(&ko_path, &nt);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("[check.func.no-ftrace]"), "{text}");
    assert!(!text.contains("klp-sym"), "{text}");
}
