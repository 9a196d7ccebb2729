//! The one place klpgen starts other programs (make, patch, gcc through kbuild). Programs get
//! argument vectors, never a shell string built from input. Children are polled so that
//! SIGINT/SIGTERM stop them (SIGTERM, then SIGKILL) and let klpgen restore the source tree first,
//! and they get SIGTERM when klpgen dies, even by SIGKILL (`PR_SET_PDEATHSIG`), so no orphaned
//! `patch` or `make` races the next run.

use std::ffi::OsStr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};

/// Set by SIGINT/SIGTERM; checked between stages and while children run.
#[derive(Clone, Default)]
pub struct Interrupt(Arc<AtomicBool>);

impl Interrupt {
    pub fn install() -> Result<Self> {
        let flag = Arc::new(AtomicBool::new(false));
        for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
            signal_hook::flag::register(sig, Arc::clone(&flag))
                .context("installing signal handlers")?;
        }
        Ok(Interrupt(flag))
    }
    pub fn is_set(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
    pub fn check(&self) -> Result<()> {
        if self.is_set() {
            bail!(Interrupted);
        }
        Ok(())
    }
    /// What SIGINT does, for tests of the code that waits.
    #[cfg(test)]
    pub fn set(&self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// The error a run ends with when it was interrupted.
#[derive(Debug)]
pub struct Interrupted;

impl std::fmt::Display for Interrupted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("interrupted")
    }
}
impl std::error::Error for Interrupted {}

/// Captured result of a finished command.
pub struct Output {
    pub success: bool,
    pub stdout: String,
    pub stderr: String,
}

/// Run `program args...` in `dir` with extra environment, capturing output; stops the child
/// when interrupted.
pub fn run<I, S>(
    program: &str,
    args: I,
    dir: Option<&Path>,
    env: &[(&str, &OsStr)],
    log: Option<&Path>,
    intr: &Interrupt,
) -> Result<Output>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut cmd = Command::new(program);
    cmd.args(args).stdin(Stdio::null());
    die_with_parent(&mut cmd);
    if let Some(d) = dir {
        cmd.current_dir(d);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let (out_path, err_path);
    let tmp = tempfile::tempdir().context("creating a temporary directory")?;
    match log {
        Some(l) => {
            out_path = l.to_path_buf();
            err_path = l.with_extension("stderr");
        }
        None => {
            out_path = tmp.path().join("stdout");
            err_path = tmp.path().join("stderr");
        }
    }
    cmd.stdout(
        std::fs::File::create(&out_path)
            .with_context(|| format!("creating {}", out_path.display()))?,
    );
    cmd.stderr(
        std::fs::File::create(&err_path)
            .with_context(|| format!("creating {}", err_path.display()))?,
    );
    let desc = format!("{program} {:?}", cmd.get_args().collect::<Vec<_>>());
    let mut child = cmd
        .spawn()
        .with_context(|| format!("cannot start {program} (is it installed?)"))?;
    let mut follow = [Follow::new(&out_path), Follow::new(&err_path)];
    let status = loop {
        for f in &mut follow {
            f.poll();
        }
        if let Some(status) = child.try_wait()? {
            for f in &mut follow {
                f.poll();
                f.finish();
            }
            break status;
        }
        if intr.is_set() {
            stop(&mut child);
            bail!(Interrupted);
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let read =
        |p: &Path| String::from_utf8_lossy(&std::fs::read(p).unwrap_or_default()).into_owned();
    let out = Output {
        success: status.success(),
        stdout: read(&out_path),
        stderr: read(&err_path),
    };
    if !out.success && status.code().is_none() && !intr.is_set() {
        bail!("{desc} was killed by a signal");
    }
    Ok(out)
}

/// Children get SIGTERM when klpgen dies, even by SIGKILL: an orphaned `patch` would otherwise
/// go on writing the source tree while the next run restores it, and an orphaned `make` would
/// share klpgen's build directory with the next run's. GNU make passes SIGTERM on to its own
/// children and deletes half-written targets.
#[allow(unsafe_code)] // pre_exec and libc calls; the workspace denies unsafe code elsewhere
fn die_with_parent(cmd: &mut Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: getpid/prctl/getppid/kill are async-signal-safe; nothing is allocated.
    let parent = unsafe { libc::getpid() };
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The parent may have died before prctl took effect.
            if libc::getppid() != parent {
                libc::kill(libc::getpid(), libc::SIGTERM);
            }
            Ok(())
        });
    }
}

/// Stop a child on Ctrl-C/SIGTERM: SIGTERM first (make stops its compilers and removes partial
/// targets), SIGKILL when it has not exited after two seconds.
#[allow(unsafe_code)] // kill(2); the workspace denies unsafe code elsewhere
fn stop(child: &mut std::process::Child) {
    // SAFETY: plain kill(2) on our own child's pid.
    unsafe {
        libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
    }
    for _ in 0..40 {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// Reads what a child has written to its output file so far and hands complete lines to
/// `progress` (compile counts, `--verbose`).
struct Follow {
    file: Option<std::fs::File>,
    partial: Vec<u8>,
}

impl Follow {
    fn new(path: &Path) -> Self {
        Follow {
            file: std::fs::File::open(path).ok(),
            partial: Vec::new(),
        }
    }

    fn poll(&mut self) {
        use std::io::Read;
        let Some(f) = &mut self.file else { return };
        let mut buf = [0u8; 8192];
        loop {
            match f.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => self.partial.extend_from_slice(&buf[..n]),
            }
        }
        while let Some(nl) = self.partial.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.partial.drain(..=nl).collect();
            crate::progress::child_line(String::from_utf8_lossy(&line).trim_end());
        }
    }

    fn finish(&mut self) {
        if !self.partial.is_empty() {
            let line = std::mem::take(&mut self.partial);
            crate::progress::child_line(String::from_utf8_lossy(&line).trim_end());
        }
    }
}
