#!/usr/bin/python3
"""One load-generator process of bench/capacity.py: GWE visitors through a
load balancer, added on command and held until told to close.

    /usr/bin/python3 bench/visitor.py SETTINGS

SETTINGS, a JSON object: port (the balancer's), source (this process's
source address, e.g. 127.0.0.2: one address has ~28,000 ports to one
balancer), first and stride (this process's visitors are first, first +
stride, ...), ws_percent (visitor i keeps a WebSocket when i % 100 <
ws_percent, else long-polls), heartbeat (seconds between a WebSocket's
/meta/connect), message_min and message_max (seconds between a visitor's
application messages, uniform), poll_hold (the node's), in_flight
(visitors arriving at once), timeout (seconds for one answer), seed.

A visitor: loads a page (GET /server/gwe.js without a cookie: the
balancer picks a node, which sets GWROUTEID=.<name>, kept from then on;
then two more GETs), handshakes CometD (POST /server/cometd/handshake), all
on one keep-alive connection.  Then either

  * WebSocket: opens ws://.../server/cometd with its cookie (and closes
    the page's connection), sends /meta/connect at once and every
    heartbeat seconds from a random phase, and an application message
    (/service/echo) every message_min..message_max seconds from a random
    phase; its round trip is until the node's echo comes back; or
  * long-poll: /meta/connect on the page's connection, held by the node
    until an event or poll_hold seconds, the next issued at once; an
    application message is POSTed on a connection of its own (Connection:
    close, as a browser's second connection) and its round trip is until
    its echo arrives as an event on the long-poll.

A request on a reused keep-alive connection that the balancer closed
without answering is sent again on a new connection, once, as browsers
do (counted as a retry, not an error).  Every answer after the first
names its node (X-GWE-Node, or "node" in the
CometD reply): one that is not the cookie's is a misroute; "402::Unknown
client" too (the session is on another node).  A visitor that fails
(refused, reset, timed out, an HTTP error) is counted by kind and gone.
Client frames are masked with a zero key (valid framing; no balancer
or node here unmasks differently), which saves the generator the XOR.

Driven over stdin/stdout, one JSON object per line:

    <- {"cmd": "target", "visitors": N}   have N visitors (adds the rest)
    -> {"event": "reached", ...}          every new visitor arrived or failed
    <- {"cmd": "report"}
    -> {"event": "report", ...}           counts; round trips since the last
    <- {"cmd": "close"}                   (or end of input)
    -> {"event": "closed"}
"""

import asyncio
import errno
import gc
import json
import random
import resource
import struct
import sys
import time

import benchlib

OP_TEXT, OP_CLOSE, OP_PING, OP_PONG = 0x1, 0x8, 0x9, 0xA
ZERO_MASK = b"\0\0\0\0"
PAGE = ("/server/gwe.js", "/server/resources/gwe.css",
        "/server/resources/chat.png")


class VisitorError(Exception):
    """A visitor's failure, by kind (what the tally counts)."""

    def __init__(self, kind, detail=""):
        super().__init__("%s: %s" % (kind, detail) if detail else kind)
        self.kind = kind


def emit(obj):
    print(json.dumps(obj), flush=True)


def failure_kind(phase, exc):
    """The tally's name for exc, raised in phase.  The generator's own
    limits (ports, open files) are named so, to be told from the
    balancer's."""
    if isinstance(exc, VisitorError):
        return "%s: %s" % (phase, exc.kind)
    if isinstance(exc, TimeoutError):
        return "%s: timeout" % phase
    if isinstance(exc, OSError) and exc.errno == errno.EADDRNOTAVAIL:
        return "client: no free source port"
    if isinstance(exc, OSError) and exc.errno in (errno.EMFILE, errno.ENFILE):
        return "client: open files"
    if isinstance(exc, ConnectionRefusedError):
        return "%s: refused" % phase
    if isinstance(exc, (ConnectionError, asyncio.IncompleteReadError)):
        return "%s: closed by the balancer" % phase
    return "%s: %s" % (phase, type(exc).__name__)


class Connection:
    """One keep-alive HTTP/1.1 connection to the balancer, which can turn
    into a WebSocket."""

    def __init__(self, gen, reader, writer):
        self.gen = gen
        self.reader = reader
        self.writer = writer
        self.reused = False         # it has answered a request already

    @classmethod
    async def open(cls, gen):
        return cls(gen, *await cls.connect(gen))

    @staticmethod
    async def connect(gen):
        return await asyncio.open_connection(
            "127.0.0.1", gen.port, local_addr=(gen.source, 0))

    def close(self):
        self.writer.close()

    async def request(self, method, path, cookie, body=b"", extra=""):
        """(status, headers, body) of one request; headers keyed by
        lower-case name."""
        head = "%s %s HTTP/1.1\r\nHost: gwe.example.com\r\n%s%s" % (
            method, path, "Cookie: GWROUTEID=.%s\r\n" % cookie
            if cookie else "", extra)
        if body:
            head += ("Content-Type: application/json\r\n"
                     "Content-Length: %d\r\n" % len(body))
        data = head.encode() + b"\r\n" + body
        self.writer.write(data)
        try:
            answer = await self.response()
        except (ConnectionResetError, asyncio.IncompleteReadError) as e:
            # A keep-alive connection the server closed before it read
            # the request (idle, or a process going away): browsers send
            # the request again on a new connection, once.
            if not self.reused or getattr(e, "partial", b""):
                raise
            self.writer.close()
            self.reader, self.writer = await self.connect(self.gen)
            self.gen.retries += 1
            self.writer.write(data)
            answer = await self.response()
        self.reused = True
        return answer

    async def response(self):
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        if "chunked" in headers.get("transfer-encoding", ""):
            raise VisitorError("chunked answer", "HTTP %d" % status)
        length = int(headers.get("content-length", 0))
        body = await self.reader.readexactly(length) if length else b""
        return status, headers, body

    # -- WebSocket ------------------------------------------------------------

    def send_text(self, text):
        payload = text.encode()
        n = len(payload)
        if n < 126:
            header = struct.pack("!BB", 0x80 | OP_TEXT, 0x80 | n)
        else:
            header = struct.pack("!BBH", 0x80 | OP_TEXT, 0x80 | 126, n)
        self.writer.write(header + ZERO_MASK + payload)

    async def receive_text(self):
        """The next text message (server frames: unmasked, unfragmented);
        pings are answered."""
        while True:
            b0, b1 = await self.reader.readexactly(2)
            length = b1 & 0x7F
            if length == 126:
                length, = struct.unpack("!H", await self.reader.readexactly(2))
            elif length == 127:
                length, = struct.unpack("!Q", await self.reader.readexactly(8))
            payload = await self.reader.readexactly(length)
            opcode = b0 & 0x0F
            if opcode == OP_TEXT:
                return payload.decode()
            if opcode == OP_CLOSE:
                raise VisitorError("WebSocket closed by the balancer")
            if opcode == OP_PING:
                self.writer.write(struct.pack("!BB", 0x80 | OP_PONG,
                                              0x80 | length)
                                  + ZERO_MASK + payload)


class Generator:
    """This process's visitors and the tally of what happened to them."""

    def __init__(self, settings):
        for key, value in settings.items():
            setattr(self, key, value)
        self.rng = random.Random(settings["seed"])
        self.started = 0            # visitors started so far
        self.arriving = 0
        self.held = 0
        self.tasks = set()
        self.errors = {}            # kind -> count, since the start
        self.samples = {}           # kind -> its first message
        self.misroutes = 0
        self.misroute_samples = []
        self.rtts_ms = []           # since the last report
        self.lp_rtts_ms = []        # the long-polling visitors' share
        self.heartbeats = 0         # since the last report
        self.polls = 0              # long-polls answered, since the last
        self.retries = 0            # requests sent again (Connection)
        self.slots = asyncio.Semaphore(settings["in_flight"])
        self.arrived = asyncio.Event()

    # -- the tally ------------------------------------------------------------

    def error(self, phase, exc):
        kind = failure_kind(phase, exc)
        self.errors[kind] = self.errors.get(kind, 0) + 1
        self.samples.setdefault(kind, "%s: %s" % (type(exc).__name__, exc))

    def check_node(self, node, cookie, what):
        """Count a misroute if node is not the cookie's."""
        if node != cookie:
            self.misroutes += 1
            if len(self.misroute_samples) < 5:
                self.misroute_samples.append(
                    "%s for %s answered by %s" % (what, cookie, node))

    def check_replies(self, replies, cookie, what):
        """CometD replies: each from the cookie's node, none refused."""
        for reply in replies:
            self.check_node(reply.get("node"), cookie, what)
            if reply.get("successful") is False:
                raise VisitorError(reply.get("error", "unsuccessful"))

    # -- one visitor ----------------------------------------------------------

    def start(self, target):
        """Start visitors until this process has target (in all)."""
        self.arrived.clear()
        while self.started < target:
            index = self.first + self.started * self.stride
            self.started += 1
            self.arriving += 1
            task = asyncio.create_task(self.visitor(index))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)
        if not self.arriving:
            self.arrived.set()

    async def visitor(self, index):
        websocket = index % 100 < self.ws_percent
        phase = "page"
        try:
            async with self.slots:
                conn, cookie, client_id = await self.arrive()
                if websocket:
                    phase = "upgrade"
                    conn = await self.open_websocket(conn, cookie, client_id)
        except Exception as e:
            self.error(phase, e)
            self.done_arriving()
            return
        self.held += 1
        self.done_arriving()
        try:
            if websocket:
                await self.keep_websocket(conn, cookie, client_id)
            else:
                await self.long_poll(conn, cookie, client_id)
        except asyncio.CancelledError:
            raise
        except Exception as e:
            self.error("websocket" if websocket else "long-poll", e)
        finally:
            self.held -= 1
            conn.close()

    def done_arriving(self):
        self.arriving -= 1
        if not self.arriving:
            self.arrived.set()

    async def arrive(self):
        """The page and the CometD handshake: (its connection, the node's
        name from its cookie, the clientId)."""
        async with asyncio.timeout(self.timeout):
            conn = await Connection.open(self)
        try:
            cookie = None
            for path in PAGE:
                async with asyncio.timeout(self.timeout):
                    status, headers, _ = await conn.request("GET", path,
                                                            cookie)
                if status != 200:
                    raise VisitorError("HTTP %d" % status)
                if cookie is None:
                    cookie = route_of(headers)
                else:
                    self.check_node(headers.get("x-gwe-node"), cookie, path)
            body = json.dumps([{"channel": "/meta/handshake"}]).encode()
            async with asyncio.timeout(self.timeout):
                status, headers, body = await conn.request(
                    "POST", "/server/cometd/handshake", cookie, body)
            if status != 200:
                raise VisitorError("HTTP %d" % status)
            replies = json.loads(body)
            self.check_replies(replies, cookie, "handshake")
            return conn, cookie, replies[0]["clientId"]
        except BaseException:
            conn.close()
            raise

    async def open_websocket(self, page, cookie, client_id):
        """The visitor's WebSocket, its first /meta/connect answered; the
        page's connection closed."""
        page.close()
        async with asyncio.timeout(self.timeout):
            conn = await Connection.open(self)
            status, headers, _ = await conn.request(
                "GET", "/server/cometd", cookie, extra=(
                    "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                    "Sec-WebSocket-Version: 13\r\n"))
        try:
            if status != 101:
                raise VisitorError("HTTP %d" % status)
            self.check_node(headers.get("x-gwe-node"), cookie, "upgrade")
            await self.ws_exchange(conn, cookie, connect_message(client_id))
        except BaseException:
            conn.close()
            raise
        return conn

    async def ws_exchange(self, conn, cookie, message):
        """Send one CometD message on the WebSocket and check its reply."""
        conn.send_text(message)
        async with asyncio.timeout(self.timeout):
            replies = json.loads(await conn.receive_text())
        self.check_replies(replies, cookie, "WebSocket message")

    async def keep_websocket(self, conn, cookie, client_id):
        """Heartbeats and application messages, for ever."""
        loop = asyncio.get_running_loop()
        now = loop.time()
        next_beat = now + self.rng.uniform(0, self.heartbeat)
        next_message = now + self.rng.uniform(0, self.message_max)
        while True:
            at = min(next_beat, next_message)
            await asyncio.sleep(at - loop.time())
            if at == next_beat:
                await self.ws_exchange(conn, cookie,
                                       connect_message(client_id))
                self.heartbeats += 1
                next_beat += self.heartbeat
            else:
                start = time.perf_counter()
                await self.ws_exchange(conn, cookie,
                                       echo_message(client_id, start))
                self.rtts_ms.append(round((time.perf_counter() - start)
                                          * 1000, 2))
                next_message += self.rng.uniform(self.message_min,
                                                 self.message_max)

    async def long_poll(self, conn, cookie, client_id):
        """/meta/connect after /meta/connect on conn, and the application
        messages beside them, for ever."""
        sent = set()                # data (= time sent) of messages out
        publisher = asyncio.create_task(
            self.publish(cookie, client_id, sent))
        body = connect_message(client_id).encode()
        try:
            while True:
                async with asyncio.timeout(self.poll_hold + self.timeout):
                    status, headers, answer = await conn.request(
                        "POST", "/server/cometd/connect", cookie, body)
                if status != 200:
                    raise VisitorError("HTTP %d" % status)
                now = time.perf_counter()
                replies = json.loads(answer)
                self.check_replies(replies, cookie, "long-poll")
                self.polls += 1
                for reply in replies[1:]:
                    start = reply.get("data")
                    if start in sent:
                        sent.discard(start)
                        rtt = round((now - start) * 1000, 2)
                        self.rtts_ms.append(rtt)
                        self.lp_rtts_ms.append(rtt)
                if any(now - start > self.poll_hold + self.timeout
                       for start in sent):
                    raise VisitorError("message lost")
        finally:
            publisher.cancel()

    async def publish(self, cookie, client_id, sent):
        """Application messages on connections of their own.  A failed one
        is counted, and the next follows as usual (a browser retries)."""
        await asyncio.sleep(self.rng.uniform(0, self.message_max))
        while True:
            start = time.perf_counter()
            message = echo_message(client_id, start)
            # Before it is sent: its echo may come back on the long-poll
            # before the POST's own answer does.
            sent.add(start)
            try:
                async with asyncio.timeout(self.timeout):
                    conn = await Connection.open(self)
                    try:
                        status, _, answer = await conn.request(
                            "POST", "/server/cometd", cookie,
                            message.encode(), "Connection: close\r\n")
                    finally:
                        conn.close()
                if status != 200:
                    raise VisitorError("HTTP %d" % status)
                self.check_replies(json.loads(answer), cookie, "publish")
            except Exception as e:
                sent.discard(start)
                self.error("publish", e)
            await asyncio.sleep(self.rng.uniform(self.message_min,
                                                 self.message_max))

    # -- reports ----------------------------------------------------------------

    def report(self, event):
        usage = resource.getrusage(resource.RUSAGE_SELF)
        report = {"event": event, "started": self.started, "held": self.held,
                  "errors": self.errors, "samples": self.samples,
                  "misroutes": self.misroutes,
                  "misroute_samples": self.misroute_samples,
                  "rtts_ms": self.rtts_ms, "lp_rtts_ms": self.lp_rtts_ms,
                  "heartbeats": self.heartbeats,
                  "polls": self.polls, "retries": self.retries,
                  "cpu_seconds": round(usage.ru_utime + usage.ru_stime, 2)}
        self.rtts_ms, self.lp_rtts_ms = [], []
        self.heartbeats, self.polls = 0, 0
        return report

    async def close(self):
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


def route_of(headers):
    """The node's name from the Set-Cookie that named it."""
    cookie = headers.get("set-cookie", "")
    if not cookie.startswith("GWROUTEID=."):
        raise VisitorError("no route cookie")
    return cookie[len("GWROUTEID=."):].split(";", 1)[0]


def connect_message(client_id):
    return json.dumps([{"channel": "/meta/connect", "clientId": client_id}])


def echo_message(client_id, data):
    return json.dumps([{"channel": "/service/echo", "clientId": client_id,
                        "data": data}])


async def read_command():
    """The next command from stdin, read without blocking the loop."""
    line = await asyncio.get_running_loop().run_in_executor(
        None, sys.stdin.readline)
    return json.loads(line) if line.strip() else {"cmd": "close"}


async def run(settings):
    gen = Generator(settings)
    while True:
        command = await read_command()
        if command["cmd"] == "target":
            start = time.monotonic()
            gen.start(command["visitors"])
            await gen.arrived.wait()
            # The visitors held live as long as the run: out of the
            # collector's way, or each full collection walks them all.
            gc.freeze()
            emit(dict(gen.report("reached"),
                      seconds=round(time.monotonic() - start, 2)))
        elif command["cmd"] == "report":
            emit(gen.report("report"))
        else:
            break
    await gen.close()
    emit({"event": "closed"})


if __name__ == "__main__":
    benchlib.client_main(run, __doc__)
