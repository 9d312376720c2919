"""The cookie parser under libFuzzer for about a minute (test/fuzz/run.sh):
any crash, leak, sanitizer report or broken invariant fails the test."""

import os
import re
import shutil
import subprocess

import pytest

import harness

RUN = harness.TEST_DIR / "fuzz" / "run.sh"
SECONDS = 60


def test_fuzz_cookie_parser():
    clang = os.environ.get("CLANG", "clang")
    if shutil.which(clang) is None and not os.environ.get("CI"):
        pytest.skip("%s is not installed (Debian: apt-get install clang "
                    "libclang-rt-14-dev, as test/deps.sh does); CI runs "
                    "this test" % clang)
    proc = subprocess.run(["bash", str(RUN), str(SECONDS)],
                          stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, timeout=SECONDS + 240)
    out = proc.stdout.decode(errors="replace")
    assert proc.returncode == 0, out
    summary = re.search(r"^fuzz: (\d+) runs in (\d+) s, no crash.*$", out,
                        re.M)
    assert summary, out
    assert int(summary.group(1)) > 0, out
    print(summary.group(0))
