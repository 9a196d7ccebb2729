//! The make-free fast path in klpgen's build directory: whether a unit's cached original
//! object is up to date, decided as kbuild's `if_changed_dep` would, and the patched unit
//! compiled by running its recorded command directly.
//!
//! **Fresh** ([`Freshness::unit_is_fresh`]): the object and its record exist; the object is not
//! older than its source and any dependency the record lists (`$(wildcard ...)` entries that
//! exist included); the command would be the same, which klpgen knows because the last make
//! that built the unit here had the same *make key* ([`Freshness::key`]: make's arguments, the
//! configuration and `.kernelvariables`, the kbuild Makefiles that shape a command — the top
//! Makefile, `scripts/Makefile*`, `scripts/Kbuild.include`, `arch/*/Makefile*`, and the unit's
//! directory chain's Makefile and Kbuild — the compiler the record runs, and the kbuild
//! environment variables); and nothing kbuild's own `prepare` would redo is out of date: every
//! other record in the directory (generated headers, objtool, scripts, `asm-offsets.s`) is
//! fresh by the same rule, and `include/config/auto.conf` is newer than the configuration and
//! every Kconfig file it was made from. Anything else — a record without a command, a key
//! that differs, a missing file — is not fresh, and make runs as before.
//!
//! **Direct compile** ([`direct_command`]): the record's command, split into simple commands
//! joined by `;` only, each a plain program with plain words (no expansion, redirection,
//! pipe, subshell or variable assignment), with every word naming the object replaced by the
//! output path and the dependency file sent elsewhere; run from the build directory, where
//! kbuild runs it. The object is the one make would build (the output path is not part of it:
//! GCC leaves `-o` and `-M` options out of `DW_AT_producer`). Nothing of klpgen's build
//! directory is written, so the original objects stay where they are. A configuration whose
//! kbuild post-processes objects outside the recorded command (`recordmcount`) has no direct
//! compile.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use sha2::{Digest, Sha256};

use crate::depscan::cmdline::{self, Token};
use crate::depscan::graph::mtime_ns;
use crate::kernel::Tree;

/// Where klpgen records, per unit, the make key it was last built with.
const MADE: &str = ".klpgen-made.json";

/// Where klpgen records the targets of kbuild's `prepare` that were out of date right after
/// a make here: make with these arguments does not make them (the Rust crates' tools left by
/// a build with `CONFIG_RUST`, a host program of an option the command line unsets), so they
/// say nothing about what make would redo.
const LEFT_STALE: &str = ".klpgen-prepare-left-stale.json";

/// Environment variables kbuild reads (besides the `KBUILD_*` ones and the make arguments).
const KBUILD_ENV: &[&str] = &[
    "ARCH",
    "SRCARCH",
    "CROSS_COMPILE",
    "LLVM",
    "LLVM_IAS",
    "CC",
    "LD",
    "AR",
    "NM",
    "OBJCOPY",
    "OBJDUMP",
    "KCFLAGS",
    "KCPPFLAGS",
    "KAFLAGS",
    "KRUSTFLAGS",
    "LOCALVERSION",
    "KERNELRELEASE",
    "CPATH",
    "C_INCLUDE_PATH",
    "GCC_EXEC_PREFIX",
    "COMPILER_PATH",
    "SOURCE_DATE_EPOCH",
    "DEBIAN_KERNEL_USE_CCACHE",
];

/// Freshness checks for one build directory.
pub struct Freshness<'a> {
    tree: &'a Tree,
    dir: &'a Path,
    make_args: Vec<String>,
    made: BTreeMap<String, String>,
    /// Whether everything `prepare` makes is up to date (checked once).
    prepared: Option<Option<String>>,
    global: Option<String>,
    programs: BTreeMap<String, Option<PathBuf>>,
}

impl<'a> Freshness<'a> {
    pub fn new(tree: &'a Tree, dir: &'a Path, make_args: Vec<String>) -> Self {
        let made = fs::read(dir.join(MADE))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        Freshness {
            tree,
            dir,
            make_args,
            made,
            prepared: None,
            global: None,
            programs: BTreeMap::new(),
        }
    }

    /// The make key of `unit`: what kbuild's command for it depends on besides its sources.
    /// None when the record's compiler cannot be found.
    pub fn key(&mut self, unit: &str, record_cmd: &str) -> Option<String> {
        let global = self.global_key().to_string();
        let mut h = Sha256::new();
        h.update(global.as_bytes());
        let src = &self.tree.source;
        let mut d = Path::new(unit).parent();
        while let Some(dir) = d {
            for f in [src.join(dir).join("Makefile"), src.join(dir).join("Kbuild")] {
                hash_file_identity(&mut h, &f);
            }
            d = dir.parent().filter(|p| !p.as_os_str().is_empty());
        }
        // The compiler (and a launcher before it) the command runs.
        let toks = cmdline::tokens(record_cmd)?;
        for w in toks
            .iter()
            .map_while(cmdline::word)
            .take_while(|w| !w.starts_with('-'))
            .take(2)
        {
            let p = match self.programs.get(w) {
                Some(p) => p.clone(),
                None => {
                    let p = find_program(w, self.dir);
                    self.programs.insert(w.to_string(), p.clone());
                    p
                }
            }?;
            hash_file_identity(&mut h, &p);
        }
        Some(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
    }

    /// The part of every unit's make key that is the same for all units: make's arguments,
    /// the configuration, `.kernelvariables`, the shared kbuild Makefiles, the environment.
    fn global_key(&mut self) -> &str {
        if self.global.is_none() {
            let mut h = Sha256::new();
            h.update(b"klpgen-make-key/1\0");
            for a in &self.make_args {
                h.update(a.as_bytes());
                h.update([0]);
            }
            h.update(self.tree.config_text.as_bytes());
            h.update(fs::read(self.dir.join(".kernelvariables")).unwrap_or_default());
            let src = &self.tree.source;
            let mut files: Vec<PathBuf> =
                vec![src.join("Makefile"), src.join("scripts/Kbuild.include")];
            files.extend(matching(&src.join("scripts"), "Makefile"));
            if let Ok(rd) = fs::read_dir(src.join("arch")) {
                let mut arches: Vec<PathBuf> = rd.flatten().map(|e| e.path()).collect();
                arches.sort();
                for a in arches {
                    files.extend(matching(&a, "Makefile"));
                }
            }
            for f in files {
                hash_file_identity(&mut h, &f);
            }
            let mut env: Vec<(String, String)> = std::env::vars()
                .filter(|(k, _)| k.starts_with("KBUILD_") || KBUILD_ENV.contains(&k.as_str()))
                .collect();
            env.sort();
            for (k, v) in env {
                h.update(k.as_bytes());
                h.update(b"=");
                h.update(v.as_bytes());
                h.update([0]);
            }
            self.global = Some(h.finalize().iter().map(|b| format!("{b:02x}")).collect());
        }
        self.global.as_deref().unwrap_or_default()
    }

    /// After make built `units` here: their records are the commands of the current key.
    pub fn made(&mut self, units: &[String]) -> Result<()> {
        for u in units {
            let Ok(rec) = fs::read_to_string(record_of(self.dir, u)) else {
                self.made.remove(u);
                continue;
            };
            match cmdline::record_command(&rec, u).and_then(|c| self.key(u, &c)) {
                Some(k) => {
                    self.made.insert(u.clone(), k);
                }
                None => {
                    self.made.remove(u);
                }
            }
        }
        let path = self.dir.join(MADE);
        let tmp = path.with_extension("tmp");
        fs::write(&tmp, serde_json::to_vec(&self.made)?)?;
        fs::rename(&tmp, &path).with_context(|| format!("cannot write {}", path.display()))?;
        // make has just run `prepare`: what is still out of date is not make's to redo.
        let left: Vec<String> = prepare_targets(self.dir, self.skips_rust())
            .into_iter()
            .filter(|(_, target, text)| {
                !text
                    .as_ref()
                    .is_some_and(|text| target_is_fresh(self.dir, target, text))
            })
            .map(|(rel, _, _)| rel)
            .collect();
        let path = self.dir.join(LEFT_STALE);
        let tmp = path.with_extension("tmp");
        fs::write(&tmp, serde_json::to_vec(&left)?)?;
        fs::rename(&tmp, &path).with_context(|| format!("cannot write {}", path.display()))?;
        self.prepared = None;
        Ok(())
    }

    /// Whether make's arguments unset `CONFIG_RUST`: kbuild then never visits `rust/`.
    fn skips_rust(&self) -> bool {
        self.make_args.iter().any(|a| a == "CONFIG_RUST=")
    }

    /// Whether make would leave `unit`'s object as it is (see the module doc).
    pub fn unit_is_fresh(&mut self, unit: &str) -> bool {
        self.stale_because(unit).is_none()
    }

    /// Why make would rebuild `unit` (or might: the first reason found), None when it is
    /// fresh; for `--verbose`.
    pub fn stale_because(&mut self, unit: &str) -> Option<String> {
        let Ok(rec) = fs::read_to_string(record_of(self.dir, unit)) else {
            return Some(format!("{unit} has no record here"));
        };
        let Some(cmd) = cmdline::record_command(&rec, unit) else {
            return Some(format!("{unit}'s record has no command"));
        };
        let Some(key) = self.key(unit, &cmd) else {
            return Some(format!("the compiler of {unit}'s record is not found"));
        };
        if self.made.get(unit) != Some(&key) {
            return Some(format!(
                "{unit} was last made here with other make arguments, configuration, Makefiles, compiler or environment"
            ));
        }
        if !target_is_fresh(self.dir, &self.dir.join(unit), &rec) {
            return Some(format!("{unit} is older than a file it was made from"));
        }
        if self.prepared.is_none() {
            // With `CONFIG_RUST=` on make's command line kbuild never visits `rust/`, so
            // what it holds (left by a build with the crates) is not make's to redo.
            let left: Vec<String> = fs::read(self.dir.join(LEFT_STALE))
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok())
                .unwrap_or_default();
            self.prepared = Some(prepare_is_fresh(self.dir, self.skips_rust(), &left));
        }
        self.prepared.clone().flatten()
    }
}

/// A file's path, size and modification time into the key (`-` when it does not exist).
fn hash_file_identity(h: &mut Sha256, f: &Path) {
    h.update(f.as_os_str().as_encoded_bytes());
    match fs::metadata(f) {
        Ok(m) => {
            h.update(m.len().to_le_bytes());
            h.update(mtime_ns(&m).to_le_bytes());
        }
        Err(_) => h.update(b"-"),
    }
}

/// Files of `dir` whose names start with `prefix`, sorted.
fn matching(dir: &Path, prefix: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .filter(|e| e.file_name().to_string_lossy().starts_with(prefix))
                .map(|e| e.path())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// A program as the shell would find it: a path (relative to `cwd`), or on `PATH`.
fn find_program(name: &str, cwd: &Path) -> Option<PathBuf> {
    if name.contains('/') {
        let p = cwd.join(name);
        return p.is_file().then_some(p);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// `dir/.name.cmd` of the target `dir/name` under `root`.
pub fn record_of(root: &Path, target: &str) -> PathBuf {
    let p = root.join(target);
    let name = p
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    p.with_file_name(format!(".{name}.cmd"))
}

/// The files a record lists as what its target was made from: every word after the command
/// line that names an existing file (relative to `dir`, where kbuild runs), `$(wildcard X)`
/// as X. kbuild's `deps_<target> :=` lists, and the `target: deps` lines of the tools'
/// builds, are both read this way.
fn record_deps(dir: &Path, record: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for line in record.lines() {
        let l = line.trim_start();
        if l.starts_with("cmd_") || l.starts_with("savedcmd_") {
            continue;
        }
        for w in l.split_whitespace() {
            let w = w
                .strip_prefix("$(wildcard")
                .unwrap_or(w)
                .trim_end_matches(')');
            if w.is_empty() || w == "\\" || w.ends_with(':') || w.starts_with('$') || w == ":=" {
                continue;
            }
            let p = if Path::new(w).is_absolute() {
                PathBuf::from(w)
            } else {
                dir.join(w)
            };
            if p.is_file() {
                out.push(p);
            }
        }
    }
    out
}

/// kbuild's rule: the target exists and no file it was made from is newer.
fn target_is_fresh(dir: &Path, target: &Path, record: &str) -> bool {
    let Ok(t) = fs::metadata(target).map(|m| mtime_ns(&m)) else {
        return false;
    };
    record_deps(dir, record)
        .iter()
        .all(|d| fs::metadata(d).is_ok_and(|m| mtime_ns(&m) <= t))
}

/// [`target_is_fresh`] for what the record lists outside `except` (a directory whose files
/// the caller has compared by content).
pub fn fresh_outside(dir: &Path, target: &Path, record: &str, except: &Path) -> bool {
    let Ok(t) = fs::metadata(target).map(|m| mtime_ns(&m)) else {
        return false;
    };
    record_deps(dir, record)
        .iter()
        .filter(|d| !d.starts_with(except))
        .all(|d| fs::metadata(d).is_ok_and(|m| mtime_ns(&m) <= t))
}

/// Whether what kbuild's `prepare` makes is up to date: every record of the directory that
/// is not a unit's (generated headers, scripts, objtool, offsets) is fresh, and the
/// configuration's `auto.conf` is newer than `.config` and every Kconfig file it came from.
fn prepare_is_fresh(dir: &Path, skip_rust: bool, left_stale: &[String]) -> Option<String> {
    let auto = dir.join("include/config/auto.conf");
    let Ok(auto_time) = fs::metadata(&auto).map(|m| mtime_ns(&m)) else {
        return Some(format!("{} is missing", auto.display()));
    };
    let mut kconfig = vec![dir.join(".config")];
    if let Ok(text) = fs::read_to_string(dir.join("include/config/auto.conf.cmd")) {
        kconfig.extend(record_deps(dir, &text));
        // Kconfig files are named relative to the source tree there.
        let src = dir.join("source");
        kconfig.extend(
            text.lines()
                .map(str::trim)
                .map(|l| l.trim_end_matches('\\').trim())
                .filter(|l| l.contains("Kconfig"))
                .map(|l| src.join(l))
                .filter(|p| p.is_file()),
        );
    } else {
        return Some("include/config/auto.conf.cmd is missing".into());
    }
    if let Some(f) = kconfig
        .iter()
        .find(|f| !fs::metadata(f).is_ok_and(|m| mtime_ns(&m) <= auto_time))
    {
        return Some(format!(
            "{} is newer than include/config/auto.conf",
            f.display()
        ));
    }
    for (rel, target, text) in prepare_targets(dir, skip_rust) {
        let fresh = text.is_some_and(|text| target_is_fresh(dir, &target, &text));
        if !left_stale.contains(&rel) && !fresh {
            return Some(format!(
                "{rel} (made by kbuild's prepare) is older than a file it was made from"
            ));
        }
    }
    None
}

/// The records of the directory that are not a unit's (generated headers, scripts, objtool,
/// offsets), for targets that exist (kbuild keeps some records of intermediate files it
/// deletes): (target relative to `dir`, target, record; None when it cannot be read).
fn prepare_targets(dir: &Path, skip_rust: bool) -> Vec<(String, PathBuf, Option<String>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            let name = e.file_name();
            let name = name.to_string_lossy();
            let Ok(ft) = e.file_type() else { continue };
            if ft.is_dir() {
                let rust = skip_rust && d == dir && name == "rust";
                if name != "source" && !name.starts_with(".klpgen") && !rust {
                    stack.push(e.path());
                }
                continue;
            }
            let Some(target) = name.strip_prefix('.').and_then(|n| n.strip_suffix(".cmd")) else {
                continue;
            };
            let rel = d.strip_prefix(dir).unwrap_or(Path::new(""));
            let is_unit =
                target.ends_with(".o") && !rel.starts_with("scripts") && !rel.starts_with("tools");
            if is_unit || target.ends_with(".ko") || target.ends_with(".mod") {
                continue;
            }
            let t = d.join(target);
            if !t.exists() {
                continue;
            }
            let text = fs::read_to_string(e.path()).ok();
            out.push((rel.join(target).to_string_lossy().into_owned(), t, text));
        }
    }
    out.sort();
    out
}

/// The commands of `unit`'s record, ready to run from the build directory with the object
/// written to `output` and the dependency file to `depfile`: None when the record is not a
/// plain `;`-separated list of plain commands (see the module doc).
pub fn direct_command(
    record: &str,
    unit: &str,
    output: &Path,
    depfile: &Path,
) -> Option<Vec<Vec<String>>> {
    let cmd = cmdline::record_command(record, unit)?;
    let toks = cmdline::tokens(&cmd)?;
    let out = output.to_string_lossy().into_owned();
    let mut commands = Vec::new();
    for (words, op) in cmdline::commands(&toks) {
        if op.as_deref().is_some_and(|o| o != ";") {
            return None;
        }
        let mut argv = Vec::new();
        for t in &words {
            let Token::Word { text, dynamic } = t else {
                return None;
            };
            if *dynamic {
                return None;
            }
            argv.push(if text == unit {
                out.clone()
            } else if let Some(flag) = ["-Wp,-MMD,", "-Wp,-MD,"]
                .iter()
                .find(|f| text.starts_with(**f))
            {
                format!("{flag}{}", depfile.display())
            } else {
                text.clone()
            });
        }
        // A variable assignment before the program (`VAR=value cmd`) is not a plain command.
        if argv.first().is_none_or(|p| p.contains('=')) {
            return None;
        }
        commands.push(argv);
    }
    // Exactly one compile of the unit, whose object is the output.
    let compiles = commands
        .iter()
        .filter(|c| {
            c.windows(3)
                .any(|w| w[0] == "-c" && w[1] == "-o" && w[2] == out)
        })
        .count();
    (compiles == 1).then_some(commands)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_records_command_runs_with_another_output() {
        let rec = "savedcmd_fs/proc/version.o := gcc -Wp,-MMD,fs/proc/.version.o.d -nostdinc -DKBUILD_MODNAME='\"version\"' -c -o fs/proc/version.o /s/fs/proc/version.c  ; ./tools/objtool/objtool --orc fs/proc/version.o\n\nsource_fs/proc/version.o := /s/fs/proc/version.c\n";
        let cmds = direct_command(
            rec,
            "fs/proc/version.o",
            Path::new("/run/patched/fs/proc/version.o"),
            Path::new("/run/version.d"),
        )
        .unwrap();
        assert_eq!(
            cmds,
            [
                vec![
                    "gcc",
                    "-Wp,-MMD,/run/version.d",
                    "-nostdinc",
                    "-DKBUILD_MODNAME=\"version\"",
                    "-c",
                    "-o",
                    "/run/patched/fs/proc/version.o",
                    "/s/fs/proc/version.c"
                ],
                vec![
                    "./tools/objtool/objtool",
                    "--orc",
                    "/run/patched/fs/proc/version.o"
                ]
            ]
        );
        // Anything but plain commands joined by `;` is left to make.
        for bad in [
            "savedcmd_a.o := gcc -c -o a.o a.c && true\n",
            "savedcmd_a.o := gcc -c -o a.o a.c > log\n",
            "savedcmd_a.o := gcc -c -o a.o $(X) a.c\n",
            "savedcmd_a.o := RUST_MODFILE=x rustc -c -o a.o a.c\n",
            "savedcmd_a.o := gcc -o a.o a.c\n",
        ] {
            assert!(
                direct_command(bad, "a.o", Path::new("/o/a.o"), Path::new("/o/a.d")).is_none(),
                "{bad}"
            );
        }
    }

    #[test]
    fn freshness_follows_the_record() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        fs::create_dir_all(dir.join("fs")).unwrap();
        fs::write(dir.join("fs/a.c"), "int a;\n").unwrap();
        fs::write(dir.join("fs/a.h"), "\n").unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        fs::write(dir.join("fs/a.o"), "obj").unwrap();
        let rec = "savedcmd_fs/a.o := gcc -c -o fs/a.o fs/a.c\n\nsource_fs/a.o := fs/a.c\n\ndeps_fs/a.o := \\\n  fs/a.h \\\n    $(wildcard include/config/NONE) \\\n\nfs/a.o: $(deps_fs/a.o)\n";
        fs::write(dir.join("fs/.a.o.cmd"), rec).unwrap();
        assert!(target_is_fresh(dir, &dir.join("fs/a.o"), rec));
        let deps = record_deps(dir, rec);
        assert_eq!(deps, [dir.join("fs/a.c"), dir.join("fs/a.h")]);
        std::thread::sleep(std::time::Duration::from_millis(20));
        fs::write(dir.join("fs/a.h"), "#define X\n").unwrap();
        assert!(!target_is_fresh(dir, &dir.join("fs/a.o"), rec));
    }

    #[test]
    fn prepare_outside_rust_decides_when_make_skips_rust() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        fs::create_dir_all(dir.join("include/config")).unwrap();
        fs::create_dir_all(dir.join("rust")).unwrap();
        fs::write(dir.join(".config"), "CONFIG_RUST=y\n").unwrap();
        fs::write(
            dir.join("include/config/auto.conf.cmd"),
            "deps_config := \\\n",
        )
        .unwrap();
        fs::write(dir.join("rust/macros.rs"), "").unwrap();
        fs::write(dir.join("rust/libmacros.so"), "").unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        fs::write(dir.join("include/config/auto.conf"), "CONFIG_RUST=y\n").unwrap();
        // A target left by a build with the crates, older than its source.
        fs::write(
            dir.join("rust/.libmacros.so.cmd"),
            "savedcmd_rust/libmacros.so := rustc x\n\nrust/libmacros.so: rust/macros.rs\n",
        )
        .unwrap();
        fs::write(dir.join("rust/macros.rs"), "//\n").unwrap();
        assert!(
            prepare_is_fresh(dir, false, &[]).is_some_and(|why| why.contains("rust/libmacros.so"))
        );
        assert_eq!(prepare_is_fresh(dir, true, &[]), None);
        // What the last make left out of date is not make's to redo.
        assert_eq!(
            prepare_is_fresh(dir, false, &["rust/libmacros.so".to_string()]),
            None
        );
    }
}
