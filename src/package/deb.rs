//! The Debian package of a livepatch: `livepatch-<name>-<release>_<version>_<arch>.deb`, made
//! with `dpkg-deb` from a staged tree (dpkg itself, as `cargo xtask package` makes klpgen's own;
//! no debhelper, so it works offline). What it holds and why:
//!
//! - `/lib/modules/<release>/updates/<module>.ko`, the module byte for byte (a signed module
//!   stays signed: nothing strips it); `updates/` is where modprobe's default search order
//!   looks first, and only the kernel of that release looks in that directory.
//! - `/lib/systemd/system/<package>.service`, enabled by the package itself (its
//!   `sysinit.target.wants/` link, so `dpkg --root` installs it enabled without running
//!   systemctl): `ConditionKernelVersion=<release>` makes it load the module at boot on that
//!   release only, which `modules-load.d` (read by every kernel) cannot.
//! - `/usr/share/doc/<package>/`: the build's report (`klpgen-report.json`), copyright and
//!   changelog.
//! - Maintainer scripts: postinst runs depmod for the release and, when that kernel runs, loads
//!   the module (the livepatch enables itself); prerm on removal disables the livepatch
//!   through `/sys/kernel/livepatch/<module>/enabled`, waits for the transition back, and
//!   unloads it; postrm runs depmod again. With `DPKG_ROOT` (dpkg `--root` without a chroot)
//!   they touch only that root, never the running kernel. `KLPGEN_SYSFS` replaces `/sys` (for
//!   their tests).
//! - `Depends:` the exact kernel image package of a distribution target
//!   (`linux-image-<release> (= <version>) | linux-image-<release>-unsigned (= <version>)`,
//!   the signed and unsigned images carrying the same kernel), and kmod (depmod, modprobe). A
//!   target built from a kernel build directory has no package to depend on: the description
//!   says so.

use std::fs;
use std::io::Write as _;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use super::{Input, Options};
use crate::process::{self, Interrupt};

/// What was written: the file and the fields a report or summary names.
#[derive(Debug, Clone)]
pub struct Written {
    pub path: PathBuf,
    pub package: String,
    pub version: String,
    pub depends: String,
}

/// A Debian version: `[epoch:]upstream[-revision]`, upstream starting with a digit.
pub fn check_version(v: &str) -> Result<String> {
    let rest = match v.split_once(':') {
        Some((e, r)) if !e.is_empty() && e.chars().all(|c| c.is_ascii_digit()) => r,
        Some(_) => bail!("--package-version {v:?}: the epoch before ':' must be digits"),
        None => v,
    };
    let upstream = rest.rsplit_once('-').map_or(rest, |(u, _)| u);
    let ok = upstream.starts_with(|c: char| c.is_ascii_digit())
        && rest
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '+' | '-' | '~'))
        && !rest.ends_with('-');
    if !ok {
        bail!("--package-version {v:?} is not a Debian version (digits first; letters, digits and . + - ~)");
    }
    Ok(v.to_string())
}

/// `Name <email>`, as Debian's Maintainer field wants it.
pub fn check_maintainer(m: &str) -> Result<()> {
    let ok = m
        .split_once(" <")
        .is_some_and(|(n, e)| !n.trim().is_empty() && e.ends_with('>') && e.contains('@'));
    if !ok {
        bail!("--package-maintainer {m:?}: expected `Name <email>`");
    }
    Ok(())
}

/// `livepatch-<name>-<release>`: the module name and the release in the letters Debian
/// package names allow (lowercase, digits, `+ - .`).
pub fn package_name(module: &str, release: &str) -> String {
    let clean = |s: &str| -> String {
        s.chars()
            .map(|c| match c.to_ascii_lowercase() {
                c @ ('a'..='z' | '0'..='9' | '+' | '.' | '-') => c,
                _ => '-',
            })
            .collect()
    };
    format!("{}-{}", clean(module), clean(release))
}

/// The name the kernel gives the module (`-` is `_`): its sysfs directories.
fn kernel_name(module: &str) -> String {
    module.replace('-', "_")
}

/// The Depends field.
fn depends(input: &Input<'_>) -> String {
    let mut d = vec!["kmod".to_string()];
    if let Some(("debian", version)) = input.distribution {
        let r = input.release;
        d.push(format!(
            "linux-image-{r} (= {version}) | linux-image-{r}-unsigned (= {version})"
        ));
    }
    d.join(", ")
}

/// Lines of at most `width` characters (Debian's extended descriptions).
fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = Vec::new();
    let mut line = String::new();
    for w in text.split_whitespace() {
        if !line.is_empty() && line.len() + 1 + w.len() > width {
            lines.push(std::mem::take(&mut line));
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(w);
    }
    if !line.is_empty() {
        lines.push(line);
    }
    lines
}

/// DEBIAN/control.
pub fn control(input: &Input<'_>, opts: &Options, installed_kib: u64) -> String {
    let pkg = package_name(input.module, input.release);
    let r = input.release;
    let mut long = format!(
        "The livepatch module {}.ko, {}, for the Linux kernel release {r} only.",
        input.module, input.description
    );
    match input.distribution {
        Some((dist, version)) => long.push_str(&format!(
            " It was built for the {dist} kernel package version {version}, which it depends on."
        )),
        None => long.push_str(
            " It was built from a kernel build directory: no distribution package of that kernel is known, so it depends on none.",
        ),
    }
    long.push_str(&format!(
        " It is loaded at boot when that kernel runs ({pkg}.service), and at installation when it is running; removing the package disables and unloads it. The build's report is /usr/share/doc/{pkg}/klpgen-report.json."
    ));
    let mut c = format!(
        "Package: {pkg}\nVersion: {}\nArchitecture: {}\nMaintainer: {}\nInstalled-Size: {installed_kib}\nDepends: {}\nSection: kernel\nPriority: optional\nDescription: livepatch {} for Linux {r}\n",
        opts.version,
        input.arch,
        opts.maintainer,
        depends(input),
        input.module.strip_prefix("livepatch-").unwrap_or(input.module),
    );
    for l in wrap(&long, 79) {
        c.push(' ');
        c.push_str(&l);
        c.push('\n');
    }
    c
}

/// The systemd unit that loads the module at boot, on its release only.
pub fn unit(input: &Input<'_>) -> String {
    format!(
        "[Unit]\nDescription=Livepatch {m} for Linux {r}\nDocumentation=file:/usr/share/doc/{p}/klpgen-report.json\nConditionKernelVersion={r}\nDefaultDependencies=no\nAfter=local-fs.target systemd-modules-load.service\nBefore=sysinit.target shutdown.target\nConflicts=shutdown.target\n\n[Service]\nType=oneshot\nRemainAfterExit=yes\nExecStart=/sbin/modprobe {m}\n\n[Install]\nWantedBy=sysinit.target\n",
        m = input.module,
        r = input.release,
        p = package_name(input.module, input.release),
    )
}

/// The variables every maintainer script starts with.
fn script_head(input: &Input<'_>, what: &str) -> String {
    format!(
        "#!/bin/sh\n# {what}\nset -e\n\nrelease='{r}'\nmodule='{m}'\nsys=\"${{KLPGEN_SYSFS:-/sys}}\"\npatch=\"$sys/kernel/livepatch/{k}\"\n\n# depmod of the release, in DPKG_ROOT when dpkg installs into another root; only when\n# that kernel's modules are there.\nrun_depmod() {{\n\tif [ -d \"$DPKG_ROOT/lib/modules/$release/kernel\" ] && command -v depmod >/dev/null; then\n\t\tif [ -n \"$DPKG_ROOT\" ]; then\n\t\t\tdepmod -b \"$DPKG_ROOT\" -a \"$release\"\n\t\telse\n\t\t\tdepmod -a \"$release\"\n\t\tfi\n\tfi\n}}\n\n",
        r = input.release,
        m = input.module,
        k = kernel_name(input.module),
    )
}

pub fn postinst(input: &Input<'_>) -> String {
    let mut s = script_head(
        input,
        "postinst: make the livepatch known to modprobe; load it when its kernel runs.",
    );
    s.push_str(
        "if [ \"$1\" = configure ]; then\n\trun_depmod\n\t# Only the running kernel of this system, and only that release.\n\tif [ -z \"$DPKG_ROOT\" ] && [ \"$(uname -r)\" = \"$release\" ] && [ ! -d \"$patch\" ]; then\n\t\tif modprobe \"$module\"; then\n\t\t\techo \"$module: loaded and enabled on the running kernel $release\"\n\t\telse\n\t\t\techo \"$module: could not load it on the running kernel $release (see dmesg)\" >&2\n\t\tfi\n\tfi\nfi\n\nexit 0\n",
    );
    s
}

pub fn prerm(input: &Input<'_>) -> String {
    let mut s = script_head(
        input,
        "prerm: on removal, disable the livepatch, wait for the transition back, unload it.",
    );
    s.push_str(&format!(
        "# The same livepatch built for another release has the same name: only this release's.\nif [ -n \"$DPKG_ROOT\" ] || [ \"$(uname -r)\" != \"$release\" ]; then\n\texit 0\nfi\n\nif [ \"$1\" = remove ] || [ \"$1\" = deconfigure ]; then\n\tif [ -e \"$patch/enabled\" ]; then\n\t\tif [ \"$(cat \"$patch/enabled\")\" = 1 ]; then\n\t\t\techo 0 > \"$patch/enabled\"\n\t\tfi\n\t\t# The kernel removes the directory once every task is back on the old code.\n\t\ttries=0\n\t\twhile [ -d \"$patch\" ] && [ \"$(cat \"$patch/transition\" 2>/dev/null || echo 0)\" = 1 ]; do\n\t\t\ttries=$((tries + 1))\n\t\t\tif [ \"$tries\" -gt 60 ]; then\n\t\t\t\techo \"$module: still in transition after 60s (a task sleeps in a patched function); not removing it; try again later\" >&2\n\t\t\t\texit 1\n\t\t\tfi\n\t\t\tsleep 1\n\t\tdone\n\tfi\n\tif [ -d \"$sys/module/{k}\" ]; then\n\t\trmmod \"{k}\"\n\t\techo \"$module: disabled and unloaded\"\n\tfi\nfi\n\nexit 0\n",
        k = kernel_name(input.module)
    ));
    s
}

pub fn postrm(input: &Input<'_>) -> String {
    let mut s = script_head(
        input,
        "postrm: forget the removed livepatch in modprobe's index.",
    );
    s.push_str("if [ \"$1\" = remove ] || [ \"$1\" = purge ]; then\n\trun_depmod\nfi\n\nexit 0\n");
    s
}

/// debian/copyright (machine-readable): the module is a work derived from Linux.
pub fn copyright(input: &Input<'_>, epoch: i64) -> String {
    let pkg = package_name(input.module, input.release);
    format!(
        "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\nUpstream-Name: {pkg}\nComment: The livepatch module was built by klpgen from the sources of the Linux\n kernel release {r} and the patches it names; it is a work derived from Linux.\n\nFiles: *\nCopyright: 1991-{year} Linus Torvalds and the authors of the Linux kernel;\n the authors of the patches\nLicense: GPL-2\n\nLicense: GPL-2\n This program is free software; you can redistribute it and/or modify it under\n the terms of the GNU General Public License version 2 as published by the Free\n Software Foundation.\n .\n On Debian systems, the full text of the GNU General Public License version 2\n can be found in the file `/usr/share/common-licenses/GPL-2'.\n",
        r = input.release,
        year = 1970 + epoch.div_euclid(86400 * 36525 / 100),
    )
}

/// The changelog entry (`changelog.Debian`, gzipped in the package).
pub fn changelog(input: &Input<'_>, opts: &Options, epoch: i64) -> String {
    let entry = format!(
        "Livepatch {}, {} (klpgen {}).",
        input.module,
        input.description,
        env!("CARGO_PKG_VERSION")
    );
    format!(
        "{} ({}) unstable; urgency=medium\n\n  * {}\n\n -- {}  {}\n",
        package_name(input.module, input.release),
        opts.version,
        wrap(&entry, 74).join("\n    "),
        opts.maintainer,
        rfc2822(epoch)
    )
}

/// `Wed, 02 Dec 2026 01:20:00 +0000`.
fn rfc2822(epoch: i64) -> String {
    let days = epoch.div_euclid(86400);
    let secs = epoch.rem_euclid(86400);
    // Days since 1970-01-01 to a civil date (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    const WEEKDAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    format!(
        "{}, {d:02} {} {y} {:02}:{:02}:{:02} +0000",
        WEEKDAYS[days.rem_euclid(7) as usize],
        MONTHS[(m - 1) as usize],
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

/// The package's time: `SOURCE_DATE_EPOCH` (reproducible builds), else now.
fn epoch() -> i64 {
    std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs() as i64)
        })
}

fn gzip(bytes: &[u8]) -> Result<Vec<u8>> {
    let mut e = flate2::GzBuilder::new()
        .mtime(0)
        .write(Vec::new(), flate2::Compression::best());
    e.write_all(bytes)?;
    Ok(e.finish()?)
}

fn put(root: &Path, rel: &str, bytes: &[u8], mode: u32) -> Result<()> {
    let p = root.join(rel);
    if let Some(d) = p.parent() {
        fs::create_dir_all(d).with_context(|| format!("cannot create {}", d.display()))?;
    }
    fs::write(&p, bytes).with_context(|| format!("cannot write {}", p.display()))?;
    fs::set_permissions(&p, fs::Permissions::from_mode(mode))?;
    Ok(())
}

/// Stage the package's tree and build it with `dpkg-deb`.
pub fn write(input: &Input<'_>, opts: &Options, intr: &Interrupt) -> Result<Written> {
    let pkg = package_name(input.module, input.release);
    let file = format!(
        "{pkg}_{}_{}.deb",
        opts.version
            .split_once(':')
            .map_or(opts.version.as_str(), |(_, v)| v),
        input.arch
    );
    fs::create_dir_all(&input.out_dir)
        .with_context(|| format!("cannot create {}", input.out_dir.display()))?;
    let stage = tempfile::Builder::new()
        .prefix(".klpgen-deb-")
        .tempdir_in(&input.out_dir)
        .context("creating the package's staging directory")?;
    let root = stage.path().join("root");
    let epoch = epoch();
    let ko = fs::read(input.ko).with_context(|| format!("cannot read {}", input.ko.display()))?;
    let doc = format!("usr/share/doc/{pkg}");
    let unit_rel = format!("lib/systemd/system/{pkg}.service");
    let files: Vec<(String, Vec<u8>)> = vec![
        (
            format!("lib/modules/{}/updates/{}.ko", input.release, input.module),
            ko,
        ),
        (unit_rel.clone(), unit(input).into_bytes()),
        (format!("{doc}/klpgen-report.json"), input.report.to_vec()),
        (
            format!("{doc}/copyright"),
            copyright(input, epoch).into_bytes(),
        ),
        (
            format!("{doc}/changelog.Debian.gz"),
            gzip(changelog(input, opts, epoch).as_bytes())?,
        ),
    ];
    for (rel, bytes) in &files {
        put(&root, rel, bytes, 0o644)?;
    }
    // Enabled by the package itself, as `systemctl enable` would (its [Install] section).
    let wants = root.join("lib/systemd/system/sysinit.target.wants");
    fs::create_dir_all(&wants)?;
    std::os::unix::fs::symlink(
        format!("../{pkg}.service"),
        wants.join(format!("{pkg}.service")),
    )?;
    let kib: u64 = files
        .iter()
        .map(|(_, b)| (b.len() as u64).div_ceil(1024))
        .sum();
    put(
        &root,
        "DEBIAN/control",
        control(input, opts, kib).as_bytes(),
        0o644,
    )?;
    for (name, text) in [
        ("postinst", postinst(input)),
        ("prerm", prerm(input)),
        ("postrm", postrm(input)),
    ] {
        put(&root, &format!("DEBIAN/{name}"), text.as_bytes(), 0o755)?;
    }
    // Directories as a package has them, whatever the umask; every file and directory of the
    // package's time, so that a SOURCE_DATE_EPOCH gives the same package byte for byte.
    set_dir_modes(&root)?;
    set_times(&root, epoch)?;
    let out = input.out_dir.join(&file);
    let o = process::run(
        "dpkg-deb",
        [
            "--root-owner-group".as_ref(),
            "-Zxz".as_ref(),
            "--build".as_ref(),
            root.as_os_str(),
            out.as_os_str(),
        ],
        None,
        &[],
        None,
        intr,
    )?;
    if !o.success {
        bail!(
            "dpkg-deb could not build {}: {}",
            out.display(),
            o.stderr.trim()
        );
    }
    Ok(Written {
        path: out,
        package: pkg,
        version: opts.version.clone(),
        depends: depends(input),
    })
}

fn set_times(dir: &Path, epoch: i64) -> Result<()> {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(epoch.max(0) as u64);
    for e in fs::read_dir(dir)? {
        let e = e?;
        let ft = e.file_type()?;
        if ft.is_dir() {
            set_times(&e.path(), epoch)?;
        }
        if !ft.is_symlink() {
            fs::File::open(e.path())?.set_modified(t)?;
        }
    }
    fs::File::open(dir)?.set_modified(t)?;
    Ok(())
}

fn set_dir_modes(dir: &Path) -> Result<()> {
    fs::set_permissions(dir, fs::Permissions::from_mode(0o755))?;
    for e in fs::read_dir(dir)? {
        let e = e?;
        if e.file_type()?.is_dir() {
            set_dir_modes(&e.path())?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(dist: Option<(&'static str, &'static str)>) -> Input<'static> {
        Input {
            module: "livepatch-fix_proc",
            ko: Path::new("/nonexistent.ko"),
            release: "6.1.0-57-cloud-amd64",
            arch: "amd64",
            distribution: dist,
            description: "livepatch built by klpgen from fix.patch",
            report: b"{}",
            out_dir: PathBuf::from("/nonexistent"),
        }
    }

    fn opts() -> Options {
        Options {
            kind: super::super::Kind::Deb,
            version: "1.0-1".into(),
            maintainer: "A B <a@example.org>".into(),
        }
    }

    #[test]
    fn names_versions_and_maintainers() {
        assert_eq!(
            package_name("livepatch-fix_proc", "6.1.0-57-cloud-amd64"),
            "livepatch-fix-proc-6.1.0-57-cloud-amd64"
        );
        assert_eq!(
            package_name("livepatch-X", "6.12.0_Test"),
            "livepatch-x-6.12.0-test"
        );
        for ok in ["1.0-1", "0~abc123-1", "2:1.0", "20261202"] {
            check_version(ok).unwrap();
        }
        for bad in ["", "v1", "1.0-", "1 0", "x:1", "1_0"] {
            assert!(check_version(bad).is_err(), "{bad:?}");
        }
        check_maintainer("A B <a@example.org>").unwrap();
        for bad in ["A B", "<a@example.org>", "A <ab>"] {
            assert!(check_maintainer(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_distribution_target_depends_on_its_exact_image() {
        let c = control(&input(Some(("debian", "6.1.192-3"))), &opts(), 12);
        assert!(c.contains("\nDepends: kmod, linux-image-6.1.0-57-cloud-amd64 (= 6.1.192-3) | linux-image-6.1.0-57-cloud-amd64-unsigned (= 6.1.192-3)\n"), "{c}");
        assert!(c.starts_with("Package: livepatch-fix-proc-6.1.0-57-cloud-amd64\nVersion: 1.0-1\nArchitecture: amd64\n"), "{c}");
        assert!(c.contains("Installed-Size: 12\n"));
        // The extended description's lines fit a terminal.
        assert!(
            c.lines()
                .filter(|l| l.starts_with(' '))
                .all(|l| l.len() <= 80),
            "{c}"
        );
        let own = control(&input(None), &opts(), 12);
        assert!(own.contains("\nDepends: kmod\n"), "{own}");
        let words = own.split_whitespace().collect::<Vec<_>>().join(" ");
        assert!(words.contains("so it depends on none"), "{own}");
    }

    #[test]
    fn the_unit_loads_on_its_release_only() {
        let u = unit(&input(None));
        assert!(
            u.contains("\nConditionKernelVersion=6.1.0-57-cloud-amd64\n"),
            "{u}"
        );
        assert!(
            u.contains("\nExecStart=/sbin/modprobe livepatch-fix_proc\n"),
            "{u}"
        );
        assert!(u.contains("\nWantedBy=sysinit.target\n"), "{u}");
        let s = prerm(&input(None));
        assert!(
            s.contains("patch=\"$sys/kernel/livepatch/livepatch_fix_proc\""),
            "{s}"
        );
        assert!(s.contains("rmmod \"livepatch_fix_proc\""), "{s}");
    }

    #[test]
    fn the_changelog_is_wrapped() {
        let c = changelog(&input(None), &opts(), 0);
        assert!(c.lines().all(|l| l.len() <= 80), "{c}");
        assert!(
            c.ends_with(" -- A B <a@example.org>  Thu, 01 Jan 1970 00:00:00 +0000\n"),
            "{c}"
        );
        assert!(copyright(&input(None), 1_795_000_000).contains("Copyright: 1991-2026 "));
    }

    #[test]
    fn dates_are_rfc2822() {
        assert_eq!(rfc2822(0), "Thu, 01 Jan 1970 00:00:00 +0000");
        assert_eq!(rfc2822(1_795_000_000), "Wed, 18 Nov 2026 11:06:40 +0000");
        assert_eq!(rfc2822(951_782_400), "Tue, 29 Feb 2000 00:00:00 +0000");
    }
}
