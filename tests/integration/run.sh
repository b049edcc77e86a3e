#!/usr/bin/env bash
# Integration tests: boot real microVMs (QEMU; TCG on hosts without a fast KVM) and drive
# them through mvmctl. Usage: run.sh /path/to/mvmctl
#
# State is isolated in a fresh MVM_RUNTIME_DIR; the image cache is shared (MVM_CACHE_DIR is
# honoured when the caller sets it), so the default image is built at most once.
# One VM ("shared") serves every test that only execs; the other tests boot their own.
#   MVM_IT_ONLY=REGEX   run only the tests whose name matches REGEX (the shared VM is still
#                       booted first)
# shellcheck disable=SC2016  # single-quoted $vars are expanded by the guest shell
set -uo pipefail

if [[ $# -lt 1 ]]; then
    echo "usage: $0 /path/to/mvmctl" >&2
    exit 2
fi
M=$(realpath "$1")
if [[ ! -x "$M" ]]; then
    echo "integration: $1 is not an executable" >&2
    exit 2
fi

# shellcheck source=tests/integration/lib.sh
source "$(dirname "$0")/lib.sh"

need_shared() {
    [[ -f "$W/shared-ok" ]] || fail "shared VM did not start: $(cat "$W/shared-err" 2>/dev/null)"
}

# ---------------------------------------------------------------------------------------
# tests that only exec into the shared VM

t_echo_rm() {
    local before after
    before=$(timeout "$T" "$M" ls -a -q 2>&1)
    x "$M" run --rm default -- echo hello from mvm
    expect_rc 0 "run --rm"
    expect_out "hello from mvm" "run --rm"
    after=$(timeout "$T" "$M" ls -a -q 2>&1)
    [[ "$before" == "$after" ]] || fail "run --rm left a VM behind: before=[$before] after=[$after]"
}

t_exit_codes() {
    need_shared
    x "$M" exec "$SHARED" sh -c 'exit 7'
    expect_rc 7 "sh -c 'exit 7'"
    x "$M" exec "$SHARED" -- false
    expect_rc 1 "false"
    x "$M" exec "$SHARED" -- true
    expect_rc 0 "true"
    x "$M" exec "$SHARED" nosuchcmd
    expect_rc 127 "nosuchcmd"
    expect_one_err_line "nosuchcmd"
    x "$M" exec "$SHARED" sh -c 'kill -9 $$'
    expect_rc 137 "kill -9 \$\$"
}

t_stdin() {
    need_shared
    printf 'a\nb\n' >"$W/in2"
    xi "$W/in2" "$M" exec -i "$SHARED" -- wc -l
    expect_rc 0 "wc -l"
    [[ "$(echo "$OUT" | tr -d ' ')" == 2 ]] || fail "wc -l: expected 2, $(ctx)"
}

t_stdin_big() {
    need_shared
    local want got
    head -c 1000000 /dev/urandom >"$W/big"
    want=$(md5sum <"$W/big" | cut -d' ' -f1)
    xi "$W/big" "$M" exec -i "$SHARED" -- md5sum
    expect_rc 0 "md5sum"
    got=$(echo "$OUT" | cut -d' ' -f1)
    [[ "$got" == "$want" ]] || fail "md5sum of 1 MB stdin: want $want, $(ctx)"
}

t_stdout_big() {
    need_shared
    local want got
    want=$(yes abcdefghi | head -c 2000000 | md5sum | cut -d' ' -f1)
    timeout "$T" "$M" exec "$SHARED" sh -c 'yes abcdefghi | head -c 2000000' </dev/null 2>"$W/err" |
        md5sum >"$W/out"
    RC=${PIPESTATUS[0]}
    ERR=$(cat "$W/err")
    OUT=$(cat "$W/out")
    expect_rc 0 "2 MB on stdout"
    got=$(cut -d' ' -f1 <"$W/out")
    [[ "$got" == "$want" ]] || fail "md5sum of 2 MB stdout: want $want, got $got"
}

t_stderr_separate() {
    need_shared
    x "$M" exec "$SHARED" sh -c 'echo out; echo err >&2'
    expect_rc 0
    expect_out out
    [[ "$ERR" == err ]] || fail "expected stderr [err], $(ctx)"
}

t_env_cwd() {
    need_shared
    x "$M" exec -e FOO=bar "$SHARED" sh -c 'echo $FOO'
    expect_rc 0 "-e FOO=bar"
    expect_out bar "-e FOO=bar"
    x "$M" exec -w /tmp "$SHARED" pwd
    expect_rc 0 "-w /tmp"
    expect_out /tmp "-w /tmp"
}

t_tty() {
    need_shared
    x script -qec "$M exec -t $SHARED tty" /dev/null
    expect_rc 0 "exec -t tty"
    [[ "$OUT" == *"/dev/pts"* ]] || fail "exec -t: tty did not print /dev/pts/N: $(ctx)"
    x "$M" exec "$SHARED" tty
    [[ "$OUT" != *"/dev/pts"* ]] || fail "exec without -t got a pty: $(ctx)"
}

t_concurrent() {
    need_shared
    local i t0 t1 pids=() rc
    t0=$(now_ms)
    for i in 1 2 3 4 5 6 7 8; do
        timeout "$T" "$M" exec "$SHARED" sh -c 'sleep 1; echo $0' "$i" \
            </dev/null >"$W/c$i.out" 2>"$W/c$i.err" &
        pids+=($!)
    done
    for i in 1 2 3 4 5 6 7 8; do
        wait "${pids[i - 1]}"
        rc=$?
        [[ $rc == 0 ]] || fail "exec #$i exited $rc: $(short "$(cat "$W/c$i.err")")"
        [[ "$(cat "$W/c$i.out")" == "$i" ]] || fail "exec #$i printed [$(cat "$W/c$i.out")]"
    done
    t1=$(now_ms)
    (((t1 - t0) < 8000)) || fail "8 parallel 1 s execs took $((t1 - t0)) ms (not concurrent?)"
}

t_ls() {
    need_shared
    x "$M" ls
    expect_rc 0 ls
    echo "$OUT" | grep -E "(^|[[:space:]])$SHARED([[:space:]]|$)" | grep -q running ||
        fail "ls does not show $SHARED as running: $(ctx)"
    x "$M" ls --json
    expect_rc 0 "ls --json"
    python3 -c 'import json,sys; json.load(sys.stdin)' <"$W/out" 2>/dev/null ||
        fail "ls --json is not valid JSON: $(ctx)"
    [[ "$(json_vm state "$SHARED" <"$W/out")" == running ]] ||
        fail "ls --json: $SHARED is not in state running: $(ctx)"
    x "$M" ls -q
    expect_rc 0 "ls -q"
    echo "$OUT" | grep -qxF "$SHARED" || fail "ls -q does not list $SHARED: $(ctx)"
}

t_logs() {
    need_shared
    x "$M" logs "$SHARED"
    expect_rc 0 logs
    [[ "$OUT" == *"mvm-init: started"* ]] || fail "logs lack 'mvm-init: started': $(ctx)"
}

t_inspect() {
    need_shared
    x "$M" inspect "$SHARED"
    expect_rc 0 inspect
    local mp hp
    mp=$(json_vm monitor_pid "$SHARED" <"$W/out") || fail "inspect: no monitor_pid: $(ctx)"
    hp=$(json_vm hypervisor_pid "$SHARED" <"$W/out") || fail "inspect: no hypervisor_pid: $(ctx)"
    [[ "$mp" =~ ^[0-9]+$ && -e /proc/$mp ]] || fail "inspect: monitor_pid [$mp] is not alive"
    [[ "$hp" =~ ^[0-9]+$ && -e /proc/$hp ]] || fail "inspect: hypervisor_pid [$hp] is not alive"
}

# ---------------------------------------------------------------------------------------
# bad input: mvm's own errors are exit 125 and one line on stderr

t_bad_unknown_image() {
    x "$M" run --rm nosuchimage -- true
    expect_mvm_error "unknown image"
}

t_bad_names() {
    local n long
    long=$(printf 'a%.0s' {1..65})
    for n in 'a/b' '' "$long" '..'; do
        x "$M" run --rm --name "$n" default -- true
        expect_mvm_error "--name '$n'"
        ! listed "$n" || fail "--name '$n' created a VM"
    done
    x "$M" exec 'a/b' -- true
    expect_mvm_error "exec 'a/b'"
}

t_bad_name_in_use() {
    need_shared
    x "$M" run -d --name "$SHARED" default
    expect_mvm_error "run --name $SHARED (in use)"
    wait_for 2 state_is "$SHARED" running || fail "$SHARED is no longer running after the clash"
    x "$M" exec "$SHARED" -- true
    expect_rc 0 "exec $SHARED after the clash"
}

t_bad_exec_unknown_vm() {
    x "$M" exec nosuchvm -- true
    expect_mvm_error "exec nosuchvm"
}

t_bad_exec_no_command() {
    need_shared
    x "$M" exec "$SHARED"
    expect_mvm_error "exec without a command"
}

t_bad_qemu_missing() {
    local before after
    before=$(timeout "$T" "$M" ls -a -q 2>&1)
    x env MVM_QEMU=/nonexistent/qemu-system-x86_64 "$M" run --rm default -- true
    expect_mvm_error "run with qemu missing"
    [[ "$ERR" == *qemu* ]] || fail "qemu missing: error does not mention qemu: $(ctx)"
    after=$(timeout "$T" "$M" ls -a -q 2>&1)
    [[ "$before" == "$after" ]] || fail "qemu missing left a VM behind: [$after]"

    # and with a PATH that has every usual tool but no qemu-system-*
    local bin="$W/nobin"
    mkdir -p "$bin"
    find /usr/local/bin /usr/bin /usr/sbin /bin /sbin -maxdepth 1 ! -type d \
        ! -name 'qemu-system-*' -exec ln -sf -t "$bin" {} + 2>/dev/null
    x env -u MVM_QEMU PATH="$bin" "$M" run --rm default -- true
    expect_mvm_error "run with no qemu in PATH"
    [[ "$ERR" == *qemu* ]] || fail "no qemu in PATH: error does not mention qemu: $(ctx)"
    after=$(timeout "$T" "$M" ls -a -q 2>&1)
    [[ "$before" == "$after" ]] || fail "no qemu in PATH left a VM behind: [$after]"
}

# flip_byte FILE OFFSET : replaces the byte at OFFSET with its complement
flip_byte() {
    local old
    old=$(od -An -tu1 -j "$2" -N1 "$1" | tr -d ' ')
    [[ -n "$old" ]] || return 1
    # shellcheck disable=SC2059
    printf "\\$(printf '%03o' $((255 - old)))" | dd of="$1" bs=1 seek="$2" conv=notrunc status=none
}

# tamper FILE : copies the cache's default image to a fresh cache, flips one byte of FILE
# in the copy, and checks that run refuses to boot with one line naming FILE.
tamper() {
    local file=$1 tc digest before after
    [[ -f "$CACHE/tags/default" ]] || fail "no default image in $CACHE"
    digest=$(tr -d '[:space:]' <"$CACHE/tags/default")
    tc=$(mktemp -d "$W/cache.XXXX")
    mkdir -p "$tc/images" "$tc/tags"
    cp -a "$CACHE/images/$digest" "$tc/images/" || fail "cannot copy the default image"
    cp -a "$CACHE/tags/default" "$tc/tags/" || fail "cannot copy the default tag"
    chmod -R u+w "$tc"
    [[ -f "$tc/images/$digest/$file" ]] || fail "image has no $file"
    flip_byte "$tc/images/$digest/$file" 4096 || fail "cannot modify $file"
    before=$(timeout "$T" "$M" ls -a -q 2>&1)
    x env MVM_CACHE_DIR="$tc" "$M" run --rm default -- true
    expect_mvm_error "run with a tampered $file"
    expect_err_has "$file" "tampered $file"
    expect_err_has mismatch "tampered $file"
    after=$(timeout "$T" "$M" ls -a -q 2>&1)
    [[ "$before" == "$after" ]] || fail "tampered $file: a VM was created: [$after]"
    ! pgrep -f -- "$tc" >/dev/null || fail "tampered $file: a process uses the tampered image"
    rm -rf -- "$tc"
}

t_tampered_rootfs() { tamper rootfs.ext4; }
t_tampered_kernel() { tamper vmlinux; }

# ---------------------------------------------------------------------------------------
# lifecycle and faults (each boots its own VM)

t_lifecycle() {
    x "$M" run -d --name lc default
    expect_rc 0 "run -d --name lc"
    expect_out lc "run -d --name lc"
    x "$M" exec lc -- sh -c 'echo in-lc'
    expect_rc 0 "exec lc"
    expect_out in-lc "exec lc"
    x "$M" rm lc
    expect_mvm_error "rm of a running VM without -f"
    state_is lc running || fail "lc is not running after a refused rm"
    x "$M" stop lc
    expect_rc 0 "stop lc"
    expect_out lc "stop lc"
    [[ "$(vm_state lc)" == exited ]] || fail "after stop, ls -a --json state of lc is [$(vm_state lc)]"
    x "$M" ls -a
    echo "$OUT" | grep -E '(^|[[:space:]])lc([[:space:]]|$)' | grep -q exited ||
        fail "ls -a does not show lc as exited: $(ctx)"
    x "$M" exec lc -- true
    expect_mvm_error "exec into a stopped VM"
    expect_err_has "not running" "exec into a stopped VM"
    x "$M" rm lc
    expect_rc 0 "rm lc"
    ! listed lc || fail "lc still listed after rm"
}

t_kill_monitor() {
    local mp hp dir
    x "$M" run -d --name k1 default
    expect_rc 0 "run -d --name k1"
    mp=$(vm_field k1 monitor_pid)
    hp=$(vm_field k1 hypervisor_pid)
    dir=$(vm_field k1 state_dir)
    [[ "$mp" =~ ^[0-9]+$ && "$hp" =~ ^[0-9]+$ ]] ||
        fail "inspect k1: monitor_pid [$mp] hypervisor_pid [$hp]"
    kill -9 "$mp" || fail "cannot kill monitor $mp"
    wait_for 5 pid_gone "$hp" || fail "qemu ($hp) still alive 5 s after its monitor was killed"
    wait_for 5 state_is k1 dead || fail "ls -a --json: k1 is [$(vm_state k1)], expected dead"
    x "$M" ls -a
    echo "$OUT" | grep -E '(^|[[:space:]])k1([[:space:]]|$)' | grep -q dead ||
        fail "ls -a does not show k1 as dead: $(ctx)"
    x "$M" rm k1
    expect_rc 0 "rm k1"
    ! listed k1 || fail "k1 still listed after rm"
    [[ -z "$dir" || ! -e "$dir" ]] || fail "state dir $dir left after rm"
}

t_kill_qemu() {
    local hp
    x "$M" run -d --name k2 default
    expect_rc 0 "run -d --name k2"
    hp=$(vm_field k2 hypervisor_pid)
    [[ "$hp" =~ ^[0-9]+$ ]] || fail "inspect k2: hypervisor_pid [$hp]"
    kill -9 "$hp" || fail "cannot kill qemu $hp"
    wait_for 5 state_is k2 exited || fail "ls -a --json: k2 is [$(vm_state k2)], expected exited"
    x "$M" exec k2 -- true
    expect_mvm_error "exec into a VM whose qemu was killed"
    x "$M" rm k2
    expect_rc 0 "rm k2"
    ! listed k2 || fail "k2 still listed after rm"
}

t_race() {
    local p1 p2 r1 r2 winners=0 loser_err=""
    timeout "$T" "$M" run -d --name race default </dev/null >"$W/r1.out" 2>"$W/r1.err" &
    p1=$!
    timeout "$T" "$M" run -d --name race default </dev/null >"$W/r2.out" 2>"$W/r2.err" &
    p2=$!
    wait "$p1"
    r1=$?
    wait "$p2"
    r2=$?
    [[ $r1 == 0 ]] && winners=$((winners + 1))
    [[ $r2 == 0 ]] && winners=$((winners + 1))
    [[ $r1 == 125 ]] && loser_err=$(cat "$W/r1.err")
    [[ $r2 == 125 ]] && loser_err=$(cat "$W/r2.err")
    [[ $winners == 1 ]] || fail "racing runs: exits $r1 and $r2, expected one 0 and one 125" \
        "[$(short "$(cat "$W/r1.err")")] [$(short "$(cat "$W/r2.err")")]"
    [[ "$loser_err" == *"already in use"* ]] ||
        fail "racing runs: the loser did not report 'already in use' (exits $r1/$r2): [$(short "$loser_err")]"
    [[ $(printf '%s\n' "$loser_err" | grep -c '') == 1 ]] ||
        fail "racing runs: loser printed more than one line: [$(short "$loser_err")]"
    x "$M" exec race -- true
    expect_rc 0 "exec into the winner"
    x "$M" rm -f race
    expect_rc 0 "rm -f race"
    ! listed race || fail "race still listed after rm -f"
}

# last: removes the shared VM
t_rm_force_running() {
    need_shared
    x "$M" rm "$SHARED"
    expect_mvm_error "rm of a running VM without -f"
    state_is "$SHARED" running || fail "$SHARED stopped after a refused rm"
    x "$M" rm -f "$SHARED"
    expect_rc 0 "rm -f $SHARED"
    ! listed "$SHARED" || fail "$SHARED still listed after rm -f"
}

t_rmi_in_use() {
    need_shared
    local digest
    digest=$(vm_field "$SHARED" digest)
    [[ -n "$digest" ]] || fail "no digest in inspect"
    x "$M" rmi "sha256:$digest"
    expect_mvm_error "rmi of the image a running VM uses"
    expect_err_has "used by VM"
    [[ -d "$CACHE/images/$digest" ]] || fail "the image was removed"
    state_is "$SHARED" running || fail "$SHARED stopped"
}

TESTS=(
    echo_rm exit_codes stdin stdin_big stdout_big stderr_separate env_cwd tty concurrent
    ls logs inspect
    bad_unknown_image bad_names bad_name_in_use bad_exec_unknown_vm bad_exec_no_command
    bad_qemu_missing tampered_rootfs tampered_kernel
    lifecycle kill_monitor kill_qemu race
    rmi_in_use rm_force_running
)

# ---------------------------------------------------------------------------------------
# runner

echo "# mvmctl: $M"
echo "# runtime: $MVM_RUNTIME_DIR  cache: $CACHE"

if [[ ! -f "$CACHE/tags/default" ]]; then
    echo "# building the default image (first run only)"
    if ! timeout 1800 "$M" build </dev/null; then
        echo "# mvmctl build failed; the tests that boot will fail"
    fi
fi

t0=$(now_ms)
if timeout "$T" "$M" run -d --name "$SHARED" default </dev/null >"$W/shared-out" 2>"$W/shared-err"; then
    touch "$W/shared-ok"
    echo "# shared VM up in $(($(now_ms) - t0)) ms"
else
    echo "# shared VM failed to start: $(cat "$W/shared-err")"
fi

# on failure, show the end of the shared VM's console (once, before it is removed)
dumped=0
dump_shared_console() {
    if ((failed && !dumped)) && listed "$SHARED"; then
        dumped=1
        echo "# console of $SHARED (last 20 lines):"
        timeout 30 "$M" logs "$SHARED" 2>&1 | tail -n 20 | sed 's/^/#   /'
    fi
}

before_test() { [[ "$1" != rm_force_running ]] || dump_shared_console; }
BEFORE_TEST_HOOK=before_test
run_tests "${TESTS[@]}"
dump_shared_console
echo "$passed passed, $failed failed"
((failed == 0))
