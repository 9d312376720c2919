#!/usr/bin/python3
"""Capacity benchmark (issue #15): how many GWE visitors one balancer
holds, the shipped httpd config against its event-MPM variant, tuned nginx
and HAProxy.  A benchmark, not a test: it is not in the test suite.

Debian packages it needs: apache2, nginx-light (or nginx), haproxy; and
the module, built with `make -f Makefile.apxs`.  Run as root (it raises
the open-files limit and, for its run, kernel.pid_max: see below), with
Debian's interpreter:

    /usr/bin/python3 bench/capacity.py [--quick]
        [--lb httpd,httpd-event,nginx,haproxy] [--mix ws,mixed,lp]
        [--steps 5000,10000,20000,30000] [--hold 45]
        [--max-visitors 24000] [--probe 1000] [--json results.json]

For each mix (ws: every visitor keeps a WebSocket; lp: every visitor
long-polls; mixed: 70% WebSocket, 30% long-poll) and balancer (LB), in
that order, it starts two GWE-like nodes (bench/node.py, CometD
stand-ins that hold a long-poll up to 30 s), the LB in front of them on
127.0.0.1, and client processes (bench/visitor.py, each from its own
source address 127.0.0.2, .3, ...: one address has only ~28,000 ports to
the LB).  It then adds visitors step by step (--steps, the total at each
step) in one run, without restarting anything: each step's new visitors
load a page, handshake CometD and settle into their WebSocket or
long-poll (see visitor.py), and then all of them are held for --hold
seconds (CometD's 30 s heartbeat crosses every WebSocket, application
messages every 30 to 60 s per visitor, at random phases).  Per step:

  * visitors held at the end of the hold, errors (failed visitors and
    messages, by kind), misroutes (an answer from another node than the
    visitor's cookie names, or its "402::Unknown client");
  * the application message's round trip p50/p99 in the hold (WebSocket:
    visitor -> LB -> node -> back; long-poll: the POST until its echo
    arrives on the visitor's long-poll), as a probe measures it: one more
    client process with --probe (1,000) of the visitors, at nice
    --probe-nice (-5), while the load processes run at nice --load-nice
    (10).  Generator, nodes and LB share this machine's cores; the nice
    levels give the LB and the nodes the CPU first, as a balancer of its
    own would have it, and keep the probe's own wait for a core out of
    its figure.  The p99 over every visitor (the load processes' too) is
    reported beside it;
  * LB memory per visitor: PSS summed over the LB's processes
    (/proc/PID/smaps_rollup) at the end of the hold, minus the idle LB's,
    over the visitors held; LB CPU per visitor: user + system time of its
    processes in the hold, over visitors and seconds (µs per visitor per
    second); the generator's and the nodes' CPU the same way;
  * the load average, the machine's tasks (threads) and MemAvailable.

A step with an error, a misroute or fewer visitors held than asked for is
the last: the benchmark says which limit stopped the LB, from its logs,
its own counters and the machine's (threads: MaxRequestWorkers reached,
connections queued; file descriptors; memory; kernel.pid_max;
kernel.threads-max; a cgroup's pids.max; HAProxy's maxconn; nginx's
worker_connections), or that the generator did (client ports, open
files: then the run is not a measurement of the LB).

System limits: each httpd thread is a kernel task, and kernel.pid_max
(the kernel's default is 32768) caps the tasks of the whole machine; when
the largest step's threads would not fit beside the machine's other
tasks, this script raises it to 4194304 for its run, says so, and
restores it on exit.  Nothing else of the system is changed.  Every
process it starts is stopped by its PID on the way out, also on Ctrl-C.
Exit status 1 if the shipped httpd missed one of the issue's targets
(20,000 WebSocket visitors with no error or misroute; 30,000 mixed
visitors with a message p99 under 100 ms) in a run with that step.
"""

import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import benchlib
from benchlib import (BENCH_DIR, NODE_SCRIPT, PYTHON, cpu_seconds, harness,
                      memory, process_tree, tail)
from harness import http_get, wait_until
from ws_capacity import Clients, lb_status, merge_errors, percentile, \
    settled

HAPROXY = "/usr/sbin/haproxy"
NODE_NAMES = ("GWE_Node_1", "GWE_Node_2")
MIXES = {"ws": 100, "mixed": 70, "lp": 0}          # % of WebSocket visitors
LBS = ("httpd", "httpd-event", "nginx", "haproxy")
PID_MAX = Path("/proc/sys/kernel/pid_max")
PID_MAX_RAISED = 4194304
EVENT_MPM = "LoadModule mpm_event_module %s/mod_mpm_event.so" \
    % harness.MODULES_DIR


def log(msg):
    print("[capacity %s] %s" % (time.strftime("%H:%M:%S"), msg),
          file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------
# The machine: its limits, its load
# ---------------------------------------------------------------------------

def read_number(path):
    try:
        return int(Path(path).read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


class SystemLimits:
    """The kernel settings this run raises, and their restoring."""

    def __init__(self):
        self.raised = []            # (path, old value, new value)

    def raise_pid_max(self, tasks):
        """Raise kernel.pid_max if tasks more than the machine runs now
        would not fit (other processes' tasks come and go: a margin)."""
        old = read_number(PID_MAX)
        need = machine_state()["tasks"] + tasks
        if old is not None and old < need * 1.2 and old < PID_MAX_RAISED:
            PID_MAX.write_text("%d\n" % PID_MAX_RAISED)
            self.raised.append((PID_MAX, old, PID_MAX_RAISED))
            log("raised kernel.pid_max from %d to %d for this run (each "
                "httpd thread is a task); restored on exit"
                % (old, PID_MAX_RAISED))

    def restore(self):
        for path, old, _ in self.raised:
            path.write_text("%d\n" % old)
            log("restored %s to %d" % (path, old))
        self.raised = []

    def described(self):
        return ["kernel.%s %d -> %d" % (path.name, old, new)
                for path, old, new in self.raised]


def machine_state():
    """Load average, tasks (threads) of the machine, MemAvailable."""
    load = Path("/proc/loadavg").read_text().split()
    mem = read_number_field("/proc/meminfo", "MemAvailable")
    return {"load1": float(load[0]),
            "tasks": int(load[3].split("/")[1]),
            "mem_available_mib": mem // 1024 if mem else None}


def read_number_field(path, field):
    with open(path) as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return None


def machine_info():
    """What the README's tables need to say about the box."""
    def first_line(cmd):
        try:
            out = subprocess.run(cmd, capture_output=True, text=True,
                                 timeout=10)
            return (out.stdout or out.stderr).strip().splitlines()[0]
        except (OSError, IndexError, subprocess.SubprocessError):
            return None
    cpu = [line.split(":", 1)[1].strip()
           for line in Path("/proc/cpuinfo").read_text().splitlines()
           if line.startswith("model name")]
    release = dict(line.split("=", 1) for line in
                   Path("/etc/os-release").read_text().splitlines()
                   if "=" in line)
    return {
        "cores": os.cpu_count(), "cpu": cpu[0] if cpu else None,
        "mem_gib": round(read_number_field("/proc/meminfo", "MemTotal")
                         / 1048576, 1),
        "kernel": os.uname().release,
        "os": release.get("PRETTY_NAME", "").strip('"'),
        "httpd": first_line([harness.APACHE2, "-v"]),
        "nginx": first_line([benchlib.NGINX, "-v"]),
        "haproxy": first_line([HAPROXY, "-v"]),
        "pid_max": read_number(PID_MAX),
        "threads_max": read_number("/proc/sys/kernel/threads-max"),
        "ip_local_port_range":
            Path("/proc/sys/net/ipv4/ip_local_port_range").read_text()
            .split(),
    }


# ---------------------------------------------------------------------------
# The nodes and the balancers
# ---------------------------------------------------------------------------

def node(name, workdir, poll_hold):
    """A GWE-like node (bench/node.py) whose long-polls wait poll_hold."""
    port = harness.free_port()
    return benchlib.Server(name, [PYTHON, NODE_SCRIPT, "--name", name,
                                  "--port", port, "--poll-hold", poll_hold],
                           port, Path(workdir) / ("%s.log" % name))


def shipped_knows_max_visitors():
    """Whether the shipped config sizes itself by GWE_MAX_VISITORS."""
    return "GWE_MAX_VISITORS" in harness.SHIPPED_CONF.read_text()


def haproxy_maxconn(nofile):
    """The most connections HAProxy can take within nofile open files: it
    refuses to start when maxconn needs more than it may have (two
    sockets per connection, and a few of its own)."""
    return (nofile - 100) // 2


def haproxy_capacity(prefix, nodes, maxconn):
    """HAProxy running bench/haproxy/capacity.cfg under prefix, in the
    foreground (-db)."""
    prefix = Path(prefix)
    prefix.mkdir(parents=True, exist_ok=True)
    port = harness.free_port()
    text = (BENCH_DIR / "haproxy" / "capacity.cfg").read_text()
    values = {"PORT": port, "PREFIX": prefix, "MAXCONN": maxconn,
              "NODE1": "127.0.0.1:%d" % nodes[0].port,
              "NODE2": "127.0.0.1:%d" % nodes[1].port}
    for key, value in values.items():
        text = text.replace("@%s@" % key, str(value))
    conf = prefix / "haproxy.cfg"
    conf.write_text(text)
    return benchlib.Server("haproxy", [HAPROXY, "-f", conf, "-db"], port,
                           prefix / "haproxy.out")


def start_lb(name, workdir, nodes, args, nofile):
    """The LB called name, started, in front of nodes."""
    if name.startswith("httpd"):
        lb = harness.ShippedHttpd(workdir / name, args.module, nodes)
        if name == "httpd-event":
            # Before the config: its mpm_worker LoadModule is inside
            # <IfModule !mpm_event_module>.
            lb.directives.append(EVENT_MPM)
        if shipped_knows_max_visitors():
            lb.defines["GWE_MAX_VISITORS"] = str(args.max_visitors)
        lb.start_timeout = 60
        return lb.start()
    if name == "nginx":
        lb = benchlib.nginx("nginx", "capacity.conf", workdir / "nginx",
                            NOFILE=nofile, WORKERS=args.nginx_workers,
                            NODE1="127.0.0.1:%d" % nodes[0].port,
                            NODE2="127.0.0.1:%d" % nodes[1].port)
    else:
        lb = haproxy_capacity(workdir / "haproxy", nodes,
                              args.haproxy_maxconn or haproxy_maxconn(nofile))
    lb.start()
    wait_until(lambda: http_get(lb.port, "/server/isAlive").status == 200,
               30, what="%s to reach a node" % name)
    return lb


def haproxy_info(lb):
    """HAProxy's "show info" counters (CurrConns, Maxconn, ...)."""
    sock_path = lb.log_path.parent / "stats.sock"
    try:
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(10)
            sock.connect(str(sock_path))
            sock.sendall(b"show info\n")
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
    except OSError:
        return {}
    wanted = ("CurrConns", "Maxconn", "MaxconnReached", "CumConns",
              "Ulimit-n", "Maxsock")
    return {k: int(v) for k, v in re.findall(r"^(\w[\w-]*): (\d+)$",
                                               data.decode(), re.M)
            if k in wanted}


def lb_counters(name, lb):
    """The LB's own view of its load; {} when it cannot answer (httpd
    serves server-status from the same threads the visitors hold)."""
    if name.startswith("httpd"):
        try:
            return lb_status(lb)
        except Exception as e:      # timeout, refused, reset
            return {"server-status": "no answer (%s)" % type(e).__name__}
    if name == "haproxy":
        return haproxy_info(lb)
    return {}


def lb_logs(name, lb):
    """The LB's error output so far."""
    paths = {lb.error_log_path}
    if name in ("nginx", "haproxy"):
        paths.add(lb.log_path)
    return "\n".join(Path(p).read_text(errors="replace")
                     for p in paths if Path(p).exists())


# ---------------------------------------------------------------------------
# The load generator's processes
# ---------------------------------------------------------------------------

class Visitors(Clients):
    """Client processes (bench/visitor.py), one per source address, the
    visitors dealt out round robin; driven as ws_capacity.py's clients
    are, with JSON commands.  Each command goes to all; each answers with
    one JSON line.

    The load processes run at nice --load-nice: on this machine they
    share the cores with the balancer and the nodes, and would otherwise
    take the CPU a balancer has to itself on a machine of its own.  The
    round trips reported are a probe's: one more process (the last) with
    --probe of the visitors, the same visitors as the rest, at nice
    --probe-nice, so that its own wait for a core is not in the balancer's
    figure.  The load processes' round trips are reported beside them."""

    def __init__(self, workdir, port, args):
        self.procs, self.logs = [], []
        self.probe = args.probe
        for k in range(args.clients + (1 if self.probe else 0)):
            is_probe = k == args.clients
            settings = {
                "port": port, "source": "127.0.0.%d" % (k + 2),
                # The probe's visitors are numbered 0, 1, ...: its share
                # of WebSocket and long-poll visitors is the mix's.
                "first": 0 if is_probe else k,
                "stride": 1 if is_probe else args.clients,
                "ws_percent": args.ws_percent,
                "heartbeat": args.heartbeat,
                "message_min": args.message[0],
                "message_max": args.message[1],
                "poll_hold": args.poll_hold,
                "in_flight": args.in_flight, "timeout": args.timeout,
                "seed": k + 1}
            self.logs.append(workdir / ("%s.log" % (
                "probe" if is_probe else "visitor-%d" % k)))
            self.procs.append(self._spawn(
                settings, self.logs[-1], "visitor.py",
                args.probe_nice if is_probe else args.load_nice))

    def ask(self, command, event, timeout):
        """Send command to every client; their answers (event)."""
        self.send_each([command] * len(self.procs))
        return self.wait_for(event, timeout)

    def send_each(self, commands):
        for proc, command in zip(self.procs, commands):
            proc.stdin.write(json.dumps(command).encode() + b"\n")
            proc.stdin.flush()

    def target(self, visitors, timeout):
        """Have visitors in all: the probe its own (at most half of
        them), each load process its share of the rest."""
        probe = min(self.probe, visitors // 2)
        k = len(self.procs) - (1 if self.probe else 0)
        load = visitors - probe
        self.send_each([{"cmd": "target",
                         "visitors": load // k + (1 if i < load % k
                                                  else 0)}
                        for i in range(k)]
                       + ([{"cmd": "target", "visitors": probe}]
                          if self.probe else []))
        return self.wait_for("reached", timeout)

    def probe_reports(self, reports):
        """Of every client's reports (in self.procs' order), the ones
        whose round trips are reported: the probe's, or all without."""
        return reports[-1:] if self.probe else reports

    def close(self, timeout=60):
        try:
            self.ask({"cmd": "close"}, "closed", timeout)
        except (RuntimeError, OSError) as e:
            log("clients did not close cleanly: %s" % str(e)[:200])
        self.stop()


def totals(reports):
    """One tally over all clients' reports."""
    kinds, samples = merge_errors(reports)
    return {
        "held": sum(r["held"] for r in reports),
        "errors": sum(kinds.values()), "error_kinds": kinds,
        "error_samples": samples,
        "misroutes": sum(r["misroutes"] for r in reports),
        "misroute_samples": [s for r in reports
                             for s in r["misroute_samples"]][:5],
        "rtts_ms": [x for r in reports for x in r["rtts_ms"]],
        "heartbeats": sum(r["heartbeats"] for r in reports),
        "polls": sum(r["polls"] for r in reports),
        "retries": sum(r.get("retries", 0) for r in reports),
        "cpu_seconds": sum(r["cpu_seconds"] for r in reports),
        "ramp_seconds": max(r.get("seconds", 0) for r in reports),
        "reports": reports,
    }


# ---------------------------------------------------------------------------
# What stopped it
# ---------------------------------------------------------------------------

LOG_LIMITS = [
    (r"reached MaxRequestWorkers", "threads: MaxRequestWorkers reached, "
     "connections queued"),
    (r"scoreboard is full|ServerLimit", "process slots: ServerLimit"),
    (r"Too many open files|EMFILE", "file descriptors"),
    (r"Cannot allocate memory|Out of memory|ENOMEM", "memory"),
    (r"Resource temporarily unavailable.*thread|unable to create worker "
     r"thread|fork: Resource temporarily", "threads: the kernel refused a "
     "thread (pid_max, threads-max or pids.max)"),
    (r"worker_connections are not enough", "nginx worker_connections"),
    (r"Cannot assign requested address|EADDRNOTAVAIL",
     "the LB's source ports to the nodes"),
    (r"maxconn", "HAProxy maxconn"),
]


def diagnose(name, lb, step, logs_before, nofile):
    """Which limit stopped the LB at step: a list of findings."""
    findings = []
    generator = [k for k in step["error_kinds"] if k.startswith("client:")]
    if generator:
        findings.append("THE GENERATOR (not the LB): %s" % ", ".join(
            generator))
    new_logs = lb_logs(name, lb)[len(logs_before):]
    for pattern, limit in LOG_LIMITS:
        lines = [line for line in new_logs.splitlines()
                 if re.search(pattern, line)]
        if lines:
            if limit == "file descriptors":
                limit += " (RLIMIT_NOFILE %d per process)" % nofile
            findings.append("%s (log: %s)" % (limit, lines[0][-200:]))
    if name == "nginx":
        # Two connections per visitor (visitor, node); a worker stops
        # accepting once 7/8 of its worker_connections are in use, and
        # logs nothing.
        workers = step["processes"] - 1
        if step["held"] * 2 >= 0.8 * workers * nofile:
            findings.append(
                "nginx worker_connections: %d visitors hold %d connections, "
                "of %d workers x %d (worker_connections = RLIMIT_NOFILE); a "
                "worker stops accepting at 7/8 of its worker_connections"
                % (step["held"], 2 * step["held"], workers, nofile))
    counters = step["lb_counters"]
    if counters.get("Maxconn") and \
            counters.get("CurrConns", 0) >= counters["Maxconn"] - 10:
        findings.append("HAProxy maxconn (%d connections; RLIMIT_NOFILE %d "
                        "allows %d)" % (counters["Maxconn"], nofile,
                                        haproxy_maxconn(nofile)))
    machine = step["machine"]
    for key, limit_path in (("pid_max", PID_MAX), ("threads_max",
                            Path("/proc/sys/kernel/threads-max"))):
        limit = read_number(limit_path)
        if limit and machine["peak_tasks"] >= 0.95 * limit:
            findings.append("kernel.%s (%d tasks of %d)"
                            % (key, machine["peak_tasks"], limit))
    pids_max = read_number("/sys/fs/cgroup/pids/pids.max") or \
        read_number("/sys/fs/cgroup/pids.max")
    if pids_max and machine["peak_tasks"] >= 0.95 * pids_max:
        findings.append("cgroup pids.max (%d)" % pids_max)
    if machine["min_mem_available_mib"] is not None and \
            machine["min_mem_available_mib"] < 512:
        findings.append("memory (MemAvailable down to %d MiB)"
                        % machine["min_mem_available_mib"])
    if not findings:
        findings.append("not identified: %s" % json.dumps(
            step["error_samples"])[:300])
    if "BusyWorkers" in counters:
        findings.append("httpd: %d workers busy, %d idle"
                        % (counters["BusyWorkers"],
                           counters.get("IdleWorkers", 0)))
    return findings


# ---------------------------------------------------------------------------
# One run: one LB, one mix, the steps
# ---------------------------------------------------------------------------

class Sampler:
    """The machine's peak tasks and least MemAvailable over a window."""

    def __init__(self):
        self.peak_tasks = 0
        self.min_mem = None

    def sample(self):
        state = machine_state()
        self.peak_tasks = max(self.peak_tasks, state["tasks"])
        mem = state["mem_available_mib"]
        if mem is not None:
            self.min_mem = mem if self.min_mem is None \
                else min(self.min_mem, mem)
        return state

    def wait(self, seconds, interval=5):
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self.sample()
            time.sleep(max(0, min(interval, deadline - time.monotonic())))


def node_cpu(nodes):
    return sum(sum(cpu_seconds(n.pid)) for n in nodes)


def sorted_difference(values, subset):
    """values without subset (a sub-multiset of it), sorted."""
    rest, drop = sorted(values), sorted(subset)
    out, j = [], 0
    for x in rest:
        if j < len(drop) and drop[j] == x:
            j += 1
        else:
            out.append(x)
    return out


def machine_busy():
    """(busy, total) clock ticks of all cores since boot (/proc/stat):
    everything but idle and iowait."""
    fields = [int(x) for x in
              Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return sum(fields) - idle, sum(fields)


def node_stats(nodes):
    stats = {}
    for n in nodes:
        for key, value in http_get(n.port, "/_stats",
                                   timeout=30).json().items():
            stats[key] = stats.get(key, 0) + value
    return stats


def hold_step(name, lb, nodes, clients, target, args, base, previous):
    """Ramp to target visitors, hold them, measure: the step's results."""
    sampler = Sampler()
    ramp_start = time.monotonic()
    reached = totals(clients.target(target, args.ramp_timeout))
    ramp_seconds = time.monotonic() - ramp_start
    log("%s: %d of %d visitors arrived in %.0f s (%d errors so far)"
        % (name, reached["held"], target, ramp_seconds, reached["errors"]))
    if args.settle:
        # The visitors that just arrived settle into their heartbeats,
        # and the listen queue and the processes started drain.
        time.sleep(args.settle)
    start = totals(clients.ask({"cmd": "report"}, "report", 60))
    lb_cpu0, node_cpu0 = sum(cpu_seconds(lb.pid)), node_cpu(nodes)
    client_cpu0 = start["cpu_seconds"]
    busy0 = machine_busy()
    t0 = time.monotonic()
    sampler.wait(args.hold)
    seconds = time.monotonic() - t0
    lb_cpu = sum(cpu_seconds(lb.pid)) - lb_cpu0
    nodes_cpu = node_cpu(nodes) - node_cpu0
    busy1 = machine_busy()
    end = totals(clients.ask({"cmd": "report"}, "report", 120))
    mem = memory(process_tree(lb.pid))
    state = sampler.sample()
    held = end["held"]
    rtts = end["rtts_ms"]
    probe = clients.probe_reports(end["reports"])
    probe_rtts = [x for r in probe for x in r["rtts_ms"]]
    probe_lp_rtts = [x for r in probe for x in r.get("lp_rtts_ms", [])]
    errors = end["errors"] - previous["errors"]
    return {
        "visitors": target, "held": held,
        "errors": errors, "error_kinds": end["error_kinds"],
        "error_samples": end["error_samples"],
        "misroutes": end["misroutes"] - previous["misroutes"],
        "misroute_samples": end["misroute_samples"],
        "ramp_seconds": round(ramp_seconds, 1),
        "hold_seconds": round(seconds, 1),
        "rtt_samples": len(probe_rtts),
        "rtt_p50_ms": percentile(probe_rtts, 50),
        "rtt_p99_ms": percentile(probe_rtts, 99),
        # The probe's, by transport: the long-polling visitors' messages
        # take a connection of their own and come back on the long-poll.
        "lp_rtt_samples": len(probe_lp_rtts),
        "lp_rtt_p99_ms": percentile(probe_lp_rtts, 99),
        "ws_rtt_p99_ms": percentile(sorted_difference(probe_rtts,
                                                      probe_lp_rtts), 99),
        "all_rtt_samples": len(rtts),
        "all_rtt_p50_ms": percentile(rtts, 50),
        "all_rtt_p99_ms": percentile(rtts, 99),
        "heartbeats": end["heartbeats"], "polls": end["polls"],
        "retries": end["retries"],
        "pss_kib": mem["pss_kib"], "threads": mem["threads"],
        "processes": mem["processes"],
        "kib_per_visitor": round((mem["pss_kib"] - base["pss_kib"])
                                 / max(1, held), 1),
        "lb_cpu_us_per_visitor_s": round(lb_cpu * 1e6
                                         / max(1, held) / seconds, 1),
        "lb_cpu_percent": round(100 * lb_cpu / seconds, 1),
        "client_cpu_percent": round(
            100 * (end["cpu_seconds"] - client_cpu0) / seconds, 1),
        "nodes_cpu_percent": round(100 * nodes_cpu / seconds, 1),
        # Of all cores: 100 is every core busy.
        "machine_busy_percent": round(100 * (busy1[0] - busy0[0])
                                      / max(1, busy1[1] - busy0[1]), 1),
        "nodes": node_stats(nodes),
        "lb_counters": lb_counters(name, lb),
        "machine": dict(state, peak_tasks=sampler.peak_tasks,
                        min_mem_available_mib=sampler.min_mem),
    }


def step_failed(step):
    """Any error, misroute or visitor not held."""
    return step["errors"] or step["misroutes"] or \
        step["held"] < step["visitors"]


def at_limit(step):
    """A step the ramp stops at: a misroute, or more than 1% of its
    visitors failed or not held.  Fewer errors than that (a visitor's page
    timing out while thousands arrive on a loaded 2-core box) are counted
    in the step's figures, and the ramp goes on."""
    return step["misroutes"] or step["errors"] > step["visitors"] / 100 \
        or step["held"] < 0.99 * step["visitors"]


def run_lb(name, mix, args, nofile):
    """Start the nodes and the LB, ramp, stop them all (by PID)."""
    workdir = Path(tempfile.mkdtemp(prefix="gwe-capacity-%s-%s-"
                                    % (name, mix)))
    nodes, lb, clients = [], None, None
    result = {"lb": name, "mix": mix, "ws_percent": args.ws_percent,
              "steps": [], "limit": None, "workdir": str(workdir),
              "settings_steps": args.steps}
    if name.startswith("httpd") and shipped_knows_max_visitors():
        result["gwe_max_visitors"] = args.max_visitors
    try:
        for node_name in NODE_NAMES:
            nodes.append(node(node_name, workdir, args.poll_hold).start())
        lb = start_lb(name, workdir, nodes, args, nofile)
        settled(lb.pid)
        base = memory(process_tree(lb.pid))
        result["pss_idle_kib"] = base["pss_kib"]
        log("%s, %s: %d processes, %d KiB PSS idle"
            % (name, mix, base["processes"], base["pss_kib"]))
        clients = Visitors(workdir, lb.port, args)
        previous = {"errors": 0, "misroutes": 0}
        for target in args.steps:
            logs_before = lb_logs(name, lb)
            step = hold_step(name, lb, nodes, clients, target, args, base,
                             previous)
            result["steps"].append(step)
            log("%s, %s: %s" % (name, mix, step_line(step)))
            if at_limit(step):
                step["limit"] = diagnose(name, lb, step, logs_before,
                                         nofile)
                result["limit"] = step["limit"]
                log("%s, %s stopped at %d: %s" % (
                    name, mix, target, "; ".join(step["limit"])))
                break
            previous = {"errors": step["errors"] + previous["errors"],
                        "misroutes": step["misroutes"]
                        + previous["misroutes"]}
        else:
            result["limit"] = ["none up to %d visitors (the last step)"
                               % args.steps[-1]]
        return result
    except Exception as e:
        result["limit"] = result["limit"] or ["run stopped: %s" % e]
        log("%s, %s: stopped by an error: %s" % (name, mix, e))
        if lb is not None:
            log(tail(lb.error_log_path))
        return result
    finally:
        if clients is not None:
            clients.close()
        if lb is not None:
            lb.stop() if not name.startswith("httpd") \
                else lb.stop(timeout=120, graceful_timeout=10)
        for n in nodes:
            n.stop()
        if args.keep or result["limit"] is None or \
                any(at_limit(s) for s in result["steps"]):
            log("logs and configs kept in %s" % workdir)
        else:
            shutil.rmtree(workdir, ignore_errors=True)


def step_line(step):
    return ("%d/%d held, %d errors, %d misroutes, RTT p50 %s p99 %s ms "
            "(all visitors: p99 %s), "
            "%.1f KiB and %.1f µs/s per visitor, load %.1f" % (
                step["held"], step["visitors"], step["errors"],
                step["misroutes"], step["rtt_p50_ms"], step["rtt_p99_ms"],
                step.get("all_rtt_p99_ms"),
                step["kib_per_visitor"], step["lb_cpu_us_per_visitor_s"],
                step["machine"]["load1"]))


# ---------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------

COLUMNS = [
    ("visitors", lambda r, s: fmt(s["visitors"])),
    ("held", lambda r, s: fmt(s["held"])),
    ("errors", lambda r, s: fmt(s["errors"])),
    ("misroutes", lambda r, s: fmt(s["misroutes"])),
    ("RTT p50 ms", lambda r, s: fmt(s["rtt_p50_ms"], 1)),
    ("RTT p99 ms", lambda r, s: fmt(s["rtt_p99_ms"], 1)),
    ("WebSocket / long-poll p99 ms", lambda r, s: "%s / %s" % (
        fmt(s.get("ws_rtt_p99_ms"), 1), fmt(s.get("lp_rtt_p99_ms"), 1))),
    ("all p99 ms", lambda r, s: fmt(s.get("all_rtt_p99_ms"), 1)),
    ("KiB/visitor", lambda r, s: fmt(s["kib_per_visitor"], 1)),
    ("LB CPU µs/visitor/s", lambda r, s: fmt(s["lb_cpu_us_per_visitor_s"],
                                             1)),
    ("LB CPU %", lambda r, s: fmt(s["lb_cpu_percent"])),
    ("LB threads", lambda r, s: fmt(s["threads"])),
    ("ramp s", lambda r, s: fmt(s["ramp_seconds"])),
    ("load", lambda r, s: fmt(s["machine"]["load1"], 1)),
    # Of one core, as LB CPU %:
    ("generator / nodes CPU %", lambda r, s: "%s / %s" % (
        fmt(s["client_cpu_percent"]), fmt(s["nodes_cpu_percent"]))),
    # Of all the machine's cores:
    ("cores busy %", lambda r, s: fmt(s.get("machine_busy_percent"))),
]


def fmt(value, digits=0):
    return benchlib.fmt(value, digits)


def table(result):
    """A markdown table of one run's steps, and what stopped it."""
    head = "%s, %s (%d%% WebSocket)%s" % (
        result["lb"], result["mix"], result["ws_percent"],
        ", GWE_MAX_VISITORS %d" % result["gwe_max_visitors"]
        if "gwe_max_visitors" in result else "")
    rows = [[title for title, _ in COLUMNS]]
    rows += [[cell(result, s) for _, cell in COLUMNS]
             for s in result["steps"]]
    lines = ["| " + " | ".join(row) + " |" for row in rows]
    lines.insert(1, "|" + "---:|" * len(COLUMNS))
    limit = "; ".join(result["limit"] or ["-"])
    return "#### %s\n\n%s\n\nStopped by: %s\n" % (head, "\n".join(lines),
                                                  limit)


def summary(results):
    """One line per run: its last step below the limit (visitors held,
    errors and misroutes in it), the step that reached it, and what
    stopped it."""
    lines = ["| LB | mix | held (errors, misroutes) | RTT p50 / p99 ms | "
             "KiB/visitor | LB CPU µs/visitor/s | at the limit | "
             "stopped by |", "|---|---|---:|---:|---:|---:|---|---|"]
    for r in results:
        good = [s for s in r["steps"] if not at_limit(s)]
        bad = [s for s in r["steps"] if at_limit(s)]
        best = good[-1] if good else None
        next_step = ("%s: %s held, %s errors, %s misroutes" % (
            fmt(bad[0]["visitors"]), fmt(bad[0]["held"]),
            fmt(bad[0]["errors"]), fmt(bad[0]["misroutes"]))
                     if bad else "-")
        held = "%s of %s (%s, %s)" % (
            fmt(best["held"]), fmt(best["visitors"]), fmt(best["errors"]),
            fmt(best["misroutes"])) if best else "-"
        lines.append("| %s | %s | %s | %s / %s | %s | %s | %s | %s |" % (
            r["lb"], r["mix"], held,
            fmt(best and best["rtt_p50_ms"], 1),
            fmt(best and best["rtt_p99_ms"], 1),
            fmt(best and best["kib_per_visitor"], 1),
            fmt(best and best["lb_cpu_us_per_visitor_s"], 1), next_step,
            re.sub(r" \(log: [^;]*", "", "; ".join(r["limit"] or ["-"]))))
    return "\n".join(lines)


def targets(results):
    """The issue's targets for the shipped config: (text, met) pairs."""
    found = []
    for r in results:
        if r["lb"] != "httpd" or r["mix"] not in ("ws", "mixed"):
            continue
        want = 20000 if r["mix"] == "ws" else 30000
        if want not in r["settings_steps"]:
            continue
        step = next((s for s in r["steps"] if s["visitors"] == want), None)
        if r["mix"] == "ws":
            met = step is not None and not step_failed(step)
            text = "20,000 WebSocket visitors, 0 errors, 0 misroutes"
        else:
            met = step is not None and not step_failed(step) and \
                (step["rtt_p99_ms"] or 1e9) < 100
            text = "30,000 mixed visitors, message p99 < 100 ms"
        found.append((text, met))
    return found


# ---------------------------------------------------------------------------
# main
# ---------------------------------------------------------------------------

def parse_args():
    parser = argparse.ArgumentParser(
        description="GWE visitors one balancer holds: the shipped httpd "
                    "(worker and event MPM), nginx, HAProxy.")
    parser.add_argument("--lb", default=",".join(LBS),
                        help="comma-separated, of: " + ", ".join(LBS))
    parser.add_argument("--mix", default="ws,mixed,lp",
                        help="comma-separated, of: ws (100%% WebSocket), "
                             "mixed (70/30), lp (100%% long-poll)")
    parser.add_argument("--steps", default="5000,10000,20000,30000",
                        help="visitors held at each step, in all")
    parser.add_argument("--hold", type=float, default=45,
                        help="seconds each step is held and measured")
    parser.add_argument("--max-visitors", type=int, default=24000,
                        help="the shipped config's GWE_MAX_VISITORS "
                             "(when it has that Define)")
    parser.add_argument("--module", default=str(harness.MODULE_SO))
    parser.add_argument("--clients", type=int, default=4,
                        help="generator processes (source addresses "
                             "127.0.0.2 up)")
    parser.add_argument("--settle", type=float, default=15,
                        help="seconds between a step's ramp and its hold")
    # Visitors that wait for a thread or a connection slot hold theirs
    # until their timeout: enough that those do not stall the rest.
    parser.add_argument("--in-flight", type=int, default=100,
                        help="visitors arriving at once, per client")
    parser.add_argument("--probe", type=int, default=1000,
                        help="visitors in the probe process, whose round "
                             "trips are reported (0: none; all visitors' "
                             "round trips are reported then)")
    parser.add_argument("--probe-nice", type=int, default=-5,
                        help="the probe's nice level")
    parser.add_argument("--load-nice", type=int, default=10,
                        help="the load processes' nice level (0: as the "
                             "balancer and the nodes)")
    parser.add_argument("--heartbeat", type=float, default=30)
    parser.add_argument("--message", default="30,60",
                        help="seconds between a visitor's application "
                             "messages: min,max")
    parser.add_argument("--poll-hold", type=float, default=30,
                        help="seconds a node holds a long-poll")
    parser.add_argument("--timeout", type=float, default=30,
                        help="seconds for one answer")
    parser.add_argument("--ramp-timeout", type=float, default=900)
    parser.add_argument("--nginx-workers", default="auto",
                        help="nginx's worker_processes")
    parser.add_argument("--haproxy-maxconn", type=int,
                        help="default: what the open-files limit allows")
    parser.add_argument("--quick", action="store_true",
                        help="a smoke run: 500 and 1,000 visitors, 15 s "
                             "holds, 5 s heartbeats and long-polls")
    parser.add_argument("--json", help="write the results here (after "
                                       "every run)")
    parser.add_argument("--keep", action="store_true",
                        help="keep the work dirs (logs, configs)")
    args = parser.parse_args()
    if args.quick:
        args.steps, args.hold, args.heartbeat = "500,1000", 15, 5
        args.message, args.poll_hold = "3,8", 5
        args.probe = min(args.probe, 100)
    args.steps = [int(s) for s in args.steps.split(",")]
    args.message = [float(s) for s in args.message.split(",")]
    args.lbs = [s.strip() for s in args.lb.split(",") if s.strip()]
    args.mixes = [s.strip() for s in args.mix.split(",") if s.strip()]
    if set(args.lbs) - set(LBS):
        parser.error("--lb: of %s" % ", ".join(LBS))
    if set(args.mixes) - set(MIXES):
        parser.error("--mix: of %s" % ", ".join(MIXES))
    if any(lb.startswith("httpd") for lb in args.lbs) and \
            not Path(args.module).is_file():
        parser.error("--module: no %s (make -f Makefile.apxs)" % args.module)
    return args


def main():
    args = parse_args()
    benchlib.require(harness.APACHE2, benchlib.NGINX, HAPROXY)
    # SIGTERM as Ctrl-C: unwind through every finally, stopping by PID.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    nofile = benchlib.raise_nofile_limit()
    harness.become_subreaper()      # reap the detached httpd ourselves
    limits = SystemLimits()
    output = {"machine": machine_info(), "settings": {
        k: v for k, v in vars(args).items() if k not in ("json",)},
        "started": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "results": []}
    try:
        if any(name.startswith("httpd") for name in args.lbs):
            # A thread per visitor, and a third more (MaxRequestWorkers).
            limits.raise_pid_max(int(max(args.steps) * 4 / 3))
        output["raised"] = limits.described()
        for mix in args.mixes:
            args.ws_percent = MIXES[mix]
            for name in args.lbs:
                result = run_lb(name, mix, args, nofile)
                output["results"].append(result)
                print(table(result), flush=True)
                if args.json:
                    Path(args.json).write_text(json.dumps(output, indent=1)
                                               + "\n")
    except KeyboardInterrupt:
        log("interrupted; everything started is stopped")
        return 130
    finally:
        limits.restore()
    print(summary(output["results"]))
    if output["raised"]:
        print("System limits raised for the run (and restored): "
              + "; ".join(output["raised"]))
    missed = False
    for text, met in targets(output["results"]):
        print("target: %s: %s" % (text, "met" if met else "NOT met"))
        missed |= not met
    return 1 if missed else 0


if __name__ == "__main__":
    benchlib.run_main(lambda: sys.exit(main()))
