"""WebSocket tunnels across reloads and node maintenance (issue 13):
GWEBalancerTunnelRecycle closes the tunnels of an old generation after a
graceful restart, spread out, so that its processes exit;
GWEBalancerTunnelEvict closes the tunnels of a member an operator disabled,
stopped, or that fails its health check (not one draining).  Real httpd,
real WebSocket clients that reconnect with their cookie as CometD does
(harness.TunnelFleet), demo GWE nodes; the tunnel counts in /metrics and
server-status."""

import os
import re
import signal
import time

import pytest

from harness import (BalancerManager, TunnelFleet, balancer_manager_block,
                     http_get, twin_balancers, wait_until, worker_url)

GRACE, SPREAD = 1, 3
# What a process may take beyond GRACE + SPREAD to close its tunnels and
# exit, and the parent to reap it, on a loaded machine or under ASan.
MARGIN = 15

# Processes of 25 threads, and room for an old generation's beside a full
# new one (README: size ServerLimit for it); prefork: a process a tunnel.
MPM = ("StartServers 2\nMinSpareThreads 10\nMaxSpareThreads 200\n"
       "ThreadsPerChild 25\nThreadLimit 25\nServerLimit 32\n"
       "MaxRequestWorkers 400\n")
PREFORK = ("StartServers 5\nMinSpareServers 5\nMaxSpareServers 40\n"
           "ServerLimit 120\nMaxRequestWorkers 60\n")

ADMIN = ('<Location "/metrics">\n'
         '    ProxyPass "!"\n'
         '    SetHandler gwe-balancer-metrics\n'
         '    Require ip 127.0.0.1\n'
         '</Location>\n'
         '<Location "/server-status">\n'
         '    ProxyPass "!"\n'
         '    SetHandler server-status\n'
         '    Require ip 127.0.0.1\n'
         '</Location>\n' + balancer_manager_block())

HCHECK = "hcmethod=GET hcuri=isAlive hcinterval=1 hcfails=1 hcpasses=1"


@pytest.fixture
def tunnels_httpd(httpd_factory):
    """tunnels_httpd(nodes, recycle=..., evict=..., fallback_to_http=None,
    mpm="worker", params="", allow=()) -> a started Httpd with the twin
    balancers over nodes and the two directives ("off" or "GRACE
    SPREAD")."""
    def start(nodes, recycle="%ds %ds" % (GRACE, SPREAD),
              evict="%ds %ds" % (GRACE, SPREAD), fallback_to_http=None,
              mpm="worker", params="", allow=()):
        h = httpd_factory(gwe=True, mpm=mpm,
                          modules=["proxy_wstunnel", "proxy_hcheck"])
        for rx in allow:
            h.allow(rx)
        body = (PREFORK if mpm == "prefork" else MPM) + ADMIN
        body += "GWEBalancerTunnelRecycle %s\n" % recycle
        body += "GWEBalancerTunnelEvict %s\n" % evict
        if fallback_to_http is not None:
            body += "ProxyWebsocketFallbackToProxyHttp %s\n" % (
                "On" if fallback_to_http else "Off")
        h.write_config(body + twin_balancers(nodes, params=params))
        h.start()
        return h
    return start


@pytest.fixture
def fleets():
    """fleets(port) -> a TunnelFleet, stopped at teardown (before httpd,
    whose teardown would otherwise wait for the tunnels)."""
    made = []

    def make(port):
        fleet = TunnelFleet(port)
        made.append(fleet)
        return fleet
    yield make
    for fleet in made:
        fleet.stop()


def tunnel_metrics(h):
    """{(family, route, reason or None): value} of the tunnel metrics."""
    found = {}
    for family, route, reason, value in re.findall(
            r'^(gwe_balancer_member_tunnels|gwe_balancer_tunnels_closed_total)'
            r'\{balancer="gwe-ws",route="([^"]+)"(?:,reason="(\w+)")?\} (\d+)$',
            http_get(h.port, "/metrics").text, re.M):
        found[(family, route, reason or None)] = int(value)
    return found


def open_count(h, route):
    return tunnel_metrics(h)[("gwe_balancer_member_tunnels", route, None)]


def closed_count(h, route, reason):
    return tunnel_metrics(h)[("gwe_balancer_tunnels_closed_total", route,
                              reason)]


def server_closed(tunnels, since=0.0):
    return [t for t in tunnels if t.closed_by == "server" and t.closed >= since]


def recycled_since(fleet, visitors, since):
    """The tunnels of visitors the server closed since, once each of them
    saw one closed."""
    closes = [t for t in server_closed(fleet.snapshot(), since)
              if t.visitor in visitors]
    return closes if {t.visitor for t in closes} == set(visitors) else None


def assert_every_visitor_served(tunnels, node_of=lambda t: t.cookie_node):
    """No upgrade refused, every tunnel to the node expected, and every
    answer from it."""
    assert [t for t in tunnels if t.error] == []
    assert [t for t in tunnels if t.opened and t.node != node_of(t)] == []
    assert [t for t in tunnels if t.reply is not None and not t.talked] == []


def assert_spread(closes, what):
    """Closes spread over SPREAD, not all in one second."""
    times = sorted(t.closed for t in closes)
    assert times and times[-1] - times[0] >= 1.0, \
        "%s: %d closes within %.2f s" % (what, len(times),
                                         times[-1] - times[0])


def graceful_and_wait_for_old_generation(h):
    """A graceful restart; returns once every process of the old
    generation has exited (within GRACE + SPREAD + MARGIN)."""
    old = set(h.child_pids())
    h.graceful()
    wait_until(lambda: not old & set(h.child_pids()), GRACE + SPREAD + MARGIN,
               interval=0.1, what="the old generation's processes %s to exit"
               % sorted(old))


# ---------------------------------------------------------------------------
# Reloads.

@pytest.mark.parametrize("mpm, fallback_to_http", [
    ("worker", True), ("worker", False), ("event", True)])
def test_restarts_under_churn_recycle_tunnels_to_their_nodes(
        tunnels_httpd, fleets, nodes, mpm, fallback_to_http):
    h = tunnels_httpd(nodes[:2], evict="off", mpm=mpm,
                      fallback_to_http=fallback_to_http)
    fleet = fleets(h.port)
    long_lived = set(fleet.hold("GWE_Node_1", 50)
                     + fleet.hold("GWE_Node_2", 50))
    fleet.churn(["GWE_Node_1", "GWE_Node_2"], 40, (0.5, 2.5))
    restarts = 3
    for _ in range(restarts):
        fleet.wait_open(len(long_lived), long_lived)
        restarted_at = time.monotonic()
        graceful_and_wait_for_old_generation(h)
        # The old processes could exit: every long-lived tunnel was closed
        # (the client may take a moment to notice), once, spread out.
        closes = wait_until(lambda: recycled_since(fleet, long_lived,
                                                   restarted_at), 10,
                            what="the clients to see their tunnels closed")
        assert sorted(t.visitor for t in closes) == sorted(long_lived)
        assert_spread(closes, "restart")
    fleet.wait_open(len(long_lived), long_lived)
    tunnels = fleet.snapshot()
    assert_every_visitor_served(tunnels)
    assert len(tunnels) > 300        # hundreds of tunnels, churning
    # Every tunnel a client saw closed by the server was closed by the
    # recycle; a short visit that ended in the same moment counts only
    # there.
    recycled = sum(closed_count(h, node.name, "recycle")
                   for node in nodes[:2])
    seen = len(server_closed(tunnels))
    assert seen <= recycled <= len([t for t in tunnels if t.closed])
    assert sum(closed_count(h, node.name, "evict") for node in nodes[:2]) \
        == 0
    log = h.error_log()
    assert len(re.findall(r"GWB0301: a graceful restart ended generation "
                          r"\d+: closing this process's \d+ WebSocket "
                          r"tunnels over 3 s", log)) >= restarts
    assert "GWB0302" not in log


def test_processes_of_one_tunnel_each_spread_their_closes_too(
        tunnels_httpd, fleets, nodes):
    # Under prefork each process holds one tunnel, and spreads only its own:
    # a random offset per process spreads them all the same.
    h = tunnels_httpd(nodes[:2], evict="off", mpm="prefork")
    fleet = fleets(h.port)
    visitors = set(fleet.hold("GWE_Node_1", 10) + fleet.hold("GWE_Node_2", 10))
    fleet.wait_open(len(visitors))
    restarted_at = time.monotonic()
    graceful_and_wait_for_old_generation(h)
    closes = wait_until(lambda: recycled_since(fleet, visitors, restarted_at),
                        10, what="the clients to see their tunnels closed")
    assert sorted(t.visitor for t in closes) == sorted(visitors)
    assert_spread(closes, "prefork restart")
    fleet.wait_open(len(visitors))
    assert_every_visitor_served(fleet.snapshot())


def test_tunnels_count_across_generations_without_the_directives(
        tunnels_httpd, fleets, nodes):
    # Both off: nothing is closed, as before; the old generation's
    # tunnels still count after a graceful restart, and a process killed
    # with its tunnels leaves none counted.
    h = tunnels_httpd(nodes[:2], recycle="off", evict="off",
                      allow=[r"exit signal Killed"])
    fleet = fleets(h.port)
    first = set(fleet.hold("GWE_Node_1", 20) + fleet.hold("GWE_Node_2", 10))
    fleet.wait_open(30)
    assert open_count(h, "GWE_Node_1") == 20
    assert open_count(h, "GWE_Node_2") == 10
    old = set(h.child_pids())
    h.graceful()
    later = set(fleet.hold("GWE_Node_1", 5))
    fleet.wait_open(35)
    assert open_count(h, "GWE_Node_1") == 25
    assert server_closed(fleet.snapshot()) == []
    assert old & set(h.child_pids()), "the old generation left early"
    page = http_get(h.port, "/server-status").text
    assert re.search(r"<tr><td>gwe-ws</td><td>GWE_Node_1</td><td>25</td>"
                     r"<td>0</td><td>0</td></tr>", page)
    auto = http_get(h.port, "/server-status?auto").text
    assert "GWEBalancerTunnels gwe-ws GWE_Node_2 open: 10\n" in auto
    assert "GWEBalancerTunnels gwe-ws GWE_Node_2 closed-evict: 0\n" in auto
    # Kill a process holding tunnels: its visitors reconnect elsewhere,
    # and the counts follow.
    victim = next(p for p in old if p in h.child_pids())
    os.kill(victim, signal.SIGKILL)
    wait_until(lambda: server_closed(fleet.snapshot()), 10,
               what="the killed process's tunnels to close")
    fleet.wait_open(35, first | later)
    wait_until(lambda: open_count(h, "GWE_Node_1") == 25
               and open_count(h, "GWE_Node_2") == 10, 10,
               what="the counts of open tunnels to follow")
    fleet.stop()
    wait_until(lambda: open_count(h, "GWE_Node_1") == 0
               and open_count(h, "GWE_Node_2") == 0, 10,
               what="the counts to drop to 0")


# ---------------------------------------------------------------------------
# Node maintenance.

def take_out(h, node, how):
    """Take node out of both balancers: in balancer-manager ("disable",
    "stop"), or by failing its health check ("hcheck")."""
    if how == "hcheck":
        node.alive(False)
        return
    manager = BalancerManager(h.port)
    for balancer, scheme in (("gwe-ws", "ws"), ("gwe", "http")):
        manager.set_status(balancer, worker_url(node, scheme=scheme),
                           **{"disabled" if how == "disable" else "stopped":
                              True})


@pytest.mark.parametrize("fallback_to_http", [True, False])
def test_drain_keeps_tunnels_and_disable_evicts_them(
        tunnels_httpd, fleets, nodes, fallback_to_http):
    h = tunnels_httpd(nodes[:2], fallback_to_http=fallback_to_http)
    fleet = fleets(h.port)
    on_1 = set(fleet.hold("GWE_Node_1", 30))
    on_2 = set(fleet.hold("GWE_Node_2", 30))
    fleet.wait_open(60)
    manager = BalancerManager(h.port)
    # Drain: the node keeps the sessions it has, for as long as eviction
    # would have taken.
    for balancer, scheme in (("gwe-ws", "ws"), ("gwe", "http")):
        manager.drain(balancer, worker_url(nodes[1], scheme=scheme))
    time.sleep(GRACE + SPREAD + 2)
    assert server_closed(fleet.snapshot()) == []
    assert open_count(h, "GWE_Node_2") == 30
    # Disable: its tunnels close, spread out, and reconnect to node 1.
    disabled_at = time.monotonic()
    take_out(h, nodes[1], "disable")
    assert_evicted(h, fleet, on_1, on_2, disabled_at, "disabled")


@pytest.mark.parametrize("how, state", [("stop", "stopped"),
                                        ("hcheck", "hcheck_failed")])
def test_stopped_or_failing_member_is_evicted(tunnels_httpd, fleets, nodes,
                                              how, state):
    h = tunnels_httpd(nodes[:2], params=HCHECK if how == "hcheck" else "",
                      allow=[r"AH01114"] if how == "hcheck" else ())
    fleet = fleets(h.port)
    on_1 = set(fleet.hold("GWE_Node_1", 30))
    on_2 = set(fleet.hold("GWE_Node_2", 30))
    fleet.wait_open(60)
    taken_out_at = time.monotonic()
    take_out(h, nodes[1], how)
    assert_evicted(h, fleet, on_1, on_2, taken_out_at, state)


def assert_evicted(h, fleet, on_1, on_2, since, state):
    """Node 2's visitors' tunnels were closed within GRACE + SPREAD (and
    the time to notice), spread out, and are back on node 1; node 1's
    visitors kept theirs."""
    wait_until(lambda: len(server_closed(fleet.snapshot())) >= len(on_2),
               GRACE + SPREAD + MARGIN, interval=0.1,
               what="node 2's tunnels to be evicted")
    fleet.wait_open(len(on_1) + len(on_2))
    tunnels = fleet.snapshot()
    closes = server_closed(tunnels)
    assert sorted(t.visitor for t in closes) == sorted(on_2)
    assert all(t.closed >= since for t in closes)
    assert_spread(closes, "eviction")
    assert_every_visitor_served(tunnels, lambda t: "GWE_Node_1"
                                if t.visitor in on_2 and t.began > since
                                else t.cookie_node)
    assert [t for t in tunnels if t.visitor in on_1] == \
        fleet.open_tunnels(on_1)
    assert closed_count(h, "GWE_Node_2", "evict") == len(on_2)
    assert closed_count(h, "GWE_Node_1", "evict") == 0
    assert open_count(h, "GWE_Node_1") == len(on_1) + len(on_2)
    assert open_count(h, "GWE_Node_2") == 0
    assert re.search(r"GWB0302: balancer://gwe-ws: member GWE_Node_2 is "
                     r"%s: closing its \d+ WebSocket tunnels in this "
                     r"process over 3 s" % state, h.error_log())


def test_member_back_within_grace_keeps_its_tunnels(tunnels_httpd, fleets,
                                                     nodes):
    h = tunnels_httpd(nodes[:2], evict="3s 1s")
    fleet = fleets(h.port)
    fleet.hold("GWE_Node_2", 10)
    fleet.wait_open(10)
    manager = BalancerManager(h.port)
    ws2 = worker_url(nodes[1], scheme="ws")
    manager.disable("gwe-ws", ws2)
    manager.enable("gwe-ws", ws2)
    time.sleep(3 + 1 + 2)
    assert server_closed(fleet.snapshot()) == []
    assert "GWB0302" not in h.error_log()


# ---------------------------------------------------------------------------
# The directives.

@pytest.mark.parametrize("line, message", [
    ("GWEBalancerTunnelRecycle 60s",
     "GWEBalancerTunnelRecycle: takes GRACE SPREAD (two times, e.g. 60s "
     "120s) or off"),
    ("GWEBalancerTunnelEvict 10s 1x",
     "GWEBalancerTunnelEvict: '1x' is not a time"),
    ("GWEBalancerTunnelEvict -1 5", "'-1' is not a time"),
    ("<VirtualHost 127.0.0.1:1>\nGWEBalancerTunnelRecycle off\n"
     "</VirtualHost>",
     "GWEBalancerTunnelRecycle cannot occur within <VirtualHost> section"),
])
def test_bad_directive_stops_startup(httpd_factory, nodes, line, message):
    h = httpd_factory(gwe=True, modules=["proxy_wstunnel"])
    h.write_config(line + "\n" + twin_balancers(nodes))
    rc, out = h.start_expect_failure()
    assert rc != 0 and message in out, out


def test_directive_times_take_units(httpd_factory, nodes):
    h = httpd_factory(gwe=True, modules=["proxy_wstunnel"])
    h.write_config("GWEBalancerTunnelRecycle 2min 1h\n"
                   "GWEBalancerTunnelEvict 500ms 0\n"
                   "GWEBalancerTunnelEvict OFF\n" + twin_balancers(nodes))
    rc, out = h.configtest()
    assert rc == 0, out
