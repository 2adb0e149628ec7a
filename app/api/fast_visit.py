"""`POST <prefix>/counter/visit/{page_id}` served in pure ASGI: the hot path.

Recording a visit is a dict increment; routing, dependency injection and
pydantic serialization would cost several times that. This middleware answers
the visit route itself, with the same validation (`validate_page_id`), the same
service call and the same JSON body as the FastAPI route in
`endpoints/counter.py`, which stays registered for the OpenAPI docs and as the
reference the tests compare against. Every other request goes to FastAPI.
The request body is never read.
"""

from __future__ import annotations

from datetime import UTC, datetime

from starlette.types import ASGIApp, Receive, Scope, Send

from app.core.errors import CounterError, RateLimitedError, error_body
from app.core.page_id import validate_page_id
from app.services.rate_limit import RateLimiter

_HEADERS = [(b"content-type", b"application/json")]


def _response_start(
    status: int, body: bytes, extra: dict[str, str] | None = None
) -> dict[str, object]:
    headers = [*_HEADERS, (b"content-length", str(len(body)).encode())]
    if extra:
        headers += [(name.lower().encode(), value.encode()) for name, value in extra.items()]
    return {"type": "http.response.start", "status": status, "headers": headers}


class FastVisitRoute:
    def __init__(
        self, app: ASGIApp, api_prefix: str, rate_limiter: RateLimiter | None = None
    ) -> None:
        self.app = app
        self._visit_path = f"{api_prefix}/counter/visit/"
        self._rate_limiter = rate_limiter

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["method"] != "POST"
            or not scope["path"].startswith(self._visit_path)
        ):
            await self.app(scope, receive, send)
            return
        page_id: str = scope["path"][len(self._visit_path) :]
        if not page_id or "/" in page_id:
            await self.app(scope, receive, send)  # not this route: FastAPI answers (404)
            return
        try:
            # Off (the default): this attribute check is all it costs. Checked before the
            # page id, as the FastAPI route's dependency is: invalid ids cost tokens too.
            limiter = self._rate_limiter
            if limiter is not None and (wait := limiter.retry_after(_client_host(scope))):
                raise RateLimitedError(wait)
            scope["state"]["runtime"].counter.record_visit(validate_page_id(page_id))
        except CounterError as exc:
            payload = error_body(exc.code, exc.message)
            start = _response_start(exc.status_code, payload, exc.headers)
        else:
            # page_id passed validation: only characters that need no JSON escaping.
            timestamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
            payload = (
                f'{{"status":"success","message":"Visit recorded for page {page_id}",'
                f'"page_id":"{page_id}","timestamp":"{timestamp}"}}'
            ).encode()
            start = _response_start(200, payload)
        await send(start)
        await send({"type": "http.response.body", "body": payload})


def _client_host(scope: Scope) -> str:
    """The client's address (with `--proxy-headers`, the one the trusted proxy reported)."""
    client = scope.get("client")
    return client[0] if client else ""
