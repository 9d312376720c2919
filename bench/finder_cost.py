#!/usr/bin/python3
"""What one routing decision costs, in instructions, under callgrind.

For 2, 16, 64 and 256 balancer members, httpd (Debian's /usr/sbin/apache2,
one process: -X) runs under valgrind --tool=callgrind with

  gwesticky  ProxySet lbmethod=gwesticky (this module), and
  built-in   ProxySet stickysession=GWROUTEID lbmethod=byrequests
             (httpd alone: mod_gwe_balancer not loaded),

and is sent, over one keep-alive connection, M requests of each kind:

  cookie_last   Cookie: GWROUTEID=.GWE_Node_N  (the last member: the worst
                case of httpd's linear find_route_worker())
  cookie_first  Cookie: GWROUTEID=.GWE_Node_1
  no_cookie     no Cookie header: the lbmethod's own choice.

Callgrind counts are deterministic, so the numbers do not depend on the
machine's load.  What is measured per decision:

  pre_request   inclusive Ir of mod_proxy's proxy_run_pre_request(), which
                runs the proxy pre_request hooks: mod_proxy_balancer's,
                which makes the whole routing decision (balancer lookup,
                lock, sticky lookup or the lbmethod's finder, URL rewrite,
                BALANCER_* env), and, with mod_gwe_balancer loaded, its
                WebSocket handoff hook (reported on its own: "handoff").
                Debian strips mod_proxy_balancer's static functions, so
                this exported hook runner is the narrowest common scope.
  finder        inclusive Ir of gwb_find_worker() (our module is built with
                -g and not stripped).
  allocations   calls to pool allocators (apr_palloc, apr_pcalloc,
                apr_pvsprintf) and to the heap (malloc...) in the call tree
                below proxy_run_pre_request and below gwb_find_worker, with
                the call site in our source (file:line from the debug
                info) that led to each.

How the requests are cut out of the run without callgrind_control (whose
vgdb needs ptrace, and could not take control of the multi-threaded event
MPM here): callgrind dumps its counters at every call of
ap_send_error_response (--dump-before), which only a request for the local
path /_cg/mark (a 404) makes.  Warm-up (route index, connections), then a
mark, then each batch followed by a mark: each batch lands in a dump of its
own.  An empty batch between two marks measures what the marks themselves
leave in a dump; --profile subtracts it.  proxy_run_pre_request is never
called by a mark, so the per-decision numbers need no correction.

Counts repeat to within a few Ir between runs: the ports and the run
directory (in URLs and paths that get copied and compared) change lengths.

--profile (alone): where one proxied request's instructions go with
gwesticky, 2 members and the cookie: the main stages (inclusive), the
shared objects (self cost), and the top 15 functions (self cost); then the
same stages for httpd's built-in sticky code with this module loaded but
unused (http_bench.py's setup b), side by side: the whole request's cost,
which wall-clock rounds on a small machine cannot resolve to a per cent.

Run as root (httpd then runs as www-data) or as any user.  Needs (Debian):
apache2-bin, valgrind, python3; the module built (.libs/, see
Makefile.apxs; this script does not build it, it copies the .so it
measures).  The backend is a small Python http.server (not measured).

    /usr/bin/python3 bench/finder_cost.py [--quick] [--json FILE]
    /usr/bin/python3 bench/finder_cost.py --profile [--json FILE]

--keep leaves the run directory (configs, logs, the callgrind dumps, which
callgrind_annotate reads) in place and prints where it is.
"""

import argparse
import hashlib
import http.client
import json
import os
import pwd
import re
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
sys.path.insert(0, str(BENCH_DIR))
import harness  # noqa: E402  (free_port, wait_until, port_accepts, ...)
from finder_callgrind import Dump, HEAP_ALLOCATORS, label  # noqa: E402

VALGRIND = "/usr/bin/valgrind"
RUN_AS = "www-data"           # who httpd runs as when we are root
DEFAULT_MODULE = REPO_DIR / ".libs" / "mod_gwe_balancer.so"
MODULE_SOURCE = REPO_DIR / "mod_gwe_balancer.c"

MEMBER_COUNTS = (2, 16, 64, 256)
COOKIE = "GWROUTEID"
URL_PATH = "/server/about"
MARK_PATH = "/_cg/mark"
# Called once per mark request (its 404), never by a proxied request.
DUMP_TRIGGER = "ap_send_error_response"
# Deep enough that every allocator context below proxy_run_pre_request
# still names it among its callers (see Dump.allocations_under).
SEPARATE_CALLERS = 16

METHODS = {
    "gwesticky": {"proxyset": "ProxySet lbmethod=gwesticky",
                  "load_module": True},
    "built-in": {"proxyset": "ProxySet stickysession=%s lbmethod=byrequests"
                             % COOKIE,
                 "load_module": False},
}
# --profile may also run httpd's own sticky code with this module loaded
# but unused, as bench/http_bench.py's setup b does.
PROFILE_METHODS = dict(METHODS, **{
    "built-in+module": dict(METHODS["built-in"], load_module=True)})
KINDS = ("cookie_last", "cookie_first", "no_cookie")

# The stages of a proxied request for --profile: exported functions (their
# inclusive cost), outermost first.  Those absent from a dump are skipped.
PROFILE_STAGES = (
    ("ap_run_process_connection", "connection handler (all of a request's "
                                  "work on the connection)"),
    ("ap_read_request", "read and parse the request"),
    ("ap_process_request_internal", "request hooks before the handler "
                                    "(translate, map_to_storage, access, "
                                    "fixups)"),
    ("ap_invoke_handler", "handler (mod_proxy)"),
    ("proxy_run_pre_request", "routing decision (pre_request hooks)"),
    ("gwb_find_worker", "gwesticky finder"),
    ("ap_proxy_determine_connection", "backend address"),
    ("ap_proxy_acquire_connection", "backend connection from the pool"),
    ("ap_proxy_connect_backend", "backend connect / reuse check"),
    ("proxy_run_scheme_handler", "mod_proxy_http (request to the backend, "
                                 "response to the client)"),
    ("ap_proxy_release_connection", "backend connection back to the pool"),
    ("proxy_run_post_request", "post_request hooks"),
    ("ap_finalize_request_protocol", "end of response"),
    ("ap_run_log_transaction", "log_transaction hooks"),
    ("apr_pool_destroy", "pool destruction"),
)


class BenchError(Exception):
    pass


# ---------------------------------------------------------------------------
# The backend: answers every GET with 200 and its path, so that the client
# can tell which member (/mK/...) a request went to.
# ---------------------------------------------------------------------------

BACKEND_CODE = r"""
import http.server, sys

class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"      # keep-alive for httpd's pool

    def do_GET(self):
        body = self.path.encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass

server = http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])),
                                         Handler)
server.daemon_threads = True
server.serve_forever()
"""


class Backend:
    def __init__(self):
        self.port = harness.free_port()
        self.proc = None

    def start(self):
        self.proc = subprocess.Popen(
            [harness.PYTHON, "-c", BACKEND_CODE, str(self.port)],
            stdin=subprocess.DEVNULL)
        harness.wait_until(self._ready, 20, what="the backend to listen")
        return self

    def _ready(self):
        if self.proc.poll() is not None:
            raise BenchError("backend exited with %s" % self.proc.returncode)
        return harness.port_accepts(self.port)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


# ---------------------------------------------------------------------------
# httpd under callgrind
# ---------------------------------------------------------------------------

def member_path(k):
    """Member k's path on the backend.  One width for all: httpd takes a
    member whose URL starts with another's (/m1, /m16) for that one
    ("worker sharing", AH01150), and drops its route=."""
    return "/m%03d" % k


def httpd_config(root, port, backend_port, members, method, module_path,
                 mpm):
    """A private config: everything under root, one balancer of members
    (distinct URLs /mK on the one backend), the mark path served locally."""
    modules = ["mpm_" + mpm, "authz_core", "proxy", "proxy_http",
               "proxy_balancer", "slotmem_shm", "lbmethod_byrequests"]
    lines = [
        "# Written by bench/finder_cost.py: a private httpd under callgrind.",
        'ServerRoot "%s"' % root,
        "ServerName 127.0.0.1",
        "Listen 127.0.0.1:%d" % port,
        'PidFile "%s/run/httpd.pid"' % root,
        'DefaultRuntimeDir "%s/run"' % root,
        "Mutex file:%s/run default" % root,
        'ErrorLog "%s/logs/error_log"' % root,
        "LogLevel warn",
        'DocumentRoot "%s/docroot"' % root,
        # Generous: the first request under callgrind is slow.
        "Timeout 120",
        # One connection carries all the requests of a run.
        "KeepAlive On",
        "MaxKeepAliveRequests 0",
        "KeepAliveTimeout 300",
    ]
    for name in modules:
        lines.append('LoadModule %s_module "%s"'
                     % (name, harness.MODULES_DIR / ("mod_%s.so" % name)))
    if PROFILE_METHODS[method]["load_module"]:
        lines.append('LoadModule gwe_balancer_module "%s"' % module_path)
    lines += [
        '<Directory "/">',
        "    AllowOverride None",
        "</Directory>",
        '<Proxy "balancer://gwe">',
    ]
    for k in range(1, members + 1):
        lines.append('    BalancerMember "http://127.0.0.1:%d%s" '
                     "route=GWE_Node_%d" % (backend_port, member_path(k), k))
    lines += [
        "    " + PROFILE_METHODS[method]["proxyset"],
        "</Proxy>",
        # The mark path first: the first matching ProxyPass wins.
        'ProxyPass "%s" "!"' % MARK_PATH,
        'ProxyPass "/" "balancer://gwe/"',
    ]
    return "\n".join(lines) + "\n"


class CallgrindHttpd:
    """apache2 -X under callgrind in its own directory, dumping its
    counters at every mark request."""

    def __init__(self, root, config):
        self.root = Path(root)
        self.config = config
        self.port = None
        self.proc = None
        self.conn = None
        self.segments = set()

    out_file = property(lambda self: self.root / "cg" / "callgrind.out")

    def start(self, port, timeout=180):
        self.port = port
        for sub in ("conf", "logs", "run", "docroot", "cg"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        conf = self.root / "conf" / "httpd.conf"
        conf.write_text(self.config)
        # As root, httpd -X would create its slotmem segments in /dev/shm
        # as root, then become www-data, which may not remove them at exit
        # (/dev/shm is sticky): a leak per run.  So it is www-data from the
        # start, and owns its directory.
        as_user = {}
        if os.geteuid() == 0:
            _chown_tree(self.root, RUN_AS)
            as_user = {"user": RUN_AS, "group": RUN_AS, "extra_groups": []}
        cmd = [VALGRIND, "--tool=callgrind",
               "--callgrind-out-file=%s" % self.out_file,
               "--log-file=%s" % (self.root / "logs" / "valgrind.log"),
               "--dump-before=%s" % DUMP_TRIGGER,
               "--separate-callers=%d" % SEPARATE_CALLERS,
               "--vgdb=no",
               harness.APACHE2, "-X", "-d", str(self.root), "-f", str(conf)]
        env = {k: v for k, v in os.environ.items()
               if not k.startswith("APACHE_")}
        env["LANG"] = "C"
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, env=env,
                                     **as_user)
        harness.wait_until(self._ready, timeout, interval=0.1,
                           what="httpd under callgrind to listen")
        self.segments = self._shm_segments()
        self.conn = http.client.HTTPConnection("127.0.0.1", port,
                                               timeout=timeout)
        return self

    def _shm_segments(self):
        """The POSIX shared memory segments that httpd has mapped: its
        slotmems (/dev/shm/ShM.<hash of a path in our run dir>)."""
        try:
            with open("/proc/%d/maps" % self.proc.pid) as f:
                maps = f.read()
        except OSError:
            return set()
        return {line.split(None, 5)[5].replace(" (deleted)", "")
                for line in maps.splitlines()
                if " /dev/shm/ShM." in line}

    def _remove_segments(self):
        """httpd -X does not always remove its slotmem segments when it
        stops: remove those it left."""
        for path in self.segments:
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass

    def _ready(self):
        if self.proc.poll() is not None:
            raise BenchError("httpd under callgrind exited (%s); see %s/logs"
                             % (self.proc.returncode, self.root))
        return harness.port_accepts(self.port)

    def get(self, path, cookie=None):
        """(status, body) of a GET on the keep-alive connection."""
        headers = {"Cookie": cookie} if cookie else {}
        self.conn.request("GET", path, headers=headers)
        resp = self.conn.getresponse()
        return resp.status, resp.read().decode("utf-8", "replace")

    def dumps(self):
        """The numbered dumps so far (callgrind.out.1, .2 ...), in order."""
        found = [p for p in self.out_file.parent.iterdir()
                 if p.name.startswith(self.out_file.name + ".")]
        return sorted(found, key=lambda p: int(p.name.rsplit(".", 1)[1]))

    def mark(self):
        """Cut here: the dump of everything since the previous mark.  The
        dump is written before the 404 is sent, so it is complete when the
        answer arrives."""
        before = len(self.dumps())
        status, _ = self.get(MARK_PATH)
        if status != 404:
            raise BenchError("mark request answered %d, not 404" % status)
        dumps = self.dumps()
        if len(dumps) != before + 1:
            raise BenchError("mark request made %d dumps, not 1"
                             % (len(dumps) - before))
        return dumps[-1]

    def log_problems(self):
        """Error log lines above notice: a run with any is not trusted."""
        path = self.root / "logs" / "error_log"
        if not path.exists():
            return []
        return [line for line in path.read_text(errors="replace").splitlines()
                if not re.search(r"\] \[[a-z_0-9]*:(notice|info|debug)\]",
                                 line)]

    def stop(self):
        if self.conn:
            self.conn.close()
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=120)
            except subprocess.TimeoutExpired:
                print("warning: httpd (pid %d) did not stop; killed it"
                      % self.proc.pid, file=sys.stderr)
                self.proc.kill()
                self.proc.wait(timeout=30)
        self._remove_segments()


def _chown_tree(root, user):
    entry = pwd.getpwnam(user)
    for dirpath, dirnames, filenames in os.walk(root):
        os.chown(dirpath, entry.pw_uid, entry.pw_gid)
        for name in filenames:
            os.chown(os.path.join(dirpath, name), entry.pw_uid, entry.pw_gid)


# ---------------------------------------------------------------------------
# One run: one httpd (method, members), its batches, their dumps.
# ---------------------------------------------------------------------------

def kind_request(kind, members):
    """(cookie header or None, the member index expected or None)."""
    if kind == "cookie_last":
        return "%s=.GWE_Node_%d" % (COOKIE, members), members
    if kind == "cookie_first":
        return "%s=.GWE_Node_1" % COOKIE, 1
    return None, None


def send_batch(httpd, kind, members, count):
    cookie, expected = kind_request(kind, members)
    for _ in range(count):
        status, body = httpd.get(URL_PATH, cookie)
        if status != 200:
            raise BenchError("%s request answered %d" % (kind, status))
        if expected and not body.startswith(member_path(expected) + "/"):
            raise BenchError("%s request reached %r, not member %d"
                             % (kind, body, expected))


def run_case(work_dir, backend, method, members, kinds, requests, warmup,
             module_path, mpm):
    """Start httpd, warm it up, send each batch between marks; return
    {"baseline": Dump, kind: Dump, ...} (baseline: an empty batch)."""
    root = Path(tempfile.mkdtemp(prefix="%s-%d-" % (method, members),
                                 dir=work_dir))
    port = harness.free_port()
    httpd = CallgrindHttpd(root, httpd_config(root, port, backend.port,
                                              members, method, module_path,
                                              mpm))
    try:
        httpd.start(port)
        # The first requests build the route index, open backend
        # connections and fill caches: none of that is a decision's cost.
        for kind in kinds:
            send_batch(httpd, kind, members, warmup)
        httpd.mark()
        paths = {"baseline": httpd.mark()}
        for kind in kinds:
            send_batch(httpd, kind, members, requests)
            paths[kind] = httpd.mark()
    finally:
        httpd.stop()
    problems = httpd.log_problems()
    if problems:
        raise BenchError("%s, %d members: httpd logged:\n%s"
                         % (method, members, "\n".join(problems[:10])))
    return {name: Dump(str(path)) for name, path in paths.items()}


# ---------------------------------------------------------------------------
# Numbers from the dumps
# ---------------------------------------------------------------------------

def per_call(dump, function):
    calls, cost = dump.inclusive(function)
    return {"calls": calls, "ir": cost, "ir_per_call": cost / calls
            if calls else None}


def allocation_summary(dump, root, module_object, decisions):
    """Allocations per decision in the tree below root, and their sites."""
    found = dump.allocations_under(root, module_object)
    outer = sum(n for key, n in found.items() if not key[4])
    heap = sum(n for key, n in found.items() if key[3] in HEAP_ALLOCATORS)
    sites = [{"site": site, "api": api, "via": via, "allocator": alloc,
              "nested": nested, "per_decision": n / decisions}
             for (site, api, via, alloc, nested), n in sorted(found.items(),
                                                               key=str)]
    return {"per_decision": outer / decisions,
            "heap_per_decision": heap / decisions,
            "sites": sites,
            "truncated_contexts": len(dump.truncated)}


def breakdown(dump, function, decisions, title=None):
    """Where function's inclusive cost goes, per decision: its self cost,
    and [(callee, calls, Ir)] costliest first."""
    rows = [(label(key, with_object=True), calls / decisions,
             cost / decisions)
            for key, (calls, cost) in dump.callees(function).items()]
    return {"function": title or function,
            "self": dump.self_cost_of(function) / decisions,
            "callees": sorted(rows, key=lambda row: -row[2])}


def hook_of_balancer(dump):
    """The name of mod_proxy_balancer's pre_request hook (stripped: an
    address) among proxy_run_pre_request's callees."""
    for (obj, name) in dump.callees("proxy_run_pre_request"):
        if os.path.basename(obj).startswith("mod_proxy_balancer"):
            return obj, name
    return None


def measure(dump, method, module_object, requests):
    pre = per_call(dump, "proxy_run_pre_request")
    if pre["calls"] != requests:
        raise BenchError("%s: %d calls of proxy_run_pre_request, not %d"
                         % (dump.path, pre["calls"], requests))
    result = {"pre_request": pre,
              "pre_request_alloc": allocation_summary(
                  dump, "proxy_run_pre_request", module_object, requests)}
    # What the decision's cost is made of, outermost first.
    result["breakdown"] = [breakdown(dump, "proxy_run_pre_request",
                                     requests)]
    balancer_hook = hook_of_balancer(dump)
    if balancer_hook:
        result["breakdown"].append(breakdown(
            dump, balancer_hook[1], requests,
            label(balancer_hook) + " (mod_proxy_balancer's pre_request)"))
    if METHODS[method]["load_module"]:
        result["finder"] = per_call(dump, "gwb_find_worker")
        result["handoff"] = per_call(dump, "gwb_hand_off_websocket")
        result["finder_alloc"] = allocation_summary(
            dump, "gwb_find_worker", module_object, requests)
        result["index_builds"] = dump.inclusive("gwb_index_build")[0]
        result["breakdown"].append(breakdown(dump, "gwb_find_worker",
                                             requests))
    return result


# ---------------------------------------------------------------------------
# Reports
# ---------------------------------------------------------------------------

def fmt(value, digits=0):
    if value is None:
        return "-"
    return "{:,.{}f}".format(value, digits)


def report_finder(results, members_list, requests):
    out = []
    title = {"cookie_last": "cookie (last member)",
             "cookie_first": "cookie (first member)",
             "no_cookie": "no cookie"}

    def cell(method, n, kind, *keys):
        value = results.get(method, {}).get(n, {}).get(kind)
        for key in keys:
            value = value.get(key) if value else None
        return value

    out.append("## Instructions per routing decision "
               "(proxy_run_pre_request, inclusive Ir per call; %d calls each)"
               % requests)
    out.append("")
    head = ["members"] + ["%s, %s" % (m, title[k])
                          for m in METHODS for k in KINDS]
    out.append("| " + " | ".join(head) + " |")
    out.append("|" + "---:|" * len(head))
    for n in members_list:
        row = [str(n)] + [fmt(cell(m, n, k, "pre_request", "ir_per_call"))
                          for m in METHODS for k in KINDS]
        out.append("| " + " | ".join(row) + " |")
    out.append("")
    out.append("gwesticky's column includes mod_gwe_balancer's own "
               "pre_request hook (WebSocket handoff, which declines): see "
               "\"handoff\" below.  The built-in runs without "
               "mod_gwe_balancer loaded.")
    out.append("")

    out.append("## gwesticky: the finder alone (gwb_find_worker, inclusive "
               "Ir per call) and the handoff hook")
    out.append("")
    head = ["members"] + ["finder, %s" % title[k] for k in KINDS] + [
        "handoff hook", "pre_request minus finder, %s" % title[KINDS[0]]]
    out.append("| " + " | ".join(head) + " |")
    out.append("|" + "---:|" * len(head))
    for n in members_list:
        row = [str(n)]
        row += [fmt(cell("gwesticky", n, k, "finder", "ir_per_call"))
                for k in KINDS]
        row.append(fmt(cell("gwesticky", n, KINDS[0], "handoff",
                            "ir_per_call")))
        pre = cell("gwesticky", n, KINDS[0], "pre_request", "ir_per_call")
        fin = cell("gwesticky", n, KINDS[0], "finder", "ir_per_call")
        row.append(fmt(pre - fin if pre is not None and fin is not None
                       else None))
        out.append("| " + " | ".join(row) + " |")
    out.append("")

    out.append("## Allocations per decision (pool: apr_palloc/apr_pcalloc/"
               "apr_pvsprintf calls, not counting those inside another "
               "allocator; heap: malloc & co., all)")
    out.append("")
    head = ["members", "case", "pre_request: pool", "pre_request: heap",
            "gwb_find_worker: pool", "gwb_find_worker: heap"]
    out.append("| " + " | ".join(head) + " |")
    out.append("|---:|---|---:|---:|---:|---:|")
    for n in members_list:
        for m in METHODS:
            for k in KINDS:
                pa = cell(m, n, k, "pre_request_alloc")
                fa = cell(m, n, k, "finder_alloc")
                if not pa:
                    continue
                out.append("| %d | %s, %s | %s | %s | %s | %s |" % (
                    n, m, title[k], fmt(pa["per_decision"], 2),
                    fmt(pa["heap_per_decision"], 3),
                    fmt(fa["per_decision"], 2) if fa else "-",
                    fmt(fa["heap_per_decision"], 3) if fa else "-"))
    out.append("")
    out += report_sites(results, members_list)
    out += report_breakdown(results, members_list)
    out += report_goals(results, members_list)
    return "\n".join(out)


def site_chain(site):
    """site -> what it called [-> the allocator's caller] -> allocator
    (frames between the last two are left out)."""
    if site["api"] == site["allocator"]:
        return [site["site"], site["allocator"]]
    if site["via"] == site["api"]:
        return [site["site"], site["api"], site["allocator"]]
    return [site["site"], site["api"], site["via"], site["allocator"]]


def report_sites(results, members_list):
    """Where the allocations come from: below the finder for the smallest
    and largest member count, below proxy_run_pre_request (the same at any
    count) for the smallest."""
    out = ["## Allocation sites (calls per decision)", "",
           "Each: the call site -> what it called -> the function that "
           "called the allocator -> the allocator.  Sites in "
           "mod_gwe_balancer.c come from its debug info; elsewhere the "
           "last frame outside libapr/libc, object:function.", ""]
    for n in sorted({members_list[0], members_list[-1]}):
        for m in METHODS:
            for k in KINDS:
                case = results.get(m, {}).get(n, {}).get(k)
                if not case:
                    continue
                for scope in ("finder_alloc", "pre_request_alloc"):
                    if scope == "pre_request_alloc" and n != members_list[0]:
                        continue
                    summary = case.get(scope)
                    if not summary or not summary["sites"]:
                        continue
                    out.append("- %d members, %s, %s, below %s:" % (
                        n, m, k, "gwb_find_worker" if scope == "finder_alloc"
                        else "proxy_run_pre_request"))
                    for s in summary["sites"]:
                        out.append("    - %s%s: %s" % (
                            " -> ".join(site_chain(s)),
                            " (inside another allocator)" if s["nested"]
                            else "", fmt(s["per_decision"], 3)))
                    if summary["truncated_contexts"]:
                        out.append("    - (%d contexts too deep to attribute"
                                   "; raise SEPARATE_CALLERS)"
                                   % summary["truncated_contexts"])
    out.append("")
    return out


def report_breakdown(results, members_list):
    """What the decision is made of, per decision: proxy_run_pre_request's
    hooks, mod_proxy_balancer's hook (balancer lookup, lock, URL rewrite,
    env: common to both; the sticky lookup: the built-in's), and
    gwb_find_worker."""
    out = ["## What a decision is made of (Ir per decision: self cost, then "
           "callees' inclusive cost; cookie on the last member; Debian "
           "strips static functions, shown as object:address)", ""]
    for n in sorted({members_list[0], members_list[-1]}):
        for m in METHODS:
            case = results.get(m, {}).get(n, {}).get("cookie_last")
            if not case:
                continue
            out.append("- %d members, %s:" % (n, m))
            for part in case["breakdown"]:
                out.append("    - %s: self %s" % (part["function"],
                                                   fmt(part["self"])))
                for name, calls, ir in part["callees"]:
                    if ir >= 1:
                        out.append("        - %s (%s calls): %s"
                                   % (name, fmt(calls, 2), fmt(ir)))
    out.append("")
    return out


def report_goals(results, members_list):
    out = ["## The project's goals", ""]
    g = results.get("gwesticky", {})
    b = results.get("built-in", {})
    if 2 in g and 2 in b:
        mine = g[2]["cookie_last"]["pre_request"]["ir_per_call"]
        theirs = b[2]["cookie_last"]["pre_request"]["ir_per_call"]
        out.append("- gwesticky <= built-in at 2 members, with the cookie: "
                   "%s vs %s Ir per decision: %s" % (
                       fmt(mine), fmt(theirs),
                       "met" if mine <= theirs else "NOT met"))
    for scope in ("pre_request", "finder"):
        values = [g[n]["cookie_last"][scope]["ir_per_call"]
                  for n in members_list if n in g]
        if values:
            out.append("- gwesticky flat with the cookie (%s, %s members): "
                       "%s .. %s Ir (spread %.1f%%)" % (
                           scope, "/".join(map(str, members_list)),
                           fmt(min(values)), fmt(max(values)),
                           100.0 * (max(values) - min(values)) / min(values)))
    for k in KINDS:
        allocs = [(n, g[n][k]["finder_alloc"]) for n in members_list
                  if n in g]
        if not allocs:
            continue
        bad = [(n, a) for n, a in allocs if a["per_decision"] > 0]
        line = "- no allocation in the finder per request, %s: " % k
        if not bad:
            out.append(line + "met")
            continue
        sites = sorted({"%s -> %s" % (s["site"], s["api"])
                        for _, a in bad for s in a["sites"]})
        out.append(line + "NOT met: %s per decision (%s members), from "
                   "%s" % ("/".join(fmt(a["per_decision"], 2)
                                    for _, a in bad),
                           "/".join(str(n) for n, _ in bad),
                           "; ".join(sites)))
    builds = [n for n in members_list if n in g
              for k in KINDS if g[n][k]["index_builds"]]
    if builds:
        out.append("- WARNING: the route index was rebuilt during a "
                   "measured batch (members %s)" % builds)
    out.append("")
    return out


def profile_numbers(dumps, requests):
    """Per request, net of the marks (the baseline dump)."""
    measured, base = dumps["cookie_last"], dumps["baseline"]
    total = (measured.total() - base.total()) / requests
    stages = []
    for function, what in PROFILE_STAGES:
        calls, cost = measured.inclusive(function)
        if not calls:
            continue
        base_calls, base_cost = base.inclusive(function)
        stages.append({"function": function, "what": what,
                       "calls_per_request": (calls - base_calls) / requests,
                       "ir": (cost - base_cost) / requests})
    objects = _net(measured.self_by_object(), base.self_by_object(),
                   requests)
    functions = _net(measured.self_by_function(), base.self_by_function(),
                     requests)
    return {"ir_per_request": total, "stages": stages,
            "objects": sorted(objects.items(), key=lambda kv: -kv[1]),
            "top_functions": sorted(functions.items(),
                                    key=lambda kv: -kv[1])[:15]}


def report_profile_against(mine, theirs):
    """The whole request, stage by stage, against httpd's built-in sticky
    code with this module loaded but unused (http_bench.py's setup b)."""
    out = ["## The whole request: gwesticky against httpd's built-in sticky "
           "code", "",
           "Built-in: `stickysession=GWROUTEID lbmethod=byrequests`, with "
           "mod_gwe_balancer loaded but not used by the balancer (as in "
           "http_bench.py's setup b).  Ir per request, 2 members, cookie.",
           "", "| function | gwesticky | built-in | difference |",
           "|---|---:|---:|---:|"]
    theirs_by_function = {s["function"]: s["ir"] for s in theirs["stages"]}
    rows = [("total", mine["ir_per_request"], theirs["ir_per_request"])]
    rows += [(s["function"], s["ir"], theirs_by_function.get(s["function"]))
             for s in mine["stages"]]
    for name, a, b in rows:
        out.append("| %s | %s | %s | %s |" % (
            name, fmt(a), fmt(b) if b is not None else "-",
            "%+.0f" % (a - b) if b is not None else "-"))
    return "\n".join(out) + "\n"


def _net(measured, base, requests):
    return {key: (measured[key] - base.get(key, 0)) / requests
            for key in measured}


def report_profile(p, requests):
    total = p["ir_per_request"]
    out = ["## Where a proxied request's instructions go (gwesticky, 2 "
           "members, cookie, keep-alive; %d requests, net of the marks)"
           % requests, "",
           "Total: %s Ir per request." % fmt(total), "",
           "### Stages (inclusive; nested stages are part of the ones "
           "above them)", "",
           "| function | stage | calls/request | Ir/request | share |",
           "|---|---|---:|---:|---:|"]
    for s in p["stages"]:
        out.append("| %s | %s | %s | %s | %.1f%% |" % (
            s["function"], s["what"], fmt(s["calls_per_request"], 2),
            fmt(s["ir"]), 100.0 * s["ir"] / total))
    out += ["", "### By shared object (self cost)", "",
            "| object | Ir/request | share |", "|---|---:|---:|"]
    for obj, ir in p["objects"]:
        if ir >= 0.5:
            out.append("| %s | %s | %.1f%% |" % (obj, fmt(ir),
                                                 100.0 * ir / total))
    out += ["", "### Top 15 functions (self cost)", "",
            "| function | object | Ir/request | share |",
            "|---|---|---:|---:|"]
    for (obj, name), ir in p["top_functions"]:
        out.append("| %s | %s | %s | %.1f%% |" % (
            label((obj, name)), obj, fmt(ir), 100.0 * ir / total))
    out.append("")
    return "\n".join(out)


# ---------------------------------------------------------------------------

def snapshot_module(path, work_dir):
    """A private copy of the module, so that a rebuild during the run
    cannot mix two builds; and its identity for the report."""
    copy = Path(work_dir) / "mod_gwe_balancer.so"
    shutil.copy2(path, copy)
    os.chmod(copy, 0o755)
    digest = hashlib.sha256(copy.read_bytes()).hexdigest()
    info = {"path": str(path), "sha256": digest,
            "mtime": time.strftime("%Y-%m-%d %H:%M:%S UTC",
                                   time.gmtime(os.stat(path).st_mtime))}
    if MODULE_SOURCE.exists() and (MODULE_SOURCE.stat().st_mtime
                                   > os.stat(path).st_mtime):
        info["warning"] = ("%s is newer than the module: file:line refer to "
                           "the source the module was built from"
                           % MODULE_SOURCE.name)
    return copy, info


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--members", default=",".join(map(str, MEMBER_COUNTS)),
                   help="member counts, comma-separated")
    p.add_argument("--requests", type=int, default=200,
                   help="measured requests per kind")
    p.add_argument("--warmup", type=int, default=5,
                   help="warm-up requests per kind")
    p.add_argument("--module", default=str(DEFAULT_MODULE))
    p.add_argument("--mpm", default="event", choices=("event", "prefork",
                                                      "worker"))
    p.add_argument("--quick", action="store_true",
                   help="smoke run: 2 and 256 members, 50 requests")
    p.add_argument("--profile", action="store_true",
                   help="only the per-request profile (gwesticky, 2 "
                   "members, cookie), and the whole request against "
                   "httpd's built-in sticky code")
    p.add_argument("--json", help="write the numbers to this file")
    p.add_argument("--keep", action="store_true",
                   help="keep the run directory (configs, logs, dumps)")
    args = p.parse_args(argv)
    args.members = [int(n) for n in args.members.split(",") if n]
    if args.quick:
        args.members, args.requests = [2, 256], 50
    return args


def main(argv=None):
    args = parse_args(argv)
    for tool in (VALGRIND, harness.APACHE2):
        if not os.access(tool, os.X_OK):
            raise BenchError("%s is missing (Debian: valgrind, apache2-bin)"
                             % tool)
    work_dir = tempfile.mkdtemp(prefix="gwb-finder-cost-")
    os.chmod(work_dir, 0o755)      # www-data reads the module copy
    started = time.monotonic()
    backend = Backend()
    try:
        module_path, module_info = snapshot_module(args.module, work_dir)
        module_object = str(module_path)
        backend.start()
        if args.profile:
            data = {}
            for method in ("gwesticky", "built-in+module"):
                dumps = run_case(work_dir, backend, method, 2,
                                 ["cookie_last"], args.requests, args.warmup,
                                 module_path, args.mpm)
                data[method] = profile_numbers(dumps, args.requests)
            print(report_profile(data["gwesticky"], args.requests))
            print(report_profile_against(data["gwesticky"],
                                         data["built-in+module"]))
        else:
            data = {}
            for method in METHODS:
                for n in args.members:
                    dumps = run_case(work_dir, backend, method, n, KINDS,
                                     args.requests, args.warmup,
                                     module_path, args.mpm)
                    data.setdefault(method, {})[n] = {
                        kind: measure(dumps[kind], method, module_object,
                                      args.requests) for kind in KINDS}
                    print("# %s, %d members: done (%.0fs)" % (
                        method, n, time.monotonic() - started),
                        file=sys.stderr)
            print(report_finder(data, args.members, args.requests))
        if "warning" in module_info:
            print("warning: " + module_info["warning"])
        print("module: %s (sha256 %s..., built %s); %s MPM; %.0f s"
              % (module_info["path"], module_info["sha256"][:12],
                 module_info["mtime"], args.mpm,
                 time.monotonic() - started))
        if args.json:
            with open(args.json, "w") as f:
                json.dump({"module": module_info, "mpm": args.mpm,
                           "requests": args.requests,
                           "warmup": args.warmup,
                           "profile" if args.profile else "finder": data},
                          f, indent=1, default=str)
    finally:
        backend.stop()
        if args.keep:
            print("kept: %s" % work_dir, file=sys.stderr)
        else:
            shutil.rmtree(work_dir, ignore_errors=True)


if __name__ == "__main__":
    try:
        main()
    except BenchError as e:
        sys.exit("finder_cost: %s" % e)
