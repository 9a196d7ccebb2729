//! The livepatch module from the units' parts: its sources (the hook and the livepatch
//! object, linked from several parts), the target's objtool run where kbuild would not run it,
//! the target's kbuild, the klp markings, the check against the target, signing, and the
//! written `.ko`.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use patchgen::check::{self, Inputs, TargetObject};
use patchgen::klp::KlpSummary;
use patchgen::kmod::{self, HookLang, ModuleSpec};

use super::ctx::Ctx;
use super::target::ModTarget;
use super::unit::Parts;
use crate::files::write_file;
use crate::kbuild;
use crate::objtool::{self, Objtool};
use crate::process::Interrupt;
use crate::report::{self as rpt, BuildReport};

/// The module as written.
pub struct Written {
    pub path: PathBuf,
    /// Its klp relocation sections.
    pub klp: KlpSummary,
}

/// The target's objtool, when klpgen must run it on the livepatch object: ORC targets that
/// run objtool per object (see src/objtool.rs), whose kbuild never runs it on a linked module.
/// The plan then leaves objtool's sections to it, as it does for delayed objtool.
pub fn own_objtool(ctx: &Ctx<'_>, units: &[String]) -> Result<Option<Objtool>> {
    if objtool::per_object(&ctx.target.tree) {
        // klpgen's own build directory (src/build/pairs.rs) holds the records of the units
        // it has just compiled, whether or not the target kept any.
        Ok(Some(objtool::locate(
            &ctx.target.tree,
            &ctx.ws.kbuild_dir(),
            units,
        )?))
    } else {
        Ok(None)
    }
}

/// Build, check, sign and write the module.
pub fn build(
    ctx: &Ctx<'_>,
    modules: &[ModTarget],
    parts: &Parts,
    objtool: Option<&Objtool>,
    rep: &mut BuildReport,
) -> Result<Written> {
    let moddir = ctx.ws.module_dir();
    write_sources(ctx, parts, &moddir, rep)?;
    let patch_obj = moddir.join("klpgen_patch.o");
    link_parts(&parts.objects, &moddir, &patch_obj, ctx.intr)?;
    if let Some(tool) = objtool {
        run_objtool(ctx, tool, &patch_obj, rep)?;
    }
    rep.stage("building the module with the target's kbuild");
    let module = &ctx.plan.module;
    let ko = kbuild::build_module(
        &ctx.target.tree,
        &ctx.ws.objtree(&ctx.target.tree),
        &ctx.ws.dir.join("module-cache"),
        &moddir,
        module,
        ctx.plan.jobs,
        ctx.intr,
    )?;
    let linked = fs::read(&ko)?;
    let (final_ko, klp) =
        patchgen::klp::finalize_module_with(module, &linked, Some(&parts.manifest))?;
    verify(ctx, &final_ko, modules)?;
    let final_ko =
        match &ctx.plan.signing {
            Some(s) => {
                rep.stage("signing the module");
                kbuild::sign_module(
                    &ctx.target.tree,
                    &moddir,
                    module,
                    &final_ko,
                    (&s.key, &s.cert),
                    // The target build's sign-file, or for a distribution's headers (whose
                    // scripts/ may be a dangling link) the one klpgen's own build directory built.
                    Some(s.sign_file.clone().unwrap_or_else(|| {
                        ctx.ws.objtree(&ctx.target.tree).join("scripts/sign-file")
                    }))
                    .as_deref(),
                    ctx.intr,
                )?
            }
            None => final_ko,
        };
    let out = &ctx.plan.output;
    write_file(out, &final_ko)?;
    rep.module = Some(rpt::ModuleEntry {
        path: out.display().to_string(),
        sha256: rpt::sha256_hex(&final_ko),
        signed: ctx.plan.signing.is_some(),
    });
    Ok(Written {
        path: out.clone(),
        klp,
    })
}

/// The hook (Rust or C) with a klp_object per patched object, each callback in the object
/// of the code it came from.
fn write_sources(ctx: &Ctx<'_>, parts: &Parts, moddir: &Path, rep: &mut BuildReport) -> Result<()> {
    let (plan, target) = (ctx.plan, ctx.target);
    rep.stage(&format!(
        "writing module sources ({} hook)",
        plan.hook.as_str()
    ));
    let wanted: Vec<&str> = kmod::klp_structs(!parts.states.is_empty())
        .into_iter()
        .chain(kmod::GUARD_STRUCTS.iter().copied())
        .collect();
    let layouts = match plan.hook {
        HookLang::Rust => elfdiff::dwarf::struct_layouts(
            &target.vm_label,
            &target.vmlinux,
            &wanted,
            "livepatch/core.c",
        )
        .context(
            "reading klp_* layouts for the Rust hook (use --hook c for targets without DWARF)",
        )?,
        HookLang::C => HashMap::new(),
    };
    // Each callback goes to the klp_object of the code it came from (one of a kind per module:
    // the writer names it by kind).
    let mut objects = parts.hook_objects.clone();
    for c in &parts.callbacks {
        super::unit::hook_object(&mut objects, c.object.clone())
            .callbacks
            .push(kmod::HookCallback {
                kind: c.kind,
                symbol: patchgen::writer::callback_alias(c.kind),
            });
    }
    let spec = ModuleSpec {
        module: plan.module.clone(),
        description: plan.description.clone(),
        objects,
        replace: plan.replace,
        import_ns: parts.import_ns.iter().cloned().collect(),
        states: parts.states.iter().map(|(st, _)| *st).collect(),
        // The module loads only on the kernel of the target's vmlinux (its banner).
        guard: Some(kmod::Guard {
            release: target.tree.release.clone(),
            version: target.tree.info.vmlinux_version.clone(),
        }),
    };
    for (name, text) in kmod::render(&spec, plan.hook, &layouts)? {
        fs::write(moddir.join(name), text)?;
    }
    Ok(())
}

/// `klpgen_patch.o`, the one object kbuild links into the module: the units' livepatch
/// objects, linked into one when there are several.
fn link_parts(
    objects: &[Vec<u8>],
    moddir: &Path,
    patch_obj: &Path,
    intr: &Interrupt,
) -> Result<()> {
    if let [only] = objects {
        fs::write(patch_obj, only)?;
        return Ok(());
    }
    let mut parts = Vec::new();
    for (i, o) in objects.iter().enumerate() {
        let p = moddir.join(format!("klpgen_part{i}.o"));
        fs::write(&p, o)?;
        parts.push(p);
    }
    let mut args: Vec<&std::ffi::OsStr> = vec!["-r".as_ref(), "-o".as_ref(), patch_obj.as_os_str()];
    for p in &parts {
        args.push(p.as_os_str());
    }
    // The target's linker (its cross toolchain's on another machine).
    let ld = crate::machine::tool("ld");
    let o = crate::process::run(&ld, args, None, &[], None, intr)?;
    if !o.success {
        bail!("linking the livepatch objects failed:\n{}", o.stderr);
    }
    Ok(())
}

/// The target's objtool on the livepatch object, in place: its output is printed and kept in
/// the report; a failing run fails the build.
fn run_objtool(
    ctx: &Ctx<'_>,
    tool: &Objtool,
    patch_obj: &Path,
    rep: &mut BuildReport,
) -> Result<()> {
    rep.stage("running the target's objtool on the livepatch object");
    let warnings = objtool::run(
        tool,
        patch_obj,
        &ctx.ws.run_dir.join("objtool.log"),
        ctx.intr,
    )?;
    if !warnings.is_empty() {
        crate::progress::message(&format!(
            "klpgen: objtool ({}) on the livepatch object:\n{}",
            tool.options.join(" "),
            warnings.join("\n")
        ));
        rep.objtool_warnings = warnings;
    }
    Ok(())
}

/// `klpgen check` against the target it was built for (vmlinux, Module.symvers, the modules
/// the code lives in); any finding fails the build.
fn verify(ctx: &Ctx<'_>, ko: &[u8], modules: &[ModTarget]) -> Result<()> {
    let target = TargetObject::vmlinux(&ctx.target.vm_label, &ctx.target.vmlinux)?;
    let mut map = HashMap::new();
    for m in modules {
        let t = TargetObject::module(&m.label, &m.bytes)?;
        let name = crate::modinfo::module_name(Path::new(&m.label), &m.bytes)?;
        map.insert(check::module_key(&name), t);
    }
    let modules = (!map.is_empty()).then_some(map);
    let report = check::check_module(
        &ctx.plan.module,
        ko,
        &Inputs {
            vmlinux: &target,
            symvers: Some(&ctx.target.symvers),
            modules: modules.as_ref(),
        },
    )?;
    if !report.ok() {
        let list: Vec<String> = report
            .findings
            .iter()
            .map(|f| format!("  [{}] {}", f.key, f.detail))
            .collect();
        bail!(
            "the generated module failed its checks:\n{}",
            list.join("\n")
        );
    }
    Ok(())
}
