"""Node failures under load, through the shipped configuration with its
own timeouts and retry settings (conf/httpd-gwe-balancer.conf: connectiontimeout=3,
timeout=65, retry=10, failontimeout=On, health checks every 5 s).

While visitors of both nodes (and new visitors) keep sending GETs, node 2 is
killed and restarted, shut (connection refused) and restarted, frozen
(SIGSTOP: it accepts connections but never answers) and thawed, and made to
fail its isAlive and recover.  Asserted: no misroute ever (a live node's
visitors are always answered by that node), no error a visitor's retries
(two, 0.2 s apart) do not cover (except, once per visitor at most, the documented
timeout=65 for requests already sent to the node when it froze: nothing
can answer those sooner, and failontimeout then takes the node out), node 2
back after retry=, no crashed child.  The report (pytest -s shows it) gives
the counts, first-try errors and timeouts included.
"""

import signal

from harness import (CONNECT_ERRORS, LoadGenerator, ShippedHttpd, http_get,
                     wait_until)

RETRY = 10              # the shipped retry=
HC_WINDOW = 5 * 2 + 5   # hcinterval=5 x hcfails=2, plus one interval
TIMEOUT = 65            # the shipped timeout=


def test_faults_under_load(tmp_path, module_so, make_node):
    nodes = [make_node("GWE_Node_1"), make_node("GWE_Node_2")]
    node2 = nodes[1]
    h = ShippedHttpd(tmp_path / "shipped", module_so, nodes)
    for rx in CONNECT_ERRORS + [
            r"AH01102",     # error reading status line (node died mid-way)
            r"AH01084",     # the same while sending a POST's body
            r"AH01097",     # ... as mod_proxy_http reports it
            r"AH02460",     # failontimeout put the frozen node in error
            r"AH00898",     # error reading from the frozen node
            r"AH01110",     # the same, as logged on the tunnel/read path
            r"AH10230",     # mod_proxy_http: read timeout
            ]:
        h.allow(rx)
    h.start()

    down = set()
    visitors = ["GWE_Node_1", "GWE_Node_1", "GWE_Node_2", "GWE_Node_2",
                None, None]
    gen = LoadGenerator(h.port, visitors, healthy=lambda n: n not in down,
                        timeout=TIMEOUT + 25, max_seconds=400,
                        server_timeout=TIMEOUT).start()

    def served_by(node, answered, within, what):
        wait_until(lambda: http_get(h.port, "/server/about",
                                    cookie="GWROUTEID=." + node,
                                    timeout=TIMEOUT + 25).node == answered,
                   within, interval=0.25, what=what)

    def back():
        served_by("GWE_Node_2", "GWE_Node_2", RETRY + HC_WINDOW,
                  "GWE_Node_2 to rejoin")
        down.discard("GWE_Node_2")

    try:
        served_by("GWE_Node_2", "GWE_Node_2", 5, "warm-up")

        gen.new_phase("killed")
        down.add("GWE_Node_2")
        node2.signal(signal.SIGKILL)
        served_by("GWE_Node_2", "GWE_Node_1", 10, "failover from a dead node")
        node2.restart()
        back()

        gen.new_phase("port closed")
        down.add("GWE_Node_2")
        node2.stop()                        # nothing listens: refused
        served_by("GWE_Node_2", "GWE_Node_1", 10, "failover, port closed")
        node2.restart()
        back()

        gen.new_phase("frozen")
        down.add("GWE_Node_2")
        node2.signal(signal.SIGSTOP)
        served_by("GWE_Node_2", "GWE_Node_1", TIMEOUT + HC_WINDOW + 10,
                  "failover from a frozen node")
        node2.signal(signal.SIGCONT)
        back()

        gen.new_phase("isAlive fails")
        down.add("GWE_Node_2")
        node2.alive(False)
        served_by("GWE_Node_2", "GWE_Node_1", HC_WINDOW,
                  "health check to take the node out")
        node2.alive(True)
        back()

        gen.new_phase("all up")
        served_by("GWE_Node_1", "GWE_Node_1", 5, "a last round")
    finally:
        gen.stop()
        print("\n" + gen.report())

    for phase in gen.phases:
        assert phase.misroutes == [], phase.summary()
        assert phase.errors == phase.timeouts, phase.summary()
        assert phase.requests > 0, phase.summary()
    assert sum(p.timeouts for p in gen.phases) <= visitors.count(None) + \
        visitors.count("GWE_Node_2"), gen.report()
    log = h.error_log()
    assert "segfault" not in log and "exit signal" not in log
