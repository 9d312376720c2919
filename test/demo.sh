#!/bin/bash
# The demo: builds mod_gwe_balancer, installs it into a private ServerRoot
# and starts the shipped conf/httpd-gwe-balancer.conf on 127.0.0.1 in front of two
# demo GWE nodes.  Never touches the system's /etc/apache2 or its service.
#
#   bash test/demo.sh          install what is missing, build, start
#   bash test/demo.sh stop     stop what the demo started
#
# Ports: GWE_DEMO_PORT (balancer, default 8080) and GWE_DEMO_NODE_PORT
# (first node, default 9081; the second gets the next port).
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
root=${GWE_DEMO_DIR:-$repo/demo-run}
port=${GWE_DEMO_PORT:-8080}
node_port=${GWE_DEMO_NODE_PORT:-9081}
apache=/usr/sbin/apache2

stop_pid_file() {
    local f=$1 pid
    [ -f "$f" ] || return 0
    pid=$(cat "$f")
    if kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid"
        for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    fi
    rm -f "$f"
}

stop_demo() {
    stop_pid_file "$root/run/gwe-balancer.pid"
    stop_pid_file "$root/run/node1.pid"
    stop_pid_file "$root/run/node2.pid"
}

wait_for_port() {  # a readiness check: a node answers there, or through it
    for _ in $(seq 300); do  # 30 s: a loaded machine starts Python slowly
        curl -sf -o /dev/null "http://127.0.0.1:$1/server/isAlive" && return 0
        sleep 0.1
    done
    echo "demo: nothing answers on port $1" >&2
    return 1
}

start_node() {  # name, port, pid file
    /usr/bin/python3 "$repo/test/gwe_node.py" --name "$1" --port "$2" \
        >"$root/logs/$1.log" 2>&1 &
    echo $! >"$3"
    wait_for_port "$2"
}

if [ "${1:-}" = stop ]; then
    stop_demo
    echo "demo stopped"
    exit 0
fi

"$repo/test/deps.sh"
make -C "$repo" -f Makefile.apxs >/dev/null
stop_demo

mkdir -p "$root/modules" "$root/logs" "$root/run"
# The private ServerRoot's modules: httpd's own, plus ours installed by apxs.
ln -sf /usr/lib/apache2/modules/*.so "$root/modules/"
rm -f "$root/modules/mod_gwe_balancer.so"
make -C "$repo" -f Makefile.apxs install LIBEXECDIR="$root/modules" >/dev/null

start_node GWE_Node_1 "$node_port" "$root/run/node1.pid"
start_node GWE_Node_2 "$((node_port + 1))" "$root/run/node2.pid"

"$apache" -d "$root" -f "$repo/conf/httpd-gwe-balancer.conf" \
    -C "Define GWE_LISTEN 127.0.0.1:$port" \
    -C "Define GWE_MODULES $root/modules" \
    -C "Define GWE_LOGS $root/logs" \
    -C "Define GWE_RUN $root/run" \
    -C "Define GWE_NODE_1_NAME GWE_Node_1" \
    -C "Define GWE_NODE_1_ADDR 127.0.0.1:$node_port" \
    -C "Define GWE_NODE_2_NAME GWE_Node_2" \
    -C "Define GWE_NODE_2_ADDR 127.0.0.1:$((node_port + 1))" \
    -k start
wait_for_port "$port"

cat <<MSG

The GWE demo balancer runs on http://127.0.0.1:$port in front of
GWE_Node_1 (port $node_port) and GWE_Node_2 (port $((node_port + 1))).  Try:

  # no cookie: the least busy node answers and sets GWROUTEID
  curl -si http://127.0.0.1:$port/server/about

  # a visitor of GWE_Node_2 stays on GWE_Node_2
  curl -si -H 'Cookie: GWROUTEID=.GWE_Node_2' http://127.0.0.1:$port/server/about

  # a WebSocket upgrade follows the cookie too (101 from GWE_Node_1)
  curl -si -H 'Cookie: GWROUTEID=.GWE_Node_1' -H 'Connection: Upgrade' \
       -H 'Upgrade: websocket' -H 'Sec-WebSocket-Version: 13' \
       -H 'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==' --max-time 2 \
       http://127.0.0.1:$port/server/cometd

  # the seed's misspelled cookie works too
  curl -si -H 'Cookie: GWEROUTEID=.GWE_Node_1' http://127.0.0.1:$port/server/about

  # balancer-manager (from this machine only): drain or disable a node
  curl -s http://127.0.0.1:$port/balancer-manager

  # why each request went where it went
  tail $root/logs/gwe-balancer-access.log

Stop it all with:  bash test/demo.sh stop
MSG
