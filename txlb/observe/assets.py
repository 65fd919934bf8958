"""
The dashboard's files (C{web/}): found beside the package, read once at
start-up and served from memory.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import attrs

from txlb.observe.webfiles import missing

__all__ = ["WebAssets", "find_web_root"]

_CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".json": "application/json",
    ".map": "application/json",
    ".md": "text/plain; charset=utf-8",
    ".txt": "text/plain; charset=utf-8",
}


def find_web_root() -> Path:
    """
    The dashboard's files: C{txlb/web} in an installed copy, else C{web/}
    beside the C{txlb} package in a source checkout.

    @raise FileNotFoundError: neither has an C{index.html}.
    """
    here = Path(__file__).resolve().parent.parent  # the txlb package
    for candidate in (here / "web", here.parent / "web"):
        if (candidate / "index.html").is_file():
            return candidate
    raise FileNotFoundError(f"no dashboard files (index.html) in {here / 'web'}")


@attrs.frozen
class _Asset:
    body: bytes
    content_type: str
    etag: bytes


@attrs.frozen
class WebAssets:
    """
    The dashboard's files, read once at start-up and served from memory.

    @ivar root: where they were read from (or looked for).
    """

    files: dict[str, _Asset]
    root: str = ""

    @classmethod
    def find(cls) -> WebAssets:
        """
        The files where L{find_web_root} finds them, or none, looked for in
        the installed package, if it finds no index.html.
        """
        try:
            return cls.load(find_web_root())
        except FileNotFoundError:
            return cls({}, str(Path(__file__).resolve().parent.parent / "web"))

    @property
    def missing(self) -> tuple[str, ...]:
        """The files the dashboard cannot work without that are not here."""
        return missing(self.files)

    @classmethod
    def load(cls, root: Path) -> WebAssets:
        """Read every file under C{root} (hidden and Python files excepted)."""
        files = {}
        for path in sorted(root.rglob("*")):
            relative = path.relative_to(root).as_posix()
            if (
                not path.is_file()
                or any(part.startswith((".", "_")) for part in relative.split("/"))
                or path.suffix not in _CONTENT_TYPES
            ):
                continue
            body = path.read_bytes()
            etag = b'"%s"' % hashlib.sha256(body).hexdigest()[:20].encode("ascii")
            files[relative] = _Asset(body, _CONTENT_TYPES[path.suffix], etag)
        return cls(files, str(root))

    @classmethod
    def empty(cls) -> WebAssets:
        return cls({})
