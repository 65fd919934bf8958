"""
The installed C{txlb} command against a real C{twistd -n txlb} with demo
backends: status (once, C{--watch} for a count and until Ctrl-C, C{--json}),
drain, enable and weight with the token from each of its sources, and the
errors an operator meets: an unreachable txlb, a refused token, an unknown
backend.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.integration.conftest import TWISTD, Backend, Balancer, free_port

TXLB = str(Path(sys.executable).parent / "txlb")
TOKEN = "Cl1-Adm1n-T0ken-0123456789abcdef"


def txlb(*argv: str, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {
        k: v for k, v in os.environ.items() if not k.startswith("TXLB_")
    } | env
    return subprocess.run(
        [TXLB, *argv], capture_output=True, text=True, timeout=30, env=environment
    )


@pytest.fixture
def running(
    tmp_path: Path,
    demo_backend: Callable[..., Backend],
    balancer: Callable[..., Balancer],
) -> Iterator[tuple[Balancer, Path]]:
    token_file = tmp_path / "admin.token"
    token_file.write_text(TOKEN + "\n")
    web1, web2 = demo_backend("web1"), demo_backend("web2")
    lb = balancer(
        [(web1.name, web1.port), (web2.name, web2.port)],
        extra=f"admin_token_file = {token_file}",
    )
    for _ in range(10):
        lb.stats()  # the stats API answers; now some proxied requests
        subprocess.run(["curl", "-s", "-o", "/dev/null", lb.url + "/"], check=True)
    yield lb, token_file


def _backend(lb: Balancer, name: str) -> dict[str, object]:
    [entry] = [b for b in lb.stats()["backends"] if b["name"] == name]
    return entry


def test_status_table(running: tuple[Balancer, Path]) -> None:
    """
    txlb status URL prints the summary and a row per backend with its
    state, active count, rate and requests; --json is the snapshot.
    """
    lb, _ = running
    result = txlb("status", lb.url)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f"txlb at {lb.url}  least_conn  up ")
    assert "healthy 2/2" in lines[0]
    header = lines[2].split()
    assert header[:4] == ["BACKEND", "ADDRESS", "STATE", "ACTIVE"]
    rows = {line.split()[0]: line.split() for line in lines[3:]}
    assert set(rows) == {"web1", "web2"}
    requests = header.index("REQUESTS")
    assert sum(int(row[requests]) for row in rows.values()) == 10
    assert all(row[2] == "healthy" for row in rows.values())
    as_json = txlb("status", "--json", "--url", lb.url)
    assert as_json.returncode == 0, as_json.stderr
    assert {b["name"] for b in json.loads(as_json.stdout)["backends"]} == set(rows)
    from_env = txlb("status", TXLB_URL=lb.url)
    assert from_env.returncode == 0 and from_env.stdout.startswith(f"txlb at {lb.url}")


def test_status_watch(running: tuple[Balancer, Path]) -> None:
    """
    --watch --count 3 prints three frames, a refresh apart; without a
    count it refreshes until Ctrl-C (SIGINT), then exits 0.
    """
    lb, _ = running
    started = time.monotonic()
    result = txlb("status", lb.url, "--watch", "--count", "3", "--interval", "0.3")
    assert result.returncode == 0, result.stderr
    assert result.stdout.count(f"txlb at {lb.url}") == 3
    assert time.monotonic() - started >= 0.6

    proc = subprocess.Popen(
        [TXLB, "status", lb.url, "--watch", "--interval", "0.2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # As from a terminal: a suite started in the background (`make test
        # &`) has SIGINT ignored, which the child would inherit.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    assert proc.stdout is not None
    try:
        frames = 0
        deadline = time.monotonic() + 20
        while frames < 3 and time.monotonic() < deadline:
            line = proc.stdout.readline()
            frames += line.startswith("txlb at ")
        assert frames == 3
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=10)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert "Traceback" not in err


def test_admin_actions(running: tuple[Balancer, Path]) -> None:
    """
    drain, enable and weight change the running txlb, with the token from
    --token-file, $TXLB_ADMIN_TOKEN and $TXLB_ADMIN_TOKEN_FILE.
    """
    lb, token_file = running
    result = txlb("drain", "web1", "--url", lb.url, "--token-file", str(token_file))
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("web1 is draining: no new requests;")
    assert _backend(lb, "web1")["state"] == "draining"

    result = txlb("enable", "web1", "--url", lb.url, TXLB_ADMIN_TOKEN=TOKEN)
    assert (result.returncode, result.stdout) == (0, "web1 is healthy\n"), result
    assert _backend(lb, "web1")["state"] == "healthy"

    result = txlb(
        "weight", "web2", "2.5", TXLB_URL=lb.url, TXLB_ADMIN_TOKEN_FILE=str(token_file)
    )
    assert (result.returncode, result.stdout) == (0, "web2: weight 2.50\n"), result
    assert _backend(lb, "web2")["configured_weight"] == 2.5


def test_operator_errors(running: tuple[Balancer, Path]) -> None:
    """
    A refused token, an unknown backend, an unreachable txlb and a URL
    that is not txlb each give one line on stderr and exit status 1, and
    change nothing.
    """
    lb, token_file = running
    wrong = txlb("drain", "web1", "--url", lb.url, TXLB_ADMIN_TOKEN="W" * 32)
    assert wrong.returncode == 1
    assert wrong.stderr == (
        "txlb: drain web1: the admin token was refused: wrong admin token (pass"
        " --token-file PATH, or set TXLB_ADMIN_TOKEN or TXLB_ADMIN_TOKEN_FILE)\n"
    )
    assert _backend(lb, "web1")["state"] == "healthy"

    unknown = txlb("drain", "web9", "--url", lb.url, "--token-file", str(token_file))
    assert unknown.returncode == 1
    assert unknown.stderr == (
        "txlb: drain web9: no backend is named 'web9'; the backends are: web1, web2\n"
    )

    port = free_port()
    for argv in (("status", f"http://127.0.0.1:{port}"),
                 ("enable", "web1", "--url", f"http://127.0.0.1:{port}")):  # fmt: skip
        down = txlb(*argv, TXLB_ADMIN_TOKEN=TOKEN)
        assert down.returncode == 1
        assert down.stderr.startswith(
            f"txlb: cannot reach txlb at http://127.0.0.1:{port}: connection refused;"
        ), down.stderr
        assert down.stderr.count("\n") == 1

    backend_port = _backend(lb, "web1")["address"]
    not_txlb = txlb("status", f"http://{backend_port}/")
    assert not_txlb.returncode == 1
    assert not_txlb.stderr.startswith(
        f"txlb: http://{backend_port} is not a txlb stats API"
    ), not_txlb.stderr


def test_check_matches_twistd(tmp_path: Path) -> None:
    """txlb check prints exactly what twistd txlb --check does, same status."""
    good = tmp_path / "lb.ini"
    good.write_text("[txlb]\nlisten = tcp:8080\n[backend:a]\naddress = h:1\n")
    bad = tmp_path / "bad.ini"
    bad.write_text("[txlb]\nlisten = tcp:8080\n[health]\ninterval = soon\n")
    for path in (good, bad):
        ours = txlb("check", str(path))
        theirs = subprocess.run(
            [TWISTD, "txlb", "--config", str(path), "--check"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert (ours.returncode, ours.stdout, ours.stderr) == (
            theirs.returncode,
            theirs.stdout,
            theirs.stderr,
        )
        assert (ours.stdout + ours.stderr).count("\n") == 1
    assert txlb("check", str(bad)).returncode == 1
