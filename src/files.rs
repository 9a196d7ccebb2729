//! Writing klpgen's outputs: files replaced atomically (a reader never sees half a module or
//! report) and copies into directories made on demand.

use std::fs;
use std::path::Path;

use anyhow::{bail, Context, Result};

/// Write `bytes` to `path` through a temporary file beside it and a rename, creating the
/// directory first.
pub fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let tmp = path.with_extension("klpgen-tmp");
    fs::write(&tmp, bytes).with_context(|| format!("cannot write {}", tmp.display()))?;
    fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))?;
    if !path.is_file() {
        bail!("{} was not written", path.display());
    }
    Ok(())
}

/// Copy `from` to `to`, creating `to`'s directory first.
pub fn copy_to(from: &Path, to: &Path) -> Result<()> {
    if let Some(d) = to.parent() {
        fs::create_dir_all(d)?;
    }
    fs::copy(from, to)
        .with_context(|| format!("cannot copy {} to {}", from.display(), to.display()))?;
    Ok(())
}
