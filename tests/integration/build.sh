#!/usr/bin/env bash
# Integration tests of `mvmctl build --flake`: the builder microVM runs Nix; the host has
# none (PATH is checked). Usage: build.sh /path/to/mvmctl
# shellcheck disable=SC2016
set -uo pipefail

if [[ $# -lt 1 || ! -x "$1" ]]; then
    echo "usage: $0 /path/to/mvmctl" >&2
    exit 2
fi
M=$(realpath "$1")
SRC=$(cd "$(dirname "$0")/../.." && pwd)
# shellcheck source=tests/integration/lib.sh
source "$(dirname "$0")/lib.sh"
T=1200 # builds include booting the builder and running Nix under TCG

BUSYBOX=$(command -v busybox || echo /bin/busybox)
# example NAME DEST : a private copy of examples/NAME with a static busybox beside flake.nix
example() {
    rm -rf "$2"
    cp -a "$SRC/examples/$1" "$2" || fail "cannot copy example $1"
    cp "$BUSYBOX" "$2/busybox" || fail "cannot copy busybox"
}
# build ARGS... : mvmctl build with the time it took in BUILD_MS
build() {
    local s
    s=$(now_ms)
    x "$M" build -q "$@"
    BUILD_MS=$(($(now_ms) - s))
}
no_image() { ! timeout 30 "$M" images -q 2>/dev/null | grep -qxF -- "$1"; }

t_host_has_no_nix() {
    ! command -v nix >/dev/null 2>&1 || fail "this host has nix in PATH: the test proves nothing"
    ! command -v nix-build >/dev/null 2>&1 || fail "nix-build in PATH"
}

t_busybox_rootfs() {
    example busybox-rootfs "$W/bb"
    build --flake "$W/bb" --name it-bb
    expect_rc 0 "build --flake busybox-rootfs"
    [[ "$OUT" == "it-bb sha256:"* ]] || fail "unexpected build output: $(ctx)"
    echo "$BUILD_MS" >"$W/first-ms"
    x "$M" run --rm -q it-bb -- cat /etc/mvm-example
    expect_rc 0 "run it-bb"
    expect_out "mvm-example busybox-rootfs" "run it-bb"
    # provenance in the manifest
    x "$M" images --json
    python3 - "$OUT" <<'PY' || fail "manifest provenance missing"
import json, sys
imgs = json.loads(sys.argv[1])
imgs = imgs if isinstance(imgs, list) else imgs.get("images", [])
assert any(i.get("tag") == "it-bb" and "flake" in (i.get("source") or "") for i in imgs), imgs
PY
}

t_unchanged_is_cache_hit() {
    [[ -d "$W/bb" ]] || fail "needs busybox_rootfs first"
    build --flake "$W/bb" --name it-bb
    expect_rc 0 "second build of an unchanged flake"
    echo "$BUILD_MS" >"$W/hit-ms"
    ((BUILD_MS < 5000)) || fail "unchanged flake took ${BUILD_MS} ms: not a cache hit"
}

t_changed_reuses_store() {
    [[ -d "$W/bb" ]] || fail "needs busybox_rootfs first"
    sed -i 's/marker = "mvm-example busybox-rootfs"/marker = "changed marker"/' "$W/bb/flake.nix"
    build --flake "$W/bb" --name it-bb
    expect_rc 0 "build of a changed flake"
    echo "$BUILD_MS" >"$W/warm-ms"
    x "$M" run --rm -q it-bb -- cat /etc/mvm-example
    expect_out "changed marker" "run the rebuilt image"
}

t_hello_app_profiles() {
    example hello-app "$W/hello"
    build --flake "$W/hello" --name it-hello
    expect_rc 0 "build hello-app"
    x "$M" run --rm -q it-hello -- hello-mvm
    expect_rc 0 "run hello-mvm"
    [[ "$OUT" == *"Hello from mvm"* ]] || fail "hello-mvm output: $(ctx)"
    build --flake "$W/hello" --profile alt --name it-hello-alt
    expect_rc 0 "build --profile alt"
    x "$M" run --rm -q it-hello-alt -- hello-mvm
    [[ "$OUT" == *"alt profile"* ]] || fail "alt profile output: $(ctx)"
}

t_check_reproducible() {
    [[ -d "$W/hello" ]] || example hello-app "$W/hello"
    x timeout "$T" "$M" build -q --check --flake "$W/hello" --name it-check
    expect_rc 0 "build --check"
    [[ "$OUT" == *"reproducible: all artifacts byte-identical"* ]] || fail "--check: $(ctx)"
}

t_bad_missing_dir() {
    x "$M" build --flake "$W/does-not-exist"
    expect_mvm_error "build --flake missing dir"
    expect_err_has "not found"
}

t_bad_no_flake_nix() {
    mkdir -p "$W/empty"
    x "$M" build --flake "$W/empty"
    expect_mvm_error "build --flake dir without flake.nix"
    expect_err_has "flake.nix"
}

t_bad_unknown_profile() {
    example busybox-rootfs "$W/bb2"
    build --flake "$W/bb2" --profile nope --name it-nope
    expect_mvm_error "unknown profile"
    expect_err_has "nope"
    no_image it-nope || fail "an image was registered for a failed build"
}

t_bad_eval_error() {
    example busybox-rootfs "$W/broken"
    printf '{ outputs = { self }: { packages.x86_64-linux.default = undefined_variable; }; }\n' \
        >"$W/broken/flake.nix"
    build --flake "$W/broken" --name it-broken
    expect_mvm_error "nix evaluation error"
    expect_err_has "undefined"
    no_image it-broken || fail "an image was registered for a failed build"
}

t_bad_build_error() {
    example busybox-rootfs "$W/failing"
    cat >"$W/failing/flake.nix" <<'NIX'
{
  outputs = { self }: {
    packages.x86_64-linux.default = derivation {
      name = "failing-step"; system = "x86_64-linux";
      builder = "${self}/busybox"; args = [ "sh" "-c" "echo compiling...; echo 'cc: fatal error' >&2; exit 3" ];
    };
  };
}
NIX
    build --flake "$W/failing" --name it-failing
    expect_mvm_error "a failing derivation"
    expect_err_has "failing-step.drv"
    no_image it-failing || fail "an image was registered for a failed build"
}

t_bad_no_rootfs() {
    example busybox-rootfs "$W/norootfs"
    cat >"$W/norootfs/flake.nix" <<'NIX'
{
  outputs = { self }: {
    packages.x86_64-linux.default = derivation {
      name = "no-rootfs"; system = "x86_64-linux";
      builder = "${self}/busybox"; args = [ "sh" "-c" "${self}/busybox mkdir -p $out/nothing-here" ];
    };
  };
}
NIX
    build --flake "$W/norootfs" --name it-norootfs
    expect_mvm_error "output without rootfs"
    expect_err_has "neither rootfs.ext4 nor a rootfs/ directory"
    no_image it-norootfs || fail "an image was registered for a failed build"
}

t_timeout_then_next_build_works() {
    example busybox-rootfs "$W/slow"
    cat >"$W/slow/flake.nix" <<'NIX'
{
  outputs = { self }: {
    packages.x86_64-linux.default = derivation {
      name = "slow"; system = "x86_64-linux";
      builder = "${self}/busybox"; args = [ "sh" "-c" "${self}/busybox sleep 600" ];
    };
  };
}
NIX
    build --flake "$W/slow" --name it-slow --timeout 40s
    expect_mvm_error "build --timeout"
    expect_err_has "timed out"
    no_image it-slow || fail "an image was registered for a timed-out build"
    # the store cache survives: the next build works
    build --flake "$W/bb2" --name it-after
    expect_rc 0 "build after a timed-out build"
}

t_builder_killed_then_next_build_works() {
    example busybox-rootfs "$W/killed"
    sed -i 's/marker = "mvm-example busybox-rootfs"/marker = "killed once"/' "$W/killed/flake.nix"
    timeout "$T" "$M" build -q --flake "$W/killed" --name it-killed >"$W/k-out" 2>"$W/k-err" &
    local bpid=$! q=
    # kill the builder's hypervisor once it runs
    for _ in $(seq 1 600); do
        q=$(pgrep -f -- "mvm-builder-" | head -n 1)
        [[ -n "$q" ]] && break
        q=$(pgrep -f -- "-name mvm-builder" | head -n 1)
        [[ -n "$q" ]] && break
        sleep 0.2
    done
    [[ -n "$q" ]] || { kill $bpid; fail "builder VM never appeared"; }
    sleep 3
    kill -9 "$q"
    wait $bpid
    RC=$?
    OUT=$(cat "$W/k-out")
    ERR=$(cat "$W/k-err")
    expect_rc 125 "build with the builder killed"
    no_image it-killed || fail "an image was registered for a killed build"
    build --flake "$W/killed" --name it-killed
    expect_rc 0 "build after the builder was killed"
}

# --online gives the builder a NAT network: a flake that fetches from a server on this host's
# loopback (10.0.2.2 inside the VM) builds with --online and fails without it.
t_online_network() {
    mkdir -p "$W/www"
    # new content every run: a fixed-output path already in the warm store needs no network
    echo "fetched over the builder's network" >"$W/www/payload.txt"
    echo "nonce $(date +%s%N) $RANDOM" >"$W/www/nonce"
    local port sha
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    python3 -m http.server --bind 127.0.0.1 --directory "$W/www" "$port" >/dev/null 2>&1 &
    local srv=$!
    # shellcheck disable=SC2064
    trap "kill $srv 2>/dev/null || true" EXIT
    cat "$W/www/nonce" >>"$W/www/payload.txt"
    sha=$(sha256sum "$W/www/payload.txt" | cut -d' ' -f1)
    example busybox-rootfs "$W/online"
    cat >"$W/online/flake.nix" <<NIX
{
  outputs = { self }:
    let payload = builtins.fetchurl { url = "http://10.0.2.2:$port/payload.txt"; sha256 = "$sha"; };
    in {
      packages.x86_64-linux.default = derivation {
        name = "online"; system = "x86_64-linux";
        builder = "\${self}/busybox";
        args = [ "sh" "-c" "b=\${self}/busybox; \$b mkdir -p \$out/rootfs/bin \$out/rootfs/etc && \$b cp \$b \$out/rootfs/bin/busybox && \$b ln -s busybox \$out/rootfs/bin/cat && \$b cp \${payload} \$out/rootfs/etc/fetched" ];
      };
    };
}
NIX
    timeout 60 "$M" rmi it-offline >/dev/null 2>&1
    build --flake "$W/online" --name it-offline
    expect_mvm_error "a fetching flake without --online"
    no_image it-offline || fail "an image was registered for a failed build"
    build --flake "$W/online" --name it-online --online
    expect_rc 0 "build --online"
    x "$M" run --rm -q it-online -- cat /etc/fetched
    expect_out "$(cat "$W/www/payload.txt")" "run it-online"
}

t_builder_status() {
    x "$M" builder status --json
    expect_rc 0 "builder status"
    python3 -c 'import json,sys; d=json.load(sys.stdin); assert d["built"] and len(d["packages"]) > 10 and d["store"]["present"], d' <<<"$OUT" ||
        fail "builder status json: $(ctx)"
}

TESTS=(
    host_has_no_nix busybox_rootfs unchanged_is_cache_hit changed_reuses_store
    hello_app_profiles check_reproducible
    bad_missing_dir bad_no_flake_nix bad_unknown_profile bad_eval_error bad_build_error bad_no_rootfs
    timeout_then_next_build_works builder_killed_then_next_build_works online_network
    builder_status
)

remove_images() {
    local i
    for i in it-bb it-hello it-hello-alt it-check it-after it-killed it-online it-offline; do
        timeout 60 "$M" rmi "$i" >/dev/null 2>&1 || true
    done
}
EXTRA_CLEANUP=remove_images

echo "# mvmctl: $M"
run_tests "${TESTS[@]}"
if [[ -f "$W/first-ms" && -f "$W/warm-ms" && -f "$W/hit-ms" ]]; then
    echo "# first build $(cat "$W/first-ms") ms, changed-flake build $(cat "$W/warm-ms") ms," \
        "unchanged (cache hit) $(cat "$W/hit-ms") ms"
fi
echo "$passed passed, $failed failed"
((failed == 0))
