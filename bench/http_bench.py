#!/usr/bin/python3
"""HTTP throughput of gwesticky against what users would otherwise run.

Two fake GWE nodes (nginx, bench/nginx/backend.conf) answer at once with
their routing cookie and an X-GWE-Node header.  wrk sends the same GET
/server/about with Cookie: GWROUTEID=.GWE_Node_2 through each setup:

  a  gwesticky: conf/httpd-gwe-balancer.conf as shipped
  b  httpd's built-in stickysession=GWROUTEID + byrequests (same file,
     ProxySet changed)
  c  plain byrequests, no stickiness (same file, ProxySet changed)
  d  a single-node ProxyPass, no balancer: the floor for any Apache balancer
  e  nginx with the Genesys sample's map logic (bench/nginx/seed.conf)
  f  nginx, same logic with upstream keepalive (bench/nginx/tuned.conf)
  g  node 2 directly
  h  gwesticky again: a second, identical instance of a.  a/h is what
     noise alone makes of two identical setups on this machine, the
     resolution every other ratio is read against.
  i  HAProxy as its users write it for GWE (bench/haproxy/http.cfg):
     leastconn, the node's GWROUTEID cookie read, keep-alive both sides,
     one thread per core

Rounds interleave the setups (a b c ... i, i ... c b a, ...) at each
concurrency level, so that drift on the machine hits all alike, each round
with freshly started balancers.  Per run:
requests/s, p50/p99 latency, the balancer's CPU time per request (user +
system of all its processes, from /proc), its context switches per
request (voluntary: a thread waited; involuntary: it was preempted; summed
over the threads in /proc/PID/task/*/status), errors, and the routing
check: answers not from node 2 (wrk/route_check.lua).  Per round the
ratios a/b, a/c, a/d, a/e, a/f, a/h, a/i; the report gives their medians
and the middle half of the rounds (quartiles).

After the rounds, one short sample per balancer and concurrency under
strace -c -f (--syscalls SECONDS, 0 for none): system calls per request.
strace slows the balancer down several times, so these samples are apart
from the timed rounds and give counts, not speeds.

Extra httpd setups for tuning experiments: --variant NAME='DIRECTIVE;...'
runs the shipped config with those directives appended to it (so that
they override it), e.g.
    --variant ka100='MaxKeepAliveRequests 100'

The nodes and the nginx and HAProxy setups run in the foreground
(benchlib.nginx(), benchlib.haproxy());
the httpd setups are the test harness's harness.ShippedHttpd, the shipped
file as a user runs it, or an edited copy of it.

Needs (Debian): apache2, apache2-dev, nginx-light, haproxy, wrk, strace.
Run by bench/run.
"""

import argparse
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import benchlib
from benchlib import BENCH_DIR, BenchError, harness

WRK = "/usr/bin/wrk"
STRACE = "/usr/bin/strace"
COOKIE_NODE = "GWE_Node_2"
URL_PATH = "/server/about"

SETUPS = {
    "a": "gwesticky (shipped config)",
    "b": "httpd stickysession=GWROUTEID + byrequests",
    "c": "httpd byrequests, no stickiness",
    "d": "httpd single-node ProxyPass",
    "e": "nginx, Genesys sample logic",
    "f": "nginx, sample logic + upstream keepalive",
    "g": "node directly",
    "h": "gwesticky again (identical to a: the noise)",
    "i": "HAProxy, leastconn + cookie GWROUTEID",
}
RATIOS = ["b", "c", "d", "e", "f", "h", "i"]


# ---------------------------------------------------------------------------
# The setups: each has .port, .pid (None: no balancer CPU to count),
# start() and stop()
# ---------------------------------------------------------------------------

class EditedShippedHttpd(harness.ShippedHttpd):
    """The shipped config with edits, run as harness.ShippedHttpd runs the
    file itself: a copy of the edited text under root."""

    conf_path = property(
        lambda self: self.root / "conf" / "httpd-gwe-balancer.conf")

    def __init__(self, root, module_so, nodes, text):
        super().__init__(root, module_so, nodes)
        self.conf_path.write_text(text)


def edited_shipped_conf(setup, node2):
    """The shipped config with only the routing changed, for b, c and d."""
    text = harness.SHIPPED_CONF.read_text()

    def replace_once(old, new):
        nonlocal text
        if text.count(old) != 1:
            raise BenchError("conf/httpd-gwe-balancer.conf changed: %r is "
                             "not there exactly once" % old)
        text = text.replace(old, new)

    # Without gwesticky on balancer://gwe, the WebSocket handoff from it
    # would be (rightly) refused at startup; plain GETs never use it.
    replace_once('\nGWEBalancerWebSocket "balancer://gwe" "balancer://gwe-ws"',
                 "\n")
    if setup == "b":
        replace_once("ProxySet lbmethod=gwesticky failontimeout=On",
                     "ProxySet lbmethod=byrequests stickysession=GWROUTEID "
                     "failontimeout=On")
    elif setup == "c":
        replace_once("ProxySet lbmethod=gwesticky failontimeout=On",
                     "ProxySet lbmethod=byrequests failontimeout=On")
    elif setup == "d":
        direct = '"http://%s/server"' % node2
        replace_once('ProxyPass        "/server" "balancer://gwe"',
                     'ProxyPass        "/server" ' + direct)
        replace_once('ProxyPassReverse "/server" "balancer://gwe"',
                     'ProxyPassReverse "/server" ' + direct)
    return text


class Direct:
    """Setup g: the node itself, which is neither restarted between rounds
    nor a balancer whose CPU counts."""

    def __init__(self, node):
        self.port = node.port
        self.pid = None

    def start(self):
        return self

    def stop(self):
        pass


# ---------------------------------------------------------------------------
# Load
# ---------------------------------------------------------------------------

def run_wrk(port, connections, seconds, threads=2):
    """One wrk run; returns the numbers route_check.lua prints."""
    cmd = [WRK, "-t%d" % threads, "-c%d" % connections, "-d%ds" % seconds,
           "--timeout", "5s", "-H", "Cookie: GWROUTEID=." + COOKIE_NODE,
           "-s", str(BENCH_DIR / "wrk" / "route_check.lua"),
           "http://127.0.0.1:%d%s" % (port, URL_PATH), "--", COOKIE_NODE]
    out = subprocess.run(cmd, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, timeout=seconds + 60)
    text = out.stdout.decode(errors="replace")
    match = re.search(r"^WRKJSON (.*)$", text, re.M)
    if out.returncode != 0 or not match:
        raise BenchError("wrk failed:\n" + text)
    return json.loads(match.group(1))


def measure(server, connections, seconds, warmup):
    if warmup:
        run_wrk(server.port, connections, warmup)
    user0, sys0 = balancer_cpu(server)
    vol0, invol0 = context_switches(server)
    res = run_wrk(server.port, connections, seconds)
    user1, sys1 = balancer_cpu(server)
    vol1, invol1 = context_switches(server)
    secs = res["duration_us"] / 1e6
    errors = sum(res[k] for k in ("connect_errors", "read_errors",
                                  "write_errors", "status_errors",
                                  "timeouts"))
    per_req = (lambda n: n / res["requests"]) if res["requests"] \
        else (lambda n: None)
    return {
        "rps": res["requests"] / secs,
        "p50_ms": res["p50_us"] / 1000.0,
        "p99_ms": res["p99_us"] / 1000.0,
        "cpu_us_per_req": per_req((user1 - user0 + sys1 - sys0) * 1e6),
        "user_us_per_req": per_req((user1 - user0) * 1e6),
        "sys_us_per_req": per_req((sys1 - sys0) * 1e6),
        "vol_cs_per_req": per_req(vol1 - vol0),
        "invol_cs_per_req": per_req(invol1 - invol0),
        "requests": res["requests"],
        "errors": errors,
        "misrouted": res["misrouted"],
    }


def balancer_cpu(server):
    """(user, system) CPU seconds of the setup's balancer so far."""
    return benchlib.cpu_seconds(server.pid) if server.pid else (0.0, 0.0)


def context_switches(server):
    """(voluntary, involuntary) context switches of the setup's balancer
    so far, summed over the threads of its processes.  Threads that exited
    take theirs with them (/proc keeps no total for them): httpd's stay
    for as long as their process, and none ends during a run."""
    total = [0, 0]
    pids = benchlib.process_tree(server.pid) if server.pid else []
    for status in thread_statuses(pids):
        for i, key in enumerate(("voluntary", "nonvoluntary")):
            total[i] += int(re.search(r"^%s_ctxt_switches:\s*(\d+)" % key,
                                      status, re.M).group(1))
    return tuple(total)


def thread_statuses(pids):
    """/proc/PID/task/TID/status of every thread of pids still there."""
    for pid in pids:
        try:
            threads = os.listdir("/proc/%d/task" % pid)
        except OSError:
            continue
        for tid in threads:
            try:
                with open("/proc/%d/task/%s/status" % (pid, tid)) as f:
                    yield f.read()
            except OSError:
                continue


# ---------------------------------------------------------------------------
# System calls, apart from the timed rounds
# ---------------------------------------------------------------------------

def syscall_sample(server, connections, seconds, out_path):
    """System calls per request of the balancer's processes under load:
    {"total": n, name: n, ...}, from strace -c -f attached to every
    process (and so every thread) for one wrk run."""
    pids = benchlib.process_tree(server.pid)
    cmd = [STRACE, "-c", "-f", "-U", "name,calls", "-o", str(out_path)]
    for pid in pids:
        cmd += ["-p", str(pid)]
    strace = subprocess.Popen(cmd, stdin=subprocess.DEVNULL,
                              stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        harness.wait_until(lambda: all_traced(pids), 60,
                           what="strace to attach to %s" % server)
        res = run_wrk(server.port, connections, seconds)
    finally:
        # SIGINT: strace detaches and writes its summary.
        strace.send_signal(signal.SIGINT)
        strace.wait(120)
    calls = strace_counts(Path(out_path).read_text())
    if not res["requests"]:
        raise BenchError("no requests in the strace sample of %s" % server)
    return {name: n / res["requests"] for name, n in calls.items()}


def all_traced(pids):
    """Whether strace has attached to every thread of pids."""
    return not any(re.search(r"^TracerPid:\s*0$", status, re.M)
                   for status in thread_statuses(pids))


def strace_counts(text):
    """{syscall: calls, ..., "total": calls} from strace -c -U name,calls."""
    counts = {}
    for line in text.splitlines():
        words = line.split()
        if len(words) == 2 and words[1].isdigit():
            counts[words[0]] = int(words[1])
    if "total" not in counts:
        raise BenchError("no strace summary in:\n" + text)
    return counts


# ---------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------

def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def middle_half(values):
    """The range of the middle half of values (first to third quartile),
    or "-" with too few of them."""
    if len(values) < 4:
        return "-"
    q1, _, q3 = statistics.quantiles(values, n=4)
    return "%.3f-%.3f" % (q1, q3)


def fmt(value, spec):
    return "-" if value is None else format(value, spec)


def report(results, names, concurrencies, out=sys.stdout):
    for conc in concurrencies:
        runs = results[str(conc)]
        out.write("\n### %d connections (median of %d rounds)\n\n"
                  % (conc, len(runs["a"])))
        out.write("| setup | req/s | p50 ms | p99 ms | LB CPU µs/req "
                  "(user + sys) | LB context switches/req (voluntary + "
                  "involuntary) | errors | misrouted / answered |\n"
                  "|---|---:|---:|---:|---:|---:|---:|---:|\n")
        for key in names:
            rounds = runs[key]
            cpu = switches = "-"
            if key != "g":
                cpu = "%s (%s + %s)" % tuple(
                    fmt(median(r[k] for r in rounds), ".1f")
                    for k in ("cpu_us_per_req", "user_us_per_req",
                              "sys_us_per_req"))
                vol, invol = (median(r.get(k) for r in rounds)
                              for k in ("vol_cs_per_req", "invol_cs_per_req"))
                if vol is not None and invol is not None:
                    switches = "%.2f (%.2f + %.2f)" % (vol + invol, vol,
                                                       invol)
            out.write("| %s %s | %s | %s | %s | %s | %s | %d | %d / %d |\n"
                      % (
                key, names[key],
                fmt(median(r["rps"] for r in rounds), ".0f"),
                fmt(median(r["p50_ms"] for r in rounds), ".2f"),
                fmt(median(r["p99_ms"] for r in rounds), ".2f"),
                cpu, switches,
                sum(r["errors"] for r in rounds),
                sum(r["misrouted"] for r in rounds),
                sum(r["requests"] for r in rounds)))
        others = [k for k in RATIOS + [v for v in names if v not in SETUPS]
                  if k in names and k != "a"]
        out.write("\n| ratio | " + " | ".join(
            "round %d" % (i + 1) for i in range(len(runs["a"])))
            + " | median | middle half |\n|---|"
            + "---:|" * (len(runs["a"]) + 2) + "\n")
        for key in others:
            ratios = [a["rps"] / o["rps"]
                      for a, o in zip(runs["a"], runs[key])]
            out.write("| a/%s | %s | **%.3f** | %s |\n" % (
                key, " | ".join("%.3f" % x for x in ratios),
                statistics.median(ratios), middle_half(ratios)))


def report_syscalls(samples, names, seconds, out=sys.stdout, shown=6):
    """The strace samples: system calls per request, the most frequent."""
    out.write("\n### System calls per request (strace -c -f, one %d s "
              "sample per balancer, apart from the timed rounds)\n\n"
              "| setup | connections | calls/req | the most frequent "
              "(per request) |\n|---|---:|---:|---|\n" % seconds)
    for conc, by_setup in samples.items():
        for key, calls in by_setup.items():
            top = sorted((n, name) for name, n in calls.items()
                         if name != "total")[::-1][:shown]
            out.write("| %s %s | %s | %.1f | %s |\n" % (
                key, names[key], conc, calls["total"],
                ", ".join("%s %.2f" % (name, n) for n, name in top)))


# ---------------------------------------------------------------------------

def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--module", default=str(harness.MODULE_SO))
    p.add_argument("--rounds", type=int, default=9)
    p.add_argument("--seconds", type=int, default=5,
                   help="measured seconds per run (default 5)")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--connections", default="32,256",
                   help="concurrency levels, comma-separated")
    p.add_argument("--setups", default="abcdefghi")
    p.add_argument("--variant", action="append", default=[],
                   metavar="NAME='DIRECTIVE;...'")
    p.add_argument("--syscalls", type=int, default=3, metavar="SECONDS",
                   help="after the rounds, a sample this long per balancer "
                   "and concurrency under strace -c (0: none; default 3)")
    p.add_argument("--json", help="write all runs to this file")
    p.add_argument("--keep", action="store_true",
                   help="keep the work directory (logs, configs)")
    return p.parse_args()


def build_setups(args, work, nodes):
    node2 = "127.0.0.1:%d" % nodes[1].port
    nginx_values = {"NODE1": "127.0.0.1:%d" % nodes[0].port, "NODE2": node2}
    servers, names = {}, {}
    for key in args.setups:
        if key in "ah":
            servers[key] = harness.ShippedHttpd(work / key, args.module,
                                                nodes)
        elif key in "bcd":
            servers[key] = EditedShippedHttpd(
                work / key, args.module, nodes,
                edited_shipped_conf(key, node2))
        elif key in "ef":
            servers[key] = benchlib.nginx(
                key, "seed.conf" if key == "e" else "tuned.conf", work / key,
                **nginx_values)
        elif key == "g":
            servers[key] = Direct(nodes[1])
        elif key == "i":
            servers[key] = benchlib.haproxy(
                key, "http.cfg", work / key, NAME1=nodes[0].name,
                NAME2=nodes[1].name, **nginx_values)
        else:
            raise BenchError("unknown setup %r" % key)
        names[key] = SETUPS[key]
    for spec in args.variant:
        name, _, directives = spec.partition("=")
        text = "%s\n# --variant %s\n%s\n" % (
            harness.SHIPPED_CONF.read_text(), name,
            "\n".join(d.strip() for d in directives.split(";")))
        servers[name] = EditedShippedHttpd(work / ("v-" + name), args.module,
                                           nodes, text)
        names[name] = "a + " + directives
    return servers, names


def load_average():
    return "%.2f %.2f %.2f" % os.getloadavg()


def syscall_samples(servers, concurrencies, args, work):
    """{connections: {setup: syscall_sample()}} for every balancer."""
    samples = {}
    for conc in concurrencies:
        samples[str(conc)] = {}
        for key, server in servers.items():
            if server.pid:
                if args.warmup:
                    run_wrk(server.port, conc, args.warmup)
                samples[str(conc)][key] = syscall_sample(
                    server, conc, args.syscalls,
                    work / ("strace-%s-%d.txt" % (key, conc)))
                print("strace c=%d %s: %.1f calls/req" % (
                    conc, key, samples[str(conc)][key]["total"]), flush=True)
    return samples


def main():
    args = parse_args()
    benchlib.require(harness.APACHE2, benchlib.NGINX, benchlib.HAPROXY,
                     WRK, *([STRACE] if args.syscalls else []))
    # HAProxy checks at startup that it may open two sockets per
    # connection of its maxconn.
    benchlib.raise_nofile_limit()
    concurrencies = [int(c) for c in args.connections.split(",")]
    if "a" not in args.setups:
        raise SystemExit("setup a is what the others are compared with")
    work = Path(tempfile.mkdtemp(prefix="gwb-bench-"))
    os.chmod(work, 0o755)       # httpd's children run as www-data
    started = []
    try:
        nodes = []
        for name in ("GWE_Node_1", "GWE_Node_2"):
            node = benchlib.nginx(name, "backend.conf", work / name,
                                  NAME=name)
            nodes.append(node.start())
            started.append(node)
        servers, names = build_setups(args, work, nodes)
        started.extend(servers.values())
        results = {str(c): {k: [] for k in servers} for c in concurrencies}
        # The box's other load, which the rounds share the cores with.
        load = {"start": load_average()}
        for rnd in range(args.rounds):
            # Fresh balancers every round: an instance can be a few per
            # cent faster or slower than an identical one for as long as it
            # runs (how its children happened to share the connections),
            # which a restart redraws.
            for server in servers.values():
                server.stop()
                server.start()
            # Every other round runs the setups in reverse order, so that
            # running first (or after a heavier setup) favours none.
            order = list(servers.items())
            if rnd % 2:
                order.reverse()
            for conc in concurrencies:
                for key, server in order:
                    res = measure(server, conc, args.seconds, args.warmup)
                    results[str(conc)][key].append(res)
                    print("round %d c=%d %s: %.0f req/s, p99 %.2f ms, "
                          "%s µs CPU/req, %d errors, %d misrouted"
                          % (rnd + 1, conc, key, res["rps"], res["p99_ms"],
                             fmt(res["cpu_us_per_req"], ".1f"),
                             res["errors"], res["misrouted"]), flush=True)
        load["end"] = load_average()
        report(results, names, concurrencies)
        print("\nload average (1, 5, 15 min): %s at the start, %s at the end"
              % (load["start"], load["end"]))
        samples = {}
        if args.syscalls:
            samples = syscall_samples(servers, concurrencies, args, work)
            report_syscalls(samples, names, args.syscalls)
        if args.json:
            Path(args.json).write_text(json.dumps(
                {"setups": names, "results": results,
                 "seconds": args.seconds, "rounds": args.rounds,
                 "load_average": load,
                 "syscalls_per_request": samples}, indent=1))
    finally:
        for server in reversed(started):
            try:
                server.stop()
            except Exception as e:      # stop the others all the same
                print("stopping %r: %s" % (server, e), file=sys.stderr)
        if args.keep:
            print("work directory kept: %s" % work)
        else:
            subprocess.run(["rm", "-rf", str(work)])


if __name__ == "__main__":
    benchlib.run_main(main)
