//! The call graph of one or more relocatable objects (in practice a kernel's whole `vmlinux.o`)
//! for the livepatch consistency analysis: direct calls and tail calls between functions, whose
//! address is taken and by what, which functions livepatch can redirect (an ftrace entry, not
//! `__init`/`__exit`), and which call sites lie inside a loop of their caller.
//!
//! The objects need not be built with function sections: many functions then share `.text`,
//! calls between them may carry no relocation at all (the assembler resolved them, so the code
//! is decoded), and the calling function is found by address; a target through a section symbol
//! is resolved past the instruction. Names are borrowed from the objects, never copied;
//! functions, sites and references are held in flat vectors indexed by [`FuncId`].
//!
//! Functions are keyed by name, statics also by their STT_FILE. A function has an ftrace entry
//! when `__mcount_loc` lists it or it calls `__fentry__` at its entry. Its address is taken by
//! code other than a call or jump to it, and by data other than tracing, unwinding and
//! mitigation metadata. A call site lies in a loop when a backward branch of its caller spans it.
//! [`CallGraph::consistency`] is what the build asks about each changed function.

use std::collections::HashMap;

use serde::Serialize;

use crate::arch::{Flow, FlowInsn};
use crate::model::{Bind, Object, SecIdx, Side, SymKind};
use crate::names::is_prefix_symbol;

/// A function of the graph (an index into [`CallGraph::funcs`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct FuncId(pub u32);

impl FuncId {
    pub fn get(self) -> usize {
        self.0 as usize
    }
}

/// Where a function's code lives, as far as livepatch cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Placement {
    /// Ordinary text.
    Runtime,
    /// `__init` (`.init.text`): freed after boot.
    Init,
    /// `__exit` (`.exit.text`): discarded from a built-in kernel.
    Exit,
}

/// One function: a symbol (or several aliases at one address) of an executable section, or a
/// call target that none of the objects defines.
#[derive(Debug, Clone)]
pub struct Func<'d> {
    pub name: &'d str,
    /// Other function symbols at the same address.
    pub aliases: Vec<&'d str>,
    /// For a local (static) function: the STT_FILE symbol it follows, its source file.
    pub file: Option<&'d str>,
    pub global: bool,
    /// Defined in one of the objects (false: only called).
    pub defined: bool,
    /// Index of the defining object in the slice given to [`CallGraph::build`].
    pub object: usize,
    pub section: &'d str,
    /// Offset of the entry in its section.
    pub offset: u64,
    pub size: u64,
    /// It has an ftrace entry (an `__mcount_loc` entry or a `__fentry__` call at its entry).
    pub ftrace: bool,
    pub placement: Placement,
    /// An export table (`.export_symbol`, `__ksymtab*`) lists it: modules may call it.
    pub exported: bool,
}

/// How a call site transfers control.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CallKind {
    /// A call; the caller is on the stack while the callee runs.
    Call,
    /// A jump to the callee's entry (`return callee(...)` compiled as a jump).
    TailCall,
}

/// One direct call or tail call.
#[derive(Debug, Clone, Copy)]
pub struct CallSite<'d> {
    pub caller: FuncId,
    pub callee: FuncId,
    pub kind: CallKind,
    /// Section and offset of the branch instruction (the caller's section, or the section of a
    /// split-off `.cold` part of it).
    pub section: &'d str,
    pub offset: u64,
    /// The site lies inside a loop of the caller: some backward branch of the caller jumps
    /// from after the site to at or before it.
    pub in_loop: bool,
}

/// What uses a function's address other than as a call or jump target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Taker<'d> {
    /// The code of a function (e.g. `lea func(%rip)`, `mov $func`).
    Func(FuncId),
    /// A data section (e.g. an ops table); `symbol` is the data object there, if named.
    Data {
        section: &'d str,
        symbol: Option<&'d str>,
        offset: u64,
    },
    /// Code outside any function symbol (assembly entry code, alternative replacement code);
    /// it may be a call, but its caller is unknown. `label` is the nearest symbol before it.
    Code {
        section: &'d str,
        offset: u64,
        label: Option<&'d str>,
    },
}

impl Taker<'_> {
    /// What holds the address, for messages: "the code of f", "ops+0x8 in .data", "code at
    /// .altinstr_replacement+0x12 (after label)".
    pub fn describe(&self, graph: &CallGraph<'_>) -> String {
        match *self {
            Taker::Func(f) => format!("the code of {}", graph.func(f).name),
            Taker::Data {
                section,
                symbol,
                offset,
            } => match symbol {
                Some(sym) => format!("{sym} in {section}"),
                None => format!("{section}+{offset:#x}"),
            },
            Taker::Code {
                section,
                offset,
                label,
            } => match label {
                Some(l) => format!("code at {section}+{offset:#x} (after {l})"),
                None => format!("code at {section}+{offset:#x}"),
            },
        }
    }
}

/// One reference to a function's entry other than a call or jump from a known function.
#[derive(Debug, Clone, Copy)]
pub struct AddrRef<'d> {
    pub func: FuncId,
    pub by: Taker<'d>,
}

/// Why livepatch cannot redirect a function.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Unpatchable {
    /// No ftrace entry (`notrace`, `noinstr`, or assembly).
    NoFtrace,
    /// `__init`: gone after boot.
    Init,
    /// `__exit`: not in a built-in kernel.
    Exit,
    /// Not defined in the analysed objects.
    Undefined,
}

impl Unpatchable {
    pub fn describe(self) -> &'static str {
        match self {
            Unpatchable::NoFtrace => "no ftrace entry (notrace)",
            Unpatchable::Init => "__init",
            Unpatchable::Exit => "__exit",
            Unpatchable::Undefined => "not defined here",
        }
    }
}

/// All call sites from one caller to one callee, summed up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Edge {
    pub caller: FuncId,
    pub callee: FuncId,
    pub calls: u32,
    pub tail_calls: u32,
    /// How many of the sites lie inside a loop of the caller.
    pub loop_sites: u32,
}

impl Edge {
    /// The caller calls the callee from inside a loop.
    pub fn loops(&self) -> bool {
        self.loop_sites > 0
    }
    /// Every site is a tail call.
    pub fn tail_only(&self) -> bool {
        self.calls == 0
    }
}

/// A caller found by [`CallGraph::callers`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reached {
    pub func: FuncId,
    /// 1 for a direct caller of the queried function, 2 for a caller of one of those, ...
    pub depth: u32,
    /// The function it calls on the way to the queried one (the queried one at depth 1).
    pub via: FuncId,
    /// The sites from `func` to `via`.
    pub edge: Edge,
    /// `func`, `via`, ... down to the queried function.
    pub path: Vec<FuncId>,
}

/// What the build needs about one changed function: its direct callers, whether its address is
/// taken (indirect callers cannot be seen), and which callers loop over it.
#[derive(Debug, Clone)]
pub struct Consistency {
    pub func: FuncId,
    pub callers: Vec<Edge>,
    pub address_taken: bool,
    /// Direct callers with a call site to it inside a loop.
    pub looping_callers: Vec<FuncId>,
    pub exported: bool,
}

/// The call graph.
#[derive(Debug, Default)]
pub struct CallGraph<'d> {
    funcs: Vec<Func<'d>>,
    /// Sorted by (callee, caller, offset).
    sites: Vec<CallSite<'d>>,
    /// Per function, the range of `sites` it is the callee of (CSR offsets, len funcs + 1).
    callee_start: Vec<u32>,
    /// Indices into `sites`, sorted by (caller, callee, offset).
    by_caller: Vec<u32>,
    caller_start: Vec<u32>,
    /// Sorted by function.
    refs: Vec<AddrRef<'d>>,
    ref_start: Vec<u32>,
    /// Every function name and alias, sorted by name.
    names: Vec<(&'d str, FuncId)>,
    edges: usize,
}

/// Sections whose relocations are bookkeeping about code (tracing, unwinding, mitigations,
/// exception fixups), not uses of a function's address.
const METADATA_SECTIONS: &[&str] = &[
    "__mcount_loc",
    "__patchable_function_entries",
    ".orc_unwind_ip",
    ".orc_unwind",
    ".orc_header",
    ".call_sites",
    ".return_sites",
    ".retpoline_sites",
    ".ibt_endbr_seal",
    ".cfi_sites",
    ".kcfi_traps",
    "__ex_table",
    ".altinstructions",
    ".parainstructions",
    ".smp_locks",
    "__jump_table",
    "__bug_table",
    ".static_call_sites",
    "_kprobe_blacklist",
    "_error_injection_whitelist",
    "__tracepoints_ptrs",
];

fn is_metadata_section(name: &str) -> bool {
    METADATA_SECTIONS.contains(&name) || name.starts_with(".discard") || name.starts_with(".debug")
}

fn is_export_section(name: &str) -> bool {
    name == ".export_symbol" || name.starts_with("__ksymtab") || name.starts_with("___ksymtab")
}

fn placement_of(section: &str) -> Placement {
    if section == ".init.text" || section.starts_with(".init.text.") {
        Placement::Init
    } else if section == ".exit.text" || section.starts_with(".exit.text.") {
        Placement::Exit
    } else {
        Placement::Runtime
    }
}

/// `foo.cold` / `foo.cold.3` → `foo`: a compiler-split part that belongs to its parent.
fn cold_parent(name: &str) -> Option<&str> {
    let (parent, rest) = name.rsplit_once(".cold")?;
    let ok = rest.is_empty()
        || rest
            .strip_prefix('.')
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
    (ok && !parent.is_empty()).then_some(parent)
}

/// Whether a user's file name (`base.c`, `fs/proc/base.c`) names a function's STT_FILE.
pub fn file_matches(stt_file: &str, wanted: &str) -> bool {
    let tail = |long: &str, short: &str| {
        long.len() > short.len()
            && long.ends_with(short)
            && long.as_bytes()[long.len() - short.len() - 1] == b'/'
    };
    stt_file == wanted || tail(wanted, stt_file) || tail(stt_file, wanted)
}

/// A run of a section's code attributed to one function.
#[derive(Debug, Clone, Copy)]
struct Span {
    start: u64,
    end: u64,
    func: FuncId,
    /// The function's own entry span (not a `.cold` part of it).
    main: bool,
}

const NO_FUNC: u32 = u32::MAX;

/// How relocations against a symbol are treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SymClass {
    Normal,
    Fentry,
    Thunk,
}

/// Per-object indexes used while building.
struct ObjIndex {
    /// Per section: spans sorted by start.
    spans: Vec<Vec<Span>>,
    /// Per symbol: the function it names (defined or resolved), or `NO_FUNC`.
    sym_func: Vec<u32>,
    class: Vec<SymClass>,
}

fn span_at(spans: &[Span], off: u64) -> Option<&Span> {
    let i = spans.partition_point(|s| s.start <= off);
    let s = spans.get(i.checked_sub(1)?)?;
    (off < s.end).then_some(s)
}

struct Builder<'d, 'o, S: Side> {
    objects: &'o [&'o Object<'d, S>],
    idx: Vec<ObjIndex>,
    funcs: Vec<Func<'d>>,
    /// Global name → (function, weak).
    globals: HashMap<&'d str, (FuncId, bool)>,
    /// Called but defined nowhere.
    undefined: HashMap<&'d str, FuncId>,
    sites: Vec<CallSite<'d>>,
    refs: Vec<AddrRef<'d>>,
}

/// Where a relocation points: a function (and whether at its entry).
#[derive(Debug, Clone, Copy)]
struct Hit {
    func: FuncId,
    entry: bool,
}

/// A function symbol of an executable section, before symbols at one address are joined.
struct Cand<'d> {
    sym: usize,
    sec: usize,
    value: u64,
    size: u64,
    name: &'d str,
    file: Option<&'d str>,
    bind: Bind,
}

/// A `.cold` part (its symbols at one address), before it joins its parent.
struct Cold<'d> {
    sec: usize,
    value: u64,
    size: u64,
    name: &'d str,
    file: Option<&'d str>,
    syms: Vec<usize>,
}

/// The function symbols of an object's executable sections (prefix labels aside), with the
/// source file of each local one, sorted by address; at one address `.cold` parts last, and
/// globals before weak symbols before locals (the first names the function).
fn candidates<'d, S: Side>(obj: &Object<'d, S>) -> Vec<Cand<'d>> {
    let mut cands = Vec::new();
    let mut file = None;
    for (i, s) in obj.symbols.iter().enumerate() {
        if s.kind == SymKind::File {
            file = (!s.name.is_empty()).then_some(s.name);
            continue;
        }
        if s.kind != SymKind::Func || s.name.is_empty() || is_prefix_symbol(s.name) {
            continue;
        }
        let Some(sec) = s.section else { continue };
        if !obj.sec(sec).is_exec() {
            continue;
        }
        cands.push(Cand {
            sym: i,
            sec: sec.get(),
            value: s.value,
            size: s.size,
            name: s.name,
            file: (s.bind == Bind::Local).then_some(file).flatten(),
            bind: s.bind,
        });
    }
    let rank = |b: Bind| match b {
        Bind::Global => 0,
        Bind::Weak => 1,
        Bind::Local => 2,
    };
    cands.sort_by(|a, b| {
        (
            a.sec,
            a.value,
            cold_parent(a.name).is_some(),
            rank(a.bind),
            a.sym,
        )
            .cmp(&(
                b.sec,
                b.value,
                cold_parent(b.name).is_some(),
                rank(b.bind),
                b.sym,
            ))
    });
    cands
}

/// Sort each section's spans; a symbol without a size runs to the next one (assembly
/// without `.size`).
fn finish_spans<S: Side>(obj: &Object<'_, S>, spans: &mut [Vec<Span>]) {
    for (si, list) in spans.iter_mut().enumerate() {
        list.sort_by_key(|s| s.start);
        let sec_size = obj.sections[si].size;
        for k in 0..list.len() {
            if list[k].end == list[k].start {
                list[k].end = list.get(k + 1).map_or(sec_size, |n| n.start);
            }
        }
    }
}

/// How relocations against each symbol of an object are treated.
fn symbol_classes<S: Side>(obj: &Object<'_, S>) -> Vec<SymClass> {
    let fentry = obj.arch.fentry_symbol();
    obj.symbols
        .iter()
        .map(|s| {
            if s.name == fentry {
                SymClass::Fentry
            } else if !s.name.is_empty() && obj.arch.is_branch_thunk(s.name) {
                SymClass::Thunk
            } else {
                SymClass::Normal
            }
        })
        .collect()
}

impl<'d, 'o, S: Side> Builder<'d, 'o, S> {
    /// The functions of every object, each object's index of them, and the globals by name.
    fn collect_functions(&mut self) {
        let objects = self.objects;
        for (oi, obj) in objects.iter().enumerate() {
            let mut sym_func = vec![NO_FUNC; obj.symbols.len()];
            let mut spans: Vec<Vec<Span>> = vec![Vec::new(); obj.sections.len()];
            let colds = self.add_functions(oi, &candidates(obj), &mut sym_func, &mut spans);
            self.attach_colds(oi, colds, &mut sym_func, &mut spans);
            finish_spans(obj, &mut spans);
            self.idx.push(ObjIndex {
                spans,
                sym_func,
                class: symbol_classes(obj),
            });
        }
        // Undefined symbols bind to a global of another object.
        for (oi, obj) in objects.iter().enumerate() {
            for (i, s) in obj.symbols.iter().enumerate() {
                if s.undefined && !s.name.is_empty() {
                    if let Some(&(f, _)) = self.globals.get(s.name) {
                        self.idx[oi].sym_func[i] = f.0;
                    }
                }
            }
        }
    }

    /// One function per address of object `oi` (its other symbols there are aliases), except
    /// `.cold` parts, which are returned to join their parents.
    fn add_functions(
        &mut self,
        oi: usize,
        cands: &[Cand<'d>],
        sym_func: &mut [u32],
        spans: &mut [Vec<Span>],
    ) -> Vec<Cold<'d>> {
        let obj = self.objects[oi];
        let mut colds = Vec::new();
        let mut i = 0;
        while i < cands.len() {
            let mut j = i + 1;
            while j < cands.len()
                && cands[j].sec == cands[i].sec
                && cands[j].value == cands[i].value
            {
                j += 1;
            }
            let group = &cands[i..j];
            i = j;
            let first = &group[0];
            let size = group.iter().map(|c| c.size).max().unwrap_or(0);
            if cold_parent(first.name).is_some() {
                colds.push(Cold {
                    sec: first.sec,
                    value: first.value,
                    size,
                    name: first.name,
                    file: first.file,
                    syms: group.iter().map(|c| c.sym).collect(),
                });
                continue;
            }
            let section = obj.sections[first.sec].name;
            let id = FuncId(self.funcs.len() as u32);
            self.funcs.push(Func {
                name: first.name,
                aliases: group[1..]
                    .iter()
                    .map(|c| c.name)
                    .filter(|n| *n != first.name)
                    .collect(),
                file: first.file,
                global: first.bind != Bind::Local,
                defined: true,
                object: oi,
                section,
                offset: first.value,
                size,
                ftrace: false,
                placement: placement_of(section),
                exported: false,
            });
            for c in group {
                sym_func[c.sym] = id.0;
                if c.bind != Bind::Local {
                    let weak = c.bind == Bind::Weak;
                    match self.globals.get(c.name) {
                        Some(&(_, false)) => {}
                        Some(&(_, true)) if weak => {}
                        _ => {
                            self.globals.insert(c.name, (id, weak));
                        }
                    }
                }
            }
            spans[first.sec].push(Span {
                start: first.value,
                end: first.value.saturating_add(size),
                func: id,
                main: true,
            });
        }
        colds
    }

    /// `.cold` parts of object `oi` join their parent: a static of the same file, else a
    /// global; one without a parent is a function of its own.
    fn attach_colds(
        &mut self,
        oi: usize,
        colds: Vec<Cold<'d>>,
        sym_func: &mut [u32],
        spans: &mut [Vec<Span>],
    ) {
        let obj = self.objects[oi];
        let mut locals: HashMap<(Option<&str>, &str), FuncId> = HashMap::new();
        if !colds.is_empty() {
            for (k, f) in self.funcs.iter().enumerate() {
                if f.object == oi && !f.global {
                    locals.insert((f.file, f.name), FuncId(k as u32));
                }
            }
        }
        for c in colds {
            let parent = cold_parent(c.name).unwrap_or(c.name);
            let owner = locals
                .get(&(c.file, parent))
                .copied()
                .or_else(|| self.globals.get(parent).map(|g| g.0));
            let (func, main) = match owner {
                Some(f) => (f, false),
                None => {
                    let id = FuncId(self.funcs.len() as u32);
                    let section = obj.sections[c.sec].name;
                    self.funcs.push(Func {
                        name: c.name,
                        aliases: Vec::new(),
                        file: c.file,
                        global: false,
                        defined: true,
                        object: oi,
                        section,
                        offset: c.value,
                        size: c.size,
                        ftrace: false,
                        placement: placement_of(section),
                        exported: false,
                    });
                    (id, true)
                }
            };
            for s in c.syms {
                sym_func[s] = func.0;
            }
            spans[c.sec].push(Span {
                start: c.value,
                end: c.value.saturating_add(c.size),
                func,
                main,
            });
        }
    }

    /// The function covering `off` in section `sec` of object `oi`.
    fn hit_in(&self, oi: usize, sec: SecIdx<S>, off: i64, pad: bool) -> Option<Hit> {
        let off = u64::try_from(off).ok()?;
        let span = span_at(&self.idx[oi].spans[sec.get()], off)?;
        let mut entry = span.main && off == span.start;
        if pad && span.main && !entry {
            let obj = self.objects[oi];
            let code = obj.sec(sec).data;
            let start = usize::try_from(span.start).ok()?;
            let pad_len = obj.arch.entry_pad_len(code.get(start..).unwrap_or(&[]));
            entry = pad_len > 0 && off == span.start + pad_len;
        }
        Some(Hit {
            func: span.func,
            entry,
        })
    }

    /// Where relocation `r` of object `oi` points, the CPU adding the field to `bias` past it.
    /// `branch`: a call or jump, which may name a function no object defines.
    fn resolve(
        &mut self,
        oi: usize,
        r: &crate::model::Reloc<S>,
        bias: i64,
        branch: bool,
    ) -> Option<Hit> {
        let obj = self.objects[oi];
        let sym = obj.sym(r.sym);
        let delta = r.addend.wrapping_add(bias);
        if let Some(sec) = sym.section {
            if sym.kind == SymKind::Section {
                return self.hit_in(oi, sec, delta, branch);
            }
            let f = self.idx[oi].sym_func[r.sym.get()];
            if f != NO_FUNC && delta == 0 {
                // The common case: a function symbol itself.
                let func = FuncId(f);
                let main = self.funcs[func.get()].offset == sym.value
                    && self.funcs[func.get()].section == obj.sec(sec).name;
                if main {
                    return Some(Hit { func, entry: true });
                }
            }
            return self.hit_in(oi, sec, (sym.value as i64).wrapping_add(delta), branch);
        }
        if !sym.undefined || sym.name.is_empty() || delta != 0 {
            return None;
        }
        let f = self.idx[oi].sym_func[r.sym.get()];
        if f != NO_FUNC {
            return Some(Hit {
                func: FuncId(f),
                entry: true,
            });
        }
        if !branch {
            return None;
        }
        let id = match self.undefined.get(sym.name) {
            Some(&id) => id,
            None => {
                let id = FuncId(self.funcs.len() as u32);
                self.funcs.push(Func {
                    name: sym.name,
                    aliases: Vec::new(),
                    file: None,
                    global: true,
                    defined: false,
                    object: oi,
                    section: "",
                    offset: 0,
                    size: 0,
                    ftrace: false,
                    placement: Placement::Runtime,
                    exported: false,
                });
                self.undefined.insert(sym.name, id);
                id
            }
        };
        self.idx[oi].sym_func[r.sym.get()] = id.0;
        Some(Hit {
            func: id,
            entry: true,
        })
    }

    fn ftrace_from_mcount_loc(&mut self) {
        for (oi, obj) in self.objects.iter().enumerate() {
            let window = obj.arch.fentry_window();
            for sec in obj.section_indices() {
                if !obj.arch.ftrace_site_sections().contains(&obj.sec(sec).name) {
                    continue;
                }
                for r in &obj.sec(sec).relocs {
                    let sym = obj.sym(r.sym);
                    let Some(tsec) = sym.section else { continue };
                    let Ok(at) = u64::try_from((sym.value as i64).wrapping_add(r.addend)) else {
                        continue;
                    };
                    // Sites before the symbol (arm64's `=4,2` nops) belong to the function after.
                    let before = obj.arch.fentry_before();
                    let spans = &self.idx[oi].spans[tsec.get()];
                    let span = span_at(spans, at)
                        .filter(|s| s.main && at - s.start < window)
                        .or_else(|| {
                            (before > 0)
                                .then(|| span_at(spans, at.saturating_add(before)))
                                .flatten()
                                .filter(|s| s.main && s.start > at && s.start - at <= before)
                        });
                    if let Some(span) = span {
                        self.funcs[span.func.get()].ftrace = true;
                    }
                }
            }
        }
    }

    fn scan_code(&mut self) {
        let mut insns: Vec<FlowInsn> = Vec::new();
        let mut loops: Vec<(u64, u64)> = Vec::new();
        for oi in 0..self.objects.len() {
            let obj = self.objects[oi];
            for sec in obj.section_indices() {
                let section = obj.sec(sec);
                if !section.is_exec() || section.data.is_empty() {
                    continue;
                }
                // A copy: resolving branches needs the index of this very section too.
                let spans = self.idx[oi].spans[sec.get()].clone();
                let relocs = &section.relocs;
                let mut cursor = 0;
                for (k, span) in spans.iter().enumerate() {
                    let end = spans.get(k + 1).map_or(span.end, |n| n.start.min(span.end));
                    let (Ok(s), Ok(e)) = (usize::try_from(span.start), usize::try_from(end)) else {
                        continue;
                    };
                    let Some(code) = section.data.get(s..e.max(s)) else {
                        continue;
                    };
                    while cursor < relocs.len() && relocs[cursor].offset < span.start {
                        self.outside_function(oi, sec, &relocs[cursor]);
                        cursor += 1;
                    }
                    insns.clear();
                    loops.clear();
                    obj.arch.decode_flow(code, span.start, &mut insns);
                    let first_site = self.sites.len();
                    for insn in &insns {
                        let mut branch_relocated = false;
                        while cursor < relocs.len() && relocs[cursor].offset < insn.end {
                            let r = &relocs[cursor];
                            cursor += 1;
                            if r.offset < insn.start {
                                continue;
                            }
                            if insn.flow != Flow::Other && r.offset == insn.field {
                                branch_relocated = true;
                            }
                            self.reloc_in_code(oi, sec, span, insn, r);
                        }
                        if insn.flow == Flow::Other || branch_relocated {
                            continue;
                        }
                        // A branch the assembler resolved: within this section.
                        let t = insn.target;
                        if t >= span.start && t < end {
                            if insn.flow == Flow::Call {
                                // Recursion, or a call to a label (not a loop either way).
                                if span.main && t == span.start {
                                    let hit = Hit {
                                        func: span.func,
                                        entry: true,
                                    };
                                    self.branch(span, sec, insn, hit);
                                }
                            } else if t <= insn.start {
                                loops.push((t, insn.start));
                            }
                            continue;
                        }
                        let Some(hit) = self.hit_in(oi, sec, t as i64, true) else {
                            continue;
                        };
                        self.branch(span, sec, insn, hit);
                    }
                    // Relocations past the decoded code (a truncated last instruction).
                    while cursor < relocs.len() && relocs[cursor].offset < end {
                        cursor += 1;
                    }
                    for site in &mut self.sites[first_site..] {
                        site.in_loop = loops
                            .iter()
                            .any(|&(t, b)| t <= site.offset && site.offset < b);
                    }
                }
                while cursor < relocs.len() {
                    self.outside_function(oi, sec, &relocs[cursor]);
                    cursor += 1;
                }
            }
        }
    }

    /// A direct branch of `span`'s function at `insn` reaching `hit`.
    fn branch(&mut self, span: &Span, sec: SecIdx<S>, insn: &FlowInsn, hit: Hit) {
        let caller = span.func;
        let kind = match insn.flow {
            Flow::Call => CallKind::Call,
            Flow::Jump | Flow::CondJump => CallKind::TailCall,
            Flow::Other => return,
        };
        // Jumps within the function (or into its own split parts) are not calls; a call of
        // itself is recursion.
        if hit.func == caller && kind == CallKind::TailCall {
            return;
        }
        if !hit.entry {
            return;
        }
        let section = self.objects[self.funcs[caller.get()].object].sec(sec).name;
        self.sites.push(CallSite {
            caller,
            callee: hit.func,
            kind,
            section,
            offset: insn.start,
            in_loop: false,
        });
    }

    fn reloc_in_code(
        &mut self,
        oi: usize,
        sec: SecIdx<S>,
        span: &Span,
        insn: &FlowInsn,
        r: &crate::model::Reloc<S>,
    ) {
        let arch = self.objects[oi].arch;
        match self.idx[oi].class[r.sym.get()] {
            SymClass::Fentry => {
                if span.main && insn.start - span.start < arch.fentry_window() {
                    self.funcs[span.func.get()].ftrace = true;
                }
                return;
            }
            SymClass::Thunk => return,
            SymClass::Normal => {}
        }
        let bias = arch.pcrel_bias(r.r_type, r.offset, Some((insn.start, insn.end)));
        if insn.flow != Flow::Other && r.offset == insn.field {
            if let Some(hit) = self.resolve(oi, r, bias, true) {
                self.branch(span, sec, insn, hit);
            }
            return;
        }
        if let Some(hit) = self.resolve(oi, r, bias, false) {
            if hit.entry {
                self.refs.push(AddrRef {
                    func: hit.func,
                    by: Taker::Func(span.func),
                });
            }
        }
    }

    /// A relocation in code that no function symbol covers.
    fn outside_function(&mut self, oi: usize, sec: SecIdx<S>, r: &crate::model::Reloc<S>) {
        if self.idx[oi].class[r.sym.get()] != SymClass::Normal {
            return;
        }
        // Not decoded: the machine says where a PC-relative field counts from without the
        // instruction (x86: the field ends it, as in call, jmp and RIP-relative operands
        // without an immediate).
        let bias = self.objects[oi].arch.pcrel_bias(r.r_type, r.offset, None);
        if let Some(hit) = self.resolve(oi, r, bias, false) {
            if hit.entry {
                self.refs.push(AddrRef {
                    func: hit.func,
                    by: Taker::Code {
                        section: self.objects[oi].sec(sec).name,
                        offset: r.offset,
                        label: label_before(self.objects[oi], sec, r.offset),
                    },
                });
            }
        }
    }

    fn scan_data(&mut self) {
        for oi in 0..self.objects.len() {
            let obj = self.objects[oi];
            for sec in obj.section_indices() {
                let section = obj.sec(sec);
                if !section.is_alloc() || section.is_exec() || is_metadata_section(section.name) {
                    continue;
                }
                let export = is_export_section(section.name);
                for r in &section.relocs {
                    if self.idx[oi].class[r.sym.get()] != SymClass::Normal {
                        continue;
                    }
                    let Some(hit) = self.resolve(oi, r, 0, false) else {
                        continue;
                    };
                    if !hit.entry {
                        continue;
                    }
                    if export {
                        self.funcs[hit.func.get()].exported = true;
                        continue;
                    }
                    let symbol = data_symbol_at(obj, sec, r.offset);
                    self.refs.push(AddrRef {
                        func: hit.func,
                        by: Taker::Data {
                            section: section.name,
                            symbol,
                            offset: r.offset,
                        },
                    });
                }
            }
        }
    }
}

/// The named data object of `sec` covering `off` (binary search; `sec.syms` is sorted by value).
fn data_symbol_at<'d, S: Side>(obj: &Object<'d, S>, sec: SecIdx<S>, off: u64) -> Option<&'d str> {
    let syms = &obj.sec(sec).syms;
    let i = syms.partition_point(|&s| obj.sym(s).value <= off);
    // Nested or zero-size labels may sit after the covering object: look a few back.
    syms[..i].iter().rev().take(8).find_map(|&s| {
        let sym = obj.sym(s);
        (off < sym.value.saturating_add(sym.size.max(1))).then_some(sym.name)
    })
}

/// The nearest named symbol at or before `off` in `sec` (labels of assembly code).
fn label_before<'d, S: Side>(obj: &Object<'d, S>, sec: SecIdx<S>, off: u64) -> Option<&'d str> {
    let syms = &obj.sec(sec).syms;
    let i = syms.partition_point(|&s| obj.sym(s).value <= off);
    syms[..i]
        .iter()
        .rev()
        .map(|&s| obj.sym(s).name)
        .find(|n| !is_prefix_symbol(n))
}

fn csr(len: usize, keys: impl Iterator<Item = usize>) -> Vec<u32> {
    let mut start = vec![0u32; len + 1];
    for k in keys {
        start[k + 1] += 1;
    }
    for i in 0..len {
        start[i + 1] += start[i];
    }
    start
}

impl<'d> CallGraph<'d> {
    /// Build the graph of `objects` (linked or not; globals named in one and defined in another
    /// are joined by name).
    pub fn build<S: Side>(objects: &[&Object<'d, S>]) -> CallGraph<'d> {
        let mut b = Builder {
            objects,
            idx: Vec::with_capacity(objects.len()),
            funcs: Vec::new(),
            globals: HashMap::new(),
            undefined: HashMap::new(),
            sites: Vec::new(),
            refs: Vec::new(),
        };
        b.collect_functions();
        b.ftrace_from_mcount_loc();
        b.scan_code();
        b.scan_data();
        let Builder {
            funcs,
            mut sites,
            mut refs,
            ..
        } = b;
        let n = funcs.len();
        sites.sort_by_key(|s| (s.callee, s.caller, s.offset));
        let callee_start = csr(n, sites.iter().map(|s| s.callee.get()));
        let mut by_caller: Vec<u32> = (0..sites.len() as u32).collect();
        by_caller.sort_by_key(|&i| {
            let s = &sites[i as usize];
            (s.caller, s.callee, s.offset)
        });
        let caller_start = csr(n, sites.iter().map(|s| s.caller.get()));
        let edges = by_caller
            .windows(2)
            .filter(|w| {
                let (a, b) = (&sites[w[0] as usize], &sites[w[1] as usize]);
                (a.caller, a.callee) != (b.caller, b.callee)
            })
            .count()
            + usize::from(!by_caller.is_empty());
        refs.sort_by_key(|r| r.func);
        let ref_start = csr(n, refs.iter().map(|r| r.func.get()));
        let mut names: Vec<(&'d str, FuncId)> = Vec::with_capacity(n);
        for (i, f) in funcs.iter().enumerate() {
            names.push((f.name, FuncId(i as u32)));
            names.extend(f.aliases.iter().map(|a| (*a, FuncId(i as u32))));
        }
        names.sort_unstable();
        names.dedup();
        CallGraph {
            funcs,
            sites,
            callee_start,
            by_caller,
            caller_start,
            refs,
            ref_start,
            names,
            edges,
        }
    }

    pub fn funcs(&self) -> &[Func<'d>] {
        &self.funcs
    }
    pub fn func(&self, f: FuncId) -> &Func<'d> {
        &self.funcs[f.get()]
    }
    /// Distinct (caller, callee) pairs.
    pub fn edge_count(&self) -> usize {
        self.edges
    }
    /// Call and tail-call sites.
    pub fn site_count(&self) -> usize {
        self.sites.len()
    }

    /// Functions named `name` (a symbol name or alias); with `file`, only the statics of that
    /// file (`base.c` or `fs/proc/base.c`), or the globals of that name if the file has none.
    /// A name without an exact match also finds its compiler clones (`name.isra.0`, ...).
    pub fn lookup(&self, name: &str, file: Option<&str>) -> Vec<FuncId> {
        let lo = self.names.partition_point(|(n, _)| *n < name);
        let mut out: Vec<FuncId> = self.names[lo..]
            .iter()
            .take_while(|(n, _)| *n == name)
            .map(|&(_, f)| f)
            .collect();
        if out.is_empty() && !name.is_empty() {
            let prefix = format!("{name}.");
            let lo = self.names.partition_point(|(n, _)| *n < prefix.as_str());
            out = self.names[lo..]
                .iter()
                .take_while(|(n, _)| n.starts_with(&prefix))
                .filter(|(n, _)| cold_parent(n).is_none())
                .map(|&(_, f)| f)
                .collect();
        }
        if let Some(file) = file {
            let statics: Vec<FuncId> = out
                .iter()
                .copied()
                .filter(|&f| self.func(f).file.is_some_and(|sf| file_matches(sf, file)))
                .collect();
            out = if statics.is_empty() {
                out.into_iter().filter(|&f| self.func(f).global).collect()
            } else {
                statics
            };
        }
        out.sort_unstable();
        out.dedup();
        out
    }

    /// The function a symbol `name` (or an alias) defines at `offset` of `section`.
    pub fn defined_at(&self, name: &str, section: &str, offset: u64) -> Option<FuncId> {
        let lo = self.names.partition_point(|(n, _)| *n < name);
        self.names[lo..]
            .iter()
            .take_while(|(n, _)| *n == name)
            .map(|&(_, f)| f)
            .find(|&f| {
                let func = self.func(f);
                func.defined && func.section == section && func.offset == offset
            })
    }

    /// [`lookup`](Self::lookup) for `NAME` or `FILE:NAME`.
    pub fn find(&self, spec: &str) -> Vec<FuncId> {
        match spec.rsplit_once(':') {
            Some((file, name)) if !file.is_empty() => self.lookup(name, Some(file)),
            _ => self.lookup(spec.trim_start_matches(':'), None),
        }
    }

    /// The call sites whose callee is `f`, sorted by caller.
    pub fn sites_to(&self, f: FuncId) -> &[CallSite<'d>] {
        let (a, b) = (self.callee_start[f.get()], self.callee_start[f.get() + 1]);
        &self.sites[a as usize..b as usize]
    }

    /// The call sites in `f` (and its `.cold` parts), sorted by callee.
    pub fn sites_from(&self, f: FuncId) -> impl Iterator<Item = &CallSite<'d>> {
        let (a, b) = (self.caller_start[f.get()], self.caller_start[f.get() + 1]);
        self.by_caller[a as usize..b as usize]
            .iter()
            .map(|&i| &self.sites[i as usize])
    }

    /// Direct callers of `f`, one edge per caller.
    pub fn direct_callers(&self, f: FuncId) -> Vec<Edge> {
        summarize(self.sites_to(f).iter())
    }

    /// Direct callees of `f`, one edge per callee.
    pub fn callees(&self, f: FuncId) -> Vec<Edge> {
        summarize(self.sites_from(f))
    }

    /// The sites from `caller` to `callee`.
    pub fn edge(&self, caller: FuncId, callee: FuncId) -> Option<Edge> {
        let sites = self.sites_to(callee);
        let lo = sites.partition_point(|s| s.caller < caller);
        let run = sites[lo..].iter().take_while(|s| s.caller == caller);
        summarize(run).into_iter().next()
    }

    /// `caller` calls `callee` from inside one of its loops.
    pub fn loops_over(&self, caller: FuncId, callee: FuncId) -> bool {
        self.edge(caller, callee).is_some_and(|e| e.loops())
    }

    /// Callers of `f` up to `max_depth` levels (breadth first: each caller once, at the
    /// smallest depth it is reached at), ordered by depth, then name.
    pub fn callers(&self, f: FuncId, max_depth: u32) -> Vec<Reached> {
        let mut seen = vec![false; self.funcs.len()];
        seen[f.get()] = true;
        let mut out: Vec<Reached> = Vec::new();
        let mut frontier = vec![(f, vec![f])];
        for depth in 1..=max_depth {
            let mut next = Vec::new();
            let mut level = Vec::new();
            for (g, path) in &frontier {
                for edge in self.direct_callers(*g) {
                    if seen[edge.caller.get()] {
                        continue;
                    }
                    seen[edge.caller.get()] = true;
                    let mut p = Vec::with_capacity(path.len() + 1);
                    p.push(edge.caller);
                    p.extend_from_slice(path);
                    level.push(Reached {
                        func: edge.caller,
                        depth,
                        via: *g,
                        edge,
                        path: p.clone(),
                    });
                    next.push((edge.caller, p));
                }
            }
            level.sort_by(|a, b| {
                self.func(a.func)
                    .name
                    .cmp(self.func(b.func).name)
                    .then(a.func.cmp(&b.func))
            });
            out.extend(level);
            if next.is_empty() {
                break;
            }
            frontier = next;
        }
        out
    }

    /// Every reference to `f`'s entry that is not a call or jump from a known function.
    pub fn refs_to(&self, f: FuncId) -> &[AddrRef<'d>] {
        let (a, b) = (self.ref_start[f.get()], self.ref_start[f.get() + 1]);
        &self.refs[a as usize..b as usize]
    }

    /// Whether code or data of the objects use `f`'s address (callers through that pointer
    /// are not in the graph).
    pub fn address_taken(&self, f: FuncId) -> bool {
        self.refs_to(f)
            .iter()
            .any(|r| !matches!(r.by, Taker::Code { .. }))
    }

    /// Why livepatch cannot redirect `f`; empty when it can.
    pub fn unpatchable(&self, f: FuncId) -> Vec<Unpatchable> {
        let func = self.func(f);
        let mut why = Vec::new();
        if !func.defined {
            why.push(Unpatchable::Undefined);
            return why;
        }
        if !func.ftrace {
            why.push(Unpatchable::NoFtrace);
        }
        match func.placement {
            Placement::Init => why.push(Unpatchable::Init),
            Placement::Exit => why.push(Unpatchable::Exit),
            Placement::Runtime => {}
        }
        why
    }

    pub fn patchable(&self, f: FuncId) -> bool {
        self.unpatchable(f).is_empty()
    }

    /// For a changed function: its direct callers, whether its address is taken, and which
    /// callers call it inside a loop.
    pub fn consistency(&self, f: FuncId) -> Consistency {
        let callers = self.direct_callers(f);
        let looping_callers = callers
            .iter()
            .filter(|e| e.loops())
            .map(|e| e.caller)
            .collect();
        Consistency {
            func: f,
            address_taken: self.address_taken(f),
            exported: self.func(f).exported,
            callers,
            looping_callers,
        }
    }

    /// `name` (with `file` for a static) as [`consistency`](Self::consistency) sees it, for
    /// every function of that name.
    pub fn consistency_of(&self, name: &str, file: Option<&str>) -> Vec<Consistency> {
        self.lookup(name, file)
            .into_iter()
            .map(|f| self.consistency(f))
            .collect()
    }
}

/// Sum up sites into edges; the sites of one (caller, callee) pair must be contiguous.
fn summarize<'a, 'd: 'a>(sites: impl Iterator<Item = &'a CallSite<'d>>) -> Vec<Edge> {
    let mut out: Vec<Edge> = Vec::new();
    for s in sites {
        let mut edge = match out.last() {
            Some(e) if (e.caller, e.callee) == (s.caller, s.callee) => *e,
            _ => {
                out.push(Edge {
                    caller: s.caller,
                    callee: s.callee,
                    calls: 0,
                    tail_calls: 0,
                    loop_sites: 0,
                });
                out[out.len() - 1]
            }
        };
        match s.kind {
            CallKind::Call => edge.calls += 1,
            CallKind::TailCall => edge.tail_calls += 1,
        }
        edge.loop_sites += u32::from(s.in_loop);
        let last = out.len() - 1;
        out[last] = edge;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Orig;
    use object::write::{self, Relocation, SectionId, SymbolId, SymbolSection};
    use object::{
        elf, Architecture, BinaryFormat, Endianness, RelocationFlags, SectionKind, SymbolFlags,
        SymbolKind, SymbolScope,
    };

    struct Obj(write::Object<'static>);

    impl Obj {
        fn new() -> Self {
            Obj(write::Object::new(
                BinaryFormat::Elf,
                Architecture::X86_64,
                Endianness::Little,
            ))
        }
        fn section(&mut self, name: &str, kind: SectionKind, data: &[u8]) -> SectionId {
            let s = self
                .0
                .add_section(Vec::new(), name.as_bytes().to_vec(), kind);
            self.0.append_section_data(s, data, 16);
            s
        }
        fn file(&mut self, name: &str) {
            self.0.add_symbol(write::Symbol {
                name: name.as_bytes().to_vec(),
                value: 0,
                size: 0,
                kind: SymbolKind::File,
                scope: SymbolScope::Compilation,
                weak: false,
                section: SymbolSection::None,
                flags: SymbolFlags::None,
            });
        }
        fn sym(
            &mut self,
            name: &str,
            sec: Option<SectionId>,
            value: u64,
            size: u64,
            kind: SymbolKind,
            global: bool,
        ) -> SymbolId {
            self.0.add_symbol(write::Symbol {
                name: name.as_bytes().to_vec(),
                value,
                size,
                kind,
                scope: if global {
                    SymbolScope::Linkage
                } else {
                    SymbolScope::Compilation
                },
                weak: false,
                section: sec.map_or(SymbolSection::Undefined, SymbolSection::Section),
                flags: SymbolFlags::None,
            })
        }
        fn reloc(
            &mut self,
            sec: SectionId,
            offset: u64,
            symbol: SymbolId,
            addend: i64,
            r_type: u32,
        ) {
            self.0
                .add_relocation(
                    sec,
                    Relocation {
                        offset,
                        symbol,
                        addend,
                        flags: RelocationFlags::Elf { r_type },
                    },
                )
                .unwrap();
        }
    }

    /// `.text` (no function sections) of one.c:
    /// f (global, 0x00): endbr64; call __fentry__; call g (resolved); loop: call h; jne loop;
    ///   mov $k, %rax; jmp k (through the section symbol); ret
    /// g (static, 0x40): ret — no ftrace entry
    /// h (global, 0x50): call __fentry__; ret
    /// k (global, 0x60): ret — traced through `__mcount_loc`
    /// two.c: a static g of its own in `.text.two`, calling h.
    /// `.init.text`: i (global) calls g of one.c by symbol.
    /// `.rodata`: ops (16 bytes) holding &h at 8; `.export_symbol` holding &k.
    fn sample() -> Vec<u8> {
        let mut o = Obj::new();
        let mut text = vec![0xcc; 0x70];
        let f: &[u8] = &[
            0xf3, 0x0f, 0x1e, 0xfa, // endbr64
            0xe8, 0, 0, 0, 0, // 0x04 call __fentry__
            0xe8, 0x32, 0, 0, 0, // 0x09 call g (0x0e + 0x32 = 0x40)
            0xe8, 0, 0, 0, 0, // 0x0e call h
            0x75, 0xf9, // 0x13 jne 0x0e
            0x48, 0xc7, 0xc0, 0, 0, 0, 0, // 0x15 mov $k, %rax
            0xe9, 0, 0, 0, 0,    // 0x1c jmp k
            0xc3, // 0x21 ret
        ];
        text[..f.len()].copy_from_slice(f);
        text[0x40] = 0xc3;
        text[0x50..0x56].copy_from_slice(&[0xe8, 0, 0, 0, 0, 0xc3]);
        text[0x60] = 0xc3;
        let t = o.section(".text", SectionKind::Text, &text);
        let two = o.section(".text.two", SectionKind::Text, &[0xe8, 0, 0, 0, 0, 0xc3]);
        let init = o.section(".init.text", SectionKind::Text, &[0xe8, 0, 0, 0, 0, 0xc3]);
        let ro = o.section(".rodata", SectionKind::ReadOnlyData, &[0; 16]);
        let ex = o.section(".export_symbol", SectionKind::ReadOnlyData, &[0; 8]);
        let mc = o.section("__mcount_loc", SectionKind::ReadOnlyData, &[0; 8]);
        o.file("one.c");
        let g1 = o.sym("g", Some(t), 0x40, 1, SymbolKind::Text, false);
        o.file("two.c");
        o.sym("g", Some(two), 0, 6, SymbolKind::Text, false);
        o.sym("f", Some(t), 0, 0x22, SymbolKind::Text, true);
        let h = o.sym("h", Some(t), 0x50, 6, SymbolKind::Text, true);
        let k = o.sym("k", Some(t), 0x60, 1, SymbolKind::Text, true);
        o.sym("i", Some(init), 0, 6, SymbolKind::Text, true);
        o.sym("ops", Some(ro), 0, 16, SymbolKind::Data, true);
        let fentry = o.sym("__fentry__", None, 0, 0, SymbolKind::Text, true);
        let tsym = o.0.section_symbol(t);
        let plt = elf::R_X86_64_PLT32;
        o.reloc(t, 0x05, fentry, -4, plt);
        o.reloc(t, 0x0f, h, -4, plt);
        o.reloc(t, 0x18, k, 0, elf::R_X86_64_32S);
        o.reloc(t, 0x1d, tsym, 0x60 - 4, plt);
        o.reloc(t, 0x51, fentry, -4, plt);
        o.reloc(two, 1, h, -4, plt);
        o.reloc(init, 1, g1, -4, plt);
        o.reloc(ro, 8, h, 0, elf::R_X86_64_64);
        o.reloc(ex, 0, k, 0, elf::R_X86_64_64);
        o.reloc(mc, 0, tsym, 0x60, elf::R_X86_64_64);
        o.0.write().unwrap()
    }

    fn one(g: &CallGraph, spec: &str) -> FuncId {
        let found = g.find(spec);
        assert_eq!(found.len(), 1, "{spec}: {found:?}");
        found[0]
    }

    fn names(g: &CallGraph, ids: impl IntoIterator<Item = FuncId>) -> Vec<String> {
        let mut v: Vec<String> = ids
            .into_iter()
            .map(|f| match g.func(f).file {
                Some(file) => format!("{file}:{}", g.func(f).name),
                None => g.func(f).name.to_string(),
            })
            .collect();
        v.sort();
        v
    }

    #[test]
    fn calls_tail_calls_loops_and_statics_by_file() {
        let bytes = sample();
        let obj = Object::<Orig>::parse("sample.o", &bytes).unwrap();
        let g = CallGraph::build(&[&obj]);
        let (f, h, k) = (one(&g, "f"), one(&g, "h"), one(&g, "k"));
        assert_eq!(g.find("g").len(), 2);
        let g1 = one(&g, "one.c:g");
        let g2 = one(&g, "sub/two.c:g");
        assert_ne!(g1, g2);

        // f calls g with no relocation (the assembler resolved it), h by symbol.
        let callees = g.callees(f);
        assert_eq!(
            names(&g, callees.iter().map(|e| e.callee)),
            ["h", "k", "one.c:g"]
        );
        let to_h = g.edge(f, h).unwrap();
        assert_eq!((to_h.calls, to_h.tail_calls, to_h.loop_sites), (1, 0, 1));
        assert!(g.loops_over(f, h));
        assert!(!g.loops_over(f, g1));
        let to_k = g.edge(f, k).unwrap();
        assert!(to_k.tail_only());
        // __fentry__ is not a callee.
        assert!(g.find("__fentry__").is_empty());

        assert_eq!(
            names(&g, g.direct_callers(h).iter().map(|e| e.caller)),
            ["f", "two.c:g"]
        );
        assert_eq!(
            names(&g, g.direct_callers(g1).iter().map(|e| e.caller)),
            ["f", "i"]
        );
        assert!(g.direct_callers(g2).is_empty());
        assert_eq!(g.edge_count(), 5);
        assert_eq!(g.site_count(), 5);

        // f and i call g1; nothing calls f or i, so deeper levels add nothing.
        let reached = g.callers(g1, 3);
        assert_eq!(reached.len(), 2);
        assert!(reached
            .iter()
            .all(|r| r.depth == 1 && r.via == g1 && r.path == vec![r.func, g1]));
    }

    #[test]
    fn patchability_address_taken_and_exports() {
        let bytes = sample();
        let obj = Object::<Orig>::parse("sample.o", &bytes).unwrap();
        let g = CallGraph::build(&[&obj]);
        let (f, h, k, i) = (one(&g, "f"), one(&g, "h"), one(&g, "k"), one(&g, "i"));
        let g1 = one(&g, "one.c:g");
        assert!(g.patchable(h));
        assert!(g.patchable(f));
        assert!(g.patchable(k), "traced through __mcount_loc");
        assert_eq!(g.unpatchable(g1), [Unpatchable::NoFtrace]);
        assert_eq!(g.unpatchable(i), [Unpatchable::NoFtrace, Unpatchable::Init]);

        // h: in an ops table; k: used by f's code (not only jumped to) and exported.
        assert!(g.address_taken(h));
        assert_eq!(
            g.refs_to(h).iter().map(|r| r.by).collect::<Vec<_>>(),
            [Taker::Data {
                section: ".rodata",
                symbol: Some("ops"),
                offset: 8
            }]
        );
        assert_eq!(
            g.refs_to(k).iter().map(|r| r.by).collect::<Vec<_>>(),
            [Taker::Func(f)]
        );
        assert!(g.func(k).exported);
        assert!(!g.address_taken(f) && !g.address_taken(g1));

        let c = g.consistency_of("h", None);
        assert_eq!(c.len(), 1);
        assert!(c[0].address_taken);
        assert_eq!(c[0].looping_callers, [f]);
        assert_eq!(c[0].callers.len(), 2);
    }

    #[test]
    fn objects_are_joined_by_global_names() {
        // The caller's object only names h; the callee's object defines it.
        let mut a = Obj::new();
        let t = a.section(".text", SectionKind::Text, &[0xe8, 0, 0, 0, 0, 0xc3]);
        a.sym("caller", Some(t), 0, 6, SymbolKind::Text, true);
        let h = a.sym("h", None, 0, 0, SymbolKind::Text, true);
        a.reloc(t, 1, h, -4, elf::R_X86_64_PLT32);
        let a = a.0.write().unwrap();
        let mut b = Obj::new();
        let t = b.section(".text", SectionKind::Text, &[0xc3]);
        b.sym("h", Some(t), 0, 1, SymbolKind::Text, true);
        let b = b.0.write().unwrap();
        let (oa, ob) = (
            Object::<Orig>::parse("a.o", &a).unwrap(),
            Object::<Orig>::parse("b.o", &b).unwrap(),
        );
        let joined = CallGraph::build(&[&oa, &ob]);
        let h = one(&joined, "h");
        assert!(joined.func(h).defined);
        assert_eq!(joined.func(h).object, 1);
        assert_eq!(
            names(&joined, joined.direct_callers(h).iter().map(|e| e.caller)),
            ["caller"]
        );
        // Alone, the caller's object still knows h as an undefined callee.
        let alone = CallGraph::build(&[&oa]);
        let h = one(&alone, "h");
        assert_eq!(alone.unpatchable(h), [Unpatchable::Undefined]);
        assert_eq!(alone.direct_callers(h).len(), 1);
    }

    #[test]
    fn cold_parts_belong_to_their_parent_and_recursion_is_a_self_edge() {
        // foo: call foo (resolved: recursion); jne foo.cold; ret.
        // foo.cold (in .text.unlikely): call bar; jmp back into foo.
        let mut o = Obj::new();
        let text = o.section(
            ".text",
            SectionKind::Text,
            &[0xe8, 0xfb, 0xff, 0xff, 0xff, 0x0f, 0x85, 0, 0, 0, 0, 0xc3],
        );
        let cold = o.section(
            ".text.unlikely",
            SectionKind::Text,
            &[0xe8, 0, 0, 0, 0, 0xe9, 0, 0, 0, 0],
        );
        o.file("foo.c");
        o.sym("foo.cold", Some(cold), 0, 10, SymbolKind::Text, false);
        let foo = o.sym("foo", Some(text), 0, 12, SymbolKind::Text, true);
        let foo_cold = o.0.symbol_id(b"foo.cold").unwrap();
        let bar = o.sym("bar", None, 0, 0, SymbolKind::Text, true);
        o.reloc(text, 7, foo_cold, -4, elf::R_X86_64_PC32);
        o.reloc(cold, 1, bar, -4, elf::R_X86_64_PLT32);
        o.reloc(cold, 6, foo, 0xb - 4, elf::R_X86_64_PC32);
        let bytes = o.0.write().unwrap();
        let obj = Object::<Orig>::parse("cold.o", &bytes).unwrap();
        let g = CallGraph::build(&[&obj]);
        assert!(g.find("foo.cold").is_empty(), "not a function of its own");
        let (foo, bar) = (one(&g, "foo"), one(&g, "bar"));
        let callees: Vec<Edge> = g.callees(foo);
        assert_eq!(names(&g, callees.iter().map(|e| e.callee)), ["bar", "foo"]);
        let to_bar = g.edge(foo, bar).unwrap();
        assert_eq!((to_bar.calls, to_bar.tail_calls), (1, 0));
        let site = g.sites_to(bar)[0];
        assert_eq!((site.section, site.offset), (".text.unlikely", 0));
        assert_eq!(
            g.edge(foo, foo).map(|e| (e.calls, e.tail_calls)),
            Some((1, 0))
        );
        // Recursion does not make foo its own caller in the breadth-first walk.
        assert!(g.callers(foo, 2).is_empty());
        assert_eq!(names(&g, g.callers(bar, 2).iter().map(|r| r.func)), ["foo"]);
    }

    #[test]
    fn names_and_files() {
        assert_eq!(cold_parent("foo.cold"), Some("foo"));
        assert_eq!(cold_parent("foo.isra.0.cold.2"), Some("foo.isra.0"));
        assert_eq!(cold_parent("foo.coldness"), None);
        assert_eq!(cold_parent(".cold"), None);
        assert!(file_matches("base.c", "fs/proc/base.c"));
        assert!(file_matches("fs/proc/base.c", "base.c"));
        assert!(file_matches("base.c", "base.c"));
        assert!(!file_matches("base.c", "database.c"));
        assert!(!file_matches("fd.c", "base.c"));
        assert_eq!(placement_of(".init.text"), Placement::Init);
        assert_eq!(placement_of(".exit.text"), Placement::Exit);
        assert_eq!(placement_of(".text.unlikely"), Placement::Runtime);
    }
}
