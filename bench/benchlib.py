"""What the benchmark scripts share: the open-files limit, the processes of
a server (read from /proc), the servers of the benchmark's own (a node,
nginx).

httpd itself is the test harness's (test/harness/): harness.ShippedHttpd
for the shipped config.  Standard library and the harness only.
"""

import os
import re
import resource
import signal
import subprocess
import sys
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent
sys.path.insert(0, str(REPO_DIR / "test"))
import harness  # noqa: E402

PYTHON = harness.PYTHON
NGINX = "/usr/sbin/nginx"
NODE_SCRIPT = BENCH_DIR / "node.py"
# Open files for every process here (a WebSocket tunnel holds 2 sockets in
# a balancer process, 1 in a client or a node).
NOFILE = 1 << 17
# Debian package of each tool, for require().
PACKAGES = {harness.APACHE2: "apache2-bin", NGINX: "nginx-light",
            "/usr/bin/wrk": "wrk"}


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


def nginx(name, template, prefix, **values):
    """nginx running bench/nginx/<template> under prefix, in the
    foreground, its @KEY@s filled with values and @PORT@ (a free port) and
    @PREFIX@."""
    prefix = Path(prefix)
    prefix.mkdir(parents=True, exist_ok=True)
    port = harness.free_port()
    text = (BENCH_DIR / "nginx" / template).read_text()
    for key, value in dict(values, PORT=port, PREFIX=prefix).items():
        text = text.replace("@%s@" % key, str(value))
    unfilled = re.findall(r"@[A-Z][A-Z0-9_]*@", re.sub(r"#.*", "", text))
    if unfilled:
        raise BenchError("%s: unfilled %s" % (template, " ".join(unfilled)))
    conf = prefix / "nginx.conf"
    conf.write_text(text)
    # -e: nginx's own log before the config's error_log applies (the
    # compiled-in default is the system's /var/log/nginx).
    error_log = prefix / "error.log"
    return Server(name, [NGINX, "-p", prefix, "-c", conf, "-q",
                         "-e", error_log, "-g", "daemon off;"],
                  port, prefix / "nginx.out", error_log)


def run_main(main):
    """Run a script's main(); a BenchError ends it with its message."""
    try:
        main()
    except BenchError as e:
        sys.exit("%s: %s" % (Path(sys.argv[0]).stem, e))
