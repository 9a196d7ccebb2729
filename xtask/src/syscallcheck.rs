//! `KLPGEN_SYSCALL_DEFINEn` against the test kernel's real headers, with the configuration that
//! makes syscalls hard to livepatch forced on (`CONFIG_FUNCTION_ERROR_INJECTION`,
//! `CONFIG_FTRACE_SYSCALLS`, which a distribution kernel has and the test kernel does not): a
//! syscall body changed under the kernel's `SYSCALL_DEFINEn` is refused; the same change
//! under the helper is one changed, traceable stub with no records. Part of `cargo xtask e2e`
//! (the qemu case `syscall-body` shows the helper's module working on the test kernel).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{bail, Result};

use elfdiff::{Diff, Object, Orig, Patched};

use crate::kernel::Kernel;
use crate::util;

/// One variant of the check unit: which macro defines the syscalls, and which body.
struct Variant {
    name: &'static str,
    helper: bool,
    patched_body: bool,
}

const VARIANTS: &[Variant] = &[
    Variant {
        name: "orig",
        helper: false,
        patched_body: false,
    },
    Variant {
        name: "kernel-macro",
        helper: false,
        patched_body: true,
    },
    Variant {
        name: "klpgen-helper",
        helper: true,
        patched_body: true,
    },
];

/// Two syscalls: one with arguments (`__SYSCALL_DEFINEx`), one without (`SYSCALL_DEFINE0`,
/// whose stub the kernel makes an alias). `noinline` helpers keep the bodies big enough that
/// GCC might keep `__do_sys_*` out of line, as it does for real syscalls.
const SOURCE: &str = r#"// SPDX-License-Identifier: GPL-2.0
#include <linux/module.h>
#include <linux/syscalls.h>
#include <klpgen/klpgen.h>

#ifdef KLPGEN_CHECK_HELPER
#define DEFINE2 KLPGEN_SYSCALL_DEFINE2
#define DEFINE0 KLPGEN_SYSCALL_DEFINE0
#else
#define DEFINE2 SYSCALL_DEFINE2
#define DEFINE0 SYSCALL_DEFINE0
#endif

DEFINE2(klpgen_check, int, a, long, b)
{
#ifdef KLPGEN_CHECK_PATCHED
	pr_info("klpgen check v2 %d %ld\n", a, b);
	return a + b + 1;
#else
	pr_info("klpgen check %d %ld\n", a, b);
	return a + b;
#endif
}

DEFINE0(klpgen_check0)
{
#ifdef KLPGEN_CHECK_PATCHED
	pr_info("klpgen check0 v2\n");
#else
	pr_info("klpgen check0\n");
#endif
	return 0;
}

MODULE_LICENSE("GPL");
"#;

fn build_variant(k: &Kernel, root: &Path, v: &Variant) -> Result<PathBuf> {
    let dir = root.join(v.name);
    if dir.exists() {
        fs::remove_dir_all(&dir)?;
    }
    fs::create_dir_all(&dir)?;
    let mut flags = vec![
        format!("-I{}", util::repo_root().join("include").display()),
        "-DCONFIG_FUNCTION_ERROR_INJECTION=1".to_string(),
        "-DCONFIG_FTRACE_SYSCALLS=1".to_string(),
        "-ffunction-sections".to_string(),
        "-fdata-sections".to_string(),
    ];
    if v.helper {
        flags.push("-DKLPGEN_CHECK_HELPER".into());
    }
    if v.patched_body {
        flags.push("-DKLPGEN_CHECK_PATCHED".into());
    }
    fs::write(
        dir.join("Kbuild"),
        format!("obj-m := syscheck.o\nccflags-y := {}\n", flags.join(" ")),
    )?;
    fs::write(dir.join("syscheck.c"), SOURCE)?;
    util::run_logged(
        Command::new("make")
            .arg("-C")
            .arg(&k.build)
            .arg(format!("M={}", dir.display()))
            .arg("RUSTC=/usr/bin/rustc")
            .arg("syscheck.o")
            .env("PATH", util::path_with_cargo_bin())
            .stdin(Stdio::null()),
        &dir.join("build.log"),
        &format!("building the {} syscall check object", v.name),
    )?;
    Ok(dir.join("syscheck.o"))
}

/// Section names that tie a syscall stub to the running kernel.
const RECORD_SECTIONS: &[&str] = &[
    "_error_injection_whitelist",
    "__syscalls_metadata",
    "_ftrace_events",
];

pub fn check(k: &Kernel) -> Result<()> {
    let start = Instant::now();
    let root = util::target_dir().join("e2e").join("syscall-check");
    let mut objs = Vec::new();
    for v in VARIANTS {
        objs.push(fs::read(build_variant(k, &root, v)?)?);
    }
    let orig = Object::<Orig>::parse("orig (SYSCALL_DEFINEn)", &objs[0])?;
    let kernel = Object::<Patched>::parse("kernel-macro (SYSCALL_DEFINEn)", &objs[1])?;
    let helper = Object::<Patched>::parse("klpgen-helper (KLPGEN_SYSCALL_DEFINEn)", &objs[2])?;
    let mut problems = Vec::new();

    // The forced configuration really produced the records the helper must avoid.
    for s in RECORD_SECTIONS {
        if orig.find_section(s).is_none() {
            problems.push(format!(
                "SYSCALL_DEFINEn produced no {s}: the check does not exercise what it should"
            ));
        }
        if helper.find_section(s).is_some() {
            problems.push(format!("KLPGEN_SYSCALL_DEFINEn produced {s}"));
        }
    }

    // The kernel's macro: the change is refused (error-injection entry, or a notrace
    // __do_sys_* kept out of line), never turned into a livepatch.
    let r = Diff::new(&orig, &kernel).report();
    let keys: Vec<&str> = r.refused.iter().map(|x| x.key.as_str()).collect();
    if keys.is_empty()
        || !keys.iter().all(|k| {
            k.starts_with("refuse.error-injection.") || k.starts_with("refuse.no-ftrace.__do_sys_")
        })
    {
        problems.push(format!(
            "a body changed under SYSCALL_DEFINEn should be refused (error-injection or no-ftrace), got {r:?}"
        ));
    }

    // The helper: exactly the two stubs changed, nothing refused, and the bodies inlined.
    let r = Diff::new(&orig, &helper).report();
    let want = ["__x64_sys_klpgen_check", "__x64_sys_klpgen_check0"];
    if !r.refused.is_empty() || r.changed != want || !r.new.is_empty() {
        problems.push(format!(
            "under KLPGEN_SYSCALL_DEFINEn the change should be {want:?} and nothing else, got {r:?}"
        ));
    }
    for sym in &helper.symbols {
        if sym.section.is_some()
            && (sym.name.starts_with("__do_sys_") || sym.name.starts_with("__se_sys_"))
        {
            problems.push(format!(
                "KLPGEN_SYSCALL_DEFINEn left {} out of line",
                sym.name
            ));
        }
    }
    eprintln!(
        "e2e: KLPGEN_SYSCALL_DEFINEn against the 6.12 headers with error injection and syscall tracing forced on ({:.1}s): {}",
        start.elapsed().as_secs_f64(),
        if problems.is_empty() { "ok" } else { "FAILED" }
    );
    if !problems.is_empty() {
        bail!("syscall helper check:\n  {}", problems.join("\n  "));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variants_cover_both_macros() {
        assert!(VARIANTS.iter().any(|v| v.helper && v.patched_body));
        assert!(VARIANTS.iter().any(|v| !v.helper && v.patched_body));
        assert!(VARIANTS[0].name == "orig" && !VARIANTS[0].helper && !VARIANTS[0].patched_body);
        assert!(SOURCE.contains("KLPGEN_SYSCALL_DEFINE0"));
    }
}
