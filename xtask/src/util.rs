//! Small helpers shared by the xtask subcommands: running commands, logging their output, timeouts.

use anyhow::{bail, Context, Result};
use std::ffi::OsString;
use std::fs::{self, File};
use std::io::{IsTerminal, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// Root of the workspace (the directory holding the top-level Cargo.toml).
pub fn repo_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

/// Cargo's target directory for this workspace.
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(d) if !d.is_empty() => {
            let d = PathBuf::from(d);
            if d.is_absolute() {
                d
            } else {
                repo_root().join(d)
            }
        }
        _ => repo_root().join("target"),
    }
}

/// The user's home directory.
pub fn home_dir() -> PathBuf {
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/root"))
}

/// `$CARGO_HOME/bin`, defaulting to `~/.cargo/bin`.
pub fn cargo_bin_dir() -> PathBuf {
    match std::env::var_os("CARGO_HOME") {
        Some(h) if !h.is_empty() => PathBuf::from(h).join("bin"),
        _ => home_dir().join(".cargo").join("bin"),
    }
}

/// `PATH` with the cargo bin directory (where `bindgen` is installed) in front.
pub fn path_with_cargo_bin() -> OsString {
    let mut dirs = vec![cargo_bin_dir()];
    if let Some(p) = std::env::var_os("PATH") {
        dirs.extend(std::env::split_paths(&p));
    }
    std::env::join_paths(dirs).unwrap_or_else(|_| OsString::from("/usr/bin:/bin"))
}

/// Finds an executable named `name` on `PATH`.
pub fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    fs::metadata(p)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// A printable rendering of a command line, for messages.
pub fn display(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        let a = a.to_string_lossy();
        s.push(' ');
        if a.is_empty() || a.contains(|c: char| c.is_whitespace() || c == '"' || c == '\'') {
            s.push_str(&format!("{a:?}"));
        } else {
            s.push_str(&a);
        }
    }
    s
}

/// Runs a command with inherited stdio; fails unless it exits 0.
pub fn run(cmd: &mut Command) -> Result<()> {
    let status = cmd
        .status()
        .with_context(|| format!("cannot start `{}`", display(cmd)))?;
    if !status.success() {
        bail!("`{}` failed ({status})", display(cmd));
    }
    Ok(())
}

/// The last `n` lines of a text file (lossy UTF-8), reading at most the final 256 KiB.
pub fn tail_file(path: &Path, n: usize) -> String {
    let Ok(mut f) = File::open(path) else {
        return String::new();
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let start = len.saturating_sub(256 * 1024);
    if f.seek(SeekFrom::Start(start)).is_err() {
        return String::new();
    }
    let mut buf = Vec::new();
    let _ = f.read_to_end(&mut buf);
    tail_lines(&String::from_utf8_lossy(&buf), n)
}

/// The last `n` lines of `text`.
pub fn tail_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Indents every line of `text` by four spaces (for nested output).
pub fn indent(text: &str) -> String {
    text.lines()
        .map(|l| format!("    {l}\n"))
        .collect::<String>()
}

/// Waits for `child` at most `limit`; on timeout it is killed and `None` is returned.
pub fn wait_timeout(child: &mut Child, limit: Duration) -> Result<Option<ExitStatus>> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(st) = child.try_wait()? {
            return Ok(Some(st));
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Sends SIGTERM to a process by id, via the `kill` utility.
pub fn terminate(pid: u32) {
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(pid.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// Like [`wait_timeout`], but first asks the process to stop with SIGTERM and gives it
/// `grace` to clean up before killing it.
pub fn wait_timeout_graceful(
    child: &mut Child,
    limit: Duration,
    grace: Duration,
) -> Result<Option<ExitStatus>> {
    if let Some(st) = wait_poll(child, limit)? {
        return Ok(Some(st));
    }
    terminate(child.id());
    if wait_poll(child, grace)?.is_none() {
        let _ = child.kill();
    }
    let _ = child.wait();
    Ok(None)
}

fn wait_poll(child: &mut Child, limit: Duration) -> Result<Option<ExitStatus>> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(st) = child.try_wait()? {
            return Ok(Some(st));
        }
        if Instant::now() >= deadline {
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Appends output of `cmd` (stdout and stderr) to `log`, showing a one-line progress
/// on the terminal (or a line every minute otherwise). On failure the tail of the
/// log is printed and an error returned.
pub fn run_logged(cmd: &mut Command, log: &Path, label: &str) -> Result<()> {
    let mut f = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("cannot open log {}", log.display()))?;
    writeln!(f, "\n### {label}: {}", display(cmd))?;
    let err = f.try_clone()?;
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(f)
        .stderr(err)
        .spawn()
        .with_context(|| format!("cannot start `{}`", display(cmd)))?;
    let tty = std::io::stderr().is_terminal();
    let start = Instant::now();
    let mut last_report = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait()? {
            break st;
        }
        std::thread::sleep(Duration::from_millis(500));
        let secs = start.elapsed().as_secs();
        if tty {
            let line = tail_file(log, 1);
            let line: String = line.chars().take(90).collect();
            eprint!("\r\x1b[K  [{label} {secs:>4}s] {line}");
        } else if last_report.elapsed() >= Duration::from_secs(60) {
            last_report = Instant::now();
            eprintln!("  [{label} {secs:>4}s] {}", tail_file(log, 1));
        }
    };
    if tty {
        eprint!("\r\x1b[K");
    }
    let secs = start.elapsed().as_secs();
    if !status.success() {
        eprintln!("--- last lines of {} ---", log.display());
        eprintln!("{}", tail_file(log, 40));
        bail!(
            "{label} failed after {secs}s ({status}); full log: {}",
            log.display()
        );
    }
    eprintln!("  {label}: done in {secs}s");
    Ok(())
}
