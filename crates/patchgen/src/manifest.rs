//! What `klpgen build` records in the module it builds: the functions it replaces and where
//! each klp symbol was taken from ([`Manifest`]), as text lines in two non-allocated sections
//! (`.klpgen.funcs`, `.klpgen.syms`) that the module loader ignores. `klp.rs` writes them into
//! the finished `.ko`; `check.rs` reads them back to verify the module against its target.
//! Each line is `objname name sympos origin`, the origin `global` or `local <STT_FILE name>`.

use crate::klpsym::is_decimal;
use crate::kmod::HookFunc;
use crate::target::Binding;

/// Non-allocated section listing the functions a module replaces.
pub const FUNCS_SECTION: &str = ".klpgen.funcs";
/// Non-allocated section listing where each klp symbol was taken from.
pub const SYMS_SECTION: &str = ".klpgen.syms";

/// Where a symbol of the target is expected to come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// A global symbol.
    Global,
    /// A static symbol of the source file with this STT_FILE name.
    Local(String),
    /// Not recorded.
    Unknown,
}

/// One replaced function or one klp symbol, as `klpgen build` bound it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub objname: String,
    pub name: String,
    pub sympos: u64,
    pub origin: Origin,
}

impl Record {
    fn line(&self) -> String {
        let origin = match &self.origin {
            Origin::Global => "global".to_string(),
            Origin::Local(f) => format!("local {f}"),
            Origin::Unknown => "unknown".to_string(),
        };
        format!("{} {} {} {origin}\n", self.objname, self.name, self.sympos)
    }

    fn parse(line: &str) -> Option<Record> {
        let mut it = line.splitn(5, ' ');
        let objname = it.next().filter(|s| !s.is_empty())?;
        let name = it.next().filter(|s| !s.is_empty())?;
        let sympos = it.next().filter(|s| is_decimal(s))?.parse().ok()?;
        let origin = match (it.next()?, it.next()) {
            ("global", None) => Origin::Global,
            ("unknown", None) => Origin::Unknown,
            ("local", Some(f)) if !f.is_empty() => Origin::Local(f.to_string()),
            _ => return None,
        };
        Some(Record {
            objname: objname.to_string(),
            name: name.to_string(),
            sympos,
            origin,
        })
    }
}

/// The replaced functions and klp symbols of a module, written by `klpgen build` into
/// [`FUNCS_SECTION`] and [`SYMS_SECTION`] as text lines `objname name sympos origin`, where
/// origin is `global`, `unknown` or `local <STT_FILE name>`; `#` starts a comment line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Manifest {
    pub funcs: Vec<Record>,
    pub syms: Vec<Record>,
}

fn origin_of(local: bool, file: Option<&str>) -> Origin {
    match (local, file) {
        (false, _) => Origin::Global,
        (true, Some(f)) if !f.is_empty() && !f.contains('\n') => Origin::Local(f.to_string()),
        (true, _) => Origin::Unknown,
    }
}

impl Manifest {
    /// Record one unit of a build: its replaced functions (`funcs[i]` is `plan.funcs[i]`'s
    /// hook entry) and its klp bindings (`bindings[i]` binds `plan.externals[i]`).
    pub fn add_unit(
        &mut self,
        objname: &str,
        plan: &elfdiff::Plan,
        bindings: &[Binding],
        funcs: &[HookFunc],
    ) {
        let file = plan.file_name.as_deref();
        for (f, h) in plan.funcs.iter().zip(funcs) {
            self.funcs.push(Record {
                objname: objname.to_string(),
                name: h.old_name.clone(),
                sympos: h.sympos,
                origin: origin_of(f.old_local, file),
            });
        }
        for (ext, b) in plan.externals.iter().zip(bindings) {
            if let Binding::Klp {
                objname,
                name,
                sympos,
            } = b
            {
                let r = Record {
                    objname: objname.clone(),
                    name: name.clone(),
                    sympos: *sympos,
                    origin: origin_of(ext.local, file),
                };
                if !self.syms.contains(&r) {
                    self.syms.push(r);
                }
            }
        }
    }

    /// Contents of [`FUNCS_SECTION`].
    pub fn funcs_text(&self) -> Vec<u8> {
        encode("replaced functions", &self.funcs)
    }

    /// Contents of [`SYMS_SECTION`].
    pub fn syms_text(&self) -> Vec<u8> {
        encode("klp symbols", &self.syms)
    }
}

fn encode(what: &str, records: &[Record]) -> Vec<u8> {
    let mut s = format!("# klpgen {what}: objname name sympos origin\n");
    for r in records {
        s.push_str(&r.line());
    }
    s.into_bytes()
}

/// Parse a manifest section; `Err((line number, line))` for the first bad line.
pub fn decode_records(data: &[u8]) -> Result<Vec<Record>, (usize, String)> {
    let text = std::str::from_utf8(data).map_err(|e| (0, format!("not UTF-8: {e}")))?;
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        out.push(Record::parse(line).ok_or_else(|| (n + 1, line.to_string()))?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::klpsym::VMLINUX;

    #[test]
    fn records_round_trip() {
        let rec = |name: &str, pos, origin| Record {
            objname: VMLINUX.into(),
            name: name.into(),
            sympos: pos,
            origin,
        };
        let m = Manifest {
            funcs: vec![
                rec("traced", 0, Origin::Global),
                rec("helper", 1, Origin::Local("b.c".into())),
            ],
            syms: vec![
                rec("helper", 2, Origin::Local("a.c".into())),
                rec("a_only", 0, Origin::Local("a.c".into())),
            ],
        };
        assert_eq!(decode_records(&m.funcs_text()).unwrap(), m.funcs);
        assert_eq!(decode_records(&m.syms_text()).unwrap(), m.syms);
        let r = Record {
            objname: VMLINUX.into(),
            name: "f".into(),
            sympos: 3,
            origin: Origin::Local("dir name/x.c".into()),
        };
        assert_eq!(decode_records(r.line().as_bytes()).unwrap(), vec![r]);
        for bad in [
            "vmlinux f",
            "vmlinux f 1",
            "vmlinux f -1 global",
            "vmlinux f 1 local",
            "vmlinux f 1 global x",
            "vmlinux f 1 sideways",
        ] {
            assert_eq!(decode_records(bad.as_bytes()).unwrap_err().0, 1, "{bad}");
        }
        assert!(decode_records(b"\xff\xfe").is_err());
    }
}
