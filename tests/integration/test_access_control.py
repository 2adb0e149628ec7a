"""ADMIN_TOKEN: DELETE, the JSON metrics and the /status detail need the bearer token.

POST and GET visits stay open. Without a token configured nothing changes, and the
OpenAPI document declares the security scheme and the 401 only when they apply.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from tests.conftest import SettingsFactory
from visit_counter.core.config import Settings, SettingsError, load_settings
from visit_counter.core.embedded_nodes import RedisNodeProcess
from visit_counter.main import create_app

pytestmark = pytest.mark.integration

API = "/api/v1/counter"
TOKEN = "s3cret-admin-token-for-tests-0123"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def client(
    redis_nodes: list[RedisNodeProcess], make_settings: SettingsFactory
) -> Iterator[TestClient]:
    with TestClient(create_app(make_settings(redis_nodes, admin_token=TOKEN))) as test_client:
        yield test_client


def assert_unauthorized(
    response_status: int, body: dict[str, str], headers: dict[str, str]
) -> None:
    assert response_status == 401
    assert body["status"] == "error"
    assert body["error"] == "unauthorized"
    assert "Bearer" in body["message"]
    assert headers["www-authenticate"] == "Bearer"


WRONG_AUTHORIZATIONS: list[str | bytes | None] = [
    None,
    "Bearer",
    "Bearer ",
    "Bearer wrong-token",
    f"Bearer {TOKEN}x",
    f"Bearer {TOKEN[:-1]}",
    f"Basic {TOKEN}",
    TOKEN,
    b"Bearer caf\xe9",  # not ASCII: must not reach compare_digest as text (500)
]


def test_admin_routes_refuse_a_missing_or_wrong_token(client: TestClient) -> None:
    client.post(f"{API}/visit/kept")
    for authorization in WRONG_AUTHORIZATIONS:
        headers: dict[str, str | bytes] = {}
        if authorization is not None:
            headers["Authorization"] = authorization
        for method, path in (("DELETE", f"{API}/visits/kept"), ("GET", f"{API}/metrics")):
            response = client.request(method, path, headers=headers)
            assert_unauthorized(response.status_code, response.json(), dict(response.headers))
            assert TOKEN not in response.text
            assert "wrong-token" not in response.text  # what was sent is never echoed
    assert client.get(f"{API}/visits/kept").json()["visits"] == 1  # nothing was reset


def test_the_right_token_opens_the_admin_routes(client: TestClient) -> None:
    client.post(f"{API}/visit/reset-me")
    assert client.get(f"{API}/metrics", headers=AUTH).status_code == 200
    response = client.delete(f"{API}/visits/reset-me", headers=AUTH)
    assert response.status_code == 200
    assert client.get(f"{API}/visits/reset-me").json()["visits"] == 0
    # The scheme name is case-insensitive (RFC 7235).
    lower = {"Authorization": f"bearer {TOKEN}"}
    assert client.delete(f"{API}/visits/reset-me", headers=lower).status_code == 200


def test_visits_stay_open(client: TestClient) -> None:
    assert client.post(f"{API}/visit/open").status_code == 200
    assert client.get(f"{API}/visits/open").json()["visits"] == 1


def test_status_without_the_token_says_only_the_status(client: TestClient) -> None:
    reduced = client.get("/status")
    assert reduced.status_code == 200  # health probes need no token
    assert reduced.json() == {"status": "healthy"}
    full = client.get("/status", headers=AUTH)
    assert full.status_code == 200
    assert full.json()["status"] == "healthy"
    assert full.json()["redis_status"]["healthy_nodes"] == 3
    wrong = client.get("/status", headers={"Authorization": "Bearer nope"})
    assert wrong.json() == {"status": "healthy"}


def test_openapi_declares_the_token_and_the_401_where_they_apply(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    assert spec["components"]["securitySchemes"]["AdminToken"]["scheme"] == "bearer"
    for method, path in (("delete", f"{API}/visits/{{page_id}}"), ("get", f"{API}/metrics")):
        operation = spec["paths"][path][method]
        assert operation["security"] == [{"AdminToken": []}]
        assert "401" in operation["responses"]
    for method, path in (
        ("post", f"{API}/visit/{{page_id}}"),
        ("get", f"{API}/visits/{{page_id}}"),
    ):
        operation = spec["paths"][path][method]
        assert "security" not in operation
        assert "401" not in operation["responses"]


def test_without_a_token_nothing_is_required(
    redis_nodes: list[RedisNodeProcess], make_settings: SettingsFactory
) -> None:
    with TestClient(create_app(make_settings(redis_nodes))) as client:
        client.post(f"{API}/visit/p")
        assert client.delete(f"{API}/visits/p").status_code == 200
        assert client.get(f"{API}/metrics").status_code == 200
        assert "redis_status" in client.get("/status").json()
        spec = client.get("/openapi.json").json()
        assert "securitySchemes" not in spec.get("components", {})
        assert "401" not in spec["paths"][f"{API}/visits/{{page_id}}"]["delete"]["responses"]


def test_the_token_is_never_logged(
    redis_nodes: list[RedisNodeProcess],
    make_settings: SettingsFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    settings = make_settings(redis_nodes, admin_token=TOKEN, debug=True)
    assert TOKEN not in repr(settings)
    assert TOKEN not in str(settings)
    with TestClient(create_app(settings)) as client:
        client.delete(f"{API}/visits/p", headers={"Authorization": "Bearer guess"})
        client.delete(f"{API}/visits/p", headers=AUTH)
    assert TOKEN not in caplog.text


@pytest.mark.parametrize(
    ("value", "problem"),
    [("short", "at least 16"), ("has a space in the middle!", "printable ASCII")],
)
def test_weak_or_unusable_tokens_are_refused_without_echoing_them(
    value: str, problem: str, monkeypatch: pytest.MonkeyPatch, tmp_path: object
) -> None:
    with pytest.raises(ValidationError):
        Settings(_env_file=None, admin_token=value)
    monkeypatch.chdir(str(tmp_path))
    monkeypatch.setenv("ADMIN_TOKEN", value)
    with pytest.raises(SettingsError, match=problem) as refused:
        load_settings()
    assert value not in str(refused.value)
