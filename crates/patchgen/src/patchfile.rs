//! Source patches as text: which files a unified diff touches (`-p1`), refusing paths that
//! leave the tree and binary hunks. Pure text in, values out; applying patches is `src/patch.rs`.

/// Why a patch's file list cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("binary hunks cannot be applied to a kernel tree")]
    Binary,
    #[error("absolute path {path} in patch: paths must be relative to the tree (-p1)")]
    Absolute { path: String },
    #[error("path {path} leaves the kernel tree")]
    LeavesTree { path: String },
}

/// Files a unified diff touches, with the first path component stripped (`-p1`), in the order
/// they first appear. Refuses paths that leave the tree and binary hunks.
pub fn touched_files(text: &str) -> Result<Vec<String>, Error> {
    let mut out: Vec<String> = Vec::new();
    for line in text.lines() {
        if line.starts_with("GIT binary patch")
            || (line.starts_with("Binary files ") && line.ends_with(" differ"))
        {
            return Err(Error::Binary);
        }
        let Some(rest) = line
            .strip_prefix("+++ ")
            .or_else(|| line.strip_prefix("--- "))
        else {
            continue;
        };
        let path = rest.split('\t').next().unwrap_or("").trim();
        if path == "/dev/null" || path.is_empty() {
            continue;
        }
        if path.starts_with('/') {
            return Err(Error::Absolute {
                path: path.to_string(),
            });
        }
        // Like GNU patch's -p1: adjacent slashes count as one, so `a//etc/x` is `etc/x`
        // (never the absolute `/etc/x`).
        let stripped = path
            .split_once('/')
            .map_or(path, |(_, r)| r.trim_start_matches('/'));
        if stripped.is_empty() {
            continue;
        }
        if stripped.split('/').any(|c| c == "..") {
            return Err(Error::LeavesTree {
                path: path.to_string(),
            });
        }
        if !out.iter().any(|f| f == stripped) {
            out.push(stripped.to_string());
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn touched_files_strip_one_component() {
        let t = "--- a/fs/proc/cmdline.c\n+++ b/fs/proc/cmdline.c\n@@ -1 +1 @@\n-x\n+y\n";
        assert_eq!(touched_files(t).unwrap(), vec!["fs/proc/cmdline.c"]);
    }

    #[test]
    fn hostile_paths_are_refused() {
        assert_eq!(
            touched_files("--- a/x\n+++ /etc/passwd\n"),
            Err(Error::Absolute {
                path: "/etc/passwd".into()
            })
        );
        assert_eq!(
            touched_files("--- a/../x\n+++ b/../x\n"),
            Err(Error::LeavesTree {
                path: "a/../x".into()
            })
        );
        assert_eq!(
            touched_files("diff --git a/f b/f\nGIT binary patch\n"),
            Err(Error::Binary)
        );
        assert_eq!(
            touched_files("Binary files a/f and b/f differ\n"),
            Err(Error::Binary)
        );
    }

    #[test]
    fn new_files_come_from_plus_lines() {
        let t = "--- /dev/null\n+++ b/new.c\n@@ -0,0 +1 @@\n+x\n";
        assert_eq!(touched_files(t).unwrap(), vec!["new.c"]);
    }

    /// Found by the `patch_parse` fuzz target: `-p1` of `a//x` was the absolute `/x`.
    #[test]
    fn doubled_slashes_do_not_make_absolute_paths() {
        let t = "--- a//csg/prfstat.c\n+++ b//csg/prfstat.c\n";
        assert_eq!(touched_files(t).unwrap(), vec!["csg/prfstat.c"]);
        assert_eq!(
            touched_files("+++ b///etc/passwd\n").unwrap(),
            vec!["etc/passwd"]
        );
        assert_eq!(touched_files("+++ b//\n").unwrap(), Vec::<String>::new());
        assert!(touched_files("+++ b//../x\n").is_err());
    }

    #[test]
    fn files_are_listed_once_in_order() {
        let t = "--- a/b.c\t2024-01-01\n+++ b/b.c\n--- a/a.c\n+++ b/a.c\n";
        assert_eq!(touched_files(t).unwrap(), vec!["b.c", "a.c"]);
        assert_eq!(
            touched_files("not a patch\n").unwrap(),
            Vec::<String>::new()
        );
    }
}
