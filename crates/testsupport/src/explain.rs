//! `//# explain:` directives of the fixture harness: what `elfdiff::explain` must say about one
//! function of a fixture compiled with `-g`.
//!
//! `//# explain: FUNC key=value ...`, values may be double-quoted. Keys: `kind=` and `cause=`
//! (as serialised, e.g. `relocation`, `inlined-callee`), `orig-line=`/`patched-line=` (a number,
//! or `@mark` for the line of the fixture that carries the comment `@mark`), `orig-insn=`/
//! `patched-insn=` and `orig-reloc=`/`patched-reloc=` (substrings), `inlined=NAME` (an inlined
//! callee at the difference), `refused=KIND` (the function's refusal is `refuse.KIND.*`).

use elfdiff::explain::{Explain, Explanation, Site};

/// One `//# explain:` line.
#[derive(Debug, Clone)]
pub struct Directive {
    pub function: String,
    pub checks: Vec<(String, String)>,
}

/// Split on whitespace, keeping double-quoted runs together (quotes removed).
fn words(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut any = false;
    for c in s.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                any = true;
            }
            c if c.is_whitespace() && !quoted => {
                if any || !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
                any = false;
            }
            c => cur.push(c),
        }
    }
    if any || !cur.is_empty() {
        out.push(cur);
    }
    out
}

pub fn parse(val: &str) -> Result<Directive, String> {
    let mut w = words(val).into_iter();
    let function = w
        .next()
        .ok_or("explain: directive without a function name")?;
    let mut checks = Vec::new();
    for kv in w {
        let (k, v) = kv
            .split_once('=')
            .ok_or_else(|| format!("explain {function}: {kv:?} is not key=value"))?;
        const KEYS: &[&str] = &[
            "kind",
            "cause",
            "orig-line",
            "patched-line",
            "orig-insn",
            "patched-insn",
            "orig-reloc",
            "patched-reloc",
            "inlined",
            "refused",
        ];
        if !KEYS.contains(&k) {
            return Err(format!("explain {function}: unknown key {k:?}"));
        }
        checks.push((k.to_string(), v.to_string()));
    }
    if checks.is_empty() {
        return Err(format!("explain {function}: nothing to check"));
    }
    Ok(Directive { function, checks })
}

/// The line number a `*-line=` value stands for in the fixture source.
fn line_of(src: &str, v: &str) -> Result<u64, String> {
    if let Some(mark) = v.strip_prefix('@') {
        let hits: Vec<u64> = src
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.starts_with("//#"))
            .filter(|(_, l)| {
                l.split(|c: char| !(c.is_alphanumeric() || c == '@' || c == '-' || c == '_'))
                    .any(|w| w == format!("@{mark}"))
            })
            .map(|(i, _)| i as u64 + 1)
            .collect();
        return match hits.as_slice() {
            [one] => Ok(*one),
            [] => Err(format!("no line carries the mark @{mark}")),
            _ => Err(format!("mark @{mark} is on several lines {hits:?}")),
        };
    }
    v.parse()
        .map_err(|_| format!("{v:?} is neither a line number nor @mark"))
}

fn site_line(s: Option<&Site>) -> Option<(String, u64)> {
    let l = s?.location.as_ref()?;
    Some((l.file.clone(), l.line))
}

fn check_one(e: &Explanation, d: &Directive, src: &str, file: &str) -> Result<(), String> {
    for (k, v) in &d.checks {
        let ok = match k.as_str() {
            "kind" => json_name(&e.kind) == *v,
            "cause" => json_name(&e.cause) == *v,
            "orig-line" | "patched-line" => {
                let want = line_of(src, v)?;
                let site = if k == "orig-line" {
                    &e.orig
                } else {
                    &e.patched
                };
                site_line(site.as_ref()) == Some((file.to_string(), want))
            }
            "orig-insn" | "patched-insn" => {
                let site = if k == "orig-insn" {
                    &e.orig
                } else {
                    &e.patched
                };
                site.as_ref()
                    .and_then(|s| s.insn.as_deref())
                    .is_some_and(|i| i.contains(v.as_str()))
            }
            "orig-reloc" | "patched-reloc" => e.relocation.as_ref().is_some_and(|r| {
                let side = if k == "orig-reloc" {
                    &r.orig
                } else {
                    &r.patched
                };
                side.contains(v.as_str())
            }),
            "inlined" => e.inlined_callees.iter().any(|c| c == v),
            "refused" => e
                .refused
                .as_deref()
                .is_some_and(|r| r.starts_with(&format!("refuse.{v}."))),
            other => return Err(format!("unknown key {other}")),
        };
        if !ok {
            return Err(format!(
                "explain {}: expected {k}={v:?}, got {}",
                d.function,
                serde_json::to_string_pretty(e).unwrap_or_default()
            ));
        }
    }
    Ok(())
}

/// Check every directive against the explanations; `file` is the fixture's file name as the
/// line tables show it.
pub fn check(ex: &Explain, directives: &[Directive], src: &str, file: &str) -> Result<(), String> {
    if !directives.is_empty() && !ex.warnings.is_empty() {
        return Err(format!("explain: {:?}", ex.warnings));
    }
    for d in directives {
        let e = ex
            .functions
            .iter()
            .find(|e| e.function == d.function || e.patched_name.as_deref() == Some(&d.function))
            .ok_or_else(|| {
                let names: Vec<&str> = ex.functions.iter().map(|e| e.function.as_str()).collect();
                format!("explain {}: no explanation (have {names:?})", d.function)
            })?;
        check_one(e, d, src, file)?;
    }
    Ok(())
}

/// The serialised name of an explain enum (`kind`, `cause`), as it appears in JSON.
fn json_name<T: serde::Serialize>(v: &T) -> String {
    match serde_json::to_value(v) {
        Ok(serde_json::Value::String(s)) => s,
        Ok(v) => v.to_string(),
        Err(e) => format!("<{e}>"),
    }
}
