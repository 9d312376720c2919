"""Integration-test harness for mod_gwe_balancer.

Runs private instances of Debian's /usr/sbin/apache2 (each with its own
ServerRoot, config, PidFile, runtime dir and ports, all on 127.0.0.1) in
front of demo GWE nodes (test/gwe_node.py), and talks to them over HTTP/1.1,
HTTP/2 and WebSocket.  Split by concern, as httpd's own pyhttpd is:

- base: paths, HarnessError, wait_until, free_port, port_accepts;
- processes: the demo node (Node), PIDs, reaping, stop_all;
- httpd: a private httpd (Httpd), its config, lifecycle and logs;
- logs: the access log format, error_log rules, sanitizer reports;
- clients: HTTP/1.1, h2c and WebSocket clients and their Response;
- configs: balancer, balancer-manager and metrics config snippets;
- manager: BalancerManager, the balancer-manager driver;
- prometheus: Debian's Prometheus scraping /metrics, and promtool;
- shipped: conf/httpd-gwe-balancer.conf as a user runs it, plain and TLS;
- load: the load generator of the fault and soak runs;
- tls: a throwaway CA and a certificate it signed;
- browser: Chromium's tools, test/browser's npm packages, a trusting HOME;
- fleet: WebSocket visitors that reconnect with their cookie, as CometD;
- tree: a scratch copy of the working tree.

Every public name is here too: `import harness; harness.Httpd`.  Standard
library only (python3-websockets when a WebSocket is opened).  Nothing here
touches /etc/apache2 or the system's apache2 service, and every process is
stopped by its own PID.
"""

from .base import (APACHE2, MODULE_SO, MODULES_DIR, NODE_SCRIPT, PYTHON,
                   REPO_DIR, TEST_DIR, HarnessError, free_port, port_accepts,
                   wait_until)
from .clients import (HttpSession, Response, cometd_connect, cometd_handshake,
                      curl_get, h2c_get, http_get, http_request, raw_http,
                      ws_cometd_sessions, ws_node, ws_talk)
from .configs import (MANY_CHILDREN, PROXYPASS, balancer_block,
                      balancer_manager_block, metrics_block, route_cookie,
                      twin_balancers, worker_url)
from .httpd import BASE_MODULES, Httpd
from .fleet import Tunnel, TunnelFleet
from .load import LoadGenerator, Phase
from .logs import (ACCESS_FIELDS, BAD_LEVEL, CONNECT_ERRORS, CRASH,
                   GLOBAL_ALLOWED, SANITIZER, parse_access_log,
                   sanitizer_block, sanitizer_preload, sanitizer_report_dir)
from .manager import BalancerManager
from .prometheus import Prometheus, missing_prometheus, run_promtool
from .processes import (Node, become_subreaper, created_httpds, group_members,
                        pid_alive, reap_apache_zombies, stop_all)
from .shipped import (SHIPPED_CONF, TLS_ENVIRONMENT_WARNINGS, ShippedHttpd,
                      TlsHttpd, make_cert, shipped_defines)
from .tls import make_ca_signed_cert
from .browser import (ARTIFACTS, BROWSER_DIR, CHROMIUM, NODEJS,
                      install_browser_packages, missing_browser_tools, npm,
                      packages_not_installed, trusting_home)
from .tree import copy_working_tree, tree_entries

__all__ = [
    "APACHE2", "MODULE_SO", "MODULES_DIR", "NODE_SCRIPT", "PYTHON",
    "REPO_DIR", "TEST_DIR", "HarnessError", "free_port", "port_accepts",
    "wait_until",
    "HttpSession", "Response", "cometd_connect", "cometd_handshake",
    "curl_get", "h2c_get", "http_get", "http_request", "raw_http",
    "ws_cometd_sessions", "ws_node", "ws_talk",
    "MANY_CHILDREN", "PROXYPASS", "balancer_block", "balancer_manager_block",
    "metrics_block", "route_cookie", "twin_balancers", "worker_url",
    "BASE_MODULES", "Httpd",
    "Tunnel", "TunnelFleet",
    "LoadGenerator", "Phase",
    "ACCESS_FIELDS", "BAD_LEVEL", "CONNECT_ERRORS", "CRASH",
    "GLOBAL_ALLOWED", "SANITIZER", "parse_access_log", "sanitizer_block",
    "sanitizer_preload", "sanitizer_report_dir",
    "BalancerManager",
    "Prometheus", "missing_prometheus", "run_promtool",
    "Node", "become_subreaper", "created_httpds", "group_members",
    "pid_alive", "reap_apache_zombies", "stop_all",
    "SHIPPED_CONF", "TLS_ENVIRONMENT_WARNINGS", "ShippedHttpd", "TlsHttpd",
    "make_cert", "shipped_defines",
    "make_ca_signed_cert",
    "ARTIFACTS", "BROWSER_DIR", "CHROMIUM", "NODEJS",
    "install_browser_packages", "missing_browser_tools", "npm",
    "packages_not_installed", "trusting_home",
    "copy_working_tree", "tree_entries",
]
