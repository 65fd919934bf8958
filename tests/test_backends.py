"""
Tests for the demo backends (L{backends}): settings parsing, the Klein app
driven through C{StubTreq} with a fake clock, the byte producer, the command
line, and one real process on a real socket.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from random import Random
from typing import Any

import attrs
from treq.testing import StubTreq
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.http_headers import Headers

import backends
from backends.__main__ import Options, UsageError, listen, main, parse_args
from backends.app import SERVER, DemoBackend
from backends.settings import (
    NO_DELAY,
    ServiceTime,
    SettingError,
    parse_capacity,
    parse_duration,
    parse_error_rate,
    parse_service_time,
)
from backends.streams import PATTERN, PatternProducer, pattern


@attrs.frozen
class _Reply:
    code: int
    headers: Headers
    body: bytes
    length: Any

    def json(self) -> Any:
        return json.loads(self.body)


class _Harness:
    """A backend on a fake clock, with an in-memory HTTP client."""

    def __init__(self, **kwargs: Any) -> None:
        self.clock = Clock()
        kwargs.setdefault("rng", Random(1))
        self.backend = DemoBackend(name="b1", clock=self.clock, **kwargs)
        self.stub: Any = StubTreq(self.backend.resource())

    def send(
        self, method: str, path: str, data: bytes | None = None, **kwargs: Any
    ) -> Deferred[_Reply]:
        """Start a request; the result fires with the whole reply."""

        def read(response: Any) -> Deferred[_Reply]:
            content: Deferred[bytes] = self.stub.content(response)
            return content.addCallback(
                lambda body: _Reply(
                    response.code, response.headers, body, response.length
                )
            )

        d: Deferred[_Reply] = self.stub.request(
            method, "http://backend" + path, data=data, **kwargs
        )
        d.addCallback(read)
        self.stub.flush()
        return d

    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)
        self.stub.flush()


class _Case(SynchronousTestCase):
    def reply(self, d: Deferred[_Reply]) -> _Reply:
        result: _Reply = self.successResultOf(d)
        return result

    def call(
        self, harness: _Harness, method: str, path: str, data: bytes = b""
    ) -> _Reply:
        return self.reply(harness.send(method, path, data or None))


class SettingsTests(SynchronousTestCase):
    """Parsing of durations, service times, error rates and capacities."""

    def test_durations(self) -> None:
        """Durations take us, ms or s; a bare number must be zero."""
        self.assertEqual(parse_duration("5ms"), 0.005)
        self.assertEqual(parse_duration("0.2s"), 0.2)
        self.assertEqual(parse_duration("250us"), 0.00025)
        self.assertEqual(parse_duration("0"), 0.0)
        self.assertEqual(parse_duration(" 1.5s "), 1.5)

    def test_bad_durations(self) -> None:
        """Bad durations raise SettingError with a message naming the text."""
        for text in ["5", "", "ms", "-5ms", "5 minutes", "nan", "inf", "1e3ms"]:
            with self.assertRaises(SettingError) as caught:
                parse_duration(text)
            self.assertIn(repr(text), str(caught.exception))
            self.assertNotIn("\n", str(caught.exception))

    def test_service_times(self) -> None:
        """A service time is a fixed duration or a low-high range."""
        self.assertEqual(parse_service_time("5ms"), ServiceTime(0.005, 0.005))
        self.assertEqual(parse_service_time("0"), NO_DELAY)
        self.assertEqual(parse_service_time("10ms-50ms"), ServiceTime(0.01, 0.05))
        self.assertEqual(parse_service_time("0-1s"), ServiceTime(0.0, 1.0))

    def test_bad_service_times(self) -> None:
        """Bad durations and reversed ranges are refused with a message."""
        for text in ["5", "fast", "10ms-", "-10ms", "10ms-20ms-30ms", "10-50ms"]:
            with self.assertRaises(SettingError) as caught:
                parse_service_time(text)
            self.assertIn("invalid delay", str(caught.exception))
        with self.assertRaises(SettingError) as caught:
            parse_service_time("50ms-10ms")
        self.assertIn("low end is above", str(caught.exception))

    def test_service_time_text(self) -> None:
        """A service time prints in the form it is parsed from."""
        for text in ["0", "5ms", "0.25ms", "2s", "10ms-50ms", "0-1.5s"]:
            self.assertEqual(
                parse_service_time(str(parse_service_time(text))),
                parse_service_time(text),
            )
        self.assertEqual(str(parse_service_time("0.2s")), "200ms")
        self.assertEqual(str(parse_service_time("10ms-50ms")), "10ms-50ms")

    def test_sample(self) -> None:
        """A fixed time is returned as is; a range is drawn uniformly from the rng."""
        self.assertEqual(ServiceTime.fixed(0.1).sample(Random(3)), 0.1)
        self.assertEqual(
            ServiceTime(0.01, 0.05).sample(Random(3)), Random(3).uniform(0.01, 0.05)
        )
        rng = Random(4)
        draws = [ServiceTime(0.01, 0.05).sample(rng) for _ in range(200)]
        self.assertTrue(all(0.01 <= d <= 0.05 for d in draws))

    def test_error_rate(self) -> None:
        """An error rate is a number from 0 to 1; anything else is refused."""
        self.assertEqual(parse_error_rate("0"), 0.0)
        self.assertEqual(parse_error_rate("0.25"), 0.25)
        self.assertEqual(parse_error_rate("1"), 1.0)
        for text in ["-0.1", "1.5", "half", "nan", ""]:
            with self.assertRaises(SettingError):
                parse_error_rate(text)

    def test_capacity(self) -> None:
        """A capacity is a whole number >= 0."""
        self.assertEqual(parse_capacity("0"), 0)
        self.assertEqual(parse_capacity("4"), 4)
        for text in ["-1", "2.5", "many"]:
            with self.assertRaises(SettingError):
                parse_capacity(text)


class MainRouteTests(_Case):
    """The main route: error injection, capacity queue, service time."""

    def test_hello(self) -> None:
        """Any other path and method answers 200 'hello from <name>' as text."""
        h = _Harness()
        for method, path in [("GET", "/"), ("GET", "/anything/else"), ("POST", "/x")]:
            reply = self.call(h, method, path)
            self.assertEqual((reply.code, reply.body), (200, b"hello from b1\n"))
            self.assertEqual(
                reply.headers.getRawHeaders("content-type"),
                ["text/plain; charset=utf-8"],
            )

    def test_every_response_names_the_backend(self) -> None:
        """Each route's response, errors included, carries X-Backend and Server."""
        h = _Harness(error_rate=1.0)
        for method, path in [
            ("GET", "/"),
            ("GET", "/health"),
            ("GET", "/_demo/stats"),
            ("GET", "/_demo/status/404"),
            ("GET", "/_demo/bytes?n=-1"),
            ("PUT", "/_demo/delay"),
        ]:
            reply = self.call(h, method, path)
            self.assertEqual(reply.headers.getRawHeaders("x-backend"), ["b1"], path)
            self.assertEqual(
                reply.headers.getRawHeaders("server"), [SERVER.decode()], path
            )

    def test_delay(self) -> None:
        """The answer comes only once the service time has passed on the clock."""
        h = _Harness(service_time=parse_service_time("50ms"))
        d = h.send("GET", "/")
        self.assertNoResult(d)
        self.assertEqual(h.backend.in_service, 1)
        h.advance(0.049)
        self.assertNoResult(d)
        h.advance(0.001)
        self.assertEqual(self.reply(d).body, b"hello from b1\n")
        self.assertEqual(h.backend.in_service, 0)

    def test_random_delay(self) -> None:
        """A range delay takes the time drawn from the injected rng."""
        h = _Harness(service_time=parse_service_time("10ms-50ms"), rng=Random(7))
        expected = Random(7).uniform(0.01, 0.05)
        d = h.send("GET", "/")
        h.advance(expected - 0.0001)
        self.assertNoResult(d)
        h.advance(0.0001)
        self.assertEqual(self.reply(d).code, 200)

    def test_capacity_queues(self) -> None:
        """With capacity 1 a second request starts only when the first finishes."""
        h = _Harness(service_time=parse_service_time("10ms"), capacity=1)
        first = h.send("GET", "/1")
        second = h.send("GET", "/2")
        self.assertEqual((h.backend.in_service, h.backend.queued), (1, 1))
        h.advance(0.01)
        self.assertEqual(self.reply(first).code, 200)
        self.assertNoResult(second)
        self.assertEqual((h.backend.in_service, h.backend.queued), (1, 0))
        h.advance(0.009)
        self.assertNoResult(second)
        h.advance(0.001)
        self.assertEqual(self.reply(second).code, 200)
        self.assertEqual((h.backend.in_service, h.backend.queued), (0, 0))

    def test_unlimited_capacity(self) -> None:
        """Capacity 0 serves every request at once."""
        h = _Harness(service_time=parse_service_time("10ms"), capacity=0)
        pending = [h.send("GET", "/") for _ in range(5)]
        self.assertEqual((h.backend.in_service, h.backend.queued), (5, 0))
        h.advance(0.01)
        self.assertEqual([self.reply(d).code for d in pending], [200] * 5)

    def test_client_leaves(self) -> None:
        """A client leaving while queued or in service frees its place once."""
        h = _Harness(service_time=parse_service_time("10ms"), capacity=1)
        serving = h.send("GET", "/")
        waiting = h.send("GET", "/")
        waiting.cancel()
        h.stub.flush()
        self.assertEqual((h.backend.in_service, h.backend.queued), (1, 0))
        serving.cancel()
        h.stub.flush()
        self.assertEqual((h.backend.in_service, h.backend.queued), (0, 0))
        self.assertEqual(h.clock.getDelayedCalls(), [])
        # Released exactly once: capacity is still 1.
        third = h.send("GET", "/")
        fourth = h.send("GET", "/")
        self.assertEqual((h.backend.in_service, h.backend.queued), (1, 1))
        h.advance(0.01)
        h.advance(0.01)
        self.assertEqual([self.reply(third).code, self.reply(fourth).code], [200, 200])
        self.assertEqual(h.backend.abandoned, 2)
        self.failureResultOf(serving)
        self.failureResultOf(waiting)

    def test_error_rate_one(self) -> None:
        """Error rate 1 answers 500 at once, without a slot or service time."""
        h = _Harness(service_time=parse_service_time("1s"), capacity=1, error_rate=1.0)
        reply = self.call(h, "GET", "/")
        self.assertEqual(reply.code, 500)
        self.assertIn(b"b1", reply.body)
        self.assertEqual((h.backend.in_service, h.backend.queued), (0, 0))
        self.assertEqual((h.backend.requests, h.backend.errors), (1, 1))

    def test_error_rate_fraction(self) -> None:
        """A fraction of the requests, drawn from the rng, fail."""
        h = _Harness(error_rate=0.25, rng=Random(5))
        rng = Random(5)
        expected = [500 if rng.random() < 0.25 else 200 for _ in range(40)]
        self.assertEqual([self.call(h, "GET", "/").code for _ in range(40)], expected)
        self.assertIn(500, expected)
        self.assertIn(200, expected)

    def test_bad_settings(self) -> None:
        """The backend refuses an error rate outside [0, 1] or a negative capacity."""
        self.assertRaises(ValueError, DemoBackend, "b", Clock(), error_rate=1.5)
        self.assertRaises(ValueError, DemoBackend, "b", Clock(), capacity=-1)


class ControlTests(_Case):
    """Health, runtime settings and statistics."""

    def test_health_switch(self) -> None:
        """/health says ok, then 503 failing after 'fail', then ok again."""
        h = _Harness(service_time=parse_service_time("1s"), capacity=1)
        h.send("GET", "/")  # holds the only slot: health must not need it
        self.assertEqual(self.call(h, "GET", "/health").body, b"ok\n")
        reply = self.call(h, "POST", "/_demo/health", b"fail")
        self.assertEqual((reply.code, reply.body), (200, b"fail\n"))
        reply = self.call(h, "GET", "/health")
        self.assertEqual((reply.code, reply.body), (503, b"failing\n"))
        self.assertFalse(self.call(h, "GET", "/_demo/stats").json()["healthy"])
        self.assertEqual(self.call(h, "PUT", "/_demo/health", b"ok\n").code, 200)
        self.assertEqual(self.call(h, "GET", "/health").code, 200)

    def test_set_error_rate(self) -> None:
        """PUT /_demo/error-rate changes the error rate and echoes it."""
        h = _Harness()
        reply = self.call(h, "PUT", "/_demo/error-rate", b"1")
        self.assertEqual((reply.code, reply.body), (200, b"1\n"))
        self.assertEqual(self.call(h, "GET", "/").code, 500)
        self.assertEqual(
            self.call(h, "POST", "/_demo/error-rate", b"0.5").body, b"0.5\n"
        )
        self.assertEqual(h.backend.error_rate, 0.5)

    def test_set_delay(self) -> None:
        """POST /_demo/delay changes the service time of later requests."""
        h = _Harness()
        reply = self.call(h, "POST", "/_demo/delay", b"20ms")
        self.assertEqual((reply.code, reply.body), (200, b"20ms\n"))
        d = h.send("GET", "/")
        h.advance(0.019)
        self.assertNoResult(d)
        h.advance(0.001)
        self.assertEqual(self.reply(d).code, 200)
        self.assertEqual(
            self.call(h, "PUT", "/_demo/delay", b"10ms-30ms").body, b"10ms-30ms\n"
        )
        self.assertEqual(h.backend.service_time, ServiceTime(0.01, 0.03))

    def test_bad_control_values(self) -> None:
        """A bad control value is a 400 with a message, and changes nothing."""
        h = _Harness()
        for path, body, message in [
            ("/_demo/health", b"maybe", b"invalid health"),
            ("/_demo/error-rate", b"2", b"invalid error rate"),
            ("/_demo/error-rate", b"lots", b"invalid error rate"),
            ("/_demo/delay", b"5", b"invalid delay"),
            ("/_demo/delay", b"30ms-10ms", b"invalid delay"),
            ("/_demo/delay", b"", b"invalid delay"),
        ]:
            reply = self.call(h, "PUT", path, body)
            self.assertEqual(reply.code, 400, path)
            self.assertTrue(reply.body.startswith(message), reply.body)
        self.assertEqual(
            (h.backend.healthy, h.backend.error_rate, h.backend.service_time),
            (True, 0.0, NO_DELAY),
        )

    def test_stats(self) -> None:
        """/_demo/stats counts main-route requests only, and shows the queue."""
        h = _Harness(service_time=parse_service_time("10ms"), capacity=1)
        for _ in range(3):
            h.send("GET", "/")
        self.call(h, "GET", "/health")
        self.call(h, "GET", "/_demo/echo")
        stats = self.call(h, "GET", "/_demo/stats").json()
        self.assertEqual(
            {
                k: stats[k]
                for k in ["name", "requests", "in_service", "queued", "healthy"]
            },
            {
                "name": "b1",
                "requests": 3,
                "in_service": 1,
                "queued": 2,
                "healthy": True,
            },
        )
        for _ in range(3):
            h.advance(0.01)
        stats = self.call(h, "GET", "/_demo/stats").json()
        self.assertEqual(
            (
                stats["requests"],
                stats["completed"],
                stats["in_service"],
                stats["queued"],
            ),
            (3, 3, 0, 0),
        )


class HelperRouteTests(_Case):
    """The routes that help test a proxy: echo, status, bytes, upload, sleep."""

    def test_echo(self) -> None:
        """/_demo/echo reports the method, URI, headers, body length and peer."""
        h = _Harness()
        d = h.send(
            "POST",
            "/_demo/echo?a=1",
            b"hello",
            headers={"X-Test": ["one", "two"], "X-Forwarded-For": "10.0.0.1"},
        )
        echo = self.reply(d).json()
        self.assertEqual(echo["method"], "POST")
        self.assertEqual(echo["uri"], "/_demo/echo?a=1")
        self.assertEqual(echo["body_length"], 5)
        self.assertEqual(echo["client"], "127.0.0.1")
        headers = [tuple(pair) for pair in echo["headers"]]
        self.assertIn(("X-Forwarded-For", "10.0.0.1"), headers)
        self.assertLess(
            headers.index(("X-Test", "one")), headers.index(("X-Test", "two"))
        )
        self.assertIn(("Host", "backend"), headers)

    def test_status(self) -> None:
        """/_demo/status/<code> answers with that code; a bad code is a 400."""
        h = _Harness()
        for code in [200, 404, 418, 502, 503]:
            self.assertEqual(self.call(h, "GET", f"/_demo/status/{code}").code, code)
        for bad in ["99", "600", "teapot"]:
            self.assertEqual(self.call(h, "GET", f"/_demo/status/{bad}").code, 400)
        self.assertEqual(h.backend.requests, 0)

    def test_bytes(self) -> None:
        """/_demo/bytes sends n pattern bytes with a Content-Length."""
        h = _Harness()
        reply = self.call(h, "GET", "/_demo/bytes?n=100003&chunk=4096")
        self.assertEqual(reply.code, 200)
        self.assertEqual(reply.length, 100003)
        self.assertEqual(reply.body, pattern(0, 100003))
        self.assertEqual(reply.body[:20], b"0123456789abcdef0123")
        self.assertEqual(self.call(h, "GET", "/_demo/bytes?n=0").body, b"")

    def test_bytes_chunked(self) -> None:
        """chunked=1 leaves out Content-Length; the bytes are the same."""
        h = _Harness()
        reply = self.call(h, "GET", "/_demo/bytes?n=5000&chunk=100&chunked=1")
        self.assertEqual(reply.code, 200)
        self.assertIsNone(reply.headers.getRawHeaders("content-length"))
        self.assertEqual(reply.body, pattern(0, 5000))

    def test_bad_bytes(self) -> None:
        """A missing or bad n, chunk or chunked is a 400."""
        h = _Harness()
        for query in ["", "?n=x", "?n=-1", "?n=10&chunk=0", "?n=10&chunked=2"]:
            self.assertEqual(
                self.call(h, "GET", "/_demo/bytes" + query).code, 400, query
            )

    def test_upload(self) -> None:
        """/_demo/upload answers the body's length and SHA-256."""
        h = _Harness()
        body = os.urandom(200_000)
        reply = self.call(h, "POST", "/_demo/upload", body)
        self.assertEqual(
            reply.json(),
            {"length": 200_000, "sha256": hashlib.sha256(body).hexdigest()},
        )
        self.assertEqual(
            self.call(h, "PUT", "/_demo/upload", b"").json()["sha256"],
            hashlib.sha256(b"").hexdigest(),
        )

    def test_sleep(self) -> None:
        """/_demo/sleep?ms=N answers after N ms of clock time."""
        h = _Harness()
        d = h.send("GET", "/_demo/sleep?ms=250")
        h.advance(0.249)
        self.assertNoResult(d)
        h.advance(0.001)
        self.assertEqual(self.reply(d).body, b"slept 250ms\n")
        self.assertEqual(self.call(h, "GET", "/_demo/sleep?ms=soon").code, 400)

    def test_sleep_cancelled(self) -> None:
        """A client leaving /_demo/sleep cancels its timer."""
        h = _Harness()
        d = h.send("GET", "/_demo/sleep?ms=250")
        self.assertEqual(len(h.clock.getDelayedCalls()), 1)
        d.cancel()
        h.stub.flush()
        self.assertEqual(h.clock.getDelayedCalls(), [])
        self.failureResultOf(d)


class _PausingConsumer(StringTransport):
    """A consumer whose buffer 'fills' at C{limit} bytes, like a socket."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit

    def write(self, data: bytes) -> None:
        super().write(data)
        if len(self.value()) >= self.limit and self.producer is not None:
            self.producer.pauseProducing()


class PatternProducerTests(SynchronousTestCase):
    """The back-pressure of the byte producer."""

    def test_pattern(self) -> None:
        """pattern(offset, n) is the repeating pattern from any offset."""
        self.assertEqual(pattern(0, 5), b"01234")
        self.assertEqual(pattern(14, 5), b"ef012")
        whole = PATTERN * 10
        for offset in range(0, 40, 3):
            self.assertEqual(pattern(offset, 50), whole[offset : offset + 50])

    def test_stops_when_paused(self) -> None:
        """Writing stops on pause and goes on after resume until done."""
        consumer = _PausingConsumer(limit=25)
        producer = PatternProducer(consumer, 100, 10)
        consumer.registerProducer(producer, True)
        done = producer.start()
        received = b""
        for _ in range(3):
            self.assertNoResult(done)
            self.assertEqual(len(consumer.value()), 30)
            received += consumer.value()
            consumer.clear()
            producer.resumeProducing()
        received += consumer.value()
        self.assertIsNone(self.successResultOf(done))
        self.assertEqual(received, pattern(0, 100))
        self.assertIsNone(consumer.producer)

    def test_stop(self) -> None:
        """After stopProducing nothing more is written, even on resume."""
        consumer = _PausingConsumer(limit=10)
        producer = PatternProducer(consumer, 100, 10)
        consumer.registerProducer(producer, True)
        done = producer.start()
        producer.stopProducing()
        producer.resumeProducing()
        self.assertEqual(len(consumer.value()), 10)
        self.assertNoResult(done)

    def test_cancel(self) -> None:
        """Cancelling the done Deferred stops the producer."""
        consumer = _PausingConsumer(limit=10)
        producer = PatternProducer(consumer, 100, 10)
        consumer.registerProducer(producer, True)
        done = producer.start()
        done.cancel()
        producer.resumeProducing()
        self.assertEqual(producer.sent, 10)
        self.failureResultOf(done)


class CommandLineTests(SynchronousTestCase):
    """Parsing of the command line and starting the listeners."""

    def test_defaults(self) -> None:
        """Only --port is needed; the rest defaults to a fast, unlimited backend."""
        self.assertEqual(parse_args(["--port", "9001"]), Options(ports=(9001,)))

    def test_all_options(self) -> None:
        """Every option is parsed into Options."""
        options = parse_args(
            [
                "--name",
                "web",
                "--port",
                "9001",
                "--port",
                "9002",
                "--host",
                "0.0.0.0",
                "--delay",
                "10ms-50ms",
                "--capacity",
                "4",
                "--error-rate",
                "0.1",
                "--seed",
                "3",
                "--access-log",
            ]
        )
        self.assertEqual(
            options,
            Options(
                ports=(9001, 9002),
                names=("web",),
                host="0.0.0.0",
                service_time=ServiceTime(0.01, 0.05),
                capacity=4,
                error_rate=0.1,
                seed=3,
                access_log=True,
            ),
        )

    def test_names(self) -> None:
        """Names pair with ports, or get -<port> appended, or are backend-<port>."""
        one = parse_args(["--name", "web1", "--port", "9001"])
        self.assertEqual(one.name_for(0, 9001), "web1")
        pairs = parse_args(["--port", "1", "--name", "a", "--port", "2", "--name", "b"])
        self.assertEqual(
            [pairs.name_for(i, p) for i, p in enumerate(pairs.ports)], ["a", "b"]
        )
        shared = parse_args(["--name", "web", "--port", "1", "--port", "2"])
        self.assertEqual(
            [shared.name_for(i, p) for i, p in enumerate(shared.ports)],
            ["web-1", "web-2"],
        )
        unnamed = parse_args(["--port", "1", "--port", "2"])
        self.assertEqual(
            [unnamed.name_for(i, p) for i, p in enumerate(unnamed.ports)],
            ["backend-1", "backend-2"],
        )

    def test_errors(self) -> None:
        """Bad values raise UsageError with a one-line message."""
        for argv, message in [
            ([], "--port"),
            (["--port", "http"], "invalid port"),
            (["--port", "70000"], "invalid port"),
            (["--port", "1", "--port", "1"], "more than once"),
            (
                [
                    "--port",
                    "1",
                    "--port",
                    "2",
                    "--port",
                    "3",
                    "--name",
                    "a",
                    "--name",
                    "b",
                ],
                "one per --port",
            ),
            (["--port", "1", "--name", ""], "empty"),
            (["--port", "1", "--delay", "5"], "needs a unit"),
            (["--port", "1", "--delay", "50ms-10ms"], "low end"),
            (["--port", "1", "--capacity", "-2"], "invalid capacity"),
            (["--port", "1", "--error-rate", "2"], "invalid error rate"),
            (["--port", "1", "--bogus"], "unrecognized"),
        ]:
            with self.assertRaises(UsageError) as caught:
                parse_args(argv)
            self.assertIn(message, str(caught.exception), argv)
            self.assertNotIn("\n", str(caught.exception))

    def test_main_exits_2(self) -> None:
        """main() writes one error line to stderr and exits with status 2."""
        stderr = io.StringIO()
        self.patch(sys, "stderr", stderr)
        with self.assertRaises(SystemExit) as caught:
            main(["--port", "1", "--delay", "soon"])
        self.assertEqual(caught.exception.code, 2)
        lines = stderr.getvalue().splitlines()
        self.assertEqual(len(lines), 1)
        self.assertTrue(lines[0].startswith("txlb-demo-backend: error: "), lines)

    def test_listen(self) -> None:
        """listen() serves one configured backend per port on the given host."""
        reactor = MemoryReactorClock()
        options = parse_args(
            [
                "--name",
                "web",
                "--port",
                "9001",
                "--port",
                "9002",
                "--host",
                "127.0.0.2",
                "--capacity",
                "3",
                "--delay",
                "5ms",
            ]
        )
        started = listen(reactor, options)
        self.assertEqual(
            [(port, interface) for port, _, _, interface in reactor.tcpServers],
            [(9001, "127.0.0.2"), (9002, "127.0.0.2")],
        )
        self.assertEqual([b.name for b, _ in started], ["web-9001", "web-9002"])
        backend = started[0][0]
        self.assertIs(backend.clock, reactor)
        self.assertEqual(
            (backend.capacity, backend.service_time), (3, ServiceTime.fixed(0.005))
        )
        site: Any = reactor.tcpServers[1][1]
        stub: Any = StubTreq(site.resource)
        d = stub.get("http://x/")
        stub.flush()
        reactor.advance(0.005)
        stub.flush()
        reply = self.successResultOf(d)
        self.assertEqual(reply.headers.getRawHeaders("x-backend"), ["web-9002"])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _get(url: str) -> tuple[int, dict[str, str], bytes]:
    with urllib.request.urlopen(url, timeout=2) as response:
        return response.status, dict(response.headers), response.read()


class ProcessTests(SynchronousTestCase):
    """The real command line in a child process, on a real socket."""

    def test_serves_over_tcp(self) -> None:
        """python -m backends serves / and /health, logs its port, stops on SIGTERM."""
        port = _free_port()
        env = dict(os.environ)
        root = str(Path(backends.__file__).resolve().parent.parent)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
        process = subprocess.Popen(
            [sys.executable, "-m", "backends", "--port", str(port), "--name", "real"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
        )
        self.addCleanup(process.kill)
        deadline = time.monotonic() + 8
        while True:
            try:
                code, headers, body = _get(f"http://127.0.0.1:{port}/")
                break
            except (urllib.error.URLError, ConnectionError):
                if time.monotonic() > deadline or process.poll() is not None:
                    raise
                time.sleep(0.05)
        self.assertEqual((code, body), (200, b"hello from real\n"))
        self.assertEqual(
            (headers["X-Backend"], headers["Server"]), ("real", "txlb-demo-backend")
        )
        self.assertEqual(headers["Content-Length"], str(len(body)))
        self.assertEqual(_get(f"http://127.0.0.1:{port}/health")[::2], (200, b"ok\n"))
        process.terminate()
        stdout, stderr = process.communicate(timeout=5)
        self.assertEqual(process.returncode, 0, stderr)
        self.assertIn(
            f"backend real listening on http://127.0.0.1:{port}/", stdout.decode()
        )
