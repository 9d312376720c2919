"""Several balancers share nothing and agree: two instances of the shipped
configuration over the same two nodes, as behind an L4 balancer, VRRP or
DNS, route every cookie to the same node, so a visitor may reach either.

What they need not agree on: where a new visitor (no usable route) goes.
Each instance places those by its own least-busy and round-robin state,
so two instances may send the same new visitor to different nodes; the
node that answers sets the cookie, and from then on both agree.

What each instance keeps to itself: member flags set in balancer-manager
(drain, disable), error and health-check state, counters.  Health checks
run on each, so a failing node leaves both; a balancer-manager change
applies to the instance it was made on only."""

import pytest

from harness import (BalancerManager, ShippedHttpd, cometd_connect,
                     cometd_handshake, http_get, wait_until, worker_url,
                     ws_node)


@pytest.fixture
def two(tmp_path, module_so, make_node):
    nodes = [make_node("GWE_Node_1"), make_node("GWE_Node_2")]
    balancers = [ShippedHttpd(tmp_path / name, module_so, nodes)
                 for name in ("a", "b")]
    for h in balancers:
        h.start()
    yield balancers, nodes
    for h in balancers:
        h.stop()


def route_cookies(name):
    """Every way a node's route reaches the balancer."""
    return ["GWROUTEID=." + name,
            "GWEROUTEID=." + name,
            'GWROUTEID=".%s"' % name,
            'GWEROUTEID=".%s"' % name,
            "GWROUTEID=" + name,
            "visitor=1; GWROUTEID=.%s; lang=en" % name,
            # a stale host-only cookie for an unknown route beside the
            # domain cookie
            "GWROUTEID=.GWE_Node_9; GWROUTEID=.%s" % name]


def test_instances_agree_on_every_route(two):
    balancers, nodes = two
    for node in nodes:
        for cookie in route_cookies(node.name):
            got = [http_get(h.port, "/server/about", cookie=cookie).node
                   for h in balancers for _ in range(3)]
            assert got == [node.name] * 6, cookie
            got = [ws_node(h.port, cookie) for h in balancers]
            assert got == [node.name] * 2, cookie


def test_new_visitors_are_placed_by_each_instance(two):
    """No route: each instance spreads visitors by its own state: the
    least busy node, round robin among equals.  Only that both nodes get
    new visitors is asserted, not how many each: a member stays busy
    until httpd has finished the request after answering, so on a slow
    run the next visitor may find the last one's node still busy."""
    balancers, nodes = two
    for h in balancers:
        got = [http_get(h.port, "/server/about").node for _ in range(4)]
        assert set(got) == {"GWE_Node_1", "GWE_Node_2"}


def test_a_session_survives_switching_instances(two):
    """A visitor whose connections alternate between the instances (as an
    L4 balancer or DNS may do) keeps its CometD session: handshake on one,
    every connect on either."""
    balancers, nodes = two
    for first in range(2):
        client_id, cookie = cometd_handshake(balancers[first].port)
        for i in range(6):
            h = balancers[(first + i) % 2]
            assert cometd_connect(h.port, client_id, cookie) is True


def test_health_checks_on_each_instance_keep_them_consistent(two):
    balancers, nodes = two
    for h in balancers:
        h.allow(r"AH01114")     # hcheck could not reach a node marked down
    nodes[1].alive(False)

    def both_fail_over():
        return all(http_get(h.port, "/server/about",
                            cookie="GWROUTEID=.GWE_Node_2").node ==
                   "GWE_Node_1" for h in balancers)
    # hcinterval=5, hcfails=2, on each instance.
    wait_until(both_fail_over, 20, interval=0.5,
               what="GWE_Node_2 to leave both instances")
    nodes[1].alive(True)
    wait_until(lambda: all(http_get(h.port, "/server/about",
                                    cookie="GWROUTEID=.GWE_Node_2").node ==
                           "GWE_Node_2" for h in balancers),
               20, interval=0.5, what="GWE_Node_2 to rejoin both")


def test_balancer_manager_changes_one_instance_only(two):
    """Draining a node in one instance's balancer-manager leaves the other
    untouched: apply such changes on every instance."""
    balancers, nodes = two
    a, b = balancers
    BalancerManager(a.port).drain("gwe", worker_url(nodes[0]))
    assert {http_get(a.port, "/server/about").node for _ in range(4)} == \
        {"GWE_Node_2"}
    assert sorted(http_get(b.port, "/server/about").node
                  for _ in range(4)) == ["GWE_Node_1"] * 2 + \
        ["GWE_Node_2"] * 2
    # Drain keeps existing sessions: the routes still agree.
    for h in balancers:
        assert http_get(h.port, "/server/about",
                        cookie="GWROUTEID=.GWE_Node_1").node == "GWE_Node_1"
    assert BalancerManager(b.port).member(
        "gwe", worker_url(nodes[0]))["status"].split() == ["Init", "Ok"]
