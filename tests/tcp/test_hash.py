"""Tests for C{algorithm = hash} in TCP mode: the client's address is the key."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from tests.support import Harness


class TCPHashTests(SynchronousTestCase):
    def test_a_client_address_keeps_its_backend(self) -> None:
        """Connections from one address go to one backend; addresses spread."""
        h = Harness(backends=4, mode="tcp", extra="algorithm = hash\n")
        chosen: dict[str, set[int]] = {}
        for _ in range(3):
            for i in range(20):
                peer = f"198.51.100.{i}"
                client = h.client(peer)
                port = h.connects()[-1][1]
                chosen.setdefault(peer, set()).add(port)
                h.accept(len(h.connects()) - 1)
                client.transport.loseConnection()
        self.assertEqual({len(ports) for ports in chosen.values()}, {1})
        self.assertEqual(len({p for ports in chosen.values() for p in ports}), 4)
        self.assertEqual(h.active(), [0, 0, 0, 0])

    def test_least_connections_stays_the_default(self) -> None:
        """Without hash, TCP mode's clients are plain (no key is read)."""
        h = Harness(backends=2, mode="tcp")
        h.client("198.51.100.1")
        h.client("198.51.100.1")
        self.assertEqual(h.active(), [1, 1])
