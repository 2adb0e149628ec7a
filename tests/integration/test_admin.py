"""Admin operations (issue 13, item 4) on real nodes: set, export, import, audit."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest
import redis
from fastapi.testclient import TestClient

from tests.conftest import NodeFactory, SettingsFactory
from tests.integration.conftest import CounterFactory
from tests.support.cluster import LocalCluster
from tests.support.moves import move
from visit_counter.admin.import_rows import Row, RowError
from visit_counter.admin.operations import Admin
from visit_counter.admin.storage import admin_store
from visit_counter.core.embedded_nodes import RedisNodeProcess
from visit_counter.main import create_app
from visit_counter.services.batch import page_key
from visit_counter.services.visit_counter import VisitCounter

pytestmark = pytest.mark.integration

API = "/api/v1/counter"
TOKEN = {"Authorization": "Bearer admin-token-0123456789"}
ALL = 10**6


def admin_of(counter: VisitCounter) -> Admin:
    return Admin(counter, admin_store(counter.nodes.manager))


async def test_a_set_drops_what_another_worker_accepted_before_it_and_adds_what_came_after(
    redis_nodes: list[RedisNodeProcess],
    make_settings: SettingsFactory,
    counter_factory: CounterFactory,
) -> None:
    settings = make_settings(redis_nodes, batch_interval_seconds=60)
    admin_worker, other_worker = await counter_factory(settings), await counter_factory(settings)
    for _ in range(5):
        admin_worker.record_visit("promo")
    await admin_worker.flush()
    for _ in range(4):
        other_worker.record_visit("promo")  # pending in the other worker, before the set

    assert await admin_of(admin_worker).set_visits("promo", 100, "203.0.113.9") == 5
    await other_worker.flush()  # its four visits came before the set: dropped
    assert (await admin_worker.get_visits("promo")).visits == 100
    for _ in range(2):
        other_worker.record_visit("promo")
    await other_worker.flush()
    assert (await other_worker.get_visits("promo")).visits == 102

    [entry] = await admin_of(other_worker).audit(10)
    assert (entry.action, entry.page_id, entry.old_visits, entry.new_visits, entry.client) == (
        "set",
        "promo",
        5,
        100,
        "203.0.113.9",
    )


async def rows_then_cut_off(
    rows: list[Row | RowError], cut_after: int
) -> AsyncIterator[Row | RowError]:
    """The rows, as a request body cut off after `cut_after` rows would give them."""
    for number, row in enumerate(rows, 1):
        if number > cut_after:
            raise ConnectionResetError("the client went away")
        yield row


async def test_an_import_cut_off_and_sent_again_adds_each_row_once(
    redis_nodes: list[RedisNodeProcess],
    make_settings: SettingsFactory,
    counter_factory: CounterFactory,
) -> None:
    counter = await counter_factory(make_settings(redis_nodes))
    rows: list[Row | RowError] = [Row(n, f"imported-{n % 700}", 2) for n in range(1, 2501)]
    rows.insert(10, RowError(11, "visits must be a whole number"))
    admin = admin_of(counter)
    with pytest.raises(ConnectionResetError):
        await admin.run_import(rows_then_cut_off(rows, 1600), "add", "batch-7", "c")
    await counter.flush()
    summary = await admin.run_import(rows_then_cut_off(rows, ALL), "add", "batch-7", "c")
    await counter.flush()
    assert (summary.rows, summary.visits, summary.errors) == (2500, 5000, 1)
    assert not summary.repeated
    assert summary.error_rows == [{"row": 11, "error": "visits must be a whole number"}]
    for page in ("imported-0", "imported-699"):
        assert (await counter.get_visits(page)).visits == expected_of(page)

    again = await admin.run_import(rows_then_cut_off(rows, ALL), "add", "batch-7", "c")
    assert again.repeated, "done before: nothing applied"
    assert again.visits == 5000
    await counter.flush()
    assert (await counter.get_visits("imported-0")).visits == expected_of("imported-0")
    [summary_entry] = [e for e in await admin_of(counter).audit(10) if e.page_id == "*"]
    assert (summary_entry.action, summary_entry.import_id, summary_entry.new_visits) == (
        "import",
        "batch-7",
        5000,
    )


def expected_of(page: str) -> int:
    return 2 * sum(1 for n in range(1, 2501) if f"imported-{n % 700}" == page)


def test_the_admin_routes_set_import_export_and_audit(
    redis_nodes: list[RedisNodeProcess], make_settings: SettingsFactory
) -> None:
    settings = make_settings(redis_nodes, admin_token=TOKEN["Authorization"].split()[1])
    with TestClient(create_app(settings)) as client:
        assert client.put(f"{API}/visits/a", json={"visits": 3}).status_code == 401
        answer = client.put(f"{API}/visits/blog/a", json={"visits": 42}, headers=TOKEN)
        assert answer.json() == {
            "status": "success",
            "page_id": "blog/a",
            "visits": 42,
            "previous_visits": 0,
        }
        for bad in ({"visits": -1}, {"visits": "many"}, {}):
            assert client.put(f"{API}/visits/a", json=bad, headers=TOKEN).status_code == 422
        assert client.delete(f"{API}/visits/blog/a", headers=TOKEN).status_code == 200

        body = 'page_id,visits\nb,7\n"c,d",8\nbad\x00id,1\ne,-3\n"b",9\n'
        imported = client.post(
            f"{API}/import?import_id=csv-1&mode=set",
            content=body,
            headers={**TOKEN, "Content-Type": "text/csv"},
        ).json()
        assert (imported["rows"], imported["errors"]) == (3, 2)
        assert [error["row"] for error in imported["error_rows"]] == [4, 5]
        ndjson = '{"page_id": "f", "visits": 5}\n{"page_id": "g"}\n'
        imported = client.post(
            f"{API}/import?import_id=json-1&mode=add",
            content=ndjson,
            headers={**TOKEN, "Content-Type": "application/x-ndjson"},
        ).json()
        assert (imported["rows"], imported["errors"]) == (1, 1)
        refused = client.post(
            f"{API}/import?import_id=x",
            content="{}",
            headers={**TOKEN, "Content-Type": "text/plain"},
        )
        assert refused.status_code == 415
        client.portal.call(client.app_state["runtime"].counter.flush)

        exported = client.get(f"{API}/export", headers=TOKEN)
        assert exported.headers["content-type"].startswith("text/csv")
        assert sorted(exported.text.splitlines()) == sorted(
            ["page_id,visits", "b,9", '"c,d",8', "f,5"]
        )
        as_json = client.get(f"{API}/export?format=json", headers=TOKEN).json()
        assert sorted((item["page_id"], item["visits"]) for item in as_json) == [
            ("b", 9),
            ("c,d", 8),
            ("f", 5),
        ]

        entries = client.get(f"{API}/audit?limit=50", headers=TOKEN).json()["entries"]
        actions = [(e["action"], e["page_id"], e["old_visits"], e["new_visits"]) for e in entries]
        assert ("reset", "blog/a", 42, 0) in actions
        assert ("set", "blog/a", 0, 42) in actions
        assert ("import", "b", 0, 9) in actions  # a page twice in a file: its last row wins
        assert [e["at"] for e in entries] == sorted((e["at"] for e in entries), reverse=True)
        assert client.get(f"{API}/audit?limit=0", headers=TOKEN).status_code == 422


def test_an_export_of_100000_pages_is_streamed(
    redis_nodes: list[RedisNodeProcess], make_settings: SettingsFactory
) -> None:
    with TestClient(create_app(make_settings(redis_nodes))) as client:
        topology = client.app_state["runtime"].counter.topology
        expected = 0
        for index, node in enumerate(redis_nodes):  # as if counted: on their owners
            with redis.Redis(port=node.port) as direct:
                pipe = direct.pipeline(transaction=False)
                label = topology.members[index]
                for number in range(100_000):
                    page = f"p{number}"
                    if topology.ring.owner(page) == label:
                        pipe.set(page_key(page), number % 10 + 1)
                        expected += number % 10 + 1
                pipe.execute()
        lines = 0
        total = 0
        with client.stream("GET", f"{API}/export") as answer:
            assert "content-length" not in answer.headers, "streamed, not built whole"
            for line in answer.iter_lines():
                if line and line != "page_id,visits":
                    lines += 1
                    total += int(line.rsplit(",", 1)[1])
        assert (lines, total) == (100_000, expected)


@pytest.mark.cluster
async def test_set_audit_and_export_on_a_redis_cluster(
    cluster: LocalCluster, make_settings: SettingsFactory, counter_factory: CounterFactory
) -> None:
    counter = await counter_factory(make_settings(cluster.nodes[:1], redis_mode="cluster"))
    for page in ("x", "y", "y"):
        counter.record_visit(page)
    await counter.flush()
    admin = admin_of(counter)
    assert await admin.set_visits("y", 10, "10.0.0.1") == 2
    exported = [pair async for chunk in admin.export() for pair in chunk]
    assert sorted(exported) == [("x", 1), ("y", 10)]
    [entry] = await admin.audit(5)
    assert (entry.page_id, entry.old_visits, entry.new_visits) == ("y", 2, 10)
    summary = await admin.run_import(rows_then_cut_off([Row(1, "x", 4)], 9), "set", "c1", "c")
    assert summary.rows == 1
    assert (await admin.run_import(rows_then_cut_off([], 9), "set", "c1", "c")).repeated
    assert (await counter.get_visits("x")).visits == 4
    assert json.loads(summary.to_json())["import_id"] == "c1"


async def test_the_audit_and_the_imports_done_survive_the_removal_of_their_node(
    node_factory: NodeFactory, make_settings: SettingsFactory, counter_factory: CounterFactory
) -> None:
    nodes = node_factory(3)
    settings = make_settings(nodes)
    counter = await counter_factory(settings)
    first = counter.topology.members[0]  # holds the imports done
    page = next(f"page-{n}" for n in range(1000) if counter.ring.owner(f"page-{n}") == first)
    admin = admin_of(counter)
    await admin.set_visits(page, 7, "10.0.0.2")
    await admin.run_import(rows_then_cut_off([Row(1, page, 9)], ALL), "set", "once", "10.0.0.3")
    port = int(counter.topology.addresses[first].rsplit(":", 1)[1].split("/")[0])
    [leaving] = [node for node in nodes if node.port == port]

    assert (await move(settings, "remove", leaving.url)).analytics_keys >= 2
    await counter.nodes.refresh()
    entries = await admin_of(counter).audit(10)
    assert [(e.action, e.page_id, e.new_visits) for e in entries] == [
        ("import", "*", 9),
        ("import", page, 9),
        ("set", page, 7),
    ]
    again = await admin_of(counter).run_import(rows_then_cut_off([], ALL), "set", "once", "x")
    assert again.repeated
    assert (await counter.get_visits(page)).visits == 9
