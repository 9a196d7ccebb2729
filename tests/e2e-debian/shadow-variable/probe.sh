#!/bin/sh
# Passes when each task's read count lives in its own shadow variable: /proc/1/personality
# counts up between two reads, while a new task (sed reading its own file) starts at 1.
reads() { sed -n 's/^klpgen-e2e: read \([0-9]*\) times$/\1/p' "$1"; }
a=$(reads /proc/1/personality)
b=$(reads /proc/1/personality)
own=$(reads /proc/self/personality)
echo "init: $a then $b; a new task: $own"
[ -n "$a" ] && [ -n "$b" ] && [ "$b" -eq $((a + 1)) ] && [ "$own" = 1 ]
