#!/usr/bin/python3
"""One client process of bench/ws_capacity.py: opens WebSocket tunnels
through a load balancer, holds them, exchanges one message on each.

    /usr/bin/python3 bench/ws_client.py SETTINGS

SETTINGS, a JSON object: port (the balancer's); first and tunnels (this
process opens tunnels first .. first + tunnels - 1); concurrency
(handshakes in flight); exchange_concurrency (messages in flight); timeout
(seconds for one handshake or one reply).  Tunnel i carries Cookie:
GWROUTEID=.GWE_Node_1 when i is even, .GWE_Node_2 when odd.  Driven over
stdin/stdout, one JSON object or command per line, so that the parent can
measure the balancer while every client holds all of its tunnels:

    -> {"event": "open", ...}       all handshakes done (or failed)
    <- exchange
    -> {"event": "exchanged", ...}  one message sent and answered on each
    <- close                        (or end of input)
    -> {"event": "closed"}

Needs python3-websockets (Debian).
"""

import asyncio
import json
import sys
import time

import websockets

import benchlib

NODES = ("GWE_Node_1", "GWE_Node_2")
# CometD's heartbeat: a ping through each tunnel at this interval keeps
# it from idling out (the shipped balancer's timeout=65) on a slow ramp.
PING_INTERVAL = 30


def emit(obj):
    print(json.dumps(obj), flush=True)


async def read_command():
    """The next line of stdin, read without blocking the event loop."""
    line = await asyncio.get_running_loop().run_in_executor(
        None, sys.stdin.readline)
    return line.strip() or "close"


class Tunnels:
    """The tunnels of this process and the tally of what went wrong."""

    def __init__(self, port, first, count, timeout):
        self.uri = "ws://127.0.0.1:%d/server/cometd" % port
        self.indexes = range(first, first + count)
        self.timeout = timeout
        self.open = {}              # index -> client protocol
        self.errors = {}            # kind -> count
        self.samples = {}           # kind -> its first error message
        self.misroutes = 0
        self.rtts_ms = []

    def error(self, kind, exc=None):
        self.errors[kind] = self.errors.get(kind, 0) + 1
        if exc is not None:
            self.samples.setdefault(kind, "%s: %s" % (type(exc).__name__,
                                                      exc))

    async def open_one(self, i, slots):
        async with slots:
            try:
                self.open[i] = await websockets.connect(
                    self.uri, compression=None, open_timeout=self.timeout,
                    ping_interval=PING_INTERVAL, ping_timeout=None,
                    close_timeout=5, max_queue=4,
                    extra_headers={"Cookie": "GWROUTEID=." + NODES[i % 2]})
            except asyncio.TimeoutError as e:
                self.error("handshake timeout", e)
            except Exception as e:          # refused, reset, non-101 status
                self.error("handshake failed", e)

    async def exchange_one(self, i, slots):
        ws = self.open[i]
        sent = "%d %d" % (i, time.monotonic_ns())
        async with slots:
            start = time.perf_counter()
            try:
                await ws.send(sent)
                reply = await asyncio.wait_for(ws.recv(), self.timeout)
            except asyncio.TimeoutError as e:
                return self.error("reply timeout", e)
            except websockets.ConnectionClosed as e:
                return self.error("tunnel closed", e)
            rtt = (time.perf_counter() - start) * 1000
        node, _, echoed = reply.partition(" ")
        if echoed != sent:
            self.error("bad reply", ValueError(reply[:80]))
        elif node != NODES[i % 2]:
            self.misroutes += 1
        else:
            self.rtts_ms.append(round(rtt, 3))

    def held(self):
        return sum(1 for ws in self.open.values() if ws.open)

    async def close_all(self, slots):
        async def close(ws):
            async with slots:
                await ws.close()
        await asyncio.gather(*(close(ws) for ws in self.open.values()),
                             return_exceptions=True)


async def run(settings):
    tunnels = Tunnels(settings["port"], settings["first"],
                      settings["tunnels"], settings["timeout"])
    start = time.monotonic()
    slots = asyncio.Semaphore(settings["concurrency"])
    await asyncio.gather(*(tunnels.open_one(i, slots)
                           for i in tunnels.indexes))
    emit({"event": "open", "held": tunnels.held(),
          "seconds": round(time.monotonic() - start, 2),
          "errors": tunnels.errors, "samples": tunnels.samples})
    if await read_command() == "exchange":
        slots = asyncio.Semaphore(settings["exchange_concurrency"])
        await asyncio.gather(*(tunnels.exchange_one(i, slots)
                               for i in sorted(tunnels.open)))
        emit({"event": "exchanged", "held": tunnels.held(),
              "errors": tunnels.errors, "samples": tunnels.samples,
              "misroutes": tunnels.misroutes, "rtts_ms": tunnels.rtts_ms})
        await read_command()
    await tunnels.close_all(asyncio.Semaphore(settings["concurrency"]))
    emit({"event": "closed"})


if __name__ == "__main__":
    benchlib.client_main(run, __doc__)
