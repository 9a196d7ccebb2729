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

/// The target's release (banner, `include/config/kernel.release`, the sources' Makefile).
const RELEASE: &str = "6.12.0-klpgen";
const MAKEFILE: &str =
    "# miniature tree\nVERSION = 6\nPATCHLEVEL = 12\nSUBLEVEL = 0\nEXTRAVERSION = -klpgen\n";
const DEMO_C: &str = "static __attribute__((noinline)) int helper(int x)\n{\n\treturn x * 3;\n}\n\nint demo(int x)\n{\n\treturn helper(x) + 1;\n}\n";

/// Stand-in for make: `olddefconfig` succeeds; each requested `x.o` is compiled from `x.c`
/// unless it is newer than `x.c`;
/// a source containing SLOW_MARK makes it announce itself and sleep (to be interrupted).
/// `M=DIR modules` links DIR's `klpgen_patch.o` with a `.modinfo` (livepatch, GPL, vermagic of
/// the build's release) into the module kbuild would have made (the hook is left out).
const FAKE_MAKE: &str = r#"#!/bin/bash
src=""; out=""; units=""; prev=""; mdir=""
for a in "$@"; do
  if [ "$prev" = "-C" ]; then src="$a"; fi
  case "$a" in O=*) out="${a#O=}";; M=*) mdir="${a#M=}";; *.o) units="$units $a";; esac
  prev="$a"
done
if [ -n "$mdir" ]; then
  name=$(sed -n 's/^obj-m := \(.*\)\.o$/\1/p' "$mdir/Kbuild")
  rel=$(cat "$src/include/config/kernel.release")
  printf '__attribute__((section(".modinfo"), used)) static const char mi[] = "livepatch=Y\\0license=GPL\\0vermagic=%s SMP mod_unload ";\n' "$rel" > "$mdir/modinfo.c"
  gcc -c -o "$mdir/modinfo.o" "$mdir/modinfo.c" || exit 2
  ld -r -o "$mdir/$name.ko" "$mdir/klpgen_patch.o" "$mdir/modinfo.o" || exit 2
  exit 0
fi
for u in $units; do
  c="$src/${u%.o}.c"
  # Like make: an object newer than its source is up to date.
  if [ "$out/$u" -nt "$c" ]; then continue; fi
  mkdir -p "$(dirname "$out/$u")"
  gcc -O2 -c -ffunction-sections -fdata-sections -pg -mfentry -mrecord-mcount "$c" -o "$out/$u" || exit 2
  if grep -q SLOW_MARK "$c"; then touch "$out/sleeping"; sleep 30; fi
  if [ -n "$FAKE_MAKE_SLEEP" ]; then sleep "$FAKE_MAKE_SLEEP"; fi
done
exit 0
"#;

/// Parts of the stand-in vmlinux besides the tree's own code: the banner, `__fentry__` and
/// its export entry (what Module.symvers lists).
const VMLINUX_EXTRA_C: &str = "const char linux_banner[] = \"Linux version 6.12.0-klpgen (test@klpgen) #1 SMP\\n\";\nvoid __fentry__(void) {}\nconst char __ksymtab___fentry__[12] __attribute__((used)) = { 0 };\n";
const SYMVERS: &str = "0x00000000\t__fentry__\tvmlinux\tEXPORT_SYMBOL\t\n";

fn gcc(args: &[&std::ffi::OsStr]) {
    let o = Command::new("gcc").args(args).output().unwrap();
    assert!(o.status.success(), "gcc {args:?}: {}", stderr(&o));
}

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
        fs::write(src.join("Makefile"), MAKEFILE).unwrap();
        fs::write(src.join("lib/demo.c"), DEMO_C).unwrap();
        let build = root.join("build");
        fs::create_dir_all(build.join("include/config")).unwrap();
        fs::write(build.join(".config"), config).unwrap();
        fs::write(
            build.join("include/config/kernel.release"),
            format!("{RELEASE}\n"),
        )
        .unwrap();
        // The target image: the tree's code built like the kernel's (traced, no function
        // sections) and linked with a banner and an exported __fentry__, by the same gcc as
        // the stand-in make's (the .comment klpgen compares).
        let objs = root.join("vmlinux-objs");
        fs::create_dir_all(&objs).unwrap();
        let demo_o = objs.join("demo.o");
        gcc(&[
            "-O2".as_ref(),
            "-c".as_ref(),
            "-pg".as_ref(),
            "-mfentry".as_ref(),
            "-mrecord-mcount".as_ref(),
            src.join("lib/demo.c").as_os_str(),
            "-o".as_ref(),
            demo_o.as_os_str(),
        ]);
        let extra_c = objs.join("extra.c");
        fs::write(&extra_c, VMLINUX_EXTRA_C).unwrap();
        let extra_o = objs.join("extra.o");
        gcc(&[
            "-O2".as_ref(),
            "-c".as_ref(),
            extra_c.as_os_str(),
            "-o".as_ref(),
            extra_o.as_os_str(),
        ]);
        gcc(&[
            "-nostdlib".as_ref(),
            "-static".as_ref(),
            "-no-pie".as_ref(),
            "-Wl,-e,demo".as_ref(),
            "-o".as_ref(),
            build.join("vmlinux").as_os_str(),
            demo_o.as_os_str(),
            extra_o.as_os_str(),
        ]);
        fs::remove_dir_all(&objs).unwrap();
        fs::write(build.join("Module.symvers"), SYMVERS).unwrap();
        let bin = root.join("bin");
        fs::create_dir_all(&bin).unwrap();
        fs::write(bin.join("make"), FAKE_MAKE).unwrap();
        fs::set_permissions(bin.join("make"), fs::Permissions::from_mode(0o755)).unwrap();
        // HOME, XDG_CACHE_HOME and TMPDIR of the runs that check where klpgen writes.
        for d in ["home", "xdg-cache", "tmp"] {
            fs::create_dir_all(root.join(d)).unwrap();
        }
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

const GOOD_PATCH: &str = "--- a/lib/demo.c\n+++ b/lib/demo.c\n@@ -6,4 +6,4 @@\n int demo(int x)\n {\n-\treturn helper(x) + 1;\n+\treturn helper(x) + 2; /* SLOW_MARK */\n }\n";

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
    assert_eq!(o.status.code(), Some(0), "{err}");
    assert!(t.root.join("out/livepatch-rel.ko").is_file());
    assert_eq!(t.snapshot(), before);
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
        &GOOD_PATCH.replace("helper(x) + 2; /* SLOW_MARK */", "helper(x) + 3;"),
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

// ---------------------------------------------------------------------------------------------
// Nothing outside the build's own directories is written.

/// One file system entry: (kind, size, modification time, sha256 of the contents).
type Entry = (char, u64, SystemTime, String);

/// Every file, directory and symlink below `dir`, by path relative to it.
fn snapshot_dir(dir: &Path) -> std::collections::BTreeMap<PathBuf, Entry> {
    use sha2::{Digest, Sha256};
    let mut out = std::collections::BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            let p = e.path();
            let meta = fs::symlink_metadata(&p).unwrap();
            let rel = p.strip_prefix(dir).unwrap().to_path_buf();
            let ft = meta.file_type();
            let (kind, hash) = if ft.is_dir() {
                stack.push(p.clone());
                ('d', String::new())
            } else if ft.is_symlink() {
                ('l', fs::read_link(&p).unwrap().display().to_string())
            } else {
                let h = Sha256::digest(fs::read(&p).unwrap());
                ('f', h.iter().map(|b| format!("{b:02x}")).collect())
            };
            // A directory's own time changes with its entries: compared through them.
            let mtime = if ft.is_dir() {
                SystemTime::UNIX_EPOCH
            } else {
                meta.modified().unwrap()
            };
            out.insert(rel, (kind, meta.len(), mtime, hash));
        }
    }
    out
}

/// The paths whose entry differs (added, removed or changed) between two snapshots.
fn changed_paths(
    before: &std::collections::BTreeMap<PathBuf, Entry>,
    after: &std::collections::BTreeMap<PathBuf, Entry>,
) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = before
        .iter()
        .filter(|(p, e)| after.get(*p) != Some(e))
        .map(|(p, _)| p.clone())
        .collect();
    out.extend(after.keys().filter(|p| !before.contains_key(*p)).cloned());
    out.sort();
    out
}

impl Tree {
    /// HOME, XDG_CACHE_HOME, TMPDIR (and the cache) all inside the temporary root.
    fn isolated(&self, patch: &Path) -> Command {
        let mut c = self.command(patch);
        c.env("HOME", self.root.join("home"))
            .env("XDG_CACHE_HOME", self.root.join("xdg-cache"))
            .env("TMPDIR", self.root.join("tmp"));
        c
    }
}

/// Everything that changed under the root, in the given allowed directories, and nothing
/// else; TMPDIR is empty again.
fn assert_only_changed(
    t: &Tree,
    before: &std::collections::BTreeMap<PathBuf, Entry>,
    allowed: &[&str],
) -> Vec<PathBuf> {
    let after = snapshot_dir(&t.root);
    let changed = changed_paths(before, &after);
    let outside: Vec<&PathBuf> = changed
        .iter()
        .filter(|p| !allowed.iter().any(|a| p.starts_with(a)))
        .collect();
    assert!(
        outside.is_empty(),
        "written outside {allowed:?}: {outside:?}"
    );
    let tmp: Vec<_> = fs::read_dir(t.root.join("tmp"))
        .unwrap()
        .flatten()
        .collect();
    assert!(tmp.is_empty(), "TMPDIR not left empty: {tmp:?}");
    changed
}

#[test]
fn a_full_build_writes_only_the_cache_and_the_output() {
    let t = Tree::new(CONFIG);
    let p = t.patch("p.patch", &GOOD_PATCH.replace(" /* SLOW_MARK */", ""));
    let report = t.root.join("out/report.json");
    let before = snapshot_dir(&t.root);
    let o = t
        .isolated(&p)
        .arg("--report")
        .arg(&report)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(stdout.contains("changed:         demo"), "{stdout}");
    assert!(stdout.contains(".klp.sym.vmlinux.helper,0"), "{stdout}");
    let changed = assert_only_changed(&t, &before, &["cache", "out"]);
    // The run did its work: the cache and the module are there.
    assert!(
        changed.iter().any(|p| p.starts_with("cache/trees")),
        "{changed:?}"
    );
    assert!(
        changed.contains(&PathBuf::from("out/livepatch-p.ko")),
        "{changed:?}"
    );
    assert!(changed.contains(&PathBuf::from("out/report.json")));
    // The source tree and the target build: same bytes, same times (part of the above, said
    // once more for the two that matter).
    for d in ["src", "build", "home", "xdg-cache"] {
        assert!(
            !changed.iter().any(|p| p.starts_with(d)),
            "{d} changed: {changed:?}"
        );
    }
    let v: serde_json::Value = serde_json::from_slice(&fs::read(&report).unwrap()).unwrap();
    assert_eq!(v["result"], "built");
    assert_eq!(v["kernel"]["release"], RELEASE);

    // Without KLPGEN_CACHE_DIR the cache is $XDG_CACHE_HOME/klpgen, and still nothing else
    // is written (HOME included).
    let before = snapshot_dir(&t.root);
    let o = t
        .isolated(&p)
        .env_remove("KLPGEN_CACHE_DIR")
        .arg("--name")
        .arg("xdg")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let changed = assert_only_changed(&t, &before, &["xdg-cache/klpgen", "out"]);
    assert!(
        changed.contains(&PathBuf::from("out/livepatch-xdg.ko")),
        "{changed:?}"
    );
    assert!(
        changed
            .iter()
            .any(|p| p.starts_with("xdg-cache/klpgen/trees")),
        "{changed:?}"
    );
}

#[test]
fn refused_patches_write_nothing_but_the_report() {
    let t = Tree::new(CONFIG);
    let cases = [
        (
            "dotdot.patch",
            "--- a/../outside.c\n+++ b/../outside.c\n@@ -1 +1 @@\n-a\n+b\n",
            "leaves the kernel tree",
        ),
        (
            "absolute.patch",
            "--- a/lib/demo.c\n+++ /etc/klpgen-test\n@@ -1 +1 @@\n-a\n+b\n",
            "absolute path /etc/klpgen-test",
        ),
        (
            "binary.patch",
            "diff --git a/lib/blob.bin b/lib/blob.bin\nGIT binary patch\nliteral 4\nLcmZ?d00001\n",
            "binary hunks",
        ),
    ];
    for (name, text, why) in cases {
        let p = t.patch(name, text);
        let report = t.root.join(format!("out/{name}.json"));
        let before = snapshot_dir(&t.root);
        let o = t
            .isolated(&p)
            .arg("--report")
            .arg(&report)
            .output()
            .unwrap();
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{name}: {err}");
        assert!(
            err.contains("unusable patch") && err.contains(why),
            "{name}: {err}"
        );
        let changed = assert_only_changed(&t, &before, &["out"]);
        // The report, and the directory made for it by the first run.
        let mut want = vec![PathBuf::from(format!("out/{name}.json"))];
        if !before.contains_key(Path::new("out")) {
            want.insert(0, PathBuf::from("out"));
        }
        assert_eq!(changed, want, "{name}");
        let v: serde_json::Value = serde_json::from_slice(&fs::read(&report).unwrap()).unwrap();
        assert_eq!(v["result"], "refused", "{name}");
        // Without --report: nothing at all.
        let before = snapshot_dir(&t.root);
        let o = t.isolated(&p).output().unwrap();
        assert_eq!(o.status.code(), Some(2), "{name}");
        let changed = assert_only_changed(&t, &before, &[]);
        assert!(changed.is_empty(), "{name}: {changed:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// A target whose parts come from different builds is refused before any compile work.

/// Run a build expected to be refused with `key` before anything is compiled or cached;
/// returns its stderr.
fn refused_before_work(t: &Tree, cmd: &mut Command, key: &str) -> String {
    let before = snapshot_dir(&t.root);
    let o = cmd.output().unwrap();
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains(&format!("[{key}]")), "{err}");
    assert!(err.contains("come from different builds"), "{err}");
    let changed = assert_only_changed(t, &before, &[]);
    assert!(changed.is_empty(), "{changed:?}");
    err
}

#[test]
fn vmlinux_of_another_kernel_is_refused_naming_both_releases() {
    let t = Tree::new(CONFIG);
    let p = t.patch("p.patch", &GOOD_PATCH.replace(" /* SLOW_MARK */", ""));
    // A copy of the image whose banner says 6.12.1-klpgen (same length).
    let vm = fs::read(t.root.join("build/vmlinux")).unwrap();
    let from = b"Linux version 6.12.0-klpgen ";
    let at = vm.windows(from.len()).position(|w| w == from).unwrap();
    let mut other = vm.clone();
    other[at..at + from.len()].copy_from_slice(b"Linux version 6.12.1-klpgen ");
    let other_path = t.root.join("other-vmlinux");
    fs::write(&other_path, &other).unwrap();
    let err = refused_before_work(
        &t,
        t.isolated(&p).arg("--vmlinux").arg(&other_path),
        "target.vmlinux-mismatch",
    );
    assert!(
        err.contains("is kernel 6.12.1-klpgen") && err.contains("target build is 6.12.0-klpgen"),
        "{err}"
    );
    assert!(err.contains("other-vmlinux"), "{err}");
    // And the build directory's own vmlinux is fine.
    let o = t.isolated(&p).output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
}

#[test]
fn module_symvers_of_another_build_is_refused() {
    let t = Tree::new(CONFIG);
    let p = t.patch("p.patch", &GOOD_PATCH.replace(" /* SLOW_MARK */", ""));
    fs::write(
        t.root.join("build/Module.symvers"),
        format!("{SYMVERS}0x00000000\tother_build_fn\tvmlinux\tEXPORT_SYMBOL\t\n"),
    )
    .unwrap();
    let err = refused_before_work(&t, &mut t.isolated(&p), "target.symvers-mismatch");
    assert!(
        err.contains("1 of its 2 vmlinux exports are not exported by")
            && err.contains("other_build_fn"),
        "{err}"
    );
    // One that lacks the export the vmlinux has.
    fs::write(t.root.join("build/Module.symvers"), "").unwrap();
    let err = refused_before_work(&t, &mut t.isolated(&p), "target.symvers-mismatch");
    assert!(err.contains("are not in it: __fentry__"), "{err}");
}

#[test]
fn sources_of_another_version_are_refused() {
    let t = Tree::new(CONFIG);
    let p = t.patch("p.patch", &GOOD_PATCH.replace(" /* SLOW_MARK */", ""));
    fs::write(
        t.src().join("Makefile"),
        MAKEFILE.replace("SUBLEVEL = 0", "SUBLEVEL = 7"),
    )
    .unwrap();
    let err = refused_before_work(&t, &mut t.isolated(&p), "target.source-mismatch");
    assert!(
        err.contains("source tree is version 6.12.7-klpgen") && err.contains("6.12.0-klpgen"),
        "{err}"
    );
}

#[test]
fn a_build_without_a_release_file_is_named() {
    let t = Tree::new(CONFIG);
    let p = t.patch("p.patch", GOOD_PATCH);
    fs::remove_file(t.root.join("build/include/config/kernel.release")).unwrap();
    let o = t.command(&p).output().unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("include/config/kernel.release not found"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn diff_refuses_symvers_of_another_build() {
    let t = Tree::new(CONFIG);
    let vm = t.root.join("build/vmlinux");
    let obj = t.root.join("demo.o");
    gcc(&[
        "-O2".as_ref(),
        "-c".as_ref(),
        "-ffunction-sections".as_ref(),
        t.src().join("lib/demo.c").as_os_str(),
        "-o".as_ref(),
        obj.as_os_str(),
    ]);
    let other = t.root.join("other.symvers");
    fs::write(&other, "0x00000000\tkfree\tvmlinux\tEXPORT_SYMBOL\t\n").unwrap();
    let run = |symvers: &Path| {
        Command::new(KLPGEN)
            .arg("diff")
            .arg(&obj)
            .arg(&obj)
            .arg("--symtab")
            .arg(&vm)
            .arg("--symvers")
            .arg(symvers)
            .output()
            .unwrap()
    };
    let o = run(&other);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("[target.symvers-mismatch]") && err.contains("kfree"),
        "{err}"
    );
    // With the build's own: the pair is diffed (and has no change).
    let o = run(&t.root.join("build/Module.symvers"));
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
}

#[test]
fn out_of_tree_module_of_another_kernel_is_refused() {
    let t = Tree::new(CONFIG);
    let p = t.patch("p.patch", &GOOD_PATCH.replace(" /* SLOW_MARK */", ""));
    let msrc = t.root.join("mod-src");
    fs::create_dir_all(&msrc).unwrap();
    let mi = msrc.join("modinfo.c");
    fs::write(
        &mi,
        "__attribute__((section(\".modinfo\"), used)) static const char mi[] = \"name=mymod\\0vermagic=6.12.9-other SMP mod_unload \";\n",
    )
    .unwrap();
    let ko = t.root.join("mymod.ko");
    gcc(&["-c".as_ref(), mi.as_os_str(), "-o".as_ref(), ko.as_os_str()]);
    let err = refused_before_work(
        &t,
        t.isolated(&p)
            .arg("--oot-module")
            .arg(&ko)
            .arg("--oot-module-src")
            .arg(&msrc),
        "target.module-mismatch",
    );
    assert!(
        err.contains("built for kernel 6.12.9-other") && err.contains("is 6.12.0-klpgen"),
        "{err}"
    );
}
