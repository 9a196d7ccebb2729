//! Source patches: what they touch, and applying them to the tree with GNU patch so that the
//! tree is always restored — on success, on error, on SIGINT/SIGTERM, and (through a journal
//! written before any change) on the next run after a SIGKILL. File times are restored too,
//! so the user's own builds do not see spurious changes.
//!
//! A patch whose paths leave the tree, are absolute, or that has binary hunks is refused when
//! it is loaded, before anything is written (`patchgen::patchfile`). Before applying, every file
//! a patch touches is copied and the journal names the copies; restoring puts back bytes, mode
//! and time and removes what the patch created, then gives the directories whose entries the
//! patch changed (GNU patch writes a temporary file beside each file it patches and renames it
//! over the file) their times back, so the tree keeps every time stamp, directories included.
//! It never asks `patch` to reverse, so a
//! half-applied patch is restored too. Once all patches are applied, each patched file is read
//! once against its saved original: the lines the patches changed (in the original numbering,
//! for `klpgen explain`) are taken first, then `#line` directives go into C files and headers
//! so that untouched lines keep their numbers (`patchgen::patchfile::keep_line_numbers`;
//! `--no-line-directives` turns it off).

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::process::{self, Interrupt};
use elfdiff::explain::ChangedLines;

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
        // Paths that leave the tree, absolute paths and binary hunks are refused before
        // anything is written.
        let files = touched_files(&text).map_err(|e| {
            crate::verdict::Verdict::Refused(format!("unusable patch {}: {e:#}", path.display()))
        })?;
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

/// One file as it was before a patch touched it.
#[derive(Debug, Serialize, Deserialize)]
struct Saved {
    /// Relative to the tree root.
    file: String,
    /// Byte-for-byte copy (None when the file did not exist: the patch creates it).
    backup: Option<PathBuf>,
    /// Modification time in ns since the epoch, and permission bits.
    mtime: Option<u128>,
    mode: Option<u32>,
    /// Directories the patch may create for a new file (removed again when empty).
    new_dirs: Vec<String>,
}

/// A directory's modification time before a patch changed its entries.
#[derive(Debug, Serialize, Deserialize)]
struct SavedDir {
    /// Relative to the tree root (`""` for the root itself).
    dir: String,
    mtime: u128,
}

#[derive(Debug, Serialize, Deserialize)]
struct JournalEntry {
    /// Copy of the patch as applied.
    patch: PathBuf,
    files: Vec<Saved>,
    /// The existing directories the patch may add entries to or remove entries from: each
    /// touched file's directory, or the nearest existing ancestor of a new file's.
    #[serde(default)]
    dirs: Vec<SavedDir>,
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

/// A directory's time: opened read-only (a directory cannot be opened for writing), which is
/// enough for the owner to set its times.
fn set_dir_mtime(p: &Path, ns: u128) -> Result<()> {
    let t = UNIX_EPOCH + Duration::from_nanos(ns as u64);
    fs::File::open(p)?.set_modified(t)?;
    Ok(())
}

/// The existing directories whose entries patching `files` may change, with their times.
fn save_dirs(source: &Path, files: &[String]) -> Vec<SavedDir> {
    let mut out: Vec<SavedDir> = Vec::new();
    for f in files {
        let mut rel = Path::new(f).parent();
        while let Some(d) = rel {
            let path = source.join(d);
            if path.is_dir() {
                let dir = d.to_string_lossy().into_owned();
                if let Some(mtime) = mtime_ns(&path).filter(|_| !out.iter().any(|s| s.dir == dir)) {
                    out.push(SavedDir { dir, mtime });
                }
                break;
            }
            rel = d.parent();
        }
    }
    out
}

/// Give the saved directories their times back (after their entries are restored).
fn restore_dirs(source: &Path, dirs: &[SavedDir]) -> Result<()> {
    for d in dirs {
        let path = source.join(&d.dir);
        if path.is_dir() && mtime_ns(&path) != Some(d.mtime) {
            set_dir_mtime(&path, d.mtime)
                .with_context(|| format!("restoring the time of {}", path.display()))?;
        }
    }
    Ok(())
}

/// Copy what `files` are now into `dir`, so that they can be put back exactly whatever state
/// an interrupted `patch` leaves them in.
fn save_files(source: &Path, files: &[String], dir: &Path) -> Result<Vec<Saved>> {
    use std::os::unix::fs::PermissionsExt;
    let mut saved = Vec::new();
    for (n, f) in files.iter().enumerate() {
        let path = source.join(f);
        match fs::symlink_metadata(&path) {
            Ok(meta) if meta.is_file() => {
                fs::create_dir_all(dir)?;
                let backup = dir.join(format!("{n}"));
                fs::copy(&path, &backup)
                    .with_context(|| format!("saving {} before patching", path.display()))?;
                saved.push(Saved {
                    file: f.clone(),
                    backup: Some(backup),
                    mtime: mtime_ns(&path),
                    mode: Some(meta.permissions().mode()),
                    new_dirs: Vec::new(),
                });
            }
            Ok(_) => bail!(
                "{} is not a regular file; klpgen patches regular files only",
                path.display()
            ),
            Err(_) => {
                // Ancestors that do not exist yet, deepest first.
                let mut new_dirs = Vec::new();
                let mut rel = Path::new(f).parent();
                while let Some(d) = rel.filter(|d| !d.as_os_str().is_empty()) {
                    if source.join(d).exists() {
                        break;
                    }
                    new_dirs.push(d.to_string_lossy().into_owned());
                    rel = d.parent();
                }
                saved.push(Saved {
                    file: f.clone(),
                    backup: None,
                    mtime: None,
                    mode: None,
                    new_dirs,
                });
            }
        }
    }
    Ok(saved)
}

/// Put one file back as `s` recorded it; untouched files are left alone (not even rewritten).
fn restore(source: &Path, s: &Saved) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let path = source.join(&s.file);
    match &s.backup {
        Some(backup) => {
            let want = fs::read(backup)
                .with_context(|| format!("reading the saved copy {}", backup.display()))?;
            if fs::read(&path).ok().as_deref() != Some(&want[..]) {
                if let Some(d) = path.parent() {
                    fs::create_dir_all(d)?;
                }
                fs::write(&path, &want).with_context(|| format!("restoring {}", path.display()))?;
            }
            if let Some(mode) = s.mode {
                let now = fs::metadata(&path)?.permissions().mode();
                if now & 0o7777 != mode & 0o7777 {
                    fs::set_permissions(&path, fs::Permissions::from_mode(mode))?;
                }
            }
            if let Some(t) = s.mtime {
                if mtime_ns(&path) != Some(t) {
                    set_mtime(&path, t)
                        .with_context(|| format!("restoring the time of {}", path.display()))?;
                }
            }
        }
        None => {
            if fs::symlink_metadata(&path).is_ok() {
                fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
            }
            for d in &s.new_dirs {
                // Only when empty: never remove what someone else put there.
                let _ = fs::remove_dir(source.join(d));
            }
        }
    }
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

/// After patches were applied to the copy `dir`: the lines each patched file changed against
/// the pristine copy `original`, and, with `keep_lines`, the untouched lines of each kept at
/// their numbers there.
pub fn finish_copy(
    dir: &Path,
    original: &Path,
    patches: &[PatchFile],
    keep_lines: bool,
) -> Result<Vec<ChangedLines>> {
    let mut done: Vec<&str> = Vec::new();
    let mut changed = Vec::new();
    for f in patches.iter().flat_map(|p| &p.files) {
        if done.contains(&f.as_str()) {
            continue;
        }
        done.push(f);
        if let Ok(old) = fs::read(original.join(f)) {
            changed.extend(finish_file(dir, f, &old, keep_lines)?);
        }
    }
    Ok(changed)
}

/// Finish the patched file `f` of `tree` against its original bytes `old`: the lines the
/// patches changed, in `old`'s numbering (None for a file that is gone or not text), and, with
/// `keep_lines`, `#line` directives so that the lines the patches did not touch keep their
/// numbers from `old` (see `patchgen::patchfile::keep_line_numbers`; C sources and headers
/// only). The file is read once, before any directive goes in.
fn finish_file(tree: &Path, f: &str, old: &[u8], keep_lines: bool) -> Result<Option<ChangedLines>> {
    let path = tree.join(f);
    let Ok(new) = fs::read(&path) else {
        return Ok(None);
    };
    let (Ok(old), Ok(new)) = (std::str::from_utf8(old), std::str::from_utf8(&new)) else {
        return Ok(None);
    };
    let changed = ChangedLines {
        file: f.to_string(),
        lines: patchgen::patchfile::changed_old_lines(old, new),
    };
    if keep_lines && (f.ends_with(".c") || f.ends_with(".h")) {
        if let Some(fixed) = patchgen::patchfile::keep_line_numbers(old, new) {
            fs::write(&path, fixed).with_context(|| format!("cannot write {}", path.display()))?;
        }
    }
    Ok(Some(changed))
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
    reverted: bool,
    /// The lines the patches changed, per file, in the original numbering.
    pub changed: Vec<ChangedLines>,
}

impl Applied {
    /// Apply `patches` in order. A patch that does not apply is reported with GNU patch's own
    /// message, and the ones applied before it are reverted.
    pub fn apply(
        source: &Path,
        patches: &[PatchFile],
        workdir: &Path,
        keep_lines: bool,
        intr: &Interrupt,
    ) -> Result<Self> {
        let journal_path = workdir.join("journal.json");
        let mut applied = Applied {
            journal_path,
            journal: Journal {
                source: source.to_path_buf(),
                applied: Vec::new(),
            },
            reverted: false,
            changed: Vec::new(),
        };
        for (i, p) in patches.iter().enumerate() {
            let copy = workdir.join(format!("applied-{i}.patch"));
            fs::write(&copy, &p.text)?;
            ensure_applies(source, &copy, &p.path, intr)?;
            let backups = workdir.join(format!("saved-{i}"));
            let _ = fs::remove_dir_all(&backups);
            let files = save_files(source, &p.files, &backups)?;
            let dirs = save_dirs(source, &p.files);
            applied.journal.applied.push(JournalEntry {
                patch: copy.clone(),
                files,
                dirs,
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
        // After all patches (a directive would change the context a later patch expects),
        // against each file as it was before the first patch touched it.
        let mut done: Vec<&str> = Vec::new();
        for e in &applied.journal.applied {
            for saved in &e.files {
                if done.contains(&saved.file.as_str()) {
                    continue;
                }
                done.push(&saved.file);
                if let Some(b) = &saved.backup {
                    let old = fs::read(b)?;
                    let changed = finish_file(source, &saved.file, &old, keep_lines)?;
                    applied.changed.extend(changed);
                }
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
        undo(&self.journal)?;
        let _ = fs::remove_file(&self.journal_path);
        Ok(())
    }
}

impl Drop for Applied {
    fn drop(&mut self) {
        if self.reverted {
            return;
        }
        // Plain file copies: the signal that got us here cannot stop the restore.
        match undo(&self.journal) {
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

/// Put every file back as it was before the first patch touched it. This does not ask GNU patch
/// to reverse anything: a run killed while `patch` was writing leaves a half-applied patch
/// that no reverse patch would match, and the saved copies restore it all the same.
fn undo(j: &Journal) -> Result<()> {
    for e in j.applied.iter().rev() {
        for s in &e.files {
            restore(&j.source, s)?;
        }
        // Last, once the entries are back: the first patch's directory times win.
        restore_dirs(&j.source, &e.dirs)?;
    }
    Ok(())
}

/// After a crash (SIGKILL, power loss): restore the tree from a journal left in `workdir`.
/// Returns whether anything was recovered.
pub fn recover(workdir: &Path) -> Result<bool> {
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
    undo(&j)?;
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

    /// A run killed while `patch` was writing leaves a half-applied multi-file patch (one file
    /// changed, one new file in a new directory, one not yet touched): recovery puts back the
    /// bytes, modes and times, and removes what the patch created.
    #[test]
    fn recovery_restores_a_half_applied_patch_from_the_saved_copies() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let (src, work) = (tmp.path().join("src"), tmp.path().join("work"));
        fs::create_dir_all(src.join("lib")).unwrap();
        fs::create_dir_all(&work).unwrap();
        fs::write(src.join("lib/a.c"), "int a;\n").unwrap();
        fs::write(src.join("lib/b.c"), "int b;\n").unwrap();
        fs::set_permissions(src.join("lib/b.c"), fs::Permissions::from_mode(0o640)).unwrap();
        set_mtime(&src.join("lib/a.c"), 1_000_000_000_123).unwrap();
        let before = |f: &str| {
            let p = src.join(f);
            (
                fs::read(&p).unwrap(),
                mtime_ns(&p),
                fs::metadata(&p).unwrap().permissions().mode(),
            )
        };
        let (a0, b0) = (before("lib/a.c"), before("lib/b.c"));
        let files: Vec<String> = ["lib/a.c", "lib/b.c", "new/dir/c.c"]
            .map(String::from)
            .into();
        set_dir_mtime(&src.join("lib"), 2_000_000_000_456).unwrap();
        set_dir_mtime(&src, 3_000_000_000_789).unwrap();
        let dir_times = (mtime_ns(&src.join("lib")), mtime_ns(&src));
        let saved = save_files(&src, &files, &work.join("saved-0")).unwrap();
        let dirs = save_dirs(&src, &files);
        assert_eq!(dirs.len(), 2, "lib/ and, for new/dir/c.c, the root");
        let j = Journal {
            source: src.clone(),
            applied: vec![JournalEntry {
                patch: work.join("applied-0.patch"),
                files: saved,
                dirs,
            }],
        };
        fs::write(work.join("journal.json"), serde_json::to_vec(&j).unwrap()).unwrap();
        // The half-applied state (with GNU patch's temporary file beside a.c).
        fs::write(src.join("lib/.a.c.tmp"), "x").unwrap();
        fs::remove_file(src.join("lib/.a.c.tmp")).unwrap();
        fs::write(src.join("lib/a.c"), "int a = 1;\n").unwrap();
        fs::set_permissions(src.join("lib/b.c"), fs::Permissions::from_mode(0o755)).unwrap();
        fs::create_dir_all(src.join("new/dir")).unwrap();
        fs::write(src.join("new/dir/c.c"), "int c;\n").unwrap();

        assert!(recover(&work).unwrap());
        assert_eq!(before("lib/a.c"), a0);
        assert_eq!(before("lib/b.c"), b0);
        assert!(!src.join("new").exists());
        assert_eq!((mtime_ns(&src.join("lib")), mtime_ns(&src)), dir_times);
        assert!(!work.join("journal.json").exists());
        assert!(!recover(&work).unwrap(), "nothing left to recover");
    }
}
