"""
L{txlb.fleet.redisstore} against Debian's ``redis-server``, on the real
reactor (pytest-twisted): the store's contract as the in-memory double in
C{tests/fleet/doubles.py} keeps it, and its failures: refused, killed and
restarted, a wrong password, a server that never answers.
"""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.task import deferLater
from zope.interface.verify import verifyObject

from tests.integration.conftest import free_port
from tests.integration.fleet_support import needs_redis, redis_argv
from tests.processes import spawn, stop_all, wait_for_port
from txlb.fleet.redisstore import RedisStore
from txlb.fleet.settings import RedisURL
from txlb.fleet.store import Answer, IFleetStore, StoreError

TIMEOUT = 0.25


class Redis:
    def __init__(self, directory: Path, port: int, *extra: str) -> None:
        self.directory = directory
        self.port = port
        self.extra = extra
        self.proc: subprocess.Popen[bytes] | None = None
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self) -> None:
        log = self.directory / f"redis-{len(self.procs)}.log"
        self.proc = spawn(redis_argv(self.port, "127.0.0.1", *self.extra), log)
        self.procs.append(self.proc)
        wait_for_port(self.port, self.proc, log)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()


@pytest.fixture
def redis(tmp_path: Path) -> Iterator[Redis]:
    needs_redis()
    server = Redis(tmp_path, free_port())
    server.start()
    yield server
    stop_all(server.procs)


def store(port: int, db: int = 0, password: str | None = None) -> RedisStore:
    return RedisStore(reactor, RedisURL("127.0.0.1", port, db, password), TIMEOUT)


def sleep(seconds: float) -> Deferred[None]:
    return deferLater(reactor, seconds, lambda: None)


Inline = Generator[Deferred[Any], Any, None]


@pytest_twisted.inlineCallbacks
def test_contract(redis: Redis) -> Inline:
    """
    An exchange writes this node's entry and reads the others' with the
    time each has left; an entry expires after its TTL; leave removes it
    at once; the DB keeps fleets apart.
    """
    a, b, other = store(redis.port), store(redis.port), store(redis.port, db=1)
    assert verifyObject(IFleetStore, a)
    try:
        first: Answer = yield a.exchange("lb-a", b"a1", 0.3)
        assert first == Answer((), None)
        seen: Answer = yield b.exchange("lb-b", b"b1", 0.3)
        ((entry,),) = [seen.entries]
        assert (entry.node, entry.body) == ("lb-a", b"a1")
        assert 0.2 < entry.ttl <= 0.3
        again: Answer = yield a.exchange("lb-a", b"a2", 0.3)
        assert again.before == b"a1"
        assert [(e.node, e.body) for e in again.entries] == [("lb-b", b"b1")]
        apart: Answer = yield other.exchange("lb-c", b"c1", 0.3)
        assert apart.entries == ()
        yield sleep(0.35)  # lb-b wrote nothing since: expired
        later: Answer = yield a.exchange("lb-a", b"a3", 0.3)
        assert later.entries == ()
        yield b.exchange("lb-b", b"b2", 5)
        yield b.leave("lb-b")
        gone: Answer = yield a.exchange("lb-a", b"a4", 0.3)
        assert gone.entries == ()
    finally:
        for s in (a, b, other):
            s.close()


@pytest_twisted.inlineCallbacks
def test_killed_and_restarted(redis: Redis) -> Inline:
    """
    Redis killed: the exchange fails with the reason; attempts in the next
    0.1 s fail at once; restarted, the store reconnects by itself.
    """
    s = store(redis.port)
    try:
        yield s.exchange("lb-a", b"x", 1)
        redis.kill()
        started = time.monotonic()
        with pytest.raises(StoreError) as lost:
            yield s.exchange("lb-a", b"x", 1)
        assert time.monotonic() - started < TIMEOUT + 0.1
        with pytest.raises(StoreError) as waiting:
            yield s.exchange("lb-a", b"x", 1)
        assert "next attempt in" in str(waiting.value)
        assert str(lost.value).split(";")[0] in str(waiting.value)
        redis.start()
        answer: Answer = yield _eventually(lambda: s.exchange("lb-a", b"y", 1))
        assert answer.before is None  # a new, empty Redis
    finally:
        s.close()


@pytest_twisted.inlineCallbacks
def test_refused_then_up(tmp_path: Path) -> Inline:
    """Nothing listening: refused, said in words; then a Redis starts there."""
    needs_redis()
    server = Redis(tmp_path, free_port())
    s = store(server.port)
    try:
        with pytest.raises(StoreError) as refused:
            yield s.exchange("lb-a", b"x", 1)
        assert "refused" in str(refused.value).lower()
        server.start()
        yield _eventually(lambda: s.exchange("lb-a", b"x", 1))
    finally:
        s.close()
        stop_all(server.procs)


@pytest_twisted.inlineCallbacks
def test_password(tmp_path: Path) -> Inline:
    """A Redis with requirepass: the right password works, a wrong one says why."""
    needs_redis()
    server = Redis(tmp_path, free_port(), "--requirepass", "s3cret")
    server.start()
    good, bad = store(server.port, password="s3cret"), store(server.port)
    try:
        yield good.exchange("lb-a", b"x", 1)
        with pytest.raises(StoreError) as e:
            yield bad.exchange("lb-b", b"x", 1)
        assert "NOAUTH" in str(e.value) or "auth" in str(e.value).lower()
    finally:
        good.close()
        bad.close()
        stop_all(server.procs)


@pytest_twisted.inlineCallbacks
def test_no_answer_times_out() -> Inline:
    """A server that accepts and never answers fails the exchange in time."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    s = store(listener.getsockname()[1])
    try:
        started = time.monotonic()
        with pytest.raises(StoreError) as e:
            yield s.exchange("lb-a", b"x", 1)
        took = time.monotonic() - started
        assert TIMEOUT - 0.05 < took < TIMEOUT + 0.5, took
        assert "no answer within 0.25s" in str(e.value)
    finally:
        s.close()
        listener.close()


@inlineCallbacks
def _eventually(call: Any, timeout: float = 5) -> Generator[Deferred[Any], Any, Any]:
    deadline = time.monotonic() + timeout
    while True:
        try:
            result = yield call()
            return result
        except StoreError:
            if time.monotonic() > deadline:
                raise
            yield sleep(0.05)
