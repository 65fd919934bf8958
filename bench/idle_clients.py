"""
Open many keep-alive client connections to a balancer, send one request on
each, read its answer, and keep them all open and idle.

  python bench/idle_clients.py --port 8080 --count 10000 [--parallel 64]

Prints one JSON line when every connection is open and answered (or failed):
C{{"opened": N, "answered": N, "failed": N, "errors": {...}, "seconds": S}},
then holds the connections until a line (or end of file) arrives on standard
input, closes them all, prints C{{"closed": N}} and exits.

Plain non-blocking sockets on one epoll, at most C{--parallel} connections
connecting or waiting for their answer at a time: fast enough that opening
10,000 takes a few seconds on a loaded machine.
"""

from __future__ import annotations

import argparse
import errno
import json
import resource
import select
import socket
import sys
import time
from collections import Counter

_CONNECTING, _WAITING = 0, 1


def _complete(buffer: bytes) -> bytes | None:
    """The status code once the whole answer is in C{buffer}, else None."""
    head, sep, body = buffer.partition(b"\r\n\r\n")
    if not sep:
        return None
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    if len(body) < length:
        return None
    return head.split(b" ", 2)[1]


def open_all(
    host: str, port: int, count: int, parallel: int, timeout: float
) -> tuple[list[socket.socket], Counter[str], int]:
    request = f"GET / HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode()
    poller = select.epoll()
    idle: list[socket.socket] = []
    errors: Counter[str] = Counter()
    busy: dict[int, tuple[socket.socket, int, bytes, float]] = {}
    started = 0
    deadline = time.monotonic() + timeout

    def fail(fd: int, why: str) -> None:
        sock = busy.pop(fd)[0]
        poller.unregister(fd)
        sock.close()
        errors[why] += 1

    while started < count or busy:
        while started < count and len(busy) < parallel:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setblocking(False)
            code = sock.connect_ex((host, port))
            started += 1
            if code not in (0, errno.EINPROGRESS):
                sock.close()
                errors[f"connect: {errno.errorcode.get(code, code)}"] += 1
                continue
            busy[sock.fileno()] = (sock, _CONNECTING, b"", time.monotonic())
            poller.register(sock.fileno(), select.EPOLLOUT)
        if time.monotonic() > deadline:
            for fd in list(busy):
                fail(fd, "timed out")
            break
        for fd, _events in poller.poll(0.5):
            sock, state, buffer, since = busy[fd]
            if state == _CONNECTING:
                code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if code:
                    fail(fd, f"connect: {errno.errorcode.get(code, code)}")
                    continue
                sock.send(request)
                busy[fd] = (sock, _WAITING, b"", since)
                poller.modify(fd, select.EPOLLIN)
                continue
            try:
                data = sock.recv(65536)
            except OSError as e:
                fail(fd, f"read: {e.strerror}")
                continue
            if not data:
                fail(fd, "closed before the answer")
                continue
            buffer += data
            status = _complete(buffer)
            if status is None:
                busy[fd] = (sock, _WAITING, buffer, since)
                continue
            poller.unregister(fd)
            del busy[fd]
            if status.startswith(b"2"):
                idle.append(sock)
            else:
                errors[f"status {status.decode()}"] += 1
                sock.close()
    poller.close()
    return idle, errors, started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--count", type=int, default=10000)
    parser.add_argument("--parallel", type=int, default=64)
    parser.add_argument("--timeout", type=float, default=120.0)
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, args.count + 1000)
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    began = time.monotonic()
    idle, errors, started = open_all(
        args.host, args.port, args.count, args.parallel, args.timeout
    )
    print(
        json.dumps(
            {
                "attempted": started,
                "opened": len(idle),
                "answered": len(idle),
                "failed": sum(errors.values()),
                "errors": dict(errors.most_common(5)),
                "seconds": round(time.monotonic() - began, 2),
            }
        ),
        flush=True,
    )
    sys.stdin.readline()
    # A connection the balancer closed while idle reads as end of file.
    closed_by_peer = 0
    for sock in idle:
        try:
            if sock.recv(1, socket.MSG_PEEK) == b"":
                closed_by_peer += 1
        except BlockingIOError:
            pass
        except OSError:
            closed_by_peer += 1
        sock.close()
    print(
        json.dumps({"closed": len(idle), "closed_by_balancer_first": closed_by_peer}),
        flush=True,
    )


if __name__ == "__main__":
    main()
