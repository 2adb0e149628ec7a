"""The machine's PostgreSQL (127.0.0.1:5432, user postgres, database test), one schema per
test, dropped after it; and a TCP proxy in front of it for the faults a sink must survive.

`PG_DSN` overrides where the server is. Nothing outside the test's own schema is touched.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

import psycopg
import pytest

BASE_DSN = os.environ.get("PG_DSN", "host=127.0.0.1 port=5432 user=postgres dbname=test")


@dataclass(frozen=True)
class PgSchema:
    name: str
    dsn: str  # connections default to this schema (search_path)

    def table(self, name: str) -> str:
        return f"{self.name}.{name}"

    def hits(
        self, table: str = "page_visits", key: str = "page_id", hits: str = "hits"
    ) -> dict[str, int]:
        with psycopg.connect(BASE_DSN, autocommit=True) as connection:
            rows = connection.execute(f"SELECT {key}, {hits} FROM {self.name}.{table}")
            return {page: int(hits) for page, hits in rows}

    def execute(self, statement: str) -> None:
        with psycopg.connect(BASE_DSN, autocommit=True) as connection:
            connection.execute(statement)


@contextlib.contextmanager
def pg_schema() -> Iterator[PgSchema]:
    """A fresh schema with a `page_visits(page_id text primary key, hits bigint)` table."""
    try:
        admin = psycopg.connect(BASE_DSN, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as exc:
        pytest.skip(f"no PostgreSQL at {BASE_DSN}: {exc}")
    name = f"vc_test_{secrets.token_hex(4)}"
    with admin:
        admin.execute(f"CREATE SCHEMA {name}")
        admin.execute(
            f"CREATE TABLE {name}.page_visits (page_id text PRIMARY KEY, hits bigint NOT NULL)"
        )
        try:
            yield PgSchema(name, f"{BASE_DSN} options=-csearch_path={name}")
        finally:
            admin.execute(f"DROP SCHEMA {name} CASCADE")


Mode = Literal["pass", "lose_commit_reply", "refuse"]


class PgProxy:
    """Loopback proxy to PostgreSQL. `lose_commit_reply`: the next COMMIT reaches the
    server (which commits) but its reply is dropped and the connection cut. `refuse`:
    new connections are closed at once and open ones cut (the database is down)."""

    def __init__(self, host: str = "127.0.0.1", port: int = 5432) -> None:
        self.target = (host, port)
        self.mode: Mode = "pass"
        self.commit_replies_lost = 0
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    def dsn(self, schema: PgSchema) -> str:
        return f"host=127.0.0.1 port={self.port} user=postgres dbname=test " + (
            f"options=-csearch_path={schema.name}"
        )

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    def set_mode(self, mode: Mode) -> None:
        self.mode = mode
        if mode == "refuse":
            for writer in list(self._writers):
                writer.close()

    async def aclose(self) -> None:
        if self._server is not None:
            self._server.close()
            for writer in list(self._writers):
                writer.close()
            await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, client: asyncio.StreamWriter) -> None:
        if self.mode == "refuse":
            client.close()
            return
        server_reader, server = await asyncio.open_connection(*self.target)
        self._writers.update((client, server))
        commit_sent = asyncio.Event()
        try:
            await asyncio.gather(
                self._pipe(reader, server, commit_sent, replies=False),
                self._pipe(server_reader, client, commit_sent, replies=True),
            )
        finally:
            for writer in (client, server):
                self._writers.discard(writer)
                writer.close()

    async def _pipe(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        commit_sent: asyncio.Event,
        *,
        replies: bool,
    ) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            while data := await reader.read(65536):
                if not replies and self.mode == "lose_commit_reply" and b"COMMIT" in data:
                    commit_sent.set()
                if replies and commit_sent.is_set():
                    self.commit_replies_lost += 1
                    self.mode = "pass"  # once
                    writer.close()
                    return
                writer.write(data)
                await writer.drain()
        writer.close()
