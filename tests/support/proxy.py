"""A loopback TCP proxy in front of a real node, for faults a process signal cannot make.

`lose_replies`: script calls (EVALSHA) reach the node, which applies them, but
the reply is dropped and the client's connection closed: the "applied, reply
lost" case. Other commands (connection handshake, PING) pass untouched.
`refuse`: new connections are closed at once and open ones cut, like a dead node.
`latency`: seconds every reply chunk waits before it is passed on (a slow node).
`reset_all()`: every open connection is aborted with a TCP reset (RST), in both
directions, as a restarted firewall or load balancer does to idle connections.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from typing import Literal

Mode = Literal["pass", "lose_replies", "refuse"]


class Connection:
    """One client's connection through a proxy: whether its marked request went by."""

    def __init__(self) -> None:
        self.marked = False


class LoopbackProxy:
    """A loopback TCP proxy to `target_port`; subclasses say which requests mark their
    connection (`marks`), when a reply is dropped with the connection cut (`drops`), and
    whether new connections are refused (`refusing`)."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self.latency = 0.0  # seconds every reply chunk waits before it is passed on
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def refusing(self) -> bool:
        return False

    def marks(self, request: bytes) -> bool:
        return False

    def drops(self, connection: Connection) -> bool:
        return False

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    def close_connections(self) -> None:
        for writer in list(self._writers):
            writer.close()

    async def aclose(self) -> None:
        if self._server is not None:
            self._server.close()
            self.close_connections()
            await self._server.wait_closed()

    async def _handle(
        self, client_reader: asyncio.StreamReader, client: asyncio.StreamWriter
    ) -> None:
        if self.refusing:
            client.close()
            return
        target_reader, target = await asyncio.open_connection("127.0.0.1", self.target_port)
        self._writers.update((client, target))
        connection = Connection()
        try:
            await asyncio.gather(
                self._pipe(client_reader, target, connection, replies=False),
                self._pipe(target_reader, client, connection, replies=True),
            )
        finally:
            for writer in (client, target):
                self._writers.discard(writer)
                writer.close()

    async def _pipe(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        connection: Connection,
        *,
        replies: bool,
    ) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            while data := await reader.read(65536):
                if not replies and self.marks(data):
                    connection.marked = True
                if replies and self.drops(connection):
                    writer.close()
                    return
                if replies and self.latency:
                    await asyncio.sleep(self.latency)
                writer.write(data)
                await writer.drain()
        writer.close()


class FaultProxy(LoopbackProxy):
    """In front of a Redis node (see the module docstring)."""

    def __init__(self, target_port: int) -> None:
        super().__init__(target_port)
        self.mode: Mode = "pass"
        self.replies_lost = 0

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    @property
    def refusing(self) -> bool:
        return self.mode == "refuse"

    def marks(self, request: bytes) -> bool:
        return b"EVALSHA" in request.upper()

    def drops(self, connection: Connection) -> bool:
        if self.mode == "lose_replies" and connection.marked:
            self.replies_lost += 1
            return True
        return False

    def set_mode(self, mode: Mode) -> None:
        self.mode = mode
        if mode != "pass":
            self.close_connections()

    def reset_all(self) -> int:
        """Abort every open connection with RST (SO_LINGER 0); return how many."""
        writers = list(self._writers)
        for writer in writers:
            sock = writer.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()
        return len(writers)
