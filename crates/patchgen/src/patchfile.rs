//! Source patches as text: which files a unified diff touches (`-p1`), refusing paths that
//! leave the tree and binary hunks. Pure text in, values out; applying patches is `src/patch.rs`.
//!
//! Also the source-level half of the `__LINE__` tolerance ([`keep_line_numbers`]): `#line`
//! directives after each changed stretch of a patched file, so untouched code keeps its
//! original line numbers, and before it, so the patch's own lines keep their patched-file
//! numbers; a directive goes only at a statement or block boundary outside comments and
//! continued lines. The binary-level half is elfdiff's comparison. And the lines a patch changed,
//! in the original numbering ([`changed_old_lines`]), which `klpgen explain` attributes.

/// Why a patch's file list cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("binary hunks cannot be applied to a kernel tree")]
    Binary,
    #[error("absolute path {path} in patch: paths must be relative to the tree (-p1)")]
    Absolute { path: String },
    #[error("path {path} leaves the kernel tree")]
    LeavesTree { path: String },
}

/// Files a unified diff touches, with the first path component stripped (`-p1`), in the order
/// they first appear. Refuses paths that leave the tree and binary hunks.
pub fn touched_files(text: &str) -> Result<Vec<String>, Error> {
    let mut out: Vec<String> = Vec::new();
    for line in text.lines() {
        if line.starts_with("GIT binary patch")
            || (line.starts_with("Binary files ") && line.ends_with(" differ"))
        {
            return Err(Error::Binary);
        }
        let Some(rest) = line
            .strip_prefix("+++ ")
            .or_else(|| line.strip_prefix("--- "))
        else {
            continue;
        };
        let path = rest.split('\t').next().unwrap_or("").trim();
        if path == "/dev/null" || path.is_empty() {
            continue;
        }
        if path.starts_with('/') {
            return Err(Error::Absolute {
                path: path.to_string(),
            });
        }
        // Like GNU patch's -p1: adjacent slashes count as one, so `a//etc/x` is `etc/x`
        // (never the absolute `/etc/x`).
        let stripped = path
            .split_once('/')
            .map_or(path, |(_, r)| r.trim_start_matches('/'));
        if stripped.is_empty() {
            continue;
        }
        if stripped.split('/').any(|c| c == "..") {
            return Err(Error::LeavesTree {
                path: path.to_string(),
            });
        }
        if !out.iter().any(|f| f == stripped) {
            out.push(stripped.to_string());
        }
    }
    Ok(out)
}

/// For each line of `text`, whether it starts inside a `/* */` comment (strings, character
/// literals and `//` comments are skipped while scanning).
fn starts_in_comment(lines: &[&str]) -> Vec<bool> {
    let mut out = Vec::with_capacity(lines.len());
    let mut in_comment = false;
    for line in lines {
        out.push(in_comment);
        let b = line.as_bytes();
        let mut i = 0;
        let mut quote: Option<u8> = None;
        while i < b.len() {
            if in_comment {
                if b[i] == b'*' && b.get(i + 1) == Some(&b'/') {
                    in_comment = false;
                    i += 2;
                    continue;
                }
            } else if let Some(q) = quote {
                if b[i] == b'\\' {
                    i += 2;
                    continue;
                }
                if b[i] == q {
                    quote = None;
                }
            } else if b[i] == b'"' || b[i] == b'\'' {
                quote = Some(b[i]);
            } else if b[i] == b'/' && b.get(i + 1) == Some(&b'*') {
                in_comment = true;
                i += 2;
                continue;
            } else if b[i] == b'/' && b.get(i + 1) == Some(&b'/') {
                break;
            }
            i += 1;
        }
    }
    out
}

/// Whether a `#line` directive may follow `prev` (the line before it): at a statement or
/// block boundary, not continuing a macro or string, not inside a comment (`comment_after`:
/// a comment is still open where the directive would go).
fn boundary_after(prev: &str, comment_after: bool) -> bool {
    let t = prev.trim_end();
    if comment_after || t.ends_with('\\') {
        return false;
    }
    t.is_empty() || t.ends_with(';') || t.ends_with('{') || t.ends_with('}') || t.ends_with("*/")
}

/// The source-level half of klpgen's `__LINE__` tolerance: `new` (a patched C file or header)
/// with `#line` directives after each changed stretch, so that the lines the patch did not
/// touch keep the numbers they have in `old` and `__LINE__` (WARN, BUG, pr_* helpers) in
/// untouched code compiles to the same value; and before each changed stretch, so that the
/// patch's own lines keep their numbers in the patched file (what the author sees in WARN
/// output, the printk index, DWARF), instead of running on from the original numbering. A
/// directive goes at a line boundary (after `;`, `{`, `}`, a blank line or a comment's end,
/// never inside a comment or a continued line): the first one of the stretch. None when no
/// line needs one.
pub fn keep_line_numbers(old: &str, new: &str) -> Option<String> {
    use similar::{DiffOp, TextDiff};
    let diff = TextDiff::from_lines(old, new);
    let new_lines: Vec<&str> = new.split_inclusive('\n').collect();
    let in_comment = starts_in_comment(&new_lines);
    // Presumed (old) line number wanted for new line index i, for lines in unchanged stretches.
    let mut want: Vec<Option<usize>> = vec![None; new_lines.len()];
    for op in diff.ops() {
        if let DiffOp::Equal {
            old_index,
            new_index,
            len,
        } = *op
        {
            for k in 0..len {
                want[new_index + k] = Some(old_index + k + 1);
            }
        }
    }
    let mut out = String::with_capacity(new.len() + 64);
    let mut presumed = 1usize; // the number the compiler gives the next line
    let mut inserted = false;
    for (i, line) in new_lines.iter().enumerate() {
        // Untouched lines want their old number, the patch's own lines their new one.
        let w = want[i].unwrap_or(i + 1);
        let may = i > 0 && boundary_after(new_lines[i - 1], in_comment[i]);
        if w != presumed && may && !line.trim_start().starts_with('#') {
            out.push_str(&format!("#line {w}\n"));
            presumed = w;
            inserted = want[i].is_some() || inserted;
        }
        out.push_str(line);
        presumed += 1;
    }
    inserted.then_some(out)
}

/// The lines of `old` that a patch changed on the way to `new`, as half-open ranges of 1-based
/// line numbers in `old`: removed and replaced lines, and for lines only inserted the nearest
/// non-blank old line on either side of the insertion (the code there is where the new lines
/// took effect; which of several blank lines the diff calls inserted is arbitrary).
pub fn changed_old_lines(old: &str, new: &str) -> Vec<(u64, u64)> {
    use similar::{DiffOp, TextDiff};
    let diff = TextDiff::from_lines(old, new);
    let old_lines: Vec<&str> = old.split_inclusive('\n').collect();
    let blank = |i: usize| old_lines.get(i).is_none_or(|l| l.trim().is_empty());
    let mut out: Vec<(u64, u64)> = Vec::new();
    for op in diff.ops() {
        let range = match *op {
            DiffOp::Equal { .. } => continue,
            DiffOp::Delete {
                old_index, old_len, ..
            }
            | DiffOp::Replace {
                old_index, old_len, ..
            } => (old_index as u64 + 1, (old_index + old_len) as u64 + 1),
            // Inserted before 0-based old line `old_index`.
            DiffOp::Insert { old_index, .. } => {
                let mut before = old_index;
                while before > 0 && blank(before - 1) {
                    before -= 1;
                }
                let mut after = old_index;
                while after < old_lines.len() && blank(after) {
                    after += 1;
                }
                // 0-based `before - 1` ..= `after`, as 1-based half-open.
                (before.max(1) as u64, after as u64 + 2)
            }
        };
        match out.last_mut() {
            Some(last) if last.1 >= range.0 => last.1 = last.1.max(range.1),
            _ => out.push(range),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changed_old_lines_of_replacements_removals_and_insertions() {
        let old = "a\nb\nc\nd\ne\nf\n";
        // Line 2 replaced, line 4 removed, a line inserted between 5 and 6.
        let new = "a\nB\nc\ne\nnew\nf\n";
        // (Adjacent ranges merge: the removal of 4 and the insertion after 5.)
        assert_eq!(changed_old_lines(old, new), vec![(2, 3), (4, 7)]);
        // Insertions at the very start and the very end.
        assert_eq!(changed_old_lines("a\nb\n", "x\na\nb\n"), vec![(1, 2)]);
        assert_eq!(changed_old_lines("a\nb\n", "a\nb\nx\n"), vec![(2, 4)]);
        // Blank lines around an insertion are passed over to the code on either side.
        let old = "a\n\nb\n\n\nc\n";
        let new = "a\n\nb\n\nx\n\n\nc\n";
        assert_eq!(changed_old_lines(old, new), vec![(3, 7)]);
        assert_eq!(changed_old_lines(old, old), Vec::<(u64, u64)>::new());
    }

    #[test]
    fn touched_files_strip_one_component() {
        let t = "--- a/fs/proc/cmdline.c\n+++ b/fs/proc/cmdline.c\n@@ -1 +1 @@\n-x\n+y\n";
        assert_eq!(touched_files(t).unwrap(), vec!["fs/proc/cmdline.c"]);
    }

    #[test]
    fn hostile_paths_are_refused() {
        assert_eq!(
            touched_files("--- a/x\n+++ /etc/passwd\n"),
            Err(Error::Absolute {
                path: "/etc/passwd".into()
            })
        );
        assert_eq!(
            touched_files("--- a/../x\n+++ b/../x\n"),
            Err(Error::LeavesTree {
                path: "a/../x".into()
            })
        );
        assert_eq!(
            touched_files("diff --git a/f b/f\nGIT binary patch\n"),
            Err(Error::Binary)
        );
        assert_eq!(
            touched_files("Binary files a/f and b/f differ\n"),
            Err(Error::Binary)
        );
    }

    #[test]
    fn new_files_come_from_plus_lines() {
        let t = "--- /dev/null\n+++ b/new.c\n@@ -0,0 +1 @@\n+x\n";
        assert_eq!(touched_files(t).unwrap(), vec!["new.c"]);
    }

    /// Found by the `patch_parse` fuzz target: `-p1` of `a//x` was the absolute `/x`.
    #[test]
    fn doubled_slashes_do_not_make_absolute_paths() {
        let t = "--- a//csg/prfstat.c\n+++ b//csg/prfstat.c\n";
        assert_eq!(touched_files(t).unwrap(), vec!["csg/prfstat.c"]);
        assert_eq!(
            touched_files("+++ b///etc/passwd\n").unwrap(),
            vec!["etc/passwd"]
        );
        assert_eq!(touched_files("+++ b//\n").unwrap(), Vec::<String>::new());
        assert!(touched_files("+++ b//../x\n").is_err());
    }

    #[test]
    fn files_are_listed_once_in_order() {
        let t = "--- a/b.c\t2024-01-01\n+++ b/b.c\n--- a/a.c\n+++ b/a.c\n";
        assert_eq!(touched_files(t).unwrap(), vec!["b.c", "a.c"]);
        assert_eq!(
            touched_files("not a patch\n").unwrap(),
            Vec::<String>::new()
        );
    }

    /// The line number the compiler gives each line of `text` (honouring `#line N`), keyed by
    /// the line's text for lines that occur once.
    fn presumed(text: &str) -> std::collections::HashMap<String, usize> {
        let mut out = std::collections::HashMap::new();
        let mut n = 1;
        for l in text.lines() {
            if let Some(v) = l.strip_prefix("#line ") {
                n = v.trim().parse().unwrap();
                continue;
            }
            out.insert(l.to_string(), n);
            n += 1;
        }
        out
    }

    #[test]
    fn lines_after_a_grown_hunk_keep_their_numbers() {
        let old = "int a(int x)\n{\n\treturn x;\n}\n\nint b(void)\n{\n\treturn __LINE__;\n}\n";
        let new = "int a(int x)\n{\n\tx++;\n\tx++;\n\treturn x;\n}\n\nint b(void)\n{\n\treturn __LINE__;\n}\n";
        let fixed = keep_line_numbers(old, new).expect("a directive");
        let (po, pf) = (presumed(old), presumed(&fixed));
        assert_eq!(
            pf["\treturn __LINE__;"], po["\treturn __LINE__;"],
            "{fixed}"
        );
        assert_eq!(pf["int b(void)"], po["int b(void)"], "{fixed}");
        // Removing the directives gives the patched file back.
        let stripped: String = fixed
            .split_inclusive('\n')
            .filter(|l| !l.starts_with("#line "))
            .collect();
        assert_eq!(stripped, new);
        // Shrinking works the same way.
        let fixed = keep_line_numbers(new, old).unwrap();
        assert_eq!(
            presumed(&fixed)["\treturn __LINE__;"],
            presumed(new)["\treturn __LINE__;"]
        );
    }

    #[test]
    fn no_directive_inside_comments_or_continued_lines() {
        let old = "int a;\n/*\n * doc\n */\n#define M(x) \\\n\t(x)\nint c = __LINE__;\n";
        // The change ends inside a comment and just before a continued macro line.
        let new = "int a;\nint a2;\n/*\n * doc\n */\n#define M(x) \\\n\t(x)\nint c = __LINE__;\n";
        let fixed = keep_line_numbers(old, new).unwrap();
        for (i, l) in fixed.lines().enumerate() {
            if l.starts_with("#line") {
                let prev = fixed.lines().nth(i - 1).unwrap();
                assert!(!prev.ends_with('\\'), "{fixed}");
            }
        }
        assert_eq!(presumed(&fixed)["int c = __LINE__;"], 7, "{fixed}");
        let old = "/* a\n b */\nint c = __LINE__;\n";
        let new = "/* a\n b\n more */\nint c = __LINE__;\n";
        let fixed = keep_line_numbers(old, new).unwrap();
        assert!(fixed.contains(" more */\n#line 3\nint c"), "{fixed}");
    }

    #[test]
    fn the_patchs_own_lines_keep_their_patched_numbers() {
        let old = "int a(void)\n{\n\treturn 1;\n}\n\nint b(void)\n{\n\treturn __LINE__;\n}\n";
        let new = "int a(void)\n{\n\tx();\n\ty();\n\treturn 1;\n}\n\nint b(void)\n{\n\tz();\n\treturn __LINE__;\n}\n";
        let fixed = keep_line_numbers(old, new).expect("directives");
        let (pn, pf) = (presumed(new), presumed(&fixed));
        // Untouched: the old numbers.
        assert_eq!(
            pf["\treturn __LINE__;"],
            presumed(old)["\treturn __LINE__;"],
            "{fixed}"
        );
        // The patch's lines, also after an earlier grown hunk: the patched file's numbers.
        for l in ["\tx();", "\ty();", "\tz();"] {
            assert_eq!(pf[l], pn[l], "{l} in\n{fixed}");
        }
    }

    #[test]
    fn same_length_changes_need_no_directive() {
        assert_eq!(keep_line_numbers("a;\nb;\nc;\n", "a;\nB;\nc;\n"), None);
        assert_eq!(keep_line_numbers("a;\n", "a;\nb;\n"), None);
    }
}
