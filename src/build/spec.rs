//! Where a target kernel is, as `--kernel SPEC` (and each line of `--kernels FILE`) names it,
//! or as the single-target flags do (`--sourcedir`, `--builddir`, `--config`, `--vmlinux`,
//! `--modules`, `--release`, `--fetch`): [`KernelSpec`], one per target of a run.
//!
//! A SPEC is comma-separated items, each `key=value` or the word `fetch`:
//! `release=R` (a distribution's kernel release, its packages found as src/distro does),
//! `fetch` (download the packages it lacks), `source=DIR`, `build=DIR`, `config=FILE`,
//! `vmlinux=FILE`, `modules=DIR` (what the flags of those names give), and `name=NAME` (the
//! target's name in the summary, the report and the output directory). A first item without
//! `=` is shorthand: a path (it has a `/`) is `build=`, anything else `release=`. `build=DIR`
//! without `source=` takes the sources from `DIR/source` (kbuild's link in an `O=` directory),
//! else DIR itself (an in-tree build). Paths cannot hold commas.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

/// One target kernel, as a SPEC or the flags name it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KernelSpec {
    /// The SPEC as given (empty for the flags), for the report.
    pub text: String,
    /// `name=`: the target's name; default [`KernelSpec::default_name`].
    pub name: Option<String>,
    pub release: Option<String>,
    pub fetch: bool,
    pub source: Option<PathBuf>,
    pub build: Option<PathBuf>,
    pub config: Option<PathBuf>,
    pub vmlinux: Option<PathBuf>,
    pub modules: Option<PathBuf>,
}

/// The keys a SPEC knows, for messages.
const KEYS: &str = "name=, release=, fetch, source=, build=, config=, vmlinux=, modules=";

impl KernelSpec {
    /// Parse one SPEC (`release=6.1.0-57-cloud-amd64,fetch`, `build=/b,name=x`).
    pub fn parse(text: &str) -> Result<KernelSpec> {
        let text = text.trim();
        if text.is_empty() {
            bail!("--kernel: an empty SPEC (keys: {KEYS})");
        }
        let mut s = KernelSpec {
            text: text.to_string(),
            ..KernelSpec::default()
        };
        for (i, item) in text.split(',').map(str::trim).enumerate() {
            let (key, value) = match item.split_once('=') {
                Some((k, v)) => (k.trim(), v.trim()),
                None if item == "fetch" => ("fetch", ""),
                None if i == 0 && item.contains('/') => ("build", item),
                None if i == 0 => ("release", item),
                None => bail!("--kernel {text}: {item:?} is not key=value (keys: {KEYS})"),
            };
            if key != "fetch" && value.is_empty() {
                bail!("--kernel {text}: {key}= needs a value");
            }
            let path = || Some(PathBuf::from(value));
            let dup = match key {
                "name" => s.name.replace(valid_name(value)?).is_some(),
                "release" => s.release.replace(value.to_string()).is_some(),
                "fetch" if value.is_empty() => std::mem::replace(&mut s.fetch, true),
                "source" => s.source.replace(PathBuf::from(value)).is_some(),
                "build" => s.build.replace(PathBuf::from(value)).is_some(),
                "config" => std::mem::replace(&mut s.config, path()).is_some(),
                "vmlinux" => std::mem::replace(&mut s.vmlinux, path()).is_some(),
                "modules" => std::mem::replace(&mut s.modules, path()).is_some(),
                _ => bail!("--kernel {text}: unknown item {item:?} (keys: {KEYS})"),
            };
            if dup {
                bail!("--kernel {text}: {key} is given twice");
            }
        }
        Ok(s)
    }

    /// The SPECs of a `--kernels` file: one per line; blank lines and `#` comments skipped.
    pub fn parse_list(file: &Path, text: &str) -> Result<Vec<KernelSpec>> {
        text.lines()
            .enumerate()
            .map(|(i, l)| (i, l.split('#').next().unwrap_or("").trim()))
            .filter(|(_, l)| !l.is_empty())
            .map(|(i, l)| {
                KernelSpec::parse(l).with_context(|| format!("{}:{}", file.display(), i + 1))
            })
            .collect()
    }

    /// Whether the target is a distribution's kernel found from its packages: a release, or
    /// fetching, or neither source nor build directory given (the running kernel).
    pub fn distribution_target(&self) -> bool {
        self.release.is_some() || self.fetch || (self.source.is_none() && self.build.is_none())
    }

    /// The parts given (a distribution's target looks for the others).
    pub fn given(&self) -> crate::distro::Given {
        crate::distro::Given {
            source: self.source.is_some(),
            build: self.build.is_some(),
            vmlinux: self.vmlinux.is_some(),
            modules: self.modules.is_some(),
        }
    }

    /// The source tree: given, or for `build=` alone the build directory's `source` link
    /// (an `O=` build), else the build directory itself (in-tree). A distribution's target
    /// without `source=` takes the sources from its packages instead.
    pub fn source_dir(&self) -> Option<PathBuf> {
        if let Some(s) = &self.source {
            return Some(s.clone());
        }
        let b = self.build.as_ref()?;
        let link = b.join("source");
        Some(if link.is_dir() { link } else { b.clone() })
    }

    /// The name of a target without `name=`: its release, else its build (or source)
    /// directory's release as the tree says (`release`, read by the caller), else its
    /// position.
    pub fn default_name(&self, tree_release: Option<&str>, index: usize) -> String {
        self.release
            .clone()
            .or_else(|| tree_release.map(str::to_string))
            .and_then(|r| valid_name(&r).ok())
            .unwrap_or_else(|| format!("target-{}", index + 1))
    }
}

/// A target name is a directory of the output and a word of the summary: letters, digits,
/// `.`, `_`, `+`, `-`, at most 64 characters, not starting with `.`.
pub fn valid_name(name: &str) -> Result<String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '+' | '-'));
    if !ok {
        bail!("target name {name:?}: use letters, digits and . _ + - (at most 64, not starting with .)");
    }
    Ok(name.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse() {
        let s = KernelSpec::parse("release=6.1.0-57-cloud-amd64,fetch").unwrap();
        assert_eq!(s.release.as_deref(), Some("6.1.0-57-cloud-amd64"));
        assert!(s.fetch && s.distribution_target());
        let s = KernelSpec::parse("6.1.0-53-cloud-amd64, name=old").unwrap();
        assert_eq!(s.release.as_deref(), Some("6.1.0-53-cloud-amd64"));
        assert_eq!(s.name.as_deref(), Some("old"));
        let s = KernelSpec::parse("build=/b,source=/s,vmlinux=/v,config=/c,modules=/m").unwrap();
        assert_eq!(s.build, Some(PathBuf::from("/b")));
        assert_eq!(s.source_dir(), Some(PathBuf::from("/s")));
        assert_eq!(s.vmlinux, Some(PathBuf::from("/v")));
        assert_eq!(s.config, Some(PathBuf::from("/c")));
        assert_eq!(s.modules, Some(PathBuf::from("/m")));
        assert!(!s.distribution_target());
        let s = KernelSpec::parse("/no/such/build").unwrap();
        assert_eq!(s.build, Some(PathBuf::from("/no/such/build")));
        // Without a `source` link the build directory is an in-tree build.
        assert_eq!(s.source_dir(), Some(PathBuf::from("/no/such/build")));
        for bad in [
            "",
            "release=a,release=b",
            "colour=blue",
            "build=",
            "release=a,b",
            "name=../x",
            "name=a b",
            "fetch=1",
        ] {
            assert!(KernelSpec::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_build_directorys_source_link_is_the_source() {
        let tmp = tempfile::tempdir().unwrap();
        let (b, s) = (tmp.path().join("b"), tmp.path().join("s"));
        std::fs::create_dir_all(&b).unwrap();
        std::fs::create_dir_all(&s).unwrap();
        std::os::unix::fs::symlink(&s, b.join("source")).unwrap();
        let spec = KernelSpec::parse(&format!("build={}", b.display())).unwrap();
        assert_eq!(spec.source_dir(), Some(b.join("source")));
    }

    #[test]
    fn lists_and_names() {
        let l = KernelSpec::parse_list(
            Path::new("k"),
            "# fleet\n6.1.0-57-cloud-amd64\n\n6.1.0-57-amd64 # generic\n",
        )
        .unwrap();
        assert_eq!(l.len(), 2);
        assert_eq!(l[1].release.as_deref(), Some("6.1.0-57-amd64"));
        let e = KernelSpec::parse_list(Path::new("k"), "a\nbogus=1\n").unwrap_err();
        assert!(format!("{e:#}").starts_with("k:2: "), "{e:#}");
        assert_eq!(l[0].default_name(None, 0), "6.1.0-57-cloud-amd64");
        let b = KernelSpec::parse("build=/b").unwrap();
        assert_eq!(b.default_name(Some("6.12.117"), 3), "6.12.117");
        assert_eq!(b.default_name(None, 3), "target-4");
    }
}
