//! `klpgen diff`: the differ on one object pair, optionally writing the livepatch object: the
//! model, correlation and comparison, and with `--output` inclusion, binding (against
//! `--symtab`/`--symvers` when given) and the object writer, as `klpgen build` does per unit.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use elfdiff::{Diff, Object, Report};
use patchgen::target::{bind_externals, symvers_mismatch, KernelIdentity, Symvers, TargetSymtab};

use crate::files::write_file;
use crate::kernel::target_layouts;
use crate::verdict::{print_text, Verdict};
use crate::Format;

#[derive(clap::Args, Debug)]
pub struct DiffArgs {
    pub orig: PathBuf,
    pub patched: PathBuf,
    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
    /// Write the livepatch object for this pair.
    #[arg(long)]
    pub output: Option<PathBuf>,
    /// Target symbol table (vmlinux); default: ORIG's own symbols.
    #[arg(long)]
    pub symtab: Option<PathBuf>,
    /// Module.symvers of the target (which symbols are exported).
    #[arg(long)]
    pub symvers: Option<PathBuf>,
    /// Object name for klp symbols (vmlinux or a module name).
    #[arg(long, default_value = "vmlinux")]
    pub objname: String,
    /// Entry size of a special section, SECTION=BYTES.
    #[arg(long = "entry-size")]
    pub entry_size: Vec<String>,
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
    let label = a.symtab.as_deref().unwrap_or(&a.orig).display().to_string();
    let mut layouts = match &symtab_bytes {
        Some(bytes) => target_layouts(&label, bytes),
        None => elfdiff::PlanOptions::default(),
    };
    // The differ reads them too: a function's special-section entries are part of it, and a
    // section given an entry size is a special section.
    for e in &a.entry_size {
        let (sec, n) = e
            .split_once('=')
            .with_context(|| format!("--entry-size {e}: expected SECTION=BYTES"))?;
        let n: u64 = n
            .parse()
            .with_context(|| format!("--entry-size {e}: not a number"))?;
        layouts.given_entry_sizes.insert(sec.to_string(), n);
    }
    let diff = Diff::with_layouts(&orig, &patched, &layouts);
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
    if let Some(v) = Verdict::of(&report) {
        return Err(v.into());
    }
    if let Some(out) = &a.output {
        let symtab_bytes = symtab_bytes.unwrap_or_else(|| ob.clone());
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
            if let Some(v) = Verdict::of(&late) {
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
