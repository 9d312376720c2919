"""balancer-manager, driven as a browser's forms drive it."""

import html
import re
import urllib.parse
import xml.etree.ElementTree as ET

from .base import HarnessError
from .clients import http_get, http_request


class BalancerManager:
    """Drives mod_proxy_balancer's balancer-manager as httpd 2.4.71 expects:

    - GET parameters are limited to b, w, nonce and xml, so every change is
      a POST, with b, w and nonce in the form body (the query string of a
      POST is ignored);
    - any parameter is dropped (with an AH10187 error in the log) unless
      the Referer's host equals the request's server name, so every request
      sends a Referer of the manager's own URL;
    - the nonce is per balancer (links "?b=NAME&amp;nonce=UUID");
    - the handler reads at most 1024 bytes of the POST body in one read;
    - form values are URL-decoded twice;
    - a member can be added (b_nwrkr, b_wyes=1) only into a free slot, and
      a balancer has none unless configured with ProxySet growth=N (or
      BalancerGrowth N); the member then starts disabled."""

    def __init__(self, port, path="/balancer-manager", host="127.0.0.1"):
        self.port = port
        self.path = path
        self.host = host

    @property
    def _referer(self):
        return "http://%s:%d%s" % (self.host, self.port, self.path)

    def _get(self, query=""):
        resp = http_get(self.port, self.path + query, host=self.host,
                        headers={"Referer": self._referer})
        if resp.status != 200:
            raise HarnessError("GET %s%s -> %s" % (self.path, query,
                                                   resp.status))
        return resp

    def page(self):
        """The manager's HTML page."""
        return self._get().text

    def nonce(self, balancer):
        """The nonce of balancer (its name without balancer://)."""
        m = re.search(r"\?b=%s&amp;nonce=([^\"&]+)\"" % re.escape(balancer),
                      self.page())
        if not m:
            raise HarnessError("no nonce for balancer %r on the manager page"
                               % balancer)
        return html.unescape(m.group(1))

    def status(self):
        """Balancers from the XML view: {name (no balancer://): {"lbmethod":
        str, "members": {worker url: {"route", "status", "elected", ...}}}}.
        status is httpd's flag text, e.g. "Init Ok " or "Init Dis "."""
        root = ET.fromstring(self._get("?xml=1").body)
        ns = {"h": "http://httpd.apache.org"}
        result = {}
        for b in root.iterfind("h:balancers/h:balancer", ns):
            name = b.findtext("h:name", "", ns).split("balancer://", 1)[-1]
            members = {}
            for w in b.iterfind("h:workers/h:worker", ns):
                members[w.findtext("h:name", "", ns)] = {
                    child.tag.split("}", 1)[1]: (child.text or "")
                    for child in w}
            result[name] = {"lbmethod": b.findtext("h:lbmethod", "", ns),
                            "members": members}
        return result

    def member(self, balancer, url):
        """One member's fields (see status())."""
        return self.status()[balancer]["members"][url]

    def update(self, balancer, worker=None, **params):
        """POST params (w_*, b_*) for balancer, and worker (its URL) if
        given; return the response page."""
        form = {"b": balancer, "nonce": self.nonce(balancer)}
        if worker is not None:
            form["w"] = worker
        form.update({k: str(v) for k, v in params.items()})
        body = urllib.parse.urlencode(form).encode()
        if len(body) > 1024:
            raise HarnessError("balancer-manager reads only 1024 bytes of "
                               "form data")
        resp = http_request(
            "POST", self.port, self.path, body=body, host=self.host,
            headers={"Referer": self._referer,
                     "Content-Type": "application/x-www-form-urlencoded"})
        if resp.status != 200:
            raise HarnessError("balancer-manager update %r -> %s\n%s"
                               % (form, resp.status, resp.text[:2000]))
        return resp

    def set_status(self, balancer, worker, drain=None, disabled=None,
                   stopped=None, hot_standby=None, ignore_errors=None):
        """Set (True) or clear (False) a member's status flags; None leaves
        a flag as it is."""
        flags = {"w_status_N": drain, "w_status_D": disabled,
                 "w_status_S": stopped, "w_status_H": hot_standby,
                 "w_status_I": ignore_errors}
        params = {k: int(v) for k, v in flags.items() if v is not None}
        return self.update(balancer, worker, **params)

    def disable(self, balancer, worker):
        return self.set_status(balancer, worker, disabled=True)

    def enable(self, balancer, worker):
        return self.set_status(balancer, worker, disabled=False,
                               drain=False, stopped=False)

    def drain(self, balancer, worker, on=True):
        return self.set_status(balancer, worker, drain=on)

    def set_route(self, balancer, worker, route):
        return self.update(balancer, worker, w_wr=route)

    def set_lbmethod(self, balancer, lbmethod):
        """Change the balancer's lbmethod (b_lbm); an unknown name is
        silently ignored by httpd, so this checks that it took."""
        resp = self.update(balancer, b_lbm=lbmethod)
        actual = self.status()[balancer]["lbmethod"]
        if actual != lbmethod:
            raise HarnessError("lbmethod of %s is %r after setting %r"
                               % (balancer, actual, lbmethod))
        return resp

    def add_member(self, balancer, url, route=None, enable=True):
        """Add a member (b_nwrkr, b_wyes=1); httpd adds it disabled, so
        then set its route and enable it unless told not to.  The balancer
        needs a free slot (ProxySet growth=N)."""
        # The balancer's edit form offers b_nwrkr only while a slot is free.
        form = self._get("?b=%s&nonce=%s" % (balancer, self.nonce(balancer)))
        if "b_nwrkr" not in form.text:
            raise HarnessError("balancer %s has no free member slot: "
                               "configure ProxySet growth=N" % balancer)
        self.update(balancer, b_nwrkr=url, b_wyes=1)
        if url not in self.status()[balancer]["members"]:
            raise HarnessError("member %s was not added to %s"
                               % (url, balancer))
        params = {}
        if route is not None:
            params["w_wr"] = route
        if enable:
            params["w_status_D"] = 0
        if params:
            self.update(balancer, url, **params)
