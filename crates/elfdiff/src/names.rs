//! Symbol-name normalisation: GCC clone suffixes and static-local numbers change between builds,
//! so correlation compares names with those numbers removed.

/// `foo.isra.0` → `foo.isra`, `bar.constprop.0.isra.0` → `bar.constprop.isra`, `count.3` → `count`,
/// `f.llvm.123456` → `f`, `__UNIQUE_ID_ddebug412` → `__UNIQUE_ID_ddebug`. Other names are unchanged.
pub fn normalize(name: &str) -> String {
    normalized(name).into_owned()
}

/// [`normalize`], borrowing `name` when it is already normal (most names: no `.` and no
/// `__UNIQUE_ID_`), so that keys and tests built from names cost no allocation.
pub fn normalized(name: &str) -> std::borrow::Cow<'_, str> {
    if let Some(stem) = btf_id_stem(name) {
        return std::borrow::Cow::Borrowed(stem);
    }
    if !name.contains('.') && !name.starts_with("__UNIQUE_ID_") {
        return std::borrow::Cow::Borrowed(name);
    }
    let mut parts = name.split('.');
    let mut out = String::with_capacity(name.len());
    let first = parts.next().unwrap_or("");
    if let Some(stem) = first.strip_prefix("__UNIQUE_ID_") {
        out.push_str("__UNIQUE_ID_");
        out.push_str(stem.trim_end_matches(|c: char| c.is_ascii_digit()));
    } else {
        out.push_str(first);
    }
    let mut skip_next_hash = false;
    for p in parts {
        if skip_next_hash {
            skip_next_hash = false;
            if p.chars().all(|c| c.is_ascii_alphanumeric()) {
                continue;
            }
        }
        if p.is_empty() || p.chars().all(|c| c.is_ascii_digit()) {
            continue;
        }
        if p == "llvm" {
            skip_next_hash = true;
            continue;
        }
        out.push('.');
        out.push_str(p);
    }
    std::borrow::Cow::Owned(out)
}

/// A BTF id slot's name without its number: `BTF_ID(struct, sk)` names its slot
/// `__BTF_ID__struct__sk__<N>`, N pasted from `__COUNTER__` and `__LINE__` (the kernel's
/// `include/linux/btf_ids.h`), so it changes when lines move above it.
fn btf_id_stem(name: &str) -> Option<&str> {
    let rest = name.strip_prefix("__BTF_ID__")?;
    let stem = rest.trim_end_matches(|c: char| c.is_ascii_digit());
    (stem.len() < rest.len() && stem.ends_with("__"))
        .then(|| &name[..name.len() - (rest.len() - stem.len())])
}

/// For a compiler-split child (`foo.cold`, `foo.part.0`, `foo.isra.0.cold`), the name of the
/// function it was split from, normalised; None for an ordinary function.
pub fn split_parent(name: &str) -> Option<String> {
    // Both markers begin with a dot, and normalising never adds one.
    if !name.contains('.') {
        return None;
    }
    let n = normalized(name);
    for marker in [".cold", ".part"] {
        if let Some(pos) = n.find(marker) {
            let rest = &n[pos + marker.len()..];
            if rest.is_empty() || rest.starts_with('.') {
                return Some(n[..pos].to_string());
            }
        }
    }
    None
}

/// Symbols that are padding or entry labels belonging to the function that follows them.
pub fn is_prefix_symbol(name: &str) -> bool {
    name.starts_with("__pfx_") || name.starts_with("__cfi_")
}

/// Section name without the per-symbol part numbers (`.rodata.count.3` → `.rodata.count`).
pub fn normalize_section(name: &str) -> String {
    normalize(name.strip_prefix('.').unwrap_or(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clone_suffixes_lose_their_numbers() {
        assert_eq!(normalize("foo.isra.0"), "foo.isra");
        assert_eq!(normalize("foo.isra.12"), "foo.isra");
        assert_eq!(normalize("bar.constprop.0.isra.0"), "bar.constprop.isra");
        assert_eq!(normalize("baz.part.3"), "baz.part");
        assert_eq!(normalize("baz.cold"), "baz.cold");
        assert_eq!(normalize("count.3"), "count");
        assert_eq!(normalize("f.llvm.8812734"), "f");
        assert_eq!(normalize("__UNIQUE_ID_ddebug412"), "__UNIQUE_ID_ddebug");
        assert_eq!(normalize("plain"), "plain");
        assert_eq!(
            normalize("__BTF_ID__struct__reuseport_array__672338"),
            "__BTF_ID__struct__reuseport_array__"
        );
        assert_eq!(normalize("__BTF_ID__set__list"), "__BTF_ID__set__list");
    }

    #[test]
    fn split_children_know_their_parent() {
        assert_eq!(split_parent("foo.cold").as_deref(), Some("foo"));
        assert_eq!(split_parent("foo.part.0").as_deref(), Some("foo"));
        assert_eq!(split_parent("foo.isra.0.cold").as_deref(), Some("foo.isra"));
        assert_eq!(split_parent("foo.isra.0"), None);
        assert_eq!(split_parent("coldness"), None);
    }

    #[test]
    fn section_names_normalise_like_symbols() {
        assert_eq!(normalize_section(".rodata.count.3"), "rodata.count");
        assert_eq!(normalize_section(".text.foo.isra.0"), "text.foo.isra");
    }
}
