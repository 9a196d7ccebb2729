//! What every phase of one target's pipeline reads, passed as one value: the plan, the
//! target, its work directory and the interrupt.

use super::plan::BuildPlan;
use super::target::Target;
use super::workspace::Workspace;
use crate::process::Interrupt;

pub struct Ctx<'a> {
    pub plan: &'a BuildPlan,
    /// Its tree is the mirror for in-tree builds.
    pub target: &'a Target,
    pub ws: &'a Workspace,
    /// Stops children and the run on SIGINT/SIGTERM.
    pub intr: &'a Interrupt,
}
