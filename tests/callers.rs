//! The call graph (`elfdiff::callgraph`) and `klpgen callers` on objects gcc compiles from
//! tests/fixtures/callgraph/{a,b}.c with kernel-like flags, with and without function
//! sections (vmlinux.o has none), linked by `ld -r` as kbuild links vmlinux.o.

use testsupport::gcc;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use elfdiff::callgraph::{CallGraph, FuncId, Taker, Unpatchable};
use elfdiff::model::Orig;
use elfdiff::Object;

use gcc::run;

/// a.o and b.o linked into one relocatable object; with `sections`, built with function and
/// data sections. Built once per test binary (the tests run in parallel).
fn linked(sections: bool) -> PathBuf {
    static BUILT: [OnceLock<PathBuf>; 2] = [OnceLock::new(), OnceLock::new()];
    BUILT[usize::from(sections)]
        .get_or_init(|| build_linked(sections))
        .clone()
}

fn build_linked(sections: bool) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("callers")
        .join(if sections { "sections" } else { "plain" });
    std::fs::create_dir_all(&dir).unwrap();
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/callgraph");
    for f in ["a", "b"] {
        let mut cmd = Command::new("gcc");
        cmd.args(gcc::KERNEL_CFLAGS);
        if sections {
            cmd.args(gcc::DIFF_CFLAGS);
        }
        run(cmd
            .arg(src.join(format!("{f}.c")))
            .arg("-o")
            .arg(dir.join(format!("{f}.o"))));
    }
    let out = dir.join("vmlinux.o");
    run(Command::new("ld")
        .arg("-r")
        .arg("-o")
        .arg(&out)
        .arg(dir.join("a.o"))
        .arg(dir.join("b.o")));
    out
}

fn one(g: &CallGraph<'_>, spec: &str) -> FuncId {
    let found = g.find(spec);
    assert_eq!(found.len(), 1, "{spec}: {found:?}");
    found[0]
}

fn label(g: &CallGraph<'_>, f: FuncId) -> String {
    let func = g.func(f);
    match func.file {
        Some(file) => format!("{file}:{}", func.name),
        None => func.name.to_string(),
    }
}

fn callers(g: &CallGraph<'_>, f: FuncId) -> Vec<String> {
    let mut v: Vec<String> = g
        .direct_callers(f)
        .iter()
        .map(|e| label(g, e.caller))
        .collect();
    v.sort();
    v
}

fn check_graph(sections: bool) {
    let path = linked(sections);
    let bytes = std::fs::read(&path).unwrap();
    let obj = Object::<Orig>::parse(path.display().to_string(), &bytes).unwrap();
    let g = CallGraph::build(&[&obj]);
    let what = if sections {
        "function sections"
    } else {
        "one .text"
    };

    // Cross-file calls, the static twins told apart by file, tail calls.
    let bar = one(&g, "bar");
    assert_eq!(
        callers(&g, bar),
        [
            "a.c:helper",
            "a.c:via_ops",
            "looper",
            "once",
            "quiet",
            "setup",
            "tail"
        ],
        "{what}"
    );
    assert_eq!(g.find("helper").len(), 2, "{what}");
    let (ha, hb) = (one(&g, "a.c:helper"), one(&g, "b.c:helper"));
    assert_eq!(callers(&g, ha), ["twin_user_a"], "{what}");
    assert_eq!(callers(&g, hb), ["bar", "twin_user_b"], "{what}");
    let tail = g.edge(one(&g, "tail"), bar).unwrap();
    assert!(tail.tail_only(), "{what}: {tail:?}");
    assert!(!g.edge(one(&g, "once"), bar).unwrap().tail_only());

    // Loops: looper calls bar and sleep_a_bit inside one; once calls bar outside any.
    let looper = one(&g, "looper");
    assert!(g.loops_over(looper, bar), "{what}");
    assert!(g.loops_over(looper, one(&g, "sleep_a_bit")), "{what}");
    assert!(!g.loops_over(one(&g, "once"), bar), "{what}");
    let c = g.consistency(bar);
    assert_eq!(c.looping_callers, [looper], "{what}");
    assert!(!c.address_taken);

    // Patchability.
    assert_eq!(
        g.unpatchable(one(&g, "quiet")),
        [Unpatchable::NoFtrace],
        "{what}"
    );
    assert_eq!(
        g.unpatchable(one(&g, "setup")),
        [Unpatchable::Init],
        "{what}"
    );
    assert!(
        g.patchable(looper) && g.patchable(ha) && g.patchable(bar),
        "{what}"
    );
    assert_eq!(
        g.unpatchable(one(&g, "register_cb")),
        [Unpatchable::Undefined]
    );

    // Address taken: via_ops by the ops table in .rodata, cb by reg's code.
    let via_ops = one(&g, "via_ops");
    let by: Vec<Taker<'_>> = g.refs_to(via_ops).iter().map(|r| r.by).collect();
    assert!(
        matches!(by.as_slice(), [Taker::Data { section, symbol: Some("my_ops"), .. }] if section.starts_with(".rodata")),
        "{what}: {by:?}"
    );
    let cb = one(&g, "cb");
    let by: Vec<Taker<'_>> = g.refs_to(cb).iter().map(|r| r.by).collect();
    assert_eq!(by, [Taker::Func(one(&g, "reg"))], "{what}");
    assert!(g.direct_callers(cb).is_empty());
    assert!(!g.address_taken(looper));

    // Depth 2: twin_user_a reaches bar through a.c's helper.
    let reached = g.callers(bar, 2);
    let twin = reached
        .iter()
        .find(|r| g.func(r.func).name == "twin_user_a")
        .unwrap();
    assert_eq!((twin.depth, twin.via), (2, ha));
    assert_eq!(twin.path, [twin.func, ha, bar]);
    assert!(reached.iter().all(|r| g.func(r.func).name != "twin_user_b"));
}

#[test]
fn graph_of_one_text_section() {
    check_graph(false);
}

#[test]
fn graph_with_function_sections() {
    check_graph(true);
}

fn klpgen(args: &[&str], object: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_klpgen"))
        .arg("callers")
        .arg("--vmlinux-o")
        .arg(object)
        .args(args)
        .output()
        .unwrap()
}

fn stdout(o: &Output) -> String {
    assert!(
        o.status.success(),
        "klpgen callers failed:\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout.clone()).unwrap()
}

#[test]
fn cli_text_json_and_dot() {
    let obj = linked(false);

    let text = stdout(&klpgen(&["bar"], &obj));
    let line = |name: &str| {
        text.lines()
            .find(|l| l.trim_start().starts_with(name))
            .unwrap_or_else(|| panic!("no line for {name} in:\n{text}"))
            .to_string()
    };
    assert!(line("looper").contains("CALLS bar IN A LOOP"), "{text}");
    assert!(!line("once").contains("LOOP"), "{text}");
    assert!(
        line("quiet").contains("NOT PATCHABLE: no ftrace entry"),
        "{text}"
    );
    assert!(line("setup").contains("NOT PATCHABLE: __init"), "{text}");
    assert!(line("tail").contains("tail-calls bar"), "{text}");
    assert!(
        line("a.c:via_ops").contains("address taken by my_ops"),
        "{text}"
    );
    assert!(
        line("twin_user_a").starts_with("      "),
        "depth 2 is nested:\n{text}"
    );
    assert!(
        text.contains("note: looper calls bar inside a loop"),
        "{text}"
    );

    // JSON, for FILE:NAME and for an ambiguous name (one object per function).
    let json = stdout(&klpgen(
        &["--format", "json", "--depth", "1", "a.c:helper", "helper"],
        &obj,
    ));
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    let all = v.as_array().unwrap();
    assert_eq!(all.len(), 3, "{json}");
    assert_eq!(all[0]["query"], "a.c:helper");
    assert_eq!(all[0]["file"], "a.c");
    assert_eq!(all[0]["callers"][0]["name"], "twin_user_a");
    assert_eq!(all[0]["callees"][0]["name"], "bar");
    let files: Vec<&str> = all[1..]
        .iter()
        .map(|f| f["file"].as_str().unwrap())
        .collect();
    assert_eq!(files, ["a.c", "b.c"]);

    let json = stdout(&klpgen(&["--format", "json", "bar"], &obj));
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    let bar = &v[0];
    assert_eq!(bar["patchable"], true);
    assert_eq!(bar["address_taken"].as_array().unwrap().len(), 0);
    let caller = |name: &str| {
        bar["callers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == name)
            .unwrap_or_else(|| panic!("no caller {name}: {json}"))
            .clone()
    };
    assert_eq!(caller("looper")["loops"], true);
    assert_eq!(caller("once")["loops"], false);
    assert_eq!(caller("quiet")["patchable"], false);
    assert_eq!(caller("quiet")["reasons"], serde_json::json!(["no-ftrace"]));
    assert_eq!(caller("setup")["reasons"], serde_json::json!(["init"]));
    assert_eq!(caller("via_ops")["address_taken"], true);
    assert_eq!(caller("tail")["kind"], "tail-call");
    let twin = caller("twin_user_a");
    assert_eq!(
        (twin["depth"].as_u64(), twin["via"].as_str()),
        (Some(2), Some("helper"))
    );
    assert_eq!(
        twin["path"],
        serde_json::json!(["twin_user_a", "helper", "bar"])
    );

    let dot = stdout(&klpgen(&["--format", "dot", "bar"], &obj));
    assert!(dot.starts_with("digraph callers {"), "{dot}");
    assert!(dot.contains("label=\"loop\""), "{dot}");
    assert!(dot.contains("not patchable: __init"), "{dot}");

    // Errors: an unknown name, a missing vmlinux.o.
    let o = klpgen(&["no_such_function"], &obj);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("no function named no_such_function"));
    let o = Command::new(env!("CARGO_BIN_EXE_klpgen"))
        .args(["callers", "--builddir", "/nonexistent", "bar"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("vmlinux.o not found"));
}

#[test]
fn cli_svg_through_graphviz() {
    if Command::new("dot").arg("-V").output().is_err() {
        // `cargo xtask setup` installs graphviz; without it the option reports the package.
        let o = klpgen(&["--svg", "/dev/null", "bar"], &linked(false));
        assert_eq!(o.status.code(), Some(1));
        assert!(String::from_utf8_lossy(&o.stderr).contains("graphviz"));
        return;
    }
    let obj = linked(false);
    let svg = obj.with_file_name("bar.svg");
    let _ = std::fs::remove_file(&svg);
    stdout(&klpgen(&["--svg", svg.to_str().unwrap(), "bar"], &obj));
    let text = std::fs::read_to_string(&svg).unwrap();
    assert!(text.contains("<svg"), "{text}");
    assert!(text.contains("looper"), "{text}");
}
