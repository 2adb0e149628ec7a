"""`nodes add --max-rate`: a paced move still ends exact, with every page on its owner."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import NodeFactory, SettingsFactory, node_urls
from tests.support.topology import newest_topology, page_keys, placement, run_app, seed_counts

pytestmark = [pytest.mark.e2e, pytest.mark.serial]


async def test_a_paced_add_moves_every_page_exactly(
    node_factory: NodeFactory, make_settings: SettingsFactory, tmp_path: Path
) -> None:
    nodes = node_factory(3)
    settings = make_settings(nodes[:2])
    counts = {f"paced-{number}": number % 7 + 1 for number in range(3000)}
    await seed_counts(settings, counts)

    added = run_app(
        "nodes",
        "add",
        nodes[2].url,
        "--max-rate",
        "2000",
        cwd=tmp_path,
        redis_nodes=node_urls(nodes[:2]),
    )

    assert added.returncode == 0, added.stderr
    assert "moved " in added.stdout
    topology = newest_topology(nodes)
    assert topology is not None
    assert topology.state == "stable"
    assert topology.members == tuple(node.url for node in nodes)
    where = placement(nodes)
    assert set(where) == set(counts)
    assert all(where[page] == topology.ring.owner(page) for page in counts)
    stored: dict[str, int] = {}
    for node in nodes:
        stored.update(page_keys(node))
    assert stored == counts
