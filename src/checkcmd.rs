//! `klpgen check`: verify a livepatch module against its target (vmlinux, optionally
//! Module.symvers and the target's modules) with `patchgen::check`, the check `klpgen build`
//! runs on every module it builds (src/build/module.rs).

use std::collections::{BTreeSet, HashMap};
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use patchgen::check::{self, Inputs, Report, TargetObject};
use patchgen::target::Symvers;

use crate::Format;

#[derive(clap::Args, Debug)]
pub struct CheckArgs {
    /// The livepatch module (.ko) to verify.
    pub module: PathBuf,
    /// The target kernel image (with its symbol table).
    #[arg(long)]
    pub vmlinux: PathBuf,
    /// The target's Module.symvers: every ordinary undefined symbol must be exported.
    #[arg(long)]
    pub symvers: Option<PathBuf>,
    /// Directory with the target's modules (.ko, also compressed .ko.xz/.ko.zst/.ko.gz,
    /// searched recursively) for klp symbols and functions of modules.
    #[arg(long)]
    pub modules: Option<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
}

pub fn run(args: CheckArgs) -> Result<()> {
    let label = args.module.display().to_string();
    let ko = fs::read(&args.module).with_context(|| format!("cannot read {label}"))?;
    let vm_label = args.vmlinux.display().to_string();
    let vm = fs::read(&args.vmlinux).with_context(|| format!("cannot read {vm_label}"))?;
    let vmlinux = TargetObject::vmlinux(&vm_label, &vm)?;
    drop(vm);
    let symvers = match &args.symvers {
        Some(p) => {
            let text =
                fs::read_to_string(p).with_context(|| format!("cannot read {}", p.display()))?;
            Some(Symvers::parse(&p.display().to_string(), &text)?)
        }
        None => None,
    };
    let modules = match &args.modules {
        Some(dir) => Some(load_modules(
            dir,
            &check::referenced_objects(&label, &ko)?,
            (&args.vmlinux, vmlinux.release.as_deref().unwrap_or("")),
        )?),
        None => None,
    };
    let report = check::check_module(
        &label,
        &ko,
        &Inputs {
            vmlinux: &vmlinux,
            symvers: symvers.as_ref(),
            modules: modules.as_ref(),
        },
    )?;
    match args.format {
        Format::Text => print!("{}", text_report(&label, &report)),
        Format::Json => {
            #[derive(serde::Serialize)]
            struct Out<'a> {
                module: &'a str,
                target: &'a str,
                ok: bool,
                #[serde(flatten)]
                report: &'a Report,
            }
            let out = Out {
                module: &label,
                target: &vm_label,
                ok: report.ok(),
                report: &report,
            };
            println!("{}", serde_json::to_string_pretty(&out)?);
        }
    }
    if !report.ok() {
        bail!("{label}: {} finding(s)", report.findings.len());
    }
    Ok(())
}

/// One line when the module passes; otherwise one line per finding.
pub fn text_report(label: &str, r: &Report) -> String {
    if r.ok() {
        let plural =
            |n: usize, one: &str, many: &str| format!("{n} {}", if n == 1 { one } else { many });
        let mut line = format!(
            "OK {label}: {} ({} relocations), {}",
            plural(r.klp_symbols, "klp symbol", "klp symbols"),
            r.klp_relocations,
            plural(r.functions, "replaced function", "replaced functions"),
        );
        if let Some(table) = r
            .functions_from
            .filter(|t| *t != patchgen::manifest::FUNCS_SECTION)
        {
            // A module kpatch-build made: its functions come from its own table.
            line.push_str(&format!(" (from {table}, kpatch-build's table)"));
        }
        if r.undefined > 0 {
            line.push_str(&format!(
                ", {} exported",
                plural(r.undefined, "undefined symbol", "undefined symbols")
            ));
        }
        if let Some(rel) = &r.release {
            line.push_str(&format!("; target {rel}"));
        }
        return line + "\n";
    }
    let mut s = format!("{label}: {} finding(s)\n", r.findings.len());
    for f in &r.findings {
        let level = match f.level {
            check::Level::Error => "error",
            check::Level::Warning => "warning",
        };
        s.push_str(&format!("  {level:<7} [{}] {}\n", f.key, f.detail));
    }
    s
}

/// The target's modules that `wanted` names, found by file name under `dir` (recursively,
/// `-` and `_` equivalent); an installed module stripped of its file symbols is read from its
/// full copy among the debug files next to the vmlinux (`(vmlinux, release)`), when there is one
/// with the same build-id.
fn load_modules(
    dir: &Path,
    wanted: &BTreeSet<String>,
    (vmlinux, release): (&Path, &str),
) -> Result<HashMap<String, TargetObject>> {
    if !dir.is_dir() {
        bail!("--modules {}: not a directory", dir.display());
    }
    let wanted: BTreeSet<String> = wanted.iter().map(|w| check::module_key(w)).collect();
    let mut found = HashMap::new();
    let mut stack: Vec<PathBuf> = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let entries = fs::read_dir(&d).with_context(|| format!("cannot list {}", d.display()))?;
        for entry in entries {
            let entry = entry?;
            let path = entry.path();
            let ty = entry.file_type()?;
            if ty.is_dir() {
                stack.push(path);
                continue;
            }
            let name = entry.file_name().to_string_lossy().into_owned();
            // Installed modules may be compressed (`.ko.xz`, `.ko.zst`, `.ko.gz`).
            let Some(stem) = crate::kofile::SUFFIXES
                .iter()
                .find_map(|suffix| name.strip_suffix(suffix))
            else {
                continue;
            };
            let key = check::module_key(stem);
            if !wanted.contains(&key) || found.contains_key(&key) {
                continue;
            }
            let mut bytes = crate::kofile::read(&path)?;
            let mut label = path.display().to_string();
            if !crate::kofile::has_file_symbols(&bytes) {
                if let Some(full) = crate::kofile::debug_copy(&path, &bytes, dir, vmlinux, release)
                {
                    label = format!("{label} (symbols from {})", full.display());
                    bytes = crate::kofile::read(&full)?;
                }
            }
            found.insert(key, TargetObject::module(&label, &bytes)?);
        }
    }
    Ok(found)
}
