//! The summary `klpgen build` prints when the module is built: where it is, the kernel and
//! hook, the changed, new and ignored functions (each with its split parts), callbacks,
//! namespaces, notes, the patched modules the target will not load again while the livepatch
//! is (`module_reload`), klp relocations, and per changed function and part why it changed
//! and who calls it.

use std::path::Path;

use patchgen::kmod::HookLang;
use patchgen::target::Binding;

use super::module::Written;
use super::plan::BuildPlan;
use super::unit::Parts;
use crate::report::{self as rpt, BuildReport};

/// Everything the summary says, gathered from the build and its report.
pub struct Summary<'a> {
    pub module: &'a Path,
    pub release: &'a str,
    pub hook: HookLang,
    /// Changed and new functions, a name that several units have followed by its unit.
    pub changed: Vec<String>,
    pub new: Vec<String>,
    /// `kind=function` of each callback.
    pub callbacks: Vec<String>,
    /// `id=version` of each system state (`KLPGEN_STATE`).
    pub states: Vec<String>,
    pub import_ns: Vec<&'a str>,
    pub ignored: &'a [String],
    /// The plan's notes a patch author acts on.
    pub notes: Vec<&'a str>,
    /// Patched modules the target will not load again while the livepatch is loaded.
    pub module_reload: Option<&'a rpt::ModuleReload>,
    pub klp_relocations: usize,
    pub klp_sections: usize,
    /// The symbols bound by klp relocations, one per binding.
    pub klp_symbols: Vec<String>,
    /// The report's units, for the why and callers of each changed function.
    pub objects: &'a [rpt::ObjectEntry],
}

impl<'a> Summary<'a> {
    pub fn new(
        plan: &BuildPlan,
        release: &'a str,
        parts: &'a Parts,
        module: &'a Written,
        rep: &'a BuildReport,
    ) -> Summary<'a> {
        let (changed, new) = qualified(&parts.changed, &parts.new);
        let changed = with_parts(&rep.objects, &parts.changed, changed);
        let new = with_parts(&rep.objects, &parts.new, new);
        Summary {
            module: &module.path,
            release,
            hook: plan.hook,
            changed,
            new,
            callbacks: parts
                .callbacks
                .iter()
                .map(|c| format!("{}={}", c.kind.member(), c.function))
                .collect(),
            states: parts
                .states
                .iter()
                .map(|(st, _)| format!("{:#x}=v{}", st.id, st.version))
                .collect(),
            import_ns: parts.import_ns.iter().map(String::as_str).collect(),
            ignored: &parts.ignored,
            // Which objtool sections the target's objtool regenerates is in the report; the
            // summary keeps the notes a patch author acts on.
            notes: rep
                .notes
                .iter()
                .filter(|n| !n.contains("the target's objtool"))
                .map(String::as_str)
                .collect(),
            module_reload: rep.module_reload.as_ref(),
            klp_relocations: module.klp.sections.iter().map(|(_, n)| n).sum(),
            klp_sections: module.klp.sections.len(),
            klp_symbols: parts
                .bindings
                .iter()
                .filter(|b| matches!(b, Binding::Klp { .. }))
                .map(|b| b.symbol_name())
                .collect(),
            objects: &rep.objects,
        }
    }
}

/// Print the summary on stdout (after the progress line is cleared).
pub fn print(s: &Summary<'_>) {
    crate::progress::pause();
    println!("livepatch module: {}", s.module.display());
    println!("  kernel:          {}", s.release);
    println!("  hook:            {}", s.hook.as_str());
    println!("  changed:         {}", join_or_none(&s.changed));
    println!("  new:             {}", join_or_none(&s.new));
    if !s.callbacks.is_empty() {
        println!("  callbacks:       {}", s.callbacks.join(", "));
    }
    if !s.states.is_empty() {
        println!("  states:          {}", s.states.join(", "));
    }
    if !s.import_ns.is_empty() {
        println!("  import_ns:       {}", s.import_ns.join(", "));
    }
    if !s.ignored.is_empty() {
        println!("  ignored:         {}", s.ignored.join(", "));
    }
    for n in &s.notes {
        println!("  note:            {n}");
    }
    if let Some(r) = s.module_reload {
        println!(
            "  warning:         {} cannot be loaded again while this livepatch is loaded: {}",
            r.modules.join(", "),
            r.reason
        );
        println!("    remedy: {}", r.remedy);
    }
    println!(
        "  klp relocations: {} in {} section(s)",
        s.klp_relocations, s.klp_sections
    );
    for sym in &s.klp_symbols {
        println!("    {sym}");
    }
    print_consistency(s.objects);
}

/// The changed and new functions, a name that several units have (static functions of one
/// name, a header's out-of-line inline) followed by its unit.
fn qualified(changed: &[(String, String)], new: &[(String, String)]) -> (Vec<String>, Vec<String>) {
    let all = || changed.iter().chain(new);
    let name = |(n, u): &(String, String)| {
        if all().filter(|(m, _)| m == n).count() > 1 {
            format!("{n} ({u})")
        } else {
            n.clone()
        }
    };
    (
        changed.iter().map(name).collect(),
        new.iter().map(name).collect(),
    )
}

/// Each function as shown (`shown`, from `functions`: (name, unit)) followed by its split
/// parts from the report's entries: `f [f.cold f.part.0]`.
fn with_parts(
    objects: &[rpt::ObjectEntry],
    functions: &[(String, String)],
    shown: Vec<String>,
) -> Vec<String> {
    functions
        .iter()
        .zip(shown)
        .map(|((name, unit), shown)| {
            let parts: Vec<&str> = objects
                .iter()
                .filter(|o| o.unit == *unit)
                .flat_map(|o| &o.functions)
                .filter(|f| f.name == *name && f.verdict != "refused")
                .flat_map(|f| &f.parts)
                .map(|p| p.name.as_str())
                .collect();
            if parts.is_empty() {
                shown
            } else {
                format!("{shown} [{}]", parts.join(" "))
            }
        })
        .collect()
}

fn join_or_none(v: &[String]) -> String {
    if v.is_empty() {
        "(none)".into()
    } else {
        v.join(", ")
    }
}

/// Per changed function and each of its split parts: why it changed, its direct callers
/// (those calling it in a loop marked) and whether its address is taken — the text form of
/// the report's consistency analysis.
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
        print_callers(f, "    ");
        for p in &f.parts {
            let why = p.why.as_deref().unwrap_or(p.verdict);
            println!("    part {} ({}): {why}", p.name, p.verdict);
            print_callers(p, "      ");
        }
    }
}

/// The callers and whether the address is taken, of one function of the report, indented.
fn print_callers(f: &rpt::FunctionVerdict, indent: &str) {
    let Some(c) = &f.callers else {
        return;
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
    println!("{indent}callers:       {}", join_or_none(&callers));
    println!(
        "{indent}address taken: {}",
        if c.address_taken {
            "yes (callers through pointers are unknown)"
        } else {
            "no"
        }
    );
}
