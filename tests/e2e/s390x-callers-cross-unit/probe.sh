#!/bin/sh
# Passes when proc_task_name() prefixes task names, seen through both its callers in
# fs/proc/array.c (/proc/self/status) and its caller comm_show() in fs/proc/base.c, which
# --include-callers 1 found through the vmlinux.o call graph and built automatically.
grep -q "^Name:	klpgen-" /proc/self/status && grep -q "^klpgen-" /proc/self/comm
