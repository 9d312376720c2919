"""Debian's Prometheus (/usr/bin/prometheus) as a private scraper: its own
config file and storage under a directory of the test's, on 127.0.0.1 and a
free port, scraping httpd's /metrics every second; queried through its HTTP
API as a dashboard or an alerting rule would."""

import json
import os
import subprocess
import time
import urllib.parse
from pathlib import Path

from .base import HarnessError, free_port, wait_until
from .clients import http_get
from .processes import _started

PROMETHEUS = "/usr/bin/prometheus"
PROMTOOL = "/usr/bin/promtool"


def missing_prometheus():
    """The Prometheus tools that are not installed (Debian's prometheus
    package ships both)."""
    return [path for path in (PROMETHEUS, PROMTOOL)
            if not os.access(path, os.X_OK)]


def run_promtool(*args, input=None):
    """(exit status, stdout and stderr) of promtool ARGS, with input (bytes)
    on its stdin, or none."""
    proc = subprocess.run([PROMTOOL, *map(str, args)], input=input,
                          stdin=None if input is not None
                          else subprocess.DEVNULL,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          timeout=120)
    return proc.returncode, proc.stdout.decode(errors="replace")


class Prometheus:
    """One Prometheus scraping targets ("host:port", each path /metrics) as
    job "gwe-balancer", every second.  Stopped by its own PID."""

    JOB = "gwe-balancer"

    def __init__(self, root, targets, metrics_path="/metrics",
                 start_timeout=60):
        self.root = Path(root)
        self.targets = list(targets)
        self.metrics_path = metrics_path
        self.start_timeout = start_timeout
        self.port = free_port()
        self.proc = None
        self._log = None

    config_path = property(lambda self: self.root / "prometheus.yml")
    log_path = property(lambda self: self.root / "prometheus.log")

    def write_config(self):
        # JSON is YAML: no YAML library needed.
        config = {
            "global": {"scrape_interval": "1s", "scrape_timeout": "1s",
                       "evaluation_interval": "1s"},
            "scrape_configs": [{
                "job_name": self.JOB,
                "metrics_path": self.metrics_path,
                "static_configs": [{"targets": self.targets}],
            }],
        }
        self.config_path.write_text(json.dumps(config, indent=2) + "\n")

    def start(self):
        """Start; return once it is ready and has scraped every target."""
        self.root.mkdir(parents=True, exist_ok=True)
        self.write_config()
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [PROMETHEUS, "--config.file=%s" % self.config_path,
             "--storage.tsdb.path=%s" % (self.root / "data"),
             "--web.listen-address=127.0.0.1:%d" % self.port],
            stdin=subprocess.DEVNULL, stdout=self._log,
            stderr=subprocess.STDOUT, cwd=str(self.root))
        _started.append(self)
        try:
            wait_until(self._ready, self.start_timeout,
                       what="Prometheus on port %d to be ready" % self.port)
            self.wait_scraped(time.time())
        except HarnessError as e:
            self.stop()
            raise HarnessError("%s\n--- %s ---\n%s" % (e, self.log_path,
                                                        self.log()))
        return self

    def _ready(self):
        if self.proc.poll() is not None:
            raise HarnessError("prometheus exited with status %s"
                               % self.proc.returncode)
        try:
            return http_get(self.port, "/-/ready", timeout=2).status == 200
        except OSError:
            return False

    def stop(self, timeout=10):
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        if self._log:
            self._log.close()
            self._log = None

    def log(self):
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    @staticmethod
    def selector(metric, **labels):
        """metric{name="value",...}, each value a PromQL string (JSON's
        escapes are PromQL's)."""
        return "%s{%s}" % (metric, ",".join(
            "%s=%s" % (name, json.dumps(value))
            for name, value in sorted(labels.items())))

    def query(self, expr):
        """An instant query through /api/v1/query: [(labels dict, the
        query's evaluation time, value as float)]."""
        resp = http_get(self.port, "/api/v1/query?" + urllib.parse.urlencode(
            {"query": expr}))
        answer = resp.json()
        if resp.status != 200 or answer.get("status") != "success":
            raise HarnessError("query %r -> %s %s" % (expr, resp.status,
                                                      resp.text[:500]))
        if answer["data"]["resultType"] != "vector":
            raise HarnessError("query %r: not a vector: %r" % (expr, answer))
        return [(item["metric"], float(item["value"][0]),
                 float(item["value"][1]))
                for item in answer["data"]["result"]]

    def wait_scraped(self, since, timeout=30):
        """Wait until every target has been scraped, successfully, by a
        scrape that started at or after since (time.time() seconds): a
        sample's timestamp is its scrape's start (a query's own time is
        when it was evaluated)."""
        up = self.selector("up", job=self.JOB)

        def scraped():
            started = self.query("timestamp(%s) and %s == 1" % (up, up))
            return (len(started) == len(self.targets)
                    and all(t >= since for _, _, t in started))
        wait_until(scraped, timeout, interval=0.1,
                   what="Prometheus to scrape %s after %.3f"
                   % (self.targets, since))

    def values(self, expr, label_names, since=None):
        """{tuple of the label values: value} of expr's series, from a
        scrape that started at or after since (default: now): so every
        request answered before this call is counted."""
        self.wait_scraped(time.time() if since is None else since)
        return {tuple(labels.get(n, "") for n in label_names): value
                for labels, _, value in self.query(expr)}

    def __repr__(self):
        return "<Prometheus port=%d pid=%s>" % (
            self.port, self.proc.pid if self.proc else None)
