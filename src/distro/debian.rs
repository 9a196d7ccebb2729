//! Debian's kernel packages: how a Debian kernel names its package version (`Debian
//! 6.1.192-3` in `UTS_VERSION`), the packages that hold each part of a target (the `-dbg`
//! vmlinux, the headers, the image's modules, `linux-source-X.Y`), where they install their
//! files, and the remedies that name them. Facts from Debian 12's 6.1 kernels
//! (/work/notes/debian/NOTES.md in the project's research notes): the release
//! `6.1.0-57-cloud-amd64` is the ABI and flavour, the package version `6.1.192-3` the upstream
//! version and Debian revision; the headers' `include/config/kernel.release` says `6.1.192`.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use patchgen::target::{MODULE_MISMATCH, SOURCE_MISMATCH, SYMVERS_MISMATCH, VMLINUX_MISMATCH};

use super::{Given, Missing, Package, Resolved, Side};
use crate::process::{self, Interrupt};

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

/// The installed version of each package in a dpkg status file (`var/lib/dpkg/status`, the
/// database `dpkg-query` reads; installed means `Status: install ok installed`).
fn installed_versions(status: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for para in status.split("\n\n") {
        let field = |name: &str| {
            para.lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
                .map(|v| v.trim().to_string())
        };
        let (Some(pkg), Some(ver), Some(st)) =
            (field("Package"), field("Version"), field("Status"))
        else {
            continue;
        };
        if st.ends_with(" installed") {
            out.push((pkg, ver));
        }
    }
    out
}

/// The Debian kernel `release` as a target: its package version (from the running kernel's
/// banner, the headers' `utsversion.h`, dpkg's database, klpgen's cache, or with `fetch` apt's
/// lists), then each part from the system where its installed version is that one, else from
/// klpgen's cache (`<cache>/dist/debian/<version>/`), else, with `fetch`, downloaded there
/// (`apt-get download pkg=version`, `dpkg-deb -x`: nothing is installed, no root needed). The
/// source tarball is unpacked into the cache once per package version. What is still missing
/// is a refusal naming each package and version.
pub fn resolve(
    root: &Path,
    cache: &Path,
    release: &str,
    fetch: bool,
    given: &Given,
    intr: &Interrupt,
) -> Result<Resolved> {
    let status = fs::read_to_string(root.join("var/lib/dpkg/status")).unwrap_or_default();
    let installed = installed_versions(&status);
    let installed_version = |pkg: &str| {
        installed
            .iter()
            .find(|(p, _)| p == pkg)
            .map(|(_, v)| v.clone())
    };
    let dist = cache.join("dist").join(NAME);
    let version = package_version(root, &dist, release, &installed_version, fetch, intr)?;
    let Some(package) = package_of(&format!("Debian {version}")) else {
        bail!("{release}: Debian package version {version} has no upstream part");
    };
    let vdir = dist.join(&version);
    let fetched = vdir.join("root");
    let mut missing: Vec<Missing> = Vec::new();
    let mut pick = |what: &'static str, pkg: String, system: PathBuf, cached: PathBuf, ok: bool| {
        if ok && system.exists() {
            return Some(system);
        }
        if cached.exists() {
            return Some(cached);
        }
        missing.push(Missing {
            what,
            path: system,
            package: format!("{pkg}={version}"),
        });
        None
    };
    let headers_ok = |dir: &Path| {
        fs::read_to_string(dir.join("include/generated/utsversion.h"))
            .ok()
            .and_then(|t| package_of(&t))
            .is_some_and(|p| p.version == version)
    };
    let sys_headers = headers_path(root, release);
    let headers = (!given.build).then(|| {
        let ok = headers_ok(&sys_headers);
        pick(
            "the headers (.config, Module.symvers, generated headers)",
            headers_package(release),
            sys_headers.clone(),
            headers_path(&fetched, release),
            ok,
        )
    });
    let vmlinux = (!given.vmlinux).then(|| {
        let ok = installed_version(&dbg_package(release)).is_none_or(|v| v == version);
        pick(
            "the vmlinux with DWARF",
            dbg_package(release),
            vmlinux_path(root, release),
            vmlinux_path(&fetched, release),
            ok,
        )
    });
    let modules = (!given.modules).then(|| {
        let sys = modules_path(root, release);
        let cached = modules_path(&fetched, release);
        // The modules come with the image, which the running kernel always has; only a
        // fetched set takes them from the cache.
        if sys.join("kernel").is_dir() {
            Some(sys)
        } else {
            pick("the modules", image_package(release), sys, cached, false)
        }
    });
    let unpacked = vdir.join("src").join(source_package(&package.upstream));
    // The sources: unpacked in the cache already, else the tarball to unpack.
    let tarball = (!given.source && !unpacked.join("Makefile").is_file()).then(|| {
        let ok = installed_version(&source_package(&package.upstream)).as_deref() == Some(&version);
        pick(
            "the sources",
            source_package(&package.upstream),
            source_tarball(root, &package.upstream),
            source_tarball(&fetched, &package.upstream),
            ok,
        )
    });
    if !missing.is_empty() && fetch {
        let lock = lock_version(&vdir)?;
        for m in &missing {
            fetch_package(&vdir, &m.package, intr)?;
        }
        // Everything is in the cache now (the lock is taken again for the unpacking).
        drop(lock);
        return resolve(root, cache, release, false, given, intr);
    }
    if !missing.is_empty() {
        return Err(super::missing_refusal(release, &version, &missing));
    }
    let source = match tarball.flatten() {
        Some(tarball) => {
            let _lock = lock_version(&vdir)?;
            if !unpacked.join("Makefile").is_file() {
                // (Another run may have unpacked it meanwhile.)
                unpack_source(&tarball, &vdir, &unpacked, intr)?;
            }
            Some(unpacked)
        }
        None if given.source => None,
        None => Some(unpacked),
    };
    Ok(Resolved {
        release: release.to_string(),
        package,
        source,
        build: headers.flatten(),
        vmlinux: vmlinux.flatten(),
        modules: modules.flatten(),
    })
}

/// The package version of `release`: the running kernel's banner, the installed headers'
/// `utsversion.h`, dpkg's installed image, headers or `-dbg` package, a set in klpgen's cache,
/// or (fetching) the version apt would install.
fn package_version(
    root: &Path,
    dist: &Path,
    release: &str,
    installed: &dyn Fn(&str) -> Option<String>,
    fetch: bool,
    intr: &Interrupt,
) -> Result<String> {
    let running = fs::read_to_string(root.join("proc/sys/kernel/osrelease")).unwrap_or_default();
    if running.trim() == release {
        let banner = fs::read_to_string(root.join("proc/version")).unwrap_or_default();
        if let Some(p) = patchgen::target::banner_version(&banner).and_then(|v| package_of(&v)) {
            return Ok(p.version);
        }
    }
    let uts = headers_path(root, release).join("include/generated/utsversion.h");
    if let Some(p) = fs::read_to_string(uts).ok().and_then(|t| package_of(&t)) {
        return Ok(p.version);
    }
    for pkg in [
        format!("linux-image-{release}"),
        image_package(release),
        headers_package(release),
        dbg_package(release),
    ] {
        if let Some(v) = installed(&pkg) {
            return Ok(v);
        }
    }
    if let Ok(rd) = fs::read_dir(dist) {
        let mut found: Vec<String> = rd
            .flatten()
            .filter(|e| headers_path(&e.path().join("root"), release).is_dir())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        found.sort();
        if let Some(v) = found.pop() {
            return Ok(v);
        }
    }
    if fetch {
        let pkg = headers_package(release);
        let out = process::run(
            "apt-cache",
            ["show", "--no-all-versions", pkg.as_str()],
            None,
            &[],
            None,
            intr,
        )?;
        if let Some(v) = out
            .stdout
            .lines()
            .find_map(|l| l.strip_prefix("Version:"))
            .map(|v| v.trim().to_string())
            .filter(|_| out.success)
        {
            return Ok(v);
        }
        return Err(crate::verdict::Verdict::Refused(format!(
            "[{}] apt knows no package {pkg} (the headers of {release}): {}; is the release right, and are apt's lists current (apt-get update)?",
            super::PACKAGE_MISSING,
            out.stderr.trim()
        ))
        .into());
    }
    Err(crate::verdict::Verdict::Refused(format!(
        "[{}] cannot tell the Debian package version of kernel {release}: it is not the running kernel and none of linux-image-{release}, {}, {} is installed; install {} (or pass --fetch to download the matching packages into klpgen's cache)",
        super::PACKAGE_MISSING,
        headers_package(release),
        dbg_package(release),
        headers_package(release)
    ))
    .into())
}

/// One run at a time fetches or unpacks one package version (a lock file in its directory,
/// held while the returned file is open).
fn lock_version(vdir: &Path) -> Result<fs::File> {
    fs::create_dir_all(vdir).with_context(|| format!("cannot create {}", vdir.display()))?;
    let lock = fs::File::create(vdir.join("lock"))?;
    lock.lock()
        .with_context(|| format!("cannot lock {}", vdir.join("lock").display()))?;
    Ok(lock)
}

/// `apt-get download PKG=VERSION` into `<vdir>/debs`, then `dpkg-deb -x` into `<vdir>/root`.
fn fetch_package(vdir: &Path, pkg: &str, intr: &Interrupt) -> Result<()> {
    let debs = vdir.join("debs");
    fs::create_dir_all(&debs)?;
    crate::progress::message(&format!("klpgen: fetching {pkg} into {}", vdir.display()));
    let out = process::run("apt-get", ["download", pkg], Some(&debs), &[], None, intr)?;
    if !out.success {
        return Err(crate::verdict::Verdict::Refused(format!(
            "[{}] `apt-get download {pkg}` failed: {}{}(the archive may no longer have this version; apt-get update?)",
            super::PACKAGE_MISSING,
            out.stdout,
            out.stderr
        ))
        .into());
    }
    let name = pkg.split('=').next().unwrap_or(pkg);
    let deb = fs::read_dir(&debs)?
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&format!("{name}_")) && n.ends_with(".deb"))
        })
        .with_context(|| {
            format!(
                "apt-get download {pkg} left no {name}_*.deb in {}",
                debs.display()
            )
        })?;
    let root = vdir.join("root");
    fs::create_dir_all(&root)?;
    let out = process::run(
        "dpkg-deb",
        [
            std::ffi::OsStr::new("-x"),
            deb.as_os_str(),
            root.as_os_str(),
        ],
        None,
        &[],
        None,
        intr,
    )?;
    if !out.success {
        bail!(
            "dpkg-deb -x {} failed: {}",
            deb.display(),
            out.stderr.trim()
        );
    }
    // The unpacked files are what is kept; the package file is not needed again.
    fs::remove_file(&deb)?;
    Ok(())
}

/// Unpack `linux-source-X.Y.tar.xz` into `unpacked` (`<vdir>/src/linux-source-X.Y`), through
/// a temporary directory renamed at the end, so a half-unpacked tree is never used.
fn unpack_source(
    tarball: &Path,
    vdir: &Path,
    unpacked: &Path,
    intr: &Interrupt,
) -> Result<PathBuf> {
    let tmp = vdir.join("src.tmp");
    if tmp.exists() {
        fs::remove_dir_all(&tmp)?;
    }
    fs::create_dir_all(&tmp)?;
    crate::progress::message(&format!(
        "klpgen: unpacking {} into {} (once)",
        tarball.display(),
        vdir.join("src").display()
    ));
    let out = process::run(
        "tar",
        [
            std::ffi::OsStr::new("-xf"),
            tarball.as_os_str(),
            "-C".as_ref(),
            tmp.as_os_str(),
        ],
        None,
        &[],
        None,
        intr,
    )?;
    if !out.success {
        bail!(
            "tar -xf {} failed: {}",
            tarball.display(),
            out.stderr.trim()
        );
    }
    let name = unpacked.file_name().unwrap_or_default();
    if !tmp.join(name).join("Makefile").is_file() {
        bail!(
            "{} does not hold {}/Makefile",
            tarball.display(),
            name.to_string_lossy()
        );
    }
    fs::create_dir_all(vdir.join("src"))?;
    fs::rename(tmp.join(name), unpacked)?;
    fs::remove_dir_all(&tmp)?;
    Ok(unpacked.to_path_buf())
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
    fn dpkg_status_gives_installed_versions() {
        let status = "Package: linux-source-6.1\nStatus: install ok installed\nVersion: 6.1.192-3\n\nPackage: linux-image-6.1.0-57-cloud-amd64-dbg\nStatus: deinstall ok config-files\nVersion: 6.1.192-3\n";
        assert_eq!(
            installed_versions(status),
            [("linux-source-6.1".to_string(), "6.1.192-3".to_string())]
        );
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
