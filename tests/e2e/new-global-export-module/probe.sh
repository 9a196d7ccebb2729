#!/bin/sh
# Passes when /proc/loadavg (vmlinux) and binfmt_misc's status file (a module, loaded before
# the livepatch, then unloaded and loaded again after it) show the text of the function the
# patch adds in fs/proc/version.c.
grep -q "^klpgen-e2e: klpgen-e2e-export$" /proc/loadavg || exit 1
check() {
    mkdir -p /mnt/bm
    mount -t binfmt_misc none /mnt/bm || return 2
    s=$(cat /mnt/bm/status)
    umount /mnt/bm
    echo "$1: $s"
    [ "$s" = "enabled (klpgen-e2e-export)" ]
}
check "loaded before" || exit 1
rmmod binfmt_misc || exit 3
insmod /oot.ko || exit 4
check "loaded after"
