"""G8: `python -m app nodes add|remove` killed with SIGKILL at random points ends exact.

The mover is a real process, killed after a random delay (from 0 up to about
its run time, so kills land in its start, in each step of the move and in the
middle of the transfer). After every kill the nodes must still answer every
page's count exactly (the read formula of visit_counter/topology/scripts.py covers the
pages in flight) and hold no page twice. A mover that finished on its own
before its kill completed the move: the loop then runs the opposite move, so
the kills keep landing in moves. At the end the command runs once more to its
end (exit 0): the topology is stable and every page lives on its owner alone.

The RNG seed is printed; `MOVER_KILL_SEED=<seed>` replays a run's delays.
"""

from __future__ import annotations

import os
import random
import subprocess
import time
from collections import Counter
from collections.abc import Iterable
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
from visit_counter.analytics.keys import DAY_PREFIX
from visit_counter.core.embedded_nodes import RedisNodeProcess

pytestmark = [pytest.mark.fault, pytest.mark.serial]

PAGES = 10_000
RESET_PAGES = 250  # pages with a reset epoch, for the move to carry to their new owner


def rng_for_this_run() -> random.Random:
    seed = int(os.environ.get("MOVER_KILL_SEED") or random.randrange(2**32))
    print(f"MOVER_KILL_SEED={seed}")
    return random.Random(seed)


def flush_node(node: RedisNodeProcess) -> None:
    """What the operator does before adding back a node that was removed (it refuses data)."""
    with redis.Redis(port=node.port) as client:
        client.flushall()


def check_exact(nodes: list[RedisNodeProcess], expected: Counter[str], when: str) -> str:
    """Every count exact and no page on two nodes; returns the stored state, for the log."""
    assert read_counts(nodes, expected) == expected, when
    where = placement(nodes)  # fails on a page held twice
    topology = newest_topology(nodes)
    assert topology is not None
    if topology.state == "stable":
        assert where == owners(topology.members, expected), when
    else:
        # Mid-move, each page is on its old owner or its new one (or in flight: nowhere).
        old = topology.previous_ring
        assert old is not None
        for page, url in where.items():
            assert url in (topology.ring.owner(page), old.owner(page)), (when, page)
    return f"v{topology.version} {topology.state}"


def check_settled(
    nodes: list[RedisNodeProcess], members: set[str], expected: Counter[str], filed: Counter[str]
) -> None:
    """A finished move: stable, the expected members, each page on its owner alone, and
    each page's days (`filed`: its visits, reset ones too) summed over the members once:
    a removed node's were handed over exactly once however often the mover died."""
    topology = newest_topology(nodes)
    assert topology is not None
    assert topology.state == "stable"
    assert set(topology.members) == members
    assert read_counts(nodes, expected) == expected
    assert placement(nodes) == owners(sorted(members), expected)
    assert days_filed([node for node in nodes if node.url in members], filed) == filed


def days_filed(nodes: list[RedisNodeProcess], pages: Iterable[str]) -> Counter[str]:
    """Each page's visits over all its days, summed over `nodes`."""
    pages = set(pages)
    filed: Counter[str] = Counter()
    for node in nodes:
        with redis.Redis(port=node.port) as client:
            for key in client.scan_iter(DAY_PREFIX + "*"):
                for page, value in client.hgetall(key).items():
                    if page.decode() in pages:
                        filed[page.decode()] += int(value)
    return filed


async def kill_the_mover_in_a_loop(
    tmp_path: Path,
    nodes: list[RedisNodeProcess],
    listed: list[RedisNodeProcess],
    moved: RedisNodeProcess,
    first: str,
    kills: int,
    make_settings: SettingsFactory,
) -> None:
    """Kill `nodes add|remove moved.url` `kills` times (alternating the two moves whenever
    one completes before its kill), then run the current one to its end."""
    rng = rng_for_this_run()
    settings = make_settings(listed)
    counts = Counter({f"page-{number}": number % 3 + 1 for number in range(PAGES)})
    wiped = [f"page-{number}" for number in range(0, PAGES, PAGES // RESET_PAGES)]
    await seed_counts(settings, counts, reset_first=wiped)
    filed = counts + Counter(wiped)  # a reset clears the count, not the days it was visited
    with_moved = {node.url for node in nodes}
    without_moved = with_moved - {moved.url}
    assert check_exact(nodes, counts, "before the move") == "v1 stable"
    env = {"redis_nodes": node_urls(listed), "redis_timeout": 1, "redis_retry_attempts": 1}

    # About the mover's run time: its start and a read of every page (what `plan` does),
    # plus some for the writes.
    started = time.perf_counter()
    plan = run_app("nodes", "plan", first, moved.url, cwd=tmp_path, **env)
    assert plan.returncode == 0, plan.stderr
    longest = 1.5 * (time.perf_counter() - started)
    print(f"kill delays: uniform in [0, {longest:.2f}] s")

    action = first
    killed: Counter[str] = Counter()
    finished: Counter[str] = Counter()
    states: Counter[str] = Counter()
    while sum(killed.values()) < kills:
        delay = rng.uniform(0, longest)
        mover = start_app("nodes", action, moved.url, cwd=tmp_path, **env)
        try:
            _, err = mover.communicate(timeout=delay)
        except subprocess.TimeoutExpired:
            mover.kill()
            mover.communicate()
            killed[action] += 1
            when = f"{action} killed after {delay:.3f} s"
        else:
            assert mover.returncode == 0, err.decode(errors="replace")
            when = f"{action} finished before its kill ({delay:.3f} s)"
        state = check_exact(nodes, counts, when)
        states[state] += 1
        print(f"{when}: {state}")
        topology = newest_topology(nodes)
        assert topology is not None
        target = with_moved if action == "add" else without_moved
        if topology.state == "stable" and set(topology.members) == target:
            finished[action] += 1
            check_settled(nodes, target, counts, filed)
            action = "remove" if action == "add" else "add"
            if action == "add":
                flush_node(moved)
    print(f"kills {dict(killed)}, moves completed in the loop {dict(finished)}")
    print(f"states after the runs: {dict(states)}")

    done = run_app("nodes", action, moved.url, cwd=tmp_path, **env)
    assert done.returncode == 0, done.stdout + done.stderr
    final = with_moved if action == "add" else without_moved
    check_settled(nodes, final, counts, filed)
    status = run_app("nodes", "status", cwd=tmp_path, **env)
    assert status.returncode == 0, status.stderr
    lines = status.stdout.splitlines()
    assert lines[0].endswith(": stable"), status.stdout
    assert {line.strip() for line in lines[1:]} == final
    if action == "remove":
        assert page_count(moved) == 0


def page_count(node: RedisNodeProcess) -> int:
    with redis.Redis(port=node.port) as client:
        return len(list(client.scan_iter(match="visits:*", count=5000)))


async def test_nodes_add_killed_at_random_points_ends_exact(
    tmp_path: Path, node_factory: NodeFactory, make_settings: SettingsFactory
) -> None:
    nodes = node_factory(4)
    await kill_the_mover_in_a_loop(
        tmp_path, nodes, nodes[:3], nodes[3], "add", kills=20, make_settings=make_settings
    )


async def test_nodes_remove_killed_at_random_points_ends_exact(
    tmp_path: Path, node_factory: NodeFactory, make_settings: SettingsFactory
) -> None:
    nodes = node_factory(3)
    await kill_the_mover_in_a_loop(
        tmp_path, nodes, nodes, nodes[0], "remove", kills=8, make_settings=make_settings
    )
