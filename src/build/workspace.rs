//! klpgen's work directory for one target, in the cache: locked for the run, the source tree
//! restored from there after an interrupted earlier run, the mirror of an in-tree build's
//! sources, the patch author's header, and a fresh run directory for the module.

use std::fs;
use std::path::PathBuf;

use anyhow::{Context, Result};
use sha2::{Digest, Sha256};

use super::locks::lock_tree;
use super::plan::BuildPlan;
use super::target::Target;
use crate::kernel::Tree;
use crate::process::Interrupt;
use crate::report::BuildReport;
use crate::{kbuild, mirror, patch};

pub struct Workspace {
    /// `<cache>/trees/<key>`: klpgen's build directory (`kbuild/`), the patch journal, the
    /// lock and the mirror of this tree.
    pub dir: PathBuf,
    /// `<dir>/runs/<module>` (`<module>.<target>` in a run with `--kernel`): this run's objects (`orig/`, `patched/`), logs and module
    /// sources (`module/`).
    pub run_dir: PathBuf,
    /// The directory holding `<klpgen/klpgen.h>`, on the include path of both builds.
    pub include: PathBuf,
    /// Held until the run ends.
    _lock: fs::File,
}

impl Workspace {
    /// Open (and lock) the target's work directory. For an in-tree build the target's tree
    /// becomes the mirror: kbuild cannot build that tree elsewhere, so klpgen builds (and
    /// patches) a mirror of its sources instead, and the user's tree is never patched.
    pub fn open(
        plan: &BuildPlan,
        target: &mut Target,
        rep: &mut BuildReport,
        intr: &Interrupt,
    ) -> Result<Workspace> {
        let dir = tree_workdir(&target.tree);
        fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let lock = lock_tree(&dir, &target.tree.source, plan.wait, intr)?;
        if patch::recover(&dir)? {
            crate::progress::message(&format!(
                "klpgen: restored {} from an interrupted earlier run",
                target.tree.source.display()
            ));
        }
        if plan.oot.is_none() && mirror::is_in_tree_build(&target.tree.source) {
            rep.stage("mirroring the sources of the in-tree build");
            let m = dir.join("source");
            let st = mirror::sync(&target.tree.source, &m, intr)?;
            crate::progress::message(&format!(
                "klpgen: {} holds an in-tree build; working on a mirror of its sources in {} ({} linked, {} copied, {} removed, {} unchanged)",
                target.tree.source.display(),
                m.display(),
                st.linked,
                st.copied,
                st.removed,
                st.unchanged
            ));
            target.tree.source = m;
        }
        let run_dir = dir.join("runs").join(&plan.run_name);
        if run_dir.exists() {
            fs::remove_dir_all(&run_dir)
                .with_context(|| format!("cannot clean {}", run_dir.display()))?;
        }
        for d in ["orig", "patched", "module"] {
            fs::create_dir_all(run_dir.join(d))?;
        }
        let include = kbuild::install_header(&dir)?;
        Ok(Workspace {
            dir,
            run_dir,
            include,
            _lock: lock,
        })
    }

    /// klpgen's own build directory (`O=`) of the target's sources.
    pub fn kbuild_dir(&self) -> PathBuf {
        self.dir.join("kbuild")
    }

    /// The object tree the livepatch module is built against (`make -C <it> M=`) and whose
    /// tools and records klpgen uses: the target build, or for a distribution's headers
    /// klpgen's own build directory prepared from the sources with the headers' files.
    pub fn objtree(&self, tree: &Tree) -> PathBuf {
        match tree.kind() {
            crate::kernel::TreeKind::Build => tree.build.clone(),
            crate::kernel::TreeKind::Headers => self.kbuild_dir(),
        }
    }

    /// Where this run writes the livepatch module's sources and kbuild builds it.
    pub fn module_dir(&self) -> PathBuf {
        self.run_dir.join("module")
    }
}

/// `<cache>/trees/<key>`, the key a digest of the source and build directories.
fn tree_workdir(tree: &Tree) -> PathBuf {
    let mut h = Sha256::new();
    h.update(tree.source.as_os_str().as_encoded_bytes());
    h.update([0]);
    h.update(tree.build.as_os_str().as_encoded_bytes());
    let key: String = h
        .finalize()
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect();
    kbuild::cache_root().join("trees").join(key)
}
