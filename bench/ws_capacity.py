#!/usr/bin/python3
"""WebSocket capacity benchmark: how many CometD WebSockets the shipped
balancer (conf/httpd-gwe-balancer.conf, unchanged) holds at once, what each
costs in memory, and the same for nginx with the Genesys seed's
WebSocket logic.  A benchmark, not a test: it is not in the test suite.

Debian packages it needs (install them first):

    DEBIAN_FRONTEND=noninteractive apt-get install -y \\
        apache2 nginx-light python3-websockets python3-pytest

(nginx-light or nginx: any /usr/sbin/nginx; python3-pytest because httpd
is run by the test suite's own ShippedHttpd, test/test_shipped.py), and
the module, built with `make -f Makefile.apxs`.  Run as root (it raises the open-files limit,
and httpd switches to www-data), with Debian's interpreter:

    /usr/bin/python3 bench/ws_capacity.py [--tunnels 10000]
        [--lb httpd,nginx] [--module .libs/mod_gwe_balancer.so]
        [--json results.json]

For each balancer (LB) it starts two GWE-like nodes (bench/ws_backend.py),
the LB in front of them on 127.0.0.1, then client processes
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
import resource
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent
sys.path.insert(0, str(REPO_DIR / "test"))

import harness                              # noqa: E402
from harness import http_get, wait_until    # noqa: E402
from test_shipped import ShippedHttpd       # noqa: E402

PYTHON = "/usr/bin/python3"
NGINX = "/usr/sbin/nginx"
NODE_NAMES = ("GWE_Node_1", "GWE_Node_2")
# Open files for every process here (2 sockets per tunnel in an LB
# process, 1 in a client or a node), where the hard limit may be raised.
NOFILE = 1 << 17


def log(msg):
    print("[ws_capacity] %s" % msg, file=sys.stderr, flush=True)


def raise_nofile_limit():
    """Raise RLIMIT_NOFILE for this process and so for every process it
    starts: httpd's children, nginx's workers, the nodes and the clients
    inherit it.  The hard limit too, to NOFILE, where this root may (a
    container without CAP_SYS_RESOURCE may not); returns the limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (NOFILE, NOFILE))
        return NOFILE
    except (ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        return hard


def stop_process(proc, sig=signal.SIGTERM, timeout=10):
    """Stop a Popen child by its PID: sig, then SIGKILL after timeout."""
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def spawn(cmd, log_path, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE):
    """Start cmd with its stderr in log_path.  In a session of its own: a
    Ctrl-C is ours to handle, by stopping each process by its PID in
    order.  Unbuffered pipes: read_line() selects on the file itself."""
    with open(log_path, "wb") as err:
        return subprocess.Popen(cmd, stdin=stdin, stdout=stdout, stderr=err,
                                bufsize=0, start_new_session=True)


def tail(path, lines=30):
    try:
        text = Path(path).read_text(errors="replace")
    except OSError:
        return "(%s: none)" % path
    return "--- %s (last %d lines) ---\n%s" % (
        path, lines, "\n".join(text.splitlines()[-lines:]))


# ---------------------------------------------------------------------------
# Process memory
# ---------------------------------------------------------------------------

def _proc_field(pid, name, field):
    """The number after "field:" in /proc/PID/name, or 0 if it is gone."""
    try:
        with open("/proc/%d/%s" % (pid, name)) as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def child_pids(parent):
    """PIDs whose parent is parent (not zombies)."""
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open("/proc/%s/stat" % entry) as f:
                    state, ppid = f.read().rsplit(")", 1)[1].split()[:2]
            except OSError:
                continue
            if int(ppid) == parent and state not in ("Z", "X"):
                pids.append(int(entry))
    return pids


def memory(pids):
    """PSS (KiB) and threads summed over pids, and how many processes."""
    return {"pss_kib": sum(_proc_field(p, "smaps_rollup", "Pss")
                           for p in pids),
            "threads": sum(_proc_field(p, "status", "Threads")
                           for p in pids),
            "processes": len(pids)}


def settled(pids_of, quiet=2.0, timeout=20):
    """Wait until the LB's process set has not changed for quiet seconds
    (httpd starts children for a while after it answers), so that the
    "before" figure is the idle server's."""
    last, since = None, time.monotonic()

    def still():
        nonlocal last, since
        now = sorted(pids_of())
        if now != last:
            last, since = now, time.monotonic()
        return time.monotonic() - since >= quiet
    try:
        wait_until(still, timeout, interval=0.25, what="a settled LB")
    except harness.HarnessError:
        log("the LB's processes kept changing; measuring anyway")


# ---------------------------------------------------------------------------
# The nodes
# ---------------------------------------------------------------------------

class Backend:
    """One bench/ws_backend.py process: a GWE node (.name, .port)."""

    def __init__(self, name, workdir):
        self.name = name
        self.log_path = workdir / ("%s.log" % name)
        self.proc = spawn([PYTHON, str(BENCH_DIR / "ws_backend.py"),
                           "--name", name], self.log_path)
        line = read_line(self.proc, 10)
        if not line.startswith("READY "):
            self.stop()
            raise RuntimeError("%s did not start: %r\n%s"
                               % (name, line, tail(self.log_path)))
        self.port = int(line.split()[1])

    def websockets_open(self):
        return http_get(self.port, "/_stats").json()["websockets_open"]

    def stop(self):
        stop_process(self.proc)


def read_line(proc, timeout):
    """The next line proc prints, or "" on EOF or timeout."""
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    ready = sel.select(timeout)
    sel.close()
    return proc.stdout.readline().decode().strip() if ready else ""


# ---------------------------------------------------------------------------
# The balancers
# ---------------------------------------------------------------------------

class HttpdLB:
    """conf/httpd-gwe-balancer.conf as shipped, run as test/test_shipped.py runs
    it: the nodes, paths and port given as -C "Define"s."""

    name = "httpd"

    def __init__(self, workdir, backends, module):
        self.httpd = ShippedHttpd(workdir / "httpd", module, backends)
        self.port = self.httpd.port
        self.error_log = self.httpd.error_log_path

    def start(self):
        self.httpd.start()

    def pids(self):
        pid = self.httpd.pid
        return [pid] + self.httpd.child_pids() if pid else []

    def extra(self):
        """server-status's view: workers busy (one per tunnel), idle."""
        text = http_get(self.port, "/server-status?auto", timeout=30).text
        return {k: int(v) for k, v in re.findall(
            r"^(BusyWorkers|IdleWorkers): (\d+)", text, re.M)}

    def stop(self):
        self.httpd.stop(timeout=30)


NGINX_CONF = """\
# Written by bench/ws_capacity.py: nginx with the Genesys seed's
# WebSocket logic, a private instance on 127.0.0.1.
worker_processes auto;
# Two sockets per tunnel (visitor, node): as many as this machine's
# open-files limit lets one worker have.
worker_rlimit_nofile {nofile};
events {{
    worker_connections {nofile};
}}
http {{
    access_log {prefix}/logs/access.log;
    client_body_temp_path {prefix}/tmp/body;
    proxy_temp_path {prefix}/tmp/proxy;
    fastcgi_temp_path {prefix}/tmp/fastcgi;
    uwsgi_temp_path {prefix}/tmp/uwsgi;
    scgi_temp_path {prefix}/tmp/scgi;

    map $http_upgrade $connection_upgrade {{
        default upgrade;
        ''      close;
    }}
    map $cookie_GWROUTEID $http_sticky {{
        .{node1} 127.0.0.1:{port1};
        .{node2} 127.0.0.1:{port2};
    }}
    upstream gwe {{
        server 127.0.0.1:{port1};
        server 127.0.0.1:{port2};
    }}
    server {{
        # reuseport: the kernel spreads connections evenly over the
        # workers, so that no worker needs more sockets than the limit.
        listen 127.0.0.1:{port} reuseport;
        location /server {{
            proxy_http_version 1.1;
            proxy_set_header Host $host;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;
            # As the shipped httpd's timeout=65: above CometD's 30 s.
            proxy_read_timeout 65s;
            if ($http_sticky) {{
                proxy_pass http://$http_sticky$uri?$args;
            }}
            proxy_pass http://gwe;
        }}
    }}
}}
"""


class NginxLB:
    """Our own nginx (never the system's service): -p PREFIX -c CONF."""

    name = "nginx"

    def __init__(self, workdir, backends, nofile):
        self.prefix = workdir / "nginx"
        for sub in ("conf", "logs", "run", "tmp"):
            (self.prefix / sub).mkdir(parents=True, exist_ok=True)
        self.port = harness.free_port()
        self.error_log = self.prefix / "logs" / "error.log"
        self.conf = self.prefix / "conf" / "nginx.conf"
        self.conf.write_text(NGINX_CONF.format(
            prefix=self.prefix, port=self.port,
            nofile=nofile,
            node1=backends[0].name, port1=backends[0].port,
            node2=backends[1].name, port2=backends[1].port))
        self.proc = None

    def start(self):
        globals_ = "pid %s; daemon off;" % (self.prefix / "run" / "nginx.pid")
        self.proc = spawn([NGINX, "-p", str(self.prefix), "-c", str(self.conf),
                           "-e", str(self.error_log), "-g", globals_],
                          self.prefix / "logs" / "stderr.log",
                          stdout=subprocess.DEVNULL)

        def ready():
            if self.proc.poll() is not None:
                raise RuntimeError("nginx exited %d\n%s" % (
                    self.proc.returncode, tail(self.error_log)))
            try:
                return http_get(self.port, "/server/isAlive",
                                timeout=2).status == 200
            except OSError:
                return False
        wait_until(ready, 10, what="nginx to answer")

    def pids(self):
        if not self.proc or self.proc.poll() is not None:
            return []
        return [self.proc.pid] + child_pids(self.proc.pid)

    def extra(self):
        return {}

    def stop(self):
        if self.proc:
            stop_process(self.proc, timeout=30)     # SIGTERM: fast shutdown


# ---------------------------------------------------------------------------
# The clients
# ---------------------------------------------------------------------------

class Clients:
    """Client processes (bench/ws_client.py), each with its share of the
    tunnels: one asyncio process cannot keep up on its own on a small
    machine.  Driven in lock step: open, exchange, close."""

    def __init__(self, workdir, port, tunnels, processes, concurrency,
                 exchange_concurrency, timeout):
        self.procs = []
        self.logs = []
        share = math.ceil(tunnels / processes)
        for k, first in enumerate(range(0, tunnels, share)):
            log_path = workdir / ("client-%d.log" % k)
            self.logs.append(log_path)
            self.procs.append(spawn(
                [PYTHON, str(BENCH_DIR / "ws_client.py"),
                 "--port", str(port), "--first", str(first),
                 "--tunnels", str(min(share, tunnels - first)),
                 "--concurrency", str(max(1, concurrency // processes)),
                 "--exchange-concurrency",
                 str(max(1, exchange_concurrency // processes)),
                 "--timeout", str(timeout)],
                log_path, stdin=subprocess.PIPE))

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
            stop_process(proc, timeout=5)


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


def measure(lb, args, workdir, backends):
    """Open, hold, exchange, close; the results of one LB."""
    settled(lb.pids)
    before = memory(lb.pids())
    log("%s: %d processes, %d KiB PSS idle; opening %d tunnels"
        % (lb.name, before["processes"], before["pss_kib"], args.tunnels))
    clients = Clients(workdir, lb.port, args.tunnels, args.clients,
                      args.concurrency, args.exchange_concurrency,
                      args.timeout)
    try:
        opened = clients.wait_for("open", args.phase_timeout)
        held_open = sum(r["held"] for r in opened)
        at_open = memory(lb.pids())
        log("%s: %d tunnels open in %.1f s; exchanging" % (
            lb.name, held_open, max(r["seconds"] for r in opened)))
        clients.send("exchange")
        done = clients.wait_for("exchanged", args.phase_timeout)
        after = memory(lb.pids())
        extra = lb.extra()
        backend_open = sum(b.websockets_open() for b in backends)
        clients.send("close")
        clients.wait_for("closed", args.phase_timeout)
    finally:
        clients.stop()
    rtts = [rtt for r in done for rtt in r["rtts_ms"]]
    kinds, samples = merge_errors(done)
    held = sum(r["held"] for r in done)
    return {
        "lb": lb.name,
        "tunnels_requested": args.tunnels,
        "tunnels_held": held,
        "tunnels_open_before_exchange": held_open,
        "tunnels_open_at_nodes": backend_open,
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
        "lb_status": extra,
    }


def run_lb(name, args, workdir, nofile):
    """Start the nodes and the LB, measure, stop them all (by PID)."""
    backends = []
    lb = None
    try:
        for node in NODE_NAMES:
            backends.append(Backend(node, workdir))
        lb = (HttpdLB(workdir, backends, args.module) if name == "httpd"
              else NginxLB(workdir, backends, nofile))
        lb.start()
        result = measure(lb, args, workdir, backends)
        if failed(result):
            log("%s failed: %s\n%s" % (
                name, json.dumps(result["error_samples"]),
                tail(lb.error_log)))
        return result
    except Exception:
        if lb is not None:
            log("%s: stopped by an error\n%s" % (name, tail(lb.error_log)))
        raise
    finally:
        if lb is not None:
            lb.stop()
        for backend in backends:
            backend.stop()


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
    nofile = raise_nofile_limit()
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
