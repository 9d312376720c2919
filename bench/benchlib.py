"""What the benchmark scripts share: the open-files limit, the processes of
a server (read from /proc), the servers of the benchmark's own (a node,
nginx), and httpd under callgrind with its requests cut into dumps.

httpd itself is the test harness's (test/harness/): harness.ShippedHttpd
for the shipped config, harness.Httpd with valgrind as its wrapper for the
callgrind runs.  Standard library, the harness and finder_callgrind.py
(the callgrind dump reader) only.
"""

import asyncio
import hashlib
import http.client
import json
import os
import pwd
import re
import resource
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
import harness  # noqa: E402
from finder_callgrind import Dump  # noqa: E402

PYTHON = harness.PYTHON
NGINX = "/usr/sbin/nginx"
HAPROXY = "/usr/sbin/haproxy"
VALGRIND = "/usr/bin/valgrind"
NODE_SCRIPT = BENCH_DIR / "node.py"
# Open files for every process here (a WebSocket tunnel holds 2 sockets in
# a balancer process, 1 in a client or a node).
NOFILE = 1 << 17
# Debian package of each tool, for require().
PACKAGES = {harness.APACHE2: "apache2-bin", NGINX: "nginx-light",
            HAPROXY: "haproxy", VALGRIND: "valgrind", "/usr/bin/wrk": "wrk",
            "/usr/bin/strace": "strace"}


class BenchError(Exception):
    pass


def require(*tools):
    """Raise BenchError naming the Debian packages of the missing tools."""
    missing = [PACKAGES.get(t, t) for t in tools if not os.access(t, os.X_OK)]
    if missing:
        raise BenchError("missing (Debian packages): " + " ".join(missing))


def raise_nofile_limit(want=NOFILE):
    """Raise RLIMIT_NOFILE, soft and hard, to want (never lower), for this
    process and every process it starts; where it may not (a container
    without CAP_SYS_RESOURCE), the soft limit to the hard one.  Returns the
    soft limit now."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard >= want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        return hard
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, want))
        return want
    except (ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        return hard


# ---------------------------------------------------------------------------
# The processes of a server, from /proc
# ---------------------------------------------------------------------------

def _stat_fields(pid):
    """/proc/PID/stat after the command name: state, ppid, ... utime (11),
    stime (12), cutime (13), cstime (14)."""
    with open("/proc/%d/stat" % pid) as f:
        return f.read().rsplit(")", 1)[1].split()


def process_tree(pid):
    """pid and its descendants, not zombies: all the processes of a server
    (httpd's parent and children, nginx's master and workers)."""
    if not pid or not harness.pid_alive(pid):
        return []
    children = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                state, ppid = _stat_fields(int(entry))[:2]
            except (OSError, IndexError):
                continue
            if state not in ("Z", "X"):
                children.setdefault(int(ppid), []).append(int(entry))
    tree, todo = [], [pid]
    while todo:
        tree.append(todo.pop())
        todo += children.get(tree[-1], [])
    return tree


def cpu_seconds(pid):
    """(user, system) CPU seconds of a server so far: its live processes,
    and the children they reaped (httpd's exited children)."""
    ticks = os.sysconf("SC_CLK_TCK")
    user = system = 0
    for p in process_tree(pid):
        try:
            fields = _stat_fields(p)
        except (OSError, IndexError):
            continue
        user += int(fields[11]) + int(fields[13])
        system += int(fields[12]) + int(fields[14])
    return user / ticks, system / ticks


def _proc_number(pid, name, field):
    """The number after "field:" in /proc/PID/name, or 0 if it is gone."""
    try:
        with open("/proc/%d/%s" % (pid, name)) as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def memory(pids):
    """PSS (KiB) and threads summed over pids, and how many processes."""
    return {"pss_kib": sum(_proc_number(p, "smaps_rollup", "Pss")
                           for p in pids),
            "threads": sum(_proc_number(p, "status", "Threads")
                           for p in pids),
            "processes": len(pids)}


def use_uvloop():
    """Run asyncio on uvloop when it is installed (python3-uvloop): it
    takes the clients and nodes about half the CPU time, which the
    balancer shares the machine with."""
    try:
        import uvloop
    except ImportError:
        return
    uvloop.install()


def client_main(run, usage):
    """main() of a client process driven by its parent (ws_client.py,
    visitor.py): its settings, a JSON object, are its one argument; run
    is the coroutine function that takes them."""
    if len(sys.argv) != 2:
        sys.exit(usage)
    raise_nofile_limit()        # up to the hard limit the parent set
    use_uvloop()
    asyncio.run(run(json.loads(sys.argv[1])))


def stop_process(proc, timeout=10):
    """Stop a Popen child by its PID: SIGTERM, then SIGKILL after timeout."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def tail(path, lines=30):
    """The last lines of a log, headed by its path, for error messages."""
    try:
        text = Path(path).read_text(errors="replace")
    except OSError:
        return "(%s: none)" % path
    return "--- %s (last %d lines) ---\n%s" % (
        path, lines, "\n".join(text.splitlines()[-lines:]))


# ---------------------------------------------------------------------------
# Servers of the benchmark's own: the nodes and nginx
# ---------------------------------------------------------------------------

class Server:
    """A server the benchmark runs itself (a node, nginx): a child process
    in the foreground, in a session of its own (a Ctrl-C is ours to handle,
    by stopping each server by its PID), ready once its port accepts
    connections.  .name, .port and .pid as a harness.Node's, so that
    harness.shipped_defines() takes it as a node; .error_log_path as a
    harness.Httpd's.  Its output goes to log_path."""

    def __init__(self, name, argv, port, log_path, error_log_path=None):
        self.name = name
        self.argv = [str(word) for word in argv]
        self.port = port
        self.log_path = Path(log_path)
        self.error_log_path = Path(error_log_path or log_path)
        self.proc = None

    @property
    def pid(self):
        return self.proc.pid if self.proc else None

    def start(self, timeout=20):
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                self.argv, stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT, start_new_session=True)
        try:
            harness.wait_until(self._ready, timeout, what="%s to listen on "
                               "%d" % (self.name, self.port))
        except Exception:
            self.stop()
            raise
        return self

    def _ready(self):
        if self.proc.poll() is not None:
            logs = dict.fromkeys((self.log_path, self.error_log_path))
            raise BenchError("%s exited with %s\n%s" % (
                self.name, self.proc.returncode,
                "\n".join(tail(path) for path in logs)))
        return harness.port_accepts(self.port)

    def stop(self):
        if self.proc:
            stop_process(self.proc, timeout=30)

    def __repr__(self):
        return "<Server %s port=%d pid=%s>" % (self.name, self.port,
                                                self.pid)


def node(name, work_dir):
    """A GWE-like node (bench/node.py) named name: HTTP, WebSocket echo."""
    port = harness.free_port()
    return Server(name, [PYTHON, NODE_SCRIPT, "--name", name,
                         "--port", port],
                  port, Path(work_dir) / ("%s.log" % name))


def filled_config(template, conf, prefix, **values):
    """Write bench/<template> to conf with its @KEY@s filled with values
    and @PORT@ (a free port) and @PREFIX@; returns the port."""
    Path(prefix).mkdir(parents=True, exist_ok=True)
    port = harness.free_port()
    text = (BENCH_DIR / template).read_text()
    for key, value in dict(values, PORT=port, PREFIX=prefix).items():
        text = text.replace("@%s@" % key, str(value))
    unfilled = re.findall(r"@[A-Z][A-Z0-9_]*@", re.sub(r"#.*", "", text))
    if unfilled:
        raise BenchError("%s: unfilled %s" % (template, " ".join(unfilled)))
    Path(conf).write_text(text)
    return port


def nginx(name, template, prefix, **values):
    """nginx running bench/nginx/<template> under prefix, in the
    foreground (see filled_config() for the template)."""
    prefix = Path(prefix)
    conf = prefix / "nginx.conf"
    port = filled_config("nginx/" + template, conf, prefix, **values)
    # -e: nginx's own log before the config's error_log applies (the
    # compiled-in default is the system's /var/log/nginx).
    error_log = prefix / "error.log"
    return Server(name, [NGINX, "-p", prefix, "-c", conf, "-q",
                         "-e", error_log, "-g", "daemon off;"],
                  port, prefix / "nginx.out", error_log)


def haproxy(name, template, prefix, **values):
    """HAProxy running bench/haproxy/<template> under prefix, in the
    foreground (-db: one process, its threads), @THREADS@ one per core;
    its log, on its stdout, in prefix/haproxy.out."""
    prefix = Path(prefix)
    conf = prefix / "haproxy.cfg"
    port = filled_config("haproxy/" + template, conf, prefix,
                         THREADS=os.cpu_count(), **values)
    return Server(name, [HAPROXY, "-db", "-f", conf], port,
                  prefix / "haproxy.out")


# ---------------------------------------------------------------------------
# httpd under callgrind: finder_cost.py and request_profile.py
# ---------------------------------------------------------------------------

COOKIE = "GWROUTEID"
URL_PATH = "/server/about"
MARK_PATH = "/_cg/mark"
# Called once per mark request (its 404), never by a proxied request.
DUMP_TRIGGER = "ap_send_error_response"
# Deep enough that every allocator context below proxy_run_pre_request
# still names it among its callers (see Dump.allocations_under).
SEPARATE_CALLERS = 16
RUN_AS = "www-data"             # httpd's children, when we are root
# The requests of a batch: the cookie of the last member (the worst case
# of httpd's linear find_route_worker()), of the first, or none (the
# lbmethod's own choice).
KINDS = ("cookie_last", "cookie_first", "no_cookie")


def member_path(k):
    """Member k's path on the node.  One width for all: httpd takes a
    member whose URL starts with another's (/m1, /m16) for that one
    ("worker sharing", AH01150), and drops its route=."""
    return "/m%03d" % k


def balancer_config(node, members, proxyset):
    """One balancer of members (distinct URLs /mK on the one node), every
    path proxied to it but the mark path."""
    lines = ['<Proxy "balancer://gwe">']
    lines += ['    BalancerMember "http://127.0.0.1:%d%s" route=GWE_Node_%d'
              % (node.port, member_path(k), k)
              for k in range(1, members + 1)]
    lines += ["    " + proxyset, "</Proxy>",
              # The mark path first: the first matching ProxyPass wins.
              'ProxyPass "%s" "!"' % MARK_PATH,
              'ProxyPass "/" "balancer://gwe/"']
    return "\n".join(lines) + "\n"


class CallgrindHttpd(harness.Httpd):
    """A lean httpd (the modules a balancer needs, no access log) with one
    child process, under callgrind, which dumps its counters at every
    request for MARK_PATH (a 404).  All requests go over one keep-alive
    connection, so that one child serves them all."""

    # A 404 like a mark: whatever dumps the readiness probes make come
    # before the first mark.
    READY_PATH = MARK_PATH

    def __init__(self, root, node, members, proxyset, module_path=None,
                 mpm="event"):
        root = Path(root)
        self.cg_dir = root / "cg"
        self.cg_dir.mkdir(parents=True, exist_ok=True)
        (root / "docroot").mkdir(exist_ok=True)
        if os.geteuid() == 0:       # the child, as www-data, writes here
            entry = pwd.getpwnam(RUN_AS)
            os.chown(self.cg_dir, entry.pw_uid, entry.pw_gid)
        wrapper = [VALGRIND, "--tool=callgrind",
                   "--callgrind-out-file=%s/callgrind.out.%%p" % self.cg_dir,
                   "--log-file=%s/valgrind.%%p.log" % self.cg_dir,
                   "--dump-before=" + DUMP_TRIGGER,
                   "--separate-callers=%d" % SEPARATE_CALLERS, "--vgdb=no"]
        # Generous: httpd starts slowly under callgrind.
        super().__init__(root, module_path=module_path, mpm=mpm,
                         start_timeout=180, wrapper=wrapper)
        self.conn = None
        self.write_config(balancer_config(node, members, proxyset))

    def base_config(self, body="", extra_listen=None, modules=None):
        modules = ["mpm_" + self.mpm, "authz_core", "proxy", "proxy_http",
                   "proxy_balancer", "slotmem_shm", "lbmethod_byrequests"]
        lines = [
            "# Written by bench/benchlib.py: a private httpd under "
            "callgrind.",
            'ServerRoot "%s"' % self.root,
            "ServerName 127.0.0.1",
            "Listen 127.0.0.1:%d" % self.port,
            'PidFile "%s"' % self.pid_path,
            'DefaultRuntimeDir "%s"' % (self.root / "run"),
            "Mutex file:%s default" % (self.root / "run"),
            'ErrorLog "%s"' % self.error_log_path,
            "LogLevel warn",
            'DocumentRoot "%s"' % (self.root / "docroot"),
            # One child: the one whose dumps count.
            "StartServers 1",
            "ServerLimit 1",
            "ThreadsPerChild 25",
            "MaxRequestWorkers 25",
            "MinSpareThreads 1",
            "MaxSpareThreads 25",
            # Generous: the first request under callgrind is slow.
            "Timeout 120",
            # One connection carries all the requests of a run.
            "KeepAlive On",
            "MaxKeepAliveRequests 0",
            "KeepAliveTimeout 300",
            '<Directory "/">',
            "    AllowOverride None",
            "</Directory>",
        ]
        if os.geteuid() == 0:
            lines += ["User " + RUN_AS, "Group " + RUN_AS]
        lines += ['LoadModule %s_module "%s"'
                  % (name, harness.MODULES_DIR / ("mod_%s.so" % name))
                  for name in modules]
        if self.module_path:
            lines.append('LoadModule gwe_balancer_module "%s"'
                         % self.module_path)
        return "\n".join(lines) + "\n"

    def tail_config(self):
        return ""

    def start(self):
        super().start()
        self.conn = http.client.HTTPConnection("127.0.0.1", self.port,
                                               timeout=180)
        return self

    def stop(self, timeout=120, graceful_timeout=60):
        """As harness.Httpd's, with time for callgrind's final dumps."""
        if self.conn:
            self.conn.close()
        super().stop(timeout=timeout, graceful_timeout=graceful_timeout)

    def get(self, path, cookie=None):
        """(status, body) of a GET on the keep-alive connection."""
        self.conn.request("GET", path,
                          headers={"Cookie": cookie} if cookie else {})
        resp = self.conn.getresponse()
        return resp.status, resp.read().decode("utf-8", "replace")

    def dumps(self):
        """The numbered dumps so far (callgrind.out.PID.1, .2 ...), in
        order; all from the one child that serves the requests."""
        found = [p for p in self.cg_dir.glob("callgrind.out.*.*")
                 if p.suffix[1:].isdigit()]
        if len({p.name.split(".")[2] for p in found}) > 1:
            raise BenchError("dumps from more than one process in %s"
                             % self.cg_dir)
        return sorted(found, key=lambda p: int(p.suffix[1:]))

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

    def send_batch(self, kind, members, count):
        """count requests of a kind (KINDS), each checked to reach the
        member its cookie names."""
        cookie, expected = {
            "cookie_last": ("%s=.GWE_Node_%d" % (COOKIE, members), members),
            "cookie_first": ("%s=.GWE_Node_1" % COOKIE, 1),
            "no_cookie": (None, None)}[kind]
        for _ in range(count):
            status, body = self.get(URL_PATH, cookie)
            if status != 200:
                raise BenchError("%s request answered %d" % (kind, status))
            if expected and not body.startswith(member_path(expected) + "/"):
                raise BenchError("%s request reached %r, not member %d"
                                 % (kind, body, expected))


class CallgrindRuns:
    """The callgrind runs of a script, in a work dir with a snapshot of the
    module and a node, which `with` makes, and stops and removes (unless
    args.keep) at its end.  args: from callgrind_arguments()."""

    def __init__(self, args):
        self.args = args
        self.started = time.monotonic()
        self.work_dir = self.node = None

    def __enter__(self):
        require(VALGRIND, harness.APACHE2)
        self.work_dir = Path(tempfile.mkdtemp(prefix="gwb-callgrind-"))
        os.chmod(self.work_dir, 0o755)   # httpd's child (www-data) reads
        try:
            self.module_path, self.module_info = snapshot_module(
                self.args.module, self.work_dir)
            self.node = node("GWE_Node", self.work_dir).start()
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc):
        if self.node:
            self.node.stop()
        if self.args.keep:
            print("kept: %s" % self.work_dir, file=sys.stderr)
        else:
            shutil.rmtree(self.work_dir, ignore_errors=True)

    @property
    def module_object(self):
        """The module as callgrind names its object (ob=)."""
        return str(self.module_path)

    def run(self, name, members, proxyset, kinds, load_module=True):
        """A CallgrindHttpd called name with members, warmed up, then each
        kind's batch between marks; stopped.  Returns {"baseline": Dump,
        kind: Dump, ...}, baseline that of an empty batch (what the marks
        leave)."""
        args = self.args
        module = self.module_path if load_module else None
        httpd = CallgrindHttpd(self.work_dir / name, self.node, members,
                               proxyset, module, args.mpm)
        try:
            httpd.start()
            # The first requests build the route index, open node
            # connections and fill caches: none of that is a decision's.
            for kind in kinds:
                httpd.send_batch(kind, members, args.warmup)
            httpd.mark()
            paths = {"baseline": httpd.mark()}
            for kind in kinds:
                httpd.send_batch(kind, members, args.requests)
                paths[kind] = httpd.mark()
        finally:
            httpd.stop()
        problems = httpd.unexpected_log_lines()
        if problems:
            raise BenchError("%s: httpd logged:\n%s"
                             % (name, "\n".join(problems[:10])))
        print("# %s: done (%.0f s)" % (name, time.monotonic() - self.started),
              file=sys.stderr)
        return {kind: Dump(str(path)) for kind, path in paths.items()}

    def summary(self, key, data):
        """The report's last line (which module, which MPM, how long); and
        with --json, the numbers (under key) and how they were made,
        written to that file."""
        args, info = self.args, self.module_info
        if args.json:
            with open(args.json, "w") as f:
                json.dump({"module": info, "mpm": args.mpm,
                           "requests": args.requests, "warmup": args.warmup,
                           key: data}, f, indent=1, default=str)
        line = "module: %s (sha256 %s..., built %s); %s MPM; %.0f s" % (
            info["path"], info["sha256"][:12], info["mtime"], args.mpm,
            time.monotonic() - self.started)
        if "warning" in info:
            line = "warning: %s\n%s" % (info["warning"], line)
        return line


def snapshot_module(path, work_dir):
    """A private copy of the module, so that a rebuild during the run
    cannot mix two builds, and its identity for the report: (copy, info)."""
    copy = Path(work_dir) / "mod_gwe_balancer.so"
    shutil.copy2(path, copy)
    os.chmod(copy, 0o755)
    built = os.stat(path).st_mtime
    info = {"path": str(path),
            "sha256": hashlib.sha256(copy.read_bytes()).hexdigest(),
            "mtime": time.strftime("%Y-%m-%d %H:%M:%S UTC",
                                   time.gmtime(built))}
    newer = [p.name for p in sorted(REPO_DIR.glob("*.[ch]"))
             if p.stat().st_mtime > built]
    if newer:
        info["warning"] = ("%s newer than the module: file:line refer to "
                           "the source the module was built from"
                           % ", ".join(newer))
    return copy, info


def callgrind_arguments(parser, mpm):
    """The options of a callgrind run, mpm the default MPM."""
    parser.add_argument("--requests", type=int, default=200,
                        help="measured requests per kind")
    parser.add_argument("--warmup", type=int, default=5,
                        help="warm-up requests per kind")
    parser.add_argument("--module", default=str(harness.MODULE_SO))
    parser.add_argument("--mpm", default=mpm,
                        choices=("event", "prefork", "worker"))
    parser.add_argument("--json", help="write the numbers to this file")
    parser.add_argument("--keep", action="store_true",
                        help="keep the run directory (configs, logs, dumps)")


def fmt(value, digits=0):
    """A count for the reports: 6,313; "-" for none."""
    if value is None:
        return "-"
    return "{:,.{}f}".format(value, digits)


def run_main(main):
    """Run a script's main(); a BenchError ends it with its message."""
    try:
        main()
    except BenchError as e:
        sys.exit("%s: %s" % (Path(sys.argv[0]).stem, e))
