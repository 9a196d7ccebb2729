//! kbuild's compile command lines as data: shell words (as `sh` would split the simple commands
//! kbuild writes), the commands of a dry run (`make -n`) and of a kbuild record
//! (`savedcmd_<obj> := ...`), and what the scan needs of a compile: the unit, its source, its
//! include search directories, its forced includes and the `CONFIG_` macros it defines itself.
//!
//! Only what kbuild itself writes is understood: words, single and double quotes, backslash
//! escapes and the operators between simple commands. A word with an expansion (`$`, a
//! backtick) is marked dynamic; a caller that must run the command refuses it and falls back
//! to make, and the scan treats a unit whose search path it cannot read as including anything.

use std::path::{Path, PathBuf};

/// One shell token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Token {
    /// A word after quote removal; `dynamic` when part of it is an unquoted expansion.
    Word { text: String, dynamic: bool },
    /// An operator between commands: `;`, `&&`, `||`, `|`, `&`, `(`, `)`, or a redirection.
    Op(String),
}

/// Split `line` into shell tokens. None when a quote is not closed.
pub fn tokens(line: &str) -> Option<Vec<Token>> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut dynamic = false;
    let mut chars = line.chars().peekable();
    let flush = |out: &mut Vec<Token>, cur: &mut String, in_word: &mut bool, dynamic: &mut bool| {
        if *in_word {
            out.push(Token::Word {
                text: std::mem::take(cur),
                dynamic: *dynamic,
            });
        }
        *in_word = false;
        *dynamic = false;
    };
    while let Some(c) = chars.next() {
        match c {
            ' ' | '\t' | '\n' | '\r' => flush(&mut out, &mut cur, &mut in_word, &mut dynamic),
            '\'' => {
                in_word = true;
                loop {
                    match chars.next()? {
                        '\'' => break,
                        c => cur.push(c),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next()? {
                        '"' => break,
                        '\\' => match chars.next()? {
                            c @ ('"' | '\\' | '$' | '`') => cur.push(c),
                            '\n' => {}
                            c => {
                                cur.push('\\');
                                cur.push(c);
                            }
                        },
                        c @ ('$' | '`') => {
                            dynamic = true;
                            cur.push(c);
                        }
                        c => cur.push(c),
                    }
                }
            }
            '\\' => {
                in_word = true;
                match chars.next() {
                    Some('\n') | None => {}
                    Some(c) => cur.push(c),
                }
            }
            ';' | '|' | '&' | '(' | ')' | '<' | '>' => {
                flush(&mut out, &mut cur, &mut in_word, &mut dynamic);
                let mut op = c.to_string();
                if let Some(&n) = chars.peek() {
                    if (n == c && matches!(c, '&' | '|' | '>' | '<')) || (c == '>' && n == '&') {
                        op.push(n);
                        chars.next();
                    }
                }
                out.push(Token::Op(op));
            }
            '$' | '`' => {
                in_word = true;
                dynamic = true;
                cur.push(c);
            }
            c => {
                in_word = true;
                cur.push(c);
            }
        }
    }
    flush(&mut out, &mut cur, &mut in_word, &mut dynamic);
    Some(out)
}

/// The simple commands of a token list, split at every operator, with whether each one is
/// followed by `;` (or ends the line) rather than another operator.
pub fn commands(tokens: &[Token]) -> Vec<(Vec<Token>, Option<String>)> {
    let mut out = Vec::new();
    let mut cur = Vec::new();
    for t in tokens {
        match t {
            Token::Op(op) => out.push((std::mem::take(&mut cur), Some(op.clone()))),
            w => cur.push(w.clone()),
        }
    }
    if !cur.is_empty() {
        out.push((cur, None));
    }
    out.retain(|(c, _)| !c.is_empty());
    out
}

/// The text of a word token (None for operators).
pub fn word(t: &Token) -> Option<&str> {
    match t {
        Token::Word { text, .. } => Some(text),
        Token::Op(_) => None,
    }
}

/// kbuild's record of the command that built `obj`: the `savedcmd_<obj> := ...` line
/// (`cmd_<obj>` before Linux 6.3), with make's escapes undone (`$$` is `$`, `$(pound)` is `#`).
pub fn record_command(record: &str, obj: &str) -> Option<String> {
    let prefix = format!("cmd_{obj} := ");
    let line = record.lines().find_map(|l| {
        l.strip_prefix("saved")
            .unwrap_or(l)
            .strip_prefix(prefix.as_str())
    })?;
    Some(line.replace("$(pound)", "#").replace("$$", "$"))
}

/// What the scan needs of one unit's compile command.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Compile {
    /// The object, relative to the build directory (`fs/proc/version.o`).
    pub unit: String,
    /// The source file, absolute.
    pub source: PathBuf,
    /// Include search directories (`-I`, `-iquote`, `-isystem`, `-idirafter`), absolute, in
    /// order.
    pub search: Vec<PathBuf>,
    /// Files included before the source (`-include`, `-imacros`), absolute.
    pub forced: Vec<PathBuf>,
    /// `CONFIG_` macros the command line defines or undefines (`-D`, `-U`): their values in
    /// the configuration do not hold for this unit.
    pub config_macros: Vec<String>,
    /// A flag the scan could not read (an expansion): the unit may include anything.
    pub opaque: bool,
}

/// The compile of a kbuild object in one simple command: `<cc> <flags> -c -o <obj> <src>`
/// (kbuild's `cmd_cc_o_c` and `cmd_as_o_S`), with a `-Wp,-MMD,` or `-Wp,-MD,` dependency
/// flag, which is how kbuild marks its compiles. Relative paths are taken from `objdir`, where
/// kbuild runs its commands.
pub fn compile_of(cmd: &[Token], objdir: &Path) -> Option<Compile> {
    let words: Vec<&str> = cmd.iter().filter_map(word).collect();
    if !words
        .iter()
        .any(|w| w.starts_with("-Wp,-MMD,") || w.starts_with("-Wp,-MD,"))
    {
        return None;
    }
    let i = words
        .windows(4)
        .position(|w| w[0] == "-c" && w[1] == "-o" && w[2].ends_with(".o"))?;
    let (obj, src) = (words[i + 2], words[i + 3]);
    if !(src.ends_with(".c") || src.ends_with(".S")) {
        return None;
    }
    let abs = |p: &str| normalize(&objdir.join(p));
    let unit = normalize(Path::new(obj)).to_string_lossy().into_owned();
    let mut c = Compile {
        unit,
        source: abs(src),
        search: Vec::new(),
        forced: Vec::new(),
        config_macros: Vec::new(),
        opaque: false,
    };
    let mut k = 0;
    while k < cmd.len() {
        let Token::Word { text, dynamic } = &cmd[k] else {
            k += 1;
            continue;
        };
        let next = cmd.get(k + 1).and_then(word);
        let mut take = |c: &mut Compile, flag: &str, kind: u8| -> bool {
            let (value, used_next) = match text.strip_prefix(flag) {
                Some("") => match next {
                    Some(v) => (v.to_string(), true),
                    None => return false,
                },
                Some(v) => (v.to_string(), false),
                None => return false,
            };
            match kind {
                0 => c.search.push(abs(&value)),
                1 => c.forced.push(abs(&value)),
                _ => {
                    let name = value.split('=').next().unwrap_or("");
                    if name.starts_with("CONFIG_") {
                        c.config_macros.push(name.to_string());
                    }
                }
            }
            if used_next {
                k += 1;
            }
            true
        };
        if *dynamic && (text.starts_with("-I") || text.starts_with("-i")) {
            c.opaque = true;
        }
        let _ = take(&mut c, "-iquote", 0)
            || take(&mut c, "-isystem", 0)
            || take(&mut c, "-idirafter", 0)
            || take(&mut c, "-include", 1)
            || take(&mut c, "-imacros", 1)
            || take(&mut c, "-I", 0)
            || take(&mut c, "-D", 2)
            || take(&mut c, "-U", 2);
        k += 1;
    }
    Some(c)
}

/// Every kbuild compile in the output of `make -n`: one per line that has one (the line's
/// first; later copies sit inside the quoted text kbuild writes into the record).
pub fn compiles_of_dry_run(text: &str, objdir: &Path) -> Vec<Compile> {
    let mut out = Vec::new();
    for line in text.lines() {
        if !line.contains(" -c -o ") {
            continue;
        }
        let Some(toks) = tokens(line) else { continue };
        if let Some(c) = commands(&toks)
            .iter()
            .find_map(|(cmd, _)| compile_of(cmd, objdir))
        {
            out.push(c);
        }
    }
    out
}

/// A path with `.` and `..` components resolved lexically (as the compiler's file names are
/// compared; the kernel tree has no symlinked directories where it matters).
pub fn normalize(p: &Path) -> PathBuf {
    use std::path::Component;
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    out.push("..");
                }
            }
            c => out.push(c.as_os_str()),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(line: &str) -> Vec<String> {
        tokens(line)
            .unwrap()
            .into_iter()
            .map(|t| match t {
                Token::Word { text, .. } => text,
                Token::Op(o) => format!("<{o}>"),
            })
            .collect()
    }

    #[test]
    fn splits_like_sh() {
        assert_eq!(
            words(
                r#"gcc -DKBUILD_MODFILE='"fs/proc/version"' -c -o a.o a.c  ; ./tools/objtool/objtool --orc a.o"#
            ),
            [
                "gcc",
                r#"-DKBUILD_MODFILE="fs/proc/version""#,
                "-c",
                "-o",
                "a.o",
                "a.c",
                "<;>",
                "./tools/objtool/objtool",
                "--orc",
                "a.o"
            ]
        );
        assert_eq!(words(r#"a "b \"c\" d" e\ f"#), ["a", r#"b "c" d"#, "e f"]);
        assert_eq!(
            words("x && y || z > f 2>&1"),
            ["x", "<&&>", "y", "<||>", "z", "<>>", "f", "2", "<>&>", "1"]
        );
        assert!(tokens("echo 'open").is_none());
        // An expansion marks its word; a quoted `$` is plain text.
        let t = tokens("echo $(cat f) \"a$b\" '$x'").unwrap();
        assert!(matches!(&t[1], Token::Word { dynamic: true, .. }));
        assert!(matches!(
            t.iter().rev().nth(1),
            Some(Token::Word { dynamic: true, .. })
        ));
        assert!(matches!(t.last(), Some(Token::Word { dynamic: false, text }) if text == "$x"));
    }

    #[test]
    fn reads_a_records_command() {
        let rec = "savedcmd_fs/proc/version.o := gcc -Wp,-MMD,fs/proc/.version.o.d -nostdinc -I/s/arch/x86/include -I./include -include /s/include/linux/kconfig.h -DCONFIG_FOO=1 -UCONFIG_BAR -D__KERNEL__ -I /s/fs/proc -Ifs/proc -DX='$(pound)define' -c -o fs/proc/version.o /s/fs/proc/version.c\n\nsource_fs/proc/version.o := /s/fs/proc/version.c\n";
        let cmd = record_command(rec, "fs/proc/version.o").unwrap();
        assert!(cmd.contains("-DX='#define'"), "{cmd}");
        let toks = tokens(&cmd).unwrap();
        let c = compile_of(&toks, Path::new("/o")).unwrap();
        assert_eq!(c.unit, "fs/proc/version.o");
        assert_eq!(c.source, Path::new("/s/fs/proc/version.c"));
        let search: Vec<&str> = c.search.iter().map(|p| p.to_str().unwrap()).collect();
        assert_eq!(
            search,
            [
                "/s/arch/x86/include",
                "/o/include",
                "/s/fs/proc",
                "/o/fs/proc"
            ]
        );
        assert_eq!(c.forced, [PathBuf::from("/s/include/linux/kconfig.h")]);
        assert_eq!(c.config_macros, ["CONFIG_FOO", "CONFIG_BAR"]);
        assert!(!c.opaque);
        // The older name of the record line.
        assert!(record_command("cmd_a.o := gcc -c -o a.o a.c\n", "a.o").is_some());
    }

    #[test]
    fn finds_the_compiles_of_a_dry_run() {
        let dry = "make -f /s/scripts/Makefile.build obj=fs/proc\n\
            set -e;  echo '  CC      fs/proc/a.o';   trap 'rm -f fs/proc/a.o; trap - HUP; kill -s HUP $$' HUP; gcc -Wp,-MMD,fs/proc/.a.o.d -nostdinc -I/s/include -c -o fs/proc/a.o /s/fs/proc/a.c  ; scripts/basic/fixdep fs/proc/.a.o.d fs/proc/a.o 'gcc -Wp,-MMD,fs/proc/.a.o.d -c -o fs/proc/b.o /s/fs/proc/b.c' > fs/proc/.a.o.cmd; rm -f fs/proc/.a.o.d\n\
            gcc -Wp,-MMD,arch/x86/kernel/.head_64.o.d -D__ASSEMBLY__ -c -o arch/x86/kernel/head_64.o /s/arch/x86/kernel/head_64.S\n\
            gcc -Wp,-MMD,scripts/basic/.fixdep.d -O2 -o scripts/basic/fixdep /s/scripts/basic/fixdep.c\n";
        let got = compiles_of_dry_run(dry, Path::new("/o"));
        let units: Vec<&str> = got.iter().map(|c| c.unit.as_str()).collect();
        assert_eq!(units, ["fs/proc/a.o", "arch/x86/kernel/head_64.o"]);
    }

    #[test]
    fn normalizes_lexically() {
        assert_eq!(
            normalize(Path::new("/o/./a/../b/c.h")),
            Path::new("/o/b/c.h")
        );
    }
}
