#!/bin/sh
# Passes when the patched version_proc_show prints a pointer to itself that is the running
# kernel's original version_proc_show (its vmlinux address in /proc/kallsyms), not the
# livepatch's copy: a function pointer taken by new code compares equal to the kernel's own.
want=$(grep ' version_proc_show$' /proc/kallsyms | cut -d' ' -f1)
got=$(sed -n 's/^klpgen-e2e: show at //p' /proc/version)
echo "kallsyms $want, printed ${got:-nothing}"
[ -n "$got" ] && [ "$got" = "$want" ]
