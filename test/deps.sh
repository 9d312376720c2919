#!/bin/sh
# Installs, from Debian's packages, what building the module, the demo and
# the tests need.  Installs nothing when all of it is there already.
set -eu

PACKAGES="apache2-bin apache2-dev make gcc libc6-dev curl python3 \
python3-pytest python3-websockets python3-h2"

missing=""
for p in $PACKAGES; do
    if ! dpkg-query -W -f '${Status}\n' "$p" 2>/dev/null \
            | grep -q "install ok installed"; then
        missing="$missing $p"
    fi
done
[ -z "$missing" ] && exit 0

if [ "$(id -u)" != 0 ]; then
    echo "deps: these Debian packages are missing; install them as root:$missing" >&2
    exit 1
fi
echo "deps: installing$missing"
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
# shellcheck disable=SC2086
apt-get install -y -q --no-install-recommends $missing
