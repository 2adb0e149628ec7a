"""The pure-ASGI visit route answers exactly as the FastAPI route it stands in for."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime

import pytest
from fastapi.testclient import TestClient

from app.core.embedded_nodes import RedisNodeProcess
from app.main import create_app
from tests.conftest import SettingsFactory

pytestmark = pytest.mark.integration

API = "/api/v1/counter"


@pytest.fixture
def client(
    redis_nodes: list[RedisNodeProcess], make_settings: SettingsFactory
) -> Iterator[TestClient]:
    with TestClient(create_app(make_settings(redis_nodes))) as test_client:
        yield test_client


def test_a_visit_gets_the_seed_body_and_headers(client: TestClient) -> None:
    response = client.post(f"{API}/visit/page-1")
    assert response.status_code == 200
    body = response.json()
    assert list(body) == ["status", "message", "page_id", "timestamp"]
    assert body["status"] == "success"
    assert body["message"] == "Visit recorded for page page-1"
    assert body["page_id"] == "page-1"
    assert datetime.fromisoformat(body["timestamp"]).utcoffset() is not None
    assert response.headers["content-type"] == "application/json"
    assert int(response.headers["content-length"]) == len(response.content)
    assert float(response.headers["x-process-time"]) >= 0
    status = client.get("/status").json()
    assert status["total_requests"] == 2
    assert status["counter_status"]["write_buffer_size"] == 1


@pytest.mark.parametrize("page_id", ["bad%20id", "x" * 257, "caf%C3%A9", "%00"])
def test_invalid_ids_get_the_same_error_as_the_fastapi_routes(
    client: TestClient, page_id: str
) -> None:
    fast = client.post(f"{API}/visit/{page_id}")
    routed = client.get(f"{API}/visits/{page_id}")  # served by FastAPI
    assert fast.status_code == routed.status_code == 422
    assert fast.json() == routed.json()
    assert fast.json()["error"] == "invalid_page_id"


@pytest.mark.parametrize("path", [f"{API}/visit/", f"{API}/visit/a/b", f"{API}/visit/a%2Fb"])
def test_paths_that_are_not_the_route_fall_through_to_404(client: TestClient, path: str) -> None:
    response = client.post(path)
    assert response.status_code == 404
    assert response.json()["error"] == "not_found"


def test_the_request_body_is_ignored(client: TestClient) -> None:
    response = client.post(f"{API}/visit/with-body", content=b"x" * 100_000)
    assert response.status_code == 200
    assert client.get(f"{API}/visits/with-body").json()["visits"] == 1


def test_a_visit_that_cannot_be_kept_is_a_503_and_not_counted(client: TestClient) -> None:
    counter = client.app_state["runtime"].counter
    counter.refuse_visits_for(counter.ring.owner("refused"))

    response = client.post(f"{API}/visit/refused")

    assert response.status_code == 503
    assert response.json()["error"] == "visit_not_kept"
    assert counter.pending_visits() == 0
    assert counter.stats.visits_accepted == 0
