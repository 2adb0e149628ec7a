"""Issue 15's scale figures, each in a process of its own so its memory is its own:

- RSS of a counter holding 1,000,000 distinct pending pages (goal: <= 200 MB);
- wall time of one flush of 100,000 distinct pages to the three nodes (goal: < 1 s).

`python -m bench.scale --nodes URLS --data-dir DIR` prints one JSON line; the
harness (`measure_scale`) runs it after the scenarios, when nothing else runs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from visit_counter.core.config import Settings
from visit_counter.services.running import running_counter

PENDING_PAGES = 1_000_000
FLUSH_PAGES = 100_000


def _rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def _measure(
    node_urls: str, data_dir: Path, pending_pages: int, flush_pages: int
) -> dict[str, Any]:
    settings = Settings(
        _env_file=None,
        redis_nodes=node_urls,
        data_dir=data_dir,
        batch_interval_seconds=3600,  # nothing flushes but the flushes below
        batch_size_limit=pending_pages,
        max_pending_pages_per_node=pending_pages,
        enable_metrics=False,
    )
    async with running_counter(settings) as counter:
        for number in range(flush_pages):
            counter.record_visit(f"scale-flush-{number}")
        started = time.perf_counter()
        await counter.flush()
        flush_ms = (time.perf_counter() - started) * 1000
        stored = counter.stats.visits_stored
        before = _rss_mib()
        for number in range(pending_pages):  # no await: the flusher cannot run meanwhile
            counter.record_visit(f"scale-pending-page-{number}")
        with_pending = _rss_mib()
        pending = counter.write_buffer_size()
        counter.take()  # not for the nodes: the figure is the memory
    return {
        "flush_pages": flush_pages,
        "flush_ms": flush_ms,
        "flush_stored": stored,
        "pending_pages": pending,
        "rss_before_mib": before,
        "rss_with_pending_mib": with_pending,
    }


def measure_scale(
    node_urls: str,
    data_dir: Path,
    pending_pages: int = PENDING_PAGES,
    flush_pages: int = FLUSH_PAGES,
) -> dict[str, Any]:
    """Run this module in a child process; its JSON figures."""
    command = [sys.executable, "-m", "bench.scale", "--nodes", node_urls]
    command += ["--data-dir", str(data_dir), "--pending-pages", str(pending_pages)]
    command += ["--flush-pages", str(flush_pages)]
    done = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    )
    figures: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--nodes", required=True, help="REDIS_NODES of the three nodes")
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--pending-pages", type=int, default=PENDING_PAGES)
    parser.add_argument("--flush-pages", type=int, default=FLUSH_PAGES)
    args = parser.parse_args()
    figures = _measure(args.nodes, args.data_dir, args.pending_pages, args.flush_pages)
    print(json.dumps(asyncio.run(figures)))


if __name__ == "__main__":
    main()
