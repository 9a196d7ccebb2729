//! The `--report` JSON document of `klpgen build` (schema in docs/report.md) and the stage
//! clock that prints one line per stage. The document is written on every outcome, a failed or
//! refused run included (`build::run`).

use std::time::Instant;

use serde::Serialize;
use sha2::{Digest, Sha256};

pub const SCHEMA: &str = "klpgen-report/1";

pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[derive(Debug, Serialize, Default)]
pub struct Kernel {
    pub release: String,
    pub config_sha256: String,
    /// The compiler that built the target vmlinux (its `.comment`).
    pub compiler: String,
    /// The vmlinux's `UTS_VERSION` (its banner's version part, `uname -v` on that kernel).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// The distribution whose package the kernel is (`debian`), from its banner.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub distribution: Option<String>,
    /// That package's version (`6.1.192-3`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub package_version: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct PatchEntry {
    pub path: String,
    pub sha256: String,
}

#[derive(Debug, Serialize)]
pub struct FunctionVerdict {
    pub name: String,
    /// `changed`, `new` or `refused`.
    pub verdict: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
    /// Why it changed (changed functions): its own code, or re-emitted as a caller.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub why: Option<String>,
    /// Consistency analysis (changed functions).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub callers: Option<CallerInfo>,
    /// What `klpgen explain` says: the first differing instruction, source lines, inlined
    /// callees.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub explain: Option<elfdiff::explain::Explanation>,
    /// Its split parts (`.cold`, `.part.N`) that are changed or new, each an entry of its own
    /// (verdict, why, callers, explain); absent when none.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub parts: Vec<FunctionVerdict>,
}

#[derive(Debug, Serialize, Clone, Default)]
pub struct CallerInfo {
    /// Direct callers (calls and tail calls) in the same object.
    pub direct: Vec<String>,
    /// Callers that call it inside a loop: a task parked in one of them may run the old and
    /// the new version in turn unless the caller is patched too.
    pub looping: Vec<String>,
    /// Its address is taken (it may be called through a pointer, callers unknown).
    pub address_taken: bool,
    /// For a private function (no ftrace entry, reached through its replaced callers): the
    /// callers that jump to it as a tail call. A task inside the old version entered that way
    /// has no replaced function on its stack, so it switches and finishes the old version
    /// under the new code.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tail_calling: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct ObjectEntry {
    /// The translation unit, relative to the build root.
    pub unit: String,
    /// The object patched at run time (`vmlinux` or a module name).
    pub target: String,
    pub functions: Vec<FunctionVerdict>,
    /// Differences left out as `KLPGEN_IGNORE_FUNCTION`/`KLPGEN_IGNORE_SECTION` asked.
    pub ignored: Vec<elfdiff::Ignored>,
    /// Livepatch callbacks (`KLPGEN_*_CALLBACK`) the unit defines.
    pub callbacks: Vec<elfdiff::CallbackEntry>,
    /// System states (`KLPGEN_STATE`) the unit declares; absent when none.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub states: Vec<elfdiff::State>,
}

#[derive(Debug, Serialize)]
pub struct KlpReloc {
    pub object: String,
    pub symbol: String,
    pub sympos: u64,
}

#[derive(Debug, Serialize)]
pub struct ModuleEntry {
    pub path: String,
    pub sha256: String,
    /// Signed with --sign-key/--sign-cert (the sha256 covers the signature).
    pub signed: bool,
}

/// Modules the livepatch patches that the target kernel will not load again while the
/// livepatch is loaded (docs/report.md `module_reload`).
#[derive(Debug, Serialize, Clone)]
pub struct ModuleReload {
    pub modules: Vec<String>,
    pub reason: String,
    pub remedy: String,
}

#[derive(Debug, Serialize)]
pub struct PackageEntry {
    pub path: String,
    pub sha256: String,
    /// The package's name and version.
    pub name: String,
    pub version: String,
    /// Its Depends field (the kernel image package of a distribution target).
    pub depends: String,
}

#[derive(Debug, Serialize)]
pub struct Stage {
    pub name: String,
    pub seconds: f64,
}

#[derive(Debug, Serialize)]
pub struct BuildReport {
    pub schema: &'static str,
    pub klpgen_version: &'static str,
    /// `built`, `refused`, `no-change`, `kernel-build-failed` or `error`.
    pub result: String,
    pub exit_code: u8,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    pub kernel: Kernel,
    pub patches: Vec<PatchEntry>,
    pub objects: Vec<ObjectEntry>,
    pub klp_relocations: Vec<KlpReloc>,
    pub hook: Option<&'static str>,
    pub module: Option<ModuleEntry>,
    /// The package `--package` wrote; absent without it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub package: Option<PackageEntry>,
    /// What the target's objtool said about the livepatch object, on targets where klpgen
    /// runs it (ORC without IBT); absent when it said nothing or did not run.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub objtool_warnings: Vec<String>,
    /// What the livepatch object does differently from a plain copy (`elfdiff::Plan::notes`),
    /// each prefixed with its unit; absent when there is nothing to say.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
    /// The patched modules a kernel without `clear_relocate_add` (before 6.3) cannot load a
    /// second time while the livepatch is loaded; absent when there are none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub module_reload: Option<ModuleReload>,
    pub stages: Vec<Stage>,
    /// The target's name in a run over several targets: its stages are shown as `NAME: stage`.
    #[serde(skip)]
    pub label: Option<String>,
    #[serde(skip)]
    clock: Option<(Instant, Instant, String)>,
}

impl BuildReport {
    pub fn new() -> Self {
        BuildReport {
            schema: SCHEMA,
            klpgen_version: env!("CARGO_PKG_VERSION"),
            result: String::new(),
            exit_code: 0,
            message: None,
            kernel: Kernel::default(),
            patches: Vec::new(),
            objects: Vec::new(),
            klp_relocations: Vec::new(),
            hook: None,
            module: None,
            package: None,
            objtool_warnings: Vec::new(),
            notes: Vec::new(),
            module_reload: None,
            stages: Vec::new(),
            label: None,
            clock: None,
        }
    }

    /// Close the running stage and start `name`; shown by `progress`.
    pub fn stage(&mut self, name: &str) {
        let now = Instant::now();
        let start = match self.clock.take() {
            Some((start, since, prev)) => {
                self.stages.push(Stage {
                    name: prev,
                    seconds: round_ms(now.duration_since(since).as_secs_f64()),
                });
                start
            }
            None => now,
        };
        match &self.label {
            Some(l) => crate::progress::stage(&format!("{l}: {name}")),
            None => crate::progress::stage(name),
        }
        self.clock = Some((start, now, name.to_string()));
    }

    /// Record how the run ended.
    pub fn finish(&mut self, result: &'static str, code: u8, message: Option<String>) {
        if let Some((_, since, prev)) = self.clock.take() {
            self.stages.push(Stage {
                name: prev,
                seconds: round_ms(since.elapsed().as_secs_f64()),
            });
        }
        self.result = result.to_string();
        self.exit_code = code;
        self.message = message;
    }
}

fn round_ms(s: f64) -> f64 {
    (s * 1000.0).round() / 1000.0
}
