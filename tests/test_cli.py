"""
Tests for L{txlb.cli}: the status table, the token's sources, C{--watch}'s
loop and the command line's checks.  tests/integration/test_cli.py runs the
installed C{txlb} against a real twistd.
"""

from __future__ import annotations

import io
import os
import tempfile
from typing import Any
from unittest import mock

from twisted.trial.unittest import SynchronousTestCase

from txlb import cli
from txlb.tap import Options

SNAPSHOT: dict[str, Any] = {
    "time": 1795474990.91,
    "algorithm": "least_conn",
    "uptime": 7385.2,
    "backends": [
        {
            "name": "web1",
            "address": "127.0.0.1:9001",
            "state": "healthy",
            "active_connections": 3,
            "max_connections": 4,
            "total_requests": 1527,
            "failures": 0,
            "weight": 1.0,
            "configured_weight": 1.0,
            "ejections": 0,
            "rps": 592.479,
            "error_rate": 0.0,
            "latency_ms": {"p50": 0.454, "p95": 8.916, "p99": 19.411},
        },
        {
            "name": "web-two",
            "address": "[::1]:9002",
            "state": "starting",
            "active_connections": 0,
            "max_connections": 0,
            "total_requests": 12,
            "failures": 5,
            "weight": 0.25,
            "configured_weight": 2.0,
            "ejections": 1,
            "rps": 0.0,
            "error_rate": 0.4167,
            "latency_ms": {"p50": None, "p95": None, "p99": None},
        },
    ],
    "totals": {
        "backends": 2,
        "healthy": 2,
        "available": 2,
        "active_connections": 3,
        "rps": 592.479,
        "error_rate": 0.0083,
        "queued": 1,
        "queue_size": 1024,
        "panic": False,
        "latency_ms": {"p50": 0.42, "p95": 8.749, "p99": 123.4},
    },
}


class RenderTests(SynchronousTestCase):
    def test_table(self) -> None:
        """
        The snapshot is a summary line and one aligned row per backend:
        active against max_connections, rate, error percentage, latencies
        in ms ("-" without any), the weight in use against the configured
        one when they differ, counters.
        """
        self.assertEqual(
            cli.render_status(SNAPSHOT, "http://127.0.0.1:8080").splitlines(),
            [
                "txlb at http://127.0.0.1:8080  least_conn  up 2h03m  healthy 2/2"
                "  available 2  active 3  rps 592.5  errors 0.8%  p99 123 ms"
                "  queued 1/1024",
                "",
                "BACKEND  ADDRESS         STATE     ACTIVE    RPS  ERR%  P50ms"
                "  P95ms  P99ms  WEIGHT  REQUESTS  FAILS  EJECTED",
                "web1     127.0.0.1:9001  healthy      3/4  592.5   0.0   0.45"
                "   8.92   19.4       1      1527      0        0",
                "web-two  [::1]:9002      starting       0    0.0  41.7      -"
                "      -      -  0.25/2        12      5        1",
            ],
        )

    def test_panic_and_short_uptime(self) -> None:
        """Panic mode is shown; uptimes read as 45s, 3m05s, 1d02h."""
        snapshot = {**SNAPSHOT, "uptime": 45.9, "backends": []}
        snapshot["totals"] = {**SNAPSHOT["totals"], "panic": True}
        first = cli.render_status(snapshot, "u").splitlines()[0]
        self.assertIn("  up 45s  ", first)
        self.assertTrue(first.endswith("  PANIC"), first)
        for seconds, text in ((185, "3m05s"), (93600, "1d02h")):
            snapshot["uptime"] = seconds
            self.assertIn(f" up {text} ", cli.render_status(snapshot, "u"))


class TokenTests(SynchronousTestCase):
    def token_file(self, text: str) -> str:
        fd, path = tempfile.mkstemp()
        self.addCleanup(os.remove, path)
        with os.fdopen(fd, "w") as f:
            f.write(text)
        return path

    def test_sources_in_order(self) -> None:
        """--token-file, then TXLB_ADMIN_TOKEN, then TXLB_ADMIN_TOKEN_FILE."""
        given = self.token_file("from-the-option\n")
        env_file = self.token_file("  from-the-env-file  ")
        env = {"TXLB_ADMIN_TOKEN": "from-the-env", "TXLB_ADMIN_TOKEN_FILE": env_file}
        self.assertEqual(cli.resolve_token(given, env), "from-the-option")
        self.assertEqual(cli.resolve_token(None, env), "from-the-env")
        del env["TXLB_ADMIN_TOKEN"]
        self.assertEqual(cli.resolve_token(None, env), "from-the-env-file")

    def test_errors(self) -> None:
        """No token, an unreadable or an empty file: one line saying so."""
        with self.assertRaises(cli.CLIError) as e:
            cli.resolve_token(None, {})
        self.assertIn("--token-file PATH", str(e.exception))
        self.assertIn("TXLB_ADMIN_TOKEN_FILE", str(e.exception))
        with self.assertRaises(cli.CLIError) as e:
            cli.resolve_token("/nonexistent/token", {})
        self.assertEqual(
            str(e.exception),
            "cannot read the admin token file '/nonexistent/token': No such file"
            " or directory",
        )
        with self.assertRaises(cli.CLIError) as e:
            cli.resolve_token(self.token_file("\n"), {})
        self.assertIn("is empty", str(e.exception))
        # Never a header with a line break in it (two lines, a space).
        for text in ("first\nsecond\n", "two words"):
            path = self.token_file(text)
            with self.assertRaises(cli.CLIError) as e:
                cli.resolve_token(path, {})
            self.assertEqual(
                str(e.exception),
                f"the admin token file {path!r} does not hold one token of"
                " A-Z a-z 0-9 - . _ ~ + / (as admin_token_file does)",
            )
        with self.assertRaises(cli.CLIError) as e:
            cli.resolve_token(None, {"TXLB_ADMIN_TOKEN": "a\r\nX-Evil: 1"})
        self.assertTrue(str(e.exception).startswith("TXLB_ADMIN_TOKEN does not"))


class WatchTests(SynchronousTestCase):
    def test_frames(self) -> None:
        """
        count frames, a blank line between them (not a terminal), a sleep
        of interval between them and none after the last.
        """
        frames = iter(["one\n", "two\n", "three\n"])
        sleeps: list[float] = []
        out = io.StringIO()
        status = cli.watch(lambda: next(frames), out, 0.5, 3, sleeps.append)
        self.assertEqual((status, out.getvalue()), (0, "one\n\ntwo\n\nthree\n"))
        self.assertEqual(sleeps, [0.5, 0.5])

    def test_clears_a_terminal(self) -> None:
        """On a terminal each frame starts by clearing the screen."""
        out = io.StringIO()
        cli.watch(lambda: "x\n", out, 1.0, 2, lambda s: None, clear=True)
        self.assertEqual(out.getvalue(), "\x1b[H\x1b[2Jx\n\x1b[H\x1b[2Jx\n")

    def test_failed_frame_tried_again(self) -> None:
        """A frame that fails shows its error; the next one tries again."""
        results: list[str | Exception] = [cli.CLIError("gone"), "back\n"]

        def frame() -> str:
            result = results.pop(0)
            if isinstance(result, Exception):
                raise result
            return result

        out = io.StringIO()
        self.assertEqual(cli.watch(frame, out, 2.0, 2, lambda s: None), 0)
        self.assertEqual(out.getvalue(), "txlb: gone (trying again every 2s)\n\nback\n")

    def test_last_frame_failed(self) -> None:
        """The exit status is 1 when the last frame failed."""

        def frame() -> str:
            raise cli.CLIError("down")

        self.assertEqual(cli.watch(frame, io.StringIO(), 1.0, 2, lambda s: None), 1)

    def test_ctrl_c(self) -> None:
        """Ctrl-C (while sleeping) ends the watch quietly with status 0."""

        def sleep(seconds: float) -> None:
            raise KeyboardInterrupt

        out = io.StringIO()
        self.assertEqual(cli.watch(lambda: "x\n", out, 1.0, None, sleep), 0)
        self.assertEqual(out.getvalue(), "x\n\n")


class CommandLineTests(SynchronousTestCase):
    def usage_error(self, *argv: str) -> str:
        err = io.StringIO()
        with mock.patch("sys.stderr", err), self.assertRaises(SystemExit) as e:
            cli.main(list(argv), io.StringIO(), io.StringIO(), {})
        self.assertEqual(e.exception.code, 2)
        return err.getvalue().splitlines()[-1]

    def test_bad_arguments(self) -> None:
        """A bad weight, interval or count is refused with what is allowed."""
        for weight in ("0", "1001", "heavy", "nan"):
            self.assertIn(
                "a weight is a number above 0 and at most 1000",
                self.usage_error("weight", "web1", weight),
            )
        self.assertIn(
            "expected a whole number from 1",
            self.usage_error("status", "--watch", "--count", "0"),
        )
        self.assertIn(
            "expected a number of seconds above 0",
            self.usage_error("status", "--interval", "-1"),
        )
        self.assertIn("invalid choice", self.usage_error("restart"))

    def test_admin_without_token(self) -> None:
        """An admin command without any token fails before calling txlb."""
        out, err = io.StringIO(), io.StringIO()
        status = cli.main(["drain", "web1", "--url", "http://[::1]:1"], out, err, {})
        self.assertEqual(status, 1)
        self.assertTrue(err.getvalue().startswith("txlb: admin actions need"))
        self.assertEqual(out.getvalue(), "")

    def test_default_url(self) -> None:
        """--url defaults to $TXLB_URL, else http://127.0.0.1:8080."""
        parser = cli._parser({})
        self.assertEqual(parser.parse_args(["status"]).url, "http://127.0.0.1:8080")
        parser = cli._parser({"TXLB_URL": "http://lb:9000"})
        self.assertEqual(parser.parse_args(["status"]).url, "http://lb:9000")

    def twistd_check(self, path: str) -> tuple[int, str, str]:
        out, err = io.StringIO(), io.StringIO()
        with (
            mock.patch("sys.stdout", out),
            mock.patch("sys.stderr", err),
            self.assertRaises(SystemExit) as e,
        ):
            Options().parseOptions(["--config", path, "--check"])
        return int(e.exception.code or 0), out.getvalue(), err.getvalue()

    def test_check_as_twistd(self) -> None:
        """
        txlb check prints what twistd txlb --check prints, with the same
        exit status, for a good file, a bad key and a bad endpoint.
        """
        for text in (
            "[txlb]\nlisten = tcp:8080\n[backend:a]\naddress = 127.0.0.1:9001\n",
            "[txlb]\nlisten = tcp:8080\nspeed = 3\n[backend:a]\naddress = h:1\n",
            "[txlb]\nlisten = tpc:8080\n[backend:a]\naddress = h:1\n",
        ):
            fd, path = tempfile.mkstemp(suffix=".ini")
            self.addCleanup(os.remove, path)
            with os.fdopen(fd, "w") as f:
                f.write(text)
            out, err = io.StringIO(), io.StringIO()
            status = cli.main(["check", path], out, err, {})
            self.assertEqual(
                (status, out.getvalue(), err.getvalue()), self.twistd_check(path)
            )
            self.assertEqual((out.getvalue() + err.getvalue()).count("\n"), 1)
