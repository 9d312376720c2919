"""WebSocket visitors that behave as CometD clients do: each holds a tunnel
open through the balancer, sending its route cookie, and when the server
closes it, reconnects at once with the same cookie.  A TunnelFleet runs
them on an asyncio loop in a thread of its own, so that a test restarts
httpd or drives balancer-manager meanwhile, and records every tunnel it
opened (a Tunnel): which node answered, when it opened and closed, and who
closed it."""

import asyncio
import random
import threading
import time

from .base import HarnessError, wait_until


class Tunnel:
    """One WebSocket connection of a visitor.  node: the X-GWE-Node of the
    101 (None if the upgrade failed, then error says why); reply: the
    node's answer to "hello" (None until it came), talked: it was the
    answer of the node that took the tunnel; closed_by: "server"
    (httpd or the node closed it), "client" (the visit ended), or None
    while open."""

    def __init__(self, visitor, cookie_node):
        self.visitor = visitor
        self.cookie_node = cookie_node
        self.node = None
        self.error = None
        self.reply = None
        self.talked = False
        self.began = time.monotonic()
        self.opened = None
        self.closed = None
        self.closed_by = None

    @property
    def is_open(self):
        return self.opened is not None and self.closed is None

    def __repr__(self):
        return ("<Tunnel visitor=%s cookie=%s node=%s error=%s closed_by=%s>"
                % (self.visitor, self.cookie_node, self.node, self.error,
                   self.closed_by))


class TunnelFleet:
    """Visitors of demo nodes through httpd's port, on /server/cometd.

        fleet = TunnelFleet(h.port)
        fleet.hold("GWE_Node_1", 50)          # until fleet.stop()
        fleet.churn(["GWE_Node_1", "GWE_Node_2"], 20, (1.0, 3.0))
        fleet.wait_open(70)
        ...
        fleet.stop()

    A visitor sends "hello" when its tunnel opens and every heartbeat
    seconds (CometD's /meta/connect does so, and keeps httpd's tunnel
    timeout from closing an idle tunnel), and expects reply_format % node
    back (the demo node's answer; bench/node.py's is "%s hello").
    A visitor whose upgrade fails
    retries after retry_pause, as CometD does; each attempt is a Tunnel
    with .error set."""

    def __init__(self, port, path="/server/cometd", open_timeout=30,
                 retry_pause=0.5, heartbeat=2.0, reply_format="%s:hello"):
        import websockets                   # python3-websockets
        self._websockets = websockets
        self.url = "ws://127.0.0.1:%d%s" % (port, path)
        self.open_timeout = open_timeout
        self.retry_pause = retry_pause
        self.heartbeat = heartbeat
        self.reply_format = reply_format
        self.tunnels = []
        self._lock = threading.Lock()
        self._tasks = set()
        self._open = {}             # WebSocket -> its Tunnel
        self._visitors = 0
        self._stopping = False
        self._loop = asyncio.new_event_loop()
        self._stopped = asyncio.Event()     # set by stop(), in the loop
        self._thread = threading.Thread(target=self._loop.run_forever,
                                        daemon=True)
        self._thread.start()

    # -- what a test calls ---------------------------------------------------

    def hold(self, node, count):
        """count visitors with node's cookie, each holding a tunnel until
        stop(); returns their visitor numbers."""
        visitors = list(self._new_visitors(count))
        for v in visitors:
            self._start(self._visit(v, node, None))
        return visitors

    def churn(self, nodes, concurrency, lifetime):
        """concurrency visitors at a time, each a new visit with the cookie
        of one of nodes in turn, lasting random.uniform(*lifetime) seconds,
        then followed by the next visitor, until stop()."""
        for i in range(concurrency):
            self._start(self._churn(nodes, i, lifetime))

    def snapshot(self):
        """A copy of the list of Tunnels so far."""
        with self._lock:
            return list(self.tunnels)

    def open_tunnels(self, visitors=None):
        """The open tunnels (of the given visitor numbers)."""
        return [t for t in self.snapshot()
                if t.is_open and (visitors is None or t.visitor in visitors)]

    def wait_open(self, count, visitors=None, timeout=60):
        """Wait until at least count tunnels (of the given visitors) are
        open and have talked."""
        wait_until(lambda: len([t for t in self.open_tunnels(visitors)
                                if t.talked]) >= count, timeout,
                   interval=0.05, what="%d open tunnels" % count)

    def stop(self, timeout=60):
        """Close every tunnel as a visitor leaving does (a close frame),
        end every visitor, and the loop.  Once is enough."""
        if self._loop.is_closed():
            return
        future = asyncio.run_coroutine_threadsafe(self._shutdown(),
                                                  self._loop)
        try:
            future.result(timeout)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout)
        if self._thread.is_alive():
            raise HarnessError("the fleet's loop did not stop")
        self._loop.close()

    # -- the visitors --------------------------------------------------------

    def _new_visitors(self, count):
        with self._lock:
            first = self._visitors
            self._visitors += count
        return range(first, first + count)

    def _start(self, coroutine):
        def create():
            task = self._loop.create_task(coroutine)
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        self._loop.call_soon_threadsafe(create)

    def _record(self, visitor, node):
        tunnel = Tunnel(visitor, node)
        with self._lock:
            self.tunnels.append(tunnel)
        return tunnel

    async def _churn(self, nodes, i, lifetime):
        while not self._stopping:
            visitor, = self._new_visitors(1)
            await self._visit(visitor, nodes[(visitor + i) % len(nodes)],
                              random.uniform(*lifetime))

    async def _visit(self, visitor, node, lifetime):
        """One visit: a tunnel, reopened at once whenever the server closes
        it, until lifetime (None: until stop()) is over."""
        loop = asyncio.get_running_loop()
        end = None if lifetime is None else loop.time() + lifetime
        while not self._stopping:
            tunnel = self._record(visitor, node)
            ws = await self._connect(tunnel)
            if ws is None:
                await self._pause(self.retry_pause)
                continue
            if self._stopping:
                tunnel.closed_by = "client"
                await ws.close()
                tunnel.closed = time.monotonic()
                return
            try:
                left = None if end is None else max(0.0, end - loop.time())
                if await self._hold_open(ws, tunnel, left):
                    return
            finally:
                self._open.pop(ws, None)

    async def _pause(self, seconds):
        try:
            await asyncio.wait_for(self._stopped.wait(), seconds)
        except asyncio.TimeoutError:
            pass

    async def _connect(self, tunnel):
        try:
            ws = await self._websockets.connect(
                self.url, extra_headers={"Cookie": "GWROUTEID=." +
                                         tunnel.cookie_node},
                compression=None, open_timeout=self.open_timeout,
                ping_interval=None, close_timeout=5)
        except Exception as e:      # refused, reset, 503: a failed visit
            tunnel.error = "%s: %s" % (type(e).__name__, e)
            tunnel.closed = time.monotonic()
            return None
        self._open[ws] = tunnel
        tunnel.opened = time.monotonic()
        tunnel.node = ws.response_headers.get("X-GWE-Node")
        return ws

    async def _hold_open(self, ws, tunnel, left):
        """Talk every heartbeat until the visit is over (then close: True)
        or the server closes the tunnel (False)."""
        loop = asyncio.get_running_loop()
        end = None if left is None else loop.time() + left
        try:
            while True:
                await self._talk(ws, tunnel)
                wait = self.heartbeat
                if end is not None:
                    wait = min(wait, end - loop.time())
                if wait > 0 and await self._closed_within(ws, wait):
                    break
                if end is not None and loop.time() >= end:
                    tunnel.closed_by = "client"
                    await ws.close()
                    break
        except self._websockets.exceptions.ConnectionClosed:
            pass
        except asyncio.CancelledError:
            tunnel.closed_by = tunnel.closed_by or "client"
            raise
        finally:
            tunnel.closed = tunnel.closed or time.monotonic()
        tunnel.closed_by = tunnel.closed_by or "server"
        return tunnel.closed_by == "client"

    async def _talk(self, ws, tunnel):
        await ws.send("hello")
        try:
            reply = await asyncio.wait_for(ws.recv(), 20)
        except asyncio.TimeoutError:
            tunnel.error = "no answer within 20 s"
            reply = None
        if tunnel.reply is None or tunnel.talked:
            tunnel.reply = reply
            tunnel.talked = reply == self.reply_format % tunnel.node

    async def _closed_within(self, ws, seconds):
        try:
            await asyncio.wait_for(ws.wait_closed(), seconds)
            return True
        except asyncio.TimeoutError:
            return False

    async def _shutdown(self):
        """Every visitor leaves: those holding a tunnel close it, those
        opening one close it once open, those pausing stop."""
        self._stopping = True
        self._stopped.set()
        for tunnel in self._open.values():
            tunnel.closed_by = "client"
        await asyncio.gather(*(ws.close() for ws in list(self._open)),
                             return_exceptions=True)
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=self.open_timeout)
        # Whatever is left, and what python3-websockets still runs for
        # connections (closing handshakes end within close_timeout).
        for task in list(self._tasks):
            task.cancel()
        others = asyncio.all_tasks() - {asyncio.current_task()}
        if others:
            await asyncio.wait(others, timeout=10)
