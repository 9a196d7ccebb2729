//! Per-unit work: where each unit's code lives (vmlinux or a module), reading, parsing and
//! diffing its objects (in parallel), widening the change to callers, the unit's report entry,
//! and the unit's livepatch object with its bindings, gathered into the module's parts.
//!
//! `--include-callers N` re-emits the callers of every changed function up to depth N from each
//! unit's object (`Diff::include_unchanged`), refusing callers without an ftrace entry or in
//! `__init` and stopping past `--max-callers`. At most one callback of each kind across all
//! units (a second is `refuse.duplicate-callback`). Any refusal in any unit refuses the build.
//!
//! The units' livepatch objects are linked into one, so the globals the patch adds in one unit
//! are the livepatch's own for the others: every unit is diffed and planned first, then bound
//! against those globals before the target ([`patchgen::target::bind_unit`]); a unit carries
//! the new data another unit uses even where its own code does not
//! (`Diff::plan_carrying`), and writes the new globals others use as global symbols.

use std::collections::BTreeSet;
use std::fs;

use anyhow::{Context, Result};
use elfdiff::callgraph::CallGraph;
use elfdiff::explain::ChangedLines;
use elfdiff::{Diff, Object, Orig, Patched, PlanOptions, Refusal};
use patchgen::kmod::{HookFunc, HookObject};
use patchgen::target::{Binding, Bound, OwnDef, OwnSymbols, Place};
use rayon::prelude::*;

use super::ctx::Ctx;
use super::entry;
use super::pairs::Pair;
use super::target::{ModTarget, Symbols};
use crate::report::{self as rpt, BuildReport};
use crate::verdict::{print_text, Verdict};

/// Where a unit's code runs, and so which object its klp symbols name and which symbol
/// table gives their positions.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum CodeIn {
    Vmlinux,
    /// An in-tree `=m` module or the out-of-tree one: an index into [`Units::modules`].
    Module(usize),
}

/// A compiled unit to diff.
pub struct Unit {
    pub pair: Pair,
    pub code_in: CodeIn,
}

/// The units of the patched code, and the modules some of them live in (each loaded once,
/// in order of first use).
pub struct Units {
    pub units: Vec<Unit>,
    pub modules: Vec<ModTarget>,
}

/// Which object each unit's code lives in: vmlinux, or a module (in-tree `=m` or the
/// out-of-tree one), whose `.ko` gives sympos for its own symbols.
pub fn locate(ctx: &Ctx<'_>, pairs: Vec<Pair>) -> Result<Units> {
    let mut out = Units {
        units: Vec::new(),
        modules: Vec::new(),
    };
    for pair in pairs {
        let ko = match &ctx.plan.oot {
            Some(m) => Some(m.ko.clone()),
            None => ctx.target.module_of_unit(&pair.name, &pair.orig)?,
        };
        let code_in = match ko {
            None => CodeIn::Vmlinux,
            Some(ko) => CodeIn::Module(match out.modules.iter().position(|t| t.ko == ko) {
                Some(i) => i,
                None => {
                    out.modules.push(ctx.target.load_module(&ko)?);
                    out.modules.len() - 1
                }
            }),
        };
        out.units.push(Unit { pair, code_in });
    }
    if ctx.plan.oot.is_none() && !ctx.plan.quiet {
        for t in &out.modules {
            crate::progress::message(&format!(
                "klpgen: patching module {} (symbols from {})",
                t.name, t.label
            ));
        }
    }
    Ok(out)
}

impl Units {
    /// The pairs of the units whose code is in vmlinux.
    pub fn vmlinux_pairs(&self) -> Vec<&Pair> {
        self.units
            .iter()
            .filter(|u| u.code_in == CodeIn::Vmlinux)
            .map(|u| &u.pair)
            .collect()
    }

    /// Every unit's name, in order.
    pub fn names(&self) -> Vec<String> {
        self.units.iter().map(|u| u.pair.name.clone()).collect()
    }

    /// Add the units that hold callers (`--include-callers`): vmlinux code.
    pub fn add_callers(&mut self, pairs: Vec<Pair>) {
        self.units.extend(pairs.into_iter().map(|pair| Unit {
            pair,
            code_in: CodeIn::Vmlinux,
        }));
    }

    fn module(&self, code_in: CodeIn) -> Option<&ModTarget> {
        match code_in {
            CodeIn::Vmlinux => None,
            CodeIn::Module(i) => Some(&self.modules[i]),
        }
    }
}

/// A unit's objects, read.
struct Read<'u> {
    unit: &'u Unit,
    orig: Vec<u8>,
    patched: Vec<u8>,
}

/// A unit's objects, parsed.
struct Parsed<'r> {
    read: &'r Read<'r>,
    orig: Object<'r, Orig>,
    patched: Object<'r, Patched>,
}

/// A unit's diff and the call graph of its original object.
struct Diffed<'p> {
    parsed: &'p Parsed<'p>,
    diff: Diff<'p, 'p>,
    graph: CallGraph<'p>,
}

impl Diffed<'_> {
    fn name(&self) -> &str {
        &self.parsed.read.unit.pair.name
    }
}

/// A callback of the livepatch: its kind, function, unit, and the klp_object it belongs to
/// (None: vmlinux).
pub struct Callback {
    pub kind: elfdiff::CallbackKind,
    pub function: String,
    pub unit: String,
    pub object: Option<String>,
}

/// What the units contribute to the livepatch module, gathered unit by unit in unit order.
#[derive(Default)]
pub struct Parts {
    /// One livepatch object per unit with changes.
    pub objects: Vec<Vec<u8>>,
    /// Every replaced function, numbered across units (`writer::new_func_alias(i)`).
    funcs: Vec<HookFunc>,
    /// The hook's klp_objects with their functions, in order of first use.
    pub hook_objects: Vec<HookObject>,
    /// At most one of each kind across all units (a second one is refused).
    pub callbacks: Vec<Callback>,
    /// System states (`KLPGEN_STATE`) across all units, each with the first unit declaring
    /// it; one id with two versions is refused.
    pub states: Vec<(elfdiff::State, String)>,
    pub bindings: Vec<Binding>,
    /// Symbol namespaces to import: those of the namespaced exports the new code calls, and
    /// the patched units' own `import_ns=` tags.
    pub import_ns: BTreeSet<String>,
    pub manifest: patchgen::manifest::Manifest,
    refusals: Vec<Refusal>,
    /// Changed and new functions: (name, unit).
    pub changed: Vec<(String, String)>,
    pub new: Vec<(String, String)>,
    /// Differences left out by annotations.
    pub ignored: Vec<String>,
}

/// What every unit's diff reads besides its own objects.
struct Shared<'a> {
    ctx: &'a Ctx<'a>,
    units: &'a Units,
    symbols: &'a Symbols,
    options: PlanOptions,
    changed_lines: &'a [ChangedLines],
    /// The target's `vmlinux.o` call graph, for the callers of vmlinux code.
    kernel_graph: Option<&'a CallGraph<'a>>,
}

/// Diff every unit and make the livepatch object of each one with changes. Each unit's
/// report entry goes to the report; its refusals are gathered for the verdict.
pub fn diff_all(
    ctx: &Ctx<'_>,
    units: &Units,
    symbols: &Symbols,
    objtool_regenerates: bool,
    changed_lines: &[ChangedLines],
    rep: &mut BuildReport,
) -> Result<Parts> {
    rep.stage("diffing");
    // Read and diff every pair first: --include-callers needs the changed functions of all
    // units to find their callers in any of them (units added with -t included).
    let read = read_all(units)?;
    let parsed = parse_all(&read)?;
    let mut diffed = diff_parsed(&parsed, &symbols.layouts, ctx.plan.jobs)?;
    let mut callers = CallerSearch::new(ctx, &diffed);
    let kernel_bytes = kernel_object(ctx, units)?;
    let kernel_obj = match &kernel_bytes {
        Some(b) => Object::<Orig>::parse("vmlinux.o", b).ok(),
        None => None,
    };
    let kernel_graph = kernel_obj.as_ref().map(|o| CallGraph::build(&[o]));
    let shared = Shared {
        ctx,
        units,
        symbols,
        options: PlanOptions {
            objtool_regenerates,
            ..symbols.layouts.clone()
        },
        changed_lines,
        kernel_graph: kernel_graph.as_ref(),
    };
    let mut parts = Parts::default();
    let mut cands = Vec::new();
    for (index, d) in diffed.iter_mut().enumerate() {
        cands.extend(parts.report_and_plan(&shared, index, d, &mut callers, rep)?);
    }
    let own = own_symbols(&shared, &diffed, &cands);
    parts.bind_all(&shared, &diffed, &mut cands, &own)?;
    parts.write_all(&shared, &diffed, cands, &own, rep)?;
    Ok(parts)
}

/// A unit that may contribute to the livepatch, between its diff and its livepatch object.
struct Candidate {
    /// Index into the diffed units.
    index: usize,
    /// Its entry in the report's `objects`.
    entry: usize,
    /// It has refusals of its own: never planned, bound or written.
    refused: bool,
    /// New globals of the unit that other units use and its own code may not (new data).
    carry: Vec<String>,
    plan: Option<elfdiff::Plan>,
    bound: Option<Bound>,
}

/// The globals the patch adds, unit by unit ([`elfdiff::Diff::new_globals`]), with the
/// patched object each unit's code is part of. Refused units count: their names are the
/// livepatch's too (the build is refused anyway, but their users bind without an error).
fn own_symbols(shared: &Shared<'_>, diffed: &[Diffed<'_>], cands: &[Candidate]) -> OwnSymbols {
    let mut own = OwnSymbols::default();
    for c in cands {
        let d = &diffed[c.index];
        let object = shared
            .units
            .module(d.parsed.read.unit.code_in)
            .map(|t| t.name.clone());
        for g in d.diff.new_globals() {
            own.add(
                &g.name,
                OwnDef {
                    unit: d.name().to_string(),
                    object: object.clone(),
                    exported: g.exported,
                    static_data: g.was_static && g.kind == elfdiff::model::SymKind::Object,
                },
            );
        }
    }
    own
}

fn read_all(units: &Units) -> Result<Vec<Read<'_>>> {
    units
        .units
        .iter()
        .map(|unit| {
            Ok(Read {
                unit,
                orig: fs::read(&unit.pair.orig)?,
                patched: fs::read(&unit.pair.patched)?,
            })
        })
        .collect()
}

fn parse_all<'r>(read: &'r [Read<'r>]) -> Result<Vec<Parsed<'r>>> {
    read.iter()
        .map(|r| {
            let u = &r.unit.pair.name;
            Ok(Parsed {
                read: r,
                orig: Object::parse(format!("{u} (original)"), &r.orig)?,
                patched: Object::parse(format!("{u} (patched)"), &r.patched)?,
            })
        })
        .collect()
}

/// The pairs are independent: diff them (and build their call graphs) in parallel; results
/// keep the order of the units, so nothing printed or written depends on scheduling.
/// `layouts`: the target's entry sizes and member offsets (special-section entries are compared
/// with their functions).
fn diff_parsed<'p>(
    parsed: &'p [Parsed<'p>],
    layouts: &PlanOptions,
    jobs: usize,
) -> Result<Vec<Diffed<'p>>> {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(jobs)
        .build()
        .context("starting the diff threads")?;
    Ok(pool.install(|| {
        parsed
            .par_iter()
            .map(|p| Diffed {
                parsed: p,
                diff: Diff::with_layouts(&p.orig, &p.patched, layouts),
                graph: CallGraph::build(&[&p.orig]),
            })
            .collect()
    }))
}

/// The target's `vmlinux.o`, whose call graph gives the callers of vmlinux code, when some
/// unit's code is in vmlinux and the target build has one.
fn kernel_object(ctx: &Ctx<'_>, units: &Units) -> Result<Option<Vec<u8>>> {
    let vmlinux_o = ctx.target.tree.build.join("vmlinux.o");
    if units.units.iter().any(|u| u.code_in == CodeIn::Vmlinux) && vmlinux_o.is_file() {
        Ok(Some(fs::read(&vmlinux_o)?))
    } else {
        Ok(None)
    }
}

impl Parts {
    /// One unit: its verdicts and report entry, and, when it changes something and refuses
    /// nothing, its plan. None for a unit with nothing to report; a unit whose only change is
    /// new data is kept unplanned, for other units that may use that data.
    fn report_and_plan(
        &mut self,
        shared: &Shared<'_>,
        index: usize,
        d: &mut Diffed<'_>,
        callers: &mut CallerSearch,
        rep: &mut BuildReport,
    ) -> Result<Option<Candidate>> {
        let Some(report) = self.report_unit(shared, d, callers, rep)? else {
            return Ok(None);
        };
        let mut cand = Candidate {
            index,
            entry: rep.objects.len() - 1,
            refused: !report.refused.is_empty(),
            carry: Vec::new(),
            plan: None,
            bound: None,
        };
        if report.changed.is_empty() && report.new.is_empty() {
            return Ok(Some(cand));
        }
        let u = d.name();
        let module = shared.units.module(d.parsed.read.unit.code_in);
        self.changed
            .extend(report.changed.iter().map(|n| (n.clone(), u.to_string())));
        self.new
            .extend(report.new.iter().map(|n| (n.clone(), u.to_string())));
        self.add_callbacks(&report, u, module);
        self.add_states(&report, u);
        if !cand.refused {
            cand.plan = Some(d.diff.plan(&shared.options)?);
        }
        Ok(Some(cand))
    }

    /// Bind every planned unit against the globals the patch adds (`own`) and the target.
    /// A new global a unit uses whose defining unit does not carry it yet (new data its own
    /// code does not use, or a unit with no other change) is added to that unit's plan, which
    /// is planned and bound again, until nothing more is needed.
    fn bind_all(
        &mut self,
        shared: &Shared<'_>,
        diffed: &[Diffed<'_>],
        cands: &mut [Candidate],
        own: &OwnSymbols,
    ) -> Result<()> {
        let (symtab, symvers) = (&shared.symbols.symtab, &shared.ctx.target.symvers);
        loop {
            for c in cands.iter_mut() {
                let Some(lp) = c.plan.as_ref().filter(|_| c.bound.is_none()) else {
                    continue;
                };
                let d = &diffed[c.index];
                let place = match shared.units.module(d.parsed.read.unit.code_in) {
                    Some(t) => Place::Module {
                        name: &t.name,
                        table: &t.table,
                    },
                    None => Place::Vmlinux,
                };
                let bound = patchgen::target::bind_unit(lp, place, own, symtab, symvers)
                    .with_context(|| format!("binding the references of {}", d.name()))?;
                c.bound = Some(bound);
            }
            let mut needed: Vec<(usize, String)> = Vec::new();
            for c in cands.iter() {
                for b in c.bound.iter().flat_map(|b| &b.bindings) {
                    let Binding::Own { name, unit } = b else {
                        continue;
                    };
                    let Some(v) = cands.iter().position(|v| diffed[v.index].name() == unit) else {
                        continue;
                    };
                    let def = &cands[v];
                    let carried = def
                        .plan
                        .as_ref()
                        .is_some_and(|p| p.new_globals.iter().any(|(n, _)| n == name));
                    if !def.refused
                        && !carried
                        && !def.carry.contains(name)
                        && !needed.contains(&(v, name.clone()))
                    {
                        needed.push((v, name.clone()));
                    }
                }
            }
            if needed.is_empty() {
                return Ok(());
            }
            for (v, name) in needed {
                cands[v].carry.push(name);
                cands[v].bound = None;
            }
            for c in cands.iter_mut().filter(|c| c.bound.is_none() && !c.refused) {
                if c.carry.is_empty() && c.plan.is_none() {
                    continue;
                }
                let d = &diffed[c.index];
                c.plan = Some(
                    d.diff
                        .plan_carrying(&shared.options, &c.carry)
                        .with_context(|| format!("planning {}", d.name()))?,
                );
            }
        }
    }

    /// The units' livepatch objects, in unit order: the new globals another unit uses are
    /// global symbols of the one unit that defines them (units of different objects defining
    /// one such name are refused), ordinary bindings those names would capture go through klp
    /// relocations, and the binding's refusals go to each unit's report entry.
    fn write_all(
        &mut self,
        shared: &Shared<'_>,
        diffed: &[Diffed<'_>],
        cands: Vec<Candidate>,
        own: &OwnSymbols,
        rep: &mut BuildReport,
    ) -> Result<()> {
        let all: Vec<&[Binding]> = cands
            .iter()
            .filter_map(|c| c.bound.as_ref().map(|b| b.bindings.as_slice()))
            .collect();
        let (shared_globals, clashes) = patchgen::target::shared_globals(&all, own);
        for r in clashes {
            let first = own.defs(&r.symbol).first().map(|d| d.unit.as_str());
            let at = cands
                .iter()
                .find(|c| Some(diffed[c.index].name()) == first)
                .map(|c| c.entry);
            self.late_refusals(shared, first.unwrap_or(""), at, vec![r], rep);
        }
        for c in cands {
            let (Some(lp), Some(mut bound)) = (c.plan, c.bound) else {
                continue;
            };
            let d = &diffed[c.index];
            let u = d.name();
            let (symtab, symvers) = (&shared.symbols.symtab, &shared.ctx.target.symvers);
            let shadowed = patchgen::target::unshadow(
                &lp,
                &mut bound.bindings,
                &shared_globals,
                symtab,
                symvers,
            )
            .with_context(|| format!("binding the references of {u}"))?;
            bound.refusals.extend(shadowed);
            bound
                .refusals
                .extend(patchgen::target::module_key_refusals(&lp, &bound.bindings));
            if !bound.refusals.is_empty() {
                self.late_refusals(shared, u, Some(c.entry), bound.refusals, rep);
                continue;
            }
            let globals: Vec<usize> = lp
                .new_globals
                .iter()
                .filter(|(n, _)| shared_globals.get(n).is_some_and(|def| def == u))
                .map(|&(_, i)| i)
                .collect();
            for b in &bound.bindings {
                if let Binding::Own { name, unit } = b {
                    rep.notes.push(format!(
                        "{u}: {name} is new in {unit}: bound inside the livepatch module, to its copy there"
                    ));
                }
            }
            self.add_object(shared, d, &lp, bound.bindings, &globals, rep)?;
        }
        Ok(())
    }

    /// The unit's verdicts, widened to callers (`--include-callers`) and forced functions,
    /// printed and entered in the report; its refusals kept for the verdict. None for a unit
    /// whose objects are identical and that has nothing included.
    fn report_unit(
        &mut self,
        shared: &Shared<'_>,
        d: &mut Diffed<'_>,
        callers: &mut CallerSearch,
        rep: &mut BuildReport,
    ) -> Result<Option<elfdiff::Report>> {
        let mut caller_refusals = Vec::new();
        let mut included = callers.include(&mut d.diff, &d.graph, &mut caller_refusals)?;
        // Replaced although unchanged, as the patch's KLPGEN_FORCE_FUNCTION asks.
        for f in &d.diff.forced {
            included.push((f.clone(), "forced by KLPGEN_FORCE_FUNCTION".to_string()));
        }
        if d.parsed.read.orig == d.parsed.read.patched && included.is_empty() {
            return Ok(None);
        }
        let u = d.name();
        let quiet = shared.ctx.plan.quiet;
        let module = shared.units.module(d.parsed.read.unit.code_in);
        let mut report = d.diff.report();
        report.refused.extend(caller_refusals);
        if !quiet {
            crate::progress::pause();
            print_text(u, &report);
        }
        self.refusals.extend(report.refused.iter().cloned());
        // The callers of vmlinux code are in the target's whole call graph when there is one.
        let graph = match (shared.kernel_graph, module) {
            (Some(k), None) => k,
            _ => &d.graph,
        };
        rep.objects.push(entry::unit_entry(
            &entry::UnitFacts {
                unit: u,
                objname: module.map_or("vmlinux", |t| t.name.as_str()),
                report: &report,
                diff: &d.diff,
                graph,
                changed_lines: shared.changed_lines,
                included: &included,
            },
            quiet,
        ));
        self.ignored
            .extend(report.ignored.iter().map(|i| i.symbol.clone()));
        Ok(Some(report))
    }

    /// Refusals binding found for unit `u` (`entry`: its report entry): printed, entered in
    /// the report and kept for the verdict.
    fn late_refusals(
        &mut self,
        shared: &Shared<'_>,
        u: &str,
        entry: Option<usize>,
        late: Vec<Refusal>,
        rep: &mut BuildReport,
    ) {
        let late_report = elfdiff::Report {
            refused: late.clone(),
            ..Default::default()
        };
        if !shared.ctx.plan.quiet {
            crate::progress::pause();
            print_text(u, &late_report);
        }
        if let Some(entry) = entry.and_then(|i| rep.objects.get_mut(i)) {
            let objname = entry.target.clone();
            entry
                .functions
                .extend(entry::object_entry(u, &objname, &late_report).functions);
        }
        self.refusals.extend(late);
    }

    /// One callback of each kind per livepatch, across all units.
    fn add_callbacks(&mut self, report: &elfdiff::Report, u: &str, module: Option<&ModTarget>) {
        for c in &report.callbacks {
            if let Some(first) = self.callbacks.iter().find(|f| f.kind == c.kind) {
                let mut r = elfdiff::annot::duplicate_callback(
                    c.kind,
                    &format!("{} ({})", first.function, first.unit),
                    &format!("{} ({u})", c.function),
                );
                r.symbol = c.function.clone();
                self.refusals.push(r);
            } else {
                self.callbacks.push(Callback {
                    kind: c.kind,
                    function: c.function.clone(),
                    unit: u.to_string(),
                    object: module.map(|t| t.name.clone()),
                });
            }
        }
    }

    /// The unit's system states: one version of each id per livepatch, across all units.
    fn add_states(&mut self, report: &elfdiff::Report, u: &str) {
        for st in &report.states {
            match self.states.iter().find(|(s, _)| s.id == st.id) {
                Some((s, _)) if s.version == st.version => {}
                Some((s, first)) => {
                    let r =
                        elfdiff::annot::state_conflict(st.id, (s.version, first), (st.version, u));
                    self.refusals.push(r);
                }
                None => self.states.push((*st, u.to_string())),
            }
        }
    }

    /// The unit's livepatch object: its replaced functions' positions in the target, the
    /// object's bytes (`globals`: the copies written as global symbols), its klp relocations
    /// and namespaces.
    fn add_object(
        &mut self,
        shared: &Shared<'_>,
        d: &Diffed<'_>,
        lp: &elfdiff::Plan,
        bindings: Vec<Binding>,
        globals: &[usize],
        rep: &mut BuildReport,
    ) -> Result<()> {
        let u = d.name();
        let module = shared.units.module(d.parsed.read.unit.code_in);
        let objname = module.map_or("vmlinux", |t| t.name.as_str());
        let base = self.funcs.len();
        for (i, f) in lp.funcs.iter().enumerate() {
            let ext = elfdiff::plan::External {
                name: f.old_name.clone(),
                local: f.old_local,
                undefined: false,
            };
            let table = module.map_or(&shared.symbols.symtab, |t| &t.table);
            let sympos = table.locate(&ext, lp.file_name.as_deref(), &lp.orig_locals)?;
            self.funcs.push(HookFunc {
                old_name: f.old_name.clone(),
                sympos,
                new_symbol: patchgen::writer::new_func_alias(base + i),
            });
        }
        rep.notes
            .extend(lp.notes.iter().map(|n| format!("{u}: {n}")));
        let bytes = patchgen::writer::write_patch_object_with(lp, &bindings, base, globals)?;
        self.manifest
            .add_unit(objname, lp, &bindings, &self.funcs[base..]);
        // Also for a unit without replaced functions (new code or data only): the
        // klp_object is what makes the livepatch core resolve the klp relocations of a
        // module's code as that module loads.
        let funcs = self.funcs[base..].to_vec();
        hook_object(&mut self.hook_objects, module.map(|t| t.name.clone()))
            .funcs
            .extend(funcs);
        self.objects.push(bytes);
        for b in &bindings {
            if let Binding::Klp {
                objname,
                name,
                sympos,
            } = b
            {
                rep.klp_relocations.push(rpt::KlpReloc {
                    object: objname.clone(),
                    symbol: name.clone(),
                    sympos: *sympos,
                });
            }
        }
        for b in &bindings {
            if let Binding::Plain { name } = b {
                if let Some(ns) = shared.ctx.target.symvers.namespace(name) {
                    self.import_ns.insert(ns.to_string());
                }
            }
        }
        self.import_ns
            .extend(modinfo_imports(&d.parsed.read.patched));
        self.bindings.extend(bindings);
        Ok(())
    }

    /// Stop unless there is a livepatch to build: any refusal refuses the whole build, nothing
    /// changed is no functional change, and new functions alone would never be called.
    pub fn verdict(&self) -> Result<()> {
        let all = elfdiff::Report {
            changed: self.changed.iter().map(|(n, _)| n.clone()).collect(),
            new: self.new.iter().map(|(n, _)| n.clone()).collect(),
            refused: self.refusals.clone(),
            ..Default::default()
        };
        if let Some(v) = Verdict::of(&all) {
            return Err(v.into());
        }
        if self.funcs.is_empty() && self.callbacks.is_empty() {
            return Err(Verdict::Refused(
                "only new functions and no changed one: nothing would call the new code".into(),
            )
            .into());
        }
        Ok(())
    }
}

/// `--include-callers N`: the functions the patches change in all units, whose callers
/// (within each unit's object, up to depth N) are re-emitted so tasks switch only once they
/// have left them; and how many callers were added so far, against `--max-callers`.
struct CallerSearch {
    depth: u32,
    max: usize,
    /// (name, file for a static) of every changed function.
    changed: Vec<(String, Option<String>)>,
    total: usize,
}

impl CallerSearch {
    fn new(ctx: &Ctx<'_>, diffed: &[Diffed<'_>]) -> CallerSearch {
        let changed = diffed
            .iter()
            .flat_map(|d| {
                let diff = &d.diff;
                diff.functions
                    .iter()
                    .filter(|f| matches!(f.verdict, elfdiff::Verdict::Changed(_)))
                    .filter_map(|f| f.orig)
                    .map(|o| {
                        let sym = diff.orig.sym(o);
                        let file = (!sym.is_global())
                            .then(|| diff.orig.file_name.unwrap_or("").to_string());
                        (sym.name.to_string(), file)
                    })
                    .collect::<Vec<_>>()
            })
            .collect();
        CallerSearch {
            depth: ctx.plan.callers.depth,
            max: ctx.plan.callers.max,
            changed,
            total: 0,
        }
    }

    /// Include the unit's callers of changed functions as changed; returns the functions
    /// added with the reason. Refusals for callers that cannot be patched go to `refusals`.
    fn include(
        &mut self,
        diff: &mut Diff<'_, '_>,
        graph: &CallGraph<'_>,
        refusals: &mut Vec<Refusal>,
    ) -> Result<Vec<(String, String)>> {
        let mut added: Vec<(String, String)> = Vec::new();
        if self.depth == 0 {
            return Ok(added);
        }
        let changed: Vec<String> = self.changed.iter().map(|(n, _)| n.clone()).collect();
        let here = diff.orig.file_name;
        for (name, file) in &self.changed {
            // A static of another file cannot be called from this one.
            if file.is_some() && file.as_deref() != here {
                continue;
            }
            for f in graph.lookup(name, file.as_deref()) {
                for r in graph.callers(f, self.depth) {
                    let caller = graph.func(r.func).name.to_string();
                    if added.iter().any(|(n, _)| *n == caller) || changed.contains(&caller) {
                        continue;
                    }
                    let why = format!("caller of {name} at depth {} (--include-callers)", r.depth);
                    match diff.include_unchanged(&caller, &why) {
                        Ok(true) => {
                            added.push((caller, why));
                            self.total += 1;
                        }
                        Ok(false) => {}
                        Err(refusal) => refusals.push(refusal),
                    }
                    if self.total > self.max {
                        anyhow::bail!(
                            "--include-callers {} would add more than {} callers ({} so far, last {}); raise --max-callers or lower the depth",
                            self.depth,
                            self.max,
                            self.total,
                            added.last().map_or("", |(n, _)| n.as_str())
                        );
                    }
                }
            }
        }
        Ok(added)
    }
}

/// The hook's klp_object for `name` (None: vmlinux), created empty when it is not there yet.
pub fn hook_object(objects: &mut Vec<HookObject>, name: Option<String>) -> &mut HookObject {
    match objects.iter().position(|o| o.name == name) {
        Some(i) => &mut objects[i],
        None => {
            objects.push(HookObject {
                name,
                funcs: Vec::new(),
                callbacks: Vec::new(),
            });
            objects.last_mut().expect("just pushed")
        }
    }
}

/// The `import_ns=` tags of a patched unit's `.modinfo` (module units with MODULE_IMPORT_NS).
fn modinfo_imports(bytes: &[u8]) -> Vec<String> {
    object::File::parse(bytes)
        .map(|f| crate::modinfo::values(&f, "import_ns"))
        .unwrap_or_default()
        .into_iter()
        .filter(|ns| !ns.is_empty())
        .collect()
}
