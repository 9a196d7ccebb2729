//! Inclusion: from a diff, the exact contents of the livepatch object — which sections are
//! copied whole, which are copied piece by piece (`carve.rs`: x86's alternative replacements,
//! `_static_cpu_has` fragments and `.fixup` code, the dynamic debug descriptors), which
//! special-section entries are kept, and where every relocation of the included code points
//! (a copied symbol, or a symbol of the running kernel).
//!
//! What is carried: changed and new functions, callbacks (copied like new ones, even an
//! unchanged one: `Plan::callbacks`), and the strings and new data they use. Of the changed
//! functions, `Plan::funcs` (what the hook redirects) holds a `.part.N` with an ftrace entry
//! (callers that inlined its parent's head call it directly) but not a `.cold` part (its
//! parent's new body reaches it) nor a private function (its callers are redirected; a note
//! says so). Special sections (`__mcount_loc`, `__bug_table`, `__ex_table`, `__jump_table`,
//! `.altinstructions`, `.parainstructions`, ..., and any section given an entry size) are cut
//! per entry (sizes and a short last entry: `entries.rs`), an entry kept when it points into
//! carried code;
//! `.printk_index` entries point at a site's `struct pi_entry` instead and are kept by what it
//! names (`Builder::printk_index_wanted`). When the target's objtool runs again
//! (`PlanOptions::objtool_regenerates`), objtool's sections and the `__pfx_` symbols it names
//! again are left to it. A runtime pointer constant becomes a load of its variable through
//! `Arch::runtime_ptr_load`, bound like any other reference, its section not carried, each in
//! `Plan::notes` (`Builder::runtime_constants`). Every relocation is a local copy or a reference
//! to the target; a pointer to a replaced function is the running kernel's original
//! (`Builder::original_function_pointer`). The member offsets the plan reads
//! ([`LAYOUT_MEMBERS`]) come from the target's DWARF, else from the layouts of Linux 5.15 to
//! 6.19. Symbols the patch newly exports are not carried (a note says why). The globals the
//! patch adds that the plan carries are listed (`Plan::new_globals`) for livepatches of several
//! units, whose other units bind to them; `Diff::plan_carrying` also carries the ones only another
//! unit uses.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};

use object::elf;

use crate::arch::{FarRef, Machine};
use crate::carve::{Carve, CarveError};
use crate::diff::{Diff, Target, Verdict};
use crate::entries::{self, Stride, StrideError};
use crate::error::Error;
use crate::model::{Bind, Patched, SecIdx, SymIdx, SymKind};
use crate::names::is_prefix_symbol;
use crate::refs::{label_base, targets_of};
use crate::runtime_const::RuntimeConstKind;

pub use crate::sections::special_section_structs;

/// The printk index: entries point at data describing a printk site, not into code
/// (`Builder::printk_index_wanted`).
const PRINTK_INDEX: &str = ".printk_index";

/// Sections of one object per symbol, copied piece by piece: only the objects the livepatch's
/// code refers to (`__dyndbg`: one `struct _ddebug` per `pr_debug()` site, referenced by its
/// code and by the `__jump_table` entry of the descriptor's static key).
const CARVED_BY_SYMBOLS: &[&str] = &["__dyndbg"];

/// How a section copied piece by piece is cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Carving {
    /// At every offset an allocated section refers to
    /// ([`Arch::carved_code_sections`](crate::arch::Arch::carved_code_sections)); `in_place`:
    /// its code runs where it lies, so a needed piece that runs on needs the next one.
    References { in_place: bool },
    /// At its symbols' ranges.
    Symbols,
}

/// Members of special-section data whose offsets the plan reads: `struct pi_entry`'s `fmt`
/// and `func` (what a `.printk_index` entry's site prints, and in which function), and
/// `struct alt_instr`'s `repl_offset` and `replacementlen` (which bytes of
/// `.altinstr_replacement` an alternative uses).
pub const LAYOUT_MEMBERS: &[(&str, &str)] = &[
    ("pi_entry", "fmt"),
    ("pi_entry", "func"),
    ("alt_instr", "repl_offset"),
    ("alt_instr", "replacementlen"),
];

impl PlanOptions {
    /// The offset of `member` in `strukt` in the target, when its DWARF said.
    pub fn member_offset(&self, strukt: &str, member: &str) -> Option<u64> {
        self.member_offsets
            .get(&format!("{strukt}.{member}"))
            .copied()
    }
}

#[derive(Debug, Clone, Default)]
pub struct PlanOptions {
    /// Entry sizes by section name from the target's DWARF (the size of each special
    /// section's structure): they win over every other source (`entries.rs`).
    pub entry_sizes: HashMap<String, u64>,
    /// Entry sizes given on the command line (`--entry-size`), for targets without DWARF; a
    /// section named here is a special section, cut per entry, even if klpgen does not know
    /// it.
    pub given_entry_sizes: HashMap<String, u64>,
    /// Offsets of the structure members the plan reads ([`LAYOUT_MEMBERS`]), keyed
    /// `struct.member`, from the target's DWARF. A missing one takes the layout of the
    /// kernels klpgen knows (5.15 to 6.19).
    pub member_offsets: HashMap<String, u64>,
    /// The target's objtool will run on the livepatch (on the linked module, or on the
    /// livepatch object by klpgen), so its output sections are not copied.
    pub objtool_regenerates: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlanTarget {
    /// A symbol copied into the livepatch object (index into `Plan::symbols`).
    Symbol(usize),
    /// The start of a copied section (index into `Plan::sections`).
    Section(usize),
    /// A symbol of the object being patched (index into `Plan::externals`).
    External(usize),
}

#[derive(Debug, Clone)]
pub struct PlanReloc {
    pub offset: u64,
    pub r_type: u32,
    pub target: PlanTarget,
    pub addend: i64,
}

#[derive(Debug, Clone)]
pub struct PlanSection {
    pub name: String,
    pub sh_type: u32,
    pub sh_flags: u64,
    pub align: u64,
    pub entsize: u64,
    /// Contents; for SHT_NOBITS, `size` bytes of zeros are meant and `data` is empty.
    pub data: Vec<u8>,
    pub size: u64,
    pub relocs: Vec<PlanReloc>,
}

impl PlanSection {
    /// A section of the livepatch object shaped like `s` of the patched object (name, type,
    /// flags without `SHF_GROUP`, alignment, entry size), holding `data` (`size` bytes; for
    /// SHT_NOBITS `data` stays empty) and no relocations yet.
    fn shaped_like(s: &crate::model::Section<'_, Patched>, data: Vec<u8>, size: u64) -> Self {
        PlanSection {
            name: s.name.to_string(),
            sh_type: s.sh_type,
            sh_flags: s.sh_flags & !u64::from(elf::SHF_GROUP),
            align: s.sh_addralign,
            entsize: s.sh_entsize,
            data,
            size,
            relocs: Vec::new(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct PlanSymbol {
    pub name: String,
    pub section: usize,
    pub value: u64,
    pub size: u64,
    pub kind: SymKind,
    /// `st_other` as in the patched object: on ppc64 a function's local entry point, which
    /// the loader adds to calls within the module (0 elsewhere).
    pub other: u8,
}

/// A symbol of the running kernel (or module) the new code refers to.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct External {
    /// Name as in the original object (and so in the target).
    pub name: String,
    /// Local (static) in the original object: found in the target by its file.
    pub local: bool,
    /// Undefined in the object (defined in another object of the target).
    pub undefined: bool,
}

/// A function the livepatch replaces.
#[derive(Debug, Clone)]
pub struct PlanFunc {
    /// The original function's name (as in the target).
    pub old_name: String,
    /// Local in the original object.
    pub old_local: bool,
    /// The new body (index into `Plan::symbols`).
    pub new_sym: usize,
}

/// A livepatch callback carried in the object (`KLPGEN_*_CALLBACK`).
#[derive(Debug, Clone)]
pub struct PlanCallback {
    pub kind: crate::annot::CallbackKind,
    /// The callback function's copy (index into `Plan::symbols`).
    pub sym: usize,
}

#[derive(Debug, Clone, Default)]
pub struct Plan {
    pub sections: Vec<PlanSection>,
    pub symbols: Vec<PlanSymbol>,
    pub externals: Vec<External>,
    pub funcs: Vec<PlanFunc>,
    /// Callbacks, at most one per kind, in kind order.
    pub callbacks: Vec<PlanCallback>,
    /// The original object's source file name (STT_FILE) and local symbol names, which
    /// identify its locals among same-named ones in the target.
    pub file_name: Option<String>,
    pub orig_locals: Vec<String>,
    pub notes: Vec<String>,
    /// The machine the livepatch object is written for: the patched object's.
    pub machine: Machine,
    /// The patched object's ELF `e_flags` (ppc64: the ELFv2 ABI), which the livepatch object
    /// keeps.
    pub e_flags: u32,
    /// The globals new in the patch that the plan carries ([`Diff::new_globals`]), each with
    /// its copy (index into `Plan::symbols`): other units of one livepatch may refer to them.
    pub new_globals: Vec<(String, usize)>,
}

/// A global symbol new in the patched object (function or data), which other units of a
/// livepatch made of several units may refer to: the livepatch defines it itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewGlobal {
    pub name: String,
    pub kind: SymKind,
    /// The patch exports it (`EXPORT_SYMBOL`); the export itself is not carried
    /// ([`Diff::plan`]'s notes say so).
    pub exported: bool,
    /// A static of the original object that the patch makes global: the running kernel has
    /// it as a local of this file. A function can be carried all the same (a copy behaves as
    /// the original); a variable cannot (its state is the running kernel's).
    pub was_static: bool,
}

struct Builder<'p, 'a, 'd> {
    diff: &'p Diff<'a, 'd>,
    opts: &'p PlanOptions,
    plan: Plan,
    sec_map: HashMap<SecIdx<Patched>, usize>,
    sym_map: HashMap<SymIdx<Patched>, usize>,
    ext_map: BTreeMap<External, usize>,
    included_funcs: HashSet<SymIdx<Patched>>,
    queue: VecDeque<Work>,
    /// Sections copied piece by piece, by original section.
    carves: BTreeMap<SecIdx<Patched>, Carved>,
    /// Relocations (plan section, index in its relocations) whose addend is an offset of a
    /// carved section, with the original offset they refer to: translated once laid out.
    fixups: Vec<(usize, usize, SecIdx<Patched>, u64)>,
}

/// What is left to plan: the relocations of a section copied whole, or of one piece of a
/// carved section.
enum Work {
    Section(SecIdx<Patched>),
    Piece(SecIdx<Patched>, usize),
}

/// A section copied piece by piece and its output section (index into `Plan::sections`).
struct Carved {
    carve: Carve,
    out: usize,
}

/// A relocation against a carved section whose addend must be translated once the pieces
/// are laid out: the section and the offset referred to.
type Pending = Option<(SecIdx<Patched>, u64)>;

/// The special-section entry a relocation sits in, for what the entry says about the size of
/// what it refers to ([`Arch::entry_reference_len`](crate::arch::Arch::entry_reference_len)).
#[derive(Clone, Copy)]
struct EntryRef<'e> {
    section: &'e str,
    bytes: &'e [u8],
    field: u64,
}

impl Diff<'_, '_> {
    /// Work out what the livepatch object contains.
    pub fn plan(&self, opts: &PlanOptions) -> Result<Plan, Error> {
        self.plan_carrying(opts, &[])
    }

    /// [`Diff::plan`], also carrying the new globals named in `carry` (of
    /// [`Diff::new_globals`]): new data or functions other units of the livepatch use, which
    /// this unit's own carried code may not.
    pub fn plan_carrying(&self, opts: &PlanOptions, carry: &[String]) -> Result<Plan, Error> {
        let mut included_funcs: HashSet<_> = self
            .functions
            .iter()
            .filter(|f| {
                let sec = self.patched.sym(f.patched).section.expect("defined");
                f.verdict.is_included()
                    && !self.patched.sec(sec).name.starts_with(".init.")
                    && !self.patched.sec(sec).name.starts_with(".exit.")
            })
            .map(|f| f.patched)
            .collect();
        // Callback functions are copied like new functions, even an unchanged one (the copy
        // behaves as the original does; its references are bound to the target).
        included_funcs.extend(self.annotations.callbacks.iter().map(|c| c.func));
        let mut b = Builder {
            diff: self,
            opts,
            plan: Plan::default(),
            sec_map: HashMap::new(),
            sym_map: HashMap::new(),
            ext_map: BTreeMap::new(),
            included_funcs,
            queue: VecDeque::new(),
            carves: BTreeMap::new(),
            fixups: Vec::new(),
        };
        b.plan.machine = Machine(self.patched.arch);
        b.plan.e_flags = self.patched.e_flags;
        b.plan.file_name = self.orig.file_name.map(str::to_string);
        b.plan.notes.extend(self.new_exports());
        b.plan.notes.extend(self.annotations.notes());
        b.plan.orig_locals = self
            .orig
            .symbols
            .iter()
            .filter(|s| {
                s.bind == Bind::Local
                    && matches!(s.kind, SymKind::Func | SymKind::Object)
                    && s.section.is_some()
            })
            .map(|s| s.name.to_string())
            .collect();

        let mut funcs: Vec<_> = self
            .functions
            .iter()
            .filter(|f| b.included_funcs.contains(&f.patched))
            .collect();
        funcs.sort_by_key(|f| f.patched);
        for f in &funcs {
            let sec = self.patched.sym(f.patched).section.expect("defined");
            b.include_section(sec);
        }
        for name in carry {
            let sym = self.new_global(name).ok_or_else(|| Error::Malformed {
                object: self.patched.label.clone(),
                what: format!("{name} is not a global the patch adds, so it cannot be carried"),
            })?;
            let s = self.patched.sym(sym);
            if s.kind != SymKind::Func && self.matched.contains_key(&sym) {
                return Err(Error::Malformed {
                    object: self.patched.label.clone(),
                    what: format!("{name} is a static variable of the running kernel that the patch makes global; a copy would not have its state"),
                });
            }
            b.include_section(s.section.expect("defined"));
        }
        b.drain()?;
        for c in &self.annotations.callbacks {
            let sym = b
                .sym_map
                .get(&c.func)
                .copied()
                .ok_or_else(|| Error::Malformed {
                    object: self.patched.label.clone(),
                    what: format!(
                        "{} callback {} is not among the functions the livepatch carries",
                        c.kind.member(),
                        self.patched.sym(c.func).name
                    ),
                })?;
            b.plan.callbacks.push(PlanCallback { kind: c.kind, sym });
        }
        for f in &funcs {
            if let (Verdict::Changed(_), Some(o)) = (&f.verdict, f.orig) {
                let os = self.orig.sym(o);
                // A fragment without an ftrace entry (`.cold`) is only jumped to from its
                // parent, whose new body reaches it. A split part with one (`.part.N`) is a
                // function of its own that every caller which inlined the parent's head calls
                // directly: it is replaced itself, or those callers would keep the old code.
                if crate::names::split_parent(os.name).is_some() && !self.orig_traceable(o) {
                    continue;
                }
                // A private function (no ftrace entry, only called directly) is not
                // redirected: its callers are, and they call the carried copy.
                if f.private {
                    b.plan.notes.push(self.private_note(f.patched));
                    continue;
                }
                b.plan.funcs.push(PlanFunc {
                    old_name: os.name.to_string(),
                    old_local: os.bind == Bind::Local,
                    new_sym: b.sym_map[&f.patched],
                });
            }
        }
        b.special_sections()?;
        b.drain()?;
        b.runtime_constants()?;
        b.drain()?;
        // Carves first: their fixups index relocations, and the rewrite of far references
        // drops some (the low parts).
        b.lay_out_carves();
        b.far_references()?;
        b.plan.new_globals = self
            .new_global_symbols()
            .filter_map(|(sym, _)| {
                let copy = *b.sym_map.get(&sym)?;
                Some((self.patched.sym(sym).name.to_string(), copy))
            })
            .collect();
        Ok(b.plan)
    }
}

impl Diff<'_, '_> {
    /// What the report says of a private function: not redirected, reached through which
    /// patched callers.
    fn private_note(&self, f: SymIdx<Patched>) -> String {
        let name = self.patched.sym(f).name;
        let mut callers: Vec<&str> = self
            .functions
            .iter()
            .filter(|r| r.verdict.is_included() && r.patched != f)
            .filter(|r| {
                targets_of(self.patched, &self.patched_insns, r.patched)
                    .any(|t| matches!(t, Target::Symbol { sym, .. } if sym == f))
            })
            .map(|r| match r.orig {
                Some(o) => self.orig.sym(o).name,
                None => self.patched.sym(r.patched).name,
            })
            .collect();
        callers.sort_unstable();
        callers.dedup();
        let callers = if callers.is_empty() {
            "no function calls it".to_string()
        } else {
            format!("its callers {} are", callers.join(", "))
        };
        format!(
            "{name} has no ftrace entry (notrace, or `static inline` kept out of line), so livepatch cannot redirect it; only direct calls reach it, so {callers} replaced instead and call the new {name}, which the livepatch carries"
        )
    }
}

impl Diff<'_, '_> {
    /// Symbols the patch newly exports (`EXPORT_SYMBOL`: `__export_symbol_<name>` since
    /// Linux 6.5, `__ksymtab_<name>` before). The livepatch does not carry the export: no
    /// module could link against it, since modules resolve exports from the Module.symvers
    /// of the kernel they are built for. Said in the plan's notes.
    fn new_exports(&self) -> Vec<String> {
        let exported = |name: &str| {
            name.strip_prefix("__export_symbol_")
                .or_else(|| name.strip_prefix("__ksymtab_"))
                .map(str::to_string)
        };
        let before: HashSet<String> = self
            .orig
            .symbols
            .iter()
            .filter_map(|s| exported(s.name))
            .collect();
        let mut out: Vec<String> = self
            .patched
            .symbols
            .iter()
            .filter_map(|s| exported(s.name))
            .filter(|n| !before.contains(n))
            .map(|n| {
                format!("{n}: its new EXPORT_SYMBOL is not carried: the livepatch has no __ksymtab entry for it, so a module outside the livepatch that uses {n} still does not load (\"Unknown symbol {n}\"), as the running kernel never exported it; the livepatch's own units that use {n} call its copy in the livepatch")
            })
            .collect();
        out.sort();
        out.dedup();
        out
    }
}

impl Diff<'_, '_> {
    /// The globals the patch adds: functions and data defined in the patched object, global
    /// (or weak) and matching nothing of the original or a static of it (made global),
    /// outside `__init`/`__exit` (never carried), not objtool's prefix labels nor the export
    /// records (`__ksymtab_*`, `__export_symbol_*`, ...). A livepatch of several units defines them itself, so the
    /// other units' references to them resolve inside the module.
    pub fn new_globals(&self) -> Vec<NewGlobal> {
        let exported = self.exported_names();
        self.new_global_symbols()
            .map(|(i, s)| NewGlobal {
                name: s.name.to_string(),
                kind: s.kind,
                exported: exported.contains(s.name),
                was_static: self.matched.contains_key(&i),
            })
            .collect()
    }

    /// The patched object's symbol of new global `name` ([`Diff::new_globals`]).
    fn new_global(&self, name: &str) -> Option<SymIdx<Patched>> {
        self.new_global_symbols()
            .find(|(_, s)| s.name == name)
            .map(|(i, _)| i)
    }

    fn new_global_symbols(
        &self,
    ) -> impl Iterator<Item = (SymIdx<Patched>, &crate::model::Symbol<'_, Patched>)> {
        const EXPORT_RECORDS: &[&str] = &[
            "__ksymtab_",
            "__kstrtab_",
            "__kstrtabns_",
            "__export_symbol_",
            "__crc_",
        ];
        self.patched.symbol_indices().filter_map(move |i| {
            let s = self.patched.sym(i);
            let sec = s.section.filter(|_| !s.undefined)?;
            let wanted = s.is_global()
                && matches!(s.kind, SymKind::Func | SymKind::Object)
                && !s.name.is_empty()
                && self
                    .matched
                    .get(&i)
                    .is_none_or(|&o| self.orig.sym(o).bind == Bind::Local)
                && !is_prefix_symbol(s.name)
                && !EXPORT_RECORDS.iter().any(|p| s.name.starts_with(p))
                && !crate::sections::is_init_section(self.patched.sec(sec).name);
            wanted.then_some((i, s))
        })
    }

    /// Names the patched object exports (`__export_symbol_<name>` since Linux 6.5,
    /// `__ksymtab_<name>` before).
    fn exported_names(&self) -> HashSet<&str> {
        self.patched
            .symbols
            .iter()
            .filter_map(|s| {
                s.name
                    .strip_prefix("__export_symbol_")
                    .or_else(|| s.name.strip_prefix("__ksymtab_"))
            })
            .collect()
    }
}

impl Builder<'_, '_, '_> {
    fn include_section(&mut self, sec: SecIdx<Patched>) -> usize {
        if let Some(&i) = self.sec_map.get(&sec) {
            return i;
        }
        let s = self.diff.patched.sec(sec);
        let idx = self.plan.sections.len();
        self.plan
            .sections
            .push(PlanSection::shaped_like(s, s.data.to_vec(), s.size));
        self.sec_map.insert(sec, idx);
        for &sym in &s.syms {
            self.copy_symbol(sym, idx);
        }
        self.queue.push_back(Work::Section(sec));
        idx
    }

    /// Copy a symbol of a section being copied into output section `out` (value as in the
    /// original section; carved sections translate it once laid out).
    fn copy_symbol(&mut self, sym: SymIdx<Patched>, out: usize) {
        let y = self.diff.patched.sym(sym);
        if y.name.is_empty() || y.kind == SymKind::NoType && y.name.starts_with(".L") {
            return;
        }
        // objtool (`--prefix`) names the padding before each function `__pfx_<name>`; when
        // it runs again on the livepatch it names it anew, so a copy would be a second
        // symbol of that name. At offset 0 a reference to it is one to the section.
        if self.opts.objtool_regenerates && y.name.starts_with("__pfx_") && y.value == 0 {
            return;
        }
        self.sym_map.insert(sym, self.plan.symbols.len());
        self.plan.symbols.push(PlanSymbol {
            name: y.name.to_string(),
            section: out,
            value: y.value,
            size: y.size,
            kind: y.kind,
            // The visibility is not kept (copies are local), the rest is the machine's.
            other: y.other & !3,
        });
    }

    fn carving(&self, sec: SecIdx<Patched>) -> Option<Carving> {
        let name = self.diff.patched.sec(sec).name;
        if CARVED_BY_SYMBOLS.contains(&name) {
            return Some(Carving::Symbols);
        }
        self.diff
            .patched
            .arch
            .carved_code(name)
            .map(|c| Carving::References {
                in_place: c.in_place,
            })
    }

    fn carve_error(&self, sec: SecIdx<Patched>, source: CarveError) -> Error {
        Error::Carve {
            object: self.diff.patched.label.clone(),
            section: self.diff.patched.sec(sec).name.to_string(),
            source,
        }
    }

    /// The output section of carved section `sec`, cutting it on first use.
    fn carved(&mut self, sec: SecIdx<Patched>, how: Carving) -> Result<usize, Error> {
        if let Some(c) = self.carves.get(&sec) {
            return Ok(c.out);
        }
        let d = self.diff;
        let s = d.patched.sec(sec);
        if s.is_nobits() || s.data.len() as u64 != s.size {
            return Err(Error::Malformed {
                object: d.patched.label.clone(),
                what: format!("{} has no contents to copy piece by piece", s.name),
            });
        }
        let carve = match how {
            Carving::Symbols => Carve::by_ranges(
                s.size,
                s.sh_addralign,
                s.syms.iter().map(|&i| {
                    let y = d.patched.sym(i);
                    (y.value, y.value + y.size)
                }),
            )
            .map_err(|e| self.carve_error(sec, e))?,
            Carving::References { .. } => {
                // Every offset an allocated section refers to; non-allocated ones (debug
                // information, objtool's `.discard.*` annotations) are never copied and do
                // not start pieces.
                let mut cuts = Vec::new();
                for site in d.patched.section_indices() {
                    if !d.patched.sec(site).is_alloc() {
                        continue;
                    }
                    for r in &d.patched.sec(site).relocs {
                        let y = d.patched.sym(r.sym);
                        if y.section != Some(sec) || y.undefined {
                            continue;
                        }
                        let x = (y.value as i64)
                            .wrapping_add(r.addend)
                            .wrapping_add(d.patched_insns.bias(d.patched, site, r))
                            .wrapping_add(self.entry_bias(site, r.offset));
                        // One outside the section is an error only if the livepatch follows it.
                        if let Ok(x) = u64::try_from(x) {
                            cuts.push(x);
                        }
                    }
                }
                Carve::by_cuts(s.size, s.sh_addralign, cuts)
            }
        };
        let out = self.plan.sections.len();
        self.plan
            .sections
            .push(PlanSection::shaped_like(s, Vec::new(), 0));
        self.carves.insert(sec, Carved { carve, out });
        Ok(out)
    }

    /// A piece of carved section `sec` is needed: copy its symbols, plan its relocations.
    fn need_piece(&mut self, sec: SecIdx<Patched>, piece: usize) -> Result<(), Error> {
        let d = self.diff;
        let s = d.patched.sec(sec);
        let c = &self.carves[&sec];
        let (out, (start, end)) = (c.out, c.carve.pieces()[piece]);
        // A relocation field must lie inside one piece, or the copy would split it.
        for r in s.relocs_in(start.saturating_sub(8), end) {
            let width = d.patched.reloc_kind(r.r_type).width;
            let field = if r.offset < start {
                (r.offset + width > start).then_some(r.offset)
            } else {
                c.carve.check_field(r.offset, width).err().map(|_| r.offset)
            };
            if let Some(offset) = field {
                let end = c
                    .carve
                    .piece_at(offset)
                    .map_or(start, |p| c.carve.pieces()[p].1);
                return Err(self.carve_error(sec, CarveError::Straddle { offset, end }));
            }
        }
        for &sym in &s.syms {
            let v = d.patched.sym(sym).value;
            if (start..end).contains(&v) {
                self.copy_symbol(sym, out);
            }
        }
        self.queue.push_back(Work::Piece(sec, piece));
        Ok(())
    }

    /// Place the needed pieces of every carved section, then translate what refers to them:
    /// relocation sites and symbols inside, and the addends of section-relative references.
    fn lay_out_carves(&mut self) {
        let d = self.diff;
        for (&sec, c) in &mut self.carves {
            c.carve.layout();
            let s = d.patched.sec(sec);
            // Never executed; int3 like the kernel's padding in code.
            let fill = if s.is_exec() { 0xcc } else { 0 };
            let data = c.carve.assemble(s.data, fill);
            let ps = &mut self.plan.sections[c.out];
            ps.size = data.len() as u64;
            ps.data = data;
        }
        for &(dest, i, sec, x) in &self.fixups {
            let carve = &self.carves[&sec].carve;
            let r = &mut self.plan.sections[dest].relocs[i];
            let delta = (carve.new_offset(x) as i64).wrapping_sub(x as i64);
            r.addend = r.addend.wrapping_add(delta);
        }
        for c in self.carves.values() {
            let ps = &mut self.plan.sections[c.out];
            for r in &mut ps.relocs {
                r.offset = c.carve.new_offset(r.offset);
            }
            ps.relocs.sort_by_key(|r| r.offset);
        }
        for s in &mut self.plan.symbols {
            if let Some(c) = self.carves.values().find(|c| c.out == s.section) {
                s.value = c.carve.new_offset(s.value);
            }
        }
    }

    fn external(&mut self, e: External) -> PlanTarget {
        let next = self.plan.externals.len();
        let i = *self.ext_map.entry(e.clone()).or_insert(next);
        if i == next {
            self.plan.externals.push(e);
        }
        PlanTarget::External(i)
    }

    /// Where a reference to `sym` of the patched object goes.
    fn symbol_target(&mut self, sym: SymIdx<Patched>) -> PlanTarget {
        let d = self.diff;
        let t = d.patched.sym(sym);
        if t.undefined || t.section.is_none() {
            return self.external(External {
                name: t.name.to_string(),
                local: false,
                undefined: true,
            });
        }
        let sec = t.section.expect("defined");
        if self.copies(sym) {
            let idx = self.include_section(sec);
            return match self.sym_map.get(&sym) {
                Some(&s) => PlanTarget::Symbol(s),
                None => PlanTarget::Section(idx),
            };
        }
        let o = d.orig.sym(d.matched[&sym]);
        self.external(External {
            name: o.name.to_string(),
            local: o.bind == Bind::Local,
            undefined: false,
        })
    }

    /// The running kernel's original, for a reference that is a pointer to a function the
    /// livepatch replaces, taken by the carried code or data (not a call or jump to it): such
    /// a pointer refers to the original, never to the copy. The value then compares equal to the pointers the kernel already holds (ops
    /// tables, registered callbacks), a call through it still reaches the new version (the
    /// livepatch core redirects the original), and it does not dangle into the module once
    /// the livepatch is removed. Direct calls and jumps, references into the middle of a
    /// function, special-section entries and functions new in the patch keep the copy.
    fn original_function_pointer(
        &mut self,
        site: SecIdx<Patched>,
        r: &crate::model::Reloc<Patched>,
        sym: SymIdx<Patched>,
        addend: i64,
    ) -> Option<PlanTarget> {
        let d = self.diff;
        let t = d.patched.sym(sym);
        let orig = *d.matched.get(&sym)?;
        if t.kind != SymKind::Func
            || !self.included_funcs.contains(&sym)
            || crate::names::split_parent(t.name).is_some()
        {
            return None;
        }
        let site_sec = d.patched.sec(site);
        let arch = d.patched.arch;
        let special = entries::is_special(arch, self.opts, site_sec.name)
            || arch.objtool_sections().contains(&site_sec.name)
            || self.carving(site).is_some()
            || site_sec.name.starts_with(".discard")
            || crate::annot::is_annotation_section(site_sec.name);
        let at_entry = addend.wrapping_add(d.patched_insns.bias(d.patched, site, r)) == 0;
        if special || !at_entry || d.patched_insns.is_branch(d.patched, site, r) {
            return None;
        }
        let o = d.orig.sym(orig);
        Some(self.external(External {
            name: o.name.to_string(),
            local: o.bind == Bind::Local,
            undefined: false,
        }))
    }

    fn copies(&self, sym: SymIdx<Patched>) -> bool {
        let d = self.diff;
        let t = d.patched.sym(sym);
        match t.kind {
            SymKind::Func => {
                self.included_funcs.contains(&sym)
                    || is_prefix_symbol(t.name)
                    || !d.matched.contains_key(&sym)
            }
            SymKind::Object => !d.matched.contains_key(&sym),
            _ => true,
        }
    }

    fn drain(&mut self) -> Result<(), Error> {
        let d = self.diff;
        while let Some(work) = self.queue.pop_front() {
            let (sec, out, relocs) = match work {
                Work::Section(sec) => (sec, self.sec_map[&sec], &d.patched.sec(sec).relocs[..]),
                Work::Piece(sec, p) => {
                    let c = &self.carves[&sec];
                    let (start, end) = c.carve.pieces()[p];
                    (sec, c.out, d.patched.sec(sec).relocs_in(start, end))
                }
            };
            for r in relocs {
                // A marker against no symbol (ppc64 `R_PPC64_ENTRY`: a hint the loader may use
                // to shorten the global entry) is not carried.
                if r.sym.get() == 0 {
                    continue;
                }
                let (planned, pending) = self.plan_reloc(sec, r, r.offset, None)?;
                let relocs = &mut self.plan.sections[out].relocs;
                if let Some((carved, x)) = pending {
                    self.fixups.push((out, relocs.len(), carved, x));
                }
                relocs.push(planned);
            }
        }
        Ok(())
    }

    /// Plan one relocation of the patched object, placed at `out_offset` of its copy.
    /// `entry`: the special-section entry it sits in, if any. A reference into a carved
    /// section makes the pieces it needs part of the livepatch; its addend is then translated
    /// once they are laid out, as the `Pending` result says.
    fn plan_reloc(
        &mut self,
        site: SecIdx<Patched>,
        r: &crate::model::Reloc<Patched>,
        out_offset: u64,
        entry: Option<EntryRef<'_>>,
    ) -> Result<(PlanReloc, Pending), Error> {
        let d = self.diff;
        let resolved = d.resolve_patched(site, r);
        if let Target::Symbol { sym, .. } = resolved {
            self.local_callee(site, r, sym)?;
        }
        if let Target::Symbol { sym, addend } = resolved {
            if let Some(original) = self.original_function_pointer(site, r, sym, addend) {
                return Ok((
                    PlanReloc {
                        offset: out_offset,
                        r_type: r.r_type,
                        target: original,
                        addend,
                    },
                    None,
                ));
            }
        }
        let into = match resolved {
            Target::Symbol { sym, .. } => {
                let t = d.patched.sym(sym);
                t.section.filter(|_| !t.undefined && self.copies(sym))
            }
            Target::String { sec, .. } | Target::Anon { sec, .. } => Some(sec),
        };
        if let Some((sec, how)) = into.and_then(|s| self.carving(s).map(|h| (s, h))) {
            return self.plan_carved_reloc(site, r, out_offset, entry, resolved, sec, how);
        }
        let (target, addend) = match resolved {
            Target::Symbol { sym, addend } => {
                let t = d.patched.sym(sym);
                let target = self.symbol_target(sym);
                // A section-relative reference into a copied section keeps its raw addend.
                match target {
                    PlanTarget::Section(_) => (target, addend.wrapping_add(t.value as i64)),
                    _ => (target, addend),
                }
            }
            Target::String { sec, .. } | Target::Anon { sec, .. } => (
                PlanTarget::Section(self.include_section(sec)),
                label_base(d.patched, r).wrapping_add(r.addend),
            ),
        };
        Ok((
            PlanReloc {
                offset: out_offset,
                r_type: r.r_type,
                target,
                addend,
            },
            None,
        ))
    }

    /// A branch that cannot leave the module (`Arch::branch_needs_local_target`: on ppc64 a
    /// call within the unit is a bare `bl` and a tail call a `b`, neither of which the loader
    /// can route through a stub that restores the TOC pointer) to a function of the object
    /// the livepatch does not carry: the livepatch carries a copy of that function, which
    /// its code then calls (a copy behaves as the original, its own references bound to the
    /// running kernel as usual; it is not redirected, so the running kernel's callers keep
    /// theirs). Its callees are planned the same way, so the closure within the unit is
    /// carried. A branch of that kind to a symbol the object does not define cannot be made
    /// valid and is an error, unless the module link or loader provides the symbol or it is
    /// the ftrace call (both handled without a stub).
    fn local_callee(
        &mut self,
        site: SecIdx<Patched>,
        r: &crate::model::Reloc<Patched>,
        sym: SymIdx<Patched>,
    ) -> Result<(), Error> {
        let d = self.diff;
        let arch = d.patched.arch;
        let code = d.patched.sec(site);
        if !code.is_exec() || !arch.branch_needs_local_target(code.data, r.offset, r.r_type) {
            return Ok(());
        }
        let t = d.patched.sym(sym);
        if t.undefined || t.section.is_none() {
            if t.name == arch.fentry_symbol() || arch.module_provided(t.name) {
                return Ok(());
            }
            return Err(Error::Malformed {
                object: d.patched.label.clone(),
                what: format!(
                    "{}+{:#x}: a branch to {} that cannot go through the module loader's stub on {} (a call without the nop after it, or a tail call); klpgen cannot carry it",
                    code.name, r.offset, t.name, arch.name()
                ),
            });
        }
        if t.kind == SymKind::Func && !self.copies(sym) {
            self.included_funcs.insert(sym);
            let name = match d.matched.get(&sym) {
                Some(&o) => d.orig.sym(o).name,
                None => t.name,
            };
            let note = format!(
                "{name} is called from carried code with a branch that cannot leave the module on {} (a call within its unit has no TOC restore after it), so the livepatch carries a copy of {name} for that code; the running kernel's {name} is not replaced",
                arch.name()
            );
            if !self.plan.notes.contains(&note) {
                self.plan.notes.push(note);
            }
        }
        Ok(())
    }

    /// A relocation that points into carved section `sec`: the referenced offset is the
    /// symbol's value plus the addend plus the bias at the site (x86: a PC-relative field in
    /// code is relative to the end of its instruction, one in data to itself), never the
    /// bare addend.
    #[allow(clippy::too_many_arguments)]
    fn plan_carved_reloc(
        &mut self,
        site: SecIdx<Patched>,
        r: &crate::model::Reloc<Patched>,
        out_offset: u64,
        entry: Option<EntryRef<'_>>,
        resolved: Target<Patched>,
        sec: SecIdx<Patched>,
        how: Carving,
    ) -> Result<(PlanReloc, Pending), Error> {
        let d = self.diff;
        let base = d.patched.sym(r.sym).value as i64;
        let bias = d
            .patched_insns
            .bias(d.patched, site, r)
            .wrapping_add(self.entry_bias(site, r.offset));
        let x = base.wrapping_add(r.addend).wrapping_add(bias);
        let len = entry.and_then(|e| {
            d.patched.arch.entry_reference_len(
                e.section,
                e.bytes,
                e.field,
                &self.opts.member_offsets,
            )
        });
        let out = self.carved(sec, how)?;
        let carve = &mut self.carves.get_mut(&sec).expect("carved").carve;
        let mut fresh = match carve.need(x, len) {
            Ok(f) => f,
            Err(e) => return Err(self.carve_error(sec, e)),
        };
        if let Carving::References { in_place: true } = how {
            // Code that runs where it lies runs on into the next piece unless it ends in a
            // jump, return or trap.
            let data = d.patched.sec(sec).data;
            let mut k = 0;
            while k < fresh.len() {
                let (start, end) = carve.pieces()[fresh[k]];
                let code = data.get(start as usize..end as usize).unwrap_or(&[]);
                if d.patched.arch.falls_through(code) && carve.need_piece(fresh[k] + 1) {
                    fresh.push(fresh[k] + 1);
                }
                k += 1;
            }
        }
        for p in fresh {
            self.need_piece(sec, p)?;
        }
        // `need` accepted it: the offset lies in [0, size].
        let x = x as u64;
        let carve = &self.carves[&sec].carve;
        if let Target::Symbol { sym, addend } = resolved {
            // Against a copied symbol of the same piece: the symbol moves with it.
            let v = d.patched.sym(sym).value;
            if let (Some(&s), Some(p)) = (self.sym_map.get(&sym), carve.piece_at(v)) {
                if len != Some(0) && carve.piece_at(x) == Some(p) {
                    let planned = PlanReloc {
                        offset: out_offset,
                        r_type: r.r_type,
                        target: PlanTarget::Symbol(s),
                        addend,
                    };
                    return Ok((planned, None));
                }
            }
        }
        let planned = PlanReloc {
            offset: out_offset,
            r_type: r.r_type,
            target: PlanTarget::Section(out),
            addend: base.wrapping_add(r.addend),
        };
        Ok((planned, Some((sec, x))))
    }

    /// Where a PC-relative field of a special-section entry counts from, relative to the field
    /// (`Arch::entry_field_bias`: ppc64's feature fixups count from the entry's start). The
    /// field's place in its entry comes from the section's stride (`entries::stride`, as the
    /// diff found it); a section without one has no known fields.
    fn entry_bias(&self, site: SecIdx<Patched>, offset: u64) -> i64 {
        let d = self.diff;
        let name = d.patched.sec(site).name;
        match d.patched_entries.stride_of(site) {
            Some(Ok(st)) if st.size > 0 => d.patched.arch.entry_field_bias(name, offset % st.size),
            _ => 0,
        }
    }

    /// The entries of special section `sec` (`entries.rs`): a size that cannot be known, or
    /// a section that is no whole number of entries, is an error naming it.
    fn stride(&self, sec: SecIdx<Patched>) -> Result<Stride, Error> {
        let d = self.diff;
        let name = d.patched.sec(sec).name;
        entries::stride(d.patched, sec, self.opts).map_err(|e| match e {
            StrideError::Unknown { .. } => Error::UnknownEntrySize {
                object: d.patched.label.clone(),
                section: name.to_string(),
            },
            e => Error::Malformed {
                object: d.patched.label.clone(),
                what: format!("special section {name}: {e}"),
            },
        })
    }

    /// Does this relocation point into code the livepatch carries?
    fn points_into_included(
        &self,
        site: SecIdx<Patched>,
        r: &crate::model::Reloc<Patched>,
    ) -> bool {
        let d = self.diff;
        let sec = match d.resolve_patched(site, r) {
            Target::Symbol { sym, .. } => d.patched.sym(sym).section,
            Target::Anon { sec, .. } | Target::String { sec, .. } => Some(sec),
        };
        sec.is_some_and(|s| {
            d.patched.sec(s).is_exec()
                && self.sec_map.contains_key(&s)
                && self
                    .included_funcs
                    .iter()
                    .any(|f| d.patched.sym(*f).section == Some(s))
        })
    }

    /// Runtime constants in copied code. The kernel writes their values into vmlinux's code
    /// at boot (`runtime_const_init`) and does nothing of the kind for modules, so a copy
    /// would keep the placeholder. A pointer constant becomes a load of its variable (which
    /// holds the value written at boot and does not change after), through an ordinary or klp
    /// relocation like any other reference; the `runtime_ptr_*` section is not carried. The
    /// differ refuses every other kind of site before a plan is made.
    fn runtime_constants(&mut self) -> Result<(), Error> {
        let d = self.diff;
        for site in crate::runtime_const::sites(d.patched) {
            let Some(&out) = self.sec_map.get(&site.code) else {
                continue;
            };
            if !d.patched.sec(site.code).is_exec() {
                continue;
            }
            let where_ = site.func.map_or_else(
                || format!("{}+{:#x}", d.patched.sec(site.code).name, site.offset),
                |f| {
                    let s = d.patched.sym(f);
                    format!("{}+{:#x}", s.name, site.offset - s.value)
                },
            );
            let malformed = |why: String| Error::Malformed {
                object: d.patched.label.clone(),
                what: format!("{}: runtime constant at {where_}: {why}", site.section),
            };
            if site.kind != RuntimeConstKind::Ptr {
                return Err(malformed(
                    "a shift constant cannot be carried (the differ refuses it)".into(),
                ));
            }
            let load = d
                .patched
                .arch
                .runtime_ptr_load(&self.plan.sections[out].data, site.offset)
                .map_err(malformed)?;
            let target = match self.variable(site.variable) {
                Some(sym) => {
                    let t = self.symbol_target(sym);
                    // A copy would never hold the value the kernel wrote at boot.
                    if !matches!(t, PlanTarget::External(_)) {
                        return Err(malformed(format!(
                            "{} is new in the patched object, not the running kernel's variable",
                            site.variable
                        )));
                    }
                    t
                }
                None => self.external(External {
                    name: site.variable.to_string(),
                    local: false,
                    undefined: true,
                }),
            };
            let start = load.start as usize;
            self.plan.sections[out].data[start..start + load.bytes.len()]
                .copy_from_slice(&load.bytes);
            let relocs = &mut self.plan.sections[out].relocs;
            relocs.push(PlanReloc {
                offset: load.field,
                r_type: load.r_type,
                target,
                addend: load.addend,
            });
            relocs.sort_by_key(|r| r.offset);
            self.plan.notes.push(format!(
                "{}: the runtime constant at {where_} is loaded from {} (the kernel patches runtime constants into vmlinux at boot, never into a module)",
                site.section, site.variable
            ));
        }
        Ok(())
    }

    /// References that count from a base register of the module and so cannot reach an object
    /// of the running kernel (`Arch::far_reference`; ppc64: TOC-relative addressing of the
    /// unit's data, `addis rX,r2,sym@toc@ha` and the `@toc@l` uses of rX, which in a module
    /// count from the module's TOC and which the loader applies without a range check).
    /// Each such pair whose target stays in the running kernel becomes a load of the target's
    /// address from an address slot of the livepatch (`ld rX,slot@toc(r2)`, the slot holding
    /// the target through an ordinary or klp relocation), the uses keeping their offset from
    /// the target in their displacement. A use whose high part is not found (another register
    /// than the one a high part of its target set), high parts of one target and register
    /// with different offsets, or bytes that are not the expected instructions are errors
    /// naming the place: klpgen does not guess.
    fn far_references(&mut self) -> Result<(), Error> {
        let d = self.diff;
        let arch = d.patched.arch;
        let mut code: Vec<(SecIdx<Patched>, usize)> = self
            .sec_map
            .iter()
            .filter(|(&s, _)| d.patched.sec(s).is_exec())
            .map(|(&s, &o)| (s, o))
            .collect();
        code.sort();
        let mut slots: Vec<(PlanTarget, i64)> = Vec::new();
        let mut slot_of: HashMap<(usize, i64), u64> = HashMap::new();
        let slot_sec = self.plan.sections.len();
        // Per output code section: (relocation, new type, slot offset) for each high part
        // turned into a slot load, and the low parts dropped.
        type Rewrite = (usize, Vec<(usize, u32, u64)>, Vec<usize>);
        let mut rewrites: Vec<Rewrite> = Vec::new();
        for (sec, out) in code {
            let name = d.patched.sec(sec).name;
            let ps = &self.plan.sections[out];
            let far = |part: FarRef| {
                ps.relocs
                    .iter()
                    .enumerate()
                    .filter(move |(_, r)| {
                        arch.far_reference(r.r_type) == Some(part)
                            && matches!(r.target, PlanTarget::External(_))
                    })
                    .map(|(i, _)| i)
            };
            let highs: Vec<usize> = far(FarRef::High).collect();
            let lows: Vec<usize> = far(FarRef::Low).collect();
            if highs.is_empty() && lows.is_empty() {
                continue;
            }
            let err = |at: u64, why: String| {
                Error::Malformed {
                object: d.patched.label.clone(),
                what: format!(
                    "{name}+{at:#x}: a TOC-relative reference to the running kernel's data cannot be made from a module: {why}"
                ),
            }
            };
            // (target, register, addend of the high parts) -> (that addend, the high parts'
            // relocations, the low parts with their offsets from that addend). One register
            // may be set for one target at several offsets (`addis r9,r2,x+128@toc@ha` in one
            // place, `x+136` in another).
            type Group = (i64, Vec<usize>, Vec<(usize, i64)>);
            let mut groups: BTreeMap<(usize, u32, i64), Group> = BTreeMap::new();
            for &i in &highs {
                let r = &ps.relocs[i];
                let PlanTarget::External(t) = r.target else {
                    unreachable!()
                };
                let reg = arch
                    .far_reference_register(&ps.data, r.offset, FarRef::High)
                    .ok_or_else(|| {
                        err(r.offset, "not the expected high-part instruction".into())
                    })?;
                let g =
                    groups
                        .entry((t, reg, r.addend))
                        .or_insert((r.addend, Vec::new(), Vec::new()));
                g.1.push(i);
            }
            for &i in &lows {
                let r = &ps.relocs[i];
                let PlanTarget::External(t) = r.target else {
                    unreachable!()
                };
                let reg = arch
                    .far_reference_register(&ps.data, r.offset, FarRef::Low)
                    .ok_or_else(|| err(r.offset, "not the expected low-part instruction".into()))?;
                // The high part of the same expression (GCC pairs `x+a@toc@ha` with
                // `x+a@toc@l`), else the only high part of the target in that register.
                let key = if groups.contains_key(&(t, reg, r.addend)) {
                    (t, reg, r.addend)
                } else {
                    let mut of_reg = groups.keys().filter(|k| (k.0, k.1) == (t, reg));
                    match (of_reg.next(), of_reg.next()) {
                        (Some(&k), None) => k,
                        (None, _) => {
                            return Err(err(
                                r.offset,
                                format!(
                                    "no high part of the same target sets its base register r{reg}"
                                ),
                            ))
                        }
                        (Some(a), Some(b)) => {
                            return Err(err(
                                r.offset,
                                format!(
                                    "high parts of its target at offsets {} and {} set its base register r{reg}, neither at its own offset {}",
                                    a.2, b.2, r.addend
                                ),
                            ))
                        }
                    }
                };
                let g = groups.get_mut(&key).expect("a key of groups");
                let delta = r.addend.wrapping_sub(g.0);
                g.2.push((i, delta));
            }
            let mut data = ps.data.clone();
            let mut changed = Vec::new();
            let mut dropped = Vec::new();
            for ((t, _, _), (addend, hs, ls)) in groups {
                let slot = *slot_of.entry((t, addend)).or_insert_with(|| {
                    slots.push((PlanTarget::External(t), addend));
                    (slots.len() as u64 - 1) * 8
                });
                let low_sites: Vec<(u64, i64)> = ls
                    .iter()
                    .map(|&(i, dl)| (ps.relocs[i].offset, dl))
                    .collect();
                for &h in &hs {
                    let at = ps.relocs[h].offset;
                    let r_type = arch
                        .rewrite_far_reference(&mut data, at, &low_sites)
                        .map_err(|why| err(at, why))?;
                    changed.push((h, r_type, slot));
                }
                dropped.extend(ls.iter().map(|&(i, _)| i));
            }
            self.plan.sections[out].data = data;
            rewrites.push((out, changed, dropped));
        }
        if slots.is_empty() {
            return Ok(());
        }
        let mut toc = PlanSection {
            name: arch.slot_section().unwrap_or(".toc").to_string(),
            sh_type: elf::SHT_PROGBITS,
            sh_flags: u64::from(elf::SHF_ALLOC | elf::SHF_WRITE),
            align: 8,
            entsize: 0,
            data: vec![0; slots.len() * 8],
            size: slots.len() as u64 * 8,
            relocs: Vec::new(),
        };
        for (k, (target, addend)) in slots.iter().enumerate() {
            toc.relocs.push(PlanReloc {
                offset: k as u64 * 8,
                r_type: arch.pointer_reloc(),
                target: target.clone(),
                addend: *addend,
            });
        }
        self.plan.sections.push(toc);
        for (out, changed, dropped) in rewrites {
            let relocs = &mut self.plan.sections[out].relocs;
            for (i, r_type, slot) in changed {
                relocs[i].r_type = r_type;
                relocs[i].target = PlanTarget::Section(slot_sec);
                relocs[i].addend = slot as i64;
            }
            let mut k = 0;
            relocs.retain(|_| {
                k += 1;
                !dropped.contains(&(k - 1))
            });
        }
        let mut names: Vec<&str> = slots
            .iter()
            .filter_map(|(t, _)| match t {
                PlanTarget::External(i) => Some(self.plan.externals[*i].name.as_str()),
                _ => None,
            })
            .collect();
        names.sort_unstable();
        names.dedup();
        self.plan.notes.push(format!(
            "{}: the carried code addresses {} relative to its TOC pointer, which in a module is the module's own; the address is loaded from a {} slot of the livepatch instead",
            arch.name(),
            names.join(", "),
            arch.slot_section().unwrap_or(".toc")
        ));
        Ok(())
    }

    /// The patched object's own symbol of a runtime constant's variable, if it has one.
    fn variable(&self, name: &str) -> Option<SymIdx<Patched>> {
        let d = self.diff;
        d.patched.symbol_indices().find(|&i| {
            let s = d.patched.sym(i);
            s.name == name && matches!(s.kind, SymKind::Object | SymKind::NoType)
        })
    }

    /// The byte a relocation of the patched object points at: its symbol's section and the
    /// offset there (past the instruction for a PC-relative field); within a merged-string
    /// section, the start of the string it points into. None for an undefined symbol.
    fn pointee(
        &self,
        site: SecIdx<Patched>,
        r: &crate::model::Reloc<Patched>,
    ) -> Option<(SecIdx<Patched>, u64)> {
        let d = self.diff;
        let t = d.patched.sym(r.sym);
        let sec = t.section.filter(|_| !t.undefined)?;
        let bias = d.patched_insns.bias(d.patched, site, r);
        let off = (t.value as i64)
            .checked_add(r.addend)?
            .checked_add(bias)
            .and_then(|o| u64::try_from(o).ok())?;
        let s = d.patched.sec(sec);
        match usize::try_from(off).ok().filter(|&o| o < s.data.len()) {
            Some(o) if s.is_strings() => Some((sec, s.string_start(o) as u64)),
            _ => Some((sec, off)),
        }
    }

    /// The NUL-terminated string at a place of the patched object.
    fn c_string_at(&self, (sec, off): (SecIdx<Patched>, u64)) -> Option<&[u8]> {
        let data = self.diff.patched.sec(sec).data;
        let rest = data.get(usize::try_from(off).ok()?..)?;
        Some(&rest[..rest.iter().position(|&b| b == 0)?])
    }

    /// The `.printk_index` entries the livepatch carries (offsets of their relocations).
    ///
    /// Each entry is a pointer to the `struct pi_entry` (`_entry`) a printk site leaves, whose
    /// members `fmt` and `func` are pointers (at the offsets the target's DWARF gives, else
    /// the first two, at 0 and at one pointer, the index's entry size). Nothing references
    /// `_entry`; it belongs to the livepatch's code, and is carried, when
    /// - its `func` string (`__func__` of the function whose body holds the site: a
    ///   `__func__.N` object or, with some compilers, a merged string) names a function the
    ///   livepatch carries (changed, new or callback; a clone `f.isra.0` has `__func__` "f"),
    ///   which also keeps the sites of a carried function that no code reaches (a printk under
    ///   `if (IS_ENABLED(...))` off); or
    /// - its `fmt` is the very string (same section and offset) that code the livepatch
    ///   carries references: a site of a helper inlined into a carried function, whose
    ///   `__func__` names the helper.
    ///
    /// Sites of functions the livepatch does not carry stay in the running kernel's index. A
    /// carried `_entry` is a special static (never matched, always a fresh copy) and its
    /// strings are copied with it, so the module's index (`/sys/kernel/debug/printk/index/
    /// <module>`) lists the new code's formats.
    fn printk_index_wanted(&self, sec: SecIdx<Patched>) -> Result<Vec<u64>, Error> {
        let d = self.diff;
        let ptr = self.stride(sec)?.size;
        let names: HashSet<&str> = self
            .included_funcs
            .iter()
            .map(|&f| crate::annot::source_function(d.patched.sym(f).name))
            .collect();
        let mut code_strings = HashSet::new();
        for &c in self.sec_map.keys() {
            if d.patched.sec(c).is_exec() {
                for r in &d.patched.sec(c).relocs {
                    code_strings.extend(self.pointee(c, r));
                }
            }
        }
        let mut wanted = Vec::new();
        for r in &d.patched.sec(sec).relocs {
            let Some((esec, eoff)) = self.pointee(sec, r) else {
                continue;
            };
            let member = |at: u64| {
                d.patched
                    .sec(esec)
                    .relocs_in(eoff + at, eoff + at + 1)
                    .first()
                    .and_then(|m| self.pointee(esec, m))
            };
            let fmt_at = self.opts.member_offset("pi_entry", "fmt").unwrap_or(0);
            let func_at = self.opts.member_offset("pi_entry", "func").unwrap_or(ptr);
            let by_func = member(func_at)
                .and_then(|f| self.c_string_at(f))
                .and_then(|f| std::str::from_utf8(f).ok())
                .is_some_and(|f| names.contains(f));
            let by_fmt = member(fmt_at).is_some_and(|f| code_strings.contains(&f));
            if by_func || by_fmt {
                wanted.push(r.offset);
            }
        }
        Ok(wanted)
    }

    /// Copy the entries of special section `sec` (`name`, entries of `stride`) that hold the
    /// relocations at `wanted`, with their relocations planned. A short last entry (a layout
    /// that aligns each entry before it, `.parainstructions`) is padded with zeros to a whole
    /// entry in the copy, so the copy is a whole number of entries.
    fn copy_entries(
        &mut self,
        sec: SecIdx<Patched>,
        name: &str,
        stride: Stride,
        wanted: &[u64],
    ) -> Result<(), Error> {
        let d = self.diff;
        let s = d.patched.sec(sec);
        let size = stride.size;
        let mut keep: Vec<u64> = wanted.iter().map(|o| o / size).collect();
        keep.dedup();
        // Each kept entry holds a relocation, so it lies inside the section's data: the
        // copy is never larger than the section plus one entry's padding.
        let mut data = Vec::with_capacity(s.data.len() + size as usize);
        let mut relocs = Vec::new();
        let mut pending = Vec::new();
        for (k, entry) in keep.iter().enumerate() {
            let start = entry * size;
            let out_base = k as u64 * size;
            let end = (start + size).min(s.size);
            let bytes = usize::try_from(start)
                .ok()
                .zip(usize::try_from(end).ok())
                .and_then(|(a, b)| s.data.get(a..b))
                .filter(|_| start < end)
                .ok_or_else(|| Error::Malformed {
                    object: d.patched.label.clone(),
                    what: format!("{name}: entry {entry} lies outside the section"),
                })?;
            data.extend_from_slice(bytes);
            data.resize((out_base + size) as usize, 0);
            for r in s.relocs_in(start, end) {
                let width = d.patched.reloc_kind(r.r_type).width;
                if r.offset - start + width > end - start {
                    return Err(Error::Malformed {
                        object: d.patched.label.clone(),
                        what: format!(
                            "{name}: the relocation at {:#x} straddles two {size}-byte entries",
                            r.offset
                        ),
                    });
                }
                let at = EntryRef {
                    section: name,
                    bytes,
                    field: r.offset - start,
                };
                let (planned, p) =
                    self.plan_reloc(sec, r, out_base + (r.offset - start), Some(at))?;
                if let Some((carved, x)) = p {
                    pending.push((relocs.len(), carved, x));
                }
                relocs.push(planned);
            }
        }
        let dest = self.plan.sections.len();
        self.fixups
            .extend(pending.into_iter().map(|(i, c, x)| (dest, i, c, x)));
        let size = data.len() as u64;
        self.plan.sections.push(PlanSection {
            relocs,
            ..PlanSection::shaped_like(s, data, size)
        });
        Ok(())
    }

    fn special_sections(&mut self) -> Result<(), Error> {
        let d = self.diff;
        let arch = d.patched.arch;
        for (sec, name) in entries::special_sections(d.patched, self.opts) {
            if self.opts.objtool_regenerates && arch.objtool_sections().contains(&name) {
                self.plan.notes.push(format!(
                    "{name}: left to the target's objtool (run on the linked module, or by klpgen on the livepatch object)"
                ));
                continue;
            }
            let s = d.patched.sec(sec);
            let wanted: Vec<_> = if name == PRINTK_INDEX {
                self.printk_index_wanted(sec)?
            } else {
                s.relocs
                    .iter()
                    .filter(|r| self.points_into_included(sec, r))
                    .map(|r| r.offset)
                    .collect()
            };
            if wanted.is_empty() {
                continue;
            }
            let stride = self.stride(sec)?;
            if s.is_nobits() {
                return Err(Error::Malformed {
                    object: d.patched.label.clone(),
                    what: format!("{name} has relocations but no contents (SHT_NOBITS)"),
                });
            }
            self.copy_entries(sec, name, stride, &wanted)?;
        }
        for s in &d.patched.sections {
            if (s.name.starts_with(".orc_unwind") || s.name == ".orc_header")
                && !self.opts.objtool_regenerates
            {
                self.plan.notes.push(format!(
                    "{}: ORC entries are not carried; the module's objtool run must regenerate them",
                    s.name
                ));
            }
        }
        Ok(())
    }
}
