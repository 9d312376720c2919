#!/usr/bin/python3
"""WebSocket capacity benchmark: how many CometD WebSockets the shipped
balancer (conf/httpd-gwe-balancer.conf, unchanged) holds at once, what each
costs in memory, and the same for nginx with the Genesys seed's
WebSocket logic.  A benchmark, not a test: it is not in the test suite.

Debian packages it needs: apache2, nginx-light (or nginx: any
/usr/sbin/nginx), python3-websockets; and the module, built with
`make -f Makefile.apxs`.  Run as root (it raises the open-files limit,
and httpd switches to www-data), with Debian's interpreter:

    /usr/bin/python3 bench/ws_capacity.py [--tunnels 10000]
        [--lb httpd,nginx] [--module .libs/mod_gwe_balancer.so]
        [--json results.json]

For each balancer (LB) it starts two GWE-like nodes (bench/node.py), the
LB in front of them on 127.0.0.1 (httpd as harness.ShippedHttpd runs it;
nginx with bench/nginx/websocket.conf), then client processes
(bench/ws_client.py) that open N WebSockets to /server/cometd, half with
the cookie GWROUTEID=.GWE_Node_1, half .GWE_Node_2, a limited number of
handshakes in flight, and hold them all.  With all N open it sends one
message on each (a limited number in flight), checks that the node the
cookie names answered, and measures the round trip.  Memory is the PSS
(/proc/PID/smaps_rollup) summed over the LB's processes, before any
tunnel and with all N open after the exchange; per tunnel is the
difference divided by N.  Every process it starts is stopped by its PID
on the way out, also on Ctrl-C.  Exit status 1 if a tunnel failed or was
misrouted.
"""

import argparse
import json
import math
import os
import re
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import benchlib
from benchlib import BENCH_DIR, PYTHON, harness, memory, process_tree, tail
from harness import http_get, wait_until

NODE_NAMES = ("GWE_Node_1", "GWE_Node_2")


def log(msg):
    print("[ws_capacity] %s" % msg, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------
# The balancers: a harness.ShippedHttpd, or a benchlib.Server running nginx
# ---------------------------------------------------------------------------

def start_lb(name, workdir, nodes, module, nofile):
    """The LB called name, started, in front of nodes."""
    if name == "httpd":
        lb = harness.ShippedHttpd(workdir / "httpd", module, nodes)
    else:
        lb = benchlib.nginx("nginx", "websocket.conf", workdir / "nginx",
                            NOFILE=nofile,
                            NODE1="127.0.0.1:%d" % nodes[0].port,
                            NODE2="127.0.0.1:%d" % nodes[1].port)
    return lb.start()


def lb_status(lb):
    """httpd's server-status view: workers busy (one per tunnel), idle."""
    if not isinstance(lb, harness.ShippedHttpd):
        return {}
    text = http_get(lb.port, "/server-status?auto", timeout=30).text
    return {k: int(v) for k, v in re.findall(
        r"^(BusyWorkers|IdleWorkers): (\d+)", text, re.M)}


def settled(pid, quiet=2.0, timeout=20):
    """Wait until the LB's process set has not changed for quiet seconds
    (httpd starts children for a while after it answers), so that the
    "before" figure is the idle server's."""
    last, since = None, time.monotonic()

    def still():
        nonlocal last, since
        now = sorted(process_tree(pid))
        if now != last:
            last, since = now, time.monotonic()
        return time.monotonic() - since >= quiet
    try:
        wait_until(still, timeout, interval=0.25, what="a settled LB")
    except harness.HarnessError:
        log("the LB's processes kept changing; measuring anyway")


def websockets_open(node):
    return http_get(node.port, "/_stats").json()["websockets_open"]


# ---------------------------------------------------------------------------
# The clients
# ---------------------------------------------------------------------------

class Clients:
    """Client processes (bench/ws_client.py), each with its share of the
    tunnels: one asyncio process cannot keep up on its own on a small
    machine.  Driven in lock step: open, exchange, close."""

    def __init__(self, workdir, port, args):
        self.procs = []
        self.logs = []
        share = math.ceil(args.tunnels / args.clients)
        for k, first in enumerate(range(0, args.tunnels, share)):
            settings = {
                "port": port, "first": first,
                "tunnels": min(share, args.tunnels - first),
                "concurrency": max(1, args.concurrency // args.clients),
                "exchange_concurrency":
                    max(1, args.exchange_concurrency // args.clients),
                "timeout": args.timeout}
            self.logs.append(workdir / ("client-%d.log" % k))
            self.procs.append(self._spawn(settings, self.logs[-1]))

    @staticmethod
    def _spawn(settings, log_path, script="ws_client.py", nice=0):
        """A client (bench/<script>) with its stderr in log_path, at nice
        level nice.  In a session of its own: a Ctrl-C is ours to handle,
        by stopping each process by its PID.  Unbuffered pipes:
        read_line() selects on the file itself."""
        with open(log_path, "wb") as err:
            return subprocess.Popen(
                [PYTHON, str(BENCH_DIR / script), json.dumps(settings)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err,
                bufsize=0, start_new_session=True,
                preexec_fn=(lambda: os.nice(nice)) if nice else None)

    def wait_for(self, event, timeout):
        """Every client's next report, which must be event."""
        reports = []
        deadline = time.monotonic() + timeout
        for proc, log_path in zip(self.procs, self.logs):
            line = read_line(proc, max(0, deadline - time.monotonic()))
            report = json.loads(line) if line.startswith("{") else {}
            if report.get("event") != event:
                raise RuntimeError("a client gave no %r report (%r)\n%s"
                                   % (event, line[:200], tail(log_path)))
            reports.append(report)
        return reports

    def send(self, command):
        for proc in self.procs:
            proc.stdin.write(command.encode() + b"\n")
            proc.stdin.flush()

    def stop(self):
        for proc in self.procs:
            benchlib.stop_process(proc, timeout=5)


def read_line(proc, timeout):
    """The next line proc prints, or "" on EOF or timeout."""
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    ready = sel.select(timeout)
    sel.close()
    return proc.stdout.readline().decode().strip() if ready else ""


# ---------------------------------------------------------------------------
# One run
# ---------------------------------------------------------------------------

def percentile(values, p):
    """Nearest-rank percentile of values (None if there are none)."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def merge_errors(reports):
    """({kind: count}, {kind: first message}) over all clients."""
    kinds, samples = {}, {}
    for report in reports:
        for kind, n in report["errors"].items():
            kinds[kind] = kinds.get(kind, 0) + n
        for kind, message in report["samples"].items():
            samples.setdefault(kind, message)
    return kinds, samples


def measure(name, lb, args, workdir, nodes):
    """Open, hold, exchange, close; the results of one LB."""
    settled(lb.pid)
    before = memory(process_tree(lb.pid))
    log("%s: %d processes, %d KiB PSS idle; opening %d tunnels"
        % (name, before["processes"], before["pss_kib"], args.tunnels))
    clients = Clients(workdir, lb.port, args)
    try:
        opened = clients.wait_for("open", args.phase_timeout)
        held_open = sum(r["held"] for r in opened)
        at_open = memory(process_tree(lb.pid))
        log("%s: %d tunnels open in %.1f s; exchanging" % (
            name, held_open, max(r["seconds"] for r in opened)))
        clients.send("exchange")
        done = clients.wait_for("exchanged", args.phase_timeout)
        after = memory(process_tree(lb.pid))
        status = lb_status(lb)
        node_open = sum(websockets_open(node) for node in nodes)
        clients.send("close")
        clients.wait_for("closed", args.phase_timeout)
    finally:
        clients.stop()
    rtts = [rtt for r in done for rtt in r["rtts_ms"]]
    kinds, samples = merge_errors(done)
    held = sum(r["held"] for r in done)
    return {
        "lb": name,
        "tunnels_requested": args.tunnels,
        "tunnels_held": held,
        "tunnels_open_before_exchange": held_open,
        "tunnels_open_at_nodes": node_open,
        "errors": sum(kinds.values()),
        "error_kinds": kinds,
        "error_samples": samples,
        "misroutes": sum(r["misroutes"] for r in done),
        "open_seconds": max(r["seconds"] for r in opened),
        "pss_before_kib": before["pss_kib"],
        "pss_open_kib": at_open["pss_kib"],
        "pss_after_kib": after["pss_kib"],
        "kib_per_tunnel": round((after["pss_kib"] - before["pss_kib"])
                                / max(1, held), 2),
        "rtt_p50_ms": percentile(rtts, 50),
        "rtt_p99_ms": percentile(rtts, 99),
        "threads": after["threads"],
        "children": after["processes"] - 1,
        "lb_status": status,
    }


def run_lb(name, args, workdir, nofile):
    """Start the nodes and the LB, measure, stop them all (by PID)."""
    nodes, lb = [], None
    try:
        for node_name in NODE_NAMES:
            nodes.append(benchlib.node(node_name, workdir).start())
        lb = start_lb(name, workdir, nodes, args.module, nofile)
        result = measure(name, lb, args, workdir, nodes)
        if failed(result):
            log("%s failed: %s\n%s" % (
                name, json.dumps(result["error_samples"]),
                tail(lb.error_log_path)))
        return result
    except Exception:
        if lb is not None:
            log("%s: stopped by an error\n%s"
                % (name, tail(lb.error_log_path)))
        raise
    finally:
        if lb is not None:
            lb.stop()
        for node in nodes:
            node.stop()


def failed(result):
    return (result["errors"] or result["misroutes"]
            or result["tunnels_held"] < result["tunnels_requested"])


# ---------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------

COLUMNS = [
    ("LB", "lb"), ("tunnels requested", "tunnels_requested"),
    ("tunnels held", "tunnels_held"), ("errors", "errors"),
    ("misroutes", "misroutes"), ("PSS before (MiB)", "pss_before_kib"),
    ("PSS after (MiB)", "pss_after_kib"), ("KiB/tunnel", "kib_per_tunnel"),
    ("RTT p50 (ms)", "rtt_p50_ms"), ("RTT p99 (ms)", "rtt_p99_ms"),
    ("threads", "threads"), ("children", "children"),
]


def cell(key, value):
    if value is None:
        return "-"
    if key.startswith("pss_"):
        return "%.1f" % (value / 1024)
    if isinstance(value, float):
        return "%.2f" % value
    return str(value)


def table(results):
    rows = [[title for title, _ in COLUMNS]]
    rows += [[cell(key, r[key]) for _, key in COLUMNS] for r in results]
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    lines = ["| " + " | ".join(c.rjust(w) for c, w in zip(row, widths))
             + " |" for row in rows]
    lines.insert(1, "|" + "|".join("-" * (w + 1) + ":" for w in widths)
                 + "|")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(
        description="WebSocket capacity of the shipped httpd balancer "
                    "and of nginx.")
    parser.add_argument("--tunnels", type=int, default=10000)
    parser.add_argument("--lb", default="httpd,nginx",
                        help="comma-separated: httpd, nginx")
    parser.add_argument("--module", default=str(harness.MODULE_SO))
    parser.add_argument("--clients", type=int, default=2,
                        help="client processes")
    parser.add_argument("--concurrency", type=int, default=200,
                        help="handshakes in flight, over all clients")
    parser.add_argument("--exchange-concurrency", type=int, default=100,
                        help="messages in flight, over all clients")
    parser.add_argument("--timeout", type=float, default=60,
                        help="seconds for one handshake or one reply")
    parser.add_argument("--phase-timeout", type=float, default=900,
                        help="seconds for all tunnels to open (or answer)")
    parser.add_argument("--json", help="also write the results here")
    parser.add_argument("--keep", action="store_true",
                        help="keep the work dir (logs, configs)")
    args = parser.parse_args()
    lbs = [name.strip() for name in args.lb.split(",") if name.strip()]
    if set(lbs) - {"httpd", "nginx"}:
        parser.error("--lb: httpd and/or nginx")
    if "httpd" in lbs and not Path(args.module).is_file():
        parser.error("--module: no %s (make -f Makefile.apxs)" % args.module)

    # SIGTERM as Ctrl-C: unwind through every finally, stopping by PID.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    nofile = benchlib.raise_nofile_limit()
    if nofile < args.tunnels + 1000:
        log("open-files limit %d: too low for %d tunnels per process"
            % (nofile, args.tunnels))
    harness.become_subreaper()      # reap the detached httpd ourselves
    workdir = Path(tempfile.mkdtemp(prefix="gwe-ws-bench-"))
    results = []
    try:
        for name in lbs:
            results.append(run_lb(name, args, workdir, nofile))
    except KeyboardInterrupt:
        log("interrupted; everything started is stopped")
        return 130
    finally:
        if results:
            print(table(results), flush=True)
        if args.json and results:
            Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
        if args.keep or len(results) < len(lbs) or any(map(failed, results)):
            log("logs and configs kept in %s" % workdir)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return 1 if any(map(failed, results)) else 0


if __name__ == "__main__":
    sys.exit(main())
