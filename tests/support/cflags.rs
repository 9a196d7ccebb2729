//! The gcc flags the integration tests compile C fixtures with: code generation like an
//! x86-64 kernel build with IBT, retpolines, return thunks, call padding and ftrace.

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
