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


class FaultProxy:
    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.mode: Mode = "pass"
        self.port = 0
        self.replies_lost = 0
        self.latency = 0.0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    def set_mode(self, mode: Mode) -> None:
        self.mode = mode
        if mode != "pass":
            for writer in list(self._writers):
                writer.close()

    def reset_all(self) -> int:
        """Abort every open connection with RST (SO_LINGER 0); return how many."""
        writers = list(self._writers)
        for writer in writers:
            sock = writer.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()
        return len(writers)

    async def aclose(self) -> None:
        if self._server is not None:
            self._server.close()
            for writer in list(self._writers):
                writer.close()
            await self._server.wait_closed()

    async def _handle(
        self, client_reader: asyncio.StreamReader, client: asyncio.StreamWriter
    ) -> None:
        if self.mode == "refuse":
            client.close()
            return
        node_reader, node = await asyncio.open_connection("127.0.0.1", self.target_port)
        self._writers.update((client, node))
        script_sent = asyncio.Event()
        try:
            await asyncio.gather(
                self._pipe(client_reader, node, script_sent, replies=False),
                self._pipe(node_reader, client, script_sent, replies=True),
            )
        finally:
            for writer in (client, node):
                self._writers.discard(writer)
                writer.close()

    async def _pipe(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        script_sent: asyncio.Event,
        *,
        replies: bool,
    ) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            while data := await reader.read(65536):
                if not replies and b"EVALSHA" in data.upper():
                    script_sent.set()
                if replies and self.mode == "lose_replies" and script_sent.is_set():
                    self.replies_lost += 1
                    writer.close()
                    return
                if replies and self.latency:
                    await asyncio.sleep(self.latency)
                writer.write(data)
                await writer.drain()
        writer.close()
