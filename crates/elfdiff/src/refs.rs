//! What a relocation refers to: resolved past section symbols and local labels to a named
//! symbol, a string of a merged-string section, or anonymous bytes of a section; and the
//! comparable identity of that target ([`RefKey`]), which is what the differ compares instead
//! of section offsets that move between builds. A UBSAN check site's record is compared by
//! what it says but its source location's line and column, which only show moved lines, and
//! by what its own relocations refer to (`Ubsan`).

use crate::arch::{Flow, InsnMap};
use crate::model::{Bind, Object, Orig, Patched, Reloc, SecIdx, Side, SymIdx, SymKind, Symbol};
use crate::names::{is_prefix_symbol, normalize, normalize_section};

/// Per-section decoded instruction boundaries, for finding where PC-relative relocations point.
pub(crate) struct Insns {
    maps: Vec<Option<InsnMap>>,
}

impl Insns {
    pub(crate) fn new<S: Side>(obj: &Object<'_, S>) -> Self {
        let maps = obj
            .sections
            .iter()
            .map(|s| {
                (s.is_exec() && !s.relocs.is_empty() && !s.data.is_empty())
                    .then(|| obj.arch.decode(s.data))
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
        obj.arch.decode_flow(bytes, start, &mut out);
        out.first()
            .is_some_and(|i| i.flow != Flow::Other && i.field == r.offset)
    }

    /// The distance from relocation `r`'s field to the address the CPU adds it to; 0 outside
    /// code (a PC-relative field in data counts from itself).
    pub(crate) fn bias<S: Side>(&self, obj: &Object<'_, S>, sec: SecIdx<S>, r: &Reloc<S>) -> i64 {
        match &self.maps[sec.get()] {
            Some(map) => obj
                .arch
                .pcrel_bias(r.r_type, r.offset, map.containing(r.offset)),
            None => 0,
        }
    }
}

/// The two objects of a diff with their decoded code: what every phase of the differ reads.
#[derive(Clone, Copy)]
pub(crate) struct Pair<'x, 'd> {
    pub orig: &'x Object<'d, Orig>,
    pub patched: &'x Object<'d, Patched>,
    pub orig_insns: &'x Insns,
    pub patched_insns: &'x Insns,
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
    key(obj, insns, site, r, true)
}

/// [`ref_key`]; `nested`: a UBSAN record's own relocations are followed (one level: they
/// point at strings and type descriptors).
fn key<S: Side>(
    obj: &Object<'_, S>,
    insns: &Insns,
    site: SecIdx<S>,
    r: &Reloc<S>,
    nested: bool,
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
            if let Some(slot) = slot_reloc(obj, sec, offset) {
                return RefKey::Slot(Box::new(key(obj, insns, sec, slot, nested)));
            }
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
                .map(|r| key(obj, insns, sec, r, false))
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

/// A reference target as a message shows it.
pub(crate) fn describe(k: &RefKey) -> String {
    match k {
        RefKey::Sym(n, a) => format!("{n}{a:+}"),
        RefKey::Str(s, _) => format!("{:?}", String::from_utf8_lossy(s)),
        RefKey::Anon(sec, off, _) | RefKey::Ubsan(sec, off, ..) => format!(".{sec}{off:+}"),
        RefKey::Slot(k) => format!("slot of {}", describe(k)),
    }
}
