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
pub mod model;
pub mod names;
pub mod plan;
mod propagate;
mod refs;
pub mod refusal;
mod runtime_const;
mod sections;

pub use annot::{Annotations, CallbackKind};
pub use diff::{Diff, FuncResult, Ignored, Refusal, Verdict};
pub use error::Error;
pub use model::{Object, Orig, Patched};
pub use plan::{Plan, PlanOptions};
pub use refusal::RefusalKind;

use serde::Serialize;

/// The machine-readable summary of one object pair (`klpgen diff --format json`).
#[derive(Debug, Clone, Serialize, Default, PartialEq, Eq)]
pub struct Report {
    /// Changed functions, named as in the original object.
    pub changed: Vec<String>,
    /// New functions, named as in the patched object.
    pub new: Vec<String>,
    pub refused: Vec<Refusal>,
    /// Differences annotations (`KLPGEN_IGNORE_*`) left out.
    pub ignored: Vec<Ignored>,
    /// Livepatch callbacks (`KLPGEN_*_CALLBACK`) of the patched object.
    pub callbacks: Vec<CallbackEntry>,
}

/// One callback of the patched object, for reports.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct CallbackEntry {
    /// `pre_patch`, `post_patch`, `pre_unpatch` or `post_unpatch`.
    pub kind: CallbackKind,
    pub function: String,
}

impl Diff<'_, '_> {
    pub fn report(&self) -> Report {
        Report {
            changed: self.changed().into_iter().map(String::from).collect(),
            new: self.new_functions().into_iter().map(String::from).collect(),
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
        }
    }
}
