//! `klpgen build`'s flags and the plan they resolve to: every choice the pipeline reads
//! (module name, patches, jobs, hook language, out-of-tree module, extra units, callers,
//! signing, output), derived and checked once, so that no phase looks at the raw flags.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::ValueEnum;
use patchgen::kmod::HookLang;

use super::spec::KernelSpec;
use crate::kernel::Tree;
use crate::patch::PatchFile;
use crate::report::{self as rpt, BuildReport};

#[derive(Clone, Copy, ValueEnum, Debug, PartialEq, Eq)]
pub enum HookArg {
    Auto,
    Rust,
    C,
}

/// The flags that name one target, which `--kernel`/`--kernels` replace.
const TARGET_FLAGS: [&str; 6] = [
    "sourcedir",
    "builddir",
    "config",
    "vmlinux",
    "modules",
    "release",
];

#[derive(clap::Args, Debug)]
pub struct BuildArgs {
    /// Kernel source tree the patches apply to. Without it (and without --builddir) the
    /// target is the running kernel of a Debian system, from its packages.
    #[arg(short = 's', long)]
    pub sourcedir: Option<PathBuf>,
    /// Target this installed (or, with --fetch, downloadable) distribution kernel release
    /// instead of the running one (`uname -r`).
    #[arg(long, value_name = "RELEASE")]
    pub release: Option<String>,
    /// Download the distribution's packages the target lacks (`apt-get download`) and
    /// unpack them into klpgen's cache; nothing is installed, no root needed.
    #[arg(long)]
    pub fetch: bool,
    /// The target kernel's build directory (its vmlinux, Module.symvers, .config), or a
    /// distribution's headers directory (`/usr/src/linux-headers-<release>`, with --vmlinux);
    /// default: the source tree.
    #[arg(long)]
    pub builddir: Option<PathBuf>,
    /// The target kernel's .config (default: BUILDDIR/.config).
    #[arg(short = 'c', long)]
    pub config: Option<PathBuf>,
    /// The target vmlinux (default: BUILDDIR/vmlinux).
    #[arg(short = 'v', long)]
    pub vmlinux: Option<PathBuf>,
    /// The target's installed modules (`/lib/modules/<release>`, or an unpacked image
    /// package's `lib/modules/<release>`; default: `/lib/modules/<release>`): a patched
    /// module's own symbols bind against its `.ko` there (`.ko.xz`, `.ko.zst`, `.ko.gz` too).
    #[arg(long, value_name = "DIR")]
    pub modules: Option<PathBuf>,
    /// Parallel jobs for kbuild.
    #[arg(short = 'j', long = "jobs")]
    pub jobs: Option<usize>,
    /// Livepatch name: the module is livepatch-NAME (default: the first patch's file stem).
    #[arg(short = 'n', long)]
    pub name: Option<String>,
    /// Output directory for livepatch-NAME.ko.
    #[arg(short = 'o', long, default_value = ".")]
    pub output: PathBuf,
    /// Hook language: Rust where the kernel has CONFIG_RUST=y, else C.
    #[arg(long, value_enum, default_value = "auto")]
    pub hook: HookArg,
    /// Stack on earlier livepatches instead of replacing them atomically.
    #[arg(short = 'R', long)]
    pub non_replace: bool,
    /// Extra kbuild object targets (UNIT.o) to diff besides those the patch touches; the
    /// kpatch-build targets `vmlinux` and `modules` are accepted and implied.
    #[arg(short = 't', long = "target")]
    pub targets: Vec<String>,
    /// Keep klpgen's work directory and print where it is (kpatch-build's -d); implies --verbose.
    #[arg(short = 'd', long)]
    pub debug: bool,
    /// Also show every line make, patch and the compilers print (`-v` is kpatch-build's --vmlinux).
    #[arg(long)]
    pub verbose: bool,
    /// Keep klpgen's work directory (it is kept in the cache anyway; accepted for kpatch-build users).
    #[arg(long)]
    pub skip_cleanup: bool,
    /// Build even when the compiler differs from the one that built the target.
    #[arg(long)]
    pub skip_compiler_check: bool,
    /// Sign the module with this private key (PEM, or a PKCS#11 URI) using the target's
    /// `scripts/sign-file`, with the hash of the target's CONFIG_MODULE_SIG_HASH.
    #[arg(long, value_name = "KEY", requires = "sign_cert")]
    pub sign_key: Option<PathBuf>,
    /// The X.509 certificate (PEM or DER) that goes with --sign-key.
    #[arg(long, value_name = "CERT", requires = "sign_key")]
    pub sign_cert: Option<PathBuf>,
    /// Do not put `#line` directives after the patched stretches of C files (by default the
    /// untouched lines keep their original numbers, so `__LINE__` there does not change).
    #[arg(long)]
    pub no_line_directives: bool,
    /// Run every compile through this launcher (`ccache`, `sccache`, `distcc`, `icecc`, or a
    /// command with arguments): kbuild gets `CC="<launcher> gcc"` (clang for clang-built targets).
    #[arg(long, value_name = "CMD")]
    pub cc_launcher: Option<String>,
    /// kbuild's ARCH of the target (powerpc, s390...): by default the machine its `.config`
    /// names; given, it must agree.
    #[arg(long, value_name = "ARCH")]
    pub arch: Option<String>,
    /// The target's cross toolchain prefix (`powerpc64le-linux-gnu-`) when klpgen runs on
    /// another machine: by default the environment's CROSS_COMPILE, else the prefix of the
    /// compiler the target was built with (CONFIG_CC_VERSION_TEXT), else Debian's.
    #[arg(long, value_name = "PREFIX")]
    pub cross_compile: Option<String>,
    /// sign-file to use instead of the target build's `scripts/sign-file`.
    #[arg(long, value_name = "PROGRAM")]
    pub sign_file: Option<PathBuf>,
    /// Patch an out-of-tree module: the module as built for the target (KO) ...
    #[arg(long, value_name = "KO")]
    pub oot_module: Option<PathBuf>,
    /// ... and its source directory, which the patches apply to (-p1). It is copied, never
    /// built in or patched.
    #[arg(long, value_name = "DIR")]
    pub oot_module_src: Option<PathBuf>,
    /// Widen the patch to the callers of the changed functions, up to this depth (callers in
    /// the same translation unit; the consistency boundary moves out to them).
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub include_callers: u32,
    /// Stop when --include-callers would add more than this many functions.
    #[arg(long, value_name = "N", default_value_t = 32)]
    pub max_callers: usize,
    /// Fail at once when another klpgen run holds klpgen's cache for this tree or is patching
    /// the source tree, instead of waiting for it to finish.
    #[arg(long)]
    pub no_wait: bool,
    /// Write a JSON report of the run (schema: docs/report.md), also when it fails.
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// Decide which units the patches affect without the target's kbuild records, as for a
    /// distribution's headers (klpgen's dependency scan, verified by its own build's records);
    /// for testing that path on a target that has records.
    #[arg(long, hide = true)]
    pub no_target_records: bool,
    /// Only print the result.
    #[arg(short = 'q', long)]
    pub quiet: bool,
    /// A target kernel (repeatable; one module per target, built in parallel): comma-separated
    /// `release=R`, `fetch`, `source=DIR`, `build=DIR`, `config=FILE`, `vmlinux=FILE`,
    /// `modules=DIR`, `name=NAME` (e.g. `release=6.1.0-57-cloud-amd64,fetch` or
    /// `build=~/linux-build,name=dev`; a first item without `=` is a release, or a build
    /// directory when it has a `/`). Modules go to OUTPUT/NAME/. Instead of the target flags.
    #[arg(long = "kernel", value_name = "SPEC", conflicts_with_all = TARGET_FLAGS)]
    pub kernel: Vec<String>,
    /// A file of target kernels, one SPEC (as for --kernel) per line; `#` starts a comment.
    #[arg(long = "kernels", value_name = "FILE", conflicts_with_all = TARGET_FLAGS)]
    pub kernels_file: Option<PathBuf>,
    /// Also write a package of each livepatch, next to its module: `deb`, a Debian package
    /// `livepatch-<name>-<release>_<version>_<arch>.deb` that installs the module for exactly
    /// that release, loads it at boot there, and depends on that kernel's image package.
    #[arg(long, value_enum, value_name = "KIND")]
    pub package: Option<crate::package::Kind>,
    /// The package version (default `0~<the patches' sha256, 12 digits>-1`).
    #[arg(long, value_name = "VERSION", requires = "package")]
    pub package_version: Option<String>,
    /// The package's Maintainer, `Name <email>` (default: `$DEBFULLNAME <$DEBEMAIL>`).
    #[arg(long, value_name = "NAME <EMAIL>", requires = "package")]
    pub package_maintainer: Option<String>,
    /// Patches (unified diffs, -p1 from the source tree root).
    #[arg(required = true)]
    pub patches: Vec<PathBuf>,
}

/// Where the target kernel is, as the flags or its SPEC name it: what `Target::open`
/// (target.rs) reads.
pub struct TargetSpec {
    pub source: PathBuf,
    pub build: Option<PathBuf>,
    pub config: Option<PathBuf>,
    pub vmlinux: Option<PathBuf>,
    pub modules: Option<PathBuf>,
    /// An out-of-tree module's `.ko`, which must belong to the target too.
    pub oot_ko: Option<PathBuf>,
    /// `--cc-launcher`, set up for the target's compiler kind.
    pub cc_launcher: Option<String>,
    /// `--arch`, `--cross-compile`: the target's machine and cross toolchain.
    pub arch: Option<String>,
    pub cross_compile: Option<String>,
}

impl BuildArgs {
    /// Whether the run has several targets (`--kernel`, `--kernels`), even if they name one:
    /// the multi-target layout (OUTPUT/NAME/, a report with `targets`) then applies.
    pub fn multi_target(&self) -> bool {
        !self.kernel.is_empty() || self.kernels_file.is_some()
    }

    /// The run's targets: the `--kernel` SPECs and the `--kernels` file's lines, or the one
    /// the target flags name. `--fetch` applies to every distribution target.
    pub fn specs(&self) -> Result<Vec<KernelSpec>> {
        if !self.multi_target() {
            return Ok(vec![KernelSpec {
                text: String::new(),
                name: None,
                release: self.release.clone(),
                fetch: self.fetch,
                source: self.sourcedir.clone(),
                build: self.builddir.clone(),
                config: self.config.clone(),
                vmlinux: self.vmlinux.clone(),
                modules: self.modules.clone(),
            }]);
        }
        let mut specs: Vec<KernelSpec> = self
            .kernel
            .iter()
            .map(|k| KernelSpec::parse(k))
            .collect::<Result<_>>()?;
        if let Some(f) = &self.kernels_file {
            let text = std::fs::read_to_string(f)
                .with_context(|| format!("cannot read --kernels {}", f.display()))?;
            specs.extend(KernelSpec::parse_list(f, &text)?);
        }
        if specs.is_empty() {
            bail!("--kernels names no target");
        }
        for s in &mut specs {
            s.fetch |= self.fetch && s.distribution_target();
        }
        Ok(specs)
    }

    /// Where `spec`'s target is, with a distribution's parts for those not given.
    pub fn target(
        &self,
        spec: &KernelSpec,
        dist: Option<&crate::distro::Resolved>,
    ) -> Result<TargetSpec> {
        let from_dist =
            |f: fn(&crate::distro::Resolved) -> Option<&PathBuf>| dist.and_then(f).cloned();
        let source = match (spec.source.clone(), from_dist(|d| d.source.as_ref())) {
            (Some(s), _) | (None, Some(s)) => s,
            (None, None) => match spec.source_dir() {
                Some(s) if dist.is_none() => s,
                _ => bail!("pass --sourcedir (the kernel sources the patches apply to)"),
            },
        };
        Ok(TargetSpec {
            source,
            build: spec.build.clone().or(from_dist(|d| d.build.as_ref())),
            config: spec.config.clone(),
            vmlinux: spec.vmlinux.clone().or(from_dist(|d| d.vmlinux.as_ref())),
            modules: spec.modules.clone().or(from_dist(|d| d.modules.as_ref())),
            oot_ko: self.oot_module.clone(),
            cc_launcher: self.cc_launcher.clone(),
            arch: self.arch.clone(),
            cross_compile: self.cross_compile.clone(),
        })
    }
}

/// `--oot-module KO --oot-module-src DIR`, given together.
pub struct OotPair {
    pub ko: PathBuf,
    pub src: PathBuf,
}

/// `--sign-key KEY --sign-cert CERT` (clap makes them go together), `--sign-file`.
pub struct Signing {
    pub key: PathBuf,
    pub cert: PathBuf,
    pub sign_file: Option<PathBuf>,
}

/// `--include-callers N --max-callers M`.
#[derive(Clone, Copy)]
pub struct Callers {
    /// 0: callers are not included.
    pub depth: u32,
    pub max: usize,
}

/// What one target of a run gets besides the flags: its name (runs with `--kernel`), where
/// its module goes, its share of the jobs, the patches (read once for every target) and the
/// package to write.
pub struct PlanTarget {
    pub name: Option<String>,
    pub output_dir: PathBuf,
    pub jobs: usize,
    pub patches: Vec<PatchFile>,
    pub package: Option<crate::package::Options>,
}

/// What the build does, resolved from the flags and the target's configuration.
pub struct BuildPlan {
    /// The run directory's name under the work directory's `runs/`: the module, and in a
    /// run with `--kernel` the target too (targets of one work directory take turns, and
    /// each keeps its own).
    pub run_name: String,
    /// `--package`: what to write next to the module.
    pub package: Option<crate::package::Options>,
    /// `livepatch-<name>`, at most the kernel's 55 characters.
    pub module: String,
    /// The module's description: the patches' file names.
    pub description: String,
    pub patches: Vec<PatchFile>,
    pub jobs: usize,
    pub hook: HookLang,
    pub oot: Option<OotPair>,
    /// `-t UNIT.o` units to diff besides the affected ones (kpatch-build's `vmlinux` and
    /// `modules` are implied and dropped). Empty for an out-of-tree module, whose objects are
    /// its `.mod` list.
    pub extra_units: Vec<String>,
    pub callers: Callers,
    pub signing: Option<Signing>,
    /// `OUTPUT/livepatch-<name>.ko`.
    pub output: PathBuf,
    /// Replace earlier livepatches atomically (not `--non-replace`).
    pub replace: bool,
    /// `#line` directives after the patched stretches (not `--no-line-directives`).
    pub line_directives: bool,
    pub skip_compiler_check: bool,
    pub quiet: bool,
    pub debug: bool,
    /// `--verbose` or `--debug`: long lists (the affected units) are printed in full.
    pub verbose: bool,
    /// Whether the target's kbuild records may decide the affected units (not
    /// `--no-target-records`).
    pub target_records: bool,
    /// Say where the work directory is (`--debug`, `--skip-cleanup`).
    pub show_workdir: bool,
    /// Wait for a held cache or source-tree lock (not `--no-wait`).
    pub wait: super::locks::Wait,
}

impl BuildPlan {
    /// Resolve the flags against the opened target. The report gets the configuration's and
    /// patches' digests and the hook as soon as they are known, so that it names them even when
    /// a later check fails.
    pub fn resolve(
        args: &BuildArgs,
        t: PlanTarget,
        tree: &Tree,
        rep: &mut BuildReport,
    ) -> Result<Self> {
        let module = module_name(args)?;
        let (patches, jobs) = (t.patches, t.jobs);
        record_patches(rep, tree, &patches);
        // The kernel's Rust support covers only some machines: there the hook is C.
        let no_rust = tree
            .arch()
            .and_then(|a| a.rust_unsupported().map(|why| (a, why)));
        let hook = match (args.hook, no_rust) {
            (HookArg::Rust, Some((a, why))) => {
                bail!(
                    "--hook rust: the target is {}, and {why}; use --hook c (or auto)",
                    a.name()
                )
            }
            (HookArg::Rust, None) => HookLang::Rust,
            (HookArg::C, _) => HookLang::C,
            (HookArg::Auto, Some((a, why))) => {
                if !args.quiet {
                    crate::progress::message(&format!(
                        "klpgen: hook: C ({} target: {why})",
                        a.name()
                    ));
                }
                HookLang::C
            }
            (HookArg::Auto, None) if tree.config.is_set("CONFIG_RUST") => HookLang::Rust,
            (HookArg::Auto, None) => HookLang::C,
        };
        rep.hook = Some(hook.as_str());
        let oot = oot_pair(args)?;
        let extra_units = match oot {
            // An out-of-tree module's objects are its `.mod` list; `-t` is not looked at.
            Some(_) => Vec::new(),
            None => extra_units(&args.targets)?,
        };
        let description = format!(
            "livepatch built by klpgen from {}",
            args.patches
                .iter()
                .map(|p| p.file_name().unwrap_or_default().to_string_lossy())
                .collect::<Vec<_>>()
                .join(", ")
        );
        let signing = match (&args.sign_key, &args.sign_cert) {
            (Some(key), Some(cert)) => Some(Signing {
                key: key.clone(),
                cert: cert.clone(),
                sign_file: args.sign_file.clone(),
            }),
            _ => None,
        };
        Ok(BuildPlan {
            output: t.output_dir.join(format!("{module}.ko")),
            package: t.package,
            run_name: match &t.name {
                Some(n) => format!("{module}.{n}"),
                None => module.clone(),
            },
            module,
            description,
            patches,
            jobs,
            hook,
            oot,
            extra_units,
            callers: Callers {
                depth: args.include_callers,
                max: args.max_callers,
            },
            signing,
            replace: !args.non_replace,
            line_directives: !args.no_line_directives,
            skip_compiler_check: args.skip_compiler_check,
            quiet: args.quiet,
            debug: args.debug,
            verbose: args.verbose || args.debug,
            target_records: !args.no_target_records,
            show_workdir: args.debug || args.skip_cleanup,
            wait: if args.no_wait {
                super::locks::Wait::No
            } else {
                super::locks::Wait::Yes
            },
        })
    }
}

/// The report names the configuration and patches (paths and digests) it was built from.
fn record_patches(rep: &mut BuildReport, tree: &Tree, patches: &[PatchFile]) {
    rep.kernel.config_sha256 = rpt::sha256_hex(tree.config_text.as_bytes());
    rep.patches = patches
        .iter()
        .map(|p| rpt::PatchEntry {
            path: p.path.display().to_string(),
            sha256: rpt::sha256_hex(p.text.as_bytes()),
        })
        .collect();
}

/// `--oot-module` and `--oot-module-src`: both or neither.
fn oot_pair(args: &BuildArgs) -> Result<Option<OotPair>> {
    match (&args.oot_module, &args.oot_module_src) {
        (Some(ko), Some(src)) => Ok(Some(OotPair {
            ko: ko.clone(),
            src: src.clone(),
        })),
        (None, None) => Ok(None),
        _ => bail!("--oot-module and --oot-module-src go together"),
    }
}

/// The `-t` units: objects (`UNIT.o`); kpatch-build's `vmlinux` and `modules` are implied.
fn extra_units(targets: &[String]) -> Result<Vec<String>> {
    let mut units = Vec::new();
    for t in targets {
        match t.as_str() {
            "vmlinux" | "modules" => {}
            u if u.ends_with(".o") => units.push(u.to_string()),
            other => bail!("--target {other}: expected an object (UNIT.o), vmlinux or modules"),
        }
    }
    Ok(units)
}

/// The patches, read and parsed once for every target of the run.
pub fn load_patches(args: &BuildArgs) -> Result<Vec<PatchFile>> {
    args.patches.iter().map(|p| PatchFile::load(p)).collect()
}

/// `--package` and its flags, checked before any work; the default version comes from the
/// patches.
pub fn package_options(
    args: &BuildArgs,
    patches: &[PatchFile],
) -> Result<Option<crate::package::Options>> {
    let Some(kind) = args.package else {
        return Ok(None);
    };
    let all: Vec<u8> = patches.iter().flat_map(|p| p.text.bytes()).collect();
    let sha = rpt::sha256_hex(&all);
    crate::package::Options::new(
        kind,
        args.package_version.as_deref(),
        args.package_maintainer.as_deref(),
        &sha,
    )
    .map(Some)
}

/// `-j`, default the machine's CPUs.
pub fn jobs(args: &BuildArgs) -> usize {
    args.jobs
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .max(1)
}

/// `livepatch-<name>`; kernel module names are at most 55 characters.
pub fn module_name(args: &BuildArgs) -> Result<String> {
    let raw = match &args.name {
        Some(n) => n.clone(),
        None => args.patches[0]
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "patch".into()),
    };
    let clean: String = raw
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let name = format!("livepatch-{clean}");
    if name.len() > 55 {
        bail!(
            "module name {name} is longer than the kernel's 55 characters; pass a shorter --name"
        );
    }
    Ok(name)
}
