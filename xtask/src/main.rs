//! `cargo xtask`: developer tasks for klpgen (setup, test kernel, end-to-end tests, demo).
#![forbid(unsafe_code)]

mod bench;
mod case;
mod debian;
mod debian_e2e;
mod demo;
mod depscan;
mod e2e;
mod farm;
mod fuzz;
mod guest;
mod initramfs;
mod kernel;
mod kfixtures;
mod listcheck;
mod mismatch;
mod multitarget;
mod orccheck;
mod package;
mod selfdiff;
mod setup;
mod stress;
mod syscallcheck;
mod util;

use anyhow::{bail, Result};
use std::process::Command;

const USAGE: &str = "\
usage: cargo xtask <command>

commands:
  setup [debian [TARGET...]]
                   install the Debian packages, bindgen and cargo-fuzz, and fetch the stock
                   Debian kernels of the distribution cases into the dev cache (idempotent;
                   `debian` fetches only those, all pinned ones or the TARGETs named)
  kernel [VARIANT] build or reuse the cached test kernel (or a variant, tests/e2e/kernel-VARIANT.fragment
                   merged after kernel.fragment, or a cross kernel: ppc64le, s390x); print its
                   source and build dirs
  e2e [CASE...]    build klpgen; on the test kernel: self-diff of every object, the
                   kernel-header fixtures (tests/kfixtures; select with kfixtures or
                   kfixtures/NAME), the dependency scan against the kernel's records
                   (depscan), then build and boot-test the cases under tests/e2e;
                   then the distribution cases (tests/e2e-debian) on Debian's stock
                   kernels (select with debian, debian/CASE or debian/selftest)
  depscan          the dependency scan for targets without kbuild records against the test
                   kernel's records (also part of e2e)
  demo             build examples/proc-version.patch with klpgen and show it working in qemu
  test             cargo fmt --check, cargo clippy -D warnings, cargo test --workspace, then
                   the e2e, package, farm, stress and a 20 s-per-target fuzz test
  boot KO PROBE    boot one livepatch module with a probe script and run the e2e checks
  bless            re-bless the snapshot tests (tests/snapshots/ from tests/fixtures/*.c):
                   runs the fixture harness, then the snapshot test with KLPGEN_BLESS=1
  bench [stock | targets]
                   measure klpgen build (cold, warm; test kernel and stock Debian kernel)
                   and klpgen diff (instructions, memory); `stock`: only the stock build;
                   `targets`: only one run over 1, 2 and 4 --kernel targets
  fuzz [--seconds N] [--seed N] [--sanitizer none|address] [TARGET...]
                   build the cargo-fuzz targets under fuzz/, seed them from real objects and
                   run each for N seconds (default 60); fails on any crash
  farm             klpgen build --cc-launcher with a real distccd on 127.0.0.1 and with ccache
                   (twice, on empty klpgen caches): compiles on the farm / from the cache, the
                   module byte-identical to a local build
  package [--no-check | --check DEB]
                   build target/package/klpgen_<version>_<arch>.deb (binary, man pages,
                   completions, headers, docs) with dpkg-deb and check it (or check DEB):
                   lintian, dpkg --root into an empty root, man klpgen-build from there,
                   completions in bash, zsh and fish
  stress [--cycles N]
                   load, disable and unload the proc-string module N times (default 100) in
                   qemu while a workload runs the patched function; checks every cycle
";

fn main() {
    match real_main() {
        Ok(true) => {}
        Ok(false) => std::process::exit(1),
        Err(e) => {
            eprintln!("xtask: error: {e:#}");
            std::process::exit(1);
        }
    }
}

/// Returns `Ok(false)` for a test run that completed with failures.
fn real_main() -> Result<bool> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let rest = args.get(1..).unwrap_or(&[]);
    match args.first().map(String::as_str) {
        Some("setup") => setup::cmd_setup(rest).map(|()| true),
        Some("kernel") => kernel::cmd_kernel(rest.first().map(String::as_str)).map(|()| true),
        Some("e2e") => e2e::cmd_e2e(rest),
        Some("demo") => demo::cmd_demo().map(|()| true),
        Some("bench") => bench::cmd_bench(rest),
        Some("bless") => cmd_bless(rest).map(|()| true),
        Some("test") => cmd_test(rest),
        Some("boot") => e2e::cmd_boot(rest),
        Some("fuzz") => fuzz::cmd_fuzz(rest),
        Some("stress") => stress::cmd_stress(rest),
        Some("package") => package::cmd_package(rest),
        Some("farm") => farm::cmd_farm(rest),
        Some("depscan") => depscan::cmd_depscan(rest),
        Some("help" | "-h" | "--help") | None => {
            print!("{USAGE}");
            Ok(true)
        }
        Some(other) => bail!("unknown command {other:?}\n{USAGE}"),
    }
}

/// `cargo xtask bless`: the fixtures must pass their own directives first (a snapshot of a
/// wrong answer is no reference); then the snapshot test rewrites what differs and removes
/// snapshots no fixture gives. Review the result with `git diff tests/snapshots`.
fn cmd_bless(rest: &[String]) -> Result<()> {
    if !rest.is_empty() {
        bail!("`cargo xtask bless` takes no arguments");
    }
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    util::run(
        Command::new(&cargo)
            .current_dir(util::repo_root())
            .args(["test", "--test", "fixtures"]),
    )?;
    util::run(
        Command::new(&cargo)
            .current_dir(util::repo_root())
            .args(["test", "--test", "snapshots"])
            .env("KLPGEN_BLESS", "1"),
    )?;
    eprintln!("bless: tests/snapshots is up to date; review it with `git diff tests/snapshots`");
    Ok(())
}

/// `cargo xtask test`: formatting and clippy first (seconds, so a style slip fails before
/// the long runs), unit tests and fixtures, then the end-to-end test, the load/unload stress
/// test (about 30 s) and a short fuzz run (20 s per target, fixed seed; about 3.5 min with the
/// build).
fn cmd_test(rest: &[String]) -> Result<bool> {
    if !rest.is_empty() {
        bail!("`cargo xtask test` takes no arguments");
    }
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let steps: [&[&str]; 3] = [
        &["fmt", "--all", "--check"],
        &[
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ],
        &["test", "--workspace"],
    ];
    for args in steps {
        util::run(
            Command::new(&cargo)
                .current_dir(util::repo_root())
                .args(args),
        )?;
    }
    let e2e_ok = e2e::cmd_e2e(&[])?;
    // The .deb of klpgen and its checks (about 40 s with the release build e2e made).
    let package_ok = package::cmd_package(&[])?;
    // distcc and ccache for real: three cold klpgen builds (about 4 min on two cores).
    let farm_ok = farm::cmd_farm(&[])?;
    let stress_ok = stress::cmd_stress(&[])?;
    let fuzz_ok = fuzz::run(&fuzz::Options::quick(20))?;
    Ok(e2e_ok && package_ok && farm_ok && stress_ok && fuzz_ok)
}
