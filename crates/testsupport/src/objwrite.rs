//! Small relocatable x86-64 objects written with `object`'s writer, for the crates'
//! integration tests that need an object gcc would not write (malformed or hand-made records).

use object::write::{Object, Relocation, SectionId, Symbol, SymbolId, SymbolSection};
use object::{
    elf, Architecture, BinaryFormat, Endianness, RelocationFlags, SectionKind, SymbolFlags,
    SymbolKind, SymbolScope,
};

/// An empty relocatable x86-64 ELF object.
pub fn object() -> Object<'static> {
    Object::new(BinaryFormat::Elf, Architecture::X86_64, Endianness::Little)
}

/// A defined symbol (`scope`: `Compilation` is a static, `Dynamic` a global as gcc writes
/// it, `Linkage` a hidden one).
pub fn symbol(
    o: &mut Object<'_>,
    name: &str,
    kind: SymbolKind,
    scope: SymbolScope,
    section: SectionId,
    value: u64,
    size: u64,
) -> SymbolId {
    o.add_symbol(Symbol {
        name: name.as_bytes().to_vec(),
        value,
        size,
        kind,
        scope,
        weak: false,
        section: SymbolSection::Section(section),
        flags: SymbolFlags::None,
    })
}

/// An undefined global symbol (default visibility, as gcc writes an extern reference).
pub fn undefined(o: &mut Object<'_>, name: &str) -> SymbolId {
    o.add_symbol(Symbol {
        name: name.as_bytes().to_vec(),
        value: 0,
        size: 0,
        kind: SymbolKind::Unknown,
        scope: SymbolScope::Dynamic,
        weak: false,
        section: SymbolSection::Undefined,
        flags: SymbolFlags::None,
    })
}

/// An ELF relocation of type `r_type` at `offset` of `section`.
pub fn reloc(
    o: &mut Object<'_>,
    section: SectionId,
    offset: u64,
    symbol: SymbolId,
    addend: i64,
    r_type: u32,
) {
    o.add_relocation(
        section,
        Relocation {
            offset,
            symbol,
            addend,
            flags: RelocationFlags::Elf { r_type },
        },
    )
    .expect("a valid test relocation");
}

/// `endbr64; call __fentry__; mov $ret, %eax; ret` — the call's displacement is at 5.
pub fn traced_body(ret: u8) -> Vec<u8> {
    vec![
        0xf3, 0x0f, 0x1e, 0xfa, 0xe8, 0, 0, 0, 0, 0xb8, ret, 0, 0, 0, 0xc3,
    ]
}

/// A global function `f` returning `ret` in its own section `.text.f`, after `pad` bytes of
/// NOPs, with its `__fentry__` call relocated (when `fentry`): (section, symbol).
pub fn function_f(o: &mut Object<'_>, ret: u8, pad: usize, fentry: bool) -> (SectionId, SymbolId) {
    let text = o.add_section(Vec::new(), b".text.f".to_vec(), SectionKind::Text);
    let code = traced_body(ret);
    o.append_section_data(text, &vec![0x90; pad], 16);
    o.append_section_data(text, &code, 1);
    let f = symbol(
        o,
        "f",
        SymbolKind::Text,
        SymbolScope::Dynamic,
        text,
        pad as u64,
        code.len() as u64,
    );
    if fentry {
        let fe = undefined(o, "__fentry__");
        reloc(o, text, pad as u64 + 5, fe, -4, elf::R_X86_64_PLT32);
    }
    (text, f)
}
