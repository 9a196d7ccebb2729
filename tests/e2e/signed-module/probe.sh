#!/bin/sh
# Passes when /proc/version carries the marker and the kernel accepted the livepatch's
# signature: its taint flags (/sys/module/<name>/taint) have no 'E' (unsigned module) and the
# kernel never said "module verification failed".
t=$(cat /sys/module/livepatch_signed_module/taint 2>/dev/null)
echo "module taint: $t"
grep -q "klpgen-e2e: signed-module marker" /proc/version || exit 1
case "$t" in *E*) exit 2 ;; esac
if dmesg | grep -q "module verification failed"; then exit 3; fi
