"""What the running service says about a page: its count, and waiting for one to arrive.

Pages in a browser count themselves asynchronously (a beacon, an image, a script's fetch), so
a test polls the service, boundedly, until the count it expects is there.
"""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import quote

import httpx

API = "/api/v1/counter"


def page_path(page_id: str) -> str:
    """`page_id` as one path segment: `/` and non-ASCII percent-encoded (the root `/` is `%2F`)."""
    return quote(page_id, safe="")


def visits_of(service_url: str, page_id: str) -> int:
    """The page's count as the service's GET reads it."""
    with httpx.Client(base_url=service_url) as client:
        answer = client.get(f"{API}/visits/{page_path(page_id)}")
    answer.raise_for_status()
    visits: int = answer.json()["visits"]
    return visits


def counter_metrics(service_url: str) -> dict[str, Any]:
    """The `metrics` object of the JSON metrics route (visits_accepted, bots_rejected, ...)."""
    with httpx.Client(base_url=service_url) as client:
        answer = client.get(f"{API}/metrics")
    answer.raise_for_status()
    metrics: dict[str, Any] = answer.json()["metrics"]
    return metrics


def wait_for_visits(service_url: str, page_id: str, expected: int, timeout: float = 10.0) -> None:
    """Poll the service until `page_id` reads `expected`; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    visits = None
    with httpx.Client(base_url=service_url) as client:
        while time.monotonic() < deadline:
            visits = client.get(f"{API}/visits/{page_path(page_id)}").json()["visits"]
            if visits == expected:
                return
            time.sleep(0.05)
    raise AssertionError(f"{page_id} reads {visits} visits after {timeout}s, not {expected}")
