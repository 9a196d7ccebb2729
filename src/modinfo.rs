//! A module object's `.modinfo`: its `key=value` strings and the module's name, read by
//! `klpgen build` (the modules patched code lives in, `import_ns=` tags), `klpgen check` and
//! the out-of-tree module support.

use std::path::Path;

use anyhow::{Context, Result};
use object::{Object as _, ObjectSection as _};

/// The values of `key` in an object's `.modinfo` (NUL-separated `key=value` strings), in
/// order; none when the object has no `.modinfo`.
pub fn values(file: &object::File<'_>, key: &str) -> Vec<String> {
    let modinfo = file
        .section_by_name(".modinfo")
        .and_then(|s| s.data().ok())
        .unwrap_or(&[]);
    modinfo
        .split(|&b| b == 0)
        .filter_map(|e| e.strip_prefix(key.as_bytes())?.strip_prefix(b"="))
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .collect()
}

/// The module name recorded in a `.ko` (modinfo `name=`), else its file stem.
pub fn module_name(ko: &Path, bytes: &[u8]) -> Result<String> {
    let file = object::File::parse(bytes)
        .with_context(|| format!("{} is not an ELF module", ko.display()))?;
    if let Some(name) = values(&file, "name").into_iter().next() {
        return Ok(name);
    }
    // The file name without its module suffix (`.ko`, `.ko.xz`, ...).
    let file = ko.file_name().map(|s| s.to_string_lossy().into_owned());
    let stem = file.map(|f| {
        let base = crate::kofile::SUFFIXES
            .iter()
            .rev()
            .find_map(|s| f.strip_suffix(s))
            .unwrap_or(&f)
            .to_string();
        base.replace('-', "_")
    });
    stem.context("module file has no name")
}
