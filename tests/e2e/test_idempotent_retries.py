"""G10 end to end: clients retry visits and batches whose replies a proxy dropped; each
counts once."""

from __future__ import annotations

import asyncio
import re
from collections import Counter

import httpx
import pytest

from tests.conftest import ServiceFactory
from tests.support.http_proxy import ReplyDroppingProxy
from tests.support.load import stored_counts
from visit_counter.core.embedded_nodes import RedisNodeProcess

pytestmark = pytest.mark.e2e

API = "/api/v1/counter"
VISITS = 90
ATTEMPTS = 5


async def send_until_answered(client: httpx.AsyncClient, page: str, key: str, beacon: bool) -> int:
    """One visit, retried with its key until a reply comes back; returns the attempts."""
    for attempt in range(1, ATTEMPTS + 1):
        try:
            if beacon:  # navigator.sendBeacon cannot set headers: the key is a parameter
                answer = await client.post(f"{API}/visit/{page}?idempotency_key={key}")
            else:
                answer = await client.post(f"{API}/visit/{page}", headers={"Idempotency-Key": key})
        except httpx.TransportError:
            continue
        assert answer.status_code == 200
        return attempt
    raise AssertionError(f"{page}/{key}: no reply in {ATTEMPTS} attempts")


async def test_visits_retried_through_a_proxy_that_drops_replies_count_once(
    redis_nodes: list[RedisNodeProcess], service_factory: ServiceFactory
) -> None:
    service = service_factory(redis_nodes, workers=2, batch_interval_seconds=0.2)
    sent: Counter[bytes] = Counter()

    def drop(request: bytes) -> bool:
        """The replies to a visit's first two attempts are lost."""
        match = re.search(rb"visit-[0-9]+", request)
        assert match is not None
        sent[match[0]] += 1
        return sent[match[0]] <= 2

    proxy = ReplyDroppingProxy(service.port, drop)
    await proxy.start()
    pages = ["home", "blog/2026/hello", "caf%C3%A9"]
    visits = [(pages[n % 3], f"visit-{n:04d}", n % 2 == 0) for n in range(VISITS)]
    limits = httpx.Limits(max_keepalive_connections=0)  # a new connection per attempt
    try:
        async with httpx.AsyncClient(
            base_url=proxy.url, limits=limits, headers={"Connection": "close"}
        ) as client:
            semaphore = asyncio.Semaphore(6)

            async def one(page: str, key: str, beacon: bool) -> int:
                async with semaphore:
                    return await send_until_answered(client, page, key, beacon)

            attempts = await asyncio.gather(*(one(*visit) for visit in visits))
    finally:
        await proxy.aclose()

    assert attempts == [3] * VISITS, "each visit reached the service three times"
    assert proxy.replies_dropped == 2 * VISITS
    expected = Counter({"home": 30, "blog/2026/hello": 30, "café": 30})
    for _ in range(50):  # the workers flush every 0.2 s
        if stored_counts(redis_nodes, list(expected)) == expected:
            break
        await asyncio.sleep(0.1)
    assert stored_counts(redis_nodes, list(expected)) == expected
    # A worker's read may still include a repeat it holds until its next flush, where the
    # node finds the key counted (README, Idempotency-Key): settled within a flush or two.
    async with httpx.AsyncClient(base_url=service.url) as direct:
        for _ in range(25):
            answers = [await direct.get(f"{API}/visits/{page}") for page in ("home", "caf%C3%A9")]
            if [answer.json()["visits"] for answer in answers] == [30, 30]:
                break
            await asyncio.sleep(0.2)
    assert [answer.json()["visits"] for answer in answers] == [30, 30]


async def test_batches_retried_through_a_proxy_that_drops_replies_count_once(
    redis_nodes: list[RedisNodeProcess], service_factory: ServiceFactory
) -> None:
    service = service_factory(redis_nodes, workers=2, batch_interval_seconds=0.2)
    sent: Counter[bytes] = Counter()

    def drop(request: bytes) -> bool:
        """The replies to a request's first two attempts are lost."""
        match = re.search(rb"batch-[0-9]+", request)
        assert match is not None
        sent[match[0]] += 1
        return sent[match[0]] <= 2

    proxy = ReplyDroppingProxy(service.port, drop)
    await proxy.start()
    pages = [f"page-{n}" for n in range(300)]
    batches = [{page: n + 1 for page in pages[n::10]} for n in range(10)]
    expected = Counter({page: n + 1 for n in range(10) for page in pages[n::10]})
    try:
        async with httpx.AsyncClient(
            base_url=proxy.url,
            limits=httpx.Limits(max_keepalive_connections=0),
            headers={"Connection": "close"},
        ) as client:

            async def send(number: int, body: dict[str, int]) -> int:
                for attempt in range(1, ATTEMPTS + 1):
                    try:
                        answer = await client.post(
                            f"{API}/visits",
                            json=body,
                            headers={"Idempotency-Key": f"batch-{number}"},
                        )
                    except httpx.TransportError:
                        continue
                    assert answer.json() == {
                        "status": "success",
                        "pages": len(body),
                        "visits": sum(body.values()),
                    }
                    return attempt
                raise AssertionError(f"batch {number}: no reply in {ATTEMPTS} attempts")

            attempts = await asyncio.gather(*(send(*item) for item in enumerate(batches)))
    finally:
        await proxy.aclose()

    assert attempts == [3] * len(batches), "each batch reached the service three times"
    for _ in range(50):
        if stored_counts(redis_nodes, pages) == expected:
            break
        await asyncio.sleep(0.1)
    assert stored_counts(redis_nodes, pages) == expected
