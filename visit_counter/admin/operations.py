"""The admin operations behind the admin routes: set a count, import, export, read the audit.

A set is a reset that leaves the given value instead of 0 (`VisitCounter.reset` with a
`PageChange`): it is fenced like one, so visits any worker accepted before it never land
on top of the value, and visits after it do; its audit entry is written by the same
script.

An import is idempotent by its id, twice over:
- once it has finished, its summary is kept on the nodes (`vc:imports`), and a request
  with the same id answers that summary and changes nothing, however much later;
- while it runs, `mode=add` adds each chunk of `CHUNK_ROWS` rows as one batch ingest with
  the idempotency key `import:<id>:<chunk>` (the chunks are the same on every attempt), so
  an import cut off and sent again within IDEMPOTENCY_WINDOW_SECONDS adds each row once;
  `mode=set` sets each page, which setting again does not change (visits that came
  between the two attempts are reset with it: that is what a set means).
Added visits go through the buffer as batch ingest's do, so they also count in today's
days and totals.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime

from visit_counter.admin.audit import AuditEntry, PageChange
from visit_counter.admin.import_rows import Row, RowError
from visit_counter.admin.storage import AdminStore
from visit_counter.core.errors import CounterError
from visit_counter.services.visit_counter import VisitCounter

CHUNK_ROWS = 1000
SET_CONCURRENCY = 16  # pages set at once during a `mode=set` import
MAX_ERRORS_LISTED = 1000


class MoveUnderWayError(CounterError):
    status_code = 409
    code = "move_in_progress"


@dataclass
class ImportSummary:
    import_id: str
    mode: str
    rows: int = 0  # rows applied
    visits: int = 0  # the visits they added (add) or set (set)
    errors: int = 0  # rows refused
    error_rows: list[dict[str, object]] = field(default_factory=list)  # the first ones
    repeated: bool = False  # done before under this id: nothing was applied now

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))


class Admin:
    def __init__(self, counter: VisitCounter, store: AdminStore) -> None:
        self._counter = counter
        self._store = store

    async def set_visits(self, page_id: str, visits: int, client: str) -> int:
        """Set the page's count; returns the count it had."""
        change = PageChange(value=visits, action="set", client=client)
        return await self._counter.reset(page_id, change)

    async def audit(self, limit: int) -> list[AuditEntry]:
        return await self._store.audit(self._counter.topology.nodes, limit)

    async def export(self) -> AsyncIterator[list[tuple[str, int]]]:
        """Every page and its count, node by node. Refused during a move (a moving page's
        count is spread over two nodes and the mover's bookkeeping)."""
        if self._counter.topology.state != "stable":
            raise MoveUnderWayError("a move is under way; export once it has finished")
        async for chunk in self._store.counts(self._counter.topology.nodes):
            yield chunk

    async def run_import(
        self, rows: AsyncIterator[Row | RowError], mode: str, import_id: str, client: str
    ) -> ImportSummary:
        first = self._counter.topology.members[0]
        done = await self._store.recall_import(first, import_id)
        if done is not None:
            return ImportSummary(**{**json.loads(done), "repeated": True})
        summary = ImportSummary(import_id=import_id, mode=mode)
        chunk: list[Row] = []
        chunks = 0
        async for row in rows:
            if isinstance(row, RowError):
                summary.errors += 1
                if len(summary.error_rows) < MAX_ERRORS_LISTED:
                    summary.error_rows.append({"row": row.number, "error": row.message})
                continue
            chunk.append(row)
            if len(chunk) == CHUNK_ROWS:
                await self._apply(chunk, mode, f"import:{import_id}:{chunks}", client, import_id)
                chunks += 1
                self._note(summary, chunk)
                chunk = []
        if chunk:
            await self._apply(chunk, mode, f"import:{import_id}:{chunks}", client, import_id)
            self._note(summary, chunk)
        await self._store.record_import(
            first, import_id, summary.to_json(), _summary_entry(summary, client)
        )
        return summary

    async def _apply(
        self, chunk: list[Row], mode: str, key: str, client: str, import_id: str
    ) -> None:
        if mode == "add":
            increments: dict[str, int] = {}
            for row in chunk:
                if row.visits:
                    increments[row.page_id] = increments.get(row.page_id, 0) + row.visits
            if increments:
                self._counter.record_visits(increments, key)
            return
        last = {row.page_id: row.visits for row in chunk}  # a page set twice: the last wins
        limit = asyncio.Semaphore(SET_CONCURRENCY)

        async def set_one(page_id: str, visits: int) -> None:
            async with limit:
                change = PageChange(
                    value=visits, action="import", client=client, import_id=import_id
                )
                await self._counter.reset(page_id, change)

        await asyncio.gather(*(set_one(page, visits) for page, visits in last.items()))

    @staticmethod
    def _note(summary: ImportSummary, chunk: list[Row]) -> None:
        summary.rows += len(chunk)
        summary.visits += sum(row.visits for row in chunk)


def _summary_entry(summary: ImportSummary, client: str) -> list[str]:
    """The import's audit entry: field and value pairs (see admin/audit.py)."""
    verb = "added" if summary.mode == "add" else "set"
    detail = (
        f"{verb} {summary.visits} visits over {summary.rows} rows, {summary.errors} rows "
        f"refused (mode={summary.mode})"
    )
    at = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return [
        "at", at, "action", "import", "client", client, "import_id", summary.import_id,
        "page", "*", "old", "0", "new", str(summary.visits), "detail", detail,
    ]  # fmt: skip
