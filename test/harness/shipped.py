"""The shipped configuration, conf/httpd-gwe-balancer.conf, run as a user
runs it (ShippedHttpd), and with its HTTPS front on (TlsHttpd)."""

import re
import ssl
import subprocess
from pathlib import Path

from .base import APACHE2, MODULES_DIR, REPO_DIR, free_port
from .clients import curl_get, http_request, ws_node, ws_talk
from .httpd import Httpd

SHIPPED_CONF = REPO_DIR / "conf" / "httpd-gwe-balancer.conf"

# This machine's apache2 2.4.71 was built against OpenSSL 3.0.22 and runs
# with an older libssl3 (3.0.19): mod_ssl warns so at every start.  About
# the installation, not about the configuration.
TLS_ENVIRONMENT_WARNINGS = [r"\[ssl:warn\].* AH01882: "]


def shipped_defines(root, port, module_so, nodes):
    """The Defines that run conf/httpd-gwe-balancer.conf under root (logs/,
    run/, and modules/: links to the system's modules and to module_so),
    listening on 127.0.0.1:port, in front of nodes (each with .name, the
    node's name, and .port).  test/ and bench/ run the file this way."""
    root = Path(root)
    modules = root / "modules"
    for sub in ("logs", "run", "modules"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for so in MODULES_DIR.glob("*.so"):
        link = modules / so.name
        if not link.is_symlink():
            link.symlink_to(so)
    gwe = modules / "mod_gwe_balancer.so"
    if gwe.is_symlink():
        gwe.unlink()
    gwe.symlink_to(module_so)
    defines = {
        "GWE_LISTEN": "127.0.0.1:%d" % port,
        "GWE_MODULES": str(modules),
        "GWE_LOGS": str(root / "logs"),
        "GWE_RUN": str(root / "run"),
    }
    for i, node in enumerate(nodes, 1):
        defines["GWE_NODE_%d_NAME" % i] = node.name
        defines["GWE_NODE_%d_ADDR" % i] = "127.0.0.1:%d" % node.port
    return defines


class ShippedHttpd(Httpd):
    """httpd running conf/httpd-gwe-balancer.conf itself, unchanged: what a user
    edits (the node block) and this machine's paths come as -C "Define"s,
    which the file's defaults give way to.  .defines: NAME -> value (None:
    "Define NAME" alone, for <IfDefine NAME>); .directives: more -C
    directives, given before the Defines (e.g. another Listen);
    .overrides: -c directives, read after the file, so that they replace
    its settings (e.g. shorter GWEBalancerTunnelRecycle times)."""

    # The shipped config answers only /server (and balancer-manager), so
    # readiness is a node's isAlive through the balancer.
    READY_PATH = "/server/isAlive"
    conf_path = property(lambda self: SHIPPED_CONF)
    pid_path = property(lambda self: self.root / "run" / "gwe-balancer.pid")
    error_log_path = property(
        lambda self: self.root / "logs" / "gwe-balancer-error.log")
    access_log_path = property(
        lambda self: self.root / "logs" / "gwe-balancer-access.log")

    def __init__(self, root, module_so, nodes):
        super().__init__(root)
        self.directives = []
        self.overrides = []
        self.defines = shipped_defines(self.root, self.port, module_so,
                                       nodes)

    def _cmd(self, *args):
        cmd = [APACHE2, "-d", str(self.root), "-f",
               str(self.conf_path)]
        for directive in self.directives:
            cmd += ["-C", directive]
        for name, value in self.defines.items():
            cmd += ["-C", "Define %s" % name if value is None
                    else "Define %s %s" % (name, value)]
        for directive in self.overrides:
            cmd += ["-c", directive]
        return cmd + list(args)

    def decisions(self):
        """The routing decisions of the /server/about requests."""
        return re.findall(r"GET /server/about .* decision=(\S+)",
                          self.access_log())


def make_cert(directory, name="127.0.0.1", signer=None):
    """A throwaway certificate for the IP address name (in the
    subjectAltName, which clients check for an IP, and the CN, which
    httpd compares with ServerName and SSLProxyCheckPeerName uses); not a
    CA (mod_ssl warns about a server certificate that is one); signed by
    signer, (CA certificate path, its key path), else self-signed.
    Returns (cert path, key path)."""
    directory.mkdir(parents=True, exist_ok=True)
    cert, key = directory / "cert.pem", directory / "key.pem"
    signed_by = ["-CA", str(signer[0]), "-CAkey", str(signer[1])] \
        if signer else []
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes",
         "-days", "1", "-subj", "/CN=" + name,
         "-addext", "subjectAltName=IP:" + name,
         "-addext", "basicConstraints=critical,CA:FALSE",
         "-keyout", str(key), "-out", str(cert)] + signed_by,
        check=True, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, timeout=60)
    return cert, key


class TlsHttpd(ShippedHttpd):
    """The shipped config with its HTTPS front on: GWE_TLS defined, the
    certificate and key, HTTPS on 127.0.0.1:tls_port, and ServerName
    127.0.0.1 (what the certificate names)."""

    def __init__(self, root, module_so, nodes, cert, key):
        super().__init__(root, module_so, nodes)
        self.cert = cert
        self.tls_port = free_port()
        self.defines.update({
            "GWE_TLS": None,
            "GWE_TLS_NAME": "127.0.0.1",
            "GWE_TLS_CERT": str(cert),
            "GWE_TLS_KEY": str(key),
            "GWE_TLS_LISTEN": "127.0.0.1:%d" % self.tls_port,
        })
        for rx in TLS_ENVIRONMENT_WARNINGS:
            self.allow(rx)

    def context(self):
        """A client TLS context that trusts only our certificate, and
        checks that it names 127.0.0.1."""
        return ssl.create_default_context(cafile=str(self.cert))

    def https(self, method, path, body=None, cookie=None, headers=None):
        """One request to the HTTPS front (see http_request())."""
        return http_request(method, self.tls_port, path, body=body,
                            cookie=cookie, headers=headers,
                            ssl=self.context())

    def https_get(self, path, cookie=None, headers=None):
        return self.https("GET", path, cookie=cookie, headers=headers)

    async def wss_talk(self, cookie=None, messages=("hello",),
                       path="/server/cometd"):
        """Open a wss:// WebSocket, send each message; return (the node
        that answered the 101, the replies)."""
        return await ws_talk(self.tls_port, cookie, messages, path,
                             ssl=self.context())

    def wss_node(self, cookie=None):
        """The node that answered a wss:// WebSocket opened with cookie."""
        return ws_node(self.tls_port, cookie, ssl=self.context())

    def h2_get(self, path, cookies=(), timeout=10):
        """GET over HTTP/2 in TLS (ALPN h2), by curl, verifying the
        certificate; each item of cookies is sent as its own cookie field
        (see curl_get())."""
        return curl_get("https://127.0.0.1:%d%s" % (self.tls_port, path),
                        cookies, curl_args=["--http2", "--cacert",
                                            str(self.cert)], timeout=timeout)
