"""A bounded loopback load generator that counts what the service acknowledged."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import Counter
from dataclasses import dataclass, field

import httpx
import redis

from visit_counter.core.embedded_nodes import RedisNodeProcess
from visit_counter.services.batch import page_key


@dataclass
class LoadResult:
    acked: Counter[str] = field(default_factory=Counter)  # 2xx answers per page
    refused: Counter[int] = field(default_factory=Counter)  # non-2xx answers by status
    unanswered: Counter[str] = field(default_factory=Counter)  # no answer (closed, timeout)
    latencies: list[float] = field(default_factory=list)

    @property
    def total_acked(self) -> int:
        return sum(self.acked.values())

    @property
    def errors(self) -> int:
        return sum(self.unanswered.values())


async def post_visits(
    base_url: str,
    pages: list[str],
    total: int,
    concurrency: int = 8,
    *,
    result: LoadResult | None = None,
    deadline_seconds: float = 60.0,
    keepalive: bool = True,
    stop_on_error: bool = False,
    stop: asyncio.Event | None = None,
) -> LoadResult:
    """POST `total` visits round-robin over `pages`; stop early at the deadline.

    With `stop_on_error`, a client stops at its first unanswered request (the
    service went away), instead of retrying until the deadline. Once `stop` is
    set, no client sends another request (those under way finish and count).
    """
    result = result if result is not None else LoadResult()
    order = itertools.islice(itertools.cycle(pages), total)
    deadline = time.monotonic() + deadline_seconds
    limits = httpx.Limits(max_keepalive_connections=concurrency if keepalive else 0)

    async def worker(client: httpx.AsyncClient) -> None:
        for page_id in order:
            if time.monotonic() > deadline or (stop is not None and stop.is_set()):
                return
            started = time.perf_counter()
            try:
                response = await client.post(f"/api/v1/counter/visit/{page_id}")
            except httpx.HTTPError:
                result.unanswered[page_id] += 1
                if stop_on_error:
                    return
                continue
            result.latencies.append(time.perf_counter() - started)
            if response.is_success:
                result.acked[page_id] += 1
            else:
                result.refused[response.status_code] += 1

    async with httpx.AsyncClient(base_url=base_url, limits=limits, timeout=10.0) as client:
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
    return result


def load_until_killed(
    base_url: str, pages: list[str], clients: int, result: LoadResult
) -> asyncio.Task[LoadResult]:
    """POSTs in the background for a crash test: each client stops at its first unanswered
    request (the service was killed); 20 s at most. Acknowledgements go into `result`."""
    return asyncio.create_task(
        post_visits(
            base_url,
            pages,
            100_000,
            clients,
            result=result,
            deadline_seconds=20,
            stop_on_error=True,
        )
    )


def stored_counts(nodes: list[RedisNodeProcess], pages: list[str]) -> Counter[str]:
    """Each page's count summed over every node, read directly."""
    totals: Counter[str] = Counter()
    for node in nodes:
        with redis.Redis(port=node.port) as client:
            values = client.mget([page_key(page_id) for page_id in pages])
        for page_id, value in zip(pages, values, strict=True):
            if value is not None:
                totals[page_id] += int(value)
    return totals


def stored(nodes: list[RedisNodeProcess], page_id: str) -> int:
    """One page's count summed over every node (placement is tested elsewhere)."""
    return stored_counts(nodes, [page_id])[page_id]


async def wait_for_stored(
    nodes: list[RedisNodeProcess], expected: Counter[str], timeout: float = 20.0
) -> Counter[str]:
    """Poll the nodes until they hold exactly `expected`; return what they hold at the end."""
    pages = list(expected)
    deadline = time.monotonic() + timeout
    while True:
        stored = await asyncio.to_thread(stored_counts, nodes, pages)
        if stored == expected or time.monotonic() > deadline:
            return stored
        await asyncio.sleep(0.2)


async def wait_for_stored_between(
    nodes: list[RedisNodeProcess], result: LoadResult, timeout: float = 20.0
) -> Counter[str]:
    """Poll until every page holds at least its acknowledged visits and at most those plus
    the visits that got no answer (the service may have counted a visit and died before
    answering). Returns what the nodes hold at the end."""
    pages = list(result.acked | result.unanswered)
    deadline = time.monotonic() + timeout
    while True:
        stored = await asyncio.to_thread(stored_counts, nodes, pages)
        within = all(
            result.acked[page] <= stored[page] <= result.acked[page] + result.unanswered[page]
            for page in pages
        )
        if within or time.monotonic() > deadline:
            return stored
        await asyncio.sleep(0.2)
