//! The two locks of a run: the cache lock (one run at a time per kernel tree and cache
//! directory) and the source-tree lock (runs with different caches take turns patching one
//! source tree).

use std::fs;
use std::path::Path;

use anyhow::{bail, Context, Result};

use crate::kernel::Tree;
use crate::process::Interrupt;

/// One run at a time per kernel tree (and so per cache directory): an exclusive lock on a file
/// in the tree's work directory, held until the run ends. Its contents name the holder.
pub fn lock_tree(workdir: &Path, tree: &Tree) -> Result<fs::File> {
    use std::io::{Seek, Write};
    let path = workdir.join("lock");
    let mut f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    match f.try_lock() {
        Ok(()) => {}
        Err(fs::TryLockError::WouldBlock) => {
            let holder = fs::read_to_string(&path).unwrap_or_default();
            bail!(
                "another klpgen run is using {} ({}); wait for it to finish",
                tree.source.display(),
                holder.trim()
            );
        }
        Err(fs::TryLockError::Error(e)) => {
            return Err(e).with_context(|| format!("cannot lock {}", path.display()))
        }
    }
    f.set_len(0)?;
    f.rewind()?;
    let args: Vec<String> = std::env::args().collect();
    writeln!(f, "pid {}: {}", std::process::id(), args.join(" "))?;
    Ok(f)
}

/// The source tree is patched in place: runs with different klpgen caches (their own locks)
/// must still take turns on it, or one would build the other's patched files. A lock on the
/// directory itself (nothing is written there); a second run waits, interruptibly.
pub fn lock_source(source: &Path, intr: &Interrupt) -> Result<fs::File> {
    let f = fs::File::open(source).with_context(|| format!("cannot open {}", source.display()))?;
    let mut said = false;
    loop {
        match f.try_lock() {
            Ok(()) => return Ok(f),
            Err(fs::TryLockError::WouldBlock) => {
                if !said {
                    crate::progress::message(&format!(
                        "klpgen: waiting for another klpgen run that is patching {}",
                        source.display()
                    ));
                    said = true;
                }
                intr.check()?;
                std::thread::sleep(std::time::Duration::from_millis(200));
            }
            Err(fs::TryLockError::Error(e)) => {
                return Err(e).with_context(|| format!("cannot lock {}", source.display()))
            }
        }
    }
}
