//! The target kernel's symbols: its vmlinux symbol table (for `sympos` and to check that every
//! klp relocation resolves) and Module.symvers (which symbols the module loader can resolve).

use std::collections::{HashMap, HashSet};

use object::elf;
use object::read::elf::Sym;

use elfdiff::plan::External;

use crate::check::{MAX_OBJNAME, MAX_SYMNAME};
use crate::Error;

#[derive(Debug, Clone)]
struct TSym {
    name: String,
    addr: u64,
    local: bool,
    /// Index of the STT_FILE group this local symbol belongs to (None for globals).
    file_group: Option<usize>,
}

/// Symbols of the object being patched (vmlinux), in file order.
#[derive(Debug)]
pub struct TargetSymtab {
    pub label: String,
    syms: Vec<TSym>,
    by_name: HashMap<String, Vec<usize>>,
    /// (file name, indices of its local symbols)
    groups: Vec<(String, Vec<usize>)>,
}

impl TargetSymtab {
    /// vmlinux: kallsyms counts same-named symbols in address order.
    pub fn parse(label: &str, data: &[u8]) -> Result<Self, Error> {
        Self::parse_ordered(label, data, true)
    }

    /// A module `.ko`: the livepatch core walks a module's symbols in symbol-table order
    /// (addresses in a relocatable object are section offsets and say nothing).
    pub fn parse_module(label: &str, data: &[u8]) -> Result<Self, Error> {
        Self::parse_ordered(label, data, false)
    }

    fn parse_ordered(label: &str, data: &[u8], by_address: bool) -> Result<Self, Error> {
        let bad = |what: String| Error::Target {
            target: label.to_string(),
            what,
        };
        let crate::elf::Elf { endian, symtab, .. } = crate::elf::Elf::parse(data, &bad)?;
        if symtab.is_empty() {
            return Err(bad("has no symbol table (stripped?)".into()));
        }
        let mut syms = Vec::with_capacity(symtab.len());
        let mut groups: Vec<(String, Vec<usize>)> = Vec::new();
        for sym in symtab.iter() {
            let name = symtab
                .symbol_name(endian, sym)
                .map(|n| String::from_utf8_lossy(n).into_owned())
                .unwrap_or_default();
            match sym.st_type() {
                elf::STT_FILE => {
                    groups.push((name, Vec::new()));
                    continue;
                }
                elf::STT_SECTION => continue,
                _ => {}
            }
            if name.is_empty() || sym.st_shndx(endian) == elf::SHN_UNDEF {
                continue;
            }
            let local = sym.st_bind() == elf::STB_LOCAL;
            let idx = syms.len();
            let file_group = if local && !groups.is_empty() {
                let g = groups.len() - 1;
                groups[g].1.push(idx);
                Some(g)
            } else {
                None
            };
            syms.push(TSym {
                name,
                addr: sym.st_value(endian),
                local,
                file_group,
            });
        }
        let mut by_name: HashMap<String, Vec<usize>> = HashMap::new();
        for (i, s) in syms.iter().enumerate() {
            by_name.entry(s.name.clone()).or_default().push(i);
        }
        // sympos counts same-named symbols in kallsyms order.
        if by_address {
            for v in by_name.values_mut() {
                v.sort_by_key(|&i| (syms[i].addr, i));
            }
        }
        Ok(TargetSymtab {
            label: label.to_string(),
            syms,
            by_name,
            groups,
        })
    }

    /// The file group that holds the original object's locals: same file name, containing all
    /// (or, failing that, most) of the given local names.
    fn find_group(&self, file: &str, locals: &[String]) -> Result<usize, Error> {
        let mut best: Vec<(usize, usize)> = Vec::new();
        for (g, (name, members)) in self.groups.iter().enumerate() {
            if name != file {
                continue;
            }
            let names: HashSet<&str> = members
                .iter()
                .map(|&i| self.syms[i].name.as_str())
                .collect();
            let hits = locals.iter().filter(|l| names.contains(l.as_str())).count();
            best.push((hits, g));
        }
        best.sort_by(|a, b| b.cmp(a));
        match best.as_slice() {
            [] => Err(Error::Target {
                target: self.label.clone(),
                what: format!("no symbols of source file {file} (is this the kernel the objects were built for?)"),
            }),
            [(hits, _), (hits2, _), ..] if hits == hits2 => Err(Error::Target {
                target: self.label.clone(),
                what: format!("several files named {file} have the same local symbols; cannot tell which one the patch changes"),
            }),
            [(_, g), ..] => Ok(*g),
        }
    }

    /// Whether a global symbol of this name is defined here.
    pub fn defines_global(&self, name: &str) -> bool {
        self.by_name
            .get(name)
            .is_some_and(|v| v.iter().any(|&i| !self.syms[i].local))
    }

    /// sympos of symbol index `i`: 0 when its name is unique, else its 1-based rank.
    fn sympos(&self, i: usize) -> u64 {
        let all = &self.by_name[&self.syms[i].name];
        if all.len() == 1 {
            0
        } else {
            all.iter().position(|&j| j == i).expect("member") as u64 + 1
        }
    }

    /// Resolve a reference to a symbol of the target; returns its sympos.
    pub fn locate(
        &self,
        ext: &External,
        file: Option<&str>,
        locals: &[String],
    ) -> Result<u64, Error> {
        let missing = || Error::MissingSymbol {
            target: self.label.clone(),
            symbol: ext.name.clone(),
            local: ext.local,
        };
        let cands = self.by_name.get(&ext.name).ok_or_else(missing)?;
        if ext.local {
            let file = file.ok_or_else(|| Error::Target {
                target: self.label.clone(),
                what: format!(
                    "local symbol {} referenced but the object has no STT_FILE symbol",
                    ext.name
                ),
            })?;
            let g = self.find_group(file, locals)?;
            let i = cands
                .iter()
                .copied()
                .find(|&i| self.syms[i].file_group == Some(g))
                .ok_or_else(missing)?;
            Ok(self.sympos(i))
        } else {
            let i = cands
                .iter()
                .copied()
                .find(|&i| !self.syms[i].local)
                .ok_or_else(missing)?;
            Ok(self.sympos(i))
        }
    }

    /// All (name, sympos) pairs, for checks.
    pub fn count(&self, name: &str) -> usize {
        self.by_name.get(name).map_or(0, Vec::len)
    }
}

/// Exported symbols from Module.symvers (`crc name module export-type [namespace]`).
#[derive(Debug, Default)]
pub struct Symvers {
    exported: HashMap<String, String>,
}

impl Symvers {
    pub fn parse(label: &str, text: &str) -> Result<Self, Error> {
        let mut exported = HashMap::new();
        for (n, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let f: Vec<&str> = line.split('\t').collect();
            if f.len() < 4 {
                return Err(Error::Target {
                    target: label.to_string(),
                    what: format!(
                        "line {}: not a Module.symvers line (crc, name, module, export type)",
                        n + 1
                    ),
                });
            }
            exported.insert(f[1].to_string(), f[2].to_string());
        }
        Ok(Symvers { exported })
    }
    /// Whether `name` is exported by vmlinux (or by a module; then the module's name).
    pub fn exporter(&self, name: &str) -> Option<&str> {
        self.exported.get(name).map(String::as_str)
    }
    pub fn len(&self) -> usize {
        self.exported.len()
    }
    pub fn is_empty(&self) -> bool {
        self.exported.is_empty()
    }
}

/// How one external reference is bound in the livepatch module.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub enum Binding {
    /// An exported symbol: an ordinary relocation the module loader resolves.
    Plain { name: String },
    /// A klp relocation through `.klp.sym.<objname>.<name>,<sympos>`.
    Klp {
        objname: String,
        name: String,
        sympos: u64,
    },
}

impl Binding {
    /// The symbol name used in the livepatch object.
    pub fn symbol_name(&self) -> String {
        match self {
            Binding::Plain { name } => name.clone(),
            Binding::Klp {
                objname,
                name,
                sympos,
            } => format!(".klp.sym.{objname}.{name},{sympos}"),
        }
    }
}

/// Bind the externals of a plan for code that lives in module `modname`: references to the
/// module's own symbols become klp relocations against it (sympos from the module's `.ko`),
/// including globals another object of the same module defines — exported or not, since the
/// module may be loaded after the livepatch; other undefined ones are the kernel's (exported:
/// ordinary; otherwise klp against vmlinux).
pub fn bind_externals_module(
    plan: &elfdiff::Plan,
    modname: &str,
    module: &TargetSymtab,
    vmlinux: &TargetSymtab,
    symvers: &Symvers,
) -> Result<Vec<Binding>, Error> {
    plan.externals
        .iter()
        .map(|ext| {
            let (objname, table) = if ext.undefined {
                if module.defines_global(&ext.name) {
                    (modname, module)
                } else if symvers.exporter(&ext.name).is_some() {
                    return Ok(Binding::Plain {
                        name: ext.name.clone(),
                    });
                } else {
                    ("vmlinux", vmlinux)
                }
            } else {
                (modname, module)
            };
            let sympos = table.locate(ext, plan.file_name.as_deref(), &plan.orig_locals)?;
            klp_binding(objname, &ext.name, sympos)
        })
        .collect()
}

/// A klp binding, refused when the kernel could not parse its symbol name.
fn klp_binding(objname: &str, name: &str, sympos: u64) -> Result<Binding, Error> {
    if objname.len() > MAX_OBJNAME || name.len() > MAX_SYMNAME {
        return Err(Error::NameTooLong {
            name: format!("{objname}.{name}"),
        });
    }
    Ok(Binding::Klp {
        objname: objname.to_string(),
        name: name.to_string(),
        sympos,
    })
}

/// Decide how each external of a plan is bound; every klp symbol is checked against the
/// target's symbol table.
pub fn bind_externals(
    plan: &elfdiff::Plan,
    objname: &str,
    symtab: &TargetSymtab,
    symvers: &Symvers,
) -> Result<Vec<Binding>, Error> {
    plan.externals
        .iter()
        .map(|ext| {
            if !ext.local && symvers.exporter(&ext.name).is_some() {
                return Ok(Binding::Plain {
                    name: ext.name.clone(),
                });
            }
            let sympos = symtab.locate(ext, plan.file_name.as_deref(), &plan.orig_locals)?;
            klp_binding(objname, &ext.name, sympos)
        })
        .collect()
}

/// Jump labels and static calls whose key lives in a module. The kernel sets up a livepatch
/// module's `__jump_table` and `.static_call_sites` entries as the module loads; klp
/// relocations against vmlinux are applied before that, but those against other modules only
/// when the livepatch is enabled or that module arrives, so such an entry would name an
/// unrelocated key. `bindings` are in `plan.externals` order.
pub fn module_key_refusals(plan: &elfdiff::Plan, bindings: &[Binding]) -> Vec<elfdiff::Refusal> {
    use elfdiff::plan::PlanTarget;
    let in_module = |i: usize| match bindings.get(i) {
        Some(Binding::Klp { objname, .. }) if objname != "vmlinux" => Some(objname.as_str()),
        _ => None,
    };
    let mut found: Vec<(usize, &str)> = Vec::new();
    for sec in &plan.sections {
        if sec.name != "__jump_table" && sec.name != ".static_call_sites" {
            continue;
        }
        for r in &sec.relocs {
            if let PlanTarget::External(i) = r.target {
                if in_module(i).is_some() && !found.contains(&(i, sec.name.as_str())) {
                    found.push((i, sec.name.as_str()));
                }
            }
        }
    }
    // On targets where objtool regenerates `.static_call_sites` for the linked livepatch, the
    // sites are not in the plan: the code's references to the key or trampoline tell.
    for (i, e) in plan.externals.iter().enumerate() {
        if (e.name.starts_with("__SCK__") || e.name.starts_with("__SCT__"))
            && in_module(i).is_some()
            && !found.iter().any(|(j, _)| *j == i)
        {
            found.push((i, ".static_call_sites"));
        }
    }
    found
        .into_iter()
        .map(|(i, section)| {
            let name = &plan.externals[i].name;
            let module = in_module(i).unwrap_or_default();
            let what = if section == "__jump_table" {
                "jump label (static key)"
            } else {
                "static call"
            };
            elfdiff::Refusal {
                key: format!("refuse.module-static-key.{name}"),
                symbol: name.clone(),
                section: section.to_string(),
                reason: format!(
                    "the new code uses a {what} whose key {name} lives in module {module}; the kernel sets up the livepatch's {section} entries before it resolves references to {module}"
                ),
                hint: "in the patched function test the key with static_key_enabled() (a plain load) instead of static_branch_*(), or call the static call's current target directly; or move the change out of the code that uses the key".into(),
            }
        })
        .collect()
}
