"""`python -m app` in cluster mode: serve refuses a standalone node; `nodes` shows the cluster."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import NodeFactory
from tests.e2e.test_node_refusals import refusal_line
from tests.support.cluster import LocalCluster
from tests.support.topology import run_app
from visit_counter.core.embedded_nodes import free_port

pytestmark = [pytest.mark.e2e, pytest.mark.cluster]


def test_serve_in_cluster_mode_refuses_a_standalone_node(
    tmp_path: Path, node_factory: NodeFactory
) -> None:
    [node] = node_factory(1)
    done = run_app(
        "serve", "--port", str(free_port()), cwd=tmp_path, timeout=30, redis_mode="cluster",
        redis_nodes=node.url, data_dir=tmp_path / "data", prometheus_dir=tmp_path / "prom",
    )  # fmt: skip
    assert done.returncode == 2
    assert refusal_line(done.stderr) == (
        f"visit-counter: REDIS_NODES entry 1 ({node.url}) is a standalone server "
        "(cluster_enabled:0): REDIS_MODE=cluster needs nodes of a Redis Cluster; list them, "
        "or set REDIS_MODE=ring"
    )


def test_nodes_status_shows_the_cluster_and_moves_are_refused(
    tmp_path: Path, cluster: LocalCluster
) -> None:
    settings = {"redis_mode": "cluster", "redis_nodes": cluster.startup_urls[0]}
    status = run_app("nodes", "status", cwd=tmp_path, **settings)
    assert status.returncode == 0, status.stderr
    lines = status.stdout.splitlines()
    assert lines[0] == "redis cluster: cluster_state ok, batches wait for 1 replica(s)"
    assert sum(" primary " in line for line in lines) == 3
    assert sum(" replica of 127.0.0.1:" in line for line in lines) == 3

    ping = run_app("nodes", cwd=tmp_path, **settings)
    assert ping.returncode == 0
    assert "1 of 1 nodes up" in ping.stdout

    add = run_app("nodes", "add", "redis://127.0.0.1:1", cwd=tmp_path, **settings)
    assert add.returncode == 2
    assert "the cluster places its slots itself" in refusal_line(add.stderr)
