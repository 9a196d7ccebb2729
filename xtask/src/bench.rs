//! `cargo xtask bench`: the speed and memory figures klpgen is held to, measured on the test
//! kernel — `klpgen build` cold (nothing of klpgen's cached) and warm, and `klpgen diff` on the
//! largest object pair (instructions under callgrind, peak memory), the same for
//! kernel/workqueue.o on the x86-64 and the ppc64le test kernels side by side, and the call
//! graph of the target's vmlinux.o (`klpgen callers`). Not a test: it prints the
//! figures, compares them with the targets, and writes target/bench/results.json.
//!
//! It also diffs generated kernel-like pairs of 400 and 1,600 functions (about 3,200 and
//! 12,800 sections): the instructions per section of the larger over the smaller must stay
//! under 1.5 (1.0 is linear; matching that compared every candidate pairwise would approach
//! 4), which holds klpgen to its rule of no pairwise matching.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{bail, Context, Result};

use crate::{case, kernel, util};

/// Targets from the issues: (name, limit, unit).
const TARGETS: &[(&str, f64, &str)] = &[
    ("build_cold_seconds", 75.0, "s"),
    ("build_warm_seconds", 8.0, "s"),
    ("diff_instructions_millions", 120.0, "M instructions"),
    ("diff_peak_rss_mb", 50.0, "MB"),
    ("callgraph_seconds", 1.0, "s"),
    (
        "synthetic_3k_instructions_millions",
        120.0,
        "M instructions",
    ),
    ("synthetic_3k_peak_rss_mb", 50.0, "MB"),
    // Instructions per section of the 4x-larger object over those of the 3,000-section one:
    // 1.0 is linear; pairwise matching over names would approach 4.
    ("synthetic_scaling_4x", 1.5, "x per section"),
];

/// Functions of the synthetic objects: about 8 sections each (code, its relocations, data,
/// a static local, strings...), so 400 give the ~3,000-section object the issue names.
const SYNTH_SMALL: usize = 400;
const SYNTH_LARGE: usize = 1600;

fn klpgen_build(
    klpgen: &Path,
    k: &kernel::Kernel,
    cache: &Path,
    name: &str,
    patch: &Path,
    out: &Path,
) -> Result<f64> {
    let start = Instant::now();
    let o = Command::new(klpgen)
        .arg("build")
        .arg("-q")
        .arg("--sourcedir")
        .arg(&k.src)
        .arg("--builddir")
        .arg(&k.build)
        .arg("--name")
        .arg(name)
        .arg("-o")
        .arg(out)
        .arg(patch)
        .env("PATH", util::path_with_cargo_bin())
        .env("KLPGEN_CACHE_DIR", cache)
        .stdin(Stdio::null())
        .output()
        .context("running klpgen build")?;
    let secs = start.elapsed().as_secs_f64();
    if !o.status.success() {
        bail!(
            "klpgen build {} failed:\n{}",
            patch.display(),
            String::from_utf8_lossy(&o.stderr)
        );
    }
    Ok(secs)
}

/// The run directory klpgen left for module `name` in `cache`.
fn run_dir(cache: &Path, name: &str) -> Result<PathBuf> {
    for e in fs::read_dir(cache.join("trees"))? {
        let d = e?.path().join("runs").join(format!("livepatch-{name}"));
        if d.is_dir() {
            return Ok(d);
        }
    }
    bail!("no run directory for {name} under {}", cache.display())
}

fn callgrind_instructions(klpgen: &Path, orig: &Path, patched: &Path, out: &Path) -> Result<u64> {
    let file = out.join("callgrind.out");
    let o = Command::new("valgrind")
        .arg("--tool=callgrind")
        .arg(format!("--callgrind-out-file={}", file.display()))
        .arg(klpgen)
        .arg("diff")
        .arg(orig)
        .arg(patched)
        .stdin(Stdio::null())
        .output()
        .context("running valgrind (package valgrind)")?;
    if !matches!(o.status.code(), Some(0) | Some(3)) {
        bail!(
            "klpgen diff under callgrind failed:\n{}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
    let text = fs::read_to_string(&file)?;
    text.lines()
        .find_map(|l| {
            l.strip_prefix("summary:")
                .or_else(|| l.strip_prefix("totals:"))
        })
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .context("no instruction total in the callgrind output")
}

fn peak_rss_kb(klpgen: &Path, orig: &Path, patched: &Path) -> Result<u64> {
    let o = Command::new("/usr/bin/time")
        .args(["-f", "%M"])
        .arg(klpgen)
        .arg("diff")
        .arg(orig)
        .arg(patched)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .output()
        .context("running /usr/bin/time (package time)")?;
    let err = String::from_utf8_lossy(&o.stderr);
    err.lines()
        .rev()
        .find_map(|l| l.trim().parse().ok())
        .context("no maximum resident set size from /usr/bin/time")
}

/// The call graph of the target's vmlinux.o: `klpgen callers --timing` (median wall time of
/// three runs, process start included) and the graph's size from its timing line.
struct CallgraphFigure {
    seconds: f64,
    runs: Vec<f64>,
    functions: u64,
    edges: u64,
    sites: u64,
    /// klpgen's own account: "read .. ms, parse .. ms, graph .. ms, total .. ms".
    internal: String,
}

fn callgraph_figure(klpgen: &Path, build: &Path) -> Result<CallgraphFigure> {
    let mut runs = Vec::new();
    let mut last = String::new();
    for _ in 0..3 {
        let start = Instant::now();
        let o = Command::new(klpgen)
            .args(["callers", "--depth", "1", "--timing", "--builddir"])
            .arg(build)
            .arg("show_val_kb")
            .stdin(Stdio::null())
            .output()
            .context("running klpgen callers")?;
        runs.push(start.elapsed().as_secs_f64());
        if !o.status.success() {
            bail!(
                "klpgen callers failed:\n{}",
                String::from_utf8_lossy(&o.stderr)
            );
        }
        // A sanity check of the graph itself: show_val_kb's caller in fs/proc/meminfo.c.
        if !String::from_utf8_lossy(&o.stdout).contains("meminfo_proc_show") {
            bail!(
                "klpgen callers show_val_kb does not list meminfo_proc_show:\n{}",
                String::from_utf8_lossy(&o.stdout)
            );
        }
        last = String::from_utf8_lossy(&o.stderr).into_owned();
    }
    // "callgraph: N functions, M edges (S call sites); read .. ms, ..."
    let line = last
        .lines()
        .find_map(|l| l.strip_prefix("callgraph: "))
        .context("no timing line from klpgen callers --timing")?;
    let number_before = |word: &str| -> Result<u64> {
        let words: Vec<&str> = line.split_whitespace().collect();
        let i = words
            .iter()
            .position(|w| w.trim_end_matches([',', ')', ';']) == word)
            .with_context(|| format!("no {word:?} in {line:?}"))?;
        let n = words
            .get(i.wrapping_sub(1))
            .map(|w| w.trim_start_matches('('))
            .with_context(|| format!("no count before {word:?} in {line:?}"))?;
        n.parse().with_context(|| format!("{n:?} in {line:?}"))
    };
    let mut sorted = runs.clone();
    sorted.sort_by(|a, b| a.total_cmp(b));
    Ok(CallgraphFigure {
        seconds: sorted[1],
        functions: number_before("functions")?,
        edges: number_before("edges")?,
        sites: number_before("call")?,
        internal: line.split_once("; ").map_or("", |(_, t)| t).to_string(),
        runs,
    })
}

/// A kernel-like C unit of `n` exported functions, each with a static helper, a static
/// local of the same name in every helper (`calls.N`: one correlation group of `n`), a
/// table, a global and a printk string; `patched` changes the middle function.
fn synthetic_source(n: usize, patched: bool) -> String {
    let mut c = String::from("extern int printk(const char *, ...);\nextern int ext_counter;\n");
    for i in 0..n {
        let ret = if patched && i == n / 2 { 2 } else { 1 };
        c += &format!(
            "static int table_{i}[4] = {{ {i}, {a}, {b}, {d} }};\nint shared_{i};\n\
             static __attribute__((noinline)) int helper_{i}(int x)\n{{\n\tstatic int calls;\n\
             \tcalls++;\n\treturn x * {m} + table_{i}[x & 3] + calls;\n}}\n\
             int func_{i}(int x)\n{{\n\tif (x > {i})\n\t\tprintk(\"func_{i}: %d too big\\n\", x);\n\
             \tshared_{i} += helper_{i}(x);\n\text_counter++;\n\treturn x + {ret} + shared_{i};\n}}\n",
            a = i + 1,
            b = i + 2,
            d = i + 3,
            m = i % 7 + 2,
        );
    }
    c
}

/// The synthetic pair of `n` functions, compiled like kernel objects for klpgen (function
/// and data sections, fentry, mcount records, DWARF): (orig.o, patched.o).
fn synthetic_pair(dir: &Path, n: usize) -> Result<(PathBuf, PathBuf)> {
    fs::create_dir_all(dir)?;
    let mut out = Vec::new();
    for (name, patched) in [("orig", false), ("patched", true)] {
        let src = dir.join(format!("{name}-{n}.c"));
        let obj = dir.join(format!("{name}-{n}.o"));
        fs::write(&src, synthetic_source(n, patched))?;
        util::run(
            Command::new("gcc")
                .args([
                    "-O2",
                    "-g",
                    "-ffunction-sections",
                    "-fdata-sections",
                    "-pg",
                    "-mfentry",
                    "-mrecord-mcount",
                    "-fno-pic",
                    "-mcmodel=kernel",
                    "-c",
                ])
                .arg(&src)
                .arg("-o")
                .arg(&obj),
        )?;
        out.push(obj);
    }
    Ok((out[0].clone(), out[1].clone()))
}

/// Instructions, peak memory and section count of `klpgen diff` on a synthetic pair.
struct SynthFigure {
    functions: usize,
    sections: usize,
    bytes: u64,
    instructions: u64,
    rss_kb: u64,
}

fn synthetic_figure(klpgen: &Path, dir: &Path, n: usize) -> Result<SynthFigure> {
    let (orig, patched) = synthetic_pair(dir, n)?;
    let instructions = callgrind_instructions(klpgen, &orig, &patched, dir)?;
    Ok(SynthFigure {
        functions: n,
        sections: section_count(&orig)?,
        bytes: fs::metadata(&orig)?.len(),
        instructions,
        rss_kb: peak_rss_kb(klpgen, &orig, &patched)?,
    })
}

/// ELF section headers of an object (relocation sections included, as `readelf -S` counts).
fn section_count(path: &Path) -> Result<usize> {
    use object::Object;
    let bytes = fs::read(path)?;
    let file =
        object::File::parse(&*bytes).with_context(|| format!("cannot parse {}", path.display()))?;
    // `sections()` leaves out the null section header at index 0.
    Ok(file.sections().count() + 1)
}

/// The diff of one object pair klpgen built: its size and the cost of `klpgen diff` on it.
struct PairFigure {
    unit: &'static str,
    bytes: u64,
    sections: usize,
    instructions: u64,
    rss_kb: u64,
}

/// Builds `patch` (touching `unit`, a `.o` path) on kernel `k` with `klpgen build`, then
/// measures `klpgen diff` on the original and patched objects it compiled.
fn pair_figure(
    klpgen: &Path,
    k: &kernel::Kernel,
    cache: &Path,
    name: &str,
    patch: &Path,
    unit: &'static str,
    root: &Path,
) -> Result<PairFigure> {
    klpgen_build(klpgen, k, cache, name, patch, &root.join("out"))?;
    let run = run_dir(cache, name)?;
    let orig = run.join("orig").join(unit);
    let patched = run.join("patched").join(unit);
    Ok(PairFigure {
        unit,
        bytes: fs::metadata(&orig)?.len(),
        sections: section_count(&orig)?,
        instructions: callgrind_instructions(klpgen, &orig, &patched, root)?,
        rss_kb: peak_rss_kb(klpgen, &orig, &patched)?,
    })
}

/// The same unit's pair on the x86-64 test kernel and on the ppc64le one (its largest object:
/// the cross kernel has no perf events, so not kernel/events/core.o), for comparing machines.
fn machine_figures(
    klpgen: &Path,
    k: &kernel::Kernel,
    cache: &Path,
    root: &Path,
) -> Result<Vec<(&'static str, PairFigure)>> {
    let patch = util::repo_root().join("xtask/bench/workqueue.patch");
    let unit = "kernel/workqueue.o";
    let mut out = Vec::new();
    eprintln!("bench: diffing {unit} on x86-64...");
    let x86 = pair_figure(klpgen, k, cache, "bench-wq-host", &patch, unit, root)?;
    out.push(("x86-64", x86));
    let cross = kernel::ensure_variant(Some("ppc64le"))?;
    eprintln!("bench: diffing {unit} on ppc64le...");
    let ppc = pair_figure(
        klpgen,
        &cross,
        cache,
        "bench-wq-ppc64le",
        &patch,
        unit,
        root,
    )?;
    out.push(("ppc64le", ppc));
    Ok(out)
}

pub fn cmd_bench() -> Result<bool> {
    let k = kernel::ensure()?;
    let klpgen = case::build_klpgen()?;
    let root = util::target_dir().join("bench");
    let cache = root.join("cache");
    if cache.exists() {
        fs::remove_dir_all(&cache)?;
    }
    fs::create_dir_all(&root)?;
    let repo = util::repo_root();
    let one_c = repo.join("tests/e2e/proc-string/case.patch");
    let big = repo.join("xtask/bench/events-core.patch");

    eprintln!("bench: call graph of vmlinux.o (klpgen callers --timing)...");
    let cg = callgraph_figure(&klpgen, &k.build)?;
    eprintln!(
        "bench: call graph: {:.2} s, {} functions, {} edges ({})",
        cg.seconds, cg.functions, cg.edges, cg.internal
    );

    eprintln!("bench: klpgen build, cold (target kernel built, klpgen's cache empty)...");
    let cold = klpgen_build(&klpgen, &k, &cache, "bench-one", &one_c, &root.join("out"))?;
    let mut warm_runs = Vec::new();
    for _ in 0..3 {
        warm_runs.push(klpgen_build(
            &klpgen,
            &k,
            &cache,
            "bench-one",
            &one_c,
            &root.join("out"),
        )?);
    }
    warm_runs.sort_by(|a, b| a.total_cmp(b));
    let warm = warm_runs[1];

    eprintln!("bench: diffing the largest object pair (kernel/events/core.o)...");
    klpgen_build(&klpgen, &k, &cache, "bench-events", &big, &root.join("out"))?;
    let run = run_dir(&cache, "bench-events")?;
    let orig = run.join("orig/kernel/events/core.o");
    let patched = run.join("patched/kernel/events/core.o");
    let size = fs::metadata(&orig)?.len();
    let sections = section_count(&orig)?;
    let instructions = callgrind_instructions(&klpgen, &orig, &patched, &root)?;
    let rss_kb = peak_rss_kb(&klpgen, &orig, &patched)?;
    let machines = machine_figures(&klpgen, &k, &cache, &root)?;

    eprintln!("bench: diffing synthetic objects of {SYNTH_SMALL} and {SYNTH_LARGE} functions...");
    let small = synthetic_figure(&klpgen, &root.join("synthetic"), SYNTH_SMALL)?;
    let large = synthetic_figure(&klpgen, &root.join("synthetic"), SYNTH_LARGE)?;
    let per_section = |f: &SynthFigure| f.instructions as f64 / f.sections as f64;
    let scaling = per_section(&large) / per_section(&small);

    let figures = [
        ("build_cold_seconds", cold),
        ("build_warm_seconds", warm),
        ("diff_instructions_millions", instructions as f64 / 1e6),
        ("diff_peak_rss_mb", rss_kb as f64 / 1024.0),
        ("callgraph_seconds", cg.seconds),
        (
            "synthetic_3k_instructions_millions",
            small.instructions as f64 / 1e6,
        ),
        ("synthetic_3k_peak_rss_mb", small.rss_kb as f64 / 1024.0),
        ("synthetic_scaling_4x", scaling),
    ];
    println!(
        "klpgen bench on {} ({} cores)",
        k.build.display(),
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    println!("  one-.c patch (tests/e2e/proc-string): cold {cold:.1} s, warm {warm:.1} s (median of 3: {warm_runs:.1?})");
    println!(
        "  diff of kernel/events/core.o: {:.2} MB, {sections} sections",
        size as f64 / 1e6
    );
    println!(
        "  call graph of vmlinux.o: {} functions, {} edges ({} call sites); median of 3: {:.2?} s; {}",
        cg.functions, cg.edges, cg.sites, cg.runs, cg.internal
    );
    for (machine, f) in &machines {
        println!(
            "  diff of {} on {machine}: {:.2} MB, {} sections: {:.1} M instructions, {:.1} MB peak",
            f.unit,
            f.bytes as f64 / 1e6,
            f.sections,
            f.instructions as f64 / 1e6,
            f.rss_kb as f64 / 1024.0
        );
    }
    for f in [&small, &large] {
        println!(
            "  diff of a synthetic pair: {} functions, {} sections, {:.2} MB: {:.1} M instructions ({:.0} per section), {:.1} MB peak",
            f.functions,
            f.sections,
            f.bytes as f64 / 1e6,
            f.instructions as f64 / 1e6,
            per_section(f),
            f.rss_kb as f64 / 1024.0
        );
    }
    let mut all_ok = true;
    for ((name, value), (_, limit, unit)) in figures.iter().zip(TARGETS) {
        let ok = value < limit;
        all_ok &= ok;
        println!(
            "  {name:<28} {value:>10.2} {unit:<15} target < {limit} {}",
            if ok { "ok" } else { "MISSED" }
        );
    }
    let synthetic_json: Vec<serde_json::Value> = [&small, &large]
        .iter()
        .map(|f| {
            serde_json::json!({
                "functions": f.functions, "sections": f.sections, "bytes": f.bytes,
                "instructions": f.instructions, "peak_rss_kb": f.rss_kb,
            })
        })
        .collect();
    let json = serde_json::json!({
        "kernel_build": k.build.display().to_string(),
        "object": { "path": "kernel/events/core.o", "bytes": size, "sections": sections },
        "build_cold_seconds": cold,
        "build_warm_seconds": warm,
        "build_warm_runs": warm_runs,
        "diff_instructions": instructions,
        "diff_peak_rss_kb": rss_kb,
        "callgraph_seconds": cg.seconds,
        "callgraph_runs": cg.runs,
        "callgraph": { "functions": cg.functions, "edges": cg.edges, "call_sites": cg.sites, "timing": cg.internal },
        "synthetic": synthetic_json,
        "machines": machines.iter().map(|(m, f)| serde_json::json!({
            "machine": m, "object": f.unit, "bytes": f.bytes, "sections": f.sections,
            "instructions": f.instructions, "peak_rss_kb": f.rss_kb,
        })).collect::<Vec<_>>(),
        "synthetic_scaling_4x": scaling,
        "targets_met": all_ok,
    });
    fs::write(root.join("results.json"), serde_json::to_vec_pretty(&json)?)?;
    println!("  results: {}", root.join("results.json").display());
    Ok(true)
}
