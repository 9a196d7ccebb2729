//! The target kernel's symbols as the binder needs them: its vmlinux (or module) symbol table
//! (for `sympos`), Module.symvers (which symbols the module loader can resolve), whether the
//! parts of the target come from one build, and the binding of a plan's external references.
//! The checker reads the target's symbols again with its own reader (`check/kallsyms.rs`,
//! which says why).
//!
//! A static is found in the file group of its STT_FILE symbol, told apart from same-named files
//! by the original object's other locals; `sympos` counts same-named symbols in kallsyms order
//! (vmlinux: address order; a module: symbol-table order). Module.symvers decides between an
//! ordinary relocation (exported) and a klp one, except that a module's own symbols, globals of
//! its other objects included, always bind klp against it, so it may load after the livepatch
//! ([`bind_externals_module`]). A jump label or static call whose key would be a klp relocation
//! against a module is refused ([`module_key_refusals`]). The `*_mismatch` functions tell
//! whether vmlinux, Module.symvers, the sources and a module come from one build; the banner's
//! version part (`UTS_VERSION`, which also names a distribution's package version) tells two
//! builds of one release apart.
//!
//! A livepatch of several units defines the globals the patch adds itself ([`OwnSymbols`]):
//! another unit's reference to one binds inside the module ([`Binding::Own`]), which linking
//! the units' objects into one resolves, before the target is asked ([`bind_unit`] has the
//! order, [`shared_globals`] and [`unshadow`] the checks across units); klp relocations stay
//! for the target's own symbols.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use object::elf;
use object::read::elf::Sym;

use elfdiff::plan::External;

use crate::elf::Elf;
use crate::klpsym::{self, MAX_OBJNAME, MAX_SYMNAME, VMLINUX};
use crate::Error;

#[derive(Debug, Clone)]
struct TSym {
    name: String,
    addr: u64,
    local: bool,
    /// Index of the STT_FILE group this local symbol belongs to (None for globals).
    file_group: Option<usize>,
}

/// Symbols of the object being patched (vmlinux or a module), in file order, for binding:
/// from a symbol of the original object (its name and, for a static, its source file's group)
/// to its kallsyms position. `klpgen check` derives positions separately
/// (`crate::check::TargetObject`) so that the finished module's check does not repeat this
/// derivation's mistakes.
#[derive(Debug)]
pub struct TargetSymtab {
    pub label: String,
    syms: Vec<TSym>,
    by_name: HashMap<String, Vec<usize>>,
    /// (file name, indices of its local symbols)
    groups: Vec<(String, Vec<usize>)>,
}

impl TargetSymtab {
    /// vmlinux: kallsyms counts same-named symbols in address order.
    pub fn parse(label: &str, data: &[u8]) -> Result<Self, Error> {
        Self::parse_ordered(label, data, true)
    }

    /// A module `.ko`: the livepatch core walks a module's symbols in symbol-table order
    /// (addresses in a relocatable object are section offsets and say nothing).
    pub fn parse_module(label: &str, data: &[u8]) -> Result<Self, Error> {
        Self::parse_ordered(label, data, false)
    }

    fn parse_ordered(label: &str, data: &[u8], by_address: bool) -> Result<Self, Error> {
        let bad = |what: String| Error::Target {
            target: label.to_string(),
            what,
        };
        let e = Elf::parse(data, &bad)?;
        let (endian, symtab) = (e.endian, &e.symtab);
        if symtab.is_empty() {
            return Err(bad("has no symbol table (stripped?)".into()));
        }
        let mut syms = Vec::with_capacity(symtab.len());
        let mut groups: Vec<(String, Vec<usize>)> = Vec::new();
        for sym in symtab.iter() {
            let name = e.sym_name(sym);
            match sym.st_type() {
                elf::STT_FILE => {
                    groups.push((name, Vec::new()));
                    continue;
                }
                elf::STT_SECTION => continue,
                _ => {}
            }
            if name.is_empty() || sym.st_shndx(endian) == elf::SHN_UNDEF {
                continue;
            }
            let local = sym.st_bind() == elf::STB_LOCAL;
            let idx = syms.len();
            let file_group = if local && !groups.is_empty() {
                let g = groups.len() - 1;
                groups[g].1.push(idx);
                Some(g)
            } else {
                None
            };
            syms.push(TSym {
                name,
                addr: sym.st_value(endian),
                local,
                file_group,
            });
        }
        let mut by_name: HashMap<String, Vec<usize>> = HashMap::new();
        for (i, s) in syms.iter().enumerate() {
            by_name.entry(s.name.clone()).or_default().push(i);
        }
        // sympos counts same-named symbols in kallsyms order.
        if by_address {
            for v in by_name.values_mut() {
                v.sort_by_key(|&i| (syms[i].addr, i));
            }
        }
        Ok(TargetSymtab {
            label: label.to_string(),
            syms,
            by_name,
            groups,
        })
    }

    /// The file group that holds the original object's locals: same file name, containing all
    /// (or, failing that, most) of the given local names.
    fn find_group(&self, file: &str, locals: &[String]) -> Result<usize, Error> {
        let mut best: Vec<(usize, usize)> = Vec::new();
        for (g, (name, members)) in self.groups.iter().enumerate() {
            if name != file {
                continue;
            }
            let names: HashSet<&str> = members
                .iter()
                .map(|&i| self.syms[i].name.as_str())
                .collect();
            let hits = locals.iter().filter(|l| names.contains(l.as_str())).count();
            best.push((hits, g));
        }
        best.sort_by(|a, b| b.cmp(a));
        match best.as_slice() {
            [] => Err(Error::Target {
                target: self.label.clone(),
                what: format!("no symbols of source file {file} (is this the kernel the objects were built for?)"),
            }),
            [(hits, _), (hits2, _), ..] if hits == hits2 => Err(Error::Target {
                target: self.label.clone(),
                what: format!("several files named {file} have the same local symbols; cannot tell which one the patch changes"),
            }),
            [(_, g), ..] => Ok(*g),
        }
    }

    /// Whether a global symbol of this name is defined here.
    pub fn defines_global(&self, name: &str) -> bool {
        self.by_name
            .get(name)
            .is_some_and(|v| v.iter().any(|&i| !self.syms[i].local))
    }

    /// sympos of symbol index `i`: 0 when its name is unique, else its 1-based rank.
    fn sympos(&self, i: usize) -> u64 {
        let all = &self.by_name[&self.syms[i].name];
        if all.len() == 1 {
            0
        } else {
            all.iter().position(|&j| j == i).expect("member") as u64 + 1
        }
    }

    /// Resolve a reference to a symbol of the target; returns its sympos.
    pub fn locate(
        &self,
        ext: &External,
        file: Option<&str>,
        locals: &[String],
    ) -> Result<u64, Error> {
        let missing = || Error::MissingSymbol {
            target: self.label.clone(),
            symbol: ext.name.clone(),
            local: ext.local,
        };
        let cands = self.by_name.get(&ext.name).ok_or_else(missing)?;
        if ext.local {
            let file = file.ok_or_else(|| Error::Target {
                target: self.label.clone(),
                what: format!(
                    "local symbol {} referenced but the object has no STT_FILE symbol",
                    ext.name
                ),
            })?;
            let g = self.find_group(file, locals)?;
            let i = cands
                .iter()
                .copied()
                .find(|&i| self.syms[i].file_group == Some(g))
                .ok_or_else(missing)?;
            Ok(self.sympos(i))
        } else {
            let i = cands
                .iter()
                .copied()
                .find(|&i| !self.syms[i].local)
                .ok_or_else(missing)?;
            Ok(self.sympos(i))
        }
    }

    /// Number of symbols named `name`.
    pub fn count(&self, name: &str) -> usize {
        self.by_name.get(name).map_or(0, Vec::len)
    }
}

/// Exported symbols from Module.symvers (`crc name module export-type [namespace]`).
#[derive(Debug, Default)]
pub struct Symvers {
    /// The file it was read from, for messages.
    pub label: String,
    /// name → (exporting module or `vmlinux`, CRC when the field is a hex number).
    exported: HashMap<String, (String, Option<u32>)>,
    /// name → symbol namespace, for symbols exported with `EXPORT_SYMBOL_NS`.
    namespaces: HashMap<String, String>,
}

impl Symvers {
    pub fn parse(label: &str, text: &str) -> Result<Self, Error> {
        let mut exported = HashMap::new();
        let mut namespaces = HashMap::new();
        for (n, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let f: Vec<&str> = line.split('\t').collect();
            if f.len() < 4 {
                return Err(Error::Target {
                    target: label.to_string(),
                    what: format!(
                        "line {}: not a Module.symvers line (crc, name, module, export type)",
                        n + 1
                    ),
                });
            }
            let crc = f[0]
                .strip_prefix("0x")
                .and_then(|h| u32::from_str_radix(h, 16).ok());
            exported.insert(f[1].to_string(), (f[2].to_string(), crc));
            if let Some(ns) = f.get(4).map(|n| n.trim()).filter(|n| !n.is_empty()) {
                namespaces.insert(f[1].to_string(), ns.to_string());
            }
        }
        Ok(Symvers {
            label: label.to_string(),
            exported,
            namespaces,
        })
    }
    /// The symbol namespace `name` is exported in (`EXPORT_SYMBOL_NS`), if any.
    pub fn namespace(&self, name: &str) -> Option<&str> {
        self.namespaces.get(name).map(String::as_str)
    }
    /// Whether `name` is exported by vmlinux (or by a module; then the module's name).
    pub fn exporter(&self, name: &str) -> Option<&str> {
        self.exported.get(name).map(|(m, _)| m.as_str())
    }
    /// The CRC Module.symvers gives `name` (CONFIG_MODVERSIONS), if it lists it with one.
    pub fn crc(&self, name: &str) -> Option<u32> {
        self.exported.get(name).and_then(|(_, crc)| *crc)
    }
    /// The symbols Module.symvers says vmlinux exports, with their CRCs, sorted by name.
    pub fn vmlinux_exports(&self) -> Vec<(&str, Option<u32>)> {
        let mut v: Vec<(&str, Option<u32>)> = self
            .exported
            .iter()
            .filter(|(_, (m, _))| m == VMLINUX)
            .map(|(n, (_, crc))| (n.as_str(), *crc))
            .collect();
        v.sort_unstable();
        v
    }
    pub fn len(&self) -> usize {
        self.exported.len()
    }
    pub fn is_empty(&self) -> bool {
        self.exported.is_empty()
    }
}

// ---------------------------------------------------------------------------------------------
// Do the parts of the target belong together?

/// Key of the refusal for a vmlinux of another kernel than the target build.
pub const VMLINUX_MISMATCH: &str = "target.vmlinux-mismatch";
/// Key of the refusal for a Module.symvers of another build than the vmlinux.
pub const SYMVERS_MISMATCH: &str = "target.symvers-mismatch";
/// Key of the refusal for a source tree of another version than the target build.
pub const SOURCE_MISMATCH: &str = "target.source-mismatch";
/// Key of the refusal for a target module (`.ko`) built for another kernel.
pub const MODULE_MISMATCH: &str = "target.module-mismatch";

/// How many disagreeing symbols a mismatch message names.
const EXAMPLES: usize = 5;

/// Parts of a target that come from different builds: a stable key (one of the constants
/// above) and a message naming both files and both values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("[{key}] {detail}")]
pub struct Mismatch {
    pub key: &'static str,
    pub detail: String,
}

/// What a kernel image says about the build it came from: the release and version in its
/// `linux_banner`, the symbols it exports (a `__ksymtab_<name>` symbol each) and, with CONFIG_MODVERSIONS,
/// their CRCs (`__crc_<name>`: a 4-byte value in `__kcrctab` since 5.19, an absolute symbol
/// whose value is the CRC before).
#[derive(Debug, Clone, Default)]
pub struct KernelIdentity {
    pub label: String,
    /// A linked image (not a relocatable `vmlinux.o`, whose export tables are added later).
    pub linked: bool,
    pub release: Option<String>,
    /// The banner's version part, `UTS_VERSION` (`#1 SMP PREEMPT_DYNAMIC Debian 6.1.192-3
    /// (2026-11-26)`): what `uname -v` says on that kernel.
    pub version: Option<String>,
    pub exports: HashSet<String>,
    pub crcs: HashMap<String, u32>,
    /// It defines `clear_relocate_add`: its livepatch core clears the klp relocations it
    /// wrote into a module when that module goes away (Linux 6.3, "livepatch: Clear
    /// relocation targets on a module removal"), so the module can be loaded again.
    pub clears_klp_relocations: bool,
}

impl KernelIdentity {
    pub fn parse(label: &str, data: &[u8]) -> Result<Self, Error> {
        let bad = |what: String| Error::Target {
            target: label.to_string(),
            what,
        };
        let e = Elf::parse(data, &bad)?;
        let mut id = KernelIdentity {
            label: label.to_string(),
            linked: e.e_type != elf::ET_REL,
            ..Default::default()
        };
        let shnum = e.sections.len();
        for sym in e.symtab.iter() {
            let Ok(name) = e.symtab.symbol_name(e.endian, sym) else {
                continue;
            };
            let shndx = sym.st_shndx(e.endian);
            if shndx == elf::SHN_UNDEF {
                continue;
            }
            let value = sym.st_value(e.endian);
            if let Some(n) = name.strip_prefix(b"__ksymtab_") {
                id.exports.insert(String::from_utf8_lossy(n).into_owned());
            } else if let Some(n) = name.strip_prefix(b"__crc_") {
                let crc = if shndx == elf::SHN_ABS {
                    u32::try_from(value).ok()
                } else if usize::from(shndx) < shnum {
                    e.bytes_at(usize::from(shndx), value, 4).map(|b| {
                        let mut a = [0u8; 4];
                        a.copy_from_slice(b);
                        object::Endian::read_u32_bytes(e.endian, a)
                    })
                } else {
                    None
                };
                if let Some(crc) = crc {
                    id.crcs.insert(String::from_utf8_lossy(n).into_owned(), crc);
                }
            } else if name == b"clear_relocate_add" {
                id.clears_klp_relocations = true;
            } else if name == b"linux_banner" && id.release.is_none() && usize::from(shndx) < shnum
            {
                let text = e.banner_text(usize::from(shndx), value, sym.st_size(e.endian));
                if let Some(t) = text {
                    id.release = crate::elf::release_from_banner(t.as_bytes());
                    id.version = banner_version(&t);
                }
            }
        }
        Ok(id)
    }
}

fn examples<'s>(names: impl IntoIterator<Item = &'s str>) -> String {
    let mut v: Vec<&str> = names.into_iter().collect();
    v.sort_unstable();
    let more = v.len().saturating_sub(EXAMPLES);
    let mut s = v.into_iter().take(EXAMPLES).collect::<Vec<_>>().join(", ");
    if more > 0 {
        s.push_str(&format!(", ... ({more} more)"));
    }
    s
}

/// The release in a module's modinfo `vermagic` (its first word); `None` without one.
pub fn module_vermagic(label: &str, ko: &[u8]) -> Result<Option<String>, Error> {
    let bad = |what: String| Error::Module {
        module: label.to_string(),
        what,
    };
    let e = Elf::parse(ko, &bad)?;
    Ok(e.modinfo_entries()
        .find_map(|entry| entry.strip_prefix(b"vermagic="))
        .and_then(|v| std::str::from_utf8(v).ok())
        .and_then(|v| v.split_whitespace().next())
        .map(str::to_string))
}

/// A target module must be built for the vmlinux's kernel: its vermagic release equals the
/// vmlinux's `linux_banner` release (when either is unknown, nothing can be said).
pub fn module_mismatch(
    module_label: &str,
    module_release: Option<&str>,
    vmlinux_label: &str,
    vmlinux_release: Option<&str>,
) -> Option<Mismatch> {
    match (module_release, vmlinux_release) {
        (Some(m), Some(v)) if m != v => Some(Mismatch {
            key: MODULE_MISMATCH,
            detail: format!(
                "{module_label} was built for kernel {m} (its vermagic), but {vmlinux_label} is {v}: the module belongs to another kernel"
            ),
        }),
        _ => None,
    }
}

/// The vmlinux must be the image of the target build: its `linux_banner` release equals the
/// build's `include/config/kernel.release`.
pub fn release_mismatch(
    vmlinux: &KernelIdentity,
    build_label: &str,
    build_release: &str,
) -> Option<Mismatch> {
    let detail = match &vmlinux.release {
        Some(r) if r == build_release => return None,
        Some(r) => format!(
            "{} is kernel {r} (its linux_banner), but the target build is {build_release} ({build_label}): the vmlinux belongs to another kernel",
            vmlinux.label
        ),
        None => format!(
            "{} has no readable linux_banner, so it cannot be shown to be the image of the target build {build_release} ({build_label})",
            vmlinux.label
        ),
    };
    Some(Mismatch {
        key: VMLINUX_MISMATCH,
        detail,
    })
}

/// The version part of a `linux_banner` (`UTS_VERSION`): what follows `Linux version
/// <release> (<builder>) (<compiler>) ` up to the newline. The compiler part has parentheses of
/// its own (`(gcc-12 (Debian 12.2.0-14+deb12u1) 12.2.0, GNU ld ...)`), so groups are skipped by
/// balance, not by the first `)`.
pub fn banner_version(banner: &str) -> Option<String> {
    let rest = banner.strip_prefix("Linux version ")?;
    let mut rest = rest.trim_start().split_once(char::is_whitespace)?.1;
    loop {
        rest = rest.trim_start();
        if !rest.starts_with('(') {
            break;
        }
        let mut depth = 0usize;
        let mut end = None;
        for (i, c) in rest.char_indices() {
            match c {
                '(' => depth += 1,
                ')' => {
                    depth -= 1;
                    if depth == 0 {
                        end = Some(i + 1);
                        break;
                    }
                }
                _ => {}
            }
        }
        rest = &rest[end?..];
    }
    let v = rest.lines().next().unwrap_or("").trim();
    (!v.is_empty()).then(|| v.to_string())
}

/// Two builds of one release: the vmlinux's banner version (`UTS_VERSION`: build number, date,
/// a distribution's package version) must be the target build's (its
/// `include/generated/utsversion.h`, or `compile.h` before 5.19).
pub fn build_mismatch(
    vmlinux: &KernelIdentity,
    build_label: &str,
    build_version: &str,
) -> Option<Mismatch> {
    let v = vmlinux.version.as_deref()?;
    if v == build_version {
        return None;
    }
    Some(Mismatch {
        key: VMLINUX_MISMATCH,
        detail: format!(
            "{} is build \"{v}\" of {} (its linux_banner), but the target build is \"{build_version}\" ({build_label}): the vmlinux is another build",
            vmlinux.label,
            vmlinux.release.as_deref().unwrap_or("its release"),
        ),
    })
}

/// The source tree must be exactly the upstream version a distribution's package was made
/// from (`6.1.192` of Debian's `6.1.192-3`), whose release (`6.1.0-57-cloud-amd64`) does not
/// start with it. `what` names where the version was read.
pub fn upstream_mismatch(
    makefile_label: &str,
    makefile: &str,
    what: &str,
    upstream: &str,
) -> Option<Mismatch> {
    let version = makefile_version(makefile)?;
    if version == upstream {
        return None;
    }
    Some(Mismatch {
        key: SOURCE_MISMATCH,
        detail: format!(
            "the source tree is version {version} ({makefile_label}), but the target was built from {upstream} ({what}): the patched objects would not be compiled from the sources of the running kernel"
        ),
    })
}

/// The release a kernel source tree's top Makefile gives (`VERSION.PATCHLEVEL.SUBLEVEL` and
/// `EXTRAVERSION`); `None` when the Makefile does not say.
pub fn makefile_version(makefile: &str) -> Option<String> {
    let var = |name: &str| {
        makefile.lines().find_map(|l| {
            let (k, v) = l.split_once('=')?;
            (k.trim() == name).then(|| v.trim().to_string())
        })
    };
    let (v, p) = (var("VERSION")?, var("PATCHLEVEL")?);
    if v.is_empty() || p.is_empty() {
        return None;
    }
    let mut out = format!("{v}.{p}");
    if let Some(s) = var("SUBLEVEL").filter(|s| !s.is_empty()) {
        out.push('.');
        out.push_str(&s);
    }
    out.push_str(&var("EXTRAVERSION").unwrap_or_default());
    Some(out)
}

/// The source tree must be the version the target was built from: the build's release is the
/// Makefile's version followed by a local version (`-...`, `+`, ...), never by more digits.
pub fn source_mismatch(
    makefile_label: &str,
    makefile: &str,
    build_label: &str,
    build_release: &str,
) -> Option<Mismatch> {
    let version = makefile_version(makefile)?;
    let rest = build_release.strip_prefix(&version);
    if rest.is_some_and(|r| !r.starts_with(|c: char| c.is_ascii_digit())) {
        return None;
    }
    Some(Mismatch {
        key: SOURCE_MISMATCH,
        detail: format!(
            "the source tree is version {version} ({makefile_label}), but the target build is {build_release} ({build_label}): the patched objects would not be compiled from the sources of the running kernel"
        ),
    })
}

/// Module.symvers must come from the build of the vmlinux: every symbol it says vmlinux
/// exports has a `__ksymtab_` entry there and every `__ksymtab_` entry is listed, and with
/// CONFIG_MODVERSIONS the CRCs agree. All symbols are compared (a hash lookup each), so no
/// single symbol decides; one build gives an exact match (5352 of 5352 exports on the test
/// kernel), so any difference means another build. Only for a linked image: a relocatable
/// `vmlinux.o` has no export tables yet.
pub fn symvers_mismatch(
    vmlinux: &KernelIdentity,
    symvers_label: &str,
    symvers: &Symvers,
) -> Option<Mismatch> {
    if !vmlinux.linked {
        return None;
    }
    let listed = symvers.vmlinux_exports();
    let mut problems = export_differences(vmlinux, &listed);
    problems.extend(crc_difference(vmlinux, &listed));
    if problems.is_empty() {
        return None;
    }
    Some(Mismatch {
        key: SYMVERS_MISMATCH,
        detail: format!(
            "{symvers_label} is not the Module.symvers of {} ({}): {}",
            vmlinux.label,
            vmlinux.release.as_deref().unwrap_or("release unknown"),
            problems.join("; ")
        ),
    })
}

/// Exports Module.symvers lists for vmlinux (`listed`) that the vmlinux lacks, and exports of
/// the vmlinux it does not list.
fn export_differences(vmlinux: &KernelIdentity, listed: &[(&str, Option<u32>)]) -> Vec<String> {
    let missing: Vec<&str> = listed
        .iter()
        .map(|(n, _)| *n)
        .filter(|n| !vmlinux.exports.contains(*n))
        .collect();
    let listed_names: HashSet<&str> = listed.iter().map(|(n, _)| *n).collect();
    let unlisted: Vec<&str> = vmlinux
        .exports
        .iter()
        .map(String::as_str)
        .filter(|n| !listed_names.contains(n))
        .collect();
    let mut problems = Vec::new();
    if !missing.is_empty() {
        problems.push(format!(
            "{} of its {} vmlinux exports are not exported by {} (no __ksymtab_<name>): {}",
            missing.len(),
            listed.len(),
            vmlinux.label,
            examples(missing.iter().copied())
        ));
    }
    if !unlisted.is_empty() {
        problems.push(format!(
            "{} of the {} symbols {} exports are not in it: {}",
            unlisted.len(),
            vmlinux.exports.len(),
            vmlinux.label,
            examples(unlisted.iter().copied())
        ));
    }
    problems
}

/// CRCs: both sides with CONFIG_MODVERSIONS, or neither; when both, they agree.
fn crc_difference(vmlinux: &KernelIdentity, listed: &[(&str, Option<u32>)]) -> Option<String> {
    let with_crc = listed
        .iter()
        .filter(|(_, c)| c.is_some_and(|c| c != 0))
        .count();
    match (with_crc > 0, !vmlinux.crcs.is_empty()) {
        (true, true) => {
            let differ: Vec<(&str, u32, u32)> = listed
                .iter()
                .filter_map(|(n, c)| Some((*n, (*c)?, *vmlinux.crcs.get(*n)?)))
                .filter(|(_, a, b)| a != b)
                .collect();
            if differ.is_empty() {
                return None;
            }
            let first = differ
                .iter()
                .take(EXAMPLES)
                .map(|(n, a, b)| format!("{n} {a:#010x} vs {b:#010x}"))
                .collect::<Vec<_>>()
                .join(", ");
            Some(format!(
                "{} of its CRCs disagree with {}'s __crc_<name>: {first}{}",
                differ.len(),
                vmlinux.label,
                if differ.len() > EXAMPLES { ", ..." } else { "" }
            ))
        }
        (true, false) => Some(format!(
            "it has CRCs ({with_crc} symbols, CONFIG_MODVERSIONS) but {} has no __crc_<name> symbols",
            vmlinux.label
        )),
        (false, true) if !listed.is_empty() => Some(format!(
            "{} has CRCs for {} symbols (CONFIG_MODVERSIONS) but it has none",
            vmlinux.label,
            vmlinux.crcs.len()
        )),
        _ => None,
    }
}

/// How one external reference is bound in the livepatch module.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub enum Binding {
    /// An exported symbol: an ordinary relocation the module loader resolves.
    Plain { name: String },
    /// A klp relocation through `.klp.sym.<objname>.<name>,<sympos>`.
    Klp {
        objname: String,
        name: String,
        sympos: u64,
    },
    /// A global the patch adds, carried by the livepatch object of `unit`: an undefined
    /// symbol that linking the units' objects into one (`ld -r`) resolves inside the module.
    Own { name: String, unit: String },
}

impl Binding {
    /// The symbol name used in the livepatch object.
    pub fn symbol_name(&self) -> String {
        match self {
            Binding::Plain { name } | Binding::Own { name, .. } => name.clone(),
            Binding::Klp {
                objname,
                name,
                sympos,
            } => klpsym::sym_name(objname, name, *sympos),
        }
    }
}

/// Bind the externals of a plan for code that lives in module `modname`: references to the
/// module's own symbols become klp relocations against it (sympos from the module's `.ko`),
/// including globals another object of the same module defines — exported or not, since the
/// module may be loaded after the livepatch; other undefined ones are the kernel's (exported:
/// ordinary; otherwise klp against vmlinux).
pub fn bind_externals_module(
    plan: &elfdiff::Plan,
    modname: &str,
    module: &TargetSymtab,
    vmlinux: &TargetSymtab,
    symvers: &Symvers,
) -> Result<Vec<Binding>, Error> {
    plan.externals
        .iter()
        .map(|ext| bind_module_external(plan, ext, modname, module, vmlinux, symvers))
        .collect()
}

/// One external of code in module `modname` ([`bind_externals_module`]).
fn bind_module_external(
    plan: &elfdiff::Plan,
    ext: &External,
    modname: &str,
    module: &TargetSymtab,
    vmlinux: &TargetSymtab,
    symvers: &Symvers,
) -> Result<Binding, Error> {
    if let Some(b) = module_provided(plan, ext) {
        return Ok(b);
    }
    let (objname, table) = if ext.undefined {
        if module.defines_global(&ext.name) {
            (modname, module)
        } else if symvers.exporter(&ext.name).is_some() {
            return Ok(Binding::Plain {
                name: ext.name.clone(),
            });
        } else {
            (VMLINUX, vmlinux)
        }
    } else {
        (modname, module)
    };
    let sympos = table.locate(ext, plan.file_name.as_deref(), &plan.orig_locals)?;
    klp_binding(objname, &ext.name, sympos)
}

/// An undefined symbol the module link or loader provides on the plan's machine (ppc64:
/// `.TOC.`, the `_savegpr0_N` helpers): an ordinary reference, never looked up in the target
/// (a klp relocation to it would not resolve, and `.TOC.` must be the module's own).
fn module_provided(plan: &elfdiff::Plan, ext: &External) -> Option<Binding> {
    // The hook's own symbols (`kmod::hook_defines`) and the machine's module-made ones
    // (ppc64 `.TOC.`) resolve when the module links.
    let provided =
        crate::kmod::hook_defines(&ext.name) || plan.machine.0.module_provided(&ext.name);
    (ext.undefined && provided).then(|| Binding::Plain {
        name: ext.name.clone(),
    })
}

/// A klp binding, refused when the kernel could not parse its symbol name.
fn klp_binding(objname: &str, name: &str, sympos: u64) -> Result<Binding, Error> {
    if objname.len() > MAX_OBJNAME || name.len() > MAX_SYMNAME {
        return Err(Error::NameTooLong {
            name: format!("{objname}.{name}"),
        });
    }
    Ok(Binding::Klp {
        objname: objname.to_string(),
        name: name.to_string(),
        sympos,
    })
}

/// Decide how each external of a plan is bound; every klp symbol is checked against the
/// target's symbol table.
pub fn bind_externals(
    plan: &elfdiff::Plan,
    objname: &str,
    symtab: &TargetSymtab,
    symvers: &Symvers,
) -> Result<Vec<Binding>, Error> {
    plan.externals
        .iter()
        .map(|ext| bind_external(plan, ext, objname, symtab, symvers))
        .collect()
}

/// One external of code in `objname` ([`bind_externals`]).
fn bind_external(
    plan: &elfdiff::Plan,
    ext: &External,
    objname: &str,
    symtab: &TargetSymtab,
    symvers: &Symvers,
) -> Result<Binding, Error> {
    if let Some(b) = module_provided(plan, ext) {
        return Ok(b);
    }
    if !ext.local && symvers.exporter(&ext.name).is_some() {
        return Ok(Binding::Plain {
            name: ext.name.clone(),
        });
    }
    let sympos = symtab.locate(ext, plan.file_name.as_deref(), &plan.orig_locals)?;
    klp_binding(objname, &ext.name, sympos)
}

// ---------------------------------------------------------------------------------------------
// A livepatch of several units: the globals the patch adds are defined by the livepatch itself.

/// Where a unit's code lives, for the binding of its references.
#[derive(Debug, Clone, Copy)]
pub enum Place<'a> {
    Vmlinux,
    /// A module: its name (its klp_object's) and its `.ko`'s symbols.
    Module {
        name: &'a str,
        table: &'a TargetSymtab,
    },
}

impl Place<'_> {
    /// The klp_object's name: None for vmlinux.
    fn object(&self) -> Option<&str> {
        match self {
            Place::Vmlinux => None,
            Place::Module { name, .. } => Some(name),
        }
    }
}

/// One unit's definition of a global the patch adds (`elfdiff::plan::NewGlobal`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnDef {
    pub unit: String,
    /// The klp_object of the unit's code: None for vmlinux, else the module's name.
    pub object: Option<String>,
    /// The patch exports it (the export itself is not carried).
    pub exported: bool,
    /// A variable the running kernel has as a static of the unit's file, which the patch
    /// makes global: its state is the running kernel's, so the livepatch cannot define it.
    pub static_data: bool,
}

impl OwnDef {
    fn object_name(&self) -> &str {
        self.object.as_deref().unwrap_or(VMLINUX)
    }
}

/// The globals the patch adds, in every unit of one livepatch, by name: the livepatch defines
/// them itself, so references to them from other units resolve inside the module.
#[derive(Debug, Default)]
pub struct OwnSymbols {
    defs: BTreeMap<String, Vec<OwnDef>>,
}

impl OwnSymbols {
    pub fn add(&mut self, name: &str, def: OwnDef) {
        self.defs.entry(name.to_string()).or_default().push(def);
    }

    /// The units that define `name`, in the order they were added.
    pub fn defs(&self, name: &str) -> &[OwnDef] {
        self.defs.get(name).map_or(&[], Vec::as_slice)
    }

    pub fn is_empty(&self) -> bool {
        self.defs.is_empty()
    }
}

/// The bindings of one unit of a livepatch of several units, `plan.externals` in order, and the
/// refusals binding found. With a refusal, the bindings are not to be written (a refused
/// reference has a placeholder).
#[derive(Debug, Default)]
pub struct Bound {
    pub bindings: Vec<Binding>,
    pub refusals: Vec<elfdiff::Refusal>,
}

/// Bind the externals of a unit's plan, whose code lives at `place`, in a livepatch whose
/// units define the globals `own`. A reference to a global (undefined in the unit's object)
/// binds, in this order:
/// 1. to the new global of a unit of the same patched object (vmlinux or the one module) —
///    [`Binding::Own`], resolved inside the livepatch module; two such units are refused, as
///    the patched object's own link would fail, and so is a static variable the patch makes
///    global (a static function made global is carried like a new one);
/// 2. for code of a module, to a global the running module defines (a klp relocation against
///    it, as [`bind_externals_module`] binds it): that is what the module's own link resolves
///    it to;
/// 3. for code of a module, to the new global of a unit of vmlinux (an export the patch adds,
///    typically): [`Binding::Own`]. Its code's klp relocations are against vmlinux, resolved
///    as the livepatch loads, so calling it from the module's klp_object is always safe;
/// 4. to the target as without new globals (exported: ordinary; else klp); when the target
///    has no such symbol and only a unit of another module adds it, refused: that copy's
///    klp relocations are resolved only while its module is loaded.
///
/// Statics and the unit's own symbols are never the livepatch's: they bind to the target.
/// Ordinary bindings to the target whose names other units' new globals take are settled
/// once all units are bound ([`unshadow`]).
pub fn bind_unit(
    plan: &elfdiff::Plan,
    place: Place<'_>,
    own: &OwnSymbols,
    vmlinux: &TargetSymtab,
    symvers: &Symvers,
) -> Result<Bound, Error> {
    let here = place.object();
    let target = |ext: &External| match place {
        Place::Vmlinux => bind_external(plan, ext, VMLINUX, vmlinux, symvers),
        Place::Module { name, table } => {
            bind_module_external(plan, ext, name, table, vmlinux, symvers)
        }
    };
    let mut out = Bound::default();
    for ext in &plan.externals {
        let defs = own.defs(&ext.name);
        if !ext.undefined || ext.local || defs.is_empty() {
            out.bindings.push(target(ext)?);
            continue;
        }
        let same: Vec<&OwnDef> = defs
            .iter()
            .filter(|d| d.object.as_deref() == here)
            .collect();
        let module_has =
            matches!(place, Place::Module { table, .. } if table.defines_global(&ext.name));
        let candidates: Vec<&OwnDef> = if !same.is_empty() || module_has {
            same
        } else if here.is_some() {
            defs.iter().filter(|d| d.object.is_none()).collect()
        } else {
            Vec::new()
        };
        let binding = match candidates.as_slice() {
            [d] if d.static_data => {
                out.refusals
                    .push(elfdiff::refusal::new_global_static_data(&ext.name, &d.unit));
                Binding::Plain {
                    name: ext.name.clone(),
                }
            }
            [d] => Binding::Own {
                name: ext.name.clone(),
                unit: d.unit.clone(),
            },
            [a, b, ..] => {
                out.refusals.push(elfdiff::refusal::new_global_twice(
                    &ext.name,
                    &a.unit,
                    &b.unit,
                    a.object_name(),
                ));
                Binding::Plain {
                    name: ext.name.clone(),
                }
            }
            [] => match target(ext) {
                Err(Error::MissingSymbol { .. }) if !module_has => {
                    let d = &defs[0];
                    out.refusals.push(elfdiff::refusal::new_global_of_module(
                        &ext.name,
                        &d.unit,
                        d.object_name(),
                        here.unwrap_or(VMLINUX),
                    ));
                    Binding::Plain {
                        name: ext.name.clone(),
                    }
                }
                other => other?,
            },
        };
        out.bindings.push(binding);
    }
    Ok(out)
}

/// Once every unit is bound: the new globals other units use ([`Binding::Own`]), each with
/// the one unit whose livepatch object defines it as a global symbol; refused when units of
/// different patched objects define one name and both are used (one module has one definition
/// per name).
pub fn shared_globals(
    all: &[&[Binding]],
    own: &OwnSymbols,
) -> (BTreeMap<String, String>, Vec<elfdiff::Refusal>) {
    let mut used: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for b in all.iter().flat_map(|b| b.iter()) {
        if let Binding::Own { name, unit } = b {
            used.entry(name.clone()).or_default().insert(unit.clone());
        }
    }
    let mut shared = BTreeMap::new();
    let mut refusals = Vec::new();
    for (name, units) in used {
        if units.len() == 1 {
            shared.insert(name, units.into_iter().next().expect("one"));
            continue;
        }
        let defs: Vec<(String, String)> = own
            .defs(&name)
            .iter()
            .filter(|d| units.contains(&d.unit))
            .map(|d| (d.unit.clone(), d.object_name().to_string()))
            .collect();
        refusals.push(elfdiff::refusal::new_global_linked_twice(&name, &defs));
    }
    (shared, refusals)
}

/// An ordinary binding of a unit to the target whose name a shared new global of another unit
/// takes (`shared`, from [`shared_globals`]) would be resolved to that global when the units'
/// objects are linked into one: bind it through a klp relocation against vmlinux instead (the
/// symbol is vmlinux's export); an export of a module is refused. `bindings` are the unit's,
/// in `plan.externals` order.
pub fn unshadow(
    plan: &elfdiff::Plan,
    bindings: &mut [Binding],
    shared: &BTreeMap<String, String>,
    vmlinux: &TargetSymtab,
    symvers: &Symvers,
) -> Result<Vec<elfdiff::Refusal>, Error> {
    let mut refusals = Vec::new();
    for (ext, b) in plan.externals.iter().zip(bindings.iter_mut()) {
        let Binding::Plain { name } = b else {
            continue;
        };
        let Some(unit) = shared.get(name) else {
            continue;
        };
        match symvers.exporter(name) {
            Some(VMLINUX) => {
                let sympos = vmlinux.locate(ext, plan.file_name.as_deref(), &plan.orig_locals)?;
                *b = klp_binding(VMLINUX, name, sympos)?;
            }
            exporter => refusals.push(elfdiff::refusal::new_global_shadows(
                name,
                unit,
                exporter.unwrap_or("?"),
            )),
        }
    }
    Ok(refusals)
}

/// Jump labels and static calls whose key lives in a module. The kernel sets up a livepatch
/// module's `__jump_table` and `.static_call_sites` entries as the module loads; klp
/// relocations against vmlinux are applied before that, but those against other modules only
/// when the livepatch is enabled or that module arrives, so such an entry would name an
/// unrelocated key. `bindings` are in `plan.externals` order.
pub fn module_key_refusals(plan: &elfdiff::Plan, bindings: &[Binding]) -> Vec<elfdiff::Refusal> {
    use elfdiff::plan::PlanTarget;
    let in_module = |i: usize| match bindings.get(i) {
        Some(Binding::Klp { objname, .. }) if objname != VMLINUX => Some(objname.as_str()),
        _ => None,
    };
    let mut found: Vec<(usize, &str)> = Vec::new();
    for sec in &plan.sections {
        if sec.name != "__jump_table" && sec.name != ".static_call_sites" {
            continue;
        }
        for r in &sec.relocs {
            if let PlanTarget::External(i) = r.target {
                if in_module(i).is_some() && !found.contains(&(i, sec.name.as_str())) {
                    found.push((i, sec.name.as_str()));
                }
            }
        }
    }
    // On targets where objtool regenerates `.static_call_sites` for the linked livepatch, the
    // sites are not in the plan: the code's references to the key or trampoline tell.
    for (i, e) in plan.externals.iter().enumerate() {
        if (e.name.starts_with("__SCK__") || e.name.starts_with("__SCT__"))
            && in_module(i).is_some()
            && !found.iter().any(|(j, _)| *j == i)
        {
            found.push((i, ".static_call_sites"));
        }
    }
    found
        .into_iter()
        .map(|(i, section)| {
            let name = &plan.externals[i].name;
            let module = in_module(i).unwrap_or_default();
            let what = if section == "__jump_table" {
                "jump label (static key)"
            } else {
                "static call"
            };
            elfdiff::refusal::module_static_key(name, section, what, module)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testimage::{Image, GLOBAL_OBJECT};

    const RODATA: u64 = 0xffff_ffff_8180_0000;
    const KSYMTAB: u64 = 0xffff_ffff_8190_0000;
    const KCRCTAB: u64 = 0xffff_ffff_81a0_0000;

    /// How a fake vmlinux records CRCs.
    #[derive(Clone, Copy, PartialEq)]
    enum Crcs {
        None,
        /// `__crc_<name>` labels on 4-byte values in `__kcrctab` (5.19 and later).
        Table,
        /// Absolute `__crc_<name>` symbols whose value is the CRC (before 5.19).
        Absolute,
    }

    /// A linked kernel image with `linux_banner` (when `release` is given) and an exported
    /// symbol `__ksymtab_<name>` (with CRC `crc`) per entry of `exports`.
    fn vmlinux(release: Option<&str>, exports: &[(&str, u32)], crcs: Crcs) -> Vec<u8> {
        let mut img = Image::new();
        let banner = release.map(|r| format!("Linux version {r} (x@y) #1 SMP\n\0"));
        let text = banner.clone().unwrap_or_default().into_bytes();
        let rodata = img.section(".rodata", elf::SHF_ALLOC, RODATA, text);
        let ksymtab = img.section(
            "__ksymtab",
            elf::SHF_ALLOC,
            KSYMTAB,
            vec![0; 12 * exports.len()],
        );
        let table: Vec<u8> = exports.iter().flat_map(|(_, c)| c.to_le_bytes()).collect();
        let kcrctab = img.section("__kcrctab", elf::SHF_ALLOC, KCRCTAB, table);
        if let Some(t) = &banner {
            img.symbol(
                "linux_banner",
                Some(rodata),
                GLOBAL_OBJECT,
                RODATA,
                t.len() as u64,
            );
        }
        for (i, (name, crc)) in exports.iter().enumerate() {
            let i = i as u64;
            let ksym = format!("__ksymtab_{name}");
            img.symbol(&ksym, Some(ksymtab), GLOBAL_OBJECT, KSYMTAB + 12 * i, 12);
            let crc_sym = format!("__crc_{name}");
            match crcs {
                Crcs::None => {}
                Crcs::Table => {
                    img.symbol(&crc_sym, Some(kcrctab), GLOBAL_OBJECT, KCRCTAB + 4 * i, 0)
                }
                Crcs::Absolute => img.symbol(&crc_sym, None, GLOBAL_OBJECT, u64::from(*crc), 0),
            }
        }
        img.finish()
    }

    fn symvers(lines: &[(&str, u32, &str)]) -> Symvers {
        let text: String = lines
            .iter()
            .map(|(n, crc, m)| format!("{crc:#010x}\t{n}\t{m}\tEXPORT_SYMBOL\t\n"))
            .collect();
        Symvers::parse("Module.symvers", &text).unwrap()
    }

    const EXPORTS: &[(&str, u32)] = &[
        ("printk", 0x1111_1111),
        ("kmalloc", 0x2222_2222),
        ("kfree", 0x3333_3333),
    ];

    fn same_build(crc: bool) -> Symvers {
        let mut lines: Vec<(&str, u32, &str)> = EXPORTS
            .iter()
            .map(|&(n, c)| (n, if crc { c } else { 0 }, "vmlinux"))
            .collect();
        // A module's export is not vmlinux's business.
        lines.push(("mod_fn", 0x4444_4444, "drivers/x/mod"));
        symvers(&lines)
    }

    #[test]
    fn identity_reads_banner_exports_and_crcs() {
        for crcs in [Crcs::Table, Crcs::Absolute] {
            let id = KernelIdentity::parse("vmlinux", &vmlinux(Some("6.12.0-a"), EXPORTS, crcs))
                .unwrap();
            assert!(id.linked);
            assert_eq!(id.release.as_deref(), Some("6.12.0-a"));
            assert_eq!(id.exports.len(), 3);
            assert!(id.exports.contains("kmalloc"));
            assert_eq!(id.crcs.get("kfree"), Some(&0x3333_3333));
        }
        let id = KernelIdentity::parse("vmlinux", &vmlinux(None, EXPORTS, Crcs::None)).unwrap();
        assert_eq!(id.release, None);
        assert!(id.crcs.is_empty());
        assert!(KernelIdentity::parse("x", b"not elf").is_err());
    }

    #[test]
    fn identity_sees_clear_relocate_add() {
        let plain = KernelIdentity::parse("vm", &vmlinux(Some("6.1.0-a"), EXPORTS, Crcs::None));
        assert!(!plain.unwrap().clears_klp_relocations);
        let mut img = Image::new();
        let text = img.section(".text", elf::SHF_ALLOC, RODATA, vec![0xc3; 16]);
        img.symbol("clear_relocate_add", Some(text), GLOBAL_OBJECT, RODATA, 16);
        let id = KernelIdentity::parse("vm", &img.finish()).unwrap();
        assert!(id.clears_klp_relocations);
    }

    #[test]
    fn release_must_match_the_build() {
        let id =
            KernelIdentity::parse("vm", &vmlinux(Some("6.12.0-a"), EXPORTS, Crcs::None)).unwrap();
        assert_eq!(release_mismatch(&id, "kernel.release", "6.12.0-a"), None);
        let m = release_mismatch(&id, "b/include/config/kernel.release", "6.12.0-b").unwrap();
        assert_eq!(m.key, VMLINUX_MISMATCH);
        assert!(m.detail.contains("6.12.0-a") && m.detail.contains("6.12.0-b"));
        assert!(m.detail.contains("vm ") && m.detail.contains("b/include/config/kernel.release"));
        let nobanner = KernelIdentity::parse("vm", &vmlinux(None, EXPORTS, Crcs::None)).unwrap();
        let m = release_mismatch(&nobanner, "kr", "6.12.0-a").unwrap();
        assert_eq!(m.key, VMLINUX_MISMATCH);
        assert!(m.detail.contains("no readable linux_banner"), "{m}");
    }

    #[test]
    fn source_version_must_prefix_the_release() {
        let mk = "VERSION = 6\nPATCHLEVEL = 12\nSUBLEVEL = 1\nEXTRAVERSION =\nNAME = x\n";
        assert_eq!(makefile_version(mk).as_deref(), Some("6.12.1"));
        assert_eq!(
            makefile_version("VERSION = 6\nPATCHLEVEL = 1\nSUBLEVEL =\nEXTRAVERSION = -rc3\n")
                .as_deref(),
            Some("6.1-rc3")
        );
        assert_eq!(makefile_version("# nothing\n"), None);
        for ok in ["6.12.1", "6.12.1-amd64", "6.12.1+"] {
            assert_eq!(source_mismatch("Makefile", mk, "kr", ok), None, "{ok}");
        }
        for bad in ["6.12.117", "6.12.2", "6.1.1", "5.10"] {
            let m = source_mismatch("src/Makefile", mk, "kr", bad).unwrap();
            assert_eq!(m.key, SOURCE_MISMATCH);
            assert!(m.detail.contains("6.12.1 (src/Makefile)") && m.detail.contains(bad));
        }
        // A Makefile that does not say: nothing to compare.
        assert_eq!(source_mismatch("Makefile", "all:\n", "kr", "6.12.1"), None);
    }

    #[test]
    fn banner_versions_skip_nested_parentheses() {
        let debian = "Linux version 6.1.0-57-cloud-amd64 (debian-kernel@lists.debian.org) (gcc-12 (Debian 12.2.0-14+deb12u1) 12.2.0, GNU ld (GNU Binutils for Debian) 2.40) #1 SMP PREEMPT_DYNAMIC Debian 6.1.192-3 (2026-11-26)\n";
        assert_eq!(
            banner_version(debian).as_deref(),
            Some("#1 SMP PREEMPT_DYNAMIC Debian 6.1.192-3 (2026-11-26)")
        );
        let own = "Linux version 6.12.117 (root@vm) (gcc (Debian 12.2.0-14+deb12u1) 12.2.0, GNU ld (GNU Binutils for Debian) 2.40) #1 Tue Dec  1 21:57:01 UTC 2026\n";
        assert_eq!(
            banner_version(own).as_deref(),
            Some("#1 Tue Dec  1 21:57:01 UTC 2026")
        );
        assert_eq!(
            banner_version("Linux version 6.1 (x@y) (gcc (unbalanced"),
            None
        );
        assert_eq!(banner_version("Linux version 6.1 (x@y) (gcc)\n"), None);
        assert_eq!(banner_version("not a banner"), None);
        let id =
            KernelIdentity::parse("vm", &vmlinux(Some("6.12.0-a"), EXPORTS, Crcs::None)).unwrap();
        assert_eq!(id.version.as_deref(), Some("#1 SMP"));
        assert_eq!(build_mismatch(&id, "utsversion.h", "#1 SMP"), None);
        let m = build_mismatch(&id, "b/utsversion.h", "#2 SMP").unwrap();
        assert_eq!(m.key, VMLINUX_MISMATCH);
        assert!(
            m.detail.contains("\"#1 SMP\" of 6.12.0-a")
                && m.detail.contains("\"#2 SMP\" (b/utsversion.h)"),
            "{m}"
        );
    }

    #[test]
    fn sources_must_be_the_packages_upstream_version() {
        let mk = "VERSION = 6\nPATCHLEVEL = 1\nSUBLEVEL = 192\nEXTRAVERSION =\n";
        assert_eq!(upstream_mismatch("Makefile", mk, "pkg", "6.1.192"), None);
        let m = upstream_mismatch("src/Makefile", mk, "Debian 6.1.187-1", "6.1.187").unwrap();
        assert_eq!(m.key, SOURCE_MISMATCH);
        assert!(
            m.detail.contains("6.1.192 (src/Makefile)")
                && m.detail.contains("6.1.187 (Debian 6.1.187-1)"),
            "{m}"
        );
        // The release's prefix rule would let these through; the exact version does not.
        assert!(upstream_mismatch("Makefile", mk, "pkg", "6.1.19").is_some());
    }

    #[test]
    fn symvers_of_the_same_build_passes() {
        let plain = KernelIdentity::parse("vm", &vmlinux(Some("r"), EXPORTS, Crcs::None)).unwrap();
        assert_eq!(
            symvers_mismatch(&plain, "Module.symvers", &same_build(false)),
            None
        );
        for crcs in [Crcs::Table, Crcs::Absolute] {
            let id = KernelIdentity::parse("vm", &vmlinux(Some("r"), EXPORTS, crcs)).unwrap();
            assert_eq!(
                symvers_mismatch(&id, "Module.symvers", &same_build(true)),
                None
            );
        }
    }

    #[test]
    fn symvers_of_another_build_is_named() {
        let id =
            KernelIdentity::parse("vm", &vmlinux(Some("6.12.0-a"), EXPORTS, Crcs::None)).unwrap();
        // One export vmlinux does not have.
        let mut lines: Vec<(&str, u32, &str)> =
            EXPORTS.iter().map(|&(n, _)| (n, 0, "vmlinux")).collect();
        lines.push(("only_there", 0, "vmlinux"));
        let m = symvers_mismatch(&id, "other/Module.symvers", &symvers(&lines)).unwrap();
        assert_eq!(m.key, SYMVERS_MISMATCH);
        assert!(
            m.detail
                .starts_with("other/Module.symvers is not the Module.symvers of vm (6.12.0-a)"),
            "{m}"
        );
        assert!(
            m.detail
                .contains("1 of its 4 vmlinux exports are not exported by vm"),
            "{m}"
        );
        assert!(m.detail.contains("only_there"), "{m}");
        // One export missing from Module.symvers.
        let m = symvers_mismatch(&id, "s", &symvers(&lines[..2])).unwrap();
        assert!(
            m.detail
                .contains("1 of the 3 symbols vm exports are not in it: kfree"),
            "{m}"
        );
        // An empty one, or one with a single matching line, is not the target's.
        assert!(symvers_mismatch(&id, "s", &Symvers::default()).is_some());
        assert!(symvers_mismatch(&id, "s", &symvers(&[("printk", 0, "vmlinux")])).is_some());
        // Many differences: counts and a few examples, not all.
        let many: Vec<String> = (0..40).map(|i| format!("sym{i:02}")).collect();
        let lines: Vec<(&str, u32, &str)> =
            many.iter().map(|n| (n.as_str(), 0, "vmlinux")).collect();
        let m = symvers_mismatch(&id, "s", &symvers(&lines)).unwrap();
        assert!(m.detail.contains("40 of its 40"), "{m}");
        assert!(
            m.detail
                .contains("sym00, sym01, sym02, sym03, sym04, ... (35 more)"),
            "{m}"
        );
        // Not for a relocatable vmlinux.o.
        let mut rel = id.clone();
        rel.linked = false;
        assert_eq!(symvers_mismatch(&rel, "s", &symvers(&lines)), None);
    }

    #[test]
    fn crcs_must_agree() {
        let id = KernelIdentity::parse("vm", &vmlinux(Some("r"), EXPORTS, Crcs::Table)).unwrap();
        let lines: Vec<(&str, u32, &str)> = EXPORTS
            .iter()
            .map(|&(n, c)| (n, if n == "kfree" { c + 1 } else { c }, "vmlinux"))
            .collect();
        let m = symvers_mismatch(&id, "s", &symvers(&lines)).unwrap();
        assert_eq!(m.key, SYMVERS_MISMATCH);
        assert!(
            m.detail.contains(
                "1 of its CRCs disagree with vm's __crc_<name>: kfree 0x33333334 vs 0x33333333"
            ),
            "{m}"
        );
        // CONFIG_MODVERSIONS on one side only.
        let m = symvers_mismatch(&id, "s", &same_build(false)).unwrap();
        assert!(m.detail.contains("vm has CRCs for 3 symbols"), "{m}");
        let plain = KernelIdentity::parse("vm", &vmlinux(Some("r"), EXPORTS, Crcs::None)).unwrap();
        let m = symvers_mismatch(&plain, "s", &same_build(true)).unwrap();
        assert!(m.detail.contains("it has CRCs (3 symbols"), "{m}");
    }
}
