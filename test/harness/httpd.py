"""Private instances of Debian's /usr/sbin/apache2: each with its own
ServerRoot, config, PidFile, runtime dir and ports, all on 127.0.0.1.
Nothing here touches /etc/apache2 or the system's apache2 service."""

import http.client
import os
import re
import signal
import stat
import subprocess
import tempfile
import time
from pathlib import Path

from .base import (APACHE2, MODULES_DIR, HarnessError, free_port,
                   port_accepts, wait_until)
from .clients import http_get
from .logs import (ACCESS_FIELDS, BAD_LEVEL, CRASH, GLOBAL_ALLOWED,
                   SANITIZER, parse_access_log, sanitizer_block,
                   sanitizer_preload, sanitizer_report_dir)
from .processes import (_started, become_subreaper, created_httpds,
                        group_members, pid_alive, reap_apache_zombies)

# The modules every instance loads, in load order (after the MPM).
BASE_MODULES = ["authz_core", "authz_host", "headers", "proxy", "proxy_http",
                "proxy_balancer", "slotmem_shm", "lbmethod_byrequests",
                "lbmethod_bybusyness", "status"]


class Httpd:
    """One private httpd: its own ServerRoot (root_dir) with conf/, logs/,
    run/ (DefaultRuntimeDir, PidFile, mutexes), and its own port.

    Typical use:
        h = Httpd(tmp_path / "httpd")
        h.write_config(balancer_block("gwe", nodes, "byrequests") +
                       'ProxyPass "/server" "balancer://gwe"\\n')
        h.start(); http_get(h.port, "/server/about"); h.stop()

    wrapper: argv words put before apache2 where it is started (-k start),
    e.g. ["valgrind", "--tool=callgrind", ...]; configtest() runs apache2
    alone.  apache2 -k start forks and detaches without exec, so the
    daemon and its children run under the wrapper too.
    """

    READY_PATH = "/_harness/ready"

    def __init__(self, root_dir, module_path=None, loglevel="warn",
                 mpm="event", modules=(), start_timeout=10, wrapper=None):
        self.root = Path(root_dir).resolve()
        if re.search(r"\s", str(self.root)):
            raise HarnessError("root_dir must not contain blanks (Mutex "
                               "file: cannot quote a path)")
        self.module_path = str(module_path) if module_path else None
        self.loglevel = loglevel
        self.mpm = mpm
        self.modules = list(modules)
        self.start_timeout = start_timeout
        self.wrapper = list(wrapper or [])
        self.port = free_port()
        self.extra_ports = []
        self.pid = None
        self._allowed = [re.compile(rx) for rx, _ in GLOBAL_ALLOWED]
        created_httpds.append(self)
        for sub in ("conf", "logs", "run"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        # Where ASan and UBSan write their reports, under GWB_APACHE_PRELOAD
        # (sanitizer_preload()); None otherwise.
        self.sanitizer_dir = (sanitizer_report_dir(self.root)
                              if sanitizer_preload() else None)

    conf_path = property(lambda self: self.root / "conf" / "httpd.conf")
    pid_path = property(lambda self: self.root / "run" / "httpd.pid")
    error_log_path = property(lambda self: self.root / "logs" / "error_log")
    access_log_path = property(lambda self: self.root / "logs" / "access_log")

    @property
    def url(self):
        return "http://127.0.0.1:%d" % self.port

    # -- configuration ------------------------------------------------------

    def _load_lines(self, body, modules, without=()):
        """LoadModule lines: MPM, base modules, extras, then the gwe module;
        minus any module the body loads itself, and those named in
        without."""
        in_body = set(re.findall(r"^\s*LoadModule\s+(\S+)", body, re.M))
        wanted = ["mpm_" + self.mpm] + BASE_MODULES
        for name in list(self.modules) + list(modules or []):
            if name not in wanted:
                wanted.append(name)
        wanted = [name for name in wanted if name not in without]
        lines = []
        for name in wanted:
            ident = name + "_module"
            if ident not in in_body:
                lines.append('LoadModule %s "%s"'
                             % (ident, MODULES_DIR / ("mod_%s.so" % name)))
        if self.module_path and "gwe_balancer_module" not in in_body:
            lines.append('LoadModule gwe_balancer_module "%s"'
                         % self.module_path)
        return lines

    def base_config(self, body="", extra_listen=None, modules=None,
                    without=()):
        """The config written before the test's body."""
        root = self.root
        listens = ["Listen 127.0.0.1:%d" % self.port]
        for item in extra_listen or []:
            item = str(item)
            listens.append("Listen " + (item if ":" in item
                                        else "127.0.0.1:" + item))
        log_format = "\\t".join(
            ('\\"%s\\"' % fmt) if name in ("request", "cookie") else fmt
            for name, fmt in ACCESS_FIELDS)
        lines = [
            "# Written by test/harness/: a private httpd, nothing shared "
            "with the system's.",
            'ServerRoot "%s"' % root,
            "ServerName 127.0.0.1",
        ] + listens + [
            'PidFile "%s"' % self.pid_path,
            'DefaultRuntimeDir "%s"' % (root / "run"),
            # File-based mutexes (if any mechanism needs one) live here too.
            # No quotes possible here: httpd takes "file:..." as one word.
            "Mutex file:%s default" % (root / "run"),
            'ErrorLog "%s"' % self.error_log_path,
            "LogLevel %s" % self.loglevel,
            'DocumentRoot "%s"' % _empty_docroot(),
            # Short enough that a hung backend fails a test, not the suite.
            "Timeout 10",
            "KeepAliveTimeout 5",
            "GracefulShutdownTimeout 5",
        ]
        if os.geteuid() == 0:
            lines += ["User www-data", "Group www-data"]
        lines += self._load_lines(body, modules, without)
        lines += [
            'LogFormat "%s" harness' % log_format,
            # The harness's own readiness probes stay out of the log.
            'CustomLog "%s" harness "expr=%%{REQUEST_URI} !~ m#^/_harness/#"'
            % self.access_log_path,
            # No .htaccess lookups (the compiled-in default is AllowOverride
            # All, and each lookup under pytest's 0700 tmp dirs fails with
            # AH00529 at level crit).
            '<Directory "/">',
            "    AllowOverride None",
            "</Directory>",
        ]
        return "\n".join(lines) + "\n"

    def tail_config(self):
        """The config written after the test's body: the readiness probe,
        answered by mod_status and never proxied.  ProxyPass "!" in a
        Location beats any ProxyPass "/...", and, being the last Location,
        also a <Location "/"> with a ProxyPass in the body."""
        return ('<Location "%s">\n'
                '    ProxyPass "!"\n'
                '    SetHandler server-status\n'
                '    Require ip 127.0.0.1\n'
                '</Location>\n' % self.READY_PATH)

    def write_config(self, body, extra_listen=None, modules=None,
                     without=()):
        """Write conf/httpd.conf: the base config, then body.  extra_listen:
        more ports (int) or "addr:port" to listen on; modules: more module
        names ("http2", "proxy_wstunnel"...) to load before the gwe module;
        without: names of BASE_MODULES (or of modules) not to load."""
        self.extra_ports = [int(str(p).rsplit(":", 1)[-1])
                            for p in extra_listen or []]
        text = (self.base_config(body, extra_listen, modules, without)
                + "\n# --- test body ---\n" + body
                + "\n# --- end of test body ---\n" + self.tail_config())
        self.conf_path.write_text(text)
        return text

    # -- lifecycle ----------------------------------------------------------

    def _cmd(self, *args):
        return [APACHE2, "-d", str(self.root), "-f", str(self.conf_path)] \
            + list(args)

    def _run(self, *args, timeout=30, wrapper=()):
        """Run apache2 with args; return (returncode, stdout+stderr).
        Output goes through a file, not a pipe, which the daemon that -k
        start leaves behind could hold open, and so block the read."""
        become_subreaper()
        out_path = self.root / "logs" / "apache2.out"
        with open(out_path, "w+b") as out:
            rc = subprocess.call(list(wrapper) + self._cmd(*args),
                                 stdin=subprocess.DEVNULL,
                                 stdout=out, stderr=subprocess.STDOUT,
                                 timeout=timeout,
                                 env=_apache_env(self.sanitizer_dir))
            out.seek(0)
            return rc, out.read().decode(errors="replace")

    def configtest(self):
        """(returncode, output) of apache2 -t."""
        return self._run("-t", wrapper=self.wrapper)

    def run_cfg_defines(self):
        """The variables httpd ends up with, as apache2 -t -D DUMP_RUN_CFG
        shows them (GWEBalancerSizing's among them)."""
        rc, out = self._run("-t", "-D", "DUMP_RUN_CFG", wrapper=self.wrapper)
        if rc != 0:
            raise HarnessError("apache2 -t -D DUMP_RUN_CFG exited %d\n%s"
                               % (rc, out))
        return dict(re.findall(r"^Define: (\w+)=(.*)$", out, re.M))

    def start(self):
        """Start; return once the server answers a request.  Raises
        HarnessError with the output and error_log tail on failure."""
        if not self.conf_path.exists():
            raise HarnessError("write_config() first")
        self._clear_stale_pidfile()
        rc, out = self._run("-k", "start", wrapper=self.wrapper)
        if rc != 0:
            raise HarnessError("apache2 -k start exited %d\n%s"
                               % (rc, self._diagnostics(out)))
        try:
            self.pid = wait_until(self._read_pid, self.start_timeout,
                                  what="the pid file %s" % self.pid_path)
            _started.append(self)
            self.wait_ready()
        except HarnessError as e:
            self.stop()
            raise HarnessError("%s\n%s" % (e, self._diagnostics(out)))
        return self

    def start_expect_failure(self, timeout=None):
        """For startup-failure tests: run apache2 -k start and return
        (returncode, output + error_log).  A failure detected after httpd
        detached shows as returncode 0 and no server answering; if the
        server does come up, it is stopped and HarnessError raised."""
        self._clear_stale_pidfile()
        rc, out = self._run("-k", "start", wrapper=self.wrapper)
        if rc == 0:
            timeout = self.start_timeout if timeout is None else timeout
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                pid = self._read_pid()
                if pid and not pid_alive(pid):
                    break
                # A failure after detaching (post_config) leaves no pid
                # file; httpd says so in error_log.
                if "AH00020: Configuration Failed" in self.error_log():
                    break
                if pid and self._answers():
                    self.pid = pid
                    _started.append(self)
                    self.stop()
                    raise HarnessError("httpd started, though a failure "
                                       "was expected:\n" + out)
                time.sleep(0.05)
            else:
                # Neither up nor down: do not leave it behind.
                pid = self._read_pid()
                if pid:
                    self.pid = pid
                    self.stop()
            reap_apache_zombies()
        return rc, out + self.error_log()

    def wait_ready(self, timeout=None):
        """Wait until the port accepts connections and a request answers."""
        timeout = self.start_timeout if timeout is None else timeout

        def ready():
            if self.pid and not pid_alive(self.pid):
                raise HarnessError("httpd (pid %d) died" % self.pid)
            return self._answers()
        wait_until(ready, timeout, what="httpd on port %d to answer"
                   % self.port)

    def _answers(self):
        if not port_accepts(self.port):
            return False
        try:
            http_get(self.port, self.READY_PATH, timeout=2)
            return True         # any status: it is httpd answering
        except (OSError, http.client.HTTPException):
            return False

    def _clear_stale_pidfile(self):
        """Refuse to start twice; remove a pid file left by a killed
        instance (else httpd warns AH00098, or, should its pid have been
        reused, believes itself running and exits 0)."""
        pid = self._read_pid()
        if pid and self._is_ours(pid):
            raise HarnessError("httpd %s is already running (pid %d)"
                               % (self.root, pid))
        if self.pid_path.exists():
            self.pid_path.unlink()

    def _is_ours(self, pid):
        """pid is alive and an apache2 started with this config."""
        if not pid_alive(pid):
            return False
        try:
            with open("/proc/%d/cmdline" % pid, "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            return False
        return str(self.conf_path).encode() in argv

    def _read_pid(self):
        try:
            return int(self.pid_path.read_text().strip())
        except (OSError, ValueError):
            return None

    @property
    def running(self):
        return bool(self.pid) and self._is_ours(self.pid)

    def child_pids(self):
        """PIDs of the children of the running parent."""
        return [p for p in group_members(self.pid) if p != self.pid] \
            if self.pid else []

    def stop(self, timeout=10, graceful_timeout=6):
        """Graceful stop (SIGWINCH): once the children have exited, or
        after graceful_timeout, SIGTERM; wait until the parent and its
        children are gone, and SIGKILL the process group if they are not
        gone within timeout after that.

        Why graceful first: on SIGTERM, httpd 2.4.71's event MPM closes the
        sockets of connections that worker threads are still finishing
        (close_worker_sockets()) while those threads free them, and the
        child sometimes dies of SIGSEGV in apr_os_sock_get() (seen about
        once in 150 stops on a loaded machine; no module code on the stack).
        A graceful stop lets the workers finish instead.  The SIGTERM that
        follows finds no child left; it only spares us the parent's
        one-second polls for exited children."""
        pid = self.pid
        if pid is None:
            pid = self._read_pid()
            if not pid or not self._is_ours(pid):
                return          # not started, or the pid file is stale
        # The parent reaps its children before it exits; wait for them too,
        # since a child left behind (e.g. after the parent was killed) would
        # keep the port.  httpd called setsid() when it detached, so its
        # process group is its pid.
        def children_gone():
            return not [p for p in group_members(pid) if p != pid]

        def gone():
            return not pid_alive(pid) and not group_members(pid)
        if self._is_ours(pid):
            os.kill(pid, signal.SIGWINCH)
            try:
                wait_until(children_gone, graceful_timeout,
                           what="httpd pid %d's children to stop "
                           "gracefully" % pid)
            except HarnessError:
                pass
            if self._is_ours(pid):
                os.kill(pid, signal.SIGTERM)
        try:
            wait_until(gone, timeout, what="httpd pid %d and its children "
                       "to exit" % pid)
        except HarnessError:
            try:
                os.killpg(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            wait_until(lambda: not pid_alive(pid) and not group_members(pid),
                       5, what="httpd process group %d to die" % pid)
        reap_apache_zombies()
        self.pid = None

    def _generation_count(self):
        return self.error_log().count("resuming normal operations")

    def _signal_restart(self, sig, timeout):
        if not self.running:
            raise HarnessError("httpd is not running")
        before = self._generation_count()
        os.kill(self.pid, sig)
        try:
            wait_until(lambda: self._generation_count() > before
                       or not pid_alive(self.pid), timeout,
                       what="a new generation")
        except HarnessError as e:
            raise HarnessError("%s\n%s" % (e, self._diagnostics("")))
        if not pid_alive(self.pid):
            raise HarnessError("httpd died on restart\n"
                               + self._diagnostics(""))
        self.wait_ready()

    def graceful(self, timeout=10):
        """Graceful restart (SIGUSR1): re-read the config; return once the
        new generation answers.  The "resuming normal operations" notice is
        logged whatever the LogLevel."""
        self._signal_restart(signal.SIGUSR1, timeout)

    def restart(self, timeout=10):
        """Hard restart (SIGHUP), like graceful()."""
        self._signal_restart(signal.SIGHUP, timeout)

    # -- logs ---------------------------------------------------------------

    def error_log(self):
        try:
            return self.error_log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def access_log(self):
        try:
            return self.access_log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def access_entries(self, count=None, timeout=5):
        """The access log as dicts (see ACCESS_FIELDS; "-" for unset
        fields).  httpd writes a line after sending the response, so with
        count, wait until at least count lines are there."""
        if count is not None:
            wait_until(lambda: len(parse_access_log(self.access_log()))
                       >= count, timeout,
                       what="%d access log lines" % count)
        return parse_access_log(self.access_log())

    def wait_for_log(self, pattern, timeout=5, since=0):
        """Wait until error_log (from offset since) matches pattern; return
        the match."""
        rx = re.compile(pattern)
        return wait_until(lambda: rx.search(self.error_log()[since:]),
                          timeout, what="error_log to match %r" % pattern)

    def allow(self, regex):
        """Accept error_log lines matching regex in unexpected_log_lines()."""
        self._allowed.append(re.compile(regex))

    def unexpected_log_lines(self):
        """error_log lines of level warn or worse, or telling of a crashed
        child, not matched by an allowed regex; then, never allowed, error_log
        lines of a sanitizer report and every sanitizer report file (see
        sanitizer_reports()), each as one entry holding the whole report."""
        bad = []
        lines = self.error_log().splitlines()
        skip_to = 0
        for i, line in enumerate(lines):
            if i < skip_to:
                continue
            if SANITIZER.search(line):
                block = sanitizer_block(lines, i)
                bad.append("\n".join(block))
                skip_to = i + len(block)
                continue
            if not (BAD_LEVEL.search(line) or CRASH.search(line)):
                continue
            if any(rx.search(line) for rx in self._allowed):
                continue
            bad.append(line)
        for path, text in self.sanitizer_reports():
            bad.append("sanitizer report %s:\n%s" % (path, text))
        return bad

    def sanitizer_reports(self):
        """[(path, text)]: the report files that ASan or UBSan wrote for
        this httpd's processes (parent, children, apache2 -t and -k start)
        under GWB_APACHE_PRELOAD, and the reports in the output of the last
        apache2 command (logs/apache2.out)."""
        reports = []
        # gcc's UBSan runtime ignores log_path when ASan is loaded too, and
        # writes to stderr: error_log for httpd, once it runs (see
        # unexpected_log_lines()), and the output of apache2 itself before.
        out_path = self.root / "logs" / "apache2.out"
        try:
            out = out_path.read_text(errors="replace").splitlines()
        except OSError:
            out = []
        i = 0
        while i < len(out):
            if SANITIZER.search(out[i]):
                block = sanitizer_block(out, i)
                reports.append((str(out_path), "\n".join(block)))
                i += len(block)
            else:
                i += 1
        if not self.sanitizer_dir or not self.sanitizer_dir.is_dir():
            return reports
        for path in sorted(self.sanitizer_dir.iterdir()):
            try:
                text = path.read_text(errors="replace")
            except OSError as e:
                text = "(unreadable: %s)" % e
            lines = text.splitlines()
            if len(lines) > 300:
                lines = lines[:300] + ["... (%d more lines in %s)"
                                       % (len(lines) - 300, path)]
            reports.append((str(path), "\n".join(lines)))
        return reports

    def _diagnostics(self, output):
        tail = "\n".join(self.error_log().splitlines()[-40:])
        return ("--- apache2 output ---\n%s\n--- error_log tail (%s) ---\n%s"
                % (output.strip(), self.error_log_path, tail))

    def __repr__(self):
        return "<Httpd %s port=%d pid=%s>" % (self.root, self.port, self.pid)


def _empty_docroot():
    """An empty directory that the www-data children can search, for the
    DocumentRoot.  Even requests that a handler answers (server-status,
    balancer-manager) walk the DocumentRoot, and a docroot under pytest's
    tmp dirs (mode 0700) logs AH00035 "search permissions are missing" at
    level error for each; a missing one warns AH00112 at startup."""
    path = Path(tempfile.gettempdir()) / ("gwb-harness-docroot-%d"
                                          % os.geteuid())
    try:
        path.mkdir(mode=0o755)
    except FileExistsError:
        pass
    st = path.lstat()
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid():
        raise HarnessError("%s is not a directory of ours" % path)
    os.chmod(path, 0o755)
    return path


def _apache_env(sanitizer_dir=None):
    """The environment for apache2: no APACHE_* variables from the caller,
    so that nothing from Debian's envvars setup leaks into a private run.

    Under GWB_APACHE_PRELOAD (see sanitizer_preload()): LD_PRELOAD gets
    those libraries first, and ASAN_OPTIONS and UBSAN_OPTIONS (the caller's,
    passed through) end with log_path= in sanitizer_dir, so that every
    report lands in a file of its own, asan.PID or ubsan.PID.  apache2 -k
    start forks and detaches, and its children fork from it, all without
    exec: they keep this environment, and the runtimes it preloads."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("APACHE_")}
    env.setdefault("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
    env["LANG"] = "C"
    preload = sanitizer_preload()
    if preload:
        env["LD_PRELOAD"] = " ".join(
            filter(None, [preload, env.get("LD_PRELOAD", "")]))
        if sanitizer_dir:
            for var, prefix in (("ASAN_OPTIONS", "asan"),
                                ("UBSAN_OPTIONS", "ubsan")):
                env[var] = ":".join(filter(None, [
                    env.get(var, ""),
                    "log_path=%s" % (Path(sanitizer_dir) / prefix)]))
    return env
