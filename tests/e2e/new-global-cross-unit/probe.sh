#!/bin/sh
# Passes when /proc/loadavg has the line printed by the new global function of
# fs/proc/version.c, and the new global counter it is passed goes up with each read.
line='s/^klpgen-e2e: new-global-cross-unit (read \([0-9][0-9]*\))$/\1/p'
a=$(sed -n "$line" /proc/loadavg)
b=$(sed -n "$line" /proc/loadavg)
echo "reads: $a then $b"
[ -n "$a" ] && [ -n "$b" ] && [ "$b" -gt "$a" ]
