//! Checks that a livepatch `.ko` carries ORC unwind data for its functions: every defined
//! function (other than `__pfx_`/`__cfi_` padding symbols) must contain the address of at
//! least one `.orc_unwind_ip` entry, and `.orc_unwind` must have one entry per address.
//! Without it the kernel's ORC unwinder cannot walk through the livepatch's code, stack traces
//! through it are unreliable and the livepatch transition of a task sleeping in it never ends.

use anyhow::{bail, Context, Result};
use object::{Object, ObjectSection, ObjectSymbol, RelocationTarget, SymbolKind};

/// `.orc_unwind_ip` entries (4 bytes) and `.orc_unwind` entries (6 bytes) on x86-64.
const IP_ENTRY: u64 = 4;
const ORC_ENTRY: u64 = 6;

/// Number of ORC entries and the functions none of them falls in.
pub fn coverage(ko: &[u8]) -> Result<(usize, Vec<String>)> {
    let file = object::File::parse(ko).context("parsing the module")?;
    let Some(ip) = file.section_by_name(".orc_unwind_ip") else {
        bail!("the module has no .orc_unwind_ip section");
    };
    let orc = file
        .section_by_name(".orc_unwind")
        .context("the module has no .orc_unwind section")?;
    let entries = ip.size() / IP_ENTRY;
    if orc.size() != entries * ORC_ENTRY {
        bail!(
            ".orc_unwind has {} bytes for {entries} .orc_unwind_ip entries",
            orc.size()
        );
    }
    // Each entry is a PC-relative reference: its relocation names the code address.
    let mut addrs = Vec::new();
    for (_, r) in ip.relocations() {
        let RelocationTarget::Symbol(si) = r.target() else {
            continue;
        };
        let sym = file.symbol_by_index(si)?;
        let Some(sec) = sym.section_index() else {
            continue;
        };
        addrs.push((sec, sym.address().wrapping_add_signed(r.addend())));
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
        let (lo, hi) = (s.address(), s.address() + s.size());
        if !addrs.iter().any(|&(x, a)| x == sec && a >= lo && a < hi) {
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
    /// and an ORC entry at each of `ips`.
    fn object_with(ips: &[u64]) -> Vec<u8> {
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
        o.append_section_data(orc, &vec![0; 6 * ips.len()], 2);
        let text_sym = o.section_symbol(text);
        for (i, at) in ips.iter().enumerate() {
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

    #[test]
    fn functions_without_entries_are_named() {
        assert_eq!(coverage(&object_with(&[0, 20])).unwrap(), (2, vec![]));
        assert_eq!(
            coverage(&object_with(&[0, 4])).unwrap(),
            (2, vec!["b".to_string()])
        );
        assert!(coverage(&object_with(&[])).unwrap().1.len() == 2);
    }
}
