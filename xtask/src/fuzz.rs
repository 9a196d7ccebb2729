//! `cargo xtask fuzz`: builds the libFuzzer targets under `fuzz/` with cargo-fuzz, lays out a
//! seed corpus from real objects (fixtures, klpgen's own work directories, the test kernel,
//! generated modules, e2e patches), runs each target for a fixed time and reports the
//! executions libFuzzer made and any crash.
//!
//! The targets cover every parser of untrusted bytes: object pairs through diff, plan, binding
//! and writer (`elfdiff_pair`) and through `explain` (`explain_pair`), DWARF layouts
//! (`dwarf_layouts`), the call graph (`callgraph`), klp markings and module checks
//! (`ko_finalize`), Module.symvers and symbol tables (`symvers`), patch files (`patch_parse`).
//! Malformed input must be an error, never a panic, abort or unbounded allocation; each crash
//! found gets a regression test (`crates/elfdiff/tests/malformed.rs`,
//! `crates/patchgen/tests/malformed.rs`, `patchgen::patchfile`'s tests).
//!
//! cargo-fuzz wants a nightly compiler for `-Zsanitizer`; the stable toolchain accepts it with
//! `RUSTC_BOOTSTRAP=1`, which is set here. By default the targets are built without a
//! sanitizer (`-s none`): the fuzzed crates have no `unsafe`, and it runs about six times as
//! many inputs per second; panics, aborts (a failed allocation included), timeouts and a
//! resident set over the limit are still caught. `--sanitizer address` adds AddressSanitizer,
//! whose malloc hooks also make libFuzzer report any single allocation over the limit even
//! when it is never touched.

use crate::kernel;
use crate::util;
use anyhow::{bail, Context, Result};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The fuzz targets, in the order they run.
pub const TARGETS: &[&str] = &[
    "elfdiff_pair",
    "ko_finalize",
    "symvers",
    "patch_parse",
    "explain_pair",
    "dwarf_layouts",
    "callgraph",
];
/// Seeds larger than this are left out, and libFuzzer makes no longer inputs: its throughput
/// drops with input size.
const MAX_LEN: usize = 64 * 1024;
/// The DWARF readers need objects with debug information, which is most of a kernel object:
/// the smallest real ones (a changed `fs/proc/*.o` pair, `kernel/livepatch/core.o` linked) are
/// up to four times the usual limit.
const MAX_LEN_DWARF: usize = 256 * 1024;
/// libFuzzer limits: time per input, memory.
const UNIT_TIMEOUT_SECS: u64 = 20;
const RSS_LIMIT_MB: u64 = 2048;
const MALLOC_LIMIT_MB: u64 = 1024;
/// Lines of the target's Module.symvers used as a seed.
const SYMVERS_LINES: usize = 200;

/// Options of `cargo xtask fuzz`.
#[derive(Debug, PartialEq, Eq)]
pub struct Options {
    pub seconds: u64,
    pub targets: Vec<String>,
    /// `none` or `address`.
    pub sanitizer: String,
    /// libFuzzer's random seed; fixed, the same seeds give the same inputs in the same order.
    pub seed: Option<u64>,
}

impl Options {
    /// The short run of `cargo xtask test`: every target for `seconds`, a fixed random seed.
    pub fn quick(seconds: u64) -> Self {
        Options {
            seconds,
            targets: TARGETS.iter().map(|t| t.to_string()).collect(),
            sanitizer: "none".into(),
            seed: Some(1),
        }
    }
}

pub fn parse_args(args: &[String]) -> Result<Options> {
    let mut o = Options {
        seconds: 60,
        targets: Vec::new(),
        sanitizer: "none".into(),
        seed: None,
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--seconds" | "-s" => {
                let v = it.next().context("--seconds needs a number")?;
                o.seconds = v
                    .parse()
                    .with_context(|| format!("--seconds {v:?} is not a number"))?;
                if o.seconds == 0 {
                    bail!("--seconds must be at least 1");
                }
            }
            "--seed" => {
                let v = it.next().context("--seed needs a number")?;
                o.seed = Some(
                    v.parse()
                        .with_context(|| format!("--seed {v:?} is not a number"))?,
                );
            }
            "--sanitizer" => {
                let v = it.next().context("--sanitizer needs address or none")?;
                if v != "address" && v != "none" {
                    bail!("--sanitizer {v:?}: use address or none");
                }
                o.sanitizer = v.clone();
            }
            t if TARGETS.contains(&t) => o.targets.push(t.to_string()),
            other => bail!(
                "unknown fuzz argument {other:?} (targets: {})",
                TARGETS.join(", ")
            ),
        }
    }
    if o.targets.is_empty() {
        o.targets = TARGETS.iter().map(|t| t.to_string()).collect();
    }
    Ok(o)
}

fn fuzz_dir() -> PathBuf {
    util::repo_root().join("fuzz")
}

fn work_dir() -> PathBuf {
    util::target_dir().join("fuzz")
}

fn cargo_fuzz_installed() -> bool {
    util::cargo_bin_dir().join("cargo-fuzz").is_file() || util::which("cargo-fuzz").is_some()
}

/// `cargo fuzz build` of every target; returns the directory holding the binaries.
fn build(sanitizer: &str, log: &Path) -> Result<PathBuf> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let build_dir = work_dir().join(format!("build-{sanitizer}"));
    let mut c = Command::new(cargo);
    c.current_dir(fuzz_dir())
        .args([
            "fuzz",
            "build",
            "--debug-assertions",
            "--sanitizer",
            sanitizer,
        ])
        .arg("--target-dir")
        .arg(&build_dir)
        .env("RUSTC_BOOTSTRAP", "1")
        .env("PATH", util::path_with_cargo_bin());
    util::run_logged(
        &mut c,
        log,
        &format!("cargo fuzz build (sanitizer {sanitizer})"),
    )?;
    let bins = build_dir.join("x86_64-unknown-linux-gnu/release");
    for t in TARGETS {
        if !bins.join(t).is_file() {
            bail!(
                "cargo fuzz build did not produce {}",
                bins.join(t).display()
            );
        }
    }
    Ok(bins)
}

// ---------------------------------------------------------------------------------------------
// Seeds

/// A seed for `elfdiff_pair`: the original's length (u32 LE), the original, the patched.
pub fn pair_seed(orig: &[u8], patched: &[u8]) -> Option<Vec<u8>> {
    let len = u32::try_from(orig.len()).ok()?;
    let mut v = Vec::with_capacity(4 + orig.len() + patched.len());
    v.extend_from_slice(&len.to_le_bytes());
    v.extend_from_slice(orig);
    v.extend_from_slice(patched);
    Some(v)
}

/// The first `n` lines of `text`.
pub fn head_lines(text: &str, n: usize) -> String {
    text.lines().take(n).map(|l| format!("{l}\n")).collect()
}

/// A copy of an ELF object without DWARF (smaller seeds, the same code and relocations);
/// the object itself when objcopy is not there or fails.
fn strip_debug(path: &Path, tmp: &Path) -> Option<Vec<u8>> {
    let ok = Command::new("objcopy")
        .arg("--strip-debug")
        .arg(path)
        .arg(tmp)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    let bytes = if ok { fs::read(tmp) } else { fs::read(path) };
    bytes.ok()
}

fn files_with_ext(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == ext))
        .collect();
    v.sort();
    v
}

fn subdirs(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    v.sort();
    v
}

/// `*.o` files below `dir` (at most `limit`), depth first in name order.
fn objects_below(dir: &Path, limit: usize) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for p in subdirs(&d).into_iter().rev() {
            stack.push(p);
        }
        out.extend(files_with_ext(&d, "o"));
        if out.len() >= limit {
            break;
        }
    }
    out.truncate(limit);
    out
}

fn klpgen_cache() -> PathBuf {
    match std::env::var_os("XDG_CACHE_HOME") {
        Some(d) if !d.is_empty() => PathBuf::from(d),
        _ => util::home_dir().join(".cache"),
    }
    .join("klpgen")
}

/// The longest input of a target (its seeds included).
pub fn max_len(target: &str) -> usize {
    match target {
        "explain_pair" | "dwarf_layouts" => MAX_LEN_DWARF,
        _ => MAX_LEN,
    }
}

struct Seeds {
    dir: PathBuf,
    count: usize,
    tmp: PathBuf,
    max: usize,
}

impl Seeds {
    fn new(target: &str) -> Result<Self> {
        let dir = work_dir().join("seeds").join(target);
        if dir.exists() {
            fs::remove_dir_all(&dir)?;
        }
        fs::create_dir_all(&dir)?;
        Ok(Seeds {
            tmp: work_dir().join("strip.tmp.o"),
            dir,
            count: 0,
            max: max_len(target),
        })
    }

    fn add(&mut self, name: &str, bytes: &[u8]) -> Result<()> {
        if bytes.is_empty() || bytes.len() > self.max {
            return Ok(());
        }
        let safe: String = name
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        fs::write(self.dir.join(format!("{:03}-{safe}", self.count)), bytes)?;
        self.count += 1;
        Ok(())
    }

    fn stripped(&self, p: &Path) -> Option<Vec<u8>> {
        strip_debug(p, &self.tmp)
    }
}

/// The (name, orig.o, patched.o) of every fixture `cargo test` compiled.
fn fixture_pairs() -> Vec<(String, Vec<u8>, Vec<u8>)> {
    subdirs(&util::target_dir().join("tmp/fixtures"))
        .into_iter()
        .filter_map(|d| {
            let name = d.file_name()?.to_string_lossy().into_owned();
            Some((
                name,
                fs::read(d.join("orig.o")).ok()?,
                fs::read(d.join("patched.o")).ok()?,
            ))
        })
        .collect()
}

/// (run name, path below the run's `orig`, orig object, patched object) of up to 8 objects
/// of every run in klpgen's work directories.
fn run_pairs() -> Vec<(String, PathBuf, PathBuf, PathBuf)> {
    let mut pairs = Vec::new();
    for tree in subdirs(&klpgen_cache().join("trees")) {
        for run in subdirs(&tree.join("runs")) {
            let name = run
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned();
            let orig = run.join("orig");
            for o in objects_below(&orig, 8) {
                if let Ok(rel) = o.strip_prefix(&orig) {
                    let p = run.join("patched").join(rel);
                    pairs.push((name.clone(), rel.to_path_buf(), o.clone(), p));
                }
            }
        }
    }
    pairs
}

/// Object pairs from the fixtures (compiled by `cargo test`) and klpgen's work directories,
/// plus unchanged pairs of test kernel objects.
fn seed_elfdiff_pair(k: Option<&kernel::Kernel>) -> Result<Seeds> {
    let mut s = Seeds::new("elfdiff_pair")?;
    for (name, o, p) in fixture_pairs() {
        if let Some(seed) = pair_seed(&o, &p) {
            s.add(&format!("fixture-{name}"), &seed)?;
        }
    }
    for (run, _, o, p) in run_pairs() {
        if let (Some(ob), Some(pb)) = (s.stripped(&o), s.stripped(&p)) {
            if let Some(seed) = pair_seed(&ob, &pb) {
                s.add(&format!("run-{run}"), &seed)?;
            }
        }
    }
    if let Some(k) = k {
        for o in files_with_ext(&k.build.join("fs/proc"), "o")
            .into_iter()
            .take(6)
        {
            if let Some(b) = s.stripped(&o) {
                if let Some(seed) = pair_seed(&b, &b) {
                    s.add("kernel-same", &seed)?;
                }
            }
        }
    }
    Ok(s)
}

/// Generated livepatch modules (e2e output and klpgen's module directories) and the
/// livepatch objects before linking.
fn seed_ko_finalize() -> Result<Seeds> {
    let mut s = Seeds::new("ko_finalize")?;
    for d in subdirs(&util::target_dir().join("e2e")) {
        for ko in files_with_ext(&d, "ko") {
            if let Some(b) = s.stripped(&ko) {
                s.add("e2e-ko", &b)?;
            }
        }
    }
    for tree in subdirs(&klpgen_cache().join("trees")) {
        for run in subdirs(&tree.join("runs")) {
            let m = run.join("module");
            for ko in files_with_ext(&m, "ko") {
                if let Some(b) = s.stripped(&ko) {
                    s.add("linked-ko", &b)?;
                }
            }
            if let Ok(b) = fs::read(m.join("klpgen_patch.o")) {
                s.add("patch-object", &b)?;
            }
        }
    }
    Ok(s)
}

/// The head of the test kernel's Module.symvers, and small ELF objects for the symbol table
/// parser.
fn seed_symvers(k: Option<&kernel::Kernel>) -> Result<Seeds> {
    let mut s = Seeds::new("symvers")?;
    s.add(
        "symvers-sample",
        b"0x00000000\tprintk\tvmlinux\tEXPORT_SYMBOL\t\n0x12345678\tfoo\tdrivers/x\tEXPORT_SYMBOL_GPL\tNS\n",
    )?;
    if let Some(k) = k {
        if let Ok(text) = fs::read_to_string(k.build.join("Module.symvers")) {
            s.add(
                "Module.symvers",
                head_lines(&text, SYMVERS_LINES).as_bytes(),
            )?;
        }
        for o in files_with_ext(&k.build.join("fs/proc"), "o")
            .into_iter()
            .take(4)
        {
            if let Some(b) = s.stripped(&o) {
                s.add("kernel-object", &b)?;
            }
        }
    }
    for d in subdirs(&util::target_dir().join("tmp/fixtures"))
        .into_iter()
        .take(6)
    {
        if let Ok(b) = fs::read(d.join("orig.o")) {
            s.add("fixture-object", &b)?;
        }
    }
    Ok(s)
}

/// The e2e cases' patches and the examples.
fn seed_patch_parse() -> Result<Seeds> {
    let mut s = Seeds::new("patch_parse")?;
    let root = util::repo_root();
    for d in subdirs(&root.join("tests/e2e")) {
        if let Ok(b) = fs::read(d.join("case.patch")) {
            s.add("case.patch", &b)?;
        }
    }
    for p in files_with_ext(&root.join("examples"), "patch") {
        if let Ok(b) = fs::read(&p) {
            s.add("example.patch", &b)?;
        }
    }
    Ok(s)
}

/// Whether an ELF object has DWARF (a `.debug_info` section name in its string tables).
fn has_dwarf(bytes: &[u8]) -> bool {
    bytes.windows(12).any(|w| w == b".debug_info\0")
}

/// Compiled C kernel objects (DWARF producer `GNU C`; not host tools, not real-mode code) with
/// DWARF, of at most `max` bytes: `limit` of them spread evenly over the sizes found.
fn small_dwarf_objects(k: &kernel::Kernel, max: usize, limit: usize) -> Vec<(String, Vec<u8>)> {
    let mut found: Vec<(String, Vec<u8>)> = objects_below(&k.build, usize::MAX)
        .into_iter()
        .filter(|p| fs::metadata(p).is_ok_and(|m| (m.len() as usize) <= max))
        .filter_map(|p| {
            let rel = p.strip_prefix(&k.build).ok()?.display().to_string();
            let host = ["tools/", "scripts/", "arch/x86/boot/", "arch/x86/realmode/"]
                .iter()
                .any(|d| rel.starts_with(d));
            let b = fs::read(&p).ok()?;
            (!host && has_dwarf(&b) && b.windows(5).any(|w| w == b"GNU C")).then_some((rel, b))
        })
        .collect();
    found.sort_by_key(|(p, b)| (b.len(), p.clone()));
    if found.len() <= limit || limit == 0 {
        return found;
    }
    let step = found.len() / limit;
    found.into_iter().step_by(step).take(limit).collect()
}

/// Object pairs with DWARF: the fixtures compiled with `-g` for their `explain:` lines, the
/// changed kernel units of klpgen's work directories (unstripped), and unchanged pairs of
/// small test kernel objects.
fn seed_explain_pair(k: Option<&kernel::Kernel>) -> Result<Seeds> {
    let mut s = Seeds::new("explain_pair")?;
    for (name, o, p) in fixture_pairs() {
        if has_dwarf(&o) {
            if let Some(seed) = pair_seed(&o, &p) {
                s.add(&format!("fixture-{name}"), &seed)?;
            }
        }
    }
    let mut seen = std::collections::BTreeSet::new();
    for (_, rel, o, p) in run_pairs() {
        let (Ok(ob), Ok(pb)) = (fs::read(&o), fs::read(&p)) else {
            continue;
        };
        if ob == pb || !seen.insert((ob.len(), pb.len())) {
            continue;
        }
        if let Some(seed) = pair_seed(&ob, &pb) {
            s.add(&format!("run-{}", rel.display()), &seed)?;
        }
    }
    if let Some(k) = k {
        for (p, b) in small_dwarf_objects(k, 48 * 1024, 6) {
            if let Some(seed) = pair_seed(&b, &b) {
                s.add(&format!("kernel-same-{p}"), &seed)?;
            }
        }
    }
    Ok(s)
}

/// A relocatable object linked at the kernel's address with unresolved symbols ignored and
/// only its debug sections kept: DWARF with relocations applied, as in vmlinux.
fn linked_debug(obj: &Path, tmp: &Path) -> Option<Vec<u8>> {
    let exe = tmp.with_extension("elf");
    let quiet = |c: &mut Command| {
        c.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    // --noinhibit-exec: relocations of discarded metadata that do not fit are only warnings.
    quiet(
        Command::new("ld")
            .args([
                "--unresolved-symbols=ignore-all",
                "--noinhibit-exec",
                "-e",
                "0",
            ])
            .args(["-Ttext=0xffffffff81000000", "-z", "noexecstack", "-o"])
            .arg(&exe)
            .arg(obj),
    );
    let ok = exe.is_file()
        && quiet(
            Command::new("objcopy")
                .arg("--only-keep-debug")
                .arg(&exe)
                .arg(tmp),
        );
    let out = if ok { fs::read(tmp).ok() } else { None };
    let _ = fs::remove_file(&exe);
    out
}

/// What klpgen reads layouts from: the test kernel's objects that define the `klp_*` and
/// special-section entry structures, linked so their DWARF is relocated as in vmlinux, and
/// as they are (relocatable); small objects with DWARF.
fn seed_dwarf_layouts(k: Option<&kernel::Kernel>) -> Result<Seeds> {
    let mut s = Seeds::new("dwarf_layouts")?;
    let Some(k) = k else {
        return Ok(s);
    };
    for unit in [
        "kernel/livepatch/core.o",
        "lib/bug.o",
        "kernel/static_call_inline.o",
        "arch/x86/kernel/alternative.o",
    ] {
        let p = k.build.join(unit);
        if let Some(b) = linked_debug(&p, &s.tmp) {
            s.add(&format!("linked-{unit}"), &b)?;
        }
        if let Ok(b) = fs::read(&p) {
            s.add(unit, &b)?;
        }
    }
    for (p, b) in small_dwarf_objects(k, 32 * 1024, 4) {
        s.add(&format!("kernel-{p}"), &b)?;
    }
    Ok(s)
}

/// Test kernel objects without DWARF (the call graph reads code, relocations and symbols),
/// including the livepatch core and the fixture built for call graph tests.
fn seed_callgraph(k: Option<&kernel::Kernel>) -> Result<Seeds> {
    let mut s = Seeds::new("callgraph")?;
    if let Some(k) = k {
        for unit in [
            "kernel/livepatch/core.o",
            "kernel/livepatch/transition.o",
            "fs/proc/base.o",
            "fs/proc/array.o",
            "kernel/sched/core.o",
            "arch/x86/entry/entry_64.o",
        ] {
            if let Some(b) = s.stripped(&k.build.join(unit)) {
                s.add(unit, &b)?;
            }
        }
        for o in files_with_ext(&k.build.join("fs/proc"), "o")
            .into_iter()
            .take(6)
        {
            if let Some(b) = s.stripped(&o) {
                s.add("kernel-object", &b)?;
            }
        }
    }
    for d in subdirs(&util::target_dir().join("tmp/fixtures"))
        .into_iter()
        .take(8)
    {
        if let Ok(b) = fs::read(d.join("orig.o")) {
            s.add("fixture-object", &b)?;
        }
    }
    Ok(s)
}

/// When no fixture objects are there yet, `cargo test --test fixtures` compiles them.
fn ensure_fixture_objects() {
    let fixtures = util::target_dir().join("tmp/fixtures");
    if subdirs(&fixtures)
        .iter()
        .any(|d| d.join("orig.o").is_file())
    {
        return;
    }
    eprintln!("fuzz: compiling the fixtures for seeds (cargo test --test fixtures)");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let ok = Command::new(cargo)
        .current_dir(util::repo_root())
        .args(["test", "-q", "-p", "klpgen", "--test", "fixtures"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        eprintln!("fuzz: the fixture tests failed; seeding without some fixture objects");
    }
}

fn make_seeds(target: &str, k: Option<&kernel::Kernel>) -> Result<Seeds> {
    match target {
        "elfdiff_pair" => seed_elfdiff_pair(k),
        "ko_finalize" => seed_ko_finalize(),
        "symvers" => seed_symvers(k),
        "patch_parse" => seed_patch_parse(),
        "explain_pair" => seed_explain_pair(k),
        "dwarf_layouts" => seed_dwarf_layouts(k),
        "callgraph" => seed_callgraph(k),
        other => bail!("no seeds for {other}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Running

/// What libFuzzer reported for one run.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// `stat::number_of_executed_units`, or the count of the `#N DONE` line.
    pub execs: Option<u64>,
    pub exec_per_sec: Option<u64>,
    pub new_units: Option<u64>,
    pub peak_rss_mb: Option<u64>,
    /// The first line saying what went wrong (panic message, sanitizer error, oom, timeout).
    pub problem: Option<String>,
    /// Where libFuzzer saved the input that crashed.
    pub artifact: Option<String>,
}

fn stat(line: &str, key: &str) -> Option<u64> {
    line.strip_prefix(key)?.trim().parse().ok()
}

/// Reads libFuzzer's output.
pub fn parse_log(log: &str) -> Stats {
    let mut s = Stats::default();
    let mut done = None;
    for line in log.lines() {
        let line = line.trim_end();
        if let Some(n) = stat(line, "stat::number_of_executed_units:") {
            s.execs = Some(n);
        } else if let Some(n) = stat(line, "stat::average_exec_per_sec:") {
            s.exec_per_sec = Some(n);
        } else if let Some(n) = stat(line, "stat::new_units_added:") {
            s.new_units = Some(n);
        } else if let Some(n) = stat(line, "stat::peak_rss_mb:") {
            s.peak_rss_mb = Some(n);
        } else if let Some(rest) = line.strip_prefix('#') {
            let mut w = rest.split_whitespace();
            if let (Some(n), Some("DONE")) = (w.next(), w.next()) {
                done = n.parse().ok();
            }
        }
        if s.problem.is_none() {
            let p = if line.starts_with("thread '") && line.contains("panicked at") {
                Some(line.to_string())
            } else if line.contains("==ERROR: ")
                || line.contains("ERROR: libFuzzer:")
                || line.starts_with("memory allocation of ")
            {
                Some(
                    line.trim_start_matches(|c: char| c == '=' || c.is_ascii_digit())
                        .to_string(),
                )
            } else {
                None
            };
            s.problem = p;
        }
        if let Some(pos) = line.find("Test unit written to ") {
            s.artifact = Some(
                line[pos + "Test unit written to ".len()..]
                    .trim()
                    .to_string(),
            );
        }
    }
    if s.execs.is_none() {
        s.execs = done;
    }
    s
}

struct Outcome {
    target: String,
    passed: bool,
    summary: String,
}

fn run_target(bins: &Path, target: &str, o: &Options, seeds: &Seeds) -> Result<Outcome> {
    let seconds = o.seconds;
    let corpus = work_dir().join("corpus").join(target);
    let artifacts = work_dir().join("artifacts").join(target);
    let logs = work_dir().join("logs");
    for d in [&corpus, &artifacts, &logs] {
        fs::create_dir_all(d)?;
    }
    let log_path = logs.join(format!("{target}.log"));
    let log = fs::File::create(&log_path)?;
    let mut prefix = artifacts.as_os_str().to_os_string();
    prefix.push("/");
    let mut c = Command::new(bins.join(target));
    c.arg(format!("-max_total_time={seconds}"))
        .arg(format!("-max_len={}", max_len(target)))
        .arg(format!("-timeout={UNIT_TIMEOUT_SECS}"))
        .arg(format!("-rss_limit_mb={RSS_LIMIT_MB}"))
        .arg(format!("-malloc_limit_mb={MALLOC_LIMIT_MB}"))
        .arg("-print_final_stats=1")
        .args(o.seed.map(|s| format!("-seed={s}")))
        .arg({
            let mut a = std::ffi::OsString::from("-artifact_prefix=");
            a.push(&prefix);
            a
        })
        .arg(&corpus)
        .arg(&seeds.dir)
        .env("RUST_BACKTRACE", "1")
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    let start = Instant::now();
    let mut child = c
        .spawn()
        .with_context(|| format!("cannot start {}", util::display(&c)))?;
    // libFuzzer stops itself; the margin covers loading the corpus and writing a crash.
    let limit = Duration::from_secs(seconds + 120 + UNIT_TIMEOUT_SECS);
    let status = util::wait_timeout(&mut child, limit)?;
    let secs = start.elapsed().as_secs();
    let text = String::from_utf8_lossy(&fs::read(&log_path)?).into_owned();
    let st = parse_log(&text);
    let execs = st.execs.map_or_else(
        || "no execution count".to_string(),
        |n| format!("{n} executions"),
    );
    let detail = format!(
        "{execs} in {secs}s ({} exec/s, {} new units, peak rss {} MB, {} seeds, corpus {})",
        st.exec_per_sec.map_or("?".into(), |n| n.to_string()),
        st.new_units.map_or("?".into(), |n| n.to_string()),
        st.peak_rss_mb.map_or("?".into(), |n| n.to_string()),
        seeds.count,
        corpus.display()
    );
    let passed = matches!(status, Some(s) if s.success()) && st.execs.is_some();
    if passed {
        return Ok(Outcome {
            target: target.into(),
            passed,
            summary: detail,
        });
    }
    eprintln!(
        "  --- {target}: last lines of {} ---\n{}",
        log_path.display(),
        util::indent(&util::tail_lines(&text, 25))
    );
    let what = match status {
        None => format!("did not stop within {}s (killed)", limit.as_secs()),
        Some(s) if s.success() => "printed no execution count".into(),
        Some(s) => st
            .problem
            .clone()
            .unwrap_or_else(|| format!("exited with {s}")),
    };
    let artifact = st
        .artifact
        .map_or_else(String::new, |a| format!("; input: {a}"));
    Ok(Outcome {
        target: target.into(),
        passed: false,
        summary: format!("{what}{artifact}; {detail}"),
    })
}

/// `cargo xtask fuzz [--seconds N] [--sanitizer address|none] [TARGET...]`.
pub fn cmd_fuzz(args: &[String]) -> Result<bool> {
    let o = parse_args(args)?;
    run(&o)
}

pub fn run(o: &Options) -> Result<bool> {
    if !cargo_fuzz_installed() {
        bail!("cargo-fuzz is not installed; run `cargo xtask setup` (it runs `cargo install cargo-fuzz`)");
    }
    fs::create_dir_all(work_dir())?;
    let sanitizer = &o.sanitizer;
    let bins = build(sanitizer, &work_dir().join("build.log"))?;
    // The cached test kernel's objects and Module.symvers are seeds when it is built; it is
    // not built for this.
    let k = kernel::locate().ok().filter(|k| k.is_built());
    if o.targets.iter().any(|t| {
        matches!(
            t.as_str(),
            "elfdiff_pair" | "symvers" | "explain_pair" | "callgraph"
        )
    }) {
        ensure_fixture_objects();
    }
    let mut results = Vec::new();
    for t in &o.targets {
        let seeds = make_seeds(t, k.as_ref())?;
        eprintln!(
            "fuzz: {t} for {}s (sanitizer {sanitizer}, {} seeds) ...",
            o.seconds, seeds.count
        );
        let out = run_target(&bins, t, o, &seeds).unwrap_or_else(|e| Outcome {
            target: t.clone(),
            passed: false,
            summary: format!("harness error: {e:#}"),
        });
        eprintln!(
            "fuzz: {} {t}: {}",
            if out.passed { "PASS" } else { "FAIL" },
            out.summary
        );
        results.push(out);
    }
    println!();
    for r in &results {
        println!(
            "{} fuzz {}: {}",
            if r.passed { "PASS" } else { "FAIL" },
            r.target,
            r.summary
        );
    }
    let passed = results.iter().filter(|r| r.passed).count();
    println!("fuzz: {passed} passed, {} failed", results.len() - passed);
    Ok(passed == results.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn args() {
        let o = parse_args(&["--seconds".into(), "7".into(), "symvers".into()]).unwrap();
        assert_eq!(o.seconds, 7);
        assert_eq!(o.seed, None);
        let seeded = parse_args(&["--seed".into(), "3".into()]).unwrap();
        assert_eq!(seeded.seed, Some(3));
        assert!(parse_args(&["--seed".into()]).is_err());
        assert_eq!(o.targets, vec!["symvers"]);
        assert_eq!(parse_args(&[]).unwrap().targets.len(), TARGETS.len());
        assert!(parse_args(&["--seconds".into(), "x".into()]).is_err());
        assert!(parse_args(&["--seconds".into(), "0".into()]).is_err());
        assert!(parse_args(&["nope".into()]).is_err());
        assert!(parse_args(&["--sanitizer".into(), "memory".into()]).is_err());
        assert_eq!(parse_args(&[]).unwrap().sanitizer, "none");
        let o = parse_args(&["--sanitizer".into(), "address".into()]).unwrap();
        assert_eq!(o.sanitizer, "address");
    }

    #[test]
    fn pair_seeds_carry_the_length() {
        let s = pair_seed(b"abc", b"de").unwrap();
        assert_eq!(s, b"\x03\0\0\0abcde");
        assert_eq!(head_lines("a\nb\nc\n", 2), "a\nb\n");
    }

    #[test]
    fn libfuzzer_output_is_read() {
        let oom = parse_log("memory allocation of 68719478144 bytes failed\n");
        assert!(oom.problem.unwrap().contains("68719478144"));
        let ok =
            "#5351217\tDONE   cov: 45 ft: 45 corp: 3/13b lim: 18124 exec/s: 87724 rss: 520Mb\n\
Done 5351217 runs in 61 second(s)\n\
stat::number_of_executed_units: 5351217\n\
stat::average_exec_per_sec:     87724\n\
stat::new_units_added:          20\n\
stat::slowest_unit_time_sec:    0\n\
stat::peak_rss_mb:              520\n";
        let s = parse_log(ok);
        assert_eq!(s.execs, Some(5351217));
        assert_eq!(s.exec_per_sec, Some(87724));
        assert_eq!(s.new_units, Some(20));
        assert_eq!(s.peak_rss_mb, Some(520));
        assert_eq!(s.problem, None);

        let done_only = parse_log("#42\tDONE   cov: 1\n");
        assert_eq!(done_only.execs, Some(42));

        let crash = "#30\tINITED cov: 4570\n\
thread '<unnamed>' (24147) panicked at src/write/mod.rs:914:9:\n\
assertion failed\n\
==24147== ERROR: libFuzzer: deadly signal\n\
artifact_prefix='art/'; Test unit written to art/crash-bb7a85\n";
        let s = parse_log(crash);
        assert_eq!(s.execs, None);
        assert!(s.problem.unwrap().contains("panicked at src/write/mod.rs"));
        assert_eq!(s.artifact.as_deref(), Some("art/crash-bb7a85"));
    }
}
