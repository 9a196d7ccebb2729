//! The refusal catalogue (`docs/refusals.md`) against the code: every refusal kind klpgen emits
//! (`elfdiff::RefusalKind::ALL`, through which every refusal is built) is documented, every
//! documented kind is one of them and has a fixture (`//# refuse: <kind>`, which the fixture
//! harness checks really produces it; a kind only a build of several units can produce has a
//! `//# refuse: <kind>` line in a test of tests/cli.rs instead, whose assertions check it), and
//! every key-less `Verdict::Refused` message of the
//! CLI is documented; the `target.*` mismatch keys are documented there too, and every
//! `klpgen check` finding key in `docs/check.md`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The sources that can emit refusals: the CLI and the library crates (not tests, not xtask).
fn sources() -> Vec<(PathBuf, String)> {
    let mut files = Vec::new();
    rust_files(&root().join("src"), &mut files);
    for c in testsupport::library_crates() {
        rust_files(&c.join("src"), &mut files);
    }
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let text = std::fs::read_to_string(&p).expect("readable source");
            (p, text)
        })
        .collect()
}

/// The string literal starting at `start` (which must be a `"`): its content and the index just
/// past its closing quote.
fn literal(text: &str, start: usize) -> Option<(String, usize)> {
    let bytes = text.as_bytes();
    if bytes.get(start) != Some(&b'"') {
        return None;
    }
    let mut i = start + 1;
    let mut out = String::new();
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => {
                out.push_str(text.get(i..i + 2)?);
                i += 2;
            }
            b'"' => return Some((out, i + 1)),
            _ => {
                let c = text[i..].chars().next()?;
                out.push(c);
                i += c.len_utf8();
            }
        }
    }
    None
}

fn is_kind(s: &str) -> bool {
    !s.is_empty()
        && s.starts_with(|c: char| c.is_ascii_lowercase())
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

/// Refusal kinds klpgen emits: every refusal is built through its `RefusalKind`.
fn emitted_kinds() -> BTreeSet<String> {
    elfdiff::RefusalKind::ALL
        .iter()
        .map(|k| k.name().to_string())
        .collect()
}

fn catalogue() -> String {
    std::fs::read_to_string(root().join("docs/refusals.md")).expect("docs/refusals.md exists")
}

/// Kinds documented in the catalogue: headings `## \`refuse.<kind>.<...>\``.
fn documented_kinds(doc: &str) -> BTreeSet<String> {
    doc.lines()
        .filter_map(|l| l.strip_prefix("## `refuse."))
        .filter_map(|rest| {
            let kind: String = rest.chars().take_while(|&c| c != '.' && c != '`').collect();
            is_kind(&kind).then_some(kind)
        })
        .collect()
}

/// Kinds some fixture expects with `//# refuse: <kind>`, or a CLI test (tests/cli.rs) with an
/// indented `//# refuse: <kind> ...` line (for kinds a build of several units produces).
fn fixture_kinds() -> BTreeSet<String> {
    let mut kinds = BTreeSet::new();
    let cli = std::fs::read_to_string(root().join("tests/cli.rs")).expect("tests/cli.rs");
    for line in cli.lines() {
        if let Some(v) = line.trim_start().strip_prefix("//# refuse:") {
            kinds.extend(v.split_whitespace().take(1).map(String::from));
        }
    }
    let dir = root().join("tests/fixtures");
    for e in std::fs::read_dir(dir).expect("tests/fixtures").flatten() {
        let p = e.path();
        if p.extension().is_none_or(|x| x != "c") {
            continue;
        }
        let text = std::fs::read_to_string(&p).expect("readable fixture");
        for line in text.lines() {
            let Some(d) = line.strip_prefix("//#") else {
                continue;
            };
            if let Some(v) = d.trim().strip_prefix("refuse:") {
                kinds.extend(v.split_whitespace().map(String::from));
            }
        }
    }
    kinds
}

/// Refusals are built through `elfdiff::RefusalKind` alone (`crates/elfdiff/src/refusal.rs`),
/// so `RefusalKind::ALL` is every kind: no other source spells a refusal key.
#[test]
fn refusal_keys_come_from_refusal_kind() {
    let own = root().join("crates/elfdiff/src/refusal.rs");
    let mut prefixes = 0;
    for (p, text) in sources() {
        let code = &text[..text.find("#[cfg(test)]").unwrap_or(text.len())];
        if p == own {
            prefixes = code.matches("=> \"refuse.").count();
            continue;
        }
        assert!(
            !code.contains("\"refuse."),
            "{}: spells a refusal key; build the refusal through elfdiff::RefusalKind (crates/elfdiff/src/refusal.rs)",
            p.display()
        );
    }
    assert_eq!(
        prefixes,
        elfdiff::RefusalKind::ALL.len(),
        "refusal.rs: one key prefix per kind of RefusalKind::ALL"
    );
}

#[test]
fn every_emitted_kind_is_documented() {
    let emitted = emitted_kinds();
    let documented = documented_kinds(&catalogue());
    let missing: Vec<&String> = emitted.difference(&documented).collect();
    assert!(
        missing.is_empty(),
        "refusal kinds emitted but not in docs/refusals.md: {missing:?} (documented: {documented:?})"
    );
    let stale: Vec<&String> = documented.difference(&emitted).collect();
    assert!(
        stale.is_empty(),
        "docs/refusals.md documents refusal kinds klpgen does not emit (not in RefusalKind::ALL): {stale:?}"
    );
}

#[test]
fn every_documented_kind_has_a_fixture() {
    let documented = documented_kinds(&catalogue());
    assert!(
        !documented.is_empty(),
        "docs/refusals.md lists no `refuse.<kind>` heading"
    );
    let fixtures = fixture_kinds();
    let missing: Vec<&String> = documented.difference(&fixtures).collect();
    assert!(
        missing.is_empty(),
        "documented refusal kinds without a `//# refuse:` fixture in tests/fixtures: {missing:?}"
    );
}

/// The longest constant piece of a format string (placeholders removed), trimmed.
fn constant_part(fmt: &str) -> String {
    let mut pieces = Vec::new();
    let mut cur = String::new();
    let mut in_arg = false;
    for c in fmt.chars() {
        match c {
            '{' => {
                in_arg = true;
                pieces.push(std::mem::take(&mut cur));
            }
            '}' if in_arg => in_arg = false,
            c if !in_arg => cur.push(c),
            _ => {}
        }
    }
    pieces.push(cur);
    pieces
        .into_iter()
        .map(|p| {
            p.trim_matches(|c: char| c.is_whitespace() || c == ';' || c == ':' || c == ',')
                .to_string()
        })
        .max_by_key(|p| p.len())
        .unwrap_or_default()
}

#[test]
fn every_keyless_refusal_is_documented() {
    let doc = catalogue();
    let mut seen = 0;
    for (p, text) in sources() {
        let mut from = 0;
        while let Some(pos) = text[from..].find("Verdict::Refused(") {
            let at = from + pos;
            from = at + 1;
            // Pattern matches (`Verdict::Refused(_) =>`) and the definition are not refusals.
            let Some(q) = text[at..].find('"').map(|q| at + q) else {
                continue;
            };
            if text[at..q].contains(')') || text[at..q].contains("=>") {
                continue;
            }
            let (msg, _) = literal(&text, q).expect("terminated literal");
            // The wrappers that list keyed refusals are covered by the kinds above.
            if msg.contains("unsupported change(s)") {
                continue;
            }
            seen += 1;
            let part = constant_part(&msg);
            assert!(
                part.len() >= 12 && doc.contains(&part),
                "{}: refusal message {msg:?} is not in docs/refusals.md (looked for {part:?})",
                p.display()
            );
        }
    }
    assert!(
        seen > 0,
        "found no key-less Verdict::Refused in the sources"
    );
}

/// `target.<kind>` keys (the target's parts from different builds) defined in the sources.
fn emitted_target_keys() -> BTreeSet<String> {
    let mut keys = BTreeSet::new();
    for (_, text) in sources() {
        let mut from = 0;
        while let Some(pos) = text[from..].find("\"target.") {
            let at = from + pos;
            from = at + 1;
            if let Some((lit, _)) = literal(&text, at) {
                let kind = &lit["target.".len()..];
                if is_kind(kind) {
                    keys.insert(lit);
                }
            }
        }
    }
    keys
}

#[test]
fn every_target_mismatch_key_is_documented() {
    let emitted = emitted_target_keys();
    for k in [
        "target.vmlinux-mismatch",
        "target.symvers-mismatch",
        "target.source-mismatch",
    ] {
        assert!(
            emitted.contains(k),
            "scan of the sources missed {k}: {emitted:?}"
        );
    }
    let documented: BTreeSet<String> = catalogue()
        .lines()
        .filter_map(|l| l.strip_prefix("### `target."))
        .filter_map(|rest| rest.strip_suffix('`'))
        .map(|k| format!("target.{k}"))
        .collect();
    assert_eq!(
        emitted, documented,
        "target.* keys in the sources vs `### \\`target.*\\`` sections of docs/refusals.md"
    );
}

/// `klpgen check` finding keys: every key `crates/patchgen/src/check.rs` emits is listed in
/// docs/check.md, and every listed key is one the code can emit. A key built from a
/// placeholder (`"check.klp-sym.{what}"`) is matched by prefix and suffix; its documented
/// forms must name a kind the code spells as a literal (`"missing"`), or a `<symbol>`.
#[test]
fn every_check_key_is_documented() {
    let src = std::fs::read_to_string(root().join("crates/patchgen/src/check.rs")).unwrap();
    let code = &src[..src.find("#[cfg(test)]").unwrap_or(src.len())];
    let mut exact = BTreeSet::new();
    let mut patterns: BTreeSet<(String, String)> = BTreeSet::new();
    let mut literals = BTreeSet::new();
    let mut i = 0;
    while let Some(pos) = code[i..].find('"') {
        let at = i + pos;
        let Some((lit, end)) = literal(code, at) else {
            break;
        };
        i = end;
        literals.insert(lit.clone());
        if !lit.starts_with("check.") || lit.contains(' ') {
            continue;
        }
        match (lit.find('{'), lit.rfind('}')) {
            (Some(a), Some(b)) => {
                patterns.insert((lit[..a].to_string(), lit[b + 1..].to_string()));
            }
            _ => {
                exact.insert(lit);
            }
        }
    }
    assert!(exact.contains("check.modinfo.livepatch"), "{exact:?}");
    assert!(
        patterns.contains(&("check.undefined.".to_string(), String::new())),
        "{patterns:?}"
    );
    let doc = std::fs::read_to_string(root().join("docs/check.md")).expect("docs/check.md");
    let documented: BTreeSet<String> = doc
        .lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| l.split_once('`').map(|(k, _)| k.to_string()))
        .filter(|k| k.starts_with("check."))
        .collect();
    let missing: Vec<&String> = exact.difference(&documented).collect();
    assert!(
        missing.is_empty(),
        "check keys not in docs/check.md: {missing:?}"
    );
    for (pre, suf) in &patterns {
        assert!(
            documented
                .iter()
                .any(|d| d.starts_with(pre.as_str()) && d.ends_with(suf.as_str())),
            "no documented form of {pre}{{..}}{suf} in docs/check.md"
        );
    }
    for d in &documented {
        let ok = exact.contains(d)
            || patterns.iter().any(|(pre, suf)| {
                d.len() > pre.len() + suf.len()
                    && d.starts_with(pre.as_str())
                    && d.ends_with(suf.as_str())
                    && {
                        let hole = &d[pre.len()..d.len() - suf.len()];
                        (hole.starts_with('<') && hole.ends_with('>')) || literals.contains(hole)
                    }
            });
        assert!(ok, "docs/check.md lists {d}, which check.rs does not emit");
    }
}
