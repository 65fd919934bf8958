"""
Tests for setup.py's build step: when web/vendor/ lacks the pinned Chart.js
the build fetches it, or stops with one line saying how.  make wheel
builds from a clone's files, so there the fetch runs for real.
"""

from __future__ import annotations

import importlib.util
import shutil
import tempfile
from pathlib import Path
from types import ModuleType

from twisted.trial.unittest import SynchronousTestCase

ROOT = Path(__file__).resolve().parents[1]


def _setup_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("txlb_setup", ROOT / "setup.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


SETUP = _setup_module()
PINNED = SETUP._pinned(ROOT)


class EnsureDashboardTests(SynchronousTestCase):
    def tree(self, chart: str | None, lock: bool = True) -> Path:
        """A source tree with package.json, maybe a lock file and a Chart.js."""
        root = Path(tempfile.mkdtemp())
        self.addCleanup(shutil.rmtree, root)
        shutil.copy(ROOT / "package.json", root)
        if lock:
            shutil.copy(ROOT / "package-lock.json", root)
        if chart is not None:
            (root / "web" / "vendor").mkdir(parents=True)
            (root / "web" / "vendor" / "chart.umd.js").write_text(
                f"/*!\n * Chart.js v{chart}\n */\n"
            )
            (root / "web" / "vendor" / "chart.js-LICENSE.md").write_text("MIT\n")
        return root

    def no_npm(self, name: str) -> None:
        return None

    def test_pinned_copy_is_kept(self) -> None:
        """The pinned version in place: nothing to fetch, npm not needed."""
        SETUP.ensure_dashboard(self.tree(PINNED), self.no_npm)

    def test_missing_without_npm(self) -> None:
        """Missing and no npm: one line naming the file and both remedies."""
        with self.assertRaises(SETUP.SetupError) as e:
            SETUP.ensure_dashboard(self.tree(None), self.no_npm)
        message = str(e.exception)
        self.assertEqual(message.count("\n"), 0)
        self.assertTrue(
            message.startswith(
                "txlb: the dashboard's web/vendor/chart.umd.js is missing and npm"
                " is not installed: install Node.js and npm"
            ),
            message,
        )
        self.assertIn("npm ci && node scripts/copy-vendor.js", message)
        self.assertIn("make web-vendor", message)

    def test_outdated_copy_is_refetched(self) -> None:
        """Another version than package.json pins is not shipped."""
        with self.assertRaises(SETUP.SetupError) as e:
            SETUP.ensure_dashboard(self.tree("4.0.0"), self.no_npm)
        self.assertIn(f"is Chart.js 4.0.0, not {PINNED}", str(e.exception))

    def test_no_lock_file(self) -> None:
        """
        Without package-lock.json (not a checkout or sdist) a present copy is
        used as is; a missing one is an error saying where to build from.
        """
        SETUP.ensure_dashboard(self.tree("4.0.0", lock=False), self.no_npm)
        with self.assertRaises(SETUP.SetupError) as e:
            SETUP.ensure_dashboard(self.tree(None, lock=False), self.no_npm)
        self.assertIn("build from a txlb checkout or sdist", str(e.exception))

    def test_pin_matches_the_lock(self) -> None:
        """package.json's pin is the version package-lock.json fixes."""
        import json

        lock = json.loads((ROOT / "package-lock.json").read_text())
        self.assertEqual(lock["packages"]["node_modules/chart.js"]["version"], PINNED)
