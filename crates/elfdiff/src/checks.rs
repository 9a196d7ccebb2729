//! The refusal phase: which of the differences a livepatch cannot carry. Changed functions
//! that cannot be redirected or replaced (`__init`, COMDAT, a dropped static local, no ftrace
//! entry), changed existing data, sections of unknown format or the error-injection list
//! pointing into changed code, and runtime constants in carried code. Differences in sections
//! an annotation ignores are recorded as ignored instead.
//!
//! A runtime constant in carried code is refused when it is a shift constant (it cannot be
//! rewritten in place) or a pointer site whose bytes are not the one the machine can rewrite
//! into a load of its variable (the plan rewrites the others). A private function whose address
//! is taken is refused as `no-ftrace`, naming the taker. Every refusal is built in `refusal.rs`.

use std::collections::{HashMap, HashSet};

use crate::annot::{source_function, Annotations, CALLBACK_PREFIX};
use crate::compare::{FuncResult, Verdict};
use crate::correlate::{is_special, is_static_local};
use crate::entries::StrideError;
use crate::model::{Bind, Object, Orig, Patched, SecIdx, Side, SymIdx, SymKind};
use crate::names::{normalize, split_parent};
use crate::propagate::Propagated;
use crate::refs::{resolve, targets_of, Insns, Pair, Target};
use crate::refusal::{self, Ignored, Refusal, Untraced};
use crate::runtime_const::{runtime_const_user, RuntimeConstKind};
use crate::sections::{is_data_section, is_init_section, is_known_section};

/// Every refusal of a diff, in report order (the annotations' own first), and the
/// differences in ignored sections.
pub(crate) fn refusals(
    pair: Pair<'_, '_>,
    matched: &HashMap<SymIdx<Patched>, SymIdx<Orig>>,
    annotations: &Annotations,
    results: &[FuncResult],
    prop: &Propagated,
) -> (Vec<Refusal>, Vec<Ignored>) {
    let mut refusals = annotations.refusals.clone();
    refusals.extend(ignored_callbacks(pair, annotations, results));
    refusals.extend(function_refusals(pair, results, prop));
    let (data, mut ignored) = data_refusals(pair, matched, annotations);
    refusals.extend(data);
    let (special, special_ignored) = unknown_section_refusals(pair, annotations, results);
    refusals.extend(special);
    refusals.extend(runtime_const_refusals(pair, matched, annotations, results));
    ignored.extend(special_ignored);
    (refusals, ignored)
}

/// Callbacks that an ignore annotation covers: a callback must be carried.
fn ignored_callbacks(
    pair: Pair<'_, '_>,
    annotations: &Annotations,
    results: &[FuncResult],
) -> Vec<Refusal> {
    let mut out = Vec::new();
    for c in &annotations.callbacks {
        let name = pair.patched.sym(c.func).name;
        if let Some(Verdict::Ignored(_)) = results
            .iter()
            .find(|r| r.patched == c.func)
            .map(|r| &r.verdict)
        {
            let section = format!("{CALLBACK_PREFIX}{}", c.kind.member());
            out.push(refusal::annotation_callback_ignored(
                name,
                &section,
                c.kind.member(),
            ));
        }
    }
    out
}

/// Changed functions the livepatch cannot replace.
fn function_refusals(
    pair: Pair<'_, '_>,
    results: &[FuncResult],
    prop: &Propagated,
) -> Vec<Refusal> {
    let mut out = Vec::new();
    // Whether any function of the original object has an ftrace entry (asked once, lazily).
    let mut file_traced: Option<bool> = None;
    for r in results {
        if let Verdict::Changed(why) = &r.verdict {
            out.extend(function_refusal(
                pair,
                results,
                prop,
                r,
                why,
                &mut file_traced,
            ));
        }
    }
    out
}

/// Why changed function `r` cannot be replaced, the first reason that applies.
fn function_refusal(
    pair: Pair<'_, '_>,
    results: &[FuncResult],
    prop: &Propagated,
    r: &FuncResult,
    why: &str,
    file_traced: &mut Option<bool>,
) -> Option<Refusal> {
    let ps = pair.patched.sym(r.patched);
    let section = pair.patched.sec(ps.section.expect("defined")).name;
    let o = r.orig.expect("changed functions are matched");
    let os = pair.orig.sym(o);
    let name = os.name;
    if is_init_section(section) {
        return Some(refusal::init_function_changed(name, section, why));
    }
    if pair.orig.sec(os.section.expect("defined")).in_group {
        return Some(refusal::comdat_changed(name, section, why));
    }
    if let Some(local) = removed_static_locals(pair, o, r.patched).first() {
        return Some(refusal::static_local_removed(name, section, local));
    }
    // A split child without an ftrace entry is reached through its changed parent's new
    // body; without such a parent nothing could redirect to it.
    let via_parent = split_parent(name).is_some_and(|parent| {
        prop.by_norm
            .get(&parent)
            .is_some_and(|&pi| results[pi].verdict != Verdict::Unchanged)
    });
    if via_parent || r.private || pair.orig_traceable(o) {
        return None;
    }
    if let Some(Some(taker)) = prop.private.get(&r.patched) {
        return Some(refusal::no_ftrace_address_taken(name, section, why, taker));
    }
    let file_traced = *file_traced.get_or_insert_with(|| {
        pair.orig.symbol_indices().any(|f| {
            let s = pair.orig.sym(f);
            s.kind == SymKind::Func && s.section.is_some() && pair.orig_traceable(f)
        })
    });
    let cause = if is_syscall_body(name) {
        Untraced::SyscallBody {
            stub_prefix: pair.orig.arch.syscall_stub_prefix(),
        }
    } else if !file_traced && pair.orig.file_name.is_none_or(|f| f.ends_with(".S")) {
        Untraced::Assembly
    } else if !file_traced {
        Untraced::NoFtraceFlags
    } else if section.starts_with(".meminit.") {
        Untraced::MemInit
    } else {
        Untraced::Notrace
    };
    Some(refusal::no_ftrace(name, section, why, cause))
}

/// The body of a syscall defined with the kernel's `SYSCALL_DEFINEn` (or its compat twin).
fn is_syscall_body(name: &str) -> bool {
    let base = source_function(name);
    base.starts_with("__do_sys_") || base.starts_with("__do_compat_sys_")
}

/// Static locals (`name.N`) the original function used and the new one no longer does.
///
/// GCC may move the code that uses a static local out of a function into a split part
/// (`.cold`, `.part.N`), and a caller that inlined a function's head calls that function's
/// `.part.N` directly: the new function still uses the static through the part. So the new
/// version's uses are those of the function, of the split parts it calls or jumps to (and
/// those parts' own), and of the other members of its split family (its parent and parts).
/// Worked out only when the function's own code no longer names the static.
fn removed_static_locals(pair: Pair<'_, '_>, o: SymIdx<Orig>, p: SymIdx<Patched>) -> Vec<String> {
    let new = static_locals(pair.patched, pair.patched_insns, p);
    let mut gone: Vec<String> = static_locals(pair.orig, pair.orig_insns, o)
        .into_iter()
        .filter(|l| !new.contains(l))
        .collect();
    if gone.is_empty() {
        return gone;
    }
    let through_parts = split_reach(pair.patched, pair.patched_insns, p);
    for f in through_parts.into_iter().filter(|&f| f != p) {
        let used = static_locals(pair.patched, pair.patched_insns, f);
        gone.retain(|l| !used.contains(l));
    }
    gone.sort();
    gone.dedup();
    gone
}

/// The static locals function `f`'s own code refers to, by normalised name. Targets are
/// resolved past section symbols (several statics may share a named section such as
/// `__dyndbg` or `.data..once`). Special statics are always fresh copies whose state is
/// deliberately not carried over, so dropping one loses nothing.
fn static_locals<S: Side>(obj: &Object<'_, S>, insns: &Insns, f: SymIdx<S>) -> Vec<String> {
    let s = obj.sym(f);
    let Some(sec) = s.section else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for r in obj
        .sec(sec)
        .relocs_in(s.value, s.value.saturating_add(s.size))
    {
        let Target::Symbol { sym, .. } = resolve(obj, insns, sec, r) else {
            continue;
        };
        let target = obj.sym(sym);
        if target.kind == SymKind::Object
            && target.bind == Bind::Local
            && is_static_local(target.name)
            && !is_special(obj, sym)
        {
            out.push(normalize(target.name));
        }
    }
    out
}

/// Function `f` with the split parts (`.cold`, `.part.N`) its code reaches: those it calls,
/// jumps to or otherwise refers to, theirs in turn, and the members of `f`'s own split family
/// (its parent and parts).
fn split_reach<S: Side>(obj: &Object<'_, S>, insns: &Insns, f: SymIdx<S>) -> Vec<SymIdx<S>> {
    let family_root = |name: &str| split_parent(name).unwrap_or_else(|| normalize(name));
    let root = family_root(obj.sym(f).name);
    let mut out: Vec<SymIdx<S>> = obj
        .symbol_indices()
        .filter(|&g| {
            let s = obj.sym(g);
            s.kind == SymKind::Func && s.section.is_some() && family_root(s.name) == root
        })
        .collect();
    if !out.contains(&f) {
        out.push(f);
    }
    let mut k = 0;
    while k < out.len() {
        for t in targets_of(obj, insns, out[k]) {
            let Target::Symbol { sym, .. } = t else {
                continue;
            };
            let s = obj.sym(sym);
            if s.kind == SymKind::Func
                && s.section.is_some()
                && split_parent(s.name).is_some()
                && !out.contains(&sym)
            {
                out.push(sym);
            }
        }
        k += 1;
    }
    out
}

/// Changed existing data objects: refused, or recorded as ignored when their section is.
fn data_refusals(
    pair: Pair<'_, '_>,
    matched: &HashMap<SymIdx<Patched>, SymIdx<Orig>>,
    annotations: &Annotations,
) -> (Vec<Refusal>, Vec<Ignored>) {
    let mut out = Vec::new();
    let mut ignored = Vec::new();
    for (&p, &o) in matched {
        let ps = pair.patched.sym(p);
        if ps.kind != SymKind::Object {
            continue;
        }
        let Some(psec) = ps.section else { continue };
        let section = pair.patched.sec(psec).name;
        if !is_data_section(section) {
            continue;
        }
        if let Some(why) = pair.compare_syms(o, p) {
            let name = pair.orig.sym(o).name;
            if let Some(pat) = annotations.ignoring_section(section) {
                ignored.push(Ignored {
                    symbol: name.into(),
                    section: section.into(),
                    reason: format!("existing data changed ({why}); the running kernel keeps its copy, as {} asks", annotations.ignore_section_macro(pat)),
                });
                continue;
            }
            out.push(refusal::data_changed(
                name,
                section,
                &why,
                is_init_section(section),
            ));
        }
    }
    out.sort_by(|a, b| a.key.cmp(&b.key));
    ignored.sort_by(|a, b| a.symbol.cmp(&b.symbol));
    (out, ignored)
}

/// Sections of unknown role whose entries point into code the livepatch replaces.
/// Entries of an ignored section are recorded as ignored instead.
fn unknown_section_refusals(
    pair: Pair<'_, '_>,
    annotations: &Annotations,
    results: &[FuncResult],
) -> (Vec<Refusal>, Vec<Ignored>) {
    let patched = pair.patched;
    let code: HashSet<SecIdx<Patched>> = results
        .iter()
        .filter(|r| r.verdict.is_included())
        .filter_map(|r| patched.sym(r.patched).section)
        .collect();
    let mut out = Vec::new();
    let mut ignored = Vec::new();
    for sec in patched.section_indices() {
        let s = patched.sec(sec);
        // `.klpgen.*` and `.kpatch.*` sections are annotations, read (and checked) by `annot`.
        if !s.is_alloc()
            || crate::annot::is_annotation_section(s.name)
            || crate::runtime_const::runtime_const_kind(s.name).is_some()
        {
            continue;
        }
        // A special section (the machine's, or one an entry size is given for) is cut per
        // entry; one whose entries cannot be told apart is refused below. An unknown size is
        // the plan's to report, with how to give it.
        let layout_error = match pair.patched_entries.stride_of(sec) {
            Some(Ok(_) | Err(StrideError::Unknown { .. })) => continue,
            Some(Err(e)) => Some(e),
            None if is_known_section(patched.arch, s.name) => continue,
            None => None,
        };
        let hit =
            s.relocs
                .iter()
                .find_map(|r| match resolve(patched, pair.patched_insns, sec, r) {
                    Target::Symbol { sym, .. } => {
                        let t = patched.sym(sym);
                        t.section.filter(|ts| code.contains(ts)).map(|_| t.name)
                    }
                    Target::Anon { sec: ts, .. } | Target::String { sec: ts, .. } => {
                        code.contains(&ts).then(|| patched.sec(ts).name)
                    }
                });
        let Some(target) = hit else { continue };
        if let Some(p) = annotations.ignoring_section(s.name) {
            ignored.push(Ignored {
                symbol: target.into(),
                section: s.name.into(),
                reason: format!("entries of {} point into changed code ({target}) and are not carried; left out as {} asks", s.name, annotations.ignore_section_macro(p)),
            });
        } else if let Some(e) = layout_error {
            out.push(refusal::special_section_layout(
                s.name,
                target,
                &e.to_string(),
            ));
        } else if s.name == "_error_injection_whitelist" {
            out.push(refusal::error_injection(target, s.name));
        } else {
            out.push(refusal::unknown_special_section(s.name, target));
        }
    }
    (out, ignored)
}

/// Runtime constants in code the livepatch carries: a pointer constant must be the site the
/// architecture can rewrite into a load of its variable (the plan does that); a shift
/// constant cannot be rewritten in place and is refused.
fn runtime_const_refusals(
    pair: Pair<'_, '_>,
    matched: &HashMap<SymIdx<Patched>, SymIdx<Orig>>,
    annotations: &Annotations,
    results: &[FuncResult],
) -> Vec<Refusal> {
    let code: HashSet<SecIdx<Patched>> = results
        .iter()
        .filter(|r| r.verdict.is_included())
        .map(|r| r.patched)
        .chain(annotations.callbacks.iter().map(|c| c.func))
        .filter_map(|f| pair.patched.sym(f).section)
        .collect();
    runtime_const_refusals_in(pair.patched, matched, pair.orig, &code)
}

/// `runtime_const_refusals` for the runtime constants in the given code sections.
pub(crate) fn runtime_const_refusals_in(
    patched: &Object<'_, Patched>,
    matched: &HashMap<SymIdx<Patched>, SymIdx<Orig>>,
    orig: &Object<'_, Orig>,
    code: &HashSet<SecIdx<Patched>>,
) -> Vec<Refusal> {
    let mut out: Vec<Refusal> = Vec::new();
    for site in crate::runtime_const::sites(patched) {
        if !code.contains(&site.code) {
            continue;
        }
        let func = match site.func {
            Some(f) => match matched.get(&f) {
                Some(&o) => orig.sym(o).name,
                None => patched.sym(f).name,
            },
            None => patched.sec(site.code).name,
        };
        let at = match site.func {
            Some(f) => format!("{func}+{:#x}", site.offset - patched.sym(f).value),
            None => format!("{func}+{:#x}", site.offset),
        };
        let refusal = match site.kind {
            RuntimeConstKind::Shift => refusal::runtime_const_shift(
                func,
                site.section,
                &at,
                site.variable,
                runtime_const_user(site.variable),
            ),
            RuntimeConstKind::Ptr => {
                let code = patched.sec(site.code).data;
                match patched.arch.runtime_ptr_load(code, site.offset) {
                    Ok(_) => continue,
                    Err(why) => {
                        refusal::runtime_const_ptr(func, site.section, &at, site.variable, &why)
                    }
                }
            }
        };
        if out
            .iter()
            .any(|r| r.key == refusal.key && r.section == site.section)
        {
            continue;
        }
        out.push(refusal);
    }
    out
}
