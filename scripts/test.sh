#!/usr/bin/env bash
# The whole test suite:
#   1. installs missing packages, builds mvm (build/)
#   2. builds the default image once into the shared cache (the integration tests reuse it)
#   3. meson test in build/: unit tests + integration tests that boot real microVMs
#   4. builds build-asan/ (ASan + UBSan) and runs the unit tests there, and the integration
#      tests too unless MVM_TEST_ASAN_INTEGRATION=0
# Prints "N passed, N failed" (test programs) at the end; exits non-zero on any failure.
set -euo pipefail
cd "$(dirname "$0")/.."

passed=0
failed=0
notes=()

# run_meson DIR ARGS... : runs `meson test`, adds its counts to the totals
run_meson() {
    local dir=$1 log ok fail rc=0
    shift
    log=$(mktemp /tmp/mvm-test.XXXXXX)
    meson test -C "$dir" --print-errorlogs "$@" 2>&1 | tee "$log" || rc=$?
    # meson's summary: "Ok:", "Expected Fail:", "Fail:", "Unexpected Pass:", "Skipped:", "Timeout:"
    ok=$(awk '/^Ok:/ {n += $2} /^Expected Fail:/ {n += $3} END {print n + 0}' "$log")
    fail=$(awk '/^Fail:/ {n += $2} /^Unexpected Pass:/ {n += $3} /^Timeout:/ {n += $2}
                END {print n + 0}' "$log")
    rm -f "$log"
    if ((rc != 0 && fail == 0)); then
        fail=1 # meson itself failed (e.g. a build error) before running the tests
        notes+=("meson test -C $dir $* failed (exit $rc)")
    fi
    passed=$((passed + ok))
    failed=$((failed + fail))
}

echo "== dependencies"
./scripts/install-deps.sh

echo "== build (build/)"
./scripts/build.sh

echo "== default image"
mvmctl=build/mvmctl
if ! "$mvmctl" build; then
    failed=$((failed + 1))
    notes+=("mvmctl build (default image) failed")
fi

echo "== tests (build/): unit + integration"
run_meson build

echo "== build (build-asan/, ASan + UBSan)"
if MVM_SANITIZE=1 ./scripts/build.sh; then
    export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1
    export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
    echo "== tests (build-asan/): unit"
    run_meson build-asan --suite unit
    if [[ "${MVM_TEST_ASAN_INTEGRATION:-1}" == 1 ]]; then
        echo "== tests (build-asan/): integration"
        run_meson build-asan --suite integration
    fi
else
    failed=$((failed + 1))
    notes+=("ASan+UBSan build failed")
fi

echo
for n in "${notes[@]}"; do
    echo "note: $n"
done
echo "$passed passed, $failed failed"
((failed == 0))
