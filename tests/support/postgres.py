"""The machine's PostgreSQL (127.0.0.1:5432, user postgres, database test), one schema per
test, dropped after it; and a TCP proxy in front of it for the faults a sink must survive.

`PG_DSN` overrides where the server is. Nothing outside the test's own schema is touched.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

import psycopg
import pytest

from tests.support.proxy import Connection, LoopbackProxy

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


class PgProxy(LoopbackProxy):
    """Loopback proxy to PostgreSQL. `lose_commit_reply`: the next COMMIT reaches the
    server (which commits) but its reply is dropped and the connection cut. `refuse`:
    new connections are closed at once and open ones cut (the database is down)."""

    def __init__(self, port: int = 5432) -> None:
        super().__init__(port)
        self.mode: Mode = "pass"
        self.commit_replies_lost = 0

    def dsn(self, schema: PgSchema) -> str:
        return (
            f"host=127.0.0.1 port={self.port} user=postgres dbname=test "
            f"options=-csearch_path={schema.name}"
        )

    @property
    def refusing(self) -> bool:
        return self.mode == "refuse"

    def marks(self, request: bytes) -> bool:
        return self.mode == "lose_commit_reply" and b"COMMIT" in request

    def drops(self, connection: Connection) -> bool:
        if not connection.marked:
            return False
        self.commit_replies_lost += 1
        self.mode = "pass"  # once
        return True

    def set_mode(self, mode: Mode) -> None:
        self.mode = mode
        if mode == "refuse":
            self.close_connections()
