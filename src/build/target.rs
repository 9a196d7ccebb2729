//! The target kernel of a build: its tree and what klpgen reads from it — the vmlinux and
//! Module.symvers (checked to come from one build before any work), its symbols and structure
//! layouts, the modules patched code lives in, and the compiler that built it.
//! A module's `.ko` ([`ModTarget`]) comes from the target build directory, else from the
//! modules directory (`--modules`, default `/lib/modules/<release>`, compressed or not); it
//! gives the positions of the module's own symbols. Before any work, one module of that
//! directory must name the vmlinux's release in its vermagic.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use patchgen::target::{Symvers, TargetSymtab};

use super::plan::TargetSpec;
use crate::kbuild;
use crate::kernel::{check_config, check_consistency, target_layouts, Pieces, Tree, TreeKind};
use crate::kofile::{self, ModulesDir};
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
    /// The target's installed modules (empty when the directory does not exist).
    pub modules: ModulesDir,
    /// Its livepatch core clears klp relocations into unloaded modules (Linux 6.3).
    pub clears_klp_relocations: bool,
}

impl Target {
    /// Open the tree and read its target, refusing a configuration that cannot carry a
    /// livepatch and parts (vmlinux, Module.symvers, sources, an out-of-tree module) that come
    /// from different builds.
    pub fn open(spec: &TargetSpec, rep: &mut BuildReport) -> Result<Target> {
        let mut tree = Tree::open(
            &spec.source,
            &Pieces {
                build: spec.build.as_deref(),
                config: spec.config.as_deref(),
                vmlinux: spec.vmlinux.as_deref(),
                modules: spec.modules.as_deref(),
            },
        )?;
        check_config(&tree.config, &tree.config_path)?;
        tree.check_target()?;
        rep.kernel.release = tree.release.clone();
        let vmlinux = fs::read(&tree.vmlinux)
            .with_context(|| format!("cannot read {}", tree.vmlinux.display()))?;
        let vm_label = tree.vmlinux.display().to_string();
        let symvers_text = fs::read_to_string(&tree.symvers)
            .with_context(|| format!("cannot read {}", tree.symvers.display()))?;
        let symvers = Symvers::parse(&tree.symvers.display().to_string(), &symvers_text)?;
        let mut others: Vec<(PathBuf, Vec<u8>)> = Vec::new();
        if let Some(ko) = spec.oot_ko.as_deref() {
            let bytes =
                kofile::read(ko).with_context(|| format!("cannot read module {}", ko.display()))?;
            others.push((ko.to_path_buf(), bytes));
        }
        let modules = ModulesDir::open(&tree.info.modules)?;
        // One module of the modules directory says which kernel it belongs to.
        if let Some(sample) = modules.sample() {
            others.push((sample.to_path_buf(), kofile::read(sample)?));
        }
        let refs: Vec<(&Path, &[u8])> = others
            .iter()
            .map(|(p, b)| (p.as_path(), b.as_slice()))
            .collect();
        let identity = check_consistency(&tree, &vmlinux, &symvers, &refs)?;
        rep.kernel.version = identity.version.clone();
        if let Some(p) = &identity.package {
            rep.kernel.distribution = Some(p.distribution.to_string());
            rep.kernel.package_version = Some(p.version.clone());
        }
        let clears_klp_relocations = identity.clears_klp_relocations;
        tree.info.package = identity.package;
        tree.info.vmlinux_version = identity.version;
        // The launcher runs the compiler kind that built this target (gcc or clang).
        if let Some(l) = spec.cc_launcher.as_deref() {
            kbuild::set_compiler_launcher(&tree, l)?;
        }
        // kbuild for the target's machine (its cross toolchain when klpgen runs elsewhere).
        crate::machine::set(crate::machine::resolve(
            &tree,
            spec.arch.as_deref(),
            spec.cross_compile.as_deref(),
        )?)?;
        Ok(Target {
            tree,
            vmlinux,
            vm_label,
            symvers,
            modules,
            clears_klp_relocations,
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
    /// `modules.order`): in the target build directory, else in the modules directory
    /// (compressed or not).
    pub fn module_ko(&self, unit: &str, module: &str) -> Result<PathBuf> {
        let rel = Path::new(module).with_extension("ko");
        let in_build = self.tree.build.join(&rel);
        if in_build.is_file() {
            return Ok(in_build);
        }
        if let Some(p) = self.modules.find(module) {
            return Ok(p.to_path_buf());
        }
        bail!(
            "{unit} is part of module {}; its .ko is needed for the positions of the module's symbols and is in neither {} nor {} (pass --modules with the target's installed modules)",
            rel.display(),
            in_build.display(),
            self.modules.dir.join("kernel").join(&rel).display()
        )
    }
}

impl Target {
    /// The target module `ko` for binding and checking. Distributions install modules
    /// stripped of their debugging symbols, STT_FILE included (Debian: `strip --strip-debug`),
    /// which the binder needs to tell same-named statics apart; their `-dbg` packages keep
    /// full copies (`/usr/lib/debug/lib/modules/<release>/...`). Such a copy with the same GNU
    /// build-id is the same link, so its symbols are in the same order: it is used instead.
    pub fn load_module(&self, ko: &Path) -> Result<ModTarget> {
        let m = ModTarget::load(ko)?;
        if kofile::has_file_symbols(&m.bytes) {
            return Ok(m);
        }
        let Some(debug) = kofile::debug_copy(
            ko,
            &m.bytes,
            &self.modules.dir,
            &self.tree.vmlinux,
            &self.tree.release,
        ) else {
            return Ok(m);
        };
        let mut full = ModTarget::load(&debug)?;
        full.label = format!("{} (symbols from {})", ko.display(), debug.display());
        full.ko = ko.to_path_buf();
        full.table = TargetSymtab::parse_module(&full.label, &full.bytes)?;
        Ok(full)
    }

    /// The `.ko` of the module `unit` (with its original object `orig`) is linked into, or
    /// None for vmlinux. An own build says it in its `*.mod` lists; a distribution's headers
    /// have none, so the installed modules do: the module kbuild names after a one-object
    /// unit (`fs/binfmt_misc.o` → `kernel/fs/binfmt_misc.ko`), else a module of several
    /// objects in the unit's directory or above whose symbols hold the unit's source file and
    /// functions better than vmlinux's do.
    pub fn module_of_unit(&self, unit: &str, orig: &Path) -> Result<Option<PathBuf>> {
        if self.tree.kind() == TreeKind::Build {
            return kbuild::module_of_unit(&self.tree, unit)
                .map(|m| self.module_ko(unit, &m))
                .transpose();
        }
        if let Some(p) = self.modules.find(unit) {
            return Ok(Some(p.to_path_buf()));
        }
        let dir = Path::new(unit)
            .parent()
            .map(|d| d.to_string_lossy().into_owned())
            .unwrap_or_default();
        let candidates = self.modules.around(&dir);
        if candidates.is_empty() {
            return Ok(None);
        }
        let bytes = fs::read(orig).with_context(|| format!("cannot read {}", orig.display()))?;
        let Some(want) = UnitSymbols::of(&bytes) else {
            return Ok(None);
        };
        let in_vmlinux = want.hits(&self.vmlinux);
        let mut best: Option<(usize, &Path)> = None;
        for (_, ko) in candidates {
            let Ok(b) = kofile::read(ko) else { continue };
            let hits = want.hits(&b);
            if hits > in_vmlinux && best.is_none_or(|(h, _)| hits > h) {
                best = Some((hits, ko));
            }
        }
        Ok(best.map(|(_, ko)| ko.to_path_buf()))
    }
}

/// A unit's source file name and the functions it defines, to recognise the unit in a linked
/// image or module.
struct UnitSymbols {
    file: String,
    locals: std::collections::HashSet<String>,
    globals: std::collections::HashSet<String>,
}

impl UnitSymbols {
    fn of(obj: &[u8]) -> Option<UnitSymbols> {
        use object::{Object as _, ObjectSymbol as _, SymbolKind};
        let f = object::File::parse(obj).ok()?;
        let mut u = UnitSymbols {
            file: String::new(),
            locals: Default::default(),
            globals: Default::default(),
        };
        for s in f.symbols() {
            let Ok(name) = s.name() else { continue };
            match s.kind() {
                SymbolKind::File if u.file.is_empty() => u.file = name.to_string(),
                SymbolKind::Text if !s.is_undefined() && !name.is_empty() => {
                    if s.is_global() {
                        u.globals.insert(name.to_string());
                    } else {
                        u.locals.insert(name.to_string());
                    }
                }
                _ => {}
            }
        }
        (!u.file.is_empty()).then_some(u)
    }

    /// How many of the unit's functions `image` defines: its globals anywhere, its statics in
    /// a symbol group of the unit's source file name.
    fn hits(&self, image: &[u8]) -> usize {
        use object::{Object as _, ObjectSymbol as _, SymbolKind};
        let Ok(f) = object::File::parse(image) else {
            return 0;
        };
        let mut in_file = false;
        let mut seen = std::collections::HashSet::new();
        for s in f.symbols() {
            let Ok(name) = s.name() else { continue };
            if s.kind() == SymbolKind::File {
                in_file = name == self.file;
                continue;
            }
            if s.is_undefined() || s.kind() != SymbolKind::Text {
                continue;
            }
            let found = if s.is_global() {
                self.globals.contains(name)
            } else {
                in_file && self.locals.contains(name)
            };
            if found {
                seen.insert(name);
            }
        }
        seen.len()
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
        let bytes = kofile::read(ko)?;
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
