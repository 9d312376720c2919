"""GWB0204: visitors presenting routes that no member carries, warned at
most once a minute per balancer across all child processes, naming up to 4
of the routes and the members' routes.

One httpd for the module, one balancer per test: each balancer has its own
minute, so each test sees its balancer's first warning.
"""

import http.client
import random
import re
import socket
import threading
import time

import pytest

from harness import (MANY_CHILDREN, balancer_block, http_get, route_cookie,
                     wait_until)

# A balancer per test, at /NAME.
BALANCERS = ("case", "good", "flood", "slow")
WARNED = r"GWB0204: balancer://(case|flood|slow): "
# The longest route a member can carry (httpd's route field holds 64 bytes
# with the NUL); a visitor's longer route is logged cut to this.
MAX_ROUTE = 63


@pytest.fixture(scope="module")
def h(module_httpd_factory, module_nodes):
    """/case: GWE_Node_2's member says route=GWE_node_2 (lowercase n);
    /good, /flood and /slow: members as the nodes name themselves."""
    n1, n2, _ = module_nodes
    body = balancer_block("case", [n1, ("GWE_node_2", n2.port)])
    for name in BALANCERS[1:]:
        body += balancer_block(name, [n1, n2])
    for name in BALANCERS:
        body += 'ProxyPass "/%s" "balancer://%s"\n' % (name, name)
    httpd = module_httpd_factory(gwe=True)
    httpd.allow(WARNED)
    httpd.write_config(MANY_CHILDREN + body)
    return httpd.start()


def warnings(h, balancer):
    return [line for line in h.error_log().splitlines()
            if "GWB0204: balancer://%s: " % balancer in line]


def test_route_differing_in_case_is_warned(h, module_nodes):
    node2 = module_nodes[1]
    # The cookie GWE_Node_2 itself sets.
    cookie = node2.get("/server/about").set_cookies[0].split(";")[0]
    assert cookie == route_cookie(node2) == "GWROUTEID=.GWE_Node_2"
    for _ in range(20):
        assert http_get(h.port, "/case/about", cookie=cookie).status == 200
    line, = warnings(h, "case")
    assert "[gwe_balancer:warn]" in line
    assert ("visitors present routes that no member carries: 'GWE_Node_2' "
            "(member route GWE_node_2 differs only in case); ") in line
    assert "the members' routes GWE_Node_1, GWE_node_2 " in line
    assert "(unknown-route decisions since start: 1;" in line


def test_correct_traffic_never_warns(h, module_nodes):
    n1, n2, _ = module_nodes
    # Browsers: no cookie first, then the one their node set.
    for _ in range(10):
        first = http_get(h.port, "/good/about")
        cookie = first.set_cookies[0].split(";")[0]
        for _ in range(3):
            again = http_get(h.port, "/good/about", cookie=cookie)
            assert again.node == first.node
    for node in (n1, n2):
        assert http_get(h.port, "/good/about",
                        cookie=route_cookie(node)).node == node.name
    assert warnings(h, "good") == []


def random_routes(rng, prefix, n):
    """n routes: prefix and a number, then up to 74 random printable ASCII
    characters, blanks, quotes, ; and , among them (control characters
    httpd refuses itself, with 400).  The numbered start lets a warning's
    routes be counted."""
    return ["%s%05d" % (prefix, i)
            + "".join(chr(rng.randint(0x20, 0x7e))
                      for _ in range(rng.randint(0, 74)))
            for i in range(n)]


def send_routes(h, path, routes, visitors=8):
    """GET path once per route (GWROUTEID=.<route>), visitors at once, a
    connection a request (httpd starts and stops children under this load,
    and a child that stops closes its idle keep-alive connections);
    returns what was not a 200."""
    failures = []

    def visitor(share):
        for route in share:
            try:
                status = http_get(h.port, path,
                                  cookie="GWROUTEID=." + route).status
            except (OSError, http.client.HTTPException) as e:
                status = repr(e)
            if status != 200:
                failures.append((route, status))
    threads = [threading.Thread(target=visitor, args=(routes[i::visitors],))
               for i in range(visitors)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return failures


def test_random_routes_are_warned_at_most_once_a_minute(h):
    """10,000 made-up routes: a line at the first, then at most one a
    minute; a minute after the last, a burst from every child process
    makes exactly one more.  Takes a minute."""
    assert http_get(h.port, "/flood/about",
                    cookie="GWROUTEID=.x").status == 200
    probed = time.time()
    first, = warnings(h, "flood")
    seed = random.randrange(1 << 32)
    rng = random.Random(seed)

    start = time.monotonic()
    assert send_routes(h, "/flood/about",
                       random_routes(rng, "f", 10000)) == [], seed
    flooded = time.time()
    lines = warnings(h, "flood")
    assert lines[0] == first and "'x'" in first
    assert len(lines) <= 1 + int(time.monotonic() - start) // 60 + 1, lines

    last = probed if len(lines) == 1 else flooded
    wait_until(lambda: time.time() >= last + 61, 90, interval=0.5,
               what="a minute after the last GWB0204")
    assert send_routes(h, "/flood/about",
                       random_routes(rng, "b", 400)) == [], seed
    assert len(warnings(h, "flood")) == len(lines) + 1
    assert len({e["pid"] for e in h.access_entries()
                if "GWROUTEID=.b" in e["cookie"]}) > 1, \
        "the burst went to one child process"

    # A line names at most 4 routes, each cut to MAX_ROUTE characters and
    # quoted, its quotes and backslashes escaped by httpd (2 bytes each);
    # 20 more for longer numbers (pid, count) than the first line's.
    newest = warnings(h, "flood")[-1]
    assert 1 <= len(re.findall(r"'[fb]\d{5}", newest)) <= 4, newest
    bound = len(first) - len("'x'") + 4 * (2 + 2 * MAX_ROUTE) + 3 * 2 + 20
    assert all(len(line) <= bound for line in warnings(h, "flood")), bound


def next_second(t):
    """Wait until the clock is past t's second and the next one."""
    wait_until(lambda: time.time() >= int(t) + 2, 5, interval=0.05,
               what="the second after next")


def test_request_begun_before_the_last_warning_does_not_warn_again(h):
    """A request whose request line came before another process warned is
    still within that warning's minute (its start time is earlier)."""
    with socket.create_connection(("127.0.0.1", h.port), timeout=10) as slow:
        slow.sendall(b"GET /slow/about HTTP/1.1\r\n")
        next_second(time.time())
        assert http_get(h.port, "/slow/about",
                        cookie="GWROUTEID=.first").status == 200
        slow.sendall(b"Host: 127.0.0.1\r\nCookie: GWROUTEID=.second\r\n"
                     b"Connection: close\r\n\r\n")
        reply = b""
        while chunk := slow.recv(4096):
            reply += chunk
    assert reply.startswith(b"HTTP/1.1 200 ")

    def start_times():
        found = {e["cookie"]: int(e["time"]) for e in h.access_entries()
                 if e["request"].startswith("GET /slow/")}
        return found if len(found) == 2 else None
    times = wait_until(start_times, 5, what="2 /slow log lines")
    assert times["GWROUTEID=.second"] < times["GWROUTEID=.first"], \
        "the slow request must have begun a second before the other"
    line, = warnings(h, "slow")
    assert "carries: 'first'; " in line
