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

Rounds interleave the setups (a b c ... h, h ... c b a, ...) at each
concurrency level, so that drift on the machine hits all alike, each round
with freshly started balancers.  Per run:
requests/s, p50/p99 latency, the balancer's CPU time per request (user +
system of all its processes, from /proc), errors, and the routing check:
answers not from node 2 (wrk/route_check.lua).  Per round the ratios a/b,
a/c, a/d, a/e, a/f, a/h; the report gives their medians and the middle
half of the rounds (quartiles).

Extra httpd setups for tuning experiments: --variant NAME='DIRECTIVE;...'
runs the shipped config with those directives appended (apache2 -c, read
after the file, so they override it), e.g.
    --variant ka100='MaxKeepAliveRequests 100'

Needs (Debian): apache2, apache2-dev, nginx-light, wrk, python3-pytest (the
shipped config is run as test/test_shipped.py runs it).  Run by bench/run.
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
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent
sys.path.insert(0, str(REPO_DIR / "test"))
import harness  # noqa: E402  (free_port, wait_until, http_get, ...)
from test_shipped import SHIPPED_CONF, shipped_defines  # noqa: E402
NGINX = "/usr/sbin/nginx"
WRK = "/usr/bin/wrk"
CLK_TCK = os.sysconf("SC_CLK_TCK")
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
}
RATIOS = ["b", "c", "d", "e", "f", "h"]


class BenchError(Exception):
    pass


# ---------------------------------------------------------------------------
# Processes we start: each a daemon with a pid file, stopped by its pid.
# ---------------------------------------------------------------------------

def _stat_fields(pid):
    with open("/proc/%d/stat" % pid) as f:
        return f.read().rsplit(")", 1)[1].split()


def _children(pid):
    kids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if int(_stat_fields(int(entry))[1]) == pid:
                    kids.append(int(entry))
            except (OSError, IndexError):
                pass
    return kids


class Daemon:
    """A server that daemonizes and writes a pid file."""

    name = "daemon"

    def __init__(self, root):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.port = harness.free_port()
        self.pid = None

    pid_path = property(lambda self: self.root / "server.pid")

    def start_command(self):
        raise NotImplementedError

    def start(self):
        harness.become_subreaper()
        # Output through a file: the daemon keeps a pipe open.
        with open(self.root / "start.out", "w+b") as out:
            rc = subprocess.call(self.start_command(),
                                 stdin=subprocess.DEVNULL, stdout=out,
                                 stderr=subprocess.STDOUT, timeout=60)
            out.seek(0)
            if rc != 0:
                raise BenchError("%s did not start:\n%s" % (
                    self.name, out.read().decode(errors="replace")))
        self.pid = harness.wait_until(self._read_pid, 20,
                                      what="%s's pid file" % self.name)
        harness.wait_until(self.ready, 20, what="%s to answer" % self.name)
        return self

    def _read_pid(self):
        try:
            return int(self.pid_path.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def ready(self):
        if not harness.pid_alive(self.pid):
            raise BenchError("%s (pid %d) died; see %s"
                             % (self.name, self.pid, self.root))
        try:
            harness.http_get(self.port, URL_PATH, timeout=2,
                             cookie="GWROUTEID=." + COOKIE_NODE)
            return True
        except OSError:
            return False

    def stop(self):
        if not self.pid or not harness.pid_alive(self.pid):
            return
        os.kill(self.pid, signal.SIGTERM)
        try:
            harness.wait_until(lambda: not harness.pid_alive(self.pid), 30,
                               what="%s to exit" % self.name)
        except harness.HarnessError:
            for pid in _children(self.pid) + [self.pid]:
                os.kill(pid, signal.SIGKILL)
        harness.reap_apache_zombies()
        self.pid = None

    def cpu_seconds(self):
        """(user, system) CPU time of the server's processes so far: the
        live ones, and the exited children the parent has reaped."""
        fields = _stat_fields(self.pid)
        # utime stime cutime cstime
        user = int(fields[11]) + int(fields[13])
        system = int(fields[12]) + int(fields[14])
        for kid in _children(self.pid):
            try:
                kid_fields = _stat_fields(kid)
                user += int(kid_fields[11])
                system += int(kid_fields[12])
            except (OSError, IndexError):
                pass
        return user / CLK_TCK, system / CLK_TCK


class Nginx(Daemon):
    name = "nginx"

    def __init__(self, root, template, values):
        super().__init__(root)
        (self.root / "logs").mkdir(exist_ok=True)
        values = dict(values, PORT=str(self.port), PREFIX=str(self.root))
        text = (BENCH_DIR / "nginx" / template).read_text()
        for key, value in values.items():
            text = text.replace("@%s@" % key, value)
        if "@" in re.sub(r"#.*", "", text).replace("@fallback", ""):
            raise BenchError("unfilled @...@ in %s" % template)
        self.conf = self.root / "nginx.conf"
        self.conf.write_text(text.replace("pid %s/nginx.pid" % self.root,
                                          "pid %s" % self.pid_path))

    def start_command(self):
        # -e: nginx's own log before the config's error_log applies (the
        # compiled-in default is the system's /var/log/nginx).
        return [NGINX, "-p", str(self.root), "-c", str(self.conf), "-q",
                "-e", str(self.root / "logs" / "error.log")]


class Backend(Nginx):
    """A fake node; .name is the node's name (GWE_Node_1), as for
    test/harness.py's Node."""

    def __init__(self, root, node_name):
        super().__init__(root, "backend.conf", {"NAME": node_name})
        self.name = node_name


class ShippedApache(Daemon):
    """httpd running conf/httpd-gwe-balancer.conf (or an edited copy of it) with
    this machine's paths and the two nodes given as -C Defines, as in
    test/test_shipped.py, plus -c directives read after the file."""

    name = "httpd"

    def __init__(self, root, module_so, nodes, conf_text=None, after=()):
        super().__init__(root)
        self.defines = shipped_defines(self.root, self.port, module_so,
                                       nodes)
        self.conf = SHIPPED_CONF
        if conf_text is not None:
            self.conf = self.root / "httpd-gwe-balancer.conf"
            self.conf.write_text(conf_text)
        self.after = list(after)

    pid_path = property(lambda self: self.root / "run" / "gwe-balancer.pid")

    def start_command(self):
        cmd = [harness.APACHE2, "-d", str(self.root), "-f", str(self.conf)]
        for name, value in self.defines.items():
            cmd += ["-C", "Define %s %s" % (name, value)]
        for directive in self.after:
            cmd += ["-c", directive]
        return cmd + ["-k", "start"]

    def error_log(self):
        path = self.root / "logs" / "gwe-balancer-error.log"
        return path.read_text(errors="replace") if path.exists() else ""


def edited_shipped_conf(setup, node2):
    """The shipped config with only the routing changed, for b, c and d."""
    text = SHIPPED_CONF.read_text()

    def replace_once(old, new):
        nonlocal text
        if text.count(old) != 1:
            raise BenchError("conf/httpd-gwe-balancer.conf changed: %r is not "
                             "there exactly once" % old)
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
    """Setup g: the node itself, whose CPU is not a balancer's."""

    def __init__(self, node):
        self.node = node
        self.port = node.port
        self.name = "node directly"

    def start(self):
        return self

    def stop(self):
        pass

    def cpu_seconds(self):
        return 0.0, 0.0


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
    user0, sys0 = server.cpu_seconds()
    res = run_wrk(server.port, connections, seconds)
    user1, sys1 = server.cpu_seconds()
    secs = res["duration_us"] / 1e6
    errors = sum(res[k] for k in ("connect_errors", "read_errors",
                                  "write_errors", "status_errors",
                                  "timeouts"))
    per_req = (lambda t: t * 1e6 / res["requests"]) if res["requests"] \
        else (lambda t: None)
    return {
        "rps": res["requests"] / secs,
        "p50_ms": res["p50_us"] / 1000.0,
        "p99_ms": res["p99_us"] / 1000.0,
        "cpu_us_per_req": per_req(user1 - user0 + sys1 - sys0),
        "user_us_per_req": per_req(user1 - user0),
        "sys_us_per_req": per_req(sys1 - sys0),
        "requests": res["requests"],
        "errors": errors,
        "misrouted": res["misrouted"],
    }


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
                  "(user + sys) | errors | misrouted / answered |\n"
                  "|---|---:|---:|---:|---:|---:|---:|\n")
        for key in names:
            rounds = runs[key]
            cpu = "-"
            if key != "g":
                cpu = "%s (%s + %s)" % tuple(
                    fmt(median(r[k] for r in rounds), ".1f")
                    for k in ("cpu_us_per_req", "user_us_per_req",
                              "sys_us_per_req"))
            out.write("| %s %s | %s | %s | %s | %s | %d | %d / %d |\n" % (
                key, names[key],
                fmt(median(r["rps"] for r in rounds), ".0f"),
                fmt(median(r["p50_ms"] for r in rounds), ".2f"),
                fmt(median(r["p99_ms"] for r in rounds), ".2f"),
                cpu,
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
    p.add_argument("--setups", default="abcdefgh")
    p.add_argument("--variant", action="append", default=[],
                   metavar="NAME='DIRECTIVE;...'")
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
            servers[key] = ShippedApache(work / key, args.module, nodes)
        elif key in "bcd":
            servers[key] = ShippedApache(work / key, args.module, nodes,
                                         edited_shipped_conf(key, node2))
        elif key == "e":
            servers[key] = Nginx(work / "e", "seed.conf", nginx_values)
        elif key == "f":
            servers[key] = Nginx(work / "f", "tuned.conf", nginx_values)
        elif key == "g":
            servers[key] = Direct(nodes[1])
        else:
            raise BenchError("unknown setup %r" % key)
        names[key] = SETUPS[key]
    for spec in args.variant:
        name, _, directives = spec.partition("=")
        servers[name] = ShippedApache(
            work / ("v-" + name), args.module, nodes,
            after=[d.strip() for d in directives.split(";") if d.strip()])
        names[name] = "a + " + directives
    return servers, names


def main():
    args = parse_args()
    concurrencies = [int(c) for c in args.connections.split(",")]
    if "a" not in args.setups:
        raise SystemExit("setup a is what the others are compared with")
    work = Path(tempfile.mkdtemp(prefix="gwb-bench-"))
    os.chmod(work, 0o755)       # httpd's children run as www-data
    started = []
    try:
        nodes = []
        for name in ("GWE_Node_1", "GWE_Node_2"):
            node = Backend(work / name, name)
            nodes.append(node.start())
            started.append(node)
        servers, names = build_setups(args, work, nodes)
        started.extend(servers.values())
        results = {str(c): {k: [] for k in servers} for c in concurrencies}
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
        report(results, names, concurrencies)
        if args.json:
            Path(args.json).write_text(json.dumps(
                {"setups": names, "results": results,
                 "seconds": args.seconds, "rounds": args.rounds},
                indent=1))
    finally:
        for server in reversed(started):
            try:
                server.stop()
            except Exception as e:      # stop the others all the same
                print("stopping %s: %s" % (server.name, e), file=sys.stderr)
        if args.keep:
            print("work directory kept: %s" % work)
        else:
            subprocess.run(["rm", "-rf", str(work)])


if __name__ == "__main__":
    main()
