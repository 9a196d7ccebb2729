//! An invariant on real objects: every x86-64 object of the test kernel, diffed against
//! itself, reports no change and no refusal (a differ that sees changes where there are none
//! would make users widen every patch or give up). Part of `cargo xtask e2e`.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Result};

use elfdiff::{Diff, Object, Orig, Patched};

fn objects(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(rd) = fs::read_dir(dir) else { return };
    for e in rd.flatten() {
        let p = e.path();
        let name = e.file_name().to_string_lossy().into_owned();
        let Ok(t) = e.file_type() else { continue };
        let skip_dir = matches!(
            name.as_str(),
            "rust" | "tools" | "scripts" | "boot" | "realmode" | "source"
        );
        let object = name.ends_with(".o")
            && !name.ends_with(".mod.o")
            && !name.starts_with('.')
            && name != "vmlinux.o";
        if t.is_dir() && !skip_dir {
            objects(&p, out);
        } else if t.is_file() && object {
            out.push(p);
        }
    }
}

/// Diff every object of `build` against itself; returns (objects diffed, skipped).
pub fn check(build: &Path) -> Result<(usize, usize)> {
    let start = Instant::now();
    let mut files = Vec::new();
    objects(build, &mut files);
    files.sort();
    let (mut diffed, mut skipped) = (0, 0);
    let mut problems = Vec::new();
    for f in &files {
        let bytes = fs::read(f)?;
        let label = f.display().to_string();
        let (Ok(o), Ok(p)) = (
            Object::<Orig>::parse(label.clone(), &bytes),
            Object::<Patched>::parse(label.clone(), &bytes),
        ) else {
            skipped += 1; // not x86-64 relocatable (32-bit boot code, archives named .o)
            continue;
        };
        let report = Diff::new(&o, &p).report();
        if !report.changed.is_empty() || !report.new.is_empty() || !report.refused.is_empty() {
            problems.push(format!("{label}: {report:?}"));
        }
        diffed += 1;
    }
    eprintln!(
        "e2e: self-diff of {diffed} test-kernel objects ({skipped} skipped) in {:.1}s",
        start.elapsed().as_secs_f64()
    );
    if diffed < 100 {
        bail!(
            "self-diff found only {diffed} objects under {}",
            build.display()
        );
    }
    if !problems.is_empty() {
        bail!(
            "objects that differ from themselves:\n{}",
            problems.join("\n")
        );
    }
    Ok((diffed, skipped))
}
