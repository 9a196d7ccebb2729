//! `klpgen explain`: why each function of one object pair changed — the first differing
//! instruction of both versions, its source lines and inlined callees — and the refusals.

use std::path::PathBuf;

use anyhow::{bail, Result};

use elfdiff::explain::{explain, Cause, DiffKind, Explain, Explanation, Site};
use elfdiff::names::normalize;
use elfdiff::{Diff, Object};

use crate::verdict::Verdict;
use crate::Format;

#[derive(clap::Args, Debug)]
pub struct ExplainArgs {
    /// The original object (built with -ffunction-sections; with -g for source lines).
    pub orig: PathBuf,
    /// The patched object.
    pub patched: PathBuf,
    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
    /// Only these functions (names as in either object; clone numbers may be left out).
    pub functions: Vec<String>,
}

pub fn run(a: ExplainArgs) -> Result<()> {
    let (ob, pb) = crate::diffcmd::read_pair(&a.orig, &a.patched)?;
    let orig = Object::parse(a.orig.display().to_string(), &ob)?;
    let patched = Object::parse(a.patched.display().to_string(), &pb)?;
    let diff = Diff::new(&orig, &patched);
    let mut ex = explain(&diff);
    if !a.functions.is_empty() {
        let wanted = |name: &str| {
            a.functions
                .iter()
                .any(|w| w == name || normalize(w) == normalize(name))
        };
        for w in &a.functions {
            let known = ex.functions.iter().any(|e| {
                let n = normalize(w);
                normalize(&e.function) == n
                    || e.patched_name.as_deref().is_some_and(|p| normalize(p) == n)
            }) || ex
                .refusals
                .iter()
                .any(|r| normalize(&r.symbol) == normalize(w));
            if !known {
                let all: Vec<&str> = ex.functions.iter().map(|e| e.function.as_str()).collect();
                bail!(
                    "{w} is neither changed, new nor refused in this pair (changed or new: {})",
                    if all.is_empty() {
                        "none".to_string()
                    } else {
                        all.join(", ")
                    }
                );
            }
        }
        ex.functions
            .retain(|e| wanted(&e.function) || e.patched_name.as_deref().is_some_and(wanted));
        ex.refusals.retain(|r| wanted(&r.symbol));
    }
    match a.format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&ex)?),
        Format::Text => print!("{}", render_text(&ex)),
    }
    if !ex.refusals.is_empty() {
        return Err(Verdict::Refused(format!(
            "{} unsupported change(s), listed above",
            ex.refusals.len()
        ))
        .into());
    }
    if ex.functions.is_empty() {
        return Err(Verdict::NoChange.into());
    }
    Ok(())
}

fn loc(s: Option<&Site>) -> String {
    s.and_then(|s| s.location.as_ref())
        .map_or_else(|| "?".to_string(), |l| l.to_string())
}

fn insn(s: Option<&Site>) -> String {
    match s.and_then(|s| s.insn.as_deref()) {
        Some(i) => i.to_string(),
        None => "(end of function)".to_string(),
    }
}

fn render_one(e: &Explanation, out: &mut String) {
    use std::fmt::Write as _;
    let name = match &e.patched_name {
        Some(p) => format!("{} (now {p})", e.function),
        None => e.function.clone(),
    };
    let has_lines = [&e.orig, &e.patched]
        .iter()
        .any(|s| s.as_ref().is_some_and(|s| s.location.is_some()));
    match (e.cause, e.offset) {
        (Cause::New, _) => {
            let at = e
                .patched
                .as_ref()
                .and_then(|s| s.location.as_ref())
                .map(|l| format!(" ({l})"))
                .unwrap_or_default();
            let _ = writeln!(out, "{name}: new function{at}");
        }
        (_, Some(off)) => {
            let lines = if has_lines {
                format!(" ({} -> {})", loc(e.orig.as_ref()), loc(e.patched.as_ref()))
            } else {
                String::new()
            };
            let what = match e.kind {
                DiffKind::Relocation => "relocation target differs",
                DiffKind::Length => "length differs",
                _ => "changed",
            };
            let _ = writeln!(out, "{name}: {what} at +{off:#x}{lines}");
            let _ = writeln!(out, "  - {}", insn(e.orig.as_ref()));
            let _ = writeln!(out, "  + {}", insn(e.patched.as_ref()));
            if let Some(r) = &e.relocation {
                let _ = writeln!(out, "  relocation: {} -> {}", r.orig, r.patched);
            }
            let chain = |s: &Option<Site>| s.as_ref().map_or_else(Vec::new, |s| s.inlined.clone());
            let (oc, pc) = (chain(&e.orig), chain(&e.patched));
            let sides: Vec<(&str, &Vec<_>)> = if oc == pc {
                vec![("", &pc)]
            } else {
                vec![("- ", &oc), ("+ ", &pc)]
            };
            for (mark, frames) in sides {
                for fr in frames.iter().rev() {
                    let at = fr
                        .call_site
                        .as_ref()
                        .map(|c| format!(" (called at {c})"))
                        .unwrap_or_default();
                    let _ = writeln!(out, "  {mark}in inlined {}{at}", fr.function);
                }
            }
        }
        (_, None) => {
            let why = if matches!(e.cause, Cause::SplitPart | Cause::Callee) {
                "its own code is the same"
            } else {
                "no differing instruction found"
            };
            let _ = writeln!(out, "{name}: changed: {} ({why})", e.summary);
        }
    }
    if let Some(k) = &e.refused {
        let _ = writeln!(out, "  refused: {k}");
    }
}

/// The text form of an explanation report.
pub fn render_text(ex: &Explain) -> String {
    let mut out = String::new();
    for e in &ex.functions {
        render_one(e, &mut out);
    }
    for r in &ex.refusals {
        out.push_str(&format!(
            "refused [{}] {} in {}: {}\n  hint: {}\n",
            r.key, r.symbol, r.section, r.reason, r.hint
        ));
    }
    for w in &ex.warnings {
        out.push_str(&format!("note: {w}\n"));
    }
    out
}
