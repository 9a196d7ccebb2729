//! kbuild runs: klpgen's own function-sections build directory (objects for diffing only, never
//! booted), which translation units a patch affects, and the livepatch module build against
//! the target kernel.

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::kernel::Tree;
use crate::process::{self, Interrupt};

/// Flags added to the kernel's own for the objects klpgen diffs.
pub const DIFF_CFLAGS: &str = "-ffunction-sections -fdata-sections";

/// The patch-author header (`#include <klpgen/klpgen.h>`), shipped in the binary.
pub const HEADER: &str = include_str!("../include/klpgen/klpgen.h");

/// Write the header to `<workdir>/include/klpgen/klpgen.h` (only when its contents differ, so
/// its time stays put) and return the directory to put on the include path. The directory
/// holds nothing else, so it can never shadow a kernel header.
pub fn install_header(workdir: &Path) -> Result<PathBuf> {
    let dir = workdir.join("include");
    let file = dir.join("klpgen/klpgen.h");
    if fs::read_to_string(&file).ok().as_deref() != Some(HEADER) {
        fs::create_dir_all(dir.join("klpgen"))?;
        let tmp = file.with_extension("h.tmp");
        fs::write(&tmp, HEADER).with_context(|| format!("cannot write {}", tmp.display()))?;
        fs::rename(&tmp, &file).with_context(|| format!("cannot write {}", file.display()))?;
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

/// Translation units (object paths relative to the build root) a set of touched files affects:
/// edited `.c`/`.S` files, and every unit whose kbuild dependency record names an edited header.
pub fn affected_units(tree: &Tree, files: &[String]) -> Result<Vec<String>> {
    let mut units = BTreeSet::new();
    let mut headers = Vec::new();
    for f in files {
        if let Some(stem) = f.strip_suffix(".c").or_else(|| f.strip_suffix(".S")) {
            units.insert(format!("{stem}.o"));
        } else if f.ends_with(".h") {
            headers.push(tree.source.join(f));
        } else if f.ends_with(".rs") {
            bail!("{f}: patching Rust code of the kernel is not supported yet");
        } else {
            // Documentation, Kconfig, scripts: nothing that ends up in an object.
        }
    }
    if !headers.is_empty() {
        let mut found_records = false;
        for entry in walk_cmd_files(&tree.build)? {
            found_records = true;
            let text = fs::read_to_string(&entry).unwrap_or_default();
            if headers
                .iter()
                .any(|h| text.contains(h.to_string_lossy().as_ref()))
            {
                if let Some(unit) = unit_of_cmd_file(&tree.build, &entry) {
                    units.insert(unit);
                }
            }
        }
        if !found_records {
            bail!(
                "the patch edits headers, but {} has no kbuild dependency records (.*.o.cmd) to find the files that include them",
                tree.build.display()
            );
        }
    }
    Ok(units.into_iter().collect())
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

/// Whether a unit is linked into a module rather than vmlinux (from the target's `*.mod` lists).
pub fn module_of_unit(tree: &Tree, unit: &str) -> Option<String> {
    let order = fs::read_to_string(tree.build.join("modules.order")).ok()?;
    for m in order.lines() {
        let modfile = tree.build.join(m).with_extension("mod");
        let list = fs::read_to_string(&modfile).ok()?;
        if list.split_whitespace().any(|o| o == unit) {
            return Some(Path::new(m).file_stem()?.to_string_lossy().into_owned());
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
        && units.iter().all(|u| !u.ends_with(".rs"))
}

/// klpgen's own build directory for function-sections objects of one kernel.
pub struct DiffBuild {
    pub dir: PathBuf,
    /// The directory holding `klpgen/klpgen.h` ([`install_header`]).
    pub include: PathBuf,
}

impl DiffBuild {
    /// Prepare the directory: the target's exact `.config`, kept in sync.
    pub fn prepare(
        tree: &Tree,
        dir: PathBuf,
        include: PathBuf,
        jobs: usize,
        intr: &Interrupt,
    ) -> Result<Self> {
        fs::create_dir_all(&dir)?;
        let cfg = dir.join(".config");
        let current = fs::read_to_string(&cfg).unwrap_or_default();
        let stamp = dir.join(".klpgen-config");
        let stamped = fs::read_to_string(&stamp).unwrap_or_default();
        if stamped != tree.config_text || current.is_empty() {
            fs::write(&cfg, &tree.config_text)?;
            let o = format!("O={}", dir.display());
            make(
                &tree.source,
                &[o.as_ref(), "olddefconfig".as_ref()],
                &dir.join("klpgen-olddefconfig.log"),
                "make olddefconfig in klpgen's build directory",
                intr,
            )?;
            fs::write(&stamp, &tree.config_text)?;
        }
        let _ = jobs;
        Ok(DiffBuild { dir, include })
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
        if skip_rust_crates(tree, units) {
            args.push("CONFIG_RUST=".as_ref());
        }
        for u in units {
            args.push(u.as_ref());
        }
        make(&tree.source, &args, log, what, intr)?;
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

/// Build the livepatch module with the target's kbuild; returns the `.ko` and the klp symbols
/// modpost reported as undefined (expected: they are bound later).
pub fn build_module(
    tree: &Tree,
    moddir: &Path,
    module: &str,
    jobs: usize,
    intr: &Interrupt,
) -> Result<PathBuf> {
    let m = format!("M={}", moddir.display());
    let j = format!("-j{jobs}");
    // The module directory lives in klpgen's cache; keep its path out of the module so the
    // same inputs give the same bytes wherever the cache is.
    let kcflags = format!("KCFLAGS=-ffile-prefix-map={}=klpgen", moddir.display());
    let krustflags = format!("KRUSTFLAGS=--remap-path-prefix={}=klpgen", moddir.display());
    let out = make(
        &tree.build,
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
    let text = format!("{}\n{}", out.stdout, out.stderr);
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
    Ok(ko)
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

#[cfg(test)]
mod tests {
    use super::*;

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
