//! Typed errors of the differ: each names the object and what was wrong with it.

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{object}: malformed ELF object: {what}")]
    Malformed { object: String, what: String },
    #[error("{object}: machine {machine} is not supported (x86-64 only so far)")]
    UnsupportedArch { object: String, machine: u16 },
    #[error("{object}: special section {section} has an unknown entry size; pass --entry-size {section}=BYTES or give a target with DWARF")]
    UnknownEntrySize { object: String, section: String },
    #[error("{object}: section {section} (copied piece by piece): {source}")]
    Carve {
        object: String,
        section: String,
        #[source]
        source: crate::carve::CarveError,
    },
    #[error("{what}: DWARF: {detail}")]
    Dwarf { what: String, detail: String },
}
