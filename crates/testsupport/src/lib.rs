//! Test support shared by the integration tests of the workspace (a dev-dependency only, never
//! part of klpgen): small relocatable objects written with `object` (`objwrite`), the gcc flags
//! of a kernel-like build (`gcc`), a readelf-like dump (`elfdump`), snapshot files compared
//! with a unified diff (`snapshot`) and, with the `fixture` feature, the C fixture harness of
//! `tests/fixtures/*.c` (`fixture`, with the `//# explain:` checks in `explain`).
//!
//! Unlike the library crates it runs gcc, reads and writes files and the environment: it is
//! test code (the tidy test exempts it).
#![forbid(unsafe_code)]

use std::path::Path;

pub mod elfdump;
#[cfg(feature = "fixture")]
pub mod explain;
#[cfg(feature = "fixture")]
pub mod fixture;
pub mod gcc;
pub mod objwrite;
pub mod snapshot;

/// The repository's root (the root package's `CARGO_MANIFEST_DIR`): this crate lives in
/// `crates/testsupport`, so paths such as `tests/fixtures` resolve the same from every caller.
pub fn repo_root() -> &'static Path {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    here.parent()
        .and_then(Path::parent)
        .expect("crates/testsupport has a grandparent")
}

/// The library crates' directories (`crates/*` but this one, sorted): the code the libraries'
/// invariants and the refusal catalogue are about. This crate is test code, not a library.
pub fn library_crates() -> Vec<std::path::PathBuf> {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut out: Vec<_> = std::fs::read_dir(repo_root().join("crates"))
        .expect("crates/ exists")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.join("Cargo.toml").is_file() && p.file_name() != here.file_name())
        .collect();
    out.sort();
    out
}
