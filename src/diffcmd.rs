//! `klpgen diff`: the differ on one object pair, optionally writing the livepatch object.

use std::fs;
use std::path::Path;

use anyhow::{bail, Context, Result};

use elfdiff::{Diff, Object, PlanOptions, Report};
use patchgen::target::{bind_externals, symvers_mismatch, KernelIdentity, Symvers, TargetSymtab};

use crate::{DiffArgs, Format, Verdict};

/// The plan's options from the target: entry sizes and member offsets from its DWARF (a
/// target without DWARF gives none), then entry sizes from the command line
/// (`SECTION=BYTES`). `objtool_regenerates` is left to the caller.
pub fn target_layouts(target: Option<(&str, &[u8])>, cli: &[String]) -> Result<PlanOptions> {
    let mut out = PlanOptions::default();
    if let Some((label, data)) = target {
        let mut wanted: Vec<&str> = elfdiff::plan::special_section_structs()
            .map(|(_, s)| s)
            .chain(elfdiff::plan::LAYOUT_MEMBERS.iter().map(|(s, _)| *s))
            .collect();
        wanted.sort_unstable();
        wanted.dedup();
        if let Ok(layouts) = elfdiff::dwarf::struct_layouts(label, data, &wanted, "") {
            for (sec, st) in elfdiff::plan::special_section_structs() {
                if let Some(l) = layouts.get(st) {
                    out.entry_sizes.insert(sec.to_string(), l.size);
                }
            }
            for (st, m) in elfdiff::plan::LAYOUT_MEMBERS {
                if let Some(member) = layouts.get(*st).and_then(|l| l.member(m)) {
                    out.member_offsets
                        .insert(format!("{st}.{m}"), member.offset);
                }
            }
        }
    }
    for e in cli {
        let (sec, n) = e
            .split_once('=')
            .with_context(|| format!("--entry-size {e}: expected SECTION=BYTES"))?;
        let n: u64 = n
            .parse()
            .with_context(|| format!("--entry-size {e}: not a number"))?;
        out.entry_sizes.insert(sec.to_string(), n);
    }
    Ok(out)
}

/// Turn a report into the verdict klpgen stops with, if any.
pub fn verdict(report: &Report) -> Option<Verdict> {
    if !report.refused.is_empty() {
        let lines: Vec<String> = report
            .refused
            .iter()
            .map(|r| {
                format!(
                    "\n  [{}] {} in {}: {}\n    hint: {}",
                    r.key, r.symbol, r.section, r.reason, r.hint
                )
            })
            .collect();
        return Some(Verdict::Refused(format!(
            "{} unsupported change(s):{}",
            report.refused.len(),
            lines.concat()
        )));
    }
    if report.changed.is_empty() && report.new.is_empty() {
        return Some(Verdict::NoChange);
    }
    None
}

pub fn print_text(label: &str, r: &Report) {
    println!("{label}:");
    for f in &r.changed {
        println!("  changed  {f}");
    }
    for f in &r.new {
        println!("  new      {f}");
    }
    for f in &r.refused {
        println!("  refused  {} ({})", f.symbol, f.key);
    }
    for i in &r.ignored {
        println!("  ignored  {} in {}: {}", i.symbol, i.section, i.reason);
    }
    for c in &r.callbacks {
        println!("  callback {} {}", c.kind.member(), c.function);
    }
}

/// The bytes of an original/patched object pair named on the command line.
pub fn read_pair(orig: &Path, patched: &Path) -> Result<(Vec<u8>, Vec<u8>)> {
    let read = |p: &Path| fs::read(p).with_context(|| format!("cannot read {}", p.display()));
    Ok((read(orig)?, read(patched)?))
}

pub fn run(a: DiffArgs) -> Result<()> {
    // The target first: a Module.symvers of another build than the --symtab vmlinux is
    // refused before any diffing.
    let symtab_bytes = match &a.symtab {
        Some(p) => Some(fs::read(p).with_context(|| format!("cannot read {}", p.display()))?),
        None => None,
    };
    let symvers = match &a.symvers {
        Some(p) => Some(Symvers::parse(
            &p.display().to_string(),
            &fs::read_to_string(p).with_context(|| format!("cannot read {}", p.display()))?,
        )?),
        None => None,
    };
    if let (Some(path), Some(bytes), Some(sv)) = (&a.symtab, &symtab_bytes, &symvers) {
        let id = KernelIdentity::parse(&path.display().to_string(), bytes)?;
        if let Some(m) = symvers_mismatch(&id, &sv.label, sv) {
            return Err(Verdict::Refused(format!(
                "the --symvers file does not belong to the --symtab image: {m}"
            ))
            .into());
        }
    }
    let (ob, pb) = read_pair(&a.orig, &a.patched)?;
    let orig = Object::parse(a.orig.display().to_string(), &ob)?;
    let patched = Object::parse(a.patched.display().to_string(), &pb)?;
    let diff = Diff::new(&orig, &patched);
    let report = diff.report();
    match a.format {
        Format::Json => {
            // The report plus, per changed or new function, why (`klpgen explain`).
            let mut v = serde_json::to_value(&report)?;
            if let serde_json::Value::Object(m) = &mut v {
                let ex = elfdiff::explain::explain(&diff);
                m.insert("explain".into(), serde_json::to_value(&ex.functions)?);
            }
            println!("{}", serde_json::to_string_pretty(&v)?)
        }
        Format::Text => print_text(&a.patched.display().to_string(), &report),
    }
    if let Some(v) = verdict(&report) {
        return Err(v.into());
    }
    if let Some(out) = &a.output {
        let symtab_bytes = symtab_bytes.unwrap_or_else(|| ob.clone());
        let label = a.symtab.as_deref().unwrap_or(&a.orig).display().to_string();
        let layouts = target_layouts(
            a.symtab
                .is_some()
                .then_some((label.as_str(), &symtab_bytes[..])),
            &a.entry_size,
        )?;
        let plan = diff.plan(&layouts)?;
        let symtab = TargetSymtab::parse(&label, &symtab_bytes)?;
        let bindings = if let Some(symvers) = &symvers {
            bind_externals(&plan, &a.objname, &symtab, symvers)?
        } else {
            bind_without_symvers(&plan, &a.objname, &symtab)?
        };
        let late = Report {
            refused: patchgen::target::module_key_refusals(&plan, &bindings),
            ..Default::default()
        };
        if !late.refused.is_empty() {
            if let Some(v) = verdict(&late) {
                return Err(v.into());
            }
        }
        let bytes = patchgen::writer::write_patch_object(&plan, &bindings, 0)?;
        write_file(out, &bytes)?;
        // What the plan did beyond the verdicts (runtime constants rewritten, private
        // functions reached through their callers, new exports not carried).
        for n in &plan.notes {
            match a.format {
                Format::Text => println!("  note     {n}"),
                Format::Json => eprintln!("klpgen: note: {n}"),
            }
        }
    }
    Ok(())
}

/// Without Module.symvers, globals are taken as exported; statics become klp relocations.
fn bind_without_symvers(
    plan: &elfdiff::Plan,
    objname: &str,
    symtab: &TargetSymtab,
) -> Result<Vec<patchgen::target::Binding>> {
    use patchgen::target::Binding;
    plan.externals
        .iter()
        .map(|e| {
            if !e.local {
                return Ok(Binding::Plain {
                    name: e.name.clone(),
                });
            }
            let sympos = symtab.locate(e, plan.file_name.as_deref(), &plan.orig_locals)?;
            Ok(Binding::Klp {
                objname: objname.to_string(),
                name: e.name.clone(),
                sympos,
            })
        })
        .collect()
}

pub fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let tmp = path.with_extension("klpgen-tmp");
    fs::write(&tmp, bytes).with_context(|| format!("cannot write {}", tmp.display()))?;
    fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))?;
    if !path.is_file() {
        bail!("{} was not written", path.display());
    }
    Ok(())
}
