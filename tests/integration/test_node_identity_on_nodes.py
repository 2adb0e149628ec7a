"""A node replaced by an empty one at the same address is noticed and reported."""

from __future__ import annotations

import time

import pytest
import redis
from fastapi.testclient import TestClient

from tests.conftest import SettingsFactory
from visit_counter.core.embedded_nodes import RedisNodeProcess
from visit_counter.main import create_app

pytestmark = pytest.mark.integration


def test_a_wiped_node_shows_in_status_and_metrics(
    redis_nodes: list[RedisNodeProcess], make_settings: SettingsFactory
) -> None:
    settings = make_settings(redis_nodes, health_check_interval_seconds=0.1)
    with TestClient(create_app(settings)) as client:
        assert client.get("/status").json()["redis_status"]["replaced_nodes"] == {}
        with redis.Redis(port=redis_nodes[1].port) as node:
            identity_before = node.hget("vc:node", "id")
            node.flushall()  # the server at this address now holds nothing
        replaced: dict[str, str] = {}
        for _ in range(100):
            replaced = client.get("/status").json()["redis_status"]["replaced_nodes"]
            if replaced:
                break
            time.sleep(0.05)
        assert set(replaced) == {redis_nodes[1].url}
        assert identity_before is not None
        assert identity_before.decode() in replaced[redis_nodes[1].url]
        metrics = client.get("/metrics").text
        assert f'pagevisits_node_replaced{{node="{redis_nodes[1].url}"}} 1.0' in metrics
        assert f'pagevisits_node_replaced{{node="{redis_nodes[0].url}"}} 0.0' in metrics
