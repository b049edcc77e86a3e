#!/usr/bin/env bash
# Benchmark (not a test) of `mvmctl build --flake`, in one run, in a fresh cache:
#   cold bootstrap   default image + builder image (kernel and nix-bin closure downloaded)
#   first build      a flake of two derivations, cold Nix store: "toolchain" does real work
#                    (hashes 192 MiB in the guest, a stand-in for compiling) and "rootfs"
#                    (examples/busybox-rootfs's build) depends on it
#   warm build       the same flake with rootfs changed: toolchain comes from the warm store
#   unchanged build  the same inputs again: a cache hit
# and the ratio first/warm. Usage: scripts/bench-build.sh   (MVMCTL, BENCH_KEEP_CACHE=1)
set -euo pipefail
cd "$(dirname "$0")/.."

mvmctl=$(realpath "${MVMCTL:-build/mvmctl}")
[[ -x "$mvmctl" ]] || { echo "bench-build: $mvmctl not found (run scripts/build.sh)" >&2; exit 1; }
W=$(mktemp -d /tmp/mvmbb.XXXX)
export MVM_CACHE_DIR="$W/cache" MVM_RUNTIME_DIR="$W/run"
cleanup() {
    for n in $("$mvmctl" ls -a -q 2>/dev/null); do "$mvmctl" rm -f "$n" >/dev/null 2>&1 || true; done
    [[ "${BENCH_KEEP_CACHE:-0}" == 1 ]] && echo "cache kept in $MVM_CACHE_DIR" || rm -rf -- "$W"
}
trap cleanup EXIT

cp -a examples/busybox-rootfs "$W/flake"
cp "$(command -v busybox || echo /bin/busybox)" "$W/flake/busybox"
mkdir "$W/flake/tools"
cp "$W/flake/busybox" "$W/flake/tools/busybox"
# the toolchain depends only on tools/ (not on `self`, whose hash changes with every edit of
# the flake), so the warm build finds it in the store
cat >"$W/flake/flake.nix" <<'NIX'
{
  outputs = { self }:
    let
      bb = "${self}/busybox";
      tools = "${builtins.path { path = ./tools; name = "tools"; }}/busybox";
      toolchain = derivation {
        name = "bench-toolchain"; system = "x86_64-linux"; builder = tools;
        args = [ "sh" "-c" "${tools} mkdir -p $out && ${tools} dd if=/dev/zero bs=1M count=192 2>/dev/null | ${tools} sha256sum > $out/digest" ];
      };
    in {
      packages.x86_64-linux.default = derivation {
        name = "bench-rootfs"; system = "x86_64-linux"; builder = bb;
        args = [ "sh" ./build.sh ];
        busybox = bb;
        inherit toolchain;
        marker = "mvm-example busybox-rootfs";
      };
    };
}
NIX

now_ms() { echo $(($(date +%s%N) / 1000000)); }
timed() { # timed VAR CMD... : runs CMD quietly, stores its wall time in ms
    local var=$1 s
    shift
    s=$(now_ms)
    "$@" >"$W/log" 2>&1 || { echo "bench-build: $* failed:" >&2; tail -5 "$W/log" >&2; exit 1; }
    printf -v "$var" '%s' $(($(now_ms) - s))
}

timed cold "$mvmctl" builder rebuild
timed first "$mvmctl" build --flake "$W/flake" --name bench
sed -i 's/marker = "mvm-example busybox-rootfs"/marker = "changed"/' "$W/flake/flake.nix"
timed warm "$mvmctl" build --flake "$W/flake" --name bench
timed hit "$mvmctl" build --flake "$W/flake" --name bench

awk -v c="$cold" -v f="$first" -v w="$warm" -v h="$hit" 'BEGIN {
    printf "%-44s %10.1f s\n", "cold bootstrap (default + builder images)", c / 1000
    printf "%-44s %10.1f s\n", "first build (cold Nix store)", f / 1000
    printf "%-44s %10.1f s\n", "second build of the changed flake (warm)", w / 1000
    printf "%-44s %10.2f\n", "ratio first / warm", f / w
    printf "%-44s %10d ms\n", "build of the unchanged flake (cache hit)", h
}'
