"""RATE_LIMIT_PER_SECOND on POST visits: 429 with Retry-After, refused visits not counted.

Both the pure-ASGI visit route and the FastAPI route it stands in for enforce it.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from tests.conftest import SettingsFactory
from visit_counter.core.embedded_nodes import RedisNodeProcess
from visit_counter.main import create_app

pytestmark = pytest.mark.integration

API = "/api/v1/counter"


@pytest.fixture
def limited_app(redis_nodes: list[RedisNodeProcess], make_settings: SettingsFactory) -> FastAPI:
    return create_app(make_settings(redis_nodes, rate_limit_per_second=5, rate_limit_burst=5))


# A query string the fast path does not serve sends the visit to the FastAPI route.
VISIT_QUERY = {"fast_route": "", "fastapi_route": "?via=fastapi"}


@pytest.fixture(params=list(VISIT_QUERY))
def route(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def client(limited_app: FastAPI) -> Iterator[TestClient]:
    with TestClient(limited_app, client=("203.0.113.7", 40000)) as test_client:
        yield test_client


def test_a_burst_passes_then_visits_get_429_and_are_not_counted(
    client: TestClient, route: str
) -> None:
    responses = [client.post(f"{API}/visit/limited{VISIT_QUERY[route]}") for _ in range(20)]

    statuses = [response.status_code for response in responses]
    accepted = statuses.count(200)
    # 5 tokens, refilled at 5/s: a slow test machine may earn one or two more meanwhile.
    assert 5 <= accepted <= 7
    assert statuses[:5] == [200] * 5
    assert set(statuses[5:]) <= {200, 429}
    refused = [response for response in responses if response.status_code == 429]
    for response in refused:
        assert response.json()["error"] == "rate_limited"
        assert response.json()["status"] == "error"
        assert int(response.headers["retry-after"]) >= 1
    counter = client.app_state["runtime"].counter
    assert counter.stats.visits_accepted == accepted
    assert client.get(f"{API}/visits/limited").json()["visits"] == accepted


def test_reads_are_not_limited(client: TestClient, route: str) -> None:
    for _ in range(20):
        client.post(f"{API}/visit/p{VISIT_QUERY[route]}")
    assert all(client.get(f"{API}/visits/p").status_code == 200 for _ in range(20))


def test_each_client_address_has_its_own_bucket(
    redis_nodes: list[RedisNodeProcess], make_settings: SettingsFactory
) -> None:
    # One token per 100 s: nothing refills while the clients take turns.
    app = create_app(make_settings(redis_nodes, rate_limit_per_second=0.01, rate_limit_burst=3))

    def statuses(host: str, port: int, visits: int) -> list[int]:
        with TestClient(app, client=(host, port)) as client:
            return [client.post(f"{API}/visit/shared").status_code for _ in range(visits)]

    assert statuses("198.51.100.1", 1000, 5) == [200, 200, 200, 429, 429]
    assert statuses("198.51.100.2", 1000, 4) == [200, 200, 200, 429]
    # Another port of the same address is the same client.
    assert statuses("198.51.100.1", 2000, 1) == [429]


def test_off_by_default(
    redis_nodes: list[RedisNodeProcess], make_settings: SettingsFactory
) -> None:
    with TestClient(create_app(make_settings(redis_nodes))) as client:
        assert client.app_state["runtime"].rate_limiter is None
        assert all(client.post(f"{API}/visit/free").status_code == 200 for _ in range(50))
