#!/bin/sh
# Passes when the patched version_proc_show is in place.
grep -q "klpgen-e2e: kpatch-macros" /proc/version
