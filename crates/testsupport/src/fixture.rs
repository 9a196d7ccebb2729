//! The C fixtures of `tests/fixtures/*.c`: their `//#` directives and how each is compiled
//! (twice, with and without `-DPATCHED`). Shared by the fixture harness (tests/fixtures.rs)
//! and the snapshot tests (tests/snapshots.rs), so both see the same objects.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::explain as explain_check;
use crate::gcc;

/// Every `//#` directive a fixture may state, with what it means: the one list (the parser
/// accepts exactly these; the fixture harness fails on any other, naming file and line). A
/// fixture states at least one of `changed:`, `new:`, `nochange` and `refuse:`; one that
/// expects a livepatch (neither `nochange` nor `refuse:`) gets it written, parsed back and
/// checked against the directives from `klp:` on.
pub const DIRECTIVES: &[(&str, &str)] = &[
    ("changed", "`changed: f g`: exactly these functions changed (without `new:`, none is new)"),
    ("new", "`new: h`: exactly these functions are new"),
    ("unchanged", "`unchanged: f`: f is not reported changed"),
    ("nochange", "`nochange`: nothing changed, nothing new, nothing refused"),
    ("refuse", "`refuse: KIND`: some refusal is keyed `refuse.KIND.*` (without `refuse:`, none may be)"),
    ("hint", "`hint: TEXT`: some refusal's hint contains TEXT"),
    ("ignored", "`ignored: f .data.x`: exactly these symbols are reported under `ignored` (without it, none)"),
    ("callback", "`callback: KIND f`: the patched object has callback f of KIND (the set is exact), carried under the hook's alias"),
    ("state", "`state: ID VERSION`: the patched object declares system state ID (a number, `0x` for hex) with VERSION (`KLPGEN_STATE`; the set is exact)"),
    ("explain", "`explain: FUNC key=value ...`: what `elfdiff::explain` says about FUNC (keys in `explain.rs`); compiles the fixture with `-g`"),
    ("include", "`include: f`: treat unchanged f as changed, as `--include-callers` does"),
    ("entry-size", "`entry-size: SECTION=BYTES`: a special section's entry size, as `klpgen diff --entry-size` (the target's DWARF in a real build)"),
    ("member", "`member: STRUCT.MEMBER=OFFSET`: a member offset the target's DWARF would give (`pi_entry.fmt=8`)"),
    ("note", "`note: TEXT`: some note of the livepatch plan contains TEXT"),
    ("module", "`module: NAME`: the object is part of module NAME (its statics bind as klp relocations against NAME, not vmlinux)"),
    ("klp", "`klp: sym`: a klp relocation binds sym (exactly or by normalised name)"),
    ("plain", "`plain: sym`: an ordinary relocation to sym"),
    ("copied", "`copied: sym`: sym is carried in the livepatch object, not bound to the target"),
    ("local", "`local: f`: f is a local function of the livepatch object"),
    ("entries", "`entries: SECTION=N`: the livepatch's SECTION keeps exactly N entries, each pointing into carried code"),
    ("bytes", "`bytes: SECTION=N`: the livepatch's SECTION is exactly N bytes (0: absent or empty), for sections copied per piece"),
    ("unreferenced", "`unreferenced: f`: no relocation of the livepatch refers to f (as a klp symbol, an ordinary one or a copy)"),
    ("fresh", "`fresh: FUNC:SYM`: FUNC's references to SYM (by normalised name) go to a copy in the livepatch"),
    ("kept", "`kept: FUNC:SYM`: FUNC's references to SYM go to the running kernel's (a klp symbol)"),
    ("code", "`code: FUNC HEX`: the livepatch's copy of FUNC contains these bytes (hex, spaces ignored) and no runtime-constant placeholder"),
    ("arch", "`arch: ppc64le|s390x|aarch64|loongarch64`: compile with that machine's cross compiler and its kernel's code-generation flags (`testsupport::gcc::CROSS`) instead of x86-64's; a missing compiler fails the fixture"),
    ("cflags", "`cflags: FLAG ...`: more gcc flags for both builds (`-g` for DWARF line tables, `-fsanitize=shift`)"),
    ("parts", "`parts: f:f.cold ...`: exactly these split parts are listed under these functions in the report (without it, none is)"),
    ("printk-formats", "`printk-formats: w ...`: the livepatch's `.printk_index` entries by the first word of each format (sorted); their `_entry` and strings are copies, never klp relocations"),
];

/// The `//#` lines of a fixture: (line number, directive name, value after the `:`).
pub fn directive_lines(src: &str) -> impl Iterator<Item = (usize, &str, &str)> {
    src.lines().enumerate().filter_map(|(i, line)| {
        let d = line.strip_prefix("//#")?.trim();
        let (key, val) = d.split_once(':').unwrap_or((d, ""));
        Some((i + 1, key.trim(), val))
    })
}

/// A fixture's expectations (its `//#` lines; each field is the directive of its name, in the
/// plural for lists, see [`DIRECTIVES`]).
#[derive(Default, Debug)]
pub struct Expect {
    pub changed: Option<BTreeSet<String>>,
    pub new: Option<BTreeSet<String>>,
    pub unchanged: Vec<String>,
    pub nochange: bool,
    pub refuse: Vec<String>,
    pub klp: Vec<String>,
    pub plain: Vec<String>,
    pub explain: Vec<explain_check::Directive>,
    pub copied: Vec<String>,
    pub include: Vec<String>,
    pub entry_size: Vec<(String, u64)>,
    pub member: Vec<(String, u64)>,
    pub entries: Vec<(String, u64)>,
    pub printk_formats: Option<Vec<String>>,
    pub bytes: Vec<(String, u64)>,
    pub unreferenced: Vec<String>,
    pub local: Vec<String>,
    pub fresh: Vec<(String, String)>,
    pub kept: Vec<(String, String)>,
    pub module: Option<String>,
    pub ignored: Option<BTreeSet<String>>,
    pub callbacks: Vec<(String, String)>,
    pub states: Vec<(u64, u32)>,
    pub hints: Vec<String>,
    pub notes: Vec<String>,
    pub code: Vec<(String, Vec<u8>)>,
    /// `arch:`: the machine, None for x86-64.
    pub arch: Option<String>,
    pub cflags: Vec<String>,
    pub parts: Option<BTreeSet<(String, String)>>,
}

fn func_sym(d: &str, w: &str) -> Result<(String, String), String> {
    let (f, s) = w
        .split_once(':')
        .ok_or_else(|| format!("{d}: expected FUNC:SYMBOL, got {w:?}"))?;
    Ok((f.to_string(), s.to_string()))
}

fn section_number(d: &str, w: &str) -> Result<(String, u64), String> {
    let (s, n) = w
        .split_once('=')
        .ok_or_else(|| format!("{d}: expected SECTION=NUMBER, got {w:?}"))?;
    let n = n
        .parse()
        .map_err(|_| format!("{d}: {n:?} is not a number"))?;
    Ok((s.to_string(), n))
}

/// The expectations of a fixture's source text.
pub fn parse_expect(src: &str) -> Result<Expect, String> {
    let mut e = Expect::default();
    for (line, key, val) in directive_lines(src) {
        if !DIRECTIVES.iter().any(|(k, _)| *k == key) {
            return Err(format!("line {line}: unknown directive {key:?}"));
        }
        let words = || val.split_whitespace().map(String::from);
        match key {
            "changed" => e.changed = Some(words().collect()),
            "new" => e.new = Some(words().collect()),
            "unchanged" => e.unchanged.extend(words()),
            "nochange" => e.nochange = true,
            "refuse" => e.refuse.extend(words()),
            "klp" => e.klp.extend(words()),
            "plain" => e.plain.extend(words()),
            "explain" => e.explain.push(explain_check::parse(val)?),
            "copied" => e.copied.extend(words()),
            "include" => e.include.extend(words()),
            "entry-size" => {
                for w in words() {
                    e.entry_size.push(section_number("entry-size", &w)?);
                }
            }
            "member" => {
                for w in words() {
                    e.member.push(section_number("member", &w)?);
                }
            }
            "entries" => {
                for w in words() {
                    e.entries.push(section_number("entries", &w)?);
                }
            }
            "printk-formats" => {
                let mut w: Vec<String> = words().collect();
                w.sort();
                e.printk_formats = Some(w);
            }
            "bytes" => {
                for w in words() {
                    e.bytes.push(section_number("bytes", &w)?);
                }
            }
            "unreferenced" => e.unreferenced.extend(words()),
            "local" => e.local.extend(words()),
            "fresh" => {
                for w in words() {
                    e.fresh.push(func_sym("fresh", &w)?);
                }
            }
            "kept" => {
                for w in words() {
                    e.kept.push(func_sym("kept", &w)?);
                }
            }
            "module" => e.module = words().next(),
            "arch" => {
                let a = val.trim();
                if gcc::cross_arch(a).is_none() {
                    let names: Vec<&str> = gcc::CROSS.iter().map(|c| c.name).collect();
                    return Err(format!("arch: {a:?} is not one of {}", names.join(", ")));
                }
                e.arch = Some(a.to_string());
            }
            "ignored" => e.ignored = Some(words().collect()),
            "hint" => e.hints.push(val.trim().to_string()),
            "note" => e.notes.push(val.trim().to_string()),
            "code" => {
                let mut w = words();
                let func = w.next().ok_or("code: expected FUNC HEX")?;
                let hex: String = w.collect();
                if hex.is_empty() || !hex.len().is_multiple_of(2) {
                    return Err(format!("code: {hex:?} is not whole bytes in hex"));
                }
                let bytes = (0..hex.len())
                    .step_by(2)
                    .map(|i| u8::from_str_radix(&hex[i..i + 2], 16))
                    .collect::<Result<Vec<u8>, _>>()
                    .map_err(|e| format!("code: {hex:?}: {e}"))?;
                e.code.push((func, bytes));
            }
            "state" => {
                let w: Vec<String> = words().collect();
                let num = |t: &str| match t.strip_prefix("0x") {
                    Some(h) => u64::from_str_radix(h, 16),
                    None => t.parse(),
                };
                match w.as_slice() {
                    [id, version] => {
                        let id = num(id).map_err(|e| format!("state: id {id:?}: {e}"))?;
                        let version = version
                            .parse()
                            .map_err(|e| format!("state: version {version:?}: {e}"))?;
                        e.states.push((id, version));
                    }
                    _ => return Err(format!("state: expected ID VERSION, got {val:?}")),
                }
            }
            "cflags" => e.cflags.extend(words()),
            "parts" => {
                let mut set = BTreeSet::new();
                for w in words() {
                    set.insert(func_sym("parts", &w)?);
                }
                e.parts = Some(set);
            }
            "callback" => match words().collect::<Vec<_>>().as_slice() {
                [kind, func] => e.callbacks.push((kind.clone(), func.clone())),
                _ => return Err(format!("callback: expected KIND FUNCTION, got {val:?}")),
            },
            other => {
                return Err(format!(
                    "directive {other:?} is in DIRECTIVES but not parsed"
                ))
            }
        }
    }
    if e.changed.is_none() && e.new.is_none() && !e.nochange && e.refuse.is_empty() {
        return Err("fixture states no expectation".into());
    }
    Ok(e)
}

/// The fixtures, sorted by name.
pub fn all() -> Vec<PathBuf> {
    let dir = crate::repo_root().join("tests/fixtures");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("tests/fixtures exists")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "c"))
        .collect();
    files.sort();
    files
}

pub fn stem(src: &Path) -> String {
    src.file_stem().unwrap().to_string_lossy().into_owned()
}

/// Compile one variant (`debug`: with `-g`, for `explain:` directives; `extra`: the fixture's
/// `cflags:`) for x86-64 or the machine `arch` names (`//# arch:`). `out` must be absolute.
pub fn compile(
    src: &Path,
    out: &Path,
    patched: bool,
    debug: bool,
    extra: &[String],
    arch: Option<&str>,
) -> Result<(), String> {
    let mut cmd;
    match arch {
        None => {
            cmd = Command::new("gcc");
            cmd.args(gcc::KERNEL_CFLAGS);
        }
        Some(a) => {
            let c = gcc::cross_arch(a).ok_or_else(|| format!("unknown arch {a:?}"))?;
            cmd = Command::new(c.cc[0]);
            cmd.args(&c.cc[1..]).args(c.cflags);
        }
    }
    cmd.args(gcc::DIFF_CFLAGS);
    // Fixtures may `#include <klpgen/klpgen.h>`.
    cmd.arg("-I").arg(crate::repo_root().join("include"));
    if debug {
        cmd.arg("-g");
    }
    cmd.args(extra);
    if patched {
        cmd.arg("-DPATCHED");
    }
    // From the fixture's directory by file name, so `__FILE__` is the same on every machine.
    if let (Some(dir), Some(name)) = (src.parent(), src.file_name()) {
        cmd.current_dir(dir).arg(name);
    } else {
        cmd.arg(src);
    }
    cmd.arg("-o").arg(out);
    // A missing cross compiler fails the fixture, naming the package (`cargo xtask setup`
    // installs them); it is never skipped.
    let o = cmd
        .output()
        .map_err(|e| match arch.and_then(gcc::cross_arch) {
            Some(c) => format!(
                "cannot run {} for the {} fixture {} ({e}): install {} (`cargo xtask setup`)",
                c.cc[0],
                c.name,
                src.display(),
                c.package
            ),
            None => format!("cannot run gcc: {e}"),
        })?;
    if !o.status.success() {
        return Err(format!(
            "gcc failed on {}:\n{}",
            src.display(),
            String::from_utf8_lossy(&o.stderr)
        ));
    }
    Ok(())
}

/// A fixture compiled into `<work>/<stem>/{orig,patched}.o`.
pub struct Built {
    pub text: String,
    pub expect: Expect,
    pub dir: PathBuf,
    pub orig: PathBuf,
    pub patched: PathBuf,
}

/// Parse and compile fixture `src` under `work` (a directory of the calling harness, e.g.
/// `<CARGO_TARGET_TMPDIR>/fixtures`: only integration tests have a `CARGO_TARGET_TMPDIR`).
pub fn build(src: &Path, work: &Path) -> Result<Built, String> {
    let text = std::fs::read_to_string(src).map_err(|e| e.to_string())?;
    let expect = parse_expect(&text)?;
    let dir = work.join(stem(src));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let (orig, patched) = (dir.join("orig.o"), dir.join("patched.o"));
    let debug = !expect.explain.is_empty();
    let arch = expect.arch.as_deref();
    compile(src, &orig, false, debug, &expect.cflags, arch)?;
    compile(src, &patched, true, debug, &expect.cflags, arch)?;
    Ok(Built {
        text,
        expect,
        dir,
        orig,
        patched,
    })
}
