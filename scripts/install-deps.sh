#!/usr/bin/env bash
# Installs the Debian packages mvm needs to build, test and boot its default image.
# Idempotent: checks each package with dpkg-query and installs only what is missing.
# Usage: scripts/install-deps.sh [-q]   (-q: print nothing when nothing is missing)
set -euo pipefail

quiet=0
if [[ "${1:-}" == "-q" ]]; then
    quiet=1
fi

packages=(
    build-essential meson ninja-build pkg-config musl-tools
    libjansson-dev libssl-dev libcmocka-dev libcurl4-openssl-dev libseccomp-dev
    qemu-system-x86 qemu-utils busybox-static e2fsprogs lz4 cpio xz-utils
    ca-certificates procps util-linux
)

if ! command -v dpkg-query >/dev/null 2>&1; then
    echo "install-deps: dpkg-query not found; this script supports Debian/Ubuntu hosts only" >&2
    echo "install-deps: install these packages by other means: ${packages[*]}" >&2
    exit 1
fi

missing=()
for p in "${packages[@]}"; do
    status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
    if [[ "$status" != "install ok installed" ]]; then
        missing+=("$p")
    fi
done

if ((${#missing[@]} == 0)); then
    if ((!quiet)); then
        echo "install-deps: all ${#packages[@]} packages already installed"
    fi
    exit 0
fi

if ((EUID != 0)); then
    echo "install-deps: missing packages: ${missing[*]}; run: sudo $0" >&2
    exit 1
fi

echo "install-deps: installing ${#missing[@]} missing package(s): ${missing[*]}" >&2
log=$(mktemp /tmp/mvm-install-deps.XXXXXX)
trap 'rm -f "$log"' EXIT
if ! { apt-get update &&
       DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"; } \
       >"$log" 2>&1; then
    cat "$log" >&2
    echo "install-deps: apt-get failed (output above)" >&2
    exit 1
fi
echo "install-deps: installed ${missing[*]}"
