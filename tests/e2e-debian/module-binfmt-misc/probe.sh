#!/bin/sh
# Passes when binfmt_misc's status file shows the patched text for the stock module loaded
# before the livepatch, and the module can then be unloaded while it is patched (the livepatch
# core reverts its patch of the module). It is not loaded again: Linux 6.1's livepatch core does
# not clear the livepatch's klp relocations into a module that goes (clear_relocate_add came
# later), so the kernel refuses a second arrival of binfmt_misc while the livepatch is loaded
# ("Skipping invalid relocation target"). The first arrival after the livepatch is the case
# module-binfmt-misc-late.
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
