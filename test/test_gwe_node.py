"""Tests of the demo GWE node (test/gwe_node.py) on its own, no balancer.

Run with:  /usr/bin/python3 -m pytest -q test/test_gwe_node.py
"""

import base64
import hashlib
import http.client
import json
import os
import signal
import socket
import struct
import threading
import time

import pytest

import harness
from harness import http_request, wait_until

WEBSOCKET_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
TIMEOUT = 10


# ---------------------------------------------------------------------------
# Helpers: nodes, CometD, a raw-socket WebSocket client.
# ---------------------------------------------------------------------------

def module_node(name, tmp_path_factory):
    """A node started for a whole module, stopped after it."""
    node = harness.Node(name, log_dir=tmp_path_factory.mktemp("nodes"))
    yield node.start()
    node.stop()


@pytest.fixture(scope="module")
def node1(tmp_path_factory):
    yield from module_node("GWE_Node_1", tmp_path_factory)


@pytest.fixture(scope="module")
def node2(tmp_path_factory):
    yield from module_node("GWE_Node_2", tmp_path_factory)


def json_body(response):
    """The response's JSON body, which the node must label as JSON."""
    assert response.headers.get("Content-Type") == "application/json"
    return response.json()


def bayeux(node, messages, path="/server/cometd"):
    response = http_request("POST", node.port, path, json.dumps(messages),
                            {"Content-Type": "application/json"})
    assert response.status == 200
    return json_body(response)


def handshake(node):
    reply, = bayeux(node, [{"channel": "/meta/handshake", "id": "1"}])
    assert reply["successful"] is True
    return reply["clientId"]


def connect(node, client_id):
    reply, = bayeux(node, [{"channel": "/meta/connect", "clientId": client_id,
                            "connectionType": "long-polling", "id": "2"}])
    return reply


def assert_node_headers(response, name):
    assert response.headers.get("X-GWE-Node") == name
    assert response.headers.get("Set-Cookie") == "GWROUTEID=.%s; Path=/" % name


OP_CONTINUATION, OP_TEXT, OP_BINARY = 0x0, 0x1, 0x2
OP_CLOSE, OP_PING, OP_PONG = 0x8, 0x9, 0xA


class WebSocket:
    """A minimal RFC 6455 client on a raw socket."""

    def __init__(self, node, path="/server/cometd"):
        self.sock = socket.create_connection(("127.0.0.1", node.port), timeout=TIMEOUT)
        self.buffer = b""
        self.key = base64.b64encode(os.urandom(16)).decode("ascii")
        self.sock.sendall((
            "GET %s HTTP/1.1\r\n"
            "Host: 127.0.0.1:%d\r\n"
            "Upgrade: WebSocket\r\n"
            "Connection: keep-alive, Upgrade\r\n"
            "Sec-WebSocket-Key: %s\r\n"
            "Sec-WebSocket-Version: 13\r\n"
            "\r\n" % (path, node.port, self.key)).encode("ascii"))
        self.status, self.headers = self.read_response_head()

    def read_response_head(self):
        while b"\r\n\r\n" not in self.buffer:
            self.fill()
        head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        headers = {}
        for line in header_lines:
            name, value = line.split(":", 1)
            headers[name.strip().lower()] = value.strip()
        return int(status_line.split()[1]), headers

    def fill(self):
        data = self.sock.recv(65536)
        if not data:
            raise EOFError("connection closed")
        self.buffer += data

    def read_exactly(self, size):
        while len(self.buffer) < size:
            self.fill()
        data, self.buffer = self.buffer[:size], self.buffer[size:]
        return data

    def send_frame(self, opcode, payload, fin=True, masked=True):
        length = len(payload)
        first = (0x80 if fin else 0) | opcode
        mask_bit = 0x80 if masked else 0
        if length < 126:
            header = struct.pack("!BB", first, mask_bit | length)
        elif length < 1 << 16:
            header = struct.pack("!BBH", first, mask_bit | 126, length)
        else:
            header = struct.pack("!BBQ", first, mask_bit | 127, length)
        if masked:
            mask = os.urandom(4)
            payload = bytes(byte ^ mask[i % 4] for i, byte in enumerate(payload))
            header += mask
        self.sock.sendall(header + payload)

    def recv_frame(self):
        """(fin, opcode, payload) of one server frame, which must be unmasked."""
        first, second = self.read_exactly(2)
        assert second & 0x80 == 0, "server frames must not be masked"
        length = second & 0x7F
        if length == 126:
            length, = struct.unpack("!H", self.read_exactly(2))
        elif length == 127:
            length, = struct.unpack("!Q", self.read_exactly(8))
        return bool(first & 0x80), first & 0x0F, self.read_exactly(length)

    def send_text(self, text):
        self.send_frame(OP_TEXT, text.encode("utf-8"))

    def recv_text(self):
        fin, opcode, payload = self.recv_frame()
        assert (fin, opcode) == (True, OP_TEXT)
        return payload.decode("utf-8")

    def bayeux(self, messages):
        self.send_text(json.dumps(messages))
        return json.loads(self.recv_text())

    def at_eof(self):
        """True when the server closed the TCP connection."""
        try:
            self.fill()
        except EOFError:
            return True
        return False

    def close(self):
        self.sock.close()


@pytest.fixture
def websocket(node1):
    ws = WebSocket(node1)
    yield ws
    ws.close()


# ---------------------------------------------------------------------------
# Plain endpoints
# ---------------------------------------------------------------------------

def test_about_names_the_node_and_sets_the_route_cookie(node1, node2):
    for node in (node1, node2):
        response = node.get("/server/about")
        assert response.status == 200
        assert json_body(response) == {"node": node.name, "product": "GWE demo node"}
        assert_node_headers(response, node.name)


def test_is_alive_follows_the_control_switch(node1):
    response = node1.get("/server/isAlive")
    assert (response.status, response.body) == (200, b"OK")
    assert_node_headers(response, "GWE_Node_1")
    try:
        switched = node1.get("/_control/alive?state=down")
        assert json_body(switched) == {"node": "GWE_Node_1", "alive": False}
        response = node1.get("/server/isAlive")
        assert (response.status, response.body) == (503, b"DOWN")
        assert_node_headers(response, "GWE_Node_1")
    finally:
        node1.get("/_control/alive?state=up")
    response = node1.get("/server/isAlive")
    assert (response.status, response.body) == (200, b"OK")


def test_alive_switch_rejects_an_unknown_state(node1):
    assert node1.get("/_control/alive?state=sideways").status == 400
    assert node1.get("/server/isAlive").status == 200


def test_headers_echoes_the_request_headers(node1):
    connection = http.client.HTTPConnection("127.0.0.1", node1.port, timeout=TIMEOUT)
    try:
        connection.putrequest("GET", "/server/headers")
        connection.putheader("X-Forwarded-For", "192.0.2.7")
        connection.putheader("X-Repeated", "first")
        connection.putheader("X-Repeated", "second")
        connection.endheaders()
        response = connection.getresponse()
        headers = json.loads(response.read())
    finally:
        connection.close()
    assert response.status == 200
    assert headers["X-Forwarded-For"] == "192.0.2.7"
    assert headers["X-Repeated"] == ["first", "second"]
    assert headers["Host"] == "127.0.0.1:%d" % node1.port


def test_slow_waits_before_answering(node1):
    started = time.monotonic()
    response = node1.get("/server/slow?ms=300")
    assert response.status == 200
    assert json_body(response) == {"node": "GWE_Node_1", "slept_ms": 300}
    assert time.monotonic() - started >= 0.3
    assert node1.get("/server/slow?ms=soon").status == 400


def test_other_server_paths_answer_with_node_and_path(node1):
    response = node1.get("/server/some/page?x=1")
    assert response.status == 200
    assert json_body(response) == {"node": "GWE_Node_1", "path": "/server/some/page"}
    assert_node_headers(response, "GWE_Node_1")


def test_paths_outside_server_are_not_found_and_carry_no_cookie(node1):
    for path in ("/", "/serverx", "/_control/nothing"):
        response = node1.get(path)
        assert response.status == 404, path
        assert response.headers.get("Set-Cookie") is None
        assert response.headers.get("Content-Length") == str(len(response.body))


def test_head_has_headers_but_no_body(node1):
    connection = http.client.HTTPConnection("127.0.0.1", node1.port, timeout=TIMEOUT)
    try:
        connection.request("HEAD", "/server/about")
        response = connection.getresponse()
        assert response.read() == b""
        assert int(response.getheader("Content-Length")) > 0
        connection.request("GET", "/server/about")   # still in step
        assert json.loads(connection.getresponse().read())["node"] == "GWE_Node_1"
    finally:
        connection.close()


def test_stats_count_server_requests_only_and_reset_zeroes_them(node1):
    node1.get("/_control/reset")
    for path in ("/server/about", "/server/isAlive", "/server/x", "/nothing"):
        node1.get(path)
    counters = node1.stats()
    assert counters["node"] == "GWE_Node_1"
    assert counters["requests"] == 3
    assert set(counters) == {"node", "requests", "websockets_open",
                             "websockets_total", "sessions",
                             "unknown_clients"}
    assert node1.get("/_control/stats").headers.get("Set-Cookie") is None
    assert json_body(node1.get("/_control/reset"))["requests"] == 0
    assert node1.stats()["requests"] == 0


# ---------------------------------------------------------------------------
# CometD over long-polling
# ---------------------------------------------------------------------------

def test_handshake_then_connect_on_the_same_node(node1):
    client_id = handshake(node1)
    assert client_id.startswith("GWE_Node_1")
    reply = connect(node1, client_id)
    assert reply["successful"] is True
    assert reply["channel"] == "/meta/connect"
    assert reply["id"] == "2"
    assert reply["node"] == "GWE_Node_1"


def test_handshake_reply_shape(node1):
    response = http_request("POST", node1.port, "/server/cometd/handshake",
                       json.dumps([{"channel": "/meta/handshake", "id": "h1"}]))
    assert_node_headers(response, "GWE_Node_1")
    reply, = json_body(response)
    assert reply.pop("clientId")
    assert reply == {"channel": "/meta/handshake", "id": "h1", "successful": True,
                     "version": "1.0", "node": "GWE_Node_1",
                     "supportedConnectionTypes": ["websocket", "long-polling"]}


def test_client_ids_are_unique(node1):
    assert len({handshake(node1) for _ in range(20)}) == 20


def test_connect_with_another_nodes_client_id_fails(node1, node2):
    client_id = handshake(node1)
    reply = connect(node2, client_id)
    assert reply == {"channel": "/meta/connect", "id": "2", "successful": False,
                     "error": "402::Unknown client",
                     "advice": {"reconnect": "handshake"}, "node": "GWE_Node_2"}
    assert connect(node1, client_id)["successful"] is True


def test_a_made_up_client_id_with_the_right_prefix_fails(node1):
    reply = connect(node1, "GWE_Node_1-0123456789abcdef01234567")
    assert reply["error"] == "402::Unknown client"


def test_subscribe_publish_and_disconnect(node1):
    client_id = handshake(node1)
    sessions_before = node1.stats()["sessions"]
    subscribe, publish, echo = bayeux(node1, [
        {"channel": "/meta/subscribe", "clientId": client_id,
         "subscription": "/chat", "id": "3"},
        {"channel": "/chat", "clientId": client_id, "data": {"text": "hi"}, "id": "4"},
    ])
    assert subscribe["successful"] is True and subscribe["id"] == "3"
    # The acknowledgement has no data (CometD clients tell it from a
    # delivery by that); the echo, delivered next, has no id.
    assert publish == {"channel": "/chat", "clientId": client_id, "id": "4",
                       "successful": True, "node": "GWE_Node_1"}
    assert echo == {"channel": "/chat", "clientId": client_id,
                    "data": {"text": "hi"}, "node": "GWE_Node_1"}
    disconnect, = bayeux(node1, {"channel": "/meta/disconnect", "clientId": client_id})
    assert disconnect["successful"] is True
    assert "id" not in disconnect
    assert node1.stats()["sessions"] == sessions_before - 1
    assert connect(node1, client_id)["error"] == "402::Unknown client"


def test_publish_with_unknown_client_fails(node1):
    reply, = bayeux(node1, [{"channel": "/chat", "clientId": "nobody", "data": 1}])
    assert reply["successful"] is False
    assert reply["error"] == "402::Unknown client"
    assert "data" not in reply


def test_sessions_count_their_connects_and_publishes(node1, node2):
    client_id = handshake(node1)
    unknown = node2.stats()["unknown_clients"]
    for _ in range(2):
        connect(node1, client_id)
    for i in range(3):
        bayeux(node1, [{"channel": "/chat", "clientId": client_id, "data": i}])
    bayeux(node1, [{"channel": "/meta/subscribe", "clientId": client_id,
                    "subscription": "/chat"}])
    assert connect(node2, client_id)["error"] == "402::Unknown client"
    sessions = json_body(node1.get("/_control/sessions"))
    assert sessions[client_id] == {"connects": 2, "publishes": 3}
    assert client_id not in json_body(node2.get("/_control/sessions"))
    assert node2.stats()["unknown_clients"] == unknown + 1
    bayeux(node1, {"channel": "/meta/disconnect", "clientId": client_id})
    assert client_id not in json_body(node1.get("/_control/sessions"))


def test_get_handshake_and_connect_for_curl(node1, node2):
    response = node1.get("/server/cometd/handshake")
    assert_node_headers(response, "GWE_Node_1")
    client_id = json_body(response)[0]["clientId"]
    reply, = json_body(node1.get("/server/cometd/connect?clientId=" + client_id))
    assert reply["successful"] is True
    reply, = json_body(node2.get("/server/cometd/connect?clientId=" + client_id))
    assert reply["error"] == "402::Unknown client"


def test_bad_bayeux_body_is_a_400(node1):
    response = http_request("POST", node1.port, "/server/cometd", "not json")
    assert response.status == 400
    assert_node_headers(response, "GWE_Node_1")


def test_keep_alive_serves_many_requests_on_one_connection(node1):
    connection = http.client.HTTPConnection("127.0.0.1", node1.port, timeout=TIMEOUT)
    try:
        connection.connect()
        sock = connection.sock
        client_id = None
        for i in range(5):
            connection.request("GET", "/server/about")
            response = connection.getresponse()
            assert json.loads(response.read())["node"] == "GWE_Node_1"
            body = json.dumps([{"channel": "/meta/handshake"}] if client_id is None
                              else [{"channel": "/meta/connect", "clientId": client_id}])
            connection.request("POST", "/server/cometd", body)
            reply, = json.loads(connection.getresponse().read())
            assert reply["successful"] is True, i
            client_id = reply["clientId"]
            assert connection.sock is sock, "the node closed the connection"
    finally:
        connection.close()


def test_chunked_request_body(node1):
    connection = http.client.HTTPConnection("127.0.0.1", node1.port, timeout=TIMEOUT)
    try:
        connection.connect()
        sock = connection.sock
        parts = [b'[{"channel": "/meta/', b'handshake", ', b'"id": "c1"}]']
        connection.request("POST", "/server/cometd", body=iter(parts),
                           encode_chunked=True)
        reply, = json.loads(connection.getresponse().read())
        assert reply["id"] == "c1" and reply["successful"] is True
        connection.request("GET", "/server/about")     # body fully consumed
        assert json.loads(connection.getresponse().read())["node"] == "GWE_Node_1"
        assert connection.sock is sock
    finally:
        connection.close()


def test_chunked_body_with_extensions_and_trailers(node1):
    body = b'{"channel":"/meta/handshake","id":"t"}'
    with socket.create_connection(("127.0.0.1", node1.port), timeout=TIMEOUT) as sock:
        sock.sendall(b"POST /server/cometd HTTP/1.1\r\nHost: x\r\n"
                     b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
                     + b"%x;ext=1\r\n" % 10 + body[:10] + b"\r\n"
                     + b"%x\r\n" % (len(body) - 10) + body[10:] + b"\r\n"
                     + b"0\r\nX-Trailer: yes\r\n\r\n")
        data = b""
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    head, _, payload = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    assert b"Content-Length: %d" % len(payload) in head
    assert json.loads(payload)[0]["id"] == "t"


def test_a_client_that_disconnects_mid_request_does_not_hurt(node1):
    with socket.create_connection(("127.0.0.1", node1.port), timeout=TIMEOUT) as sock:
        sock.sendall(b"POST /server/cometd HTTP/1.1\r\nHost: x\r\n"
                     b"Content-Length: 100\r\n\r\n[{")
    with socket.create_connection(("127.0.0.1", node1.port), timeout=TIMEOUT) as sock:
        sock.sendall(b"GET /server/slow?ms=200 HTTP/1.1\r\nHost: x\r\n\r\n")
    assert node1.get("/server/about").status == 200


def test_many_concurrent_connections(node1):
    sockets = [socket.create_connection(("127.0.0.1", node1.port), timeout=TIMEOUT)
               for _ in range(200)]
    try:
        for sock in sockets:
            sock.sendall(b"GET /server/about HTTP/1.1\r\nHost: x\r\n\r\n")
        for sock in sockets:
            assert sock.recv(65536).startswith(b"HTTP/1.1 200")
    finally:
        for sock in sockets:
            sock.close()


# ---------------------------------------------------------------------------
# CometD over WebSocket
# ---------------------------------------------------------------------------

def test_websocket_handshake(websocket):
    expected = base64.b64encode(hashlib.sha1(
        (websocket.key + WEBSOCKET_GUID).encode("ascii")).digest()).decode("ascii")
    assert websocket.status == 101
    assert websocket.headers["sec-websocket-accept"] == expected
    assert websocket.headers["upgrade"].lower() == "websocket"
    assert websocket.headers["x-gwe-node"] == "GWE_Node_1"
    assert websocket.headers["set-cookie"] == "GWROUTEID=.GWE_Node_1; Path=/"


def test_websocket_without_key_is_refused(node1):
    with socket.create_connection(("127.0.0.1", node1.port), timeout=TIMEOUT) as sock:
        sock.sendall(b"GET /server/cometd HTTP/1.1\r\nHost: x\r\n"
                     b"Upgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
        assert sock.recv(65536).startswith(b"HTTP/1.1 400")


def test_websocket_bayeux_handshake_and_connect(websocket):
    reply, = websocket.bayeux([{"channel": "/meta/handshake", "id": "1"}])
    assert reply["successful"] is True and reply["id"] == "1"
    assert reply["clientId"].startswith("GWE_Node_1")
    reply, = websocket.bayeux({"channel": "/meta/connect", "id": "2",
                               "clientId": reply["clientId"]})
    assert reply["successful"] is True and reply["id"] == "2"
    assert reply["node"] == "GWE_Node_1"
    reply, = websocket.bayeux([{"channel": "/meta/connect", "clientId": "nobody"}])
    assert reply["error"] == "402::Unknown client"


def test_websocket_echoes_plain_text_with_the_node_name(websocket):
    websocket.send_text("hello")
    assert websocket.recv_text() == "GWE_Node_1:hello"
    websocket.send_text("42")                      # JSON, but not Bayeux
    assert websocket.recv_text() == "GWE_Node_1:42"
    websocket.send_text("h\u00e9llo")
    assert websocket.recv_text() == "GWE_Node_1:h\u00e9llo"


@pytest.mark.parametrize("size", [125, 126, 300, 65535, 65536, 200000])
def test_websocket_lengths_of_every_form(websocket, size):
    text = "x" * size
    websocket.send_text(text)
    assert websocket.recv_text() == "GWE_Node_1:" + text


def test_websocket_fragmented_message_with_a_ping_inside(websocket):
    websocket.send_frame(OP_TEXT, b"hel", fin=False)
    websocket.send_frame(OP_PING, b"are you there")
    websocket.send_frame(OP_CONTINUATION, b"l", fin=False)
    websocket.send_frame(OP_CONTINUATION, b"o", fin=True)
    assert websocket.recv_frame() == (True, OP_PONG, b"are you there")
    assert websocket.recv_text() == "GWE_Node_1:hello"


def test_websocket_ping_pong(websocket):
    websocket.send_frame(OP_PING, b"1234")
    assert websocket.recv_frame() == (True, OP_PONG, b"1234")
    websocket.send_frame(OP_PONG, b"unsolicited")   # ignored
    websocket.send_text("still here")
    assert websocket.recv_text() == "GWE_Node_1:still here"


def test_websocket_close(node1, websocket):
    wait_until(lambda: node1.stats()["websockets_open"] >= 1, TIMEOUT,
               what="the WebSocket to count as open")
    open_before = node1.stats()["websockets_open"]
    websocket.send_frame(OP_CLOSE, struct.pack("!H", 1000) + b"bye")
    assert websocket.recv_frame() == (True, OP_CLOSE, struct.pack("!H", 1000))
    assert websocket.at_eof()
    wait_until(lambda: node1.stats()["websockets_open"] == open_before - 1,
               TIMEOUT, what="the WebSocket to count as closed")


def test_websocket_echoes_binary_with_the_node_name(websocket):
    websocket.send_frame(OP_BINARY, b"\x00\xff")
    assert websocket.recv_frame() == (True, OP_BINARY, b"GWE_Node_1:\x00\xff")


@pytest.mark.parametrize("opcode, payload, masked", [
    (OP_TEXT, b"hello", False),           # clients must mask
    (0x3, b"hello", True),                # a reserved opcode
    (OP_CONTINUATION, b"hello", True),    # a continuation of nothing
    (OP_PING, b"x" * 126, True),          # control frames are short
], ids=["unmasked", "reserved-opcode", "stray-continuation", "long-ping"])
def test_websocket_protocol_errors_close_with_1002(websocket, opcode, payload, masked):
    websocket.send_frame(opcode, payload, masked=masked)
    assert websocket.recv_frame() == (True, OP_CLOSE, struct.pack("!H", 1002))
    assert websocket.at_eof()


def test_websocket_invalid_utf8_closes_with_1007(websocket):
    websocket.send_frame(OP_TEXT, b"\xff\xfe")
    assert websocket.recv_frame() == (True, OP_CLOSE, struct.pack("!H", 1007))
    assert websocket.at_eof()


def test_websocket_counters(node1):
    node1.get("/_control/reset")
    before = node1.stats()
    ws = WebSocket(node1)
    try:
        after = node1.stats()
        assert after["websockets_open"] == before["websockets_open"] + 1
        assert after["websockets_total"] == 1
        assert after["requests"] == 1
    finally:
        ws.close()
    wait_until(lambda: node1.stats()["websockets_open"] ==
               before["websockets_open"], TIMEOUT,
               what="the WebSocket to count as closed")


def test_sessions_are_shared_between_websocket_and_long_polling(node1, node2, websocket):
    reply, = websocket.bayeux([{"channel": "/meta/handshake"}])
    assert connect(node1, reply["clientId"])["successful"] is True
    assert connect(node2, reply["clientId"])["successful"] is False

    client_id = handshake(node1)
    reply, = websocket.bayeux([{"channel": "/meta/connect", "clientId": client_id}])
    assert reply["successful"] is True


def test_websocket_on_another_node_rejects_the_client_id(node1, node2):
    client_id = handshake(node1)
    ws = WebSocket(node2)
    try:
        assert ws.headers["x-gwe-node"] == "GWE_Node_2"
        reply, = ws.bayeux([{"channel": "/meta/connect", "clientId": client_id}])
        assert reply["error"] == "402::Unknown client"
        assert reply["node"] == "GWE_Node_2"
    finally:
        ws.close()


# ---------------------------------------------------------------------------
# Process life: signals, restart, logging
# ---------------------------------------------------------------------------

def test_sigterm_exits_promptly_with_code_0_despite_an_open_websocket(make_node):
    node = make_node("GWE_Node_9")
    ws = WebSocket(node)
    try:
        ws.send_text("ping")
        assert ws.recv_text() == "GWE_Node_9:ping"
        started = time.monotonic()
        node.stop()
        assert node.proc.returncode == 0
        assert time.monotonic() - started < 3
    finally:
        ws.close()
    assert node.log() == "", "the node must be quiet without --verbose"


def test_sigint_exits_with_code_0(make_node):
    node = make_node("GWE_Node_9")
    node.proc.send_signal(signal.SIGINT)
    assert node.proc.wait(timeout=TIMEOUT) == 0


def test_restart_on_the_same_port_after_sigkill(make_node):
    node = make_node("GWE_Node_9")
    port = node.port
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=TIMEOUT)
    connection.request("GET", "/server/about")
    connection.getresponse().read()
    ws = WebSocket(node)
    node.signal(signal.SIGKILL)   # the node's side of both closes first
    connection.close()
    ws.close()
    restarted = make_node("GWE_Node_9", port=port)
    assert restarted.port == port
    assert json_body(restarted.get("/server/about"))["node"] == "GWE_Node_9"


def test_verbose_logs_one_line_per_request(make_node):
    node = make_node("GWE_Node_9", args=["--verbose"])
    for path in ("/server/about", "/server/isAlive", "/nothing"):
        node.get(path)
    node.stop()
    assert node.proc.returncode == 0
    lines = node.log().splitlines()
    assert len(lines) == 3
    assert "/server/about" in lines[0] and "GWE_Node_9" in lines[0]


# ---------------------------------------------------------------------------
# --hold-connect: /meta/connect held as a CometD server holds it
# ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def holding_node(tmp_path_factory):
    node = harness.Node("GWE_Node_8", args=["--hold-connect", "60"],
                        log_dir=tmp_path_factory.mktemp("nodes"))
    yield node.start()
    node.stop()


def test_holding_node_advises_its_timeout(holding_node, node1):
    reply, = bayeux(holding_node, [{"channel": "/meta/handshake"}])
    assert reply["advice"] == {"reconnect": "retry", "interval": 0,
                               "timeout": 60000}
    reply, = bayeux(node1, [{"channel": "/meta/handshake"}])
    assert "advice" not in reply


def test_held_connect_returns_when_its_session_disconnects(holding_node):
    client_id = handshake(holding_node)
    # A first connect asks for no wait (advice.timeout 0), as clients do.
    reply, = bayeux(holding_node, [{"channel": "/meta/connect", "clientId": client_id,
                                    "advice": {"timeout": 0}}])
    assert reply["successful"] is True
    held = {}
    thread = threading.Thread(target=lambda: held.update(
        reply=connect(holding_node, client_id)))
    thread.start()
    # Served meanwhile, on another connection: the connect is still held.
    bayeux(holding_node, [{"channel": "/chat", "clientId": client_id, "data": 1}])
    assert thread.is_alive() and not held
    bayeux(holding_node, {"channel": "/meta/disconnect", "clientId": client_id})
    thread.join(TIMEOUT)
    assert held["reply"]["error"] == "402::Unknown client"


def test_held_connect_over_websocket_lets_other_messages_pass(holding_node):
    ws = WebSocket(holding_node)
    try:
        reply, = ws.bayeux([{"channel": "/meta/handshake"}])
        client_id = reply["clientId"]
        ws.send_text(json.dumps([{"channel": "/meta/connect", "clientId": client_id,
                                  "id": "2"}]))
        ack, echo = ws.bayeux([{"channel": "/chat", "clientId": client_id,
                                "data": "x", "id": "3"}])
        assert (ack["id"], echo["data"]) == ("3", "x")
        # The disconnect ends the hold: both replies come, in either order.
        ws.send_text(json.dumps([{"channel": "/meta/disconnect",
                                  "clientId": client_id, "id": "4"}]))
        replies = [json.loads(ws.recv_text())[0] for _ in range(2)]
        assert sorted(r["id"] for r in replies) == ["2", "4"]
    finally:
        ws.close()


# ---------------------------------------------------------------------------
# /server/ui: the browser test's page and the cometd package
# ---------------------------------------------------------------------------

UI_DIR = harness.TEST_DIR / "browser" / "ui"


@pytest.mark.parametrize("name, content_type", [
    ("cometd.html", "text/html; charset=utf-8"),
    ("cometd_page.js", "text/javascript; charset=utf-8")])
def test_ui_serves_the_page(node1, name, content_type):
    response = node1.get("/server/ui/" + name)
    assert response.status == 200
    assert response.headers.get("Content-Type") == content_type
    assert_node_headers(response, "GWE_Node_1")
    assert response.body == (UI_DIR / name).read_bytes()


@pytest.mark.parametrize("path", [
    "/server/ui/", "/server/ui/nothing.js", "/server/ui/../gwe_node.py",
    "/server/ui/..%2fgwe_node.py", "/server/ui/cometd/../../gwe_node.py",
    "/server/ui/.hidden.js", "/server/ui/cometd/package.json",
    "/server/ui/cometd/nothing.js"])
def test_ui_serves_nothing_else(node1, path):
    assert node1.get(path).status == 404
