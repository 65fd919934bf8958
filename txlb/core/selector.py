"""
Picking a backend: the backends in rotation, and the pick among them by the
policy (L{txlb.core.policies}), by a scan or, above L{INDEX_ABOVE} backends,
by the load index (L{txlb.core.index}); both pick the same backend.

The L{Selector} also keeps the virtual clock that breaks ties (each pick
moves the winner's C{vtime} on by C{1/weight}), the panic mode (too few
healthy backends: balance over all of them, as Envoy does) and the decision
log.  It is the registry's: the registry says which backends are in
rotation, and counts each pick on the backend here.

A policy that chooses from the rotation itself (p2c, hash: a
L{txlb.core.policies.Chooser}) is driven by a L{ChoosingSelector}, which
passes it the request's key and tells it of every change of the rotation;
the other policies' picks take no step more for it.
"""

from __future__ import annotations

from collections.abc import Callable, Container, Sequence
from typing import Any, cast

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from txlb.config import BalancingConfig
from txlb.core.algorithms import POLICIES, policy_for
from txlb.core.backend import Backend
from txlb.core.decisions import DecisionLog
from txlb.core.index import LoadIndex
from txlb.core.policies import Chooser, Policy
from txlb.core.sharing import ISharedCounts

__all__ = [
    "INDEX_ABOVE",
    "ChoosingSelector",
    "CountingSelector",
    "Selector",
    "selector_for",
]

INDEX_ABOVE = 16
"""Above this many backends in rotation, selection uses a heap (O(log n))."""


class Selector:
    """
    The backends in rotation and how one is picked.

    @ivar available: the backends in rotation now.
    @ivar indexed: whether picks use the heap (then C{index} is kept exact).
    @ivar limited: how many backends have a C{max_connections} (the scan
        filters full backends only when some have).
    @ivar members: the backends in rotation, as a set.
    @ivar counts_load: each lease must tell the policy when it ends
        (L{txlb.core.registry.CountedLease}).
    """

    log = Logger()
    counts_load = False

    def __init__(
        self,
        balancing: BalancingConfig,
        clock: IReactorTime,
        random: Callable[[], float] | None = None,
    ) -> None:
        """@param random: p2c's source of floats in [0, 1)."""
        self._clock = clock
        self.algorithm = balancing.algorithm
        self.policy: Policy = policy_for(
            balancing.algorithm,
            balancing.ewma_decay,
            random,
            balancing.hash_balance_factor,
            str(balancing.hash_key),
        )
        cost = self.policy.cost
        self.index: LoadIndex[Backend] | None = (
            LoadIndex(lambda b: (cost(b), b.vtime, b.order), _has_room)
            if self.policy.indexed
            else None
        )
        self.indexed = False
        self.latency_aware = self.policy.needs_latency
        self.available: list[Backend] = []
        self.members: set[Backend] = set()
        self._panic_threshold = balancing.panic_threshold
        self.panic = False
        self.vclock = 0.0
        self.picks = 0
        self.limited = 0
        self.decisions = DecisionLog(self.policy)
        # Counts shared with other processes (txlb.core.sharing), if any.
        self.shared: ISharedCounts | None = None

    def pick(
        self, exclude: Container[Backend] = (), key: bytes | None = None
    ) -> Backend | None:
        """
        The backend the policy picks among those in rotation, not full and
        not in C{exclude}, counted as one more request on it; or L{None}.

        @param key: the request's key (C{hash_key}); only hash reads it.
        """
        if self.indexed:
            return self._pick_indexed(exclude)
        candidates = self.available
        if self.limited:
            candidates = [
                b for b in candidates if not b.full and not (exclude and b in exclude)
            ]
        elif exclude:
            candidates = [b for b in candidates if b not in exclude]
        if not candidates:
            return None
        policy = self.policy
        if self.latency_aware:
            policy.estimate(candidates, self._clock.seconds())
        index = policy.pick(candidates)
        return self._chosen(candidates[index], candidates, index, exclude)

    def share(self, shared: ISharedCounts) -> None:
        """Judge every pick on the counts of all processes from now on."""
        self.shared = shared
        self._pick_here = self.pick
        self.pick = self._pick_shared  # type: ignore[method-assign]

    def _pick_shared(
        self, exclude: Container[Backend] = (), key: bytes | None = None
    ) -> Backend | None:
        """
        L{pick} on the counts of every process: the candidates' C{siblings}
        read just before; a backend with C{max_connections} is taken only
        with one of its shared permits, and a full one is passed over.
        """
        self.shared.refresh(self.available)  # type: ignore[union-attr]
        for _ in range(len(self.available) + 1):
            backend = self._pick_here(exclude, key)
            if backend is not _DENIED:
                return backend
        return None

    def _pick_indexed(self, exclude: Container[Backend]) -> Backend | None:
        backend = self.index.best(exclude)  # type: ignore[union-attr]
        if backend is None:
            return None
        if self._clock.seconds() < self.decisions.next_due:
            return self._chosen(backend, (), 0, exclude)
        # A sampled decision lists the candidates: O(n), but sampled so that at
        # most CANDIDATE_RATE candidates a second are copied (txlb.core.decisions).
        candidates = [b for b in self.available if b not in exclude and not b.full]
        return self._chosen(backend, candidates, candidates.index(backend), exclude)

    def take(
        self,
        backend: Backend,
        exclude: Container[Backend] = (),
        detail: dict[str, Any] | None = None,
    ) -> bool:
        """
        Count one more request on C{backend}, chosen by other means (a
        sticky session's cookie), if it is in rotation, not full and not in
        C{exclude}.

        @param detail: what the decision log says of it.
        @return: whether it was taken.
        """
        if backend not in self.members or (exclude and backend in exclude):
            return False
        shared = self.shared
        if shared is not None:
            shared.refresh((backend,))
        if backend.full:
            return False
        return self._chosen(backend, (backend,), 0, exclude, detail) is not _DENIED

    def _chosen(
        self,
        backend: Backend,
        candidates: Sequence[Backend],
        index: int,
        exclude: Container[Backend],
        detail: dict[str, Any] | None = None,
    ) -> Backend:
        shared = self.shared
        if shared is not None and backend.max_connections and not shared.admit(backend):
            # Full elsewhere (its siblings hold every permit): pick again.
            backend.siblings = backend.max_connections - backend.active
            backend.others = backend.siblings + backend.peers
            self.touch(backend)
            return _DENIED
        self.picks += 1
        decisions = self.decisions
        now = self._clock.seconds()
        if now >= decisions.next_due and candidates:
            # Sampled (at most DecisionLog.rate per second): O(1) otherwise.
            decisions.record(now, self.picks, candidates, index, exclude, detail)
        start = max(self.vclock, backend.vtime)
        self.vclock = start
        backend.vtime = start + 1.0 / backend.weight
        backend.active += 1
        backend.total_requests += 1
        if self.indexed:
            self.index.touch(backend)  # type: ignore[union-attr]
        if shared is not None:
            shared.counted(backend)
        return backend

    def full(self, exclude: Container[Backend] = ()) -> bool:
        """
        Whether a request that L{pick} could not serve should wait: some
        backend it may use is in rotation but at its C{max_connections}.
        """
        if not self.limited:
            return False
        index = self.index
        if self.indexed and not exclude:
            return index.parked > 0  # type: ignore[union-attr]
        return any(b.full and b not in exclude for b in self.available)

    def rotate(self, backends: Sequence[Backend]) -> None:
        """Put in rotation those of C{backends} that may take requests now."""
        eligible = [b for b in backends if not b.draining]
        available = [b for b in eligible if b.healthy and not b.ejected]
        panic = bool(
            self._panic_threshold
            and eligible
            and len(available) * 100 < self._panic_threshold * len(eligible)
        )
        if panic != self.panic:
            self.panic = panic
            self.log.warn(
                "panic mode {onoff}: {healthy} of {total} backends healthy,"
                " threshold {threshold}%",
                onoff="on" if panic else "off",
                healthy=len(available),
                total=len(eligible),
                threshold=self._panic_threshold,
            )
        if not panic and available:
            # RFC 2782: a lower priority only while none of a better one is
            # in rotation (SRV records set it; otherwise all are 0).
            best = min(b.spec.priority for b in available)
            if any(b.spec.priority != best for b in available):
                available = [b for b in available if b.spec.priority == best]
        self.available = eligible if panic else available
        self.members = set(self.available)
        index = self.index
        self.indexed = index is not None and len(self.available) > INDEX_ABOVE
        if self.indexed:
            index.rebuild(self.available)  # type: ignore[union-attr]

    def touch(self, backend: Backend) -> None:
        """C{backend}'s cost or room changed: re-place it in the index."""
        if self.indexed:
            self.index.touch(backend)  # type: ignore[union-attr]


_DENIED: Backend = object()  # type: ignore[assignment]
"""A pick whose backend had no permit left (see L{Selector.share})."""


def _has_room(backend: Backend) -> bool:
    return not backend.full


class ChoosingSelector(Selector):
    """
    The selector of a policy that chooses from the rotation itself (a
    L{Chooser}: p2c, hash): it passes the policy the rotation, the request's
    key and whether some backend may be full, and tells it of each change
    of the rotation and of each weight.
    """

    def __init__(
        self,
        balancing: BalancingConfig,
        clock: IReactorTime,
        random: Callable[[], float] | None = None,
    ) -> None:
        super().__init__(balancing, clock, random)
        self.chooser = cast(Chooser, self.policy)
        self.counts_load = self.chooser.counts_load

    def pick(
        self, exclude: Container[Backend] = (), key: bytes | None = None
    ) -> Backend | None:
        chooser = self.chooser
        backend = chooser.choose(self.available, exclude, key, self.limited > 0)
        if backend is None:
            return None
        if self._clock.seconds() < self.decisions.next_due:
            return self._chosen(backend, (), 0, exclude)
        candidates, index, detail = chooser.explained()
        return self._chosen(backend, candidates, index, exclude, detail)

    def rotate(self, backends: Sequence[Backend]) -> None:
        super().rotate(backends)
        self.chooser.rotated(self.available)

    def touch(self, backend: Backend) -> None:
        super().touch(backend)
        self.chooser.touched(backend)


class CountingSelector(ChoosingSelector):
    """A L{ChoosingSelector} whose policy counts the load (hash): told of each pick."""

    def _chosen(
        self,
        backend: Backend,
        candidates: Sequence[Backend],
        index: int,
        exclude: Container[Backend],
        detail: dict[str, Any] | None = None,
    ) -> Backend:
        chosen = super()._chosen(backend, candidates, index, exclude, detail)
        if chosen is not _DENIED:
            self.chooser.picked(backend)
        return chosen


def selector_for(
    balancing: BalancingConfig,
    clock: IReactorTime,
    random: Callable[[], float] | None = None,
) -> Selector:
    """The selector of C{balancing}'s algorithm."""
    policy = POLICIES[balancing.algorithm]
    if getattr(policy, "counts_load", False):
        return CountingSelector(balancing, clock, random)
    if policy.chooses:
        return ChoosingSelector(balancing, clock, random)
    return Selector(balancing, clock, random)
