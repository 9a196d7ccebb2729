//! A target whose parts come from different builds, on the real test kernel: a copy of its
//! vmlinux with another release in `linux_banner`, its Module.symvers without one export, and
//! its sources with another SUBLEVEL in the Makefile. `klpgen build` must refuse each before
//! any compile work (exit 2, the `target.*-mismatch` key, both values, an untouched cache),
//! `klpgen diff --symtab --symvers` the Module.symvers; the e2e cases run `klpgen check` on
//! their modules against the doctored vmlinux and Module.symvers too. Where the dev cache holds
//! the pinned Debian package sets (`debian::TARGETS`: two cloud-amd64 ABIs and the generic
//! amd64 flavour of the newest; a full `cargo xtask e2e` fetches them first), [`check_debian`] mixes their real parts the same way (another ABI's vmlinux, another
//! flavour's headers, sources of another version, modules of another release). Part of `cargo
//! xtask e2e`.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{bail, Context, Result};

use crate::kernel::Kernel;
use crate::util;

/// The doctored copies (under `target/e2e/mismatch/`).
pub struct Doctored {
    /// vmlinux with another release in its banner, and that release.
    pub vmlinux: PathBuf,
    pub release: String,
    /// Module.symvers without one vmlinux export, and that export.
    pub symvers: PathBuf,
    pub dropped: String,
    /// A build directory like the test kernel's but with that Module.symvers.
    build: PathBuf,
    /// A source tree like the test kernel's but whose Makefile says another SUBLEVEL.
    src: PathBuf,
}

/// `release` with its last character changed (same length).
pub fn other_release(release: &str) -> String {
    let mut chars: Vec<char> = release.chars().collect();
    if let Some(last) = chars.last_mut() {
        *last = match last.to_digit(10) {
            Some(d) => char::from_digit((d + 1) % 10, 10).unwrap_or('x'),
            None if *last == 'x' => 'y',
            None => 'x',
        };
    }
    chars.into_iter().collect()
}

/// `bytes` with every `from` replaced by `to` (same length); the number replaced.
fn replace_all(bytes: &mut [u8], from: &[u8], to: &[u8]) -> usize {
    assert_eq!(from.len(), to.len());
    let mut n = 0;
    let mut i = 0;
    while i + from.len() <= bytes.len() {
        if bytes[i..].starts_with(from) {
            bytes[i..i + to.len()].copy_from_slice(to);
            n += 1;
            i += from.len();
        } else {
            i += 1;
        }
    }
    n
}

fn symlink(target: &Path, link: &Path) -> Result<()> {
    if fs::symlink_metadata(link).is_ok() {
        fs::remove_file(link)?;
    }
    std::os::unix::fs::symlink(target, link)
        .with_context(|| format!("cannot link {} to {}", link.display(), target.display()))
}

pub fn prepare(k: &Kernel, dir: &Path) -> Result<Doctored> {
    fs::create_dir_all(dir)?;
    let release = fs::read_to_string(k.build.join("include/config/kernel.release"))?
        .trim()
        .to_string();
    let other = other_release(&release);
    let mut vm = fs::read(k.build.join("vmlinux"))?;
    let n = replace_all(
        &mut vm,
        format!("Linux version {release} ").as_bytes(),
        format!("Linux version {other} ").as_bytes(),
    );
    if n == 0 {
        bail!("the test kernel's vmlinux has no banner for {release}");
    }
    let vmlinux = dir.join("vmlinux-other-release");
    fs::write(&vmlinux, &vm)?;
    drop(vm);

    let text = fs::read_to_string(k.build.join("Module.symvers"))?;
    let lines: Vec<&str> = text.lines().collect();
    let victim = lines
        .iter()
        .position(|l| l.split('\t').nth(2) == Some("vmlinux"))
        .context("Module.symvers has no vmlinux export")?;
    let dropped = lines[victim].split('\t').nth(1).unwrap_or("").to_string();
    let kept: String = lines
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != victim)
        .map(|(_, l)| format!("{l}\n"))
        .collect();
    let build = dir.join("build-other-symvers");
    fs::create_dir_all(&build)?;
    let symvers = build.join("Module.symvers");
    fs::write(&symvers, kept)?;
    for f in [".config", "vmlinux", "include"] {
        symlink(&k.build.join(f), &build.join(f))?;
    }

    let src = dir.join("src-other-version");
    fs::create_dir_all(&src)?;
    let makefile = fs::read_to_string(k.src.join("Makefile"))?;
    let mut changed = false;
    let doctored: String = makefile
        .lines()
        .map(|l| match l.split_once('=') {
            Some((key, v)) if key.trim() == "SUBLEVEL" && !changed => {
                changed = true;
                let n: u64 = v.trim().parse().unwrap_or(0);
                format!("SUBLEVEL = {}\n", n + 1)
            }
            _ => format!("{l}\n"),
        })
        .collect();
    if !changed {
        bail!("the test kernel's Makefile has no SUBLEVEL");
    }
    fs::write(src.join("Makefile"), doctored)?;
    symlink(&k.src.join("kernel"), &src.join("kernel"))?;
    Ok(Doctored {
        vmlinux,
        release: other,
        symvers,
        dropped,
        build,
        src,
    })
}

/// A build expected to be refused: (key, sources, build directory, --vmlinux, what the
/// message must say).
type Refusal<'a> = (&'a str, &'a Path, &'a Path, Option<&'a Path>, Vec<String>);

/// Whether a directory holds anything.
fn has_entries(dir: &Path) -> bool {
    fs::read_dir(dir).is_ok_and(|mut d| d.next().is_some())
}

/// `klpgen build` refusals and the `klpgen diff` one; a summary, or an error saying what
/// went wrong.
pub fn check(klpgen: &Path, k: &Kernel, d: &Doctored, dir: &Path) -> Result<String> {
    let release = fs::read_to_string(k.build.join("include/config/kernel.release"))?
        .trim()
        .to_string();
    let patch = util::repo_root().join("examples/proc-version.patch");
    let cache = dir.join("cache");
    let out = dir.join("out");
    let cases: [Refusal<'_>; 3] = [
        (
            "target.vmlinux-mismatch",
            &k.src,
            &k.build,
            Some(&d.vmlinux),
            vec![
                format!("is kernel {}", d.release),
                format!("target build is {release}"),
            ],
        ),
        (
            "target.symvers-mismatch",
            &k.src,
            &d.build,
            None,
            vec![format!("are not in it: {}", d.dropped)],
        ),
        (
            "target.source-mismatch",
            &d.src,
            &k.build,
            None,
            vec![format!("the target build is {release}")],
        ),
    ];
    for (key, src, build, vmlinux, wants) in &cases {
        for p in [&cache, &out] {
            if p.exists() {
                fs::remove_dir_all(p)?;
            }
        }
        let mut c = Command::new(klpgen);
        c.arg("build")
            .arg("--sourcedir")
            .arg(src)
            .arg("--builddir")
            .arg(build)
            .arg("-o")
            .arg(&out)
            .env("KLPGEN_CACHE_DIR", &cache)
            .env("PATH", util::path_with_cargo_bin())
            .stdin(Stdio::null());
        if let Some(v) = vmlinux {
            c.arg("--vmlinux").arg(v);
        }
        c.arg(&patch);
        let start = Instant::now();
        let o = c
            .output()
            .with_context(|| format!("cannot run `{}`", util::display(&c)))?;
        let err = String::from_utf8_lossy(&o.stderr).into_owned();
        let secs = start.elapsed().as_secs_f64();
        if o.status.code() != Some(2) || !err.contains(&format!("[{key}]")) {
            bail!(
                "{key}: expected exit 2 with [{key}], got {:?}:\n{}",
                o.status.code(),
                util::indent(&err)
            );
        }
        if let Some(w) = wants.iter().find(|w| !err.contains(w.as_str())) {
            bail!(
                "{key}: the message does not say {w:?}:\n{}",
                util::indent(&err)
            );
        }
        if has_entries(&cache) || out.exists() {
            bail!("{key}: the refused run wrote into its cache or output directory");
        }
        eprintln!("mismatch: {key} refused in {secs:.1}s before any compile work");
    }
    // klpgen diff with --symtab and a Module.symvers of another build.
    let obj = k.build.join("fs/proc/version.o");
    let diff = |symvers: &Path| -> Result<(Option<i32>, String)> {
        let o = Command::new(klpgen)
            .arg("diff")
            .arg(&obj)
            .arg(&obj)
            .arg("--symtab")
            .arg(k.build.join("vmlinux"))
            .arg("--symvers")
            .arg(symvers)
            .stdin(Stdio::null())
            .output()?;
        Ok((
            o.status.code(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        ))
    };
    let (code, err) = diff(&d.symvers)?;
    if code != Some(2) || !err.contains("[target.symvers-mismatch]") {
        bail!(
            "klpgen diff with another build's Module.symvers: exit {code:?}:\n{}",
            util::indent(&err)
        );
    }
    let (code, err) = diff(&k.build.join("Module.symvers"))?;
    if code != Some(3) {
        bail!(
            "klpgen diff with the build's own Module.symvers: exit {code:?}, expected 3 (no change):\n{}",
            util::indent(&err)
        );
    }
    Ok(format!(
        "{} target mismatches refused by klpgen build, 1 by klpgen diff",
        cases.len()
    ))
}

/// A mixed Debian target: (what, keys, sources, headers, vmlinux, modules, what the message
/// must say).
type DebianCase<'a> = (
    &'a str,
    &'a [&'a str],
    &'a Path,
    PathBuf,
    PathBuf,
    PathBuf,
    Vec<String>,
);

/// Debian's parts mixed across the pinned package sets (`debian.rs`, unpacked in
/// `~/.cache/klpgen-dev/debian/` by `cargo xtask setup`):
/// each must be refused before any work, with the key, and the remedy naming the packages of
/// the headers' kernel. None when the package sets are not there.
pub fn check_debian(klpgen: &Path, dir: &Path) -> Result<Option<String>> {
    use crate::debian;
    // The newest cloud-amd64 ABI, an older one, the generic flavour of the newest (the pins
    // of debian::TARGETS, where `cargo xtask setup` put them).
    let new = debian::locate(debian::target("cloud")?);
    let old = debian::locate(debian::target("cloud-older")?);
    let generic = debian::locate(debian::target("amd64")?);
    if ![&new, &old, &generic].iter().all(|s| s.is_complete()) {
        return Ok(None);
    }
    let (r_new, r_old, v_new) = (new.release(), old.release(), new.target.version);
    let (src_new, src_old) = (new.source(), old.source());
    let cases: [DebianCase<'_>; 4] = [
        (
            "another ABI's vmlinux",
            &["target.vmlinux-mismatch"],
            &src_new,
            new.headers(),
            old.vmlinux(),
            new.modules(),
            vec![
                format!("is kernel {r_old}"),
                format!("linux-image-{r_new}-dbg={v_new}"),
            ],
        ),
        (
            "another flavour's headers",
            &["target.vmlinux-mismatch", "target.symvers-mismatch"],
            &src_new,
            generic.headers(),
            new.vmlinux(),
            new.modules(),
            vec!["CRCs disagree".into()],
        ),
        (
            "sources of another version",
            &["target.source-mismatch"],
            &src_old,
            new.headers(),
            new.vmlinux(),
            new.modules(),
            vec![format!("linux-source-6.1={v_new}")],
        ),
        (
            "modules of another release",
            &["target.module-mismatch"],
            &src_new,
            new.headers(),
            new.vmlinux(),
            old.modules(),
            vec![format!("linux-image-{r_new}-unsigned={v_new}")],
        ),
    ];
    let patch = util::repo_root().join("examples/proc-version.patch");
    let (cache, out) = (dir.join("cache"), dir.join("out"));
    for (what, keys, src, build, vm, mods, wants) in &cases {
        for p in [&cache, &out] {
            if p.exists() {
                fs::remove_dir_all(p)?;
            }
        }
        let mut c = Command::new(klpgen);
        c.arg("build")
            .arg("--sourcedir")
            .arg(src)
            .arg("--builddir")
            .arg(build)
            .arg("--vmlinux")
            .arg(vm)
            .arg("--modules")
            .arg(mods)
            .arg("-o")
            .arg(&out)
            .arg(&patch)
            .env("KLPGEN_CACHE_DIR", &cache)
            .env("PATH", util::path_with_cargo_bin())
            .stdin(Stdio::null());
        let start = Instant::now();
        let o = c
            .output()
            .with_context(|| format!("cannot run `{}`", util::display(&c)))?;
        let err = String::from_utf8_lossy(&o.stderr).into_owned();
        let missing_key = keys.iter().find(|k| !err.contains(&format!("[{k}]")));
        if o.status.code() != Some(2) || missing_key.is_some() {
            bail!(
                "Debian, {what}: expected exit 2 with {keys:?}, got {:?}:\n{}",
                o.status.code(),
                util::indent(&err)
            );
        }
        if let Some(w) = wants.iter().find(|w| !err.contains(w.as_str())) {
            bail!(
                "Debian, {what}: the message does not say {w:?}:\n{}",
                util::indent(&err)
            );
        }
        if has_entries(&cache) || out.exists() {
            bail!("Debian, {what}: the refused run wrote into its cache or output directory");
        }
        eprintln!(
            "mismatch: Debian, {what}: refused in {:.1}s before any compile work",
            start.elapsed().as_secs_f64()
        );
    }
    Ok(Some(format!(
        "{} mismatched Debian package sets refused by klpgen build",
        cases.len()
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn releases_and_replacement() {
        assert_eq!(other_release("6.12.117"), "6.12.118");
        assert_eq!(other_release("6.12.119"), "6.12.110");
        assert_eq!(other_release("6.12.0-amd64"), "6.12.0-amd65");
        assert_eq!(other_release("6.1-rcx"), "6.1-rcy");
        let mut b = b"ab Linux version 1 x Linux version 1 ".to_vec();
        assert_eq!(replace_all(&mut b, b"version 1", b"version 2"), 2);
        assert_eq!(&b, b"ab Linux version 2 x Linux version 2 ");
    }
}
