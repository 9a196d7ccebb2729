//! `cargo xtask e2e`: builds livepatch modules from the cases under tests/e2e with klpgen and
//! checks them in a qemu guest running the test kernel.
//!
//! First, on the test kernel: the self-diff of every object (`selfdiff.rs`), the syscall check
//! (`syscallcheck.rs`), the mismatched targets (`mismatch.rs`), the kernel-header fixtures
//! (`kfixtures.rs`) and the dependency scan against the kernel's records (`depscan.rs`). Then
//! each case `tests/e2e/<case>/` is built with `klpgen build`, the source
//! tree must be left as it was, and before booting `klpgen check` must pass on the module and
//! fail with the expected key on four corrupted copies (wrong sympos, no `livepatch=Y`, a
//! renamed klp symbol, a guard naming another kernel) and against the doctored vmlinux and
//! Module.symvers; on ORC kernels every function of the module must have ORC (`orccheck.rs`).
//! In qemu (`guest.rs`): the copy whose guard names another kernel build is refused, the probe
//! fails, insmod, enabled=1 and transition=0, the probe passes, disable, rmmod, the probe fails, and no
//! "Call Trace" or other complaint on the console; `klpgen list` on the guest's sysfs tree of
//! the loaded module finds that module by build-id and its records equal to sysfs
//! (`listcheck.rs`). Case files: `case.patch`, `probe.sh`, `args`,
//! `README`; `expect` judges klpgen's answer alone without booting (exit code, stderr lines,
//! `--report` values by JSON pointer); `stdout-contains`/`stderr-contains`; `console-expect`
//! (lines in order); `oot-module`, `target-module` (a module loaded first); `reproducible` (a
//! second build elsewhere is byte-identical); `kernel` (a test-kernel variant, such as `noibt`);
//! `second.patch` (with `second-args`): a second livepatch built from it (module
//! `livepatch-<case>-second`, checked like the first), loaded once the first is enabled, which
//! it replaces — the first must go away and be unloaded, the probe pass again, and the second is
//! the one disabled and unloaded at the end (for handing over `klp_state`).
//! After the cases, `multi-target` (`multitarget.rs`): one `klpgen build --kernel A --kernel B`
//! run for the test kernel and its `noibt` variant, each module booted in its own kernel, and a
//! run with one target refused that still builds the other and exits 5.

use crate::case::{
    build_klpgen, fresh_case_dirs, klpgen_command, module_name, patch_applies, run_klpgen,
    KLPGEN_TIMEOUT,
};
use crate::guest;
use crate::kernel::{self, Kernel};
use crate::kfixtures;
use crate::mismatch::Doctored;
use crate::util;
use anyhow::{bail, Context, Result};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Cases not started within this time of the first one fail as skipped, keeping a run bounded.
const E2E_BUDGET: Duration = Duration::from_secs(45 * 60);

/// One directory under tests/e2e.
#[derive(Debug)]
pub struct Case {
    pub name: String,
    pub dir: PathBuf,
    /// Extra arguments for `klpgen build` (from the `args` file).
    pub args: Vec<String>,
    /// Present for must-fail cases.
    pub expect: Option<Expect>,
    /// An out-of-tree module under tests/e2e-modules/ the case patches (file `oot-module`):
    /// built against the test kernel, loaded before the livepatch, and the patch applies to
    /// its sources.
    pub oot: Option<String>,
    /// An in-tree module of the test kernel the patch changes (file `target-module`, the
    /// `.ko` path relative to the kernel build): loaded before the livepatch like `oot-module`.
    pub target_module: Option<String>,
    /// File `reproducible`: the module is built a second time with another klpgen cache and
    /// output directory and must be byte-identical.
    pub reproducible: bool,
    /// File `kernel`: the test-kernel variant the case runs on (`tests/e2e/kernel-<name>.fragment`
    /// merged after kernel.fragment); absent: the main test kernel.
    pub kernel: Option<String>,
    /// File `second.patch`: a second, replacing livepatch, with the arguments of
    /// `second-args`.
    pub second: Option<(PathBuf, Vec<String>)>,
}

/// What a case checked on klpgen's answer alone (no boot) expects from `klpgen build`: a
/// refusal, or a build with a warning.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Expect {
    pub exit: Option<i32>,
    pub stderr: Vec<String>,
    /// `report=POINTER=JSON`: the `--report` document's value at the JSON pointer equals JSON.
    pub report: Vec<(String, serde_json::Value)>,
}

impl Case {
    fn patch(&self) -> PathBuf {
        self.dir.join("case.patch")
    }

    /// Name of the module inside the kernel.
    pub fn module_name(&self) -> String {
        module_name(&self.name)
    }
}

/// Build an out-of-tree module from a copy of `src` against the test kernel; returns its .ko.
fn build_oot_module(k: &Kernel, src: &Path, dir: &Path) -> Result<PathBuf> {
    if dir.exists() {
        fs::remove_dir_all(dir)?;
    }
    fs::create_dir_all(dir)?;
    for e in fs::read_dir(src).with_context(|| format!("cannot list {}", src.display()))? {
        let e = e?;
        if e.file_type()?.is_file() {
            fs::copy(e.path(), dir.join(e.file_name()))?;
        }
    }
    util::run(
        Command::new("make")
            .arg("-C")
            .arg(&k.build)
            .arg(format!("M={}", dir.display()))
            .arg("RUSTC=/usr/bin/rustc")
            .arg("modules")
            .env("PATH", util::path_with_cargo_bin())
            .stdin(Stdio::null()),
    )?;
    let ko = fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|x| x == "ko"))
        .with_context(|| format!("no module built from {}", src.display()))?;
    Ok(ko)
}

pub(crate) fn valid_case_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase() || c.is_ascii_digit())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
}

/// Parses an `expect` file: lines `exit=N`, `stderr=SUBSTRING` and `report=POINTER=JSON`.
pub fn parse_expect(text: &str) -> Result<Expect> {
    let mut e = Expect::default();
    for line in text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        match line.split_once('=') {
            Some(("exit", n)) => {
                e.exit = Some(
                    n.trim()
                        .parse()
                        .with_context(|| format!("bad exit code {n:?}"))?,
                )
            }
            Some(("stderr", s)) => e.stderr.push(s.to_string()),
            Some(("report", r)) => {
                let (pointer, value) = r
                    .split_once('=')
                    .filter(|(p, _)| p.starts_with('/'))
                    .with_context(|| format!("report= wants /POINTER=JSON, not {r:?}"))?;
                let value = serde_json::from_str(value)
                    .with_context(|| format!("report=: bad JSON {value:?}"))?;
                e.report.push((pointer.to_string(), value));
            }
            _ => bail!("unrecognised expect line {line:?}"),
        }
    }
    if e.exit.is_none() && e.stderr.is_empty() && e.report.is_empty() {
        bail!("expect file has none of exit=, stderr=, report=");
    }
    Ok(e)
}

fn e2e_dir() -> PathBuf {
    util::repo_root().join("tests/e2e")
}

/// All cases, sorted by name.
pub fn load_cases() -> Result<Vec<Case>> {
    let root = e2e_dir();
    let mut cases = Vec::new();
    for entry in fs::read_dir(&root).with_context(|| format!("cannot list {}", root.display()))? {
        let entry = entry?;
        if !entry.file_type()?.is_dir() {
            continue;
        }
        let name = entry.file_name().to_string_lossy().into_owned();
        if !valid_case_name(&name) {
            bail!("case directory name {name:?} must be lowercase letters, digits, '-' and '_'");
        }
        let dir = entry.path();
        let args = match fs::read_to_string(dir.join("args")) {
            Ok(s) => s.split_whitespace().map(String::from).collect(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(e).context(format!("{name}/args")),
        };
        let expect = match fs::read_to_string(dir.join("expect")) {
            Ok(s) => Some(parse_expect(&s).with_context(|| format!("{name}/expect"))?),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(e).context(format!("{name}/expect")),
        };
        let oot = match fs::read_to_string(dir.join("oot-module")) {
            Ok(s) => Some(s.trim().to_string()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(e).context(format!("{name}/oot-module")),
        };
        let target_module = match fs::read_to_string(dir.join("target-module")) {
            Ok(s) => Some(s.trim().to_string()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(e).context(format!("{name}/target-module")),
        };
        let reproducible = dir.join("reproducible").is_file();
        let kernel = match fs::read_to_string(dir.join("kernel")) {
            Ok(s) => Some(s.trim().to_string()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(e).context(format!("{name}/kernel")),
        };
        if let Some(v) = &kernel {
            if !valid_case_name(v) || !kernel::fragment_paths(Some(v))[1].is_file() {
                bail!("{name}/kernel names {v:?}, which has no tests/e2e/kernel-{v}.fragment");
            }
        }
        let second_patch = dir.join("second.patch");
        let second = if second_patch.is_file() {
            let args = match fs::read_to_string(dir.join("second-args")) {
                Ok(s) => s.split_whitespace().map(String::from).collect(),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
                Err(e) => return Err(e).context(format!("{name}/second-args")),
            };
            Some((second_patch, args))
        } else {
            None
        };
        if second.is_some() && (expect.is_some() || oot.is_some()) {
            bail!("{name}: second.patch goes with a case that boots a module of the kernel tree");
        }
        cases.push(Case {
            name,
            dir,
            args,
            expect,
            oot,
            target_module,
            reproducible,
            kernel,
            second,
        });
    }
    cases.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(cases)
}

struct Outcome {
    passed: bool,
    summary: String,
}

fn fail(summary: impl Into<String>) -> Outcome {
    Outcome {
        passed: false,
        summary: summary.into(),
    }
}

fn run_case(
    case: &Case,
    klpgen: &Path,
    k: &Kernel,
    workdir: &Path,
    doctored: &Doctored,
) -> Result<Outcome> {
    let (output, logs) = fresh_case_dirs(workdir, &case.name)?;
    if !case.patch().is_file() {
        return Ok(fail("case.patch is missing"));
    }
    // An out-of-tree module case: build the module as the running kernel has it.
    // `@KBUILD@` in `args` stands for the test kernel's build directory (its signing key...).
    let mut args: Vec<String> = case
        .args
        .iter()
        .map(|a| a.replace("@KBUILD@", &k.build.display().to_string()))
        .collect();
    let oot_ko = match &case.oot {
        Some(dir) => {
            let src = util::repo_root().join("tests/e2e-modules").join(dir);
            let ko = build_oot_module(k, &src, &logs.join("oot-build"))?;
            args.extend([
                "--oot-module".to_string(),
                ko.display().to_string(),
                "--oot-module-src".to_string(),
                src.display().to_string(),
            ]);
            Some(ko)
        }
        None => case.target_module.as_ref().map(|m| k.build.join(m)),
    };
    let patch_root = match &case.oot {
        Some(dir) => util::repo_root().join("tests/e2e-modules").join(dir),
        None => k.src.clone(),
    };
    let (ok, text) = patch_applies(&patch_root, &case.patch())?;
    if !ok {
        eprintln!("{}", util::indent(&text));
        return Ok(fail(format!(
            "case.patch does not apply to {}",
            patch_root.display()
        )));
    }

    let report_path = logs.join("report.json");
    if case.expect.is_some() {
        args.extend(["--report".to_string(), report_path.display().to_string()]);
    }
    let cmd = klpgen_command(klpgen, k, &case.name, &output, &args, &case.patch());
    eprintln!("  $ {}", util::display(&cmd));
    let run = run_klpgen(cmd, &logs)?;

    // klpgen must leave the (shared, cached) source tree as it found it.
    let (ok, text) = patch_applies(&patch_root, &case.patch())?;
    if !ok {
        eprintln!("{}", util::indent(&text));
        let restored = Command::new("patch")
            .args(["-p1", "-R", "--batch", "-s", "-d"])
            .arg(&k.src)
            .arg("-i")
            .arg(case.patch())
            .stdin(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        eprintln!("{}", run.show());
        return Ok(fail(format!(
            "klpgen left the kernel source tree modified ({})",
            if restored {
                "reverted it"
            } else {
                "COULD NOT REVERT: delete the kernel cache"
            }
        )));
    }

    let Some(status) = run.status else {
        eprintln!("{}", run.show());
        return Ok(fail(format!(
            "klpgen build timed out after {}s",
            KLPGEN_TIMEOUT.as_secs()
        )));
    };

    if let Some(expect) = &case.expect {
        let problems = expect_problems(expect, status, &run.stderr, &report_path);
        if problems.is_empty() {
            let what = if status.success() {
                "klpgen answered as expected"
            } else {
                "klpgen failed as expected"
            };
            return Ok(Outcome {
                passed: true,
                summary: format!("{what} ({status}, {}s)", run.seconds),
            });
        }
        eprintln!("{}", run.show());
        return Ok(fail(problems.join("; ")));
    }

    if !status.success() {
        eprintln!("{}", run.show());
        return Ok(fail(format!("klpgen build failed ({status})")));
    }
    if let Some(problem) = contains_problem(&case.dir, &run.stdout, &run.stderr) {
        eprintln!("{}", run.show());
        return Ok(fail(problem));
    }
    let module = output.join(format!("livepatch-{}.ko", case.name));
    if !module.is_file() {
        eprintln!("{}", run.show());
        return Ok(fail(format!("{} was not produced", module.display())));
    }
    if case.reproducible {
        if let Err(problem) = rebuild_identical(klpgen, k, case, &args, &module, &logs)? {
            return Ok(fail(problem));
        }
    }
    let checked = match check_module(
        klpgen,
        k,
        &module,
        &run.stdout,
        &logs,
        oot_ko.as_deref().and_then(Path::parent),
        doctored,
    )? {
        Ok(summary) => summary,
        Err(problem) => return Ok(fail(problem)),
    };
    // On ORC kernels the livepatch must carry unwind data for all of its functions (from the
    // delayed objtool run on the linked module, or klpgen's run on the livepatch object).
    let config = fs::read_to_string(k.build.join(".config"))?;
    let checked = if config.lines().any(|l| l == "CONFIG_UNWINDER_ORC=y") {
        match crate::orccheck::coverage(
            &fs::read(&module)?,
            crate::orccheck::Layout::of_source(&k.src)?,
        ) {
            Ok((n, uncovered)) if uncovered.is_empty() => {
                format!("{checked}, {n} ORC entries cover every function")
            }
            Ok((_, uncovered)) => {
                return Ok(fail(format!(
                    "functions of the module without ORC entries: {}",
                    uncovered.join(", ")
                )))
            }
            Err(e) => return Ok(fail(format!("ORC data of the module: {e:#}"))),
        }
    } else {
        checked
    };
    let second = match &case.second {
        Some((patch, args)) => {
            match build_second(klpgen, k, case, patch, args, workdir, doctored)? {
                Ok(built) => Some(built),
                Err(problem) => return Ok(fail(problem)),
            }
        }
        None => None,
    };
    let checked = match &second {
        Some((_, summary)) => format!("{checked}; second module: {summary}"),
        None => checked,
    };
    let second_name = format!("{}_second", case.module_name());
    let probe = match fs::read(case.dir.join("probe.sh")) {
        Ok(p) => p,
        Err(e) => return Ok(fail(format!("cannot read probe.sh: {e}"))),
    };
    let module_name = case.module_name();
    // A copy whose guard names another build of the kernel: the guest must refuse it.
    let wrong = match other_kernel_copy(&fs::read(&module)?)? {
        Some(bytes) => {
            let p = logs.join("wrong-kernel.ko");
            fs::write(&p, bytes)?;
            Some(p)
        }
        None => {
            return Ok(fail(
                "the module has no guard (klpgen_target_version)".to_string(),
            ))
        }
    };
    let report = guest::boot(&guest::Spec {
        kernel: &k.bzimage(),
        machine: guest::TEST_KERNEL,
        module: &module,
        module_name: &module_name,
        probe: &probe,
        workdir: &logs,
        preload: oot_ko.as_deref(),
        cross: k.cross,
        late: None,
        second: second
            .as_ref()
            .map(|(ko, _)| (ko.as_path(), second_name.as_str())),
        wrong_kernel: wrong.as_deref(),
    })?;
    let mut fails = report.failed_checks();
    // `klpgen list` on what the guest's sysfs showed while the module was loaded.
    let mut listed = String::new();
    if report.values.get("insmod").map(String::as_str) == Some("0") {
        match crate::listcheck::check(klpgen, &report.sysfs, &module_name, &module, &logs)? {
            Ok(s) => listed = format!(", {s}"),
            Err(problem) => fails.push(problem),
        }
    }
    // Optional `console-expect`: lines the guest's console must show, in this order (kernel
    // messages such as a callback's pr_info, interleaved with /init's `KLPGEN-E2E:` lines).
    let mut expected = 0;
    if let Ok(wanted) = fs::read_to_string(case.dir.join("console-expect")) {
        let lines = console_expect_lines(&wanted);
        expected = lines.len();
        if let Err(missing) = console_in_order(&report.console, &lines) {
            fails.push(missing);
        }
    }
    if fails.is_empty() {
        let console = if expected > 0 {
            format!(", {expected} console lines in order")
        } else {
            String::new()
        };
        return Ok(Outcome {
            passed: true,
            summary: format!(
                "klpgen {}s, {checked}, boot {:.0}s{console}{listed}",
                run.seconds, report.seconds
            ),
        });
    }
    eprintln!(
        "  --- console tail ({}) ---\n{}",
        report.console_path.display(),
        util::indent(&util::tail_lines(&report.console, 40))
    );
    for f in &fails {
        eprintln!("  check failed: {f}");
    }
    Ok(fail(fails[0].clone()))
}

/// Build the case's second, replacing livepatch from `patch` (module `livepatch-<case>-second`),
/// as the first: the tree left as it was, `klpgen check` passing and rejecting corrupted
/// copies. `Ok(Err(problem))` is a test failure.
fn build_second(
    klpgen: &Path,
    k: &Kernel,
    case: &Case,
    patch: &Path,
    args: &[String],
    workdir: &Path,
    doctored: &Doctored,
) -> Result<Result<(PathBuf, String), String>> {
    let name = format!("{}-second", case.name);
    let (output, logs) = fresh_case_dirs(workdir, &name)?;
    let (ok, text) = patch_applies(&k.src, patch)?;
    if !ok {
        eprintln!("{}", util::indent(&text));
        return Ok(Err(format!(
            "second.patch does not apply to {}",
            k.src.display()
        )));
    }
    let cmd = klpgen_command(klpgen, k, &name, &output, args, patch);
    eprintln!("  $ {}", util::display(&cmd));
    let run = run_klpgen(cmd, &logs)?;
    if !patch_applies(&k.src, patch)?.0 {
        return Ok(Err(
            "klpgen left the kernel source tree modified by second.patch".into(),
        ));
    }
    if !run.status.is_some_and(|s| s.success()) {
        eprintln!("{}", run.show());
        return Ok(Err(format!(
            "klpgen build of second.patch failed ({:?})",
            run.status
        )));
    }
    let module = output.join(format!("livepatch-{name}.ko"));
    if !module.is_file() {
        return Ok(Err(format!("{} was not produced", module.display())));
    }
    match check_module(klpgen, k, &module, &run.stdout, &logs, None, doctored)? {
        Ok(summary) => Ok(Ok((module, summary))),
        Err(problem) => Ok(Err(format!("second module: {problem}"))),
    }
}

/// Build the case's module again from scratch elsewhere (another klpgen cache, so every
/// object is compiled anew in another directory, and another output directory): it must be
/// byte-identical to `module`. Ok(Err(problem)) when it is not.
fn rebuild_identical(
    klpgen: &Path,
    k: &Kernel,
    case: &Case,
    args: &[String],
    module: &Path,
    logs: &Path,
) -> Result<Result<(), String>> {
    let again = logs.join("again");
    let cache = logs.join("again-cache");
    for d in [&again, &cache] {
        if d.exists() {
            fs::remove_dir_all(d)?;
        }
    }
    let mut cmd = klpgen_command(
        klpgen,
        k,
        &case.name,
        &again.join("out"),
        args,
        &case.patch(),
    );
    cmd.env("KLPGEN_CACHE_DIR", &cache);
    let run = run_klpgen(cmd, &again)?;
    if !run.status.is_some_and(|s| s.success()) {
        eprintln!("{}", run.show());
        return Ok(Err(
            "the second, cold build for the reproducibility check failed".into(),
        ));
    }
    let first = fs::read(module)?;
    let second = fs::read(
        again
            .join("out")
            .join(module.file_name().unwrap_or_default()),
    )?;
    // The second cache is only for this check.
    let _ = fs::remove_dir_all(&cache);
    if first != second {
        return Ok(Err(format!(
            "not reproducible: a cold rebuild in another cache gave a different module ({} vs {} bytes; kept in {})",
            first.len(),
            second.len(),
            again.display()
        )));
    }
    eprintln!(
        "  reproducible: a cold rebuild in another cache and output directory is byte-identical ({} bytes, {}s)",
        first.len(),
        run.seconds
    );
    Ok(Ok(()))
}

/// What in klpgen's answer differs from a case's `expect` file: the exit code, lines of
/// stderr, values of the `--report` document at `report_path`. Empty: as expected.
pub(crate) fn expect_problems(
    expect: &Expect,
    status: std::process::ExitStatus,
    stderr: &str,
    report_path: &Path,
) -> Vec<String> {
    let mut problems = Vec::new();
    if let Some(code) = expect.exit {
        if status.code() != Some(code) {
            problems.push(format!("klpgen {status}, expected exit code {code}"));
        }
    }
    for s in &expect.stderr {
        if !stderr.contains(s.as_str()) {
            problems.push(format!("stderr lacks {s:?}"));
        }
    }
    if !expect.report.is_empty() {
        match fs::read(report_path)
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        {
            Some(doc) => problems.extend(report_problems(&doc, &expect.report)),
            None => problems.push(format!("no readable {}", report_path.display())),
        }
    }
    problems
}

/// A case's optional `stdout-contains` and `stderr-contains`: lines klpgen's output (what was
/// built) and its messages (warnings) must contain. `Some(problem)` names what is missing.
pub(crate) fn contains_problem(dir: &Path, stdout: &str, stderr: &str) -> Option<String> {
    for (file, text) in [("stdout-contains", stdout), ("stderr-contains", stderr)] {
        if let Ok(wanted) = fs::read_to_string(dir.join(file)) {
            let missing: Vec<&str> = wanted
                .lines()
                .filter(|l| !l.trim().is_empty() && !text.contains(l.trim()))
                .collect();
            if !missing.is_empty() {
                return Some(format!("klpgen {file} check: lacks {missing:?}"));
            }
        }
    }
    None
}

/// What in the report differs from the `report=` expectations.
fn report_problems(doc: &serde_json::Value, wanted: &[(String, serde_json::Value)]) -> Vec<String> {
    wanted
        .iter()
        .filter_map(|(pointer, value)| match doc.pointer(pointer) {
            Some(v) if v == value => None,
            Some(v) => Some(format!("report {pointer} is {v}, expected {value}")),
            None => Some(format!("report has no {pointer}")),
        })
        .collect()
}

/// The lines of a `console-expect` file (blank lines and `#` comments skipped).
pub(crate) fn console_expect_lines(text: &str) -> Vec<&str> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect()
}

/// Whether each of `wanted` occurs in `console` (as a substring of a line), each on a later
/// line than the one before; the error names the first that does not.
pub(crate) fn console_in_order(console: &str, wanted: &[&str]) -> Result<(), String> {
    let mut lines = console.lines().map(|l| l.trim_end_matches('\r'));
    let mut last = "the start";
    for w in wanted {
        if !lines.any(|l| l.contains(w)) {
            return Err(format!(
                "console-expect: {w:?} does not appear on the console after {last:?}"
            ));
        }
        last = w;
    }
    Ok(())
}

/// The `.klp.sym.*` names `klpgen build` printed, in order.
pub(crate) fn klp_symbols_of(stdout: &str) -> Vec<String> {
    stdout
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with(".klp.sym."))
        .map(String::from)
        .collect()
}

/// `bytes` with the NUL-terminated string `from` (it must occur exactly once as a whole
/// string) overwritten by `to` of the same length.
fn replace_string(bytes: &[u8], from: &str, to: &str) -> Result<Vec<u8>> {
    if from.len() != to.len() {
        bail!("cannot replace {from:?} by {to:?}: lengths differ");
    }
    let pat: Vec<u8> = from.bytes().chain([0]).collect();
    let hits: Vec<usize> = bytes
        .windows(pat.len())
        .enumerate()
        .filter(|(i, w)| *w == pat.as_slice() && (*i == 0 || bytes[i - 1] == 0))
        .map(|(i, _)| i)
        .collect();
    let [at] = hits.as_slice() else {
        bail!(
            "{from:?} occurs {} times in the module, not once",
            hits.len()
        );
    };
    let mut out = bytes.to_vec();
    out[*at..*at + to.len()].copy_from_slice(to.as_bytes());
    Ok(out)
}

/// A klp symbol name with a position that cannot be right: 9 for a unique name (position
/// 0), 0 (ambiguous) for one of several.
fn wrong_sympos(sym: &str) -> Option<String> {
    let (head, pos) = sym.rsplit_once(',')?;
    if pos.is_empty() || !pos.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let new = if pos.bytes().all(|c| c == b'0') {
        "9".repeat(pos.len())
    } else {
        "0".repeat(pos.len())
    };
    Some(format!("{head},{new}"))
}

/// A klp symbol name whose symbol cannot exist (`#` is no C identifier character).
fn renamed_symbol(sym: &str) -> Option<String> {
    let rest = sym.strip_prefix(".klp.sym.")?;
    let (obj, name) = rest.split_once('.')?;
    let mut chars = name.chars();
    chars.next()?;
    Some(format!(".klp.sym.{obj}.#{}", chars.as_str()))
}

/// A copy of a module built by klpgen whose guard names another build of its kernel: the
/// last character of its `klpgen_target_version` string changed (same length). None when the
/// module has no guard.
pub(crate) fn other_kernel_copy(ko: &[u8]) -> Result<Option<Vec<u8>>> {
    use object::{Object as _, ObjectSection as _, ObjectSymbol as _};
    let Ok(file) = object::File::parse(ko) else {
        return Ok(None);
    };
    let Some(sym) = file
        .symbols()
        .find(|s| s.name() == Ok("klpgen_target_version"))
    else {
        return Ok(None);
    };
    let Some(section) = sym
        .section_index()
        .and_then(|i| file.section_by_index(i).ok())
    else {
        return Ok(None);
    };
    let Some((offset, _)) = section.file_range() else {
        return Ok(None);
    };
    // The string's last character (before its NUL).
    let len = sym.size().saturating_sub(1);
    if len == 0 {
        bail!("klpgen_target_version is empty");
    }
    let at = usize::try_from(offset + sym.address() + len - 1)?;
    let mut out = ko.to_vec();
    let c = out
        .get_mut(at)
        .context("klpgen_target_version outside the file")?;
    *c = if *c == b'x' { b'y' } else { b'x' };
    Ok(Some(out))
}

/// The hand-corrupted copies of a module: (file stem, bytes, the finding key they must get).
pub(crate) fn corruptions(
    ko: &[u8],
    klp_syms: &[String],
) -> Result<Vec<(&'static str, Vec<u8>, &'static str)>> {
    let mut out = Vec::new();
    // Every livepatch=Y entry (.modinfo may start right after another section's last byte).
    let (pat, mut no_lp) = (b"livepatch=Y\0", ko.to_vec());
    let mut hits = 0;
    for i in 0..ko.len().saturating_sub(pat.len() - 1) {
        if ko[i..].starts_with(pat) {
            no_lp[i + pat.len() - 2] = b'N';
            hits += 1;
        }
    }
    if hits == 0 {
        bail!("the module has no livepatch=Y");
    }
    out.push(("no-livepatch-modinfo", no_lp, "check.modinfo.livepatch"));
    if let Some(bytes) = other_kernel_copy(ko)? {
        out.push(("guard-other-kernel", bytes, "check.target.guard"));
    }
    if let Some(sym) = klp_syms.first() {
        let wrong = wrong_sympos(sym).with_context(|| format!("{sym}: no position"))?;
        out.push((
            "wrong-sympos",
            replace_string(ko, sym, &wrong)?,
            "check.klp-sym.position",
        ));
        let renamed = renamed_symbol(sym).with_context(|| format!("{sym}: not a klp symbol"))?;
        out.push((
            "renamed-klp-symbol",
            replace_string(ko, sym, &renamed)?,
            "check.klp-sym.missing",
        ));
    }
    Ok(out)
}

/// `klpgen check` on a freshly built module: it must pass, and each hand-corrupted copy
/// must fail with its key. `Ok(Err(_))` is a test failure.
fn check_module(
    klpgen: &Path,
    k: &Kernel,
    module: &Path,
    build_stdout: &str,
    logs: &Path,
    modules: Option<&Path>,
    doctored: &Doctored,
) -> Result<Result<String, String>> {
    let check_against = |ko: &Path, vmlinux: &Path, symvers: &Path| {
        let mut c = Command::new(klpgen);
        c.arg("check")
            .arg(ko)
            .arg("--vmlinux")
            .arg(vmlinux)
            .arg("--symvers")
            .arg(symvers)
            .stdin(Stdio::null());
        if let Some(dir) = modules {
            c.arg("--modules").arg(dir);
        }
        let out = c
            .output()
            .with_context(|| format!("cannot run `{}`", util::display(&c)))?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        anyhow::Ok((out.status.code(), text))
    };
    let (vmlinux, symvers) = (k.build.join("vmlinux"), k.build.join("Module.symvers"));
    let check = |ko: &Path| check_against(ko, &vmlinux, &symvers);
    let (code, text) = check(module)?;
    fs::write(logs.join("klpgen-check.out"), &text)?;
    if code != Some(0) {
        eprintln!("{}", util::indent(&text));
        return Ok(Err(format!(
            "klpgen check rejected the module it built (exit {code:?})"
        )));
    }
    let ko = fs::read(module)?;
    let klp_syms = klp_symbols_of(build_stdout);
    let cases = corruptions(&ko, &klp_syms)?;
    for (stem, bytes, key) in &cases {
        let path = logs.join(format!("corrupt-{stem}.ko"));
        fs::write(&path, bytes)?;
        let (code, text) = check(&path)?;
        if code != Some(1) || !text.contains(&format!("[{key}]")) {
            eprintln!("{}", util::indent(&text));
            return Ok(Err(format!(
                "klpgen check on the {stem} copy: exit {code:?}, expected 1 with [{key}]"
            )));
        }
    }
    // The module against a target of another kernel, and another build's Module.symvers.
    for (what, vm, sv, key) in [
        (
            "a vmlinux of another release",
            &doctored.vmlinux,
            &symvers,
            "check.modinfo.vermagic",
        ),
        (
            "another build's Module.symvers",
            &vmlinux,
            &doctored.symvers,
            "check.target.symvers-mismatch",
        ),
    ] {
        let (code, text) = check_against(module, vm, sv)?;
        if code != Some(1) || !text.contains(&format!("[{key}]")) {
            eprintln!("{}", util::indent(&text));
            return Ok(Err(format!(
                "klpgen check against {what}: exit {code:?}, expected 1 with [{key}]"
            )));
        }
    }
    Ok(Ok(format!(
        "check ok, {} corrupted copies and 2 mismatched targets rejected",
        cases.len()
    )))
}

/// Runs the selected cases (all when `filters` is empty); returns whether all passed.
/// `kfixtures` selects all kernel-header fixtures (tests/kfixtures), `kfixtures/NAME` one;
/// `debian` the distribution phase (tests/e2e-debian, `debian_e2e.rs`), `debian/CASE` one
/// case of it. Selecting only distribution cases leaves the test kernel out.
pub fn cmd_e2e(filters: &[String]) -> Result<bool> {
    // `depscan`: the dependency scan against the test kernel's records (xtask/src/depscan.rs);
    // part of a run of everything, or alone.
    let everything = filters.is_empty();
    let run_depscan = everything || filters.iter().any(|f| f == "depscan");
    let (debian_filters, filters): (Vec<&String>, Vec<&String>) = filters
        .iter()
        .filter(|f| *f != "depscan")
        .partition(|f| crate::debian_e2e::is_filter(f));
    let with_debian = everything || !debian_filters.is_empty();
    if filters.is_empty() && !debian_filters.is_empty() && !run_depscan {
        let klpgen = build_klpgen()?;
        let outcomes = crate::debian_e2e::run(&debian_filters, &klpgen)?;
        return Ok(print_debian(&outcomes));
    }
    let mut cases = load_cases()?;
    let kf_all = kfixtures::load_cases()?;
    let multi = everything
        || filters
            .iter()
            .any(|f| f.as_str() == crate::multitarget::NAME);
    let (kf_filters, case_filters): (Vec<&String>, Vec<&String>) = filters
        .iter()
        .filter(|f| f.as_str() != crate::multitarget::NAME)
        .partition(|f| **f == "kfixtures" || f.starts_with("kfixtures/"));
    for f in &case_filters {
        if !cases.iter().any(|c| &c.name == *f) {
            let names: Vec<&str> = cases.iter().map(|c| c.name.as_str()).collect();
            bail!(
                "no e2e case {f:?} (cases: {}; or {}, kfixtures, kfixtures/NAME, depscan, debian, debian/CASE)",
                names.join(", "),
                crate::multitarget::NAME
            );
        }
    }
    let kf_selected: Vec<String> = if everything || kf_filters.iter().any(|f| **f == "kfixtures") {
        kf_all.iter().map(|c| c.name.clone()).collect()
    } else {
        let mut v = Vec::new();
        for f in &kf_filters {
            let n = f.trim_start_matches("kfixtures/");
            if !kf_all.iter().any(|c| c.name == n) {
                bail!("no kernel-header fixture {n:?} under tests/kfixtures");
            }
            v.push(n.to_string());
        }
        v
    };
    if !everything {
        cases.retain(|c| case_filters.contains(&&c.name));
    }
    // With everything selected, the distribution phase is run too: check its cases before
    // the long test-kernel runs.
    if with_debian && everything {
        crate::debian_e2e::load_cases()?;
    }
    if cases.is_empty() && kf_selected.is_empty() && !multi && !run_depscan {
        bail!("no e2e cases under {}", e2e_dir().display());
    }
    let klpgen = build_klpgen()?;
    let k = kernel::ensure()?;
    let workdir = util::target_dir().join("e2e");
    fs::create_dir_all(&workdir)?;
    crate::selfdiff::check(&k.build)?;
    crate::syscallcheck::check(&k)?;
    let mismatch_dir = workdir.join("mismatch");
    let doctored = crate::mismatch::prepare(&k, &mismatch_dir)?;
    let summary = crate::mismatch::check(&klpgen, &k, &doctored, &mismatch_dir)?;
    eprintln!("e2e: {summary}");
    // A full run has the distribution phase, whose package sets are then needed anyway.
    if with_debian && filters.is_empty() {
        for t in crate::debian::TARGETS {
            crate::debian::ensure(t)?;
        }
    }
    match crate::mismatch::check_debian(&klpgen, &mismatch_dir.join("debian"))? {
        Some(summary) => eprintln!("e2e: {summary}"),
        None => eprintln!(
            "e2e: the pinned Debian package sets are not all in the dev cache (`cargo xtask setup debian`): their mismatches not checked"
        ),
    }
    let kf_failures = if kf_selected.is_empty() {
        Vec::new()
    } else {
        kfixtures::check(&klpgen, &k, &kf_selected)?
    };
    let depscan_failures = if run_depscan {
        crate::depscan::check(&klpgen, &k, &workdir)?
    } else {
        Vec::new()
    };

    // Test-kernel variants the selected cases name, each with its own doctored targets.
    let mut variants: Vec<(String, Kernel, Doctored)> = Vec::new();
    for v in cases.iter().filter_map(|c| c.kernel.as_deref()) {
        if variants.iter().any(|(n, _, _)| n == v) {
            continue;
        }
        let vk = kernel::ensure_variant(Some(v))?;
        let dir = workdir.join(format!("mismatch-{v}"));
        let vd = crate::mismatch::prepare(&vk, &dir)?;
        variants.push((v.to_string(), vk, vd));
    }

    let mut results = Vec::new();
    let all_start = Instant::now();
    for case in &cases {
        let (ck, cd) = match &case.kernel {
            Some(v) => variants
                .iter()
                .find(|(n, _, _)| n == v)
                .map(|(_, vk, vd)| (vk, vd))
                .context("variant kernel not prepared")?,
            None => (&k, &doctored),
        };
        let start = Instant::now();
        let outcome = if all_start.elapsed() > E2E_BUDGET {
            fail(format!(
                "not run: the e2e time budget ({} min) is used up",
                E2E_BUDGET.as_secs() / 60
            ))
        } else {
            eprintln!("e2e: {} ...", case.name);
            run_case(case, &klpgen, ck, &workdir, cd)
                .unwrap_or_else(|e| fail(format!("harness error: {e:#}")))
        };
        let verdict = if outcome.passed { "PASS" } else { "FAIL" };
        eprintln!(
            "e2e: {verdict} {} ({}s): {}",
            case.name,
            start.elapsed().as_secs(),
            outcome.summary
        );
        results.push((case.name.as_str(), outcome));
    }
    // One run over the test kernel and its noibt variant.
    if multi {
        eprintln!("e2e: {} ...", crate::multitarget::NAME);
        let start = Instant::now();
        let noibt = kernel::ensure_variant(Some("noibt"))?;
        let outcome = match crate::multitarget::run(&klpgen, &k, &noibt, &doctored, &workdir) {
            Ok(Ok(summary)) => Outcome {
                passed: true,
                summary,
            },
            Ok(Err(why)) => fail(why),
            Err(e) => fail(format!("harness error: {e:#}")),
        };
        eprintln!(
            "e2e: {} {} ({}s): {}",
            if outcome.passed { "PASS" } else { "FAIL" },
            crate::multitarget::NAME,
            start.elapsed().as_secs(),
            outcome.summary
        );
        results.push((crate::multitarget::NAME, outcome));
    }
    println!();
    for (name, o) in &results {
        println!(
            "{} {name}: {}",
            if o.passed { "PASS" } else { "FAIL" },
            o.summary
        );
    }
    for f in &kf_failures {
        println!("FAIL kfixtures/{f}");
    }
    if !kf_selected.is_empty() {
        println!(
            "kernel-header fixtures: {} run, {} problem(s)",
            kf_selected.len(),
            kf_failures.len()
        );
    }
    for f in &depscan_failures {
        println!("FAIL depscan: {f}");
    }
    if run_depscan && depscan_failures.is_empty() {
        println!("PASS depscan: the scan finds every unit the records name, and klpgen build keeps exactly those");
    }
    let passed = results.iter().filter(|(_, o)| o.passed).count();
    let failed = results.len() - passed;
    println!("{passed} passed, {failed} failed");
    let test_kernel_ok = failed == 0 && kf_failures.is_empty() && depscan_failures.is_empty();
    let debian_ok = if with_debian {
        let all = [String::from("debian")];
        let selected: Vec<&String> = if debian_filters.is_empty() {
            all.iter().collect()
        } else {
            debian_filters
        };
        let outcomes = crate::debian_e2e::run(&selected, &klpgen)?;
        print_debian(&outcomes)
    } else {
        true
    };
    Ok(test_kernel_ok && debian_ok)
}

/// The distribution phase's results, as the test-kernel cases' are printed; whether all
/// passed.
fn print_debian(outcomes: &[crate::debian_e2e::Outcome]) -> bool {
    println!();
    for o in outcomes {
        println!(
            "{} {}: {}",
            if o.passed { "PASS" } else { "FAIL" },
            o.name,
            o.summary
        );
    }
    let passed = outcomes.iter().filter(|o| o.passed).count();
    let failed = outcomes.len() - passed;
    println!("distribution cases: {passed} passed, {failed} failed");
    failed == 0
}

/// `cargo xtask boot KO PROBE`: boots one livepatch module with a probe script and runs the
/// same checks as the e2e test (handy for debugging klpgen output or the harness itself).
pub fn cmd_boot(args: &[String]) -> Result<bool> {
    let [ko, probe] = args else {
        bail!("usage: cargo xtask boot MODULE.ko PROBE.sh");
    };
    let ko = PathBuf::from(ko);
    let stem = ko
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let module_name = stem.replace('-', "_");
    let probe = fs::read(probe).with_context(|| format!("cannot read {probe}"))?;
    let k = kernel::ensure()?;
    let workdir = util::target_dir().join("e2e").join("boot.files");
    let report = guest::boot(&guest::Spec {
        kernel: &k.bzimage(),
        machine: guest::TEST_KERNEL,
        module: &ko,
        module_name: &module_name,
        probe: &probe,
        workdir: &workdir,
        preload: None,
        cross: k.cross,
        late: None,
        second: None,
        wrong_kernel: None,
    })?;
    for (phase, label) in guest::PHASES {
        if let Some(out) = report.outputs.get(*phase) {
            println!("probe output {label}:\n{}", util::indent(&out.join("\n")));
        }
    }
    println!("guest reported: {:?}", report.values);
    println!(
        "boot took {:.1}s; console: {}",
        report.seconds,
        report.console_path.display()
    );
    let fails = report.failed_checks();
    for f in &fails {
        println!("check failed: {f}");
    }
    let ok = fails.is_empty();
    println!("{} passed, {} failed", usize::from(ok), usize::from(!ok));
    Ok(ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expect_files() {
        let e = parse_expect("exit=3\nstderr=no functional change\n").unwrap();
        assert_eq!(e.exit, Some(3));
        assert_eq!(e.stderr, vec!["no functional change"]);
        assert!(parse_expect("").is_err());
        assert!(parse_expect("exit=x").is_err());
        assert!(parse_expect("bogus=1").is_err());
        let e = parse_expect("exit=0\nreport=/a/0/b=[\"foo\"]\n").unwrap();
        assert_eq!(
            e.report,
            [("/a/0/b".to_string(), serde_json::json!(["foo"]))]
        );
        assert!(parse_expect("report=a=1").is_err());
        assert!(parse_expect("report=/a=[").is_err());
        let doc = serde_json::json!({"a": [{"b": ["foo"]}]});
        assert!(report_problems(&doc, &e.report).is_empty());
        let other = serde_json::json!({"a": [{"b": ["bar"]}]});
        assert_eq!(report_problems(&other, &e.report).len(), 1);
        assert_eq!(report_problems(&serde_json::json!({}), &e.report).len(), 1);
    }

    #[test]
    fn corrupted_copies() {
        let ko = b"\0xx\0livepatch=Y\0.klp.sym.vmlinux.put_task_struct,13\0.klp.sym.vmlinux.f,0\0";
        let syms = klp_symbols_of(
            "livepatch module: x\n    .klp.sym.vmlinux.put_task_struct,13\n    .klp.sym.vmlinux.f,0\n",
        );
        assert_eq!(syms.len(), 2);
        let c = corruptions(ko, &syms).unwrap();
        let get = |stem: &str| {
            String::from_utf8_lossy(&c.iter().find(|x| x.0 == stem).unwrap().1).into_owned()
        };
        assert!(get("no-livepatch-modinfo").contains("livepatch=N\0"));
        assert!(get("wrong-sympos").contains(".klp.sym.vmlinux.put_task_struct,00\0"));
        assert!(get("renamed-klp-symbol").contains(".klp.sym.vmlinux.#ut_task_struct,13\0"));
        assert_eq!(
            wrong_sympos(".klp.sym.vmlinux.f,0").unwrap(),
            ".klp.sym.vmlinux.f,9"
        );
        // A string that is only a suffix of another is not a match.
        assert!(replace_string(
            b"\0a.klp.sym.vmlinux.f,0\0",
            ".klp.sym.vmlinux.f,0",
            ".klp.sym.vmlinux.f,9"
        )
        .is_err());
        assert!(replace_string(ko, "livepatch=Y", "livepatch").is_err());
        assert!(corruptions(b"\0license=GPL\0", &[]).is_err());
        assert_eq!(corruptions(ko, &[]).unwrap().len(), 1);
    }

    #[test]
    fn console_order() {
        let console = "a\r\nklpgen-e2e: pre\r\nKLPGEN-E2E: x=0\r\nklpgen-e2e: post\r\n";
        let lines = console_expect_lines(
            "# comment\n\nklpgen-e2e: pre\n KLPGEN-E2E: x=0\nklpgen-e2e: post\n",
        );
        assert_eq!(lines.len(), 3);
        assert!(console_in_order(console, &lines).is_ok());
        let swapped = ["klpgen-e2e: post", "klpgen-e2e: pre"];
        let e = console_in_order(console, &swapped).unwrap_err();
        assert!(e.contains("\"klpgen-e2e: pre\" does not appear"), "{e}");
        // Two expectations cannot match one line.
        assert!(console_in_order(console, &["klpgen-e2e: pre", "klpgen-e2e: pre"]).is_err());
    }

    #[test]
    fn names() {
        assert_eq!(
            module_name("proc-string-c-hook"),
            "livepatch_proc_string_c_hook"
        );
        assert!(valid_case_name("static-call"));
        assert!(!valid_case_name("Bad name"));
        assert!(!valid_case_name("-x"));
    }

    #[test]
    fn shipped_cases_are_well_formed() {
        let cases = load_cases().unwrap();
        assert!(!cases.is_empty());
        for c in &cases {
            assert!(c.patch().is_file(), "{}: case.patch missing", c.name);
            assert!(c.dir.join("README").is_file(), "{}: README missing", c.name);
            if c.expect.is_none() {
                assert!(
                    c.dir.join("probe.sh").is_file(),
                    "{}: probe.sh missing",
                    c.name
                );
            }
        }
    }
}
