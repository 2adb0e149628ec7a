"""The visit routes served in pure ASGI: `POST <prefix>/counter/visit/{page_id}` (the hot
path) and `GET <prefix>/counter/visits/{page_id}`.

Recording a visit is a dict increment, and a cached read a dict lookup; routing,
dependency injection and pydantic serialization would cost several times that.
This middleware answers both routes itself, with the same validation and the
same code as their FastAPI twins in `endpoints/counter.py` (`visit_answers.py`),
which stay registered for the OpenAPI docs and answer whatever this passes on: a
query string other than `return=count` and `idempotency_key=…`, and every other
route. The request body is never read. A page id holding a line feed is refused
here whatever the query and whatever the counter route: Starlette's `{page_id:path}`
cannot match it, so FastAPI would answer 404 instead of the page id's 422.
"""

from __future__ import annotations

from urllib.parse import unquote_to_bytes

from starlette.types import ASGIApp, Receive, Scope, Send

from visit_counter.api.visit_answers import read_visits, record_visit
from visit_counter.core.errors import CounterError, RateLimitedError, error_body
from visit_counter.core.idempotency import QUERY_PARAMETER, idempotency_key
from visit_counter.core.page_id import normalize_page_id
from visit_counter.services.rate_limit import RateLimiter

_HEADERS = [(b"content-type", b"application/json")]
_KEY_PARAMETER = QUERY_PARAMETER.encode()


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
        self._visits_path = f"{api_prefix}/counter/visits/"
        self._counter_path = f"{api_prefix}/counter/"
        self._rate_limiter = rate_limiter
        self._keep_trailing_slash = keep_trailing_slash

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            method, path = scope["method"], scope["path"]
            if method == "POST" and path.startswith(self._visit_path):
                query = _visit_query(scope["query_string"])
                if query is not None:
                    await self._visit(scope, send, *query)
                    return
                if "\n" in path:  # no FastAPI route matches it: the id's own 422, not a 404
                    await self._visit(scope, send, False, None)
                    return
            elif (
                method == "GET"
                and path.startswith(self._visits_path)
                and (not scope["query_string"] or "\n" in path)
            ):
                await self._read(scope, send)
                return
            elif "\n" in path and path.startswith(self._counter_path):
                await self._refuse_line_feed(send, path[len(self._counter_path) :])
                return
        await self.app(scope, receive, send)

    async def _refuse_line_feed(self, send: Send, rest: str) -> None:
        """Any other counter route (pixel, badge, stats, a set...) with a line feed in its
        path: no route can match it, so the page id's own 422 rather than FastAPI's 404."""
        try:
            normalize_page_id(rest, keep_trailing_slash=self._keep_trailing_slash)
        except CounterError as exc:
            await _send_error(send, exc)
            return
        raise AssertionError("a page id holding a line feed was accepted")

    async def _visit(self, scope: Scope, send: Send, return_count: bool, key: bytes | None) -> None:
        raw_page_id: str = scope["path"][len(self._visit_path) :]
        try:
            # Off (the default): this attribute check is all it costs. Checked before the
            # page id, as the FastAPI route's dependency is: invalid ids cost tokens too.
            limiter = self._rate_limiter
            if limiter is not None and (wait := limiter.retry_after(client_host(scope))):
                raise RateLimitedError(wait)
            page_id = normalize_page_id(raw_page_id, keep_trailing_slash=self._keep_trailing_slash)
            user_agent, header_key = _visit_headers(scope)
            raw_key = header_key if header_key is not None else key  # the header wins
            body = await record_visit(
                scope["state"]["runtime"],
                page_id,
                user_agent,
                None if raw_key is None else idempotency_key(raw_key),
                client_host(scope) if user_agent is not None else "",
                return_count=return_count,
            )
        except CounterError as exc:
            await _send_error(send, exc)
            return
        await send(_response_start(200, body))
        await send({"type": "http.response.body", "body": body})

    async def _read(self, scope: Scope, send: Send) -> None:
        raw_page_id: str = scope["path"][len(self._visits_path) :]
        try:
            page_id = normalize_page_id(raw_page_id, keep_trailing_slash=self._keep_trailing_slash)
            body = await read_visits(scope["state"]["runtime"], page_id)
        except CounterError as exc:
            await _send_error(send, exc)
            return
        await send(_response_start(200, body))
        await send({"type": "http.response.body", "body": body})


async def _send_error(send: Send, exc: CounterError) -> None:
    payload = error_body(exc.code, exc.message)
    await send(_response_start(exc.status_code, payload, exc.headers))
    await send({"type": "http.response.body", "body": payload})


def _visit_query(query_string: bytes) -> tuple[bool, bytes | None] | None:
    """(`return=count` given, the `idempotency_key` parameter) from a visit's query string,
    or None when it holds anything else (the FastAPI route answers, or refuses, that)."""
    if not query_string:
        return False, None
    return_count, key = False, None
    for part in query_string.split(b"&"):
        name, _, value = part.partition(b"=")
        if name == b"return" and value == b"count" and not return_count:
            return_count = True
        elif name == _KEY_PARAMETER and key is None:
            key = unquote_to_bytes(value.replace(b"+", b" "))
        else:
            return None
    return return_count, key


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


def client_host(scope: Scope) -> str:
    """The client's address (with `--proxy-headers`, the one the trusted proxy reported)."""
    client = scope.get("client")
    return client[0] if client else ""
