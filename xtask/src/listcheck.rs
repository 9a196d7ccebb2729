//! `klpgen list` against a real kernel: the guest's /init prints the loaded livepatch's sysfs
//! tree (`KLPGEN-SYSFS` lines: `/sys/kernel/livepatch/<patch>/...`, the module's initstate,
//! taint and build-id note, see guest.rs), the host rebuilds it in a directory and runs
//! `klpgen list --sysfs DIR --modules OUTPUT --format json` (klpgen is a host program; the guest
//! has only busybox). The listing must show the patch enabled and settled, find the module klpgen
//! just built by its build-id, read klpgen's records from it and find them equal to what the
//! kernel lists.

use std::fs;
use std::path::{Component, Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

/// Rebuilds the dumped tree under `root` (the guest's `/sys` becomes `root`).
pub fn rebuild(lines: &[String], root: &Path) -> Result<()> {
    if root.exists() {
        fs::remove_dir_all(root)?;
    }
    fs::create_dir_all(root)?;
    if lines.last().map(String::as_str) != Some("end") {
        bail!("the guest's sysfs dump is incomplete (no `end` line)");
    }
    for line in &lines[..lines.len() - 1] {
        let mut it = line.splitn(3, ' ');
        let (kind, path, value) = (it.next(), it.next(), it.next());
        let path = path.with_context(|| format!("sysfs dump line {line:?}"))?;
        let dest = below(root, path)?;
        match (kind, value) {
            (Some("d"), None) => fs::create_dir_all(&dest)?,
            (Some("f"), v) => {
                fs::create_dir_all(dest.parent().context("no parent")?)?;
                fs::write(&dest, format!("{}\n", v.unwrap_or("")))?;
            }
            (Some("x"), Some(hex)) => {
                fs::create_dir_all(dest.parent().context("no parent")?)?;
                fs::write(&dest, unhex(hex)?)?;
            }
            _ => bail!("sysfs dump line {line:?}"),
        }
    }
    Ok(())
}

/// `/sys/a/b` as `root/a/b`; nothing outside `/sys`.
fn below(root: &Path, guest: &str) -> Result<PathBuf> {
    let rel = Path::new(guest)
        .strip_prefix("/sys")
        .with_context(|| format!("{guest} is not under /sys"))?;
    if !rel.components().all(|c| matches!(c, Component::Normal(_))) {
        bail!("{guest}: unexpected path");
    }
    Ok(root.join(rel))
}

fn unhex(s: &str) -> Result<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        bail!("odd hex string {s:?}");
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).with_context(|| format!("bad hex {s:?}")))
        .collect()
}

/// `klpgen list` on the rebuilt tree: `Ok(Err(problem))` when the listing is wrong.
pub fn check(
    klpgen: &Path,
    lines: &[String],
    module_name: &str,
    module: &Path,
    logs: &Path,
) -> Result<Result<String, String>> {
    let root = logs.join("guest-sysfs");
    if let Err(e) = rebuild(lines, &root) {
        return Ok(Err(format!("klpgen list: {e:#}")));
    }
    let outdir = module.parent().context("module without a directory")?;
    let run = |format: &str| -> Result<(bool, String, String)> {
        let out = Command::new(klpgen)
            .arg("list")
            .arg("--sysfs")
            .arg(&root)
            .arg("--modules")
            .arg(outdir)
            .args(["--format", format])
            .stdin(Stdio::null())
            .output()
            .context("cannot run klpgen list")?;
        Ok((
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        ))
    };
    let (ok, text, err) = run("text")?;
    fs::write(logs.join("klpgen-list.txt"), &text)?;
    if !ok {
        return Ok(Err(format!("klpgen list failed: {}", err.trim())));
    }
    let (ok, json, err) = run("json")?;
    fs::write(logs.join("klpgen-list.json"), &json)?;
    if !ok {
        return Ok(Err(format!(
            "klpgen list --format json failed: {}",
            err.trim()
        )));
    }
    let doc: serde_json::Value = serde_json::from_str(&json).context("klpgen list's JSON")?;
    Ok(judge(&doc, module_name, module))
}

/// What must be true of the listing of one loaded klpgen module.
fn judge(doc: &serde_json::Value, module_name: &str, module: &Path) -> Result<String, String> {
    let patches = doc["livepatches"]
        .as_array()
        .ok_or("no livepatches array")?;
    let [p] = patches.as_slice() else {
        return Err(format!(
            "klpgen list shows {} livepatches, expected 1",
            patches.len()
        ));
    };
    let m = &p["module"];
    let want = [
        ("/name", serde_json::json!(module_name)),
        ("/enabled", serde_json::json!(true)),
        ("/transition", serde_json::json!(false)),
        ("/module/state", serde_json::json!("live")),
        ("/module/file_status", serde_json::json!("verified")),
        (
            "/module/file",
            serde_json::json!(module.display().to_string()),
        ),
        ("/module/built_by", serde_json::json!("klpgen")),
        ("/module/klpgen/matches_sysfs", serde_json::json!(true)),
    ];
    for (ptr, v) in &want {
        let got = p.pointer(ptr).unwrap_or(&serde_json::Value::Null);
        if got != v {
            return Err(format!(
                "klpgen list: {ptr} is {got}, expected {v} (differences: {})",
                m["klpgen"]["differences"]
            ));
        }
    }
    let taint = m["taint"].as_str().unwrap_or("");
    if !taint.contains('K') {
        return Err(format!("klpgen list: taint {taint:?} lacks K"));
    }
    let functions: usize = p["objects"]
        .as_array()
        .map(|o| {
            o.iter()
                .map(|o| o["functions"].as_array().map_or(0, Vec::len))
                .sum()
        })
        .unwrap_or(0);
    if functions == 0 {
        return Err("klpgen list shows no replaced functions".into());
    }
    Ok(format!(
        "klpgen list found it by build-id, {functions} replaced function(s) as recorded"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dumps_are_rebuilt_below_the_root() {
        let tmp = std::env::temp_dir().join(format!("xtask-listcheck-{}", std::process::id()));
        let lines: Vec<String> = [
            "d /sys/kernel/livepatch/lp",
            "f /sys/kernel/livepatch/lp/enabled 1",
            "d /sys/kernel/livepatch/lp/vmlinux/f,1",
            "x /sys/module/lp/notes/.note.gnu.build-id 0400ab",
            "end",
        ]
        .map(String::from)
        .to_vec();
        rebuild(&lines, &tmp).unwrap();
        assert_eq!(
            fs::read_to_string(tmp.join("kernel/livepatch/lp/enabled")).unwrap(),
            "1\n"
        );
        assert!(tmp.join("kernel/livepatch/lp/vmlinux/f,1").is_dir());
        assert_eq!(
            fs::read(tmp.join("module/lp/notes/.note.gnu.build-id")).unwrap(),
            [4, 0, 0xab]
        );
        assert!(rebuild(&lines[..4], &tmp).is_err());
        let bad = ["f /etc/passwd x".to_string(), "end".to_string()];
        assert!(rebuild(&bad, &tmp).is_err());
        let bad = ["d /sys/../etc".to_string(), "end".to_string()];
        assert!(rebuild(&bad, &tmp).is_err());
        fs::remove_dir_all(&tmp).unwrap();
    }

    #[test]
    fn the_listing_is_judged() {
        let m = Path::new("/out/livepatch-x.ko");
        let good = serde_json::json!({"livepatches": [{
            "name": "livepatch_x", "enabled": true, "transition": false,
            "objects": [{"name": "vmlinux", "functions": [{"name": "f", "sympos": 1}]}],
            "module": {"state": "live", "taint": "OK", "file_status": "verified",
                "file": "/out/livepatch-x.ko", "built_by": "klpgen",
                "klpgen": {"matches_sysfs": true, "differences": []}}}]});
        assert!(judge(&good, "livepatch_x", m).is_ok());
        let mut bad = good.clone();
        bad["livepatches"][0]["module"]["file_status"] = "other-build".into();
        assert!(judge(&bad, "livepatch_x", m)
            .unwrap_err()
            .contains("file_status"));
        let mut bad = good.clone();
        bad["livepatches"][0]["objects"][0]["functions"] = serde_json::json!([]);
        assert!(judge(&bad, "livepatch_x", m).is_err());
        assert!(judge(&serde_json::json!({"livepatches": []}), "livepatch_x", m).is_err());
    }
}
