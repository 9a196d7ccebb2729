//! klpgen: build Linux kernel livepatch modules from source patches.
//! The binary parses arguments once, runs one command, and maps errors to stable exit codes:
//! 0 built (or changes found), 1 error, 2 refused, 3 no functional change, 4 the kernel build
//! failed ([`exit`], [`classify`]). `klpgen build` also accepts kpatch-build's flags with their
//! meanings (`-s -c -v -j -t -n -o -d -R`, `--skip-cleanup`, `--skip-compiler-check`).

mod assets;
mod build;
mod callerscmd;
mod checkcmd;
mod depscan;
mod depscancmd;
mod diffcmd;
mod distro;
mod explaincmd;
mod files;
mod kbuild;
mod kernel;
mod kofile;
mod listcmd;
mod machine;
mod mirror;
mod modinfo;
mod objtool;
mod oot;
mod package;
mod patch;
mod process;
mod progress;
mod report;
mod verdict;

use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

/// Exit codes shared by every command.
pub mod exit {
    pub const OK: u8 = 0;
    pub const ERROR: u8 = 1;
    pub const REFUSED: u8 = 2;
    pub const NO_CHANGE: u8 = 3;
    pub const KERNEL_BUILD: u8 = 4;
    /// `klpgen build --kernel ...`: not every target built, and they did not all fail alike.
    pub const PARTIAL: u8 = 5;
}

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
pub enum Format {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Build a livepatch module from one or more patches.
    Build(Box<build::BuildArgs>),
    /// Diff one original/patched object pair and print changed and new functions.
    Diff(diffcmd::DiffArgs),
    /// Verify a livepatch module against its target: modinfo, klp symbols and relocations,
    /// replaced functions (present and ftrace-able), exported undefined symbols.
    Check(checkcmd::CheckArgs),
    /// Explain why each function of one object pair changed: the first differing instruction,
    /// its source lines and inlined callees, and the refusals.
    Explain(explaincmd::ExplainArgs),
    /// Who calls a function (from the target's vmlinux.o, up to a depth): which callers
    /// livepatch cannot redirect, whose address is taken, which call it inside a loop.
    Callers(callerscmd::CallersArgs),
    /// Which units edited files affect, from the target's records and from klpgen's
    /// dependency scan (JSON; for development and `cargo xtask e2e depscan`).
    #[command(hide = true)]
    Depscan(depscancmd::DepscanArgs),
    /// The livepatches of the running kernel (from sysfs): state, the objects and functions
    /// each patches, its module file and which klpgen build produced it.
    List(listcmd::ListArgs),
    /// Write the man pages and shell completions (for packaging: `cargo xtask package`).
    #[command(hide = true)]
    Generate(assets::GenerateArgs),
}

/// What `klpgen diff` says of itself (its line in `klpgen --help`, the first of its own).
const DIFF_ABOUT: &str =
    "Diff one original/patched object pair and print changed and new functions";

/// The command line, parsed. clap builds the whole command tree (every subcommand's
/// arguments and help) before it parses: about 0.1 M instructions, more than the rest of a
/// small pair's `klpgen diff` but the diff itself. `klpgen diff`, which a pipeline may run
/// once per object pair, gets a tree of the one subcommand, the same as the whole tree's
/// (`diff_alone_is_the_same_command`).
fn parse() -> Cli {
    use clap::FromArgMatches;
    if std::env::args_os().nth(1).is_some_and(|a| a == "diff") {
        let matches = diff_alone().get_matches();
        return Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    }
    Cli::parse()
}

/// `klpgen` with only its `diff` subcommand.
fn diff_alone() -> clap::Command {
    use clap::Args;
    clap::Command::new("klpgen")
        .version(env!("CARGO_PKG_VERSION"))
        .about("Build Linux kernel livepatch modules from source patches")
        .subcommand_required(true)
        .arg_required_else_help(true)
        .subcommand(diffcmd::DiffArgs::augment_args(
            clap::Command::new("diff").about(DIFF_ABOUT),
        ))
}

fn main() -> ExitCode {
    let cli = parse();
    let result = match cli.command {
        Command::Build(a) => build::run(*a),
        Command::Diff(a) => diffcmd::run(a),
        Command::Check(a) => checkcmd::run(a),
        Command::Explain(a) => explaincmd::run(a),
        Command::Callers(a) => callerscmd::run(a),
        Command::Depscan(a) => depscancmd::run(a),
        Command::List(a) => listcmd::run(a),
        Command::Generate(a) => assets::run(a, <Cli as clap::CommandFactory>::command()),
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
    use verdict::Verdict;
    if let Some(t) = e.downcast_ref::<build::TargetsFailed>() {
        (t.code, t.word)
    } else if let Some(v) = e.downcast_ref::<Verdict>() {
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
    /// The fast path's `diff` is the whole tree's: the same help, the same errors, the same
    /// parse.
    #[test]
    fn diff_alone_is_the_same_command() {
        use clap::{CommandFactory, FromArgMatches};
        let mut alone = super::diff_alone();
        let mut full = <super::Cli as CommandFactory>::command();
        alone.build();
        full.build();
        let help = |c: &clap::Command| {
            c.find_subcommand("diff")
                .expect("a diff subcommand")
                .clone()
                .render_long_help()
                .to_string()
        };
        assert_eq!(help(&alone), help(&full));
        for args in [
            &["klpgen", "diff"][..],
            &["klpgen", "diff", "a.o"],
            &["klpgen", "diff", "--format", "xml", "a.o", "b.o"],
            &["klpgen", "diff", "--bogus", "a.o", "b.o"],
        ] {
            let a = alone.clone().try_get_matches_from(args).unwrap_err();
            let f = full.clone().try_get_matches_from(args).unwrap_err();
            assert_eq!(a.render().to_string(), f.render().to_string(), "{args:?}");
        }
        let args = [
            "klpgen",
            "diff",
            "--format",
            "json",
            "--entry-size",
            "__ex_table=12",
            "a.o",
            "b.o",
        ];
        let parsed = |c: &clap::Command| {
            let m = c.clone().try_get_matches_from(args).expect("parses");
            match super::Cli::from_arg_matches(&m).expect("a Cli").command {
                super::Command::Diff(d) => format!("{d:?}"),
                _ => panic!("not diff"),
            }
        };
        assert_eq!(parsed(&alone), parsed(&full));
    }

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
