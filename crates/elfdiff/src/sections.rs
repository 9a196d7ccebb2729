//! Section roles: which sections klpgen knows (ordinary code and data, metadata, and the
//! machine's special and objtool sections, [`Arch::special_sections`]); any other section
//! pointing into changed code is refused rather than silently dropped. Also which sections
//! hold data the running kernel owns, and `__init`/`__exit` ones.

use crate::arch::{self, Arch};

/// Sections whose role klpgen knows on `arch`: ordinary code and data, metadata it drops or
/// that kbuild regenerates, and the machine's special sections. Any other section that
/// points into changed code is refused rather than silently dropped.
pub fn is_known_section(arch: &dyn Arch, name: &str) -> bool {
    const PREFIXES: &[&str] = &[
        ".text",
        ".data",
        ".rodata",
        ".bss",
        ".init.",
        ".exit.",
        ".ref.",
        ".meminit",
        ".noinstr.text",
        ".entry.text",
        ".head.text",
        ".sched.text",
        ".cpuidle.text",
        ".spinlock.text",
        ".lock.text",
        ".irqentry.text",
        ".softirqentry.text",
        ".kprobes.text",
        ".debug",
        ".comment",
        ".note",
        ".discard",
        ".modinfo",
        "___ksymtab",
        "__ksymtab",
        "__kcrctab",
        ".export_symbol",
        "__param",
        "__patchable_function_entries",
        ".initcall",
        ".con_initcall",
        "_ftrace_events",
        "__tracepoints",
        "__bpf_raw_tp_map",
        "_ftrace_eval_map",
        ".static_call.text",
        ".static_call_tramp_key",
        ".gnu.",
        ".llvm_addrsig",
        ".init_array",
        ".ctors",
        ".eh_frame",
        ".note.GNU-stack",
    ];
    arch.special_sections().iter().any(|s| s.name == name)
        || arch.objtool_sections().contains(&name)
        || PREFIXES
            .iter()
            .chain(arch.known_section_prefixes())
            .any(|p| name.starts_with(p))
}

/// The DWARF structure that gives each special section's entry size (of every machine: the
/// target's DWARF has those of its own), for callers that read it from the target.
pub fn special_section_structs() -> impl Iterator<Item = (&'static str, &'static str)> {
    let mut out: Vec<(&'static str, &'static str)> = Vec::new();
    for s in arch::ALL.iter().flat_map(|a| a.special_sections()) {
        if let Some(layout) = s.layout {
            if !out.contains(&(s.name, layout)) {
                out.push((s.name, layout));
            }
        }
    }
    out.into_iter()
}

/// Section names whose contents are data a running kernel owns (checked for changes).
pub(crate) fn is_data_section(name: &str) -> bool {
    [".data", ".rodata", ".bss", ".init.data", ".init.rodata"]
        .iter()
        .any(|p| {
            name.strip_prefix(p)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('.'))
        })
        && !name.starts_with(".rodata.str")
        && !name.starts_with(".rodata.cst")
}

/// `__init` and `__exit` code and data: freed after boot, or never loaded.
pub(crate) fn is_init_section(name: &str) -> bool {
    name.starts_with(".init.") || name.starts_with(".exit.")
}
