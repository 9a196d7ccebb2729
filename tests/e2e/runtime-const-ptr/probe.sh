#!/bin/sh
# Passes when a read of /dev/zero gives 'K' then zeros: the patched read_zero ran, and its
# clear_user() accepted the buffer (its __access_ok() reads USER_PTR_MAX in the livepatch).
[ "$(head -c 4 /dev/zero | od -An -tx1 | tr -d ' \n')" = "4b000000" ]
