#!/bin/sh
# Passes while either livepatch of the case is in place (each shows its version).
grep -q "klpgen-e2e: state patch v" /proc/version
