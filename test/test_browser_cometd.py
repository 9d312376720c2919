"""GWE's visitors as they are: browsers running the official CometD
JavaScript client, whose own cookie jar carries GWROUTEID.

Each test runs conf/httpd-gwe-balancer.conf with its HTTPS front on, in
front of two demo nodes that hold /meta/connect as a CometD server does.
The HTTPS certificate is signed by a throwaway CA that the browser trusts
through its NSS database (a HOME of the test's own), as browsers trust a
real site's: nothing of its TLS checks is switched off.  Debian's
Chromium, driven by playwright-core
(test/browser/cometd_sessions.mjs), loads test/browser/ui/cometd.html
through the balancer; the page imports the npm package cometd, served by
the node as well, and runs a CometD session against /server/cometd over
WebSocket or over long-polling only.  Nothing sets or edits a cookie but
the browser.

For each front (plain HTTP; HTTPS over HTTP/1.1; HTTPS over HTTP/2, with
WebSockets on the page's HTTP/2 connection, RFC 8441) and each transport:
- a visitor's first page load is placed by the fallback; its cookie jar
  then names that node, its session stays there for many messages, counted
  by the node itself, and the page's own GETs go there too; no node ever
  sees a clientId another node handed out;
- a second visitor (another browser context) is placed by the fallback
  and keeps its own node;
- the first visitor's node drained: the visitor keeps its session there;
- that node killed: the CometD client re-handshakes, with the other node,
  which sets its cookie, and the session continues there;
- the access log shows every request over the front's protocol (on HTTP/2,
  the WebSocket as "GET /server/cometd HTTP/2.0" 101), the page loads as
  the only new visitors, and every other request at the node its cookie
  named, but those that named the killed node: they failed over, or, held
  by the node when it died, failed.

Each page's screenshot and console: test/artifacts/TEST-VISITOR.png and
.console.log.  Needs what test_browser.py needs (conftest's browser_dir),
and certutil (libnss3-tools)."""

import json
import os
import queue
import re
import signal
import subprocess
import threading

import pytest

import harness
from harness import BalancerManager, wait_until, worker_url

MESSAGES = 20           # published per visitor and phase
PAGE_GETS = 3           # GETs of /server/about per check
HOLD_CONNECT = "3"      # s the nodes hold a /meta/connect
COMMAND_TIMEOUT = 90    # s for one command of cometd_sessions.mjs

# id -> (scheme, Chromium's extra flags, the protocol in the access log)
FRONTS = {
    "http": ("http", [], "HTTP/1.1"),
    "https-h1": ("https", ["--disable-http2"], "HTTP/1.1"),
    "https-h2": ("https", [], "HTTP/2.0"),
}

# The shipped LogFormat "gwe".
LOG_LINE = re.compile(
    r'"(?P<method>\S+) (?P<path>\S+) (?P<protocol>[^"]+)" (?P<status>\d+) '
    r'\S+ \S+ cookie_route=(?P<cookie_route>\S+) member=(?P<member>\S+) '
    r'decision=(?P<decision>\S+)')

# A node killed under its visitors: what httpd logs for the connections it
# then cannot make, and for the long-poll the node held when it died.
KILL_ERRORS = harness.CONNECT_ERRORS + [
    r"AH01102",     # error reading status line from the killed node
]


class Site:
    """The shipped config with its HTTPS front, its nodes, and a HOME whose
    NSS database trusts the certificate's CA."""

    def __init__(self, h, nodes, home):
        self.h, self.nodes, self.home = h, nodes, home

    def node(self, name):
        return next(n for n in self.nodes if n.name == name)

    def other(self, name):
        return next(n for n in self.nodes if n.name != name)

    def base_url(self, scheme):
        port = self.h.tls_port if scheme == "https" else self.h.port
        return "%s://127.0.0.1:%d" % (scheme, port)


@pytest.fixture
def site(tmp_path, module_so, make_node):
    nodes = [make_node("GWE_Node_%d" % i,
                       args=["--hold-connect", HOLD_CONNECT])
             for i in (1, 2)]
    ca, cert, key = harness.make_ca_signed_cert(tmp_path / "tls")
    h = harness.TlsHttpd(tmp_path / "shipped", module_so, nodes, cert, key)
    for rx in KILL_ERRORS:
        h.allow(rx)
    h.start()
    yield Site(h, nodes, harness.trusting_home(tmp_path / "home", ca))
    h.stop()


class Browser:
    """test/browser/cometd_sessions.mjs: one Chromium, whose contexts are
    the visitors; command() sends it one command and returns its answer."""

    def __init__(self, browser_dir, prefix, flags, home):
        self.stderr = open("%s.stderr" % prefix, "wb")
        env = dict(os.environ, HOME=str(home))
        self.proc = subprocess.Popen(
            [harness.NODEJS, str(browser_dir / "cometd_sessions.mjs"),
             str(prefix)] + flags, cwd=str(browser_dir), env=env,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=self.stderr)
        self.lines = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        self.version = self._answer("launch")["browser_version"]

    def _read(self):
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def _answer(self, what):
        try:
            line = self.lines.get(timeout=COMMAND_TIMEOUT)
        except queue.Empty:
            raise AssertionError("cometd_sessions.mjs: no answer to %s "
                                 "within %ss" % (what, COMMAND_TIMEOUT))
        if line is None:
            raise AssertionError("cometd_sessions.mjs exited (%s) at %s; "
                                 "see %s" % (self.proc.wait(), what,
                                             self.stderr.name))
        answer = json.loads(line)
        assert answer["ok"], "%s failed: %s\npage state: %s" % (
            what, answer["error"], json.dumps(answer["state"], indent=1))
        return answer

    def command(self, cmd, **args):
        self.proc.stdin.write((json.dumps(dict(args, cmd=cmd)) + "\n")
                              .encode())
        self.proc.stdin.flush()
        return self._answer("%s %s" % (cmd, args))

    def close(self):
        """Quit (screenshots and consoles are written then), or kill."""
        try:
            if self.proc.poll() is None:
                self.command("quit")
                self.proc.wait(timeout=30)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait(timeout=10)
            self.proc.stdin.close()
            self.stderr.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def node_sessions(node):
    """{clientId: {"connects", "publishes"}} as the node counted them."""
    return node.get("/_control/sessions").json()


class Visitor:
    """A browser context with the CometD page open; .node and .client_id:
    its current session, as the page's last successful handshake says."""

    def __init__(self, browser, site, name, url, transport):
        self.browser, self.site, self.name = browser, site, name
        self.transport = transport
        self.handshakes = 1
        self._take_session(browser.command("open", visitor=name,
                                           url=url)["state"])

    def _take_session(self, state):
        done = [h for h in state["handshakes"] if h["successful"]]
        assert len(done) == self.handshakes, state
        assert done[-1]["transport"] == state["transport"] == \
            self.transport, state
        self.node, self.client_id = done[-1]["node"], done[-1]["clientId"]
        self.published = 0

    def keeps_its_session(self, count=MESSAGES):
        """count messages, each echoed by the session's node; the browser's
        cookie jar names that node, the page's GETs go there, and the node
        counted every message of the session."""
        echoes = self.browser.command("publish", visitor=self.name,
                                      count=count)["echoes"]
        assert {(e["node"], e["clientId"]) for e in echoes} == {
            (self.node, self.client_id)}, echoes
        self.published += count
        answer = self.browser.command("state", visitor=self.name)
        state = answer["state"]
        assert sum(h["successful"] for h in state["handshakes"]) == \
            self.handshakes and state["transport"] == self.transport, state
        assert [c["value"] for c in answer["cookies"]
                if c["name"] == "GWROUTEID"] == ["." + self.node], answer
        assert self.browser.command("about", visitor=self.name,
                                    count=PAGE_GETS)["nodes"] == \
            [self.node] * PAGE_GETS
        node = self.site.node(self.node)
        assert node_sessions(node)[self.client_id]["publishes"] == \
            self.published
        other = self.site.other(self.node)
        if other.running:
            assert self.client_id not in node_sessions(other)

    def rehandshakes_with(self, node):
        """The page's CometD client handshakes again, and with node."""
        self.handshakes += 1
        state = self.browser.command("wait_handshakes", visitor=self.name,
                                     count=self.handshakes)["state"]
        self._take_session(state)
        assert self.node == node, state


def artifacts_prefix(request):
    """test/artifacts/TEST, its files of an earlier run removed."""
    harness.ARTIFACTS.mkdir(exist_ok=True)
    name = re.sub(r"[^\w.-]+", "_", request.node.name)
    for old in harness.ARTIFACTS.glob(name + "-*"):
        old.unlink()
    return harness.ARTIFACTS / name


def log_entries(h):
    """The access log's entries of GWE requests (not balancer-manager's,
    nor the harness's readiness probes)."""
    entries = [m.groupdict() for m in map(LOG_LINE.search,
                                          h.access_log().splitlines()) if m]
    return [e for e in entries if e["path"].startswith("/server/")
            and e["path"] != h.READY_PATH]


def websocket_entries(h, count):
    """The access log's WebSocket requests, once there are count (httpd
    logs one when its tunnel closes)."""
    def entries():
        found = [e for e in log_entries(h)
                 if e["method"] == "GET" and e["path"] == "/server/cometd"]
        return found if len(found) >= count else None
    return wait_until(entries, 30, interval=0.2,
                      what="%d WebSocket lines in the access log" % count)


def died_with_the_node(entry, killed):
    """A long-poll the killed node held: httpd answers 502; over HTTP/2,
    mod_http2 logs a second line, 500, without the request's variables."""
    return (entry["path"] == "/server/cometd/connect"
            and (entry["status"], entry["cookie_route"]) in
            (("502", killed), ("500", "-")))


def check_access_log(h, protocol, transport, websockets, killed, visitors):
    """Every request over protocol; the page loads are the only new
    visitors; the rest went to the node their cookie named, but those
    naming the killed node, which failed over or died with it; WebSockets
    (as many as the nodes accepted) ended with 101."""
    if transport == "websocket":
        sockets = websocket_entries(h, websockets)
        assert len(sockets) == websockets, sockets
        assert {e["status"] for e in sockets} == {"101"}, sockets
    entries = log_entries(h)
    assert {e["protocol"] for e in entries} == {protocol}, entries
    new = [e for e in entries if e["decision"] == "new"]
    assert [e["path"].split("?")[0] for e in new] == \
        ["/server/ui/cometd.html"] * visitors, new
    for e in entries:
        if e["decision"] == "new" or died_with_the_node(e, killed):
            continue
        if e["cookie_route"] == killed and e["member"] != killed:
            assert e["decision"] == "failover", e
        else:
            assert (e["decision"], e["member"]) == (
                "sticky", e["cookie_route"]), e


def check_console(prefix, names):
    """Each page's console log is there and holds no script error."""
    for name in names:
        text = harness.ARTIFACTS.joinpath(
            "%s-%s.console.log" % (prefix.name, name)).read_text()
        assert "pageerror" not in text, text
        assert harness.ARTIFACTS.joinpath(
            "%s-%s.png" % (prefix.name, name)).stat().st_size > 5000


@pytest.mark.parametrize("transport", ["websocket", "long-polling"])
@pytest.mark.parametrize("front", list(FRONTS))
def test_cometd_sessions_in_chromium(site, browser_dir, request, front,
                                     transport):
    scheme, flags, protocol = FRONTS[front]
    url = "%s/server/ui/cometd.html?transport=%s" % (site.base_url(scheme),
                                                      transport)
    prefix = artifacts_prefix(request)
    with Browser(browser_dir, prefix, flags, site.home) as browser:
        print("Chromium %s, %s, %s" % (browser.version, front, transport))
        a = Visitor(browser, site, "a", url, transport)
        a.keeps_its_session()
        b = Visitor(browser, site, "b", url, transport)
        b.keeps_its_session()
        assert [n.stats()["unknown_clients"] for n in site.nodes] == [0, 0]

        # Drained, a's node keeps a's session.
        drained, other = site.node(a.node), site.other(a.node)
        manager = BalancerManager(site.h.port)
        for balancer, member_scheme in (("gwe", "http"), ("gwe-ws", "ws")):
            manager.drain(balancer, worker_url(drained, scheme=member_scheme))
        a.keeps_its_session()

        # Killed, its visitors' sessions start again on the other node.
        websockets = drained.stats()["websockets_total"]
        drained.signal(signal.SIGKILL)
        for visitor in (a, b):
            if visitor.node == drained.name:
                visitor.rehandshakes_with(other.name)
            visitor.keeps_its_session()
        websockets += other.stats()["websockets_total"]
    check_console(prefix, "ab")
    check_access_log(site.h, protocol, transport, websockets, drained.name,
                     visitors=2)
