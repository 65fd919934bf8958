"""Tests for L{txlb.fleet.wire}: reports round-trip; anything else is refused."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from txlb.fleet.wire import MAX_REPORT, Ejected, Report, decode, encode

GOOD = {
    "v": 1,
    "node": "lb-a",
    "instance": "abc",
    "seq": 3,
    "load": 2,
    "ttl": 0.25,
    "backends": {"10.0.0.1:9000": 2},
    "ejected": {"10.0.0.2:9000": [12.5, "5 consecutive failures", 1]},
}


def body(**changes: object) -> bytes:
    data = {**GOOD, **changes}
    return json.dumps({k: v for k, v in data.items() if v is not None}).encode()


addresses = st.from_regex(r"10\.0\.[0-9]{1,3}\.[0-9]{1,3}:[0-9]{2,5}", fullmatch=True)


class WireTests(SynchronousTestCase):
    def test_decode(self) -> None:
        """A report as a node writes it."""
        report = decode(body())
        self.assertEqual(
            report,
            Report(
                "lb-a",
                "abc",
                3,
                2,
                0.25,
                {"10.0.0.1:9000": 2},
                {"10.0.0.2:9000": Ejected(12.5, "5 consecutive failures", 1)},
            ),
        )

    @given(
        st.dictionaries(addresses, st.integers(1, 10**6), max_size=20),
        st.dictionaries(
            addresses,
            st.builds(
                Ejected,
                st.floats(0, 3600, allow_nan=False).map(lambda f: round(f, 3)),
                st.text(max_size=100),
                st.integers(0, 1000),
            ),
            max_size=5,
        ),
        st.integers(0, 2**40),
    )
    def test_round_trip(
        self, backends: dict[str, int], ejected: dict[str, Ejected], seq: int
    ) -> None:
        """Whatever a node reports reads back the same."""
        report = Report(
            "node-1", "i", seq, sum(backends.values()), 0.3, backends, ejected
        )
        self.assertEqual(decode(encode(report)), report)

    def test_refused(self) -> None:
        """Anything not a report is refused, saying what is wrong."""
        cases = {
            b"{nope": "not JSON",
            b"[1]": "not a JSON object",
            b"\xff": "not JSON",
            body(v=2): "version 2",
            body(node=""): "node is not",
            body(instance=None): "instance is not",
            body(seq=-1): "seq is not a count",
            body(load=1.5): "load is not a count",
            body(load=True): "load is not a count",
            body(ttl="x"): "ttl is not",
            body(ttl=None): "ttl is not",
            body(backends=[1]): "backends is not an object",
            body(backends={"a:1": "3"}): "is not a count",
            body(ejected={"a:1": [1, "x"]}): "is not [seconds, cause, serial]",
            body(ejected={"a:1": [-1, "x", 1]}): "seconds is not",
            body(ejected={"a:1": [1, 2, 1]}): "cause is not",
            body(ejected={"a:1": [1, "x", -1]}): "serial is not",
            b" " * (MAX_REPORT + 1): "larger than",
        }
        for text, why in cases.items():
            with self.subTest(why=why):
                with self.assertRaises(ValueError) as e:
                    decode(text)
                self.assertIn(why, str(e.exception))
