"""Batch ingest (`POST …/counter/visits`) on real nodes: all or nothing, exact, and once per key."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from tests.conftest import SettingsFactory
from tests.integration.conftest import CounterFactory
from tests.support.load import stored
from visit_counter.core.embedded_nodes import RedisNodeProcess
from visit_counter.core.errors import VisitNotKeptError
from visit_counter.main import create_app

pytestmark = pytest.mark.integration

API = "/api/v1/counter"


@pytest.fixture
def client(
    redis_nodes: list[RedisNodeProcess], make_settings: SettingsFactory
) -> Iterator[TestClient]:
    with TestClient(create_app(make_settings(redis_nodes))) as test_client:
        yield test_client


def test_a_batch_is_counted_and_answered_with_its_pages_and_visits(
    client: TestClient, redis_nodes: list[RedisNodeProcess]
) -> None:
    answer = client.post(f"{API}/visits", json={"home": 120, "/blog/": 3, "blog": 4, "é": 1})

    assert answer.status_code == 200
    assert answer.json() == {"status": "success", "pages": 3, "visits": 128}
    assert [client.get(f"{API}/visits/{page}").json()["visits"] for page in ("home", "blog")] == [
        120,
        7,
    ]
    client.post(f"{API}/visit/home")
    assert client.get(f"{API}/visits/home").json()["visits"] == 121, "adds to single visits"


def test_one_bad_id_refuses_the_request_names_the_id_and_counts_nothing(
    client: TestClient,
) -> None:
    answer = client.post(f"{API}/visits", json={"home": 5, "a/../b": 1})

    assert answer.status_code == 422
    assert answer.json() == {
        "status": "error",
        "error": "invalid_page_id",
        "message": "page id 'a/../b': page id must not hold '.' or '..' segments",
    }
    assert client.get(f"{API}/visits/home").json()["visits"] == 0


@pytest.mark.parametrize(
    ("headers", "body", "status", "error"),
    [
        ({"content-type": "text/plain"}, b'{"home": 1}', 415, "unsupported_media_type"),
        ({"content-type": "application/json"}, b'{"home": 0}', 422, "invalid_body"),
        ({"content-type": "application/json"}, b"[1]", 422, "invalid_body"),
        ({"content-type": "application/json"}, b" " * (1024 * 1024 + 1), 413, "payload_too_large"),
        (
            {"content-type": "application/json", "idempotency-key": "has space"},
            b'{"home": 1}',
            422,
            "invalid_parameter",
        ),
    ],
    ids=["not-json", "zero-count", "not-an-object", "too-large", "bad-key"],
)
def test_bad_requests_get_a_clear_error_and_count_nothing(
    client: TestClient, headers: dict[str, str], body: bytes, status: int, error: str
) -> None:
    answer = client.post(f"{API}/visits", content=body, headers=headers)

    assert answer.status_code == status
    assert answer.json()["error"] == error
    assert client.get(f"{API}/visits/home").json()["visits"] == 0


def test_a_request_repeated_with_its_key_counts_once(
    client: TestClient, redis_nodes: list[RedisNodeProcess]
) -> None:
    first = {"home": 10, "blog": 1}
    for _ in range(3):
        answer = client.post(f"{API}/visits", json=first, headers={"Idempotency-Key": "req-1"})
        assert answer.json() == {"status": "success", "pages": 2, "visits": 11}
    client.post(f"{API}/visits", json={"home": 10}, headers={"Idempotency-Key": "req-2"})
    # The same key, page and count is the same visits, whichever route sends them.
    client.post(f"{API}/visit/blog", headers={"Idempotency-Key": "req-1"})

    assert client.get(f"{API}/visits/home").json()["visits"] == 20
    assert client.get(f"{API}/visits/blog").json()["visits"] == 1
    metrics = client.get(f"{API}/metrics").json()["metrics"]
    assert (metrics["visits_accepted"], metrics["visits_repeated"]) == (44, 23)


def test_the_route_needs_the_admin_token_when_one_is_set(
    redis_nodes: list[RedisNodeProcess], make_settings: SettingsFactory
) -> None:
    settings = make_settings(redis_nodes, admin_token="s3cret-token-of-some-length")
    with TestClient(create_app(settings)) as client:
        refused = client.post(f"{API}/visits", json={"home": 1})
        taken = client.post(
            f"{API}/visits",
            json={"home": 1},
            headers={"Authorization": "Bearer s3cret-token-of-some-length"},
        )

    assert (refused.status_code, taken.status_code) == (401, 200)


async def test_repeats_across_workers_and_flushes_count_once_on_the_nodes(
    redis_nodes: list[RedisNodeProcess],
    make_settings: SettingsFactory,
    counter_factory: CounterFactory,
) -> None:
    settings = make_settings(redis_nodes, batch_interval_seconds=60)
    first = await counter_factory(settings)
    second = await counter_factory(settings)
    request = {f"page-{n}": n + 1 for n in range(200)}
    expected = sum(request.values())

    assert first.record_visits(request, "req") == expected
    assert first.record_visits(request, "req") == 0, "a repeat in the same buffer adds nothing"
    assert second.record_visits(request, "req") == expected, "only the node can tell"
    await asyncio.gather(first.flush(), second.flush())
    second.record_visits(request, "req")
    await second.flush()
    first.record_visits({"page-0": 5}, "req")  # the same key with another count: new visits
    await first.flush()

    assert sum(stored(redis_nodes, page) for page in request) == expected + 5
    assert first.stats.visits_stored + second.stats.visits_stored == expected + 5


async def test_a_batch_touching_a_refused_node_counts_nothing(
    redis_nodes: list[RedisNodeProcess],
    make_settings: SettingsFactory,
    counter_factory: CounterFactory,
) -> None:
    counter = await counter_factory(make_settings(redis_nodes, batch_interval_seconds=60))
    refused = counter.ring.owner("page-1")
    counter.refuse_visits_for(refused)
    elsewhere = next(f"p{n}" for n in range(100) if counter.ring.owner(f"p{n}") != refused)

    with pytest.raises(VisitNotKeptError):
        counter.record_visits({elsewhere: 3, "page-1": 1})

    assert counter.pending_visits() == 0
    assert counter.stats.visits_accepted == 0


async def test_a_batch_survives_a_crash_in_the_visit_log_and_its_key_still_holds(
    redis_nodes: list[RedisNodeProcess],
    make_settings: SettingsFactory,
    counter_factory: CounterFactory,
) -> None:
    settings = make_settings(redis_nodes, journal_visits=True, batch_interval_seconds=60)
    first = await counter_factory(settings)
    first.record_visits({"home": 40, "blog": 2}, "req-1")
    first.record_visits({"home": 2})
    await first.abandon()  # kill -9: only the visit log has them

    second = await counter_factory(settings)
    second.record_visits({"home": 40, "blog": 2}, "req-1")  # the client's retry
    await second.flush()

    assert (stored(redis_nodes, "home"), stored(redis_nodes, "blog")) == (42, 2)
