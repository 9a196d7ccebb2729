//! `klpgen build`: the pipeline from patches to a livepatch module.
//! config check → affected units → original objects → apply patches → patched objects →
//! revert (always) → diff → plan → bind to the target → module sources → kbuild → klp markings
//! → structural check.

use std::collections::{BTreeSet, HashMap};
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};

use elfdiff::callgraph::CallGraph;
use elfdiff::explain::ChangedLines;
use elfdiff::{Diff, Object};
use patchgen::kmod::{self, HookFunc, HookLang, HookObject, ModuleSpec};
use patchgen::target::{bind_externals, bind_externals_module, Binding, Symvers, TargetSymtab};
use rayon::prelude::*;

use crate::diffcmd::{target_layouts, verdict, write_file};
use crate::kbuild::{self, DiffBuild};
use crate::kernel::{check_config, check_consistency, Tree};
use crate::mirror;
use crate::oot::OotModule;
use crate::patch::{self, Applied, PatchFile};
use crate::process::Interrupt;
use crate::report::{self as rpt, BuildReport};
use crate::{BuildArgs, HookArg, Verdict};

/// `livepatch-<name>`; kernel module names are at most 55 characters.
fn module_name(args: &BuildArgs) -> Result<String> {
    let raw = match &args.name {
        Some(n) => n.clone(),
        None => args.patches[0]
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "patch".into()),
    };
    let clean: String = raw
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let name = format!("livepatch-{clean}");
    if name.len() > 55 {
        bail!(
            "module name {name} is longer than the kernel's 55 characters; pass a shorter --name"
        );
    }
    Ok(name)
}

fn tree_workdir(tree: &Tree) -> PathBuf {
    let mut h = Sha256::new();
    h.update(tree.source.as_os_str().as_encoded_bytes());
    h.update([0]);
    h.update(tree.build.as_os_str().as_encoded_bytes());
    let key: String = h
        .finalize()
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect();
    kbuild::cache_root().join("trees").join(key)
}

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
    let tree = Tree::open(
        &args.sourcedir,
        args.builddir.as_deref(),
        args.config.as_deref(),
        args.vmlinux.as_deref(),
    )?;
    check_config(&tree.config, &tree.config_path)?;
    tree.check_target()?;
    rep.kernel.release = tree.release.clone();
    // The target: image, exports; they must belong to the build before anything is compiled.
    let vmlinux = fs::read(&tree.vmlinux)
        .with_context(|| format!("cannot read {}", tree.vmlinux.display()))?;
    let vm_label = tree.vmlinux.display().to_string();
    let symvers_text = fs::read_to_string(&tree.symvers)
        .with_context(|| format!("cannot read {}", tree.symvers.display()))?;
    let symvers = Symvers::parse(&tree.symvers.display().to_string(), &symvers_text)?;
    let oot_ko = match &args.oot_module {
        Some(ko) => {
            Some(fs::read(ko).with_context(|| format!("cannot read module {}", ko.display()))?)
        }
        None => None,
    };
    check_consistency(
        &tree,
        &vmlinux,
        &symvers,
        args.oot_module.as_deref().zip(oot_ko.as_deref()),
    )?;
    if let Some(l) = &args.cc_launcher {
        kbuild::set_compiler_launcher(&tree, l)?;
    }
    let module = module_name(args)?;
    let patches: Vec<PatchFile> = args
        .patches
        .iter()
        .map(|p| PatchFile::load(p))
        .collect::<Result<_>>()?;
    let jobs = args
        .jobs
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    rep.kernel.config_sha256 = rpt::sha256_hex(tree.config_text.as_bytes());
    rep.patches = patches
        .iter()
        .map(|p| rpt::PatchEntry {
            path: p.path.display().to_string(),
            sha256: rpt::sha256_hex(p.text.as_bytes()),
        })
        .collect();
    let hook = match args.hook {
        HookArg::Rust => HookLang::Rust,
        HookArg::C => HookLang::C,
        HookArg::Auto if tree.config.is_set("CONFIG_RUST") => HookLang::Rust,
        HookArg::Auto => HookLang::C,
    };
    rep.hook = Some(hook.as_str());

    let workdir = tree_workdir(&tree);
    fs::create_dir_all(&workdir).with_context(|| format!("cannot create {}", workdir.display()))?;
    let _lock = lock_tree(&workdir, &tree)?;
    if patch::recover(&workdir)? {
        crate::progress::message(&format!(
            "klpgen: restored {} from an interrupted earlier run",
            tree.source.display()
        ));
    }
    // An in-tree build: kbuild cannot build this tree elsewhere, so klpgen builds (and patches)
    // a mirror of its sources instead; the user's tree is then never patched.
    let oot_requested = args.oot_module.is_some();
    let tree = if !oot_requested && mirror::is_in_tree_build(&tree.source) {
        rep.stage("mirroring the sources of the in-tree build");
        let m = workdir.join("source");
        let st = mirror::sync(&tree.source, &m, &intr)?;
        crate::progress::message(&format!(
            "klpgen: {} holds an in-tree build; working on a mirror of its sources in {} ({} linked, {} copied, {} removed, {} unchanged)",
            tree.source.display(),
            m.display(),
            st.linked,
            st.copied,
            st.removed,
            st.unchanged
        ));
        Tree { source: m, ..tree }
    } else {
        tree
    };
    let run_dir = workdir.join("runs").join(&module);
    if run_dir.exists() {
        fs::remove_dir_all(&run_dir)
            .with_context(|| format!("cannot clean {}", run_dir.display()))?;
    }
    for d in ["orig", "patched", "module"] {
        fs::create_dir_all(run_dir.join(d))?;
    }
    // <klpgen/klpgen.h>, on the include path of both builds.
    let include = kbuild::install_header(&workdir)?;

    let oot = match (&args.oot_module, &args.oot_module_src) {
        (Some(ko), Some(src)) => Some(OotModule::open(ko, src)?),
        (None, None) => None,
        _ => bail!("--oot-module and --oot-module-src go together"),
    };
    let pairs = match &oot {
        Some(m) => {
            rep.stage(&format!(
                "building module {} from {}, original and patched",
                m.name,
                m.src.display()
            ));
            let pairs = m.build_pairs(
                &tree,
                &patches,
                &run_dir,
                &include,
                !args.no_line_directives,
                jobs,
                &intr,
            )?;
            if let Some((_, o, _)) = pairs.0.first() {
                check_compiler(&tree, o, args.skip_compiler_check, rep)?;
            }
            pairs
        }
        None => tree_pairs(
            args, rep, &tree, &patches, &workdir, &run_dir, &include, jobs, &intr,
        )?,
    };
    intr.check()?;
    let (mut pairs, changed_lines) = pairs;
    // Which object each unit's code lives in: vmlinux, or a module (in-tree `=m` or the
    // out-of-tree one), whose `.ko` gives sympos for its own symbols.
    let mut mod_targets: Vec<ModTarget> = Vec::new();
    let mut unit_target: Vec<Option<usize>> = Vec::new();
    for (u, _, _) in &pairs {
        let ko = match &oot {
            Some(m) => Some(m.ko.clone()),
            None => kbuild::module_of_unit(&tree, u)
                .map(|m| target_module_ko(&tree, u, &m))
                .transpose()?,
        };
        unit_target.push(match ko {
            None => None,
            Some(ko) => Some(match mod_targets.iter().position(|t| t.ko == ko) {
                Some(i) => i,
                None => {
                    mod_targets.push(ModTarget::load(&ko)?);
                    mod_targets.len() - 1
                }
            }),
        });
    }
    for t in &mod_targets {
        if oot.is_none() && !args.quiet {
            crate::progress::message(&format!(
                "klpgen: patching module {} (symbols from {})",
                t.name, t.label
            ));
        }
    }
    if args.include_callers > 0 && oot.is_none() {
        let vmlinux_pairs: Vec<_> = pairs
            .iter()
            .zip(&unit_target)
            .filter(|(_, t)| t.is_none())
            .map(|(p, _)| p.clone())
            .collect();
        let extra = caller_units(args, &tree, &vmlinux_pairs)?;
        if !extra.is_empty() {
            rep.stage(&format!(
                "building {} unit(s) with callers to include: {}",
                extra.len(),
                extra.join(" ")
            ));
            let diffbuild =
                DiffBuild::prepare(&tree, workdir.join("kbuild"), include.clone(), &intr)?;
            let built = diffbuild.build_units(
                &tree,
                &extra,
                jobs,
                &run_dir.join("callers.log"),
                "building the units of callers",
                &intr,
            )?;
            // The patches do not touch these units: the original object is the patched one.
            for (u, p) in extra.iter().zip(&built) {
                let o = run_dir.join("orig").join(u);
                copy_to(p, &o)?;
                pairs.push((u.clone(), o.clone(), o));
                unit_target.push(None);
            }
        }
    }

    // The target: symbols, layouts.
    let symtab = TargetSymtab::parse(&vm_label, &vmlinux)?;
    let layouts = target_layouts(Some((&vm_label, &vmlinux)), &[])?;
    if args.debug {
        let mut sizes: Vec<_> = layouts.entry_sizes.iter().collect();
        sizes.sort();
        let mut members: Vec<_> = layouts.member_offsets.iter().collect();
        members.sort();
        crate::progress::message(&format!(
            "klpgen: target layouts from {vm_label}: entry sizes {sizes:?}, member offsets {members:?}"
        ));
    }
    let delayed_objtool = tree.config.is_set("CONFIG_OBJTOOL")
        && (tree.config.is_set("CONFIG_X86_KERNEL_IBT") || tree.config.is_set("CONFIG_LTO_CLANG"));
    // ORC targets that run objtool per object: klpgen runs the target's objtool on the
    // livepatch object (see src/objtool.rs), so the plan leaves objtool's sections to it as it
    // does for delayed objtool.
    let own_objtool = if crate::objtool::per_object(&tree) {
        let units: Vec<String> = pairs.iter().map(|(u, _, _)| u.clone()).collect();
        Some(crate::objtool::locate(&tree, &units)?)
    } else {
        None
    };
    let objtool_regenerates = delayed_objtool || own_objtool.is_some();

    rep.stage("diffing");
    let mut summary = Summary::default();
    let mut objects = Vec::new();
    let mut refusals = Vec::new();
    let mut hook_funcs = Vec::new();
    // (kind, function name, unit) of every callback, for the one-per-kind check.
    // (kind, function, unit, klp_object name: None for vmlinux)
    let mut hook_callbacks: Vec<(elfdiff::CallbackKind, String, String, Option<String>)> =
        Vec::new();
    let mut all_bindings: Vec<Binding> = Vec::new();
    // Symbol namespaces to import: those of the namespaced exports the new code calls, and the
    // patched units' own `import_ns=` tags.
    let mut import_ns: BTreeSet<String> = BTreeSet::new();
    let mut manifest = patchgen::check::Manifest::default();
    // Read and diff every pair first: --include-callers needs the changed functions of all
    // units to find their callers in any of them (units added with -t included).
    let mut bytes = Vec::new();
    for (u, orig_path, patched_path) in &pairs {
        bytes.push((u.clone(), fs::read(orig_path)?, fs::read(patched_path)?));
    }
    let mut objects_pairs = Vec::new();
    for (u, ob, pb) in &bytes {
        objects_pairs.push((
            Object::parse(format!("{u} (original)"), ob)?,
            Object::parse(format!("{u} (patched)"), pb)?,
        ));
    }
    // The pairs are independent: diff them (and build their call graphs) in parallel; results
    // keep the order of the units, so nothing printed or written depends on scheduling.
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(jobs)
        .build()
        .context("starting the diff threads")?;
    let (mut diffs, graphs): (Vec<Diff<'_, '_>>, Vec<CallGraph<'_>>) = pool.install(|| {
        objects_pairs
            .par_iter()
            .map(|(o, p)| (Diff::new(o, p), CallGraph::build(&[o])))
            .unzip()
    });
    let changed_targets: Vec<(String, Option<String>)> = diffs
        .iter()
        .flat_map(|d| {
            d.functions
                .iter()
                .filter(|f| matches!(f.verdict, elfdiff::Verdict::Changed(_)))
                .filter_map(|f| f.orig)
                .map(|o| {
                    let sym = d.orig.sym(o);
                    let file =
                        (!sym.is_global()).then(|| d.orig.file_name.unwrap_or("").to_string());
                    (sym.name.to_string(), file)
                })
                .collect::<Vec<_>>()
        })
        .collect();
    let kernel_graph_bytes =
        if unit_target.iter().any(Option::is_none) && tree.build.join("vmlinux.o").is_file() {
            Some(fs::read(tree.build.join("vmlinux.o"))?)
        } else {
            None
        };
    let kernel_obj = match &kernel_graph_bytes {
        Some(b) => Object::<elfdiff::Orig>::parse("vmlinux.o", b).ok(),
        None => None,
    };
    let kernel_graph = kernel_obj.as_ref().map(|o| CallGraph::build(&[o]));
    let mut included_total = 0usize;
    let mut hook_objects: Vec<HookObject> = Vec::new();
    for (((((u, ob, pb), (orig, _)), diff), target), graph) in bytes
        .iter()
        .zip(&objects_pairs)
        .zip(diffs.iter_mut())
        .zip(&unit_target)
        .zip(&graphs)
    {
        let mod_target = target.map(|i| &mod_targets[i]);
        let objname = mod_target.map_or("vmlinux", |t| t.name.as_str());
        let mut caller_refusals = Vec::new();
        let mut included = include_callers(
            diff,
            graph,
            args,
            &changed_targets,
            &mut included_total,
            &mut caller_refusals,
        )?;
        // Replaced although unchanged, as the patch's KLPGEN_FORCE_FUNCTION asks.
        for f in &diff.forced {
            included.push((f.clone(), "forced by KLPGEN_FORCE_FUNCTION".to_string()));
        }
        if ob == pb && included.is_empty() {
            continue;
        }
        let mut report = diff.report();
        report.refused.extend(caller_refusals);
        if !args.quiet {
            crate::progress::pause();
            crate::diffcmd::print_text(u, &report);
        }
        refusals.extend(report.refused.iter().cloned());
        let mut entry = object_entry(u, objname, &report);
        let (g, file_of) = match (&kernel_graph, mod_target) {
            (Some(k), None) => (k, orig.file_name),
            _ => (graph, orig.file_name),
        };
        let explained = elfdiff::explain::explain_with(diff, &changed_lines);
        let private: Vec<&str> = diff
            .functions
            .iter()
            .filter(|r| r.private)
            .filter_map(|r| r.orig)
            .map(|o| diff.orig.sym(o).name)
            .collect();
        annotate_callers(&mut entry, g, file_of, &included, &private, args);
        annotate_explain(&mut entry, &explained, &included);
        rep.objects.push(entry);
        summary
            .ignored
            .extend(report.ignored.iter().map(|i| i.symbol.clone()));
        if report.changed.is_empty() && report.new.is_empty() {
            continue;
        }
        summary
            .changed
            .extend(report.changed.iter().map(|n| (n.clone(), u.clone())));
        summary
            .new
            .extend(report.new.iter().map(|n| (n.clone(), u.clone())));
        // One callback of each kind per klp_object, across all units.
        for c in &report.callbacks {
            if let Some((_, first, unit, _)) =
                hook_callbacks.iter().find(|(k, _, _, _)| *k == c.kind)
            {
                let mut r = elfdiff::annot::duplicate_callback(
                    c.kind,
                    &format!("{first} ({unit})"),
                    &format!("{} ({u})", c.function),
                );
                r.symbol = c.function.clone();
                refusals.push(r);
            } else {
                hook_callbacks.push((
                    c.kind,
                    c.function.clone(),
                    u.clone(),
                    mod_target.map(|t| t.name.clone()),
                ));
            }
        }
        if !report.refused.is_empty() {
            continue;
        }
        let plan = diff.plan(&elfdiff::PlanOptions {
            objtool_regenerates,
            ..layouts.clone()
        })?;
        let bindings = match mod_target {
            Some(t) => bind_externals_module(&plan, &t.name, &t.table, &symtab, &symvers),
            None => bind_externals(&plan, "vmlinux", &symtab, &symvers),
        }
        .with_context(|| format!("binding the references of {u}"))?;
        let late = patchgen::target::module_key_refusals(&plan, &bindings);
        if !late.is_empty() {
            let late_report = elfdiff::Report {
                refused: late.clone(),
                ..Default::default()
            };
            if !args.quiet {
                crate::progress::pause();
                crate::diffcmd::print_text(u, &late_report);
            }
            if let Some(entry) = rep.objects.last_mut() {
                entry
                    .functions
                    .extend(object_entry(u, objname, &late_report).functions);
            }
            refusals.extend(late);
            continue;
        }
        let base = hook_funcs.len();
        for (i, f) in plan.funcs.iter().enumerate() {
            let ext = elfdiff::plan::External {
                name: f.old_name.clone(),
                local: f.old_local,
                undefined: false,
            };
            let table = mod_target.map_or(&symtab, |t| &t.table);
            let sympos = table.locate(&ext, plan.file_name.as_deref(), &plan.orig_locals)?;
            hook_funcs.push(HookFunc {
                old_name: f.old_name.clone(),
                sympos,
                new_symbol: patchgen::writer::new_func_alias(base + i),
            });
        }
        rep.notes
            .extend(plan.notes.iter().map(|n| format!("{u}: {n}")));
        let bytes = patchgen::writer::write_patch_object(&plan, &bindings, base)?;
        manifest.add_unit(objname, &plan, &bindings, &hook_funcs[base..]);
        hook_object(&mut hook_objects, mod_target.map(|t| t.name.clone()))
            .funcs
            .extend(hook_funcs[base..].iter().cloned());
        objects.push(bytes);
        for b in &bindings {
            if let Binding::Klp {
                objname,
                name,
                sympos,
            } = b
            {
                rep.klp_relocations.push(rpt::KlpReloc {
                    object: objname.clone(),
                    symbol: name.clone(),
                    sympos: *sympos,
                });
            }
        }
        for b in &bindings {
            if let Binding::Plain { name } = b {
                if let Some(ns) = symvers.namespace(name) {
                    import_ns.insert(ns.to_string());
                }
            }
        }
        import_ns.extend(modinfo_imports(pb));
        all_bindings.extend(bindings);
    }
    let fake = elfdiff::Report {
        changed: summary.changed.iter().map(|(n, _)| n.clone()).collect(),
        new: summary.new.iter().map(|(n, _)| n.clone()).collect(),
        refused: refusals,
        ignored: vec![],
        callbacks: vec![],
    };
    if let Some(v) = verdict(&fake) {
        return Err(v.into());
    }
    if hook_funcs.is_empty() && hook_callbacks.is_empty() {
        return Err(Verdict::Refused(
            "only new functions and no changed one: nothing would call the new code".into(),
        )
        .into());
    }

    rep.stage(&format!("writing module sources ({} hook)", hook.as_str()));
    let layouts = match hook {
        HookLang::Rust => elfdiff::dwarf::struct_layouts(
            &vm_label,
            &vmlinux,
            &kmod::KLP_STRUCTS,
            "livepatch/core.c",
        )
        .context(
            "reading klp_* layouts for the Rust hook (use --hook c for targets without DWARF)",
        )?,
        HookLang::C => HashMap::new(),
    };
    // Each callback goes to the klp_object of the code it came from (one of a kind per module:
    // the writer names it by kind).
    for (kind, _, _, obj) in &hook_callbacks {
        hook_object(&mut hook_objects, obj.clone())
            .callbacks
            .push(kmod::HookCallback {
                kind: *kind,
                symbol: patchgen::writer::callback_alias(*kind),
            });
    }
    let spec_import_ns: Vec<String> = import_ns.into_iter().collect();
    let spec = ModuleSpec {
        module: module.clone(),
        description: format!(
            "livepatch built by klpgen from {}",
            args.patches
                .iter()
                .map(|p| p.file_name().unwrap_or_default().to_string_lossy())
                .collect::<Vec<_>>()
                .join(", ")
        ),
        objects: hook_objects,
        replace: !args.non_replace,
        import_ns: spec_import_ns.clone(),
    };
    let moddir = run_dir.join("module");
    for (name, text) in kmod::render(&spec, hook, &layouts)? {
        fs::write(moddir.join(name), text)?;
    }
    // Several objects: link them into one before kbuild sees them.
    let patch_obj = moddir.join("klpgen_patch.o");
    match objects.len() {
        1 => fs::write(&patch_obj, &objects[0])?,
        _ => {
            let mut parts = Vec::new();
            for (i, o) in objects.iter().enumerate() {
                let p = moddir.join(format!("klpgen_part{i}.o"));
                fs::write(&p, o)?;
                parts.push(p);
            }
            link_relocatable(&parts, &patch_obj, &intr)?;
        }
    }
    if let Some(tool) = &own_objtool {
        rep.stage("running the target's objtool on the livepatch object");
        let warnings = crate::objtool::run(tool, &patch_obj, &run_dir.join("objtool.log"), &intr)?;
        if !warnings.is_empty() {
            crate::progress::message(&format!(
                "klpgen: objtool ({}) on the livepatch object:\n{}",
                tool.options.join(" "),
                warnings.join("\n")
            ));
            rep.objtool_warnings = warnings;
        }
    }
    rep.stage("building the module with the target's kbuild");
    let ko = kbuild::build_module(&tree, &moddir, &module, jobs, &intr)?;
    let linked = fs::read(&ko)?;
    let (final_ko, klp) = patchgen::klp::finalize_module_with(&module, &linked, Some(&manifest))?;
    // `klpgen check` against the target; any finding fails the build.
    crate::checkcmd::verify_built(
        &module,
        &final_ko,
        &vm_label,
        &vmlinux,
        &symvers,
        &mod_targets
            .iter()
            .map(|t| (t.label.as_str(), t.bytes.as_slice()))
            .collect::<Vec<_>>(),
    )?;
    let final_ko = match (&args.sign_key, &args.sign_cert) {
        (Some(key), Some(cert)) => {
            rep.stage("signing the module");
            kbuild::sign_module(
                &tree,
                &moddir,
                &module,
                &final_ko,
                (key, cert),
                args.sign_file.as_deref(),
                &intr,
            )?
        }
        _ => final_ko,
    };
    let out = args.output.join(format!("{module}.ko"));
    write_file(&out, &final_ko)?;
    rep.module = Some(rpt::ModuleEntry {
        path: out.display().to_string(),
        sha256: rpt::sha256_hex(&final_ko),
        signed: args.sign_key.is_some(),
    });
    rep.stage("done");

    let klp_relocs: usize = klp.sections.iter().map(|(_, n)| n).sum();
    crate::progress::pause();
    println!("livepatch module: {}", out.display());
    println!("  kernel:          {}", tree.release);
    println!("  hook:            {}", hook.as_str());
    let (changed, new) = summary.qualified();
    println!("  changed:         {}", join_or_none(&changed));
    println!("  new:             {}", join_or_none(&new));
    if !hook_callbacks.is_empty() {
        let cbs: Vec<String> = hook_callbacks
            .iter()
            .map(|(k, f, _, _)| format!("{}={f}", k.member()))
            .collect();
        println!("  callbacks:       {}", cbs.join(", "));
    }
    if !spec_import_ns.is_empty() {
        println!("  import_ns:       {}", spec_import_ns.join(", "));
    }
    if !summary.ignored.is_empty() {
        println!("  ignored:         {}", summary.ignored.join(", "));
    }
    // Which objtool sections the target's objtool regenerates is in the report; the summary
    // keeps the notes a patch author acts on.
    for n in rep
        .notes
        .iter()
        .filter(|n| !n.contains("the target's objtool"))
    {
        println!("  note:            {n}");
    }
    println!(
        "  klp relocations: {klp_relocs} in {} section(s)",
        klp.sections.len()
    );
    for b in all_bindings
        .iter()
        .filter(|b| matches!(b, Binding::Klp { .. }))
    {
        println!("    {}", b.symbol_name());
    }
    print_consistency(&rep.objects);
    Ok(())
}

/// Per changed function: why it changed, its direct callers (those calling it in a loop
/// marked) and whether its address is taken — the text form of the report's consistency
/// analysis.
fn print_consistency(objects: &[rpt::ObjectEntry]) {
    let changed: Vec<_> = objects
        .iter()
        .flat_map(|o| o.functions.iter().map(move |f| (o, f)))
        .filter(|(_, f)| f.verdict == "changed")
        .collect();
    if changed.is_empty() {
        return;
    }
    println!("why and callers:");
    for (o, f) in changed {
        let why = f.why.as_deref().unwrap_or("changed");
        println!("  {} ({}): {why}", f.name, o.unit);
        let Some(c) = &f.callers else {
            continue;
        };
        let looping_only = c.looping.iter().filter(|l| !c.direct.contains(l));
        let callers: Vec<String> = c
            .direct
            .iter()
            .chain(looping_only)
            .map(|d| {
                if c.looping.contains(d) {
                    format!("{d} (in a loop)")
                } else {
                    d.clone()
                }
            })
            .collect();
        println!("    callers:       {}", join_or_none(&callers));
        println!(
            "    address taken: {}",
            if c.address_taken {
                "yes (callers through pointers are unknown)"
            } else {
                "no"
            }
        );
    }
}

/// A module the patched code lives in: its name as the kernel knows it (`klp_object.name`),
/// its `.ko` and that file's symbols (for `sympos` of the module's own symbols).
struct ModTarget {
    name: String,
    ko: PathBuf,
    label: String,
    bytes: Vec<u8>,
    table: TargetSymtab,
}

impl ModTarget {
    fn load(ko: &Path) -> Result<Self> {
        let bytes = fs::read(ko).with_context(|| format!("cannot read {}", ko.display()))?;
        let label = ko.display().to_string();
        let table = TargetSymtab::parse_module(&label, &bytes)?;
        let name = crate::oot::module_name_of(ko, &bytes)?;
        Ok(ModTarget {
            name,
            ko: ko.to_path_buf(),
            label,
            bytes,
            table,
        })
    }
}

/// The target's `.ko` of the in-tree module `unit` belongs to (`module` as listed in
/// `modules.order`): in the target build directory, else installed under /lib/modules.
fn target_module_ko(tree: &Tree, unit: &str, module: &str) -> Result<PathBuf> {
    let rel = Path::new(module).with_extension("ko");
    let candidates = [
        tree.build.join(&rel),
        Path::new("/lib/modules")
            .join(&tree.release)
            .join("kernel")
            .join(&rel),
    ];
    for c in &candidates {
        if c.is_file() {
            return Ok(c.clone());
        }
    }
    bail!(
        "{unit} is part of module {}; its .ko is needed for the positions of the module's symbols and is in neither {} nor {}",
        rel.display(),
        candidates[0].display(),
        candidates[1].display()
    )
}

/// The `import_ns=` tags of a patched unit's `.modinfo` (module units with MODULE_IMPORT_NS).
fn modinfo_imports(bytes: &[u8]) -> Vec<String> {
    object::File::parse(bytes)
        .map(|f| crate::oot::modinfo_values(&f, "import_ns"))
        .unwrap_or_default()
        .into_iter()
        .filter(|ns| !ns.is_empty())
        .collect()
}

/// The hook's klp_object for `name` (None: vmlinux), created empty when it is not there yet.
fn hook_object(objects: &mut Vec<HookObject>, name: Option<String>) -> &mut HookObject {
    match objects.iter().position(|o| o.name == name) {
        Some(i) => &mut objects[i],
        None => {
            objects.push(HookObject {
                name,
                funcs: Vec::new(),
                callbacks: Vec::new(),
            });
            objects.last_mut().expect("just pushed")
        }
    }
}

#[derive(Default)]
struct Summary {
    /// Changed and new functions: (name, unit).
    changed: Vec<(String, String)>,
    new: Vec<(String, String)>,
    /// Differences left out by annotations.
    ignored: Vec<String>,
}

impl Summary {
    /// The changed and new functions, a name that several units have (static functions of
    /// one name, a header's out-of-line inline) followed by its unit.
    fn qualified(&self) -> (Vec<String>, Vec<String>) {
        let all = || self.changed.iter().chain(&self.new);
        let name = |(n, u): &(String, String)| {
            if all().filter(|(m, _)| m == n).count() > 1 {
                format!("{n} ({u})")
            } else {
                n.clone()
            }
        };
        (
            self.changed.iter().map(name).collect(),
            self.new.iter().map(name).collect(),
        )
    }
}

fn join_or_none(v: &[String]) -> String {
    if v.is_empty() {
        "(none)".into()
    } else {
        v.join(", ")
    }
}

fn copy_to(from: &Path, to: &Path) -> Result<()> {
    if let Some(d) = to.parent() {
        fs::create_dir_all(d)?;
    }
    fs::copy(from, to)
        .with_context(|| format!("cannot copy {} to {}", from.display(), to.display()))?;
    Ok(())
}

fn link_relocatable(parts: &[PathBuf], out: &Path, intr: &Interrupt) -> Result<()> {
    let mut args: Vec<&std::ffi::OsStr> = vec!["-r".as_ref(), "-o".as_ref(), out.as_os_str()];
    for p in parts {
        args.push(p.as_os_str());
    }
    let o = crate::process::run("ld", args, None, &[], None, intr)?;
    if !o.success {
        bail!("linking the livepatch objects failed:\n{}", o.stderr);
    }
    Ok(())
}

fn object_entry(unit: &str, target: &str, r: &elfdiff::Report) -> rpt::ObjectEntry {
    let mut functions: Vec<rpt::FunctionVerdict> = Vec::new();
    let plain = |name: &String, verdict| rpt::FunctionVerdict {
        name: name.clone(),
        verdict,
        reason: None,
        key: None,
        hint: None,
        why: None,
        callers: None,
        explain: None,
    };
    functions.extend(r.changed.iter().map(|n| plain(n, "changed")));
    functions.extend(r.new.iter().map(|n| plain(n, "new")));
    functions.extend(r.refused.iter().map(|f| rpt::FunctionVerdict {
        name: f.symbol.clone(),
        verdict: "refused",
        reason: Some(f.reason.clone()),
        key: Some(f.key.clone()),
        hint: Some(f.hint.clone()),
        why: None,
        callers: None,
        explain: None,
    }));
    rpt::ObjectEntry {
        unit: unit.to_string(),
        target: target.into(),
        functions,
        ignored: r.ignored.clone(),
        callbacks: r.callbacks.clone(),
    }
}

/// GCC identification strings (`GCC: (...) X.Y.Z`) in an object's `.comment`.
fn compilers(label: &Path, bytes: &[u8]) -> Result<Vec<String>> {
    use object::{Object as _, ObjectSection as _};
    let file =
        object::File::parse(bytes).with_context(|| format!("cannot parse {}", label.display()))?;
    let data = file
        .section_by_name(".comment")
        .and_then(|s| s.data().ok())
        .unwrap_or(&[]);
    let mut out: Vec<String> = data
        .split(|&b| b == 0)
        .filter(|s| !s.is_empty())
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .filter(|s| s.starts_with("GCC:") || s.contains("clang version"))
        .collect();
    out.sort();
    out.dedup();
    Ok(out)
}

/// The objects klpgen diffs must come from the compiler that built the target: code from
/// another compiler differs everywhere and may not match the running kernel's calling
/// conventions. Refuses with both values unless told to skip.
fn check_compiler(tree: &Tree, orig_obj: &Path, skip: bool, rep: &mut BuildReport) -> Result<()> {
    let vm = fs::read(&tree.vmlinux)
        .with_context(|| format!("cannot read {}", tree.vmlinux.display()))?;
    let target = compilers(&tree.vmlinux, &vm)?;
    rep.kernel.compiler = target.join("; ");
    let ours = compilers(orig_obj, &fs::read(orig_obj)?)?;
    let mismatch: Vec<&String> = ours.iter().filter(|c| !target.contains(c)).collect();
    if mismatch.is_empty() || target.is_empty() {
        return Ok(());
    }
    let msg = format!(
        "compiler mismatch: the target was built by [{}], klpgen's objects by [{}]",
        target.join("; "),
        ours.join("; ")
    );
    if skip {
        crate::progress::message(&format!("klpgen: warning: {msg} (--skip-compiler-check)"));
        return Ok(());
    }
    bail!("{msg}; build with the target's compiler (or pass --skip-compiler-check if you know they are equivalent)")
}

/// Build the affected units of the kernel tree before and after the patches (applied to the
/// tree, journaled, always reverted); returns (unit, original object, patched object).
#[allow(clippy::too_many_arguments)]
fn tree_pairs(
    args: &BuildArgs,
    rep: &mut BuildReport,
    tree: &Tree,
    patches: &[PatchFile],
    workdir: &Path,
    run_dir: &Path,
    include: &Path,
    jobs: usize,
    intr: &Interrupt,
) -> Result<(UnitPairs, Vec<ChangedLines>)> {
    let _source_lock = lock_source(&tree.source, intr)?;
    rep.stage("checking the patches and finding affected units");
    patch::check_first_applies(&tree.source, patches, intr)?;
    let mut files: Vec<String> = patches
        .iter()
        .flat_map(|p| p.files.iter().cloned())
        .collect();
    files.dedup();
    let diffbuild = DiffBuild::prepare(tree, workdir.join("kbuild"), include.to_path_buf(), intr)?;
    let mut units = match kbuild::affected_units(tree, &files, &tree.build)? {
        Some(u) => u,
        None => {
            // The target has no kbuild records (a distribution's build tree): klpgen's own
            // build directory gets them, from a complete function-sections build made once.
            if !diffbuild.has_full_build() {
                rep.stage(
                    "building the whole kernel once to find which units include the edited headers",
                );
                crate::progress::message(&format!(
                    "klpgen: the patch edits headers and {} has no kbuild dependency records (.*.o.cmd); building the whole kernel once in {} to learn them (later runs reuse it)",
                    tree.build.display(),
                    diffbuild.dir.display()
                ));
                diffbuild.build_all(tree, jobs, &run_dir.join("full-build.log"), intr)?;
            }
            kbuild::affected_units(tree, &files, &diffbuild.dir)?.with_context(|| {
                format!(
                    "{} holds a complete build but no dependency records",
                    diffbuild.dir.display()
                )
            })?
        }
    };
    for t in &args.targets {
        match t.as_str() {
            "vmlinux" | "modules" => {}
            u if u.ends_with(".o") => units.push(u.to_string()),
            other => bail!("--target {other}: expected an object (UNIT.o), vmlinux or modules"),
        }
    }
    units.sort();
    units.dedup();
    if units.is_empty() {
        crate::progress::message(&format!(
            "klpgen: the patches touch no compiled file ({})",
            files.join(", ")
        ));
        return Err(Verdict::NoChange.into());
    }
    if !args.quiet {
        crate::progress::message(&format!(
            "klpgen: {} unit(s) affected: {}",
            units.len(),
            units.join(" ")
        ));
    }

    if let Ok(list) = fs::read_to_string(workdir.join("kbuild-dirty")) {
        let stale: Vec<String> = list.lines().map(String::from).collect();
        diffbuild.forget(&stale);
        fs::remove_file(workdir.join("kbuild-dirty"))?;
    }
    rep.stage("building original objects (function sections)");
    let built = diffbuild.build_units(
        tree,
        &units,
        jobs,
        &run_dir.join("orig.log"),
        "building the original objects",
        intr,
    )?;
    for (u, p) in units.iter().zip(&built) {
        copy_to(p, &run_dir.join("orig").join(u))?;
    }
    intr.check()?;

    check_compiler(
        tree,
        &run_dir.join("orig").join(&units[0]),
        args.skip_compiler_check,
        rep,
    )?;
    if args.debug || args.skip_cleanup {
        crate::progress::message(&format!("klpgen: work directory {}", run_dir.display()));
    }
    let saved = run_dir.join("kbuild-saved");
    diffbuild.save(&units, &saved)?;
    // Until the originals are back, these units in klpgen's build directory may hold patched
    // code: a run killed in between leaves this list, and the next run rebuilds them.
    let dirty = workdir.join("kbuild-dirty");
    fs::write(&dirty, units.join("\n"))?;
    rep.stage("applying patches");
    // In a mirror (in-tree builds) the files are links to the user's: give them their own.
    if tree.source.starts_with(workdir) {
        mirror::unshare(&tree.source, &files)?;
    }
    let mut applied = Applied::apply(
        &tree.source,
        patches,
        workdir,
        !args.no_line_directives,
        intr,
    )?;
    rep.stage("building patched objects");
    let patched_build = diffbuild
        .build_units(
            tree,
            &units,
            jobs,
            &run_dir.join("patched.log"),
            "building the patched objects",
            intr,
        )
        .and_then(|paths| {
            units
                .iter()
                .zip(&paths)
                .try_for_each(|(u, p)| copy_to(p, &run_dir.join("patched").join(u)))
        });
    // The patched objects must not be mistaken for original ones by the next run.
    let changed = std::mem::take(&mut applied.changed);
    let reverted = applied.revert();
    diffbuild.restore(&units, &saved);
    let _ = fs::remove_file(&dirty);
    patched_build?;
    reverted.context("restoring the source tree")?;
    rep.stage("patches reverted, source tree restored");
    let pairs = units
        .iter()
        .map(|u| {
            (
                u.clone(),
                run_dir.join("orig").join(u),
                run_dir.join("patched").join(u),
            )
        })
        .collect();
    Ok((pairs, changed))
}

/// (unit, original object, patched object) for each compiled unit.
pub(crate) type UnitPairs = Vec<(String, PathBuf, PathBuf)>;

/// `--include-callers N`: re-emit the callers of the changed functions (within the object, up
/// to depth N) so tasks switch only once they have left them. Returns the functions added
/// with the reason; refusals for callers that cannot be patched go to `refusals`.
fn include_callers(
    diff: &mut Diff<'_, '_>,
    graph: &CallGraph<'_>,
    args: &BuildArgs,
    targets: &[(String, Option<String>)],
    total: &mut usize,
    refusals: &mut Vec<elfdiff::Refusal>,
) -> Result<Vec<(String, String)>> {
    let mut added: Vec<(String, String)> = Vec::new();
    if args.include_callers == 0 {
        return Ok(added);
    }
    let changed: Vec<String> = targets.iter().map(|(n, _)| n.clone()).collect();
    let here = diff.orig.file_name;
    for (name, file) in targets {
        // A static of another file cannot be called from this one.
        if file.is_some() && file.as_deref() != here {
            continue;
        }
        for f in graph.lookup(name, file.as_deref()) {
            for r in graph.callers(f, args.include_callers) {
                let caller = graph.func(r.func).name.to_string();
                if added.iter().any(|(n, _)| *n == caller) || changed.contains(&caller) {
                    continue;
                }
                let why = format!("caller of {name} at depth {} (--include-callers)", r.depth);
                match diff.include_unchanged(&caller, &why) {
                    Ok(true) => {
                        added.push((caller, why));
                        *total += 1;
                    }
                    Ok(false) => {}
                    Err(refusal) => refusals.push(refusal),
                }
                if *total > args.max_callers {
                    bail!(
                        "--include-callers {} would add more than {} callers ({} so far, last {}); raise --max-callers or lower the depth",
                        args.include_callers,
                        args.max_callers,
                        *total,
                        added.last().map_or("", |(n, _)| n.as_str())
                    );
                }
            }
        }
    }
    Ok(added)
}

/// Add the consistency analysis to a report entry and warn about callers that loop over a
/// changed function and are not themselves replaced.
fn annotate_callers(
    entry: &mut rpt::ObjectEntry,
    graph: &CallGraph<'_>,
    file: Option<&str>,
    included: &[(String, String)],
    private: &[&str],
    args: &BuildArgs,
) {
    let quiet = args.quiet;
    let replaced: Vec<&str> = entry
        .functions
        .iter()
        .filter(|f| f.verdict == "changed")
        .map(|f| f.name.as_str())
        .collect::<Vec<_>>();
    let replaced: Vec<String> = replaced.iter().map(|s| s.to_string()).collect();
    for f in entry
        .functions
        .iter_mut()
        .filter(|f| f.verdict == "changed")
    {
        f.why = Some(included.iter().find(|(n, _)| *n == f.name).map_or_else(
            || "its own code changed".to_string(),
            |(_, why)| why.clone(),
        ));
        let mut info = rpt::CallerInfo::default();
        for id in graph.lookup(&f.name, file) {
            let c = graph.consistency(id);
            info.address_taken |= c.address_taken;
            // Statics of other files are shown as file:name.
            let label = |id| {
                let func = graph.func(id);
                match func.file {
                    Some(f) if !func.global && Some(f) != file => format!("{f}:{}", func.name),
                    _ => func.name.to_string(),
                }
            };
            for e in &c.callers {
                info.direct.push(label(e.caller));
            }
            for l in &c.looping_callers {
                info.looping.push(label(*l));
            }
            if private.contains(&f.name.as_str()) {
                for e in c.callers.iter().filter(|e| e.tail_calls > 0) {
                    info.tail_calling.push(label(e.caller));
                }
            }
        }
        info.tail_calling.sort();
        info.tail_calling.dedup();
        info.direct.sort();
        info.direct.dedup();
        info.looping.sort();
        info.looping.dedup();
        let own_change = !included.iter().any(|(n, _)| *n == f.name);
        if !quiet && own_change {
            for l in info.looping.iter().filter(|l| !replaced.contains(l)) {
                crate::progress::message(&format!(
                    "klpgen: warning: {l}() calls {}() in a loop; a task inside {l}() during the transition may see the old and the new {}() in turn (--include-callers 1 patches {l}() too)",
                    f.name, f.name
                ));
            }
        }
        if !quiet {
            for t in &info.tail_calling {
                crate::progress::message(&format!(
                    "klpgen: warning: {t}() tail-calls {name}(), which livepatch cannot redirect (no ftrace entry) and reaches through its replaced callers; a task inside the old {name}() entered from {t}() has no replaced function on its stack, so it switches during the transition and finishes the old {name}() under the new code",
                    name = f.name
                ));
            }
        }
        f.callers = Some(info);
    }
}

/// Say why each function changed (own code, inlined code, split part, or included as a
/// caller) and attach `klpgen explain`'s finding.
fn annotate_explain(
    entry: &mut rpt::ObjectEntry,
    explained: &elfdiff::explain::Explain,
    included: &[(String, String)],
) {
    use elfdiff::explain::Cause;
    for f in entry
        .functions
        .iter_mut()
        .filter(|f| f.verdict != "refused")
    {
        let Some(e) = explained.functions.iter().find(|e| e.function == f.name) else {
            continue;
        };
        if !included.iter().any(|(n, _)| *n == f.name) {
            f.why = Some(match e.cause {
                Cause::OwnCode => "its own code changed".to_string(),
                Cause::InlinedCallee if !e.changed_callees.is_empty() => format!(
                    "it inlines changed {}",
                    e.changed_callees.join(", ")
                ),
                Cause::InlinedCallee => format!(
                    "code inlined into it changed ({})",
                    if e.inlined_callees.is_empty() {
                        "callee unknown".to_string()
                    } else {
                        e.inlined_callees.join(" in ")
                    }
                ),
                Cause::SplitPart => "a split part (.cold/.part) changed".to_string(),
                Cause::Callee => e.summary.clone(),
                Cause::Indirect if e.changed_callees.is_empty() => {
                    "none of its lines changed (a changed macro, type or constant it uses)"
                        .to_string()
                }
                Cause::Indirect => format!(
                    "none of its lines changed (a changed macro, type or constant it uses, or the compiler's view of changed {} that it calls)",
                    e.changed_callees.join(", ")
                ),
                Cause::New => "new function".to_string(),
            });
        }
        f.explain = Some(e.clone());
    }
}

/// One run at a time per kernel tree (and so per cache directory): an exclusive lock on a file
/// in the tree's work directory, held until the run ends. Its contents name the holder.
fn lock_tree(workdir: &Path, tree: &Tree) -> Result<fs::File> {
    use std::io::{Seek, Write};
    let path = workdir.join("lock");
    let mut f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    match f.try_lock() {
        Ok(()) => {}
        Err(fs::TryLockError::WouldBlock) => {
            let holder = fs::read_to_string(&path).unwrap_or_default();
            bail!(
                "another klpgen run is using {} ({}); wait for it to finish",
                tree.source.display(),
                holder.trim()
            );
        }
        Err(fs::TryLockError::Error(e)) => {
            return Err(e).with_context(|| format!("cannot lock {}", path.display()))
        }
    }
    f.set_len(0)?;
    f.rewind()?;
    let args: Vec<String> = std::env::args().collect();
    writeln!(f, "pid {}: {}", std::process::id(), args.join(" "))?;
    Ok(f)
}

/// The source tree is patched in place: runs with different klpgen caches (their own locks)
/// must still take turns on it, or one would build the other's patched files. A lock on the
/// directory itself (nothing is written there); a second run waits, interruptibly.
fn lock_source(source: &Path, intr: &Interrupt) -> Result<fs::File> {
    let f = fs::File::open(source).with_context(|| format!("cannot open {}", source.display()))?;
    let mut said = false;
    loop {
        match f.try_lock() {
            Ok(()) => return Ok(f),
            Err(fs::TryLockError::WouldBlock) => {
                if !said {
                    crate::progress::message(&format!(
                        "klpgen: waiting for another klpgen run that is patching {}",
                        source.display()
                    ));
                    said = true;
                }
                intr.check()?;
                std::thread::sleep(std::time::Duration::from_millis(200));
            }
            Err(fs::TryLockError::Error(e)) => {
                return Err(e).with_context(|| format!("cannot lock {}", source.display()))
            }
        }
    }
}

/// Units not yet built that hold callers (up to --include-callers deep, from the target's
/// vmlinux.o call graph) of the functions the patches change.
fn caller_units(
    args: &BuildArgs,
    tree: &Tree,
    pairs: &[(String, PathBuf, PathBuf)],
) -> Result<Vec<String>> {
    let vmlinux_o = tree.build.join("vmlinux.o");
    if !vmlinux_o.is_file() {
        return Ok(Vec::new());
    }
    let mut changed: Vec<(String, Option<String>)> = Vec::new();
    let mut defined_here: Vec<(String, Option<String>)> = Vec::new();
    for (u, o, p) in pairs {
        let (ob, pb) = (fs::read(o)?, fs::read(p)?);
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
            for r in graph.callers(f, args.include_callers) {
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
    if wanted.len() > args.max_callers {
        bail!(
            "--include-callers {} reaches {} callers outside the patched units (more than --max-callers {}); raise --max-callers or lower the depth",
            args.include_callers,
            wanted.len(),
            args.max_callers
        );
    }
    let mut units = kbuild::units_defining(tree, &wanted)?;
    units.retain(|u| !pairs.iter().any(|(p, _, _)| p == u));
    Ok(units)
}
