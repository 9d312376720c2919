"""The shipped configuration's HTTPS front (conf/httpd-gwe-balancer.conf, section
7), run as a user runs it: -D GWE_TLS (here -C "Define GWE_TLS") and the
certificate Defines of section 2, with a throwaway self-signed certificate
for 127.0.0.1 that every client here verifies (no -k, no CERT_NONE).

Over HTTPS, HTTP/2 and wss:// each node's cookie reaches its node, and new
visitors spread; the TLS virtual host and plain HTTP share one balancer
(one state, one balancer-manager); only TLS 1.2 and 1.3 are offered; and
the commented variant for nodes that serve HTTPS themselves (https:// and
wss:// members, verified against their CA) works as written."""

import asyncio
import re
import ssl
import subprocess
import threading

import pytest

import harness
from harness import (SHIPPED_CONF, BalancerManager, ShippedHttpd, TlsHttpd,
                     cometd_connect, cometd_handshake, http_get, make_cert,
                     route_cookie, wait_until, worker_url, ws_cometd_sessions)


@pytest.fixture
def cert(tmp_path):
    return make_cert(tmp_path / "tls")


@pytest.fixture
def tls(tmp_path, module_so, make_node, cert):
    nodes = [make_node("GWE_Node_1"), make_node("GWE_Node_2")]
    h = TlsHttpd(tmp_path / "shipped", module_so, nodes, *cert)
    h.start()
    yield h, nodes
    h.stop()


# ---------------------------------------------------------------------------

def test_tls_config_parses_with_its_defaults(tmp_path, module_so, cert):
    """Section 7 as printed: HTTPS on *:443 (GWE_TLS_LISTEN's default) and
    the example nodes; only the certificate paths and this machine's
    paths given.  apache2 -t binds nothing."""
    h = ShippedHttpd(tmp_path / "asprinted", module_so, [])
    h.defines.update({"GWE_TLS": None, "GWE_TLS_CERT": str(cert[0]),
                      "GWE_TLS_KEY": str(cert[1])})
    rc, out = h.configtest()
    assert rc == 0 and "Syntax OK" in out, out


def test_https_routes_by_cookie(tls):
    h, nodes = tls
    for node in nodes:
        for cookie in ["GWROUTEID=." + node.name,
                       'GWROUTEID=".%s"' % node.name,
                       "GWEROUTEID=." + node.name,
                       "other=1; GWROUTEID=.%s; more=2" % node.name]:
            r = h.https_get("/server/about", cookie=cookie)
            assert r.status == 200 and r.node == node.name, cookie
    new = [h.https_get("/server/about").node for _ in range(6)]
    assert sorted(new) == ["GWE_Node_1"] * 3 + ["GWE_Node_2"] * 3
    wait_until(lambda: len(h.decisions()) >= 14, 5, what="14 log lines")
    assert h.decisions() == ["sticky"] * 8 + ["new"] * 6


def test_https_keeps_cometd_sessions(tls):
    h, nodes = tls
    for _ in range(4):
        client_id, cookie = cometd_handshake(h.tls_port, ssl=h.context())
        for _ in range(3):
            assert cometd_connect(h.tls_port, client_id, cookie,
                                  ssl=h.context()) is True


def test_wss_routes_by_cookie(tls):
    h, nodes = tls
    for node in nodes:
        for cookie in ["GWROUTEID=." + node.name,
                       'GWEROUTEID=".%s"' % node.name]:
            assert h.wss_node(cookie) == node.name
    new = [h.wss_node() for _ in range(6)]
    assert sorted(new) == ["GWE_Node_1"] * 3 + ["GWE_Node_2"] * 3


def test_wss_keeps_cometd_sessions(tls):
    h, nodes = tls
    visitors = [nodes[i % 2] for i in range(6)]
    assert ws_cometd_sessions(h.tls_port, map(route_cookie, visitors), 5,
                              ssl=h.context()) == \
        [(node.name, [True] * 5) for node in visitors]


def test_http2_routes_by_cookie(tls):
    h, nodes = tls
    for node in nodes:
        r = h.h2_get("/server/about", ["GWROUTEID=." + node.name])
        assert (r.version, r.status, r.node) == ("HTTP/2", 200, node.name)
        # Browsers send HTTP/2 cookies as separate fields ("crumbs").
        r = h.h2_get("/server/about", ["a=1", "GWROUTEID=." + node.name,
                                       "b=2"])
        assert (r.version, r.status, r.node) == ("HTTP/2", 200, node.name)
    new = [h.h2_get("/server/about").node for _ in range(4)]
    assert sorted(new) == ["GWE_Node_1"] * 2 + ["GWE_Node_2"] * 2
    # Plain HTTP offers no h2c: curl stays on HTTP/1.1 there.
    out = subprocess.run(
        ["curl", "--http2", "-sS", "-o", "/dev/null", "-w",
         "%{http_version}", "http://127.0.0.1:%d/server/about" % h.port],
        stdout=subprocess.PIPE, timeout=15).stdout.decode()
    assert out == "1.1"


def test_https_and_http_share_one_balancer(tls):
    """The TLS virtual host holds no mod_proxy directive, so it uses the
    main server's balancers themselves: one shared state, not a copy."""
    h, nodes = tls
    manager = BalancerManager(h.port)

    def snames(page):
        return re.findall(r"</a> \[(\w+)\]</h3>", page)
    tls_page = h.https_get("/balancer-manager", headers={
        "Referer": "https://127.0.0.1:%d/balancer-manager" % h.tls_port})
    assert tls_page.status == 200
    assert snames(tls_page.text) == snames(manager.page())
    assert len(snames(tls_page.text)) == 2

    # Drained over plain HTTP: HTTPS visitors see it at once.
    manager.drain("gwe", worker_url(nodes[0]))
    assert {h.https_get("/server/about").node for _ in range(4)} == \
        {"GWE_Node_2"}
    assert h.https_get("/server/about",
                       cookie="GWROUTEID=.GWE_Node_1").node == "GWE_Node_1"
    manager.drain("gwe", worker_url(nodes[0]), on=False)

    # Nodes learn the visitor's scheme.
    assert h.https_get("/server/headers").json()[
        "X-Forwarded-Proto"] == "https"
    assert http_get(h.port, "/server/headers").json()[
        "X-Forwarded-Proto"] == "http"
    # server-status answers loopback over HTTPS too.
    assert h.https_get("/server-status?auto").status == 200


@pytest.mark.parametrize("version,offered", [
    ("-tls1_3", True), ("-tls1_2", True), ("-tls1_1", False),
    ("-tls1", False)])
def test_tls_versions(tls, version, offered):
    """TLS 1.2 and 1.3 only.  The client allows every cipher
    (SECLEVEL=0), so a refusal is the server's."""
    h, nodes = tls
    proc = subprocess.run(
        ["openssl", "s_client", "-brief", "-connect",
         "127.0.0.1:%d" % h.tls_port, "-CAfile", str(h.cert),
         "-verify_return_error", version, "-cipher", "DEFAULT@SECLEVEL=0"],
        input=b"", stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        timeout=30)
    out = proc.stdout.decode(errors="replace")
    if offered:
        assert proc.returncode == 0 and "Verification: OK" in out, out
    else:
        assert proc.returncode != 0 and "alert protocol version" in out, out


# ---------------------------------------------------------------------------
# Nodes that serve HTTPS themselves: the commented variant of section 6.

class TlsFront:
    """TLS on a port of 127.0.0.1 in front of a demo node's plain port: a
    GWE node that serves HTTPS (and wss://) itself.  asyncio, in a thread
    of its own."""

    def __init__(self, node, cert, key):
        self.node = node
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(str(cert), str(key))
        self.loop = asyncio.new_event_loop()
        self.port = None
        ready = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(ready,),
                                       daemon=True)
        self.thread.start()
        if not ready.wait(10):
            raise harness.HarnessError("TLS front did not start")

    @property
    def name(self):
        return self.node.name

    def _run(self, ready):
        asyncio.set_event_loop(self.loop)
        self.server = self.loop.run_until_complete(asyncio.start_server(
            self._client, "127.0.0.1", 0, ssl=self.ctx))
        self.port = self.server.sockets[0].getsockname()[1]
        ready.set()
        self.loop.run_forever()

    async def _client(self, reader, writer):
        try:
            up_reader, up_writer = await asyncio.open_connection(
                "127.0.0.1", self.node.port)
        except OSError:
            writer.close()
            return

        async def pipe(src, dst):
            try:
                while True:
                    data = await src.read(65536)
                    if not data:
                        break
                    dst.write(data)
                    await dst.drain()
            except (OSError, ssl.SSLError):
                pass
            finally:
                dst.close()
        await asyncio.gather(pipe(reader, up_writer),
                             pipe(up_reader, writer))

    def stop(self):
        async def close():
            self.server.close()
            await self.server.wait_closed()
        asyncio.run_coroutine_threadsafe(close(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


class TlsMembersHttpd(TlsHttpd):
    """The shipped config with section 6's commented variant applied, as
    its comment says: https:// and wss:// members, and the SSLProxy lines
    uncommented, naming ca as the nodes' CA."""

    conf_path = property(lambda self: self.root / "tls-members.conf")

    def __init__(self, root, module_so, fronts, cert, key, ca):
        super().__init__(root, module_so, fronts, cert, key)
        text = SHIPPED_CONF.read_text()
        for scheme, tls_scheme in (("http", "https"), ("ws", "wss")):
            old = 'BalancerMember "%s://${GWE_NODE_' % scheme
            assert text.count(old) == 2
            text = text.replace(old, 'BalancerMember "%s://${GWE_NODE_'
                                % tls_scheme)
        for line in ("SSLProxyEngine on", "SSLProxyVerify require",
                     "SSLProxyCheckPeerName on"):
            assert text.count("\n#%s\n" % line) == 1
            text = text.replace("\n#%s\n" % line, "\n%s\n" % line)
        text, n = re.subn(r"^#SSLProxyCACertificateFile \S+$",
                          "SSLProxyCACertificateFile " + str(ca), text,
                          flags=re.M)
        assert n == 1
        self.conf_path.write_text(text)


def test_https_and_wss_members(tmp_path, module_so, make_node, cert):
    nodes = [make_node("GWE_Node_1"), make_node("GWE_Node_2")]
    # The nodes' certificate, self-signed: the config names it as their
    # CA, and httpd checks that it signed what each node presents.
    node_cert = make_cert(tmp_path / "node-tls")
    fronts = [TlsFront(node, *node_cert) for node in nodes]
    try:
        h = TlsMembersHttpd(tmp_path / "shipped", module_so, fronts,
                            *cert, ca=node_cert[0])
        h.start()
        try:
            for node in nodes:
                cookie = "GWROUTEID=." + node.name
                assert http_get(h.port, "/server/about",
                                cookie=cookie).node == node.name
                assert h.https_get("/server/about",
                                   cookie=cookie).node == node.name
                assert h.wss_node(cookie) == node.name
            assert sorted(h.https_get("/server/about").node
                          for _ in range(4)) == \
                ["GWE_Node_1"] * 2 + ["GWE_Node_2"] * 2
            members = BalancerManager(h.port).status()
            assert sorted(members["gwe"]["members"]) == sorted(
                "https://127.0.0.1:%d/server" % f.port for f in fronts)
            assert sorted(members["gwe-ws"]["members"]) == sorted(
                "wss://127.0.0.1:%d/server" % f.port for f in fronts)
            # The health checks pass over TLS: a node failing its isAlive
            # leaves, and comes back.
            nodes[1].alive(False)
            wait_until(lambda: h.https_get(
                "/server/about", cookie="GWROUTEID=.GWE_Node_2").node ==
                "GWE_Node_1", 20, interval=0.5, what="GWE_Node_2 out")
            nodes[1].alive(True)
            wait_until(lambda: h.https_get(
                "/server/about", cookie="GWROUTEID=.GWE_Node_2").node ==
                "GWE_Node_2", 20, interval=0.5, what="GWE_Node_2 back")
        finally:
            h.stop()
    finally:
        for front in fronts:
            front.stop()


def test_tls_members_are_verified(tmp_path, module_so, make_node, cert):
    """SSLProxyVerify require: nodes whose certificate the configured CA
    did not sign get no request: the handshake fails, and the visitor gets
    500 (Proxy Error) once every member failed."""
    nodes = [make_node("GWE_Node_1"), make_node("GWE_Node_2")]
    stranger = make_cert(tmp_path / "stranger-tls")
    fronts = [TlsFront(node, *stranger) for node in nodes]
    try:
        # The config names another CA than `stranger`.
        h = TlsMembersHttpd(tmp_path / "shipped", module_so, fronts, *cert,
                            ca=cert[0])
        for rx in [r"AH02039: Certificate Verification: Error",
                   r"AH00898: Error during SSL Handshake with remote server",
                   r"AH01084: pass request body failed",
                   r"AH01097: pass request body failed"]:
            h.allow(rx)
        h.start()
        try:
            r = http_get(h.port, "/server/about",
                         cookie="GWROUTEID=.GWE_Node_1")
            assert r.status == 500 and r.node is None
            assert "AH02039: Certificate Verification: Error (18): " \
                "self-signed certificate" in h.error_log()
            assert [n.stats()["requests"] for n in nodes] == [0, 0]
        finally:
            h.stop()
    finally:
        for front in fronts:
            front.stop()


class RedirectHttpd(TlsHttpd):
    """The shipped config with its commented plain-HTTP-to-HTTPS redirect
    uncommented, as the comment says."""

    conf_path = property(lambda self: self.root / "redirect.conf")

    def __init__(self, *args):
        super().__init__(*args)
        text = SHIPPED_CONF.read_text()
        lines = ["LoadModule rewrite_module ${GWE_MODULES}/mod_rewrite.so",
                 "RewriteEngine On", "RewriteCond %{HTTPS} !=on"]
        for line in lines:
            assert text.count("\n#%s\n" % line) == 1, line
            text = text.replace("\n#%s\n" % line, "\n%s\n" % line)
        text, n = re.subn(r"^#(RewriteRule .*)$", r"\1", text, flags=re.M)
        assert n == 1
        self.conf_path.write_text(text)


def test_commented_redirect_to_https(tmp_path, module_so, make_node, cert):
    nodes = [make_node("GWE_Node_1"), make_node("GWE_Node_2")]
    h = RedirectHttpd(tmp_path / "shipped", module_so, nodes, *cert)
    h.READY_PATH = "/server-status"
    h.start()
    r = http_get(h.port, "/server/about?x=1&y=2",
                 cookie="GWROUTEID=.GWE_Node_2")
    assert r.status == 301 and r.node is None
    assert r.headers["Location"] == "https://127.0.0.1/server/about?x=1&y=2"
    r = h.https_get("/server/about?x=1", cookie="GWROUTEID=.GWE_Node_2")
    assert r.status == 200 and r.node == "GWE_Node_2"
    assert h.wss_node("GWROUTEID=.GWE_Node_1") == "GWE_Node_1"
    # The admin pages stay on plain HTTP, for loopback.
    assert BalancerManager(h.port).status()["gwe"]["lbmethod"] == \
        "gwesticky"
    assert http_get(h.port, "/server-status?auto").status == 200
