"""`PostgresSink`: `hits = hits + n` per page in a table of yours (seed 004's `hits` column).

Each delivery is one transaction: first its mark goes into the marks table
(`INSERT ... ON CONFLICT DO NOTHING`); if the mark was there already, the delivery
was applied before (its commit reply was lost, or the process stopped before the
queue heard of it) and nothing else happens; else every page's hits are added.
Mark and counts commit together or not at all, so a retry after any failure,
however late, adds each batch once. psycopg 3 with an async connection pool; the
`postgres` extra installs both.

Marks are kept `marks_retention_days` (7): far longer than a batch can wait in a
queue that is being drained, and pruned as deliveries go by.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from psycopg import sql
from psycopg_pool import AsyncConnectionPool

from visit_counter.sinks.base import Delivery

logger = logging.getLogger(__name__)

_PRUNE_EVERY = 1000  # deliveries between two prunes of old marks


class PostgresSink:
    """Adds each stored batch's visits to `table`.`hits_column`, keyed by `key_column`.

    `key_column` holds the page id (text). With `upsert` (the default) a page without
    a row gets one, which needs a unique index on `key_column`; without it, only
    existing rows are updated and other pages are left out. `table` may be
    `schema.table`; the marks table `marks_table` is created in the same schema.
    """

    def __init__(
        self,
        dsn: str,
        table: str = "page_visits",
        key_column: str = "page_id",
        hits_column: str = "hits",
        *,
        upsert: bool = True,
        marks_table: str = "visit_counter_sink_marks",
        name: str = "postgres",
        pool_size: int = 2,
        timeout_seconds: float = 10.0,
        marks_retention_days: int = 7,
    ) -> None:
        if not dsn:
            raise ValueError("PostgresSink needs a dsn (POSTGRES_DSN)")
        self.name = name
        self._dsn = dsn
        schema = table.split(".")[:-1]
        self._table = sql.Identifier(*table.split("."))
        self._marks = sql.Identifier(*schema, marks_table)
        self._key = sql.Identifier(key_column)
        self._hits = sql.Identifier(hits_column)
        self._upsert = upsert
        self._pool_size = pool_size
        self._timeout = timeout_seconds
        self._retention = marks_retention_days
        self._pool: AsyncConnectionPool[Any] | None = None
        self._ready = False
        self._since_prune = 0

    async def start(self) -> None:
        if self._pool is None:
            self._pool = AsyncConnectionPool(
                self._dsn,
                min_size=1,
                max_size=self._pool_size,
                open=False,
                timeout=self._timeout,
                kwargs={"connect_timeout": max(1, int(self._timeout))},
            )
            await self._pool.open(wait=False)
        if self._ready:
            return
        statement = sql.SQL(
            "CREATE TABLE IF NOT EXISTS {} (sink text NOT NULL, batch text NOT NULL,"
            " seq bigint NOT NULL, applied_at timestamptz NOT NULL DEFAULT now(),"
            " PRIMARY KEY (sink, batch, seq))"
        ).format(self._marks)
        try:
            async with asyncio.timeout(self._timeout), self._pool.connection() as connection:
                await connection.execute(statement)
        except TimeoutError:
            raise self._timed_out() from None
        self._ready = True

    async def deliver(self, delivery: Delivery) -> bool:
        await self.start()
        try:
            return await self._apply(delivery)
        except TimeoutError:
            raise self._timed_out() from None

    def _timed_out(self) -> TimeoutError:
        return TimeoutError(f"no answer from PostgreSQL within {self._timeout:g} s")

    async def _apply(self, delivery: Delivery) -> bool:
        assert self._pool is not None
        pages = list(delivery.counts)
        amounts = [delivery.counts[page] for page in pages]
        async with (
            asyncio.timeout(self._timeout),
            self._pool.connection() as connection,
            connection.transaction(),
        ):
            marked = await connection.execute(
                sql.SQL(
                    "INSERT INTO {} (sink, batch, seq) VALUES (%s, %s, %s) ON CONFLICT DO NOTHING"
                ).format(self._marks),
                (self.name, delivery.batch, delivery.seq),
            )
            if marked.rowcount == 0:
                return False
            await connection.execute(self._add_statement(), (pages, amounts))
            self._since_prune += 1
            if self._since_prune >= _PRUNE_EVERY:
                self._since_prune = 0
                await connection.execute(
                    sql.SQL(
                        "DELETE FROM {} WHERE sink = %s AND applied_at < now() - make_interval("
                        "days => %s)"
                    ).format(self._marks),
                    (self.name, self._retention),
                )
        return True

    def _add_statement(self) -> sql.Composed:
        if self._upsert:
            return sql.SQL(
                "INSERT INTO {table} AS t ({key}, {hits})"
                " SELECT k, n FROM unnest(%s::text[], %s::bigint[]) AS v(k, n)"
                " ON CONFLICT ({key}) DO UPDATE SET {hits} = t.{hits} + EXCLUDED.{hits}"
            ).format(table=self._table, key=self._key, hits=self._hits)
        return sql.SQL(
            "UPDATE {table} AS t SET {hits} = t.{hits} + v.n"
            " FROM unnest(%s::text[], %s::bigint[]) AS v(k, n) WHERE t.{key} = v.k"
        ).format(table=self._table, key=self._key, hits=self._hits)

    async def aclose(self) -> None:
        pool, self._pool = self._pool, None
        self._ready = False
        if pool is None:
            return
        try:
            await pool.close(timeout=self._timeout)
        except Exception:
            logger.exception("sink %s: closing the connection pool failed", self.name)
