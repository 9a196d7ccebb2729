//! The static `#include` graph of a configuration's units, and the query "which units may
//! include this file". Each file's directives (`directives.rs`, cached by path, size and
//! modification time) are evaluated over the configuration; an include is resolved as the
//! compiler would, but to *every* match: relative to the including file (quoted), in every
//! search directory of the unit (so `#include_next` and the order of `-I` need no care), and a
//! macro include to every file some `#define` of that macro names. Everything a unit could
//! include is an edge, so the answer is a superset of what the preprocessor does.
//!
//! Search directories shared by most units (kbuild's standard ones) resolve into one graph;
//! the directories only some units have (a Makefile's `ccflags-y += -I...`, kbuild's own
//! `-I$(srctree)/$(src) -I$(obj)`) add edges for those units alone, so `security/selinux`'s
//! `-I security/selinux/include` makes its units reach `security/selinux/include/*.h` and
//! nobody else's. A file with a macro include no `#define` explains is opaque: every unit that
//! reaches it may include anything. By convention the trace headers' own
//! `#include TRACE_INCLUDE(TRACE_INCLUDE_FILE)` (under `include/trace/`) re-includes the trace
//! header that included them, which is already reached, so it adds nothing.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};

use super::cmdline::{normalize, Compile};
use super::directives::{self, Assumptions, Dir, Tri};

/// A file's directives as last read, with what identifies that version of the file.
#[derive(Clone, serde::Serialize, serde::Deserialize)]
pub struct Parsed {
    pub size: u64,
    pub mtime_ns: i128,
    pub dirs: Vec<Dir>,
}

/// Directives by file, reusable across runs: an entry is used only while the file's size and
/// time are the same.
#[derive(Default, serde::Serialize, serde::Deserialize)]
pub struct ParseCache {
    pub files: HashMap<PathBuf, Parsed>,
    /// Files read (not taken from the cache) in this run.
    #[serde(skip)]
    pub read: usize,
}

impl ParseCache {
    fn get(&mut self, path: &Path) -> Option<&Parsed> {
        let meta = fs::metadata(path).ok()?;
        if !meta.is_file() {
            return None;
        }
        let mtime_ns = mtime_ns(&meta);
        let fresh = self
            .files
            .get(path)
            .is_some_and(|p| p.size == meta.len() && p.mtime_ns == mtime_ns);
        if !fresh {
            let bytes = fs::read(path).ok()?;
            let dirs = directives::directives(&String::from_utf8_lossy(&bytes));
            self.read += 1;
            self.files.insert(
                path.to_path_buf(),
                Parsed {
                    size: meta.len(),
                    mtime_ns,
                    dirs,
                },
            );
        }
        self.files.get(path)
    }
}

/// A file's modification time in nanoseconds since the epoch.
pub fn mtime_ns(meta: &fs::Metadata) -> i128 {
    use std::os::unix::fs::MetadataExt;
    i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec())
}

/// Directory listings, read once: whether a file exists is a hash lookup.
#[derive(Default)]
struct Listings {
    dirs: HashMap<OsString, Option<HashSet<OsString>>>,
}

impl Listings {
    /// Regular files (and links to them) of `dir`.
    fn files(&mut self, dir: &Path) -> Option<&HashSet<OsString>> {
        let key = dir.as_os_str();
        if !self.dirs.contains_key(key) {
            let set = fs::read_dir(dir).ok().map(|rd| {
                rd.flatten()
                    .filter(|e| {
                        e.file_type()
                            .is_ok_and(|t| t.is_file() || (t.is_symlink() && e.path().is_file()))
                    })
                    .map(|e| e.file_name())
                    .collect()
            });
            self.dirs.insert(key.to_os_string(), set);
        }
        self.dirs.get(key).and_then(Option::as_ref)
    }

    fn exists(&mut self, path: &Path) -> bool {
        match (path.parent(), path.file_name()) {
            (Some(d), Some(n)) => self.files(d).is_some_and(|s| s.contains(n)),
            _ => false,
        }
    }
}

/// `dir/name`, normalized only when `name` needs it (the directories already are).
fn join(dir: &Path, name: &str) -> PathBuf {
    if name
        .split('/')
        .any(|c| c.is_empty() || c == "." || c == "..")
    {
        normalize(&dir.join(name))
    } else {
        dir.join(name)
    }
}

/// An include after conditional evaluation.
#[derive(Clone)]
struct Active {
    quoted: bool,
    name: String,
}

/// What a file includes in branches the configuration does not rule out.
#[derive(Default)]
struct Includes {
    files: Vec<Active>,
    /// `#include MACRO`: the macro's text.
    macros: Vec<String>,
}

/// The graph over every file the units can reach.
pub struct Graph {
    /// File index by path.
    index: HashMap<OsString, usize>,
    paths: Vec<PathBuf>,
    /// Edges every unit has: relative to the includer, and through the shared directories.
    edges: Vec<Vec<usize>>,
    /// Edges through a directory only some units search: by directory, (from, to).
    extra: HashMap<PathBuf, Vec<(usize, usize)>>,
    /// Files whose includes cannot be known (an unexplained macro include).
    opaque: Vec<usize>,
    /// Units: name, roots (source and forced includes), their unshared search directories,
    /// and whether their command could not be read.
    units: Vec<UnitNode>,
}

struct UnitNode {
    name: String,
    roots: Vec<usize>,
    own_dirs: Vec<PathBuf>,
    opaque: bool,
}

/// What building the graph took.
#[derive(Debug, Default, Clone, Copy)]
pub struct GraphStats {
    pub files: usize,
    pub read: usize,
}

impl Graph {
    /// The graph of `units` under the configuration `config` (`CONFIG_X` → value).
    pub fn build(
        units: &[Compile],
        config: &HashMap<String, String>,
        cache: &mut ParseCache,
    ) -> (Graph, GraphStats) {
        let read_before = cache.read;
        // Directories at least half the units search are shared; an edge through one that a
        // unit lacks is one more (harmless) over-approximation.
        let mut count: HashMap<&Path, usize> = HashMap::new();
        for u in units {
            let mut seen = HashSet::new();
            for d in &u.search {
                if seen.insert(d.as_path()) {
                    *count.entry(d.as_path()).or_default() += 1;
                }
            }
        }
        let mut shared: Vec<PathBuf> = count
            .iter()
            .filter(|(_, &n)| 2 * n >= units.len())
            .map(|(d, _)| d.to_path_buf())
            .collect();
        shared.sort();
        let shared_set: HashSet<PathBuf> = shared.iter().cloned().collect();

        let mut b = Builder {
            index: HashMap::new(),
            paths: Vec::new(),
            listings: Listings::default(),
            cache,
            shared,
            angled: HashMap::new(),
            relative: HashMap::new(),
            own: HashMap::new(),
        };
        let mut nodes = Vec::new();
        let mut own_all: BTreeSet<PathBuf> = BTreeSet::new();
        let mut redefined: HashSet<String> = HashSet::new();
        for u in units {
            let roots: Vec<usize> = std::iter::once(&u.source)
                .chain(&u.forced)
                .map(|p| b.file(&normalize(p)))
                .collect();
            let own_dirs: Vec<PathBuf> = u
                .search
                .iter()
                .filter(|d| !shared_set.contains(d.as_path()))
                .cloned()
                .collect();
            own_all.extend(own_dirs.iter().cloned());
            redefined.extend(u.config_macros.iter().cloned());
            // A source or forced include that does not exist yet (generated during the build,
            // such as the vDSO's image) cannot be read: the unit may include anything.
            let unreadable = std::iter::once(&u.source)
                .chain(&u.forced)
                .any(|p| !p.is_file());
            nodes.push(UnitNode {
                name: u.unit.clone(),
                roots,
                own_dirs,
                opaque: u.opaque || unreadable,
            });
        }
        drop(shared_set);
        let own_index = OwnDirs::new(&own_all);

        // Rounds until nothing changes: each evaluates every file known with the CONFIG_
        // macros some file redefines (unknown from then on) and the macros naming files, and
        // adds the files it reaches. A later round only happens when a redefinition or a
        // macro definition turned up.
        let mut macro_values: HashMap<String, Vec<(bool, String)>> = HashMap::new();
        let mut edges: Vec<Vec<usize>>;
        let mut extra: HashMap<PathBuf, Vec<(usize, usize)>>;
        let mut opaque: Vec<usize>;
        loop {
            let (redefined_before, macros_before) = (redefined.len(), macro_values.len());
            edges = Vec::new();
            extra = HashMap::new();
            opaque = Vec::new();
            let mut f = 0;
            while f < b.paths.len() {
                let path = b.paths[f].clone();
                let dirs = b
                    .cache
                    .get(&path)
                    .map(|p| p.dirs.clone())
                    .unwrap_or_default();
                for d in &dirs {
                    match d {
                        Dir::Define(n, v) => {
                            if n.starts_with("CONFIG_") {
                                redefined.insert(n.clone());
                            }
                            if let Some(t) = include_target(v) {
                                let e = macro_values.entry(n.clone()).or_default();
                                if !e.contains(&t) {
                                    e.push(t);
                                }
                            }
                        }
                        Dir::Undef(n) if n.starts_with("CONFIG_") => {
                            redefined.insert(n.clone());
                        }
                        _ => {}
                    }
                }
                let a = Assumptions {
                    config,
                    redefined: &redefined,
                };
                let inc = evaluate(&dirs, &a);
                let mut out: Vec<usize> = Vec::new();
                let mut add = |b: &mut Builder<'_>, i: &Active, out: &mut Vec<usize>| -> bool {
                    let r = b.resolve(&path, i);
                    let mut found = !r.is_empty();
                    out.extend(r);
                    for (d, t) in b.resolve_own(i, &own_index) {
                        found = true;
                        extra.entry(d).or_default().push((f, t));
                    }
                    found
                };
                for i in &inc.files {
                    add(&mut b, i, &mut out);
                }
                let in_trace = path.to_string_lossy().contains("/include/trace/");
                for m in &inc.macros {
                    let mut targets: Vec<Active> = macro_values
                        .get(m.as_str())
                        .cloned()
                        .unwrap_or_default()
                        .into_iter()
                        .map(|(quoted, name)| Active { quoted, name })
                        .collect();
                    if let Some(name) = config_string(config, m) {
                        targets.push(Active { quoted: true, name });
                    }
                    let mut explained = false;
                    for t in &targets {
                        explained |= add(&mut b, t, &mut out);
                    }
                    // `TRACE_INCLUDE(TRACE_INCLUDE_FILE)` and the like re-include the trace
                    // header that included this file (see the module doc).
                    if !(explained || (in_trace && m.contains('('))) {
                        opaque.push(f);
                    }
                }
                out.sort_unstable();
                out.dedup();
                edges.push(out);
                f += 1;
            }
            if redefined.len() == redefined_before && macro_values.len() == macros_before {
                break;
            }
        }
        opaque.sort_unstable();
        opaque.dedup();
        let stats = GraphStats {
            files: b.paths.len(),
            read: b.cache.read - read_before,
        };
        (
            Graph {
                index: b.index,
                paths: b.paths,
                edges,
                extra,
                opaque,
                units: nodes,
            },
            stats,
        )
    }

    /// The units that may include any of `files` (absolute paths), sorted.
    pub fn units_including(&self, files: &[PathBuf]) -> Vec<String> {
        let targets: Vec<usize> = files
            .iter()
            .filter_map(|f| self.index.get(normalize(f).as_os_str()).copied())
            .chain(self.opaque.iter().copied())
            .collect();
        let mut rev: Vec<Vec<usize>> = vec![Vec::new(); self.paths.len()];
        for (from, tos) in self.edges.iter().enumerate() {
            for &t in tos {
                rev[t].push(from);
            }
        }
        let reach = |extra: &[&Vec<(usize, usize)>]| -> Vec<bool> {
            let mut extra_rev: HashMap<usize, Vec<usize>> = HashMap::new();
            for list in extra {
                for &(from, to) in list.iter() {
                    extra_rev.entry(to).or_default().push(from);
                }
            }
            let mut seen = vec![false; self.paths.len()];
            let mut queue: VecDeque<usize> = VecDeque::new();
            for &t in &targets {
                if !seen[t] {
                    seen[t] = true;
                    queue.push_back(t);
                }
            }
            while let Some(f) = queue.pop_front() {
                let more = extra_rev.get(&f).map(Vec::as_slice).unwrap_or(&[]);
                for &g in rev[f].iter().chain(more) {
                    if !seen[g] {
                        seen[g] = true;
                        queue.push_back(g);
                    }
                }
            }
            seen
        };
        let shared = reach(&[]);
        let mut by_dirs: HashMap<&[PathBuf], Vec<bool>> = HashMap::new();
        let mut out = Vec::new();
        for u in &self.units {
            let hit = |seen: &[bool]| u.opaque || u.roots.iter().any(|&r| seen[r]);
            let extra: Vec<&Vec<(usize, usize)>> = u
                .own_dirs
                .iter()
                .filter_map(|d| self.extra.get(d))
                .collect();
            let yes = if extra.is_empty() {
                hit(&shared)
            } else {
                let seen = by_dirs
                    .entry(u.own_dirs.as_slice())
                    .or_insert_with(|| reach(&extra));
                hit(seen)
            };
            if yes {
                out.push(u.name.clone());
            }
        }
        out.sort();
        out.dedup();
        out
    }

    /// Units whose command could not be read or that reach an opaque file: candidates for
    /// every query.
    pub fn always(&self) -> usize {
        self.units_including(&[]).len()
    }
}

struct Builder<'c> {
    index: HashMap<OsString, usize>,
    paths: Vec<PathBuf>,
    listings: Listings,
    cache: &'c mut ParseCache,
    shared: Vec<PathBuf>,
    /// Resolutions, by include name (angled: the shared directories), by includer directory
    /// and name (quoted, relative), and by name in the unshared directories.
    angled: HashMap<String, Vec<usize>>,
    relative: HashMap<(OsString, String), Option<usize>>,
    own: HashMap<String, Vec<(PathBuf, usize)>>,
}

impl Builder<'_> {
    fn file(&mut self, p: &Path) -> usize {
        if let Some(&i) = self.index.get(p.as_os_str()) {
            return i;
        }
        self.paths.push(p.to_path_buf());
        self.index
            .insert(p.as_os_str().to_os_string(), self.paths.len() - 1);
        self.paths.len() - 1
    }

    /// `dir/name` when that file exists.
    fn in_dir(&mut self, dir: &Path, name: &str) -> Option<usize> {
        let p = join(dir, name);
        self.listings.exists(&p).then(|| self.file(&p))
    }

    /// Every file `inc` in `from` may name through the shared directories: relative to
    /// `from` (quoted) and in each shared directory.
    fn resolve(&mut self, from: &Path, inc: &Active) -> Vec<usize> {
        let mut out = Vec::new();
        if Path::new(&inc.name).is_absolute() {
            let p = normalize(Path::new(&inc.name));
            if self.listings.exists(&p) {
                out.push(self.file(&p));
            }
            return out;
        }
        if inc.quoted {
            if let Some(d) = from.parent() {
                let key = (d.as_os_str().to_os_string(), inc.name.clone());
                let r = match self.relative.get(&key) {
                    Some(r) => *r,
                    None => {
                        let r = self.in_dir(d, &inc.name);
                        self.relative.insert(key, r);
                        r
                    }
                };
                out.extend(r);
            }
        }
        if let Some(v) = self.angled.get(&inc.name) {
            out.extend(v);
        } else {
            let shared = std::mem::take(&mut self.shared);
            let v: Vec<usize> = shared
                .iter()
                .filter_map(|d| self.in_dir(d, &inc.name))
                .collect();
            self.shared = shared;
            out.extend(&v);
            self.angled.insert(inc.name.clone(), v);
        }
        out
    }

    /// The files `inc` names in the unshared directories: (directory, file).
    fn resolve_own(&mut self, inc: &Active, own: &OwnDirs) -> Vec<(PathBuf, usize)> {
        if let Some(v) = self.own.get(&inc.name) {
            return v.clone();
        }
        let v: Vec<(PathBuf, usize)> = own
            .candidates(&inc.name)
            .iter()
            .filter_map(|d| self.in_dir(d, &inc.name).map(|f| (d.clone(), f)))
            .collect();
        self.own.insert(inc.name.clone(), v.clone());
        v
    }
}

/// The unshared search directories, indexed by their entries: an include name can only be in
/// the directories that hold its first component (`linux` of `linux/foo.h`), so each lookup
/// touches a few directories, not all of them (about a thousand on a distribution's config).
struct OwnDirs {
    by_entry: HashMap<OsString, Vec<PathBuf>>,
    all: Vec<PathBuf>,
}

impl OwnDirs {
    fn new(dirs: &BTreeSet<PathBuf>) -> Self {
        let mut by_entry: HashMap<OsString, Vec<PathBuf>> = HashMap::new();
        for d in dirs {
            let Ok(rd) = fs::read_dir(d) else { continue };
            for e in rd.flatten() {
                by_entry.entry(e.file_name()).or_default().push(d.clone());
            }
        }
        OwnDirs {
            by_entry,
            all: dirs.iter().cloned().collect(),
        }
    }

    fn candidates(&self, name: &str) -> &[PathBuf] {
        let first = Path::new(name)
            .components()
            .find(|c| !matches!(c, std::path::Component::CurDir));
        match first {
            // `../x.h` from an own directory: any of them may hold it; rare enough to ask all.
            Some(std::path::Component::ParentDir) => &self.all,
            Some(c) => self
                .by_entry
                .get(c.as_os_str())
                .map(Vec::as_slice)
                .unwrap_or(&[]),
            None => &[],
        }
    }
}

/// `<name>` or `"name"` as a macro's value names a file.
fn include_target(value: &str) -> Option<(bool, String)> {
    if let Some(n) = value.strip_prefix('<').and_then(|v| v.strip_suffix('>')) {
        return Some((false, n.to_string()));
    }
    if let Some(n) = value.strip_prefix('"').and_then(|v| v.strip_suffix('"')) {
        return Some((true, n.to_string()));
    }
    None
}

/// A `CONFIG_` string option used as a file name (`#include CONFIG_ACPI_CUSTOM_DSDT_FILE`).
fn config_string(config: &HashMap<String, String>, name: &str) -> Option<String> {
    let v = config.get(name)?;
    v.strip_prefix('"')?.strip_suffix('"').map(str::to_string)
}

/// The includes of a file's directives that are not in a branch the configuration rules out.
fn evaluate(dirs: &[Dir], a: &Assumptions<'_>) -> Includes {
    // Per open conditional: whether the enclosing code is active, whether an earlier branch
    // was (maybe) taken, and whether the current branch is active.
    struct Frame {
        parent: Tri,
        taken: Tri,
        current: Tri,
    }
    let mut stack: Vec<Frame> = Vec::new();
    let active = |stack: &[Frame]| stack.last().map_or(Tri::Yes, |f| f.current);
    let mut out = Includes::default();
    for d in dirs {
        match d {
            Dir::If(_) | Dir::Ifdef(_) | Dir::Ifndef(_) => {
                let v = match d {
                    Dir::If(e) => directives::eval(e, a),
                    Dir::Ifdef(n) => directives::eval_defined(n, a),
                    Dir::Ifndef(n) => directives::eval_defined(n, a).not(),
                    _ => Tri::Maybe,
                };
                let parent = active(&stack);
                stack.push(Frame {
                    parent,
                    taken: v,
                    current: parent.and(v),
                });
            }
            Dir::Elif(e) => {
                if let Some(f) = stack.last_mut() {
                    let v = if e.is_empty() {
                        Tri::Maybe
                    } else {
                        directives::eval(e, a)
                    };
                    f.current = f.parent.and(f.taken.not().and(v));
                    f.taken = f.taken.or(v);
                }
            }
            Dir::Else => {
                if let Some(f) = stack.last_mut() {
                    f.current = f.parent.and(f.taken.not());
                    f.taken = Tri::Yes;
                }
            }
            Dir::Endif => {
                stack.pop();
            }
            Dir::Include(quoted, _, name) if active(&stack) != Tri::No => out.files.push(Active {
                quoted: *quoted,
                name: name.clone(),
            }),
            Dir::IncludeMacro(m) if active(&stack) != Tri::No => out.macros.push(m.clone()),
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(root: &Path, rel: &str, text: &str) {
        let p = root.join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, text).unwrap();
    }

    fn unit(root: &Path, name: &str, src: &str, extra: &[&str]) -> Compile {
        let mut search = vec![root.join("include")];
        search.extend(extra.iter().map(|d| root.join(d)));
        Compile {
            unit: name.into(),
            source: root.join(src),
            search,
            forced: vec![root.join("include/linux/kconfig.h")],
            config_macros: Vec::new(),
            opaque: false,
        }
    }

    #[test]
    fn finds_the_units_a_header_reaches() {
        let tmp = tempfile::tempdir().unwrap();
        let r = tmp.path();
        put(r, "include/linux/kconfig.h", "#define KCONFIG 1\n");
        put(r, "include/linux/seq_file.h", "#include <linux/types.h>\n");
        put(r, "include/linux/types.h", "");
        put(
            r,
            "include/linux/proc_fs.h",
            "#ifdef CONFIG_PROC_FS\n#include <linux/seq_file.h>\n#endif\n",
        );
        put(r, "include/linux/off.h", "#if defined(CONFIG_OFF) && 1\n#include <linux/seq_file.h>\n#else\n#include <linux/types.h>\n#endif\n");
        put(
            r,
            "include/linux/maybe.h",
            "#ifdef __KERNEL__\n#include <linux/seq_file.h>\n#endif\n",
        );
        put(r, "fs/proc/internal.h", "#include <linux/proc_fs.h>\n");
        put(r, "fs/proc/a.c", "#include \"internal.h\"\n");
        put(r, "fs/b.c", "#include <linux/off.h>\n");
        put(r, "fs/c.c", "#include <linux/maybe.h>\n");
        // selinux-like: its own -I directory holds a header included with angle brackets.
        put(
            r,
            "security/sel/include/objsec.h",
            "#include <linux/seq_file.h>\n",
        );
        put(r, "security/sel/hooks.c", "#include <objsec.h>\n");
        // Another unit including the same name finds no such file in its directories.
        put(r, "mm/d.c", "#include <objsec.h>\n");
        // A macro include explained by a #define, and one explained by nothing.
        put(
            r,
            "lib/e.c",
            "#define HDR <linux/proc_fs.h>\n#include HDR\n",
        );
        put(r, "lib/f.c", "#include MYSTERY\n");
        let config: HashMap<String, String> =
            [("CONFIG_PROC_FS".to_string(), "y".to_string())].into();
        let units = vec![
            unit(r, "fs/proc/a.o", "fs/proc/a.c", &[]),
            unit(r, "fs/b.o", "fs/b.c", &[]),
            unit(r, "fs/c.o", "fs/c.c", &[]),
            unit(
                r,
                "security/sel/hooks.o",
                "security/sel/hooks.c",
                &["security/sel/include"],
            ),
            unit(r, "mm/d.o", "mm/d.c", &[]),
            unit(r, "lib/e.o", "lib/e.c", &[]),
            unit(r, "lib/f.o", "lib/f.c", &[]),
        ];
        let mut cache = ParseCache::default();
        let (g, stats) = Graph::build(&units, &config, &mut cache);
        assert!(stats.read > 0);
        let q = |f: &str| g.units_including(&[r.join(f)]);
        assert_eq!(
            q("include/linux/seq_file.h"),
            [
                "fs/c.o",
                "fs/proc/a.o",
                "lib/e.o",
                "lib/f.o",
                "security/sel/hooks.o"
            ]
        );
        assert_eq!(q("fs/proc/internal.h"), ["fs/proc/a.o", "lib/f.o"]);
        assert_eq!(
            q("include/linux/types.h").len(),
            6,
            "{:?}",
            q("include/linux/types.h")
        );
        assert_eq!(g.always(), 1);
        // A second build reads nothing again.
        let before = cache.read;
        let _ = Graph::build(&units, &config, &mut cache);
        assert_eq!(cache.read, before);
    }
}
