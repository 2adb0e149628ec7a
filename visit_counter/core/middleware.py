"""Per-request middleware, written as pure ASGI (no BaseHTTPMiddleware task group per request)."""

from __future__ import annotations

import time
from dataclasses import dataclass

from starlette.types import ASGIApp, Message, Receive, Scope, Send


@dataclass(slots=True)
class RequestStats:
    total_requests: int = 0


UNMATCHED_ROUTE = "unmatched"  # the route label of requests no route matched (404s)


class ProcessTimeMiddleware:
    """Adds `X-Process-Time` (seconds) to every HTTP response and counts requests.

    With Prometheus metrics on, it also observes each request's duration by route
    template (never the raw path: page ids would explode the label set) and
    status: one local bucket increment per request (see
    `PrometheusMetrics.observe_request`). The route is
    read after the app ran, from `scope["route"]`; the pure-ASGI visit routes
    (`fast_visit.py`: POST visit, GET visits) answer before routing, so they are
    recognised by their paths.
    """

    def __init__(self, app: ASGIApp, stats: RequestStats, api_prefix: str = "") -> None:
        self.app = app
        self.stats = stats
        self._api_prefix = api_prefix
        self._visit_prefix = f"{api_prefix}/counter/visit/"
        self._visit_template = self._visit_prefix + "{page_id:path}"
        self._visits_prefix = f"{api_prefix}/counter/visits/"
        self._visits_template = self._visits_prefix + "{page_id:path}"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        self.stats.total_requests += 1
        started = time.perf_counter()
        status = 500  # what the server answers if the app raises

        async def send_with_time(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                elapsed = f"{time.perf_counter() - started:.6f}".encode()
                message["headers"] = [*message.get("headers", []), (b"x-process-time", elapsed)]
            await send(message)

        try:
            await self.app(scope, receive, send_with_time)
        finally:
            runtime = (scope.get("state") or {}).get("runtime")
            metrics = getattr(runtime, "prometheus", None)
            if metrics is not None:
                route = self._route_template(scope)
                metrics.observe_request(
                    scope["method"], route, status, time.perf_counter() - started
                )

    def _route_template(self, scope: Scope) -> str:
        template = getattr(scope.get("route"), "path", None)
        if isinstance(template, str):
            # FastAPI 0.165 keeps included routers nested: the route's path lacks the
            # API prefix.
            prefix = self._api_prefix + "/"
            if scope["path"].startswith(prefix) and not template.startswith(prefix):
                return self._api_prefix + template
            return template
        method, path = scope["method"], scope["path"]
        if method == "POST" and path.startswith(self._visit_prefix):
            return self._visit_template
        if method == "GET" and path.startswith(self._visits_prefix):
            return self._visits_template
        return UNMATCHED_ROUTE
