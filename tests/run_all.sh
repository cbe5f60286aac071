#!/bin/sh
# Runs every test of `make test`: unit tests of the normal build, the same unit
# tests under ASan+UBSan, then the script tests under tests/scripts/ (oracle
# fixtures, CLI end to end). Prints one line per test and a summary; exits
# non-zero if anything failed.
set -u
BUILD=${1:-build}
cd "$(dirname "$0")/.."
export DS4_SRC_DIR="$(pwd)"
export DS4_BUILD_DIR="$(pwd)/$BUILD"
export ASAN_OPTIONS="detect_leaks=1:abort_on_error=0:halt_on_error=1"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
TMP_ROOT=$(mktemp -d /tmp/ds4-tests.XXXXXX)
export DS4_TEST_TMP="$TMP_ROOT"
trap 'rm -rf "$TMP_ROOT"' EXIT

pass=0
failed=""
start_all=$(date +%s)

run() { # name, command...
    name=$1
    shift
    t0=$(date +%s)
    log="$TMP_ROOT/$(echo "$name" | tr '/ ' '__').log"
    if "$@" >"$log" 2>&1; then
        pass=$((pass + 1))
        printf '  ok    %-48s %4ss\n' "$name" "$(($(date +%s) - t0))"
    else
        failed="$failed $name"
        printf '  FAIL  %-48s %4ss\n' "$name" "$(($(date +%s) - t0))"
        sed 's/^/        | /' "$log" | tail -n 60
    fi
}

echo "== unit tests ($BUILD)"
for t in $(find "$BUILD/tests" -type f -perm -u+x 2>/dev/null | sort); do
    run "unit/${t#"$BUILD/tests/"}" "$t"
done

echo "== unit tests under ASan+UBSan"
for t in $(find "$BUILD/asan/tests" -type f -perm -u+x 2>/dev/null | sort); do
    run "asan/${t#"$BUILD/asan/tests/"}" "$t"
done

echo "== script tests"
for s in $(ls tests/scripts/*.sh 2>/dev/null | sort); do
    run "script/$(basename "$s" .sh)" sh "$s"
done

total=$((pass + $(echo "$failed" | wc -w)))
echo "== $pass/$total passed in $(($(date +%s) - start_all))s"
if [ -n "$failed" ]; then
    echo "FAILED:$failed"
    exit 1
fi
