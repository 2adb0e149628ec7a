"""Commands packed into RESP in one pass, for the ring's connections and the cluster's.

redis-py's `pack_command` joins each argument onto a growing buffer, copying the buffer
again for every argument until it passes 6 KB: 6.2-6.8 ms for one node's part of a
10,000-page flush (about 13,000 arguments), against 4.4 ms appended to one bytearray.
A flush is the largest command the service sends, and it is packed on the event loop
that answers requests.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from redis.asyncio.connection import (
    AbstractConnection,
    Connection,
    SSLConnection,
    UnixDomainSocketConnection,
)


def _packed(arguments: Iterable[bytes | memoryview], count: int) -> bytes:
    # Into one growing bytearray: a list of parts joined at the end would allocate three
    # small objects per argument, and the memory a 100,000-page flush took that way stays
    # with the process (about 30 MiB of RSS).
    packed = bytearray(b"*%d\r\n" % count)
    for argument in arguments:
        # %b takes any buffer, a memoryview too (typeshed says bytes only).
        packed += b"$%d\r\n%b\r\n" % (len(argument), argument)  # type: ignore[str-format]
    return bytes(packed)


def pack_command(command: tuple[Any, ...]) -> bytes:
    """One command, its arguments as text (bytes as they are)."""
    return _packed(
        (value if isinstance(value, bytes) else str(value).encode() for value in command),
        len(command),
    )


class OnePassPacking(AbstractConnection):
    """A redis-py connection whose commands are packed in one pass, each argument encoded
    by the connection's own encoder, as redis-py's packing does."""

    def pack_command(self, *args: Any) -> list[bytes]:
        first = args[0]
        if isinstance(first, str):  # a command name of several words ("CONFIG GET")
            args = (*first.encode().split(), *args[1:])
        elif b" " in first:
            args = (*first.split(), *args[1:])
        return [_packed(map(self.encoder.encode, args), len(args))]


class OnePassConnection(OnePassPacking, Connection):
    pass


class OnePassSSLConnection(OnePassPacking, SSLConnection):
    pass


class OnePassUnixConnection(OnePassPacking, UnixDomainSocketConnection):
    pass


_ONE_PASS: dict[type[AbstractConnection], type[AbstractConnection]] = {
    Connection: OnePassConnection,
    SSLConnection: OnePassSSLConnection,
    UnixDomainSocketConnection: OnePassUnixConnection,
}


def one_pass(connection_class: type[AbstractConnection]) -> type[AbstractConnection]:
    """The one-pass variant of a redis-py connection class (plain, TLS or Unix socket);
    any other class as it is."""
    return _ONE_PASS.get(connection_class, connection_class)
