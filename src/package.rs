//! `klpgen build --package KIND`: a package of each built livepatch, next to its module, that
//! installs the module for exactly its kernel release, loads it at boot on that release only,
//! depends on that kernel's package when the target is a distribution's, and carries the
//! build's report. The Debian writer is [`deb`]; what every kind needs of a build is
//! [`Input`].

pub mod deb;

use std::path::PathBuf;

use anyhow::{bail, Result};

/// `--package`'s kinds.
#[derive(Clone, Copy, clap::ValueEnum, Debug, PartialEq, Eq)]
pub enum Kind {
    Deb,
}

/// The package flags, checked once for the run.
#[derive(Clone, Debug)]
pub struct Options {
    pub kind: Kind,
    /// The package version (every target's package gets the same).
    pub version: String,
    /// `Name <email>`.
    pub maintainer: String,
}

impl Options {
    /// From `--package-version` (default `0~<the patches' sha256, 12 digits>-1`) and
    /// `--package-maintainer` (default `$DEBFULLNAME <$DEBEMAIL>`, as Debian's tools take it).
    pub fn new(
        kind: Kind,
        version: Option<&str>,
        maintainer: Option<&str>,
        patches_sha256: &str,
    ) -> Result<Options> {
        let version = match version {
            Some(v) => deb::check_version(v)?,
            None => format!("0~{}-1", &patches_sha256[..12.min(patches_sha256.len())]),
        };
        let maintainer = match maintainer {
            Some(m) => m.to_string(),
            None => match (std::env::var("DEBFULLNAME"), std::env::var("DEBEMAIL")) {
                (Ok(n), Ok(e)) if !n.trim().is_empty() && !e.trim().is_empty() => {
                    format!("{} <{}>", n.trim(), e.trim())
                }
                _ => bail!(
                    "--package needs a maintainer: pass --package-maintainer 'Name <email>' or set DEBFULLNAME and DEBEMAIL"
                ),
            },
        };
        deb::check_maintainer(&maintainer)?;
        Ok(Options {
            kind,
            version,
            maintainer,
        })
    }
}

/// What a package is made of: the built module and what the build knows of its target.
pub struct Input<'a> {
    /// `livepatch-<name>` (the `.ko` file's stem; the kernel calls it `livepatch_<name>`).
    pub module: &'a str,
    pub ko: &'a std::path::Path,
    /// The target's kernel release (`uname -r` on it).
    pub release: &'a str,
    /// The Debian architecture of the target (`amd64`...).
    pub arch: &'a str,
    /// The distribution's kernel package the target is, when known: (distribution,
    /// version).
    pub distribution: Option<(&'a str, &'a str)>,
    /// The module's description (the patches it was built from).
    pub description: &'a str,
    /// The build's JSON report as of the module's writing.
    pub report: &'a [u8],
    /// Where the package goes.
    pub out_dir: PathBuf,
}

/// The Debian architecture name of the target's machine.
pub fn debian_arch(tree: &crate::kernel::Tree) -> Result<&'static str> {
    match tree.arch() {
        Some(a) => Ok(a.debian_arch()),
        None => bail!("--package: the target's machine is not one klpgen knows"),
    }
}
