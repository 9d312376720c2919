"""Routing counters: per balancer and per route, since start, in shared
memory across httpd's child processes, shown by mod_status at
/server-status (human page and ?auto).  Known traffic, exact counts."""

import asyncio
import re
import threading

import pytest

from harness import (MANY_CHILDREN, PROXYPASS, BalancerManager,
                     balancer_block, balancer_manager_block, http_get,
                     route_cookie, twin_balancers, worker_url, ws_talk)

STATUS = ('<Location "/server-status">\n'
          '    SetHandler server-status\n'
          '    Require ip 127.0.0.1\n'
          '</Location>\n')

def counters(h):
    """{(balancer, route): {counter: n}} from /server-status?auto."""
    text = http_get(h.port, "/server-status?auto").text
    result = {}
    for b, route, name, n in re.findall(
            r"^GWEBalancer (\S+) (\S+) (\S+): (\d+)$", text, re.M):
        result.setdefault((b, route), {})[name] = int(n)
    return result


def start(httpd_factory, body, modules=None, allow=()):
    h = httpd_factory(gwe=True, modules=modules or ())
    for rx in allow:
        h.allow(rx)
    # A count kept per process would come out short.
    h.write_config(MANY_CHILDREN + STATUS + body, modules=modules)
    h.start()
    return h


def test_counts_are_exact_across_processes(httpd_factory, nodes):
    h = start(httpd_factory, balancer_block("gwe", nodes, member_params={
        "GWE_Node_3": "status=+D redirect=GWE_Node_1"}) + PROXYPASS,
        allow=[r"GWB0204: balancer://gwe: .*'GWE_Node_9'"])

    def send(n, cookie):
        for _ in range(n):
            assert http_get(h.port, "/server/about",
                            cookie=cookie).status == 200

    # 40 threads at once: 10 x 25 sticky to node 1, 10 x 10 new, ...
    work = ([(25, route_cookie(nodes[0]))] * 10 + [(10, None)] * 10 +
            [(5, route_cookie(nodes[1]))] * 10 +
            [(3, "GWROUTEID=.GWE_Node_9")] * 5 +
            [(2, route_cookie(nodes[2]))] * 5)
    threads = [threading.Thread(target=send, args=w) for w in work]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    pids = {e["pid"] for e in h.access_entries()
            if e["request"].startswith("GET /server")}
    assert len(pids) > 1, "the requests all went to one child"

    c = counters(h)
    total = c[("gwe", "*")]
    assert total == {"sticky": 300, "new": 100, "unknown-route": 15,
                     "redirect": 10, "failover": 0, "nofailover": 0,
                     "websocket-handoff": 0}
    assert c[("gwe", "GWE_Node_1")]["sticky"] == 250
    assert c[("gwe", "GWE_Node_2")]["sticky"] == 50
    # Redirects count for the member the cookie named.
    assert c[("gwe", "GWE_Node_3")]["redirect"] == 10
    assert sum(c[("gwe", "GWE_Node_%d" % i)]["new"] for i in (1, 2)) == 100


def test_failovers_and_refusals(httpd_factory, nodes):
    h = start(httpd_factory,
              balancer_block("gwe", nodes,
                             member_params={"GWE_Node_1": "status=+D"}) +
              PROXYPASS +
              balancer_block("strict", nodes, proxyset="nofailover=On",
                             member_params={"GWE_Node_1": "status=+D"}) +
              'ProxyPass "/strict" "balancer://strict"\n',
              allow=[r"GWB0202", r"AH01170"])
    for _ in range(4):
        http_get(h.port, "/server/about", cookie=route_cookie(nodes[0]))
    for _ in range(3):
        assert http_get(h.port, "/strict/about",
                        cookie=route_cookie(nodes[0])).status == 503
    c = counters(h)
    assert c[("gwe", "GWE_Node_1")]["failover"] == 4
    assert c[("gwe", "*")]["failover"] == 4
    assert c[("strict", "GWE_Node_1")]["nofailover"] == 3


def test_websocket_handoffs_are_counted(httpd_factory, nodes):
    h = start(httpd_factory, twin_balancers(nodes),
              modules=["proxy_wstunnel"])
    for node in nodes:
        for _ in range(2):
            got, _ = asyncio.run(ws_talk(h.port, route_cookie(node)))
            assert got == node.name
    c = counters(h)
    assert c[("gwe", "*")]["websocket-handoff"] == 6
    assert c[("gwe-ws", "*")]["sticky"] == 6
    assert c[("gwe-ws", "GWE_Node_2")]["sticky"] == 2


def test_human_status_page_shows_the_table(httpd_factory, nodes):
    h = start(httpd_factory, balancer_block("gwe", nodes) + PROXYPASS)
    for _ in range(3):
        http_get(h.port, "/server/about", cookie=route_cookie(nodes[1]))
    page = http_get(h.port, "/server-status").text
    assert "GWE balancer routing decisions since start" in page
    row = re.search(r"<tr><td>GWE_Node_2</td>((?:<td>\d+</td>)+)</tr>", page)
    assert row and re.findall(r"\d+", row.group(1))[0] == "3"
    assert "<b>all routes</b>" in page


@pytest.mark.parametrize("growth", ["growth=2"])
def test_member_added_at_run_time_gets_its_row(httpd_factory, nodes, growth):
    h = start(httpd_factory, balancer_manager_block() +
              balancer_block("gwe", nodes[:2], proxyset=growth) +
              PROXYPASS)
    BalancerManager(h.port).add_member("gwe", worker_url(nodes[2]),
                                       route="GWE_Node_3")
    for _ in range(4):
        assert http_get(h.port, "/server/about",
                        cookie=route_cookie(nodes[2])).node == "GWE_Node_3"
    # The child answering server-status may not have seen the new member
    # yet: its row is then named by its slot ("slot-2"), but counted.
    c = counters(h)
    assert c[("gwe", "*")]["sticky"] == 4
    assert sum(v.get("sticky", 0) for (b, route), v in c.items()
               if b == "gwe" and route != "*") == 4
