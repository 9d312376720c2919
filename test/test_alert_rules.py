"""The Prometheus alerting rules (conf/gwe-balancer-alerts.yml): promtool
accepts them and their unit tests (conf/gwe-balancer-alerts.test.yml) pass;
and those tests fail when a rule or an expectation is broken."""

import pytest

import harness
from harness import run_promtool

CONF = harness.REPO_DIR / "conf"
RULES = CONF / "gwe-balancer-alerts.yml"
RULE_TESTS = CONF / "gwe-balancer-alerts.test.yml"


def test_rules_are_valid(prometheus_tools):
    status, out = run_promtool("check", "rules", RULES)
    assert status == 0, out


def test_rule_tests_pass(prometheus_tools):
    status, out = run_promtool("test", "rules", RULE_TESTS)
    assert status == 0, out


# Each: the file changed, the text replaced (every occurrence), its
# replacement, and the test group of the unit tests that must then fail.
BREAKAGES = {
    "expected alert removed": (
        RULE_TESTS, "        exp_alerts:\n          - *node1_unhealthy\n", "",
        "a member in error or failing its health check"),
    "failover threshold raised": (
        RULES, "> 0.05", "> 0.10", "failovers climbing"),
    "draining counted as usable": (
        RULES, 'state=~"ok|standby"}', 'state=~"ok|standby|draining"}',
        "no usable member"),
    "shorter wait for rate alerts": (
        RULES, "for: 10m", "for: 5m",
        "one burst of failovers after a node failure"),
    "counter resets ignored": (
        RULES, "rate(", "deriv(", "counters reset by a restart"),
}


@pytest.mark.parametrize("breakage", sorted(BREAKAGES))
def test_rule_tests_catch(prometheus_tools, tmp_path, breakage):
    """A copy of the rules and their tests, one of them broken: promtool
    test rules fails, in the test group that covers what was broken."""
    changed, old, new, group = BREAKAGES[breakage]
    for path in (RULES, RULE_TESTS):
        text = path.read_text()
        if path == changed:
            assert old in text, "%s no longer holds %r" % (path.name, old)
            text = text.replace(old, new)
        (tmp_path / path.name).write_text(text)
    status, out = run_promtool("test", "rules",
                               tmp_path / RULE_TESTS.name)
    assert status != 0, out
    assert "name: %s," % group in out, out
