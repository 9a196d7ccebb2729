#!/bin/sh
# Passes when /proc/version carries the marker added by case.patch.
grep -q "klpgen-e2e: ppc64le-proc-string marker" /proc/version
