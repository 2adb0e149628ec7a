"""G7: node sets that cannot work are refused up front, with exit status 2 and one line.

`python -m app serve` refuses one server listed twice (under two spellings) and
a Redis Cluster node; `nodes remove` refuses to remove the last node, and
`nodes add` a node that is a member already or a Redis Cluster node. Nothing
is changed on the nodes by a refused command.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import redis

from tests.conftest import NodeFactory, node_urls
from tests.support.topology import newest_topology, run_app
from visit_counter.core.embedded_nodes import RedisNodeProcess, free_port
from visit_counter.core.node_identity import TOPOLOGY_KEY

pytestmark = pytest.mark.e2e


def cluster_node(node_factory: NodeFactory) -> RedisNodeProcess:
    """A Redis Cluster node (no slots: it need not serve anything to be refused)."""
    [node] = node_factory(
        1,
        extra_args=[
            "--cluster-enabled", "yes",
            "--cluster-config-file", "cluster-nodes.conf",  # in the node's own directory
            "--cluster-port", str(free_port()),  # the default, port + 10000, may not exist
        ],
    )  # fmt: skip
    return node


def refusal_line(stderr: str) -> str:
    """The one `visit-counter: ...` line a refused command prints."""
    lines = [line for line in stderr.splitlines() if line.startswith("visit-counter: ")]
    assert len(lines) == 1, stderr
    return lines[0]


def unchanged(nodes: list[RedisNodeProcess]) -> None:
    """The topology the first start stored, still version 1 with the same members."""
    topology = newest_topology(nodes)
    assert topology is not None
    assert topology.version == 1
    assert topology.state == "stable"
    assert list(topology.members) == [node.url for node in nodes]


def serve(tmp_path: Path, redis_nodes: str) -> tuple[int, str]:
    done = run_app(
        "serve", "--port", str(free_port()), cwd=tmp_path, timeout=30,
        redis_nodes=redis_nodes, data_dir=tmp_path / "data",
        prometheus_dir=tmp_path / "prometheus",
    )  # fmt: skip
    return done.returncode, done.stderr


@pytest.mark.parametrize(
    ("spelling", "refusal"),
    [
        # Told apart only by asking the server (INFO run_id): the line names both URLs.
        ("redis://localhost:{port}", "REDIS_NODES entries 2 ({first}) and 3 ({again}) are the "
         "same server and db"),
        # The same address spelled twice: refused by the settings, by position (a URL may
        # hold a password).
        ("redis://127.0.0.1:{port}/0", "invalid configuration: REDIS_NODES: nodes 2 and 3 are "
         "the same server"),
    ],
)  # fmt: skip
def test_serve_refuses_one_server_listed_twice(
    spelling: str, refusal: str, tmp_path: Path, node_factory: NodeFactory
) -> None:
    other, node = node_factory(2)
    again = spelling.format(port=node.port)
    code, stderr = serve(tmp_path, f"{other.url},{node.url},{again}")

    assert code == 2, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("visit-counter: " + refusal.format(first=node.url, again=again))
    for checked in (other, node):
        with redis.Redis(port=checked.port) as client:
            assert not client.exists(TOPOLOGY_KEY)  # refused before anything was stored


def test_serve_refuses_a_redis_cluster_node(tmp_path: Path, node_factory: NodeFactory) -> None:
    [standalone] = node_factory(1)
    cluster = cluster_node(node_factory)
    code, stderr = serve(tmp_path, f"{standalone.url},{cluster.url}")

    assert code == 2, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith(f"visit-counter: REDIS_NODES entry 2 ({cluster.url}) is a Redis")
    assert "Redis Cluster" in lines[0]
    assert "standalone" in lines[0]


def test_nodes_remove_refuses_to_remove_the_last_node(
    tmp_path: Path, node_factory: NodeFactory
) -> None:
    nodes = node_factory(1)
    done = run_app("nodes", "remove", nodes[0].url, cwd=tmp_path, redis_nodes=node_urls(nodes))

    assert done.returncode == 2, done.stdout + done.stderr
    assert "the last node" in refusal_line(done.stderr)
    unchanged(nodes)


@pytest.mark.parametrize("spelling", ["{url}", "redis://localhost:{port}/0"])
def test_nodes_add_refuses_a_member(
    spelling: str, tmp_path: Path, node_factory: NodeFactory
) -> None:
    nodes = node_factory(2)
    member = spelling.format(url=nodes[1].url, port=nodes[1].port)
    done = run_app("nodes", "add", member, cwd=tmp_path, redis_nodes=node_urls(nodes))

    assert done.returncode == 2, done.stdout + done.stderr
    line = refusal_line(done.stderr)
    assert "a node already" in line or "the same server" in line, line
    unchanged(nodes)


def test_nodes_add_refuses_a_redis_cluster_node(tmp_path: Path, node_factory: NodeFactory) -> None:
    nodes = node_factory(2)
    cluster = cluster_node(node_factory)
    done = run_app("nodes", "add", cluster.url, cwd=tmp_path, redis_nodes=node_urls(nodes))

    assert done.returncode == 2, done.stdout + done.stderr
    assert "Redis Cluster" in refusal_line(done.stderr)
    unchanged(nodes)
