#!/bin/bash
# Fuzzes the cookie parser and route choice (test/fuzz/gwb_fuzz.c) with
# libFuzzer under AddressSanitizer (with LeakSanitizer) and
# UndefinedBehaviorSanitizer, for SECONDS (default 60).
#
#   test/fuzz/run.sh            about a minute, as the test suite runs it
#   test/fuzz/run.sh 3600       a long run
#
# Installs nothing: needs Debian's clang and libclang-rt-14-dev (the
# libFuzzer and sanitizer runtimes), which test/deps.sh installs.
#
# It fuzzes a scratch copy of test/fuzz/corpus/ (the committed corpus never
# grows) and exits non-zero on any crash, leak, sanitizer report, broken
# invariant, timeout or out-of-memory; the input that did it is kept under
# test/out/fuzz/ (reproduce: test/out/fuzz/gwb_fuzz FILE).  Last line:
#   fuzz: N runs in S s, no crash, leak or sanitizer report (...)
#
# Environment: CLANG (default clang), FUZZ_SEED (libFuzzer -seed, default
# random), FUZZ_OUT (default test/out/fuzz), FUZZ_KEEP_CORPUS=DIR (keep the
# grown scratch corpus there, e.g. to look at or to minimize into the seeds).
set -euo pipefail

secs=${1:-60}
case $secs in
    ''|*[!0-9]*|0) echo "usage: $0 [SECONDS]" >&2; exit 2 ;;
esac

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
clang=${CLANG:-clang}
out=${FUZZ_OUT:-$repo/test/out/fuzz}

if ! command -v "$clang" >/dev/null; then
    echo "fuzz: $clang not found (Debian: apt-get install clang libclang-rt-14-dev)" >&2
    exit 2
fi

mkdir -p "$out"
work=$(mktemp -d "${TMPDIR:-/tmp}/gwb-fuzz.XXXXXX")
trap 'rm -rf "$work"' EXIT

bin="$out/gwb_fuzz"
"$clang" -g -O1 -fsanitize=fuzzer,address,undefined \
    -fno-sanitize-recover=all -fno-omit-frame-pointer \
    -Wall -Wextra -Werror -o "$bin" "$here/gwb_fuzz.c"

cp -R "$here/corpus" "$work/corpus"
seeds=$(find "$work/corpus" -type f | wc -l)
log="$out/last-run.log"

seed_opt=()
[ -n "${FUZZ_SEED:-}" ] && seed_opt=(-seed="$FUZZ_SEED")

# -timeout: one input running 10 s is a hang, reported as a finding.
# -rss_limit_mb / -malloc_limit_mb: an input needing 2 GB is one too.
# Leak detection is libFuzzer's default under ASan (-detect_leaks=1).
rc=0
ASAN_OPTIONS=${ASAN_OPTIONS:-}${ASAN_OPTIONS:+:}detect_leaks=1:abort_on_error=0 \
UBSAN_OPTIONS=${UBSAN_OPTIONS:-}${UBSAN_OPTIONS:+:}print_stacktrace=1:halt_on_error=1 \
    "$bin" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 \
    -malloc_limit_mb=2048 -detect_leaks=1 -print_final_stats=1 \
    -dict="$here/gwb.dict" -artifact_prefix="$out/" "${seed_opt[@]}" \
    "$work/corpus" >"$log" 2>&1 || rc=$?

runs=$(sed -n 's/^stat::number_of_executed_units: *\([0-9]*\)$/\1/p' "$log" | tail -1)
took=$(sed -n 's/^Done [0-9]* runs in \([0-9]*\) second.*/\1/p' "$log" | tail -1)
seed=$(sed -n 's/^INFO: Seed: \([0-9]*\)$/\1/p' "$log" | head -1)
grown=$(find "$work/corpus" -type f | wc -l)
if [ -n "${FUZZ_KEEP_CORPUS:-}" ]; then
    mkdir -p "$FUZZ_KEEP_CORPUS"
    cp -R "$work/corpus/." "$FUZZ_KEEP_CORPUS/"
fi

# A finding makes libFuzzer exit non-zero; the sanitizers' and the target's
# own messages are looked for too, whatever the exit code.
finding=$(grep -E -m 5 '^(==[0-9]+==ERROR|SUMMARY: |.*runtime error:|gwb_fuzz: invariant|ERROR: libFuzzer)' "$log" || true)
if [ "$rc" != 0 ] || [ -n "$finding" ] || [ -z "$runs" ] || [ -z "$took" ]; then
    echo "fuzz: FAILED (libFuzzer exit $rc, seed ${seed:-?}) after ${runs:-?} runs; log: $log" >&2
    [ -n "$finding" ] && printf '%s\n' "$finding" >&2
    echo "--- end of the log ---" >&2
    tail -n 60 "$log" >&2
    for a in $(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log"); do
        echo "fuzz: reproducer $a (run: $bin $a):" >&2
        od -A d -c "$a" | head -n 20 >&2
    done
    exit 1
fi
echo "fuzz: $runs runs in $took s, no crash, leak or sanitizer report (seed $seed, corpus $seeds -> $grown inputs)"
