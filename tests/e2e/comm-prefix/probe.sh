#!/bin/sh
# Passes when /proc/<pid>/comm starts with the prefix the patched comm_show prints.
case "$(cat /proc/self/comm)" in
klpgen:*) exit 0 ;;
*) exit 1 ;;
esac
