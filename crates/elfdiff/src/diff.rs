//! Correlation and comparison: which symbols of the original and patched objects are the same
//! thing, and which functions and data changed. Relocations are compared by what they point at
//! (symbol name and addend, or string content), never by section offsets that move between builds.

use std::collections::{HashMap, HashSet, VecDeque};

use serde::Serialize;

use crate::annot::Annotations;
use crate::arch::{Arch, InsnMap, X86_64};
use crate::model::{
    reloc_width, Object, Orig, Patched, Reloc, SecIdx, Side, SymIdx, SymKind, Symbol,
};
use crate::names::{is_prefix_symbol, normalize, normalize_section, split_parent};

/// A change klpgen will not turn into a livepatch, with what to do instead.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Refusal {
    /// Stable key, `refuse.<kind>.<symbol or section>`.
    pub key: String,
    pub symbol: String,
    pub section: String,
    pub reason: String,
    pub hint: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Unchanged,
    /// Changed, with a one-line description of the first difference.
    Changed(String),
    New,
    /// Changed or new, but an annotation (`KLPGEN_IGNORE_FUNCTION`/`_SECTION`) says to leave
    /// it out: the running kernel keeps its version. Carries what it would have been.
    Ignored(String),
}

impl Verdict {
    /// Whether the function's patched version goes into the livepatch.
    pub fn is_included(&self) -> bool {
        matches!(self, Verdict::Changed(_) | Verdict::New)
    }
}

/// A difference that an annotation told klpgen to leave out (reported, not acted on).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Ignored {
    pub symbol: String,
    pub section: String,
    /// What the difference was and which annotation covers it.
    pub reason: String,
}

/// The verdict on one function of the patched object.
#[derive(Debug, Clone)]
pub struct FuncResult {
    pub patched: SymIdx<Patched>,
    pub orig: Option<SymIdx<Orig>>,
    pub verdict: Verdict,
    /// Included because a split child (`.cold`, `.part`) of it changed, or it is such a child
    /// of an included function.
    pub via_child: bool,
    /// Included because it calls or jumps to a changed function that livepatch can only reach
    /// through its callers (a split child or a private function without an ftrace entry).
    pub via_callee: bool,
    /// Changed, but a local function without an ftrace entry (`static inline` kept out of
    /// line, `notrace`) that only direct calls and jumps reach: livepatch cannot redirect it,
    /// so its callers are patched and call the new version, which the livepatch carries as a
    /// copy of its own.
    pub private: bool,
}

/// Per-section decoded instruction boundaries, for finding where PC-relative relocations point.
pub(crate) struct Insns {
    maps: Vec<Option<InsnMap>>,
}

impl Insns {
    fn new<S: Side>(obj: &Object<'_, S>) -> Self {
        let maps = obj
            .sections
            .iter()
            .map(|s| {
                (s.is_exec() && !s.relocs.is_empty() && !s.data.is_empty())
                    .then(|| X86_64.decode(s.data))
            })
            .collect();
        Insns { maps }
    }
    /// Whether relocation `r` fills the target of a direct call or jump.
    pub(crate) fn is_branch<S: Side>(
        &self,
        obj: &Object<'_, S>,
        sec: SecIdx<S>,
        r: &Reloc<S>,
    ) -> bool {
        let Some(map) = &self.maps[sec.get()] else {
            return false;
        };
        let Some((start, end)) = map.containing(r.offset) else {
            return false;
        };
        let code = obj.sec(sec).data;
        let Some(bytes) = code.get(start as usize..end as usize) else {
            return false;
        };
        let mut out = Vec::with_capacity(1);
        X86_64.decode_flow(bytes, start, &mut out);
        out.first()
            .is_some_and(|i| i.flow != crate::arch::Flow::Other && i.field == r.offset)
    }

    pub(crate) fn bias<S: Side>(&self, obj: &Object<'_, S>, sec: SecIdx<S>, r: &Reloc<S>) -> i64 {
        match &self.maps[sec.get()] {
            Some(map) => X86_64.pcrel_bias(obj.sec(sec).data, map, r.offset, r.r_type),
            None => 0,
        }
    }
}

/// Where a relocation points, resolved past section symbols.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target<S: Side> {
    /// A named symbol (defined or not) plus the addend to use against it.
    Symbol { sym: SymIdx<S>, addend: i64 },
    /// A string in a merged-string section: the string starts at `start`; the relocation's
    /// addend is kept as is against the section.
    String { sec: SecIdx<S>, start: u64 },
    /// Anonymous bytes of a section (no symbol covers the target).
    Anon { sec: SecIdx<S>, offset: i64 },
}

/// A comparable identity for what a relocation refers to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum RefKey {
    Sym(String, i64),
    Str(Vec<u8>, i64),
    Anon(String, i64, Vec<u8>),
}

pub(crate) fn resolve<S: Side>(
    obj: &Object<'_, S>,
    insns: &Insns,
    site: SecIdx<S>,
    r: &Reloc<S>,
) -> Target<S> {
    let sym = obj.sym(r.sym);
    if sym.kind != SymKind::Section && !is_local_label(sym) {
        return Target::Symbol {
            sym: r.sym,
            addend: r.addend,
        };
    }
    let Some(tsec) = sym.section else {
        return Target::Symbol {
            sym: r.sym,
            addend: r.addend,
        };
    };
    let bias = insns.bias(obj, site, r);
    // Malformed input may overflow; real addends and biases are small.
    let effective = label_base(obj, r).wrapping_add(r.addend).wrapping_add(bias);
    let section = obj.sec(tsec);
    if effective >= 0 {
        if let Some(named) = obj.symbol_at(tsec, effective as u64) {
            let n = obj.sym(named);
            if !is_prefix_symbol(n.name) && !is_local_label(n) {
                return Target::Symbol {
                    sym: named,
                    addend: r.addend.wrapping_sub(obj.sym(named).value as i64),
                };
            }
        }
        if section.is_strings() && (effective as u64) < section.data.len() as u64 {
            return Target::String {
                sec: tsec,
                start: section.string_start(effective as usize) as u64,
            };
        }
    }
    Target::Anon {
        sec: tsec,
        offset: effective,
    }
}

/// Where each relocation inside function `f`'s bytes points, resolved past section symbols.
pub(crate) fn targets_of<'o, S: Side>(
    obj: &'o Object<'_, S>,
    insns: &'o Insns,
    f: SymIdx<S>,
) -> impl Iterator<Item = Target<S>> + 'o {
    let s = obj.sym(f);
    let (start, end) = (s.value, s.value.saturating_add(s.size));
    s.section.into_iter().flat_map(move |sec| {
        obj.sec(sec)
            .relocs_in(start, end)
            .iter()
            .map(move |r| resolve(obj, insns, sec, r))
    })
}

/// A local assembler label (`.LC0`, `.L123`). GAS keeps such labels in the symbol table for
/// relocations into mergeable sections (strings above all) instead of using the section
/// symbol; their numbers say nothing (a string moves to another function's section, and
/// another label, when a new use of it comes first), so they stand for section + offset.
pub(crate) fn is_local_label<S: Side>(s: &Symbol<'_, S>) -> bool {
    s.kind == SymKind::NoType && s.bind == crate::model::Bind::Local && s.name.starts_with(".L")
}

/// The offset in its section that a section-relative relocation counts its addend from: 0
/// for the section symbol, the label's value for a local label.
pub(crate) fn label_base<S: Side>(obj: &Object<'_, S>, r: &Reloc<S>) -> i64 {
    let sym = obj.sym(r.sym);
    if is_local_label(sym) {
        sym.value as i64
    } else {
        0
    }
}

pub(crate) fn ref_key<S: Side>(
    obj: &Object<'_, S>,
    insns: &Insns,
    site: SecIdx<S>,
    r: &Reloc<S>,
) -> RefKey {
    match resolve(obj, insns, site, r) {
        Target::Symbol { sym, addend } => RefKey::Sym(normalize(obj.sym(sym).name), addend),
        Target::String { sec, start } => {
            let data = obj.sec(sec).data;
            let s = &data[start as usize..];
            let end = s.iter().position(|&b| b == 0).unwrap_or(s.len());
            // The delta from the string start, measured in the same frame as the addend.
            RefKey::Str(
                s[..end].to_vec(),
                label_base(obj, r)
                    .wrapping_add(r.addend)
                    .wrapping_sub(start as i64),
            )
        }
        Target::Anon { sec, offset } => {
            let s = obj.sec(sec);
            RefKey::Anon(normalize_section(s.name), offset, s.data.to_vec())
        }
    }
}

/// The two kinds of runtime constant (the kernel's `<asm/runtime-const.h>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RuntimeConstKind {
    /// `runtime_const_ptr(sym)`: section `runtime_ptr_<sym>`, a pointer-sized immediate.
    Ptr,
    /// `runtime_const_shift_right_32(val, sym)`: section `runtime_shift_<sym>`, a shift count.
    Shift,
}

/// A section of runtime-constant entries: its kind and the variable it names.
pub(crate) fn runtime_const_kind(section: &str) -> Option<(RuntimeConstKind, &str)> {
    if let Some(v) = section.strip_prefix("runtime_ptr_") {
        return Some((RuntimeConstKind::Ptr, v));
    }
    section
        .strip_prefix("runtime_shift_")
        .map(|v| (RuntimeConstKind::Shift, v))
}

/// The kernel helpers (Linux 6.12) that use a runtime constant, for refusal hints.
fn runtime_const_user(variable: &str) -> Option<&'static str> {
    match variable {
        "d_hash_shift" | "dentry_hashtable" => Some("d_hash() in fs/dcache.c"),
        "USER_PTR_MAX" => Some("__access_ok() (access_ok, user_access_begin, ...)"),
        _ => None,
    }
}

/// One entry of a runtime-constant section of the patched object.
#[derive(Debug, Clone)]
pub(crate) struct RuntimeConstSite<'d> {
    pub kind: RuntimeConstKind,
    /// `runtime_ptr_<variable>` or `runtime_shift_<variable>`.
    pub section: &'d str,
    pub variable: &'d str,
    /// The code section and offset the entry points at (the immediate to patch).
    pub code: SecIdx<Patched>,
    pub offset: u64,
    /// The function containing it.
    pub func: Option<SymIdx<Patched>>,
}

/// The result of diffing one object pair.
pub struct Diff<'a, 'd> {
    pub orig: &'a Object<'d, Orig>,
    pub patched: &'a Object<'d, Patched>,
    pub(crate) orig_insns: Insns,
    pub(crate) patched_insns: Insns,
    /// Correlated symbols, patched → original.
    pub matched: HashMap<SymIdx<Patched>, SymIdx<Orig>>,
    pub matched_rev: HashMap<SymIdx<Orig>, SymIdx<Patched>>,
    /// One entry per function defined in the patched object (prefix labels excluded).
    pub functions: Vec<FuncResult>,
    pub refusals: Vec<Refusal>,
    /// Differences that were noticed and, as annotations asked, not acted on.
    pub ignored: Vec<Ignored>,
    /// The patched object's `.klpgen.*` annotations.
    pub annotations: Annotations,
    /// Unchanged functions made changed by `KLPGEN_FORCE_FUNCTION` (original names).
    pub forced: Vec<String>,
}

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
    let mut out: HashMap<SymIdx<S>, Vec<String>> = HashMap::new();
    for sec in obj.section_indices() {
        let section = obj.sec(sec);
        if !section.is_exec() {
            continue;
        }
        for r in &section.relocs {
            let Some(user) = obj.symbol_at(sec, r.offset) else {
                continue;
            };
            let t = obj.sym(r.sym);
            let target = match (t.kind, t.section) {
                (SymKind::Section, Some(ts)) => match obj.sec(ts).syms.as_slice() {
                    [only] => *only,
                    _ => continue,
                },
                _ => r.sym,
            };
            if !is_static_local(obj.sym(target).name) {
                continue;
            }
            out.entry(target)
                .or_default()
                .push(normalize(obj.sym(user).name));
        }
    }
    for v in out.values_mut() {
        v.sort();
        v.dedup();
    }
    out
}

/// A GCC static local (`name.N`): function-scope, numbered per translation unit.
fn is_static_local(name: &str) -> bool {
    name.rsplit_once('.')
        .is_some_and(|(_, n)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// Match symbols by normalised name within their kind: static locals by the functions that
/// use them, then exact names, then in table order. Special statics are never matched.
fn correlate(
    orig: &Object<'_, Orig>,
    patched: &Object<'_, Patched>,
) -> HashMap<SymIdx<Patched>, SymIdx<Orig>> {
    type Group = (Vec<SymIdx<Orig>>, Vec<SymIdx<Patched>>);
    let mut groups: HashMap<(u8, String), Group> = HashMap::new();
    for i in orig.symbol_indices() {
        let s = orig.sym(i);
        if correlatable(s) && !is_special(orig, i) {
            let key = (kind_class(s.kind).unwrap_or(9), normalize(s.name));
            groups.entry(key).or_default().0.push(i);
        }
    }
    for i in patched.symbol_indices() {
        let s = patched.sym(i);
        if correlatable(s) && !is_special(patched, i) {
            let key = (kind_class(s.kind).unwrap_or(9), normalize(s.name));
            if let Some(g) = groups.get_mut(&key) {
                g.1.push(i);
            }
        }
    }
    // A name shared by several static locals on either side: the numbers say nothing (a new
    // function's `count.0` may be the number an existing function's had), the users do.
    let ambiguous = |os: &[SymIdx<Orig>], ps: &[SymIdx<Patched>]| os.len() > 1 || ps.len() > 1;
    let needs_users = groups.values().any(|(os, ps)| {
        ambiguous(os, ps) && ps.iter().any(|&p| is_static_local(patched.sym(p).name))
    });
    let (ousers, pusers) = if needs_users {
        (users(orig), users(patched))
    } else {
        (HashMap::new(), HashMap::new())
    };
    let mut keys: Vec<_> = groups.keys().cloned().collect();
    keys.sort();
    let mut out = HashMap::new();
    for key in keys {
        let (os, ps) = &groups[&key];
        if ps.is_empty() {
            continue;
        }
        let mut used = vec![false; os.len()];
        let mut pending: Vec<SymIdx<Patched>> = ps.clone();
        // Candidates are queued per key in table order, so each pass takes the first unused
        // one in constant time (a group can hold thousands of `calls.N`).
        let first_unused = |queue: Option<&mut VecDeque<usize>>, used: &[bool]| {
            let queue = queue?;
            while let Some(k) = queue.pop_front() {
                if !used[k] {
                    return Some(k);
                }
            }
            None
        };
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
    out
}

/// Statics that must never be matched with the running kernel's copy: each build's are
/// fresh (lockdep keys, once-flags, ratelimit states, `__func__`, switch tables, dynamic-debug
/// descriptors, anything in `.data..once`).
fn is_special<S: Side>(obj: &Object<'_, S>, i: SymIdx<S>) -> bool {
    let s = obj.sym(i);
    if s.kind != SymKind::Object {
        return false;
    }
    let base = normalize(s.name);
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
    if NAMES.contains(&base.as_str()) {
        return true;
    }
    s.section.is_some_and(|sec| {
        let n = obj.sec(sec).name;
        n == ".data..once" || n.starts_with("__dyndbg") || n.starts_with(".data.once")
    })
}

/// Section names whose contents are data a running kernel owns (checked for changes).
fn is_data_section(name: &str) -> bool {
    [".data", ".rodata", ".bss", ".init.data", ".init.rodata"]
        .iter()
        .any(|p| name == *p || name.starts_with(&format!("{p}.")))
        && !name.starts_with(".rodata.str")
        && !name.starts_with(".rodata.cst")
}

/// The body of a syscall defined with the kernel's `SYSCALL_DEFINEn` (or its compat twin).
fn is_syscall_body(name: &str) -> bool {
    let base = crate::annot::source_function(name);
    base.starts_with("__do_sys_") || base.starts_with("__do_compat_sys_")
}

fn is_init_section(name: &str) -> bool {
    name.starts_with(".init.") || name.starts_with(".exit.")
}

impl<'a, 'd> Diff<'a, 'd> {
    pub fn new(orig: &'a Object<'d, Orig>, patched: &'a Object<'d, Patched>) -> Self {
        let matched = correlate(orig, patched);
        let matched_rev = matched.iter().map(|(&p, &o)| (o, p)).collect();
        let mut diff = Diff {
            orig,
            patched,
            orig_insns: Insns::new(orig),
            patched_insns: Insns::new(patched),
            matched,
            matched_rev,
            functions: Vec::new(),
            refusals: Vec::new(),
            ignored: Vec::new(),
            annotations: Annotations::read(patched),
            forced: Vec::new(),
        };
        diff.compare_all();
        diff
    }

    /// Compare the bytes and relocations of two symbols; None when equal, else the first
    /// difference.
    fn compare_syms(&self, o: SymIdx<Orig>, p: SymIdx<Patched>) -> Option<String> {
        let (os, ps) = (self.orig.sym(o), self.patched.sym(p));
        if os.size != ps.size {
            return Some(format!("size {} -> {}", os.size, ps.size));
        }
        let (Some(osec), Some(psec)) = (os.section, ps.section) else {
            return None;
        };
        let (osx, psx) = (self.orig.sec(osec), self.patched.sec(psec));
        if osx.is_nobits() != psx.is_nobits() {
            return Some("moved between initialised and zeroed data".into());
        }
        let orelocs = osx.relocs_in(os.value, os.value.saturating_add(os.size));
        let prelocs = psx.relocs_in(ps.value, ps.value.saturating_add(ps.size));
        if !osx.is_nobits() {
            let mut ob = self.orig.sym_bytes(o).to_vec();
            let mut pb = self.patched.sym_bytes(p).to_vec();
            mask(&mut ob, os.value, orelocs);
            mask(&mut pb, ps.value, prelocs);
            if let Some(i) = ob.iter().zip(&pb).position(|(a, b)| a != b) {
                let line_only =
                    osx.is_exec() && line_numbers_only(self.orig, os.value, &ob, &pb, orelocs);
                if !line_only {
                    return Some(format!("bytes differ at +{i:#x}"));
                }
            }
        }
        if orelocs.len() != prelocs.len() {
            return Some(format!(
                "{} relocations -> {}",
                orelocs.len(),
                prelocs.len()
            ));
        }
        for (ro, rp) in orelocs.iter().zip(prelocs) {
            let (offo, offp) = (ro.offset - os.value, rp.offset - ps.value);
            if offo != offp || ro.r_type != rp.r_type {
                return Some(format!("relocation at +{offo:#x} moved or changed type"));
            }
            let ko = ref_key(self.orig, &self.orig_insns, osec, ro);
            let kp = ref_key(self.patched, &self.patched_insns, psec, rp);
            if ko != kp {
                return Some(format!(
                    "relocation at +{offo:#x}: {} -> {}",
                    describe(&ko),
                    describe(&kp)
                ));
            }
        }
        None
    }

    /// Whether a function of the patched object has an ftrace entry (so it can be patched).
    pub fn patched_traceable(&self, f: SymIdx<Patched>) -> bool {
        traceable(self.patched, &self.patched_insns, f)
    }
    /// Whether a function of the original object has an ftrace entry.
    pub fn orig_traceable(&self, f: SymIdx<Orig>) -> bool {
        traceable(self.orig, &self.orig_insns, f)
    }

    fn compare_all(&mut self) {
        let mut results = Vec::new();
        for p in self.patched.symbol_indices() {
            let s = self.patched.sym(p);
            if s.kind != SymKind::Func || s.section.is_none() || is_prefix_symbol(s.name) {
                continue;
            }
            let orig = self.matched.get(&p).copied();
            let verdict = match orig {
                None => Verdict::New,
                Some(o) => match self.compare_syms(o, p) {
                    None => Verdict::Unchanged,
                    Some(why) => Verdict::Changed(why),
                },
            };
            results.push(FuncResult {
                patched: p,
                orig,
                verdict,
                via_child: false,
                via_callee: false,
                private: false,
            });
        }

        // Split children (.cold, .part) follow their parent: a changed child makes its parent
        // changed, and an included parent takes its children along.
        let by_norm: HashMap<String, usize> = results
            .iter()
            .enumerate()
            .map(|(i, r)| (normalize(self.patched.sym(r.patched).name), i))
            .collect();
        for i in 0..results.len() {
            let name = self.patched.sym(results[i].patched).name;
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
        let private = self.private_functions(&results);
        self.callers_of_untraceable_children(&mut results, &by_norm, &private);
        for r in results.iter_mut() {
            r.private = matches!(r.verdict, Verdict::Changed(_))
                && private.get(&r.patched).is_some_and(|taker| taker.is_none());
        }
        for i in 0..results.len() {
            let name = self.patched.sym(results[i].patched).name;
            if let Some(parent) = split_parent(name) {
                if let Some(&pi) = by_norm.get(&parent) {
                    if results[pi].verdict.is_included() && results[i].verdict == Verdict::Unchanged
                    {
                        results[i].verdict = Verdict::Changed(format!("part of changed {parent}"));
                        results[i].via_child = true;
                    }
                }
            }
        }

        self.apply_ignores(&mut results);
        self.apply_forces(&mut results);
        let mut refusals = self.annotations.refusals.clone();
        for c in &self.annotations.callbacks {
            let name = self.patched.sym(c.func).name;
            if let Some(Verdict::Ignored(_)) = results
                .iter()
                .find(|r| r.patched == c.func)
                .map(|r| &r.verdict)
            {
                refusals.push(Refusal {
                    key: format!("refuse.annotation.{name}"),
                    symbol: name.into(),
                    section: format!("{}{}", crate::annot::CALLBACK_PREFIX, c.kind.member()),
                    reason: format!("{name} is a {} callback and also ignored (KLPGEN_IGNORE_FUNCTION or _SECTION); a callback must be carried in the livepatch", c.kind.member()),
                    hint: "do not ignore the callback function or the section it is in".into(),
                });
            }
        }
        // Whether any function of the original object has an ftrace entry (asked once, lazily).
        let mut file_traced: Option<bool> = None;
        for r in &results {
            let ps = self.patched.sym(r.patched);
            let section = self.patched.sec(ps.section.expect("defined")).name;
            let Verdict::Changed(why) = &r.verdict else {
                continue;
            };
            let o = r.orig.expect("changed functions are matched");
            let name = self.orig.sym(o).name;
            if is_init_section(section) {
                refusals.push(Refusal {
                    key: format!("refuse.init-changed.{name}"),
                    symbol: name.into(),
                    section: section.into(),
                    reason: format!("__init/__exit function changed ({why}); it has already run (or never will) and its memory is freed"),
                    hint: "do the work in a livepatch callback (KLPGEN_POST_PATCH_CALLBACK from <klpgen/klpgen.h>) or in a function that runs after boot; or leave the change out with KLPGEN_IGNORE_FUNCTION".into(),
                });
                continue;
            }
            if self
                .orig
                .sec(self.orig.sym(o).section.expect("defined"))
                .in_group
            {
                refusals.push(Refusal {
                    key: format!("refuse.comdat-changed.{name}"),
                    symbol: name.into(),
                    section: section.into(),
                    reason: format!("function in a section group (COMDAT) changed ({why}); the linker kept one copy of the group for the whole kernel, so which body runs is not this object's to decide"),
                    hint: "make the function static or non-inline in its own translation unit, or patch its callers".into(),
                });
                continue;
            }
            let removed = self.removed_static_locals(o, r.patched);
            if let Some(local) = removed.first() {
                refusals.push(Refusal {
                    key: format!("refuse.static-local-removed.{name}"),
                    symbol: name.into(),
                    section: section.into(),
                    reason: format!("the new {name} no longer uses its static local {local}; the running kernel's state in it would silently be abandoned"),
                    hint: "keep using the static local in the new version (its state carries over), or move the state to a shadow variable".into(),
                });
                continue;
            }
            // A split child without an ftrace entry is reached through its changed parent's
            // new body; without such a parent nothing could redirect to it.
            let via_parent = split_parent(name).is_some_and(|parent| {
                by_norm
                    .get(&parent)
                    .is_some_and(|&pi| results[pi].verdict != Verdict::Unchanged)
            });
            if !via_parent && !r.private && !self.orig_traceable(o) {
                if let Some(Some(taker)) = private.get(&r.patched) {
                    refusals.push(Refusal {
                        key: format!("refuse.no-ftrace.{name}"),
                        symbol: name.into(),
                        section: section.into(),
                        reason: format!("function changed ({why}) but has no ftrace entry (notrace, or `static inline` kept out of line), so livepatch cannot redirect it; patching its callers instead would not cover calls through its address, which {taker} takes"),
                        hint: format!("remove notrace/inline from {name} in the running kernel's next build, or change the patch so the pointer names a new function and the callers that use it are patched"),
                    });
                    continue;
                }
                let file_traced = *file_traced.get_or_insert_with(|| {
                    self.orig.symbol_indices().any(|f| {
                        let s = self.orig.sym(f);
                        s.kind == SymKind::Func && s.section.is_some() && self.orig_traceable(f)
                    })
                });
                refusals.push(Refusal {
                    key: format!("refuse.no-ftrace.{name}"),
                    symbol: name.into(),
                    section: section.into(),
                    reason: format!("function changed ({why}) but has no ftrace entry (notrace, or not traceable), so livepatch cannot redirect it"),
                    hint: if is_syscall_body(name) {
                        "this is a syscall body (SYSCALL_DEFINEn makes __do_sys_* static inline, hence notrace): define the syscall with KLPGEN_SYSCALL_DEFINEn from <klpgen/klpgen.h>, which puts the body into the traceable __x64_sys_* stub".into()
                    } else if !file_traced
                        && self.orig.file_name.is_none_or(|f| f.ends_with(".S"))
                    {
                        format!("{name} is assembly (the object has no C source, and assembly functions get no ftrace entry), so livepatch cannot redirect it; patch its C callers instead (`klpgen callers {name}` lists them), or, for a short routine, re-implement the fixed version in C in a changed caller")
                    } else if !file_traced {
                        format!("no function of this file has an ftrace entry: kbuild builds it without the ftrace flags (a CFLAGS_REMOVE_<file>.o = $(CC_FLAGS_FTRACE) line in its Makefile, or a notrace directory), so none of them can be patched; patch the callers of {name} in other, traced files instead (`klpgen callers {name}` lists them)")
                    } else {
                        "patch its traceable callers instead, or remove notrace from it in the running kernel's next build".into()
                    },
                });
            }
        }
        let (data, data_ignored) = self.data_refusals();
        refusals.extend(data);
        self.ignored.extend(data_ignored);
        let (special, special_ignored) = self.unknown_section_refusals(&results);
        refusals.extend(special);
        refusals.extend(self.runtime_const_refusals(&results));
        self.ignored.extend(special_ignored);
        self.functions = results;
        self.refusals = refusals;
    }

    /// Local functions without an ftrace entry (`static inline` kept out of line, `notrace`),
    /// split parts aside, mapped to what takes their address in either object (`None`: only
    /// direct calls and jumps from functions of the object reach them). A changed one of the
    /// first kind is private: livepatch cannot redirect it, but every caller is in this
    /// object, so patching the callers, which call the carried new version, covers all its
    /// uses. Worked out only when such a function changed (it needs both call graphs).
    fn private_functions(
        &self,
        results: &[FuncResult],
    ) -> HashMap<SymIdx<Patched>, Option<String>> {
        let candidate = |r: &FuncResult| -> Option<SymIdx<Orig>> {
            let o = r.orig?;
            let os = self.orig.sym(o);
            let section = self.orig.sec(os.section?).name;
            (os.bind == crate::model::Bind::Local
                && split_parent(os.name).is_none()
                && !is_init_section(section)
                && !self.orig_traceable(o))
            .then_some(o)
        };
        let mut out = HashMap::new();
        if !results
            .iter()
            .any(|r| matches!(r.verdict, Verdict::Changed(_)) && candidate(r).is_some())
        {
            return out;
        }
        let og = crate::callgraph::CallGraph::build(&[self.orig]);
        let pg = crate::callgraph::CallGraph::build(&[self.patched]);
        // What takes the function's address in one object; a function the call graph does not
        // know (no size, say) cannot be shown to be only called, so it counts as taken.
        let taker = |g: &crate::callgraph::CallGraph<'_>, name: &str, section: &str, value| match g
            .defined_at(name, section, value)
        {
            None => Some(format!(
                "code klpgen cannot analyse ({name} is not a function of the call graph)"
            )),
            Some(f) => g.refs_to(f).first().map(|r| r.by.describe(g)),
        };
        for r in results {
            let Some(o) = candidate(r) else { continue };
            let os = self.orig.sym(o);
            let ps = self.patched.sym(r.patched);
            let osec = self.orig.sec(os.section.expect("defined")).name;
            let psec = self.patched.sec(ps.section.expect("defined")).name;
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
    /// A changed private function (see [`Diff::private_functions`]) is treated the same way:
    /// its callers are patched and call the new version.
    fn callers_of_untraceable_children(
        &self,
        results: &mut [FuncResult],
        by_norm: &HashMap<String, usize>,
        private: &HashMap<SymIdx<Patched>, Option<String>>,
    ) {
        let untraceable_child = |r: &FuncResult| {
            matches!(r.verdict, Verdict::Changed(_))
                && (private.get(&r.patched).is_some_and(|taker| taker.is_none())
                    || split_parent(self.patched.sym(r.patched).name).is_some()
                        && r.orig.is_some_and(|o| !self.orig_traceable(o)))
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
            let child_sec = self.patched.sym(child).section;
            let child_name = self.patched.sym(child).name;
            for j in 0..results.len() {
                if j == ci || results[j].verdict != Verdict::Unchanged {
                    continue;
                }
                let f = self.patched.sym(results[j].patched);
                let refers =
                    targets_of(self.patched, &self.patched_insns, results[j].patched).any(|t| {
                        match t {
                            Target::Symbol { sym, .. } => sym == child,
                            Target::Anon { sec: t, .. } | Target::String { sec: t, .. } => {
                                Some(t) == child_sec
                            }
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
                    if let Some(pi) = parent.filter(|&pi| results[pi].verdict == Verdict::Unchanged)
                    {
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
    fn apply_ignores(&mut self, results: &mut [FuncResult]) {
        if self.annotations.ignore_functions.is_empty()
            && self.annotations.ignore_sections.is_empty()
        {
            return;
        }
        for r in results.iter_mut() {
            let was = match &r.verdict {
                Verdict::Changed(why) => format!("changed ({why})"),
                Verdict::New => "new".to_string(),
                _ => continue,
            };
            let ps = self.patched.sym(r.patched);
            let section = self.patched.sec(ps.section.expect("defined")).name;
            let by = if self.annotations.ignores_function(ps.name) {
                format!(
                    "KLPGEN_IGNORE_FUNCTION({})",
                    crate::annot::source_function(ps.name)
                )
            } else if let Some(p) = self.annotations.ignoring_section(section) {
                format!("KLPGEN_IGNORE_SECTION(\"{p}\")")
            } else {
                continue;
            };
            let name = match r.orig {
                Some(o) => self.orig.sym(o).name,
                None => ps.name,
            };
            self.ignored.push(Ignored {
                symbol: name.into(),
                section: section.into(),
                reason: format!("function {was}; left out as {by} asks"),
            });
            r.verdict = Verdict::Ignored(was);
        }
    }

    /// Unchanged functions `KLPGEN_FORCE_FUNCTION` names (and their split parts) become
    /// changed, so they are replaced too; the refusal checks that follow apply to them.
    fn apply_forces(&mut self, results: &mut [FuncResult]) {
        if self.annotations.force_functions.is_empty() {
            return;
        }
        for r in results.iter_mut() {
            if r.verdict != Verdict::Unchanged || r.orig.is_none() {
                continue;
            }
            let name = self.patched.sym(r.patched).name;
            if self.annotations.forces_function(name) {
                let o = r.orig.expect("checked above");
                self.forced.push(self.orig.sym(o).name.to_string());
                r.verdict = Verdict::Changed(format!(
                    "unchanged, replaced as KLPGEN_FORCE_FUNCTION({}) asks",
                    crate::annot::source_function(name)
                ));
            }
        }
    }

    /// Sections of unknown role whose entries point into code the livepatch replaces.
    /// Entries of an ignored section are recorded as ignored instead.
    fn unknown_section_refusals(&self, results: &[FuncResult]) -> (Vec<Refusal>, Vec<Ignored>) {
        let code: HashSet<SecIdx<Patched>> = results
            .iter()
            .filter(|r| r.verdict.is_included())
            .filter_map(|r| self.patched.sym(r.patched).section)
            .collect();
        let mut out = Vec::new();
        let mut ignored = Vec::new();
        for sec in self.patched.section_indices() {
            let s = self.patched.sec(sec);
            // `.klpgen.*` sections are annotations, read (and checked) by `annot`.
            if !s.is_alloc()
                || crate::plan::is_known_section(s.name)
                || s.name.starts_with(".klpgen.")
                || runtime_const_kind(s.name).is_some()
            {
                continue;
            }
            let hit = s.relocs.iter().find_map(|r| {
                match resolve(self.patched, &self.patched_insns, sec, r) {
                    Target::Symbol { sym, .. } => {
                        let t = self.patched.sym(sym);
                        t.section.filter(|ts| code.contains(ts)).map(|_| t.name)
                    }
                    Target::Anon { sec: ts, .. } | Target::String { sec: ts, .. } => {
                        code.contains(&ts).then(|| self.patched.sec(ts).name)
                    }
                }
            });
            let Some(target) = hit else { continue };
            if let Some(p) = self.annotations.ignoring_section(s.name) {
                ignored.push(Ignored {
                    symbol: target.into(),
                    section: s.name.into(),
                    reason: format!("entries of {} point into changed code ({target}) and are not carried; left out as KLPGEN_IGNORE_SECTION(\"{p}\") asks", s.name),
                });
            } else if s.name == "_error_injection_whitelist" {
                out.push(Refusal {
                    key: format!("refuse.error-injection.{target}"),
                    symbol: target.into(),
                    section: s.name.into(),
                    reason: format!("{target} changed and is on the error-injection list (ALLOW_ERROR_INJECTION, which SYSCALL_DEFINE adds to every syscall stub); the entry names the running kernel's function and a livepatch cannot carry it"),
                    hint: "define a changed syscall with KLPGEN_SYSCALL_DEFINEn from <klpgen/klpgen.h>, which leaves the entry out; for other functions, KLPGEN_IGNORE_SECTION(\"_error_injection_whitelist\") drops the new version's entry".into(),
                });
            } else {
                out.push(Refusal {
                    key: format!("refuse.unknown-special-section.{}", s.name),
                    symbol: target.into(),
                    section: s.name.into(),
                    reason: format!("section {} has entries pointing into changed code ({target}) and klpgen does not know its format, so it cannot carry the right entries", s.name),
                    hint: "if it is an array of fixed-size entries, pass --entry-size SECTION=BYTES to klpgen diff; otherwise report the section so klpgen can learn it".into(),
                });
            }
        }
        (out, ignored)
    }

    /// The entries of the patched object's runtime-constant sections (`runtime_ptr_<sym>`,
    /// `runtime_shift_<sym>`): where each patches code. Entries that point nowhere in the
    /// object are left out (the linker could not resolve them either).
    pub(crate) fn runtime_const_sites(&self) -> Vec<RuntimeConstSite<'d>> {
        let obj = self.patched;
        let mut out = Vec::new();
        for sec in obj.section_indices() {
            let s = obj.sec(sec);
            let Some((kind, variable)) = runtime_const_kind(s.name) else {
                continue;
            };
            for r in &s.relocs {
                // `.long 1b - N - .`: the place patched is the target of the PC-relative
                // entry, symbol plus addend (no instruction lies between in a data section).
                let t = obj.sym(r.sym);
                let Some(code) = t.section else { continue };
                let Some(offset) = u64::try_from(r.addend)
                    .ok()
                    .and_then(|a| t.value.checked_add(a))
                else {
                    continue;
                };
                let func = obj
                    .symbol_at(code, offset)
                    .filter(|&f| obj.sym(f).kind == SymKind::Func);
                out.push(RuntimeConstSite {
                    kind,
                    section: s.name,
                    variable,
                    code,
                    offset,
                    func,
                });
            }
        }
        out
    }

    /// Runtime constants in code the livepatch carries: a pointer constant must be the site
    /// the architecture can rewrite into a load of its variable (the plan does that); a shift
    /// constant cannot be rewritten in place and is refused.
    fn runtime_const_refusals(&self, results: &[FuncResult]) -> Vec<Refusal> {
        let code: HashSet<SecIdx<Patched>> = results
            .iter()
            .filter(|r| r.verdict.is_included())
            .map(|r| r.patched)
            .chain(self.annotations.callbacks.iter().map(|c| c.func))
            .filter_map(|f| self.patched.sym(f).section)
            .collect();
        self.runtime_const_refusals_in(&code)
    }

    /// `runtime_const_refusals` for the runtime constants in the given code sections.
    fn runtime_const_refusals_in(&self, code: &HashSet<SecIdx<Patched>>) -> Vec<Refusal> {
        let mut out: Vec<Refusal> = Vec::new();
        for site in self.runtime_const_sites() {
            if !code.contains(&site.code) {
                continue;
            }
            let func = match site.func {
                Some(f) => match self.matched.get(&f) {
                    Some(&o) => self.orig.sym(o).name,
                    None => self.patched.sym(f).name,
                },
                None => self.patched.sec(site.code).name,
            };
            let at = match site.func {
                Some(f) => format!("{func}+{:#x}", site.offset - self.patched.sym(f).value),
                None => format!("{func}+{:#x}", site.offset),
            };
            let (reason, hint) = match site.kind {
                RuntimeConstKind::Shift => {
                    let used_by = runtime_const_user(site.variable).map_or(String::new(), |u| {
                        format!(" ({u} uses it, so every function that inlines it has one)")
                    });
                    (
                        format!("{at} holds a runtime constant: an entry of {} points at the shift count of runtime_const_shift_right_32(..., {}){used_by}; the kernel writes the real count into vmlinux's code once at boot and never into a module, and the instruction cannot be turned into a load of {} in place, so the copied code would shift by the placeholder", site.section, site.variable, site.variable),
                        format!("make the change in a function that does not inline the code using {}{} (a caller or callee of it); only code that uses runtime_const_shift_right_32 is affected", site.variable, runtime_const_user(site.variable).map_or(String::new(), |u| format!(", i.e. not {u}"))),
                    )
                }
                RuntimeConstKind::Ptr => {
                    let code = self.patched.sec(site.code).data;
                    match X86_64.runtime_ptr_load(code, site.offset) {
                        Ok(_) => continue,
                        Err(why) => (
                            format!("{at} should hold runtime_const_ptr({}) (an entry of {} points there), but {why}; klpgen rewrites only the exact instruction the kernel's macro emits into a load of {}", site.variable, site.section, site.variable),
                            "report the instruction sequence (klpgen explain shows it) so klpgen can learn it; or change a function that does not use this runtime constant".into(),
                        ),
                    }
                }
            };
            let key = format!("refuse.runtime-constant.{func}");
            if out
                .iter()
                .any(|r| r.key == key && r.section == site.section)
            {
                continue;
            }
            out.push(Refusal {
                key,
                symbol: func.into(),
                section: site.section.into(),
                reason,
                hint,
            });
        }
        out
    }

    /// Static locals (`name.N`) the original function used and the new one no longer does.
    fn removed_static_locals(&self, o: SymIdx<Orig>, p: SymIdx<Patched>) -> Vec<String> {
        // Targets are resolved past section symbols (several statics may share a named
        // section such as `__dyndbg` or `.data..once`). Special statics are always fresh
        // copies whose state is deliberately not carried over, so dropping one loses nothing.
        fn locals<S: Side>(obj: &Object<'_, S>, insns: &Insns, f: SymIdx<S>) -> Vec<String> {
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
                    && target.bind == crate::model::Bind::Local
                    && is_static_local(target.name)
                    && !is_special(obj, sym)
                {
                    out.push(normalize(target.name));
                }
            }
            out
        }
        let new = locals(self.patched, &self.patched_insns, p);
        let mut gone: Vec<String> = locals(self.orig, &self.orig_insns, o)
            .into_iter()
            .filter(|l| !new.contains(l))
            .collect();
        gone.sort();
        gone.dedup();
        gone
    }

    /// Changed existing data objects: refused, or recorded as ignored when their section is.
    fn data_refusals(&self) -> (Vec<Refusal>, Vec<Ignored>) {
        let mut out = Vec::new();
        let mut ignored = Vec::new();
        for (&p, &o) in &self.matched {
            let ps = self.patched.sym(p);
            if ps.kind != SymKind::Object {
                continue;
            }
            let Some(psec) = ps.section else { continue };
            let section = self.patched.sec(psec).name;
            if !is_data_section(section) {
                continue;
            }
            if let Some(why) = self.compare_syms(o, p) {
                let name = self.orig.sym(o).name;
                if let Some(pat) = self.annotations.ignoring_section(section) {
                    ignored.push(Ignored {
                        symbol: name.into(),
                        section: section.into(),
                        reason: format!("existing data changed ({why}); the running kernel keeps its copy, as KLPGEN_IGNORE_SECTION(\"{pat}\") asks"),
                    });
                    continue;
                }
                let init = is_init_section(section);
                out.push(Refusal {
                    key: format!(
                        "refuse.{}.{name}",
                        if init { "init-changed" } else { "data-changed" }
                    ),
                    symbol: name.into(),
                    section: section.into(),
                    reason: format!("existing data object changed ({why}); a livepatch replaces code, the running kernel keeps its copy of the data"),
                    hint: "leave the definition as it is and keep new state in a shadow variable (klp_shadow_*), or change it from a post-patch callback".into(),
                });
            }
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        ignored.sort_by(|a, b| a.symbol.cmp(&b.symbol));
        (out, ignored)
    }

    /// Treat an unchanged function as changed, so it is re-emitted from the patched build
    /// and replaced too (`--include-callers`: widening the consistency boundary to callers).
    /// Returns false when the object has no such function, or it is already changed or new;
    /// a refusal when it cannot be patched.
    pub fn include_unchanged(&mut self, orig_name: &str, why: &str) -> Result<bool, Refusal> {
        let Some(idx) = self
            .functions
            .iter()
            .position(|f| f.orig.is_some_and(|o| self.orig.sym(o).name == orig_name))
        else {
            return Ok(false);
        };
        if self.functions[idx].verdict != Verdict::Unchanged {
            return Ok(false);
        }
        let o = self.functions[idx].orig.expect("matched");
        let sym = self.orig.sym(o);
        let section = self.orig.sec(sym.section.expect("defined")).name;
        let refusal = |reason: String, hint: &str| Refusal {
            key: format!("refuse.caller-unpatchable.{orig_name}"),
            symbol: orig_name.into(),
            section: section.into(),
            reason,
            hint: hint.into(),
        };
        if is_init_section(section) {
            return Err(refusal(
                format!("{orig_name} ({why}) is __init/__exit code and cannot be patched"),
                "lower --include-callers, or accept that this caller keeps the old behaviour until it returns",
            ));
        }
        if !self.orig_traceable(o) {
            return Err(refusal(
                format!("{orig_name} ({why}) has no ftrace entry (notrace), so it cannot be patched"),
                "lower --include-callers, or accept that this caller keeps the old behaviour until it returns",
            ));
        }
        let psec = self.patched.sym(self.functions[idx].patched).section;
        if let Some(r) = self
            .runtime_const_refusals_in(&psec.into_iter().collect())
            .into_iter()
            .next()
        {
            return Err(refusal(
                format!("{orig_name} ({why}) cannot be carried: {}", r.reason),
                "lower --include-callers, or accept that this caller keeps the old behaviour until it returns",
            ));
        }
        self.functions[idx].verdict = Verdict::Changed(why.to_string());
        Ok(true)
    }

    /// Names of changed functions as they appear in the original object.
    pub fn changed(&self) -> Vec<&'d str> {
        let mut v: Vec<_> = self
            .functions
            .iter()
            .filter(|f| matches!(f.verdict, Verdict::Changed(_)))
            .map(|f| self.orig.sym(f.orig.expect("matched")).name)
            .collect();
        v.sort_unstable();
        v
    }
    /// Names of new functions as they appear in the patched object.
    pub fn new_functions(&self) -> Vec<&'d str> {
        let mut v: Vec<_> = self
            .functions
            .iter()
            .filter(|f| f.verdict == Verdict::New)
            .map(|f| self.patched.sym(f.patched).name)
            .collect();
        v.sort_unstable();
        v
    }

    pub(crate) fn resolve_patched(
        &self,
        site: SecIdx<Patched>,
        r: &Reloc<Patched>,
    ) -> Target<Patched> {
        resolve(self.patched, &self.patched_insns, site, r)
    }
}

pub(crate) fn describe(k: &RefKey) -> String {
    match k {
        RefKey::Sym(n, a) => format!("{n}{a:+}"),
        RefKey::Str(s, _) => format!("{:?}", String::from_utf8_lossy(s)),
        RefKey::Anon(sec, off, _) => format!(".{sec}{off:+}"),
    }
}

/// Callees whose integer argument is a source line number (`__LINE__`): a function whose only
/// differences are those immediates did not change (the patch just moved lines around).
const LINE_TAKERS: &[&str] = &[
    "__might_sleep",
    "__might_fault",
    "__might_resched",
    "__cant_sleep",
    "__cant_migrate",
    "warn_slowpath_fmt",
    "lockdep_rcu_suspicious",
    "__might_sleep_precision",
];

/// Whether two masked byte images of one function differ only in `mov $imm32, %reg32`
/// instructions that load a line number for a call to one of `LINE_TAKERS`.
fn line_numbers_only(
    obj: &Object<'_, Orig>,
    base: u64,
    ob: &[u8],
    pb: &[u8],
    relocs: &[Reloc<Orig>],
) -> bool {
    use iced_x86::{Code, Decoder, DecoderOptions, Mnemonic};
    if ob.len() != pb.len() {
        return false;
    }
    let decode = |b: &[u8]| -> Vec<iced_x86::Instruction> {
        let mut d = Decoder::with_ip(64, b, 0, DecoderOptions::NONE);
        let mut v = Vec::new();
        while d.can_decode() {
            v.push(d.decode());
        }
        v
    };
    let (oi, pi) = (decode(ob), decode(pb));
    if oi.len() != pi.len() {
        return false;
    }
    // The callee of a call instruction, from the relocation inside it.
    let callee = |insn: &iced_x86::Instruction| -> Option<&str> {
        let (start, end) = (base + insn.ip(), base + insn.ip() + insn.len() as u64);
        relocs
            .iter()
            .find(|r| r.offset >= start && r.offset < end)
            .map(|r| obj.sym(r.sym).name)
    };
    for (k, (a, b)) in oi.iter().zip(&pi).enumerate() {
        let (sa, sb) = (a.ip() as usize, b.ip() as usize);
        if a.len() != b.len() || a.ip() != b.ip() {
            return false;
        }
        if ob[sa..sa + a.len()] == pb[sb..sb + b.len()] {
            continue;
        }
        let is_line_load = a.code() == Code::Mov_r32_imm32
            && b.code() == Code::Mov_r32_imm32
            && a.op0_register() == b.op0_register();
        if !is_line_load {
            return false;
        }
        let feeds_line_taker = oi[k + 1..]
            .iter()
            .take(8)
            .find(|i| i.mnemonic() == Mnemonic::Call)
            .and_then(&callee)
            .is_some_and(|n| LINE_TAKERS.contains(&n));
        if !feeds_line_taker {
            return false;
        }
    }
    true
}

/// Zero relocation fields so that only instruction bytes are compared.
fn mask<S: Side>(bytes: &mut [u8], base: u64, relocs: &[Reloc<S>]) {
    for r in relocs {
        let w = reloc_width(r.r_type).unwrap_or(0) as usize;
        let Some(start) = r
            .offset
            .checked_sub(base)
            .and_then(|s| usize::try_from(s).ok())
        else {
            continue;
        };
        if let Some(field) = bytes.get_mut(start..start.saturating_add(w)) {
            field.fill(0);
        }
    }
}

fn traceable<S: Side>(obj: &Object<'_, S>, insns: &Insns, f: SymIdx<S>) -> bool {
    let s = obj.sym(f);
    let Some(sec) = s.section else { return false };
    let window = X86_64.fentry_window();
    let fentry = X86_64.fentry_symbol();
    // The call to __fentry__ right at the entry.
    let direct = obj
        .sec(sec)
        .relocs_in(s.value, s.value.saturating_add(window.min(s.size.max(1))))
        .iter()
        .any(|r| obj.sym(r.sym).name == fentry);
    if direct {
        return true;
    }
    // Or an __mcount_loc entry pointing into the entry window (the call may be patched out).
    if let Some(mc) = obj.find_section("__mcount_loc") {
        for r in &obj.sec(mc).relocs {
            if let Target::Symbol { sym, addend } = resolve(obj, insns, mc, r) {
                let t = obj.sym(sym);
                if t.section == Some(sec) {
                    let at = i128::from(t.value) + i128::from(addend);
                    let start = i128::from(s.value);
                    if at >= start && at < start + i128::from(window) {
                        return true;
                    }
                }
            }
        }
    }
    false
}

/// All distinct symbol names referenced by relocations of a function (for callers analysis
/// and reports).
pub fn callees<S: Side>(obj: &Object<'_, S>, f: SymIdx<S>) -> HashSet<String> {
    let s = obj.sym(f);
    let mut out = HashSet::new();
    if let Some(sec) = s.section {
        for r in obj
            .sec(sec)
            .relocs_in(s.value, s.value.saturating_add(s.size))
        {
            let t = obj.sym(r.sym);
            if t.kind != SymKind::Section {
                out.insert(t.name.to_string());
            }
        }
    }
    out
}
