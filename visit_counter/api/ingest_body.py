"""Batch ingest's request body: read within bounds, then checked whole before anything counts.

`POST <prefix>/counter/visits` takes `{"<page id>": <count>, ...}`: 1 to MAX_PAGES
pages, counts 1 to MAX_COUNT, at most MAX_BODY_BYTES of `application/json`. One
bad entry refuses the whole request (422 naming it), so a client never has to
work out which part of a request was counted.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import orjson

from visit_counter.core.errors import (
    InvalidBodyError,
    InvalidPageIdError,
    PayloadTooLargeError,
    RequestTimeoutError,
    UnsupportedMediaTypeError,
)
from visit_counter.core.page_id import all_canonical, normalize_page_id

MAX_PAGES = 1000
MAX_COUNT = 1_000_000
MAX_BODY_BYTES = 1024 * 1024
BODY_TIMEOUT_SECONDS = 10.0
SHAPE = f"a JSON object of page id -> visit count: 1 to {MAX_PAGES} pages, counts 1 to {MAX_COUNT}"


def check_head(
    content_type: str | None, content_length: str | None, route: str = "batch ingest"
) -> None:
    """Refuse what the headers already show to be wrong (415, 413) before reading a byte."""
    media_type = (content_type or "").split(";", 1)[0].strip().lower()
    if media_type != "application/json":
        raise UnsupportedMediaTypeError(f"{route} takes Content-Type: application/json")
    declared = int(content_length) if content_length and content_length.isdigit() else 0
    if declared > MAX_BODY_BYTES:
        raise PayloadTooLargeError(f"the body may hold at most {MAX_BODY_BYTES} bytes")


async def read_body(
    chunks: AsyncIterator[bytes], within_seconds: float = BODY_TIMEOUT_SECONDS
) -> bytes:
    """The whole body, refused (413) as soon as it passes MAX_BODY_BYTES, or (408) when it
    has not all arrived within `within_seconds`."""
    parts: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(within_seconds):
            async for chunk in chunks:
                size += len(chunk)
                if size > MAX_BODY_BYTES:
                    raise PayloadTooLargeError(f"the body may hold at most {MAX_BODY_BYTES} bytes")
                parts.append(chunk)
    except TimeoutError:
        raise RequestTimeoutError(f"the body did not arrive within {within_seconds:g} s") from None
    return b"".join(parts)


def parse_visits(body: bytes, *, keep_trailing_slash: bool) -> dict[str, int]:
    """Canonical page id -> count; ids that are one page (`/blog/`, `blog`) are added up."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise InvalidBodyError(f"the body is not JSON; it must be {SHAPE}") from None
    if not isinstance(data, dict) or not 1 <= len(data) <= MAX_PAGES:
        raise InvalidBodyError(f"the body must be {SHAPE}")
    counts = data.values()
    if (
        all_canonical(data)
        and set(map(type, counts)) == {int}
        and min(counts) >= 1
        and max(counts) <= MAX_COUNT
    ):
        return data  # the common case, checked in C-speed passes: ids and counts as sent
    visits: dict[str, int] = {}
    for raw_id, count in data.items():
        try:
            page_id = normalize_page_id(raw_id, keep_trailing_slash=keep_trailing_slash)
        except InvalidPageIdError as exc:
            raise InvalidPageIdError(f"page id {raw_id!r}: {exc.message}") from None
        if type(count) is float and count.is_integer():  # JSON's 3.0 is the number 3
            count = int(count)
        if type(count) is not int or not 1 <= count <= MAX_COUNT:
            raise InvalidBodyError(
                f"the count of page {raw_id!r} must be a whole number from 1 to {MAX_COUNT}"
            )
        visits[page_id] = visits.get(page_id, 0) + count
    return visits
