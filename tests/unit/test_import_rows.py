"""Reading an import's body a chunk at a time: CSV, a JSON array, JSON lines; bad rows by number."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from visit_counter.admin.import_rows import MAX_ROW_BYTES, Row, RowError, read_rows, stall_guard
from visit_counter.core.errors import RequestTimeoutError


async def chunked(body: bytes, size: int) -> AsyncIterator[bytes]:
    for at in range(0, len(body), size):
        yield body[at : at + size]


async def rows_of(body: str | bytes, media_type: str, size: int = 7) -> list[Row | RowError]:
    data = body.encode() if isinstance(body, str) else body
    return [
        row async for row in read_rows(chunked(data, size), media_type, keep_trailing_slash=False)
    ]


@pytest.mark.parametrize("size", [1, 3, 7, 4096])
async def test_csv_rows_whatever_the_chunks(size: int) -> None:
    body = 'page_id,visits\r\nblog/a,3\n"x,y",4\n\n/blog/b/,0\ncafé,12\n'
    assert await rows_of(body, "text/csv", size) == [
        Row(2, "blog/a", 3),
        Row(3, "x,y", 4),
        Row(5, "blog/b", 0),
        Row(6, "café", 12),
    ]


async def test_bad_csv_rows_are_reported_by_line_and_the_rest_go_on() -> None:
    body = "a,1\nb\nc,-1\nd,1.5\ne,2,3\n\x00,1\nf,1000000000000001\ng,2"
    rows = await rows_of(body, "text/csv")
    assert [row for row in rows if isinstance(row, Row)] == [Row(1, "a", 1), Row(8, "g", 2)]
    assert [row.number for row in rows if isinstance(row, RowError)] == [2, 3, 4, 5, 6, 7]


async def test_a_line_over_the_limit_is_one_error_not_a_buffer_that_grows() -> None:
    body = b"a,1\n" + b"x" * (3 * MAX_ROW_BYTES) + b",1\nb,2\n"
    rows = await rows_of(body, "text/csv", size=1024)
    assert rows[0] == Row(1, "a", 1)
    assert isinstance(rows[1], RowError)
    assert rows[1].number == 2
    assert rows[2] == Row(3, "b", 2)


@pytest.mark.parametrize("size", [1, 5, 4096])
async def test_json_arrays_and_json_lines(size: int) -> None:
    array = '[{"page_id": "a", "visits": 1}, {"page_id": "ü", "visits": 2},\n {"visits": 3}]'
    assert await rows_of(array, "application/json", size) == [
        Row(1, "a", 1),
        Row(2, "ü", 2),
        RowError(3, "page_id must be a string"),
    ]
    lines = '{"page_id": "a", "visits": 1}\n{"page_id": "b", "visits": 2, "x": 0}\n'
    assert await rows_of(lines, "application/x-ndjson", size) == [
        Row(1, "a", 1),
        RowError(2, 'expected {"page_id": ..., "visits": N}'),
    ]


async def test_a_body_that_stops_being_json_ends_the_import_with_an_error() -> None:
    rows = await rows_of(
        '[{"page_id": "a", "visits": 1}, {"page_id": ' + "x" * MAX_ROW_BYTES,
        "application/json",
        512,
    )
    assert rows[0] == Row(1, "a", 1)
    assert isinstance(rows[-1], RowError)
    truncated = await rows_of('[{"page_id": "a", "visits": 1}, {"page_id"', "application/json")
    assert truncated[-1] == RowError(2, "the body ends inside an item")


async def test_a_stalled_body_is_cut_off() -> None:
    async def stalls() -> AsyncIterator[bytes]:
        yield b"a,1\n"
        await asyncio.sleep(10)
        yield b"b,2\n"

    received: list[bytes] = []

    async def read() -> None:
        async for chunk in stall_guard(stalls(), 0.05):
            received.append(chunk)

    with pytest.raises(RequestTimeoutError):
        await read()
    assert received == [b"a,1\n"]
