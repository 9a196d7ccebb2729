//! Module files as distributions install them: plain `.ko` or compressed `.ko.xz`, `.ko.zst`,
//! `.ko.gz` (what `CONFIG_MODULE_COMPRESS_*` writes at `modules_install`), read into their ELF
//! bytes; and a modules directory (`/lib/modules/<release>`, or an unpacked image package's
//! `lib/modules/<release>`): the module kbuild would install for an object path, found through
//! `modules.order`, `modules.dep` or the path itself, with any compression suffix.
//!
//! The decoders are pure Rust (`lzma-rs`, `ruzstd`, `flate2` on `miniz_oxide`): no C library
//! to link, and each reads what the kernel's own tools write (xz with a CRC32 check and LZMA2,
//! zstd frames, gzip).

use std::fs;
use std::io::Read as _;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

/// The suffixes a module file may have, plain first.
pub const SUFFIXES: [&str; 4] = [".ko", ".ko.xz", ".ko.zst", ".ko.gz"];

/// A module file's ELF bytes, decompressed by its magic number (whatever its name says).
pub fn read(path: &Path) -> Result<Vec<u8>> {
    let raw = fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    decompress(&raw).with_context(|| format!("cannot decompress {}", path.display()))
}

/// ELF bytes from a module file's contents: ELF as it is, else xz, zstd or gzip.
pub fn decompress(raw: &[u8]) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    if raw.starts_with(b"\x7fELF") {
        return Ok(raw.to_vec());
    } else if raw.starts_with(b"\xfd7zXZ\0") {
        lzma_rs::xz_decompress(&mut &raw[..], &mut out).map_err(|e| anyhow::anyhow!("xz: {e}"))?;
    } else if raw.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        ruzstd::decoding::StreamingDecoder::new(raw)
            .map_err(|e| anyhow::anyhow!("zstd: {e}"))?
            .read_to_end(&mut out)
            .context("zstd")?;
    } else if raw.starts_with(&[0x1f, 0x8b]) {
        flate2::read::GzDecoder::new(raw)
            .read_to_end(&mut out)
            .context("gzip")?;
    } else {
        bail!("neither an ELF file nor xz, zstd or gzip data");
    }
    if !out.starts_with(b"\x7fELF") {
        bail!("the decompressed data is not an ELF file");
    }
    Ok(out)
}

/// Whether an object has STT_FILE symbols (which tell same-named statics apart).
pub fn has_file_symbols(bytes: &[u8]) -> bool {
    use object::{Object as _, ObjectSymbol as _};
    object::File::parse(bytes)
        .is_ok_and(|f| f.symbols().any(|s| s.kind() == object::SymbolKind::File))
}

/// An object's GNU build-id.
fn build_id(bytes: &[u8]) -> Option<Vec<u8>> {
    use object::Object as _;
    let f = object::File::parse(bytes).ok()?;
    f.build_id().ok().flatten().map(<[u8]>::to_vec)
}

/// The full copy of the installed module `ko` (of `modules_dir`, whose bytes are `bytes`) in
/// the debug files next to the vmlinux: `<debug>/boot/vmlinux-<r>` → `<debug>/lib/modules/<r>/`
/// (Debian's `-dbg` packages), or the vmlinux's own directory (`<debug>/lib/modules/<r>/vmlinux`).
/// Distributions install modules stripped of their debugging symbols, STT_FILE included; a
/// copy with the same GNU build-id is the same link, its symbols in the same order.
pub fn debug_copy(
    ko: &Path,
    bytes: &[u8],
    modules_dir: &Path,
    vmlinux: &Path,
    release: &str,
) -> Option<PathBuf> {
    let rel = ko.strip_prefix(modules_dir).ok()?;
    let name = rel.file_name()?.to_string_lossy().into_owned();
    let stem = strip_suffix(&name)?;
    let rel = rel.with_file_name(format!("{stem}.ko"));
    let vm_dir = vmlinux.parent()?;
    let mut dirs = vec![vm_dir.to_path_buf()];
    if let Some(debug) = vm_dir.parent() {
        dirs.push(debug.join("lib/modules").join(release));
    }
    let id = build_id(bytes)?;
    dirs.into_iter()
        .map(|d| d.join(&rel))
        .find(|p| p.is_file() && read(p).ok().and_then(|b| build_id(&b)).as_ref() == Some(&id))
}

/// `name` without a module suffix (`kernel/fs/binfmt_misc.ko.xz` → `kernel/fs/binfmt_misc`).
fn strip_suffix(name: &str) -> Option<&str> {
    SUFFIXES.iter().rev().find_map(|s| name.strip_suffix(s))
}

/// The installed modules of one kernel.
pub struct ModulesDir {
    pub dir: PathBuf,
    /// Every module, relative to `dir` without suffix (`kernel/fs/binfmt_misc`), and its file.
    modules: Vec<(String, PathBuf)>,
}

impl ModulesDir {
    /// The modules `modules.order` and `modules.dep` list (a package's files have no
    /// `modules.dep`: depmod writes it at install), else every module file below `dir`.
    pub fn open(dir: &Path) -> Result<ModulesDir> {
        let mut listed: Vec<String> = Vec::new();
        for f in ["modules.order", "modules.dep"] {
            if let Ok(text) = fs::read_to_string(dir.join(f)) {
                for l in text.lines() {
                    let entry = l.split(':').next().unwrap_or("").trim();
                    if let Some(m) = strip_suffix(entry) {
                        if !listed.iter().any(|x| x == m) {
                            listed.push(m.to_string());
                        }
                    }
                }
            }
        }
        let mut modules = Vec::new();
        for m in &listed {
            if let Some(p) = SUFFIXES
                .iter()
                .map(|s| dir.join(format!("{m}{s}")))
                .find(|p| p.is_file())
            {
                modules.push((m.clone(), p));
            }
        }
        if modules.is_empty() {
            walk(dir, dir, &mut modules)?;
        }
        Ok(ModulesDir {
            dir: dir.to_path_buf(),
            modules,
        })
    }

    /// One module of the directory (the first listed): its vermagic says which kernel the
    /// directory belongs to.
    pub fn sample(&self) -> Option<&Path> {
        self.modules.first().map(|(_, p)| p.as_path())
    }

    /// The module kbuild installs for `module` (as the target build's `modules.order` names
    /// it: `fs/binfmt_misc.o` or `fs/binfmt_misc.ko`): `kernel/<dir>/<name>` with any suffix,
    /// or the same path under another install directory (`updates/`, `extra/`).
    pub fn find(&self, module: &str) -> Option<&Path> {
        let stem = module
            .strip_suffix(".o")
            .or_else(|| strip_suffix(module))
            .unwrap_or(module);
        let exact = format!("kernel/{stem}");
        self.modules
            .iter()
            .find(|(m, _)| *m == exact || m == stem)
            .or_else(|| {
                self.modules
                    .iter()
                    .find(|(m, _)| m.ends_with(&format!("/{stem}")))
            })
            .map(|(_, p)| p.as_path())
    }

    /// Modules whose kbuild directory (`kernel/<dir>/`) is `unit_dir` or one of its ancestors,
    /// nearest first: where a unit of `unit_dir` may be linked into a module of several objects.
    pub fn around(&self, unit_dir: &str) -> Vec<(&str, &Path)> {
        let mut out: Vec<(usize, &str, &Path)> = Vec::new();
        for (m, p) in &self.modules {
            let rel = m.strip_prefix("kernel/").unwrap_or(m);
            let dir = Path::new(rel)
                .parent()
                .map(|d| d.to_string_lossy().into_owned());
            let dir = dir.unwrap_or_default();
            let ancestor =
                unit_dir == dir || dir.is_empty() || unit_dir.starts_with(&format!("{dir}/"));
            if ancestor {
                out.push((dir.len(), rel, p));
            }
        }
        out.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(b.1)));
        out.into_iter().map(|(_, m, p)| (m, p)).collect()
    }
}

fn walk(root: &Path, dir: &Path, out: &mut Vec<(String, PathBuf)>) -> Result<()> {
    let Ok(rd) = fs::read_dir(dir) else {
        return Ok(());
    };
    let mut entries: Vec<_> = rd.flatten().collect();
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let p = e.path();
        let ft = e.file_type()?;
        if ft.is_dir() {
            walk(root, &p, out)?;
        } else if let Some(rel) = p
            .strip_prefix(root)
            .ok()
            .and_then(|r| r.to_str())
            .and_then(strip_suffix)
        {
            out.push((rel.to_string(), p.clone()));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ELF: &[u8] = b"\x7fELF\x02\x01\x01\0rest of a module";

    #[test]
    fn every_compression_decodes_to_the_same_bytes() {
        use std::io::Write as _;
        assert_eq!(decompress(ELF).unwrap(), ELF);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(ELF).unwrap();
        assert_eq!(decompress(&gz.finish().unwrap()).unwrap(), ELF);
        let mut xz = Vec::new();
        lzma_rs::xz_compress(&mut &ELF[..], &mut xz).unwrap();
        assert_eq!(decompress(&xz).unwrap(), ELF);
        let zst =
            ruzstd::encoding::compress_to_vec(ELF, ruzstd::encoding::CompressionLevel::Fastest);
        assert_eq!(decompress(&zst).unwrap(), ELF);
        assert!(decompress(b"plain text").is_err());
        let mut not_elf = Vec::new();
        lzma_rs::xz_compress(&mut &b"text"[..], &mut not_elf).unwrap();
        assert!(decompress(&not_elf).is_err());
    }

    #[test]
    fn modules_are_found_by_their_kbuild_path() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path();
        fs::create_dir_all(d.join("kernel/fs/ext4")).unwrap();
        fs::create_dir_all(d.join("kernel/drivers/net")).unwrap();
        fs::write(d.join("kernel/fs/binfmt_misc.ko.xz"), b"x").unwrap();
        fs::write(d.join("kernel/fs/ext4/ext4.ko"), b"x").unwrap();
        fs::write(d.join("kernel/drivers/net/dummy.ko.zst"), b"x").unwrap();
        // Without modules.order: every file below.
        let m = ModulesDir::open(d).unwrap();
        assert!(m
            .find("fs/binfmt_misc.o")
            .unwrap()
            .ends_with("binfmt_misc.ko.xz"));
        assert!(m.find("kernel/drivers/net/dummy.ko").is_some());
        assert_eq!(m.find("fs/nothere.o"), None);
        let around: Vec<&str> = m.around("fs/ext4").iter().map(|(n, _)| *n).collect();
        assert_eq!(around, ["fs/ext4/ext4", "fs/binfmt_misc"]);
        // modules.order decides the order (and which files count).
        fs::write(
            d.join("modules.order"),
            "kernel/drivers/net/dummy.ko\nkernel/fs/ext4/ext4.ko\n",
        )
        .unwrap();
        let m = ModulesDir::open(d).unwrap();
        assert!(m.sample().unwrap().ends_with("dummy.ko.zst"));
        assert_eq!(m.find("fs/binfmt_misc.o"), None);
    }
}
