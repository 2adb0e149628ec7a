"""Shared fixtures: real Redis-protocol nodes on free loopback ports, and settings for them.

The session's three nodes are shared by integration and end-to-end tests and
flushed before each test that asks for them. Fault tests that kill or pause a
node get their own nodes (`node_factory`), so a fault never leaks into the
next test. Nothing here ever touches a server on a fixed port.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.support.cluster import LocalCluster
from tests.support.postgres import PgProxy, PgSchema, pg_schema
from tests.support.service import ServiceProcess
from visit_counter.core.config import Settings
from visit_counter.core.embedded_nodes import RedisNodeProcess, free_port

NodeFactory = Callable[..., list[RedisNodeProcess]]
ClusterFactory = Callable[..., LocalCluster]
SettingsFactory = Callable[..., Settings]


def start_nodes(count: int, root: Path, extra_args: Sequence[str] = ()) -> list[RedisNodeProcess]:
    nodes: list[RedisNodeProcess] = []
    try:
        for _ in range(count):
            port = free_port()
            node = RedisNodeProcess(port, root / f"node-{port}", extra_args=extra_args)
            node.start()
            nodes.append(node)
    except Exception:
        for node in nodes:
            node.stop()
        raise
    return nodes


@pytest.fixture(scope="session")
def session_nodes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[RedisNodeProcess]]:
    nodes = start_nodes(3, tmp_path_factory.mktemp("session-nodes"))
    yield nodes
    for node in nodes:
        node.stop()


@pytest.fixture
def redis_nodes(session_nodes: list[RedisNodeProcess]) -> list[RedisNodeProcess]:
    """The session's three nodes, emptied for this test."""
    for node in session_nodes:
        with redis.Redis(port=node.port) as client:
            client.flushall()
    return session_nodes


@pytest.fixture
def node_factory(tmp_path: Path) -> Iterator[NodeFactory]:
    """Start N nodes of this test's own; all are stopped at teardown, whatever state.

    `extra_args` go to every one of the N servers (e.g. `["--appendonly", "no"]`).
    """
    started: list[RedisNodeProcess] = []

    def factory(count: int, extra_args: Sequence[str] = ()) -> list[RedisNodeProcess]:
        nodes = start_nodes(count, tmp_path / f"nodes-{len(started)}", extra_args)
        started.extend(nodes)
        return nodes

    yield factory
    for node in started:
        node.stop()


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """One 6-node Redis Cluster (3 primaries, 3 replicas) for the whole session."""
    cluster = LocalCluster(tmp_path_factory.mktemp("session-cluster"))
    cluster.start()
    yield cluster
    cluster.stop()


@pytest.fixture
def cluster(redis_cluster: LocalCluster) -> LocalCluster:
    """The session's cluster, emptied for this test. Tests that kill, pause or reshard
    use `cluster_factory` instead, so the next test finds the cluster as it was."""
    redis_cluster.wait_stable()
    redis_cluster.flush()
    return redis_cluster


@pytest.fixture
def cluster_factory(tmp_path: Path) -> Iterator[ClusterFactory]:
    """Start a cluster of this test's own (started and stable when returned); every one is
    stopped at teardown, whatever the test did to it.

    `node_timeout_ms` is `cluster-node-timeout` (default 2000); `extra_args` go to all six servers.
    """
    started: list[LocalCluster] = []

    def factory(node_timeout_ms: int = 2000, extra_args: Sequence[str] = ()) -> LocalCluster:
        cluster = LocalCluster(tmp_path / f"cluster-{len(started)}", node_timeout_ms, extra_args)
        cluster.start()
        started.append(cluster)
        return cluster

    yield factory
    for cluster in started:
        cluster.stop()


def node_urls(nodes: list[RedisNodeProcess]) -> str:
    return ",".join(node.url for node in nodes)


@pytest.fixture
def make_settings(tmp_path: Path) -> SettingsFactory:
    """Settings for the given nodes with test-friendly timings; keyword overrides win."""

    def factory(nodes: list[RedisNodeProcess], **overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "redis_nodes": node_urls(nodes),
            "data_dir": tmp_path / "data",
            "prometheus_dir": tmp_path / "prometheus",  # not /dev/shm
            "batch_interval_seconds": 0.2,
            "health_check_interval_seconds": 0.2,
            "redis_timeout": 1.0,
            "redis_retry_attempts": 1,
            "shutdown_flush_timeout_seconds": 2.0,
        }
        values.update(overrides)
        return Settings(_env_file=None, **values)

    return factory


ServiceFactory = Callable[..., ServiceProcess]


def service_env(
    nodes: list[RedisNodeProcess], data_dir: Path, **overrides: object
) -> dict[str, str]:
    env = {
        "REDIS_NODES": ",".join(node.url for node in nodes),
        "DATA_DIR": str(data_dir),
        "BATCH_INTERVAL_SECONDS": "0.3",
        "HEALTH_CHECK_INTERVAL_SECONDS": "0.3",
        "REDIS_TIMEOUT": "1",
        "REDIS_RETRY_ATTEMPTS": "1",
        "SHUTDOWN_FLUSH_TIMEOUT_SECONDS": "3",
    }
    env.update({key.upper(): str(value) for key, value in overrides.items()})
    return env


@pytest.fixture
def service_factory(tmp_path: Path) -> Iterator[ServiceFactory]:
    """Start services on the given nodes; kill leftovers.

    Data goes under this test's tmp dir unless `data_dir` says where; the Prometheus
    files go to `<tmp dir>/prometheus` (not /dev/shm) unless `prometheus_dir` does.
    `open_files` is the (soft, hard) RLIMIT_NOFILE the service starts with; `app_dir` the
    directory whose `app` package runs (default: this checkout); keyword overrides are
    settings.
    """
    started: list[ServiceProcess] = []

    def factory(
        nodes: list[RedisNodeProcess],
        workers: int = 1,
        data_dir: Path | None = None,
        open_files: tuple[int, int] | None = None,
        app_dir: Path | None = None,
        **overrides: object,
    ) -> ServiceProcess:
        overrides = {"prometheus_dir": tmp_path / "prometheus", **overrides}
        env = service_env(nodes, data_dir or tmp_path / "data", **overrides)
        log_path = tmp_path / f"service-{len(started)}.log"
        service = ServiceProcess(
            env, log_path, workers=workers, open_files=open_files, app_dir=app_dir
        )
        service.start()
        started.append(service)
        return service

    yield factory
    for service in started:
        service.kill()


@pytest.fixture
def postgres() -> Iterator[PgSchema]:
    """A schema of its own on the machine's PostgreSQL, dropped after the test."""
    with pg_schema() as created:
        yield created


@pytest.fixture
async def pg_proxy() -> AsyncIterator[PgProxy]:
    """A proxy in front of that PostgreSQL, for lost replies and outages."""
    proxy = PgProxy()
    await proxy.start()
    yield proxy
    await proxy.aclose()
