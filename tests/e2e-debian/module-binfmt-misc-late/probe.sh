#!/bin/sh
# Passes when binfmt_misc, loaded for the first time while the livepatch is loaded, shows the
# patched text: the livepatch core applies the livepatch's klp relocations into the module as it
# arrives. Before the livepatch is loaded (and after it is gone) the module is not loaded here,
# so those probes fail as they must (binfmt_misc's file system is not there, or unpatched).
check() {
    mkdir -p /mnt/bm
    mount -t binfmt_misc none /mnt/bm || return 2
    s=$(cat /mnt/bm/status)
    umount /mnt/bm
    echo "$1: $s"
    [ "$s" = "enabled (klpgen, binfmt_misc)" ]
}
if [ -n "$(ls /sys/kernel/livepatch)" ] && ! grep -q '^binfmt_misc ' /proc/modules; then
    insmod /late.ko || exit 4
fi
check "loaded after the livepatch"
