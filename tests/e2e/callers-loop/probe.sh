#!/bin/sh
# Passes when the module's kthread completes passes that saw only the new bar() and no pass
# ever mixed old and new results (with --include-callers 1, foo() is patched too, so a task
# switches only between passes).
P=/sys/module/klpgen_kthread/parameters
i=0
while [ "$i" -lt 5 ]; do
    [ "$(cat $P/last)" = 2 ] && break
    sleep 1
    i=$((i + 1))
done
echo "last=$(cat $P/last) mixed=$(cat $P/mixed) passes=$(cat $P/passes)"
[ "$(cat $P/last)" = 2 ] && [ "$(cat $P/mixed)" = 0 ]
