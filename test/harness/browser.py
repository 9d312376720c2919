"""Debian's Chromium under playwright-core (test/browser/): the tools it
needs, its npm packages, and a HOME whose NSS database trusts a CA."""

import json
import os
import shutil
import subprocess

from .base import TEST_DIR, HarnessError

BROWSER_DIR = TEST_DIR / "browser"
ARTIFACTS = TEST_DIR / "artifacts"
NODEJS = "/usr/bin/node"
CHROMIUM = "/usr/bin/chromium"


def missing_browser_tools():
    """The paths of node and chromium that are not installed."""
    return [path for path in (NODEJS, CHROMIUM)
            if not os.access(path, os.X_OK)]


def npm():
    """npm's path, or None."""
    return shutil.which("npm") or (
        "/usr/bin/npm" if os.access("/usr/bin/npm", os.X_OK) else None)


def _installed_version(package):
    try:
        with open(BROWSER_DIR / "node_modules" / package / "package.json") as f:
            return json.load(f)["version"]
    except (OSError, ValueError, KeyError):
        return None


def packages_not_installed():
    """The packages of package-lock.json that node_modules lacks, or holds
    in another version than the locked one."""
    with open(BROWSER_DIR / "package-lock.json") as f:
        packages = json.load(f)["packages"]
    return sorted(path[len("node_modules/"):]
                  for path, entry in packages.items()
                  if path.startswith("node_modules/")
                  and _installed_version(path[len("node_modules/"):])
                  != entry["version"])


def install_browser_packages():
    """`npm ci` in test/browser, unless node_modules already holds every
    locked package; never downloads a browser.  Raises HarnessError when
    it fails."""
    if not packages_not_installed():
        return
    env = dict(os.environ, PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD="1")
    proc = subprocess.run(
        [npm(), "ci", "--no-audit", "--no-fund"], cwd=str(BROWSER_DIR),
        env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, timeout=600)
    out = proc.stdout.decode(errors="replace")
    if proc.returncode != 0 or packages_not_installed():
        raise HarnessError("npm ci failed (exit %d), missing: %s\n%s" % (
            proc.returncode, ", ".join(packages_not_installed()), out))


def trusting_home(directory, ca):
    """directory made a HOME whose NSS database (~/.pki/nssdb, where
    Chromium on Linux looks) trusts the CA certificate ca for servers:
    certutil, from libnss3-tools."""
    nssdb = "sql:%s" % (directory / ".pki" / "nssdb")
    (directory / ".pki" / "nssdb").mkdir(parents=True, exist_ok=True)
    for args in (["-N", "--empty-password"],
                 ["-A", "-n", "gwe-balancer test CA", "-t", "C,,",
                  "-i", str(ca)]):
        proc = subprocess.run(["certutil", "-d", nssdb] + args,
                              stdin=subprocess.DEVNULL,
                              stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, timeout=60)
        if proc.returncode != 0:
            raise HarnessError("certutil %s: %s" % (
                " ".join(args), proc.stdout.decode(errors="replace")))
    return directory
