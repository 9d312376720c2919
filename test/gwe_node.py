#!/usr/bin/python3
"""A demo Genesys Web Engagement (GWE) node, for testing the balancer.

It imitates what a GWE Java node shows to a load balancer in front of it:

  * every response under /server names the node (X-GWE-Node) and sets the
    real GWE routing cookie, GWROUTEID=.<node name>;
  * /server/isAlive answers 200 "OK", or 503 "DOWN" when marked down;
  * CometD (Bayeux) over long-polling and over WebSocket at /server/cometd,
    with per-node session state: a clientId is valid only on the node that
    handed it out in /meta/handshake.  A publish is acknowledged and echoed
    back to its publisher.  A request the balancer routes to the
    wrong node therefore fails visibly with "402::Unknown client", just as
    it does with real CometD, instead of quietly succeeding.

Other endpoints help tests: /server/headers (what the balancer forwarded),
/server/slow?ms=N (timeouts), /server/ui/... (the CometD page a browser test
loads, and the npm package cometd's files it imports), and /_control/...
(mark the node down or up, read and reset counters, each session's connects
and publishes), which tests call directly on the node's port.

With --hold-connect S the node holds each /meta/connect up to S seconds
(the long-poll of a real CometD server, which the JavaScript client
expects: it sends the next connect as soon as one returns); by default it
answers at once.

Command line:

    /usr/bin/python3 test/gwe_node.py --name GWE_Node_1 \
        [--host 127.0.0.1] [--port 0] [--hold-connect S] [--verbose]

It prints "READY <port>" on stdout once it listens (port 0 picks a free
port), serves until SIGTERM or SIGINT, then exits 0.  It uses only the
Python standard library.
"""

import argparse
import base64
import hashlib
import json
import re
import secrets
import signal
import socketserver
import struct
import sys
import threading
import time
import traceback
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from urllib.parse import parse_qs

WEBSOCKET_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
MAX_BODY = 16 * 1024 * 1024         # request bodies and WebSocket messages
IDLE_TIMEOUT = 60                   # s; longer than the balancer's ttl=20

# /server/ui/NAME serves a file of UI_DIRS' first prefix matching the path
# (test/browser: the CometD page of test/test_browser_cometd.py, and the
# npm package cometd's files, so the page needs nothing from outside).
BROWSER_DIR = Path(__file__).resolve().parent / "browser"
UI_DIRS = [("/server/ui/cometd/", BROWSER_DIR / "node_modules" / "cometd"),
           ("/server/ui/", BROWSER_DIR / "ui")]
UI_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]*")
CONTENT_TYPES = {".html": "text/html; charset=utf-8",
                 ".js": "text/javascript; charset=utf-8",
                 ".css": "text/css; charset=utf-8"}

# WebSocket opcodes (RFC 6455, section 5.2)
OP_CONTINUATION, OP_TEXT, OP_BINARY = 0x0, 0x1, 0x2
OP_CLOSE, OP_PING, OP_PONG = 0x8, 0x9, 0xA


class BadRequest(Exception):
    """The request cannot be read; answered with 400 and the connection closed."""


class WebSocketClosed(Exception):
    """The WebSocket ends; carries the close code to send, if any."""

    def __init__(self, code=None):
        super().__init__(code)
        self.code = code


# ---------------------------------------------------------------------------
# The node's state: liveness, counters, and the CometD session table.
# ---------------------------------------------------------------------------

class Session:
    """A CometD session: what its client sent this node, and an event set
    when it ends (a held /meta/connect then returns at once)."""

    def __init__(self):
        self.connects = 0
        self.publishes = 0
        self.ended = threading.Event()

    def counters(self):
        return {"connects": self.connects, "publishes": self.publishes}


class NodeState:
    def __init__(self, name, hold_connect=0.0):
        self.name = name
        self.hold_connect = hold_connect    # s; 0 answers /meta/connect at once
        self.alive = True
        self.requests = 0
        self.websockets_open = 0
        self.websockets_total = 0
        self.unknown_clients = 0
        self.sessions = {}
        self.lock = threading.Lock()

    def count_request(self):
        with self.lock:
            self.requests += 1

    def websocket_opened(self):
        with self.lock:
            self.websockets_open += 1
            self.websockets_total += 1

    def websocket_closed(self):
        with self.lock:
            self.websockets_open -= 1

    def reset_counters(self):
        with self.lock:
            self.requests = 0
            self.websockets_total = 0
            self.unknown_clients = 0

    def new_session(self):
        client_id = "%s-%s" % (self.name, secrets.token_hex(12))
        with self.lock:
            self.sessions[client_id] = Session()
        return client_id

    def session(self, client_id):
        if not isinstance(client_id, str):
            return None
        with self.lock:
            return self.sessions.get(client_id)

    def count_message(self, client_id, channel):
        """Whether client_id is a session of this node; counts its connects
        and publishes, and the messages of unknown clients."""
        session = self.session(client_id)
        with self.lock:
            if session is None:
                self.unknown_clients += 1
            elif channel == "/meta/connect":
                session.connects += 1
            elif not channel.startswith("/meta/"):
                session.publishes += 1
            return session is not None

    def drop_session(self, client_id):
        with self.lock:
            session = self.sessions.pop(client_id, None)
        if session is not None:
            session.ended.set()

    def session_counters(self):
        with self.lock:
            return {client_id: session.counters()
                    for client_id, session in self.sessions.items()}

    def stats(self):
        with self.lock:
            return {
                "node": self.name,
                "requests": self.requests,
                "websockets_open": self.websockets_open,
                "websockets_total": self.websockets_total,
                "sessions": len(self.sessions),
                "unknown_clients": self.unknown_clients,
            }


# ---------------------------------------------------------------------------
# Bayeux: one reply per message, the same for long-polling and WebSocket.
# ---------------------------------------------------------------------------

def bayeux_messages(document):
    """The messages of a parsed Bayeux request: a list, or one object."""
    if isinstance(document, dict):
        return [document]
    if isinstance(document, list):
        return document
    return None


def bayeux_reply(state, message):
    if not isinstance(message, dict) or not isinstance(message.get("channel"), str):
        return {"successful": False, "error": "400::Bad message", "node": state.name}
    channel = message["channel"]
    reply = {"channel": channel}
    if "id" in message:
        reply["id"] = message["id"]
    if channel == "/meta/handshake":
        reply.update(successful=True, clientId=state.new_session(), version="1.0",
                     supportedConnectionTypes=["websocket", "long-polling"])
        if state.hold_connect:
            reply["advice"] = {"reconnect": "retry", "interval": 0,
                               "timeout": int(state.hold_connect * 1000)}
    elif state.count_message(message.get("clientId"), channel):
        reply.update(successful=True, clientId=message["clientId"])
        if channel == "/meta/disconnect":
            state.drop_session(message["clientId"])
        elif channel == "/meta/subscribe":
            reply["subscription"] = message.get("subscription")
    else:
        reply.update(successful=False, error="402::Unknown client",
                     advice={"reconnect": "handshake"})
    reply["node"] = state.name
    return reply


def echo(state, message):
    """A published message delivered back to its publisher, naming the
    session and the node.  Apart from the publish's acknowledgement, which
    has no data: CometD clients tell a reply from a delivery by that."""
    return {"channel": message["channel"], "data": message.get("data"),
            "clientId": message["clientId"], "node": state.name}


def bayeux_replies(state, messages):
    """The reply to each message, each publish's followed by its echo."""
    replies = []
    for message in messages:
        reply = bayeux_reply(state, message)
        replies.append(reply)
        if reply.get("successful") and not reply["channel"].startswith("/meta/"):
            replies.append(echo(state, message))
    return replies


def connect_hold(state, message):
    """How long (s) to hold the reply to a /meta/connect: as a CometD server
    holds it until it has something to deliver (this node never has), up to
    the node's --hold-connect, or less if the connect asks for less (its
    advice.timeout in ms: a client's first connect asks for 0)."""
    if (not state.hold_connect or not isinstance(message, dict)
            or message.get("channel") != "/meta/connect"):
        return 0
    advice = message.get("advice")
    timeout = advice.get("timeout") if isinstance(advice, dict) else None
    if isinstance(timeout, (int, float)) and not isinstance(timeout, bool):
        return max(0, min(state.hold_connect, timeout / 1000))
    return state.hold_connect


def held_connect(state, messages):
    """(session, seconds) of the connect among messages to hold, or None."""
    for message in messages:
        hold = connect_hold(state, message)
        session = state.session(message.get("clientId")) if hold else None
        if session is not None:
            return session, hold
    return None


def hold_connect(state, messages):
    """Wait before answering messages holding a connect: its hold, or until
    its session ends (a /meta/disconnect)."""
    held = held_connect(state, messages)
    if held:
        session, hold = held
        session.ended.wait(hold)


# ---------------------------------------------------------------------------
# WebSocket framing (RFC 6455).  Client frames are masked, ours are not.
# ---------------------------------------------------------------------------

def websocket_accept(key):
    digest = hashlib.sha1((key + WEBSOCKET_GUID).encode("ascii")).digest()
    return base64.b64encode(digest).decode("ascii")


def read_exactly(rfile, size):
    data = rfile.read(size)
    if len(data) < size:
        raise WebSocketClosed()            # the peer went away
    return data


def read_frame(rfile):
    """One client frame: (fin, opcode, payload)."""
    first, second = read_exactly(rfile, 2)
    fin, opcode = bool(first & 0x80), first & 0x0F
    masked, length = bool(second & 0x80), second & 0x7F
    if length == 126:
        length = struct.unpack("!H", read_exactly(rfile, 2))[0]
    elif length == 127:
        length = struct.unpack("!Q", read_exactly(rfile, 8))[0]
    if not masked:
        raise WebSocketClosed(1002)        # clients must mask
    if length > MAX_BODY:
        raise WebSocketClosed(1009)
    mask = read_exactly(rfile, 4)
    payload = read_exactly(rfile, length)
    return fin, opcode, unmask(payload, mask)


def unmask(payload, mask):
    # XOR with the 4-byte mask repeated, done as one big-integer XOR (fast).
    key = int.from_bytes((mask * (len(payload) // 4 + 1))[:len(payload)], "big")
    return (int.from_bytes(payload, "big") ^ key).to_bytes(len(payload), "big")


def frame(opcode, payload):
    """An unmasked, unfragmented server frame."""
    length = len(payload)
    if length < 126:
        header = struct.pack("!BB", 0x80 | opcode, length)
    elif length < 1 << 16:
        header = struct.pack("!BBH", 0x80 | opcode, 126, length)
    else:
        header = struct.pack("!BBQ", 0x80 | opcode, 127, length)
    return header + payload


class FrameWriter:
    """Writes whole frames one at a time: a held reply is written from a
    thread of its own while the connection's thread answers the rest."""

    def __init__(self, wfile):
        self.wfile = wfile
        self.lock = threading.Lock()

    def write(self, data):
        with self.lock:
            self.wfile.write(data)


def read_message(rfile, wfile):
    """The next data message (opcode, payload), answering control frames."""
    opcode, parts = None, []
    while True:
        fin, frame_opcode, payload = read_frame(rfile)
        if frame_opcode >= OP_CLOSE:
            answer_control_frame(wfile, frame_opcode, payload, fin)
            continue
        if frame_opcode not in (OP_CONTINUATION, OP_TEXT, OP_BINARY):
            raise WebSocketClosed(1002)    # a reserved opcode
        if (frame_opcode == OP_CONTINUATION) != (opcode is not None):
            raise WebSocketClosed(1002)    # a continuation out of place
        if opcode is None:
            opcode = frame_opcode
        parts.append(payload)
        if sum(map(len, parts)) > MAX_BODY:
            raise WebSocketClosed(1009)
        if fin:
            return opcode, b"".join(parts)


def answer_control_frame(wfile, opcode, payload, fin):
    if not fin or len(payload) > 125:
        raise WebSocketClosed(1002)
    if opcode == OP_PING:
        wfile.write(frame(OP_PONG, payload))
    elif opcode == OP_CLOSE:
        wfile.write(frame(OP_CLOSE, payload[:2]))
        raise WebSocketClosed()            # close already answered
    elif opcode != OP_PONG:
        raise WebSocketClosed(1002)


def websocket_text(payload):
    try:
        return payload.decode("utf-8")
    except UnicodeDecodeError:
        raise WebSocketClosed(1007)


def websocket_bayeux(opcode, payload):
    """The Bayeux messages of a data message, or None (echoed instead)."""
    if opcode == OP_BINARY:
        return None
    try:
        return bayeux_messages(json.loads(websocket_text(payload)))
    except ValueError:
        return None


def websocket_answer(state, opcode, payload):
    """The frame answering one data message."""
    if opcode == OP_BINARY:
        return frame(OP_BINARY, state.name.encode() + b":" + payload)
    messages = websocket_bayeux(opcode, payload)
    if messages is None:
        answer = "%s:%s" % (state.name, websocket_text(payload))
    else:
        answer = json.dumps(bayeux_replies(state, messages))
    return frame(OP_TEXT, answer.encode("utf-8"))


# ---------------------------------------------------------------------------
# HTTP
# ---------------------------------------------------------------------------

def is_server_path(path):
    return path == "/server" or path.startswith("/server/")


def is_cometd_path(path):
    return path == "/server/cometd" or path.startswith("/server/cometd/")


def ui_file(path):
    """The file /server/ui/... names, or None: a plain name (no directory,
    no leading dot) of a served type, in the first UI_DIRS entry whose
    prefix the path has."""
    for prefix, directory in UI_DIRS:
        if path.startswith(prefix):
            name = path[len(prefix):]
            file = directory / name
            if (UI_NAME.fullmatch(name) and file.suffix in CONTENT_TYPES
                    and file.is_file()):
                return file
            return None
    return None


def header_tokens(value):
    return [token.strip().lower() for token in (value or "").split(",")]


class NodeHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "GWEDemoNode/1.0"
    sys_version = ""
    timeout = IDLE_TIMEOUT
    disable_nagle_algorithm = True

    # -- dispatch ----------------------------------------------------------

    def do_GET(self):
        self.dispatch()

    do_HEAD = do_POST = do_PUT = do_DELETE = do_OPTIONS = do_PATCH = do_GET

    def dispatch(self):
        self.path_only, _, query = self.path.partition("?")
        self.query = parse_qs(query)
        self.state = self.server.state
        try:
            self.body = self.read_body()
        except BadRequest as error:
            self.close_connection = True
            self.reply_text(400, str(error))
            return
        if is_server_path(self.path_only):
            self.state.count_request()
            self.serve_gwe()
        elif self.path_only.startswith("/_control/"):
            self.serve_control()
        else:
            self.reply_text(404, "Not Found")

    def serve_gwe(self):
        path = self.path_only
        if path == "/server/about":
            self.reply_json(200, {"node": self.state.name, "product": "GWE demo node"})
        elif path == "/server/isAlive":
            if self.state.alive:
                self.reply_text(200, "OK")
            else:
                self.reply_text(503, "DOWN")
        elif is_cometd_path(path) and self.wants_websocket():
            self.serve_websocket()
        elif is_cometd_path(path):
            self.serve_cometd()
        elif path == "/server/headers":
            self.reply_json(200, self.received_headers())
        elif path == "/server/slow":
            self.serve_slow()
        elif path.startswith("/server/ui/"):
            self.serve_ui()
        else:
            self.reply_json(200, {"node": self.state.name, "path": path})

    def serve_control(self):
        path = self.path_only
        if path == "/_control/alive":
            self.serve_alive_switch()
        elif path == "/_control/stats":
            self.reply_json(200, self.state.stats())
        elif path == "/_control/sessions":
            self.reply_json(200, self.state.session_counters())
        elif path == "/_control/reset":
            self.state.reset_counters()
            self.reply_json(200, self.state.stats())
        else:
            self.reply_text(404, "Not Found")

    # -- endpoints ---------------------------------------------------------

    def serve_alive_switch(self):
        wanted = self.query.get("state", [""])[0]
        if wanted not in ("up", "down"):
            self.reply_text(400, "state must be up or down")
            return
        self.state.alive = wanted == "up"
        self.reply_json(200, {"node": self.state.name, "alive": self.state.alive})

    def serve_slow(self):
        try:
            delay_ms = int(self.query.get("ms", ["0"])[0])
        except ValueError:
            delay_ms = -1
        if delay_ms < 0:
            self.reply_text(400, "ms must be a whole number of milliseconds")
            return
        time.sleep(delay_ms / 1000.0)
        self.reply_json(200, {"node": self.state.name, "slept_ms": delay_ms})

    def serve_ui(self):
        path = ui_file(self.path_only)
        if path is None or self.command not in ("GET", "HEAD"):
            self.reply_text(404, "Not Found")
            return
        self.reply(200, path.read_bytes(), CONTENT_TYPES[path.suffix])

    def serve_cometd(self):
        messages = self.cometd_request_messages()
        if messages is None:
            self.reply_json(400, {"node": self.state.name,
                                  "error": "400::Bad Bayeux request"})
            return
        hold_connect(self.state, messages)
        self.reply_json(200, bayeux_replies(self.state, messages))

    def cometd_request_messages(self):
        """The Bayeux messages of a long-polling request, or None."""
        if self.command == "GET":
            return self.cometd_get_messages()
        try:
            return bayeux_messages(json.loads(self.body.decode("utf-8")))
        except ValueError:
            return None

    def cometd_get_messages(self):
        """GET .../handshake and GET .../connect?clientId=X, for curl."""
        if self.path_only == "/server/cometd/handshake":
            return [{"channel": "/meta/handshake"}]
        if self.path_only == "/server/cometd/connect":
            client_id = self.query.get("clientId", [None])[0]
            return [{"channel": "/meta/connect", "clientId": client_id}]
        return None

    def received_headers(self):
        headers = {}
        for name, value in self.headers.items():
            if name not in headers:
                headers[name] = value
            elif isinstance(headers[name], list):
                headers[name].append(value)
            else:
                headers[name] = [headers[name], value]
        return headers

    # -- WebSocket ---------------------------------------------------------

    def wants_websocket(self):
        return (self.command == "GET"
                and "websocket" in header_tokens(self.headers.get("Upgrade"))
                and "upgrade" in header_tokens(self.headers.get("Connection")))

    def serve_websocket(self):
        key = self.headers.get("Sec-WebSocket-Key", "").strip()
        if not key:
            self.close_connection = True
            self.reply_text(400, "Sec-WebSocket-Key is missing")
            return
        self.close_connection = True       # the socket is the WebSocket's now
        self.connection.settimeout(None)   # an idle WebSocket may idle
        self.state.websocket_opened()      # counted before the client knows
        try:
            self.send_response(101)
            self.send_header("Upgrade", "websocket")
            self.send_header("Connection", "Upgrade")
            self.send_header("Sec-WebSocket-Accept", websocket_accept(key))
            self.send_node_headers()
            self.end_headers()
            self.websocket_loop()
        finally:
            self.state.websocket_closed()

    def websocket_loop(self):
        writer = FrameWriter(self.wfile)
        try:
            while True:
                opcode, payload = read_message(self.rfile, writer)
                messages = websocket_bayeux(opcode, payload) or []
                if held_connect(self.state, messages):
                    threading.Thread(target=self.answer_held, daemon=True,
                                     args=(writer, messages)).start()
                else:
                    writer.write(websocket_answer(self.state, opcode, payload))
        except WebSocketClosed as closed:
            if closed.code is not None:
                writer.write(frame(OP_CLOSE, struct.pack("!H", closed.code)))

    def answer_held(self, writer, messages):
        hold_connect(self.state, messages)
        answer = json.dumps(bayeux_replies(self.state, messages))
        try:
            writer.write(frame(OP_TEXT, answer.encode("utf-8")))
        except (OSError, ValueError):
            pass                           # the WebSocket closed meanwhile

    # -- request bodies ----------------------------------------------------

    def read_body(self):
        if "chunked" in header_tokens(self.headers.get("Transfer-Encoding")):
            return self.read_chunked_body()
        length = self.headers.get("Content-Length")
        if length is None:
            return b""
        if not length.strip().isdigit():
            raise BadRequest("bad Content-Length")
        length = int(length)
        if length > MAX_BODY:
            raise BadRequest("request body too large")
        body = self.rfile.read(length)
        if len(body) < length:
            raise BadRequest("request body cut short")
        return body

    def read_chunked_body(self):
        chunks, total = [], 0
        while True:
            size_line = self.rfile.readline(1024)
            try:
                size = int(size_line.split(b";")[0].strip(), 16)
            except ValueError:
                raise BadRequest("bad chunk size")
            if size == 0:
                break
            total += size
            if total > MAX_BODY:
                raise BadRequest("request body too large")
            chunk = self.rfile.read(size)
            if len(chunk) < size or self.rfile.readline(1024) not in (b"\r\n", b"\n"):
                raise BadRequest("chunk cut short")
            chunks.append(chunk)
        self.skip_trailers()
        return b"".join(chunks)

    def skip_trailers(self):
        while True:
            line = self.rfile.readline(65537)
            if line in (b"\r\n", b"\n"):
                return
            if not line:
                raise BadRequest("chunked body cut short")

    # -- responses ---------------------------------------------------------

    def send_node_headers(self):
        self.send_header("X-GWE-Node", self.state.name)
        self.send_header("Set-Cookie", "GWROUTEID=.%s; Path=/" % self.state.name)

    def reply_json(self, status, document):
        self.reply(status, json.dumps(document).encode("utf-8"), "application/json")

    def reply_text(self, status, text):
        self.reply(status, text.encode("utf-8"), "text/plain; charset=utf-8")

    def reply(self, status, body, content_type):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        if is_server_path(self.path_only):
            self.send_node_headers()
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def log_message(self, format, *args):
        if self.server.verbose:
            sys.stderr.write("%s %s %s\n" % (self.server.state.name,
                                             self.address_string(), format % args))


class NodeServer(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True         # open connections never delay the exit
    block_on_close = False
    request_queue_size = 1024

    def __init__(self, address, state, verbose):
        self.state = state
        self.verbose = verbose
        super().__init__(address, NodeHandler)

    def handle_error(self, request, client_address):
        """Quiet about clients that go away; loud about our own bugs."""
        if not isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            traceback.print_exc()


# ---------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------

def parse_arguments():
    parser = argparse.ArgumentParser(description="A demo GWE node.")
    parser.add_argument("--name", required=True, help="node name, e.g. GWE_Node_1")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--verbose", action="store_true",
                        help="log one line per request to stderr")
    parser.add_argument("--hold-connect", type=float, default=0, metavar="S",
                        help="hold each /meta/connect up to S seconds, as a "
                        "CometD server does (default 0: answer at once)")
    return parser.parse_args()


def main():
    arguments = parse_arguments()
    server = NodeServer((arguments.host, arguments.port),
                        NodeState(arguments.name, arguments.hold_connect),
                        arguments.verbose)

    def stop(*_):
        # shutdown() waits for serve_forever() to return: another thread's job.
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print("READY %d" % server.server_address[1], flush=True)
    server.serve_forever(poll_interval=0.1)
    server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
