//! Distribution kernels: what a distribution's kernel says about its package (the version in
//! its banner), the remedies that name the packages to install, and the distribution's default
//! target (the running kernel, `--release R`, `--fetch`) assembled from its installed or
//! fetched packages. The knowledge of one distribution (package names, paths) is one file of
//! `src/distro/`: Debian's is `debian.rs`; another distribution is another file and a line in
//! [`package_of`] and [`remedy`].

pub mod debian;

use std::path::PathBuf;

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
