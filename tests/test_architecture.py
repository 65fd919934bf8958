"""
The design's rules, checked on the source: no import cycle in C{txlb/},
every configuration key read somewhere and documented, small modules.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from txlb.config import (
    BackendConfig,
    FleetConfig,
    HealthConfig,
    OutlierConfig,
    RateLimitConfig,
    txlb_keys,
)
from txlb.discovery.config import CommonConfig, DNSConfig, EC2Config
from txlb.schema import keys_of

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "txlb"
MAX_LINES = 460


def modules() -> Iterator[tuple[str, Path]]:
    """Every module of txlb, by dotted name."""
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        yield ".".join(parts), path


def imports(name: str, path: Path, known: set[str]) -> set[str]:
    """
    The txlb modules C{name} imports, anywhere in it (under C{TYPE_CHECKING}
    and inside functions too): a cycle is a cycle, whenever it is walked.
    """
    found = set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")
                parent = parent[: len(parent) - node.level + 1]
                base = ".".join([*parent, base] if base else parent)
            targets = [f"{base}.{alias.name}" for alias in node.names] + [base]
        else:
            continue
        for target in targets:
            # "from txlb.http import wire" imports the module txlb.http.wire;
            # "from txlb.http.wire import plain" imports txlb.http.wire.
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name and target.startswith("txlb"):
                found.add(target)
    return found


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in graph[node]:
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def declared_keys() -> dict[str, str]:
    """Every configuration key, as its attribute name -> "[section] key"."""
    keys = {name: f"[txlb] {name}" for name in txlb_keys()}
    keys.update({name: f"[health] {name}" for name in keys_of(HealthConfig)})
    keys.update({name: f"[outlier] {name}" for name in keys_of(OutlierConfig)})
    keys.update({name: f"[ratelimit] {name}" for name in keys_of(RateLimitConfig)})
    keys.update({name: f"[fleet] {name}" for name in keys_of(FleetConfig)})
    keys.update({name: f"[backend:NAME] {name}" for name in keys_of(BackendConfig)})
    for cls in (CommonConfig, DNSConfig, EC2Config):
        keys.update({name: f"[discovery:NAME] {name}" for name in keys_of(cls)})
    return keys


def attributes_read(path: Path) -> set[str]:
    """The attribute names a module reads (C{x.name} in a load context)."""
    tree = ast.parse(path.read_text(), str(path))
    return {
        node.attr
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Load)
    }


# Where keys are declared and parsed, and the reload, which compares every
# key by name: none of them is a reader.
_NOT_READERS = {
    "txlb.config",
    "txlb.schema",
    "txlb.settings",
    "txlb.lifecycle.reload",
    "txlb.discovery.config",
    "txlb.backendconfig",
    "txlb.fleet.settings",
}


class ArchitectureTests(SynchronousTestCase):
    def test_no_import_cycle(self) -> None:
        """No two modules of txlb import each other, directly or through others."""
        found = dict(modules())
        known = set(found)
        graph = {name: imports(name, path, known) for name, path in found.items()}
        self.assertIn("txlb.core.backend", graph["txlb.core.registry"])
        self.assertEqual(cycles(graph), [])

    def test_cycles_are_found(self) -> None:
        """The cycle finder finds a cycle (so the test above can fail)."""
        graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
        self.assertEqual(cycles(graph), [["a", "b", "c"]])

    def test_every_key_is_read(self) -> None:
        """Each configuration key declared is read by some part of txlb."""
        read: set[str] = set()
        for name, path in modules():
            if name not in _NOT_READERS:
                read |= attributes_read(path)
        unread = sorted(
            where for name, where in declared_keys().items() if name not in read
        )
        self.assertEqual(unread, [])

    def test_every_key_is_documented(self) -> None:
        """README's configuration tables list every key."""
        readme = (ROOT / "README.md").read_text()
        missing = sorted(
            where
            for name, where in declared_keys().items()
            if f"| `{name}` |" not in readme
        )
        self.assertEqual(missing, [])

    def test_every_package_is_installed(self) -> None:
        """setup.cfg lists every package of txlb (it lists them by hand)."""
        listed = set()
        lines = (ROOT / "setup.cfg").read_text().splitlines()
        start = lines.index("packages =") + 1
        for line in lines[start:]:
            if not line.startswith(" "):
                break
            listed.add(line.strip())
        packages = {
            ".".join(init.parent.relative_to(ROOT).parts)
            for init in PACKAGE.rglob("__init__.py")
        }
        self.assertIn("txlb.core", packages)
        self.assertEqual(sorted(packages - listed), [])

    def test_small_modules(self) -> None:
        """No module of txlb over 460 lines (about 450: the largest are 455)."""
        long = {
            name: lines
            for name, path in modules()
            if (lines := len(path.read_text().splitlines())) > MAX_LINES
        }
        self.assertEqual(long, {})
