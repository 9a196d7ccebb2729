//! The e2e case `multi-target`: one `klpgen build --kernel A --kernel B` run builds the same
//! patch (tests/e2e/proc-string) for the test kernel and its `noibt` variant; the report has an
//! entry per target, each module loads in its own kernel in qemu (the full guest checks of
//! `guest.rs`), and a run where one target refuses (the doctored vmlinux of another release)
//! still builds the other and exits 5 (README "Exit codes"). The first run also writes each
//! target's `.deb` (`--package deb`), whose module must be the built one byte for byte.

use std::fs;
use std::path::Path;

use anyhow::{Context, Result};
use serde_json::Value;

use crate::case::{fresh_case_dirs, run_klpgen, KlpgenRun};
use crate::guest;
use crate::kernel::Kernel;
use crate::mismatch::Doctored;
use crate::util;

/// The case's name, as `cargo xtask e2e multi-target` selects it.
pub const NAME: &str = "multi-target";

/// The case whose patch and probe are built for both kernels.
const PATCH_CASE: &str = "proc-string";

/// Module name (`--name`) of the builds.
const MODULE: &str = "multi";

fn spec(k: &Kernel, name: &str) -> String {
    format!(
        "build={},source={},name={name}",
        k.build.display(),
        k.src.display()
    )
}

fn command(
    klpgen: &Path,
    output: &Path,
    report: &Path,
    kernels: &[String],
) -> std::process::Command {
    let mut c = std::process::Command::new(klpgen);
    c.arg("build");
    for k in kernels {
        c.arg("--kernel").arg(k);
    }
    c.arg("--name")
        .arg(MODULE)
        .arg("-o")
        .arg(output)
        .arg("--report")
        .arg(report)
        .arg(
            util::repo_root()
                .join("tests/e2e")
                .join(PATCH_CASE)
                .join("case.patch"),
        )
        .env("PATH", util::path_with_cargo_bin())
        .stdin(std::process::Stdio::null());
    c
}

fn read_report(path: &Path) -> Result<Value> {
    serde_json::from_slice(
        &fs::read(path).with_context(|| format!("no report {}", path.display()))?,
    )
    .context("the report is not JSON")
}

/// What is wrong with the target's package: named by the report, next to the module, its
/// module the built one.
fn deb_problem(ko: &Path, entry: &Value) -> Result<Option<String>> {
    let release = entry["report"]["kernel"]["release"]
        .as_str()
        .unwrap_or_default();
    let deb = ko.with_file_name(format!("livepatch-{MODULE}-{release}_1.0-1_amd64.deb"));
    if entry["report"]["package"]["path"] != deb.display().to_string() {
        return Ok(Some(format!(
            "the report's package is {}, not {}",
            entry["report"]["package"]["path"],
            deb.display()
        )));
    }
    let unpacked = ko.with_file_name("unpacked");
    let _ = fs::remove_dir_all(&unpacked);
    let st = std::process::Command::new("dpkg-deb")
        .arg("-x")
        .arg(&deb)
        .arg(&unpacked)
        .status()?;
    if !st.success() {
        return Ok(Some(format!("dpkg-deb -x {} failed", deb.display())));
    }
    let inner = format!("lib/modules/{release}/updates/livepatch-{MODULE}.ko");
    let packaged = fs::read(unpacked.join(&inner)).unwrap_or_default();
    if packaged != fs::read(ko)? {
        return Ok(Some(format!(
            "{inner} in {} is not the built module",
            deb.display()
        )));
    }
    Ok(None)
}

fn code(run: &KlpgenRun) -> Option<i32> {
    run.status.and_then(|s| s.code())
}

/// Runs the case; `Ok(Err(why))` is a failed check, `Ok(Ok(summary))` a pass.
pub fn run(
    klpgen: &Path,
    k: &Kernel,
    noibt: &Kernel,
    doctored: &Doctored,
    workdir: &Path,
) -> Result<std::result::Result<String, String>> {
    let (output, logs) = fresh_case_dirs(workdir, NAME)?;
    let probe = fs::read(
        util::repo_root()
            .join("tests/e2e")
            .join(PATCH_CASE)
            .join("probe.sh"),
    )?;
    let targets = [("ibt", k), ("noibt", noibt)];

    // 1. Both targets in one run.
    let report = logs.join("report.json");
    let kernels: Vec<String> = targets.iter().map(|(n, k)| spec(k, n)).collect();
    let mut cmd = command(klpgen, &output, &report, &kernels);
    cmd.args(["--package", "deb", "--package-version", "1.0-1"])
        .args(["--package-maintainer", "klpgen e2e <e2e@example.org>"]);
    eprintln!("  $ {}", util::display(&cmd));
    let run = run_klpgen(cmd, &logs.join("both"))?;
    if code(&run) != Some(0) {
        eprintln!("{}", run.show());
        return Ok(Err(format!(
            "the two-target run exited {:?}, not 0",
            code(&run)
        )));
    }
    let v = read_report(&report)?;
    let mut problems = Vec::new();
    if v["schema"] != "klpgen-targets/1" || v["built"] != 2 || v["total"] != 2 {
        problems.push(format!(
            "report: schema {} built {} of {}",
            v["schema"], v["built"], v["total"]
        ));
    }
    let mut shas = Vec::new();
    for (i, (name, tk)) in targets.iter().enumerate() {
        let e = &v["targets"][i];
        let ko = output.join(name).join(format!("livepatch-{MODULE}.ko"));
        if e["name"] != *name || e["report"]["result"] != "built" {
            problems.push(format!(
                "report entry {i}: {} {}",
                e["name"], e["report"]["result"]
            ));
        }
        if e["report"]["module"]["path"] != ko.display().to_string() {
            problems.push(format!(
                "report entry {name}: module {}",
                e["report"]["module"]["path"]
            ));
        }
        let row_ok = run.stdout.lines().any(|l| {
            let c: Vec<&str> = l.split_whitespace().collect();
            c.len() == 5
                && c[0] == *name
                && c[1] == "built"
                && c[3] == e["report"]["module"]["sha256"]
        });
        if !row_ok {
            problems.push(format!("no summary row for {name} with its sha256"));
        }
        shas.push(e["report"]["module"]["sha256"].clone());
        if let Some(p) = deb_problem(&ko, e)? {
            problems.push(format!("{name}: {p}"));
        }
        // 2. Each module in its own kernel.
        let boot = guest::boot(&guest::Spec {
            kernel: &tk.bzimage(),
            machine: guest::TEST_KERNEL,
            module: &ko,
            module_name: &format!("livepatch_{MODULE}"),
            probe: &probe,
            workdir: &logs.join(format!("boot-{name}")),
            preload: None,
            cross: None,
            late: None,
            second: None,
            wrong_kernel: None,
        })?;
        for f in boot.failed_checks() {
            problems.push(format!("{name} in its kernel: {f}"));
        }
    }
    if shas[0] == shas[1] {
        problems.push("both targets got the same module (their kernels differ)".into());
    }

    // 3. One target refused: the other still builds, exit 5.
    let report2 = logs.join("report-refused.json");
    let bad = format!("{},vmlinux={}", spec(k, "bad"), doctored.vmlinux.display());
    let cmd = command(
        klpgen,
        &output.join("refused"),
        &report2,
        &[bad, spec(noibt, "good")],
    );
    eprintln!("  $ {}", util::display(&cmd));
    let run2 = run_klpgen(cmd, &logs.join("refused"))?;
    let v2 = read_report(&report2)?;
    if code(&run2) != Some(5) {
        problems.push(format!(
            "the run with a refused target exited {:?}, not 5",
            code(&run2)
        ));
    }
    if v2["result"] != "partial"
        || v2["targets"][0]["report"]["result"] != "refused"
        || v2["targets"][1]["report"]["result"] != "built"
    {
        problems.push(format!(
            "the run with a refused target: result {}, bad {}, good {}",
            v2["result"],
            v2["targets"][0]["report"]["result"],
            v2["targets"][1]["report"]["result"]
        ));
    }
    let good = output
        .join("refused/good")
        .join(format!("livepatch-{MODULE}.ko"));
    if !good.is_file() {
        problems.push(format!("{} not written", good.display()));
    }
    if !problems.is_empty() {
        eprintln!("{}", run.show());
        eprintln!("{}", run2.show());
        return Ok(Err(problems.join("; ")));
    }
    Ok(Ok(format!(
        "2 targets built and packaged in one run ({}s), each module loaded in its own kernel; with one target refused the other built, exit 5 ({}s)",
        run.seconds, run2.seconds
    )))
}
