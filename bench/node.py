#!/usr/bin/python3
"""A fast backend that looks like a GWE node to a load balancer, for the
benchmarks (bench/benchlib.py's node(): ws_capacity.py's WebSocket nodes,
the node behind httpd in finder_cost.py and request_profile.py).

One process is one node.  It listens on 127.0.0.1 and answers:

  * GET /server/isAlive and /server/about: 200 (the balancer's health
    check and readiness probe), over HTTP/1.0 or 1.1;
  * a WebSocket upgrade of /server/cometd: 101 with the node's routing
    cookie, Set-Cookie: GWROUTEID=.<name>, then every text or binary
    message that is not CometD (above) is answered with "<name> <the
    message>", so that a client sees which node answered and can count
    misroutes; pings get pongs;
  * CometD, as a stand-in for GWE's (bench/capacity.py's visitors), not
    a full Bayeux server: a POST of a JSON array of messages to
    /server/cometd[/...], or a WebSocket text message that is one, is
    answered by channel: /meta/handshake makes a session of this node's
    and answers its clientId; /meta/connect over HTTP is held until the
    session has an event or --poll-hold seconds (CometD's long-poll),
    over a WebSocket answered at once (the heartbeat); /service/echo
    answers {"successful": true} and sends its data back as an event on
    the session: in the reply over a WebSocket, through the held (or
    next) /meta/connect over HTTP.  A clientId this node did not make
    (a misrouted visitor) gets "402::Unknown client", as CometD answers.
    Every reply message carries "node": <name>;
  * GET /_stats (asked directly, not through the balancer): JSON with
    the WebSockets open now and in total, the sessions made and the
    long-polls held now;
  * any other GET: 200 with the path as the body, so that a client sees
    which balancer member (/m001/...) a request went through.

Every answer carries X-GWE-Node: <name> and the routing cookie.

It is plain asyncio (asyncio.Protocol, standard library only) rather than
python3-websockets: mod_proxy_hcheck asks isAlive over HTTP/1.0, which the
websockets server refuses before any hook of it runs (400), and the
balancer would then take both nodes out.  A bare Protocol is also the
cheapest way to hold thousands of connections on a small machine (on
uvloop when python3-uvloop is installed); ws_capacity.py's client uses
python3-websockets, which checks this framing.

    /usr/bin/python3 bench/node.py --name GWE_Node_1 [--port 0]
        [--host 127.0.0.1] [--poll-hold 30]

It prints "READY <port>" once it listens (port 0 picks a free one) and
serves until SIGTERM or SIGINT.
"""

import argparse
import asyncio
import json
import signal
import struct
import sys

import benchlib         # also puts test/ on sys.path
# The test suite's demo node frames messages and answers handshakes the
# same way; this node only does it without a thread per connection.
from gwe_node import frame, websocket_accept  # noqa: E402

MAX_HEAD = 16 * 1024            # bytes of request line and headers
MAX_MESSAGE = 1024 * 1024       # bytes of one WebSocket message
MAX_BODY = 64 * 1024            # bytes of a POSTed CometD request
OP_CONTINUATION, OP_TEXT, OP_BINARY = 0x0, 0x1, 0x2
OP_CLOSE, OP_PING, OP_PONG = 0x8, 0x9, 0xA


class Stats:
    def __init__(self):
        self.websockets_open = 0
        self.websockets_total = 0
        self.sessions = 0
        self.polls_held = 0


class Session:
    """A CometD session: events not yet delivered, and the long-poll
    (the NodeProtocol of a held /meta/connect) waiting for them."""
    __slots__ = ("events", "poll")

    def __init__(self):
        self.events = []
        self.poll = None


class CometD:
    """The node's CometD: its sessions, and the answer to a message."""

    def __init__(self, name, stats, poll_hold):
        self.name = name
        self.stats = stats
        self.poll_hold = poll_hold
        self.sessions = {}

    def reply(self, message, **fields):
        return dict({"channel": message.get("channel"), "node": self.name},
                    **fields)

    def answer(self, messages, held_poll=None):
        """The replies to a list of messages.  held_poll: the HTTP
        connection asking, which a /meta/connect without events holds
        (then the replies so far come back as None)."""
        replies = []
        for message in messages:
            channel = message.get("channel")
            if channel == "/meta/handshake":
                client_id = "%s.%d" % (self.name, self.stats.sessions)
                self.stats.sessions += 1
                self.sessions[client_id] = Session()
                replies.append(self.reply(message, successful=True,
                                          clientId=client_id))
                continue
            session = self.sessions.get(message.get("clientId"))
            if session is None:
                replies.append(self.reply(message, successful=False,
                                          error="402::Unknown client"))
            elif channel == "/meta/connect":
                if session.events or held_poll is None:
                    replies.append(self.reply(message, successful=True))
                    replies += session.events
                    session.events = []
                else:
                    session.poll = held_poll
                    held_poll.hold(session, self.reply(message,
                                                       successful=True))
                    return None
            else:
                replies.append(self.reply(message, successful=True))
                event = self.reply(message, data=message.get("data"))
                if held_poll is None:       # a WebSocket: the event now
                    replies.append(event)
                else:
                    self.deliver(session, event)
        return replies

    def deliver(self, session, event):
        """Queue event, and answer the session's held long-poll with it."""
        session.events.append(event)
        if session.poll is not None:
            session.poll.release()


def unmask(mask, data):
    """data XOR the repeated 4-byte mask, as one big-integer XOR."""
    n = len(data)
    key = (mask * (n // 4 + 1))[:n]
    return (int.from_bytes(data, "big") ^ int.from_bytes(key, "big")) \
        .to_bytes(n, "big")


def parse_head(head):
    """(method, path, version, headers) of a request head; headers keyed
    by lower-case name.  Raises ValueError."""
    lines = head.decode("latin-1").split("\r\n")
    method, target, version = lines[0].split(" ")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return method, target.split("?", 1)[0], version, headers


def response(status, headers, body=b""):
    lines = ["HTTP/1.1 %s" % status] + ["%s: %s" % h for h in headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


class NodeProtocol(asyncio.Protocol):
    """One connection: HTTP requests until an upgrade, then frames."""

    def __init__(self, name, stats, cometd):
        self.name = name
        self.stats = stats
        self.cometd = cometd
        self.buf = b""
        self.held = None            # (session, connect reply, timer)
        self.keep = True            # the CometD POST asked for keep-alive
        self.websocket = False
        self.fragments = []         # payloads of an unfinished message
        self.message_opcode = OP_TEXT
        self.transport = None

    def connection_made(self, transport):
        self.transport = transport

    def connection_lost(self, exc):
        if self.websocket:
            self.stats.websockets_open -= 1
        if self.held:
            self.unhold()

    def data_received(self, data):
        self.buf += data
        try:
            while self.buf and not self.transport.is_closing() \
                    and not self.held:
                done = (self.read_frame() if self.websocket
                        else self.read_request())
                if not done:
                    break
        except ValueError:
            self.transport.close()

    # -- HTTP ---------------------------------------------------------------

    def read_request(self):
        """Answer one complete request in buf; False if it is incomplete."""
        end = self.buf.find(b"\r\n\r\n")
        if end < 0:
            if len(self.buf) > MAX_HEAD:
                raise ValueError("request head too long")
            return False
        method, path, version, headers = parse_head(self.buf[:end])
        length = int(headers.get("content-length", 0))
        if length > MAX_BODY:
            raise ValueError("request body too large")
        if len(self.buf) < end + 4 + length:
            return False
        request_body = self.buf[end + 4:end + 4 + length]
        self.buf = self.buf[end + 4 + length:]
        cookie = ("Set-Cookie", "GWROUTEID=.%s; Path=/" % self.name)
        node = ("X-GWE-Node", self.name)
        if path.startswith("/server/cometd") and \
                headers.get("upgrade", "").lower() == "websocket":
            self.upgrade(headers, [node, cookie])
            return True
        keep = (version == "HTTP/1.1"
                and headers.get("connection", "").lower() != "close")
        if method == "POST" and path.startswith("/server/cometd"):
            self.keep = keep
            replies = self.cometd.answer(json.loads(request_body), self)
            if replies is not None:
                self.write_json(replies)
            return True
        if method != "GET":
            status, body, keep = "405 Method Not Allowed", b"", False
        elif path == "/server/isAlive":
            status, body = "200 OK", b"OK"
        elif path == "/server/about":
            status, body = "200 OK", json.dumps({"node": self.name}).encode()
        elif path == "/_stats":
            status, body = "200 OK", json.dumps(vars(self.stats)).encode()
        else:
            status, body = "200 OK", path.encode("latin-1")
        self.transport.write(response(status, [
            node, cookie, ("Content-Length", len(body)),
            ("Connection", "keep-alive" if keep else "close")], body))
        if not keep:
            self.transport.close()
        return True

    def write_json(self, replies):
        """Answer a CometD POST with replies (a JSON array)."""
        body = json.dumps(replies).encode()
        self.transport.write(response("200 OK", [
            ("X-GWE-Node", self.name),
            ("Set-Cookie", "GWROUTEID=.%s; Path=/" % self.name),
            ("Content-Type", "application/json"),
            ("Content-Length", len(body)),
            ("Connection", "keep-alive" if self.keep else "close")], body))
        if not self.keep:
            self.transport.close()

    # -- CometD long-poll -----------------------------------------------------

    def hold(self, session, connect_reply):
        """Hold this /meta/connect until session has an event, or for the
        poll hold."""
        timer = asyncio.get_running_loop().call_later(
            self.cometd.poll_hold, self.release)
        self.held = (session, connect_reply, timer)
        self.stats.polls_held += 1

    def unhold(self):
        session, connect_reply, timer = self.held
        timer.cancel()
        self.held = None
        self.stats.polls_held -= 1
        if session.poll is self:
            session.poll = None
        return session, connect_reply

    def release(self):
        """Answer the held /meta/connect with the session's events, then
        go on with what the client sent meanwhile."""
        session, connect_reply = self.unhold()
        if self.transport.is_closing():
            return
        self.write_json([connect_reply] + session.events)
        session.events = []
        if self.buf:
            self.data_received(b"")

    def upgrade(self, headers, extra):
        accept = websocket_accept(headers.get("sec-websocket-key", ""))
        self.transport.write(response("101 Switching Protocols", [
            ("Upgrade", "websocket"), ("Connection", "Upgrade"),
            ("Sec-WebSocket-Accept", accept)] + extra))
        self.websocket = True
        self.stats.websockets_open += 1
        self.stats.websockets_total += 1

    # -- WebSocket ----------------------------------------------------------

    def read_frame(self):
        """Handle one complete frame in buf; False if it is incomplete."""
        buf = self.buf
        if len(buf) < 2:
            return False
        b0, b1 = buf[0], buf[1]
        opcode, length, pos = b0 & 0x0F, b1 & 0x7F, 2
        if not b1 & 0x80:
            raise ValueError("client frames must be masked")
        if length == 126:
            if len(buf) < 4:
                return False
            length, pos = struct.unpack_from("!H", buf, 2)[0], 4
        elif length == 127:
            if len(buf) < 10:
                return False
            length, pos = struct.unpack_from("!Q", buf, 2)[0], 10
        if length > MAX_MESSAGE:
            raise ValueError("frame too large")
        if len(buf) < pos + 4 + length:
            return False
        mask = buf[pos:pos + 4]
        payload = unmask(mask, buf[pos + 4:pos + 4 + length])
        self.buf = buf[pos + 4 + length:]
        self.on_frame(bool(b0 & 0x80), opcode, payload)
        return True

    def on_frame(self, fin, opcode, payload):
        if opcode == OP_PING:
            self.transport.write(frame(OP_PONG, payload))
        elif opcode == OP_CLOSE:
            # Echo the status code, then close: the server closes TCP first.
            self.transport.write(frame(OP_CLOSE, payload[:2]))
            self.transport.close()
        elif opcode in (OP_TEXT, OP_BINARY, OP_CONTINUATION):
            if opcode != OP_CONTINUATION:
                self.message_opcode = opcode
            self.fragments.append(payload)
            if fin:
                message = b"".join(self.fragments)
                self.fragments = []
                if message.startswith(b"["):
                    reply = json.dumps(
                        self.cometd.answer(json.loads(message))).encode()
                else:
                    reply = self.name.encode() + b" " + message
                self.transport.write(frame(self.message_opcode, reply))


async def serve(name, host, port, poll_hold):
    stats = Stats()
    cometd = CometD(name, stats, poll_hold)
    loop = asyncio.get_running_loop()
    # backlog: the balancer opens its backend connections in bursts.
    server = await loop.create_server(
        lambda: NodeProtocol(name, stats, cometd), host, port, backlog=4096)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print("READY %d" % server.sockets[0].getsockname()[1], flush=True)
    await stop.wait()
    server.close()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--name", required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--poll-hold", type=float, default=30,
                        help="seconds a CometD long-poll is held")
    args = parser.parse_args()
    benchlib.raise_nofile_limit()      # 10,000+ sockets
    benchlib.use_uvloop()
    asyncio.run(serve(args.name, args.host, args.port, args.poll_hold))


if __name__ == "__main__":
    sys.exit(main())
