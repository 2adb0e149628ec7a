"""Helpers for tests that change the node set with real processes.

- `app_env` / `run_app` / `start_app`: `python -m app ...` as a child process with
  only the given settings in its environment (no `.env`, no exported settings).
- `seed_counts`: store counts on the nodes through an in-process counter (the
  service's own code), before a move.
- `read_counts`: every page's count as a reader computes it from what the nodes
  hold, whatever the state of the move (the formula of visit_counter/topology/scripts.py).
- `page_keys`, `newest_topology`: what each node holds.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import redis

from tests.support.service import REPO_ROOT
from visit_counter.core.config import Settings
from visit_counter.core.consistent_hash import ConsistentHashRing
from visit_counter.core.embedded_nodes import RedisNodeProcess
from visit_counter.core.node_identity import TOPOLOGY_KEY
from visit_counter.services.batch import PAGE_KEY_PREFIX
from visit_counter.services.running import running_counter
from visit_counter.topology.document import Topology
from visit_counter.topology.scripts import move_keys

SETTING_KEYS = {name.upper() for name in Settings.model_fields}


def app_env(**settings: object) -> dict[str, str]:
    """This environment without any service setting, plus `settings` (upper-cased keys)."""
    env = {key: value for key, value in os.environ.items() if key.upper() not in SETTING_KEYS}
    env.update({key.upper(): str(value) for key, value in settings.items()})
    env["PYTHONPATH"] = str(REPO_ROOT)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def start_app(*arguments: str, cwd: Path, **settings: object) -> subprocess.Popen[bytes]:
    """`python -m app ARGUMENTS` running in the background (stdout, stderr piped)."""
    return subprocess.Popen(
        [sys.executable, "-m", "app", *arguments],
        cwd=cwd,  # a directory without `.env`
        env=app_env(**settings),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def run_app(
    *arguments: str, cwd: Path, timeout: float = 60.0, **settings: object
) -> subprocess.CompletedProcess[str]:
    """`python -m app ARGUMENTS` to its end; stdout and stderr decoded."""
    process = start_app(*arguments, cwd=cwd, **settings)
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        out, err = process.communicate()
        raise AssertionError(
            f"python -m app {' '.join(arguments)} did not end within {timeout} s:\n"
            f"{out.decode(errors='replace')}{err.decode(errors='replace')}"
        ) from None
    # Decoded by hand: text=True would turn the progress bar's carriage returns into newlines.
    return subprocess.CompletedProcess(
        process.args, process.returncode, out.decode(errors="replace"), err.decode(errors="replace")
    )


def client_for(node: RedisNodeProcess, password: str | None = None) -> redis.Redis:
    return redis.Redis(port=node.port, password=password, decode_responses=True)


def page_keys(node: RedisNodeProcess, password: str | None = None) -> dict[str, int]:
    """The page counts the node holds (page id -> count)."""
    with client_for(node, password) as client:
        keys = list(client.scan_iter(match=PAGE_KEY_PREFIX + "*", count=5000))
        values = client.mget(keys) if keys else []
    return {
        key.removeprefix(PAGE_KEY_PREFIX): int(value)
        for key, value in zip(keys, values, strict=True)
        if value is not None
    }


def newest_topology(
    nodes: Iterable[RedisNodeProcess], password: str | None = None
) -> Topology | None:
    """The highest version any of `nodes` holds (what a starting process follows)."""
    found: list[Topology] = []
    for node in nodes:
        with client_for(node, password) as client:
            raw = client.hget(TOPOLOGY_KEY, "doc")
        if raw is not None:
            found.append(Topology.from_json(raw))
    return max(found, key=lambda topology: topology.version, default=None)


def read_counts(
    nodes: Sequence[RedisNodeProcess], pages: Iterable[str], password: str | None = None
) -> Counter[str]:
    """Each page's count as a reader at the newest stored topology computes it.

    While a move is under way (`moving`) a moving page's count is
    (source count + the move's `out`) + (target count - the move's `in`): a page
    the mover has taken from its source but not yet handed to its target counts
    once. Otherwise it is the count on the page's owner. Nodes are matched to ring
    labels by their address (127.0.0.1 and their port).
    """
    topology = newest_topology(nodes, password)
    assert topology is not None, "no node holds a topology"
    by_label: dict[str, RedisNodeProcess] = {}
    for label, address in topology.addresses.items():
        port = int(address.rsplit(":", 1)[1].split("/")[0])
        by_label[label] = next(node for node in nodes if node.port == port)
    held = {label: page_keys(node, password) for label, node in by_label.items()}
    _, out_key, _, in_key, _ = move_keys(topology.move)
    outs: dict[str, dict[str, str]] = {}
    ins: dict[str, dict[str, str]] = {}
    for label, node in by_label.items():
        with client_for(node, password) as client:
            outs[label] = client.hgetall(out_key)
            ins[label] = client.hgetall(in_key)
    counts: Counter[str] = Counter()
    for page in pages:
        owner, source = topology.read_owners(page)
        value = held[owner].get(page, 0)
        if source is not None:
            value += held[source].get(page, 0) + int(outs[source].get(page, 0))
            value -= int(ins[owner].get(page, 0))
        if value:
            counts[page] = value
    return counts


def owners(labels: Sequence[str], pages: Iterable[str], virtual_nodes: int = 100) -> dict[str, str]:
    """page -> its owner on a ring of `labels` (independent of what the nodes hold)."""
    ring = ConsistentHashRing(list(labels), virtual_nodes)
    return {page: ring.owner(page) for page in pages}


def placement(nodes: Sequence[RedisNodeProcess], password: str | None = None) -> dict[str, str]:
    """page -> the node URL holding it; fails when a page is held by two nodes."""
    where: dict[str, str] = {}
    for node in nodes:
        for page in page_keys(node, password):
            assert page not in where, f"{page} is on {where[page]} and on {node.url}"
            where[page] = node.url
    return where


async def seed_counts(
    settings: Settings, counts: Mapping[str, int], reset_first: Iterable[str] = ()
) -> None:
    """Store `counts` through an in-process counter (as the service would), then close it.

    Pages in `reset_first` get visits that a reset then wipes, before their `counts`
    (so the nodes hold reset epochs for the move to carry along).
    """
    async with running_counter(settings) as counter:
        wiped = list(reset_first)
        for page in wiped:
            counter.record_visit(page)
        await counter.flush()
        for page in wiped:
            await counter.reset(page)
        for page, count in counts.items():
            for _ in range(count):
                counter.record_visit(page)
        await counter.flush()
