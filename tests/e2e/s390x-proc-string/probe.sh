#!/bin/sh
# Passes when /proc/version carries the marker added by case.patch.
grep -q "klpgen-e2e: s390x-proc-string marker" /proc/version
