#!/bin/sh
# Passes when /proc/meminfo has the line the patched meminfo_proc_show prints via show_val_kb.
grep -q "^KlpgenE2E: *168 kB$" /proc/meminfo
