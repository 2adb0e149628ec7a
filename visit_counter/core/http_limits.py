"""Limits on what one HTTP connection may cost uvicorn's httptools server: size, time, count.

uvicorn bounds none of them when it runs httptools (only its h11 server has a size
limit, `h11_max_incomplete_event_size`): a 1 MB header reaches the app, a head that
never ends is buffered and waited for for ever, and idle sockets pile up until the
process runs out of file descriptors. httptools alone refuses only URLs past 64 KiB.
This protocol, used by `python -m app serve`, the Dockerfile and the tests as
`--http app.core.http_limits:BoundedHttpToolsProtocol`, answers with the service's
JSON error body and closes the connection:

- 414 when the request target is longer than MAX_URL_BYTES (one length check per
  piece of target the parser hands over, so a long target is refused as it arrives);
- 431 when the request line and headers exceed MAX_HEAD_BYTES. A head still arriving
  is cut off as soon as more than MAX_HEAD_BYTES of it have come in after the read that
  started it, so one connection buffers at most one read plus MAX_HEAD_BYTES;
- 408 when a request head is not complete HEAD_TIMEOUT_SECONDS after its first byte
  (after the connection opened, for its first request). A trickle does not extend the
  deadline. A connection that sent nothing by then is closed without an answer. Idle
  between requests, a connection is closed by uvicorn's keep-alive timeout
  (`--timeout-keep-alive`, 5 s); the first byte of the next request starts the
  deadline, as any byte cancels that timeout;
- 503 when a worker already holds MAX_CONNECTIONS and every one is serving a request
  (else the connections that have waited longest for a request make room: see
  `ConnectionGuard`). Refused and evicted connections are closed at once, to free the
  descriptor; one that had sent part of a request gets the 503 first.

Where the limits come from: uvicorn builds this protocol itself, from the class path,
in every worker process, and hands it the lifespan state (`app_state`). The app's
lifespan puts the worker's `ConnectionGuard` there under STATE_KEY, built from the
settings the app loaded, so nothing is read twice and nothing is global. Under an app
that sets no guard, the size limits and DEFAULT_HEAD_TIMEOUT_SECONDS apply, without a
connection limit.

The 414, 431 and 408 closes linger (as nginx's do): the answer is sent with a FIN,
and what the client is still sending is read and dropped, for up to LINGER_SECONDS or
LINGER_MAX_BYTES. Closing a socket with unread data makes the kernel send a reset,
which can destroy the answer before the client reads it.

Cost per request: a few integer operations and one clock read; the headers are only
summed for a head whose reads added up to more than MAX_HEAD_BYTES, and the head
deadline's timer is re-armed at most once per HEAD_TIMEOUT_SECONDS per connection.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol
from uvicorn.server import ServerState

from visit_counter.core.config import DEFAULT_HEAD_TIMEOUT_SECONDS
from visit_counter.core.connection_limits import ConnectionGuard
from visit_counter.core.errors import error_body

MAX_URL_BYTES = 8 * 1024
MAX_HEAD_BYTES = 16 * 1024
LINGER_SECONDS = 2.0
LINGER_MAX_BYTES = 1024 * 1024
STATE_KEY = "connection_guard"  # the lifespan state key of the worker's ConnectionGuard
# For `uvicorn --http` (it imports a protocol class given as "module:attribute").
PROTOCOL_PATH = "visit_counter.core.http_limits:BoundedHttpToolsProtocol"

_HEAD_REFUSALS = {
    414: ("url_too_long", f"the request target is longer than {MAX_URL_BYTES} bytes"),
    431: ("headers_too_large", f"the request line and headers exceed {MAX_HEAD_BYTES} bytes"),
}
_TOO_MANY = ("too_many_connections", "the server holds as many connections as it may")


class _HeadRefused(Exception):
    """Raised from a parser callback to stop parsing; httptools re-raises it as a parser error."""


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with limits on request heads and on connections."""

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        # No WebSocket upgrades (the service has no WebSocket route): an upgraded
        # connection would leave this protocol, and its slot would never be released.
        self.ws_protocol_class = None
        guard = app_state.get(STATE_KEY)
        self._guard = guard if isinstance(guard, ConnectionGuard) else None
        self._head_timeout = (
            self._guard.head_timeout if self._guard else DEFAULT_HEAD_TIMEOUT_SECONDS
        )
        # Loop time since which the connection has waited for a request; None while it
        # serves one. The guard closes the longest-waiting first (`ConnectionGuard`).
        self.waiting_since: float | None = None
        self._head_since: float | None = None  # when the awaited head's deadline started
        self._head_timer: asyncio.TimerHandle | None = None
        self._partial = False  # bytes came in since the connection began waiting
        self._read_size = 0  # size of the read being parsed
        self._first_read = 0  # size of the read that started the current request
        self._head_bytes: int | None = 0  # bytes read since then; None once the head is complete
        self._refused: int | None = None  # status answered; what still comes is dropped
        self._dropped = 0  # bytes read and dropped after a refusal

    # -- the connection --------------------------------------------------------------

    def connection_made(  # type: ignore[override]
        self, transport: asyncio.Transport
    ) -> None:
        super().connection_made(transport)
        now = self.waiting_since = self._head_since = self.loop.time()
        if self._guard is not None and not self._guard.admit(self, now):
            self._refused = 503
            self._answer(503, *_TOO_MANY, linger=False)
            return
        self._head_timer = self.loop.call_later(self._head_timeout, self._check_head_deadline)

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        if self._guard is not None:
            self._guard.release(self)
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def evict(self) -> None:
        """Close now to make room for a new connection; 503 if part of a request had come."""
        self.waiting_since = None
        if self.transport.is_closing():
            return
        if self._partial and self._refused is None:
            self._refused = 503
            self._answer(503, *_TOO_MANY, linger=False)
        else:
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        if self._refused is not None:
            self._dropped += len(data)
            if self._dropped > LINGER_MAX_BYTES:
                self.transport.close()
            return
        if self.waiting_since is not None:  # no request is being served: a head is awaited
            self._partial = True
            if self._head_since is None:  # its first byte starts the deadline
                self._head_since = self.loop.time()
                if self._head_timer is None:
                    self._head_timer = self.loop.call_later(
                        self._head_timeout, self._check_head_deadline
                    )
        self._read_size = len(data)
        if self._head_bytes is not None:
            self._head_bytes += self._read_size
        super().data_received(data)
        if (
            self._refused is None  # (a refusal by a parser callback is answered already)
            and self._head_bytes is not None
            and self._head_bytes > MAX_HEAD_BYTES
            and not self.transport.is_closing()
        ):
            self.logger.warning("Request head over %d bytes and not complete.", MAX_HEAD_BYTES)
            self._refuse_head(431)

    def _check_head_deadline(self) -> None:
        """The head timer: 408 (or a plain close) once the awaited head is late.

        The timer is not cancelled when a head completes; it finds nothing awaited and
        stops, or re-arms for what is left of a head that began since.
        """
        self._head_timer = None
        if self._head_since is None or self._refused is not None or self.transport.is_closing():
            return
        remaining = self._head_since + self._head_timeout - self.loop.time()
        if remaining > 0:
            self._head_timer = self.loop.call_later(remaining, self._check_head_deadline)
            return
        if self._guard is not None:
            self._guard.note("head_timeout")
        if not self._partial:
            self.transport.close()  # it sent nothing: there is nothing to answer
            return
        self._refused = 408
        message = f"the request head was not complete within {self._head_timeout:g} seconds"
        self._answer(408, "request_timeout", message, linger=True)

    # -- parser callbacks ------------------------------------------------------------

    def on_message_begin(self) -> None:
        super().on_message_begin()
        # The read that starts a request may also end the previous one (pipelining):
        # count it only as an upper bound, never for cutting off an incomplete head.
        self._first_read, self._head_bytes = self._read_size, 0

    def on_url(self, url: bytes) -> None:
        super().on_url(url)
        if len(self.url) > MAX_URL_BYTES:
            self._refused = 414
            raise _HeadRefused

    def on_headers_complete(self) -> None:
        assert self._head_bytes is not None
        if self._first_read + self._head_bytes > MAX_HEAD_BYTES:
            head = len(self.url) + sum(len(name) + len(value) + 4 for name, value in self.headers)
            if head > MAX_HEAD_BYTES:
                self._refused = 431
                raise _HeadRefused
        self._head_bytes = None
        self.waiting_since = self._head_since = None
        self._partial = False
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        # Unless a pipelined request started, the connection now waits for the next one.
        if self.cycle.response_complete and not self.transport.is_closing():
            self.waiting_since = self.loop.time()

    # -- answers ---------------------------------------------------------------------

    def send_400_response(self, msg: str) -> None:
        """uvicorn's answer to a parser error; ours when the error was a refused head."""
        if self._refused is None:
            super().send_400_response(msg)
        else:
            self._refuse_head(self._refused)

    def _refuse_head(self, status: int) -> None:
        code, message = _HEAD_REFUSALS[status]
        self._refused = status
        if self._guard is not None:
            self._guard.note(code)
        self._answer(status, code, message, linger=True)

    def _answer(self, status: int, code: str, message: str, *, linger: bool) -> None:
        """Send the JSON error answer with `connection: close`, then close."""
        body = error_body(code, message)
        content = [STATUS_LINE[status]]
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
        if linger and self.transport.can_write_eof():
            self.transport.write_eof()
            self.loop.call_later(LINGER_SECONDS, self.transport.close)
            self.waiting_since = 0.0  # the first to go if room is needed
        else:
            self.transport.close()
