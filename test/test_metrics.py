"""The Prometheus metrics (SetHandler gwe-balancer-metrics), read as
Prometheus reads them: Debian's prometheus scrapes the test's httpd every
second and the tests ask its HTTP API (/api/v1/query), after a scrape that
began once their traffic was answered.  Known traffic, exact counts.

One httpd, one Prometheus and three nodes for the module; counters are
compared before and after each test's traffic, and the last test restarts
httpd.
"""

import asyncio
import re
import time

import pytest

from harness import (MANY_CHILDREN, REPO_DIR, BalancerManager, Prometheus,
                     balancer_block, balancer_manager_block, free_port,
                     http_get, http_request, metrics_block, route_cookie,
                     run_promtool, twin_balancers, wait_until, worker_url,
                     ws_talk)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
FAMILIES = {
    "gwe_balancer_info": "gauge",
    "gwe_balancer_start_time_seconds": "gauge",
    "gwe_balancer_decisions_total": "counter",
    "gwe_balancer_websocket_handoffs_total": "counter",
    "gwe_balancer_member_state": "gauge",
    "gwe_balancer_member_busy": "gauge",
}
DECISIONS = ("sticky", "redirect", "failover", "nofailover", "new",
             "unknown-route")
STATES = ("stopped", "disabled", "error", "hcheck_failed", "draining",
          "standby", "ok")
# A route with a backslash and a double quote: httpd keeps both when the
# word is not quoted.
ODD_ROUTE = 'a\\"b'
# Member status flags (H hot standby, R hot spare, N drain, C health check
# failed, E error, D disabled, S stopped) -> the state shown.
FLAGS_AND_STATES = [
    ("", "ok"), ("H", "standby"), ("R", "standby"), ("N", "draining"),
    ("NH", "draining"), ("C", "hcheck_failed"), ("CN", "hcheck_failed"),
    ("E", "error"), ("EC", "error"), ("D", "disabled"), ("DEC", "disabled"),
    ("S", "stopped"), ("SD", "stopped"),
]


@pytest.fixture(scope="module")
def dead_port():
    """A port nobody listens on: the member there fails to connect."""
    return free_port()


def flags_balancer(node):
    """balancer://flags: a member for each of FLAGS_AND_STATES, route
    s-FLAGS (s-none: no flag), at its own path of node (no path a prefix
    of another's: httpd would take the two for one worker)."""
    lines = ['<Proxy "balancer://flags">']
    for flags, _ in FLAGS_AND_STATES:
        name = flags or "none"
        lines.append('    BalancerMember "%s" route=s-%s%s' % (
            worker_url(node, path="/server/%s/" % name), name,
            " status=+" + flags if flags else ""))
    return "\n".join(lines + ["    ProxySet lbmethod=gwesticky",
                               "</Proxy>", ""])


@pytest.fixture(scope="module")
def h(module_httpd_factory, module_nodes, dead_port):
    """/server: twin balancers gwe and gwe-ws over the three nodes.
    /strict: nofailover=On, GWE_Node_1 disabled.  /states: GWE_Node_3 and
    GWE_Dead (no one listens).  /odd: GWE_Node_1 as route a\\"b.
    balancer://flags: see flags_balancer()."""
    n1, n2, n3 = module_nodes
    httpd = module_httpd_factory(gwe=True)
    for rx in [r"GWB0204: balancer://gwe: .*'GWE_Node_9'",
               r"GWB0202: balancer://strict: member for route GWE_Node_1",
               r"AH01170: .*balancer://strict", r"AH00957: .*:%d" % dead_port,
               r"AH00959: .*:%d" % dead_port,
               r"AH01114: HTTP: failed to make connection to backend: "
               r"127\.0\.0\.1$"]:
        httpd.allow(rx)
    httpd.write_config(
        MANY_CHILDREN + metrics_block() + balancer_manager_block()
        + twin_balancers(module_nodes)
        + balancer_block("strict", [n1, n2], proxyset="nofailover=On",
                         member_params={"GWE_Node_1": "status=+D"})
        + balancer_block("states", [n3, ("GWE_Dead", dead_port)])
        + balancer_block("odd", [(ODD_ROUTE, n1.port)])
        + flags_balancer(n3)
        + "".join('ProxyPass "/%s" "balancer://%s"\n' % (b, b)
                  for b in ("strict", "states", "odd")),
        modules=["proxy_wstunnel"])
    return httpd.start()


@pytest.fixture(scope="module")
def prom(h, tmp_path_factory, prometheus_tools):
    p = Prometheus(tmp_path_factory.mktemp("prometheus"),
                   ["127.0.0.1:%d" % h.port])
    yield p.start()
    p.stop()


def decisions(prom, balancer):
    """{(route, decision): count} of a balancer, as Prometheus has it."""
    return prom.values(prom.selector("gwe_balancer_decisions_total",
                                     balancer=balancer),
                       ("route", "decision"))


def increase(before, after):
    """The series that grew, and by how much."""
    assert set(after) == set(before)
    return {k: after[k] - before[k] for k in after if after[k] != before[k]}


def member_states(prom, balancer):
    """{route: its state} of a balancer's members, checking that each has
    every state's series and exactly one of them 1."""
    series = prom.values(prom.selector("gwe_balancer_member_state",
                                       balancer=balancer), ("route", "state"))
    result = {}
    for route in {route for route, _ in series}:
        mine = {state: v for (r, state), v in series.items() if r == route}
        assert sorted(mine) == sorted(STATES), (route, mine)
        current = [state for state, v in mine.items() if v == 1]
        assert len(current) == 1 and sum(mine.values()) == 1, (route, mine)
        result[route] = current[0]
    return result


def state_of(prom, balancer, route):
    return member_states(prom, balancer)[route]


def test_page_is_prometheus_text_format(h, prometheus_tools):
    r = http_get(h.port, "/metrics")
    assert r.status == 200
    assert r.headers["Content-Type"] == CONTENT_TYPE
    assert r.headers["Cache-Control"] == "no-store"
    rc, out = run_promtool("check", "metrics", input=r.body)
    assert rc == 0 and out == "", out

    text = r.text
    for name, kind in FAMILIES.items():
        # HELP, then TYPE, then the samples, which no other family's break.
        block = re.search(r"(?m)^# HELP %s \S.*\n# TYPE %s %s\n"
                          r"((?:%s(?:\{.*\})? \S+\n)+)" % (name, name, kind,
                                                           name), text)
        assert block, name
        assert len(re.findall(r"(?m)^%s[{ ]" % name, text)) == \
            block.group(1).count("\n"), name
    version = re.search(r'#define GWB_VERSION "([^"]+)"',
                        (REPO_DIR / "mod_gwe_balancer.h").read_text())
    assert 'gwe_balancer_info{version="%s"} 1\n' % version.group(1) in text
    start = int(re.search(r"(?m)^gwe_balancer_start_time_seconds (\d+)$",
                          text).group(1))
    assert start <= time.time()
    # One series per decision and route, the route "" (no member) too.
    for route in ("", "GWE_Node_1", "GWE_Node_2", "GWE_Node_3"):
        for decision in DECISIONS:
            assert ('gwe_balancer_decisions_total{balancer="gwe",route="%s",'
                    'decision="%s"} ' % (route, decision)) in text

    assert http_request("POST", h.port, "/metrics", body=b"").status == 405
    head = http_request("HEAD", h.port, "/metrics")
    assert head.status == 200 and head.body == b""


def test_label_values_are_escaped(h, prom):
    assert 'route="a\\\\\\"b"' in http_get(h.port, "/metrics").text
    before = decisions(prom, "odd")
    for _ in range(3):
        r = http_get(h.port, "/odd/about", cookie="GWROUTEID=." + ODD_ROUTE)
        assert r.status == 200
    assert increase(before, decisions(prom, "odd")) == \
        {(ODD_ROUTE, "sticky"): 3}
    assert state_of(prom, "odd", ODD_ROUTE) == "ok"


def test_decisions_are_counted_exactly(h, prom, module_nodes):
    n1, n2, _ = module_nodes
    before = decisions(prom, "gwe")
    expected = {("GWE_Node_1", "sticky"): 7, ("GWE_Node_2", "sticky"): 4}
    for node, n in ((n1, 7), (n2, 4)):
        for _ in range(n):
            assert http_get(h.port, "/server/about",
                            cookie=route_cookie(node)).node == node.name
    # New visitors and unknown routes count for the member that took them.
    for cookie, decision, n in ((None, "new", 5),
                                ("GWROUTEID=.GWE_Node_9", "unknown-route",
                                 3)):
        for _ in range(n):
            key = (http_get(h.port, "/server/about", cookie=cookie).node,
                   decision)
            expected[key] = expected.get(key, 0) + 1
    assert increase(before, decisions(prom, "gwe")) == expected


def test_failover_from_a_member_disabled_in_balancer_manager(h, prom,
                                                             module_nodes):
    n3 = module_nodes[2]
    manager = BalancerManager(h.port)
    before = decisions(prom, "gwe")
    manager.disable("gwe", worker_url(n3))
    try:
        assert state_of(prom, "gwe", "GWE_Node_3") == "disabled"
        for _ in range(4):
            r = http_get(h.port, "/server/about", cookie=route_cookie(n3))
            assert r.status == 200 and r.node != "GWE_Node_3"
    finally:
        manager.enable("gwe", worker_url(n3))
    # Failovers count for the member the cookie named.
    assert increase(before, decisions(prom, "gwe")) == \
        {("GWE_Node_3", "failover"): 4}
    assert state_of(prom, "gwe", "GWE_Node_3") == "ok"


def test_refusals_and_decisions_about_no_member(h, prom, module_nodes):
    """nofailover=On refuses a visitor of a disabled member (503, counted
    for that member); with no usable member at all, a new visitor is
    refused too, counted with route=""."""
    before = decisions(prom, "strict")
    for cookie in [route_cookie(module_nodes[0])] * 2:
        assert http_get(h.port, "/strict/about", cookie=cookie).status == 503
    assert increase(before, decisions(prom, "strict")) == \
        {("GWE_Node_1", "nofailover"): 2}

    manager = BalancerManager(h.port)
    manager.disable("strict", worker_url(module_nodes[1]))
    try:
        before = decisions(prom, "strict")
        assert http_get(h.port, "/strict/about").status == 503
        assert increase(before, decisions(prom, "strict")) == \
            {("", "new"): 1}
    finally:
        manager.enable("strict", worker_url(module_nodes[1]))


def test_websocket_handoffs_and_busy_members(h, prom, module_nodes):
    handoffs = 'gwe_balancer_websocket_handoffs_total{balancer="gwe"}'
    before_handoffs = prom.values(handoffs, ())
    before = decisions(prom, "gwe-ws")
    for node in module_nodes:
        for _ in range(2):
            got, _ = asyncio.run(ws_talk(h.port, route_cookie(node)))
            assert got == node.name
    assert prom.values(handoffs, ())[()] == before_handoffs[()] + 6
    assert increase(before, decisions(prom, "gwe-ws")) == {
        (node.name, "sticky"): 2 for node in module_nodes}

    # An open WebSocket is a tunnel in flight: its member is busy.
    busy = 'gwe_balancer_member_busy{balancer="gwe-ws",route="GWE_Node_2"}'

    async def while_open():
        import websockets
        async with websockets.connect(
                "ws://127.0.0.1:%d/server/cometd" % h.port,
                extra_headers={"Cookie": route_cookie(module_nodes[1])},
                open_timeout=10, ping_interval=None) as ws:
            await ws.send("hello")
            assert await asyncio.wait_for(ws.recv(), 10) == \
                "GWE_Node_2:hello"
            return prom.values(busy, ())[()]
    assert asyncio.run(while_open()) == 1
    assert prom.values(busy, ())[()] == 0


def test_member_states_after_drain_and_disable_in_balancer_manager(
        h, prom, module_nodes):
    manager = BalancerManager(h.port)
    url = worker_url(module_nodes[2])
    manager.drain("states", url)
    assert state_of(prom, "states", "GWE_Node_3") == "draining"
    manager.disable("states", url)
    assert state_of(prom, "states", "GWE_Node_3") == "disabled"
    manager.enable("states", url)
    assert state_of(prom, "states", "GWE_Node_3") == "ok"


def test_member_state_is_the_first_that_applies(prom):
    """Members of balancer://flags, each with status=+FLAGS: stopped,
    disabled, error, hcheck_failed, draining, standby, ok, in that order."""
    assert member_states(prom, "flags") == {
        "s-" + (flags or "none"): state for flags, state in FLAGS_AND_STATES}


def test_member_refusing_connections_is_in_error(h, prom):
    """Its first request puts it in error, and goes to the other member."""
    assert state_of(prom, "states", "GWE_Dead") == "ok"
    r = http_get(h.port, "/states/about", cookie="GWROUTEID=.GWE_Dead")
    assert r.status == 200 and r.node == "GWE_Node_3"
    assert state_of(prom, "states", "GWE_Dead") == "error"


def test_graceful_restart_starts_counting_again(h, prom, module_nodes):
    start = 'gwe_balancer_start_time_seconds'
    started = prom.values(start, ())[()]
    for _ in range(3):
        http_get(h.port, "/server/about", cookie=route_cookie(module_nodes[0]))
    assert decisions(prom, "gwe")[("GWE_Node_1", "sticky")] > 0
    # The start time counts whole seconds: restart in a later one.
    wait_until(lambda: time.time() >= started + 1, 5, what="a new second")
    h.graceful()
    assert prom.values(start, ())[()] > started
    assert set(decisions(prom, "gwe").values()) == {0}
