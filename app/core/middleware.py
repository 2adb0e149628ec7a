"""Per-request middleware, written as pure ASGI (no BaseHTTPMiddleware task group per request)."""

from __future__ import annotations

import time
from dataclasses import dataclass

from starlette.types import ASGIApp, Message, Receive, Scope, Send


@dataclass(slots=True)
class RequestStats:
    total_requests: int = 0


class ProcessTimeMiddleware:
    """Adds `X-Process-Time` (seconds) to every HTTP response and counts requests."""

    def __init__(self, app: ASGIApp, stats: RequestStats) -> None:
        self.app = app
        self.stats = stats

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        self.stats.total_requests += 1
        started = time.perf_counter()

        async def send_with_time(message: Message) -> None:
            if message["type"] == "http.response.start":
                elapsed = f"{time.perf_counter() - started:.6f}".encode()
                message["headers"] = [*message.get("headers", []), (b"x-process-time", elapsed)]
            await send(message)

        await self.app(scope, receive, send_with_time)
