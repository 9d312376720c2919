"""gwesticky's routing rules, through a real httpd to real demo GWE nodes.

Each test starts its own httpd (the built module loaded) in front of three
demo nodes, GWE_Node_1..3, and asserts on which node answered (the node's
X-GWE-Node header), on what the access log recorded and on error_log.
"""

import re
import signal
import threading

import pytest

from harness import (CONNECT_ERRORS, PROXYPASS, REPO_DIR, BalancerManager,
                     balancer_block, balancer_manager_block, cometd_connect,
                     cometd_handshake, free_port, h2c_get, http_get,
                     route_cookie, wait_until, worker_url)


# GWB0204, for tests that send routes no member carries.
UNKNOWN_ROUTES = (r"GWB0204: balancer://gwe: visitors present routes that "
                  r"no member carries: ")


@pytest.fixture
def gwe(httpd_factory):
    """gwe(nodes, ...) -> a started httpd balancing /server over nodes."""
    def start(nodes, proxyset="", params=None, lbmethod="gwesticky",
              extra="", loglevel="warn", modules=None, allow=()):
        h = httpd_factory(gwe=True, loglevel=loglevel)
        for rx in allow:
            h.allow(rx)
        h.write_config(extra + balancer_manager_block()
                       + balancer_block("gwe", nodes, lbmethod, proxyset,
                                        params or "")
                       + PROXYPASS, modules=modules)
        h.start()
        return h
    return start


def answers(h, cookie, n=10, path="/server/about"):
    """The nodes that answered n GETs carrying cookie (all must be 200)."""
    names = []
    for _ in range(n):
        r = http_get(h.port, path, cookie=cookie)
        assert r.status == 200, (cookie, r, r.text[:300])
        names.append(r.node)
    return names


def server_entries(h, count):
    """The access log entries of the first count /server requests (the
    harness's own readiness probes are left out)."""

    def entries():
        found = [e for e in h.access_entries()
                 if e["request"].split(" ")[1].startswith("/server")]
        return found if len(found) >= count else None
    return wait_until(entries, 5, what="%d /server log lines" % count)


def last_entry(h, count):
    """The entry of the count-th /server request."""
    return server_entries(h, count)[count - 1]


# ---------------------------------------------------------------------------
# The cookie
# ---------------------------------------------------------------------------

def test_each_nodes_cookie_reaches_that_node(gwe, nodes):
    h = gwe(nodes)
    for node in nodes:
        assert answers(h, route_cookie(node)) == [node.name] * 10
    entry = last_entry(h, 30)
    assert entry["decision"] == "sticky"
    assert entry["session_route"] == "GWE_Node_3"
    assert entry["route_changed"] == "-"


def test_the_node_sets_the_cookie_the_balancer_reads(gwe, nodes):
    h = gwe(nodes)
    r = http_get(h.port, "/server/about")
    cookie = r.set_cookies[0].split(";")[0]
    assert cookie == "GWROUTEID=." + r.node
    assert answers(h, cookie) == [r.node] * 10


def test_misspelled_cookie_name_of_genesys_sample(gwe, nodes):
    h = gwe(nodes)
    assert answers(h, route_cookie(nodes[1], "GWEROUTEID")) == \
        ["GWE_Node_2"] * 10
    entry = last_entry(h, 10)
    assert entry["decision"] == "sticky"


def test_value_forms(gwe, nodes):
    h = gwe(nodes)
    for cookie in ['GWROUTEID=".GWE_Node_2"',       # quoted
                   'GWROUTEID=GWE_Node_2',          # without the dot
                   'GWROUTEID = .GWE_Node_2 ',      # blanks
                   'a=1, GWROUTEID=.GWE_Node_2',    # joined with ", "
                   'a=1;GWROUTEID=.GWE_Node_2;b=2']:
        assert answers(h, cookie, 3) == ["GWE_Node_2"] * 3, cookie


def test_repeated_cookie_headers(gwe, nodes):
    h = gwe(nodes)
    r = http_get(h.port, "/server/about",
                 cookie=["a=1", "GWROUTEID=.GWE_Node_3"])
    assert r.node == "GWE_Node_3"


def test_route_matches_exactly(gwe, make_node, nodes):
    # A member routed GWE_Node_10 must never take GWE_Node_1's visitors.
    ten = make_node("GWE_Node_10")
    h = gwe([nodes[0], ten])
    assert answers(h, "GWROUTEID=.GWE_Node_10") == ["GWE_Node_10"] * 10
    assert answers(h, "GWROUTEID=.GWE_Node_1") == ["GWE_Node_1"] * 10
    assert "GWE_Node_10" not in answers(h, "XGWROUTEID=.GWE_Node_10; "
                                        "GWROUTEIDX=.GWE_Node_10; "
                                        "GWROUTEID=.GWE_Node_1")


def test_stale_cookie_first_then_live_one(gwe, nodes):
    # A stale host-only cookie (its node disabled) and an unknown route
    # before the visitor's current domain cookie.
    h = gwe(nodes, params={"GWE_Node_1": "status=+D"})
    cookie = ("GWROUTEID=.GWE_Node_1; GWROUTEID=.GWE_Node_9; "
              "GWROUTEID=.GWE_Node_3")
    assert answers(h, cookie) == ["GWE_Node_3"] * 10
    assert last_entry(h, 10)["decision"] == "sticky"


def test_first_name_wins_over_misspelled_one(gwe, nodes):
    h = gwe(nodes)
    cookie = "GWEROUTEID=.GWE_Node_1; GWROUTEID=.GWE_Node_2"
    assert answers(h, cookie) == ["GWE_Node_2"] * 10


# ---------------------------------------------------------------------------
# No usable route: the fallback
# ---------------------------------------------------------------------------

def test_no_cookie_spreads_over_all_nodes(gwe, nodes):
    h = gwe(nodes)
    got = answers(h, None, 30)
    # Idle nodes tie on load, and ties go round robin.
    assert sorted(got.count(n.name) for n in nodes) == [10, 10, 10], got
    entry = last_entry(h, 30)
    assert entry["decision"] == "new"
    assert entry["session_route"] == "-"
    assert entry["route_changed"] == "-"


def test_fallback_is_weighted_by_loadfactor(gwe, nodes):
    h = gwe(nodes, params={"GWE_Node_1": "loadfactor=2"})
    got = answers(h, None, 40)
    # 20/10/10 exactly when every request has left its member (busy back
    # to 0) before the next arrives; on a loaded machine the client can be
    # faster than httpd's post_request, and the least busy one wins.  An
    # unweighted spread would give about 14/13/13.
    counts = [got.count(n.name) for n in nodes]
    assert 18 <= counts[0] <= 22 and all(8 <= c <= 12 for c in counts[1:]), \
        got


def test_fallback_prefers_the_least_busy_node(gwe, nodes):
    # Two long requests in flight on the node they were sent to: a new
    # visitor goes elsewhere.
    h = gwe(nodes[:2])
    slow = [threading.Thread(target=http_get, args=(h.port,
            "/server/slow?ms=1500"), kwargs={"cookie": route_cookie(nodes[0])})
            for _ in range(2)]
    for t in slow:
        t.start()
    try:
        # Wait until both are in flight on node 1 (its counter says so).
        wait_until(lambda: nodes[0].stats()["requests"] >= 2, 5,
                   what="two slow requests on node 1")
        assert answers(h, None, 4) == ["GWE_Node_2"] * 4
    finally:
        for t in slow:
            t.join()


def test_unknown_route(gwe, nodes):
    h = gwe(nodes, allow=[UNKNOWN_ROUTES])
    got = answers(h, "GWROUTEID=.GWE_Node_9", 6)
    assert set(got) <= {n.name for n in nodes}
    entry = last_entry(h, 6)
    assert entry["decision"] == "unknown-route"
    assert entry["session_route"] == "GWE_Node_9"
    assert entry["route_changed"] == "1"
    # Once (test_route_warnings.py has the rest).
    assert len(re.findall(UNKNOWN_ROUTES + r"'GWE_Node_9'; ",
                          h.error_log())) == 1


def test_route_longer_than_httpds_route_field(gwe, make_node):
    # httpd keeps route= in 64 bytes: 63 characters fit, 64 never match.
    long63 = make_node("N" * 63)
    other = make_node("GWE_Node_2")
    h = gwe([long63, other], allow=[UNKNOWN_ROUTES])
    assert answers(h, "GWROUTEID=." + "N" * 63, 4) == ["N" * 63] * 4
    for length in (64, 65, 300):
        r = http_get(h.port, "/server/about",
                     cookie="GWROUTEID=." + "N" * length)
        assert r.status == 200
    # Log lines of requests in a row can come out of order (each is
    # written after its response is sent): count them instead.
    decisions = sorted(e["decision"] for e in server_entries(h, 7))
    assert decisions == ["sticky"] * 4 + ["unknown-route"] * 3
    # GWB0204 shows a route too long for route= as cut, and never likens
    # it to the member whose route is its first 63 characters.
    warning, = [line for line in h.error_log().splitlines()
                if "GWB0204" in line]
    assert "'%s'... (64 bytes, longer than any route= can be)" % ("N" * 63) \
        in warning
    assert "differs only in case" not in warning


def test_other_lbmethod_as_fallback(gwe, nodes):
    h = gwe(nodes, extra="GWEBalancerFallback byrequests\n",
            params={"GWE_Node_1": "loadfactor=2"})
    got = answers(h, None, 40)
    assert [got.count(n.name) for n in nodes] == [20, 10, 10], got
    assert answers(h, route_cookie(nodes[2]), 5) == ["GWE_Node_3"] * 5


# ---------------------------------------------------------------------------
# Member states
# ---------------------------------------------------------------------------

def test_draining_member_keeps_its_visitors_and_gets_no_new_ones(gwe, nodes):
    h = gwe(nodes, params={"GWE_Node_1": "status=+N"})
    assert answers(h, route_cookie(nodes[0])) == ["GWE_Node_1"] * 10
    assert "GWE_Node_1" not in answers(h, None, 20)


def test_disabled_member_fails_over(gwe, nodes):
    h = gwe(nodes, params={"GWE_Node_1": "status=+D"})
    r = http_get(h.port, "/server/about", cookie=route_cookie(nodes[0]))
    assert r.status == 200 and r.node in ("GWE_Node_2", "GWE_Node_3")
    # The new node hands out its own cookie, which then sticks.
    new_cookie = r.set_cookies[0].split(";")[0]
    assert new_cookie == "GWROUTEID=." + r.node
    entry = last_entry(h, 1)
    assert entry["decision"] == "failover"
    assert entry["route_changed"] == "1"
    assert entry["session_route"] == "GWE_Node_1"
    assert answers(h, new_cookie, 5) == [r.node] * 5


def test_hot_standby_takes_no_new_visitors_while_others_serve(gwe, nodes):
    h = gwe(nodes, params={"GWE_Node_3": "status=+H"})
    assert "GWE_Node_3" not in answers(h, None, 12)


def test_killed_node_fails_over_without_error(gwe, nodes):
    h = gwe(nodes, allow=CONNECT_ERRORS)
    assert answers(h, route_cookie(nodes[1]), 2) == ["GWE_Node_2"] * 2
    nodes[1].signal(signal.SIGKILL)
    # The first GET finds the node dead, marks it in error and is retried
    # on a live node: the visitor sees no error.
    for _ in range(5):
        r = http_get(h.port, "/server/about", cookie=route_cookie(nodes[1]))
        assert r.status == 200 and r.node in ("GWE_Node_1", "GWE_Node_3")
    decisions = [e["decision"] for e in server_entries(h, 7)[2:]]
    assert decisions == ["failover"] * 5


def test_node_back_after_retry(gwe, nodes):
    h = gwe(nodes[:2], params={n.name: "retry=1" for n in nodes},
            allow=CONNECT_ERRORS)
    nodes[1].signal(signal.SIGKILL)
    r = http_get(h.port, "/server/about", cookie=route_cookie(nodes[1]))
    assert r.node == "GWE_Node_1"
    nodes[1].restart()

    def back():
        return http_get(h.port, "/server/about",
                        cookie=route_cookie(nodes[1])).node == "GWE_Node_2"
    wait_until(back, 10, interval=0.2, what="GWE_Node_2 back after retry=1")


def test_nofailover_answers_503(gwe, nodes):
    h = gwe(nodes, proxyset="nofailover=On",
            params={"GWE_Node_1": "status=+D"},
            allow=[r"GWB0202: balancer://gwe: member for route GWE_Node_1 "
                   r"is unusable", r"AH01170"])
    r = http_get(h.port, "/server/about", cookie=route_cookie(nodes[0]))
    assert r.status == 503
    assert last_entry(h, 1)["decision"] == "nofailover"
    # Visitors of other nodes and new visitors are served as usual.
    assert answers(h, route_cookie(nodes[1]), 3) == ["GWE_Node_2"] * 3
    assert "GWE_Node_1" not in answers(h, None, 6)
    assert "GWB0202" in h.error_log()


def test_redirect_of_unusable_member(gwe, nodes):
    h = gwe(nodes, params={"GWE_Node_1": "status=+D redirect=GWE_Node_3"})
    assert answers(h, route_cookie(nodes[0])) == ["GWE_Node_3"] * 10
    entry = last_entry(h, 10)
    assert entry["decision"] == "redirect"
    assert entry["route_changed"] == "1"


def test_redirect_is_ignored_while_member_is_usable(gwe, nodes):
    h = gwe(nodes, params={"GWE_Node_1": "redirect=GWE_Node_3"})
    assert answers(h, route_cookie(nodes[0]), 5) == ["GWE_Node_1"] * 5


# ---------------------------------------------------------------------------
# Run time changes
# ---------------------------------------------------------------------------

def test_member_added_in_balancer_manager(gwe, nodes):
    h = gwe(nodes[:2], proxyset="growth=2", allow=[UNKNOWN_ROUTES])
    manager = BalancerManager(h.port)
    assert http_get(h.port, "/server/about",
                    cookie=route_cookie(nodes[2])).node != "GWE_Node_3"
    manager.add_member("gwe", worker_url(nodes[2]), route="GWE_Node_3")
    assert answers(h, route_cookie(nodes[2])) == ["GWE_Node_3"] * 10


def test_route_edited_in_balancer_manager(gwe, nodes):
    h = gwe(nodes)
    manager = BalancerManager(h.port)
    manager.set_route("gwe", worker_url(nodes[2]), "GWE_Node_Renamed")
    assert answers(h, "GWROUTEID=.GWE_Node_Renamed", 5) == ["GWE_Node_3"] * 5


def test_member_disabled_in_balancer_manager(gwe, nodes):
    h = gwe(nodes)
    manager = BalancerManager(h.port)
    manager.disable("gwe", worker_url(nodes[0]))
    got = answers(h, route_cookie(nodes[0]), 5)
    assert "GWE_Node_1" not in got
    manager.enable("gwe", worker_url(nodes[0]))
    assert answers(h, route_cookie(nodes[0]), 5) == ["GWE_Node_1"] * 5


# ---------------------------------------------------------------------------
# Beside httpd's own sticky code
# ---------------------------------------------------------------------------

def test_seed_typo_config_still_routes_by_gwrouteid(gwe, nodes):
    h = gwe(nodes, proxyset="stickysession=GWEROUTEID",
            allow=[r"GWB0101: balancer://gwe: stickysession=GWEROUTEID"])
    assert answers(h, route_cookie(nodes[1])) == ["GWE_Node_2"] * 10
    assert answers(h, route_cookie(nodes[2], "GWEROUTEID"), 5) == \
        ["GWE_Node_3"] * 5
    assert len(re.findall(r"GWB0101", h.error_log())) == 1


def test_builtin_sticky_and_gwesticky_together(gwe, nodes):
    h = gwe(nodes, proxyset="stickysession=GWROUTEID",
            params={"GWE_Node_1": "status=+D"})
    assert answers(h, route_cookie(nodes[1])) == ["GWE_Node_2"] * 10
    # httpd's sticky code finds node 1 unusable and asks the finder, which
    # fails over; a quoted cookie, which httpd's code cannot read, sticks.
    assert "GWE_Node_1" not in answers(h, route_cookie(nodes[0]), 5)
    assert answers(h, 'GWROUTEID=".GWE_Node_3"', 5) == ["GWE_Node_3"] * 5


def test_seed_typo_without_gwesticky_is_warned(httpd_factory, nodes):
    h = httpd_factory(gwe=True)
    h.allow(r"GWB0102")
    h.write_config(balancer_block("gwe", nodes, "byrequests",
                                  "stickysession=GWEROUTEID") + PROXYPASS)
    h.start()
    assert re.search(r"\[gwe_balancer:warn\] .*GWB0102: balancer://gwe: "
                     r"stickysession=GWEROUTEID .* set lbmethod=gwesticky",
                     h.error_log())


# ---------------------------------------------------------------------------
# HTTP/2
# ---------------------------------------------------------------------------

def test_http2_cookie_crumbs(gwe, nodes):
    h = gwe(nodes, extra="Protocols h2c http/1.1\n", modules=["http2"])
    for node in nodes:
        r = h2c_get(h.port, "/server/about",
                    cookies=["a=1", route_cookie(node), "b=2"])
        assert r.status == 200 and r.node == node.name
        assert r.version == "HTTP/2"
    assert server_entries(h, 3)[2]["protocol"] == "HTTP/2.0"


# ---------------------------------------------------------------------------
# Hostile cookies
# ---------------------------------------------------------------------------

HOSTILE = [
    "GWROUTEID=", "GWROUTEID=.", "GWROUTEID=..", 'GWROUTEID="',
    'GWROUTEID=".GWE_Node_1', 'GWROUTEID=""', "GWROUTEID", "=.", "=",
    "=..", '="', "GWROUTEID=.GWE_Node_1; GWROUTEID",
    ";;;,,,", "GWROUTEID=.GWE_Node_1\x01\x02", "GWROUTEID=.\x7f\x1b[31m",
    "GWROUTEID=.%00GWE_Node_1", "GWROUTEID=.\xff\xfe\xe9",
    "GWROUTEID=." + "A" * 8000,
    "; ".join(["k=v"] * 1000),                      # 1,000 cookies
    "; ".join("GWROUTEID=.x%d" % i for i in range(100)),
    "GWROUTEID=.GWE_Node_1" + "\t" * 50 + ";",
    "GWROUTEID=%s" % ("\"" * 500),
]


def test_hostile_cookies_get_a_normal_decision(gwe, nodes):
    # httpd's default HttpProtocolOptions Strict answers 400 to control
    # characters in a header before any module sees it; Unsafe lets them
    # through to the finder, which is what this test is about.
    h = gwe(nodes, loglevel="warn gwe_balancer:trace1",
            extra="HttpProtocolOptions Unsafe\n", allow=[UNKNOWN_ROUTES])
    for cookie in HOSTILE:
        r = http_get(h.port, "/server/about", cookie=cookie)
        assert r.status == 200, (cookie[:80], r)
    # Close to LimitRequestFieldSize (8190): answered by httpd, never 5xx.
    r = http_get(h.port, "/server/about",
                 cookie="GWROUTEID=." + "B" * 8150)
    assert r.status in (200, 400), r
    log = h.error_log()
    assert not re.search(r"segfault|exit signal", log)
    # Client bytes reach the log only escaped.
    assert "\x01" not in log and "\x1b" not in log
    assert "\\x01\\x02" in log


def test_strict_httpd_refuses_control_characters_before_us(gwe, nodes):
    h = gwe(nodes)
    r = http_get(h.port, "/server/about", cookie="GWROUTEID=.GWE_Node_1\x01")
    assert r.status == 400 and r.node is None


def test_decisions_are_logged_at_debug(gwe, nodes):
    h = gwe(nodes, loglevel="warn gwe_balancer:debug",
            params={"GWE_Node_1": "status=+D"})
    http_get(h.port, "/server/about", cookie=route_cookie(nodes[1]))
    http_get(h.port, "/server/about", cookie=route_cookie(nodes[0]))
    http_get(h.port, "/server/about")
    log = h.error_log()
    assert re.search(r"GWB0201: balancer://gwe: GWROUTEID route "
                     r"'GWE_Node_2' -> GWE_Node_2 \(sticky\)", log)
    assert re.search(r"GWB0201: balancer://gwe: GWROUTEID route "
                     r"'GWE_Node_1' -> GWE_Node_[23] \(failover\)", log)
    assert re.search(r"GWB0201: balancer://gwe: no route cookie -> "
                     r"GWE_Node_[123] \(new\)", log)


def test_no_routing_log_at_default_level(gwe, nodes):
    h = gwe(nodes)
    http_get(h.port, "/server/about", cookie="GWROUTEID=.secret\x01")
    assert "GWB0201" not in h.error_log()
    assert "secret" not in h.error_log()


# ---------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------

def test_cookie_names_directive(gwe, nodes):
    h = gwe(nodes, extra="GWEBalancerCookie SITEROUTE\n")
    assert answers(h, "GWROUTEID=.GWE_Node_1; SITEROUTE=.GWE_Node_2", 5) == \
        ["GWE_Node_2"] * 5
    # GWROUTEID alone no longer counts: new visitors, spread over all.
    got = answers(h, route_cookie(nodes[0]), 9)
    assert sorted(got) == sorted([n.name for n in nodes] * 3)
    assert last_entry(h, 14)["decision"] == "new"


def test_cookie_names_in_a_virtual_host(httpd_factory, nodes):
    h = httpd_factory(gwe=True)
    vport = free_port()
    # A ProxyPass in a virtual host needs the balancer defined there too:
    # httpd would otherwise define an empty byrequests one of that name.
    h.write_config(
        balancer_block("gwe", nodes) + PROXYPASS +
        '<VirtualHost 127.0.0.1:%d>\n'
        '    GWEBalancerCookie SITEROUTE\n%s%s'
        '</VirtualHost>\n' % (vport, balancer_block("gwe", nodes), PROXYPASS),
        extra_listen=[vport])
    h.start()
    assert http_get(vport, "/server/about",
                    cookie="SITEROUTE=.GWE_Node_3").node == "GWE_Node_3"
    assert http_get(vport, "/server/about",
                    cookie="SITEROUTE=.GWE_Node_2; GWROUTEID=.GWE_Node_1"
                    ).node == "GWE_Node_2"
    # The main server keeps the default names.
    assert http_get(h.port, "/server/about",
                    cookie="SITEROUTE=.GWE_Node_2; GWROUTEID=.GWE_Node_1"
                    ).node == "GWE_Node_1"


def test_members_without_route_or_with_duplicate_routes_are_warned(
        httpd_factory, nodes):
    h = httpd_factory(gwe=True)
    h.allow(r"GWB0103")
    h.allow(r"GWB0104")
    h.write_config(
        '<Proxy "balancer://gwe">\n'
        '    BalancerMember "%s" route=GWE_Node_1\n'
        '    BalancerMember "%s" route=GWE_Node_1\n'
        '    BalancerMember "%s"\n'
        '    ProxySet lbmethod=gwesticky\n'
        '</Proxy>\n' % tuple(worker_url(n) for n in nodes) + PROXYPASS)
    h.start()
    log = h.error_log()
    assert len(re.findall(r"GWB0103: balancer://gwe: member %s has no "
                          r"route=" % re.escape(worker_url(nodes[2])),
                          log)) == 1
    assert len(re.findall(r"GWB0104: balancer://gwe: members .* both have "
                          r"route=GWE_Node_1", log)) == 1


def test_cometd_sessions_stay_on_their_node(gwe, nodes):
    h = gwe(nodes)
    assert cometd_visitors(h, 6, 5) == 30


# ---------------------------------------------------------------------------
# The checks above can fail: plain byrequests breaks them
# ---------------------------------------------------------------------------

def cometd_visitors(h, visitors, polls):
    """Browsers doing CometD long-polling through the balancer: handshake
    without a cookie, keep the cookie the node sets, then connect polls
    times.  Returns how many connects succeeded."""
    json_type = {"Content-Type": "application/json"}
    ok = 0
    for _ in range(visitors):
        client_id, cookie = cometd_handshake(h.port, headers=json_type)
        ok += sum(cometd_connect(h.port, client_id, cookie, headers=json_type)
                  for _ in range(polls))
    return ok


def test_stickiness_checks_fail_without_gwesticky(gwe, nodes):
    h = gwe(nodes, lbmethod="byrequests")
    assert cometd_visitors(h, 6, 5) < 30
    with pytest.raises(AssertionError):
        assert answers(h, route_cookie(nodes[1])) == ["GWE_Node_2"] * 10


def test_version_at_startup_and_in_server_status(httpd_factory, nodes):
    version = re.search(r'#define GWB_VERSION "([^"]+)"',
                        open(REPO_DIR / "mod_gwe_balancer.h").read()).group(1)
    h = httpd_factory(gwe=True)
    h.write_config("ServerTokens Full\n"
                   '<Location "/server-status">\n'
                   "    SetHandler server-status\n"
                   "    Require ip 127.0.0.1\n"
                   "</Location>\n" + balancer_block("gwe", nodes) + PROXYPASS)
    h.start()
    assert len(re.findall(r"\[gwe_balancer:notice\] .*GWB0003: "
                          r"mod_gwe_balancer/%s " % re.escape(version),
                          h.error_log())) == 1
    status = http_get(h.port, "/server-status").text
    assert "mod_gwe_balancer/" + version in status


def test_vhost_proxypass_to_a_main_server_balancer_is_warned(httpd_factory,
                                                             nodes):
    h = httpd_factory(gwe=True)
    h.allow(r"GWB0109")
    vport = free_port()
    h.write_config(balancer_block("gwe", nodes) + PROXYPASS +
                   '<VirtualHost 127.0.0.1:%d>\n'
                   '    ProxyPass "/server" "balancer://gwe"\n'
                   '</VirtualHost>\n' % vport, extra_listen=[vport])
    h.start()
    assert re.search(r"GWB0109: balancer://gwe in virtual host .*:%d uses "
                     r"lbmethod byrequests, but the main server's uses "
                     r"gwesticky; put the <Proxy \"balancer://gwe\"> block "
                     r"inside that <VirtualHost> too" % vport, h.error_log())
