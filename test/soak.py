#!/usr/bin/python3
"""Soak: mixed HTTP and WebSocket traffic through the shipped configuration
for a long time, near saturation, watching httpd's memory.  Not part of the
test suite (it takes minutes); results go to test/README.md.

    /usr/bin/python3 test/soak.py [--minutes 10] [--http-visitors 12]
                                  [--websockets 100] [--directive D ...]

It builds nothing: run `make -f Makefile.apxs` first (or set GWB_MODULE).
It starts two demo GWE nodes and httpd with conf/httpd-gwe-balancer.conf on free
127.0.0.1 ports, then for the whole run:
  - HTTP visitors (threads: a third each with GWE_Node_1's cookie, with
    GWE_Node_2's, and with none) send GETs as fast as they are answered;
  - WebSocket visitors keep tunnels open and exchange a message on each
    every second, reopening every ~30 s as CometD clients do.
It samples httpd's total RSS (parent and children) every 10 s.  Pass: zero
errors, zero misroutes, and RSS at the end within 5% of RSS after warm-up
(the first 20% of the run).  Stops everything it started, by PID.
"""

import argparse
import asyncio
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness                                        # noqa: E402
from harness import LoadGenerator, ShippedHttpd       # noqa: E402


def rss_kib(pids):
    total = 0
    for pid in pids:
        try:
            with open("/proc/%d/status" % pid) as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
        except OSError:
            pass
    return total


def httpd_pids(h):
    return [h.pid] + harness.group_members(h.pid)


class WebSocketVisitors:
    """n tunnels, each echoing a message a second; counts errors and
    misroutes."""

    def __init__(self, port, n, seconds):
        self.port, self.n, self.seconds = port, n, seconds
        self.messages = self.errors = self.misroutes = self.opened = 0

    async def visitor(self, i, deadline):
        import websockets
        node = "GWE_Node_%d" % (1 + i % 2)
        while time.monotonic() < deadline:
            try:
                async with websockets.connect(
                        "ws://127.0.0.1:%d/server/cometd" % self.port,
                        extra_headers={"Cookie": "GWROUTEID=." + node},
                        compression=None, ping_interval=None,
                        open_timeout=20) as ws:
                    self.opened += 1
                    if ws.response_headers.get("X-GWE-Node") != node:
                        self.misroutes += 1
                    until = min(deadline, time.monotonic() + 30)
                    while time.monotonic() < until:
                        await ws.send("ping %d" % i)
                        reply = await asyncio.wait_for(ws.recv(), 20)
                        self.messages += 1
                        if reply != "%s:ping %d" % (node, i):
                            self.misroutes += 1
                        await asyncio.sleep(1)
            except Exception as e:          # any failure is an error here
                self.errors += 1
                print("websocket error: %r" % e, file=sys.stderr)
                await asyncio.sleep(1)

    def run(self):
        deadline = time.monotonic() + self.seconds
        asyncio.run(self._all(deadline))

    async def _all(self, deadline):
        await asyncio.gather(*(self.visitor(i, deadline)
                               for i in range(self.n)))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--minutes", type=float, default=10)
    ap.add_argument("--http-visitors", type=int, default=12)
    ap.add_argument("--websockets", type=int, default=100)
    ap.add_argument("--directive", action="append", default=[],
                    help="a directive for httpd (-C, read before the "
                    "shipped config), e.g. 'MaxMemFree 64'; repeatable")
    args = ap.parse_args()
    seconds = args.minutes * 60

    module = os.environ.get("GWB_MODULE", str(harness.MODULE_SO))
    work = Path(tempfile.mkdtemp(prefix="gwe-soak-"))
    nodes = [harness.Node("GWE_Node_%d" % i, log_dir=work) for i in (1, 2)]
    for node in nodes:
        node.start()
    h = ShippedHttpd(work / "httpd", module, nodes)
    h.directives += args.directive
    gen = None
    try:
        h.start()
        names = ["GWE_Node_1", "GWE_Node_2", None]
        gen = LoadGenerator(h.port, [names[i % 3] for i in
                                     range(args.http_visitors)],
                            healthy=lambda n: True, timeout=30,
                            max_seconds=seconds + 60)
        ws = WebSocketVisitors(h.port, args.websockets, seconds)
        ws_thread = threading.Thread(target=ws.run, daemon=True)
        gen.new_phase("soak")
        gen.start()
        ws_thread.start()
        began = time.monotonic()
        samples = []
        while time.monotonic() - began < seconds:
            time.sleep(10)
            samples.append((time.monotonic() - began,
                            rss_kib(httpd_pids(h))))
            print("t=%4.0f s  httpd RSS %7.1f MiB  http requests %d  "
                  "ws messages %d" % (samples[-1][0], samples[-1][1] / 1024,
                                      gen.phase.requests, ws.messages),
                  flush=True)
        gen.stop()
        ws_thread.join(60)
    finally:
        if gen:
            gen.stop()
        h.stop()
        for node in nodes:
            node.stop()

    warm = [kib for t, kib in samples if t >= seconds * 0.2]
    base, end = warm[0], samples[-1][1]
    growth = (end - base) / base * 100
    phase = gen.phase
    print("\nsoak: %.0f min, %d HTTP visitors, %d WebSockets on %d cores"
          % (args.minutes, args.http_visitors, args.websockets,
             os.cpu_count()))
    print("HTTP: " + phase.summary())
    print("WebSocket: %d tunnels opened, %d messages, %d errors, "
          "%d misrouted" % (ws.opened, ws.messages, ws.errors, ws.misroutes))
    print("httpd RSS: %.1f MiB after warm-up, %.1f MiB at the end (%+.1f%%)"
          % (base / 1024, end / 1024, growth))
    ok = (phase.errors == 0 and not phase.misroutes and ws.errors == 0
          and ws.misroutes == 0 and abs(growth) <= 5)
    print("soak: %s" % ("PASS" if ok else "FAIL"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
