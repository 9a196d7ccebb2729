#!/bin/sh
# Passes when /proc/loadavg has the line printed by the new function.
grep -q "^klpgen-e2e: new-function (load [0-9]*)$" /proc/loadavg
