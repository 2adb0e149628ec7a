"""The scenarios of issues 4, 13 and 15, in the order each run goes through them."""

from __future__ import annotations

import json
from dataclasses import dataclass

from bench.load import LoadSpec

HOT_PAGE = "bench-hot"
SPREAD_PAGES = 10_000
API = "/api/v1"  # the harness sets API_PREFIX to this for its servers

BROWSER_VISITORS = 100_000  # (n): distinct visitors, each a User-Agent of its own
STATS_DAYS = 30

INGEST_PAGES = 1000
INGEST_BODY = json.dumps({f"page-{n}": 1 for n in range(INGEST_PAGES)}, separators=(",", ":"))

# Which server answers: the service, the same with its read cache off, the same with the
# per-visit log on, the raw ASGI app.
MAIN, NO_CACHE, JOURNAL, RAW = "main", "nocache", "journal", "raw"
# What the service is compared with (grey in the chart): no counting, a naive INCR, no framework.
COMPARISONS = ("e", "f", "h")


@dataclass(frozen=True, slots=True)
class Scenario:
    key: str
    title: str
    what: str
    server: str
    load: LoadSpec
    records_visits: bool = False  # the service buffers visits: wait for the flush before stats
    pause_node: bool = False  # SIGSTOP one node for the whole run (G4: p99 must not move)
    visits_per_request: int = 1  # batch ingest: the visits one request carries
    # Reads of what another scenario writes (its key): when that one has not run before this
    # one, the session runs its load for a while first (Session.seed), so there is data.
    reads_data_of: str = ""

    @property
    def label(self) -> str:
        return f"({self.key}) {self.title}"


SCENARIOS: tuple[Scenario, ...] = (
    Scenario(
        "a",
        "POST visit, hot page",
        f"`POST {API}/counter/visit/{HOT_PAGE}`, every request on one page",
        MAIN,
        LoadSpec("POST", f"{API}/counter/visit/{HOT_PAGE}"),
        records_visits=True,
    ),
    Scenario(
        "b",
        "POST visit, 10,000 pages",
        f"`POST {API}/counter/visit/page-N`, N uniform in 0..9999 per request",
        MAIN,
        LoadSpec("POST", f"{API}/counter/visit/page-{{page}}", pages=SPREAD_PAGES),
        records_visits=True,
    ),
    Scenario(
        "n",
        "POST visit from browsers, 10,000 pages, 100,000 visitors",
        f"as (b), each request with `Origin` and the User-Agent of one of {BROWSER_VISITORS:,}"
        " visitors (drawn per request): every flush writes the counts, the day hash, the"
        " HyperLogLogs of visitors, the totals and the top set",
        MAIN,
        LoadSpec(
            "POST",
            f"{API}/counter/visit/page-{{page}}",
            pages=SPREAD_PAGES,
            browser_visitors=BROWSER_VISITORS,
        ),
        records_visits=True,
    ),
    Scenario(
        "o",
        "GET top 10 pages",
        f"`GET {API}/counter/top?limit=10`: the top set of every node, merged",
        MAIN,
        LoadSpec("GET", f"{API}/counter/top?limit=10"),
        reads_data_of="n",
    ),
    Scenario(
        "p",
        f"GET stats of a page, {STATS_DAYS} days",
        f"`GET {API}/counter/stats/page-N?days={STATS_DAYS}`, N uniform in 0..9999: the page's"
        " day counts and visitors on every node (sketches merged only when several nodes hold"
        " some), and its count",
        MAIN,
        LoadSpec("GET", f"{API}/counter/stats/page-{{page}}?days={STATS_DAYS}", pages=SPREAD_PAGES),
        reads_data_of="n",
    ),
    Scenario(
        "q",
        f"GET totals, {STATS_DAYS} days",
        f"`GET {API}/counter/totals?days={STATS_DAYS}`: every node's day and hour totals, and"
        " its visitors' HyperLogLogs merged (three nodes hold some)",
        MAIN,
        LoadSpec("GET", f"{API}/counter/totals?days={STATS_DAYS}"),
        reads_data_of="n",
    ),
    Scenario(
        "c",
        "GET visits, cache hit",
        f"`GET {API}/counter/visits/{HOT_PAGE}`, CACHE_TTL_SECONDS=5 (one read per 5 s)",
        MAIN,
        LoadSpec("GET", f"{API}/counter/visits/{HOT_PAGE}"),
    ),
    Scenario(
        "d",
        "GET visits, cache miss",
        f"`GET {API}/counter/visits/{HOT_PAGE}` on a second server with CACHE_TTL_SECONDS=0",
        NO_CACHE,
        LoadSpec("GET", f"{API}/counter/visits/{HOT_PAGE}"),
    ),
    Scenario(
        "m",
        "GET visits, cache miss, 10,000 pages",
        f"`GET {API}/counter/visits/page-N`, N uniform in 0..9999, CACHE_TTL_SECONDS=0: reads "
        "of one page rarely overlap, so each is its own round trip",
        NO_CACHE,
        LoadSpec("GET", f"{API}/counter/visits/page-{{page}}", pages=SPREAD_PAGES),
    ),
    Scenario(
        "j",
        "POST visit and read, hot page",
        f"`POST {API}/counter/visit/{HOT_PAGE}?return=count`: counts, answers the count",
        MAIN,
        LoadSpec("POST", f"{API}/counter/visit/{HOT_PAGE}?return=count"),
        records_visits=True,
    ),
    Scenario(
        "k",
        "batch ingest, 1,000 pages",
        f'`POST {API}/counter/visits` with `{{"page-0": 1, …, "page-999": 1}}` (1,000 visits)',
        MAIN,
        LoadSpec("POST", f"{API}/counter/visits", body=INGEST_BODY),
        records_visits=True,
        visits_per_request=INGEST_PAGES,
    ),
    Scenario(
        "e",
        "bare FastAPI route",
        f"`POST /bench/bare/{HOT_PAGE}` on the same app: same response model, no counting",
        MAIN,
        LoadSpec("POST", f"/bench/bare/{HOT_PAGE}"),
    ),
    Scenario(
        "f",
        "naive INCR per request",
        f"`POST /bench/naive/{HOT_PAGE}` on the same app: awaits INCR on the owner node",
        MAIN,
        LoadSpec("POST", f"/bench/naive/{HOT_PAGE}"),
    ),
    Scenario(
        "g",
        "POST visit, visit log on",
        f"`POST {API}/counter/visit/{HOT_PAGE}` on a server with JOURNAL_VISITS=true",
        JOURNAL,
        LoadSpec("POST", f"{API}/counter/visit/{HOT_PAGE}"),
        records_visits=True,
    ),
    Scenario(
        "i",
        "POST visit, 10,000 pages, a node paused",
        "as (b), with one of the three nodes stopped by SIGSTOP for the whole run",
        MAIN,
        LoadSpec("POST", f"{API}/counter/visit/page-{{page}}", pages=SPREAD_PAGES),
        records_visits=True,
        pause_node=True,
    ),
    Scenario(
        "h",
        "raw ASGI ceiling",
        f"`POST {API}/counter/visit/{HOT_PAGE}` on `bench.raw_asgi:app` (no framework)",
        RAW,
        LoadSpec("POST", f"{API}/counter/visit/{HOT_PAGE}"),
    ),
)
