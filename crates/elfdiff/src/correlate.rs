//! Correlation: which symbols of the original and patched objects are the same thing. Symbols
//! are matched by normalised name (clone and static-local numbers removed, `names.rs`) within
//! their kind through per-name queues, never by scanning all candidates for each symbol; special
//! statics, which each build makes fresh, are never matched. Where several static locals share a
//! name on either side, the numbers say nothing (a new function's `count.0` may be the number an
//! existing one's had), so those are matched by the functions that use them; then exact names,
//! then table order.

use std::borrow::Cow;
use std::collections::{HashMap, VecDeque};

use crate::model::{Object, Orig, Patched, Side, SymIdx, SymKind, Symbol};
use crate::names::{normalize, normalized};

fn kind_class(kind: SymKind) -> Option<u8> {
    match kind {
        SymKind::Func => Some(0),
        SymKind::Object => Some(1),
        _ => None,
    }
}

fn correlatable<S: Side>(s: &Symbol<'_, S>) -> bool {
    s.section.is_some() && kind_class(s.kind).is_some() && !s.name.is_empty()
}

/// Functions that refer to each static local (by normalised name), for telling apart static
/// locals that share a name (`count.1` in `f`, `count.2` in `g`). Only static locals are
/// recorded: `__fentry__` alone has every function as a user.
fn users<S: Side>(obj: &Object<'_, S>) -> HashMap<SymIdx<S>, Vec<String>> {
    // The static local a relocation's symbol stands for (a section symbol for the only
    // symbol of its section), worked out once per symbol relocations use, not per relocation.
    let stands_for = |i: SymIdx<S>| {
        let t = obj.sym(i);
        let target = match (t.kind, t.section) {
            (SymKind::Section, Some(ts)) => match obj.sec(ts).syms.as_slice() {
                [only] => *only,
                _ => return None,
            },
            _ => i,
        };
        is_static_local(obj.sym(target).name).then_some(target)
    };
    let mut local: Vec<Option<Option<SymIdx<S>>>> = vec![None; obj.symbols.len()];
    // (static local, user) pairs, each once, before any name is built.
    let mut pairs: Vec<(SymIdx<S>, SymIdx<S>)> = Vec::new();
    for sec in obj.section_indices() {
        let section = obj.sec(sec);
        if !section.is_exec() {
            continue;
        }
        for r in &section.relocs {
            let memo = &mut local[r.sym.get()];
            let Some(target) = *memo.get_or_insert_with(|| stands_for(r.sym)) else {
                continue;
            };
            // Only now the user: most relocations are not to static locals.
            let Some(user) = obj.symbol_at(sec, r.offset) else {
                continue;
            };
            pairs.push((target, user));
        }
    }
    pairs.sort_unstable();
    pairs.dedup();
    let mut out: HashMap<SymIdx<S>, Vec<String>> = HashMap::new();
    for (target, user) in pairs {
        out.entry(target)
            .or_default()
            .push(normalize(obj.sym(user).name));
    }
    for v in out.values_mut() {
        v.sort();
        v.dedup();
    }
    out
}

/// A GCC static local (`name.N`): function-scope, numbered per translation unit.
pub(crate) fn is_static_local(name: &str) -> bool {
    name.rsplit_once('.')
        .is_some_and(|(_, n)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// A correlation key: kind class and normalised name.
type Key<'d> = (u8, Cow<'d, str>);

/// Static locals and the functions that use them, on both sides.
type Users = (
    HashMap<SymIdx<Orig>, Vec<String>>,
    HashMap<SymIdx<Patched>, Vec<String>>,
);

/// Match symbols by normalised name within their kind: static locals by the functions that
/// use them, then exact names, then in table order. Special statics are never matched.
pub(crate) fn correlate(
    orig: &Object<'_, Orig>,
    patched: &Object<'_, Patched>,
) -> HashMap<SymIdx<Patched>, SymIdx<Orig>> {
    let (os, ps) = (keyed(orig), keyed(patched));
    // A name shared by several static locals on either side: the numbers say nothing (a new
    // function's `count.0` may be the number an existing function's had), the users do.
    let mut needs_users = false;
    for_each_group(&os, &ps, |os, ps| {
        needs_users |=
            ambiguous(os, ps) && ps.iter().any(|&p| is_static_local(patched.sym(p).name));
    });
    let users: Users = if needs_users {
        (users(orig), users(patched))
    } else {
        (HashMap::new(), HashMap::new())
    };
    let mut out = HashMap::with_capacity(ps.len());
    for_each_group(&os, &ps, |os, ps| {
        match_group(orig, patched, os, ps, &users, &mut out);
    });
    out
}

/// The correlatable symbols of `obj` but special statics, with their keys, sorted by key and
/// then table order: a group is a run, found by walking both sides' lists together (no map,
/// no list per name; most names have one symbol each side).
fn keyed<'d, S: Side>(obj: &Object<'d, S>) -> Vec<(Key<'d>, SymIdx<S>)> {
    let mut out = Vec::new();
    for i in obj.symbol_indices() {
        let s = obj.sym(i);
        if correlatable(s) {
            let base = normalized(s.name);
            if !is_special_named(obj, i, &base) {
                out.push(((kind_class(s.kind).unwrap_or(9), base), i));
            }
        }
    }
    out.sort_unstable();
    out
}

/// Calls `f` with the candidates of each key both sides have (the original's and the
/// patched object's, in table order), in key order.
fn for_each_group<'d>(
    os: &[(Key<'d>, SymIdx<Orig>)],
    ps: &[(Key<'d>, SymIdx<Patched>)],
    mut f: impl FnMut(&[SymIdx<Orig>], &[SymIdx<Patched>]),
) {
    let (mut obuf, mut pbuf) = (Vec::new(), Vec::new());
    let (mut i, mut j) = (0, 0);
    while i < os.len() {
        let key = &os[i].0;
        obuf.clear();
        pbuf.clear();
        while i < os.len() && os[i].0 == *key {
            obuf.push(os[i].1);
            i += 1;
        }
        while j < ps.len() && ps[j].0 < *key {
            j += 1;
        }
        while j < ps.len() && ps[j].0 == *key {
            pbuf.push(ps[j].1);
            j += 1;
        }
        if !pbuf.is_empty() {
            f(&obuf, &pbuf);
        }
    }
}

/// Several candidates on one side: the numbers in their names do not tell them apart.
fn ambiguous(os: &[SymIdx<Orig>], ps: &[SymIdx<Patched>]) -> bool {
    os.len() > 1 || ps.len() > 1
}

/// Candidates are queued per key in table order, so each pass takes the first unused one in
/// constant time (a group can hold thousands of `calls.N`).
fn first_unused(queue: Option<&mut VecDeque<usize>>, used: &[bool]) -> Option<usize> {
    let queue = queue?;
    while let Some(k) = queue.pop_front() {
        if !used[k] {
            return Some(k);
        }
    }
    None
}

/// Match the candidates of one group, in three passes.
fn match_group(
    orig: &Object<'_, Orig>,
    patched: &Object<'_, Patched>,
    os: &[SymIdx<Orig>],
    ps: &[SymIdx<Patched>],
    (ousers, pusers): &Users,
    out: &mut HashMap<SymIdx<Patched>, SymIdx<Orig>>,
) {
    // One candidate on each side (most names): every pass below ends matching them, by
    // exact name or else in table order.
    if let ([o], [p]) = (os, ps) {
        out.insert(*p, *o);
        return;
    }
    let mut used = vec![false; os.len()];
    let mut pending: Vec<SymIdx<Patched>> = ps.to_vec();
    // Pass 1: static locals by the functions that use them.
    if ambiguous(os, ps) {
        let mut by_users: HashMap<&[String], VecDeque<usize>> = HashMap::new();
        for (k, o) in os.iter().enumerate() {
            if let Some(u) = ousers.get(o) {
                by_users.entry(u.as_slice()).or_default().push_back(k);
            }
        }
        pending.retain(|&p| {
            if !is_static_local(patched.sym(p).name) {
                return true;
            }
            let Some(pu) = pusers.get(&p) else {
                return true;
            };
            match first_unused(by_users.get_mut(pu.as_slice()), &used) {
                Some(k) => {
                    used[k] = true;
                    out.insert(p, os[k]);
                    false
                }
                None => true,
            }
        });
    }
    // Pass 2: exact names.
    let mut by_name: HashMap<&str, VecDeque<usize>> = HashMap::new();
    for (k, &o) in os.iter().enumerate() {
        if !used[k] {
            by_name.entry(orig.sym(o).name).or_default().push_back(k);
        }
    }
    pending.retain(
        |&p| match first_unused(by_name.get_mut(patched.sym(p).name), &used) {
            Some(k) => {
                used[k] = true;
                out.insert(p, os[k]);
                false
            }
            None => true,
        },
    );
    // Pass 3: what is left, in table order.
    let mut free = os.iter().enumerate().filter(|(k, _)| !used[*k]);
    for p in pending {
        match free.next() {
            Some((_, &o)) => {
                out.insert(p, o);
            }
            None => break,
        }
    }
}

/// Statics that must never be matched with the running kernel's copy: each build's are
/// fresh (lockdep keys, once-flags, ratelimit states, `__func__`, switch tables, dynamic-debug
/// descriptors, anything in `.data..once`).
pub(crate) fn is_special<S: Side>(obj: &Object<'_, S>, i: SymIdx<S>) -> bool {
    let s = obj.sym(i);
    s.kind == SymKind::Object && is_special_named(obj, i, &normalized(s.name))
}

/// [`is_special`], given the symbol's normalised name `base`.
fn is_special_named<S: Side>(obj: &Object<'_, S>, i: SymIdx<S>, base: &str) -> bool {
    let s = obj.sym(i);
    if s.kind != SymKind::Object {
        return false;
    }
    const NAMES: &[&str] = &[
        "__key",
        "__warned",
        "__already_done",
        "__func__",
        "_rs",
        "CSWTCH",
        "_entry",
        "__print_once",
        "__UNIQUE_ID_ddebug",
        "descriptor",
        "__msg",
    ];
    if NAMES.contains(&base) {
        return true;
    }
    s.section.is_some_and(|sec| {
        let n = obj.sec(sec).name;
        n == ".data..once" || n.starts_with("__dyndbg") || n.starts_with(".data.once")
    })
}
