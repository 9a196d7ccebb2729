//! Checks that a livepatch `.ko` carries ORC unwind data for its functions. An ORC entry
//! (`.orc_unwind_ip[i]` an address, `.orc_unwind[i]` how to unwind there) governs the code from
//! its address up to the next entry of its section; objtool ends each section with an entry of
//! type "undefined". So a function has unwind data when the entry governing its first byte (the
//! last entry of its section at or before it) is of a defined type. `__pfx_`/`__cfi_` padding
//! symbols are not functions of their own. Without this the ORC unwinder cannot walk through the
//! livepatch's code: stack traces through it are unreliable and the livepatch transition of a
//! task sleeping in it never ends.
//!
//! The entry's layout changed in Linux 6.4 ([`Layout`]): before, "undefined" is an entry whose
//! `sp_reg` is `ORC_REG_UNDEFINED` (the type field, 2 bits, has no such value); from 6.4 on it
//! is the type `ORC_TYPE_UNDEFINED` of a 3-bit field.

use anyhow::{bail, Context, Result};
use object::{Object, ObjectSection, ObjectSymbol, RelocationTarget, SymbolKind};

/// `.orc_unwind_ip` entries (4 bytes) and `.orc_unwind` entries (6 bytes) on x86-64.
const IP_ENTRY: u64 = 4;
const ORC_ENTRY: usize = 6;
/// `ORC_TYPE_UNDEFINED` (bits 8..10 of the entry's last 16-bit word, Linux 6.4 and later).
const ORC_TYPE_UNDEFINED: u16 = 0;
/// `ORC_REG_UNDEFINED` (`sp_reg`, bits 0..3 of that word, before Linux 6.4).
const ORC_REG_UNDEFINED: u16 = 0;

/// The `struct orc_entry` of the target kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// Before Linux 6.4: `sp_reg:4 bp_reg:4 type:2 end:1`.
    Before6_4,
    /// Linux 6.4 and later: `sp_reg:4 bp_reg:4 type:3 signal:1`.
    Since6_4,
}

impl Layout {
    /// The layout of kernel version `major.minor`.
    pub fn of_version(major: u32, minor: u32) -> Layout {
        if (major, minor) < (6, 4) {
            Layout::Before6_4
        } else {
            Layout::Since6_4
        }
    }

    /// The layout of the kernel whose source tree is `src` (its Makefile's VERSION and
    /// PATCHLEVEL).
    pub fn of_source(src: &std::path::Path) -> Result<Layout> {
        let path = src.join("Makefile");
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let field = |name: &str| -> Result<u32> {
            text.lines()
                .find_map(|l| {
                    let (k, v) = l.split_once('=')?;
                    (k.trim() == name).then(|| v.trim().parse().ok())?
                })
                .with_context(|| format!("{} has no {name}", path.display()))
        };
        Ok(Layout::of_version(field("VERSION")?, field("PATCHLEVEL")?))
    }

    /// Whether an entry leaves the code it governs without unwind data.
    fn undefined(self, entry: &[u8]) -> bool {
        let word = u16::from_le_bytes([entry[4], entry[5]]);
        match self {
            Layout::Before6_4 => word & 0xf == ORC_REG_UNDEFINED,
            Layout::Since6_4 => (word >> 8) & 7 == ORC_TYPE_UNDEFINED,
        }
    }
}

/// Number of ORC entries and the functions without unwind data.
pub fn coverage(ko: &[u8], layout: Layout) -> Result<(usize, Vec<String>)> {
    let file = object::File::parse(ko).context("parsing the module")?;
    let Some(ip) = file.section_by_name(".orc_unwind_ip") else {
        bail!("the module has no .orc_unwind_ip section");
    };
    let orc = file
        .section_by_name(".orc_unwind")
        .context("the module has no .orc_unwind section")?;
    let orc_data = orc.data()?;
    let entries = ip.size() / IP_ENTRY;
    if orc_data.len() as u64 != entries * ORC_ENTRY as u64 {
        bail!(
            ".orc_unwind has {} bytes for {entries} .orc_unwind_ip entries",
            orc_data.len()
        );
    }
    // Each entry is a PC-relative reference: its relocation names the code address.
    let mut addrs = Vec::new();
    for (off, r) in ip.relocations() {
        let RelocationTarget::Symbol(si) = r.target() else {
            continue;
        };
        let sym = file.symbol_by_index(si)?;
        let Some(sec) = sym.section_index() else {
            continue;
        };
        let i = (off / IP_ENTRY) as usize;
        let undefined = layout.undefined(&orc_data[i * ORC_ENTRY..(i + 1) * ORC_ENTRY]);
        addrs.push((
            sec,
            sym.address().wrapping_add_signed(r.addend()),
            undefined,
        ));
    }
    if addrs.len() as u64 != entries {
        bail!(
            ".orc_unwind_ip has {entries} entries but {} relocations into the module's code",
            addrs.len()
        );
    }
    let mut uncovered = Vec::new();
    for s in file.symbols() {
        if s.kind() != SymbolKind::Text || !s.is_definition() || s.size() == 0 {
            continue;
        }
        let name = s.name().unwrap_or("");
        if name.starts_with("__pfx_") || name.starts_with("__cfi_") {
            continue;
        }
        let Some(sec) = s.section_index() else {
            continue;
        };
        let governing = addrs
            .iter()
            .filter(|&&(x, a, _)| x == sec && a <= s.address())
            .max_by_key(|&&(_, a, _)| a);
        if !matches!(governing, Some(&(_, _, false))) {
            uncovered.push(name.to_string());
        }
    }
    uncovered.sort();
    uncovered.dedup();
    Ok((entries as usize, uncovered))
}

#[cfg(test)]
mod tests {
    use super::*;
    use object::write::{Object as WObject, Relocation, StandardSection, Symbol, SymbolSection};
    use object::{
        Architecture, BinaryFormat, Endianness, RelocationEncoding, RelocationFlags,
        RelocationKind, SectionKind, SymbolFlags, SymbolScope,
    };

    /// A relocatable object with functions `a` (0..16) and `b` (16..32) in one text section
    /// and an ORC entry with the given last word at each address.
    fn object_with(ips: &[(u64, u16)]) -> Vec<u8> {
        let mut o = WObject::new(BinaryFormat::Elf, Architecture::X86_64, Endianness::Little);
        let text = o.section_id(StandardSection::Text);
        o.append_section_data(text, &[0x90; 32], 16);
        for (name, at) in [("a", 0), ("b", 16)] {
            o.add_symbol(Symbol {
                name: name.as_bytes().to_vec(),
                value: at,
                size: 16,
                kind: SymbolKind::Text,
                scope: SymbolScope::Compilation,
                weak: false,
                section: SymbolSection::Section(text),
                flags: SymbolFlags::None,
            });
        }
        let ip = o.add_section(
            vec![],
            b".orc_unwind_ip".to_vec(),
            SectionKind::ReadOnlyData,
        );
        let orc = o.add_section(vec![], b".orc_unwind".to_vec(), SectionKind::ReadOnlyData);
        o.append_section_data(ip, &vec![0; 4 * ips.len()], 4);
        let mut orc_data = Vec::new();
        for (_, word) in ips {
            orc_data.extend([8, 0, 0, 0]);
            orc_data.extend(word.to_le_bytes());
        }
        o.append_section_data(orc, &orc_data, 2);
        let text_sym = o.section_symbol(text);
        for (i, (at, _)) in ips.iter().enumerate() {
            o.add_relocation(
                ip,
                Relocation {
                    offset: 4 * i as u64,
                    symbol: text_sym,
                    addend: *at as i64,
                    flags: RelocationFlags::Generic {
                        kind: RelocationKind::Relative,
                        encoding: RelocationEncoding::Generic,
                        size: 32,
                    },
                },
            )
            .unwrap();
        }
        o.write().unwrap()
    }

    /// Type CALL, sp_reg SP (4), 6.4 and later.
    const CALL: u16 = 2 << 8 | 4;
    /// Type UNDEFINED, sp_reg SP: an end marker as 6.4's objtool writes it.
    const UNDEF: u16 = 4;

    #[test]
    fn functions_without_a_governing_entry_are_named() {
        let cov = |ips: &[(u64, u16)]| coverage(&object_with(ips), Layout::Since6_4).unwrap();
        // One entry for both functions, the section's end marked undefined.
        assert_eq!(cov(&[(0, CALL), (32, UNDEF)]), (2, vec![]));
        assert_eq!(cov(&[(0, CALL), (4, CALL), (20, UNDEF)]), (3, vec![]));
        // `b` starts where unwind data ended.
        assert_eq!(cov(&[(0, CALL), (10, UNDEF)]), (2, vec!["b".to_string()]));
        // An entry after `a`'s start does not cover it.
        assert_eq!(cov(&[(4, CALL)]), (1, vec!["a".to_string()]));
        assert_eq!(cov(&[]).1, ["a", "b"]);
    }

    #[test]
    fn layout_before_6_4() {
        // 6.1: type CALL is 0, so only sp_reg tells an undefined entry (sp_reg 0).
        let (call, undef) = (4u16, 0u16);
        let cov = |ips: &[(u64, u16)]| coverage(&object_with(ips), Layout::Before6_4).unwrap();
        assert_eq!(cov(&[(0, call), (32, undef)]), (2, vec![]));
        assert_eq!(cov(&[(0, call), (10, undef)]), (2, vec!["b".to_string()]));
        // Read with 6.4's layout, 6.1's CALL entries look undefined: why the layout matters.
        let wrong = coverage(&object_with(&[(0, call)]), Layout::Since6_4).unwrap();
        assert_eq!(wrong.1, ["a", "b"]);
        assert_eq!(Layout::of_version(6, 1), Layout::Before6_4);
        assert_eq!(Layout::of_version(6, 12), Layout::Since6_4);
        assert_eq!(Layout::of_version(5, 15), Layout::Before6_4);
    }
}
