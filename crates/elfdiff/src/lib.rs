//! elfdiff: correlate and compare an original and a patched relocatable ELF object (x86-64
//! kernel objects built with `-ffunction-sections -fdata-sections`), report changed and new
//! functions and refusals, and plan the contents of a livepatch object.
//!
//! **This crate never spawns processes, writes files or prints.** Callers hand it bytes.

pub mod arch;
pub mod callgraph;
pub mod diff;
pub mod dwarf;
pub mod error;
pub mod explain;
pub mod model;
pub mod names;
pub mod plan;

pub use diff::{Diff, FuncResult, Refusal, Verdict};
pub use error::Error;
pub use model::{Object, Orig, Patched};
pub use plan::{Plan, PlanOptions};

use serde::Serialize;

/// The machine-readable summary of one object pair (`klpgen diff --format json`).
#[derive(Debug, Clone, Serialize, Default, PartialEq, Eq)]
pub struct Report {
    /// Changed functions, named as in the original object.
    pub changed: Vec<String>,
    /// New functions, named as in the patched object.
    pub new: Vec<String>,
    pub refused: Vec<Refusal>,
    pub ignored: Vec<String>,
}

impl Diff<'_, '_> {
    pub fn report(&self) -> Report {
        Report {
            changed: self.changed().into_iter().map(String::from).collect(),
            new: self.new_functions().into_iter().map(String::from).collect(),
            refused: self.refusals.clone(),
            ignored: self.ignored.clone(),
        }
    }
}
