"""Integration-test harness for mod_gwe_balancer.

Runs private instances of Debian's /usr/sbin/apache2 (each with its own
ServerRoot, config, PidFile, runtime dir and ports, all on 127.0.0.1) in
front of demo GWE nodes (test/gwe_node.py), and talks to them over HTTP/1.1
and HTTP/2 cleartext (with curl).  Standard library only.

Nothing here touches /etc/apache2 or the system's apache2 service, and every
process is stopped by its own PID (an httpd, as a last resort, by its own
process group, which httpd creates when it detaches).
"""

import email.message
import html
import http.client
import json
import os
import re
import select
import signal
import socket
import stat
import subprocess
import tempfile
import threading
import time
import urllib.parse
import xml.etree.ElementTree as ET
from pathlib import Path

TEST_DIR = Path(__file__).resolve().parent
REPO_DIR = TEST_DIR.parent
PYTHON = "/usr/bin/python3"          # not the python3 first on PATH
APACHE2 = "/usr/sbin/apache2"
MODULES_DIR = Path("/usr/lib/apache2/modules")
NODE_SCRIPT = TEST_DIR / "gwe_node.py"
MODULE_SO = REPO_DIR / ".libs" / "mod_gwe_balancer.so"

# Every Node and Httpd ever started, so that stop_all() can clean up after
# a test that forgot to (or crashed before it could).
_started = []
# Every Httpd ever made, so that a test's teardown can check the logs of
# those it made, however it made them.
created_httpds = []


class HarnessError(Exception):
    """A server could not be started, stopped or reached."""


def free_port():
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(predicate, timeout, interval=0.02, what="condition"):
    """Poll predicate() until it returns a true value, which is returned;
    raise HarnessError after timeout seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise HarnessError("timed out after %.1fs waiting for %s"
                               % (timeout, what))
        time.sleep(interval)


def port_accepts(port, host="127.0.0.1", timeout=0.5):
    """True if a TCP connection to host:port succeeds now."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def pid_alive(pid):
    """True if pid exists and is not a zombie: an exited httpd parent is a
    zombie until its new parent (us, see become_subreaper(), or PID 1)
    reaps it, and counts as gone."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open("/proc/%d/stat" % pid) as f:
            # The state follows the parenthesised command name.
            state = f.read().rsplit(")", 1)[1].split()[0]
        return state not in ("Z", "X")
    except (OSError, IndexError):
        return False


def become_subreaper():
    """Make this process the child subreaper (prctl PR_SET_CHILD_SUBREAPER)
    so that an httpd daemon, which detaches from the apache2 -k start that
    we run, is reparented to us rather than to PID 1.  PID 1 here does not
    reap promptly, which leaves a <defunct> apache2 behind every stopped
    instance; as its new parent we reap it (reap_apache_zombies())."""
    global _subreaper
    if not _subreaper:
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_child_subreaper = 36         # <linux/prctl.h>
        _subreaper = libc.prctl(pr_set_child_subreaper, 1, 0, 0, 0) == 0
    return _subreaper


_subreaper = False


def reap_apache_zombies():
    """Reap our exited apache2 children (daemons reparented to us, or the
    orphaned children of a killed one).  Only those: the exit status of
    other children belongs to subprocess.Popen."""
    me = os.getpid()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % entry) as f:
                head, rest = f.read().rsplit(")", 1)
        except OSError:
            continue
        comm = head.split("(", 1)[1]
        state, ppid = rest.split()[:2]
        if comm == "apache2" and state == "Z" and int(ppid) == me:
            try:
                os.waitpid(int(entry), os.WNOHANG)
            except ChildProcessError:
                pass


def stop_all():
    """Stop every Node and Httpd still running (safety net at session end)."""
    for server in reversed(_started):
        try:
            server.stop()
        except Exception:       # best effort: keep stopping the others
            pass


# ---------------------------------------------------------------------------
# HTTP clients
# ---------------------------------------------------------------------------

class Response:
    """An HTTP response: .status, .reason, .headers (case-insensitive, an
    email.message.Message: .get(), .get_all()), .body (bytes), .version."""

    def __init__(self, status, reason, headers, body, version="HTTP/1.1"):
        self.status = status
        self.reason = reason
        self.headers = headers
        self.body = body
        self.version = version

    @property
    def text(self):
        return self.body.decode("utf-8", "replace")

    def json(self):
        return json.loads(self.body)

    @property
    def node(self):
        """The X-GWE-Node header (which GWE node answered), or None."""
        return self.headers.get("X-GWE-Node")

    @property
    def set_cookies(self):
        """Every Set-Cookie header value, in order."""
        return self.headers.get_all("Set-Cookie") or []

    def __repr__(self):
        return "<Response %s %s node=%s %d bytes>" % (
            self.status, self.reason, self.node, len(self.body))


def _header_items(headers):
    """headers as a list of (name, value): a dict, or a list of pairs (so
    that a name may repeat), or None."""
    if not headers:
        return []
    if isinstance(headers, dict):
        return list(headers.items())
    return list(headers)


def _cookie_items(cookie):
    """cookie as Cookie header pairs: None for no header, a str (or bytes)
    for one header sent byte-exact, a list for one header per item."""
    if cookie is None:
        return []
    if isinstance(cookie, (str, bytes)):
        cookie = [cookie]
    return [("Cookie", c) for c in cookie]


def _wire(value):
    """A header value as the bytes to send: a str as UTF-8 (http.client
    would encode it as latin-1, or refuse it), bytes as they are."""
    return value.encode("utf-8") if isinstance(value, str) else value


class _CountingConnection(http.client.HTTPConnection):
    """An HTTPConnection that counts the TCP connections it opened."""

    connects = 0

    def connect(self):
        super().connect()
        self.connects += 1


def _send(conn, method, path, body, headers, cookie, host, port):
    """Send one request on conn, with no header added but Host (unless
    given), Content-Length (when there is a body) and the given ones."""
    items = _header_items(headers) + _cookie_items(cookie)
    names = {name.lower() for name, _ in items}
    conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
    if "host" not in names:
        conn.putheader("Host", "%s:%d" % (host, port))
    if body is not None:
        if isinstance(body, str):
            body = body.encode("utf-8")
        if "content-length" not in names:
            conn.putheader("Content-Length", str(len(body)))
    for name, value in items:
        conn.putheader(name, _wire(value))
    # With bytes, endheaders() sends the headers and body in one write, which
    # matters to balancer-manager: it reads the POST body with one read.
    conn.endheaders(body)
    resp = conn.getresponse()
    data = resp.read()
    return Response(resp.status, resp.reason, resp.msg, data,
                    "HTTP/%d.%d" % divmod(resp.version, 10))


def http_request(method, port, path, body=None, headers=None, cookie=None,
                 timeout=10, host="127.0.0.1"):
    """One request on a new connection, with Connection: close unless
    headers has a Connection header.  headers: dict or list of pairs (a
    name may repeat; a Host header replaces the default HOST:PORT); cookie:
    None (no Cookie header), a str sent byte-exact (UTF-8; or bytes), or a
    list of them sent as one Cookie header each.  Values with CR or LF are
    refused by http.client: send those with raw_http()."""
    # Connection: close (unless headers say otherwise): httpd need not keep
    # an idle connection of ours open until KeepAliveTimeout.
    if not any(name.lower() == "connection"
               for name, _ in _header_items(headers)):
        headers = _header_items(headers) + [("Connection", "close")]
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        return _send(conn, method, path, body, headers, cookie, host, port)
    finally:
        conn.close()


def http_get(port, path, headers=None, cookie=None, timeout=10,
             host="127.0.0.1"):
    """GET path; see http_request()."""
    return http_request("GET", port, path, headers=headers, cookie=cookie,
                        timeout=timeout, host=host)


class HttpSession:
    """A keep-alive HTTP/1.1 connection.  It reconnects only when the
    server closed it at the end of a response; .connects counts the TCP
    connections opened, to assert reuse."""

    def __init__(self, port, host="127.0.0.1", timeout=10):
        self.port = port
        self.host = host
        self.conn = _CountingConnection(host, port, timeout=timeout)

    @property
    def connects(self):
        return self.conn.connects

    def request(self, method, path, body=None, headers=None, cookie=None):
        return _send(self.conn, method, path, body, headers, cookie,
                     self.host, self.port)

    def get(self, path, headers=None, cookie=None):
        return self.request("GET", path, headers=headers, cookie=cookie)

    def close(self):
        self.conn.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def raw_http(port, data, timeout=10, host="127.0.0.1"):
    """Send data (bytes, a whole HTTP/1.x request, unchecked) on a new
    connection and parse the response, for requests http.client refuses
    to build (e.g. headers with control characters)."""
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.sendall(data)
        resp = http.client.HTTPResponse(sock)
        resp.begin()
        body = resp.read()
        return Response(resp.status, resp.reason, resp.msg, body,
                        "HTTP/%d.%d" % divmod(resp.version, 10))


def h2c_get(port, path, cookies, headers=None, timeout=10, host="127.0.0.1"):
    """GET over HTTP/2 with prior knowledge (h2c), sending each item of
    cookies as its own `cookie` header field, as browsers send cookie
    "crumbs" (RFC 9113 8.2.3).  headers: more (name, value) fields.

    It runs curl --http2-prior-knowledge, which sends repeated -H fields as
    separate HTTP/2 fields (checked with curl 7.88.1 against a python3-h2
    server that does not join them: beware, python3-h2 joins received
    cookie crumbs unless normalize_inbound_headers=False).  curl drops the
    blanks that start a value, so a crumb cannot start with one."""
    cmd = ["curl", "--http2-prior-knowledge", "--silent", "--show-error",
           "--max-time", str(timeout), "--dump-header", "-"]
    for name, value in _header_items(headers) + [("cookie", c)
                                                   for c in cookies]:
        # "name:" alone would make curl remove the field; "name;" sends it
        # empty.
        cmd += ["-H", "%s: %s" % (name, value) if value else "%s;" % name]
    with tempfile.NamedTemporaryFile(prefix="h2c-body-") as body_file:
        cmd += ["--output", body_file.name,
                "http://%s:%d%s" % (host, port, path)]
        proc = subprocess.run(cmd, stdin=subprocess.DEVNULL,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              timeout=timeout + 5)
        if proc.returncode != 0:
            raise HarnessError("curl exited %d: %s" % (
                proc.returncode, proc.stderr.decode(errors="replace")))
        body = body_file.read()
    head = proc.stdout.decode("latin-1")
    # Only the last header block counts (were there interim 1xx ones).
    block = head.strip("\r\n").split("\r\n\r\n")[-1]
    status_line, *lines = block.split("\r\n")
    version, status = status_line.split()[:2]
    msg = email.message.Message()
    for line in lines:
        name, _, value = line.partition(":")
        msg[name] = value.strip()
    return Response(int(status), "", msg, body, version)


# ---------------------------------------------------------------------------
# Demo GWE nodes
# ---------------------------------------------------------------------------

class Node:
    """A demo GWE node, test/gwe_node.py, as a child process.

    It prints "READY <port>" once it listens; SIGTERM stops it.  Its stderr
    (and any stdout after READY) goes to .log_path."""

    def __init__(self, name, port=0, script=NODE_SCRIPT, log_dir=None,
                 args=(), start_timeout=10):
        self.name = name
        self.port = port
        self.script = Path(script)
        self.args = list(args)
        self.start_timeout = start_timeout
        self.log_dir = Path(log_dir) if log_dir else None
        self.proc = None
        self.paused = False
        self._log = None

    @property
    def url(self):
        return "http://127.0.0.1:%d" % self.port

    @property
    def pid(self):
        return self.proc.pid if self.proc else None

    @property
    def running(self):
        return self.proc is not None and self.proc.poll() is None

    @property
    def log_path(self):
        if self.log_dir is None:
            return None
        return self.log_dir / ("node-%s.log" % self.name)

    def log(self):
        """What the node wrote to stderr (and stdout after READY)."""
        if self.log_path and self.log_path.exists():
            return self.log_path.read_text(errors="replace")
        return ""

    def start(self):
        if self.running:
            raise HarnessError("node %s is already running" % self.name)
        if not self.script.exists():
            raise HarnessError("node script %s does not exist" % self.script)
        if self.log_dir is None:
            self.log_dir = Path(tempfile.mkdtemp(prefix="gwe-node-"))
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "ab")
        cmd = [PYTHON, str(self.script), "--name", self.name,
               "--port", str(self.port)] + self.args
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE,
                                     stderr=self._log, cwd=str(TEST_DIR))
        self.paused = False
        _started.append(self)
        try:
            port = self._read_ready()
        except Exception:
            self._kill()
            raise
        self.port = port
        # Keep draining stdout, so that a chatty node never blocks on a full
        # pipe; what it prints lands in its log.
        threading.Thread(target=self._drain, args=(self.proc,),
                         daemon=True).start()
        return self

    def _read_ready(self):
        """Read stdout until the READY line, within start_timeout."""
        deadline = time.monotonic() + self.start_timeout
        buf = b""
        fd = self.proc.stdout.fileno()
        while b"\n" not in buf or not re.search(rb"^READY \d+", buf, re.M):
            left = deadline - time.monotonic()
            if left <= 0:
                raise HarnessError(self._failure("no READY line within %ss"
                                                 % self.start_timeout, buf))
            ready, _, _ = select.select([fd], [], [], left)
            if not ready:
                continue
            chunk = os.read(fd, 4096)
            if not chunk:
                self.proc.wait(timeout=5)
                raise HarnessError(self._failure(
                    "exited with status %s before READY"
                    % self.proc.returncode, buf))
            buf += chunk
        match = re.search(rb"^READY (\d+)", buf, re.M)
        port = int(match.group(1))
        if self.port and port != self.port:
            raise HarnessError(self._failure(
                "asked for port %d, got %d" % (self.port, port), buf))
        return port

    def _failure(self, what, stdout):
        self._log.flush()
        return ("node %s (%s) %s\n--- stdout ---\n%s\n--- stderr ---\n%s"
                % (self.name, self.script, what,
                   stdout.decode(errors="replace"), self.log()))

    def _drain(self, proc):
        try:
            for line in proc.stdout:
                with open(self.log_path, "ab") as f:
                    f.write(line)
        except (OSError, ValueError):
            pass

    def signal(self, sig):
        """Send sig (SIGKILL, SIGSTOP, SIGCONT...) to the node process."""
        os.kill(self.proc.pid, sig)
        if sig == signal.SIGSTOP:
            self.paused = True
        elif sig == signal.SIGCONT:
            self.paused = False
        elif sig == signal.SIGKILL:
            self.proc.wait(timeout=10)

    def stop(self, timeout=5):
        """SIGTERM (after SIGCONT if paused), then SIGKILL after timeout."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            if self.paused:
                os.kill(self.proc.pid, signal.SIGCONT)
                self.paused = False
            self.proc.terminate()
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self._kill()
        self._close()

    def _kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self._close()

    def _close(self):
        if self.proc.stdout:
            self.proc.stdout.close()
        if self._log:
            self._log.close()
            self._log = None

    def restart(self):
        """Stop the node and start a new process on the same port."""
        self.stop()
        return self.start()

    def get(self, path, **kw):
        """GET path from the node directly (not through httpd)."""
        return http_get(self.port, path, **kw)

    def alive(self, up):
        """Make /server/isAlive answer up or down."""
        resp = self.get("/_control/alive?state=%s" % ("up" if up else "down"))
        if resp.status != 200:
            raise HarnessError("node %s: /_control/alive -> %s %r"
                               % (self.name, resp.status, resp.body))
        return resp

    def stats(self):
        """The node's /_control/stats, as parsed JSON: {"node", "requests"
        (under /server), "websockets_open", "websockets_total",
        "sessions"}."""
        return self._control("/_control/stats")

    def reset(self):
        """Zero the node's counters; return its stats."""
        return self._control("/_control/reset")

    def _control(self, path):
        resp = self.get(path)
        if resp.status != 200:
            raise HarnessError("node %s: %s -> %s %r"
                               % (self.name, path, resp.status, resp.body))
        return resp.json()

    def __repr__(self):
        return "<Node %s port=%s pid=%s>" % (self.name, self.port, self.pid)


# ---------------------------------------------------------------------------
# Private httpd instances
# ---------------------------------------------------------------------------

# The modules every instance loads, in load order (after the MPM).
BASE_MODULES = ["authz_core", "authz_host", "headers", "proxy", "proxy_http",
                "proxy_balancer", "slotmem_shm", "lbmethod_byrequests",
                "lbmethod_bybusyness", "status"]

# Fields of the access log, tab-separated (parse_access_log() splits them).
ACCESS_FIELDS = [
    ("client", "%h"),
    ("time", "%{%s}t"),
    ("request", "%r"),
    ("status", "%>s"),
    ("bytes", "%B"),
    ("worker_route", "%{BALANCER_WORKER_ROUTE}e"),
    ("session_route", "%{BALANCER_SESSION_ROUTE}e"),
    ("route_changed", "%{BALANCER_ROUTE_CHANGED}e"),
    ("decision", "%{GWE_ROUTE_DECISION}e"),
    ("worker", "%{BALANCER_WORKER_NAME}e"),
    ("node", "%{X-GWE-Node}o"),
    ("cookie", "%{Cookie}i"),
    ("protocol", "%H"),
    ("pid", "%P"),
]

# error_log lines of level warn or worse, or telling of a crashed child.
_BAD_LEVEL = re.compile(r"\[[\w.-]*:(warn|error|crit|alert|emerg)\]")
_CRASH = re.compile(r"segfault|exit signal|child pid \d+ exit")

# error_log lines that every private instance may log and that are not the
# test's fault.  Each entry: (regex, why).
#
# A private instance logs nothing at warn or worse by itself: ServerName
# avoids AH00558 (cannot determine the server's name), start() removes a
# stale pid file, which avoids AH00098 (pid file overwritten), and the
# DocumentRoot is searchable by www-data, which avoids AH00035.
GLOBAL_ALLOWED = [
    # mod_http2 under mpm=prefork, at every (re)start: "AH10034: The mpm
    # module (prefork.c) is not supported by mod_http2" (level warn).  An
    # advisory about the MPM a test chose, not about what it tests.
    (r"\[http2:warn\].* AH10034: ", "mod_http2's prefork advisory"),
    # mpm_event, when stop() (SIGTERM) or a restart makes a child exit while
    # a worker is still finishing a connection: the worker's pollset add
    # for keep-alive (AH03093) or for lingering close (AH03092) fails with
    # EBADF because the listener thread already closed the pollset (level
    # error).  A race in httpd's shutdown, with no effect on any request:
    # it even follows a Connection: close request answered in full.
    (r"\[mpm_event:error\].* \(9\)Bad file descriptor: AH0309[23]: ",
     "mpm_event's pollset race at child exit"),
    # At stop() (SIGTERM), a child still tearing down a proxy tunnel or a
    # pooled backend connection may not exit within httpd's own grace
    # period; the parent then kills it: "AH00046: child process N still did
    # not exit, sending a SIGKILL" (level error), seldom, on a loaded
    # machine.  Shutdown only; every request was answered by then.
    (r"\[core:error\].* AH00046: child process \d+ still did not exit, "
     r"sending a SIGKILL", "a slow child at shutdown"),
]


# The first line of a sanitizer's report written to stderr, which is
# error_log once httpd runs: gcc's UBSan runtime writes there (it ignores
# log_path when ASan is loaded too), and so would ASan with log_path=stderr.
_SANITIZER = re.compile(r"==\d+==ERROR: \w+Sanitizer|"
                        r"SUMMARY: \w+Sanitizer|: runtime error: ")


def _sanitizer_block(lines, i):
    """The report starting at lines[i] in a log: that line and those after
    it up to the next httpd log line ("[..."), at most 120."""
    block = [lines[i]]
    for line in lines[i + 1:i + 120]:
        if line.startswith("["):
            break
        block.append(line)
    return block


def sanitizer_preload():
    """$GWB_APACHE_PRELOAD: the libraries (separated by blanks or colons)
    that apache2, and only apache2, is started with in LD_PRELOAD, e.g. the
    ASan and UBSan runtimes that a module built with -fsanitize needs loaded
    before anything else (test/asan.sh sets it).  "" when not set: then
    nothing here changes."""
    return " ".join(os.environ.get("GWB_APACHE_PRELOAD", "")
                    .replace(":", " ").split())


def _sanitizer_report_dir(root):
    """A new directory for the sanitizer reports of the httpd at root.
    Not under root: pytest's tmp dirs are 0700 root, and ASan opens its
    report file only when it has something to report, in a child that runs
    as www-data.  Under $GWB_SANITIZER_DIR (test/asan.sh makes one per run)
    or the system's temp dir; world-writable, as www-data writes there."""
    base = Path(os.environ.get("GWB_SANITIZER_DIR")
                or Path(tempfile.gettempdir())
                / ("gwb-sanitizer-%d" % os.geteuid()))
    base.mkdir(parents=True, exist_ok=True)
    if base.stat().st_uid == os.geteuid():
        os.chmod(base, 0o755)
    path = Path(tempfile.mkdtemp(prefix="%s-%s-" % (root.parent.name,
                                                    root.name),
                                 dir=str(base)))
    os.chmod(path, 0o777)
    return path


class Httpd:
    """One private httpd: its own ServerRoot (root_dir) with conf/, logs/,
    run/ (DefaultRuntimeDir, PidFile, mutexes), and its own port.

    Typical use:
        h = Httpd(tmp_path / "httpd")
        h.write_config(balancer_block("gwe", nodes, "byrequests") +
                       'ProxyPass "/server" "balancer://gwe"\\n')
        h.start(); http_get(h.port, "/server/about"); h.stop()
    """

    READY_PATH = "/_harness/ready"

    def __init__(self, root_dir, module_path=None, loglevel="warn",
                 mpm="event", modules=(), start_timeout=10):
        self.root = Path(root_dir).resolve()
        if re.search(r"\s", str(self.root)):
            raise HarnessError("root_dir must not contain blanks (Mutex "
                               "file: cannot quote a path)")
        self.module_path = str(module_path) if module_path else None
        self.loglevel = loglevel
        self.mpm = mpm
        self.modules = list(modules)
        self.start_timeout = start_timeout
        self.port = free_port()
        self.extra_ports = []
        self.pid = None
        self._allowed = [re.compile(rx) for rx, _ in GLOBAL_ALLOWED]
        created_httpds.append(self)
        for sub in ("conf", "logs", "run"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        # Where ASan and UBSan write their reports, under GWB_APACHE_PRELOAD
        # (sanitizer_preload()); None otherwise.
        self.sanitizer_dir = (_sanitizer_report_dir(self.root)
                              if sanitizer_preload() else None)

    conf_path = property(lambda self: self.root / "conf" / "httpd.conf")
    pid_path = property(lambda self: self.root / "run" / "httpd.pid")
    error_log_path = property(lambda self: self.root / "logs" / "error_log")
    access_log_path = property(lambda self: self.root / "logs" / "access_log")

    @property
    def url(self):
        return "http://127.0.0.1:%d" % self.port

    # -- configuration ------------------------------------------------------

    def _load_lines(self, body, modules):
        """LoadModule lines: MPM, base modules, extras, then the gwe module;
        minus any module the body loads itself."""
        in_body = set(re.findall(r"^\s*LoadModule\s+(\S+)", body, re.M))
        wanted = ["mpm_" + self.mpm] + BASE_MODULES
        for name in list(self.modules) + list(modules or []):
            if name not in wanted:
                wanted.append(name)
        lines = []
        for name in wanted:
            ident = name + "_module"
            if ident not in in_body:
                lines.append('LoadModule %s "%s"'
                             % (ident, MODULES_DIR / ("mod_%s.so" % name)))
        if self.module_path and "gwe_balancer_module" not in in_body:
            lines.append('LoadModule gwe_balancer_module "%s"'
                         % self.module_path)
        return lines

    def base_config(self, body="", extra_listen=None, modules=None):
        """The config written before the test's body."""
        root = self.root
        listens = ["Listen 127.0.0.1:%d" % self.port]
        for item in extra_listen or []:
            item = str(item)
            listens.append("Listen " + (item if ":" in item
                                        else "127.0.0.1:" + item))
        log_format = "\\t".join(
            ('\\"%s\\"' % fmt) if name in ("request", "cookie") else fmt
            for name, fmt in ACCESS_FIELDS)
        lines = [
            "# Written by test/harness.py: a private httpd, nothing shared "
            "with the system's.",
            'ServerRoot "%s"' % root,
            "ServerName 127.0.0.1",
        ] + listens + [
            'PidFile "%s"' % self.pid_path,
            'DefaultRuntimeDir "%s"' % (root / "run"),
            # File-based mutexes (if any mechanism needs one) live here too.
            # No quotes possible here: httpd takes "file:..." as one word.
            "Mutex file:%s default" % (root / "run"),
            'ErrorLog "%s"' % self.error_log_path,
            "LogLevel %s" % self.loglevel,
            'DocumentRoot "%s"' % _empty_docroot(),
            # Short enough that a hung backend fails a test, not the suite.
            "Timeout 10",
            "KeepAliveTimeout 5",
            "GracefulShutdownTimeout 5",
        ]
        if os.geteuid() == 0:
            lines += ["User www-data", "Group www-data"]
        lines += self._load_lines(body, modules)
        lines += [
            'LogFormat "%s" harness' % log_format,
            # The harness's own readiness probes stay out of the log.
            'CustomLog "%s" harness "expr=%%{REQUEST_URI} !~ m#^/_harness/#"'
            % self.access_log_path,
            # No .htaccess lookups (the compiled-in default is AllowOverride
            # All, and each lookup under pytest's 0700 tmp dirs fails with
            # AH00529 at level crit).
            '<Directory "/">',
            "    AllowOverride None",
            "</Directory>",
        ]
        return "\n".join(lines) + "\n"

    def tail_config(self):
        """The config written after the test's body: the readiness probe,
        answered by mod_status and never proxied.  ProxyPass "!" in a
        Location beats any ProxyPass "/...", and, being the last Location,
        also a <Location "/"> with a ProxyPass in the body."""
        return ('<Location "%s">\n'
                '    ProxyPass "!"\n'
                '    SetHandler server-status\n'
                '    Require ip 127.0.0.1\n'
                '</Location>\n' % self.READY_PATH)

    def write_config(self, body, extra_listen=None, modules=None):
        """Write conf/httpd.conf: the base config, then body.  extra_listen:
        more ports (int) or "addr:port" to listen on; modules: more module
        names ("http2", "proxy_wstunnel"...) to load before the gwe module."""
        self.extra_ports = [int(str(p).rsplit(":", 1)[-1])
                            for p in extra_listen or []]
        text = (self.base_config(body, extra_listen, modules)
                + "\n# --- test body ---\n" + body
                + "\n# --- end of test body ---\n" + self.tail_config())
        self.conf_path.write_text(text)
        return text

    # -- lifecycle ----------------------------------------------------------

    def _cmd(self, *args):
        return [APACHE2, "-d", str(self.root), "-f", str(self.conf_path)] \
            + list(args)

    def _run(self, *args, timeout=30):
        """Run apache2 with args; return (returncode, stdout+stderr).
        Output goes through a file, not a pipe, which the daemon that -k
        start leaves behind could hold open, and so block the read."""
        become_subreaper()
        out_path = self.root / "logs" / "apache2.out"
        with open(out_path, "w+b") as out:
            rc = subprocess.call(self._cmd(*args), stdin=subprocess.DEVNULL,
                                 stdout=out, stderr=subprocess.STDOUT,
                                 timeout=timeout,
                                 env=_apache_env(self.sanitizer_dir))
            out.seek(0)
            return rc, out.read().decode(errors="replace")

    def configtest(self):
        """(returncode, output) of apache2 -t."""
        return self._run("-t")

    def start(self):
        """Start; return once the server answers a request.  Raises
        HarnessError with the output and error_log tail on failure."""
        if not self.conf_path.exists():
            raise HarnessError("write_config() first")
        self._clear_stale_pidfile()
        rc, out = self._run("-k", "start")
        if rc != 0:
            raise HarnessError("apache2 -k start exited %d\n%s"
                               % (rc, self._diagnostics(out)))
        try:
            self.pid = wait_until(self._read_pid, self.start_timeout,
                                  what="the pid file %s" % self.pid_path)
            _started.append(self)
            self.wait_ready()
        except HarnessError as e:
            self.stop()
            raise HarnessError("%s\n%s" % (e, self._diagnostics(out)))
        return self

    def start_expect_failure(self, timeout=None):
        """For startup-failure tests: run apache2 -k start and return
        (returncode, output + error_log).  A failure detected after httpd
        detached shows as returncode 0 and no server answering; if the
        server does come up, it is stopped and HarnessError raised."""
        self._clear_stale_pidfile()
        rc, out = self._run("-k", "start")
        if rc == 0:
            timeout = self.start_timeout if timeout is None else timeout
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                pid = self._read_pid()
                if pid and not pid_alive(pid):
                    break
                # A failure after detaching (post_config) leaves no pid
                # file; httpd says so in error_log.
                if "AH00020: Configuration Failed" in self.error_log():
                    break
                if pid and self._answers():
                    self.pid = pid
                    _started.append(self)
                    self.stop()
                    raise HarnessError("httpd started, though a failure "
                                       "was expected:\n" + out)
                time.sleep(0.05)
            else:
                # Neither up nor down: do not leave it behind.
                pid = self._read_pid()
                if pid:
                    self.pid = pid
                    self.stop()
            reap_apache_zombies()
        return rc, out + self.error_log()

    def wait_ready(self, timeout=None):
        """Wait until the port accepts connections and a request answers."""
        timeout = self.start_timeout if timeout is None else timeout

        def ready():
            if self.pid and not pid_alive(self.pid):
                raise HarnessError("httpd (pid %d) died" % self.pid)
            return self._answers()
        wait_until(ready, timeout, what="httpd on port %d to answer"
                   % self.port)

    def _answers(self):
        if not port_accepts(self.port):
            return False
        try:
            http_get(self.port, self.READY_PATH, timeout=2)
            return True         # any status: it is httpd answering
        except (OSError, http.client.HTTPException):
            return False

    def _clear_stale_pidfile(self):
        """Refuse to start twice; remove a pid file left by a killed
        instance (else httpd warns AH00098, or, should its pid have been
        reused, believes itself running and exits 0)."""
        pid = self._read_pid()
        if pid and self._is_ours(pid):
            raise HarnessError("httpd %s is already running (pid %d)"
                               % (self.root, pid))
        if self.pid_path.exists():
            self.pid_path.unlink()

    def _is_ours(self, pid):
        """pid is alive and an apache2 started with this config."""
        if not pid_alive(pid):
            return False
        try:
            with open("/proc/%d/cmdline" % pid, "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            return False
        return str(self.conf_path).encode() in argv

    def _read_pid(self):
        try:
            return int(self.pid_path.read_text().strip())
        except (OSError, ValueError):
            return None

    @property
    def running(self):
        return bool(self.pid) and self._is_ours(self.pid)

    def child_pids(self):
        """PIDs of the children of the running parent."""
        return [p for p in _group_members(self.pid) if p != self.pid] \
            if self.pid else []

    def stop(self, timeout=10, graceful_timeout=6):
        """Graceful stop (SIGWINCH): once the children have exited, or
        after graceful_timeout, SIGTERM; wait until the parent and its
        children are gone, and SIGKILL the process group if they are not
        gone within timeout after that.

        Why graceful first: on SIGTERM, httpd 2.4.71's event MPM closes the
        sockets of connections that worker threads are still finishing
        (close_worker_sockets()) while those threads free them, and the
        child sometimes dies of SIGSEGV in apr_os_sock_get() (seen about
        once in 150 stops on a loaded machine; no module code on the stack).
        A graceful stop lets the workers finish instead.  The SIGTERM that
        follows finds no child left; it only spares us the parent's
        one-second polls for exited children."""
        pid = self.pid
        if pid is None:
            pid = self._read_pid()
            if not pid or not self._is_ours(pid):
                return          # not started, or the pid file is stale
        # The parent reaps its children before it exits; wait for them too,
        # since a child left behind (e.g. after the parent was killed) would
        # keep the port.  httpd called setsid() when it detached, so its
        # process group is its pid.
        def children_gone():
            return not [p for p in _group_members(pid) if p != pid]

        def gone():
            return not pid_alive(pid) and not _group_members(pid)
        if self._is_ours(pid):
            os.kill(pid, signal.SIGWINCH)
            try:
                wait_until(children_gone, graceful_timeout,
                           what="httpd pid %d's children to stop "
                           "gracefully" % pid)
            except HarnessError:
                pass
            if self._is_ours(pid):
                os.kill(pid, signal.SIGTERM)
        try:
            wait_until(gone, timeout, what="httpd pid %d and its children "
                       "to exit" % pid)
        except HarnessError:
            try:
                os.killpg(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            wait_until(lambda: not pid_alive(pid) and not _group_members(pid),
                       5, what="httpd process group %d to die" % pid)
        reap_apache_zombies()
        self.pid = None

    def _generation_count(self):
        return self.error_log().count("resuming normal operations")

    def _signal_restart(self, sig, timeout):
        if not self.running:
            raise HarnessError("httpd is not running")
        before = self._generation_count()
        os.kill(self.pid, sig)
        try:
            wait_until(lambda: self._generation_count() > before
                       or not pid_alive(self.pid), timeout,
                       what="a new generation")
        except HarnessError as e:
            raise HarnessError("%s\n%s" % (e, self._diagnostics("")))
        if not pid_alive(self.pid):
            raise HarnessError("httpd died on restart\n"
                               + self._diagnostics(""))
        self.wait_ready()

    def graceful(self, timeout=10):
        """Graceful restart (SIGUSR1): re-read the config; return once the
        new generation answers.  The "resuming normal operations" notice is
        logged whatever the LogLevel."""
        self._signal_restart(signal.SIGUSR1, timeout)

    def restart(self, timeout=10):
        """Hard restart (SIGHUP), like graceful()."""
        self._signal_restart(signal.SIGHUP, timeout)

    # -- logs ---------------------------------------------------------------

    def error_log(self):
        try:
            return self.error_log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def access_log(self):
        try:
            return self.access_log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def access_entries(self, count=None, timeout=5):
        """The access log as dicts (see ACCESS_FIELDS; "-" for unset
        fields).  httpd writes a line after sending the response, so with
        count, wait until at least count lines are there."""
        if count is not None:
            wait_until(lambda: len(parse_access_log(self.access_log()))
                       >= count, timeout,
                       what="%d access log lines" % count)
        return parse_access_log(self.access_log())

    def wait_for_log(self, pattern, timeout=5, since=0):
        """Wait until error_log (from offset since) matches pattern; return
        the match."""
        rx = re.compile(pattern)
        return wait_until(lambda: rx.search(self.error_log()[since:]),
                          timeout, what="error_log to match %r" % pattern)

    def allow(self, regex):
        """Accept error_log lines matching regex in unexpected_log_lines()."""
        self._allowed.append(re.compile(regex))

    def unexpected_log_lines(self):
        """error_log lines of level warn or worse, or telling of a crashed
        child, not matched by an allowed regex; then, never allowed, error_log
        lines of a sanitizer report and every sanitizer report file (see
        sanitizer_reports()), each as one entry holding the whole report."""
        bad = []
        lines = self.error_log().splitlines()
        skip_to = 0
        for i, line in enumerate(lines):
            if i < skip_to:
                continue
            if _SANITIZER.search(line):
                block = _sanitizer_block(lines, i)
                bad.append("\n".join(block))
                skip_to = i + len(block)
                continue
            if not (_BAD_LEVEL.search(line) or _CRASH.search(line)):
                continue
            if any(rx.search(line) for rx in self._allowed):
                continue
            bad.append(line)
        for path, text in self.sanitizer_reports():
            bad.append("sanitizer report %s:\n%s" % (path, text))
        return bad

    def sanitizer_reports(self):
        """[(path, text)]: the report files that ASan or UBSan wrote for
        this httpd's processes (parent, children, apache2 -t and -k start)
        under GWB_APACHE_PRELOAD, and the reports in the output of the last
        apache2 command (logs/apache2.out)."""
        reports = []
        # gcc's UBSan runtime ignores log_path when ASan is loaded too, and
        # writes to stderr: error_log for httpd, once it runs (see
        # unexpected_log_lines()), and the output of apache2 itself before.
        out_path = self.root / "logs" / "apache2.out"
        try:
            out = out_path.read_text(errors="replace").splitlines()
        except OSError:
            out = []
        i = 0
        while i < len(out):
            if _SANITIZER.search(out[i]):
                block = _sanitizer_block(out, i)
                reports.append((str(out_path), "\n".join(block)))
                i += len(block)
            else:
                i += 1
        if not self.sanitizer_dir or not self.sanitizer_dir.is_dir():
            return reports
        for path in sorted(self.sanitizer_dir.iterdir()):
            try:
                text = path.read_text(errors="replace")
            except OSError as e:
                text = "(unreadable: %s)" % e
            lines = text.splitlines()
            if len(lines) > 300:
                lines = lines[:300] + ["... (%d more lines in %s)"
                                       % (len(lines) - 300, path)]
            reports.append((str(path), "\n".join(lines)))
        return reports

    def _diagnostics(self, output):
        tail = "\n".join(self.error_log().splitlines()[-40:])
        return ("--- apache2 output ---\n%s\n--- error_log tail (%s) ---\n%s"
                % (output.strip(), self.error_log_path, tail))

    def __repr__(self):
        return "<Httpd %s port=%d pid=%s>" % (self.root, self.port, self.pid)


def _empty_docroot():
    """An empty directory that the www-data children can search, for the
    DocumentRoot.  Even requests that a handler answers (server-status,
    balancer-manager) walk the DocumentRoot, and a docroot under pytest's
    tmp dirs (mode 0700) logs AH00035 "search permissions are missing" at
    level error for each; a missing one warns AH00112 at startup."""
    path = Path(tempfile.gettempdir()) / ("gwb-harness-docroot-%d"
                                          % os.geteuid())
    try:
        path.mkdir(mode=0o755)
    except FileExistsError:
        pass
    st = path.lstat()
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid():
        raise HarnessError("%s is not a directory of ours" % path)
    os.chmod(path, 0o755)
    return path


def _apache_env(sanitizer_dir=None):
    """The environment for apache2: no APACHE_* variables from the caller,
    so that nothing from Debian's envvars setup leaks into a private run.

    Under GWB_APACHE_PRELOAD (see sanitizer_preload()): LD_PRELOAD gets
    those libraries first, and ASAN_OPTIONS and UBSAN_OPTIONS (the caller's,
    passed through) end with log_path= in sanitizer_dir, so that every
    report lands in a file of its own, asan.PID or ubsan.PID.  apache2 -k
    start forks and detaches, and its children fork from it, all without
    exec: they keep this environment, and the runtimes it preloads."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("APACHE_")}
    env.setdefault("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
    env["LANG"] = "C"
    preload = sanitizer_preload()
    if preload:
        env["LD_PRELOAD"] = " ".join(
            filter(None, [preload, env.get("LD_PRELOAD", "")]))
        if sanitizer_dir:
            for var, prefix in (("ASAN_OPTIONS", "asan"),
                                ("UBSAN_OPTIONS", "ubsan")):
                env[var] = ":".join(filter(None, [
                    env.get(var, ""),
                    "log_path=%s" % (Path(sanitizer_dir) / prefix)]))
    return env


def _group_members(pgid):
    """PIDs (not zombies) whose process group is pgid."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % entry) as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        # fields: state ppid pgrp ...
        if int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            pids.append(int(entry))
    return pids


def parse_access_log(text):
    """Lines of the harness access log format as dicts keyed by the names
    in ACCESS_FIELDS."""
    entries = []
    for line in text.splitlines():
        values = line.split("\t")
        if len(values) != len(ACCESS_FIELDS):
            continue
        entry = {}
        for (name, _), value in zip(ACCESS_FIELDS, values):
            if name in ("request", "cookie"):
                value = value[1:-1]
            entry[name] = value
        entries.append(entry)
    return entries


# ---------------------------------------------------------------------------
# Config snippets
# ---------------------------------------------------------------------------

def balancer_block(name, nodes, lbmethod="gwesticky", proxyset="",
                   member_params=""):
    """A <Proxy "balancer://name"> section with one member per node:
    BalancerMember "http://127.0.0.1:PORT/server" route=NODE_NAME.  With
    ProxyPass "/server" "balancer://name", /server/about reaches the node's
    /server/about.  nodes: Node objects or (route, port) pairs; proxyset
    and member_params are appended to ProxySet and to every member."""
    lines = ['<Proxy "balancer://%s">' % name]
    for node in nodes:
        route, port = ((node.name, node.port) if isinstance(node, Node)
                       else node)
        lines.append('    BalancerMember "http://127.0.0.1:%d/server" '
                     'route=%s %s' % (port, route, member_params))
    lines.append("    ProxySet lbmethod=%s %s" % (lbmethod, proxyset))
    lines.append("</Proxy>")
    return "\n".join(line.rstrip() for line in lines) + "\n"


def balancer_manager_block(path="/balancer-manager"):
    """The balancer-manager at path, for 127.0.0.1 only, never proxied: its
    ProxyPass "!" beats any ProxyPass "/...", wherever it stands, but a
    <Location "/"> with a ProxyPass only if it comes after that one."""
    return ('<Location "%s">\n'
            '    ProxyPass "!"\n'
            '    SetHandler balancer-manager\n'
            '    Require ip 127.0.0.1\n'
            '</Location>\n' % path)


def worker_url(node, path="/server"):
    """The member URL balancer_block() gives node (a Node or a port)."""
    port = node.port if isinstance(node, Node) else int(node)
    return "http://127.0.0.1:%d%s" % (port, path)


class BalancerManager:
    """Drives mod_proxy_balancer's balancer-manager as httpd 2.4.71 expects:

    - GET parameters are limited to b, w, nonce and xml, so every change is
      a POST, with b, w and nonce in the form body (the query string of a
      POST is ignored);
    - any parameter is dropped (with an AH10187 error in the log) unless
      the Referer's host equals the request's server name, so every request
      sends a Referer of the manager's own URL;
    - the nonce is per balancer (links "?b=NAME&amp;nonce=UUID");
    - the handler reads at most 1024 bytes of the POST body in one read;
    - form values are URL-decoded twice;
    - a member can be added (b_nwrkr, b_wyes=1) only into a free slot, and
      a balancer has none unless configured with ProxySet growth=N (or
      BalancerGrowth N); the member then starts disabled."""

    def __init__(self, port, path="/balancer-manager", host="127.0.0.1"):
        self.port = port
        self.path = path
        self.host = host

    @property
    def _referer(self):
        return "http://%s:%d%s" % (self.host, self.port, self.path)

    def _get(self, query=""):
        resp = http_get(self.port, self.path + query, host=self.host,
                        headers={"Referer": self._referer})
        if resp.status != 200:
            raise HarnessError("GET %s%s -> %s" % (self.path, query,
                                                   resp.status))
        return resp

    def page(self):
        """The manager's HTML page."""
        return self._get().text

    def nonce(self, balancer):
        """The nonce of balancer (its name without balancer://)."""
        m = re.search(r"\?b=%s&amp;nonce=([^\"&]+)\"" % re.escape(balancer),
                      self.page())
        if not m:
            raise HarnessError("no nonce for balancer %r on the manager page"
                               % balancer)
        return html.unescape(m.group(1))

    def status(self):
        """Balancers from the XML view: {name (no balancer://): {"lbmethod":
        str, "members": {worker url: {"route", "status", "elected", ...}}}}.
        status is httpd's flag text, e.g. "Init Ok " or "Init Dis "."""
        root = ET.fromstring(self._get("?xml=1").body)
        ns = {"h": "http://httpd.apache.org"}
        result = {}
        for b in root.iterfind("h:balancers/h:balancer", ns):
            name = b.findtext("h:name", "", ns).split("balancer://", 1)[-1]
            members = {}
            for w in b.iterfind("h:workers/h:worker", ns):
                members[w.findtext("h:name", "", ns)] = {
                    child.tag.split("}", 1)[1]: (child.text or "")
                    for child in w}
            result[name] = {"lbmethod": b.findtext("h:lbmethod", "", ns),
                            "members": members}
        return result

    def member(self, balancer, url):
        """One member's fields (see status())."""
        return self.status()[balancer]["members"][url]

    def update(self, balancer, worker=None, **params):
        """POST params (w_*, b_*) for balancer, and worker (its URL) if
        given; return the response page."""
        form = {"b": balancer, "nonce": self.nonce(balancer)}
        if worker is not None:
            form["w"] = worker
        form.update({k: str(v) for k, v in params.items()})
        body = urllib.parse.urlencode(form).encode()
        if len(body) > 1024:
            raise HarnessError("balancer-manager reads only 1024 bytes of "
                               "form data")
        resp = http_request(
            "POST", self.port, self.path, body=body, host=self.host,
            headers={"Referer": self._referer,
                     "Content-Type": "application/x-www-form-urlencoded"})
        if resp.status != 200:
            raise HarnessError("balancer-manager update %r -> %s\n%s"
                               % (form, resp.status, resp.text[:2000]))
        return resp

    def set_status(self, balancer, worker, drain=None, disabled=None,
                   stopped=None, hot_standby=None, ignore_errors=None):
        """Set (True) or clear (False) a member's status flags; None leaves
        a flag as it is."""
        flags = {"w_status_N": drain, "w_status_D": disabled,
                 "w_status_S": stopped, "w_status_H": hot_standby,
                 "w_status_I": ignore_errors}
        params = {k: int(v) for k, v in flags.items() if v is not None}
        return self.update(balancer, worker, **params)

    def disable(self, balancer, worker):
        return self.set_status(balancer, worker, disabled=True)

    def enable(self, balancer, worker):
        return self.set_status(balancer, worker, disabled=False,
                               drain=False, stopped=False)

    def drain(self, balancer, worker, on=True):
        return self.set_status(balancer, worker, drain=on)

    def set_route(self, balancer, worker, route):
        return self.update(balancer, worker, w_wr=route)

    def set_lbmethod(self, balancer, lbmethod):
        """Change the balancer's lbmethod (b_lbm); an unknown name is
        silently ignored by httpd, so this checks that it took."""
        resp = self.update(balancer, b_lbm=lbmethod)
        actual = self.status()[balancer]["lbmethod"]
        if actual != lbmethod:
            raise HarnessError("lbmethod of %s is %r after setting %r"
                               % (balancer, actual, lbmethod))
        return resp

    def add_member(self, balancer, url, route=None, enable=True):
        """Add a member (b_nwrkr, b_wyes=1); httpd adds it disabled, so
        then set its route and enable it unless told not to.  The balancer
        needs a free slot (ProxySet growth=N)."""
        # The balancer's edit form offers b_nwrkr only while a slot is free.
        form = self._get("?b=%s&nonce=%s" % (balancer, self.nonce(balancer)))
        if "b_nwrkr" not in form.text:
            raise HarnessError("balancer %s has no free member slot: "
                               "configure ProxySet growth=N" % balancer)
        self.update(balancer, b_nwrkr=url, b_wyes=1)
        if url not in self.status()[balancer]["members"]:
            raise HarnessError("member %s was not added to %s"
                               % (url, balancer))
        params = {}
        if route is not None:
            params["w_wr"] = route
        if enable:
            params["w_status_D"] = 0
        if params:
            self.update(balancer, url, **params)
