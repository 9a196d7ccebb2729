//! Module sources from `templates/kmod/`: the Kbuild file and the hook, in Rust (klp_* layouts
//! generated from the target's DWARF) or in C (compiled against the target's headers).
//!
//! The Rust hook's `#[repr(C)]` structures have exactly the target's sizes and member offsets,
//! checked by compile-time assertions; with callbacks, `klp_object`'s `callbacks` member is
//! flattened into `Option<unsafe extern "C" fn>` fields at the offsets of `struct
//! klp_callbacks`. The C hook fills `.callbacks = { ... }` through the target's
//! `<linux/livepatch.h>`. Either hook gets an `import_ns=` modinfo entry per namespace to
//! import: those of the namespaced exports the new code calls (Module.symvers' fifth field) and
//! the patched units' own `.modinfo` tags (gathered by `src/build/unit.rs`).
//!
//! System states (`KLPGEN_STATE`) become `klp_patch.states`, an array of `struct klp_state`
//! ended by an entry with id 0 (C: the target's header; Rust: the layout of `klp_state` from the
//! DWARF, only read when there are states). Both hooks define [`HOOK_PATCH_SYMBOL`], a pointer
//! to their `klp_patch`, which `<klpgen/klpgen.h>`'s `klpgen_get_state()` reads: the patched
//! code's reference to it is bound inside the module (`target.rs`), like a call to a function
//! of another unit.
//!
//! The guard ([`Guard`]): with `CONFIG_MODVERSIONS` the module loader ignores the release in
//! vermagic and compares only the CRCs of the symbols a module imports, so a livepatch built
//! for one ABI may load into another whose code (and symbol positions) differ. Both hooks
//! therefore compare, before `klp_enable_patch`, the running kernel's `init_uts_ns` release and
//! version (`uname -r`, `uname -v`) with the target's (from its vmlinux's `linux_banner`) and
//! refuse to load with `-EINVAL` and a `pr_err` naming both. The expected strings are the
//! module's symbols `klpgen_target_release` and `klpgen_target_version` ([`GUARD_RELEASE`],
//! [`GUARD_VERSION`]), which `klpgen check` reads back. The C hook reads `init_utsname()`; the
//! Rust hook `init_uts_ns` (exported) at the offsets of `uts_namespace.name` and
//! `new_utsname.release`/`.version` from the target's DWARF.

use std::collections::HashMap;
use std::fmt::Write as _;

use elfdiff::dwarf::{Member, StructLayout};
use elfdiff::CallbackKind;

use crate::Error;

const KBUILD: &str = include_str!("../../../templates/kmod/Kbuild.in");
const HOOK_C: &str = include_str!("../../../templates/kmod/hook.c.in");
const HOOK_RS: &str = include_str!("../../../templates/kmod/hook.rs.in");

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum HookLang {
    Rust,
    C,
}

impl HookLang {
    pub fn as_str(self) -> &'static str {
        match self {
            HookLang::Rust => "rust",
            HookLang::C => "c",
        }
    }
}

/// One function the livepatch replaces.
#[derive(Debug, Clone)]
pub struct HookFunc {
    pub old_name: String,
    pub sympos: u64,
    /// Global symbol of the new body in klpgen_patch.o.
    pub new_symbol: String,
}

/// A livepatch callback of one object: the kind and the global symbol of its function in
/// klpgen_patch.o.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookCallback {
    pub kind: CallbackKind,
    pub symbol: String,
}

/// One patched object: vmlinux (`name` None) or a module.
#[derive(Debug, Clone)]
pub struct HookObject {
    pub name: Option<String>,
    pub funcs: Vec<HookFunc>,
    /// At most one per kind.
    pub callbacks: Vec<HookCallback>,
}

/// The hooks' pointer to their `klp_patch` (`struct klp_patch *const`), which patched code
/// reaches through `<klpgen/klpgen.h>`'s `klpgen_get_state()`.
pub const HOOK_PATCH_SYMBOL: &str = "__klpgen_patch";

/// Whether the hook defines `name`, so that a reference to it from the patched code resolves
/// when the module is linked (an ordinary relocation, never a klp one).
pub fn hook_defines(name: &str) -> bool {
    name == HOOK_PATCH_SYMBOL
}

/// The kernel a livepatch may load into: its release and version (`UTS_VERSION`), from the
/// target vmlinux's `linux_banner`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Guard {
    pub release: String,
    /// None when the banner has no version part: then the release alone is compared.
    pub version: Option<String>,
}

/// The module's symbol holding the release its guard expects (NUL-terminated).
pub const GUARD_RELEASE: &str = "klpgen_target_release";
/// The module's symbol holding the version its guard expects (NUL-terminated).
pub const GUARD_VERSION: &str = "klpgen_target_version";

/// The structures the Rust hook's guard reads from the target's DWARF.
pub const GUARD_STRUCTS: [&str; 2] = ["uts_namespace", "new_utsname"];

#[derive(Debug, Clone)]
pub struct ModuleSpec {
    /// Module name as kbuild sees it (`livepatch-foo`).
    pub module: String,
    pub description: String,
    pub objects: Vec<HookObject>,
    pub replace: bool,
    /// Symbol namespaces the new code uses (`import_ns=` modinfo, as `MODULE_IMPORT_NS`): the
    /// module loader refuses a module that uses a namespaced export without importing it.
    pub import_ns: Vec<String>,
    /// System states (`klp_patch.states`), by id.
    pub states: Vec<elfdiff::State>,
    /// The kernel the module refuses to load on any other than.
    pub guard: Option<Guard>,
}

/// Generated files, (file name, contents).
pub type Sources = Vec<(String, String)>;

/// The structures the Rust hook needs from the target's DWARF (`klp_callbacks` only when the
/// livepatch has callbacks).
pub const KLP_STRUCTS: [&str; 4] = ["klp_func", "klp_object", "klp_patch", "klp_callbacks"];

/// The structures the Rust hook of a livepatch needs: [`KLP_STRUCTS`], and `klp_state` when it
/// declares states (kernels before 5.5 have none).
pub fn klp_structs(with_states: bool) -> Vec<&'static str> {
    let mut v = KLP_STRUCTS.to_vec();
    if with_states {
        v.push("klp_state");
    }
    v
}

fn fill(template: &str, vars: &[(&str, String)]) -> Result<String, Error> {
    let mut out = template.to_string();
    for (k, v) in vars {
        out = out.replace(&format!("@@{k}@@"), v);
    }
    if let Some(pos) = out.find("@@") {
        let rest: String = out[pos..].chars().take(40).collect();
        return Err(Error::Internal(format!(
            "template placeholder left unfilled: {rest}"
        )));
    }
    Ok(out)
}

fn check_name(s: &str) -> Result<&str, Error> {
    if s.is_empty()
        || !s
            .bytes()
            .all(|c| c.is_ascii_graphic() && c != b'"' && c != b'\\')
    {
        return Err(Error::Internal(format!(
            "unusable symbol or module name {s:?}"
        )));
    }
    Ok(s)
}

/// A symbol namespace as modpost writes it (an identifier, or a dotted/ slashed name in newer
/// kernels); anything that could break out of the generated source is refused.
fn check_namespace(s: &str) -> Result<&str, Error> {
    if s.is_empty()
        || !s
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-' | b'/' | b':'))
    {
        return Err(Error::Internal(format!("unusable symbol namespace {s:?}")));
    }
    Ok(s)
}

fn import_ns_c(spec: &ModuleSpec) -> Result<String, Error> {
    let mut out = String::new();
    for ns in &spec.import_ns {
        writeln!(out, "MODULE_INFO(import_ns, \"{}\");", check_namespace(ns)?).unwrap();
    }
    Ok(out)
}

fn import_ns_rust(spec: &ModuleSpec) -> Result<String, Error> {
    let mut out = String::new();
    for (i, ns) in spec.import_ns.iter().enumerate() {
        let entry = format!("import_ns={}", check_namespace(ns)?);
        writeln!(
            out,
            "\n/// Imports symbol namespace {ns}.\n#[link_section = \".modinfo\"]\n#[used(compiler)]\nstatic KLPGEN_MODINFO_IMPORT_NS_{i}: [u8; {}] = *b\"{entry}\\0\";",
            entry.len() + 1
        )
        .unwrap();
    }
    Ok(out)
}

/// A string the guard compares, as the inside of a C or Rust (byte) string literal: printable
/// ASCII, with `"` and `\\` escaped the same way in both languages; anything else is refused.
fn literal(s: &str) -> Result<String, Error> {
    if !s.bytes().all(|c| c.is_ascii_graphic() || c == b' ') {
        return Err(Error::Internal(format!(
            "unusable kernel release or version {s:?} for the module's guard"
        )));
    }
    Ok(s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// The C hook's guard: the expected strings and the check at the top of its init.
fn guard_c(spec: &ModuleSpec) -> Result<(String, String), Error> {
    let Some(g) = &spec.guard else {
        return Ok((String::new(), String::new()));
    };
    let release = literal(&g.release)?;
    let mut decls = format!(
        "/*\n * The kernel this livepatch was built for (its vmlinux's linux_banner): the module loader\n * does not compare vermagic's release under CONFIG_MODVERSIONS, so the hook does.\n */\nconst char {GUARD_RELEASE}[] __used = \"{release}\";\n"
    );
    let mut cond = format!("strcmp(init_utsname()->release, {GUARD_RELEASE})");
    if let Some(v) = &g.version {
        decls.push_str(&format!(
            "const char {GUARD_VERSION}[] __used = \"{}\";\n",
            literal(v)?
        ));
        cond.push_str(&format!(
            " ||\n\t    strcmp(init_utsname()->version, {GUARD_VERSION})"
        ));
    } else {
        decls.push_str(&format!("const char {GUARD_VERSION}[] __used = \"\";\n"));
    }
    let check = format!(
        "\tif ({cond}) {{\n\t\tpr_err(\"%s: built for kernel %s %s, but this kernel is %s %s; not loading\\n\",\n\t\t       THIS_MODULE->name, {GUARD_RELEASE}, {GUARD_VERSION},\n\t\t       init_utsname()->release, init_utsname()->version);\n\t\treturn -EINVAL;\n\t}}\n"
    );
    Ok((decls, check))
}

/// The Rust hook's guard: `init_uts_ns` read at the target's offsets, the expected strings,
/// and the check at the top of its init.
fn guard_rust(
    spec: &ModuleSpec,
    layouts: &HashMap<String, StructLayout>,
) -> Result<(String, String), Error> {
    let Some(g) = &spec.guard else {
        return Ok((String::new(), String::new()));
    };
    let get = |n: &str| {
        layouts.get(n).ok_or_else(|| Error::Layout {
            structure: n.to_string(),
            what: "not found in the target's DWARF (needed by the module's guard)".into(),
        })
    };
    let (ns, uts) = (get("uts_namespace")?, get("new_utsname")?);
    let member = |l: &StructLayout, m: &str| {
        l.member(m).cloned().ok_or_else(|| Error::Layout {
            structure: l.name.clone(),
            what: format!("has no member {m}"),
        })
    };
    let name = member(ns, "name")?;
    let (rel, ver) = (member(uts, "release")?, member(uts, "version")?);
    // DWARF may not give an array member's size: then `release` is as long as the distance
    // to `version`, which follows it (both `char [__NEW_UTS_LEN + 1]`).
    let len = rel
        .size
        .or_else(|| ver.offset.checked_sub(rel.offset))
        .unwrap_or(0);
    if len == 0
        || ver.size.is_some_and(|s| s != len)
        || ver.offset < rel.offset + len
        || ver.offset + len > uts.size
        || name.offset + uts.size > ns.size
    {
        return Err(Error::Layout {
            structure: uts.name.clone(),
            what: "release and version are not two char arrays of one size inside uts_namespace"
                .into(),
        });
    }
    let bytes = |s: &str| -> Result<(String, usize), Error> { Ok((literal(s)?, s.len() + 1)) };
    let (r, rn) = bytes(&g.release)?;
    let (v, vn) = bytes(g.version.as_deref().unwrap_or(""))?;
    let decls = format!(
        "/// `init_uts_ns` (`struct uts_namespace`, {ns_size} bytes in the target kernel): the guard
/// reads only `name.release` and `name.version`, at the offsets the target's DWARF gives.
#[allow(improper_ctypes)]
unsafe extern \"C\" {{
    static init_uts_ns: kernel::types::Opaque<[u8; {ns_size}]>;
}}
const UTS_RELEASE_AT: usize = {rel_at};
const UTS_VERSION_AT: usize = {ver_at};
const UTS_LEN: usize = {len};

/// The kernel this livepatch was built for (its vmlinux's `linux_banner`): the module loader
/// does not compare vermagic's release under CONFIG_MODVERSIONS, so the hook does.
#[export_name = \"{GUARD_RELEASE}\"]
static KLPGEN_TARGET_RELEASE: [u8; {rn}] = *b\"{r}\\0\";
#[export_name = \"{GUARD_VERSION}\"]
static KLPGEN_TARGET_VERSION: [u8; {vn}] = *b\"{v}\\0\";

/// A NUL-terminated field of the running kernel's `init_uts_ns`.
fn uts_field(at: usize) -> &'static [u8] {{
    // SAFETY: `init_uts_ns` is the kernel's own, alive for ever; `release` and `version` are
    // set at build time and never written, and the slice stays inside the field.
    let field = unsafe {{
        core::slice::from_raw_parts(init_uts_ns.get().cast::<u8>().add(at), UTS_LEN)
    }};
    let n = field.iter().position(|&b| b == 0).unwrap_or(UTS_LEN);
    &field[..n]
}}

fn text(b: &[u8]) -> &str {{
    core::str::from_utf8(b).unwrap_or(\"?\")
}}
",
        ns_size = ns.size,
        rel_at = name.offset + rel.offset,
        ver_at = name.offset + ver.offset,
    );
    let version_check = if g.version.is_some() {
        " || version != &KLPGEN_TARGET_VERSION[..KLPGEN_TARGET_VERSION.len() - 1]"
    } else {
        ""
    };
    let check = format!(
        "        let (release, version) = (uts_field(UTS_RELEASE_AT), uts_field(UTS_VERSION_AT));
        if release != &KLPGEN_TARGET_RELEASE[..KLPGEN_TARGET_RELEASE.len() - 1]{version_check} {{
            pr_err!(
                \"built for kernel {{}} {{}}, but this kernel is {{}} {{}}; not loading\\n\",
                text(&KLPGEN_TARGET_RELEASE[..KLPGEN_TARGET_RELEASE.len() - 1]),
                text(&KLPGEN_TARGET_VERSION[..KLPGEN_TARGET_VERSION.len() - 1]),
                text(release),
                text(version)
            );
            return Err(EINVAL);
        }}
"
    );
    Ok((decls, check))
}

fn escape(s: &str) -> String {
    s.chars()
        .filter(|c| !c.is_control())
        .map(|c| match c {
            '"' => "'".to_string(),
            '\\' => "/".to_string(),
            c => c.to_string(),
        })
        .collect()
}

pub fn render(
    spec: &ModuleSpec,
    lang: HookLang,
    layouts: &HashMap<String, StructLayout>,
) -> Result<Sources, Error> {
    check_name(&spec.module)?;
    let kbuild = fill(
        KBUILD,
        &[
            ("MODULE", spec.module.clone()),
            ("HOOK_LANG", lang.as_str().to_string()),
        ],
    )?;
    let hook = match lang {
        HookLang::C => render_c(spec)?,
        HookLang::Rust => render_rust(spec, layouts)?,
    };
    let hook_name = match lang {
        HookLang::C => "klpgen_hook.c",
        HookLang::Rust => "klpgen_hook.rs",
    };
    Ok(vec![("Kbuild".into(), kbuild), (hook_name.into(), hook)])
}

fn render_c(spec: &ModuleSpec) -> Result<String, Error> {
    let mut externs = String::new();
    let mut arrays = String::new();
    let mut objects = String::new();
    for (oi, obj) in spec.objects.iter().enumerate() {
        writeln!(arrays, "static struct klp_func klpgen_funcs_{oi}[] = {{").unwrap();
        for f in &obj.funcs {
            writeln!(externs, "extern char {}[];", check_name(&f.new_symbol)?).unwrap();
            writeln!(
                arrays,
                "\t{{\n\t\t.old_name = \"{}\",\n\t\t.new_func = {},\n\t\t.old_sympos = {},\n\t}},",
                check_name(&f.old_name)?,
                f.new_symbol,
                f.sympos
            )
            .unwrap();
        }
        arrays.push_str("\t{ }\n};\n\n");
        let name = match &obj.name {
            Some(n) => format!("\"{}\"", check_name(n)?),
            None => "NULL".into(),
        };
        let mut callbacks = String::new();
        for c in callbacks_of(obj)? {
            let ret = if c.kind.returns_int() { "int" } else { "void" };
            writeln!(
                externs,
                "extern {ret} {}(struct klp_object *obj);",
                check_name(&c.symbol)?
            )
            .unwrap();
            writeln!(callbacks, "\t\t\t.{} = {},", c.kind.member(), c.symbol).unwrap();
        }
        if !callbacks.is_empty() {
            callbacks = format!("\t\t.callbacks = {{\n{callbacks}\t\t}},\n");
        }
        writeln!(
            objects,
            "\t{{\n\t\t.name = {name},\n\t\t.funcs = klpgen_funcs_{oi},\n{callbacks}\t}},"
        )
        .unwrap();
    }
    let (states, patch_states) = states_c(spec);
    let (guard, guard_check) = guard_c(spec)?;
    fill(
        HOOK_C,
        &[
            ("GUARD", guard),
            ("GUARD_CHECK", guard_check),
            ("EXTERNS", externs),
            ("FUNC_ARRAYS", arrays),
            ("OBJECTS", objects),
            ("STATES", states),
            ("PATCH_STATES", patch_states),
            ("REPLACE", spec.replace.to_string()),
            ("DESCRIPTION", escape(&spec.description)),
            ("IMPORT_NS", import_ns_c(spec)?),
        ],
    )
}

/// The C hook's `klpgen_states[]` (ended by a zero entry) and its `.states` member; both
/// empty without states.
fn states_c(spec: &ModuleSpec) -> (String, String) {
    if spec.states.is_empty() {
        return (String::new(), String::new());
    }
    let mut arr = "\nstatic struct klp_state klpgen_states[] = {\n".to_string();
    for st in &spec.states {
        writeln!(
            arr,
            "\t{{ .id = {:#x}UL, .version = {} }},",
            st.id, st.version
        )
        .unwrap();
    }
    arr.push_str("\t{ }\n};\n");
    (arr, "\t.states = klpgen_states,\n".to_string())
}

/// The Rust hook's `KLPGEN_STATES` (ended by a zero entry) and its `states` field; both empty
/// without states.
fn states_rust(spec: &ModuleSpec) -> (String, String) {
    if spec.states.is_empty() {
        return (String::new(), String::new());
    }
    let mut arr = format!(
        "\nstatic mut KLPGEN_STATES: [KlpState; {}] = [\n",
        spec.states.len() + 1
    );
    for st in &spec.states {
        writeln!(
            arr,
            "    KlpState {{\n        id: {:#x},\n        version: {},\n        ..KlpState::ZERO\n    }},",
            st.id, st.version
        )
        .unwrap();
    }
    arr.push_str("    KlpState::ZERO,\n];\n");
    (
        arr,
        "    states: (&raw mut KLPGEN_STATES).cast::<KlpState>(),\n".to_string(),
    )
}

/// An object's callbacks in kind order; more than one of a kind is an error.
fn callbacks_of(obj: &HookObject) -> Result<Vec<&HookCallback>, Error> {
    let mut v: Vec<&HookCallback> = obj.callbacks.iter().collect();
    v.sort_by_key(|c| c.kind);
    if let Some(w) = v.windows(2).find(|w| w[0].kind == w[1].kind) {
        return Err(Error::Internal(format!(
            "two {} callbacks ({}, {}) for one object",
            w[0].kind.member(),
            w[0].symbol,
            w[1].symbol
        )));
    }
    Ok(v)
}

/// A member the hook sets: (DWARF member name, Rust field name, Rust type, zero value).
type Field = (&'static str, &'static str, &'static str, &'static str);

/// The callback members of `klp_object`, flattened: `callbacks.<kind>` is found at the offset
/// of `callbacks` in `klp_object` plus that of `<kind>` in `klp_callbacks`.
const CALLBACK_FIELDS: [(CallbackKind, Field); 4] = [
    (
        CallbackKind::PrePatch,
        (
            "callbacks.pre_patch",
            "pre_patch",
            "Option<unsafe extern \"C\" fn(*mut KlpObject) -> c_int>",
            "None",
        ),
    ),
    (
        CallbackKind::PostPatch,
        (
            "callbacks.post_patch",
            "post_patch",
            "Option<unsafe extern \"C\" fn(*mut KlpObject)>",
            "None",
        ),
    ),
    (
        CallbackKind::PreUnpatch,
        (
            "callbacks.pre_unpatch",
            "pre_unpatch",
            "Option<unsafe extern \"C\" fn(*mut KlpObject)>",
            "None",
        ),
    ),
    (
        CallbackKind::PostUnpatch,
        (
            "callbacks.post_unpatch",
            "post_unpatch",
            "Option<unsafe extern \"C\" fn(*mut KlpObject)>",
            "None",
        ),
    ),
];

/// `klp_object` with the members of its `callbacks` member added as `callbacks.<member>`.
fn flatten_callbacks(
    object: &StructLayout,
    callbacks: &StructLayout,
) -> Result<StructLayout, Error> {
    let at = object.member("callbacks").ok_or_else(|| Error::Layout {
        structure: object.name.clone(),
        what: "has no member callbacks (a kernel without livepatch callbacks)".into(),
    })?;
    if at.size != Some(callbacks.size) {
        return Err(Error::Layout {
            structure: object.name.clone(),
            what: format!(
                "member callbacks is {:?} bytes, struct {} is {}",
                at.size, callbacks.name, callbacks.size
            ),
        });
    }
    let mut out = object.clone();
    for m in &callbacks.members {
        out.members.push(Member {
            name: format!("callbacks.{}", m.name),
            offset: at.offset + m.offset,
            size: m.size,
            pointer: m.pointer,
        });
    }
    Ok(out)
}

const FUNC_FIELDS: &[Field] = &[
    ("old_name", "old_name", "*const c_char", "ptr::null()"),
    ("new_func", "new_func", "*mut c_void", "ptr::null_mut()"),
    ("old_sympos", "old_sympos", "c_ulong", "0"),
];
const OBJECT_FIELDS: &[Field] = &[
    ("name", "name", "*const c_char", "ptr::null()"),
    ("funcs", "funcs", "*mut KlpFunc", "ptr::null_mut()"),
];
const PATCH_FIELDS: &[Field] = &[
    ("mod", "mod_", "*mut c_void", "ptr::null_mut()"),
    ("objs", "objs", "*mut KlpObject", "ptr::null_mut()"),
    ("replace", "replace", "bool", "false"),
];
/// `klp_patch.states`, set only when the livepatch declares states.
const PATCH_STATES_FIELD: Field = ("states", "states", "*mut KlpState", "ptr::null_mut()");
const STATE_FIELDS: &[Field] = &[
    ("id", "id", "c_ulong", "0"),
    ("version", "version", "core::ffi::c_uint", "0"),
    ("data", "data", "*mut c_void", "ptr::null_mut()"),
];

fn rust_size(ty: &str) -> u64 {
    match ty {
        "bool" => 1,
        "core::ffi::c_uint" => 4,
        // Pointers, `c_ulong` and `Option<fn>` (a nullable function pointer).
        _ => 8,
    }
}

/// A `#[repr(C)]` struct with exactly the target's size and member offsets: the fields the
/// hook sets, and byte padding for everything else (the livepatch core's private state).
fn rust_struct(rust_name: &str, layout: &StructLayout, fields: &[Field]) -> Result<String, Error> {
    let mut placed: Vec<(u64, &Field)> = Vec::new();
    for f in fields {
        let m = layout.member(f.0).ok_or_else(|| Error::Layout {
            structure: layout.name.clone(),
            what: format!("has no member {}", f.0),
        })?;
        if let Some(sz) = m.size {
            if sz != rust_size(f.2) {
                return Err(Error::Layout {
                    structure: layout.name.clone(),
                    what: format!(
                        "member {} is {sz} bytes, the hook expects {}",
                        f.0,
                        rust_size(f.2)
                    ),
                });
            }
        }
        placed.push((m.offset, f));
    }
    placed.sort_by_key(|p| p.0);
    let mut def = format!(
        "/// `struct {}`: {} bytes in the target kernel.\n",
        layout.name, layout.size
    );
    writeln!(
        def,
        "#[repr(C, align({}))]\nstruct {rust_name} {{",
        layout.align.max(8)
    )
    .unwrap();
    let mut zero = format!("impl {rust_name} {{\n    const ZERO: Self = Self {{\n");
    let mut asserts = String::new();
    let mut at = 0u64;
    for (i, (off, f)) in placed.iter().enumerate() {
        if *off < at {
            return Err(Error::Layout {
                structure: layout.name.clone(),
                what: format!("member {} overlaps the previous one", f.0),
            });
        }
        if *off > at {
            writeln!(def, "    _pad{i}: [u8; {}],", off - at).unwrap();
            writeln!(zero, "        _pad{i}: [0; {}],", off - at).unwrap();
        }
        writeln!(def, "    {}: {},", f.1, f.2).unwrap();
        writeln!(zero, "        {}: {},", f.1, f.3).unwrap();
        writeln!(
            asserts,
            "const _: () = assert!(core::mem::offset_of!({rust_name}, {}) == {off});",
            f.1
        )
        .unwrap();
        at = off + rust_size(f.2);
    }
    if layout.size > at {
        writeln!(def, "    _tail: [u8; {}],", layout.size - at).unwrap();
        writeln!(zero, "        _tail: [0; {}],", layout.size - at).unwrap();
    }
    def.push_str("}\n");
    zero.push_str("    };\n}\n");
    writeln!(
        asserts,
        "const _: () = assert!(core::mem::size_of::<{rust_name}>() == {});",
        layout.size
    )
    .unwrap();
    Ok(format!("{def}\n{zero}\n{asserts}"))
}

fn render_rust(
    spec: &ModuleSpec,
    layouts: &HashMap<String, StructLayout>,
) -> Result<String, Error> {
    let structs = rust_layout_structs(spec, layouts)?;
    let RustObjects {
        externs,
        arrays,
        objects,
    } = rust_objects(spec)?;
    let (states, patch_states) = states_rust(spec);
    let (guard, guard_check) = guard_rust(spec, layouts)?;
    fill(
        HOOK_RS,
        &[
            ("GUARD", guard),
            ("GUARD_CHECK", guard_check),
            ("MODNAME", spec.module.replace('-', "_")),
            ("DESCRIPTION", escape(&spec.description)),
            ("STRUCTS", structs),
            ("EXTERNS", externs),
            ("FUNC_ARRAYS", arrays),
            ("STATES", states),
            ("PATCH_STATES", patch_states),
            ("NOBJS_PLUS_ONE", (spec.objects.len() + 1).to_string()),
            ("OBJECTS", objects),
            ("REPLACE", spec.replace.to_string()),
            ("IMPORT_NS", import_ns_rust(spec)?),
        ],
    )
}

/// The Rust hook's `KlpFunc`, `KlpObject` and `KlpPatch`, laid out as the target's DWARF
/// says.
fn rust_layout_structs(
    spec: &ModuleSpec,
    layouts: &HashMap<String, StructLayout>,
) -> Result<String, Error> {
    let get = |n: &str| {
        layouts.get(n).ok_or_else(|| Error::Layout {
            structure: n.to_string(),
            what: "not found in the target's DWARF".into(),
        })
    };
    // Callback members only when some object has callbacks: a module without them keeps
    // exactly the layout code it had before callbacks existed.
    let kinds: Vec<CallbackKind> = CallbackKind::ALL
        .into_iter()
        .filter(|k| {
            spec.objects
                .iter()
                .any(|o| o.callbacks.iter().any(|c| c.kind == *k))
        })
        .collect();
    let mut object_fields: Vec<Field> = OBJECT_FIELDS.to_vec();
    let object_layout = if kinds.is_empty() {
        get("klp_object")?.clone()
    } else {
        object_fields.extend(
            CALLBACK_FIELDS
                .iter()
                .filter(|(k, _)| kinds.contains(k))
                .map(|(_, f)| *f),
        );
        flatten_callbacks(get("klp_object")?, get("klp_callbacks")?)?
    };
    let mut patch_fields: Vec<Field> = PATCH_FIELDS.to_vec();
    if !spec.states.is_empty() {
        patch_fields.push(PATCH_STATES_FIELD);
    }
    let mut structs = String::new();
    for (rust, layout, fields) in [
        ("KlpFunc", get("klp_func")?, FUNC_FIELDS),
        ("KlpObject", &object_layout, &object_fields[..]),
        ("KlpPatch", get("klp_patch")?, &patch_fields[..]),
    ] {
        structs.push_str(&rust_struct(rust, layout, fields)?);
        structs.push('\n');
    }
    if !spec.states.is_empty() {
        structs.push_str(&rust_struct("KlpState", get("klp_state")?, STATE_FIELDS)?);
        structs.push('\n');
    }
    Ok(structs)
}

/// The pieces of the Rust hook that name the module's objects and functions.
struct RustObjects {
    /// `extern "C"` declarations of the new functions and the callbacks.
    externs: String,
    /// One `KLPGEN_FUNCS_<i>` array per object.
    arrays: String,
    /// The `KlpObject` initialisers.
    objects: String,
}

fn rust_objects(spec: &ModuleSpec) -> Result<RustObjects, Error> {
    let mut externs = String::new();
    let mut arrays = String::new();
    let mut objects = String::new();
    for (oi, obj) in spec.objects.iter().enumerate() {
        writeln!(
            arrays,
            "static mut KLPGEN_FUNCS_{oi}: [KlpFunc; {}] = [",
            obj.funcs.len() + 1
        )
        .unwrap();
        for f in &obj.funcs {
            let sym = check_name(&f.new_symbol)?;
            writeln!(externs, "    static {sym}: u8;").unwrap();
            writeln!(
                arrays,
                "    KlpFunc {{\n        old_name: c\"{}\".as_ptr(),\n        new_func: (&raw const {sym}).cast_mut().cast::<c_void>(),\n        old_sympos: {},\n        ..KlpFunc::ZERO\n    }},",
                check_name(&f.old_name)?,
                f.sympos
            )
            .unwrap();
        }
        arrays.push_str("    KlpFunc::ZERO,\n];\n\n");
        let name = match &obj.name {
            Some(n) => format!("c\"{}\".as_ptr()", check_name(n)?),
            None => "ptr::null()".into(),
        };
        let mut callbacks = String::new();
        for c in callbacks_of(obj)? {
            let sym = check_name(&c.symbol)?;
            let ret = if c.kind.returns_int() {
                " -> c_int"
            } else {
                ""
            };
            writeln!(externs, "    fn {sym}(obj: *mut KlpObject){ret};").unwrap();
            writeln!(callbacks, "        {}: Some({sym}),", c.kind.member()).unwrap();
        }
        writeln!(
            objects,
            "    KlpObject {{\n        name: {name},\n        funcs: (&raw mut KLPGEN_FUNCS_{oi}).cast::<KlpFunc>(),\n{callbacks}        ..KlpObject::ZERO\n    }},"
        )
        .unwrap();
    }
    Ok(RustObjects {
        externs,
        arrays,
        objects,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use elfdiff::dwarf::Member;

    fn layout(name: &str, size: u64, members: &[(&str, u64, u64, bool)]) -> StructLayout {
        StructLayout {
            name: name.into(),
            size,
            align: 8,
            members: members
                .iter()
                .map(|&(n, o, s, p)| Member {
                    name: n.into(),
                    offset: o,
                    size: Some(s),
                    pointer: p,
                })
                .collect(),
        }
    }

    #[test]
    fn rust_struct_pads_to_target_offsets() {
        let l = layout(
            "klp_patch",
            96,
            &[
                ("mod", 0, 8, true),
                ("objs", 8, 8, true),
                ("states", 16, 8, true),
                ("replace", 24, 1, false),
            ],
        );
        let s = rust_struct("KlpPatch", &l, PATCH_FIELDS).unwrap();
        assert!(s.contains("_tail: [u8; 71]"), "{s}");
        assert!(s.contains("_pad2: [u8; 8]"), "{s}");
        assert!(s.contains("size_of::<KlpPatch>() == 96"), "{s}");
    }

    #[test]
    fn rust_struct_rejects_size_mismatch() {
        let l = layout(
            "klp_patch",
            32,
            &[
                ("mod", 0, 8, true),
                ("objs", 8, 8, true),
                ("replace", 16, 4, false),
            ],
        );
        assert!(rust_struct("KlpPatch", &l, PATCH_FIELDS).is_err());
    }

    #[test]
    fn c_hook_lists_every_function() {
        let spec = ModuleSpec {
            module: "livepatch-x".into(),
            description: "test \"x\"".into(),
            objects: vec![HookObject {
                name: None,
                funcs: vec![HookFunc {
                    old_name: "foo".into(),
                    sympos: 2,
                    new_symbol: "__klpgen_func_0".into(),
                }],
                callbacks: vec![],
            }],
            replace: true,
            import_ns: Vec::new(),
            states: Vec::new(),
            guard: None,
        };
        let src = render(&spec, HookLang::C, &HashMap::new()).unwrap();
        let hook = &src[1].1;
        assert!(!hook.contains("import_ns"));
        let with_ns = ModuleSpec {
            import_ns: vec!["CXL".into(), "USB_STORAGE".into()],
            ..spec.clone()
        };
        let ns_hook = &render(&with_ns, HookLang::C, &HashMap::new()).unwrap()[1].1;
        assert!(ns_hook.contains(
            "MODULE_INFO(import_ns, \"CXL\");\nMODULE_INFO(import_ns, \"USB_STORAGE\");"
        ));
        let hostile = ModuleSpec {
            import_ns: vec!["X\");\nMODULE_LICENSE(\"GPL".into()],
            ..spec.clone()
        };
        assert!(render(&hostile, HookLang::C, &HashMap::new()).is_err());
        assert!(hook.contains(".old_name = \"foo\""));
        assert!(hook.contains(".old_sympos = 2"));
        assert!(hook.contains("extern char __klpgen_func_0[];"));
        assert!(hook.contains("MODULE_DESCRIPTION(\"test 'x'\")"));
        assert!(src[0]
            .1
            .contains("livepatch-x-y := klpgen_hook.o klpgen_patch.o"));
    }

    fn spec_with_callbacks(kinds: &[CallbackKind]) -> ModuleSpec {
        ModuleSpec {
            module: "livepatch-cb".into(),
            description: "callbacks".into(),
            objects: vec![HookObject {
                name: None,
                funcs: vec![],
                callbacks: kinds
                    .iter()
                    .map(|&kind| HookCallback {
                        kind,
                        symbol: crate::writer::callback_alias(kind),
                    })
                    .collect(),
            }],
            replace: true,
            import_ns: Vec::new(),
            states: Vec::new(),
            guard: None,
        }
    }

    /// Layouts as in 6.12 (x86-64): klp_object.callbacks at 16, klp_callbacks 40 bytes.
    fn klp_layouts() -> HashMap<String, StructLayout> {
        let mut m = HashMap::new();
        for l in [
            layout(
                "klp_func",
                88,
                &[
                    ("old_name", 0, 8, true),
                    ("new_func", 8, 8, true),
                    ("old_sympos", 16, 8, false),
                ],
            ),
            layout(
                "klp_object",
                136,
                &[
                    ("name", 0, 8, true),
                    ("funcs", 8, 8, true),
                    ("callbacks", 16, 40, false),
                ],
            ),
            layout(
                "klp_callbacks",
                40,
                &[
                    ("pre_patch", 0, 8, true),
                    ("post_patch", 8, 8, true),
                    ("pre_unpatch", 16, 8, true),
                    ("post_unpatch", 24, 8, true),
                    ("post_unpatch_enabled", 32, 1, false),
                ],
            ),
            layout(
                "klp_patch",
                96,
                &[
                    ("mod", 0, 8, true),
                    ("objs", 8, 8, true),
                    ("replace", 24, 1, false),
                ],
            ),
        ] {
            m.insert(l.name.clone(), l);
        }
        m
    }

    #[test]
    fn c_hook_wires_callbacks() {
        let spec = spec_with_callbacks(&[CallbackKind::PostUnpatch, CallbackKind::PrePatch]);
        let hook = &render(&spec, HookLang::C, &HashMap::new()).unwrap()[1].1;
        assert!(hook.contains("extern int __klpgen_callback_pre_patch(struct klp_object *obj);"));
        assert!(
            hook.contains("extern void __klpgen_callback_post_unpatch(struct klp_object *obj);")
        );
        let at = |s: &str| {
            hook.find(s)
                .unwrap_or_else(|| panic!("{s} missing:\n{hook}"))
        };
        // Kind order inside the initialiser, whatever the order of the spec.
        assert!(at(".pre_patch = __klpgen_callback_pre_patch,") < at(".post_unpatch = "));
        assert!(at(".callbacks = {") > at(".funcs = klpgen_funcs_0,"));
        assert!(!hook.contains(".post_patch"));
        // No callbacks: no callbacks member at all.
        let plain = &render(&spec_with_callbacks(&[]), HookLang::C, &HashMap::new()).unwrap()[1].1;
        assert!(!plain.contains(".callbacks"));
    }

    #[test]
    fn rust_hook_places_callbacks_at_target_offsets() {
        let spec = spec_with_callbacks(&[CallbackKind::PrePatch, CallbackKind::PostPatch]);
        let hook = &render(&spec, HookLang::Rust, &klp_layouts()).unwrap()[1].1;
        for want in [
            "pre_patch: Option<unsafe extern \"C\" fn(*mut KlpObject) -> c_int>,",
            "post_patch: Option<unsafe extern \"C\" fn(*mut KlpObject)>,",
            "offset_of!(KlpObject, pre_patch) == 16",
            "offset_of!(KlpObject, post_patch) == 24",
            "size_of::<KlpObject>() == 136",
            "fn __klpgen_callback_pre_patch(obj: *mut KlpObject) -> c_int;",
            "fn __klpgen_callback_post_patch(obj: *mut KlpObject);",
            "pre_patch: Some(__klpgen_callback_pre_patch),",
            "post_patch: Some(__klpgen_callback_post_patch),",
        ] {
            assert!(hook.contains(want), "{want} missing:\n{hook}");
        }
        assert!(!hook.contains("pre_unpatch"));
        // Without callbacks the object has no callback fields (and needs no klp_callbacks).
        let mut layouts = klp_layouts();
        layouts.remove("klp_callbacks");
        let plain = &render(&spec_with_callbacks(&[]), HookLang::Rust, &layouts).unwrap()[1].1;
        assert!(!plain.contains("pre_patch"));
        // With callbacks but no klp_callbacks in the target: a layout error, not a guess.
        assert!(matches!(
            render(&spec, HookLang::Rust, &layouts),
            Err(Error::Layout { .. })
        ));
    }

    #[test]
    fn rust_hook_imports_namespaces_in_modinfo() {
        let spec = ModuleSpec {
            import_ns: vec!["CRYPTO_INTERNAL".into()],
            ..spec_with_callbacks(&[])
        };
        let hook = &render(&spec, HookLang::Rust, &klp_layouts()).unwrap()[1].1;
        assert!(
            hook.contains(
                "#[link_section = \".modinfo\"]\n#[used(compiler)]\nstatic KLPGEN_MODINFO_IMPORT_NS_0: [u8; 26] = *b\"import_ns=CRYPTO_INTERNAL\\0\";"
            ),
            "{hook}"
        );
    }

    const DEBIAN_VERSION: &str = "#1 SMP PREEMPT_DYNAMIC Debian 6.1.192-3 (2026-11-26)";

    fn guarded() -> ModuleSpec {
        ModuleSpec {
            guard: Some(Guard {
                release: "6.1.0-57-cloud-amd64".into(),
                version: Some(DEBIAN_VERSION.into()),
            }),
            ..spec_with_callbacks(&[])
        }
    }

    #[test]
    fn c_hook_refuses_other_kernels_before_enabling() {
        let hook = &render(&guarded(), HookLang::C, &HashMap::new()).unwrap()[1].1;
        for want in [
            "#include <linux/utsname.h>",
            "const char klpgen_target_release[] __used = \"6.1.0-57-cloud-amd64\";",
            "const char klpgen_target_version[] __used = \"#1 SMP PREEMPT_DYNAMIC Debian 6.1.192-3 (2026-11-26)\";",
            "if (strcmp(init_utsname()->release, klpgen_target_release) ||\n\t    strcmp(init_utsname()->version, klpgen_target_version)) {",
            "return -EINVAL;",
            "init_utsname()->release, init_utsname()->version);",
        ] {
            assert!(hook.contains(want), "{want} missing:\n{hook}");
        }
        // The check comes before the patch is enabled.
        assert!(
            hook.find("return -EINVAL;").unwrap() < hook.find("return klp_enable_patch").unwrap()
        );
        // Quotes and backslashes are escaped; control characters refused.
        let mut odd = guarded();
        odd.guard.as_mut().unwrap().version = Some("#1 \"x\\y\"".into());
        let hook = &render(&odd, HookLang::C, &HashMap::new()).unwrap()[1].1;
        assert!(hook.contains("= \"#1 \\\"x\\\\y\\\"\";"), "{hook}");
        odd.guard.as_mut().unwrap().version = Some("#1\n\");\nMODULE_LICENSE(\"x".into());
        assert!(render(&odd, HookLang::C, &HashMap::new()).is_err());
        // Without a guard (a spec for tests only): no check at all.
        let plain = &render(&spec_with_callbacks(&[]), HookLang::C, &HashMap::new()).unwrap()[1].1;
        assert!(!plain.contains("strcmp"));
    }

    fn uts_layouts() -> HashMap<String, StructLayout> {
        let mut m = klp_layouts();
        m.insert(
            "uts_namespace".into(),
            layout(
                "uts_namespace",
                432,
                &[("name", 0, 390, false), ("user_ns", 392, 8, true)],
            ),
        );
        m.insert(
            "new_utsname".into(),
            layout(
                "new_utsname",
                390,
                &[
                    ("sysname", 0, 65, false),
                    ("nodename", 65, 65, false),
                    ("release", 130, 65, false),
                    ("version", 195, 65, false),
                ],
            ),
        );
        m
    }

    #[test]
    fn rust_hook_reads_init_uts_ns_at_the_targets_offsets() {
        let hook = &render(&guarded(), HookLang::Rust, &uts_layouts()).unwrap()[1].1;
        for want in [
            "static init_uts_ns: kernel::types::Opaque<[u8; 432]>;",
            "const UTS_RELEASE_AT: usize = 130;",
            "const UTS_VERSION_AT: usize = 195;",
            "const UTS_LEN: usize = 65;",
            "#[export_name = \"klpgen_target_release\"]\nstatic KLPGEN_TARGET_RELEASE: [u8; 21] = *b\"6.1.0-57-cloud-amd64\\0\";",
            "static KLPGEN_TARGET_VERSION: [u8; 53] = *b\"#1 SMP PREEMPT_DYNAMIC Debian 6.1.192-3 (2026-11-26)\\0\";",
            "return Err(EINVAL);",
        ] {
            assert!(hook.contains(want), "{want} missing:\n{hook}");
        }
        assert!(
            hook.find("return Err(EINVAL);").unwrap()
                < hook.find("klp_enable_patch(&raw mut").unwrap()
        );
        // A randomized layout moves `name`: the offsets follow.
        let mut l = uts_layouts();
        l.get_mut("uts_namespace").unwrap().members[0].offset = 40;
        let hook = &render(&guarded(), HookLang::Rust, &l).unwrap()[1].1;
        assert!(
            hook.contains("const UTS_RELEASE_AT: usize = 170;"),
            "{hook}"
        );
        // Array members without a size in DWARF: the distance between them.
        for m in &mut l.get_mut("new_utsname").unwrap().members {
            m.size = None;
        }
        let hook = &render(&guarded(), HookLang::Rust, &l).unwrap()[1].1;
        assert!(hook.contains("const UTS_LEN: usize = 65;"), "{hook}");
        // No layouts: an error, not a guess.
        l.remove("new_utsname");
        assert!(matches!(
            render(&guarded(), HookLang::Rust, &l),
            Err(Error::Layout { .. })
        ));
    }

    #[test]
    fn both_hooks_fill_states() {
        let states = vec![
            elfdiff::State {
                id: 0x6b6c_7001,
                version: 1,
            },
            elfdiff::State { id: 7, version: 3 },
        ];
        let spec = ModuleSpec {
            states: states.clone(),
            ..spec_with_callbacks(&[CallbackKind::PostPatch])
        };
        let c = &render(&spec, HookLang::C, &HashMap::new()).unwrap()[1].1;
        for want in [
            "static struct klp_state klpgen_states[] = {\n\t{ .id = 0x6b6c7001UL, .version = 1 },\n\t{ .id = 0x7UL, .version = 3 },\n\t{ }\n};",
            "\t.states = klpgen_states,\n\t.replace = true,",
            "struct klp_patch *const __klpgen_patch = &klpgen_patch;",
        ] {
            assert!(c.contains(want), "{want} missing:\n{c}");
        }
        let mut layouts = klp_layouts();
        layouts.insert(
            "klp_state".into(),
            layout(
                "klp_state",
                24,
                &[
                    ("id", 0, 8, false),
                    ("version", 8, 4, false),
                    ("data", 16, 8, true),
                ],
            ),
        );
        let patch = layouts.get_mut("klp_patch").unwrap();
        patch.members.push(Member {
            name: "states".into(),
            offset: 16,
            size: Some(8),
            pointer: true,
        });
        let rs = &render(&spec, HookLang::Rust, &layouts).unwrap()[1].1;
        for want in [
            "offset_of!(KlpState, version) == 8",
            "offset_of!(KlpState, data) == 16",
            "size_of::<KlpState>() == 24",
            "offset_of!(KlpPatch, states) == 16",
            "static mut KLPGEN_STATES: [KlpState; 3] = [",
            "id: 0x6b6c7001,\n        version: 1,",
            "states: (&raw mut KLPGEN_STATES).cast::<KlpState>(),",
            "#[export_name = \"__klpgen_patch\"]",
        ] {
            assert!(rs.contains(want), "{want} missing:\n{rs}");
        }
        // No states: neither hook mentions them, and the Rust hook needs no klp_state.
        let plain = spec_with_callbacks(&[]);
        let c = &render(&plain, HookLang::C, &HashMap::new()).unwrap()[1].1;
        assert!(!c.contains("klp_state") && !c.contains(".states"), "{c}");
        layouts.remove("klp_state");
        let rs = &render(&plain, HookLang::Rust, &layouts).unwrap()[1].1;
        assert!(!rs.contains("KlpState") && !rs.contains("states:"), "{rs}");
        // States on a target whose DWARF has no klp_state: a layout error, not a guess.
        assert!(matches!(
            render(&spec, HookLang::Rust, &layouts),
            Err(Error::Layout { .. })
        ));
        assert_eq!(klp_structs(true).last(), Some(&"klp_state"));
        assert!(!klp_structs(false).contains(&"klp_state"));
    }

    #[test]
    fn two_callbacks_of_a_kind_are_an_error() {
        let spec = spec_with_callbacks(&[CallbackKind::PostPatch, CallbackKind::PostPatch]);
        assert!(render(&spec, HookLang::C, &HashMap::new()).is_err());
    }
}
