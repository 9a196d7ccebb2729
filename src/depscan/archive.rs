//! The objects a kernel build linked, from its own products: the members of `vmlinux.a` (a
//! thin archive: names only, the objects stay where they are; nested thin archives such as
//! `built-in.a` and `lib.a` are followed) and each module's `.mod` list. Together they are the
//! units the target's configuration builds, which tells whether the target's kbuild records
//! are complete.

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;

/// Member names of a thin archive (`!<thin>\n`), relative to the archive's directory; None
/// when `bytes` is not one.
pub fn thin_members(bytes: &[u8]) -> Option<Vec<String>> {
    let mut rest = bytes.strip_prefix(b"!<thin>\n")?;
    let mut long_names: &[u8] = &[];
    let mut out = Vec::new();
    while rest.len() >= 60 {
        let (hdr, after) = rest.split_at(60);
        if &hdr[58..60] != b"`\n" {
            return None;
        }
        // The name field is padded with spaces (GNU ar may end it with a `/` after them).
        let name = std::str::from_utf8(&hdr[..16])
            .ok()?
            .split(' ')
            .next()
            .unwrap_or("");
        let size: usize = std::str::from_utf8(&hdr[48..58])
            .ok()?
            .trim()
            .parse()
            .ok()?;
        // Only the symbol table and the long-name table have their data in the archive.
        let stored = name == "/" || name == "//" || name == "/SYM64/";
        let data_len = if stored { size } else { 0 };
        if after.len() < data_len {
            return None;
        }
        let data = &after[..data_len];
        if name == "//" {
            long_names = data;
        } else if !stored {
            let member = if let Some(off) = name.strip_prefix('/') {
                let off: usize = off.parse().ok()?;
                let tail = long_names.get(off..)?;
                let end = tail.iter().position(|&b| b == b'\n').unwrap_or(tail.len());
                String::from_utf8_lossy(&tail[..end])
                    .trim_end_matches('/')
                    .to_string()
            } else {
                name.trim_end_matches('/').to_string()
            };
            out.push(member);
        }
        let padded = data_len + (data_len & 1);
        rest = after.get(padded..).unwrap_or(&[]);
    }
    Some(out)
}

/// The units of the target build at `build`: the objects of `vmlinux.a` (or `built-in.a`)
/// and of every module in `modules.order`, as paths relative to `build`. None when the build
/// has no such archive (a distribution's headers, or a tree never built).
pub fn built_units(build: &Path, modules: bool) -> Option<BTreeSet<String>> {
    let mut out = BTreeSet::new();
    let top = ["vmlinux.a", "built-in.a"]
        .iter()
        .map(|n| build.join(n))
        .find(|p| p.is_file())?;
    let mut stack = vec![top];
    let mut seen = BTreeSet::new();
    while let Some(a) = stack.pop() {
        if !seen.insert(a.clone()) {
            continue;
        }
        let members = thin_members(&fs::read(&a).ok()?)?;
        let dir = a.parent().unwrap_or(build);
        for m in members {
            let p = super::cmdline::normalize(&dir.join(&m));
            if m.ends_with(".a") {
                stack.push(p);
            } else if let Ok(rel) = p.strip_prefix(build) {
                out.insert(rel.to_string_lossy().into_owned());
            }
        }
    }
    if modules {
        let order = fs::read_to_string(build.join("modules.order")).ok()?;
        for m in order.lines().filter(|l| !l.trim().is_empty()) {
            let list = fs::read_to_string(build.join(m.trim()).with_extension("mod")).ok()?;
            out.extend(list.split_whitespace().map(str::to_string));
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(name: &str, size: usize) -> Vec<u8> {
        let mut h =
            format!("{name:<16}{:<12}{:<6}{:<6}{:<8}{size:<10}`\n", 0, 0, 0, 644).into_bytes();
        assert_eq!(h.len(), 60);
        h.shrink_to_fit();
        h
    }

    #[test]
    fn reads_a_thin_archive() {
        // As `ar cDPrST` writes it: a symbol table, the long names, then names only.
        let long = b"fs/proc/a_rather_long_name.o/\nlib/lib.a/\n".to_vec();
        let mut a = b"!<thin>\n".to_vec();
        a.extend(header("/", 4));
        a.extend(b"\0\0\0\0");
        a.extend(header("//", long.len()));
        a.extend(&long);
        if long.len() % 2 == 1 {
            a.push(b'\n');
        }
        a.extend(header("init/main.o/", 1234));
        a.extend(header("/0", 999));
        a.extend(header("/30", 10));
        assert_eq!(
            thin_members(&a).unwrap(),
            ["init/main.o", "fs/proc/a_rather_long_name.o", "lib/lib.a"]
        );
        assert!(thin_members(b"!<arch>\n").is_none());

        let tmp = tempfile::tempdir().unwrap();
        fs::write(tmp.path().join("vmlinux.a"), &a).unwrap();
        let mut lib = b"!<thin>\n".to_vec();
        lib.extend(header("string.o/", 10));
        fs::create_dir_all(tmp.path().join("lib")).unwrap();
        fs::write(tmp.path().join("lib/lib.a"), &lib).unwrap();
        fs::write(tmp.path().join("modules.order"), "fs/m.o\n").unwrap();
        fs::create_dir_all(tmp.path().join("fs")).unwrap();
        fs::write(tmp.path().join("fs/m.mod"), "fs/m1.o\nfs/m2.o\n").unwrap();
        let units: Vec<String> = built_units(tmp.path(), true).unwrap().into_iter().collect();
        assert_eq!(
            units,
            [
                "fs/m1.o",
                "fs/m2.o",
                "fs/proc/a_rather_long_name.o",
                "init/main.o",
                "lib/string.o"
            ]
        );
    }
}
