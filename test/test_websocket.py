"""WebSocket upgrades follow the cookie: GWEBalancerWebSocket hands them to
a ws:// twin balancer, tunnelled by mod_proxy_wstunnel (or mod_proxy_http),
with gwesticky's rules.  Real WebSocket clients (python3-websockets) through
a real httpd to demo GWE nodes, which answer each text message with
"<node name>:<text>"."""

import asyncio
import json
import re
import signal

import pytest
import websockets

from harness import (CONNECT_ERRORS, BalancerManager, balancer_manager_block,
                     http_get, twin_balancers, worker_url, ws_node, ws_talk)


@pytest.fixture
def gwe_ws(httpd_factory):
    def start(nodes, fallback_to_http=None, loglevel="warn", allow=(),
              **kw):
        h = httpd_factory(gwe=True, loglevel=loglevel,
                          modules=["proxy_wstunnel"])
        for rx in allow:
            h.allow(rx)
        extra = ""
        if fallback_to_http is not None:
            extra = "ProxyWebsocketFallbackToProxyHttp %s\n" % (
                "On" if fallback_to_http else "Off")
        h.write_config(balancer_manager_block() + extra
                       + twin_balancers(nodes, **kw))
        h.start()
        return h
    return start


def tunnel_entries(h):
    return [e for e in h.access_entries()
            if e["request"].startswith("GET /server/cometd")]


# ---------------------------------------------------------------------------

@pytest.mark.parametrize("fallback_to_http", [False, True])
def test_each_cookie_upgrades_to_its_node(gwe_ws, nodes, fallback_to_http):
    h = gwe_ws(nodes, fallback_to_http=fallback_to_http,
               loglevel="warn gwe_balancer:debug proxy_wstunnel:debug "
                        "proxy_http:debug")
    for node in nodes:
        for _ in range(3):
            assert ws_node(h.port, "GWROUTEID=." + node.name) == node.name
    assert ws_node(h.port, "GWEROUTEID=.GWE_Node_2") == "GWE_Node_2"
    log = h.error_log()
    assert "GWB0203: WebSocket upgrade for balancer://gwe handed to " \
           "balancer://gwe-ws" in log
    # Which module tunnelled: mod_proxy_http since 2.4.47 with the
    # fallback On (the default), mod_proxy_wstunnel with it Off.
    http_tunnels = re.search(r"\[proxy_http:debug\].*AH10239", log)
    wstunnel = re.search(r"\[proxy_wstunnel:debug\].*AH02451", log)
    if fallback_to_http:
        assert http_tunnels and not wstunnel
    else:
        assert wstunnel and not http_tunnels
    entries = tunnel_entries(h)
    # mod_proxy_wstunnel logs a tunnel as 200, mod_proxy_http as 101.
    assert {e["status"] for e in entries} == {"101" if fallback_to_http
                                              else "200"}
    assert {e["decision"] for e in entries} == {"sticky"}
    assert {e["worker"].split(":")[0] for e in entries} == {"ws"}


def test_bayeux_session_over_websocket_stays_on_its_node(gwe_ws, nodes):
    h = gwe_ws(nodes)

    async def visitor():
        node, replies = await ws_talk(h.port, "GWROUTEID=.GWE_Node_3", [
            json.dumps([{"channel": "/meta/handshake"}])])
        client_id = json.loads(replies[0])[0]["clientId"]
        connects = [json.dumps([{"channel": "/meta/connect",
                                 "clientId": client_id}])] * 5
        _, replies = await ws_talk(h.port, "GWROUTEID=.GWE_Node_3", connects)
        return [json.loads(r)[0] for r in replies]
    replies = asyncio.run(visitor())
    assert all(r["successful"] and r["node"] == "GWE_Node_3" for r in replies)
    # A long-polling fallback of that session, by the same cookie.
    r = http_get(h.port, "/server/cometd/connect?clientId=%s" % replies[0]
                 ["clientId"], cookie="GWROUTEID=.GWE_Node_3")
    assert r.json()[0]["successful"] is True


def test_no_cookie_spreads_upgrades(gwe_ws, nodes):
    h = gwe_ws(nodes)
    got = [ws_node(h.port) for _ in range(9)]
    assert sorted(got) == sorted([n.name for n in nodes] * 3)
    assert {e["decision"] for e in tunnel_entries(h)} == {"new"}


def test_dead_nodes_visitor_still_gets_a_websocket(gwe_ws, nodes):
    h = gwe_ws(nodes, allow=CONNECT_ERRORS)
    nodes[0].signal(signal.SIGKILL)
    for _ in range(3):
        assert ws_node(h.port, "GWROUTEID=.GWE_Node_1") in \
            ("GWE_Node_2", "GWE_Node_3")
    assert "failover" in {e["decision"] for e in tunnel_entries(h)}


def test_nofailover_refuses_the_upgrade(gwe_ws, nodes):
    h = gwe_ws(nodes, ws_proxyset="nofailover=On",
               params={"GWE_Node_1": "status=+D"},
               allow=[r"GWB0202: balancer://gwe-ws", r"AH01170"])
    with pytest.raises(websockets.exceptions.InvalidStatusCode) as e:
        ws_node(h.port, "GWROUTEID=.GWE_Node_1")
    assert e.value.status_code == 503
    assert ws_node(h.port, "GWROUTEID=.GWE_Node_2") == "GWE_Node_2"


def test_draining_node_keeps_its_websockets(gwe_ws, nodes):
    h = gwe_ws(nodes, params={"GWE_Node_1": "status=+N"})
    assert ws_node(h.port, "GWROUTEID=.GWE_Node_1") == "GWE_Node_1"
    assert "GWE_Node_1" not in [ws_node(h.port) for _ in range(6)]


def test_handoff_whatever_the_http_balancer_does(gwe_ws, nodes):
    # An admin switched the HTTP balancer to byrequests with stickysession:
    # upgrades are still handed off and routed by cookie in the twin.
    h = gwe_ws(nodes, lbmethod="byrequests", proxyset="stickysession=GWROUTEID")
    for node in nodes:
        assert ws_node(h.port, "GWROUTEID=." + node.name) == node.name
    # ... and after switching it in balancer-manager at run time.
    h2 = gwe_ws(nodes)
    BalancerManager(h2.port).set_lbmethod("gwe", "byrequests")
    for node in nodes:
        assert ws_node(h2.port, "GWROUTEID=." + node.name) == node.name


def test_plain_get_is_not_handed_off(gwe_ws, nodes):
    h = gwe_ws(nodes, loglevel="warn gwe_balancer:debug")
    r = http_get(h.port, "/server/cometd/handshake",
                 cookie="GWROUTEID=.GWE_Node_2")
    assert r.status == 200 and r.node == "GWE_Node_2"
    # An Upgrade to something else, or without Connection: upgrade, neither.
    r = http_get(h.port, "/server/about", cookie="GWROUTEID=.GWE_Node_2",
                 headers={"Upgrade": "h2c", "Connection": "Upgrade"})
    assert r.node == "GWE_Node_2"
    r = http_get(h.port, "/server/about", cookie="GWROUTEID=.GWE_Node_2",
                 headers={"Upgrade": "websocket"})
    assert r.status == 200 and r.node == "GWE_Node_2"
    assert "GWB0203" not in h.error_log()
    assert all(e["worker"].startswith("http://") for e in h.access_entries()
               if e["request"].startswith("GET /server"))


def test_balancer_manager_counts_open_tunnels(gwe_ws, nodes):
    h = gwe_ws(nodes)
    manager = BalancerManager(h.port)

    async def hold_two_open():
        cookie = {"Cookie": "GWROUTEID=.GWE_Node_2"}
        async with websockets.connect(
                "ws://127.0.0.1:%d/server/cometd" % h.port,
                extra_headers=cookie, compression=None) as a, \
                websockets.connect("ws://127.0.0.1:%d/server/cometd" % h.port,
                                   extra_headers=cookie,
                                   compression=None) as b:
            for ws in (a, b):
                await ws.send("x")
                await ws.recv()
            return manager.member("gwe-ws", worker_url(nodes[1]).replace(
                "http://", "ws://"))["busy"]
    assert asyncio.run(hold_two_open()) == "2"
    assert "gwe-ws" in manager.status()


def test_200_concurrent_tunnels_none_misrouted(gwe_ws, nodes):
    h = gwe_ws(nodes)

    async def one(i):
        node = nodes[i % 3].name
        got, replies = await ws_talk(
            h.port, "GWROUTEID=." + node,
            ["m%d-%d" % (i, k) for k in range(5)])
        return got == node and replies == [
            "%s:m%d-%d" % (node, i, k) for k in range(5)]

    async def all_of_them():
        return await asyncio.gather(*(one(i) for i in range(200)))
    results = asyncio.run(all_of_them())
    assert results.count(True) == 200


def test_route_mismatch_and_http_members_are_warned(httpd_factory, nodes):
    h = httpd_factory(gwe=True, modules=["proxy_wstunnel"])
    h.allow(r"GWB0105")
    h.allow(r"GWB0106")
    body = twin_balancers(nodes, ws_nodes=nodes[:2])
    body = body.replace('BalancerMember "ws://127.0.0.1:%d' % nodes[0].port,
                        'BalancerMember "http://127.0.0.1:%d' % nodes[0].port)
    h.write_config(body)
    h.start()
    log = h.error_log()
    assert re.search(r"GWB0106: balancer://gwe and its WebSocket balancer "
                     r"balancer://gwe-ws do not have the same routes \(only "
                     r"in balancer://gwe: GWE_Node_3; only in "
                     r"balancer://gwe-ws: none\)", log)
    assert re.search(r"GWB0105: balancer://gwe-ws .* member "
                     r"http://127.0.0.1:%d/server is not ws://" % nodes[0].port,
                     log)
