"""
DNS discovery against a real DNS server: Debian's dnsmasq, started on a
loopback port with records this test writes and changes while wrk loads
the balancer: A records added and removed, an SRV weight changed, TTLs
respected, no answer at all (dnsmasq stopped with SIGSTOP: the last set
stays), NXDOMAIN (the set empties after empty_hold).  wrk must count zero
failed requests through every change.
"""

from __future__ import annotations

import signal
import time
from typing import Any

import pytest

from tests.integration.conftest import Processes, free_port
from tests.integration.discovery_support import (
    DNSMASQ,
    TTL,
    WRK,
    Balancer,
    Dnsmasq,
    Load,
    demo_backend,
    dnsmasq_fixture,  # noqa: F401 (the dnsmasq fixture)
)

pytestmark = [
    pytest.mark.skipif(
        DNSMASQ is None, reason="dnsmasq (dnsmasq-base) is not installed"
    ),
    pytest.mark.skipif(WRK is None, reason="wrk is not installed"),
]


def history(backend: dict[str, Any]) -> list[str]:
    return [h["reason"] for h in backend["history"]]


def test_dns_changes_under_load(processes: Processes, dnsmasq: Dnsmasq) -> None:
    """
    Through A records added and removed, an SRV weight change, a DNS server
    that stops answering and NXDOMAIN, wrk sees no failed request; each
    change shows in /api/server-stats as a health event with its cause.
    """
    web_port, app_port = free_port(), free_port()
    for i in (11, 12, 13):
        demo_backend(processes, f"web{i}", f"127.0.0.{i}", web_port)
    for i in (21, 22):
        demo_backend(processes, f"app{i}", f"127.0.0.{i}", app_port)
    dnsmasq.a_records("web.lb.test", "127.0.0.11", "127.0.0.12")
    dnsmasq.a_records("app21.lb.test", "127.0.0.21")
    dnsmasq.a_records("app22.lb.test", "127.0.0.22")
    dnsmasq.srv = [("app21", app_port, 0, 10), ("app22", app_port, 0, 10)]
    dnsmasq.start()
    resolvers = f"resolvers = 127.0.0.1:{dnsmasq.port}\n"
    lb = Balancer(
        processes,
        "[health]\ninterval = 500ms\ntimeout = 400ms\n"
        f"[discovery:web]\ntype = dns\nname = web.lb.test\nport = {web_port}\n"
        f"{resolvers}min_interval = 500ms\nmax_interval = 5s\nempty_hold = 3s\n"
        f"[discovery:app]\ntype = dns\nname = _app._tcp.lb.test\n{resolvers}"
        "min_interval = 500ms\nmax_interval = 5s\n",
    )
    web11, web12, web13 = (f"web-127.0.0.{i}-{web_port}" for i in (11, 12, 13))
    app21, app22 = (f"app-127.0.0.{i}-{app_port}" for i in (21, 22))
    lb.wait(
        lambda: set(lb.backends()) == {web11, web12, app21, app22}, "the first answers"
    )
    load = Load(processes.directory, lb.port)
    try:
        # TTLs respected: asked again when the TTL (1 s) runs out.
        web = lb.section("web")
        assert web["next_refresh"] - web["last_refresh"] == pytest.approx(TTL, abs=0.1)
        assert "ttl 1s" in web["answer"], web
        asked = dnsmasq.queries("web.lb.test")
        time.sleep(3)
        assert 2 <= dnsmasq.queries("web.lb.test") - asked <= 8

        # An A record added: a new backend, and it takes requests.
        dnsmasq.a_records("web.lb.test", "127.0.0.11", "127.0.0.12", "127.0.0.13")
        lb.wait(
            lambda: lb.backends().get(web13, {}).get("total_requests", 0) > 0, "web13"
        )
        assert history(lb.backends()[web13])[0].startswith(
            "added by dns:web (web.lb.test: 3 addresses, ttl 1s)"
        )

        # An A record removed: that backend drains and goes.
        dnsmasq.a_records("web.lb.test", "127.0.0.12", "127.0.0.13")
        lb.wait(lambda: web11 not in lb.backends(), "web11 to go")

        # An SRV weight changed (dnsmasq re-reads SRV records on restart).
        dnsmasq.srv = [("app21", app_port, 0, 10), ("app22", app_port, 0, 30)]
        dnsmasq.restart()
        lb.wait(lambda: lb.backends()[app22]["configured_weight"] == 30.0, "the weight")
        assert lb.backends()[app21]["configured_weight"] == 10.0
        assert "draining" not in [h["state"] for h in lb.backends()[app22]["history"]]
        assert (
            "weight 10 -> 30: dns:app (_app._tcp.lb.test"
            in history(lb.backends()[app22])[-1]
        )

        # No answer at all (the server stopped): the last set stays.
        before = set(lb.backends())
        assert dnsmasq.proc is not None
        dnsmasq.proc.send_signal(signal.SIGSTOP)
        lb.wait(lambda: lb.section("web")["state"] == "failing", "a failed lookup")
        assert set(lb.backends()) == before
        assert {b["state"] for b in lb.backends().values()} == {"healthy"}
        assert "no answer in 4s" in lb.section("web")["last_error"]
        dnsmasq.proc.send_signal(signal.SIGCONT)
        lb.wait(lambda: lb.section("web")["state"] == "ok", "lookups to work again")
        assert set(lb.backends()) == before

        # NXDOMAIN: the set stays for empty_hold (3 s), then drains.
        dnsmasq.a_records("web.lb.test")
        lb.wait(lambda: lb.section("web")["state"] == "empty", "NXDOMAIN")
        emptied = time.monotonic()
        assert {web12, web13} <= set(lb.backends())
        lb.wait(lambda: not {web12, web13} & set(lb.backends()), "the hold to end")
        assert time.monotonic() - emptied >= 2.0
        assert set(lb.backends()) == {app21, app22}
        time.sleep(1)
    finally:
        counts = load.stop()
    assert counts["requests"] > 500, counts
    assert counts["socket_errors"] == 0, counts
    assert counts["non_2xx"] == 0, counts
    text = lb.text()
    # Said once each, not per attempt.
    assert text.count("discovery dns:web: lookup of A/AAAA web.lb.test") == 1, text
    assert text.count("discovery dns:web: A/AAAA web.lb.test via") >= 1
    assert text.count("still empty after 3s: draining its 2 backends") == 1
