//! The Debian stock kernels the distribution e2e runs on (`tests/e2e-debian/`): a pinned list
//! of package sets, fetched once with `apt-get download` into the dev cache and unpacked there
//! (nothing is installed system-wide), then reused.
//!
//! Layout, one directory per Debian package version, shared with the research notes'
//! scripts (/work/notes/debian/fetch.sh wrote the same): `<cache>/debian/<version>/`
//! - `<package>/`: `dpkg-deb -x` of that package (headers, `-common`, kbuild, image);
//! - `linux-image-<release>-dbg/usr/lib/debug/boot/vmlinux-<release>` and the full copies of
//!   the few stock modules the cases patch ([`DEBUG_MODULES`]), the only members taken from
//!   the `-dbg` package (streamed out of it: the generic flavour's is 819 MB, of which the
//!   vmlinux is 633 MB; the rest are unstripped copies of every module);
//! - `src/linux-source-6.1/`: the source tree, unpacked from the tarball inside
//!   `linux-source-6.1` (the tarball itself is not kept);
//! - `root-<flavour>/`: the flavour's headers, `-common` and (where the archive has it at
//!   this version) `linux-kbuild-6.1` hard-linked into one tree shaped like a Debian
//!   machine's `/`, so the packages' relative `scripts`/`tools` links resolve;
//! - `e2e-src/<key>/linux-source-6.1/`: a checkout's hard-linked copy of the source for its
//!   e2e runs ([`Set::private_source`]);
//! - `MANIFEST`: `<package> <version> <sha256 of the .deb> <bytes>` per package, written
//!   after the unpacked tree is complete (so a half-done fetch is redone, never trusted).
//!
//! The `.deb` files are deleted once unpacked. Two fetches of the same set at once are safe:
//! each works in its own temporary directory and moves the finished tree in with a rename.

use crate::util;
use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};
use std::collections::HashSet;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

/// A Debian kernel the distribution cases can target: one flavour of one ABI.
#[derive(Debug)]
pub struct Target {
    /// The name the cases' `targets` files use (a role, so that a new pin changes no case).
    pub name: &'static str,
    /// The Debian package version of every package of the set (`apt-get download P=V`).
    pub version: &'static str,
    /// The ABI (`6.1.0-57`): part of the package names and of the release.
    pub abi: &'static str,
    pub flavour: &'static str,
    /// `linux-kbuild-6.1` exists at this version (the archive keeps only its newest two), so
    /// the headers root is what an installed machine has; without it klpgen must take
    /// kbuild's tools from the source.
    pub kbuild: bool,
    /// The cases run in qemu on this kernel, after the harness self-test with the kernel's
    /// livepatch sample built against these headers (with another version's kbuild where
    /// this one has none); otherwise they are built and checked with `klpgen check` only.
    pub boot: bool,
}

/// The pinned package sets. When the archive drops one (Debian keeps a few ABIs of a stable
/// line: bookworm, bookworm-security), `cargo xtask setup` fails naming the missing package
/// and the ABIs the archive offers now: update `version` and `abi` on the target's line
/// (`cargo xtask e2e debian` then says which case patches no longer apply).
pub const TARGETS: &[Target] = &[
    // The newest complete cloud-amd64 ABI: the cases boot here.
    Target {
        name: "cloud",
        version: "6.1.192-3",
        abi: "6.1.0-57",
        flavour: "cloud-amd64",
        kbuild: true,
        boot: true,
    },
    // An older cloud-amd64 ABI (a fix goes onto the kernels already deployed); the archive
    // has no linux-kbuild-6.1 of this version.
    Target {
        name: "cloud-older",
        version: "6.1.187-1",
        abi: "6.1.0-53",
        flavour: "cloud-amd64",
        kbuild: false,
        boot: true,
    },
    // The generic flavour of the newest ABI (its -dbg package is 819 MB).
    Target {
        name: "amd64",
        version: "6.1.192-3",
        abi: "6.1.0-57",
        flavour: "amd64",
        kbuild: true,
        boot: false,
    },
];

/// The target named `name`.
pub fn target(name: &str) -> Result<&'static Target> {
    TARGETS.iter().find(|t| t.name == name).with_context(|| {
        let names: Vec<&str> = TARGETS.iter().map(|t| t.name).collect();
        format!(
            "no Debian target {name:?} (targets: {}; see xtask/src/debian.rs)",
            names.join(", ")
        )
    })
}

/// The stock modules whose full copies (with STT_FILE symbols, which the image package's
/// stripped `.ko` files lack) are kept from the `-dbg` package, beside the vmlinux as Debian
/// installs them (`usr/lib/debug/lib/modules/<release>/`): klpgen binds a patched module's
/// statics with them. Every case's `target-module` is one of these (a test says so). Taking
/// one reads the `-dbg` archive further than the vmlinux (which comes first): about a minute
/// for the generic flavour's 819 MB instead of ten seconds.
pub const DEBUG_MODULES: &[&str] = &["kernel/fs/binfmt_misc.ko"];

/// How a package is kept once downloaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Keep {
    /// `dpkg-deb -x` of the whole package.
    Whole,
    /// Only `usr/lib/debug/boot/vmlinux-<release>` and the full copies of [`DEBUG_MODULES`].
    Debug,
    /// The tarball inside, unpacked into `src/`.
    SourceTree,
}

/// The paths of one target's unpacked packages.
#[derive(Debug, Clone)]
pub struct Set {
    pub target: &'static Target,
    /// `<cache>/debian/<version>/`
    pub dir: PathBuf,
}

/// `<cache>/debian/`, beside the test kernels.
pub fn cache_dir() -> PathBuf {
    crate::kernel::cache_base().join("debian")
}

/// Where `t`'s packages live (whether or not they are there yet).
pub fn locate(t: &'static Target) -> Set {
    Set {
        target: t,
        dir: cache_dir().join(t.version),
    }
}

impl Set {
    /// `6.1.0-57-cloud-amd64`: `uname -r` of the kernel.
    pub fn release(&self) -> String {
        format!("{}-{}", self.target.abi, self.target.flavour)
    }

    /// The unpacked linux-source-6.1 (`--sourcedir`).
    pub fn source(&self) -> PathBuf {
        self.dir.join("src/linux-source-6.1")
    }

    fn root(&self) -> PathBuf {
        self.dir.join(format!("root-{}", self.target.flavour))
    }

    /// The flavour's headers directory inside the merged root (`--builddir`).
    pub fn headers(&self) -> PathBuf {
        self.root()
            .join("usr/src")
            .join(format!("linux-headers-{}", self.release()))
    }

    /// The `-common` headers beside it (the flavour Makefile includes its Makefile).
    pub fn common(&self) -> PathBuf {
        self.root()
            .join("usr/src")
            .join(format!("linux-headers-{}-common", self.target.abi))
    }

    /// The vmlinux with DWARF from the `-dbg` package (`--vmlinux`).
    pub fn vmlinux(&self) -> PathBuf {
        self.dir
            .join(self.dbg_package())
            .join("usr/lib/debug/boot")
            .join(format!("vmlinux-{}", self.release()))
    }

    fn image(&self) -> PathBuf {
        self.dir.join(self.image_package())
    }

    /// The package's own boot image.
    pub fn vmlinuz(&self) -> PathBuf {
        self.image()
            .join("boot")
            .join(format!("vmlinuz-{}", self.release()))
    }

    /// `lib/modules/<release>` of the image package (`--modules`).
    pub fn modules(&self) -> PathBuf {
        self.image().join("lib/modules").join(self.release())
    }

    /// The headers' Module.symvers (the stock kernel's exports and CRCs).
    pub fn symvers(&self) -> PathBuf {
        self.headers().join("Module.symvers")
    }

    fn dbg_package(&self) -> String {
        format!("linux-image-{}-dbg", self.release())
    }

    fn image_package(&self) -> String {
        format!("linux-image-{}-unsigned", self.release())
    }

    fn headers_package(&self) -> String {
        format!("linux-headers-{}", self.release())
    }

    fn common_package(&self) -> String {
        format!("linux-headers-{}-common", self.target.abi)
    }

    /// Every package of the set and how it is kept.
    fn packages(&self) -> Vec<(String, Keep)> {
        let mut v = vec![
            ("linux-source-6.1".to_string(), Keep::SourceTree),
            (self.common_package(), Keep::Whole),
            (self.headers_package(), Keep::Whole),
            (self.image_package(), Keep::Whole),
            (self.dbg_package(), Keep::Debug),
        ];
        if self.target.kbuild {
            v.push(("linux-kbuild-6.1".to_string(), Keep::Whole));
        }
        v
    }

    /// The packages the merged root is made of, in order.
    fn root_packages(&self) -> Vec<String> {
        let mut v = vec![self.headers_package(), self.common_package()];
        if self.target.kbuild {
            v.push("linux-kbuild-6.1".to_string());
        }
        v
    }

    fn manifest(&self) -> PathBuf {
        self.dir.join("MANIFEST")
    }

    /// The packages MANIFEST records as unpacked at this version.
    fn recorded(&self) -> HashSet<String> {
        let text = fs::read_to_string(self.manifest()).unwrap_or_default();
        text.lines()
            .filter_map(|l| {
                let mut w = l.split_whitespace();
                let (p, v) = (w.next()?, w.next()?);
                (v == self.target.version).then(|| p.to_string())
            })
            .collect()
    }

    /// The full copy of a stock module from the `-dbg` package (`kernel/fs/x.ko`).
    pub fn debug_module(&self, module: &str) -> PathBuf {
        self.dir
            .join(self.dbg_package())
            .join("usr/lib/debug/lib/modules")
            .join(self.release())
            .join(module)
    }

    /// What a complete unpack of `package` leaves.
    fn unpacked_paths(&self, package: &str, keep: Keep) -> Vec<PathBuf> {
        match keep {
            Keep::Whole => vec![self.dir.join(package)],
            Keep::Debug => std::iter::once(self.vmlinux())
                .chain(DEBUG_MODULES.iter().map(|m| self.debug_module(m)))
                .collect(),
            Keep::SourceTree => vec![self.source().join("Makefile")],
        }
    }

    /// The packages not (completely) unpacked yet.
    fn missing(&self) -> Vec<(String, Keep)> {
        let recorded = self.recorded();
        self.packages()
            .into_iter()
            .filter(|(p, k)| {
                !(recorded.contains(p) && self.unpacked_paths(p, *k).iter().all(|x| x.exists()))
            })
            .collect()
    }

    /// Whether the merged root is there: the headers' .config and, with kbuild, its modpost
    /// reached through the relative `scripts` link.
    fn root_complete(&self) -> bool {
        self.headers().join(".config").is_file()
            && self.common().join("Makefile").is_file()
            && (!self.target.kbuild || self.headers().join("scripts/mod/modpost").is_file())
    }

    /// Whether everything the cases need is unpacked.
    pub fn is_complete(&self) -> bool {
        self.missing().is_empty() && self.root_complete()
    }
}

/// What fetching one set did: seconds spent downloading and unpacking.
#[derive(Debug, Default)]
pub struct Fetched {
    pub packages: Vec<String>,
    pub download_seconds: f64,
    pub unpack_seconds: f64,
}

/// Fetches and unpacks what `t`'s set lacks (nothing when it is complete); returns its paths.
pub fn ensure(t: &'static Target) -> Result<Set> {
    ensure_reporting(t).map(|(s, _)| s)
}

/// Like [`ensure`], also saying what was fetched and how long it took.
pub fn ensure_reporting(t: &'static Target) -> Result<(Set, Fetched)> {
    let set = locate(t);
    let mut fetched = Fetched::default();
    let missing = set.missing();
    if missing.is_empty() && set.root_complete() {
        return Ok((set, fetched));
    }
    fs::create_dir_all(&set.dir).with_context(|| format!("cannot create {}", set.dir.display()))?;
    let mut updated = false;
    for (package, keep) in &missing {
        fetch_one(&set, package, *keep, &mut updated, &mut fetched)?;
        fetched.packages.push(package.clone());
    }
    if !set.root_complete() {
        let start = Instant::now();
        make_root(&set)?;
        fetched.unpack_seconds += start.elapsed().as_secs_f64();
    }
    if !set.is_complete() {
        bail!(
            "the Debian set {} ({}) is still incomplete after fetching it; see {}",
            t.name,
            set.release(),
            set.dir.display()
        );
    }
    Ok((set, fetched))
}

/// A fresh temporary path beside `path` for this process.
fn temp_beside(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.tmp-{}", std::process::id()))
}

fn remove_if_exists(path: &Path) -> Result<()> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => Err(e),
    }
    .with_context(|| format!("cannot remove {}", path.display()))
}

/// Moves the finished `tmp` to `dest`, replacing a stale (unrecorded) `dest`.
fn install(tmp: &Path, dest: &Path) -> Result<()> {
    remove_if_exists(dest)?;
    fs::rename(tmp, dest)
        .with_context(|| format!("cannot move {} to {}", tmp.display(), dest.display()))
}

fn fetch_one(
    set: &Set,
    package: &str,
    keep: Keep,
    updated: &mut bool,
    fetched: &mut Fetched,
) -> Result<()> {
    let version = set.target.version;
    let work = set.dir.join(format!(".fetch-{}", std::process::id()));
    remove_if_exists(&work)?;
    fs::create_dir_all(&work)?;
    eprintln!("setup: debian {version}: downloading {package}");
    let start = Instant::now();
    let deb = download(set, package, &work, updated)?;
    let (sha, bytes) = sha256_of(&deb)?;
    fetched.download_seconds += start.elapsed().as_secs_f64();
    let start = Instant::now();
    match keep {
        Keep::Whole => {
            let dest = set.dir.join(package);
            let tmp = temp_beside(&dest);
            remove_if_exists(&tmp)?;
            run_quiet(
                Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&tmp),
                "dpkg-deb -x",
            )?;
            install(&tmp, &dest)?;
        }
        Keep::Debug => {
            let dest = set.dir.join(package);
            let tmp = temp_beside(&dest);
            remove_if_exists(&tmp)?;
            fs::create_dir_all(&tmp)?;
            let members: Vec<String> = set
                .unpacked_paths(package, keep)
                .iter()
                .filter_map(|p| p.strip_prefix(&dest).ok())
                .map(|p| format!("./{}", p.display()))
                .collect();
            extract_members(&deb, &members, &tmp)?;
            install(&tmp, &dest)?;
        }
        Keep::SourceTree => {
            let member = "./usr/src/linux-source-6.1.tar.xz";
            extract_members(&deb, &[member.to_string()], &work)?;
            // The .deb is no longer needed; free its space before the tree is unpacked.
            fs::remove_file(&deb)?;
            let dest = set.dir.join("src");
            let tmp = temp_beside(&dest);
            remove_if_exists(&tmp)?;
            fs::create_dir_all(&tmp)?;
            run_quiet(
                Command::new("tar")
                    .arg("-xf")
                    .arg(work.join(member))
                    .arg("-C")
                    .arg(&tmp),
                "tar -x of linux-source-6.1.tar.xz",
            )?;
            if !tmp.join("linux-source-6.1/Makefile").is_file() {
                bail!("{package}={version}: its tarball has no linux-source-6.1/Makefile");
            }
            install(&tmp, &dest)?;
        }
    }
    let secs = start.elapsed().as_secs_f64();
    fetched.unpack_seconds += secs;
    remove_if_exists(&work)?;
    use std::io::Write;
    let mut f = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(set.manifest())?;
    writeln!(f, "{package} {version} {sha} {bytes}")?;
    let kept = match keep {
        Keep::Whole | Keep::Debug => set.dir.join(package),
        Keep::SourceTree => set.source(),
    };
    eprintln!(
        "setup: debian {version}: {package} ({:.0} MB .deb) unpacked in {secs:.0}s: {} ({:.0} MB)",
        bytes as f64 / 1e6,
        kept.display(),
        disk_usage(&kept) as f64 / 1e6
    );
    Ok(())
}

/// `apt-get download PACKAGE=VERSION` into `work`; runs `apt-get update` once when the
/// version is unknown, and fails with what the archive offers instead when it is still so.
fn download(set: &Set, package: &str, work: &Path, updated: &mut bool) -> Result<PathBuf> {
    let spec = format!("{package}={}", set.target.version);
    loop {
        let out = Command::new("apt-get")
            .args(["download", "-q"])
            .arg(&spec)
            .current_dir(work)
            .stdin(Stdio::null())
            .output()
            .context("cannot run apt-get (Debian's apt)")?;
        let deb = fs::read_dir(work)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .find(|p| p.extension().is_some_and(|x| x == "deb"));
        if out.status.success() {
            return deb.with_context(|| format!("apt-get download {spec} left no .deb"));
        }
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        let unknown = err.contains("was not found") || err.contains("Unable to locate");
        if unknown && !*updated {
            eprintln!("setup: {spec} is not in apt's lists; apt-get update");
            crate::setup::apt_update()?;
            *updated = true;
            continue;
        }
        if unknown {
            bail!("{}", pin_failure(set, package, err.trim()));
        }
        bail!(
            "apt-get download {spec} failed ({}):\n{}",
            out.status,
            err.trim()
        );
    }
}

/// The message when the archive no longer has a pinned package: what is missing, the 6.1
/// ABIs the archive offers for the flavour now, and the line to change.
fn pin_failure(set: &Set, package: &str, apt_said: &str) -> String {
    let t = set.target;
    let offered = offered_abis(t.flavour);
    let offered = if offered.is_empty() {
        "  (apt-cache search found no linux-headers-6.1.0-N-<flavour>)".to_string()
    } else {
        offered
            .iter()
            .map(|(v, abi)| format!("  {abi} (package version {v})"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    format!(
        "the Debian archive no longer has {package}={} (apt-get: {apt_said}).\n\
         Debian keeps only a few ABIs of a stable kernel line. The 6.1 {} ABIs whose headers \
         apt's lists have now:\n{offered}\n\
         Update the pin: in xtask/src/debian.rs, TARGETS, target {:?}, set `version` and `abi` \
         (check that the ABI has -dbg and -unsigned packages too: `apt-cache policy \
         linux-image-<abi>-{}-dbg linux-image-<abi>-{}-unsigned`).",
        t.version, t.flavour, t.name, t.flavour, t.flavour
    )
}

/// `(package version, ABI)` of every 6.1 ABI whose `linux-headers-<abi>-<flavour>` apt's
/// lists have, oldest first (`apt-cache search`, then one `apt-cache show` for all).
fn offered_abis(flavour: &str) -> Vec<(String, String)> {
    let apt_cache = |args: &[String]| {
        Command::new("apt-cache")
            .args(args)
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    };
    let pattern = format!("^linux-headers-6\\.1\\.0-[0-9]+-{flavour}$");
    let found = apt_cache(&["search".into(), "--names-only".into(), pattern]);
    let names: Vec<String> = found
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(String::from)
        .collect();
    if names.is_empty() {
        return Vec::new();
    }
    let mut args = vec!["show".to_string()];
    args.extend(names);
    parse_offered(&apt_cache(&args), flavour)
}

/// From `apt-cache show linux-headers-<abi>-<flavour>...`: each stanza's Version and the ABI
/// in its Package name, 6.1 only, sorted by ABI number.
fn parse_offered(text: &str, flavour: &str) -> Vec<(String, String)> {
    let suffix = format!("-{flavour}");
    let mut out: Vec<(u32, String, String)> = Vec::new();
    for stanza in text.split("\n\n") {
        let field = |name: &str| {
            stanza
                .lines()
                .find_map(|l| l.strip_prefix(name).map(str::trim))
        };
        let (Some(package), Some(version)) = (field("Package:"), field("Version:")) else {
            continue;
        };
        let Some(abi) = package
            .strip_prefix("linux-headers-")
            .and_then(|p| p.strip_suffix(&suffix))
        else {
            continue;
        };
        let Some(n) = abi.strip_prefix("6.1.0-").and_then(|n| n.parse().ok()) else {
            continue;
        };
        if !out.iter().any(|(m, v, _)| *m == n && v == version) {
            out.push((n, version.to_string(), abi.to_string()));
        }
    }
    out.sort();
    out.into_iter().map(|(_, v, a)| (v, a)).collect()
}

/// Extracts some members of a package's data archive into `dest`, streaming
/// `dpkg-deb --fsys-tarfile` into `tar` and stopping once they are out (tar's
/// `--occurrence`), so a big package is never unpacked whole.
fn extract_members(deb: &Path, members: &[String], dest: &Path) -> Result<()> {
    let mut dpkg = Command::new("dpkg-deb")
        .arg("--fsys-tarfile")
        .arg(deb)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        // It dies of SIGPIPE when tar stops early, and says so; tar's verdict is the one.
        .stderr(Stdio::null())
        .spawn()
        .context("cannot run dpkg-deb")?;
    let stream = dpkg.stdout.take().context("dpkg-deb stdout")?;
    let tar = Command::new("tar")
        .arg("-x")
        .arg("-C")
        .arg(dest)
        .arg("--occurrence=1")
        .args(members)
        .stdin(stream)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .context("cannot run tar")?;
    let _ = dpkg.kill();
    let _ = dpkg.wait();
    if !tar.status.success() {
        bail!(
            "extracting {} from {} failed ({}): {}",
            members.join(" "),
            deb.display(),
            tar.status,
            String::from_utf8_lossy(&tar.stderr).trim()
        );
    }
    for m in members {
        if !dest.join(m).is_file() {
            bail!("{} has no {m}", deb.display());
        }
    }
    Ok(())
}

/// Runs a command with its output captured, failing with that output.
fn run_quiet(cmd: &mut Command, what: &str) -> Result<()> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot start `{}`", util::display(cmd)))?;
    if !out.status.success() {
        bail!(
            "{what} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout).trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// The sha256 (by `sha256sum`: xtask is built without optimisation, and hashing an 819 MB
/// package in it takes most of a minute) and size of a file.
fn sha256_of(path: &Path) -> Result<(String, u64)> {
    let out = Command::new("sha256sum")
        .arg(path)
        .stdin(Stdio::null())
        .output()
        .context("cannot run sha256sum (coreutils)")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let hex = text.split_whitespace().next().unwrap_or_default();
    if !out.status.success() || hex.len() != 64 {
        bail!("sha256sum {} failed ({})", path.display(), out.status);
    }
    Ok((hex.to_string(), fs::metadata(path)?.len()))
}

/// Hard-links the root's packages into one tree (`cp -al`, no space), in a temporary
/// directory renamed into place.
fn make_root(set: &Set) -> Result<()> {
    let packages: Vec<PathBuf> = set
        .root_packages()
        .iter()
        .map(|p| set.dir.join(p))
        .collect();
    merge_into(&set.root(), &packages)?;
    if !set.root_complete() {
        bail!(
            "{}: the merged headers root lacks .config, the -common Makefile or (kbuild) scripts/mod/modpost",
            set.root().display()
        );
    }
    Ok(())
}

/// `cp -al` of each unpacked package into a temporary directory renamed to `root`.
fn merge_into(root: &Path, packages: &[PathBuf]) -> Result<()> {
    let tmp = temp_beside(root);
    remove_if_exists(&tmp)?;
    fs::create_dir_all(&tmp)?;
    for p in packages {
        let mut from = p.clone().into_os_string();
        from.push("/.");
        run_quiet(
            Command::new("cp").arg("-al").arg(&from).arg(&tmp),
            "cp -al of the headers",
        )?;
    }
    install(&tmp, root)
}

impl Set {
    /// Headers to build an external module against with kbuild: `(flavour dir, -common dir)`
    /// of this set's root when it has linux-kbuild-6.1, else of a root with `kbuild`'s (another
    /// version: the archive has none of this one; between 6.1 updates kbuild's scripts are the
    /// same text, its binaries rebuilds, per the research notes). For the harness self-test's
    /// sample only, never for klpgen, which must take kbuild's tools from the source.
    pub fn kbuild_headers(&self, kbuild: &Set) -> Result<(PathBuf, PathBuf)> {
        if self.target.kbuild {
            return Ok((self.headers(), self.common()));
        }
        if !kbuild.target.kbuild {
            bail!("{} has no linux-kbuild-6.1 to lend", kbuild.target.name);
        }
        let root = self.dir.join(format!(
            "root-{}-kbuild-{}",
            self.target.flavour, kbuild.target.version
        ));
        let sub = |d: &Path| root.join(d.strip_prefix(self.root()).unwrap_or(d));
        let (headers, common) = (sub(&self.headers()), sub(&self.common()));
        if !headers.join("scripts/mod/modpost").is_file() {
            merge_into(
                &root,
                &[
                    self.dir.join(self.headers_package()),
                    self.dir.join(self.common_package()),
                    kbuild.dir.join("linux-kbuild-6.1"),
                ],
            )?;
            if !headers.join("scripts/mod/modpost").is_file() {
                bail!("{}: kbuild's modpost does not resolve", headers.display());
            }
        }
        Ok((headers, common))
    }
}

impl Set {
    /// A private copy of the source tree for one checkout's e2e runs (`<version>/e2e-src/
    /// <key>/linux-source-6.1`, `cp -al`: no space, seconds), so that runs of other checkouts
    /// on the shared tree neither make these wait for its lock nor change its time stamps
    /// under them. Safe with hard links: klpgen's patching replaces files (GNU patch writes a
    /// new file and renames it) and writes only those, so no shared inode is ever written.
    pub fn private_source(&self) -> Result<PathBuf> {
        let recorded = fs::read_to_string(self.manifest()).unwrap_or_default();
        let source_line = recorded
            .lines()
            .find(|l| l.starts_with("linux-source-6.1 "))
            .unwrap_or_default()
            .to_string();
        let mut h = Sha256::new();
        h.update(util::repo_root().as_os_str().as_encoded_bytes());
        h.update(b"\0");
        h.update(source_line.as_bytes());
        let key: String = h
            .finalize()
            .iter()
            .take(8)
            .map(|b| format!("{b:02x}"))
            .collect();
        let dir = self.dir.join("e2e-src").join(key);
        let tree = dir.join("linux-source-6.1");
        let stamp = dir.join("complete");
        if stamp.is_file() && tree.join("Makefile").is_file() {
            return Ok(tree);
        }
        fs::create_dir_all(dir.parent().unwrap_or(&dir))?;
        merge_into(&dir, &[self.dir.join("src")])?;
        fs::write(
            &stamp,
            format!(
                "cp -al of {}\nfor {}\n",
                self.source().display(),
                util::repo_root().display()
            ),
        )?;
        Ok(tree)
    }
}

/// Bytes a tree takes on disk (allocated blocks), each hard-linked file counted once.
pub fn disk_usage(path: &Path) -> u64 {
    fn walk(p: &Path, seen: &mut HashSet<(u64, u64)>, total: &mut u64) {
        let Ok(m) = fs::symlink_metadata(p) else {
            return;
        };
        if seen.insert((m.dev(), m.ino())) {
            *total += m.blocks() * 512;
        }
        if m.is_dir() {
            if let Ok(rd) = fs::read_dir(p) {
                for e in rd.flatten() {
                    walk(&e.path(), seen, total);
                }
            }
        }
    }
    let mut seen = HashSet::new();
    let mut total = 0;
    walk(path, &mut seen, &mut total);
    total
}

/// `cargo xtask setup`'s part: every pinned set present (or those `names` names), fetching
/// what is missing; prints the time it took and the disk the new trees take.
pub fn setup(names: &[String]) -> Result<()> {
    let targets: Vec<&'static Target> = if names.is_empty() {
        TARGETS.iter().collect()
    } else {
        names.iter().map(|n| target(n)).collect::<Result<_>>()?
    };
    for t in targets {
        let start = Instant::now();
        let (set, f) = ensure_reporting(t)?;
        if f.packages.is_empty() {
            eprintln!(
                "setup: debian {} ({}, {}): present in {}",
                t.name,
                set.release(),
                t.version,
                set.dir.display()
            );
        } else {
            eprintln!(
                "setup: debian {} ({}): fetched {} package(s) in {:.0}s (download {:.0}s, unpack {:.0}s)",
                t.name,
                set.release(),
                f.packages.len(),
                start.elapsed().as_secs_f64(),
                f.download_seconds,
                f.unpack_seconds
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_of_a_set() {
        let t = target("cloud").unwrap();
        let s = Set {
            target: t,
            dir: PathBuf::from("/c/debian/6.1.192-3"),
        };
        assert_eq!(s.release(), "6.1.0-57-cloud-amd64");
        assert_eq!(
            s.vmlinux(),
            Path::new("/c/debian/6.1.192-3/linux-image-6.1.0-57-cloud-amd64-dbg/usr/lib/debug/boot/vmlinux-6.1.0-57-cloud-amd64")
        );
        assert_eq!(
            s.headers(),
            Path::new(
                "/c/debian/6.1.192-3/root-cloud-amd64/usr/src/linux-headers-6.1.0-57-cloud-amd64"
            )
        );
        assert_eq!(
            s.modules(),
            Path::new("/c/debian/6.1.192-3/linux-image-6.1.0-57-cloud-amd64-unsigned/lib/modules/6.1.0-57-cloud-amd64")
        );
        let names: Vec<String> = s.packages().into_iter().map(|(p, _)| p).collect();
        assert!(names.contains(&"linux-headers-6.1.0-57-common".to_string()));
        assert!(names.contains(&"linux-kbuild-6.1".to_string()));
        let older = Set {
            target: target("cloud-older").unwrap(),
            dir: PathBuf::from("/x"),
        };
        assert!(!older.root_packages().iter().any(|p| p.contains("kbuild")));
        assert!(target("nope").is_err());
    }

    #[test]
    fn pins_are_unique_and_consistent() {
        let mut names = HashSet::new();
        for t in TARGETS {
            assert!(names.insert(t.name), "{} twice", t.name);
            assert!(t.abi.starts_with("6.1.0-") && t.version.starts_with("6.1."));
        }
        // The self-test's sample needs a linux-kbuild-6.1 of some pinned version.
        assert!(TARGETS.iter().any(|t| t.boot));
        assert!(TARGETS.iter().any(|t| t.kbuild));
    }

    #[test]
    fn offered_abis_from_apt_cache_show() {
        let text = "Package: linux-headers-6.1.0-57-cloud-amd64\nVersion: 6.1.192-3\n\n\
                    Package: linux-headers-6.12.57+deb12-cloud-amd64\nVersion: 6.12.57-1~bpo12+1\n\n\
                    Package: linux-headers-6.1.0-9-cloud-amd64\nVersion: 6.1.27-1\n\n\
                    Package: linux-headers-6.1.0-53-cloud-amd64\nVersion: 6.1.187-1\n";
        assert_eq!(
            parse_offered(text, "cloud-amd64"),
            vec![
                ("6.1.27-1".to_string(), "6.1.0-9".to_string()),
                ("6.1.187-1".to_string(), "6.1.0-53".to_string()),
                ("6.1.192-3".to_string(), "6.1.0-57".to_string())
            ]
        );
        // cloud-amd64's packages are not the generic flavour's.
        assert!(parse_offered(text, "amd64").is_empty());
    }
}
