//! The hidden `klpgen generate`: man pages (one per command, `klpgen.1`, `klpgen-build.1`, ...)
//! and shell completions (bash, zsh, fish), generated from the CLI definition itself so they
//! cannot drift from it; `cargo xtask package` puts them into the Debian package. The pages get
//! the sections clap does not know: exit status, environment, files, see also.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap_complete::Shell;

#[derive(clap::Args, Debug)]
pub struct GenerateArgs {
    /// Write the man pages (section 1, uncompressed) into this directory.
    #[arg(long, value_name = "DIR")]
    pub man: Option<PathBuf>,
    /// Write the completions (`klpgen.bash`, `_klpgen`, `klpgen.fish`) into this directory.
    #[arg(long, value_name = "DIR")]
    pub completions: Option<PathBuf>,
    /// The pages' date (YYYY-MM-DD; packaging passes the release's, for reproducible pages).
    #[arg(long, default_value = "")]
    pub date: String,
}

pub fn run(args: GenerateArgs, cmd: clap::Command) -> Result<()> {
    if let Some(dir) = &args.man {
        fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        for (name, page) in man_pages(cmd.clone(), &args.date)? {
            write(&dir.join(name), &page)?;
        }
    }
    if let Some(dir) = &args.completions {
        fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
            let mut c = cmd.clone();
            clap_complete::generate_to(shell, &mut c, "klpgen", dir)
                .with_context(|| format!("writing the {shell} completions"))?;
        }
    }
    Ok(())
}

fn write(path: &Path, data: &[u8]) -> Result<()> {
    fs::write(path, data).with_context(|| format!("cannot write {}", path.display()))
}

/// Exit codes, by command (README "Exit codes").
fn exit_status(command: &str) -> &'static [(&'static str, &'static str)] {
    match command {
        "klpgen" | "klpgen-build" | "klpgen-diff" => &[
            ("0", "built (build) or changes found (diff)"),
            ("1", "an error"),
            ("2", "refused: an unsupported change; each refusal has a stable key such as refuse.data-changed.<symbol>, a reason and a hint (docs/refusals.md)"),
            ("3", "no functional change"),
            ("4", "the kernel build failed (build)"),
            ("5", "with --kernel/--kernels: not every target built, and they did not all end alike (each target's result is in the report; all refused alike exits 2, and so on)"),
        ],
        "klpgen-check" => &[
            ("0", "the module passes every check"),
            ("1", "findings (one line each, stable keys listed in docs/check.md), or an error"),
        ],
        _ => &[("0", "success"), ("1", "an error")],
    }
}

/// `(file name, roff)` for the main page and each visible subcommand's.
pub fn man_pages(cmd: clap::Command, date: &str) -> Result<Vec<(String, Vec<u8>)>> {
    let mut cmd = cmd.disable_help_subcommand(true);
    cmd.build();
    let mut commands = vec![cmd.clone()];
    commands.extend(cmd.get_subcommands().filter(|s| !s.is_hide_set()).cloned());
    let names: Vec<String> = commands
        .iter()
        .map(|c| c.get_display_name().unwrap_or(c.get_name()).to_string())
        .collect();
    let version = cmd.get_version().unwrap_or_default().to_string();
    let mut pages = Vec::new();
    for (c, name) in commands.into_iter().zip(&names) {
        let man = clap_mangen::Man::new(c)
            .date(date)
            .source(format!("klpgen {version}"))
            .manual("klpgen manual");
        let mut page = Vec::new();
        man.render(&mut page)?;
        page.extend(extra_sections(name, &names).as_bytes());
        pages.push((format!("{name}.1"), page));
    }
    Ok(pages)
}

/// Escapes roff's special characters in running text.
fn roff_text(s: &str) -> String {
    let s = s.replace('\\', "\\e").replace('-', "\\-");
    match s.chars().next() {
        Some('.' | '\'') => format!("\\&{s}"),
        _ => s,
    }
}

/// EXIT STATUS, ENVIRONMENT and FILES (for the commands that use them) and SEE ALSO.
fn extra_sections(name: &str, all: &[String]) -> String {
    let mut s = String::from(".SH \"EXIT STATUS\"\n");
    for (code, meaning) in exit_status(name) {
        s.push_str(&format!(".TP\n{code}\n{}\n", roff_text(meaning)));
    }
    if matches!(name, "klpgen" | "klpgen-build") {
        s.push_str(".SH ENVIRONMENT\n");
        for (var, meaning) in [
            ("KLPGEN_CACHE_DIR", "klpgen's cache (its build directories, original objects, the patch journal, the locks); default $XDG_CACHE_HOME/klpgen or ~/.cache/klpgen. Runs on one cache and tree take turns (see \\-\\-no\\-wait)."),
            ("KLPGEN_RUSTC", "the rustc every kernel make gets (default /usr/bin/rustc): the one the target kernel was built with."),
        ] {
            s.push_str(&format!(".TP\n.B {var}\n{meaning}\n"));
        }
        s.push_str(".SH FILES\n.TP\n/usr/share/klpgen/include/klpgen/klpgen.h\nThe annotation header for patch authors (klpgen build puts its own copy on the include path: #include <klpgen/klpgen.h>).\n.TP\n/usr/share/doc/klpgen/\nThe report schema (report.md), the refusal and check catalogues, CI pipelines (ci.md), klpgen list's schema (list.md).\n");
    }
    let see: Vec<String> = all
        .iter()
        .filter(|n| n.as_str() != name)
        .map(|n| format!(".BR {} (1)", roff_text(n)))
        .collect();
    s.push_str(&format!(".SH \"SEE ALSO\"\n{}\n", see.join(",\n")));
    s
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn a_page_per_visible_command_with_every_option() {
        let cmd = crate::Cli::command();
        let pages = super::man_pages(cmd.clone(), "2025-01-01").unwrap();
        let names: Vec<&str> = pages.iter().map(|(n, _)| n.as_str()).collect();
        let mut want = vec!["klpgen.1".to_string()];
        want.extend(
            cmd.get_subcommands()
                .filter(|s| !s.is_hide_set())
                .map(|s| format!("klpgen-{}.1", s.get_name())),
        );
        assert_eq!(names, want);
        assert!(names.contains(&"klpgen-build.1") && names.contains(&"klpgen-list.1"));
        assert!(!names.iter().any(|n| n.contains("generate")));
        let build = String::from_utf8(pages[1].1.clone()).unwrap();
        assert!(build.starts_with(".ie \\n(.g .ds Aq"), "{}", &build[..80]);
        assert!(
            build.contains(".TH klpgen-build 1 2025-01-01 \"klpgen "),
            "{build}"
        );
        // Every long option of `klpgen build` is on its page, and the added sections.
        let sub = cmd.find_subcommand("build").unwrap();
        for a in sub.get_arguments().filter(|a| !a.is_hide_set()) {
            if let Some(long) = a.get_long() {
                let roff = format!("\\-\\-{}", long.replace('-', "\\-"));
                assert!(build.contains(&roff), "klpgen-build.1 lacks --{long}");
            }
        }
        for section in [
            "EXIT STATUS",
            "ENVIRONMENT",
            "KLPGEN_CACHE_DIR",
            "SEE ALSO",
            ".BR klpgen\\-list (1)",
        ] {
            assert!(build.contains(section), "klpgen-build.1 lacks {section}");
        }
        assert_eq!(super::roff_text(".x-y"), "\\&.x\\-y");
    }
}
