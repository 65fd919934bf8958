"""
A plain aiohttp reverse proxy: the usual Python answer, kept as the benchmark's
Python reference.

One process, one event loop, one C{ClientSession} whose connection pool keeps
connections to the backends alive; each request goes to the backend with the
fewest requests in flight (ties rotate).  Bodies are read whole, as most such
proxies do.  No health checks, no retries, no access log.

  python bench/aiohttp_proxy.py --port 8080 --backend 127.0.0.1:9001 ...
"""

from __future__ import annotations

import argparse
import itertools

import aiohttp
from aiohttp import web
from multidict import CIMultiDict

# RFC 9110 7.6.1, and the framing headers aiohttp sets itself.
_HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "content-length",
    }
)


class LeastConnections:
    """Backends and their requests in flight."""

    def __init__(self, backends: list[str]) -> None:
        self.backends = backends
        self.active = dict.fromkeys(backends, 0)
        self._turn = itertools.count()

    def pick(self) -> str:
        n = len(self.backends)
        start = next(self._turn) % n
        order = self.backends[start:] + self.backends[:start]
        return min(order, key=self.active.__getitem__)


def _forward(headers: CIMultiDict[str] | object) -> CIMultiDict[str]:
    out: CIMultiDict[str] = CIMultiDict()
    for key, value in headers.items():  # type: ignore[attr-defined]
        if key.lower() not in _HOP_BY_HOP:
            out.add(key, value)
    return out


def make_app(backends: list[str]) -> web.Application:
    pool = LeastConnections(backends)
    app = web.Application()

    async def start_session(app: web.Application) -> None:
        connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=300)
        app["session"] = aiohttp.ClientSession(
            connector=connector,
            auto_decompress=False,
            timeout=aiohttp.ClientTimeout(total=30),
        )

    async def close_session(app: web.Application) -> None:
        await app["session"].close()

    async def proxy(request: web.Request) -> web.Response:
        backend = pool.pick()
        pool.active[backend] += 1
        try:
            body = await request.read()
            async with request.app["session"].request(
                request.method,
                f"http://{backend}{request.rel_url}",
                headers=_forward(request.headers),
                data=body or None,
                allow_redirects=False,
            ) as response:
                payload = await response.read()
                return web.Response(
                    status=response.status,
                    body=payload,
                    headers=_forward(response.headers),
                )
        except (aiohttp.ClientError, TimeoutError) as e:
            return web.Response(status=502, text=f"bad gateway: {e}\n")
        finally:
            pool.active[backend] -= 1

    app.on_startup.append(start_session)
    app.on_cleanup.append(close_session)
    app.router.add_route("*", "/{tail:.*}", proxy)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--backend", action="append", required=True)
    args = parser.parse_args()
    web.run_app(
        make_app(args.backend),
        host=args.host,
        port=args.port,
        access_log=None,
        print=None,
    )


if __name__ == "__main__":
    main()
