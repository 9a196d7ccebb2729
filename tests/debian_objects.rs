//! A real object of an older kernel line: Debian 12's 6.1 (x86-64, with `.parainstructions`,
//! which Linux 6.8 removed and the test kernel lacks), one unit compiled twice with the stock
//! kernel's own command line (its `.cmd` record in the prepared build directory of
//! /work/notes/debian/NOTES.md section 5, under ~/.cache/klpgen-dev/debian/), the patched one
//! with a changed constant in a function that owns paravirt call sites. `klpgen diff` must
//! report that function alone, refuse nothing, and carry exactly its `.parainstructions`
//! entries. Ignored: it needs that build directory, gcc-12 and the directory's objtool;
//! `cargo test --test debian_objects -- --ignored`.

use std::path::{Path, PathBuf};
use std::process::Command;

const VERSION: &str = "6.1.192-3";
const RELEASE: &str = "6.1.0-57-cloud-amd64";

fn cache() -> PathBuf {
    let home = std::env::var_os("HOME").expect("HOME");
    Path::new(&home)
        .join(".cache/klpgen-dev/debian")
        .join(VERSION)
}

/// Compile `unit` (relative to the source tree, without `.c`) from `source` into `out` as the
/// stock build did: its `.cmd` record's compiler line (dependency output dropped, input and
/// output replaced), then objtool with the record's arguments.
fn compile(objtree: &Path, unit: &str, source: &Path, out: &Path) {
    let (dir, base) = unit.rsplit_once('/').expect("a directory");
    let record = std::fs::read_to_string(objtree.join(format!("{dir}/.{base}.o.cmd")))
        .expect("the unit's .cmd record");
    let line = record.lines().next().expect("a command line");
    let cmd = line.split_once(":=").expect("cmd_... :=").1;
    let (cc, objtool) = cmd.split_once(" ; ").expect("compiler ; objtool");
    let obj = format!("{unit}.o");
    let mut args: Vec<String> = Vec::new();
    let mut words = cc.split_whitespace().peekable();
    while let Some(w) = words.next() {
        match w {
            _ if w.starts_with("-Wp,-MMD,") => {}
            "-o" => {
                let _ = words.next();
                args.push("-o".into());
                args.push(out.display().to_string());
            }
            _ if w.ends_with(&format!("/{unit}.c")) => args.push(source.display().to_string()),
            // Quoted defines (`-DKBUILD_MODFILE='"..."'`) lose the shell's quotes.
            _ => args.push(w.replace('\'', "")),
        }
    }
    let status = Command::new(&args[0])
        .args(&args[1..])
        .current_dir(objtree)
        .status()
        .expect("the compiler runs");
    assert!(status.success(), "compiling {unit}: {args:?}");
    let mut ot = objtool.split_whitespace();
    let tool = ot.next().expect("objtool");
    let ot_args: Vec<&str> = ot.filter(|a| *a != obj).collect();
    let status = Command::new(objtree.join(tool))
        .args(&ot_args)
        .arg(out)
        .current_dir(objtree)
        .status()
        .expect("objtool runs");
    assert!(status.success(), "objtool on {unit}");
}

#[test]
#[ignore]
fn a_debian_6_1_unit_with_paravirt_sites_diffs_and_carries_its_entries() {
    let root = cache();
    let objtree = root.join("build-cloud-amd64");
    let src = root.join("src/linux-source-6.1");
    let vmlinux = root.join(format!(
        "linux-image-{RELEASE}-dbg/usr/lib/debug/boot/vmlinux-{RELEASE}"
    ));
    assert!(
        objtree.join("arch/x86/kernel/.ldt.o.cmd").is_file() && vmlinux.is_file(),
        "the Debian {VERSION} build directory and -dbg vmlinux under {}",
        root.display()
    );
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("debian_objects");
    std::fs::create_dir_all(&dir).unwrap();
    let unit = "arch/x86/kernel/ldt";
    let text = std::fs::read_to_string(src.join(format!("{unit}.c"))).unwrap();
    // write_ldt's second `error = -EINVAL;` (the entry-number check).
    let at = text
        .match_indices("error = -EINVAL;")
        .nth(1)
        .expect("write_ldt's checks")
        .0;
    let patched = format!("{}error = -E2BIG;{}", &text[..at], &text[at + 16..]);
    // The same path for both, so that `__FILE__` and DWARF agree.
    let c = dir.join("ldt.c");
    let (orig_o, patched_o) = (dir.join("orig.o"), dir.join("patched.o"));
    std::fs::write(&c, &text).unwrap();
    compile(&objtree, unit, &c, &orig_o);
    std::fs::write(&c, &patched).unwrap();
    compile(&objtree, unit, &c, &patched_o);

    let lp = dir.join("livepatch.o");
    let out = Command::new(env!("CARGO_BIN_EXE_klpgen"))
        .args(["diff", "--format", "json", "--symtab"])
        .arg(&vmlinux)
        .arg("--output")
        .arg(&lp)
        .args([&orig_o, &patched_o])
        .output()
        .unwrap();
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    assert_eq!(
        report["changed"],
        serde_json::json!(["write_ldt"]),
        "{report:#}"
    );
    assert_eq!(report["refused"], serde_json::json!([]), "{report:#}");

    // The livepatch's .parainstructions: write_ldt's sites, 16 bytes each, each relocated
    // against the copy of write_ldt at the offset the patched object's entry has.
    use object::{Object, ObjectSection, ObjectSymbol, RelocationTarget};
    let sites = |path: &Path| -> Vec<u64> {
        let bytes = std::fs::read(path).unwrap();
        let file = object::File::parse(&*bytes).unwrap();
        let sec = file
            .section_by_name(".parainstructions")
            .expect(".parainstructions");
        let mut out: Vec<u64> = sec
            .relocations()
            .filter_map(|(_, r)| {
                let RelocationTarget::Symbol(i) = r.target() else {
                    return None;
                };
                let s = file.symbol_by_index(i).ok()?;
                let name = match s.section_index() {
                    Some(si) if s.kind() == object::SymbolKind::Section => {
                        file.section_by_index(si).ok()?.name().ok()?.to_string()
                    }
                    _ => s.name().ok()?.to_string(),
                };
                (name == "write_ldt"
                    || name == ".text.write_ldt"
                    || name.starts_with("__klpgen_func"))
                .then(|| s.address().wrapping_add(r.addend() as u64))
            })
            .collect();
        out.sort_unstable();
        out
    };
    let want = sites(&patched_o);
    assert_eq!(want.len(), 2, "write_ldt has two paravirt sites in 6.1");
    assert_eq!(sites(&lp), want);
    let bytes = std::fs::read(&lp).unwrap();
    let file = object::File::parse(&*bytes).unwrap();
    let size = file.section_by_name(".parainstructions").unwrap().size();
    assert_eq!(size, 32, "two 16-byte entries");
}
