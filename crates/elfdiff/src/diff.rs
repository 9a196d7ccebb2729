//! The differ: which symbols of the original and patched objects are the same thing, which
//! functions and data changed, what follows from that and what a livepatch cannot carry. Each
//! phase has its file: `correlate.rs`, `compare.rs` (with `refs.rs`, what relocations point
//! at), `propagate.rs` and `checks.rs` (with `refusal.rs`, the refusal texts); [`Diff::new`]
//! runs them in that order.

use std::collections::HashMap;

use crate::annot::Annotations;
use crate::checks::{self, runtime_const_refusals_in};
use crate::compare::compare_functions;
use crate::correlate::correlate;
use crate::entries::Entries;
use crate::model::{Object, Orig, Patched, Reloc, SecIdx, SymIdx};
use crate::plan::PlanOptions;
use crate::propagate::propagate;
use crate::refs::{resolve, Insns, Pair};
use crate::refusal::{caller_unpatchable, CallerCause};
use crate::sections::is_init_section;

pub use crate::compare::{FuncResult, Verdict};
pub use crate::refs::Target;
pub use crate::refusal::{Ignored, Refusal};

/// The result of diffing one object pair.
pub struct Diff<'a, 'd> {
    pub orig: &'a Object<'d, Orig>,
    pub patched: &'a Object<'d, Patched>,
    pub(crate) orig_insns: Insns,
    pub(crate) patched_insns: Insns,
    pub(crate) orig_entries: Entries<Orig>,
    pub(crate) patched_entries: Entries<Patched>,
    /// Correlated symbols, patched → original.
    pub matched: HashMap<SymIdx<Patched>, SymIdx<Orig>>,
    pub matched_rev: HashMap<SymIdx<Orig>, SymIdx<Patched>>,
    /// One entry per function defined in the patched object (prefix labels excluded).
    pub functions: Vec<FuncResult>,
    pub refusals: Vec<Refusal>,
    /// Differences that were noticed and, as annotations asked, not acted on.
    pub ignored: Vec<Ignored>,
    /// The patched object's `.klpgen.*` annotations.
    pub annotations: Annotations,
    /// Unchanged functions made changed by `KLPGEN_FORCE_FUNCTION` (original names).
    pub forced: Vec<String>,
}

impl<'a, 'd> Diff<'a, 'd> {
    /// The diff with only the entry sizes klpgen knows or recognises ([`Diff::with_layouts`]).
    pub fn new(orig: &'a Object<'d, Orig>, patched: &'a Object<'d, Patched>) -> Self {
        Self::with_layouts(orig, patched, &PlanOptions::default())
    }

    /// The diff, with the entry sizes and member offsets of `layouts` (the target's DWARF,
    /// `--entry-size`): special-section entries are compared with their functions.
    pub fn with_layouts(
        orig: &'a Object<'d, Orig>,
        patched: &'a Object<'d, Patched>,
        layouts: &PlanOptions,
    ) -> Self {
        let (orig_insns, patched_insns) = (Insns::new(orig), Insns::new(patched));
        let orig_entries = Entries::new(orig, &orig_insns, layouts);
        let patched_entries = Entries::new(patched, &patched_insns, layouts);
        let pair = Pair {
            orig,
            patched,
            orig_insns: &orig_insns,
            patched_insns: &patched_insns,
            orig_entries: &orig_entries,
            patched_entries: &patched_entries,
        };
        let annotations = Annotations::read(patched);
        // Which symbols are the same thing.
        let matched = correlate(orig, patched);
        // Which functions changed, each by its own bytes and references.
        let mut functions = compare_functions(pair, &matched);
        // What follows: split parents and parts, callers of code livepatch cannot reach, the
        // annotations.
        let prop = propagate(pair, &annotations, &mut functions);
        // What the livepatch cannot carry.
        let (refusals, refused_ignored) =
            checks::refusals(pair, &matched, &annotations, &functions, &prop);
        let mut ignored = prop.ignored;
        ignored.extend(refused_ignored);
        Diff {
            orig,
            patched,
            orig_insns,
            patched_insns,
            orig_entries,
            patched_entries,
            matched_rev: matched.iter().map(|(&p, &o)| (o, p)).collect(),
            matched,
            functions,
            refusals,
            ignored,
            annotations,
            forced: prop.forced,
        }
    }

    /// The two objects with their decoded code, as the phases read them.
    pub(crate) fn pair(&self) -> Pair<'_, 'd> {
        Pair {
            orig: self.orig,
            patched: self.patched,
            orig_insns: &self.orig_insns,
            patched_insns: &self.patched_insns,
            orig_entries: &self.orig_entries,
            patched_entries: &self.patched_entries,
        }
    }

    /// Whether a function of the patched object has an ftrace entry (so it can be patched).
    pub fn patched_traceable(&self, f: SymIdx<Patched>) -> bool {
        self.pair().patched_traceable(f)
    }
    /// Whether a function of the original object has an ftrace entry.
    pub fn orig_traceable(&self, f: SymIdx<Orig>) -> bool {
        self.pair().orig_traceable(f)
    }

    /// Treat an unchanged function as changed, so it is re-emitted from the patched build
    /// and replaced too (`--include-callers`: widening the consistency boundary to callers).
    /// Returns false when the object has no such function, or it is already changed or new;
    /// a refusal when it cannot be patched.
    pub fn include_unchanged(&mut self, orig_name: &str, why: &str) -> Result<bool, Refusal> {
        let Some(idx) = self
            .functions
            .iter()
            .position(|f| f.orig.is_some_and(|o| self.orig.sym(o).name == orig_name))
        else {
            return Ok(false);
        };
        if self.functions[idx].verdict != Verdict::Unchanged {
            return Ok(false);
        }
        let o = self.functions[idx].orig.expect("matched");
        let sym = self.orig.sym(o);
        let section = self.orig.sec(sym.section.expect("defined")).name;
        let refusal = |cause| caller_unpatchable(orig_name, section, why, cause);
        if is_init_section(section) {
            return Err(refusal(CallerCause::Init));
        }
        if !self.orig_traceable(o) {
            return Err(refusal(CallerCause::NoFtrace));
        }
        let psec = self.patched.sym(self.functions[idx].patched).section;
        let code = psec.into_iter().collect();
        if let Some(r) = runtime_const_refusals_in(self.patched, &self.matched, self.orig, &code)
            .into_iter()
            .next()
        {
            return Err(refusal(CallerCause::NotCarried(&r.reason)));
        }
        self.functions[idx].verdict = Verdict::Changed(why.to_string());
        Ok(true)
    }

    /// Names of changed functions as they appear in the original object.
    pub fn changed(&self) -> Vec<&'d str> {
        let mut v: Vec<_> = self
            .functions
            .iter()
            .filter(|f| matches!(f.verdict, Verdict::Changed(_)))
            .map(|f| self.orig.sym(f.orig.expect("matched")).name)
            .collect();
        v.sort_unstable();
        v
    }
    /// Names of new functions as they appear in the patched object.
    pub fn new_functions(&self) -> Vec<&'d str> {
        let mut v: Vec<_> = self
            .functions
            .iter()
            .filter(|f| f.verdict == Verdict::New)
            .map(|f| self.patched.sym(f.patched).name)
            .collect();
        v.sort_unstable();
        v
    }

    pub(crate) fn resolve_patched(
        &self,
        site: SecIdx<Patched>,
        r: &Reloc<Patched>,
    ) -> Target<Patched> {
        resolve(self.patched, &self.patched_insns, site, r)
    }
}
