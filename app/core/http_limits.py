"""Request-head limits for uvicorn's httptools server: oversized URLs and headers get a 4xx.

uvicorn bounds neither when it runs httptools (only its h11 server has a limit,
`h11_max_incomplete_event_size`): a 1 MB header reaches the app, and the parser
keeps buffering a head until its blank line arrives. httptools alone refuses only
URLs past 64 KiB (400). This protocol, used by `python -m app serve` and the
Dockerfile as `--http app.core.http_limits:BoundedHttpToolsProtocol`, answers

- 414 when the request target is longer than MAX_URL_BYTES,
- 431 when the request line and headers together exceed MAX_HEAD_BYTES,

with the service's JSON error body and closes the connection. A head still
arriving is cut off as soon as more than MAX_HEAD_BYTES of it have come in after
the read that started it, so one connection buffers at most one read plus
MAX_HEAD_BYTES. Page ids are at most 256 characters, so the URL limit is generous.

The close lingers (as nginx's does): the answer is sent with a FIN, and what the
client is still sending is read and dropped, for up to LINGER_SECONDS or
LINGER_MAX_BYTES. Closing a socket with unread data makes the kernel send a reset,
which can destroy the answer before the client reads it.

Cost per request: a few integer operations; the headers are only summed for a
head whose reads added up to more than MAX_HEAD_BYTES.
"""

from __future__ import annotations

from typing import Any

from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from app.core.errors import error_body

MAX_URL_BYTES = 8 * 1024
MAX_HEAD_BYTES = 16 * 1024
LINGER_SECONDS = 2.0
LINGER_MAX_BYTES = 1024 * 1024
# For `uvicorn --http` (it imports a protocol class given as "module:attribute").
PROTOCOL_PATH = "app.core.http_limits:BoundedHttpToolsProtocol"

_REFUSALS = {
    414: ("url_too_long", f"the request target is longer than {MAX_URL_BYTES} bytes"),
    431: ("headers_too_large", f"the request line and headers exceed {MAX_HEAD_BYTES} bytes"),
}


class _HeadRefused(Exception):
    """Raised from a parser callback to stop parsing; httptools re-raises it as a parser error."""


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with limits on the request target and the request head."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._read_size = 0  # size of the read being parsed
        self._first_read = 0  # size of the read that started the current request
        self._head_bytes: int | None = 0  # bytes read since then; None once the head is complete
        self._refused: int | None = None  # status to answer instead of uvicorn's 400
        self._dropped = 0  # bytes read and dropped after a refusal

    def data_received(self, data: bytes) -> None:
        if self._refused is not None:
            self._dropped += len(data)
            if self._dropped > LINGER_MAX_BYTES:
                self.transport.close()
            return
        self._read_size = len(data)
        if self._head_bytes is not None:
            self._head_bytes += self._read_size
        super().data_received(data)
        if (
            self._head_bytes is not None
            and self._head_bytes > MAX_HEAD_BYTES
            and not self.transport.is_closing()
        ):
            self._refused = 431  # the head is still incomplete and already too large
            self.send_400_response("")

    def on_message_begin(self) -> None:
        super().on_message_begin()
        # The read that starts a request may also end the previous one (pipelining):
        # count it only as an upper bound, never for cutting off an incomplete head.
        self._first_read, self._head_bytes = self._read_size, 0

    def on_headers_complete(self) -> None:
        assert self._head_bytes is not None
        if self._first_read + self._head_bytes > MAX_HEAD_BYTES:
            if len(self.url) > MAX_URL_BYTES:
                self._refused = 414
                raise _HeadRefused
            head = len(self.url) + sum(len(name) + len(value) + 4 for name, value in self.headers)
            if head > MAX_HEAD_BYTES:
                self._refused = 431
                raise _HeadRefused
        self._head_bytes = None
        super().on_headers_complete()

    def send_400_response(self, msg: str) -> None:
        """uvicorn's answer to a parser error; ours when the error was a refused head."""
        if self._refused is None:
            super().send_400_response(msg)
            return
        code, message = _REFUSALS[self._refused]
        body = error_body(code, message)
        content = [STATUS_LINE[self._refused]]
        for name, value in self.server_state.default_headers:
            content.extend([name, b": ", value, b"\r\n"])
        content.extend(
            [
                b"content-type: application/json\r\n",
                b"content-length: " + str(len(body)).encode() + b"\r\n",
                b"connection: close\r\n\r\n",
                body,
            ]
        )
        self.transport.write(b"".join(content))
        if self.transport.can_write_eof():
            self.transport.write_eof()
            self.loop.call_later(LINGER_SECONDS, self.transport.close)
        else:
            self.transport.close()
