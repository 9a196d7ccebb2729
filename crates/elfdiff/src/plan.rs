//! Inclusion: from a diff, the exact contents of the livepatch object — which sections are
//! copied whole, which special-section entries are kept, and where every relocation of the
//! included code points (a copied symbol, or a symbol of the running kernel).

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};

use object::elf;

use crate::arch::Arch;
use crate::diff::{Diff, Target, Verdict};
use crate::error::Error;
use crate::model::{Bind, Patched, SecIdx, SymIdx, SymKind};
use crate::names::is_prefix_symbol;

/// Sections whose entries point into functions and must be cut per entry.
/// `None` means the entry size must come from the target (DWARF struct) or the caller.
const SPECIAL_SECTIONS: &[(&str, Option<u64>, Option<&str>)] = &[
    ("__mcount_loc", Some(8), None),
    ("__bug_table", None, Some("bug_entry")),
    ("__ex_table", None, Some("exception_table_entry")),
    ("__jump_table", None, Some("jump_entry")),
    (".altinstructions", None, Some("alt_instr")),
    (".smp_locks", Some(4), None),
    (".static_call_sites", None, Some("static_call_site")),
    // Pointers to `struct pi_entry` objects (`_entry`), not the structures themselves.
    (".printk_index", Some(8), None),
    (".retpoline_sites", Some(4), None),
    (".return_sites", Some(4), None),
    (".call_sites", Some(4), None),
    (".ibt_endbr_seal", Some(4), None),
    (".cfi_sites", Some(4), None),
];

/// The printk index: entries point at data describing a printk site, not into code
/// (`Builder::printk_index_wanted`).
const PRINTK_INDEX: &str = ".printk_index";

/// Sections objtool writes; when objtool runs again on the livepatch (on the linked module: x86
/// with IBT or Clang LTO, "delayed objtool"; or, on ORC targets that run it per object, klpgen
/// runs it on the livepatch object), copies would collide with what it regenerates.
const OBJTOOL_SECTIONS: &[&str] = &[
    ".retpoline_sites",
    ".return_sites",
    ".call_sites",
    ".ibt_endbr_seal",
    ".cfi_sites",
    ".static_call_sites",
    ".orc_unwind",
    ".orc_unwind_ip",
    ".orc_header",
];

/// Sections whose role klpgen knows: ordinary code and data, metadata it drops or that
/// kbuild regenerates, and the special sections above. Any other section that points into
/// changed code is refused rather than silently dropped.
pub fn is_known_section(name: &str) -> bool {
    const PREFIXES: &[&str] = &[
        ".text",
        ".data",
        ".rodata",
        ".bss",
        ".init.",
        ".exit.",
        ".ref.",
        ".meminit",
        ".noinstr.text",
        ".entry.text",
        ".head.text",
        ".sched.text",
        ".cpuidle.text",
        ".spinlock.text",
        ".lock.text",
        ".irqentry.text",
        ".softirqentry.text",
        ".kprobes.text",
        ".debug",
        ".comment",
        ".note",
        ".discard",
        ".modinfo",
        "___ksymtab",
        "__ksymtab",
        "__kcrctab",
        ".export_symbol",
        "__param",
        "__patchable_function_entries",
        ".initcall",
        ".con_initcall",
        ".orc_",
        ".altinstr_replacement",
        ".altinstr_aux",
        "_ftrace_events",
        "__tracepoints",
        "__bpf_raw_tp_map",
        "_ftrace_eval_map",
        ".static_call.text",
        ".static_call_tramp_key",
        ".gnu.",
        ".llvm_addrsig",
        ".init_array",
        ".ctors",
        ".eh_frame",
        ".note.GNU-stack",
    ];
    SPECIAL_SECTIONS.iter().any(|(s, _, _)| *s == name)
        || OBJTOOL_SECTIONS.contains(&name)
        || PREFIXES.iter().any(|p| name.starts_with(p))
}

/// The DWARF structure that gives each special section's entry size, for callers that read
/// it from the target.
pub fn special_section_structs() -> impl Iterator<Item = (&'static str, &'static str)> {
    SPECIAL_SECTIONS
        .iter()
        .filter_map(|(s, _, st)| st.map(|st| (*s, st)))
}

#[derive(Debug, Clone, Default)]
pub struct PlanOptions {
    /// Entry sizes by section name (from the target's DWARF or the command line).
    pub entry_sizes: HashMap<String, u64>,
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

#[derive(Debug, Clone)]
pub struct PlanSymbol {
    pub name: String,
    pub section: usize,
    pub value: u64,
    pub size: u64,
    pub kind: SymKind,
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
}

struct Builder<'p, 'a, 'd> {
    diff: &'p Diff<'a, 'd>,
    opts: &'p PlanOptions,
    plan: Plan,
    sec_map: HashMap<SecIdx<Patched>, usize>,
    sym_map: HashMap<SymIdx<Patched>, usize>,
    ext_map: BTreeMap<External, usize>,
    included_funcs: HashSet<SymIdx<Patched>>,
    queue: VecDeque<SecIdx<Patched>>,
}

impl Diff<'_, '_> {
    /// Work out what the livepatch object contains.
    pub fn plan(&self, opts: &PlanOptions) -> Result<Plan, Error> {
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
        };
        b.plan.file_name = self.orig.file_name.map(str::to_string);
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
        Ok(b.plan)
    }
}

impl Builder<'_, '_, '_> {
    fn include_section(&mut self, sec: SecIdx<Patched>) -> usize {
        if let Some(&i) = self.sec_map.get(&sec) {
            return i;
        }
        let s = self.diff.patched.sec(sec);
        let idx = self.plan.sections.len();
        self.plan.sections.push(PlanSection {
            name: s.name.to_string(),
            sh_type: s.sh_type,
            sh_flags: s.sh_flags & !u64::from(elf::SHF_GROUP),
            align: s.sh_addralign,
            entsize: s.sh_entsize,
            data: s.data.to_vec(),
            size: s.size,
            relocs: Vec::new(),
        });
        self.sec_map.insert(sec, idx);
        for &sym in &s.syms {
            let y = self.diff.patched.sym(sym);
            if y.name.is_empty() || y.kind == SymKind::NoType && y.name.starts_with(".L") {
                continue;
            }
            // objtool (`--prefix`) names the padding before each function `__pfx_<name>`; when
            // it runs again on the livepatch it names it anew, so a copy would be a second
            // symbol of that name. At offset 0 a reference to it is one to the section.
            if self.opts.objtool_regenerates && y.name.starts_with("__pfx_") && y.value == 0 {
                continue;
            }
            self.sym_map.insert(sym, self.plan.symbols.len());
            self.plan.symbols.push(PlanSymbol {
                name: y.name.to_string(),
                section: idx,
                value: y.value,
                size: y.size,
                kind: y.kind,
            });
        }
        self.queue.push_back(sec);
        idx
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
        let copy = match t.kind {
            SymKind::Func => {
                self.included_funcs.contains(&sym)
                    || is_prefix_symbol(t.name)
                    || !d.matched.contains_key(&sym)
            }
            SymKind::Object => !d.matched.contains_key(&sym),
            _ => true,
        };
        if copy {
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

    fn drain(&mut self) -> Result<(), Error> {
        while let Some(sec) = self.queue.pop_front() {
            let out = self.sec_map[&sec];
            let relocs = self.diff.patched.sec(sec).relocs.clone();
            for r in &relocs {
                let planned = self.plan_reloc(sec, r, r.offset);
                self.plan.sections[out].relocs.push(planned);
            }
        }
        Ok(())
    }

    fn plan_reloc(
        &mut self,
        site: SecIdx<Patched>,
        r: &crate::model::Reloc<Patched>,
        out_offset: u64,
    ) -> PlanReloc {
        let d = self.diff;
        let (target, addend) = match d.resolve_patched(site, r) {
            Target::Symbol { sym, addend } => {
                let t = d.patched.sym(sym);
                let target = self.symbol_target(sym);
                // A section-relative reference into a copied section keeps its raw addend.
                match target {
                    PlanTarget::Section(_) => (target, addend.wrapping_add(t.value as i64)),
                    _ => (target, addend),
                }
            }
            Target::String { sec, .. } | Target::Anon { sec, .. } => {
                (PlanTarget::Section(self.include_section(sec)), r.addend)
            }
        };
        PlanReloc {
            offset: out_offset,
            r_type: r.r_type,
            target,
            addend,
        }
    }

    fn entry_size(&self, name: &str) -> Option<u64> {
        if let Some(&n) = self.opts.entry_sizes.get(name) {
            return Some(n);
        }
        let fixed = SPECIAL_SECTIONS
            .iter()
            .find(|(s, _, _)| *s == name)
            .and_then(|(_, n, _)| *n);
        fixed.or_else(|| {
            let s = self.diff.patched.sec(self.diff.patched.find_section(name)?);
            (s.sh_entsize > 0).then_some(s.sh_entsize)
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
        use crate::diff::RuntimeConstKind;
        let d = self.diff;
        for site in d.runtime_const_sites() {
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
            let load = crate::arch::X86_64
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
            Some(o) if s.is_strings() => {
                let start = s.data[..o]
                    .iter()
                    .rposition(|&b| b == 0)
                    .map_or(0, |p| p + 1);
                Some((sec, start as u64))
            }
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
    /// first two members are the pointers `fmt` and `func` (at 0 and at one pointer, the
    /// index's entry size). Nothing references `_entry`; it belongs to the livepatch's code, and
    /// is carried, when
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
        let ptr = self
            .entry_size(PRINTK_INDEX)
            .ok_or_else(|| Error::UnknownEntrySize {
                object: d.patched.label.clone(),
                section: PRINTK_INDEX.to_string(),
            })?;
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
            let by_func = member(ptr)
                .and_then(|f| self.c_string_at(f))
                .and_then(|f| std::str::from_utf8(f).ok())
                .is_some_and(|f| names.contains(f));
            let by_fmt = member(0).is_some_and(|f| code_strings.contains(&f));
            if by_func || by_fmt {
                wanted.push(r.offset);
            }
        }
        Ok(wanted)
    }

    fn special_sections(&mut self) -> Result<(), Error> {
        let d = self.diff;
        for (name, _, _) in SPECIAL_SECTIONS {
            let Some(sec) = d.patched.find_section(name) else {
                continue;
            };
            if self.opts.objtool_regenerates && OBJTOOL_SECTIONS.contains(name) {
                self.plan.notes.push(format!(
                    "{name}: left to the target's objtool (run on the linked module, or by klpgen on the livepatch object)"
                ));
                continue;
            }
            let s = d.patched.sec(sec);
            let wanted: Vec<_> = if *name == PRINTK_INDEX {
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
            let size = self
                .entry_size(name)
                .ok_or_else(|| Error::UnknownEntrySize {
                    object: d.patched.label.clone(),
                    section: name.to_string(),
                })?;
            if s.is_nobits() {
                return Err(Error::Malformed {
                    object: d.patched.label.clone(),
                    what: format!("{name} has relocations but no contents (SHT_NOBITS)"),
                });
            }
            if size == 0 || !s.size.is_multiple_of(size) {
                return Err(Error::Malformed {
                    object: d.patched.label.clone(),
                    what: format!(
                        "{name} is {} bytes, not a multiple of its entry size {size}",
                        s.size
                    ),
                });
            }
            let mut keep: Vec<u64> = wanted.iter().map(|o| o / size).collect();
            keep.dedup();
            // Each kept entry holds a relocation, so it lies inside the section's data: the
            // copy is never larger than the section.
            let mut data = Vec::with_capacity(s.data.len());
            let mut relocs = Vec::new();
            for (k, entry) in keep.iter().enumerate() {
                let start = entry * size;
                let out_base = k as u64 * size;
                let bytes = usize::try_from(start)
                    .ok()
                    .zip(usize::try_from(start + size).ok())
                    .and_then(|(a, b)| s.data.get(a..b))
                    .ok_or_else(|| Error::Malformed {
                        object: d.patched.label.clone(),
                        what: format!("{name}: entry {entry} lies outside the section"),
                    })?;
                data.extend_from_slice(bytes);
                for r in s.relocs_in(start, start + size) {
                    let width = crate::model::reloc_width(r.r_type).unwrap_or(0);
                    if r.offset - start + width > size {
                        return Err(Error::Malformed {
                            object: d.patched.label.clone(),
                            what: format!(
                                "{name}: the relocation at {:#x} straddles two {size}-byte entries",
                                r.offset
                            ),
                        });
                    }
                    let planned = self.plan_reloc(sec, r, out_base + (r.offset - start));
                    relocs.push(planned);
                }
            }
            self.plan.sections.push(PlanSection {
                name: name.to_string(),
                sh_type: s.sh_type,
                sh_flags: s.sh_flags & !u64::from(elf::SHF_GROUP),
                align: s.sh_addralign,
                entsize: s.sh_entsize,
                size: data.len() as u64,
                data,
                relocs,
            });
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
