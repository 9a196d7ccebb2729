//! docs/ci.md is a working pipeline: its script, extracted from the page, is run against a
//! stand-in klpgen that answers each kernel differently (built, refused, no change, an error
//! with a report, an error before any report) and must build what it can, say why the others
//! did not, keep every report, and exit 1 exactly when some kernel did not build; every report
//! field it reads is documented in docs/report.md; both pipeline definitions parse and keep
//! the output as artifacts also when the job fails. (tests/cli.rs runs the same script with
//! klpgen itself.)

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The fenced blocks of a Markdown file with the given info string, in order.
fn blocks(md: &str, lang: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur: Option<String> = None;
    for line in md.lines() {
        match &mut cur {
            None if line.trim_end() == format!("```{lang}") => cur = Some(String::new()),
            Some(b) if line.trim_end() == "```" => {
                out.push(std::mem::take(b));
                cur = None;
            }
            Some(b) => {
                b.push_str(line);
                b.push('\n');
            }
            None => {}
        }
    }
    out
}

fn doc() -> String {
    fs::read_to_string(root().join("docs/ci.md")).unwrap()
}

/// The script of docs/ci.md (the `sh` block that starts with `#!/bin/sh`).
pub fn script() -> String {
    let found: Vec<String> = blocks(&doc(), "sh")
        .into_iter()
        .filter(|b| b.starts_with("#!/bin/sh\n"))
        .collect();
    assert_eq!(found.len(), 1, "docs/ci.md must have one #!/bin/sh block");
    found.into_iter().next().unwrap()
}

/// A stand-in klpgen: `build` answers by the source directory's name (`good*` built,
/// `refuse*` refused, `same*` no change, `broken*` an error with a report, `noreport*` an
/// error before the report, `liar*` built but exit 0 with a report saying 2), writing a report
/// shaped as docs/report.md says.
const STAND_IN: &str = r#"#!/bin/sh
[ "$1" = build ] || exit 9
shift
while [ $# -gt 0 ]; do
    case "$1" in
    --sourcedir) src=$2; shift 2 ;;
    --builddir) shift 2 ;;
    --name) name=$2; shift 2 ;;
    --output) out=$2; shift 2 ;;
    --report) report=$2; shift 2 ;;
    *) patch=$1; shift ;;
    esac
done
[ -f "$patch" ] || { echo "klpgen: cannot read $patch" >&2; exit 1; }
k=$(basename "$(dirname "$src")")
module="$out/livepatch-$name.ko"
head='"schema": "klpgen-report/1", "klpgen_version": "0.1.0", "kernel": {"release": "6.12.0-'$k'", "config_sha256": "00", "compiler": "gcc"}, "patches": [], "klp_relocations": [], "hook": "c", "stages": []'
case "$k" in
good*)
    echo module >"$module"
    printf '{%s, "result": "built", "exit_code": 0, "objects": [], "module": {"path": "%s", "sha256": "5ha-%s", "signed": false}}\n' "$head" "$module" "$k" >"$report"
    echo "livepatch module: $module"
    exit 0 ;;
refuse*)
    printf '{%s, "result": "refused", "exit_code": 2, "message": "1 function refused", "module": null, "objects": [{"unit": "kernel/x.o", "target": "vmlinux", "functions": [{"name": "f", "verdict": "changed"}, {"name": "counter", "verdict": "refused", "key": "refuse.data-changed.counter", "reason": "existing data changed", "hint": "use a shadow variable"}]}]}\n' "$head" >"$report"
    echo "klpgen: refused" >&2
    exit 2 ;;
same*)
    printf '{%s, "result": "no-change", "exit_code": 3, "message": "no functional change", "module": null, "objects": []}\n' "$head" >"$report"
    exit 3 ;;
broken*)
    printf '{%s, "result": "error", "exit_code": 1, "message": "the patch does not apply", "module": null, "objects": []}\n' "$head" >"$report"
    exit 1 ;;
liar*)
    echo module >"$module"
    printf '{%s, "result": "built", "exit_code": 2, "objects": [], "module": {"path": "%s", "sha256": "x", "signed": false}}\n' "$head" "$module" >"$report"
    exit 0 ;;
noreport*)
    echo "error: unexpected argument" >&2
    exit 1 ;;
esac
exit 7
"#;

struct Run {
    code: Option<i32>,
    stdout: String,
    out: PathBuf,
    _tmp: tempfile::TempDir,
}

/// The script run in a fresh directory with `kernels` as its list and the stand-in klpgen.
fn run(kernels: &[&str]) -> Run {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let script = dir.join("build-livepatches.sh");
    fs::write(&script, script_text()).unwrap();
    let klpgen = dir.join("klpgen");
    fs::write(&klpgen, STAND_IN).unwrap();
    fs::set_permissions(&klpgen, fs::Permissions::from_mode(0o755)).unwrap();
    fs::write(dir.join("fix.patch"), "--- a/x\n+++ b/x\n").unwrap();
    let mut list = String::from("# name sourcedir builddir\n\n");
    for k in kernels {
        list.push_str(&format!("{k}  /srv/{k}/src  /srv/{k}/build\n"));
    }
    fs::write(dir.join("kernels.txt"), list).unwrap();
    let path = format!(
        "{}:{}",
        dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let o = Command::new("sh")
        .arg(&script)
        .current_dir(dir)
        .env("PATH", path)
        .env_remove("PATCH")
        .env_remove("KERNELS")
        .env_remove("OUT")
        .env_remove("KLPGEN")
        .env_remove("NAME")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&o.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        !stderr.contains("jq: not found") && !stderr.contains("jq: command not found"),
        "the script needs jq (cargo xtask setup): {stderr}"
    );
    Run {
        code: o.status.code(),
        stdout: stdout + &stderr,
        out: dir.join("livepatches"),
        _tmp: tmp,
    }
}

fn script_text() -> String {
    script()
}

#[test]
fn every_kernel_built_passes_and_keeps_modules_and_reports() {
    let r = run(&["good-a", "good-b"]);
    assert_eq!(r.code, Some(0), "{}", r.stdout);
    for k in ["good-a", "good-b"] {
        assert!(r.out.join(k).join("livepatch-fix.ko").is_file(), "{k}");
        assert!(r.out.join(k).join("report.json").is_file(), "{k}");
        assert!(r.out.join(k).join("build.log").is_file(), "{k}");
        let line =
            format!("{k}: built livepatches/{k}/livepatch-fix.ko sha256 5ha-{k} for 6.12.0-{k}\n");
        assert!(r.stdout.contains(&line), "{line:?} not in:\n{}", r.stdout);
    }
    let summary = fs::read_to_string(r.out.join("summary.txt")).unwrap();
    assert!(summary.ends_with("2 of 2 kernels built\n"), "{summary}");
}

#[test]
fn any_kernel_not_built_fails_after_building_the_others() {
    let r = run(&["good-a", "refuse-b", "same-c", "broken-d", "noreport-e"]);
    assert_eq!(r.code, Some(1), "{}", r.stdout);
    // One kernel's failure does not stop the others.
    assert!(r.out.join("good-a/livepatch-fix.ko").is_file());
    for want in [
        "refuse-b: REFUSED: 1 function refused\n",
        "    refuse.data-changed.counter: existing data changed (hint: use a shadow variable)\n",
        "same-c: no-change (exit 3): no functional change\n",
        "broken-d: error (exit 1): the patch does not apply\n",
        "noreport-e: error (exit 1, no report): error: unexpected argument\n",
        "1 of 5 kernels built\n",
    ] {
        assert!(r.stdout.contains(want), "{want:?} not in:\n{}", r.stdout);
    }
    // The summary artifact has the same lines; the changed function is not called refused.
    let summary = fs::read_to_string(r.out.join("summary.txt")).unwrap();
    assert!(summary.contains("refuse.data-changed.counter"), "{summary}");
    assert!(!summary.contains("    : "), "{summary}");
    for k in ["refuse-b", "same-c", "broken-d"] {
        assert!(r.out.join(k).join("report.json").is_file(), "{k}");
    }
}

#[test]
fn a_report_that_disagrees_with_the_exit_code_fails() {
    let r = run(&["liar-a"]);
    assert_eq!(r.code, Some(1), "{}", r.stdout);
    assert!(
        r.stdout
            .contains("liar-a: the report says exit code 2, klpgen exited 0"),
        "{}",
        r.stdout
    );
    let r = run(&[]);
    assert_eq!(r.code, Some(1), "{}", r.stdout);
    assert!(
        r.stdout.contains("no kernels in kernels.txt"),
        "{}",
        r.stdout
    );
}

/// The report fields a jq program reads: `.a.b`, and after `A | ...` fields relative to the
/// path A (`.objects[].functions[] | select(.verdict ...)` reads `objects[].functions[].verdict`).
fn jq_fields(program: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut base = String::new();
    for (i, stage) in program.split(" | ").enumerate() {
        let paths = paths_in(stage);
        let whole = stage.trim();
        if i == 0 && paths.len() == 1 && whole == format!(".{}", paths[0]) {
            base = paths[0].clone();
            out.push(base.clone());
            continue;
        }
        for p in paths {
            out.push(if base.is_empty() {
                p
            } else {
                format!("{base}.{p}")
            });
        }
    }
    out
}

/// `.name(.name|[])*` paths in a jq expression (string contents included: `"\(.key)"`).
fn paths_in(expr: &str) -> Vec<String> {
    let b = expr.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let starts = b[i] == b'.'
            && b.get(i + 1).is_some_and(|c| c.is_ascii_lowercase())
            && (i == 0 || !b[i - 1].is_ascii_alphanumeric());
        if !starts {
            i += 1;
            continue;
        }
        let mut p = String::new();
        while i < b.len() && b[i] == b'.' {
            let s = i + 1;
            i = s;
            while i < b.len()
                && (b[i].is_ascii_lowercase() || b[i].is_ascii_digit() || b[i] == b'_')
            {
                i += 1;
            }
            if !p.is_empty() {
                p.push('.');
            }
            p.push_str(&expr[s..i]);
            if expr[i..].starts_with("[]") {
                p.push_str("[]");
                i += 2;
            }
        }
        out.push(p);
    }
    out
}

#[test]
fn every_report_field_the_script_reads_is_documented() {
    let script = script();
    let mut programs = Vec::new();
    let mut rest = script.as_str();
    while let Some(at) = rest.find("jq -r '") {
        let tail = &rest[at + 7..];
        let end = tail.find('\'').expect("unterminated jq program");
        programs.push(tail[..end].to_string());
        rest = &tail[end..];
    }
    assert!(programs.len() >= 8, "{programs:?}");
    let report = fs::read_to_string(root().join("docs/report.md")).unwrap();
    // The table rows: | `path` | type | meaning |
    let rows: Vec<(String, String)> = report
        .lines()
        .filter_map(|l| {
            let l = l.strip_prefix("| `")?;
            let (path, rest) = l.split_once('`')?;
            let ty = rest
                .trim_start_matches(" |")
                .split(" | ")
                .next()?
                .to_string();
            Some((path.to_string(), ty))
        })
        .collect();
    let documented = |field: &str| {
        rows.iter().any(|(p, _)| p == field)
            || field.rsplit_once('.').is_some_and(|(parent, last)| {
                rows.iter().any(|(p, ty)| {
                    p == parent
                        && ty
                            .trim_start_matches('`')
                            .split(|c: char| !c.is_ascii_alphanumeric() && c != '_')
                            .any(|w| w == last)
                })
            })
    };
    let mut fields: Vec<String> = programs.iter().flat_map(|p| jq_fields(p)).collect();
    fields.sort();
    fields.dedup();
    for want in [
        "result",
        "exit_code",
        "module.sha256",
        "objects[].functions[].key",
    ] {
        assert!(
            fields.iter().any(|f| f == want),
            "{want} not read: {fields:?}"
        );
    }
    let missing: Vec<&String> = fields.iter().filter(|f| !documented(f)).collect();
    assert!(
        missing.is_empty(),
        "read but not in docs/report.md: {missing:?}"
    );
    assert!(!documented("module.nonsense") && !documented("outcome"));
}

/// A YAML block of docs/ci.md as JSON (python3-yaml).
fn yaml(block: &str) -> serde_json::Value {
    let mut child = Command::new("python3")
        .args([
            "-c",
            "import json, sys, yaml; print(json.dumps(yaml.safe_load(sys.stdin)))",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python3 (cargo xtask setup)");
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(block.as_bytes())
        .unwrap();
    let o = child.wait_with_output().unwrap();
    assert!(
        o.status.success(),
        "YAML does not parse (python3-yaml needed): {}",
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_slice(&o.stdout).unwrap()
}

#[test]
fn both_pipelines_parse_run_the_script_and_keep_artifacts_always() {
    let ymls = blocks(&doc(), "yaml");
    assert_eq!(ymls.len(), 2, "a GitLab CI and a GitHub Actions block");
    let gitlab = yaml(&ymls[0]);
    let job = &gitlab["livepatches"];
    assert!(
        job["script"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s == "sh ci/build-livepatches.sh"),
        "{job}"
    );
    assert_eq!(job["artifacts"]["when"], "always");
    assert_eq!(
        job["artifacts"]["paths"],
        serde_json::json!(["livepatches/"])
    );

    let github = yaml(&ymls[1]);
    let steps = github["jobs"]["build"]["steps"].as_array().unwrap();
    assert!(steps
        .iter()
        .any(|s| s["run"] == "sh ci/build-livepatches.sh"));
    let upload = steps
        .iter()
        .find(|s| {
            s["uses"]
                .as_str()
                .is_some_and(|u| u.starts_with("actions/upload-artifact"))
        })
        .expect("an upload-artifact step");
    assert_eq!(upload["if"], "always()");
    assert_eq!(upload["with"]["path"], "livepatches/");
    // The variables the script reads are the ones both jobs set.
    for v in ["PATCH", "NAME", "KERNELS"] {
        assert!(script().contains(&format!("{v}=${{{v}:-")), "{v}");
        assert!(job["variables"][v].is_string(), "GitLab job lacks {v}");
        assert!(
            github["jobs"]["build"]["env"][v].is_string(),
            "GitHub job lacks {v}"
        );
    }
}

#[test]
fn jq_paths_are_found() {
    assert_eq!(jq_fields(".module.path"), ["module.path"]);
    assert_eq!(jq_fields(".message // \"\""), ["message"]);
    assert_eq!(
        jq_fields(".objects[].functions[] | select(.verdict == \"refused\") | \"\\(.key): \\(.hint // \"none\")\""),
        [
            "objects[].functions[]",
            "objects[].functions[].verdict",
            "objects[].functions[].key",
            "objects[].functions[].hint"
        ]
    );
}
