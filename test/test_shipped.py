"""What we ship, run as a user runs it: conf/httpd-gwe-balancer.conf with only
the node addresses (and this machine's paths and port) set, and the demo
command of the README."""

import os
import re
import signal
import socket
import subprocess

import harness
from harness import (CONNECT_ERRORS, BalancerManager, ShippedHttpd,
                     cometd_connect, cometd_handshake, http_get, route_cookie,
                     wait_until, worker_url, ws_cometd_sessions, ws_node)


def test_shipped_config_parses_with_its_example_nodes(tmp_path, module_so):
    # The node block as printed (10.0.0.x): only this machine's paths set.
    h = ShippedHttpd(tmp_path / "asprinted", module_so, [])
    rc, out = h.configtest()
    assert rc == 0 and "Syntax OK" in out, out


def test_shipped_config_with_only_node_addresses(tmp_path, module_so,
                                                make_node):
    """-C "Define GWE_NODE_n_ADDR ..." alone: each name keeps its own
    default, so the routes are GWE_Node_1 and GWE_Node_2 as written, not an
    undefined ${GWE_NODE_n_NAME} (AH00111, GWB0110)."""
    nodes = [make_node("GWE_Node_1"), make_node("GWE_Node_2")]
    h = ShippedHttpd(tmp_path / "shipped", module_so, nodes)
    for i in (1, 2):
        del h.defines["GWE_NODE_%d_NAME" % i]
    rc, out = h.configtest()
    assert rc == 0 and "Syntax OK" in out, out
    assert not re.search(r"AH00111|GWB0110", out), out
    h.start()
    members = BalancerManager(h.port).status()["gwe"]["members"]
    assert sorted(m["route"] for m in members.values()) == \
        ["GWE_Node_1", "GWE_Node_2"]
    for node in nodes:
        r = http_get(h.port, "/server/about", cookie=route_cookie(node))
        assert r.status == 200 and r.node == node.name
    assert not re.search(r"AH00111|GWB0110", h.error_log())


def test_shipped_config_routes_by_cookie(shipped):
    h, nodes = shipped
    for node in nodes:
        for _ in range(5):
            r = http_get(h.port, "/server/about",
                         cookie="GWROUTEID=." + node.name)
            assert r.status == 200 and r.node == node.name
    new = {http_get(h.port, "/server/about").node for _ in range(6)}
    assert new == {"GWE_Node_1", "GWE_Node_2"}
    wait_until(lambda: len(h.decisions()) >= 16, 5, what="16 log lines")
    assert h.decisions() == ["sticky"] * 10 + ["new"] * 6
    assert re.search(r"cookie_route=GWE_Node_2 member=GWE_Node_2 "
                     r"decision=sticky changed=-", h.access_log())


def test_shipped_config_keeps_cometd_sessions(shipped):
    h, nodes = shipped
    for _ in range(4):
        client_id, cookie = cometd_handshake(h.port)
        for _ in range(5):
            assert cometd_connect(h.port, client_id, cookie) is True


def test_shipped_config_keeps_cometd_sessions_over_websocket(shipped):
    h, nodes = shipped
    visitors = [nodes[i % 2] for i in range(10)]
    assert ws_cometd_sessions(h.port, map(route_cookie, visitors), 5) == \
        [(node.name, [True] * 5) for node in visitors]


def test_shipped_config_fails_over_from_a_dead_node(shipped):
    h, nodes = shipped
    for rx in CONNECT_ERRORS:
        h.allow(rx)
    nodes[0].signal(signal.SIGKILL)
    for _ in range(3):
        r = http_get(h.port, "/server/about", cookie="GWROUTEID=.GWE_Node_1")
        assert r.status == 200 and r.node == "GWE_Node_2"


def test_shipped_config_health_check_takes_a_node_out_and_back(shipped):
    h, nodes = shipped
    h.allow(r"AH01114")     # hcheck could not reach a node marked down
    nodes[1].alive(False)

    def out_of_rotation():
        r = http_get(h.port, "/server/about", cookie="GWROUTEID=.GWE_Node_2")
        return r.status == 200 and r.node == "GWE_Node_1"
    # hcinterval=5, hcfails=2: out within about 10 s.
    wait_until(out_of_rotation, 20, interval=0.5,
               what="GWE_Node_2 to leave the rotation")
    # New visitors avoid it.
    assert {http_get(h.port, "/server/about").node
            for _ in range(6)} == {"GWE_Node_1"}
    # Its WebSockets too: the ws:// twin checks the same isAlive.
    wait_until(lambda: ws_node(h.port, "GWROUTEID=.GWE_Node_2") ==
               "GWE_Node_1", 10, interval=0.5,
               what="GWE_Node_2's WebSockets to go elsewhere")
    nodes[1].alive(True)

    def back():
        r = http_get(h.port, "/server/about", cookie="GWROUTEID=.GWE_Node_2")
        return r.node == "GWE_Node_2"
    wait_until(back, 20, interval=0.5, what="GWE_Node_2 to come back")
    # And takes new visitors again.
    assert "GWE_Node_2" in {http_get(h.port, "/server/about").node
                            for _ in range(6)}


def test_shipped_balancer_manager_from_loopback(shipped):
    h, nodes = shipped
    manager = BalancerManager(h.port)
    assert manager.status()["gwe"]["lbmethod"] == "gwesticky"
    manager.drain("gwe", worker_url(nodes[0]))
    assert {http_get(h.port, "/server/about").node
            for _ in range(4)} == {"GWE_Node_2"}
    assert http_get(h.port, "/server/about",
                    cookie="GWROUTEID=.GWE_Node_1").node == "GWE_Node_1"


def free_port_pair():
    """A port p such that p and p + 1 are both free now: the demo puts its
    second node on the first node's port + 1."""
    for _ in range(50):
        port = harness.free_port()
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port + 1))
                return port
            except OSError:
                continue
    raise harness.HarnessError("no two consecutive free ports")


def test_demo_command(tmp_path):
    """README command 1, on free ports and in a scratch directory."""
    env = dict(os.environ, GWE_DEMO_DIR=str(tmp_path / "demo"),
               GWE_DEMO_PORT=str(harness.free_port()),
               GWE_DEMO_NODE_PORT=str(free_port_pair()))
    demo = [str(harness.REPO_DIR / "test" / "demo.sh")]
    out = subprocess.run(["bash"] + demo, env=env, stdin=subprocess.DEVNULL,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         timeout=300)
    try:
        text = out.stdout.decode(errors="replace")
        assert out.returncode == 0, text
        assert "bash test/demo.sh stop" in text
        port = int(env["GWE_DEMO_PORT"])
        for name in ("GWE_Node_1", "GWE_Node_2"):
            r = http_get(port, "/server/about", cookie="GWROUTEID=." + name)
            assert r.status == 200 and r.json()["node"] == name
        manager = BalancerManager(port)
        assert manager.status()["gwe"]["lbmethod"] == "gwesticky"
    finally:
        stop = subprocess.run(["bash"] + demo + ["stop"], env=env,
                              stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, timeout=60)
    assert stop.returncode == 0
    pid_files = list((tmp_path / "demo" / "run").glob("*.pid"))
    assert pid_files == []
    errors = (tmp_path / "demo" / "logs" /
              "gwe-balancer-error.log").read_text()
    assert not harness.BAD_LEVEL.search(errors), errors
