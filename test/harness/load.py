"""A small load generator for the fault and soak tests: threads that send
cookie-carrying GETs through the balancer, each thread as one visitor of one
node (or with no cookie), and record what came back.

Like a browser or the CometD client, a visitor retries a failed idempotent
GET, up to twice, after a short pause (CometD backs off likewise); both the
first failures and the failures left after the retries are counted, per
phase.  Bounded: it stops when told to, or after max_seconds.
"""

import http.client
import threading
import time

from .clients import http_get

# A visitor's retries of a failed GET, and the pause before each: the time a
# node just killed needs to be noticed by every httpd child holding a pooled
# connection to it.
RETRIES = 2
RETRY_PAUSE = 0.2


class Phase:
    """Counts for one stretch of the run."""

    def __init__(self, name):
        self.name = name
        self.requests = 0
        self.first_errors = 0      # failed before the visitor's retry
        self.errors = 0            # failed even after the retry
        self.timeouts = 0          # ... of which waited out the timeout
        self.misroutes = []        # (cookie node, answering node)
        self.error_kinds = {}      # status or exception -> count
        self.latencies = []

    def summary(self):
        lat = sorted(self.latencies) or [0.0]
        return ("%-14s %6d requests, %4d first-try errors, %d after retry "
                "(%d timeouts), %d misrouted, p50 %.1f ms, max %.0f ms%s"
                % (self.name, self.requests, self.first_errors, self.errors,
                   self.timeouts,
                   len(self.misroutes), 1000 * lat[len(lat) // 2],
                   1000 * lat[-1],
                   " %s" % self.error_kinds if self.error_kinds else ""))


class LoadGenerator:
    """visitors: a list of node names (or None for no cookie), one thread
    each.  healthy(name) tells whether a node is up right now: an answer for
    a healthy node's cookie from any other node is a misroute."""

    def __init__(self, port, visitors, healthy, timeout=90, max_seconds=600,
                 server_timeout=None):
        self.port = port
        # An error after at least this long is the balancer's documented
        # timeout answering (e.g. for a node that froze mid-request).
        self.server_timeout = server_timeout
        self.visitors = visitors
        self.healthy = healthy
        self.timeout = timeout
        self.deadline = time.monotonic() + max_seconds
        self.phases = []
        self.phase = self.new_phase("start")
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._visit, args=(v,),
                                          daemon=True) for v in visitors]

    def new_phase(self, name):
        phase = Phase(name)
        self.phases.append(phase)
        self.phase = phase
        return phase

    def start(self):
        for t in self._threads:
            t.start()
        return self

    def stop(self):
        self._stop.set()
        for t in self._threads:
            t.join(self.timeout + 10)

    def _get(self, cookie):
        try:
            r = http_get(self.port, "/server/about", cookie=cookie,
                         timeout=self.timeout)
            return r.status, r.node
        except (OSError, http.client.HTTPException) as e:
            return type(e).__name__, None

    def _visit(self, node):
        cookie = "GWROUTEID=." + node if node else None
        while not self._stop.is_set() and time.monotonic() < self.deadline:
            phase = self.phase
            began = time.monotonic()
            status, answered = self._get(cookie)
            first_failed = status != 200
            if first_failed:
                first_status = status
                for _ in range(RETRIES):
                    time.sleep(RETRY_PAUSE)
                    status, answered = self._get(cookie)
                    if status == 200:
                        break
            elapsed = time.monotonic() - began
            timed_out = (self.server_timeout is not None
                         and elapsed >= self.server_timeout)
            with self._lock:
                phase.requests += 1
                phase.latencies.append(elapsed)
                phase.first_errors += first_failed
                if first_failed:
                    kinds = phase.error_kinds
                    kinds[first_status] = kinds.get(first_status, 0) + 1
                if status != 200:
                    phase.errors += 1
                    phase.timeouts += timed_out
                elif node and answered != node and self.healthy(node):
                    phase.misroutes.append((node, answered))

    def report(self):
        return "\n".join(p.summary() for p in self.phases)
