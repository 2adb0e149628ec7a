"""PostgresSink on the machine's real PostgreSQL, fed by the engine on real nodes.

Each test has its own schema (tests/support/postgres.py), dropped after it. The
faults go through a proxy in front of the database: a COMMIT whose reply is lost
(the sink cannot tell whether it committed), and the database down for a while.
In every case PostgreSQL's `hits` end equal to what the nodes stored.
"""

from __future__ import annotations

import asyncio

import pytest
from fastapi.testclient import TestClient

from tests.conftest import SettingsFactory
from tests.support.postgres import PgProxy, PgSchema
from visit_counter.core.embedded_nodes import RedisNodeProcess
from visit_counter.main import create_app
from visit_counter.services.running import running_counter
from visit_counter.services.visit_counter import VisitCounter
from visit_counter.sinks.base import Delivery
from visit_counter.sinks.postgres import PostgresSink

pytestmark = pytest.mark.integration


def visit(counter: VisitCounter, counts: dict[str, int]) -> None:
    for page, count in counts.items():
        for _ in range(count):
            counter.record_visit(page)


async def stored_on_nodes(counter: VisitCounter, pages: list[str]) -> dict[str, int]:
    return {page: (await counter.get_visits(page)).visits for page in pages}


async def until(condition: object, seconds: float = 10.0) -> None:
    async with asyncio.timeout(seconds):
        while not condition():  # type: ignore[operator]
            await asyncio.sleep(0.05)


async def test_a_delivery_handed_over_twice_adds_its_hits_once(postgres: PgSchema) -> None:
    sink = PostgresSink(postgres.dsn, postgres.table("page_visits"))
    try:
        delivery = Delivery("w|redis://n:1", 1, {"home": 3, "blog/post": 2})
        assert await sink.deliver(delivery) is True
        assert await sink.deliver(delivery) is False
        assert await sink.deliver(Delivery("w|redis://n:1", 2, {"home": 1})) is True
        assert await sink.deliver(Delivery("w|redis://n:2", 1, {"home": 4})) is True
    finally:
        await sink.aclose()
    assert postgres.hits() == {"home": 8, "blog/post": 2}


async def test_without_upsert_only_existing_rows_are_updated(postgres: PgSchema) -> None:
    postgres.execute(f"INSERT INTO {postgres.table('page_visits')} VALUES ('known', 10)")
    sink = PostgresSink(postgres.dsn, postgres.table("page_visits"), upsert=False)
    try:
        await sink.deliver(Delivery("w|n", 1, {"known": 2, "unknown": 5}))
    finally:
        await sink.aclose()
    assert postgres.hits() == {"known": 12}


async def test_the_engine_mirrors_every_stored_batch_into_hits(
    redis_nodes: list[RedisNodeProcess], make_settings: SettingsFactory, postgres: PgSchema
) -> None:
    counts = {f"page-{n}": n + 1 for n in range(40)}
    sink = PostgresSink(postgres.dsn, postgres.table("page_visits"))
    async with running_counter(make_settings(redis_nodes), [sink]) as counter:
        visit(counter, counts)
        await counter.flush()
        visit(counter, {"page-0": 5})
    # Closed: the final flush was stored and handed over before the sink closed.
    assert postgres.hits() == {**counts, "page-0": 6}


async def test_a_lost_commit_reply_is_retried_and_counted_once(
    redis_nodes: list[RedisNodeProcess],
    make_settings: SettingsFactory,
    postgres: PgSchema,
    pg_proxy: PgProxy,
) -> None:
    sink = PostgresSink(pg_proxy.dsn(postgres), postgres.table("page_visits"), timeout_seconds=3)
    async with running_counter(make_settings(redis_nodes), [sink]) as counter:
        (queue,) = counter.sinks.queues
        visit(counter, {"a": 1})
        await counter.flush()
        await until(lambda: queue.stats().delivered == 1)
        pg_proxy.set_mode("lose_commit_reply")
        visit(counter, {"a": 3, "b": 2})
        await counter.flush()
        await until(lambda: queue.pending == 0)
        stats = queue.stats()
    assert pg_proxy.commit_replies_lost == 1
    assert stats.failures >= 1
    assert stats.duplicates == 1  # the retry found its mark: the lost COMMIT had committed
    assert postgres.hits() == {"a": 4, "b": 2}


async def test_a_database_that_is_down_delays_only_its_sink(
    redis_nodes: list[RedisNodeProcess],
    make_settings: SettingsFactory,
    postgres: PgSchema,
    pg_proxy: PgProxy,
) -> None:
    sink = PostgresSink(pg_proxy.dsn(postgres), postgres.table("page_visits"), timeout_seconds=1)
    settings = make_settings(redis_nodes, sink_max_pending_batches=2)
    async with running_counter(settings, [sink]) as counter:
        (queue,) = counter.sinks.queues
        pg_proxy.set_mode("refuse")
        for round_ in range(6):
            visit(counter, {f"p{round_}": 2, "shared": 1})
            await counter.flush()  # returns: the nodes took it, whatever the sink's state
        assert await stored_on_nodes(counter, ["shared", "p5"]) == {"shared": 6, "p5": 2}
        assert queue.pending >= 6  # beyond the memory bound: waiting in the queue's file
        await until(lambda: queue.stats().failures >= 1)
        assert "PostgreSQL" in str(queue.stats().last_error)
        pg_proxy.set_mode("pass")
        await until(lambda: queue.pending == 0, seconds=20)
    assert postgres.hits() == {**{f"p{n}": 2 for n in range(6)}, "shared": 6}


async def test_batches_the_sink_could_not_take_before_shutdown_are_taken_after_restart(
    redis_nodes: list[RedisNodeProcess],
    make_settings: SettingsFactory,
    postgres: PgSchema,
    pg_proxy: PgProxy,
) -> None:
    settings = make_settings(redis_nodes, shutdown_flush_timeout_seconds=0.5)
    down = PostgresSink(pg_proxy.dsn(postgres), postgres.table("page_visits"), timeout_seconds=1)
    pg_proxy.set_mode("refuse")
    async with running_counter(settings, [down]) as counter:
        visit(counter, {"kept": 7})
        await counter.flush()
    assert postgres.hits() == {}
    pg_proxy.set_mode("pass")
    up = PostgresSink(pg_proxy.dsn(postgres), postgres.table("page_visits"))
    async with running_counter(settings, [up]) as counter:
        (queue,) = counter.sinks.queues
        await until(lambda: queue.stats().delivered == 1)
        assert (await counter.get_visits("kept")).visits == 7
    assert postgres.hits() == {"kept": 7}


def test_the_service_mirrors_counts_with_sinks_postgres(
    redis_nodes: list[RedisNodeProcess], make_settings: SettingsFactory, postgres: PgSchema
) -> None:
    settings = make_settings(
        redis_nodes, sinks="postgres", postgres_dsn=postgres.dsn, postgres_table="page_visits"
    )
    with TestClient(create_app(settings)) as client:
        for page in ("home", "home", "blog/post"):
            assert client.post(f"/api/v1/counter/visit/{page}").status_code == 200
    assert postgres.hits() == {"home": 2, "blog/post": 1}
