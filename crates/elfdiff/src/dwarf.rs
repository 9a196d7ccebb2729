//! Structure layouts from a target's DWARF (vmlinux or a module): the sizes and member offsets
//! of kernel structures such as `klp_func` or `bug_entry`, so nothing is hand-copied. They give
//! the `klp_*` structures of the Rust hook (`patchgen::kmod`), the entry sizes of special
//! sections, and the members the plan reads (`plan::LAYOUT_MEMBERS`: `pi_entry.fmt`/`func`,
//! `alt_instr.repl_offset`/`replacementlen`); `src/kernel.rs` `target_layouts` collects them,
//! `klpgen build --debug` shows them, and without DWARF the plan assumes the known layouts.

use std::borrow::Cow;
use std::collections::HashMap;

use gimli::{AttributeValue, EndianSlice, RunTimeEndian, UnitOffset};
use object::{Object as _, ObjectSection as _};

use crate::error::Error;

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Member {
    pub name: String,
    pub offset: u64,
    /// Size in bytes of the member's type, when DWARF gives one.
    pub size: Option<u64>,
    /// Whether the member's type is a pointer.
    pub pointer: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct StructLayout {
    pub name: String,
    pub size: u64,
    pub align: u64,
    pub members: Vec<Member>,
}

impl StructLayout {
    pub fn member(&self, name: &str) -> Option<&Member> {
        self.members.iter().find(|m| m.name == name)
    }
}

type R<'a> = EndianSlice<'a, RunTimeEndian>;

fn dwarf_err(what: &str, e: impl std::fmt::Display) -> Error {
    Error::Dwarf {
        what: what.to_string(),
        detail: e.to_string(),
    }
}

/// Find the complete definitions of the named structures. Units whose name contains
/// `prefer` are searched first; the search stops once all are found. Missing ones are
/// simply absent from the result.
pub fn struct_layouts(
    label: &str,
    data: &[u8],
    wanted: &[&str],
    prefer: &str,
) -> Result<HashMap<String, StructLayout>, Error> {
    let file = object::File::parse(data).map_err(|e| dwarf_err(label, e))?;
    let load = |id: gimli::SectionId| -> Result<Cow<'_, [u8]>, gimli::Error> {
        Ok(file
            .section_by_name(id.name())
            .and_then(|s| s.uncompressed_data().ok())
            .unwrap_or(Cow::Borrowed(&[])))
    };
    let owned = gimli::DwarfSections::load(load).map_err(|e| dwarf_err(label, e))?;
    // The target's byte order (s390x is big-endian).
    let endian = if file.is_little_endian() {
        RunTimeEndian::Little
    } else {
        RunTimeEndian::Big
    };
    let dwarf = owned.borrow(|s| EndianSlice::new(s, endian));

    let mut headers = Vec::new();
    let mut iter = dwarf.units();
    while let Some(h) = iter.next().map_err(|e| dwarf_err(label, e))? {
        headers.push(h);
    }
    if headers.is_empty() {
        return Err(dwarf_err(
            label,
            "no DWARF debug information (build the target with CONFIG_DEBUG_INFO)",
        ));
    }
    // Preferred units first.
    let mut order: Vec<(bool, usize)> = Vec::with_capacity(headers.len());
    for (i, h) in headers.iter().enumerate() {
        let unit = dwarf.unit(*h).map_err(|e| dwarf_err(label, e))?;
        let name = unit
            .name
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        order.push((prefer.is_empty() || !name.contains(prefer), i));
    }
    order.sort();

    let mut found = HashMap::new();
    for (_, i) in order {
        if found.len() == wanted.len() {
            break;
        }
        let unit = dwarf.unit(headers[i]).map_err(|e| dwarf_err(label, e))?;
        let mut cursor = unit.entries();
        while let Some((_, entry)) = cursor.next_dfs().map_err(|e| dwarf_err(label, e))? {
            if entry.tag() != gimli::DW_TAG_structure_type {
                continue;
            }
            if entry
                .attr(gimli::DW_AT_declaration)
                .ok()
                .flatten()
                .is_some()
            {
                continue;
            }
            let Some(name) = attr_string(
                &dwarf,
                &unit,
                entry.attr_value(gimli::DW_AT_name).ok().flatten(),
            ) else {
                continue;
            };
            if !wanted.contains(&name.as_str()) || found.contains_key(&name) {
                continue;
            }
            let Some(size) = entry
                .attr_value(gimli::DW_AT_byte_size)
                .ok()
                .flatten()
                .and_then(|v| v.udata_value())
            else {
                continue;
            };
            let offset = entry.offset();
            let layout = read_struct(&dwarf, &unit, offset, name.clone(), size)
                .map_err(|e| dwarf_err(label, e))?;
            found.insert(name, layout);
        }
    }
    Ok(found)
}

fn attr_string(
    dwarf: &gimli::Dwarf<R<'_>>,
    unit: &gimli::Unit<R<'_>>,
    v: Option<AttributeValue<R<'_>>>,
) -> Option<String> {
    let s = dwarf.attr_string(unit, v?).ok()?;
    Some(s.to_string_lossy().into_owned())
}

fn read_struct(
    dwarf: &gimli::Dwarf<R<'_>>,
    unit: &gimli::Unit<R<'_>>,
    offset: UnitOffset,
    name: String,
    size: u64,
) -> Result<StructLayout, gimli::Error> {
    let mut tree = unit.entries_tree(Some(offset))?;
    let root = tree.root()?;
    let mut children = root.children();
    let mut members = Vec::new();
    let mut align = 1;
    while let Some(child) = children.next()? {
        let e = child.entry();
        if e.tag() != gimli::DW_TAG_member {
            continue;
        }
        let mname = attr_string(dwarf, unit, e.attr_value(gimli::DW_AT_name)?).unwrap_or_default();
        let Some(off) = e
            .attr_value(gimli::DW_AT_data_member_location)?
            .and_then(|v| v.udata_value())
        else {
            continue; // bit-fields and the like: not needed
        };
        let (msize, pointer, malign) = match e.attr_value(gimli::DW_AT_type)? {
            Some(AttributeValue::UnitRef(t)) => type_info(unit, t, 0)?,
            _ => (None, false, 1),
        };
        align = align.max(malign);
        members.push(Member {
            name: mname,
            offset: off,
            size: msize,
            pointer,
        });
    }
    Ok(StructLayout {
        name,
        size,
        align,
        members,
    })
}

/// (size, is pointer, alignment guess) of a type, following typedefs and qualifiers.
fn type_info(
    unit: &gimli::Unit<R<'_>>,
    offset: UnitOffset,
    depth: u32,
) -> Result<(Option<u64>, bool, u64), gimli::Error> {
    if depth > 16 {
        return Ok((None, false, 1));
    }
    let e = unit.entry(offset)?;
    let size = e
        .attr_value(gimli::DW_AT_byte_size)?
        .and_then(|v| v.udata_value());
    match e.tag() {
        gimli::DW_TAG_pointer_type => {
            let s = size.unwrap_or(u64::from(unit.encoding().address_size));
            Ok((Some(s), true, s))
        }
        gimli::DW_TAG_base_type | gimli::DW_TAG_enumeration_type => {
            let s = size.unwrap_or(1);
            Ok((Some(s), false, s.clamp(1, 8)))
        }
        gimli::DW_TAG_structure_type | gimli::DW_TAG_union_type | gimli::DW_TAG_array_type => {
            // Alignment of aggregates: assume natural pointer alignment when large enough.
            let s = size;
            let a = match s {
                Some(n) if n >= 8 => 8,
                Some(n) if n >= 4 => 4,
                _ => 1,
            };
            Ok((s, false, a))
        }
        _ => match e.attr_value(gimli::DW_AT_type)? {
            Some(AttributeValue::UnitRef(t)) => {
                let (s, p, a) = type_info(unit, t, depth + 1)?;
                Ok((size.or(s), p, a))
            }
            _ => Ok((size, false, 1)),
        },
    }
}
