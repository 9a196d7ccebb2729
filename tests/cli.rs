//! The klpgen CLI on a miniature kernel tree with a stand-in `make` (a script that compiles the
//! requested units with gcc): clear answers to bad input, and a tree left exactly as it was
//! after a failed or interrupted build.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant, SystemTime};

const KLPGEN: &str = env!("CARGO_BIN_EXE_klpgen");

const CONFIG: &str = "CONFIG_LIVEPATCH=y\nCONFIG_MODULES=y\nCONFIG_KALLSYMS_ALL=y\nCONFIG_SYSFS=y\nCONFIG_DYNAMIC_FTRACE_WITH_ARGS=y\n";

/// Stand-in for make: `olddefconfig` succeeds; each requested `x.o` is compiled from `x.c`
/// (with `KCFLAGS`, which it also appends to `O/kcflags.log` per build) unless it is newer
/// than `x.c`;
/// a source containing SLOW_MARK makes it announce itself and sleep (to be interrupted).
const FAKE_MAKE: &str = r#"#!/bin/bash
src=""; out=""; units=""; prev=""; kcflags=""
for a in "$@"; do
  if [ "$prev" = "-C" ]; then src="$a"; fi
  case "$a" in O=*) out="${a#O=}";; KCFLAGS=*) kcflags="${a#KCFLAGS=}";; *.o) units="$units $a";; esac
  prev="$a"
done
if [ -n "$units" ]; then mkdir -p "$out"; echo "$kcflags" >>"$out/kcflags.log"; fi
for u in $units; do
  c="$src/${u%.o}.c"
  # Like make: an object newer than its source is up to date.
  if [ "$out/$u" -nt "$c" ]; then continue; fi
  mkdir -p "$(dirname "$out/$u")"
  gcc -O2 -c -ffunction-sections -fdata-sections -pg -mfentry -mrecord-mcount $kcflags "$c" -o "$out/$u" || exit 2
  if grep -q SLOW_MARK "$c"; then touch "$out/sleeping"; sleep 30; fi
  if [ -n "$FAKE_MAKE_SLEEP" ]; then sleep "$FAKE_MAKE_SLEEP"; fi
done
exit 0
"#;

struct Tree {
    _tmp: tempfile::TempDir,
    root: PathBuf,
}

impl Tree {
    fn new(config: &str) -> Tree {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().to_path_buf();
        let src = root.join("src");
        fs::create_dir_all(src.join("kernel")).unwrap();
        fs::create_dir_all(src.join("lib")).unwrap();
        fs::write(src.join("Makefile"), "# miniature tree\n").unwrap();
        fs::write(
            src.join("lib/demo.c"),
            "int demo(int x)\n{\n\treturn x + 1;\n}\n",
        )
        .unwrap();
        let build = root.join("build");
        fs::create_dir_all(&build).unwrap();
        fs::write(build.join(".config"), config).unwrap();
        // Any ELF object compiled by the same gcc stands in for vmlinux (its .comment names
        // the compiler klpgen compares with).
        let cc = Command::new("gcc")
            .args(["-c", "-o"])
            .arg(build.join("vmlinux"))
            .arg(src.join("lib/demo.c"))
            .status()
            .unwrap();
        assert!(cc.success());
        fs::write(build.join("Module.symvers"), b"").unwrap();
        let bin = root.join("bin");
        fs::create_dir_all(&bin).unwrap();
        fs::write(bin.join("make"), FAKE_MAKE).unwrap();
        fs::set_permissions(bin.join("make"), fs::Permissions::from_mode(0o755)).unwrap();
        Tree { _tmp: tmp, root }
    }
    fn src(&self) -> PathBuf {
        self.root.join("src")
    }
    fn patch(&self, name: &str, body: &str) -> PathBuf {
        let p = self.root.join(name);
        fs::write(&p, body).unwrap();
        p
    }
    fn command(&self, patch: &Path) -> Command {
        let mut c = Command::new(KLPGEN);
        let path = format!(
            "{}:{}",
            self.root.join("bin").display(),
            std::env::var("PATH").unwrap_or_default()
        );
        c.env("PATH", path)
            .env("KLPGEN_CACHE_DIR", self.root.join("cache"))
            .arg("build")
            .arg("--sourcedir")
            .arg(self.src())
            .arg("--builddir")
            .arg(self.root.join("build"))
            .arg("-o")
            .arg(self.root.join("out"))
            .arg(patch);
        c
    }
    /// Wait until the stand-in make sleeps in the patched build (SLOW_MARK); returns klpgen's
    /// build directory for the tree.
    fn wait_for_patched_build(&self) -> PathBuf {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let found = fs::read_dir(self.root.join("cache/trees"))
                .ok()
                .and_then(|mut d| d.next())
                .and_then(|e| e.ok())
                .map(|e| e.path().join("kbuild"))
                .filter(|k| k.join("sleeping").exists());
            if let Some(k) = found {
                return k;
            }
            assert!(
                Instant::now() < deadline,
                "stand-in make never reached the patched build"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn snapshot(&self) -> (Vec<u8>, SystemTime) {
        let p = self.src().join("lib/demo.c");
        (
            fs::read(&p).unwrap(),
            fs::metadata(&p).unwrap().modified().unwrap(),
        )
    }
}

const GOOD_PATCH: &str = "--- a/lib/demo.c\n+++ b/lib/demo.c\n@@ -1,4 +1,4 @@\n int demo(int x)\n {\n-\treturn x + 1;\n+\treturn x + 2; /* SLOW_MARK */\n }\n";

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn missing_tree_is_named() {
    let o = Command::new(KLPGEN)
        .args(["build", "--sourcedir", "/nonexistent/linux", "x.patch"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("/nonexistent/linux does not exist"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn config_without_livepatch_names_the_option() {
    let t = Tree::new(&CONFIG.replace("CONFIG_LIVEPATCH=y\n", "# CONFIG_LIVEPATCH is not set\n"));
    let p = t.patch("p.patch", GOOD_PATCH);
    let o = t.command(&p).output().unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("CONFIG_LIVEPATCH is not set"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn patch_that_does_not_apply_leaves_tree_alone() {
    let t = Tree::new(CONFIG);
    let before = t.snapshot();
    let p = t.patch(
        "bad.patch",
        "--- a/lib/demo.c\n+++ b/lib/demo.c\n@@ -1,4 +1,4 @@\n int demo(int x)\n {\n-\treturn x * 9;\n+\treturn x * 8;\n }\n",
    );
    let o = t.command(&p).output().unwrap();
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(err.contains("does not apply"), "{err}");
    assert!(
        err.contains("FAILED") || err.contains("hunk"),
        "patch's own message expected: {err}"
    );
    assert_eq!(t.snapshot(), before);
}

#[test]
fn interrupted_build_restores_the_tree() {
    let t = Tree::new(CONFIG);
    let before = t.snapshot();
    let p = t.patch("slow.patch", GOOD_PATCH);
    let child = t
        .command(&p)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until the stand-in make is building the patched unit, then interrupt klpgen.
    let marker = t.wait_for_patched_build().join("sleeping");
    assert!(marker.exists());
    assert_ne!(
        t.snapshot().0,
        before.0,
        "the patch should be applied at this point"
    );
    let kill = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let o = child.wait_with_output().unwrap();
    assert_ne!(o.status.code(), Some(0));
    assert!(stderr(&o).contains("interrupted"), "{}", stderr(&o));
    assert_eq!(
        t.snapshot(),
        before,
        "source or its time stamp not restored"
    );
    // No journal is left behind: the next run has nothing to recover.
    let journal = marker
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("journal.json");
    assert!(!journal.exists());
}

#[test]
fn relative_patch_path_is_found() {
    let t = Tree::new(CONFIG);
    let before = t.snapshot();
    t.patch("rel.patch", &GOOD_PATCH.replace(" /* SLOW_MARK */", ""));
    let o = t
        .command(Path::new("rel.patch"))
        .current_dir(&t.root)
        .output()
        .unwrap();
    let err = stderr(&o);
    assert!(
        !err.contains("does not apply") && !err.contains("Can't open"),
        "{err}"
    );
    // The miniature tree has no real vmlinux: the run gets past both builds and stops there.
    assert!(
        err.contains("patched objects") || err.contains("vmlinux"),
        "{err}"
    );
    assert_eq!(t.snapshot(), before);
}

/// A patch may `#include <klpgen/klpgen.h>`: klpgen installs the header in its cache and both
/// builds get the same flags, with its directory on the include path; the patched object then
/// carries the annotation.
#[test]
fn patches_can_include_the_annotation_header() {
    let t = Tree::new(CONFIG);
    let before = t.snapshot();
    let p = t.patch(
        "annot.patch",
        "--- a/lib/demo.c\n+++ b/lib/demo.c\n@@ -1,4 +1,6 @@\n+#include <klpgen/klpgen.h>\n int demo(int x)\n {\n-\treturn x + 1;\n+\treturn x + 2;\n }\n+KLPGEN_IGNORE_FUNCTION(demo);\n",
    );
    let report = t.root.join("out/report.json");
    let o = t.command(&p).arg("--report").arg(&report).output().unwrap();
    let err = stderr(&o);
    // A missing header would fail the patched build (exit 4). The only change is to the
    // ignored function: no functional change, and the report says what was ignored.
    assert_eq!(o.status.code(), Some(3), "{err}");
    assert!(err.contains("no functional change"), "{err}");
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("ignored  demo in .text.demo"), "{out}");
    let v: serde_json::Value = serde_json::from_slice(&fs::read(&report).unwrap()).unwrap();
    assert_eq!(v["result"], "no-change");
    assert_eq!(v["objects"][0]["ignored"][0]["symbol"], "demo", "{v}");
    assert_eq!(t.snapshot(), before);
    let trees: Vec<PathBuf> = fs::read_dir(t.root.join("cache/trees"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    let [tree] = trees.as_slice() else {
        panic!("one tree directory expected: {trees:?}")
    };
    let installed = fs::read_to_string(tree.join("include/klpgen/klpgen.h")).unwrap();
    let shipped =
        fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("include/klpgen/klpgen.h"))
            .unwrap();
    assert_eq!(installed, shipped);
    let log = fs::read_to_string(tree.join("kbuild/kcflags.log")).unwrap();
    let lines: Vec<&str> = log.lines().collect();
    assert_eq!(lines.len(), 2, "original and patched build: {log}");
    assert_eq!(lines[0], lines[1], "both builds get the same flags");
    assert!(
        lines[0].contains(&format!("-I{}", tree.join("include").display())),
        "{log}"
    );
    let obj = fs::read(tree.join("runs/livepatch-annot/patched/lib/demo.o")).unwrap();
    let name = b".klpgen.ignore.functions\0";
    assert!(
        obj.windows(name.len()).any(|w| w == name),
        "the patched object has no .klpgen.ignore.functions section"
    );
}

#[test]
fn report_is_written_when_the_run_fails() {
    let t = Tree::new(&CONFIG.replace("CONFIG_KALLSYMS_ALL=y\n", ""));
    let p = t.patch("p.patch", GOOD_PATCH);
    let report = t.root.join("out/report.json");
    let o = t.command(&p).arg("--report").arg(&report).output().unwrap();
    assert_eq!(o.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&fs::read(&report).unwrap()).unwrap();
    assert_eq!(v["schema"], "klpgen-report/1");
    assert_eq!(v["result"], "error");
    assert_eq!(v["exit_code"], 1);
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .contains("CONFIG_KALLSYMS_ALL"),
        "{v}"
    );
}

#[test]
fn killed_build_is_recovered_by_the_next_run() {
    let t = Tree::new(CONFIG);
    let before = t.snapshot();
    let p = t.patch("slow.patch", GOOD_PATCH);
    let mut child = t
        .command(&p)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let kbuild = t.wait_for_patched_build();
    child.kill().unwrap(); // SIGKILL: no chance to clean up
    child.wait().unwrap();
    assert_ne!(
        t.snapshot().0,
        before.0,
        "the tree is patched after the kill"
    );
    fs::remove_file(kbuild.join("sleeping")).unwrap();

    // The next run (another patch) restores the tree first and rebuilds the unit the killed
    // run left patched in klpgen's build directory.
    let quick = t.patch(
        "quick.patch",
        &GOOD_PATCH.replace("x + 2; /* SLOW_MARK */", "x + 3;"),
    );
    let o = t
        .command(&quick)
        .arg("--name")
        .arg("quick")
        .output()
        .unwrap();
    assert!(stderr(&o).contains("restored"), "{}", stderr(&o));
    assert_eq!(t.snapshot(), before);
    let orig = kbuild
        .parent()
        .unwrap()
        .join("runs/livepatch-quick/orig/lib/demo.o");
    let pristine = t.root.join("pristine.o");
    let cc = Command::new("gcc")
        .args([
            "-O2",
            "-c",
            "-ffunction-sections",
            "-fdata-sections",
            "-pg",
            "-mfentry",
            "-mrecord-mcount",
        ])
        .arg(t.src().join("lib/demo.c"))
        .arg("-o")
        .arg(&pristine)
        .status()
        .unwrap();
    assert!(cc.success());
    assert!(
        fs::read(&orig).unwrap() == fs::read(&pristine).unwrap(),
        "the original object was built from patched sources"
    );
}

#[test]
fn interrupted_at_random_points_the_tree_is_always_restored() {
    // 24 trials: SIGINT, SIGTERM or SIGKILL at a pseudo-random moment of a run whose every
    // compile takes 0.15 s; after a SIGKILL the next run must restore the tree first.
    let t = Tree::new(CONFIG);
    let before = t.snapshot();
    let p = t.patch("p.patch", &GOOD_PATCH.replace(" /* SLOW_MARK */", ""));
    let mut seed: u64 = 0x6b6c_7067_656e;
    let mut next = |n: u64| {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (seed >> 33) % n
    };
    let mut interrupted = 0;
    for trial in 0..24 {
        let signal = ["-INT", "-TERM", "-KILL"][trial % 3];
        let delay = Duration::from_millis(next(700));
        let child = t
            .command(&p)
            .env("FAKE_MAKE_SLEEP", "0.15")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        std::thread::sleep(delay);
        let _ = Command::new("kill")
            .args([signal, &child.id().to_string()])
            .status();
        let o = child.wait_with_output().unwrap();
        if o.status.code() != Some(1) || stderr(&o).contains("interrupted") {
            interrupted += 1;
        }
        if signal == "-KILL" {
            // Give an orphaned stand-in make time to finish, then let the next run recover.
            std::thread::sleep(Duration::from_millis(400));
            let again = t.command(&p).output().unwrap();
            assert!(
                !stderr(&again).contains("could not restore"),
                "{}",
                stderr(&again)
            );
        }
        assert_eq!(
            t.snapshot(),
            before,
            "trial {trial}: {signal} after {delay:?} left the tree changed"
        );
    }
    // Most trials really interrupted a run (the others hit it before or after its work).
    assert!(
        interrupted >= 12,
        "only {interrupted} of 24 trials interrupted a run"
    );
}

#[test]
fn a_second_run_on_the_same_tree_is_refused_naming_the_holder() {
    let t = Tree::new(CONFIG);
    let p = t.patch("slow.patch", GOOD_PATCH);
    let first = t
        .command(&p)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    t.wait_for_patched_build();
    let second = t.command(&p).output().unwrap();
    let err = stderr(&second);
    assert_eq!(second.status.code(), Some(1), "{err}");
    assert!(err.contains("another klpgen run is using"), "{err}");
    assert!(err.contains(&format!("pid {}", first.id())), "{err}");
    Command::new("kill")
        .args(["-INT", &first.id().to_string()])
        .status()
        .unwrap();
    first.wait_with_output().unwrap();
}
