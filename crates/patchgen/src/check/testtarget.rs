//! Test support for the check tests: the target they resolve against — a fake linked
//! vmlinux with same-named statics in two files, traced and untraced functions, a banner and
//! `__mcount_loc`, and a target module with same-named statics — shared by the checks'
//! tests (`check/tests.rs`) and the target reader's (`check/kallsyms.rs`).

use object::elf;
use object::write::{self, Object, Relocation, SymbolSection};
use object::{
    Architecture, BinaryFormat, Endianness, RelocationFlags, SectionKind, SymbolFlags, SymbolKind,
    SymbolScope,
};

use crate::testimage::{Image, GLOBAL_OBJECT, LOCAL_OBJECT};

const TEXT: u64 = 0xffff_ffff_8100_0000;
const RODATA: u64 = 0xffff_ffff_8180_0000;
const INIT: u64 = 0xffff_ffff_81a0_0000;
pub(super) const RELEASE: &str = "6.12.0-test";

/// (file group, name, local, func, offset in .text or .rodata, size, traced)
type VSym = (
    Option<&'static str>,
    &'static str,
    bool,
    bool,
    u64,
    u64,
    bool,
);

/// A linked "vmlinux": two files each with a static `helper`, b.c's at the lower
/// address (so kallsyms order differs from symbol table order), traced and untraced
/// globals, a variable, `linux_banner` and the `__mcount_loc` table.
const VSYMS: &[VSym] = &[
    (Some("a.c"), "helper", true, true, 0x100, 0x20, true),
    (Some("a.c"), "a_only", true, true, 0x140, 0x20, true),
    (Some("b.c"), "helper", true, true, 0x40, 0x20, true),
    (None, "traced", false, true, 0x200, 0x30, true),
    (None, "untraced", false, true, 0x300, 0x10, false),
    (None, "some_var", false, false, 0x80, 8, false),
];

pub(super) fn fake_vmlinux(banner: Option<&str>, mcount: bool) -> Vec<u8> {
    let mut img = Image::new();
    let text = img.section(
        ".text",
        elf::SHF_ALLOC | elf::SHF_EXECINSTR,
        TEXT,
        vec![0xcc; 0x1000],
    );
    let mut ro = vec![0u8; 0x100];
    let banner_text = banner.map(|r| format!("Linux version {r} (test@host) #1 SMP\n\0"));
    if let Some(t) = &banner_text {
        ro.extend_from_slice(t.as_bytes());
    }
    let rodata = img.section(".rodata", elf::SHF_ALLOC, RODATA, ro);
    let sites: Vec<u64> = VSYMS
        .iter()
        .filter(|s| s.6)
        .map(|s| TEXT + s.4 + 4)
        .rev() // unsorted on purpose
        .collect();
    let table: Vec<u8> = sites.iter().flat_map(|a| a.to_le_bytes()).collect();
    let mut init_data = vec![0u8; 0x10];
    init_data.extend_from_slice(&table);
    let init = img.section(
        ".init.data",
        elf::SHF_ALLOC | elf::SHF_WRITE,
        INIT,
        init_data,
    );
    let mut file = None;
    for &(f, name, local, func, off, size, _) in VSYMS {
        if let Some(fname) = f.filter(|_| f != file) {
            img.symbol(fname, None, (elf::STB_LOCAL, elf::STT_FILE), 0, 0);
            file = f;
        }
        let bind = if local {
            elf::STB_LOCAL
        } else {
            elf::STB_GLOBAL
        };
        let (sec, base, ty) = if func {
            (text, TEXT, elf::STT_FUNC)
        } else {
            (rodata, RODATA, elf::STT_OBJECT)
        };
        img.symbol(name, Some(sec), (bind, ty), base + off, size);
    }
    if let Some(t) = &banner_text {
        let len = t.len() as u64;
        img.symbol(
            "linux_banner",
            Some(rodata),
            GLOBAL_OBJECT,
            RODATA + 0x100,
            len,
        );
    }
    // The one symbol it exports (what the tests' Module.symvers lists).
    img.symbol("__ksymtab_printk", Some(rodata), LOCAL_OBJECT, RODATA, 12);
    if mcount {
        let g = (elf::STB_GLOBAL, elf::STT_NOTYPE);
        let end = INIT + 0x10 + table.len() as u64;
        img.symbol("__start_mcount_loc", Some(init), g, INIT + 0x10, 0);
        img.symbol("__stop_mcount_loc", Some(init), g, end, 0);
    }
    img.finish()
}

/// A target module: two static `helper`s (the second at the lower offset) and a traced
/// function, with `__mcount_loc` relocations as a `.ko` has them.
pub(super) fn target_module() -> Vec<u8> {
    target_module_for(RELEASE)
}

pub(super) fn target_module_for(release: &str) -> Vec<u8> {
    let mut obj = Object::new(BinaryFormat::Elf, Architecture::X86_64, Endianness::Little);
    let text = obj.add_section(Vec::new(), b".text".to_vec(), SectionKind::Text);
    obj.append_section_data(text, &[0xcc; 0x100], 16);
    let mi = obj.add_section(Vec::new(), b".modinfo".to_vec(), SectionKind::ReadOnlyData);
    obj.append_section_data(
        mi,
        format!("name=my_mod\0vermagic={release} SMP mod_unload \0").as_bytes(),
        1,
    );
    obj.add_file_symbol(b"m.c".to_vec());
    for (name, value) in [
        ("helper", 0x40),
        ("helper", 0x0),
        ("m_func", 0x80),
        ("m_notrace", 0xc0),
    ] {
        obj.add_symbol(write::Symbol {
            name: name.as_bytes().to_vec(),
            value,
            size: 0x20,
            kind: SymbolKind::Text,
            scope: SymbolScope::Compilation,
            weak: false,
            section: SymbolSection::Section(text),
            flags: SymbolFlags::None,
        });
    }
    let mc = obj.add_section(
        Vec::new(),
        b"__mcount_loc".to_vec(),
        SectionKind::ReadOnlyData,
    );
    obj.append_section_data(mc, &[0; 24], 8);
    let ts = obj.section_symbol(text);
    for (i, at) in [0x44i64, 0x4, 0x84].into_iter().enumerate() {
        obj.add_relocation(
            mc,
            Relocation {
                offset: 8 * i as u64,
                symbol: ts,
                addend: at,
                flags: RelocationFlags::Elf {
                    r_type: elf::R_X86_64_64,
                },
            },
        )
        .unwrap();
    }
    obj.write().unwrap()
}
