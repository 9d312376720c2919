"""pytest fixtures for the httpd integration tests (see harness/).

- module_so: the built mod_gwe_balancer.so (built once per session, only if
  a test asks for it; GWB_MODULE=/path/to/mod.so skips the build).
- make_node / nodes: demo GWE nodes, stopped at teardown.
- httpd_factory: private httpd instances, stopped at teardown (before the
  nodes).
- shipped: conf/httpd-gwe-balancer.conf as a user runs it, over two nodes.
- module_nodes, module_httpd_factory: the same, shared by a module's
  tests (each test must leave them running).
- browser_dir: test/browser with its npm packages, for the browser tests
  (skips without node or chromium, unless CI is set).
- prometheus_tools: likewise for Debian's prometheus and promtool.
- after every test, each httpd the test made (by httpd_factory or by
  harness.Httpd directly) is stopped, and its error_log must hold no
  unexpected line (see Httpd.allow()); a module's shared httpd likewise
  after the module's last test.
"""

import os
import subprocess

import pytest

import harness


@pytest.fixture(scope="session", autouse=True)
def _stop_everything_at_exit():
    """Safety net: whatever a test left running is stopped at the end."""
    yield
    harness.stop_all()


@pytest.fixture(autouse=True)
def _httpd_error_log_check():
    """Fail the test (at teardown) if an httpd it made logged a line of
    level warn or worse, or one telling of a crashed child, that no
    Httpd.allow() regex (nor harness.GLOBAL_ALLOWED) matches."""
    first = len(harness.created_httpds)
    yield
    stop_and_check(harness.created_httpds[first:])


def stop_and_check(httpds):
    """Stop each httpd; fail the test if one could not be stopped or
    logged a line no Httpd.allow() regex matches."""
    problems = []
    for httpd in httpds:
        try:
            httpd.stop()
        except harness.HarnessError as e:
            problems.append("%s: %s" % (httpd.root, e))
        lines = httpd.unexpected_log_lines()
        if lines:
            problems.append("unexpected lines in %s:\n  %s"
                            % (httpd.error_log_path, "\n  ".join(lines)))
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)


@pytest.fixture(scope="session")
def module_so():
    """Path of mod_gwe_balancer.so: $GWB_MODULE, or built with
    `make -f Makefile.apxs WERROR=-Werror` at the repo top (the Makefile's
    own contract for tests: warnings are errors).  A failed build fails
    every test that uses this fixture, with the compiler's output; pytest
    caches the failure, so the build runs once per session."""
    override = os.environ.get("GWB_MODULE")
    if override:
        if not os.path.isfile(override):
            pytest.fail("GWB_MODULE=%s: no such file" % override,
                        pytrace=False)
        return os.path.abspath(override)
    proc = subprocess.run(
        ["make", "-f", "Makefile.apxs", "WERROR=-Werror"],
        cwd=str(harness.REPO_DIR), stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=300)
    output = proc.stdout.decode(errors="replace")
    if proc.returncode != 0 or not harness.MODULE_SO.is_file():
        pytest.fail("building mod_gwe_balancer failed (make exit %d):\n%s"
                    % (proc.returncode, output), pytrace=False)
    return str(harness.MODULE_SO)


@pytest.fixture
def make_node(tmp_path):
    """make_node(name, port=0, start=True, **kw) -> a Node (kw go to
    harness.Node, e.g. script=...); all are stopped at teardown."""
    made = []

    def factory(name, port=0, start=True, **kw):
        kw.setdefault("log_dir", tmp_path / "nodes")
        node = harness.Node(name, port=port, **kw)
        made.append(node)
        if start:
            node.start()
        return node

    yield factory
    for node in reversed(made):
        node.stop()


@pytest.fixture
def nodes(make_node):
    """Three started nodes, GWE_Node_1..3."""
    return [make_node("GWE_Node_%d" % i) for i in (1, 2, 3)]


@pytest.fixture
def httpd_factory(request, tmp_path, make_node):
    """httpd_factory(gwe=False, **kw) -> a new harness.Httpd under tmp_path,
    not started; kw go to harness.Httpd (module_path, loglevel, mpm,
    modules); gwe=True loads the module_so fixture's module.

    It depends on make_node only so that its teardown, which stops the
    httpds, runs before the nodes are stopped: a member dying under a
    running httpd could log errors (health checks) the test never caused."""
    made = []

    def factory(gwe=False, **kw):
        if gwe:
            kw["module_path"] = request.getfixturevalue("module_so")
        httpd = harness.Httpd(tmp_path / ("httpd%d" % len(made)), **kw)
        made.append(httpd)
        return httpd

    yield factory
    for httpd in made:
        httpd.stop()


@pytest.fixture(scope="module")
def module_nodes(tmp_path_factory):
    """Three started nodes, GWE_Node_1..3, shared by a module's tests."""
    made = []
    log_dir = tmp_path_factory.mktemp("nodes")
    try:
        for i in (1, 2, 3):
            made.append(harness.Node("GWE_Node_%d" % i, log_dir=log_dir))
            made[-1].start()
        yield made
    finally:
        for node in reversed(made):
            node.stop()


@pytest.fixture(scope="module")
def module_httpd_factory(request, tmp_path_factory, module_nodes):
    """httpd_factory for an httpd that a module's tests share: call it from
    a module-scoped fixture (inside a test, the test's own check would stop
    it).  Stopped after the module's last test, and its error_log checked
    then.  Depends on module_nodes so that it stops before them."""
    made = []

    def factory(gwe=False, **kw):
        if gwe:
            kw["module_path"] = request.getfixturevalue("module_so")
        httpd = harness.Httpd(tmp_path_factory.mktemp("httpd"), **kw)
        made.append(httpd)
        return httpd

    yield factory
    stop_and_check(made)


def _unavailable(why):
    """Skip, or under CI (where every test must run) fail."""
    if os.environ.get("CI"):
        pytest.fail("CI is set, so the browser tests must run: %s" % why,
                    pytrace=False)
    pytest.skip(why)


@pytest.fixture(scope="session")
def browser_dir():
    """test/browser, ready to drive Debian's Chromium with playwright-core:
    node and chromium installed, and its npm packages (`npm ci` when
    node_modules lacks a locked one; never a browser download).  Skips
    when something is missing, unless CI is set: then fails."""
    missing = harness.missing_browser_tools()
    if missing:
        _unavailable(
            "not installed: %s (test/deps.sh installs Debian's chromium, and "
            "nodejs and npm where node is missing)" % ", ".join(missing))
    if harness.packages_not_installed() and not harness.npm():
        _unavailable("npm is not installed, and test/browser/"
                             "node_modules lacks %s" % ", ".join(
                                 harness.packages_not_installed()))
    try:
        harness.install_browser_packages()
    except harness.HarnessError as e:
        pytest.fail(str(e), pytrace=False)
    return harness.BROWSER_DIR


@pytest.fixture(scope="session")
def prometheus_tools():
    """Debian's prometheus and promtool installed; skips when they are not,
    unless CI is set: then fails."""
    missing = harness.missing_prometheus()
    if missing:
        _unavailable("not installed: %s (Debian: apt-get install "
                     "prometheus, as test/deps.sh does)" % ", ".join(missing))


@pytest.fixture
def shipped(tmp_path, module_so, make_node):
    """(a started harness.ShippedHttpd, its nodes GWE_Node_1 and 2)."""
    nodes = [make_node("GWE_Node_1"), make_node("GWE_Node_2")]
    h = harness.ShippedHttpd(tmp_path / "shipped", module_so, nodes)
    h.start()
    yield h, nodes
    h.stop()
