//! Module sources from `templates/kmod/`: the Kbuild file and the hook, in Rust (klp_* layouts
//! generated from the target's DWARF) or in C (compiled against the target's headers).

use std::collections::HashMap;
use std::fmt::Write as _;

use elfdiff::dwarf::StructLayout;

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

/// One patched object: vmlinux (`name` None) or a module.
#[derive(Debug, Clone)]
pub struct HookObject {
    pub name: Option<String>,
    pub funcs: Vec<HookFunc>,
}

#[derive(Debug, Clone)]
pub struct ModuleSpec {
    /// Module name as kbuild sees it (`livepatch-foo`).
    pub module: String,
    pub description: String,
    pub objects: Vec<HookObject>,
    pub replace: bool,
}

/// Generated files, (file name, contents).
pub type Sources = Vec<(String, String)>;

/// The structures the Rust hook needs from the target's DWARF.
pub const KLP_STRUCTS: [&str; 3] = ["klp_func", "klp_object", "klp_patch"];

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
        writeln!(
            objects,
            "\t{{\n\t\t.name = {name},\n\t\t.funcs = klpgen_funcs_{oi},\n\t}},"
        )
        .unwrap();
    }
    fill(
        HOOK_C,
        &[
            ("EXTERNS", externs),
            ("FUNC_ARRAYS", arrays),
            ("OBJECTS", objects),
            ("REPLACE", spec.replace.to_string()),
            ("DESCRIPTION", escape(&spec.description)),
        ],
    )
}

/// A member the hook sets: (DWARF member name, Rust field name, Rust type, zero value).
type Field = (&'static str, &'static str, &'static str, &'static str);

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

fn rust_size(ty: &str) -> u64 {
    match ty {
        "bool" => 1,
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
    let get = |n: &str| {
        layouts.get(n).ok_or_else(|| Error::Layout {
            structure: n.to_string(),
            what: "not found in the target's DWARF".into(),
        })
    };
    let mut structs = String::new();
    for (rust, c, fields) in [
        ("KlpFunc", "klp_func", FUNC_FIELDS),
        ("KlpObject", "klp_object", OBJECT_FIELDS),
        ("KlpPatch", "klp_patch", PATCH_FIELDS),
    ] {
        structs.push_str(&rust_struct(rust, get(c)?, fields)?);
        structs.push('\n');
    }
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
        writeln!(
            objects,
            "    KlpObject {{\n        name: {name},\n        funcs: (&raw mut KLPGEN_FUNCS_{oi}).cast::<KlpFunc>(),\n        ..KlpObject::ZERO\n    }},"
        )
        .unwrap();
    }
    fill(
        HOOK_RS,
        &[
            ("MODNAME", spec.module.replace('-', "_")),
            ("DESCRIPTION", escape(&spec.description)),
            ("STRUCTS", structs),
            ("EXTERNS", externs),
            ("FUNC_ARRAYS", arrays),
            ("NOBJS_PLUS_ONE", (spec.objects.len() + 1).to_string()),
            ("OBJECTS", objects),
            ("REPLACE", spec.replace.to_string()),
        ],
    )
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
            }],
            replace: true,
        };
        let src = render(&spec, HookLang::C, &HashMap::new()).unwrap();
        let hook = &src[1].1;
        assert!(hook.contains(".old_name = \"foo\""));
        assert!(hook.contains(".old_sympos = 2"));
        assert!(hook.contains("extern char __klpgen_func_0[];"));
        assert!(hook.contains("MODULE_DESCRIPTION(\"test 'x'\")"));
        assert!(src[0]
            .1
            .contains("livepatch-x-y := klpgen_hook.o klpgen_patch.o"));
    }
}
