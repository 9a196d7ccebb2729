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

/// A machine the fixtures are compiled for (`//# arch:`; x86-64 without one): its compiler
/// and the kernel's code-generation flags for vmlinux units of that machine (Linux 6.12,
/// Debian 12's cross compilers; research in /work/notes/cross/NOTES.md).
pub struct CrossArch {
    /// The directive's value.
    pub name: &'static str,
    /// The compiler and the flags that select the machine.
    pub cc: &'static [&'static str],
    /// The Debian package that has the compiler (for the message when it is missing).
    pub package: &'static str,
    pub cflags: &'static [&'static str],
}

pub const CROSS: &[CrossArch] = &[
    CrossArch {
        name: "ppc64le",
        cc: &["powerpc64le-linux-gnu-gcc"],
        package: "gcc-powerpc64le-linux-gnu",
        cflags: &[
            "-O2",
            "-c",
            "-m64",
            "-mlittle-endian",
            "-mabi=elfv2",
            "-mcmodel=medium",
            "-mcpu=power8",
            "-msoft-float",
            "-mno-altivec",
            "-mno-vsx",
            "-fno-common",
            "-fno-asynchronous-unwind-tables",
            "-fno-jump-tables",
            "-pg",
            "-mprofile-kernel",
        ],
    },
    CrossArch {
        name: "s390x",
        cc: &["s390x-linux-gnu-gcc"],
        package: "gcc-s390x-linux-gnu",
        cflags: &[
            "-O2",
            "-c",
            "-m64",
            "-fPIC",
            "-mpacked-stack",
            "-mbackchain",
            "-msoft-float",
            "-march=z196",
            "-mtune=z196",
            "-mindirect-branch=thunk-extern",
            "-mfunction-return=thunk-extern",
            "-mindirect-branch-table",
            "-fno-common",
            "-fno-asynchronous-unwind-tables",
            "-pg",
            "-mrecord-mcount",
            "-mnop-mcount",
            "-mfentry",
        ],
    },
    CrossArch {
        name: "aarch64",
        cc: &["aarch64-linux-gnu-gcc"],
        package: "gcc-aarch64-linux-gnu",
        cflags: &[
            "-O2",
            "-c",
            "-mgeneral-regs-only",
            "-mbranch-protection=none",
            "-fno-common",
            "-fno-asynchronous-unwind-tables",
            "-fpatchable-function-entry=2",
        ],
    },
    CrossArch {
        name: "loongarch64",
        // Debian 12 has no GNU cross toolchain for loongarch64: clang, as the kernel's
        // LLVM=1 build uses it.
        cc: &["clang-19", "--target=loongarch64-linux-gnu"],
        package: "clang-19",
        cflags: &[
            "-O2",
            "-c",
            "-mabi=lp64s",
            "-msoft-float",
            "-mno-relax",
            "-fPIE",
            "-fno-common",
            "-fno-asynchronous-unwind-tables",
            "-fpatchable-function-entry=2",
        ],
    },
];

/// The machine of a `//# arch:` value.
pub fn cross_arch(name: &str) -> Option<&'static CrossArch> {
    CROSS.iter().find(|c| c.name == name)
}

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
