"""Days, hours and unique visitors (issue 13, items 2 and 3), on real nodes and a real cluster.

Every answer is checked against what the test sent: visits per page, and the distinct
visitor ids among them (HyperLogLogs are exact at these small counts).
"""

from __future__ import annotations

import random
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis
from fastapi.testclient import TestClient

from tests.conftest import NodeFactory, SettingsFactory
from tests.integration.conftest import CounterFactory
from tests.support.cluster import LocalCluster
from tests.support.moves import move
from visit_counter.analytics.hll import union_count
from visit_counter.analytics.keys import day_key, visitors_key
from visit_counter.analytics.periods import day_name, hour_name, hour_now
from visit_counter.core.embedded_nodes import RedisNodeProcess
from visit_counter.main import create_app
from visit_counter.services.batch import Batch
from visit_counter.services.node_store import NodeStore
from visit_counter.services.visit_counter import VisitCounter
from visit_counter.topology.carry import AnalyticsCarrier

pytestmark = pytest.mark.integration

PAGES = [f"post-{number}" for number in range(40)]
FIREFOX = "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0"
GOOGLEBOT = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"


def visit(
    counter: VisitCounter, seed: int, visits: int = 600
) -> tuple[Counter[str], dict[str, set[str]]]:
    """Random visits by 25 visitors; (visits per page, visitors per page)."""
    rng = random.Random(seed)
    counts: Counter[str] = Counter()
    visitors: dict[str, set[str]] = {}
    for _ in range(visits):
        page, visitor = rng.choice(PAGES), f"visitor-{rng.randrange(25)}"
        counter.record_visit(page, visitor=visitor)
        counts[page] += 1
        visitors.setdefault(page, set()).add(visitor)
    return counts, visitors


async def test_days_hours_and_visitors_add_up_across_three_nodes(
    redis_nodes: list[RedisNodeProcess],
    make_settings: SettingsFactory,
    counter_factory: CounterFactory,
) -> None:
    counter = await counter_factory(make_settings(redis_nodes))
    counts, visitors = visit(counter, seed=1)
    await counter.flush()
    more, more_visitors = visit(counter, seed=2, visits=300)
    await counter.flush()
    counts += more
    for page, ids in more_visitors.items():
        visitors.setdefault(page, set()).update(ids)
    assert len({counter.ring.owner(page) for page in PAGES}) == 3

    for page in PAGES[:10]:
        stats = await counter.analytics.page(page, days=3)
        assert [day.date for day in stats.daily] == [
            day_name(datetime.now(UTC) - timedelta(days=back)) for back in (2, 1, 0)
        ]
        assert [day.visits for day in stats.daily] == [0, 0, counts[page]]
        assert stats.daily[-1].unique_visitors == len(visitors[page]) == stats.unique_visitors

    totals = await counter.analytics.totals(days=1)
    assert totals.pages == len(counts)
    assert totals.visits == totals.daily[0].visits == sum(counts.values())
    assert totals.unique_visitors == 25, "one visitor of many pages (on many nodes) is one"
    assert len(totals.hourly) == 48
    assert totals.hourly[-1].hour == f"{hour_name(datetime.now(UTC))}:00Z"
    assert sum(hour.visits for hour in totals.hourly) == sum(counts.values())
    for node in redis_nodes:  # every key of a day expires with it, none lives for good
        with redis.Redis(port=node.port) as client:
            keys = [*client.scan_iter("vc:uv*"), *client.scan_iter("vc:day:*")]
            assert keys
            assert all(0 < client.ttl(key) <= 400 * 86_400 for key in keys)


async def test_a_batch_is_filed_under_the_hour_it_was_sealed_in_once_however_often_sent(
    redis_nodes: list[RedisNodeProcess],
    make_settings: SettingsFactory,
    counter_factory: CounterFactory,
) -> None:
    """A retry, or a journal replayed two days later, files its visits where they belong."""
    counter = await counter_factory(make_settings(redis_nodes))
    store = NodeStore(counter.nodes.manager)
    node = counter.ring.owner("late")
    sealed = hour_now() - 49  # two days ago: too old for the hours, not for the days
    batch = Batch(
        writer="replayed-writer",
        seq=1,
        node=node,
        increments={"late": (5, 0)},
        version=counter.topology.version,
        sealed_hour=sealed,
        visitors={"late": ("a", "b")},
    )
    assert (await store.apply(batch)).applied
    assert not (await store.apply(batch)).applied, "the retry is found applied"

    stats = await counter.analytics.page("late", days=4)
    sealed_day = day_name(datetime.fromtimestamp(sealed * 3600, UTC))
    assert {day.date: (day.visits, day.unique_visitors) for day in stats.daily if day.visits} == {
        sealed_day: (5, 2)
    }
    totals = await counter.analytics.totals(days=4)
    assert totals.visits == 5
    assert sum(hour.visits for hour in totals.hourly) == 0, "older than the hours kept"
    assert (await counter.get_visits("late")).visits == 5


async def test_days_older_than_the_retention_are_dropped_and_the_keys_expire(
    redis_nodes: list[RedisNodeProcess],
    make_settings: SettingsFactory,
    counter_factory: CounterFactory,
) -> None:
    counter = await counter_factory(make_settings(redis_nodes, stats_retention_days=2))
    store = NodeStore(counter.nodes.manager, stats_retention_days=2)
    node = counter.ring.owner("kept")
    now = hour_now()
    for seq, hours_ago in enumerate((24 * 5, 30, 1, 0), 1):  # 5 days ago: beyond 2 days
        batch = Batch(
            writer="w",
            seq=seq,
            node=node,
            increments={"kept": (1, 0)},
            version=counter.topology.version,
            sealed_hour=now - hours_ago,
            visitors={"kept": (f"visitor-{seq}",)},
            fresh_visitors=frozenset({"kept"}),
        )
        assert (await store.apply(batch)).applied
    [holder] = [n for n in redis_nodes if redis.Redis(port=n.port).exists("vc:totals:daily")]
    today = datetime.now(UTC)
    with redis.Redis(port=holder.port) as client:
        days = sorted(key.decode() for key in client.scan_iter("vc:day:*"))
        assert len(days) <= 2, "the day 5 days back was never filed"
        for key in (*days, *client.scan_iter("vc:uv:*")):
            # A day's keys expire STATS_RETENTION_DAYS after the day began.
            assert 0 < client.ttl(key) <= 2 * 86_400
        assert len(client.hkeys("vc:totals:daily")) <= 2
        assert client.hget(day_key(day_name(today)), "kept") in (b"1", b"2")
    assert (await counter.get_visits("kept")).visits == 4, "the count keeps every visit"
    assert (await counter.analytics.page("kept", days=2)).visits == 3
    totals = await counter.analytics.totals(days=2)
    assert [hour.visits for hour in totals.hourly if hour.visits] in ([1, 1, 1], [1, 2]), (
        "30 h, 1 h and 0 h ago (1 h ago and now in the same hour: never, an hour apart)"
    )


async def test_history_written_before_a_node_was_added_is_still_read(
    node_factory: NodeFactory, make_settings: SettingsFactory, counter_factory: CounterFactory
) -> None:
    nodes = node_factory(4)
    settings = make_settings(nodes[:3])
    counter = await counter_factory(settings)
    counts, visitors = visit(counter, seed=3)
    await counter.flush()
    assert (await move(settings, "add", nodes[3].url)).pages > 0
    await counter.nodes.refresh()
    more, more_visitors = visit(counter, seed=4, visits=200)
    await counter.flush()
    counts += more
    moved = [page for page in PAGES if counter.ring.owner(page) == nodes[3].url]
    assert moved
    for page in moved:  # its day is split over two nodes: visits added, sketches merged
        stats = await counter.analytics.page(page, days=1)
        assert stats.visits == counts[page]
        came = visitors.get(page, set()) | more_visitors.get(page, set())
        assert stats.unique_visitors == stats.daily[0].unique_visitors == len(came)
    assert (await counter.analytics.totals(days=1)).visits == sum(counts.values())


def test_the_routes_answer_stats_and_check_their_days(
    redis_nodes: list[RedisNodeProcess], make_settings: SettingsFactory
) -> None:
    """A browser is one visitor; a crawler is not counted; a server is counted, as no one."""
    settings = make_settings(redis_nodes, stats_retention_days=60)
    with TestClient(create_app(settings)) as client:
        page = "blog/2026/hello"
        browser = {"Origin": "https://blog.example", "User-Agent": FIREFOX}
        for headers in (
            browser,
            browser,
            {"Origin": "https://blog.example", "User-Agent": GOOGLEBOT},
            {},
        ):
            assert client.post(f"/api/v1/counter/visit/{page}", headers=headers).status_code == 200
        client.portal.call(client.app_state["runtime"].counter.flush)

        answer = client.get(f"/api/v1/counter/stats/{page}?days=7")
        assert answer.status_code == 200
        body = answer.json()
        assert (body["page_id"], body["visits"], body["unique_visitors"]) == (page, 3, 1)
        assert len(body["daily"]) == 7
        assert body["daily"][-1] == {
            "date": day_name(datetime.now(UTC)),
            "visits": 3,
            "unique_visitors": 1,
        }
        assert "hourly" not in body
        totals = client.get("/api/v1/counter/totals").json()
        assert (totals["pages"], totals["visits"], totals["unique_visitors"]) == (1, 3, 1)
        assert len(totals["daily"]) == 30
        assert totals["hourly"][-1]["visits"] == 3

        for bad in ("0", "61", "many"):
            refused = client.get(f"/api/v1/counter/stats/{page}?days={bad}")
            assert refused.status_code == 422
            assert refused.json()["error"] == "invalid_parameter"
        assert client.get("/api/v1/counter/stats/bad%00id").status_code == 422
        for route in ("stats", "pixel", "badge"):  # no route matches a line feed: still 422
            refused = client.get(f"/api/v1/counter/{route}/a%0Ab")
            assert (refused.status_code, refused.json()["error"]) == (422, "invalid_page_id")


@pytest.mark.cluster
async def test_days_and_visitors_on_a_redis_cluster(
    cluster: LocalCluster, make_settings: SettingsFactory, counter_factory: CounterFactory
) -> None:
    counter = await counter_factory(make_settings(cluster.nodes[:1], redis_mode="cluster"))
    counts, visitors = visit(counter, seed=5)
    await counter.flush()
    for page in PAGES[:5]:
        stats = await counter.analytics.page(page, days=2)
        assert [day.visits for day in stats.daily] == [0, counts[page]]
        assert stats.unique_visitors == len(visitors[page])
    totals = await counter.analytics.totals(days=2)
    assert (totals.pages, totals.visits, totals.unique_visitors) == (
        len(counts),
        sum(counts.values()),
        25,
    )


async def test_a_removed_node_hands_its_analytics_over_once(
    node_factory: NodeFactory, make_settings: SettingsFactory, counter_factory: CounterFactory
) -> None:
    nodes = node_factory(3)
    settings = make_settings(nodes)
    counter = await counter_factory(settings)
    counts, visitors = visit(counter, seed=6)
    await counter.flush()
    leaving = nodes[2]
    with redis.Redis(port=leaving.port) as client:
        held = [key.decode() for key in client.scan_iter("vc:uv:*")]
    assert held, "the leaving node holds some pages' visitors"

    summary = await move(settings, "remove", leaving.url)
    assert summary.analytics_keys >= len(held) + 1
    await counter.nodes.refresh()
    with redis.Redis(port=leaving.port) as client:
        assert [
            key for key in client.scan_iter("vc:*") if key.startswith((b"vc:daily", b"vc:uv"))
        ] == []
    for page in PAGES:
        stats = await counter.analytics.page(page, days=1)
        assert (stats.visits, stats.unique_visitors) == (counts[page], len(visitors[page]))
    totals = await counter.analytics.totals(days=1)
    assert (totals.visits, totals.unique_visitors, totals.pages) == (
        sum(counts.values()),
        25,
        len(counts),
    )


class MoverDied(Exception):
    """Stands for the mover killed between a carry and the source's delete."""


async def test_a_carry_cut_before_the_source_deletes_adds_nothing_twice_when_run_again(
    redis_nodes: list[RedisNodeProcess],
    make_settings: SettingsFactory,
    counter_factory: CounterFactory,
) -> None:
    counter = await counter_factory(make_settings(redis_nodes))
    counts, visitors = visit(counter, seed=7)
    await counter.flush()
    stable = counter.topology
    source = stable.members[0]
    moving = stable.preparing(stable.members[1:], {}).moving()
    manager = counter.nodes.manager

    async def dies_before_deleting(label: str, operation: Any, *args: Any) -> Any:
        if label == source and getattr(operation, "__name__", "") == "delete":
            raise MoverDied
        return await operation(*args)

    async def calls(label: str, operation: Any, *args: Any) -> Any:
        return await operation(*args)

    with pytest.raises(MoverDied):
        await AnalyticsCarrier(manager, dies_before_deleting).carry(moving, source)
    carried = await AnalyticsCarrier(manager, calls).carry(moving, source)
    assert carried > 0
    assert await AnalyticsCarrier(manager, calls).carry(moving, source) == 0, "all deleted"

    source_port = int(stable.addresses[source].rsplit(":", 1)[1].split("/")[0])
    kept = [node for node in redis_nodes if node.port != source_port]
    filed: Counter[str] = Counter()
    unique: dict[str, int] = {}
    today = day_name(datetime.now(UTC))
    for page in PAGES:
        raws = []
        for node in kept:
            with redis.Redis(port=node.port) as client:
                filed[page] += int(client.hget(day_key(today), page) or 0)
                raws.append(client.get(visitors_key(page, today)))
        unique[page] = union_count(raw for raw in raws if raw)
    assert filed == counts, "each page's days on the nodes that stay, once"
    assert unique == {page: len(ids) for page, ids in visitors.items()}
