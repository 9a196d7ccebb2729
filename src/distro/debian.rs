//! Debian's kernel packages: how a Debian kernel names its package version (`Debian
//! 6.1.192-3` in `UTS_VERSION`), the packages that hold each part of a target (the `-dbg`
//! vmlinux, the headers, the image's modules, `linux-source-X.Y`), where they install their
//! files, and the remedies that name them. Facts from Debian 12's 6.1 kernels
//! (/work/notes/debian/NOTES.md in the project's research notes): the release
//! `6.1.0-57-cloud-amd64` is the ABI and flavour, the package version `6.1.192-3` the upstream
//! version and Debian revision; the headers' `include/config/kernel.release` says `6.1.192`.

use std::path::{Path, PathBuf};

use patchgen::target::{MODULE_MISMATCH, SOURCE_MISMATCH, SYMVERS_MISMATCH, VMLINUX_MISMATCH};

use super::{Package, Side};

/// `distribution` of the report and of [`Package`].
pub const NAME: &str = "debian";

/// The package version in a Debian kernel's `UTS_VERSION` (`#1 SMP PREEMPT_DYNAMIC Debian
/// 6.1.192-3 (2026-11-26)`): the word after `Debian`.
pub fn package_of(uts_version: &str) -> Option<Package> {
    let mut words = uts_version.split_whitespace();
    words.find(|w| *w == "Debian")?;
    let version = words.next()?;
    let upstream = upstream_of(version)?;
    Some(Package {
        distribution: NAME,
        version: version.to_string(),
        upstream,
    })
}

/// The upstream part of a Debian version: without an epoch (`1:`) and without the Debian
/// revision (the last `-...`); `6.12.57-1~bpo12+1` gives `6.12.57`.
fn upstream_of(version: &str) -> Option<String> {
    let v = version.split_once(':').map_or(version, |(_, v)| v);
    let (up, _) = v.rsplit_once('-')?;
    (up.starts_with(|c: char| c.is_ascii_digit())).then(|| up.to_string())
}

/// The kernel line of an upstream version, as `linux-source-X.Y` names it (`6.1`).
pub fn line_of(upstream: &str) -> String {
    upstream.split('.').take(2).collect::<Vec<_>>().join(".")
}

/// The packages of release `r` at version `v`.
pub fn dbg_package(r: &str) -> String {
    format!("linux-image-{r}-dbg")
}
pub fn headers_package(r: &str) -> String {
    format!("linux-headers-{r}")
}
/// The image package with the modules: the `-unsigned` one has the same `.ko` files as the
/// signed `linux-image-<r>` (whose version is its own source package's) and the same version
/// as the `-dbg` package.
pub fn image_package(r: &str) -> String {
    format!("linux-image-{r}-unsigned")
}
pub fn source_package(upstream: &str) -> String {
    format!("linux-source-{}", line_of(upstream))
}

/// Where the packages put each part, below a system root.
pub fn vmlinux_path(root: &Path, r: &str) -> PathBuf {
    root.join(format!("usr/lib/debug/boot/vmlinux-{r}"))
}
pub fn headers_path(root: &Path, r: &str) -> PathBuf {
    root.join(format!("usr/src/linux-headers-{r}"))
}
pub fn modules_path(root: &Path, r: &str) -> PathBuf {
    root.join(format!("lib/modules/{r}"))
}
pub fn source_tarball(root: &Path, upstream: &str) -> PathBuf {
    root.join(format!("usr/src/linux-source-{}.tar.xz", line_of(upstream)))
}

/// What to install or fetch when a mismatch is found, naming the packages of both sides.
pub fn remedy(key: &str, vmlinux: &Side<'_>, build: &Side<'_>) -> Option<String> {
    let pin = |pkg: String, side: &Side<'_>| match side.package {
        Some(p) => format!("{pkg}={}", p.version),
        None => pkg,
    };
    let fetch = |side: &Side<'_>| {
        side.release
            .map(|r| format!("; `klpgen build --release {r} --fetch` gets the whole matching set"))
            .unwrap_or_default()
    };
    match key {
        VMLINUX_MISMATCH => {
            let r = build.release?;
            let mut s = format!(
                "the vmlinux of {r} is /usr/lib/debug/boot/vmlinux-{r} in {}",
                pin(dbg_package(r), build)
            );
            if let Some(vr) = vmlinux.release {
                s.push_str(&format!(
                    "; the headers of {vr} are {}",
                    pin(headers_package(vr), vmlinux)
                ));
            }
            Some(s + &fetch(build))
        }
        SYMVERS_MISMATCH => {
            let r = vmlinux.release?;
            Some(format!(
                "the Module.symvers of {r} is in {} (/usr/src/linux-headers-{r}/Module.symvers){}",
                pin(headers_package(r), vmlinux),
                fetch(vmlinux)
            ))
        }
        SOURCE_MISMATCH => {
            let p = vmlinux.package?;
            Some(format!(
                "the sources of {} are {}={} (/usr/src/{}.tar.xz){}",
                p.version,
                source_package(&p.upstream),
                p.version,
                source_package(&p.upstream),
                fetch(vmlinux)
            ))
        }
        MODULE_MISMATCH => {
            let r = vmlinux.release?;
            Some(format!(
                "the modules of {r} are in {} (lib/modules/{r}); pass --modules with them{}",
                pin(image_package(r), vmlinux),
                fetch(vmlinux)
            ))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn package_versions_come_from_uts_version() {
        let p = package_of("#1 SMP PREEMPT_DYNAMIC Debian 6.1.192-3 (2026-11-26)").unwrap();
        assert_eq!(
            (p.version.as_str(), p.upstream.as_str()),
            ("6.1.192-3", "6.1.192")
        );
        let p = package_of("#1 SMP PREEMPT_DYNAMIC Debian 6.12.57-1~bpo12+1 (2025-11-05)").unwrap();
        assert_eq!(p.upstream, "6.12.57");
        assert_eq!(package_of("#1 Tue Dec  1 21:57:01 UTC 2026"), None);
        assert_eq!(package_of("#1 SMP Debian"), None);
        assert_eq!(line_of("6.1.192"), "6.1");
        assert_eq!(source_package("6.12.57"), "linux-source-6.12");
    }

    #[test]
    fn remedies_name_packages_and_versions() {
        let p57 = package_of("#1 SMP Debian 6.1.192-3 (x)").unwrap();
        let p53 = package_of("#1 SMP Debian 6.1.187-1 (x)").unwrap();
        let vm = Side {
            release: Some("6.1.0-53-cloud-amd64"),
            package: Some(&p53),
        };
        let build = Side {
            release: Some("6.1.0-57-cloud-amd64"),
            package: Some(&p57),
        };
        let r = remedy(VMLINUX_MISMATCH, &vm, &build).unwrap();
        assert!(
            r.contains("linux-image-6.1.0-57-cloud-amd64-dbg=6.1.192-3"),
            "{r}"
        );
        assert!(
            r.contains("linux-headers-6.1.0-53-cloud-amd64=6.1.187-1"),
            "{r}"
        );
        assert!(r.contains("--release 6.1.0-57-cloud-amd64 --fetch"), "{r}");
        let r = remedy(SOURCE_MISMATCH, &vm, &build).unwrap();
        assert!(r.contains("linux-source-6.1=6.1.187-1"), "{r}");
        let r = remedy(MODULE_MISMATCH, &vm, &build).unwrap();
        assert!(
            r.contains("linux-image-6.1.0-53-cloud-amd64-unsigned=6.1.187-1"),
            "{r}"
        );
        let r = remedy(SYMVERS_MISMATCH, &vm, &build).unwrap();
        assert!(
            r.contains("linux-headers-6.1.0-53-cloud-amd64=6.1.187-1"),
            "{r}"
        );
    }
}
