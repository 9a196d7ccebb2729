//! Patch-author annotations: the `.klpgen.*` records that `include/klpgen/klpgen.h` leaves in
//! the patched object (functions and sections whose changes are ignored, functions replaced
//! although unchanged, livepatch callbacks).
//! They are read from the patched object only, checked here, and acted on by the differ and
//! the inclusion plan; they never reach the livepatch module.
//!
//! `KLPGEN_IGNORE_FUNCTION`/`_SECTION` and `KLPGEN_FORCE_FUNCTION` leave NUL-terminated names in
//! `.klpgen.ignore.functions`/`.sections` and `.klpgen.force.functions`; `KLPGEN_<KIND>_CALLBACK`
//! a function pointer in `.klpgen.callbacks.<kind>`. What cannot be honoured is refused
//! (`refuse.annotation.*`): an unknown `.klpgen.*` section, a malformed record, an ignore or force
//! of a function the object does not define, one both ignored and forced, a callback that is no
//! function of the unit or is `__init`; two callbacks of a kind are `refuse.duplicate-callback`.

use serde::Serialize;

use crate::model::{Object, Patched, SecIdx, SymIdx, SymKind};
use crate::refusal::{self, Refusal};

/// Section of NUL-terminated names of functions whose changes are ignored.
pub const IGNORE_FUNCTIONS: &str = ".klpgen.ignore.functions";
/// Section of NUL-terminated section names (a trailing `*` matches a prefix).
pub const IGNORE_SECTIONS: &str = ".klpgen.ignore.sections";
/// Section of NUL-terminated names of functions replaced even when unchanged.
pub const FORCE_FUNCTIONS: &str = ".klpgen.force.functions";
/// Prefix of the callback sections, one per kind (`.klpgen.callbacks.post_patch`): arrays of
/// pointers to functions.
pub const CALLBACK_PREFIX: &str = ".klpgen.callbacks.";

/// Which member of `struct klp_callbacks` a callback fills.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CallbackKind {
    PrePatch,
    PostPatch,
    PreUnpatch,
    PostUnpatch,
}

impl CallbackKind {
    pub const ALL: [CallbackKind; 4] = [
        CallbackKind::PrePatch,
        CallbackKind::PostPatch,
        CallbackKind::PreUnpatch,
        CallbackKind::PostUnpatch,
    ];

    /// The `struct klp_callbacks` member (and the section suffix).
    pub fn member(self) -> &'static str {
        match self {
            CallbackKind::PrePatch => "pre_patch",
            CallbackKind::PostPatch => "post_patch",
            CallbackKind::PreUnpatch => "pre_unpatch",
            CallbackKind::PostUnpatch => "post_unpatch",
        }
    }

    /// The header's macro for this kind.
    pub fn macro_name(self) -> &'static str {
        match self {
            CallbackKind::PrePatch => "KLPGEN_PRE_PATCH_CALLBACK",
            CallbackKind::PostPatch => "KLPGEN_POST_PATCH_CALLBACK",
            CallbackKind::PreUnpatch => "KLPGEN_PRE_UNPATCH_CALLBACK",
            CallbackKind::PostUnpatch => "KLPGEN_POST_UNPATCH_CALLBACK",
        }
    }

    /// Only the pre-patch callback returns a value (non-zero aborts the patch).
    pub fn returns_int(self) -> bool {
        self == CallbackKind::PrePatch
    }

    pub fn from_member(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.member() == s)
    }
}

/// One callback record: the kind and the function of the patched object it names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Callback {
    pub kind: CallbackKind,
    pub func: SymIdx<Patched>,
}

/// The annotations of one patched object.
#[derive(Debug, Clone, Default)]
pub struct Annotations {
    /// Source function names (`KLPGEN_IGNORE_FUNCTION`).
    pub ignore_functions: Vec<String>,
    /// Section names or `prefix*` patterns (`KLPGEN_IGNORE_SECTION`).
    pub ignore_sections: Vec<String>,
    /// Source function names (`KLPGEN_FORCE_FUNCTION`).
    pub force_functions: Vec<String>,
    pub callbacks: Vec<Callback>,
    /// Records that are malformed, unknown or contradictory.
    pub refusals: Vec<Refusal>,
}

/// The source function a symbol belongs to: GCC's clones and split parts (`f.isra.0`,
/// `f.cold`, `f.part.1`) keep the C identifier before the first dot.
pub fn source_function(name: &str) -> &str {
    name.split('.').next().unwrap_or(name)
}

/// The NUL-terminated names in a record section (padding between them is skipped).
fn names(
    obj: &Object<'_, Patched>,
    section: &str,
    out: &mut Vec<String>,
    refusals: &mut Vec<Refusal>,
) {
    let Some(sec) = obj.find_section(section) else {
        return;
    };
    let s = obj.sec(sec);
    if !s.relocs.is_empty() || s.is_nobits() {
        refusals.push(refusal::annotation_not_names(section));
        return;
    }
    for raw in s.data.split(|&b| b == 0).filter(|r| !r.is_empty()) {
        match std::str::from_utf8(raw) {
            Ok(n) if n.bytes().all(|b| b.is_ascii_graphic()) => {
                if !out.iter().any(|o| o == n) {
                    out.push(n.to_string());
                }
            }
            _ => refusals.push(refusal::annotation_unprintable(section, raw)),
        }
    }
}

/// Whether section `name` matches an ignore pattern (exact, or `prefix*`).
pub fn section_matches(pattern: &str, name: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => name.starts_with(prefix),
        None => name == pattern,
    }
}

impl Annotations {
    /// Read and check the annotations of a patched object.
    pub fn read(obj: &Object<'_, Patched>) -> Self {
        let mut a = Annotations::default();
        names(
            obj,
            IGNORE_FUNCTIONS,
            &mut a.ignore_functions,
            &mut a.refusals,
        );
        names(
            obj,
            IGNORE_SECTIONS,
            &mut a.ignore_sections,
            &mut a.refusals,
        );
        names(
            obj,
            FORCE_FUNCTIONS,
            &mut a.force_functions,
            &mut a.refusals,
        );
        for sec in obj.section_indices() {
            let s = obj.sec(sec);
            if !s.name.starts_with(".klpgen.")
                || s.name == IGNORE_FUNCTIONS
                || s.name == IGNORE_SECTIONS
                || s.name == FORCE_FUNCTIONS
            {
                continue;
            }
            match s
                .name
                .strip_prefix(CALLBACK_PREFIX)
                .and_then(CallbackKind::from_member)
            {
                Some(kind) => a.read_callbacks(obj, sec, kind),
                None => a.refusals.push(refusal::annotation_unknown_section(s.name)),
            }
        }
        let mut seen: Vec<(CallbackKind, SymIdx<Patched>)> = Vec::new();
        for c in &a.callbacks {
            if let Some((_, first)) = seen.iter().find(|(k, _)| *k == c.kind) {
                a.refusals.push(duplicate_callback(
                    c.kind,
                    obj.sym(*first).name,
                    obj.sym(c.func).name,
                ));
            } else {
                seen.push((c.kind, c.func));
            }
        }
        a.callbacks.sort_by_key(|c| (c.kind, c.func));
        a.callbacks.dedup();
        for (list, section, what) in [
            (&a.ignore_functions, IGNORE_FUNCTIONS, "IGNORE"),
            (&a.force_functions, FORCE_FUNCTIONS, "FORCE"),
        ] {
            for f in list {
                let defined = obj.symbols.iter().any(|s| {
                    s.kind == SymKind::Func && s.section.is_some() && source_function(s.name) == f
                });
                if !defined {
                    a.refusals
                        .push(refusal::annotation_undefined(what, f, section));
                }
            }
        }
        for f in &a.force_functions {
            if a.ignore_functions.contains(f) {
                a.refusals
                    .push(refusal::annotation_ignored_and_forced(f, FORCE_FUNCTIONS));
            }
        }
        a
    }

    /// The callbacks of kind `kind` in section `sec`: an array of pointers to functions.
    fn read_callbacks(
        &mut self,
        obj: &Object<'_, Patched>,
        sec: SecIdx<Patched>,
        kind: CallbackKind,
    ) {
        let s = obj.sec(sec);
        if !s.size.is_multiple_of(8) || s.is_nobits() {
            self.refusals
                .push(refusal::annotation_not_pointers(s.name, s.size));
            return;
        }
        for entry in 0..s.size / 8 {
            let at = entry * 8;
            let r = s
                .relocs_in(at, at + 8)
                .iter()
                .find(|r| r.offset == at && obj.reloc_kind(r.r_type).width == 8);
            // The function the pointer holds: a named symbol, or a section symbol plus the
            // offset of the function's entry (for statics).
            let func = r.and_then(|r| {
                let t = obj.sym(r.sym);
                let f = match (t.kind, t.section) {
                    (SymKind::Section, Some(ts)) => {
                        let off = u64::try_from(r.addend).ok()?;
                        let f = obj.symbol_at(ts, off)?;
                        (obj.sym(f).value == off).then_some(f)?
                    }
                    _ => (r.addend == 0).then_some(r.sym)?,
                };
                let s = obj.sym(f);
                (s.kind == SymKind::Func && s.section.is_some()).then_some(f)
            });
            match func {
                Some(f) => {
                    let fsec = obj.sec(obj.sym(f).section.expect("defined")).name;
                    if fsec.starts_with(".init.") || fsec.starts_with(".exit.") {
                        self.refusals.push(refusal::annotation_init_callback(
                            kind.member(),
                            obj.sym(f).name,
                            fsec,
                        ));
                        continue;
                    }
                    self.callbacks.push(Callback { kind, func: f });
                }
                _ => {
                    let what = r.map_or("?", |r| obj.sym(r.sym).name);
                    self.refusals
                        .push(refusal::annotation_not_a_function(s.name, entry, what));
                }
            }
        }
    }

    /// Whether a function (by its symbol name) is forced (replaced even when unchanged).
    pub fn forces_function(&self, name: &str) -> bool {
        let base = source_function(name);
        self.force_functions.iter().any(|f| f == base)
    }

    /// Whether a function (by its symbol name) is ignored by name.
    pub fn ignores_function(&self, name: &str) -> bool {
        let base = source_function(name);
        self.ignore_functions.iter().any(|f| f == base)
    }

    /// The ignore pattern that matches a section, if any.
    pub fn ignoring_section(&self, name: &str) -> Option<&str> {
        self.ignore_sections
            .iter()
            .find(|p| section_matches(p, name))
            .map(String::as_str)
    }

    pub fn is_empty(&self) -> bool {
        self.ignore_functions.is_empty()
            && self.ignore_sections.is_empty()
            && self.force_functions.is_empty()
            && self.callbacks.is_empty()
    }
}

/// Two callbacks of one kind for one patched object: `struct klp_callbacks` has room for one.
pub fn duplicate_callback(kind: CallbackKind, first: &str, second: &str) -> Refusal {
    refusal::duplicate_callback(
        kind.member(),
        kind.macro_name(),
        &format!("{CALLBACK_PREFIX}{}", kind.member()),
        first,
        second,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_and_names() {
        assert!(section_matches(".init.text", ".init.text"));
        assert!(!section_matches(".init.text", ".init.text.x"));
        assert!(section_matches(".init.*", ".init.data"));
        assert!(section_matches("*", ".text.f"));
        assert_eq!(source_function("f.isra.0.cold"), "f");
        assert_eq!(source_function("f"), "f");
        for k in CallbackKind::ALL {
            assert_eq!(CallbackKind::from_member(k.member()), Some(k));
        }
        assert_eq!(CallbackKind::from_member("patch"), None);
    }
}
