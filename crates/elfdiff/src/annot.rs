//! Patch-author annotations: the `.klpgen.*` records that `include/klpgen/klpgen.h` leaves in
//! the patched object (functions and sections whose changes are ignored, functions replaced
//! although unchanged, livepatch callbacks, system states), and the `.kpatch.*` records of
//! kpatch-build's `kpatch-macros.h`, read as the same annotations (`annot/kpatch.rs`).
//! They are read from the patched object only, checked here, and acted on by the differ and
//! the inclusion plan; they never reach the livepatch module.
//!
//! `KLPGEN_IGNORE_FUNCTION`/`_SECTION` and `KLPGEN_FORCE_FUNCTION` leave NUL-terminated names in
//! `.klpgen.ignore.functions`/`.sections` and `.klpgen.force.functions`; `KLPGEN_<KIND>_CALLBACK`
//! a function pointer in `.klpgen.callbacks.<kind>`; `KLPGEN_STATE(id, version)` two 64-bit
//! numbers in `.klpgen.states`; klpgen's `kpatch-macros.h` maps `KPATCH_FORCE_UNSAFE` onto a
//! name in `.klpgen.force_unsafe.functions` (noted, no effect: upstream livepatch has no
//! per-function force). What cannot be honoured is refused (`refuse.annotation.*`): an unknown
//! `.klpgen.*` or `.kpatch.*` section, a malformed record, an ignore or force of a function the
//! object does not define, one both ignored and forced, a callback that is no function of the
//! unit or is `__init`, a state with id 0, a version past `unsigned int` or two versions of one
//! id; two callbacks of a kind are `refuse.duplicate-callback`.

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
/// Section of NUL-terminated names of functions `KPATCH_FORCE_UNSAFE` named (klpgen's
/// `kpatch-macros.h`).
pub const FORCE_UNSAFE: &str = ".klpgen.force_unsafe.functions";
/// Section of `KLPGEN_STATE` records: `{u64 id, u64 version}` each, no relocations.
pub const STATES: &str = ".klpgen.states";
/// The header klpgen's own records come from, for messages.
const HEADER: &str = "<klpgen/klpgen.h>";

mod kpatch;
pub use kpatch::{
    CALLBACK_PREFIX as KPATCH_CALLBACK_PREFIX, FORCE as KPATCH_FORCE,
    IGNORE_FUNCTIONS as KPATCH_IGNORE_FUNCTIONS, IGNORE_SECTIONS as KPATCH_IGNORE_SECTIONS,
};

/// Whether a section holds annotation records (klpgen's or kpatch's), which are read here and
/// never carried, bound or taken for a special section.
pub fn is_annotation_section(name: &str) -> bool {
    name.starts_with(".klpgen.") || name.starts_with(".kpatch.")
}

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

/// A system state the livepatch declares (`KLPGEN_STATE(id, version)`): one entry of
/// `klp_patch.states`, whose `data` the patch's callbacks set at run time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct State {
    /// Non-zero.
    pub id: u64,
    pub version: u32,
}

/// The annotations of one patched object.
#[derive(Debug, Clone, Default)]
pub struct Annotations {
    /// Source function names (`KLPGEN_IGNORE_FUNCTION`, `KPATCH_IGNORE_FUNCTION`).
    pub ignore_functions: Vec<String>,
    /// Section names or `prefix*` patterns (`KLPGEN_IGNORE_SECTION`, `KPATCH_IGNORE_SECTION`).
    pub ignore_sections: Vec<String>,
    /// Source function names (`KLPGEN_FORCE_FUNCTION`).
    pub force_functions: Vec<String>,
    pub callbacks: Vec<Callback>,
    /// Functions `KPATCH_FORCE_UNSAFE` names: accepted and noted, without effect.
    pub force_unsafe: Vec<String>,
    /// System states (`KLPGEN_STATE`), by id.
    pub states: Vec<State>,
    /// Records that are malformed, unknown or contradictory.
    pub refusals: Vec<Refusal>,
    /// The ignored functions and sections that kpatch's records (`.kpatch.ignore.*`) named, so
    /// that messages name the macro the author wrote.
    kpatch_functions: Vec<String>,
    kpatch_sections: Vec<String>,
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
        names(obj, FORCE_UNSAFE, &mut a.force_unsafe, &mut a.refusals);
        a.read_states(obj);
        kpatch::read(obj, &mut a);
        for sec in obj.section_indices() {
            let s = obj.sec(sec);
            if !s.name.starts_with(".klpgen.")
                || [
                    IGNORE_FUNCTIONS,
                    IGNORE_SECTIONS,
                    FORCE_FUNCTIONS,
                    FORCE_UNSAFE,
                    STATES,
                ]
                .contains(&s.name)
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
            (
                &a.ignore_functions,
                IGNORE_FUNCTIONS,
                "KLPGEN_IGNORE_FUNCTION",
            ),
            (&a.force_functions, FORCE_FUNCTIONS, "KLPGEN_FORCE_FUNCTION"),
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
                .push(refusal::annotation_not_pointers(s.name, s.size, 8, HEADER));
            return;
        }
        for entry in 0..s.size / 8 {
            self.callback_at(obj, sec, entry * 8, entry, kind);
        }
    }

    /// The callback whose pointer is at `at` of `sec` (record `entry`): a function of the
    /// unit, not `__init`/`__exit`.
    fn callback_at(
        &mut self,
        obj: &Object<'_, Patched>,
        sec: SecIdx<Patched>,
        at: u64,
        entry: u64,
        kind: CallbackKind,
    ) {
        let name = obj.sec(sec).name;
        match slot(obj, sec, at) {
            Slot::Function(f) => {
                let fsec = obj.sec(obj.sym(f).section.expect("defined")).name;
                if fsec.starts_with(".init.") || fsec.starts_with(".exit.") {
                    self.refusals.push(refusal::annotation_init_callback(
                        kind.member(),
                        obj.sym(f).name,
                        fsec,
                    ));
                    return;
                }
                self.callbacks.push(Callback { kind, func: f });
            }
            other => self.refusals.push(refusal::annotation_not_a_function(
                name,
                entry,
                &other.describe(),
            )),
        }
    }

    /// `KLPGEN_STATE` records: `{u64 id, u64 version}` each. A repeated id with the same version
    /// is one state (the macro in a header several files include).
    fn read_states(&mut self, obj: &Object<'_, Patched>) {
        let Some(sec) = obj.find_section(STATES) else {
            return;
        };
        let s = obj.sec(sec);
        if !s.relocs.is_empty() || s.is_nobits() || !s.size.is_multiple_of(16) {
            self.refusals
                .push(refusal::annotation_not_pointers(STATES, s.size, 16, HEADER));
            return;
        }
        let word = |i: usize| {
            let b: [u8; 8] = s.data[i * 8..i * 8 + 8].try_into().expect("8 bytes");
            // In the object's byte order (s390x is big-endian).
            object::Endian::read_u64_bytes(obj.arch.endianness(), b)
        };
        let mut conflicting = Vec::new();
        for r in 0..s.data.len() / 16 {
            let (id, version) = (word(2 * r), word(2 * r + 1));
            if id == 0 {
                self.refusals
                    .push(refusal::annotation_state_zero_id(STATES, version));
                continue;
            }
            let Ok(version) = u32::try_from(version) else {
                self.refusals
                    .push(refusal::annotation_state_version(STATES, id, version));
                continue;
            };
            match self.states.iter().position(|st| st.id == id) {
                Some(i) if self.states[i].version == version => {}
                Some(i) => {
                    let first = self.states[i].version;
                    self.refusals.push(refusal::annotation_state_conflict(
                        STATES,
                        id,
                        (first, "an earlier KLPGEN_STATE of this file"),
                        (version, &format!("record {r} of {STATES}")),
                    ));
                    conflicting.push(id);
                }
                None => self.states.push(State { id, version }),
            }
        }
        // A state refused for its versions is not declared at all.
        self.states.retain(|st| !conflicting.contains(&st.id));
        self.states.sort();
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

    /// The macro that ignores function `f` (a source function name), as the author wrote it.
    pub fn ignore_function_macro(&self, f: &str) -> String {
        if self.kpatch_functions.iter().any(|k| k == f) {
            format!("KPATCH_IGNORE_FUNCTION({f})")
        } else {
            format!("KLPGEN_IGNORE_FUNCTION({f})")
        }
    }

    /// The macro behind ignore pattern `p`, as the author wrote it.
    pub fn ignore_section_macro(&self, p: &str) -> String {
        if self.kpatch_sections.iter().any(|k| k == p) {
            format!("KPATCH_IGNORE_SECTION(\"{p}\")")
        } else {
            format!("KLPGEN_IGNORE_SECTION(\"{p}\")")
        }
    }

    /// What the annotations did that the author should know although nothing was refused:
    /// `KPATCH_FORCE_UNSAFE`, accepted without effect.
    pub fn notes(&self) -> Vec<String> {
        self.force_unsafe
            .iter()
            .map(|f| {
                format!("KPATCH_FORCE_UNSAFE({f}) has no effect: upstream livepatch has no per-function override of its consistency model, so {f} switches to the new code like every other function, once no task runs it (a transition that does not finish can be forced for the whole patch: echo 1 > /sys/kernel/livepatch/<module>/force)")
            })
            .collect()
    }

    pub fn is_empty(&self) -> bool {
        self.ignore_functions.is_empty()
            && self.ignore_sections.is_empty()
            && self.force_functions.is_empty()
            && self.callbacks.is_empty()
            && self.force_unsafe.is_empty()
            && self.states.is_empty()
    }
}

/// What the 8-byte pointer at an offset of a record section holds.
enum Slot {
    /// The entry of a function the object defines.
    Function(SymIdx<Patched>),
    /// A symbol the object only declares.
    Undefined(String),
    /// Bytes without a relocation (NULL when zero).
    Literal(u64),
    /// Anything else, described.
    Other(String),
}

impl Slot {
    fn describe(&self) -> String {
        match self {
            Slot::Function(_) => "a function".to_string(),
            Slot::Undefined(n) => format!("{n}, which this unit does not define"),
            Slot::Literal(0) => "NULL".to_string(),
            Slot::Literal(v) => format!("the number {v:#x}"),
            Slot::Other(w) => w.clone(),
        }
    }
}

/// The relocation that fills the 8-byte pointer at `at` of `sec`, if exactly one does.
fn pointer_reloc<'o>(
    obj: &'o Object<'_, Patched>,
    sec: SecIdx<Patched>,
    at: u64,
) -> Result<Option<&'o crate::model::Reloc<Patched>>, String> {
    let rs = obj.sec(sec).relocs_in(at, at + 8);
    match rs {
        [] => Ok(None),
        [r] if r.offset == at && obj.reloc_kind(r.r_type).width == 8 => Ok(Some(r)),
        _ => Err("a relocation that is not one 64-bit pointer".to_string()),
    }
}

/// What the pointer at `at` of `sec` points at: a function (a named symbol, or a section
/// symbol plus the offset of the function's entry, as the assembler writes statics), an
/// undefined symbol, or anything else.
fn slot(obj: &Object<'_, Patched>, sec: SecIdx<Patched>, at: u64) -> Slot {
    let r = match pointer_reloc(obj, sec, at) {
        Err(what) => return Slot::Other(what),
        Ok(None) => {
            let data = obj.sec(sec).data;
            let bytes = usize::try_from(at)
                .ok()
                .and_then(|i| data.get(i..i.checked_add(8)?));
            return match bytes {
                Some(b) => Slot::Literal(object::Endian::read_u64_bytes(
                    obj.arch.endianness(),
                    b.try_into().expect("8 bytes"),
                )),
                None => Slot::Other("nothing (past the section's contents)".to_string()),
            };
        }
        Ok(Some(r)) => r,
    };
    let t = obj.sym(r.sym);
    let func = match (t.kind, t.section) {
        (_, None) if t.kind != SymKind::Section => return Slot::Undefined(t.name.to_string()),
        (SymKind::Section, Some(ts)) => u64::try_from(r.addend)
            .ok()
            .and_then(|off| obj.symbol_at(ts, off).filter(|&f| obj.sym(f).value == off)),
        _ => (r.addend == 0).then_some(r.sym),
    };
    match func {
        Some(f) if obj.sym(f).kind == SymKind::Func && obj.sym(f).section.is_some() => {
            Slot::Function(f)
        }
        _ => Slot::Other(format!("{}{:+}", t.name, r.addend)),
    }
}

/// One state id declared with two versions by two units (`first`, `second`: version and unit).
pub fn state_conflict(id: u64, first: (u32, &str), second: (u32, &str)) -> Refusal {
    refusal::annotation_state_conflict(STATES, id, first, second)
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
