//! The original/patched object pairs to diff: the kernel tree's affected units (built before
//! and after the patches are applied in place, the tree always restored), an out-of-tree
//! module's objects (built in two copies of its sources), and the units that hold callers for
//! `--include-callers`.
//!
//! Between setting the original objects aside and putting them back, klpgen's build directory
//! may hold patched objects: `kbuild-dirty` lists those units, and a run that finds it (the
//! last one was killed in between) rebuilds them first. Callers of the changed functions come
//! from the target's `vmlinux.o` call graph up to the depth asked; their units are found by the
//! symbol tables of the target's objects (`kbuild::units_defining`), and past `--max-callers`
//! the build stops.

use std::fs;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use elfdiff::callgraph::CallGraph;
use elfdiff::explain::ChangedLines;
use elfdiff::{Diff, Object};

use super::ctx::Ctx;
use super::locks::lock_source;
use super::plan::OotPair;
use crate::depscan;
use crate::files::copy_to;
use crate::kbuild::fresh::Freshness;
use crate::kbuild::{self, DiffBuild};
use crate::mirror;
use crate::oot::OotModule;
use crate::patch::{self, Applied};
use crate::report::BuildReport;
use crate::verdict::Verdict;

/// One compiled unit: its name (object path relative to the build root, or to the module
/// directory) and its two objects.
#[derive(Clone)]
pub struct Pair {
    pub name: String,
    pub orig: PathBuf,
    pub patched: PathBuf,
}

/// The pairs of the patched code and the lines the patches changed (for `explain`).
pub struct Compiled {
    pub pairs: Vec<Pair>,
    pub changed_lines: Vec<ChangedLines>,
}

/// Build both sides of what the patches touch: the out-of-tree module, or the kernel tree.
pub fn build(ctx: &Ctx<'_>, rep: &mut BuildReport) -> Result<Compiled> {
    match &ctx.plan.oot {
        Some(oot) => from_module(ctx, oot, rep),
        None => from_tree(ctx, rep),
    }
}

/// The out-of-tree module's objects, from its two builds.
fn from_module(ctx: &Ctx<'_>, oot: &OotPair, rep: &mut BuildReport) -> Result<Compiled> {
    let m = OotModule::open(&oot.ko, &oot.src)?;
    rep.stage(&format!(
        "building module {} from {}, original and patched",
        m.name,
        m.src.display()
    ));
    let plan = ctx.plan;
    let builds = m.build_twice(
        &ctx.target.tree,
        &plan.patches,
        &ctx.ws.run_dir,
        &ctx.ws.include,
        plan.line_directives,
        plan.jobs,
        ctx.intr,
    )?;
    let pairs: Vec<Pair> = builds
        .objects
        .into_iter()
        .map(|rel| Pair {
            orig: builds.orig.join(&rel),
            patched: builds.patched.join(&rel),
            name: rel,
        })
        .collect();
    if let Some(first) = pairs.first() {
        ctx.target
            .check_compiler(&first.orig, plan.skip_compiler_check, rep)?;
    }
    Ok(Compiled {
        pairs,
        changed_lines: builds.changed_lines,
    })
}

/// The kernel tree's affected units, built before and after the patches (applied to the tree,
/// journaled, always reverted).
fn from_tree(ctx: &Ctx<'_>, rep: &mut BuildReport) -> Result<Compiled> {
    let (tree, ws, intr) = (&ctx.target.tree, ctx.ws, ctx.intr);
    let _source_lock = lock_source(&tree.source, ctx.plan.wait, intr)?;
    rep.stage("checking the patches and finding affected units");
    patch::check_first_applies(&tree.source, &ctx.plan.patches, intr)?;
    let mut files: Vec<String> = ctx
        .plan
        .patches
        .iter()
        .flat_map(|p| p.files.iter().cloned())
        .collect();
    files.dedup();
    let diffbuild = DiffBuild::prepare(tree, ws.dir.join("kbuild"), ws.include.clone(), intr)?;
    let mut affected = affected_units(ctx, &diffbuild, &files)?;
    let to_build = units_with_extra(ctx, affected.to_build(), &files)?;
    build_original(ctx, &diffbuild, &to_build, rep)?;
    let units = verified(ctx, &diffbuild, &mut affected, &to_build, &files, rep)?;
    let changed_lines = build_patched(ctx, &diffbuild, &units, &files, rep)?;
    let run_dir = &ws.run_dir;
    let pairs = units
        .iter()
        .map(|u| Pair {
            name: u.clone(),
            orig: run_dir.join("orig").join(u),
            patched: run_dir.join("patched").join(u),
        })
        .collect();
    Ok(Compiled {
        pairs,
        changed_lines,
    })
}

/// The units the edited files affect (`src/depscan.rs`: the target's records where complete,
/// else klpgen's dependency scan, whose candidates are verified after the original build).
fn affected_units(
    ctx: &Ctx<'_>,
    diffbuild: &DiffBuild,
    files: &[String],
) -> Result<depscan::Affected> {
    let affected = depscan::affected(
        &depscan::Inputs {
            tree: &ctx.target.tree,
            own: diffbuild,
            target_records: ctx.plan.target_records,
            jobs: ctx.plan.jobs,
            logs: &ctx.ws.run_dir,
            intr: ctx.intr,
        },
        files,
    )?;
    if let (Some(st), false) = (&affected.stats, ctx.plan.quiet) {
        if st.method == "scan" {
            crate::progress::message(&format!(
                "klpgen: dependency scan: {} of the configuration's {} units may include {} ({} decided by the target's records, {} by klpgen's own; include graph of {} files, {} read; the unit list {}; {:.1} s); building them, then kbuild's records of that build say which really do",
                affected.candidates.len() + affected.exact.len(),
                st.units,
                affected
                    .searched
                    .iter()
                    .map(|(f, _)| f.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
                st.from_target_records,
                st.from_own_records,
                st.files,
                st.files_read,
                if st.dry_run_cached { "from the cache" } else { "from kbuild's dry run" },
                st.seconds
            ));
        }
    }
    Ok(affected)
}

/// The units to build, with the `-t` units; none is no functional change.
fn units_with_extra(
    ctx: &Ctx<'_>,
    mut units: Vec<String>,
    files: &[String],
) -> Result<Vec<String>> {
    units.extend(ctx.plan.extra_units.iter().cloned());
    units.sort();
    units.dedup();
    if units.is_empty() {
        crate::progress::message(&format!(
            "klpgen: the patches touch no compiled file ({})",
            files.join(", ")
        ));
        return Err(Verdict::NoChange.into());
    }
    Ok(units)
}

/// After the original build: the scan's candidates that kbuild's records of that build show
/// not to include an edited file are dropped (they keep their cached original objects); the
/// rest are the units to build again with the patches. Says how many, and where the list is.
fn verified(
    ctx: &Ctx<'_>,
    diffbuild: &DiffBuild,
    affected: &mut depscan::Affected,
    built: &[String],
    files: &[String],
    rep: &mut BuildReport,
) -> Result<Vec<String>> {
    let dropped = affected.verify(diffbuild);
    for f in affected.not_compiled() {
        crate::progress::message(&format!(
            "klpgen: {f} is not compiled in this kernel (no unit of this configuration compiles it); its changes are left out"
        ));
    }
    let units: Vec<String> = built
        .iter()
        .filter(|u| !dropped.contains(u))
        .cloned()
        .collect();
    let method = match &affected.stats {
        Some(st) => st.method,
        None => "sources",
    };
    rep.units = Some(crate::report::UnitsEntry {
        affected: units.clone(),
        method,
        dropped: dropped.clone(),
        scan: affected.stats.clone(),
    });
    if units.is_empty() {
        crate::progress::message(&format!(
            "klpgen: no unit of this configuration compiles the patched files ({})",
            files.join(", ")
        ));
        return Err(Verdict::NoChange.into());
    }
    if !ctx.plan.quiet {
        if !dropped.is_empty() {
            crate::progress::message(&format!(
                "klpgen: {} of the scan's candidates do not include the edited files (kbuild's records of klpgen's build); they are not built again",
                dropped.len()
            ));
        }
        crate::progress::message(&affected_line(&units, ctx.plan.verbose));
    }
    Ok(units)
}

/// `N unit(s) affected: ...`: the list inline when short; else the count and where the list
/// is (a seq_file.h inline reaches hundreds of units, a 10,000-character line).
fn affected_line(units: &[String], verbose: bool) -> String {
    const INLINE: usize = 8;
    if units.len() <= INLINE {
        format!(
            "klpgen: {} unit(s) affected: {}",
            units.len(),
            units.join(" ")
        )
    } else if verbose {
        format!(
            "klpgen: {} unit(s) affected:\n  {}",
            units.len(),
            units.join("\n  ")
        )
    } else {
        format!(
            "klpgen: {} unit(s) affected: {} ... (all of them with --verbose, and under units.affected in the --report file)",
            units.len(),
            units[..INLINE].join(" ")
        )
    }
}

/// Build the units as they are into `<run>/orig/`, after forgetting the ones a killed run may
/// have left patched in klpgen's build directory; check they come from the target's compiler.
fn build_original(
    ctx: &Ctx<'_>,
    diffbuild: &DiffBuild,
    units: &[String],
    rep: &mut BuildReport,
) -> Result<()> {
    let (tree, ws, intr) = (&ctx.target.tree, ctx.ws, ctx.intr);
    if let Ok(list) = fs::read_to_string(ws.dir.join("kbuild-dirty")) {
        let stale: Vec<String> = list.lines().map(String::from).collect();
        diffbuild.forget(&stale);
        fs::remove_file(ws.dir.join("kbuild-dirty"))?;
    }
    rep.stage("building original objects (function sections)");
    // The cached original objects are used as they are when kbuild would not rebuild any of
    // them (kbuild/fresh.rs); else make decides, as always.
    let mut fresh = Freshness::new(tree, &diffbuild.dir, diffbuild.make_args(tree));
    let stale = units.iter().find_map(|u| fresh.stale_because(u));
    if let (Some(why), true) = (&stale, ctx.plan.verbose) {
        crate::progress::message(&format!("klpgen: make builds the original objects: {why}"));
    }
    let all_fresh = stale.is_none();
    let built: Vec<PathBuf> = if all_fresh {
        units.iter().map(|u| diffbuild.dir.join(u)).collect()
    } else {
        let built = diffbuild.build_units(
            tree,
            units,
            ctx.plan.jobs,
            &ws.run_dir.join("orig.log"),
            "building the original objects",
            intr,
        )?;
        fresh.made(units)?;
        built
    };
    for (u, p) in units.iter().zip(&built) {
        copy_to(p, &ws.run_dir.join("orig").join(u))?;
    }
    intr.check()?;
    ctx.target.check_compiler(
        &ws.run_dir.join("orig").join(&units[0]),
        ctx.plan.skip_compiler_check,
        rep,
    )?;
    if ctx.plan.show_workdir {
        crate::progress::message(&format!("klpgen: work directory {}", ws.run_dir.display()));
    }
    Ok(())
}

/// Apply the patches, build the units again into `<run>/patched/`, and revert: the tree and
/// klpgen's build directory get their originals back whatever happened in between. Returns
/// the lines the patches changed.
fn build_patched(
    ctx: &Ctx<'_>,
    diffbuild: &DiffBuild,
    units: &[String],
    files: &[String],
    rep: &mut BuildReport,
) -> Result<Vec<ChangedLines>> {
    let (tree, ws, intr) = (&ctx.target.tree, ctx.ws, ctx.intr);
    // Edits of C files and headers only leave every unit's command as recorded: the patched
    // objects then come from those commands, run directly, and klpgen's build directory is
    // never written (kbuild/fresh.rs).
    let plain_sources = files
        .iter()
        .all(|f| f.ends_with(".c") || f.ends_with(".h") || f.ends_with(".S"));
    if plain_sources {
        if let Some(changed) = build_patched_direct(ctx, diffbuild, units, files, rep)? {
            return Ok(changed);
        }
    }
    let saved = ws.run_dir.join("kbuild-saved");
    diffbuild.save(units, &saved)?;
    // Until the originals are back, these units in klpgen's build directory may hold patched
    // code: a run killed in between leaves this list, and the next run rebuilds them.
    let dirty = ws.dir.join("kbuild-dirty");
    fs::write(&dirty, units.join("\n"))?;
    let mut applied = apply_patches(ctx, files, rep)?;
    rep.stage("building patched objects");
    let patched_build = diffbuild
        .build_units(
            tree,
            units,
            ctx.plan.jobs,
            &ws.run_dir.join("patched.log"),
            "building the patched objects",
            intr,
        )
        .and_then(|paths| {
            units
                .iter()
                .zip(&paths)
                .try_for_each(|(u, p)| copy_to(p, &ws.run_dir.join("patched").join(u)))
        });
    // The patched objects must not be mistaken for original ones by the next run.
    let changed = std::mem::take(&mut applied.changed);
    let reverted = applied.revert();
    diffbuild.restore(units, &saved);
    let _ = fs::remove_file(&dirty);
    patched_build?;
    reverted.context("restoring the source tree")?;
    rep.stage("patches reverted, source tree restored");
    Ok(changed)
}

/// The patches applied to the target's source tree, under their journal (the caller reverts).
fn apply_patches(ctx: &Ctx<'_>, files: &[String], rep: &mut BuildReport) -> Result<Applied> {
    let (tree, ws) = (&ctx.target.tree, ctx.ws);
    rep.stage("applying patches");
    // In a mirror (in-tree builds) the files are links to the user's: give them their own.
    if tree.source.starts_with(&ws.dir) {
        mirror::unshare(&tree.source, files)?;
    }
    Applied::apply(
        &tree.source,
        &ctx.plan.patches,
        &ws.dir,
        ctx.plan.line_directives,
        ctx.intr,
    )
}

/// The patched build by the units' recorded commands, run directly: the patches applied, each
/// unit compiled into `<run>/patched/`, the tree reverted. None (nothing done) when a command
/// is not one klpgen runs itself.
fn build_patched_direct(
    ctx: &Ctx<'_>,
    diffbuild: &DiffBuild,
    units: &[String],
    files: &[String],
    rep: &mut BuildReport,
) -> Result<Option<Vec<ChangedLines>>> {
    let (tree, ws, intr) = (&ctx.target.tree, ctx.ws, ctx.intr);
    let out = ws.run_dir.join("patched");
    // Whether every command can be run directly is known before anything is patched.
    if !diffbuild.can_compile_direct(tree, units, &out) {
        return Ok(None);
    }
    let mut applied = apply_patches(ctx, files, rep)?;
    rep.stage("building patched objects");
    let built = diffbuild.compile_direct(
        tree,
        units,
        &out,
        ctx.plan.jobs,
        (
            &ws.run_dir.join("patched.log"),
            "building the patched objects",
        ),
        intr,
    );
    let changed = std::mem::take(&mut applied.changed);
    let reverted = applied.revert();
    let built = built?;
    reverted.context("restoring the source tree")?;
    if built.is_none() {
        bail!("the units' recorded commands could not be run directly after all");
    }
    rep.stage("patches reverted, source tree restored");
    Ok(Some(changed))
}

/// `--include-callers` for vmlinux code: build the units, outside the patched ones, that hold
/// callers of the changed functions (from the target's `vmlinux.o` call graph). The patches do
/// not touch these units, so each one's original object is also its patched one.
pub fn callers(ctx: &Ctx<'_>, vmlinux_pairs: &[&Pair], rep: &mut BuildReport) -> Result<Vec<Pair>> {
    if ctx.plan.callers.depth == 0 || ctx.plan.oot.is_some() {
        return Ok(Vec::new());
    }
    let extra = caller_units(ctx, vmlinux_pairs)?;
    if extra.is_empty() {
        return Ok(Vec::new());
    }
    let (tree, ws, intr) = (&ctx.target.tree, ctx.ws, ctx.intr);
    rep.stage(&format!(
        "building {} unit(s) with callers to include: {}",
        extra.len(),
        extra.join(" ")
    ));
    let diffbuild = DiffBuild::prepare(tree, ws.dir.join("kbuild"), ws.include.clone(), intr)?;
    let built = diffbuild.build_units(
        tree,
        &extra,
        ctx.plan.jobs,
        &ws.run_dir.join("callers.log"),
        "building the units of callers",
        intr,
    )?;
    let mut pairs = Vec::new();
    for (u, p) in extra.iter().zip(&built) {
        let o = ws.run_dir.join("orig").join(u);
        copy_to(p, &o)?;
        pairs.push(Pair {
            name: u.clone(),
            orig: o.clone(),
            patched: o,
        });
    }
    Ok(pairs)
}

/// Units not yet built that hold callers (up to --include-callers deep, from the target's
/// vmlinux.o call graph) of the functions the patches change.
fn caller_units(ctx: &Ctx<'_>, pairs: &[&Pair]) -> Result<Vec<String>> {
    let tree = &ctx.target.tree;
    let callers = ctx.plan.callers;
    let vmlinux_o = tree.build.join("vmlinux.o");
    if !vmlinux_o.is_file() {
        return Ok(Vec::new());
    }
    let mut changed: Vec<(String, Option<String>)> = Vec::new();
    let mut defined_here: Vec<(String, Option<String>)> = Vec::new();
    for pair in pairs {
        let u = &pair.name;
        let (ob, pb) = (fs::read(&pair.orig)?, fs::read(&pair.patched)?);
        let orig = Object::parse(format!("{u} (original)"), &ob)?;
        let patched = Object::parse(format!("{u} (patched)"), &pb)?;
        let file = orig.file_name.map(str::to_string);
        for s in &orig.symbols {
            if s.kind == elfdiff::model::SymKind::Func && s.section.is_some() {
                defined_here.push((
                    s.name.to_string(),
                    (!s.is_global()).then(|| file.clone().unwrap_or_default()),
                ));
            }
        }
        let diff = Diff::new(&orig, &patched);
        for f in &diff.functions {
            if let (elfdiff::Verdict::Changed(_), Some(o)) = (&f.verdict, f.orig) {
                let sym = orig.sym(o);
                changed.push((
                    sym.name.to_string(),
                    (!sym.is_global()).then(|| file.clone().unwrap_or_default()),
                ));
            }
        }
    }
    let bytes = fs::read(&vmlinux_o)?;
    let kernel = Object::<elfdiff::Orig>::parse("vmlinux.o", &bytes)?;
    let graph = CallGraph::build(&[&kernel]);
    let mut wanted: Vec<(String, Option<String>)> = Vec::new();
    for (name, file) in &changed {
        for f in graph.lookup(name, file.as_deref()) {
            for r in graph.callers(f, callers.depth) {
                let func = graph.func(r.func);
                let key = (
                    func.name.to_string(),
                    (!func.global).then(|| func.file.unwrap_or("").to_string()),
                );
                if !defined_here.contains(&key) && !wanted.contains(&key) {
                    wanted.push(key);
                }
            }
        }
    }
    if wanted.is_empty() {
        return Ok(Vec::new());
    }
    if wanted.len() > callers.max {
        bail!(
            "--include-callers {} reaches {} callers outside the patched units (more than --max-callers {}); raise --max-callers or lower the depth",
            callers.depth,
            wanted.len(),
            callers.max
        );
    }
    let mut units = kbuild::units_defining(tree, &wanted)?;
    units.retain(|u| !pairs.iter().any(|p| p.name == *u));
    Ok(units)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_unit_list_is_a_count_and_where_the_list_is() {
        let units: Vec<String> = (0..379).map(|i| format!("fs/u{i}.o")).collect();
        let line = affected_line(&units, false);
        assert!(line.starts_with("klpgen: 379 unit(s) affected: fs/u0.o "));
        assert!(line.contains("--verbose") && line.contains("units.affected"));
        assert!(!line.contains("fs/u8.o"), "{line}");
        assert!(line.len() < 200, "{line}");
        // --verbose: every unit, one a line.
        let all = affected_line(&units, true);
        assert_eq!(all.lines().count(), 380);
        // A short list stays on the line.
        let few = affected_line(&units[..2], false);
        assert_eq!(few, "klpgen: 2 unit(s) affected: fs/u0.o fs/u1.o");
    }
}
