"""Reads of one page under way at once share the node's answer (CACHE_TTL_SECONDS=0): one
script call for a burst of reads, each answer exact, and a reader that goes away does not
take the others' answer with it. Counted with the node's own INFO commandstats."""

from __future__ import annotations

import asyncio

import pytest
import redis

from tests.conftest import SettingsFactory
from tests.integration.conftest import CounterFactory
from visit_counter.core.embedded_nodes import RedisNodeProcess

pytestmark = pytest.mark.integration

PAGE = "hot"


def script_calls(nodes: list[RedisNodeProcess]) -> int:
    total = 0
    for node in nodes:
        with redis.Redis(port=node.port) as client:
            stats = client.info("commandstats")
            total += sum(
                int(stats.get(f"cmdstat_{name}", {}).get("calls", 0))
                for name in ("evalsha", "eval")
            )
    return total


def reset_stats(nodes: list[RedisNodeProcess]) -> None:
    for node in nodes:
        with redis.Redis(port=node.port) as client:
            client.config_resetstat()


async def test_a_burst_of_reads_of_one_page_costs_one_script_call_and_each_is_exact(
    redis_nodes: list[RedisNodeProcess],
    make_settings: SettingsFactory,
    counter_factory: CounterFactory,
) -> None:
    counter = await counter_factory(
        make_settings(redis_nodes, cache_ttl_seconds=0, batch_interval_seconds=60)
    )
    for _ in range(5):
        counter.record_visit(PAGE)
    await counter.flush()
    counter.record_visit(PAGE)  # pending in this worker: every answer includes it
    reset_stats(redis_nodes)
    answers = await asyncio.gather(*(counter.get_visits(PAGE) for _ in range(50)))
    assert [answer.visits for answer in answers] == [6] * 50
    assert script_calls(redis_nodes) <= 2  # 50 without sharing


async def test_a_reader_that_goes_away_leaves_the_answer_to_the_others(
    redis_nodes: list[RedisNodeProcess],
    make_settings: SettingsFactory,
    counter_factory: CounterFactory,
) -> None:
    counter = await counter_factory(make_settings(redis_nodes, cache_ttl_seconds=0))
    for _ in range(3):
        counter.record_visit(PAGE)
    await counter.flush()
    first = asyncio.ensure_future(counter.get_visits(PAGE))
    others = [asyncio.ensure_future(counter.get_visits(PAGE)) for _ in range(5)]
    await asyncio.sleep(0)  # all five wait on the first one's read
    first.cancel()
    assert [(await other).visits for other in others] == [3] * 5
    assert first.cancelled()
    assert (await counter.get_visits(PAGE)).visits == 3  # and the next read is its own
