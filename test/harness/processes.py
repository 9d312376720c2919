"""Processes: the demo GWE node (test/gwe_node.py) as a child process, and
the bookkeeping that stops, by their own PIDs, whatever the harness started
(an httpd, as a last resort, by its own process group, which httpd creates
when it detaches)."""

import os
import re
import select
import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path

from .base import NODE_SCRIPT, PYTHON, TEST_DIR, HarnessError
from .clients import http_get

# Every Node and Httpd ever started, so that stop_all() can clean up after
# a test that forgot to (or crashed before it could).
_started = []
# Every Httpd ever made, so that a test's teardown can check the logs of
# those it made, however it made them.
created_httpds = []


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



def group_members(pgid):
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

