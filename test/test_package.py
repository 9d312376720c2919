"""The Debian package libapache2-mod-gwe-balancer, as an operator gets it.

The package is built once per session (dpkg-buildpackage -us -uc -b) in a
scratch copy of the working tree, never in the repo, and linted.  Then
test_install_enable_route_purge installs it with dpkg into this machine's
own apache2 (a throwaway machine in CI), runs a2enmod gwe_balancer, starts a
private httpd (own ServerRoot, config and port on 127.0.0.1: never the
system's service) that loads exactly what a2enmod enabled, in the order
Debian's apache2.conf would, routes by cookie through it, then runs
a2dismod, purges the package and checks that /etc/apache2 and
/var/lib/apache2 are as they were.

That test skips, with the reason, on a machine where it could damage
something: not root, the package or module already there, the system's
apache2 running; or when GWB_NO_SYSTEM_INSTALL=1.
"""

import fcntl
import hashlib
import os
import re
import shutil
import stat
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest

import harness
from harness import (copy_working_tree, http_get, tree_entries,
                     twin_balancers, ws_node)

PACKAGE = "libapache2-mod-gwe-balancer"
REPO = harness.REPO_DIR
INSTALLED_SO = Path("/usr/lib/apache2/modules/mod_gwe_balancer.so")
ETC = Path("/etc/apache2")
MODS_AVAILABLE = ETC / "mods-available"
MODS_ENABLED = ETC / "mods-enabled"
STATE = Path("/var/lib/apache2")
DOC = Path("/usr/share/doc") / PACKAGE
# What a2enmod gwe_balancer must enable, at least (the .load's "# Depends:"
# line and theirs).
EXPECTED_ENABLED = {"gwe_balancer", "proxy", "proxy_balancer", "proxy_http",
                    "lbmethod_byrequests", "slotmem_shm"}


def run(cmd, timeout=120, check=True, **kw):
    """Run cmd (a list), output captured; fail the test with the output if
    it exits non-zero and check is set."""
    kw.setdefault("env", dict(os.environ, DEBIAN_FRONTEND="noninteractive",
                              LC_ALL="C.UTF-8"))
    proc = subprocess.run(cmd, stdin=subprocess.DEVNULL,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          timeout=timeout, **kw)
    out = proc.stdout.decode(errors="replace")
    if check and proc.returncode != 0:
        pytest.fail("%s exited %d:\n%s" % (" ".join(map(str, cmd)),
                                           proc.returncode, out),
                    pytrace=False)
    return proc.returncode, out


def gwb_version():
    """GWB_VERSION from mod_gwe_balancer.h: the one place it is written."""
    text = (REPO / "mod_gwe_balancer.h").read_text()
    m = re.search(r'^#define\s+GWB_VERSION\s+"([^"]+)"', text, re.M)
    assert m, "mod_gwe_balancer.h defines no GWB_VERSION"
    return m.group(1)


def changelog_version():
    """(package, version) of debian/changelog's first entry."""
    first = (REPO / "debian" / "changelog").read_text().splitlines()[0]
    m = re.match(r"^(\S+) \(([^)\s]+)\) ", first)
    assert m, "debian/changelog: unparsable first line %r" % first
    return m.group(1), m.group(2)


def upstream_part(version):
    """The upstream part of a Debian version: no epoch, no revision."""
    version = version.split(":", 1)[-1]
    return version.rsplit("-", 1)[0] if "-" in version else version


# ---------------------------------------------------------------------------
# Checks of debian/ that need no build
# ---------------------------------------------------------------------------

def test_debian_changelog_carries_the_module_version():
    package, version = changelog_version()
    assert package == PACKAGE
    assert upstream_part(version) == gwb_version(), (
        "debian/changelog's upstream version %s is not GWB_VERSION %s of "
        "mod_gwe_balancer.h: add a debian/changelog entry for it"
        % (upstream_part(version), gwb_version()))


def test_mods_available_conf_changes_nothing_when_enabled():
    # a2enmod links gwe_balancer.conf too: every line of it is a comment
    # (or blank), so enabling the module changes no behaviour.
    for n, line in enumerate(
            (REPO / "conf" / "gwe_balancer.conf").read_text().splitlines(), 1):
        assert not line.strip() or line.lstrip().startswith("#"), (
            "conf/gwe_balancer.conf:%d is not a comment: %r" % (n, line))


def test_every_lintian_override_says_why():
    files = list((REPO / "debian").glob("*lintian-overrides")) + \
        list((REPO / "debian" / "source").glob("lintian-overrides"))
    for path in files:
        lines = path.read_text().splitlines()
        for n, line in enumerate(lines):
            if line.strip() and not line.lstrip().startswith("#"):
                assert n > 0 and lines[n - 1].lstrip().startswith("#"), (
                    "%s:%d: override %r has no comment above it saying why"
                    % (path.relative_to(REPO), n + 1, line))


# ---------------------------------------------------------------------------
# The package, built once per session
# ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def built_package(tmp_path_factory):
    """Build the package in a scratch copy: SimpleNamespace(deb, changes,
    dir, log)."""
    for tool in ("dpkg-buildpackage", "dh", "dh_apache2", "lintian"):
        if not shutil.which(tool):
            pytest.fail("%s is missing: run test/deps.sh" % tool,
                        pytrace=False)
    top = tmp_path_factory.mktemp("deb")
    _, version = changelog_version()
    src = top / ("%s-%s" % (PACKAGE, upstream_part(version)))
    copy_working_tree(src)
    rc, log = run(["dpkg-buildpackage", "-us", "-uc", "-b"], cwd=str(src),
                  timeout=900, check=False)
    (top / "build.log").write_text(log)
    if rc != 0:
        pytest.fail("dpkg-buildpackage exited %d:\n%s" % (rc, log[-6000:]),
                    pytrace=False)
    arch = run(["dpkg", "--print-architecture"])[1].strip()
    base = "%s_%s_%s" % (PACKAGE, version.split(":", 1)[-1], arch)
    deb, changes = top / (base + ".deb"), top / (base + ".changes")
    assert deb.is_file() and changes.is_file(), sorted(os.listdir(top))
    return SimpleNamespace(deb=deb, changes=changes, dir=top, log=log,
                           version=version)


def deb_member(deb, member):
    """A file of the package's data (member like ./etc/...) as bytes."""
    proc = subprocess.run("dpkg-deb --fsys-tarfile '%s' | tar -xOf - '%s'"
                          % (deb, member), shell=True,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    return proc.stdout


def deb_control_file(deb, name):
    """A control file (postinst, conffiles, ...) as text, or None."""
    proc = subprocess.run("dpkg-deb --ctrl-tarfile '%s' | tar -xOf - './%s'"
                          % (deb, name), shell=True,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          timeout=60)
    return proc.stdout.decode() if proc.returncode == 0 else None


def test_package_contents(built_package):
    deb = built_package.deb
    _, listing = run(["dpkg-deb", "-c", str(deb)])
    files = {}
    for line in listing.splitlines():
        fields = line.split(None, 5)
        files[fields[5].split(" -> ")[0]] = fields[0]
    so = "./usr/lib/apache2/modules/mod_gwe_balancer.so"
    load = "./etc/apache2/mods-available/gwe_balancer.load"
    conf = "./etc/apache2/mods-available/gwe_balancer.conf"
    assert files.get(so) == "-rw-r--r--", listing
    assert load in files and conf in files, listing
    # Only the module, its mods-available files, its documentation and its
    # lintian overrides.
    for path in files:
        assert (path in (so, load, conf) or files[path].startswith("d")
                or path.startswith("./usr/share/doc/%s/" % PACKAGE)
                or path == "./usr/share/lintian/overrides/" + PACKAGE), path
    assert deb_member(deb, load) == \
        (REPO / "conf" / "gwe_balancer.load").read_bytes()
    assert deb_member(deb, conf) == \
        (REPO / "conf" / "gwe_balancer.conf").read_bytes()
    assert (REPO / "conf" / "httpd-gwe-balancer.conf").read_bytes() == deb_member(
        deb, "./usr/share/doc/%s/examples/httpd-gwe-balancer.conf" % PACKAGE)

    _, depends = run(["dpkg-deb", "-f", str(deb), "Depends"])
    assert re.search(r"(^|, )apache2-api-20120211(,|$)", depends.strip()), \
        depends
    _, version = run(["dpkg-deb", "-f", str(deb), "Version"])
    assert upstream_part(version.strip()) == gwb_version()

    conffiles = (deb_control_file(deb, "conffiles") or "").split()
    assert sorted(conffiles) == [str(MODS_AVAILABLE / "gwe_balancer.conf"),
                                 str(MODS_AVAILABLE / "gwe_balancer.load")]
    # Installing enables nothing (dh_apache2 --noenable): no postinst that
    # would a2enmod it and restart apache2.  Removal disables it
    # (apache2-maintscript-helper), purge forgets it.
    postinst = deb_control_file(deb, "postinst") or ""
    assert "enmod" not in postinst, postinst
    for script in ("prerm", "postrm"):
        text = deb_control_file(deb, script) or ""
        assert "apache2_invoke dismod" in text, (script, text)


def test_lintian(built_package):
    """No error or warning tag, but for those overridden (each override
    says why: test_every_lintian_override_says_why)."""
    rc, out = run(["lintian", "--fail-on", "error,warning",
                   "--info", str(built_package.changes)],
                  timeout=600, check=False)
    tags = [line for line in out.splitlines() if re.match(r"^[EW]: ", line)]
    assert rc == 0 and not tags, "lintian exited %d:\n%s" % (rc, out)


# ---------------------------------------------------------------------------
# Install, enable, route, purge: on this machine's own apache2
# ---------------------------------------------------------------------------

def dpkg_status(package):
    """dpkg's status of package ('install ok installed', ...), or None if
    dpkg does not know it."""
    proc = subprocess.run(["dpkg-query", "-W", "-f", "${Status}", package],
                          stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    status = proc.stdout.decode().strip()
    return status if proc.returncode == 0 and status else None


def system_apache_running():
    """The PID of a running system apache2 (started without -f, from
    /etc/apache2), or None.  The tests' own instances always run with -f."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open("/proc/%s/cmdline" % entry, "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if argv and os.path.basename(argv[0]) in (b"apache2", b"httpd") \
                and b"-f" not in argv and harness.pid_alive(int(entry)):
            return int(entry)
    return None


def unsafe_reason():
    """Why installing the package here could damage the machine, or None."""
    if os.environ.get("GWB_NO_SYSTEM_INSTALL") == "1":
        return "GWB_NO_SYSTEM_INSTALL=1"
    if os.geteuid() != 0:
        return "installing a package needs root"
    for tool in ("dpkg", "a2enmod", "a2dismod", "a2query"):
        if not shutil.which(tool):
            return "%s is missing (package apache2: test/deps.sh)" % tool
    for package in (PACKAGE, PACKAGE + "-dbgsym"):
        status = dpkg_status(package)
        if status and not status.endswith("not-installed"):
            return ("dpkg already knows %s (%s): this test installs and "
                    "purges it, so it runs only where it is absent"
                    % (package, status))
    for path in [INSTALLED_SO, DOC] + \
            list(MODS_AVAILABLE.glob("gwe_balancer.*")) + \
            list(MODS_ENABLED.glob("gwe_balancer.*")):
        if os.path.lexists(path):
            return "%s exists: the module is installed some other way" % path
    pid = system_apache_running()
    if pid:
        return ("the system's apache2 runs (pid %d): enabling a module in "
                "/etc/apache2 would reach it at its next reload" % pid)
    return None


def snapshot_tree(root):
    """{relative path: description} of everything under root: type, mode,
    link target or content hash (and content, for small files, so that
    restore_tree() can put a marker file back)."""
    result = {}
    for rel, path, st in tree_entries(root):
        if stat.S_ISLNK(st.st_mode):
            result[rel] = ("link", os.readlink(path))
        elif stat.S_ISDIR(st.st_mode):
            result[rel] = ("dir", stat.S_IMODE(st.st_mode))
        else:
            data = path.read_bytes()
            result[rel] = ("file", stat.S_IMODE(st.st_mode),
                           hashlib.sha256(data).hexdigest(),
                           data if len(data) <= 4096 else None)
    return result


def snapshot():
    return {
        "etc": snapshot_tree(ETC),
        "state": snapshot_tree(STATE),
        "paths": {str(p): os.path.lexists(p) for p in (INSTALLED_SO, DOC)},
        "dpkg": {p: dpkg_status(p) for p in (PACKAGE, PACKAGE + "-dbgsym")},
    }


def restore_tree(root, before):
    """Make root's entries what they were in before (a snapshot_tree()):
    remove what is new, put back links, directories and small files that
    went missing."""
    now = snapshot_tree(root)
    for rel in sorted(set(now) - set(before), key=len, reverse=True):
        path = root / rel
        if now[rel][0] == "dir":
            shutil.rmtree(path, ignore_errors=True)
        elif os.path.lexists(path):
            path.unlink()
    for rel in sorted(set(before) - set(now), key=len):
        path, desc = root / rel, before[rel]
        if os.path.lexists(path):
            continue
        if desc[0] == "dir":
            path.mkdir(mode=desc[1])
        elif desc[0] == "link":
            os.symlink(desc[1], path)
        elif desc[3] is not None:
            path.write_bytes(desc[3])
            os.chmod(path, desc[1])


def describe_difference(before, after):
    lines = []
    for key in before:
        if before[key] == after[key]:
            continue
        if isinstance(before[key], dict) and key in ("etc", "state"):
            for rel in sorted(set(before[key]) | set(after[key])):
                b, a = before[key].get(rel), after[key].get(rel)
                if b != a:
                    lines.append("%s/%s: %s -> %s" % (
                        ETC if key == "etc" else STATE, rel,
                        b[:3] if b else "absent", a[:3] if a else "absent"))
        else:
            lines.append("%s: %r -> %r" % (key, before[key], after[key]))
    return "\n".join(lines)


def enabled_closure(module):
    """module and every module its mods-available .load file's
    "# Depends:" line names, recursively (what a2enmod enables)."""
    seen, todo = set(), [module]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        text = (MODS_AVAILABLE / (name + ".load")).read_text()
        m = re.search(r"^#\s*Depends:\s*(.*)$", text, re.M)
        if m:
            todo += m.group(1).replace(",", " ").split()
    return seen


def debian_order_config(modules):
    """What Debian's apache2.conf loads for modules, in its order: every
    mods-enabled/*.load (sorted), then every mods-enabled/*.conf; inlined,
    so that the harness loads none of them a second time."""
    parts = []
    for suffix in (".load", ".conf"):
        for path in sorted(MODS_ENABLED.glob("*" + suffix)):
            if path.name[:-len(suffix)] in modules:
                parts.append("# --- %s ---\n%s\n" % (path, path.read_text()))
    return "".join(parts)


def cleanup(before):
    """Put the machine back: disable the module (so that the package's
    prerm never restarts apache2), purge the package, restore the
    mods-enabled links and a2enmod's state markers."""
    problems = []
    if (MODS_ENABLED / "gwe_balancer.load").exists():
        rc, out = run(["a2dismod", "-q", "-f", "gwe_balancer"], check=False)
        if rc:
            problems.append("a2dismod: %s" % out)
    for package in (PACKAGE + "-dbgsym", PACKAGE):
        if dpkg_status(package) and \
                not dpkg_status(package).endswith("not-installed"):
            rc, out = run(["dpkg", "--purge", package], timeout=300,
                          check=False)
            if rc:
                problems.append("dpkg --purge %s: %s" % (package, out))
    restore_tree(MODS_ENABLED, {
        rel[len("mods-enabled/"):]: desc
        for rel, desc in before["etc"].items()
        if rel.startswith("mods-enabled/")})
    restore_tree(STATE, before["state"])
    return problems


@pytest.fixture
def machine_lock():
    """One run of the install test at a time on this machine (other
    checkouts' test runs included): an advisory flock on the
    mods-available directory, which leaves no file behind."""
    fd = os.open(MODS_AVAILABLE if MODS_AVAILABLE.is_dir() else "/",
                 os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        pytest.skip("another test run is installing the package right now")
    yield
    os.close(fd)


def test_install_enable_route_purge(built_package, machine_lock, make_node,
                                    httpd_factory):
    reason = unsafe_reason()
    if reason:
        pytest.skip("not installing the package into this machine: " + reason)
    before = snapshot()
    # The package's paths, and which of them (directories) exist already.
    _, listing = run(["dpkg-deb", "-c", str(built_package.deb)])
    package_paths = [Path(line.split(None, 5)[5].split(" -> ")[0][1:] or "/")
                     for line in listing.splitlines()]
    existed = {p for p in package_paths if os.path.lexists(p)}
    problems = []
    try:
        run(["dpkg", "-i", str(built_package.deb)], timeout=300)
        assert dpkg_status(PACKAGE) == "install ok installed"
        assert INSTALLED_SO.is_file()
        assert (MODS_AVAILABLE / "gwe_balancer.load").is_file()
        assert (MODS_AVAILABLE / "gwe_balancer.conf").is_file()
        # Installing enabled nothing.
        assert snapshot_tree(MODS_ENABLED) == {
            rel[len("mods-enabled/"):]: d for rel, d in before["etc"].items()
            if rel.startswith("mods-enabled/")}
        load_text = (MODS_AVAILABLE / "gwe_balancer.load").read_text()
        assert re.search(r"^LoadModule\s+gwe_balancer_module\s+%s\s*$"
                         % re.escape(str(INSTALLED_SO)), load_text, re.M), \
            load_text

        # a2enmod follows the .load's "# Depends:" line.
        run(["a2enmod", "gwe_balancer"])
        closure = enabled_closure("gwe_balancer")
        assert EXPECTED_ENABLED <= closure, closure
        for name in closure:
            assert (MODS_ENABLED / (name + ".load")).exists(), \
                "a2enmod gwe_balancer did not enable %s" % name
        assert (MODS_ENABLED / "gwe_balancer.conf").exists()
        rc, _ = run(["a2query", "-m", "proxy_balancer"], check=False)
        assert rc == 0, "a2query: proxy_balancer is not enabled"

        # A private httpd loading what a2enmod enabled, as Debian's
        # apache2.conf does, and a balancer routing by cookie.
        nodes = [make_node("GWE_Node_1"), make_node("GWE_Node_2")]
        h = httpd_factory(module_path=INSTALLED_SO)
        h.write_config(debian_order_config(closure) + twin_balancers(nodes))
        h.start()
        for _ in range(3):
            for node in nodes:
                resp = http_get(h.port, "/server/about",
                                cookie="GWROUTEID=.%s" % node.name)
                assert resp.status == 200 and resp.node == node.name, resp
        resp = http_get(h.port, "/server/about")
        assert resp.status == 200 and resp.node in ("GWE_Node_1",
                                                    "GWE_Node_2"), resp
        # The WebSocket handoff (a mod_proxy hook) works in this load order
        # too.
        for node in nodes:
            assert ws_node(h.port, "GWROUTEID=." + node.name) == node.name
        # The version: logged at startup, and in the server's version
        # string (server-status, the harness's readiness page).
        version = gwb_version()
        assert re.search(r"GWB0003: mod_gwe_balancer/%s\b"
                         % re.escape(version), h.error_log()), h.error_log()
        status_page = http_get(h.port, h.READY_PATH).text
        assert "mod_gwe_balancer/%s" % version in status_page
        h.stop()

        # Disable, purge: nothing of the package remains.
        run(["a2dismod", "gwe_balancer"])
        assert not os.path.lexists(MODS_ENABLED / "gwe_balancer.load")
        run(["dpkg", "--purge", PACKAGE], timeout=300)
        assert dpkg_status(PACKAGE) in (None, "unknown ok not-installed")
        left = [str(p) for p in package_paths
                if os.path.lexists(p) and p not in existed]
        assert not left, "left behind by the purge: %s" % left
    finally:
        problems = cleanup(before)
    assert not problems, "\n".join(problems)
    after = snapshot()
    assert after == before, "the machine is not as it was:\n" + \
        describe_difference(before, after)
