"""The seed's "Testing Examples", against a real uvicorn process and real nodes."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from tests.conftest import ServiceFactory
from visit_counter.core.embedded_nodes import RedisNodeProcess

pytestmark = pytest.mark.e2e

API = "/api/v1/counter"


def wait_for_count(client: httpx.Client, page_id: str, expected: int, timeout: float = 5) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if client.get(f"{API}/visits/{page_id}").json()["visits"] == expected:
            return
        time.sleep(0.05)
    raise AssertionError(f"{page_id} did not reach {expected}")


def test_basic_flow_record_read_reset(
    redis_nodes: list[RedisNodeProcess], service_factory: ServiceFactory
) -> None:
    service = service_factory(redis_nodes)
    with httpx.Client(base_url=service.url) as client:
        recorded = client.post(f"{API}/visit/page1")
        assert recorded.status_code == 200
        body = recorded.json()
        assert body["status"] == "success"
        assert body["message"] == "Visit recorded for page page1"
        assert body["page_id"] == "page1"
        assert body["timestamp"]

        read = client.get(f"{API}/visits/page1")
        assert read.status_code == 200
        assert read.json()["visits"] == 1
        assert read.json()["served_via"].startswith(("redis_", "in_memory"))

        reset = client.delete(f"{API}/visits/page1")
        assert reset.json() == {
            "status": "success",
            "message": "Counter reset for page page1",
            "page_id": "page1",
        }
        time.sleep(0.7)  # two flush intervals: nothing reappears
        assert client.get(f"{API}/visits/page1").json()["visits"] == 0
        assert client.get(f"{API}/visits/never-visited").json()["visits"] == 0


def test_rapid_reads_are_served_from_the_cache(
    redis_nodes: list[RedisNodeProcess], service_factory: ServiceFactory
) -> None:
    service = service_factory(redis_nodes, cache_ttl_seconds=5)
    with httpx.Client(base_url=service.url) as client:
        client.post(f"{API}/visit/page1")
        wait_for_count(client, "page1", 1)
        time.sleep(0.7)  # flushed; the next miss reads the node
        answers = [client.get(f"{API}/visits/page1").json() for _ in range(5)]
    assert all(answer["visits"] == 1 for answer in answers)
    assert answers[-1]["served_via"] == "in_memory"
    assert sum(answer["served_via"] == "in_memory" for answer in answers) >= 4


async def test_ten_concurrent_visits_count_exactly_ten(
    redis_nodes: list[RedisNodeProcess], service_factory: ServiceFactory
) -> None:
    service = service_factory(redis_nodes)
    async with httpx.AsyncClient(base_url=service.url) as client:
        answers = await asyncio.gather(*(client.post(f"{API}/visit/page1") for _ in range(10)))
        assert [answer.status_code for answer in answers] == [200] * 10
        await asyncio.sleep(0.7)
        assert (await client.get(f"{API}/visits/page1")).json()["visits"] == 10


def test_five_pages_land_on_several_shards_with_exact_counts(
    redis_nodes: list[RedisNodeProcess], service_factory: ServiceFactory
) -> None:
    service = service_factory(redis_nodes, cache_ttl_seconds=0)
    pages = [f"page{i}" for i in range(1, 6)]
    with httpx.Client(base_url=service.url) as client:
        for number, page_id in enumerate(pages, start=1):
            for _ in range(number):
                client.post(f"{API}/visit/{page_id}")
        time.sleep(0.7)
        answers = {page_id: client.get(f"{API}/visits/{page_id}").json() for page_id in pages}
    assert {page_id: answer["visits"] for page_id, answer in answers.items()} == {
        page_id: number for number, page_id in enumerate(pages, start=1)
    }
    ports = {answer["served_via"] for answer in answers.values()}
    assert ports <= {f"redis_{node.port}" for node in redis_nodes}
    assert len(ports) >= 2, "five pages should spread over at least two nodes"


def test_every_response_carries_process_time_and_errors_are_json(
    redis_nodes: list[RedisNodeProcess], service_factory: ServiceFactory
) -> None:
    service = service_factory(redis_nodes)
    with httpx.Client(base_url=service.url) as client:
        responses = {
            "post": client.post(f"{API}/visit/ok"),
            "status": client.get("/status"),
            "metrics": client.get(f"{API}/metrics"),
            "bad id": client.post(f"{API}/visit/bad%00id"),
            "long id": client.get(f"{API}/visits/{'x' * 513}"),
            "unknown": client.get("/no/such/route"),
            "wrong method": client.put(f"{API}/visit/ok"),
        }
    for name, response in responses.items():
        assert float(response.headers["x-process-time"]) >= 0, name
        assert response.headers["content-type"] == "application/json", name
    assert responses["bad id"].status_code == 422
    assert responses["bad id"].json()["error"] == "invalid_page_id"
    assert "513" in responses["long id"].json()["message"]
    assert responses["unknown"].status_code == 404
    assert responses["unknown"].json()["error"] == "not_found"
    assert responses["wrong method"].status_code == 405


def test_openapi_describes_every_endpoint(
    redis_nodes: list[RedisNodeProcess], service_factory: ServiceFactory
) -> None:
    service = service_factory(redis_nodes)
    with httpx.Client(base_url=service.url) as client:
        spec = client.get("/openapi.json").json()
        assert client.get("/docs").status_code == 200
    paths = spec["paths"]
    assert set(paths) >= {
        f"{API}/visit/{{page_id}}",
        f"{API}/visits/{{page_id}}",
        f"{API}/metrics",
        "/status",
    }
    for path, operations in paths.items():
        for method, operation in operations.items():
            assert operation.get("description"), f"{method.upper()} {path} has no description"
            assert "200" in operation["responses"]
    visit = paths[f"{API}/visit/{{page_id}}"]["post"]["responses"]
    assert {"422", "503"} <= set(visit)


def test_a_bad_setting_stops_uvicorn_with_one_readable_line(
    redis_nodes: list[RedisNodeProcess], service_factory: ServiceFactory
) -> None:
    with pytest.raises(RuntimeError, match="service exited at start") as failure:
        service_factory(redis_nodes, batch_size_limit="lots")
    message = str(failure.value)
    assert "BATCH_SIZE_LIMIT" in message
    assert "Traceback" not in message
