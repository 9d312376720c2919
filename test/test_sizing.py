"""The shipped configuration sized by one Define, GWE_MAX_VISITORS
(GWEBalancerSizing derives the MPM's limits from it), and the startup
check of the running system's limits (GWB0112-GWB0116), as configtest
prints it and as a started httpd logs it.

The limits a test lowers are the process's own (prlimit) or a cgroup of
its own; the kernel's (pid_max, threads-max) are the machine's, so the
test that reads them expects the warning exactly when the machine's value
is below what the configuration asks for."""

import os
import re
import uuid
from pathlib import Path

import pytest

from harness import ShippedHttpd, http_get

# (GWE_MAX_VISITORS, what GWEBalancerSizing defines): a third more
# threads than visitors, in whole processes of 250.  10,000 is the
# shipped default.
SIZES = {
    "10000": {"GWE_THREADS_PER_CHILD": 250, "GWE_MAX_REQUEST_WORKERS": 13500,
              "GWE_SERVER_LIMIT": 108, "GWE_MIN_SPARE_THREADS": 500,
              "GWE_MAX_SPARE_THREADS": 13500},
    "24000": {"GWE_THREADS_PER_CHILD": 250, "GWE_MAX_REQUEST_WORKERS": 32000,
              "GWE_SERVER_LIMIT": 256, "GWE_MIN_SPARE_THREADS": 500,
              "GWE_MAX_SPARE_THREADS": 32000},
    "100": {"GWE_THREADS_PER_CHILD": 250, "GWE_MAX_REQUEST_WORKERS": 250,
            "GWE_SERVER_LIMIT": 2, "GWE_MIN_SPARE_THREADS": 250,
            "GWE_MAX_SPARE_THREADS": 500},
}
LIMIT_TAG = re.compile(r"GWB011[2-6]")


def shipped(tmp_path, module_so, visitors=None, wrapper=()):
    """The shipped config (not started), nodes named but not running."""
    class Node:
        def __init__(self, name, port):
            self.name, self.port = name, port
    h = ShippedHttpd(tmp_path / "shipped", module_so,
                     [Node("GWE_Node_1", 9), Node("GWE_Node_2", 9)])
    if visitors is not None:
        h.defines["GWE_MAX_VISITORS"] = visitors
    h.wrapper = list(wrapper)
    return h


def tasks_needed(sizes):
    """What the check compares the task limits with: ServerLimit
    processes of ThreadsPerChild workers, a listener and a main thread,
    and the parent."""
    return sizes["GWE_SERVER_LIMIT"] * (sizes["GWE_THREADS_PER_CHILD"] + 2) + 1


def kernel_limit(name):
    return int(Path("/proc/sys/kernel", name).read_text())


def expected_kernel_warnings(sizes):
    """The GWB tags this machine's kernel limits call for."""
    need = tasks_needed(sizes)
    return sorted(tag for tag, name in (("GWB0112", "pid_max"),
                                        ("GWB0113", "threads-max"))
                  if kernel_limit(name) < need)


@pytest.mark.parametrize("visitors", sorted(SIZES))
def test_visitors_size_the_mpm(tmp_path, module_so, visitors):
    defines = shipped(tmp_path, module_so, visitors).run_cfg_defines()
    for name, value in SIZES[visitors].items():
        assert defines[name] == str(value), name


def test_default_is_ten_thousand_visitors(tmp_path, module_so):
    defines = shipped(tmp_path, module_so).run_cfg_defines()
    assert defines["GWE_MAX_VISITORS"] == "10000"
    assert defines["GWE_MAX_REQUEST_WORKERS"] == "13500"


@pytest.mark.parametrize("visitors", ["10000", "24000"])
def test_the_mpm_takes_the_sizes(tmp_path, module_so, make_node, visitors):
    """A started server's scoreboard shows MaxRequestWorkers slots (its
    processes' worth of ThreadsPerChild): the MPM took the derived
    values.  Only the kernel warnings this machine calls for are
    logged."""
    nodes = [make_node("GWE_Node_1"), make_node("GWE_Node_2")]
    h = ShippedHttpd(tmp_path / "shipped", module_so, nodes)
    h.defines["GWE_MAX_VISITORS"] = visitors
    h.allow(r"GWB011[23]: ")
    h.start()
    try:
        status = http_get(h.port, "/server-status?auto")
        assert status.status == 200
        board = re.search(r"^Scoreboard: (\S+)$", status.text, re.M).group(1)
        sizes = SIZES[visitors]
        assert len(board) == sizes["GWE_MAX_REQUEST_WORKERS"]
        logged = sorted(set(LIMIT_TAG.findall(h.error_log())))
        assert logged == expected_kernel_warnings(sizes)
    finally:
        h.stop()


@pytest.mark.parametrize("args,why", [
    ("abc", "visitors 'abc' is not a whole number from 1 to 1875000"),
    ("0", "visitors '0' is not a whole number from 1 to 1875000"),
    ("2083334", "visitors '2083334' is not a whole number"),
    ("1000 x", "threads per child 'x' is not a whole number from 1 to "
               "20000"),
    ("100000 5", "100000 visitors at 5 threads per child need ServerLimit "
                 "53334, above the MPM's 20000; give more threads per "
                 "child"),
])
def test_bad_sizes_fail_configtest(httpd_factory, args, why):
    h = httpd_factory(gwe=True)
    h.write_config("GWEBalancerSizing %s\n" % args)
    rc, out = h.configtest()
    assert rc != 0
    assert why in out, out


@pytest.mark.parametrize("limit,tag,text", [
    ("--nofile=256:4096", "GWB0116",
     "the open-files limit (ulimit -n, systemd LimitNOFILE=) is 256, below "
     "the 564 open files per process this configuration may need"),
    ("--nproc=1000:", "GWB0115",
     "the process limit (ulimit -u, systemd LimitNPROC=) is 1000, below "
     "the 27217 threads this configuration may need"),
])
def test_a_low_process_limit_is_reported(tmp_path, module_so, limit, tag,
                                         text):
    h = shipped(tmp_path, module_so, wrapper=["prlimit", limit, "--"])
    rc, out = h.configtest()
    assert rc == 0, out
    assert sorted(set(LIMIT_TAG.findall(out))) == sorted(
        [tag] + expected_kernel_warnings(SIZES["10000"]))
    assert sum(text in line for line in out.splitlines()) == 1, out


def test_a_started_server_logs_a_low_limit_once(tmp_path, module_so,
                                                make_node):
    nodes = [make_node("GWE_Node_1"), make_node("GWE_Node_2")]
    h = ShippedHttpd(tmp_path / "shipped", module_so, nodes)
    h.wrapper = ["prlimit", "--nofile=256:4096", "--"]
    h.allow(r"GWB011[236]: ")
    h.start()
    try:
        assert h.error_log().count("GWB0116: ") == 1
    finally:
        h.stop()


def pids_cgroup_dir():
    """A new pids cgroup of our own (cgroup v1's pids hierarchy, else v2
    with the pids controller), or None where we cannot make one."""
    for base in (Path("/sys/fs/cgroup/pids"), Path("/sys/fs/cgroup")):
        if (base / "cgroup.procs").exists() and os.access(base, os.W_OK):
            if base.name != "pids" and "pids" not in \
                    (base / "cgroup.subtree_control").read_text():
                continue
            d = base / ("gwb-test-" + uuid.uuid4().hex[:8])
            try:
                d.mkdir()
            except OSError:
                return None
            return d
    return None


def test_a_low_cgroup_task_limit_is_reported(tmp_path, module_so):
    """systemd's TasksMax is the service cgroup's pids.max: configtest run
    in a cgroup of our own with pids.max 1000 reports it."""
    cgroup = pids_cgroup_dir()
    if cgroup is None:
        pytest.skip("no writable pids cgroup hierarchy here")
    try:
        (cgroup / "pids.max").write_text("1000")
        enter = ['sh', '-c', 'echo $$ > "$0/cgroup.procs" && exec "$@"',
                 str(cgroup)]
        rc, out = shipped(tmp_path, module_so, wrapper=enter).configtest()
        assert rc == 0, out
        assert "GWB0114: the cgroup's task limit (systemd TasksMax=) is " \
            "1000, below the 27217 threads" in out, out
    finally:
        cgroup.rmdir()
