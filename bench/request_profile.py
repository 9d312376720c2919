#!/usr/bin/python3
"""Where one proxied request's instructions go, under callgrind: the main
stages (inclusive), the shared objects and the top 15 functions (self
cost), with gwesticky, 2 members and the cookie; then the same stages for
httpd's built-in sticky code with this module loaded but unused (as in
http_bench.py's setup b), side by side: the whole request's cost, which
wall-clock rounds on a small machine cannot resolve to a per cent.
Numbers only.

httpd runs as for finder_cost.py (benchlib.CallgrindHttpd: one child
under callgrind, all requests over one keep-alive connection, batches cut
into dumps by mark requests), with the worker MPM, as shipped.  Per
request is net of the marks: an empty batch between two marks measures
what the marks themselves leave in a dump, and is subtracted.

Run as root (httpd's child then runs as www-data) or as any user.  Needs
(Debian): apache2-bin, valgrind, python3; the module built (.libs/).

    /usr/bin/python3 bench/request_profile.py [--json FILE] [--keep]
"""

import argparse

import benchlib
from benchlib import fmt
from finder_callgrind import label

# gwesticky, and httpd's own sticky code with this module loaded but unused.
METHODS = {
    "gwesticky": "ProxySet lbmethod=gwesticky",
    "built-in+module": "ProxySet stickysession=%s lbmethod=byrequests"
                       % benchlib.COOKIE,
}

# The stages of a proxied request: exported functions (their inclusive
# cost), outermost first.  Those absent from a dump are skipped.
PROFILE_STAGES = (
    ("ap_run_process_connection", "connection handler (all of a request's "
                                  "work on the connection)"),
    ("ap_read_request", "read and parse the request"),
    ("ap_process_request_internal", "request hooks before the handler "
                                    "(translate, map_to_storage, access, "
                                    "fixups)"),
    ("ap_invoke_handler", "handler (mod_proxy)"),
    ("proxy_run_pre_request", "routing decision (pre_request hooks)"),
    ("gwb_find_worker", "gwesticky finder"),
    ("ap_proxy_determine_connection", "backend address"),
    ("ap_proxy_acquire_connection", "backend connection from the pool"),
    ("ap_proxy_connect_backend", "backend connect / reuse check"),
    ("proxy_run_scheme_handler", "mod_proxy_http (request to the backend, "
                                 "response to the client)"),
    ("ap_proxy_release_connection", "backend connection back to the pool"),
    ("proxy_run_post_request", "post_request hooks"),
    ("ap_finalize_request_protocol", "end of response"),
    ("ap_run_log_transaction", "log_transaction hooks"),
    ("apr_pool_destroy", "pool destruction"),
)


def profile_numbers(dumps, requests):
    """Per request, net of the marks (the baseline dump)."""
    measured, base = dumps["cookie_last"], dumps["baseline"]
    total = (measured.total() - base.total()) / requests
    stages = []
    for function, what in PROFILE_STAGES:
        calls, cost = measured.inclusive(function)
        if not calls:
            continue
        base_calls, base_cost = base.inclusive(function)
        stages.append({"function": function, "what": what,
                       "calls_per_request": (calls - base_calls) / requests,
                       "ir": (cost - base_cost) / requests})
    objects = _net(measured.self_by_object(), base.self_by_object(),
                   requests)
    functions = _net(measured.self_by_function(), base.self_by_function(),
                     requests)
    return {"ir_per_request": total, "stages": stages,
            "objects": sorted(objects.items(), key=lambda kv: -kv[1]),
            "top_functions": sorted(functions.items(),
                                    key=lambda kv: -kv[1])[:15]}


def report_profile_against(mine, theirs):
    """The whole request, stage by stage, against httpd's built-in sticky
    code with this module loaded but unused (http_bench.py's setup b)."""
    out = ["## The whole request: gwesticky against httpd's built-in sticky "
           "code", "",
           "Built-in: `stickysession=GWROUTEID lbmethod=byrequests`, with "
           "mod_gwe_balancer loaded but not used by the balancer (as in "
           "http_bench.py's setup b).  Ir per request, 2 members, cookie.",
           "", "| function | gwesticky | built-in | difference |",
           "|---|---:|---:|---:|"]
    theirs_by_function = {s["function"]: s["ir"] for s in theirs["stages"]}
    rows = [("total", mine["ir_per_request"], theirs["ir_per_request"])]
    rows += [(s["function"], s["ir"], theirs_by_function.get(s["function"]))
             for s in mine["stages"]]
    for name, a, b in rows:
        out.append("| %s | %s | %s | %s |" % (
            name, fmt(a), fmt(b) if b is not None else "-",
            "%+.0f" % (a - b) if b is not None else "-"))
    return "\n".join(out) + "\n"


def _net(measured, base, requests):
    return {key: (measured[key] - base.get(key, 0)) / requests
            for key in measured}


def report_profile(p, requests):
    total = p["ir_per_request"]
    out = ["## Where a proxied request's instructions go (gwesticky, 2 "
           "members, cookie, keep-alive; %d requests, net of the marks)"
           % requests, "",
           "Total: %s Ir per request." % fmt(total), "",
           "### Stages (inclusive; nested stages are part of the ones "
           "above them)", "",
           "| function | stage | calls/request | Ir/request | share |",
           "|---|---|---:|---:|---:|"]
    for s in p["stages"]:
        out.append("| %s | %s | %s | %s | %.1f%% |" % (
            s["function"], s["what"], fmt(s["calls_per_request"], 2),
            fmt(s["ir"]), 100.0 * s["ir"] / total))
    out += ["", "### By shared object (self cost)", "",
            "| object | Ir/request | share |", "|---|---:|---:|"]
    for obj, ir in p["objects"]:
        if ir >= 0.5:
            out.append("| %s | %s | %.1f%% |" % (obj, fmt(ir),
                                                 100.0 * ir / total))
    out += ["", "### Top 15 functions (self cost)", "",
            "| function | object | Ir/request | share |",
            "|---|---|---:|---:|"]
    for (obj, name), ir in p["top_functions"]:
        out.append("| %s | %s | %s | %.1f%% |" % (
            label((obj, name)), obj, fmt(ir), 100.0 * ir / total))
    out.append("")
    return "\n".join(out)


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    benchlib.callgrind_arguments(p, mpm="worker")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    with benchlib.CallgrindRuns(args) as runs:
        data = {method: profile_numbers(
            runs.run(method, 2, proxyset, ["cookie_last"]), args.requests)
            for method, proxyset in METHODS.items()}
    print(report_profile(data["gwesticky"], args.requests))
    print(report_profile_against(data["gwesticky"], data["built-in+module"]))
    print(runs.summary("profile", data))


if __name__ == "__main__":
    benchlib.run_main(main)
