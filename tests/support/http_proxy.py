"""A loopback HTTP proxy that lets requests reach the service and drops some of the replies.

Each client connection carries one request (`Connection: close`): the proxy
sends it upstream, reads the whole reply, and then either passes it on or
closes the client's connection without a byte, as a proxy or network that
fails after the server acted does. The client cannot tell whether the visit
was counted, so it retries: the case idempotency keys exist for (G10).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable


class ReplyDroppingProxy:
    def __init__(self, target_port: int, drop: Callable[[bytes], bool]) -> None:
        """`drop(request)`: whether the reply to this request (head and body) is dropped."""
        self.target_port = target_port
        self._drop = drop
        self.port = 0
        self.connections = 0
        self.replies_dropped = 0
        self._server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def aclose(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            request = await reader.readuntil(b"\r\n\r\n")
            length = _content_length(request)
            if length:
                request += await reader.readexactly(length)
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
            up_writer.write(request)
            await up_writer.drain()
            reply = await up_reader.read()  # `Connection: close`: the server ends it
            up_writer.close()
            if self._drop(request):
                self.replies_dropped += 1
            else:
                writer.write(reply)
                await writer.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()


def _content_length(head: bytes) -> int:
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value.strip())
    return 0
