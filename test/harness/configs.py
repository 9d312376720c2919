"""Config snippets for a private httpd's body: balancers of demo nodes,
their WebSocket twins, balancer-manager, the route cookie."""

# /server of the balancer "gwe", as the shipped config maps it.
PROXYPASS = ('ProxyPass "/server" "balancer://gwe"\n'
             'ProxyPassReverse "/server" "balancer://gwe"\n')


# Several children with few threads each (event or worker MPM), so that
# concurrent requests really spread over processes: what is shared between
# processes (counters, the GWB0204 minute) is then put to the test.
MANY_CHILDREN = ("StartServers 3\nMinSpareThreads 4\nMaxSpareThreads 16\n"
                 "ThreadsPerChild 4\nThreadLimit 4\nServerLimit 8\n"
                 "MaxRequestWorkers 32\n")


def route_cookie(node, name="GWROUTEID"):
    """The route cookie a node sets (NAME=.<node name>)."""
    return "%s=.%s" % (name, node.name)


def worker_url(node, path="/server", scheme="http"):
    """The member URL balancer_block() gives node (a Node, anything with a
    .port, or a port)."""
    port = int(getattr(node, "port", node))
    return "%s://127.0.0.1:%d%s" % (scheme, port, path)


def balancer_block(name, nodes, lbmethod="gwesticky", proxyset="",
                   member_params="", scheme="http"):
    """A <Proxy "balancer://name"> section with one member per node:
    BalancerMember "http://127.0.0.1:PORT/server" route=NODE_NAME.  With
    ProxyPass "/server" "balancer://name", /server/about reaches the node's
    /server/about.  nodes: Node objects (anything with .name and .port) or
    (route, port) pairs; proxyset is appended to ProxySet; member_params
    to every member (a str), or to some (a dict: node name -> params);
    scheme "ws" makes a WebSocket balancer."""
    lines = ['<Proxy "balancer://%s">' % name]
    for node in nodes:
        route, port = node if isinstance(node, tuple) else (node.name,
                                                            node.port)
        params = (member_params.get(route, "")
                  if isinstance(member_params, dict) else member_params)
        lines.append('    BalancerMember "%s" route=%s %s'
                     % (worker_url(port, scheme=scheme), route, params))
    lines.append("    ProxySet lbmethod=%s %s" % (lbmethod, proxyset))
    lines.append("</Proxy>")
    return "\n".join(line.rstrip() for line in lines) + "\n"


def twin_balancers(nodes, ws_nodes=None, params=None, proxyset="",
                   ws_proxyset="", lbmethod="gwesticky"):
    """balancer://gwe (http://) and balancer://gwe-ws (ws://, gwesticky)
    over the same nodes (or ws_nodes), the WebSocket handoff between them,
    and ProxyPass /server.  params: node name -> member parameters, in
    both."""
    params = params or ""
    ws_nodes = nodes if ws_nodes is None else ws_nodes
    return (balancer_block("gwe", nodes, lbmethod, proxyset, params)
            + balancer_block("gwe-ws", ws_nodes, "gwesticky", ws_proxyset,
                             params, scheme="ws")
            + 'GWEBalancerWebSocket "balancer://gwe" "balancer://gwe-ws"\n'
            'ProxyPass "/server" "balancer://gwe"\n')


def balancer_manager_block(path="/balancer-manager"):
    """The balancer-manager at path, for 127.0.0.1 only, never proxied: its
    ProxyPass "!" beats any ProxyPass "/...", wherever it stands, but a
    <Location "/"> with a ProxyPass only if it comes after that one."""
    return ('<Location "%s">\n'
            '    ProxyPass "!"\n'
            '    SetHandler balancer-manager\n'
            '    Require ip 127.0.0.1\n'
            '</Location>\n' % path)


def metrics_block(path="/metrics"):
    """The Prometheus metrics (handler gwe-balancer-metrics) at path, for
    127.0.0.1 only, never proxied (see balancer_manager_block())."""
    return ('<Location "%s">\n'
            '    ProxyPass "!"\n'
            '    SetHandler gwe-balancer-metrics\n'
            '    Require ip 127.0.0.1\n'
            '</Location>\n' % path)
