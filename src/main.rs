//! klpgen: build Linux kernel livepatch modules from source patches.
//! The binary parses arguments once, runs one command, and maps errors to stable exit codes.

mod build;
mod callerscmd;
mod checkcmd;
mod diffcmd;
mod explaincmd;
mod kbuild;
mod kernel;
mod mirror;
mod objtool;
mod oot;
mod patch;
mod process;
mod progress;
mod report;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

/// Exit codes shared by every command.
pub mod exit {
    pub const OK: u8 = 0;
    pub const ERROR: u8 = 1;
    pub const REFUSED: u8 = 2;
    pub const NO_CHANGE: u8 = 3;
    pub const KERNEL_BUILD: u8 = 4;
}

/// A run that ends with a verdict rather than an error.
#[derive(Debug)]
pub enum Verdict {
    /// Unsupported change(s); the message lists them.
    Refused(String),
    NoChange,
}
impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Verdict::Refused(m) => write!(f, "refused: {m}"),
            Verdict::NoChange => f.write_str("no functional change"),
        }
    }
}
impl std::error::Error for Verdict {}

#[derive(Parser)]
#[command(
    name = "klpgen",
    version,
    about = "Build Linux kernel livepatch modules from source patches"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum, Debug, PartialEq, Eq)]
pub enum HookArg {
    Auto,
    Rust,
    C,
}

#[derive(Clone, Copy, ValueEnum, Debug, PartialEq, Eq)]
pub enum Format {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Build a livepatch module from one or more patches.
    Build(Box<BuildArgs>),
    /// Diff one original/patched object pair and print changed and new functions.
    Diff(DiffArgs),
    /// Verify a livepatch module against its target: modinfo, klp symbols and relocations,
    /// replaced functions (present and ftrace-able), exported undefined symbols.
    Check(checkcmd::CheckArgs),
    /// Explain why each function of one object pair changed: the first differing instruction,
    /// its source lines and inlined callees, and the refusals.
    Explain(explaincmd::ExplainArgs),
    /// Who calls a function (from the target's vmlinux.o, up to a depth): which callers
    /// livepatch cannot redirect, whose address is taken, which call it inside a loop.
    Callers(callerscmd::CallersArgs),
}

#[derive(clap::Args, Debug)]
pub struct BuildArgs {
    /// Kernel source tree the patches apply to.
    #[arg(short = 's', long)]
    pub sourcedir: PathBuf,
    /// The target kernel's build directory (its vmlinux, Module.symvers, .config); default: the source tree.
    #[arg(long)]
    pub builddir: Option<PathBuf>,
    /// The target kernel's .config (default: BUILDDIR/.config).
    #[arg(short = 'c', long)]
    pub config: Option<PathBuf>,
    /// The target vmlinux (default: BUILDDIR/vmlinux).
    #[arg(short = 'v', long)]
    pub vmlinux: Option<PathBuf>,
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
    /// Write a JSON report of the run (schema: docs/report.md), also when it fails.
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// Only print the result.
    #[arg(short = 'q', long)]
    pub quiet: bool,
    /// Patches (unified diffs, -p1 from the source tree root).
    #[arg(required = true)]
    pub patches: Vec<PathBuf>,
}

#[derive(clap::Args, Debug)]
pub struct DiffArgs {
    pub orig: PathBuf,
    pub patched: PathBuf,
    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
    /// Write the livepatch object for this pair.
    #[arg(long)]
    pub output: Option<PathBuf>,
    /// Target symbol table (vmlinux); default: ORIG's own symbols.
    #[arg(long)]
    pub symtab: Option<PathBuf>,
    /// Module.symvers of the target (which symbols are exported).
    #[arg(long)]
    pub symvers: Option<PathBuf>,
    /// Object name for klp symbols (vmlinux or a module name).
    #[arg(long, default_value = "vmlinux")]
    pub objname: String,
    /// Entry size of a special section, SECTION=BYTES.
    #[arg(long = "entry-size")]
    pub entry_size: Vec<String>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Build(a) => build::run(*a),
        Command::Diff(a) => diffcmd::run(a),
        Command::Check(a) => checkcmd::run(a),
        Command::Explain(a) => explaincmd::run(a),
        Command::Callers(a) => callerscmd::run(a),
    };
    match result {
        Ok(()) => ExitCode::from(exit::OK),
        Err(e) => {
            eprintln!("klpgen: {}", error_text(&e));
            ExitCode::from(classify(&e).0)
        }
    }
}

/// An error as the user reads it: its cause chain, and for a library error whose remedy is
/// one of klpgen's options (the libraries do not name them), that remedy.
pub fn error_text(e: &anyhow::Error) -> String {
    let mut text = format!("{e:#}");
    if let Some(elfdiff::Error::UnknownEntrySize { section, .. }) =
        e.root_cause().downcast_ref::<elfdiff::Error>()
    {
        text.push_str(&format!(
            "; pass --entry-size {section}=BYTES or give a target with DWARF"
        ));
    }
    text
}

/// The exit code and report word for an error.
pub fn classify(e: &anyhow::Error) -> (u8, &'static str) {
    if let Some(v) = e.downcast_ref::<Verdict>() {
        match v {
            Verdict::Refused(_) => (exit::REFUSED, "refused"),
            Verdict::NoChange => (exit::NO_CHANGE, "no-change"),
        }
    } else if e.downcast_ref::<kbuild::KernelBuildFailed>().is_some() {
        (exit::KERNEL_BUILD, "kernel-build-failed")
    } else {
        (exit::ERROR, "error")
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn an_unknown_entry_size_names_the_option() {
        let e = anyhow::Error::from(elfdiff::Error::UnknownEntrySize {
            object: "a.o".into(),
            section: "__bug_table".into(),
        })
        .context("planning a.o");
        assert_eq!(
            super::error_text(&e),
            "planning a.o: a.o: special section __bug_table has an unknown entry size; pass --entry-size __bug_table=BYTES or give a target with DWARF"
        );
        let other = anyhow::anyhow!("something else");
        assert_eq!(super::error_text(&other), "something else");
    }
}
