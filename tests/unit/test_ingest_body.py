"""Batch ingest's body rules: what is taken, and the one clear error for everything else."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import pytest

from visit_counter.api.ingest_body import (
    MAX_BODY_BYTES,
    MAX_COUNT,
    MAX_PAGES,
    check_head,
    parse_visits,
    read_body,
)
from visit_counter.core.errors import (
    CounterError,
    InvalidBodyError,
    InvalidPageIdError,
    PayloadTooLargeError,
    RequestTimeoutError,
    UnsupportedMediaTypeError,
)


def parse(data: object) -> dict[str, int]:
    return parse_visits(json.dumps(data).encode(), keep_trailing_slash=False)


def test_page_ids_are_canonical_and_one_page_spelled_twice_is_added_up() -> None:
    nfd = "cafe\u0301"
    assert parse({"home": 3, "/blog/": 2, "blog": 5, nfd: 1, "café/": MAX_COUNT}) == {
        "home": 3,
        "blog": 7,
        "café": MAX_COUNT + 1,
    }


def test_a_whole_number_written_as_a_float_is_that_number() -> None:
    assert parse({"home": 3.0}) == {"home": 3}


def test_ids_in_json_are_not_percent_decoded() -> None:
    """A URL path arrives percent-encoded and is decoded once; JSON holds the id itself."""
    assert parse({"caf%C3%A9": 1}) == {"caf%C3%A9": 1}


def test_the_largest_request_is_taken() -> None:
    assert len(parse({f"page-{n}": 1 for n in range(MAX_PAGES)})) == MAX_PAGES


@pytest.mark.parametrize(
    ("data", "error", "message"),
    [
        ({"ok": 1, "a/../b": 1}, InvalidPageIdError, "page id 'a/../b'"),
        ({"ok": 1, "": 1}, InvalidPageIdError, "page id ''"),
        ({"ok": 0}, InvalidBodyError, "the count of page 'ok'"),
        ({"ok": MAX_COUNT + 1}, InvalidBodyError, "the count of page 'ok'"),
        ({"ok": 1.5}, InvalidBodyError, "whole number"),
        ({"ok": 1e7}, InvalidBodyError, "whole number"),
        ({"ok": True}, InvalidBodyError, "whole number"),
        ({"ok": "3"}, InvalidBodyError, "whole number"),
        ({}, InvalidBodyError, "1 to 1000 pages"),
        ([["ok", 1]], InvalidBodyError, "a JSON object"),
        ({f"p{n}": 1 for n in range(MAX_PAGES + 1)}, InvalidBodyError, "1 to 1000 pages"),
    ],
    ids=[
        "dot-segment",
        "empty-id",
        "zero",
        "too-many",
        "fraction",
        "float-too-large",
        "bool",
        "string",
        "empty",
        "array",
        "1001-pages",
    ],
)
def test_one_bad_entry_refuses_the_whole_body_and_says_which(
    data: object, error: type[CounterError], message: str
) -> None:
    with pytest.raises(error, match=message.replace("(", r"\(").replace(".", r"\.")):
        parse(data)


@pytest.mark.parametrize("body", [b"{", b"\xff\xfe", b"", b'{"ok": NaN}', b'{"ok": 1} x'])
def test_a_body_that_is_not_json_is_a_422(body: bytes) -> None:
    with pytest.raises(InvalidBodyError, match="not JSON"):
        parse_visits(body, keep_trailing_slash=False)


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/x-www-form-urlencoded"])
def test_only_json_is_taken(content_type: str | None) -> None:
    with pytest.raises(UnsupportedMediaTypeError):
        check_head(content_type, "10")


def test_json_with_a_charset_is_json_and_a_declared_size_past_the_limit_is_a_413() -> None:
    check_head("application/json; charset=utf-8", str(MAX_BODY_BYTES))
    with pytest.raises(PayloadTooLargeError):
        check_head("application/json", str(MAX_BODY_BYTES + 1))


async def chunks(parts: list[bytes], stall: float = 0.0) -> AsyncIterator[bytes]:
    for part in parts:
        yield part
    await asyncio.sleep(stall)


async def test_a_body_is_read_whole_and_refused_once_it_passes_the_limit() -> None:
    assert await read_body(chunks([b'{"a"', b": 1}"])) == b'{"a": 1}'
    with pytest.raises(PayloadTooLargeError):
        await read_body(chunks([b" " * MAX_BODY_BYTES, b" "]))


async def test_a_stalled_body_is_a_408() -> None:
    with pytest.raises(RequestTimeoutError, match=r"within 0\.05 s"):
        await read_body(chunks([b"{"], stall=5), within_seconds=0.05)
