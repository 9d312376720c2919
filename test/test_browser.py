"""balancer-manager in a real browser: Debian's Chromium, driven by
playwright-core (test/browser/balancer_manager.mjs), opens the page as an
admin does, reads the lbmethod, switches it to byrequests and back through
the balancer's form, and drains or disables a member through the member's
form, with the page's own nonce and the Referer the browser sends.  Then
these tests check from the outside, with plain HTTP requests through the
balancer, that each change took effect on the next request.

Needs /usr/bin/node, npm (once, to install playwright-core into
test/browser/node_modules with `npm ci`; it never downloads a browser) and
/usr/bin/chromium (Debian's package chromium).  Without them the tests
skip, unless CI is set: then they fail.  The screenshot of each run is kept
in test/artifacts/ (its path is printed)."""

import collections
import json
import os
import queue
import re
import subprocess
import threading
import time

import pytest

import harness
from harness import (BalancerManager, ShippedHttpd, balancer_block,
                     balancer_manager_block, http_get, worker_url)

NODEJS = harness.NODEJS
ARTIFACTS = harness.ARTIFACTS

# The one AH10187 a browser causes: the manager page opened by its URL (as
# typed in the address bar) comes without a Referer, and httpd 2.4.71 logs
# "cross-site access (null)" for every such request, even one without
# parameters (it tests apr_table_elts(params), which is never NULL).  A form
# post refused for its Referer would name the Referer instead of (null).
TYPED_URL_AH10187 = (r"AH10187: ignoring params in balancer-manager "
                     r"cross-site access \(null\): ")


@pytest.fixture(scope="module")
def browser_script(browser_dir):
    """balancer_manager.mjs, its npm packages installed."""
    return browser_dir / "balancer_manager.mjs"


def run_browser(script, base_url, balancer, member, screenshot,
                action="drain", on_pause=None, timeout=180):
    """Run balancer_manager.mjs; return its JSON result (asserting that it
    succeeded).  on_pause(label) is called at each of the script's pauses
    (after each lbmethod switch: "lbmethod=byrequests", ...), while the
    browser waits."""
    env = dict(os.environ)
    env.pop("BM_PAUSE", None)
    if on_pause:
        env["BM_PAUSE"] = "1"
    cmd = [NODEJS, str(script), base_url, balancer, member, str(screenshot),
           action]
    proc = subprocess.Popen(cmd, cwd=str(script.parent), env=env,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    lines = queue.Queue()
    stderr = []

    def read_stderr():
        for raw in proc.stderr:
            lines.put(raw.decode(errors="replace"))
        lines.put(None)
    threading.Thread(target=read_stderr, daemon=True).start()
    out = {}
    threading.Thread(target=lambda: out.setdefault("data", proc.stdout.read()),
                     daemon=True).start()
    deadline = time.monotonic() + timeout
    pauses = []
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError("balancer_manager.mjs still running "
                                     "after %ss" % timeout)
            try:
                line = lines.get(timeout=left)
            except queue.Empty:
                continue
            if line is None:
                break
            m = re.match(r"PAUSED (\S+)", line)
            if not m:
                stderr.append(line)
                continue
            pauses.append(m.group(1))
            on_pause(m.group(1))
            proc.stdin.write(b"\n")
            proc.stdin.flush()
        proc.wait(timeout=max(1, deadline - time.monotonic()))
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        proc.stdin.close()
    # The stdout reader ends at EOF, which follows the exit.
    for _ in range(100):
        if "data" in out:
            break
        time.sleep(0.05)
    text = out.get("data", b"").decode(errors="replace")
    print("screenshot: %s" % screenshot)
    try:
        result = json.loads(text)
    except ValueError:
        raise AssertionError("balancer_manager.mjs exited %s with no JSON:\n"
                             "%s\n--- stderr ---\n%s"
                             % (proc.returncode, text, "".join(stderr)))
    assert proc.returncode == 0 and result.get("ok"), (
        "balancer_manager.mjs failed (exit %s):\n%s\n--- stderr ---\n%s"
        % (proc.returncode, json.dumps(result, indent=2), "".join(stderr)))
    result["pauses"] = pauses
    print("browser %s: %s; posts: %s" % (
        result.get("browser_version"), action,
        json.dumps([{"referer": p["referer"], "bytes": p["bytes"]}
                    for p in result["posts"]])))
    return result


def screenshot_path(request):
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / ("%s.png" % request.node.name)
    if path.exists():
        path.unlink()
    return path


def check_screenshot(path):
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", path
    assert len(data) > 10000, "%s: %d bytes, too small for the page" % (
        path, len(data))


def check_browser_requests(result, host="127.0.0.1"):
    """Every form post the browser sent had a Referer of the manager on
    this host (what balancer-manager compares with the server name) and a
    body that httpd reads in full (1024 bytes)."""
    assert result["posts"], result
    for post in result["posts"]:
        assert re.match(r"http://%s:\d+/balancer-manager(\?|$)"
                        % re.escape(host), post["referer"] or ""), post
        assert post["bytes"] < 1024, post
    assert result["http_errors"] == [], result


def check_ah10187(h):
    """The only AH10187 lines are the typed URL's (no Referer): httpd
    refused no parameter of the browser's."""
    lines = [line for line in h.error_log().splitlines() if "AH10187" in line]
    assert lines, "the typed URL should have logged AH10187 (null)"
    assert all(re.search(TYPED_URL_AH10187, line) for line in lines), lines


def about_entries(h, count):
    """The access log entries of GET /server/about, once there are count."""
    def entries():
        found = [e for e in h.access_entries()
                 if e["request"].startswith("GET /server/about ")]
        return found if len(found) >= count else None
    return harness.wait_until(entries, 5, what="%d /server/about log lines"
                              % count)


def routed(port, n, cookie=None):
    """The nodes that answered n GETs of /server/about."""
    nodes = []
    for _ in range(n):
        r = http_get(port, "/server/about", cookie=cookie)
        assert r.status == 200, r
        nodes.append(r.node)
    return nodes


@pytest.fixture
def gwe_httpd(httpd_factory, nodes):
    """A harness httpd (ServerName 127.0.0.1) with a gwesticky balancer
    "gwe" of the three nodes and balancer-manager."""
    h = httpd_factory(gwe=True)
    h.write_config(balancer_block("gwe", nodes) +
                   'ProxyPass "/server" "balancer://gwe"\n' +
                   balancer_manager_block())
    h.allow(TYPED_URL_AH10187)
    h.start()
    return h


def test_browser_drain_and_lbmethod_switch(browser_script, gwe_httpd, nodes,
                                           request):
    h = gwe_httpd
    manager = BalancerManager(h.port)
    drained = nodes[0]
    cookie = "GWROUTEID=." + drained.name
    shot = screenshot_path(request)
    seen = {}

    def on_pause(label):
        # The browser has just switched the lbmethod; look from outside.
        lbmethod = manager.status()["gwe"]["lbmethod"]
        seen[label] = {"lbmethod": lbmethod,
                       "cookie_holders": routed(h.port, 6, cookie)}

    result = run_browser(browser_script, h.url, "gwe", worker_url(drained),
                         shot, "drain", on_pause=on_pause)
    check_screenshot(shot)
    check_browser_requests(result)
    check_ah10187(h)

    # What the browser read: gwesticky listed and selected.
    assert result["lbmethod_page"] == "gwesticky", result
    assert "gwesticky" in result["lbmethod_options"], result
    assert result["lbmethod_selected"] == "gwesticky", result
    assert result["member_status_before"].split() == ["Init", "Ok"], result

    # Switching took effect at run time: under byrequests the cookie is not
    # read (its holders are spread round robin), and back under gwesticky
    # they stick again.
    assert result["pauses"] == ["lbmethod=byrequests", "lbmethod=gwesticky"]
    assert seen["lbmethod=byrequests"]["lbmethod"] == "byrequests", seen
    assert len(set(seen["lbmethod=byrequests"]["cookie_holders"])) > 1, seen
    assert seen["lbmethod=gwesticky"]["lbmethod"] == "gwesticky", seen
    assert set(seen["lbmethod=gwesticky"]["cookie_holders"]) == {
        drained.name}, seen

    # The drain took effect (the XML view says so too) ...
    assert "Drn" in result["member_status"].split(), result
    status = manager.status()["gwe"]
    assert status["lbmethod"] == "gwesticky", status
    assert "Drn" in status["members"][worker_url(drained)]["status"].split()
    # ... new visitors avoid the drained node, and still spread over the
    # others ...
    new = routed(h.port, 12)
    assert drained.name not in new, new
    assert set(new) == {nodes[1].name, nodes[2].name}, new
    # ... while its cookie holders stay on it; and so do the others'.
    assert set(routed(h.port, 5, cookie)) == {drained.name}
    for node in nodes[1:]:
        assert set(routed(h.port, 3, "GWROUTEID=." + node.name)) == {
            node.name}
    # Every decision, by the cookie that came with it: 6 + 6 requests
    # during the pauses (no decision of ours under byrequests), then these
    # 23.  Not in order: each process writes a request's line after its
    # answer, so the lines of consecutive requests served by two processes
    # (one just started, under ASan) can come in either order.
    others = ["GWROUTEID=." + node.name for node in nodes[1:]]
    decisions = collections.Counter((e["cookie"], e["decision"])
                                    for e in about_entries(h, 35))
    assert decisions == {(cookie, "-"): 6, (cookie, "sticky"): 6 + 5,
                         ("-", "new"): 12, (others[0], "sticky"): 3,
                         (others[1], "sticky"): 3}, decisions


def test_browser_disable_fails_over_cookie_holders(browser_script, gwe_httpd,
                                                   nodes, request):
    h = gwe_httpd
    disabled = nodes[1]
    cookie = "GWROUTEID=." + disabled.name
    assert set(routed(h.port, 3, cookie)) == {disabled.name}
    shot = screenshot_path(request)
    result = run_browser(browser_script, h.url, "gwe", worker_url(disabled),
                         shot, "disable")
    check_screenshot(shot)
    check_browser_requests(result)
    check_ah10187(h)
    assert "Dis" in result["member_status"].split(), result
    status = BalancerManager(h.port).status()["gwe"]
    assert "Dis" in status["members"][worker_url(disabled)]["status"].split()

    # The very next request of its cookie holders fails over, and every
    # one after it.
    after = routed(h.port, 6, cookie)
    assert disabled.name not in after, after
    entries = about_entries(h, 9)[3:]
    assert [e["decision"] for e in entries] == ["failover"] * 6, entries
    assert all(e["route_changed"] == "1" for e in entries), entries
    # New visitors avoid it too; the others' cookie holders are untouched.
    assert disabled.name not in routed(h.port, 8)
    for node in (nodes[0], nodes[2]):
        assert set(routed(h.port, 3, "GWROUTEID=." + node.name)) == {
            node.name}


def test_browser_drain_through_the_shipped_config(browser_script, tmp_path,
                                                  module_so, make_node,
                                                  request):
    """conf/httpd-gwe-balancer.conf says ServerName gwe-balancer, yet a browser
    at http://127.0.0.1:PORT/balancer-manager can change it:
    balancer-manager compares the Referer's host with ap_get_server_name(),
    which under UseCanonicalName Off (the default) is the Host the browser
    sent, 127.0.0.1."""
    nodes = [make_node("GWE_Node_1"), make_node("GWE_Node_2")]
    h = ShippedHttpd(tmp_path / "shipped", module_so, nodes)
    h.allow(TYPED_URL_AH10187)
    # The browser asks for /favicon.ico with every page, and the shipped
    # config denies every path but /server and /balancer-manager (its
    # <Directory /> says Require all denied): httpd logs AH01630 at level
    # error for each page the admin opens.  Allowed here for the favicon
    # only; the config is what should change.
    h.allow(r"AH01630: client denied by server configuration: "
            r"\S*/favicon\.ico, referer: http://127\.0\.0\.1:\d+/"
            r"balancer-manager")
    h.start()
    try:
        assert re.search(r"(?m)^ServerName gwe-balancer$",
                         h.conf_path.read_text())
        shot = screenshot_path(request)
        result = run_browser(browser_script, h.url, "gwe",
                             worker_url(nodes[0]), shot, "drain")
        check_screenshot(shot)
        check_browser_requests(result)
        check_ah10187(h)
        assert result["lbmethod_selected"] == "gwesticky", result
        assert "Drn" in result["member_status"].split(), result
        assert set(routed(h.port, 6)) == {"GWE_Node_2"}
        assert set(routed(h.port, 4, "GWROUTEID=.GWE_Node_1")) == {
            "GWE_Node_1"}
    finally:
        h.stop()
