"""Who reaches what through the shipped configuration: visitors reach
/server from anywhere; balancer-manager, server-status and the Prometheus
metrics answer loopback (127.0.0.1, ::1) only.

"Anywhere else" is played on 127.0.0.0/8 with a client socket bound to
another source address (Linux gives a connection to 127.0.0.2 the source
127.0.0.1 unless the client binds one):

- 127.0.0.2 -> 127.0.0.2, an extra Listen given with -C: a connection from
  one of the server's own addresses to itself, which "Require local" would
  admit (the shipped config says why it does not use it);
- 127.0.0.3 -> 127.0.0.1: a client on another address, as from another
  host.

The commented admin-network block (a network, a password, HTTPS only) is
run as written, too.
"""

import base64
import http.client
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import harness
from harness import (SHIPPED_CONF, BalancerManager, ShippedHttpd, TlsHttpd,
                     http_get, make_cert)

ADMIN_PATHS = ("/balancer-manager", "/server-status", "/metrics")
# The lines httpd logs for each refused admin request.
DENIED = (r"AH01630: client denied by server configuration: "
          r"\S*/(balancer-manager|server-status|metrics)(,|$)")


def get_from(source, host, port, path, cookie=None):
    """GET path from host:port over a socket bound to the address source."""
    return http_get(port, path, cookie=cookie, host=host, source=source)


class RequireLocalHttpd(ShippedHttpd):
    """The shipped config with "Require local" where it says "Require ip
    127.0.0.1 ::1": what it would admit, to show that the test below
    tells the two apart."""

    conf_path = property(lambda self: self.root / "require-local.conf")

    def __init__(self, root, module_so, nodes):
        super().__init__(root, module_so, nodes)
        text = SHIPPED_CONF.read_text()
        assert text.count("Require ip 127.0.0.1 ::1") == len(ADMIN_PATHS)
        self.conf_path.write_text(text.replace("Require ip 127.0.0.1 ::1",
                                               "Require local"))


def start_two_addresses(cls, tmp_path, module_so, nodes):
    h = cls(tmp_path / "shipped", module_so, nodes)
    port2 = harness.free_port()
    h.directives.append("Listen 127.0.0.2:%d" % port2)
    h.start()
    return h, port2


def test_admin_pages_only_from_loopback(tmp_path, module_so, make_node):
    nodes = [make_node("GWE_Node_1"), make_node("GWE_Node_2")]
    h, port2 = start_two_addresses(ShippedHttpd, tmp_path, module_so, nodes)
    h.allow(DENIED)

    # Loopback: both pages.
    assert BalancerManager(h.port).status()["gwe"]["lbmethod"] == \
        "gwesticky"
    status = get_from("127.0.0.1", "127.0.0.1", h.port,
                      "/server-status?auto")
    assert status.status == 200 and "ServerVersion:" in status.text
    assert get_from("127.0.0.1", "127.0.0.2", port2,
                    "/server-status?auto").status == 200
    metrics = get_from("127.0.0.1", "127.0.0.1", h.port, "/metrics")
    assert metrics.status == 200 and metrics.node is None
    assert metrics.headers["Content-Type"].startswith("text/plain; "
                                                      "version=0.0.4")

    # This server's own other address, and another client: refused.
    others = [("127.0.0.2", "127.0.0.2", port2),
              ("127.0.0.3", "127.0.0.1", h.port)]
    for source, host, port in others:
        for path in ADMIN_PATHS + ("/balancer-manager?xml=1",
                                   "/server-status?auto"):
            assert get_from(source, host, port, path).status == 403, \
                (source, host, path)

    # Visitors come from anywhere, with their routes.
    for source, host, port in others:
        for node in nodes:
            r = get_from(source, host, port, "/server/about",
                         cookie="GWROUTEID=." + node.name)
            assert r.status == 200 and r.node == node.name

    # What loopback sees there: httpd's status and the routing counters.
    status = get_from("127.0.0.1", "127.0.0.1", h.port,
                      "/server-status?auto")
    assert re.search(r"(?m)^GWEBalancer gwe GWE_Node_1 sticky: [1-9]",
                     status.text), status.text

    denied = [line for line in h.error_log().splitlines()
              if re.search(DENIED, line)]
    assert len(denied) == 2 * 5
    assert {re.search(r"\[client ([\d.]+):", line).group(1)
            for line in denied} == {"127.0.0.2", "127.0.0.3"}


def test_require_local_would_admit_the_servers_own_address(
        tmp_path, module_so, make_node):
    """Why not "Require local": it admits a connection from one of this
    server's own addresses to itself (and all of 127.0.0.0/8)."""
    nodes = [make_node("GWE_Node_1"), make_node("GWE_Node_2")]
    h, port2 = start_two_addresses(RequireLocalHttpd, tmp_path, module_so,
                                   nodes)
    h.allow(DENIED)
    assert get_from("127.0.0.2", "127.0.0.2", port2,
                    "/server-status?auto").status == 200
    # 127.0.0.3 -> 127.0.0.1: in 127.0.0.0/8, so "local" as well.
    assert get_from("127.0.0.3", "127.0.0.1", h.port,
                    "/server-status?auto").status == 200


def test_admin_pages_are_not_proxied(shipped):
    """/server-status starts with "/server": neither ProxyPass "/server"
    nor <Location "/server"> (Require all granted) takes it."""
    h, nodes = shipped
    page = BalancerManager(h.port).page()
    assert "Load Balancer Manager" in page
    r = http_get(h.port, "/server-status")
    assert r.status == 200 and r.node is None
    assert "Apache Server Status" in r.text
    assert not re.search(r"GET /(balancer-manager|server-status)\S* .* "
                         r"member=GWE", h.access_log())


def test_favicon_is_a_quiet_404(shipped):
    """A browser opening balancer-manager also asks for /favicon.ico:
    that is a 404, not an access-denied error in the log (the autouse
    log check fails the test on any error line)."""
    h, nodes = shipped
    r = http_get(h.port, "/favicon.ico", headers={
        "Referer": "http://127.0.0.1:%d/balancer-manager" % h.port})
    assert r.status == 404 and r.node is None


class AdminNetworkHttpd(TlsHttpd):
    """The shipped config, HTTPS on, with its commented admin-network
    block put in balancer-manager's <Location> in place of "Require ip",
    as the comment says: network and password file ours."""

    conf_path = property(lambda self: self.root / "admin-network.conf")
    MODULES = ["auth_basic", "authn_core", "authn_file", "authz_user"]

    def __init__(self, root, module_so, nodes, cert, key, network,
                 password_file):
        super().__init__(root, module_so, nodes, cert, key)
        text = SHIPPED_CONF.read_text()
        block = re.search(r"(?m)^#   AuthType Basic\n(?:#   .*\n)*?"
                          r"#   </RequireAll>\n", text).group(0)
        block = "".join("    " + line[4:] + "\n"
                        for line in block.splitlines())
        assert block.count("192.0.2.0/24") == 1
        block = block.replace("192.0.2.0/24", network).replace(
            "/etc/apache2/gwe-admins.htpasswd", str(password_file))
        manager = ('<Location "/balancer-manager">\n'
                   '    SetHandler balancer-manager\n')
        old = manager + "    Require ip 127.0.0.1 ::1\n"
        assert text.count(old) == 1
        text = text.replace(old, manager + block)
        loads = ""
        for name in self.MODULES:
            assert name + "_module" in text        # the comment names it
            loads += "LoadModule %s_module ${GWE_MODULES}/mod_%s.so\n" % (
                name, name)
        anchor = "LoadModule gwe_balancer_module"
        text = text.replace(anchor, loads + anchor, 1)
        self.conf_path.write_text(text)


def test_commented_admin_network_with_password(tmp_path, module_so,
                                               make_node, request):
    nodes = [make_node("GWE_Node_1"), make_node("GWE_Node_2")]
    # The children (www-data) read the password file at each request: not
    # under pytest's tmp dirs (mode 0700).
    shared = Path(tempfile.mkdtemp(prefix="gwb-htpasswd-"))
    request.addfinalizer(lambda: shutil.rmtree(shared))
    os.chmod(shared, 0o755)
    password_file = shared / "admins.htpasswd"
    subprocess.run(["htpasswd", "-c", "-B", "-b", str(password_file),
                    "admin", "s3cret"], check=True,
                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    os.chmod(password_file, 0o644)
    cert, key = make_cert(tmp_path / "tls")
    h = AdminNetworkHttpd(tmp_path / "shipped", module_so, nodes, cert, key,
                          "127.0.0.3/32", password_file)
    h.allow(DENIED)
    h.allow(r"AH01617: user admin: authentication failure for "
            r"\"/balancer-manager\": Password Mismatch")
    h.start()
    referer = "https://127.0.0.1:%d/balancer-manager" % h.tls_port

    def manager(source, password=None, tls=True):
        headers = {"Referer": referer, "Connection": "close"}
        if password:
            headers["Authorization"] = "Basic " + base64.b64encode(
                ("admin:" + password).encode()).decode()
        if tls:
            conn = http.client.HTTPSConnection(
                "127.0.0.1", h.tls_port, context=h.context(), timeout=10,
                source_address=(source, 0))
        else:
            conn = http.client.HTTPConnection(
                "127.0.0.1", h.port, timeout=10, source_address=(source, 0))
        try:
            conn.request("GET", "/balancer-manager", headers=headers)
            resp = conn.getresponse()
            resp.read()
            return resp.status
        finally:
            conn.close()

    assert manager("127.0.0.3", "s3cret") == 200
    assert manager("127.0.0.3") == 401
    assert manager("127.0.0.3", "wrong") == 401
    assert manager("127.0.0.3", "s3cret", tls=False) == 403
    assert manager("127.0.0.2", "s3cret") == 403
    assert manager("127.0.0.1", "s3cret") == 403
    # server-status kept its loopback-only line.
    assert get_from("127.0.0.3", "127.0.0.1", h.port,
                    "/server-status").status == 403
