//! `klpgen depscan` (hidden, for development and `cargo xtask e2e depscan`): which units the
//! edited files affect, as `klpgen build` decides it — from the target's records, and from
//! klpgen's dependency scan as for a target without any (`--no-target-records`) — printed as
//! JSON with the scan's figures. Nothing is built besides kbuild's `prepare` in klpgen's build
//! directory (the one `klpgen build` of the same tree uses).

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Result;

use crate::depscan::{self, Inputs};
use crate::kbuild::{self, DiffBuild};
use crate::kernel::{Pieces, Tree};
use crate::process::Interrupt;

#[derive(clap::Args, Debug)]
pub struct DepscanArgs {
    /// Kernel source tree.
    #[arg(short = 's', long)]
    pub sourcedir: PathBuf,
    /// The target kernel's build directory (default: the source tree).
    #[arg(long)]
    pub builddir: Option<PathBuf>,
    /// The target kernel's .config (default: BUILDDIR/.config).
    #[arg(short = 'c', long)]
    pub config: Option<PathBuf>,
    /// Decide without the target's kbuild records (as for a distribution's headers).
    #[arg(long)]
    pub no_target_records: bool,
    /// Parallel jobs for kbuild's prepare.
    #[arg(short = 'j', long = "jobs", default_value_t = 2)]
    pub jobs: usize,
    /// Edited files, relative to the source tree.
    #[arg(required = true)]
    pub files: Vec<String>,
}

pub fn run(args: DepscanArgs) -> Result<()> {
    crate::progress::init(false, false);
    let intr = Interrupt::install()?;
    let tree = Tree::open(
        &args.sourcedir,
        &Pieces {
            build: args.builddir.as_deref(),
            config: args.config.as_deref(),
            vmlinux: None,
            modules: None,
        },
    )?;
    let dir = crate::build::tree_workdir(&tree);
    std::fs::create_dir_all(&dir)?;
    let _lock = crate::build::lock_tree(&dir, &tree.source, crate::build::Wait::Yes, &intr)?;
    let include = kbuild::install_header(&dir)?;
    let own = DiffBuild::prepare(&tree, dir.join("kbuild"), include, &intr)?;
    let logs = dir.join("depscan-logs");
    std::fs::create_dir_all(&logs)?;
    let start = Instant::now();
    let affected = depscan::affected(
        &Inputs {
            tree: &tree,
            own: &own,
            target_records: !args.no_target_records,
            jobs: args.jobs,
            logs: &logs,
            intr: &intr,
        },
        &args.files,
    )?;
    let doc = serde_json::json!({
        "files": args.files,
        "exact": affected.exact,
        "candidates": affected.candidates,
        "included_sources": affected.included_sources,
        "stats": affected.stats,
        "seconds": start.elapsed().as_secs_f64(),
        "build_dir": own.dir.display().to_string(),
    });
    println!("{}", serde_json::to_string_pretty(&doc)?);
    Ok(())
}
