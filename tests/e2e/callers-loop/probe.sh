#!/bin/sh
# Passes when the module's kthread completes passes that saw only the new bar() and no pass
# ever mixed old and new results (with --include-callers 1, foo() is patched too, so a task
# switches only between passes). Judged on passes that began after the probe started: the
# pass running while the livepatch came or went finishes in the code it started in (that is
# the point), so the last result at that moment says nothing about the code now in place.
P=/sys/module/klpgen_kthread/parameters
start=$(cat $P/passes)
i=0
while [ "$i" -lt 10 ]; do
    sleep 1
    [ "$(cat $P/passes)" -ge $((start + 2)) ] && break
    i=$((i + 1))
done
echo "last=$(cat $P/last) mixed=$(cat $P/mixed) passes=$(cat $P/passes) (from $start)"
[ "$(cat $P/passes)" -ge $((start + 2)) ] && [ "$(cat $P/last)" = 2 ] && [ "$(cat $P/mixed)" = 0 ]
