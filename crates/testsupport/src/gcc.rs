//! Compiling C fixtures for the integration tests: the gcc flags (code generation like an
//! x86-64 kernel build with IBT, retpolines, return thunks, call padding and ftrace) and a
//! runner that fails the test with the tool's message.

/// Kernel-like code generation, without function sections (how vmlinux objects are built).
pub const KERNEL_CFLAGS: &[&str] = &[
    "-O2",
    "-c",
    "-fno-pic",
    "-mcmodel=kernel",
    "-mno-red-zone",
    "-fno-asynchronous-unwind-tables",
    "-fno-common",
    "-fcf-protection=branch",
    "-fno-jump-tables",
    "-mindirect-branch=thunk-extern",
    "-mfunction-return=thunk-extern",
    "-fpatchable-function-entry=16,16",
    "-pg",
    "-mfentry",
    "-mrecord-mcount",
];

/// What klpgen adds for the objects it diffs.
pub const DIFF_CFLAGS: &[&str] = &["-ffunction-sections", "-fdata-sections"];

/// Run a tool (gcc, ld) and fail the test with its stderr when it fails.
pub fn run(cmd: &mut std::process::Command) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
