#!/usr/bin/env bash
# Configures (once) and builds mvm with Meson + Ninja.
#   MVM_BUILDDIR=dir   build directory (default: build, or build-asan with MVM_SANITIZE=1)
#   MVM_SANITIZE=1     configure with AddressSanitizer + UndefinedBehaviorSanitizer
set -euo pipefail
cd "$(dirname "$0")/.."

setup_args=(--buildtype=debugoptimized)
if [[ "${MVM_SANITIZE:-0}" == 1 ]]; then
    builddir=${MVM_BUILDDIR:-build-asan}
    setup_args+=("-Db_sanitize=address,undefined" -Db_lundef=false)
else
    builddir=${MVM_BUILDDIR:-build}
fi

if [[ ! -f "$builddir/build.ninja" ]]; then
    meson setup "$builddir" "${setup_args[@]}"
fi
ninja -C "$builddir"
