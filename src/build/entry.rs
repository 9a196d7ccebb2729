//! A unit's entry in the report: the verdict of each function (its split parts under it) and,
//! for each changed function and part, why it changed (own code, inlined code, split part,
//! caller included, `klpgen explain`'s finding) and its callers (the consistency analysis),
//! with warnings about callers the livepatch does not replace. The callers of vmlinux code
//! come from the target's whole `vmlinux.o` graph when the build has one, those of module code
//! (or without it) from the unit's own object.

use elfdiff::callgraph::CallGraph;
use elfdiff::explain::ChangedLines;
use elfdiff::Diff;

use crate::report as rpt;

/// What a unit's entry is made from.
pub struct UnitFacts<'a> {
    pub unit: &'a str,
    /// `vmlinux` or the module's name.
    pub objname: &'a str,
    pub report: &'a elfdiff::Report,
    pub diff: &'a Diff<'a, 'a>,
    /// The call graph the callers come from (the target's vmlinux.o for vmlinux code, when
    /// there is one; else the unit's own).
    pub graph: &'a CallGraph<'a>,
    pub changed_lines: &'a [ChangedLines],
    /// Functions replaced although unchanged (callers, forced), with the reason.
    pub included: &'a [(String, String)],
}

/// The unit's entry: verdicts, then callers and why for every changed function.
pub fn unit_entry(f: &UnitFacts<'_>, quiet: bool) -> rpt::ObjectEntry {
    let mut entry = object_entry(f.unit, f.objname, f.report);
    let explained = elfdiff::explain::explain_with(f.diff, f.changed_lines);
    let private: Vec<&str> = f
        .diff
        .functions
        .iter()
        .filter(|r| r.private)
        .filter_map(|r| r.orig)
        .map(|o| f.diff.orig.sym(o).name)
        .collect();
    annotate_callers(
        &mut entry,
        f.graph,
        f.diff.orig.file_name,
        f.included,
        &private,
        quiet,
    );
    annotate_explain(&mut entry, &explained, f.included);
    nest_parts(&mut entry, f.report);
    entry
}

/// The unit's entry with the verdict of each function, as the report lists them; split parts
/// are entries of their own here (the annotations apply to them alike) until
/// [`nest_parts`] puts them under their function.
pub fn object_entry(unit: &str, target: &str, r: &elfdiff::Report) -> rpt::ObjectEntry {
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
        parts: Vec::new(),
    };
    functions.extend(r.all_changed().iter().map(|n| plain(n, "changed")));
    functions.extend(r.all_new().iter().map(|n| plain(n, "new")));
    functions.extend(r.refused.iter().map(|f| rpt::FunctionVerdict {
        name: f.symbol.clone(),
        verdict: "refused",
        reason: Some(f.reason.clone()),
        key: Some(f.key.clone()),
        hint: Some(f.hint.clone()),
        why: None,
        callers: None,
        explain: None,
        parts: Vec::new(),
    }));
    rpt::ObjectEntry {
        unit: unit.to_string(),
        target: target.into(),
        functions,
        ignored: r.ignored.clone(),
        callbacks: r.callbacks.clone(),
        states: r.states.clone(),
    }
}

/// Add the consistency analysis to a report entry and warn about callers that loop over a
/// changed function and are not themselves replaced.
fn annotate_callers(
    entry: &mut rpt::ObjectEntry,
    graph: &CallGraph<'_>,
    file: Option<&str>,
    included: &[(String, String)],
    private: &[&str],
    quiet: bool,
) {
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

/// Move the entries of split parts under the entry of their function, as the diff's report
/// groups them (`elfdiff::Report::parts`), keeping the order of each.
fn nest_parts(entry: &mut rpt::ObjectEntry, report: &elfdiff::Report) {
    for (function, parts) in &report.parts {
        let mut taken = Vec::new();
        for p in parts {
            let verdict = p.verdict.as_str();
            if let Some(i) = entry
                .functions
                .iter()
                .position(|f| f.name == p.name && f.verdict == verdict)
            {
                taken.push(entry.functions.remove(i));
            }
        }
        if let Some(parent) = entry
            .functions
            .iter_mut()
            .find(|f| f.name == *function && f.verdict != "refused")
        {
            parent.parts.extend(taken);
        } else {
            entry.functions.extend(taken);
        }
    }
}
