//! Snapshot tests: for every fixture of `tests/fixtures/*.c` (compiled as the fixture harness
//! compiles it), `klpgen diff --format json --output OUT.o ORIG.o PATCHED.o` is run and
//! compared with `tests/snapshots/<fixture>.json` (its JSON report, exactly as printed), and
//! the livepatch object it writes, dumped by `testsupport::elfdump`, with
//! `tests/snapshots/<fixture>.dump` (only fixtures that give a livepatch). The exit status must
//! agree with the report (0 changes, 2 refused, 3 no functional change). The CLI runs in the
//! fixture's build directory with relative paths, so nothing host-specific appears.
//!
//! A mismatch fails with a unified diff. `cargo xtask bless` re-blesses: it runs this test
//! with `KLPGEN_BLESS=1`, which rewrites the snapshots (and removes those no fixture gives).
//! `//# entry-size:` directives become `--entry-size` arguments; `//# include:` has no
//! `klpgen diff` equivalent, so those snapshots show the pair without it.

use std::path::{Path, PathBuf};
use std::process::Command;

use libtest_mimic::{Arguments, Failed, Trial};

use testsupport::{elfdump, fixture, snapshot};

fn snapshot_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/snapshots")
}

/// Outputs must not depend on where the repository or the build directory is.
fn host_independent(what: &str, text: &str) -> Result<(), String> {
    for p in [env!("CARGO_MANIFEST_DIR"), env!("CARGO_TARGET_TMPDIR")] {
        if text.contains(p) {
            return Err(format!("{what} contains the host path {p}"));
        }
    }
    Ok(())
}

fn check(src: PathBuf) -> Result<(), Failed> {
    let name = fixture::stem(&src);
    let built = fixture::build(
        &src,
        &Path::new(env!("CARGO_TARGET_TMPDIR")).join("snapshots"),
    )?;
    let out = built.dir.join("out.o");
    let _ = std::fs::remove_file(&out);
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_klpgen"));
    // Relative paths: the object labels in the output are then the same on every machine.
    cmd.current_dir(&built.dir)
        .args(["diff", "--format", "json", "--output", "out.o"]);
    for (sec, n) in &built.expect.entry_size {
        cmd.arg("--entry-size").arg(format!("{sec}={n}"));
    }
    cmd.args(["orig.o", "patched.o"]);
    let o = cmd
        .output()
        .map_err(|e| format!("cannot run klpgen diff: {e}"))?;
    let stdout = String::from_utf8(o.stdout).map_err(|e| format!("stdout: {e}"))?;
    let stderr = String::from_utf8_lossy(&o.stderr);
    let report: serde_json::Value = serde_json::from_str(&stdout)
        .map_err(|e| format!("klpgen diff printed no JSON ({e}):\n{stdout}\nstderr:\n{stderr}"))?;
    let len = |k: &str| report[k].as_array().map_or(0, Vec::len);
    let want_code = if len("refused") > 0 {
        2
    } else if len("changed") + len("new") == 0 {
        3
    } else {
        0
    };
    if o.status.code() != Some(want_code) {
        return Err(format!(
            "klpgen diff exited {:?}, expected {want_code} for this report; stderr:\n{stderr}",
            o.status.code()
        )
        .into());
    }
    host_independent("the JSON report", &stdout)?;
    let dir = snapshot_dir();
    // Both snapshots are checked (or blessed) before failing, so one run shows every diff.
    let mut problems = Vec::new();
    problems.extend(snapshot::check(&dir.join(format!("{name}.json")), &stdout).err());

    let dump_path = dir.join(format!("{name}.dump"));
    if want_code == 0 {
        let bytes = std::fs::read(&out)
            .map_err(|e| format!("klpgen diff exited 0 but wrote no out.o: {e}"))?;
        let dump = elfdump::dump_with(&bytes, &|m, t| {
            elfdiff::arch::for_machine(m).and_then(|a| a.reloc_name(t))
        })?;
        host_independent("the livepatch object", &dump)?;
        problems.extend(snapshot::check(&dump_path, &dump).err());
    } else {
        if out.exists() {
            return Err(format!("klpgen diff exited {want_code} but wrote out.o").into());
        }
        problems.extend(
            snapshot::check_absent(&dump_path, "the fixture gives no livepatch object").err(),
        );
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("\n\n").into())
    }
}

/// Every file under tests/snapshots belongs to a fixture.
fn no_orphans(fixtures: &[String]) -> Result<(), Failed> {
    let dir = snapshot_dir();
    let Ok(rd) = std::fs::read_dir(&dir) else {
        return Ok(()); // nothing blessed yet: each fixture's trial says so
    };
    let mut orphans = Vec::new();
    for e in rd.flatten() {
        let file = e.file_name().to_string_lossy().into_owned();
        let owner = file
            .strip_suffix(".json")
            .or_else(|| file.strip_suffix(".dump"));
        if owner.is_some_and(|o| fixtures.iter().any(|f| f == o)) {
            continue;
        }
        if snapshot::blessing() {
            std::fs::remove_file(e.path()).map_err(|err| format!("{file}: {err}"))?;
        } else {
            orphans.push(file);
        }
    }
    if orphans.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "tests/snapshots has files of no fixture: {orphans:?}; `cargo xtask bless` removes them"
        )
        .into())
    }
}

fn main() {
    let args = Arguments::from_args();
    if snapshot::blessing() {
        std::fs::create_dir_all(snapshot_dir()).expect("create tests/snapshots");
    }
    let files = fixture::all();
    let names: Vec<String> = files.iter().map(|f| fixture::stem(f)).collect();
    let mut trials: Vec<Trial> = files
        .into_iter()
        .map(|f| Trial::test(fixture::stem(&f), move || check(f)))
        .collect();
    trials.push(Trial::test("no_orphan_snapshots", move || {
        no_orphans(&names)
    }));
    trials.push(Trial::test("unified_diff_format", || {
        snapshot::self_test().map_err(Failed::from)
    }));
    libtest_mimic::run(&args, trials).exit();
}
