"""The app factory and its lifespan. Assembles; decides nothing.

`uvicorn app.main:app` works as in any FastAPI deployment: the module attribute
`app` is built on first access from the environment and `.env`, so importing
this module (as the tests do) reads no settings and starts nothing.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Receive, Scope, Send

from visit_counter import __version__
from visit_counter.api.dashboard import dashboard_router
from visit_counter.api.deps import Runtime
from visit_counter.api.fast_visit import FastVisitRoute
from visit_counter.api.health import router as health_router
from visit_counter.api.monitoring import router as monitoring_router
from visit_counter.api.snippet import snippet_router
from visit_counter.api.v1.api import build_api_router
from visit_counter.core.config import Settings, SettingsError, load_settings, log_start_notices
from visit_counter.core.connection_limits import ConnectionGuard, check_open_files
from visit_counter.core.cors import CorsMiddleware
from visit_counter.core.errors import CounterError, NotStartedError, error_body
from visit_counter.core.http_limits import STATE_KEY as CONNECTION_GUARD_KEY
from visit_counter.core.logging import configure_logging
from visit_counter.core.middleware import ProcessTimeMiddleware, RequestStats
from visit_counter.core.visitors import Visitors
from visit_counter.services.metrics_log import MetricsLogger
from visit_counter.services.prometheus_dir import open_prometheus
from visit_counter.services.rate_limit import rate_limiter_for
from visit_counter.services.storage import open_storage
from visit_counter.services.visit_counter import VisitCounter
from visit_counter.sinks.configured import sinks_for

if TYPE_CHECKING:  # imported for real by open_prometheus, once its directory is set
    from visit_counter.services.prometheus_metrics import PrometheusMetrics

logger = logging.getLogger(__name__)


class CounterApp(FastAPI):
    """FastAPI with the service's per-request edge in front of Starlette's own middleware
    stack (error handling, telemetry, body limits): CORS, request timing and the fast
    visit routes, all pure ASGI, so the hot routes pay for nothing else (issue 15).
    Everything the edge passes on, and the lifespan, goes to FastAPI as usual."""

    edge: ASGIApp | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            if "runtime" not in scope.get("state", ()):
                await _not_started(send)
            elif self.edge is not None:
                await self.edge(scope, receive, send)
            else:
                await super().__call__(scope, receive, send)
        else:
            await super().__call__(scope, receive, send)

    async def starlette_app(self, scope: Scope, receive: Receive, send: Send) -> None:
        """FastAPI itself, behind the edge."""
        await super().__call__(scope, receive, send)


async def _not_started(send: Send) -> None:
    """A clear 503 where the engine is missing: its lifespan did not run, which is what a
    `Mount` inside another app does unless the host's lifespan enters this one's."""
    error = NotStartedError(
        "the service's lifespan has not run: an app that mounts it must enter it in its own "
        "lifespan (`async with service.router.lifespan_context(service) as state: yield "
        "state`), or count with VisitCounterMiddleware instead"
    )
    body = error_body(error.code, error.message)
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    await send({"type": "http.response.start", "status": error.status_code, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def create_app(settings: Settings) -> FastAPI:
    request_stats = RequestStats()
    rate_limiter = rate_limiter_for(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, object]]:
        # First: it raises the open-file limit, and refuses one that leaves no room.
        connection_guard = ConnectionGuard.for_process(settings)
        visitors = Visitors.for_settings(settings)  # the crawler list compiled once per worker
        storage = open_storage(settings)
        manager, nodes = storage.manager, storage.nodes
        await nodes.start()  # raises TopologyError: one line, start-up fails
        counter = VisitCounter(settings, nodes, storage.store, sinks_for(settings))
        metrics_log = MetricsLogger(counter, manager, settings.metrics_interval_seconds)
        prometheus: PrometheusMetrics | None = None
        try:
            await manager.start()
            if settings.enable_metrics:
                prometheus = open_prometheus(settings, manager, counter)
                prometheus.connection_guard = connection_guard
                prometheus.start()
            await counter.start()
            if settings.enable_metrics:
                metrics_log.start()
            yield {
                "runtime": Runtime(
                    settings=settings,
                    manager=manager,
                    counter=counter,
                    request_stats=request_stats,
                    rate_limiter=rate_limiter,
                    started_at=datetime.now(UTC),
                    prometheus=prometheus,
                    visitors=visitors,
                ),
                # Read by every HTTP connection of this worker (visit_counter/core/http_limits.py).
                CONNECTION_GUARD_KEY: connection_guard,
            }
        finally:
            # Reverse order; each close is guarded so one failure never skips the next.
            # Prometheus closes after the engine, so the final flush is counted.
            last_metrics = [prometheus.aclose] if prometheus is not None else []
            closes = (
                metrics_log.aclose,
                counter.aclose,
                *last_metrics,
                nodes.aclose,
                manager.aclose,
            )
            for close in closes:
                try:
                    await close()
                except Exception:
                    logger.exception("shutdown step %s failed", close.__qualname__)

    app = CounterApp(
        title=settings.project_name,
        version=__version__,
        debug=settings.debug,
        lifespan=lifespan,
        description="Counts page visits exactly once across a sharded set of Redis nodes.",
    )
    # The edge, outermost first: CORS on every answer (errors too), then the timing and
    # request count, then the fast visit routes; the rest goes on to FastAPI.
    edge: ASGIApp = FastVisitRoute(
        app.starlette_app,
        api_prefix=settings.api_prefix,
        rate_limiter=rate_limiter,
        keep_trailing_slash=settings.page_id_trailing_slash == "keep",
    )
    edge = ProcessTimeMiddleware(edge, stats=request_stats, api_prefix=settings.api_prefix)
    if settings.cors_allow_origins:
        edge = CorsMiddleware(edge, allow_origins=settings.cors_allow_origins)
    app.edge = edge
    app.include_router(build_api_router(settings), prefix=settings.api_prefix)
    app.include_router(health_router)
    app.include_router(snippet_router(settings.api_prefix))
    app.include_router(dashboard_router(settings))
    if settings.enable_metrics:
        app.include_router(monitoring_router)
    app.add_exception_handler(CounterError, _counter_error_response)  # type: ignore[arg-type]
    app.add_exception_handler(HTTPException, _http_error_response)  # type: ignore[arg-type]
    app.add_exception_handler(
        RequestValidationError,
        _validation_error_response,  # type: ignore[arg-type]
    )
    return app


async def _counter_error_response(request: Request, exc: CounterError) -> Response:
    return _error_response(exc.status_code, exc.code, exc.message, exc.headers)


_HTTP_ERROR_CODES = {404: "not_found", 405: "method_not_allowed"}


async def _http_error_response(request: Request, exc: HTTPException) -> Response:
    code = _HTTP_ERROR_CODES.get(exc.status_code, "http_error")
    return _error_response(exc.status_code, code, exc.detail, exc.headers)


async def _validation_error_response(request: Request, exc: RequestValidationError) -> Response:
    """A query parameter FastAPI refused, in the service's own error body (one line)."""
    problems = "; ".join(
        f"{'.'.join(str(part) for part in error['loc'][1:])}: {error['msg']}"
        for error in exc.errors()
    )
    return _error_response(422, "invalid_parameter", problems, None)


def _error_response(
    status: int, code: str, message: str, headers: Mapping[str, str] | None
) -> Response:
    return Response(error_body(code, message), status, headers, media_type="application/json")


def app_from_environment(*, announce: bool = True) -> FastAPI:
    """The app, from the environment and `.env`; a bad setting exits with one line.

    `announce`: log the start-up notices (keys that look like misspelt settings,
    REDIS_NODES unset); `serve` logs them itself, once, so its workers do not.
    """
    try:
        settings = load_settings(warn_unknown_keys=False)  # logged below, in LOG_FORMAT
        check_open_files(settings)  # the lifespan checks again; here the error is one line
    except SettingsError as exc:
        raise SystemExit(f"visit-counter: {exc}") from None
    configure_logging(settings.debug, settings.log_format)
    if announce:
        log_start_notices(settings)
    return create_app(settings)


def serve_worker_app() -> FastAPI:
    """The app factory `python -m app serve` gives uvicorn: one call per worker."""
    return app_from_environment(announce=False)


def __getattr__(name: str) -> FastAPI:
    """`app.main:app`: build the app from the environment on first access."""
    if name != "app":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    application = app_from_environment()
    globals()["app"] = application
    return application
