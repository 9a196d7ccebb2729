//! Source patches: what they touch, and applying them to the tree with GNU patch so that the
//! tree is always restored — on success, on error, on SIGINT/SIGTERM, and (through a journal
//! written before any change) on the next run after a SIGKILL. File times are restored too,
//! so the user's own builds do not see spurious changes.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::process::{self, Interrupt};

/// A patch file as given on the command line.
#[derive(Debug, Clone)]
pub struct PatchFile {
    pub path: PathBuf,
    pub text: String,
    /// Files it touches, relative to the tree root (`-p1`).
    pub files: Vec<String>,
}

impl PatchFile {
    pub fn load(path: &Path) -> Result<Self> {
        let bytes =
            fs::read(path).with_context(|| format!("cannot read patch {}", path.display()))?;
        let text = String::from_utf8(bytes)
            .with_context(|| format!("patch {} is not UTF-8 text", path.display()))?;
        let files = touched_files(&text).with_context(|| format!("patch {}", path.display()))?;
        if files.is_empty() {
            bail!(
                "patch {} changes no file (is it a unified diff?)",
                path.display()
            );
        }
        // GNU patch runs with -d <tree>: a relative path would be taken from there.
        let path = path
            .canonicalize()
            .with_context(|| format!("cannot resolve {}", path.display()))?;
        Ok(PatchFile { path, text, files })
    }
}

/// Files a unified diff touches, with the first path component stripped (`-p1`).
/// Refuses paths that leave the tree and binary hunks (see `patchgen::patchfile`).
pub fn touched_files(text: &str) -> Result<Vec<String>> {
    Ok(patchgen::patchfile::touched_files(text)?)
}

#[derive(Debug, Serialize, Deserialize)]
struct JournalEntry {
    /// Copy of the patch as applied.
    patch: PathBuf,
    /// (file, modification time in ns since the epoch; None when the patch creates it)
    mtimes: Vec<(String, Option<u128>)>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Journal {
    source: PathBuf,
    applied: Vec<JournalEntry>,
}

fn mtime_ns(p: &Path) -> Option<u128> {
    let t = fs::metadata(p).ok()?.modified().ok()?;
    Some(t.duration_since(UNIX_EPOCH).ok()?.as_nanos())
}

fn set_mtime(p: &Path, ns: u128) -> Result<()> {
    let t = UNIX_EPOCH + Duration::from_nanos(ns as u64);
    let f = fs::File::options().write(true).open(p)?;
    f.set_modified(t)?;
    Ok(())
}

fn gnu_patch(
    source: &Path,
    patch: &Path,
    reverse: bool,
    dry: bool,
    intr: &Interrupt,
) -> Result<process::Output> {
    let mut args: Vec<&std::ffi::OsStr> = vec![
        "-p1".as_ref(),
        "--batch".as_ref(),
        "-E".as_ref(),
        "--no-backup-if-mismatch".as_ref(),
        "-r".as_ref(),
        "-".as_ref(),
    ];
    args.push(if reverse {
        "--reverse".as_ref()
    } else {
        "--forward".as_ref()
    });
    if dry {
        args.push("--dry-run".as_ref());
    }
    args.push("-d".as_ref());
    args.push(source.as_os_str());
    args.push("-i".as_ref());
    args.push(patch.as_os_str());
    process::run("patch", args, None, &[], None, intr)
}

/// Dry-run `patch` (a file holding `shown`'s text); reports GNU patch's own message.
fn ensure_applies(source: &Path, patch: &Path, shown: &Path, intr: &Interrupt) -> Result<()> {
    let dry = gnu_patch(source, patch, false, true, intr)?;
    if !dry.success {
        bail!(
            "patch {} does not apply to {}:\n{}{}",
            shown.display(),
            source.display(),
            dry.stdout,
            dry.stderr
        );
    }
    Ok(())
}

/// Apply a patch to a private copy (klpgen's own files: no journal needed).
pub fn apply_to_copy(dir: &Path, p: &PatchFile, intr: &Interrupt) -> Result<()> {
    ensure_applies(dir, &p.path, &p.path, intr)?;
    let out = gnu_patch(dir, &p.path, false, false, intr)?;
    if !out.success {
        bail!(
            "patch {} failed to apply:\n{}{}",
            p.path.display(),
            out.stdout,
            out.stderr
        );
    }
    Ok(())
}

/// Check, without touching the tree, that the first patch applies (later ones may depend on
/// earlier ones and are checked as they are applied).
pub fn check_first_applies(source: &Path, patches: &[PatchFile], intr: &Interrupt) -> Result<()> {
    match patches.first() {
        Some(p) => ensure_applies(source, &p.path, &p.path, intr),
        None => Ok(()),
    }
}

/// Patches applied to a tree; dropping it reverts them and restores file times.
pub struct Applied {
    journal_path: PathBuf,
    journal: Journal,
    intr: Interrupt,
    reverted: bool,
}

impl Applied {
    /// Apply `patches` in order. A patch that does not apply is reported with GNU patch's own
    /// message, and the ones applied before it are reverted.
    pub fn apply(
        source: &Path,
        patches: &[PatchFile],
        workdir: &Path,
        intr: &Interrupt,
    ) -> Result<Self> {
        let journal_path = workdir.join("journal.json");
        let mut applied = Applied {
            journal_path,
            journal: Journal {
                source: source.to_path_buf(),
                applied: Vec::new(),
            },
            intr: intr.clone(),
            reverted: false,
        };
        for (i, p) in patches.iter().enumerate() {
            let copy = workdir.join(format!("applied-{i}.patch"));
            fs::write(&copy, &p.text)?;
            ensure_applies(source, &copy, &p.path, intr)?;
            let mtimes = p
                .files
                .iter()
                .map(|f| (f.clone(), mtime_ns(&source.join(f))))
                .collect();
            applied.journal.applied.push(JournalEntry {
                patch: copy.clone(),
                mtimes,
            });
            applied.save()?;
            let out = gnu_patch(source, &copy, false, false, intr)?;
            if !out.success {
                bail!(
                    "patch {} failed to apply:\n{}{}",
                    p.path.display(),
                    out.stdout,
                    out.stderr
                );
            }
        }
        Ok(applied)
    }

    fn save(&self) -> Result<()> {
        let tmp = self.journal_path.with_extension("tmp");
        fs::write(&tmp, serde_json::to_vec_pretty(&self.journal)?)?;
        fs::rename(&tmp, &self.journal_path)?;
        Ok(())
    }

    /// Revert now, reporting failure (Drop reverts silently as a last resort).
    pub fn revert(mut self) -> Result<()> {
        self.reverted = true;
        undo(&self.journal, &Interrupt::default())?;
        let _ = fs::remove_file(&self.journal_path);
        Ok(())
    }
}

impl Drop for Applied {
    fn drop(&mut self) {
        if self.reverted {
            return;
        }
        // An uninterruptible revert: the signal that got us here must not stop the restore.
        let _ = &self.intr;
        match undo(&self.journal, &Interrupt::default()) {
            Ok(()) => {
                let _ = fs::remove_file(&self.journal_path);
            }
            Err(e) => eprintln!(
                "klpgen: could not restore the source tree ({e:#}); the journal {} says what was applied",
                self.journal_path.display()
            ),
        }
    }
}

fn undo(j: &Journal, intr: &Interrupt) -> Result<()> {
    for e in j.applied.iter().rev() {
        // Only revert what is still applied: a reverse dry run tells.
        let check = gnu_patch(&j.source, &e.patch, true, true, intr)?;
        if check.success {
            let out = gnu_patch(&j.source, &e.patch, true, false, intr)?;
            if !out.success {
                bail!(
                    "reverting {} failed:\n{}{}",
                    e.patch.display(),
                    out.stdout,
                    out.stderr
                );
            }
        }
        for (f, t) in &e.mtimes {
            if let Some(t) = t {
                let p = j.source.join(f);
                if p.exists() {
                    set_mtime(&p, *t)
                        .with_context(|| format!("restoring the time of {}", p.display()))?;
                }
            }
        }
    }
    Ok(())
}

/// After a crash (SIGKILL, power loss): restore the tree from a journal left in `workdir`.
/// Returns whether anything was recovered.
pub fn recover(workdir: &Path, intr: &Interrupt) -> Result<bool> {
    let path = workdir.join("journal.json");
    let Ok(bytes) = fs::read(&path) else {
        return Ok(false);
    };
    let j: Journal = serde_json::from_slice(&bytes).with_context(|| {
        format!(
            "journal {} is unreadable; restore the tree by hand",
            path.display()
        )
    })?;
    undo(&j, intr)?;
    fs::remove_file(&path)?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    // The parser's own tests live with it in patchgen::patchfile; this checks the wiring.
    #[test]
    fn touched_files_uses_the_patchfile_parser() {
        let t = "--- a/fs/proc/cmdline.c\n+++ b/fs/proc/cmdline.c\n@@ -1 +1 @@\n-x\n+y\n";
        assert_eq!(touched_files(t).unwrap(), vec!["fs/proc/cmdline.c"]);
        let e = touched_files("--- a/x\n+++ /etc/passwd\n").unwrap_err();
        assert!(e.to_string().contains("absolute path /etc/passwd"), "{e}");
    }
}
