//! The kernel tree and its target build: where the sources, `.config`, vmlinux and
//! Module.symvers are, whether the configuration can carry a livepatch at all, whether the
//! parts come from one build, and the structure layouts the vmlinux's DWARF gives.
//!
//! A configuration is refused naming each option it lacks ([`check_config`]: livepatch, modules,
//! `KALLSYMS_ALL`, ftrace with regs or args, sysfs, a supported machine, no trimmed exports).
//! Before any compile work, [`check_consistency`] refuses a target whose parts come from
//! different builds (`target.*-mismatch`, docs/refusals.md): the vmlinux's `linux_banner`
//! release against the build's release, its version part (`UTS_VERSION`) against the build's
//! `utsversion.h`, the sources' Makefile version against the upstream version (a
//! distribution's package version from the banner, else the release), Module.symvers against
//! the vmlinux's `__ksymtab_<name>` exports and `__crc_<name>` CRCs (every symbol, both ways),
//! an out-of-tree module's and the modules directory's vermagic against the vmlinux. The
//! comparisons themselves are `patchgen::target`'s; remedies naming a distribution's packages
//! are `crate::distro`'s.
//!
//! The release is what a distribution really ships: `include/generated/utsrelease.h`
//! (`UTS_RELEASE`) first, then `.kernelvariables`' `KERNELRELEASE` (Debian's headers), then
//! `include/config/kernel.release` (which Debian's headers fill with the upstream version
//! `6.1.192`, not the release `6.1.0-57-cloud-amd64`). A build directory without a `vmlinux` is
//! a distribution's headers directory ([`TreeKind::Headers`]): klpgen then compiles in its own
//! directory prepared from the sources with the headers' `.config`, `.kernelvariables` and
//! Module.symvers ([`Tree::prepared_files`]), and never runs the headers' own kbuild.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use patchgen::target::{
    build_mismatch, module_mismatch, module_vermagic, release_mismatch, source_mismatch,
    symvers_mismatch, upstream_mismatch, KernelIdentity, Mismatch, Symvers,
};

use crate::distro::{self, Package, Side};
use crate::report::ModuleReload;
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

/// What the target build directory is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TreeKind {
    /// A kernel build (the user's own): its vmlinux, objects, kbuild records and tools.
    #[default]
    Build,
    /// A distribution's headers directory (`/usr/src/linux-headers-<release>`): `.config`,
    /// Module.symvers, `.kernelvariables`, generated headers; no vmlinux, no objects, no
    /// records, and tools that may not work (Debian's are links into `linux-kbuild-X.Y`, which
    /// the archive keeps for the newest ABI only). klpgen builds in its own directory prepared
    /// from the sources with [`Tree::prepared_files`].
    Headers,
}

/// What identifies the target build beyond its paths.
#[derive(Debug, Clone, Default)]
pub struct BuildInfo {
    pub kind: TreeKind,
    /// The file the release was read from.
    pub release_file: PathBuf,
    /// `include/config/kernel.release` when it says something else than the release
    /// (Debian's headers: the upstream version).
    pub kernel_release: Option<String>,
    /// The build's `UTS_VERSION` and the file it was read from.
    pub uts_version: Option<(PathBuf, String)>,
    /// `.kernelvariables` (Debian's headers: `KERNELRELEASE`, the compiler).
    pub kernelvariables: Option<PathBuf>,
    /// The target's modules: `--modules`, else `/lib/modules/<release>`.
    pub modules: PathBuf,
    /// Whether `modules` was given (`--modules`): then it must exist.
    pub modules_given: bool,
    /// The distribution's package of the target (from the vmlinux's banner), once the
    /// target is checked.
    pub package: Option<Package>,
    /// The vmlinux's `UTS_VERSION` (its banner's version part), once the target is checked:
    /// with the release, what the module's guard compares the running kernel's with.
    pub vmlinux_version: Option<String>,
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
    pub info: BuildInfo,
}

#[cfg(test)]
impl Tree {
    /// A tree for unit tests: `source` and `build` as given, the other paths in `build`, the
    /// configuration from `config` (read only where a test needs it), nothing read from disk.
    pub(crate) fn for_tests(source: &Path, build: &Path, config: &str, release: &str) -> Tree {
        Tree {
            source: source.to_path_buf(),
            build: build.to_path_buf(),
            config_path: build.join(".config"),
            config_text: config.into(),
            config: Config::parse(config),
            vmlinux: build.join("vmlinux"),
            symvers: build.join("Module.symvers"),
            release: release.into(),
            info: Default::default(),
        }
    }
}

/// Where the target's pieces are, as the flags (or a distribution's defaults) name them.
#[derive(Debug, Clone, Copy, Default)]
pub struct Pieces<'a> {
    pub build: Option<&'a Path>,
    pub config: Option<&'a Path>,
    pub vmlinux: Option<&'a Path>,
    pub modules: Option<&'a Path>,
}

/// `#define NAME "value"` in a generated header.
fn define(text: &str, name: &str) -> Option<String> {
    text.lines().find_map(|l| {
        let rest = l.trim().strip_prefix("#define")?.trim_start();
        let v = rest.strip_prefix(name)?;
        if !v.starts_with(char::is_whitespace) {
            return None;
        }
        let v = v.trim();
        Some(v.strip_prefix('"')?.strip_suffix('"')?.to_string())
    })
}

/// `[override] KERNELRELEASE = value` in Debian's `.kernelvariables` (a make fragment).
fn kernelvariables_release(text: &str) -> Option<String> {
    text.lines().find_map(|l| {
        let l = l.trim();
        let l = l.strip_prefix("override").map_or(l, str::trim_start);
        let (k, v) = l.split_once('=')?;
        let k = k.trim().trim_end_matches([':', '?']).trim();
        (k == "KERNELRELEASE" && !v.trim().is_empty()).then(|| v.trim().to_string())
    })
}

/// The build's release and the file it came from: `utsrelease.h`, `.kernelvariables`,
/// `include/config/kernel.release`, the first that says.
fn read_release(build: &Path) -> Option<(String, PathBuf)> {
    let uts = build.join("include/generated/utsrelease.h");
    if let Some(r) = fs_text(&uts).and_then(|t| define(&t, "UTS_RELEASE")) {
        return Some((r, uts));
    }
    let kv = build.join(".kernelvariables");
    if let Some(r) = fs_text(&kv).and_then(|t| kernelvariables_release(&t)) {
        return Some((r, kv));
    }
    let kr = build.join("include/config/kernel.release");
    let r = fs_text(&kr)?.trim().to_string();
    (!r.is_empty()).then_some((r, kr))
}

fn fs_text(p: &Path) -> Option<String> {
    std::fs::read_to_string(p).ok()
}

/// The build's `UTS_VERSION`: `utsversion.h` (5.19 and later), else `compile.h`.
fn read_uts_version(build: &Path) -> Option<(PathBuf, String)> {
    [
        "include/generated/utsversion.h",
        "include/generated/compile.h",
    ]
    .iter()
    .find_map(|f| {
        let p = build.join(f);
        let v = define(&fs_text(&p)?, "UTS_VERSION")?;
        Some((p, v))
    })
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

    /// Whether the target build is the user's own build or a distribution's headers.
    pub fn kind(&self) -> TreeKind {
        self.info.kind
    }

    /// The files of a headers directory klpgen's own build directory needs besides `.config`
    /// (which [`Tree::config_text`] holds): `.kernelvariables` (Debian: the release and the
    /// compiler, read by the top Makefile from the object tree) and Module.symvers (modpost's
    /// CRCs for the module). Empty for an own build.
    pub fn prepared_files(&self) -> Vec<PathBuf> {
        if self.kind() != TreeKind::Headers {
            return Vec::new();
        }
        let mut v: Vec<PathBuf> = self.info.kernelvariables.iter().cloned().collect();
        v.push(self.symvers.clone());
        v
    }

    pub fn open(source: &Path, pieces: &Pieces<'_>) -> Result<Self> {
        let source = source
            .canonicalize()
            .with_context(|| format!("kernel source tree {} does not exist", source.display()))?;
        if !source.join("Makefile").is_file() || !source.join("kernel").is_dir() {
            bail!(
                "{} is not a kernel source tree (no Makefile and kernel/)",
                source.display()
            );
        }
        let build = match pieces.build {
            Some(b) => b.canonicalize().with_context(|| {
                format!("kernel build directory {} does not exist", b.display())
            })?,
            None => source.clone(),
        };
        let config_path = pieces
            .config
            .map_or_else(|| build.join(".config"), Path::to_path_buf);
        let config_text = std::fs::read_to_string(&config_path).with_context(|| {
            format!(
                "cannot read the kernel configuration {} (pass --config)",
                config_path.display()
            )
        })?;
        let config = Config::parse(&config_text);
        let vmlinux = pieces
            .vmlinux
            .map_or_else(|| build.join("vmlinux"), Path::to_path_buf);
        let symvers = build.join("Module.symvers");
        let (release, release_file) = read_release(&build)
            .unwrap_or_else(|| (String::new(), build.join("include/config/kernel.release")));
        let kernel_release = fs_text(&build.join("include/config/kernel.release"))
            .map(|s| s.trim().to_string())
            .filter(|r| !r.is_empty() && *r != release);
        let kernelvariables = Some(build.join(".kernelvariables")).filter(|p| p.is_file());
        let kind = if build.join("vmlinux").exists() || build.join("vmlinux.o").exists() {
            TreeKind::Build
        } else {
            TreeKind::Headers
        };
        let modules = pieces.modules.map_or_else(
            || distro::system_root().join("lib/modules").join(&release),
            Path::to_path_buf,
        );
        Ok(Tree {
            info: BuildInfo {
                kind,
                release_file,
                kernel_release,
                uts_version: read_uts_version(&build),
                kernelvariables,
                modules,
                modules_given: pieces.modules.is_some(),
                package: None,
                vmlinux_version: None,
            },
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
        self.info.release_file.clone()
    }

    /// Check that the target build has what klpgen reads from it.
    pub fn check_target(&self) -> Result<()> {
        if self.release.is_empty() {
            bail!(
                "{} not found (nor include/generated/utsrelease.h or .kernelvariables there): the release of the target build; build the target kernel first",
                self.build.join("include/config/kernel.release").display()
            );
        }
        for (p, what) in [
            (&self.vmlinux, "the target vmlinux (pass --vmlinux)"),
            (&self.symvers, "Module.symvers of the target build"),
        ] {
            if !p.is_file() {
                bail!(
                    "{} not found: {what}; build the target kernel first",
                    p.display()
                );
            }
        }
        if self.info.modules_given && !self.info.modules.is_dir() {
            bail!("--modules {}: not a directory", self.info.modules.display());
        }
        Ok(())
    }
}

/// What the target's vmlinux says about itself, once checked against the build.
#[derive(Debug, Clone, Default)]
pub struct Identity {
    /// Its banner's version part (`UTS_VERSION`).
    pub version: Option<String>,
    /// The distribution's package it belongs to (from that version).
    pub package: Option<Package>,
    /// Its livepatch core clears the klp relocations it wrote into a module when the module
    /// is unloaded ([`clears_klp_relocations`]).
    pub clears_klp_relocations: bool,
}

/// Whether a kernel's livepatch core clears the klp relocations it applied to a module once
/// that module is unloaded (`clear_relocate_add`, Linux 6.3). Without it the stale values
/// stay in the livepatch module, and the module's next load finds its relocation targets
/// already written: x86 refuses it ("Skipping invalid relocation target", "refusing to load
/// module"). The vmlinux defining `clear_relocate_add` says so (a backport too); without the
/// symbol a release of 6.3 or later still does, as an LTO build may inline it away.
pub fn clears_klp_relocations(defines_clear_relocate_add: bool, release: &str) -> bool {
    let mut nums = release.split(['.', '-']).map(|p| p.parse::<u32>().ok());
    let at_least_6_3 = match (nums.next().flatten(), nums.next().flatten()) {
        (Some(major), Some(minor)) => (major, minor) >= (6, 3),
        _ => false,
    };
    defines_clear_relocate_add || at_least_6_3
}

/// The patched modules (`modules`, the livepatch's klp objects other than vmlinux) a target
/// that does not clear klp relocations will not load again while the livepatch is loaded: the
/// warning of the summary and the report's `module_reload`. None when there is nothing to say.
pub fn module_reload(clears: bool, release: &str, modules: &[&str]) -> Option<ModuleReload> {
    if clears || modules.is_empty() {
        return None;
    }
    Some(ModuleReload {
        modules: modules.iter().map(|m| m.to_string()).collect(),
        reason: format!(
            "kernel {release} does not clear the livepatch's klp relocations into a module when it is unloaded (no clear_relocate_add, Linux 6.3): while the livepatch is loaded, an unloaded patched module cannot be loaded again (\"Skipping invalid relocation target\", \"refusing to load module\")"
        ),
        remedy: "keep the patched modules loaded while the livepatch is; to reload one, disable and unload the livepatch first, reload the module, then load the livepatch again".to_string(),
    })
}

/// The parts of the target must come from one build, checked before any compile work: the
/// vmlinux's `linux_banner` names the build's release and, where the build says, its
/// `UTS_VERSION`; the source tree's Makefile its upstream version; Module.symvers lists exactly
/// the vmlinux's exports (and their CRCs); an out-of-tree module's and a module of the modules
/// directory's vermagic name the same release. Each mismatch is a refusal with a stable key
/// (`target.*-mismatch`, docs/refusals.md) naming both files and both values, and for a
/// distribution's kernel the packages to install.
pub fn check_consistency(
    tree: &Tree,
    vmlinux: &[u8],
    symvers: &Symvers,
    modules: &[(&Path, &[u8])],
) -> Result<Identity> {
    let vm_label = tree.vmlinux.display().to_string();
    let id = KernelIdentity::parse(&vm_label, vmlinux)?;
    let vm_pkg = id.version.as_deref().and_then(distro::package_of);
    let build_pkg = tree
        .info
        .uts_version
        .as_ref()
        .and_then(|(_, v)| distro::package_of(v));
    let release_label = tree.release_file().display().to_string();
    let makefile = tree.source.join("Makefile");
    let makefile_label = makefile.display().to_string();
    let makefile_text = std::fs::read_to_string(&makefile).unwrap_or_default();
    let mut found: Vec<Mismatch> = Vec::new();
    let release = release_mismatch(&id, &release_label, &tree.release);
    let same_release = release.is_none();
    found.extend(release);
    if same_release {
        if let Some((file, v)) = &tree.info.uts_version {
            found.extend(build_mismatch(&id, &file.display().to_string(), v));
        }
    }
    // The sources: exactly the package's upstream version where the banner names a package
    // (a distribution's release such as 6.1.0-57-cloud-amd64 does not start with it), else a
    // prefix of the build's release.
    let source = match (&vm_pkg, &tree.info.kernel_release) {
        (Some(p), _) => upstream_mismatch(
            &makefile_label,
            &makefile_text,
            &format!(
                "package version {} {} in {vm_label}'s linux_banner",
                p.distribution, p.version
            ),
            &p.upstream,
        ),
        (None, Some(kr)) => source_mismatch(
            &makefile_label,
            &makefile_text,
            &tree
                .build
                .join("include/config/kernel.release")
                .display()
                .to_string(),
            kr,
        ),
        (None, None) => source_mismatch(
            &makefile_label,
            &makefile_text,
            &release_label,
            &tree.release,
        ),
    };
    found.extend(source);
    found.extend(symvers_mismatch(&id, &symvers.label, symvers));
    for (ko, bytes) in modules {
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
        return Ok(Identity {
            version: id.version,
            package: vm_pkg,
            clears_klp_relocations: clears_klp_relocations(
                id.clears_klp_relocations,
                &tree.release,
            ),
        });
    }
    let vm_side = Side {
        release: id.release.as_deref(),
        package: vm_pkg.as_ref(),
    };
    let build_side = Side {
        release: Some(tree.release.as_str()).filter(|r| !r.is_empty()),
        package: build_pkg.as_ref(),
    };
    let list: Vec<String> = found
        .iter()
        .map(|m| match distro::remedy(m.key, &vm_side, &build_side) {
            Some(r) => format!("\n  {m}\n    remedy: {r}"),
            None => format!("\n  {m}"),
        })
        .collect();
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
    fn klp_relocations_are_cleared_from_6_3_or_with_clear_relocate_add() {
        // Without the symbol, by release: Debian 12's 6.1 does not, 6.3 and later do.
        for (release, clears) in [
            ("6.1.0-57-cloud-amd64", false),
            ("6.2.16", false),
            ("5.15.0-100-generic", false),
            ("6.3.0", true),
            ("6.12.0-klpgen", true),
            ("7.0", true),
            ("not-a-version", false),
        ] {
            assert_eq!(clears_klp_relocations(false, release), clears, "{release}");
        }
        // The symbol wins: a 6.1 with the change backported.
        assert!(clears_klp_relocations(true, "6.1.0-57-amd64"));
    }

    #[test]
    fn only_patched_modules_on_a_kernel_that_keeps_relocations_are_warned_about() {
        assert!(module_reload(false, "6.1.0-57-amd64", &[]).is_none());
        assert!(module_reload(true, "6.12.0", &["ext4"]).is_none());
        let r = module_reload(false, "6.1.0-57-amd64", &["ext4", "btrfs"]).unwrap();
        assert_eq!(r.modules, ["ext4", "btrfs"]);
        assert!(r.reason.contains("6.1.0-57-amd64") && r.reason.contains("clear_relocate_add"));
        assert!(
            r.remedy.contains("unload the livepatch first"),
            "{}",
            r.remedy
        );
    }

    #[test]
    fn releases_are_read_as_distributions_ship_them() {
        assert_eq!(
            define(
                "#define UTS_RELEASE \"6.1.0-57-cloud-amd64\"\n",
                "UTS_RELEASE"
            )
            .as_deref(),
            Some("6.1.0-57-cloud-amd64")
        );
        assert_eq!(define("#define UTS_RELEASE_X \"a\"\n", "UTS_RELEASE"), None);
        let kv =
            "override ARCH = x86\noverride KERNELRELEASE = 6.1.0-57-cloud-amd64\nCCACHE = ccache\n";
        assert_eq!(
            kernelvariables_release(kv).as_deref(),
            Some("6.1.0-57-cloud-amd64")
        );
        let tmp = tempfile::tempdir().unwrap();
        let b = tmp.path();
        std::fs::create_dir_all(b.join("include/config")).unwrap();
        std::fs::create_dir_all(b.join("include/generated")).unwrap();
        std::fs::write(b.join("include/config/kernel.release"), "6.1.192\n").unwrap();
        assert_eq!(read_release(b).unwrap().0, "6.1.192");
        std::fs::write(b.join(".kernelvariables"), kv).unwrap();
        assert_eq!(read_release(b).unwrap().0, "6.1.0-57-cloud-amd64");
        std::fs::write(
            b.join("include/generated/utsrelease.h"),
            "#define UTS_RELEASE \"6.1.0-57-cloud-amd64\"\n",
        )
        .unwrap();
        let (r, f) = read_release(b).unwrap();
        assert_eq!(
            (r.as_str(), f.ends_with("utsrelease.h")),
            ("6.1.0-57-cloud-amd64", true)
        );
    }

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
