//! `cargo xtask farm`: `klpgen build --cc-launcher` with a real compile farm and a real
//! compiler cache, on the test kernel. A `distccd` (Debian's distcc) listens on 127.0.0.1 on a
//! free port, only for 127.0.0.1, logging to a file; `klpgen build --cc-launcher distcc` with
//! `DISTCC_HOSTS=127.0.0.1:<port>` and no local fallback, on an empty klpgen cache, must send
//! the compiles of both builds (the original and the patched object of the patched unit)
//! through it — its log shows each — and give a module byte-identical to a local build. Then
//! `--cc-launcher ccache` twice, each on an empty klpgen cache, one ccache directory: the first
//! run fills it, the second is served from it (its statistics show hits, the patched unit's
//! original and patched compiles are hits in ccache's log, and only the module's own compiles,
//! whose flags name this run's directory, miss), both modules byte-identical to the local one.

use std::fs;
use std::net::TcpListener;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::case::{build_klpgen, klpgen_command, run_klpgen, KlpgenRun};
use crate::kernel::{self, Kernel};
use crate::util;

/// The e2e case whose patch the farm builds (one unit, fs/proc/version.c).
const CASE: &str = "proc-string";
/// The unit it changes, as the compilers see it.
const UNIT_SOURCE: &str = "fs/proc/version.c";

/// A `distccd` this task started, stopped (its whole process group) when dropped.
struct Distccd {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl Distccd {
    fn start(dir: &Path) -> Result<Distccd> {
        if util::which("distccd").is_none() {
            bail!("distccd is not installed (package distcc; cargo xtask setup)");
        }
        // A free port: bound, read, released, then given to distccd.
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let log = dir.join("distccd.log");
        // distccd started as root runs its jobs as the distccd user, which must be able to
        // write the log.
        fs::write(&log, "")?;
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&log, fs::Permissions::from_mode(0o666))?;
        let mut cmd = Command::new("distccd");
        cmd.args([
            "--daemon",
            "--no-detach",
            "--listen",
            "127.0.0.1",
            "--allow",
        ])
        .arg("127.0.0.1")
        .arg("--port")
        .arg(port.to_string())
        .arg("--log-file")
        .arg(&log)
        .args(["--log-level", "info", "--jobs", "2"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0);
        let child = cmd
            .spawn()
            .with_context(|| format!("cannot start `{}`", util::display(&cmd)))?;
        let d = Distccd { child, port, log };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !d.log_text().contains("listening on") {
            if Instant::now() > deadline {
                bail!(
                    "distccd did not start listening on port {port}:\n{}",
                    util::indent(&d.log_text())
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(d)
    }

    fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Distccd {
    fn drop(&mut self) {
        // The preforked workers are in the daemon's process group (created for it above).
        // `--`: procps kill would take `-PGID` for a signal number.
        let _ = Command::new("kill")
            .args(["-s", "TERM", "--"])
            .arg(format!("-{}", self.child.id()))
            .status();
        let _ = self.child.wait();
    }
}

/// One `klpgen build` of the case's patch into `out`, with `cache` as klpgen's cache (None:
/// the developer's, usually warm) and the launcher and environment given.
fn build(
    klpgen: &Path,
    k: &Kernel,
    dir: &Path,
    label: &str,
    cache: Option<&Path>,
    launcher: Option<&str>,
    env: &[(&str, String)],
) -> Result<(KlpgenRun, Vec<u8>)> {
    let out = dir.join(label);
    if let Some(c) = cache {
        if c.exists() {
            fs::remove_dir_all(c)?;
        }
    }
    let mut args = Vec::new();
    if let Some(l) = launcher {
        args.extend(["--cc-launcher".to_string(), l.to_string()]);
    }
    let patch = util::repo_root()
        .join("tests/e2e")
        .join(CASE)
        .join("case.patch");
    let mut cmd = klpgen_command(klpgen, k, CASE, &out, &args, &patch);
    if let Some(c) = cache {
        cmd.env("KLPGEN_CACHE_DIR", c);
    }
    for (key, v) in env {
        cmd.env(key, v);
    }
    eprintln!("  $ {}", util::display(&cmd));
    let run = run_klpgen(cmd, &dir.join(format!("{label}.files")))?;
    if !run.status.is_some_and(|s| s.success()) {
        eprintln!("{}", run.show());
        bail!("klpgen build ({label}) failed");
    }
    let module = fs::read(out.join(format!("livepatch-{CASE}.ko")))?;
    Ok((run, module))
}

/// `ccache --print-stats` as (key, value) pairs.
fn ccache_stats(env: &[(&str, String)]) -> Result<Vec<(String, u64)>> {
    let mut c = Command::new("ccache");
    c.arg("--print-stats").stdin(Stdio::null());
    for (k, v) in env {
        c.env(k, v);
    }
    let out = c.output().context("cannot run ccache (package ccache)")?;
    if !out.status.success() {
        bail!("ccache --print-stats failed");
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let (k, v) = l.split_once('\t')?;
            Some((k.to_string(), v.trim().parse().ok()?))
        })
        .collect())
}

fn stat(stats: &[(String, u64)], key: &str) -> u64 {
    stats.iter().find(|(k, _)| k == key).map_or(0, |(_, v)| *v)
}

/// Lines of a distccd log that report a finished compile of `source`.
fn farm_compiles<'a>(log: &'a str, source: &str) -> Vec<&'a str> {
    log.lines()
        .filter(|l| l.contains(" completed ok") && l.contains(source))
        .collect()
}

pub fn cmd_farm(rest: &[String]) -> Result<bool> {
    if !rest.is_empty() {
        bail!("`cargo xtask farm` takes no arguments");
    }
    let klpgen = build_klpgen()?;
    let k = kernel::ensure()?;
    let dir = util::target_dir().join("farm");
    if dir.exists() {
        fs::remove_dir_all(&dir)?;
    }
    fs::create_dir_all(&dir)?;
    let mut problems = Vec::new();
    let started = Instant::now();

    // The local build every other module must equal.
    let (run, local) = build(&klpgen, &k, &dir, "local", None, None, &[])?;
    eprintln!("farm: local build {}s, {} bytes", run.seconds, local.len());

    // distcc: every compile on the farm (no local fallback), an empty klpgen cache so that the
    // original object is compiled too.
    let distccd = Distccd::start(&dir)?;
    // The client's own state and lock directory, instead of ~/.distcc.
    fs::create_dir_all(dir.join("distcc-home"))?;
    let env = [
        ("DISTCC_HOSTS", format!("127.0.0.1:{}", distccd.port)),
        ("DISTCC_FALLBACK", "0".to_string()),
        ("DISTCC_SKIP_LOCAL_RETRY", "1".to_string()),
        ("DISTCC_DIR", dir.join("distcc-home").display().to_string()),
    ];
    let cache = dir.join("cache-distcc");
    let (run, module) = build(
        &klpgen,
        &k,
        &dir,
        "distcc",
        Some(&cache),
        Some("distcc"),
        &env,
    )?;
    let log = distccd.log_text();
    drop(distccd);
    fs::write(dir.join("distccd.log.txt"), &log)?;
    let unit = farm_compiles(&log, UNIT_SOURCE);
    let all = log.lines().filter(|l| l.contains(" completed ok")).count();
    if unit.len() < 2 {
        problems.push(format!(
            "distcc: distccd's log shows {} compile(s) of {UNIT_SOURCE}, expected the original and the patched one ({all} compiles in all; dir/distccd.log.txt)",
            unit.len()
        ));
    }
    if module != local {
        problems.push(format!(
            "distcc: the module differs from the local build ({} vs {} bytes)",
            module.len(),
            local.len()
        ));
    }
    eprintln!(
        "farm: distcc build {}s: {all} compiles on distccd, {} of {UNIT_SOURCE}; module {}",
        run.seconds,
        unit.len(),
        if module == local {
            "identical"
        } else {
            "DIFFERENT"
        }
    );

    // ccache: klpgen compiles in its own cache, whose path differs between the two runs (as
    // between runners), so ccache must not hash the working directory (hash_dir), as README
    // says. (base_dir would make the paths relative on the compilers' command lines, and so
    // in the module's debug info: it would no longer equal the local one.)
    let ccache_dir = dir.join("ccache");
    let ccache_log = dir.join("ccache.log");
    let env = [
        ("CCACHE_DIR", ccache_dir.display().to_string()),
        ("CCACHE_NOHASHDIR", "1".to_string()),
        ("CCACHE_LOGFILE", ccache_log.display().to_string()),
    ];
    let mut runs = Vec::new();
    for round in 1..=2 {
        if round == 2 {
            util::run(
                Command::new("ccache")
                    .arg("--zero-stats")
                    .envs(env.iter().map(|(k, v)| (k, v))),
            )?;
            fs::write(&ccache_log, "")?;
        }
        let label = format!("ccache-{round}");
        let cache = dir.join(format!("cache-{label}"));
        let (run, module) = build(
            &klpgen,
            &k,
            &dir,
            &label,
            Some(&cache),
            Some("ccache"),
            &env,
        )?;
        let stats = ccache_stats(&env)?;
        let hits = stat(&stats, "direct_cache_hit") + stat(&stats, "preprocessed_cache_hit");
        let misses = stat(&stats, "cache_miss");
        eprintln!(
            "farm: {label} build {}s: ccache {hits} hits, {misses} misses; module {}",
            run.seconds,
            if module == local {
                "identical"
            } else {
                "DIFFERENT"
            }
        );
        if module != local {
            problems.push(format!("{label}: the module differs from the local build"));
        }
        runs.push((hits, misses));
    }
    // The second, cold run (an empty klpgen cache: everything compiled again) came from ccache.
    let (hits, misses) = runs[1];
    let log = fs::read_to_string(&ccache_log).unwrap_or_default();
    fs::write(dir.join("ccache.log.txt"), &log)?;
    let calls = ccache_calls(&log);
    let unit_hits = calls
        .iter()
        .filter(|(cmd, r)| cmd.contains(UNIT_SOURCE) && *r == CcacheResult::Hit)
        .count();
    // Only the module's own compiles may miss, their command lines naming this run's module
    // directory in klpgen's cache (`-ffile-prefix-map`), new every run; and kbuild's probes of
    // the compiler (`-c -x c /dev/null -o .tmp_<pid>/tmp.o`, with -gsplit-dwarf the output
    // name is part of what ccache hashes).
    let stray: Vec<&str> = calls
        .iter()
        .filter(|(cmd, r)| {
            *r == CcacheResult::Miss
                && !cmd.contains("/runs/livepatch-")
                && !cmd.contains(" /dev/null ")
        })
        .map(|(cmd, _)| cmd.as_str())
        .collect();
    if hits == 0 || !stray.is_empty() {
        problems.push(format!(
            "ccache: the second cold build had {hits} hits and {misses} misses, of which not the module's own: {stray:?}"
        ));
    }
    if unit_hits < 2 {
        problems.push(format!(
            "ccache: its log shows {unit_hits} hit(s) for {UNIT_SOURCE} in the second build, expected the original and the patched compile"
        ));
    }
    if runs[0].1 == 0 {
        problems.push("ccache: the first build had no misses: the cache was not empty".into());
    }
    for p in &problems {
        eprintln!("farm: FAIL {p}");
    }
    eprintln!(
        "farm: {} in {}s",
        if problems.is_empty() {
            "passed"
        } else {
            "failed"
        },
        started.elapsed().as_secs()
    );
    Ok(problems.is_empty())
}

/// What one ccache invocation did.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
enum CcacheResult {
    Hit,
    Miss,
    /// Not cached (a link, `-E`, a configuration probe ccache does not handle).
    Other,
}

/// Each compiler invocation in ccache's log, in order of pid: its command line and result.
/// Every line of an invocation carries its pid (`[time pid] ...`).
fn ccache_calls(log: &str) -> Vec<(String, CcacheResult)> {
    use std::collections::BTreeMap;
    let mut by_pid: BTreeMap<&str, (String, CcacheResult)> = BTreeMap::new();
    for line in log.lines() {
        let Some((head, msg)) = line.strip_prefix('[').and_then(|r| r.split_once("] ")) else {
            continue;
        };
        let Some(pid) = head.split_whitespace().nth(1) else {
            continue;
        };
        let e = by_pid
            .entry(pid)
            .or_insert_with(|| (String::new(), CcacheResult::Other));
        if let Some(cmd) = msg.strip_prefix("Command line: ") {
            e.0 = cmd.to_string();
        }
        match msg {
            "Result: direct_cache_hit" | "Result: preprocessed_cache_hit" => {
                e.1 = CcacheResult::Hit
            }
            "Result: cache_miss" => e.1 = CcacheResult::Miss,
            _ => {}
        }
    }
    by_pid.into_values().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logs_are_read() {
        let distccd = "distccd[1] compile from version.c to version.o\n\
                       distccd[1] x86_64-linux-gnu-gcc /src/fs/proc/version.c on localhost completed ok\n\
                       distccd[2] x86_64-linux-gnu-gcc /src/fs/proc/base.c on localhost completed ok\n";
        assert_eq!(farm_compiles(distccd, "fs/proc/version.c").len(), 1);
        let ccache = "[2025-01-01T00:00:00.1 100  ] Command line: gcc -c /src/fs/proc/version.c\n\
                      [2025-01-01T00:00:00.2 100  ] Result: local_storage_read_hit\n\
                      [2025-01-01T00:00:00.2 100  ] Result: direct_cache_hit\n\
                      [2025-01-01T00:00:00.1 101  ] Command line: gcc -c /src/fs/proc/version.c\n\
                      [2025-01-01T00:00:00.2 101  ] Result: cache_miss\n\
                      [2025-01-01T00:00:00.1 102  ] Command line: gcc -E x.c\n\
                      [2025-01-01T00:00:00.2 102  ] Result: called_for_preprocessing\n";
        let calls = ccache_calls(ccache);
        assert_eq!(
            calls,
            [
                (
                    "gcc -c /src/fs/proc/version.c".to_string(),
                    CcacheResult::Hit
                ),
                (
                    "gcc -c /src/fs/proc/version.c".to_string(),
                    CcacheResult::Miss
                ),
                ("gcc -E x.c".to_string(), CcacheResult::Other),
            ]
        );
    }
}
