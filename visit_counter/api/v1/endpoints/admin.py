"""Admin routes: set a page's count, export every count, import counts, read the audit log.

All behind ADMIN_TOKEN when one is set (`admin_only`), as DELETE is. The operations
themselves are visit_counter/admin/operations.py.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import asdict
from typing import Annotated, Any, Literal

import orjson
from fastapi import APIRouter, Query, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field

from visit_counter.admin.import_rows import (
    CSV_TYPES,
    JSON_TYPES,
    MAX_VISITS,
    read_rows,
    stall_guard,
)
from visit_counter.admin.operations import Admin
from visit_counter.admin.storage import admin_store
from visit_counter.api.deps import RuntimeDep, page_id_of
from visit_counter.api.fast_visit import client_host
from visit_counter.api.ingest_body import check_head, read_body
from visit_counter.api.v1.endpoints.counter import PageId
from visit_counter.core.errors import InvalidBodyError, UnsupportedMediaTypeError
from visit_counter.schemas.counter import ErrorBody

router = APIRouter(prefix="/counter", tags=["admin"])

MAX_AUDIT_LIMIT = 1000
IMPORT_ID_PATTERN = r"^[!-~]{1,64}$"
BODY_STALL_SECONDS = 30.0  # an import body that sends nothing for this long is cut off: 408

_SET_BODY: dict[str, Any] = {
    "required": True,
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "properties": {"visits": {"type": "integer", "minimum": 0, "maximum": MAX_VISITS}},
                "required": ["visits"],
                "additionalProperties": False,
            }
        }
    },
}
_ROW = {
    "type": "object",
    "properties": {"page_id": {"type": "string"}, "visits": {"type": "integer", "minimum": 0}},
    "required": ["page_id", "visits"],
}
_IMPORT_BODY: dict[str, Any] = {
    "required": True,
    "description": "Rows of page id and count: CSV (`page_id,visits` lines, a header "
    "optional), a JSON array of objects, or the same objects one per line (NDJSON).",
    "content": {
        "text/csv": {"schema": {"type": "string"}},
        "application/json": {"schema": {"type": "array", "items": _ROW}},
        "application/x-ndjson": {"schema": {"type": "string"}},
    },
}
_ANSWERS: dict[int | str, dict[str, Any]] = {
    422: {"model": ErrorBody, "description": "Invalid page id, parameter or body"},
    503: {"model": ErrorBody, "description": "A node cannot answer now"},
}


class VisitsSet(BaseModel):
    status: Literal["success"] = "success"
    page_id: str
    visits: int
    previous_visits: int = Field(description="The count the set replaced.")


class AuditEntryOut(BaseModel):
    at: str = Field(description="When, UTC (ISO 8601, ms).")
    action: Literal["reset", "set", "import"]
    page_id: str = Field(description='The page; "*" for an import\'s summary entry.')
    old_visits: int
    new_visits: int
    client: str = Field(description="The address of the client that asked.")
    import_id: str | None = None
    detail: str | None = None


class AuditLog(BaseModel):
    entries: list[AuditEntryOut] = Field(description="Newest first.")


def _admin(runtime: RuntimeDep) -> Admin:
    return Admin(runtime.counter, admin_store(runtime.manager))


@router.put(
    "/visits/{page_id:path}",
    response_model=VisitsSet,
    responses={
        413: {"model": ErrorBody, "description": "The body is over 1 MiB"},
        415: {"model": ErrorBody, "description": "The body is not application/json"},
        **_ANSWERS,
    },
    openapi_extra={"requestBody": _SET_BODY},
)
async def set_visits(page_id: PageId, request: Request, runtime: RuntimeDep) -> VisitsSet:
    """Set a page's count exactly. Fenced like a reset: visits accepted before it are
    dropped, visits after it are added on top."""
    page_id = page_id_of(request, "visits")
    headers = request.headers
    check_head(headers.get("content-type"), headers.get("content-length"), "a set")
    visits = _visits_of(await read_body(request.stream()))
    old = await _admin(runtime).set_visits(page_id, visits, client_host(request.scope))
    return VisitsSet(page_id=page_id, visits=visits, previous_visits=old)


def _visits_of(body: bytes) -> int:
    """The count of a `{"visits": N}` body; 422 `invalid_body` for anything else."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        data = None
    visits = data.get("visits") if isinstance(data, dict) and len(data) == 1 else None
    if type(visits) is float and visits.is_integer():  # JSON's 3.0 is the number 3
        visits = int(visits)
    if type(visits) is not int or not 0 <= visits <= MAX_VISITS:
        raise InvalidBodyError(f'the body must be {{"visits": N}}, N from 0 to {MAX_VISITS}')
    return visits


@router.get("/audit", response_model=AuditLog, responses=_ANSWERS)
async def get_audit(
    runtime: RuntimeDep,
    limit: Annotated[int, Query(ge=1, le=MAX_AUDIT_LIMIT, description="How many entries.")] = 100,
) -> AuditLog:
    """The newest resets, sets and imports across every node."""
    entries = await _admin(runtime).audit(limit)
    return AuditLog(entries=[AuditEntryOut(**asdict(entry)) for entry in entries])


@router.get(
    "/export",
    response_class=StreamingResponse,
    responses={
        200: {"content": {"text/csv": {}, "application/json": {}}},
        409: {"model": ErrorBody, "description": "A move is under way"},
        **_ANSWERS,
    },
)
async def export_counts(
    runtime: RuntimeDep, format: Literal["csv", "json"] = "csv"
) -> StreamingResponse:
    """Every page and its stored count, streamed node by node (SCAN, never KEYS).

    CSV: a `page_id,visits` header, then a line per page. JSON: an array of
    `{"page_id", "visits"}`. A node that fails midway cuts the stream off (the answer
    then ends without its last line or `]`): run it again.
    """
    chunks = _admin(runtime).export()
    first = await anext(chunks, None)  # errors before the first byte get their status
    return StreamingResponse(
        _csv(first, chunks) if format == "csv" else _json(first, chunks),
        media_type="text/csv" if format == "csv" else "application/json",
    )


@router.post(
    "/import",
    openapi_extra={"requestBody": _IMPORT_BODY},
    responses={
        408: {"model": ErrorBody, "description": "The body stalled"},
        415: {"model": ErrorBody, "description": "Not CSV, JSON or JSON lines"},
        **_ANSWERS,
    },
)
async def import_counts(
    request: Request,
    runtime: RuntimeDep,
    import_id: Annotated[
        str,
        Query(pattern=IMPORT_ID_PATTERN, description="Names the import: repeated, nothing twice."),
    ],
    mode: Literal["set", "add"] = "set",
) -> dict[str, Any]:
    """Set (or add to) many pages' counts from CSV, a JSON array or JSON lines, streamed.

    Each row's errors are reported by number; the other rows are applied. Idempotent by
    `import_id` (see visit_counter/admin/operations.py)."""
    media_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media_type not in CSV_TYPES | JSON_TYPES:
        raise UnsupportedMediaTypeError(
            "import takes Content-Type: text/csv, application/json or application/x-ndjson"
        )
    keep = runtime.settings.page_id_trailing_slash == "keep"
    rows = read_rows(
        stall_guard(request.stream(), BODY_STALL_SECONDS), media_type, keep_trailing_slash=keep
    )
    summary = await _admin(runtime).run_import(rows, mode, import_id, client_host(request.scope))
    return {"status": "success", **asdict(summary)}


async def _csv(
    first: list[tuple[str, int]] | None, rest: AsyncIterator[list[tuple[str, int]]]
) -> AsyncIterator[bytes]:
    yield b"page_id,visits\n"
    async for chunk in _all(first, rest):
        yield "".join(f"{_csv_field(page)},{visits}\n" for page, visits in chunk).encode()


async def _json(
    first: list[tuple[str, int]] | None, rest: AsyncIterator[list[tuple[str, int]]]
) -> AsyncIterator[bytes]:
    opening = "["
    async for chunk in _all(first, rest):
        items = ",".join(
            f'{{"page_id":{json.dumps(page)},"visits":{visits}}}' for page, visits in chunk
        )
        yield (opening + items).encode()
        opening = ","
    yield b"[]" if opening == "[" else b"]"


async def _all(
    first: list[tuple[str, int]] | None, rest: AsyncIterator[list[tuple[str, int]]]
) -> AsyncIterator[list[tuple[str, int]]]:
    if first is None:
        return
    yield first
    async for chunk in rest:
        yield chunk


def _csv_field(value: str) -> str:
    if any(char in value for char in ',"\r\n'):
        return '"' + value.replace('"', '""') + '"'
    return value
