//! Expected outputs stored as files and compared with what the code produces now. A mismatch
//! fails with a unified diff (expected → actual); `KLPGEN_BLESS=1` (what `cargo xtask bless`
//! sets) rewrites the files instead.

use std::fmt::Write as _;
use std::path::Path;

/// Whether this run re-blesses the snapshots.
pub fn blessing() -> bool {
    std::env::var_os("KLPGEN_BLESS").is_some_and(|v| !v.is_empty() && v != "0")
}

/// Compare `actual` with the snapshot file `path` (or write it when blessing).
pub fn check(path: &Path, actual: &str) -> Result<(), String> {
    let expected = match std::fs::read_to_string(path) {
        Ok(s) => Some(s),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    };
    if expected.as_deref() == Some(actual) {
        return Ok(());
    }
    if blessing() {
        return std::fs::write(path, actual)
            .map_err(|e| format!("cannot write {}: {e}", path.display()));
    }
    let rel = relative(path);
    match expected {
        None => Err(format!(
            "snapshot {rel} does not exist; run `cargo xtask bless` and review it. Actual:\n{actual}"
        )),
        Some(exp) => Err(format!(
            "snapshot {rel} differs (- expected, + actual); if the change is intended, run `cargo xtask bless` and review the diff:\n{}",
            unified_diff(&exp, actual, 3)
        )),
    }
}

/// A snapshot that must not exist (the fixture no longer produces that output): deleted when
/// blessing, else an error.
pub fn check_absent(path: &Path, why: &str) -> Result<(), String> {
    if !path.exists() {
        return Ok(());
    }
    if blessing() {
        return std::fs::remove_file(path)
            .map_err(|e| format!("cannot remove {}: {e}", path.display()));
    }
    Err(format!(
        "snapshot {} exists but {why}; run `cargo xtask bless` to remove it",
        relative(path)
    ))
}

fn relative(path: &Path) -> String {
    path.strip_prefix(crate::repo_root())
        .unwrap_or(path)
        .display()
        .to_string()
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Op {
    Same,
    Del,
    Add,
}

/// Line edit script by longest common subsequence (snapshots are a few hundred lines).
fn edits<'a>(a: &[&'a str], b: &[&'a str]) -> Vec<(Op, &'a str)> {
    let (n, m) = (a.len(), b.len());
    // lcs[i][j]: LCS length of a[i..] and b[j..].
    let mut lcs = vec![vec![0u32; m + 1]; n + 1];
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            lcs[i][j] = if a[i] == b[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let (mut i, mut j) = (0, 0);
    let mut out = Vec::with_capacity(n + m);
    while i < n || j < m {
        if i < n && j < m && a[i] == b[j] {
            out.push((Op::Same, a[i]));
            i += 1;
            j += 1;
        } else if i < n && (j == m || lcs[i + 1][j] >= lcs[i][j + 1]) {
            // Deletions first, as diff(1) prints them.
            out.push((Op::Del, a[i]));
            i += 1;
        } else {
            out.push((Op::Add, b[j]));
            j += 1;
        }
    }
    out
}

/// `expected` → `actual` as unified-diff hunks with `context` lines around each change.
pub fn unified_diff(expected: &str, actual: &str, context: usize) -> String {
    let a: Vec<&str> = expected.lines().collect();
    let b: Vec<&str> = actual.lines().collect();
    let script = edits(&a, &b);
    let changed: Vec<usize> = script
        .iter()
        .enumerate()
        .filter(|(_, (op, _))| *op != Op::Same)
        .map(|(k, _)| k)
        .collect();
    let mut out = String::from("--- expected\n+++ actual\n");
    if changed.is_empty() {
        // Only a difference the lines do not show (a final newline).
        out.push_str("(the texts differ only in line endings or the final newline)\n");
        return out;
    }
    // Group changes whose context windows touch into hunks.
    let mut hunks: Vec<(usize, usize)> = Vec::new();
    for &k in &changed {
        let start = k.saturating_sub(context);
        let end = (k + context + 1).min(script.len());
        match hunks.last_mut() {
            Some(h) if start <= h.1 => h.1 = end,
            _ => hunks.push((start, end)),
        }
    }
    for (start, end) in hunks {
        // Line numbers (1-based) of the hunk's first line on each side.
        let before = &script[..start];
        let a_line = before.iter().filter(|(op, _)| *op != Op::Add).count() + 1;
        let b_line = before.iter().filter(|(op, _)| *op != Op::Del).count() + 1;
        let body = &script[start..end];
        let a_len = body.iter().filter(|(op, _)| *op != Op::Add).count();
        let b_len = body.iter().filter(|(op, _)| *op != Op::Del).count();
        let _ = writeln!(out, "@@ -{a_line},{a_len} +{b_line},{b_len} @@");
        for (op, line) in body {
            let c = match op {
                Op::Same => ' ',
                Op::Del => '-',
                Op::Add => '+',
            };
            let _ = writeln!(out, "{c}{line}");
        }
    }
    out
}

/// A check of the diff format itself (run as a trial of the snapshot harness, which has no
/// libtest `#[test]` functions).
pub fn self_test() -> Result<(), String> {
    let exp = "a\nb\nc\nd\ne\nf\ng\nh\n";
    let act = "a\nb\nc\nD\ne\nf\ng\nh\nnew\n";
    let got = unified_diff(exp, act, 1);
    let want =
        "--- expected\n+++ actual\n@@ -3,3 +3,3 @@\n c\n-d\n+D\n e\n@@ -8,1 +8,2 @@\n h\n+new\n";
    if got != want {
        return Err(format!("unified_diff gave\n{got}\nexpected\n{want}"));
    }
    if !unified_diff("x\n", "x", 3).contains("final newline") {
        return Err("a difference in the final newline is not explained".into());
    }
    Ok(())
}
