"""`POST <prefix>/counter/visits`: many pages' visits in one request (batch ingest).

For servers that count for others (log processors, a site's backend draining its
own buffer): `{"<page id>": <count>, ...}` is validated whole (`ingest_body.py`),
then counted in memory like any visit, so it never waits on Redis either. With
an `Idempotency-Key`, a repeated request counts nothing more (G10). Behind
ADMIN_TOKEN when one is set: one request may add a billion visits.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Header, Request, Response

from visit_counter.api.deps import RuntimeDep
from visit_counter.api.ingest_body import (
    MAX_BODY_BYTES,
    MAX_COUNT,
    MAX_PAGES,
    SHAPE,
    check_head,
    parse_visits,
    read_body,
)
from visit_counter.core.idempotency import HEADER, KEY_RULES, idempotency_key, key_schema
from visit_counter.core.page_id import page_id_schema
from visit_counter.schemas.counter import ErrorBody, VisitsIngested

router = APIRouter(prefix="/counter", tags=["counter"])

_REQUEST_BODY: dict[str, Any] = {
    "required": True,
    "description": f"{SHAPE}; at most {MAX_BODY_BYTES} bytes.",
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "minProperties": 1,
                "maxProperties": MAX_PAGES,
                "propertyNames": page_id_schema(),
                "additionalProperties": {"type": "integer", "minimum": 1, "maximum": MAX_COUNT},
            },
            "example": {"home": 120, "blog/2026/hello": 7},
        }
    },
}
_ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody, "description": description}
    for status, description in (
        (408, "The body did not arrive in time"),
        (413, f"The body is larger than {MAX_BODY_BYTES} bytes"),
        (415, "The body is not application/json"),
        (422, "A bad page id (named), count or body, or idempotency key: nothing was counted"),
        (503, "Some page's node cannot take visits now: nothing was counted"),
    )
}


@router.post(
    "/visits",
    response_model=VisitsIngested,
    responses=_ERRORS,
    openapi_extra={"requestBody": _REQUEST_BODY},
)
async def ingest_visits(
    request: Request,
    runtime: RuntimeDep,
    key_header: Annotated[
        str | None,
        Header(
            alias=HEADER,
            description=f"The request's idempotency key: {KEY_RULES}. The same request "
            "repeated with it within IDEMPOTENCY_WINDOW_SECONDS is answered again and "
            "counted once.",
            json_schema_extra=key_schema(),
        ),
    ] = None,
) -> Response:
    """Count many pages' visits at once: all of them, or none."""
    check_head(request.headers.get("content-type"), request.headers.get("content-length"))
    key = idempotency_key(key_header)
    body = await read_body(request.stream())
    settings = runtime.settings
    visits = parse_visits(body, keep_trailing_slash=settings.page_id_trailing_slash == "keep")
    runtime.counter.record_visits(visits, key)
    answer = {"status": "success", "pages": len(visits), "visits": sum(visits.values())}
    return Response(json.dumps(answer, separators=(",", ":")), media_type="application/json")
