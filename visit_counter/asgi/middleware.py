"""`VisitCounterMiddleware`: count the requests of any Starlette or FastAPI app (pure ASGI).

    app.add_middleware(
        VisitCounterMiddleware,
        redis_nodes="redis://10.0.0.1:6379,redis://10.0.0.2:6379",
        batch_interval_seconds=0.5,
        page_of=lambda scope: f"asset:{scope['path_params']['asset_id']}",
        sinks=[PostgresSink("dbname=shop", table="assets", key_column="id")],
    )

The engine is the service's own (`running_counter`): the same buffer, flushes,
journal, fencing and sinks, so every guarantee of the service holds here and
the counts are the service's to read (same nodes, same keys). It starts when the
host app's lifespan has started and stops, with its final flush, before the host
reports its shutdown complete. Each worker process runs one engine; any number of
workers and services add up on the nodes.

A request is counted after the app has answered it: with a 2xx status (and an
HTML body, with `only_html`), under the page `page_of(scope)` names; by default
the matched route's path template (`/downloads/{asset_id}`), made canonical like
any page id (`downloads/{asset_id}`). `page_of` returning None counts nothing.

Every answered request is counted, crawlers' too (an API's callers are HTTP libraries, which
the crawler list names). Each visit with a User-Agent that is not a crawler's also counts
its visitor (client address and User-Agent, as a daily id: visit_counter/core/visitors.py)
in the page's unique visitors.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from contextlib import AsyncExitStack
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from visit_counter.api.fast_visit import client_host
from visit_counter.core.config import Settings, SettingsError, settings_of
from visit_counter.core.errors import CounterError
from visit_counter.core.page_id import normalize_page_id
from visit_counter.core.visitors import Visitors
from visit_counter.services.running import running_counter
from visit_counter.services.visit_counter import VisitCounter
from visit_counter.sinks.base import Sink

logger = logging.getLogger(__name__)

PageOf = Callable[[Scope], str | None]
STATE_KEY = "visit_counter"  # request.state.visit_counter: the engine, for in-process reads


def route_template(scope: Scope) -> str | None:
    """The path template of the route that answered (mount prefixes included), or None."""
    path = getattr(scope.get("route"), "path", None)
    if not isinstance(path, str):
        return None
    if "app_root_path" in scope:  # inside a Mount: its part of the path comes first
        path = str(scope.get("root_path", ""))[len(str(scope["app_root_path"])) :] + path
    return path


class VisitCounterMiddleware:
    """Counts the host app's successful requests (see the module docstring).

    `settings`, or the service's settings as keywords in lower case (`redis_nodes`,
    `batch_interval_seconds`, ...; the environment fills in the rest). REDIS_NODES is
    required: the embedded nodes belong to the service's `make run` only.
    """

    def __init__(
        self,
        app: ASGIApp,
        settings: Settings | None = None,
        *,
        page_of: PageOf | None = None,
        only_html: bool = False,
        sinks: Sequence[Sink] = (),
        **setting_values: Any,
    ) -> None:
        if settings is not None and setting_values:
            raise SettingsError("pass a Settings object or setting keywords, not both")
        self.settings = settings if settings is not None else settings_of(**setting_values)
        if self.settings.uses_embedded_nodes:
            raise SettingsError(
                "VisitCounterMiddleware needs redis_nodes (REDIS_NODES): the Redis nodes "
                "to count on, e.g. redis_nodes='redis://10.0.0.1:6379,redis://10.0.0.2:6379'"
            )
        self.app = app
        self.page_of = page_of or route_template
        self.only_html = only_html
        self._sinks = list(sinks)
        self._keep_trailing_slash = self.settings.page_id_trailing_slash == "keep"
        self._engine = AsyncExitStack()
        self.counter: VisitCounter | None = None  # while the host app's lifespan runs
        self._visitors: Visitors | None = None  # built with the engine
        self.not_counted = 0  # answered requests whose visit could not be kept or named
        self._warned_no_engine = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(scope, receive, send)
            return
        counter = self.counter
        if scope["type"] != "http" or counter is None:
            if scope["type"] == "http" and not self._warned_no_engine:
                self._warned_no_engine = True
                logger.warning(
                    "VisitCounterMiddleware: no lifespan ran, so nothing is counted (run the "
                    "app under a server with lifespan on, or `with TestClient(app)`)"
                )
            await self.app(scope, receive, send)
            return
        status = 0
        html = False

        async def watch(message: Message) -> None:
            nonlocal status, html
            if message["type"] == "http.response.start":
                status = message["status"]
                if self.only_html:
                    html = _is_html(message.get("headers", ()))
            await send(message)

        await self.app(scope, receive, watch)
        if 200 <= status < 300 and (html or not self.only_html):
            self._count(counter, scope)

    def _count(self, counter: VisitCounter, scope: Scope) -> None:
        try:
            named = self.page_of(scope)
            if named is None:
                return
            counter.record_visit(
                normalize_page_id(named, keep_trailing_slash=self._keep_trailing_slash),
                visitor=self._visitor_of(scope),
            )
        except CounterError as exc:  # a bad name, or a node that cannot keep it now
            self.not_counted += 1
            logger.warning("visit of %s not counted: %s", scope.get("path"), exc)
        except Exception:  # a page_of that raised: the answer is sent, nothing to undo
            self.not_counted += 1
            logger.exception("visit of %s not counted: page_of failed", scope.get("path"))

    def _visitor_of(self, scope: Scope) -> str | None:
        visitors = self._visitors
        if visitors is None:
            return None
        for name, value in scope["headers"]:
            if name == b"user-agent":
                return visitors.visitor_of(bytes(value), client_host(scope)) if value else None
        return None

    async def _lifespan(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The host's lifespan, with the engine started after its startup and stopped
        before its shutdown is reported complete."""

        async def send_with_engine(message: Message) -> None:
            if message["type"] == "lifespan.startup.complete":
                try:
                    self._visitors = Visitors.for_settings(self.settings)
                    self.counter = await self._engine.enter_async_context(
                        running_counter(self.settings, self._sinks)
                    )
                except Exception as exc:
                    logger.exception("VisitCounterMiddleware: the engine did not start")
                    await self._engine.aclose()
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                state = scope.get("state")
                if isinstance(state, dict):
                    state[STATE_KEY] = self.counter
            elif message["type"] in ("lifespan.shutdown.complete", "lifespan.shutdown.failed"):
                self.counter = None
                await self._engine.aclose()
            await send(message)

        await self.app(scope, receive, send_with_engine)


def _is_html(headers: Any) -> bool:
    for name, value in headers:
        if name.lower() == b"content-type":
            return bytes(value).lower().startswith(b"text/html")
    return False
