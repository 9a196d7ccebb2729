//! `cargo xtask demo`: builds a livepatch from examples/proc-version.patch with klpgen's defaults
//! and shows /proc/version in a qemu guest before loading, while loaded, and after unloading.

use crate::case;
use crate::guest;
use crate::kernel;
use crate::setup;
use crate::util;
use anyhow::{bail, Result};

const NAME: &str = "proc-version";

/// Probe for the demo guest: prints /proc/version, succeeds when the patched line is there.
const PROBE: &str = "cat /proc/version\ngrep -q 'live patched by klpgen' /proc/version\n";

pub fn cmd_demo() -> Result<()> {
    setup::install_tools()?;
    let k = kernel::ensure()?;
    let klpgen = case::build_klpgen()?;
    let patch = util::repo_root().join("examples/proc-version.patch");
    let workdir = util::target_dir().join("demo");
    let output = workdir.join(NAME);
    let logs = workdir.join(format!("{NAME}.files"));
    for d in [&output, &logs] {
        if d.exists() {
            std::fs::remove_dir_all(d)?;
        }
    }
    let cmd = case::klpgen_command(&klpgen, &k, NAME, &output, &[], &patch);
    println!("$ {}", util::display(&cmd));
    let run = case::run_klpgen(cmd, &logs)?;
    eprint!("{}", run.stderr);
    print!("{}", run.stdout);
    match run.status {
        Some(st) if st.success() => {}
        Some(st) => bail!("klpgen build failed ({st})"),
        None => bail!("klpgen build timed out"),
    }
    let module = output.join(format!("livepatch-{NAME}.ko"));
    println!(
        "\nbooting the test kernel in qemu with {}",
        module.display()
    );
    let module_name = case::module_name(NAME);
    let report = guest::boot(&guest::Spec {
        kernel: &k.bzimage(),
        machine: guest::TEST_KERNEL,
        module: &module,
        module_name: &module_name,
        probe: PROBE.as_bytes(),
        workdir: &logs,
        preload: None,
        cross: None,
        late: None,
        second: None,
        wrong_kernel: None,
    })?;
    for (phase, label) in guest::PHASES {
        let lines = report.outputs.get(*phase).cloned().unwrap_or_default();
        println!("\n$ cat /proc/version   # {label}");
        if lines.is_empty() {
            println!("    (no output)");
        }
        for l in lines {
            println!("    {l}");
        }
    }
    println!("\nkernel messages:");
    for l in report.livepatch_messages() {
        println!("    {l}");
    }
    let fails = report.failed_checks();
    if !fails.is_empty() {
        for f in &fails {
            eprintln!("check failed: {f}");
        }
        bail!(
            "the demo did not behave as expected; console log: {}",
            report.console_path.display()
        );
    }
    println!(
        "\ndemo OK: patched behaviour appeared after loading and went away after unloading (boot {:.0}s)",
        report.seconds
    );
    Ok(())
}
