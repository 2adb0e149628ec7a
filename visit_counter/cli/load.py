"""`python -m app load`: a bounded loopback load test that checks every accepted visit counts.

N POSTs go round-robin over M fresh pages (`<prefix>-0` ... `<prefix>-<M-1>`, the
prefix random per run, so every page starts at 0) from C concurrent clients on
keep-alive connections. A progress bar with the running throughput is drawn on
stderr while they run; the summary goes to stdout.

Then the counts are read back through the API (`GET .../visits/<page>`) until
each equals the number of 2xx answers its page got, or `--timeout` passes. The
wait is needed because a GET is not always fresh: a worker answers with the
stored count plus *its own* pending visits, so with several workers the others'
visits show only after their next flush (BATCH_INTERVAL_SECONDS), and a count
read once is served from the cache for up to CACHE_TTL_SECONDS (flushes push new
counts into every worker's cache, so in practice one flush interval is enough).
Reading through the API rather than from the nodes keeps the check end to end and
needs no node address or password; the default timeout covers both defaults
twice over.

Exit status: 0 when every POST was accepted and every count matches; 1 otherwise
(nothing answering at the URL, checked with one GET /health/live before any POST; a
refused or unanswered POST, or a count that never matched); 2 for bad arguments,
including a URL that is not a loopback address: this tool never loads another host.
"""

from __future__ import annotations

import asyncio
import ipaddress
import secrets
import socket
import statistics
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TextIO
from urllib.parse import urlsplit

import httpx

from visit_counter.cli.progress import draw_bar
from visit_counter.core.page_id import normalize_page_id

_READ_CONCURRENCY = 16
_POLL_SECONDS = 0.2
_REQUEST_TIMEOUT = 10.0
_PROBE_CONNECT_TIMEOUT = 2.0  # on loopback a listener answers at once; nothing: refused at once


class NotLoopbackError(ValueError):
    """The load test was pointed at something other than this machine."""


class NoServiceError(ConnectionError):
    """Nothing answers HTTP at the load test's URL."""


def loopback_base_url(url: str) -> str:
    """`url` without a trailing slash, if it is http(s) on a loopback address; else raise.

    A host name counts only if every address it resolves to is loopback.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise NotLoopbackError(f"{url!r} is not an http:// or https:// URL")
    host = parts.hostname
    try:
        addresses = {ipaddress.ip_address(host)}
    except ValueError:
        try:
            infos = socket.getaddrinfo(host, parts.port or 80, type=socket.SOCK_STREAM)
        except OSError as exc:
            raise NotLoopbackError(f"cannot resolve {host!r}: {exc}") from None
        addresses = {ipaddress.ip_address(info[4][0]) for info in infos}
    if not addresses or not all(address.is_loopback for address in addresses):
        raise NotLoopbackError(
            f"{host!r} is not a loopback address; load runs on this machine only"
        )
    return url.rstrip("/")


@dataclass(frozen=True, slots=True)
class LoadPlan:
    base_url: str
    requests: int
    pages: int
    concurrency: int
    timeout: float
    prefix: str
    api_prefix: str = "/api/v1"

    def page_ids(self) -> list[str]:
        return [f"{self.prefix}-{index}" for index in range(self.pages)]


@dataclass
class LoadReport:
    accepted: Counter[str] = field(default_factory=Counter)  # 2xx answers per page
    refused: Counter[int] = field(default_factory=Counter)  # other answers, by status
    unanswered: int = 0  # connection errors and timeouts
    latencies: list[float] = field(default_factory=list)
    elapsed: float = 0.0
    read_back: dict[str, int | None] = field(default_factory=dict)  # None: no 200 answer
    wait_seconds: float = 0.0

    @property
    def sent(self) -> int:
        return sum(self.accepted.values()) + self.refused.total() + self.unanswered

    @property
    def mismatched(self) -> dict[str, tuple[int, int | None]]:
        """page -> (accepted, read back) for every page whose count does not match."""
        return {
            page: (self.accepted[page], read)
            for page, read in self.read_back.items()
            if read != self.accepted[page]
        }


Progress = Callable[[int, float, bool], None]  # (requests sent, seconds since start, final)


async def post_visits(plan: LoadPlan, client: httpx.AsyncClient, progress: Progress) -> LoadReport:
    """Send the plan's POSTs with `plan.concurrency` workers; never more than `plan.requests`."""
    report = LoadReport()
    pages = plan.page_ids()
    indexes = iter(range(plan.requests))
    visit = f"{plan.api_prefix}/counter/visit/"
    started = time.perf_counter()

    async def worker() -> None:
        for index in indexes:  # shared iterator: each index is taken by exactly one worker
            page = pages[index % len(pages)]
            sent_at = time.perf_counter()
            try:
                response = await client.post(visit + page)
            except httpx.HTTPError:
                report.unanswered += 1
                continue
            report.latencies.append(time.perf_counter() - sent_at)
            if response.is_success:
                report.accepted[page] += 1
            else:
                report.refused[response.status_code] += 1

    async def draw() -> None:
        while True:
            progress(report.sent, time.perf_counter() - started, False)
            await asyncio.sleep(0.1)

    drawing = asyncio.create_task(draw())
    try:
        await asyncio.gather(*(worker() for _ in range(plan.concurrency)))
    finally:
        drawing.cancel()
    report.elapsed = time.perf_counter() - started
    progress(report.sent, report.elapsed, True)
    return report


async def read_back(plan: LoadPlan, client: httpx.AsyncClient, report: LoadReport) -> None:
    """GET each page until its count equals what it accepted, or the timeout passes."""
    visits = f"{plan.api_prefix}/counter/visits/"
    limit = asyncio.Semaphore(_READ_CONCURRENCY)
    started = time.monotonic()
    deadline = started + plan.timeout

    async def read(page: str) -> None:
        async with limit:
            try:
                response = await client.get(visits + page)
            except httpx.HTTPError:
                report.read_back[page] = None
                return
        count = response.json().get("visits") if response.status_code == 200 else None
        report.read_back[page] = count if isinstance(count, int) else None

    todo = plan.page_ids()
    while True:
        await asyncio.gather(*(read(page) for page in todo))
        todo = list(report.mismatched)
        if not todo or time.monotonic() >= deadline:
            break
        await asyncio.sleep(_POLL_SECONDS)
    report.wait_seconds = time.monotonic() - started


async def probe(plan: LoadPlan, client: httpx.AsyncClient) -> None:
    """One GET /health/live, so a URL where nothing listens fails at once (NoServiceError)
    instead of after every POST and the whole read-back timeout. Any HTTP answer will do."""
    timeout = httpx.Timeout(_REQUEST_TIMEOUT, connect=_PROBE_CONNECT_TIMEOUT)
    try:
        await client.get("/health/live", timeout=timeout)
    except httpx.HTTPError as exc:
        reason = str(exc) or type(exc).__name__
        raise NoServiceError(
            f"nothing answers at {plan.base_url} ({reason}); is the service running?"
        ) from None


async def run_load(plan: LoadPlan, progress: Progress) -> LoadReport:
    limits = httpx.Limits(
        max_connections=plan.concurrency, max_keepalive_connections=plan.concurrency
    )
    # trust_env=False: a proxy from the environment must never carry loopback traffic away.
    async with httpx.AsyncClient(
        base_url=plan.base_url, limits=limits, timeout=_REQUEST_TIMEOUT, trust_env=False
    ) as client:
        await probe(plan, client)
        report = await post_visits(plan, client, progress)
        await read_back(plan, client, report)
    return report


def progress_bar(total: int, stream: TextIO) -> Progress:
    """A one-line bar redrawn in place (carriage return), e.g. `[#####     ] 50/100 1234/s`."""

    def draw(sent: int, elapsed: float, final: bool) -> None:
        draw_bar(stream, sent, total, elapsed, "visits", final=final)

    return draw


def _percentile(values: list[float], fraction: float) -> float:
    if len(values) < 2:
        return values[0] if values else 0.0
    return statistics.quantiles(values, n=100, method="inclusive")[round(fraction * 100) - 1]


def summarize(plan: LoadPlan, report: LoadReport, out: TextIO) -> int:
    """Print what happened; return the exit status."""
    accepted = report.accepted.total()
    rate = report.sent / report.elapsed if report.elapsed > 0 else 0.0
    out.write(
        f"sent {report.sent} POSTs over {plan.pages} pages ({plan.prefix}-*) with "
        f"{plan.concurrency} clients in {report.elapsed:.2f} s: {rate:,.0f} visits/s\n"
    )
    if report.latencies:
        p50 = _percentile(report.latencies, 0.50) * 1000
        p99 = _percentile(report.latencies, 0.99) * 1000
        out.write(f"latency: p50 {p50:.2f} ms, p99 {p99:.2f} ms\n")
    out.write(f"accepted: {accepted}")
    if report.refused:
        refused = ", ".join(
            f"{count} x {status}" for status, count in sorted(report.refused.items())
        )
        out.write(f"; refused: {refused}")
    if report.unanswered:
        out.write(f"; unanswered: {report.unanswered}")
    out.write("\n")
    status = 0
    if accepted != plan.requests:
        out.write(f"FAIL: {plan.requests - accepted} of {plan.requests} POSTs were not accepted\n")
        status = 1
    mismatched = report.mismatched
    if mismatched:
        out.write(
            f"FAIL: {len(mismatched)} of {plan.pages} pages did not read back their accepted "
            f"count within {plan.timeout:g} s (page: accepted, read):\n"
        )
        for page, (expected, read) in sorted(mismatched.items())[:10]:
            out.write(f"  {page}: {expected}, {'no answer' if read is None else read}\n")
        status = 1
    else:
        out.write(
            f"counts match: all {plan.pages} pages read back their accepted visits "
            f"({accepted} in total) after {report.wait_seconds:.2f} s\n"
        )
    return status


def run(
    url: str,
    requests: int,
    pages: int,
    concurrency: int,
    timeout: float,
    prefix: str | None = None,
    api_prefix: str = "/api/v1",
) -> int:
    """The `load` command. Arguments are validated here as well as by argparse."""
    try:
        base_url = loopback_base_url(url)
    except NotLoopbackError as exc:
        print(f"visit-counter load: {exc}", file=sys.stderr)
        return 2
    prefix = prefix or f"load-{secrets.token_hex(4)}"
    normalize_page_id(f"{prefix}-{pages - 1}")  # InvalidPageIdError: reported by the caller
    plan = LoadPlan(base_url, requests, pages, concurrency, timeout, prefix, api_prefix)
    try:
        report = asyncio.run(run_load(plan, progress_bar(requests, sys.stderr)))
    except NoServiceError as exc:
        print(f"visit-counter load: {exc}", file=sys.stderr)
        return 1
    return summarize(plan, report, sys.stdout)
