#!/bin/bash
# The whole test suite against an AddressSanitizer + UndefinedBehaviorSanitizer
# build of the module:
#
#   bash test/asan.sh [PYTEST ARGS...]
#
# 1. builds build-asan/mod_gwe_balancer.so with gcc's
#    -fsanitize=address,undefined -fno-sanitize-recover=undefined (apxs, in
#    build-asan/ on a copy of the source: the normal build in .libs/ and
#    Makefile.apxs are left alone), and the C unit tests the same way;
# 2. runs the unit tests, then pytest with GWB_MODULE=that module and
#    GWB_APACHE_PRELOAD=gcc's libasan and libubsan, which test/harness/
#    puts in LD_PRELOAD for apache2 only (Debian's /usr/sbin/apache2 is not
#    instrumented, so the runtimes must be loaded before anything else).
#
# ASan writes its reports to files of their own, one directory per httpd
# (log_path, which the harness appends to ASAN_OPTIONS and UBSAN_OPTIONS);
# gcc's UBSan ignores log_path when ASan is loaded too and writes to stderr,
# that is error_log, where the harness looks as well.  Any report fails the
# test that started that httpd, showing the report.  Leak detection is off for
# httpd (detect_leaks=0): with it on, every httpd process reports httpd's
# own leaks at exit, with or without this module (pcre2 regexes compiled at
# startup, APR's allocator: 546-710 bytes in 2-3 allocations per process),
# and `apache2 -k start` then exits 1, so no httpd starts at all.  The
# module allocates only from APR pools, whose memory stays reachable from
# their allocator, where LeakSanitizer cannot see a leak anyway.  The
# leak-checked parts are the unit tests and the fuzzer (test/fuzz/run.sh),
# which run with LeakSanitizer on.
#
# test/test_fuzz.py is left out here: the fuzzer is an ASan + UBSan build of
# its own, and test/run.sh runs it already.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"

./test/deps.sh

out="$repo/build-asan"
SAN="-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined"
WFLAGS="-Wall -Wextra -Wno-unused-parameter -Werror"

rm -rf "$out"
mkdir -p "$out"
# apxs (libtool) writes its objects next to the sources it compiles: build
# a copy in build-asan/ with Makefile.apxs, never the sources at the top
# (that would overwrite the normal build in .libs/).
# shellcheck disable=SC2046
cp -p Makefile.apxs $(make -s -f Makefile.apxs sources) "$out/"
# -U_FORTIFY_SOURCE: apxs adds Debian's -D_FORTIFY_SOURCE=2, whose checked
# string functions turn ASan's reports into "unknown-crash in memcpy".
make -s -C "$out" -f Makefile.apxs WERROR=-Werror \
    CFLAGS="$SAN -U_FORTIFY_SOURCE -g -O1" \
    LDFLAGS="-fsanitize=address,undefined" >"$out/build.log" 2>&1 \
    || { cat "$out/build.log" >&2; exit 1; }
cp "$out/.libs/mod_gwe_balancer.so" "$out/mod_gwe_balancer.so"

# The unit tests and the fuzz seeds, with LeakSanitizer on and every UBSan
# finding fatal.
# shellcheck disable=SC2086
gcc $WFLAGS $SAN -fno-sanitize-recover=all -g -O1 -o "$out/gwb_unit" \
    test/unit/gwb_unit.c
# shellcheck disable=SC2086
gcc $WFLAGS $SAN -fno-sanitize-recover=all -g -O1 -o "$out/gwb_fuzz_replay" \
    test/fuzz/gwb_fuzz.c test/fuzz/replay.c
export ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
"$out/gwb_unit"
"$out/gwb_fuzz_replay" test/fuzz/corpus 2>/dev/null
unset ASAN_OPTIONS UBSAN_OPTIONS

libasan=$(readlink -f "$(gcc -print-file-name=libasan.so)")
libubsan=$(readlink -f "$(gcc -print-file-name=libubsan.so)")
for lib in "$libasan" "$libubsan"; do
    [ -f "$lib" ] || { echo "asan: no sanitizer runtime $lib" >&2; exit 1; }
done

# Report files: a directory per httpd under this one (see harness/logs.py).
reports=$(mktemp -d "${TMPDIR:-/tmp}/gwb-asan-reports.XXXXXX")
chmod 755 "$reports"

export GWB_MODULE="$out/mod_gwe_balancer.so"
export GWB_APACHE_PRELOAD="$libasan $libubsan"
export GWB_SANITIZER_DIR="$reports"
# halt_on_error: the first error ends the process (the test then fails on
# its report); print_stacktrace: UBSan reports with a stack.
export ASAN_OPTIONS="detect_leaks=0:halt_on_error=1:abort_on_error=0${ASAN_OPTIONS:+:$ASAN_OPTIONS}"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1${UBSAN_OPTIONS:+:$UBSAN_OPTIONS}"

rc=0
/usr/bin/python3 -m pytest -q -p no:cacheprovider \
    --ignore=test/test_fuzz.py test "$@" || rc=$?

found=$(find "$reports" -type f | wc -l)
if [ "$found" != 0 ]; then
    echo "asan: $found sanitizer report file(s) under $reports" >&2
    [ "$rc" = 0 ] && rc=1
else
    rm -rf "$reports"
fi
exit "$rc"
