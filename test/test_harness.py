"""Tests of the test harness itself (harness/, conftest.py).

They use plain lbmethod=byrequests, so they need neither the gwe module nor
its build: they prove that starting, stopping, readiness, the error_log
check, the HTTP/1.1 and h2c clients and the balancer-manager driver work,
so that a failure in the module's tests is the module's.

Run with:  /usr/bin/python3 -m pytest -q test/test_harness.py
"""

import collections
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading

import pytest

import harness
from harness import (BalancerManager, HarnessError, balancer_block,
                     balancer_manager_block, h2c_get, http_get, worker_url)

PROXY_PASS = 'ProxyPass "/server" "balancer://gwe"\n'


def byrequests_config(nodes, manager=False, proxyset=""):
    """A balancer "gwe" of nodes with byrequests, at /server."""
    return ((balancer_manager_block() if manager else "")
            + balancer_block("gwe", nodes, lbmethod="byrequests",
                             proxyset=proxyset)
            + PROXY_PASS)


def served_by(port, count, path="/server/about", **kw):
    """Which node answered each of count GETs, as a Counter of names."""
    seen = collections.Counter()
    for _ in range(count):
        resp = http_get(port, path, **kw)
        assert resp.status == 200, resp
        seen[resp.node] += 1
    return seen


def write_script(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


# ---------------------------------------------------------------------------
# Node
# ---------------------------------------------------------------------------

def test_free_port_is_bindable():
    port = harness.free_port()
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))


def test_nodes_start_and_answer(nodes):
    assert [n.name for n in nodes] == ["GWE_Node_1", "GWE_Node_2",
                                       "GWE_Node_3"]
    assert len({n.port for n in nodes}) == 3
    for node in nodes:
        assert node.port > 0 and node.running
        assert node.url == "http://127.0.0.1:%d" % node.port
        resp = node.get("/server/about")
        assert resp.status == 200
        assert resp.json()["node"] == node.name
        assert resp.node == node.name
        assert resp.set_cookies == ["GWROUTEID=.%s; Path=/" % node.name]


def test_node_alive_switch_and_stats(make_node):
    node = make_node("GWE_Node_1")
    assert node.get("/server/isAlive").status == 200
    node.alive(False)
    assert node.get("/server/isAlive").status == 503
    node.alive(True)
    assert node.get("/server/isAlive").status == 200
    stats = node.stats()
    assert stats["node"] == "GWE_Node_1" and stats["requests"] == 3
    assert node.reset()["requests"] == 0


def test_node_signals_stop_and_restart(make_node):
    node = make_node("GWE_Node_1")
    port, pid = node.port, node.pid

    node.signal(signal.SIGSTOP)
    with pytest.raises(OSError):            # accepted by the kernel, unserved
        http_get(port, "/server/about", timeout=0.5)
    node.signal(signal.SIGCONT)
    assert http_get(port, "/server/about").node == "GWE_Node_1"

    node.restart()
    assert node.port == port and node.pid != pid and node.running
    assert http_get(port, "/server/about").status == 200

    node.signal(signal.SIGSTOP)
    node.stop(timeout=5)                    # SIGCONT first, so SIGTERM works
    assert not node.running and node.proc.returncode == 0

    node.start()
    node.signal(signal.SIGKILL)
    assert not node.running and node.proc.returncode == -signal.SIGKILL
    assert not harness.port_accepts(port)


def test_node_start_failure_shows_stderr(make_node, tmp_path):
    script = write_script(tmp_path, "bad_node.py", """\
        import sys
        sys.stderr.write("cannot bind: something is wrong\\n")
        sys.exit(3)
        """)
    with pytest.raises(HarnessError) as err:
        make_node("bad", script=script)
    assert "exited with status 3 before READY" in str(err.value)
    assert "cannot bind: something is wrong" in str(err.value)


def test_node_start_timeout_kills_the_process(make_node, tmp_path):
    script = write_script(tmp_path, "mute_node.py", """\
        import sys, time
        sys.stderr.write("starting slowly\\n"); sys.stderr.flush()
        time.sleep(60)
        """)
    # Long enough for a loaded machine to start Python and reach the
    # write, which the error must then show.
    node = make_node("mute", start=False, script=script, start_timeout=5)
    with pytest.raises(HarnessError) as err:
        node.start()
    assert "no READY line within 5s" in str(err.value)
    assert "starting slowly" in str(err.value)
    assert not node.running


# ---------------------------------------------------------------------------
# Httpd: configuration, start, stop, failures
# ---------------------------------------------------------------------------

def test_base_config_modules_order_and_dedup(httpd_factory):
    httpd = httpd_factory(module_path="/nowhere/mod_gwe_balancer.so",
                          modules=["http2"])
    body = ('LoadModule status_module '
            '"/usr/lib/apache2/modules/mod_status.so"\n')
    text = httpd.base_config(body, modules=["proxy_wstunnel", "http2"])
    loads = [line.split()[1] for line in text.splitlines()
             if line.startswith("LoadModule")]
    assert loads[0] == "mpm_event_module"
    assert "status_module" not in loads     # the body loads it
    assert loads.count("http2_module") == 1
    assert loads[-3:] == ["http2_module", "proxy_wstunnel_module",
                          "gwe_balancer_module"]
    for needle in ("Listen 127.0.0.1:%d\n" % httpd.port,
                   "ServerName 127.0.0.1\n",
                   'PidFile "%s"' % httpd.pid_path,
                   'DefaultRuntimeDir "%s"' % (httpd.root / "run"),
                   "%{BALANCER_WORKER_ROUTE}e", "%{BALANCER_SESSION_ROUTE}e",
                   "%{BALANCER_ROUTE_CHANGED}e", "%{GWE_ROUTE_DECISION}e"):
        assert needle in text


def test_configtest(httpd_factory):
    httpd = httpd_factory(modules=["http2", "proxy_wstunnel",
                                   "proxy_hcheck"])
    httpd.write_config('LoadModule status_module '
                       '"/usr/lib/apache2/modules/mod_status.so"\n')
    rc, out = httpd.configtest()
    assert rc == 0 and "Syntax OK" in out, out
    assert "already loaded" not in out

    httpd.write_config("NoSuchDirective on\n")
    rc, out = httpd.configtest()
    assert rc != 0 and "Invalid command 'NoSuchDirective'" in out


def test_start_answers_and_stop_leaves_nothing(httpd_factory, nodes):
    httpd = httpd_factory()
    httpd.write_config(byrequests_config(nodes))
    httpd.start()
    pid = httpd.pid
    assert httpd.running and int(httpd.pid_path.read_text()) == pid
    assert httpd.child_pids(), "no children"
    assert http_get(httpd.port, "/server/about").status == 200

    httpd.stop()
    assert not harness.pid_alive(pid) and httpd.pid is None
    assert harness.group_members(pid) == []
    assert not harness.port_accepts(httpd.port)
    assert not httpd.pid_path.exists()
    httpd.stop()                            # idempotent

    httpd.start()                           # and startable again
    assert http_get(httpd.port, "/server/about").status == 200


def test_start_failure_raises_with_output(httpd_factory):
    httpd = httpd_factory()
    httpd.write_config("NoSuchDirective on\n")
    with pytest.raises(HarnessError) as err:
        httpd.start()
    assert "exited 1" in str(err.value)
    assert "Invalid command 'NoSuchDirective'" in str(err.value)

    rc, out = httpd.start_expect_failure()
    assert rc != 0 and "Invalid command 'NoSuchDirective'" in out
    assert not httpd.running


def test_start_failure_port_in_use(httpd_factory):
    httpd = httpd_factory()
    httpd.write_config("")
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", httpd.port))
        squatter.listen(1)
        with pytest.raises(HarnessError) as err:
            httpd.start()
    assert "could not bind to address" in str(err.value)
    # The bind failure is logged at emerg: expected here.
    httpd.allow(r"AH00072: make_sock: could not bind")
    httpd.allow(r"AH00451: no listening sockets available")


def test_start_expect_failure_refuses_a_server_that_starts(httpd_factory):
    httpd = httpd_factory()
    httpd.write_config("")
    with pytest.raises(HarnessError, match="failure was expected"):
        httpd.start_expect_failure()
    assert not httpd.running and not harness.port_accepts(httpd.port)


def test_graceful_rereads_the_config(httpd_factory, nodes):
    httpd = httpd_factory()
    httpd.write_config(byrequests_config(nodes[:1]))
    httpd.start()
    pid = httpd.pid
    assert set(served_by(httpd.port, 4)) == {"GWE_Node_1"}

    httpd.write_config(byrequests_config(nodes))
    httpd.graceful()
    assert httpd.pid == pid
    assert set(served_by(httpd.port, 6)) == {n.name for n in nodes}
    assert httpd.error_log().count("resuming normal operations") == 2


def test_worker_and_prefork_mpms(httpd_factory, nodes):
    for mpm in ("worker", "prefork"):
        # With prefork, mod_http2's advisory AH10034 is globally allowed.
        httpd = httpd_factory(mpm=mpm, modules=["http2"])
        httpd.write_config(byrequests_config(nodes))
        httpd.start()
        assert served_by(httpd.port, 3) == {n.name: 1 for n in nodes}
        httpd.stop()
        assert "mpm_%s:notice" % mpm in httpd.error_log()


def test_extra_listen(httpd_factory, nodes):
    other = harness.free_port()
    httpd = httpd_factory()
    httpd.write_config(
        '<VirtualHost 127.0.0.1:%d>\n' % other
        + balancer_block("only3", nodes[2:], lbmethod="byrequests")
        # Not /server: a vhost tries the main server's ProxyPass first.
        + 'ProxyPass "/other" "balancer://only3"\n'
        + '</VirtualHost>\n' + byrequests_config(nodes[:1]),
        extra_listen=[other])
    httpd.start()
    assert httpd.extra_ports == [other]
    assert http_get(httpd.port, "/server/about").node == "GWE_Node_1"
    assert http_get(other, "/other/about").node == "GWE_Node_3"


@pytest.mark.parametrize("proxy_pass", [
    'ProxyPass "/" "balancer://gwe/"\n',
    '<Location "/">\n    ProxyPass "balancer://gwe/"\n</Location>\n'])
def test_probe_and_manager_are_never_proxied(httpd_factory, nodes,
                                             proxy_pass):
    httpd = httpd_factory()
    httpd.write_config(proxy_pass
                       + balancer_block("gwe", nodes, lbmethod="byrequests")
                       + balancer_manager_block())
    httpd.start()
    httpd.graceful()
    assert BalancerManager(httpd.port).status()["gwe"]["members"]
    assert [n.stats()["requests"] for n in nodes] == [0, 0, 0]
    assert http_get(httpd.port, "/about").node in {n.name for n in nodes}


# ---------------------------------------------------------------------------
# Logs: access log fields, the error_log check
# ---------------------------------------------------------------------------

def test_access_log_fields(httpd_factory, nodes):
    httpd = httpd_factory()
    httpd.write_config(byrequests_config(nodes))
    httpd.start()
    http_get(httpd.port, "/server/about", cookie="GWROUTEID=.GWE_Node_2")
    [entry] = httpd.access_entries(count=1)
    assert entry["request"] == "GET /server/about HTTP/1.1"
    assert entry["status"] == "200"
    assert entry["worker_route"] == entry["node"]
    assert entry["worker"].startswith("http://127.0.0.1:")
    assert entry["decision"] == "-"         # byrequests sets none
    assert entry["cookie"] == "GWROUTEID=.GWE_Node_2"


def test_unexpected_log_lines_classification(httpd_factory):
    httpd = httpd_factory()
    lines = {
        "[t] [core:notice] [pid 1] AH00094: Command line: x": False,
        "[t] [proxy:info] [pid 1] AH00128: File does not exist": False,
        "[t] [gwe_balancer:debug] [pid 1] GWB0201: sticky": False,
        "[t] [gwe_balancer:warn] [pid 1] GWB0103: no route": True,
        "[t] [proxy:error] [pid 1] AH00957: connect failed": True,
        "[t] [:crit] [pid 1] something": True,
        "[t] [core:alert] [pid 1] something": True,
        "[t] [core:emerg] [pid 1] something": True,
        "[t] [core:notice] [pid 1] AH00052: child pid 7 exit signal "
        "Segmentation fault (11)": True,
        "[t] [mpm_event:notice] [pid 1] AH00051: child pid 7 exit "
        "status 255": True,
        "kernel: apache2[7]: segfault at 0 ip 0": True,
        "[t] [http2:warn] [pid 1] AH10034: The mpm module (prefork.c)": False,
        "[t] [mpm_event:error] [pid 1:tid 2] (9)Bad file descriptor: "
        "AH03092: process_lingering_close: apr_pollset_add failure": False,
        "[t] [mpm_event:error] [pid 1:tid 2] (9)Bad file descriptor: "
        "AH03093: process_socket: apr_pollset_add failure for keep "
        "alive": False,
    }
    httpd.error_log_path.write_text("\n".join(lines) + "\n")
    assert httpd.unexpected_log_lines() == [k for k, v in lines.items() if v]
    httpd.allow("GWB0103|AH00957|AH0005[12]|segfault|something")
    assert httpd.unexpected_log_lines() == []
    httpd.error_log_path.write_text("")     # for the teardown check


def test_unexpected_log_lines_and_allow(httpd_factory, nodes):
    dead = harness.free_port()
    httpd = httpd_factory()
    httpd.write_config(balancer_block("gwe", [("GWE_Node_9", dead)],
                                      lbmethod="byrequests") + PROXY_PASS)
    httpd.start()
    assert httpd.unexpected_log_lines() == []
    assert http_get(httpd.port, "/server/about").status == 503
    httpd.wait_for_log(r"AH00957")
    bad = httpd.unexpected_log_lines()
    assert any("[proxy:error]" in line and "AH00957" in line
               for line in bad), bad
    httpd.allow(r"\[proxy(_balancer|_http)?:error\]")
    assert httpd.unexpected_log_lines() == []


def test_crashed_child_is_unexpected(httpd_factory):
    httpd = httpd_factory()
    httpd.write_config("")
    httpd.start()
    victim = httpd.child_pids()[0]
    os.kill(victim, signal.SIGSEGV)
    httpd.wait_for_log(r"child pid %d exit signal" % victim)
    bad = httpd.unexpected_log_lines()
    # Logged at level notice, caught for what it says.
    assert len(bad) == 1 and "core:notice" in bad[0], bad
    httpd.allow(r"child pid %d exit signal Segmentation fault" % victim)
    assert httpd.unexpected_log_lines() == []


INNER_TESTS = """
import harness

# A proxy to a closed port: the 503 logs AH00957 at level error.
DEAD = 'ProxyPass "/dead" "http://127.0.0.1:%d/"\\n' % harness.free_port()

def test_clean(httpd_factory):
    h = httpd_factory(); h.write_config(""); h.start()

def test_errors(httpd_factory):
    h = httpd_factory(); h.write_config(DEAD); h.start()
    assert harness.http_get(h.port, "/dead").status == 503

def test_errors_allowed(httpd_factory):
    h = httpd_factory(); h.write_config(DEAD); h.start()
    h.allow(r"\\[proxy(_http)?:error\\]")
    assert harness.http_get(h.port, "/dead").status == 503

def test_info_is_fine(httpd_factory):
    h = httpd_factory(loglevel="info"); h.write_config(""); h.start()
    assert harness.http_get(h.port, "/nothing-here").status == 404
    h.wait_for_log("AH00128")

def test_direct_httpd_errors(tmp_path):
    h = harness.Httpd(tmp_path / "direct"); h.write_config(DEAD); h.start()
    assert harness.http_get(h.port, "/dead").status == 503
"""


def test_teardown_fails_a_test_with_unexpected_lines(tmp_path):
    """Runs an inner pytest session, with our conftest, whose tests make
    httpd log errors (allowed or not), and info lines."""
    (tmp_path / "conftest.py").write_text(
        (harness.TEST_DIR / "conftest.py").read_text())
    (tmp_path / "test_inner.py").write_text(INNER_TESTS)
    env = dict(os.environ, PYTHONPATH=str(harness.TEST_DIR))
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
         "--basetemp", str(tmp_path / "basetemp"), "test_inner.py"],
        cwd=str(tmp_path), env=env, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, timeout=120)
    out = proc.stdout.decode(errors="replace")
    assert proc.returncode == 1, out
    assert "5 passed, 2 errors" in out, out
    assert "ERROR at teardown of test_errors _" in out, out
    assert "ERROR at teardown of test_direct_httpd_errors _" in out, out
    assert out.count("unexpected lines in") == 2, out
    assert "AH00957" in out, out


# ---------------------------------------------------------------------------
# HTTP clients
# ---------------------------------------------------------------------------

def _capture_requests(count):
    """A server that answers count requests, one per connection, with 204
    and records the raw bytes of each request's head."""
    heads = []
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(count)

    def serve():
        for _ in range(count):
            sock, _ = listener.accept()
            with sock:
                data = b""
                while b"\r\n\r\n" not in data:
                    chunk = sock.recv(65536)
                    if not chunk:
                        break
                    data += chunk
                heads.append(data)
                sock.sendall(b"HTTP/1.1 204 No Content\r\n"
                             b"Connection: close\r\n\r\n")
        listener.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return listener.getsockname()[1], heads, thread


def test_http_get_sends_headers_exactly(tmp_path):
    port, heads, thread = _capture_requests(4)
    odd = 'a=1;b=2 ;  GWROUTEID=".GWE_Node_2";;x= "q"  \u00e9'
    http_get(port, "/p", cookie=odd)
    http_get(port, "/p", cookie=["a=1", b"GWROUTEID=.x\xff"])
    http_get(port, "/p")
    http_get(port, "/p", headers=[("X-A", "1"), ("X-A", "2"),
                                  ("Host", "gwe.example")])
    thread.join(5)
    assert heads[0] == (b"GET /p HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n"
                        b"Connection: close\r\nCookie: %s\r\n\r\n"
                        % (port, odd.encode("utf-8")))
    assert b"\r\nCookie: a=1\r\nCookie: GWROUTEID=.x\xff\r\n" in heads[1]
    assert b"Cookie" not in heads[2]
    assert heads[3] == (b"GET /p HTTP/1.1\r\nX-A: 1\r\nX-A: 2\r\n"
                        b"Host: gwe.example\r\nConnection: close\r\n\r\n")


def test_http_request_with_body_and_session(nodes, httpd_factory):
    httpd = httpd_factory()
    httpd.write_config(byrequests_config(nodes))
    httpd.start()
    resp = harness.http_request("POST", httpd.port, "/server/headers",
                                body=b"x" * 10)
    assert resp.status == 200 and resp.json()["Content-Length"] == "10"
    with harness.HttpSession(httpd.port) as session:
        names = [session.get("/server/about").node for _ in range(3)]
        assert session.connects == 1
    assert sorted(names) == sorted(n.name for n in nodes)


def test_raw_http(nodes):
    resp = harness.raw_http(nodes[0].port,
                            b"GET /server/about HTTP/1.1\r\nHost: x\r\n"
                            b"Connection: close\r\n\r\n")
    assert resp.status == 200 and resp.node == "GWE_Node_1"


def _h2_server(received):
    """A one-request h2c server recording the request's header fields, as
    received: with normalize_inbound_headers=False, else h2 would join the
    cookie crumbs itself."""
    pytest.importorskip("h2")   # python3-h2, for this server only
    import h2.config
    import h2.connection
    import h2.events

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)

    def serve():
        sock, _ = listener.accept()
        conn = h2.connection.H2Connection(h2.config.H2Configuration(
            client_side=False, header_encoding="utf-8",
            normalize_inbound_headers=False))
        conn.initiate_connection()
        sock.sendall(conn.data_to_send())
        done = False
        while not done:
            data = sock.recv(65536)
            if not data:
                break
            for event in conn.receive_data(data):
                if isinstance(event, h2.events.RequestReceived):
                    received.extend(event.headers)
                    conn.send_headers(event.stream_id, [
                        (":status", "200"), ("x-gwe-node", "h2test"),
                        ("content-length", "2")])
                    conn.send_data(event.stream_id, b"ok", end_stream=True)
                    done = True
            sock.sendall(conn.data_to_send())
        sock.close()
        listener.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return listener.getsockname()[1], thread


def test_h2c_get_sends_each_cookie_as_its_own_field():
    received = []
    port, thread = _h2_server(received)
    resp = h2c_get(port, "/p", ["a=1", "GWROUTEID=.n; b=2", "", "c=3"],
                   headers=[("x-extra", "1")])
    thread.join(5)
    assert resp.status == 200 and resp.body == b"ok"
    assert resp.version == "HTTP/2" and resp.node == "h2test"
    assert [v for k, v in received if k == "cookie"] == \
        ["a=1", "GWROUTEID=.n; b=2", "", "c=3"]
    assert ("x-extra", "1") in received


def test_h2c_get_through_httpd(nodes, httpd_factory):
    httpd = httpd_factory(modules=["http2"])
    httpd.write_config("Protocols h2c http/1.1\n" + byrequests_config(nodes))
    httpd.start()
    resp = h2c_get(httpd.port, "/server/headers",
                   ["a=1", "GWROUTEID=.GWE_Node_2", "b=2"])
    assert resp.status == 200 and resp.version == "HTTP/2"
    assert resp.node in {n.name for n in nodes}
    # mod_http2 joins the crumbs into one Cookie header (RFC 9113 8.2.3).
    assert resp.json()["Cookie"] == "a=1; GWROUTEID=.GWE_Node_2; b=2"
    [entry] = httpd.access_entries(count=1)
    assert entry["protocol"] == "HTTP/2.0"


# ---------------------------------------------------------------------------
# balancer_block, BalancerManager
# ---------------------------------------------------------------------------

def test_balancer_block_text(nodes):
    text = balancer_block("gwe", nodes, proxyset="nofailover=On",
                          member_params="retry=0")
    assert text.splitlines() == [
        '<Proxy "balancer://gwe">',
        '    BalancerMember "http://127.0.0.1:%d/server" route=GWE_Node_1 '
        'retry=0' % nodes[0].port,
        '    BalancerMember "http://127.0.0.1:%d/server" route=GWE_Node_2 '
        'retry=0' % nodes[1].port,
        '    BalancerMember "http://127.0.0.1:%d/server" route=GWE_Node_3 '
        'retry=0' % nodes[2].port,
        '    ProxySet lbmethod=gwesticky nofailover=On',
        '</Proxy>']


def test_byrequests_spreads_evenly(nodes, httpd_factory):
    httpd = httpd_factory()
    httpd.write_config(byrequests_config(nodes))
    httpd.start()
    assert served_by(httpd.port, 9) == {n.name: 3 for n in nodes}
    routes = collections.Counter(
        e["worker_route"] for e in httpd.access_entries(count=9))
    assert routes == {n.name: 3 for n in nodes}


@pytest.fixture
def managed(nodes, httpd_factory):
    """httpd with balancer "gwe" (byrequests) of the three nodes and a
    balancer-manager; returns (httpd, BalancerManager)."""
    httpd = httpd_factory()
    httpd.write_config(byrequests_config(nodes, manager=True))
    httpd.start()
    return httpd, BalancerManager(httpd.port)


def test_manager_status_and_nonce(managed, nodes):
    httpd, bm = managed
    assert len(bm.nonce("gwe")) == 36       # a UUID
    status = bm.status()
    assert list(status) == ["gwe"]
    assert status["gwe"]["lbmethod"] == "byrequests"
    members = status["gwe"]["members"]
    assert list(members) == [worker_url(n) for n in nodes]
    assert [m["route"] for m in members.values()] == [n.name for n in nodes]
    assert all("Ok" in m["status"] for m in members.values())


@pytest.mark.parametrize("index, flag, take_out, put_back", [
    (1, "Dis", BalancerManager.disable, BalancerManager.enable),
    (2, "Drn", BalancerManager.drain,
     lambda bm, b, url: bm.drain(b, url, on=False)),
])
def test_manager_takes_a_member_out_and_back(managed, nodes, index, flag,
                                             take_out, put_back):
    httpd, bm = managed
    url = worker_url(nodes[index])
    take_out(bm, "gwe", url)
    assert flag in bm.member("gwe", url)["status"]
    assert served_by(httpd.port, 6) == {n.name: 3 for n in nodes
                                        if n is not nodes[index]}
    put_back(bm, "gwe", url)
    assert flag not in bm.member("gwe", url)["status"]
    assert served_by(httpd.port, 6)[nodes[index].name] >= 1


def test_manager_set_lbmethod(managed, nodes):
    httpd, bm = managed
    bm.set_lbmethod("gwe", "bybusyness")
    assert bm.status()["gwe"]["lbmethod"] == "bybusyness"
    assert served_by(httpd.port, 6).keys() <= {n.name for n in nodes}
    with pytest.raises(HarnessError, match="after setting 'nosuchmethod'"):
        bm.set_lbmethod("gwe", "nosuchmethod")


def test_manager_add_member(nodes, make_node, httpd_factory):
    httpd = httpd_factory()
    httpd.write_config(byrequests_config(nodes[:2], manager=True,
                                         proxyset="growth=2"))
    httpd.start()
    bm = BalancerManager(httpd.port)
    assert set(served_by(httpd.port, 4)) == {"GWE_Node_1", "GWE_Node_2"}

    bm.add_member("gwe", worker_url(nodes[2]), route="GWE_Node_3")
    member = bm.member("gwe", worker_url(nodes[2]))
    assert member["route"] == "GWE_Node_3" and "Ok" in member["status"]
    assert served_by(httpd.port, 6)["GWE_Node_3"] >= 1

    # Added without enabling: httpd adds members disabled.
    extra = make_node("GWE_Node_4")
    bm.add_member("gwe", worker_url(extra), route="GWE_Node_4",
                  enable=False)
    assert "Dis" in bm.member("gwe", worker_url(extra))["status"]
    assert "GWE_Node_4" not in served_by(httpd.port, 8)

    # growth=2: no third slot.
    with pytest.raises(HarnessError, match="no free member slot"):
        bm.add_member("gwe", "http://127.0.0.1:1/server")


def test_manager_set_route(managed, nodes):
    httpd, bm = managed
    bm.set_route("gwe", worker_url(nodes[0]), "renamed")
    assert bm.member("gwe", worker_url(nodes[0]))["route"] == "renamed"
