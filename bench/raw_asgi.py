"""Scenario h, the ceiling: a raw ASGI app (no framework) answering the visit route's JSON.

`uvicorn bench.raw_asgi:app`. Any POST gets the body `POST /api/v1/counter/visit/{page_id}`
would get for the path's last segment; anything else gets 404. No validation,
no counting: it measures what uvicorn, uvloop and httptools cost by themselves.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from starlette.types import Receive, Scope, Send

_JSON_HEADERS = [(b"content-type", b"application/json")]


def _visit_body(page_id: str) -> bytes:
    timestamp = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    body = {
        "status": "success",
        "message": f"Visit recorded for page {page_id}",
        "page_id": page_id,
        "timestamp": timestamp,
    }
    return json.dumps(body, separators=(",", ":")).encode()


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        await _lifespan(receive, send)
        return
    if scope["type"] != "http":
        return
    status, body = 404, b'{"status":"error","error":"not_found","message":"Not Found"}'
    if scope["method"] == "POST":
        status, body = 200, _visit_body(scope["path"].rsplit("/", 1)[-1])
    headers: list[Any] = [*_JSON_HEADERS, (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
