//! `klpgen build --kernel SPEC ...` / `--kernels FILE`: one livepatch module per target, the
//! targets built in parallel within `-j` (at most `-j` at once, each with its share of the
//! jobs), each in its own work directory and report. What the targets share: the patches,
//! read and checked once; and klpgen's cache, whose work directories are keyed by tree (two
//! SPECs naming one tree take turns on it, as separate runs do). One target's refusal or
//! failure does not stop the others. The summary ends with a table (target, verdict, module,
//! sha256, time), the `--report` document has an entry per target (`klpgen-targets/1`,
//! docs/report.md), and the exit code is 0 when every target built, the code the targets
//! share when none did and all ended alike, else 5 ([`TargetsFailed`]).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use serde::Serialize;

use super::plan::{self, BuildArgs, BuildPlan, PlanTarget};
use super::spec::KernelSpec;
use super::summary::{self, Summary};
use crate::files::write_file;
use crate::package::Options;
use crate::patch::PatchFile;
use crate::process::Interrupt;
use crate::report::BuildReport;

/// The `--report` document's schema of a run with `--kernel`/`--kernels`.
pub const SCHEMA: &str = "klpgen-targets/1";

/// Exit code of a run whose targets did not all end alike (some built, or different failures).
pub const PARTIAL: u8 = crate::exit::PARTIAL;

/// A run over targets that did not all build: the exit code and the report's word
/// (`main::classify` reads them) and which targets failed how.
#[derive(Debug)]
pub struct TargetsFailed {
    pub code: u8,
    pub word: &'static str,
    pub text: String,
}

impl std::fmt::Display for TargetsFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}
impl std::error::Error for TargetsFailed {}

/// The `--report` document of a run over targets.
#[derive(Debug, Serialize)]
pub struct TargetsReport {
    pub schema: &'static str,
    pub klpgen_version: &'static str,
    /// `built` (every target), `partial`, or the word all targets share (`refused`...).
    pub result: String,
    pub exit_code: u8,
    /// Why the run stopped before any target started (a bad SPEC, an unreadable patch);
    /// absent otherwise (each target's report has its own).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// How many targets built, of how many.
    pub built: usize,
    pub total: usize,
    pub seconds: f64,
    pub targets: Vec<TargetEntry>,
}

/// One target's entry: its name, its SPEC as given, its time, and its report as a
/// single-target run writes it (`klpgen-report/1`).
#[derive(Debug, Serialize)]
pub struct TargetEntry {
    pub name: String,
    pub spec: String,
    pub seconds: f64,
    pub report: BuildReport,
}

/// One target of the run, as the workers take them.
struct Job {
    name: String,
    spec: KernelSpec,
}

/// What every target of the run shares, checked before any target starts.
struct Shared {
    jobs: Vec<Job>,
    patches: Vec<PatchFile>,
    package: Option<Options>,
}

fn prepare(args: &BuildArgs) -> Result<Shared> {
    let specs = args.specs()?;
    let names = target_names(&specs)?;
    // The patch check, once for all targets: every patch read and parsed.
    let patches = plan::load_patches(args)?;
    plan::module_name(args)?;
    let package = plan::package_options(args, &patches)?;
    let jobs = specs
        .into_iter()
        .zip(names)
        .map(|(spec, name)| Job { name, spec })
        .collect();
    Ok(Shared {
        jobs,
        patches,
        package,
    })
}

pub fn run(args: &BuildArgs) -> Result<()> {
    let start = Instant::now();
    let intr = Interrupt::install()?;
    // A run that fails before any target starts (a bad SPEC, an unreadable patch) still
    // writes its report, with no targets.
    let Shared {
        jobs,
        patches,
        package,
    } = match prepare(args) {
        Ok(s) => s,
        Err(e) => {
            if let Some(path) = &args.report {
                let (code, word) = crate::classify(&e);
                let rep = TargetsReport {
                    schema: SCHEMA,
                    klpgen_version: env!("CARGO_PKG_VERSION"),
                    result: word.to_string(),
                    exit_code: code,
                    message: Some(crate::error_text(&e)),
                    built: 0,
                    total: 0,
                    seconds: round_ms(start.elapsed().as_secs_f64()),
                    targets: Vec::new(),
                };
                write_file(path, &serde_json::to_vec_pretty(&rep)?)
                    .context("writing the report")?;
            }
            return Err(e);
        }
    };
    let total_jobs = plan::jobs(args);
    let workers = jobs.len().min(total_jobs).max(1);
    let share = (total_jobs / workers).max(1);
    if !args.quiet {
        crate::progress::message(&format!(
            "klpgen: {} target(s): {}; {workers} at a time, -j{share} each",
            jobs.len(),
            jobs.iter()
                .map(|j| j.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    let next = AtomicUsize::new(0);
    let done: Mutex<Vec<Option<TargetEntry>>> = Mutex::new((0..jobs.len()).map(|_| None).collect());
    let print = Mutex::new(());
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                let Some(job) = jobs.get(i) else { break };
                let entry = build_one(args, job, &patches, &package, share, &intr, &print);
                done.lock().unwrap_or_else(|e| e.into_inner())[i] = Some(entry);
            });
        }
    });
    let entries: Vec<TargetEntry> = done
        .into_inner()
        .unwrap_or_else(|e| e.into_inner())
        .into_iter()
        .flatten()
        .collect();
    // The table is the run's result: printed with -q too.
    crate::progress::pause();
    print_table(&entries);
    let (code, word) = outcome(&entries);
    let rep = TargetsReport {
        schema: SCHEMA,
        klpgen_version: env!("CARGO_PKG_VERSION"),
        result: word.to_string(),
        exit_code: code,
        message: None,
        built: entries.iter().filter(|e| e.report.exit_code == 0).count(),
        total: entries.len(),
        seconds: round_ms(start.elapsed().as_secs_f64()),
        targets: entries,
    };
    if let Some(path) = &args.report {
        let json = serde_json::to_vec_pretty(&rep)?;
        write_file(path, &json).context("writing the report")?;
    }
    if code == crate::exit::OK {
        return Ok(());
    }
    let failed: Vec<String> = rep
        .targets
        .iter()
        .filter(|e| e.report.exit_code != 0)
        .map(|e| format!("{} ({})", e.name, e.report.result))
        .collect();
    Err(TargetsFailed {
        code,
        word,
        text: format!(
            "{} of {} targets not built: {}",
            failed.len(),
            rep.total,
            failed.join(", ")
        ),
    }
    .into())
}

/// The run's exit code and word: 0 `built` when every target built; the code and word the
/// targets share when all ended alike; else [`PARTIAL`].
fn outcome(entries: &[TargetEntry]) -> (u8, &'static str) {
    let first = match entries.first() {
        Some(e) => e.report.exit_code,
        None => return (crate::exit::ERROR, "error"),
    };
    if entries.iter().all(|e| e.report.exit_code == first) {
        let word = match first {
            crate::exit::OK => "built",
            crate::exit::REFUSED => "refused",
            crate::exit::NO_CHANGE => "no-change",
            crate::exit::KERNEL_BUILD => "kernel-build-failed",
            _ => "error",
        };
        return (first, word);
    }
    (PARTIAL, "partial")
}

/// Build one target: its own report (every outcome recorded in it) and its time.
fn build_one(
    args: &BuildArgs,
    job: &Job,
    patches: &[PatchFile],
    package: &Option<Options>,
    jobs: usize,
    intr: &Interrupt,
    print: &Mutex<()>,
) -> TargetEntry {
    let start = Instant::now();
    let mut rep = BuildReport::new();
    rep.label = Some(job.name.clone());
    let t = PlanTarget {
        name: Some(job.name.clone()),
        output_dir: args.output.join(&job.name),
        jobs,
        patches: patches.to_vec(),
        package: package.clone(),
    };
    let result = build_target(args, job, t, intr, &mut rep, print);
    match &result {
        Ok(()) => rep.finish("built", crate::exit::OK, None),
        Err(e) => {
            let (code, word) = crate::classify(e);
            let text = crate::error_text(e);
            crate::progress::message(&format!("klpgen: {}: {text}", job.name));
            rep.finish(word, code, Some(text));
        }
    }
    TargetEntry {
        name: job.name.clone(),
        spec: job.spec.text.clone(),
        seconds: round_ms(start.elapsed().as_secs_f64()),
        report: rep,
    }
}

fn build_target(
    args: &BuildArgs,
    job: &Job,
    t: PlanTarget,
    intr: &Interrupt,
    rep: &mut BuildReport,
    print: &Mutex<()>,
) -> Result<()> {
    rep.stage("checking the target");
    // After Ctrl-C the targets not yet started end at once, each with its entry.
    intr.check()?;
    let target = super::open_target(args, &job.spec, rep, intr)?;
    let plan = BuildPlan::resolve(args, t, &target.tree, rep)?;
    let built = super::build_target(&plan, target, rep, intr)?;
    if !args.quiet {
        let _one_at_a_time = print.lock().unwrap_or_else(|e| e.into_inner());
        crate::progress::pause();
        println!("target {}:", job.name);
        summary::print(&Summary::new(
            &plan,
            &built.release,
            &built.parts,
            &built.module,
            rep,
        ));
    }
    Ok(())
}

/// Each target's name: its `name=`, else its release (given, or the build directory's
/// `include/config/kernel.release`), else `target-N`. Names are directories of the output and
/// must differ.
fn target_names(specs: &[KernelSpec]) -> Result<Vec<String>> {
    let names: Vec<String> = specs
        .iter()
        .enumerate()
        .map(|(i, s)| match &s.name {
            Some(n) => n.clone(),
            None => s.default_name(tree_release(s).as_deref(), i),
        })
        .collect();
    for (i, n) in names.iter().enumerate() {
        if names[..i].contains(n) {
            bail!("two targets are named {n}; give one of them another name= in its SPEC");
        }
    }
    Ok(names)
}

/// The release a build directory (or in-tree source directory) says it builds.
fn tree_release(s: &KernelSpec) -> Option<String> {
    let dir: PathBuf = s.build.clone().or_else(|| s.source.clone())?;
    release_of(&dir)
}

fn release_of(dir: &Path) -> Option<String> {
    let text = std::fs::read_to_string(dir.join("include/config/kernel.release")).ok()?;
    Some(text.trim().to_string()).filter(|r| !r.is_empty())
}

/// The table after the targets' summaries: target, verdict, module, sha256, time.
fn print_table(entries: &[TargetEntry]) {
    let rows: Vec<[String; 5]> = entries
        .iter()
        .map(|e| {
            let m = e.report.module.as_ref();
            [
                e.name.clone(),
                e.report.result.clone(),
                m.map_or("-".into(), |m| m.path.clone()),
                m.map_or("-".into(), |m| m.sha256.clone()),
                format!("{:.1}s", e.seconds),
            ]
        })
        .collect();
    let head = ["TARGET", "VERDICT", "MODULE", "SHA256", "TIME"];
    let mut width = head.map(str::len);
    for r in &rows {
        for (w, c) in width.iter_mut().zip(r) {
            *w = (*w).max(c.len());
        }
    }
    let line = |cells: [&str; 5]| {
        let mut out = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i == 4 {
                out.push_str(&format!("{c:>w$}", w = width[i]));
            } else {
                out.push_str(&format!("{c:<w$}  ", w = width[i]));
            }
        }
        out
    };
    println!("{}", line(head));
    for r in &rows {
        println!("{}", line([&r[0], &r[1], &r[2], &r[3], &r[4]]));
    }
}

fn round_ms(s: f64) -> f64 {
    (s * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &str, code: u8) -> TargetEntry {
        let mut report = BuildReport::new();
        report.finish("x", code, None);
        TargetEntry {
            name: name.into(),
            spec: String::new(),
            seconds: 0.0,
            report,
        }
    }

    #[test]
    fn the_exit_code_says_whether_all_built() {
        assert_eq!(outcome(&[entry("a", 0), entry("b", 0)]), (0, "built"));
        assert_eq!(outcome(&[entry("a", 2), entry("b", 2)]), (2, "refused"));
        assert_eq!(
            outcome(&[entry("a", 0), entry("b", 2)]),
            (PARTIAL, "partial")
        );
        assert_eq!(
            outcome(&[entry("a", 1), entry("b", 2)]),
            (PARTIAL, "partial")
        );
    }

    #[test]
    fn names_come_from_releases_and_must_differ() {
        let tmp = tempfile::tempdir().unwrap();
        let b = tmp.path().join("b");
        std::fs::create_dir_all(b.join("include/config")).unwrap();
        std::fs::write(b.join("include/config/kernel.release"), "6.12.1-test\n").unwrap();
        let specs = [
            KernelSpec::parse(&format!("build={}", b.display())).unwrap(),
            KernelSpec::parse("release=6.1.0-57-amd64").unwrap(),
            KernelSpec::parse("build=/nowhere").unwrap(),
        ];
        assert_eq!(
            target_names(&specs).unwrap(),
            ["6.12.1-test", "6.1.0-57-amd64", "target-3"]
        );
        let twice = [specs[0].clone(), specs[0].clone()];
        let e = target_names(&twice).unwrap_err();
        assert!(
            format!("{e}").contains("two targets are named 6.12.1-test"),
            "{e}"
        );
    }
}
