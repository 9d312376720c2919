"""Clients: HTTP/1.1 (one request, a keep-alive session, raw bytes), HTTP/2
cleartext (curl) and WebSocket (python3-websockets), each returning what
the test asserts on: the status, the headers, the body and which GWE node
answered."""

import asyncio
import email.message
import http.client
import json
import socket
import subprocess
import tempfile

from .base import HarnessError


class Response:
    """An HTTP response: .status, .reason, .headers (case-insensitive, an
    email.message.Message: .get(), .get_all()), .body (bytes), .version."""

    def __init__(self, status, reason, headers, body, version="HTTP/1.1"):
        self.status = status
        self.reason = reason
        self.headers = headers
        self.body = body
        self.version = version

    @property
    def text(self):
        return self.body.decode("utf-8", "replace")

    def json(self):
        return json.loads(self.body)

    @property
    def node(self):
        """The X-GWE-Node header (which GWE node answered), or None."""
        return self.headers.get("X-GWE-Node")

    @property
    def set_cookies(self):
        """Every Set-Cookie header value, in order."""
        return self.headers.get_all("Set-Cookie") or []

    def __repr__(self):
        return "<Response %s %s node=%s %d bytes>" % (
            self.status, self.reason, self.node, len(self.body))


def _header_items(headers):
    """headers as a list of (name, value): a dict, or a list of pairs (so
    that a name may repeat), or None."""
    if not headers:
        return []
    if isinstance(headers, dict):
        return list(headers.items())
    return list(headers)


def _cookie_items(cookie):
    """cookie as Cookie header pairs: None for no header, a str (or bytes)
    for one header sent byte-exact, a list for one header per item."""
    if cookie is None:
        return []
    if isinstance(cookie, (str, bytes)):
        cookie = [cookie]
    return [("Cookie", c) for c in cookie]


def _wire(value):
    """A header value as the bytes to send: a str as UTF-8 (http.client
    would encode it as latin-1, or refuse it), bytes as they are."""
    return value.encode("utf-8") if isinstance(value, str) else value


class _CountingConnection(http.client.HTTPConnection):
    """An HTTPConnection that counts the TCP connections it opened."""

    connects = 0

    def connect(self):
        super().connect()
        self.connects += 1


def _send(conn, method, path, body, headers, cookie, host, port):
    """Send one request on conn, with no header added but Host (unless
    given), Content-Length (when there is a body) and the given ones."""
    items = _header_items(headers) + _cookie_items(cookie)
    names = {name.lower() for name, _ in items}
    conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
    if "host" not in names:
        conn.putheader("Host", "%s:%d" % (host, port))
    if body is not None:
        if isinstance(body, str):
            body = body.encode("utf-8")
        if "content-length" not in names:
            conn.putheader("Content-Length", str(len(body)))
    for name, value in items:
        conn.putheader(name, _wire(value))
    # With bytes, endheaders() sends the headers and body in one write, which
    # matters to balancer-manager: it reads the POST body with one read.
    conn.endheaders(body)
    resp = conn.getresponse()
    data = resp.read()
    return Response(resp.status, resp.reason, resp.msg, data,
                    "HTTP/%d.%d" % divmod(resp.version, 10))


def http_request(method, port, path, body=None, headers=None, cookie=None,
                 timeout=10, host="127.0.0.1", ssl=None, source=None):
    """One request on a new connection, with Connection: close unless
    headers has a Connection header.  headers: dict or list of pairs (a
    name may repeat; a Host header replaces the default HOST:PORT); cookie:
    None (no Cookie header), a str sent byte-exact (UTF-8; or bytes), or a
    list of them sent as one Cookie header each.  Values with CR or LF are
    refused by http.client: send those with raw_http().  ssl: an
    SSLContext, for HTTPS; source: the client's address to bind."""
    # Connection: close (unless headers say otherwise): httpd need not keep
    # an idle connection of ours open until KeepAliveTimeout.
    if not any(name.lower() == "connection"
               for name, _ in _header_items(headers)):
        headers = _header_items(headers) + [("Connection", "close")]
    source_address = (source, 0) if source else None
    if ssl:
        conn = http.client.HTTPSConnection(host, port, timeout=timeout,
                                           context=ssl,
                                           source_address=source_address)
    else:
        conn = http.client.HTTPConnection(host, port, timeout=timeout,
                                          source_address=source_address)
    try:
        return _send(conn, method, path, body, headers, cookie, host, port)
    finally:
        conn.close()


def http_get(port, path, headers=None, cookie=None, **kw):
    """GET path; see http_request() for kw."""
    return http_request("GET", port, path, headers=headers, cookie=cookie,
                        **kw)


class HttpSession:
    """A keep-alive HTTP/1.1 connection.  It reconnects only when the
    server closed it at the end of a response; .connects counts the TCP
    connections opened, to assert reuse."""

    def __init__(self, port, host="127.0.0.1", timeout=10):
        self.port = port
        self.host = host
        self.conn = _CountingConnection(host, port, timeout=timeout)

    @property
    def connects(self):
        return self.conn.connects

    def request(self, method, path, body=None, headers=None, cookie=None):
        return _send(self.conn, method, path, body, headers, cookie,
                     self.host, self.port)

    def get(self, path, headers=None, cookie=None):
        return self.request("GET", path, headers=headers, cookie=cookie)

    def close(self):
        self.conn.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def raw_http(port, data, timeout=10, host="127.0.0.1"):
    """Send data (bytes, a whole HTTP/1.x request, unchecked) on a new
    connection and parse the response, for requests http.client refuses
    to build (e.g. headers with control characters)."""
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.sendall(data)
        resp = http.client.HTTPResponse(sock)
        resp.begin()
        body = resp.read()
        return Response(resp.status, resp.reason, resp.msg, body,
                        "HTTP/%d.%d" % divmod(resp.version, 10))


def h2c_get(port, path, cookies, headers=None, timeout=10, host="127.0.0.1"):
    """GET over HTTP/2 with prior knowledge (h2c), sending each item of
    cookies as its own `cookie` header field, as browsers send cookie
    "crumbs" (RFC 9113 8.2.3).  headers: more (name, value) fields.

    It runs curl --http2-prior-knowledge, which sends repeated -H fields as
    separate HTTP/2 fields (checked with curl 7.88.1 against a python3-h2
    server that does not join them: beware, python3-h2 joins received
    cookie crumbs unless normalize_inbound_headers=False).  curl drops the
    blanks that start a value, so a crumb cannot start with one."""
    return curl_get("http://%s:%d%s" % (host, port, path), cookies, headers,
                    ["--http2-prior-knowledge"], timeout)


def curl_get(url, cookies=(), headers=None, curl_args=(), timeout=10):
    """GET url with curl and curl_args (e.g. --http2, --cacert FILE),
    sending each item of cookies as its own `cookie` header field, then
    headers (name, value).  Returns the Response; .version is the status
    line's, e.g. "HTTP/2"."""
    cmd = ["curl"] + list(curl_args) + [
        "--silent", "--show-error", "--max-time", str(timeout),
        "--dump-header", "-"]
    for name, value in _header_items(headers) + [("cookie", c)
                                                   for c in cookies]:
        # "name:" alone would make curl remove the field; "name;" sends it
        # empty.
        cmd += ["-H", "%s: %s" % (name, value) if value else "%s;" % name]
    with tempfile.NamedTemporaryFile(prefix="curl-body-") as body_file:
        cmd += ["--output", body_file.name, url]
        proc = subprocess.run(cmd, stdin=subprocess.DEVNULL,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              timeout=timeout + 5)
        if proc.returncode != 0:
            raise HarnessError("curl exited %d: %s" % (
                proc.returncode, proc.stderr.decode(errors="replace")))
        body = body_file.read()
    head = proc.stdout.decode("latin-1")
    # Only the last header block counts (were there interim 1xx ones).
    block = head.strip("\r\n").split("\r\n\r\n")[-1]
    status_line, *lines = block.split("\r\n")
    version, status = status_line.split()[:2]
    msg = email.message.Message()
    for line in lines:
        name, _, value = line.partition(":")
        msg[name] = value.strip()
    return Response(int(status), "", msg, body, version)



async def ws_talk(port, cookie=None, messages=("hello",), path="/server/cometd",
                  ssl=None):
    """Open a WebSocket (wss:// with ssl, an SSLContext), send each
    message, return (X-GWE-Node of the 101, the replies)."""
    # Imported here, so that the rest of the harness needs only the
    # standard library.
    import websockets
    headers = {"Cookie": cookie} if cookie else None
    url = "%s://127.0.0.1:%d%s" % ("wss" if ssl else "ws", port, path)
    async with websockets.connect(url, ssl=ssl, extra_headers=headers,
                                  compression=None, open_timeout=10,
                                  ping_interval=None) as ws:
        replies = []
        for message in messages:
            await ws.send(message)
            replies.append(await asyncio.wait_for(ws.recv(), 10))
        return ws.response_headers.get("X-GWE-Node"), replies


def ws_node(port, cookie=None, ssl=None):
    """The node that answered a WebSocket opened with cookie (the demo
    node answers a message with "<node name>:<message>")."""
    node, replies = asyncio.run(ws_talk(port, cookie, ssl=ssl))
    if replies != ["%s:hello" % node]:
        raise HarnessError("WebSocket answered by %s replied %r"
                           % (node, replies))
    return node


# CometD as the demo node speaks it (test/gwe_node.py): a handshake hands out
# a clientId that only the node which made it knows.

def cometd_handshake(port, **kw):
    """A CometD handshake by long-polling, without a cookie, as a visitor's
    first request: (the clientId, the route cookie the node set, as
    NAME=VALUE).  kw go to http_request() (ssl, headers...)."""
    r = http_request("POST", port, "/server/cometd/handshake",
                     body=json.dumps([{"channel": "/meta/handshake"}]), **kw)
    if r.status != 200:
        raise HarnessError("CometD handshake -> %s %r" % (r.status, r.body))
    return r.json()[0]["clientId"], r.set_cookies[0].split(";")[0]


def cometd_connect(port, client_id, cookie, **kw):
    """One CometD /meta/connect by long-polling, sending cookie: whether
    it succeeded (false when a node that does not know client_id
    answered)."""
    r = http_request("POST", port, "/server/cometd/connect", cookie=cookie,
                     body=json.dumps([{"channel": "/meta/connect",
                                       "clientId": client_id}]), **kw)
    if r.status != 200:
        raise HarnessError("CometD connect -> %s %r" % (r.status, r.body))
    return r.json()[0]["successful"]


def ws_cometd_sessions(port, cookies, connects, ssl=None):
    """A CometD session over WebSocket for each cookie, all at once: a
    handshake on one WebSocket, then connects /meta/connect on another,
    both sending the cookie.  Returns, for each, (the node that answered
    the second, whether each connect succeeded)."""
    async def all_of_them():
        return await asyncio.gather(*(
            _ws_cometd_session(port, cookie, connects, ssl)
            for cookie in cookies))
    return asyncio.run(all_of_them())


async def _ws_cometd_session(port, cookie, connects, ssl):
    _, replies = await ws_talk(port, cookie, [
        json.dumps([{"channel": "/meta/handshake"}])], ssl=ssl)
    client_id = json.loads(replies[0])[0]["clientId"]
    node, replies = await ws_talk(port, cookie, [json.dumps(
        [{"channel": "/meta/connect", "clientId": client_id}])] * connects,
        ssl=ssl)
    return node, [json.loads(r)[0]["successful"] for r in replies]
