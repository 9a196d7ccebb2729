//! The kernel tree and its target build: where the sources, `.config`, vmlinux and
//! Module.symvers are, whether the configuration can carry a livepatch at all, whether the
//! parts come from one build, and the structure layouts the vmlinux's DWARF gives.
//!
//! A configuration is refused naming each option it lacks ([`check_config`]: livepatch, modules,
//! `KALLSYMS_ALL`, ftrace with regs or args, sysfs, a supported machine, no trimmed exports).
//! Before any compile work, [`check_consistency`] refuses a target whose parts come from
//! different builds (`target.*-mismatch`, docs/refusals.md): the vmlinux's `linux_banner`
//! release against the build's `include/config/kernel.release`, the sources' Makefile version
//! against that release, Module.symvers against the vmlinux's `__ksymtab_<name>` exports and
//! `__crc_<name>` CRCs (every symbol, both ways), an out-of-tree module's vermagic against the
//! vmlinux. The comparisons themselves are `patchgen::target`'s.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use patchgen::target::{
    module_mismatch, module_vermagic, release_mismatch, source_mismatch, symvers_mismatch,
    KernelIdentity, Mismatch, Symvers,
};

use crate::verdict::Verdict;

/// A parsed `.config`: option → value (`y`, `m`, a number or a quoted string).
#[derive(Debug, Clone, Default)]
pub struct Config {
    pub values: HashMap<String, String>,
}

impl Config {
    pub fn parse(text: &str) -> Self {
        let values = text
            .lines()
            .filter_map(|l| l.split_once('='))
            .filter(|(k, _)| k.starts_with("CONFIG_"))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config { values }
    }
    pub fn is_set(&self, opt: &str) -> bool {
        matches!(self.values.get(opt).map(String::as_str), Some("y"))
    }
}

/// What a livepatch needs from the kernel configuration: every entry must hold.
/// Each alternative list is satisfied by any one of its options.
const REQUIRED: &[(&[&str], &str)] = &[
    (&["CONFIG_LIVEPATCH"], "the livepatch core itself"),
    (&["CONFIG_MODULES"], "a livepatch is a module"),
    (
        &["CONFIG_KALLSYMS_ALL"],
        "klp relocations resolve static functions and data through kallsyms",
    ),
    (
        &[
            "CONFIG_DYNAMIC_FTRACE_WITH_REGS",
            "CONFIG_DYNAMIC_FTRACE_WITH_ARGS",
        ],
        "livepatch redirects functions through ftrace",
    ),
    (
        &["CONFIG_SYSFS"],
        "the livepatch core is controlled through /sys/kernel/livepatch",
    ),
];

/// Refuse configurations that cannot work, naming the option.
pub fn check_config(cfg: &Config, path: &Path) -> Result<()> {
    let mut missing = Vec::new();
    for (alts, why) in REQUIRED {
        if !alts.iter().any(|o| cfg.is_set(o)) {
            missing.push(format!("  {} is not set: {why}", alts.join(" or ")));
        }
    }
    if cfg.is_set("CONFIG_TRIM_UNUSED_KSYMS") {
        missing.push(
            "  CONFIG_TRIM_UNUSED_KSYMS is set: exports a livepatch needs may have been trimmed"
                .into(),
        );
    }
    if elfdiff::arch::for_config(|o| cfg.is_set(o)).is_none() {
        let options: Vec<&str> = elfdiff::arch::ALL
            .iter()
            .map(|a| a.kernel_config())
            .collect();
        missing.push(format!(
            "  none of {} is set: klpgen supports {} targets",
            options.join(", "),
            elfdiff::arch::supported()
        ));
    }
    if !missing.is_empty() {
        bail!(
            "the kernel configuration {} cannot carry a livepatch:\n{}",
            path.display(),
            missing.join("\n")
        );
    }
    Ok(())
}

/// The paths of one kernel: sources, the target build, and its artefacts.
#[derive(Debug, Clone)]
pub struct Tree {
    pub source: PathBuf,
    pub build: PathBuf,
    pub config_path: PathBuf,
    pub config_text: String,
    pub config: Config,
    pub vmlinux: PathBuf,
    pub symvers: PathBuf,
    pub release: String,
}

impl Tree {
    /// The machine the target is built for, from its configuration (checked by
    /// [`check_config`], so a tree that passed it has one).
    pub fn arch(&self) -> Option<&'static dyn elfdiff::arch::Arch> {
        elfdiff::arch::for_config(|o| self.config.is_set(o))
    }

    /// Whether kbuild runs objtool on the linked module of this target ("delayed objtool"),
    /// and so regenerates objtool's sections for the livepatch module itself.
    pub fn delayed_objtool(&self) -> bool {
        self.arch()
            .is_some_and(|a| elfdiff::arch::delayed_objtool(a, |o| self.config.is_set(o)))
    }

    pub fn open(
        source: &Path,
        build: Option<&Path>,
        config: Option<&Path>,
        vmlinux: Option<&Path>,
    ) -> Result<Self> {
        let source = source
            .canonicalize()
            .with_context(|| format!("kernel source tree {} does not exist", source.display()))?;
        if !source.join("Makefile").is_file() || !source.join("kernel").is_dir() {
            bail!(
                "{} is not a kernel source tree (no Makefile and kernel/)",
                source.display()
            );
        }
        let build = match build {
            Some(b) => b.canonicalize().with_context(|| {
                format!("kernel build directory {} does not exist", b.display())
            })?,
            None => source.clone(),
        };
        let config_path = config.map_or_else(|| build.join(".config"), Path::to_path_buf);
        let config_text = std::fs::read_to_string(&config_path).with_context(|| {
            format!(
                "cannot read the kernel configuration {} (pass --config)",
                config_path.display()
            )
        })?;
        let config = Config::parse(&config_text);
        let vmlinux = vmlinux.map_or_else(|| build.join("vmlinux"), Path::to_path_buf);
        let symvers = build.join("Module.symvers");
        let release = std::fs::read_to_string(build.join("include/config/kernel.release"))
            .map(|s| s.trim().to_string())
            .unwrap_or_default();
        // WORKAROUND (i11b, to be dropped for i11a's distribution identity): Debian's headers
        // say the upstream version in kernel.release and the ABI release in
        // `.kernelvariables` (`override KERNELRELEASE = 6.1.0-57-cloud-amd64`).
        let release = std::fs::read_to_string(build.join(".kernelvariables"))
            .ok()
            .and_then(|t| {
                t.lines().find_map(|l| {
                    l.strip_prefix("override KERNELRELEASE = ")
                        .map(|r| r.trim().to_string())
                })
            })
            .unwrap_or(release);
        Ok(Tree {
            source,
            build,
            config_path,
            config_text,
            config,
            vmlinux,
            symvers,
            release,
        })
    }

    /// The file that names the target build's release.
    pub fn release_file(&self) -> PathBuf {
        self.build.join("include/config/kernel.release")
    }

    /// Check that the target build has what klpgen reads from it.
    pub fn check_target(&self) -> Result<()> {
        let release = self.release_file();
        for (p, what) in [
            (&self.vmlinux, "the target vmlinux (pass --vmlinux)"),
            (&self.symvers, "Module.symvers of the target build"),
            (&release, "the release of the target build"),
        ] {
            if !p.is_file() {
                bail!(
                    "{} not found: {what}; build the target kernel first",
                    p.display()
                );
            }
        }
        Ok(())
    }
}

/// The parts of the target must come from one build, checked before any compile work: the
/// vmlinux's `linux_banner` names the build's release, the source tree's Makefile its version,
/// Module.symvers lists exactly the vmlinux's exports (and their CRCs), and an out-of-tree
/// module's vermagic names the same release. Each mismatch is a refusal with a stable key
/// (`target.*-mismatch`, docs/refusals.md) naming both files and both values.
pub fn check_consistency(
    tree: &Tree,
    vmlinux: &[u8],
    symvers: &Symvers,
    oot_module: Option<(&Path, &[u8])>,
) -> Result<()> {
    let vm_label = tree.vmlinux.display().to_string();
    let id = KernelIdentity::parse(&vm_label, vmlinux)?;
    let release_label = tree.release_file().display().to_string();
    let makefile = tree.source.join("Makefile");
    let makefile_text = std::fs::read_to_string(&makefile).unwrap_or_default();
    let mut found: Vec<Mismatch> = Vec::new();
    found.extend(release_mismatch(&id, &release_label, &tree.release));
    // WORKAROUND (i11b): the sources' version against the upstream version kbuild recorded.
    let upstream = std::fs::read_to_string(tree.release_file())
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| tree.release.clone());
    found.extend(source_mismatch(
        &makefile.display().to_string(),
        &makefile_text,
        &release_label,
        &upstream,
    ));
    found.extend(symvers_mismatch(&id, &symvers.label, symvers));
    if let Some((ko, bytes)) = oot_module {
        let label = ko.display().to_string();
        let vermagic = module_vermagic(&label, bytes)?;
        found.extend(module_mismatch(
            &label,
            vermagic.as_deref(),
            &vm_label,
            id.release.as_deref(),
        ));
    }
    if found.is_empty() {
        return Ok(());
    }
    let list: Vec<String> = found.iter().map(|m| format!("\n  {m}")).collect();
    Err(Verdict::Refused(format!(
        "the target's parts come from different builds:{}",
        list.concat()
    ))
    .into())
}

/// The plan's options from the target's DWARF: entry sizes of special sections and member
/// offsets the plan needs (a target without DWARF gives none). `objtool_regenerates` is left to
/// the caller.
pub fn target_layouts(label: &str, vmlinux: &[u8]) -> elfdiff::PlanOptions {
    let mut out = elfdiff::PlanOptions::default();
    let mut wanted: Vec<&str> = elfdiff::plan::special_section_structs()
        .map(|(_, s)| s)
        .chain(elfdiff::plan::LAYOUT_MEMBERS.iter().map(|(s, _)| *s))
        .collect();
    wanted.sort_unstable();
    wanted.dedup();
    if let Ok(layouts) = elfdiff::dwarf::struct_layouts(label, vmlinux, &wanted, "") {
        for (sec, st) in elfdiff::plan::special_section_structs() {
            if let Some(l) = layouts.get(st) {
                out.entry_sizes.insert(sec.to_string(), l.size);
            }
        }
        for (st, m) in elfdiff::plan::LAYOUT_MEMBERS {
            if let Some(member) = layouts.get(*st).and_then(|l| l.member(m)) {
                out.member_offsets
                    .insert(format!("{st}.{m}"), member.offset);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_livepatch_is_named() {
        let cfg = Config::parse("CONFIG_X86_64=y\nCONFIG_MODULES=y\nCONFIG_KALLSYMS_ALL=y\nCONFIG_SYSFS=y\nCONFIG_DYNAMIC_FTRACE_WITH_ARGS=y\n# CONFIG_LIVEPATCH is not set\n");
        let err = check_config(&cfg, Path::new(".config"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("CONFIG_LIVEPATCH is not set"), "{err}");
        assert!(!err.contains("CONFIG_MODULES is"), "{err}");
    }

    #[test]
    fn unknown_machine_is_named() {
        let cfg = Config::parse("CONFIG_PPC_DUMMY=y\nCONFIG_LIVEPATCH=y\nCONFIG_MODULES=y\nCONFIG_KALLSYMS_ALL=y\nCONFIG_SYSFS=y\nCONFIG_DYNAMIC_FTRACE_WITH_ARGS=y\n");
        let err = check_config(&cfg, Path::new(".config"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("none of CONFIG_X86_64"), "{err}");
        assert!(err.contains("x86-64"), "{err}");
    }

    #[test]
    fn ftrace_alternatives_are_either() {
        let cfg = Config::parse("CONFIG_X86_64=y\nCONFIG_LIVEPATCH=y\nCONFIG_MODULES=y\nCONFIG_KALLSYMS_ALL=y\nCONFIG_SYSFS=y\nCONFIG_DYNAMIC_FTRACE_WITH_REGS=y\n");
        check_config(&cfg, Path::new(".config")).unwrap();
        let cfg = Config::parse(
            "CONFIG_X86_64=y\nCONFIG_LIVEPATCH=y\nCONFIG_MODULES=y\nCONFIG_KALLSYMS_ALL=y\nCONFIG_SYSFS=y\n",
        );
        let err = check_config(&cfg, Path::new(".config"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("CONFIG_DYNAMIC_FTRACE_WITH_REGS or CONFIG_DYNAMIC_FTRACE_WITH_ARGS"),
            "{err}"
        );
    }
}
