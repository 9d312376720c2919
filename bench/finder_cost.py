#!/usr/bin/python3
"""What one routing decision costs, in instructions and allocations, under
callgrind: gwesticky against httpd's built-in sticky code, 2 to 256
members, with and without the cookie.  Numbers only: bench/README.md says
what they are held against.

For 2, 16, 64 and 256 balancer members, httpd (Debian's /usr/sbin/apache2,
one child process: benchlib.CallgrindHttpd, the test harness's Httpd with
valgrind --tool=callgrind as its wrapper) runs with

  gwesticky  ProxySet lbmethod=gwesticky (this module), and
  built-in   ProxySet stickysession=GWROUTEID lbmethod=byrequests
             (httpd alone: mod_gwe_balancer not loaded),

and is sent, over one keep-alive connection, M requests of each kind:

  cookie_last   Cookie: GWROUTEID=.GWE_Node_N  (the last member: the worst
                case of httpd's linear find_route_worker())
  cookie_first  Cookie: GWROUTEID=.GWE_Node_1
  no_cookie     no Cookie header: the lbmethod's own choice.

Callgrind counts are deterministic, so the numbers do not depend on the
machine's load.  What is measured per decision:

  pre_request   inclusive Ir of mod_proxy's proxy_run_pre_request(), which
                runs the proxy pre_request hooks: mod_proxy_balancer's,
                which makes the whole routing decision (balancer lookup,
                lock, sticky lookup or the lbmethod's finder, URL rewrite,
                BALANCER_* env), and, with mod_gwe_balancer loaded, its
                WebSocket handoff hook (reported on its own: "handoff").
                Debian strips mod_proxy_balancer's static functions, so
                this exported hook runner is the narrowest common scope.
  finder        inclusive Ir of gwb_find_worker() (our module is built with
                -g and not stripped).
  allocations   calls to pool allocators (apr_palloc, apr_pcalloc,
                apr_pvsprintf) and to the heap (malloc...) in the call tree
                below proxy_run_pre_request and below gwb_find_worker, with
                the call site in our source (file:line from the debug
                info) that led to each.

How the requests are cut out of the run without callgrind_control (whose
vgdb needs ptrace): callgrind dumps its counters at every call of
ap_send_error_response (--dump-before), which only a request for the local
path /_cg/mark (a 404) makes.  Warm-up (route index, connections), then a
mark, then each batch followed by a mark: each batch lands in a dump of its
own (benchlib.callgrind_run()).  proxy_run_pre_request is never called by
a mark, so the per-decision numbers need no correction.

Counts repeat to within a few Ir between runs: the ports and the run
directory (in URLs and paths that get copied and compared) change lengths.

Run as root (httpd's child then runs as www-data) or as any user.  Needs
(Debian): apache2-bin, valgrind, python3; the module built (.libs/, see
Makefile.apxs; this script does not build it, it copies the .so it
measures).  The node behind httpd is bench/node.py (not measured).

    /usr/bin/python3 bench/finder_cost.py [--quick] [--json FILE]

--keep leaves the run directory (configs, logs, the callgrind dumps, which
callgrind_annotate reads) in place and prints where it is.
"""

import argparse
import os

import benchlib
from benchlib import KINDS, BenchError, fmt
from finder_callgrind import HEAP_ALLOCATORS, label

MEMBER_COUNTS = (2, 16, 64, 256)
METHODS = {
    "gwesticky": {"proxyset": "ProxySet lbmethod=gwesticky",
                  "load_module": True},
    "built-in": {"proxyset": "ProxySet stickysession=%s lbmethod=byrequests"
                             % benchlib.COOKIE,
                 "load_module": False},
}


# ---------------------------------------------------------------------------
# Numbers from the dumps
# ---------------------------------------------------------------------------

def per_call(dump, function):
    calls, cost = dump.inclusive(function)
    return {"calls": calls, "ir": cost, "ir_per_call": cost / calls
            if calls else None}


def allocation_summary(dump, root, module_object, decisions):
    """Allocations per decision in the tree below root, and their sites."""
    found = dump.allocations_under(root, module_object)
    outer = sum(n for key, n in found.items() if not key[4])
    heap = sum(n for key, n in found.items() if key[3] in HEAP_ALLOCATORS)
    sites = [{"site": site, "api": api, "via": via, "allocator": alloc,
              "nested": nested, "per_decision": n / decisions}
             for (site, api, via, alloc, nested), n in sorted(found.items(),
                                                               key=str)]
    return {"per_decision": outer / decisions,
            "heap_per_decision": heap / decisions,
            "sites": sites,
            "truncated_contexts": len(dump.truncated)}


def breakdown(dump, function, decisions, title=None):
    """Where function's inclusive cost goes, per decision: its self cost,
    and [(callee, calls, Ir)] costliest first."""
    rows = [(label(key, with_object=True), calls / decisions,
             cost / decisions)
            for key, (calls, cost) in dump.callees(function).items()]
    return {"function": title or function,
            "self": dump.self_cost_of(function) / decisions,
            "callees": sorted(rows, key=lambda row: -row[2])}


def hook_of_balancer(dump):
    """The name of mod_proxy_balancer's pre_request hook (stripped: an
    address) among proxy_run_pre_request's callees."""
    for (obj, name) in dump.callees("proxy_run_pre_request"):
        if os.path.basename(obj).startswith("mod_proxy_balancer"):
            return obj, name
    return None


def measure(dump, method, module_object, requests):
    pre = per_call(dump, "proxy_run_pre_request")
    if pre["calls"] != requests:
        raise BenchError("%s: %d calls of proxy_run_pre_request, not %d"
                         % (dump.path, pre["calls"], requests))
    result = {"pre_request": pre,
              "pre_request_alloc": allocation_summary(
                  dump, "proxy_run_pre_request", module_object, requests)}
    # What the decision's cost is made of, outermost first.
    result["breakdown"] = [breakdown(dump, "proxy_run_pre_request",
                                     requests)]
    balancer_hook = hook_of_balancer(dump)
    if balancer_hook:
        result["breakdown"].append(breakdown(
            dump, balancer_hook[1], requests,
            label(balancer_hook) + " (mod_proxy_balancer's pre_request)"))
    if METHODS[method]["load_module"]:
        result["finder"] = per_call(dump, "gwb_find_worker")
        result["handoff"] = per_call(dump, "gwb_hand_off_websocket")
        result["finder_alloc"] = allocation_summary(
            dump, "gwb_find_worker", module_object, requests)
        result["index_builds"] = dump.inclusive("gwb_index_build")[0]
        result["breakdown"].append(breakdown(dump, "gwb_find_worker",
                                             requests))
    return result


# ---------------------------------------------------------------------------
# Reports
# ---------------------------------------------------------------------------

def report_finder(results, members_list, requests):
    out = []
    title = {"cookie_last": "cookie (last member)",
             "cookie_first": "cookie (first member)",
             "no_cookie": "no cookie"}

    def cell(method, n, kind, *keys):
        value = results.get(method, {}).get(n, {}).get(kind)
        for key in keys:
            value = value.get(key) if value else None
        return value

    out.append("## Instructions per routing decision "
               "(proxy_run_pre_request, inclusive Ir per call; %d calls each)"
               % requests)
    out.append("")
    head = ["members"] + ["%s, %s" % (m, title[k])
                          for m in METHODS for k in KINDS]
    out.append("| " + " | ".join(head) + " |")
    out.append("|" + "---:|" * len(head))
    for n in members_list:
        row = [str(n)] + [fmt(cell(m, n, k, "pre_request", "ir_per_call"))
                          for m in METHODS for k in KINDS]
        out.append("| " + " | ".join(row) + " |")
    out.append("")
    out.append("gwesticky's column includes mod_gwe_balancer's own "
               "pre_request hook (WebSocket handoff, which declines): see "
               "\"handoff\" below.  The built-in runs without "
               "mod_gwe_balancer loaded.")
    out.append("")

    out.append("## gwesticky: the finder alone (gwb_find_worker, inclusive "
               "Ir per call) and the handoff hook")
    out.append("")
    head = ["members"] + ["finder, %s" % title[k] for k in KINDS] + [
        "handoff hook", "pre_request minus finder, %s" % title[KINDS[0]]]
    out.append("| " + " | ".join(head) + " |")
    out.append("|" + "---:|" * len(head))
    for n in members_list:
        row = [str(n)]
        row += [fmt(cell("gwesticky", n, k, "finder", "ir_per_call"))
                for k in KINDS]
        row.append(fmt(cell("gwesticky", n, KINDS[0], "handoff",
                            "ir_per_call")))
        pre = cell("gwesticky", n, KINDS[0], "pre_request", "ir_per_call")
        fin = cell("gwesticky", n, KINDS[0], "finder", "ir_per_call")
        row.append(fmt(pre - fin if pre is not None and fin is not None
                       else None))
        out.append("| " + " | ".join(row) + " |")
    out.append("")

    out.append("## Allocations per decision (pool: apr_palloc/apr_pcalloc/"
               "apr_pvsprintf calls, not counting those inside another "
               "allocator; heap: malloc & co., all)")
    out.append("")
    head = ["members", "case", "pre_request: pool", "pre_request: heap",
            "gwb_find_worker: pool", "gwb_find_worker: heap"]
    out.append("| " + " | ".join(head) + " |")
    out.append("|---:|---|---:|---:|---:|---:|")
    for n in members_list:
        for m in METHODS:
            for k in KINDS:
                pa = cell(m, n, k, "pre_request_alloc")
                fa = cell(m, n, k, "finder_alloc")
                if not pa:
                    continue
                out.append("| %d | %s, %s | %s | %s | %s | %s |" % (
                    n, m, title[k], fmt(pa["per_decision"], 2),
                    fmt(pa["heap_per_decision"], 3),
                    fmt(fa["per_decision"], 2) if fa else "-",
                    fmt(fa["heap_per_decision"], 3) if fa else "-"))
    out.append("")
    out += report_sites(results, members_list)
    out += report_breakdown(results, members_list)
    out += report_spread(results, members_list)
    return "\n".join(out)


def site_chain(site):
    """site -> what it called [-> the allocator's caller] -> allocator
    (frames between the last two are left out)."""
    if site["api"] == site["allocator"]:
        return [site["site"], site["allocator"]]
    if site["via"] == site["api"]:
        return [site["site"], site["api"], site["allocator"]]
    return [site["site"], site["api"], site["via"], site["allocator"]]


def report_sites(results, members_list):
    """Where the allocations come from: below the finder for the smallest
    and largest member count, below proxy_run_pre_request (the same at any
    count) for the smallest."""
    out = ["## Allocation sites (calls per decision)", "",
           "Each: the call site -> what it called -> the function that "
           "called the allocator -> the allocator.  Sites in the "
           "module's source come from its debug info; elsewhere the "
           "last frame outside libapr/libc, object:function.", ""]
    for n in sorted({members_list[0], members_list[-1]}):
        for m in METHODS:
            for k in KINDS:
                case = results.get(m, {}).get(n, {}).get(k)
                if not case:
                    continue
                for scope in ("finder_alloc", "pre_request_alloc"):
                    if scope == "pre_request_alloc" and n != members_list[0]:
                        continue
                    summary = case.get(scope)
                    if not summary or not summary["sites"]:
                        continue
                    out.append("- %d members, %s, %s, below %s:" % (
                        n, m, k, "gwb_find_worker" if scope == "finder_alloc"
                        else "proxy_run_pre_request"))
                    for s in summary["sites"]:
                        out.append("    - %s%s: %s" % (
                            " -> ".join(site_chain(s)),
                            " (inside another allocator)" if s["nested"]
                            else "", fmt(s["per_decision"], 3)))
                    if summary["truncated_contexts"]:
                        out.append("    - (%d contexts too deep to attribute"
                                   "; raise SEPARATE_CALLERS)"
                                   % summary["truncated_contexts"])
    out.append("")
    return out


def report_breakdown(results, members_list):
    """What the decision is made of, per decision: proxy_run_pre_request's
    hooks, mod_proxy_balancer's hook (balancer lookup, lock, URL rewrite,
    env: common to both; the sticky lookup: the built-in's), and
    gwb_find_worker."""
    out = ["## What a decision is made of (Ir per decision: self cost, then "
           "callees' inclusive cost; cookie on the last member; Debian "
           "strips static functions, shown as object:address)", ""]
    for n in sorted({members_list[0], members_list[-1]}):
        for m in METHODS:
            case = results.get(m, {}).get(n, {}).get("cookie_last")
            if not case:
                continue
            out.append("- %d members, %s:" % (n, m))
            for part in case["breakdown"]:
                out.append("    - %s: self %s" % (part["function"],
                                                   fmt(part["self"])))
                for name, calls, ir in part["callees"]:
                    if ir >= 1:
                        out.append("        - %s (%s calls): %s"
                                   % (name, fmt(calls, 2), fmt(ir)))
    out.append("")
    return out


def report_spread(results, members_list):
    """How flat gwesticky's cost is with the cookie: lowest and highest
    over the member counts."""
    out = ["## gwesticky with the cookie (last member) over %s members"
           % "/".join(map(str, members_list)), ""]
    g = results.get("gwesticky", {})
    for scope in ("pre_request", "finder"):
        values = [g[n]["cookie_last"][scope]["ir_per_call"]
                  for n in members_list if n in g]
        if values:
            out.append("- %s: %s .. %s Ir per decision (spread %.1f%%)" % (
                scope, fmt(min(values)), fmt(max(values)),
                100.0 * (max(values) - min(values)) / min(values)))
    out.append("")
    return out


def index_rebuilds(results):
    """The member counts whose measured batches rebuilt the route index
    (the warm-up should have built it: such a run measures more than a
    decision)."""
    return sorted({n for n, kinds in results.get("gwesticky", {}).items()
                   for k in KINDS if kinds[k]["index_builds"]})


# ---------------------------------------------------------------------------

def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--members", default=",".join(map(str, MEMBER_COUNTS)),
                   help="member counts, comma-separated")
    p.add_argument("--quick", action="store_true",
                   help="smoke run: 2 and 256 members, 50 requests")
    benchlib.callgrind_arguments(p, mpm="event")
    args = p.parse_args(argv)
    args.members = [int(n) for n in args.members.split(",") if n]
    if args.quick:
        args.members, args.requests = [2, 256], 50
    return args


def main(argv=None):
    args = parse_args(argv)
    data = {}
    with benchlib.CallgrindRuns(args) as runs:
        for method, how in METHODS.items():
            for n in args.members:
                dumps = runs.run("%s-%d" % (method, n), n, how["proxyset"],
                                 KINDS, how["load_module"])
                data.setdefault(method, {})[n] = {
                    kind: measure(dumps[kind], method, runs.module_object,
                                  args.requests) for kind in KINDS}
    print(report_finder(data, args.members, args.requests))
    rebuilt = index_rebuilds(data)
    if rebuilt:
        print("note: the route index was rebuilt during a measured batch "
              "(members %s)" % rebuilt)
    print(runs.summary("finder", data))


if __name__ == "__main__":
    benchlib.run_main(main)
