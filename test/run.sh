#!/bin/bash
# The whole test suite: installs what is missing, builds the module with
# warnings as errors, runs the C unit tests, then the integration tests
# against a real httpd and real demo GWE nodes.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"

./test/deps.sh
make -f Makefile.apxs clean >/dev/null
make -f Makefile.apxs WERROR=-Werror
make -f Makefile.apxs unit WERROR=-Werror
# The suite uses the module just built (GWB_MODULE), not a fresh build.
export GWB_MODULE="$repo/.libs/mod_gwe_balancer.so"
/usr/bin/python3 -m pytest -q -p no:cacheprovider test "$@"
# The whole suite again against an ASan + UBSan build of the module.
bash test/asan.sh "$@"
