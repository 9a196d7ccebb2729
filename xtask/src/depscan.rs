//! `cargo xtask e2e depscan`: klpgen's dependency scan (which units include an edited header,
//! for targets without kbuild records) against the test kernel's own records, which are the
//! ground truth.
//!
//! For headers of different fan-out — `include/linux/seq_file.h` (hundreds of units),
//! `include/linux/proc_fs.h`, `fs/proc/internal.h` (a directory's private header),
//! `include/linux/livepatch.h`, `include/linux/kprobes.h` (whose users include it under
//! `CONFIG_KPROBES` conditionals), one under `arch/x86/include`, leaves with two users
//! (`include/linux/kcore.h`, `fs/proc/fd.h`), and one behind a Makefile's `-I`
//! (`security/selinux/include/security.h`, not built in the test configuration) —
//! `klpgen depscan` answers once from the records and once as for a target without any
//! (`--no-target-records`: kbuild's dry run, the static include graph). The scan must give a
//! superset of the records' units (a missing unit would be a silently incomplete livepatch);
//! its extra candidates are what `klpgen build` drops after the original build, by the records
//! of its own build. That last step is shown by whole `klpgen build --no-target-records` runs of
//! a comment change to `fs/proc/fd.h` and to `fs/proc/internal.h`: the units each reports must
//! be exactly the records'. The figures (units, candidates, extra, seconds) are printed in a
//! table. About 90 s with empty caches (kbuild's dry run, the two builds), so part of
//! `cargo xtask e2e` rather than of `cargo test`; `cargo xtask depscan` runs it alone.

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use serde_json::Value;

use crate::kernel::Kernel;
use crate::util;

/// The headers checked, from many users to none in this configuration.
const HEADERS: &[&str] = &[
    "include/linux/seq_file.h",
    "include/linux/proc_fs.h",
    "arch/x86/include/asm/fpu/api.h",
    "include/linux/kprobes.h",
    "include/linux/livepatch.h",
    "fs/proc/internal.h",
    "include/linux/kcore.h",
    "fs/proc/fd.h",
    "security/selinux/include/security.h",
];

/// Headers built whole with `klpgen build --no-target-records`: a leaf (two users) and a
/// directory's private header (about twenty).
const BUILT: &[&str] = &["fs/proc/fd.h", "fs/proc/internal.h"];

/// Headers the test kernel's records must show users of (else the comparison proves
/// nothing: a broken record reader finds none, and every scan is then a superset).
const USED: &[(&str, usize)] = &[
    ("include/linux/seq_file.h", 300),
    ("fs/proc/internal.h", 10),
    ("fs/proc/fd.h", 2),
];

/// Whether klpgen patches this unit: not the kernel's Rust crates (`rust/core.o`,
/// `rust/bindings.o`: their records name the headers bindgen read), only C (`rust/helpers/helpers.o`
/// and `rust/exports.o` are C units of `rust/`).
fn klpgen_builds(k: &Kernel, unit: &str) -> bool {
    !unit.starts_with("rust/") || k.src.join(unit).with_extension("c").is_file()
}

fn depscan(
    klpgen: &Path,
    k: &Kernel,
    cache: &Path,
    header: &str,
    records: bool,
) -> Result<(Value, f64)> {
    let mut c = Command::new(klpgen);
    c.args(["depscan", "--sourcedir"])
        .arg(&k.src)
        .arg("--builddir")
        .arg(&k.build)
        .env("KLPGEN_CACHE_DIR", cache)
        .env("PATH", util::path_with_cargo_bin())
        .stdin(Stdio::null());
    if !records {
        c.arg("--no-target-records");
    }
    c.arg(header);
    let start = Instant::now();
    let o = c.output().context("running klpgen depscan")?;
    let secs = start.elapsed().as_secs_f64();
    if !o.status.success() {
        bail!(
            "klpgen depscan {header} failed:\n{}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
    Ok((serde_json::from_slice(&o.stdout)?, secs))
}

fn units(v: &Value, field: &str) -> Vec<String> {
    v[field]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|u| u.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// Runs the check; returns the failures (empty: passed).
pub fn check(klpgen: &Path, k: &Kernel, workdir: &Path) -> Result<Vec<String>> {
    let cache = workdir.join("depscan-cache");
    fs::create_dir_all(&cache)?;
    let mut failures = Vec::new();
    let mut rows = Vec::new();
    for h in HEADERS {
        let (rec, _) = depscan(klpgen, k, &cache, h, true)?;
        let (scan, secs) = depscan(klpgen, k, &cache, h, false)?;
        let exact: Vec<String> = units(&rec, "exact")
            .into_iter()
            .filter(|u| klpgen_builds(k, u))
            .collect();
        if let Some((_, min)) = USED.iter().find(|(u, _)| u == h) {
            if exact.len() < *min {
                failures.push(format!(
                    "{h}: the records name {} units, fewer than the {min} it has in the test kernel",
                    exact.len()
                ));
            }
        }
        if rec["stats"]["method"] != "records" {
            failures.push(format!(
                "{h}: the test kernel's records were not taken as complete ({})",
                rec["stats"]
            ));
        }
        let mut found = units(&scan, "exact");
        found.extend(units(&scan, "candidates"));
        let missed: Vec<&String> = exact.iter().filter(|u| !found.contains(u)).collect();
        if !missed.is_empty() {
            failures.push(format!(
                "{h}: the scan misses {} unit(s) the records name: {}",
                missed.len(),
                missed
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(" ")
            ));
        }
        let extra = found.len().saturating_sub(exact.len() - missed.len());
        rows.push(format!(
            "  {h:<40} records {:>4}   scan {:>4}   extra {:>3}   {:>5.1} s (scan {:.1} s, {} files, dry run {})",
            exact.len(),
            found.len(),
            extra,
            secs,
            scan["stats"]["seconds"].as_f64().unwrap_or(0.0),
            scan["stats"]["files"],
            if scan["stats"]["dry_run_cached"] == true { "cached" } else { "ran" }
        ));
    }
    eprintln!("e2e: depscan, units including each header (records of the test kernel vs klpgen's scan without them):");
    for r in &rows {
        eprintln!("{r}");
    }
    for h in BUILT {
        failures.extend(whole_build(klpgen, k, &cache, workdir, h)?);
    }
    Ok(failures)
}

/// One `klpgen build --no-target-records` of a comment change to `header`: the affected
/// units it reports (after dropping the scan's extra candidates) are the records'.
fn whole_build(
    klpgen: &Path,
    k: &Kernel,
    cache: &Path,
    workdir: &Path,
    header: &str,
) -> Result<Vec<String>> {
    let text = fs::read_to_string(k.src.join(header))?;
    let first = text.lines().next().unwrap_or_default();
    let tag = header.replace('/', "_");
    let patch = workdir.join(format!("depscan-{tag}.patch"));
    fs::write(
        &patch,
        format!("--- a/{header}\n+++ b/{header}\n@@ -1 +1 @@\n-{first}\n+{first} /* klpgen depscan */\n"),
    )?;
    let report = workdir.join(format!("depscan-{tag}.json"));
    let start = Instant::now();
    let o = Command::new(klpgen)
        .args(["build", "--no-target-records", "--sourcedir"])
        .arg(&k.src)
        .arg("--builddir")
        .arg(&k.build)
        .arg("-o")
        .arg(workdir.join("depscan-out"))
        .arg("--report")
        .arg(&report)
        .arg(&patch)
        .env("KLPGEN_CACHE_DIR", cache)
        .env("PATH", util::path_with_cargo_bin())
        .stdin(Stdio::null())
        .output()
        .context("running klpgen build")?;
    let secs = start.elapsed().as_secs_f64();
    let doc: Value = serde_json::from_slice(&fs::read(&report)?)
        .with_context(|| format!("reading {}", report.display()))?;
    let mut failures = Vec::new();
    // A comment change: no functional change (exit 3) is the right answer.
    if o.status.code() != Some(3) {
        failures.push(format!(
            "klpgen build --no-target-records of a comment in {header}: {} (expected exit 3, no functional change):\n{}",
            o.status,
            util::tail_lines(&String::from_utf8_lossy(&o.stderr), 20)
        ));
    }
    let (rec, _) = depscan(klpgen, k, cache, header, true)?;
    let exact = units(&rec, "exact");
    let affected = units(&doc["units"], "affected");
    let dropped = units(&doc["units"], "dropped");
    if affected != exact {
        failures.push(format!(
            "klpgen build --no-target-records of {header} affects [{}], the records say [{}]",
            affected.join(" "),
            exact.join(" ")
        ));
    }
    eprintln!(
        "e2e: depscan, klpgen build --no-target-records of a change to {header}: {} units affected = the records' {}, {} candidates dropped by the records of klpgen's build, {secs:.1} s",
        affected.len(),
        exact.len(),
        dropped.len()
    );
    Ok(failures)
}

/// `cargo xtask depscan`: the check alone (it is also part of `cargo xtask e2e`).
pub fn cmd_depscan(rest: &[String]) -> Result<bool> {
    if !rest.is_empty() {
        bail!("`cargo xtask depscan` takes no arguments");
    }
    let k = crate::kernel::ensure()?;
    let klpgen = crate::case::build_klpgen()?;
    let workdir = util::target_dir().join("e2e");
    fs::create_dir_all(&workdir)?;
    let start = Instant::now();
    let failures = check(&klpgen, &k, &workdir)?;
    for f in &failures {
        println!("FAIL depscan: {f}");
    }
    if failures.is_empty() {
        println!(
            "PASS depscan ({:.0} s): the scan finds every unit the records name, and klpgen build keeps exactly those",
            start.elapsed().as_secs_f64()
        );
    }
    Ok(failures.is_empty())
}
