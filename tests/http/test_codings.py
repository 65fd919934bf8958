"""
L{txlb.http.codings.transfer_coding_error}: only C{chunked}, once and last,
is understood; the answers RFC 9112 sections 6.1 and 6.3 ask for.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from txlb.http.codings import transfer_coding_error

NOT_LAST = (400, "a Transfer-Encoding that does not end in chunked")
TWICE = (400, "chunked applied more than once")
MALFORMED = (400, "a malformed transfer coding")

CASES: list[tuple[list[bytes], tuple[int, str] | None]] = [
    ([b"chunked"], None),
    ([b"Chunked"], None),
    ([b"CHUNKED"], None),
    ([b"  chunked\t"], None),
    ([b", chunked"], None),  # an empty list element is ignored (RFC 9110 5.6.1)
    ([b"", b"chunked"], None),
    # 6.3: the final coding is not chunked: the length cannot be known.
    ([b"gzip"], NOT_LAST),
    ([b"blegh"], NOT_LAST),
    ([b"xchunked"], NOT_LAST),
    ([b"chunkedx"], NOT_LAST),
    ([b"identity"], NOT_LAST),
    ([b"chunked;q=1"], NOT_LAST),
    ([b"chunked, gzip"], NOT_LAST),
    ([b"chunked", b"gzip"], NOT_LAST),
    ([b"gzip, chunked, gzip"], NOT_LAST),
    # 6.1: chunked at most once.
    ([b"chunked, chunked"], TWICE),
    ([b"chunked", b"chunked"], TWICE),
    ([b"chunked", b"gzip, chunked"], TWICE),
    # 6.1: an unknown coding before chunked: 501, never dropped.
    ([b"gzip, chunked"], (501, "transfer coding gzip not implemented")),
    ([b"GZIP,chunked"], (501, "transfer coding gzip not implemented")),
    ([b"gzip", b"chunked"], (501, "transfer coding gzip not implemented")),
    (
        [b"deflate", b"gzip", b"chunked"],
        (501, "transfer coding deflate not implemented"),
    ),
    ([b"compress, chunked"], (501, "transfer coding compress not implemented")),
    ([b"identity, chunked"], (501, "transfer coding identity not implemented")),
    ([b"gzip;level=9, chunked"], (501, "transfer coding gzip not implemented")),
    ([b"x" * 100 + b", chunked"], (501, f"transfer coding {'x' * 40} not implemented")),
    # Not a token: malformed.
    ([b"\xffchunked"], MALFORMED),
    ([b"chunked\xff"], MALFORMED),
    ([b"\xffchunked\xff, chunked"], MALFORMED),
    ([b"g zip, chunked"], MALFORMED),
    ([b"gz(ip), chunked"], MALFORMED),
    ([b'"chunked"'], MALFORMED),
    ([b""], (400, "an empty Transfer-Encoding")),
    ([b" , ,"], (400, "an empty Transfer-Encoding")),
]


class TransferCodingTests(SynchronousTestCase):
    def test_table(self) -> None:
        """Each list of Transfer-Encoding lines gets its RFC 9112 answer."""
        for values, expected in CASES:
            self.assertEqual(transfer_coding_error(values), expected, values)
