//! The klpgen CLI on a miniature kernel tree with a stand-in `make` (a script that compiles the
//! requested units with gcc): clear answers to bad input, and a tree left exactly as it was
//! after a failed or interrupted build.
//!
//! The tree has a linked stand-in vmlinux (a banner, an export, `__mcount_loc`), and the
//! stand-in `make` links `M=DIR modules` from the livepatch object and a `.modinfo`. Covered:
//! a full build to a checked module; a missing tree, a config without `CONFIG_LIVEPATCH`, a
//! patch that does not apply; interrupted and killed builds (the tree byte- and time-identical
//! after); the `target.*-mismatch` refusals before any work; where klpgen writes (with HOME,
//! XDG_CACHE_HOME and TMPDIR in a temporary root, a full build changes only the cache and the
//! output, a refused patch only the report); the annotation header; progress and `--verbose`;
//! `--cc-launcher`; in-tree builds from a mirror; header patches without records; runs with
//! different caches taking turns on one tree; `#line` directives keeping `__LINE__`; the
//! target's objtool on the livepatch object; patches of several units (and an in-tree module)
//! whose new globals bind inside the livepatch, and their `refuse.new-global` refusals;
//! a Debian kernel as the default target (a system
//! root with its packages' files, `KLPGEN_ROOT_FOR_TESTS`), `--fetch` through stand-in
//! `apt-get` and `dpkg-deb`, missing packages, and its mismatches (another ABI's vmlinux,
//! another flavour's headers, sources of another version, modules of another release).

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant, SystemTime};

const KLPGEN: &str = env!("CARGO_BIN_EXE_klpgen");

const CONFIG: &str = "CONFIG_X86_64=y\nCONFIG_LIVEPATCH=y\nCONFIG_MODULES=y\nCONFIG_KALLSYMS_ALL=y\nCONFIG_SYSFS=y\nCONFIG_DYNAMIC_FTRACE_WITH_ARGS=y\n";

/// The target's release (banner, `include/config/kernel.release`, the sources' Makefile).
const RELEASE: &str = "6.12.0-klpgen";
const MAKEFILE: &str =
    "# miniature tree\nVERSION = 6\nPATCHLEVEL = 12\nSUBLEVEL = 0\nEXTRAVERSION = -klpgen\n";
const DEMO_C: &str = "static __attribute__((noinline)) int helper(int x)\n{\n\treturn x * 3;\n}\n\nint demo(int x)\n{\n\treturn helper(x) + 1;\n}\n";

/// Stand-in for make: `olddefconfig` and `prepare` succeed; `-n` (the dry run) prints a
/// kbuild-like compile line for every `.c` of the tree; each requested `x.o` is compiled from
/// `x.c` unless it is newer than `x.c`;
/// a source containing SLOW_MARK makes it announce itself and sleep (to be interrupted).
/// `M=DIR modules` links DIR's `klpgen_patch.o` with a `.modinfo` (livepatch, GPL, vermagic of
/// the build's release) into the module kbuild would have made (the hook is left out).
const FAKE_MAKE: &str = r#"#!/bin/bash
src=""; out=""; units=""; prev=""; cc="gcc"; kcflags=""; mdir=""
for a in "$@"; do
  if [ "$prev" = "-C" ]; then src="$a"; fi
  case "$a" in O=*) out="${a#O=}";; M=*) mdir="${a#M=}";; CC=*) cc="${a#CC=}";; KCFLAGS=*) kcflags="${a#KCFLAGS=}";; -j*) jobs="${a#-j}";; -n) dry=1;; *.o) units="$units $a";; esac
  prev="$a"
done
# `-n`: kbuild's dry run, a compile line for every .c of the tree.
if [ -n "$dry" ]; then
  echo dry > "$out/dry-run-ran"
  (cd "$src" && find . -name '*.c' | sed 's|^\./||') | while read -r c; do
    u="${c%.c}.o"
    echo "set -e; echo '  CC      $u'; $cc -Wp,-MMD,$(dirname "$u")/.$(basename "$u").d -I$src/include -c -o $u $src/$c ; scripts/basic/fixdep x"
  done
  exit 0
fi
if [ -n "$mdir" ]; then
  name=$(sed -n 's/^obj-m := \(.*\)\.o$/\1/p' "$mdir/Kbuild")
  # The release as kbuild has it: Debian's .kernelvariables override, else kernel.release.
  rel=$(sed -n 's/^override KERNELRELEASE = //p' "$src/.kernelvariables" 2>/dev/null)
  [ -n "$rel" ] || rel=$(cat "$src/include/config/kernel.release")
  printf '__attribute__((section(".modinfo"), used)) static const char mi[] = "livepatch=Y\\0license=GPL\\0vermagic=%s SMP mod_unload ";\n' "$rel" > "$mdir/modinfo.c"
  gcc -c -o "$mdir/modinfo.o" "$mdir/modinfo.c" || exit 2
  ld -r -o "$mdir/$name.ko" "$mdir/klpgen_patch.o" "$mdir/modinfo.o" || exit 2
  exit 0
fi
if [ -n "$units" ]; then mkdir -p "$out"; echo "$kcflags" >>"$out/kcflags.log"; fi
# FAKE_MAKE_RACE=FILE: the first parallel build fails the way kbuild's fixdep race does.
if [ -n "$units" ] && [ -n "$FAKE_MAKE_RACE" ] && [ ! -e "$FAKE_MAKE_RACE" ] && [ "${jobs:-1}" != 1 ]; then
  touch "$FAKE_MAKE_RACE"
  echo "fixdep: error opening file: arch/x86/lib/.usercopy.o.d: No such file or directory" >&2
  exit 2
fi
for u in $units; do
  c="$src/${u%.o}.c"
  # Like make: an object newer than its source is up to date.
  if [ "$out/$u" -nt "$c" ]; then continue; fi
  mkdir -p "$(dirname "$out/$u")"
  $cc -O2 -c -ffunction-sections -fdata-sections -pg -mfentry -mrecord-mcount $kcflags "$c" -o "$out/$u" \
    -MD -MF "$out/$(dirname "$u")/.$(basename "$u").cmd" || exit 2
  printf '  CC      %s\n' "$u"
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
        Tree::with_units(config, &[])
    }

    /// A tree whose vmlinux has the `extra` units (path relative to the sources, text) besides
    /// lib/demo.c.
    fn with_units(config: &str, extra: &[(&str, &str)]) -> Tree {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().to_path_buf();
        let src = root.join("src");
        fs::create_dir_all(src.join("kernel")).unwrap();
        fs::create_dir_all(src.join("lib")).unwrap();
        fs::write(src.join("Makefile"), MAKEFILE).unwrap();
        fs::write(src.join("lib/demo.c"), DEMO_C).unwrap();
        for (path, text) in extra {
            fs::create_dir_all(src.join(path).parent().unwrap()).unwrap();
            fs::write(src.join(path), text).unwrap();
        }
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
        let mut unit_objs = Vec::new();
        for (i, path) in std::iter::once("lib/demo.c")
            .chain(extra.iter().map(|(p, _)| *p))
            .enumerate()
        {
            let o = objs.join(format!("unit{i}.o"));
            gcc(&[
                "-O2".as_ref(),
                "-c".as_ref(),
                "-pg".as_ref(),
                "-mfentry".as_ref(),
                "-mrecord-mcount".as_ref(),
                src.join(path).as_os_str(),
                "-o".as_ref(),
                o.as_os_str(),
            ]);
            unit_objs.push(o);
        }
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
        let vmlinux = build.join("vmlinux");
        let mut link: Vec<&std::ffi::OsStr> = vec![
            "-nostdlib".as_ref(),
            "-static".as_ref(),
            "-no-pie".as_ref(),
            "-Wl,-e,demo".as_ref(),
            "-o".as_ref(),
            vmlinux.as_os_str(),
        ];
        link.extend(unit_objs.iter().map(|o| o.as_os_str()));
        link.push(extra_o.as_os_str());
        gcc(&link);
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

    /// Start `klpgen build` of `p` (a SLOW_MARK patch) in the background, its stdout
    /// discarded, and return once the stand-in make sleeps in the patched build: the child and
    /// klpgen's build directory.
    fn spawn_until_patched_build(&self, p: &Path, stderr: Stdio) -> (Child, PathBuf) {
        let child = self
            .command(p)
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap();
        (child, self.wait_for_patched_build())
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
    // Wait until the stand-in make is building the patched unit, then interrupt klpgen.
    let (child, kbuild) = t.spawn_until_patched_build(&p, Stdio::piped());
    let marker = kbuild.join("sleeping");
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
    let (mut child, kbuild) = t.spawn_until_patched_build(&p, Stdio::null());
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
fn a_second_run_on_the_same_cache_with_no_wait_fails_naming_the_holder() {
    let t = Tree::new(CONFIG);
    let p = t.patch("slow.patch", GOOD_PATCH);
    let (first, _) = t.spawn_until_patched_build(&p, Stdio::null());
    let start = Instant::now();
    let second = t.command(&p).arg("--no-wait").output().unwrap();
    let err = stderr(&second);
    assert_eq!(second.status.code(), Some(1), "{err}");
    assert!(start.elapsed() < Duration::from_secs(10), "{err}");
    // It names the holder (pid and command) and what is held: the cache directory.
    assert!(err.contains("is in use by another klpgen run"), "{err}");
    assert!(err.contains(&format!("pid {}: ", first.id())), "{err}");
    assert!(err.contains("slow.patch"), "{err}");
    assert!(
        err.contains(&t.root.join("cache/trees").display().to_string()),
        "{err}"
    );
    assert!(err.contains("--no-wait"), "{err}");
    Command::new("kill")
        .args(["-INT", &first.id().to_string()])
        .status()
        .unwrap();
    first.wait_with_output().unwrap();
}

#[test]
fn a_second_run_on_the_same_cache_waits_for_the_first() {
    let t = Tree::new(CONFIG);
    let before = t.snapshot();
    let p = t.patch("slow.patch", GOOD_PATCH);
    let (first, _) = t.spawn_until_patched_build(&p, Stdio::null());
    let quick = t.patch(
        "quick.patch",
        &GOOD_PATCH.replace("x + 2; /* SLOW_MARK */", "x + 3;"),
    );
    let err_path = t.root.join("second.stderr");
    let mut second = t
        .command(&quick)
        .stdout(Stdio::null())
        .stderr(fs::File::create(&err_path).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let waiting = format!("waiting for another klpgen run (pid {}: ", first.id());
    while !fs::read_to_string(&err_path).unwrap().contains(&waiting) {
        assert!(
            Instant::now() < deadline,
            "second run did not wait: {}",
            fs::read_to_string(&err_path).unwrap()
        );
        assert!(second.try_wait().unwrap().is_none(), "second run ended");
        std::thread::sleep(Duration::from_millis(50));
    }
    let err = fs::read_to_string(&err_path).unwrap();
    assert!(
        err.contains(&format!(
            "to finish with klpgen's cache directory {}",
            t.root.join("cache/trees").display()
        )),
        "{err}"
    );
    // Still waiting a while later, the first run's patch the only one applied.
    std::thread::sleep(Duration::from_millis(500));
    assert!(second.try_wait().unwrap().is_none(), "second run ended");
    assert!(fs::read_to_string(t.src().join("lib/demo.c"))
        .unwrap()
        .contains("SLOW_MARK"));
    Command::new("kill")
        .args(["-INT", &first.id().to_string()])
        .status()
        .unwrap();
    first.wait_with_output().unwrap();
    let status = second.wait().unwrap();
    let err = fs::read_to_string(&err_path).unwrap();
    // Once the first run ended, the second went on and built its own patch.
    assert!(status.success(), "{err}");
    assert!(err.contains("building patched objects"), "{err}");
    assert!(t.root.join("out/livepatch-quick.ko").is_file(), "{err}");
    assert_eq!(t.snapshot(), before);
}

#[test]
fn a_run_waiting_for_the_cache_stops_on_ctrl_c() {
    let t = Tree::new(CONFIG);
    let p = t.patch("slow.patch", GOOD_PATCH);
    let (first, _) = t.spawn_until_patched_build(&p, Stdio::null());
    let err_path = t.root.join("second.stderr");
    let second = t
        .command(&p)
        .stdout(Stdio::null())
        .stderr(fs::File::create(&err_path).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !fs::read_to_string(&err_path)
        .unwrap()
        .contains("waiting for another klpgen run")
    {
        assert!(Instant::now() < deadline, "second run did not wait");
        std::thread::sleep(Duration::from_millis(50));
    }
    Command::new("kill")
        .args(["-INT", &second.id().to_string()])
        .status()
        .unwrap();
    let out = second.wait_with_output().unwrap();
    let err = fs::read_to_string(&err_path).unwrap();
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("interrupted"), "{err}");
    // The first run is undisturbed: still in its patched build.
    assert!(fs::read_to_string(t.src().join("lib/demo.c"))
        .unwrap()
        .contains("SLOW_MARK"));
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
            // A directory's own time changes with its entries: compared through them, except
            // in the source tree and the target build (and the distribution's files), whose
            // directories must keep their times too (GNU patch's temporary files change them).
            let kept = ["src", "build", "sysroot"]
                .iter()
                .any(|d| rel.starts_with(d));
            let mtime = if ft.is_dir() && !kept {
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
fn diff_lists_split_parts_under_their_function() {
    // tests/fixtures/cold_part.c: only report's unlikely path, report.cold, changes.
    let tmp = tempfile::tempdir().unwrap();
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/cold_part.c");
    let obj = |name: &str, patched: bool| {
        let out = tmp.path().join(name);
        let flags = testsupport::gcc::KERNEL_CFLAGS
            .iter()
            .chain(testsupport::gcc::DIFF_CFLAGS);
        let mut args: Vec<&std::ffi::OsStr> = flags.map(|f| f.as_ref()).collect();
        if patched {
            args.push("-DPATCHED".as_ref());
        }
        args.extend([src.as_os_str(), "-o".as_ref(), out.as_os_str()]);
        gcc(&args);
        out
    };
    let (orig, patched) = (obj("orig.o", false), obj("patched.o", true));
    let diff = |format: &str| {
        Command::new(KLPGEN)
            .args(["diff", "--format", format])
            .arg(&orig)
            .arg(&patched)
            .output()
            .unwrap()
    };
    let o = diff("text");
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(
        out.contains("  changed  report\n    part   report.cold (changed)\n"),
        "{out}"
    );
    assert!(!out.contains("  changed  report.cold"), "{out}");
    let o = diff("json");
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["changed"], serde_json::json!(["report"]));
    assert_eq!(
        v["parts"],
        serde_json::json!({"report": [{"name": "report.cold", "verdict": "changed"}]})
    );
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

/// A patch may `#include <klpgen/klpgen.h>`: klpgen installs the header in its cache and both
/// builds get the same flags, with its directory on the include path; the patched object then
/// carries the annotation.
#[test]
fn patches_can_include_the_annotation_header() {
    let t = Tree::new(CONFIG);
    fs::write(
        t.src().join("lib/demo.c"),
        "int demo(int x)\n{\n\treturn x + 1;\n}\n",
    )
    .unwrap();
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

/// A patch written for kpatch-build includes `"kpatch-syscall.h"` (which includes
/// `"kpatch-macros.h"`) with quotes: klpgen installs its own headers of those names at the top
/// of the directory on the include path, so it builds unchanged; KPATCH_IGNORE_FUNCTION is
/// klpgen's ignore.
#[test]
fn patches_can_include_kpatch_headers() {
    let t = Tree::new(CONFIG);
    fs::write(
        t.src().join("lib/demo.c"),
        "int demo(int x)\n{\n\treturn x + 1;\n}\n",
    )
    .unwrap();
    let p = t.patch(
        "kp.patch",
        "--- a/lib/demo.c\n+++ b/lib/demo.c\n@@ -1,4 +1,6 @@\n+#include \"kpatch-syscall.h\"\n int demo(int x)\n {\n-\treturn x + 1;\n+\treturn x + 2;\n }\n+KPATCH_IGNORE_FUNCTION(demo);\n",
    );
    let o = t.command(&p).output().unwrap();
    let err = stderr(&o);
    // Without the headers the patched build fails (exit 4).
    assert_eq!(o.status.code(), Some(3), "{err}");
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("ignored  demo in .text.demo"), "{out}");
    let trees: Vec<PathBuf> = fs::read_dir(t.root.join("cache/trees"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    let [tree] = trees.as_slice() else {
        panic!("one tree directory expected: {trees:?}")
    };
    let mut installed: Vec<String> = Vec::new();
    for e in fs::read_dir(tree.join("include")).unwrap() {
        installed.push(e.unwrap().file_name().to_string_lossy().into_owned());
    }
    installed.sort();
    // Nothing else: no kernel header can be shadowed.
    assert_eq!(installed, ["klpgen", "kpatch-macros.h", "kpatch-syscall.h"]);
    for name in ["kpatch-macros.h", "kpatch-syscall.h"] {
        let shipped = fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("include")
                .join(name),
        )
        .unwrap();
        assert_eq!(
            fs::read_to_string(tree.join("include").join(name)).unwrap(),
            shipped
        );
    }
}

#[test]
fn progress_is_one_line_per_stage_and_verbose_shows_the_children() {
    let t = Tree::new(CONFIG);
    let p = t.patch("p.patch", &GOOD_PATCH.replace(" /* SLOW_MARK */", ""));
    // Not a terminal: plain lines, one per stage, each with the elapsed time.
    let o = t.command(&p).output().unwrap();
    let err = stderr(&o);
    let stage_lines: Vec<&str> = err
        .lines()
        .filter(|l| l.starts_with("klpgen: [") && l.contains("s] "))
        .collect();
    assert!(
        stage_lines
            .iter()
            .any(|l| l.ends_with("] building original objects (function sections)")),
        "{err}"
    );
    assert!(
        stage_lines
            .iter()
            .any(|l| l.ends_with("] building patched objects")),
        "{err}"
    );
    assert!(!err.contains('\r') && !err.contains('\x1b'), "{err:?}");
    assert!(!err.contains("  | "), "{err}");
    // --verbose: what make printed, as it printed it, both builds (a fresh tree: nothing of
    // the original build cached).
    let t = Tree::new(CONFIG);
    let p = t.patch("p.patch", &GOOD_PATCH.replace(" /* SLOW_MARK */", ""));
    let o = t.command(&p).arg("--verbose").output().unwrap();
    let err = stderr(&o);
    assert_eq!(err.matches("  |   CC      lib/demo.o").count(), 2, "{err}");
    // -q: nothing but errors.
    let o = t.command(&p).arg("-q").output().unwrap();
    assert!(!stderr(&o).contains("klpgen: ["), "{}", stderr(&o));
}

#[test]
fn compiles_go_through_the_compiler_launcher() {
    let t = Tree::new(CONFIG);
    let p = t.patch("p.patch", &GOOD_PATCH.replace(" /* SLOW_MARK */", ""));
    let log = t.root.join("launcher.log");
    let launcher = t.root.join("bin/fake-ccache");
    fs::write(
        &launcher,
        format!("#!/bin/sh\necho \"$*\" >> {}\nexec \"$@\"\n", log.display()),
    )
    .unwrap();
    fs::set_permissions(&launcher, fs::Permissions::from_mode(0o755)).unwrap();
    let o = t
        .command(&p)
        .arg("--cc-launcher")
        .arg(&launcher)
        .output()
        .unwrap();
    let err = stderr(&o);
    assert!(err.contains("building patched objects"), "{err}");
    // Both the original and the patched compile went through it, with the compiler behind.
    let calls = fs::read_to_string(&log).unwrap_or_default();
    assert_eq!(
        calls
            .lines()
            .filter(|l| l.starts_with("gcc ") && l.contains("lib/demo.c"))
            .count(),
        2,
        "{calls}"
    );
}

#[test]
fn runs_with_different_caches_take_turns_on_the_source_tree() {
    // The cache lock does not cover a run with another cache; the source tree itself is
    // locked, so the second run waits instead of building the first one's patched files.
    let t = Tree::new(CONFIG);
    let before = t.snapshot();
    let p = t.patch("slow.patch", GOOD_PATCH);
    let (first, _) = t.spawn_until_patched_build(&p, Stdio::null());
    let quick = t.patch(
        "quick.patch",
        &GOOD_PATCH.replace("x + 2; /* SLOW_MARK */", "x + 3;"),
    );
    let err_path = t.root.join("second.stderr");
    let mut second = t
        .command(&quick)
        .env("KLPGEN_CACHE_DIR", t.root.join("other-cache"))
        .stdout(Stdio::null())
        .stderr(fs::File::create(&err_path).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !fs::read_to_string(&err_path)
        .unwrap()
        .contains("waiting for another klpgen run that is patching")
    {
        assert!(
            Instant::now() < deadline,
            "second run did not wait: {}",
            fs::read_to_string(&err_path).unwrap()
        );
        assert!(second.try_wait().unwrap().is_none(), "second run ended");
        std::thread::sleep(Duration::from_millis(50));
    }
    // While it waits it has not touched the tree: the first run's patch is still the only one.
    assert!(fs::read_to_string(t.src().join("lib/demo.c"))
        .unwrap()
        .contains("SLOW_MARK"));
    Command::new("kill")
        .args(["-INT", &first.id().to_string()])
        .status()
        .unwrap();
    first.wait_with_output().unwrap();
    second.wait().unwrap();
    let err = fs::read_to_string(&err_path).unwrap();
    // The second run went on once the first had restored the tree, and built its own patch.
    assert!(err.contains("building patched objects"), "{err}");
    assert!(!err.contains("does not apply"), "{err}");
    assert_eq!(t.snapshot(), before);
}

#[test]
fn in_tree_builds_are_built_from_a_mirror_and_the_tree_is_never_patched() {
    // The target was built inside its source tree (no O=): kbuild refuses to build such a tree
    // elsewhere, so klpgen mirrors its sources (without the build output) and patches that.
    let t = Tree::new(CONFIG);
    let src = t.src();
    fs::create_dir_all(src.join("include/config")).unwrap();
    for f in [
        ".config",
        "vmlinux",
        "Module.symvers",
        "include/config/kernel.release",
    ] {
        fs::copy(t.root.join("build").join(f), src.join(f)).unwrap();
    }
    // Build output of the in-tree build, with kbuild's record of it.
    fs::write(src.join("lib/demo.o"), b"stale object").unwrap();
    fs::write(src.join("lib/.demo.o.cmd"), "cmd_lib/demo.o := gcc ...\n").unwrap();
    let listing = |dir: &Path| {
        let mut v: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    let (before, files_before) = (t.snapshot(), listing(&src.join("lib")));
    let p = t.patch("slow.patch", GOOD_PATCH);
    let mut c = Command::new(KLPGEN);
    c.env(
        "PATH",
        format!(
            "{}:{}",
            t.root.join("bin").display(),
            std::env::var("PATH").unwrap_or_default()
        ),
    )
    .env("KLPGEN_CACHE_DIR", t.root.join("cache"))
    .args(["build", "--sourcedir"])
    .arg(&src)
    .arg("-o")
    .arg(t.root.join("out"))
    .arg(&p)
    .stdout(Stdio::null())
    .stderr(Stdio::piped());
    let first = c.spawn().unwrap();
    let kbuild = t.wait_for_patched_build();
    // The patched build compiles the mirror's patched file; the user's file is untouched.
    let mirror = kbuild.parent().unwrap().join("source");
    assert!(fs::read_to_string(mirror.join("lib/demo.c"))
        .unwrap()
        .contains("SLOW_MARK"));
    assert_eq!(t.snapshot(), before);
    assert!(!mirror.join("lib/demo.o").exists() && !mirror.join(".config").exists());
    Command::new("kill")
        .args(["-INT", &first.id().to_string()])
        .status()
        .unwrap();
    let o = first.wait_with_output().unwrap();
    assert!(
        stderr(&o).contains("holds an in-tree build; working on a mirror"),
        "{}",
        stderr(&o)
    );
    assert_eq!(t.snapshot(), before);
    assert_eq!(listing(&src.join("lib")), files_before);
    assert!(!fs::read_to_string(mirror.join("lib/demo.c"))
        .unwrap()
        .contains("SLOW_MARK"));
}

#[test]
fn header_edits_without_records_are_found_by_the_dependency_scan() {
    // The target build has no kbuild records (like a distribution's): for a header patch,
    // klpgen lists the configuration's units with kbuild's dry run in its own directory,
    // scans their includes, builds the candidates, and keeps those whose records (of that
    // build) name the header. No whole-kernel build.
    let t = Tree::new(CONFIG);
    let src = t.src();
    fs::write(src.join("lib/demo.h"), "#define STEP 1\n").unwrap();
    fs::write(
        src.join("lib/demo.c"),
        "#include \"demo.h\"\nint demo(int x)\n{\n\treturn x + STEP;\n}\n",
    )
    .unwrap();
    fs::write(
        src.join("kernel/other.c"),
        "int other(int x)\n{\n\treturn x;\n}\n",
    )
    .unwrap();
    // A candidate of the static graph (its include is under a condition the scan cannot
    // evaluate) that the records of klpgen's build drop.
    fs::write(
        src.join("kernel/maybe.c"),
        "#ifdef NEVER_DEFINED\n#include \"../lib/demo.h\"\n#endif\nint maybe(int x)\n{\n\treturn x;\n}\n",
    )
    .unwrap();
    let p = t.patch(
        "h.patch",
        "--- a/lib/demo.h\n+++ b/lib/demo.h\n@@ -1 +1 @@\n-#define STEP 1\n+#define STEP 2\n",
    );
    let report = t.root.join("report.json");
    let o = t.command(&p).arg("--report").arg(&report).output().unwrap();
    let err = stderr(&o);
    // (The stand-in make rebuilds an object only for a newer .c, so the patched object is
    // the original one: no functional change. The units are what this test is about.)
    assert!(
        err.contains("keeps no complete set of kbuild records"),
        "{err}"
    );
    assert!(
        err.contains("dependency scan: 2 of the configuration's"),
        "{err}"
    );
    assert!(
        err.contains("1 of the scan's candidates do not include"),
        "{err}"
    );
    assert!(err.contains("1 unit(s) affected: lib/demo.o"), "{err}");
    let kbuild = fs::read_dir(t.root.join("cache/trees"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path()
        .join("kbuild");
    assert!(
        !kbuild.join("kernel/other.o").exists(),
        "a unit that cannot include it was built"
    );
    let doc: serde_json::Value = serde_json::from_slice(&fs::read(&report).unwrap()).unwrap();
    assert_eq!(doc["units"]["affected"], serde_json::json!(["lib/demo.o"]));
    assert_eq!(doc["units"]["method"], "scan");
    assert_eq!(
        doc["units"]["dropped"],
        serde_json::json!(["kernel/maybe.o"])
    );
    // The next run reuses the unit list: no second dry run.
    fs::remove_file(kbuild.join("dry-run-ran")).unwrap();
    let o = t.command(&p).output().unwrap();
    let err = stderr(&o);
    assert!(!err.contains("keeps no complete set"), "{err}");
    assert!(err.contains("1 unit(s) affected: lib/demo.o"), "{err}");
    assert!(!kbuild.join("dry-run-ran").exists());
}

#[test]
fn untouched_lines_keep_their_numbers_in_the_patched_build() {
    // The patch grows demo() by two lines; line() below it returns __LINE__. With the #line
    // directives klpgen adds after the hunk, only demo() changes.
    let t = Tree::new(CONFIG);
    let src = t.src();
    fs::write(
        src.join("lib/demo.c"),
        "int demo(int x)\n{\n\treturn x + 1;\n}\n\nint line(void)\n{\n\treturn __LINE__;\n}\n",
    )
    .unwrap();
    let before = t.snapshot();
    let p = t.patch(
        "grow.patch",
        "--- a/lib/demo.c\n+++ b/lib/demo.c\n@@ -1,4 +1,6 @@\n int demo(int x)\n {\n+\tx *= 3;\n+\tx -= 1;\n \treturn x + 1;\n }\n",
    );
    let changed = |o: &Output| {
        let out = String::from_utf8_lossy(&o.stdout).into_owned();
        let mut v: Vec<String> = out
            .lines()
            .filter_map(|l| l.trim().strip_prefix("changed "))
            .map(|f| f.trim().to_string())
            .collect();
        v.sort();
        v
    };
    let o = t.command(&p).output().unwrap();
    assert_eq!(changed(&o), vec!["demo"], "{}", stderr(&o));
    assert_eq!(t.snapshot(), before);
    let o = t.command(&p).arg("--no-line-directives").output().unwrap();
    assert_eq!(changed(&o), vec!["demo", "line"], "{}", stderr(&o));
    assert_eq!(t.snapshot(), before);
}

#[test]
fn several_patches_make_one_module() {
    // Two patch files, the second written against the tree with the first applied: applied in
    // order, both changes in one livepatch, both recorded in the report, the tree restored.
    let t = Tree::new(CONFIG);
    let before = t.snapshot();
    let first = t.patch(
        "1-helper.patch",
        "--- a/lib/demo.c\n+++ b/lib/demo.c\n@@ -1,4 +1,4 @@\n static __attribute__((noinline)) int helper(int x)\n {\n-\treturn x * 3;\n+\treturn x * 4;\n }\n",
    );
    let second = t.patch(
        "2-demo.patch",
        "--- a/lib/demo.c\n+++ b/lib/demo.c\n@@ -1,9 +1,9 @@\n static __attribute__((noinline)) int helper(int x)\n {\n \treturn x * 4;\n }\n \n int demo(int x)\n {\n-\treturn helper(x) + 1;\n+\treturn helper(x) + 2;\n }\n",
    );
    let report = t.root.join("out/report.json");
    let o = t
        .command(&first)
        .arg(&second)
        .arg("--report")
        .arg(&report)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let stdout = String::from_utf8_lossy(&o.stdout);
    let changed = stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix("changed:"))
        .map(|c| {
            let mut v: Vec<&str> = c.split(',').map(str::trim).collect();
            v.sort();
            v
        });
    assert_eq!(changed, Some(vec!["demo", "helper"]), "{stdout}");
    // Named after the first patch; one module for both.
    let modules: Vec<String> = fs::read_dir(t.root.join("out"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".ko"))
        .collect();
    assert_eq!(modules, vec!["livepatch-1-helper.ko"]);
    let v: serde_json::Value = serde_json::from_slice(&fs::read(&report).unwrap()).unwrap();
    assert_eq!(v["patches"].as_array().map(Vec::len), Some(2), "{v}");
    assert_eq!(t.snapshot(), before);
}

/// An ORC target without IBT (objtool per object): klpgen runs the target's objtool on the
/// livepatch object with the options of the patched unit's kbuild record plus `--module`,
/// passes on what it prints (stderr and the report), and fails the build when it fails.
#[test]
fn objtool_per_object_runs_the_targets_objtool_on_the_livepatch_object() {
    let t = Tree::new(&format!(
        "{CONFIG}CONFIG_OBJTOOL=y\nCONFIG_UNWINDER_ORC=y\n"
    ));
    let build = t.root.join("build");
    fs::create_dir_all(build.join("lib")).unwrap();
    fs::write(
        build.join("lib/.demo.o.cmd"),
        "savedcmd_lib/demo.o := gcc -O2 -c -o lib/demo.o lib/demo.c ; ./tools/objtool/objtool --hacks=jump_label --orc --retpoline --prefix=16   lib/demo.o\n\nsource_lib/demo.o := lib/demo.c\n",
    )
    .unwrap();
    let tool = build.join("tools/objtool/objtool");
    fs::create_dir_all(tool.parent().unwrap()).unwrap();
    let args_log = t.root.join("objtool-args");
    // Stand-in objtool: records its arguments; warns, or fails when OBJTOOL_FAIL is set.
    fs::write(
        &tool,
        format!(
            "#!/bin/sh\necho \"$@\" > {}\nlast=$(for a; do :; done; echo \"$a\")\n[ -f \"$last\" ] || exit 9\nif [ -n \"$OBJTOOL_FAIL\" ]; then echo \"$last: error: objtool: stand-in failure\" >&2; exit 1; fi\necho \"$last: warning: objtool: demo+0x4: stand-in warning\" >&2\n",
            args_log.display()
        ),
    )
    .unwrap();
    fs::set_permissions(&tool, fs::Permissions::from_mode(0o755)).unwrap();
    let p = t.patch("p.patch", &GOOD_PATCH.replace(" /* SLOW_MARK */", ""));
    let report = t.root.join("out/report.json");
    let o = t.command(&p).arg("--report").arg(&report).output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let args = fs::read_to_string(&args_log).unwrap();
    let words: Vec<&str> = args.split_whitespace().collect();
    assert_eq!(
        words[..words.len() - 1],
        [
            "--hacks=jump_label",
            "--orc",
            "--retpoline",
            "--prefix=16",
            "--module"
        ],
        "{args}"
    );
    assert!(
        words[words.len() - 1].ends_with("/klpgen_patch.o"),
        "{args}"
    );
    assert!(stderr(&o).contains("stand-in warning"), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&fs::read(&report).unwrap()).unwrap();
    assert!(
        v["objtool_warnings"][0]
            .as_str()
            .is_some_and(|w| w.contains("stand-in warning")),
        "{v}"
    );

    let o = t
        .command(&p)
        .env("OBJTOOL_FAIL", "1")
        .arg("--name")
        .arg("fails")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("stand-in failure"), "{}", stderr(&o));
    assert!(!t.root.join("out/livepatch-fails.ko").exists());
}

#[test]
fn a_parallel_dependency_file_race_is_built_again_serially() {
    let t = Tree::new(CONFIG);
    let p = t.patch("p.patch", &GOOD_PATCH.replace(" /* SLOW_MARK */", ""));
    let marker = t.root.join("raced");
    let o = t
        .command(&p)
        .env("FAKE_MAKE_RACE", &marker)
        .args(["-j", "2"])
        .output()
        .unwrap();
    let err = stderr(&o);
    assert!(marker.exists(), "the stand-in never raced");
    assert!(err.contains("building again with -j1"), "{err}");
    assert_eq!(o.status.code(), Some(0), "{err}");
    // A serial build (-j 1) does not race and is not retried.
    let t = Tree::new(CONFIG);
    let p = t.patch("p.patch", &GOOD_PATCH.replace(" /* SLOW_MARK */", ""));
    let o = t
        .command(&p)
        .env("FAKE_MAKE_RACE", t.root.join("raced"))
        .args(["-j", "1"])
        .output()
        .unwrap();
    assert!(!t.root.join("raced").exists());
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
}

// ---------------------------------------------------------------------------------------------
// A livepatch of several units: the globals the patch adds are the livepatch's own.

/// A second unit of the miniature vmlinux: `user()` calls demo.c's global `demo()` (not
/// exported: a klp relocation) and, through `-pg`, the exported `__fentry__` (ordinary).
const USER_C: &str = "extern int demo(int x);\n\nint user(int x)\n{\n\treturn demo(x) + 5;\n}\n";
/// A third unit without code the patches change: where a patch adds a variable.
const STATE_C: &str = "int state_base = 1;\n";

/// The symbols of an ELF file by name: (defined, global), and the names of relocation targets
/// in the sections whose names start with `prefix` (the `.rela` of a function's copy).
fn elf_symbols(bytes: &[u8]) -> std::collections::BTreeMap<String, (bool, bool)> {
    use object::{Object as _, ObjectSymbol as _};
    let f = object::File::parse(bytes).unwrap();
    f.symbols()
        .filter(|s| !s.name().unwrap_or("").is_empty())
        .map(|s| {
            (
                s.name().unwrap().to_string(),
                (!s.is_undefined(), s.is_global()),
            )
        })
        .collect()
}

/// The names of the symbols the relocations of section `section` of an ELF file point at.
fn reloc_targets(bytes: &[u8], section: &str) -> Vec<String> {
    reloc_symbols(bytes, section)
        .into_iter()
        .map(|(n, _)| n)
        .collect()
}

/// The symbols the relocations of section `section` of an ELF file point at: (name, global).
fn reloc_symbols(bytes: &[u8], section: &str) -> Vec<(String, bool)> {
    use object::{Object as _, ObjectSection as _, ObjectSymbol as _};
    let f = object::File::parse(bytes).unwrap();
    let sec = f
        .section_by_name(section)
        .unwrap_or_else(|| panic!("no section {section}"));
    sec.relocations()
        .filter_map(|(_, r)| match r.target() {
            object::RelocationTarget::Symbol(i) => {
                let s = f.symbol_by_index(i).unwrap();
                Some((s.name().unwrap().to_string(), s.is_global()))
            }
            _ => None,
        })
        .collect()
}

/// The `note:` lines of a build's summary.
fn notes(stdout: &str) -> Vec<&str> {
    stdout
        .lines()
        .filter_map(|l| l.trim().strip_prefix("note:"))
        .map(str::trim)
        .collect()
}

/// A patch adds a global function in lib/demo.c and a global variable in lib/state.c (whose
/// own code does not use it: the unit has no other change), and the changed `user()` of
/// lib/user.c uses both. The module defines both as globals of its own, and `user()`'s copy
/// refers to them there; the references to the target's `demo` (klp), to lib/state.c's
/// existing `state_base` (klp, from both users) and to `__fentry__` (ordinary) bind as they
/// always did; `klpgen check` passes (the build runs it).
#[test]
fn a_new_global_of_one_unit_is_bound_inside_the_module_for_another() {
    let t = Tree::with_units(CONFIG, &[("lib/user.c", USER_C), ("lib/state.c", STATE_C)]);
    let p = t.patch(
        "new-global.patch",
        "--- a/lib/demo.c\n+++ b/lib/demo.c\n@@ -8,3 +8,9 @@\n {\n \treturn helper(x) + 1;\n }\n+\n+extern int state_base;\n+__attribute__((noinline)) int klpgen_new_fn(int x)\n+{\n+\treturn x * 7 + state_base;\n+}\n\
--- a/lib/state.c\n+++ b/lib/state.c\n@@ -1 +1,2 @@\n int state_base = 1;\n+int klpgen_counter;\n\
--- a/lib/user.c\n+++ b/lib/user.c\n@@ -1,6 +1,10 @@\n extern int demo(int x);\n+extern int klpgen_new_fn(int x);\n+extern int klpgen_counter;\n+extern int state_base;\n \n int user(int x)\n {\n-\treturn demo(x) + 5;\n+\tklpgen_counter += state_base;\n+\treturn demo(x) + klpgen_new_fn(x);\n }\n",
    );
    let report = t.root.join("out/report.json");
    let o = t.command(&p).arg("--report").arg(&report).output().unwrap();
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(0), "{}\n{stdout}", stderr(&o));
    assert!(stdout.contains("changed:         user"), "{stdout}");
    assert!(
        stdout.contains("new:             klpgen_new_fn"),
        "{stdout}"
    );
    let notes = notes(&stdout);
    for n in [
        "lib/user.o: klpgen_new_fn is new in lib/demo.o: bound inside the livepatch module",
        "lib/user.o: klpgen_counter is new in lib/state.o: bound inside the livepatch module",
    ] {
        assert!(notes.iter().any(|l| l.starts_with(n)), "{n}: {notes:?}");
    }
    // The existing globals of the target still through klp relocations.
    for s in [".klp.sym.vmlinux.demo,0", ".klp.sym.vmlinux.state_base,0"] {
        assert!(stdout.contains(s), "{s}: {stdout}");
    }
    let ko = fs::read(t.root.join("out/livepatch-new-global.ko")).unwrap();
    let syms = elf_symbols(&ko);
    for s in ["klpgen_new_fn", "klpgen_counter"] {
        assert_eq!(syms.get(s), Some(&(true, true)), "{s}: {syms:?}");
    }
    assert_eq!(syms.get("__fentry__"), Some(&(false, true)), "{syms:?}");
    let targets = reloc_targets(&ko, ".text.user");
    for s in [
        "klpgen_new_fn",
        "klpgen_counter",
        ".klp.sym.vmlinux.demo,0",
        ".klp.sym.vmlinux.state_base,0",
        "__fentry__",
    ] {
        assert!(targets.iter().any(|n| n == s), "{s}: {targets:?}");
    }
    let targets = reloc_targets(&ko, ".text.klpgen_new_fn");
    for s in [".klp.sym.vmlinux.state_base,0", "__fentry__"] {
        assert!(targets.iter().any(|n| n == s), "{s}: {targets:?}");
    }
    let v: serde_json::Value = serde_json::from_slice(&fs::read(&report).unwrap()).unwrap();
    assert_eq!(v["result"], "built");
    let mut klp: Vec<&str> = v["klp_relocations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["symbol"].as_str().unwrap())
        .collect();
    klp.sort_unstable();
    // One per unit that uses it: lib/demo.o's new function and lib/user.o's user().
    assert_eq!(klp, ["demo", "state_base", "state_base"], "{v}");
}

/// The new global takes the name of a static of the target (lib/demo.c's `helper`), which the
/// patch also changes: lib/user.c's `user()` calls the new global `helper` of lib/state.c
/// inside the module; lib/demo.c's `demo()` calls its own static, whose new body the module
/// carries as a local symbol beside the new global; the running kernel's static `helper` is
/// replaced (a klp relocation names it for the hook, `.klp.sym` symbols only for the target's
/// own symbols).
#[test]
fn a_new_global_named_like_a_static_binds_to_the_new_definition() {
    let t = Tree::with_units(CONFIG, &[("lib/user.c", USER_C), ("lib/state.c", STATE_C)]);
    let p = t.patch(
        "clash.patch",
        "--- a/lib/demo.c\n+++ b/lib/demo.c\n@@ -1,9 +1,9 @@\n static __attribute__((noinline)) int helper(int x)\n {\n-\treturn x * 3;\n+\treturn x * 4;\n }\n \n int demo(int x)\n {\n-\treturn helper(x) + 1;\n+\treturn helper(x) + 2;\n }\n\
--- a/lib/state.c\n+++ b/lib/state.c\n@@ -1 +1,6 @@\n int state_base = 1;\n+\n+__attribute__((noinline)) int helper(int x)\n+{\n+\treturn x + state_base;\n+}\n\
--- a/lib/user.c\n+++ b/lib/user.c\n@@ -1,6 +1,7 @@\n extern int demo(int x);\n+extern int helper(int x);\n \n int user(int x)\n {\n-\treturn demo(x) + 5;\n+\treturn demo(x) + helper(x);\n }\n",
    );
    let o = t.command(&p).output().unwrap();
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(0), "{}\n{stdout}", stderr(&o));
    assert!(
        notes(&stdout).iter().any(|n| n.starts_with(
            "lib/user.o: helper is new in lib/state.o: bound inside the livepatch module"
        )),
        "{stdout}"
    );
    let ko = fs::read(t.root.join("out/livepatch-clash.ko")).unwrap();
    // user() calls the new global; demo() the copy of the static (a local symbol).
    assert!(
        reloc_symbols(&ko, ".text.user").contains(&("helper".to_string(), true)),
        "{:?}",
        reloc_symbols(&ko, ".text.user")
    );
    assert!(
        reloc_symbols(&ko, ".text.demo").contains(&("helper".to_string(), false)),
        "{:?}",
        reloc_symbols(&ko, ".text.demo")
    );
    // No reference of the module names the target's static through a global `helper`.
    let syms = elf_symbols(&ko);
    assert_eq!(syms.get("helper").map(|&(d, _)| d), Some(true), "{syms:?}");
    let changed = stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix("changed:"))
        .unwrap_or_default();
    assert!(
        changed.contains("helper") && changed.contains("demo") && changed.contains("user"),
        "{stdout}"
    );
}

/// Two units of vmlinux add the same global, which a third uses: refused, naming both (the
/// kernel's own link would fail too). A global the patch only declares (no unit defines it)
/// is still the binding error naming it.
#[test]
fn a_new_global_defined_twice_or_never_is_refused_precisely() {
    let t = Tree::with_units(CONFIG, &[("lib/user.c", USER_C), ("lib/state.c", STATE_C)]);
    //# refuse: new-global (the assertions below check it is produced)
    let twice = t.patch(
        "twice.patch",
        "--- a/lib/demo.c\n+++ b/lib/demo.c\n@@ -8,3 +8,5 @@\n {\n \treturn helper(x) + 1;\n }\n+\n+int klpgen_dup(void) { return 1; }\n\
--- a/lib/state.c\n+++ b/lib/state.c\n@@ -1 +1,3 @@\n int state_base = 1;\n+\n+int klpgen_dup(void) { return 2; }\n\
--- a/lib/user.c\n+++ b/lib/user.c\n@@ -1,6 +1,7 @@\n extern int demo(int x);\n+extern int klpgen_dup(void);\n \n int user(int x)\n {\n-\treturn demo(x) + 5;\n+\treturn demo(x) + klpgen_dup();\n }\n",
    );
    let report = t.root.join("out/twice.json");
    let o = t
        .command(&twice)
        .arg("--report")
        .arg(&report)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(2), "{}\n{stdout}", stderr(&o));
    assert!(stdout.contains("refuse.new-global.klpgen_dup"), "{stdout}");
    let err = stderr(&o);
    assert!(
        err.contains(
            "klpgen_dup is a new global of both lib/demo.o and lib/state.o, code of vmlinux"
        ),
        "{err}"
    );
    let v: serde_json::Value = serde_json::from_slice(&fs::read(&report).unwrap()).unwrap();
    assert_eq!(v["result"], "refused");
    let user = v["objects"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["unit"] == "lib/user.o")
        .unwrap();
    assert!(
        user["functions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["key"] == "refuse.new-global.klpgen_dup"),
        "{user}"
    );
    assert!(!t.root.join("out/livepatch-twice.ko").exists());

    let never = t.patch(
        "never.patch",
        "--- a/lib/user.c\n+++ b/lib/user.c\n@@ -1,6 +1,7 @@\n extern int demo(int x);\n+extern int klpgen_nowhere(void);\n \n int user(int x)\n {\n-\treturn demo(x) + 5;\n+\treturn demo(x) + klpgen_nowhere();\n }\n",
    );
    let o = t.command(&never).output().unwrap();
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("binding the references of lib/user.o: symbol klpgen_nowhere (global, not exported) not found in target"),
        "{err}"
    );
}

impl Tree {
    /// An in-tree module `name` of one unit `unit` (`lib/x.c`, with `text`): its source, its
    /// `.ko` in the target build (code built like the kernel's, a `.modinfo` with its name and
    /// the build's vermagic) and the kbuild records (`modules.order`, `lib/x.mod`) that say
    /// the unit is the module's.
    fn add_module(&self, name: &str, unit: &str, text: &str) {
        let src = self.src().join(unit);
        fs::write(&src, text).unwrap();
        let build = self.root.join("build");
        let obj = build.join(Path::new(unit).with_extension("o"));
        fs::create_dir_all(obj.parent().unwrap()).unwrap();
        let code = self.root.join(format!("{name}-code.o"));
        gcc(&[
            "-O2".as_ref(),
            "-c".as_ref(),
            "-pg".as_ref(),
            "-mfentry".as_ref(),
            "-mrecord-mcount".as_ref(),
            src.as_os_str(),
            "-o".as_ref(),
            code.as_os_str(),
        ]);
        let modinfo_c = self.root.join(format!("{name}-modinfo.c"));
        fs::write(
            &modinfo_c,
            format!("__attribute__((section(\".modinfo\"), used)) static const char mi[] = \"name={name}\\0license=GPL\\0vermagic={RELEASE} SMP mod_unload \";\n"),
        )
        .unwrap();
        let modinfo = self.root.join(format!("{name}-modinfo.o"));
        gcc(&[
            "-c".as_ref(),
            modinfo_c.as_os_str(),
            "-o".as_ref(),
            modinfo.as_os_str(),
        ]);
        let ko = obj.with_file_name(format!("{name}.ko"));
        let o = Command::new("ld")
            .arg("-r")
            .arg("-o")
            .arg(&ko)
            .arg(&code)
            .arg(&modinfo)
            .output()
            .unwrap();
        assert!(o.status.success(), "ld: {}", stderr(&o));
        let module = Path::new(unit).with_file_name(format!("{name}.o"));
        fs::write(
            build.join("modules.order"),
            format!("{}\n", module.display()),
        )
        .unwrap();
        fs::write(
            build.join(module.with_extension("mod")),
            format!("{}\n", Path::new(unit).with_extension("o").display()),
        )
        .unwrap();
    }
}

/// A module of the miniature tree: `mod_read()` calls its own static `mod_scale()`.
const MOD_C: &str = "static __attribute__((noinline)) int mod_scale(int x)\n{\n\treturn x * 2;\n}\n\nint mod_read(int x)\n{\n\treturn mod_scale(x);\n}\n";

/// A function the patch adds and exports in lib/demo.c (vmlinux), used by the changed code
/// of a module unit (lib/mod.c, its own klp_object) and of another vmlinux unit
/// (lib/user.c): both bind to the module's own copy, whatever klp_object the caller is
/// replaced in; the module's static still binds klp against the module, the export record is
/// not carried (a note says so), and a module's new global used from vmlinux code is refused.
#[test]
fn an_exported_new_global_is_the_modules_own_for_vmlinux_and_module_units() {
    let t = Tree::with_units(CONFIG, &[("lib/user.c", USER_C)]);
    t.add_module("mod", "lib/mod.c", MOD_C);
    // The export record as Linux 6.5+ writes it (`__export_symbol_<name>` in `.export_symbol`).
    let p = t.patch(
        "export.patch",
        "--- a/lib/demo.c\n+++ b/lib/demo.c\n@@ -8,3 +8,12 @@\n {\n \treturn helper(x) + 1;\n }\n+\n+__attribute__((noinline)) int klpgen_shared(int x)\n+{\n+\treturn x + 40;\n+}\n+asm(\".pushsection .export_symbol, \\\"a\\\"\\n\"\n+    \"__export_symbol_klpgen_shared:\\n\"\n+    \"\\t.quad klpgen_shared\\n\"\n+    \"\\t.popsection\\n\");\n\
--- a/lib/mod.c\n+++ b/lib/mod.c\n@@ -1,9 +1,11 @@\n+extern int klpgen_shared(int x);\n+\n static __attribute__((noinline)) int mod_scale(int x)\n {\n \treturn x * 2;\n }\n \n int mod_read(int x)\n {\n-\treturn mod_scale(x);\n+\treturn klpgen_shared(mod_scale(x));\n }\n\
--- a/lib/user.c\n+++ b/lib/user.c\n@@ -1,6 +1,7 @@\n extern int demo(int x);\n+extern int klpgen_shared(int x);\n \n int user(int x)\n {\n-\treturn demo(x) + 5;\n+\treturn demo(x) + klpgen_shared(x);\n }\n",
    );
    let report = t.root.join("out/export.json");
    let o = t.command(&p).arg("--report").arg(&report).output().unwrap();
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(0), "{}\n{stdout}", stderr(&o));
    let notes = notes(&stdout);
    for n in [
        "lib/mod.o: klpgen_shared is new in lib/demo.o: bound inside the livepatch module",
        "lib/user.o: klpgen_shared is new in lib/demo.o: bound inside the livepatch module",
        "lib/demo.o: klpgen_shared: its new EXPORT_SYMBOL is not carried: the livepatch has no __ksymtab entry for it",
    ] {
        assert!(notes.iter().any(|l| l.starts_with(n)), "{n}: {notes:?}");
    }
    assert!(stdout.contains(".klp.sym.mod.mod_scale,0"), "{stdout}");
    let ko = fs::read(t.root.join("out/livepatch-export.ko")).unwrap();
    for s in [".text.mod_read", ".text.user"] {
        assert!(
            reloc_symbols(&ko, s).contains(&("klpgen_shared".to_string(), true)),
            "{s}: {:?}",
            reloc_symbols(&ko, s)
        );
    }
    let syms = elf_symbols(&ko);
    assert_eq!(syms.get("klpgen_shared"), Some(&(true, true)), "{syms:?}");
    // No export: neither the record nor a __ksymtab entry.
    assert!(
        !syms
            .keys()
            .any(|n| n.contains("export_symbol") || n.starts_with("__ksymtab")),
        "{syms:?}"
    );
    let v: serde_json::Value = serde_json::from_slice(&fs::read(&report).unwrap()).unwrap();
    let targets: Vec<(&str, &str)> = v["objects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| (o["unit"].as_str().unwrap(), o["target"].as_str().unwrap()))
        .collect();
    assert!(targets.contains(&("lib/mod.o", "mod")), "{targets:?}");
    assert!(targets.contains(&("lib/user.o", "vmlinux")), "{targets:?}");
    // Linux 6.12 clears klp relocations into an unloaded module: no reload warning.
    assert!(v.get("module_reload").is_none(), "{v}");
    assert!(!stdout.contains("warning:"), "{stdout}");

    // The other way round: a global new in the module, used by vmlinux code.
    //# refuse: new-global (the assertions below check it is produced)
    let p = t.patch(
        "from-module.patch",
        "--- a/lib/mod.c\n+++ b/lib/mod.c\n@@ -7,3 +7,5 @@\n {\n \treturn mod_scale(x);\n }\n+\n+int klpgen_in_mod(void) { return 3; }\n\
--- a/lib/user.c\n+++ b/lib/user.c\n@@ -1,6 +1,7 @@\n extern int demo(int x);\n+extern int klpgen_in_mod(void);\n \n int user(int x)\n {\n-\treturn demo(x) + 5;\n+\treturn demo(x) + klpgen_in_mod();\n }\n",
    );
    let o = t.command(&p).output().unwrap();
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(2), "{}\n{stdout}", stderr(&o));
    assert!(
        stdout.contains("refuse.new-global.klpgen_in_mod"),
        "{stdout}"
    );
    assert!(
        stderr(&o).contains("klpgen_in_mod is new in lib/mod.o, code of module mod"),
        "{}",
        stderr(&o)
    );
}

/// A static the patch makes global for another unit: lib/demo.c's `helper` loses its
/// `static` and lib/user.c calls it. The function is carried (a copy behaves as the
/// original) and bound inside the module like a new one. A static variable made global is
/// refused: the running kernel's variable holds the state, a copy would not.
#[test]
fn a_static_made_global_for_another_unit() {
    let t = Tree::with_units(CONFIG, &[("lib/user.c", USER_C)]);
    let p = t.patch(
        "promote.patch",
        "--- a/lib/demo.c\n+++ b/lib/demo.c\n@@ -1,4 +1,4 @@\n-static __attribute__((noinline)) int helper(int x)\n+__attribute__((noinline)) int helper(int x)\n {\n \treturn x * 3;\n }\n\
--- a/lib/user.c\n+++ b/lib/user.c\n@@ -1,6 +1,7 @@\n extern int demo(int x);\n+extern int helper(int x);\n \n int user(int x)\n {\n-\treturn demo(x) + 5;\n+\treturn demo(x) + helper(x);\n }\n",
    );
    let o = t.command(&p).output().unwrap();
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(0), "{}\n{stdout}", stderr(&o));
    assert!(
        notes(&stdout).iter().any(|n| n.starts_with(
            "lib/user.o: helper is new in lib/demo.o: bound inside the livepatch module"
        )),
        "{stdout}"
    );
    let ko = fs::read(t.root.join("out/livepatch-promote.ko")).unwrap();
    assert!(
        reloc_symbols(&ko, ".text.user").contains(&("helper".to_string(), true)),
        "{:?}",
        reloc_symbols(&ko, ".text.user")
    );
    assert_eq!(elf_symbols(&ko).get("helper"), Some(&(true, true)));

    let t = Tree::with_units(
        CONFIG,
        &[
            ("lib/user.c", USER_C),
            (
                "lib/state.c",
                "static int counter;\n\nint bump(void)\n{\n\treturn ++counter;\n}\n",
            ),
        ],
    );
    let p = t.patch(
        "promote-data.patch",
        "--- a/lib/state.c\n+++ b/lib/state.c\n@@ -1,4 +1,4 @@\n-static int counter;\n+int counter;\n \n int bump(void)\n {\n\
--- a/lib/user.c\n+++ b/lib/user.c\n@@ -1,6 +1,7 @@\n extern int demo(int x);\n+extern int counter;\n \n int user(int x)\n {\n-\treturn demo(x) + 5;\n+\treturn demo(x) + counter;\n }\n",
    );
    let o = t.command(&p).output().unwrap();
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(2), "{}\n{stdout}", stderr(&o));
    assert!(stdout.contains("refuse.new-global.counter"), "{stdout}");
    assert!(
        stderr(&o)
            .contains("counter is a static variable of lib/state.o that the patch makes global"),
        "{}",
        stderr(&o)
    );
}

// ---------------------------------------------------------------------------------------------
// A Debian kernel as the target: a system root laid out as its packages install it.

const DEB_RELEASE: &str = "6.1.0-57-cloud-amd64";
const DEB_VERSION: &str = "6.1.192-3";
const DEB_UTS_VERSION: &str = "#1 SMP PREEMPT_DYNAMIC Debian 6.1.192-3 (2026-11-26)";
const DEB_MAKEFILE: &str = "VERSION = 6\nPATCHLEVEL = 1\nSUBLEVEL = 192\nEXTRAVERSION =\n";

/// Stand-in `apt-get download PKG=VER`: writes `PKG_VER_amd64.deb` naming the directory (under
/// $FAKE_ARCHIVE/PKG) whose contents the stand-in `dpkg-deb -x` copies out; logs each call.
const FAKE_APT_GET: &str = r#"#!/bin/sh
[ "$1" = download ] || exit 1
echo "$*" >> "$FAKE_ARCHIVE/apt-get.log"
pkg=${2%%=*}; ver=${2#*=}
[ -d "$FAKE_ARCHIVE/$pkg" ] || { echo "E: Version '$ver' for '$pkg' was not found" >&2; exit 100; }
echo "$FAKE_ARCHIVE/$pkg" > "${pkg}_${ver}_amd64.deb"
"#;
const FAKE_DPKG_DEB: &str = r#"#!/bin/sh
[ "$1" = -x ] || exit 1
mkdir -p "$3" && cp -a "$(cat "$2")/." "$3/"
"#;

const DEB_MOD_C: &str = "static __attribute__((noinline)) int mod_helper(int x)\n{\n\treturn x * 5;\n}\n\nint mod_fn(int x)\n{\n\treturn mod_helper(x) + 1;\n}\n";

/// The stock module `mod` of the Debian root: `drivers/m/mod.c` built like the kernel's
/// objects, with a `.modinfo` and a build-id; installed as Debian does (stripped of its
/// debugging symbols, STT_FILE included, and here xz-compressed), its full copy where the
/// `-dbg` package puts it.
fn deb_stock_module(t: &Tree, with_debug_copy: bool) {
    let sys = t.root.join("sysroot");
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let obj = d.join("mod.o");
    gcc(&[
        "-O2".as_ref(),
        "-c".as_ref(),
        "-pg".as_ref(),
        "-mfentry".as_ref(),
        "-mrecord-mcount".as_ref(),
        t.src().join("drivers/m/mod.c").as_os_str(),
        "-o".as_ref(),
        obj.as_os_str(),
    ]);
    let mi = d.join("mi.c");
    fs::write(
        &mi,
        format!("__attribute__((section(\".modinfo\"), used)) static const char mi[] = \"name=mod\\0vermagic={DEB_RELEASE} SMP preempt mod_unload modversions \";\n"),
    )
    .unwrap();
    let mi_o = d.join("mi.o");
    gcc(&[
        "-c".as_ref(),
        mi.as_os_str(),
        "-o".as_ref(),
        mi_o.as_os_str(),
    ]);
    let full = d.join("mod.ko");
    let o = Command::new("ld")
        .arg("-r")
        .arg("--build-id=sha1")
        .arg("-o")
        .arg(&full)
        .arg(&obj)
        .arg(&mi_o)
        .output()
        .unwrap();
    assert!(o.status.success(), "ld: {}", stderr(&o));
    let installed = d.join("installed/mod.ko");
    fs::create_dir_all(installed.parent().unwrap()).unwrap();
    let o = Command::new("strip")
        .arg("--strip-debug")
        .arg("-o")
        .arg(&installed)
        .arg(&full)
        .output()
        .unwrap();
    assert!(o.status.success(), "strip: {}", stderr(&o));
    let o = Command::new("xz").arg(&installed).output().unwrap();
    assert!(o.status.success(), "xz: {}", stderr(&o));
    let modules = sys.join(format!("lib/modules/{DEB_RELEASE}"));
    fs::create_dir_all(modules.join("kernel/drivers/m")).unwrap();
    fs::copy(
        d.join("installed/mod.ko.xz"),
        modules.join("kernel/drivers/m/mod.ko.xz"),
    )
    .unwrap();
    fs::write(
        modules.join("modules.order"),
        "kernel/lib/crc7.ko\nkernel/drivers/m/mod.ko\n",
    )
    .unwrap();
    if with_debug_copy {
        let dbg = sys.join(format!(
            "usr/lib/debug/lib/modules/{DEB_RELEASE}/kernel/drivers/m/mod.ko"
        ));
        fs::create_dir_all(dbg.parent().unwrap()).unwrap();
        fs::copy(&full, dbg).unwrap();
    }
}

/// A Debian `release` as seen from a system root: banner, headers directory and so on.
struct Deb {
    release: String,
    uts_version: String,
}

impl Deb {
    fn stock() -> Deb {
        Deb {
            release: DEB_RELEASE.into(),
            uts_version: DEB_UTS_VERSION.into(),
        }
    }
    fn banner(&self) -> String {
        format!(
            "Linux version {} (debian-kernel@lists.debian.org) (gcc-12 (Debian 12.2.0-14+deb12u1) 12.2.0, GNU ld (GNU Binutils for Debian) 2.40) {}\n",
            self.release, self.uts_version
        )
    }
}

/// A linked stand-in vmlinux of `deb` (the miniature tree's code, built like Tree::new's).
fn deb_vmlinux(src: &Path, deb: &Deb, out: &Path) {
    let objs = tempfile::tempdir().unwrap();
    let demo_o = objs.path().join("demo.o");
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
    let extra_c = objs.path().join("extra.c");
    let banner = deb.banner().replace('\n', "\\n");
    fs::write(
        &extra_c,
        VMLINUX_EXTRA_C.replace(
            "Linux version 6.12.0-klpgen (test@klpgen) #1 SMP\\n",
            &banner,
        ),
    )
    .unwrap();
    let extra_o = objs.path().join("extra.o");
    gcc(&[
        "-O2".as_ref(),
        "-c".as_ref(),
        extra_c.as_os_str(),
        "-o".as_ref(),
        extra_o.as_os_str(),
    ]);
    fs::create_dir_all(out.parent().unwrap()).unwrap();
    gcc(&[
        "-nostdlib".as_ref(),
        "-static".as_ref(),
        "-no-pie".as_ref(),
        "-Wl,-e,demo".as_ref(),
        "-o".as_ref(),
        out.as_os_str(),
        demo_o.as_os_str(),
        extra_o.as_os_str(),
    ]);
}

/// The headers directory of `deb` at `dir`: what linux-headers-<release> installs.
fn deb_headers(dir: &Path, deb: &Deb) {
    fs::create_dir_all(dir.join("include/config")).unwrap();
    fs::create_dir_all(dir.join("include/generated")).unwrap();
    fs::write(dir.join(".config"), CONFIG).unwrap();
    fs::write(dir.join("Module.symvers"), SYMVERS).unwrap();
    fs::write(
        dir.join(".kernelvariables"),
        format!(
            "override ARCH = x86\noverride KERNELRELEASE = {}\nCC = gcc\n",
            deb.release
        ),
    )
    .unwrap();
    fs::write(
        dir.join("include/generated/utsrelease.h"),
        format!("#define UTS_RELEASE \"{}\"\n", deb.release),
    )
    .unwrap();
    fs::write(
        dir.join("include/generated/utsversion.h"),
        format!("#define UTS_VERSION \"{}\"\n", deb.uts_version),
    )
    .unwrap();
    // Debian's headers say the upstream version here, not the release.
    fs::write(dir.join("include/config/kernel.release"), "6.1.192\n").unwrap();
}

/// A module `.ko.xz` of `release` (just its `.modinfo`) at `path`.
fn deb_module(path: &Path, name: &str, release: &str) {
    let dir = tempfile::tempdir().unwrap();
    let c = dir.path().join("m.c");
    fs::write(
        &c,
        format!("__attribute__((section(\".modinfo\"), used)) static const char mi[] = \"name={name}\\0vermagic={release} SMP preempt mod_unload modversions \";\n"),
    )
    .unwrap();
    let ko = dir.path().join("m.ko");
    gcc(&["-c".as_ref(), c.as_os_str(), "-o".as_ref(), ko.as_os_str()]);
    let o = Command::new("xz").arg("-k").arg(&ko).output().unwrap();
    assert!(o.status.success(), "xz: {}", stderr(&o));
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::copy(dir.path().join("m.ko.xz"), path).unwrap();
}

impl Tree {
    /// A Debian system root under `sysroot/` running `DEB_RELEASE`, with every package of
    /// the target installed: headers, the `-dbg` vmlinux, the image's modules, and
    /// linux-source-6.1 of the same version (a tarball of the miniature tree). Stand-ins
    /// for apt-get and dpkg-deb are in `bin/`, and `archive/` is what they download from.
    fn debian() -> Tree {
        let t = Tree::new(CONFIG);
        fs::write(t.src().join("Makefile"), DEB_MAKEFILE).unwrap();
        // A unit of a stock module (`=m`): `kernel/drivers/m/mod.ko` (see deb_stock_module).
        fs::create_dir_all(t.src().join("drivers/m")).unwrap();
        fs::write(t.src().join("drivers/m/mod.c"), DEB_MOD_C).unwrap();
        let sys = t.root.join("sysroot");
        let deb = Deb::stock();
        for d in ["etc", "proc/sys/kernel", "var/lib/dpkg", "usr/src"] {
            fs::create_dir_all(sys.join(d)).unwrap();
        }
        fs::write(
            sys.join("etc/os-release"),
            "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nID=debian\n",
        )
        .unwrap();
        fs::write(
            sys.join("proc/sys/kernel/osrelease"),
            format!("{DEB_RELEASE}\n"),
        )
        .unwrap();
        fs::write(sys.join("proc/version"), deb.banner()).unwrap();
        fs::write(
            sys.join("var/lib/dpkg/status"),
            format!("Package: linux-source-6.1\nStatus: install ok installed\nVersion: {DEB_VERSION}\n\n"),
        )
        .unwrap();
        deb_headers(
            &sys.join(format!("usr/src/linux-headers-{DEB_RELEASE}")),
            &deb,
        );
        deb_vmlinux(
            &t.src(),
            &deb,
            &sys.join(format!("usr/lib/debug/boot/vmlinux-{DEB_RELEASE}")),
        );
        let modules = sys.join(format!("lib/modules/{DEB_RELEASE}"));
        deb_module(&modules.join("kernel/lib/crc7.ko.xz"), "crc7", DEB_RELEASE);
        fs::write(modules.join("modules.order"), "kernel/lib/crc7.ko\n").unwrap();
        // linux-source-6.1: the tree as `linux-source-6.1/` in a tarball.
        let stage = t.root.join("stage");
        fs::create_dir_all(&stage).unwrap();
        let o = Command::new("cp")
            .arg("-a")
            .arg(t.src())
            .arg(stage.join("linux-source-6.1"))
            .output()
            .unwrap();
        assert!(o.status.success());
        let o = Command::new("tar")
            .arg("-cJf")
            .arg(sys.join("usr/src/linux-source-6.1.tar.xz"))
            .arg("-C")
            .arg(&stage)
            .arg("linux-source-6.1")
            .output()
            .unwrap();
        assert!(o.status.success(), "tar: {}", stderr(&o));
        fs::remove_dir_all(&stage).unwrap();
        let bin = t.root.join("bin");
        for (name, text) in [("apt-get", FAKE_APT_GET), ("dpkg-deb", FAKE_DPKG_DEB)] {
            fs::write(bin.join(name), text).unwrap();
            fs::set_permissions(bin.join(name), fs::Permissions::from_mode(0o755)).unwrap();
        }
        fs::create_dir_all(t.root.join("archive")).unwrap();
        t
    }

    /// `klpgen build` of `patch` with no target flags on the Debian system root, isolated.
    fn debian_command(&self, patch: &Path) -> Command {
        let mut c = Command::new(KLPGEN);
        let path = format!(
            "{}:{}",
            self.root.join("bin").display(),
            std::env::var("PATH").unwrap_or_default()
        );
        c.env("PATH", path)
            .env("KLPGEN_CACHE_DIR", self.root.join("cache"))
            .env("KLPGEN_ROOT_FOR_TESTS", self.root.join("sysroot"))
            .env("FAKE_ARCHIVE", self.root.join("archive"))
            .env("HOME", self.root.join("home"))
            .env("XDG_CACHE_HOME", self.root.join("xdg-cache"))
            .env("TMPDIR", self.root.join("tmp"))
            .arg("build")
            .arg("-o")
            .arg(self.root.join("out"))
            .arg(patch);
        c
    }
}

impl Tree {
    /// `klpgen build --sourcedir SRC` on the Debian system root, isolated, the other parts
    /// left to the caller's flags.
    fn explicit_debian(&self, patch: &Path, source: &Path) -> Command {
        let mut c = self.debian_command(patch);
        c.arg("--sourcedir").arg(source);
        c
    }
}

fn report_of(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&fs::read(path).unwrap()).unwrap()
}

#[test]
fn the_running_debian_kernel_is_the_default_target() {
    let t = Tree::debian();
    let p = t.patch("p.patch", &GOOD_PATCH.replace(" /* SLOW_MARK */", ""));
    let report = t.root.join("out/report.json");
    let before = snapshot_dir(&t.root);
    let o = t
        .debian_command(&p)
        .arg("--report")
        .arg(&report)
        .output()
        .unwrap();
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(0), "{err}");
    assert!(
        err.contains(&format!("target {DEB_RELEASE} (debian {DEB_VERSION})")),
        "{err}"
    );
    assert!(
        err.contains("unpacking") && err.contains("linux-source-6.1.tar.xz"),
        "{err}"
    );
    // Written: the cache (the unpacked sources included) and the output; the system root
    // (its directories' times too), the tree and HOME are untouched.
    let changed = assert_only_changed(&t, &before, &["cache", "out"]);
    let unpacked = format!("cache/dist/debian/{DEB_VERSION}/src/linux-source-6.1/lib/demo.c");
    assert!(changed.contains(&PathBuf::from(&unpacked)), "{changed:?}");
    let v = report_of(&report);
    assert_eq!(v["result"], "built");
    assert_eq!(v["kernel"]["release"], DEB_RELEASE);
    assert_eq!(v["kernel"]["distribution"], "debian");
    assert_eq!(v["kernel"]["package_version"], DEB_VERSION);
    assert_eq!(v["kernel"]["version"], DEB_UTS_VERSION);
    // The module's vermagic names the release (from the headers' .kernelvariables, which
    // klpgen's own build directory got), and the sources are unpacked only once.
    let ko = fs::read(t.root.join("out/livepatch-p.ko")).unwrap();
    let vermagic = format!("vermagic={DEB_RELEASE} ");
    assert!(ko.windows(vermagic.len()).any(|w| w == vermagic.as_bytes()));
    let o = t.debian_command(&p).output().unwrap();
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(0), "{err}");
    assert!(!err.contains("unpacking"), "{err}");
    // --release names the same kernel explicitly; the explicit flags of a Debian machine
    // (sources, headers, -dbg vmlinux, modules) give the same target.
    let o = t
        .debian_command(&p)
        .arg("--release")
        .arg(DEB_RELEASE)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let sys = t.root.join("sysroot");
    let o = t
        .explicit_debian(&p, &t.src())
        .arg("--builddir")
        .arg(sys.join(format!("usr/src/linux-headers-{DEB_RELEASE}")))
        .arg("--vmlinux")
        .arg(sys.join(format!("usr/lib/debug/boot/vmlinux-{DEB_RELEASE}")))
        .arg("--modules")
        .arg(sys.join(format!("lib/modules/{DEB_RELEASE}")))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
}

#[test]
fn missing_debian_packages_are_named_and_fetched() {
    let t = Tree::debian();
    let p = t.patch("p.patch", &GOOD_PATCH.replace(" /* SLOW_MARK */", ""));
    let sys = t.root.join("sysroot");
    let vmlinux = sys.join(format!("usr/lib/debug/boot/vmlinux-{DEB_RELEASE}"));
    // The -dbg package is not installed: refused, naming it, before anything is written.
    let dbg_files = t
        .root
        .join("archive")
        .join(format!("linux-image-{DEB_RELEASE}-dbg"));
    let dest = dbg_files.join(format!("usr/lib/debug/boot/vmlinux-{DEB_RELEASE}"));
    fs::create_dir_all(dest.parent().unwrap()).unwrap();
    fs::rename(&vmlinux, &dest).unwrap();
    let before = snapshot_dir(&t.root);
    let o = t.debian_command(&p).output().unwrap();
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("[target.package-missing]"), "{err}");
    assert!(
        err.contains(&format!(
            "install linux-image-{DEB_RELEASE}-dbg={DEB_VERSION}"
        )),
        "{err}"
    );
    assert!(err.contains("--fetch"), "{err}");
    assert!(assert_only_changed(&t, &before, &[]).is_empty());
    // --fetch downloads exactly that package at that version into the cache and builds.
    let o = t.debian_command(&p).arg("--fetch").output().unwrap();
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(0), "{err}");
    let log = fs::read_to_string(t.root.join("archive/apt-get.log")).unwrap();
    assert_eq!(
        log,
        format!("download linux-image-{DEB_RELEASE}-dbg={DEB_VERSION}\n")
    );
    let cached = t.root.join(format!(
        "cache/dist/debian/{DEB_VERSION}/root/usr/lib/debug/boot/vmlinux-{DEB_RELEASE}"
    ));
    assert!(cached.is_file());
    assert!(!vmlinux.exists(), "nothing is installed system-wide");
    // The next run finds it in the cache without fetching.
    let o = t.debian_command(&p).output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    // Another release, not installed: its version cannot be told without --fetch.
    let o = t
        .debian_command(&p)
        .arg("--release")
        .arg("6.1.0-50-cloud-amd64")
        .output()
        .unwrap();
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("[target.package-missing] cannot tell the Debian package version of kernel 6.1.0-50-cloud-amd64"),
        "{err}"
    );
    // Sources of another version installed: not used; the right one is named.
    fs::write(
        sys.join("var/lib/dpkg/status"),
        "Package: linux-source-6.1\nStatus: install ok installed\nVersion: 6.1.187-1\n\n",
    )
    .unwrap();
    fs::remove_dir_all(
        t.root
            .join("cache/dist/debian")
            .join(DEB_VERSION)
            .join("src"),
    )
    .unwrap();
    let o = t.debian_command(&p).output().unwrap();
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains(&format!("install linux-source-6.1={DEB_VERSION}")),
        "{err}"
    );
}

/// A Debian target given by explicit flags (the system root's headers, -dbg vmlinux and
/// modules unless `args` name another): refused before any work with `key`.
fn debian_mismatch(t: &Tree, p: &Path, args: &[&std::ffi::OsStr], key: &str) -> String {
    let sys = t.root.join("sysroot");
    let mut c = t.explicit_debian(p, &t.src());
    let has = |f: &str| args.iter().any(|a| a.to_str() == Some(f));
    if !has("--builddir") {
        c.arg("--builddir")
            .arg(sys.join(format!("usr/src/linux-headers-{DEB_RELEASE}")));
    }
    if !has("--vmlinux") {
        c.arg("--vmlinux")
            .arg(sys.join(format!("usr/lib/debug/boot/vmlinux-{DEB_RELEASE}")));
    }
    if !has("--modules") {
        c.arg("--modules")
            .arg(sys.join(format!("lib/modules/{DEB_RELEASE}")));
    }
    c.args(args);
    refused_before_work(t, &mut c, key)
}

#[test]
fn debian_parts_of_other_builds_are_refused_naming_the_packages() {
    let t = Tree::debian();
    let p = t.patch("p.patch", &GOOD_PATCH.replace(" /* SLOW_MARK */", ""));
    // Another ABI's vmlinux (6.1.0-56, package 6.1.192-2).
    let other = Deb {
        release: "6.1.0-56-cloud-amd64".into(),
        uts_version: "#1 SMP PREEMPT_DYNAMIC Debian 6.1.192-2 (2026-10-01)".into(),
    };
    let vm56 = t.root.join("vmlinux-56");
    deb_vmlinux(&t.src(), &other, &vm56);
    let err = debian_mismatch(
        &t,
        &p,
        &["--vmlinux".as_ref(), vm56.as_os_str()],
        "target.vmlinux-mismatch",
    );
    assert!(
        err.contains("is kernel 6.1.0-56-cloud-amd64") && err.contains("utsrelease.h"),
        "{err}"
    );
    assert!(
        err.contains(&format!("remedy: the vmlinux of {DEB_RELEASE} is /usr/lib/debug/boot/vmlinux-{DEB_RELEASE} in linux-image-{DEB_RELEASE}-dbg={DEB_VERSION}")),
        "{err}"
    );
    assert!(
        err.contains(
            "the headers of 6.1.0-56-cloud-amd64 are linux-headers-6.1.0-56-cloud-amd64=6.1.192-2"
        ),
        "{err}"
    );
    // Another build of the same release (same release, another package version).
    let rebuilt = Deb {
        release: DEB_RELEASE.into(),
        uts_version: "#1 SMP PREEMPT_DYNAMIC Debian 6.1.192-2 (2026-10-01)".into(),
    };
    let vm_rebuilt = t.root.join("vmlinux-rebuilt");
    deb_vmlinux(&t.src(), &rebuilt, &vm_rebuilt);
    let err = debian_mismatch(
        &t,
        &p,
        &["--vmlinux".as_ref(), vm_rebuilt.as_os_str()],
        "target.vmlinux-mismatch",
    );
    assert!(
        err.contains("is build \"#1 SMP PREEMPT_DYNAMIC Debian 6.1.192-2 (2026-10-01)\""),
        "{err}"
    );
    // Another flavour's headers (amd64 with the cloud-amd64 vmlinux): another release, and
    // another Module.symvers.
    let amd64 = t.root.join("headers-amd64");
    deb_headers(
        &amd64,
        &Deb {
            release: "6.1.0-57-amd64".into(),
            uts_version: DEB_UTS_VERSION.into(),
        },
    );
    fs::write(
        amd64.join("Module.symvers"),
        format!("{SYMVERS}0x12345678\tamd64_only\tvmlinux\tEXPORT_SYMBOL\t\n"),
    )
    .unwrap();
    let err = debian_mismatch(
        &t,
        &p,
        &["--builddir".as_ref(), amd64.as_os_str()],
        "target.vmlinux-mismatch",
    );
    assert!(
        err.contains("[target.symvers-mismatch]") && err.contains("amd64_only"),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "the Module.symvers of {DEB_RELEASE} is in linux-headers-{DEB_RELEASE}={DEB_VERSION}"
        )),
        "{err}"
    );
    // Sources of another version.
    let src187 = t.root.join("src-187");
    let o = Command::new("cp")
        .arg("-a")
        .arg(t.src())
        .arg(&src187)
        .output()
        .unwrap();
    assert!(o.status.success());
    fs::write(src187.join("Makefile"), DEB_MAKEFILE.replace("192", "187")).unwrap();
    let sys = t.root.join("sysroot");
    let mut c = t.explicit_debian(&p, &src187);
    c.arg("--builddir")
        .arg(sys.join(format!("usr/src/linux-headers-{DEB_RELEASE}")))
        .arg("--vmlinux")
        .arg(sys.join(format!("usr/lib/debug/boot/vmlinux-{DEB_RELEASE}")));
    let err = refused_before_work(&t, &mut c, "target.source-mismatch");
    assert!(
        err.contains("the source tree is version 6.1.187")
            && err.contains("built from 6.1.192 (package version debian 6.1.192-3"),
        "{err}"
    );
    assert!(
        err.contains(&format!("linux-source-6.1={DEB_VERSION}")),
        "{err}"
    );
    // Modules of another release (compressed, as newer distributions ship them).
    let mods56 = t.root.join("modules-56");
    deb_module(
        &mods56.join("kernel/lib/crc7.ko.xz"),
        "crc7",
        "6.1.0-56-cloud-amd64",
    );
    let err = debian_mismatch(
        &t,
        &p,
        &["--modules".as_ref(), mods56.as_os_str()],
        "target.module-mismatch",
    );
    assert!(
        err.contains("crc7.ko.xz was built for kernel 6.1.0-56-cloud-amd64"),
        "{err}"
    );
    assert!(
        err.contains(&format!("linux-image-{DEB_RELEASE}-unsigned={DEB_VERSION}")),
        "{err}"
    );
}

#[test]
fn a_stock_module_binds_against_its_installed_ko() {
    let t = Tree::debian();
    deb_stock_module(&t, true);
    let p = t.patch(
        "m.patch",
        "--- a/drivers/m/mod.c\n+++ b/drivers/m/mod.c\n@@ -6,4 +6,4 @@\n int mod_fn(int x)\n {\n-\treturn mod_helper(x) + 1;\n+\treturn mod_helper(x) + 2;\n }\n",
    );
    let report = t.root.join("out/m.json");
    let o = t
        .debian_command(&p)
        .arg("--report")
        .arg(&report)
        .output()
        .unwrap();
    let (out, err) = (String::from_utf8_lossy(&o.stdout), stderr(&o));
    assert_eq!(o.status.code(), Some(0), "{err}");
    // Linux 6.1 (its vmlinux has no clear_relocate_add) will not load the patched module a
    // second time while the livepatch is loaded: summary and report say so, with the remedy.
    let v: serde_json::Value = serde_json::from_slice(&fs::read(&report).unwrap()).unwrap();
    let reload = &v["module_reload"];
    assert_eq!(reload["modules"], serde_json::json!(["mod"]), "{v}");
    assert!(
        reload["reason"]
            .as_str()
            .is_some_and(|r| r.contains(DEB_RELEASE) && r.contains("clear_relocate_add")),
        "{reload}"
    );
    assert!(
        reload["remedy"]
            .as_str()
            .is_some_and(|r| r.contains("unload the livepatch first")),
        "{reload}"
    );
    assert!(
        out.contains("warning:         mod cannot be loaded again while this livepatch is loaded")
            && out.contains("    remedy: keep the patched modules loaded"),
        "{out}"
    );
    // The unit's module is the one kbuild names after it, found compressed in the modules
    // directory; its statics come from the -dbg copy (the installed one has no STT_FILE).
    assert!(
        err.contains("patching module mod (symbols from")
            && err.contains("kernel/drivers/m/mod.ko.xz (symbols from")
            && err.contains(&format!(
                "usr/lib/debug/lib/modules/{DEB_RELEASE}/kernel/drivers/m/mod.ko"
            )),
        "{err}"
    );
    assert!(out.contains(".klp.sym.mod.mod_helper,0"), "{out}");
    assert!(!out.contains(".klp.sym.vmlinux.mod_helper"), "{out}");
    // `klpgen check --modules` with the installed (stripped, compressed) modules reads the
    // same full copy, and passes.
    let sys = t.root.join("sysroot");
    let o = Command::new(KLPGEN)
        .arg("check")
        .arg(t.root.join("out/livepatch-m.ko"))
        .arg("--vmlinux")
        .arg(sys.join(format!("usr/lib/debug/boot/vmlinux-{DEB_RELEASE}")))
        .arg("--modules")
        .arg(sys.join(format!("lib/modules/{DEB_RELEASE}")))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(0), "{text}{}", stderr(&o));
    assert!(text.starts_with("OK "), "{text}");
}

// ---------------------------------------------------------------------------------------------
// docs/ci.md's script with klpgen itself (tests/ci_doc.rs runs it against a stand-in).

/// The `#!/bin/sh` block of docs/ci.md.
fn ci_script() -> String {
    let md = fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/ci.md")).unwrap();
    let start = md
        .find("```sh\n#!/bin/sh\n")
        .expect("docs/ci.md has the script")
        + 6;
    let len = md[start..].find("\n```\n").unwrap() + 1;
    md[start..start + len].to_string()
}

#[test]
fn the_ci_script_builds_each_kernel_of_a_list_and_fails_on_the_one_that_cannot() {
    let good = Tree::new(CONFIG);
    let nolp =
        Tree::new(&CONFIG.replace("CONFIG_LIVEPATCH=y\n", "# CONFIG_LIVEPATCH is not set\n"));
    let job = good.root.join("job");
    fs::create_dir_all(&job).unwrap();
    fs::write(job.join("build-livepatches.sh"), ci_script()).unwrap();
    fs::write(
        job.join("fix.patch"),
        GOOD_PATCH.replace(" /* SLOW_MARK */", ""),
    )
    .unwrap();
    let line = |name: &str, t: &Tree| {
        format!(
            "{name} {} {}\n",
            t.src().display(),
            t.root.join("build").display()
        )
    };
    let run = |list: &str| {
        fs::write(job.join("kernels.txt"), list).unwrap();
        let o = Command::new("sh")
            .arg("build-livepatches.sh")
            .current_dir(&job)
            .env(
                "PATH",
                format!(
                    "{}:{}",
                    good.root.join("bin").display(),
                    std::env::var("PATH").unwrap_or_default()
                ),
            )
            .env("KLPGEN", KLPGEN)
            .env("KLPGEN_CACHE_DIR", good.root.join("cache"))
            .output()
            .unwrap();
        (
            o.status.code(),
            String::from_utf8_lossy(&o.stdout).into_owned() + &stderr(&o),
        )
    };
    let (code, out) = run(&line("good", &good));
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("good: built livepatches/good/livepatch-fix.ko sha256 "),
        "{out}"
    );
    assert!(out.contains(&format!(" for {RELEASE}\n")), "{out}");
    let module = fs::read(job.join("livepatches/good/livepatch-fix.ko")).unwrap();
    let report: serde_json::Value =
        serde_json::from_slice(&fs::read(job.join("livepatches/good/report.json")).unwrap())
            .unwrap();
    use sha2::Digest;
    let sha: String = sha2::Sha256::digest(&module)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(report["module"]["sha256"], sha);
    assert!(out.contains(&sha), "{out}");

    let (code, out) = run(&(line("good", &good) + &line("nolp", &nolp)));
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("good: built "), "{out}");
    assert!(out.contains("nolp: error (exit 1): "), "{out}");
    assert!(out.contains("CONFIG_LIVEPATCH is not set"), "{out}");
    assert!(out.contains("1 of 2 kernels built"), "{out}");
    assert!(job.join("livepatches/nolp/report.json").is_file());
}

/// On a target whose machine the kernel's Rust support does not cover (a ppc64le or s390x
/// configuration), `--hook rust` is refused before any work, naming the machine and the reason,
/// and `--hook auto` says that it takes the C hook and why.
#[test]
fn the_hook_is_c_where_the_kernel_has_no_rust() {
    for (config, machine, kbuild) in [
        (
            "CONFIG_PPC64=y\nCONFIG_CPU_LITTLE_ENDIAN=y\n",
            "ppc64le",
            "powerpc",
        ),
        ("CONFIG_S390=y\nCONFIG_64BIT=y\n", "s390x", "s390"),
    ] {
        let t = Tree::new(&CONFIG.replace("CONFIG_X86_64=y\n", config));
        let p = t.patch("p.patch", GOOD_PATCH);
        let o = t.command(&p).args(["--hook", "rust"]).output().unwrap();
        let e = stderr(&o);
        assert_eq!(o.status.code(), Some(1), "{e}");
        let want = format!(
            "--hook rust: the target is {machine}, and the kernel's Rust support does not cover {kbuild} in Linux 6.12"
        );
        assert!(e.contains(&want), "{e}");
        assert!(e.contains("use --hook c (or auto)"), "{e}");
        // A patch that does not apply ends the run right after the hook is chosen (the
        // stand-in tree has x86-64 objects: nothing would build for the machine anyway).
        let bad = t.patch(
            "bad.patch",
            &GOOD_PATCH.replace("helper(x) + 1", "helper(x) + 9"),
        );
        let o = t.command(&bad).args(["--hook", "auto"]).output().unwrap();
        let e = stderr(&o);
        assert_ne!(o.status.code(), Some(0), "{e}");
        let want = format!("klpgen: hook: C ({machine} target: the kernel's Rust support");
        assert!(e.contains(&want), "{e}");
    }
}

// ---------------------------------------------------------------------------------------------
// Several targets in one run (`--kernel SPEC`, `--kernels FILE`).

/// `klpgen build` with the PATH and cache of `t` and no target flags (the caller adds
/// `--kernel`s).
fn targets_command(t: &Tree, patch: &Path) -> Command {
    let mut c = Command::new(KLPGEN);
    let path = format!(
        "{}:{}",
        t.root.join("bin").display(),
        std::env::var("PATH").unwrap_or_default()
    );
    c.env("PATH", path)
        .env("KLPGEN_CACHE_DIR", t.root.join("cache"))
        .arg("build")
        .arg("-o")
        .arg(t.root.join("out"))
        .arg(patch);
    c
}

fn spec_of(t: &Tree, name: &str) -> String {
    format!(
        "build={},source={},name={name}",
        t.root.join("build").display(),
        t.src().display()
    )
}

#[test]
fn several_targets_build_one_module_each_with_one_report() {
    let (a, b) = (Tree::new(CONFIG), Tree::new(CONFIG));
    let p = a.patch("p.patch", &GOOD_PATCH.replace(" /* SLOW_MARK */", ""));
    let report = a.root.join("report.json");
    // One target on the command line, the other from a --kernels file.
    let list = a.root.join("kernels");
    fs::write(&list, format!("# the fleet\n{}\n\n", spec_of(&b, "two"))).unwrap();
    let o = targets_command(&a, &p)
        .arg("--kernel")
        .arg(spec_of(&a, "one"))
        .arg("--kernels")
        .arg(&list)
        .arg("-j2")
        .arg("--report")
        .arg(&report)
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(0), "{}\n{out}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&fs::read(&report).unwrap()).unwrap();
    assert_eq!(v["schema"], "klpgen-targets/1");
    assert_eq!(v["result"], "built");
    assert_eq!(
        (v["built"].as_u64(), v["total"].as_u64()),
        (Some(2), Some(2))
    );
    let entries = v["targets"].as_array().unwrap();
    for (e, name) in entries.iter().zip(["one", "two"]) {
        assert_eq!(e["name"], name);
        assert_eq!(e["report"]["schema"], "klpgen-report/1");
        assert_eq!(e["report"]["result"], "built");
        let ko = a.root.join("out").join(name).join("livepatch-p.ko");
        assert_eq!(e["report"]["module"]["path"], ko.display().to_string());
        let sha = e["report"]["module"]["sha256"]
            .as_str()
            .unwrap()
            .to_string();
        // The table: target, verdict, module, sha256, time.
        let row = out
            .lines()
            .find(|l| l.starts_with(&format!("{name} ")))
            .unwrap_or_else(|| panic!("no row for {name}: {out}"));
        let cells: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(
            cells[..4],
            [name, "built", &ko.display().to_string(), &sha],
            "{row}"
        );
        assert!(cells[4].ends_with('s'), "{row}");
    }
    assert!(
        out.contains("target one:") && out.contains("target two:"),
        "{out}"
    );
    // Both work directories in the one cache, each with its own run directory.
    let runs: Vec<_> = fs::read_dir(a.root.join("cache/trees"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(runs.len(), 2, "{runs:?}");
}

#[test]
fn one_targets_refusal_does_not_stop_the_others() {
    let (a, b) = (Tree::new(CONFIG), Tree::new(CONFIG));
    let p = a.patch("p.patch", &GOOD_PATCH.replace(" /* SLOW_MARK */", ""));
    // b's target names a vmlinux of another release: refused before any work.
    let vm = fs::read(b.root.join("build/vmlinux")).unwrap();
    let from = b"Linux version 6.12.0-klpgen ";
    let at = vm.windows(from.len()).position(|w| w == from).unwrap();
    let mut other = vm.clone();
    other[at..at + from.len()].copy_from_slice(b"Linux version 6.12.1-klpgen ");
    let other_path = b.root.join("other-vmlinux");
    fs::write(&other_path, &other).unwrap();
    let report = a.root.join("report.json");
    let o = targets_command(&a, &p)
        .arg("--kernel")
        .arg(format!(
            "{},vmlinux={}",
            spec_of(&b, "bad"),
            other_path.display()
        ))
        .arg("--kernel")
        .arg(spec_of(&a, "good"))
        .arg("--report")
        .arg(&report)
        .output()
        .unwrap();
    let (out, err) = (String::from_utf8_lossy(&o.stdout), stderr(&o));
    assert_eq!(o.status.code(), Some(5), "{err}\n{out}");
    assert!(
        err.contains("1 of 2 targets not built: bad (refused)"),
        "{err}"
    );
    assert!(
        err.contains("bad: ") && err.contains("[target.vmlinux-mismatch]"),
        "{err}"
    );
    assert!(a.root.join("out/good/livepatch-p.ko").exists());
    assert!(!a.root.join("out/bad").exists());
    let v: serde_json::Value = serde_json::from_slice(&fs::read(&report).unwrap()).unwrap();
    assert_eq!(
        (v["result"].as_str(), v["exit_code"].as_u64()),
        (Some("partial"), Some(5))
    );
    assert_eq!(v["targets"][0]["report"]["result"], "refused");
    assert_eq!(v["targets"][0]["report"]["exit_code"], 2);
    assert!(v["targets"][0]["report"]["module"].is_null());
    assert_eq!(v["targets"][1]["report"]["result"], "built");
    let bad_row = out
        .lines()
        .find(|l| l.starts_with("bad "))
        .unwrap_or_default();
    assert_eq!(
        bad_row.split_whitespace().collect::<Vec<_>>()[..4],
        ["bad", "refused", "-", "-"]
    );

    // Every target refused alike: the run says refused, exit 2.
    let o = targets_command(&a, &p)
        .arg("--kernel")
        .arg(format!(
            "{},vmlinux={}",
            spec_of(&b, "bad"),
            other_path.display()
        ))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
}

#[test]
fn target_specs_are_checked_before_any_work() {
    let t = Tree::new(CONFIG);
    let p = t.patch("p.patch", &GOOD_PATCH.replace(" /* SLOW_MARK */", ""));
    let before = snapshot_dir(&t.root);
    for (args, want) in [
        (
            vec!["--kernel", "colour=blue"],
            "unknown item \"colour=blue\"",
        ),
        (
            vec![
                "--kernel",
                "build=/b1,name=x",
                "--kernel",
                "build=/b2,name=x",
            ],
            "two targets are named x",
        ),
        (
            vec!["--kernel", "build=/b,name=../up"],
            "target name \"../up\"",
        ),
    ] {
        let o = targets_command(&t, &p).args(&args).output().unwrap();
        assert_eq!(o.status.code(), Some(1), "{args:?}: {}", stderr(&o));
        assert!(stderr(&o).contains(want), "{args:?}: {}", stderr(&o));
    }
    // The report says so too, with no targets.
    let report = t.root.join("out/report.json");
    let o = targets_command(&t, &p)
        .args(["--kernel", "colour=blue", "--report"])
        .arg(&report)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&fs::read(&report).unwrap()).unwrap();
    assert_eq!(
        (v["schema"].as_str(), v["result"].as_str()),
        (Some("klpgen-targets/1"), Some("error"))
    );
    assert!(
        v["message"].as_str().unwrap().contains("colour=blue"),
        "{v}"
    );
    assert_eq!(v["targets"].as_array().map(Vec::len), Some(0));
    fs::remove_file(&report).unwrap();
    // --kernel replaces the target flags.
    let o = targets_command(&t, &p)
        .args(["--kernel", "build=/b", "--builddir", "/b"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("cannot be used with"), "{}", stderr(&o));
    let changed = assert_only_changed(&t, &before, &["out"]);
    assert_eq!(
        changed,
        [PathBuf::from("out")],
        "only the report's directory stays"
    );
}

// ---------------------------------------------------------------------------------------------
// `--package deb`: a Debian package of the livepatch.

fn run_ok(cmd: &mut Command) -> String {
    let o = cmd.output().unwrap();
    assert!(o.status.success(), "{cmd:?}: {}", stderr(&o));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A directory of stand-ins for the commands the maintainer scripts run: `uname -r` says
/// `$FAKE_RELEASE`; `modprobe`, `rmmod` and `depmod` append their arguments to `$FAKE_LOG`,
/// and `modprobe` makes the livepatch's sysfs directory as loading it would.
fn script_stand_ins(dir: &Path) -> PathBuf {
    let bin = dir.join("bin");
    fs::create_dir_all(&bin).unwrap();
    for (name, body) in [
        ("uname", "echo \"$FAKE_RELEASE\"\n"),
        (
            "modprobe",
            "echo \"modprobe $*\" >> \"$FAKE_LOG\"\nmkdir -p \"$KLPGEN_SYSFS/kernel/livepatch/livepatch_p\"\n",
        ),
        ("rmmod", "echo \"rmmod $*\" >> \"$FAKE_LOG\"\n"),
        ("depmod", "echo \"depmod $*\" >> \"$FAKE_LOG\"\n"),
    ] {
        fs::write(bin.join(name), format!("#!/bin/sh\n{body}")).unwrap();
        fs::set_permissions(bin.join(name), fs::Permissions::from_mode(0o755)).unwrap();
    }
    bin
}

#[test]
fn a_deb_of_the_livepatch_installs_into_a_root_and_its_scripts_load_and_unload_it() {
    let t = Tree::new(CONFIG);
    let p = t.patch("p.patch", &GOOD_PATCH.replace(" /* SLOW_MARK */", ""));
    let report = t.root.join("report.json");
    // Without a maintainer (and no DEBFULLNAME/DEBEMAIL): refused before any work.
    let o = t
        .command(&p)
        .env_remove("DEBFULLNAME")
        .env_remove("DEBEMAIL")
        .args(["--package", "deb"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("--package-maintainer"),
        "{}",
        stderr(&o)
    );
    assert!(!t.root.join("cache").exists());

    let o = t
        .command(&p)
        .env("SOURCE_DATE_EPOCH", "1795000000")
        .args(["--package", "deb", "--package-version", "1.2-1"])
        .args(["--package-maintainer", "Test Packager <test@example.org>"])
        .arg("--report")
        .arg(&report)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let pkg = format!("livepatch-p-{RELEASE}");
    let deb = t.root.join(format!("out/{pkg}_1.2-1_amd64.deb"));
    assert!(deb.is_file(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&fs::read(&report).unwrap()).unwrap();
    assert_eq!(v["package"]["path"], deb.display().to_string());
    assert_eq!(v["package"]["name"], pkg);
    assert_eq!(v["package"]["depends"], "kmod");
    // A target built from a build directory has no kernel package to depend on, and says so.
    let control = run_ok(Command::new("dpkg-deb").arg("-f").arg(&deb));
    assert!(control.contains(&format!("Package: {pkg}\n")), "{control}");
    assert!(control.contains("Depends: kmod\n"), "{control}");
    let words = control.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(words.contains("so it depends on none"), "{control}");

    // Installed into an empty root: the module where modprobe looks for that release, the
    // unit enabled, the report in its docs; the module byte for byte the one built.
    let root = t.root.join("root");
    for d in [
        "var/lib/dpkg/info",
        "var/lib/dpkg/updates",
        "var/lib/dpkg/triggers",
    ] {
        fs::create_dir_all(root.join(d)).unwrap();
    }
    fs::write(root.join("var/lib/dpkg/status"), "").unwrap();
    let dpkg = |args: &[&str]| {
        let mut c = Command::new("dpkg");
        c.arg(format!("--root={}", root.display()))
            .arg(format!("--log={}", t.root.join("dpkg.log").display()))
            .arg("--force-script-chrootless")
            .arg("--force-depends")
            .args(args);
        c
    };
    run_ok(dpkg(&["-i"]).arg(&deb));
    let status = run_ok(&mut dpkg(&["-s", &pkg]));
    assert!(status.contains("Status: install ok installed"), "{status}");
    let ko = root.join(format!("lib/modules/{RELEASE}/updates/livepatch-p.ko"));
    assert_eq!(
        fs::read(&ko).unwrap(),
        fs::read(t.root.join("out/livepatch-p.ko")).unwrap()
    );
    let unit = fs::read_to_string(root.join(format!("lib/systemd/system/{pkg}.service"))).unwrap();
    assert!(
        unit.contains(&format!("ConditionKernelVersion={RELEASE}\n")),
        "{unit}"
    );
    assert!(
        unit.contains("ExecStart=/sbin/modprobe livepatch-p\n"),
        "{unit}"
    );
    let wants = root.join(format!(
        "lib/systemd/system/sysinit.target.wants/{pkg}.service"
    ));
    assert!(fs::read_to_string(&wants).unwrap() == unit);
    let doc: serde_json::Value = serde_json::from_slice(
        &fs::read(root.join(format!("usr/share/doc/{pkg}/klpgen-report.json"))).unwrap(),
    )
    .unwrap();
    assert_eq!(doc["result"], "built");
    assert_eq!(doc["module"]["sha256"], v["module"]["sha256"]);
    run_ok(&mut dpkg(&["-r", &pkg]));
    assert!(!ko.exists() && !wants.exists());
    // With the same SOURCE_DATE_EPOCH a second build gives the same package byte for byte.
    let first = fs::read(&deb).unwrap();
    let o = t
        .command(&p)
        .env("SOURCE_DATE_EPOCH", "1795000000")
        .args(["--package", "deb", "--package-version", "1.2-1"])
        .args(["--package-maintainer", "Test Packager <test@example.org>"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(fs::read(&deb).unwrap() == first, "the package differs");

    // The maintainer scripts, against a fake sysfs and stand-in commands.
    let ctl = t.root.join("control");
    run_ok(Command::new("dpkg-deb").arg("-e").arg(&deb).arg(&ctl));
    let bin = script_stand_ins(&t.root);
    let sys = t.root.join("sys");
    let log = t.root.join("scripts.log");
    let script = |name: &str, arg: &str, release: &str| {
        let mut c = Command::new(ctl.join(name));
        c.arg(arg)
            .env(
                "PATH",
                format!(
                    "{}:{}",
                    bin.display(),
                    std::env::var("PATH").unwrap_or_default()
                ),
            )
            .env("KLPGEN_SYSFS", &sys)
            .env("FAKE_RELEASE", release)
            .env("FAKE_LOG", &log)
            .env_remove("DPKG_ROOT");
        run_ok(&mut c);
        let text = fs::read_to_string(&log).unwrap_or_default();
        let _ = fs::remove_file(&log);
        text
    };
    // Installed on its running kernel: loaded; not again when it is; never on another kernel.
    assert_eq!(
        script("postinst", "configure", RELEASE),
        "modprobe livepatch-p\n"
    );
    assert_eq!(script("postinst", "configure", RELEASE), "");
    let patch_dir = sys.join("kernel/livepatch/livepatch_p");
    fs::remove_dir_all(&patch_dir).unwrap();
    assert_eq!(script("postinst", "configure", "6.12.0-other"), "");
    // Removed: disabled through sysfs, then unloaded; on another kernel (the same livepatch
    // of another release may be the loaded one) nothing is touched.
    fs::create_dir_all(&patch_dir).unwrap();
    fs::create_dir_all(sys.join("module/livepatch_p")).unwrap();
    fs::write(patch_dir.join("enabled"), "1\n").unwrap();
    fs::write(patch_dir.join("transition"), "0\n").unwrap();
    assert_eq!(script("prerm", "remove", "6.12.0-other"), "");
    assert_eq!(
        fs::read_to_string(patch_dir.join("enabled")).unwrap(),
        "1\n"
    );
    assert_eq!(script("prerm", "remove", RELEASE), "rmmod livepatch_p\n");
    assert_eq!(
        fs::read_to_string(patch_dir.join("enabled")).unwrap(),
        "0\n"
    );
    // An upgrade keeps it loaded.
    fs::write(patch_dir.join("enabled"), "1\n").unwrap();
    assert_eq!(script("prerm", "upgrade", RELEASE), "");
    assert_eq!(
        fs::read_to_string(patch_dir.join("enabled")).unwrap(),
        "1\n"
    );
    // In another root (dpkg --root): depmod of that root's release, nothing loaded.
    let droot = t.root.join("droot");
    fs::create_dir_all(droot.join(format!("lib/modules/{RELEASE}/kernel"))).unwrap();
    fs::remove_dir_all(&patch_dir).unwrap();
    let mut c = Command::new(ctl.join("postinst"));
    c.arg("configure")
        .env(
            "PATH",
            format!(
                "{}:{}",
                bin.display(),
                std::env::var("PATH").unwrap_or_default()
            ),
        )
        .env("KLPGEN_SYSFS", &sys)
        .env("FAKE_RELEASE", RELEASE)
        .env("FAKE_LOG", &log)
        .env("DPKG_ROOT", &droot);
    run_ok(&mut c);
    assert_eq!(
        fs::read_to_string(&log).unwrap(),
        format!("depmod -b {} -a {RELEASE}\n", droot.display())
    );

    // lintian: no errors (its warnings for a package not meant for Debian's archive, such as
    // an initial upload closing no bug, are not looked at here).
    if Command::new("lintian").arg("--version").output().is_ok() {
        let o = Command::new("lintian").arg(&deb).output().unwrap();
        let out = String::from_utf8_lossy(&o.stdout);
        assert!(
            !out.lines().any(|l| l.starts_with("E: ")),
            "lintian:\n{out}"
        );
    }
}

#[test]
fn a_distribution_targets_deb_depends_on_its_exact_kernel_image() {
    // A Debian kernel named by its release in a --kernel SPEC: its package depends on that
    // image package at that version (signed or unsigned, the same kernel).
    let t = Tree::debian();
    // The package is made by the real dpkg-deb, not the stand-in that unpacks fetched
    // packages.
    let _ = fs::remove_file(t.root.join("bin/dpkg-deb"));
    let p = t.patch("p.patch", &GOOD_PATCH.replace(" /* SLOW_MARK */", ""));
    let report = t.root.join("report.json");
    let o = t
        .debian_command(&p)
        .arg("--kernel")
        .arg(format!("release={DEB_RELEASE}"))
        .args(["--package", "deb"])
        .env("DEBFULLNAME", "Test Packager")
        .env("DEBEMAIL", "test@example.org")
        .arg("--report")
        .arg(&report)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let v = report_of(&report);
    let entry = &v["targets"][0];
    assert_eq!(entry["name"], DEB_RELEASE);
    let want = format!(
        "kmod, linux-image-{DEB_RELEASE} (= {DEB_VERSION}) | linux-image-{DEB_RELEASE}-unsigned (= {DEB_VERSION})"
    );
    assert_eq!(entry["report"]["package"]["depends"], want.as_str());
    let deb = PathBuf::from(entry["report"]["package"]["path"].as_str().unwrap());
    assert_eq!(deb.parent().unwrap(), t.root.join("out").join(DEB_RELEASE));
    let name = deb.file_name().unwrap().to_string_lossy().into_owned();
    assert!(
        name.starts_with(&format!("livepatch-p-{DEB_RELEASE}_0~"))
            && name.ends_with("-1_amd64.deb"),
        "{name}"
    );
    let control = run_ok(Command::new("dpkg-deb").arg("-f").arg(&deb));
    assert!(control.contains(&format!("Depends: {want}\n")), "{control}");
    assert!(
        control.contains("Maintainer: Test Packager <test@example.org>\n"),
        "{control}"
    );
    let words = control.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(
        words.contains(&format!(
            "built for the debian kernel package version {DEB_VERSION}"
        )),
        "{control}"
    );
}

#[test]
fn a_kernels_file_names_distribution_releases_fetched_or_refused() {
    // One line a Debian release whose -dbg package is missing and fetched (`fetch`), one a
    // release that is neither installed nor fetched: the first builds, the second is
    // refused naming its packages, and the run exits 5.
    let t = Tree::debian();
    let p = t.patch("p.patch", &GOOD_PATCH.replace(" /* SLOW_MARK */", ""));
    let sys = t.root.join("sysroot");
    let vmlinux = sys.join(format!("usr/lib/debug/boot/vmlinux-{DEB_RELEASE}"));
    let dest = t
        .root
        .join("archive")
        .join(format!("linux-image-{DEB_RELEASE}-dbg"))
        .join(format!("usr/lib/debug/boot/vmlinux-{DEB_RELEASE}"));
    fs::create_dir_all(dest.parent().unwrap()).unwrap();
    fs::rename(&vmlinux, &dest).unwrap();
    let list = t.root.join("kernels");
    fs::write(
        &list,
        format!("# supported\n{DEB_RELEASE},fetch\nrelease=6.1.0-50-cloud-amd64,name=old\n"),
    )
    .unwrap();
    let report = t.root.join("report.json");
    let o = t
        .debian_command(&p)
        .arg("--kernels")
        .arg(&list)
        .arg("--report")
        .arg(&report)
        .output()
        .unwrap();
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(5), "{err}");
    let log = fs::read_to_string(t.root.join("archive/apt-get.log")).unwrap();
    assert_eq!(
        log,
        format!("download linux-image-{DEB_RELEASE}-dbg={DEB_VERSION}\n")
    );
    let v = report_of(&report);
    assert_eq!(v["targets"][0]["name"], DEB_RELEASE);
    assert_eq!(v["targets"][0]["spec"], format!("{DEB_RELEASE},fetch"));
    assert_eq!(v["targets"][0]["report"]["result"], "built");
    assert_eq!(
        v["targets"][0]["report"]["kernel"]["package_version"],
        DEB_VERSION
    );
    assert_eq!(v["targets"][1]["name"], "old");
    assert_eq!(v["targets"][1]["report"]["result"], "refused");
    let msg = v["targets"][1]["report"]["message"].as_str().unwrap();
    assert!(
        msg.contains("[target.package-missing]") && msg.contains("6.1.0-50-cloud-amd64"),
        "{msg}"
    );
    assert!(t
        .root
        .join(format!("out/{DEB_RELEASE}/livepatch-p.ko"))
        .is_file());
    assert!(!vmlinux.exists(), "nothing is installed system-wide");
}
