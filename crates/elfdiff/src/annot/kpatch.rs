//! kpatch-build's annotation records, as kpatch's own `kpatch-macros.h` leaves them in an
//! object, read as klpgen's annotations (`Annotations`), so a patch written for kpatch-build
//! builds with klpgen even when its objects were compiled with kpatch's header.
//!
//! The formats (facts of the object, not kpatch's code): every record is pointer data filled by
//! 64-bit absolute relocations.
//! - `.kpatch.ignore.functions`: one pointer per `KPATCH_IGNORE_FUNCTION(fn)`, to `fn`. Read as
//!   `KLPGEN_IGNORE_FUNCTION(fn)` (kpatch, too, covers the function's `.cold`/`.part` pieces).
//! - `.kpatch.ignore.sections`: one pointer per `KPATCH_IGNORE_SECTION("name")`, to the string.
//!   Read as `KLPGEN_IGNORE_SECTION("name")`; a `.rela.X` name means `X`, as kpatch-build reads it.
//! - `.kpatch.callbacks.<kind>`: 16-byte records `{callback, objname}`, `objname` NULL in a
//!   compiler's object (kpatch-build's create-diff-object fills it in its output; klpgen puts
//!   the callback in the `klp_object` of its unit, as it does for `KLPGEN_<KIND>_CALLBACK`).
//! - `.kpatch.force`: one pointer per `KPATCH_FORCE_UNSAFE(fn)`. kpatch's old core module skipped
//!   its stack check for those functions; upstream livepatch has no such thing, so the record
//!   is accepted and noted ([`Annotations::notes`]), without effect.
//!
//! Any other `.kpatch.*` section (kpatch.ko-era hooks, create-diff-object's own output sections)
//! is refused, like an unknown `.klpgen.*` one.

use crate::annot::{slot, source_function, Annotations, CallbackKind, Slot};
use crate::model::{Object, Patched, SecIdx, SymKind};
use crate::refusal;

/// `KPATCH_IGNORE_FUNCTION` records: pointers to functions.
pub const IGNORE_FUNCTIONS: &str = ".kpatch.ignore.functions";
/// `KPATCH_IGNORE_SECTION` records: pointers to section names.
pub const IGNORE_SECTIONS: &str = ".kpatch.ignore.sections";
/// `KPATCH_FORCE_UNSAFE` records: pointers to functions.
pub const FORCE: &str = ".kpatch.force";
/// `KPATCH_<KIND>_CALLBACK` records, one section per kind: `{callback, objname}`.
pub const CALLBACK_PREFIX: &str = ".kpatch.callbacks.";

/// The header whose macros write these records, for messages.
const HEADER: &str = "kpatch-macros.h";
/// Bytes of a pointer record and of a callback record.
const POINTER: u64 = 8;
const CALLBACK: u64 = 16;

/// Read every `.kpatch.*` section of `obj` into `a`.
pub(super) fn read(obj: &Object<'_, Patched>, a: &mut Annotations) {
    for sec in obj.section_indices() {
        let name = obj.sec(sec).name;
        if !name.starts_with(".kpatch.") {
            continue;
        }
        match name {
            IGNORE_FUNCTIONS => ignore_functions(obj, sec, a),
            IGNORE_SECTIONS => ignore_sections(obj, sec, a),
            FORCE => force(obj, sec, a),
            _ => match name
                .strip_prefix(CALLBACK_PREFIX)
                .and_then(CallbackKind::from_member)
            {
                Some(kind) => callbacks(obj, sec, kind, a),
                None => a
                    .refusals
                    .push(refusal::annotation_unknown_kpatch_section(name)),
            },
        }
    }
}

/// The number of `size`-byte records of `sec`; `None` (refused) when it is not an array of
/// them.
fn records(
    obj: &Object<'_, Patched>,
    sec: SecIdx<Patched>,
    size: u64,
    a: &mut Annotations,
) -> Option<u64> {
    let s = obj.sec(sec);
    if s.is_nobits() || !s.size.is_multiple_of(size) {
        a.refusals.push(refusal::annotation_not_pointers(
            s.name, s.size, size, HEADER,
        ));
        return None;
    }
    Some(s.size / size)
}

fn push_unique(list: &mut Vec<String>, name: &str) {
    if !list.iter().any(|n| n == name) {
        list.push(name.to_string());
    }
}

fn ignore_functions(obj: &Object<'_, Patched>, sec: SecIdx<Patched>, a: &mut Annotations) {
    let Some(n) = records(obj, sec, POINTER, a) else {
        return;
    };
    for entry in 0..n {
        match slot(obj, sec, entry * POINTER) {
            Slot::Function(f) => {
                let name = source_function(obj.sym(f).name);
                push_unique(&mut a.ignore_functions, name);
                push_unique(&mut a.kpatch_functions, name);
            }
            Slot::Undefined(f) => a.refusals.push(refusal::annotation_undefined(
                "KPATCH_IGNORE_FUNCTION",
                &f,
                IGNORE_FUNCTIONS,
            )),
            other => a.refusals.push(refusal::annotation_not_a_function(
                IGNORE_FUNCTIONS,
                entry,
                &other.describe(),
            )),
        }
    }
}

fn force(obj: &Object<'_, Patched>, sec: SecIdx<Patched>, a: &mut Annotations) {
    let Some(n) = records(obj, sec, POINTER, a) else {
        return;
    };
    for entry in 0..n {
        // A function of another unit is as meaningless here as one of this unit: noted.
        match slot(obj, sec, entry * POINTER) {
            Slot::Function(f) => push_unique(&mut a.force_unsafe, source_function(obj.sym(f).name)),
            Slot::Undefined(f) => push_unique(&mut a.force_unsafe, &f),
            other => a.refusals.push(refusal::annotation_not_a_function(
                FORCE,
                entry,
                &other.describe(),
            )),
        }
    }
}

fn callbacks(
    obj: &Object<'_, Patched>,
    sec: SecIdx<Patched>,
    kind: CallbackKind,
    a: &mut Annotations,
) {
    let Some(n) = records(obj, sec, CALLBACK, a) else {
        return;
    };
    let name = obj.sec(sec).name;
    for entry in 0..n {
        let at = entry * CALLBACK;
        match slot(obj, sec, at + POINTER) {
            Slot::Literal(0) => a.callback_at(obj, sec, at, entry, kind),
            _ => a
                .refusals
                .push(refusal::annotation_kpatch_objname(name, entry)),
        }
    }
}

fn ignore_sections(obj: &Object<'_, Patched>, sec: SecIdx<Patched>, a: &mut Annotations) {
    let Some(n) = records(obj, sec, POINTER, a) else {
        return;
    };
    for entry in 0..n {
        match section_name_at(obj, sec, entry * POINTER) {
            Ok(name) => {
                // kpatch-build takes a relocation section for the section it applies to.
                let name = name
                    .strip_prefix(".rela")
                    .filter(|n| n.starts_with('.'))
                    .unwrap_or(name);
                push_unique(&mut a.ignore_sections, name);
                push_unique(&mut a.kpatch_sections, name);
            }
            Err(what) => a.refusals.push(refusal::annotation_not_a_string(
                IGNORE_SECTIONS,
                entry,
                &what,
            )),
        }
    }
}

/// The NUL-terminated, printable string the pointer at `at` of `sec` points at.
fn section_name_at<'d>(
    obj: &Object<'d, Patched>,
    sec: SecIdx<Patched>,
    at: u64,
) -> Result<&'d str, String> {
    let r = match crate::annot::pointer_reloc(obj, sec, at)? {
        Some(r) => r,
        None => return Err("no relocation".to_string()),
    };
    let t = obj.sym(r.sym);
    let Some(ts) = t.section else {
        return Err(format!("{}, which this unit does not define", t.name));
    };
    if matches!(t.kind, SymKind::Func) {
        return Err(format!("function {}", t.name));
    }
    let target = obj.sec(ts);
    let off = u64::try_from(r.addend)
        .ok()
        .and_then(|a| a.checked_add(t.value))
        .and_then(|o| usize::try_from(o).ok());
    let text = off
        .filter(|_| !target.is_nobits())
        .and_then(|o| target.data.get(o..))
        .and_then(|rest| rest.iter().position(|&b| b == 0).map(|end| &rest[..end]));
    match text.map(std::str::from_utf8) {
        Some(Ok(name)) if !name.is_empty() && name.bytes().all(|b| b.is_ascii_graphic()) => {
            Ok(name)
        }
        Some(_) => Err(format!(
            "bytes in {} that are not a printable name",
            target.name
        )),
        None => Err(format!(
            "{}{:+}, where no NUL-terminated string is",
            t.name, r.addend
        )),
    }
}
