"""The startup checks as `apache2 -t` (configtest) shows them, and as a
started httpd logs them.

Each case is a file under test/data/configtest/ (as mod_md keeps its bad
configurations): a config fragment, the test body of a private httpd (the
harness's base config around it), with a header of comments:

    # expect: LINE       configtest prints a line holding LINE exactly once
                         (one or more)
    # result: fails      configtest exits non-zero, and so does -k start,
                         leaving nothing running; or "passes" (exit 0)
    # without: MODULE    a module of the base config left out (optional)

Every GWB tag configtest prints is one that an expect line names: a case
shows its check and no other.  The members' addresses need no node.
"""

import re

import pytest

from harness import BASE_MODULES, REPO_DIR, TEST_DIR, port_accepts

CASES_DIR = TEST_DIR / "data" / "configtest"
CASES = sorted(CASES_DIR.glob("*.conf"))
HEADER = re.compile(r"^# (expect|result|without): (.*)$", re.M)
TAG = re.compile(r"\bGWB\d{4}\b")


def read_case(path):
    """{"expect": [lines], "result": "fails" or "passes", "without":
    [modules]} from a case file's header."""
    case = {"expect": [], "result": None, "without": []}
    for key, value in HEADER.findall(path.read_text()):
        if key == "expect":
            case["expect"].append(value)
        elif key == "without":
            case["without"] += value.split()
        else:
            case["result"] = value
    assert case["result"] in ("fails", "passes"), path
    assert case["expect"], path
    assert set(case["without"]) <= set(BASE_MODULES), path
    return case


def assert_prints_once(output, expected):
    """Each expected line once, and no GWB tag the case does not expect."""
    lines = output.splitlines()
    for text in expected:
        assert sum(text in line for line in lines) == 1, (text, output)
    assert sorted(TAG.findall(output)) == \
        sorted(TAG.findall("\n".join(expected))), output


@pytest.mark.parametrize("path", CASES, ids=lambda p: p.stem)
def test_configtest_case(httpd_factory, path):
    case = read_case(path)
    h = httpd_factory(gwe=True)
    h.write_config(path.read_text(), without=case["without"])

    rc, out = h.configtest()
    assert (rc == 0) == (case["result"] == "passes"), out
    assert_prints_once(out, case["expect"])
    if case["result"] == "passes":
        assert "Syntax OK" in out
        return

    rc, out = h.start_expect_failure()
    assert rc != 0, out
    assert_prints_once(out, case["expect"])
    assert not h.pid_path.exists() and not port_accepts(h.port)


def test_every_startup_check_has_a_case():
    """Each GWB tag of gwb_checks.c, and GWB0001, is some case's."""
    checks = set(re.findall(r'"(GWB\d{4}):',
                            (REPO_DIR / "gwb_checks.c").read_text()))
    assert len(checks) >= 11
    covered = {tag for path in CASES
               for line in read_case(path)["expect"]
               for tag in TAG.findall(line)}
    assert checks | {"GWB0001"} <= covered, sorted(checks - covered)


def test_warning_once_per_start_and_graceful_restart(httpd_factory):
    """Logged once in error_log at start (httpd reads its configuration
    twice then) and once more at each graceful restart."""
    case = CASES_DIR / "gwb0103-member-without-route.conf"
    expected, = read_case(case)["expect"]
    h = httpd_factory(gwe=True)
    h.allow(re.escape(expected))
    h.write_config(case.read_text())

    def count():
        return sum(expected in line for line in h.error_log().splitlines())
    h.start()
    assert count() == 1
    h.graceful()
    assert count() == 2
    assert len(re.findall(r"GWB0003: .* ready", h.error_log())) == 2
