"""
Which of the dashboard's files it cannot work without, and the page that
C{/dashboard/} shows, instead of a dashboard that fails in the browser,
when some are missing (e.g. txlb installed from a checkout whose
C{web/vendor/} was never filled from npm).
"""

from __future__ import annotations

from collections.abc import Container
from html import escape

__all__ = ["HOW_TO_FIX", "REQUIRED", "missing", "unavailable_page"]

REQUIRED = (
    "index.html",
    "app.js",
    "discovery.js",
    "workers.js",
    "affinity.js",
    "fleet.js",
    "style.css",
    "vendor/chart.umd.js",
)
"""The files index.html loads (the icon aside), relative to the web root."""

HOW_TO_FIX = (
    "install txlb from a wheel built by `python -m build` (it carries"
    " Chart.js), or in a txlb checkout run `make web-vendor` (npm ci) and"
    " reinstall txlb"
)


def missing(present: Container[str]) -> tuple[str, ...]:
    """The required files not among C{present}, in L{REQUIRED}'s order."""
    return tuple(name for name in REQUIRED if name not in present)


def unavailable_page(absent: tuple[str, ...], root: str) -> bytes:
    """
    A plain HTML page (no script, no style: the CSP holds) naming the
    missing files, where they were looked for and how to get them.
    """
    names = ", ".join(f"<code>{escape(name)}</code>" for name in absent)
    where = escape(root) if root else "the txlb package"
    fix = escape(HOW_TO_FIX).replace("`", "")
    return (
        "<!doctype html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        # No icon to fetch (a browser would ask for /favicon.ico).
        '<link rel="icon" href="data:,">'
        "<title>txlb: dashboard unavailable</title></head>\n<body>\n"
        "<h1>txlb's dashboard is unavailable</h1>\n"
        f"<p>Missing from <code>{where}</code>: {names}.</p>\n"
        f"<p>To fix: {fix}.</p>\n"
        '<p>The rest works: <a href="../api/server-stats">/api/server-stats</a>,'
        ' <a href="../metrics">/metrics</a>.</p>\n'
        "</body></html>\n"
    ).encode()
