"""`POST <prefix>/counter/visit/{page_id}` served in pure ASGI: the hot path.

Recording a visit is a dict increment; routing, dependency injection and
pydantic serialization would cost several times that. This middleware answers
the visit route itself, with the same page id rules (`normalize_page_id`), the same
service call and the same JSON body as the FastAPI route in
`endpoints/counter.py`, which stays registered for the OpenAPI docs and as the
reference the tests compare against. Every other request goes to FastAPI.
The request body is never read.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime

from starlette.types import ASGIApp, Receive, Scope, Send

from app.core.errors import CounterError, RateLimitedError, error_body
from app.core.idempotency import idempotency_key
from app.core.page_id import normalize_page_id
from app.services.rate_limit import RateLimiter

_HEADERS = [(b"content-type", b"application/json")]
_PLAIN_JSON = re.compile(r"[A-Za-z0-9._~:/-]+")  # ids JSON holds as they are


def _response_start(
    status: int, body: bytes, extra: dict[str, str] | None = None
) -> dict[str, object]:
    headers = [*_HEADERS, (b"content-length", str(len(body)).encode())]
    if extra:
        headers += [(name.lower().encode(), value.encode()) for name, value in extra.items()]
    return {"type": "http.response.start", "status": status, "headers": headers}


class FastVisitRoute:
    def __init__(
        self,
        app: ASGIApp,
        api_prefix: str,
        rate_limiter: RateLimiter | None = None,
        *,
        keep_trailing_slash: bool = False,
    ) -> None:
        self.app = app
        self._visit_path = f"{api_prefix}/counter/visit/"
        self._rate_limiter = rate_limiter
        self._keep_trailing_slash = keep_trailing_slash

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["method"] != "POST"
            or not scope["path"].startswith(self._visit_path)
            or scope["query_string"]  # e.g. ?return=count: the FastAPI route answers
        ):
            await self.app(scope, receive, send)
            return
        page_id: str = scope["path"][len(self._visit_path) :]
        try:
            # Off (the default): this attribute check is all it costs. Checked before the
            # page id, as the FastAPI route's dependency is: invalid ids cost tokens too.
            limiter = self._rate_limiter
            if limiter is not None and (wait := limiter.retry_after(_client_host(scope))):
                raise RateLimitedError(wait)
            page_id = normalize_page_id(page_id, keep_trailing_slash=self._keep_trailing_slash)
            user_agent, raw_key = _visit_headers(scope)
            key = None if raw_key is None else idempotency_key(raw_key)
            scope["state"]["runtime"].count_visit(page_id, user_agent, key)
        except CounterError as exc:
            payload = error_body(exc.code, exc.message)
            start = _response_start(exc.status_code, payload, exc.headers)
        else:
            timestamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
            payload = _recorded(page_id, timestamp)
            start = _response_start(200, payload)
        await send(start)
        await send({"type": "http.response.body", "body": payload})


def _recorded(page_id: str, timestamp: str) -> bytes:
    """The route's 200 body; formatted by hand when the id needs no JSON escaping."""
    if _PLAIN_JSON.fullmatch(page_id):
        return (
            f'{{"status":"success","message":"Visit recorded for page {page_id}",'
            f'"page_id":"{page_id}","timestamp":"{timestamp}"}}'
        ).encode()
    return json.dumps(
        {
            "status": "success",
            "message": f"Visit recorded for page {page_id}",
            "page_id": page_id,
            "timestamp": timestamp,
        },
        ensure_ascii=False,
        separators=(",", ":"),
    ).encode()


def browser_user_agent(scope: Scope) -> bytes | None:
    """The User-Agent of a request a browser sent (with `Origin` or `Sec-Fetch-Site`), else
    None (see `Runtime.count_visit`); an empty one when a browser sent none."""
    return _visit_headers(scope)[0]


def _visit_headers(scope: Scope) -> tuple[bytes | None, bytes | None]:
    """`browser_user_agent` and the raw `Idempotency-Key`, in one pass over the headers."""
    user_agent, from_browser, key = b"", False, None
    for name, value in scope["headers"]:
        if name == b"user-agent":
            user_agent = value
        elif name == b"origin" or name == b"sec-fetch-site":
            from_browser = True
        elif name == b"idempotency-key":
            key = value
    return (bytes(user_agent) if from_browser else None), key


def _client_host(scope: Scope) -> str:
    """The client's address (with `--proxy-headers`, the one the trusted proxy reported)."""
    client = scope.get("client")
    return client[0] if client else ""
