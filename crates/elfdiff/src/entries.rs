//! Special-section entries: how long the entries of each special section are, where each one
//! starts and ends, and which function each belongs to, so that an entry is compared, and kept,
//! with its function.
//!
//! A section is special when the machine lists it (`Arch::special_sections`) or an entry size
//! is given for it. Its entry size comes from the target when it says: the DWARF size of the
//! section's structure ([`PlanOptions::entry_sizes`]) or the object's `sh_entsize`; then from
//! the command line ([`PlanOptions::given_entry_sizes`], `--entry-size`); then from the
//! machine's defaults: the size fixed for the section, or else the one layout of the kernels
//! klpgen knows ([`EntryLayout`]) that every entry of the section matches (each entry has a
//! relocation of the layout's kind at each of its fields, and no other). A size from the target
//! that contradicts the one given, a given size where the entries fit exactly one known layout
//! of another size, or a section that is not a whole number of entries, is an
//! error ([`StrideError`]), never a silent wrong stride; only a layout that allows it
//! (`EntryLayout::short_tail`, x86's `.parainstructions`: each entry aligned before it, not
//! after) may end in a shorter entry, which is read with the stride and clamped to the
//! section's end.
//!
//! An entry belongs to the function its first relocation into code points into (the
//! instruction an `__ex_table`, `__bug_table`, `.altinstructions` or `__jump_table` entry is
//! about); entries pointing at data (`.printk_index`) belong to none. A function's entries are
//! part of what it is: the comparison (`compare.rs`) compares them with it, masking the line
//! number an entry may hold (`EntryLayout::line`), and following references into carved
//! sections by the content of what they point at (`refs.rs`).

use std::collections::HashMap;
use std::fmt;

use crate::arch::{EntryLayout, FieldTarget, SpecialSection};
use crate::model::{Object, Orig, Patched, SecIdx, Side, SymIdx, SymKind};
use crate::plan::PlanOptions;
use crate::refs::{is_local_label, piece_ref_key, ref_key, resolve, Insns, Pair, RefKey, Target};

/// Where an entry size came from, for messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SizeSource {
    /// The DWARF size of the section's structure in the target.
    Target,
    /// The object's section header (`sh_entsize`).
    SectionHeader,
    /// The command line (`--entry-size`).
    Given,
    /// The size the machine fixes for the section.
    Fixed,
    /// The one known layout every entry matches.
    Layout(&'static str),
}

impl fmt::Display for SizeSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SizeSource::Target => f.write_str("from the target's DWARF"),
            SizeSource::SectionHeader => f.write_str("from its section header (sh_entsize)"),
            SizeSource::Given => f.write_str("given with --entry-size"),
            SizeSource::Fixed => f.write_str("the size klpgen knows for it"),
            SizeSource::Layout(k) => write!(f, "the layout of {k}, which its entries match"),
        }
    }
}

/// The entries of one special section: `size` bytes each, the last one possibly shorter when
/// the layout allows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stride {
    pub size: u64,
    pub source: SizeSource,
    /// The known layout of this size, when there is one (what its bytes mean).
    pub layout: Option<&'static EntryLayout>,
}

impl Stride {
    /// The `[start, end)` ranges of the entries of a section of `len` bytes: every `size`
    /// bytes, the last clamped to the section's end.
    pub fn entries(self, len: u64) -> impl Iterator<Item = (u64, u64)> {
        let size = self.size.max(1);
        (0..len.div_ceil(size)).map(move |k| (k * size, ((k + 1) * size).min(len)))
    }

    /// The entry holding byte `offset`.
    pub fn entry_at(self, offset: u64, len: u64) -> Option<(u64, u64)> {
        let size = self.size.max(1);
        let start = offset / size * size;
        (offset < len).then(|| (start, (start + size).min(len)))
    }
}

/// Why a special section's entries cannot be told apart.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StrideError {
    #[error("its entry size is unknown (the target's DWARF gives none, none was given, and its {len} bytes match no layout klpgen knows)")]
    Unknown { len: u64 },
    #[error(
        "it is {len} bytes, not a whole number of {size}-byte entries (the entry size {from})"
    )]
    NotWhole {
        len: u64,
        size: u64,
        from: SizeSource,
    },
    #[error("its entries are {known} bytes ({from}), not the {given} --entry-size gives")]
    Conflict {
        known: u64,
        from: SizeSource,
        given: u64,
    },
}

/// The machine's description of special section `name`, if it lists it.
pub(crate) fn known_special(
    obj_arch: &dyn crate::arch::Arch,
    name: &str,
) -> Option<&'static SpecialSection> {
    obj_arch.special_sections().iter().find(|s| s.name == name)
}

/// Whether `name` is a special section of an object of `arch` under `opts`: the machine lists
/// it, or an entry size is given for it.
pub(crate) fn is_special(arch: &dyn crate::arch::Arch, opts: &PlanOptions, name: &str) -> bool {
    known_special(arch, name).is_some()
        || opts.entry_sizes.contains_key(name)
        || opts.given_entry_sizes.contains_key(name)
}

/// The special sections of `obj`: the machine's in its order, then those only an entry size
/// names, by name.
pub(crate) fn special_sections<'o, S: Side>(
    obj: &'o Object<'_, S>,
    opts: &'o PlanOptions,
) -> Vec<(SecIdx<S>, &'o str)> {
    let mut out: Vec<(SecIdx<S>, &str)> = obj
        .arch
        .special_sections()
        .iter()
        .filter_map(|s| obj.find_section(s.name).map(|i| (i, s.name)))
        .collect();
    let mut extra: Vec<&str> = opts
        .entry_sizes
        .keys()
        .chain(opts.given_entry_sizes.keys())
        .map(String::as_str)
        .filter(|n| known_special(obj.arch, n).is_none())
        .collect();
    extra.sort_unstable();
    extra.dedup();
    out.extend(
        extra
            .into_iter()
            .filter_map(|n| obj.find_section(n).map(|i| (i, n))),
    );
    out
}

/// The entries of special section `sec` of `obj` (see the module documentation for where the
/// size comes from).
pub fn stride<S: Side>(
    obj: &Object<'_, S>,
    sec: SecIdx<S>,
    opts: &PlanOptions,
) -> Result<Stride, StrideError> {
    let s = obj.sec(sec);
    let special = known_special(obj.arch, s.name);
    let layouts = special.map_or(&[][..], |sp| sp.layouts);
    let given = opts.given_entry_sizes.get(s.name).copied();
    let known = match opts.entry_sizes.get(s.name) {
        Some(&n) => Some((n, SizeSource::Target)),
        None => (s.sh_entsize > 0).then_some((s.sh_entsize, SizeSource::SectionHeader)),
    };
    let (size, source) = if let Some((n, from)) = known {
        if let Some(g) = given.filter(|&g| g != n) {
            return Err(StrideError::Conflict {
                known: n,
                from,
                given: g,
            });
        }
        (n, from)
    } else if let Some(g) = given {
        // A given size is taken where the entries' relocations say nothing; where they fit
        // exactly one layout klpgen knows, of another size, the given one is a mistake that
        // would carve every entry wrongly.
        if let Some(l) = only_matching_layout(obj, sec, layouts).filter(|l| l.size != g) {
            return Err(StrideError::Conflict {
                known: l.size,
                from: SizeSource::Layout(l.kernels),
                given: g,
            });
        }
        (g, SizeSource::Given)
    } else if let Some(n) = special.and_then(|sp| sp.entry_size) {
        (n, SizeSource::Fixed)
    } else {
        match only_matching_layout(obj, sec, layouts) {
            Some(l) => (l.size, SizeSource::Layout(l.kernels)),
            None => return Err(StrideError::Unknown { len: s.size }),
        }
    };
    // Of the layouts of this size, the one the entries match (what their bytes mean).
    let mut of_size = layouts.iter().filter(|l| l.size == size);
    let layout = match (of_size.next(), of_size.next()) {
        (Some(l), None) => Some(l),
        (Some(a), Some(b)) => [a, b]
            .into_iter()
            .chain(of_size)
            .find(|l| matches_layout(obj, sec, l)),
        _ => None,
    };
    let stride = Stride {
        size,
        source,
        layout,
    };
    if size == 0 || !whole(s.size, size, layouts.iter().filter(|l| l.size == size)) {
        return Err(StrideError::NotWhole {
            len: s.size,
            size,
            from: source,
        });
    }
    Ok(stride)
}

/// The one layout of `layouts` every entry of `sec` matches; None when none or several do.
/// Two layouts of one size (`__ex_table` of 5.16 and of 4.6 differ in a field) cannot both
/// match every entry; two sizes can only when nothing is relocated.
fn only_matching_layout<'l, S: Side>(
    obj: &Object<'_, S>,
    sec: SecIdx<S>,
    layouts: &'l [EntryLayout],
) -> Option<&'l EntryLayout> {
    let mut fits = layouts.iter().filter(|l| matches_layout(obj, sec, l));
    match (fits.next(), fits.next()) {
        (Some(l), None) => Some(l),
        _ => None,
    }
}

/// Whether `len` bytes are a whole number of `size`-byte entries, or, under a layout of that
/// size that allows a short last entry, end in one that still holds every relocated field.
fn whole<'l>(len: u64, size: u64, layouts: impl Iterator<Item = &'l EntryLayout>) -> bool {
    let tail = len % size;
    tail == 0
        || layouts.filter(|l| l.short_tail).any(|l| {
            tail >= l
                .fields
                .iter()
                .map(|f| f.at + f.kind.width)
                .max()
                .unwrap_or(1)
        })
}

/// Whether every entry of `sec` matches `layout`: it has a relocation of the layout's kind at
/// each field and none elsewhere, and the section is a whole number of entries.
fn matches_layout<S: Side>(obj: &Object<'_, S>, sec: SecIdx<S>, layout: &EntryLayout) -> bool {
    let s = obj.sec(sec);
    if s.size == 0 || !whole(s.size, layout.size, std::iter::once(layout)) {
        return false;
    }
    let stride = Stride {
        size: layout.size,
        source: SizeSource::Fixed,
        layout: None,
    };
    stride.entries(s.size).all(|(start, end)| {
        let relocs = s.relocs_in(start, end);
        relocs.len() == layout.fields.len()
            && relocs.iter().zip(layout.fields).all(|(r, f)| {
                let y = obj.sym(r.sym);
                let symbol_start =
                    r.addend == 0 && y.kind != SymKind::Section && !is_local_label(y);
                r.offset - start == f.at
                    && obj.reloc_kind(r.r_type) == f.kind
                    && match f.to {
                        FieldTarget::Any => true,
                        FieldTarget::SymbolStart => symbol_start,
                        FieldTarget::NotSymbolStart => !symbol_start,
                    }
            })
    })
}

/// One entry of a special section.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Entry<S: Side> {
    pub sec: SecIdx<S>,
    pub start: u64,
    pub end: u64,
    /// The bytes that are a source line number (offsets in the entry).
    pub line: Option<(u64, u64)>,
    /// The layout is known: the bytes outside relocations mean what it says. Without one only
    /// the relocations are compared (an unknown layout may hold a line number anywhere).
    pub data_known: bool,
}

/// The special-section entries of one object, by the function each belongs to, and each
/// special section's stride (or why it has none).
pub(crate) struct Entries<S: Side> {
    /// The entries sorted by the index of the function they belong to (each function's in
    /// section order), and those indices: a function's entries are a slice, found by binary
    /// search (no hashing: an object has an entry per call and return site).
    entries: Vec<Entry<S>>,
    owners: Vec<usize>,
    pub strides: Vec<(SecIdx<S>, Result<Stride, StrideError>)>,
    /// Member offsets of the target's structures (`alt_instr.replacementlen`), for how many
    /// bytes of a carved section an entry uses.
    members: HashMap<String, u64>,
}

impl<S: Side> Entries<S> {
    pub(crate) fn new(obj: &Object<'_, S>, insns: &Insns, opts: &PlanOptions) -> Self {
        let mut owned: Vec<(usize, Entry<S>)> = Vec::new();
        let mut strides = Vec::new();
        for (sec, _) in special_sections(obj, opts) {
            let st = stride(obj, sec, opts);
            let s = obj.sec(sec);
            if let Ok(st) = &st {
                if !s.relocs.is_empty() && !s.is_nobits() {
                    for (start, end) in st.entries(s.size) {
                        let owner = s.relocs_in(start, end).iter().find_map(|r| {
                            match resolve(obj, insns, sec, r) {
                                Target::Symbol { sym, .. } => {
                                    let t = obj.sym(sym);
                                    (t.kind == SymKind::Func
                                        && !t.undefined
                                        && t.section.is_some_and(|ts| obj.sec(ts).is_exec()))
                                    .then_some(sym)
                                }
                                _ => None,
                            }
                        });
                        if let Some(f) = owner {
                            owned.push((
                                f.get(),
                                Entry {
                                    sec,
                                    start,
                                    end,
                                    line: st.layout.and_then(|l| l.line),
                                    data_known: st.layout.is_some(),
                                },
                            ));
                        }
                    }
                }
            }
            strides.push((sec, st));
        }
        // Stable: each function's entries stay in section order.
        owned.sort_by_key(|&(f, _)| f);
        let (owners, entries) = owned.into_iter().unzip();
        Entries {
            entries,
            owners,
            strides,
            members: opts.member_offsets.clone(),
        }
    }

    /// The entries that belong to function `f`, in section order.
    pub(crate) fn of(&self, f: SymIdx<S>) -> &[Entry<S>] {
        let from = self.owners.partition_point(|&o| o < f.get());
        let to = from + self.owners[from..].partition_point(|&o| o == f.get());
        &self.entries[from..to]
    }

    /// The stride of special section `sec`, or why it has none; None when it is not special.
    pub(crate) fn stride_of(&self, sec: SecIdx<S>) -> Option<&Result<Stride, StrideError>> {
        self.strides
            .iter()
            .find(|(s, _)| *s == sec)
            .map(|(_, st)| st)
    }
}

/// What one entry says, comparably: its length, its bytes with relocation fields (and a line
/// number) masked, and what each relocation refers to, references into carved sections by
/// the content they use.
fn entry_key<S: Side>(
    obj: &Object<'_, S>,
    insns: &Insns,
    entries: &Entries<S>,
    e: &Entry<S>,
) -> (u64, Vec<u8>, Vec<(u64, u32, RefKey)>) {
    let s = obj.sec(e.sec);
    let bytes = s.data.get(e.start as usize..e.end as usize).unwrap_or(&[]);
    let mut masked = if e.data_known {
        bytes.to_vec()
    } else {
        Vec::new()
    };
    let relocs = s.relocs_in(e.start, e.end);
    let mut refs = Vec::with_capacity(relocs.len());
    for r in relocs {
        let at = r.offset - e.start;
        let width = obj.reloc_kind(r.r_type).width;
        if let Some(f) = masked.get_mut(at as usize..(at + width) as usize) {
            f.fill(0);
        }
        let len = obj
            .arch
            .entry_reference_len(s.name, bytes, at, &entries.members);
        let bias = obj.arch.entry_field_bias(s.name, at);
        let key = piece_ref_key(obj, insns, e.sec, r, len, bias)
            .unwrap_or_else(|| ref_key(obj, insns, e.sec, r));
        refs.push((at, r.r_type, key));
    }
    if let Some((at, width)) = e.line {
        if let Some(f) = masked.get_mut(at as usize..(at + width) as usize) {
            f.fill(0);
        }
    }
    (e.end - e.start, masked, refs)
}

impl Pair<'_, '_> {
    /// Whether two entries surely say the same, decided without building their keys
    /// ([`entry_key`]): the same length, bytes outside relocation fields and the line number,
    /// relocations at the same offsets of the same types, each to a named symbol of the same
    /// name and addend (`Pair::same_named_ref`). False means their keys must be compared: a
    /// function has an entry per call and return site, and most are this simple.
    fn entries_same(&self, a: &Entry<Orig>, b: &Entry<Patched>) -> bool {
        let (sa, sb) = (self.orig.sec(a.sec), self.patched.sec(b.sec));
        if a.end - a.start != b.end - b.start || a.data_known != b.data_known || a.line != b.line {
            return false;
        }
        let (ra, rb) = (sa.relocs_in(a.start, a.end), sb.relocs_in(b.start, b.end));
        if ra.len() != rb.len() {
            return false;
        }
        if a.data_known {
            let (Some(da), Some(db)) = (
                sa.data.get(a.start as usize..a.end as usize),
                sb.data.get(b.start as usize..b.end as usize),
            ) else {
                return false;
            };
            // As `entry_key` masks: a field only when it lies inside the entry.
            let len = a.end - a.start;
            let inside = |k: u64, at: u64, w: u64| at + w <= len && k >= at && k < at + w;
            let masked = |k: u64| {
                a.line.is_some_and(|(at, w)| inside(k, at, w))
                    || ra.iter().any(|r| {
                        inside(k, r.offset - a.start, self.orig.reloc_kind(r.r_type).width)
                    })
            };
            if da
                .iter()
                .zip(db)
                .enumerate()
                .any(|(k, (x, y))| x != y && !masked(k as u64))
            {
                return false;
            }
        }
        ra.iter().zip(rb).all(|(x, y)| {
            x.offset - a.start == y.offset - b.start
                && x.r_type == y.r_type
                && self.same_named_ref(a.sec, x, b.sec, y)
        })
    }

    /// Compare the special-section entries of two versions of a function: None when they
    /// say the same, else the first difference.
    pub(crate) fn compare_entries(&self, o: SymIdx<Orig>, p: SymIdx<Patched>) -> Option<String> {
        let (oe, pe) = (self.orig_entries.of(o), self.patched_entries.of(p));
        if oe.is_empty() && pe.is_empty() {
            return None;
        }
        let name_o = |e: &Entry<Orig>| self.orig.sec(e.sec).name;
        let name_p = |e: &Entry<Patched>| self.patched.sec(e.sec).name;
        // Most functions' entries are all the same, pairwise in order (each object lists
        // them by special section in the same order): no need to group them by section.
        if oe.len() == pe.len()
            && oe
                .iter()
                .zip(pe)
                .all(|(a, b)| name_o(a) == name_p(b) && self.entries_same(a, b))
        {
            return None;
        }
        let mut sections: Vec<&str> = oe.iter().map(name_o).chain(pe.iter().map(name_p)).collect();
        sections.sort_unstable();
        sections.dedup();
        for sec in sections {
            let os: Vec<_> = oe.iter().filter(|e| name_o(e) == sec).collect();
            let ps: Vec<_> = pe.iter().filter(|e| name_p(e) == sec).collect();
            if os.len() != ps.len() {
                return Some(format!("{} {sec} entries -> {}", os.len(), ps.len()));
            }
            for (k, (a, b)) in os.iter().zip(&ps).enumerate() {
                if self.entries_same(a, b) {
                    continue;
                }
                let ka = entry_key(self.orig, self.orig_insns, self.orig_entries, a);
                let kb = entry_key(self.patched, self.patched_insns, self.patched_entries, b);
                if ka == kb {
                    continue;
                }
                let what = if ka.0 != kb.0 || ka.1 != kb.1 {
                    "its bytes differ".to_string()
                } else {
                    match ka.2.iter().zip(&kb.2).find(|(x, y)| x != y) {
                        Some((x, y)) if x.0 == y.0 && x.1 == y.1 => format!(
                            "the reference at +{:#x}: {} -> {}",
                            x.0,
                            crate::refs::describe(&x.2),
                            crate::refs::describe(&y.2)
                        ),
                        _ => "its relocations differ".to_string(),
                    }
                };
                return Some(format!("its {sec} entry {k} changed: {what}"));
            }
        }
        None
    }
}
