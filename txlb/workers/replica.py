"""
A worker's side of the conversation with its supervisor.

L{SupervisorLink} is the worker's AMP protocol: it says hello, answers the
supervisor's commands, and sends what the supervisor counts (observations in
batches every L{FLUSH} seconds, passive results, a heartbeat).  L{Replica}
keeps the worker's registry the supervisor's copy: every backend with its
slot in the shared counts, and every state the supervisor decided.
"""

from __future__ import annotations

import json
import os
from array import array
from collections.abc import Sequence
from typing import Any, Protocol

from twisted.internet.protocol import Factory, connectionDone
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.protocols import amp
from twisted.python.failure import Failure
from zope.interface import implementer

from txlb.core.backend import Backend
from txlb.core.registry import Registry
from txlb.core.sharing import IOutcomes
from txlb.workers import protocol as commands
from txlb.workers.counting import WorkerCounts


class Worker(Protocol):
    """What the link needs of its worker process (L{txlb.workers.worker})."""

    reactor: Any
    index: int
    replica: Replica | None

    def configured(self, path: str, filename: str) -> None: ...

    def listen(self) -> None: ...

    def stop(self) -> None: ...


__all__ = ["FLUSH", "Observations", "Replica", "SupervisorLink"]

FLUSH = 0.1
"""Seconds between two batches of observations."""

_MAX_BATCH = 2700
"""Observations a message carries at most (AMP values stop at 64 KiB)."""


class Observations:
    """Finished requests, packed as (slot, status, seconds) until sent."""

    def __init__(self, link: SupervisorLink) -> None:
        self._link = link
        self._batch = array("d")

    def add(self, backend: Backend, status: int, seconds: float) -> None:
        """The proxy's per-request hook (the signature of Stats.observe)."""
        batch = self._batch
        batch.extend((backend.slot, status, seconds))
        if len(batch) >= 3 * _MAX_BATCH:
            self.flush()

    def flush(self) -> None:
        batch = self._batch
        if batch:
            self._batch = array("d")
            self._link.send(commands.Observed, batch=batch.tobytes())


class SupervisorLink(commands.QuietAMP):
    """The worker's AMP connection to its supervisor."""

    log = Logger()

    def __init__(self, worker: Worker) -> None:
        super().__init__()
        self.worker = worker
        self.observations = Observations(self)
        self._flusher = LoopingCall(self.observations.flush)

    def as_factory(self) -> Factory:
        return Factory.forProtocol(lambda: self)

    def connectionMade(self) -> None:
        super().connectionMade()
        self._flusher.clock = self.worker.reactor
        self._flusher.start(FLUSH, now=False)
        d = self.callRemote(commands.Hello, worker=self.worker.index, pid=os.getpid())
        d.addCallback(self._configured)
        d.addErrback(self._broken)

    def _configured(self, answer: dict[str, Any]) -> None:
        self.worker.configured(answer["path"], answer["filename"])

    def _broken(self, failure: Any) -> None:
        self.log.failure(
            "worker {index}: no configuration", failure, index=self.worker.index
        )
        self.worker.reactor.stop()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        super().connectionLost(reason)
        if self._flusher.running:
            self._flusher.stop()
        # The supervisor is gone: there is no one to report to.
        self.worker.stop()

    def send(self, command: type[amp.Command], **arguments: Any) -> None:
        if self.transport is not None and self.transport.connected:  # type: ignore[attr-defined]
            self.callRemote(command, **arguments)

    def heartbeat(self, info: dict[str, Any]) -> None:
        self.send(commands.Heartbeat, info=json.dumps(info))

    # --- the supervisor's commands -------------------------------------------------

    @commands.Added.responder
    def added(self, slot: int, spec: str, state: str) -> dict[str, Any]:
        self._replica().added(slot, commands.spec_from_json(spec), json.loads(state))
        return {}

    @commands.Changed.responder
    def changed(self, slot: int, spec: str) -> dict[str, Any]:
        self._replica().changed(slot, commands.spec_from_json(spec))
        return {}

    @commands.Removed.responder
    def removed(self, slot: int) -> dict[str, Any]:
        self._replica().removed(slot)
        return {}

    @commands.State.responder
    def restated(self, slot: int, state: str) -> dict[str, Any]:
        self._replica().restate(slot, json.loads(state))
        return {}

    @commands.Permit.responder
    def permit(self, slot: int, fd: int) -> dict[str, Any]:
        self._replica().shared.permits(slot, fd)
        return {}

    @commands.Queue.responder
    def queue(self, size: int, timeout: float) -> dict[str, Any]:
        self._replica().registry.queue.configure(size, timeout)
        return {}

    @commands.Peers.responder
    def peers(self, counts: bytes) -> dict[str, Any]:
        pairs = array("q")
        pairs.frombytes(counts)
        self._replica().peers(pairs)
        return {}

    @commands.Start.responder
    def start(self) -> dict[str, Any]:
        self.worker.listen()
        return {}

    @commands.Decisions.responder
    def decisions(self, limit: int) -> dict[str, Any]:
        described = self._replica().registry.decisions.describe(limit)
        return {"decisions": json.dumps(described)}

    def _replica(self) -> Replica:
        replica = self.worker.replica
        assert replica is not None, "a command before the configuration"
        return replica


@implementer(IOutcomes)
class Replica:
    """
    The worker's registry as the supervisor's copy; passive results go to
    the supervisor, which decides ejections for every worker.
    """

    def __init__(
        self, registry: Registry, shared: WorkerCounts, link: SupervisorLink
    ) -> None:
        self.registry = registry
        self.shared = shared
        self._link = link
        self._slots: dict[int, Backend] = {}

    def added(self, slot: int, spec: Any, state: dict[str, Any]) -> None:
        backend = self.registry.add(spec, "")
        self._slots[slot] = backend
        self.shared.attach(backend, slot)
        self._restate(backend, state)

    def changed(self, slot: int, spec: Any) -> None:
        backend = self._slots.get(slot)
        if backend is not None:
            self.registry.update(backend, spec, "")

    def removed(self, slot: int) -> None:
        backend = self._slots.pop(slot, None)
        if backend is not None:
            self.shared.detach(backend)
            self.registry.forget(backend)

    def restate(self, slot: int, state: dict[str, Any]) -> None:
        backend = self._slots.get(slot)
        if backend is not None:
            self._restate(backend, state)

    def peers(self, pairs: Sequence[int]) -> None:
        """The other balancers' load: C{pairs} of (slot, requests in flight)."""
        registry = self.registry
        fell = False
        for i in range(0, len(pairs), 2):
            backend = self._slots.get(pairs[i])
            if backend is None:
                continue
            count = pairs[i + 1]
            fell = fell or count < backend.peers
            backend.peers = count
            backend.others = backend.siblings + count
            registry.selector.touch(backend)
        if fell:
            registry.queue.serve_soon()

    def _restate(self, backend: Backend, state: dict[str, Any]) -> None:
        self.registry.restate(
            backend,
            healthy=state["healthy"],
            probed=state["probed"],
            ejected=state["ejected"],
            draining=state["draining"],
            leaving=state["leaving"],
            configured_weight=state["configured_weight"],
            ramp_start=state["ramp_start"],
            reason=state["reason"],
        )

    # --- IOutcomes --------------------------------------------------------------------

    def failed(self, backend: Backend, why: str) -> None:
        self._link.send(commands.Outcome, slot=backend.slot, failed=True, why=why)

    def recovered(self, backend: Backend) -> None:
        self._link.send(commands.Outcome, slot=backend.slot, failed=False, why="")
