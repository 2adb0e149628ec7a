"""Reading an import's body as it arrives: CSV, a JSON array, or JSON lines, one row at a time.

A row is a page id and a count. CSV: `page_id,visits` per line (an optional header line
names those two columns; fields may be quoted as RFC 4180 has it, within one line).
JSON: an array of `{"page_id": "...", "visits": N}`, or the same objects one per line
(NDJSON). The body is never held whole: at most one unfinished line or object, up to
`MAX_ROW_BYTES`, waits for the next chunk. A row that breaks the rules is reported with its
number (the line, or the array's item, from 1) and skipped; the rest go on. A JSON body
that stops being JSON cannot be read further: that ends the import with an error row.
"""

from __future__ import annotations

import asyncio
import csv
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass

from visit_counter.core.errors import InvalidPageIdError, RequestTimeoutError
from visit_counter.core.page_id import normalize_page_id

MAX_ROW_BYTES = 64 * 1024
MAX_VISITS = 10**15  # within a Lua number's exact integers, with room to count on
CSV_TYPES = frozenset({"text/csv", "application/csv"})
JSON_TYPES = frozenset({"application/json", "application/x-ndjson", "application/jsonl"})
_SEPARATORS = " \t\r\n[,]"


@dataclass(frozen=True, slots=True)
class Row:
    number: int
    page_id: str
    visits: int


@dataclass(frozen=True, slots=True)
class RowError:
    number: int
    message: str


async def read_rows(
    chunks: AsyncIterator[bytes], media_type: str, *, keep_trailing_slash: bool
) -> AsyncIterator[Row | RowError]:
    """The body's rows, in order (see the module docstring)."""
    reader = _csv_rows if media_type in CSV_TYPES else _json_rows
    async for number, page, visits in reader(chunks):
        if isinstance(page, RowError):
            yield page
            continue
        try:
            yield Row(number, _page_id(page, keep_trailing_slash), _visits(visits))
        except ValueError as exc:
            yield RowError(number, str(exc))


def _page_id(raw: object, keep_trailing_slash: bool) -> str:
    if not isinstance(raw, str):
        raise ValueError("page_id must be a string")
    try:
        return normalize_page_id(raw, keep_trailing_slash=keep_trailing_slash)
    except InvalidPageIdError as exc:
        raise ValueError(f"page id {raw!r}: {exc.message}") from None


def _visits(raw: object) -> int:
    if isinstance(raw, str) and raw.strip().isdigit():
        raw = int(raw.strip())
    if isinstance(raw, float) and raw.is_integer():
        raw = int(raw)
    if type(raw) is not int or not 0 <= raw <= MAX_VISITS:
        raise ValueError(f"visits must be a whole number from 0 to {MAX_VISITS}")
    return raw


async def stall_guard(chunks: AsyncIterator[bytes], seconds: float) -> AsyncIterator[bytes]:
    """The body's chunks; RequestTimeoutError (408) when none comes for `seconds`: a stalled
    upload must not hold the import (and its worker's memory) for ever."""
    while True:
        try:
            async with asyncio.timeout(seconds):
                chunk = await anext(chunks)
        except StopAsyncIteration:
            return
        except TimeoutError:
            message = f"the body stalled: nothing arrived for {seconds:g} s"
            raise RequestTimeoutError(message) from None
        if chunk:
            yield chunk


_Parsed = tuple[int, object, object]  # (row number, page id or RowError, visits)


async def _lines(chunks: AsyncIterator[bytes]) -> AsyncIterator[tuple[int, bytes | None]]:
    """(line number, line without its end) for each line; None for a line over the limit."""
    buffer, number, skipping = b"", 0, False
    async for chunk in chunks:
        buffer += chunk
        while (end := buffer.find(b"\n")) >= 0:
            line, buffer = buffer[:end], buffer[end + 1 :]
            number += 1
            yield number, (None if skipping else line.rstrip(b"\r"))
            skipping = False
        if len(buffer) > MAX_ROW_BYTES:
            if not skipping:
                buffer, skipping = b"", True
            else:
                buffer = b""
    if buffer or skipping:
        yield number + 1, (None if skipping else buffer.rstrip(b"\r"))


async def _csv_rows(chunks: AsyncIterator[bytes]) -> AsyncIterator[_Parsed]:
    async for number, line in _lines(chunks):
        if line is None:
            yield number, RowError(number, f"the line is longer than {MAX_ROW_BYTES} bytes"), 0
            continue
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError:
            yield number, RowError(number, "the line is not UTF-8"), 0
            continue
        if not text.strip():
            continue
        fields = next(csv.reader([text]))
        if number == 1 and [field.strip().lower() for field in fields] == ["page_id", "visits"]:
            continue  # the header
        if len(fields) != 2:
            message = f"expected 2 fields (page_id,visits), found {len(fields)}"
            yield number, RowError(number, message), 0
            continue
        yield number, fields[0], fields[1]


async def _json_rows(chunks: AsyncIterator[bytes]) -> AsyncIterator[_Parsed]:
    """Objects of a JSON array or of JSON lines, decoded one at a time off a bounded buffer."""
    decoder = json.JSONDecoder()
    text, at, number, pending = "", 0, 0, b""
    async for chunk in chunks:
        pending += chunk
        try:
            text, pending = text[at:] + pending.decode("utf-8"), b""
        except UnicodeDecodeError as exc:
            if exc.start < len(pending) - 3:
                yield number + 1, RowError(number + 1, "the body is not UTF-8"), 0
                return
            text, pending = text[at:] + pending[: exc.start].decode(), pending[exc.start :]
        at = 0
        while True:
            at = _skip(text, at)
            if at >= len(text):
                break
            try:
                item, end = decoder.raw_decode(text, at)
            except json.JSONDecodeError:
                if len(text) - at > MAX_ROW_BYTES:
                    message = "not JSON, or an item longer than the limit: the import stops here"
                    yield number + 1, RowError(number + 1, message), 0
                    return
                break  # incomplete: wait for more
            number += 1
            at = end
            if not isinstance(item, dict) or set(item) - {"page_id", "visits"}:
                yield number, RowError(number, 'expected {"page_id": ..., "visits": N}'), 0
                continue
            yield number, item.get("page_id"), item.get("visits")
    if _skip(text, at) < len(text) or pending:
        yield number + 1, RowError(number + 1, "the body ends inside an item"), 0


def _skip(text: str, at: int) -> int:
    """Past whitespace and the array's punctuation (`[`, `,`, `]`) before the next item."""
    while at < len(text) and text[at] in _SEPARATORS:
        at += 1
    return at
