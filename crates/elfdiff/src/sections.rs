//! Section roles: the special sections whose entries point into functions (cut per entry by
//! the plan), the sections objtool writes, and which other sections klpgen knows; any other
//! section pointing into changed code is refused rather than silently dropped.

/// Sections whose entries point into functions and must be cut per entry.
/// `None` means the entry size must come from the target (DWARF struct) or the caller.
pub(crate) const SPECIAL_SECTIONS: &[(&str, Option<u64>, Option<&str>)] = &[
    ("__mcount_loc", Some(8), None),
    ("__bug_table", None, Some("bug_entry")),
    ("__ex_table", None, Some("exception_table_entry")),
    ("__jump_table", None, Some("jump_entry")),
    (".altinstructions", None, Some("alt_instr")),
    (".smp_locks", Some(4), None),
    (".static_call_sites", None, Some("static_call_site")),
    // Pointers to `struct pi_entry` objects (`_entry`), not the structures themselves.
    (".printk_index", Some(8), None),
    (".retpoline_sites", Some(4), None),
    (".return_sites", Some(4), None),
    (".call_sites", Some(4), None),
    (".ibt_endbr_seal", Some(4), None),
    (".cfi_sites", Some(4), None),
];

/// Sections objtool writes; when objtool runs again on the livepatch (on the linked module: x86
/// with IBT or Clang LTO, "delayed objtool"; or, on ORC targets that run it per object, klpgen
/// runs it on the livepatch object), copies would collide with what it regenerates.
pub(crate) const OBJTOOL_SECTIONS: &[&str] = &[
    ".retpoline_sites",
    ".return_sites",
    ".call_sites",
    ".ibt_endbr_seal",
    ".cfi_sites",
    ".static_call_sites",
    ".orc_unwind",
    ".orc_unwind_ip",
    ".orc_header",
];

/// Sections whose role klpgen knows: ordinary code and data, metadata it drops or that
/// kbuild regenerates, and the special sections above. Any other section that points into
/// changed code is refused rather than silently dropped.
pub fn is_known_section(name: &str) -> bool {
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
        ".orc_",
        ".altinstr_replacement",
        ".altinstr_aux",
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
    SPECIAL_SECTIONS.iter().any(|(s, _, _)| *s == name)
        || OBJTOOL_SECTIONS.contains(&name)
        || PREFIXES.iter().any(|p| name.starts_with(p))
}

/// The DWARF structure that gives each special section's entry size, for callers that read
/// it from the target.
pub fn special_section_structs() -> impl Iterator<Item = (&'static str, &'static str)> {
    SPECIAL_SECTIONS
        .iter()
        .filter_map(|(s, _, st)| st.map(|st| (*s, st)))
}

/// Section names whose contents are data a running kernel owns (checked for changes).
pub(crate) fn is_data_section(name: &str) -> bool {
    [".data", ".rodata", ".bss", ".init.data", ".init.rodata"]
        .iter()
        .any(|p| name == *p || name.starts_with(&format!("{p}.")))
        && !name.starts_with(".rodata.str")
        && !name.starts_with(".rodata.cst")
}

/// `__init` and `__exit` code and data: freed after boot, or never loaded.
pub(crate) fn is_init_section(name: &str) -> bool {
    name.starts_with(".init.") || name.starts_with(".exit.")
}
