//! Distribution kernels: what a distribution's kernel says about its package (the version in
//! its banner), the remedies that name the packages to install, and the distribution's default
//! target (the running kernel, `--release R`, `--fetch`) assembled from its installed or
//! fetched packages. The knowledge of one distribution (package names, paths) is one file of
//! `src/distro/`: Debian's is `debian.rs`; another distribution is another file and a line in
//! [`package_of`] and [`remedy`].

pub mod debian;

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};

use crate::process::Interrupt;
use crate::verdict::Verdict;

/// Key of the refusal for a part of a distribution's target that is not installed (nor in
/// klpgen's cache): it names the package and version to install, and `--fetch`.
pub const PACKAGE_MISSING: &str = "target.package-missing";

/// A distribution's kernel package, as the kernel's banner names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Package {
    /// `debian`.
    pub distribution: &'static str,
    /// The package version (`6.1.192-3`).
    pub version: String,
    /// The upstream version the package was made from (`6.1.192`): the sources' Makefile.
    pub upstream: String,
}

/// One side of a mismatch, for its remedy: a release and the package it belongs to.
pub struct Side<'a> {
    pub release: Option<&'a str>,
    pub package: Option<&'a Package>,
}

/// The package a kernel's `UTS_VERSION` (its banner's version part) names, for the
/// distributions klpgen knows.
pub fn package_of(uts_version: &str) -> Option<Package> {
    debian::package_of(uts_version)
}

/// The remedy of a `target.*-mismatch` naming the distribution's packages, when the parts are
/// a distribution's (known from either side's package).
pub fn remedy(key: &str, vmlinux: &Side<'_>, build: &Side<'_>) -> Option<String> {
    let dist = vmlinux.package.or(build.package)?.distribution;
    match dist {
        debian::NAME => debian::remedy(key, vmlinux, build),
        _ => None,
    }
}

/// The system root the distribution's files are found under: `/`, or for klpgen's own tests
/// `KLPGEN_ROOT_FOR_TESTS` (a directory laid out like a system: `proc/sys/kernel/osrelease`,
/// `etc/os-release`, `var/lib/dpkg/status`, `usr/src`, `usr/lib/debug`, `lib/modules`).
pub fn system_root() -> PathBuf {
    std::env::var_os("KLPGEN_ROOT_FOR_TESTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/"))
}

/// Which parts of the target the flags give, so that no package is looked for them.
#[derive(Debug, Clone, Copy, Default)]
pub struct Given {
    pub source: bool,
    pub build: bool,
    pub vmlinux: bool,
    pub modules: bool,
}

/// A distribution's kernel as a target: its release and package, and where each part is
/// (None: given by a flag).
#[derive(Debug, Clone)]
pub struct Resolved {
    pub release: String,
    pub package: Package,
    pub source: Option<PathBuf>,
    pub build: Option<PathBuf>,
    pub vmlinux: Option<PathBuf>,
    pub modules: Option<PathBuf>,
}

/// A part that is missing: what it is, where it would be installed, and `package=version`.
#[derive(Debug, Clone)]
pub struct Missing {
    pub what: &'static str,
    pub path: PathBuf,
    pub package: String,
}

/// The refusal for missing parts, naming each package and `--fetch`.
fn missing_refusal(release: &str, version: &str, missing: &[Missing]) -> anyhow::Error {
    let list: Vec<String> = missing
        .iter()
        .map(|m| {
            format!(
                "\n  {} ({}): install {}",
                m.what,
                m.path.display(),
                m.package
            )
        })
        .collect();
    let pkgs: Vec<&str> = missing.iter().map(|m| m.package.as_str()).collect();
    Verdict::Refused(format!(
        "[{PACKAGE_MISSING}] kernel {release} (package version {version}) is missing parts:{}\n  `apt-get install {}`, or pass --fetch to download them into klpgen's cache (nothing is installed system-wide)",
        list.concat(),
        pkgs.join(" ")
    ))
    .into()
}

/// The running kernel's release (`uname -r`), from `<root>/proc/sys/kernel/osrelease`.
pub fn running_release(root: &Path) -> Result<String> {
    let p = root.join("proc/sys/kernel/osrelease");
    let r = std::fs::read_to_string(&p)
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    if r.is_empty() {
        bail!(
            "cannot read the running kernel's release from {}",
            p.display()
        );
    }
    Ok(r)
}

/// The `ID` of `<root>/etc/os-release` (`debian`).
fn os_id(root: &Path) -> Option<String> {
    let text = std::fs::read_to_string(root.join("etc/os-release"))
        .or_else(|_| std::fs::read_to_string(root.join("usr/lib/os-release")))
        .ok()?;
    text.lines().find_map(|l| {
        let v = l.strip_prefix("ID=")?;
        Some(v.trim().trim_matches('"').to_string())
    })
}

/// The distribution's kernel `release` (default: the running kernel) as a target, its parts
/// from the installed packages, klpgen's cache, or with `fetch` downloaded into the cache.
pub fn resolve(
    release: Option<&str>,
    fetch: bool,
    given: &Given,
    intr: &Interrupt,
) -> Result<Resolved> {
    let root = system_root();
    let release = match release {
        Some(r) => r.to_string(),
        None => running_release(&root)?,
    };
    match os_id(&root).as_deref() {
        Some(debian::NAME) => debian::resolve(
            &root,
            &crate::kbuild::cache_root(),
            &release,
            fetch,
            given,
            intr,
        ),
        other => bail!(
            "klpgen knows the kernel packages of Debian only, and this system is {}: pass the target's parts with --sourcedir, --builddir and --vmlinux",
            other.unwrap_or("of unknown distribution (no /etc/os-release)")
        ),
    }
}
