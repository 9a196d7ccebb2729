//! Out-of-tree modules (`--oot-module KO --oot-module-src DIR`): the module's sources are
//! copied into klpgen's work directory (the user's directory is never built in or patched),
//! built twice against the target kernel with function sections (`make M=`) — as they are, and
//! with the patches applied to the copy — and their objects, from the module's `.mod` list,
//! paired for diffing. The given `.ko`, the module as it runs, is the binding target for the
//! module's own symbols.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use elfdiff::explain::ChangedLines;

use crate::kernel::Tree;
use crate::patch::{self, PatchFile};
use crate::process::Interrupt;
use crate::{kbuild, modinfo};

/// The module being patched (its `.ko`, the module as it runs, gives sympos: see
/// src/build/unit.rs).
pub struct OotModule {
    pub src: PathBuf,
    /// Its name in the kernel (`name=` in modinfo).
    pub name: String,
}

/// The module built twice: both copies of its sources with their build outputs, the objects
/// kbuild linked into the module (paths relative to either copy), and the lines the patches
/// changed.
pub struct Builds {
    pub orig: PathBuf,
    pub patched: PathBuf,
    pub objects: Vec<String>,
    pub changed_lines: Vec<ChangedLines>,
}

/// Build outputs that are not copied with the sources.
fn is_build_output(name: &str) -> bool {
    name.ends_with(".o")
        || name.ends_with(".ko")
        || name.ends_with(".mod")
        || name.ends_with(".mod.c")
        || name.ends_with(".a")
        || (name.starts_with('.') && name.ends_with(".cmd"))
        || name == "modules.order"
        || name == "Module.symvers"
        || name == ".git"
}

fn copy_sources(from: &Path, to: &Path) -> Result<()> {
    fs::create_dir_all(to)?;
    for e in fs::read_dir(from).with_context(|| format!("cannot read {}", from.display()))? {
        let e = e?;
        let name = e.file_name().to_string_lossy().into_owned();
        if is_build_output(&name) {
            continue;
        }
        let ft = e.file_type()?;
        let dst = to.join(&name);
        if ft.is_dir() {
            copy_sources(&e.path(), &dst)?;
        } else if ft.is_file() {
            fs::copy(e.path(), &dst)?;
        }
    }
    Ok(())
}

impl OotModule {
    pub fn open(ko: &Path, src: &Path) -> Result<Self> {
        let bytes = fs::read(ko).with_context(|| format!("cannot read module {}", ko.display()))?;
        let name = modinfo::module_name(ko, &bytes)?;
        let src = src
            .canonicalize()
            .with_context(|| format!("module source directory {} does not exist", src.display()))?;
        if !src.join("Kbuild").is_file() && !src.join("Makefile").is_file() {
            bail!("{} has neither Kbuild nor Makefile", src.display());
        }
        Ok(OotModule { src, name })
    }

    /// Build the module's objects before and after the patches, in two copies of its sources
    /// under `workdir`.
    #[allow(clippy::too_many_arguments)]
    pub fn build_twice(
        &self,
        tree: &Tree,
        patches: &[PatchFile],
        workdir: &Path,
        include: &Path,
        keep_lines: bool,
        jobs: usize,
        intr: &Interrupt,
    ) -> Result<Builds> {
        let orig = workdir.join("oot-orig");
        let patched = workdir.join("oot-patched");
        for d in [&orig, &patched] {
            if d.exists() {
                fs::remove_dir_all(d)?;
            }
            copy_sources(&self.src, d)?;
        }
        for p in patches {
            patch::apply_to_copy(&patched, p, intr)?;
        }
        let changed = patch::finish_copy(&patched, &orig, patches, keep_lines)?;
        for (dir, what) in [(&orig, "original"), (&patched, "patched")] {
            kbuild::build_external(
                tree,
                dir,
                include,
                jobs,
                &dir.with_extension("log"),
                &format!(
                    "building the {what} module {} (function sections)",
                    self.name
                ),
                intr,
            )?;
        }
        let objects = self.objects(&orig)?;
        Ok(Builds {
            orig,
            patched,
            objects,
            changed_lines: changed,
        })
    }

    /// Objects kbuild linked into the module, from its `.mod` list.
    fn objects(&self, dir: &Path) -> Result<Vec<String>> {
        let candidates = [self.name.clone(), self.name.replace('_', "-")];
        let list = candidates
            .iter()
            .map(|n| dir.join(format!("{n}.mod")))
            .find(|p| p.is_file())
            .with_context(|| {
                format!(
                    "kbuild built no module named {} from {}",
                    self.name,
                    self.src.display()
                )
            })?;
        let text = fs::read_to_string(&list)?;
        let mut out = Vec::new();
        for o in text.split_whitespace() {
            let p = Path::new(o);
            let rel = p.strip_prefix(dir).unwrap_or(p);
            out.push(rel.to_string_lossy().into_owned());
        }
        if out.is_empty() {
            bail!("{} lists no objects", list.display());
        }
        Ok(out)
    }
}
