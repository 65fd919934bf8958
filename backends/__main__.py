"""
Command line: run one or more demo backends in one process.

  python -m backends --port 9001 [--port 9002 ...] [--name web1 ...]
      [--host 127.0.0.1] [--delay 5ms | --delay 10ms-50ms] [--capacity 4]
      [--error-rate 0.1] [--seed 42] [--access-log]
  python -m backends --tcp-echo --port 9001 [--port 9002 ...]
      TCP echo servers instead (for txlb's TCP mode)

Names: one C{--name} per C{--port}; or a single C{--name} used as is for one
port and as C{<name>-<port>} for several; or, with no C{--name},
C{backend-<port>}.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from random import Random
from typing import Any, NoReturn

import attrs
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IListeningPort, IReactorTCP, IReactorTime
from twisted.logger import Logger, globalLogBeginner, textFileLogObserver
from twisted.web.resource import Resource
from twisted.web.server import Site

from backends.app import DemoBackend
from backends.echo import echo_factory
from backends.settings import (
    NO_DELAY,
    ServiceTime,
    SettingError,
    parse_capacity,
    parse_error_rate,
    parse_service_time,
)

__all__ = ["Options", "listen", "listen_echo", "main", "parse_args"]

_PROG = "txlb-demo-backend"
log = Logger(namespace="backends")


@attrs.frozen
class Options:
    """
    The parsed command line.

    @ivar names: the C{--name} values: none, one, or one per port.
    """

    ports: tuple[int, ...]
    names: tuple[str, ...] = ()
    host: str = "127.0.0.1"
    service_time: ServiceTime = NO_DELAY
    capacity: int = 0
    error_rate: float = 0.0
    seed: int | None = None
    access_log: bool = False
    tcp_echo: bool = False

    def name_for(self, index: int, port: int) -> str:
        """The name of the backend for C{ports[index]}, listening on C{port}."""
        if len(self.names) == len(self.ports):
            return self.names[index]
        if self.names:
            return f"{self.names[0]}-{port}"
        return f"backend-{port}"


class UsageError(Exception):
    """A bad command line; C{str()} is the one-line message."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


def _setting(parse: Any) -> Any:
    def convert(text: str) -> Any:
        try:
            return parse(text)
        except SettingError as e:
            raise argparse.ArgumentTypeError(str(e)) from None

    return convert


def _port(text: str) -> int:
    if not text.isdigit() or not 0 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"invalid port {text!r}: expected 0 to 65535")
    return int(text)


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=_PROG, description="Run demo HTTP backends for txlb.")
    add = parser.add_argument
    add(
        "--port",
        type=_port,
        action="append",
        required=True,
        help="port to serve; repeat",
    )
    add("--name", action="append", default=[], help="backend name; repeat with --port")
    add("--host", default="127.0.0.1", help="interface to listen on")
    add(
        "--delay",
        type=_setting(parse_service_time),
        default=NO_DELAY,
        help="service time: 5ms, 0.2s, 0, or a uniform range 10ms-50ms",
    )
    add(
        "--capacity",
        type=_setting(parse_capacity),
        default=0,
        help="requests in service at once, the rest queue; 0 = unlimited",
    )
    add(
        "--error-rate",
        type=_setting(parse_error_rate),
        default=0.0,
        help="fraction of requests answered 500 at once, 0 to 1",
    )
    add("--seed", type=int, default=None, help="seed for the random numbers")
    add("--access-log", action="store_true", help="log every request")
    add(
        "--tcp-echo",
        action="store_true",
        help="serve TCP echo (every byte back) instead of HTTP",
    )
    return parser


def parse_args(argv: Sequence[str]) -> Options:
    """
    Parse the command line.

    @raise UsageError: with a one-line message on any bad value.
    """
    args = _parser().parse_args(list(argv))
    ports = tuple(args.port)
    taken = [port for port in ports if port and ports.count(port) > 1]
    if taken:
        raise UsageError(f"port {taken[0]} given more than once")
    names = tuple(args.name)
    if len(names) not in (0, 1, len(ports)):
        raise UsageError(
            f"give one --name, or one per --port ({len(ports)}), not {len(names)}"
        )
    if any(not name.strip() for name in names):
        raise UsageError("--name must not be empty")
    return Options(
        ports=ports,
        names=names,
        host=args.host,
        service_time=args.delay,
        capacity=args.capacity,
        error_rate=args.error_rate,
        seed=args.seed,
        access_log=args.access_log,
        tcp_echo=args.tcp_echo,
    )


class _QuietSite(Site):
    """A site without the per-request access log."""

    def log(self, request: object) -> None:
        pass


def listen(reactor: Any, options: Options) -> list[tuple[DemoBackend, IListeningPort]]:
    """
    Listen on each port and serve a backend there.

    A backend is named after the port it really got, so C{--port 0} works.

    @param reactor: an L{IReactorTCP} and L{IReactorTime} provider.
    @raise CannotListenError: if a port is taken.
    """
    assert IReactorTCP.providedBy(reactor) and IReactorTime.providedBy(reactor)
    started = []
    for index, port in enumerate(options.ports):
        site = (Site if options.access_log else _QuietSite)(Resource())
        site.noisy = False
        listening = reactor.listenTCP(port, site, interface=options.host)  # type: ignore[arg-type]
        address = listening.getHost()
        assert isinstance(address, IPv4Address | IPv6Address)
        name = options.name_for(index, address.port)
        seed = f"{options.seed}:{index}" if options.seed is not None else None
        backend = DemoBackend(
            name=name,
            clock=reactor,
            service_time=options.service_time,
            capacity=options.capacity,
            error_rate=options.error_rate,
            rng=Random(seed),
        )
        site.resource = backend.resource()
        log.info(
            "backend {name} listening on http://{host}:{port}/ "
            "(delay {delay}, capacity {capacity}, error rate {error_rate})",
            name=name,
            host=address.host,
            port=address.port,
            delay=str(options.service_time),
            capacity=options.capacity or "unlimited",
            error_rate=options.error_rate,
        )
        started.append((backend, listening))
    return started


def listen_echo(reactor: Any, options: Options) -> list[IListeningPort]:
    """
    Listen on each port with a TCP echo server.

    @raise CannotListenError: if a port is taken.
    """
    ports = []
    for port in options.ports:
        listening = reactor.listenTCP(port, echo_factory(), interface=options.host)
        address = listening.getHost()
        log.info(
            "tcp echo listening on {host}:{port}", host=address.host, port=address.port
        )
        ports.append(listening)
    return ports


def main(argv: Sequence[str] | None = None) -> None:
    """Run demo backends until interrupted; exit 2 on a bad command line."""
    try:
        options = parse_args(sys.argv[1:] if argv is None else argv)
    except UsageError as e:
        _fail(2, str(e))
    globalLogBeginner.beginLoggingTo(
        [textFileLogObserver(sys.stdout)], redirectStandardIO=False
    )
    from twisted.internet import reactor

    try:
        if options.tcp_echo:
            listen_echo(reactor, options)
        else:
            listen(reactor, options)
    except CannotListenError as e:
        _fail(1, f"cannot listen on {e.interface or '*'}:{e.port}: {e.socketError}")
    reactor.run()  # type: ignore[attr-defined,misc,unused-ignore]


def _fail(code: int, message: str) -> NoReturn:
    sys.stderr.write(f"{_PROG}: error: {message}\n")
    raise SystemExit(code)


if __name__ == "__main__":
    main()
