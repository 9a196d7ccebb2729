//! Which units an edited file affects, deciding per unit and never trusting a partial record
//! set: the target's kbuild record where it has one, else klpgen's dependency scan, whose
//! candidates klpgen verifies by its own records once it has built them.
//!
//! - A target whose own products (`vmlinux.a`, the modules' `.mod` lists,
//!   [`archive::built_units`]) name every unit, each with a `.o.cmd` record, is answered from
//!   those records alone: exact, nothing to scan.
//! - Otherwise (a distribution's headers keep no records; a tree with some): the units this
//!   configuration builds come from kbuild's dry run in klpgen's build directory
//!   (`make -n -k vmlinux modules`, each compile with its exact flags, cached under
//!   `<build dir>/.klpgen-depscan/` by configuration, make arguments and the identity of every
//!   Makefile, Kbuild and Kconfig file of the source tree) and from the records klpgen has
//!   there. A unit the target has a record of is decided by it; every other one by the static
//!   include graph (`depscan/graph.rs`: each unit's search path, conditionals over the
//!   configuration, over-approximated where unknown), which gives a superset.
//! - Candidates from the scan are built with the original sources like any unit; then the
//!   record kbuild wrote for each in klpgen's build directory ([`Affected::verify`]) says
//!   whether it really includes the file, and those that do not are dropped before the patched
//!   build. The result is exact.
//!
//! An edited C file is its own unit when the target records it or, without a complete record
//! set, when its directory's Makefile or Kbuild names its object (a file no kbuild file
//! names is `#include`d); otherwise it is searched like a header (`kernel/sched/syscalls.c` is
//! compiled as part of `build_policy.o`).

pub mod archive;
pub mod cmdline;
pub mod directives;
pub mod graph;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};

use crate::kbuild::fresh::Freshness;
use crate::kbuild::DiffBuild;
use crate::kernel::Tree;
use crate::process::Interrupt;
use cmdline::Compile;

/// The cache directory of the scan inside klpgen's build directory.
const CACHE: &str = ".klpgen-depscan";

/// The units the configuration builds, with their compile commands.
#[derive(serde::Serialize, serde::Deserialize, Default)]
pub struct ConfigUnits {
    /// What the cached dry run was made for.
    key: String,
    /// Every compile of the dry run.
    pub compiles: Vec<Compile>,
    /// Objects make named but could not print a command for (`No rule to make target ...,
    /// needed by 'X.o'`): they may include anything.
    pub unknown: Vec<String>,
}

/// How the unit list was obtained, for the summary and the report.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct ScanStats {
    /// `records` (the target's records, complete) or `scan`.
    pub method: &'static str,
    /// Units of the configuration.
    pub units: usize,
    /// Whether the dry run came from the cache.
    pub dry_run_cached: bool,
    /// Files in the include graph, and how many were read (not from the cache).
    pub files: usize,
    pub files_read: usize,
    /// Units the scan could not see into (candidates for every file).
    pub opaque_units: usize,
    /// Units decided by the target's own records.
    pub from_target_records: usize,
    /// Units decided by the records of klpgen's own build of them (fresh objects).
    pub from_own_records: usize,
    pub seconds: f64,
    /// Of those, kbuild's dry run (0 when the unit list came from the cache), and the
    /// `prepare` before it, which the original build would otherwise run.
    pub dry_run_seconds: f64,
    pub prepare_seconds: f64,
}

/// The affected units of an edit, before and after verification.
#[derive(Debug, Default)]
pub struct Affected {
    /// Units that certainly compile an edited file: an edited unit's own source, or a record
    /// that names the file.
    pub exact: BTreeSet<String>,
    /// Units the scan says may include an edited file: built like the others, then verified.
    pub candidates: BTreeSet<String>,
    /// The searched files (headers, C files compiled as part of another unit), each with the
    /// names kbuild's records may give it.
    pub searched: Vec<(String, Vec<String>)>,
    /// Edited C files that are not units of their own.
    pub included_sources: Vec<String>,
    /// Searched files some record (the target's, or klpgen's after verification) names.
    pub found: BTreeSet<String>,
    pub stats: Option<ScanStats>,
}

impl Affected {
    /// Every unit to build with the original sources.
    pub fn to_build(&self) -> Vec<String> {
        self.exact.union(&self.candidates).cloned().collect()
    }

    /// A unit whose record names searched files: it is affected, and those files are found.
    fn record_says(&mut self, unit: &str, record: &str) -> bool {
        let named = names(record, &self.searched);
        let any = !named.is_empty();
        self.found.extend(named);
        if any {
            self.exact.insert(unit.to_string());
        }
        any
    }

    /// After the original build: keep the candidates whose record in klpgen's build
    /// directory names an edited file; returns the dropped ones. A candidate without a record
    /// (kbuild wrote none) is kept: it may include the file.
    pub fn verify(&mut self, own: &DiffBuild) -> Vec<String> {
        let mut dropped = Vec::new();
        for u in std::mem::take(&mut self.candidates) {
            match fs::read_to_string(own.record(&u)) {
                Ok(text) => {
                    if !self.record_says(&u, &text) {
                        dropped.push(u);
                    }
                }
                Err(_) => {
                    self.exact.insert(u);
                }
            }
        }
        dropped
    }

    /// Edited C files that are not units of their own and that no record names: not part
    /// of this kernel. Meaningful after [`Affected::verify`].
    pub fn not_compiled(&self) -> Vec<String> {
        self.included_sources
            .iter()
            .filter(|f| !self.found.contains(*f))
            .cloned()
            .collect()
    }
}

/// The searched files a kbuild record's dependency list names.
fn names(record: &str, searched: &[(String, Vec<String>)]) -> Vec<String> {
    let tokens: BTreeSet<&str> = record
        .split_whitespace()
        .map(|t| t.trim_start_matches("./"))
        .collect();
    searched
        .iter()
        .filter(|(_, variants)| variants.iter().any(|v| tokens.contains(v.as_str())))
        .map(|(f, _)| f.clone())
        .collect()
}

/// How kbuild's records may name `f` (relative to the source tree): absolute under the source
/// tree (O= builds), under the target build (an in-tree build, where klpgen's source is its
/// mirror), or relative.
fn record_names(tree: &Tree, f: &str) -> Vec<String> {
    let mut v: Vec<String> = [&tree.source, &tree.build]
        .iter()
        .map(|base| base.join(f).to_string_lossy().into_owned())
        .collect();
    v.push(f.to_string());
    v
}

/// What the run may use.
pub struct Inputs<'a> {
    pub tree: &'a Tree,
    pub own: &'a DiffBuild,
    /// Whether the target's records may be used (`--no-target-records` says no).
    pub target_records: bool,
    pub jobs: usize,
    /// Where the dry run's log goes.
    pub logs: &'a Path,
    pub intr: &'a Interrupt,
}

/// The affected units of the edited `files` (paths relative to the source tree).
pub fn affected(inp: &Inputs<'_>, files: &[String]) -> Result<Affected> {
    let tree = inp.tree;
    let mut out = Affected::default();
    let target_record = |unit: &str| -> Option<PathBuf> {
        inp.target_records
            .then(|| record_file(&tree.build, unit))
            .filter(|p| p.is_file())
    };
    // Both are looked up only when needed (the tree walk of the unit list's key, the
    // target's archives), and once.
    let cached_units = std::cell::OnceCell::new();
    let cached_units = || cached_units.get_or_init(|| cached_config_units(inp));
    let complete = std::cell::OnceCell::new();
    let complete = || {
        complete
            .get_or_init(|| {
                inp.target_records
                    .then(|| target_is_complete(tree))
                    .flatten()
            })
            .as_ref()
    };
    for f in files {
        if let Some(stem) = f.strip_suffix(".c").or_else(|| f.strip_suffix(".S")) {
            let unit = format!("{stem}.o");
            // Without a record of the unit, its directory's kbuild files decide (no tree walk
            // for the unit list's cache key on a one-file patch).
            let own_unit = if target_record(&unit).is_some() {
                true
            } else if complete().is_some() {
                // The target's records are complete and none is this unit's.
                false
            } else {
                makefile_names(&tree.source, &unit)
            };
            if own_unit {
                out.exact.insert(unit);
            } else {
                out.searched.push((f.clone(), record_names(tree, f)));
                out.included_sources.push(f.clone());
            }
        } else if f.ends_with(".h") {
            out.searched.push((f.clone(), record_names(tree, f)));
        } else if f.ends_with(".rs") {
            bail!("{f}: patching Rust code of the kernel is not supported yet");
        } else {
            // Documentation, Kconfig, scripts: nothing that ends up in an object.
        }
    }
    if out.searched.is_empty() {
        return Ok(out);
    }
    let start = Instant::now();
    // A target whose records are complete answers alone.
    if let Some(units) = complete() {
        {
            for u in units {
                let text = fs::read_to_string(record_file(&tree.build, u)).unwrap_or_default();
                out.record_says(u, &text);
            }
            out.stats = Some(ScanStats {
                method: "records",
                units: units.len(),
                from_target_records: units.len(),
                seconds: start.elapsed().as_secs_f64(),
                ..ScanStats::default()
            });
            return Ok(out);
        }
    }
    // Per unit: the target's record where there is one, else the scan.
    let cached = cached_units().is_some();
    let fresh;
    let dry_start = Instant::now();
    let mut prepare_seconds = 0.0;
    let config_units = match cached_units() {
        Some(u) => u,
        None => {
            let (u, p) = config_units(inp)?;
            fresh = u;
            prepare_seconds = p;
            &fresh
        }
    };
    let dry_run_seconds = if cached {
        0.0
    } else {
        dry_start.elapsed().as_secs_f64() - prepare_seconds
    };
    let mut all = config_units.compiles.clone();
    let listed: BTreeSet<String> = all.iter().map(|c| c.unit.clone()).collect();
    // Units built in klpgen's directory are up to date there, so the dry run does not list
    // them: their records give their commands.
    for (unit, c) in own_compiles(inp.own)? {
        if !listed.contains(&unit) {
            all.push(c);
        }
    }
    let mut from_target = 0;
    let mut from_own = 0;
    let mut scanned: Vec<Compile> = Vec::new();
    // klpgen's own record of a unit is as good as the target's while the object is fresh
    // (kbuild would not rebuild it, so its dependency list is the current one).
    let mut fresh = Freshness::new(tree, &inp.own.dir, inp.own.make_args(tree));
    for c in all {
        if c.unit.starts_with("scripts/") || c.unit.starts_with("tools/") {
            continue; // host tools and their helpers, never part of the kernel
        }
        if let Some(rec) = target_record(&c.unit) {
            from_target += 1;
            out.record_says(&c.unit, &fs::read_to_string(rec).unwrap_or_default());
            continue;
        }
        let own = inp.own.record(&c.unit);
        if own.is_file() && fresh.unit_is_fresh(&c.unit) {
            from_own += 1;
            out.record_says(&c.unit, &fs::read_to_string(own).unwrap_or_default());
            continue;
        }
        scanned.push(c);
    }
    for u in &config_units.unknown {
        if target_record(u).is_none() {
            out.candidates.insert(u.clone());
        }
    }
    let config = &tree.config.values;
    let cache_path = inp.own.dir.join(CACHE).join("files.json");
    let mut cache: graph::ParseCache = fs::read(&cache_path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    let (g, gstats) = graph::Graph::build(&scanned, config, &mut cache);
    if cache.read > 0 {
        save(&cache_path, &cache)?;
    }
    let searched: Vec<PathBuf> = out
        .searched
        .iter()
        .map(|(f, _)| tree.source.join(f))
        .collect();
    let units_count = scanned.len() + from_target + from_own + config_units.unknown.len();
    for u in g.units_including(&searched) {
        if !out.exact.contains(&u) {
            out.candidates.insert(u);
        }
    }
    out.stats = Some(ScanStats {
        method: "scan",
        units: units_count,
        dry_run_cached: cached,
        files: gstats.files,
        files_read: gstats.read,
        opaque_units: g.always(),
        from_target_records: from_target,
        from_own_records: from_own,
        seconds: start.elapsed().as_secs_f64(),
        dry_run_seconds,
        prepare_seconds,
    });
    Ok(out)
}

/// `dir/.name.o.cmd` of the unit `dir/name.o` under `build`.
fn record_file(build: &Path, unit: &str) -> PathBuf {
    let p = build.join(unit);
    let name = p
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    p.with_file_name(format!(".{name}.cmd"))
}

/// The target's units, when its own products list them all and each has a record.
fn target_is_complete(tree: &Tree) -> Option<BTreeSet<String>> {
    let units = archive::built_units(&tree.build, tree.config.is_set("CONFIG_MODULES"))?;
    units
        .iter()
        .all(|u| record_file(&tree.build, u).is_file())
        .then_some(units)
}

/// Whether the Makefile or Kbuild of `unit`'s directory names its object (`foo.o`): a C file
/// no kbuild file names is not a unit of its own (it is `#include`d by one). A directory
/// without either says nothing against it.
fn makefile_names(source: &Path, unit: &str) -> bool {
    let p = Path::new(unit);
    let (Some(dir), Some(name)) = (p.parent(), p.file_name()) else {
        return false;
    };
    let name = name.to_string_lossy();
    let texts: Vec<String> = ["Makefile", "Kbuild"]
        .iter()
        .filter_map(|m| fs::read_to_string(source.join(dir).join(m)).ok())
        .collect();
    texts.is_empty()
        || texts.iter().any(|text| {
            text.split(|c: char| c.is_whitespace() || c == '=' || c == '+' || c == ':')
                .any(|w| w == name)
        })
}

/// The cached unit list, when it is still the configuration's.
fn cached_config_units(inp: &Inputs<'_>) -> Option<ConfigUnits> {
    let key = units_key(inp).ok()?;
    let bytes = fs::read(inp.own.dir.join(CACHE).join("units.json")).ok()?;
    let units: ConfigUnits = serde_json::from_slice(&bytes).ok()?;
    (units.key == key).then_some(units)
}

/// The units of the configuration from kbuild's dry run in klpgen's build directory, after
/// kbuild's `prepare` there (the scan reads generated headers); cached. Also the seconds the
/// `prepare` took.
fn config_units(inp: &Inputs<'_>) -> Result<(ConfigUnits, f64)> {
    let key = units_key(inp)?;
    crate::progress::message(&format!(
        "klpgen: {} keeps no complete set of kbuild records; finding the units of this configuration with kbuild's dry run in {} (once per configuration)",
        inp.tree.build.display(),
        inp.own.dir.display()
    ));
    let prep = Instant::now();
    inp.own
        .make_prepare(inp.tree, inp.jobs, &inp.logs.join("prepare.log"), inp.intr)?;
    let prepare_seconds = prep.elapsed().as_secs_f64();
    let log = inp.logs.join("dry-run.log");
    let out = inp.own.dry_run(inp.tree, &log, inp.intr)?;
    let mut compiles = cmdline::compiles_of_dry_run(&out.stdout, &inp.own.dir);
    if crate::kbuild::dry_run_skips_rust(inp.tree) {
        let rust = rust_c_units(&inp.tree.source, &inp.own.dir, &compiles);
        compiles.extend(rust);
    }
    if compiles.is_empty() {
        bail!(
            "kbuild's dry run in {} printed no compile commands (log: {}):\n{}",
            inp.own.dir.display(),
            log.display(),
            out.stderr.lines().take(20).collect::<Vec<_>>().join("\n")
        );
    }
    let mut unknown = BTreeSet::new();
    for l in out.stderr.lines() {
        // make: *** No rule to make target 'X', needed by 'Y'.
        if let Some(y) = l
            .split("needed by '")
            .nth(1)
            .and_then(|r| r.split('\'').next())
        {
            if y.ends_with(".o") && !y.ends_with(".mod.o") && y != "vmlinux.o" {
                unknown.insert(y.to_string());
            }
        }
    }
    let units = ConfigUnits {
        key,
        compiles,
        unknown: unknown.into_iter().collect(),
    };
    save(&inp.own.dir.join(CACHE).join("units.json"), &units)?;
    Ok((units, prepare_seconds))
}

/// The C units of `rust/` (`obj-$(CONFIG_RUST) += helpers/helpers.o exports.o` in its
/// Makefile, each with its `.c` file), which the dry run leaves out with the crates
/// ([`crate::kbuild::dry_run_skips_rust`]). kbuild compiles them with the flags of every C unit
/// of vmlinux (the rust Makefile removes warnings only): those of `kernel/fork.o` (else of
/// another C unit) with the unit's own directory on the search path instead of that unit's.
fn rust_c_units(source: &Path, objdir: &Path, compiles: &[Compile]) -> Vec<Compile> {
    let Ok(makefile) = fs::read_to_string(source.join("rust/Makefile")) else {
        return Vec::new();
    };
    let template = compiles
        .iter()
        .find(|c| c.unit == "kernel/fork.o")
        .or_else(|| {
            compiles.iter().find(|c| {
                c.source.extension().is_some_and(|e| e == "c")
                    && !c.unit.starts_with("scripts/")
                    && !c.unit.starts_with("tools/")
                    && !c.unit.starts_with("arch/")
            })
        });
    let Some(template) = template else {
        return Vec::new();
    };
    let tdir = Path::new(&template.unit).parent().unwrap_or(Path::new(""));
    let mut out = Vec::new();
    for line in makefile.lines() {
        let Some(rest) = line.trim().strip_prefix("obj-$(CONFIG_RUST)") else {
            continue;
        };
        let Some(objs) = rest.trim_start().strip_prefix("+=") else {
            continue;
        };
        for o in objs.split_whitespace() {
            let Some(stem) = o.strip_suffix(".o") else {
                continue;
            };
            let src = source.join("rust").join(format!("{stem}.c"));
            if !src.is_file() {
                continue; // a crate (`core.o`, `kernel.o`), not C
            }
            let unit = format!("rust/{o}");
            let dir = Path::new(&unit).parent().unwrap_or(Path::new("rust"));
            let mut c = template.clone();
            c.unit = unit.clone();
            c.source = src;
            for s in &mut c.search {
                if *s == source.join(tdir) {
                    *s = source.join(dir);
                } else if *s == objdir.join(tdir) {
                    *s = objdir.join(dir);
                }
            }
            out.push(c);
        }
    }
    out
}

/// The compile commands of the units klpgen has built in its directory, from their records.
fn own_compiles(own: &DiffBuild) -> Result<BTreeMap<String, Compile>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![own.dir.clone()];
    while let Some(dir) = stack.pop() {
        let Ok(rd) = fs::read_dir(&dir) else { continue };
        for e in rd.flatten() {
            let name = e.file_name();
            let name = name.to_string_lossy();
            let Ok(ft) = e.file_type() else { continue };
            if ft.is_dir() {
                if name != "source" && !name.starts_with('.') {
                    stack.push(e.path());
                }
                continue;
            }
            let Some(obj) = name.strip_prefix('.').and_then(|n| n.strip_suffix(".cmd")) else {
                continue;
            };
            if !obj.ends_with(".o") || obj.ends_with(".mod.o") {
                continue;
            }
            let Ok(rel) = dir.strip_prefix(&own.dir) else {
                continue;
            };
            let unit = rel.join(obj).to_string_lossy().into_owned();
            let Ok(text) = fs::read_to_string(e.path()) else {
                continue;
            };
            let Some(cmd) = cmdline::record_command(&text, &unit) else {
                continue;
            };
            let Some(toks) = cmdline::tokens(&cmd) else {
                continue;
            };
            if let Some(c) = cmdline::commands(&toks)
                .iter()
                .find_map(|(c, _)| cmdline::compile_of(c, &own.dir))
            {
                out.insert(unit, c);
            }
        }
    }
    Ok(out)
}

/// What the unit list depends on: the configuration, make's arguments, and every Makefile,
/// Kbuild and Kconfig file of the source tree (size and time), plus `.kernelvariables`.
fn units_key(inp: &Inputs<'_>) -> Result<String> {
    let mut h = Sha256::new();
    h.update(b"klpgen-depscan-units/3\0");
    h.update(inp.tree.config_text.as_bytes());
    for a in inp.own.make_args(inp.tree) {
        h.update(a.as_bytes());
        h.update([0]);
    }
    h.update(inp.tree.source.as_os_str().as_encoded_bytes());
    let kv = fs::read(inp.own.dir.join(".kernelvariables")).unwrap_or_default();
    h.update(&kv);
    for (path, size, mtime) in kbuild_files(&inp.tree.source)? {
        h.update(path.as_os_str().as_encoded_bytes());
        h.update(size.to_le_bytes());
        h.update(mtime.to_le_bytes());
    }
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

/// Every Makefile, Kbuild and Kconfig file under `root` (what decides which units exist and
/// their flags), with size and modification time, sorted.
fn kbuild_files(root: &Path) -> Result<Vec<(PathBuf, u64, i128)>> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let rd = fs::read_dir(&dir).with_context(|| format!("cannot list {}", dir.display()))?;
        for e in rd.flatten() {
            let name = e.file_name();
            let n = name.to_string_lossy();
            let Ok(ft) = e.file_type() else { continue };
            if ft.is_dir() {
                if !n.starts_with('.') && n != "Documentation" {
                    stack.push(e.path());
                }
            } else if n.starts_with("Makefile")
                || n.starts_with("Kbuild")
                || n.starts_with("Kconfig")
            {
                if let Ok(m) = e.metadata() {
                    out.push((e.path(), m.len(), graph::mtime_ns(&m)));
                }
            }
        }
    }
    out.sort();
    Ok(out)
}

fn save<T: serde::Serialize>(path: &Path, value: &T) -> Result<()> {
    if let Some(d) = path.parent() {
        fs::create_dir_all(d)?;
    }
    let tmp = path.with_extension("tmp");
    fs::write(&tmp, serde_json::to_vec(value)?)?;
    fs::rename(&tmp, path)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(source: &Path, build: &Path) -> Tree {
        Tree::for_tests(source, build, "", "")
    }

    /// A thin archive naming `members` (short names only).
    fn thin(members: &[&str]) -> Vec<u8> {
        let mut a = b"!<thin>\n".to_vec();
        let long: String = members.iter().map(|m| format!("{m}/\n")).collect();
        a.extend(
            format!(
                "{:<16}{:<12}{:<6}{:<6}{:<8}{:<10}`\n",
                "//",
                0,
                0,
                0,
                644,
                long.len()
            )
            .bytes(),
        );
        a.extend(long.bytes());
        if long.len() % 2 == 1 {
            a.push(b'\n');
        }
        let mut off = 0;
        for m in members {
            a.extend(
                format!(
                    "{:<16}{:<12}{:<6}{:<6}{:<8}{:<10}`\n",
                    format!("/{off}"),
                    0,
                    0,
                    0,
                    644,
                    1
                )
                .bytes(),
            );
            off += m.len() + 2;
        }
        a
    }

    fn rec(dir: &Path, unit: &str, deps: &[String]) {
        let (d, f) = unit.rsplit_once('/').unwrap();
        fs::create_dir_all(dir.join(d)).unwrap();
        let body = format!(
            "savedcmd_{unit} := gcc ...\n\ndeps_{unit} := \\\n  {} \\\n\n",
            deps.join(" \\\n  ")
        );
        fs::write(dir.join(d).join(format!(".{f}.cmd")), body).unwrap();
    }

    #[test]
    fn the_c_units_of_rust_take_the_flags_of_a_kernel_unit() {
        let tmp = tempfile::tempdir().unwrap();
        let (src, obj) = (tmp.path().join("src"), tmp.path().join("obj"));
        fs::create_dir_all(src.join("rust/helpers")).unwrap();
        fs::write(
            src.join("rust/Makefile"),
            "obj-$(CONFIG_RUST) += core.o ffi.o\nobj-$(CONFIG_RUST) += helpers/helpers.o\nalways-$(CONFIG_RUST) += exports_core_generated.h\nobj-$(CONFIG_RUST) += exports.o\n",
        )
        .unwrap();
        for f in ["rust/helpers/helpers.c", "rust/exports.c"] {
            fs::write(src.join(f), "").unwrap();
        }
        let fork = Compile {
            unit: "kernel/fork.o".into(),
            source: src.join("kernel/fork.c"),
            search: vec![src.join("include"), src.join("kernel"), obj.join("kernel")],
            forced: vec![src.join("include/linux/kconfig.h")],
            config_macros: Vec::new(),
            opaque: false,
        };
        let got = rust_c_units(&src, &obj, std::slice::from_ref(&fork));
        let units: Vec<&str> = got.iter().map(|c| c.unit.as_str()).collect();
        assert_eq!(units, ["rust/helpers/helpers.o", "rust/exports.o"]);
        assert_eq!(got[0].source, src.join("rust/helpers/helpers.c"));
        assert_eq!(
            got[0].search,
            [
                src.join("include"),
                src.join("rust/helpers"),
                obj.join("rust/helpers")
            ]
        );
        assert_eq!(got[1].forced, fork.forced);
        // No C unit to take the flags from: nothing rather than a guess.
        assert!(rust_c_units(&src, &obj, &[]).is_empty());
    }

    #[test]
    fn a_complete_record_set_answers_alone() {
        let tmp = tempfile::tempdir().unwrap();
        let (src, build) = (tmp.path().join("src"), tmp.path().join("build"));
        fs::create_dir_all(&build).unwrap();
        let abs = |f: &str| src.join(f).display().to_string();
        let units = [
            "fs/open.o",
            "arch/x86/a.o",
            "mm/b.o",
            "kernel/sched/build_policy.o",
        ];
        fs::write(build.join("vmlinux.a"), thin(&units)).unwrap();
        rec(
            &build,
            "fs/open.o",
            &[abs("fs/open.c"), abs("include/linux/fs.h")],
        );
        rec(
            &build,
            "arch/x86/a.o",
            &[abs("arch/x86/include/linux/fs.h")],
        );
        rec(&build, "mm/b.o", &[abs("include/linux/mm.h")]);
        rec(
            &build,
            "kernel/sched/build_policy.o",
            &[
                abs("kernel/sched/build_policy.c"),
                abs("kernel/sched/syscalls.c"),
            ],
        );
        let t = tree(&src, &build);
        let own = DiffBuild {
            dir: tmp.path().join("own"),
            include: tmp.path().join("inc"),
        };
        let intr = Interrupt::default();
        let inp = Inputs {
            tree: &t,
            own: &own,
            target_records: true,
            jobs: 1,
            logs: tmp.path(),
            intr: &intr,
        };
        let run = |files: &[&str]| {
            let files: Vec<String> = files.iter().map(|f| f.to_string()).collect();
            let mut a = affected(&inp, &files).unwrap();
            assert!(a.candidates.is_empty());
            assert!(a.verify(&own).is_empty());
            a
        };
        let a = run(&["include/linux/fs.h"]);
        assert_eq!(a.exact.iter().collect::<Vec<_>>(), ["fs/open.o"]);
        assert_eq!(a.stats.as_ref().unwrap().method, "records");
        // A C file compiled as part of another unit (#included): that unit.
        let a = run(&["kernel/sched/syscalls.c"]);
        assert_eq!(
            a.exact.iter().collect::<Vec<_>>(),
            ["kernel/sched/build_policy.o"]
        );
        assert!(a.not_compiled().is_empty());
        // Its own record: the unit itself.
        let a = run(&["kernel/sched/build_policy.c"]);
        assert_eq!(
            a.exact.iter().collect::<Vec<_>>(),
            ["kernel/sched/build_policy.o"]
        );
        // No record of its own and no unit includes it: not compiled, left out.
        let a = run(&["mm/x.c", "include/linux/mm.h"]);
        assert_eq!(a.exact.iter().collect::<Vec<_>>(), ["mm/b.o"]);
        assert_eq!(a.not_compiled(), ["mm/x.c"]);
        // A .c-only patch needs no records at all: a directory without kbuild files says
        // nothing against the file being its own unit.
        let none = tree(&src, &tmp.path().join("empty"));
        let inp = Inputs { tree: &none, ..inp };
        let a = affected(&inp, &["lib/y.c".to_string()]).unwrap();
        assert_eq!(a.exact.iter().collect::<Vec<_>>(), ["lib/y.o"]);
        // One its Makefile does not name is searched like a header.
        fs::create_dir_all(src.join("lib")).unwrap();
        fs::write(
            src.join("lib/Makefile"),
            "obj-y += y.o\nlib-$(CONFIG_Z) += z.o\n",
        )
        .unwrap();
        assert!(makefile_names(&src, "lib/z.o"));
        assert!(!makefile_names(&src, "lib/inc.o"));
    }
}
