"""
Tests for L{txlb.observe.jsonlog}: txlb's own log as JSON lines.
"""

from __future__ import annotations

import io
import json
import sys
from typing import Any

from twisted.logger import ILogObserver, Logger, LogPublisher
from twisted.logger._legacy import publishToNewObserver
from twisted.python.log import textFromEventDict
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from txlb.observe import jsonlog


class _Opaque:
    def __repr__(self) -> str:
        return "<opaque>"


class JSONLinesTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.out = io.StringIO()
        publisher = LogPublisher(jsonlog.JSONLinesObserver(self.out))
        self.log = Logger(namespace="txlb.test", observer=publisher)

    def lines(self) -> list[dict[str, Any]]:
        text = self.out.getvalue()
        self.assertTrue(text.endswith("\n"), text)
        return [json.loads(line) for line in text.splitlines()]

    def test_event_with_fields(self) -> None:
        """
        An event is one line: its time (ISO 8601 UTC and Unix seconds),
        level, namespace, formatted message and keyword fields.
        """
        self.log.warn(
            "backend {backend} is {state}", backend="web1", state="ejected", n=3
        )
        [line] = self.lines()
        self.assertEqual(line["level"], "warn")
        self.assertEqual(line["namespace"], "txlb.test")
        self.assertEqual(line["message"], "backend web1 is ejected")
        self.assertEqual(
            {k: line[k] for k in ("backend", "state", "n")},
            {"backend": "web1", "state": "ejected", "n": 3},
        )
        self.assertIsInstance(line["ts"], float)
        self.assertTrue(line["time"].endswith("Z"), line["time"])
        self.assertFalse([k for k in line if k.startswith("log_")], line)

    def test_time(self) -> None:
        """C{time} and C{ts} are the event's own log_time."""
        observer = jsonlog.JSONLinesObserver(self.out)
        observer({"log_time": 1700000000.25, "log_format": "x"})
        [line] = self.lines()
        self.assertEqual(line["time"], "2023-11-14T22:13:20.250000Z")
        self.assertEqual(line["ts"], 1700000000.25)

    def test_only_json_fields(self) -> None:
        """
        Fields whose values are not plain JSON (objects, NaN) are left out:
        they are in the message already; lists and mappings stay.
        """
        self.log.info(
            "{thing} {ratio}",
            thing=_Opaque(),
            ratio=float("nan"),
            names=("a", "b"),
            counts={"a": 1},
        )
        [line] = self.lines()
        self.assertEqual(line["message"], "<opaque> nan")
        self.assertNotIn("thing", line)
        self.assertNotIn("ratio", line)
        self.assertEqual(line["names"], ["a", "b"])
        self.assertEqual(line["counts"], {"a": 1})

    def test_reserved_names_prefixed(self) -> None:
        """A field named like a key of the line keeps its value as event_NAME."""
        self.log.info("at {time}", time="noon", message="hi", traceback="none")
        [line] = self.lines()
        self.assertEqual(line["event_time"], "noon")
        self.assertEqual(line["event_message"], "hi")
        self.assertEqual(line["event_traceback"], "none")
        self.assertEqual(line["message"], "at noon")
        self.assertNotIn("traceback", line)

    def test_failure_traceback(self) -> None:
        """log.failure adds the traceback as text; the line stays one line."""
        try:
            {}["missing"]
        except KeyError:
            self.log.failure("sending {what} failed", what="events")
        [line] = self.lines()
        self.assertEqual(line["level"], "critical")
        self.assertEqual(line["message"], "sending events failed")
        self.assertIn("KeyError: 'missing'", line["traceback"])
        self.assertIn("Traceback", line["traceback"])
        self.assertEqual(self.out.getvalue().count("\n"), 1)

    def test_newlines_escaped(self) -> None:
        """A message with newlines is still one line of output."""
        self.log.info("first\nsecond\r\nthird")
        self.assertEqual(self.out.getvalue().count("\n"), 1)
        self.assertEqual(self.lines()[0]["message"], "first\nsecond\r\nthird")

    def test_legacy_event(self) -> None:
        """
        A twisted.python.log event (what some of Twisted still sends) has
        its text as the message and its system, without the legacy keys.
        """
        event = {
            "message": ("Site starting", "on 8080"),
            "isError": 0,
            "time": 1700000000.0,
            "system": "-",
            "port": 8080,
        }
        publishToNewObserver(
            jsonlog.JSONLinesObserver(self.out), event, textFromEventDict
        )
        [line] = self.lines()
        self.assertEqual(line["message"], "Site starting on 8080")
        self.assertEqual(line["system"], "-")
        self.assertEqual(line["level"], "info")
        self.assertEqual(line["port"], 8080)
        for key in ("isError", "format", "event_message", "event_time"):
            self.assertNotIn(key, line)

    def test_observer_factory(self) -> None:
        """
        observer(), what twistd --logger names, is an ILogObserver writing
        to standard output.
        """
        out = io.StringIO()
        self.patch(sys, "stdout", out)
        observer = jsonlog.observer()
        verifyObject(ILogObserver, observer)
        observer({"log_time": 1.0, "log_format": "hello {who}", "who": "you"})
        self.assertEqual(json.loads(out.getvalue())["message"], "hello you")
