#!/usr/bin/env bash
# Prepares a fresh Debian 12 machine for klpgen development: installs a Rust toolchain
# from Debian when there is no cargo yet, then lets `cargo xtask setup` install the rest.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

if ! command -v cargo >/dev/null 2>&1; then
    sudo=()
    if [ "$(id -u)" -ne 0 ]; then
        sudo=(sudo)
    fi
    export DEBIAN_FRONTEND=noninteractive
    "${sudo[@]}" apt-get update
    "${sudo[@]}" apt-get install -y --no-install-recommends cargo-web rustc-web
fi

cargo xtask setup
