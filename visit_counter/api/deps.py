"""Typed dependencies: everything an endpoint needs comes from the lifespan state."""

from __future__ import annotations

import hmac
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import Depends, Request
from fastapi.params import Depends as DependsParam
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.security.utils import get_authorization_scheme_param
from pydantic import SecretStr

from visit_counter.core.config import Settings
from visit_counter.core.dashboard_session import session_cookie_of, session_matches
from visit_counter.core.errors import RateLimitedError, UnauthorizedError
from visit_counter.core.middleware import RequestStats
from visit_counter.core.page_id import normalize_page_id
from visit_counter.core.redis_manager import RedisManager
from visit_counter.core.timestamps import TimestampClock
from visit_counter.core.visitors import Visitors
from visit_counter.schemas.counter import ErrorBody
from visit_counter.services.rate_limit import RateLimiter
from visit_counter.services.visit_counter import VisitCounter

if TYPE_CHECKING:  # imported for real only once PROMETHEUS_MULTIPROC_DIR is set
    from visit_counter.services.prometheus_metrics import PrometheusMetrics


@dataclass(frozen=True, slots=True)
class Runtime:
    """What the lifespan built, handed to every request through `request.state`."""

    settings: Settings
    manager: RedisManager
    counter: VisitCounter
    request_stats: RequestStats
    started_at: datetime
    rate_limiter: RateLimiter | None = None  # None: RATE_LIMIT_PER_SECOND is 0
    prometheus: PrometheusMetrics | None = None  # None: ENABLE_METRICS is false
    visitors: Visitors | None = None  # None: every visit counted, no visitor ids (tests)
    clock: TimestampClock = field(default_factory=TimestampClock)  # the answers' timestamps

    def count_visit(
        self,
        page_id: str,
        browser_user_agent: str | bytes | None,
        key: str | None = None,
        client_host: str = "",
    ) -> None:
        """Count one visit, unless a known crawler's browser sent it (then `bots_rejected`).

        `browser_user_agent` is the User-Agent of a request a browser sent (it carries
        `Origin` or `Sec-Fetch-Site`: the snippet, the pixel, the badge), else None. A
        server calling the API (curl, requests, httpx...) is counted whatever it calls
        itself: there the User-Agent is the caller's HTTP library, not the visitor's.
        `key`: the visit's idempotency key, if the client sent one (G10). `client_host`:
        the client's address, for the visitor id (visit_counter/core/visitors.py).
        """
        visitors = self.visitors
        if visitors is None or browser_user_agent is None:
            self.counter.record_visit(page_id, key)
            return
        counted, visitor = visitors.classify(browser_user_agent, client_host)
        if not counted:
            self.counter.stats.bots_rejected += 1
            return
        self.counter.record_visit(page_id, key, visitor)


async def get_runtime(request: Request) -> Runtime:
    runtime: Runtime = request.state.runtime
    return runtime


async def get_counter(request: Request) -> VisitCounter:
    counter: VisitCounter = request.state.runtime.counter
    return counter


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


def page_id_of(request: Request, route: str) -> str:
    """The canonical page id of `<prefix>/counter/<route>/{page_id:path}` (422 if none).

    Read from the decoded path itself, not the path parameter: the router's match
    drops a trailing newline (`%0A`), which must be refused, not ignored. The path is
    taken below `root_path` (a Mount's prefix, or uvicorn's --root-path), as routing is.
    """
    settings: Settings = request.state.runtime.settings
    path, root_path = request.scope["path"], request.scope.get("root_path", "")
    if root_path and path.startswith(root_path):
        path = path[len(root_path) :]
    raw = path.removeprefix(f"{settings.api_prefix}/counter/{route}/")
    keep = settings.page_id_trailing_slash == "keep"
    return normalize_page_id(raw, keep_trailing_slash=keep)


CounterDep = Annotated[VisitCounter, Depends(get_counter)]


# -- access control (ADMIN_TOKEN) ------------------------------------------------

# Declares the scheme in OpenAPI; the check itself is `require_admin`.
_admin_bearer = HTTPBearer(
    auto_error=False,
    scheme_name="AdminToken",
    description="`Authorization: Bearer <ADMIN_TOKEN>`; required only when ADMIN_TOKEN is set.",
)


def token_matches(given: str | None, token: SecretStr) -> bool:
    """True when no token is configured or `given` is it, compared in constant time.

    The header arrives as latin-1 text; encoding as UTF-8 never fails, and a
    non-ASCII value simply does not match the (ASCII) token.
    """
    expected = token.get_secret_value()
    if not expected:
        return True
    if given is None:
        return False
    return hmac.compare_digest(given.encode("utf-8"), expected.encode("ascii"))


async def require_admin(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_admin_bearer)],
) -> None:
    """Refuse the request (401) unless it carries `Authorization: Bearer <ADMIN_TOKEN>` or
    the dashboard's session cookie (visit_counter/core/dashboard_session.py)."""
    token: SecretStr = request.state.runtime.settings.admin_token
    given = credentials.credentials if credentials else None
    if not token_matches(given, token) and not _has_session(request, token):
        # Never echo what was sent: it may be a near-miss of the real token.
        raise UnauthorizedError("this route needs the header 'Authorization: Bearer <ADMIN_TOKEN>'")


def _has_session(request: Request, token: SecretStr) -> bool:
    """Whether the request carries the dashboard's session cookie for `token`. Not declared
    in OpenAPI: it is the dashboard's browser login, not a way for clients to call the API."""
    return session_matches(session_cookie_of(request.cookies, request.headers), token)


def admin_only(settings: Settings) -> dict[str, Any]:
    """`include_router` arguments that put a router behind ADMIN_TOKEN, when one is set.

    Without a token nothing is added, so the OpenAPI document declares the
    security scheme and the 401 only where they apply.
    """
    if not settings.admin_token.get_secret_value():
        return {}
    dependencies: list[DependsParam] = [Depends(require_admin)]
    responses: dict[int | str, dict[str, Any]] = {
        401: {
            "model": ErrorBody,
            "description": "Missing or wrong `Authorization: Bearer <ADMIN_TOKEN>`",
            "headers": {"WWW-Authenticate": {"schema": {"type": "string"}, "required": True}},
        }
    }
    return {"dependencies": dependencies, "responses": responses}


async def has_admin_access(request: Request) -> bool:
    """Whether this request may see admin detail (always, when ADMIN_TOKEN is empty): the
    bearer header or the dashboard's session cookie.

    Reads the header itself instead of declaring a security scheme: the routes
    that use it answer without a token too, only with less.
    """
    token: SecretStr = request.state.runtime.settings.admin_token
    scheme, credentials = get_authorization_scheme_param(request.headers.get("authorization"))
    given = credentials if scheme.lower() == "bearer" and credentials else None
    return token_matches(given, token) or _has_session(request, token)


AdminAccessDep = Annotated[bool, Depends(has_admin_access)]


# -- per-client rate limit (RATE_LIMIT_PER_SECOND) ---------------------------------


async def limit_visits(request: Request) -> None:
    """Take a token from the client's bucket, or refuse the visit (429, not counted)."""
    limiter: RateLimiter | None = request.state.runtime.rate_limiter
    if limiter is not None:
        retry_after = limiter.retry_after(request.client.host if request.client else "")
        if retry_after:
            raise RateLimitedError(retry_after)
