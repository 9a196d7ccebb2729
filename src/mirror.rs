//! In-tree builds. When the target kernel was built inside its source tree (`make` without
//! `O=`), kbuild refuses to build that tree into another directory ("source tree is not
//! clean"), and objects lying in it would be taken for up-to-date targets through kbuild's
//! VPATH. klpgen then works on a mirror of the sources in its cache: hard links to the user's
//! files (a copy where the cache is on another file system) without any build output (what
//! kbuild's `.NAME.cmd` records name as outputs, and known output names). The mirror is brought
//! up to date at the start of every run, the patches are applied to it (the user's tree is then
//! never patched at all), and links are broken before a file is patched so that the user's
//! file keeps its inode untouched.

use std::collections::HashSet;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::process::Interrupt;

/// Whether `source` holds a build (kbuild's own test before an `O=` build).
pub fn is_in_tree_build(source: &Path) -> bool {
    if source.join(".config").exists() || source.join("include/config").is_dir() {
        return true;
    }
    fs::read_dir(source.join("arch"))
        .map(|arches| {
            arches
                .flatten()
                .any(|a| a.path().join("include/generated").is_dir())
        })
        .unwrap_or(false)
}

/// What a sync did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct SyncStats {
    pub linked: usize,
    pub copied: usize,
    pub removed: usize,
    pub unchanged: usize,
}

/// Paths (relative to the tree root) that are build state, never sources, whatever directory
/// they are in.
fn is_output_name(name: &str) -> bool {
    const EXT: &[&str] = &[
        ".o",
        ".a",
        ".ko",
        ".mod",
        ".mod.c",
        ".cmd",
        ".dwo",
        ".su",
        ".gcno",
        ".symtypes",
    ];
    EXT.iter().any(|e| name.ends_with(e)) || name.starts_with(".tmp")
}

/// Top-level build state of an in-tree build.
fn is_top_level_output(name: &str) -> bool {
    matches!(
        name,
        ".config"
            | ".config.old"
            | ".version"
            | ".git"
            | "vmlinux"
            | "System.map"
            | "Module.symvers"
            | "modules.order"
            | "modules.builtin"
            | "modules.builtin.modinfo"
            | "modules.builtin.ranges"
            | "modules-only.symvers"
            | "vmlinux.a"
            | "vmlinux.o"
            | "vmlinux.symvers"
            | "vmlinux.unstripped"
    ) || name.starts_with(".vmlinux")
        || name.starts_with("vmlinux-")
}

/// Directories (relative) whose whole content is generated.
fn is_generated_dir(rel: &Path) -> bool {
    let s = rel.to_string_lossy();
    s == "include/config"
        || s == "include/generated"
        || (s.starts_with("arch/") && s.ends_with("/include/generated"))
        || s.ends_with("/.tmp_versions")
}

/// The entries of one source directory that are sources: outputs named by kbuild's `.NAME.cmd`
/// records (the record of `NAME`) and the output patterns above are left out.
fn source_entries(dir: &Path, rel: &Path) -> Result<Vec<(String, fs::Metadata)>> {
    let mut entries = Vec::new();
    let mut generated: HashSet<String> = HashSet::new();
    for e in fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))? {
        let e = e?;
        let name = e.file_name().to_string_lossy().into_owned();
        if let Some(target) = name.strip_prefix('.').and_then(|n| n.strip_suffix(".cmd")) {
            generated.insert(target.to_string());
        }
        entries.push((name, e.metadata()?));
    }
    let top = rel.as_os_str().is_empty();
    entries.retain(|(name, meta)| {
        let output = generated.contains(name)
            || (top && is_top_level_output(name))
            || (meta.is_file() && is_output_name(name))
            || (meta.is_dir() && is_generated_dir(&rel.join(name)));
        !output
    });
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(entries)
}

/// Bring `mirror` in line with the sources of `source`. Returns what changed.
pub fn sync(source: &Path, mirror: &Path, intr: &Interrupt) -> Result<SyncStats> {
    fs::create_dir_all(mirror).with_context(|| format!("cannot create {}", mirror.display()))?;
    let mut stats = SyncStats::default();
    let mut can_link = true;
    sync_dir(
        source,
        mirror,
        Path::new(""),
        &mut can_link,
        &mut stats,
        intr,
    )?;
    Ok(stats)
}

fn sync_dir(
    source: &Path,
    mirror: &Path,
    rel: &Path,
    can_link: &mut bool,
    stats: &mut SyncStats,
    intr: &Interrupt,
) -> Result<()> {
    intr.check()?;
    let (sdir, mdir) = (source.join(rel), mirror.join(rel));
    let wanted = source_entries(&sdir, rel)?;
    let names: HashSet<&str> = wanted.iter().map(|(n, _)| n.as_str()).collect();
    // Whatever the mirror has that the sources no longer have goes.
    for e in fs::read_dir(&mdir).with_context(|| format!("cannot list {}", mdir.display()))? {
        let e = e?;
        let name = e.file_name().to_string_lossy().into_owned();
        if !names.contains(name.as_str()) {
            let p = e.path();
            if e.file_type()?.is_dir() {
                fs::remove_dir_all(&p)
            } else {
                fs::remove_file(&p)
            }
            .with_context(|| format!("cannot remove {}", p.display()))?;
            stats.removed += 1;
        }
    }
    for (name, meta) in &wanted {
        let (s, m) = (sdir.join(name), mdir.join(name));
        let have = fs::symlink_metadata(&m).ok();
        if meta.is_dir() {
            if have.as_ref().is_some_and(|h| !h.is_dir()) {
                fs::remove_file(&m)?;
            }
            if !m.is_dir() {
                fs::create_dir(&m).with_context(|| format!("cannot create {}", m.display()))?;
            }
            sync_dir(source, mirror, &rel.join(name), can_link, stats, intr)?;
        } else if meta.file_type().is_symlink() {
            let target = fs::read_link(&s)?;
            if have.is_some() && fs::read_link(&m).ok().as_ref() == Some(&target) {
                stats.unchanged += 1;
                continue;
            }
            remove_any(&m)?;
            std::os::unix::fs::symlink(&target, &m)
                .with_context(|| format!("cannot create {}", m.display()))?;
            stats.linked += 1;
        } else if meta.is_file() {
            let same = have.as_ref().is_some_and(|h| {
                (h.dev() == meta.dev() && h.ino() == meta.ino())
                    || (!*can_link
                        && h.is_file()
                        && h.len() == meta.len()
                        && h.mtime() == meta.mtime()
                        && h.mtime_nsec() == meta.mtime_nsec())
            });
            if same {
                stats.unchanged += 1;
                continue;
            }
            remove_any(&m)?;
            if *can_link {
                match fs::hard_link(&s, &m) {
                    Ok(()) => {
                        stats.linked += 1;
                        continue;
                    }
                    // Another file system (EXDEV) or no links allowed: copy from now on.
                    Err(_) => *can_link = false,
                }
            }
            copy_with_time(&s, &m)?;
            stats.copied += 1;
        }
    }
    Ok(())
}

fn remove_any(p: &Path) -> Result<()> {
    match fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(p)?,
        Ok(_) => fs::remove_file(p)?,
        Err(_) => {}
    }
    Ok(())
}

fn copy_with_time(from: &Path, to: &Path) -> Result<()> {
    fs::copy(from, to)
        .with_context(|| format!("cannot copy {} to {}", from.display(), to.display()))?;
    let t = fs::metadata(from)?.modified()?;
    fs::File::options().write(true).open(to)?.set_modified(t)?;
    Ok(())
}

/// Give the mirror's copies of `files` inodes of their own (same bytes, mode and time) before
/// they are patched, so nothing written to them can reach the user's files.
pub fn unshare(mirror: &Path, files: &[String]) -> Result<Vec<PathBuf>> {
    let mut done = Vec::new();
    for f in files {
        let p = mirror.join(f);
        let Ok(meta) = fs::symlink_metadata(&p) else {
            continue;
        };
        if !meta.is_file() || meta.nlink() < 2 {
            continue;
        }
        let tmp = p.with_file_name(format!(
            ".klpgen-unshare-{}",
            p.file_name().unwrap_or_default().to_string_lossy()
        ));
        copy_with_time(&p, &tmp)?;
        fs::set_permissions(&tmp, meta.permissions())?;
        fs::rename(&tmp, &p).with_context(|| format!("cannot replace {}", p.display()))?;
        done.push(p);
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(p: &Path, text: &str) {
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, text).unwrap();
    }

    #[test]
    fn mirror_has_the_sources_and_no_build_output() {
        let tmp = tempfile::tempdir().unwrap();
        let (src, m) = (tmp.path().join("linux"), tmp.path().join("mirror"));
        write(&src.join("Makefile"), "all:\n");
        write(&src.join(".config"), "CONFIG_X=y\n");
        write(&src.join("kernel/fork.c"), "int f;\n");
        write(&src.join("kernel/fork.o"), "ELF");
        write(
            &src.join("kernel/.fork.o.cmd"),
            "cmd_kernel/fork.o := gcc\n",
        );
        // A generated source: kbuild's record names it.
        write(&src.join("lib/crc32table.h"), "/* generated */\n");
        write(
            &src.join("lib/.crc32table.h.cmd"),
            "cmd_lib/crc32table.h := gen\n",
        );
        write(&src.join("lib/crc32.c"), "#include \"crc32table.h\"\n");
        write(&src.join("include/generated/autoconf.h"), "#define X 1\n");
        write(&src.join("include/linux/fs.h"), "struct file;\n");
        write(&src.join("arch/x86/include/generated/asm/x.h"), "\n");
        write(&src.join("arch/x86/include/asm/y.h"), "\n");
        write(&src.join("vmlinux"), "ELF");
        std::os::unix::fs::symlink("../include", src.join("kernel/inc")).unwrap();
        assert!(is_in_tree_build(&src));

        let st = sync(&src, &m, &Interrupt::default()).unwrap();
        for kept in [
            "Makefile",
            "kernel/fork.c",
            "lib/crc32.c",
            "include/linux/fs.h",
            "arch/x86/include/asm/y.h",
        ] {
            assert!(m.join(kept).is_file(), "{kept} missing");
            assert_eq!(
                fs::metadata(m.join(kept)).unwrap().ino(),
                fs::metadata(src.join(kept)).unwrap().ino(),
                "{kept} is not a link"
            );
        }
        for gone in [
            ".config",
            "kernel/fork.o",
            "kernel/.fork.o.cmd",
            "lib/crc32table.h",
            "include/generated",
            "arch/x86/include/generated",
            "vmlinux",
        ] {
            assert!(!m.join(gone).exists(), "{gone} mirrored");
        }
        assert_eq!(
            fs::read_link(m.join("kernel/inc")).unwrap(),
            Path::new("../include")
        );
        assert!(!is_in_tree_build(&m));
        assert_eq!(st.copied, 0);

        // The user's tree moves on: a file replaced (new inode), one removed, one added.
        fs::remove_file(src.join("kernel/fork.c")).unwrap();
        write(&src.join("kernel/fork.c"), "int f2;\n");
        fs::remove_file(src.join("lib/crc32.c")).unwrap();
        write(&src.join("mm/new.c"), "int n;\n");
        let st = sync(&src, &m, &Interrupt::default()).unwrap();
        assert_eq!(
            fs::read_to_string(m.join("kernel/fork.c")).unwrap(),
            "int f2;\n"
        );
        assert!(!m.join("lib/crc32.c").exists());
        assert!(m.join("mm/new.c").is_file());
        assert_eq!((st.linked, st.removed), (2, 1), "{st:?}");

        // Patching the mirror after unshare leaves the user's file alone.
        let un = unshare(&m, &["kernel/fork.c".to_string()]).unwrap();
        assert_eq!(un.len(), 1);
        fs::write(m.join("kernel/fork.c"), "patched\n").unwrap();
        assert_eq!(
            fs::read_to_string(src.join("kernel/fork.c")).unwrap(),
            "int f2;\n"
        );
        // ...and the next sync links it to the user's file again.
        sync(&src, &m, &Interrupt::default()).unwrap();
        assert_eq!(
            fs::read_to_string(m.join("kernel/fork.c")).unwrap(),
            "int f2;\n"
        );
    }
}
