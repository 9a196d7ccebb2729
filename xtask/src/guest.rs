//! Boots a kernel in qemu with a livepatch module and a probe script, and reads back what the
//! guest's /init reported on the serial console: the test kernel, or a distribution's stock
//! kernel from its package's own `vmlinuz` (its machine: command line, memory, time limit, in
//! [`Machine`]); modules shipped compressed (`.ko.xz`, `.ko.zst`, `.ko.gz`) are decompressed
//! into the initramfs, since busybox's insmod loads only plain ones. A cross-built test kernel
//! (ppc64le, s390x) boots in that machine's qemu (TCG) with Debian's static busybox of that
//! machine.

use crate::initramfs::{self, Archive};
use crate::util;
use anyhow::{bail, Context, Result};
use std::collections::BTreeMap;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Host path of the static busybox (package busybox-static).
pub const BUSYBOX: &str = "/bin/busybox";
/// Hard limit for one guest boot.
pub const BOOT_TIMEOUT: Duration = Duration::from_secs(180);
/// Kernel command line of the guest.
pub const KERNEL_CMDLINE: &str = "console=ttyS0 panic=-1 oops=panic rdinit=/init";

/// The virtual machine a kernel boots in.
#[derive(Debug, Clone, Copy)]
pub struct Machine {
    pub cmdline: &'static str,
    pub memory_mb: u32,
    /// Hard limit for the boot, qemu killed after it.
    pub timeout: Duration,
}

/// The tinyconfig test kernel.
pub const TEST_KERNEL: Machine = Machine {
    cmdline: KERNEL_CMDLINE,
    memory_mb: 512,
    timeout: BOOT_TIMEOUT,
};

/// A distribution's stock kernel: no `quiet`, so warnings and the livepatch core's messages
/// reach the console the checks read; more memory (a full kernel and its initramfs
/// unpacking) and time (its boot probes far more hardware under TCG).
pub const STOCK_KERNEL: Machine = Machine {
    cmdline: KERNEL_CMDLINE,
    memory_mb: 1024,
    timeout: Duration::from_secs(300),
};
/// Prefix of the result lines the guest's /init prints.
const MARK: &str = "KLPGEN-E2E: ";
/// Prefix of the lines describing the loaded livepatch's sysfs tree.
const SYSFS_MARK: &str = "KLPGEN-SYSFS ";
/// Prefix of the lines carrying the probe's own output.
const OUT_MARK: &str = "KLPGEN-OUT ";
/// Console strings that mean the kernel complained.
pub const BAD_CONSOLE: &[&str] = &["Call Trace", "Oops", "BUG:", "WARNING:", "Kernel panic"];
/// Complaints of the emulated machine, not of the kernel under test: QEMU's pseries machine
/// starts with an empty NVRAM, which the powerpc kernel reports at boot.
const HARMLESS_CONSOLE: &[&str] = &["WARNING: nvram corruption detected: 0-length partition"];

/// Busybox applets linked into /bin of the guest.
const APPLETS: &[&str] = &[
    "sh", "ash", "cat", "echo", "printf", "test", "[", "grep", "sed", "awk", "head", "tail", "tr",
    "cut", "wc", "ls", "mount", "umount", "insmod", "rmmod", "lsmod", "sleep", "reboot", "dmesg",
    "sync", "mkdir", "uname", "true", "false", "od", "hexdump", "find", "stat", "readlink",
    "poweroff",
];

/// The probe phases, in the order the guest runs them (`after-second` only with a second,
/// replacing module).
pub const PHASES: &[(&str, &str)] = &[
    ("before", "before loading"),
    ("after-load", "after loading"),
    ("after-second", "after the second module replaced the first"),
    ("after-unload", "after disabling and unloading"),
];

/// What to boot.
pub struct Spec<'a> {
    /// The kernel image (a bzImage: the test kernel's, or a package's `vmlinuz`).
    pub kernel: &'a Path,
    pub machine: Machine,
    /// The livepatch `.ko`.
    pub module: &'a Path,
    /// The module's name inside the kernel (e.g. `livepatch_foo`).
    pub module_name: &'a str,
    /// POSIX sh script; exit 0 means the patched behaviour is visible.
    pub probe: &'a [u8],
    /// Directory for the initramfs and console log.
    pub workdir: &'a Path,
    /// A module loaded before anything else (the out-of-tree or stock module a case
    /// patches), as `/oot.ko`.
    pub preload: Option<&'a Path>,
    /// The machine of a cross-built test kernel; None for x86-64.
    pub cross: Option<&'static crate::kernel::Cross>,
    /// A module put into the guest as `/late.ko` and not loaded by `/init`: the probe loads
    /// it once the livepatch is, so the livepatch core patches a module as it arrives.
    pub late: Option<&'a Path>,
    /// A second livepatch (`.ko` and its name inside the kernel) loaded once the first is
    /// enabled: it replaces the first (atomic replace), which is then unloaded; the second is
    /// the one disabled and unloaded at the end.
    pub second: Option<(&'a Path, &'a str)>,
    /// A copy of the livepatch whose guard names another kernel: loaded first, it must be
    /// refused (its hook returns -EINVAL before enabling anything).
    pub wrong_kernel: Option<&'a Path>,
}

/// What the guest reported.
#[derive(Debug, Default)]
pub struct Report {
    pub console_path: PathBuf,
    pub console: String,
    pub timed_out: bool,
    /// The limit it was held to.
    pub timeout: Duration,
    pub seconds: f64,
    /// `key=value` pairs printed by /init.
    pub values: BTreeMap<String, String>,
    /// Probe output per phase.
    pub outputs: BTreeMap<String, Vec<String>>,
    /// A second, replacing module was loaded ([`Spec::second`]): its checks apply.
    pub second: bool,
    /// The `KLPGEN-SYSFS` lines of the loaded livepatch (`d PATH`, `f PATH VALUE`,
    /// `x PATH HEX`, `end`), for `listcheck.rs`.
    pub sysfs: Vec<String>,
}

impl Report {
    pub fn value(&self, key: &str) -> Option<&str> {
        self.values.get(key).map(String::as_str)
    }

    /// `uname -r` in the guest.
    pub fn release(&self) -> Option<&str> {
        self.value("release")
    }

    /// Kernel complaints found on the console (lines, at most a few).
    pub fn complaints(&self) -> Vec<&str> {
        self.console
            .lines()
            .filter(|l| !l.contains(OUT_MARK))
            .filter(|l| BAD_CONSOLE.iter().any(|b| l.contains(b)))
            .filter(|l| !HARMLESS_CONSOLE.iter().any(|h| l.contains(h)))
            .take(5)
            .collect()
    }

    /// Console lines from the livepatch core (for the demo's narrative).
    pub fn livepatch_messages(&self) -> Vec<&str> {
        self.console
            .lines()
            .map(|l| l.trim_end_matches('\r'))
            .filter(|l| l.starts_with("livepatch") || l.contains(": tainting kernel"))
            .collect()
    }

    /// Every check of the end-to-end test that failed, described; empty means pass.
    pub fn failed_checks(&self) -> Vec<String> {
        let mut fails = Vec::new();
        if self.timed_out {
            fails.push(format!(
                "the guest did not finish within {}s (qemu killed)",
                self.timeout.as_secs()
            ));
        }
        let v = |k: &str| self.value(k).unwrap_or("<missing>");
        if self.value("start").is_none() {
            fails.push("the guest's /init never started".to_string());
        }
        if self.value("guard") == Some("0") {
            fails.push(
                "a copy of the module whose guard names another kernel loaded (guard=0): the hook's guard did not refuse it".to_string(),
            );
        }
        let before = v("probe-before");
        if before == "0" || before == "<missing>" {
            fails.push(format!(
                "probe before loading should fail (the unpatched kernel must not show the change), got probe-before={before}"
            ));
        }
        if v("insmod") != "0" {
            fails.push(format!("insmod failed (insmod={})", v("insmod")));
        } else {
            let second: &[(&str, &str, &str)] = if self.second {
                &[
                    ("insmod-second", "0", "insmod of the second module failed"),
                    (
                        "enabled-second",
                        "1",
                        "the second patch is not enabled after loading",
                    ),
                    (
                        "replaced",
                        "1",
                        "the first patch's sysfs directory did not go away (not replaced)",
                    ),
                    (
                        "probe-after-second",
                        "0",
                        "probe after the second module replaced the first failed",
                    ),
                    (
                        "rmmod-replaced",
                        "0",
                        "rmmod of the replaced first module failed",
                    ),
                ]
            } else {
                &[]
            };
            for (key, want, what) in second {
                if v(key) != *want {
                    fails.push(format!("{what} ({key}={}, expected {want})", v(key)));
                }
            }
            let checks = [
                ("enabled", "1", "the patch is not enabled after loading"),
                ("transition", "0", "the patch transition did not complete"),
                (
                    "probe-after-load",
                    "0",
                    "probe after loading failed (patched behaviour not visible)",
                ),
                ("disable", "0", "writing 0 to .../enabled failed"),
                (
                    "sysfs-gone",
                    "1",
                    "/sys/kernel/livepatch/<mod> did not go away after disabling",
                ),
                ("rmmod", "0", "rmmod failed"),
            ];
            for (key, want, what) in checks {
                if v(key) != want {
                    fails.push(format!("{what} ({key}={}, expected {want})", v(key)));
                }
            }
            let after = v("probe-after-unload");
            if after == "0" || after == "<missing>" {
                fails.push(format!(
                    "probe after unloading should fail (old behaviour back), got probe-after-unload={after}"
                ));
            }
        }
        if self.value("done").is_none() && !self.timed_out {
            fails.push("the guest's /init did not run to the end".to_string());
        }
        for line in self.complaints() {
            fails.push(format!("kernel complaint on the console: {}", line.trim()));
        }
        fails
    }
}

/// Shell-quotes nothing: the module name is checked to be `[A-Za-z0-9_]+` instead.
fn check_module_name(name: &str) -> Result<()> {
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        bail!("invalid module name {name:?}");
    }
    Ok(())
}

/// The guest's /init script; `second`: the name of a second, replacing module (`/lp2.ko`).
pub fn init_script(module_name: &str, second: Option<&str>) -> String {
    let second = match second {
        Some(name) => SECOND_TEMPLATE.replace("@SECOND@", name),
        None => String::new(),
    };
    INIT_TEMPLATE
        .replace("@MODULE@", module_name)
        .replace("@SECOND_STEPS@\n", &second)
}

/// The steps of /init with a second module: load it, wait for its transition, check that the
/// first patch went away (replaced), probe, unload the first module; from then on the second
/// is the one disabled and unloaded.
const SECOND_TEMPLATE: &str = r#"    insmod /lp2.ko
    say "insmod-second=$?"
    D2=/sys/kernel/livepatch/@SECOND@
    i=0
    while [ "$i" -lt 300 ]; do
        [ "$(cat "$D2/transition" 2>/dev/null)" = 0 ] && break
        sleep 0.1
        i=$((i + 1))
    done
    say "enabled-second=$(cat "$D2/enabled" 2>/dev/null)"
    i=0
    while [ -d "$D" ] && [ "$i" -lt 300 ]; do
        sleep 0.1
        i=$((i + 1))
    done
    if [ -d "$D" ]; then say replaced=0; else say replaced=1; fi
    probe after-second
    # The replaced patch lets go of its module just after its directory goes.
    i=0
    while ! rmmod "$M" 2>/dev/null && [ "$i" -lt 50 ]; do
        sleep 0.1
        i=$((i + 1))
    done
    if grep -q "^$M " /proc/modules; then say rmmod-replaced=1; else say rmmod-replaced=0; fi
    M=@SECOND@
    D=$D2
"#;

const INIT_TEMPLATE: &str = r#"#!/bin/sh
# Generated by `cargo xtask`: loads, checks, disables and unloads a livepatch module.
PATH=/bin
export PATH
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
M=@MODULE@
D=/sys/kernel/livepatch/$M
say() { echo "KLPGEN-E2E: $*"; }
probe() {
    sh /probe.sh >/tmp/probe.out 2>&1
    rc=$?
    while IFS= read -r line || [ -n "$line" ]; do
        echo "KLPGEN-OUT $1| $line"
    done </tmp/probe.out
    say "probe-$1=$rc"
}
# What the kernel shows of the loaded livepatch, for `klpgen list --sysfs` on the host
# (listcheck.rs): directories, readable attributes, the module's build-id note in hex.
dump_sysfs() {
    for p in $(find "$D" /sys/module/$M/initstate /sys/module/$M/taint); do
        if [ -d "$p" ]; then
            echo "KLPGEN-SYSFS d $p"
        elif v=$(cat "$p" 2>/dev/null); then
            echo "KLPGEN-SYSFS f $p $v"
        fi
    done
    n=/sys/module/$M/notes/.note.gnu.build-id
    [ -r "$n" ] && echo "KLPGEN-SYSFS x $n $(od -An -v -tx1 "$n" | tr -d ' \n')"
    echo "KLPGEN-SYSFS end"
}
if [ -f /oot.ko ]; then
    insmod /oot.ko
    say "preload=$?"
    sleep 1
fi
say start=1
say "release=$(uname -r)"
if [ -f /wrong.ko ]; then
    insmod /wrong.ko
    say "guard=$?"
fi
probe before
insmod /lp.ko
rc=$?
say "insmod=$rc"
if [ "$rc" -eq 0 ]; then
    i=0
    while [ "$i" -lt 300 ]; do
        [ "$(cat "$D/transition" 2>/dev/null)" = 0 ] && break
        sleep 0.1
        i=$((i + 1))
    done
    say "enabled=$(cat "$D/enabled" 2>/dev/null)"
    say "transition=$(cat "$D/transition" 2>/dev/null)"
    dump_sysfs
    probe after-load
@SECOND_STEPS@
    echo 0 >"$D/enabled"
    say "disable=$?"
    i=0
    while [ -d "$D" ] && [ "$i" -lt 300 ]; do
        sleep 0.1
        i=$((i + 1))
    done
    if [ -d "$D" ]; then say sysfs-gone=0; else say sysfs-gone=1; fi
    rmmod "$M"
    say "rmmod=$?"
    probe after-unload
fi
say done=1
sync
reboot -f
"#;

/// Prefix of the result lines the stress /init prints.
pub const STRESS_MARK: &str = "KLPGEN-STRESS: ";

/// The guest's /init for `cargo xtask stress`: `cycles` times load the module, wait for the
/// transition, check it is enabled and the probe passes, disable it, wait for its sysfs
/// directory to go, unload it, check nothing is left under /sys/kernel/livepatch and the
/// probe fails again — while `workload` runs in a loop in the background: a shell command
/// that runs the patched code and succeeds when it saw the patched behaviour (counted, to
/// show the new code ran under load). `workload` is a trusted constant of the harness.
pub fn stress_init_script(module_name: &str, cycles: u32, workload: &str) -> String {
    STRESS_TEMPLATE
        .replace("@MODULE@", module_name)
        .replace("@CYCLES@", &cycles.to_string())
        .replace("@WORKLOAD@", workload)
}

const STRESS_TEMPLATE: &str = r#"#!/bin/sh
# Generated by `cargo xtask stress`: loads, checks, disables and unloads a livepatch module
# @CYCLES@ times while a workload runs the patched code.
PATH=/bin
export PATH
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
M=@MODULE@
N=@CYCLES@
L=/sys/kernel/livepatch
D=$L/$M
say() { echo "KLPGEN-STRESS: $*"; }
uptime() { cut -d' ' -f1 /proc/uptime; }
# Polls a condition every 0.1 s for at most 30 s.
waitfor() {
    n=0
    while [ "$n" -lt 300 ]; do
        "$@" && return 0
        sleep 0.1
        n=$((n + 1))
    done
    "$@"
}
settled() { [ "$(cat "$D/transition" 2>/dev/null)" = 0 ]; }
gone() { [ ! -e "$D" ]; }
probe() { sh /probe.sh >/dev/null 2>&1; }
say start=1
if probe; then say probe-before=0; else say probe-before=1; fi
(
    n=0
    h=0
    while :; do
        if @WORKLOAD@; then h=$((h + 1)); fi
        n=$((n + 1))
        echo "$n $h" >/tmp/workload.count
    done
) &
W=$!
say "uptime-start=$(uptime)"
i=0
ok=0
while [ "$i" -lt "$N" ]; do
    i=$((i + 1))
    err=
    if ! insmod /lp.ko; then
        err=insmod
    elif ! waitfor settled; then
        err="transition-not-done transition=$(cat "$D/transition" 2>/dev/null)"
    elif [ "$(cat "$D/enabled" 2>/dev/null)" != 1 ]; then
        err="not-enabled enabled=$(cat "$D/enabled" 2>/dev/null)"
    elif ! probe; then
        err=probe-failed-while-loaded
    elif ! echo 0 >"$D/enabled"; then
        err=disable
    elif ! waitfor gone; then
        err="sysfs-not-gone transition=$(cat "$D/transition" 2>/dev/null)"
    elif ! rmmod "$M"; then
        err=rmmod
    elif [ -n "$(ls "$L")" ]; then
        err="leaked: $(ls "$L" | tr '
' ' ')"
    elif grep -q "^$M " /proc/modules; then
        err=module-still-listed
    elif probe; then
        err=probe-passed-after-unload
    fi
    if [ -n "$err" ]; then
        say "cycle-$i=FAIL $err"
        break
    fi
    ok=$((ok + 1))
    say "cycle-$i=ok"
done
say "uptime-end=$(uptime)"
kill "$W" 2>/dev/null
wait "$W" 2>/dev/null
runs=0
hits=0
[ -f /tmp/workload.count ] && read -r runs hits </tmp/workload.count
say "workload-runs=$runs"
say "workload-patched=$hits"
say "cycles-ok=$ok"
say done=1
sync
reboot -f
"#;

/// Writes the gzip'd initramfs for `spec` to `out`.
pub fn build_initramfs(spec: &Spec<'_>, out: &Path) -> Result<()> {
    if let Some((_, name)) = spec.second {
        check_module_name(name)?;
    }
    let mut init = init_script(spec.module_name, spec.second.map(|(_, n)| n));
    if spec.cross.is_some() {
        // pseries and s390-ccw machines reboot into their firmware; powering off ends qemu.
        init = init.replace("reboot -f", "poweroff -f");
    }
    build_initramfs_with(spec, &init, out)
}

/// Writes the gzip'd initramfs for `spec` with `init` as its /init script to `out`.
pub fn build_initramfs_with(spec: &Spec<'_>, init: &str, out: &Path) -> Result<()> {
    check_module_name(spec.module_name)?;
    let busybox_path = match spec.cross {
        Some(c) => crate::setup::guest_busybox(c)?,
        None => PathBuf::from(BUSYBOX),
    };
    let busybox = fs::read(&busybox_path).with_context(|| {
        format!(
            "cannot read {} (package busybox-static)",
            busybox_path.display()
        )
    })?;
    let module = module_bytes(spec.module)?;
    let mut a = Archive::new();
    for d in ["bin", "dev", "proc", "sys", "tmp"] {
        a.dir(d);
    }
    a.char_dev("dev/console", 0o600, 5, 1);
    a.file("bin/busybox", 0o755, &busybox);
    for applet in APPLETS {
        a.symlink(&format!("bin/{applet}"), "busybox");
    }
    a.file("init", 0o755, init.as_bytes());
    a.file("probe.sh", 0o755, spec.probe);
    a.file("lp.ko", 0o644, &module);
    if let Some(p) = spec.preload {
        a.file("oot.ko", 0o644, &module_bytes(p)?);
    }
    if let Some(p) = spec.late {
        a.file("late.ko", 0o644, &module_bytes(p)?);
    }
    if let Some((p, _)) = spec.second {
        let bytes = fs::read(p).with_context(|| format!("cannot read {}", p.display()))?;
        a.file("lp2.ko", 0o644, &bytes);
    }
    if let Some(p) = spec.wrong_kernel {
        let bytes = fs::read(p).with_context(|| format!("cannot read {}", p.display()))?;
        a.file("wrong.ko", 0o644, &bytes);
    }
    initramfs::write_gzip(&a.finish(), out)
}

/// A module's bytes as insmod wants them: decompressed when the distribution ships it as
/// `.ko.xz`, `.ko.zst` or `.ko.gz` (busybox insmod loads only plain modules).
pub fn module_bytes(path: &Path) -> Result<Vec<u8>> {
    let name = path.to_string_lossy();
    let tool = [
        (".ko.xz", "xz", "xz-utils"),
        (".ko.zst", "zstd", "zstd"),
        (".ko.gz", "gzip", "gzip"),
    ]
    .into_iter()
    .find(|(ext, _, _)| name.ends_with(ext));
    let Some((_, prog, package)) = tool else {
        return fs::read(path).with_context(|| format!("cannot read {}", path.display()));
    };
    let out = Command::new(prog)
        .arg("-dc")
        .arg(path)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run {prog} (package {package})"))?;
    if !out.status.success() {
        bail!(
            "{prog} -dc {} failed ({}): {}",
            path.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(out.stdout)
}

/// Parses the console log into a report (everything but the timing fields).
pub fn parse_console(console: &str) -> Report {
    let mut r = Report {
        console: console.to_string(),
        ..Report::default()
    };
    for raw in console.lines() {
        let line = raw.trim_end_matches('\r');
        if let Some(pos) = line.find(SYSFS_MARK) {
            r.sysfs.push(line[pos + SYSFS_MARK.len()..].to_string());
        } else if let Some(pos) = line.find(MARK) {
            let rest = &line[pos + MARK.len()..];
            if let Some((k, v)) = rest.split_once('=') {
                r.values
                    .entry(k.trim().to_string())
                    .or_insert_with(|| v.trim().to_string());
            }
        } else if let Some(pos) = line.find(OUT_MARK) {
            let rest = &line[pos + OUT_MARK.len()..];
            if let Some((phase, text)) = rest.split_once("| ") {
                r.outputs
                    .entry(phase.to_string())
                    .or_default()
                    .push(text.to_string());
            } else if let Some(phase) = rest.strip_suffix('|') {
                r.outputs
                    .entry(phase.to_string())
                    .or_default()
                    .push(String::new());
            }
        }
    }
    r
}

/// Builds the initramfs and boots qemu (TCG, no KVM) with a hard timeout.
pub fn boot(spec: &Spec<'_>) -> Result<Report> {
    fs::create_dir_all(spec.workdir)?;
    let initrd = spec.workdir.join("initrd.gz");
    build_initramfs(spec, &initrd)?;
    let run = run_qemu(spec, &initrd, spec.machine.timeout)?;
    let mut r = parse_console(&run.console);
    r.timeout = spec.machine.timeout;
    r.second = spec.second.is_some();
    r.console_path = run.console_path;
    r.seconds = run.seconds;
    r.timed_out = run.status.is_none();
    if let Some(st) = run.status {
        if !st.success() && r.value("start").is_none() {
            bail!(
                "qemu failed ({st}):\n{}",
                util::indent(&util::tail_lines(&run.console, 20))
            );
        }
    }
    Ok(r)
}

/// One qemu run: the console and how it ended.
pub struct QemuRun {
    pub console_path: PathBuf,
    pub console: String,
    /// `None` when qemu was killed at the time limit.
    pub status: Option<std::process::ExitStatus>,
    pub seconds: f64,
}

/// Boots `spec.kernel` with `initrd` in qemu (TCG, no KVM, one CPU) as `spec.machine` says,
/// the console going to `spec.workdir/console.log`; kills it after `limit`.
pub fn run_qemu(spec: &Spec<'_>, initrd: &Path, limit: Duration) -> Result<QemuRun> {
    let console_path = spec.workdir.join("console.log");
    let console_file = File::create(&console_path)?;
    let console_err = console_file.try_clone()?;
    let (mut qemu, package) = match spec.cross.map(|c| c.name) {
        // QEMU's small Virtual Open Firmware instead of SLOF (much faster under TCG); the
        // cap-* settings silence TCG's warnings about Spectre mitigations it cannot offer.
        Some("ppc64le") => {
            let mut q = Command::new("qemu-system-ppc64");
            q.args([
                "-M",
                "pseries,x-vof=on,cap-cfpc=broken,cap-sbbc=broken,cap-ibs=broken,cap-ccf-assist=off",
                "-cpu",
                "power9",
            ])
            .arg("-append")
            .arg(spec.machine.cmdline.replace("console=ttyS0", "console=hvc0"));
            (q, "qemu-system-ppc")
        }
        Some("s390x") => {
            let mut q = Command::new("qemu-system-s390x");
            q.args(["-M", "s390-ccw-virtio", "-cpu", "qemu"])
                .arg("-append")
                .arg(
                    spec.machine
                        .cmdline
                        .replace("console=ttyS0", "console=ttysclp0"),
                );
            (q, "qemu-system-misc")
        }
        Some(other) => bail!("no qemu machine for the {other} test kernel"),
        None => {
            let mut q = Command::new("qemu-system-x86_64");
            q.args(["-accel", "tcg"])
                .arg("-append")
                .arg(spec.machine.cmdline);
            (q, "qemu-system-x86")
        }
    };
    qemu.arg("-m")
        .arg(spec.machine.memory_mb.to_string())
        .args(["-smp", "1", "-nographic", "-no-reboot"]);
    if spec.cross.is_some() {
        qemu.args(["-monitor", "none", "-serial", "stdio", "-nodefaults"]);
    }
    qemu.arg("-kernel")
        .arg(spec.kernel)
        .arg("-initrd")
        .arg(initrd)
        .stdin(Stdio::null())
        .stdout(console_file)
        .stderr(console_err);
    let start = Instant::now();
    let mut child = qemu.spawn().with_context(|| {
        format!(
            "cannot start `{}` (package {package})",
            util::display(&qemu)
        )
    })?;
    let status = util::wait_timeout(&mut child, limit)?;
    let seconds = start.elapsed().as_secs_f64();
    let console = String::from_utf8_lossy(&fs::read(&console_path)?).into_owned();
    Ok(QemuRun {
        console_path,
        console,
        status,
        seconds,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "Run /init as init process\r
KLPGEN-E2E: start=1\r
KLPGEN-E2E: probe-before=1\r
livepatch: enabling patch 'livepatch_x'\r
KLPGEN-E2E: insmod=0\r
KLPGEN-E2E: enabled=1\r
KLPGEN-E2E: transition=0\r
KLPGEN-OUT after-load| hello patched\r
KLPGEN-E2E: probe-after-load=0\r
KLPGEN-E2E: disable=0\r
KLPGEN-E2E: sysfs-gone=1\r
KLPGEN-E2E: rmmod=0\r
KLPGEN-E2E: probe-after-unload=1\r
KLPGEN-E2E: done=1\r
reboot: Restarting system\r
";

    #[test]
    fn good_console_passes() {
        let r = parse_console(GOOD);
        assert_eq!(r.failed_checks(), Vec::<String>::new());
        assert_eq!(r.outputs["after-load"], vec!["hello patched"]);
        assert_eq!(
            r.livepatch_messages(),
            vec!["livepatch: enabling patch 'livepatch_x'"]
        );
    }

    #[test]
    fn bad_console_fails() {
        let bad = GOOD
            .replace("probe-after-load=0", "probe-after-load=1")
            .replace("reboot:", "WARNING: CPU: 0 PID: 1 at kernel/x.c:1\nreboot:");
        let f = parse_console(&bad).failed_checks();
        assert_eq!(f.len(), 2, "{f:?}");
        assert!(f[0].contains("probe after loading failed"));
        assert!(f[1].contains("WARNING:"));
        let f = parse_console("KLPGEN-E2E: start=1\nKLPGEN-E2E: probe-before=0\n").failed_checks();
        assert!(f.iter().any(|m| m.contains("probe before loading")));
        assert!(f.iter().any(|m| m.contains("insmod failed")));
        assert!(f.iter().any(|m| m.contains("did not run to the end")));
    }

    #[test]
    fn module_name_is_checked() {
        assert!(check_module_name("livepatch_a_b1").is_ok());
        assert!(check_module_name("x;reboot").is_err());
        assert!(check_module_name("").is_err());
        assert!(init_script("livepatch_z", None).contains("M=livepatch_z\n"));
        assert!(!init_script("livepatch_z", None).contains("lp2.ko"));
        assert!(!init_script("livepatch_z", None).contains('@'));
        let two = init_script("livepatch_z", Some("livepatch_z_second"));
        assert!(two.contains("D2=/sys/kernel/livepatch/livepatch_z_second\n"));
        assert!(two.find("insmod /lp2.ko") > two.find("probe after-load"));
        assert!(two.find("M=livepatch_z_second") < two.find("echo 0 >\"$D/enabled\""));
        assert!(!two.contains('@'));
    }

    #[test]
    fn a_second_module_adds_its_checks() {
        let mut r = parse_console(GOOD);
        r.second = true;
        let f = r.failed_checks();
        assert_eq!(f.len(), 5, "{f:?}");
        let two = GOOD.replace(
            "KLPGEN-E2E: disable=0",
            "KLPGEN-E2E: insmod-second=0\r\nKLPGEN-E2E: enabled-second=1\r\nKLPGEN-E2E: replaced=1\r\nKLPGEN-E2E: probe-after-second=0\r\nKLPGEN-E2E: rmmod-replaced=0\r\nKLPGEN-E2E: disable=0",
        );
        let mut r = parse_console(&two);
        r.second = true;
        assert_eq!(r.failed_checks(), Vec::<String>::new());
    }
}
