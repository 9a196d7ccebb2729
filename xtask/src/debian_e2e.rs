//! The distribution phase of `cargo xtask e2e` (`debian`, `debian/CASE`, `debian/selftest`):
//! the cases under tests/e2e-debian, built with `klpgen build` from Debian's own packages
//! (source, headers, `-dbg` vmlinux, the image package's modules; `debian.rs` fetches them)
//! and booted on the stock kernel from its package's `vmlinuz`.
//!
//! First, on every kernel the selected cases boot, a self-test of the harness: the kernel's
//! own livepatch sample (`samples/livepatch/livepatch-sample.c` of the same linux-source),
//! built against the stock headers with kbuild (another version's linux-kbuild-6.1 where the
//! archive has none of this one), loaded into the stock kernel with a stock
//! module from the image package, and put through the same checks as every case (probe
//! fails, insmod, enabled=1 and transition=0, probe passes, disable, rmmod, probe fails, no
//! kernel complaint). Cases on a kernel whose self-test failed are not run: a failing case
//! is klpgen's, never the harness's.
//!
//! Then `running-kernel`: `klpgen build` with no target flags on a system root running the
//! newest cloud-amd64 kernel with its real headers and modules, but not the `-dbg` vmlinux or
//! the sources: refused, naming those packages at the headers' version.
//!
//! Then each case on each of its targets (file `targets`: names from `debian::TARGETS`;
//! absent: `cloud`): the patch must apply to the target's source (this checkout's hard-linked
//! copy of the dev cache's tree, `debian::Set::private_source`); `klpgen build`; the source
//! tree must be left as it was, contents and time stamps of the patched files and their
//! directories; `expect` judges klpgen's answer alone (as in tests/e2e). Otherwise `klpgen
//! check` must pass against the stock vmlinux, Module.symvers and modules, and fail on the
//! hand-corrupted copies and against every other pinned kernel; on ORC kernels every
//! function must have ORC; on a booted target the module goes through the guest's checks
//! (and `console-expect`), the guest's `uname -r` being the target's release. Case files as
//! in tests/e2e (`case.patch`, `probe.sh`, `README`, `args`, `expect`, `stdout-contains`,
//! `stderr-contains`, `console-expect`), plus `target-module`: a stock module the patch
//! changes, its path under the image package's `lib/modules/<release>/`, loaded before the
//! livepatch (as `/oot.ko`), and `module-arrives`: `after` puts that module into the guest as
//! `/late.ko` instead, for the probe to load while the livepatch is loaded.

use crate::case::{fresh_case_dirs, module_name, patch_applies, run_klpgen, KLPGEN_TIMEOUT};
use crate::debian::{self, Set, Target};
use crate::e2e::{self, Expect};
use crate::{guest, util};
use anyhow::{bail, Context, Result};
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

/// Cases not started within this time of the phase's start fail as not run.
const BUDGET: Duration = Duration::from_secs(30 * 60);
/// The name `debian/NAME` selects the self-tests by.
const SELFTEST: &str = "selftest";
/// The name of the check of the running-kernel default ([`running_kernel`]).
const RUNNING: &str = "running-kernel";
/// The stock module the self-test loads from the image package (CONFIG_BINFMT_MISC=m in
/// both flavours, no dependencies).
const SELFTEST_STOCK_MODULE: &str = "kernel/fs/binfmt_misc.ko";

/// One directory under tests/e2e-debian.
#[derive(Debug)]
pub struct Case {
    pub name: String,
    pub dir: PathBuf,
    pub args: Vec<String>,
    pub expect: Option<Expect>,
    /// `target-module`: the stock module the patch changes, relative to `lib/modules/<r>/`.
    pub target_module: Option<String>,
    /// `module-arrives`: `after` ships the target module into the guest as `/late.ko` for the
    /// probe to load once the livepatch is loaded; `before` (the default) loads it first.
    pub module_after: bool,
    /// `targets`: the kernels the case runs on.
    pub targets: Vec<&'static Target>,
}

impl Case {
    fn patch(&self) -> PathBuf {
        self.dir.join("case.patch")
    }
}

/// The result of one case on one target (or one self-test).
pub struct Outcome {
    /// `debian/<case>@<target>`.
    pub name: String,
    pub passed: bool,
    pub summary: String,
}

fn cases_dir() -> PathBuf {
    util::repo_root().join("tests/e2e-debian")
}

fn optional(dir: &Path, file: &str) -> Result<Option<String>> {
    match fs::read_to_string(dir.join(file)) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", dir.join(file).display())),
    }
}

/// All cases, sorted by name.
pub fn load_cases() -> Result<Vec<Case>> {
    let root = cases_dir();
    let mut cases = Vec::new();
    for entry in fs::read_dir(&root).with_context(|| format!("cannot list {}", root.display()))? {
        let entry = entry?;
        if !entry.file_type()?.is_dir() {
            continue;
        }
        let name = entry.file_name().to_string_lossy().into_owned();
        if !e2e::valid_case_name(&name) || name == SELFTEST {
            bail!("tests/e2e-debian/{name}: a case name is lowercase letters, digits, '-' and '_', and not {SELFTEST:?}");
        }
        let dir = entry.path();
        let args = optional(&dir, "args")?
            .map(|s| s.split_whitespace().map(String::from).collect())
            .unwrap_or_default();
        let expect = match optional(&dir, "expect")? {
            Some(s) => Some(e2e::parse_expect(&s).with_context(|| format!("{name}/expect"))?),
            None => None,
        };
        let target_module = optional(&dir, "target-module")?.map(|s| s.trim().to_string());
        let module_after = match optional(&dir, "module-arrives")?.as_deref().map(str::trim) {
            None | Some("before") => false,
            Some("after") if target_module.is_some() => true,
            Some("after") => bail!("{name}/module-arrives: the case has no target-module"),
            Some(other) => bail!("{name}/module-arrives: {other:?}, expected before or after"),
        };
        let targets = match optional(&dir, "targets")? {
            Some(s) => s
                .split_whitespace()
                .map(debian::target)
                .collect::<Result<Vec<_>>>()
                .with_context(|| format!("{name}/targets"))?,
            None => vec![debian::target("cloud")?],
        };
        if targets.is_empty() {
            bail!("{name}/targets names no target");
        }
        cases.push(Case {
            name,
            dir,
            args,
            expect,
            target_module,
            module_after,
            targets,
        });
    }
    cases.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(cases)
}

/// Whether a filter of `cargo xtask e2e` belongs to this phase.
pub fn is_filter(f: &str) -> bool {
    f == "debian" || f.starts_with("debian/")
}

/// The cases the filters select (all for `debian`), and whether only the self-tests are
/// wanted (`debian/selftest` alone).
fn select(filters: &[&String]) -> Result<(Vec<Case>, bool)> {
    let all = load_cases()?;
    if filters.iter().any(|f| f.as_str() == "debian") {
        return Ok((all, false));
    }
    let mut names = Vec::new();
    for f in filters {
        let n = f.trim_start_matches("debian/");
        if n == SELFTEST {
            continue;
        }
        if !all.iter().any(|c| c.name == n) {
            let known: Vec<&str> = all.iter().map(|c| c.name.as_str()).collect();
            bail!(
                "no distribution case {n:?} under tests/e2e-debian (cases: {}; or debian, debian/{SELFTEST})",
                known.join(", ")
            );
        }
        names.push(n.to_string());
    }
    let only_selftest = names.is_empty();
    let cases = all
        .into_iter()
        .filter(|c| names.contains(&c.name))
        .collect();
    Ok((cases, only_selftest))
}

/// Runs the selected part of the phase; returns one outcome per self-test and per case and
/// target.
pub fn run(filters: &[&String], klpgen: &Path) -> Result<Vec<Outcome>> {
    let (cases, only_selftest) = select(filters)?;
    let workdir = util::target_dir().join("e2e-debian");
    fs::create_dir_all(&workdir)?;
    // Every target of a selected case, and every booted one for the self-tests.
    let mut wanted: Vec<&'static Target> = Vec::new();
    for t in cases.iter().flat_map(|c| c.targets.iter().copied()) {
        if !wanted.iter().any(|w| w.name == t.name) {
            wanted.push(t);
        }
    }
    if only_selftest {
        wanted.extend(debian::TARGETS.iter().filter(|t| t.boot));
    }
    // The self-test of a booted kernel without its own kbuild borrows one (same flavour first).
    for t in wanted.clone().iter().filter(|t| t.boot && !t.kbuild) {
        let lender = kbuild_lender(t)?;
        if !wanted.iter().any(|w| w.name == lender.name) {
            wanted.push(lender);
        }
    }
    let mut sets: Vec<Set> = Vec::new();
    for t in &wanted {
        let start = Instant::now();
        let (set, fetched) = debian::ensure_reporting(t)?;
        if !fetched.packages.is_empty() {
            eprintln!(
                "e2e: debian {}: fetched {} package(s) in {:.0}s",
                t.name,
                fetched.packages.len(),
                start.elapsed().as_secs_f64()
            );
        }
        sets.push(set);
    }
    let phase_start = Instant::now();
    let mut outcomes = Vec::new();
    // The self-test of each booted target, before any case boots there.
    let mut harness_ok: BTreeMap<&str, bool> = BTreeMap::new();
    for set in sets.iter().filter(|s| s.target.boot) {
        let start = Instant::now();
        eprintln!("e2e: debian/{SELFTEST}@{} ...", set.target.name);
        let lender = sets
            .iter()
            .find(|s| s.target.name == kbuild_lender(set.target).map_or("", |t| t.name))
            .context("the kbuild lender's set is not prepared")?;
        let o = selftest(set, lender, klpgen, &workdir).unwrap_or_else(|e| Outcome {
            name: format!("debian/{SELFTEST}@{}", set.target.name),
            passed: false,
            summary: format!("harness error: {e:#}"),
        });
        print_outcome(&o, start);
        harness_ok.insert(set.target.name, o.passed);
        outcomes.push(o);
    }
    // The running kernel by default, on the real headers and modules of the newest set.
    if !only_selftest {
        if let Some(set) = sets.iter().find(|s| s.target.name == "cloud") {
            let start = Instant::now();
            let name = format!("debian/{RUNNING}@{}", set.target.name);
            eprintln!("e2e: {name} ...");
            let o = running_kernel(set, klpgen, &workdir)
                .unwrap_or_else(|e| fail(&name, format!("harness error: {e:#}")));
            print_outcome(&o, start);
            outcomes.push(o);
        }
    }
    for case in &cases {
        for t in &case.targets {
            let set = sets
                .iter()
                .find(|s| s.target.name == t.name)
                .context("target set not prepared")?;
            let name = format!("debian/{}@{}", case.name, t.name);
            let start = Instant::now();
            let o = if phase_start.elapsed() > BUDGET {
                fail(
                    &name,
                    format!(
                        "not run: the distribution e2e time budget ({} min) is used up",
                        BUDGET.as_secs() / 60
                    ),
                )
            } else if harness_ok.get(t.name) == Some(&false) {
                fail(
                    &name,
                    format!("not run: the harness self-test on {} failed", t.name),
                )
            } else {
                eprintln!("e2e: {name} ...");
                let others: Vec<&Set> = sets
                    .iter()
                    .filter(|s| s.release() != set.release())
                    .collect();
                run_case(case, set, &others, klpgen, &workdir, &name)
                    .unwrap_or_else(|e| fail(&name, format!("harness error: {e:#}")))
            };
            print_outcome(&o, start);
            outcomes.push(o);
        }
    }
    Ok(outcomes)
}

/// The target whose linux-kbuild-6.1 builds `t`'s self-test sample: `t` itself when it has
/// one, else a pinned target of the same flavour with one, else any with one.
fn kbuild_lender(t: &'static Target) -> Result<&'static Target> {
    if t.kbuild {
        return Ok(t);
    }
    debian::TARGETS
        .iter()
        .filter(|x| x.kbuild)
        .max_by_key(|x| x.flavour == t.flavour)
        .context("no pinned target has linux-kbuild-6.1")
}

fn print_outcome(o: &Outcome, start: Instant) {
    eprintln!(
        "e2e: {} {} ({}s): {}",
        if o.passed { "PASS" } else { "FAIL" },
        o.name,
        start.elapsed().as_secs(),
        o.summary
    );
}

fn fail(name: &str, summary: impl Into<String>) -> Outcome {
    Outcome {
        name: name.to_string(),
        passed: false,
        summary: summary.into(),
    }
}

fn pass(name: &str, summary: impl Into<String>) -> Outcome {
    Outcome {
        name: name.to_string(),
        passed: true,
        summary: summary.into(),
    }
}

/// The probe of the self-test: the target's kernel is running, the stock module is loaded
/// (it was, before the probe ever ran), and the sample's replacement of
/// `cmdline_proc_show` is visible.
fn selftest_probe(release: &str) -> String {
    format!(
        "#!/bin/sh\n# The harness self-test (xtask/src/debian_e2e.rs).\n\
         [ \"$(uname -r)\" = '{release}' ] || exit 2\n\
         grep -q '^binfmt_misc ' /proc/modules || exit 3\n\
         grep -q 'this has been live patched' /proc/cmdline\n"
    )
}

/// Builds the kernel's livepatch sample against the stock headers (kbuild from the
/// linux-kbuild package, `lender`'s where `set` has none; the flavour Makefile's include of
/// the `-common` one done by `-f`) and boots it on the stock kernel with a stock module.
fn selftest(set: &Set, lender: &Set, klpgen: &Path, workdir: &Path) -> Result<Outcome> {
    let name = format!("debian/{SELFTEST}@{}", set.target.name);
    let (_, logs) = fresh_case_dirs(workdir, &format!("{SELFTEST}-{}", set.target.name))?;
    let src = set.source().join("samples/livepatch/livepatch-sample.c");
    let dir = logs.join("sample");
    fs::create_dir_all(&dir)?;
    fs::copy(&src, dir.join("livepatch-sample.c"))
        .with_context(|| format!("cannot copy {}", src.display()))?;
    fs::write(dir.join("Kbuild"), "obj-m := livepatch-sample.o\n")?;
    let (headers, common) = set.kbuild_headers(lender)?;
    let start = Instant::now();
    util::run_logged(
        Command::new("make")
            .arg("-C")
            .arg(&headers)
            .arg("-f")
            .arg(common.join("Makefile"))
            .arg(format!("M={}", dir.display()))
            .arg("modules"),
        &logs.join("sample-build.log"),
        "livepatch sample against the stock headers",
    )?;
    let build_secs = start.elapsed().as_secs_f64();
    let module = dir.join("livepatch-sample.ko");
    if !module.is_file() {
        return Ok(fail(&name, "the livepatch sample built no module"));
    }
    let stock = set.modules().join(SELFTEST_STOCK_MODULE);
    let probe = selftest_probe(&set.release());
    let report = guest::boot(&guest::Spec {
        kernel: &set.vmlinuz(),
        machine: guest::STOCK_KERNEL,
        module: &module,
        module_name: "livepatch_sample",
        probe: probe.as_bytes(),
        workdir: &logs,
        preload: Some(&stock),
        cross: None,
        late: None,
        second: None,
        wrong_kernel: None,
    })?;
    let mut fails = report.failed_checks();
    if report.value("preload") != Some("0") {
        fails.push(format!(
            "the stock module {SELFTEST_STOCK_MODULE} did not load (preload={})",
            report.value("preload").unwrap_or("<missing>")
        ));
    }
    if report.release() != Some(set.release().as_str()) {
        fails.push(format!(
            "the guest runs {:?}, not {}",
            report.release(),
            set.release()
        ));
    }
    if !fails.is_empty() {
        show_console(&report, &fails);
        return Ok(fail(&name, fails[0].clone()));
    }
    // klpgen's own check on a livepatch it did not build, against the stock kernel: its
    // verdict is recorded, not judged (the sample has no klpgen records, and this is the
    // harness's test, not klpgen's).
    let (code, text) = klpgen_check(klpgen, &module, set, &set.vmlinux(), &set.symvers())?;
    fs::write(logs.join("klpgen-check.out"), &text)?;
    let keys = finding_keys(&text);
    Ok(pass(
        &name,
        format!(
            "livepatch sample built against the stock headers{} in {build_secs:.0}s, booted on {} with stock {} in {:.0}s: loads, patches, unpatches, unloads; klpgen check on it: exit {}{}",
            if set.target.kbuild {
                String::new()
            } else {
                format!(" (kbuild of {})", lender.target.version)
            },
            set.release(),
            SELFTEST_STOCK_MODULE.rsplit('/').next().unwrap_or_default(),
            report.seconds,
            code.map_or("killed".to_string(), |c| c.to_string()),
            if keys.is_empty() { String::new() } else { format!(" ({})", keys.join(", ")) }
        ),
    ))
}

/// The `[key]`s of `klpgen check`'s findings, in order.
fn finding_keys(text: &str) -> Vec<&str> {
    text.lines()
        .filter_map(|l| {
            let rest = &l[l.find('[')? + 1..];
            Some(&rest[..rest.find(']')?])
        })
        .filter(|k| k.starts_with("check."))
        .collect()
}

fn show_console(report: &guest::Report, fails: &[String]) {
    eprintln!(
        "  --- console tail ({}) ---\n{}",
        report.console_path.display(),
        util::indent(&util::tail_lines(&report.console, 40))
    );
    for f in fails {
        eprintln!("  check failed: {f}");
    }
}

/// `klpgen build` with no target flags on a machine running `set`'s kernel (a system root
/// for klpgen's `KLPGEN_ROOT_FOR_TESTS`: `proc/sys/kernel/osrelease`, a Debian 12
/// `etc/os-release`, the real headers at
/// `/usr/src/linux-headers-<r>` and modules at `/lib/modules/<r>`, linked from the dev cache):
/// first without the `-dbg` vmlinux and the source tarball, then with the vmlinux. Each run
/// must be refused before any work (exit 2, `target.package-missing`), naming exactly the
/// packages still missing at the version the real headers' `utsversion.h` gives, and leave
/// klpgen's cache and the output directory empty.
fn running_kernel(set: &Set, klpgen: &Path, workdir: &Path) -> Result<Outcome> {
    let name = format!("debian/{RUNNING}@{}", set.target.name);
    let (out, logs) = fresh_case_dirs(workdir, &format!("{RUNNING}-{}", set.target.name))?;
    let release = set.release();
    let version = set.target.version;
    let root = logs.join("sysroot");
    let link = |target: &Path, at: &str| -> Result<()> {
        let p = root.join(at);
        fs::create_dir_all(p.parent().context("a path in the system root")?)?;
        std::os::unix::fs::symlink(target, &p)
            .with_context(|| format!("cannot link {} to {}", p.display(), target.display()))
    };
    fs::create_dir_all(root.join("proc/sys/kernel"))?;
    fs::write(
        root.join("proc/sys/kernel/osrelease"),
        format!("{release}\n"),
    )?;
    fs::create_dir_all(root.join("etc"))?;
    fs::write(
        root.join("etc/os-release"),
        "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nID=debian\nVERSION_ID=\"12\"\n",
    )?;
    link(&set.headers(), &format!("usr/src/linux-headers-{release}"))?;
    link(&set.modules(), &format!("lib/modules/{release}"))?;
    let dbg = format!("linux-image-{release}-dbg={version}");
    let source = format!("linux-source-6.1={version}");
    let cache = logs.join("cache");
    let patch = cases_dir().join("proc-version/case.patch");
    let mut seen = Vec::new();
    for (step, wanted, unwanted) in [
        ("without -dbg and sources", vec![&dbg, &source], vec![]),
        ("with the -dbg vmlinux", vec![&source], vec![&dbg]),
    ] {
        if step.starts_with("with the") {
            link(
                &set.vmlinux(),
                &format!("usr/lib/debug/boot/vmlinux-{release}"),
            )?;
        }
        fs::create_dir_all(&cache)?;
        let mut c = Command::new(klpgen);
        c.arg("build")
            .arg("-o")
            .arg(&out)
            .arg(&patch)
            .env("KLPGEN_ROOT_FOR_TESTS", &root)
            .env("KLPGEN_CACHE_DIR", &cache)
            .env("PATH", util::path_with_cargo_bin())
            .stdin(Stdio::null());
        let start = Instant::now();
        let o = c
            .output()
            .with_context(|| format!("cannot run `{}`", util::display(&c)))?;
        let secs = start.elapsed().as_secs_f64();
        let err = String::from_utf8_lossy(&o.stderr).into_owned();
        fs::write(logs.join(format!("klpgen-{}.err", seen.len())), &err)?;
        let problem = if o.status.code() != Some(2) || !err.contains("[target.package-missing]") {
            Some(format!(
                "exit {:?}, expected 2 with [target.package-missing]",
                o.status.code()
            ))
        } else if let Some(w) = wanted
            .iter()
            .find(|w| !err.contains(&format!("install {w}")))
        {
            Some(format!("the refusal does not name {w}"))
        } else if let Some(u) = unwanted.iter().find(|u| err.contains(u.as_str())) {
            Some(format!("the refusal names {u}, which is there"))
        } else if out.exists() || fs::read_dir(&cache).is_ok_and(|mut d| d.next().is_some()) {
            Some("the refused run wrote into klpgen's cache or the output directory".to_string())
        } else {
            None
        };
        if let Some(p) = problem {
            eprintln!("  $ {}\n{}", util::display(&c), util::indent(&err));
            return Ok(fail(&name, format!("{step}: {p}")));
        }
        seen.push(format!(
            "{step}: refused in {secs:.1}s naming {}",
            wanted
                .iter()
                .map(|w| w.as_str())
                .collect::<Vec<_>>()
                .join(" and ")
        ));
    }
    Ok(pass(
        &name,
        format!(
            "klpgen build with no target flags on {release} (real headers and modules): {}",
            seen.join("; ")
        ),
    ))
}

/// `klpgen check` of `module` against a stock kernel: (exit code, output).
fn klpgen_check(
    klpgen: &Path,
    module: &Path,
    set: &Set,
    vmlinux: &Path,
    symvers: &Path,
) -> Result<(Option<i32>, String)> {
    let mut c = Command::new(klpgen);
    c.arg("check")
        .arg(module)
        .arg("--vmlinux")
        .arg(vmlinux)
        .arg("--symvers")
        .arg(symvers)
        .arg("--modules")
        .arg(set.modules())
        .stdin(Stdio::null());
    let out = c
        .output()
        .with_context(|| format!("cannot run `{}`", util::display(&c)))?;
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    Ok((out.status.code(), text))
}

/// The files a patch changes (its `+++ b/PATH` lines).
fn patched_files(patch: &str) -> Vec<String> {
    patch
        .lines()
        .filter_map(|l| l.strip_prefix("+++ "))
        .filter_map(|p| p.split('\t').next())
        .map(|p| p.trim().trim_start_matches("b/").to_string())
        .filter(|p| p != "/dev/null")
        .collect()
}

/// The modification times of the files a patch changes and of their directories, up to the
/// tree's top: klpgen must give every one of them back.
fn times(src: &Path, files: &[String]) -> BTreeMap<PathBuf, Option<SystemTime>> {
    let mut out = BTreeMap::new();
    for f in files {
        let mut p = src.join(f);
        loop {
            out.insert(p.clone(), fs::metadata(&p).and_then(|m| m.modified()).ok());
            if p == src || !p.pop() {
                break;
            }
        }
    }
    out
}

/// The `klpgen build` command for a patch on a stock kernel: everything from the set's
/// packages, the target named explicitly (this checkout's copy of the source, headers, debug
/// vmlinux, modules).
pub fn klpgen_build_command(
    klpgen: &Path,
    set: &Set,
    name: &str,
    output: &Path,
    extra: &[String],
    patch: &Path,
) -> Result<Command> {
    let mut c = Command::new(klpgen);
    c.arg("build")
        .arg("--sourcedir")
        .arg(set.private_source()?)
        .arg("--builddir")
        .arg(set.headers())
        .arg("--vmlinux")
        .arg(set.vmlinux())
        .arg("--modules")
        .arg(set.modules())
        .arg("--name")
        .arg(name)
        .arg("--output")
        .arg(output)
        .args(extra)
        .arg(patch)
        .env("PATH", util::path_with_cargo_bin())
        .stdin(Stdio::null());
    Ok(c)
}

fn run_case(
    case: &Case,
    set: &Set,
    others: &[&Set],
    klpgen: &Path,
    workdir: &Path,
    name: &str,
) -> Result<Outcome> {
    let (output, logs) = fresh_case_dirs(workdir, &format!("{}-{}", case.name, set.target.name))?;
    let src = set.private_source()?;
    let patch_text = fs::read_to_string(case.patch())
        .with_context(|| format!("cannot read {}", case.patch().display()))?;
    let (ok, text) = patch_applies(&src, &case.patch())?;
    if !ok {
        eprintln!("{}", util::indent(&text));
        return Ok(fail(
            name,
            format!("case.patch does not apply to {} (a new pin in xtask/src/debian.rs needs the case refreshed)", src.display()),
        ));
    }
    let files = patched_files(&patch_text);
    let times_before = times(&src, &files);
    let report_path = logs.join("report.json");
    let mut args = vec!["--report".to_string(), report_path.display().to_string()];
    args.extend(case.args.iter().cloned());
    let cmd = klpgen_build_command(klpgen, set, &case.name, &output, &args, &case.patch())?;
    eprintln!("  $ {}", util::display(&cmd));
    let run = run_klpgen(cmd, &logs)?;

    // The source tree (the dev cache's, shared) must be as it was.
    let (ok, text) = patch_applies(&src, &case.patch())?;
    if !ok {
        eprintln!("{}", util::indent(&text));
        let restored = Command::new("patch")
            .args(["-p1", "-R", "--batch", "-s", "-d"])
            .arg(&src)
            .arg("-i")
            .arg(case.patch())
            .stdin(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        eprintln!("{}", run.show());
        return Ok(fail(
            name,
            format!(
                "klpgen left the source tree modified ({})",
                if restored {
                    "reverted it"
                } else {
                    "COULD NOT REVERT: delete the unpacked source under the dev cache"
                }
            ),
        ));
    }
    let changed: Vec<String> = times(&src, &files)
        .into_iter()
        .filter(|(p, t)| times_before.get(p) != Some(t))
        .map(|(p, t)| {
            let at = |t: Option<&Option<SystemTime>>| match t.copied().flatten() {
                Some(t) => format!(
                    "{:?}",
                    t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default()
                ),
                None => "missing".to_string(),
            };
            format!(
                "{} ({} since the epoch before, {} after)",
                p.strip_prefix(&src).unwrap_or(&p).display(),
                at(times_before.get(&p)),
                at(Some(&t))
            )
        })
        .collect();
    if !changed.is_empty() {
        eprintln!("{}", run.show());
        return Ok(fail(
            name,
            format!(
                "klpgen changed the modification time of {} in the source tree",
                changed.join(", ")
            ),
        ));
    }
    let Some(status) = run.status else {
        eprintln!("{}", run.show());
        return Ok(fail(
            name,
            format!("klpgen build timed out after {}s", KLPGEN_TIMEOUT.as_secs()),
        ));
    };
    if let Some(expect) = &case.expect {
        let problems = e2e::expect_problems(expect, status, &run.stderr, &report_path);
        if problems.is_empty() {
            return Ok(pass(
                name,
                format!("klpgen answered as expected ({status}, {}s)", run.seconds),
            ));
        }
        eprintln!("{}", run.show());
        return Ok(fail(name, problems.join("; ")));
    }
    if !status.success() {
        eprintln!("{}", run.show());
        return Ok(fail(name, format!("klpgen build failed ({status})")));
    }
    if let Some(problem) = e2e::contains_problem(&case.dir, &run.stdout, &run.stderr) {
        eprintln!("{}", run.show());
        return Ok(fail(name, problem));
    }
    let module = output.join(format!("livepatch-{}.ko", case.name));
    if !module.is_file() {
        eprintln!("{}", run.show());
        return Ok(fail(name, format!("{} was not produced", module.display())));
    }
    let checked = match check_module(klpgen, &module, set, others, &run.stdout, &logs)? {
        Ok(s) => s,
        Err(problem) => return Ok(fail(name, problem)),
    };
    let config = fs::read_to_string(set.headers().join(".config"))?;
    let checked = if config.lines().any(|l| l == "CONFIG_UNWINDER_ORC=y") {
        match crate::orccheck::coverage(
            &fs::read(&module)?,
            crate::orccheck::Layout::of_source(&set.source())?,
        ) {
            Ok((n, uncovered)) if uncovered.is_empty() => {
                format!("{checked}, {n} ORC entries cover every function")
            }
            Ok((_, uncovered)) => {
                return Ok(fail(
                    name,
                    format!(
                        "functions of the module without ORC entries: {}",
                        uncovered.join(", ")
                    ),
                ))
            }
            Err(e) => return Ok(fail(name, format!("ORC data of the module: {e:#}"))),
        }
    } else {
        checked
    };
    if !set.target.boot {
        return Ok(pass(
            name,
            format!("klpgen {}s, {checked} (not booted)", run.seconds),
        ));
    }
    let probe = match fs::read(case.dir.join("probe.sh")) {
        Ok(p) => p,
        Err(e) => return Ok(fail(name, format!("cannot read probe.sh: {e}"))),
    };
    let stock = case.target_module.as_ref().map(|m| set.modules().join(m));
    let (preload, late) = if case.module_after {
        (None, stock)
    } else {
        (stock, None)
    };
    let lp_name = module_name(&case.name);
    // A copy whose guard names another build of the kernel: on a CONFIG_MODVERSIONS kernel
    // the loader ignores vermagic's release, so the hook's guard is what must refuse it.
    let Some(wrong) = e2e::other_kernel_copy(&fs::read(&module)?)? else {
        return Ok(fail(
            name,
            "the module has no guard (klpgen_target_version)",
        ));
    };
    let wrong_path = logs.join("wrong-kernel.ko");
    fs::write(&wrong_path, wrong)?;
    let report = guest::boot(&guest::Spec {
        kernel: &set.vmlinuz(),
        machine: guest::STOCK_KERNEL,
        module: &module,
        module_name: &lp_name,
        probe: &probe,
        workdir: &logs,
        preload: preload.as_deref(),
        cross: None,
        late: late.as_deref(),
        second: None,
        wrong_kernel: Some(&wrong_path),
    })?;
    let mut fails = report.failed_checks();
    // (guard=0, the copy loaded, is among failed_checks().)
    if report.value("guard").is_none() {
        fails.push(
            "the copy whose guard names another kernel was never tried (no guard=)".to_string(),
        );
    }
    if report.release() != Some(set.release().as_str()) {
        fails.push(format!(
            "the guest runs {:?}, not {}",
            report.release(),
            set.release()
        ));
    }
    if preload.is_some() && report.value("preload") != Some("0") {
        fails.push(format!(
            "the stock module {} did not load before the livepatch (preload={})",
            case.target_module.as_deref().unwrap_or_default(),
            report.value("preload").unwrap_or("<missing>")
        ));
    }
    let mut expected = 0;
    if let Some(wanted) = optional(&case.dir, "console-expect")? {
        let lines = e2e::console_expect_lines(&wanted);
        expected = lines.len();
        if let Err(missing) = e2e::console_in_order(&report.console, &lines) {
            fails.push(missing);
        }
    }
    if !fails.is_empty() {
        show_console(&report, &fails);
        return Ok(fail(name, fails[0].clone()));
    }
    let console = if expected > 0 {
        format!(", {expected} console lines in order")
    } else {
        String::new()
    };
    Ok(pass(
        name,
        format!(
            "klpgen {}s, {checked}, another kernel's copy refused by the guard (insmod {}), boot {:.0}s{console}",
            run.seconds,
            report.value("guard").unwrap_or_default(),
            report.seconds
        ),
    ))
}

/// `klpgen check` on a freshly built module: it must pass against its target, and fail on
/// each hand-corrupted copy with its key and against every other pinned kernel (another
/// ABI or flavour) with `check.modinfo.vermagic`. `Ok(Err(_))` is a test failure.
fn check_module(
    klpgen: &Path,
    module: &Path,
    set: &Set,
    others: &[&Set],
    build_stdout: &str,
    logs: &Path,
) -> Result<Result<String, String>> {
    let (code, text) = klpgen_check(klpgen, module, set, &set.vmlinux(), &set.symvers())?;
    fs::write(logs.join("klpgen-check.out"), &text)?;
    if code != Some(0) {
        eprintln!("{}", util::indent(&text));
        return Ok(Err(format!(
            "klpgen check rejected the module it built (exit {code:?})"
        )));
    }
    let ko = fs::read(module)?;
    let copies = e2e::corruptions(&ko, &e2e::klp_symbols_of(build_stdout))?;
    for (stem, bytes, key) in &copies {
        let path = logs.join(format!("corrupt-{stem}.ko"));
        fs::write(&path, bytes)?;
        let (code, text) = klpgen_check(klpgen, &path, set, &set.vmlinux(), &set.symvers())?;
        if code != Some(1) || !text.contains(&format!("[{key}]")) {
            eprintln!("{}", util::indent(&text));
            return Ok(Err(format!(
                "klpgen check on the {stem} copy: exit {code:?}, expected 1 with [{key}]"
            )));
        }
    }
    let mut against = Vec::new();
    for other in others.iter().filter(|o| o.is_complete()) {
        let key = "check.modinfo.vermagic";
        let (code, text) = klpgen_check(klpgen, module, other, &other.vmlinux(), &other.symvers())?;
        if code != Some(1) || !text.contains(&format!("[{key}]")) {
            eprintln!("{}", util::indent(&text));
            return Ok(Err(format!(
                "klpgen check against {} (another kernel): exit {code:?}, expected 1 with [{key}]",
                other.release()
            )));
        }
        against.push(other.release());
    }
    let others = if against.is_empty() {
        String::new()
    } else {
        format!(", rejected against {}", against.join(" and "))
    };
    Ok(Ok(format!(
        "check ok, {} corrupted copies rejected{others}",
        copies.len()
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_of_a_patch() {
        let p = "--- a/fs/proc/version.c\n+++ b/fs/proc/version.c\t2025-01-01\n@@ -1 +1 @@\n\
                 --- /dev/null\n+++ b/fs/new.c\n";
        assert_eq!(patched_files(p), vec!["fs/proc/version.c", "fs/new.c"]);
    }

    #[test]
    fn times_cover_the_directories() {
        let dir = std::env::temp_dir().join(format!("xtask-times-{}", std::process::id()));
        fs::create_dir_all(dir.join("a/b")).unwrap();
        fs::write(dir.join("a/b/c.c"), "x").unwrap();
        let t = times(&dir, &["a/b/c.c".to_string()]);
        let keys: Vec<&Path> = t.keys().map(PathBuf::as_path).collect();
        assert_eq!(
            keys,
            vec![
                dir.as_path(),
                dir.join("a").as_path(),
                dir.join("a/b").as_path(),
                dir.join("a/b/c.c").as_path()
            ]
        );
        assert!(t.values().all(Option::is_some));
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn shipped_cases_are_well_formed() {
        let cases = load_cases().unwrap();
        assert!(!cases.is_empty());
        for c in &cases {
            assert!(c.patch().is_file(), "{}: case.patch missing", c.name);
            assert!(c.dir.join("README").is_file(), "{}: README missing", c.name);
            let boots = c.targets.iter().any(|t| t.boot);
            if c.expect.is_none() && boots {
                assert!(
                    c.dir.join("probe.sh").is_file(),
                    "{}: probe.sh missing",
                    c.name
                );
            }
        }
        // A patched stock module binds with its full copy from the -dbg package.
        for c in &cases {
            if let Some(m) = &c.target_module {
                assert!(
                    debian::DEBUG_MODULES.contains(&m.as_str()),
                    "{}: {m} is not in debian::DEBUG_MODULES",
                    c.name
                );
            }
        }
        // The minimum: the older ABI and the generic flavour each build one case.
        for t in ["cloud-older", "amd64"] {
            assert!(
                cases
                    .iter()
                    .any(|c| c.expect.is_none() && c.targets.iter().any(|x| x.name == t)),
                "no case builds on {t}"
            );
        }
    }

    #[test]
    fn keys_of_findings() {
        let out = "x.ko: 2 finding(s)\n  error   [check.modinfo.vermagic] built for a\n  error   [check.funcs.unknown] no .klpgen.funcs\nklpgen: x.ko: 2 finding(s)\n";
        assert_eq!(
            finding_keys(out),
            vec!["check.modinfo.vermagic", "check.funcs.unknown"]
        );
    }

    #[test]
    fn selftest_probe_checks_the_release() {
        let p = selftest_probe("6.1.0-57-cloud-amd64");
        assert!(p.contains("= '6.1.0-57-cloud-amd64' ] || exit 2"));
        assert!(p.contains("this has been live patched"));
    }
}
