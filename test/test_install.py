"""Makefile.apxs as packagers and admins use it: `install` stages into
DESTDIR and touches nothing outside it; `activate` enables the module the
way each layout wants (tried only on throwaway trees here: never on this
machine's own configuration); `version` prints GWB_VERSION.

make runs in a scratch copy of the working tree (built once per module),
so that these tests neither race a build in the repo nor leave one there."""

import re
import shutil
import stat
import subprocess

import pytest

import harness
from harness import copy_working_tree, tree_entries

REPO = harness.REPO_DIR


@pytest.fixture(scope="module")
def src(tmp_path_factory):
    """A scratch copy of the working tree, with the module built
    (WERROR=-Werror, as the tests' own build)."""
    path = tmp_path_factory.mktemp("apxs") / "src"
    copy_working_tree(path)
    rc, out = make_in(path, "all")
    if rc != 0:
        pytest.fail("make all failed:\n" + out, pytrace=False)
    return path


def make_in(src, *args, timeout=300):
    """(returncode, output) of make -f Makefile.apxs WERROR=-Werror ARGS
    in src."""
    proc = subprocess.run(["make", "-f", "Makefile.apxs", "WERROR=-Werror"]
                          + list(args), cwd=str(src),
                          stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, timeout=timeout)
    return proc.returncode, proc.stdout.decode(errors="replace")


def apxs_query(var):
    return subprocess.run(["apxs", "-q", var], stdout=subprocess.PIPE,
                          check=True).stdout.decode().strip()


def tree(root):
    """{relative path: (kind, size, mtime_ns)} under root (absent: {})."""
    result = {}
    for rel, _, st in tree_entries(root):
        kind = "dir" if stat.S_ISDIR(st.st_mode) else \
            "link" if stat.S_ISLNK(st.st_mode) else "file"
        result[rel] = (kind, st.st_size if kind == "file" else 0,
                       st.st_mtime_ns if kind != "dir" else 0)
    return result


@pytest.fixture
def system_dirs():
    """The system directories install/activate could wrongly write to,
    with their contents now; the test checks them unchanged."""
    dirs = [apxs_query("LIBEXECDIR"), apxs_query("SYSCONFDIR")]
    return {d: tree(d) for d in dirs}


def assert_unchanged(system_dirs):
    for d, before in system_dirs.items():
        after = tree(d)
        changed = sorted(k for k in set(before) | set(after)
                         if before.get(k) != after.get(k))
        assert not changed, "%s changed: %s" % (d, changed)


def test_version_target_prints_gwb_version(src):
    text = (src / "mod_gwe_balancer.h").read_text()
    m = re.search(r'^#define\s+GWB_VERSION\s+"([^"]+)"', text, re.M)
    assert m
    rc, out = make_in(src, "-s", "--no-print-directory", "version")
    assert rc == 0 and out.strip() == m.group(1), out


def test_install_stages_into_a_new_destdir_only(tmp_path, src,
                                                system_dirs):
    destdir = tmp_path / "stage"          # does not exist yet
    rc, out = make_in(src, "install", "DESTDIR=%s" % destdir)
    assert rc == 0, out
    libexecdir = apxs_query("LIBEXECDIR")
    staged = destdir / libexecdir.lstrip("/") / "mod_gwe_balancer.so"
    assert staged.is_file(), out
    assert stat.S_IMODE(staged.stat().st_mode) == 0o644
    assert staged.read_bytes() == \
        (src / ".libs" / "mod_gwe_balancer.so").read_bytes()
    # Nothing but the .so and the directories leading to it.
    files = [k for k, v in tree(destdir).items() if v[0] != "dir"]
    assert files == [str(staged.relative_to(destdir))], files
    assert_unchanged(system_dirs)


def test_install_into_an_existing_destdir_again(tmp_path, src,
                                                system_dirs):
    destdir = tmp_path / "stage"
    for _ in range(2):
        rc, out = make_in(src, "install", "DESTDIR=%s" % destdir)
        assert rc == 0, out
    assert_unchanged(system_dirs)


def test_activate_refuses_destdir(tmp_path, src, system_dirs):
    # A staged .so is not where an activated configuration would point.
    rc, out = make_in(src, "activate", "DESTDIR=%s" % tmp_path)
    assert rc != 0 and "without DESTDIR" in out, out
    assert not list(tmp_path.iterdir())
    assert_unchanged(system_dirs)


@pytest.mark.skipif(not shutil.which("a2enmod"),
                    reason="a2enmod missing (package apache2: test/deps.sh)")
def test_activate_on_a_debian_layout(tmp_path, src, system_dirs):
    """On a copy of Debian's /etc/apache2/mods-available (a2enmod pointed
    at it by APACHE_CONFDIR and APACHE_STATE_DIRECTORY): the .load with the
    module's path, the commented .conf, and a2enmod following the .load's
    "# Depends:" line."""
    etc = tmp_path / "etc" / "apache2"
    shutil.copytree("/etc/apache2/mods-available", etc / "mods-available")
    (etc / "mods-enabled").mkdir()
    modules = tmp_path / "modules"
    a2enmod = "env APACHE_CONFDIR=%s APACHE_STATE_DIRECTORY=%s a2enmod" % (
        etc, tmp_path / "state")
    rc, out = make_in(src, "activate", "SYSCONFDIR=%s" % etc,
                   "LIBEXECDIR=%s" % modules, "A2ENMOD=%s" % a2enmod)
    assert rc == 0, out
    assert (modules / "mod_gwe_balancer.so").is_file()
    load = (etc / "mods-available" / "gwe_balancer.load").read_text()
    assert "LoadModule gwe_balancer_module %s/mod_gwe_balancer.so" % modules \
        in load, load
    assert re.search(r"^# Depends: .*\bproxy_balancer\b", load, re.M), load
    assert (etc / "mods-available" / "gwe_balancer.conf").read_bytes() == \
        (src / "conf" / "gwe_balancer.conf").read_bytes()
    enabled = {p.name for p in (etc / "mods-enabled").iterdir()}
    for name in ("gwe_balancer.load", "gwe_balancer.conf",
                 "proxy_balancer.load", "proxy.load", "proxy_http.load",
                 "lbmethod_byrequests.load", "slotmem_shm.load"):
        assert name in enabled, (name, sorted(enabled), out)
    assert_unchanged(system_dirs)


def test_activate_on_a_rhel_layout(tmp_path, src, system_dirs):
    """RHEL/Rocky: SYSCONFDIR is /etc/httpd/conf, modules are loaded from
    /etc/httpd/conf.modules.d/*.conf; the module's file sorts after
    00-proxy.conf."""
    httpd = tmp_path / "etc" / "httpd"
    (httpd / "conf").mkdir(parents=True)
    (httpd / "conf.modules.d").mkdir()
    (httpd / "conf.modules.d" / "00-proxy.conf").write_text(
        "LoadModule proxy_module modules/mod_proxy.so\n")
    modules = tmp_path / "modules"
    rc, out = make_in(src, "activate", "SYSCONFDIR=%s" % (httpd / "conf"),
                   "LIBEXECDIR=%s" % modules)
    assert rc == 0, out
    assert (modules / "mod_gwe_balancer.so").is_file()
    confs = sorted(p.name for p in (httpd / "conf.modules.d").iterdir())
    assert confs == ["00-proxy.conf", "10-gwe_balancer.conf"], confs
    assert (httpd / "conf.modules.d" / "10-gwe_balancer.conf").read_text() \
        == "LoadModule gwe_balancer_module %s/mod_gwe_balancer.so\n" % modules
    assert not list((httpd / "conf").iterdir())
    assert_unchanged(system_dirs)


def test_activate_elsewhere_runs_apxs_a(tmp_path, src, system_dirs):
    """Any other layout: apxs -e -a (adds the LoadModule line to
    httpd.conf).  apxs is a stub here that records its arguments, since
    Debian's own apxs -a always writes to /etc/apache2."""
    log = tmp_path / "apxs.log"
    stub = tmp_path / "apxs"
    stub.write_text("#!/bin/sh\necho \"$*\" >> '%s'\n" % log)
    stub.chmod(0o755)
    modules = tmp_path / "modules"
    rc, out = make_in(src, "activate", "APXS=%s" % stub,
                   "SYSCONFDIR=%s" % (tmp_path / "conf"),
                   "LIBEXECDIR=%s" % modules)
    assert rc == 0, out
    calls = log.read_text().splitlines()
    assert calls[-1] == "-e -a -n gwe_balancer .libs/mod_gwe_balancer.so", \
        calls
    assert_unchanged(system_dirs)


# httpd API that 2.4.37 (the floor) lacks: a module calling any of it fails
# to load there (undefined symbol) or to build (struct fields).  Checked by
# building 2.4.37 from its release tag (COMPAT.md in the project's shared
# notes).
NEWER_THAN_2_4_37 = [
    "proxy_hook_check_trans", "ap_proxy_tunnel_create", "ap_proxy_tunnel_run",
    "ap_proxy_worker_can_upgrade", "ap_proxy_get_worker_ex",
    "ap_proxy_define_worker_ex", "ap_proxy_define_match_worker",
    "ap_proxy_determine_address", "ap_proxy_canonenc_ex",
    "ap_proxy_prefetch_input", "ap_proxy_read_input", "ap_proxy_spool_input",
    "ap_proxy_should_override", "name_ex", "hostname_ex",
]


def unguarded_uses(source, names):
    """(line number, name) of each use of names in C source outside an
    #if/#elif whose condition tests AP_MODULE_MAGIC_AT_LEAST (comments and
    strings ignored; the #else branch of such an #if counts as unguarded)."""
    # Blank out comments and string literals, keeping line numbers.
    def blank(m):
        return re.sub(r"[^\n]", " ", m.group(0))
    code = re.sub(r'/\*.*?\*/|//[^\n]*|"(?:\\.|[^"\\\n])*"', blank, source,
                  flags=re.S)
    word = re.compile(r"\b(%s)\b" % "|".join(map(re.escape, names)))
    stack, found = [], []       # stack: is each open conditional a guard?
    for n, line in enumerate(code.splitlines(), 1):
        directive = re.match(r"\s*#\s*(\w+)(.*)", line)
        if directive:
            kind, rest = directive.groups()
            if kind in ("if", "ifdef", "ifndef"):
                stack.append("AP_MODULE_MAGIC_AT_LEAST" in rest)
            elif kind == "elif" and stack:
                stack[-1] = "AP_MODULE_MAGIC_AT_LEAST" in rest
            elif kind == "else" and stack:
                stack[-1] = False
            elif kind == "endif" and stack:
                stack.pop()
            continue
        if not any(stack):
            found += [(n, m.group(1)) for m in word.finditer(line)]
    return found


def test_newer_httpd_api_is_guarded():
    found = []
    for path in sorted(REPO.glob("*.[ch]")):
        found += [(path.name,) + use for use in
                  unguarded_uses(path.read_text(), NEWER_THAN_2_4_37)]
    assert not found, (
        "the module uses httpd API that 2.4.37 lacks, unguarded "
        "(wrap it in #if AP_MODULE_MAGIC_AT_LEAST(...) with a fallback, and "
        "say in README's compatibility table what older httpd gets): %s"
        % found)


def test_the_guard_check_itself():
    src = '''
    /* ap_proxy_tunnel_create in a comment */
    const char *s = "ap_proxy_tunnel_create";
    #if AP_MODULE_MAGIC_AT_LEAST(20210531, 0)
        ap_proxy_tunnel_create(a, b, c);
    #else
        ap_proxy_tunnel_run(t);
    #endif
    worker->s->name_ex;
    '''
    assert unguarded_uses(src, NEWER_THAN_2_4_37) == [
        (7, "ap_proxy_tunnel_run"), (9, "name_ex")]
