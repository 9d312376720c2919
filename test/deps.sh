#!/bin/sh
# Installs, from Debian's packages, what building the module, the demo and
# the tests need, plus any packages named as arguments (bench/run adds its
# own).  Installs nothing when all of it is there already.
set -eu

# clang and libclang-rt-14-dev (libFuzzer and the sanitizer runtimes, which
# clang only recommends): test/fuzz.
# apache2 (the full package: a2enmod, a2dismod), dpkg-dev, debhelper,
# build-essential, fakeroot and lintian: test/test_package.py builds the
# Debian package, lints it and installs it.
# prometheus (the service stays stopped, see below): test/test_metrics.py
# scrapes httpd with it; its promtool: test/test_alert_rules.py checks and
# unit-tests conf/gwe-balancer-alerts.yml.
# libnss3-tools (certutil): test/test_browser_cometd.py makes Chromium trust
# a throwaway CA.
PACKAGES="apache2-bin apache2-dev make gcc libc6-dev curl python3 \
python3-pytest python3-websockets python3-h2 \
apache2 dpkg-dev debhelper build-essential fakeroot lintian \
chromium libnss3-tools clang libclang-rt-14-dev openssl apache2-utils \
prometheus $*"

missing=""
for p in $PACKAGES; do
    if ! dpkg-query -W -f '${Status}\n' "$p" 2>/dev/null \
            | grep -q "install ok installed"; then
        missing="$missing $p"
    fi
done
# Node and npm drive Chromium (test/browser): Debian's when the machine has
# none (a machine may already have them from elsewhere, whose nodejs
# conflicts with Debian's npm package).
command -v node >/dev/null 2>&1 || missing="$missing nodejs"
command -v npm >/dev/null 2>&1 || missing="$missing npm"
[ -z "$missing" ] && exit 0

if [ "$(id -u)" != 0 ]; then
    echo "deps: these Debian packages are missing; install them as root:$missing" >&2
    exit 1
fi
echo "deps: installing$missing"
export DEBIAN_FRONTEND=noninteractive
# Installing apache2 would start the system's apache2 service; a
# policy-rc.d that denies every service action (as container images ship)
# keeps it stopped.  Only if there is none, and only for this install.
policy=/usr/sbin/policy-rc.d
if [ ! -e "$policy" ]; then
    trap 'rm -f "$policy"' EXIT
    printf '#!/bin/sh\n# test/deps.sh: no service starts while it installs\nexit 101\n' > "$policy"
    chmod 755 "$policy"
fi
apt-get update -q
# shellcheck disable=SC2086
apt-get install -y -q --no-install-recommends $missing
