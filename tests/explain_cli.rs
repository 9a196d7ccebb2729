//! `klpgen explain` (and the `explain` array of `klpgen diff --format json`) on object pairs
//! compiled from the fixtures with gcc and `-g`.

use testsupport::gcc;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The line of fixture `name` that carries the comment mark `@mark`.
fn marked_line(name: &str, mark: &str) -> u64 {
    let src = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(format!("{name}.c"));
    let text = std::fs::read_to_string(src).unwrap();
    let tag = format!("/* @{mark} */");
    let hits: Vec<usize> = (1..=text.lines().count())
        .zip(text.lines())
        .filter(|(_, l)| l.contains(&tag))
        .map(|(n, _)| n)
        .collect();
    assert_eq!(hits.len(), 1, "mark @{mark} in {name}.c");
    hits[0] as u64
}

/// Compile fixture `name` twice (original, patched) into a directory of its own. Tests run in
/// parallel and several compile the same fixture: each writes a file of its own and renames it
/// into place, so none reads another's half-written object.
fn pair(name: &str) -> (PathBuf, PathBuf) {
    let src = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(format!("{name}.c"));
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("explain-cli")
        .join(name);
    std::fs::create_dir_all(&dir).unwrap();
    let out = (dir.join("orig.o"), dir.join("patched.o"));
    for (o, patched) in [(&out.0, false), (&out.1, true)] {
        let mut cmd = Command::new("gcc");
        cmd.args(gcc::KERNEL_CFLAGS)
            .args(gcc::DIFF_CFLAGS)
            .arg("-g");
        if patched {
            cmd.arg("-DPATCHED");
        }
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tmp = o.with_extension(format!("o.{}.{n}", std::process::id()));
        let r = cmd
            .arg(&src)
            .arg("-o")
            .arg(&tmp)
            .output()
            .expect("gcc runs");
        assert!(
            r.status.success(),
            "gcc failed: {}",
            String::from_utf8_lossy(&r.stderr)
        );
        std::fs::rename(&tmp, o).unwrap();
    }
    out
}

fn klpgen(args: &[&str], pair: &(PathBuf, PathBuf), extra: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_klpgen"))
        .args(args)
        .arg(&pair.0)
        .arg(&pair.1)
        .args(extra)
        .output()
        .expect("klpgen runs")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn text_names_the_string_and_both_lines() {
    let p = pair("string_change");
    let o = klpgen(&["explain"], &p, &[]);
    let text = stdout(&o);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{text}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let mut lines = text.lines();
    let head = lines.next().unwrap_or_default();
    assert!(
        head.starts_with("show_version: relocation target differs at +0x"),
        "{text}"
    );
    // The seq_printf lines of the two versions (see the fixture's @old and @new marks).
    let (old, new) = (
        marked_line("string_change", "old"),
        marked_line("string_change", "new"),
    );
    assert!(
        head.ends_with(&format!("(string_change.c:{old} -> string_change.c:{new})")),
        "{text}"
    );
    let minus = lines.next().unwrap_or_default();
    let plus = lines.next().unwrap_or_default();
    assert!(
        minus.starts_with("  - ") && minus.contains(r#""version %d\n""#),
        "{text}"
    );
    assert!(
        plus.starts_with("  + ") && plus.contains(r#""version %d (patched)\n""#),
        "{text}"
    );
    assert!(!text.contains("show_other"), "{text}");
}

#[test]
fn json_lists_the_inlined_callee() {
    let p = pair("inline_change");
    let o = klpgen(&["explain", "--format", "json"], &p, &["user_a"]);
    assert_eq!(o.status.code(), Some(0));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("JSON");
    let funcs = v["functions"].as_array().expect("functions");
    assert_eq!(funcs.len(), 1, "only the function asked for: {v}");
    assert_eq!(funcs[0]["function"], "user_a");
    assert_eq!(funcs[0]["cause"], "inlined-callee");
    assert_eq!(funcs[0]["inlined_callees"][0], "scale");
    assert_eq!(funcs[0]["patched"]["inlined"][0]["function"], "scale");
    assert_eq!(
        funcs[0]["patched"]["inlined"][0]["call_site"]["file"],
        "inline_change.c"
    );
}

#[test]
fn refusals_are_explained_and_exit_2() {
    let p = pair("notrace");
    let o = klpgen(&["explain"], &p, &[]);
    let text = stdout(&o);
    assert_eq!(o.status.code(), Some(2), "{text}");
    assert!(text.contains("untraced: changed at +0x"), "{text}");
    assert!(
        text.contains("  refused: refuse.no-ftrace.untraced"),
        "{text}"
    );
    assert!(
        text.contains("refused [refuse.no-ftrace.untraced] untraced in .text.untraced:"),
        "{text}"
    );
    assert!(text.contains("  hint: "), "{text}");
}

#[test]
fn unknown_function_is_an_error() {
    let p = pair("string_change");
    let o = klpgen(&["explain"], &p, &["show_other"]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("show_other is neither changed, new nor refused"),
        "{err}"
    );
}

#[test]
fn no_change_exits_3() {
    let p = pair("whitespace_only");
    let o = klpgen(&["explain"], &p, &[]);
    assert_eq!(o.status.code(), Some(3));
}

#[test]
fn diff_json_carries_explain() {
    let p = pair("string_change");
    let o = klpgen(&["diff", "--format", "json"], &p, &[]);
    assert_eq!(o.status.code(), Some(0));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("JSON");
    assert_eq!(v["changed"][0], "show_version");
    let ex = v["explain"].as_array().expect("explain array");
    assert_eq!(ex.len(), 1);
    assert_eq!(ex[0]["function"], "show_version");
    assert_eq!(ex[0]["kind"], "relocation");
    let (old, new) = (
        marked_line("string_change", "old"),
        marked_line("string_change", "new"),
    );
    assert_eq!(ex[0]["orig"]["location"]["line"], old);
    assert_eq!(ex[0]["patched"]["location"]["line"], new);
}

/// `klpgen build`'s "why": the changed lines of the patch (here the `#ifdef PATCHED` blocks
/// of the fixture, both versions being compiled from one file) against the original object's
/// line table tell a function's own change from an inlined callee's and from a change that
/// touches none of its lines (a macro).
#[test]
fn why_from_the_changed_lines() {
    use elfdiff::explain::{explain_with, Cause, ChangedLines};
    let p = pair("why_lines");
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/why_lines.c");
    let text = std::fs::read_to_string(&src).unwrap();
    let mut lines = Vec::new();
    let mut start = None;
    for (n, l) in (1u64..).zip(text.lines()) {
        if l.starts_with("#ifdef PATCHED") {
            start = Some(n);
        } else if l.starts_with("#endif") {
            lines.push((start.take().unwrap(), n + 1));
        }
    }
    assert_eq!(lines.len(), 3);
    let changed = [ChangedLines {
        file: "why_lines.c".into(),
        lines,
    }];
    let (ob, pb) = (std::fs::read(&p.0).unwrap(), std::fs::read(&p.1).unwrap());
    let orig = elfdiff::Object::<elfdiff::Orig>::parse("orig.o", &ob).unwrap();
    let patched = elfdiff::Object::<elfdiff::Patched>::parse("patched.o", &pb).unwrap();
    let diff = elfdiff::Diff::new(&orig, &patched);
    let ex = explain_with(&diff, &changed);
    let of = |f: &str| {
        let e = ex
            .functions
            .iter()
            .find(|e| e.function == f)
            .unwrap_or_else(|| panic!("{f} not explained: {ex:?}"));
        (e.cause, e.changed_callees.clone())
    };
    assert_eq!(of("own_change"), (Cause::OwnCode, vec![]));
    assert_eq!(
        of("scale_twice"),
        (Cause::InlinedCallee, vec!["scale".to_string()])
    );
    assert_eq!(of("use_limit"), (Cause::Indirect, vec![]));
    // Without the lines, the first difference decides: use_limit's own instruction differs.
    let plain = elfdiff::explain::explain(&diff);
    let e = plain
        .functions
        .iter()
        .find(|e| e.function == "use_limit")
        .unwrap();
    assert_eq!(e.cause, Cause::OwnCode);
}

/// `klpgen diff --output` says what the plan did beyond the verdicts: here that the changed
/// syscall body has no ftrace entry and is reached through its replaced stub.
#[test]
fn diff_output_prints_the_plan_notes() {
    let p = pair("syscall_body_notrace");
    let out = p.0.with_file_name("livepatch-notes.o");
    let o = klpgen(&["diff"], &p, &["--output", out.to_str().unwrap()]);
    let text = stdout(&o);
    assert_eq!(o.status.code(), Some(0), "{text}");
    assert!(
        text.contains("  note     __do_sys_demo has no ftrace entry")
            && text.contains("its callers __x64_sys_demo are replaced instead"),
        "{text}"
    );
    assert!(out.is_file());
}
