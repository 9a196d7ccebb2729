//! `klpgen list` on a made-up sysfs tree (the hidden `--sysfs DIR`) and modules directory:
//! the state of each livepatch, its objects and functions, the module file found by build-id
//! (not by name alone), klpgen's records read from it and compared with sysfs, modules of other
//! builders, files of another build, symlinks not followed; the JSON fields are exactly those
//! docs/list.md documents. The same command runs against a real guest's sysfs in
//! `cargo xtask e2e` (xtask/src/listcheck.rs).

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use object::write::Object;
use object::SectionKind;
use patchgen::manifest::{Manifest, Origin, Record};

const KLPGEN: &str = env!("CARGO_BIN_EXE_klpgen");

/// A raw GNU build-id note, as the kernel shows it in /sys/module/<m>/notes/.
fn note(id: &[u8]) -> Vec<u8> {
    let mut n = Vec::new();
    n.extend(4u32.to_le_bytes());
    n.extend((id.len() as u32).to_le_bytes());
    n.extend(3u32.to_le_bytes());
    n.extend(b"GNU\0");
    n.extend(id);
    n.resize(n.len().div_ceil(4) * 4, 0);
    n
}

/// A stand-in `.ko`: `.modinfo`, the build-id note, and klpgen's records when given.
fn ko(build_id: &[u8], description: &str, manifest: Option<&Manifest>) -> Vec<u8> {
    let mut o: Object<'_> = testsupport::objwrite::object();
    let s = o.add_section(
        Vec::new(),
        b".note.gnu.build-id".to_vec(),
        SectionKind::Note,
    );
    o.append_section_data(s, &note(build_id), 4);
    let s = o.add_section(Vec::new(), b".modinfo".to_vec(), SectionKind::ReadOnlyData);
    o.append_section_data(
        s,
        format!("livepatch=Y\0license=GPL\0description={description}\0").as_bytes(),
        1,
    );
    if let Some(m) = manifest {
        for (name, data) in [
            (".klpgen.funcs", m.funcs_text()),
            (".klpgen.syms", m.syms_text()),
        ] {
            let s = o.add_section(Vec::new(), name.as_bytes().to_vec(), SectionKind::Metadata);
            o.append_section_data(s, &data, 1);
        }
    }
    o.write().unwrap()
}

fn write(path: &Path, data: impl AsRef<[u8]>) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, data).unwrap();
}

fn rec(objname: &str, name: &str, sympos: u64, origin: Origin) -> Record {
    Record {
        objname: objname.into(),
        name: name.into(),
        sympos,
        origin,
    }
}

/// One livepatch directory: attributes and `object -> [(function,sympos dir, patched)]`.
fn patch_dir(
    sysfs: &Path,
    name: &str,
    attrs: &[(&str, &str)],
    objects: &[(&str, Option<&str>, &[&str])],
) {
    let d = sysfs.join("kernel/livepatch").join(name);
    fs::create_dir_all(&d).unwrap();
    for (a, v) in attrs {
        write(&d.join(a), format!("{v}\n"));
    }
    for (obj, patched, funcs) in objects {
        let od = d.join(obj);
        fs::create_dir_all(&od).unwrap();
        if let Some(p) = patched {
            write(&od.join("patched"), format!("{p}\n"));
        }
        for f in *funcs {
            fs::create_dir_all(od.join(f)).unwrap();
        }
    }
}

fn module_dir(sysfs: &Path, name: &str, build_id: Option<&[u8]>) {
    let d = sysfs.join("module").join(name);
    write(&d.join("initstate"), "live\n");
    write(&d.join("taint"), "K\n");
    if let Some(id) = build_id {
        write(&d.join("notes/.note.gnu.build-id"), note(id));
    }
}

struct Fake {
    _tmp: tempfile::TempDir,
    sysfs: PathBuf,
    mods: PathBuf,
}

const FIX_ID: &[u8] = &[0x11, 0x22, 0x33, 0x44];

/// Four livepatches: `livepatch_fix` (klpgen's, enabled, file in extra/ with its build-id,
/// a vmlinux and a module object), `livepatch_other` (another builder's, disabled, in
/// transition, an older kernel without `replace` and `patched`), `livepatch_stale` (only a
/// file of another build), `livepatch_gone` (no file; one behind a symlink that must not be
/// followed).
fn fake() -> Fake {
    let tmp = tempfile::tempdir().unwrap();
    let sysfs = tmp.path().join("sys");
    let mods = tmp.path().join("lib/modules/6.12.0");
    patch_dir(
        &sysfs,
        "livepatch_fix",
        &[
            ("enabled", "1"),
            ("transition", "0"),
            ("replace", "1"),
            ("force", ""),
        ],
        &[
            ("vmlinux", Some("1"), &["version_proc_show,1", "dup_fn,2"]),
            ("ext4", Some("0"), &["ext4_fill_super,1"]),
        ],
    );
    module_dir(&sysfs, "livepatch_fix", Some(FIX_ID));
    let manifest = Manifest {
        funcs: vec![
            rec("vmlinux", "version_proc_show", 0, Origin::Global),
            rec(
                "vmlinux",
                "dup_fn",
                2,
                Origin::Local("fs/proc/version.c".into()),
            ),
            rec("ext4", "ext4_fill_super", 0, Origin::Global),
        ],
        syms: vec![rec(
            "vmlinux",
            "helper",
            2,
            Origin::Local("version.c".into()),
        )],
    };
    write(
        &mods.join("extra/livepatch-fix.ko"),
        ko(
            FIX_ID,
            "livepatch built by klpgen from fix.patch",
            Some(&manifest),
        ),
    );
    // A stale copy of another build, elsewhere in the tree: not taken.
    write(
        &mods.join("updates/old/livepatch_fix.ko"),
        ko(
            &[9, 9],
            "livepatch built by klpgen from fix.patch",
            Some(&manifest),
        ),
    );

    patch_dir(
        &sysfs,
        "livepatch_other",
        &[("enabled", "0"), ("transition", "1")],
        &[("vmlinux", None, &["cmdline_proc_show,1"])],
    );
    module_dir(&sysfs, "livepatch_other", Some(&[0xaa, 0xbb]));
    write(
        &mods.join("updates/livepatch-other.ko"),
        ko(&[0xaa, 0xbb], "kpatch-built", None),
    );

    patch_dir(
        &sysfs,
        "livepatch_stale",
        &[
            ("enabled", "1"),
            ("transition", "0"),
            ("replace", "0"),
            ("stack_order", "2"),
        ],
        &[("vmlinux", Some("1"), &["meminfo_proc_show,1"])],
    );
    module_dir(&sysfs, "livepatch_stale", Some(&[1, 2, 3]));
    write(
        &mods.join("livepatch-stale.ko"),
        ko(
            &[4, 5, 6],
            "livepatch built by klpgen from stale.patch",
            Some(&Manifest::default()),
        ),
    );

    patch_dir(
        &sysfs,
        "livepatch_gone",
        &[("enabled", "1"), ("transition", "0"), ("replace", "1")],
        &[("vmlinux", Some("1"), &["uptime_proc_show,1"])],
    );
    module_dir(&sysfs, "livepatch_gone", None);
    // `build` of a modules directory points at a kernel tree: never walked.
    let elsewhere = tmp.path().join("kernel-tree");
    write(
        &elsewhere.join("livepatch-gone.ko"),
        ko(&[7], "behind a symlink", None),
    );
    std::os::unix::fs::symlink(&elsewhere, mods.join("build")).unwrap();
    Fake {
        _tmp: tmp,
        sysfs,
        mods,
    }
}

fn list(f: &Fake, format: &str) -> String {
    let o = Command::new(KLPGEN)
        .arg("list")
        .arg("--sysfs")
        .arg(&f.sysfs)
        .arg("--modules")
        .arg(&f.mods)
        .args(["--format", format])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "klpgen list failed: {err}");
    String::from_utf8(o.stdout).unwrap()
}

fn json(f: &Fake) -> serde_json::Value {
    serde_json::from_str(&list(f, "json")).unwrap()
}

fn patch<'a>(doc: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    doc["livepatches"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == name)
        .unwrap_or_else(|| panic!("{name} not listed"))
}

#[test]
fn a_klpgen_module_is_found_by_build_id_and_its_records_read() {
    let f = fake();
    let doc = json(&f);
    assert_eq!(doc["schema"], "klpgen-list/1");
    let names: Vec<&str> = doc["livepatches"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "livepatch_fix",
            "livepatch_gone",
            "livepatch_other",
            "livepatch_stale"
        ]
    );
    let p = patch(&doc, "livepatch_fix");
    assert_eq!(p["enabled"], true);
    assert_eq!(p["transition"], false);
    assert_eq!(p["replace"], true);
    assert_eq!(p["stack_order"], serde_json::Value::Null);
    // vmlinux first, functions sorted, sysfs positions as shown there.
    assert_eq!(
        p["objects"],
        serde_json::json!([
            {"name": "vmlinux", "patched": true, "functions": [
                {"name": "dup_fn", "sympos": 2}, {"name": "version_proc_show", "sympos": 1}]},
            {"name": "ext4", "patched": false, "functions": [
                {"name": "ext4_fill_super", "sympos": 1}]},
        ])
    );
    let m = &p["module"];
    assert_eq!(m["build_id"], "11223344");
    assert_eq!(m["state"], "live");
    assert_eq!(m["taint"], "K");
    assert_eq!(m["file_status"], "verified");
    let file = f.mods.join("extra/livepatch-fix.ko");
    assert_eq!(m["file"], file.display().to_string());
    assert_eq!(
        m["other_files"],
        serde_json::json!([f
            .mods
            .join("updates/old/livepatch_fix.ko")
            .display()
            .to_string()])
    );
    use sha2::Digest;
    let sha = sha2::Sha256::digest(fs::read(&file).unwrap());
    let sha: String = sha.iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(m["sha256"], sha);
    assert_eq!(m["description"], "livepatch built by klpgen from fix.patch");
    assert_eq!(m["built_by"], "klpgen");
    let k = &m["klpgen"];
    assert_eq!(k["matches_sysfs"], true, "{k}");
    assert_eq!(k["differences"], serde_json::json!([]));
    assert_eq!(
        k["functions"][1],
        serde_json::json!({"object": "vmlinux", "name": "dup_fn", "sympos": 2, "origin": "local fs/proc/version.c"})
    );
    assert_eq!(
        k["symbols"],
        serde_json::json!([{"object": "vmlinux", "name": "helper", "sympos": 2, "origin": "local version.c"}])
    );
}

#[test]
fn other_builders_other_builds_and_missing_files_are_said() {
    let f = fake();
    let doc = json(&f);
    let other = patch(&doc, "livepatch_other");
    assert_eq!(other["enabled"], false);
    assert_eq!(other["transition"], true);
    assert_eq!(other["replace"], serde_json::Value::Null);
    assert_eq!(other["objects"][0]["patched"], serde_json::Value::Null);
    assert_eq!(other["module"]["file_status"], "verified");
    assert_eq!(other["module"]["built_by"], "other");
    assert_eq!(other["module"]["klpgen"], serde_json::Value::Null);

    let stale = patch(&doc, "livepatch_stale");
    assert_eq!(stale["stack_order"], 2);
    assert_eq!(stale["replace"], false);
    assert_eq!(stale["module"]["file_status"], "other-build");
    assert_eq!(stale["module"]["file"], serde_json::Value::Null);
    assert_eq!(stale["module"]["built_by"], serde_json::Value::Null);

    // Not found: the copy behind the `build` symlink is not looked at.
    let gone = patch(&doc, "livepatch_gone");
    assert_eq!(gone["module"]["file_status"], "not-found");
    assert_eq!(gone["module"]["build_id"], serde_json::Value::Null);
    assert_eq!(gone["module"]["other_files"], serde_json::json!([]));

    let text = list(&f, "text");
    for want in [
        "livepatch_fix: enabled, no transition, replace\n",
        "  vmlinux (patched): dup_fn,2 version_proc_show\n",
        "  ext4 (not patched: not loaded): ext4_fill_super\n",
        &format!(
            "  module file: {} (build-id 11223344, matches)\n",
            f.mods.join("extra/livepatch-fix.ko").display()
        ),
        "  built by klpgen: livepatch built by klpgen from fix.patch\n",
        "    replaces: vmlinux version_proc_show (global), vmlinux dup_fn (local fs/proc/version.c), ext4 ext4_fill_super (global)\n",
        "    klp symbols: vmlinux.helper,2\n",
        "livepatch_other: disabled, in transition\n",
        "  not built by klpgen (no .klpgen.funcs records)\n",
        "livepatch_stale: enabled, no transition, stacked (no replace), stack order 2\n",
        "  module file: none with the loaded build-id 010203: ",
        &format!(
            "  module file: no livepatch-gone.ko under {} (give --modules DIR)\n",
            f.mods.display()
        ),
    ] {
        assert!(text.contains(want), "text lacks {want:?}:\n{text}");
    }
    assert!(!text.contains("warning"), "{text}");
}

#[test]
fn records_that_disagree_with_sysfs_are_reported() {
    let f = fake();
    // The kernel shows one more function than the file records: not this build's module
    // after all, or a doctored file.
    fs::create_dir_all(
        f.sysfs
            .join("kernel/livepatch/livepatch_fix/vmlinux/extra_fn,1"),
    )
    .unwrap();
    let doc = json(&f);
    let k = &patch(&doc, "livepatch_fix")["module"]["klpgen"];
    assert_eq!(k["matches_sysfs"], false);
    assert_eq!(
        k["differences"],
        serde_json::json!(["sysfs only: vmlinux extra_fn,1"])
    );
    let text = list(&f, "text");
    assert!(
        text.contains("    warning: records and sysfs differ: sysfs only: vmlinux extra_fn,1\n"),
        "{text}"
    );
}

#[test]
fn no_livepatch_support_and_no_livepatches() {
    let tmp = tempfile::tempdir().unwrap();
    let run = |sysfs: &Path| {
        Command::new(KLPGEN)
            .arg("list")
            .arg("--sysfs")
            .arg(sysfs)
            .arg("--modules")
            .arg(tmp.path())
            .output()
            .unwrap()
    };
    let o = run(tmp.path());
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("kernel/livepatch does not exist"), "{err}");
    assert!(err.contains("CONFIG_LIVEPATCH"), "{err}");
    fs::create_dir_all(tmp.path().join("kernel/livepatch")).unwrap();
    let o = run(tmp.path());
    assert!(o.status.success());
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        "no livepatches loaded\n"
    );
    // `--sysfs` is for tests: not in the help.
    let help = Command::new(KLPGEN)
        .args(["list", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(help.contains("--modules"), "{help}");
    assert!(!help.contains("--sysfs"), "{help}");
}

/// Every field path of a JSON value (`a.b`, arrays as `a[].b`).
fn paths(v: &serde_json::Value, prefix: &str, out: &mut BTreeSet<String>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, x) in m {
                let p = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                out.insert(p.clone());
                paths(x, &p, out);
            }
        }
        serde_json::Value::Array(a) => {
            for x in a {
                paths(x, &format!("{prefix}[]"), out);
            }
        }
        _ => {}
    }
}

#[test]
fn every_json_field_is_documented_and_every_documented_field_exists() {
    let f = fake();
    let mut got = BTreeSet::new();
    paths(&json(&f), "", &mut got);
    let doc =
        fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/list.md")).unwrap();
    // The table's first column: | `path` | ...
    let documented: BTreeSet<String> = doc
        .lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| l.split_once('`').map(|(p, _)| p.to_string()))
        .collect();
    let undocumented: Vec<&String> = got.difference(&documented).collect();
    assert!(
        undocumented.is_empty(),
        "not in docs/list.md: {undocumented:?}"
    );
    let absent: Vec<&String> = documented.difference(&got).collect();
    assert!(
        absent.is_empty(),
        "docs/list.md documents what the output lacks: {absent:?}"
    );
}
