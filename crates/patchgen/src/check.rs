//! Verification of a finished livepatch module against its target (`klpgen check`, and the
//! last step of `klpgen build`): modinfo, every `.klp.sym`/`.klp.rela` marking, every klp
//! symbol resolved in the target's symbol table in kallsyms order, every replaced function
//! present and ftrace-able in the target, and every ordinary undefined symbol exported.
//! In detail: modinfo `livepatch=Y`, a GPL license, a vermagic naming the release in the
//! vmlinux's `linux_banner`; every `.klp.sym` SHN_LIVEPATCH, well formed, and at its position
//! (vmlinux: address order among equal names; a module: symbol-table order) a symbol of the
//! recorded origin file; every `.klp.rela` well formed; every replaced function present, a
//! function, and covered by an `__mcount_loc` entry; every ordinary undefined symbol in
//! Module.symvers, and Module.symvers itself the vmlinux's (`check.target.symvers-mismatch`);
//! every given target module built for the vmlinux's release (`check.target.module-mismatch`);
//! and the kernel the module's guard lets it load on (its `klpgen_target_release` and
//! `klpgen_target_version` strings, `crate::kmod`) the vmlinux's release and banner version
//! (`check.target.guard`).
//! In `klpgen build` any finding fails the build (`src/build/module.rs`).
//!
//! Bytes in, findings out. Each finding has a stable key (`check.<what>...`, listed in
//! docs/check.md; `tests/catalogue.rs` reads the keys from the string literals of this file
//! up to its test modules, so every key and kind is spelled here and the test-only module
//! declarations come last). The replaced functions and the origin of every klp symbol are
//! read from two non-allocated sections that `klpgen build` writes into the module
//! (`crate::manifest`). A module kpatch-build made has neither; its replaced functions are read
//! from its own `.kpatch.funcs` table (`check/kpatch.rs`) and checked the same way (their source
//! file is not recorded, and its klp symbols are checked by position only). A module with
//! neither table cannot have its functions verified.
//!
//! The target is read by this module's own reader ([`TargetObject`], `check/kallsyms.rs`),
//! not by the binder's `crate::target::TargetSymtab`: the point of the check is a second,
//! independent derivation of every klp symbol's kallsyms position, which catches binding
//! bugs instead of repeating them.

use std::collections::{BTreeSet, HashMap};

use object::elf;
use object::read::elf::{SectionHeader, Sym};

use crate::elf::Elf;
use crate::klpsym::{self, KLP_SYM_PREFIX, MAX_OBJNAME, MAX_SYMNAME, SHF_RELA_LIVEPATCH};
use crate::klpsym::{SHN_LIVEPATCH, VMLINUX};
use crate::manifest::{decode_records, Origin, Record, FUNCS_SECTION, SYMS_SECTION};
use crate::target::{module_mismatch, symvers_mismatch, Symvers};
use crate::Error;

mod kallsyms;
mod kpatch;

pub use kallsyms::TargetObject;
use kallsyms::{KSym, Resolve};

// ---------------------------------------------------------------------------------------------
// Findings

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Error,
    /// Something that could not be verified; still a finding (the check does not pass).
    Warning,
}

/// One problem found in a livepatch module.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Finding {
    pub key: String,
    pub level: Level,
    pub detail: String,
}

#[derive(Default)]
struct Findings(Vec<Finding>);

impl Findings {
    fn error(&mut self, key: impl Into<String>, detail: impl Into<String>) {
        self.push(key, Level::Error, detail);
    }
    fn warn(&mut self, key: impl Into<String>, detail: impl Into<String>) {
        self.push(key, Level::Warning, detail);
    }
    fn push(&mut self, key: impl Into<String>, level: Level, detail: impl Into<String>) {
        self.0.push(Finding {
            key: key.into(),
            level,
            detail: detail.into(),
        });
    }
}

/// Module names are compared with `-` and `_` equivalent, as the kernel does.
pub fn module_key(name: &str) -> String {
    name.replace('-', "_")
}

// ---------------------------------------------------------------------------------------------
// Inputs and outcome

/// What a module is checked against.
pub struct Inputs<'a> {
    pub vmlinux: &'a TargetObject,
    /// The target's Module.symvers: every ordinary undefined symbol must be exported.
    pub symvers: Option<&'a Symvers>,
    /// Target modules by [`module_key`]; `None` when none were given.
    pub modules: Option<&'a HashMap<String, TargetObject>>,
}

/// The outcome of a check.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Report {
    pub findings: Vec<Finding>,
    /// The target's release (from `linux_banner`) and the module's vermagic release.
    pub release: Option<String>,
    pub vermagic: Option<String>,
    pub klp_symbols: usize,
    pub klp_relocations: usize,
    /// Replaced functions listed in `.klpgen.funcs` (or `.kpatch.funcs`).
    pub functions: usize,
    /// The table they were read from: `.klpgen.funcs` (klpgen), `.kpatch.funcs` (kpatch-build).
    pub functions_from: Option<&'static str>,
    /// Ordinary undefined symbols checked against Module.symvers.
    pub undefined: usize,
    /// The kernel the module's guard lets it load on (modules built by klpgen).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub guard: Option<GuardTarget>,
}

/// The release and version a klpgen module's guard compares the running kernel's with.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct GuardTarget {
    pub release: String,
    /// Empty when the guard compares the release only.
    pub version: String,
}

impl Report {
    pub fn ok(&self) -> bool {
        self.findings.is_empty()
    }
}

// ---------------------------------------------------------------------------------------------
// The module being checked

/// Licenses the kernel treats as GPL-compatible (`license_is_gpl_compatible`).
const GPL_LICENSES: &[&str] = &[
    "GPL",
    "GPL v2",
    "GPL and additional rights",
    "Dual BSD/GPL",
    "Dual MIT/GPL",
    "Dual MPL/GPL",
];

struct Module<'a> {
    elf: Elf<'a>,
    modinfo: Vec<(&'a str, &'a str)>,
}

impl<'a> Module<'a> {
    fn parse(label: &str, ko: &'a [u8]) -> Result<Self, Error> {
        let bad = |what: String| Error::Module {
            module: label.to_string(),
            what,
        };
        let elf = Elf::parse(ko, &bad)?;
        let modinfo = elf
            .modinfo_entries()
            .filter_map(|e| std::str::from_utf8(e).ok())
            .filter_map(|e| e.split_once('='))
            .collect();
        Ok(Module { elf, modinfo })
    }

    fn modinfo(&self, key: &str) -> impl Iterator<Item = &'a str> + '_ {
        let key = key.to_string();
        self.modinfo
            .iter()
            .filter(move |(k, _)| *k == key)
            .map(|(_, v)| *v)
    }

    /// (symbol table index, name, section index) of every `.klp.sym.*` symbol.
    fn klp_syms(&self) -> Vec<(usize, String, u16)> {
        let e = &self.elf;
        e.symtab
            .iter()
            .enumerate()
            .filter_map(|(i, s)| {
                let n = e.sym_name(s);
                n.starts_with(KLP_SYM_PREFIX)
                    .then(|| (i, n, s.st_shndx(e.endian)))
            })
            .collect()
    }
}

// ---------------------------------------------------------------------------------------------
// Structural checks

/// Target-independent checks: modinfo `livepatch=Y` and a GPL license, every `.klp.sym`
/// symbol SHN_LIVEPATCH and well formed, every `.klp.rela` section well formed (type, flags,
/// target section, only livepatch symbols of its own object), and no ordinary relocation
/// against a klp symbol.
pub fn check_structure(label: &str, ko: &[u8]) -> Result<Vec<Finding>, Error> {
    let m = Module::parse(label, ko)?;
    let mut f = Findings::default();
    let mut report = Report::default();
    structure(&m, &mut f, &mut report);
    Ok(f.0)
}

fn structure(m: &Module<'_>, f: &mut Findings, report: &mut Report) {
    modinfo_markings(m, f);
    let klp_syms = m.klp_syms();
    report.klp_symbols = klp_syms.len();
    klp_symbol_markings(&klp_syms, f);
    let klp_index: HashMap<usize, &str> =
        klp_syms.iter().map(|(i, n, _)| (*i, n.as_str())).collect();
    let e = &m.elf;
    for (i, s) in e.sections.iter().enumerate() {
        let name = e.sec_name(s);
        match klpsym::rela_objname(&name) {
            Some(obj) => klp_rela_section(m, i, s, &name, obj, f, report),
            None => ordinary_relocations(m, s, &name, &klp_index, f),
        }
    }
}

/// `livepatch=Y` and a GPL-compatible license.
fn modinfo_markings(m: &Module<'_>, f: &mut Findings) {
    if !m.modinfo("livepatch").any(|v| v == "Y") {
        f.error(
            "check.modinfo.livepatch",
            "modinfo has no livepatch=Y: the kernel refuses to enable the patch",
        );
    }
    let licenses: Vec<&str> = m.modinfo("license").collect();
    if !licenses.iter().any(|l| GPL_LICENSES.contains(l)) {
        f.error(
            "check.modinfo.license",
            format!(
                "modinfo has no GPL-compatible license (has {}): klp_enable_patch is GPL-only",
                if licenses.is_empty() {
                    "none".to_string()
                } else {
                    licenses.join(", ")
                }
            ),
        );
    }
}

/// Every klp symbol SHN_LIVEPATCH and named as the kernel parses it.
fn klp_symbol_markings(klp_syms: &[(usize, String, u16)], f: &mut Findings) {
    for (_, name, shndx) in klp_syms {
        if *shndx != SHN_LIVEPATCH {
            f.error(
                "check.klp-sym.shndx",
                format!("{name} has section index {shndx:#x}, not SHN_LIVEPATCH (0xff20)"),
            );
        }
        if klpsym::parse(name).is_none() {
            f.error(
                "check.klp-sym.name",
                format!(
                    "{name} is not .klp.sym.<object>.<name>,<position> (object 1-{MAX_OBJNAME} characters without '.', name 1-{MAX_SYMNAME} without ',')"
                ),
            );
        }
    }
}

/// An ordinary relocation section must not use klp symbols (`klp_index`: their symbol table
/// indices).
fn ordinary_relocations(
    m: &Module<'_>,
    s: &elf::SectionHeader64<object::Endianness>,
    name: &str,
    klp_index: &HashMap<usize, &str>,
    f: &mut Findings,
) {
    let e = &m.elf;
    if s.sh_type(e.endian) != elf::SHT_RELA {
        return;
    }
    let Ok(Some((relas, _))) = s.rela(e.endian, e.data) else {
        return;
    };
    let n = relas
        .iter()
        .filter(|r| klp_index.contains_key(&(r.r_sym(e.endian, false) as usize)))
        .count();
    if n > 0 {
        f.error(
            "check.klp-rela.ordinary",
            format!("{name}: {n} ordinary relocation(s) against klp symbols; the module loader would apply them with address 0"),
        );
    }
}

/// One `.klp.rela.<obj>.<section>` section (index `i`): its type, flags, target section and
/// name, and every relocation against a livepatch symbol of `obj`.
fn klp_rela_section(
    m: &Module<'_>,
    i: usize,
    s: &elf::SectionHeader64<object::Endianness>,
    name: &str,
    obj: &str,
    f: &mut Findings,
    report: &mut Report,
) {
    let e = &m.elf;
    let sh_type = s.sh_type(e.endian);
    let flags = s.sh_flags(e.endian);
    if sh_type != elf::SHT_RELA {
        f.error("check.klp-rela.type", format!("{name} is not SHT_RELA"));
    }
    if flags & SHF_RELA_LIVEPATCH == 0 || flags & u64::from(elf::SHF_ALLOC) == 0 {
        f.error(
            "check.klp-rela.flags",
            format!("{name} has flags {flags:#x}, lacking SHF_ALLOC or SHF_RELA_LIVEPATCH"),
        );
    }
    let target = s.sh_info(e.endian) as usize;
    if target == 0 || target >= e.sections.len() || target == i {
        f.error(
            "check.klp-rela.target",
            format!("{name} applies to section {target}, which does not exist"),
        );
    }
    if obj.is_empty() || obj.len() > MAX_OBJNAME {
        f.error(
            "check.klp-rela.name",
            format!("{name} is not .klp.rela.<object>.<section>"),
        );
    }
    if sh_type != elf::SHT_RELA {
        return;
    }
    let Ok(Some((relas, _))) = s.rela(e.endian, e.data) else {
        f.error(
            "check.klp-rela.type",
            format!("{name}: cannot read its relocations"),
        );
        return;
    };
    report.klp_relocations += relas.len();
    for r in relas {
        let idx = r.r_sym(e.endian, false) as usize;
        let Ok(sym) = e.symtab.symbol(object::SymbolIndex(idx)) else {
            f.error(
                "check.klp-rela.symbol",
                format!("{name}: a relocation names symbol {idx}, past the symbol table"),
            );
            continue;
        };
        let sname = e.sym_name(sym);
        if !sname.starts_with(KLP_SYM_PREFIX) || sym.st_shndx(e.endian) != SHN_LIVEPATCH {
            f.error(
                "check.klp-rela.symbol",
                format!("{name}: {sname:?} is not a livepatch (.klp.sym, SHN_LIVEPATCH) symbol"),
            );
        } else if klpsym::parse(&sname).is_some_and(|k| k.objname != obj) {
            f.error(
                "check.klp-rela.object",
                format!("{name}: {sname} belongs to another object than {obj}"),
            );
        }
        if let Some(arch) = elfdiff::arch::for_machine(e.e_machine) {
            machine_klp_relocation(m, arch, target, name, r, &sname, f);
        }
    }
}

/// A klp relocation the machine's module loader cannot apply soundly to a symbol outside the
/// module: one that counts from the module's own base register (ppc64 `TOC16_*`: applied
/// without a range check, so silently wrong), or a branch that cannot go through the loader's
/// stub (ppc64: a `bl` without the `nop` the loader turns into the TOC restore, "Expected nop
/// after call", or a tail call `b`).
fn machine_klp_relocation(
    m: &Module<'_>,
    arch: &dyn elfdiff::arch::Arch,
    target: usize,
    name: &str,
    r: &elf::Rela64<object::Endianness>,
    sname: &str,
    f: &mut Findings,
) {
    let e = &m.elf;
    let r_type = r.r_type(e.endian, false);
    let offset = object::read::elf::Rela::r_offset(r, e.endian);
    let rname = arch
        .reloc_name(r_type)
        .map_or_else(|| format!("type {r_type}"), str::to_string);
    if arch.far_reference(r_type).is_some() {
        f.error(
            "check.klp-rela.far",
            format!("{name}+{offset:#x}: {rname} against {sname} counts from the module's TOC pointer and cannot reach the running kernel's symbol on {}", arch.name()),
        );
        return;
    }
    let code = e
        .section(target)
        .filter(|t| t.sh_flags(e.endian) & u64::from(elf::SHF_EXECINSTR) != 0)
        .and_then(|t| t.data(e.endian, e.data).ok());
    if code.is_some_and(|c| arch.branch_needs_local_target(c, offset, r_type)) {
        f.error(
            "check.klp-rela.branch",
            format!("{name}+{offset:#x}: the branch to {sname} cannot go through the module loader's stub on {} (a call without the nop after it, or a tail call)", arch.name()),
        );
    }
}

/// Module names a livepatch refers to besides vmlinux (klp symbols and replaced functions),
/// so the caller can load them for [`Inputs::modules`].
pub fn referenced_objects(label: &str, ko: &[u8]) -> Result<BTreeSet<String>, Error> {
    let m = Module::parse(label, ko)?;
    let mut out = BTreeSet::new();
    for (_, name, _) in m.klp_syms() {
        if let Some(k) = klpsym::parse(&name) {
            out.insert(k.objname.to_string());
        }
    }
    for sec in [FUNCS_SECTION, SYMS_SECTION] {
        if let Some(Ok(records)) = m.elf.section_data(sec).map(decode_records) {
            out.extend(records.into_iter().map(|r| r.objname));
        }
    }
    if let Some(Ok(funcs)) = kpatch::read(&m.elf) {
        out.extend(funcs.into_iter().map(|f| f.objname));
    }
    out.remove(VMLINUX);
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Checks against the target

/// Everything: [`check_structure`], vermagic against the target's release, every klp symbol
/// and replaced function resolved in its target object (and ftrace-able there), and, with
/// Module.symvers, every ordinary undefined symbol exported.
pub fn check_module(label: &str, ko: &[u8], inputs: &Inputs<'_>) -> Result<Report, Error> {
    let m = Module::parse(label, ko)?;
    let mut f = Findings::default();
    let mut report = Report::default();
    structure(&m, &mut f, &mut report);
    vermagic(&m, inputs, &mut f, &mut report);
    guard(&m, inputs, &mut f, &mut report);
    let mut unverified: BTreeSet<(&'static str, String)> = BTreeSet::new();
    klp_symbols(&m, inputs, &mut f, &mut unverified);
    functions(&m, inputs, &mut f, &mut report, &mut unverified);
    for (what, obj) in unverified {
        f.warn(
            format!("check.{what}.module-unverified"),
            format!("module {obj} was not given (--modules DIR): its {what} references cannot be verified"),
        );
    }
    if let Some(symvers) = inputs.symvers {
        if let Some(mm) = inputs
            .vmlinux
            .identity
            .as_ref()
            .and_then(|id| symvers_mismatch(id, &symvers.label, symvers))
        {
            f.error("check.target.symvers-mismatch", mm.detail);
        }
        undefined(&m, symvers, &mut f, &mut report);
        versions(&m, symvers, &mut f);
    }
    target_modules(inputs, &mut f);
    report.findings = f.0;
    Ok(report)
}

fn vermagic(m: &Module<'_>, inputs: &Inputs<'_>, f: &mut Findings, report: &mut Report) {
    report.release = inputs.vmlinux.release.clone();
    report.vermagic = m
        .modinfo("vermagic")
        .next()
        .and_then(|v| v.split_whitespace().next())
        .map(str::to_string);
    match (&report.vermagic, &report.release) {
        (None, _) => f.error(
            "check.modinfo.vermagic",
            "modinfo has no vermagic: the kernel refuses to load the module",
        ),
        (Some(_), None) => f.error(
            "check.target.release",
            format!(
                "{}: no readable linux_banner, so the kernel release is unknown",
                inputs.vmlinux.label
            ),
        ),
        (Some(v), Some(r)) if v != r => f.error(
            "check.modinfo.vermagic",
            format!("the module was built for {v}, the target is {r}"),
        ),
        _ => {}
    }
}

/// The NUL-terminated string a symbol of the module labels, if it has that symbol.
fn symbol_string(m: &Module<'_>, name: &str) -> Option<String> {
    let e = &m.elf;
    let sym = e
        .symtab
        .iter()
        .find(|s| e.symtab.symbol_name(e.endian, s).ok() == Some(name.as_bytes()))?;
    let shndx = usize::from(sym.st_shndx(e.endian));
    let bytes = e.bytes_at(shndx, sym.st_value(e.endian), sym.st_size(e.endian))?;
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    std::str::from_utf8(&bytes[..end]).ok().map(str::to_string)
}

/// A klpgen module refuses to load on any kernel but the one it names (its guard): that must
/// be the target's release and version. Modules without a guard (not built by klpgen) are not
/// judged here.
fn guard(m: &Module<'_>, inputs: &Inputs<'_>, f: &mut Findings, report: &mut Report) {
    let Some(release) = symbol_string(m, crate::kmod::GUARD_RELEASE) else {
        return;
    };
    let version = symbol_string(m, crate::kmod::GUARD_VERSION).unwrap_or_default();
    let target_release = inputs.vmlinux.release.as_deref();
    let target_version = inputs
        .vmlinux
        .identity
        .as_ref()
        .and_then(|i| i.version.as_deref());
    let release_differs = target_release.is_some_and(|r| r != release);
    let version_differs = !version.is_empty() && target_version.is_some_and(|v| v != version);
    if release_differs || version_differs {
        f.error(
            "check.target.guard",
            format!(
                "the module's guard loads it only on kernel {release} \"{version}\", but {} is {} \"{}\": it refuses to load there",
                inputs.vmlinux.label,
                target_release.unwrap_or("of unknown release"),
                target_version.unwrap_or("")
            ),
        );
    }
    report.guard = Some(GuardTarget { release, version });
}

/// Every target module given must be built for the vmlinux's kernel (its vermagic).
fn target_modules(inputs: &Inputs<'_>, f: &mut Findings) {
    let Some(mods) = inputs.modules else { return };
    let mut mods: Vec<&TargetObject> = mods.values().collect();
    mods.sort_by(|a, b| a.label.cmp(&b.label));
    for t in mods {
        if let Some(mm) = module_mismatch(
            &t.label,
            t.release.as_deref(),
            &inputs.vmlinux.label,
            inputs.vmlinux.release.as_deref(),
        ) {
            f.error("check.target.module-mismatch", mm.detail);
        }
    }
}

/// The target object a klp symbol or function refers to; `Err` says why there is none.
fn target_of<'i>(inputs: &'i Inputs<'_>, objname: &str) -> Result<&'i TargetObject, bool> {
    if objname == VMLINUX {
        return Ok(inputs.vmlinux);
    }
    match inputs.modules {
        None => Err(false),
        Some(mods) => mods.get(&module_key(objname)).ok_or(true),
    }
}

fn resolve_problem(
    r: &Resolve<'_>,
    t: &TargetObject,
    name: &str,
    pos: u64,
) -> Option<(&'static str, String)> {
    let n = |c: usize| {
        if c == 1 {
            "symbol".to_string()
        } else {
            "symbols".to_string()
        }
    };
    match r {
        Resolve::Found(_) => None,
        Resolve::Missing => Some(("missing", format!("{} has no symbol {name}", t.label))),
        Resolve::Ambiguous(c) => Some((
            "position",
            format!(
                "position 0 requires a unique name, but {} has {c} symbols named {name}",
                t.label
            ),
        )),
        Resolve::PastEnd(c) => Some((
            "position",
            format!(
                "position {pos}, but {} has {c} {} named {name}",
                t.label,
                n(*c)
            ),
        )),
    }
}

fn records_section(
    m: &Module<'_>,
    section: &str,
    key: &str,
    f: &mut Findings,
) -> Option<Vec<Record>> {
    let data = m.elf.section_data(section)?;
    match decode_records(data) {
        Ok(r) => Some(r),
        Err((line, text)) => {
            f.error(
                key,
                format!("{section} line {line} is not `objname name sympos origin`: {text:?}"),
            );
            None
        }
    }
}

/// Every klp symbol resolves in its target object and is the symbol the build recorded.
fn klp_symbols<'m>(
    m: &Module<'m>,
    inputs: &Inputs<'_>,
    f: &mut Findings,
    unverified: &mut BTreeSet<(&'static str, String)>,
) {
    let records = records_section(m, SYMS_SECTION, "check.syms.malformed", f);
    let mut missing_modules = BTreeSet::new();
    for (_, full, _) in m.klp_syms() {
        let Some(k) = klpsym::parse(&full) else {
            continue; // reported by the structural checks
        };
        let t = match target_of(inputs, k.objname) {
            Ok(t) => t,
            Err(false) => {
                unverified.insert(("klp-sym", k.objname.to_string()));
                continue;
            }
            Err(true) => {
                if missing_modules.insert(k.objname.to_string()) {
                    f.error(
                        "check.klp-sym.module-missing",
                        format!(
                            "{full}: no module {} under the given modules directory",
                            k.objname
                        ),
                    );
                }
                continue;
            }
        };
        let r = t.resolve(k.name, k.sympos);
        if let Some((what, why)) = resolve_problem(&r, t, k.name, k.sympos) {
            f.error(format!("check.klp-sym.{what}"), format!("{full}: {why}"));
            continue;
        }
        let Resolve::Found(sym) = r else { continue };
        if let Some(records) = &records {
            recorded_klp_symbol(&full, &k, t, sym, records, f);
        }
    }
}

/// A resolved klp symbol `full` is listed in `.klpgen.syms` (`records`), and the symbol it
/// resolves to is of the origin the build recorded.
fn recorded_klp_symbol(
    full: &str,
    k: &klpsym::KlpSymName<'_>,
    t: &TargetObject,
    sym: &KSym,
    records: &[Record],
    f: &mut Findings,
) {
    let mine: Vec<&Record> = records
        .iter()
        .filter(|r| r.objname == k.objname && r.name == k.name)
        .collect();
    if mine.is_empty() {
        f.error(
            "check.klp-sym.unrecorded",
            format!("{full} is not listed in {SYMS_SECTION}: the module was altered after klpgen built it"),
        );
    } else if !mine.iter().any(|r| t.origin_matches(sym, &r.origin)) {
        let wanted: Vec<String> = mine
            .iter()
            .map(|r| match &r.origin {
                Origin::Global => "a global symbol".to_string(),
                Origin::Local(file) => format!("the static of {file}"),
                Origin::Unknown => "an unknown symbol".to_string(),
            })
            .collect();
        f.error(
            "check.klp-sym.wrong-file",
            format!(
                "{full} resolves to {} in {}, but the build referenced {}",
                t.describe(sym),
                t.label,
                wanted.join(" or ")
            ),
        );
    }
}

/// The replaced functions of the module: klpgen's `.klpgen.funcs` records, or those of
/// kpatch-build's `.kpatch.funcs` table (origin unknown); `None` when there are none to check
/// (reported).
fn replaced_records(
    m: &Module<'_>,
    inputs: &Inputs<'_>,
    f: &mut Findings,
    report: &mut Report,
) -> Option<Vec<Record>> {
    if m.elf.section_data(FUNCS_SECTION).is_some() {
        report.functions_from = Some(FUNCS_SECTION);
        return records_section(m, FUNCS_SECTION, "check.funcs.malformed", f);
    }
    let funcs = match kpatch::read(&m.elf) {
        None => {
            f.error(
                "check.funcs.unknown",
                format!("the module has no {FUNCS_SECTION} section (klpgen) and no {} table (kpatch-build): the functions it replaces cannot be verified", kpatch::FUNCS_SECTION),
            );
            return None;
        }
        Some(Err(what)) => {
            f.error("check.funcs.malformed", what);
            return None;
        }
        Some(Ok(funcs)) => funcs,
    };
    report.functions_from = Some(kpatch::FUNCS_SECTION);
    let mut out = Vec::new();
    for k in funcs {
        let sympos = match k.position {
            kpatch::Position::Sympos(p) => p,
            // Before old_sympos the hook passed the address the function had in vmlinux at
            // build time; a module's functions were looked up by name.
            kpatch::Position::OldAddr(0) => 0,
            kpatch::Position::OldAddr(addr) => match target_of(inputs, &k.objname) {
                Ok(t) if k.objname == VMLINUX => match t.position_at(&k.name, addr) {
                    Some(p) => p,
                    None => {
                        f.error(
                            "check.func.position",
                            format!(
                                "replaced function {} {}: old_addr {addr:#x} is the address of no symbol {} in {}",
                                k.objname, k.name, k.name, t.label
                            ),
                        );
                        continue;
                    }
                },
                _ => 0,
            },
        };
        out.push(Record {
            objname: k.objname,
            name: k.name,
            sympos,
            origin: Origin::Unknown,
        });
    }
    Some(out)
}

/// Every replaced function listed in `.klpgen.funcs` (or kpatch's `.kpatch.funcs`) resolves
/// in its target object.
fn functions(
    m: &Module<'_>,
    inputs: &Inputs<'_>,
    f: &mut Findings,
    report: &mut Report,
    unverified: &mut BTreeSet<(&'static str, String)>,
) {
    let Some(records) = replaced_records(m, inputs, f, report) else {
        return;
    };
    let table = report.functions_from.unwrap_or(FUNCS_SECTION);
    report.functions = records.len();
    if records.is_empty() && !f.0.iter().any(|x| x.key == "check.func.position") {
        f.error(
            "check.funcs.unknown",
            format!("{table} lists no function: the patch replaces nothing"),
        );
    }
    let mut no_mcount = BTreeSet::new();
    for r in &records {
        let what = format!("{} {} (position {})", r.objname, r.name, r.sympos);
        let t = match target_of(inputs, &r.objname) {
            Ok(t) => t,
            Err(false) => {
                unverified.insert(("func", r.objname.clone()));
                continue;
            }
            Err(true) => {
                f.error(
                    "check.func.module-missing",
                    format!(
                        "{what}: no module {} under the given modules directory",
                        r.objname
                    ),
                );
                continue;
            }
        };
        let res = t.resolve(&r.name, r.sympos);
        if let Some((kind, why)) = resolve_problem(&res, t, &r.name, r.sympos) {
            f.error(
                format!("check.func.{kind}"),
                format!("replaced function {what}: {why}"),
            );
            continue;
        }
        let Resolve::Found(sym) = res else { continue };
        replaced_function(&what, r, t, sym, f, &mut no_mcount);
    }
}

/// The symbol a replaced function (`what`, recorded as `r`) resolves to is a function of the
/// recorded origin with an ftrace entry; `no_mcount` collects the targets already reported
/// for having no `__mcount_loc` table.
fn replaced_function(
    what: &str,
    r: &Record,
    t: &TargetObject,
    sym: &KSym,
    f: &mut Findings,
    no_mcount: &mut BTreeSet<String>,
) {
    if !sym.func {
        f.error(
            "check.func.not-function",
            format!("replaced function {what} is not a function in {}", t.label),
        );
    }
    if !t.origin_matches(sym, &r.origin) {
        f.error(
            "check.func.wrong-file",
            format!(
                "replaced function {what} resolves to {} in {}, but the build replaced {}",
                t.describe(sym),
                t.label,
                match &r.origin {
                    Origin::Local(file) => format!("the static of {file}"),
                    _ => "a global function".to_string(),
                }
            ),
        );
    }
    match t.ftrace_able(sym) {
        Some(true) => {}
        Some(false) => f.error(
            "check.func.no-ftrace",
            format!("replaced function {what} has no __mcount_loc entry in {} (notrace?): livepatch cannot redirect it", t.label),
        ),
        None => {
            if no_mcount.insert(t.label.clone()) {
                f.error(
                    "check.target.no-mcount",
                    format!("{} has no __mcount_loc table: cannot tell whether the replaced functions are ftrace-able", t.label),
                );
            }
        }
    }
}

/// With Module.symvers: every ordinary undefined (not weak) symbol is exported.
fn undefined(m: &Module<'_>, symvers: &Symvers, f: &mut Findings, report: &mut Report) {
    let e = &m.elf;
    for sym in e.symtab.iter() {
        if sym.st_shndx(e.endian) != elf::SHN_UNDEF || sym.st_bind() == elf::STB_WEAK {
            continue;
        }
        let name = e.sym_name(sym);
        if name.is_empty() || name.starts_with(KLP_SYM_PREFIX) {
            continue;
        }
        // Provided by the module loader or link on the module's machine (ppc64 `.TOC.`).
        if elfdiff::arch::for_machine(e.e_machine).is_some_and(|a| a.module_provided(&name)) {
            continue;
        }
        report.undefined += 1;
        if symvers.exporter(&name).is_none() {
            f.error(
                format!("check.undefined.{name}"),
                format!("{name} is undefined in the module and not exported by the target (Module.symvers): the module will not load"),
            );
        }
    }
}

/// Bytes of one `__versions` entry (`struct modversion_info` on 64-bit targets: an 8-byte CRC
/// and a 56-byte NUL-padded name).
const MODVERSION_INFO: usize = 64;

/// With CONFIG_MODVERSIONS modpost writes a `__versions` entry (symbol, CRC) for every symbol
/// the module imports, and the loader refuses the module when one CRC is not the running
/// kernel's ("disagrees about version of symbol"). Each entry must name a symbol of the
/// target's Module.symvers with the same CRC.
fn versions(m: &Module<'_>, symvers: &Symvers, f: &mut Findings) {
    let Some(data) = m.elf.section_data("__versions") else {
        return;
    };
    if data.len() % MODVERSION_INFO != 0 {
        f.error(
            "check.versions.malformed",
            format!(
                "__versions is {} bytes, not a whole number of {MODVERSION_INFO}-byte entries",
                data.len()
            ),
        );
        return;
    }
    for entry in data.chunks_exact(MODVERSION_INFO) {
        let (crc, name) = entry.split_at(8);
        let crc: [u8; 8] = crc.try_into().unwrap_or_default();
        let crc = match m.elf.endian {
            object::Endianness::Little => u64::from_le_bytes(crc),
            object::Endianness::Big => u64::from_be_bytes(crc),
        };
        let name = name.split(|&b| b == 0).next().unwrap_or_default();
        let name = String::from_utf8_lossy(name);
        match symvers.crc(&name) {
            Some(want) if u64::from(want) == crc => {}
            Some(want) => f.error(
                format!("check.versions.{name}"),
                format!("__versions gives {name} the CRC {crc:#010x}, the target's Module.symvers {want:#010x}: the kernel refuses the module (disagrees about version of symbol {name})"),
            ),
            None => f.error(
                format!("check.versions.{name}"),
                format!("__versions lists {name} (CRC {crc:#010x}), which the target's Module.symvers gives no CRC for: the module was versioned against another kernel"),
            ),
        }
    }
}

// Test modules last: tests/catalogue.rs reads this file's keys up to the first test-only item.
#[cfg(test)]
mod tests;
#[cfg(test)]
mod testtarget;
