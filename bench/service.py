"""The service's settings in every section of the benchmark, and reading its metrics."""

from __future__ import annotations

import json
import time
import urllib.request
from pathlib import Path
from typing import Any

from bench.processes import ServerProcess
from bench.scenarios import API


def service_env(node_urls: str, data_dir: Path, batch_interval_s: float) -> dict[str, str]:
    """Every setting the numbers depend on, explicit (a developer's `.env` is never read)."""
    return {
        "JOURNAL_VISITS": "false",
        "REDIS_MODE": "ring",
        "REDIS_NODES": node_urls,
        "DATA_DIR": str(data_dir),
        # In the temporary root, removed afterwards; the default (/dev/shm) would outlive it.
        "PROMETHEUS_DIR": str(data_dir / "prometheus"),
        "API_PREFIX": API,
        "BATCH_INTERVAL_SECONDS": str(batch_interval_s),
        "BATCH_SIZE_LIMIT": "1000",
        "CACHE_TTL_SECONDS": "5",
        "CACHE_CAPACITY": "1000",
        "HEALTH_CHECK_INTERVAL_SECONDS": "5",
        "ENABLE_METRICS": "true",
        "DEBUG": "false",
    }


def counter_metrics(server: ServerProcess) -> dict[str, Any]:
    """The service's `GET /counter/metrics` values (visits accepted, stored, pending, ...)."""
    with urllib.request.urlopen(f"{server.url}{API}/counter/metrics", timeout=5) as answer:
        metrics: dict[str, Any] = json.load(answer)["metrics"]
    return metrics


def wait_flushed(server: ServerProcess, timeout: float) -> None:
    """Until the service holds no unflushed visit (its metrics say so), at most `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        metrics = counter_metrics(server)
        if metrics["pending_visits"] == 0 and metrics["write_buffer_size"] == 0:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"the service did not flush within {timeout}s: {metrics}")
        time.sleep(0.05)
