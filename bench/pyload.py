"""Fallback load generator (asyncio + httpx), used where `wrk` cannot be had.

`python -m bench.pyload --base-url URL --method POST --path /x/{page} --pages 10000
--duration 10 --connections 32 [--browser-visitors N]` prints one `BENCH_RESULT {json}`
line, like the wrk scripts; SIGINT ends the run early (requests in flight finish), then
it reports. Python costs far more per request than wrk, so on a shared core it is
usually the bottleneck; the report says which generator ran.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import signal
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import httpx

from bench.load import BROWSER_ORIGIN, PAGE_PLACEHOLDER, RESULT_MARK, browser_user_agent


@dataclass
class Window:
    """Until when the connections send requests; `close` (on SIGINT) ends it now."""

    deadline: float

    def close(self) -> None:
        self.deadline = min(self.deadline, time.perf_counter())


@dataclass
class Tally:
    latencies: list[float] = field(default_factory=list)
    status_errors: int = 0
    socket_errors: int = 0


async def _connection(
    client: httpx.AsyncClient,
    method: str,
    next_path: Callable[[], str],
    next_headers: Callable[[], dict[str, str] | None],
    body: str,
    window: Window,
    tally: Tally,
) -> None:
    content = body.encode() if body else None
    while (started := time.perf_counter()) < window.deadline:
        try:
            response = await client.request(
                method, next_path(), content=content, headers=next_headers()
            )
        except httpx.HTTPError:
            tally.socket_errors += 1
            continue
        tally.latencies.append(time.perf_counter() - started)
        if response.status_code >= 400:
            tally.status_errors += 1


def _percentile(ordered: list[float], fraction: float) -> float:
    if not ordered:
        return 0.0
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


async def generate(args: argparse.Namespace) -> dict[str, float]:
    rng = random.Random(args.seed)
    prefix, _, suffix = str(args.path).partition(PAGE_PLACEHOLDER)

    def next_path() -> str:
        if args.pages > 0:
            return f"{prefix}{rng.randrange(args.pages)}{suffix}"
        return str(args.path)

    fixed = {"content-type": "application/json"} if args.body else {}

    def next_headers() -> dict[str, str] | None:
        if args.browser_visitors > 0:
            visitor = rng.randrange(args.browser_visitors)
            return {**fixed, "origin": BROWSER_ORIGIN, "user-agent": browser_user_agent(visitor)}
        return fixed or None

    # One client per connection: a shared pool's bookkeeping costs more than the requests.
    tally = Tally()
    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
    clients = [
        httpx.AsyncClient(base_url=args.base_url, limits=limits, timeout=10.0)
        for _ in range(args.connections)
    ]
    try:
        started = time.perf_counter()
        window = Window(started + args.duration)
        asyncio.get_running_loop().add_signal_handler(signal.SIGINT, window.close)
        await asyncio.gather(
            *(
                _connection(client, args.method, next_path, next_headers, args.body, window, tally)
                for client in clients
            )
        )
        elapsed = time.perf_counter() - started
    finally:
        for client in clients:
            await client.aclose()
    ordered = sorted(tally.latencies)
    mean = sum(ordered) / len(ordered) if ordered else 0.0
    return {
        "requests": len(ordered),
        "duration_us": elapsed * 1e6,
        "status_errors": tally.status_errors,
        "socket_errors": tally.socket_errors,
        "p50_us": _percentile(ordered, 0.50) * 1e6,
        "p99_us": _percentile(ordered, 0.99) * 1e6,
        "mean_us": mean * 1e6,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.pyload", description=__doc__)
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--method", default="GET")
    parser.add_argument("--path", required=True)
    parser.add_argument("--pages", type=int, default=0)
    parser.add_argument("--body", default="", help="a JSON body sent with every request")
    parser.add_argument(
        "--browser-visitors",
        type=int,
        default=0,
        help="> 0: each request carries Origin and the User-Agent of one of this many visitors",
    )
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--seed", type=int, default=20260101)
    args = parser.parse_args(argv)
    try:
        import uvloop
    except ImportError:
        result = asyncio.run(generate(args))
    else:
        result = uvloop.run(generate(args))
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a late SIGINT must not lose the result
    print(RESULT_MARK + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
