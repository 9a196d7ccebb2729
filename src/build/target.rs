//! The target kernel of a build: its tree and what klpgen reads from it — the vmlinux and
//! Module.symvers (checked to come from one build before any work), its symbols and structure
//! layouts, the modules patched code lives in, and the compiler that built it.
//! A module's `.ko` ([`ModTarget`]) comes from the target build directory, else from
//! `/lib/modules/<release>`; it gives the positions of the module's own symbols.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use patchgen::target::{Symvers, TargetSymtab};

use super::plan::TargetSpec;
use crate::kbuild;
use crate::kernel::{check_config, check_consistency, target_layouts, Tree};
use crate::report::BuildReport;

/// The kernel a livepatch is built for.
pub struct Target {
    /// Its paths; once the work directory is open, `source` is what klpgen builds and patches
    /// (the mirror, for an in-tree build).
    pub tree: Tree,
    /// The target vmlinux's bytes and its name in messages.
    pub vmlinux: Vec<u8>,
    pub vm_label: String,
    pub symvers: Symvers,
}

impl Target {
    /// Open the tree and read its target, refusing a configuration that cannot carry a
    /// livepatch and parts (vmlinux, Module.symvers, sources, an out-of-tree module) that come
    /// from different builds.
    pub fn open(spec: &TargetSpec<'_>, rep: &mut BuildReport) -> Result<Target> {
        let tree = Tree::open(spec.source, spec.build, spec.config, spec.vmlinux)?;
        check_config(&tree.config, &tree.config_path)?;
        tree.check_target()?;
        rep.kernel.release = tree.release.clone();
        let vmlinux = fs::read(&tree.vmlinux)
            .with_context(|| format!("cannot read {}", tree.vmlinux.display()))?;
        let vm_label = tree.vmlinux.display().to_string();
        let symvers_text = fs::read_to_string(&tree.symvers)
            .with_context(|| format!("cannot read {}", tree.symvers.display()))?;
        let symvers = Symvers::parse(&tree.symvers.display().to_string(), &symvers_text)?;
        let oot_ko = match spec.oot_ko {
            Some(ko) => {
                Some(fs::read(ko).with_context(|| format!("cannot read module {}", ko.display()))?)
            }
            None => None,
        };
        check_consistency(
            &tree,
            &vmlinux,
            &symvers,
            spec.oot_ko.zip(oot_ko.as_deref()),
        )?;
        // The launcher runs the compiler kind that built this target (gcc or clang).
        if let Some(l) = spec.cc_launcher {
            kbuild::set_compiler_launcher(&tree, l)?;
        }
        // kbuild for the target's machine (its cross toolchain when klpgen runs elsewhere).
        crate::machine::set(crate::machine::resolve(
            &tree,
            spec.arch,
            spec.cross_compile,
        )?)?;
        Ok(Target {
            tree,
            vmlinux,
            vm_label,
            symvers,
        })
    }

    /// The vmlinux's symbol table (for `sympos` and binding) and the plan's options from its
    /// DWARF (entry sizes, member offsets), printed with `--debug`.
    pub fn symbols(&self, debug: bool) -> Result<Symbols> {
        let symtab = TargetSymtab::parse(&self.vm_label, &self.vmlinux)?;
        let layouts = target_layouts(&self.vm_label, &self.vmlinux);
        if debug {
            let mut sizes: Vec<_> = layouts.entry_sizes.iter().collect();
            sizes.sort();
            let mut members: Vec<_> = layouts.member_offsets.iter().collect();
            members.sort();
            crate::progress::message(&format!(
                "klpgen: target layouts from {}: entry sizes {sizes:?}, member offsets {members:?}",
                self.vm_label
            ));
        }
        Ok(Symbols { symtab, layouts })
    }

    /// Whether kbuild runs objtool on the linked module ("delayed objtool": IBT or Clang
    /// LTO), and so regenerates objtool's sections for the livepatch module.
    pub fn delayed_objtool(&self) -> bool {
        self.tree.delayed_objtool()
    }

    /// The objects klpgen diffs must come from the compiler that built the target: code from
    /// another compiler differs everywhere and may not match the running kernel's calling
    /// conventions. Refuses with both values unless told to skip.
    pub fn check_compiler(&self, orig_obj: &Path, skip: bool, rep: &mut BuildReport) -> Result<()> {
        let target = compilers(&self.tree.vmlinux, &self.vmlinux)?;
        rep.kernel.compiler = target.join("; ");
        let ours = compilers(orig_obj, &fs::read(orig_obj)?)?;
        let mismatch: Vec<&String> = ours.iter().filter(|c| !target.contains(c)).collect();
        if mismatch.is_empty() || target.is_empty() {
            return Ok(());
        }
        let msg = format!(
            "compiler mismatch: the target was built by [{}], klpgen's objects by [{}]",
            target.join("; "),
            ours.join("; ")
        );
        if skip {
            crate::progress::message(&format!("klpgen: warning: {msg} (--skip-compiler-check)"));
            return Ok(());
        }
        bail!("{msg}; build with the target's compiler (or pass --skip-compiler-check if you know they are equivalent)")
    }

    /// The target's `.ko` of the in-tree module `unit` belongs to (`module` as listed in
    /// `modules.order`): in the target build directory, else installed under /lib/modules.
    pub fn module_ko(&self, unit: &str, module: &str) -> Result<PathBuf> {
        let rel = Path::new(module).with_extension("ko");
        let candidates = [
            self.tree.build.join(&rel),
            Path::new("/lib/modules")
                .join(&self.tree.release)
                .join("kernel")
                .join(&rel),
        ];
        for c in &candidates {
            if c.is_file() {
                return Ok(c.clone());
            }
        }
        bail!(
            "{unit} is part of module {}; its .ko is needed for the positions of the module's symbols and is in neither {} nor {}",
            rel.display(),
            candidates[0].display(),
            candidates[1].display()
        )
    }
}

/// What the target's vmlinux gives the binding of every unit: its symbols and the layouts
/// the plan needs.
pub struct Symbols {
    pub symtab: TargetSymtab,
    /// `objtool_regenerates` is decided later, with the module's objtool run.
    pub layouts: elfdiff::PlanOptions,
}

/// A module the patched code lives in: its name as the kernel knows it (`klp_object.name`),
/// its `.ko` and that file's symbols (for `sympos` of the module's own symbols).
pub struct ModTarget {
    pub name: String,
    pub ko: PathBuf,
    pub label: String,
    pub bytes: Vec<u8>,
    pub table: TargetSymtab,
}

impl ModTarget {
    pub fn load(ko: &Path) -> Result<Self> {
        let bytes = fs::read(ko).with_context(|| format!("cannot read {}", ko.display()))?;
        let label = ko.display().to_string();
        let table = TargetSymtab::parse_module(&label, &bytes)?;
        let name = crate::modinfo::module_name(ko, &bytes)?;
        Ok(ModTarget {
            name,
            ko: ko.to_path_buf(),
            label,
            bytes,
            table,
        })
    }
}

/// GCC identification strings (`GCC: (...) X.Y.Z`) in an object's `.comment`.
fn compilers(label: &Path, bytes: &[u8]) -> Result<Vec<String>> {
    use object::{Object as _, ObjectSection as _};
    let file =
        object::File::parse(bytes).with_context(|| format!("cannot parse {}", label.display()))?;
    let data = file
        .section_by_name(".comment")
        .and_then(|s| s.data().ok())
        .unwrap_or(&[]);
    let mut out: Vec<String> = data
        .split(|&b| b == 0)
        .filter(|s| !s.is_empty())
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .filter(|s| s.starts_with("GCC:") || s.contains("clang version"))
        .collect();
    out.sort();
    out.dedup();
    Ok(out)
}
