"""CORS for pages on other origins (CORS_ALLOW_ORIGINS), in pure ASGI, around everything.

It is the outermost layer, so every answer carries the headers: the fast visit
route, the FastAPI routes, and errors (a 404 or 422 without them hides the real
error from the page's script). A preflight (`OPTIONS` with
`Access-Control-Request-Method`) is answered here: 204 with the allowed methods
and headers for an allowed origin, 403 `cors_origin_not_allowed` otherwise. An
origin not on the list gets no `Access-Control-Allow-Origin`: the browser then
keeps the answer from the page. With `*` any origin may read, without
credentials; a listed origin may send them (cookies are never needed here).
Requests without `Origin` (servers, same-origin GETs) pass through untouched.
"""

from __future__ import annotations

from collections.abc import Sequence

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from visit_counter.core.errors import error_body

ALLOWED_METHODS = b"GET, POST, DELETE, OPTIONS"
ALLOWED_HEADERS = b"Content-Type, Authorization, Idempotency-Key"
EXPOSED_HEADERS = b"X-Process-Time, Retry-After"
PREFLIGHT_MAX_AGE = b"600"


class CorsMiddleware:
    def __init__(self, app: ASGIApp, allow_origins: Sequence[str]) -> None:
        self.app = app
        self._any = "*" in allow_origins
        self._origins = frozenset(origin.lower().encode() for origin in allow_origins)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        origin = preflight = None
        for key, value in scope["headers"]:
            if key == b"origin":
                origin = bytes(value)
            elif key == b"access-control-request-method":
                preflight = value
        if origin is None:
            await self.app(scope, receive, send)
            return
        allowed = self._any or origin.lower() in self._origins
        if scope["method"] == "OPTIONS" and preflight is not None:
            await self._preflight(send, origin if allowed else None)
            return
        if not allowed:
            await self.app(scope, receive, send)
            return
        extra = [*self._allow(origin), (b"access-control-expose-headers", EXPOSED_HEADERS)]

        async def send_with_cors(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *extra]
            await send(message)

        await self.app(scope, receive, send_with_cors)

    def _allow(self, origin: bytes) -> list[tuple[bytes, bytes]]:
        if self._any:
            return [(b"access-control-allow-origin", b"*")]
        return [
            (b"access-control-allow-origin", origin),
            (b"access-control-allow-credentials", b"true"),
            (b"vary", b"Origin"),
        ]

    async def _preflight(self, send: Send, origin: bytes | None) -> None:
        if origin is None:
            body = error_body("cors_origin_not_allowed", "this origin is not in CORS_ALLOW_ORIGINS")
            headers = [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ]
            await send({"type": "http.response.start", "status": 403, "headers": headers})
            await send({"type": "http.response.body", "body": body})
            return
        headers = [
            *self._allow(origin),
            (b"access-control-allow-methods", ALLOWED_METHODS),
            (b"access-control-allow-headers", ALLOWED_HEADERS),
            (b"access-control-max-age", PREFLIGHT_MAX_AGE),
        ]
        await send({"type": "http.response.start", "status": 204, "headers": headers})
        await send({"type": "http.response.body", "body": b""})
