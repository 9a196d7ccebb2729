//! Runtime constants (the kernel's `<asm/runtime-const.h>`): code whose immediate the kernel
//! patches into vmlinux once at boot, and never into a module. Their entries say where; the
//! refusals (`checks.rs`) and the plan's rewrite of pointer constants read them.

use crate::model::{Object, Patched, SecIdx, SymIdx, SymKind};

/// The two kinds of runtime constant (the kernel's `<asm/runtime-const.h>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RuntimeConstKind {
    /// `runtime_const_ptr(sym)`: section `runtime_ptr_<sym>`, a pointer-sized immediate.
    Ptr,
    /// `runtime_const_shift_right_32(val, sym)`: section `runtime_shift_<sym>`, a shift count.
    Shift,
}

/// A section of runtime-constant entries: its kind and the variable it names.
pub(crate) fn runtime_const_kind(section: &str) -> Option<(RuntimeConstKind, &str)> {
    if let Some(v) = section.strip_prefix("runtime_ptr_") {
        return Some((RuntimeConstKind::Ptr, v));
    }
    section
        .strip_prefix("runtime_shift_")
        .map(|v| (RuntimeConstKind::Shift, v))
}

/// The kernel helpers (Linux 6.12) that use a runtime constant, for refusal hints.
pub(crate) fn runtime_const_user(variable: &str) -> Option<&'static str> {
    match variable {
        "d_hash_shift" | "dentry_hashtable" => Some("d_hash() in fs/dcache.c"),
        "USER_PTR_MAX" => Some("__access_ok() (access_ok, user_access_begin, ...)"),
        _ => None,
    }
}

/// One entry of a runtime-constant section of the patched object.
#[derive(Debug, Clone)]
pub(crate) struct RuntimeConstSite<'d> {
    pub kind: RuntimeConstKind,
    /// `runtime_ptr_<variable>` or `runtime_shift_<variable>`.
    pub section: &'d str,
    pub variable: &'d str,
    /// The code section and offset the entry points at (the immediate to patch).
    pub code: SecIdx<Patched>,
    pub offset: u64,
    /// The function containing it.
    pub func: Option<SymIdx<Patched>>,
}

/// The entries of the patched object's runtime-constant sections (`runtime_ptr_<sym>`,
/// `runtime_shift_<sym>`): where each patches code. Entries that point nowhere in the
/// object are left out (the linker could not resolve them either).
pub(crate) fn sites<'d>(obj: &Object<'d, Patched>) -> Vec<RuntimeConstSite<'d>> {
    let mut out = Vec::new();
    for sec in obj.section_indices() {
        let s = obj.sec(sec);
        let Some((kind, variable)) = runtime_const_kind(s.name) else {
            continue;
        };
        for r in &s.relocs {
            // `.long 1b - N - .`: the place patched is the target of the PC-relative
            // entry, symbol plus addend (no instruction lies between in a data section).
            let t = obj.sym(r.sym);
            let Some(code) = t.section else { continue };
            let Some(offset) = u64::try_from(r.addend)
                .ok()
                .and_then(|a| t.value.checked_add(a))
            else {
                continue;
            };
            let func = obj
                .symbol_at(code, offset)
                .filter(|&f| obj.sym(f).kind == SymKind::Func);
            out.push(RuntimeConstSite {
                kind,
                section: s.name,
                variable,
                code,
                offset,
                func,
            });
        }
    }
    out
}
