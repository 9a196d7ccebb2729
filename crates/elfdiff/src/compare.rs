//! Comparison: whether a correlated function or data object changed, by its bytes with
//! relocation fields masked and by what its relocations point at (symbol name and addend, or
//! string content), never by section offsets that move between builds; and whether a function
//! has an ftrace entry.
//!
//! A string is compared by content: a reference through a section symbol or through gas's
//! local label `.LC<n>` is section + offset (`refs.rs`), so a string that moved to another
//! function's `.rodata.<fn>.str1.1` under another label number is the same string. A function
//! whose versions differ only in moved immediates (`mov $imm, dst`) is settled by `lines.rs`:
//! unchanged when they are all source line numbers (`__LINE__`), the binary half of the
//! line-number tolerance (the source half is the `#line` directives of `patchgen::patchfile`).

use std::collections::HashMap;

use crate::lines::{self, ImmDiff, Pending};
use crate::model::{Object, Orig, Patched, Reloc, Side, SymIdx, SymKind};
use crate::names::is_prefix_symbol;
use crate::refs::{describe, patched_ref_key_in, ref_key, resolve, Insns, Pair, RefKey, Target};

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
/// references; those differing only in moved immediates are settled by `lines.rs`.
pub(crate) fn compare_functions(
    pair: Pair<'_, '_>,
    matched: &HashMap<SymIdx<Patched>, SymIdx<Orig>>,
) -> Vec<FuncResult> {
    let mut results = Vec::new();
    let mut pending = Vec::new();
    for p in pair.patched.symbol_indices() {
        let s = pair.patched.sym(p);
        if s.kind != SymKind::Func || s.section.is_none() || is_prefix_symbol(s.name) {
            continue;
        }
        let orig = matched.get(&p).copied();
        let verdict = match orig {
            None => Verdict::New,
            // A function's special-section entries are part of it (`entries.rs`): they are
            // compared unless its own code already differs for good.
            Some(o) => match pair.compare(o, p) {
                Comparison::Differs(why) => Verdict::Changed(why),
                c => match (pair.compare_entries(o, p), c) {
                    (Some(why), _) => Verdict::Changed(why),
                    (None, Comparison::Immediates(diffs, why)) => {
                        pending.push(Pending {
                            result: results.len(),
                            diffs,
                        });
                        Verdict::Changed(why)
                    }
                    (None, _) => Verdict::Unchanged,
                },
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
    lines::settle(pair, &mut results, &pending);
    results
}

/// How two versions of a symbol compare.
pub(crate) enum Comparison<'d> {
    Same,
    /// Different, with the first difference.
    Differs(String),
    /// Code that differs only in these moved immediates (the first difference given), every
    /// relocation the same: for `lines.rs` to settle.
    Immediates(Vec<ImmDiff<'d>>, String),
}

impl<'d> Pair<'_, 'd> {
    /// Compare the bytes and relocations of two symbols; None when equal, else the first
    /// difference.
    pub(crate) fn compare_syms(&self, o: SymIdx<Orig>, p: SymIdx<Patched>) -> Option<String> {
        match self.compare(o, p) {
            Comparison::Same => None,
            Comparison::Differs(why) | Comparison::Immediates(_, why) => Some(why),
        }
    }

    /// Compare the bytes (relocation fields masked) and relocations of two symbols.
    pub(crate) fn compare(&self, o: SymIdx<Orig>, p: SymIdx<Patched>) -> Comparison<'d> {
        let (os, ps) = (self.orig.sym(o), self.patched.sym(p));
        if os.size != ps.size {
            return Comparison::Differs(format!("size {} -> {}", os.size, ps.size));
        }
        let (Some(osec), Some(psec)) = (os.section, ps.section) else {
            return Comparison::Same;
        };
        let (osx, psx) = (self.orig.sec(osec), self.patched.sec(psec));
        if osx.is_nobits() != psx.is_nobits() {
            return Comparison::Differs("moved between initialised and zeroed data".into());
        }
        let orelocs = osx.relocs_in(os.value, os.value.saturating_add(os.size));
        let prelocs = psx.relocs_in(ps.value, ps.value.saturating_add(ps.size));
        let mut immediates = None;
        // Identical bytes with relocation fields at the same places mask to identical images:
        // the common case needs no masked copies.
        let same_fields = || {
            orelocs.len() == prelocs.len()
                && orelocs.iter().zip(prelocs).all(|(ro, rp)| {
                    ro.offset.wrapping_sub(os.value) == rp.offset.wrapping_sub(ps.value)
                        && self.orig.reloc_kind(ro.r_type).width
                            == self.patched.reloc_kind(rp.r_type).width
                })
        };
        let identical = || self.orig.sym_bytes(o) == self.patched.sym_bytes(p) && same_fields();
        let same_bytes = !osx.is_nobits() && identical();
        // Sections of the same bytes, the function at the same offset in both (function
        // sections: the function and its prefix padding): a section's decoding is a function
        // of its bytes, so the original's serves the patched side too.
        let same_code = same_bytes
            && os.value == ps.value
            && osx.is_exec() == psx.is_exec()
            && osx.relocs.is_empty() == psx.relocs.is_empty()
            && self.orig.machine == self.patched.machine
            && osx.data == psx.data;
        if !osx.is_nobits() && !same_bytes {
            let mut ob = self.orig.sym_bytes(o).to_vec();
            let mut pb = self.patched.sym_bytes(p).to_vec();
            mask(self.orig, &mut ob, os.value, orelocs);
            mask(self.patched, &mut pb, ps.value, prelocs);
            if let Some(i) = ob.iter().zip(&pb).position(|(a, b)| a != b) {
                let why = format!("bytes differ at +{i:#x}");
                let only = osx.is_exec() && orelocs.len() == prelocs.len();
                match only
                    .then(|| moved_immediates_only(self.orig, os.value, &ob, &pb, orelocs))
                    .flatten()
                {
                    Some(diffs) => immediates = Some((diffs, why)),
                    None => return Comparison::Differs(why),
                }
            }
        }
        if orelocs.len() != prelocs.len() {
            return Comparison::Differs(format!(
                "{} relocations -> {}",
                orelocs.len(),
                prelocs.len()
            ));
        }
        for (ro, rp) in orelocs.iter().zip(prelocs) {
            let (offo, offp) = (ro.offset - os.value, rp.offset - ps.value);
            if offo != offp || ro.r_type != rp.r_type {
                return Comparison::Differs(format!(
                    "relocation at +{offo:#x} moved or changed type"
                ));
            }
            if self.same_named_ref_in(osec, ro, psec, rp, same_code) {
                continue;
            }
            let ko = ref_key(self.orig, self.orig_insns, osec, ro);
            let kp = patched_ref_key_in(self, osec, ro, psec, rp, same_code);
            if ko == kp {
                continue;
            }
            // A string that differs only in numerals may spell the line of its user
            // (`__stringify(__LINE__)`: fortify's "field ... at file.c:742"): each such
            // numeral is a moved immediate of the instruction that loads the string.
            let numerals = match (&ko, &kp) {
                (RefKey::Str(a, da), RefKey::Str(b, db)) if da == db => numeral_diffs(a, b),
                _ => None,
            };
            let insn = self.orig_insns.insn_at(self.orig, osec, ro.offset);
            if let (Some(nums), Some((start, end))) = (numerals, insn) {
                let (diffs, _) = immediates.get_or_insert_with(|| {
                    (
                        Vec::new(),
                        format!("string at +{offo:#x} differs in a numeral"),
                    )
                });
                diffs.extend(nums.into_iter().map(|(orig, patched)| ImmDiff {
                    offset: start - os.value,
                    len: end - start,
                    orig,
                    patched,
                    arg: None,
                    callee: None,
                }));
                continue;
            }
            return Comparison::Differs(format!(
                "relocation at +{offo:#x}: {} -> {}",
                describe(&ko),
                describe(&kp)
            ));
        }
        match immediates {
            Some((diffs, why)) => Comparison::Immediates(diffs, why),
            None => Comparison::Same,
        }
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

/// Where two masked byte images of one function (at section offset `base` of the original,
/// `relocs` its relocations) differ only in moved immediates ([`crate::arch::Insn::imm`]),
/// each instruction otherwise the same: those immediates; None when they differ otherwise.
fn moved_immediates_only<'d>(
    obj: &Object<'d, Orig>,
    base: u64,
    ob: &[u8],
    pb: &[u8],
    relocs: &[Reloc<Orig>],
) -> Option<Vec<ImmDiff<'d>>> {
    if ob.len() != pb.len() {
        return None;
    }
    let (oi, pi) = (obj.arch.decode_insns(ob), obj.arch.decode_insns(pb));
    if oi.len() != pi.len() {
        return None;
    }
    // The symbol a call or tail call (from the relocation inside it) calls.
    let callee = |start: u64, len: u64| -> Option<&'d str> {
        let (start, end) = (base + start, base + start + len);
        relocs
            .iter()
            .find(|r| r.offset >= start && r.offset < end)
            .map(|r| obj.sym(r.sym).name)
    };
    let mut out = Vec::new();
    for (k, (a, b)) in oi.iter().zip(&pi).enumerate() {
        if a.len != b.len || a.start != b.start {
            return None;
        }
        let (s, e) = (a.start as usize, (a.start + a.len) as usize);
        if ob[s..e] == pb[s..e] {
            continue;
        }
        let (Some(ia), Some(ib)) = (a.imm, b.imm) else {
            return None;
        };
        if (ia.at, ia.width) != (ib.at, ib.width) || ia.arg != ib.arg {
            return None;
        }
        let (fs, fe) = (s + ia.at as usize, s + (ia.at + ia.width) as usize);
        if fe > e || ob[s..fs] != pb[s..fs] || ob[fe..e] != pb[fe..e] {
            return None;
        }
        let next_call = oi[k + 1..]
            .iter()
            .take(8)
            .filter(|i| i.call)
            .find_map(|i| callee(i.start, i.len));
        out.push(ImmDiff {
            offset: a.start,
            len: a.len,
            orig: ia.value,
            patched: ib.value,
            arg: ia.arg,
            callee: next_call,
        });
    }
    Some(out)
}

/// Where two strings differ only in decimal numerals (maximal digit runs, each at most 9
/// digits): the differing numerals' values in each; None when they differ otherwise.
fn numeral_diffs(a: &[u8], b: &[u8]) -> Option<Vec<(i64, i64)>> {
    // The string cut into alternating text and numerals.
    fn runs(s: &[u8]) -> Vec<&[u8]> {
        let mut out = Vec::new();
        let mut at = 0;
        while at < s.len() {
            let digit = s[at].is_ascii_digit();
            let len = s[at..]
                .iter()
                .position(|c| c.is_ascii_digit() != digit)
                .unwrap_or(s.len() - at);
            out.push(&s[at..at + len]);
            at += len;
        }
        out
    }
    let (ra, rb) = (runs(a), runs(b));
    if ra.len() != rb.len() {
        return None;
    }
    let value = |r: &[u8]| -> Option<i64> {
        (r.len() <= 9 && r.first()?.is_ascii_digit())
            .then(|| std::str::from_utf8(r).ok()?.parse().ok())
            .flatten()
    };
    let mut out = Vec::new();
    for (x, y) in ra.iter().zip(&rb) {
        if x == y {
            continue;
        }
        out.push((value(x)?, value(y)?));
    }
    (!out.is_empty()).then_some(out)
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
    for mc in obj
        .arch
        .ftrace_site_sections()
        .iter()
        .filter_map(|n| obj.find_section(n))
    {
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

#[cfg(test)]
mod tests {
    use super::numeral_diffs;

    #[test]
    fn strings_that_differ_only_in_numerals_give_them() {
        let d = |a: &str, b: &str| numeral_diffs(a.as_bytes(), b.as_bytes());
        assert_eq!(d("at x.c:742", "at x.c:744"), Some(vec![(742, 744)]));
        assert_eq!(d("at x.c:99", "at x.c:101"), Some(vec![(99, 101)]));
        assert_eq!(d("a 1 b 2", "a 3 b 2"), Some(vec![(1, 3)]));
        // Text that differs, a numeral against text, or nothing differing.
        assert_eq!(d("at x.c:742", "at y.c:742"), None);
        assert_eq!(d("n=7", "n=x"), None);
        assert_eq!(d("same 1", "same 1"), None);
        assert_eq!(d("v12345678901", "v12345678902"), None);
    }
}
