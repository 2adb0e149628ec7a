"""Wall time of one flush of 10,000 distinct pages (issue 4: < 100 ms on the three nodes;
issue 11: < 200 ms on a Redis Cluster).

Runs the real engine in-process (`VisitCounter.flush()`, which sends every node, or
every primary of a cluster, its part in parallel and waits for all) against the
section's nodes, after its HTTP runs, so nothing else competes for them.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from pathlib import Path
from typing import Literal

from visit_counter.core.config import Settings
from visit_counter.services.running import running_counter

PAGES = 10_000
RedisMode = Literal["ring", "cluster"]


async def _flush_times(
    node_urls: str, data_dir: Path, repeats: int, mode: RedisMode
) -> list[float]:
    settings = Settings(
        _env_file=None,
        redis_mode=mode,
        redis_nodes=node_urls,
        # On a cluster, each primary's part ends with WAIT 1, as the service's default does
        # with replicas (ignored in ring mode).
        redis_min_replicas_ack=1 if mode == "cluster" else None,
        data_dir=data_dir,
        batch_interval_seconds=3600,  # no background flush: each flush below is timed alone
        batch_size_limit=PAGES * 2,
        max_pending_pages_per_node=PAGES * 2,
        enable_metrics=False,
    )
    times = []
    async with running_counter(settings) as counter:
        for repeat in range(repeats + 1):
            for number in range(PAGES):
                counter.record_visit(f"flush-bench-{number}")
            started = time.perf_counter()
            await counter.flush()
            if repeat:  # the first flush also loads the script on each node
                times.append((time.perf_counter() - started) * 1000)
    return times


def measure_flush_ms(
    node_urls: str, data_dir: Path, repeats: int = 5, mode: RedisMode = "ring"
) -> dict[str, float]:
    """`mode` as REDIS_MODE: "cluster" when `node_urls` are startup nodes of a cluster."""
    times = asyncio.run(_flush_times(node_urls, data_dir, repeats, mode))
    return {"median": statistics.median(times), "max": max(times), "repeats": len(times)}
