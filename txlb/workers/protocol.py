"""
What the supervisor and its workers say to each other: AMP commands over a
UNIX socket pair (file descriptors travel with them: a backend's permits).

Supervisor to worker: the configuration in force (L{Hello}'s answer), every
backend's membership (L{Added}, L{Changed}, L{Removed}), its state as the
supervisor decides it (L{State}: health checks, ejections, drains, weights,
slow start), the other balancers' load on it (L{Peers}, with C{[fleet]}),
the queue's settings (L{Queue}), a backend's permits (L{Permit}), and a
request for recent decisions (L{Decisions}).

Worker to supervisor: L{Hello}, its observations in batches
(L{Observed}: what the stats and metrics count), passive results
(L{Outcome}: a failure, or the first success after failures), and once a
second a L{Heartbeat} for the Workers panel.
"""

from __future__ import annotations

import json
from typing import Any, ClassVar

import attrs
from twisted.internet.protocol import connectionDone
from twisted.protocols import amp
from twisted.python.failure import Failure

from txlb.config import Address, BackendConfig, HealthConfig
from txlb.core.backend import Backend

__all__ = [
    "Added",
    "Changed",
    "Decisions",
    "Heartbeat",
    "Hello",
    "Observed",
    "Outcome",
    "Peers",
    "Permit",
    "Queue",
    "QuietAMP",
    "Removed",
    "Start",
    "State",
    "spec_from_json",
    "spec_to_json",
    "state_of",
]


class QuietAMP(amp.AMP):
    """AMP without a log line per connection: a worker's link is no news."""

    def makeConnection(self, transport: Any) -> None:
        self._transportPeer = transport.getPeer()
        self._transportHost = transport.getHost()
        amp.BinaryBoxProtocol.makeConnection(self, transport)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        amp.BinaryBoxProtocol.connectionLost(self, reason)
        self.transport = None


# --- worker -> supervisor ------------------------------------------------------


class Hello(amp.Command):
    """
    A worker is up; the answer names the file holding the configuration in
    force (the text the supervisor parsed, which a reload never rewrites)
    and the name to report its errors under.  Every backend follows, as
    L{Added} commands, then L{Start}.
    """

    arguments: ClassVar[list[tuple[bytes, amp.Argument]]] = [
        (b"worker", amp.Integer()),
        (b"pid", amp.Integer()),
    ]
    response: ClassVar[list[tuple[bytes, amp.Argument]]] = [
        (b"path", amp.Unicode()),
        (b"filename", amp.Unicode()),
    ]


class Observed(amp.Command):
    """Finished requests: packed (slot, status, seconds) triples."""

    arguments: ClassVar[list[tuple[bytes, amp.Argument]]] = [(b"batch", amp.String())]
    requiresAnswer = False


class Outcome(amp.Command):
    """A passive result: a failure, or the first success after failures."""

    arguments: ClassVar[list[tuple[bytes, amp.Argument]]] = [
        (b"slot", amp.Integer()),
        (b"failed", amp.Boolean()),
        (b"why", amp.Unicode()),
    ]
    requiresAnswer = False


class Heartbeat(amp.Command):
    """What the Workers panel shows of one worker (once a second)."""

    arguments: ClassVar[list[tuple[bytes, amp.Argument]]] = [(b"info", amp.Unicode())]
    requiresAnswer = False


# --- supervisor -> worker ------------------------------------------------------


class Added(amp.Command):
    """A backend joined, with the slot of its shared counts and its state."""

    arguments: ClassVar[list[tuple[bytes, amp.Argument]]] = [
        (b"slot", amp.Integer()),
        (b"spec", amp.Unicode()),
        (b"state", amp.Unicode()),
    ]


class Changed(amp.Command):
    """A backend's configuration changed."""

    arguments: ClassVar[list[tuple[bytes, amp.Argument]]] = [
        (b"slot", amp.Integer()),
        (b"spec", amp.Unicode()),
    ]


class Removed(amp.Command):
    """A backend left (drained everywhere, or its drain timed out)."""

    arguments: ClassVar[list[tuple[bytes, amp.Argument]]] = [(b"slot", amp.Integer())]


class State(amp.Command):
    """A backend's state as the supervisor decided it."""

    arguments: ClassVar[list[tuple[bytes, amp.Argument]]] = [
        (b"slot", amp.Integer()),
        (b"state", amp.Unicode()),
    ]


class Permit(amp.Command):
    """The semaphore holding a backend's C{max_connections} permits."""

    arguments: ClassVar[list[tuple[bytes, amp.Argument]]] = [
        (b"slot", amp.Integer()),
        (b"fd", amp.Descriptor()),
    ]


class Queue(amp.Command):
    """The queue's size and timeout (a reload changed them)."""

    arguments: ClassVar[list[tuple[bytes, amp.Argument]]] = [
        (b"size", amp.Integer()),
        (b"timeout", amp.Float()),
    ]


class Peers(amp.Command):
    """
    The other balancers' requests in flight on some backends ([fleet]):
    packed (slot, count) pairs of 64-bit integers.
    """

    arguments: ClassVar[list[tuple[bytes, amp.Argument]]] = [(b"counts", amp.String())]
    requiresAnswer = False


class Start(amp.Command):
    """Every backend has been told: take the listening sockets."""


class Decisions(amp.Command):
    """The worker's latest balancing decisions, as JSON."""

    arguments: ClassVar[list[tuple[bytes, amp.Argument]]] = [(b"limit", amp.Integer())]
    response: ClassVar[list[tuple[bytes, amp.Argument]]] = [
        (b"decisions", amp.Unicode())
    ]


# --- codecs --------------------------------------------------------------------


def spec_to_json(spec: BackendConfig) -> str:
    """A backend's configuration as JSON (L{spec_from_json} reads it back)."""
    data = attrs.asdict(spec, recurse=True)
    data["health"]["expect_status"] = [list(r) for r in spec.health.expect_status]
    return json.dumps(data, separators=(",", ":"))


def spec_from_json(text: str) -> BackendConfig:
    data = json.loads(text)
    health = data.pop("health")
    health["expect_status"] = tuple(tuple(r) for r in health["expect_status"])
    address = data.pop("address")
    return BackendConfig(
        address=Address(address["host"], address["port"]),
        health=HealthConfig(**health),
        **data,
    )


_STATE = (
    "healthy",
    "probed",
    "ejected",
    "draining",
    "leaving",
    "configured_weight",
    "ramp_start",
)


def state_of(backend: Backend, ramping: bool, reason: str) -> str:
    """A backend's state as JSON, with the reason of its last change."""
    state: dict[str, Any] = {name: getattr(backend, name) for name in _STATE}
    if not ramping:
        state["ramp_start"] = 0.0
    state["reason"] = reason
    return json.dumps(state, separators=(",", ":"))
