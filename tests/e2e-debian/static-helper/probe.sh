#!/bin/sh
# Passes when /proc/self/oom_score has the new line and the counters do_io_accounting prints.
grep -q "^klpgen-e2e: io accounting follows$" /proc/self/oom_score &&
    grep -q "^rchar: [0-9]*$" /proc/self/oom_score
