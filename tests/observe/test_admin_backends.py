"""
Adding and removing backends at runtime through the admin API
(C{POST /api/backends}, C{DELETE /api/backends/NAME}), through C{StubTreq}:
every authentication failure, lb.ini's validation and one-line errors,
409 for what is in use, and draining on delete.
"""

from __future__ import annotations

import json
from typing import Any

from tests.observe.test_webapp import TOKEN, _Case
from txlb.config import parse

AUTH = b"Bearer " + TOKEN


class AdminBackendTests(_Case):
    def call(
        self, method: str, path: str, authorization: bytes | None, body: Any = None
    ) -> tuple[int, Any]:
        headers = {b"Authorization": [authorization]} if authorization else {}
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        response, raw = self.request(method, path, headers=headers, data=data)
        return response.code, json.loads(raw)

    def add(self, body: Any, authorization: bytes | None = AUTH) -> tuple[int, Any]:
        return self.call("POST", "/api/backends", authorization, body)

    def test_add(self) -> None:
        """
        201 with the backend's entry; source admin; in rotation; its cause
        names who added it.
        """
        code, body = self.add(
            {
                "name": "web3",
                "address": "127.0.0.1:9003",
                "weight": 2,
                "max_connections": 5,
            }
        )
        self.assertEqual(code, 201, body)
        self.assertEqual(
            {
                k: body[k]
                for k in ("name", "address", "source", "weight", "max_connections")
            },
            {
                "name": "web3",
                "address": "127.0.0.1:9003",
                "source": "admin",
                "weight": 2.0,
                "max_connections": 5,
            },
        )
        web3 = self.registry.get("web3")
        self.assertIn(web3, self.registry.selector.available)
        self.assertEqual(web3.history[0].reason, "added by admin from 127.0.0.1")
        stats = self.get_json("/api/server-stats")
        self.assertEqual(
            [b["source"] for b in stats["backends"]], ["static", "static", "admin"]
        )

    def test_health_keys(self) -> None:
        """health_* keys as in lb.ini; numbers or strings."""
        code, body = self.add(
            {
                "name": "web3",
                "address": "127.0.0.1:9003",
                "health_path": "/ping",
                "weight": "1.5",
            }
        )
        self.assertEqual(code, 201, body)
        web3 = self.registry.get("web3")
        self.assertEqual((web3.spec.health.path, web3.weight), ("/ping", 1.5))

    def test_auth_failures(self) -> None:
        """No header 401, malformed 401, wrong token 403; nothing added or removed."""
        good = {"name": "web3", "address": "127.0.0.1:9003"}
        for authorization, code in (
            (None, 401),
            (b"Basic dXNlcjpwYXNz", 401),
            (b"Bearer", 401),
            (b"Bearer nope", 403),
            (b"Bearer " + TOKEN[:-1], 403),
        ):
            self.assertEqual(self.add(good, authorization)[0], code, authorization)
            self.assertEqual(
                self.call("DELETE", "/api/backends/web1", authorization)[0], code
            )
        self.assertEqual([b.name for b in self.registry.backends], ["web1", "web2"])
        self.assertFalse(self.registry.get("web1").draining)

    def test_invalid(self) -> None:
        """400 with lb.ini's own one-line error for each mistake."""
        cases = [
            (
                {"name": "web3", "address": "nonsense"},
                "POST /api/backends: [backend:web3] address: 'nonsense' is not valid;"
                " expected host:port, e.g. 127.0.0.1:9001 or [::1]:9001",
            ),
            (
                {"name": "web3"},
                "POST /api/backends: [backend:web3] address: missing; expected"
                " host:port",
            ),
            (
                {"name": "web3", "address": "127.0.0.1:70000"},
                "[backend:web3] address: '127.0.0.1:70000' is not valid",
            ),
            (
                {"name": "web 3", "address": "127.0.0.1:9003"},
                "[backend:web 3]: backend name must be 1-64 letters",
            ),
            (
                {"name": "web3", "address": "127.0.0.1:9003", "weight": 0},
                "[backend:web3] weight: '0' is not valid; expected a number above 0",
            ),
            (
                {"name": "web3", "address": "127.0.0.1:9003", "weight": True},
                "[backend:web3] weight: expected a string or a number",
            ),
            (
                {"name": "web3", "address": "127.0.0.1:9003", "colour": "red"},
                "[backend:web3] colour: unknown key; allowed: address, weight",
            ),
            (
                {"name": "web3", "address": "127.0.0.1:9003", "proxy_protocol": "v1"},
                "[backend:web3] proxy_protocol: needs mode = tcp",
            ),
            ({"address": "127.0.0.1:9003"}, "POST /api/backends: name: missing"),
            (["web3"], "POST /api/backends: expected a JSON object"),
            (b"{not json", "POST /api/backends: expected a JSON object"),
        ]
        for body, words in cases:
            code, answer = self.add(body)
            self.assertEqual(code, 400, body)
            self.assertIn(words, answer["error"])
            self.assertNotIn("\n", answer["error"])
        self.assertEqual(len(self.registry.backends), 2)

    def test_same_words_as_lb_ini(self) -> None:
        """The API's error is lb.ini's, the file's name aside."""
        _, answer = self.add({"name": "web3", "address": "127.0.0.1:9003", "weight": 0})
        try:
            parse("[backend:web3]\naddress = 127.0.0.1:9003\nweight = 0\n", "lb.ini")
        except Exception as e:
            from_file = str(e)
        self.assertEqual(
            answer["error"].removeprefix("POST /api/backends"),
            from_file.removeprefix("lb.ini"),
        )

    def test_in_use(self) -> None:
        """409 for a name or an address another backend has."""
        code, body = self.add({"name": "web1", "address": "127.0.0.1:9009"})
        self.assertEqual(code, 409)
        self.assertEqual(
            body["error"],
            "backend web1 not added: the name is used by backend web1 (static)",
        )
        code, body = self.add({"name": "web9", "address": "127.0.0.1:9002"})
        self.assertEqual(code, 409)
        self.assertIn("address 127.0.0.1:9002 is used by backend web2", body["error"])

    def test_delete_drains(self) -> None:
        """DELETE: 202, the backend drains (no new requests) and goes when idle."""
        self.add({"name": "web3", "address": "127.0.0.1:9003"})
        web3 = self.registry.get("web3")
        leases = [self.registry.acquire() for _ in range(3)]
        held = [lease for lease in leases if lease and lease.backend is web3]
        self.assertEqual(len(held), 1)
        code, body = self.call("DELETE", "/api/backends/web3", AUTH)
        self.assertEqual((code, body["state"]), (202, "draining"))
        self.assertEqual(
            web3.history[-1].reason, "removed by admin from 127.0.0.1: draining"
        )
        for _ in range(4):
            lease = self.registry.acquire()
            assert lease is not None
            self.assertIsNot(lease.backend, web3)
        self.assertIn(web3, self.registry.backends)
        held[0].release()
        self.assertNotIn(web3, self.registry.backends)
        self.assertEqual(self.call("DELETE", "/api/backends/web3", AUTH)[0], 404)

    def test_delete_other_sources_refused(self) -> None:
        """lb.ini's (or a discovery section's) backends are removed there: 409."""
        code, body = self.call("DELETE", "/api/backends/web1", AUTH)
        self.assertEqual(code, 409)
        self.assertIn("comes from static", body["error"])
        self.assertFalse(self.registry.get("web1").draining)

    def test_add_with_admin_off(self) -> None:
        self.app._admin.token = None
        code, body = self.add({"name": "web3", "address": "127.0.0.1:9003"})
        self.assertEqual(code, 403)
        self.assertIn("admin_token_file", body["error"])
