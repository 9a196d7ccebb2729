//! Fixture harness: each `tests/fixtures/*.c` is compiled twice with gcc and kernel-like flags
//! (with and without `-DPATCHED`), diffed with elfdiff, and checked against its `//#` header
//! lines. Fixtures that expect a livepatch also get one written, parsed back and checked: every
//! changed and new function is in it with a hook alias per replaced one, every binding has its
//! undefined symbol, special sections keep exactly the entries of carried code (`.printk_index`:
//! the formats `printk-formats:` names, each `_entry` and its strings copies, no klp relocation),
//! ignored functions are absent, and each callback's alias sits at its function's copy. Special
//! sections are emulated with the kernel's entry layouts in inline assembly; the `carve_*.c`
//! fixtures check that sections copied per piece carry only the changed functions' pieces.
//!
//! The directives are listed, each with its meaning, in `testsupport::fixture::DIRECTIVES`
//! (crates/testsupport/src/fixture.rs), the one list: a fixture with any other `//#` line fails
//! (trial `directives_known`, naming file and line). `explain:` keys are in
//! crates/testsupport/src/explain.rs. Fixtures may `#include <klpgen/klpgen.h>` (the
//! repository's `include/` is on the path). Parsing and compiling are in the test-support
//! crate, shared with the snapshot tests (tests/snapshots.rs).

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use elfdiff::model::{Bind, Orig, SymKind};
use elfdiff::{Diff, Object, PlanOptions};
use libtest_mimic::{Arguments, Failed, Trial};
use patchgen::target::{Binding, TargetSymtab};

use testsupport::explain as explain_check;
use testsupport::fixture;

fn check(src: PathBuf) -> Result<(), Failed> {
    let built = fixture::build(
        &src,
        &Path::new(env!("CARGO_TARGET_TMPDIR")).join("fixtures"),
    )?;
    let (text, expect, dir) = (&built.text, &built.expect, &built.dir);
    let debug = !expect.explain.is_empty();
    let ob = std::fs::read(&built.orig).map_err(|e| e.to_string())?;
    let pb = std::fs::read(&built.patched).map_err(|e| e.to_string())?;
    let orig = Object::parse("orig.o", &ob)?;
    let patched = Object::parse("patched.o", &pb)?;
    let mut diff = Diff::with_layouts(&orig, &patched, &layouts(expect));
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
        let (plan, bindings) = plan_and_bind(&diff, &ob, expect)?;
        report
            .refused
            .extend(patchgen::target::module_key_refusals(&plan, &bindings));
    }
    // Split parts count as the functions they are; `parts:` checks where they are listed.
    let got_changed: BTreeSet<String> = report.all_changed().into_iter().collect();
    let got_new: BTreeSet<String> = report.all_new().into_iter().collect();
    let got_parts: BTreeSet<(String, String)> = report
        .parts
        .iter()
        .flat_map(|(f, ps)| ps.iter().map(move |p| (f.clone(), p.name.clone())))
        .collect();
    if got_parts != expect.parts.clone().unwrap_or_default() {
        return Err(format!(
            "parts: expected {:?}, got {got_parts:?}",
            expect.parts.clone().unwrap_or_default()
        )
        .into());
    }

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
    for u in &expect.unchanged {
        if got_changed.contains(u) {
            return Err(format!("{u} reported changed").into());
        }
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
    let got_states: BTreeSet<(u64, u32)> =
        report.states.iter().map(|s| (s.id, s.version)).collect();
    let want_states: BTreeSet<(u64, u32)> = expect.states.iter().copied().collect();
    if got_states != want_states {
        return Err(format!("states: expected {want_states:?}, got {got_states:?}").into());
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
    if expect.refuse.is_empty() && !report.refused.is_empty() {
        return Err(format!("unexpected refusals {:?}", report.refused).into());
    }
    for h in &expect.hints {
        if !report.refused.iter().any(|r| r.hint.contains(h.as_str())) {
            return Err(format!("no refusal hint contains {h:?}: {:?}", report.refused).into());
        }
    }
    if debug {
        let ex = elfdiff::explain::explain(&diff);
        let file = src.file_name().unwrap_or_default().to_string_lossy();
        explain_check::check(&ex, &expect.explain, text, &file)?;
    }
    if expect.nochange || !expect.refuse.is_empty() {
        return Ok(());
    }

    // Write the livepatch object, parse it back and check it.
    let (plan, bindings) = plan_and_bind(&diff, &ob, expect)?;
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
    // Every changed function is replaced, or is a split part (`.cold`) of a replaced parent
    // that reaches it, or is a private function (local, no ftrace entry, only called
    // directly) whose every caller is replaced: a changed body nothing redirects to is a
    // missed change.
    let replaced = |n: &str| plan.funcs.iter().any(|p| p.old_name == n);
    for r in diff.functions.iter().filter(|r| r.private) {
        let name = diff.patched.sym(r.patched).name;
        for c in &diff.functions {
            let s = diff.patched.sym(c.patched);
            let sec = s.section.expect("defined");
            let calls = diff
                .patched
                .sec(sec)
                .relocs_in(s.value, s.value + s.size)
                .iter()
                // Function sections: a reference to its section is one to it (gas writes
                // calls of a local function against the section symbol).
                .any(|rel| {
                    diff.patched.sym(rel.sym).section == diff.patched.sym(r.patched).section
                });
            let caller = c.orig.map_or(s.name, |o| diff.orig.sym(o).name);
            if calls
                && c.patched != r.patched
                && !c.private
                && !replaced(caller)
                && c.orig.is_some()
            {
                return Err(format!(
                    "private {name} is called by {caller}, which the livepatch does not replace"
                )
                .into());
            }
        }
    }
    for f in &got_changed {
        let via_parent = elfdiff::names::split_parent(f).is_some_and(|parent| {
            plan.funcs
                .iter()
                .any(|p| elfdiff::names::normalize(&p.old_name) == parent)
        });
        let private = diff
            .functions
            .iter()
            .any(|r| r.private && r.orig.is_some_and(|o| diff.orig.sym(o).name == f.as_str()));
        if !replaced(f) && !via_parent && !private {
            let funcs: Vec<&str> = plan.funcs.iter().map(|p| p.old_name.as_str()).collect();
            return Err(format!(
                "changed {f} is not replaced by the livepatch (replaced: {funcs:?})"
            )
            .into());
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
    for b in &bindings {
        let name = b.symbol_name();
        if !back.symbols.iter().any(|s| s.name == name && s.undefined) {
            return Err(format!("reference {name} missing from the livepatch object").into());
        }
    }
    for f in &expect.local {
        let ok = back.symbols.iter().any(|s| {
            s.name == f && s.section.is_some() && s.kind == SymKind::Func && s.bind == Bind::Local
        });
        if !ok {
            return Err(format!("{f} is not a local function of the livepatch object").into());
        }
    }
    for (name, n) in &expect.entries {
        check_entries(&back, expect, name, *n)?;
    }
    for (f, want) in &expect.code {
        let sym = back
            .symbols
            .iter()
            .find(|s| s.name == f && s.section.is_some())
            .ok_or_else(|| format!("code: {f} is not in the livepatch object"))?;
        let sec = back.sec(sym.section.expect("defined"));
        let body = usize::try_from(sym.value)
            .ok()
            .zip(usize::try_from(sym.value + sym.size).ok())
            .and_then(|(a, b)| sec.data.get(a..b))
            .ok_or_else(|| format!("code: {f} lies outside its section"))?;
        let placeholder = elfdiff::arch::RUNTIME_PTR_PLACEHOLDER.to_le_bytes();
        if !body.windows(want.len()).any(|w| w == want.as_slice())
            || body.windows(8).any(|w| w == placeholder)
        {
            return Err(format!(
                "code: the copy of {f} should contain {want:02x?} and no placeholder: {body:02x?}"
            )
            .into());
        }
    }
    if let Some(want) = &expect.printk_formats {
        let got = printk_formats(&back, expect)?;
        if got != *want {
            return Err(format!("printk-formats: expected {want:?}, got {got:?}").into());
        }
    }
    for (name, n) in &expect.bytes {
        let size = back.find_section(name).map_or(0, |s| back.sec(s).size);
        if size != *n {
            return Err(format!("bytes: {name} is {size} bytes, expected {n}").into());
        }
    }
    for f in &expect.unreferenced {
        check_unreferenced(&back, f)?;
    }
    for (f, sym) in &expect.fresh {
        check_refs(&back, f, sym, true)?;
    }
    for (f, sym) in &expect.kept {
        check_refs(&back, f, sym, false)?;
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
    Ok(())
}

/// The entry sizes and member offsets a fixture states, as the target's DWARF would give them.
fn layouts(expect: &fixture::Expect) -> PlanOptions {
    PlanOptions {
        entry_sizes: expect.entry_size.iter().cloned().collect::<HashMap<_, _>>(),
        member_offsets: expect.member.iter().cloned().collect::<HashMap<_, _>>(),
        ..PlanOptions::default()
    }
}

/// The livepatch plan of a fixture and its bindings, with the original object standing in for
/// the target: statics become klp relocations (against `module:`, else vmlinux), globals
/// ordinary ones.
fn plan_and_bind(
    diff: &Diff<'_, '_>,
    orig: &[u8],
    expect: &fixture::Expect,
) -> Result<(elfdiff::Plan, Vec<Binding>), Failed> {
    let module = expect.module.as_deref();
    let plan = diff.plan(&layouts(expect))?;
    for n in &expect.notes {
        if !plan.notes.iter().any(|p| p.contains(n.as_str())) {
            return Err(format!("no plan note contains {n:?}: {:?}", plan.notes).into());
        }
    }
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

/// The name a relocation of the livepatch object refers to: a klp symbol
/// `.klp.sym.<obj>.SYM,<pos>` by SYM, any other by its name, normalised.
fn reference_name(name: &str) -> String {
    let n = match name.strip_prefix(".klp.sym.") {
        Some(rest) => {
            let rest = rest.split_once('.').map_or(rest, |(_, r)| r);
            rest.rsplit_once(',').map_or(rest, |(n, _)| n)
        }
        None => name,
    };
    elfdiff::names::normalize(n)
}

/// `unreferenced: f`: no relocation of the livepatch object refers to f.
fn check_unreferenced(back: &Object<'_, Orig>, func: &str) -> Result<(), Failed> {
    for s in &back.sections {
        for r in &s.relocs {
            let t = back.sym(r.sym);
            if reference_name(t.name) == func {
                return Err(format!(
                    "unreferenced: {} at {:#x} refers to {func} ({})",
                    s.name, r.offset, t.name
                )
                .into());
            }
        }
    }
    Ok(())
}

/// `fresh:`/`kept:`: FUNC's references to SYM (a klp symbol `.klp.sym.<obj>.SYM,<pos>`
/// counts by SYM) go to a copy in the livepatch object (`fresh`) or to the target.
fn check_refs(back: &Object<'_, Orig>, func: &str, sym: &str, fresh: bool) -> Result<(), Failed> {
    let base = reference_name;
    let f = back
        .symbols
        .iter()
        .find(|s| s.name == func && s.kind == SymKind::Func && s.section.is_some())
        .ok_or_else(|| format!("{func} is not in the livepatch object"))?;
    let sec = back.sec(f.section.expect("defined"));
    let targets: Vec<_> = sec
        .relocs_in(f.value, f.value + f.size)
        .iter()
        .map(|r| back.sym(r.sym))
        .filter(|t| base(t.name) == sym)
        .collect();
    if targets.is_empty() {
        return Err(format!("{func} has no reference to {sym} in the livepatch object").into());
    }
    for t in targets {
        if t.undefined == fresh {
            let (want, got) = if fresh {
                ("a copy in the livepatch", "the running kernel's")
            } else {
                ("the running kernel's", "a copy in the livepatch")
            };
            return Err(format!("{func} uses {got} {} instead of {want}", t.name).into());
        }
    }
    Ok(())
}

/// Sizes of the special sections whose entry size is fixed (the others come from the
/// fixture's `entry-size:`, as they come from the target's DWARF in a real build).
const FIXED_ENTRY_SIZES: &[(&str, u64)] = &[
    ("__mcount_loc", 8),
    (".printk_index", 8),
    (".smp_locks", 4),
    (".retpoline_sites", 4),
    (".return_sites", 4),
    (".call_sites", 4),
];

/// `entries: SECTION=N`: the livepatch's SECTION holds N entries, and each has a relocation
/// into code the livepatch carries.
fn check_entries(
    back: &Object<'_, Orig>,
    expect: &fixture::Expect,
    name: &str,
    n: u64,
) -> Result<(), Failed> {
    let Some(sec) = back.find_section(name) else {
        if n == 0 {
            return Ok(());
        }
        return Err(format!("entries: the livepatch object has no {name}").into());
    };
    // The size the fixture states, else the fixed one, else the layout klpgen recognises in
    // the livepatch's own copy (old kernels' layouts, which no directive names).
    let size = expect
        .entry_size
        .iter()
        .map(|(s, n)| (s.as_str(), *n))
        .chain(FIXED_ENTRY_SIZES.iter().copied())
        .find(|(s, _)| *s == name)
        .map(|(_, n)| n)
        .or_else(|| {
            elfdiff::entries::stride(back, sec, &PlanOptions::default())
                .ok()
                .map(|st| st.size)
        })
        .ok_or_else(|| {
            format!("entries: {name}: no entry size (add `//# entry-size: {name}=BYTES`)")
        })?;
    let s = back.sec(sec);
    if s.size != n * size {
        return Err(format!(
            "entries: {name} is {} bytes, expected {n} entries of {size}",
            s.size
        )
        .into());
    }
    if name == ".printk_index" {
        // Pointers to `_entry` objects, not into code: printk_formats() checks them.
        printk_formats(back, expect)?;
        return Ok(());
    }
    for k in 0..n {
        let into_code = s.relocs_in(k * size, (k + 1) * size).iter().any(|r| {
            back.sym(r.sym)
                .section
                .is_some_and(|t| back.sec(t).is_exec())
        });
        if !into_code {
            return Err(format!("entries: {name} entry {k} points into no carried code").into());
        }
    }
    Ok(())
}

/// Where a relocation of the livepatch object points: a defined section and the offset there
/// (absolute relocations of data only). Undefined targets (klp or ordinary references to the
/// running kernel) are errors.
fn data_target(
    back: &Object<'_, Orig>,
    r: &elfdiff::model::Reloc<Orig>,
) -> Result<(usize, u64), Failed> {
    let t = back.sym(r.sym);
    let sec = t.section.filter(|_| !t.undefined).ok_or_else(|| {
        format!(
            "a relocation points at {}, not at a copy in the livepatch",
            t.name
        )
    })?;
    let off = (t.value as i64 + r.addend) as u64;
    Ok((sec.get(), off))
}

/// The first word of the format of each `.printk_index` entry of the livepatch object, sorted.
/// Each entry must point at an `_entry` object copied into the livepatch whose every relocation
/// (its format, `__func__`, file and level strings) points at copies too: no klp relocation.
/// The formats of the livepatch's printk index entries (first word each); `fmt` is at the
/// offset a `member: pi_entry.fmt=N` directive gives, else at 0.
fn printk_formats(
    back: &Object<'_, Orig>,
    expect: &fixture::Expect,
) -> Result<Vec<String>, Failed> {
    let fmt_at = expect
        .member
        .iter()
        .find(|(m, _)| m == "pi_entry.fmt")
        .map_or(0, |(_, n)| *n);
    let Some(idx) = back.find_section(".printk_index") else {
        return Ok(Vec::new());
    };
    let idx = back.sec(idx);
    if idx.relocs.len() as u64 * 8 != idx.size {
        return Err(format!(
            ".printk_index: {} bytes but {} relocations",
            idx.size,
            idx.relocs.len()
        )
        .into());
    }
    let mut out = Vec::new();
    for r in &idx.relocs {
        let (esec, eoff) = data_target(back, r)?;
        let esec = &back.sections[esec];
        if esec.is_exec() {
            return Err(format!(".printk_index entry at {:#x} points into code", r.offset).into());
        }
        let entry = esec.relocs_in(eoff, eoff + 48);
        let mut fmt = None;
        for m in entry {
            let (ssec, soff) = data_target(back, m)?;
            if m.offset == eoff + fmt_at {
                let data = back.sections[ssec].data;
                let s = data.get(soff as usize..).unwrap_or_default();
                let s = &s[..s.iter().position(|&b| b == 0).unwrap_or(s.len())];
                fmt = Some(String::from_utf8_lossy(s).into_owned());
            }
        }
        let fmt = fmt.ok_or_else(|| format!("{}+{eoff:#x} has no fmt", esec.name))?;
        out.push(
            fmt.split_whitespace()
                .next()
                .unwrap_or_default()
                .to_string(),
        );
    }
    out.sort();
    Ok(out)
}

/// Every `//#` line of every fixture names a directive of `fixture::DIRECTIVES` (each
/// fixture's own trial fails too; this one lists them all, by file and line).
fn directives_known() -> Result<(), Failed> {
    let mut unknown = Vec::new();
    for src in fixture::all() {
        let text = std::fs::read_to_string(&src).map_err(|e| e.to_string())?;
        for (line, key, _) in fixture::directive_lines(&text) {
            if !fixture::DIRECTIVES.iter().any(|(k, _)| *k == key) {
                unknown.push(format!(
                    "tests/fixtures/{}.c:{line}: {key:?}",
                    fixture::stem(&src)
                ));
            }
        }
    }
    if unknown.is_empty() {
        Ok(())
    } else {
        let known: Vec<&str> = fixture::DIRECTIVES.iter().map(|(k, _)| *k).collect();
        Err(format!(
            "unknown fixture directives (known: {known:?}):\n{}",
            unknown.join("\n")
        )
        .into())
    }
}

/// The parser takes every directive `fixture::DIRECTIVES` lists (with a well-formed value) and
/// no other: the list and the parser cannot drift apart.
fn directives_parsed() -> Result<(), Failed> {
    // A value each directive accepts; `nochange` keeps the fixture's expectation stated.
    let sample = |k: &str| match k {
        "entry-size" | "member" | "entries" | "bytes" => "x=1",
        "fresh" | "kept" | "parts" => "f:g",
        "arch" => "ppc64le",
        "code" => "f 90",
        "callback" => "post_patch f",
        "state" => "0x10 1",
        "explain" => "f kind=changed",
        _ => "f",
    };
    for (k, doc) in fixture::DIRECTIVES {
        if doc.is_empty() {
            return Err(format!("directive {k:?} has no description").into());
        }
        let text = format!("//# nochange\n//# {k}: {}\n", sample(k));
        fixture::parse_expect(&text).map_err(|e| format!("{k}: {e}"))?;
    }
    match fixture::parse_expect("//# nochange\n//# no-such-directive: f\n") {
        Err(e) if e.contains("unknown directive") => Ok(()),
        other => Err(format!("an unknown directive was not refused: {other:?}").into()),
    }
}

fn main() {
    let args = Arguments::from_args();
    let mut trials: Vec<Trial> = fixture::all()
        .into_iter()
        .map(|f| Trial::test(fixture::stem(&f), move || check(f)))
        .collect();
    trials.push(Trial::test("directives_known", directives_known));
    trials.push(Trial::test("directives_parsed", directives_parsed));
    libtest_mimic::run(&args, trials).exit();
}
