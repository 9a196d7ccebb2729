#!/bin/sh
# Passes when binfmt_misc's status file shows the patched text, both for the module loaded
# before the livepatch and for the same module unloaded and loaded again after it.
check() {
    mkdir -p /mnt/bm
    mount -t binfmt_misc none /mnt/bm || return 2
    s=$(cat /mnt/bm/status)
    umount /mnt/bm
    echo "$1: $s"
    [ "$s" = "enabled (klpgen, binfmt_misc)" ]
}
check "loaded before" || exit 1
rmmod binfmt_misc || exit 3
insmod /oot.ko || exit 4
check "loaded after"
