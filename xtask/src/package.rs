//! `cargo xtask package`: klpgen as a Debian package, made with dpkg-deb (no packaging tool
//! beyond dpkg itself, so it works offline), then checked. The package holds the stripped
//! release binary, a man page per command and the bash, zsh and fish completions (both from
//! the hidden `klpgen generate`, so from the CLI definition itself; never checked in), the
//! patch-author headers (`include/`) under /usr/share/klpgen/include (kernel headers, not for
//! user-space programs, hence not /usr/include), the docs and examples, a machine-readable
//! copyright file (with the licenses of the Rust crates linked into the binary) and a
//! changelog. The checks: lintian (no error or warning tags), `dpkg --root` into an empty
//! root (status installed, every file there, the binary runs), `man` finding `klpgen-build` by
//! MANPATH in that root, and the completions loading in bash (and zsh and fish).

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::Write as _;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{bail, Context, Result};

use crate::util;

const NAME: &str = "klpgen";
const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Lintian warning and error tags accepted, each with the reason (none: every one it had was
/// fixed). Its info tag `hardening-no-fortify-functions` is expected of a Rust binary: Rust
/// code does not call the C library's unchecked string functions that `_FORTIFY_SOURCE`
/// replaces, so there is nothing to fortify; the pedantic `repeated-path-segment` is the
/// include directory `/usr/share/klpgen/include` holding `klpgen/klpgen.h`, the name patches
/// include.
const LINTIAN_ACCEPTED: &[(&str, &str)] = &[];

/// `cargo xtask package [--no-check | --check DEB]`: writes and checks
/// `target/package/klpgen_<version>_<arch>.deb` (or checks a given one).
pub fn cmd_package(rest: &[String]) -> Result<bool> {
    let start = Instant::now();
    let deb = match rest {
        [] => build()?,
        [flag] if flag == "--no-check" => {
            build()?;
            return Ok(true);
        }
        // A package built elsewhere (a CI artifact), checked the same way.
        [flag, deb] if flag == "--check" => PathBuf::from(deb),
        _ => bail!("usage: cargo xtask package [--no-check | --check DEB]"),
    };
    eprintln!(
        "package: {} ({} KiB) in {:.0}s",
        deb.display(),
        fs::metadata(&deb)?.len() / 1024,
        start.elapsed().as_secs_f64()
    );
    let start = Instant::now();
    let problems = check_package(&deb)?;
    for p in &problems {
        eprintln!("package: FAIL {p}");
    }
    eprintln!(
        "package: {} ({:.0}s)",
        if problems.is_empty() {
            "lintian clean, installs with dpkg --root, man klpgen-build works, completions load"
        } else {
            "checks failed"
        },
        start.elapsed().as_secs_f64()
    );
    Ok(problems.is_empty())
}

/// Output of a command that must succeed.
fn output(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run `{}`", util::display(cmd)))?;
    if !out.status.success() {
        bail!(
            "`{}` failed ({}):\n{}",
            util::display(cmd),
            out.status,
            util::indent(&String::from_utf8_lossy(&out.stderr))
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The packager (Debian's DEBFULLNAME/DEBEMAIL, else the author of the commit packaged) and the
/// commit's time (the changelog's and the files' date, so that a commit gives the same package).
struct Source {
    maintainer: String,
    commit: String,
    epoch: i64,
    rfc2822: String,
    date: String,
}

fn source() -> Result<Source> {
    let git = |fmt: &str| {
        output(Command::new("git").current_dir(util::repo_root()).args([
            "log",
            "-1",
            &format!("--format={fmt}"),
        ]))
        .map(|s| s.trim().to_string())
    };
    let maintainer = match (std::env::var("DEBFULLNAME"), std::env::var("DEBEMAIL")) {
        (Ok(n), Ok(e)) if !n.is_empty() && !e.is_empty() => format!("{n} <{e}>"),
        _ => git("%an <%ae>")?,
    };
    let epoch: i64 = git("%ct")?.parse().context("commit time")?;
    let date_of =
        |fmt: &str| output(Command::new("date").args(["-u", "-d", &format!("@{epoch}"), fmt]));
    Ok(Source {
        maintainer,
        commit: git("%h")?,
        epoch,
        rfc2822: date_of("-R")?.trim().to_string(),
        date: date_of("+%Y-%m-%d")?.trim().to_string(),
    })
}

fn put(root: &Path, rel: &str, data: &[u8], mode: u32) -> Result<PathBuf> {
    let path = root.join(rel);
    fs::create_dir_all(path.parent().context("no parent")?)?;
    fs::write(&path, data).with_context(|| format!("cannot write {}", path.display()))?;
    fs::set_permissions(&path, fs::Permissions::from_mode(mode))?;
    Ok(path)
}

/// `gzip -9n` (no name or time stamp in the header, as Debian wants).
fn gzip(data: &[u8]) -> Result<Vec<u8>> {
    let mut child = Command::new("gzip")
        .args(["-9n", "-c"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .context("cannot run gzip")?;
    let mut stdin = child.stdin.take().context("gzip stdin")?;
    let input = data.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    let out = child.wait_with_output()?;
    writer
        .join()
        .map_err(|_| anyhow::anyhow!("gzip writer"))??;
    if !out.status.success() {
        bail!("gzip failed");
    }
    Ok(out.stdout)
}

/// Docs over 4 KiB go in compressed (Debian policy 12.3), smaller ones as they are.
fn put_doc(root: &Path, rel: &str, data: &[u8]) -> Result<()> {
    if data.len() > 4096 {
        put(root, &format!("{rel}.gz"), &gzip(data)?, 0o644)?;
    } else {
        put(root, rel, data, 0o644)?;
    }
    Ok(())
}

/// Every file below `dir`, relative, sorted.
fn files_below(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).with_context(|| format!("cannot list {}", d.display()))? {
            let e = e?;
            if e.file_type()?.is_dir() {
                stack.push(e.path());
            } else {
                out.push(e.path().strip_prefix(dir)?.to_path_buf());
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Builds the package; returns the `.deb`.
pub fn build() -> Result<PathBuf> {
    let klpgen = crate::case::build_klpgen()?;
    let src = source()?;
    let arch = output(Command::new("dpkg").arg("--print-architecture"))?
        .trim()
        .to_string();
    let dir = util::target_dir().join("package");
    let root = dir.join("root");
    if root.exists() {
        fs::remove_dir_all(&root)?;
    }
    let repo = util::repo_root();
    let doc = format!("usr/share/doc/{NAME}");

    // The binary, stripped as dh_strip would.
    let bin = root.join("usr/bin/klpgen");
    fs::create_dir_all(bin.parent().context("no parent")?)?;
    util::run(
        Command::new("strip")
            .args(["--remove-section=.comment", "--remove-section=.note", "-o"])
            .arg(&bin)
            .arg(&klpgen),
    )?;
    fs::set_permissions(&bin, fs::Permissions::from_mode(0o755))?;

    // Man pages and completions from the CLI definition.
    let generated = dir.join("generated");
    if generated.exists() {
        fs::remove_dir_all(&generated)?;
    }
    util::run(
        Command::new(&klpgen)
            .arg("generate")
            .arg("--man")
            .arg(generated.join("man"))
            .arg("--completions")
            .arg(generated.join("completions"))
            .arg("--date")
            .arg(&src.date),
    )?;
    for page in files_below(&generated.join("man"))? {
        let text = fs::read(generated.join("man").join(&page))?;
        put(
            &root,
            &format!("usr/share/man/man1/{}.gz", page.display()),
            &gzip(&text)?,
            0o644,
        )?;
    }
    for (file, dest) in [
        (
            "klpgen.bash",
            "usr/share/bash-completion/completions/klpgen",
        ),
        ("_klpgen", "usr/share/zsh/vendor-completions/_klpgen"),
        (
            "klpgen.fish",
            "usr/share/fish/vendor_completions.d/klpgen.fish",
        ),
    ] {
        put(
            &root,
            dest,
            &fs::read(generated.join("completions").join(file))?,
            0o644,
        )?;
    }

    // The patch-author headers, as include/ has them.
    for h in files_below(&repo.join("include"))? {
        put(
            &root,
            &format!("usr/share/klpgen/include/{}", h.display()),
            &fs::read(repo.join("include").join(&h))?,
            0o644,
        )?;
    }

    // Docs: README, docs/*.md, the examples; copyright and changelog.
    put_doc(
        &root,
        &format!("{doc}/README.md"),
        &fs::read(repo.join("README.md"))?,
    )?;
    for d in files_below(&repo.join("docs"))? {
        put_doc(
            &root,
            &format!("{doc}/{}", d.display()),
            &fs::read(repo.join("docs").join(&d))?,
        )?;
    }
    for e in files_below(&repo.join("examples"))? {
        put_doc(
            &root,
            &format!("{doc}/examples/{}", e.display()),
            &fs::read(repo.join("examples").join(&e))?,
        )?;
    }
    put(
        &root,
        &format!("{doc}/copyright"),
        copyright(&src)?.as_bytes(),
        0o644,
    )?;
    put(
        &root,
        &format!("{doc}/changelog.gz"),
        &gzip(changelog(&src).as_bytes())?,
        0o644,
    )?;

    // Control files.
    let files = files_below(&root)?;
    let mut md5 = String::new();
    let sums = output(
        Command::new("md5sum")
            .current_dir(&root)
            .args(files.iter().map(|f| f.as_os_str())),
    )?;
    md5.push_str(&sums);
    let installed_kib: u64 = files
        .iter()
        .map(|f| fs::metadata(root.join(f)).map_or(0, |m| m.len().div_ceil(1024)))
        .sum();
    let control = control(&src, &arch, installed_kib, &shlibs_depends(&dir, &bin)?);
    put(&root, "DEBIAN/control", control.as_bytes(), 0o644)?;
    put(&root, "DEBIAN/md5sums", md5.as_bytes(), 0o644)?;
    // Directories 0755 and every time the commit's, so one commit gives one package.
    let mut dirs = BTreeSet::new();
    for f in files_below(&root)? {
        let mut p = f.parent();
        while let Some(d) = p.filter(|d| !d.as_os_str().is_empty()) {
            dirs.insert(d.to_path_buf());
            p = d.parent();
        }
    }
    for d in &dirs {
        fs::set_permissions(root.join(d), fs::Permissions::from_mode(0o755))?;
    }
    fs::set_permissions(&root, fs::Permissions::from_mode(0o755))?;
    util::run(
        Command::new("touch")
            .arg("-h")
            .arg("-d")
            .arg(format!("@{}", src.epoch))
            .args(files_below(&root)?.iter().map(|f| root.join(f)))
            .args(dirs.iter().map(|d| root.join(d)))
            .arg(&root),
    )?;
    let deb = dir.join(format!("{NAME}_{VERSION}_{arch}.deb"));
    util::run(
        Command::new("dpkg-deb")
            .args(["--root-owner-group", "-Zxz", "--build"])
            .arg(&root)
            .arg(&deb)
            .env("SOURCE_DATE_EPOCH", src.epoch.to_string()),
    )?;
    Ok(deb)
}

/// `Depends` for the shared libraries the binary links, from dpkg-shlibdeps (which wants a
/// `debian/control` to read; a minimal one in a scratch directory).
fn shlibs_depends(dir: &Path, bin: &Path) -> Result<String> {
    let scratch = dir.join("shlibdeps");
    put(
        &scratch,
        "debian/control",
        format!("Source: {NAME}\n\nPackage: {NAME}\nArchitecture: any\n").as_bytes(),
        0o644,
    )?;
    let out = output(
        Command::new("dpkg-shlibdeps")
            .current_dir(&scratch)
            .arg("-O")
            .arg(format!("-e{}", bin.display())),
    )?;
    let deps = out
        .lines()
        .find_map(|l| l.strip_prefix("shlibs:Depends="))
        .context("dpkg-shlibdeps gave no shlibs:Depends")?;
    Ok(deps.trim().to_string())
}

fn control(src: &Source, arch: &str, installed_kib: u64, shlibs: &str) -> String {
    format!(
        "Package: {NAME}
Version: {VERSION}
Architecture: {arch}
Maintainer: {maintainer}
Installed-Size: {installed_kib}
Depends: {shlibs}, make, patch, binutils
Recommends: gcc | clang
Suggests: ccache, distcc, graphviz, kmod
Section: devel
Priority: optional
Description: build Linux kernel livepatch modules from source patches
 klpgen compiles only the translation units a source patch touches, original
 and patched, with function sections, in a build directory of its own; diffs
 the ELF objects to find the changed and new functions; and writes a
 livepatch module for the target kernel: the new function bodies with their
 klp relocations, checked against the target's symbol table, and a hook (in
 Rust or C) that registers them with the kernel's livepatch core.
 .
 It refuses, with a reason and a remedy, the changes a livepatch cannot carry
 safely (changed data, __init code, functions without an ftrace entry), writes
 a JSON report of every run for CI, and lists the running kernel's livepatches
 (klpgen list). The patch-author annotation header is in
 /usr/share/klpgen/include/klpgen/klpgen.h.
",
        maintainer = src.maintainer
    )
}

fn changelog(src: &Source) -> String {
    format!(
        "{NAME} ({VERSION}) unstable; urgency=medium\n\n  * klpgen {VERSION}, packaged from commit {}.\n\n -- {}  {}\n",
        src.commit, src.maintainer, src.rfc2822
    )
}

/// Rust crates linked into the binary (`cargo metadata`: the normal dependencies of the klpgen
/// package, recursively, without the workspace's own crates): name and version -> license.
fn linked_crates() -> Result<BTreeMap<String, String>> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let json = output(
        Command::new(cargo)
            .current_dir(util::repo_root())
            .args(["metadata", "--format-version", "1", "--locked"])
            .args(["--filter-platform", "x86_64-unknown-linux-gnu"]),
    )?;
    let meta: serde_json::Value = serde_json::from_str(&json).context("cargo metadata")?;
    let packages: BTreeMap<&str, &serde_json::Value> = meta["packages"]
        .as_array()
        .context("packages")?
        .iter()
        .filter_map(|p| Some((p["id"].as_str()?, p)))
        .collect();
    let members: BTreeSet<&str> = meta["workspace_members"]
        .as_array()
        .context("workspace_members")?
        .iter()
        .filter_map(|m| m.as_str())
        .collect();
    let nodes: BTreeMap<&str, &serde_json::Value> = meta["resolve"]["nodes"]
        .as_array()
        .context("resolve")?
        .iter()
        .filter_map(|n| Some((n["id"].as_str()?, n)))
        .collect();
    let root = packages
        .iter()
        .find(|(id, p)| members.contains(*id) && p["name"] == NAME)
        .map(|(id, _)| *id)
        .context("no klpgen package")?;
    let mut seen = BTreeSet::new();
    let mut stack = vec![root];
    let mut out = BTreeMap::new();
    while let Some(id) = stack.pop() {
        if !seen.insert(id) {
            continue;
        }
        let p = packages[id];
        // A proc-macro crate runs in the compiler; nothing of it is in the binary.
        let proc_macro = p["targets"].as_array().into_iter().flatten().all(|t| {
            t["kind"]
                .as_array()
                .is_some_and(|k| k.iter().any(|k| k == "proc-macro"))
        });
        if !members.contains(id) && !proc_macro {
            out.insert(
                format!(
                    "{} {}",
                    p["name"].as_str().unwrap_or("?"),
                    p["version"].as_str().unwrap_or("?")
                ),
                p["license"].as_str().unwrap_or("see the crate").to_string(),
            );
        }
        for dep in nodes[id]["deps"].as_array().into_iter().flatten() {
            let normal = dep["dep_kinds"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|k| k["kind"].is_null());
            if let Some(d) = dep["pkg"].as_str().filter(|_| normal) {
                stack.push(d);
            }
        }
    }
    Ok(out)
}

/// Licenses under which a crate may be linked into a GPL-2.0-only program and shipped.
const PERMISSIVE: &[&str] = &[
    "MIT",
    "Apache-2.0",
    "BSD-2-Clause",
    "BSD-3-Clause",
    "ISC",
    "Zlib",
    "Unlicense",
    "0BSD",
    "Unicode-3.0",
    "BSL-1.0",
];

/// Whether an SPDX expression (`A OR B`, `A/B`, `(A OR B) AND C` simplified to its
/// alternatives) offers, in every conjunct, a license of [`PERMISSIVE`].
fn license_ok(expr: &str) -> bool {
    let clean = expr.replace(['(', ')'], " ");
    clean.split(" AND ").all(|conj| {
        conj.split(['/', ' '])
            .map(str::trim)
            .filter(|t| !t.is_empty() && *t != "OR" && *t != "WITH" && *t != "LLVM-exception")
            .any(|t| PERMISSIVE.contains(&t))
    })
}

fn copyright(src: &Source) -> Result<String> {
    let crates = linked_crates()?;
    let unknown: Vec<String> = crates
        .iter()
        .filter(|(_, l)| !license_ok(l))
        .map(|(c, l)| format!("{c} ({l})"))
        .collect();
    if !unknown.is_empty() {
        bail!(
            "crates linked into klpgen under licenses not known to permit this distribution (review them, then extend PERMISSIVE): {}",
            unknown.join(", ")
        );
    }
    let mut list = String::new();
    for (c, license) in &crates {
        list.push_str(&format!(" {c}: {license}\n"));
    }
    let year = &src.date[..4];
    Ok(format!(
        "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: klpgen
Comment: The klpgen binary also contains these Rust crates, linked statically,
 under the licenses their authors chose (each offers one of MIT, Apache-2.0,
 BSD, ISC, Zlib or a similar permissive license):
 .
{list}
Files: *
Copyright: {year} the klpgen authors
License: GPL-2
 This program is free software; you can redistribute it and/or modify it
 under the terms of the GNU General Public License version 2 as published by
 the Free Software Foundation.
 .
 This program is distributed in the hope that it will be useful, but WITHOUT
 ANY WARRANTY; without even the implied warranty of MERCHANTABILITY or
 FITNESS FOR A PARTICULAR PURPOSE. See the GNU General Public License for more
 details.
 .
 On Debian systems, the full text of the GNU General Public License version 2
 can be found in the file /usr/share/common-licenses/GPL-2.
"
    ))
}

/// Every check of the package; the problems found.
pub fn check_package(deb: &Path) -> Result<Vec<String>> {
    let mut problems = Vec::new();
    let dir = util::target_dir().join("package/check");
    if dir.exists() {
        fs::remove_dir_all(&dir)?;
    }
    fs::create_dir_all(&dir)?;

    // lintian: no error or warning tags (info and pedantic ones are printed, not failed).
    let out = Command::new("lintian")
        .args(["--no-cfg", "--display-info", "--tag-display-limit", "0"])
        .arg(deb)
        .stdin(Stdio::null())
        .output()
        .context("cannot run lintian (package lintian; cargo xtask setup)")?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    fs::write(dir.join("lintian.txt"), &text)?;
    for line in text.lines() {
        eprintln!("  lintian: {line}");
        let severe = line.starts_with("E: ") || line.starts_with("W: ");
        let accepted = LINTIAN_ACCEPTED
            .iter()
            .any(|(tag, _)| line.contains(&format!(" {tag}")));
        if severe && !accepted {
            problems.push(format!("lintian: {line}"));
        }
    }
    if !out.status.success() && problems.is_empty() {
        problems.push(format!(
            "lintian failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }

    // dpkg --root: an empty root with a dpkg database, the package installed there.
    let root = dir.join("root");
    for d in [
        "var/lib/dpkg/info",
        "var/lib/dpkg/updates",
        "var/lib/dpkg/triggers",
    ] {
        fs::create_dir_all(root.join(d))?;
    }
    for f in ["var/lib/dpkg/status", "var/lib/dpkg/available"] {
        fs::write(root.join(f), "")?;
    }
    let install = Command::new("dpkg")
        .arg(format!("--root={}", root.display()))
        .args([
            "--force-depends",
            "--force-not-root",
            "--log=/dev/null",
            "-i",
        ])
        .arg(deb)
        .stdin(Stdio::null())
        .output()?;
    if !install.status.success() {
        problems.push(format!(
            "dpkg --root -i failed: {}",
            String::from_utf8_lossy(&install.stderr).trim()
        ));
        return Ok(problems);
    }
    let status = output(
        Command::new("dpkg-query")
            .arg(format!(
                "--admindir={}",
                root.join("var/lib/dpkg").display()
            ))
            .args(["-W", "-f=${Status} ${Version}", NAME]),
    )?;
    if status != format!("install ok installed {VERSION}") {
        problems.push(format!("dpkg-query in the root: {status:?}"));
    }
    let listed = output(
        Command::new("dpkg-query")
            .arg(format!(
                "--admindir={}",
                root.join("var/lib/dpkg").display()
            ))
            .args(["-L", NAME]),
    )?;
    for want in [
        "/usr/bin/klpgen",
        "/usr/share/man/man1/klpgen.1.gz",
        "/usr/share/man/man1/klpgen-build.1.gz",
        "/usr/share/man/man1/klpgen-list.1.gz",
        "/usr/share/bash-completion/completions/klpgen",
        "/usr/share/zsh/vendor-completions/_klpgen",
        "/usr/share/fish/vendor_completions.d/klpgen.fish",
        "/usr/share/klpgen/include/klpgen/klpgen.h",
        "/usr/share/doc/klpgen/copyright",
        "/usr/share/doc/klpgen/changelog.gz",
        "/usr/share/doc/klpgen/report.md.gz",
    ] {
        if !listed.lines().any(|l| l == want) {
            problems.push(format!("the installed package lacks {want}"));
        } else if !root.join(&want[1..]).exists() {
            problems.push(format!("{want} is listed but not in the root"));
        }
    }
    let version = output(Command::new(root.join("usr/bin/klpgen")).arg("--version"))?;
    if version.trim() != format!("klpgen {VERSION}") {
        problems.push(format!("the installed klpgen says {:?}", version.trim()));
    }

    // man: the page by name, found through MANPATH in the root.
    let man = Command::new("man")
        .arg("klpgen-build")
        .env("MANPATH", root.join("usr/share/man"))
        .env("MANPAGER", "cat")
        .env("MANWIDTH", "100")
        .env("LC_ALL", "C.UTF-8")
        .stdin(Stdio::null())
        .output()?;
    let page = String::from_utf8_lossy(&man.stdout);
    fs::write(dir.join("klpgen-build.txt"), page.as_bytes())?;
    for want in [
        "klpgen-build",
        "--sourcedir",
        "--cc-launcher",
        "--no-wait",
        "EXIT STATUS",
        "KLPGEN_CACHE_DIR",
    ] {
        if !man.status.success() || !page.contains(want) {
            problems.push(format!(
                "`man klpgen-build` (MANPATH in the root): no {want:?} ({}; {})",
                man.status,
                String::from_utf8_lossy(&man.stderr).trim()
            ));
            break;
        }
    }
    let warnings = Command::new("man")
        .args(["--warnings", "-l"])
        .args(
            files_below(&root.join("usr/share/man/man1"))?
                .iter()
                .map(|p| root.join("usr/share/man/man1").join(p)),
        )
        .env("MANPAGER", "cat")
        .env("LC_ALL", "C.UTF-8")
        .stdin(Stdio::null())
        .output()?;
    let w = String::from_utf8_lossy(&warnings.stderr);
    if !warnings.status.success() || !w.trim().is_empty() {
        problems.push(format!("man --warnings on the pages: {}", w.trim()));
    }

    // Completions: bash registers the function, and it completes the subcommands.
    let bash = root.join("usr/share/bash-completion/completions/klpgen");
    let script = format!(
        "source {}; complete -p klpgen; COMP_WORDS=(klpgen l); COMP_CWORD=1; COMP_LINE='klpgen l'; COMP_POINT=8; _klpgen klpgen l klpgen; echo \"words: ${{COMPREPLY[*]}}\"",
        bash.display()
    );
    match output(Command::new("bash").arg("--norc").arg("-c").arg(&script)) {
        Ok(o) if o.contains(" -F _klpgen klpgen\n") && o.contains("words: list\n") => {}
        Ok(o) => problems.push(format!("bash completion: {o:?}")),
        Err(e) => problems.push(format!("bash completion: {e:#}")),
    }
    // zsh defines the completion function; fish completes `klpgen li` to `list`.
    for (shell, file, script, want) in [
        (
            "zsh",
            "usr/share/zsh/vendor-completions/_klpgen",
            "autoload -U compinit && compinit -u && source FILE && whence -w _klpgen",
            "_klpgen: function",
        ),
        (
            "fish",
            "usr/share/fish/vendor_completions.d/klpgen.fish",
            "source FILE && complete -C 'klpgen li'",
            "list\t",
        ),
    ] {
        if util::which(shell).is_none() {
            problems.push(format!("{shell} is not installed (cargo xtask setup)"));
            continue;
        }
        let script = script.replace("FILE", &root.join(file).display().to_string());
        match output(Command::new(shell).arg("-c").arg(&script).env("HOME", &dir)) {
            Ok(o) if o.lines().any(|l| l.starts_with(want)) => {}
            Ok(o) => problems.push(format!("{shell} completion: {o:?}")),
            Err(e) => problems.push(format!("{shell} completion: {e:#}")),
        }
    }
    Ok(problems)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn licenses() {
        assert!(license_ok("MIT OR Apache-2.0"));
        assert!(license_ok("MIT/Apache-2.0"));
        assert!(license_ok(
            "Apache-2.0 WITH LLVM-exception OR Apache-2.0 OR MIT"
        ));
        assert!(license_ok("(MIT OR Apache-2.0) AND Unicode-3.0"));
        assert!(!license_ok("GPL-3.0-only"));
        assert!(!license_ok("MIT AND GPL-3.0-only"));
        assert!(!license_ok(""));
    }
}
