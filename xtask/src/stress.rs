//! `cargo xtask stress`: builds the `proc-string` e2e case's livepatch module with klpgen and,
//! in one qemu boot of the test kernel, loads, disables and unloads it many times while a
//! background loop keeps running the patched function (reading /proc/version). Every cycle
//! checks that the transition completes, the patched behaviour is visible while loaded and
//! gone after unloading, and nothing is left under /sys/kernel/livepatch; the console must
//! stay free of kernel complaints.

use crate::case;
use crate::e2e;
use crate::guest::{self, Spec, BAD_CONSOLE, STRESS_MARK};
use crate::kernel;
use crate::util;
use anyhow::{bail, Context, Result};
use std::collections::BTreeMap;
use std::fs;
use std::time::{Duration, Instant};

/// The e2e case whose module is cycled.
pub const CASE: &str = "proc-string";
/// Runs `version_proc_show`, the function the case patches; succeeds when its output has the
/// patched marker.
const WORKLOAD: &str = "grep -q 'klpgen-e2e: proc-string marker' /proc/version";
pub const DEFAULT_CYCLES: u32 = 100;

/// Hard limit for the guest: boot plus a generous allowance per cycle.
fn guest_limit(cycles: u32) -> Duration {
    Duration::from_secs(120 + 5 * u64::from(cycles))
}

pub fn parse_args(args: &[String]) -> Result<u32> {
    let mut cycles = DEFAULT_CYCLES;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--cycles" | "-n" => {
                let v = it.next().context("--cycles needs a number")?;
                cycles = v
                    .parse()
                    .with_context(|| format!("--cycles {v:?} is not a number"))?;
                if cycles == 0 || cycles > 10_000 {
                    bail!("--cycles must be between 1 and 10000");
                }
            }
            other => {
                bail!("unknown stress argument {other:?} (usage: cargo xtask stress [--cycles N])")
            }
        }
    }
    Ok(cycles)
}

/// What the stress guest reported.
#[derive(Debug, Default)]
pub struct StressReport {
    pub values: BTreeMap<String, String>,
    /// Cycle numbers reported ok, in order.
    pub ok_cycles: Vec<u32>,
    /// `(cycle, what went wrong)`.
    pub failed_cycles: Vec<(u32, String)>,
    /// Kernel complaints on the console.
    pub complaints: Vec<String>,
    pub timed_out: bool,
}

impl StressReport {
    fn value(&self, k: &str) -> Option<&str> {
        self.values.get(k).map(String::as_str)
    }

    /// Guest time spent in the cycles (from /proc/uptime), in seconds.
    pub fn guest_seconds(&self) -> Option<f64> {
        let a: f64 = self.value("uptime-start")?.parse().ok()?;
        let b: f64 = self.value("uptime-end")?.parse().ok()?;
        Some(b - a)
    }

    pub fn workload_runs(&self) -> Option<u64> {
        self.value("workload-runs")?.parse().ok()
    }

    /// Workload runs that saw the patched behaviour.
    pub fn workload_patched(&self) -> Option<u64> {
        self.value("workload-patched")?.parse().ok()
    }

    /// Every failed check, described; empty means pass.
    pub fn failed_checks(&self, cycles: u32) -> Vec<String> {
        let mut f = Vec::new();
        if self.timed_out {
            f.push("the guest did not finish in time (qemu killed)".to_string());
        }
        if self.value("start").is_none() {
            f.push("the guest's /init never started".into());
        }
        if self.value("probe-before") != Some("1") {
            f.push(format!(
                "probe before loading should fail (probe-before={})",
                self.value("probe-before").unwrap_or("<missing>")
            ));
        }
        for (n, what) in &self.failed_cycles {
            f.push(format!("cycle {n} failed: {what}"));
        }
        let expected: Vec<u32> = (1..=cycles).collect();
        if self.ok_cycles != expected {
            f.push(format!(
                "{} of {cycles} cycles passed",
                self.ok_cycles.len()
            ));
        }
        if self.value("cycles-ok") != Some(cycles.to_string().as_str())
            && self.value("done").is_some()
        {
            f.push(format!(
                "the guest counted cycles-ok={}, expected {cycles}",
                self.value("cycles-ok").unwrap_or("<missing>")
            ));
        }
        match self.workload_runs() {
            Some(n) if n > 0 => {}
            _ => f.push(format!(
                "the workload did not run (workload-runs={})",
                self.value("workload-runs").unwrap_or("<missing>")
            )),
        }
        if !self.ok_cycles.is_empty() && self.workload_patched().unwrap_or(0) == 0 {
            f.push(format!(
                "the workload never ran the patched code (workload-patched={})",
                self.value("workload-patched").unwrap_or("<missing>")
            ));
        }
        if self.value("done").is_none() && !self.timed_out {
            f.push("the guest's /init did not run to the end".into());
        }
        for c in &self.complaints {
            f.push(format!("kernel complaint on the console: {c}"));
        }
        f
    }
}

/// Reads the stress guest's console.
pub fn parse_console(console: &str) -> StressReport {
    let mut r = StressReport::default();
    for raw in console.lines() {
        let line = raw.trim_end_matches('\r');
        if BAD_CONSOLE.iter().any(|b| line.contains(b)) && r.complaints.len() < 5 {
            r.complaints.push(line.trim().to_string());
        }
        let Some(pos) = line.find(STRESS_MARK) else {
            continue;
        };
        let rest = &line[pos + STRESS_MARK.len()..];
        let Some((k, v)) = rest.split_once('=') else {
            continue;
        };
        let (k, v) = (k.trim(), v.trim());
        if let Some(n) = k.strip_prefix("cycle-").and_then(|n| n.parse::<u32>().ok()) {
            if v == "ok" {
                r.ok_cycles.push(n);
            } else {
                r.failed_cycles
                    .push((n, v.trim_start_matches("FAIL").trim().to_string()));
            }
            continue;
        }
        r.values
            .entry(k.to_string())
            .or_insert_with(|| v.to_string());
    }
    r
}

/// `cargo xtask stress [--cycles N]`.
pub fn cmd_stress(args: &[String]) -> Result<bool> {
    let cycles = parse_args(args)?;
    let cases = e2e::load_cases()?;
    let case = cases
        .iter()
        .find(|c| c.name == CASE)
        .with_context(|| format!("the e2e case {CASE} is missing"))?;
    let klpgen = case::build_klpgen()?;
    let k = kernel::ensure()?;
    let workdir = util::target_dir().join("stress");
    let output = workdir.join("module");
    if output.exists() {
        fs::remove_dir_all(&output)?;
    }
    fs::create_dir_all(&workdir)?;

    let cmd = case::klpgen_command(
        &klpgen,
        &k,
        &format!("{CASE}-stress"),
        &output,
        &case.args,
        &case.dir.join("case.patch"),
    );
    eprintln!("stress: $ {}", util::display(&cmd));
    let run = case::run_klpgen(cmd, &workdir)?;
    if !run.status.is_some_and(|s| s.success()) {
        eprintln!("{}", run.show());
        bail!("klpgen build failed for the stress module");
    }
    let module = output.join(format!("livepatch-{CASE}-stress.ko"));
    if !module.is_file() {
        eprintln!("{}", run.show());
        bail!("{} was not produced", module.display());
    }
    let module_name = case::module_name(&format!("{CASE}-stress"));
    let probe = fs::read(case.dir.join("probe.sh")).context("cannot read the case's probe.sh")?;
    let spec = Spec {
        kernel: &k.bzimage(),
        machine: guest::TEST_KERNEL,
        module: &module,
        module_name: &module_name,
        probe: &probe,
        workdir: &workdir,
        preload: None,
        cross: None,
        late: None,
        second: None,
        wrong_kernel: None,
    };
    let initrd = workdir.join("initrd.gz");
    let init = guest::stress_init_script(&module_name, cycles, WORKLOAD);
    guest::build_initramfs_with(&spec, &init, &initrd)?;
    eprintln!("stress: {cycles} load/disable/unload cycles of {module_name} in qemu ...");
    let start = Instant::now();
    let q = guest::run_qemu(&spec, &initrd, guest_limit(cycles))?;
    let mut report = parse_console(&q.console);
    report.timed_out = q.status.is_none();
    let fails = report.failed_checks(cycles);
    let guest_secs = report
        .guest_seconds()
        .map_or("?".to_string(), |s| format!("{s:.1}"));
    let per_cycle = report
        .guest_seconds()
        .filter(|_| !report.ok_cycles.is_empty())
        .map_or("?".to_string(), |s| {
            format!("{:.2}", s / report.ok_cycles.len() as f64)
        });
    let summary = format!(
        "{}/{cycles} cycles in {:.1}s (qemu {:.1}s, guest cycles {guest_secs}s, {per_cycle}s per cycle), workload ran {} times, {} of them patched",
        report.ok_cycles.len(),
        start.elapsed().as_secs_f64(),
        q.seconds,
        report
            .workload_runs()
            .map_or("?".to_string(), |n| n.to_string()),
        report
            .workload_patched()
            .map_or("?".to_string(), |n| n.to_string()),
    );
    if !fails.is_empty() {
        eprintln!(
            "  --- console tail ({}) ---\n{}",
            q.console_path.display(),
            util::indent(&util::tail_lines(&q.console, 40))
        );
        for f in &fails {
            eprintln!("  check failed: {f}");
        }
    }
    let passed = fails.is_empty();
    println!(
        "{} stress {CASE}: {summary}{}",
        if passed { "PASS" } else { "FAIL" },
        fails.first().map_or(String::new(), |f| format!("; {f}"))
    );
    println!(
        "stress: {} passed, {} failed",
        usize::from(passed),
        usize::from(!passed)
    );
    Ok(passed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn console(cycles: u32) -> String {
        let mut s = String::from(
            "Run /init as init process\r\nKLPGEN-STRESS: start=1\r\nKLPGEN-STRESS: probe-before=1\r\nKLPGEN-STRESS: uptime-start=1.50\r\n",
        );
        for i in 1..=cycles {
            s.push_str("livepatch: enabling patch 'livepatch_x'\r\n");
            s.push_str(&format!("KLPGEN-STRESS: cycle-{i}=ok\r\n"));
        }
        s.push_str(&format!(
            "KLPGEN-STRESS: uptime-end=11.50\r\nKLPGEN-STRESS: workload-runs=977\r\nKLPGEN-STRESS: workload-patched=500\r\nKLPGEN-STRESS: cycles-ok={cycles}\r\nKLPGEN-STRESS: done=1\r\n"
        ));
        s
    }

    #[test]
    fn good_console_passes() {
        let r = parse_console(&console(3));
        assert_eq!(r.failed_checks(3), Vec::<String>::new());
        assert_eq!(r.guest_seconds(), Some(10.0));
        assert_eq!(r.workload_runs(), Some(977));
        assert_eq!(r.workload_patched(), Some(500));
        // Fewer cycles than asked for is a failure.
        assert!(r
            .failed_checks(4)
            .iter()
            .any(|f| f.contains("3 of 4 cycles")));
    }

    #[test]
    fn failures_are_reported() {
        let bad = console(2)
            .replace("cycle-2=ok", "cycle-2=FAIL leaked: livepatch_x")
            .replace("workload-runs=977", "workload-runs=0")
            .replace("workload-patched=500", "workload-patched=0")
            .replace(
                "done=1",
                "done=1\r\n[  9.1] WARNING: CPU: 0 PID: 1 at kernel/livepatch/core.c:1",
            );
        let f = parse_console(&bad).failed_checks(2);
        assert!(
            f.iter().any(|m| m == "cycle 2 failed: leaked: livepatch_x"),
            "{f:?}"
        );
        assert!(f.iter().any(|m| m.contains("1 of 2 cycles")), "{f:?}");
        assert!(
            f.iter().any(|m| m.contains("workload did not run")),
            "{f:?}"
        );
        assert!(
            f.iter().any(|m| m.contains("never ran the patched code")),
            "{f:?}"
        );
        assert!(f.iter().any(|m| m.contains("WARNING:")), "{f:?}");
        let f = parse_console("KLPGEN-STRESS: start=1\n").failed_checks(1);
        assert!(f.iter().any(|m| m.contains("probe before loading")));
        assert!(f.iter().any(|m| m.contains("did not run to the end")));
    }

    #[test]
    fn init_script_is_filled_in() {
        let s = guest::stress_init_script("livepatch_y", 7, WORKLOAD);
        assert!(s.contains("M=livepatch_y\n"));
        assert!(s.contains("N=7\n"));
        assert!(s.contains(&format!("        if {WORKLOAD}; then")));
        for placeholder in ["@MODULE@", "@CYCLES@", "@WORKLOAD@"] {
            assert!(!s.contains(placeholder), "{placeholder} left in the script");
        }
        assert!(s.contains(STRESS_MARK));
    }

    #[test]
    fn args() {
        assert_eq!(parse_args(&[]).unwrap(), DEFAULT_CYCLES);
        assert_eq!(parse_args(&["--cycles".into(), "5".into()]).unwrap(), 5);
        assert!(parse_args(&["--cycles".into(), "0".into()]).is_err());
        assert!(parse_args(&["x".into()]).is_err());
    }
}
