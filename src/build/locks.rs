//! The two locks of a run: the cache lock (one run at a time per kernel tree and cache
//! directory) and the source-tree lock (runs with different caches take turns patching one
//! source tree). A run that finds either lock held waits for it, interruptibly, saying whom it
//! waits for and for what; with `--no-wait` it fails at once instead (CI jobs that would rather
//! fail than queue).

use std::fs;
use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::process::Interrupt;

/// How often a waiting run tries the lock again (and looks at Ctrl-C).
const POLL: Duration = Duration::from_millis(200);

/// Whether a run waits for a held lock or fails at once (`--no-wait`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wait {
    Yes,
    No,
}

/// One run at a time per kernel tree and cache: an exclusive lock on `<workdir>/lock`, held
/// until the run ends. Its contents name the holder (`pid N: command line`), so that a second
/// run can say whom it waits for; it waits until the holder is done (or fails at once with
/// [`Wait::No`]). `source` only helps the user see which of their trees the cache directory
/// belongs to.
pub fn lock_tree(workdir: &Path, source: &Path, wait: Wait, intr: &Interrupt) -> Result<fs::File> {
    use std::io::{Seek, Write};
    let path = workdir.join("lock");
    let mut f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    // The holder last announced; the lock may pass to another waiter before this run gets it,
    // and then the new holder is announced too.
    let mut announced: Option<String> = None;
    loop {
        match f.try_lock() {
            Ok(()) => break,
            Err(fs::TryLockError::WouldBlock) => {
                let holder = holder_of(&path);
                if wait == Wait::No {
                    bail!(
                        "klpgen's cache directory {} (for {}) is in use by another klpgen run ({holder}); not waiting for it (--no-wait)",
                        workdir.display(),
                        source.display()
                    );
                }
                if announced.as_deref() != Some(holder.as_str()) {
                    crate::progress::message(&format!(
                        "klpgen: waiting for another klpgen run ({holder}) to finish with klpgen's cache directory {} (for {}); Ctrl-C to stop, --no-wait to fail instead",
                        workdir.display(),
                        source.display()
                    ));
                    announced = Some(holder);
                }
                intr.check()?;
                std::thread::sleep(POLL);
            }
            Err(fs::TryLockError::Error(e)) => {
                return Err(e).with_context(|| format!("cannot lock {}", path.display()))
            }
        }
    }
    f.set_len(0)?;
    f.rewind()?;
    let args: Vec<String> = std::env::args().collect();
    writeln!(f, "pid {}: {}", std::process::id(), args.join(" "))?;
    Ok(f)
}

/// Who holds the lock file at `path`, as its holder wrote it; the holder may not have written
/// it yet (it locks, then writes).
fn holder_of(path: &Path) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    match text.trim() {
        "" => "its pid not yet recorded".to_string(),
        t => t.to_string(),
    }
}

/// The source tree is patched in place: runs with different klpgen caches (their own locks)
/// must still take turns on it, or one would build the other's patched files. A lock on the
/// directory itself (nothing is written there); a second run waits, interruptibly, or fails
/// at once with [`Wait::No`].
pub fn lock_source(source: &Path, wait: Wait, intr: &Interrupt) -> Result<fs::File> {
    let f = fs::File::open(source).with_context(|| format!("cannot open {}", source.display()))?;
    let mut said = false;
    loop {
        match f.try_lock() {
            Ok(()) => return Ok(f),
            Err(fs::TryLockError::WouldBlock) => {
                if wait == Wait::No {
                    bail!(
                        "another klpgen run is patching {}; not waiting for it (--no-wait)",
                        source.display()
                    );
                }
                if !said {
                    crate::progress::message(&format!(
                        "klpgen: waiting for another klpgen run that is patching {}",
                        source.display()
                    ));
                    said = true;
                }
                intr.check()?;
                std::thread::sleep(POLL);
            }
            Err(fs::TryLockError::Error(e)) => {
                return Err(e).with_context(|| format!("cannot lock {}", source.display()))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_held_cache_lock_names_its_holder_and_the_cache() {
        let dir = tempfile::tempdir().unwrap();
        let intr = Interrupt::default();
        let held = lock_tree(dir.path(), Path::new("/src/linux"), Wait::Yes, &intr).unwrap();
        let text = fs::read_to_string(dir.path().join("lock")).unwrap();
        assert!(
            text.starts_with(&format!("pid {}: ", std::process::id())),
            "{text}"
        );
        // flock locks belong to the open file description: a second open in this process
        // conflicts with the first like another process's would.
        let e = lock_tree(dir.path(), Path::new("/src/linux"), Wait::No, &intr).unwrap_err();
        let msg = format!("{e:#}");
        assert!(msg.contains(&dir.path().display().to_string()), "{msg}");
        assert!(msg.contains("(for /src/linux)"), "{msg}");
        assert!(
            msg.contains(&format!("pid {}", std::process::id())),
            "{msg}"
        );
        assert!(msg.contains("--no-wait"), "{msg}");
        drop(held);
        lock_tree(dir.path(), Path::new("/src/linux"), Wait::No, &intr).unwrap();
    }

    #[test]
    fn a_waiting_run_stops_when_interrupted() {
        let dir = tempfile::tempdir().unwrap();
        let _held = lock_tree(dir.path(), dir.path(), Wait::Yes, &Interrupt::default()).unwrap();
        let intr = Interrupt::default();
        let stop = intr.clone();
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            stop.set();
        });
        let e = lock_tree(dir.path(), dir.path(), Wait::Yes, &intr).unwrap_err();
        assert!(
            e.downcast_ref::<crate::process::Interrupted>().is_some(),
            "{e:#}"
        );
        t.join().unwrap();
        let _src = lock_source(dir.path(), Wait::Yes, &Interrupt::default()).unwrap();
        let e = lock_source(dir.path(), Wait::No, &Interrupt::default()).unwrap_err();
        assert!(format!("{e}").contains("--no-wait"), "{e}");
    }
}
