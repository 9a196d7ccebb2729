//! Propagation: what follows from the first verdicts. A changed split child (`.cold`,
//! `.part`) makes its parent changed and an included parent takes its children along; a
//! changed function livepatch cannot redirect (a split child or a private function without an
//! ftrace entry) makes every function of the object that calls or jumps to it changed; then
//! the annotations apply (`KLPGEN_IGNORE_*` leaves changes out, `KLPGEN_FORCE_FUNCTION`
//! replaces unchanged functions).
//!
//! A function is *private* when it is local, has no ftrace entry and, in both objects' call
//! graphs (`callgraph.rs`), nothing but direct calls and jumps from functions reaches it
//! (`private_functions`): it is carried (`FuncResult::private`) but not redirected, and the
//! plan says so in a note; one whose address is taken is refused naming the taker
//! (`checks.rs`). A changed or new function ignored by name or section becomes
//! `Verdict::Ignored`, which nothing downstream includes; a forced one goes to `Diff::forced`;
//! each ignored difference goes to `Diff::ignored` with its reason.

use std::collections::{HashMap, HashSet};

use crate::annot::{source_function, Annotations};
use crate::callgraph::CallGraph;
use crate::compare::{FuncResult, Verdict};
use crate::model::{Bind, Object, Orig, Patched, SymIdx};
use crate::names::{normalize, split_parent};
use crate::refs::{targets_of, Pair, Target};
use crate::refusal::Ignored;
use crate::sections::is_init_section;

/// Local functions without an ftrace entry, mapped to what takes their address
/// ([`private_functions`]).
pub(crate) type Private = HashMap<SymIdx<Patched>, Option<String>>;

/// What propagation worked out besides the verdicts, for the refusal checks and the report.
pub(crate) struct Propagated {
    /// Index into the results of each function by normalised name (split children find
    /// their parent there).
    pub by_norm: HashMap<String, usize>,
    pub private: Private,
    /// Changes the ignore annotations left out.
    pub ignored: Vec<Ignored>,
    /// Unchanged functions made changed by `KLPGEN_FORCE_FUNCTION` (original names).
    pub forced: Vec<String>,
}

/// Propagate the verdicts of [`crate::compare::compare_functions`], in this order.
pub(crate) fn propagate(
    pair: Pair<'_, '_>,
    annotations: &Annotations,
    results: &mut [FuncResult],
) -> Propagated {
    let by_norm: HashMap<String, usize> = results
        .iter()
        .enumerate()
        .map(|(i, r)| (normalize(pair.patched.sym(r.patched).name), i))
        .collect();
    parents_of_changed_children(pair.patched, results, &by_norm);
    let private = private_functions(pair, results);
    callers_of_untraceable_children(pair, results, &by_norm, &private);
    for r in results.iter_mut() {
        r.private = matches!(r.verdict, Verdict::Changed(_))
            && private.get(&r.patched).is_some_and(|taker| taker.is_none());
    }
    children_of_included_parents(pair.patched, results, &by_norm);
    let ignored = apply_ignores(pair, annotations, results);
    let forced = apply_forces(pair, annotations, results);
    Propagated {
        by_norm,
        private,
        ignored,
        forced,
    }
}

/// Split children (.cold, .part) follow their parent: a changed child makes its parent
/// changed.
fn parents_of_changed_children(
    patched: &Object<'_, Patched>,
    results: &mut [FuncResult],
    by_norm: &HashMap<String, usize>,
) {
    for i in 0..results.len() {
        let name = patched.sym(results[i].patched).name;
        let Some(parent) = split_parent(name) else {
            continue;
        };
        let Some(&pi) = by_norm.get(&parent) else {
            continue;
        };
        if matches!(results[i].verdict, Verdict::Changed(_))
            && results[pi].verdict == Verdict::Unchanged
        {
            results[pi].verdict = Verdict::Changed(format!("its split part {name} changed"));
            results[pi].via_child = true;
        }
    }
}

/// An included parent takes its unchanged split children along.
fn children_of_included_parents(
    patched: &Object<'_, Patched>,
    results: &mut [FuncResult],
    by_norm: &HashMap<String, usize>,
) {
    for i in 0..results.len() {
        let name = patched.sym(results[i].patched).name;
        if let Some(parent) = split_parent(name) {
            if let Some(&pi) = by_norm.get(&parent) {
                if results[pi].verdict.is_included() && results[i].verdict == Verdict::Unchanged {
                    results[i].verdict = Verdict::Changed(format!("part of changed {parent}"));
                    results[i].via_child = true;
                }
            }
        }
    }
}

/// Local functions without an ftrace entry (`static inline` kept out of line, `notrace`),
/// split parts aside, mapped to what takes their address in either object (`None`: only
/// direct calls and jumps from functions of the object reach them). A changed one of the
/// first kind is private: livepatch cannot redirect it, but every caller is in this
/// object, so patching the callers, which call the carried new version, covers all its
/// uses. Worked out only when such a function changed (it needs both call graphs).
fn private_functions(pair: Pair<'_, '_>, results: &[FuncResult]) -> Private {
    let candidate = |r: &FuncResult| -> Option<SymIdx<Orig>> {
        let o = r.orig?;
        let os = pair.orig.sym(o);
        let section = pair.orig.sec(os.section?).name;
        (os.bind == Bind::Local
            && split_parent(os.name).is_none()
            && !is_init_section(section)
            && !pair.orig_traceable(o))
        .then_some(o)
    };
    let mut out = HashMap::new();
    if !results
        .iter()
        .any(|r| matches!(r.verdict, Verdict::Changed(_)) && candidate(r).is_some())
    {
        return out;
    }
    let og = CallGraph::build(&[pair.orig]);
    let pg = CallGraph::build(&[pair.patched]);
    // What takes the function's address in one object; a function the call graph does not
    // know (no size, say) cannot be shown to be only called, so it counts as taken.
    let taker = |g: &CallGraph<'_>, name: &str, section: &str, value| match g
        .defined_at(name, section, value)
    {
        None => Some(format!(
            "code klpgen cannot analyse ({name} is not a function of the call graph)"
        )),
        Some(f) => g.refs_to(f).first().map(|r| r.by.describe(g)),
    };
    for r in results {
        let Some(o) = candidate(r) else { continue };
        let os = pair.orig.sym(o);
        let ps = pair.patched.sym(r.patched);
        let osec = pair.orig.sec(os.section.expect("defined")).name;
        let psec = pair.patched.sec(ps.section.expect("defined")).name;
        let by = taker(&og, os.name, osec, os.value)
            .map(|t| format!("{t} (original)"))
            .or_else(|| taker(&pg, ps.name, psec, ps.value).map(|t| format!("{t} (patched)")));
        out.insert(r.patched, by);
    }
    out
}

/// A changed split child without an ftrace entry (`.cold`, or a `.part.N` of a notrace
/// function) cannot be redirected to; its new version is reached through whoever calls or
/// jumps to it. Its parent is replaced already; every other function of the object that
/// calls or jumps to it (callers that inlined the parent's head call a `.part.N`
/// directly) becomes changed too, or it would keep calling the old child. Repeated until
/// nothing more changes, since such a caller may itself be an untraceable split child.
///
/// A changed private function (see [`private_functions`]) is treated the same way:
/// its callers are patched and call the new version.
fn callers_of_untraceable_children(
    pair: Pair<'_, '_>,
    results: &mut [FuncResult],
    by_norm: &HashMap<String, usize>,
    private: &Private,
) {
    let untraceable_child = |r: &FuncResult| {
        matches!(r.verdict, Verdict::Changed(_))
            && (private.get(&r.patched).is_some_and(|taker| taker.is_none())
                || split_parent(pair.patched.sym(r.patched).name).is_some()
                    && r.orig.is_some_and(|o| !pair.orig_traceable(o)))
    };
    let mut queue: Vec<usize> = (0..results.len())
        .filter(|&i| untraceable_child(&results[i]))
        .collect();
    let mut done: HashSet<usize> = HashSet::new();
    while let Some(ci) = queue.pop() {
        if !done.insert(ci) {
            continue;
        }
        let child = results[ci].patched;
        let child_sec = pair.patched.sym(child).section;
        let child_name = pair.patched.sym(child).name;
        for j in 0..results.len() {
            if j == ci || results[j].verdict != Verdict::Unchanged {
                continue;
            }
            let f = pair.patched.sym(results[j].patched);
            let refers =
                targets_of(pair.patched, pair.patched_insns, results[j].patched).any(|t| match t {
                    Target::Symbol { sym, .. } => sym == child,
                    Target::Anon { sec: t, .. } | Target::String { sec: t, .. } => {
                        Some(t) == child_sec
                    }
                });
            if !refers {
                continue;
            }
            results[j].verdict = Verdict::Changed(format!(
                "calls {child_name}, whose new version livepatch can only reach through its callers"
            ));
            results[j].via_callee = true;
            if untraceable_child(&results[j]) {
                queue.push(j);
                // Its own parent follows it, as for any changed split child.
                let parent = split_parent(f.name).and_then(|p| by_norm.get(&p).copied());
                if let Some(pi) = parent.filter(|&pi| results[pi].verdict == Verdict::Unchanged) {
                    results[pi].verdict =
                        Verdict::Changed(format!("its split part {} changed", f.name));
                    results[pi].via_child = true;
                }
            }
        }
    }
}

/// Changed and new functions an annotation covers become `Verdict::Ignored`, recorded
/// in `ignored`: by name (`KLPGEN_IGNORE_FUNCTION`, clones and split parts included) or
/// by the section they are in (`KLPGEN_IGNORE_SECTION`).
fn apply_ignores(
    pair: Pair<'_, '_>,
    annotations: &Annotations,
    results: &mut [FuncResult],
) -> Vec<Ignored> {
    let mut ignored = Vec::new();
    if annotations.ignore_functions.is_empty() && annotations.ignore_sections.is_empty() {
        return ignored;
    }
    for r in results.iter_mut() {
        let was = match &r.verdict {
            Verdict::Changed(why) => format!("changed ({why})"),
            Verdict::New => "new".to_string(),
            _ => continue,
        };
        let ps = pair.patched.sym(r.patched);
        let section = pair.patched.sec(ps.section.expect("defined")).name;
        let by = if annotations.ignores_function(ps.name) {
            annotations.ignore_function_macro(source_function(ps.name))
        } else if let Some(p) = annotations.ignoring_section(section) {
            annotations.ignore_section_macro(p)
        } else {
            continue;
        };
        let name = match r.orig {
            Some(o) => pair.orig.sym(o).name,
            None => ps.name,
        };
        ignored.push(Ignored {
            symbol: name.into(),
            section: section.into(),
            reason: format!("function {was}; left out as {by} asks"),
        });
        r.verdict = Verdict::Ignored(was);
    }
    ignored
}

/// Unchanged functions `KLPGEN_FORCE_FUNCTION` names (and their split parts) become
/// changed, so they are replaced too; the refusal checks that follow apply to them.
fn apply_forces(
    pair: Pair<'_, '_>,
    annotations: &Annotations,
    results: &mut [FuncResult],
) -> Vec<String> {
    let mut forced = Vec::new();
    if annotations.force_functions.is_empty() {
        return forced;
    }
    for r in results.iter_mut() {
        if r.verdict != Verdict::Unchanged || r.orig.is_none() {
            continue;
        }
        let name = pair.patched.sym(r.patched).name;
        if annotations.forces_function(name) {
            let o = r.orig.expect("checked above");
            forced.push(pair.orig.sym(o).name.to_string());
            r.verdict = Verdict::Changed(format!(
                "unchanged, replaced as KLPGEN_FORCE_FUNCTION({}) asks",
                source_function(name)
            ));
        }
    }
    forced
}
