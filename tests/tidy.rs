//! Tidy checks: an ordinary test that reads the workspace's own sources (as rust-analyzer's
//! `tidy` test does) and fails with `file:line` for each breach of a source-level rule.
//!
//! - `library_io`: the library crates (every `crates/*` but the test-support crate) never
//!   spawn processes, touch the file system, print or read the environment: no
//!   `std::process`, `Command::new`, `std::fs`, `File::`, `print!`/`println!`/`eprint!`/
//!   `eprintln!`/`dbg!`, `std::env`, `io::stdout`/`stderr`/`stdin` in their non-test code,
//!   also not through a `use std::{...}` group (`object::File::parse` is another crate's
//!   `File`: a `File::` or `Command::new` qualified by a path counts only after `fs::` or
//!   `process::`).
//! - `cli_spawns_only_in_process_rs`: in `src/`, only `src/process.rs` starts programs.
//! - `doc_line`: every `.rs` file of the workspace (`src`, `crates`, `xtask`, `tests`, `fuzz`)
//!   opens with a `//!` line saying what it is for.
//! - `machine_names`: names of a machine (`X86_64`, `x86_64`, `R_X86_64*`, `EM_X86_64`,
//!   `iced_x86`, `ppc64`, `powerpc`, `s390`, `aarch64`, `arm64`, `loongarch` in any case, the
//!   relocation and machine names of other architectures, their decoder crates, `CONFIG_X86_*`,
//!   `CONFIG_PPC*`, `CONFIG_S390*`, `CONFIG_ARM64*`, `CONFIG_LOONGARCH*`) occur
//!   only under the architecture folder `crates/elfdiff/src/arch/`, not in the non-test code of
//!   `src/` or of the library crates.
//!
//! What counts: comments never do (a doc comment may say which machine a rule is for); string
//! literals do for `machine_names` (a kernel option name such as `"CONFIG_X86_KERNEL_IBT"` or
//! a relocation name in a message is machine knowledge as much as an identifier is) and do not
//! for `library_io` (a message may say "cannot read"). Non-test code is everything outside
//! `tests/` directories, `#[cfg(test)]` items (a module, function or `use`, to its closing
//! brace or semicolon) and files a `#[cfg(test)] mod name;` declares (only `#[cfg(test)]`
//! itself: a `cfg(any(test, ...))` item is checked, which errs on the strict side). The lexer below blanks
//! comments (nested block comments too) and the contents of string, raw string, byte string
//! and character literals, keeping every newline, so offsets still give the right line.

use std::path::{Path, PathBuf};

/// A source file with comments and literal contents blanked.
struct Stripped {
    /// The text with every comment and the contents of every string and character literal
    /// replaced by spaces (newlines kept; the quotes stay).
    code: String,
    /// String literals: (byte offset of the opening quote, contents as written).
    strings: Vec<(usize, String)>,
}

fn is_ident(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// Blank comments and literal contents of Rust source `src`.
fn strip(src: &str) -> Stripped {
    let b = src.as_bytes();
    let mut out = b.to_vec();
    let mut strings = Vec::new();
    let blank = |out: &mut Vec<u8>, from: usize, to: usize| {
        for c in &mut out[from..to] {
            if *c != b'\n' {
                *c = b' ';
            }
        }
    };
    let mut i = 0;
    while i < b.len() {
        let prev_ident = i > 0 && is_ident(b[i - 1]);
        if b[i..].starts_with(b"//") {
            let end = b[i..]
                .iter()
                .position(|&c| c == b'\n')
                .map_or(b.len(), |n| i + n);
            blank(&mut out, i, end);
            i = end;
        } else if b[i..].starts_with(b"/*") {
            let (mut j, mut depth) = (i + 2, 1);
            while j < b.len() && depth > 0 {
                if b[j..].starts_with(b"/*") {
                    depth += 1;
                    j += 2;
                } else if b[j..].starts_with(b"*/") {
                    depth -= 1;
                    j += 2;
                } else {
                    j += 1;
                }
            }
            blank(&mut out, i, j);
            i = j;
        } else if let Some((open, hashes)) = raw_string_start(b, i).filter(|_| !prev_ident) {
            // r"..", r#".."#, br"..", cr"..": no escapes, ends at a quote and as many #.
            let start = open + 1;
            let mut j = start;
            let close = loop {
                if j >= b.len() {
                    break b.len();
                }
                if b[j] == b'"'
                    && b[j + 1..]
                        .iter()
                        .take(hashes)
                        .filter(|&&c| c == b'#')
                        .count()
                        == hashes
                {
                    break j;
                }
                j += 1;
            };
            strings.push((open, src[start..close].to_string()));
            blank(&mut out, start, close);
            i = (close + 1 + hashes).min(b.len());
        } else if b[i] == b'"' {
            let start = i + 1;
            let mut j = start;
            while j < b.len() && b[j] != b'"' {
                j += if b[j] == b'\\' { 2 } else { 1 };
            }
            let close = j.min(b.len());
            strings.push((i, src[start..close].to_string()));
            blank(&mut out, start, close);
            i = close + 1;
        } else if b[i] == b'\'' {
            // A character literal ('x', '\n', '\u{..}', 'é') or a lifetime / label ('a).
            let end = if b.get(i + 1) == Some(&b'\\') {
                b.get(i + 3..)
                    .and_then(|r| r.iter().position(|&c| c == b'\''))
                    .map(|n| i + 3 + n)
            } else {
                let len = src[i + 1..].chars().next().map_or(0, char::len_utf8);
                (b.get(i + 1 + len) == Some(&b'\'')).then_some(i + 1 + len)
            };
            match end {
                Some(end) => {
                    blank(&mut out, i + 1, end);
                    i = end + 1;
                }
                None => i += 1,
            }
        } else {
            i += 1;
        }
    }
    Stripped {
        code: String::from_utf8(out).expect("only ASCII bytes were replaced"),
        strings,
    }
}

/// At `i`, the start of a raw string (`r`, `br` or `cr`, hashes, quote): (offset of the quote,
/// number of hashes).
fn raw_string_start(b: &[u8], i: usize) -> Option<(usize, usize)> {
    let mut j = i;
    if matches!(b.get(j), Some(b'b' | b'c')) {
        j += 1;
    }
    if b.get(j) != Some(&b'r') {
        return None;
    }
    j += 1;
    let hashes = b[j..].iter().take_while(|&&c| c == b'#').count();
    (b.get(j + hashes) == Some(&b'"')).then_some((j + hashes, hashes))
}

/// Byte ranges of `#[cfg(test)]` items in stripped code, and the names of the modules such an
/// item declares without a body (`#[cfg(test)] mod name;`, whose file is test code).
fn test_items(code: &str) -> (Vec<std::ops::Range<usize>>, Vec<String>) {
    let b = code.as_bytes();
    let mut ranges = Vec::new();
    let mut modules = Vec::new();
    let mut from = 0;
    while let Some(at) = code[from..].find("#[cfg(test)]").map(|n| from + n) {
        // The item runs to the brace closing its first `{`, or to a `;` met before any.
        let mut j = at + "#[cfg(test)]".len();
        let mut depth = 0usize;
        let mut opened = false;
        while j < b.len() {
            match b[j] {
                b'{' | b'(' | b'[' => {
                    opened |= b[j] == b'{';
                    depth += 1;
                }
                b'}' | b')' | b']' => {
                    depth = depth.saturating_sub(1);
                    if depth == 0 && opened {
                        break;
                    }
                }
                b';' if depth == 0 => break,
                _ => {}
            }
            j += 1;
        }
        let end = (j + 1).min(b.len());
        let item = code[at + "#[cfg(test)]".len()..end].trim();
        if !opened {
            let words: Vec<&str> = item.trim_end_matches(';').split_whitespace().collect();
            if let [.., "mod", name] = words.as_slice() {
                modules.push((*name).to_string());
            }
        }
        ranges.push(at..end);
        from = end;
    }
    (ranges, modules)
}

/// One source file as the checks see it.
struct File {
    /// Relative to the repository, with `/`.
    rel: String,
    text: String,
    stripped: Stripped,
    /// `#[cfg(test)]` items, and whether the whole file is test code.
    tests: Vec<std::ops::Range<usize>>,
    all_test: bool,
}

impl File {
    fn line(&self, offset: usize) -> usize {
        self.text.as_bytes()[..offset]
            .iter()
            .filter(|&&c| c == b'\n')
            .count()
            + 1
    }

    fn is_test(&self, offset: usize) -> bool {
        self.all_test || self.tests.iter().any(|r| r.contains(&offset))
    }
}

fn root() -> &'static Path {
    testsupport::repo_root()
}

/// Every `.rs` file under `dir` (recursively, skipping `target` and hidden directories).
fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        let name = e.file_name().to_string_lossy().into_owned();
        if p.is_dir() {
            if name != "target" && !name.starts_with('.') {
                rust_files(&p, out);
            }
        } else if name.ends_with(".rs") {
            out.push(p);
        }
    }
}

/// The `src/` trees of the CLI and the library crates, read, stripped, their test code found.
fn product_sources() -> Vec<File> {
    let mut paths = Vec::new();
    rust_files(&root().join("src"), &mut paths);
    for c in testsupport::library_crates() {
        rust_files(&c.join("src"), &mut paths);
    }
    paths.sort();
    let mut files: Vec<File> = paths
        .iter()
        .map(|p| {
            let text =
                std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            let stripped = strip(&text);
            let all_test = stripped.code.contains("#![cfg(test)]");
            let (tests, _) = test_items(&stripped.code);
            File {
                rel: relative(p),
                text,
                stripped,
                tests,
                all_test,
            }
        })
        .collect();
    // Files that a `#[cfg(test)] mod name;` declares are test code.
    let mut test_files = Vec::new();
    for f in &files {
        let (_, modules) = test_items(&f.stripped.code);
        let path = Path::new(&f.rel);
        let dir = match path.file_name().and_then(|n| n.to_str()) {
            Some("lib.rs" | "main.rs" | "mod.rs") => path.parent().unwrap().to_path_buf(),
            _ => path.with_extension(""),
        };
        for m in modules {
            test_files.push(relative(&root().join(dir.join(format!("{m}.rs")))));
            test_files.push(relative(&root().join(dir.join(&m).join("mod.rs"))));
        }
    }
    for f in &mut files {
        f.all_test |= test_files.contains(&f.rel);
    }
    files
}

fn relative(p: &Path) -> String {
    p.strip_prefix(root())
        .unwrap_or(p)
        .to_string_lossy()
        .replace('\\', "/")
}

/// Offsets of `needle` in `hay` that do not continue an identifier on the left.
fn find_word<'a>(hay: &'a str, needle: &'a str) -> impl Iterator<Item = usize> + 'a {
    hay.match_indices(needle)
        .map(|(i, _)| i)
        .filter(move |&i| i == 0 || !is_ident(hay.as_bytes()[i - 1]))
}

/// The paths a `use` tree names, braces expanded: `std::{fs, io::{self, Write}}` gives
/// `std::fs`, `std::io::self`, `std::io::Write`.
fn use_paths(tree: &str) -> Vec<String> {
    // Renames (`fs as f`) name the same path: drop `as NAME`, keeping what follows NAME.
    let mut kept = String::new();
    let mut words = tree.split_whitespace();
    while let Some(w) = words.next() {
        if w == "as" {
            let renamed = words.next().unwrap_or_default();
            kept.push_str(renamed.trim_start_matches(|c: char| is_ident(c as u8)));
        } else {
            kept.push_str(w);
        }
    }
    let tree = kept;
    fn expand(prefix: &str, t: &str, out: &mut Vec<String>) {
        match t.find('{') {
            None => out.push(format!("{prefix}{t}")),
            Some(open) => {
                let head = &t[..open];
                let inner = &t[open + 1..t.rfind('}').unwrap_or(t.len())];
                let mut depth = 0;
                let mut start = 0;
                for (i, c) in inner.char_indices() {
                    match c {
                        '{' => depth += 1,
                        '}' => depth -= 1,
                        ',' if depth == 0 => {
                            expand(&format!("{prefix}{head}"), &inner[start..i], out);
                            start = i + 1;
                        }
                        _ => {}
                    }
                }
                if start < inner.len() {
                    expand(&format!("{prefix}{head}"), &inner[start..], out);
                }
            }
        }
    }
    let mut out = Vec::new();
    expand("", tree.trim_start_matches("::"), &mut out);
    out
}

/// What `library_io` looks for in code (outside comments and literals).
const IO_NEEDLES: &[&str] = &[
    "std::process",
    "Command::new",
    "std::fs",
    "File::",
    "println!",
    "eprintln!",
    "print!",
    "eprint!",
    "dbg!",
    "std::env",
    "io::stdout",
    "io::stderr",
    "io::stdin",
];

/// `use` paths that bring process, file-system, environment or terminal access in.
const IO_USE_PREFIXES: &[&str] = &[
    "std::process",
    "std::fs",
    "std::env",
    "std::io::stdout",
    "std::io::stderr",
    "std::io::stdin",
];

/// `library_io` findings of one file of a library crate.
fn io_findings(f: &File) -> Vec<String> {
    let code = &f.stripped.code;
    let mut found = Vec::new();
    for needle in IO_NEEDLES {
        for at in find_word(code, needle) {
            if f.is_test(at) {
                continue;
            }
            // `object::File::parse` is another crate's File; `fs::File::` and a bare `File::`
            // (imported) count. Likewise only `process::Command::new` or a bare one.
            let qualified_by = |module: &str| {
                let before = &code[..at];
                !before.ends_with("::") || before.ends_with(&format!("{module}::"))
            };
            let counts = match *needle {
                "File::" => qualified_by("fs"),
                "Command::new" => qualified_by("process"),
                _ => true,
            };
            if counts {
                found.push(format!("{}:{}: `{needle}`", f.rel, f.line(at)));
            }
        }
    }
    for at in find_word(code, "use ") {
        if f.is_test(at) {
            continue;
        }
        let end = code[at..].find(';').map_or(code.len(), |n| at + n);
        for p in use_paths(&code[at + 4..end]) {
            if let Some(prefix) = IO_USE_PREFIXES
                .iter()
                .find(|pre| p == **pre || p.starts_with(&format!("{pre}::")))
            {
                let line = format!("{}:{}: `use {p}`", f.rel, f.line(at));
                // `use std::fs;` is already reported by the needle `std::fs`.
                if !found
                    .iter()
                    .any(|l| l.starts_with(&format!("{}:{}: `{prefix}", f.rel, f.line(at))))
                {
                    found.push(line);
                }
            }
        }
    }
    found.sort();
    found.dedup();
    found
}

/// Names of a machine: identifiers containing the first list, identifiers and string
/// contents starting with (or containing) the second.
const MACHINE_IN_IDENT: &[&str] = &[
    "X86_64",
    "x86_64",
    "iced_x86",
    "ppc64",
    "PPC64",
    "Ppc64",
    "powerpc",
    "s390",
    "S390",
    "aarch64",
    "Aarch64",
    "AARCH64",
    "arm64",
    "ARM64",
    "loongarch",
    "Loongarch",
    "LOONGARCH",
    "yaxpeax",
];
const MACHINE_PREFIXES: &[&str] = &[
    "R_X86_64",
    "EM_X86_64",
    "R_PPC64_",
    "R_390_",
    "R_AARCH64_",
    "R_LARCH_",
    "EM_PPC64",
    "EM_S390",
    "EM_AARCH64",
    "EM_LOONGARCH",
    "CONFIG_X86_",
    "CONFIG_PPC",
    "CONFIG_S390",
    "CONFIG_ARM64",
    "CONFIG_LOONGARCH",
];

/// The architecture folder, where machine names belong.
const ARCH_DIR: &str = "crates/elfdiff/src/arch/";

/// `machine_names` findings of one file.
fn machine_findings(f: &File) -> Vec<String> {
    let mut found = Vec::new();
    let code = f.stripped.code.as_bytes();
    let mut i = 0;
    while i < code.len() {
        if is_ident(code[i]) && (i == 0 || !is_ident(code[i - 1])) {
            let end = code[i..]
                .iter()
                .position(|&c| !is_ident(c))
                .map_or(code.len(), |n| i + n);
            let ident = &f.stripped.code[i..end];
            let machine = MACHINE_IN_IDENT.iter().any(|m| ident.contains(m))
                || MACHINE_PREFIXES.iter().any(|m| ident.contains(m));
            if machine && !ident.as_bytes()[0].is_ascii_digit() && !f.is_test(i) {
                found.push(format!("{}:{}: `{ident}`", f.rel, f.line(i)));
            }
            i = end;
        } else {
            i += 1;
        }
    }
    for (at, s) in &f.stripped.strings {
        if f.is_test(*at) {
            continue;
        }
        if let Some(m) = MACHINE_IN_IDENT
            .iter()
            .chain(MACHINE_PREFIXES)
            .find(|m| s.contains(*m))
        {
            found.push(format!(
                "{}:{}: {m:?} in the string {s:?}",
                f.rel,
                f.line(*at)
            ));
        }
    }
    found
}

fn fail_with(what: &str, findings: &[String]) {
    assert!(
        findings.is_empty(),
        "{what} ({} findings):\n{}",
        findings.len(),
        findings.join("\n")
    );
}

#[test]
fn library_io() {
    let mut findings = Vec::new();
    for f in product_sources()
        .iter()
        .filter(|f| f.rel.starts_with("crates/"))
    {
        findings.extend(io_findings(f));
    }
    fail_with(
        "library crates spawn, touch files, print or read the environment in non-test code \
         (they take bytes and return values; only src/process.rs runs programs)",
        &findings,
    );
}

/// Only `src/process.rs` starts programs in the CLI (the invariant of ARCHITECTURE.md: it
/// polls children so that a signal stops them before the source tree is restored).
#[test]
fn cli_spawns_only_in_process_rs() {
    let mut findings = Vec::new();
    for f in product_sources()
        .iter()
        .filter(|f| f.rel.starts_with("src/") && f.rel != "src/process.rs")
    {
        let code = &f.stripped.code;
        for needle in ["Command::new", "process::Command"] {
            for at in find_word(code, needle) {
                // As for the libraries: another crate's `Command::new` (`clap::`) builds no
                // process; `process::Command::new` and a bare (imported) one count.
                let before = &code[..at];
                let other_crate = needle == "Command::new"
                    && before.ends_with("::")
                    && !before.ends_with("process::");
                if !f.is_test(at) && !other_crate {
                    findings.push(format!("{}:{}: `{needle}`", f.rel, f.line(at)));
                }
            }
        }
    }
    fail_with("programs started outside src/process.rs", &findings);
}

#[test]
fn doc_line() {
    let mut paths = Vec::new();
    for dir in ["src", "crates", "xtask", "tests", "fuzz"] {
        rust_files(&root().join(dir), &mut paths);
    }
    paths.sort();
    assert!(paths.len() > 50, "found only {} .rs files", paths.len());
    let findings: Vec<String> = paths
        .iter()
        .filter(|p| {
            let text = std::fs::read_to_string(p).unwrap_or_default();
            !text.starts_with("//!")
        })
        .map(|p| format!("{}:1: does not open with a `//!` line", relative(p)))
        .collect();
    fail_with(
        "files without a `//!` line saying what they are for",
        &findings,
    );
}

#[test]
fn machine_names() {
    let mut findings = Vec::new();
    for f in product_sources()
        .iter()
        .filter(|f| !f.rel.starts_with(ARCH_DIR))
    {
        findings.extend(machine_findings(f));
    }
    fail_with(
        "machine names outside crates/elfdiff/src/arch/ (the architecture code goes there, \
         behind the Arch trait)",
        &findings,
    );
}

/// The rules on hand-written samples, so a broken lexer cannot make them pass by finding
/// nothing.
fn sample(rel: &str, text: &str) -> File {
    let stripped = strip(text);
    let (tests, _) = test_items(&stripped.code);
    File {
        rel: rel.into(),
        text: text.into(),
        stripped,
        tests,
        all_test: false,
    }
}

#[test]
fn lexer_blanks_comments_and_literals() {
    let src = "let a = \"x // y\"; // std::fs\n/* outer /* inner */ println! */ let c = '\"';\n\
               let l: &'static str = r#\"a \"quoted\" std::env\"#; let d = '\\'';\nfoo!()";
    let s = strip(src);
    assert_eq!(s.code.len(), src.len());
    assert_eq!(s.code.lines().count(), src.lines().count());
    for gone in ["std::fs", "println", "std::env", "quoted", "x // y"] {
        assert!(!s.code.contains(gone), "{gone:?} left in {:?}", s.code);
    }
    assert!(
        s.code.contains("&'static str"),
        "lifetime kept: {:?}",
        s.code
    );
    assert!(
        s.code.contains("foo!()"),
        "code after the literals kept: {:?}",
        s.code
    );
    let strings: Vec<&str> = s.strings.iter().map(|(_, t)| t.as_str()).collect();
    assert_eq!(strings, ["x // y", "a \"quoted\" std::env"]);
}

#[test]
fn rules_find_what_they_should() {
    let f = sample(
        "crates/x/src/lib.rs",
        "//! Doc naming std::fs and X86_64.\n\
         use std::{collections::HashMap, fs};\n\
         fn a() { let f = object::File::parse(d); eprintln!(\"{}\", 1); }\n\
         fn b() { let m = elf::EM_X86_64; c.is_set(\"CONFIG_X86_KERNEL_IBT\"); }\n\
         #[cfg(test)]\n\
         mod tests { fn t() { std::fs::read(\"x\"); let r = elf::R_X86_64_PC32; } }\n\
         fn c() -> u32 { elf::R_AARCH64_CALL26 }\n\
         fn d() { arch::Ppc64le; c.is_set(\"CONFIG_S390\"); k(\"powerpc\"); }\n",
    );
    assert_eq!(
        io_findings(&f),
        [
            "crates/x/src/lib.rs:2: `use std::fs`",
            "crates/x/src/lib.rs:3: `eprintln!`",
        ]
    );
    assert_eq!(
        machine_findings(&f),
        [
            "crates/x/src/lib.rs:4: `EM_X86_64`",
            "crates/x/src/lib.rs:7: `R_AARCH64_CALL26`",
            "crates/x/src/lib.rs:8: `Ppc64le`",
            "crates/x/src/lib.rs:4: \"CONFIG_X86_\" in the string \"CONFIG_X86_KERNEL_IBT\"",
            "crates/x/src/lib.rs:8: \"S390\" in the string \"CONFIG_S390\"",
            "crates/x/src/lib.rs:8: \"powerpc\" in the string \"powerpc\"",
        ]
    );
    let (_, modules) = test_items("#[cfg(test)]\nmod testimage;\nmod real;");
    assert_eq!(modules, ["testimage"]);
    assert_eq!(
        use_paths("std::{fs, io::{self, Write}}"),
        ["std::fs", "std::io::self", "std::io::Write"]
    );
    assert_eq!(
        use_paths("std::{\n    collections::HashMap as Map,\n    fs as f,\n}"),
        ["std::collections::HashMap", "std::fs"]
    );
}
