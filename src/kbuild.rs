//! kbuild runs: klpgen's own function-sections build directory (objects for diffing only, never
//! booted), which translation units a patch affects, and the livepatch module build against
//! the target kernel.
//!
//! Which units a patch affects is `src/depscan.rs`'s (records, or the dependency scan, which
//! uses [`DiffBuild::dry_run`] and [`DiffBuild::make_prepare`] here). [`module_of_unit`] tells
//! from the `*.mod` lists which in-tree module a unit is linked into; [`units_defining`] finds
//! the units of callers.
//!
//! [`DiffBuild`] is klpgen's `O=` directory (`<cache>/trees/<key>/kbuild`, the target's
//! `.config`), built with `KCFLAGS=-ffunction-sections -fdata-sections` and the author header's
//! `-I` ([`install_header`]: a directory holding nothing else, so no kernel header is shadowed),
//! the same for original and patched objects; for C units the kernel's Rust crates are skipped
//! (`CONFIG_RUST=` on the make line; `autoconf.h` is unchanged). It doubles as the cache of
//! original objects: [`DiffBuild::save`] sets them aside before the patched build and
//! [`DiffBuild::restore`] puts them back after the revert, so kbuild's own dependency tracking
//! makes the next original build a no-op (`src/build/pairs.rs` marks the window `kbuild-dirty`).
//!
//! [`build_module`] runs `make M=` against the target with `KBUILD_MODPOST_WARN=1` (undefined
//! `.klp.sym.*` symbols are expected; any other is an error) and the module directory mapped away
//! (`-ffile-prefix-map`, `--remap-path-prefix`), so the same inputs give a byte-identical `.ko`
//! wherever the cache is.

use std::ffi::OsStr;
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::kernel::Tree;
use crate::process::{self, Interrupt};

pub mod fresh;
mod replay;

/// Flags added to the kernel's own for the objects klpgen diffs.
pub const DIFF_CFLAGS: &str = "-ffunction-sections -fdata-sections";

/// The patch-author header (`#include <klpgen/klpgen.h>`), shipped in the binary.
pub const HEADER: &str = include_str!("../include/klpgen/klpgen.h");

/// The headers [`install_header`] writes, by path under the include directory: klpgen's own,
/// and its `kpatch-macros.h` and `kpatch-syscall.h` under kpatch-build's names, at the top
/// level, so that `#include "kpatch-macros.h"` in a patch written for kpatch-build finds them
/// (the kernel has no header of those names, so none is shadowed).
pub const HEADERS: [(&str, &str); 3] = [
    ("klpgen/klpgen.h", HEADER),
    (
        "kpatch-macros.h",
        include_str!("../include/kpatch-macros.h"),
    ),
    (
        "kpatch-syscall.h",
        include_str!("../include/kpatch-syscall.h"),
    ),
];

/// Write the headers ([`HEADERS`]) under `<workdir>/include/` (each only when its contents
/// differ, so its time stays put) and return the directory to put on the include path. The
/// directory holds nothing else, so it can never shadow a kernel header.
pub fn install_header(workdir: &Path) -> Result<PathBuf> {
    let dir = workdir.join("include");
    for (name, text) in HEADERS {
        let file = dir.join(name);
        if fs::read_to_string(&file).ok().as_deref() != Some(text) {
            fs::create_dir_all(file.parent().unwrap_or(&dir))?;
            let tmp = file.with_extension("h.tmp");
            fs::write(&tmp, text).with_context(|| format!("cannot write {}", tmp.display()))?;
            fs::rename(&tmp, &file).with_context(|| format!("cannot write {}", file.display()))?;
        }
    }
    Ok(dir)
}

/// `KCFLAGS` of the objects klpgen diffs: function sections, and the header's directory on
/// the include path. Original and patched objects get the same flags (so the only difference
/// between them is the patch, and kbuild's record of the original command stays valid for
/// the next run, which keeps the original objects cached). make splits the value at
/// whitespace, so a directory with whitespace in its path is left out, with a warning.
pub fn diff_kcflags(include: &Path) -> String {
    let inc = include.display().to_string();
    if inc.chars().any(char::is_whitespace) {
        eprintln!(
            "klpgen: warning: {inc} contains whitespace, so <klpgen/klpgen.h> is not on the include path (set KLPGEN_CACHE_DIR to a path without)"
        );
        return format!("KCFLAGS={DIFF_CFLAGS}");
    }
    format!("KCFLAGS={DIFF_CFLAGS} -I{inc}")
}

/// The rustc every kernel make gets: the one the target kernel was built with.
pub fn rustc() -> PathBuf {
    std::env::var_os("KLPGEN_RUSTC")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/rustc"))
}

/// A failed kernel build (its own exit code).
#[derive(Debug)]
pub struct KernelBuildFailed {
    pub what: String,
    pub log: PathBuf,
    pub tail: String,
}
impl std::fmt::Display for KernelBuildFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} failed (full log: {}):\n{}",
            self.what,
            self.log.display(),
            self.tail
        )
    }
}
impl std::error::Error for KernelBuildFailed {}

fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// `CC=<launcher> <compiler>` for every make klpgen runs, when a compiler launcher (ccache,
/// sccache, distcc, icecc...) is asked for.
static CC_WITH_LAUNCHER: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// Compile through `launcher` (a program, possibly with arguments, that runs the compiler it
/// is given): the target's compiler kind (gcc, or clang for CONFIG_CC_IS_CLANG) behind it.
pub fn set_compiler_launcher(tree: &Tree, launcher: &str) -> Result<()> {
    let launcher = launcher.trim();
    if launcher.is_empty() {
        bail!("--cc-launcher: empty");
    }
    // The compiler the target names in its configuration (`gcc-12` on Debian 12, whose
    // headers' .kernelvariables set CC to it; a plain `gcc` would be another compiler).
    let named = tree
        .config
        .values
        .get("CONFIG_CC_VERSION_TEXT")
        .and_then(|v| {
            v.trim_matches('"')
                .split_whitespace()
                .next()
                .map(str::to_string)
        })
        .filter(|c| c.starts_with("gcc") || c.starts_with("clang"));
    let fallback = if tree.config.is_set("CONFIG_CC_IS_CLANG") {
        "clang"
    } else {
        "gcc"
    };
    let cc = named.as_deref().unwrap_or(fallback);
    let value = format!("{launcher} {cc}");
    if CC_WITH_LAUNCHER.get_or_init(|| value.clone()) != &value {
        bail!("a different compiler launcher was already set");
    }
    Ok(())
}

fn make(
    tree_source: &Path,
    args: &[&OsStr],
    log: &Path,
    what: &str,
    intr: &Interrupt,
) -> Result<process::Output> {
    let rustc = rustc();
    let mut all: Vec<&OsStr> = vec!["-C".as_ref(), tree_source.as_os_str()];
    all.extend_from_slice(args);
    let rustc_arg = format!("RUSTC={}", rustc.display());
    all.push(rustc_arg.as_ref());
    let cc_arg = CC_WITH_LAUNCHER.get().map(|cc| format!("CC={cc}"));
    if let Some(cc) = &cc_arg {
        all.push(cc.as_ref());
    }
    // The target's machine and cross toolchain (none on its own machine: src/machine.rs).
    let machine = crate::machine::make_args();
    all.extend(machine.iter().map(|a| OsStr::new(a.as_str())));
    let out = process::run("make", &all, None, &[], Some(log), intr)?;
    if !out.success {
        return Err(KernelBuildFailed {
            what: what.to_string(),
            log: log.to_path_buf(),
            tail: tail(&format!("{}\n{}", out.stdout, out.stderr), 25),
        }
        .into());
    }
    Ok(out)
}

fn walk_cmd_files(root: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(rd) = fs::read_dir(&dir) else { continue };
        for e in rd.flatten() {
            let p = e.path();
            let name = e.file_name();
            let name = name.to_string_lossy();
            let Ok(ft) = e.file_type() else { continue };
            if ft.is_dir() {
                if name != ".git" && name != "source" && !name.starts_with(".tmp") {
                    stack.push(p);
                }
            } else if name.starts_with('.') && name.ends_with(".o.cmd") {
                out.push(p);
            }
        }
    }
    out.sort();
    Ok(out)
}

fn unit_of_cmd_file(build: &Path, cmd: &Path) -> Option<String> {
    let dir = cmd.parent()?.strip_prefix(build).ok()?;
    let name = cmd.file_name()?.to_string_lossy();
    let obj = name.strip_prefix('.')?.strip_suffix(".cmd")?;
    // Only C/asm units that have sources; skip linked composites (built-in.a, vmlinux.o).
    if obj == "vmlinux.o" || obj.ends_with(".mod.o") {
        return None;
    }
    Some(dir.join(obj).to_string_lossy().into_owned())
}

/// Units of the target build that define the given functions: globals by name, statics by
/// name and source file (`base.c`). Reads the symbol tables of the target's own objects.
pub fn units_defining(tree: &Tree, wanted: &[(String, Option<String>)]) -> Result<Vec<String>> {
    use object::{Object as _, ObjectSymbol as _, SymbolKind};
    let mut out = Vec::new();
    for cmd in walk_cmd_files(&tree.build)? {
        let Some(unit) = unit_of_cmd_file(&tree.build, &cmd) else {
            continue;
        };
        let Ok(bytes) = fs::read(tree.build.join(&unit)) else {
            continue;
        };
        let Ok(file) = object::File::parse(&*bytes) else {
            continue;
        };
        let mut files = Vec::new();
        let mut found = false;
        for sym in file.symbols() {
            let Ok(name) = sym.name() else { continue };
            if sym.kind() == SymbolKind::File {
                files.push(name.to_string());
                continue;
            }
            if sym.kind() != SymbolKind::Text || sym.is_undefined() {
                continue;
            }
            found |= wanted.iter().any(|(w, f)| {
                w == name
                    && match f {
                        None => sym.is_global(),
                        Some(f) => !sym.is_global() && files.iter().any(|x| x == f),
                    }
            });
        }
        if found && module_of_unit(tree, &unit).is_none() {
            out.push(unit);
        }
    }
    Ok(out)
}

/// The module a unit is linked into (its `modules.order` entry, e.g. `fs/binfmt_misc.o`), or
/// None for vmlinux (from the target's `*.mod` lists).
pub fn module_of_unit(tree: &Tree, unit: &str) -> Option<String> {
    let order = fs::read_to_string(tree.build.join("modules.order")).ok()?;
    for m in order.lines() {
        let modfile = tree.build.join(m).with_extension("mod");
        let Ok(list) = fs::read_to_string(&modfile) else {
            continue;
        };
        if list.split_whitespace().any(|o| o == unit) {
            return Some(m.to_string());
        }
    }
    None
}

/// Whether kbuild's `prepare` may skip building the kernel's Rust crates (core, alloc, kernel,
/// bindings: most of a cold `prepare`). C units do not use them: `CONFIG_RUST` stays set in
/// `autoconf.h` (C sees the same configuration) and the only top-level Makefile use of the
/// variable that touches C flags is for Clang CFI, which is excluded here. Verified on the
/// test kernel: the objects' code and data sections are byte-identical either way.
fn skip_rust_crates(tree: &Tree, units: &[String]) -> bool {
    tree.config.is_set("CONFIG_RUST")
        && !tree.config.is_set("CONFIG_CFI_CLANG")
        && units
            .iter()
            .all(|u| !u.ends_with(".rs") && !needs_rust_crates(u))
}

/// A C unit of `rust/` that includes what the Rust crates generate (`rust/exports.o`: the
/// crates' export lists); the helpers (`rust/helpers.o`, `rust/helpers/helpers.o`) include
/// kernel headers only.
fn needs_rust_crates(unit: &str) -> bool {
    unit.starts_with("rust/") && !unit.contains("helpers")
}

/// Whether kbuild's dry run ([`DiffBuild::dry_run`]) leaves out `rust/` (`CONFIG_RUST=`): its
/// C units must then be found another way.
pub fn dry_run_skips_rust(tree: &Tree) -> bool {
    skip_rust_crates(tree, &[])
}

/// Options unset on make's command line for klpgen's builds of C units, so that `prepare`
/// skips tools they do not need: the Rust crates ([`skip_rust_crates`]), and with
/// `CONFIG_DEBUG_INFO_BTF` the `resolve_btfids` tool with its libbpf (BTF is made when
/// vmlinux and modules are linked; no C flag depends on the option, and `autoconf.h` keeps
/// it). Most of a distribution kernel's cold `prepare` otherwise.
fn make_overrides(tree: &Tree, units: &[String]) -> Vec<&'static str> {
    let mut v = Vec::new();
    if skip_rust_crates(tree, units) {
        v.push("CONFIG_RUST=");
    }
    if tree.config.is_set("CONFIG_DEBUG_INFO_BTF") {
        v.push("CONFIG_DEBUG_INFO_BTF=");
    }
    v
}

/// klpgen's own build directory for function-sections objects of one kernel.
pub struct DiffBuild {
    pub dir: PathBuf,
    /// The directory holding `klpgen/klpgen.h` ([`install_header`]).
    pub include: PathBuf,
}

impl DiffBuild {
    /// Prepare the directory: the target's exact `.config`, kept in sync. For a
    /// distribution's headers ([`crate::kernel::TreeKind::Headers`]) also their
    /// `.kernelvariables` and Module.symvers ([`Tree::prepared_files`]), and kbuild's
    /// `modules_prepare` once, so that this directory, built from the sources, is also what
    /// the livepatch module is built against (the headers' own kbuild may not work: Debian's
    /// links into a `linux-kbuild` package that exists for the newest ABI only).
    pub fn prepare(tree: &Tree, dir: PathBuf, include: PathBuf, intr: &Interrupt) -> Result<Self> {
        fs::create_dir_all(&dir)?;
        let mut wanted = tree.config_text.clone();
        for f in tree.prepared_files() {
            let text = fs::read(&f).with_context(|| format!("cannot read {}", f.display()))?;
            let to = dir.join(f.file_name().unwrap_or_default());
            if fs::read(&to).ok().as_deref() != Some(&text[..]) {
                fs::write(&to, &text).with_context(|| format!("cannot write {}", to.display()))?;
            }
            wanted.push_str(&format!("\n# {}\n", crate::report::sha256_hex(&text)));
        }
        let cfg = dir.join(".config");
        let current = fs::read_to_string(&cfg).unwrap_or_default();
        let stamp = dir.join(".klpgen-config");
        let stamped = fs::read_to_string(&stamp).unwrap_or_default();
        if stamped != wanted || current.is_empty() {
            let _ = fs::remove_file(dir.join(".klpgen-modules-prepared"));
            fs::write(&cfg, &tree.config_text)?;
            let o = format!("O={}", dir.display());
            make(
                &tree.source,
                &[o.as_ref(), "olddefconfig".as_ref()],
                &dir.join("klpgen-olddefconfig.log"),
                "make olddefconfig in klpgen's build directory",
                intr,
            )?;
            fs::write(&stamp, &wanted)?;
        }
        let prepared = dir.join(".klpgen-modules-prepared");
        if tree.kind() == crate::kernel::TreeKind::Headers && !prepared.is_file() {
            let o = format!("O={}", dir.display());
            let j = format!(
                "-j{}",
                std::thread::available_parallelism().map_or(1, |n| n.get())
            );
            crate::progress::message(&format!(
                "klpgen: preparing {} from {} for the headers of {} (kbuild's tools, modpost; once)",
                dir.display(),
                tree.source.display(),
                tree.release
            ));
            // The units' own flags and overrides: the offsets files kbuild makes here and in
            // the units' `prepare` then keep one command (else each rebuilds them).
            let kcflags = diff_kcflags(&include);
            let mut args: Vec<&OsStr> = vec![o.as_ref(), j.as_ref(), kcflags.as_ref()];
            for o in make_overrides(tree, &[]) {
                args.push(o.as_ref());
            }
            args.push("modules_prepare".as_ref());
            make(
                &tree.source,
                &args,
                &dir.join("klpgen-modules-prepare.log"),
                "make modules_prepare in klpgen's build directory",
                intr,
            )?;
            fs::write(&prepared, b"")?;
        }
        Ok(DiffBuild { dir, include })
    }

    /// The arguments of every make klpgen runs in this directory for C units, as `make`
    /// gets them (the launcher's `CC=` and `RUSTC=` included): what kbuild's commands depend
    /// on besides the tree and the configuration.
    pub fn make_args(&self, tree: &Tree) -> Vec<String> {
        let mut v = vec![
            format!("O={}", self.dir.display()),
            diff_kcflags(&self.include),
        ];
        v.extend(make_overrides(tree, &[]).iter().map(|o| o.to_string()));
        v.push(format!("RUSTC={}", rustc().display()));
        if let Some(cc) = CC_WITH_LAUNCHER.get() {
            v.push(format!("CC={cc}"));
        }
        v
    }

    /// kbuild's `prepare` here (generated headers, objtool, the config's files), as the first
    /// unit build would do it: the dependency scan reads generated headers.
    pub fn make_prepare(
        &self,
        tree: &Tree,
        jobs: usize,
        log: &Path,
        intr: &Interrupt,
    ) -> Result<()> {
        let o = format!("O={}", self.dir.display());
        let j = format!("-j{jobs}");
        let kcflags = diff_kcflags(&self.include);
        let mut args: Vec<&OsStr> = vec![o.as_ref(), j.as_ref(), kcflags.as_ref()];
        for o in make_overrides(tree, &[]) {
            args.push(o.as_ref());
        }
        args.push("prepare".as_ref());
        make(
            &tree.source,
            &args,
            log,
            "kbuild's prepare in klpgen's build directory",
            intr,
        )?;
        Ok(())
    }

    /// kbuild's dry run (`make -n -k vmlinux modules`) here: every command a build of the
    /// whole kernel would run now, printed, none run. With `-k` it goes on past goals it cannot
    /// make without running anything (the link, a missing signing key); the compiles are all
    /// printed. Its exit status says nothing: the caller reads the commands and the errors.
    pub fn dry_run(&self, tree: &Tree, log: &Path, intr: &Interrupt) -> Result<process::Output> {
        let mut args: Vec<String> = vec!["-C".into(), tree.source.display().to_string()];
        // Without the overrides but `CONFIG_RUST=`: the C units kbuild builds only for BTF
        // (`kernel/bpf/sysfs_btf.o`, `net/netfilter/nf_conntrack_bpf.o`) are units of the
        // kernel too, and the C flags are the same either way. The Rust crates cannot be
        // dry-run against a `prepare` made without them (no rule makes `scripts/target.json`
        // from the top level, and `-k` then skips everything after `prepare`); the C units
        // of `rust/` come from its Makefile instead (`crate::depscan`).
        let overrides: Vec<&str> = make_overrides(tree, &[])
            .into_iter()
            .filter(|o| *o != "CONFIG_RUST=")
            .collect();
        args.extend(
            self.make_args(tree)
                .into_iter()
                .filter(|a| !overrides.contains(&a.as_str())),
        );
        args.extend(["-n".into(), "-k".into(), "vmlinux".into()]);
        if tree.config.is_set("CONFIG_MODULES") {
            args.push("modules".into());
        }
        process::run_silent("make", &args, None, Some(log), intr)
    }

    /// Whether [`DiffBuild::compile_direct`] would run `units` itself.
    pub fn can_compile_direct(&self, tree: &Tree, units: &[String], out: &Path) -> bool {
        !tree.config.is_set("CONFIG_FTRACE_MCOUNT_USE_RECORDMCOUNT")
            && units.iter().all(|u| {
                fs::read_to_string(self.record(u)).is_ok_and(|r| {
                    fresh::direct_command(&r, u, &out.join(u), &out.join("x.d")).is_some()
                })
            })
    }

    /// Compile `units` by running their recorded commands directly (`fresh.rs`), each object
    /// written to `out/<unit>`, in parallel; nothing of this directory is written. None, and
    /// nothing run, when a command is not one klpgen runs itself (make then builds them).
    pub fn compile_direct(
        &self,
        tree: &Tree,
        units: &[String],
        out: &Path,
        jobs: usize,
        (log, what): (&Path, &str),
        intr: &Interrupt,
    ) -> Result<Option<Vec<PathBuf>>> {
        if tree.config.is_set("CONFIG_FTRACE_MCOUNT_USE_RECORDMCOUNT") {
            return Ok(None);
        }
        let deps = out.join(".klpgen-deps");
        let mut plans = Vec::new();
        for u in units {
            let Ok(record) = fs::read_to_string(self.record(u)) else {
                return Ok(None);
            };
            let output = out.join(u);
            let depfile = deps.join(format!("{}.d", u.replace('/', "_")));
            match fresh::direct_command(&record, u, &output, &depfile) {
                Some(cmds) => plans.push((u.clone(), output, cmds)),
                None => return Ok(None),
            }
        }
        fs::create_dir_all(&deps)?;
        for (_, output, _) in &plans {
            if let Some(d) = output.parent() {
                fs::create_dir_all(d)?;
            }
        }
        crate::progress::expect_objects(units);
        let queue = std::sync::Mutex::new(plans.iter().collect::<std::collections::VecDeque<_>>());
        let logs = std::sync::Mutex::new(String::new());
        let failure: std::sync::Mutex<Option<anyhow::Error>> = std::sync::Mutex::new(None);
        std::thread::scope(|s| {
            for _ in 0..jobs.clamp(1, plans.len().max(1)) {
                s.spawn(|| loop {
                    let next = queue.lock().unwrap_or_else(|e| e.into_inner()).pop_front();
                    let Some((unit, _, cmds)) = next else { break };
                    if failure.lock().unwrap_or_else(|e| e.into_inner()).is_some() {
                        break;
                    }
                    for argv in cmds {
                        let program = if argv[0].contains('/') && !argv[0].starts_with('/') {
                            self.dir.join(&argv[0]).display().to_string()
                        } else {
                            argv[0].clone()
                        };
                        let r =
                            process::run(&program, &argv[1..], Some(&self.dir), &[], None, intr);
                        let mut l = logs.lock().unwrap_or_else(|e| e.into_inner());
                        l.push_str(&format!("$ {}\n", argv.join(" ")));
                        match r {
                            Ok(o) => {
                                l.push_str(&o.stdout);
                                l.push_str(&o.stderr);
                                if !o.success {
                                    *failure.lock().unwrap_or_else(|e| e.into_inner()) =
                                        Some(anyhow::Error::from(KernelBuildFailed {
                                            what: what.to_string(),
                                            log: log.to_path_buf(),
                                            tail: tail(&format!("{}\n{}", o.stdout, o.stderr), 25),
                                        }));
                                    return;
                                }
                            }
                            Err(e) => {
                                *failure.lock().unwrap_or_else(|e| e.into_inner()) = Some(e);
                                return;
                            }
                        }
                    }
                    crate::progress::child_line(&format!("  CC      {unit}"));
                });
            }
        });
        fs::write(log, logs.into_inner().unwrap_or_else(|e| e.into_inner()))?;
        if let Some(e) = failure.into_inner().unwrap_or_else(|e| e.into_inner()) {
            return Err(e);
        }
        intr.check()?;
        let mut paths = Vec::new();
        for (u, output, _) in plans {
            if !output.is_file() {
                bail!(
                    "{what}: the recorded command of {u} did not write {}",
                    output.display()
                );
            }
            paths.push(output);
        }
        Ok(Some(paths))
    }

    /// kbuild's record of a unit built here (`dir/.name.o.cmd`).
    pub fn record(&self, unit: &str) -> PathBuf {
        self.files_of(unit).1
    }

    /// Build the given units with function sections; returns their paths in the build dir.
    pub fn build_units(
        &self,
        tree: &Tree,
        units: &[String],
        jobs: usize,
        log: &Path,
        what: &str,
        intr: &Interrupt,
    ) -> Result<Vec<PathBuf>> {
        let o = format!("O={}", self.dir.display());
        let j = format!("-j{jobs}");
        let kcflags = diff_kcflags(&self.include);
        let mut args: Vec<&OsStr> = vec![o.as_ref(), j.as_ref(), kcflags.as_ref()];
        for o in make_overrides(tree, units) {
            args.push(o.as_ref());
        }
        for u in units {
            args.push(u.as_ref());
        }
        crate::progress::expect_objects(units);
        if let Err(e) = make(&tree.source, &args, log, what, intr) {
            // kbuild may compile one object twice in a single-target build (for example
            // arch/x86/lib/usercopy.o), and two parallel compiles then race on its dependency
            // file; fixdep says so. Build once more without parallelism.
            let raced = e
                .downcast_ref::<KernelBuildFailed>()
                .is_some_and(|k| k.tail.contains("fixdep: error opening"));
            if !raced || jobs <= 1 {
                return Err(e);
            }
            crate::progress::message(&format!(
                "klpgen: {what}: kbuild raced on a dependency file with -j{jobs}; building again with -j1"
            ));
            args[1] = "-j1".as_ref();
            make(&tree.source, &args, log, what, intr)?;
        }
        units
            .iter()
            .map(|u| {
                let p = self.dir.join(u);
                if p.is_file() {
                    Ok(p)
                } else {
                    bail!(
                        "{what}: kbuild did not produce {u} (is it built with this configuration?)"
                    )
                }
            })
            .collect()
    }

    /// Keep the original objects (and their kbuild command records) aside before the patched
    /// build overwrites them.
    pub fn save(&self, units: &[String], into: &Path) -> Result<()> {
        for u in units {
            let (obj, cmd) = self.files_of(u);
            for f in [obj, cmd] {
                if !f.exists() {
                    continue; // no command record: kbuild rebuilds the unit anyway
                }
                let rel = f.strip_prefix(&self.dir).unwrap_or(&f);
                let to = into.join(rel);
                if let Some(d) = to.parent() {
                    fs::create_dir_all(d)?;
                }
                fs::copy(&f, &to).with_context(|| format!("keeping {} aside", f.display()))?;
            }
        }
        Ok(())
    }

    /// Put the original objects back once the sources are restored, so the next run finds
    /// them up to date (kbuild's own dependency tracking is the cache); on any failure the
    /// units are forgotten instead, and simply rebuilt next time.
    pub fn restore(&self, units: &[String], from: &Path) {
        let ok = units.iter().all(|u| {
            let (obj, cmd) = self.files_of(u);
            [obj, cmd].iter().all(|f| {
                let rel = f.strip_prefix(&self.dir).unwrap_or(f);
                let saved = from.join(rel);
                if saved.exists() {
                    fs::copy(saved, f).is_ok()
                } else {
                    fs::remove_file(f).is_ok() || !f.exists()
                }
            })
        });
        if !ok {
            self.forget(units);
        }
    }

    fn files_of(&self, unit: &str) -> (PathBuf, PathBuf) {
        let obj = self.dir.join(unit);
        let name = obj
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let cmd = obj.with_file_name(format!(".{name}.cmd"));
        (obj, cmd)
    }

    /// Forget built units so the next build recompiles them from the (restored) sources.
    pub fn forget(&self, units: &[String]) {
        for u in units {
            let p = self.dir.join(u);
            let _ = fs::remove_file(&p);
            if let (Some(parent), Some(name)) = (p.parent(), p.file_name()) {
                let _ = fs::remove_file(parent.join(format!(".{}.cmd", name.to_string_lossy())));
            }
        }
    }
}

/// Build an external module directory against the target with function sections (objects
/// for diffing only).
pub fn build_external(
    tree: &Tree,
    dir: &Path,
    include: &Path,
    jobs: usize,
    log: &Path,
    what: &str,
    intr: &Interrupt,
) -> Result<()> {
    let m = format!("M={}", dir.display());
    let j = format!("-j{jobs}");
    let kcflags = diff_kcflags(include);
    make(
        &tree.build,
        &[
            m.as_ref(),
            j.as_ref(),
            kcflags.as_ref(),
            "KBUILD_MODPOST_WARN=1".as_ref(),
            "modules".as_ref(),
        ],
        log,
        what,
        intr,
    )?;
    Ok(())
}

/// Build the livepatch module with the target's kbuild; returns the `.ko`. Undefined symbols
/// modpost reports are an error, except the `.klp.sym.*` ones (bound by the klp markings).
pub fn build_module(
    tree: &Tree,
    objtree: &Path,
    module_cache: &Path,
    moddir: &Path,
    module: &str,
    jobs: usize,
    intr: &Interrupt,
) -> Result<PathBuf> {
    record_prebuilt_objects(moddir)?;
    let kbuild_dir = objtree.to_path_buf();
    let m = format!("M={}", moddir.display());
    let j = format!("-j{jobs}");
    // The module directory lives in klpgen's cache; keep its path out of the module so the
    // same inputs give the same bytes wherever the cache is.
    let mut kcflags = format!("KCFLAGS=-ffile-prefix-map={}=klpgen", moddir.display());
    if drops_columns(&tree.config) {
        kcflags.push_str(" -gno-column-info");
    }
    let krustflags = format!("KRUSTFLAGS=--remap-path-prefix={}=klpgen", moddir.display());
    // The last build of this module, kept for replaying its steps (kbuild/replay.rs).
    let cache = module_cache.join(module);
    let mut key_args = vec![
        m.clone(),
        kcflags.clone(),
        krustflags.clone(),
        "KBUILD_MODPOST_WARN=1".to_string(),
    ];
    key_args.extend(CC_WITH_LAUNCHER.get().map(|cc| format!("CC={cc}")));
    let key = replay::key(tree, &kbuild_dir, &key_args);
    let text = match replay::replay(tree, &kbuild_dir, moddir, &cache, module, &key, intr)? {
        Some((_, printed)) => printed,
        None => {
            let out = make(
                &kbuild_dir,
                &[
                    m.as_ref(),
                    j.as_ref(),
                    kcflags.as_ref(),
                    krustflags.as_ref(),
                    "KBUILD_MODPOST_WARN=1".as_ref(),
                    "modules".as_ref(),
                ],
                &moddir.join("klpgen-module.log"),
                "building the livepatch module",
                intr,
            )?;
            format!("{}\n{}", out.stdout, out.stderr)
        }
    };
    let unresolved: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("undefined!"))
        .filter(|l| !l.contains("\".klp.sym."))
        .collect();
    if !unresolved.is_empty() {
        bail!(
            "the livepatch module refers to symbols neither exported nor bound by klp relocations:\n{}",
            unresolved.join("\n")
        );
    }
    let ko = moddir.join(format!("{module}.ko"));
    if !ko.is_file() {
        bail!("kbuild did not produce {}", ko.display());
    }
    replay::save(moddir, &cache, &key)?;
    Ok(ko)
}

/// Objects klpgen puts into the module directory already compiled (kbuild did not build them).
pub const PREBUILT_OBJECTS: &[&str] = &["klpgen_patch.o"];

/// With CONFIG_MODVERSIONS, Linux 6.1's modpost reads the kbuild record `.<obj>.cmd` of every
/// object of the module for the `#SYMVER <symbol> <crc>` lines of the symbols it exports, and
/// stops when one is missing. klpgen's prebuilt objects export nothing (elfdiff leaves a new
/// EXPORT_SYMBOL out, see its plan notes), so an empty record is exactly what kbuild would have
/// written for them; one that defines an export entry anyway is an error, not an unversioned
/// export. Later kernels read CRCs from the objects and ignore the empty file.
fn record_prebuilt_objects(moddir: &Path) -> Result<()> {
    use object::{Object as _, ObjectSymbol as _};
    for name in PREBUILT_OBJECTS {
        let obj = moddir.join(name);
        let Ok(bytes) = fs::read(&obj) else { continue };
        let file = object::File::parse(&*bytes)
            .with_context(|| format!("cannot parse {}", obj.display()))?;
        if let Some(export) = file.symbols().find(|s| {
            s.name()
                .is_ok_and(|n| n.starts_with("__ksymtab_") || n.starts_with("__export_symbol_"))
                && !s.is_undefined()
        }) {
            bail!(
                "{} defines the export entry {}: a livepatch exports nothing (modules link against the Module.symvers of the kernel they are built for)",
                obj.display(),
                export.name().unwrap_or_default()
            );
        }
        fs::write(moddir.join(format!(".{name}.cmd")), b"")?;
    }
    Ok(())
}

/// Whether the module's own compiles (its `.mod.c`, the C hook, kbuild's module-common.c)
/// leave column numbers out of their debug info: columns depend on whether the compiler read
/// the source or a copy preprocessed elsewhere (distcc preprocesses locally and compiles the
/// expansion on the farm, where macros and spacing have moved), so without them the module is
/// byte-identical whether or not a compile farm built it (`cargo xtask farm`). GCC has the
/// flag since 8 (CONFIG_GCC_VERSION 80000), clang always; older compilers keep their columns.
fn drops_columns(config: &crate::kernel::Config) -> bool {
    let number = |opt: &str| config.values.get(opt).and_then(|v| v.parse::<u64>().ok());
    number("CONFIG_GCC_VERSION").is_some_and(|v| v >= 80000)
        || number("CONFIG_CLANG_VERSION").is_some_and(|v| v > 0)
}

/// Where klpgen keeps its own build directories and work files.
pub fn cache_root() -> PathBuf {
    if let Some(d) = std::env::var_os("KLPGEN_CACHE_DIR") {
        return PathBuf::from(d);
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir);
    base.join("klpgen")
}

/// The trailer `scripts/sign-file` appends after the signature.
const SIGNATURE_MAGIC: &[u8] = b"~Module signature appended~\n";

/// Sign a finished module as `make modules_sign` would: the target's `scripts/sign-file` (or
/// `sign_file`), the hash named by the target's CONFIG_MODULE_SIG_HASH. Returns the signed
/// bytes; the signature covers the module exactly as checked.
pub fn sign_module(
    tree: &Tree,
    dir: &Path,
    name: &str,
    ko: &[u8],
    (key, cert): (&Path, &Path),
    sign_file: Option<&Path>,
    intr: &Interrupt,
) -> Result<Vec<u8>> {
    let program = sign_file
        .map(Path::to_path_buf)
        .unwrap_or_else(|| tree.build.join("scripts/sign-file"));
    if !program.is_file() {
        bail!(
            "cannot sign: {} does not exist (the target build has no CONFIG_MODULE_SIG tooling; build it with `make scripts` there or pass --sign-file)",
            program.display()
        );
    }
    for (what, p) in [("--sign-key", key), ("--sign-cert", cert)] {
        // A PKCS#11 URI is passed through as it is.
        if !p.to_string_lossy().starts_with("pkcs11:") && !p.is_file() {
            bail!("{what} {}: no such file", p.display());
        }
    }
    let hash = tree
        .config
        .values
        .get("CONFIG_MODULE_SIG_HASH")
        .map(|v| v.trim_matches('"').to_string())
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| "sha256".into());
    let path = dir.join(format!("{name}.signed.ko"));
    fs::write(&path, ko)?;
    let args: [&OsStr; 4] = [
        hash.as_ref(),
        key.as_os_str(),
        cert.as_os_str(),
        path.as_os_str(),
    ];
    let out = process::run(&program.to_string_lossy(), args, None, &[], None, intr)?;
    if !out.success {
        bail!(
            "{} failed to sign the module:\n{}{}",
            program.display(),
            out.stdout,
            out.stderr
        );
    }
    let signed = fs::read(&path)?;
    if signed.len() <= ko.len() || !signed.starts_with(ko) || !signed.ends_with(SIGNATURE_MAGIC) {
        bail!(
            "{} exited successfully but {} does not carry an appended signature",
            program.display(),
            path.display()
        );
    }
    Ok(signed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn module_compiles_drop_columns_where_the_compiler_can() {
        let drops = |t: &str| drops_columns(&crate::kernel::Config::parse(t));
        assert!(drops("CONFIG_GCC_VERSION=120200\n"));
        assert!(drops("CONFIG_GCC_VERSION=80100\n"));
        assert!(!drops("CONFIG_GCC_VERSION=70500\n"));
        assert!(drops("CONFIG_GCC_VERSION=0\nCONFIG_CLANG_VERSION=190106\n"));
        assert!(!drops("CONFIG_GCC_VERSION=0\nCONFIG_CLANG_VERSION=0\n"));
        assert!(!drops(""));
    }

    #[test]
    fn cmd_file_names_map_to_units() {
        let b = Path::new("/b");
        assert_eq!(
            unit_of_cmd_file(b, Path::new("/b/fs/proc/.cmdline.o.cmd")).as_deref(),
            Some("fs/proc/cmdline.o")
        );
        assert_eq!(unit_of_cmd_file(b, Path::new("/b/.vmlinux.o.cmd")), None);
    }
}
