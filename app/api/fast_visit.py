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

import json
from datetime import UTC, datetime

from starlette.types import ASGIApp, Receive, Scope, Send

from app.core.errors import CounterError
from app.core.page_id import validate_page_id

_HEADERS = [(b"content-type", b"application/json")]


def _response_start(status: int, body: bytes) -> dict[str, object]:
    return {
        "type": "http.response.start",
        "status": status,
        "headers": [*_HEADERS, (b"content-length", str(len(body)).encode())],
    }


class FastVisitRoute:
    def __init__(self, app: ASGIApp, api_prefix: str) -> None:
        self.app = app
        self._visit_path = f"{api_prefix}/counter/visit/"

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
            scope["state"]["runtime"].counter.record_visit(validate_page_id(page_id))
        except CounterError as exc:
            body = json.dumps({"status": "error", "error": exc.code, "message": exc.message})
            status, payload = exc.status_code, body.encode()
        else:
            # page_id passed validation: only characters that need no JSON escaping.
            timestamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
            payload = (
                f'{{"status":"success","message":"Visit recorded for page {page_id}",'
                f'"page_id":"{page_id}","timestamp":"{timestamp}"}}'
            ).encode()
            status = 200
        await send(_response_start(status, payload))
        await send({"type": "http.response.body", "body": payload})
