//! `cargo xtask setup`: installs the Debian packages and tools the project's builds and tests need,
//! and fetches the stock Debian kernels the distribution e2e runs on into the dev cache
//! (`debian.rs`; `cargo xtask setup debian` does only that).

use crate::kernel::Cross;
use crate::util;
use anyhow::{bail, Result};
use std::collections::HashSet;
use std::process::{Command, Stdio};

/// Debian 12 packages needed to build the test kernel, klpgen's modules, and to boot them.
pub const PACKAGES: &[&str] = &[
    "linux-source-6.12",
    "rustc-web",
    "rust-web-src",
    "cargo-web",
    // `cargo xtask test` starts with `cargo fmt --check` and `cargo clippy`.
    "rustfmt-web",
    "rust-web-clippy",
    "libclang-dev",
    "qemu-system-x86",
    "busybox-static",
    "libelf-dev",
    "flex",
    "bison",
    "bc",
    "libssl-dev",
    "cpio",
    "dwarves",
    "patch",
    "gcc",
    // What the stock Debian 6.1 kernels were built with (their headers' `.kernelvariables`
    // say `CC = gcc-12`); Debian 12's `gcc` depends on it, named here for the distribution e2e.
    "gcc-12",
    "g++",
    "make",
    "xz-utils",
    "python3",
    "valgrind",
    "time",
    "graphviz",
    // The cross test kernels (`cargo xtask kernel ppc64le|s390x`), their qemu machines, and
    // the cross compilers of the `//# arch:` fixtures (clang for loongarch64: Debian 12 has
    // no GNU cross toolchain for it).
    "gcc-powerpc64le-linux-gnu",
    "gcc-s390x-linux-gnu",
    "gcc-aarch64-linux-gnu",
    "clang-19",
    "qemu-system-ppc",
    "qemu-system-misc",
    // `cargo xtask package`: the .deb is checked with lintian, its man pages with man, its
    // completions in each shell.
    "lintian",
    "man-db",
    "zsh",
    "fish",
    // `cargo xtask farm`: klpgen's --cc-launcher with a real compile farm and compiler cache.
    "distcc",
    "ccache",
    // tests/ci_doc.rs: docs/ci.md's script reads reports with jq; its pipelines parse as YAML.
    "jq",
    "python3-yaml",
];

/// The packages of `PACKAGES` that dpkg does not report as installed.
fn missing_packages() -> Result<Vec<&'static str>> {
    let out = Command::new("dpkg-query")
        .arg("-W")
        .arg("-f=${Package} ${Status}\n")
        .args(PACKAGES)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()?;
    // dpkg-query exits 1 when some package is unknown; its output still lists the rest.
    let text = String::from_utf8_lossy(&out.stdout);
    let installed: HashSet<&str> = text
        .lines()
        .filter(|l| l.ends_with(" install ok installed"))
        .filter_map(|l| l.split_whitespace().next())
        .map(|p| p.split(':').next().unwrap_or(p))
        .collect();
    Ok(PACKAGES
        .iter()
        .copied()
        .filter(|p| !installed.contains(p))
        .collect())
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|e| e == "0"))
        })
        .unwrap_or(false)
}

/// `apt-get ...`, through sudo when not root.
fn apt_get() -> Command {
    let mut c = if is_root() {
        Command::new("apt-get")
    } else {
        let mut c = Command::new("sudo");
        c.arg("apt-get");
        c
    };
    c.env("DEBIAN_FRONTEND", "noninteractive")
        .stdin(Stdio::null());
    c
}

/// `apt-get update` (through sudo when not root).
pub fn apt_update() -> Result<()> {
    util::run(apt_get().arg("update"))
}

fn install_packages() -> Result<()> {
    let missing = missing_packages()?;
    if missing.is_empty() {
        eprintln!("setup: Debian packages present");
        return Ok(());
    }
    eprintln!("setup: installing {}", missing.join(" "));
    util::run(apt_get().arg("update"))?;
    util::run(
        apt_get()
            .args(["install", "-y", "--no-install-recommends"])
            .args(&missing),
    )?;
    let still = missing_packages()?;
    if !still.is_empty() {
        bail!(
            "packages still missing after apt-get install: {}",
            still.join(" ")
        );
    }
    Ok(())
}

/// Tools installed with `cargo install --locked`: (crate, the binary it installs).
/// bindgen builds the kernel's Rust support; cargo-fuzz runs `cargo xtask fuzz`
/// (its libFuzzer runtime is compiled with g++).
pub const CARGO_TOOLS: &[(&str, &str)] =
    &[("bindgen-cli", "bindgen"), ("cargo-fuzz", "cargo-fuzz")];

fn install_cargo_tool(krate: &str, bin: &str) -> Result<()> {
    if util::cargo_bin_dir().join(bin).is_file() || util::which(bin).is_some() {
        eprintln!("setup: {bin} present");
        return Ok(());
    }
    eprintln!("setup: installing {krate} (cargo install, a few minutes)");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    util::run(
        Command::new(cargo)
            .args(["install", "--locked", krate])
            .stdin(Stdio::null()),
    )?;
    if !util::cargo_bin_dir().join(bin).is_file() {
        bail!(
            "cargo install {krate} did not produce {}",
            util::cargo_bin_dir().join(bin).display()
        );
    }
    Ok(())
}

/// Where the static busybox of a cross test kernel's guests is kept (a Debian package of
/// that architecture, unpacked, never installed).
fn guest_busybox_dir(c: &Cross) -> std::path::PathBuf {
    crate::kernel::cache_base()
        .join("cross-guest")
        .join(format!("busybox-{}", c.debarch))
}

/// The static busybox for guests of `c`'s machine, fetched on first use: Debian's
/// busybox-static of that architecture, downloaded with `apt-get download` and unpacked with
/// `dpkg -x`. apt needs the foreign architecture to find the package; it is added for the
/// download and removed again (unless it was there before), so the machine's package lists
/// stay as they were.
pub fn guest_busybox(c: &Cross) -> Result<std::path::PathBuf> {
    let dir = guest_busybox_dir(c);
    let bin = dir.join("root/bin/busybox");
    if bin.is_file() {
        return Ok(bin);
    }
    eprintln!(
        "setup: fetching busybox-static:{} for the {} guests",
        c.debarch, c.name
    );
    std::fs::create_dir_all(&dir)?;
    let foreign = Command::new("dpkg")
        .arg("--print-foreign-architectures")
        .output()?;
    let had = String::from_utf8_lossy(&foreign.stdout)
        .lines()
        .any(|l| l.trim() == c.debarch);
    let dpkg = || {
        let mut d = if is_root() {
            Command::new("dpkg")
        } else {
            let mut d = Command::new("sudo");
            d.arg("dpkg");
            d
        };
        d.stdin(Stdio::null());
        d
    };
    if !had {
        util::run(dpkg().args(["--add-architecture", c.debarch]))?;
    }
    let fetched = (|| -> Result<()> {
        util::run(apt_get().args(["-o", "DPkg::Lock::Timeout=900", "update", "-qq"]))?;
        util::run(
            Command::new("apt-get")
                .current_dir(&dir)
                .args(["download", &format!("busybox-static:{}", c.debarch)])
                .stdin(Stdio::null()),
        )
    })();
    if !had {
        util::run(dpkg().args(["--remove-architecture", c.debarch]))?;
        util::run(apt_get().args(["-o", "DPkg::Lock::Timeout=900", "update", "-qq"]))?;
    }
    fetched?;
    let deb = std::fs::read_dir(&dir)?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "deb"))
        .ok_or_else(|| anyhow::anyhow!("apt-get download left no .deb in {}", dir.display()))?;
    util::run(
        Command::new("dpkg")
            .arg("-x")
            .arg(&deb)
            .arg(dir.join("root")),
    )?;
    if !bin.is_file() {
        bail!("{} has no bin/busybox", deb.display());
    }
    Ok(bin)
}

/// The Debian packages and cargo tools (not the stock kernels the distribution e2e fetches).
pub fn install_tools() -> Result<()> {
    install_packages()?;
    for (krate, bin) in CARGO_TOOLS {
        install_cargo_tool(krate, bin)?;
    }
    for c in crate::kernel::CROSS {
        guest_busybox(c)?;
    }
    Ok(())
}

/// Idempotent; quick when everything is installed. `debian [TARGET...]` fetches only the
/// stock kernels (all pinned ones, or those named).
pub fn cmd_setup(rest: &[String]) -> Result<()> {
    match rest.split_first() {
        None => {}
        Some((what, targets)) if what == "debian" => return crate::debian::setup(targets),
        Some(_) => bail!("usage: cargo xtask setup [debian [TARGET...]]"),
    }
    install_tools()?;
    crate::debian::setup(&[])
}
