"""
The judgement of a request head once llhttp has parsed it: what llhttp
leaves to a server (see L{txlb.http.frontend}).  HTTP/1.0 and 1.1 only,
no C{CONNECT}, exactly one valid C{Host} on HTTP/1.1
(L{txlb.http.authority}), no C{Transfer-Encoding} on HTTP/1.0 and no
coding but C{chunked} (L{txlb.http.codings}), the body size limit, and the
request-target's form (no fragment; absolute-form becomes origin-form,
answered by our own backends, never fetched from the host it names).  A
head that fails raises L{Refused}.
"""

from __future__ import annotations

from txlb.config import ClientConfig
from txlb.http.authority import authority_error
from txlb.http.codings import transfer_coding_error
from txlb.http.request import ClientRequest

__all__ = ["Refused", "judge"]

_VERSIONS = {"1.1": b"HTTP/1.1", "1.0": b"HTTP/1.0"}


class Refused(Exception):
    """A request to answer with C{status} and close the connection."""

    def __init__(self, status: int, why: str) -> None:
        super().__init__(why)
        self.status = status
        self.why = why


def judge(
    request: ClientRequest,
    version: str,
    method: bytes,
    keep_alive: bool,
    limits: ClientConfig,
) -> None:
    """
    Judge C{request}'s parsed head, and fill in what the proxy reads of it
    (version, method, host, body length, connection tokens, upgrade...).

    @param version: llhttp's version (C{"1.1"}).
    @raise Refused: the head is refused (the status and why).
    """
    known = _VERSIONS.get(version)
    if known is None:
        if version < "1.0":
            raise Refused(400, "HTTP/0.9 is not served")
        raise Refused(505, f"HTTP/{version} is not served")
    request.version = known
    request.method = method
    request.keep_alive = keep_alive
    if method == b"CONNECT":
        raise Refused(405, "CONNECT is not served: txlb is no forward proxy")
    hosts = 0
    length: int | None = 0
    codings: list[bytes] = []
    for name, value in request.headers:
        lower = name.lower()
        if lower == b"host":
            hosts += 1
            request.host = value
        elif lower == b"content-length":
            length = int(value)  # llhttp checked: digits, one header
        elif lower == b"transfer-encoding":
            if known == b"HTTP/1.0":
                raise Refused(400, "Transfer-Encoding on an HTTP/1.0 request")
            codings.append(value)
        elif lower == b"connection":
            request.connection.append(value)
        elif lower == b"upgrade" and not request.upgrade:
            request.upgrade = value
        elif lower == b"expect" and value.lower() == b"100-continue":
            request.expect_continue = True
    if hosts > 1 or (hosts == 0 and known == b"HTTP/1.1"):
        raise Refused(400, f"{hosts} Host headers (one is required)")
    if request.host:
        why = authority_error(request.host)
        if why is not None:
            raise Refused(400, f"invalid Host: {why}")
    if codings:
        refusal = transfer_coding_error(codings)
        if refusal is not None:
            raise Refused(*refusal)
        length = None
    request.body_length = length
    limit = limits.max_body_size
    if limit and length is not None and length > limit:
        raise Refused(413, f"body of {length} bytes over max_body_size")
    _target(request)


def _target(request: ClientRequest) -> None:
    """Check the request-target's form; absolute-form becomes origin-form."""
    uri = request.uri
    if b"#" in uri:
        # No form has a fragment (RFC 9112 3.2): a backend or a path rule
        # reading it as part of the path would see another path than ours
        # (HAProxy's CVE-2023-45539).
        raise Refused(400, "a fragment in the request target")
    if uri.startswith(b"/"):
        return
    if uri == b"*" and request.method == b"OPTIONS":
        return
    scheme, sep, rest = uri.partition(b"://")
    if sep and scheme.lower() in (b"http", b"https"):
        # RFC 9112 3.2.2: the target's authority replaces Host.  The
        # request still goes to our backends, never to that host.
        authority, slash, path = rest.partition(b"/")
        if authority:
            request.uri = b"/" + path if slash else b"/"
            if b"?" in authority:
                authority, _, query = authority.partition(b"?")
                request.uri = b"/?" + query
            why = authority_error(authority)
            if why is not None:
                raise Refused(400, f"invalid request target: {why}")
            request.host = authority
            request.headers = [
                (n, v) for n, v in request.headers if n.lower() != b"host"
            ]
            request.headers.insert(0, (b"Host", authority))
            return
    raise Refused(400, "invalid request target")
