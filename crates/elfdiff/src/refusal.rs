//! Refusals and ignored differences: what klpgen will not turn into a livepatch (with what to
//! do instead), and what an annotation told it to leave out.
//!
//! Every refusal is built here, through its [`RefusalKind`]: the kind makes the stable key
//! (`refuse.<kind>.<subject>`), and one function per case writes its reason and hint, so the
//! phases that find a refusal only say what they found. `docs/refusals.md` documents every
//! kind of [`RefusalKind::ALL`] (`tests/catalogue.rs` checks it, and that a fixture produces
//! each).

use serde::Serialize;

/// A change klpgen will not turn into a livepatch, with what to do instead.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Refusal {
    /// Stable key, `refuse.<kind>.<symbol or section>`.
    pub key: String,
    pub symbol: String,
    pub section: String,
    pub reason: String,
    pub hint: String,
}

/// A difference that an annotation told klpgen to leave out (reported, not acted on).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Ignored {
    pub symbol: String,
    pub section: String,
    /// What the difference was and which annotation covers it.
    pub reason: String,
}

/// What a refusal is about; each kind has a heading in `docs/refusals.md`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RefusalKind {
    /// An existing data object changed.
    DataChanged,
    /// `__init`/`__exit` code or data changed.
    InitChanged,
    /// A changed function livepatch cannot redirect (no ftrace entry).
    NoFtrace,
    /// A changed function in a section group (COMDAT).
    ComdatChanged,
    /// The new version no longer uses a static local of the old one.
    StaticLocalRemoved,
    /// A section of unknown format points into changed code.
    UnknownSpecialSection,
    /// Carried code holds a runtime constant klpgen cannot rewrite.
    RuntimeConstant,
    /// A changed function is on the error-injection list.
    ErrorInjection,
    /// A malformed, unknown or contradictory `.klpgen.*` (or kpatch `.kpatch.*`) record.
    Annotation,
    /// Two callbacks of one kind for one patched object.
    DuplicateCallback,
    /// New code uses a static key or static call of a module (patchgen's binding).
    ModuleStaticKey,
    /// A caller `--include-callers` would add cannot be patched.
    CallerUnpatchable,
    /// A global the patch adds cannot be bound inside the livepatch (patchgen's binding of a
    /// livepatch of several units).
    NewGlobal,
}

impl RefusalKind {
    pub const ALL: [RefusalKind; 13] = [
        RefusalKind::DataChanged,
        RefusalKind::InitChanged,
        RefusalKind::NoFtrace,
        RefusalKind::ComdatChanged,
        RefusalKind::StaticLocalRemoved,
        RefusalKind::UnknownSpecialSection,
        RefusalKind::RuntimeConstant,
        RefusalKind::ErrorInjection,
        RefusalKind::Annotation,
        RefusalKind::DuplicateCallback,
        RefusalKind::ModuleStaticKey,
        RefusalKind::CallerUnpatchable,
        RefusalKind::NewGlobal,
    ];

    /// The start of every key of this kind, `refuse.<kind>.`.
    pub fn key_prefix(self) -> &'static str {
        match self {
            RefusalKind::DataChanged => "refuse.data-changed.",
            RefusalKind::InitChanged => "refuse.init-changed.",
            RefusalKind::NoFtrace => "refuse.no-ftrace.",
            RefusalKind::ComdatChanged => "refuse.comdat-changed.",
            RefusalKind::StaticLocalRemoved => "refuse.static-local-removed.",
            RefusalKind::UnknownSpecialSection => "refuse.unknown-special-section.",
            RefusalKind::RuntimeConstant => "refuse.runtime-constant.",
            RefusalKind::ErrorInjection => "refuse.error-injection.",
            RefusalKind::Annotation => "refuse.annotation.",
            RefusalKind::DuplicateCallback => "refuse.duplicate-callback.",
            RefusalKind::ModuleStaticKey => "refuse.module-static-key.",
            RefusalKind::CallerUnpatchable => "refuse.caller-unpatchable.",
            RefusalKind::NewGlobal => "refuse.new-global.",
        }
    }

    /// The kind as keys spell it (`data-changed`).
    pub fn name(self) -> &'static str {
        let p = self.key_prefix();
        &p["refuse.".len()..p.len() - 1]
    }

    /// The key of a refusal of this kind about `subject` (a symbol, a section, a callback
    /// kind).
    pub fn key(self, subject: &str) -> String {
        format!("{}{subject}", self.key_prefix())
    }

    fn refusal(
        self,
        subject: &str,
        symbol: &str,
        section: &str,
        reason: String,
        hint: impl Into<String>,
    ) -> Refusal {
        Refusal {
            key: self.key(subject),
            symbol: symbol.to_string(),
            section: section.to_string(),
            reason,
            hint: hint.into(),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Changed functions (`checks.rs`).

/// An `__init`/`__exit` function changed.
pub(crate) fn init_function_changed(name: &str, section: &str, why: &str) -> Refusal {
    RefusalKind::InitChanged.refusal(
        name,
        name,
        section,
        format!("__init/__exit function changed ({why}); it has already run (or never will) and its memory is freed"),
        "do the work in a livepatch callback (KLPGEN_POST_PATCH_CALLBACK from <klpgen/klpgen.h>) or in a function that runs after boot; or leave the change out with KLPGEN_IGNORE_FUNCTION",
    )
}

/// A function in a section group changed.
pub(crate) fn comdat_changed(name: &str, section: &str, why: &str) -> Refusal {
    RefusalKind::ComdatChanged.refusal(
        name,
        name,
        section,
        format!("function in a section group (COMDAT) changed ({why}); the linker kept one copy of the group for the whole kernel, so which body runs is not this object's to decide"),
        "make the function static or non-inline in its own translation unit, or patch its callers",
    )
}

/// The new version of a function no longer uses static local `local`.
pub(crate) fn static_local_removed(name: &str, section: &str, local: &str) -> Refusal {
    RefusalKind::StaticLocalRemoved.refusal(
        name,
        name,
        section,
        format!("the new {name} no longer uses its static local {local}; the running kernel's state in it would silently be abandoned"),
        "keep using the static local in the new version (its state carries over), or move the state to a shadow variable",
    )
}

/// A changed local function without an ftrace entry whose address `taker` takes, so that
/// patching its callers would not cover every use.
pub(crate) fn no_ftrace_address_taken(
    name: &str,
    section: &str,
    why: &str,
    taker: &str,
) -> Refusal {
    RefusalKind::NoFtrace.refusal(
        name,
        name,
        section,
        format!("function changed ({why}) but has no ftrace entry (notrace, or `static inline` kept out of line), so livepatch cannot redirect it; patching its callers instead would not cover calls through its address, which {taker} takes"),
        format!("remove notrace/inline from {name} in the running kernel's next build, or change the patch so the pointer names a new function and the callers that use it are patched"),
    )
}

/// Why a changed function has no ftrace entry, as far as the object tells.
pub(crate) enum Untraced<'a> {
    /// The body of a `SYSCALL_DEFINEn` syscall (`__do_sys_*`, static inline); its traceable
    /// stubs are named with this prefix (`Arch::syscall_stub_prefix`).
    SyscallBody { stub_prefix: &'a str },
    /// An assembly function (the object has no C source and no traced function).
    Assembly,
    /// No function of the file has an ftrace entry (built without the ftrace flags).
    NoFtraceFlags,
    /// `__meminit` code (`.meminit.*`: notrace, and freed after boot like `__init` unless
    /// the kernel keeps it for memory hotplug).
    MemInit,
    /// `notrace`, or otherwise not traceable.
    Notrace,
}

/// A changed function without an ftrace entry.
pub(crate) fn no_ftrace(name: &str, section: &str, why: &str, cause: Untraced<'_>) -> Refusal {
    let hint = match cause {
        Untraced::SyscallBody { stub_prefix } => format!("this is a syscall body (SYSCALL_DEFINEn makes __do_sys_* static inline, hence notrace): define the syscall with KLPGEN_SYSCALL_DEFINEn from <klpgen/klpgen.h>, which puts the body into the traceable {stub_prefix}* stub"),
        Untraced::Assembly => format!("{name} is assembly (the object has no C source, and assembly functions get no ftrace entry), so livepatch cannot redirect it; patch its C callers instead (`klpgen callers {name}` lists them), or, for a short routine, re-implement the fixed version in C in a changed caller"),
        Untraced::NoFtraceFlags => format!("no function of this file has an ftrace entry: kbuild builds it without the ftrace flags (a CFLAGS_REMOVE_<file>.o = $(CC_FLAGS_FTRACE) line in its Makefile, or a notrace directory), so none of them can be patched; patch the callers of {name} in other, traced files instead (`klpgen callers {name}` lists them)"),
        Untraced::MemInit => format!("{name} is __meminit ({section}), which is notrace: without CONFIG_MEMORY_HOTPLUG the kernel freed it after boot like __init code, so the running kernel no longer calls it; with memory hotplug patch its traceable callers instead (`klpgen callers {name}` lists them)"),
        Untraced::Notrace => "patch its traceable callers instead, or remove notrace from it in the running kernel's next build".into(),
    };
    RefusalKind::NoFtrace.refusal(
        name,
        name,
        section,
        format!("function changed ({why}) but has no ftrace entry (notrace, or not traceable), so livepatch cannot redirect it"),
        hint,
    )
}

// ---------------------------------------------------------------------------------------------
// Data and sections (`checks.rs`).

/// An existing data object changed (`init`: in an `__init`/`__exit` section).
pub(crate) fn data_changed(name: &str, section: &str, why: &str, init: bool) -> Refusal {
    let kind = if init {
        RefusalKind::InitChanged
    } else {
        RefusalKind::DataChanged
    };
    kind.refusal(
        name,
        name,
        section,
        format!("existing data object changed ({why}); a livepatch replaces code, the running kernel keeps its copy of the data"),
        "leave the definition as it is and keep new state in a shadow variable (klp_shadow_*), or change it from a post-patch callback",
    )
}

/// A changed function `target` has an entry in `section`, the error-injection list.
pub(crate) fn error_injection(target: &str, section: &str) -> Refusal {
    RefusalKind::ErrorInjection.refusal(
        target,
        target,
        section,
        format!("{target} changed and is on the error-injection list (ALLOW_ERROR_INJECTION, which SYSCALL_DEFINE adds to every syscall stub); the entry names the running kernel's function and a livepatch cannot carry it"),
        "define a changed syscall with KLPGEN_SYSCALL_DEFINEn from <klpgen/klpgen.h>, which leaves the entry out; for other functions, KLPGEN_IGNORE_SECTION(\"_error_injection_whitelist\") drops the new version's entry",
    )
}

/// Section `section`, of a format klpgen does not know, has entries pointing into changed
/// code (`target`).
pub(crate) fn unknown_special_section(section: &str, target: &str) -> Refusal {
    RefusalKind::UnknownSpecialSection.refusal(
        section,
        target,
        section,
        format!("section {section} has entries pointing into changed code ({target}) and klpgen does not know its format, so it cannot carry the right entries"),
        "if it is an array of fixed-size entries, pass --entry-size SECTION=BYTES to klpgen diff; otherwise report the section so klpgen can learn it",
    )
}

/// A special section (`section`) with entries pointing into changed code (`target`) whose
/// entries cannot be told apart (`why`: a size that contradicts another, or a section that is
/// no whole number of entries).
pub(crate) fn special_section_layout(section: &str, target: &str, why: &str) -> Refusal {
    RefusalKind::UnknownSpecialSection.refusal(
        section,
        target,
        section,
        format!("special section {section} has entries pointing into changed code ({target}), but {why}, so klpgen cannot tell which entries to carry"),
        "check the entry size: the target's DWARF gives it (the size of the section's structure), else pass --entry-size SECTION=BYTES to klpgen diff; if the layout is one klpgen does not know, report the section so it can learn it",
    )
}

/// A shift runtime constant at `at` (in function `func`, entry of `section`) of `variable`;
/// `user`: the kernel helper known to use it.
pub(crate) fn runtime_const_shift(
    func: &str,
    section: &str,
    at: &str,
    variable: &str,
    user: Option<&str>,
) -> Refusal {
    let used_by = user.map_or(String::new(), |u| {
        format!(" ({u} uses it, so every function that inlines it has one)")
    });
    RefusalKind::RuntimeConstant.refusal(
        func,
        func,
        section,
        format!("{at} holds a runtime constant: an entry of {section} points at the shift count of runtime_const_shift_right_32(..., {variable}){used_by}; the kernel writes the real count into vmlinux's code once at boot and never into a module, and the instruction cannot be turned into a load of {variable} in place, so the copied code would shift by the placeholder"),
        format!("make the change in a function that does not inline the code using {variable}{} (a caller or callee of it); only code that uses runtime_const_shift_right_32 is affected", user.map_or(String::new(), |u| format!(", i.e. not {u}"))),
    )
}

/// A pointer runtime constant at `at` whose instruction is not the one the architecture can
/// rewrite, `why` saying how.
pub(crate) fn runtime_const_ptr(
    func: &str,
    section: &str,
    at: &str,
    variable: &str,
    why: &str,
) -> Refusal {
    RefusalKind::RuntimeConstant.refusal(
        func,
        func,
        section,
        format!("{at} should hold runtime_const_ptr({variable}) (an entry of {section} points there), but {why}; klpgen rewrites only the exact instruction the kernel's macro emits into a load of {variable}"),
        "report the instruction sequence (klpgen explain shows it) so klpgen can learn it; or change a function that does not use this runtime constant",
    )
}

// ---------------------------------------------------------------------------------------------
// Callers (`Diff::include_unchanged`).

/// Why a caller `--include-callers` would add cannot be patched.
pub(crate) enum CallerCause<'a> {
    Init,
    NoFtrace,
    /// It cannot be carried, for this refusal's reason.
    NotCarried(&'a str),
}

/// Caller `name` (included because `why`) cannot be patched.
pub(crate) fn caller_unpatchable(
    name: &str,
    section: &str,
    why: &str,
    cause: CallerCause<'_>,
) -> Refusal {
    let reason = match cause {
        CallerCause::Init => {
            format!("{name} ({why}) is __init/__exit code and cannot be patched")
        }
        CallerCause::NoFtrace => {
            format!("{name} ({why}) has no ftrace entry (notrace), so it cannot be patched")
        }
        CallerCause::NotCarried(r) => format!("{name} ({why}) cannot be carried: {r}"),
    };
    RefusalKind::CallerUnpatchable.refusal(
        name,
        name,
        section,
        reason,
        "lower --include-callers, or accept that this caller keeps the old behaviour until it returns",
    )
}

// ---------------------------------------------------------------------------------------------
// Annotations (`annot.rs`; a callback also ignored: `checks.rs`).

/// A record section of names (`section`) has relocations or no contents.
pub(crate) fn annotation_not_names(section: &str) -> Refusal {
    RefusalKind::Annotation.refusal(
        section,
        section,
        section,
        format!("{section} is not a list of names (it has relocations or no contents); it was not written by <klpgen/klpgen.h>"),
        "use the macros of the <klpgen/klpgen.h> that klpgen puts on the include path",
    )
}

/// A record section of names holds `raw`, which is not printable ASCII.
pub(crate) fn annotation_unprintable(section: &str, raw: &[u8]) -> Refusal {
    RefusalKind::Annotation.refusal(
        section,
        section,
        section,
        format!(
            "{section} holds a name that is not printable ASCII ({:?})",
            String::from_utf8_lossy(raw)
        ),
        "name functions and sections by their plain C and ELF names",
    )
}

/// A `.klpgen.*` section this klpgen does not know.
pub(crate) fn annotation_unknown_section(section: &str) -> Refusal {
    RefusalKind::Annotation.refusal(
        section,
        section,
        section,
        format!("{section} is not an annotation section this klpgen knows"),
        "use the <klpgen/klpgen.h> of this klpgen (klpgen puts it on the include path); do not name your own sections .klpgen.*",
    )
}

/// A record section that is not an array of `record`-byte records (`size` bytes); `header`
/// names the header whose macros write it.
pub(crate) fn annotation_not_pointers(
    section: &str,
    size: u64,
    record: u64,
    header: &str,
) -> Refusal {
    let what = if record == 8 {
        "an array of pointers".to_string()
    } else {
        format!("an array of {record}-byte records")
    };
    RefusalKind::Annotation.refusal(
        section,
        section,
        section,
        format!("{section} is {size} bytes, not {what}"),
        format!("use the macros of {header}"),
    )
}

/// A `member` callback `func` (in `func_section`) is `__init`/`__exit` code.
pub(crate) fn annotation_init_callback(member: &str, func: &str, func_section: &str) -> Refusal {
    RefusalKind::Annotation.refusal(
        func,
        func,
        func_section,
        format!(
            "{member} callback {func} is __init/__exit code, which the module frees or never loads"
        ),
        "drop __init/__exit from the callback",
    )
}

/// Entry `entry` of callback section `section` points at no function of the unit (`what`
/// names what it refers to).
pub(crate) fn annotation_not_a_function(section: &str, entry: u64, what: &str) -> Refusal {
    RefusalKind::Annotation.refusal(
        section,
        section,
        section,
        format!("entry {entry} of {section} does not point at a function defined in this unit (it points at {what})"),
        "define the callback function in the file that uses the callback macro",
    )
}

/// `<macro_name>(func)` (recorded in `section`) names no function of the unit.
pub(crate) fn annotation_undefined(macro_name: &str, func: &str, section: &str) -> Refusal {
    RefusalKind::Annotation.refusal(
        func,
        func,
        section,
        format!("{macro_name}({func}): this unit defines no function {func} (declared elsewhere, or inlined everywhere), so the annotation would have no effect"),
        format!("put {macro_name} in the file that defines the function; for a function inlined into its callers, name the callers"),
    )
}

/// Entry `entry` of kpatch callback section `section` has an object name: kpatch-build's
/// create-diff-object writes it into its output; a compiler's object has NULL there.
pub(crate) fn annotation_kpatch_objname(section: &str, entry: u64) -> Refusal {
    RefusalKind::Annotation.refusal(
        section,
        section,
        section,
        format!("entry {entry} of {section} already names an object (its objname is not NULL): it comes from kpatch-build's create-diff-object output, not from a compiler, so it is not known which object it was meant for"),
        "give klpgen the patch and the kernel sources (klpgen build), not objects kpatch-build produced; klpgen puts each callback in the klp_object of the unit that defines it",
    )
}

/// Entry `entry` of `section` (kpatch's KPATCH_IGNORE_SECTION records) does not point at a
/// string (`what` says what it points at).
pub(crate) fn annotation_not_a_string(section: &str, entry: u64, what: &str) -> Refusal {
    RefusalKind::Annotation.refusal(
        section,
        section,
        section,
        format!("entry {entry} of {section} does not point at a section name string ({what})"),
        "write KPATCH_IGNORE_SECTION(\"name\") with a string literal, or use KLPGEN_IGNORE_SECTION from <klpgen/klpgen.h>",
    )
}

/// A `.kpatch.*` section klpgen does not read as an annotation.
pub(crate) fn annotation_unknown_kpatch_section(section: &str) -> Refusal {
    RefusalKind::Annotation.refusal(
        section,
        section,
        section,
        format!("{section} is not one of the kpatch records klpgen reads (.kpatch.ignore.functions, .kpatch.ignore.sections, .kpatch.force, .kpatch.callbacks.<kind>): its meaning cannot be honoured"),
        "use the kpatch-macros.h klpgen puts on the include path, or the macros of <klpgen/klpgen.h> (kpatch.ko-era hooks become KLPGEN_*_CALLBACK); see docs/from-kpatch.md",
    )
}

/// A `KLPGEN_STATE` record of `section` with id 0.
pub(crate) fn annotation_state_zero_id(section: &str, version: u64) -> Refusal {
    RefusalKind::Annotation.refusal(
        section,
        "state 0",
        section,
        format!("KLPGEN_STATE(0, {version}): a state id must be non-zero; the livepatch core ends klp_patch.states at the first entry with id 0"),
        "give the state a non-zero id (any number unique to the system state it stands for)",
    )
}

/// A `KLPGEN_STATE(id, version)` record whose version does not fit `klp_state.version`.
pub(crate) fn annotation_state_version(section: &str, id: u64, version: u64) -> Refusal {
    RefusalKind::Annotation.refusal(
        section,
        &format!("state {id:#x}"),
        section,
        format!("KLPGEN_STATE({id:#x}, {version}): the version is an unsigned int in struct klp_state (0 to 4294967295)"),
        "use a version between 0 and 4294967295",
    )
}

/// One state id declared with two versions (`first`, `second`: version and where).
pub(crate) fn annotation_state_conflict(
    section: &str,
    id: u64,
    first: (u32, &str),
    second: (u32, &str),
) -> Refusal {
    RefusalKind::Annotation.refusal(
        section,
        &format!("state {id:#x}"),
        section,
        format!(
            "state {id:#x} is declared as version {} ({}) and as version {} ({}); a livepatch has one version of each state",
            first.0, first.1, second.0, second.1
        ),
        "declare each state once per livepatch (KLPGEN_STATE in one file, or the same version everywhere)",
    )
}

/// `func` is both ignored and forced (recorded in `section`).
pub(crate) fn annotation_ignored_and_forced(func: &str, section: &str) -> Refusal {
    RefusalKind::Annotation.refusal(
        func,
        func,
        section,
        format!(
            "{func} is both ignored (KLPGEN_IGNORE_FUNCTION) and forced (KLPGEN_FORCE_FUNCTION)"
        ),
        "keep one of the two annotations",
    )
}

/// The `member` callback `func` (recorded in `section`) is also ignored.
pub(crate) fn annotation_callback_ignored(func: &str, section: &str, member: &str) -> Refusal {
    RefusalKind::Annotation.refusal(
        func,
        func,
        section,
        format!("{func} is a {member} callback and also ignored (KLPGEN_IGNORE_FUNCTION or _SECTION); a callback must be carried in the livepatch"),
        "do not ignore the callback function or the section it is in",
    )
}

/// `first` and `second` are both `member` callbacks (macro `macro_name`, section `section`)
/// of one patched object.
pub(crate) fn duplicate_callback(
    member: &str,
    macro_name: &str,
    section: &str,
    first: &str,
    second: &str,
) -> Refusal {
    RefusalKind::DuplicateCallback.refusal(
        member,
        second,
        section,
        format!("{second} and {first} are both {member} callbacks of one patched object; the livepatch core runs one of each kind per object"),
        format!("keep one {macro_name}(fn) and call the other function from it"),
    )
}

// ---------------------------------------------------------------------------------------------
// Binding to the target (`patchgen::target`).

/// New code uses a `what` (a jump label or static call) whose key `name` lives in `module`;
/// its entries belong in the livepatch's `section`.
pub fn module_static_key(name: &str, section: &str, what: &str, module: &str) -> Refusal {
    RefusalKind::ModuleStaticKey.refusal(
        name,
        name,
        section,
        format!("the new code uses a {what} whose key {name} lives in module {module}; the kernel sets up the livepatch's {section} entries before it resolves references to {module}"),
        "in the patched function test the key with static_key_enabled() (a plain load) instead of static_branch_*(), or call the static call's current target directly; or move the change out of the code that uses the key",
    )
}

// ---------------------------------------------------------------------------------------------
// Globals a livepatch of several units defines itself (`patchgen::target`).

/// Two units of one patched object (`object`: vmlinux or a module) both add global `name`.
pub fn new_global_twice(name: &str, first: &str, second: &str, object: &str) -> Refusal {
    RefusalKind::NewGlobal.refusal(
        name,
        name,
        "",
        format!("{name} is a new global of both {first} and {second}, code of {object}; a reference to it cannot tell which one it means, and linking the units' livepatch objects into one module would fail as linking {object} would"),
        format!("define {name} in one unit and declare it extern in the other, or make one of them static"),
    )
}

/// Code of `user` (vmlinux or a module) uses global `name` that the patch adds in `unit`,
/// code of module `module`, and the target has no `name` of its own.
pub fn new_global_of_module(name: &str, unit: &str, module: &str, user: &str) -> Refusal {
    RefusalKind::NewGlobal.refusal(
        name,
        name,
        "",
        format!("{name} is new in {unit}, code of module {module}, and the code of {user} the livepatch carries uses it; the livepatch's copy of {name} is bound to {module} (its klp relocations are resolved only while {module} is loaded), and the running {user} never had a way to reach {module}'s symbols"),
        format!("define {name} in a unit of vmlinux, or of {user}, or keep the change within {module}"),
    )
}

/// Other units use `name`, a static variable of `unit` that the patch makes global.
pub fn new_global_static_data(name: &str, unit: &str) -> Refusal {
    RefusalKind::NewGlobal.refusal(
        name,
        name,
        "",
        format!("{name} is a static variable of {unit} that the patch makes global for other units; the running kernel's {name} holds the state, which a copy in the livepatch would not, and klpgen binds a unit's references to statics of its own file only"),
        format!("keep {name} static and add a new global function to {unit} that reads or writes it (the livepatch carries it, bound to the running {name}), or use a shadow variable"),
    )
}

/// Several units add global `name` (`defs`: unit and patched object each) and other units of
/// the livepatch use more than one of them: the units' objects are linked into one module,
/// where a global name has one definition.
pub fn new_global_linked_twice(name: &str, defs: &[(String, String)]) -> Refusal {
    let list: Vec<String> = defs.iter().map(|(u, o)| format!("{u} ({o})")).collect();
    RefusalKind::NewGlobal.refusal(
        name,
        name,
        "",
        format!("{name} is a new global of {}, and other units of the livepatch use each of them; the livepatch links all its units into one module, where one global name has one definition", list.join(" and ")),
        format!("rename {name} in all but one of the patched objects"),
    )
}

/// New code uses `exporter`'s exported `name` while the livepatch also defines a new global
/// `name` (in `unit`): linking the units' objects into one would bind the use to the new one.
pub fn new_global_shadows(name: &str, unit: &str, exporter: &str) -> Refusal {
    RefusalKind::NewGlobal.refusal(
        name,
        name,
        "",
        format!("the livepatch defines a new global {name} ({unit}) that other units use, and carried code also uses the {name} module {exporter} exports; linking the units' objects into one module would bind that use to the new {name}"),
        format!("rename the new {name}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_follow_their_kind() {
        for k in RefusalKind::ALL {
            assert!(k.key_prefix().starts_with("refuse.") && k.key_prefix().ends_with('.'));
            assert_eq!(k.key("f"), format!("refuse.{}.f", k.name()));
        }
        let mut names: Vec<&str> = RefusalKind::ALL.iter().map(|k| k.name()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(
            names.len(),
            RefusalKind::ALL.len(),
            "two kinds share a name"
        );
        assert_eq!(
            data_changed("x", ".data", "size 4 -> 8", true).key,
            "refuse.init-changed.x"
        );
        let d = duplicate_callback("post_patch", "M", ".s", "a", "b");
        assert_eq!(
            (d.key.as_str(), d.symbol.as_str()),
            ("refuse.duplicate-callback.post_patch", "b")
        );
    }
}
