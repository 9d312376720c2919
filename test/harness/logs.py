"""Logs: the access log format every private httpd writes and its parser,
which error_log lines fail a test (and which every test may see), and the
reports of AddressSanitizer and UBSan under test/asan.sh."""

import os
import re
import tempfile
from pathlib import Path

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
BAD_LEVEL = re.compile(r"\[[\w.-]*:(warn|error|crit|alert|emerg)\]")
CRASH = re.compile(r"segfault|exit signal|child pid \d+ exit")

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


# What httpd itself logs when a member is unreachable or all are refused:
# tests that stop, kill or refuse a node allow these.
CONNECT_ERRORS = [r"AH00957", r"AH00959", r"AH01114", r"AH02454",
                  r"AH00940", r"AH10159"]


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



# The first line of a sanitizer's report written to stderr, which is
# error_log once httpd runs: gcc's UBSan runtime writes there (it ignores
# log_path when ASan is loaded too), and so would ASan with log_path=stderr.
SANITIZER = re.compile(r"==\d+==ERROR: \w+Sanitizer|"
                        r"SUMMARY: \w+Sanitizer|: runtime error: ")


def sanitizer_block(lines, i):
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


def sanitizer_report_dir(root):
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
