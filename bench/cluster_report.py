"""The report's cluster section (issue 11): scenario (b) on a Redis Cluster beside the ring."""

from __future__ import annotations

import dataclasses
from typing import Any

from bench.cluster import ClusterResult, Goal
from bench.cluster_nodes import PRIMARIES
from bench.summary import Summary, breakdown_cell
from visit_counter.cluster.buckets import BUCKETS

STORAGE_LABELS = ("ring: 3 standalone nodes", "cluster: 3 primaries + 3 replicas")


def _verdict(goal: Goal) -> str:
    return "met" if goal.met else "**not met**"


def _flush(flush: dict[str, float]) -> str:
    return f"median {flush['median']:.1f} ms, max {flush['max']:.1f} ms"


def render_cluster(result: ClusterResult) -> list[str]:
    """The section's lines: both storages side by side, the goals, the flush, the method."""
    ring, cluster = result.ring_summary, result.cluster_summary
    runs = len(result.cluster)
    lines = ["## Redis Cluster beside the ring: scenario (b) (issue 11)", ""]
    if result.smoke:
        lines += ["**Smoke run** (1 s per storage, 1 run): checks the harness; the numbers mean"
                  " nothing.", ""]  # fmt: skip
    if not result.pinned:
        lines += ["Nothing pinned (fewer than 2 cores, or no affinity support).", ""]
    lines += [
        f"{ring.scenario.what}, on the same app and settings as the scenarios in two modes:"
        " `REDIS_MODE=cluster` on a Redis Cluster of 3 primaries and 3 replicas, and the ring"
        f" on three standalone nodes. {runs} interleaved run(s) (ring, then cluster) x"
        f" {result.cluster[0].load.duration_s:.0f} s each, the same load generator and"
        " connections as the scenarios.",
        "",
        "| storage | req/s (median) | min - max | p50 ms | p99 ms "
        "| Redis cmds / 1k visits | incl. PING etc. | RSS MiB | errors |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for label, summary in zip(STORAGE_LABELS, (ring, cluster), strict=True):
        lines.append(
            f"| {label} | {summary.rps_median:,.0f} | {min(summary.rps):,.0f} -"
            f" {max(summary.rps):,.0f} | {summary.p50_ms:.2f} | {summary.p99_ms:.2f}"
            f" | {summary.commands_per_1k:,.2f} | {summary.all_commands_per_1k:,.2f}"
            f" | {summary.rss_mib:.1f} | {summary.errors} |"
        )
    lines += ["", "| goal | value | target | |", "|---|---:|---|---|"]
    lines += [
        f"| {goal.name} | {goal.value:,.2f} | {goal.target} | {_verdict(goal)} |"
        for goal in result.goals
    ]
    repeats = result.flush_ms["repeats"]
    lines += [
        "",
        f"Flush of 10,000 distinct pages (`VisitCounter.flush()` in process, after the runs,"
        f" {repeats:.0f} repeats, the first flush, which loads the script, left out): on the"
        f" cluster {_flush(result.flush_ms)}; on the three standalone nodes, just after,"
        f" {_flush(result.ring_flush_ms)}.",
        "",
        "Redis commands per 1,000 visits, by command (on the cluster: its primaries; the"
        " commands a script runs count one each):",
        "",
        "| storage | commands |",
        "|---|---|",
    ]
    for label, summary in zip(STORAGE_LABELS, (ring, cluster), strict=True):
        lines.append(f"| {label} | {breakdown_cell(summary.breakdown_per_1k)} |")
    lines += _where_commands_go(cluster)
    lines += [
        "",
        "Requests/s per run:",
        "",
        "| storage | " + " | ".join(f"run {n}" for n in range(1, runs + 1)) + " |",
        "|---|" + "---:|" * runs,
    ]
    for label, summary in zip(STORAGE_LABELS, (ring, cluster), strict=True):
        lines.append(f"| {label} | " + " | ".join(f"{v:,.0f}" for v in summary.rps) + " |")
    lines += [
        "",
        "- The cluster: six nodes (AOF everysec, as every node here; `cluster-node-timeout`"
        f" {result.node_timeout_ms:,} ms), created with `{result.create_command}`, and waited for"
        " until every node says `cluster_state:ok` and every replica's link is up; REDIS_NODES"
        f" lists all six. REDIS_MIN_REPLICAS_ACK={result.min_replicas_ack}: each primary's part"
        f" of a flush ends with `WAIT {result.min_replicas_ack}`.",
        "- Redis commands: INFO commandstats summed over the three primaries (the replicas"
        " replay their primary's writes, and counting them would count each write twice), from"
        " before a run until the server has flushed every visit it accepted in it, divided by"
        " its 2xx answers. WAIT (one per primary per flush) and ASKING (sent only while a slot"
        " migrates) count: a flush sends them. Reading the slot map and the cluster's state"
        " (CLUSTER SLOTS, SHARDS, INFO, NODES), READONLY, what the replicas send their"
        " primary (PSYNC, REPLCONF ACK), PING, the harness's INFO and connection set-up do"
        " not (the *incl. PING etc.* column counts everything). SCRIPT LOAD counts, as on the"
        " ring (once per primary and server start).",
        f"- Servers: ring: `{result.ring_server_command}`; cluster:"
        f" `{result.cluster_server_command}`.",
    ]
    return lines


def _where_commands_go(cluster: Summary) -> list[str]:
    """The cluster's commands per flush, read off the counts: one WAIT per primary per flush."""
    per_1k = cluster.breakdown_per_1k
    flushes = per_1k.get("wait", 0.0) / PRIMARIES  # per 1,000 visits
    if not flushes:
        return []
    return [
        "",
        f"Where the cluster's commands go: {flushes:,.2f} flushes per 1,000 visits (one WAIT per"
        f" primary each), each with about {per_1k.get('incrby', 0.0) / flushes:,.0f} pages in"
        f" {per_1k.get('evalsha', 0.0) / flushes:,.0f} bucket groups of the {BUCKETS:,}"
        " (`cluster/buckets.py`); each group is one EVALSHA whose script runs HGET, HSET and"
        " HMGET besides one INCRBY per page: about 4 commands per group on top of the ring's one"
        " per page.",
    ]


def cluster_record(result: ClusterResult) -> dict[str, Any]:
    """The section's numbers for the JSON file, its verdicts included."""
    return {
        **dataclasses.asdict(result),
        "throughput_ratio": result.throughput_ratio,
        "commands_per_1k": result.commands_per_1k,
        "goals": [dataclasses.asdict(goal) for goal in result.goals],
    }
