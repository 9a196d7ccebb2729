#!/bin/sh
# Passes when /proc/version shows the CRC the patched version_proc_show computes with
# crc_ccitt(), the export of the crc-ccitt module (loaded before the livepatch).
grep -q "^klpgen-e2e: module-export crc 36ff$" /proc/version
