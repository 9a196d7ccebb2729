//! The preprocessor directives of one C file that decide what it includes: `#include` and
//! `#include_next` (quoted, angled, or a macro), the conditionals around them, and the
//! `#define`/`#undef` lines the include graph needs (of `CONFIG_` macros, whose values in the
//! configuration then no longer hold; and of macros that name a file to include). Comments,
//! strings and line continuations are handled as the preprocessor does, so a commented-out
//! `#include` is not one and a directive split over lines is read whole.
//!
//! [`eval`] evaluates a conditional's expression over the configuration with three values
//! (true, false, unknown): `defined`, `IS_ENABLED` and its kin, `!`, `&&`, `||`, comparisons of
//! numbers, and `CONFIG_` macros from the configuration; anything else is unknown, and an
//! unknown condition keeps both branches. That over-approximates what a file includes, never
//! under: the scan's result is a superset, made exact by kbuild's records afterwards.

use std::collections::{HashMap, HashSet};

/// One directive.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Dir {
    If(String),
    Ifdef(String),
    Ifndef(String),
    Elif(String),
    Else,
    Endif,
    /// `#include` / `#include_next` of a file: (quoted, next, name).
    Include(bool, bool, String),
    /// `#include MACRO...`: the include names whatever the macro expands to.
    IncludeMacro(String),
    /// `#define NAME VALUE` of a `CONFIG_` macro, or of a macro whose value names a file
    /// (`<...>` or `"..."`).
    Define(String, String),
    Undef(String),
}

/// The directives of C source `text`.
pub fn directives(text: &str) -> Vec<Dir> {
    let mut out = Vec::new();
    for line in logical_lines(text) {
        let l = line.trim_start();
        let Some(rest) = l.strip_prefix('#') else {
            continue;
        };
        let rest = rest.trim_start();
        let (kw, arg) = match rest.find(|c: char| !c.is_ascii_alphanumeric() && c != '_') {
            Some(i) => (&rest[..i], rest[i..].trim()),
            None => (rest, ""),
        };
        let first_word = || arg.split_whitespace().next().unwrap_or("").to_string();
        match kw {
            "if" => out.push(Dir::If(arg.to_string())),
            "ifdef" => out.push(Dir::Ifdef(first_word())),
            "ifndef" => out.push(Dir::Ifndef(first_word())),
            "elif" => out.push(Dir::Elif(arg.to_string())),
            // C23's #elifdef/#elifndef: kept as unknown conditions.
            "elifdef" | "elifndef" => out.push(Dir::Elif(String::new())),
            "else" => out.push(Dir::Else),
            "endif" => out.push(Dir::Endif),
            "include" | "include_next" => {
                let next = kw == "include_next";
                if let Some(name) = arg.strip_prefix('"').and_then(|a| a.split('"').next()) {
                    out.push(Dir::Include(true, next, name.to_string()));
                } else if let Some(name) = arg.strip_prefix('<').and_then(|a| a.split('>').next()) {
                    out.push(Dir::Include(false, next, name.to_string()));
                } else if !arg.is_empty() {
                    out.push(Dir::IncludeMacro(arg.to_string()));
                }
            }
            "define" => {
                let name_end = arg
                    .find(|c: char| !c.is_ascii_alphanumeric() && c != '_')
                    .unwrap_or(arg.len());
                let (name, value) = (&arg[..name_end], arg[name_end..].trim());
                if name.starts_with("CONFIG_") || value.starts_with('<') || value.starts_with('"') {
                    out.push(Dir::Define(name.to_string(), value.to_string()));
                }
            }
            "undef" => out.push(Dir::Undef(first_word())),
            _ => {}
        }
    }
    out
}

/// Logical lines: continuations joined, comments replaced by a space, string and character
/// literals kept (so a `/*` inside one starts nothing).
fn logical_lines(text: &str) -> Vec<String> {
    let b = text.as_bytes();
    let mut lines = Vec::new();
    let mut cur: Vec<u8> = Vec::new();
    let mut i = 0;
    let mut in_block = false;
    while i < b.len() {
        let c = b[i];
        if in_block {
            if c == b'*' && b.get(i + 1) == Some(&b'/') {
                in_block = false;
                cur.push(b' ');
                i += 2;
            } else {
                if c == b'\n' {
                    // A comment spanning lines ends the directive's line as far as the
                    // preprocessor is concerned only at its end; keep the line open.
                }
                i += 1;
            }
            continue;
        }
        match c {
            b'\\' if b.get(i + 1) == Some(&b'\n') => i += 2,
            b'\\' if b.get(i + 1) == Some(&b'\r') && b.get(i + 2) == Some(&b'\n') => i += 3,
            b'\n' => {
                lines.push(String::from_utf8_lossy(&cur).into_owned());
                cur.clear();
                i += 1;
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                in_block = true;
                i += 2;
            }
            b'/' if b.get(i + 1) == Some(&b'/') => {
                while i < b.len() && b[i] != b'\n' {
                    // A line comment ends at the newline, unless continued.
                    if b[i] == b'\\' && b.get(i + 1) == Some(&b'\n') {
                        i += 1;
                    }
                    i += 1;
                }
            }
            b'"' | b'\'' => {
                // A literal, to its closing quote on the same logical line. `#include <a'b>`
                // does not happen; an apostrophe in #error text would run to the line's end,
                // which is where the directive ends anyway.
                let q = c;
                cur.push(c);
                i += 1;
                while i < b.len() && b[i] != q && b[i] != b'\n' {
                    if b[i] == b'\\' && i + 1 < b.len() {
                        if b[i + 1] != b'\n' {
                            cur.push(b[i]);
                            cur.push(b[i + 1]);
                        }
                        i += 2;
                        continue;
                    }
                    cur.push(b[i]);
                    i += 1;
                }
                if i < b.len() && b[i] == q {
                    cur.push(q);
                    i += 1;
                }
            }
            _ => {
                cur.push(c);
                i += 1;
            }
        }
    }
    if !cur.is_empty() {
        lines.push(String::from_utf8_lossy(&cur).into_owned());
    }
    lines
}

/// A three-valued truth.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tri {
    Yes,
    No,
    Maybe,
}

impl Tri {
    pub fn and(self, o: Tri) -> Tri {
        match (self, o) {
            (Tri::No, _) | (_, Tri::No) => Tri::No,
            (Tri::Yes, Tri::Yes) => Tri::Yes,
            _ => Tri::Maybe,
        }
    }
    pub fn or(self, o: Tri) -> Tri {
        match (self, o) {
            (Tri::Yes, _) | (_, Tri::Yes) => Tri::Yes,
            (Tri::No, Tri::No) => Tri::No,
            _ => Tri::Maybe,
        }
    }
    pub fn not(self) -> Tri {
        match self {
            Tri::Yes => Tri::No,
            Tri::No => Tri::Yes,
            Tri::Maybe => Tri::Maybe,
        }
    }
}

/// What the conditionals may assume: the configuration's `CONFIG_` values, except those some
/// file or command line defines or undefines itself (those are unknown).
pub struct Assumptions<'a> {
    pub config: &'a HashMap<String, String>,
    pub redefined: &'a HashSet<String>,
}

impl Assumptions<'_> {
    /// `defined NAME`.
    fn defined(&self, name: &str) -> Option<bool> {
        if !name.starts_with("CONFIG_") || self.redefined.contains(name) {
            return None;
        }
        // kconfig writes `#define CONFIG_X 1` for y and `CONFIG_X_MODULE 1` for m.
        if let Some(base) = name.strip_suffix("_MODULE") {
            if self.config.get(base).map(String::as_str) == Some("m") {
                return Some(true);
            }
        }
        Some(match self.config.get(name).map(String::as_str) {
            None | Some("n") | Some("m") => false,
            Some(_) => true,
        })
    }

    /// The value of NAME in an `#if`.
    fn value(&self, name: &str) -> Option<i64> {
        match self.defined(name)? {
            false => Some(0),
            true => {
                let v = self.config.get(name).map(String::as_str).unwrap_or("1");
                match v {
                    "y" | "m" => Some(1),
                    v => parse_number(v),
                }
            }
        }
    }

    /// `IS_ENABLED(X)` and its kin (`include/linux/kconfig.h`).
    fn is(&self, which: &str, name: &str) -> Option<bool> {
        let y = self.defined(name)?;
        let m = self.defined(&format!("{name}_MODULE"))?;
        match which {
            "IS_ENABLED" => Some(y || m),
            "IS_BUILTIN" => Some(y),
            "IS_MODULE" => Some(m),
            // y, or m when the unit is itself part of a module (unknown here).
            "IS_REACHABLE" => match (y, m) {
                (true, _) => Some(true),
                (false, false) => Some(false),
                (false, true) => None,
            },
            _ => None,
        }
    }
}

fn parse_number(s: &str) -> Option<i64> {
    let s = s.trim_end_matches(['u', 'U', 'l', 'L']);
    if let Some(h) = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        i64::from_str_radix(h, 16).ok()
    } else if s.len() > 1 && s.starts_with('0') {
        i64::from_str_radix(&s[1..], 8).ok()
    } else {
        s.parse().ok()
    }
}

/// The truth of an `#if` expression: [`Tri::Maybe`] for anything not understood.
pub fn eval(expr: &str, a: &Assumptions<'_>) -> Tri {
    let toks = lex(expr);
    let mut p = Parser {
        toks: &toks,
        i: 0,
        a,
    };
    match p.or() {
        Some(v) if p.i == toks.len() => match v {
            Some(0) => Tri::No,
            Some(_) => Tri::Yes,
            None => Tri::Maybe,
        },
        _ => Tri::Maybe,
    }
}

/// `#ifdef NAME` (`#ifndef` is its negation).
pub fn eval_defined(name: &str, a: &Assumptions<'_>) -> Tri {
    match a.defined(name) {
        Some(true) => Tri::Yes,
        Some(false) => Tri::No,
        None => Tri::Maybe,
    }
}

fn lex(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c.is_ascii_whitespace() {
            i += 1;
        } else if c.is_ascii_alphanumeric() || c == b'_' {
            let st = i;
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
                i += 1;
            }
            out.push(s[st..i].to_string());
        } else {
            let two = s.get(i..i + 2).unwrap_or("");
            if matches!(two, "&&" | "||" | "==" | "!=" | "<=" | ">=" | "<<" | ">>") {
                out.push(two.to_string());
                i += 2;
            } else {
                out.push((c as char).to_string());
                i += 1;
            }
        }
    }
    out
}

/// Recursive descent over the tokens; values are `Some(n)` when known. A parse failure
/// (`None` from a method) makes the whole expression unknown.
struct Parser<'t, 'a> {
    toks: &'t [String],
    i: usize,
    a: &'t Assumptions<'a>,
}

type Val = Option<i64>;

impl Parser<'_, '_> {
    fn peek(&self) -> Option<&str> {
        self.toks.get(self.i).map(String::as_str)
    }
    fn eat(&mut self, t: &str) -> bool {
        if self.peek() == Some(t) {
            self.i += 1;
            true
        } else {
            false
        }
    }
    fn truth(v: Val) -> Tri {
        match v {
            Some(0) => Tri::No,
            Some(_) => Tri::Yes,
            None => Tri::Maybe,
        }
    }
    fn of(t: Tri) -> Val {
        match t {
            Tri::Yes => Some(1),
            Tri::No => Some(0),
            Tri::Maybe => None,
        }
    }
    fn or(&mut self) -> Option<Val> {
        let mut v = self.and()?;
        while self.eat("||") {
            let r = self.and()?;
            v = Self::of(Self::truth(v).or(Self::truth(r)));
        }
        Some(v)
    }
    fn and(&mut self) -> Option<Val> {
        let mut v = self.cmp()?;
        while self.eat("&&") {
            let r = self.cmp()?;
            v = Self::of(Self::truth(v).and(Self::truth(r)));
        }
        Some(v)
    }
    fn cmp(&mut self) -> Option<Val> {
        let l = self.unary()?;
        for op in ["==", "!=", "<=", ">=", "<", ">"] {
            if self.eat(op) {
                let r = self.unary()?;
                return Some(match (l, r) {
                    (Some(l), Some(r)) => Some(i64::from(match op {
                        "==" => l == r,
                        "!=" => l != r,
                        "<=" => l <= r,
                        ">=" => l >= r,
                        "<" => l < r,
                        _ => l > r,
                    })),
                    _ => None,
                });
            }
        }
        Some(l)
    }
    fn unary(&mut self) -> Option<Val> {
        if self.eat("!") {
            let v = self.unary()?;
            return Some(Self::of(Self::truth(v).not()));
        }
        self.primary()
    }
    fn primary(&mut self) -> Option<Val> {
        let t = self.peek()?.to_string();
        self.i += 1;
        if t == "(" {
            let v = self.or()?;
            return self.eat(")").then_some(v);
        }
        if t == "defined" {
            let paren = self.eat("(");
            let name = self.peek()?.to_string();
            self.i += 1;
            if paren && !self.eat(")") {
                return None;
            }
            return Some(self.a.defined(&name).map(i64::from));
        }
        if matches!(
            t.as_str(),
            "IS_ENABLED" | "IS_BUILTIN" | "IS_MODULE" | "IS_REACHABLE"
        ) && self.eat("(")
        {
            let name = self.peek()?.to_string();
            self.i += 1;
            if !self.eat(")") {
                return None;
            }
            return Some(self.a.is(&t, &name).map(i64::from));
        }
        if t.as_bytes()[0].is_ascii_digit() {
            return Some(parse_number(&t));
        }
        if t.as_bytes()[0].is_ascii_alphabetic() || t.starts_with('_') {
            // A function-like macro call we do not know: its arguments are skipped, the value
            // is unknown.
            if self.eat("(") {
                let mut depth = 1;
                while depth > 0 {
                    match self.peek()? {
                        "(" => depth += 1,
                        ")" => depth -= 1,
                        _ => {}
                    }
                    self.i += 1;
                }
                return Some(None);
            }
            return Some(if t.starts_with("CONFIG_") {
                self.a.value(&t)
            } else {
                None
            });
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_directives_through_comments_and_continuations() {
        let src = "#include <linux/a.h>\n/* #include <linux/no.h>\n */ #include \"b.h\"\n\
            // #include <linux/no2.h>\n#  include_next <c.h> /* c */\n#if defined(CONFIG_X) \\\n && 1\n\
            #include TRACE_INCLUDE(TRACE_INCLUDE_FILE)\n#endif\n#define CONFIG_Y 1\n#define HDR <d.h>\n\
            #define OTHER 2\nchar *s = \"/*\";\n#include <e.h>\n";
        let d = directives(src);
        assert_eq!(
            d,
            [
                Dir::Include(false, false, "linux/a.h".into()),
                Dir::Include(true, false, "b.h".into()),
                Dir::Include(false, true, "c.h".into()),
                Dir::If("defined(CONFIG_X)  && 1".into()),
                Dir::IncludeMacro("TRACE_INCLUDE(TRACE_INCLUDE_FILE)".into()),
                Dir::Endif,
                Dir::Define("CONFIG_Y".into(), "1".into()),
                Dir::Define("HDR".into(), "<d.h>".into()),
                Dir::Include(false, false, "e.h".into()),
            ]
        );
    }

    #[test]
    fn evaluates_over_the_configuration() {
        let config: HashMap<String, String> = [
            ("CONFIG_Y", "y"),
            ("CONFIG_M", "m"),
            ("CONFIG_N", "5"),
            ("CONFIG_S", "\"s\""),
            ("CONFIG_R", "y"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let redefined: HashSet<String> = ["CONFIG_R".to_string()].into();
        let a = Assumptions {
            config: &config,
            redefined: &redefined,
        };
        let e = |s: &str| eval(s, &a);
        assert_eq!(e("defined(CONFIG_Y)"), Tri::Yes);
        assert_eq!(e("defined CONFIG_M"), Tri::No);
        assert_eq!(e("defined(CONFIG_M_MODULE)"), Tri::Yes);
        assert_eq!(e("IS_ENABLED(CONFIG_M) && !IS_BUILTIN(CONFIG_M)"), Tri::Yes);
        assert_eq!(e("IS_REACHABLE(CONFIG_M)"), Tri::Maybe);
        assert_eq!(e("CONFIG_N > 4"), Tri::Yes);
        assert_eq!(e("CONFIG_ABSENT"), Tri::No);
        assert_eq!(e("CONFIG_S"), Tri::Maybe);
        assert_eq!(e("defined(CONFIG_R)"), Tri::Maybe);
        assert_eq!(e("defined(__KERNEL__)"), Tri::Maybe);
        assert_eq!(e("defined(__KERNEL__) && defined(CONFIG_ABSENT)"), Tri::No);
        assert_eq!(e("defined(__KERNEL__) || defined(CONFIG_Y)"), Tri::Yes);
        assert_eq!(e("0"), Tri::No);
        assert_eq!(e("__GNUC__ >= 4"), Tri::Maybe);
        assert_eq!(e("LINUX_VERSION_CODE(1, 2) + 1"), Tri::Maybe);
        assert_eq!(e("((CONFIG_Y))"), Tri::Yes);
        assert_eq!(e("CONFIG_Y +"), Tri::Maybe);
        assert_eq!(eval_defined("CONFIG_Y", &a), Tri::Yes);
        assert_eq!(eval_defined("_LINUX_A_H", &a), Tri::Maybe);
    }
}
