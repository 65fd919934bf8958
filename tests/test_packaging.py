"""
Tests for the packaging: twistd finds the C{txlb} plugin in an installed
(not editable) copy, and the source tree keeps C{twisted/} a namespace.
"""

from __future__ import annotations

import configparser
import os
import subprocess
import sys
import sysconfig
import tempfile
from importlib.metadata import version
from pathlib import Path

from packaging.requirements import Requirement
from twisted.application.service import IServiceMaker
from twisted.plugin import getPlugins
from twisted.trial.unittest import SynchronousTestCase

ROOT = Path(__file__).resolve().parent.parent
SITE = Path(sysconfig.get_paths()["purelib"])
INSTALL_HINT = "txlb is not installed in this Python; run make venv"


def _run_elsewhere(*argv: str) -> subprocess.CompletedProcess[str]:
    """
    Run this Python with C{argv} from an empty directory, so nothing of the
    source tree is importable: only the installed copy is.
    """
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    with tempfile.TemporaryDirectory() as cwd:
        return subprocess.run(
            [sys.executable, *argv],
            cwd=cwd,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )


class PluginTests(SynchronousTestCase):
    def test_plugin_found(self) -> None:
        """getPlugins(IServiceMaker) offers a service maker with tapname txlb."""
        makers = [p for p in getPlugins(IServiceMaker) if p.tapname == "txlb"]
        self.assertEqual(len(makers), 1, makers)
        self.assertEqual(makers[0].module, "txlb.tap")

    def test_plugin_installed(self) -> None:
        """
        The plugin module is installed in site-packages' twisted/plugins, and
        that installed file is the one getPlugins loaded.
        """
        installed = SITE / "twisted" / "plugins" / "txlb_plugin.py"
        self.assertTrue(installed.is_file(), f"no {installed}: {INSTALL_HINT}")
        list(getPlugins(IServiceMaker))
        module = sys.modules["twisted.plugins.txlb_plugin"]
        self.assertEqual(Path(module.__file__ or "").resolve(), installed.resolve())

    def test_installed_copy_is_not_the_source_tree(self) -> None:
        """
        Outside the source tree, txlb and its plugin are imported from
        site-packages, not through an editable install pointing back here.
        """
        result = _run_elsewhere(
            "-c",
            "import txlb.tap, twisted.plugins.txlb_plugin as p;"
            " print(txlb.tap.__file__); print(p.__file__)",
        )
        self.assertEqual(result.returncode, 0, result.stderr)
        paths = [Path(line).resolve() for line in result.stdout.split()]
        self.assertEqual(len(paths), 2, result.stdout)
        for path in paths:
            self.assertTrue(
                path.is_relative_to(SITE.resolve()), f"{path}: {INSTALL_HINT}"
            )

    def test_twistd_help(self) -> None:
        """twistd txlb --help works from the installed copy and lists --config."""
        result = _run_elsewhere(
            "-c",
            "import sys; from twisted.scripts.twistd import run;"
            " sys.argv = ['twistd', 'txlb', '--help']; run()",
        )
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn("--config", result.stdout)


class NamespaceTests(SynchronousTestCase):
    def test_no_init_in_twisted(self) -> None:
        """
        twisted/ and twisted/plugins/ in the repository have no __init__.py:
        with one, they would shadow Twisted itself and twistd would not find
        the plugin.
        """
        self.assertTrue((ROOT / "twisted" / "plugins" / "txlb_plugin.py").is_file())
        for path in ("twisted/__init__.py", "twisted/plugins/__init__.py"):
            self.assertFalse((ROOT / path).exists(), path)


class TwistedPinTests(SynchronousTestCase):
    def pin(self) -> Requirement:
        parser = configparser.ConfigParser()
        parser.read(ROOT / "setup.cfg")
        lines = parser["options"]["install_requires"].splitlines()
        requirements = [Requirement(line) for line in lines if line.strip()]
        [twisted] = [r for r in requirements if r.name.lower() == "twisted"]
        return twisted

    def test_pin_has_the_web_security_fixes(self) -> None:
        """
        setup.cfg's Twisted pin admits no release without the last
        twisted.web security fixes (24.7.0: CVE-2024-41671, pipelined
        requests answered out of order, and CVE-2024-41810).
        """
        specifier = self.pin().specifier
        self.assertTrue(specifier.contains("24.7.0"), specifier)
        for unfixed in ("24.3.0", "23.10.0", "22.4.0"):
            self.assertFalse(specifier.contains(unfixed), (specifier, unfixed))

    def test_installed_twisted_satisfies_pin(self) -> None:
        """The Twisted in this environment satisfies setup.cfg's pin."""
        pin = self.pin()
        installed = version("Twisted")
        self.assertTrue(pin.specifier.contains(installed), (str(pin), installed))
