"""The pure-ASGI visit route answers exactly as the FastAPI route it stands in for."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime

import pytest
from fastapi.testclient import TestClient

from tests.conftest import SettingsFactory
from visit_counter.core.embedded_nodes import RedisNodeProcess
from visit_counter.main import create_app

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


@pytest.mark.parametrize(
    "page_id", ["x" * 513, "%00", "a/%2E%2E/b", "%2E", "blog/%2E/x", "%0A", "a%0A"]
)
def test_invalid_ids_get_the_same_error_as_the_fastapi_routes(
    client: TestClient, page_id: str
) -> None:
    fast = client.post(f"{API}/visit/{page_id}")
    routed = client.get(f"{API}/visits/{page_id}")  # served by FastAPI
    assert fast.status_code == routed.status_code == 422
    assert fast.json() == routed.json()
    assert fast.json()["error"] == "invalid_page_id"


@pytest.mark.parametrize("page_id", ["%0A", "a%0A%0Db", "%0Ax/y"])
def test_an_id_with_a_line_feed_is_a_422_whatever_the_query(
    client: TestClient, page_id: str
) -> None:
    """FastAPI's `{page_id:path}` cannot match a line feed; the edge gives the id's 422."""
    for answer in (
        client.post(f"{API}/visit/{page_id}?via=fastapi"),
        client.get(f"{API}/visits/{page_id}?via=fastapi"),
    ):
        assert answer.status_code == 422
        assert answer.json()["error"] == "invalid_page_id"


def test_an_empty_id_is_a_422(client: TestClient) -> None:
    response = client.post(f"{API}/visit/")
    assert response.status_code == 422
    assert response.json()["message"] == "page id must not be empty"


@pytest.mark.parametrize(
    ("sent", "page_id"),
    [
        ("blog/2026/hello", "blog/2026/hello"),
        ("blog%2F2026%2Fhello", "blog/2026/hello"),
        ("/blog/2026/hello/", "blog/2026/hello"),
        ("caf%C3%A9/men%C3%BC", "caf\u00e9/men\u00fc"),
        ("cafe%CC%81", "caf\u00e9"),
        ("say%20%22hi%22%5C", 'say "hi"\\'),
        ("%2F", "/"),
    ],
)
def test_url_paths_are_counted_under_their_canonical_id(
    client: TestClient, sent: str, page_id: str
) -> None:
    response = client.post(f"{API}/visit/{sent}")
    assert response.status_code == 200
    assert response.json()["page_id"] == page_id
    assert response.json()["message"] == f"Visit recorded for page {page_id}"
    assert int(response.headers["content-length"]) == len(response.content)
    assert client.get(f"{API}/visits/{sent}").json()["visits"] == 1
    assert client.delete(f"{API}/visits/{sent}").json()["page_id"] == page_id
    assert client.get(f"{API}/visits/{page_id}").json()["visits"] == 0


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


def test_a_visit_repeated_with_its_key_is_answered_again_and_counted_once(
    client: TestClient,
) -> None:
    answers = [client.post(f"{API}/visit/keyed", headers={"Idempotency-Key": "k1"})]
    answers.append(client.post(f"{API}/visit/keyed", headers={"Idempotency-Key": "k1"}))
    answers.append(client.post(f"{API}/visit/keyed?idempotency_key=k1"))  # sendBeacon's form
    counted = client.post(f"{API}/visit/keyed?idempotency_key=k2&return=count")

    assert [answer.status_code for answer in answers] == [200, 200, 200]
    assert {answer.json()["page_id"] for answer in answers} == {"keyed"}
    assert counted.json()["visits"] == 2, "k1 once, and k2"
    assert client.get(f"{API}/visits/keyed").json()["visits"] == 2
    metrics = client.get(f"{API}/metrics").json()["metrics"]
    assert (metrics["visits_accepted"], metrics["visits_repeated"]) == (4, 2)
    assert "pagevisits_repeated_total 2.0" in client.get("/metrics").text


@pytest.mark.parametrize("key", ["has space", "x" * 129, ""], ids=["space", "long", "empty"])
def test_a_bad_key_is_the_same_422_on_both_routes_and_counts_nothing(
    client: TestClient, key: str
) -> None:
    fast = client.post(f"{API}/visit/bad-key", headers={"Idempotency-Key": key})
    routed = client.post(f"{API}/visit/bad-key", params={"idempotency_key": key})

    assert fast.status_code == routed.status_code == 422
    assert fast.json() == routed.json()
    assert fast.json()["error"] == "invalid_parameter"
    assert "Idempotency-Key must be" in fast.json()["message"]
    assert client.get(f"{API}/visits/bad-key").json()["visits"] == 0


# A query string the fast path does not serve (`via=…`, which FastAPI ignores) sends a
# request to the FastAPI twin: the two must answer alike.


def test_a_read_is_the_same_answer_on_the_fast_path_and_its_fastapi_twin(
    client: TestClient,
) -> None:
    client.post(f"{API}/visit/same")
    client.get(f"{API}/visits/same")  # a cache miss: fills the cache both reads then use

    fast = client.get(f"{API}/visits/same")
    routed = client.get(f"{API}/visits/same?via=fastapi")

    assert (fast.status_code, routed.status_code) == (200, 200)
    assert fast.content == routed.content == b'{"visits":1,"served_via":"in_memory","stale":false}'
    assert fast.headers["content-type"] == routed.headers["content-type"] == "application/json"


def test_a_count_and_read_is_the_same_answer_on_both_paths(
    redis_nodes: list[RedisNodeProcess], make_settings: SettingsFactory
) -> None:
    # No flush between the requests (a long interval): a repeat is recognised in the
    # worker's buffer only until its key is flushed; after that the node recognises it,
    # and a count read before the next flush may include it (README, Idempotency-Key).
    settings = make_settings(redis_nodes, batch_interval_seconds=60)
    with TestClient(create_app(settings)) as client:
        fast = client.post(f"{API}/visit/blog/caf%C3%A9?return=count&idempotency_key=k1")
        routed = client.post(f"{API}/visit/blog/caf%C3%A9?return=count&via=fastapi")
        again = client.post(f"{API}/visit/blog/caf%C3%A9?idempotency_key=k1&return=count")

    bodies = [answer.json() for answer in (fast, routed, again)]
    assert [list(body) for body in bodies] == [
        ["status", "message", "page_id", "timestamp", "visits"]
    ] * 3
    assert [body["visits"] for body in bodies] == [1, 2, 2], "k1's repeat counted none"
    assert {body["page_id"] for body in bodies} == {"blog/café"}
    assert {answer.headers["content-type"] for answer in (fast, routed)} == {"application/json"}


@pytest.mark.parametrize("page_id", ["%00", "a/%2E%2E/b", "x" * 513])
def test_a_bad_read_is_the_same_422_on_both_paths(client: TestClient, page_id: str) -> None:
    fast = client.get(f"{API}/visits/{page_id}")
    routed = client.get(f"{API}/visits/{page_id}?via=fastapi")

    assert fast.status_code == routed.status_code == 422
    assert fast.content == routed.content


def test_a_query_the_fast_path_does_not_know_is_left_to_fastapi_to_refuse(
    client: TestClient,
) -> None:
    answer = client.post(f"{API}/visit/page?return=everything")

    assert answer.status_code == 422
    assert answer.json()["error"] == "invalid_parameter"
    assert client.get(f"{API}/visits/page").json()["visits"] == 0
