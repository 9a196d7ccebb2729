//! Builds (or reuses) the cached test kernel and tells where its source and build trees are.

use crate::util;
use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::process::Command;

/// Debian's kernel source tarball (package linux-source-6.12).
pub const TARBALL: &str = "/usr/src/linux-source-6.12.tar.xz";
/// Top-level directory inside the tarball.
const TOP_DIR: &str = "linux-source-6.12";
/// Bump whenever the build recipe below changes, so older caches are not reused.
const RECIPE_VERSION: &str = "klpgen-test-kernel recipe 1";
/// The rustc the kernel is built with (Debian's rustc-web).
pub const KERNEL_RUSTC: &str = "/usr/bin/rustc";

/// Paths of the cached test kernel.
#[derive(Debug, Clone)]
pub struct Kernel {
    /// `.../klpgen-dev/kernel-<key>/`
    pub cache: PathBuf,
    /// Kernel source tree (the extracted tarball).
    pub src: PathBuf,
    /// `O=` build directory.
    pub build: PathBuf,
}

impl Kernel {
    /// The bootable image.
    pub fn bzimage(&self) -> PathBuf {
        self.build.join("arch/x86/boot/bzImage")
    }

    fn stamp(&self) -> PathBuf {
        self.cache.join("stamp")
    }

    fn log(&self) -> PathBuf {
        self.cache.join("build.log")
    }

    /// Whether a previous build finished successfully.
    pub fn is_built(&self) -> bool {
        self.stamp().is_file() && self.bzimage().is_file()
    }
}

/// The kernel config fragment merged on top of tinyconfig.
pub fn fragment_path() -> PathBuf {
    util::repo_root().join("tests/e2e/kernel.fragment")
}

fn cache_base() -> PathBuf {
    match std::env::var_os("XDG_CACHE_HOME") {
        Some(d) if !d.is_empty() => PathBuf::from(d),
        _ => util::home_dir().join(".cache"),
    }
    .join("klpgen-dev")
}

/// Computes where the kernel for the current tarball, fragment and recipe lives.
pub fn locate() -> Result<Kernel> {
    let meta = fs::metadata(TARBALL).with_context(|| {
        format!("{TARBALL} is missing (package linux-source-6.12); run `cargo xtask setup`")
    })?;
    let fragment = fs::read(fragment_path())
        .with_context(|| format!("cannot read {}", fragment_path().display()))?;
    let mut h = Sha256::new();
    h.update(RECIPE_VERSION.as_bytes());
    h.update(b"\0");
    h.update(meta.len().to_le_bytes());
    h.update(meta.mtime().to_le_bytes());
    h.update(meta.mtime_nsec().to_le_bytes());
    h.update(b"\0");
    h.update(&fragment);
    let digest = h.finalize();
    let key: String = digest.iter().take(8).map(|b| format!("{b:02x}")).collect();
    let cache = cache_base().join(format!("kernel-{key}"));
    Ok(Kernel {
        src: cache.join("src").join(TOP_DIR),
        build: cache.join("build"),
        cache,
    })
}

/// Every `CONFIG_X=y` and `CONFIG_X=m` line of the fragment.
fn required_options(fragment: &str) -> Vec<&str> {
    fragment
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("CONFIG_") && (l.ends_with("=y") || l.ends_with("=m")))
        .collect()
}

/// Returns the options of `required` that `config` does not set.
fn missing_options<'a>(required: &[&'a str], config: &str) -> Vec<&'a str> {
    let set: std::collections::HashSet<&str> = config.lines().map(str::trim).collect();
    required
        .iter()
        .copied()
        .filter(|o| !set.contains(o))
        .collect()
}

fn make(k: &Kernel) -> Command {
    let mut c = Command::new("make");
    c.arg("-C")
        .arg(&k.src)
        .arg(format!("O={}", k.build.display()))
        .arg(format!("RUSTC={KERNEL_RUSTC}"))
        .arg(format!("HOSTRUSTC={KERNEL_RUSTC}"))
        .env("PATH", util::path_with_cargo_bin());
    c
}

fn extract(k: &Kernel) -> Result<()> {
    if k.src.join("Makefile").is_file() {
        return Ok(());
    }
    let src_parent = k.cache.join("src");
    let tmp = k.cache.join("src.tmp");
    for d in [&src_parent, &tmp] {
        if d.exists() {
            fs::remove_dir_all(d).with_context(|| format!("cannot remove {}", d.display()))?;
        }
    }
    fs::create_dir_all(&tmp)?;
    let mut tar = Command::new("tar");
    tar.arg("-xf").arg(TARBALL).arg("-C").arg(&tmp);
    util::run_logged(&mut tar, &k.log(), "extract")?;
    if !tmp.join(TOP_DIR).join("Makefile").is_file() {
        bail!("{TARBALL} did not contain {TOP_DIR}/Makefile");
    }
    fs::rename(&tmp, &src_parent)?;
    Ok(())
}

/// Builds the kernel unless a finished build is cached; returns its paths.
pub fn ensure() -> Result<Kernel> {
    let k = locate()?;
    if k.is_built() {
        return Ok(k);
    }
    let started = std::time::Instant::now();
    eprintln!("building the test kernel in {}", k.cache.display());
    fs::create_dir_all(&k.cache)?;
    fs::write(k.log(), "")?;
    extract(&k)?;
    fs::create_dir_all(&k.build)?;
    let log = k.log();
    let fragment = fragment_path();

    util::run_logged(make(&k).arg("tinyconfig"), &log, "tinyconfig")?;
    let mut merge = Command::new(k.src.join("scripts/kconfig/merge_config.sh"));
    merge
        .current_dir(&k.build)
        .arg("-m")
        .arg("-O")
        .arg(&k.build)
        .arg(k.build.join(".config"))
        .arg(&fragment);
    util::run_logged(&mut merge, &log, "merge_config")?;
    util::run_logged(make(&k).arg("olddefconfig"), &log, "olddefconfig")?;

    let fragment_text = fs::read_to_string(&fragment)?;
    let config = fs::read_to_string(k.build.join(".config"))?;
    let missing = missing_options(&required_options(&fragment_text), &config);
    if !missing.is_empty() {
        bail!(
            "the kernel config does not set {} (dependencies not met?); see {}",
            missing.join(", "),
            k.build.join(".config").display()
        );
    }

    let jobs = std::thread::available_parallelism().map_or(1, |n| n.get());
    util::run_logged(
        make(&k)
            .arg(format!("-j{jobs}"))
            .arg("bzImage")
            .arg("modules"),
        &log,
        "kernel build",
    )?;
    if !k.bzimage().is_file() {
        bail!("make succeeded but {} is missing", k.bzimage().display());
    }
    fs::write(
        k.stamp(),
        format!(
            "{RECIPE_VERSION}\nbuilt in {}s\n",
            started.elapsed().as_secs()
        ),
    )?;
    Ok(k)
}

/// `cargo xtask kernel`: build or reuse, then print the paths.
pub fn cmd_kernel() -> Result<()> {
    let k = ensure()?;
    println!("source dir: {}", k.src.display());
    println!("build dir:  {}", k.build.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_missing_options() {
        let frag = "# c\nCONFIG_A=y\nCONFIG_B=y\nCONFIG_C=m\n# CONFIG_D is not set\n";
        let req = required_options(frag);
        assert_eq!(req, vec!["CONFIG_A=y", "CONFIG_B=y", "CONFIG_C=m"]);
        let cfg = "CONFIG_A=y\n# CONFIG_B is not set\nCONFIG_C=y\n";
        assert_eq!(missing_options(&req, cfg), vec!["CONFIG_B=y", "CONFIG_C=m"]);
        assert!(missing_options(&req, "CONFIG_B=y\nCONFIG_C=m\nCONFIG_A=y\n").is_empty());
    }
}
