//! Builds (or reuses) the cached test kernel and tells where its source and build trees are.
//! The test kernel is Debian's linux-source-6.12 with tinyconfig plus
//! `tests/e2e/kernel.fragment`; a variant (`tests/e2e/kernel-<variant>.fragment`, merged after
//! the main fragment) is built and cached separately, such as `noibt` (objtool per object).
//! A cross kernel (`ppc64le`, `s390x`: [`CROSS`]) is tinyconfig plus
//! `tests/e2e/kernel-cross.fragment` (the machine-neutral part) and
//! `tests/e2e/kernel-<arch>.fragment`, built with `ARCH=... CROSS_COMPILE=...` by Debian's cross
//! compiler, cached the same way under its own key.
//! The cache is `$XDG_CACHE_HOME/klpgen-dev/` (by default `~/.cache/klpgen-dev/`).

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

/// A machine the test kernel is cross-built for (its name is the variant name).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cross {
    /// The variant name: `ppc64le`, `s390x`.
    pub name: &'static str,
    /// kbuild's `ARCH=`.
    pub karch: &'static str,
    /// kbuild's `CROSS_COMPILE=` (Debian's cross compiler package gcc-<triplet>).
    pub cross_compile: &'static str,
    /// The image qemu boots, relative to the build directory.
    pub image: &'static str,
    /// The make targets that build it (and the modules).
    pub targets: &'static [&'static str],
    /// Debian's architecture name (for the guest's static busybox).
    pub debarch: &'static str,
}

/// The cross test kernels (Linux 6.12 livepatches these machines; research in
/// /work/notes/cross/NOTES.md).
pub const CROSS: &[Cross] = &[
    Cross {
        name: "ppc64le",
        karch: "powerpc",
        cross_compile: "powerpc64le-linux-gnu-",
        image: "vmlinux",
        targets: &["vmlinux", "modules"],
        debarch: "ppc64el",
    },
    Cross {
        name: "s390x",
        karch: "s390",
        cross_compile: "s390x-linux-gnu-",
        image: "arch/s390/boot/bzImage",
        targets: &["bzImage", "modules"],
        debarch: "s390x",
    },
];

/// The cross machine a variant name stands for, if it is one.
pub fn cross(variant: Option<&str>) -> Option<&'static Cross> {
    variant.and_then(|v| CROSS.iter().find(|c| c.name == v))
}

/// Paths of the cached test kernel.
#[derive(Debug, Clone)]
pub struct Kernel {
    /// `.../klpgen-dev/kernel-<key>/`
    pub cache: PathBuf,
    /// Kernel source tree (the extracted tarball).
    pub src: PathBuf,
    /// `O=` build directory.
    pub build: PathBuf,
    /// The machine of a cross-built kernel; `None` for the host's (x86-64).
    pub cross: Option<&'static Cross>,
}

impl Kernel {
    /// The bootable image.
    pub fn bzimage(&self) -> PathBuf {
        match self.cross {
            Some(c) => self.build.join(c.image),
            None => self.build.join("arch/x86/boot/bzImage"),
        }
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

/// The fragments of a kernel variant: the main fragment, then (for a named variant) the
/// overlay `tests/e2e/kernel-<variant>.fragment` merged after it (its lines win).
pub fn fragment_paths(variant: Option<&str>) -> Vec<PathBuf> {
    if let Some(c) = cross(variant) {
        return vec![
            util::repo_root().join("tests/e2e/kernel-cross.fragment"),
            util::repo_root().join(format!("tests/e2e/kernel-{}.fragment", c.name)),
        ];
    }
    let mut v = vec![fragment_path()];
    if let Some(name) = variant {
        v.push(util::repo_root().join(format!("tests/e2e/kernel-{name}.fragment")));
    }
    v
}

pub fn cache_base() -> PathBuf {
    match std::env::var_os("XDG_CACHE_HOME") {
        Some(d) if !d.is_empty() => PathBuf::from(d),
        _ => util::home_dir().join(".cache"),
    }
    .join("klpgen-dev")
}

/// Computes where the kernel for the current tarball, fragment and recipe lives.
pub fn locate() -> Result<Kernel> {
    locate_variant(None)
}

/// Like [`locate`], for the main kernel (`None`) or a variant with an overlay fragment. The
/// main kernel's key is what it always was; a variant's key also covers its overlay.
pub fn locate_variant(variant: Option<&str>) -> Result<Kernel> {
    let meta = fs::metadata(TARBALL).with_context(|| {
        format!("{TARBALL} is missing (package linux-source-6.12); run `cargo xtask setup`")
    })?;
    let mut fragment = Vec::new();
    for (i, p) in fragment_paths(variant).iter().enumerate() {
        if i > 0 {
            fragment.extend_from_slice(b"\0overlay\0");
        }
        fragment.extend(fs::read(p).with_context(|| format!("cannot read {}", p.display()))?);
    }
    let mut h = Sha256::new();
    h.update(RECIPE_VERSION.as_bytes());
    h.update(b"\0");
    h.update(meta.len().to_le_bytes());
    h.update(meta.mtime().to_le_bytes());
    h.update(meta.mtime_nsec().to_le_bytes());
    h.update(b"\0");
    h.update(&fragment);
    let cross = cross(variant);
    if let Some(c) = cross {
        // The compiler is an input as well: another cross gcc is another kernel.
        h.update(b"\0cross\0");
        h.update(c.name.as_bytes());
        h.update(cross_gcc_version(c).as_bytes());
    }
    let digest = h.finalize();
    let key: String = digest.iter().take(8).map(|b| format!("{b:02x}")).collect();
    let cache = match cross {
        Some(c) => cache_base().join(format!("kernel-{}-{key}", c.name)),
        None => cache_base().join(format!("kernel-{key}")),
    };
    Ok(Kernel {
        src: cache.join("src").join(TOP_DIR),
        build: cache.join("build"),
        cache,
        cross,
    })
}

/// Every `CONFIG_X=y`, `CONFIG_X=m` and `# CONFIG_X is not set` line of the fragments, the
/// last fragment that names an option winning (as merge_config.sh does).
fn required_options<'a>(fragments: &[&'a str]) -> Vec<&'a str> {
    let mut out: Vec<&'a str> = Vec::new();
    for frag in fragments {
        for l in frag.lines().map(str::trim) {
            let Some(name) = option_name(l) else { continue };
            if !(l.ends_with("=y") || l.ends_with("=m") || l.ends_with(" is not set")) {
                continue;
            }
            out.retain(|o| option_name(o) != Some(name));
            out.push(l);
        }
    }
    out
}

/// `CONFIG_X` of `CONFIG_X=...` or `# CONFIG_X is not set`.
fn option_name(line: &str) -> Option<&str> {
    if let Some(rest) = line.strip_prefix("# ") {
        return rest
            .strip_suffix(" is not set")
            .filter(|n| n.starts_with("CONFIG_"));
    }
    line.starts_with("CONFIG_")
        .then(|| line.split('=').next())
        .flatten()
}

/// Returns the options of `required` that `config` does not set as required (an option
/// required unset may be absent from `config` altogether).
fn missing_options<'a>(required: &[&'a str], config: &str) -> Vec<&'a str> {
    let set: std::collections::HashSet<&str> = config.lines().map(str::trim).collect();
    required
        .iter()
        .copied()
        .filter(|o| {
            if o.ends_with(" is not set") {
                let name = option_name(o).unwrap_or(o);
                set.iter()
                    .any(|l| option_name(l) == Some(name) && !l.ends_with(" is not set"))
            } else {
                !set.contains(o)
            }
        })
        .collect()
}

/// `<cross>gcc --version`'s first line, or "" when the compiler is missing (the build then
/// fails naming the package).
fn cross_gcc_version(c: &Cross) -> String {
    Command::new(format!("{}gcc", c.cross_compile))
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.lines().next().map(str::to_string))
        .unwrap_or_default()
}

fn make(k: &Kernel) -> Command {
    let mut c = Command::new("make");
    c.arg("-C")
        .arg(&k.src)
        .arg(format!("O={}", k.build.display()));
    match k.cross {
        // The kernel's Rust support does not cover these machines in 6.12: no RUSTC.
        Some(x) => {
            c.arg(format!("ARCH={}", x.karch))
                .arg(format!("CROSS_COMPILE={}", x.cross_compile));
        }
        None => {
            c.arg(format!("RUSTC={KERNEL_RUSTC}"))
                .arg(format!("HOSTRUSTC={KERNEL_RUSTC}"));
        }
    }
    c.env("PATH", util::path_with_cargo_bin());
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
    ensure_variant(None)
}

/// Like [`ensure`], for the main kernel or a variant (see [`locate_variant`]).
pub fn ensure_variant(variant: Option<&str>) -> Result<Kernel> {
    let k = locate_variant(variant)?;
    if k.is_built() {
        return Ok(k);
    }
    if let Some(c) = k.cross {
        if util::which(&format!("{}gcc", c.cross_compile)).is_none() {
            bail!(
                "{}gcc is missing (Debian package gcc-{}); run `cargo xtask setup`",
                c.cross_compile,
                c.cross_compile.trim_end_matches('-')
            );
        }
    }
    let started = std::time::Instant::now();
    eprintln!("building the test kernel in {}", k.cache.display());
    fs::create_dir_all(&k.cache)?;
    fs::write(k.log(), "")?;
    extract(&k)?;
    fs::create_dir_all(&k.build)?;
    let log = k.log();
    let fragments = fragment_paths(variant);

    util::run_logged(make(&k).arg("tinyconfig"), &log, "tinyconfig")?;
    let mut merge = Command::new(k.src.join("scripts/kconfig/merge_config.sh"));
    if let Some(c) = k.cross {
        // merge_config.sh runs make alldefconfig itself: it needs the machine as well.
        merge
            .env("ARCH", c.karch)
            .env("CROSS_COMPILE", c.cross_compile);
    }
    merge
        .current_dir(&k.build)
        .arg("-m")
        .arg("-O")
        .arg(&k.build)
        .arg(k.build.join(".config"))
        .args(&fragments);
    util::run_logged(&mut merge, &log, "merge_config")?;
    util::run_logged(make(&k).arg("olddefconfig"), &log, "olddefconfig")?;

    let mut texts = Vec::new();
    for f in &fragments {
        texts.push(fs::read_to_string(f)?);
    }
    let texts: Vec<&str> = texts.iter().map(String::as_str).collect();
    let config = fs::read_to_string(k.build.join(".config"))?;
    let missing = missing_options(&required_options(&texts), &config);
    if !missing.is_empty() {
        bail!(
            "the kernel config does not set {} (dependencies not met?); see {}",
            missing.join(", "),
            k.build.join(".config").display()
        );
    }

    let jobs = std::thread::available_parallelism().map_or(1, |n| n.get());
    let targets: &[&str] = match k.cross {
        Some(c) => c.targets,
        None => &["bzImage", "modules"],
    };
    util::run_logged(
        make(&k).arg(format!("-j{jobs}")).args(targets),
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

/// `cargo xtask kernel [VARIANT]`: build or reuse, then print the paths.
pub fn cmd_kernel(variant: Option<&str>) -> Result<()> {
    let k = ensure_variant(variant)?;
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
        let req = required_options(&[frag]);
        assert_eq!(
            req,
            vec![
                "CONFIG_A=y",
                "CONFIG_B=y",
                "CONFIG_C=m",
                "# CONFIG_D is not set"
            ]
        );
        let cfg = "CONFIG_A=y\n# CONFIG_B is not set\nCONFIG_C=y\nCONFIG_D=y\n";
        assert_eq!(
            missing_options(&req, cfg),
            vec!["CONFIG_B=y", "CONFIG_C=m", "# CONFIG_D is not set"]
        );
        assert!(missing_options(&req, "CONFIG_B=y\nCONFIG_C=m\nCONFIG_A=y\n").is_empty());
    }

    #[test]
    fn overlay_fragment_wins() {
        let main = "CONFIG_A=y\nCONFIG_IBT=y\n";
        let overlay = "# CONFIG_IBT is not set\n";
        let req = required_options(&[main, overlay]);
        assert_eq!(req, vec!["CONFIG_A=y", "# CONFIG_IBT is not set"]);
        assert!(missing_options(&req, "CONFIG_A=y\n# CONFIG_IBT is not set\n").is_empty());
        assert_eq!(
            missing_options(&req, "CONFIG_A=y\nCONFIG_IBT=y\n"),
            vec!["# CONFIG_IBT is not set"]
        );
    }
}
