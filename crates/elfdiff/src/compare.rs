//! Comparison: whether a correlated function or data object changed, by its bytes with
//! relocation fields masked and by what its relocations point at (symbol name and addend, or
//! string content), never by section offsets that move between builds; and whether a function
//! has an ftrace entry.
//!
//! A string is compared by content: a reference through a section symbol or through gas's
//! local label `.LC<n>` is section + offset (`refs.rs`), so a string that moved to another
//! function's `.rodata.<fn>.str1.1` under another label number is the same string. The
//! binary-level half of the `__LINE__` tolerance is here too (the source-level half is the
//! `#line` directives of `patchgen::patchfile`): a function whose only differences are
//! line-number immediates passed to a known line taker (`might_sleep`, `WARN`, ...) did not
//! change (`line_numbers_only`).

use std::collections::HashMap;

use crate::arch::Insn;
use crate::model::{Object, Orig, Patched, Reloc, Side, SymIdx, SymKind};
use crate::names::is_prefix_symbol;
use crate::refs::{describe, ref_key, resolve, Insns, Pair, Target};

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

/// The first verdict on every function defined in the patched object (prefix labels
/// excluded): new when it has no correlated original, else changed or not by its own bytes and
/// references.
pub(crate) fn compare_functions(
    pair: Pair<'_, '_>,
    matched: &HashMap<SymIdx<Patched>, SymIdx<Orig>>,
) -> Vec<FuncResult> {
    let mut results = Vec::new();
    for p in pair.patched.symbol_indices() {
        let s = pair.patched.sym(p);
        if s.kind != SymKind::Func || s.section.is_none() || is_prefix_symbol(s.name) {
            continue;
        }
        let orig = matched.get(&p).copied();
        let verdict = match orig {
            None => Verdict::New,
            Some(o) => match pair.compare_syms(o, p) {
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
    results
}

impl Pair<'_, '_> {
    /// Compare the bytes and relocations of two symbols; None when equal, else the first
    /// difference.
    pub(crate) fn compare_syms(&self, o: SymIdx<Orig>, p: SymIdx<Patched>) -> Option<String> {
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
            mask(self.orig, &mut ob, os.value, orelocs);
            mask(self.patched, &mut pb, ps.value, prelocs);
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
            let ko = ref_key(self.orig, self.orig_insns, osec, ro);
            let kp = ref_key(self.patched, self.patched_insns, psec, rp);
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
    pub(crate) fn patched_traceable(&self, f: SymIdx<Patched>) -> bool {
        traceable(self.patched, self.patched_insns, f)
    }
    /// Whether a function of the original object has an ftrace entry.
    pub(crate) fn orig_traceable(&self, f: SymIdx<Orig>) -> bool {
        traceable(self.orig, self.orig_insns, f)
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

/// Whether two masked byte images of one function differ only in instructions that load a
/// line number as an argument (x86: `mov $imm32, %reg32`, [`crate::arch::Insn::const_load`])
/// for a call to one of `LINE_TAKERS`.
fn line_numbers_only(
    obj: &Object<'_, Orig>,
    base: u64,
    ob: &[u8],
    pb: &[u8],
    relocs: &[Reloc<Orig>],
) -> bool {
    if ob.len() != pb.len() {
        return false;
    }
    let (oi, pi) = (obj.arch.decode_insns(ob), obj.arch.decode_insns(pb));
    if oi.len() != pi.len() {
        return false;
    }
    // The callee of a call instruction, from the relocation inside it.
    let callee = |insn: &Insn| -> Option<&str> {
        let (start, end) = (base + insn.start, base + insn.start + insn.len);
        relocs
            .iter()
            .find(|r| r.offset >= start && r.offset < end)
            .map(|r| obj.sym(r.sym).name)
    };
    for (k, (a, b)) in oi.iter().zip(&pi).enumerate() {
        if a.len != b.len || a.start != b.start {
            return false;
        }
        let (s, e) = (a.start as usize, (a.start + a.len) as usize);
        if ob[s..e] == pb[s..e] {
            continue;
        }
        let is_line_load = a.const_load.is_some() && a.const_load == b.const_load;
        if !is_line_load {
            return false;
        }
        let feeds_line_taker = oi[k + 1..]
            .iter()
            .take(8)
            .find(|i| i.call)
            .and_then(&callee)
            .is_some_and(|n| LINE_TAKERS.contains(&n));
        if !feeds_line_taker {
            return false;
        }
    }
    true
}

/// Zero relocation fields so that only instruction bytes are compared: only the field's bits
/// where the relocation fills a bit field of an instruction word (the opcode around it still
/// counts: a call that became a jump to the same function is a change).
pub(crate) fn mask<S: Side>(obj: &Object<'_, S>, bytes: &mut [u8], base: u64, relocs: &[Reloc<S>]) {
    let endian = obj.arch.endianness();
    for r in relocs {
        let kind = obj.reloc_kind(r.r_type);
        let Some(start) = r
            .offset
            .checked_sub(base)
            .and_then(|s| usize::try_from(s).ok())
        else {
            continue;
        };
        let end = start.saturating_add(kind.width as usize);
        if let Some(field) = bytes.get_mut(start..end) {
            kind.clear(field, endian);
        }
    }
}

fn traceable<S: Side>(obj: &Object<'_, S>, insns: &Insns, f: SymIdx<S>) -> bool {
    let s = obj.sym(f);
    let Some(sec) = s.section else { return false };
    let window = obj.arch.fentry_window();
    let fentry = obj.arch.fentry_symbol();
    // The call to __fentry__ right at the entry.
    let direct = obj
        .sec(sec)
        .relocs_in(s.value, s.value.saturating_add(window.min(s.size.max(1))))
        .iter()
        .any(|r| obj.sym(r.sym).name == fentry);
    if direct {
        return true;
    }
    // Or an __mcount_loc (or __patchable_function_entries) entry pointing into the entry
    // window (the call may be patched out, or be nops the compiler left).
    for mc in obj.arch.ftrace_site_sections().iter().filter_map(|n| obj.find_section(n)) {
        for r in &obj.sec(mc).relocs {
            if let Target::Symbol { sym, addend } = resolve(obj, insns, mc, r) {
                let t = obj.sym(sym);
                if t.section == Some(sec) {
                    let at = i128::from(t.value) + i128::from(addend);
                    let start = i128::from(s.value);
                    let before = i128::from(obj.arch.fentry_before());
                    if at >= start - before && at < start + i128::from(window) {
                        return true;
                    }
                }
            }
        }
    }
    false
}
