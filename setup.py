"""
setuptools' build, plus the dashboard's Chart.js (everything else is in
setup.cfg).

The dashboard needs C{web/vendor/chart.umd.js}, which is not in git: it
comes from npm at the version C{package.json} pins (C{package-lock.json}
fixes its hash).  Before the sdist and the wheel's files are collected, a
missing or outdated copy is fetched with C{npm ci} and
C{scripts/copy-vendor.js}; without npm the build stops with one line saying
how to get it.  A wheel built from the sdist finds the files in it.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py
from setuptools.command.sdist import sdist
from setuptools.errors import SetupError

ROOT = Path(__file__).resolve().parent
VENDOR = ("web/vendor/chart.umd.js", "web/vendor/chart.js-LICENSE.md")
HOW = (
    "install Node.js and npm (Debian: apt-get install npm) and build again,"
    " or run `npm ci && node scripts/copy-vendor.js` (`make web-vendor`)"
    " where they are and build from that tree"
)


def _pinned(root: Path) -> str:
    package = json.loads((root / "package.json").read_text(encoding="utf-8"))
    return str(package["dependencies"]["chart.js"])


def _vendored(root: Path) -> str | None:
    """The version of the Chart.js in web/vendor/ (from its banner), if any."""
    if not all((root / name).is_file() for name in VENDOR):
        return None
    with (root / VENDOR[0]).open("rb") as f:
        banner = f.read(200).decode("ascii", "replace")
    found = re.search(r"Chart\.js v(\S+)", banner)
    return found.group(1) if found else "unknown"


def ensure_dashboard(
    root: Path = ROOT, which: Callable[[str], str | None] = shutil.which
) -> None:
    """Have web/vendor/ hold the pinned Chart.js, or stop the build saying how."""
    if not (root / "package-lock.json").is_file():
        if _vendored(root) is None:
            raise SetupError(
                "txlb: web/vendor/chart.umd.js is missing and this tree has no"
                " package-lock.json to fetch it with: build from a txlb checkout"
                " or sdist"
            )
        return
    pinned, vendored = _pinned(root), _vendored(root)
    if vendored == pinned:
        return
    what = "missing" if vendored is None else f"Chart.js {vendored}, not {pinned}"
    npm, node = which("npm"), which("node")
    if npm is None or node is None:
        raise SetupError(
            f"txlb: the dashboard's web/vendor/chart.umd.js is {what} and npm is"
            f" not installed: {HOW}"
        )
    print(f"txlb: web/vendor/chart.umd.js is {what}: npm ci", file=sys.stderr)
    for argv in (
        [npm, "ci", "--no-audit", "--no-fund"],
        [node, "scripts/copy-vendor.js"],
    ):
        if subprocess.run(argv, cwd=root, check=False).returncode != 0:
            command = " ".join([Path(argv[0]).name, *argv[1:]])
            raise SetupError(
                f"txlb: `{command}` failed (above) fetching the dashboard's"
                f" Chart.js {pinned}: {HOW}"
            )
    if _vendored(root) != pinned:
        raise SetupError(f"txlb: web/vendor/ still lacks Chart.js {pinned}: {HOW}")


class BuildPyWithDashboard(build_py):
    """build_py, after making sure the dashboard's Chart.js is there."""

    def run(self) -> None:
        ensure_dashboard()
        super().run()


class SdistWithDashboard(sdist):
    """sdist, after making sure the dashboard's Chart.js is there to pack."""

    def run(self) -> None:
        ensure_dashboard()
        super().run()


# setuptools' build backend runs this file as __main__; tests import it.
if __name__ == "__main__":
    setup(cmdclass={"build_py": BuildPyWithDashboard, "sdist": SdistWithDashboard})
