#!/bin/sh
# Passes when /proc/version carries the line printed with cpu_cache_has_invalidate_memregion(),
# which vmlinux exports in symbol namespace DEVMEM: the livepatch loads only because it imports
# that namespace (import_ns=DEVMEM in its .modinfo).
grep -q "klpgen-e2e: namespaced export [01]" /proc/version
