//! Verification of a finished livepatch module against its target (`klpgen check`, and the
//! last step of `klpgen build`): modinfo, every `.klp.sym`/`.klp.rela` marking, every klp
//! symbol resolved in the target's symbol table in kallsyms order, every replaced function
//! present and ftrace-able in the target, and every ordinary undefined symbol exported.
//!
//! Bytes in, findings out. Each finding has a stable key (`check.<what>...`). The replaced
//! functions and the origin of every klp symbol are read from two non-allocated sections
//! that `klpgen build` writes into the module (`.klpgen.funcs`, `.klpgen.syms`, see
//! `crate::manifest`); a module without them was not built by klpgen and its functions cannot be
//! verified.

use std::collections::{BTreeSet, HashMap};

use object::elf;
use object::read::elf::{Rela as _, SectionHeader, Sym};

use crate::elf::Elf;
use crate::klpsym::{self, KLP_SYM_PREFIX, MAX_OBJNAME, MAX_SYMNAME, SHF_RELA_LIVEPATCH};
use crate::klpsym::{SHN_LIVEPATCH, VMLINUX};
use crate::manifest::{decode_records, Origin, Record, FUNCS_SECTION, SYMS_SECTION};
use crate::target::{module_mismatch, module_vermagic, symvers_mismatch, KernelIdentity, Symvers};
use crate::Error;

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
// The target

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Vmlinux,
    Module,
}

#[derive(Debug, Clone)]
struct TSym {
    /// Address for kallsyms order (vmlinux); `st_value` (+ `sh_addr` when relocatable).
    addr: u64,
    /// Where the code is, for `__mcount_loc` lookups: (0, address) in a linked image,
    /// (section index, offset) in a relocatable object.
    loc: (u64, u64),
    size: u64,
    func: bool,
    local: bool,
    /// Index into `files` of the STT_FILE group a local belongs to.
    file: Option<usize>,
    index: usize,
}

/// A target object — vmlinux or a module — as the livepatch core will see it: symbols in
/// kallsyms order, its `__mcount_loc` table, and the kernel release it belongs to.
#[derive(Debug)]
pub struct TargetObject {
    pub label: String,
    syms: Vec<TSym>,
    by_name: HashMap<String, Vec<usize>>,
    files: Vec<String>,
    /// Sorted call-site addresses per location key; `None` when there is no table.
    mcount: Option<HashMap<u64, Vec<u64>>>,
    /// The release: from `linux_banner` (vmlinux), from modinfo `vermagic` (a module).
    pub release: Option<String>,
    /// vmlinux: its exports and their CRCs, to check Module.symvers against.
    pub identity: Option<KernelIdentity>,
}

enum Resolve<'t> {
    Found(&'t TSym),
    Missing,
    /// sympos 0 with this many same-named symbols.
    Ambiguous(usize),
    /// sympos beyond this many same-named symbols.
    PastEnd(usize),
}

impl TargetObject {
    /// The kernel image: kallsyms order is address order among symbols of one name.
    pub fn vmlinux(label: &str, data: &[u8]) -> Result<Self, Error> {
        Self::parse(label, data, Kind::Vmlinux)
    }

    /// A module (`.ko`): kallsyms order is its symbol table order.
    pub fn module(label: &str, data: &[u8]) -> Result<Self, Error> {
        Self::parse(label, data, Kind::Module)
    }

    fn parse(label: &str, data: &[u8], kind: Kind) -> Result<Self, Error> {
        let bad = |what: String| Error::Target {
            target: label.to_string(),
            what,
        };
        let e = Elf::parse(data, &bad)?;
        if e.symtab.is_empty() {
            return Err(bad("has no symbol table (stripped?)".into()));
        }
        let relocatable = e.e_type == elf::ET_REL;
        let shnum = e.sections.len();
        let mut syms = Vec::new();
        let mut names = Vec::new();
        let mut files: Vec<String> = Vec::new();
        let mut banner = None;
        let mut bounds = (None, None);
        for (index, sym) in e.symtab.iter().enumerate() {
            let name = e.sym_name(sym);
            let shndx = usize::from(sym.st_shndx(e.endian));
            if sym.st_type() == elf::STT_FILE {
                files.push(name);
                continue;
            }
            let defined = shndx != usize::from(elf::SHN_UNDEF) && shndx < shnum;
            if !defined || name.is_empty() || sym.st_type() == elf::STT_SECTION {
                continue;
            }
            let value = sym.st_value(e.endian);
            match name.as_str() {
                "__start_mcount_loc" if !relocatable => bounds.0 = Some(value),
                "__stop_mcount_loc" if !relocatable => bounds.1 = Some(value),
                "linux_banner" if kind == Kind::Vmlinux => {
                    banner = Some((shndx, value, sym.st_size(e.endian)))
                }
                _ => {}
            }
            // kallsyms leaves out local labels, and for modules what is not kept after load.
            if name.starts_with(".L") || name.starts_with('$') {
                continue;
            }
            let Some(sec) = e.section(shndx) else {
                continue;
            };
            if kind == Kind::Module
                && (sec.sh_flags(e.endian) & u64::from(elf::SHF_ALLOC) == 0
                    || e.sec_name(sec).starts_with(".init"))
            {
                continue;
            }
            let (addr, loc) = if relocatable {
                (
                    sec.sh_addr(e.endian).wrapping_add(value),
                    (shndx as u64, value),
                )
            } else {
                (value, (0, value))
            };
            let local = sym.st_bind() == elf::STB_LOCAL;
            syms.push(TSym {
                addr,
                loc,
                size: sym.st_size(e.endian),
                func: sym.st_type() == elf::STT_FUNC,
                local,
                file: (local && !files.is_empty()).then(|| files.len() - 1),
                index,
            });
            names.push(name);
        }
        let mut by_name: HashMap<String, Vec<usize>> = HashMap::new();
        for (i, n) in names.into_iter().enumerate() {
            by_name.entry(n).or_default().push(i);
        }
        if kind == Kind::Vmlinux {
            for v in by_name.values_mut() {
                v.sort_by_key(|&i| (syms[i].addr, syms[i].index));
            }
        }
        let (release, identity) = match kind {
            Kind::Vmlinux => (
                banner.and_then(|(shndx, addr, size)| e.banner_release(shndx, addr, size)),
                Some(KernelIdentity::parse(label, data)?),
            ),
            Kind::Module => (module_vermagic(label, data)?, None),
        };
        let mcount = load_mcount(&e, bounds, &bad)?;
        Ok(TargetObject {
            label: label.to_string(),
            syms,
            by_name,
            files,
            mcount,
            release,
            identity,
        })
    }

    /// The symbol a klp symbol or `old_sympos` names, as `klp_find_object_symbol` finds it.
    fn resolve(&self, name: &str, sympos: u64) -> Resolve<'_> {
        let Some(list) = self.by_name.get(name) else {
            return Resolve::Missing;
        };
        if sympos == 0 {
            return match list.as_slice() {
                [only] => Resolve::Found(&self.syms[*only]),
                _ => Resolve::Ambiguous(list.len()),
            };
        }
        match usize::try_from(sympos - 1).ok().and_then(|i| list.get(i)) {
            Some(&i) => Resolve::Found(&self.syms[i]),
            None => Resolve::PastEnd(list.len()),
        }
    }

    fn file_of(&self, s: &TSym) -> Option<&str> {
        s.file.map(|f| self.files[f].as_str())
    }

    fn origin_matches(&self, s: &TSym, o: &Origin) -> bool {
        match o {
            Origin::Global => !s.local,
            Origin::Local(f) => s.local && self.file_of(s) == Some(f.as_str()),
            Origin::Unknown => true,
        }
    }

    fn describe(&self, s: &TSym) -> String {
        match (s.local, self.file_of(s)) {
            (false, _) => "a global symbol".to_string(),
            (true, Some(f)) => format!("a static symbol of {f}"),
            (true, None) => "a static symbol of no known file".to_string(),
        }
    }

    /// Whether an `__mcount_loc` entry lies in the function (ftrace_location()); `None` when
    /// the target has no such table.
    fn ftrace_able(&self, s: &TSym) -> Option<bool> {
        let table = self.mcount.as_ref()?;
        let Some(sites) = table.get(&s.loc.0) else {
            return Some(false);
        };
        let start = s.loc.1;
        let end = start.saturating_add(s.size.max(1));
        let i = sites.partition_point(|&a| a < start);
        Some(sites.get(i).is_some_and(|&a| a < end))
    }

    /// Number of symbols counted for sympos (kallsyms' view).
    pub fn symbol_count(&self) -> usize {
        self.syms.len()
    }

    /// Number of ftrace call sites, if the target has an `__mcount_loc` table.
    pub fn mcount_count(&self) -> Option<usize> {
        self.mcount.as_ref().map(|m| m.values().map(Vec::len).sum())
    }
}

/// The call sites recorded in `__mcount_loc`: in a linked image the table between
/// `__start_mcount_loc` and `__stop_mcount_loc` (or a section of that name) holds absolute
/// addresses; in a relocatable object its relocations say where each call site is.
fn load_mcount(
    e: &Elf<'_>,
    bounds: (Option<u64>, Option<u64>),
    bad: &dyn Fn(String) -> Error,
) -> Result<Option<HashMap<u64, Vec<u64>>>, Error> {
    let mut table: HashMap<u64, Vec<u64>> = HashMap::new();
    let read_all = |bytes: &[u8], table: &mut HashMap<u64, Vec<u64>>| {
        let v = table.entry(0).or_default();
        for c in bytes.chunks_exact(8) {
            let mut a = [0u8; 8];
            a.copy_from_slice(c);
            v.push(object::Endian::read_u64_bytes(e.endian, a));
        }
    };
    let mcount_sec = e
        .sections
        .section_by_name(e.endian, b"__mcount_loc")
        .map(|(i, _)| i.0);
    if e.e_type == elf::ET_REL {
        let Some(m) = mcount_sec else {
            return Ok(None);
        };
        for s in e.sections.iter() {
            if s.sh_type(e.endian) != elf::SHT_RELA || s.sh_info(e.endian) as usize != m {
                continue;
            }
            let Ok(Some((relas, _))) = s.rela(e.endian, e.data) else {
                return Err(bad("cannot read the relocations of __mcount_loc".into()));
            };
            for r in relas {
                let Ok(sym) = e
                    .symtab
                    .symbol(object::SymbolIndex(r.r_sym(e.endian, false) as usize))
                else {
                    continue;
                };
                let shndx = sym.st_shndx(e.endian);
                if shndx == elf::SHN_UNDEF || usize::from(shndx) >= e.sections.len() {
                    continue;
                }
                let at = sym
                    .st_value(e.endian)
                    .wrapping_add(r.r_addend(e.endian) as u64);
                table.entry(u64::from(shndx)).or_default().push(at);
            }
        }
    } else if let (Some(start), Some(stop)) = bounds {
        if stop < start || (stop - start) % 8 != 0 {
            return Err(bad(format!(
                "__start_mcount_loc {start:#x} and __stop_mcount_loc {stop:#x} do not bound a table of addresses"
            )));
        }
        let sec = e.sections.iter().enumerate().find(|(_, s)| {
            let a = s.sh_addr(e.endian);
            s.sh_type(e.endian) != elf::SHT_NOBITS
                && s.sh_flags(e.endian) & u64::from(elf::SHF_ALLOC) != 0
                && a <= start
                && stop <= a.saturating_add(s.sh_size(e.endian))
        });
        let bytes = sec
            .and_then(|(i, _)| e.bytes_at(i, start, stop - start))
            .ok_or_else(|| {
                bad(format!(
                    "the __mcount_loc table at {start:#x}..{stop:#x} is not in any section"
                ))
            })?;
        read_all(bytes, &mut table);
    } else if let Some(bytes) =
        mcount_sec.and_then(|m| e.section(m).and_then(|s| s.data(e.endian, e.data).ok()))
    {
        read_all(bytes, &mut table);
    } else {
        return Ok(None);
    }
    for v in table.values_mut() {
        v.sort_unstable();
    }
    Ok(Some(table))
}

// ---------------------------------------------------------------------------------------------
// Checks

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
    /// Replaced functions listed in `.klpgen.funcs`.
    pub functions: usize,
    /// Ordinary undefined symbols checked against Module.symvers.
    pub undefined: usize,
}

impl Report {
    pub fn ok(&self) -> bool {
        self.findings.is_empty()
    }
}

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

    /// (symbol table index, name) of every `.klp.sym.*` symbol.
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
    let e = &m.elf;
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

    let klp_syms = m.klp_syms();
    report.klp_symbols = klp_syms.len();
    for (_, name, shndx) in &klp_syms {
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
    let klp_index: HashMap<usize, &str> =
        klp_syms.iter().map(|(i, n, _)| (*i, n.as_str())).collect();

    for (i, s) in e.sections.iter().enumerate() {
        let sh_type = s.sh_type(e.endian);
        let name = e.sec_name(s);
        let Some(obj) = klpsym::rela_objname(&name) else {
            if sh_type == elf::SHT_RELA {
                if let Ok(Some((relas, _))) = s.rela(e.endian, e.data) {
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
            }
            continue;
        };
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
            continue;
        }
        let Ok(Some((relas, _))) = s.rela(e.endian, e.data) else {
            f.error(
                "check.klp-rela.type",
                format!("{name}: cannot read its relocations"),
            );
            continue;
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
                    format!(
                        "{name}: {sname:?} is not a livepatch (.klp.sym, SHN_LIVEPATCH) symbol"
                    ),
                );
            } else if klpsym::parse(&sname).is_some_and(|k| k.objname != obj) {
                f.error(
                    "check.klp-rela.object",
                    format!("{name}: {sname} belongs to another object than {obj}"),
                );
            }
        }
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
    out.remove(VMLINUX);
    Ok(out)
}

/// Everything: [`check_structure`], vermagic against the target's release, every klp symbol
/// and replaced function resolved in its target object (and ftrace-able there), and, with
/// Module.symvers, every ordinary undefined symbol exported.
pub fn check_module(label: &str, ko: &[u8], inputs: &Inputs<'_>) -> Result<Report, Error> {
    let m = Module::parse(label, ko)?;
    let mut f = Findings::default();
    let mut report = Report::default();
    structure(&m, &mut f, &mut report);
    vermagic(&m, inputs, &mut f, &mut report);
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
        let Some(records) = &records else { continue };
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
}

fn functions(
    m: &Module<'_>,
    inputs: &Inputs<'_>,
    f: &mut Findings,
    report: &mut Report,
    unverified: &mut BTreeSet<(&'static str, String)>,
) {
    if m.elf.section_data(FUNCS_SECTION).is_none() {
        f.error(
            "check.funcs.unknown",
            format!("the module has no {FUNCS_SECTION} section (not built by klpgen): the functions it replaces cannot be verified"),
        );
        return;
    }
    let Some(records) = records_section(m, FUNCS_SECTION, "check.funcs.malformed", f) else {
        return;
    };
    report.functions = records.len();
    if records.is_empty() {
        f.error(
            "check.funcs.unknown",
            format!("{FUNCS_SECTION} lists no function: the patch replaces nothing"),
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
}

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
        report.undefined += 1;
        if symvers.exporter(&name).is_none() {
            f.error(
                format!("check.undefined.{name}"),
                format!("{name} is undefined in the module and not exported by the target (Module.symvers): the module will not load"),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::klpsym::KLP_RELA_PREFIX;
    use crate::manifest::Manifest;
    use crate::testimage::{Image, GLOBAL_OBJECT, LOCAL_OBJECT};
    use object::build::elf::Builder;
    use object::write::{self, Object, Relocation, SymbolSection};
    use object::{
        Architecture, BinaryFormat, Endianness, RelocationFlags, SectionKind, SymbolFlags,
        SymbolKind, SymbolScope,
    };

    const TEXT: u64 = 0xffff_ffff_8100_0000;
    const RODATA: u64 = 0xffff_ffff_8180_0000;
    const INIT: u64 = 0xffff_ffff_81a0_0000;
    const RELEASE: &str = "6.12.0-test";

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

    fn fake_vmlinux(banner: Option<&str>, mcount: bool) -> Vec<u8> {
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

    struct ModSpec {
        modinfo: Vec<String>,
        /// Symbols the module's code references (klp or ordinary).
        refs: Vec<String>,
        manifest: Option<Manifest>,
        finalize: bool,
    }

    fn good_manifest() -> Manifest {
        let rec = |name: &str, pos, origin| Record {
            objname: VMLINUX.into(),
            name: name.into(),
            sympos: pos,
            origin,
        };
        Manifest {
            funcs: vec![
                rec("traced", 0, Origin::Global),
                rec("helper", 1, Origin::Local("b.c".into())),
            ],
            syms: vec![
                rec("helper", 2, Origin::Local("a.c".into())),
                rec("a_only", 0, Origin::Local("a.c".into())),
            ],
        }
    }

    fn good_spec() -> ModSpec {
        ModSpec {
            modinfo: vec![
                "livepatch=Y".into(),
                "license=GPL".into(),
                format!("vermagic={RELEASE} SMP mod_unload "),
            ],
            refs: vec![
                ".klp.sym.vmlinux.helper,2".into(),
                ".klp.sym.vmlinux.a_only,0".into(),
                "printk".into(),
            ],
            manifest: Some(good_manifest()),
            finalize: true,
        }
    }

    /// A linked livepatch module as kbuild leaves it, then (optionally) finalised.
    fn module(spec: &ModSpec) -> Vec<u8> {
        module_pre(spec, |_| {})
    }

    /// Like [`module`], with an edit of the linked module before it is finalised (object's
    /// builder reads linked modules; it cannot read finalised ones, whose SHF_ALLOC
    /// `.klp.rela` sections it takes for dynamic relocations).
    fn module_pre(spec: &ModSpec, pre: impl FnOnce(&mut Builder<'_>)) -> Vec<u8> {
        let mut obj = Object::new(BinaryFormat::Elf, Architecture::X86_64, Endianness::Little);
        let text = obj.add_section(Vec::new(), b".text".to_vec(), SectionKind::Text);
        obj.append_section_data(text, &[0x90; 64], 16);
        let mi = obj.add_section(Vec::new(), b".modinfo".to_vec(), SectionKind::ReadOnlyData);
        let info: Vec<u8> = spec
            .modinfo
            .iter()
            .flat_map(|e| e.bytes().chain([0]))
            .collect();
        obj.append_section_data(mi, &info, 1);
        obj.add_symbol(write::Symbol {
            name: b"__klpgen_func_0".to_vec(),
            value: 0,
            size: 16,
            kind: SymbolKind::Text,
            scope: SymbolScope::Linkage,
            weak: false,
            section: SymbolSection::Section(text),
            flags: SymbolFlags::None,
        });
        for (i, r) in spec.refs.iter().enumerate() {
            let sym = obj.add_symbol(write::Symbol {
                name: r.as_bytes().to_vec(),
                value: 0,
                size: 0,
                kind: SymbolKind::Unknown,
                scope: SymbolScope::Linkage,
                weak: false,
                section: SymbolSection::Undefined,
                flags: SymbolFlags::None,
            });
            obj.add_relocation(
                text,
                Relocation {
                    offset: 4 * i as u64,
                    symbol: sym,
                    addend: -4,
                    flags: RelocationFlags::Elf {
                        r_type: elf::R_X86_64_PC32,
                    },
                },
            )
            .unwrap();
        }
        let ko = edit(&obj.write().unwrap(), pre);
        if spec.finalize {
            crate::klp::finalize_module_with("test.ko", &ko, spec.manifest.as_ref())
                .unwrap()
                .0
        } else {
            ko
        }
    }

    fn symvers(names: &[&str]) -> Symvers {
        let text: String = names
            .iter()
            .map(|n| format!("0x00000000\t{n}\tvmlinux\tEXPORT_SYMBOL\t\n"))
            .collect();
        Symvers::parse("Module.symvers", &text).unwrap()
    }

    fn run_with(
        ko: &[u8],
        vm: &TargetObject,
        modules: Option<&HashMap<String, TargetObject>>,
    ) -> Vec<String> {
        let sv = symvers(&["printk"]);
        let r = check_module(
            "test.ko",
            ko,
            &Inputs {
                vmlinux: vm,
                symvers: Some(&sv),
                modules,
            },
        )
        .unwrap();
        assert_eq!(r.ok(), r.findings.is_empty());
        r.findings.iter().map(|f| f.key.clone()).collect()
    }

    fn run(ko: &[u8]) -> Vec<String> {
        let vm = TargetObject::vmlinux("vmlinux", &fake_vmlinux(Some(RELEASE), true)).unwrap();
        run_with(ko, &vm, None)
    }

    fn assert_keys(got: &[String], want: &[&str]) {
        let got: BTreeSet<&str> = got.iter().map(String::as_str).collect();
        let want: BTreeSet<&str> = want.iter().copied().collect();
        assert_eq!(got, want);
    }

    /// Read, change and rewrite a module with object's builder.
    fn edit(ko: &[u8], f: impl FnOnce(&mut Builder<'_>)) -> Vec<u8> {
        let mut b = Builder::read(ko).unwrap();
        f(&mut b);
        let mut out = Vec::new();
        b.write(&mut out).unwrap();
        out
    }

    /// Rename a symbol of a finalised module in place (same length, one occurrence).
    fn rename_symbol(ko: &[u8], from: &str, to: &str) -> Vec<u8> {
        assert_eq!(from.len(), to.len());
        let pat: Vec<u8> = from.bytes().chain([0]).collect();
        let hits: Vec<usize> = (0..ko.len() - pat.len())
            .filter(|&i| ko[i..].starts_with(&pat) && (i == 0 || ko[i - 1] == 0))
            .collect();
        assert_eq!(hits.len(), 1, "{from}");
        let mut out = ko.to_vec();
        out[hits[0]..hits[0] + to.len()].copy_from_slice(to.as_bytes());
        out
    }

    /// Patch one field of a section header in place: (offset in Elf64_Shdr, size, value).
    fn patch_shdr(ko: &[u8], name_prefix: &str, field: usize, size: usize, value: u64) -> Vec<u8> {
        let mut out = ko.to_vec();
        let rd = |o: usize, n: usize| {
            let mut v = 0u64;
            for i in (0..n).rev() {
                v = (v << 8) | u64::from(ko[o + i]);
            }
            v
        };
        let shoff = rd(0x28, 8) as usize;
        let shnum = rd(0x3c, 2) as usize;
        let shstrndx = rd(0x3e, 2) as usize;
        let stroff = rd(shoff + shstrndx * 64 + 24, 8) as usize;
        let mut hit = 0;
        for i in 0..shnum {
            let h = shoff + i * 64;
            let n = stroff + rd(h, 4) as usize;
            let end = n + ko[n..].iter().position(|&c| c == 0).unwrap();
            if ko[n..end].starts_with(name_prefix.as_bytes()) {
                out[h + field..h + field + size].copy_from_slice(&value.to_le_bytes()[..size]);
                hit += 1;
            }
        }
        assert!(hit > 0, "no section {name_prefix}*");
        out
    }

    #[test]
    fn good_module_passes() {
        let ko = module(&good_spec());
        assert_keys(&run(&ko), &[]);
        let vm = TargetObject::vmlinux("vmlinux", &fake_vmlinux(Some(RELEASE), true)).unwrap();
        assert_eq!(vm.release.as_deref(), Some(RELEASE));
        assert_eq!(vm.mcount_count(), Some(4));
        let r = check_module(
            "test.ko",
            &ko,
            &Inputs {
                vmlinux: &vm,
                symvers: Some(&symvers(&["printk"])),
                modules: None,
            },
        )
        .unwrap();
        assert_eq!(
            (r.klp_symbols, r.klp_relocations, r.functions, r.undefined),
            (2, 2, 2, 1)
        );
        assert!(check_structure("test.ko", &ko).unwrap().is_empty());
        assert!(referenced_objects("test.ko", &ko).unwrap().is_empty());
    }

    #[test]
    fn kallsyms_order_is_address_order() {
        let vm = TargetObject::vmlinux("vmlinux", &fake_vmlinux(Some(RELEASE), true)).unwrap();
        // b.c's helper is second in the symbol table but first by address.
        let Resolve::Found(s) = vm.resolve("helper", 1) else {
            panic!()
        };
        assert_eq!(vm.file_of(s), Some("b.c"));
        let Resolve::Found(s) = vm.resolve("helper", 2) else {
            panic!()
        };
        assert_eq!(vm.file_of(s), Some("a.c"));
        assert!(matches!(vm.resolve("helper", 0), Resolve::Ambiguous(2)));
        assert!(matches!(vm.resolve("helper", 3), Resolve::PastEnd(2)));
        assert!(matches!(vm.resolve("traced", 1), Resolve::Found(_)));
        assert!(matches!(vm.resolve("nothing", 0), Resolve::Missing));
    }

    #[test]
    fn modinfo_findings() {
        let mut spec = good_spec();
        spec.modinfo.retain(|e| !e.starts_with("livepatch="));
        assert_keys(&run(&module(&spec)), &["check.modinfo.livepatch"]);

        let mut spec = good_spec();
        spec.modinfo[1] = "license=Proprietary".into();
        assert_keys(&run(&module(&spec)), &["check.modinfo.license"]);

        let mut spec = good_spec();
        spec.modinfo[2] = "vermagic=6.12.1 SMP mod_unload ".into();
        assert_keys(&run(&module(&spec)), &["check.modinfo.vermagic"]);

        let mut spec = good_spec();
        spec.modinfo.truncate(2);
        assert_keys(&run(&module(&spec)), &["check.modinfo.vermagic"]);

        // No .modinfo at all.
        let ko = module_pre(&good_spec(), |b| {
            for s in b.sections.iter_mut() {
                if s.name.as_slice() == b".modinfo" {
                    s.delete = true;
                }
            }
        });
        assert_keys(
            &run(&ko),
            &[
                "check.modinfo.livepatch",
                "check.modinfo.license",
                "check.modinfo.vermagic",
            ],
        );

        // A target whose release cannot be read.
        let vm = TargetObject::vmlinux("vmlinux", &fake_vmlinux(None, true)).unwrap();
        assert_keys(
            &run_with(&module(&good_spec()), &vm, None),
            &["check.target.release"],
        );
    }

    #[test]
    fn klp_symbol_positions() {
        let ko = module(&good_spec());
        // Position 1 is b.c's helper; the build took a.c's.
        let bad = rename_symbol(
            &ko,
            ".klp.sym.vmlinux.helper,2",
            ".klp.sym.vmlinux.helper,1",
        );
        assert_keys(&run(&bad), &["check.klp-sym.wrong-file"]);
        let bad = rename_symbol(
            &ko,
            ".klp.sym.vmlinux.helper,2",
            ".klp.sym.vmlinux.helper,0",
        );
        assert_keys(&run(&bad), &["check.klp-sym.position"]);
        let bad = rename_symbol(
            &ko,
            ".klp.sym.vmlinux.helper,2",
            ".klp.sym.vmlinux.helper,3",
        );
        assert_keys(&run(&bad), &["check.klp-sym.position"]);
        let bad = rename_symbol(
            &ko,
            ".klp.sym.vmlinux.a_only,0",
            ".klp.sym.vmlinux.b_only,0",
        );
        assert_keys(&run(&bad), &["check.klp-sym.missing"]);
        // A unique name at position 1 is what the kernel accepts too; a global where the
        // build bound a static is not.
        let bad = rename_symbol(
            &ko,
            ".klp.sym.vmlinux.a_only,0",
            ".klp.sym.vmlinux.a_only,1",
        );
        assert_keys(&run(&bad), &[]);
        let bad = rename_symbol(
            &ko,
            ".klp.sym.vmlinux.a_only,0",
            ".klp.sym.vmlinux.traced,0",
        );
        assert_keys(&run(&bad), &["check.klp-sym.unrecorded"]);

        // Every klp symbol must be recorded...
        let mut spec = good_spec();
        spec.manifest.as_mut().unwrap().syms.clear();
        let ko = module(&spec);
        assert_keys(&run(&ko), &["check.klp-sym.unrecorded"; 2]);
        // ...but without a .klpgen.syms section only positions can be checked: helper,1 is
        // a valid position, though of the wrong helper.
        let ko = module(&good_spec());
        let ko = rename_symbol(&ko, SYMS_SECTION, ".klpgen.xxxx");
        assert_keys(&run(&ko), &[]);
        let bad = rename_symbol(
            &ko,
            ".klp.sym.vmlinux.helper,2",
            ".klp.sym.vmlinux.helper,1",
        );
        assert_keys(&run(&bad), &[]);
        let bad = rename_symbol(
            &ko,
            ".klp.sym.vmlinux.helper,2",
            ".klp.sym.vmlinux.helper,4",
        );
        assert_keys(&run(&bad), &["check.klp-sym.position"]);
    }

    #[test]
    fn klp_symbol_names_and_markings() {
        let ko = module(&good_spec());
        let long = format!(".klp.sym.{}.helper,2", "m".repeat(56));
        for bad_name in [
            long.as_str(),
            ".klp.sym.vmlinux.helper",
            ".klp.sym.vmlinux.helper,x",
            ".klp.sym.vmlinux.,1",
            ".klp.sym.vmlinux.a,b,1",
        ] {
            let mut spec = good_spec();
            spec.refs[0] = bad_name.into();
            let keys = run(&module(&spec));
            assert!(
                keys.contains(&"check.klp-sym.name".to_string()),
                "{bad_name}: {keys:?}"
            );
        }
        // Not finalised: no SHN_LIVEPATCH, relocations still ordinary.
        let mut spec = good_spec();
        spec.finalize = false;
        let keys = run(&module(&spec));
        assert!(
            keys.contains(&"check.klp-sym.shndx".to_string()),
            "{keys:?}"
        );
        assert!(
            keys.contains(&"check.klp-rela.ordinary".to_string()),
            "{keys:?}"
        );
        assert!(
            keys.contains(&"check.funcs.unknown".to_string()),
            "{keys:?}"
        );
        // A klp symbol of another object in the vmlinux section.
        let bad = rename_symbol(
            &ko,
            ".klp.sym.vmlinux.helper,2",
            ".klp.sym.othrmod.helper,2",
        );
        let keys = run(&bad);
        assert!(
            keys.contains(&"check.klp-rela.object".to_string()),
            "{keys:?}"
        );
        assert!(
            keys.contains(&"check.klp-sym.module-unverified".to_string()),
            "{keys:?}"
        );
        assert_eq!(
            referenced_objects("x", &bad)
                .unwrap()
                .into_iter()
                .collect::<Vec<_>>(),
            vec!["othrmod".to_string()]
        );
    }

    #[test]
    fn klp_rela_sections() {
        let ko = module(&good_spec());
        // sh_flags at 8, sh_type at 4, sh_info at 44.
        let bad = patch_shdr(
            &ko,
            ".klp.rela.",
            8,
            8,
            u64::from(elf::SHF_ALLOC | elf::SHF_INFO_LINK),
        );
        assert_keys(&run(&bad), &["check.klp-rela.flags"]);
        let bad = patch_shdr(&ko, ".klp.rela.", 8, 8, SHF_RELA_LIVEPATCH);
        assert_keys(&run(&bad), &["check.klp-rela.flags"]);
        let bad = patch_shdr(&ko, ".klp.rela.", 4, 4, u64::from(elf::SHT_REL));
        assert_keys(&run(&bad), &["check.klp-rela.type"]);
        let bad = patch_shdr(&ko, ".klp.rela.", 44, 4, 999);
        assert_keys(&run(&bad), &["check.klp-rela.target"]);
        // The first entry of the klp relocation section with its r_info set to `info`.
        let with_first_info = |info: u64| {
            let m = Module::parse("x", &ko).unwrap();
            let e = &m.elf;
            let sec = e
                .sections
                .iter()
                .find(|s| e.sec_name(s).starts_with(KLP_RELA_PREFIX))
                .unwrap();
            let at = sec.sh_offset(e.endian) as usize + 8;
            let mut out = ko.clone();
            out[at..at + 8].copy_from_slice(&info.to_le_bytes());
            out
        };
        // A relocation against an ordinary symbol in the klp section: point the first
        // entry's r_info at printk.
        let printk = {
            let m = Module::parse("x", &ko).unwrap();
            let e = &m.elf;
            e.symtab
                .iter()
                .position(|s| e.sym_name(s) == "printk")
                .unwrap() as u64
        };
        let bad = with_first_info((printk << 32) | u64::from(elf::R_X86_64_PC32));
        let keys = run(&bad);
        assert!(
            keys.contains(&"check.klp-rela.symbol".to_string()),
            "{keys:?}"
        );
        // A relocation naming a symbol past the end of the symbol table.
        let bad = with_first_info((0x00ff_ffffu64 << 32) | u64::from(elf::R_X86_64_PC32));
        assert_keys(&run(&bad), &["check.klp-rela.symbol"]);
        // Relocations that cannot be read (sh_size, at 32, past the end of the file).
        let bad = patch_shdr(&ko, ".klp.rela.", 32, 8, 0xffff_fff0);
        assert_keys(&run(&bad), &["check.klp-rela.type"]);
        // A section name without an object: `.klp.rela.vmlinux..text` as
        // `.klp.rela..vmlinux.text` (the klp symbols then belong to another object, too).
        let name = e_klp_rela_name(&ko);
        let obj_and_sec = name.strip_prefix(KLP_RELA_PREFIX).unwrap();
        let (obj, sec) = obj_and_sec.split_once('.').unwrap();
        let renamed = format!("{KLP_RELA_PREFIX}.{obj}{sec}");
        let keys = run(&rename_symbol(&ko, &name, &renamed));
        assert_keys(&keys, &["check.klp-rela.name", "check.klp-rela.object"]);
        // An object name longer than the kernel's 55 characters.
        let mut spec = good_spec();
        let long = "m".repeat(56);
        spec.refs = vec![format!(".klp.sym.{long}.helper,2"), "printk".into()];
        let keys = run(&module(&spec));
        assert!(
            keys.contains(&"check.klp-rela.name".to_string()),
            "{keys:?}"
        );
    }

    /// The name of the module's (one) `.klp.rela` section.
    fn e_klp_rela_name(ko: &[u8]) -> String {
        let m = Module::parse("x", ko).unwrap();
        let e = &m.elf;
        let names: Vec<String> = e
            .sections
            .iter()
            .map(|s| e.sec_name(s))
            .filter(|n| n.starts_with(KLP_RELA_PREFIX))
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");
        names[0].clone()
    }

    #[test]
    fn replaced_functions() {
        let funcs = |f: Vec<Record>| {
            let mut spec = good_spec();
            spec.manifest.as_mut().unwrap().funcs = f;
            run(&module(&spec))
        };
        let rec = |name: &str, pos, origin| Record {
            objname: VMLINUX.into(),
            name: name.into(),
            sympos: pos,
            origin,
        };
        assert_keys(
            &funcs(vec![rec("untraced", 0, Origin::Global)]),
            &["check.func.no-ftrace"],
        );
        assert_keys(
            &funcs(vec![rec("gone", 0, Origin::Global)]),
            &["check.func.missing"],
        );
        assert_keys(
            &funcs(vec![rec("helper", 0, Origin::Unknown)]),
            &["check.func.position"],
        );
        assert_keys(
            &funcs(vec![rec("helper", 2, Origin::Local("b.c".into()))]),
            &["check.func.wrong-file"],
        );
        assert_keys(
            &funcs(vec![rec("some_var", 0, Origin::Global)]),
            &["check.func.not-function", "check.func.no-ftrace"],
        );
        assert_keys(&funcs(vec![]), &["check.funcs.unknown"]);
        assert_keys(
            &funcs(vec![
                rec("traced", 0, Origin::Global),
                rec("helper", 2, Origin::Local("a.c".into())),
            ]),
            &[],
        );
        // No manifest at all: a module klpgen did not build.
        let mut spec = good_spec();
        spec.manifest = None;
        assert_keys(&run(&module(&spec)), &["check.funcs.unknown"]);
        // A malformed record.
        assert_keys(
            &funcs(vec![rec("traced x", 0, Origin::Global)]),
            &["check.funcs.malformed"],
        );
        // ...or a malformed klp symbol record: the symbols' origins cannot be verified.
        let mut spec = good_spec();
        spec.manifest.as_mut().unwrap().syms[0].name = "helper x".into();
        assert_keys(&run(&module(&spec)), &["check.syms.malformed"]);
        // A target without __mcount_loc.
        let vm = TargetObject::vmlinux("vmlinux", &fake_vmlinux(Some(RELEASE), false)).unwrap();
        assert_eq!(vm.mcount_count(), None);
        assert_keys(
            &run_with(&module(&good_spec()), &vm, None),
            &["check.target.no-mcount"],
        );
    }

    #[test]
    fn undefined_symbols_need_exports() {
        let mut spec = good_spec();
        spec.refs.push("secret_helper".into());
        assert_keys(&run(&module(&spec)), &["check.undefined.secret_helper"]);
        // Without Module.symvers the check is skipped.
        let vm = TargetObject::vmlinux("vmlinux", &fake_vmlinux(Some(RELEASE), true)).unwrap();
        let r = check_module(
            "test.ko",
            &module(&spec),
            &Inputs {
                vmlinux: &vm,
                symvers: None,
                modules: None,
            },
        )
        .unwrap();
        assert!(r.ok(), "{:?}", r.findings);
    }

    #[test]
    fn symvers_of_another_build() {
        let vm = TargetObject::vmlinux("vmlinux", &fake_vmlinux(Some(RELEASE), true)).unwrap();
        let ko = module(&good_spec());
        let run_sv = |sv: &Symvers| {
            let r = check_module(
                "test.ko",
                &ko,
                &Inputs {
                    vmlinux: &vm,
                    symvers: Some(sv),
                    modules: None,
                },
            )
            .unwrap();
            r.findings
        };
        assert!(run_sv(&symvers(&["printk"])).is_empty());
        // Another build's file: it lists an export this vmlinux does not have.
        let f = run_sv(&symvers(&["printk", "other_build_fn"]));
        assert_eq!(f.len(), 1, "{f:?}");
        assert_eq!(f[0].key, "check.target.symvers-mismatch");
        assert!(
            f[0].detail
                .contains("Module.symvers is not the Module.symvers of vmlinux")
                && f[0].detail.contains("other_build_fn"),
            "{}",
            f[0].detail
        );
        // And one without the export the vmlinux has: printk is also undefined in the module.
        let keys: Vec<String> = run_sv(&symvers(&["kmalloc"]))
            .into_iter()
            .map(|f| f.key)
            .collect();
        assert_keys(
            &keys,
            &["check.target.symvers-mismatch", "check.undefined.printk"],
        );
    }

    /// A target module: two static `helper`s (the second at the lower offset) and a traced
    /// function, with `__mcount_loc` relocations as a `.ko` has them.
    fn target_module() -> Vec<u8> {
        target_module_for(RELEASE)
    }

    fn target_module_for(release: &str) -> Vec<u8> {
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

    #[test]
    fn module_targets() {
        let m = TargetObject::module("m.ko", &target_module()).unwrap();
        assert_eq!(m.mcount_count(), Some(3));
        // Symbol table order: position 1 is the one at 0x40.
        let Resolve::Found(s) = m.resolve("helper", 1) else {
            panic!()
        };
        assert_eq!(s.loc.1, 0x40);
        let Resolve::Found(s) = m.resolve("m_notrace", 0) else {
            panic!()
        };
        assert_eq!(m.ftrace_able(s), Some(false));
        let Resolve::Found(s) = m.resolve("m_func", 0) else {
            panic!()
        };
        assert_eq!(m.ftrace_able(s), Some(true));

        let rec = |name: &str, pos| Record {
            objname: "my-mod".into(),
            name: name.into(),
            sympos: pos,
            origin: Origin::Local("m.c".into()),
        };
        let mut spec = good_spec();
        {
            let man = spec.manifest.as_mut().unwrap();
            man.funcs.push(rec("m_func", 0));
            man.syms.push(rec("helper", 2));
        }
        spec.refs.push(".klp.sym.my_mod.helper,2".into());
        // The records say my-mod, the symbol my_mod: the same module.
        spec.manifest
            .as_mut()
            .unwrap()
            .syms
            .last_mut()
            .unwrap()
            .objname = "my_mod".into();
        let ko = module(&spec);
        let vm = TargetObject::vmlinux("vmlinux", &fake_vmlinux(Some(RELEASE), true)).unwrap();
        assert_keys(
            &run_with(&ko, &vm, None),
            &[
                "check.klp-sym.module-unverified",
                "check.func.module-unverified",
            ],
        );
        let none = HashMap::new();
        assert_keys(
            &run_with(&ko, &vm, Some(&none)),
            &["check.klp-sym.module-missing", "check.func.module-missing"],
        );
        let mods: HashMap<String, TargetObject> = [(module_key("my-mod"), m)].into_iter().collect();
        assert_keys(&run_with(&ko, &vm, Some(&mods)), &[]);
        // The same module built for another kernel.
        let other = TargetObject::module("m.ko", &target_module_for("6.12.9-other")).unwrap();
        assert_eq!(other.release.as_deref(), Some("6.12.9-other"));
        let others: HashMap<String, TargetObject> =
            [(module_key("my-mod"), other)].into_iter().collect();
        let r = check_module(
            "test.ko",
            &ko,
            &Inputs {
                vmlinux: &vm,
                symvers: None,
                modules: Some(&others),
            },
        )
        .unwrap();
        let f: Vec<&Finding> = r
            .findings
            .iter()
            .filter(|f| f.key == "check.target.module-mismatch")
            .collect();
        assert_eq!(f.len(), 1, "{:?}", r.findings);
        assert!(
            f[0].detail.contains("6.12.9-other") && f[0].detail.contains(RELEASE),
            "{}",
            f[0].detail
        );
        let bad = rename_symbol(&ko, ".klp.sym.my_mod.helper,2", ".klp.sym.my_mod.helper,3");
        assert_keys(
            &run_with(&bad, &vm, Some(&mods)),
            &["check.klp-sym.position"],
        );
        let mut spec2 = spec;
        spec2
            .manifest
            .as_mut()
            .unwrap()
            .funcs
            .push(rec("m_notrace", 0));
        assert_keys(
            &run_with(&module(&spec2), &vm, Some(&mods)),
            &["check.func.no-ftrace"],
        );
        assert_eq!(
            referenced_objects("x", &ko)
                .unwrap()
                .into_iter()
                .collect::<Vec<_>>(),
            vec!["my-mod".to_string(), "my_mod".to_string()]
        );
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let vm = TargetObject::vmlinux("vmlinux", &fake_vmlinux(Some(RELEASE), true)).unwrap();
        for bytes in [&b""[..], b"\x7fELF", &[0u8; 64]] {
            assert!(TargetObject::vmlinux("x", bytes).is_err());
            let inputs = Inputs {
                vmlinux: &vm,
                symvers: None,
                modules: None,
            };
            assert!(check_module("x", bytes, &inputs).is_err());
        }
        let ko = module(&good_spec());
        for cut in [16, 64, ko.len() / 2, ko.len() - 1] {
            let inputs = Inputs {
                vmlinux: &vm,
                symvers: None,
                modules: None,
            };
            let _ = check_module("x", &ko[..cut], &inputs);
        }
    }
}
