"""
Real parts for the fleet's tests: Debian's ``redis-server`` and ``twistd -n
txlb`` nodes with their own lb.ini, on loopback (the rehearsal in network
namespaces runs the same command lines on its hosts).
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import TWISTD

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"


def needs_redis() -> None:
    if not Path(REDIS_SERVER).exists():
        pytest.skip("redis-server is not installed: run scripts/install-system-deps.sh")


def redis_argv(port: int, bind: str = "127.0.0.1", *extra: str) -> list[str]:
    """Debian's redis-server in the foreground, nothing kept on disk."""
    return [
        REDIS_SERVER,
        *("--port", str(port), "--bind", bind, "--protected-mode", "no"),
        *("--save", "", "--appendonly", "no", "--daemonize", "no"),
        *extra,
    ]


def twistd_argv(ini: Path) -> list[str]:
    return [TWISTD, "-n", "--pidfile=", "txlb", "--config", str(ini)]


def get(url: str, timeout: float = 10) -> tuple[int, bytes]:
    """Status and body of a GET (an HTTP error status is an answer too)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def get_json(url: str) -> Any:
    status, body = get(url)
    assert status == 200, (status, body)
    return json.loads(body)


def refused(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), timeout=1).close()
    except ConnectionRefusedError:
        return True
    return False


def wait_until(what: Callable[[], Any], timeout: float = 15, step: float = 0.02) -> Any:
    """Poll until C{what()} is true; its value."""
    deadline = time.monotonic() + timeout
    while True:
        value = what()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting")
        time.sleep(step)


def fleet_events(log: Path) -> list[str]:
    """The fleet's state lines of a node's log (local only, sharing, rejoined)."""
    return [
        line.split("] ", 1)[1]
        for line in log.read_text().splitlines()
        if "txlb.fleet.sharing.Fleet#" in line
        and ("local only" in line or " through " in line)
    ]


def stop(proc: subprocess.Popen[bytes]) -> int:
    if proc.poll() is None:
        proc.terminate()
    return proc.wait(timeout=30)
