#!/bin/sh
# Passes when the livepatch's pr_debug site can be enabled through dynamic debug and prints
# when access() runs do_faccessat.
echo 'module livepatch_dynamic_debug +p' > /proc/dynamic_debug/control 2>/dev/null
grep livepatch_dynamic_debug /proc/dynamic_debug/control
dmesg -c >/dev/null
which sh >/dev/null
dmesg | grep "faccessat mode"
