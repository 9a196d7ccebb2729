//! Fixture harness: each `tests/fixtures/*.c` is compiled twice with gcc and kernel-like flags
//! (with and without `-DPATCHED`), diffed with elfdiff, and checked against its `//#` header
//! lines. Fixtures that expect a livepatch also get one written, parsed back and checked.
//!
//! Directives: `changed: f g` and `new: h` (exact sets), `unchanged: f`, `nochange`,
//! `refuse: <kind>` (a refusal keyed `refuse.<kind>.*`), `klp: sym` (a klp relocation binds
//! `sym`, exactly or by normalised name), `plain: sym` (an ordinary relocation to `sym`), `copied: sym` (carried in the livepatch
//! object, not bound to the target), `include: f` (treat unchanged `f` as changed, as
//! `--include-callers` does), `module: NAME` (the object is part of module NAME: its statics
//! bind as klp relocations against NAME instead of vmlinux), `entry-size: SECTION=BYTES` (as
//! `klpgen diff --entry-size`), `ignored: f .data.x` (exactly these symbols are reported under
//! `ignored`), `callback: KIND f` (the patched object has callback `f` of KIND, and the
//! livepatch object carries it under the hook's alias), `hint: TEXT` (some refusal's hint
//! contains TEXT).
//! Fixtures may `#include <klpgen/klpgen.h>` (the repository's `include/` is on the path).
//! `explain: FUNC key=value ...` checks what `elfdiff::explain` says about FUNC (the fixture is
//! then compiled with `-g`; keys in tests/support/explain.rs).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use elfdiff::model::{Orig, SymKind};
use elfdiff::{Diff, Object, PlanOptions};
#[path = "support/gcc.rs"]
mod gcc;

use libtest_mimic::{Arguments, Failed, Trial};
use patchgen::target::{Binding, TargetSymtab};

#[path = "support/explain.rs"]
mod explain_check;

#[derive(Default, Debug)]
struct Expect {
    changed: Option<BTreeSet<String>>,
    new: Option<BTreeSet<String>>,
    unchanged: Vec<String>,
    nochange: bool,
    refuse: Vec<String>,
    klp: Vec<String>,
    plain: Vec<String>,
    /// `explain: FUNC key=value ...` (tests/support/explain.rs); compiles the fixture with -g.
    explain: Vec<explain_check::Directive>,
    copied: Vec<String>,
    include: Vec<String>,
    module: Option<String>,
    entry_sizes: std::collections::HashMap<String, u64>,
    ignored: Option<BTreeSet<String>>,
    callbacks: Vec<(String, String)>,
    hints: Vec<String>,
}

fn parse_expect(src: &str) -> Result<Expect, String> {
    let mut e = Expect::default();
    for line in src.lines() {
        let Some(d) = line.strip_prefix("//#") else {
            continue;
        };
        let d = d.trim();
        let (key, val) = d.split_once(':').unwrap_or((d, ""));
        let words = || val.split_whitespace().map(String::from);
        match key.trim() {
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
            "module" => e.module = words().next(),
            "entry-size" => {
                for w in words() {
                    let (sec, n) = w
                        .split_once('=')
                        .and_then(|(s, n)| Some((s.to_string(), n.parse().ok()?)))
                        .ok_or(format!("entry-size: expected SECTION=BYTES, got {w:?}"))?;
                    e.entry_sizes.insert(sec, n);
                }
            }
            "ignored" => e.ignored = Some(words().collect()),
            "hint" => e.hints.push(val.trim().to_string()),
            "callback" => match words().collect::<Vec<_>>().as_slice() {
                [kind, func] => e.callbacks.push((kind.clone(), func.clone())),
                _ => return Err(format!("callback: expected KIND FUNCTION, got {val:?}")),
            },
            other => return Err(format!("unknown directive {other:?}")),
        }
    }
    if e.changed.is_none() && e.new.is_none() && !e.nochange && e.refuse.is_empty() {
        return Err("fixture states no expectation".into());
    }
    Ok(e)
}

fn compile(src: &Path, out: &Path, patched: bool, debug: bool) -> Result<(), Failed> {
    let mut cmd = Command::new("gcc");
    cmd.args(gcc::KERNEL_CFLAGS).args(gcc::DIFF_CFLAGS);
    cmd.arg("-I")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("include"));
    if debug {
        cmd.arg("-g");
    }
    if patched {
        cmd.arg("-DPATCHED");
    }
    cmd.arg(src).arg("-o").arg(out);
    let o = cmd.output().map_err(|e| format!("cannot run gcc: {e}"))?;
    if !o.status.success() {
        return Err(format!(
            "gcc failed on {}:\n{}",
            src.display(),
            String::from_utf8_lossy(&o.stderr)
        )
        .into());
    }
    Ok(())
}

fn check(src: PathBuf) -> Result<(), Failed> {
    let text = std::fs::read_to_string(&src).map_err(|e| e.to_string())?;
    let expect = parse_expect(&text)?;
    let stem = src.file_stem().unwrap().to_string_lossy().into_owned();
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("fixtures")
        .join(&stem);
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let (op, pp) = (dir.join("orig.o"), dir.join("patched.o"));
    let debug = !expect.explain.is_empty();
    compile(&src, &op, false, debug)?;
    compile(&src, &pp, true, debug)?;
    let ob = std::fs::read(&op).map_err(|e| e.to_string())?;
    let pb = std::fs::read(&pp).map_err(|e| e.to_string())?;
    let orig = Object::parse("orig.o", &ob)?;
    let patched = Object::parse("patched.o", &pb)?;
    let mut diff = Diff::new(&orig, &patched);
    let mut included_refusals = Vec::new();
    for f in &expect.include {
        match diff.include_unchanged(f, "included by the fixture") {
            Ok(true) => {}
            Ok(false) => return Err(format!("include: {f} is not an unchanged function").into()),
            Err(r) => included_refusals.push(r),
        }
    }
    let mut report = diff.report();
    report.refused.extend(included_refusals);
    // Refusals that only binding can tell (keys living in a module).
    if report.refused.is_empty() && !report.changed.is_empty() {
        let (plan, bindings) = plan_and_bind(&diff, &ob, &expect)?;
        report
            .refused
            .extend(patchgen::target::module_key_refusals(&plan, &bindings));
    }
    let got_changed: BTreeSet<String> = report.changed.iter().cloned().collect();
    let got_new: BTreeSet<String> = report.new.iter().cloned().collect();

    if let Some(c) = &expect.changed {
        if *c != got_changed {
            return Err(
                format!("changed: expected {c:?}, got {got_changed:?} ({report:?})").into(),
            );
        }
    }
    if let Some(n) = &expect.new {
        if *n != got_new {
            return Err(format!("new: expected {n:?}, got {got_new:?}").into());
        }
    } else if expect.changed.is_some() && !got_new.is_empty() {
        return Err(format!("unexpected new functions {got_new:?}").into());
    }
    let got_ignored: BTreeSet<String> = report.ignored.iter().map(|i| i.symbol.clone()).collect();
    match &expect.ignored {
        Some(want) if *want != got_ignored => {
            return Err(format!("ignored: expected {want:?}, got {:?}", report.ignored).into());
        }
        None if !got_ignored.is_empty() => {
            return Err(format!("unexpected ignored {:?}", report.ignored).into());
        }
        _ => {}
    }
    let got_callbacks: BTreeSet<(String, String)> = report
        .callbacks
        .iter()
        .map(|c| (c.kind.member().to_string(), c.function.clone()))
        .collect();
    let want_callbacks: BTreeSet<(String, String)> = expect.callbacks.iter().cloned().collect();
    if got_callbacks != want_callbacks {
        return Err(
            format!("callbacks: expected {want_callbacks:?}, got {got_callbacks:?}").into(),
        );
    }
    for u in &expect.unchanged {
        if got_changed.contains(u) {
            return Err(format!("{u} reported changed").into());
        }
    }
    if expect.nochange
        && (!got_changed.is_empty() || !got_new.is_empty() || !report.refused.is_empty())
    {
        return Err(format!("expected no change, got {report:?}").into());
    }
    for kind in &expect.refuse {
        let prefix = format!("refuse.{kind}.");
        if !report.refused.iter().any(|r| r.key.starts_with(&prefix)) {
            return Err(format!("expected a {prefix}* refusal, got {:?}", report.refused).into());
        }
    }
    for h in &expect.hints {
        if !report.refused.iter().any(|r| r.hint.contains(h.as_str())) {
            return Err(format!("no refusal hint contains {h:?}: {:?}", report.refused).into());
        }
    }
    if expect.refuse.is_empty() && !report.refused.is_empty() {
        return Err(format!("unexpected refusals {:?}", report.refused).into());
    }
    if debug {
        let ex = elfdiff::explain::explain(&diff);
        let file = src.file_name().unwrap_or_default().to_string_lossy();
        explain_check::check(&ex, &expect.explain, &text, &file)?;
    }
    if expect.nochange || !expect.refuse.is_empty() {
        return Ok(());
    }

    // Write the livepatch object, parse it back and check it.
    let (plan, bindings) = plan_and_bind(&diff, &ob, &expect)?;
    for k in &expect.klp {
        let found = bindings.iter().any(|b| match b {
            Binding::Klp { name, .. } => name == k || elfdiff::names::normalize(name) == *k,
            _ => false,
        });
        if !found {
            return Err(format!("expected a klp relocation to {k}, bindings: {bindings:?}").into());
        }
    }
    for p in &expect.plain {
        if !bindings.contains(&Binding::Plain { name: p.clone() }) {
            return Err(
                format!("expected an ordinary relocation to {p}, bindings: {bindings:?}").into(),
            );
        }
    }
    for c in &expect.copied {
        let in_plan = plan
            .symbols
            .iter()
            .any(|s| elfdiff::names::normalize(&s.name) == *c);
        let bound = plan
            .externals
            .iter()
            .any(|e| elfdiff::names::normalize(&e.name) == *c);
        if !in_plan || bound {
            return Err(format!("expected {c} copied into the livepatch (copied: {in_plan}, bound to the target: {bound})").into());
        }
    }
    let bytes = patchgen::writer::write_patch_object(&plan, &bindings, 0)?;
    std::fs::write(dir.join("livepatch.o"), &bytes).map_err(|e| e.to_string())?;
    let back: Object<'_, Orig> = Object::parse("livepatch.o", &bytes)?;
    let defined: BTreeSet<&str> = back
        .symbols
        .iter()
        .filter(|s| s.kind == SymKind::Func && s.section.is_some())
        .map(|s| s.name)
        .collect();
    for f in got_changed.iter().chain(&got_new) {
        if !defined.contains(f.as_str()) {
            return Err(
                format!("{f} is missing from the livepatch object (has {defined:?})").into(),
            );
        }
    }
    for i in 0..plan.funcs.len() {
        let alias = patchgen::writer::new_func_alias(i);
        if !back
            .symbols
            .iter()
            .any(|s| s.name == alias && s.is_global() && s.section.is_some())
        {
            return Err(format!("hook alias {alias} missing").into());
        }
    }
    // What an annotation left out (and nothing re-included) is not in the livepatch.
    for i in &report.ignored {
        let included = got_changed.contains(&i.symbol) || got_new.contains(&i.symbol);
        if !included && defined.contains(i.symbol.as_str()) {
            return Err(format!("ignored {} is in the livepatch object", i.symbol).into());
        }
    }
    for (kind, func) in &expect.callbacks {
        let kind = elfdiff::CallbackKind::from_member(kind)
            .ok_or_else(|| format!("callback: unknown kind {kind}"))?;
        let alias = patchgen::writer::callback_alias(kind);
        let at = |name: &str| {
            back.symbols
                .iter()
                .find(|s| s.name == name && s.section.is_some())
                .map(|s| (s.section, s.value))
        };
        match (at(&alias), at(func)) {
            (Some(a), Some(f))
                if a == f
                    && back
                        .symbols
                        .iter()
                        .any(|s| s.name == alias && s.is_global()) => {}
            (a, f) => {
                return Err(format!(
                "callback alias {alias} ({a:?}) should be global and at the copy of {func} ({f:?})"
            )
                .into())
            }
        }
    }
    for b in &bindings {
        let name = b.symbol_name();
        if !back.symbols.iter().any(|s| s.name == name && s.undefined) {
            return Err(format!("reference {name} missing from the livepatch object").into());
        }
    }
    Ok(())
}

fn main() {
    let args = Arguments::from_args();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("tests/fixtures exists")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "c"))
        .collect();
    files.sort();
    let trials = files
        .into_iter()
        .map(|f| {
            let name = f.file_stem().unwrap().to_string_lossy().into_owned();
            Trial::test(name, move || check(f))
        })
        .collect();
    libtest_mimic::run(&args, trials).exit();
}

/// The livepatch plan of a fixture and its bindings, with the original object standing in for
/// the target: statics become klp relocations (against `module:`, else vmlinux), globals
/// ordinary ones.
fn plan_and_bind(
    diff: &Diff<'_, '_>,
    orig: &[u8],
    expect: &Expect,
) -> Result<(elfdiff::Plan, Vec<Binding>), Failed> {
    let module = expect.module.as_deref();
    let plan = diff.plan(&PlanOptions {
        entry_sizes: expect.entry_sizes.clone(),
        ..PlanOptions::default()
    })?;
    let symtab = TargetSymtab::parse("orig.o", orig)?;
    let bindings: Vec<Binding> = plan
        .externals
        .iter()
        .map(|e| {
            if e.local {
                let sympos = symtab.locate(e, plan.file_name.as_deref(), &plan.orig_locals)?;
                Ok(Binding::Klp {
                    objname: module.unwrap_or("vmlinux").into(),
                    name: e.name.clone(),
                    sympos,
                })
            } else {
                Ok(Binding::Plain {
                    name: e.name.clone(),
                })
            }
        })
        .collect::<Result<_, patchgen::Error>>()?;
    Ok((plan, bindings))
}
