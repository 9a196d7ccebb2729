//! `klpgen build`: the pipeline from patches to a livepatch module, as a list of phases.
//! target → plan → work directory → object pairs (original objects, patches applied, patched
//! objects, revert: always) → where each unit's code lives → callers' units → diff, plan and
//! bind each unit → verdict → module sources, kbuild, klp markings, check, signing → summary.
//! Each phase is a call into one file of `src/build/`. With `--kernel`/`--kernels` the
//! pipeline runs once per target, in parallel (`src/build/targets.rs`).

mod ctx;
mod entry;
mod locks;
mod module;
mod pairs;
mod plan;
mod spec;
mod summary;
mod target;
mod targets;
mod unit;
mod workspace;

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::files::write_file;
use crate::process::Interrupt;
use crate::report::BuildReport;

use ctx::Ctx;
pub use plan::BuildArgs;
use plan::{BuildPlan, PlanTarget};
use spec::KernelSpec;
use summary::Summary;
use target::Target;
pub use targets::TargetsFailed;
use workspace::Workspace;

pub fn run(args: BuildArgs) -> Result<()> {
    crate::progress::init(args.quiet, args.verbose || args.debug);
    if args.multi_target() {
        return targets::run(&args);
    }
    let mut rep = BuildReport::new();
    let result = build(&args, &mut rep);
    match &result {
        Ok(()) => rep.finish("built", crate::exit::OK, None),
        Err(e) => {
            let (code, word) = crate::classify(e);
            rep.finish(word, code, Some(crate::error_text(e)));
        }
    }
    if let Some(path) = &args.report {
        let json = serde_json::to_vec_pretty(&rep)?;
        write_file(path, &json).context("writing the report")?;
    }
    result
}

fn build(args: &BuildArgs, rep: &mut BuildReport) -> Result<()> {
    rep.stage("checking the target");
    let intr = Interrupt::install()?;
    // The target first: a tree that cannot carry a livepatch, or whose parts come from
    // different builds, is refused before the patches are even read.
    let spec = args.specs()?.remove(0);
    let target = open_target(args, &spec, rep, &intr)?;
    let t = PlanTarget {
        name: None,
        output_dir: args.output.clone(),
        jobs: plan::jobs(args),
        package: None,
        patches: plan::load_patches(args)?,
    };
    let t = PlanTarget {
        package: plan::package_options(args, &t.patches)?,
        ..t
    };
    let plan = BuildPlan::resolve(args, t, &target.tree, rep)?;
    let built = build_target(&plan, target, rep, &intr)?;
    summary::print(&Summary::new(
        &plan,
        &built.release,
        &built.parts,
        &built.module,
        rep,
    ));
    Ok(())
}

/// The target `spec` names, opened and checked: a distribution's kernel is found from its
/// packages first (fetched with `fetch`).
fn open_target(
    args: &BuildArgs,
    spec: &KernelSpec,
    rep: &mut BuildReport,
    intr: &Interrupt,
) -> Result<Target> {
    let dist = if spec.distribution_target() {
        let d = crate::distro::resolve(spec.release.as_deref(), spec.fetch, &spec.given(), intr)?;
        crate::progress::message(&format!(
            "klpgen: target {} ({} {}){}",
            d.release,
            d.package.distribution,
            d.package.version,
            d.vmlinux
                .as_ref()
                .map(|v| format!(", vmlinux {}", v.display()))
                .unwrap_or_default()
        ));
        Some(d)
    } else {
        None
    };
    Target::open(&args.target(spec, dist.as_ref())?, rep)
}

/// `--package`: the module's package next to it, carrying the report as it stands (the module
/// built and checked), its stages' times left out.
fn package(
    plan: &BuildPlan,
    target: &Target,
    module: &module::Written,
    opts: &crate::package::Options,
    rep: &mut BuildReport,
    intr: &Interrupt,
) -> Result<()> {
    rep.stage("writing the package");
    let mut doc = serde_json::to_value(&*rep)?;
    doc["result"] = "built".into();
    // Without the stages' times: the same inputs (and SOURCE_DATE_EPOCH) give the same
    // package.
    if let Some(o) = doc.as_object_mut() {
        o.remove("stages");
    }
    let report = serde_json::to_vec_pretty(&doc)?;
    let tree = &target.tree;
    let input = crate::package::Input {
        module: &plan.module,
        ko: &module.path,
        release: &tree.release,
        arch: crate::package::debian_arch(tree)?,
        distribution: tree
            .info
            .package
            .as_ref()
            .map(|p| (p.distribution, p.version.as_str())),
        description: &plan.description,
        report: &report,
        out_dir: module
            .path
            .parent()
            .map_or_else(|| PathBuf::from("."), Path::to_path_buf),
    };
    let w = match opts.kind {
        crate::package::Kind::Deb => crate::package::deb::write(&input, opts, intr)?,
    };
    let bytes = std::fs::read(&w.path)?;
    if !plan.quiet {
        crate::progress::message(&format!(
            "klpgen: package {} ({} {}; Depends: {})",
            w.path.display(),
            w.package,
            w.version,
            w.depends
        ));
    }
    rep.package = Some(crate::report::PackageEntry {
        path: w.path.display().to_string(),
        sha256: crate::report::sha256_hex(&bytes),
        name: w.package,
        version: w.version,
        depends: w.depends,
    });
    Ok(())
}

/// The livepatch module of one target, built, checked and written; and what the summary says
/// about it.
struct Built {
    release: String,
    parts: unit::Parts,
    module: module::Written,
}

/// The pipeline for one target, in order: everything here reads the target, its work
/// directory and the plan, so a run over several targets repeats just this. The work
/// directory (and its lock) lives as long as this function runs.
fn build_target(
    plan: &BuildPlan,
    mut target: Target,
    rep: &mut BuildReport,
    intr: &Interrupt,
) -> Result<Built> {
    let ws = Workspace::open(plan, &mut target, rep, intr)?;
    let ctx = Ctx {
        plan,
        target: &target,
        ws: &ws,
        intr,
    };
    // Original and patched objects of what the patches touch; the tree is restored.
    let compiled = pairs::build(&ctx, rep)?;
    intr.check()?;
    // Where each unit's code lives; with --include-callers, the units of their callers too.
    let mut units = unit::locate(&ctx, compiled.pairs)?;
    units.add_callers(pairs::callers(&ctx, &units.vmlinux_pairs(), rep)?);
    // What binds the new code to the running kernel, and who regenerates objtool's sections.
    let symbols = target.symbols(plan.debug)?;
    let objtool = module::own_objtool(&ctx, &units.names())?;
    let objtool_regenerates = target.delayed_objtool() || objtool.is_some();
    // Diff, plan and bind each unit; a refusal anywhere, or nothing to replace, stops here.
    let parts = unit::diff_all(
        &ctx,
        &units,
        &symbols,
        objtool_regenerates,
        &compiled.changed_lines,
        rep,
    )?;
    parts.verdict()?;
    // The module: sources, objtool, kbuild, klp markings, the check, signing, the file.
    let module = module::build(&ctx, &units.modules, &parts, objtool.as_ref(), rep)?;
    // A kernel before 6.3 will not load a patched module a second time while the livepatch
    // is loaded: said in the summary and the report, not refused (loading it once works).
    let patched_modules: Vec<&str> = parts
        .hook_objects
        .iter()
        .filter_map(|o| o.name.as_deref())
        .collect();
    rep.module_reload = crate::kernel::module_reload(
        target.clears_klp_relocations,
        &target.tree.release,
        &patched_modules,
    );
    if let Some(opts) = &plan.package {
        package(plan, &target, &module, opts, rep, intr)?;
    }
    rep.stage("done");
    Ok(Built {
        release: target.tree.release.clone(),
        parts,
        module,
    })
}
