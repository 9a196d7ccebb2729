//! patchgen: turn an elfdiff plan into the pieces of a livepatch module — the object with the
//! new code (`writer`), bindings of its references to the target (`target`), the module sources
//! (`kmod`), the klp markings applied to the linked `.ko` (`klp`) with klpgen's record of what
//! it built (`manifest`), and the verification of a finished module against its target
//! (`check`). The kernel's livepatch ELF format (klp symbol and section names, their limits
//! and markings) has one home, `klpsym`, which the writer, the marker and the checker share.
//!
//! **This crate never spawns processes, writes files or prints.** It maps bytes to bytes.
#![forbid(unsafe_code)]

pub mod check;
mod elf;
pub mod klp;
pub mod klpsym;
pub mod kmod;
pub mod manifest;
pub mod patchfile;
pub mod target;
#[cfg(test)]
mod testimage;
pub mod writer;

/// The most alignment padding a written object (`writer`) or rewritten module (`klp`) may need,
/// summed over its sections. Real modules need a few pages at most; the ELF writers lay out
/// file offsets by alignment, so without a bound a corrupt `sh_addralign` would make them
/// allocate gigabytes.
pub const MAX_ALIGNMENT_PADDING: u64 = 16 << 20;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("target {target}: {what}")]
    Target { target: String, what: String },
    #[error("symbol {symbol} ({}) not found in target {target}: cannot bind a klp relocation to it", if *.local { "static" } else { "global, not exported" })]
    MissingSymbol {
        target: String,
        symbol: String,
        local: bool,
    },
    #[error("klp symbol name {name} is longer than the kernel accepts")]
    NameTooLong { name: String },
    #[error("module {module}: {what}")]
    Module { module: String, what: String },
    #[error("struct {structure} in the target: {what}")]
    Layout { structure: String, what: String },
    #[error("cannot write the livepatch object: {0}")]
    Write(String),
    #[error("internal error: {0}")]
    Internal(String),
}
