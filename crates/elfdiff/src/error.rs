//! Typed errors of the differ: each names the object and what was wrong with it.

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{object}: malformed ELF object: {what}")]
    Malformed { object: String, what: String },
    #[error(
        "{object}: {} objects are not read by klpgen (it reads {} objects)",
        crate::arch::unsupported_machine(*machine),
        crate::arch::supported()
    )]
    UnsupportedArch { object: String, machine: u16 },
    /// A supported machine, but a variant of it klpgen does not read (another byte order or
    /// ABI).
    #[error("{object}: {what}")]
    UnsupportedVariant { object: String, what: String },
    /// The remedy (entry sizes from the target's DWARF, or given by hand) is the caller's to
    /// name: it knows how they are given.
    #[error("{object}: special section {section} has an unknown entry size")]
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
