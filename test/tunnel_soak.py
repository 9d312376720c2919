#!/usr/bin/python3
"""Long run of GWEBalancerTunnelRecycle at full scale: thousands of
WebSocket visitors that reconnect with their cookie (as CometD does)
through conf/httpd-gwe-balancer.conf, and a graceful restart again and
again.  Not part of the test suite (it takes a quarter of an hour);
results go to test/README.md.

    /usr/bin/python3 test/tunnel_soak.py [--tunnels 3000] [--grow 50]
        [--churn 300] [--restarts 20] [--interval 45] [--recycle "5s 30s"]

It builds nothing: run `make -f Makefile.apxs` first (or set GWB_MODULE).
Two nodes (bench/node.py, which holds thousands of WebSockets
without a thread each), httpd with the shipped file and only
GWEBalancerTunnelRecycle replaced (-c, after the file: the shipped 60s
120s would make 20 restarts take an hour), on free 127.0.0.1 ports.
Visitors: --tunnels long-lived ones, half per node, --grow more after each
restart, and --churn short visits at a time (15 to 45 s each, one node's
cookie or the other's); every visitor sends a message every 20 s.  A
graceful restart every --interval seconds.  Pass: no upgrade refused or
failed, none misrouted (every tunnel on its cookie's node), every old
generation's processes gone within GRACE + SPREAD + 30 s, never more
processes than ServerLimit.  `--recycle off` is the baseline, httpd's
own behaviour: it reports how the old generations pile up.  Stops
everything it started, by PID.
"""

import argparse
import collections
import os
import re
import resource
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness                                              # noqa: E402
from harness import Node, ShippedHttpd, TunnelFleet, http_get  # noqa: E402

BACKEND = harness.REPO_DIR / "bench" / "node.py"
MARGIN = 30


def seconds(value):
    """"30s", "2min", "500ms" or "30" as seconds (httpd's time syntax)."""
    m = re.fullmatch(r"(\d+)(ms|s|min|h)?", value)
    number, unit = int(m.group(1)), m.group(2) or "s"
    return number * {"ms": 0.001, "s": 1, "min": 60, "h": 3600}[unit]


class Generations:
    """Watches httpd's children: for each restart, when the processes of
    the generation it ended were all gone; and the most processes seen."""

    def __init__(self, h):
        self.h = h
        self.most = 0
        self.ended = []             # [restart time, old pids, gone after]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    def restarted(self, at, old):
        self.ended.append([at, set(old), None])

    def _watch(self):
        while not self._stop.wait(0.25):
            children = set(self.h.child_pids())
            self.most = max(self.most, len(children))
            for entry in self.ended:
                if entry[2] is None and not entry[1] & children:
                    entry[2] = time.monotonic() - entry[0]

    def stop(self):
        self._stop.set()
        self._thread.join()


def raise_nofile_limit():
    """Thousands of sockets for the client (httpd and the nodes raise
    their own)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def closes_per_second(tunnels):
    """The most tunnels the server closed within one second."""
    per = collections.Counter(int(t.closed) for t in tunnels
                              if t.closed_by == "server")
    return max(per.values(), default=0)


def open_gauge(h):
    return sum(int(n) for n in re.findall(
        r"^gwe_balancer_member_tunnels\{[^}]*\} (\d+)$",
        http_get(h.port, "/metrics").text, re.M))


def run(args, workdir):
    module = os.environ.get("GWB_MODULE", str(harness.MODULE_SO))
    bound = None if args.recycle == "off" else \
        sum(seconds(v) for v in args.recycle.split())
    nodes = [Node("GWE_Node_%d" % i, script=BACKEND,
                  log_dir=workdir / "nodes") for i in (1, 2)]
    h = fleet = generations = None
    try:
        for node in nodes:
            node.start()
        h = ShippedHttpd(workdir / "httpd", module, nodes)
        h.overrides.append("GWEBalancerTunnelRecycle %s" % args.recycle)
        server_limit = int(h.run_cfg_defines()["GWE_SERVER_LIMIT"])
        h.start()
        fleet = TunnelFleet(h.port, heartbeat=20, open_timeout=60,
                            reply_format="%s hello")
        long_lived = set()
        for node in nodes:
            long_lived |= set(fleet.hold(node.name, args.tunnels // 2))
        fleet.churn([n.name for n in nodes], args.churn, (15, 45))
        fleet.wait_open(len(long_lived), long_lived, timeout=600)
        print("%d long-lived tunnels open, %d short visits at a time"
              % (len(long_lived), args.churn), flush=True)
        generations = Generations(h)
        for i in range(args.restarts):
            time.sleep(args.interval)
            generations.restarted(time.monotonic(), h.child_pids())
            h.graceful(timeout=60)
            for node in nodes:
                long_lived |= set(fleet.hold(node.name, args.grow // 2))
            tunnels = fleet.snapshot()
            print("restart %2d: %4d open, %5d tunnels so far, %d refused, "
                  "%d processes (most %d), previous generation gone after "
                  "%s" % (i + 1, len(fleet.open_tunnels()), len(tunnels),
                          len([t for t in tunnels if t.error]),
                          len(h.child_pids()), generations.most,
                          "%.1f s" % generations.ended[-2][2]
                          if i and generations.ended[-2][2] else "-"),
                  flush=True)
        if bound is not None:
            harness.wait_until(lambda: generations.ended[-1][2] is not None,
                               bound + MARGIN, interval=0.5,
                               what="the last old generation to exit")
        fleet.wait_open(len(long_lived), long_lived, timeout=120)
        gauge = open_gauge(h)
        open_now = len(fleet.open_tunnels())
        generations.stop()
        fleet.stop()
        return report(fleet.snapshot(), generations, bound, gauge,
                      open_now, server_limit)
    finally:
        if generations:
            generations.stop()
        if fleet:
            fleet.stop()
        if h:
            h.stop(timeout=60, graceful_timeout=30)
        for node in nodes:
            node.stop()


def report(tunnels, generations, bound, gauge, open_now, server_limit):
    """Prints the figures; returns the exit status (bound: GRACE + SPREAD,
    None for the baseline; server_limit: the shipped config's)."""
    refused = [t for t in tunnels if t.error]
    misrouted = [t for t in tunnels if t.node and t.node != t.cookie_node]
    wrong = [t for t in tunnels if t.reply is not None and not t.talked]
    lifetimes = [e[2] for e in generations.ended]
    gone = [x for x in lifetimes if x is not None]
    print("tunnels opened %d, closed by the server (recycled) %d, most "
          "closed in one second %d" % (len(tunnels),
                                       len([t for t in tunnels
                                            if t.closed_by == "server"]),
                                       closes_per_second(tunnels)))
    print("refused %d, misrouted %d, wrong answers %d"
          % (len(refused), len(misrouted), len(wrong)))
    print("old generations gone: %d of %d, after %s; most processes at once "
          "%d" % (len(gone), len(lifetimes),
                  "%.1f s to %.1f s" % (min(gone), max(gone)) if gone
                  else "-", generations.most))
    print("open tunnels at the end: %d by the clients, %d by /metrics"
          % (open_now, gauge))
    for t in (refused + misrouted + wrong)[:10]:
        print("  ", t)
    if bound is None:
        print("BASELINE (GWEBalancerTunnelRecycle off)")
        return 0
    ok = not (refused or misrouted or wrong) \
        and generations.most <= server_limit and gauge == open_now and len(gone) == len(lifetimes) \
        and max(gone) <= bound + MARGIN
    print("PASS (GRACE + SPREAD: %g s)" % bound if ok else "FAIL")
    return 0 if ok else 1


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tunnels", type=int, default=3000)
    parser.add_argument("--grow", type=int, default=50)
    parser.add_argument("--churn", type=int, default=300)
    parser.add_argument("--restarts", type=int, default=20)
    parser.add_argument("--interval", type=float, default=45)
    parser.add_argument("--recycle", default="5s 30s",
                        help='GRACE SPREAD, or "off" (the baseline)')
    args = parser.parse_args()
    # SIGTERM stops the run as Ctrl-C does: what it started is stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    raise_nofile_limit()
    with tempfile.TemporaryDirectory(prefix="gwb-tunnel-soak-") as tmp:
        return run(args, Path(tmp))


if __name__ == "__main__":
    sys.exit(main())
