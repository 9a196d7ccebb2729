#!/bin/sh
# Passes when the livepatch module's printk index (debugfs) lists both new printk formats of
# the patched version_proc_show(): its own (func = version_proc_show) and the one of the helper
# inlined into it (func = klpgen_e2e_check_record). Before loading and after unloading there is
# no such file. The index is not enough alone: /proc/version shows the new body too.
grep -qs " /sys/kernel/debug " /proc/mounts || mount -t debugfs debugfs /sys/kernel/debug
I=/sys/kernel/debug/printk/index/livepatch_printk_index
cat "$I"
grep -q ' version_proc_show "klpgen-e2e: printk-index direct format' "$I" &&
	grep -q ' klpgen_e2e_check_record "klpgen-e2e: printk-index helper format' "$I" &&
	grep -q "klpgen-e2e: printk-index marker" /proc/version
