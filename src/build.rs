//! `klpgen build`: the pipeline from patches to a livepatch module, as a list of phases.
//! target → plan → work directory → object pairs (original objects, patches applied, patched
//! objects, revert: always) → where each unit's code lives → callers' units → diff, plan and
//! bind each unit → verdict → module sources, kbuild, klp markings, check, signing → summary.
//! Each phase is a call into one file of `src/build/`.

mod ctx;
mod entry;
mod locks;
mod module;
mod pairs;
mod plan;
mod summary;
mod target;
mod unit;
mod workspace;

use anyhow::{Context, Result};

use crate::files::write_file;
use crate::process::Interrupt;
use crate::report::BuildReport;

use ctx::Ctx;
pub use plan::BuildArgs;
use plan::BuildPlan;
use summary::Summary;
use target::Target;
use workspace::Workspace;

pub fn run(args: BuildArgs) -> Result<()> {
    crate::progress::init(args.quiet, args.verbose || args.debug);
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
    let dist = if args.distribution_target() {
        let d = crate::distro::resolve(args.release.as_deref(), args.fetch, &args.given(), &intr)?;
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
    let target = Target::open(&args.target(dist.as_ref())?, rep)?;
    let plan = BuildPlan::resolve(args, &target.tree, rep)?;
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

/// The livepatch module of one target, built, checked and written; and what the summary says
/// about it.
struct Built {
    release: String,
    parts: unit::Parts,
    module: module::Written,
}

/// The pipeline for one target, in order: everything here reads the target, its work
/// directory and the plan, so a run over several targets would repeat just this. The work
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
    rep.stage("done");
    Ok(Built {
        release: target.tree.release.clone(),
        parts,
        module,
    })
}
