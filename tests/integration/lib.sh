# Shared harness of the integration tests (sourced): isolated runtime dir, scratch dir,
# command runners that capture rc/stdout/stderr, expectations, JSON helpers, cleanup.
# Needs M (path of mvmctl) set by the caller.
# shellcheck shell=bash disable=SC2034
export MVM_TEST=1
MVM_RUNTIME_DIR=$(mktemp -d /tmp/mvmit.XXXX)
export MVM_RUNTIME_DIR
W=$(mktemp -d /tmp/mvmit-work.XXXX)   # scratch files of the harness
CACHE=${MVM_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/mvm}
T=120           # per-command timeout (seconds)
SHARED=shared

cleanup() {
    [[ -n "${EXTRA_CLEANUP:-}" ]] && $EXTRA_CLEANUP
    local n pids
    for n in $(timeout 30 "$M" ls -a -q 2>/dev/null); do
        timeout 60 "$M" rm -f "$n" >/dev/null 2>&1
    done
    # anything still running from this run (monitors, qemu) has our runtime dir in its argv
    pids=$(pgrep -f -- "$MVM_RUNTIME_DIR" || true)
    if [[ -n "$pids" ]]; then
        # shellcheck disable=SC2086
        kill -9 $pids 2>/dev/null
    fi
    rm -rf -- "$MVM_RUNTIME_DIR" "$W"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------------------------------
# helpers

# x CMD... : runs CMD with a timeout and stdin from /dev/null; sets RC, OUT and ERR.
x() {
    timeout "$T" "$@" </dev/null >"$W/out" 2>"$W/err"
    RC=$?
    OUT=$(cat "$W/out")
    ERR=$(cat "$W/err")
}
# xi INPUTFILE CMD... : like x with stdin from INPUTFILE.
xi() {
    local in=$1
    shift
    timeout "$T" "$@" <"$in" >"$W/out" 2>"$W/err"
    RC=$?
    OUT=$(cat "$W/out")
    ERR=$(cat "$W/err")
}

# Tests run in subshells: fail ends the current test with a reason.
fail() {
    printf '%s\n' "$*" >"$W/reason"
    exit 1
}
short() { printf '%s' "$1" | head -c 300 | tr '\n' '|'; }
ctx() { printf 'rc=%s stdout=[%s] stderr=[%s]' "$RC" "$(short "$OUT")" "$(short "$ERR")"; }

expect_rc() { [[ "$RC" == "$1" ]] || fail "${2:-command}: expected exit $1, $(ctx)"; }
expect_out() { [[ "$OUT" == "$1" ]] || fail "${2:-command}: expected stdout [$1], $(ctx)"; }
# exactly one line on stderr (a last line without newline counts)
expect_one_err_line() {
    local n
    n=$(grep -c '' "$W/err")
    [[ "$n" == 1 ]] || fail "${1:-command}: expected one line on stderr, got $n: $(ctx)"
}
expect_err_has() {
    [[ "$ERR" == *"$1"* ]] || fail "${2:-command}: stderr lacks '$1': $(ctx)"
}

# mvm's own failure: exit 125 with exactly one line on stderr
expect_mvm_error() {
    expect_rc 125 "$1"
    expect_one_err_line "$1"
}

# jq-less JSON access. json_vm FIELD NAME < json : prints FIELD of the object whose "name"
# is NAME, searched anywhere in the document (an array, {"vms": [...]}, or one object).
json_vm() {
    python3 -c '
import json, sys
field, name = sys.argv[1], sys.argv[2]
doc = json.load(sys.stdin)
def walk(o):
    if isinstance(o, dict):
        if o.get("name") == name:
            yield o
        for v in o.values():
            yield from walk(v)
    elif isinstance(o, list):
        for v in o:
            yield from walk(v)
for o in walk(doc):
    v = o.get(field)
    print("" if v is None else v)
    sys.exit(0)
sys.exit(3)
' "$1" "$2"
}

vm_field() { # vm_field NAME FIELD : from `mvmctl inspect NAME`
    timeout "$T" "$M" inspect "$1" 2>/dev/null | json_vm "$2" "$1"
}
vm_state() { # vm_state NAME : state from `mvmctl ls -a --json`, empty if not listed
    timeout "$T" "$M" ls -a --json 2>/dev/null | json_vm state "$1" 2>/dev/null
}
listed() { # listed NAME : true if `mvmctl ls -a -q` shows NAME
    timeout "$T" "$M" ls -a -q 2>/dev/null | grep -qxF -- "$1"
}
pid_gone() { # true if the process no longer exists (or is a zombie awaiting its reaper)
    [[ ! -e /proc/$1 ]] || grep -q '^State:[[:space:]]*Z' "/proc/$1/status" 2>/dev/null
}
# wait_for SECONDS CMD... : polls CMD every 0.2 s until it succeeds
wait_for() {
    local deadline=$((SECONDS + $1))
    shift
    while ! "$@"; do
        ((SECONDS < deadline)) || return 1
        sleep 0.2
    done
}
state_is() { [[ "$(vm_state "$1")" == "$2" ]]; }
now_ms() { echo $(($(date +%s%N) / 1000000)); }

# run_tests NAME... : runs each t_NAME in a subshell, prints TAP-like lines, counts.
#   MVM_IT_ONLY=REGEX   only the tests whose name matches
passed=0
failed=0
run_tests() {
    local t rc s ms reason
    for t in "$@"; do
        if [[ -n "${MVM_IT_ONLY:-}" && ! "$t" =~ $MVM_IT_ONLY ]]; then
            continue
        fi
        [[ -z "${BEFORE_TEST_HOOK:-}" ]] || $BEFORE_TEST_HOOK "$t"
        rm -f "$W/reason"
        s=$(now_ms)
        ("t_$t")
        rc=$?
        ms=$(($(now_ms) - s))
        if [[ $rc == 0 ]]; then
            passed=$((passed + 1))
            echo "ok - $t (${ms} ms)"
        else
            failed=$((failed + 1))
            reason=$(cat "$W/reason" 2>/dev/null || echo "exited $rc")
            echo "not ok - $t: $reason"
        fi
    done

}
