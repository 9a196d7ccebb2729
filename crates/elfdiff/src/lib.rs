//! elfdiff: correlate and compare an original and a patched relocatable ELF object (kernel
//! objects built with `-ffunction-sections -fdata-sections`), report changed and new
//! functions and refusals, and plan the contents of a livepatch object. What depends on the
//! machine (x86-64 so far) is behind the `Arch` trait in `arch/`.
//!
//! **This crate never spawns processes, writes files or prints.** Callers hand it bytes.
#![forbid(unsafe_code)]

pub mod annot;
pub mod arch;
pub mod callgraph;
pub mod carve;
mod checks;
mod compare;
mod correlate;
pub mod diff;
pub mod dwarf;
pub mod entries;
pub mod error;
pub mod explain;
mod lines;
pub mod model;
pub mod names;
pub mod plan;
mod propagate;
mod refs;
pub mod refusal;
mod runtime_const;
mod sections;

pub use annot::{Annotations, CallbackKind, State};
pub use diff::{Diff, FuncResult, Ignored, Refusal, Verdict};
pub use error::Error;
pub use model::{Object, Orig, Patched};
pub use plan::{Plan, PlanOptions};
pub use refusal::RefusalKind;

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;

/// The machine-readable summary of one object pair (`klpgen diff --format json`).
#[derive(Debug, Clone, Serialize, Default, PartialEq, Eq)]
pub struct Report {
    /// Changed functions, named as in the original object: the functions the developer
    /// wrote; a split part (`.cold`, `.part.N`) of a listed function is under `parts`.
    pub changed: Vec<String>,
    /// New functions, named as in the patched object (split parts as for `changed`).
    pub new: Vec<String>,
    /// The split parts of the changed and new functions, under each function (by its name in
    /// `changed` or `new`); absent when none has any. A part whose function is not listed (an
    /// unchanged parent cannot have a changed part; the object may have no parent left, its
    /// body inlined everywhere) is listed on its own.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub parts: BTreeMap<String, Vec<Part>>,
    pub refused: Vec<Refusal>,
    /// Differences annotations (`KLPGEN_IGNORE_*`) left out.
    pub ignored: Vec<Ignored>,
    /// Livepatch callbacks (`KLPGEN_*_CALLBACK`) of the patched object.
    pub callbacks: Vec<CallbackEntry>,
    /// System states (`KLPGEN_STATE`) the patched object declares (absent from JSON when none).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub states: Vec<State>,
}

/// A split part of a changed or new function ([`Report::parts`]).
#[derive(Debug, Clone, Serialize, PartialEq, Eq, PartialOrd, Ord)]
pub struct Part {
    /// Named as in the original object when changed, the patched one when new.
    pub name: String,
    /// `changed` or `new` (a function that is changed may have a new part: GCC split it
    /// anew).
    pub verdict: PartVerdict,
}

#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "kebab-case")]
pub enum PartVerdict {
    Changed,
    New,
}

impl PartVerdict {
    pub fn as_str(self) -> &'static str {
        match self {
            PartVerdict::Changed => "changed",
            PartVerdict::New => "new",
        }
    }
}

impl Report {
    /// Every changed function, split parts included, sorted.
    pub fn all_changed(&self) -> Vec<String> {
        self.all(&self.changed, PartVerdict::Changed)
    }
    /// Every new function, split parts included, sorted.
    pub fn all_new(&self) -> Vec<String> {
        self.all(&self.new, PartVerdict::New)
    }
    fn all(&self, listed: &[String], verdict: PartVerdict) -> Vec<String> {
        let mut v: Vec<String> = listed.to_vec();
        v.extend(
            self.parts
                .values()
                .flatten()
                .filter(|p| p.verdict == verdict)
                .map(|p| p.name.clone()),
        );
        v.sort();
        v
    }
}

/// One callback of the patched object, for reports.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct CallbackEntry {
    /// `pre_patch`, `post_patch`, `pre_unpatch` or `post_unpatch`.
    pub kind: CallbackKind,
    pub function: String,
}

impl<'d> Diff<'_, 'd> {
    pub fn report(&self) -> Report {
        let changed = self.changed();
        let new = self.new_functions();
        // The listed functions by normalised name, where their split parts find them.
        let listed: HashMap<String, &'d str> = changed
            .iter()
            .chain(&new)
            .map(|&n| (names::normalize(n), n))
            .collect();
        // The listed function a part belongs to, past parts of parts (`f.part.0.cold`).
        let owner = |n: &'d str| -> Option<&'d str> {
            let mut at = n;
            for _ in 0..8 {
                match names::split_parent(at).and_then(|p| listed.get(&p)) {
                    Some(&p) if p != at => at = p,
                    _ => break,
                }
            }
            (at != n).then_some(at)
        };
        let mut parts: BTreeMap<String, Vec<Part>> = BTreeMap::new();
        let mut top = |list: Vec<&'d str>, verdict| -> Vec<String> {
            let mut out = Vec::new();
            for n in list {
                match owner(n) {
                    Some(parent) => parts.entry(parent.to_string()).or_default().push(Part {
                        name: n.to_string(),
                        verdict,
                    }),
                    _ => out.push(n.to_string()),
                }
            }
            out
        };
        let changed = top(changed, PartVerdict::Changed);
        let new = top(new, PartVerdict::New);
        for v in parts.values_mut() {
            v.sort();
        }
        Report {
            changed,
            new,
            parts,
            refused: self.refusals.clone(),
            ignored: self.ignored.clone(),
            callbacks: self
                .annotations
                .callbacks
                .iter()
                .map(|c| CallbackEntry {
                    kind: c.kind,
                    function: self.patched.sym(c.func).name.to_string(),
                })
                .collect(),
            states: self.annotations.states.clone(),
        }
    }
}
