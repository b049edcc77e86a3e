#!/usr/bin/env bash
# Benchmark (not a test): boot time through mvmctl versus a raw QEMU invocation of the same
# kernel and initrd, and the round trip of `mvmctl exec`.
#   scripts/bench.sh [N]        N boots of each kind (default 5)
# Environment: MVMCTL (default build/mvmctl), MVM_CACHE_DIR, MVM_QEMU, BENCH_EXECS (100).
set -euo pipefail
cd "$(dirname "$0")/.."

n=${1:-5}
execs=${BENCH_EXECS:-100}
mvmctl=${MVMCTL:-build/mvmctl}
qemu=${MVM_QEMU:-qemu-system-x86_64}
cache=${MVM_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/mvm}
marker="mvm-init: started"

[[ "$n" =~ ^[1-9][0-9]*$ ]] || { echo "usage: $0 [N]" >&2; exit 2; }
[[ -x "$mvmctl" ]] || { echo "bench: $mvmctl not found (run scripts/build.sh)" >&2; exit 1; }
command -v "$qemu" >/dev/null || { echo "bench: $qemu not found" >&2; exit 1; }

if [[ ! -f "$cache/tags/default" ]]; then
    echo "building the default image first"
    "$mvmctl" build
fi
img="$cache/images/$(tr -d '[:space:]' <"$cache/tags/default")"
for f in vmlinux initrd.img rootfs.raw manifest.json; do
    [[ -f "$img/$f" ]] || { echo "bench: $img/$f missing" >&2; exit 1; }
done
cmdline=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["cmdline"])' \
    "$img/manifest.json")
cmdline="$cmdline tsc_early_khz=2000000 tsc=reliable"

W=$(mktemp -d /tmp/mvmbench.XXXX)
vm="bench-$$"
qpid=""
cleanup() {
    if [[ -n "$qpid" ]]; then kill -9 "$qpid" 2>/dev/null || true; fi
    "$mvmctl" rm -f "$vm" >/dev/null 2>&1 || true
    rm -rf -- "$W"
}
trap cleanup EXIT

now_ns() { date +%s%N; }
# stats FILE : "median p90" (in the file's unit) of one number per line
stats() {
    sort -n "$1" | awk '{v[NR] = $1}
        END {
            m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
            i = int(NR * 0.9 + 0.999999); if (i < 1) i = 1; if (i > NR) i = NR
            printf "%.1f %.1f\n", m, v[i]
        }'
}

# One raw QEMU boot: the same machine as mvm's QEMU backend (microvm, TCG, virtio-blk root,
# virtio-serial), console on a pipe; prints ms from exec to the init marker.
raw_boot() {
    local fifo="$W/serial" t0 t1 line found=0
    rm -f "$fifo"
    mkfifo "$fifo"
    t0=$(now_ns)
    "$qemu" -M microvm,x-option-roms=off,rtc=off,isa-serial=on -accel tcg -cpu max \
        -m 256 -smp 1 -nodefaults -no-user-config -no-reboot -display none \
        -kernel "$img/vmlinux" -initrd "$img/initrd.img" -append "$cmdline" \
        -serial stdio \
        -drive "id=root,file=$img/rootfs.raw,format=raw,if=none,readonly=on" \
        -device virtio-blk-device,drive=root \
        -device virtio-serial-device,max_ports=2 \
        -chardev null,id=agent -device virtserialport,chardev=agent,name=org.mvm.agent.0 \
        </dev/null >"$fifo" 2>"$W/qemu.err" &
    qpid=$!
    while IFS= read -r -t 120 line; do
        if [[ "$line" == *"$marker"* ]]; then
            found=1
            break
        fi
    done <"$fifo"
    t1=$(now_ns)
    kill -9 "$qpid" 2>/dev/null || true
    wait "$qpid" 2>/dev/null || true
    qpid=""
    if ((!found)); then
        echo "bench: raw qemu never printed '$marker'; stderr: $(head -c 500 "$W/qemu.err")" >&2
        return 1
    fi
    echo $(((t1 - t0) / 1000000))
}

mvm_boot() {
    local t0 t1
    t0=$(now_ns)
    if ! "$mvmctl" run --rm -q default -- true </dev/null >/dev/null 2>"$W/run.err"; then
        echo "bench: mvmctl run failed: $(head -c 500 "$W/run.err")" >&2
        return 1
    fi
    t1=$(now_ns)
    echo $(((t1 - t0) / 1000000))
}

echo "mvm benchmark: $n boots each, $execs execs (QEMU TCG, $(nproc) CPUs)"
echo "image: $img"
: >"$W/mvm.ms"
: >"$W/raw.ms"
for ((i = 1; i <= n; i++)); do
    mvm_boot >>"$W/mvm.ms"
    raw_boot >>"$W/raw.ms"
    printf '  boot %d/%d: mvmctl %6d ms   raw qemu %6d ms\n' "$i" "$n" \
        "$(tail -n1 "$W/mvm.ms")" "$(tail -n1 "$W/raw.ms")"
done
read -r mvm_med _ < <(stats "$W/mvm.ms")
read -r raw_med _ < <(stats "$W/raw.ms")

"$mvmctl" run -d -q --name "$vm" default >/dev/null
: >"$W/exec.us"
for ((i = 0; i < execs; i++)); do
    t0=$(now_ns)
    "$mvmctl" exec "$vm" -- true </dev/null
    t1=$(now_ns)
    echo $(((t1 - t0) / 1000)) >>"$W/exec.us"
done
read -r exec_med exec_p90 < <(stats "$W/exec.us")
"$mvmctl" rm -f "$vm" >/dev/null

echo
fmt_ms() { awk -v a="$1" -v d="$2" 'BEGIN {printf "%.1f", a / d}'; }
printf '%-42s %9s ms\n' "mvmctl run --rm default -- true, median" "$(fmt_ms "$mvm_med" 1)"
printf '%-42s %9s ms\n' "raw qemu to '$marker', median" "$(fmt_ms "$raw_med" 1)"
printf '%-42s %9s\n' "ratio mvmctl / raw" "$(awk -v a="$mvm_med" -v b="$raw_med" 'BEGIN {printf "%.2f", a / b}')"
printf '%-42s %9s ms\n' "mvmctl exec NAME -- true, median" "$(awk -v a="$exec_med" 'BEGIN {printf "%.2f", a / 1000}')"
printf '%-42s %9s ms\n' "mvmctl exec NAME -- true, p90" "$(awk -v a="$exec_p90" 'BEGIN {printf "%.2f", a / 1000}')"
