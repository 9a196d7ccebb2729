//! Line numbers in code: the binary half of the `__LINE__` tolerance (the source half is the
//! `#line` directives `patchgen::patchfile` puts into the patched sources klpgen builds). A
//! function whose two versions differ only in immediates that are source line numbers did not
//! change: the patch moved lines around it. Objects klpgen did not compile with its `#line`
//! layer (`klpgen diff` of any pair, a distribution's objects) are full of them: `printk` and
//! `WARN` with a line, `might_sleep()`, `btrfs_abort_transaction()`, ext4 and xfs error helpers.
//!
//! `compare.rs` hands over the functions whose versions differ only in *moved immediates*
//! (`mov $imm, dst`, `push $imm`: [`crate::arch::Insn::imm`]; also the numerals of a string
//! that differs only in them, `__stringify(__LINE__)`, as immediates of the instruction that
//! loads it), each differing instruction
//! otherwise byte for byte the same (same opcode, same register or memory operand, the field
//! at the same place and of the same width) and every relocation the same. Such a function is
//! unchanged when every differing immediate is a line number by this rule:
//!
//! **By value (the objects' DWARF line tables, `.debug_line` with the `.o`'s relocations
//! applied, read only for these functions).** An immediate is a line number when
//! 1. in *both* versions it equals a line the line table gives its own instruction (a row
//!    covering the instruction's address or starting inside it: the statement's line, or the
//!    line of an inlined call at the same address, or, where no row has it, the call site
//!    of a function inlined at the instruction: `__LINE__` a macro hands to an inline
//!    function is loaded inside the inlined body), of files of the same name; and
//! 2. the code around it moved the same way: some *other* line of that file in the same
//!    function (or, for want of one, in another part of the function's split family, `.cold`
//!    and `.part.N`, whose code is aligned as well) is, at the same code offset, exactly as
//!    many lines further down (or up) in the patched version as the immediate is.
//!
//! Then it is `__LINE__`, wherever it goes (an argument of any callee, a structure on the
//! stack). A real change of a constant that happens to equal its line in one version fails
//! (1); one that equals its line in both versions but does not move with the lines around it
//! fails (2). Undecidable, and taken as a line number, is only a constant that equals its line
//! in both versions and moves with the code around it: byte for byte what `__LINE__` gives.
//! Lines in data (`__bug_table` entries of WARN/BUG, `.printk_index` and dynamic-debug records)
//! are no immediates; UBSAN's source locations are compared without their line and column
//! (`refs.rs`).
//!
//! **Without DWARF** (the object has no line table, or none for this function) the name list
//! decides, as the fallback: the immediate is loaded into the argument register that carries
//! the line of a known line taker ([`LINE_TAKERS`]), which the next call or tail call within 8
//! instructions calls. Callees whose line argument has no fixed place (`printk`,
//! `__warn_printk`) are not on it: without DWARF their moved lines are changes.

use std::cell::OnceCell;
use std::collections::{HashMap, HashSet};

use crate::compare::{FuncResult, Verdict};
use crate::explain::DwarfIndex;
use crate::model::{Object, Orig, Patched, Side, SymIdx};
use crate::names::{normalize, split_parent};
use crate::refs::Pair;

/// One differing moved immediate of a function whose two versions are otherwise the same.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ImmDiff<'d> {
    /// The instruction: its offset from the function's start, and its length.
    pub offset: u64,
    pub len: u64,
    /// The immediate in each version.
    pub orig: i64,
    pub patched: i64,
    /// The argument register it loads ([`crate::arch::Immediate::arg`]).
    pub arg: Option<u8>,
    /// What the next call or tail call within 8 instructions calls (a relocation's symbol
    /// in the original), for the fallback.
    pub callee: Option<&'d str>,
}

/// Callees that take a source line (`__LINE__`) as an integer argument at a fixed place, with
/// that argument's position (0: the first): the fallback for objects without DWARF. From the
/// kernel's signatures (kpatch's list, with the callees it lacks).
const LINE_TAKERS: &[(&str, u8)] = &[
    ("__might_sleep", 1),
    ("___might_sleep", 1),
    ("__might_resched", 1),
    ("__might_fault", 1),
    ("__cant_sleep", 1),
    ("__cant_migrate", 1),
    ("warn_slowpath_null", 1),
    ("warn_slowpath_fmt", 1),
    ("warn_slowpath_fmt_taint", 1),
    ("lockdep_rcu_suspicious", 1),
    ("__btrfs_abort_transaction", 2),
    ("__btrfs_handle_fs_error", 2),
    ("__btrfs_panic", 2),
    ("__ext4_error", 2),
    ("__ext4_error_inode", 2),
    ("__ext4_error_file", 2),
    ("__ext4_warning", 2),
    ("__ext4_warning_inode", 2),
    ("__ext4_std_error", 2),
    ("__ext4_abort", 2),
    ("xfs_error_report", 4),
    ("assfail", 3),
    ("asswarn", 3),
];

/// A function of the results whose immediates `compare.rs` left for this phase.
pub(crate) struct Pending<'d> {
    /// Index into the results.
    pub result: usize,
    pub diffs: Vec<ImmDiff<'d>>,
}

/// Settle the verdicts of functions that differ only in moved immediates: unchanged when all
/// of them are line numbers. The line tables are read once, and only when some function needs
/// them.
pub(crate) fn settle(pair: Pair<'_, '_>, results: &mut [FuncResult], pending: &[Pending<'_>]) {
    if pending.is_empty() {
        return;
    }
    let tables = Tables {
        orig: OnceCell::new(),
        patched: OnceCell::new(),
        orig_full: OnceCell::new(),
        patched_full: OnceCell::new(),
    };
    let aligned: HashSet<usize> = results
        .iter()
        .enumerate()
        .filter(|(_, r)| r.verdict == Verdict::Unchanged)
        .map(|(i, _)| i)
        .chain(pending.iter().map(|p| p.result))
        .collect();
    // Split families by root (`f` for `f`, `f.cold`, `f.part.0`).
    let root = |r: &FuncResult| {
        let name = pair.patched.sym(r.patched).name;
        split_parent(name).unwrap_or_else(|| normalize(name))
    };
    let mut families: HashMap<String, Vec<usize>> = HashMap::new();
    for i in &aligned {
        families.entry(root(&results[*i])).or_default().push(*i);
    }
    let mut unchanged = Vec::new();
    for p in pending {
        let r = &results[p.result];
        let Some(o) = r.orig else { continue };
        let mut evidence = vec![(o, r.patched)];
        for &j in families.get(&root(r)).into_iter().flatten() {
            if j != p.result {
                if let Some(oj) = results[j].orig {
                    evidence.push((oj, results[j].patched));
                }
            }
        }
        if line_numbers(pair, &tables, &evidence, &p.diffs) {
            unchanged.push(p.result);
        }
    }
    for i in unchanged {
        results[i].verdict = Verdict::Unchanged;
    }
}

/// The line tables of both objects, read on first use; None without DWARF (or with DWARF
/// klpgen cannot read, such as compressed sections: the fallback then decides).
struct Tables {
    orig: OnceCell<Option<DwarfIndex>>,
    patched: OnceCell<Option<DwarfIndex>>,
    /// With the inlined subroutines too, read only when the rows alone do not decide.
    orig_full: OnceCell<Option<DwarfIndex>>,
    patched_full: OnceCell<Option<DwarfIndex>>,
}

/// A line-table row of a function: (offset from its start, file, line).
type Row<'a> = (u64, &'a str, u64);

/// The rows of function `f`, None when there are none.
fn rows<'i, S: Side>(
    obj: &Object<'_, S>,
    idx: &'i DwarfIndex,
    f: SymIdx<S>,
) -> Option<Vec<Row<'i>>> {
    let s = obj.sym(f);
    let sec = obj.sec(s.section?).elf_index;
    let rows = idx.rows(sec, s.value, s.value.saturating_add(s.size));
    (!rows.is_empty()).then_some(rows)
}

/// Whether every differing immediate of a function is a line number: by value where both
/// versions have line-table rows for it, else by the callee. `evidence` is the function
/// (first) and the members of its split family whose code is aligned too.
fn line_numbers(
    pair: Pair<'_, '_>,
    tables: &Tables,
    evidence: &[(SymIdx<Orig>, SymIdx<Patched>)],
    diffs: &[ImmDiff<'_>],
) -> bool {
    let oidx = tables
        .orig
        .get_or_init(|| DwarfIndex::line_tables(pair.orig).ok().flatten());
    let pidx = tables
        .patched
        .get_or_init(|| DwarfIndex::line_tables(pair.patched).ok().flatten());
    let both = |(o, p): (SymIdx<Orig>, SymIdx<Patched>)| {
        Some((
            rows(pair.orig, oidx.as_ref()?, o)?,
            rows(pair.patched, pidx.as_ref()?, p)?,
        ))
    };
    let Some(own) = both(evidence[0]) else {
        return diffs.iter().all(by_callee);
    };
    // The family's rows, read when the function's own give no evidence.
    let family: OnceCell<Vec<(Vec<Row<'_>>, Vec<Row<'_>>)>> = OnceCell::new();
    // The function's rows with the inlined subroutines' call sites, read on first need.
    let with_calls: OnceCell<Option<CallSites>> = OnceCell::new();
    diffs.iter().all(|d| {
        by_value(&own, d, |fo, fp, line, delta| {
            moved_alike(&own, fo, fp, line, delta)
                || family
                    .get_or_init(|| evidence[1..].iter().filter_map(|&e| both(e)).collect())
                    .iter()
                    .any(|rows| moved_alike(rows, fo, fp, line, delta))
        }) || with_calls
            .get_or_init(|| call_sites(pair, tables, evidence[0]))
            .as_ref()
            .is_some_and(|c| c.is_line(d))
    })
}

/// A function's rows in both versions (of the index with inlined subroutines), for the
/// instructions of inlined code with the lines they were inlined at: `__LINE__` expanded at
/// the call of a macro that calls an inline function (`ext4_journal_start()`) is loaded
/// inside the inlined body, whose rows give the header's lines; the call site's line is the
/// one it spells.
struct CallSites<'t> {
    /// The function's rows, original and patched.
    rows: (Vec<Row<'t>>, Vec<Row<'t>>),
    index: (&'t DwarfIndex, &'t DwarfIndex),
    /// (ELF section index, function start) in each version.
    at: ((usize, u64), (usize, u64)),
}

fn call_sites<'t>(
    pair: Pair<'_, '_>,
    tables: &'t Tables,
    (o, p): (SymIdx<Orig>, SymIdx<Patched>),
) -> Option<CallSites<'t>> {
    let oidx = tables
        .orig_full
        .get_or_init(|| DwarfIndex::build(pair.orig).ok().flatten())
        .as_ref()?;
    let pidx = tables
        .patched_full
        .get_or_init(|| DwarfIndex::build(pair.patched).ok().flatten())
        .as_ref()?;
    let (os, ps) = (pair.orig.sym(o), pair.patched.sym(p));
    Some(CallSites {
        rows: (rows(pair.orig, oidx, o)?, rows(pair.patched, pidx, p)?),
        index: (oidx, pidx),
        at: (
            (pair.orig.sec(os.section?).elf_index, os.value),
            (pair.patched.sec(ps.section?).elf_index, ps.value),
        ),
    })
}

impl CallSites<'_> {
    /// Rule 1 with the call sites of the functions inlined at the instruction as its lines
    /// too; rule 2 by the function's rows.
    fn is_line(&self, d: &ImmDiff<'_>) -> bool {
        let sites = |idx: &DwarfIndex, (sec, base): (usize, u64)| -> Vec<(String, u64)> {
            idx.inlined_at(sec, base.saturating_add(d.offset))
                .into_iter()
                .filter_map(|f| f.call_site.map(|c| (c.file, c.line)))
                .collect()
        };
        let (osites, psites) = (
            sites(self.index.0, self.at.0),
            sites(self.index.1, self.at.1),
        );
        if osites.is_empty() || psites.is_empty() {
            return false;
        }
        // The call sites as rows of the instruction's own address, after the others there.
        fn insert<'a>(rows: &[Row<'a>], sites: &'a [(String, u64)], offset: u64) -> Vec<Row<'a>> {
            let at = rows.partition_point(|r| r.0 <= offset);
            let sites = sites.iter().map(|(f, l)| (offset, f.as_str(), *l));
            rows[..at]
                .iter()
                .copied()
                .chain(sites)
                .chain(rows[at..].iter().copied())
                .collect()
        }
        let extended = (
            insert(&self.rows.0, &osites, d.offset),
            insert(&self.rows.1, &psites, d.offset),
        );
        by_value(&extended, d, |fo, fp, line, delta| {
            moved_alike(&self.rows, fo, fp, line, delta)
        })
    }
}

/// Rule 1: the immediate is, in both versions, a line of its own instruction (of files of the
/// same name), and `moved` (rule 2) confirms the move for (original file, patched file,
/// original line, lines moved).
fn by_value(
    (ro, rp): &(Vec<Row<'_>>, Vec<Row<'_>>),
    d: &ImmDiff<'_>,
    moved: impl Fn(&str, &str, u64, i64) -> bool,
) -> bool {
    let delta = d.patched.wrapping_sub(d.orig);
    lines_at(ro, d.offset, d.len)
        .filter(|r| r.2 as i64 == d.orig)
        .any(|&(_, fo, lo)| {
            lines_at(rp, d.offset, d.len)
                .filter(|q| q.2 as i64 == d.patched && same_name(fo, q.1))
                .any(|&(_, fp, _)| moved(fo, fp, lo, delta))
        })
}

/// Rule 2: some other line of the same file (`fo` in the original, `fp` in the patched
/// version) moved by `delta` at the same code offset.
fn moved_alike(
    (ro, rp): &(Vec<Row<'_>>, Vec<Row<'_>>),
    fo: &str,
    fp: &str,
    line: u64,
    delta: i64,
) -> bool {
    ro.iter()
        .filter(|r| r.1 == fo && r.2 != line && r.2 != 0)
        .any(|r| {
            lines_at(rp, r.0, 1)
                .any(|q| q.1 == fp && q.2 as i64 == (r.2 as i64).wrapping_add(delta))
        })
}

/// The rows that give the instruction at `[off, off + len)` its lines: those of the last
/// address at or before `off` (the row covering it, with the other rows of that address) and
/// those starting inside it.
fn lines_at<'r, 'a>(rows: &'r [Row<'a>], off: u64, len: u64) -> impl Iterator<Item = &'r Row<'a>> {
    let upto = rows.partition_point(|r| r.0 <= off);
    let lo = match upto.checked_sub(1) {
        Some(i) => rows.partition_point(|r| r.0 < rows[i].0),
        None => upto,
    };
    let hi = rows.partition_point(|r| r.0 < off.saturating_add(len.max(1)));
    rows[lo..hi.max(lo)].iter()
}

/// The same source file in the two versions' line tables: the same file name (the paths of two
/// builds may differ above the tree).
fn same_name(a: &str, b: &str) -> bool {
    let base = |p: &str| p.rsplit('/').next().unwrap_or(p).to_string();
    base(a) == base(b)
}

/// The fallback without DWARF: the immediate goes into the line argument of a known line
/// taker that the next call (or tail call) calls.
fn by_callee(d: &ImmDiff<'_>) -> bool {
    let (Some(arg), Some(callee)) = (d.arg, d.callee) else {
        return false;
    };
    LINE_TAKERS
        .iter()
        .any(|&(name, at)| name == callee && at == arg)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn diff(offset: u64, orig: i64, patched: i64) -> ImmDiff<'static> {
        ImmDiff {
            offset,
            len: 5,
            orig,
            patched,
            arg: Some(1),
            callee: None,
        }
    }

    /// Rows of a small function in both versions: lines 10..=14 at offsets 0, 8, 16, 24, 32,
    /// all `shift` lines further down in the patched version.
    fn function(shift: u64) -> (Vec<Row<'static>>, Vec<Row<'static>>) {
        let rows = |s: u64| (0..5).map(|k| (k * 8, "dir/a.c", 10 + k + s)).collect();
        (rows(0), rows(shift))
    }

    fn is_line(rows: &(Vec<Row<'_>>, Vec<Row<'_>>), d: &ImmDiff<'_>) -> bool {
        by_value(rows, d, |fo, fp, line, delta| {
            moved_alike(rows, fo, fp, line, delta)
        })
    }

    #[test]
    fn a_line_that_moves_with_its_function_is_a_line_number() {
        let f = function(3);
        // The instruction at 16 is on line 12 (15 after the move) and loads that line.
        assert!(is_line(&f, &diff(16, 12, 15)));
        // Inside a row that starts before it.
        assert!(is_line(&f, &diff(18, 12, 15)));
    }

    #[test]
    fn a_constant_equal_to_its_line_in_one_version_only_is_no_line_number() {
        let f = function(3);
        assert!(!is_line(&f, &diff(16, 7, 15)));
        assert!(!is_line(&f, &diff(16, 12, 16)));
        // Another instruction's line.
        assert!(!is_line(&f, &diff(16, 13, 16)));
    }

    #[test]
    fn a_line_that_moves_alone_is_no_line_number() {
        // Line 12 moved to 15, nothing else did: a constant equal to its line in both
        // versions that did not move with the code around it.
        let (ro, mut rp) = function(0);
        rp[2].2 = 15;
        assert!(!is_line(&(ro.clone(), rp.clone()), &diff(16, 12, 15)));
        // Once the rows after it move alike (a comment inserted above the statement), it is.
        for r in &mut rp[3..] {
            r.2 += 3;
        }
        assert!(is_line(&(ro, rp), &diff(16, 12, 15)));
    }

    #[test]
    fn the_same_file_is_asked_for_in_both_versions() {
        let (ro, mut rp) = function(3);
        for r in &mut rp {
            r.1 = "other/b.c";
        }
        assert!(!is_line(&(ro.clone(), rp), &diff(16, 12, 15)));
        // Another directory above the same file name is the same file.
        let (_, mut rp) = function(3);
        for r in &mut rp {
            r.1 = "/build2/dir/a.c";
        }
        assert!(is_line(&(ro, rp), &diff(16, 12, 15)));
    }

    #[test]
    fn rows_of_one_address_all_count() {
        // An inlined call: the call site's line 12 and the callee's line 90 at one address.
        let ro = vec![
            (0, "a.c", 10),
            (8, "a.c", 12),
            (8, "a.c", 90),
            (16, "a.c", 13),
        ];
        let rp = vec![
            (0, "a.c", 11),
            (8, "a.c", 13),
            (8, "a.c", 90),
            (16, "a.c", 14),
        ];
        let f = (ro, rp);
        assert!(is_line(&f, &diff(8, 12, 13)));
        assert_eq!(lines_at(&f.0, 10, 2).count(), 2);
        assert_eq!(lines_at(&f.0, 12, 8).count(), 3);
    }

    #[test]
    fn the_fallback_asks_for_the_line_argument_of_a_known_taker() {
        let mut d = diff(0, 1, 2);
        assert!(!by_callee(&d));
        d.callee = Some("__might_sleep");
        assert!(by_callee(&d));
        // The error code of __btrfs_abort_transaction is no line; its third argument is.
        d.callee = Some("__btrfs_abort_transaction");
        assert!(!by_callee(&d));
        d.arg = Some(2);
        assert!(by_callee(&d));
        d.callee = Some("printk");
        assert!(!by_callee(&d));
        d.arg = None;
        d.callee = Some("__might_sleep");
        assert!(!by_callee(&d));
    }
}
