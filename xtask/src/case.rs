//! Running klpgen on the test kernel, shared by every task that builds livepatch modules (the
//! qemu cases of `e2e`, the kernel-header fixtures of `kfixtures`, `stress`, `demo`, `bench`):
//! building the release binary, the `klpgen build` command line, running it with a time limit
//! and its output logged, a dry run of a case's patch, fresh case directories.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::kernel::Kernel;
use crate::util;

/// Hard limit for one `klpgen build`.
pub const KLPGEN_TIMEOUT: Duration = Duration::from_secs(600);

/// `livepatch_<name with - replaced by _>`.
pub fn module_name(name: &str) -> String {
    format!("livepatch_{}", name.replace('-', "_"))
}

/// `cargo build --release -p klpgen`; returns the binary's path.
pub fn build_klpgen() -> Result<PathBuf> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    util::run(Command::new(cargo).current_dir(util::repo_root()).args([
        "build",
        "--release",
        "-p",
        "klpgen",
    ]))?;
    let bin = util::target_dir().join("release/klpgen");
    if !bin.is_file() {
        bail!("{} was not built", bin.display());
    }
    Ok(bin)
}

/// The outcome of one `klpgen build`.
pub struct KlpgenRun {
    /// `None` when it was killed for taking longer than [`KLPGEN_TIMEOUT`].
    pub status: Option<ExitStatus>,
    pub stdout: String,
    pub stderr: String,
    pub seconds: u64,
}

impl KlpgenRun {
    /// Tails of stdout and stderr, for failure messages.
    pub fn show(&self) -> String {
        format!(
            "  klpgen stdout (tail):\n{}  klpgen stderr (tail):\n{}",
            util::indent(&util::tail_lines(&self.stdout, 30)),
            util::indent(&util::tail_lines(&self.stderr, 30))
        )
    }
}

/// The `klpgen build` command line for a patch.
pub fn klpgen_command(
    klpgen: &Path,
    k: &Kernel,
    name: &str,
    output: &Path,
    extra: &[String],
    patch: &Path,
) -> Command {
    let mut c = Command::new(klpgen);
    c.arg("build")
        .arg("--sourcedir")
        .arg(&k.src)
        .arg("--builddir")
        .arg(&k.build)
        .arg("--name")
        .arg(name)
        .arg("--output")
        .arg(output)
        .args(extra)
        .arg(patch)
        .env("PATH", util::path_with_cargo_bin())
        .stdin(Stdio::null());
    c
}

/// Runs `cmd` with stdout/stderr captured to `<logs>/klpgen.stdout|stderr`.
pub fn run_klpgen(mut cmd: Command, logs: &Path) -> Result<KlpgenRun> {
    fs::create_dir_all(logs)?;
    let out_path = logs.join("klpgen.stdout");
    let err_path = logs.join("klpgen.stderr");
    fs::write(logs.join("klpgen.cmdline"), util::display(&cmd) + "\n")?;
    cmd.stdout(File::create(&out_path)?)
        .stderr(File::create(&err_path)?);
    let start = Instant::now();
    let mut child = cmd
        .spawn()
        .with_context(|| format!("cannot start `{}`", util::display(&cmd)))?;
    let status = util::wait_timeout_graceful(&mut child, KLPGEN_TIMEOUT, Duration::from_secs(15))?;
    let read = |p: &Path| String::from_utf8_lossy(&fs::read(p).unwrap_or_default()).into_owned();
    Ok(KlpgenRun {
        status,
        stdout: read(&out_path),
        stderr: read(&err_path),
        seconds: start.elapsed().as_secs(),
    })
}

/// Whether `patch` applies forward (cleanly) to `src`, without changing anything.
pub fn patch_applies(src: &Path, patch: &Path) -> Result<(bool, String)> {
    let out = Command::new("patch")
        .args(["-p1", "--dry-run", "--forward", "--batch", "-d"])
        .arg(src)
        .arg("-i")
        .arg(patch)
        .stdin(Stdio::null())
        .output()
        .context("cannot run patch (package patch)")?;
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    Ok((out.status.success(), text))
}

/// A case's output directory and its log directory (`<name>.files`, created) under `workdir`,
/// both emptied of an earlier run.
pub fn fresh_case_dirs(workdir: &Path, name: &str) -> Result<(PathBuf, PathBuf)> {
    let output = workdir.join(name);
    let logs = workdir.join(format!("{name}.files"));
    for d in [&output, &logs] {
        if d.exists() {
            fs::remove_dir_all(d).with_context(|| format!("cannot remove {}", d.display()))?;
        }
    }
    fs::create_dir_all(&logs)?;
    Ok((output, logs))
}
