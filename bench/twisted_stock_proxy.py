"""
Twisted's stock C{twisted.web.proxy.ReverseProxyResource}, as the benchmark's
"plain Twisted" peer.

C{ReverseProxyResource} proxies to one host, so a thin resource picks the
backend with the fewest requests in flight (ties rotate) and hands the request
to a C{ReverseProxyResource} for it, unchanged: a new backend connection per
request (HTTP/1.0, C{Connection: close}), the request body read whole, no
timeout, no retry.  The site's access log is off, as it is in txlb.

  python bench/twisted_stock_proxy.py --port 8080 --backend 127.0.0.1:9001 ...
"""

from __future__ import annotations

import argparse
import itertools

from twisted.internet import reactor
from twisted.web.proxy import ReverseProxyResource
from twisted.web.resource import Resource
from twisted.web.server import Request, Site


class LeastConnections(Resource):
    isLeaf = True

    def __init__(self, backends: list[tuple[str, int]]) -> None:
        super().__init__()
        self._backends = backends
        self._active = dict.fromkeys(backends, 0)
        self._turn = itertools.count()

    def render(self, request: Request) -> object:
        n = len(self._backends)
        start = next(self._turn) % n
        order = self._backends[start:] + self._backends[:start]
        backend = min(order, key=self._active.__getitem__)
        self._active[backend] += 1

        def release(_: object) -> None:
            self._active[backend] -= 1

        request.notifyFinish().addBoth(release)
        host, port = backend
        return ReverseProxyResource(host, port, request.path).render(request)


class QuietSite(Site):
    noisy = False

    def log(self, request: object) -> None:
        """No access log."""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--backend", action="append", required=True)
    args = parser.parse_args()
    backends = []
    for b in args.backend:
        host, _, port = b.rpartition(":")
        backends.append((host, int(port)))
    reactor.listenTCP(  # type: ignore[attr-defined]
        args.port, QuietSite(LeastConnections(backends)), interface=args.host
    )
    reactor.run()  # type: ignore[attr-defined]


if __name__ == "__main__":
    main()
