"""
Build txlb's sdist and wheel as a new user would, and install the wheel
into a fresh virtualenv (`make wheel`, part of `make test`).

    python scripts/wheel.py OUTDIR

1. OUTDIR/src: the files a clone has (git's tracked and untracked files,
   minus what .gitignore names), so web/vendor/ and node_modules/ are
   absent and the build has to fetch Chart.js from npm itself;
2. `python -m build` there: the sdist, then the wheel built from the sdist,
   into OUTDIR/dist;
3. a new virtualenv, OUTDIR/venv, and `pip install` of the wheel (its
   dependencies from the package index, through pip's cache).

tests/integration/test_wheel.py checks the result.  Build output is in
OUTDIR/build.log and OUTDIR/install.log; on failure their tail is printed.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _run(argv: list[str], log: Path, cwd: Path | None = None) -> float:
    started = time.monotonic()
    with log.open("ab") as out:
        result = subprocess.run(argv, cwd=cwd, stdout=out, stderr=subprocess.STDOUT)
    if result.returncode != 0:
        tail = log.read_text(errors="replace").splitlines()[-25:]
        sys.stderr.write("\n".join(tail) + "\n")
        sys.exit(
            f"wheel: `{' '.join(argv)}` failed (exit {result.returncode}); see {log}"
        )
    return time.monotonic() - started


def _export(src: Path) -> None:
    """Copy the tree as a clone would have it into C{src}."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        check=True,
        capture_output=True,
    ).stdout
    for name in filter(None, listed.decode().split("\0")):
        source = ROOT / name
        if source.is_file():  # a file deleted but not yet committed is not
            target = src / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)


def main(outdir: str) -> None:
    out = Path(outdir).resolve()
    shutil.rmtree(out, ignore_errors=True)
    src, dist, venv = out / "src", out / "dist", out / "venv"
    src.mkdir(parents=True)
    _export(src)
    assert not (src / "web" / "vendor").exists()
    built = _run(
        [sys.executable, "-m", "build", "--outdir", str(dist), str(src)],
        out / "build.log",
    )
    wheels = sorted(dist.glob("txlb-*.whl"))
    if len(wheels) != 1:
        sys.exit(f"wheel: expected one wheel in {dist}, found {wheels}")
    installed = _run([sys.executable, "-m", "venv", str(venv)], out / "install.log")
    # From OUTDIR, so nothing of the source tree is importable by accident.
    installed += _run(
        [str(venv / "bin" / "pip"), "install", "-q", str(wheels[0])],
        out / "install.log",
        cwd=out,
    )
    print(
        f"wheel: {wheels[0].name} and its sdist built in {built:.1f} s"
        f" (Chart.js fetched by the build); installed into a fresh venv"
        f" ({venv}) in {installed:.1f} s"
    )


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(sys.argv[1])
