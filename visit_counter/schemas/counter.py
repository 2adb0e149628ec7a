"""Request and response models: the seed's JSON shapes, plus a few documented extras."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field


class VisitRecorded(BaseModel):
    status: Literal["success"] = "success"
    message: str = Field(examples=["Visit recorded for page page1"])
    page_id: str
    timestamp: datetime
    visits: int | None = Field(
        default=None,
        description="Only with `?return=count`: the page's count, this visit included "
        "(as GET reads it); left out when it cannot be read now.",
    )


class VisitCount(BaseModel):
    visits: int = Field(ge=0, description="Stored count plus this worker's pending increments.")
    served_via: str = Field(
        examples=["in_memory", "redis_7070"],
        description='"in_memory" when answered from the cache, else "redis_<port>" of the owner.',
    )
    stale: bool = Field(
        default=False,
        description="True when the owner node is down and this is the last known count.",
    )


class CounterReset(BaseModel):
    status: Literal["success"] = "success"
    message: str = Field(examples=["Counter reset for page page1"])
    page_id: str


class VisitsIngested(BaseModel):
    status: Literal["success"] = "success"
    pages: int = Field(description="Distinct pages in the request (after page id normalisation).")
    visits: int = Field(description="Visits in the request, acknowledged (a repeat too).")


class CounterMetricValues(BaseModel):
    cache_hits: int
    cache_misses: int
    cache_size: int
    write_buffer_size: int = Field(description="Distinct pages with increments not yet stored.")
    pending_visits: int = Field(description="Visits accepted and held in memory, not yet stored.")
    visits_accepted: int
    bots_rejected: int = Field(
        description="Visits from known crawlers (User-Agent), answered 200 and not counted "
        "(0 with COUNT_BOTS=true)."
    )
    visits_repeated: int = Field(
        description="Visits repeated with an Idempotency-Key seen before (in this worker's "
        "buffer, or by the page's node), answered 200 and counted once."
    )
    visits_stored: int
    batches_stored: int
    batches_failed: int
    batches_duplicate: int = Field(description="Retried batches the node had applied already.")
    journal_batches: int = Field(description="Batches waiting in the on-disk journal.")
    journal_damaged_records: int = Field(
        description="Unreadable lines this worker found in dead workers' journal and visit-log "
        "files since it started (the files are quarantined; see /status).",
    )
    journal_damaged_bytes: int = Field(description="Bytes of those lines.")


HealthState = Literal["healthy", "degraded", "unhealthy"]


class SinkStatus(BaseModel):
    """One sink's queue in this worker (SINKS; visit_counter/sinks)."""

    name: str
    pending: int = Field(description="Stored batches not handed to the sink yet.")
    delivered: int = Field(description="Batches the sink applied.")
    duplicates: int = Field(description="Batches handed over again that the sink had applied.")
    failures: int = Field(description="Attempts that failed (each is retried).")
    lost: int = Field(description="Batches dropped: queue full and its file not writable.")
    damaged: int = Field(description="Unreadable records skipped in claimed queue files.")
    last_error: str | None = Field(description="Why the last attempt failed; null once one works.")


class CounterMetrics(BaseModel):
    status: HealthState
    metrics: CounterMetricValues
    redis_nodes: dict[str, bool]
    last_batch_write: datetime | None
    sinks: list[SinkStatus] = Field(default_factory=list)


class TopologyStatus(BaseModel):
    """The node set this worker routes by (stored on the nodes; topology/document.py)."""

    version: int
    state: Literal["stable", "preparing", "moving"] = Field(
        description="`preparing` and `moving`: a `nodes add|remove` is under way."
    )
    members: list[str] = Field(description="Ring labels of the nodes, in order.")
    moving_from: list[str] | None = Field(
        description="During a move, the node set it started from; null otherwise."
    )


class ClusterMemberStatus(BaseModel):
    address: str
    role: Literal["primary", "replica"]
    primary: str | None = Field(description="For a replica, the primary it follows.")
    slots: int
    connected: bool
    failing: bool = Field(description="Flagged fail or pfail by the node that answered.")


class ClusterStatus(BaseModel):
    """REDIS_MODE=cluster: the cluster as its last health check saw it."""

    state: str = Field(description="`cluster_state` (ok, fail, or unknown when unreachable).")
    min_replicas_ack: int = Field(description="Replicas that must have a batch (WAIT).")
    redirections: int = Field(description="MOVED, ASK and TRYAGAIN answers followed so far.")
    members: list[ClusterMemberStatus]


class RedisStatus(BaseModel):
    mode: Literal["ring", "cluster"] = "ring"
    cluster: ClusterStatus | None = Field(default=None, description="Cluster mode only.")
    topology: TopologyStatus
    nodes: int
    healthy_nodes: int
    node_status: dict[str, bool]
    down_nodes: dict[str, str] = Field(description="Each node that is down, with its last error.")
    config_warnings: dict[str, list[str]] = Field(
        default_factory=dict,
        description="Each node whose configuration can lose counts (a maxmemory-policy that "
        "evicts, neither AOF nor RDB on) or cannot be read, with the reasons.",
    )
    replaced_nodes: dict[str, str] = Field(
        default_factory=dict,
        description="Each node believed to have lost its data (its identity changed, or it is "
        "much newer than its peers), with the reason. Stays for the life of the process.",
    )


class CounterStatus(BaseModel):
    cache_size: int
    write_buffer_size: int


class MetricsStatus(BaseModel):
    directory: str = Field(description="Where the workers keep their Prometheus files.")
    error: str | None = Field(
        description="Why metrics are off in this worker (its files could not be allocated); "
        "null while they work."
    )


class JournalDamage(BaseModel):
    """A quarantined journal or visit-log file: listed until an operator removes it."""

    file: str = Field(
        examples=["journal/quarantine/20261123T135911.120664Z-host-41-9f2c/host-41-9f2c.jsonl"],
        description="Where the file is now, relative to DATA_DIR.",
    )
    incident: str = Field(
        description="Its quarantine directory; `python -m app journal quarantine --clear "
        "<incident>` (or removing the directory) clears it."
    )
    writer: str = Field(description="The dead worker whose file it was.")
    kind: Literal["journal", "visit_log"]
    lines: int | None = Field(description="Unreadable lines (null: the report is missing).")
    bytes: int | None = Field(description="Unreadable bytes (null: the report is missing).")
    found_at: datetime


class ServiceStatus(BaseModel):
    status: HealthState
    uptime: str = Field(examples=["1:23:45.678901"])
    total_requests: int
    redis_status: RedisStatus
    counter_status: CounterStatus
    metrics_status: MetricsStatus | None = Field(
        description="This worker's Prometheus metrics; null when ENABLE_METRICS is false."
    )
    journal_damage: list[JournalDamage] = Field(
        default_factory=list,
        description="Damaged journal files kept in the quarantine (any worker's), until an "
        "operator clears them. Does not change `status`, which is about the nodes.",
    )
    version: str
    debug_mode: bool


class ServiceStatusSummary(BaseModel):
    """`/status` without the admin token, when ADMIN_TOKEN is set: the status word only."""

    status: HealthState


class Liveness(BaseModel):
    status: Literal["alive"] = "alive"


class Readiness(BaseModel):
    status: Literal["ready"] = "ready"
    nodes_reachable: bool = Field(description="At least one node answered its last check.")
    journal_writable: bool = Field(description="The on-disk journal can take writes.")


class ErrorBody(BaseModel):
    status: Literal["error"] = "error"
    error: str = Field(examples=["invalid_page_id"], description="Machine-readable error code.")
    message: str
