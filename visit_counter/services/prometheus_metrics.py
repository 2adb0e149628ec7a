"""The Prometheus metrics of one app: what they are, and how they are kept current.

Import this module only through `prometheus_dir.open_prometheus`, which sets
PROMETHEUS_MULTIPROC_DIR first: prometheus_client picks its multiprocess mode
when it is first imported. If something imported it earlier, the values live
in this process only and `/metrics` shows this worker alone (logged at start).

Cost on the hot path. Recording a visit pays nothing here: `sync()` adds the
growth of the engine's own counters (`CounterStats`, cache hits and misses)
every BATCH_INTERVAL_SECONDS and at every scrape, and sets the gauges. Each HTTP
request pays one histogram observe in `ProcessTimeMiddleware`: a dict lookup for
the labelled child, then two float updates, which in multiprocess mode are two
writes into an mmapped file under a lock, about 2 microseconds (0.5 in
single-process mode). Batches pay one counter increment and one observe each.

Labels never hold a page id: `route` is the route template, `node` the node's
URL with any password redacted, `status` and `method` come from small sets.

When the files cannot be set up or grown (a full filesystem: prometheus_files.py
turns that into an OSError), metrics turn off in this worker for the rest of its
life, and nothing else changes: one ERROR line, `failure` says why (`/status`),
its `/metrics` answers 503, its live gauges are dropped (they would stand still),
its counters stay in the totals as they were, and `metrics_failures` (created
first, so already allocated) tells the other workers' scrapes.
"""

from __future__ import annotations

import logging
from bisect import bisect_left
from pathlib import Path

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    values,
)
from prometheus_client.multiprocess import MultiProcessCollector

from visit_counter.core.config import Settings
from visit_counter.core.connection_limits import CLOSE_REASONS, ConnectionGuard
from visit_counter.core.errors import MetricsUnavailableError
from visit_counter.core.redis_manager import RedisManager
from visit_counter.core.tasks import PeriodicTask
from visit_counter.services.prometheus_dir import MultiprocessDirectory
from visit_counter.services.visit_counter import VisitCounter

logger = logging.getLogger(__name__)

# Not "visit_counter": promtool flags any name with "_counter_" in it (its type rule).
NAMESPACE = "pagevisits"
BATCH_OUTCOMES = ("stored", "duplicate", "failed")
# The service answers in tens of microseconds; the default buckets start at 5 ms.
HTTP_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0)
FLUSH_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class _LocalHistogram:
    """Request durations counted in this process since the last sync."""

    __slots__ = ("counts", "total")

    def __init__(self, buckets: int) -> None:
        self.counts = [0] * buckets  # per bucket of HTTP_BUCKETS, then +Inf
        self.total = 0.0


class PrometheusMetrics:
    """Owns every metric (in a registry of its own) and the task that keeps them current."""

    def __init__(
        self,
        settings: Settings,
        manager: RedisManager,
        counter: VisitCounter,
        directory: MultiprocessDirectory,
        failure: OSError | None = None,
    ) -> None:
        """`failure`: the directory could not be set up; metrics start off."""
        self._manager = manager
        self._counter = counter
        self._directory = directory
        self._task = PeriodicTask(
            "prometheus-sync", self._sync_step, settings.batch_interval_seconds
        )
        self.failure: str | None = None  # why metrics are off in this worker
        self.registry = CollectorRegistry()
        self.metrics_failures: Counter | None = None
        self._http_local: dict[tuple[str, str, int], _LocalHistogram] = {}
        self._seen: dict[str, int] = {}
        # Set by the lifespan: its counts of connections the server closed are synced too.
        self.connection_guard: ConnectionGuard | None = None
        self.multiprocess = values.ValueClass is not values.MutexValue
        if failure is not None:
            self._turn_off(failure)
            return
        if not self.multiprocess:
            logger.warning(
                "prometheus_client was imported before %s was set: /metrics shows this "
                "process only",
                "PROMETHEUS_MULTIPROC_DIR",
            )
        try:
            self._create(manager.names)
            self._sync()
        except OSError as exc:
            self._turn_off(exc)

    def _create(self, nodes: list[str]) -> None:
        """Every metric, and every child whose labels are known now (each writes its file)."""
        registry = self.registry
        self.metrics_failures = Counter(
            "metrics_failures",
            "Workers whose metrics turned off because a metrics file could not be allocated "
            "(full filesystem); their own /metrics answers 503.",
            namespace=NAMESPACE,
            registry=registry,
        )
        self.visits_accepted = Counter(
            "accepted",
            "Visits answered 2xx, each to be stored exactly once.",
            namespace=NAMESPACE,
            registry=registry,
        )
        self.bots_rejected = Counter(
            "bots_rejected",
            "Visits from known crawlers (User-Agent), answered 200 and not counted.",
            namespace=NAMESPACE,
            registry=registry,
        )
        self.visits_repeated = Counter(
            "repeated",
            "Visits repeated with an Idempotency-Key seen before, answered 200, counted once.",
            namespace=NAMESPACE,
            registry=registry,
        )
        self.visits_stored = Counter(
            "stored",
            "Visits the nodes have stored (acknowledged batches).",
            namespace=NAMESPACE,
            registry=registry,
        )
        self.flush_batches = Counter(
            "flush_batches",
            "Batches sent to a node, by outcome: stored; duplicate (a retry the node had "
            "applied already); failed (kept for retry).",
            ["node", "outcome"],
            namespace=NAMESPACE,
            registry=registry,
        )
        self.flush_duration = Histogram(
            "flush_duration_seconds",
            "Time for a node to apply one batch (failed attempts included).",
            ["node"],
            buckets=FLUSH_BUCKETS,
            namespace=NAMESPACE,
            registry=registry,
        )
        self.pending_pages = Gauge(
            "pending_pages",
            "Distinct pages with visits held in memory, not yet stored (all workers).",
            multiprocess_mode="livesum",
            namespace=NAMESPACE,
            registry=registry,
        )
        self.pending_visits = Gauge(
            "pending",
            "Visits held in memory, not yet stored (all workers).",
            multiprocess_mode="livesum",
            namespace=NAMESPACE,
            registry=registry,
        )
        self.journal_batches = Gauge(
            "journal_batches",
            "Batches waiting in the on-disk journal for their node (all workers).",
            multiprocess_mode="livesum",
            namespace=NAMESPACE,
            registry=registry,
        )
        self.sink_pending = Gauge(
            "sink_pending_batches",
            "Stored batches waiting for a sink (SINKS), in memory or its queue file (all workers).",
            ["sink"],
            multiprocess_mode="livesum",
            namespace=NAMESPACE,
            registry=registry,
        )
        self.sink_delivered = Counter(
            "sink_delivered_batches",
            "Stored batches a sink applied (handed over again and found applied: not counted).",
            ["sink"],
            namespace=NAMESPACE,
            registry=registry,
        )
        self.sink_failures = Counter(
            "sink_failures",
            "Attempts to hand a batch to a sink that failed (each is retried).",
            ["sink"],
            namespace=NAMESPACE,
            registry=registry,
        )
        self.sink_lost = Counter(
            "sink_lost_batches",
            "Batches a sink will never get: its queue was full and its file could not be written.",
            ["sink"],
            namespace=NAMESPACE,
            registry=registry,
        )
        self.journal_damaged_records = Counter(
            "journal_damaged_records",
            "Unreadable lines found in dead workers' journal and visit-log files (quarantined).",
            namespace=NAMESPACE,
            registry=registry,
        )
        self.journal_damaged_bytes = Counter(
            "journal_damaged_bytes",
            "Bytes of those unreadable lines.",
            namespace=NAMESPACE,
            registry=registry,
        )
        self.journal_quarantined_files = Gauge(
            "journal_quarantined_files",
            "Damaged journal files kept in the quarantine until an operator clears them.",
            multiprocess_mode="livemax",
            namespace=NAMESPACE,
            registry=registry,
        )
        self.cache_hits = Counter(
            "cache_hits",
            "Reads answered from the in-memory cache.",
            namespace=NAMESPACE,
            registry=registry,
        )
        self.cache_misses = Counter(
            "cache_misses",
            "Reads that had to ask the owner node.",
            namespace=NAMESPACE,
            registry=registry,
        )
        self.node_up = Gauge(
            "node_up",
            "1 while the node answers, else 0 (the lowest any worker reports).",
            ["node"],
            multiprocess_mode="livemin",
            namespace=NAMESPACE,
            registry=registry,
        )
        self.node_config_warnings = Gauge(
            "node_config_warnings",
            "Problems in the node's configuration that can lose counts (see /status).",
            ["node"],
            multiprocess_mode="livemax",
            namespace=NAMESPACE,
            registry=registry,
        )
        self.topology_version = Gauge(
            "topology_version",
            "The topology version the workers route by (the lowest: a worker behind shows).",
            multiprocess_mode="livemin",
            namespace=NAMESPACE,
            registry=registry,
        )
        self.topology_moving = Gauge(
            "topology_moving",
            "1 while a `nodes add|remove` is under way (preparing or moving), else 0.",
            multiprocess_mode="livemax",
            namespace=NAMESPACE,
            registry=registry,
        )
        self.node_replaced = Gauge(
            "node_replaced",
            "1 once the node is believed to have lost its data (see /status replaced_nodes).",
            ["node"],
            multiprocess_mode="livemax",
            namespace=NAMESPACE,
            registry=registry,
        )
        self.http_request_duration = Histogram(
            "http_request_duration_seconds",
            "Time to answer an HTTP request, by route template and status code.",
            ["method", "route", "status"],
            buckets=HTTP_BUCKETS,
            namespace=NAMESPACE,
            registry=registry,
        )
        self.http_connections_closed = Counter(
            "http_connections_closed",
            "Connections the server closed on its own, by reason: max_connections (refused "
            "with 503), evicted (waiting for a request, closed to admit new ones), "
            "head_timeout (408, or a plain close if nothing came), url_too_long (414), "
            "headers_too_large (431).",
            ["reason"],
            namespace=NAMESPACE,
            registry=registry,
        )
        self._closed_children = {
            reason: self.http_connections_closed.labels(reason=reason) for reason in CLOSE_REASONS
        }
        self._batch_children: dict[tuple[str, str], Counter] = {}
        self._duration_children: dict[str, Histogram] = {}
        for node in nodes:
            self._add_node(node)

    def _add_node(self, node: str) -> None:
        """The node's batch series, every outcome at 0, so each exists before its first
        event: for the nodes known at start, and for one a move adds while this runs."""
        for outcome in BATCH_OUTCOMES:
            self._batch_children[(node, outcome)] = self.flush_batches.labels(
                node=node, outcome=outcome
            )
        self._duration_children[node] = self.flush_duration.labels(node=node)

    def _turn_off(self, exc: OSError) -> None:
        """Metrics off in this worker for good (see the module docstring)."""
        self.failure = f"cannot write the metrics files in {self._directory.path}: {exc}"
        logger.error(
            "Prometheus metrics are off in this worker until it restarts: %s", self.failure
        )
        try:
            if self.metrics_failures is not None:
                self.metrics_failures.inc()  # its value exists: no new block needed
            self._directory.forget_own_gauges()
        except OSError:
            logger.exception("could not report the metrics failure in the metrics files")

    # -- recording ---------------------------------------------------------------

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        """One HTTP request (called by ProcessTimeMiddleware); `route` is a template.

        Only a local bucket count moves here: a multiprocess-mode `observe()` checks
        the pid and writes an mmap'd file, which cost the visit route about a fifth
        of its throughput. `sync()` folds the local counts into the histogram.
        """
        if self.failure is not None:
            return
        key = (method, route, status)
        local = self._http_local.get(key)
        if local is None:
            local = self._http_local[key] = _LocalHistogram(len(HTTP_BUCKETS) + 1)
        local.counts[bisect_left(HTTP_BUCKETS, seconds)] += 1
        local.total += seconds

    def _fold_requests(self) -> None:
        for (method, route, status), local in self._http_local.items():
            if not local.total and not any(local.counts):
                continue
            child = self.http_request_duration.labels(
                method=method if method in _METHODS else "OTHER", route=route, status=str(status)
            )
            # prometheus_client stores one non-cumulative value per bucket (the
            # last is +Inf) and the sum, exactly what observe() would have moved.
            for index, count in enumerate(local.counts):
                if count:
                    child._buckets[index].inc(count)
            child._sum.inc(local.total)
            local.counts = [0] * len(local.counts)
            local.total = 0.0

    def observe_batch(self, node: str, outcome: str, seconds: float) -> None:
        """One batch sent to `node` (the engine's `batch_observer`)."""
        if self.failure is not None:
            return
        try:
            if node not in self._duration_children:
                self._add_node(node)
            self._batch_children[(node, outcome)].inc()
            self._duration_children[node].observe(seconds)
        except OSError as exc:
            self._turn_off(exc)

    def sync(self) -> None:
        """Bring counters and gauges up to the engine's state. Runs on the event loop only."""
        if self.failure is not None:
            return
        try:
            self._sync()
        except OSError as exc:
            self._turn_off(exc)

    def _sync(self) -> None:
        counter, stats, cache = self._counter, self._counter.stats, self._counter.cache
        self._fold_requests()
        self._advance(self.visits_accepted, "visits_accepted", stats.visits_accepted)
        self._advance(self.visits_stored, "visits_stored", stats.visits_stored)
        self._advance(self.bots_rejected, "bots_rejected", stats.bots_rejected)
        self._advance(self.visits_repeated, "visits_repeated", stats.visits_repeated)
        self._advance(
            self.journal_damaged_records, "damaged_records", counter.journal.damaged_records
        )
        self._advance(self.journal_damaged_bytes, "damaged_bytes", counter.journal.damaged_bytes)
        self._advance(self.cache_hits, "cache_hits", cache.hits)
        self._advance(self.cache_misses, "cache_misses", cache.misses)
        if self.connection_guard is not None:
            for reason, total in self.connection_guard.closed.items():
                self._advance(self._closed_children[reason], f"closed:{reason}", total)
        for sink in counter.sinks.stats():
            self.sink_pending.labels(sink=sink.name).set(sink.pending)
            for metric, name, total in (
                (self.sink_delivered, "delivered", sink.delivered),
                (self.sink_failures, "failures", sink.failures),
                (self.sink_lost, "lost", sink.lost),
            ):
                self._advance(metric.labels(sink=sink.name), f"sink:{name}:{sink.name}", total)
        self.pending_pages.set(counter.write_buffer_size())
        self.pending_visits.set(counter.pending_visits())
        self.journal_batches.set(counter.journal_batches())
        self.journal_quarantined_files.set(len(counter.journal_damage()))
        topology = counter.topology
        self.topology_version.set(topology.version)
        self.topology_moving.set(0 if topology.state == "stable" else 1)
        warnings = self._manager.config_warnings()
        replaced = self._manager.identities.replaced
        for node, up in self._manager.node_status().items():
            self.node_up.labels(node=node).set(1 if up else 0)
            self.node_config_warnings.labels(node=node).set(len(warnings.get(node, ())))
            self.node_replaced.labels(node=node).set(1 if node in replaced else 0)

    def _advance(self, metric: Counter, key: str, total: int) -> None:
        growth = total - self._seen.get(key, 0)
        if growth > 0:
            metric.inc(growth)
            self._seen[key] = total

    # -- exposition --------------------------------------------------------------

    @property
    def directory(self) -> Path:
        return self._directory.path

    @property
    def content_type(self) -> str:
        return CONTENT_TYPE_LATEST

    def render(self) -> bytes:
        """The text exposition: every worker's values merged (multiprocess mode).

        Raises MetricsUnavailableError while metrics are off in this worker.
        """
        self.sync()
        if self.failure is not None:
            raise MetricsUnavailableError(f"metrics are off in this worker: {self.failure}")
        if not self.multiprocess:
            return generate_latest(self.registry)
        self._directory.scrub()
        merged = CollectorRegistry()
        MultiProcessCollector(merged, path=str(self._directory.path))  # type: ignore[no-untyped-call]
        return generate_latest(merged)

    # -- lifecycle ---------------------------------------------------------------

    def start(self) -> None:
        """Hear of every batch, and sync every BATCH_INTERVAL_SECONDS."""
        self._counter.batch_observer = self.observe_batch
        self._task.start()

    async def _sync_step(self) -> None:
        self.sync()

    async def aclose(self) -> None:
        """Stop syncing, record the last counts, then give up the directory.

        Runs after the engine's own `aclose`, so the final flush is counted.
        """
        if self._counter.batch_observer == self.observe_batch:
            self._counter.batch_observer = None
        await self._task.aclose()
        try:
            self.sync()
        finally:
            self._directory.close()
