"""
Tests for L{txlb.observe.webfiles}: the files the dashboard needs and the
page shown without them.
"""

from __future__ import annotations

import re

from twisted.trial.unittest import SynchronousTestCase

from txlb.observe import webfiles
from txlb.observe.assets import find_web_root


class WebFilesTests(SynchronousTestCase):
    def test_required_are_what_index_loads(self) -> None:
        """
        REQUIRED is index.html and every script and stylesheet it loads, so
        the check cannot drift from the page.
        """
        html = (find_web_root() / "index.html").read_text("utf-8")
        loaded = re.findall(r'<script\b[^>]*\bsrc="([^"]+)"', html)
        loaded += re.findall(r'<link\b[^>]*rel="stylesheet"[^>]*href="([^"]+)"', html)
        self.assertEqual(sorted(webfiles.REQUIRED), sorted(["index.html", *loaded]))

    def test_missing(self) -> None:
        """missing() lists the required files absent, in a fixed order."""
        self.assertEqual(
            webfiles.missing({"index.html", "style.css", "icon.svg"}),
            (
                "app.js",
                "discovery.js",
                "workers.js",
                "affinity.js",
                "fleet.js",
                "vendor/chart.umd.js",
            ),
        )
        self.assertEqual(webfiles.missing(set(webfiles.REQUIRED)), ())

    def test_page_escapes(self) -> None:
        """The page's path and names are HTML-escaped text."""
        page = webfiles.unavailable_page(("a<b>.js",), "/tmp/<x>&y").decode()
        self.assertIn("<code>/tmp/&lt;x&gt;&amp;y</code>", page)
        self.assertIn("<code>a&lt;b&gt;.js</code>", page)
        self.assertNotIn("<x>", page)
