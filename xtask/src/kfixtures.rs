//! Kernel-header fixtures (`tests/kfixtures/<case>/`), a phase of `cargo xtask e2e` before the
//! qemu cases: rules that need the real kernel headers and compile flags (WARN/BUG and
//! might_sleep() line numbers, jump labels, exception tables and alternatives of user
//! accesses, dynamic debug, the printk index, pr_*_once). Each `case.patch` is built with
//! `klpgen build --report` against the cached test kernel, as a user would, and the report's
//! verdicts are compared with the case's `expect` file; nothing is booted.
//! Also: tracepoints (a jump label with a klp-relocated key, a static call), a file built
//! without `-pg` and a shift runtime constant (`__d_lookup` inlining `d_hash()`) refused, a
//! pointer runtime constant (`copy_from_user_nmi`, `__access_ok()`) built.
//!
//! `expect` lines (`#` comments): `exit=N` (klpgen's exit code, required), `changed=F...` and
//! `new=F...` (exact sets over all units, empty for none), `unchanged=F...` (not changed or
//! new), `refused=KEY-PREFIX` (some refusal key starts with it; with none, no refusal is
//! allowed), `hint=TEXT` (some refusal's hint contains TEXT), `klp=SYM` (the module binds SYM with a klp relocation), `ko-section=NAME` (the
//! module has a non-empty section NAME, e.g. `__ex_table`). An optional `args` file adds
//! arguments to `klpgen build`.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use serde_json::Value;

use crate::case;
use crate::kernel::Kernel;
use crate::util;

/// What one case expects.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Expect {
    pub exit: i32,
    pub changed: Option<BTreeSet<String>>,
    pub new: Option<BTreeSet<String>>,
    pub unchanged: Vec<String>,
    pub refused: Vec<String>,
    /// `hint=TEXT`: some refusal's hint contains TEXT.
    pub hints: Vec<String>,
    pub klp: Vec<String>,
    pub ko_sections: Vec<String>,
}

pub fn parse_expect(text: &str) -> Result<Expect> {
    let mut e = Expect::default();
    let mut exit = None;
    for line in text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        let (key, val) = line
            .split_once('=')
            .with_context(|| format!("expected KEY=VALUE, got {line:?}"))?;
        let words = || val.split_whitespace().map(String::from);
        match key.trim() {
            "exit" => {
                exit = Some(
                    val.trim()
                        .parse()
                        .with_context(|| format!("bad exit code {val:?}"))?,
                )
            }
            "changed" => e.changed = Some(words().collect()),
            "new" => e.new = Some(words().collect()),
            "unchanged" => e.unchanged.extend(words()),
            "refused" => e.refused.extend(words()),
            "hint" => e.hints.push(val.trim().to_string()),
            "klp" => e.klp.extend(words()),
            "ko-section" => e.ko_sections.extend(words()),
            other => bail!("unknown expect key {other:?}"),
        }
    }
    e.exit = exit.context("expect has no exit=")?;
    Ok(e)
}

/// One directory under tests/kfixtures.
#[derive(Debug)]
pub struct Case {
    pub name: String,
    pub dir: PathBuf,
    pub args: Vec<String>,
    pub expect: Expect,
}

fn root() -> PathBuf {
    util::repo_root().join("tests/kfixtures")
}

pub fn load_cases() -> Result<Vec<Case>> {
    let mut cases = Vec::new();
    for entry in
        fs::read_dir(root()).with_context(|| format!("cannot list {}", root().display()))?
    {
        let entry = entry?;
        if !entry.file_type()?.is_dir() {
            continue;
        }
        let name = entry.file_name().to_string_lossy().into_owned();
        let dir = entry.path();
        let text = fs::read_to_string(dir.join("expect"))
            .with_context(|| format!("kfixtures/{name}/expect"))?;
        let expect = parse_expect(&text).with_context(|| format!("kfixtures/{name}/expect"))?;
        let args = match fs::read_to_string(dir.join("args")) {
            Ok(s) => s.split_whitespace().map(String::from).collect(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(e).context(format!("kfixtures/{name}/args")),
        };
        cases.push(Case {
            name,
            dir,
            args,
            expect,
        });
    }
    cases.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(cases)
}

/// What the report says, gathered over all units.
#[derive(Debug, Default)]
struct Verdicts {
    changed: BTreeSet<String>,
    new: BTreeSet<String>,
    refused: Vec<String>,
    hints: Vec<String>,
    klp: Vec<String>,
}

fn verdicts(report: &Value) -> Verdicts {
    let mut v = Verdicts::default();
    let functions = report["objects"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|o| o["functions"].as_array().into_iter().flatten());
    // Split parts (`.cold`, `.part.N`) are listed under their function; they count as
    // functions of their own here.
    let parts = functions
        .clone()
        .flat_map(|f| f["parts"].as_array().into_iter().flatten());
    for f in functions.chain(parts) {
        let name = f["name"].as_str().unwrap_or_default().to_string();
        match f["verdict"].as_str() {
            Some("changed") => {
                v.changed.insert(name);
            }
            Some("new") => {
                v.new.insert(name);
            }
            Some("refused") => {
                v.refused
                    .push(f["key"].as_str().unwrap_or_default().to_string());
                v.hints
                    .push(f["hint"].as_str().unwrap_or_default().to_string());
            }
            _ => {}
        }
    }
    for r in report["klp_relocations"].as_array().into_iter().flatten() {
        v.klp
            .push(r["symbol"].as_str().unwrap_or_default().to_string());
    }
    v
}

/// The differences between what a case expects and what klpgen did.
fn compare(e: &Expect, exit: Option<i32>, got: &Verdicts, ko: Option<&[u8]>) -> Vec<String> {
    let mut problems = Vec::new();
    if exit != Some(e.exit) {
        problems.push(format!("exit {exit:?}, expected {}", e.exit));
    }
    let set = |s: &BTreeSet<String>| s.iter().cloned().collect::<Vec<_>>().join(" ");
    if let Some(c) = &e.changed {
        if *c != got.changed {
            problems.push(format!(
                "changed: [{}], expected [{}]",
                set(&got.changed),
                set(c)
            ));
        }
    }
    if let Some(n) = &e.new {
        if *n != got.new {
            problems.push(format!("new: [{}], expected [{}]", set(&got.new), set(n)));
        }
    }
    for u in &e.unchanged {
        if got.changed.contains(u) || got.new.contains(u) {
            problems.push(format!("{u} reported changed or new"));
        }
    }
    for r in &e.refused {
        if !got.refused.iter().any(|k| k.starts_with(r.as_str())) {
            problems.push(format!("no refusal {r}*, got {:?}", got.refused));
        }
    }
    for h in &e.hints {
        if !got.hints.iter().any(|g| g.contains(h.as_str())) {
            problems.push(format!(
                "no refusal hint contains {h:?}, got {:?}",
                got.hints
            ));
        }
    }
    if e.refused.is_empty() && !got.refused.is_empty() {
        problems.push(format!("unexpected refusals {:?}", got.refused));
    }
    for k in &e.klp {
        if !got.klp.contains(k) {
            problems.push(format!("no klp relocation to {k} (has {:?})", got.klp));
        }
    }
    if !e.ko_sections.is_empty() {
        match ko.map(|b| elfdiff::Object::<elfdiff::Orig>::parse("module", b)) {
            None => problems.push("no module was written".into()),
            Some(Err(err)) => problems.push(format!("cannot parse the module: {err}")),
            Some(Ok(obj)) => {
                for s in &e.ko_sections {
                    let size = obj.find_section(s).map_or(0, |i| obj.sec(i).size);
                    if size == 0 {
                        problems.push(format!("the module has no (or an empty) {s}"));
                    }
                }
            }
        }
    }
    problems
}

fn run_case(case: &Case, klpgen: &Path, k: &Kernel, workdir: &Path) -> Result<Vec<String>> {
    let name = format!("kf-{}", case.name);
    let (output, logs) = case::fresh_case_dirs(workdir, &case.name)?;
    let patch = case.dir.join("case.patch");
    let (ok, text) = case::patch_applies(&k.src, &patch)?;
    if !ok {
        return Ok(vec![format!(
            "case.patch does not apply to the test kernel:\n{}",
            util::indent(&text)
        )]);
    }
    let report_path = logs.join("report.json");
    let mut args = case.args.clone();
    args.extend(["--report".to_string(), report_path.display().to_string()]);
    let cmd = case::klpgen_command(klpgen, k, &name, &output, &args, &patch);
    let run = case::run_klpgen(cmd, &logs)?;
    let mut problems = Vec::new();
    let (still, _) = case::patch_applies(&k.src, &patch)?;
    if !still {
        problems.push("klpgen left the kernel source tree modified".to_string());
    }
    let Some(status) = run.status else {
        problems.push("klpgen build timed out".into());
        return Ok(problems);
    };
    let report: Value = match fs::read(&report_path) {
        Ok(b) => serde_json::from_slice(&b).context("the --report file is not JSON")?,
        Err(e) => {
            problems.push(format!("no report written: {e}"));
            eprintln!("{}", run.show());
            return Ok(problems);
        }
    };
    let ko = fs::read(output.join(format!("livepatch-{name}.ko"))).ok();
    problems.extend(compare(
        &case.expect,
        status.code(),
        &verdicts(&report),
        ko.as_deref(),
    ));
    if !problems.is_empty() {
        eprintln!("{}", run.show());
    }
    Ok(problems)
}

/// Runs the named cases; returns the failures as "case: problem" lines.
pub fn check(klpgen: &Path, k: &Kernel, names: &[String]) -> Result<Vec<String>> {
    let mut cases = load_cases()?;
    cases.retain(|c| names.contains(&c.name));
    let workdir = util::target_dir().join("e2e").join("kfixtures");
    fs::create_dir_all(&workdir)?;
    let start = Instant::now();
    let mut failures = Vec::new();
    for case in &cases {
        let t = Instant::now();
        let problems = run_case(case, klpgen, k, &workdir)
            .unwrap_or_else(|e| vec![format!("harness error: {e:#}")]);
        eprintln!(
            "e2e: kfixture {} {} ({:.1}s){}",
            if problems.is_empty() { "PASS" } else { "FAIL" },
            case.name,
            t.elapsed().as_secs_f64(),
            if problems.is_empty() {
                String::new()
            } else {
                format!(": {}", problems.join("; "))
            }
        );
        failures.extend(problems.into_iter().map(|p| format!("{}: {p}", case.name)));
    }
    eprintln!(
        "e2e: {} kernel-header fixtures in {:.1}s",
        cases.len(),
        start.elapsed().as_secs_f64()
    );
    Ok(failures)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expect_files() {
        let e = parse_expect(
            "# c\nexit=0\nchanged=a b\nnew=\nklp=k\nko-section=__ex_table\nrefused=refuse.x.\n",
        )
        .unwrap();
        assert_eq!(e.exit, 0);
        assert_eq!(e.changed, Some(["a", "b"].map(String::from).into()));
        assert_eq!(e.new, Some(BTreeSet::new()));
        assert_eq!(e.klp, vec!["k"]);
        assert!(parse_expect("changed=a\n").is_err(), "exit= is required");
        assert!(parse_expect("exit=0\nbogus=1\n").is_err());
    }

    #[test]
    fn comparison_finds_each_difference() {
        let e = parse_expect("exit=0\nchanged=f\nnew=\nunchanged=g\nklp=k\n").unwrap();
        let mut got = Verdicts::default();
        got.changed.insert("f".into());
        got.klp.push("k".into());
        assert!(compare(&e, Some(0), &got, None).is_empty());
        assert_eq!(compare(&e, Some(3), &got, None).len(), 1);
        got.changed.insert("g".into());
        assert_eq!(compare(&e, Some(0), &got, None).len(), 2); // changed set and unchanged g
        let mut got = Verdicts::default();
        got.changed.insert("f".into());
        got.refused.push("refuse.data-changed.x".into());
        assert_eq!(compare(&e, Some(0), &got, None).len(), 2); // the refusal, the missing klp
        let e = parse_expect("exit=0\nko-section=__ex_table\n").unwrap();
        assert_eq!(compare(&e, Some(0), &Verdicts::default(), None).len(), 1);
        let e = parse_expect("exit=2\nrefused=refuse.no-ftrace.\nhint=is assembly\n").unwrap();
        let mut got = Verdicts::default();
        got.refused.push("refuse.no-ftrace.f".into());
        got.hints.push("f is assembly (...)".into());
        assert!(compare(&e, Some(2), &got, None).is_empty());
        got.hints[0] = "patch its callers".into();
        assert_eq!(compare(&e, Some(2), &got, None).len(), 1);
    }

    #[test]
    fn shipped_cases_are_well_formed() {
        let cases = load_cases().unwrap();
        assert!(
            cases.len() >= 6,
            "only {} kernel-header fixtures",
            cases.len()
        );
        for c in &cases {
            assert!(c.dir.join("case.patch").is_file(), "{}: case.patch", c.name);
            assert!(c.dir.join("README").is_file(), "{}: README", c.name);
        }
    }
}
