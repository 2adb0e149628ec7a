"""G8: a node that stops answering in the middle of `python -m app nodes add`.

The fault is injected while the transfer runs: the mover process itself is
frozen (SIGSTOP) as soon as it has taken its first pages from a source, the
node is paused or killed, and the mover goes on. With a short `--timeout` the
mover gives up with exit status 3 ("paused") and a rerun, once the node is
back, finishes the move; without one it waits for the node. Either way every
count ends exact and on its owner alone.
"""

from __future__ import annotations

import os
import signal
import time
from collections import Counter
from pathlib import Path

import pytest
import redis

from tests.conftest import NodeFactory, SettingsFactory, node_urls
from tests.support.topology import (
    newest_topology,
    owners,
    placement,
    read_counts,
    run_app,
    seed_counts,
    start_app,
)
from visit_counter.core.embedded_nodes import RedisNodeProcess
from visit_counter.topology.scripts import move_keys

pytestmark = [pytest.mark.fault, pytest.mark.serial]

PAGES = 20_000
# Acknowledged writes survive a SIGKILL of a node only when each is on disk first.
DURABLE = ["--appendfsync", "always"]


def freeze_mover_mid_transfer(mover_pid: int, sources: list[RedisNodeProcess]) -> None:
    """Wait until the mover has taken pages from a source (the move's `out` hash, version 2),
    then SIGSTOP it there. Fails if the mover ended first."""
    _, out_key, _, _, _ = move_keys(2)
    clients = [redis.Redis(port=node.port) for node in sources]
    try:
        deadline = time.monotonic() + 30
        while not any(client.hlen(out_key) for client in clients):
            assert time.monotonic() < deadline, "the transfer never started"
            time.sleep(0.001)
        os.kill(mover_pid, signal.SIGSTOP)
    finally:
        for client in clients:
            client.close()


def check_done(nodes: list[RedisNodeProcess], counts: Counter[str]) -> None:
    topology = newest_topology(nodes)
    assert topology is not None
    assert topology.state == "stable"
    assert set(topology.members) == {node.url for node in nodes}
    assert read_counts(nodes, counts) == counts
    assert placement(nodes) == owners([node.url for node in nodes], counts)


@pytest.mark.parametrize("fault", ["pause", "kill"])
async def test_a_target_down_mid_move_pauses_the_mover_and_a_rerun_finishes_exact(
    fault: str, tmp_path: Path, node_factory: NodeFactory, make_settings: SettingsFactory
) -> None:
    """A killed target loses the hand-over the mover was sending it: the pages the mover
    had taken for it are in flight, and the rerun must hand them over."""
    nodes = node_factory(4, extra_args=DURABLE)
    old, target = nodes[:3], nodes[3]
    counts = Counter({f"page-{number}": number % 4 + 1 for number in range(PAGES)})
    await seed_counts(make_settings(old), counts)
    env = {"redis_nodes": node_urls(old), "redis_timeout": 0.5, "redis_connect_timeout": 0.5}

    mover = start_app("nodes", "add", target.url, "--timeout", "2", cwd=tmp_path, **env)
    try:
        freeze_mover_mid_transfer(mover.pid, old)
        if fault == "pause":
            target.pause()  # keeps what the mover sends it, answers nothing
        else:
            target.kill()  # loses what the mover sends it
        os.kill(mover.pid, signal.SIGCONT)
        out, err = mover.communicate(timeout=60)
    finally:
        if mover.poll() is None:
            mover.kill()
            mover.communicate()
    assert mover.returncode == 3, out.decode() + err.decode()
    last_line = err.decode().strip().splitlines()[-1]
    assert "did not answer" in last_line
    assert "paused" in last_line
    assert "run the same command again" in last_line

    status = run_app("nodes", "status", cwd=tmp_path, **env)
    assert status.returncode == 0, status.stderr
    assert status.stdout.startswith("topology version 3: moving\n"), status.stdout
    assert "move under way (moving)" in status.stdout

    if fault == "pause":
        target.resume()
    else:
        target.start()
    mid_move = newest_topology(nodes)
    assert mid_move is not None
    assert mid_move.state == "moving"
    assert read_counts(nodes, counts) == counts  # exact in the middle of the move too
    rerun = run_app("nodes", "add", target.url, cwd=tmp_path, **env)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert "topology version 4" in rerun.stdout
    check_done(nodes, counts)


@pytest.mark.parametrize("role", ["target", "source"])
async def test_the_mover_waits_for_a_node_killed_mid_move_and_ends_exact(
    role: str, tmp_path: Path, node_factory: NodeFactory, make_settings: SettingsFactory
) -> None:
    nodes = node_factory(4, extra_args=DURABLE)
    old, target = nodes[:3], nodes[3]
    victim = target if role == "target" else old[1]
    counts = Counter({f"page-{number}": number % 4 + 1 for number in range(PAGES)})
    await seed_counts(make_settings(old), counts)
    env = {"redis_nodes": node_urls(old), "redis_timeout": 0.5, "redis_connect_timeout": 0.5}

    mover = start_app("nodes", "add", target.url, cwd=tmp_path, **env)  # waits up to 600 s
    try:
        freeze_mover_mid_transfer(mover.pid, old)
        victim.kill()
        os.kill(mover.pid, signal.SIGCONT)
        time.sleep(1.5)  # the mover meets the dead node and waits for it
        assert mover.poll() is None, "the mover ended while a node of the move was down"
        victim.start()
        out, err = mover.communicate(timeout=60)
    finally:
        if mover.poll() is None:
            mover.kill()
            mover.communicate()
    assert mover.returncode == 0, out.decode() + err.decode()
    assert f"waiting for node {victim.url}" in err.decode()
    check_done(nodes, counts)
