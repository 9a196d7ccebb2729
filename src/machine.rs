//! The target's machine for the programs klpgen runs on its behalf: kbuild's `ARCH=` and
//! `CROSS_COMPILE=`, and the binutils it links with (`<CROSS_COMPILE>ld`). A target built for
//! another machine than the one klpgen runs on (a ppc64le or s390x kernel built on x86-64) is
//! built the same way, with the target's cross toolchain.
//!
//! `ARCH` is the kbuild name of the machine the target's `.config` names
//! (`elfdiff::arch::Arch::kbuild_arch`); `--arch` or the environment's `ARCH` may name it too,
//! and must agree. `CROSS_COMPILE` is, in this order: `--cross-compile`, the environment's
//! `CROSS_COMPILE` (as kbuild itself reads it), the prefix of the compiler the target was built
//! with (`CONFIG_CC_VERSION_TEXT`, `powerpc64le-linux-gnu-gcc (Debian 12.2.0-14) 12.2.0`), else
//! Debian's name of the machine's cross toolchain (`Arch::cross_compile`). On the target's own
//! machine, without a flag or environment, kbuild runs as always: no `ARCH`, no prefix.

use std::sync::OnceLock;

use anyhow::{bail, Result};

use crate::kernel::Tree;

/// How kbuild and the binutils are run for the target.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Toolchain {
    /// `ARCH=` for kbuild, None on the target's own machine.
    pub arch: Option<String>,
    /// `CROSS_COMPILE=` (empty on the target's own machine).
    pub cross_compile: String,
}

static TOOLCHAIN: OnceLock<Toolchain> = OnceLock::new();

/// The toolchain for `tree`, from the flags (`--arch`, `--cross-compile`), the environment
/// and the target's configuration.
pub fn resolve(
    tree: &Tree,
    arch_flag: Option<&str>,
    cross_flag: Option<&str>,
) -> Result<Toolchain> {
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    resolve_with(
        tree,
        arch_flag,
        cross_flag,
        env("ARCH"),
        env("CROSS_COMPILE"),
    )
}

fn resolve_with(
    tree: &Tree,
    arch_flag: Option<&str>,
    cross_flag: Option<&str>,
    arch_env: Option<String>,
    cross_env: Option<String>,
) -> Result<Toolchain> {
    let Some(arch) = tree.arch() else {
        bail!(
            "{}: the configuration names no machine klpgen supports ({})",
            tree.config_path.display(),
            elfdiff::arch::supported()
        );
    };
    let karch = arch.kbuild_arch();
    for (what, given) in [
        ("--arch", arch_flag.map(str::to_string)),
        ("ARCH", arch_env.clone()),
    ] {
        if let Some(g) = given {
            // kbuild also takes the machine's 64-bit-specific names (x86_64, ppc64le...)
            // through SRCARCH; klpgen only compares the kbuild name.
            if g != karch && g != arch.host_arch() {
                bail!(
                    "{what}={g}, but the target's configuration {} is for {} (ARCH={karch})",
                    tree.config_path.display(),
                    arch.name()
                );
            }
        }
    }
    let native = std::env::consts::ARCH == arch.host_arch();
    let explicit = cross_flag
        .map(str::to_string)
        .or(cross_env)
        .filter(|c| !c.is_empty());
    let cross_compile = match explicit {
        Some(c) => c,
        None if native => String::new(),
        None => from_config(tree).unwrap_or_else(|| arch.cross_compile().to_string()),
    };
    let arch = (!native || arch_flag.is_some() || arch_env.is_some() || !cross_compile.is_empty())
        .then(|| karch.to_string());
    Ok(Toolchain {
        arch,
        cross_compile,
    })
}

/// The prefix of the target's compiler, from `CONFIG_CC_VERSION_TEXT`
/// (`"powerpc64le-linux-gnu-gcc (Debian ...) 12.2.0"`), when it names a prefixed gcc.
fn from_config(tree: &Tree) -> Option<String> {
    let text = tree.config.values.get("CONFIG_CC_VERSION_TEXT")?;
    let first = text.trim_matches('"').split_whitespace().next()?;
    let prefix = first.strip_suffix("gcc")?;
    (prefix.ends_with('-') && !prefix.contains('/')).then(|| prefix.to_string())
}

/// Use `t` for every program run on the target's behalf. Set once per run; a different
/// second one is an error.
pub fn set(t: Toolchain) -> Result<()> {
    if TOOLCHAIN.get_or_init(|| t.clone()) != &t {
        bail!("a different target toolchain was already set");
    }
    Ok(())
}

/// kbuild's `ARCH=` and `CROSS_COMPILE=` arguments (none on the target's own machine).
pub fn make_args() -> Vec<String> {
    let Some(t) = TOOLCHAIN.get() else {
        return Vec::new();
    };
    let mut v = Vec::new();
    if let Some(a) = &t.arch {
        v.push(format!("ARCH={a}"));
    }
    if !t.cross_compile.is_empty() {
        v.push(format!("CROSS_COMPILE={}", t.cross_compile));
    }
    v
}

/// A binutils program of the target's toolchain (`ld` → `powerpc64le-linux-gnu-ld`).
pub fn tool(name: &str) -> String {
    let prefix = TOOLCHAIN.get().map_or("", |t| t.cross_compile.as_str());
    format!("{prefix}{name}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn tree(config: &str) -> Tree {
        Tree::for_tests(Path::new("/src"), Path::new("/build"), config, "6.12.0")
    }

    #[test]
    fn cross_prefix_from_config_flag_env_or_default() {
        let host_is_ppc = std::env::consts::ARCH == "powerpc64";
        if host_is_ppc {
            return;
        }
        let ppc = tree(
            "CONFIG_PPC64=y\nCONFIG_CC_VERSION_TEXT=\"powerpc64le-linux-gnu-gcc (Debian 12.2.0-14) 12.2.0\"\n",
        );
        let t = resolve_with(&ppc, None, None, None, None).unwrap();
        assert_eq!(t.arch.as_deref(), Some("powerpc"));
        assert_eq!(t.cross_compile, "powerpc64le-linux-gnu-");
        let t = resolve_with(
            &ppc,
            None,
            Some("/opt/cross/bin/ppc-"),
            None,
            Some("x-".into()),
        )
        .unwrap();
        assert_eq!(t.cross_compile, "/opt/cross/bin/ppc-");
        let t = resolve_with(&ppc, None, None, None, Some("env-".into())).unwrap();
        assert_eq!(t.cross_compile, "env-");
        // A target built natively on its machine: Debian's cross toolchain here.
        let native =
            tree("CONFIG_S390=y\nCONFIG_CC_VERSION_TEXT=\"gcc (Debian 12.2.0-14) 12.2.0\"\n");
        let t = resolve_with(&native, None, None, None, None).unwrap();
        assert_eq!(
            (t.arch.as_deref(), t.cross_compile.as_str()),
            (Some("s390"), "s390x-linux-gnu-")
        );
        // --arch must agree with the configuration.
        let e = resolve_with(&ppc, Some("s390"), None, None, None).unwrap_err();
        assert!(e.to_string().contains("ARCH=powerpc"), "{e}");
        assert!(resolve_with(&ppc, Some("powerpc"), None, None, None).is_ok());
    }

    #[test]
    fn native_target_runs_kbuild_as_always() {
        let Some(arch) = elfdiff::arch::ALL
            .iter()
            .find(|a| a.host_arch() == std::env::consts::ARCH)
        else {
            return;
        };
        let t = tree(&format!("{}=y\n", arch.kernel_config()));
        assert_eq!(
            resolve_with(&t, None, None, None, None).unwrap(),
            Toolchain::default()
        );
    }
}
