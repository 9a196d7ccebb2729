#!/bin/sh
# Passes when the post-patch callback has run and the patched version_proc_show shows it.
grep -q "klpgen-e2e: post-patch callback ran" /proc/version
