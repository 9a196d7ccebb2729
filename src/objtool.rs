//! The target's objtool, run on the livepatch object on targets where kbuild runs objtool on
//! each object as it compiles it (x86-64 ORC without IBT or Clang LTO). There the linked
//! module gets no objtool run of its own, so klpgen gives `klpgen_patch.o` the run kbuild gives
//! any module object: same binary, same options (from the target's kbuild records), plus
//! `--module`. ORC for the new functions comes from it (reliable stack traces for the
//! livepatch transition), and so do `.return_sites`, `.retpoline_sites`, `.call_sites` and
//! `.static_call_sites`, which the plan leaves out as it does for delayed objtool.
//!
//! objtool's output for the new code always comes from the target's own objtool, never from
//! copies of the patched object's entries (`PlanOptions::objtool_regenerates`). With delayed
//! objtool (IBT, or Clang LTO) kbuild runs it on the linked module (`--link --module`), and
//! copies would collide with what it writes. Per object (the e2e case `proc-string-noibt`),
//! the options come from the `savedcmd_<unit> := <cc ...> ; ./tools/objtool/objtool <options>
//! <unit>` record (`cmd_` before Linux 6.3) of the first patched unit that has one, `--link`
//! dropped: in klpgen's own build directory first, where it has just built them (so a target
//! that keeps no records, a distribution's headers, needs none), then in the target's records
//! (else `kernel/fork.o`, `kernel/exit.o`, `init/main.o`). Its output lines are printed and kept in
//! the report (`objtool_warnings`); a failing run fails the build. ORC matters: the consistency
//! model needs reliable stack traces, and a task whose stack runs through code without ORC
//! cannot be switched. objtool's `--prefix` names each function's padding `__pfx_<name>`
//! again, so the plan does not copy those symbols. Targets with objtool per object but no ORC
//! keep per-entry copies; `__mcount_loc` comes from GCC (`-mrecord-mcount`) and is always
//! carried per entry.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, Result};

use crate::kernel::Tree;
use crate::process::{self, Interrupt};

/// Objects of vmlinux whose records are read when none of the patched units has one with an
/// objtool command (they are built whenever objtool is; any standard object would do).
const FALLBACK_UNITS: &[&str] = &["kernel/fork.o", "kernel/exit.o", "init/main.o"];

/// How kbuild runs objtool on objects of this target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Objtool {
    pub binary: PathBuf,
    /// Options for a module object (`--module` included), in the order kbuild gave them.
    pub options: Vec<String>,
    /// The record the options were read from.
    pub source: String,
}

/// The objtool options of the command recorded for `obj` (as named in the record, relative to
/// the build root) in the text of its kbuild `.cmd` file: the options after the objtool program
/// in the `savedcmd_<obj> := ...` line (`cmd_` before Linux 6.3), without the object path. None when the record runs no objtool.
pub fn options_from_record(text: &str, obj: &str) -> Option<Vec<String>> {
    let prefix = format!("cmd_{obj} := ");
    let line = text.lines().find_map(|l| {
        l.strip_prefix("saved")
            .unwrap_or(l)
            .strip_prefix(prefix.as_str())
    })?;
    for part in line.split(';') {
        let mut words = part.split_whitespace();
        let Some(prog) = words.next() else { continue };
        if prog != "objtool" && !prog.ends_with("/tools/objtool/objtool") {
            continue;
        }
        let mut opts: Vec<String> = words.map(str::to_string).collect();
        // The last word is the object itself.
        if opts.last().is_some_and(|w| !w.starts_with('-')) {
            opts.pop();
        }
        return Some(opts);
    }
    None
}

/// Adds `--module` (a livepatch is a module) and drops `--link` (the livepatch object is one
/// object, not a linked vmlinux or module).
fn for_module(mut opts: Vec<String>) -> Vec<String> {
    opts.retain(|o| o != "--link");
    if !opts.iter().any(|o| o == "--module") {
        opts.push("--module".into());
    }
    opts
}

/// Whether this target needs klpgen to run objtool on the livepatch object: ORC, objtool,
/// and no delayed objtool on linked modules.
pub fn per_object(tree: &Tree) -> bool {
    let c = &tree.config;
    c.is_set("CONFIG_OBJTOOL") && c.is_set("CONFIG_UNWINDER_ORC") && !tree.delayed_objtool()
}

/// The target's objtool and options. First from klpgen's own build directory `own` (its
/// `O=` directory with the target's configuration, where it has just compiled the patched
/// units, so their records are there whether or not the target kept any), with the objtool
/// kbuild built there; then from the target's records (the patched units, then a few objects
/// every such kernel has) with the target's objtool. The records name the program relative to
/// the directory they belong to (`./tools/objtool/objtool`).
pub fn locate(tree: &Tree, own: &Path, units: &[String]) -> Result<Objtool> {
    let unit_names = || units.iter().map(String::as_str);
    let searches: [(&Path, Vec<&str>); 2] = [
        (
            own,
            unit_names().chain(FALLBACK_UNITS.iter().copied()).collect(),
        ),
        (
            &tree.build,
            unit_names().chain(FALLBACK_UNITS.iter().copied()).collect(),
        ),
    ];
    for (dir, candidates) in &searches {
        for unit in candidates {
            let path = record_path(dir, unit);
            let Ok(text) = fs::read_to_string(&path) else {
                continue;
            };
            let Some(opts) = options_from_record(&text, unit) else {
                continue;
            };
            let binary = dir.join("tools/objtool/objtool");
            if !binary.is_file() {
                bail!(
                    "this target runs objtool on each object (ORC without IBT) and klpgen runs it on the livepatch object with the options of {}, but {} is missing (kbuild builds it in its prepare step: remove {} to have klpgen prepare it again)",
                    path.display(),
                    binary.display(),
                    own.display()
                );
            }
            return Ok(Objtool {
                binary,
                options: for_module(opts),
                source: path.display().to_string(),
            });
        }
    }
    bail!(
        "this target runs objtool on each object (ORC without IBT) but no kbuild record shows its objtool command: neither the units klpgen compiled in {} nor the target's records in {} (looked at {} and {}); klpgen needs the target's objtool options to give the livepatch its ORC data. Add `-t kernel/fork.o` (a standard object of every kernel, compiled with objtool): klpgen then builds it and reads the options from its record",
        own.display(),
        tree.build.display(),
        if units.is_empty() { "no patched unit".to_string() } else { units.join(", ") },
        FALLBACK_UNITS.join(", ")
    )
}

/// `dir/.name.o.cmd` of the unit `dir/name.o`.
fn record_path(build: &Path, unit: &str) -> PathBuf {
    let p = build.join(unit);
    let name = p
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    p.with_file_name(format!(".{name}.cmd"))
}

/// Runs objtool on `obj` (in place); returns its warnings (empty when it said nothing). A
/// failing run is an error carrying objtool's output.
pub fn run(tool: &Objtool, obj: &Path, log: &Path, intr: &Interrupt) -> Result<Vec<String>> {
    let mut args: Vec<&std::ffi::OsStr> = tool.options.iter().map(|o| o.as_ref()).collect();
    args.push(obj.as_os_str());
    let bin = tool.binary.to_string_lossy().into_owned();
    let out = process::run(&bin, args, None, &[], Some(log), intr)?;
    let text: Vec<String> = format!("{}\n{}", out.stdout, out.stderr)
        .lines()
        .map(str::trim_end)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect();
    if !out.success {
        bail!(
            "the target's objtool ({} {}) failed on the livepatch object:\n{}",
            tool.binary.display(),
            tool.options.join(" "),
            text.join("\n")
        );
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    // As kbuild 6.12 records a vmlinux object on x86-64 with ORC, retpoline and rethunk and no
    // IBT (shortened compiler command).
    const VMLINUX_RECORD: &str = "savedcmd_kernel/fork.o := gcc -Wp,-MMD,kernel/.fork.o.d -nostdinc -O2 -c -o kernel/fork.o kernel/fork.c  ; ./tools/objtool/objtool --hacks=jump_label --hacks=noinstr --orc --retpoline --rethunk --sls --static-call --uaccess --prefix=16   kernel/fork.o\n\nsource_kernel/fork.o := kernel/fork.c\n";

    #[test]
    fn reads_the_objtool_options_of_a_record() {
        // kbuild writes `savedcmd_`; older kbuild `cmd_`: the prefix search finds both.
        let opts = options_from_record(VMLINUX_RECORD, "kernel/fork.o").unwrap();
        assert_eq!(
            opts,
            [
                "--hacks=jump_label",
                "--hacks=noinstr",
                "--orc",
                "--retpoline",
                "--rethunk",
                "--sls",
                "--static-call",
                "--uaccess",
                "--prefix=16"
            ]
        );
        assert_eq!(
            for_module(opts).last().map(String::as_str),
            Some("--module")
        );
    }

    #[test]
    fn module_records_keep_their_module_flag_once() {
        let rec = "savedcmd_fs/binfmt_misc.o := gcc -c -o fs/binfmt_misc.o fs/binfmt_misc.c ; ./tools/objtool/objtool --orc --module fs/binfmt_misc.o\n";
        let opts = for_module(options_from_record(rec, "fs/binfmt_misc.o").unwrap());
        assert_eq!(opts, ["--orc", "--module"]);
    }

    #[test]
    fn records_without_objtool_or_of_other_objects_give_nothing() {
        let rec = "savedcmd_kernel/fork.o := gcc -c -o kernel/fork.o kernel/fork.c\n";
        assert_eq!(options_from_record(rec, "kernel/fork.o"), None);
        assert_eq!(options_from_record(VMLINUX_RECORD, "kernel/exit.o"), None);
    }

    fn tree(build: &Path) -> Tree {
        Tree::for_tests(&build.join("src"), build, "", "")
    }

    fn put(dir: &Path, rel: &str, text: &str) {
        let p = dir.join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, text).unwrap();
    }

    #[test]
    fn options_come_from_klpgens_own_build_first() {
        let tmp = tempfile::tempdir().unwrap();
        let (own, target) = (tmp.path().join("own"), tmp.path().join("target"));
        fs::create_dir_all(&target).unwrap();
        // A target without records (a distribution's headers): klpgen's own record of the
        // patched unit, and the objtool built there.
        put(
            &own,
            "fs/proc/.version.o.cmd",
            "cmd_fs/proc/version.o := gcc-12 -c -o fs/proc/version.o fs/proc/version.c ; ./tools/objtool/objtool --orc --retpoline fs/proc/version.o\n",
        );
        put(&own, "tools/objtool/objtool", "");
        let t = tree(&target);
        let units = vec!["fs/proc/version.o".to_string()];
        let tool = locate(&t, &own, &units).unwrap();
        assert_eq!(tool.binary, own.join("tools/objtool/objtool"));
        assert_eq!(tool.options, ["--orc", "--retpoline", "--module"]);
        assert!(
            tool.source.ends_with("fs/proc/.version.o.cmd"),
            "{}",
            tool.source
        );
        // Neither has one: the refusal names both places and the remedy.
        let err = locate(&t, &tmp.path().join("none"), &units)
            .unwrap_err()
            .to_string();
        assert!(err.contains("-t kernel/fork.o"), "{err}");
        assert!(err.contains(&target.display().to_string()), "{err}");
        // The target's record, with the target's objtool, when klpgen's has none.
        put(&target, "kernel/.fork.o.cmd", VMLINUX_RECORD);
        put(&target, "tools/objtool/objtool", "");
        let tool = locate(&t, &tmp.path().join("none"), &units).unwrap();
        assert_eq!(tool.binary, target.join("tools/objtool/objtool"));
        assert_eq!(tool.options.last().map(String::as_str), Some("--module"));
    }

    #[test]
    fn delayed_link_flag_is_dropped() {
        assert_eq!(
            for_module(vec!["--orc".into(), "--link".into(), "--module".into()]),
            ["--orc", "--module"]
        );
    }
}
