//! Why a function changed: the first differing instruction of each changed function in both
//! versions (disassembled, relocation targets shown by name), whether the difference is only in
//! where a relocation points, and the source lines and inlined callees at that point from the
//! objects' DWARF (relocations applied, addresses kept apart per function section).
//!
//! Every function section starts at 0 in a `.o`, so DWARF addresses are tagged by section after
//! the debug relocations are applied. Given the lines the patches changed (original numbering,
//! `patchgen::patchfile::changed_old_lines`), [`explain_with`] attributes each line-table row
//! of a changed function's original code on a changed line to the function whose definition
//! holds that line (`DW_AT_decl_line` of the unit's subprograms; inlined ranges only where none
//! is known). That tells the function's own change (`own-code`) from an inlined callee's
//! (`inlined-callee`, `changed_callees`) and from no changed line at all (`indirect`: a macro,
//! or the compiler's view of a changed callee). The comparison reads the line tables alone
//! ([`DwarfIndex::line_tables`]) to tell moved line numbers from changes (`lines.rs`).

use std::collections::HashMap;
use std::fmt;

use gimli::{AttributeValue, EndianSlice, Reader as _, RelocateReader, RunTimeEndian};
use serde::Serialize;

use crate::arch::OperandLabel;
use crate::diff::{Diff, FuncResult, Refusal, Target, Verdict};
use crate::error::Error;
use crate::model::{Object, Orig, Patched, Reloc, SecIdx, Side, SymIdx};
use crate::names::normalize;
use crate::refs::{describe, label_base, ref_key, resolve, targets_of, Insns};

/// A source position from a DWARF line table.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct SourceLoc {
    /// The file, relative to the common root of the object's source files where there is one.
    pub file: String,
    pub line: u64,
}

impl fmt::Display for SourceLoc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file, self.line)
    }
}

/// A function inlined at some instruction.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct InlinedFrame {
    /// The inlined function.
    pub function: String,
    /// Where it was inlined (the call site).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub call_site: Option<SourceLoc>,
}

/// One version's side of a difference.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Site {
    /// The instruction (Intel syntax, relocation targets named); None where this version's
    /// function has already ended.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub insn: Option<String>,
    /// Its bytes in hex (relocation fields are zero in a relocatable object).
    pub bytes: String,
    /// The source line of the instruction.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub location: Option<SourceLoc>,
    /// Functions inlined at this instruction, outermost first.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub inlined: Vec<InlinedFrame>,
}

/// What differs at the first difference.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum DiffKind {
    /// The instruction bytes differ (relocation fields masked).
    Instruction,
    /// The bytes are equal, but a relocation points at something else.
    Relocation,
    /// One version's function ends here, the other's goes on.
    Length,
    /// The function's own code is the same (it changed because of a split part).
    None,
}

/// Why the function is in the livepatch.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Cause {
    /// The difference is in the function's own code.
    OwnCode,
    /// The first difference lies, in the patched version, in code inlined from another
    /// function: the callee changed, or what its call site passes it did.
    InlinedCallee,
    /// Only a split part (`.cold`, `.part`) changed, or it is the split part of a changed
    /// function.
    SplitPart,
    /// It calls a changed function that livepatch can only reach through its callers: a split
    /// part without an ftrace entry, or a private function (local, no ftrace entry, only
    /// called directly).
    Callee,
    /// None of its source lines, nor those of code inlined into it, are among the patch's
    /// (known when the patch is): a changed macro, type or constant it uses, or the compiler's
    /// changed view of a changed callee (a clone that is gone, what it clobbers), the changed
    /// functions it calls being in `changed_callees`.
    Indirect,
    /// It is a new function.
    New,
}

/// Where the changed source lines in a function's code come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceCause {
    /// Its own lines.
    Own,
    /// Only lines of these functions, inlined into it.
    Inlined(Vec<String>),
    /// No changed line at all.
    Untouched,
}

/// Both targets of a relocation that differs.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct RelocChange {
    pub orig: String,
    pub patched: String,
}

/// Why one function is changed (or new).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Explanation {
    /// The name in the original object (the patched one for new functions).
    pub function: String,
    /// The name in the patched object, when it differs (clone numbers).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub patched_name: Option<String>,
    /// The function's section in the patched object.
    pub section: String,
    /// The differ's one-line verdict.
    pub summary: String,
    pub cause: Cause,
    pub kind: DiffKind,
    /// Offset from the function start of the instruction holding the first difference (the
    /// same in both versions: everything before it is identical); `summary` names the byte.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub offset: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub orig: Option<Site>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub patched: Option<Site>,
    /// For relocation differences: what each version points at.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub relocation: Option<RelocChange>,
    /// Functions inlined at the first difference (either version), innermost first.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub inlined_callees: Vec<String>,
    /// Inlined functions whose source lines the patch changed, when the function's own lines
    /// are untouched (`inlined-callee`), or the changed functions it calls when no line of it
    /// changed (`indirect`). Known when the patch is (`klpgen build`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub changed_callees: Vec<String>,
    /// The key of the refusal that covers this function, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refused: Option<String>,
}

/// Explanations for every changed and new function of a diff, plus its refusals.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, Default)]
pub struct Explain {
    pub functions: Vec<Explanation>,
    pub refusals: Vec<Refusal>,
    /// Why source lines are missing (no DWARF, unreadable DWARF).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// The lines a source patch changed in one file, in the original file's numbering: what the
/// original object's line table can be matched against.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChangedLines {
    /// The file's path in the source tree (`fs/read_write.c`, `include/linux/fs.h`).
    pub file: String,
    /// Half-open ranges of 1-based line numbers: removed or replaced lines, and for an
    /// insertion the lines on either side of it.
    pub lines: Vec<(u64, u64)>,
}

impl ChangedLines {
    fn contains(&self, line: u64) -> bool {
        self.lines.iter().any(|&(a, b)| a <= line && line < b)
    }
}

/// Whether a line table's file name (absolute, or shortened to the object's common root) and
/// a path in the source tree name the same file.
fn same_source_file(dwarf: &str, tree: &str) -> bool {
    let clean = |p: &str| {
        p.trim_start_matches("./")
            .replace("/./", "/")
            .trim_start_matches('/')
            .to_string()
    };
    let (d, t) = (clean(dwarf), clean(tree));
    !d.is_empty()
        && !t.is_empty()
        && (d == t || d.ends_with(&format!("/{t}")) || t.ends_with(&format!("/{d}")))
}

/// Explain every changed and new function of `diff`. DWARF is optional: without it (or when it
/// cannot be read) lines are left out and a warning says why.
pub fn explain(diff: &Diff<'_, '_>) -> Explain {
    explain_with(diff, &[])
}

/// [`explain`], knowing which source lines the patch changed: a changed function whose own
/// lines (in the original object's line table) the patch did not touch, but which holds inlined
/// code from lines it did, is explained by those inlined callees (`Cause::InlinedCallee`,
/// `changed_callees`), however far from the first differing instruction they are (register
/// allocation and branch offsets usually differ first).
pub fn explain_with(diff: &Diff<'_, '_>, changed: &[ChangedLines]) -> Explain {
    let mut warnings = Vec::new();
    let mut index = |obj_label: &str, r: Result<Option<DwarfIndex>, Error>| match r {
        Ok(Some(i)) => Some(i),
        Ok(None) => {
            warnings.push(format!(
                "{obj_label}: no DWARF line table; source lines are not shown (build with -g)"
            ));
            None
        }
        Err(e) => {
            warnings.push(format!("{e}; source lines are not shown"));
            None
        }
    };
    let oidx = index(&diff.orig.label, DwarfIndex::build(diff.orig));
    let pidx = index(&diff.patched.label, DwarfIndex::build(diff.patched));

    let mut functions = Vec::new();
    for f in &diff.functions {
        let ps = diff.patched.sym(f.patched);
        let Some(psec) = ps.section else { continue };
        let section = diff.patched.sec(psec).name.to_string();
        match (&f.verdict, f.orig) {
            (Verdict::New, _) => {
                let site = site_at(
                    diff.patched,
                    &diff.patched_insns,
                    pidx.as_ref(),
                    f.patched,
                    0,
                );
                functions.push(Explanation {
                    function: ps.name.to_string(),
                    patched_name: None,
                    section,
                    summary: "new function".into(),
                    cause: Cause::New,
                    kind: DiffKind::None,
                    offset: None,
                    orig: None,
                    patched: site,
                    relocation: None,
                    inlined_callees: Vec::new(),
                    changed_callees: Vec::new(),
                    refused: None,
                });
            }
            (Verdict::Changed(why), Some(o)) => {
                let idx = (oidx.as_ref(), pidx.as_ref());
                functions.push(explain_changed(diff, idx, changed, f, o, why, section));
            }
            _ => {}
        }
    }
    functions.sort_by(|a, b| a.function.cmp(&b.function));
    Explain {
        functions,
        refusals: diff.refusals.clone(),
        warnings,
    }
}

/// The explanation of changed function `f` (`o` in the original object; `why`, the
/// differ's verdict; `section`, its section in the patched object).
fn explain_changed(
    diff: &Diff<'_, '_>,
    (oidx, pidx): (Option<&DwarfIndex>, Option<&DwarfIndex>),
    changed: &[ChangedLines],
    f: &FuncResult,
    o: SymIdx<Orig>,
    why: &str,
    section: String,
) -> Explanation {
    let ps = diff.patched.sym(f.patched);
    let name = diff.orig.sym(o).name;
    let refused = diff
        .refusals
        .iter()
        .find(|r| r.symbol == name)
        .map(|r| r.key.clone());
    let mut e = Explanation {
        function: name.to_string(),
        patched_name: (ps.name != name).then(|| ps.name.to_string()),
        section,
        summary: why.to_string(),
        cause: Cause::OwnCode,
        kind: DiffKind::None,
        offset: None,
        orig: None,
        patched: None,
        relocation: None,
        inlined_callees: Vec::new(),
        changed_callees: Vec::new(),
        refused,
    };
    match first_difference(diff, o, f.patched) {
        Some(d) => {
            e.kind = d.kind;
            e.offset = Some(d.offset);
            e.relocation = d.relocation;
            e.orig = Some(describe_site(
                diff.orig,
                &diff.orig_insns,
                oidx,
                o,
                d.offset,
                d.orig,
            ));
            e.patched = Some(describe_site(
                diff.patched,
                &diff.patched_insns,
                pidx,
                f.patched,
                d.offset,
                d.patched,
            ));
            for s in [&e.patched, &e.orig].into_iter().flatten() {
                for fr in s.inlined.iter().rev() {
                    if !e.inlined_callees.contains(&fr.function) {
                        e.inlined_callees.push(fr.function.clone());
                    }
                }
            }
            // Judged by the new code (what the livepatch carries), or by the old
            // where the new function has already ended.
            let primary = e
                .patched
                .as_ref()
                .filter(|s| s.insn.is_some())
                .or(e.orig.as_ref());
            if primary.is_some_and(|s| !s.inlined.is_empty()) {
                e.cause = Cause::InlinedCallee;
            }
        }
        None => {
            if f.via_callee {
                e.cause = Cause::Callee;
            } else if f.via_child {
                e.cause = Cause::SplitPart;
            }
        }
    }
    let os = diff.orig.sym(o);
    let by_lines = match (oidx, os.section) {
        (Some(idx), Some(sec)) if !changed.is_empty() && !f.via_callee => idx.source_cause(
            crate::annot::source_function(name),
            diff.orig.sec(sec).elf_index,
            os.value,
            os.size,
            changed,
        ),
        _ => None,
    };
    match by_lines {
        Some(SourceCause::Own) => e.cause = Cause::OwnCode,
        Some(SourceCause::Inlined(names)) => {
            e.cause = Cause::InlinedCallee;
            e.changed_callees = names;
        }
        Some(SourceCause::Untouched) if !f.via_child => {
            e.cause = Cause::Indirect;
            e.changed_callees = changed_calls(diff, o, f.patched);
        }
        _ => {}
    }
    e
}

/// The changed functions (clone numbers dropped) that either version of a function calls or
/// otherwise references, itself aside, sorted.
fn changed_calls(diff: &Diff<'_, '_>, o: SymIdx<Orig>, p: SymIdx<Patched>) -> Vec<String> {
    let changed: std::collections::HashSet<String> = diff
        .functions
        .iter()
        .filter(|r| matches!(r.verdict, Verdict::Changed(_)))
        .filter_map(|r| r.orig)
        .map(|o| normalize(diff.orig.sym(o).name))
        .collect();
    let own = normalize(diff.orig.sym(o).name);
    let mut out: Vec<String> = Vec::new();
    fn names<S: Side>(obj: &Object<'_, S>, insns: &Insns, f: SymIdx<S>) -> Vec<String> {
        targets_of(obj, insns, f)
            .filter_map(|t| match t {
                Target::Symbol { sym, .. } => Some(normalize(obj.sym(sym).name)),
                _ => None,
            })
            .collect()
    }
    for name in names(diff.orig, &diff.orig_insns, o)
        .into_iter()
        .chain(names(diff.patched, &diff.patched_insns, p))
    {
        if name != own && changed.contains(&name) && !out.contains(&name) {
            out.push(name);
        }
    }
    out.sort();
    out
}

/// The first point where two versions of a function differ.
struct Difference {
    offset: u64,
    kind: DiffKind,
    /// The length of each version's instruction there (None where its function has ended).
    orig: Option<u64>,
    patched: Option<u64>,
    relocation: Option<RelocChange>,
}

/// Walk both functions instruction by instruction from their start; the first pair that differs
/// in length, in bytes with relocation fields masked, or in relocation targets (compared as the
/// differ compares them) is the difference.
fn first_difference(
    diff: &Diff<'_, '_>,
    o: SymIdx<crate::Orig>,
    p: SymIdx<crate::Patched>,
) -> Option<Difference> {
    let (os, ps) = (diff.orig.sym(o), diff.patched.sym(p));
    let (osec, psec) = (os.section?, ps.section?);
    let (obytes, pbytes) = (diff.orig.sym_bytes(o), diff.patched.sym_bytes(p));
    let oinsns = diff.orig.arch.decode(obytes).insns;
    let pinsns = diff.patched.arch.decode(pbytes).insns;
    let length = |(start, end): (u64, u64)| end - start;
    let mut next = 0;
    loop {
        let k = next;
        next += 1;
        let (oi, pi) = match (oinsns.get(k).copied(), pinsns.get(k).copied()) {
            (None, None) => return None,
            (Some(oi), Some(pi)) => (oi, pi),
            (oi, pi) => {
                let offset = oi.or(pi).map_or(0, |i| i.0);
                return Some(Difference {
                    offset,
                    kind: DiffKind::Length,
                    orig: oi.map(length),
                    patched: pi.map(length),
                    relocation: None,
                });
            }
        };
        let off = oi.0;
        let instruction = |kind, relocation| {
            Some(Difference {
                offset: off,
                kind,
                orig: Some(length(oi)),
                patched: Some(length(pi)),
                relocation,
            })
        };
        if length(oi) != length(pi) {
            return instruction(DiffKind::Instruction, None);
        }
        let len = length(oi);
        let orelocs = diff
            .orig
            .sec(osec)
            .relocs_in(os.value + off, os.value + off + len);
        let prelocs = diff
            .patched
            .sec(psec)
            .relocs_in(ps.value + off, ps.value + off + len);
        let ob = masked(diff.orig, obytes, off, len, os.value, orelocs);
        let pb = masked(diff.patched, pbytes, off, len, ps.value, prelocs);
        if ob != pb {
            return instruction(DiffKind::Instruction, None);
        }
        let same_sites = orelocs.len() == prelocs.len()
            && orelocs
                .iter()
                .zip(prelocs)
                .all(|(a, b)| a.offset - os.value == b.offset - ps.value && a.r_type == b.r_type);
        let same_targets = same_sites
            && orelocs.iter().zip(prelocs).all(|(a, b)| {
                ref_key(diff.orig, &diff.orig_insns, osec, a)
                    == ref_key(diff.patched, &diff.patched_insns, psec, b)
            });
        if !same_targets {
            let (ol, ok) = reloc_labels(diff.orig, &diff.orig_insns, osec, orelocs);
            let (pl, pk) = reloc_labels(diff.patched, &diff.patched_insns, psec, prelocs);
            // Where the readable forms look the same, add the differ's descriptions, which
            // differ (an addend measured in another frame, other bytes behind a section).
            let change = if ol == pl {
                RelocChange {
                    orig: format!("{ol} ({ok})"),
                    patched: format!("{pl} ({pk})"),
                }
            } else {
                RelocChange {
                    orig: ol,
                    patched: pl,
                }
            };
            return instruction(DiffKind::Relocation, Some(change));
        }
    }
}

/// The bytes of one instruction with its relocation fields zeroed.
fn masked<S: Side>(
    obj: &Object<'_, S>,
    code: &[u8],
    off: u64,
    len: u64,
    base: u64,
    relocs: &[Reloc<S>],
) -> Vec<u8> {
    let mut b = code
        .get(off as usize..(off + len) as usize)
        .unwrap_or(&[])
        .to_vec();
    let endian = obj.arch.endianness();
    for r in relocs {
        let kind = obj.reloc_kind(r.r_type);
        let start = (r.offset - base).saturating_sub(off) as usize;
        let end = start.saturating_add(kind.width as usize);
        if let Some(field) = b.get_mut(start..end) {
            kind.clear(field, endian);
        }
    }
    b
}

/// Readable targets of a relocation list, and the differ's own descriptions of them.
fn reloc_labels<S: Side>(
    obj: &Object<'_, S>,
    insns: &Insns,
    sec: SecIdx<S>,
    relocs: &[Reloc<S>],
) -> (String, String) {
    if relocs.is_empty() {
        return ("(no relocation)".into(), "(no relocation)".into());
    }
    let labels: Vec<String> = relocs
        .iter()
        .map(|r| reloc_label(obj, insns, sec, r))
        .collect();
    let keys: Vec<String> = relocs
        .iter()
        .map(|r| describe(&ref_key(obj, insns, sec, r)))
        .collect();
    (labels.join(", "), keys.join(", "))
}

/// A readable name for what a relocation points at: `symbol+off` with the offset the CPU really
/// uses (PC-relative bias included), a quoted string for merged strings, `section+off` else.
fn reloc_label<S: Side>(
    obj: &Object<'_, S>,
    insns: &Insns,
    sec: SecIdx<S>,
    r: &Reloc<S>,
) -> String {
    let bias = if obj.reloc_kind(r.r_type).pc_relative {
        insns.bias(obj, sec, r)
    } else {
        0
    };
    let off = |n: i64| match n {
        0 => String::new(),
        n if n < 0 => format!("-{:#x}", n.unsigned_abs()),
        n => format!("+{n:#x}"),
    };
    match resolve(obj, insns, sec, r) {
        Target::Symbol { sym, addend } => {
            format!("{}{}", obj.sym(sym).name, off(addend.wrapping_add(bias)))
        }
        Target::String { sec: ssec, start } => {
            let s = obj.sec(ssec);
            let text = s.data.get(start as usize..).unwrap_or(&[]);
            let end = text.iter().position(|&b| b == 0).unwrap_or(text.len());
            // Malformed input may overflow; real addends and biases are small.
            let delta = label_base(obj, r)
                .wrapping_add(r.addend)
                .wrapping_add(bias)
                .wrapping_sub(start as i64);
            format!(
                "{}{} {:?}",
                s.name,
                off(delta),
                String::from_utf8_lossy(&text[..end])
            )
        }
        Target::Anon { sec: asec, offset } => format!("{}{}", obj.sec(asec).name, off(offset)),
    }
}

/// The site of a function at `offset`: decode the instruction there.
fn site_at<S: Side>(
    obj: &Object<'_, S>,
    insns: &Insns,
    idx: Option<&DwarfIndex>,
    f: SymIdx<S>,
    offset: u64,
) -> Option<Site> {
    let bytes = obj.sym_bytes(f);
    let code = bytes.get(offset as usize..)?;
    let len = obj.arch.decode(code).insns.first().map(|&(s, e)| e - s);
    Some(describe_site(obj, insns, idx, f, offset, len))
}

fn describe_site<S: Side>(
    obj: &Object<'_, S>,
    insns: &Insns,
    idx: Option<&DwarfIndex>,
    f: SymIdx<S>,
    offset: u64,
    insn_len: Option<u64>,
) -> Site {
    let sym = obj.sym(f);
    let Some(sec) = sym.section else {
        return Site {
            insn: None,
            bytes: String::new(),
            location: None,
            inlined: Vec::new(),
        };
    };
    let elf_sec = obj.sec(sec).elf_index;
    let at = sym.value + offset;
    let (text, bytes) = match insn_len {
        Some(len) => {
            let relocs = obj.sec(sec).relocs_in(at, at + len);
            let code = obj.sym_bytes(f);
            let raw = code
                .get(offset as usize..(offset + len) as usize)
                .unwrap_or(&[]);
            let hex: Vec<String> = raw.iter().map(|b| format!("{b:02x}")).collect();
            (
                format_insn(obj, insns, sec, code, offset, at, relocs),
                hex.join(" "),
            )
        }
        None => (None, String::new()),
    };
    // Past the end of a function, the last instruction's line is the closest one.
    let line_at = if insn_len.is_some() || at == 0 {
        at
    } else {
        at - 1
    };
    Site {
        insn: text,
        bytes,
        location: idx.and_then(|x| x.location(elf_sec, line_at)),
        inlined: idx.map_or_else(Vec::new, |x| x.inlined_at(elf_sec, line_at)),
    }
}

/// The instruction at `offset` of a function's `code` (section offset `at`) in the machine's
/// assembly syntax, the targets of `relocs` (those inside it) named in place of their fields.
fn format_insn<S: Side>(
    obj: &Object<'_, S>,
    insns: &Insns,
    sec: SecIdx<S>,
    code: &[u8],
    offset: u64,
    at: u64,
    relocs: &[Reloc<S>],
) -> Option<String> {
    let labels: Vec<OperandLabel> = relocs
        .iter()
        .map(|r| OperandLabel {
            pc_relative: obj.reloc_kind(r.r_type).pc_relative,
            text: reloc_label(obj, insns, sec, r),
        })
        .collect();
    let d = obj.arch.disassemble(code, offset, &labels)?;
    let mut out = d.text;
    if d.labels_used < labels.len() {
        // Some relocation field was not an operand the disassembly names: name them all.
        let names: Vec<&str> = labels.iter().map(|l| l.text.as_str()).collect();
        out.push_str(&format!("  ; reloc at +{:#x}: {}", at, names.join(", ")));
    }
    Some(out)
}

// ---------------------------------------------------------------------------------------------
// DWARF of a relocatable object.
//
// In a `.o` built with -ffunction-sections every function section starts at address 0, so plain
// relocated addresses would put all functions on top of each other. Addresses relocated against
// a symbol are tagged with the ELF index of the symbol's section in bits 40 and up; the line
// program and DIE ranges then carry the section along.

const TAG_SHIFT: u32 = 40;
const OFFSET_MASK: u64 = (1 << TAG_SHIFT) - 1;

fn tagged(elf_sec: usize, offset: u64) -> u64 {
    ((elf_sec as u64) << TAG_SHIFT) | (offset & OFFSET_MASK)
}

/// What a relocation at an offset of a debug section makes of its field.
type RelocAt<'a> = dyn Fn(u64) -> Option<(Option<usize>, u64)> + 'a;

/// Relocations of one debug section: offset → (tag section, S + A), looked up in the
/// object's own sorted relocations when gimli reads a relocated field (nothing is copied: a
/// reader of the line tables alone touches few of `.debug_info`'s many). PC-relative ones
/// (`.eh_frame`-style) are left alone.
#[derive(Default)]
struct RelocMap<'a> {
    find: Option<Box<RelocAt<'a>>>,
}

impl std::fmt::Debug for RelocMap<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RelocMap")
    }
}

impl<'a> RelocMap<'a> {
    fn new<S: Side>(obj: &'a Object<'_, S>, sec: SecIdx<S>) -> Result<Self, Error> {
        let relocs = obj.debug_relocs(sec)?;
        let find = move |offset: u64| {
            let r = &relocs[relocs.binary_search_by_key(&offset, |r| r.offset).ok()?];
            if obj.reloc_kind(r.r_type).pc_relative {
                return None;
            }
            let s = obj.sym(r.sym);
            let value = s.value.wrapping_add(r.addend as u64);
            Some((s.section.map(|t| obj.sec(t).elf_index), value))
        };
        Ok(RelocMap {
            find: Some(Box::new(find)),
        })
    }
    fn find(&self, offset: usize) -> Option<(Option<usize>, u64)> {
        self.find.as_ref()?(offset as u64)
    }
}

impl gimli::Relocate<usize> for &RelocMap<'_> {
    fn relocate_address(&self, offset: usize, value: u64) -> gimli::Result<u64> {
        Ok(match self.find(offset) {
            Some((Some(sec), v)) => tagged(sec, v),
            Some((None, v)) => v,
            None => value,
        })
    }
    fn relocate_offset(&self, offset: usize, value: usize) -> gimli::Result<usize> {
        Ok(match self.find(offset) {
            Some((_, v)) => usize::try_from(v).map_err(|_| gimli::Error::OffsetOutOfBounds)?,
            None => value,
        })
    }
}

type Rdr<'a> = RelocateReader<EndianSlice<'a, RunTimeEndian>, &'a RelocMap<'a>>;

struct Seq {
    start: u64,
    end: u64,
    /// (address, file id, line), sorted by address.
    rows: Vec<(u64, usize, u64)>,
}

struct InlinedRange {
    start: u64,
    end: u64,
    depth: isize,
    function: String,
    call_site: Option<(usize, u64)>,
}

/// The address ranges of a DIE (`DW_AT_low_pc` with `DW_AT_high_pc` as an address or as a
/// size, or `DW_AT_ranges`), as gimli's `die_ranges` reads them, except that a size running past
/// the end of the address space gives no range instead of an overflow (gimli adds unchecked;
/// found by the `explain_pair` fuzz target).
fn die_ranges<'a>(
    dwarf: &gimli::Dwarf<Rdr<'a>>,
    unit: &gimli::Unit<Rdr<'a>>,
    entry: &gimli::DebuggingInformationEntry<'_, '_, Rdr<'a>>,
) -> gimli::Result<Vec<(u64, u64)>> {
    let (mut low, mut high, mut size) = (None, None, None);
    let mut attrs = entry.attrs();
    while let Some(attr) = attrs.next()? {
        match attr.name() {
            gimli::DW_AT_low_pc => low = dwarf.attr_address(unit, attr.value())?,
            gimli::DW_AT_high_pc => match attr.value() {
                AttributeValue::Udata(n) => size = Some(n),
                v => high = dwarf.attr_address(unit, v)?,
            },
            gimli::DW_AT_ranges => {
                if let Some(mut list) = dwarf.attr_ranges(unit, attr.value())? {
                    let mut out = Vec::new();
                    while let Some(r) = list.next()? {
                        out.push((r.begin, r.end));
                    }
                    return Ok(out);
                }
            }
            _ => {}
        }
    }
    let end = match size {
        Some(n) => low.and_then(|l: u64| l.checked_add(n)),
        None => high,
    };
    Ok(low.zip(end).into_iter().collect())
}

/// Line rows and inlined-subroutine ranges of one object, keyed by tagged address.
pub struct DwarfIndex {
    files: Vec<String>,
    seqs: Vec<Seq>,
    inlined: Vec<InlinedRange>,
    /// Function definitions by where they start: (file id, `DW_AT_decl_line`, name), sorted.
    decls: Vec<(usize, u64, String)>,
}

fn dwarf_err(label: &str, e: impl fmt::Display) -> Error {
    Error::Dwarf {
        what: label.to_string(),
        detail: e.to_string(),
    }
}

impl DwarfIndex {
    /// Read the line tables and inlined subroutines of a relocatable object; None when it has
    /// no DWARF.
    pub fn build<S: Side>(obj: &Object<'_, S>) -> Result<Option<DwarfIndex>, Error> {
        Self::read(obj, true)
    }

    /// Only the line tables (no inlined subroutines, no definitions): what the comparison
    /// asks of a function whose versions differ only in immediates (`lines.rs`), without the
    /// cost of walking every DIE. None when the object has no DWARF.
    pub fn line_tables<S: Side>(obj: &Object<'_, S>) -> Result<Option<DwarfIndex>, Error> {
        Self::read(obj, false)
    }

    fn read<S: Side>(obj: &Object<'_, S>, dies: bool) -> Result<Option<DwarfIndex>, Error> {
        let label = obj.label.as_str();
        if obj.find_section(".debug_info").is_none() || obj.find_section(".debug_line").is_none() {
            return Ok(None);
        }
        for s in &obj.sections {
            if s.name.starts_with(".debug_")
                && s.sh_flags & u64::from(object::elf::SHF_COMPRESSED) != 0
            {
                return Err(dwarf_err(
                    label,
                    format!("{} is compressed, which is not supported", s.name),
                ));
            }
        }
        let empty = RelocMap::default();
        let ids = [
            gimli::SectionId::DebugAbbrev,
            gimli::SectionId::DebugAddr,
            gimli::SectionId::DebugInfo,
            gimli::SectionId::DebugLine,
            gimli::SectionId::DebugLineStr,
            gimli::SectionId::DebugRanges,
            gimli::SectionId::DebugRngLists,
            gimli::SectionId::DebugStr,
            gimli::SectionId::DebugStrOffsets,
        ];
        let maps: Vec<(gimli::SectionId, Option<SecIdx<S>>, RelocMap<'_>)> = ids
            .iter()
            .map(|&id| {
                let sec = obj.find_section(id.name());
                let map = match sec {
                    Some(s) => RelocMap::new(obj, s)?,
                    None => RelocMap::default(),
                };
                Ok((id, sec, map))
            })
            .collect::<Result<_, Error>>()?;
        // The object's byte order (s390x is big-endian).
        let endian = match obj.arch.endianness() {
            object::Endianness::Little => RunTimeEndian::Little,
            object::Endianness::Big => RunTimeEndian::Big,
        };
        let load = |id: gimli::SectionId| -> Result<Rdr<'_>, gimli::Error> {
            let (data, map) = match maps.iter().find(|m| m.0 == id) {
                Some((_, Some(sec), map)) => (obj.sec(*sec).data, map),
                _ => (&[][..], &empty),
            };
            Ok(RelocateReader::new(EndianSlice::new(data, endian), map))
        };
        let dwarf = gimli::Dwarf::load(load).map_err(|e| dwarf_err(label, e))?;
        let mut idx = DwarfIndex {
            files: Vec::new(),
            seqs: Vec::new(),
            inlined: Vec::new(),
            decls: Vec::new(),
        };
        let mut units = dwarf.units();
        while let Some(header) = units.next().map_err(|e| dwarf_err(label, e))? {
            let unit = dwarf.unit(header).map_err(|e| dwarf_err(label, e))?;
            idx.read_unit(&dwarf, &unit, dies)
                .map_err(|e| dwarf_err(label, e))?;
        }
        idx.shorten_paths();
        idx.seqs.sort_by_key(|s| s.start);
        idx.decls.sort();
        Ok(Some(idx))
    }

    fn read_unit<'a>(
        &mut self,
        dwarf: &gimli::Dwarf<Rdr<'a>>,
        unit: &gimli::Unit<Rdr<'a>>,
        dies: bool,
    ) -> gimli::Result<()> {
        let comp_dir = unit
            .comp_dir
            .as_ref()
            .and_then(|d| d.to_string_lossy().ok())
            .map(|d| d.into_owned());
        // File ids of this unit: line-table file index → our file id.
        let mut file_ids: HashMap<u64, usize> = HashMap::new();
        if let Some(program) = unit.line_program.clone() {
            let header = program.header().clone();
            let mut rows = program.rows();
            let mut current: Option<Seq> = None;
            let mut last_file: Option<(u64, usize)> = None;
            while let Some((_, row)) = rows.next_row()? {
                let addr = row.address();
                if row.end_sequence() {
                    if let Some(mut s) = current.take() {
                        s.end = addr;
                        self.seqs.push(s);
                    }
                    continue;
                }
                // Rows mostly keep the file of the row before: ask the map only on a switch.
                let fid = match last_file {
                    Some((fi, fid)) if fi == row.file_index() => fid,
                    _ => {
                        let fid = self.file_id(
                            &mut file_ids,
                            dwarf,
                            unit,
                            &header,
                            row.file_index(),
                            comp_dir.as_deref(),
                        );
                        last_file = Some((row.file_index(), fid));
                        fid
                    }
                };
                let line = row.line().map_or(0, |l| l.get());
                let seq = current.get_or_insert(Seq {
                    start: addr,
                    end: addr,
                    rows: Vec::new(),
                });
                seq.rows.push((addr, fid, line));
            }
        }

        if !dies {
            return Ok(());
        }
        let header = unit.line_program.as_ref().map(|p| p.header().clone());
        let mut depth: isize = 0;
        let mut entries = unit.entries();
        while let Some((delta, entry)) = entries.next_dfs()? {
            depth += delta;
            if entry.tag() == gimli::DW_TAG_subprogram {
                self.read_decl(dwarf, unit, entry, &mut file_ids, comp_dir.as_deref())?;
                continue;
            }
            if entry.tag() != gimli::DW_TAG_inlined_subroutine {
                continue;
            }
            let function = origin_name(dwarf, unit, entry, 0).unwrap_or_else(|| "?".into());
            let call_line = entry
                .attr_value(gimli::DW_AT_call_line)?
                .and_then(|v| v.udata_value());
            let call_file = entry
                .attr_value(gimli::DW_AT_call_file)?
                .and_then(file_index);
            let call_site = match (call_file, call_line, &header) {
                (Some(fi), Some(line), Some(h)) => Some((
                    self.file_id(&mut file_ids, dwarf, unit, h, fi, comp_dir.as_deref()),
                    line,
                )),
                _ => None,
            };
            for (begin, end) in die_ranges(dwarf, unit, entry)? {
                if begin < end {
                    self.inlined.push(InlinedRange {
                        start: begin,
                        end,
                        depth,
                        function: function.clone(),
                        call_site,
                    });
                }
            }
        }
        Ok(())
    }

    /// Record where a function definition (not a mere declaration, not a concrete instance
    /// that only points at its abstract origin) starts.
    fn read_decl<'a>(
        &mut self,
        dwarf: &gimli::Dwarf<Rdr<'a>>,
        unit: &gimli::Unit<Rdr<'a>>,
        entry: &gimli::DebuggingInformationEntry<'_, '_, Rdr<'a>>,
        file_ids: &mut HashMap<u64, usize>,
        comp_dir: Option<&str>,
    ) -> gimli::Result<()> {
        if let Some(AttributeValue::Flag(true)) = entry.attr_value(gimli::DW_AT_declaration)? {
            return Ok(());
        }
        let Some(name) = entry
            .attr_value(gimli::DW_AT_name)?
            .and_then(|v| dwarf.attr_string(unit, v).ok())
            .and_then(|r| r.to_string_lossy().ok().map(|c| c.into_owned()))
        else {
            return Ok(());
        };
        let line = entry
            .attr_value(gimli::DW_AT_decl_line)?
            .and_then(|v| v.udata_value());
        let file = entry
            .attr_value(gimli::DW_AT_decl_file)?
            .and_then(file_index);
        let (Some(line), Some(fi), Some(program)) = (line, file, unit.line_program.as_ref()) else {
            return Ok(());
        };
        let fid = self.file_id(file_ids, dwarf, unit, program.header(), fi, comp_dir);
        self.decls.push((fid, line, name));
        Ok(())
    }

    /// Our id for file `fi` of a unit's line-table header (`ids`: the unit's, so far), added
    /// to `files` the first time.
    fn file_id<'a>(
        &mut self,
        ids: &mut HashMap<u64, usize>,
        dwarf: &gimli::Dwarf<Rdr<'a>>,
        unit: &gimli::Unit<Rdr<'a>>,
        header: &gimli::LineProgramHeader<Rdr<'a>>,
        fi: u64,
        comp_dir: Option<&str>,
    ) -> usize {
        *ids.entry(fi).or_insert_with(|| {
            self.files
                .push(file_name(dwarf, unit, header, fi, comp_dir));
            self.files.len() - 1
        })
    }

    /// The function whose definition holds line `line` of file `fid`: the last one starting at
    /// or before it.
    fn definition_at(&self, fid: usize, line: u64) -> Option<&str> {
        let i = self
            .decls
            .partition_point(|(f, l, _)| (*f, *l) <= (fid, line));
        let (f, _, name) = self.decls.get(i.checked_sub(1)?)?;
        (*f == fid).then_some(name.as_str())
    }

    /// Show paths relative to the deepest directory all absolute paths share (the source tree
    /// of a kernel object, the fixture directory of a test).
    fn shorten_paths(&mut self) {
        let abs: Vec<&str> = self
            .files
            .iter()
            .filter(|f| f.starts_with('/'))
            .map(String::as_str)
            .collect();
        let Some(first) = abs.first() else { return };
        let mut root = match first.rfind('/') {
            Some(p) => first[..=p].to_string(),
            None => return,
        };
        for f in &abs[1..] {
            while !f.starts_with(&root) {
                root.pop();
                match root.rfind('/') {
                    Some(p) => root.truncate(p + 1),
                    None => return,
                }
            }
        }
        if root.len() <= 1 {
            return;
        }
        for f in &mut self.files {
            if let Some(rest) = f.strip_prefix(&root) {
                *f = rest.to_string();
            }
        }
    }

    /// The source line of section-relative `offset` in the section with ELF index `elf_sec`.
    pub fn location(&self, elf_sec: usize, offset: u64) -> Option<SourceLoc> {
        let addr = tagged(elf_sec, offset);
        let seq = self.seqs.iter().find(|s| s.start <= addr && addr < s.end)?;
        let i = seq.rows.partition_point(|r| r.0 <= addr);
        let &(_, fid, line) = seq.rows.get(i.checked_sub(1)?)?;
        Some(SourceLoc {
            file: self.files.get(fid)?.clone(),
            line,
        })
    }

    /// Which changed source lines the code at `[start, start + size)` of the section with ELF
    /// index `elf_sec` comes from: the function's own (`Own`, as soon as one row is), or only
    /// those of functions inlined into it (the innermost inlined function at each such row,
    /// in order of appearance), or none of them (`Untouched`). None when the line table has no
    /// row for it.
    ///
    /// A row belongs to the function whose definition holds its line (the last one starting
    /// at or before it in that file); GCC leaves some rows of inlined code outside the ranges
    /// of their `DW_TAG_inlined_subroutine`, so the inlined ranges only decide where no
    /// definition is known. `function` is the source name of the function (`f` for
    /// `f.constprop.0`).
    pub fn source_cause(
        &self,
        function: &str,
        elf_sec: usize,
        start: u64,
        size: u64,
        changed: &[ChangedLines],
    ) -> Option<SourceCause> {
        let (lo, hi) = (
            tagged(elf_sec, start),
            tagged(elf_sec, start.saturating_add(size)),
        );
        let mut callees: Vec<String> = Vec::new();
        let mut rows_seen = false;
        // Files are few; match each line-table file against the patch's files once.
        let mut file_hit: HashMap<usize, Option<&ChangedLines>> = HashMap::new();
        for seq in self.seqs.iter().filter(|q| q.start < hi && lo < q.end) {
            let first = seq.rows.partition_point(|r| r.0 < lo);
            for &(addr, fid, line) in seq.rows[first..].iter().take_while(|r| r.0 < hi) {
                rows_seen = true;
                let hit = *file_hit.entry(fid).or_insert_with(|| {
                    let name = self.files.get(fid)?;
                    changed.iter().find(|c| same_source_file(name, &c.file))
                });
                if !hit.is_some_and(|c| c.contains(line)) {
                    continue;
                }
                let offset = addr & OFFSET_MASK;
                let owner = match self.definition_at(fid, line) {
                    Some(name) => Some(name.to_string()),
                    None => self.inlined_at(elf_sec, offset).pop().map(|f| f.function),
                };
                match owner {
                    Some(name) if name != function => {
                        if !callees.contains(&name) {
                            callees.push(name);
                        }
                    }
                    _ => return Some(SourceCause::Own),
                }
            }
        }
        if !callees.is_empty() {
            Some(SourceCause::Inlined(callees))
        } else if rows_seen {
            Some(SourceCause::Untouched)
        } else {
            None
        }
    }

    /// The line-table rows of `[start, end)` of the section with ELF index `elf_sec`, by
    /// address (rows of one address in table order), as (offset from `start`, file, line);
    /// a row that starts before `start` and covers it comes first, at offset 0.
    pub fn rows(&self, elf_sec: usize, start: u64, end: u64) -> Vec<(u64, &str, u64)> {
        let (lo, hi) = (tagged(elf_sec, start), tagged(elf_sec, end));
        let mut out = Vec::new();
        for seq in self.seqs.iter().filter(|q| q.start < hi && lo < q.end) {
            let first = seq.rows.partition_point(|r| r.0 < lo);
            let covering = first
                .checked_sub(1)
                .map(|i| seq.rows[i])
                .filter(|_| seq.rows.get(first).is_none_or(|r| r.0 > lo));
            let inside = seq.rows[first..].iter().take_while(|r| r.0 < hi);
            for &(addr, fid, line) in covering.iter().chain(inside) {
                let Some(file) = self.files.get(fid) else {
                    continue;
                };
                out.push((addr.max(lo) - lo, file.as_str(), line));
            }
        }
        out.sort_by_key(|r| r.0);
        out
    }

    /// The source files of the line tables (shortened as in [`SourceLoc`]).
    pub fn files(&self) -> &[String] {
        &self.files
    }

    /// Functions inlined at `offset` of the section with ELF index `elf_sec`, outermost first.
    pub fn inlined_at(&self, elf_sec: usize, offset: u64) -> Vec<InlinedFrame> {
        let addr = tagged(elf_sec, offset);
        let mut hits: Vec<&InlinedRange> = self
            .inlined
            .iter()
            .filter(|r| r.start <= addr && addr < r.end)
            .collect();
        hits.sort_by_key(|r| r.depth);
        hits.dedup_by(|a, b| a.depth == b.depth && a.function == b.function);
        hits.iter()
            .map(|r| InlinedFrame {
                function: r.function.clone(),
                call_site: r.call_site.and_then(|(fid, line)| {
                    Some(SourceLoc {
                        file: self.files.get(fid)?.clone(),
                        line,
                    })
                }),
            })
            .collect()
    }
}

fn file_name<'a>(
    dwarf: &gimli::Dwarf<Rdr<'a>>,
    unit: &gimli::Unit<Rdr<'a>>,
    header: &gimli::LineProgramHeader<Rdr<'a>>,
    index: u64,
    comp_dir: Option<&str>,
) -> String {
    let string = |v: AttributeValue<Rdr<'a>>| -> Option<String> {
        let r = dwarf.attr_string(unit, v).ok()?;
        Some(r.to_string_lossy().ok()?.into_owned())
    };
    let Some(file) = header.file(index) else {
        return format!("<file {index}>");
    };
    let name = string(file.path_name()).unwrap_or_else(|| format!("<file {index}>"));
    if name.starts_with('/') {
        return name;
    }
    let dir = file.directory(header).and_then(string);
    let joined = match dir {
        Some(d) if !d.is_empty() => format!("{}/{name}", d.trim_end_matches('/')),
        _ => name,
    };
    match comp_dir {
        Some(c) if !joined.starts_with('/') && !c.is_empty() => {
            format!("{}/{joined}", c.trim_end_matches('/'))
        }
        _ => joined,
    }
}

/// A file attribute (`DW_AT_call_file`, `DW_AT_decl_file`) as a line-table file index.
fn file_index(v: AttributeValue<Rdr<'_>>) -> Option<u64> {
    match v {
        AttributeValue::FileIndex(i) => Some(i),
        v => v.udata_value(),
    }
}

/// The name of the function an inlined subroutine (or concrete instance) stands for.
fn origin_name<'a>(
    dwarf: &gimli::Dwarf<Rdr<'a>>,
    unit: &gimli::Unit<Rdr<'a>>,
    entry: &gimli::DebuggingInformationEntry<'_, '_, Rdr<'a>>,
    hops: u32,
) -> Option<String> {
    if let Ok(Some(v)) = entry.attr_value(gimli::DW_AT_name) {
        if let Ok(s) = dwarf.attr_string(unit, v) {
            return Some(s.to_string_lossy().ok()?.into_owned());
        }
    }
    if hops > 8 {
        return None;
    }
    for at in [gimli::DW_AT_abstract_origin, gimli::DW_AT_specification] {
        if let Ok(Some(AttributeValue::UnitRef(off))) = entry.attr_value(at) {
            let target = unit.entry(off).ok()?;
            return origin_name(dwarf, unit, &target, hops + 1);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Orig, Patched};
    use gimli::Relocate as _;
    use object::write::{self, Relocation, SymbolSection};
    use object::{
        elf, Architecture, BinaryFormat, Endianness, RelocationFlags, SectionKind, SymbolFlags,
        SymbolKind, SymbolScope,
    };

    /// A relocatable object with one function `f` (in `.text.f`) whose code calls `callee`
    /// through a PLT32 relocation at offset 1.
    fn object_with(code: &[u8], callee: &str) -> Vec<u8> {
        let mut o = write::Object::new(BinaryFormat::Elf, Architecture::X86_64, Endianness::Little);
        let text = o.add_section(Vec::new(), b".text.f".to_vec(), SectionKind::Text);
        o.append_section_data(text, code, 16);
        o.add_symbol(write::Symbol {
            name: b"f".to_vec(),
            value: 0,
            size: code.len() as u64,
            kind: SymbolKind::Text,
            scope: SymbolScope::Linkage,
            weak: false,
            section: SymbolSection::Section(text),
            flags: SymbolFlags::None,
        });
        let target = o.add_symbol(write::Symbol {
            name: callee.as_bytes().to_vec(),
            value: 0,
            size: 0,
            kind: SymbolKind::Text,
            scope: SymbolScope::Linkage,
            weak: false,
            section: SymbolSection::Undefined,
            flags: SymbolFlags::None,
        });
        o.add_relocation(
            text,
            Relocation {
                offset: 1,
                symbol: target,
                addend: -4,
                flags: RelocationFlags::Elf {
                    r_type: elf::R_X86_64_PLT32,
                },
            },
        )
        .unwrap();
        o.write().unwrap()
    }

    fn explain_pair(a: &[u8], b: &[u8]) -> Explain {
        let orig = Object::<Orig>::parse("orig.o", a).unwrap();
        let patched = Object::<Patched>::parse("patched.o", b).unwrap();
        explain(&Diff::new(&orig, &patched))
    }

    const CALL_RET: &[u8] = &[0xe8, 0, 0, 0, 0, 0x31, 0xc0, 0xc3];

    #[test]
    fn equal_bytes_other_target_is_a_relocation_difference() {
        let ex = explain_pair(&object_with(CALL_RET, "foo"), &object_with(CALL_RET, "bar"));
        let e = ex.functions.iter().find(|e| e.function == "f").unwrap();
        assert_eq!(e.kind, DiffKind::Relocation);
        assert_eq!(e.cause, Cause::OwnCode);
        assert_eq!(e.offset, Some(0));
        let insn = |s: &Option<Site>| s.as_ref().and_then(|s| s.insn.clone());
        assert_eq!(insn(&e.orig).as_deref(), Some("call foo"));
        assert_eq!(insn(&e.patched).as_deref(), Some("call bar"));
        let r = e.relocation.as_ref().unwrap();
        assert_eq!((r.orig.as_str(), r.patched.as_str()), ("foo", "bar"));
        assert_eq!(e.orig.as_ref().unwrap().bytes, "e8 00 00 00 00");
        // No DWARF: no lines, and a note that says so.
        assert!(e.orig.as_ref().unwrap().location.is_none());
        assert_eq!(ex.warnings.len(), 2, "{:?}", ex.warnings);
    }

    #[test]
    fn first_differing_instruction_after_an_equal_prefix() {
        let other = [0xe8, 0, 0, 0, 0, 0x31, 0xdb, 0xc3];
        let ex = explain_pair(&object_with(CALL_RET, "foo"), &object_with(&other, "foo"));
        let e = &ex.functions[0];
        assert_eq!(e.kind, DiffKind::Instruction);
        assert_eq!(e.offset, Some(5));
        assert_eq!(
            e.orig.as_ref().unwrap().insn.as_deref(),
            Some("xor eax, eax")
        );
        assert_eq!(
            e.patched.as_ref().unwrap().insn.as_deref(),
            Some("xor ebx, ebx")
        );
        assert!(e.relocation.is_none());
    }

    #[test]
    fn a_longer_function_differs_in_length_where_the_shorter_ends() {
        let longer = [0xe8, 0, 0, 0, 0, 0x31, 0xc0, 0xc3, 0xcc];
        let ex = explain_pair(&object_with(CALL_RET, "foo"), &object_with(&longer, "foo"));
        let e = &ex.functions[0];
        assert_eq!(e.kind, DiffKind::Length);
        assert_eq!(e.offset, Some(8));
        assert_eq!(e.orig.as_ref().unwrap().insn, None);
        assert_eq!(e.patched.as_ref().unwrap().insn.as_deref(), Some("int3"));
    }

    #[test]
    fn masked_zeroes_only_fields_inside_the_instruction() {
        let code = [0x48, 0xc7, 0xc6, 1, 2, 3, 4, 0x90];
        let r = Reloc::<Orig> {
            offset: 0x13,
            r_type: elf::R_X86_64_32S,
            sym: SymIdx::new(0),
            addend: 0,
        };
        // The function starts at 0x10 in its section; the instruction at +0 is 7 bytes.
        let bytes = object_with(CALL_RET, "foo");
        let obj = Object::<Orig>::parse("o.o", &bytes).unwrap();
        assert_eq!(
            masked(&obj, &code, 0, 7, 0x10, &[r]),
            vec![0x48, 0xc7, 0xc6, 0, 0, 0, 0]
        );
    }

    #[test]
    fn addresses_keep_their_section() {
        let entries = [(8, Some(5), 0x10), (16, None, 0x20)];
        let map = RelocMap {
            find: Some(Box::new(move |offset| {
                entries
                    .iter()
                    .find(|e| e.0 == offset)
                    .map(|&(_, tag, value)| (tag, value))
            })),
        };
        assert_eq!((&map).relocate_address(8, 0).unwrap(), tagged(5, 0x10));
        assert_eq!((&map).relocate_address(16, 0).unwrap(), 0x20);
        assert_eq!((&map).relocate_address(24, 7).unwrap(), 7);
        // Offsets into other debug sections are not tagged.
        assert_eq!((&map).relocate_offset(8, 0).unwrap(), 0x10);

        // Two function sections both start at 0: rows are found by section, not by address.
        let idx = DwarfIndex {
            decls: Vec::new(),
            files: vec!["a.c".into(), "b.h".into()],
            seqs: vec![
                Seq {
                    start: tagged(5, 0),
                    end: tagged(5, 0x20),
                    rows: vec![(tagged(5, 0), 0, 10), (tagged(5, 0x8), 0, 11)],
                },
                Seq {
                    start: tagged(7, 0),
                    end: tagged(7, 0x10),
                    rows: vec![(tagged(7, 0), 0, 30)],
                },
            ],
            inlined: vec![
                InlinedRange {
                    start: tagged(5, 0x8),
                    end: tagged(5, 0x10),
                    depth: 3,
                    function: "inner".into(),
                    call_site: Some((1, 4)),
                },
                InlinedRange {
                    start: tagged(5, 0x4),
                    end: tagged(5, 0x18),
                    depth: 2,
                    function: "outer".into(),
                    call_site: Some((0, 11)),
                },
            ],
        };
        let line = |sec, off| idx.location(sec, off).map(|l| l.to_string());
        assert_eq!(line(5, 0).as_deref(), Some("a.c:10"));
        assert_eq!(line(5, 0xc).as_deref(), Some("a.c:11"));
        assert_eq!(line(7, 0xc).as_deref(), Some("a.c:30"));
        assert_eq!(line(7, 0x10), None);
        assert_eq!(line(6, 0), None);
        let names: Vec<String> = idx
            .inlined_at(5, 0x9)
            .into_iter()
            .map(|f| f.function)
            .collect();
        assert_eq!(names, ["outer", "inner"]);
        assert!(idx.inlined_at(7, 0x9).is_empty());
    }

    #[test]
    fn paths_are_shown_from_their_common_root() {
        let mut idx = DwarfIndex {
            decls: Vec::new(),
            files: vec![
                "/src/linux/fs/proc/meminfo.c".into(),
                "/src/linux/include/linux/mm.h".into(),
                "<built-in>".into(),
            ],
            seqs: Vec::new(),
            inlined: Vec::new(),
        };
        idx.shorten_paths();
        assert_eq!(
            idx.files,
            ["fs/proc/meminfo.c", "include/linux/mm.h", "<built-in>"]
        );
        let mut one = DwarfIndex {
            decls: Vec::new(),
            files: vec!["/work/tests/fixtures/x.c".into()],
            seqs: Vec::new(),
            inlined: Vec::new(),
        };
        one.shorten_paths();
        assert_eq!(one.files, ["x.c"]);
    }
}
