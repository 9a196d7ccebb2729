//! The livepatch module's kbuild steps replayed from the records of its last build, without
//! make: a warm run of the same module rebuilds only what the new livepatch object changes.
//!
//! After every build of the module (by make, or replayed) its directory is kept in
//! `<work dir>/module-cache/<module>/`, file times included, with a key of what kbuild's
//! commands there depend on besides the module's own files ([`key`]: the kbuild directory, the
//! make arguments, the compilers, and the identity of the target's configuration, Module.symvers,
//! modpost, objtool, linker script and module Makefiles). A later build replays when the key is
//! the same, every file klpgen wrote for the module except the livepatch object
//! (`klpgen_patch.o`) is byte-identical to the cached one (the Kbuild file, the hook's source),
//! and each cached object the steps reuse (the hook, `.module-common.o`, the `.mod.o`) is still
//! fresh against its record's dependencies outside the module directory, as kbuild's rule
//! would find it. Then the records' own commands run, from the kbuild directory as make runs
//! them: the module's link (`<module>.o`, with objtool where kbuild runs it there), modpost
//! (`Module.symvers`, which writes `<module>.mod.c`), the `.mod.o` compile only when that file
//! changed, and the final link (`<module>.ko`). A record that is not a plain list of commands,
//! or a kernel that adds BTF to modules after the link, is left to make.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};

use super::fresh;
use crate::depscan::cmdline;
use crate::kernel::Tree;
use crate::process::{self, Interrupt};

const KEY_FILE: &str = ".klpgen-replay-key";

/// What the module's kbuild commands depend on besides the module directory's files.
pub fn key(tree: &Tree, kbuild_dir: &Path, make_args: &[String]) -> String {
    let mut h = Sha256::new();
    h.update(b"klpgen-module-replay/1\0");
    h.update(kbuild_dir.as_os_str().as_encoded_bytes());
    for a in make_args {
        h.update(a.as_bytes());
        h.update([0]);
    }
    h.update(tree.config_text.as_bytes());
    let mut files: Vec<PathBuf> = [
        "Makefile",
        ".config",
        ".kernelvariables",
        "Module.symvers",
        "scripts/mod/modpost",
        "scripts/module.lds",
        "tools/objtool/objtool",
        "include/config/auto.conf",
        "include/generated/autoconf.h",
        "include/generated/utsrelease.h",
        "rust/libkernel.rmeta",
    ]
    .iter()
    .map(|f| kbuild_dir.join(f))
    .collect();
    for base in [kbuild_dir.join("scripts"), tree.source.join("scripts")] {
        for m in [
            "Makefile.modpost",
            "Makefile.modfinal",
            "Makefile.build",
            "Makefile.lib",
            "Kbuild.include",
        ] {
            files.push(base.join(m));
        }
    }
    for p in ["gcc", "ld"].iter().filter_map(|p| which(p)) {
        files.push(p);
    }
    files.push(super::rustc());
    for f in files {
        h.update(f.as_os_str().as_encoded_bytes());
        match fs::metadata(&f) {
            Ok(m) => {
                h.update(m.len().to_le_bytes());
                h.update(crate::depscan::graph::mtime_ns(&m).to_le_bytes());
            }
            Err(_) => h.update(b"-"),
        }
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// Keep the module directory as built, times included, with its key.
pub fn save(moddir: &Path, cache: &Path, key: &str) -> Result<()> {
    if cache.exists() {
        fs::remove_dir_all(cache).with_context(|| format!("cannot clean {}", cache.display()))?;
    }
    fs::create_dir_all(cache)?;
    for e in fs::read_dir(moddir)?.flatten() {
        if e.file_type().is_ok_and(|t| t.is_file()) {
            copy_with_time(&e.path(), &cache.join(e.file_name()))?;
        }
    }
    fs::write(cache.join(KEY_FILE), key)?;
    Ok(())
}

fn copy_with_time(from: &Path, to: &Path) -> Result<()> {
    fs::copy(from, to).with_context(|| format!("cannot copy {}", from.display()))?;
    let t = fs::metadata(from)?.modified()?;
    fs::File::options().write(true).open(to)?.set_modified(t)?;
    Ok(())
}

/// The module's `.ko` and what modpost printed, replayed from the cache; None (the module
/// directory left as it was) when the replay does not apply.
pub fn replay(
    tree: &Tree,
    kbuild_dir: &Path,
    moddir: &Path,
    cache: &Path,
    module: &str,
    key: &str,
    intr: &Interrupt,
) -> Result<Option<(PathBuf, String)>> {
    if fs::read_to_string(cache.join(KEY_FILE)).ok().as_deref() != Some(key) {
        return not_replayed("no last build with the same make arguments, kbuild and tools");
    }
    // kbuild adds BTF to modules after the final link when it has a vmlinux to take it from.
    if tree.config.is_set("CONFIG_DEBUG_INFO_BTF_MODULES") && kbuild_dir.join("vmlinux").is_file() {
        return not_replayed("kbuild adds BTF to the module after its link");
    }
    // The livepatch object, and the unit parts it was linked from.
    let prebuilt = |n: &str| {
        n.starts_with("klpgen_part")
            || super::PREBUILT_OBJECTS
                .iter()
                .any(|p| n == *p || n == format!(".{p}.cmd"))
    };
    // Every file klpgen wrote, other than the livepatch object, as last time.
    let mut written = Vec::new();
    for e in fs::read_dir(moddir)?.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !e.file_type().is_ok_and(|t| t.is_file()) || prebuilt(&name) {
            continue;
        }
        if fs::read(e.path()).ok() != fs::read(cache.join(&name)).ok() {
            return not_replayed(&format!("{name} differs from the last build's"));
        }
        written.push(name);
    }
    let target = |f: &str| moddir.join(f).display().to_string();
    let (obj, ko, modc, modo) = (
        format!("{module}.o"),
        format!("{module}.ko"),
        format!("{module}.mod.c"),
        format!("{module}.mod.o"),
    );
    let steps = [obj.as_str(), "Module.symvers", ko.as_str()];
    let mut commands: Vec<Vec<Vec<String>>> = Vec::new();
    for t in steps.iter().chain([&modo.as_str()]) {
        let rec = fs::read_to_string(fresh::record_of(cache, t)).unwrap_or_default();
        let cmds = plain_commands(&rec, &target(t))
            .or_else(|| modpost_from_order(&rec, &target(t), moddir, cache));
        let Some(cmds) = cmds else {
            return not_replayed(&format!("the record of {t} is not a plain command"));
        };
        commands.push(cmds);
    }
    // The objects reused as they are must still be what kbuild would build: fresh against
    // what their records list outside the module directory.
    for e in fs::read_dir(cache)?.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(o) = name.strip_prefix('.').and_then(|n| n.strip_suffix(".cmd")) else {
            continue;
        };
        if !o.ends_with(".o") || o == obj || prebuilt(o) {
            continue;
        }
        let rec = fs::read_to_string(e.path())?;
        if !fresh::fresh_outside(kbuild_dir, &cache.join(o), &rec, moddir) {
            return not_replayed(&format!("{o} is older than a file it was made from"));
        }
    }
    // The cached products into place, with their times.
    for e in fs::read_dir(cache)?.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name == KEY_FILE || written.contains(&name) || prebuilt(&name) {
            continue;
        }
        copy_with_time(&e.path(), &moddir.join(&name))?;
    }
    let old_modc = fs::read(moddir.join(&modc)).ok();
    let mut printed = String::new();
    let mut run = |cmds: &[Vec<String>]| -> Result<()> {
        for argv in cmds {
            let program = if argv[0].contains('/') && !argv[0].starts_with('/') {
                kbuild_dir.join(&argv[0]).display().to_string()
            } else {
                argv[0].clone()
            };
            let o = process::run(&program, &argv[1..], Some(kbuild_dir), &[], None, intr)?;
            printed.push_str(&o.stdout);
            printed.push_str(&o.stderr);
            if !o.success {
                bail!(
                    "replaying the module build ({}) failed:\n{}{}",
                    argv.join(" "),
                    o.stdout,
                    o.stderr
                );
            }
        }
        Ok(())
    };
    run(&commands[0])?;
    run(&commands[1])?;
    if fs::read(moddir.join(&modc)).ok() != old_modc || !moddir.join(&modo).is_file() {
        run(&commands[3])?;
    }
    run(&commands[2])?;
    let ko = moddir.join(&ko);
    if !ko.is_file() {
        bail!(
            "replaying the module build did not produce {}",
            ko.display()
        );
    }
    Ok(Some((ko, printed)))
}

/// The replay does not apply; `--verbose` says why.
fn not_replayed(why: &str) -> Result<Option<(PathBuf, String)>> {
    crate::progress::verbose(&format!(
        "klpgen: kbuild builds the module (no replay of its last build): {why}"
    ));
    Ok(None)
}

/// Linux 6.1 feeds modpost the module list through a pipe: `sed 's/ko$/o/' modules.order |
/// scripts/mod/modpost ... -T -`. The same as modpost reading that list from a file, which
/// klpgen writes (`.klpgen-modpost.order`): the argument vector, or None for anything else.
/// The list is read before the cached products are put back into `moddir`: from `cache`,
/// the last build's copy, when it is not there yet.
fn modpost_from_order(
    record: &str,
    target: &str,
    moddir: &Path,
    cache: &Path,
) -> Option<Vec<Vec<String>>> {
    let cmd = cmdline::record_command(record, target)?;
    let toks = cmdline::tokens(&cmd)?;
    let parts = cmdline::commands(&toks);
    let [(sed, Some(pipe)), (modpost, None)] = parts.as_slice() else {
        return None;
    };
    let words = |c: &[cmdline::Token]| -> Option<Vec<String>> {
        c.iter()
            .map(|t| match t {
                cmdline::Token::Word {
                    text,
                    dynamic: false,
                } => Some(text.clone()),
                _ => None,
            })
            .collect()
    };
    let (sed, mut modpost) = (words(sed)?, words(modpost)?);
    if pipe != "|" || sed.len() != 3 || sed[0] != "sed" || sed[1] != "s/ko$/o/" {
        return None;
    }
    let t = modpost.iter().position(|w| w == "-T")?;
    if modpost.get(t + 1).map(String::as_str) != Some("-") {
        return None;
    }
    let listed = Path::new(&sed[2]);
    let order = fs::read_to_string(listed)
        .ok()
        .or_else(|| match listed.strip_prefix(moddir) {
            Ok(rel) => fs::read_to_string(cache.join(rel)).ok(),
            Err(_) => None,
        })?;
    let list: String = order
        .lines()
        .map(|l| match l.strip_suffix("ko") {
            Some(stem) => format!("{stem}o\n"),
            None => format!("{l}\n"),
        })
        .collect();
    let file = moddir.join(".klpgen-modpost.order");
    fs::write(&file, list).ok()?;
    modpost[t + 1] = file.display().to_string();
    Some(vec![modpost])
}

/// A record's command as argument vectors, when it is a plain `;`-separated list of plain
/// commands (see `fresh::direct_command`).
fn plain_commands(record: &str, target: &str) -> Option<Vec<Vec<String>>> {
    let cmd = cmdline::record_command(record, target)?;
    let toks = cmdline::tokens(&cmd)?;
    let mut out = Vec::new();
    for (words, op) in cmdline::commands(&toks) {
        if op.as_deref().is_some_and(|o| o != ";") {
            return None;
        }
        let mut argv = Vec::new();
        for t in &words {
            match t {
                cmdline::Token::Word {
                    text,
                    dynamic: false,
                } => argv.push(text.clone()),
                _ => return None,
            }
        }
        if argv.first().is_none_or(|p| p.contains('=')) {
            return None;
        }
        out.push(argv);
    }
    (!out.is_empty()).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_become_argument_vectors() {
        let rec = "savedcmd_/m/x.o := ld -m elf_x86_64 -r -o /m/x.o @/m/x.mod  ; ./tools/objtool/objtool --link --module /m/x.o\n\n/m/x.o: $(wildcard ./tools/objtool/objtool)\n";
        assert_eq!(
            plain_commands(rec, "/m/x.o").unwrap(),
            [
                vec!["ld", "-m", "elf_x86_64", "-r", "-o", "/m/x.o", "@/m/x.mod"],
                vec!["./tools/objtool/objtool", "--link", "--module", "/m/x.o"]
            ]
        );
        let rec = "savedcmd_/m/x.mod := printf '%s\\n' a.o | awk '!x[$$0]++' > /m/x.mod\n";
        assert!(plain_commands(rec, "/m/x.mod").is_none());
    }

    #[test]
    fn linux_6_1_modpost_reads_the_list_from_a_file() {
        let tmp = tempfile::tempdir().unwrap();
        let m = tmp.path();
        fs::write(m.join("modules.order"), format!("{}/x.ko\n", m.display())).unwrap();
        let rec = format!(
            "cmd_{d}/Module.symvers :=  sed 's/ko$$/o/'  {d}/modules.order | scripts/mod/modpost -m -o {d}/Module.symvers -e -i Module.symvers -w -T - \n",
            d = m.display()
        );
        let cmds =
            modpost_from_order(&rec, &format!("{}/Module.symvers", m.display()), m, m).unwrap();
        let list = m.join(".klpgen-modpost.order");
        assert_eq!(cmds[0][0], "scripts/mod/modpost");
        assert_eq!(cmds[0].last().unwrap(), &list.display().to_string());
        assert_eq!(
            fs::read_to_string(list).unwrap(),
            format!("{}/x.o\n", m.display())
        );
    }
}
