//! The kernel's livepatch ELF format, in one place: klp symbol names
//! (`.klp.sym.<objname>.<name>,<sympos>`) with the kernel's length limits, the relocation
//! sections that use them (`.klp.rela.<objname>.<section>`), and the section index and flag that
//! mark both (Documentation/livepatch/module-elf-format.rst). The writer names klp symbols with
//! [`sym_name`], the marker (`klp.rs`) groups relocations by [`objname_of`] and names sections
//! with [`rela_section_name`], and the checker (`check.rs`) validates with [`parse`] and
//! [`rela_objname`], so the three cannot drift apart.

/// Section index of a klp symbol: the module loader leaves it to the livepatch core.
pub const SHN_LIVEPATCH: u16 = 0xff20;
/// Flag of a `.klp.rela.*` section: the livepatch core, not the loader, applies it.
pub const SHF_RELA_LIVEPATCH: u64 = 0x0010_0000;
/// Prefix of every klp symbol name.
pub const KLP_SYM_PREFIX: &str = ".klp.sym.";
/// Prefix of every klp relocation section name.
pub const KLP_RELA_PREFIX: &str = ".klp.rela.";
/// The kernel parses `.klp.sym.%55[^.].%511[^,],%lu`.
pub const MAX_OBJNAME: usize = 55;
pub const MAX_SYMNAME: usize = 511;
/// Object name of the kernel image in klp symbol names.
pub const VMLINUX: &str = "vmlinux";

/// The klp symbol name for symbol `name` at kallsyms position `sympos` of object `objname`.
/// The caller keeps to [`MAX_OBJNAME`] and [`MAX_SYMNAME`].
pub fn sym_name(objname: &str, name: &str, sympos: u64) -> String {
    format!("{KLP_SYM_PREFIX}{objname}.{name},{sympos}")
}

/// The object part of a klp symbol name as the marker groups relocations by it: whatever lies
/// between the prefix and the next `.`, however malformed the rest ([`parse`] judges that).
pub fn objname_of(sym: &str) -> Option<&str> {
    let rest = sym.strip_prefix(KLP_SYM_PREFIX)?;
    let dot = rest.find('.')?;
    Some(&rest[..dot])
}

/// A klp symbol name, split as the kernel splits it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KlpSymName<'a> {
    pub objname: &'a str,
    pub name: &'a str,
    pub sympos: u64,
}

/// `.klp.sym.<objname>.<name>,<sympos>` with the kernel's limits: an object name of 1 to 55
/// characters without `.`, a symbol name of 1 to 511 characters without `,`, and a decimal
/// position. `None` when malformed.
pub fn parse(full: &str) -> Option<KlpSymName<'_>> {
    let rest = full.strip_prefix(KLP_SYM_PREFIX)?;
    let (objname, rest) = rest.split_once('.')?;
    let (name, pos) = rest.split_once(',')?;
    if objname.is_empty() || objname.len() > MAX_OBJNAME {
        return None;
    }
    if name.is_empty() || name.len() > MAX_SYMNAME || !is_decimal(pos) {
        return None;
    }
    Some(KlpSymName {
        objname,
        name,
        sympos: pos.parse().ok()?,
    })
}

/// The relocation section for the klp relocations of object `objname` that apply to section
/// `target` (its leading `.` dropped: `.text` of vmlinux gives `.klp.rela.vmlinux.text`).
pub fn rela_section_name(objname: &str, target: &str) -> String {
    format!(
        "{KLP_RELA_PREFIX}{objname}.{}",
        target.strip_prefix('.').unwrap_or(target)
    )
}

/// The object part of a `.klp.rela.<objname>.<section>` name (empty when there is none);
/// `None` for a section that is not a klp relocation section.
pub fn rela_objname(section: &str) -> Option<&str> {
    let rest = section.strip_prefix(KLP_RELA_PREFIX)?;
    Some(rest.split('.').next().unwrap_or(""))
}

/// A position as klp names and klpgen's records write it: decimal digits, no sign.
pub(crate) fn is_decimal(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|c| c.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn klp_sym_names() {
        let k = parse(".klp.sym.vmlinux.__key.12,3").unwrap();
        assert_eq!((k.objname, k.name, k.sympos), ("vmlinux", "__key.12", 3));
        assert!(parse(&format!(".klp.sym.{}.f,0", "m".repeat(55))).is_some());
        assert!(parse(&format!(".klp.sym.{}.f,0", "m".repeat(56))).is_none());
        assert!(parse(&format!(".klp.sym.vmlinux.{},0", "f".repeat(511))).is_some());
        assert!(parse(&format!(".klp.sym.vmlinux.{},0", "f".repeat(512))).is_none());
        for bad in [
            ".klp.sym.vmlinux",
            ".klp.sym..f,0",
            ".klp.sym.vmlinux.f,",
            ".klp.sym.vmlinux.f,+1",
            ".klp.sym.vmlinux.f,99999999999999999999999",
            "foo",
        ] {
            assert!(parse(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn written_names_parse_back() {
        let n = sym_name("my_mod", "helper", 2);
        assert_eq!(n, ".klp.sym.my_mod.helper,2");
        let k = parse(&n).unwrap();
        assert_eq!((k.objname, k.name, k.sympos), ("my_mod", "helper", 2));
        assert_eq!(objname_of(&n), Some("my_mod"));
        // The marker groups even what the checker rejects.
        assert_eq!(objname_of(".klp.sym..f,0"), Some(""));
        assert_eq!(objname_of(".klp.sym.vmlinux"), None);
        assert_eq!(objname_of("printk"), None);
    }

    #[test]
    fn rela_section_names() {
        let s = rela_section_name(VMLINUX, ".text.f");
        assert_eq!(s, ".klp.rela.vmlinux.text.f");
        assert_eq!(rela_objname(&s), Some(VMLINUX));
        assert_eq!(rela_section_name("m", "data"), ".klp.rela.m.data");
        assert_eq!(rela_objname(".klp.rela..vmlinuxtext"), Some(""));
        assert_eq!(rela_objname(".rela.text"), None);
    }
}
