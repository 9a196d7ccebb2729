//! `klpgen list`: the livepatches of the running kernel, from sysfs
//! (`/sys/kernel/livepatch/<patch>/{enabled,transition,replace,stack_order}`,
//! `<patch>/<object>/patched`, `<patch>/<object>/<function,sympos>/`), and for each the module
//! file it was loaded from and which klpgen build produced it: the file is found by name under
//! the modules directories (`/lib/modules/<release>` by default, `--modules DIR`), accepted only
//! when its GNU build-id is the one the kernel shows for the loaded module
//! (`/sys/module/<name>/notes/.note.gnu.build-id`), and read for the records `klpgen build`
//! writes (`.klpgen.funcs`, `.klpgen.syms`: `patchgen::manifest`), which are compared with what
//! sysfs says the patch replaces. Text or JSON (schema in docs/list.md).

use std::collections::BTreeSet;
use std::fs;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use object::{Object as _, ObjectSection as _};
use patchgen::manifest::{self, Origin, Record};
use serde::Serialize;

use crate::Format;

#[derive(clap::Args, Debug)]
pub struct ListArgs {
    /// Directory to look for the livepatch modules' files in (searched recursively, symlinks
    /// not followed; repeatable); default: /lib/modules/<running release>.
    #[arg(long, value_name = "DIR")]
    pub modules: Vec<PathBuf>,
    /// Output format (JSON schema: docs/list.md).
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
    /// Where sysfs is mounted (for tests: a copy of another machine's tree).
    #[arg(long, value_name = "DIR", default_value = "/sys", hide = true)]
    pub sysfs: PathBuf,
}

/// Schema identifier of the JSON document; fields are only ever added within a version.
pub const SCHEMA: &str = "klpgen-list/1";

/// The whole listing.
#[derive(Serialize, Debug)]
pub struct Listing {
    pub schema: &'static str,
    /// The directories searched for module files.
    pub modules_dirs: Vec<String>,
    pub livepatches: Vec<Livepatch>,
}

/// One livepatch the kernel has (a directory of /sys/kernel/livepatch).
#[derive(Serialize, Debug)]
pub struct Livepatch {
    /// The patch's name: its module's name.
    pub name: String,
    pub enabled: bool,
    /// A transition (patching or unpatching) is still going on.
    pub transition: bool,
    /// Atomic replace (`replace`, Linux 6.11+); null where the kernel does not say.
    pub replace: Option<bool>,
    /// Position in the stack of patches (`stack_order`, Linux 6.13+).
    pub stack_order: Option<u64>,
    pub objects: Vec<PatchedObject>,
    pub module: Module,
}

/// An object (vmlinux or a module) the livepatch patches.
#[derive(Serialize, Debug)]
pub struct PatchedObject {
    pub name: String,
    /// Whether the object is patched now (`patched`, Linux 6.1+): a module object is patched
    /// only while that module is loaded.
    pub patched: Option<bool>,
    pub functions: Vec<Function>,
}

/// A replaced function, as sysfs names it: `<name>,<sympos>`, sympos 1 for a unique name.
#[derive(Serialize, Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Function {
    pub name: String,
    pub sympos: u64,
}

/// The livepatch's module: what the kernel shows of it, and its file.
#[derive(Serialize, Debug)]
pub struct Module {
    /// `/sys/module/<name>/initstate` (`live`, `coming`, `going`).
    pub state: Option<String>,
    /// `/sys/module/<name>/taint` (`K` for a livepatch).
    pub taint: Option<String>,
    /// GNU build-id of the loaded module (hex), from its notes in sysfs.
    pub build_id: Option<String>,
    /// `verified` (a file with the loaded module's build-id), `unverified` (a file of that
    /// name; the kernel shows no build-id to compare), `ambiguous` (several such files),
    /// `other-build` (files of that name, none with its build-id), `compressed` (only
    /// compressed files, not read), `not-found`.
    pub file_status: &'static str,
    pub file: Option<String>,
    /// Files of the module's name that were not taken (another build-id, compressed).
    pub other_files: Vec<String>,
    /// sha256 of the file: what `klpgen build --report` records as `module.sha256`.
    pub sha256: Option<String>,
    /// modinfo `description` (klpgen writes the patches' file names there).
    pub description: Option<String>,
    /// `klpgen` when the file has klpgen's records, `other` when it has none; null without a file.
    pub built_by: Option<&'static str>,
    /// klpgen's records, for a file klpgen built.
    pub klpgen: Option<KlpgenRecords>,
}

/// What `klpgen build` recorded in the module, and whether it agrees with sysfs.
#[derive(Serialize, Debug)]
pub struct KlpgenRecords {
    /// `.klpgen.funcs`: the functions it replaces.
    pub functions: Vec<RecordOut>,
    /// `.klpgen.syms`: the klp symbols it binds.
    pub symbols: Vec<RecordOut>,
    /// Whether the recorded functions are exactly those sysfs lists.
    pub matches_sysfs: bool,
    /// How they differ (`sysfs only: ...`, `records only: ...`).
    pub differences: Vec<String>,
}

/// One record of `patchgen::manifest`.
#[derive(Serialize, Debug)]
pub struct RecordOut {
    pub object: String,
    pub name: String,
    /// As recorded: 0 for a unique name.
    pub sympos: u64,
    /// `global`, `local <file>` (a static of that source file) or `unknown`.
    pub origin: String,
}

impl From<&Record> for RecordOut {
    fn from(r: &Record) -> Self {
        RecordOut {
            object: r.objname.clone(),
            name: r.name.clone(),
            sympos: r.sympos,
            origin: match &r.origin {
                Origin::Global => "global".into(),
                Origin::Local(f) => format!("local {f}"),
                Origin::Unknown => "unknown".into(),
            },
        }
    }
}

pub fn run(args: ListArgs) -> Result<()> {
    let dirs = if args.modules.is_empty() {
        vec![default_modules_dir()?]
    } else {
        args.modules.clone()
    };
    for d in &dirs {
        if !d.is_dir() && !args.modules.is_empty() {
            bail!("--modules {}: not a directory", d.display());
        }
    }
    let listing = list(&args.sysfs, &dirs)?;
    match args.format {
        Format::Text => print!("{}", text(&listing)),
        Format::Json => println!("{}", serde_json::to_string_pretty(&listing)?),
    }
    Ok(())
}

/// `/lib/modules/<release>` of the running kernel.
fn default_modules_dir() -> Result<PathBuf> {
    let rel = fs::read_to_string("/proc/sys/kernel/osrelease")
        .context("cannot read the running kernel's release (/proc/sys/kernel/osrelease)")?;
    Ok(Path::new("/lib/modules").join(rel.trim()))
}

/// Everything `klpgen list` says, from the sysfs tree at `sysfs` and module files under `dirs`.
pub fn list(sysfs: &Path, dirs: &[PathBuf]) -> Result<Listing> {
    let root = sysfs.join("kernel/livepatch");
    let entries = match fs::read_dir(&root) {
        Ok(e) => e,
        Err(e) if e.kind() == ErrorKind::NotFound => bail!(
            "{} does not exist: the running kernel has no livepatch support (CONFIG_LIVEPATCH), or sysfs is not mounted there",
            root.display()
        ),
        Err(e) => return Err(e).with_context(|| format!("cannot list {}", root.display())),
    };
    let mut names = Vec::new();
    for e in entries {
        let e = e.with_context(|| format!("cannot list {}", root.display()))?;
        if e.file_type()?.is_dir() {
            names.push(e.file_name().to_string_lossy().into_owned());
        }
    }
    names.sort();
    let index = ModuleFiles::scan(dirs)?;
    let mut livepatches = Vec::new();
    for name in names {
        // A patch disabled while we look goes away: then it is not listed.
        match livepatch(sysfs, &root.join(&name), &name, &index) {
            Ok(lp) => livepatches.push(lp),
            Err(_) if !root.join(&name).exists() => {}
            Err(e) => return Err(e),
        }
    }
    Ok(Listing {
        schema: SCHEMA,
        modules_dirs: dirs.iter().map(|d| d.display().to_string()).collect(),
        livepatches,
    })
}

/// A sysfs attribute's text, trimmed; `None` when the kernel does not have it.
fn attr(path: &Path) -> Result<Option<String>> {
    match fs::read_to_string(path) {
        Ok(s) => Ok(Some(s.trim().to_string())),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

/// A `0`/`1` attribute.
fn flag(path: &Path) -> Result<Option<bool>> {
    match attr(path)?.as_deref() {
        None => Ok(None),
        Some("1") => Ok(Some(true)),
        Some("0") => Ok(Some(false)),
        Some(other) => bail!("{}: expected 0 or 1, found {other:?}", path.display()),
    }
}

fn required_flag(path: &Path) -> Result<bool> {
    flag(path)?.with_context(|| format!("{} is missing", path.display()))
}

fn livepatch(sysfs: &Path, dir: &Path, name: &str, index: &ModuleFiles) -> Result<Livepatch> {
    let enabled = required_flag(&dir.join("enabled"))?;
    let transition = required_flag(&dir.join("transition"))?;
    let replace = flag(&dir.join("replace"))?;
    let stack_order = match attr(&dir.join("stack_order"))? {
        Some(s) => Some(
            s.parse()
                .with_context(|| format!("{}/stack_order: {s:?}", dir.display()))?,
        ),
        None => None,
    };
    let mut objects = Vec::new();
    for e in fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))? {
        let e = e?;
        if !e.file_type()?.is_dir() {
            continue;
        }
        let oname = e.file_name().to_string_lossy().into_owned();
        let mut functions = Vec::new();
        for f in fs::read_dir(e.path())? {
            let f = f?;
            if !f.file_type()?.is_dir() {
                continue;
            }
            let fname = f.file_name().to_string_lossy().into_owned();
            let (n, pos) = fname
                .rsplit_once(',')
                .and_then(|(n, p)| Some((n, p.parse().ok()?)))
                .with_context(|| {
                    format!(
                        "{}: a function directory is named <function,sympos>",
                        f.path().display()
                    )
                })?;
            functions.push(Function {
                name: n.to_string(),
                sympos: pos,
            });
        }
        functions.sort();
        objects.push(PatchedObject {
            patched: flag(&e.path().join("patched"))?,
            name: oname,
            functions,
        });
    }
    // vmlinux first, then the modules by name.
    objects.sort_by(|a, b| (a.name != "vmlinux", &a.name).cmp(&(b.name != "vmlinux", &b.name)));
    let module = module(sysfs, name, &objects, index)?;
    Ok(Livepatch {
        name: name.to_string(),
        enabled,
        transition,
        replace,
        stack_order,
        objects,
        module,
    })
}

/// The GNU build-id in a raw ELF note sequence (as `/sys/module/<m>/notes/*` holds them).
/// The words are in the byte order of the kernel that wrote them: this machine's when
/// `klpgen list` runs there, another's when a guest's sysfs is read (a big-endian s390x
/// guest on an x86-64 host); both orders are tried.
pub fn build_id_of_notes(data: &[u8]) -> Option<Vec<u8>> {
    build_id_in(data, u32::from_le_bytes).or_else(|| build_id_in(data, u32::from_be_bytes))
}

fn build_id_in(data: &[u8], read: fn([u8; 4]) -> u32) -> Option<Vec<u8>> {
    let word = |at: usize| -> Option<usize> {
        let b = data.get(at..at + 4)?;
        Some(read(b.try_into().ok()?) as usize)
    };
    let align = |n: usize| n.checked_add(3).map(|n| n & !3);
    let mut at = 0;
    while at + 12 <= data.len() {
        let (namesz, descsz, ty) = (word(at)?, word(at + 4)?, word(at + 8)?);
        let name_at = at + 12;
        let desc_at = name_at.checked_add(align(namesz)?)?;
        let end = desc_at.checked_add(align(descsz)?)?;
        let name = data.get(name_at..name_at + namesz)?;
        let desc = data.get(desc_at..desc_at.checked_add(descsz)?)?;
        if name == b"GNU\0" && ty == object::elf::NT_GNU_BUILD_ID as usize {
            return Some(desc.to_vec());
        }
        at = end;
    }
    None
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The files under the modules directories, by module name (`-` and `_` alike).
struct ModuleFiles {
    /// (module key, path, compressed)
    files: Vec<(String, PathBuf, bool)>,
}

const COMPRESSED: &[&str] = &[".ko.xz", ".ko.zst", ".ko.gz"];

impl ModuleFiles {
    /// Every `.ko` (and compressed `.ko.*`) below `dirs`; symlinks are not followed (a
    /// modules directory's `build` and `source` point at whole kernel trees). A missing
    /// default directory is no error: nothing is found there.
    fn scan(dirs: &[PathBuf]) -> Result<ModuleFiles> {
        let mut files = Vec::new();
        let mut stack: Vec<PathBuf> = dirs.iter().filter(|d| d.is_dir()).cloned().collect();
        while let Some(d) = stack.pop() {
            let entries =
                fs::read_dir(&d).with_context(|| format!("cannot list {}", d.display()))?;
            for e in entries {
                let e = e?;
                let ty = e.file_type()?;
                if ty.is_dir() {
                    stack.push(e.path());
                    continue;
                }
                if !ty.is_file() {
                    continue;
                }
                let name = e.file_name().to_string_lossy().into_owned();
                if let Some(stem) = name.strip_suffix(".ko") {
                    files.push((patchgen::check::module_key(stem), e.path(), false));
                } else if let Some(stem) = COMPRESSED.iter().find_map(|s| name.strip_suffix(s)) {
                    files.push((patchgen::check::module_key(stem), e.path(), true));
                }
            }
        }
        files.sort();
        Ok(ModuleFiles { files })
    }

    fn named(&self, module: &str) -> impl Iterator<Item = &(String, PathBuf, bool)> {
        let key = patchgen::check::module_key(module);
        self.files.iter().filter(move |(k, _, _)| *k == key)
    }
}

fn module(
    sysfs: &Path,
    name: &str,
    objects: &[PatchedObject],
    index: &ModuleFiles,
) -> Result<Module> {
    let dir = sysfs.join("module").join(name);
    let build_id = match fs::read(dir.join("notes/.note.gnu.build-id")) {
        Ok(b) => build_id_of_notes(&b),
        Err(e) if e.kind() == ErrorKind::NotFound => None,
        Err(e) => return Err(e).context(format!("cannot read {}/notes", dir.display())),
    };
    let mut m = Module {
        state: attr(&dir.join("initstate"))?,
        taint: attr(&dir.join("taint"))?,
        build_id: build_id.as_deref().map(hex),
        file_status: "not-found",
        file: None,
        other_files: Vec::new(),
        sha256: None,
        description: None,
        built_by: None,
        klpgen: None,
    };
    // Each plain file of the name, read for its build-id: the one the kernel shows is the
    // loaded module. Without a build-id to compare, a single file of the name is taken but
    // not called verified.
    let mut plain = Vec::new();
    for (_, path, compressed) in index.named(name) {
        if *compressed {
            m.other_files.push(path.display().to_string());
            continue;
        }
        let bytes = fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
        plain.push((path.clone(), bytes));
    }
    let any_compressed = !m.other_files.is_empty();
    let n_plain = plain.len();
    let (status, chosen) = match &build_id {
        Some(id) => {
            let mut hit = None;
            for (path, bytes) in plain {
                let theirs = object::File::parse(&*bytes)
                    .ok()
                    .and_then(|f| f.build_id().ok().flatten().map(<[u8]>::to_vec));
                if hit.is_none() && theirs.as_deref() == Some(id.as_slice()) {
                    hit = Some((path, bytes));
                } else {
                    m.other_files.push(path.display().to_string());
                }
            }
            match hit {
                Some(h) => ("verified", Some(h)),
                None if n_plain > 0 => ("other-build", None),
                None if any_compressed => ("compressed", None),
                None => ("not-found", None),
            }
        }
        None if plain.len() == 1 => ("unverified", plain.pop()),
        None => {
            m.other_files
                .extend(plain.iter().map(|(p, _)| p.display().to_string()));
            match plain.len() {
                0 if any_compressed => ("compressed", None),
                0 => ("not-found", None),
                _ => ("ambiguous", None),
            }
        }
    };
    m.file_status = status;
    let Some((path, bytes)) = chosen else {
        return Ok(m);
    };
    m.file = Some(path.display().to_string());
    m.sha256 = Some(crate::report::sha256_hex(&bytes));
    let file = object::File::parse(&*bytes)
        .with_context(|| format!("{} is not an ELF module", path.display()))?;
    m.description = crate::modinfo::values(&file, "description")
        .into_iter()
        .next();
    let section = |name: &str| -> Result<Option<Vec<Record>>> {
        let Some(s) = file.section_by_name(name) else {
            return Ok(None);
        };
        let data = s
            .data()
            .with_context(|| format!("{}: section {name}", path.display()))?;
        manifest::decode_records(data).map(Some).map_err(|(n, l)| {
            anyhow::anyhow!("{}: {name} line {n} is not a record: {l:?}", path.display())
        })
    };
    let funcs = section(manifest::FUNCS_SECTION)?;
    let syms = section(manifest::SYMS_SECTION)?;
    let Some(funcs) = funcs else {
        m.built_by = Some("other");
        return Ok(m);
    };
    m.built_by = Some("klpgen");
    let differences = compare_with_sysfs(&funcs, objects);
    m.klpgen = Some(KlpgenRecords {
        functions: funcs.iter().map(RecordOut::from).collect(),
        symbols: syms
            .unwrap_or_default()
            .iter()
            .map(RecordOut::from)
            .collect(),
        matches_sysfs: differences.is_empty(),
        differences,
    });
    Ok(m)
}

/// The recorded functions against sysfs's `<object>/<function,sympos>` (where a unique name,
/// recorded with sympos 0, is shown as 1).
fn compare_with_sysfs(funcs: &[Record], objects: &[PatchedObject]) -> Vec<String> {
    let shown = |o: &str, f: &str, p: u64| format!("{o} {f},{p}");
    let recorded: BTreeSet<String> = funcs
        .iter()
        .map(|r| shown(&r.objname, &r.name, r.sympos.max(1)))
        .collect();
    let sysfs: BTreeSet<String> = objects
        .iter()
        .flat_map(|o| {
            o.functions
                .iter()
                .map(|f| shown(&o.name, &f.name, f.sympos))
        })
        .collect();
    let mut out = Vec::new();
    let only = |a: &BTreeSet<String>, b: &BTreeSet<String>| {
        a.difference(b).cloned().collect::<Vec<_>>().join(", ")
    };
    if !sysfs.is_subset(&recorded) {
        out.push(format!("sysfs only: {}", only(&sysfs, &recorded)));
    }
    if !recorded.is_subset(&sysfs) {
        out.push(format!("records only: {}", only(&recorded, &sysfs)));
    }
    out
}

/// The text listing: a paragraph per livepatch.
pub fn text(l: &Listing) -> String {
    if l.livepatches.is_empty() {
        return "no livepatches loaded\n".to_string();
    }
    let mut s = String::new();
    for (i, lp) in l.livepatches.iter().enumerate() {
        if i > 0 {
            s.push('\n');
        }
        let mut state = vec![
            if lp.enabled { "enabled" } else { "disabled" }.to_string(),
            if lp.transition {
                "in transition"
            } else {
                "no transition"
            }
            .to_string(),
        ];
        match lp.replace {
            Some(true) => state.push("replace".into()),
            Some(false) => state.push("stacked (no replace)".into()),
            None => {}
        }
        if let Some(n) = lp.stack_order {
            state.push(format!("stack order {n}"));
        }
        s.push_str(&format!("{}: {}\n", lp.name, state.join(", ")));
        for o in &lp.objects {
            let patched = match o.patched {
                Some(true) => " (patched)",
                Some(false) => " (not patched: not loaded)",
                None => "",
            };
            let funcs: Vec<String> = o
                .functions
                .iter()
                .map(|f| {
                    if f.sympos > 1 {
                        format!("{},{}", f.name, f.sympos)
                    } else {
                        f.name.clone()
                    }
                })
                .collect();
            s.push_str(&format!("  {}{patched}: {}\n", o.name, funcs.join(" ")));
        }
        let m = &lp.module;
        let id = m
            .build_id
            .as_deref()
            .map(|b| format!("build-id {b}"))
            .unwrap_or_else(|| "no build-id shown".into());
        match (&m.file, m.file_status) {
            (Some(f), "verified") => s.push_str(&format!("  module file: {f} ({id}, matches)\n")),
            (Some(f), _) => s.push_str(&format!(
                "  module file: {f} (unverified: the kernel shows no build-id)\n"
            )),
            (None, status) => {
                let why = match status {
                    "other-build" => {
                        format!("none with the loaded {id}: {}", m.other_files.join(", "))
                    }
                    "compressed" => format!("compressed, not read: {}", m.other_files.join(", ")),
                    "ambiguous" => format!(
                        "several, and no build-id to tell them apart: {}",
                        m.other_files.join(", ")
                    ),
                    _ => format!(
                        "no {}.ko under {} (give --modules DIR)",
                        lp.name.replace('_', "-"),
                        l.modules_dirs.join(", ")
                    ),
                };
                s.push_str(&format!("  module file: {why}\n"));
            }
        }
        match (m.built_by, &m.klpgen) {
            (Some("klpgen"), Some(k)) => {
                s.push_str(&format!(
                    "  built by klpgen: {}\n    sha256 {}\n",
                    m.description.as_deref().unwrap_or("(no description)"),
                    m.sha256.as_deref().unwrap_or("?")
                ));
                let replaced: Vec<String> = k
                    .functions
                    .iter()
                    .map(|r| format!("{} {} ({})", r.object, r.name, r.origin))
                    .collect();
                s.push_str(&format!("    replaces: {}\n", replaced.join(", ")));
                if !k.symbols.is_empty() {
                    let syms: Vec<String> = k
                        .symbols
                        .iter()
                        .map(|r| format!("{}.{},{}", r.object, r.name, r.sympos))
                        .collect();
                    s.push_str(&format!("    klp symbols: {}\n", syms.join(" ")));
                }
                for d in &k.differences {
                    s.push_str(&format!("    warning: records and sysfs differ: {d}\n"));
                }
            }
            (Some(_), _) => s.push_str("  not built by klpgen (no .klpgen.funcs records)\n"),
            (None, _) => {}
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_ids_from_raw_notes() {
        // Either byte order: a guest of another machine writes its own.
        for word in [u32::to_le_bytes, u32::to_be_bytes] {
            let mut notes = Vec::new();
            // Another note first (name "Linux", padded to 8), then the GNU build-id.
            for (name, ty, desc) in [
                (&b"Linux\0"[..], 6u32, &b"xy"[..]),
                (&b"GNU\0"[..], 3, &[0xab, 0xcd, 0x01][..]),
            ] {
                notes.extend(word(name.len() as u32));
                notes.extend(word(desc.len() as u32));
                notes.extend(word(ty));
                notes.extend(name);
                notes.resize(notes.len().div_ceil(4) * 4, 0);
                notes.extend(desc);
                notes.resize(notes.len().div_ceil(4) * 4, 0);
            }
            assert_eq!(build_id_of_notes(&notes), Some(vec![0xab, 0xcd, 0x01]));
        }
        let notes: Vec<u8> = [6u32, 2, 6].iter().flat_map(|w| w.to_le_bytes()).collect();
        assert_eq!(build_id_of_notes(&notes), None);
        assert_eq!(build_id_of_notes(&[]), None);
        assert_eq!(build_id_of_notes(&[0xff; 16]), None);
    }

    #[test]
    fn records_are_compared_with_sysfs_positions() {
        let rec = |o: &str, n: &str, p| Record {
            objname: o.into(),
            name: n.into(),
            sympos: p,
            origin: Origin::Global,
        };
        let objects = vec![PatchedObject {
            name: "vmlinux".into(),
            patched: Some(true),
            functions: vec![
                Function {
                    name: "a".into(),
                    sympos: 1,
                },
                Function {
                    name: "b".into(),
                    sympos: 2,
                },
            ],
        }];
        assert!(
            compare_with_sysfs(&[rec("vmlinux", "a", 0), rec("vmlinux", "b", 2)], &objects)
                .is_empty()
        );
        let d = compare_with_sysfs(&[rec("vmlinux", "a", 0), rec("ext4", "c", 0)], &objects);
        assert_eq!(
            d,
            ["sysfs only: vmlinux b,2", "records only: ext4 c,1"],
            "{d:?}"
        );
    }
}
