//! What a relocation refers to: resolved past section symbols and local labels to a named
//! symbol, a string of a merged-string section, or anonymous bytes of a section; and the
//! comparable identity of that target ([`RefKey`]), which is what the differ compares instead
//! of section offsets that move between builds. A UBSAN check site's record is compared by
//! what it says but its source location's line and column, which only show moved lines, and
//! by what its own relocations refer to (`Ubsan`).
//!
//! A reference into a section copied piece by piece (`Arch::carved_code_sections`: x86's
//! `.altinstr_aux`, `.fixup`, `.altinstr_replacement`) is compared by the content of the piece
//! it points into, not by its offset, which moves whenever another function's piece comes or
//! goes: the piece's bytes (relocation fields masked), what its own relocations refer to, and
//! for code that runs where it lies, the pieces it runs on into. The pieces are cut as the
//! plan cuts them (`carve.rs`): at every offset an allocated section refers to.

use std::sync::OnceLock;

use crate::arch::{Flow, InsnMap};
use crate::entries::{known_special, Entries};
use crate::model::{Bind, Object, Orig, Patched, Reloc, SecIdx, Side, SymIdx, SymKind, Symbol};
use crate::names::{is_prefix_symbol, normalize, normalize_section};

/// Per-section decoded instruction boundaries, for finding where PC-relative relocations
/// point, and the pieces of the carved sections.
pub(crate) struct Insns {
    /// Each code section's instruction boundaries, decoded the first time a relocation in it
    /// needs them (a section symbol or local label as target, a branch question): most of an
    /// object's functions refer only to named symbols, and decoding is most of a diff's cost.
    maps: Vec<OnceLock<Option<InsnMap>>>,
    carved: Vec<Option<Pieces>>,
}

/// The cuts of a carved section: sorted offsets where its pieces start (0 first), and whether
/// its code runs where it lies (a piece may run on into the next).
struct Pieces {
    cuts: Vec<u64>,
    in_place: bool,
}

impl Insns {
    pub(crate) fn new<S: Side>(obj: &Object<'_, S>) -> Self {
        let maps = obj.sections.iter().map(|_| OnceLock::new()).collect();
        let mut insns = Insns {
            maps,
            carved: Vec::new(),
        };
        let mut carved: Vec<Option<Pieces>> = obj
            .sections
            .iter()
            .map(|s| {
                let c = obj.arch.carved_code(s.name)?;
                (!s.is_nobits()).then(|| Pieces {
                    cuts: vec![0],
                    in_place: c.in_place,
                })
            })
            .collect();
        if carved.iter().any(Option::is_some) {
            for site in obj.section_indices() {
                if !obj.sec(site).is_alloc() {
                    continue;
                }
                for r in &obj.sec(site).relocs {
                    let y = obj.sym(r.sym);
                    let Some(ts) = y.section.filter(|_| !y.undefined) else {
                        continue;
                    };
                    let Some(p) = carved[ts.get()].as_mut() else {
                        continue;
                    };
                    let x = (y.value as i64)
                        .wrapping_add(r.addend)
                        .wrapping_add(insns.bias(obj, site, r))
                        .wrapping_add(fixed_entry_bias(obj, site, r.offset));
                    if let Ok(x) = u64::try_from(x) {
                        if x < obj.sec(ts).size {
                            p.cuts.push(x);
                        }
                    }
                }
            }
            for p in carved.iter_mut().flatten() {
                p.cuts.sort_unstable();
                p.cuts.dedup();
            }
        }
        insns.carved = carved;
        insns
    }

    /// The bytes `[start, end)` of carved section `sec` that a reference to `offset` uses:
    /// `len` bytes when the referrer says, else the piece holding `offset` and, for code that
    /// runs where it lies, the pieces it runs on into. None when `sec` is not carved or
    /// `offset` lies outside it.
    fn piece_span<S: Side>(
        &self,
        obj: &Object<'_, S>,
        sec: SecIdx<S>,
        offset: i64,
        len: Option<u64>,
    ) -> Option<(u64, u64)> {
        let p = self.carved.get(sec.get())?.as_ref()?;
        let s = obj.sec(sec);
        let x = u64::try_from(offset).ok().filter(|&x| x <= s.size)?;
        if let Some(l) = len {
            return Some((x, x.saturating_add(l).min(s.size)));
        }
        if x == s.size {
            return Some((x, x));
        }
        let i = p.cuts.partition_point(|&c| c <= x).checked_sub(1)?;
        let start = p.cuts[i];
        let mut k = i + 1;
        let mut end = p.cuts.get(k).copied().unwrap_or(s.size);
        while p.in_place && end < s.size {
            let code = s.data.get(start as usize..end as usize)?;
            if !obj.arch.falls_through(code) {
                break;
            }
            k += 1;
            end = p.cuts.get(k).copied().unwrap_or(s.size);
        }
        Some((start, end))
    }

    /// The instruction boundaries of section `sec` (decoded now if not yet); None where it
    /// is not code with relocations.
    fn map<S: Side>(&self, obj: &Object<'_, S>, sec: SecIdx<S>) -> Option<&InsnMap> {
        self.maps[sec.get()]
            .get_or_init(|| {
                let s = obj.sec(sec);
                (s.is_exec() && !s.relocs.is_empty() && !s.data.is_empty())
                    .then(|| obj.arch.decode(s.data))
            })
            .as_ref()
    }

    /// The decoded instruction `[start, end)` of code section `sec` holding `offset`.
    pub(crate) fn insn_at<S: Side>(
        &self,
        obj: &Object<'_, S>,
        sec: SecIdx<S>,
        offset: u64,
    ) -> Option<(u64, u64)> {
        self.map(obj, sec)?.containing(offset)
    }

    /// Whether relocation `r` fills the target of a direct call or jump.
    pub(crate) fn is_branch<S: Side>(
        &self,
        obj: &Object<'_, S>,
        sec: SecIdx<S>,
        r: &Reloc<S>,
    ) -> bool {
        let Some(map) = self.map(obj, sec) else {
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
        obj.arch.decode_flow(bytes, start, &mut out);
        out.first()
            .is_some_and(|i| i.flow != Flow::Other && i.field == r.offset)
    }

    /// The distance from relocation `r`'s field to the address the CPU adds it to; 0 outside
    /// code (a PC-relative field in data counts from itself).
    pub(crate) fn bias<S: Side>(&self, obj: &Object<'_, S>, sec: SecIdx<S>, r: &Reloc<S>) -> i64 {
        if !obj.arch.pcrel_bias_reads_insn(r.r_type) {
            return obj.arch.pcrel_bias(r.r_type, r.offset, None);
        }
        match self.map(obj, sec) {
            Some(map) => obj
                .arch
                .pcrel_bias(r.r_type, r.offset, map.containing(r.offset)),
            None => 0,
        }
    }
}

/// The two objects of a diff with their decoded code and special-section entries: what every
/// phase of the differ reads.
#[derive(Clone, Copy)]
pub(crate) struct Pair<'x, 'd> {
    pub orig: &'x Object<'d, Orig>,
    pub patched: &'x Object<'d, Patched>,
    pub orig_insns: &'x Insns,
    pub patched_insns: &'x Insns,
    pub orig_entries: &'x Entries<Orig>,
    pub patched_entries: &'x Entries<Patched>,
}

impl Pair<'_, '_> {
    /// Whether relocation `ro` of the original's section `osec` and `rp` of the patched's
    /// `psec` surely refer to the same thing, decided without building their keys: both go to
    /// a named symbol of the same name with the same addend (the keys would be equal). False
    /// means their keys must be compared ([`ref_key`]); most references are the cheap kind.
    pub(crate) fn same_named_ref(
        &self,
        osec: SecIdx<Orig>,
        ro: &Reloc<Orig>,
        psec: SecIdx<Patched>,
        rp: &Reloc<Patched>,
    ) -> bool {
        self.same_named_ref_in(osec, ro, psec, rp, false)
    }

    /// [`Pair::same_named_ref`]; `same_code`: the two sections are the same code (equal
    /// bytes, relocation fields at the same places), so the patched field's instruction ends
    /// where the original's does and the original's decoding answers for both.
    pub(crate) fn same_named_ref_in(
        &self,
        osec: SecIdx<Orig>,
        ro: &Reloc<Orig>,
        psec: SecIdx<Patched>,
        rp: &Reloc<Patched>,
        same_code: bool,
    ) -> bool {
        match (
            resolve(self.orig, self.orig_insns, osec, ro),
            self.resolve_patched_in(osec, ro, psec, rp, same_code),
        ) {
            (Target::Symbol { sym: a, addend: x }, Target::Symbol { sym: b, addend: y }) => {
                x == y && self.orig.sym(a).name == self.patched.sym(b).name
            }
            _ => false,
        }
    }

    /// Where the patched relocation `rp` points; with `same_code` (see
    /// [`Pair::same_named_ref_in`]) its bias is that of the original's `ro` at the same place.
    pub(crate) fn resolve_patched_in(
        &self,
        osec: SecIdx<Orig>,
        ro: &Reloc<Orig>,
        psec: SecIdx<Patched>,
        rp: &Reloc<Patched>,
        same_code: bool,
    ) -> Target<Patched> {
        if same_code {
            resolve_biased(self.patched, rp, || {
                self.orig_insns.bias(self.orig, osec, ro)
            })
        } else {
            resolve(self.patched, self.patched_insns, psec, rp)
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
    /// An address slot of the machine's slot section (ppc64 `.toc`): what the slot holds,
    /// since the slots of a unit move when the patch adds or drops one.
    Slot(Box<RefKey>),
    /// Into a piece of a carved section: the section, the distance from the piece's start,
    /// and the piece's content (bytes with relocation fields masked, and each relocation's
    /// offset in the piece, type and target).
    Piece(String, i64, Box<PieceContent>),
    /// A UBSAN record ([`ubsan_section`]): its section's name without the number, the
    /// offset, its bytes with the source location's line and column zeroed, and what its
    /// own relocations (file name, type descriptors) refer to.
    Ubsan(String, i64, Vec<u8>, Vec<RefKey>),
}

/// What a section of UBSAN's check-site data holds: GCC gives every record of
/// `-fsanitize=...` its own section under an assembler-local label (`.data..Lubsan_data<N>`,
/// `.data.rel.local..Lubsan_data<N>` in PIC code, `.Lubsan_data<N>`; type descriptors
/// `...Lubsan_type<N>`), numbered in the order of emission, so a new check site renumbers
/// those after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ubsan {
    /// A check site's record: it starts with `struct source_location { const char
    /// *file_name; u32 line; u32 column; }` (the kernel's `lib/ubsan.h`), the type pointers
    /// and flags of the check after it.
    Data,
    /// A type descriptor (`u16 kind, u16 info, char name[]`).
    Type,
}

/// Offsets of the source location's line and column in a UBSAN record (after the 8-byte
/// file name pointer): where only the patch's moved lines show.
const UBSAN_LINE_COLUMN: std::ops::Range<usize> = 8..16;

/// Whether section `name` holds UBSAN data, and which.
pub(crate) fn ubsan_section(name: &str) -> Option<Ubsan> {
    let label = name.rsplit("..").next().unwrap_or(name);
    let label = label.strip_prefix('.').unwrap_or(label);
    let stem = label.trim_end_matches(|c: char| c.is_ascii_digit());
    match stem {
        "Lubsan_data" => Some(Ubsan::Data),
        "Lubsan_type" => Some(Ubsan::Type),
        _ => None,
    }
}

/// What a piece of a carved section holds, comparably.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct PieceContent {
    bytes: Vec<u8>,
    relocs: Vec<(u64, u32, RefKey)>,
}

impl PieceContent {
    /// A short digest of the content (FNV-1a over the bytes and what each relocation refers
    /// to), so that a message tells two different pieces apart.
    fn digest(&self) -> u32 {
        let mut h: u32 = 0x811c_9dc5;
        let mut eat = |b: &[u8]| {
            for &x in b {
                h = (h ^ u32::from(x)).wrapping_mul(0x0100_0193);
            }
        };
        eat(&self.bytes);
        for (at, ty, k) in &self.relocs {
            eat(&at.to_le_bytes());
            eat(&ty.to_le_bytes());
            eat(describe(k).as_bytes());
        }
        h
    }
}

/// How deep references from pieces into pieces are followed before their offsets stand for
/// them (pieces do not refer to each other in real objects; malformed ones may loop).
const PIECE_DEPTH: u32 = 4;

pub(crate) fn resolve<S: Side>(
    obj: &Object<'_, S>,
    insns: &Insns,
    site: SecIdx<S>,
    r: &Reloc<S>,
) -> Target<S> {
    resolve_biased(obj, r, || insns.bias(obj, site, r))
}

/// [`resolve`], with `bias` giving the relocation's bias ([`Insns::bias`]) when a section
/// symbol or local label needs it.
fn resolve_biased<S: Side>(
    obj: &Object<'_, S>,
    r: &Reloc<S>,
    bias: impl FnOnce() -> i64,
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
    let bias = bias();
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
    s.kind == SymKind::NoType && s.bind == Bind::Local && s.name.starts_with(".L")
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
    ref_key_at(obj, insns, site, r, PIECE_DEPTH, true)
}

/// The key of a reference into a carved section by the content it uses (`len` bytes when the
/// referrer says how many, `Arch::entry_reference_len`; `entry_bias`: where the field of a
/// special-section entry counts from, `Arch::entry_field_bias`); None when it points
/// elsewhere.
pub(crate) fn piece_ref_key<S: Side>(
    obj: &Object<'_, S>,
    insns: &Insns,
    site: SecIdx<S>,
    r: &Reloc<S>,
    len: Option<u64>,
    entry_bias: i64,
) -> Option<RefKey> {
    match resolve(obj, insns, site, r) {
        Target::Anon { sec, offset } => piece_key(
            obj,
            insns,
            sec,
            offset.wrapping_add(entry_bias),
            len,
            PIECE_DEPTH,
        ),
        _ => None,
    }
}

fn piece_key<S: Side>(
    obj: &Object<'_, S>,
    insns: &Insns,
    sec: SecIdx<S>,
    offset: i64,
    len: Option<u64>,
    depth: u32,
) -> Option<RefKey> {
    if depth == 0 {
        return None;
    }
    let (start, end) = insns.piece_span(obj, sec, offset, len)?;
    let s = obj.sec(sec);
    let mut bytes = s.data.get(start as usize..end as usize)?.to_vec();
    let relocs = s.relocs_in(start, end);
    let mut refs = Vec::with_capacity(relocs.len());
    for r in relocs {
        let at = r.offset - start;
        let kind = obj.reloc_kind(r.r_type);
        let w = kind.width as usize;
        if let Some(f) = bytes.get_mut(at as usize..(at as usize).saturating_add(w)) {
            // The field's bits only: the instruction's own (a `b` or a `bl`) are content.
            kind.clear(f, obj.arch.endianness());
        }
        refs.push((
            at,
            r.r_type,
            ref_key_at(obj, insns, sec, r, depth - 1, true),
        ));
    }
    Some(RefKey::Piece(
        normalize_section(s.name),
        offset.wrapping_sub(start as i64),
        Box::new(PieceContent {
            bytes,
            relocs: refs,
        }),
    ))
}

fn ref_key_at<S: Side>(
    obj: &Object<'_, S>,
    insns: &Insns,
    site: SecIdx<S>,
    r: &Reloc<S>,
    depth: u32,
    nested: bool,
) -> RefKey {
    ref_key_to(obj, insns, r, resolve(obj, insns, site, r), depth, nested)
}

/// The key of the patched relocation `rp` of a comparison, resolved as
/// [`Pair::resolve_patched_in`] does.
pub(crate) fn patched_ref_key_in(
    pair: &Pair<'_, '_>,
    osec: SecIdx<Orig>,
    ro: &Reloc<Orig>,
    psec: SecIdx<Patched>,
    rp: &Reloc<Patched>,
    same_code: bool,
) -> RefKey {
    let target = pair.resolve_patched_in(osec, ro, psec, rp, same_code);
    ref_key_to(
        pair.patched,
        pair.patched_insns,
        rp,
        target,
        PIECE_DEPTH,
        true,
    )
}

/// The key of relocation `r`, which points at `target`.
fn ref_key_to<S: Side>(
    obj: &Object<'_, S>,
    insns: &Insns,
    r: &Reloc<S>,
    target: Target<S>,
    depth: u32,
    nested: bool,
) -> RefKey {
    match target {
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
            // A slot (ppc64 `.toc`, also carved per entry) stands for what it holds, not for
            // its bytes.
            if let Some(slot) = slot_reloc(obj, sec, offset) {
                return RefKey::Slot(Box::new(ref_key_at(obj, insns, sec, slot, depth, nested)));
            }
            if let Some(k) = piece_key(obj, insns, sec, offset, None, depth) {
                return k;
            }
            let s = obj.sec(sec);
            let Some(kind) = ubsan_section(s.name) else {
                return RefKey::Anon(normalize_section(s.name), offset, s.data.to_vec());
            };
            // The number in the name is the order of emission.
            let name = normalize_section(s.name.trim_end_matches(|c: char| c.is_ascii_digit()));
            if !nested {
                return RefKey::Anon(name, offset, s.data.to_vec());
            }
            // The line and column are where the check site is in the source: a patch that
            // moves lines changes only them (the code that reports through the record is
            // compared on its own).
            let mut data = s.data.to_vec();
            if kind == Ubsan::Data {
                if let Some(loc) = data.get_mut(UBSAN_LINE_COLUMN) {
                    loc.fill(0);
                }
            }
            let refs = s
                .relocs
                .iter()
                .map(|r| ref_key_at(obj, insns, sec, r, depth, false))
                .collect();
            RefKey::Ubsan(name, offset, data, refs)
        }
    }
}

/// The relocation filling the address slot at `offset` of `sec`, when `sec` is the machine's
/// slot section and a pointer-sized relocation starts exactly there.
pub(crate) fn slot_reloc<'o, S: Side>(
    obj: &'o Object<'_, S>,
    sec: SecIdx<S>,
    offset: i64,
) -> Option<&'o Reloc<S>> {
    let s = obj.sec(sec);
    if obj.arch.slot_section() != Some(s.name) {
        return None;
    }
    let at = u64::try_from(offset).ok()?;
    s.relocs_in(at, at + 1)
        .iter()
        .find(|r| r.offset == at && obj.reloc_kind(r.r_type).width == 8)
}

/// Where the field at `offset` of special section `site` counts from, relative to the field
/// ([`Arch::entry_field_bias`](crate::arch::Arch::entry_field_bias), by the machine's fixed
/// entry size): the pieces are cut where the plan cuts them, which reads the same bias.
fn fixed_entry_bias<S: Side>(obj: &Object<'_, S>, site: SecIdx<S>, offset: u64) -> i64 {
    let name = obj.sec(site).name;
    match known_special(obj.arch, name).and_then(|s| s.entry_size) {
        Some(size) if size > 0 => obj.arch.entry_field_bias(name, offset % size),
        _ => 0,
    }
}

/// A reference target as a message shows it.
pub(crate) fn describe(k: &RefKey) -> String {
    match k {
        RefKey::Sym(n, a) => format!("{n}{a:+}"),
        RefKey::Str(s, _) => format!("{:?}", String::from_utf8_lossy(s)),
        RefKey::Anon(sec, off, _) | RefKey::Ubsan(sec, off, ..) => format!(".{sec}{off:+}"),
        RefKey::Slot(k) => format!("slot of {}", describe(k)),
        RefKey::Piece(sec, off, c) => format!(
            ".{sec}{off:+} (a {}-byte piece, content {:08x})",
            c.bytes.len(),
            c.digest()
        ),
    }
}
