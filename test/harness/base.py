"""What every part of the harness shares: the paths, HarnessError, and
waiting for a condition or a port."""

import socket
import time
from pathlib import Path

TEST_DIR = Path(__file__).resolve().parent.parent
REPO_DIR = TEST_DIR.parent
PYTHON = "/usr/bin/python3"          # not the python3 first on PATH
APACHE2 = "/usr/sbin/apache2"
MODULES_DIR = Path("/usr/lib/apache2/modules")
NODE_SCRIPT = TEST_DIR / "gwe_node.py"
MODULE_SO = REPO_DIR / ".libs" / "mod_gwe_balancer.so"

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

