"""The service mounted inside another FastAPI app: a clear 503 while its lifespan has not
run (it used to be a 500), and a working service once the host's lifespan enters it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from tests.conftest import SettingsFactory
from visit_counter.core.embedded_nodes import RedisNodeProcess
from visit_counter.main import create_app

pytestmark = pytest.mark.integration

VISIT = "/counter/api/v1/counter/visit/mounted"
VISITS = "/counter/api/v1/counter/visits/mounted"


def test_a_mounted_service_whose_lifespan_never_ran_says_so(
    redis_nodes: list[RedisNodeProcess], make_settings: SettingsFactory
) -> None:
    host = FastAPI()
    host.mount("/counter", create_app(make_settings(redis_nodes)))
    with TestClient(host) as client:
        answer = client.post(VISIT)
    assert answer.status_code == 503
    assert answer.json()["error"] == "not_started"
    assert "lifespan_context" in answer.json()["message"]


def test_a_host_that_enters_the_services_lifespan_serves_it_mounted(
    redis_nodes: list[RedisNodeProcess], make_settings: SettingsFactory
) -> None:
    service = create_app(make_settings(redis_nodes))

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, object]]:
        async with service.router.lifespan_context(service) as state:
            yield state  # type: ignore[misc]

    host = FastAPI(lifespan=lifespan)
    host.mount("/counter", service)
    with TestClient(host) as client:
        assert client.post(VISIT).status_code == 200
        assert client.post(VISIT + "?return=count").json()["visits"] == 2
        assert client.get(VISITS).json()["visits"] == 2
        assert client.get("/counter/api/v1/counter/visits/other").json()["visits"] == 0
