"""
The admin token in a real ``twistd -n txlb``: after admin requests with a
wrong and the right token, and a proxied request carrying an Authorization
header, neither token is in txlb's log, its access log, or any read-only
view (issue 8, item 7).  L{tests.observe.test_admin_secrets} checks the log events'
fields too.
"""

from __future__ import annotations

import http.client
import time
from collections.abc import Callable
from pathlib import Path

from tests.integration.conftest import Backend, Balancer

TOKEN = "Adm1n-T0ken-zz9yy8xx7ww6vv5uu4"
WRONG = "Wr0ng-T0ken-aa1bb2cc3dd4ee5ff6"
VIEWS = (
    "/api/server-stats",
    "/api/history",
    "/api/decisions",
    "/metrics",
    "/api/admin",
)


def call(
    lb: Balancer, method: str, path: str, authorization: str | None = None
) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", lb.port, timeout=10)
    headers = {"Content-Type": "application/json"}
    if authorization is not None:
        headers["Authorization"] = authorization
    body = '{"weight": 3}' if path.endswith("/weight") else None
    conn.request(method, path, body=body, headers=headers)
    response = conn.getresponse()
    data = response.read()
    raw_headers = "\n".join(f"{k}: {v}" for k, v in response.getheaders())
    conn.close()
    return response.status, data + raw_headers.encode()


def test_token_never_logged_or_shown(
    tmp_path: Path,
    demo_backend: Callable[..., Backend],
    balancer: Callable[..., Balancer],
) -> None:
    """
    Admin requests (wrong token, right token, malformed header) and a
    proxied request with C{Authorization: Bearer TOKEN} leave no trace of
    either token in txlb's log, access log, stats, history, decisions or
    metrics.
    """
    token_file = tmp_path / "admin.token"
    token_file.write_text(TOKEN + "\n")
    web = demo_backend("web1")
    lb = balancer([(web.name, web.port)], extra=f"admin_token_file = {token_file}")

    seen = []
    for authorization, status in (
        (f"Bearer {WRONG}", 403),
        (f"Bearer {TOKEN}", 200),
        (f"Basic {TOKEN}", 401),
    ):
        code, data = call(lb, "POST", "/api/backends/web1/drain", authorization)
        assert code == status, data
        seen.append(data)
    code, data = call(lb, "POST", "/api/backends/web1/enable", f"Bearer {TOKEN}")
    assert code == 200, data
    seen.append(data)
    code, data = call(lb, "POST", "/api/backends/web1/weight", f"Bearer {TOKEN}")
    assert code == 200, data
    seen.append(data)
    # Proxied: the header goes to the backend (end to end), and nowhere else.
    code, data = call(lb, "GET", "/secret-page", f"Bearer {TOKEN}")
    assert code == 200, data
    for path in VIEWS:
        code, data = call(lb, "GET", path)
        assert code == 200, path
        seen.append(data)

    # The access log is written by its thread at least every half second.
    access_log = tmp_path / "access.log"
    deadline = time.monotonic() + 5
    while b"/secret-page" not in (
        access_log.read_bytes() if access_log.exists() else b""
    ):
        assert time.monotonic() < deadline, "the proxied request was never logged"
        time.sleep(0.1)
    log = lb.log.read_bytes()
    assert b"admin drain on backend web1" in log
    for name, text in [
        ("txlb log", log),
        ("access log", access_log.read_bytes()),
        *((f"answer {i}", d) for i, d in enumerate(seen)),
    ]:
        for secret in (TOKEN, WRONG):
            assert secret.encode() not in text, name
